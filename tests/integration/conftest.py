"""Fixtures for the integration tests: s3, bucket, ext, litestream_bin, pyhost, defined in
pysupport/fixtures.py (shared with tests/hosts); helpers live in the pysupport modules."""
from pysupport.fixtures import bucket, ext, litestream_bin, pyhost, s3

__all__ = ["bucket", "ext", "litestream_bin", "pyhost", "s3"]


def pytest_collection_modifyitems(items):
    """Quick tests first: the slow (hundreds of MB) ones run last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
