"""Interop both ways with the real Litestream 0.5.17 (scripts/install-litestream.sh).

(a) `litestream restore` of a replica our extension wrote equals the source;
(b) our litestream_restore() of a replica `litestream replicate` wrote equals its source.
The reference binary runs without AWS_CA_BUNDLE (it refuses to start with it set).
"""
import signal
import subprocess
import time

from harness import (SQL_DIR, LTX_NAME_RE, assert_same_db, child_env, list_keys, reference_url,
                     replicate_shell, restore_shell, run_sqlite_shell, s3_config, s3_url)


def run_reference(litestream_bin, *args, timeout=120):
    p = subprocess.run([litestream_bin, *args], text=True, capture_output=True, timeout=timeout,
                       env=child_env(drop_ca_bundle=True))
    assert p.returncode == 0, "litestream %s exited %d\n%s\n%s" % (
        " ".join(args), p.returncode, p.stdout, p.stderr)
    return p.stdout


def test_reference_restores_our_replica(ext, litestream_bin, s3, bucket, tmp_path):
    src, out = tmp_path / "src.db", tmp_path / "ref-restored.db"
    r = replicate_shell(ext, src, s3_config(bucket, "ours.db", s3.endpoint))
    url = reference_url(bucket, "ours.db", s3.endpoint)
    listing = run_reference(litestream_bin, "ltx", "-level", "all", url)
    assert r["stop"] in listing, "litestream ltx does not list TXID %s:\n%s" % (r["stop"], listing)
    run_reference(litestream_bin, "restore", "-integrity-check", "full", "-o", str(out), url)
    assert_same_db(src, out)


def reference_replicate(litestream_bin, db, bucket, path, endpoint, work, phases=3):
    """Make a replica with `litestream replicate` the way a user runs it: WAL database first,
    then replicate with a control socket; each phase runs
    sql/workload.sql in a sqlite3 process and waits for `litestream sync -wait`; then stop it
    (SIGTERM: it syncs on shutdown). Returns the replicate log."""
    cfg, sock, log = work / "litestream.yml", work / "litestream.sock", work / "replicate.log"
    cfg.write_text(f"""\
logging:
  level: info
  stderr: true
socket:
  enabled: true
  path: {sock}
dbs:
  - path: {db}
    monitor-interval: 100ms
    replica:
      type: s3
      bucket: {bucket}
      path: {path}
      endpoint: {endpoint}
      region: us-east-1
      force-path-style: true
      sync-interval: 100ms
""")
    run_sqlite_shell(db, "PRAGMA journal_mode=WAL;\n")
    with open(log, "w") as logf:
        proc = subprocess.Popen([litestream_bin, "replicate", "-config", str(cfg)], stdout=logf,
                                stderr=subprocess.STDOUT, env=child_env(drop_ca_bundle=True))
    try:
        deadline = time.time() + 20
        while not sock.exists():
            assert proc.poll() is None, "litestream replicate exited:\n" + log.read_text()
            assert time.time() < deadline, "no control socket after 20 s:\n" + log.read_text()
            time.sleep(0.1)
        for _ in range(phases):
            run_sqlite_shell(db, ".read %s\n" % (SQL_DIR / "workload.sql"))
            run_reference(litestream_bin, "sync", "-wait", "-timeout", "60", "-socket", str(sock), str(db))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_we_restore_reference_replica(ext, litestream_bin, s3, bucket, tmp_path):
    src, out = tmp_path / "src.db", tmp_path / "our-restored.db"
    log = reference_replicate(litestream_bin, src, bucket, "ref.db", s3.endpoint, tmp_path)
    keys = [k for k, _ in list_keys(s3.client, bucket, "ref.db/")]
    l0 = [k for k in keys if k.startswith("ref.db/0000/")]
    assert len(l0) >= 2, "expected several L0 files from litestream replicate: %s\n%s" % (keys, log)
    newest = max(LTX_NAME_RE.match(k.rsplit("/", 1)[1]).group(2) for k in keys)

    txid = restore_shell(ext, out, url=s3_url(bucket, "ref.db", s3.endpoint))
    assert txid == newest, "restored TXID %s, the reference replica ends at %s" % (txid, newest)
    assert_same_db(src, out)
