"""The soak's application process: `/usr/bin/python3 bench/soak_host.py MODE JSON` (standard
library and pysupport's host helpers only), driven by bench/soak.py.

    write    load the extension, replicate, write at the soak's rates for duration_s seconds
             (small transactions, a big one every big_every_s, litestream_sync() every
             sync_every commits), sampling this process and litestream_status() into `samples`
    restore  litestream_restore() from `url` into `out` from a :memory: host; digest of the copy

Both print `RESULT <json>` (or, with `result` set, write it there and print its name).
"""
import hashlib
import json
import os
import sqlite3
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport.hostside import configure, connect, file_size, one, proc_self, run_modes  # noqa: E402
from pysupport.report import pct  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
BIG_ROW = 64 * KIB


def digest(c):
    """integrity_check and a SHA-256 over every row of both tables, in id order."""
    h = hashlib.sha256()
    rows = 0
    for tbl in ("small", "big"):
        for row in c.execute("SELECT id, v FROM %s ORDER BY id" % tbl):
            h.update(b"%s:%d:" % (tbl.encode(), row[0]))
            h.update(row[1])
            rows += 1
    return {"integrity": one(c, "PRAGMA integrity_check"), "rows": rows,
            "digest": h.hexdigest()}


def host_write(p):
    import random
    import threading
    db = p["db"]
    plain = p.get("plain", False)  # the baseline: the same writes, no extension loaded
    ext = None if plain else p["ext"]
    c = connect(db, ext)
    c.execute("PRAGMA journal_mode=WAL").fetchone()
    c.execute("PRAGMA synchronous=NORMAL")
    if not plain:
        configure(c, p["config"])
        one(c, "SELECT litestream_start()")
    small_lo = one(c, "SELECT min(id) FROM small") or 1
    small_hi = one(c, "SELECT max(id) FROM small") or 0
    big_lo = one(c, "SELECT min(id) FROM big") or 1
    big_hi = one(c, "SELECT max(id) FROM big") or 0
    big_cap = big_hi - big_lo + 1
    print("started", flush=True)

    rate, sync_every = p["rate"], p["sync_every"]
    big_rows = max(1, p["big_bytes"] // BIG_ROW)
    t0 = time.monotonic()
    wall0 = time.time()
    end = t0 + p["duration_s"]
    # shared with the sampler thread (plain ints and list swaps: the GIL keeps them whole)
    w = {"commits": 0, "big_commits": 0, "behind_resets": 0, "syncs": [], "in_sync_since": None}
    # Packed arrays, not lists of floats: a list grows ~0.6 MiB/h in this process and would be
    # counted as the extension's RSS creep.
    syncs_all, lags_all, errors = array("f"), array("f"), []
    stop_sampler = threading.Event()

    def sampler():
        """Its own connection (litestream_status() finds the replicator by the database path),
        so a writer blocked in litestream_sync() or a commit does not stop the probes."""
        sc = connect(db, ext)
        out = open(p["samples"], "a")
        win = {"lag_max": 0, "commits": 0, "t": t0, "sync_stall_max": 0.0}
        next_probe = next_sample = t0
        while True:
            now = time.monotonic()
            final = stop_sampler.is_set()
            st = {} if plain else json.loads(one(sc, "SELECT litestream_status()"))
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
                s.update(proc_self())
                s.update({
                    "wal_bytes": file_size(db + "-wal"), "db_bytes": file_size(db),
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
                    "sync_n": len(syncs), "sync_p50_ms": pct(syncs, 50),
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
        if w["commits"] % sync_every == 0 and not plain:
            ts = time.perf_counter()
            w["in_sync_since"] = time.monotonic()
            try:
                one(c, "SELECT litestream_sync(?)", p["sync_timeout_ms"])
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
    if plain:
        stop_sampler.set()
        th.join(60)
        return {"commits": w["commits"], "big_commits": w["big_commits"], "elapsed_s": elapsed,
                "wall_start": wall0, "behind_resets": w["behind_resets"], "proc": proc_self()}
    ts = time.perf_counter()
    one(c, "SELECT litestream_sync(?)", 120000)
    final_sync_ms = (time.perf_counter() - ts) * 1000
    stop_sampler.set()
    th.join(60)
    st = json.loads(one(c, "SELECT litestream_status()"))
    ts = time.perf_counter()
    stopped = one(c, "SELECT litestream_stop()")
    stop_ms = (time.perf_counter() - ts) * 1000
    return {"commits": w["commits"], "big_commits": w["big_commits"], "elapsed_s": elapsed,
            "wall_start": wall0, "final_sync_ms": final_sync_ms, "stop_ms": stop_ms,
            "stopped_txid": stopped, "final_status": st, "sync_errors": errors,
            "syncs_ms": [round(x, 3) for x in syncs_all], "lags_ms": list(lags_all), "behind_resets": w["behind_resets"],
            "proc": proc_self()}


def host_restore(p):
    c = connect(":memory:", p["ext"])
    t = time.perf_counter()
    try:
        txid = one(c, "SELECT litestream_restore(?, ?)", p["out"], json.dumps({"url": p["url"]}))
    except sqlite3.Error as e:
        return {"error": str(e), "exists": os.path.exists(p["out"])}
    secs = time.perf_counter() - t
    res = digest(connect(p["out"]))
    res.update(txid=txid, seconds=secs)
    return res


def to_file(mode):
    """mode, whose result goes to the file params['result'] when given (the writer's result is
    large, every sync latency: a file, not a pipe nobody drains); RESULT then names the file."""
    def run(params):
        res = mode(params)
        if not params.get("result"):
            return res
        with open(params["result"], "w") as f:
            json.dump(res, f)
        return {"file": params["result"]}
    return run


if __name__ == "__main__":
    run_modes({"write": to_file(host_write), "restore": to_file(host_restore)})
