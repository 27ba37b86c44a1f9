"""Strict configuration inputs, through SQL in a real host (/usr/bin/python3 loading the extension).

Every refused value must be an SQL error naming the key, echoing the value given and saying what
is accepted; every accepted one returns its normalized form. Covered: the sync-interval floor,
blob values, numbers given as REAL or text (one rule: exact decimal, must be whole), negative
page counts, endpoint hosts and S3 bucket names, url paths (no bucket root, no dot or empty
segments, no file:///, no empty query values), skip-verify without an endpoint, and changing
keys while the database is being replicated.
"""
import json

import pytest

from harness import PyHost, s3_config

# A statement's outcome: ("ok", normalized value) or ("error", the words the message must hold).
OK, ERR = "ok", "error"

EXPECTATIONS = [
    # --- sync-interval: 0 or at least 10ms (shorter intervals spin the replicator)
    ("SELECT litestream_configure('sync-interval', '1ns')", ERR, ["sync-interval", "'1ns'", "at least 10ms"]),
    ("SELECT litestream_configure('sync-interval', '1ms')", ERR, ["sync-interval", "'1ms'", "at least 10ms"]),
    ("SELECT litestream_configure('sync-interval', '9999us')", ERR, ["sync-interval", "'9999us'", "0 (upload on every commit)"]),
    ("SELECT litestream_configure('sync-interval', '10ms')", OK, "10ms"),
    ("SELECT litestream_configure('sync-interval', '0')", OK, "0s"),
    ("SELECT litestream_configure('sync-interval', 0)", OK, "0s"),
    # --- blob values: the error names the key; an unknown key is reported as such first
    ("SELECT litestream_configure('part-size', X'3130')", ERR, ["value for part-size", "text", "blob"]),
    ("SELECT litestream_configure('sync-interval', X'')", ERR, ["value for sync-interval", "blob"]),
    ("SELECT litestream_configure('bukket', X'00')", ERR, ["unknown key 'bukket'", "valid keys", "bucket"]),
    # --- numbers: a REAL means its decimal value, the same as that number written as text
    ("SELECT litestream_configure('part-size', 1e7)", OK, "10000000"),
    ("SELECT litestream_configure('part-size', '1e7')", OK, "10000000"),
    ("SELECT litestream_configure('part-size', 10485760.0)", OK, "10485760"),
    ("SELECT litestream_configure('part-size', '10485760.0')", OK, "10485760"),
    ("SELECT litestream_configure('part-size', '1.5e1MB')", OK, "15728640"),
    ("SELECT litestream_configure('part-size', '1.5')", ERR, ["part-size", "'1.5'", "not a whole number of bytes"]),
    ("SELECT litestream_configure('part-size', 1.5)", ERR, ["part-size", "'1.5'", "not a whole number of bytes"]),
    ("SELECT litestream_configure('part-size', 5242880.5)", ERR, ["part-size", "'5242880.5'", "not a whole number of bytes"]),
    ("SELECT litestream_configure('part-size', '1.0000001MB')", ERR, ["part-size", "'1.0000001MB'", "not a whole number of bytes"]),
    ("SELECT litestream_configure('part-size', '1.5MB')", ERR, ["part-size 1.5MB", "1572864 bytes", "below the S3 minimum"]),
    ("SELECT litestream_configure('concurrency', 8.0)", OK, "8"),
    ("SELECT litestream_configure('concurrency', '8e0')", OK, "8"),
    ("SELECT litestream_configure('concurrency', 1.5)", ERR, ["concurrency", "'1.5'", "whole number from 1 to 64"]),
    ("SELECT litestream_configure('min-checkpoint-page-count', 2e3)", OK, "2000"),
    # --- negative page counts are errors (no longer a silent 'off')
    ("SELECT litestream_configure('truncate-page-n', -1)", ERR, ["truncate-page-n", "'-1'", "negative", "'off'"]),
    ("SELECT litestream_configure('truncate-page-n', '-5')", ERR, ["truncate-page-n", "'-5'", "negative", "'off'"]),
    ("SELECT litestream_configure('truncate-page-n', -5.0)", ERR, ["truncate-page-n", "'-5'", "negative"]),
    ("SELECT litestream_configure('truncate-page-n', 'off')", OK, "off"),
    ("SELECT litestream_configure('min-checkpoint-page-count', -1)", ERR, ["min-checkpoint-page-count", "'-1'", "negative"]),
    # --- endpoint hosts and bucket names
    ("SELECT litestream_configure('endpoint', '-1')", ERR, ["endpoint", "'-1'", "host name"]),
    ("SELECT litestream_configure('endpoint', 'http://999.1.1.1:9000')", ERR, ["endpoint", "999.1.1.1", "IPv4 address"]),
    ("SELECT litestream_configure('endpoint', 'https://a..b')", ERR, ["endpoint", "a..b", "host name"]),
    ("SELECT litestream_configure('endpoint', '127.0.0.1:9000')", OK, "https://127.0.0.1:9000"),
    ("SELECT litestream_configure('bucket', 'ab')", ERR, ["bucket", "'ab'", "too short", "3 to 63"]),
    ("SELECT litestream_configure('bucket', 'My_Bucket')", ERR, ["bucket", "'My_Bucket'", "uppercase", "lowercase letters"]),
    ("SELECT litestream_configure('bucket', '192.168.0.1')", ERR, ["bucket", "'192.168.0.1'", "not an IP address"]),
    ("SELECT litestream_configure('bucket', '-abc')", ERR, ["bucket", "'-abc'", "start and end with a letter or digit"]),
    ("SELECT litestream_configure('bucket', 'a..b')", ERR, ["bucket", "'a..b'", "two dots"]),
    ("SELECT litestream_configure('bucket', '" + "a" * 64 + "')", ERR, ["bucket", "too long (64 characters)"]),
    ("SELECT litestream_configure('bucket', 'my-bucket.v2')", OK, "my-bucket.v2"),
    ("SELECT litestream_configure('bucket', NULL)", OK, None),
    # --- url paths: no bucket root (as path='' is refused), no dot/empty segments, no file:///
    ("SELECT litestream_configure('path', '')", ERR, ["path", "''", "non-empty key prefix"]),
    ("SELECT litestream_configure('url', 's3://test')", ERR, ["url", "'s3://test'", "no path", "s3://BUCKET/PATH"]),
    ("SELECT litestream_configure('url', 's3://test/')", ERR, ["url", "'s3://test/'", "no path", "s3://BUCKET/PATH"]),
    ("SELECT litestream_configure('url', 's3://test/db?endpoint=')", ERR, ["url", "endpoint", "has no value"]),
    ("SELECT litestream_configure('url', 's3://test/a/../b')", ERR, ["url", "'s3://test/a/../b'", "'..' segment"]),
    ("SELECT litestream_configure('url', 's3://test/a/./b')", ERR, ["url", "'s3://test/a/./b'", "'.' segment"]),
    ("SELECT litestream_configure('url', 's3://test/a//b')", ERR, ["url", "'s3://test/a//b'", "empty segment"]),
    ("SELECT litestream_configure('url', 'file:///')", ERR, ["url", "'file:///'", "root directory"]),
    ("SELECT litestream_configure('url', 's3://test/db/')", OK, "s3://test/db"),
    ("SELECT litestream_configure('url', NULL)", OK, None),
]


@pytest.fixture(scope="module")
def outcomes(ext, tmp_path_factory):
    """Every statement of EXPECTATIONS on one connection of one host process, in order."""
    db = tmp_path_factory.mktemp("config-inputs") / "c.db"
    return PyHost(ext).run("""
        c = connect(P["db"])
        out = []
        for sql in P["sql"]:
            try:
                out.append(["ok", one(c, sql)])
            except sqlite3.Error as e:
                out.append(["error", str(e)])
        result = out
    """, db=str(db), sql=[sql for sql, _, _ in EXPECTATIONS])


@pytest.mark.parametrize("index", range(len(EXPECTATIONS)),
                         ids=[sql.split("(", 1)[1][:60] for sql, _, _ in EXPECTATIONS])
def test_configure_input(outcomes, index):
    sql, kind, want = EXPECTATIONS[index]
    got_kind, got = outcomes[index]
    assert got_kind == kind, "%s: expected %s %r, got %s %r" % (sql, kind, want, got_kind, got)
    if kind == OK:
        assert got == want, "%s returned %r" % (sql, got)
    else:
        assert got.startswith("litestream_configure: "), got
        missing = [w for w in want if w not in got]
        assert not missing, "%s: the error lacks %s: %s" % (sql, missing, got)


def test_restore_by_url_applies_the_same_rules(pyhost, tmp_path):
    out = tmp_path / "out.db"
    r = pyhost.run("""
        c = connect(":memory:")
        result = [error_of(c, "SELECT litestream_restore(?, ?)", P["out"], json.dumps({"url": u}))
                  for u in P["urls"]]
    """, out=str(out), urls=["s3://test", "s3://test/a/../b", "file:///", "s3://test/db?region="])
    for url, err in zip(["s3://test", "s3://test/a/../b", "file:///", "s3://test/db?region="], r):
        assert err and "for url" in err and url in err, (url, err)
    assert not out.exists()


def test_skip_verify_needs_an_endpoint(pyhost, tmp_path):
    """Without an endpoint the replica is AWS S3, whose certificates are always checked: start and
    restore refuse skip-verify=true before contacting anything."""
    r = pyhost.run("""
        c = connect(P["db"])
        c.execute("PRAGMA journal_mode=WAL")
        configure(c, P["config"])
        start = error_of(c, "SELECT litestream_start()")
        restore = error_of(c, "SELECT litestream_restore(?, ?)", P["out"],
                           json.dumps({"url": "s3://some-bucket/db?skip-verify=true"}))
        result = {"start": start, "restore": restore, "status": status(c)["state"]}
    """, db=str(tmp_path / "sv.db"), out=str(tmp_path / "out.db"), config=[
        ("bucket", "some-bucket"), ("path", "db"), ("skip-verify", "true"),
        ("access-key-id", "test"), ("secret-access-key", "testtesttest")])
    for what in ("start", "restore"):
        assert r[what] and "skip-verify" in r[what] and "endpoint" in r[what], r
    assert "litestream_configure('skip-verify', NULL)" in r["start"], r
    assert r["status"] == "stopped"
    assert not (tmp_path / "out.db").exists()


def test_skip_verify_with_an_http_endpoint_replicates(pyhost, s3, bucket, tmp_path):
    """With a custom endpoint skip-verify is accepted (over http:// there is no certificate)."""
    r = pyhost.run("""
        c = connect(P["db"])
        c.execute("PRAGMA journal_mode=WAL")
        configure(c, P["config"])
        one(c, "SELECT litestream_start()")
        c.execute("CREATE TABLE t(x)")
        c.execute("INSERT INTO t VALUES (1)")
        txid = one(c, "SELECT litestream_sync(30000)")
        result = {"txid": txid, "stop": one(c, "SELECT litestream_stop()")}
    """, db=str(tmp_path / "h.db"), config=s3_config(bucket, "db", s3.endpoint, skip_verify="true"))
    assert r["txid"] and r["stop"] >= r["txid"]


def test_keys_cannot_change_while_replicating(pyhost, s3, bucket, tmp_path):
    """One rule for every key: while the database is replicated a change is refused with the way
    out (litestream_stop() first); a value that changes nothing is accepted; after stop the
    change is taken and the next start uses it."""
    db = tmp_path / "live.db"
    r = pyhost.run("""
        c = connect(P["db"])
        c.execute("PRAGMA journal_mode=WAL")
        configure(c, P["config"])
        one(c, "SELECT litestream_start()")
        other = connect(P["db"])   # another connection of the process: same configuration
        changes = {k: error_of(x, "SELECT litestream_configure(?, ?)", k, v)
                   for x, k, v in [(c, "type", "file"), (c, "sync-interval", "5s"),
                                   (other, "path", "elsewhere"), (other, "lease", "off"),
                                   (c, "region", None)]}
        same = [one(c, "SELECT litestream_configure('sync-interval', '100ms')"),
                one(other, "SELECT litestream_configure('BUCKET', ?)", P["bucket"]),
                one(c, "SELECT litestream_configure('lease-owner', NULL)") is not None]
        bad = error_of(c, "SELECT litestream_configure('sync-interval', 'soon')")
        config_while = json.loads(one(c, "SELECT litestream_config()"))
        st = status(c)
        one(c, "SELECT litestream_stop()")
        after = one(c, "SELECT litestream_configure('sync-interval', '5s')")
        restarted = one(c, "SELECT litestream_start()")
        interval = status(c).get("sync_interval")
        one(c, "SELECT litestream_stop()")
        result = {"changes": changes, "same": same, "bad": bad, "config": config_while,
                  "state": st["state"], "after": after, "restarted": restarted,
                  "interval": interval}
    """, db=str(db), bucket=bucket, config=s3_config(bucket, "db", s3.endpoint))
    for key, err in r["changes"].items():
        assert err, "changing %s while replicating was accepted" % key
        assert ("cannot change '%s'" % key) in err and "litestream_stop() first" in err, err
        assert str(db) in err, err
    assert r["same"] == ["100ms", bucket, True]
    assert r["bad"] and "invalid value 'soon' for sync-interval" in r["bad"], r["bad"]
    assert r["config"]["sync-interval"] == "100ms" and r["config"]["type"] == "s3"
    assert r["state"] in ("running", "standby"), r  # standby: still taking its lease
    assert r["after"] == "5s" and r["restarted"] == "started"
    assert r["interval"] == "5s", r
