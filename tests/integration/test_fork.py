"""fork(): a child never inherits a half-alive replicator. The parent replicates a.db and forks;
the child sees replication of a.db as stopped (the parent's threads do not exist in it), can start
its own replicator for b.db, and the parent carries on undisturbed."""
import json
import subprocess
import textwrap

from pysupport.awsenv import child_env
from pysupport.extension import s3_url
from pysupport.paths import HOST_PYTHON
from pysupport.shell import assert_restores

SCRIPT = textwrap.dedent("""
    import sqlite3, os, sys, json
    ext, d, endpoint, bucket = sys.argv[1:5]
    def conn(p):
        c = sqlite3.connect(p, isolation_level=None)
        c.enable_load_extension(True); c.load_extension(ext)
        c.execute("PRAGMA busy_timeout=10000")
        return c
    def cfg(c, path):
        for k, v in [("bucket", bucket), ("path", path), ("endpoint", endpoint), ("sync-interval", "100ms")]:
            c.execute("SELECT litestream_configure(?, ?)", (k, v))
    out = {}
    a = conn(d + "/a.db"); cfg(a, "fork-a")
    a.execute("SELECT litestream_start()")
    a.execute("CREATE TABLE t(x)"); a.execute("INSERT INTO t VALUES (1)")
    out["parent_sync_1"] = a.execute("SELECT litestream_sync(10000)").fetchone()[0]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child = {}
        c = conn(d + "/a.db")
        child["a_state"] = json.loads(c.execute("SELECT litestream_status()").fetchone()[0])["state"]
        b = conn(d + "/b.db"); cfg(b, "fork-b")
        child["b_start"] = b.execute("SELECT litestream_start()").fetchone()[0]
        b.execute("CREATE TABLE t(x)"); b.execute("INSERT INTO t VALUES (2)")
        child["b_sync"] = b.execute("SELECT litestream_sync(10000)").fetchone()[0]
        child["b_stop"] = b.execute("SELECT litestream_stop()").fetchone()[0]
        os.write(w, json.dumps(child).encode()); os._exit(0)
    os.close(w)
    out["child"] = json.loads(os.read(r, 65536).decode())
    os.waitpid(pid, 0)
    a.execute("INSERT INTO t VALUES (3)")
    out["parent_sync_2"] = a.execute("SELECT litestream_sync(10000)").fetchone()[0]
    out["parent_stop"] = a.execute("SELECT litestream_stop()").fetchone()[0]
    print(json.dumps(out))
""")


def test_fork_child_starts_fresh(ext, s3, bucket, tmp_path):
    r = subprocess.run([HOST_PYTHON, "-c", SCRIPT, ext, str(tmp_path), s3.endpoint, bucket],
                       env=child_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["child"]["a_state"] == "stopped"
    assert out["child"]["b_start"] == "started"
    # TXIDs depend on how commits fall into sync intervals; their order does not.
    assert out["child"]["b_sync"] == out["child"]["b_stop"] >= "0000000000000001"
    assert out["parent_sync_2"] == out["parent_stop"] > out["parent_sync_1"] >= "0000000000000001"
    for name, path in (("a.db", "fork-a"), ("b.db", "fork-b")):
        assert_restores(ext, tmp_path / name, tmp_path / ("restored-" + name),
                        s3_url(bucket, path, s3.endpoint))
