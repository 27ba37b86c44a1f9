"""The SQL surface: which functions exist, configuration values, and each bad input's SQL error."""
import json
import re
import subprocess

import pytest

from pysupport.extension import EXPECTED_FUNCTIONS, TXID_RE, config_sql, s3_config, s3_url
from pysupport.shell import (assert_same_db, config_keys, ext_error, labeled, load_sql,
                             replicate_shell, restore_shell, run_sqlite_shell)

FUNCTIONS_SQL = "SELECT DISTINCT name FROM pragma_function_list WHERE name LIKE 'litestream%' ORDER BY name"


def test_function_list_cli(ext, tmp_path):
    out = run_sqlite_shell(tmp_path / "f.db", load_sql(ext, marker=False) + FUNCTIONS_SQL + ";\n")
    assert out.split() == EXPECTED_FUNCTIONS


def test_function_list_python_host(pyhost, tmp_path):
    names = pyhost.run("""
        c = connect(P["db"])
        result = [r[0] for r in c.execute(P["sql"])]
    """, db=str(tmp_path / "f.db"), sql=FUNCTIONS_SQL)
    assert names == EXPECTED_FUNCTIONS


def test_version(ext, tmp_path):
    sql = load_sql(ext, marker=False) + "SELECT litestream_version();\n"
    out = run_sqlite_shell(tmp_path / "v.db", sql).strip()
    assert re.search(r"\d+\.\d+\.\d+", out), out


def test_configure_normalizes_and_resets(ext, tmp_path):
    script = load_sql(ext) + """
SELECT 'set=' || litestream_configure('part-size', '10MB');
SELECT 'get=' || litestream_configure('part-size');
SELECT 'conc=' || litestream_configure('concurrency', '8');
SELECT 'reset=' || ifnull(litestream_configure('part-size', NULL), 'NULL');
SELECT 'after=' || ifnull(litestream_configure('part-size'), 'NULL');
SELECT 'config=' || litestream_config();
"""
    r = labeled(run_sqlite_shell(tmp_path / "c.db", script))
    assert r["set"] == "10485760"
    assert r["get"] == "10485760"
    assert r["conc"] == "8"
    assert r["after"] != "10485760"
    cfg = json.loads(r["config"])
    assert isinstance(cfg, dict)


def test_config_shared_by_connections_of_the_process(pyhost, tmp_path):
    """Configuration belongs to the database (canonical path), not to the connection."""
    (tmp_path / "sub").mkdir()
    r = pyhost.run("""
        a = connect(P["db"])
        a.execute("PRAGMA journal_mode=WAL")
        one(a, "SELECT litestream_configure('bucket', 'shared-bucket')")
        b = connect(P["alias"])            # same file, other spelling of its path
        other = connect(P["other"])        # another database
        result = {"b": one(b, "SELECT litestream_configure('bucket')"),
                  "other": one(other, "SELECT litestream_configure('bucket')")}
    """, db=str(tmp_path / "x.db"), alias=str(tmp_path / "sub" / ".." / "x.db"),
        other=str(tmp_path / "y.db"))
    assert r["b"] == "shared-bucket"
    assert r["other"] != "shared-bucket"


def test_unknown_key_lists_valid_keys(ext, tmp_path):
    err = ext_error(ext, tmp_path / "e.db", "SELECT litestream_configure('bukket', 'x');\n")
    assert "bukket" in err
    keys = config_keys(ext)
    assert "part-size" in keys and "secret-access-key" in keys, keys
    missing = [k for k in keys if k not in err]
    assert not missing, "error does not list valid keys %s: %s" % (missing, err)


def test_part_size_below_minimum(ext, tmp_path):
    err = ext_error(ext, tmp_path / "e.db", "SELECT litestream_configure('part-size', '4MB');\n")
    assert "part-size 4MB (4194304 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)" in err, err


BAD_VALUES = [  # key, value, a pattern of what the message must say is accepted
    ("concurrency", "0", r"\b64\b"),
    ("concurrency", "65", r"\b64\b"),
    ("part-size", "6GB", None),
    ("part-size", "lots", None),
    ("sync-interval", "soon", None),
    ("checkpoint-interval", "-5s", None),
    ("min-checkpoint-page-count", "-1", None),
    ("truncate-page-n", "many", None),
    ("force-path-style", "maybe", None),
    ("type", "gcs", r"\bs3\b"),
    ("url", "ftp://example/x", None),
]


@pytest.mark.parametrize("key,value,accepted", [pytest.param(*v, id="%s=%s" % v[:2]) for v in BAD_VALUES])
def test_bad_value_names_key_and_value(ext, tmp_path, key, value, accepted):
    err = ext_error(ext, tmp_path / "e.db", config_sql([(key, value)]) + "\n")
    assert key in err and value in err, "error must name the key and the value: %s" % err
    if accepted:
        assert re.search(accepted, err), "error must say what is accepted: %s" % err


def test_start_without_bucket(ext, tmp_path, s3):
    err = ext_error(ext, tmp_path / "nb.db", "PRAGMA journal_mode=WAL;\n" + config_sql(
        [("path", "db"), ("endpoint", s3.endpoint)]) + "\nSELECT litestream_start();\n")
    assert "bucket" in err, err


def test_start_refuses_database_that_cannot_use_wal(ext, tmp_path, s3):
    # The unix-dotfile VFS has no shared memory, so SQLite keeps such a database out of WAL mode;
    # the replicator opens its own connection through the same VFS and must say why it stops.
    db = "file:%s?vfs=unix-dotfile" % (tmp_path / "nowal.db")
    err = ext_error(ext, db, "CREATE TABLE t(x);\n" + config_sql(
        [("bucket", "nowhere"), ("path", "db"), ("endpoint", s3.endpoint)]) + "\nSELECT litestream_start();\n")
    assert "cannot use WAL" in err and "delete" in err, err


@pytest.mark.parametrize("db", [":memory:", ""], ids=["memory", "temporary"])
def test_start_refuses_memory_and_temporary_databases(pyhost, s3, db):
    r = pyhost.run("""
        c = connect(P["db"])
        for k, v in P["config"]:
            error_of(c, "SELECT litestream_configure(?, ?)", k, v)   # may already refuse
        result = error_of(c, "SELECT litestream_start()")
    """, db=db, config=s3_config("nowhere", "db", s3.endpoint))
    assert r, "litestream_start() on %r succeeded" % db
    assert re.search(r"(?i)memory|temp", r), r


def test_secrets_never_in_config_or_status(pyhost, s3, bucket, tmp_path):
    secret = "testtesttest"  # the server's real secret, so replication itself works
    r = pyhost.run("""
        c = connect(P["db"])
        c.execute("PRAGMA journal_mode=WAL")
        configure(c, P["config"])
        config = one(c, "SELECT litestream_config()")
        one(c, "SELECT litestream_start()")
        c.execute("CREATE TABLE t(x)")
        c.execute("INSERT INTO t VALUES (1)")
        txid = one(c, "SELECT litestream_sync(30000)")
        st = one(c, "SELECT litestream_status()")
        stop = one(c, "SELECT litestream_stop()")
        result = {"config": config, "status": st, "txid": txid, "stop": stop,
                  "status_after": one(c, "SELECT litestream_status()")}
    """, db=str(tmp_path / "s.db"), config=s3_config(bucket, "db", s3.endpoint))
    for what in ("config", "status", "status_after"):
        assert secret not in r[what], "%s shows the secret: %s" % (what, r[what])
    cfg = json.loads(r["config"])
    assert "********" in json.dumps(cfg)
    st = json.loads(r["status"])
    for field in ("state", "db", "replica", "txid", "last_sync_at", "lag_ms", "bytes_uploaded",
                  "objects_uploaded", "last_error"):
        assert field in st, "status lacks %r: %s" % (field, st)
    assert st["state"] == "running"
    assert st["txid"] == r["txid"] and TXID_RE.match(r["txid"])
    assert st["objects_uploaded"] >= 1 and st["bytes_uploaded"] > 0
    assert st["last_error"] in (None, "")
    assert TXID_RE.match(r["stop"]) and r["stop"] >= r["txid"]
    assert json.loads(r["status_after"])["state"] == "stopped"


def test_restore_refuses_existing_output(ext, s3, bucket, tmp_path):
    src = tmp_path / "src.db"
    replicate_shell(ext, src, s3_config(bucket, "db", s3.endpoint))
    out = tmp_path / "out.db"
    out.write_bytes(b"not a database, but mine")
    url = s3_url(bucket, "db", s3.endpoint)
    p = restore_shell(ext, out, url=url, check=False)
    assert p.returncode != 0, "restore over an existing file succeeded"
    assert re.search(r"(?i)exist", p.stderr), p.stderr
    assert out.read_bytes() == b"not a database, but mine"
    restore_shell(ext, out, url=url, overwrite=True)
    assert_same_db(src, out)


def test_restore_from_empty_replica(ext, s3, bucket, tmp_path):
    out = tmp_path / "out.db"
    p = restore_shell(ext, out, url=s3_url(bucket, "nothing-here", s3.endpoint), check=False)
    assert p.returncode != 0, "restore from an empty replica succeeded: %s" % p.stdout
    assert p.stderr.strip()
    assert not out.exists() and not (tmp_path / "out.db.tmp").exists()


def test_no_second_sqlite_in_the_library(ext):
    # One SQLite per process: the cdylib must export its entry point and define no sqlite3_* of its
    # own (a bundled SQLite would define hundreds and break POSIX locking in the host).
    out = subprocess.run(["nm", "-D", "--defined-only", ext + ".so"], capture_output=True, text=True,
                         check=True).stdout
    defined = sorted(line.split()[-1] for line in out.splitlines() if " sqlite3" in line)
    assert defined == ["sqlite3_litestream_init"], defined
