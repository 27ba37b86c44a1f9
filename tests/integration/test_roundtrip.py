"""Replicate -> restore round trips, with writes from each kind of writer, to S3 and to a file replica.

Each restore must equal its source (same `.dump`) and pass integrity_check; every uploaded object
must pass tests/tools/ltx_check.py and sit at <path>/0000/<min>-<max>.ltx with metadata
litestream-timestamp.
"""
from pysupport.extension import TXID_RE, file_config, s3_config, s3_url
from pysupport.ltx import check_file_replica, check_s3_replica
from pysupport.paths import SQL_DIR
from pysupport.shell import assert_restores, assert_same_db, replicate_shell, restore_shell

WORKLOAD = (SQL_DIR / "workload.sql").read_text()


def test_writes_from_loading_connection(ext, s3, bucket, tmp_path):
    src = tmp_path / "src.db"
    w = SQL_DIR / "workload.sql"   # twice, with a sync between: several L0 files
    workload = ".read %s\nSELECT 'mid=' || litestream_sync(30000);\n.read %s" % (w, w)
    r = replicate_shell(ext, src, s3_config(bucket, "app.db", s3.endpoint), workload=workload)
    assert TXID_RE.match(r["mid"]) and TXID_RE.match(r["sync"]) and TXID_RE.match(r["stop"]), r
    assert r["stop"] >= r["sync"] > r["mid"]
    infos = check_s3_replica(s3.client, bucket, "app.db")
    assert len(infos) >= 2 and infos[-1]["max_txid"] == r["stop"]

    assert_restores(ext, src, tmp_path / "by-url.db", s3_url(bucket, "app.db", s3.endpoint), r["stop"])
    # the same replica through the configured (not URL) form, from a connection to the source
    got = restore_shell(ext, tmp_path / "by-config.db", host_db=src,
                        config=s3_config(bucket, "app.db", s3.endpoint))
    assert got == r["stop"]
    assert_same_db(src, tmp_path / "by-config.db")


def test_writes_from_second_connection_same_process(pyhost, ext, s3, bucket, tmp_path):
    src = tmp_path / "src.db"
    r = pyhost.run("""
        a = start_replicating(P["db"], P["config"])
        b = connect(P["db"])                      # loads the extension too; never calls start
        seen_bucket = one(b, "SELECT litestream_configure('bucket')")
        b.executescript(P["workload"])
        sync_a = one(a, "SELECT litestream_sync(30000)")
        b.execute("UPDATE items SET qty = qty * 2 WHERE id % 5 = 1")
        b.executescript(P["workload"])
        sync_b = one(b, "SELECT litestream_sync(30000)")   # the shared replicator, called from b
        result = {"bucket": seen_bucket, "sync_a": sync_a, "sync_b": sync_b,
                  "stop": one(a, "SELECT litestream_stop()")}
    """, db=str(src), config=s3_config(bucket, "db", s3.endpoint), workload=WORKLOAD)
    assert r["bucket"] == bucket
    assert TXID_RE.match(r["sync_a"]), r
    assert r["sync_b"] > r["sync_a"] and r["stop"] >= r["sync_b"], r
    infos = check_s3_replica(s3.client, bucket, "db")
    assert infos[-1]["max_txid"] == r["stop"]
    assert_restores(ext, src, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint), r["stop"])


def test_writes_from_another_process(pyhost, ext, s3, bucket, tmp_path):
    """A sqlite3 CLI process writes while a Python process replicates; the replicator must notice
    the commits by polling (status txid advances without a sync call), then sync covers them."""
    src = tmp_path / "src.db"
    r = pyhost.run("""
        a = start_replicating(P["db"], P["config"], "CREATE TABLE IF NOT EXISTS marker(x)")
        first = one(a, "SELECT litestream_sync(30000)")
        cli(P["db"], P["workload"])               # another process commits
        deadline = time.time() + 10
        polled = status(a)["txid"]
        while polled == first and time.time() < deadline:
            time.sleep(0.05)
            polled = status(a)["txid"]
        cli(P["db"], P["workload"])
        synced = one(a, "SELECT litestream_sync(30000)")
        result = {"first": first, "polled": polled, "synced": synced,
                  "stop": one(a, "SELECT litestream_stop()")}
    """, db=str(src), config=s3_config(bucket, "db", s3.endpoint), workload=WORKLOAD)
    assert r["polled"] != r["first"], "another process's commits were not picked up within 10 s"
    assert r["synced"] > r["polled"] > r["first"], r
    infos = check_s3_replica(s3.client, bucket, "db")
    assert infos[-1]["max_txid"] == r["stop"]
    assert_restores(ext, src, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint), r["stop"])


def test_file_replica(ext, tmp_path):
    src, replica = tmp_path / "src.db", tmp_path / "replica"
    replica.mkdir()
    r = replicate_shell(ext, src, file_config(replica))
    infos = check_file_replica(replica)
    assert infos[-1]["max_txid"] == r["stop"]
    assert_restores(ext, src, tmp_path / "out.db", "file://%s" % replica, r["stop"])
