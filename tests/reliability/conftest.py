"""Fixtures for the reliability suite (crash trials, S3 outage, file-replica faults, secrets).

Every test here talks to SeaweedFS servers this suite starts itself (it kills and restarts
them, and enforces SigV4 with a distinctive secret key), on 127.0.0.1 only:
- RELIABILITY_S3_PORT / RELIABILITY_S3_PORT2 pick their ports (default: free ports);
- the extension is LITESTREAM_EXT (default target/release/liblitestream), hosted by
  /usr/bin/python3 bench/crash_host.py.

Secrets: the servers' admin identity uses SECRET_KEY below, and every replica is configured with
it through litestream_configure('secret-access-key', ...). Child processes get a *different*
AWS_SECRET_ACCESS_KEY in their environment (so the AWS SDK never falls back to EC2 metadata). Every
test records what it saw — status JSON, SQL errors, stderr, state files — with `seen(...)`; at the
end of the session all of it is scanned for the secret, and any hit fails the run.
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
import benchlib as bl  # noqa: E402

import rel_common  # noqa: E402
from rel_common import ACCESS_KEY, SECRET_KEY, _port, leaks, seen, seen_files  # noqa: E402,F401


@pytest.fixture(scope="session")
def ext():
    if not os.path.exists(bl.EXT + ".so"):
        pytest.fail("the extension %s.so is missing: run `cargo build --release`" % bl.EXT,
                    pytrace=False)
    return bl.EXT


@pytest.fixture(scope="session")
def s3(ext):
    """The session's SeaweedFS (bucket 'crash'), SigV4 with ACCESS_KEY / SECRET_KEY."""
    state = tempfile.mkdtemp(prefix="litestream-rel-s3-")
    server = bl.S3Server(_port("RELIABILITY_S3_PORT", (20000, 32000)), state, buckets=("crash",),
                         access_key=ACCESS_KEY, secret_key=SECRET_KEY).start()
    try:
        yield server
    finally:
        server.stop()
        seen_files("seaweedfs-log", state)  # not ours, but cheap to check nothing echoed it
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def own_s3(ext):
    """A dedicated SeaweedFS this test may kill and restart (bucket 'outage')."""
    state = tempfile.mkdtemp(prefix="litestream-rel-own-s3-")
    server = bl.S3Server(_port("RELIABILITY_S3_PORT2", (32000, 45000)), state, buckets=("outage",),
                         access_key=ACCESS_KEY, secret_key=SECRET_KEY).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    seen_files("workdir", tmp_path)


def pytest_sessionfinish(session, exitstatus):
    found = leaks()
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    msg = ("secret scan: %d outputs checked for the secret key, %d leaks" % (len(rel_common._SEEN), len(found)))
    if tr:
        tr.write_line(msg, red=bool(found), green=not found)
        for f in found[:20]:
            tr.write_line("  LEAK " + f, red=True)
    if found:
        session.exitstatus = 1
