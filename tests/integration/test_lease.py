"""Distributed lease, against SeaweedFS (atomic conditional writes; never race-test on
s3s-fs). Each instance is a /usr/bin/python3 process (lease_host.py) with its own database unless a
test says otherwise, all replicating to one replica path, as several hosts would.

Knobs: LEASE_RACE_ROUNDS (default 10; the documented full run is 100), LEASE_RACERS (default 8).
Measured failover times are printed (run with -s to see them)."""
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pysupport.awsenv import child_env
from pysupport.extension import s3_config, s3_url
from pysupport.paths import HOST_PYTHON
from pysupport.s3client import key_names
from pysupport.s3proxy import S3Proxy
from pysupport.shell import assert_restores

LEASE_HOST = Path(__file__).resolve().parent / "lease_host.py"

TTL = 2.0                      # short lease, so takeovers happen within seconds
RENEW = TTL / 3                # the holder renews every third of the TTL
POLL = min(TTL / 3, 1.0)       # standbys read lock.json this often
LOCK_RE = re.compile(r'^\{"token": (\d+), "expires_at": (\d+\.\d+), "owner": (".*")\}$')
LTX_KEY_RE = re.compile(r"/([0-9a-f]{4})/([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")
ROUNDS = int(os.environ.get("LEASE_RACE_ROUNDS", "10"))
RACERS = int(os.environ.get("LEASE_RACERS", "8"))


class Host:
    """One lease_host.py process: an application instance with the extension loaded."""

    def __init__(self, ext, db, config):
        self.db = str(db)
        self.p = subprocess.Popen([HOST_PYTHON, str(LEASE_HOST), ext + ".so", self.db,
                                   json.dumps(config)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=child_env())
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._pump, args=(self.p.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr, self.err.append), daemon=True).start()
        ready = self._read(30)
        assert ready.get("ok") == "ready", ready
        self.pid = ready["pid"]

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink(line)

    def _read(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("host %s (pid %s) did not answer within %ss; stderr:\n%s" % (
                self.db, self.p.pid, timeout, "".join(self.err)[-3000:])) from None
        return json.loads(line)

    def send(self, op, **kw):
        kw["op"] = op
        self.p.stdin.write(json.dumps(kw) + "\n")
        self.p.stdin.flush()

    def call(self, op, timeout=60, **kw):
        self.send(op, **kw)
        return self._read(timeout)

    def ok(self, op, timeout=60, **kw):
        r = self.call(op, timeout=timeout, **kw)
        assert "error" not in r, "%s on %s failed: %s" % (op, self.db, r["error"])
        return r["ok"]

    def status(self):
        return self.ok("status")

    def close(self):
        if self.p.poll() is None:
            try:
                self.send("exit")
                self.p.wait(timeout=40)
            except Exception:  # noqa: BLE001 - a stopped or dead host: make sure it is gone
                self.p.kill()
                self.p.wait()


@pytest.fixture
def hosts():
    made = []
    yield made
    for h in made:
        try:
            os.kill(h.p.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        h.close()


def started(hosts, ext, db, config, writes):
    """A Host on db (closed after the test) that called litestream_start(), then wrote `writes`
    rows and synced them."""
    h = Host(ext, db, config)
    hosts.append(h)
    h.ok("start")
    h.ok("write", n=writes)
    h.ok("sync", ms=10000)
    return h


def cfg(s3, bucket, **extra):
    extra.setdefault("lease_ttl", "%gs" % TTL)
    return s3_config(bucket, "db", s3.endpoint, **extra)


def wait_until(what, timeout, f, every=0.02):
    t0 = time.monotonic()
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(every)


def role(h):
    return h.status()["lease"]["role"]


def lock_json(s3, bucket):
    try:
        obj = s3.client.get_object(Bucket=bucket, Key="db/lock.json")
    except s3.client.exceptions.NoSuchKey:
        return None
    return obj["Body"].read().decode()


def tokens_by_txid(s3, bucket):
    """[(min_txid, max_txid, level, token)] of every LTX object, in TXID order; every object must
    carry the litestream-lease-token metadata."""
    out = []
    for key in key_names(s3.client, bucket, "db/"):
        m = LTX_KEY_RE.search(key)
        if not m:
            continue
        meta = s3.client.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert "litestream-lease-token" in meta, "%s has no lease token: %r" % (key, meta)
        out.append((int(m.group(2), 16), int(m.group(3), 16), int(m.group(1), 16),
                    int(meta["litestream-lease-token"])))
    return sorted(out)


def assert_tokens_never_interleave(objs):
    """Within each level, in TXID order, lease tokens never decrease: no holder wrote after a
    later holder. (Across levels they may: a later holder compacts an earlier holder's L0 files
    into a level-1 file that starts at TXID 1.)"""
    bad = []
    for level in {lv for _, _, lv, _ in objs}:
        same = [o for o in objs if o[2] == level]
        bad += [(same[i - 1], same[i]) for i in range(1, len(same)) if same[i][3] < same[i - 1][3]]
    assert not bad, "lease tokens decrease in TXID order (min, max, level, token): %s" % bad[:5]


def restore_equals(ext, s3, bucket, tmp_path, db, name="out.db"):
    assert_restores(ext, db, tmp_path / name, s3_url(bucket, "db", s3.endpoint))


# ---------------------------------------------------------------------------------------------


def test_two_hosts_one_holder_kill9_failover(ext, s3, bucket, tmp_path, hosts):
    a = Host(ext, tmp_path / "a.db", cfg(s3, bucket))
    hosts.append(a)
    assert a.ok("start") == "started"
    a.ok("write", n=3)
    a.ok("sync", ms=10000)
    assert role(a) == "holder"
    b = Host(ext, tmp_path / "b.db", cfg(s3, bucket))
    hosts.append(b)
    assert b.ok("start") == "started"
    st = wait_until("b to see a's lease", 10, lambda: (lambda s: s if s["lease"]["owner"] else None)(b.status()))
    a_me = a.status()["lease"]["instance"]
    assert st["state"] == "standby" and st["lease"]["role"] == "standby", st
    assert st["lease"]["owner"] == a_me and st["lease"]["token"] == 1, st
    assert isinstance(st["lease"]["expires_at"], float)
    # A standby's sync waits for the lease within its timeout, then names the holder.
    r = b.call("sync", timeout=30, ms=1000)
    assert "error" in r and "standby" in r["error"] and a_me in r["error"], r
    assert "waiting for the lease" in r["error"] and "until" in r["error"], r
    assert 0.9 < r["s"] < 3.0, "standby sync took %.2fs" % r["s"]
    # b follows a and refuses writes meanwhile (test_follow.py); a goes on writing.
    a.ok("write", n=2)
    a.ok("sync", ms=10000)

    t0 = time.monotonic()
    os.kill(a.p.pid, signal.SIGKILL)
    a.p.wait()
    wait_until("b to take over", TTL + RENEW + 5, lambda: role(b) == "holder", every=0.01)
    failover = time.monotonic() - t0
    print("\nkill -9 failover: %.2fs (ttl %.1fs, renew every %.2fs, standby poll %.2fs)"
          % (failover, TTL, RENEW, POLL))
    assert failover <= TTL + RENEW + 0.5, "failover took %.2fs" % failover
    b.ok("sync", ms=10000)
    st = b.status()
    assert st["state"] == "running" and st["lease"]["token"] == 2, st
    b.ok("write", n=2)
    b.ok("stop")
    assert lock_json(s3, bucket) is None, "stop did not release lock.json"
    objs = tokens_by_txid(s3, bucket)
    assert_tokens_never_interleave(objs)
    assert {t for *_, t in objs} == {1, 2}
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "b.db")


def test_racing_instances_exactly_one_holder(ext, s3, bucket, tmp_path, hosts):
    """RACERS instances call litestream_start() at once, ROUNDS times; every other round they race
    to take over an expired lock (If-Match) instead of creating one (If-None-Match)."""
    for i in range(RACERS):
        hosts.append(Host(ext, tmp_path / ("r%d.db" % i), cfg(s3, bucket, lease_ttl="5s")))
    last_token = 0
    t_all = time.monotonic()
    for rnd in range(ROUNDS):
        assert lock_json(s3, bucket) is None, "round %d: lock.json left over" % rnd
        written = max([t for *_, t in tokens_by_txid(s3, bucket)] or [0])
        if rnd % 2:
            expired = {"token": last_token + 1, "expires_at": time.time() - 1, "owner": "gone:1"}
            s3.client.put_object(Bucket=bucket, Key="db/lock.json", Body=json.dumps(expired))
        for h in hosts:
            h.send("start")
        for h in hosts:
            r = h._read(60)
            assert r.get("ok") == "started", r

        def resolved():
            sts = [h.status() for h in hosts]
            done = all(s["lease"]["role"] == "holder" or s["lease"]["owner"] for s in sts)
            return sts if done else None
        sts = wait_until("round %d to settle" % rnd, 20, resolved)
        holders = [i for i, s in enumerate(sts) if s["lease"]["role"] == "holder"]
        assert len(holders) == 1, "round %d: holders %s: %s" % (rnd, holders, [s["lease"] for s in sts])
        h = holders[0]
        lock = json.loads(lock_json(s3, bucket))
        assert lock["owner"] == sts[h]["lease"]["instance"], (lock, sts[h]["lease"])
        # Above every token in the replica. (A release deletes lock.json, so the token of a holder
        # that wrote nothing - it won twice in a row, nothing new to upload - may come again.)
        assert lock["token"] > written, (rnd, lock, written)
        if rnd % 2:
            assert lock["token"] >= last_token + 2, (rnd, lock, last_token)  # seeded last + 1
        last_token = lock["token"]
        for i, s in enumerate(sts):
            if i != h:
                assert s["lease"]["owner"] == lock["owner"], s["lease"]
        # Standbys first, then the holder (whose stop releases the lock).
        for i in [i for i in range(RACERS) if i != h] + [h]:
            hosts[i].ok("stop")
    print("\n%d rounds x %d racers: exactly one holder each round (%.1fs)"
          % (ROUNDS, RACERS, time.monotonic() - t_all))
    assert_tokens_never_interleave(tokens_by_txid(s3, bucket))


def test_sigstop_holder_is_fenced(ext, s3, bucket, tmp_path, hosts):
    a = started(hosts, ext, tmp_path / "a.db", cfg(s3, bucket), writes=2)
    b = Host(ext, tmp_path / "b.db", cfg(s3, bucket))
    hosts.append(b)
    b.ok("start")
    wait_until("b standby", 10, lambda: b.status()["lease"]["owner"])
    a.ok("writer", every=0.03)       # a keeps committing (and uploading) until it is frozen
    b.ok("writer", every=0.05)
    time.sleep(1.0)
    os.kill(a.p.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    wait_until("b to take over", TTL + RENEW + 5, lambda: role(b) == "holder", every=0.01)
    print("\nSIGSTOP failover: %.2fs" % (time.monotonic() - t0))
    b.ok("sync", ms=10000)
    time.sleep(TTL)                  # a stays frozen past its TTL
    os.kill(a.p.pid, signal.SIGCONT)
    st = wait_until("a to notice", 10, lambda: (lambda s: s if s["lease"]["role"] == "standby"
                                                 and s["last_error"] else None)(a.status()))
    assert st["state"] == "standby" and "lost lease" in st["last_error"], json.dumps(st)
    uploaded = st["objects_uploaded"]
    r = a.call("sync", ms=1000)
    assert "error" in r and 0.9 < r["s"] < 3.0, r
    assert "lost lease" in r["error"] and b.status()["lease"]["instance"] in r["error"], r
    time.sleep(1.5)                  # give a every chance to (wrongly) upload
    b.ok("writer", every=0)
    a.ok("writer", every=0)
    assert a.status()["objects_uploaded"] == uploaded, "the fenced holder uploaded after SIGCONT"
    b.ok("sync", ms=10000)
    b.ok("stop")
    a.ok("stop")
    objs = tokens_by_txid(s3, bucket)
    assert_tokens_never_interleave(objs)
    assert {t for *_, t in objs} == {1, 2}, objs
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "b.db")


def test_stop_hands_over_at_once(ext, s3, bucket, tmp_path, hosts):
    long_ttl = "20s"                 # an expiry-based takeover would take ~20 s
    a = Host(ext, tmp_path / "a.db", cfg(s3, bucket, lease_ttl=long_ttl))
    b = Host(ext, tmp_path / "b.db", cfg(s3, bucket, lease_ttl=long_ttl))
    hosts += [a, b]
    a.ok("start")
    a.ok("write", n=2)
    a.ok("sync", ms=10000)
    b.ok("start")
    wait_until("b standby", 10, lambda: b.status()["lease"]["owner"])
    t0 = time.monotonic()
    a.ok("stop")
    wait_until("b to take over", 5, lambda: role(b) == "holder", every=0.01)
    handover = time.monotonic() - t0
    print("\nstop hand-over: %.2fs (ttl %s)" % (handover, long_ttl))
    assert handover < 2.5, handover
    b.ok("write", n=4)
    b.ok("sync", ms=10000)
    b.ok("stop")
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "b.db")


def test_lock_json_format_and_go_leaser_lock(ext, s3, bucket, tmp_path, hosts):
    # A lock written by Litestream's Go s3.Leaser: respected until it expires.
    tz = timezone(timedelta(hours=-6))
    until = datetime.now(tz) + timedelta(seconds=3)
    go_lock = {"generation": 7, "expires_at": until.isoformat(timespec="microseconds"),
               "owner": "go-leaser:4242"}
    s3.client.put_object(Bucket=bucket, Key="db/lock.json", Body=json.dumps(go_lock),
                         ContentType="application/json")
    a = Host(ext, tmp_path / "a.db", cfg(s3, bucket, lease_owner="host-a:1"))
    hosts.append(a)
    a.ok("write", n=2)
    a.ok("start")
    st = wait_until("a to read the Go lock", 10, lambda: (lambda s: s if s["lease"]["owner"] else None)(a.status()))
    assert st["lease"]["role"] == "standby" and st["lease"]["owner"] == "go-leaser:4242", st
    assert st["lease"]["token"] == 7 and abs(st["lease"]["expires_at"] - until.timestamp()) < 0.01, st
    r = a.call("sync", ms=300)
    assert "error" in r and "go-leaser:4242" in r["error"], r
    # A longer sync waits for the Go lock to expire, takes the lease over and uploads.
    a.ok("sync", ms=10000)
    assert time.time() > until.timestamp()
    assert role(a) == "holder"
    body = lock_json(s3, bucket)
    m = LOCK_RE.match(body)
    assert m, "lock.json is not in the guide's format: %r" % body
    lock = json.loads(body)
    assert list(lock) == ["token", "expires_at", "owner"]
    assert type(lock["token"]) is int and type(lock["expires_at"]) is float and type(lock["owner"]) is str
    assert lock["token"] == 8 and lock["owner"] == "host-a:1"
    assert 0 < lock["expires_at"] - time.time() <= TTL + 0.5
    st = a.status()["lease"]
    assert st == {**st, "role": "holder", "owner": "host-a:1", "token": 8, "instance": "host-a:1"}, st
    a.ok("stop")
    assert lock_json(s3, bucket) is None


def test_same_database_local_lock(ext, s3, bucket, tmp_path, hosts):
    """Two processes of one application on the same database: the local flock lets one of them
    handle the lease; kill -9 of the holder frees it at once, and the other takes over the
    replica (continuing the same database)."""
    db = tmp_path / "shared.db"
    a = started(hosts, ext, db, cfg(s3, bucket), writes=3)
    b = Host(ext, db, cfg(s3, bucket))
    hosts.append(b)
    b.ok("start")
    st = wait_until("b to wait on the local lock", 10,
                    lambda: (lambda s: s if s["lease"]["local_standby"] else None)(b.status()))
    assert st["lease"]["role"] == "standby", st
    assert (Path(str(db)).parent / ".shared.db-litestream" / "lease.lock").exists()
    b.ok("write", n=2)               # written through b, replicated by a
    a.ok("sync", ms=10000)
    t0 = time.monotonic()
    os.kill(a.p.pid, signal.SIGKILL)
    a.p.wait()
    wait_until("b to take over", TTL + RENEW + 5, lambda: role(b) == "holder", every=0.01)
    print("\nsame-host kill -9 failover: %.2fs" % (time.monotonic() - t0))
    b.ok("write", n=2)
    b.ok("sync", ms=10000)
    b.ok("stop")
    restore_equals(ext, s3, bucket, tmp_path, db)


def test_forked_child_takes_over_after_parent_dies(ext, s3, bucket, tmp_path, hosts):
    """A pre-fork server: the parent replicates, forks a worker that calls litestream_start() on
    the same database (a local standby), then dies. The child must not keep the parent's local
    lock alive through its inherited descriptor: it takes over within TTL + one renewal."""
    db = tmp_path / "fork.db"
    a = started(hosts, ext, db, cfg(s3, bucket), writes=3)
    out = tmp_path / "child.json"
    child = a.ok("fork_child", out=str(out), wait=TTL * 5)
    time.sleep(1.0)                  # the child is up and waiting on the local lock
    t0 = time.time()
    os.kill(a.p.pid, signal.SIGKILL)
    a.p.wait()
    wait_until("the child's report", TTL * 5 + 20, out.exists, every=0.05)
    res = json.loads(out.read_text())
    assert "error" not in res, res
    assert ["standby", True] in res["roles"], res       # waited on the parent's local lock
    assert res["roles"][-1][0] == "holder" and "holder_at" in res, res
    takeover = res["holder_at"] - t0
    print("\nforked child takeover after the parent's kill -9: %.2fs (child pid %d)" % (takeover, child))
    assert takeover <= TTL + RENEW + 0.5, takeover
    restore_equals(ext, s3, bucket, tmp_path, db)


def test_lease_off_and_file_replica(ext, s3, bucket, tmp_path, hosts):
    a = started(hosts, ext, tmp_path / "a.db", cfg(s3, bucket, lease="off"), writes=1)
    st = a.status()
    assert st["state"] == "running" and st["lease"]["role"] == "off", st
    assert lock_json(s3, bucket) is None
    a.ok("stop")
    for key in key_names(s3.client, bucket, "db/"):
        meta = s3.client.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert "litestream-lease-token" not in meta, (key, meta)
    f = Host(ext, tmp_path / "f.db", [("type", "file"), ("path", str(tmp_path / "rep")), ("lease", "on")])
    hosts.append(f)
    r = f.call("start")
    assert "error" in r and "litestream_configure('lease', NULL)" in r["error"], r


def test_takeover_aborts_the_dead_holders_multipart_upload(ext, s3, bucket, tmp_path, hosts):
    """The holder dies mid multipart upload; the standby, started before that upload began,
    takes over and aborts it before its own first (small, single PUT) upload: a new holder's
    leftovers sweep covers what was begun before it acquired the lease, not only before its
    client existed."""
    proxy = S3Proxy(s3.port, rate=4 << 20).start()
    try:
        conf = s3_config(bucket, "db", proxy.url, lease_ttl="3s", part_size="5MB", concurrency="1")
        a = Host(ext, tmp_path / "a.db", conf)
        hosts.append(a)
        a.ok("start")
        a.ok("write", n=2)
        a.ok("sync", ms=10000)
        b = Host(ext, tmp_path / "b.db", conf)
        hosts.append(b)
        b.ok("start")
        wait_until("b standby", 10, lambda: b.status()["lease"]["owner"])
        time.sleep(1.5)                            # S3 reports upload start times in whole seconds
        a.ok("bulk", mib=12)                       # a multipart upload of ~12 MiB at 4 MiB/s
        wait_until("a's upload to be under way", 30,
                   lambda: (a.status().get("upload") or {}).get("parts_done", 0) >= 1)
        os.kill(a.p.pid, signal.SIGKILL)
        a.p.wait()
        open_uploads = lambda: s3.client.list_multipart_uploads(Bucket=bucket, Prefix="db/").get("Uploads", [])
        assert len(open_uploads()) == 1, open_uploads()
        # b follows a (and refuses writes) until it holds the lease; then its first upload.
        wait_until("b to take over", 20, lambda: role(b) == "holder", every=0.05)
        b.ok("write", n=2)
        b.ok("sync", ms=20000)
        assert open_uploads() == [], "the dead holder's upload was left open: %s" % open_uploads()
        b.ok("stop")
    finally:
        proxy.stop()
    restore_equals(ext, s3, bucket, tmp_path, tmp_path / "b.db")
