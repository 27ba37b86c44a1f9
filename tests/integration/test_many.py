"""Many databases in one process (issue 12): fifty databases replicate side by side on the
fixed pools, each restores equal to its source, and the process's thread count does not grow
with the number of databases.

Before the pools, each database cost a replicator thread, a lease thread and a compaction
thread: fifty databases were 150 threads. Now the replicators share 4 threads, the leases 2,
compaction 2, S3 I/O 2 (plus at most 2 level-9 snapshot threads and the I/O runtime's blocking
pool, which is bounded too).
"""
from pysupport.extension import s3_config, s3_url
from pysupport.shell import assert_same_db

N_DBS = 50
TX_PER_DB = 4
# Everything the extension may start, whatever the number of databases: replicator 4, lease 2,
# background 2, I/O 2, snapshots 2, blocking I/O 8 (see runtime.rs), with room to spare.
THREAD_BOUND = 24

MANY = """
import threading
base = hostside.proc_self()["threads"]
conns = []
for i, (db, pairs) in enumerate(zip(P["dbs"], P["configs"])):
    conns.append(start_replicating(db, pairs, "CREATE TABLE IF NOT EXISTS t(i INTEGER, body TEXT)"))
started = hostside.proc_self()["threads"]
peak = started

def write(c, i):
    for k in range(P["tx"]):
        c.execute("INSERT INTO t VALUES (?, ?)", (k, "db %d row %d " % (i, k) + "x" * 200))

# Writers on 5 threads of the host, 10 databases each, all at once.
groups = [list(range(g, len(conns), 5)) for g in range(5)]
threads = [threading.Thread(target=lambda g=g: [write(conns[i], i) for i in g]) for g in groups]
for t in threads: t.start()
while any(t.is_alive() for t in threads):
    peak = max(peak, hostside.proc_self()["threads"])
    time.sleep(0.02)
for t in threads: t.join()
txids = [one(c, "SELECT litestream_sync(30000)") for c in conns]
peak = max(peak, hostside.proc_self()["threads"])
st = status(conns[0])
stops = [one(c, "SELECT litestream_stop()") for c in conns]
result = {"base": base, "started": started, "peak": peak - len(threads), "txids": txids,
          "stops": stops, "status": st}
"""


def test_fifty_databases_share_bounded_threads_and_all_restore(pyhost, ext, s3, bucket, tmp_path):
    dbs = [str(tmp_path / ("tenant-%02d.db" % i)) for i in range(N_DBS)]
    configs = [s3_config(bucket, "tenants/%02d" % i, s3.endpoint, **{"sync-interval": "200ms"})
               for i in range(N_DBS)]
    r = pyhost.run(MANY, timeout=240, dbs=dbs, configs=configs, tx=TX_PER_DB)
    print("threads: base %(base)d, after 50 starts %(started)d, peak while writing %(peak)d" % r)
    assert r["status"]["state"] == "running", r["status"]
    grown = r["peak"] - r["base"]
    assert grown <= THREAD_BOUND, "%d databases grew the process by %d threads (%s)" % (
        N_DBS, grown, {k: r[k] for k in ("base", "started", "peak")})
    assert all(t == s for t, s in zip(r["txids"], r["stops"])), (r["txids"], r["stops"])
    for i, db in enumerate(dbs):
        out = tmp_path / ("restored-%02d.db" % i)
        got = pyhost.run("""
            m = connect(":memory:")
            result = one(m, "SELECT litestream_restore(?, json_object('url', ?))", P["out"], P["url"])
        """, out=str(out), url=s3_url(bucket, "tenants/%02d" % i, s3.endpoint))
        assert got == r["stops"][i], (i, got, r["stops"][i])
        assert_same_db(db, out)
