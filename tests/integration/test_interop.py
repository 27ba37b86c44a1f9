"""Interop both ways with the real Litestream 0.5.17 (scripts/install-litestream.sh).

(a) `litestream restore` of a replica our extension wrote equals the source;
(b) our litestream_restore() of a replica `litestream replicate` wrote equals its source.
The reference binary runs without AWS_CA_BUNDLE (it refuses to start with it set).
"""
from pysupport.extension import s3_config, s3_url
from pysupport.ltx import LTX_NAME_RE
from pysupport.paths import SQL_DIR
from pysupport.reference import Sidecar, reference_url, run_reference
from pysupport.s3client import key_names
from pysupport.shell import assert_restores, assert_same_db, replicate_shell, run_sqlite_shell


def test_reference_restores_our_replica(ext, litestream_bin, s3, bucket, tmp_path):
    src, out = tmp_path / "src.db", tmp_path / "ref-restored.db"
    r = replicate_shell(ext, src, s3_config(bucket, "ours.db", s3.endpoint))
    url = reference_url(bucket, "ours.db", s3.endpoint)
    listing = run_reference(litestream_bin, "ltx", "-level", "all", url).stdout
    assert r["stop"] in listing, "litestream ltx does not list TXID %s:\n%s" % (r["stop"], listing)
    run_reference(litestream_bin, "restore", "-integrity-check", "full", "-o", str(out), url)
    assert_same_db(src, out)


def reference_replicate(litestream_bin, db, bucket, path, endpoint, work, phases=3):
    """Make a replica with `litestream replicate` the way a user runs it: WAL database first,
    then replicate with a control socket; each phase runs sql/workload.sql in a sqlite3 process
    and waits for `litestream sync -wait`; then stop it (SIGTERM: it syncs on shutdown).
    Returns the replicate log."""
    run_sqlite_shell(db, "PRAGMA journal_mode=WAL;\n")
    sidecar = Sidecar(litestream_bin, db, bucket, path, endpoint, work, sync_interval="100ms",
                      monitor_interval="100ms").start()
    try:
        for _ in range(phases):
            run_sqlite_shell(db, ".read %s\n" % (SQL_DIR / "workload.sql"))
            sidecar.sync_wait(60)
    finally:
        log = sidecar.stop()
    return log


def test_we_restore_reference_replica(ext, litestream_bin, s3, bucket, tmp_path):
    src, out = tmp_path / "src.db", tmp_path / "our-restored.db"
    log = reference_replicate(litestream_bin, src, bucket, "ref.db", s3.endpoint, tmp_path)
    keys = key_names(s3.client, bucket, "ref.db/")
    l0 = [k for k in keys if k.startswith("ref.db/0000/")]
    assert len(l0) >= 2, "expected several L0 files from litestream replicate: %s\n%s" % (keys, log)
    newest = max(LTX_NAME_RE.match(k.rsplit("/", 1)[1]).group(2) for k in keys)

    assert_restores(ext, src, out, s3_url(bucket, "ref.db", s3.endpoint), newest)
