#!/usr/bin/env python3
"""Soak: an hour of continuous writes with replication on; RSS flat, WAL bounded, lag bounded.

    nice -n 5 .venv/bin/python bench/soak.py                 # the documented run (3600 s)
    nice -n 5 .venv/bin/python bench/soak.py --smoke         # 3 minutes, short compaction intervals
    .venv/bin/python bench/soak.py --report bench/out/soak-<UTC>.json   # the summary again

Runs with any Python that has boto3 (the repo venv); the writer and the restore host are this
same file run by /usr/bin/python3 (`soak.py host MODE JSON`, stdlib only), the only Python here
that can load extensions. It starts its own SeaweedFS (scripts/s3-server.sh, --port,
default 9633, state in --s3-state, SigV4 enforced with test/testtesttest).

1. A database prefilled to about --db-mib MiB (table big: 64 KiB rows; table small: --small-cap
   rows of --small-bytes) in --work.
2. The writer (/usr/bin/python3) loads the extension, configures an S3 replica (part-size 5 MiB,
   compaction levels --levels, --l0-retention, --snapshot-interval, --snapshot-retention, so
   compaction, snapshots and retention all run several times), litestream_start(), then for
   --duration seconds commits --rate small transactions per second (insert one row, delete the
   oldest beyond --small-cap, update a random row every few commits) plus one --big-mib MiB
   transaction every --big-every seconds that also deletes the oldest big rows beyond the
   prefill, so the database stays the same size. It calls litestream_sync() every --sync-every
   commits and records each call's latency.
3. Every second it probes litestream_status() lag_ms; every --sample seconds it writes a sample
   (bench/out/soak-<UTC>.samples.jsonl while it runs): VmRSS, VmHWM, threads, open fds, CPU
   seconds, -wal and database file sizes, status fields (state, txid, lag_ms, bytes and objects
   uploaded, multipart uploads, checkpoints, snapshots, compactions per level, deletions,
   last_error), load average, commits, achieved rate, sync latencies of the window. The
   orchestrator adds every minute the bucket's object count and bytes per level and the
   SeaweedFS RSS.
4. At the end: final litestream_sync(), litestream_stop(); digest + integrity_check of the
   source; litestream_restore() into a new file from a separate host, and `litestream restore`
   (the reference binary: $LITESTREAM_BIN or scripts/install-litestream.sh), each
   compared with the source.
Prints a summary and writes bench/out/soak-<UTC>.json (all samples). Exit 1 when a restore
differs or the writer failed.
"""
import hashlib
import json
import os
import sqlite3
import sys
import time

KIB, MIB = 1 << 10, 1 << 20
BIG_ROW = 64 * KIB


# ================================================================ host side (/usr/bin/python3)

def _one(c, sql, *args):
    row = c.execute(sql, args).fetchone()
    return None if row is None else row[0]


def _load(c, ext):
    c.enable_load_extension(True)
    c.load_extension(ext)
    c.enable_load_extension(False)


def _proc_self():
    """VmRSS, VmHWM (KiB), threads, open fds, CPU seconds of this process, from /proc."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k.lower() + "_kib"] = int(v.split()[0])
            elif k == "Threads":
                out["threads"] = int(v)
    out["fds"] = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _size(path):
    try:
        return os.stat(path).st_size  # stat only: no descriptor on the database file
    except FileNotFoundError:
        return 0


def digest(c):
    """integrity_check and a SHA-256 over every row of both tables, in id order."""
    h = hashlib.sha256()
    rows = 0
    for tbl in ("small", "big"):
        for row in c.execute("SELECT id, v FROM %s ORDER BY id" % tbl):
            h.update(b"%s:%d:" % (tbl.encode(), row[0]))
            h.update(row[1])
            rows += 1
    return {"integrity": _one(c, "PRAGMA integrity_check"), "rows": rows,
            "digest": h.hexdigest()}


def host_write(p):
    import random
    import threading
    db = p["db"]
    c = sqlite3.connect(db, isolation_level=None, timeout=30)
    c.execute("PRAGMA journal_mode=WAL").fetchone()
    c.execute("PRAGMA synchronous=NORMAL")
    _load(c, p["ext"])
    for k, v in p["config"]:
        _one(c, "SELECT litestream_configure(?, ?)", k, v)
    _one(c, "SELECT litestream_start()")
    small_lo = _one(c, "SELECT min(id) FROM small") or 1
    small_hi = _one(c, "SELECT max(id) FROM small") or 0
    big_lo = _one(c, "SELECT min(id) FROM big") or 1
    big_hi = _one(c, "SELECT max(id) FROM big") or 0
    big_cap = big_hi - big_lo + 1
    print("started", flush=True)

    rate, sync_every = p["rate"], p["sync_every"]
    big_rows = max(1, p["big_bytes"] // BIG_ROW)
    t0 = time.monotonic()
    wall0 = time.time()
    end = t0 + p["duration_s"]
    # shared with the sampler thread (plain ints and list swaps: the GIL keeps them whole)
    w = {"commits": 0, "big_commits": 0, "behind_resets": 0, "syncs": [], "in_sync_since": None}
    syncs_all, lags_all, errors = [], [], []
    stop_sampler = threading.Event()

    def sampler():
        """Its own connection (litestream_status() finds the replicator by the database path),
        so a writer blocked in litestream_sync() or a commit does not stop the probes."""
        sc = sqlite3.connect(db, isolation_level=None, timeout=30, check_same_thread=False)
        _load(sc, p["ext"])
        out = open(p["samples"], "a")
        win = {"lag_max": 0, "commits": 0, "t": t0, "sync_stall_max": 0.0}
        next_probe = next_sample = t0
        while True:
            now = time.monotonic()
            final = stop_sampler.is_set()
            st = json.loads(_one(sc, "SELECT litestream_status()"))
            lag = st.get("lag_ms") or 0
            lags_all.append(lag)
            win["lag_max"] = max(win["lag_max"], lag)
            since = w["in_sync_since"]
            if since is not None:
                win["sync_stall_max"] = max(win["sync_stall_max"], now - since)
            if now >= next_sample or final:
                syncs, w["syncs"] = w["syncs"], []
                comp = st.get("compaction") or {}
                s = {"t": round(now - t0, 3), "wall": time.time()}
                s.update(_proc_self())
                s.update({
                    "wal_bytes": _size(db + "-wal"), "db_bytes": _size(db),
                    "state": st.get("state"), "txid": int(st.get("txid") or "0", 16),
                    "lag_ms": lag, "lag_max_ms": win["lag_max"],
                    "bytes_uploaded": st.get("bytes_uploaded"),
                    "objects_uploaded": st.get("objects_uploaded"),
                    "multipart_uploads": st.get("multipart_uploads"),
                    "checkpoints": st.get("checkpoints"), "snapshots": st.get("snapshots"),
                    "status_wal_size": st.get("wal_size"),
                    "compactions": [lv.get("compactions") for lv in comp.get("levels", [])],
                    "level9_snapshots": comp.get("snapshots"), "deleted": comp.get("deleted"),
                    "last_error": st.get("last_error"), "compaction_error": comp.get("last_error"),
                    "loadavg": os.getloadavg()[0], "commits": w["commits"],
                    "big_commits": w["big_commits"],
                    "rate": (w["commits"] - win["commits"]) / max(1e-9, now - win["t"]),
                    "sync_n": len(syncs), "sync_p50_ms": _pct(syncs, 50),
                    "sync_max_ms": max(syncs) if syncs else None,
                    # the longest a litestream_sync() call had been waiting at a probe
                    "sync_stall_max_s": round(win["sync_stall_max"], 3),
                    "behind_resets": w["behind_resets"],
                })
                out.write(json.dumps(s) + "\n")
                out.flush()
                win.update(lag_max=0, commits=w["commits"], t=now, sync_stall_max=0.0)
                while next_sample <= now:
                    next_sample += p["sample_s"]
            if final:
                break
            next_probe += 1.0
            stop_sampler.wait(max(0.0, next_probe - time.monotonic()))
        out.close()
        sc.close()

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    rnd = random.Random(p.get("seed", 1))
    next_small = t0
    next_big = t0 + p["big_every_s"]
    while time.monotonic() < end:
        if time.monotonic() >= next_big:
            # ~1 MiB in one transaction; the oldest big rows go, so the size stays put
            c.execute("BEGIN")
            c.executemany("INSERT INTO big(id, v) VALUES (?, randomblob(?))",
                          [(big_hi + i + 1, BIG_ROW) for i in range(big_rows)])
            big_hi += big_rows
            if big_hi - big_lo + 1 > big_cap:
                new_lo = big_hi - big_cap + 1
                c.execute("DELETE FROM big WHERE id < ?", (new_lo,))
                big_lo = new_lo
            c.execute("COMMIT")
            w["big_commits"] += 1
            w["commits"] += 1
            next_big += p["big_every_s"]
        c.execute("BEGIN")
        small_hi += 1
        c.execute("INSERT INTO small(id, v) VALUES (?, randomblob(?))", (small_hi, p["small_bytes"]))
        if small_hi - small_lo + 1 > p["small_cap"]:
            c.execute("DELETE FROM small WHERE id = ?", (small_lo,))
            small_lo += 1
        if w["commits"] % 4 == 0:
            c.execute("UPDATE small SET v = randomblob(?) WHERE id = ?",
                      (p["small_bytes"], rnd.randint(small_lo, small_hi)))
        c.execute("COMMIT")
        w["commits"] += 1
        if w["commits"] % sync_every == 0:
            ts = time.perf_counter()
            w["in_sync_since"] = time.monotonic()
            try:
                _one(c, "SELECT litestream_sync(?)", p["sync_timeout_ms"])
                ms = (time.perf_counter() - ts) * 1000
                syncs_all.append(round(ms, 3))
                w["syncs"].append(ms)
            except sqlite3.Error as e:
                errors.append({"t": time.monotonic() - t0, "error": str(e)})
                print("sync error: %s" % e, file=sys.stderr, flush=True)
                if len(errors) > 100:
                    raise
            finally:
                w["in_sync_since"] = None
        next_small += 1.0 / rate
        delay = next_small - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            w["behind_resets"] += 1  # more than a second behind: do not burst to catch up
            next_small = time.monotonic()

    elapsed = time.monotonic() - t0
    ts = time.perf_counter()
    _one(c, "SELECT litestream_sync(?)", 120000)
    final_sync_ms = (time.perf_counter() - ts) * 1000
    stop_sampler.set()
    th.join(60)
    st = json.loads(_one(c, "SELECT litestream_status()"))
    ts = time.perf_counter()
    stopped = _one(c, "SELECT litestream_stop()")
    stop_ms = (time.perf_counter() - ts) * 1000
    return {"commits": w["commits"], "big_commits": w["big_commits"], "elapsed_s": elapsed,
            "wall_start": wall0, "final_sync_ms": final_sync_ms, "stop_ms": stop_ms,
            "stopped_txid": stopped, "final_status": st, "sync_errors": errors,
            "syncs_ms": syncs_all, "lags_ms": lags_all, "behind_resets": w["behind_resets"],
            "proc": _proc_self()}


def host_restore(p):
    c = sqlite3.connect(":memory:", isolation_level=None)
    _load(c, p["ext"])
    t = time.perf_counter()
    try:
        txid = _one(c, "SELECT litestream_restore(?, ?)", p["out"], json.dumps({"url": p["url"]}))
    except sqlite3.Error as e:
        return {"error": str(e), "exists": os.path.exists(p["out"])}
    secs = time.perf_counter() - t
    r = sqlite3.connect(p["out"], isolation_level=None)
    res = digest(r)
    res.update(txid=txid, seconds=secs)
    return res


def _pct(values, q):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def host_main(mode, params):
    res = {"write": host_write, "restore": host_restore}[mode](params)
    if params.get("result"):
        # the writer's result is large (every sync latency): a file, not a pipe nobody drains
        with open(params["result"], "w") as f:
            json.dump(res, f)
        res = {"file": params["result"]}
    print("RESULT " + json.dumps(res), flush=True)


# ================================================================ orchestrator (any Python with boto3)

def prefill(path, big_mib, small_cap, small_bytes):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE small(id INTEGER PRIMARY KEY, v BLOB)")
    c.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
    c.execute("BEGIN")
    c.executemany("INSERT INTO big(id, v) VALUES (?, randomblob(?))",
                  [(i + 1, BIG_ROW) for i in range(big_mib * MIB // BIG_ROW)])
    c.executemany("INSERT INTO small(id, v) VALUES (?, randomblob(?))",
                  [(i + 1, small_bytes) for i in range(small_cap)])
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None


def bucket_census(client, bucket, prefix):
    """Object count and bytes per level directory (0000 … 0009), and in total."""
    levels = {}
    kw = {"Bucket": bucket, "Prefix": prefix + "/"}
    while True:
        r = client.list_objects_v2(**kw)
        for o in r.get("Contents", []):
            parts = o["Key"][len(prefix) + 1:].split("/")
            lv = parts[0] if len(parts) > 1 else "(top)"
            n, b = levels.get(lv, (0, 0))
            levels[lv] = (n + 1, b + o["Size"])
        if not r.get("IsTruncated"):
            break
        kw["ContinuationToken"] = r["NextContinuationToken"]
    return {"objects": sum(n for n, _ in levels.values()),
            "bytes": sum(b for _, b in levels.values()),
            "levels": {k: {"objects": n, "bytes": b} for k, (n, b) in sorted(levels.items())}}


def linfit_slope(xs, ys):
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def analyse(samples, res, window_s):
    """The summary figures from the writer's samples and result."""
    pct = _pct
    dur = samples[-1]["t"] if samples else 0
    first = [s for s in samples if s["t"] <= window_s]
    last = [s for s in samples if s["t"] >= dur - window_s]
    warm = [s for s in samples if s["t"] >= window_s]
    rss_mib = lambda ss: max(s["vmrss_kib"] for s in ss) / 1024 if ss else None  # noqa: E731
    slope = linfit_slope([s["t"] / 3600 for s in warm], [s["vmrss_kib"] / 1024 for s in warm])
    wal = [s["wal_bytes"] for s in samples]
    lags = res["lags_ms"]
    syncs = res["syncs_ms"]
    final = samples[-1] if samples else {}
    errs = sorted({s["last_error"] for s in samples if s.get("last_error")}
                  | {s["compaction_error"] for s in samples if s.get("compaction_error")})
    return {
        "duration_s": dur, "window_s": window_s,
        "rss_first_max_mib": rss_mib(first), "rss_last_max_mib": rss_mib(last),
        "rss_slope_mib_per_h": slope, "rss_start_mib": samples[0]["vmrss_kib"] / 1024,
        "rss_end_mib": final.get("vmrss_kib", 0) / 1024, "hwm_mib": final.get("vmhwm_kib", 0) / 1024,
        "fds_first_max": max((s["fds"] for s in first), default=None),
        "fds_last_max": max((s["fds"] for s in last), default=None),
        "threads_max": max((s["threads"] for s in samples), default=None),
        "cpu_s": final.get("cpu_s"),
        "wal_max_mib": max(wal) / MIB if wal else None, "wal_p99_mib": pct(wal, 99) / MIB if wal else None,
        "wal_first_max_mib": max(s["wal_bytes"] for s in first) / MIB if first else None,
        "wal_last_max_mib": max(s["wal_bytes"] for s in last) / MIB if last else None,
        "db_first_mib": samples[0]["db_bytes"] / MIB, "db_max_mib": max(s["db_bytes"] for s in samples) / MIB,
        "db_end_mib": final.get("db_bytes", 0) / MIB,
        "lag_max_ms": max(lags) if lags else None, "lag_p99_ms": pct(lags, 99),
        "lag_p50_ms": pct(lags, 50),
        "lag_first_max_ms": max((s["lag_max_ms"] for s in first), default=None),
        "lag_last_max_ms": max((s["lag_max_ms"] for s in last), default=None),
        "sync_n": len(syncs), "sync_p50_ms": pct(syncs, 50), "sync_p99_ms": pct(syncs, 99),
        "sync_max_ms": max(syncs) if syncs else None, "sync_errors": len(res["sync_errors"]),
        "commits": res["commits"], "big_commits": res["big_commits"],
        "rate_avg": res["commits"] / max(1e-9, res["elapsed_s"]),
        "rate_min_window": min((s["rate"] for s in samples[1:-1]), default=None),
        "behind_resets": res["behind_resets"],
        "bytes_uploaded": final.get("bytes_uploaded"), "objects_uploaded": final.get("objects_uploaded"),
        "multipart_uploads": final.get("multipart_uploads"),
        "checkpoints": final.get("checkpoints"), "snapshots": final.get("snapshots"),
        "level9_snapshots": final.get("level9_snapshots"), "compactions": final.get("compactions"),
        "deleted": final.get("deleted"), "txid": final.get("txid"),
        "states": sorted({s["state"] for s in samples if s["t"] >= 10}),
        "sync_stall_max_s": max((s.get("sync_stall_max_s") or 0 for s in samples), default=None),
        "errors_seen": errs, "error_samples": sum(1 for s in samples if s.get("last_error") or s.get("compaction_error")),
        "load_avg_mean": sum(s["loadavg"] for s in samples) / len(samples),
        "load_avg_max": max(s["loadavg"] for s in samples),
        "final_sync_ms": res["final_sync_ms"], "stop_ms": res["stop_ms"],
    }


def verdicts(a, restores, census):
    v = {}
    # RSS flat: the last window's peak within 10 % (and 8 MiB) of the first window's, and the
    # linear trend after warm-up under 5 MiB/hour.
    grow = a["rss_last_max_mib"] - a["rss_first_max_mib"]
    v["rss_flat"] = bool(grow <= max(8.0, 0.10 * a["rss_first_max_mib"])
                         and (a["rss_slope_mib_per_h"] or 0) < 5.0)
    # WAL bounded: never beyond 64 MiB (16x the 4 MiB checkpoint threshold) and not growing.
    v["wal_bounded"] = bool(a["wal_max_mib"] <= 64 and a["wal_last_max_mib"] <= max(8.0, 1.5 * a["wal_first_max_mib"]))
    # lag bounded: p99 under 2 s, never above 30 s, and no worse at the end than at the start
    # (a level-9 snapshot holds the replicator for seconds: single spikes are expected).
    v["lag_bounded"] = bool(a["lag_p99_ms"] <= 2000 and a["lag_max_ms"] <= 30000
                            and a["lag_last_max_ms"] <= max(3000, 2 * a["lag_first_max_ms"]))
    v["no_errors"] = not a["errors_seen"] and not a["sync_errors"] and a["states"] == ["running"]
    for k, r in restores.items():
        v["restore_" + k] = bool(r.get("equal"))
    if len(census) >= 4:
        n = [c["objects"] for c in census]
        half = len(n) // 2
        # bucket bounded: retention keeps the object count from growing without end
        v["bucket_bounded"] = max(n[half:]) <= 1.5 * max(n[:half]) + 200
    return v


def main():
    import argparse
    import subprocess
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib as bl

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3600, help="seconds of writes (3600)")
    ap.add_argument("--smoke", action="store_true",
                    help="3 minutes with compaction levels 10s,30s,1m, snapshots every 1m (kept 2m), L0 kept 30s")
    ap.add_argument("--rate", type=float, default=200, help="small transactions per second (200)")
    ap.add_argument("--small-bytes", type=int, default=200, help="bytes per small row (200)")
    ap.add_argument("--small-cap", type=int, default=100000, help="rows kept in table small (100000)")
    ap.add_argument("--big-mib", type=float, default=1.0, help="MiB per big transaction (1)")
    ap.add_argument("--big-every", type=float, default=4.0, help="seconds between big transactions (4)")
    ap.add_argument("--db-mib", type=int, default=160, help="prefilled size of table big, kept constant (160)")
    ap.add_argument("--sync-every", type=int, default=50, help="commits between litestream_sync() calls (50)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    ap.add_argument("--levels", default="30s,5m,15m")
    ap.add_argument("--l0-retention", default="5m")
    ap.add_argument("--snapshot-interval", default="15m")
    ap.add_argument("--snapshot-retention", default="30m")
    ap.add_argument("--sync-interval", default="1s")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                    help="further litestream_configure() pairs (repeatable)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("SOAK_S3_PORT", 9633)))
    ap.add_argument("--s3-state", default="/tmp/soak/s3")
    ap.add_argument("--work", default="/tmp/soak/work")
    ap.add_argument("--window", type=float, help="seconds of the first/last windows compared (600, smoke: 60)")
    ap.add_argument("--keep", action="store_true", help="keep the database, restores and SeaweedFS data")
    args = ap.parse_args()
    if args.smoke:
        if "--duration" not in sys.argv:
            args.duration = 180
        args.levels, args.l0_retention = "10s,30s,1m", "30s"
        args.snapshot_interval, args.snapshot_retention = "1m", "2m"
    window = args.window or min(600.0, args.duration / 3)
    if not os.path.exists(bl.EXT + ".so"):
        sys.exit("missing %s.so" % bl.EXT)
    lbin = bl.litestream_bin()

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out_dir = bl.REPO / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_json = out_dir / ("soak-%s.json" % stamp)
    samples_path = out_dir / ("soak-%s.samples.jsonl" % stamp)
    work = Path(args.work)
    if work.exists():
        import shutil
        shutil.rmtree(work)
    work.mkdir(parents=True)
    db = str(work / "soak.db")
    log = lambda msg: print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)  # noqa: E731

    server = bl.S3Server(args.port, args.s3_state, buckets=("soak",))
    log("starting SeaweedFS on %s (state %s)" % (server.endpoint, args.s3_state))
    server.start()
    client = server.client()
    bucket, prefix = "soak", "soak-%s" % stamp
    machine = bl.machine_info()
    rc = 1
    try:
        t = time.time()
        prefill(db, args.db_mib, args.small_cap, args.small_bytes)
        log("prefilled %s: %.1f MiB in %.1f s" % (db, os.path.getsize(db) / MIB, time.time() - t))
        config = bl.ext_config(bucket, prefix, server.endpoint, sync_interval=args.sync_interval)
        config += [("part-size", "5MB"), ("levels", args.levels), ("l0-retention", args.l0_retention),
                   ("snapshot-interval", args.snapshot_interval),
                   ("snapshot-retention", args.snapshot_retention)]
        config += [tuple(kv.split("=", 1)) for kv in args.config]
        params = {"ext": bl.EXT, "db": db, "config": config, "samples": str(samples_path),
                  "duration_s": args.duration, "rate": args.rate, "small_bytes": args.small_bytes,
                  "small_cap": args.small_cap, "big_bytes": int(args.big_mib * MIB),
                  "big_every_s": args.big_every, "sync_every": args.sync_every,
                  "sync_timeout_ms": 60000, "sample_s": args.sample,
                  "result": str(work / "writer-result.json")}
        shown = [(k, "***" if "secret" in k else v) for k, v in config]
        log("writer: %.0f s, %g tx/s + %g MiB every %g s, sync every %d commits; config %s" % (
            args.duration, args.rate, args.big_mib, args.big_every, args.sync_every, shown))
        errlog = open(work / "writer.stderr", "w")
        writer = subprocess.Popen([bl.HOST_PYTHON, os.path.abspath(__file__), "host", "write",
                                   json.dumps(params)], stdout=subprocess.PIPE, stderr=errlog,
                                  text=True, env=bl.child_env())
        line = writer.stdout.readline()
        if line.strip() != "started":
            writer.wait()
            raise RuntimeError("writer did not start: %r\n%s" % (line, (work / "writer.stderr").read_text()[-4000:]))
        log("replication started (writer pid %d, samples -> %s)" % (writer.pid, samples_path))
        census = []
        t_start = time.time()
        next_census = t_start
        next_report = t_start + 60
        while writer.poll() is None:
            now = time.time()
            if now >= next_census:
                try:
                    c = bucket_census(client, bucket, prefix)
                    c.update(t=round(now - t_start, 1), weed_rss_kib=proc_rss_kib(server.pid() or 0))
                    census.append(c)
                except Exception as e:  # noqa: BLE001 - a listing failure is recorded, not fatal
                    census.append({"t": round(now - t_start, 1), "error": str(e), "objects": 0})
                next_census += 60
            if now >= next_report:
                try:
                    s = json.loads(samples_path.read_text().splitlines()[-1])
                    cc = census[-1]
                    log("t=%5.0fs commits %7d rate %5.0f/s rss %6.1f MiB wal %5.1f MiB db %6.1f MiB "
                        "lag %5d ms (max %5d) sync p50 %s ms up %7.1f MiB ckpt %d snap %d comp %s "
                        "del %s objs %s load %.2f%s" % (
                            s["t"], s["commits"], s["rate"], s["vmrss_kib"] / 1024, s["wal_bytes"] / MIB,
                            s["db_bytes"] / MIB, s["lag_ms"], s["lag_max_ms"],
                            "%.1f" % s["sync_p50_ms"] if s["sync_p50_ms"] is not None else "-",
                            (s["bytes_uploaded"] or 0) / MIB, s["checkpoints"], s["snapshots"],
                            s["compactions"], s["deleted"], cc.get("objects"), s["loadavg"],
                            (" ERROR " + str(s["last_error"] or s["compaction_error"]))
                            if (s["last_error"] or s["compaction_error"]) else ""))
                except (IndexError, ValueError, KeyError) as e:
                    log("no sample yet (%s)" % e)
                next_report += 60
            time.sleep(1)
        out = writer.stdout.read()
        errlog.close()
        res = None
        for ln in out.splitlines():
            if ln.startswith("RESULT "):
                res = json.loads(Path(json.loads(ln[7:])["file"]).read_text())
        if writer.returncode != 0 or res is None:
            raise RuntimeError("writer exited %d:\n%s" % (writer.returncode, (work / "writer.stderr").read_text()[-4000:]))
        c = bucket_census(client, bucket, prefix)
        c.update(t=round(time.time() - t_start, 1), weed_rss_kib=proc_rss_kib(server.pid() or 0))
        census.append(c)
        log("writer done: %d commits, stopped at TXID %s; checking the source" % (res["commits"], res["stopped_txid"]))
        src = digest(sqlite3.connect(db, isolation_level=None))
        restores = {}
        url = "s3://%s/%s?endpoint=%s" % (bucket, prefix, server.endpoint)
        ours_out = str(work / "restored-ours.db")
        t = time.time()
        p = subprocess.run([bl.HOST_PYTHON, os.path.abspath(__file__), "host", "restore",
                            json.dumps({"ext": bl.EXT, "url": url, "out": ours_out})],
                           text=True, capture_output=True, timeout=1800,
                           env=bl.child_env({"LITESTREAM_ACCESS_KEY_ID": "test",
                                             "LITESTREAM_SECRET_ACCESS_KEY": "testtesttest"}))
        r = next((json.loads(ln[7:]) for ln in p.stdout.splitlines() if ln.startswith("RESULT ")),
                 {"error": "restore host exited %d: %s" % (p.returncode, p.stderr[-2000:])})
        r["wall_s"] = time.time() - t
        r["equal"] = (r.get("digest") == src["digest"] and r.get("integrity") == "ok"
                      and r.get("txid") == res["stopped_txid"])
        restores["ours"] = r
        log("litestream_restore: %s" % {k: r.get(k) for k in ("txid", "integrity", "rows", "equal", "seconds", "error")})
        ref_out = work / "restored-ref.db"
        ref_url = "%s&forcePathStyle=true&region=us-east-1" % url
        t = time.time()
        p = subprocess.run([lbin, "restore", "-integrity-check", "full", "-o", str(ref_out), ref_url],
                           text=True, capture_output=True, timeout=1800, env=bl.child_env())
        if p.returncode == 0:
            r = digest(sqlite3.connect(str(ref_out), isolation_level=None))
        else:
            r = {"error": "litestream restore exited %d: %s %s" % (p.returncode, p.stdout[-1000:], p.stderr[-2000:])}
        r["wall_s"] = time.time() - t
        r["equal"] = r.get("digest") == src["digest"] and r.get("integrity") == "ok"
        restores["reference"] = r
        log("litestream restore (reference): %s" % {k: r.get(k) for k in ("integrity", "rows", "equal", "wall_s", "error")})

        samples = [json.loads(ln) for ln in samples_path.read_text().splitlines()]
        a, v = summarise(samples, res, window, args.sample, args.levels, restores, census)
        report = {"machine": machine, "git": bl.git_rev(), "ext": bl.EXT, "args": vars(args),
                  "config": shown, "summary": a, "verdicts": v, "source": src, "restores": restores,
                  "census": census, "writer": {k: res[k] for k in res if k not in ("syncs_ms", "lags_ms")},
                  "syncs_ms": res["syncs_ms"], "lags_ms": res["lags_ms"], "samples": samples}
        out_json.write_text(json.dumps(report, indent=1))
        print_summary(a, v, machine, out_json)
        rc = 0 if all(v.get(k) for k in ("restore_ours", "restore_reference")) else 1
    finally:
        if not args.keep:
            server.stop()
        else:
            log("kept: %s, SeaweedFS on %s (stop: S3_STATE=%s S3_PORT=%d bash %s stop)" % (
                work, server.endpoint, args.s3_state, args.port, server.script))
    sys.exit(rc)


def duration_s(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for u in ("ms", "s", "m", "h"):
        if text.endswith(u):
            return float(text[:-len(u)]) * units[u]
    return float(text)


def summarise(samples, res, window, sample_s, levels, restores, census):
    a = analyse(samples, res, window)
    a["sample_s"] = sample_s
    v = verdicts(a, restores, [cc for cc in census if "error" not in cc])
    a["bucket_objects_max"] = max((cc["objects"] for cc in census), default=None)
    a["bucket_objects_end"] = census[-1]["objects"]
    a["bucket_mib_max"] = max((cc.get("bytes", 0) for cc in census), default=0) / MIB
    a["bucket_mib_end"] = census[-1].get("bytes", 0) / MIB
    a["weed_rss_max_mib"] = max((cc.get("weed_rss_kib") or 0 for cc in census), default=0) / 1024
    # RSS peaks and troughs per cycle of the slowest compaction level (its compaction, and the
    # level-9 snapshot on a similar schedule, are what the sawtooth follows)
    cycle = max(duration_s(x) for x in levels.split(",")) if levels not in ("", "off") else window
    a["rss_cycle_s"] = cycle
    a["rss_cycle_peaks_mib"], a["rss_cycle_troughs_mib"] = [], []
    t = 0.0
    while t < a["duration_s"]:
        blk = [s["vmrss_kib"] / 1024 for s in samples if t <= s["t"] < t + cycle]
        if blk and t + cycle / 2 <= a["duration_s"]:  # not a last sliver of a cycle
            a["rss_cycle_peaks_mib"].append(round(max(blk), 1))
            a["rss_cycle_troughs_mib"].append(round(min(blk), 1))
        t += cycle
    return a, v


def report_again(path):
    """--report FILE: recompute and print the summary of a finished run's JSON."""
    r = json.load(open(path))
    args = r["args"]
    window = args.get("window") or min(600.0, args["duration"] / 3)
    res = dict(r["writer"], syncs_ms=r["syncs_ms"], lags_ms=r["lags_ms"])
    a, v = summarise(r["samples"], res, window, args["sample"], args["levels"], r["restores"], r["census"])
    r["summary"], r["verdicts"] = a, v
    with open(path, "w") as f:
        json.dump(r, f, indent=1)
    print_summary(a, v, r["machine"], path)


def print_summary(a, v, machine, path):
    f = lambda x, d=1: "-" if x is None else ("%.*f" % (d, x))  # noqa: E731
    rows = [
        ("duration", "%s s (windows: first/last %s s)" % (f(a["duration_s"], 0), f(a["window_s"], 0))),
        ("commits", "%d (%d of ~1 MiB), %.1f tx/s average, lowest %s-s window %s tx/s, %d resets of the pacing" % (
            a["commits"], a["big_commits"], a["rate_avg"], f(a.get("sample_s"), 0), f(a["rate_min_window"], 0),
            a["behind_resets"])),
        ("writer RSS", "first-window max %s MiB, last-window max %s MiB, slope after warm-up %s MiB/h; start %s, end %s, VmHWM %s MiB" % (
            f(a["rss_first_max_mib"]), f(a["rss_last_max_mib"]), f(a["rss_slope_mib_per_h"], 2),
            f(a["rss_start_mib"]), f(a["rss_end_mib"]), f(a["hwm_mib"]))),
        ("writer RSS per %s-s cycle" % f(a.get("rss_cycle_s"), 0), "peaks %s, troughs %s MiB" % (
            a.get("rss_cycle_peaks_mib"), a.get("rss_cycle_troughs_mib"))),
        ("writer fds / threads", "fds first %s last %s, threads max %s, CPU %s s" % (
            a["fds_first_max"], a["fds_last_max"], a["threads_max"], f(a["cpu_s"]))),
        ("-wal file", "max %s MiB, p99 %s MiB (first window max %s, last %s)" % (
            f(a["wal_max_mib"], 2), f(a["wal_p99_mib"], 2), f(a["wal_first_max_mib"], 2), f(a["wal_last_max_mib"], 2))),
        ("database", "%s MiB at start, max %s, end %s" % (f(a["db_first_mib"]), f(a["db_max_mib"]), f(a["db_end_mib"]))),
        ("lag_ms (1 s probes)", "p50 %s, p99 %s, max %s (first window max %s, last %s)" % (
            f(a["lag_p50_ms"], 0), f(a["lag_p99_ms"], 0), f(a["lag_max_ms"], 0),
            f(a["lag_first_max_ms"], 0), f(a["lag_last_max_ms"], 0))),
        ("litestream_sync()", "%d calls: p50 %s ms, p99 %s ms, max %s ms (longest wait seen by a probe %s s), %d errors; final %s ms, stop %s ms" % (
            a["sync_n"], f(a["sync_p50_ms"]), f(a["sync_p99_ms"]), f(a["sync_max_ms"]), f(a["sync_stall_max_s"]), a["sync_errors"],
            f(a["final_sync_ms"]), f(a["stop_ms"]))),
        ("uploaded", "%s MiB in %s objects (%s multipart)" % (
            f((a["bytes_uploaded"] or 0) / MIB), a["objects_uploaded"], a["multipart_uploads"])),
        ("checkpoints / snapshots", "%s checkpoints, %s snapshots by the replicator, %s level-9 by the compactor" % (
            a["checkpoints"], a["snapshots"], a["level9_snapshots"])),
        ("compactions", "per level %s, %s objects deleted by retention" % (a["compactions"], a["deleted"])),
        ("bucket", "objects max %s end %s, MiB max %s end %s; SeaweedFS RSS max %s MiB" % (
            a["bucket_objects_max"], a["bucket_objects_end"], f(a["bucket_mib_max"]), f(a["bucket_mib_end"]),
            f(a["weed_rss_max_mib"]))),
        ("states / errors", "%s; %d samples with an error %s" % (a["states"], a["error_samples"], a["errors_seen"][:3])),
        ("load average", "mean %s, max %s (%s CPUs)" % (f(a["load_avg_mean"], 2), f(a["load_avg_max"], 2), machine["nproc"])),
    ]
    print()
    print("| measure | value |")
    print("| --- | --- |")
    for k, val in rows:
        print("| %s | %s |" % (k, val))
    print()
    print("verdicts: " + ", ".join("%s %s" % (k, "PASS" if ok else "FAIL") for k, ok in v.items()))
    print("-> %s" % path)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "host":
        host_main(sys.argv[2], json.loads(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--report":
        report_again(sys.argv[2])
    else:
        main()
