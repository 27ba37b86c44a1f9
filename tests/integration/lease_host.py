"""A long-lived extension host for the lease tests, run by /usr/bin/python3 (which can load
extensions): one process = one application instance replicating one database.

    /usr/bin/python3 lease_host.py EXT DB CONFIG_JSON

It reads one JSON command per line on stdin and answers one JSON line on stdout:
  {"op": "start"}                      -> {"ok": "started"} or {"error": "..."}
  {"op": "status"}                     -> {"ok": <litestream_status() as an object>}
  {"op": "write", "n": 3}              -> {"ok": <rows in t>}   (n small transactions)
  {"op": "bulk", "mib": 12}            -> {"ok": <rows in t>}   (one transaction of `mib` MiB)
  {"op": "writer", "every": 0.05}      -> a background thread commits a row every `every` s
                                          (0 stops it); answers {"ok": true}
  {"op": "sync", "ms": 5000}           -> {"ok": txid, "s": seconds} or {"error": ..., "s": ...}
  {"op": "stop"}                       -> {"ok": txid} or {"error": ...}
  {"op": "pid"}                        -> {"ok": pid}
  {"op": "fork_child", "out": PATH}    -> {"ok": child pid}; see fork_child()
  {"op": "fork_exit"}                  -> {"ok": {"status": ..., "s": ...}}: a forked child exits
                                          normally at once (sys.exit: exit handlers run); waited for
  {"op": "reload"}                     -> {"ok": true}: loads the extension again on the connection
  {"op": "start_other"}                -> {"ok": <start's answer>}: another connection of this
                                          process calls litestream_start() and is closed again
  {"op": "close"}                      -> {"ok": true}: closes the connection that called start;
                                          the process keeps running (only "pid" still works)
  {"op": "exit"}                       -> exits normally (the connections close on the way out)
  {"op": "exit_leak"}                  -> exits normally, but the connection is never closed
Errors of one command never end the process."""
import ctypes
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from pysupport import hostside  # noqa: E402

EXT, DB, CONFIG = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

conn = hostside.connect(DB, EXT)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT, at REAL, pad BLOB)")
hostside.configure(conn, CONFIG)
lock = threading.Lock()          # the sqlite3 module's connection is shared with the writer thread
writer_every = [0.0]
tag = "%s:%d" % (os.path.basename(DB), os.getpid())


def one(sql, *args):
    with lock:
        return hostside.one(conn, sql, *args)


def insert():
    one("INSERT INTO t(who, at, pad) VALUES (?, ?, randomblob(200))", tag, time.time())


def writer():
    w = hostside.connect(DB)
    while True:
        every = writer_every[0]
        if every <= 0:
            time.sleep(0.02)
            continue
        try:
            w.execute("INSERT INTO t(who, at, pad) VALUES (?, ?, randomblob(200))", (tag, time.time()))
        except sqlite3.Error as e:  # busy under checkpoints: try again next tick
            print("writer: %s" % e, file=sys.stderr, flush=True)
        time.sleep(every)


threading.Thread(target=writer, daemon=True).start()


def fork_child(out, wait):
    """fork(); the child (a pre-fork server's worker) opens its own connection, starts replication
    of the same database, watches its lease role until it holds the lease (or `wait` s pass),
    writes, syncs, stops, and leaves its findings as JSON in `out`. Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    res = {"roles": []}
    try:
        c = hostside.connect(DB, EXT)   # never a parent's connection
        hostside.configure(c, CONFIG)
        res["start"] = hostside.one(c, "SELECT litestream_start()")
        deadline = time.time() + wait
        while time.time() < deadline:
            st = hostside.status(c)
            seen = (st["lease"]["role"], st["lease"]["local_standby"])
            if not res["roles"] or res["roles"][-1] != list(seen):
                res["roles"].append(list(seen))
            if seen[0] == "holder":
                res["holder_at"] = time.time()
                break
            time.sleep(0.01)
        c.execute("INSERT INTO t(who, at, pad) VALUES ('child', ?, randomblob(100))", (time.time(),))
        res["sync"] = hostside.one(c, "SELECT litestream_sync(10000)")
        res["stop"] = hostside.one(c, "SELECT litestream_stop()")
    except Exception as e:  # noqa: BLE001 - reported through the file
        res["error"] = str(e)
    with open(out + ".tmp", "w") as f:
        json.dump(res, f)
    os.rename(out + ".tmp", out)
    os._exit(0)


def fork_exit():
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    return {"status": status, "s": time.monotonic() - t0}


def handle(cmd):
    op = cmd["op"]
    if op == "start":
        return one("SELECT litestream_start()")
    if op == "status":
        return json.loads(one("SELECT litestream_status()"))
    if op == "write":
        for _ in range(int(cmd.get("n", 1))):
            insert()
        return one("SELECT count(*) FROM t")
    if op == "bulk":
        one("INSERT INTO t(who, at, pad) VALUES (?, ?, randomblob(?))", tag, time.time(),
            int(float(cmd["mib"]) * (1 << 20)))
        return one("SELECT count(*) FROM t")
    if op == "writer":
        writer_every[0] = float(cmd.get("every", 0))
        return True
    if op == "sync":
        return one("SELECT litestream_sync(?)", int(cmd.get("ms", 30000)))
    if op == "stop":
        return one("SELECT litestream_stop()")
    if op == "pid":
        return os.getpid()
    if op == "fork_exit":
        return fork_exit()
    if op == "reload":
        with lock:
            conn.enable_load_extension(True)
            conn.load_extension(EXT)
            conn.enable_load_extension(False)
        return True
    if op == "start_other":
        other = hostside.connect(DB, EXT)
        try:
            return other.execute("SELECT litestream_start()").fetchone()[0]
        finally:
            other.close()
    if op == "close":
        with lock:
            conn.close()
        return True
    if op == "fork_child":
        return fork_child(cmd["out"], float(cmd.get("wait", 30)))
    raise ValueError("unknown op %r" % op)


print(json.dumps({"ok": "ready", "pid": os.getpid()}), flush=True)
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    cmd = json.loads(line)
    if cmd["op"] == "exit_leak":
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))   # never deallocated, never closed
        break
    if cmd["op"] == "exit":
        break
    t0 = time.monotonic()
    try:
        out = {"ok": handle(cmd)}
    except Exception as e:  # noqa: BLE001 - report every failure to the driver
        out = {"error": str(e)}
    out["s"] = time.monotonic() - t0
    print(json.dumps(out), flush=True)
