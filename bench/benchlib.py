"""Shared by bench/run.py, bench/crash.py and tests/reliability: the S3 server, the Litestream
sidecar, the extension hosts, small statistics.

Everything talks to 127.0.0.1 only, and every child process gets loopback test credentials and
AWS_EC2_METADATA_DISABLED=true (without credentials an AWS SDK would ask the EC2 metadata
service, which is off this machine).
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"  # s3-server.sh, install-litestream.sh
TOOLS = REPO / "tests" / "tools"  # ltx_check.py, the independent LTX checker
HOST_PYTHON = "/usr/bin/python3"  # Debian's: the only Python here that can load extensions
HOST_PY = REPO / "bench" / "host.py"
EXT = os.environ.get("LITESTREAM_EXT") or str(REPO / "target" / "release" / "liblitestream")

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "testtesttest",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_AWS_DROP = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
             "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE")
os.environ.update(AWS_ENV)
for _k in _AWS_DROP:
    os.environ.pop(_k, None)


def child_env(extra=None):
    env = dict(os.environ)
    env.update(AWS_ENV)
    for k in _AWS_DROP:
        env.pop(k, None)
    env.update(extra or {})
    return env


def require_loopback(url):
    if not re.match(r"^https?://(127\.\d+\.\d+\.\d+|localhost)(:\d+)?(/|$)", url):
        raise RuntimeError("refusing non-loopback endpoint %r" % url)
    return url


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- S3 server

class S3Server:
    """SeaweedFS through scripts/s3-server.sh on a given loopback port, SigV4 enforced
    with the given credentials (they become weed's admin identity)."""

    def __init__(self, port, state, buckets=("bench",), access_key="test", secret_key="testtesttest"):
        self.port = int(port)
        self.state = str(state)
        self.buckets = list(buckets)
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.access_key, self.secret_key = access_key, secret_key
        self.script = SCRIPTS / "s3-server.sh"

    def _env(self, fresh=True):
        return child_env({"S3_PORT": str(self.port), "S3_STATE": self.state, "S3_AUTH": "1",
                          "S3_BUCKETS": ",".join(self.buckets), "S3_FRESH": "1" if fresh else "0",
                          "AWS_ACCESS_KEY_ID": self.access_key,
                          "AWS_SECRET_ACCESS_KEY": self.secret_key})

    def start(self, fresh=True):
        p = subprocess.run(["bash", str(self.script), "start"], env=self._env(fresh), text=True,
                           capture_output=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError("s3-server.sh failed:\n%s\n%s" % (p.stdout, p.stderr))
        return self

    def stop(self):
        subprocess.run(["bash", str(self.script), "stop"], env=self._env(), timeout=60,
                       capture_output=True)

    def pid(self):
        try:
            return int(Path(self.state, "weed.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill9(self):
        """SIGKILL the server (a crash, not a shutdown); the data dir stays for a restart."""
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            Path(self.state, "weed.pid").unlink(missing_ok=True)

    def client(self):
        return s3_client(self.endpoint, self.access_key, self.secret_key)


def s3_client(endpoint, access_key="test", secret_key="testtesttest"):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=require_loopback(endpoint), region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 2, "mode": "standard"}))


def list_keys(client, bucket, prefix, start_after=None):
    kw = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        kw["StartAfter"] = start_after
    keys = []
    while True:
        r = client.list_objects_v2(**kw)
        keys += [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            return keys
        kw["ContinuationToken"] = r["NextContinuationToken"]


def empty_prefix(client, bucket, prefix):
    keys = list_keys(client, bucket, prefix)
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})


# ---------------------------------------------------------------- the database and its hosts

def prepare_db(path, rows=0, row_bytes=0):
    """A fresh database in WAL mode with table t (and `rows` rows of random bytes), created in
    this process with the stdlib sqlite3 (no extension needed)."""
    import sqlite3
    path = str(path)
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    shutil.rmtree(os.path.join(os.path.dirname(path), "." + os.path.basename(path) + "-litestream"),
                  ignore_errors=True)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    if rows:
        c.execute("BEGIN")
        c.executemany("INSERT INTO t(id, v) VALUES (?, randomblob(?))",
                      [(i + 1, row_bytes) for i in range(rows)])
        c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def ext_config(bucket, prefix, endpoint, sync_interval="1s", access_key="test",
               secret_key="testtesttest", **extra):
    cfg = [("bucket", bucket), ("path", prefix), ("endpoint", require_loopback(endpoint)),
           ("region", "us-east-1"), ("force-path-style", "true"),
           ("access-key-id", access_key), ("secret-access-key", secret_key),
           ("sync-interval", sync_interval)]
    cfg += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return cfg


class HostError(RuntimeError):
    pass


def run_host(mode, params, timeout=900, env=None):
    """bench/host.py MODE in /usr/bin/python3; returns (result dict, stderr)."""
    p = subprocess.run([HOST_PYTHON, str(HOST_PY), mode, json.dumps(params)], text=True,
                       capture_output=True, timeout=timeout, env=env or child_env())
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
    if p.returncode != 0 or res is None:
        raise HostError("host %s exited %d\n--- stderr\n%s\n--- stdout\n%s" % (
            mode, p.returncode, p.stderr[-4000:], p.stdout[-2000:]))
    return res, p.stderr


class HostProc:
    """A host started with Popen (serve mode, or cpu mode holding for the sidecar)."""

    def __init__(self, mode, params, env=None):
        self.p = subprocess.Popen([HOST_PYTHON, str(HOST_PY), mode, json.dumps(params)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1,
                                  env=env or child_env())

    def readline(self):
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read()
            raise HostError("host exited early (%s):\n%s" % (self.p.wait(), err[-4000:]))
        return line.rstrip("\n")

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def call(self, cmd):
        self.send(cmd)
        return self.readline()

    def finish(self, timeout=600):
        out, err = self.p.communicate(timeout=timeout)  # closes stdin: the host's EOF
        res = None
        for line in out.splitlines():
            if line.startswith("RESULT "):
                res = json.loads(line[7:])
        if self.p.returncode != 0 or res is None:
            raise HostError("host exited %d\n%s" % (self.p.returncode, err[-4000:]))
        return res, err


# ---------------------------------------------------------------- the reference sidecar

def litestream_bin():
    path = os.environ.get("LITESTREAM_BIN")
    if path:
        return path
    p = subprocess.run(["bash", str(SCRIPTS / "install-litestream.sh")], text=True,
                       capture_output=True, timeout=900, env=child_env())
    if p.returncode != 0:
        raise RuntimeError("install-litestream.sh failed:\n%s" % p.stderr)
    return p.stdout.strip().splitlines()[-1]


class Sidecar:
    """`litestream replicate` (0.5.17) for one database, configured by a generated YAML file,
    with its control socket enabled. AWS_CA_BUNDLE is dropped: it makes the binary exit at start."""

    def __init__(self, binary, db, bucket, prefix, endpoint, workdir, sync_interval="1s",
                 monitor_interval=None, access_key="test", secret_key="testtesttest"):
        self.binary, self.db = binary, str(db)
        self.workdir = Path(workdir)
        self.cfg = self.workdir / "litestream.yml"
        self.sock = self.workdir / "litestream.sock"
        self.log = self.workdir / "litestream.log"
        mon = "    monitor-interval: %s\n" % monitor_interval if monitor_interval else ""
        self.cfg.write_text(
            "logging:\n  level: info\n  stderr: true\n"
            "socket:\n  enabled: true\n  path: %s\n"
            "dbs:\n  - path: %s\n%s"
            "    replicas:\n      - type: s3\n        bucket: %s\n        path: %s\n"
            "        endpoint: %s\n        region: us-east-1\n        force-path-style: true\n"
            "        sync-interval: %s\n" % (self.sock, self.db, mon, bucket, prefix,
                                             require_loopback(endpoint), sync_interval))
        self.env = child_env({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
        self.proc = None

    def start(self, wait_for=None, timeout=20):
        """Start; wait for the control socket and, if given, until wait_for() is true (e.g. its
        first snapshot is in the bucket)."""
        self.sock.unlink(missing_ok=True)
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen([self.binary, "replicate", "-config", str(self.cfg)],
                                     stdout=self._logf, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + timeout
        while not self.sock.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("litestream did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.02)
        while wait_for is not None and not wait_for():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("litestream made no snapshot in %ds:\n%s" % (
                    timeout, self.log.read_text()[-3000:]))
            time.sleep(0.05)
        return self

    def sync_wait(self, timeout_s=600):
        t0 = time.perf_counter()
        p = subprocess.run([self.binary, "sync", "-wait", "-timeout", str(int(timeout_s)),
                            "-socket", str(self.sock), self.db], text=True, capture_output=True,
                           env=self.env, timeout=timeout_s + 30)
        if p.returncode != 0:
            raise RuntimeError("litestream sync -wait failed: %s %s" % (p.stdout, p.stderr))
        return time.perf_counter() - t0

    def usage(self):
        """(CPU seconds, peak RSS in KiB) of the running sidecar, from /proc."""
        pid = self.proc.pid
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        hwm = 0
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return cpu, hwm

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_logf", None):
            self._logf.close()


# ---------------------------------------------------------------- statistics

def pct(values, q):
    """q-th percentile (0-100), linear interpolation."""
    v = sorted(values)
    if not v:
        return None
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def median(values):
    values = [x for x in values if x is not None]
    return statistics.median(values) if values else None


def machine_info():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = "%.0f GiB" % (int(line.split()[1]) / (1 << 20))
    except OSError:
        pass
    import sqlite3
    sv = subprocess.run([HOST_PYTHON, "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
                        text=True, capture_output=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(), "cpu": model,
            "mem": mem, "kernel": os.uname().release, "host_sqlite": sv,
            "loadavg": os.getloadavg()}


def git_rev():
    p = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], text=True,
                       capture_output=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                           text=True, capture_output=True).stdout.strip()
    return p.stdout.strip() + ("+dirty" if dirty else "")


def mkwork(prefix):
    return Path(tempfile.mkdtemp(prefix=prefix))
