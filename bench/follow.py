"""Hot standby (issue 11): follow lag and failover time, against `litestream restore -f` (the
reference binary) following the same replica in the same run.

    python3 bench/follow.py [--seconds 30] [--sync-interval 1s] [--ttl 4s]

Primary A and standby B are lease_host.py processes (tests/integration/, the lease tests' host
program) on two database files, one SeaweedFS replica. A load commits rows carrying their commit
time; a sampler in this process polls B's database and the reference follower's output every
5 ms (read-only) and records, for each newly visible row, now - its commit time. Phases:
100 tx/s of 1-row transactions; ~10 MiB/s of 256 KiB rows; failover after `kill -9` of A
(until B holds the lease and a commit + litestream_sync() on B is durable) and after
`litestream_stop()` of the new holder (a second standby takes over). Prints one JSON line.
Both followers poll at the sync interval (ours 100 ms while files keep arriving)."""
import argparse
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pysupport.awsenv import child_env  # noqa: E402
from pysupport.extension import s3_config  # noqa: E402
from pysupport.paths import HOST_PYTHON  # noqa: E402
from pysupport.reference import litestream_bin, reference_env, reference_url  # noqa: E402
from pysupport.s3server import S3Server  # noqa: E402

LEASE_HOST = ROOT / "tests" / "integration" / "lease_host.py"
EXT = os.environ.get("LITESTREAM_EXT", str(ROOT / "target" / "release" / "liblitestream"))


class Host:
    def __init__(self, db, config):
        self.p = subprocess.Popen([HOST_PYTHON, str(LEASE_HOST), EXT + ".so", str(db), json.dumps(config)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=child_env())
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.p.stdout], daemon=True).start()
        assert self._read()["ok"] == "ready"

    def _read(self, timeout=120):
        return json.loads(self.lines.get(timeout=timeout))

    def ok(self, op, **kw):
        kw["op"] = op
        self.p.stdin.write(json.dumps(kw) + "\n")
        self.p.stdin.flush()
        r = self._read()
        assert "error" not in r, (op, r)
        return r["ok"]

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def pct(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1) if xs else None


class Sampler(threading.Thread):
    """Lag of each newly visible row in `db` (now - its `at`)."""

    def __init__(self, db):
        super().__init__(daemon=True)
        self.db, self.lags, self.stop, self.seen = str(db), [], False, 0

    def run(self):
        # A new connection per look: the reference follower may replace the file.
        while not self.stop:
            try:
                c = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=1)
                try:
                    rows = c.execute("SELECT id, at FROM t WHERE id > ? ORDER BY id", (self.seen,)).fetchall()
                finally:
                    c.close()
                now = time.time()
                for i, at in rows:
                    if at is not None and self.seen:
                        self.lags.append(now - at)
                    self.seen = i
            except sqlite3.Error:
                pass
            time.sleep(0.005)


def load(db, seconds, rate, blob):
    c = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        c.execute("INSERT INTO t(who, at, pad) VALUES ('load', ?, randomblob(?))", (time.time(), blob))
        n += 1
        time.sleep(max(0.0, (time.time() + 1.0 / rate) - time.time() - 0.0002))
    c.close()
    return n


def phase(a_db, followers, seconds, rate, blob):
    samplers = {name: Sampler(db) for name, db in followers.items()}
    for s in samplers.values():
        s.seen = sqlite3.connect(str(a_db)).execute("SELECT coalesce(max(id), 0) FROM t").fetchone()[0]
        s.start()
    t0 = time.time()
    n = load(a_db, seconds, rate, blob)
    took = time.time() - t0
    time.sleep(5)
    out = {"tx": n, "tx_per_s": round(n / took, 1), "mib_per_s": round(n * blob / took / (1 << 20), 2)}
    for name, s in samplers.items():
        s.stop = True
        out[name] = {"rows": len(s.lags), "lag_p50_ms": pct(s.lags, 0.5), "lag_p99_ms": pct(s.lags, 0.99)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--sync-interval", default="1s")
    ap.add_argument("--ttl", default="4s")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="follow-bench-"))
    server = S3Server(buckets=("bench",)).start()
    hosts, ref = [], None
    try:
        conf = s3_config("bench", "db", server.endpoint, sync_interval=args.sync_interval,
                         lease_ttl=args.ttl)
        a_db, b_db, c_db, ref_db = (work / n for n in ("a.db", "b.db", "c.db", "ref.db"))
        a = Host(a_db, conf)
        hosts.append(a)
        a.ok("start")
        a.ok("write", n=10)
        a.ok("sync", ms=30000)
        b = Host(b_db, conf)
        hosts.append(b)
        b.ok("start")
        interval = args.sync_interval
        ref = subprocess.Popen([litestream_bin(), "restore", "-f", "-follow-interval", interval, "-o", str(ref_db),
                                reference_url("bench", "db", server.endpoint)],
                               stdout=subprocess.DEVNULL, stderr=open(work / "ref.log", "w"),
                               env=reference_env())
        deadline = time.time() + 60
        while time.time() < deadline and not ((b.ok("status").get("follow") or {}).get("txid") and ref_db.exists()):
            time.sleep(0.2)
        followers = {"ours": b_db, "litestream_restore_f": ref_db}
        result = {"sync_interval": interval, "ttl": args.ttl}
        result["100_tx_per_s"] = phase(a_db, followers, args.seconds, 100, 200)
        result["10_mib_per_s"] = phase(a_db, followers, args.seconds, 40, 256 << 10)
        # kill -9 failover: until B holds the lease and a commit on it is durable.
        t0 = time.monotonic()
        os.kill(a.p.pid, signal.SIGKILL)
        while True:
            st = b.ok("status")
            if st["lease"]["role"] == "holder" and st["state"] == "running":
                break
            time.sleep(0.01)
        t_lease = time.monotonic() - t0
        b.ok("write", n=1)
        b.ok("sync", ms=30000)
        result["failover_kill9_s"] = {"lease_and_running": round(t_lease, 2),
                                      "first_durable_commit": round(time.monotonic() - t0, 2),
                                      "snapshots_after": b.ok("status")["snapshots"],
                                      "snapshot_reason": b.ok("status")["last_snapshot_reason"]}
        c = Host(c_db, conf)
        hosts.append(c)
        c.ok("start")
        deadline = time.time() + 60
        while time.time() < deadline and (c.ok("status").get("follow") or {}).get("txid") is None:
            time.sleep(0.2)
        t0 = time.monotonic()
        b.ok("stop")
        while True:
            st = c.ok("status")
            if st["lease"]["role"] == "holder" and st["state"] == "running":
                break
            time.sleep(0.01)
        t_lease = time.monotonic() - t0
        c.ok("write", n=1)
        c.ok("sync", ms=30000)
        result["failover_stop_s"] = {"lease_and_running": round(t_lease, 2),
                                     "first_durable_commit": round(time.monotonic() - t0, 2),
                                     "snapshots_after": c.ok("status")["snapshots"],
                                     "snapshot_reason": c.ok("status")["last_snapshot_reason"]}
        print(json.dumps(result))
        print("reference follower log tail:", (work / "ref.log").read_text()[-1500:], file=sys.stderr)
    finally:
        if ref is not None:
            ref.kill()
        for h in hosts:
            h.close()
        server.stop(remove_state=True)


if __name__ == "__main__":
    main()
