"""Benchmark host: the application process, run as `/usr/bin/python3 bench/host.py MODE JSON`.

It must be Debian's /usr/bin/python3 (the only Python here whose sqlite3 can load extensions),
so it uses the standard library and pysupport.hostside only. The orchestrator (bench/run.py) prepares the database,
starts the S3 server and the Litestream sidecar, and passes everything else as JSON:

    db            database path (already created in WAL mode with table t by run.py)
    ext           extension path without .so, or null: plain SQLite, nothing loaded
    config        [[key, value], ...] for litestream_configure; with ext, replication is started
    synchronous   FULL / NORMAL

Modes (each prints one line `RESULT <json>` at the end; progress goes to stderr):
    commits   timed workloads (list of {name, txns, rows, row_bytes, synchronous, update})
    chunks    the same workloads, chunk by chunk on command (fine-grained A/B interleaving)
    serve     line protocol on stdin/stdout: `commit` -> one-row commit, replies `ok`;
              `sync` -> litestream_sync(), replies `ok`; `status`; `quit`
    synclat   n x (one-row commit + litestream_sync()) -> latencies
    rate      offered-rate steps, sampling litestream_status()
    cpu       write `mb` MiB of page changes as fast as possible, then litestream_sync(); report
              CPU seconds and peak RSS of this process
    catchup   replicate, stop, write `mb` MiB into the WAL with replication stopped (no
              checkpoints), then time litestream_start() + litestream_sync(): the backlog's
              shipping rate (bench/catchup.py)
"""
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport.hostside import (configure, connect, cpu_seconds as cpu_s, logger, one,  # noqa: E402
                                run_modes, thread_cpu, vm_hwm_kib, wal_size)

MODE = sys.argv[1] if len(sys.argv) > 1 else "?"
log = logger("host " + MODE)


def open_db(p):
    c = connect(p["db"], p.get("ext"))
    c.execute("PRAGMA journal_mode=WAL").fetchone()
    c.execute("PRAGMA synchronous=%s" % p.get("synchronous", "FULL"))
    if p.get("ext"):
        configure(c, p.get("config", []))
        one(c, "SELECT litestream_start()")
        # the initial snapshot is not part of any timed measurement
        one(c, "SELECT litestream_sync(60000)")
    return c


def status(c, p):
    if not p.get("ext"):
        return None
    return json.loads(one(c, "SELECT litestream_status()"))


def sync(c, p, timeout_ms=600000):
    if p.get("ext"):
        return one(c, "SELECT litestream_sync(?)", timeout_ms)
    return None


def stop(c, p):
    if p.get("ext"):
        return one(c, "SELECT litestream_stop()")
    return None


def txn(c, rows, row_bytes, update_keys=None, rng=None):
    """One transaction of `rows` rows of random (incompressible) bytes: inserts, or updates of
    random existing keys (bounded database size)."""
    c.execute("BEGIN")
    if update_keys:
        for _ in range(rows):
            c.execute("UPDATE t SET v = randomblob(?) WHERE id = ?", (row_bytes, rng.randrange(1, update_keys + 1)))
    else:
        for _ in range(rows):
            c.execute("INSERT INTO t(v) VALUES (randomblob(?))", (row_bytes,))
    c.execute("COMMIT")


def mode_commits(p):
    c = open_db(p)
    rng = random.Random(1)
    out = []
    for w in p["workloads"]:
        c.execute("PRAGMA synchronous=%s" % w.get("synchronous", "FULL"))
        cpu0, t0 = cpu_s(), time.perf_counter()
        for _ in range(w["txns"]):
            txn(c, w["rows"], w["row_bytes"], w.get("update_keys"), rng)
        dt = time.perf_counter() - t0
        cpu = cpu_s() - cpu0
        t1 = time.perf_counter()
        sync(c, p)
        drain = time.perf_counter() - t1
        out.append({"name": w["name"], "txns": w["txns"], "seconds": dt, "tps": w["txns"] / dt,
                    "cpu_s": cpu, "drain_s": drain if p.get("ext") else None,
                    "wal_size": wal_size(p["db"])})
        log(w["name"], "%.0f tx/s" % (w["txns"] / dt))
    st = status(c, p)
    stop(c, p)
    return {"workloads": out, "status": st}


def mode_chunks(p):
    """Line protocol for finely interleaved A/B runs: `run I N` runs N transactions of workload
    I and replies `ok <seconds> <cpu seconds>`; `runfor I S` runs workload I for S seconds and
    replies `ok <txns> <seconds> <cpu seconds>`; `drain` -> litestream_sync(), `ok <seconds>`;
    `quit`. Several hosts (one per configuration) take turns, chunk by chunk."""
    c = open_db(p)
    rng = random.Random(1)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "run":
            w = p["workloads"][int(cmd[1])]
            c.execute("PRAGMA synchronous=%s" % w.get("synchronous", "FULL"))
            cpu0, t0 = cpu_s(), time.perf_counter()
            for _ in range(int(cmd[2])):
                txn(c, w["rows"], w["row_bytes"], w.get("update_keys"), rng)
            print("ok %.6f %.6f" % (time.perf_counter() - t0, cpu_s() - cpu0), flush=True)
        elif cmd[0] == "runfor":
            w = p["workloads"][int(cmd[1])]
            c.execute("PRAGMA synchronous=%s" % w.get("synchronous", "FULL"))
            limit = float(cmd[2])
            cpu0, t0 = cpu_s(), time.perf_counter()
            n = 0
            while True:
                txn(c, w["rows"], w["row_bytes"], w.get("update_keys"), rng)
                n += 1
                el = time.perf_counter() - t0
                if el >= limit:
                    break
            print("ok %d %.6f %.6f" % (n, el, cpu_s() - cpu0), flush=True)
        elif cmd[0] == "drain":
            t0 = time.perf_counter()
            sync(c, p)
            print("ok %.6f" % (time.perf_counter() - t0), flush=True)
        elif cmd[0] == "quit":
            break
    st = status(c, p)
    stop(c, p)
    return {"status": st, "wal_size": wal_size(p["db"])}


def mode_serve(p):
    c = open_db(p)
    print("ready", flush=True)
    n = 0
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "commit":
            n += 1
            c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
            print("ok %d" % n, flush=True)
        elif cmd == "sync":
            print("ok %s" % sync(c, p), flush=True)
        elif cmd == "status":
            print("ok %s" % json.dumps(status(c, p)), flush=True)
        elif cmd == "quit":
            break
    stop(c, p)
    return {"commits": n}


def mode_synclat(p):
    c = open_db(p)
    rng = random.Random(2)
    lat = []
    for _ in range(p["n"]):
        if p.get("gap_ms"):
            time.sleep(rng.uniform(0, p["gap_ms"]) / 1000)
        t0 = time.perf_counter()
        c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
        t1 = time.perf_counter()
        one(c, "SELECT litestream_sync(60000)")
        t2 = time.perf_counter()
        lat.append(((t2 - t0) * 1000, (t1 - t0) * 1000))
    st = status(c, p)
    stop(c, p)
    return {"lat_ms": [a for a, _ in lat], "commit_ms": [b for _, b in lat], "status": st}


def mode_rate(p):
    """Step the offered write rate: each step writes for `step_s` seconds at `rate` MiB/s in
    transactions of rows x row_bytes, sampling litestream_status(), then waits for the replica
    (litestream_sync(), or `drain_cmd` for the sidecar). Replication kept up when the backlog
    drained within drain_limit_s and (ours) lag_ms stayed under lag_limit_ms in the second half of
    the step. A failing step is retried once (noise). Stepping ends when replication fell behind
    or the writer itself could not reach 80 % of the offered rate."""
    c = open_db(p)
    rng = random.Random(3)
    rows, row_bytes = p["rows"], p["row_bytes"]
    txn_bytes = rows * row_bytes

    def step(rate):
        per_s = rate * (1 << 20) / txn_bytes
        t0 = time.perf_counter()
        n, max_lag, max_lag_2nd, max_wal = 0, 0, 0, 0
        next_sample = t0
        while True:
            now = time.perf_counter()
            el = now - t0
            if el >= p["step_s"]:
                break
            due = t0 + n / per_s
            if now < due:
                time.sleep(min(due - now, 0.01))
            else:
                txn(c, rows, row_bytes, p.get("update_keys"), rng)
                n += 1
            if now >= next_sample:
                st = status(c, p)
                lag = st["lag_ms"] if st else 0
                max_lag = max(max_lag, lag)
                if el >= p["step_s"] / 2:
                    max_lag_2nd = max(max_lag_2nd, lag)
                max_wal = max(max_wal, wal_size(p["db"]))
                next_sample = now + 0.1
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        if p.get("ext"):
            sync(c, p)
        elif p.get("drain_cmd"):
            # the sidecar: `litestream sync -wait` through its control socket
            import subprocess
            r = subprocess.run(p["drain_cmd"], capture_output=True, text=True)
            if r.returncode:
                log("drain command failed:", r.stdout, r.stderr)
        drain = time.perf_counter() - t1
        achieved = n * txn_bytes / dt / (1 << 20)
        repl_ok = drain <= p["drain_limit_s"] and max_lag_2nd <= p["lag_limit_ms"]
        return {"offered_mib_s": rate, "achieved_mib_s": achieved, "txns": n,
                "max_lag_ms": max_lag, "max_lag_ms_2nd_half": max_lag_2nd,
                "max_wal_size": max_wal, "drain_s": drain, "replication_ok": repl_ok,
                "writer_saturated": achieved < 0.8 * rate}

    steps = []
    for rate in p["rates_mib"]:
        s = step(rate)
        if not s["replication_ok"]:
            first = s
            s = step(rate)
            s["retry_of"] = first
        steps.append(s)
        log("offered %s MiB/s achieved %.1f lag %d ms wal %.1f MB drain %.2f s -> %s%s" % (
            rate, s["achieved_mib_s"], s["max_lag_ms_2nd_half"], s["max_wal_size"] / 1e6,
            s["drain_s"], "ok" if s["replication_ok"] else "BEHIND",
            " (writer saturated)" if s["writer_saturated"] else ""))
        if not s["replication_ok"] or s["writer_saturated"]:
            break
    st = status(c, p)
    stop(c, p)
    return {"steps": steps, "status": st}


def mode_catchup(p):
    c = connect(p["db"], p["ext"])
    c.execute("PRAGMA journal_mode=WAL").fetchone()
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    configure(c, p["config"])
    one(c, "SELECT litestream_start()")
    one(c, "SELECT litestream_sync(60000)")
    one(c, "SELECT litestream_stop()")
    # the backlog: nothing checkpoints it while replication is stopped
    c.execute("PRAGMA wal_autocheckpoint=0")
    rng = random.Random(5)
    rows, row_bytes = p["rows"], p["row_bytes"]
    for _ in range(int(p["mb"] * (1 << 20) / (rows * row_bytes))):
        txn(c, rows, row_bytes, None, rng)
    backlog = wal_size(p["db"])
    log("backlog of %.0f MiB written, starting at %.3f" % (backlog / (1 << 20), time.time()))
    hwm0, cpu0, threads0 = vm_hwm_kib(), cpu_s(), thread_cpu()
    t0 = time.perf_counter()
    one(c, "SELECT litestream_start()")
    one(c, "SELECT litestream_sync(600000)")
    seconds = time.perf_counter() - t0
    log("caught up in %.2f s at %.3f" % (seconds, time.time()))
    st = status(c, p)
    threads1 = thread_cpu()
    ext_cpu = sum(v - threads0.get(k, 0.0) for k, v in threads1.items() if k != "MainThread")
    one(c, "SELECT litestream_stop()")
    return {"seconds": seconds, "wal_bytes": backlog, "cpu_s": cpu_s() - cpu0,
            "ext_thread_cpu_s": ext_cpu, "vm_hwm_kib": vm_hwm_kib(), "vm_hwm_kib_before": hwm0,
            "status": st}


def mode_cpu(p):
    """Write p['mb'] MiB of page changes in 1 MiB transactions as fast as possible, then wait
    until the replica has it all (ours: litestream_sync(); the sidecar: run.py waits)."""
    c = open_db(p)
    rng = random.Random(4)
    rows, row_bytes = p["rows"], p["row_bytes"]
    txns = int(p["mb"] * (1 << 20) / (rows * row_bytes))
    hwm0 = vm_hwm_kib()
    t0 = time.perf_counter()
    max_wal = 0
    for i in range(txns):
        txn(c, rows, row_bytes, p.get("update_keys"), rng)
        if i % 8 == 0:
            max_wal = max(max_wal, wal_size(p["db"]))
    write_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    sync(c, p)
    catchup_s = time.perf_counter() - t1
    max_wal = max(max_wal, wal_size(p["db"]))
    st = status(c, p)
    res = {"txns": txns, "write_s": write_s, "mib_s": txns * rows * row_bytes / write_s / (1 << 20),
           "catchup_s": catchup_s if p.get("ext") else None, "cpu_s_synced": cpu_s(),
           "vm_hwm_kb_before": hwm0, "max_wal_size": max_wal, "status": st}
    if p.get("hold_for_sidecar"):
        # the sidecar's catch-up is measured by run.py while we keep the connection open
        print("written", flush=True)
        sys.stdin.readline()
    # litestream_stop() runs the final checkpoint: plain SQLite checkpointed as it went, so the
    # cost of moving the WAL into the database belongs in the comparison
    threads = thread_cpu()  # before stop: the extension's threads end with it
    t2 = time.perf_counter()
    stop(c, p)
    res.update(stop_s=time.perf_counter() - t2, cpu_s=cpu_s(), vm_hwm_kb=vm_hwm_kib(),
               thread_cpu_s=threads,
               ext_thread_cpu_s=sum(v for k, v in threads.items() if k.startswith("litestream")))
    return res


if __name__ == "__main__":
    run_modes({"catchup": mode_catchup, "commits": mode_commits, "chunks": mode_chunks, "serve": mode_serve,
               "synclat": mode_synclat, "rate": mode_rate, "cpu": mode_cpu})
