"""pytest fixtures shared by the integration and host suites (their conftest.py files import
them by name):

- s3 (session): the SeaweedFS server. scripts/test.sh starts one and passes S3_ENDPOINT (and
  S3_BUCKETS); without it this fixture starts its own on a free port (SigV4 enforced) and stops
  it at the end, so a bare `pytest tests/integration` works.
- bucket: a fresh, empty bucket per test, emptied and deleted afterwards.
- ext: the built extension without suffix (LITESTREAM_EXT, default target/release/liblitestream).
- litestream_bin: the reference Litestream 0.5.x (LITESTREAM_BIN, else install-litestream.sh).
- pyhost: a PyHost for /usr/bin/python3.
"""
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pysupport import reference
from pysupport.awsenv import require_loopback
from pysupport.paths import extension_path
from pysupport.pyhost import PyHost
from pysupport.s3client import empty_bucket, s3_client
from pysupport.s3server import S3Server

# S3 bucket names: 3-63 characters; a test's slug keeps it readable, the suffix unique.
BUCKET_SLUG_CHARS = 40


@dataclass
class S3:
    endpoint: str
    port: int
    buckets: list = field(default_factory=list)  # created at server start
    client: object = None


@pytest.fixture(scope="session")
def s3():
    endpoint = os.environ.get("S3_ENDPOINT")
    server = None
    if endpoint:
        buckets = [b for b in os.environ.get("S3_BUCKETS", "").split(",") if b]
    else:
        server = S3Server(buckets=("test",)).start()
        endpoint, buckets = server.endpoint, server.buckets
    endpoint = require_loopback(endpoint).rstrip("/")
    port = int(re.search(r":(\d+)$", endpoint).group(1))
    client = s3_client(endpoint)
    client.list_buckets()  # fail here, clearly, if the server or the credentials are wrong
    try:
        yield S3(endpoint=endpoint, port=port, buckets=buckets, client=client)
    finally:
        if server:
            server.stop(remove_state=True)


@pytest.fixture
def bucket(s3, request):
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    name = "t-%s-%s" % (slug[:BUCKET_SLUG_CHARS].strip("-"), uuid.uuid4().hex[:8])
    s3.client.create_bucket(Bucket=name)
    yield name
    try:
        empty_bucket(s3.client, name)
        s3.client.delete_bucket(Bucket=name)
    except Exception as e:  # noqa: BLE001 - cleanup must not hide the test's own result
        print("warning: could not delete bucket %s: %s" % (name, e))


@pytest.fixture(scope="session")
def ext():
    path = extension_path()
    if not Path(path + ".so").exists():
        pytest.fail("the extension %s.so is missing: run `cargo build --release` "
                    "(or set LITESTREAM_EXT to the library path without .so)" % path, pytrace=False)
    return path


@pytest.fixture(scope="session")
def litestream_bin():
    try:
        path = reference.litestream_bin()
        reference.version(path)
    except reference.ReferenceFailure as e:
        pytest.fail(str(e), pytrace=False)
    return path


@pytest.fixture
def pyhost(ext):
    return PyHost(ext)
