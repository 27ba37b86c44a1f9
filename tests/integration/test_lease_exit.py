"""A lease is never left behind by a process that ends without litestream_stop(): a normal exit
(connections closed on the way out, or never closed) and closing the connection that called
litestream_start() both release it, so the next process holds it at once instead of after the
TTL; a forked child's exit leaves its parent's lease alone; only a killed process makes the next
one wait for the TTL, and that one's litestream_sync() waits for the lease within its timeout.

Each instance is a /usr/bin/python3 process (lease_host.py). The TTL is long (20 s) where a test
shows that something happens *before* it would expire."""
import json
import os
import signal
import time

from harness import s3_config
from s3proxy import S3Proxy
from test_lease import Host, cfg, hosts, lock_json, restore_equals, role, wait_until  # noqa: F401

LONG_TTL = "20s"          # an expiry-based takeover would take ~20 s
HANDOVER = 2.5            # release (within the 2 s exit budget) + one standby poll (1 s), with slack


def released_within(s3, bucket, seconds):
    """Seconds until lock.json is gone (released), failing after `seconds`."""
    t0 = time.monotonic()
    wait_until("lock.json to be released", seconds, lambda: lock_json(s3, bucket) is None, every=0.02)
    return time.monotonic() - t0


def next_holder_within(ext, s3, bucket, tmp_path, hosts, name, seconds):
    """Start a second instance; return (host, seconds until it held the lease)."""
    b = Host(ext, tmp_path / name, cfg(s3, bucket, lease_ttl=LONG_TTL))
    hosts.append(b)
    t0 = time.monotonic()
    b.ok("start")
    wait_until("the next instance to hold the lease", seconds, lambda: role(b) == "holder", every=0.02)
    return b, time.monotonic() - t0


def holder_with_unsynced_writes(ext, s3, bucket, tmp_path, hosts):
    a = Host(ext, tmp_path / "a.db", cfg(s3, bucket, lease_ttl=LONG_TTL))
    hosts.append(a)
    assert a.ok("start") == "started"
    a.ok("write", n=3)
    a.ok("sync", ms=10000)
    assert role(a) == "holder" and lock_json(s3, bucket) is not None
    a.ok("write", n=4)           # not synced: the stop on the way out uploads them
    return a


def test_normal_exit_without_stop_releases_the_lease(ext, s3, bucket, tmp_path, hosts):
    a = holder_with_unsynced_writes(ext, s3, bucket, tmp_path, hosts)
    t0 = time.monotonic()
    a.send("exit")
    assert a.p.wait(timeout=30) == 0
    exit_s = time.monotonic() - t0
    assert lock_json(s3, bucket) is None, "the exit left lock.json behind"
    print("\nnormal exit without stop: %.2fs to exit, lock.json released" % exit_s)
    assert exit_s < 4, exit_s
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "a.db")   # the unsynced writes too
    _, took = next_holder_within(ext, s3, bucket, tmp_path, hosts, "b.db", HANDOVER)
    print("next process holds the lease after %.2fs (ttl %s)" % (took, LONG_TTL))


def test_exit_with_the_connection_never_closed_releases_the_lease(ext, s3, bucket, tmp_path, hosts):
    """The connection is leaked (never closed): only the exit handler can release."""
    a = holder_with_unsynced_writes(ext, s3, bucket, tmp_path, hosts)
    t0 = time.monotonic()
    a.send("exit_leak")
    assert a.p.wait(timeout=30) == 0
    exit_s = time.monotonic() - t0
    assert lock_json(s3, bucket) is None, "the exit handler left lock.json behind"
    print("\nexit with an open connection: %.2fs to exit, lock.json released" % exit_s)
    assert exit_s < 4, exit_s
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "a.db")
    _, took = next_holder_within(ext, s3, bucket, tmp_path, hosts, "b.db", HANDOVER)
    print("next process holds the lease after %.2fs (ttl %s)" % (took, LONG_TTL))


def test_closing_the_connection_stops_and_releases(ext, s3, bucket, tmp_path, hosts):
    a = holder_with_unsynced_writes(ext, s3, bucket, tmp_path, hosts)
    a.ok("close")
    took = released_within(s3, bucket, HANDOVER)
    print("\nconnection closed: lock.json released after %.2fs" % took)
    assert a.ok("pid") == a.pid, "the process should keep running"
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "a.db")
    _, took = next_holder_within(ext, s3, bucket, tmp_path, hosts, "b.db", HANDOVER)
    print("next process holds the lease after %.2fs (ttl %s)" % (took, LONG_TTL))
    assert a.p.poll() is None


def test_only_the_last_connection_closing_stops(ext, s3, bucket, tmp_path, hosts):
    """Another connection that started (and so counts) closing, or the extension loaded again on
    the connection (which replaces its functions), does not stop replication."""
    a = Host(ext, tmp_path / "a.db", cfg(s3, bucket, lease_ttl=LONG_TTL))
    hosts.append(a)
    assert a.ok("start") == "started"
    assert a.ok("start_other") == "already running"
    a.ok("reload")
    assert a.ok("start") == "already running"
    a.ok("reload")
    time.sleep(0.5)
    st = a.status()
    assert st["state"] == "running" and st["lease"]["role"] == "holder", st
    a.ok("write", n=2)
    a.ok("sync", ms=10000)
    assert json.loads(lock_json(s3, bucket))["owner"] == st["lease"]["instance"]
    a.ok("close")
    released_within(s3, bucket, HANDOVER)
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "a.db")


def test_forked_child_exit_leaves_the_parents_lease(ext, s3, bucket, tmp_path, hosts):
    a = Host(ext, tmp_path / "a.db", cfg(s3, bucket, lease_ttl=LONG_TTL))
    hosts.append(a)
    a.ok("start")
    a.ok("write", n=2)
    a.ok("sync", ms=10000)
    before = json.loads(lock_json(s3, bucket))
    child = a.ok("fork_exit")
    assert child["status"] == 0, child
    assert child["s"] < 1.5, "the child's exit waited on the parent's replicator: %s" % child
    time.sleep(0.5)
    after = json.loads(lock_json(s3, bucket))
    assert after["token"] == before["token"] and after["owner"] == before["owner"], (before, after)
    assert role(a) == "holder"
    a.ok("write", n=2)
    a.ok("sync", ms=10000)
    a.ok("stop")
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "a.db")


def test_kill9_waits_for_the_ttl_and_sync_waits_for_the_lease(ext, s3, bucket, tmp_path, hosts):
    """A process restarted after a crash (same database) is a standby until the dead holder's
    lease expires; its litestream_sync() waits for the lease within its timeout, and says whose
    lease it is waiting for, until when, when that timeout is too short."""
    ttl = 4.0
    db = tmp_path / "a.db"
    a = Host(ext, db, cfg(s3, bucket, lease_ttl="%gs" % ttl))
    hosts.append(a)
    a.ok("start")
    a.ok("write", n=3)
    a.ok("sync", ms=10000)
    owner = a.status()["lease"]["instance"]
    os.kill(a.p.pid, signal.SIGKILL)
    a.p.wait()
    killed = time.time()
    lock = json.loads(lock_json(s3, bucket))
    assert lock["owner"] == owner, "a killed process cannot release: %s" % lock

    b = Host(ext, db, cfg(s3, bucket, lease_ttl="%gs" % ttl))
    hosts.append(b)
    b.ok("start")
    b.ok("write", n=2)
    wait_until("b to read the dead holder's lock", 10, lambda: b.status()["lease"]["owner"] == owner)
    r = b.call("sync", ms=300)
    assert "error" in r, r
    assert "timed out after 300 ms waiting for the lease" in r["error"], r
    assert "standby" in r["error"] and owner in r["error"] and "until" in r["error"], r
    r = b.call("sync", ms=int((ttl + 6) * 1000))
    assert "error" not in r, r
    took_over = time.time()
    print("\nkill -9, restarted: sync returned %.2fs after the kill, %.2fs after the expiry (ttl %gs)"
          % (took_over - killed, took_over - lock["expires_at"], ttl))
    assert took_over > lock["expires_at"], "took over before the dead holder's lease expired"
    assert took_over - killed < ttl + 3, took_over - killed
    st = b.status()
    assert st["lease"]["role"] == "holder" and st["lease"]["token"] == lock["token"] + 1, st
    b.ok("stop")
    restore_equals(ext, s3, bucket, tmp_path, db)


def test_exit_with_s3_unreachable_is_bounded(ext, s3, bucket, tmp_path, hosts):
    """The final sync cannot finish (every request to S3 stalls): the exit still completes within
    its 2 s budget, and the lease is left to expire rather than released under an upload."""
    stalled = {"on": False}
    proxy = S3Proxy(s3.port, rule=lambda req: ("stall",) if stalled["on"] else None).start()
    try:
        a = Host(ext, tmp_path / "a.db", s3_config(bucket, "db", proxy.url, lease_ttl=LONG_TTL))
        hosts.append(a)
        a.ok("start")
        a.ok("write", n=2)
        a.ok("sync", ms=10000)
        stalled["on"] = True
        a.ok("write", n=2)
        t0 = time.monotonic()
        a.send("exit")
        assert a.p.wait(timeout=30) == 0
        exit_s = time.monotonic() - t0
        print("\nexit with S3 unreachable: %.2fs" % exit_s)
        assert exit_s < 4, exit_s
        assert lock_json(s3, bucket) is not None, "released while the final upload was stalled"
    finally:
        proxy.stop()
