"""Fixtures for the integration tests. Helpers live in harness.py.

- s3 (session): the SeaweedFS server. scripts/test.sh starts one and passes S3_ENDPOINT; without it
  this fixture starts its own through scripts/s3-server.sh on a free port (SigV4 enforced)
  and stops it at the end, so a bare `pytest tests/integration` works.
- bucket: a fresh, empty bucket per test, emptied and deleted afterwards.
- ext: the built extension without suffix (LITESTREAM_EXT, default target/release/liblitestream).
- litestream_bin: the reference Litestream 0.5.17 (LITESTREAM_BIN, else install-litestream.sh).
- pyhost: a harness.PyHost for /usr/bin/python3.
"""
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import harness
from harness import SCRIPTS, PyHost, S3Server, empty_bucket, require_loopback, s3_client


@dataclass
class S3:
    endpoint: str
    port: int
    buckets: list = field(default_factory=list)  # created at server start
    client: object = None


@pytest.fixture(scope="session")
def s3():
    endpoint = os.environ.get("S3_ENDPOINT")
    server = state = None
    if endpoint:
        buckets = [b for b in os.environ.get("S3_BUCKETS", "").split(",") if b]
    else:
        state = tempfile.mkdtemp(prefix="litestream-it-s3-")
        server = S3Server(state, buckets=("test",)).start()
        endpoint, buckets = server.endpoint, server.buckets
    require_loopback(endpoint)
    port = int(re.search(r":(\d+)$", endpoint.rstrip("/")).group(1))
    client = s3_client(endpoint)
    client.list_buckets()  # fail here, clearly, if the server or the credentials are wrong
    try:
        yield S3(endpoint=endpoint.rstrip("/"), port=port, buckets=buckets, client=client)
    finally:
        if server:
            server.stop()
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def bucket(s3, request):
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = "t-%s-%s" % (slug, uuid.uuid4().hex[:8])
    s3.client.create_bucket(Bucket=name)
    yield name
    try:
        empty_bucket(s3.client, name)
        s3.client.delete_bucket(Bucket=name)
    except Exception as e:  # noqa: BLE001 - cleanup must not hide the test's own result
        print("warning: could not delete bucket %s: %s" % (name, e))


@pytest.fixture(scope="session")
def ext():
    path = os.environ.get("LITESTREAM_EXT") or str(harness.REPO / "target" / "release" / "liblitestream")
    path = str(Path(path).resolve())
    if not os.path.exists(path + ".so"):
        pytest.fail("the extension %s.so is missing: run `cargo build --release` "
                    "(or set LITESTREAM_EXT to the library path without .so)" % path, pytrace=False)
    return path


@pytest.fixture(scope="session")
def litestream_bin():
    path = os.environ.get("LITESTREAM_BIN")
    if not path:
        p = subprocess.run(["bash", str(SCRIPTS / "install-litestream.sh")], text=True,
                           capture_output=True, timeout=600, env=harness.child_env())
        if p.returncode != 0:
            pytest.fail("install-litestream.sh failed:\n%s" % p.stderr, pytrace=False)
        path = p.stdout.strip().splitlines()[-1]
    v = subprocess.run([path, "version"], text=True, capture_output=True, timeout=60,
                       env=harness.child_env(drop_ca_bundle=True))
    assert v.returncode == 0 and "0.5." in v.stdout, "reference litestream at %s: %s %s" % (
        path, v.stdout, v.stderr)
    return path


@pytest.fixture
def pyhost(ext):
    return PyHost(ext)


def pytest_collection_modifyitems(items):
    """Quick tests first: the slow (hundreds of MB) ones run last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
