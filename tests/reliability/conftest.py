"""Fixtures for the reliability suite (crash trials, S3 outage, file-replica faults, secrets).

Every test here talks to SeaweedFS servers this suite starts itself (it kills and restarts
them, and enforces SigV4 with a distinctive secret key), on 127.0.0.1 only:
- RELIABILITY_S3_PORT / RELIABILITY_S3_PORT2 pick their ports (default: free ports);
- the extension is LITESTREAM_EXT (default target/release/liblitestream), hosted by
  /usr/bin/python3 pysupport/crash_host.py.

Secrets: the servers' admin identity uses SECRET_KEY (rel_common.py), and every replica is configured with
it through litestream_configure('secret-access-key', ...). Child processes get a *different*
AWS_SECRET_ACCESS_KEY in their environment (so the AWS SDK never falls back to EC2 metadata). Every
test records what it saw — status JSON, SQL errors, stderr, state files — with `seen(...)`; at the
end of the session all of it is scanned for the secret, and any hit fails the run.
"""
import shutil

import pytest

import rel_common
from pysupport.fixtures import ext
from rel_common import leaks, seen_files
from rel_helpers import seaweedfs

__all__ = ["ext", "s3", "workdir"]


@pytest.fixture(scope="session")
def s3(ext):
    """The session's SeaweedFS (bucket 'crash'), SigV4 with ACCESS_KEY / SECRET_KEY."""
    server = seaweedfs("RELIABILITY_S3_PORT", "crash").start()
    try:
        yield server
    finally:
        server.stop()
        seen_files("seaweedfs-log", server.state)  # not ours, but cheap to check nothing echoed it
        shutil.rmtree(server.state, ignore_errors=True)


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
