"""Checkpoints run by the application: a second process runs PRAGMA wal_checkpoint(FULL),
(RESTART) and (TRUNCATE) with a 60 s busy timeout while the replicating process writes.

Without the extension each takes milliseconds. The replicator's read transaction pins the WAL,
and such a checkpoint waits for every reader while it holds the write lock: before the
replicator learned to step aside, each one took its whole busy timeout and the writer failed with
"database is locked". Now each completes (busy = 0) long before its timeout, the writer never
fails, nothing needs a new snapshot, and the replica equals the source.
"""
import textwrap

from pysupport.extension import s3_config, s3_url
from pysupport.paths import HOST_PYTHON
from pysupport.shell import assert_restores

CHECKPOINTER = textwrap.dedent("""
    import json, sqlite3, sys, time
    db, modes = sys.argv[1], sys.argv[2].split(",")
    c = sqlite3.connect(db, isolation_level=None, timeout=60)   # busy timeout 60 s
    out = []
    for mode in modes:
        t0 = time.time()
        busy, log, done = c.execute("PRAGMA wal_checkpoint(%s)" % mode).fetchone()
        out.append({"mode": mode, "busy": busy, "log": log, "done": done,
                    "seconds": time.time() - t0})
        time.sleep(0.5)
    print(json.dumps(out))
""")


def test_application_checkpoints_do_not_wait_for_the_replicator(pyhost, ext, s3, bucket,
                                                                tmp_path):
    src = tmp_path / "app.db"
    modes = ["FULL", "RESTART", "TRUNCATE"] * 2
    r = pyhost.run("""
        import subprocess
        c = start_replicating(P["db"], P["config"], "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        one(c, "SELECT litestream_sync(60000)")
        ckpt = subprocess.Popen([P["python"], "-c", P["checkpointer"], P["db"], P["modes"]],
                                stdout=subprocess.PIPE, text=True)
        commits, errors, slowest = 0, [], 0.0
        while ckpt.poll() is None:
            t0 = time.time()
            try:
                c.execute("INSERT INTO t(v) VALUES (randomblob(200))")
                commits += 1
            except Exception as e:
                errors.append(str(e))
            slowest = max(slowest, time.time() - t0)
            time.sleep(0.002)
        checkpoints = json.loads(ckpt.stdout.read())
        synced = one(c, "SELECT litestream_sync(60000)")
        result = {"commits": commits, "errors": errors, "slowest": slowest,
                  "checkpoints": checkpoints, "synced": synced, "status": status(c),
                  "stop": one(c, "SELECT litestream_stop()")}
    """, timeout=300, db=str(src), python=HOST_PYTHON, checkpointer=CHECKPOINTER,
        modes=",".join(modes),
        config=s3_config(bucket, "app", s3.endpoint, snapshot_interval="0", levels="off"))
    print("outside checkpoints:", r["checkpoints"], "commits", r["commits"],
          "slowest commit %.3f s" % r["slowest"], "yielded", r["status"]["checkpoints_yielded"])
    assert r["errors"] == [], r["errors"][:3]
    for ck in r["checkpoints"]:
        assert ck["busy"] == 0, ck
        # Far below the 60 s busy timeout the checkpoint would otherwise wait out.
        assert ck["seconds"] < 10, ck
    assert r["status"]["checkpoints_yielded"] >= 1, r["status"]
    assert r["status"]["snapshots"] == 1, r["status"]["last_snapshot_reason"]
    assert_restores(ext, src, tmp_path / "restored.db", s3_url(bucket, "app", s3.endpoint), r["stop"])
