"""fork(): a child never inherits a half-alive replicator. The parent replicates a.db and forks;
the child sees replication of a.db as stopped (the parent's threads do not exist in it), can start
its own replicator for b.db, and the parent carries on undisturbed."""
from pysupport.extension import s3_url
from pysupport.shell import assert_restores

# The parent: a replicates; a fork's child starts b; the parent goes on with a.
FORKING = """
def pairs(prefix):
    # credentials from the environment, as an application would have them
    return [("bucket", P["bucket"]), ("path", prefix), ("endpoint", P["endpoint"]),
            ("sync-interval", "100ms")]
out = {}
a = start_replicating(P["dir"] + "/a.db", pairs("fork-a"))
a.execute("CREATE TABLE t(x)"); a.execute("INSERT INTO t VALUES (1)")
out["parent_sync_1"] = one(a, "SELECT litestream_sync(10000)")
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    child = {}
    c = connect(P["dir"] + "/a.db")
    child["a_state"] = status(c)["state"]
    b = connect(P["dir"] + "/b.db")
    configure(b, pairs("fork-b"))
    child["b_start"] = one(b, "SELECT litestream_start()")
    b.execute("CREATE TABLE t(x)"); b.execute("INSERT INTO t VALUES (2)")
    child["b_sync"] = one(b, "SELECT litestream_sync(10000)")
    child["b_stop"] = one(b, "SELECT litestream_stop()")
    os.write(w, json.dumps(child).encode()); os._exit(0)
os.close(w)
out["child"] = json.loads(os.read(r, 65536).decode())
os.waitpid(pid, 0)
a.execute("INSERT INTO t VALUES (3)")
out["parent_sync_2"] = one(a, "SELECT litestream_sync(10000)")
out["parent_stop"] = one(a, "SELECT litestream_stop()")
result = out
"""


def test_fork_child_starts_fresh(pyhost, ext, s3, bucket, tmp_path):
    out = pyhost.run(FORKING, timeout=120, dir=str(tmp_path), endpoint=s3.endpoint, bucket=bucket)
    assert out["child"]["a_state"] == "stopped"
    assert out["child"]["b_start"] == "started"
    # TXIDs depend on how commits fall into sync intervals; their order does not.
    assert out["child"]["b_sync"] == out["child"]["b_stop"] >= "0000000000000001"
    assert out["parent_sync_2"] == out["parent_stop"] > out["parent_sync_1"] >= "0000000000000001"
    for name, path in (("a.db", "fork-a"), ("b.db", "fork-b")):
        assert_restores(ext, tmp_path / name, tmp_path / ("restored-" + name),
                        s3_url(bucket, path, s3.endpoint))
