"""The crash writer host: `/usr/bin/python3 pysupport/crash_host.py MODE JSON` (standard library
and pysupport.hostside only; Debian's python3 is the only one here that can load the extension).
Driven by pysupport.crash_trials (bench/crash.py) and the reliability suite.

Modes:
    write    the writer: opens the database, starts replication, commits a monotonic counter
             (table c: n = previous max + 1, one value per transaction) forever, calls
             litestream_sync() every few commits and appends each acknowledged value to the ack
             file (fsynced) only after litestream_sync() returned. Meant to be SIGKILLed.
             With `commits` or `duration_s` set it ends by itself: final sync, stop, report.
             `busy_timeout_s`: the connection's busy timeout (default 30; the result reports the
             slowest commit, `commit_max_s`); `tolerate_sync_errors`: a failed litestream_sync()
             is recorded, not fatal (outage
             tests); `status_log`: litestream_status() appended as JSON lines every
             `status_every_s`; `pace_s`: sleep between commits.
    restore  litestream_restore(out, {"url": ...}) from a :memory: host, then checks the copy.
    inspect  integrity_check and a digest of a database (c and bulk tables).
    script   SQL steps on one connection, each result or error recorded (secrets probe).

Each mode prints `RESULT <json>` last; `write` prints `started` once replication is on.
"""
import hashlib
import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport.hostside import connect, load, one, run_modes, status  # noqa: E402


def summary(c):
    """What the checks compare: the counter's range and a digest of every row."""
    h = hashlib.sha256()
    for tbl, cols in (("c", "n, hex(pad)"), ("bulk", "id, hex(v)")):
        for row in c.execute("SELECT %s FROM %s ORDER BY 1" % (cols, tbl)):
            h.update(repr(row).encode())
    return {"integrity": one(c, "PRAGMA integrity_check"),
            "count": one(c, "SELECT count(*) FROM c"),
            "min": one(c, "SELECT min(n) FROM c"),
            "max": one(c, "SELECT max(n) FROM c"),
            "bulk": one(c, "SELECT count(*) FROM bulk"),
            "digest": h.hexdigest()}


def mode_write(p):
    rng = random.Random(p.get("seed"))
    c = connect(p["db"], timeout=p.get("busy_timeout_s", 30))
    c.execute("PRAGMA journal_mode=WAL").fetchone()
    c.execute("PRAGMA synchronous=%s" % p.get("synchronous", "NORMAL"))
    c.execute("CREATE TABLE IF NOT EXISTS c(n INTEGER PRIMARY KEY, pad BLOB)")
    c.execute("CREATE TABLE IF NOT EXISTS bulk(id INTEGER PRIMARY KEY, v BLOB)")
    before = one(c, "SELECT max(n) FROM c") or 0
    load(c, p["ext"])
    for k, v in p["config"]:
        one(c, "SELECT litestream_configure(?, ?)", k, v)
    one(c, "SELECT litestream_start()")
    print("started %d" % before, flush=True)
    ack = open(p["ack"], "a")
    n = before
    sync_lo, sync_hi = p.get("sync_every", [1, 8])
    next_sync = rng.randint(sync_lo, sync_hi)
    t_start = time.time()
    big_at = sorted(p.get("big_at_s", []))
    limit = p.get("commits")
    end_at = time.time() + p["duration_s"] if p.get("duration_s") else None
    done = 0
    syncs = []
    sync_errors = []
    status_log = open(p["status_log"], "a") if p.get("status_log") else None
    next_status = 0.0
    commit_max = (0.0, None)  # the slowest commit (seconds, time), replication's toll on writers
    while (limit is None or done < limit) and (end_at is None or time.time() < end_at):
        if status_log and time.time() >= next_status:
            status_log.write(json.dumps({"t": time.time(), "n": n, "status": status(c)}) + "\n")
            status_log.flush()
            next_status = time.time() + p.get("status_every_s", 0.2)
        n += 1
        t_commit = time.perf_counter()
        c.execute("BEGIN")
        c.execute("INSERT INTO c(n, pad) VALUES (?, randomblob(?))", (n, rng.randint(0, p.get("pad_max", 3000))))
        r = rng.random()
        if r < p.get("bulk_p", 0.03):
            c.executemany("INSERT INTO bulk(v) VALUES (randomblob(?))", [(4000,)] * 50)
        elif r < p.get("bulk_p", 0.03) + p.get("delete_p", 0.02):
            c.execute("DELETE FROM bulk WHERE id IN (SELECT id FROM bulk ORDER BY random() LIMIT 40)")
        c.execute("COMMIT")
        commit_max = max(commit_max, (time.perf_counter() - t_commit, time.time()))
        done += 1
        next_sync -= 1
        if next_sync <= 0:
            next_sync = rng.randint(sync_lo, sync_hi)
            t0 = time.perf_counter()
            try:
                one(c, "SELECT litestream_sync(?)", p.get("sync_timeout_ms", 30000))
            except sqlite3.Error as e:
                if not p.get("tolerate_sync_errors"):
                    raise
                sync_errors.append({"t": time.time(), "n": n, "error": str(e)})
                continue
            syncs.append(time.perf_counter() - t0)
            # acknowledged: everything up to n is in the replica
            ack.write("%d\n" % n)
            ack.flush()
            os.fsync(ack.fileno())
        if big_at and time.time() - t_start >= big_at[0]:
            # one large transaction (a multipart upload when it exceeds part-size)
            big_at.pop(0)
            c.execute("BEGIN")
            c.executemany("INSERT INTO bulk(v) VALUES (randomblob(?))",
                          [(65536,)] * (p.get("big_bytes", 6 << 20) // 65536))
            c.execute("COMMIT")
        if p.get("pace_s"):
            time.sleep(p["pace_s"])
    t0 = time.perf_counter()
    one(c, "SELECT litestream_sync(?)", p.get("final_sync_timeout_ms", 60000))
    final_sync_s = time.perf_counter() - t0
    ack.write("%d\n" % n)
    ack.flush()
    os.fsync(ack.fileno())
    st = status(c)
    if status_log:
        status_log.write(json.dumps({"t": time.time(), "n": n, "status": st, "final": True}) + "\n")
        status_log.close()
    last = one(c, "SELECT litestream_stop()")
    return {"before": before, "last": n, "status": st, "stopped_txid": last,
            "final_sync_s": final_sync_s, "sync_errors": sync_errors,
            "commit_max_s": commit_max[0], "commit_max_at": commit_max[1],
            "sync_p50_ms": sorted(syncs)[len(syncs) // 2] * 1000 if syncs else None}


def mode_restore(p):
    c = connect(":memory:", p["ext"])
    opts = {"url": p["url"]}
    if p.get("overwrite"):
        opts["overwrite"] = True
    try:
        txid = one(c, "SELECT litestream_restore(?, ?)", p["out"], json.dumps(opts))
    except sqlite3.Error as e:
        return {"error": str(e), "exists": os.path.exists(p["out"])}
    res = summary(connect(p["out"]))
    res["txid"] = txid
    return res


def mode_script(p):
    """Run SQL steps on one connection, recording each result or error (secrets probe).
    Steps: {"sql": ..., "args": [...]} or {"sleep": seconds}; `env` extends os.environ first."""
    c = connect(p.get("db", ":memory:"))
    c.execute("PRAGMA journal_mode=WAL").fetchone()
    load(c, p["ext"])
    out = []
    for st in p["steps"]:
        if "sleep" in st:
            time.sleep(st["sleep"])
            continue
        try:
            rows = c.execute(st["sql"], st.get("args", [])).fetchall()
            out.append({"sql": st["sql"], "result": [list(r) for r in rows]})
        except sqlite3.Error as e:
            out.append({"sql": st["sql"], "error": str(e)})
    return {"steps": out}


def mode_inspect(p):
    return summary(connect(p["db"]))


if __name__ == "__main__":
    run_modes({"write": mode_write, "restore": mode_restore, "inspect": mode_inspect,
               "script": mode_script})
