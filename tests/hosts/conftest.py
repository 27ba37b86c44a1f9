"""Fixtures for the host tests: the extension installed the way users install it (the wheel, the
npm tarballs) or loaded by other SQLite bindings (better-sqlite3, the sqlite3 npm package, Go's
mattn/go-sqlite3), each replicating to the test SeaweedFS and restoring.

The S3 server, bucket and extension fixtures are the integration suite's (pysupport/fixtures.py).

- dist: the folder scripts/package.sh filled (LITESTREAM_DIST, default <repo>/dist).
- node_hosts: node_modules with better-sqlite3 and sqlite3 (LITESTREAM_NODE_HOSTS, else
  scripts/install-hosts.sh node builds them).
- go_gopath: the GOPATH entry holding mattn/go-sqlite3 (LITESTREAM_GO_GOPATH, else
  scripts/install-hosts.sh go installs it).
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

from pysupport.awsenv import child_env
from pysupport.fixtures import bucket, ext, s3
from pysupport.paths import REPO

__all__ = ["bucket", "dist", "ext", "go_gopath", "node_hosts", "s3"]


@pytest.fixture(scope="session")
def dist():
    path = Path(os.environ.get("LITESTREAM_DIST") or REPO / "dist").resolve()
    if not list(path.glob("litestream_sqlite-*.whl")) or not list(path.glob("litestream-sqlite-*.tgz")):
        pytest.fail("no packages in %s: run scripts/package.sh first" % path, pytrace=False)
    return path


def _installed(host, variable):
    """The value scripts/install-hosts.sh HOST exports as `variable` (installing if needed)."""
    if os.environ.get(variable):
        return os.environ[variable]
    p = subprocess.run(["bash", str(REPO / "scripts" / "install-hosts.sh"), host], text=True,
                       capture_output=True, timeout=1500, env=child_env())
    if p.returncode != 0:
        pytest.fail("scripts/install-hosts.sh %s failed:\n%s" % (host, p.stderr[-3000:]),
                    pytrace=False)
    match = re.search(r"^export %s=(.*)$" % variable, p.stdout, re.M)
    assert match, "install-hosts.sh %s printed no %s: %r" % (host, variable, p.stdout)
    return match.group(1)


@pytest.fixture(scope="session")
def node_hosts():
    return Path(_installed("node", "LITESTREAM_NODE_HOSTS"))


@pytest.fixture(scope="session")
def go_gopath():
    return _installed("go", "LITESTREAM_GO_GOPATH")
