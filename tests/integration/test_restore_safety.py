"""Restores that cannot lie: a replica whose objects were replaced, deleted or truncated is
refused (or restored to a correct earlier state), never turned into a database that differs from
the state it claims to be — by our litestream_restore() and by the reference `litestream restore`;
a TXID asked for is the TXID restored; `overwrite` never replaces a database something uses, and a
stale -wal/-journal never meets restored pages; timestamps are any RFC 3339 time; output paths that
cannot be replaced are refused before anything is downloaded; litestream_stop() reports a final
sync that never reached the replica.

The chain replica: table t has rows 1..8, each alone on its own page (a 3000-byte pad), all v = 0
at TXID 1 (the snapshot). TXID k (2..7) sets v = k in row k only, one L0 file per TXID, so each
file is the only one holding its row's page: applying a wrong file in its place leaves a database
that passes integrity_check but is not the state of any TXID, which `state_txid` detects.
"""
import os
import re
import subprocess

import pytest

from pysupport.awsenv import child_env
from pysupport.extension import s3_config, s3_url
from pysupport.paths import HOST_PYTHON
from pysupport.ports import closed_port
from pysupport.pyhost import snippet
from pysupport.reference import reference_url, run_reference
from pysupport.shell import (integrity, replicate_shell, restore_shell, restored_txid,
                             run_sqlite_shell)

ROWS = 8
LAST_TXID = 7
CHAIN_TXIDS = range(1, LAST_TXID + 1)


def l0_key(path, txid):
    return "%s/0000/%016x-%016x.ltx" % (path, txid, txid)


def make_chain(pyhost, db, config):
    """Replicates the chain described in the module docstring; returns the TXIDs the syncs gave."""
    return pyhost.run("""
        c = start_replicating(P["db"], P["config"],
                              "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, pad BLOB);"
                              + "".join("INSERT INTO t VALUES (%d, 0, zeroblob(3000));" % i
                                        for i in range(1, P["rows"] + 1)))
        txids = [one(c, "SELECT litestream_sync()")]
        for k in range(2, P["last"] + 1):
            c.execute("UPDATE t SET v = ? WHERE id = ?", (k, k))
            txids.append(one(c, "SELECT litestream_sync()"))
        one(c, "SELECT litestream_stop()")
        result = txids
    """, db=str(db), config=config, rows=ROWS, last=LAST_TXID)


def chain_config(bucket, path, s3, **extra):
    # Syncs only when asked (one L0 file per litestream_sync()), no compaction, no snapshots.
    return s3_config(bucket, path, s3.endpoint, sync_interval="1h", levels="off",
                     snapshot_interval="0", **extra)


def state_of(db):
    out = run_sqlite_shell(db, "SELECT id, v FROM t ORDER BY id;\n")
    return [tuple(int(x) for x in line.split("|")) for line in out.split()]


def expected_state(txid):
    return [(i, i if 2 <= i <= txid else 0) for i in range(1, ROWS + 1)]


def state_txid(db):
    """The TXID whose state `db` holds (after integrity_check), or None if it is none of them."""
    assert integrity(db) == "ok"
    st = state_of(db)
    return next((k for k in CHAIN_TXIDS if st == expected_state(k)), None)


def restore_opts(ext, out, opts):
    """litestream_restore(out, opts) in a sqlite3 process; the CompletedProcess."""
    return restore_shell(ext, out, options=opts, check=False)


def txid_of(p):
    """The TXID a restore printed, as a number (None if it printed none)."""
    txid = restored_txid(p)
    return int(txid, 16) if txid else None


def reference_restore(litestream_bin, out, url, *args):
    return run_reference(litestream_bin, "restore", *args, "-o", out, url, check=False)


def leftovers(directory, name):
    return sorted(x.name for x in directory.iterdir() if name in x.name)


def break_object(client, bucket, path, fault, txid):
    key = l0_key(path, txid)
    if fault == "swap":  # the bytes (and metadata) of the file before it
        src = client.get_object(Bucket=bucket, Key=l0_key(path, txid - 1))
        client.put_object(Bucket=bucket, Key=key, Body=src["Body"].read(), Metadata=src["Metadata"])
    elif fault == "delete":
        client.delete_object(Bucket=bucket, Key=key)
    elif fault == "truncate":
        obj = client.get_object(Bucket=bucket, Key=key)
        data = obj["Body"].read()
        client.put_object(Bucket=bucket, Key=key, Body=data[:-10], Metadata=obj["Metadata"])
    else:
        raise ValueError(fault)


FAULT_ERRORS = {
    "swap": r"not the file its name says",
    "delete": r"non-contiguous",
    "truncate": r"unexpected end of file",
}


@pytest.mark.parametrize("fault", ["swap", "delete", "truncate"])
def test_broken_object_is_refused_by_both(ext, litestream_bin, pyhost, s3, bucket, tmp_path, fault):
    """Object 4 of 7 replaced by object 3's bytes, deleted, or cut short: our restore refuses
    with an error naming the fault and writes nothing; `litestream restore` refuses or gives a
    correct state; restoring up to TXID 3 still works."""
    txids = make_chain(pyhost, tmp_path / "src.db", chain_config(bucket, "db", s3))
    assert txids == ["%016x" % k for k in CHAIN_TXIDS], txids
    break_object(s3.client, bucket, "db", fault, 4)
    url = s3_url(bucket, "db", s3.endpoint)

    out = tmp_path / "ours.db"
    p = restore_opts(ext, out, {"url": url})
    assert p.returncode != 0, "our restore of a replica with a %s object succeeded: %s (state %s)" % (
        fault, p.stdout, state_of(out))
    assert re.search(FAULT_ERRORS[fault], p.stderr), p.stderr
    if fault != "delete":
        assert l0_key("db", 4) in p.stderr, "the error does not name the object: " + p.stderr
    assert not leftovers(tmp_path, "ours.db"), "a refused restore wrote %s" % leftovers(tmp_path, "ours.db")

    ref = tmp_path / "ref.db"
    r = reference_restore(litestream_bin, ref, reference_url(bucket, "db", s3.endpoint))
    print("litestream restore, %s object: exit %d %s" % (fault, r.returncode, r.stderr.strip()[-300:]))
    if r.returncode == 0:
        assert state_txid(ref) is not None, "litestream restore produced a wrong database: %s" % state_of(ref)
    else:
        assert not ref.exists()

    p = restore_opts(ext, tmp_path / "at3.db", {"url": url, "txid": "%016x" % 3})
    assert p.returncode == 0, p.stderr
    assert txid_of(p) == 3 and state_txid(tmp_path / "at3.db") == 3


def test_txid_asked_is_txid_restored(ext, litestream_bin, pyhost, s3, bucket, tmp_path):
    """Object 5 holding the (valid) bytes of 4: asking for TXID 5 is an error, not TXID 4."""
    make_chain(pyhost, tmp_path / "src.db", chain_config(bucket, "db", s3))
    break_object(s3.client, bucket, "db", "swap", 5)
    url = s3_url(bucket, "db", s3.endpoint)
    p = restore_opts(ext, tmp_path / "at5.db", {"url": url, "txid": "%016x" % 5})
    assert p.returncode != 0, "asked for TXID 5, got %s" % p.stdout
    assert re.search(r"not the file its name says", p.stderr) and l0_key("db", 5) in p.stderr, p.stderr
    assert not leftovers(tmp_path, "at5.db")
    p = restore_opts(ext, tmp_path / "at4.db", {"url": url, "txid": "%016x" % 4})
    assert p.returncode == 0 and txid_of(p) == 4 and state_txid(tmp_path / "at4.db") == 4, p.stderr

    ref = tmp_path / "ref5.db"
    r = reference_restore(litestream_bin, ref, reference_url(bucket, "db", s3.endpoint), "-txid", "%016x" % 5)
    print("litestream restore -txid 5: exit %d %s" % (r.returncode, r.stderr.strip()[-300:]))
    if r.returncode == 0:
        assert state_txid(ref) == 5, "litestream restore -txid 5 gave state %s" % state_txid(ref)


# ---------------------------------------------------------------- restoring over a database

def other_replica(ext, s3, bucket, tmp_path):
    """A small replica at <bucket>/other; returns (its url, the source database)."""
    src = tmp_path / "other-src.db"
    replicate_shell(ext, src, s3_config(bucket, "other", s3.endpoint),
                    workload="CREATE TABLE other(x); INSERT INTO other VALUES ('from the other replica');")
    return s3_url(bucket, "other", s3.endpoint), src


# The start of the snippets below: `c` replicates P["live"], which holds one acknowledged row.
REPLICATING_LIVE = """
    c = start_replicating(P["live"], P["config"])
    c.execute("CREATE TABLE t(x)")
    c.execute("INSERT INTO t VALUES ('acknowledged')")
    one(c, "SELECT litestream_sync()")
"""


def test_restore_over_a_database_this_process_replicates(ext, pyhost, s3, bucket, tmp_path):
    """The replicating connection and a second connection of the same process are both refused;
    the live database and its replica keep every acknowledged row."""
    url, _ = other_replica(ext, s3, bucket, tmp_path)
    live = tmp_path / "live.db"
    r = pyhost.run(snippet(REPLICATING_LIVE, """
        opts = json.dumps({"url": P["url"], "overwrite": True})
        same = error_of(c, "SELECT litestream_restore(?, ?)", P["live"], opts)
        m = connect(":memory:")
        other = error_of(m, "SELECT litestream_restore(?, ?)", P["live"], opts)
        c.execute("INSERT INTO t VALUES ('after')")
        one(c, "SELECT litestream_sync()")
        one(c, "SELECT litestream_stop()")
        result = {"same": same, "other": other, "rows": one(c, "SELECT count(*) FROM t")}
    """), live=str(live), url=url, config=s3_config(bucket, "live", s3.endpoint))
    for who in ("same", "other"):
        assert r[who] and "this process is replicating it" in r[who] and "litestream_stop()" in r[who], r
    assert r["rows"] == 2, r
    back = tmp_path / "back.db"
    p = restore_opts(ext, back, {"url": s3_url(bucket, "live", s3.endpoint)})
    assert p.returncode == 0, p.stderr
    assert run_sqlite_shell(back, "SELECT group_concat(x) FROM t;\n").strip() == "acknowledged,after"
    assert not leftovers(tmp_path, "live.db.")


@pytest.mark.parametrize("lease", ["on", "off"])
def test_restore_over_a_database_another_process_replicates(ext, pyhost, s3, bucket, tmp_path, lease):
    """With the lease its local lock names the other process; without, its connections do."""
    url, _ = other_replica(ext, s3, bucket, tmp_path)
    live = tmp_path / "live.db"
    r = pyhost.run(snippet(REPLICATING_LIVE, """
        script = '.load "%s"\\nSELECT litestream_restore(%s, %s);\\n' % (
            EXT, "'" + P["live"] + "'", "'" + json.dumps({"url": P["url"], "overwrite": True}) + "'")
        p = subprocess.run(["/usr/bin/sqlite3", ":memory:"], input=script, text=True, capture_output=True)
        c.execute("INSERT INTO t VALUES ('after')")
        one(c, "SELECT litestream_sync()")
        one(c, "SELECT litestream_stop()")
        result = {"rc": p.returncode, "err": p.stderr, "rows": one(c, "SELECT count(*) FROM t")}
    """), live=str(live), url=url, config=s3_config(bucket, "live", s3.endpoint, lease=lease))
    assert r["rc"] != 0, r
    want = "another process is replicating it" if lease == "on" else "it is in use"
    assert want in r["err"], r
    assert r["rows"] == 2, r


@pytest.mark.parametrize("where", ["same-process", "other-process"])
@pytest.mark.parametrize("mode", ["wal", "rollback-in-transaction"])
def test_restore_over_a_database_with_open_connections(ext, pyhost, s3, bucket, tmp_path, where, mode):
    """A plain connection (no replicator) that has read a WAL database, or one inside a read
    transaction of a rollback-journal database, makes overwrite refuse; once it is closed the
    overwrite goes ahead."""
    url, src = other_replica(ext, s3, bucket, tmp_path)
    db = tmp_path / "app.db"
    r = pyhost.run("""
        c = connect(P["db"], load=False)
        c.execute("PRAGMA journal_mode=%s" % ("WAL" if P["mode"] == "wal" else "DELETE"))
        c.execute("CREATE TABLE mine(x)")
        c.execute("INSERT INTO mine VALUES (1)")
        if P["mode"] != "wal":
            c.execute("BEGIN")
        one(c, "SELECT count(*) FROM mine")
        opts = json.dumps({"url": P["url"], "overwrite": True})
        if P["where"] == "same-process":
            m = connect(":memory:")
            err = error_of(m, "SELECT litestream_restore(?, ?)", P["db"], opts)
        else:
            script = '.load "%s"\\nSELECT litestream_restore(%s, %s);\\n' % (
                EXT, "'" + P["db"] + "'", "'" + opts + "'")
            p = subprocess.run(["/usr/bin/sqlite3", ":memory:"], input=script, text=True,
                               capture_output=True)
            err = p.stderr if p.returncode else None
        still = one(c, "SELECT count(*) FROM mine")
        c.close()
        m = connect(":memory:")
        after = error_of(m, "SELECT litestream_restore(?, ?)", P["db"], opts)
        result = {"err": err, "still": still, "after": after}
    """, db=str(db), url=url, mode=mode, where=where)
    assert r["err"] and "it is in use" in r["err"], r
    assert r["still"] == 1, r
    assert r["after"] is None, r
    assert run_sqlite_shell(db, "SELECT x FROM other;\n").strip() == "from the other replica"


def leave_stale_wal(db):
    """A WAL database whose last process died without a checkpoint: db, db-wal (holding a
    committed row 'stale') and db-shm stay behind."""
    code = ("import os, sqlite3\n"
            "c = sqlite3.connect(%r, isolation_level=None)\n"
            "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
            "c.execute('CREATE TABLE other(x)'); c.execute(\"INSERT INTO other VALUES ('stale')\")\n"
            "os._exit(0)\n" % str(db))
    subprocess.run([HOST_PYTHON, "-c", code], check=True, env=child_env())
    assert os.path.getsize(str(db) + "-wal") > 0


def test_stale_wal_never_meets_restored_pages(ext, s3, bucket, tmp_path):
    url, _ = other_replica(ext, s3, bucket, tmp_path)
    # Overwrite: the database and its -wal/-shm are replaced together.
    db = tmp_path / "stale.db"
    leave_stale_wal(db)
    p = restore_opts(ext, db, {"url": url, "overwrite": True})
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(str(db) + "-wal") and not os.path.exists(str(db) + "-shm")
    assert run_sqlite_shell(db, "SELECT group_concat(x) FROM other;\n").strip() == "from the other replica"
    assert integrity(db) == "ok"

    # The database is gone but its -wal stayed: without overwrite restore refuses (SQLite would
    # replay it over the restored pages); with overwrite it removes it first.
    gone = tmp_path / "gone.db"
    leave_stale_wal(gone)
    gone.unlink()
    p = restore_opts(ext, gone, {"url": url})
    assert p.returncode != 0, "restored next to a stale -wal: %s" % p.stdout
    assert "gone.db-wal exists beside" in p.stderr, p.stderr
    assert not gone.exists() and not leftovers(tmp_path, "gone.db.")
    p = restore_opts(ext, gone, {"url": url, "overwrite": True})
    assert p.returncode == 0, p.stderr
    assert run_sqlite_shell(gone, "SELECT group_concat(x) FROM other;\n").strip() == "from the other replica"


# ---------------------------------------------------------------- timestamps and output paths

def test_timestamps(ext, pyhost, s3, bucket, tmp_path):
    """A time after the newest file gives the latest state; any RFC 3339 form (fraction, offset)
    selects by the files' litestream-timestamp; bad text names what is wrong."""
    make_chain(pyhost, tmp_path / "src.db", chain_config(bucket, "db", s3))
    url = s3_url(bucket, "db", s3.endpoint)
    p = restore_opts(ext, tmp_path / "late.db", {"url": url, "timestamp": "2999-01-01T00:00:00Z"})
    assert p.returncode == 0, p.stderr
    assert txid_of(p) == LAST_TXID and state_txid(tmp_path / "late.db") == LAST_TXID

    meta = s3.client.head_object(Bucket=bucket, Key=l0_key("db", 4))["Metadata"]["litestream-timestamp"]
    from datetime import datetime, timedelta, timezone
    t4 = datetime.fromisoformat(meta.replace("Z", "+00:00"))
    # 1 ms after file 4 was created, written in +05:30 with a microsecond fraction
    ist = (t4 + timedelta(milliseconds=1)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    p = restore_opts(ext, tmp_path / "t4.db", {"url": url, "timestamp": ist.isoformat(timespec="microseconds")})
    assert p.returncode == 0, p.stderr
    assert txid_of(p) == 4 and state_txid(tmp_path / "t4.db") == 4

    for bad, why in [("2023-02-30T00:00:00Z", "day 30 is out of range"),
                     ("10000-01-01T00:00:00Z", "four digits")]:
        p = restore_opts(ext, tmp_path / "bad.db", {"url": url, "timestamp": bad})
        assert p.returncode != 0 and why in p.stderr and bad in p.stderr, p.stderr
    p = restore_opts(ext, tmp_path / "early.db", {"url": url, "timestamp": "2000-01-01T00:00:00Z"})
    assert p.returncode != 0 and "oldest file was created at" in p.stderr, p.stderr


def test_unreplaceable_outputs_refused_up_front(ext, tmp_path):
    """Checked before the replica is contacted (its endpoint is a closed port here), and nothing
    is written."""
    url = "s3://nowhere/db?endpoint=http://127.0.0.1:%d" % closed_port()
    d = tmp_path / "adir"
    d.mkdir()
    target = tmp_path / "real.db"
    target.write_bytes(b"")
    (tmp_path / "link.db").symlink_to(target)
    cases = [
        (d, True, "it is a directory"),
        (tmp_path / "missing" / "x.db", True, "its directory"),
        (tmp_path / "link.db", True, "symbolic link"),
        (target, False, "already exists"),
    ]
    before = sorted(x.name for x in tmp_path.iterdir())
    for out, overwrite, why in cases:
        p = restore_opts(ext, out, {"url": url, "overwrite": overwrite})
        assert p.returncode != 0 and why in p.stderr, (out, p.stderr)
        assert "Connection refused" not in p.stderr and "dispatch failure" not in p.stderr, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == before
    assert list(d.iterdir()) == []


# ---------------------------------------------------------------- stop after nothing was synced

@pytest.mark.parametrize("fault", ["closed-port", "wrong-secret"])
def test_stop_fails_when_nothing_reached_the_replica(pyhost, s3, bucket, tmp_path, fault):
    """Commits made, the final sync never reached S3: stop fails and says so; the replicator is
    stopped all the same (its lease thread and local lock released: a correct start afterwards
    replicates)."""
    endpoint = s3.endpoint if fault == "wrong-secret" else "http://127.0.0.1:%d" % closed_port()
    bad = s3_config(bucket, "db", endpoint, secret_access_key="not-the-secret")
    r = pyhost.run("""
        c = start_replicating(P["db"], P["bad"])
        c.execute("CREATE TABLE t(x)")
        c.execute("INSERT INTO t VALUES (1)")
        deadline = time.time() + 15
        while not status(c).get("last_error") and time.time() < deadline:
            time.sleep(0.1)
        err = error_of(c, "SELECT litestream_stop()")
        after = status(c)["state"]
        configure(c, P["good"])
        one(c, "SELECT litestream_start()")
        txid = one(c, "SELECT litestream_sync(20000)")
        one(c, "SELECT litestream_stop()")
        result = {"err": err, "after": after, "txid": txid}
    """, timeout=150, db=str(tmp_path / "u.db"), bad=bad, good=s3_config(bucket, "db", s3.endpoint))
    assert r["err"] and "nothing reached the replica" in r["err"], r
    assert "no commit made since litestream_start() is in it" in r["err"], r
    assert "not-the-secret" not in r["err"], r
    assert r["after"] == "stopped", r
    assert int(r["txid"], 16) >= 1, r
