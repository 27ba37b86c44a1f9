"""Checkpointing: ~200 MB of changes through a replicated database keep the WAL bounded, the WAL
restarts along the way, and the restore still equals the source.

The writer is the connection that called litestream_start(): its sqlite3_wal_hook belongs to the
replicator (auto-checkpoint is off for it), so only the replicator's checkpoints keep the WAL small.
Set LITESTREAM_CHECKPOINT_MB to push a different amount.
"""
import os

import pytest

from pysupport.extension import s3_config, s3_url
from pysupport.shell import assert_restores

TOTAL_MB = int(os.environ.get("LITESTREAM_CHECKPOINT_MB", "200"))
WAL_LIMIT = 64 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wal_stays_bounded_under_200mb_of_changes(pyhost, ext, s3, bucket, tmp_path):
    src = tmp_path / "big.db"
    r = pyhost.run("""
        db = P["db"]
        c = start_replicating(db, P["config"],
                              "CREATE TABLE blobs(id INTEGER PRIMARY KEY, gen INTEGER, b BLOB);"
                              "CREATE TABLE log(n INTEGER PRIMARY KEY, id INTEGER, size INTEGER)")
        written, n, max_wal, salts = 0, 0, 0, set()
        t0 = time.time()
        while written < P["total"]:
            n += 1
            rid = n % P["rows"]
            c.execute("BEGIN")
            c.execute("INSERT OR REPLACE INTO blobs(id, gen, b) VALUES (?, ?, randomblob(?))",
                      (rid, n, P["blob"]))
            c.execute("INSERT INTO log(id, size) VALUES (?, ?)", (rid, P["blob"]))
            if n % 7 == 0:      # free pages, so later transactions reuse them
                c.execute("DELETE FROM blobs WHERE id = ?", ((n * 13) % P["rows"],))
            if n % 50 == 0:
                c.execute("DELETE FROM log WHERE n < ?", (n - 100,))
            c.execute("COMMIT")
            written += P["blob"]
            max_wal = max(max_wal, wal_size(db))
            with open(db + "-wal", "rb") as f:
                hdr = f.read(32)
            if len(hdr) == 32:
                salts.add(hdr[16:24].hex())   # salt-1/salt-2 change on every WAL restart
        write_s = time.time() - t0
        synced = one(c, "SELECT litestream_sync(300000)")
        st = status(c)
        result = {"transactions": n, "written": written, "max_wal": max_wal,
                  "wal_generations": len(salts), "write_s": write_s,
                  "sync_s": time.time() - t0 - write_s, "synced": synced, "status": st,
                  "stop": one(c, "SELECT litestream_stop()"), "final_wal": wal_size(db)}
    """, timeout=800, db=str(src), total=TOTAL_MB << 20, rows=40, blob=1 << 20,
        config=s3_config(bucket, "big.db", s3.endpoint, min_checkpoint_page_count="500"))
    print("checkpoint run: %d transactions, %d MB written in %.1fs, sync %.1fs, max WAL %.1f MB, "
          "%d WAL generations, %s objects / %s bytes uploaded" % (
              r["transactions"], r["written"] >> 20, r["write_s"], r["sync_s"],
              r["max_wal"] / 2**20, r["wal_generations"], r["status"].get("objects_uploaded"),
              r["status"].get("bytes_uploaded")))
    # nothing lost: checked first, it matters most
    assert_restores(ext, src, tmp_path / "restored.db", s3_url(bucket, "big.db", s3.endpoint),
                    r["stop"], big=True, timeout=600)

    assert r["max_wal"] < WAL_LIMIT, "WAL reached %.1f MB" % (r["max_wal"] / 2**20)
    assert r["wal_generations"] >= 2, "the WAL never restarted: nothing was checkpointed"


@pytest.mark.timeout(300)
def test_small_commits_as_fast_as_possible_stay_continuous(pyhost, ext, s3, bucket, tmp_path):
    """One-row commits at synchronous=NORMAL, back to back for 6 s, with a thread running short
    queries in a loop: the WAL fills faster than any sync interval, so the replicator runs PASSIVE
    checkpoints beside the writer (moving its read transaction forward first) and asks the writer
    for short pauses in which the WAL restarts, once the readers that began before the pause are
    done (a restart needs no reader on read marks 1 and up; plain SQLite's WAL grew to 1 GB with
    such a reader). Every commit is still replicated incrementally (one snapshot, the first), the
    writer is never slowed to a commit per cycle (uploads stay far fewer than commits), the WAL
    restarts and stays bounded, and the restore equals the source."""
    src = tmp_path / "fast.db"
    r = pyhost.run("""
        import threading
        db = P["db"]
        c = start_replicating(db, P["config"], "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        c.execute("PRAGMA synchronous=NORMAL")
        one(c, "SELECT litestream_sync(60000)")
        stop, reads = threading.Event(), [0]
        def reader():
            r = connect(db, load=False)
            while not stop.is_set():
                r.execute("SELECT max(id), (SELECT v FROM t WHERE id = 1) FROM t").fetchone()
                reads[0] += 1
        th = threading.Thread(target=reader)
        th.start()
        n, max_wal, salts, t0 = 0, 0, set(), time.time()
        while time.time() - t0 < P["seconds"]:
            c.execute("BEGIN")
            c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
            c.execute("COMMIT")
            n += 1
            if n % 500 == 0:
                max_wal = max(max_wal, wal_size(db))
                with open(db + "-wal", "rb") as f:
                    salts.add(f.read(32)[16:24].hex())
        stop.set()
        th.join()
        synced = one(c, "SELECT litestream_sync(120000)")
        result = {"commits": n, "reads": reads[0], "max_wal": max_wal, "generations": len(salts),
                  "status": status(c), "stop": one(c, "SELECT litestream_stop()")}
    """, timeout=240, db=str(src), seconds=6,
        config=s3_config(bucket, "fast", s3.endpoint, sync_interval="1s", snapshot_interval="0"))
    st = r["status"]
    print("fast small commits: %d commits, %d reads, max WAL %.1f MB, %d WAL generations seen, "
          "%s checkpoints (%s beside the writer), %s objects" % (
              r["commits"], r["reads"], r["max_wal"] / 2**20, r["generations"], st["checkpoints"],
              st.get("checkpoints_unlocked"), st["objects_uploaded"]))
    assert_restores(ext, src, tmp_path / "restored.db", s3_url(bucket, "fast", s3.endpoint),
                    r["stop"], big=True)
    assert st["snapshots"] == 1, "continuity lost: %s" % st["last_snapshot_reason"]
    assert st["checkpoints_unlocked"] >= 1, st
    # A writer made to wait for a cycle per commit would upload about one object per commit.
    assert st["objects_uploaded"] * 20 < r["commits"], st
    assert r["generations"] >= 2, "the WAL never restarted"
    assert r["max_wal"] < WAL_LIMIT, "WAL reached %.1f MB" % (r["max_wal"] / 2**20)


def test_truncate_checkpoints_lose_nothing(pyhost, ext, s3, bucket, tmp_path):
    """A WAL already past truncate-page-n when replication starts, then more commits: the first
    cycle snapshots and truncates the WAL; every later commit is still replicated incrementally
    (no extra snapshot) and the restore equals the source."""
    src = tmp_path / "trunc.db"
    r = pyhost.run("""
        c = connect(P["db"], load=False)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA wal_autocheckpoint=0")
        c.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
        c.execute("BEGIN")
        for i in range(3000):
            c.execute("INSERT INTO b(v) VALUES (randomblob(4000))")
        c.execute("COMMIT")
        wal_before = wal_size(P["db"])
        c.enable_load_extension(True)
        c.load_extension(P["ext"])
        configure(c, P["config"])
        one(c, "SELECT litestream_start()")
        first = one(c, "SELECT litestream_sync(60000)")
        syncs = []
        for n in range(5):
            c.execute("UPDATE b SET v = randomblob(100) WHERE id % 7 = ?", (n,))
            syncs.append(one(c, "SELECT litestream_sync(60000)"))
        result = {"wal_before": wal_before, "first": first, "syncs": syncs, "status": status(c),
                  "stop": one(c, "SELECT litestream_stop()")}
    """, db=str(src), ext=ext, config=s3_config(bucket, "trunc", s3.endpoint, truncate_page_n="1000",
                                                 snapshot_interval="0"))
    assert r["wal_before"] > 1000 * 4096
    assert r["status"]["snapshots"] == 1, r["status"]
    assert r["syncs"] == sorted(set(r["syncs"])) and r["syncs"][0] > r["first"], r["syncs"]
    assert_restores(ext, src, tmp_path / "restored.db", s3_url(bucket, "trunc", s3.endpoint), r["stop"])


PLAIN_WRITER = """
import os, sqlite3, sys
db, total_mb = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db, isolation_level=None, timeout=60)
blob, max_wal = os.urandom(1 << 20), 0
for i in range(total_mb):
    c.execute("INSERT OR REPLACE INTO b(id, v) VALUES (?, ?)", (i % 50, blob))
    try:
        max_wal = max(max_wal, os.path.getsize(db + "-wal"))
    except OSError:
        pass
print(max_wal)
"""


def test_a_writer_without_the_extension_cannot_grow_the_wal_without_bound(pyhost, ext, s3,
                                                                         bucket, tmp_path):
    """Another process (no extension, so no backpressure) writes 1 MiB transactions back to back
    while this one replicates. Its commits leave the write lock free only for a moment between
    transactions: the replicator's checkpoints must still get it (eager lock retries) and the
    rest of the upload happens under it, so the WAL stays bounded (it reached 596 MB for 400 MB
    written before) and the restore equals the source."""
    src = tmp_path / "plain.db"
    r = pyhost.run("""
        import subprocess, sys
        c = start_replicating(P["db"], P["config"], "CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
        one(c, "SELECT litestream_sync(60000)")
        p = subprocess.run([sys.executable, "-c", P["script"], P["db"], str(P["mb"])],
                           capture_output=True, text=True, timeout=600)
        synced = one(c, "SELECT litestream_sync(300000)")
        result = {"rc": p.returncode, "err": p.stderr, "max_wal": int(p.stdout or 0),
                  "status": status(c), "stop": one(c, "SELECT litestream_stop()")}
    """, timeout=900, db=str(src), script=PLAIN_WRITER, mb=300,
        config=s3_config(bucket, "plain", s3.endpoint, snapshot_interval="0"))
    assert r["rc"] == 0, r["err"]
    print("plain writer: max WAL %.1f MB" % (r["max_wal"] / 2**20))
    assert_restores(ext, src, tmp_path / "restored.db", s3_url(bucket, "plain", s3.endpoint),
                    r["stop"], big=True, timeout=600)
    assert r["max_wal"] < 200 << 20, "WAL reached %.1f MB" % (r["max_wal"] / 2**20)
