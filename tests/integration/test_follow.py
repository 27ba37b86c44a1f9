"""Hot standby (issue 11): a standby on another "host" (its own database file) follows the
replica, refuses writes, and takes over with the primary's data, incrementally. Against
SeaweedFS, with lease_host.py processes as the hosts (see test_lease.py)."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pysupport.awsenv import child_env
from pysupport.extension import s3_config, s3_url
from pysupport.paths import HOST_PYTHON
from pysupport.shell import assert_restores
from test_lease import Host, hosts, wait_until  # noqa: F401 - hosts is a fixture

TTL = 4.0


def cfg(s3, bucket, **extra):
    extra.setdefault("lease_ttl", "%gs" % TTL)
    return s3_config(bucket, "db", s3.endpoint, **extra)


def rows(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
    try:
        return c.execute("SELECT count(*), coalesce(sum(id), 0), coalesce(max(id), 0) FROM t").fetchone()
    finally:
        c.close()


def follow_txid(h):
    st = h.status()
    return (st.get("follow") or {}).get("txid")


def wait_equal(b, a_db, b_db, txid, timeout=10):
    wait_until("b to follow a to %s" % txid, timeout,
               lambda: follow_txid(b) == txid and rows(b_db) == rows(a_db), every=0.05)


READER = textwrap.dedent("""
    import sqlite3, sys, time, json
    db, seconds = sys.argv[1], float(sys.argv[2])
    c = sqlite3.connect(db, timeout=10)
    seen, bad, n = set(), [], 0
    end = time.time() + seconds
    while time.time() < end:
        try:
            c.execute("BEGIN")
            cnt, s, mx = c.execute("SELECT count(*), coalesce(sum(id),0), coalesce(max(id),0) FROM t").fetchone()
            ok = c.execute("PRAGMA quick_check").fetchone()[0]
            c.execute("COMMIT")
        except sqlite3.Error as e:
            c.execute("ROLLBACK") if c.in_transaction else None
            if "no such table" in str(e):
                continue
            bad.append(str(e)); continue
        n += 1
        seen.add(cnt)
        if ok != "ok" or cnt != mx or s != mx * (mx + 1) // 2:
            bad.append([cnt, s, mx, ok])
    ok = c.execute("PRAGMA integrity_check").fetchone()[0]
    print(json.dumps({"reads": n, "states": len(seen), "bad": bad[:5], "nbad": len(bad), "final": ok}))
""")


def test_standby_follows_refuses_writes_and_takes_over_incrementally(ext, s3, bucket, tmp_path, hosts):
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    a = Host(ext, a_db, cfg(s3, bucket))
    hosts.append(a)
    a.ok("start")
    a.ok("write", n=300)
    txid = a.ok("sync", ms=10000)
    b = Host(ext, b_db, cfg(s3, bucket))
    hosts.append(b)
    b.ok("start")
    # First follow: b's own (empty) table is set aside and the replica's image applied.
    wait_equal(b, a_db, b_db, txid)
    st = b.status()
    assert st["role"] == "following" and st["state"] == "standby", st
    assert st["follow"]["full_images"] == 1 and len(st["follow"]["diverged"]) == 1, st["follow"]
    assert os.path.exists(st["follow"]["diverged"][0])

    # A reader in another process loops while b applies hundreds of transactions.
    reader = subprocess.Popen([sys.executable, "-c", READER, str(b_db), "12"],
                              stdout=subprocess.PIPE, text=True)
    for _ in range(6):
        a.ok("write", n=50)
        txid = a.ok("sync", ms=10000)
        t0 = time.monotonic()
        wait_equal(b, a_db, b_db, txid, timeout=3)
        print("follow lag after sync: %.2fs" % (time.monotonic() - t0))
    out, _ = reader.communicate(timeout=60)
    r = json.loads(out)
    print("reader:", r)
    assert r["nbad"] == 0 and r["final"] == "ok", r
    assert r["reads"] > 10 and r["states"] > 1, r
    st = b.status()
    assert st["follow"]["files_applied"] >= 300 // 50, st["follow"]
    assert st["snapshots"] == 0, st

    # Writes on the standby are refused, never silently accepted.
    # (b's own connections get the same: SQLITE_BUSY once their busy timeout runs out.)
    c = sqlite3.connect(b_db, timeout=0.5)
    try:
        c.execute("INSERT INTO t(who) VALUES ('intruder')")
        c.commit()
        raise AssertionError("a write on the standby was accepted")
    except sqlite3.OperationalError as e:
        assert "locked" in str(e), e
    finally:
        c.close()
    assert rows(b_db) == rows(a_db)

    # kill -9 the primary: b takes over with a's data and continues incrementally.
    t0 = time.monotonic()
    os.kill(a.p.pid, signal.SIGKILL)
    a.p.wait()
    wait_until("b to take over", 2 * TTL + 2,
               lambda: (lambda s: s["lease"]["role"] == "holder" and s["state"] == "running")(b.status()),
               every=0.05)
    print("kill -9 failover: %.2fs" % (time.monotonic() - t0))
    uploaded_before = b.status()["bytes_uploaded"]
    b.ok("write", n=50)
    b_txid = b.ok("sync", ms=10000)
    assert int(b_txid, 16) > int(txid, 16)
    st = b.status()
    assert st["role"] == "primary" and st["snapshots"] == 0, st
    sent = st["bytes_uploaded"] - uploaded_before
    c = sqlite3.connect(b_db)
    size = c.execute("PRAGMA page_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    print("bytes sent after takeover: %d (database %d)" % (sent, size))
    assert sent < size / 2, (sent, size)
    count, _, _ = rows(b_db)
    assert count == 300 + 300 + 50
    b.ok("stop")
    assert_restores(ext, b_db, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint))


def test_old_primary_comes_back_as_follower(ext, s3, bucket, tmp_path, hosts):
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    a = Host(ext, a_db, cfg(s3, bucket))
    hosts.append(a)
    a.ok("start")
    a.ok("write", n=20)
    txid = a.ok("sync", ms=10000)
    b = Host(ext, b_db, cfg(s3, bucket))
    hosts.append(b)
    b.ok("start")
    wait_equal(b, a_db, b_db, txid)
    # a commits locally but dies before uploading it: a diverged tail.
    a.ok("write", n=3)
    os.kill(a.p.pid, signal.SIGKILL)
    a.p.wait()
    wait_until("b to take over", 2 * TTL + 2, lambda: b.status()["lease"]["role"] == "holder", every=0.05)
    b.ok("write", n=10)
    b_txid = b.ok("sync", ms=10000)
    # a comes back: it follows b's history; its tail is kept aside.
    a2 = Host(ext, a_db, cfg(s3, bucket))
    hosts.append(a2)
    a2.ok("start")
    wait_equal(a2, b_db, a_db, b_txid, timeout=15)
    st = a2.status()
    assert st["role"] == "following", st
    assert len(st["follow"]["diverged"]) == 1, st["follow"]
    kept = st["follow"]["diverged"][0]
    assert rows(kept)[0] == 23, rows(kept)
    assert rows(a_db)[0] == 30
    b.ok("stop")
    assert_restores(ext, b_db, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint))


def test_vacuum_shrink_is_followed(ext, s3, bucket, tmp_path, hosts):
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    a = Host(ext, a_db, cfg(s3, bucket))
    hosts.append(a)
    a.ok("start")
    a.ok("write", n=20)
    a.ok("bulk", mib=4)
    txid = a.ok("sync", ms=20000)
    b = Host(ext, b_db, cfg(s3, bucket))
    hosts.append(b)
    b.ok("start")
    wait_equal(b, a_db, b_db, txid, timeout=20)
    big = rows(b_db)
    c = sqlite3.connect(a_db, timeout=10)
    c.execute("DELETE FROM t WHERE id > 10")
    c.commit()
    c.execute("VACUUM")
    c.close()
    txid = a.ok("sync", ms=20000)
    wait_equal(b, a_db, b_db, txid, timeout=20)
    assert rows(b_db)[0] == 10 and big[0] > 10
    pages = sqlite3.connect(b_db).execute("PRAGMA page_count").fetchone()[0]
    a_pages = sqlite3.connect(a_db).execute("PRAGMA page_count").fetchone()[0]
    assert pages == a_pages, (pages, a_pages)
    ok = sqlite3.connect(b_db).execute("PRAGMA integrity_check").fetchone()[0]
    assert ok == "ok"


def test_instance_that_never_was_standby_catches_up_before_replicating(ext, s3, bucket, tmp_path, hosts):
    """b starts after a stopped (the lease is free at once): it holds the lease without ever
    having followed, yet must not publish its own database over a's history."""
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    a = Host(ext, a_db, cfg(s3, bucket))
    hosts.append(a)
    a.ok("start")
    a.ok("write", n=20)
    a.ok("sync", ms=10000)
    a.ok("stop")
    b = Host(ext, b_db, cfg(s3, bucket))
    hosts.append(b)
    b.ok("start")
    b.ok("write", n=5)
    b.ok("sync", ms=10000)
    st = b.status()
    assert st["role"] == "primary" and st["snapshots"] == 0, st
    assert st["follow"]["full_images"] == 1 and len(st["follow"]["diverged"]) == 1, st["follow"]
    assert rows(b_db)[0] == 25
    b.ok("stop")
    assert_restores(ext, b_db, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint))


def test_follower_checkpoints_restart_the_wal_under_readers_and_promotion_stays_incremental(
        ext, s3, bucket, tmp_path, hosts):
    """A small checkpoint threshold: the follower's WAL is checkpointed and restarted (TRUNCATE)
    many times while a reader loops; after the takeover the position proven by the database
    stamp (empty WAL) or by the WAL still continues without a snapshot."""
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    conf = cfg(s3, bucket, min_checkpoint_page_count="8")
    a = Host(ext, a_db, conf)
    hosts.append(a)
    a.ok("start")
    a.ok("write", n=10)
    txid = a.ok("sync", ms=10000)
    b = Host(ext, b_db, conf)
    hosts.append(b)
    b.ok("start")
    wait_equal(b, a_db, b_db, txid)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(b_db), "8"],
                              stdout=subprocess.PIPE, text=True)
    for _ in range(8):
        a.ok("write", n=40)
        txid = a.ok("sync", ms=10000)
        wait_equal(b, a_db, b_db, txid, timeout=5)
    out, _ = reader.communicate(timeout=60)
    r = json.loads(out)
    assert r["nbad"] == 0 and r["final"] == "ok", r
    st = b.status()
    assert st["follow"]["last_error"] is None, st["follow"]
    wal = os.path.getsize(str(b_db) + "-wal")
    assert wal < 40 * 4120 * 4, "the follower's WAL was not kept bounded: %d bytes" % wal
    os.kill(a.p.pid, signal.SIGKILL)
    a.p.wait()
    wait_until("b to take over", 2 * TTL + 2,
               lambda: (lambda s: s["lease"]["role"] == "holder" and s["state"] == "running")(b.status()),
               every=0.05)
    b.ok("write", n=5)
    b.ok("sync", ms=10000)
    st = b.status()
    assert st["snapshots"] == 0, st
    assert rows(b_db)[0] == 10 + 8 * 40 + 5
    b.ok("stop")
    assert_restores(ext, b_db, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint))


def test_stop_hand_over_to_a_follower_is_incremental(ext, s3, bucket, tmp_path, hosts):
    """The follower's WAL checkpointed (maybe restarted) before it takes over: the application's
    first commit restarts the WAL, and the position saved as backfilled still continues it."""
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    conf = cfg(s3, bucket, min_checkpoint_page_count="8")
    a = Host(ext, a_db, conf)
    hosts.append(a)
    a.ok("start")
    a.ok("write", n=30)
    txid = a.ok("sync", ms=10000)
    b = Host(ext, b_db, conf)
    hosts.append(b)
    b.ok("start")
    wait_equal(b, a_db, b_db, txid)
    time.sleep(1.5)                  # the follower's checkpoints run
    a.ok("stop")
    wait_until("b to take over", 5,
               lambda: (lambda s: s["lease"]["role"] == "holder" and s["state"] == "running")(b.status()),
               every=0.02)
    b.ok("write", n=3)
    b.ok("sync", ms=10000)
    st = b.status()
    assert st["snapshots"] == 0, st["last_snapshot_reason"]
    b.ok("stop")
    assert_restores(ext, b_db, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint))


FIRST_WRITE = textwrap.dedent("""
    import json, sqlite3, sys
    sys.path.insert(0, sys.argv[4])
    from pysupport import hostside
    c = sqlite3.connect(sys.argv[2], timeout=0, isolation_level=None)
    hostside.load(c, sys.argv[1])
    hostside.configure(c, json.loads(sys.argv[3]))
    c.execute("SELECT litestream_start()")
    c.execute("CREATE TABLE t(x)")
    c.execute("INSERT INTO t VALUES (1)")
    txid = c.execute("SELECT litestream_sync(10000)").fetchone()[0]
    role = c.execute("SELECT json_extract(litestream_status(), '$.role')").fetchone()[0]
    c.execute("SELECT litestream_stop()")
    print(json.dumps([txid, role]))
""")


def test_a_write_right_after_start_needs_no_busy_timeout(ext, s3, bucket, tmp_path):
    """With a lease, litestream_start() returns once the instance knows its role: a host with
    no busy timeout at all (SQLite's default) writes at once on a primary."""
    root = str(Path(__file__).resolve().parents[2])
    p = subprocess.run([HOST_PYTHON, "-c", FIRST_WRITE, ext + ".so", str(tmp_path / "x.db"),
                        json.dumps(cfg(s3, bucket)), root],
                       capture_output=True, text=True, timeout=60, env=child_env())
    assert p.returncode == 0, p.stderr[-3000:]
    txid, role = json.loads(p.stdout)
    assert role == "primary" and int(txid, 16) >= 1, p.stdout
