"""The round trip every host runs, as a list of SQL statements, and the checks of its answers.

A host runner (python/runner.py, node/runner.mjs, go/main.go) opens one connection to a database,
loads the extension its own way, runs each statement in order and prints a JSON list with one
{"value": <first column of the first row as text, or null>} or {"error": "<message>"} per
statement. Nothing else differs between hosts, so every host is held to the same surface:
version, configure (good and bad values, secret redaction), start, writes in and out of explicit
transactions, sync, status, the litestream_ltx table, stop, and restore into a new file; the test
then compares the restored copy with the source and checks every object in the bucket.
"""
import json
import subprocess
from dataclasses import dataclass

from pysupport.awsenv import child_env
from pysupport.extension import TXID_RE, s3_config, sql_literal
from pysupport.ltx import check_s3_replica
from pysupport.shell import assert_same_db

# Rows of ~2 KiB written in one transaction: enough pages that the first sync uploads a
# multi-page LTX file, few enough to stay quick.
BULK_ROWS = 300
# Single-row commits after the bulk insert, each its own transaction.
SMALL_COMMITS = 20
HEX16 = TXID_RE


@dataclass
class Step:
    name: str
    sql: str


def steps(bucket, endpoint, out, host, path="app.db"):
    """The statements, named so a failure says which one."""
    config = s3_config(bucket, path, endpoint)
    s = [Step("version", "SELECT litestream_version()")]
    s += [Step("configure " + k, "SELECT litestream_configure(%s, %s)" % (
        sql_literal(k), sql_literal(v))) for k, v in config]
    s += [
        Step("bad value", "SELECT litestream_configure('sync-interval', 'soon')"),
        Step("secret redacted", "SELECT litestream_configure('secret-access-key')"),
        Step("start", "SELECT litestream_start()"),
        Step("create", "CREATE TABLE notes(id INTEGER PRIMARY KEY, host TEXT, body BLOB)"),
        # After a write: a connection that read the (empty) file before litestream_start()
        # switched it to WAL reports its cached mode until its next transaction.
        Step("journal mode", "PRAGMA journal_mode"),
        Step("begin", "BEGIN"),
        Step("bulk insert", "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                            "WHERE i < %d) INSERT INTO notes(host, body) SELECT %s, randomblob(2000) "
                            "FROM n" % (BULK_ROWS, sql_literal(host))),
        Step("commit", "COMMIT"),
    ]
    s += [Step("small commit", "INSERT INTO notes(host, body) VALUES (%s, 'commit %d')" % (
        sql_literal(host), i)) for i in range(SMALL_COMMITS)]
    s += [
        Step("sync", "SELECT litestream_sync(30000)"),
        Step("status", "SELECT litestream_status()"),
        Step("ltx files", "SELECT count(*) FROM litestream_ltx"),
        Step("stop", "SELECT litestream_stop()"),
        Step("status after stop", "SELECT litestream_status()"),
        Step("restore", "SELECT litestream_restore(%s)" % sql_literal(str(out))),
        Step("rows", "SELECT count(*) FROM notes"),
    ]
    return s


def run(cmd, step_list, cwd=None, env=None, timeout=240):
    """Run a host runner; returns {step name: result} (names repeat: the last one wins)."""
    p = subprocess.run(cmd, input=json.dumps([st.sql for st in step_list]), text=True,
                       capture_output=True, cwd=cwd, timeout=timeout,
                       env=child_env(env or {}))
    assert p.returncode == 0, "%s exited %d\nstdout: %s\nstderr: %s" % (
        cmd, p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    results = json.loads(p.stdout)
    assert len(results) == len(step_list), (results, p.stderr[-2000:])
    answers = {}
    for st, r in zip(step_list, results):
        answers[st.name] = r
        if st.name not in ("bad value",):
            assert "error" not in r, "step %r (%s) failed: %s" % (st.name, st.sql, r["error"])
    return answers


def check(answers, version):
    """Check every answer; returns the TXID the restore reported."""
    v = answers["version"]["value"]
    assert v.startswith("litestream-sqlite %s (" % version), v
    err = answers["bad value"].get("error", "")
    assert "sync-interval" in err and "soon" in err, "bad value error: %r" % answers["bad value"]
    assert answers["secret redacted"]["value"] == "********", answers["secret redacted"]
    assert answers["start"]["value"] == "started", answers["start"]
    assert answers["journal mode"]["value"] == "wal", answers["journal mode"]
    synced = answers["sync"]["value"]
    assert HEX16.match(synced), synced
    status = json.loads(answers["status"]["value"])
    assert status["state"] == "running" and status["txid"] == synced, status
    assert status["last_error"] is None, status
    assert int(answers["ltx files"]["value"]) >= 1
    stopped = answers["stop"]["value"]
    assert HEX16.match(stopped) and stopped >= synced, (stopped, synced)
    after = json.loads(answers["status after stop"]["value"])
    assert after["state"] == "stopped", after
    restored = answers["restore"]["value"]
    assert restored == stopped, (restored, stopped)
    assert int(answers["rows"]["value"]) == BULK_ROWS + SMALL_COMMITS
    return restored


def verify_replica(s3, bucket, db, out, path="app.db"):
    """The restored copy equals the source; every object in the bucket is a valid LTX file."""
    assert_same_db(db, out)
    check_s3_replica(s3.client, bucket, path)
