"""The extension under test as the tests see it: where the built library is, the SQL surface it
must show, and the litestream_configure() pairs that point it at a replica.

Configurations are lists of (key, value) pairs, applied in order; every S3 configuration names
a loopback endpoint (checked) and explicit credentials, so nothing depends on the environment's.
"""
import re
from pathlib import Path

from pysupport.awsenv import ACCESS_KEY, SECRET_KEY, require_loopback
from pysupport.paths import extension_path

__all__ = ["EXPECTED_FUNCTIONS", "TXID_RE", "config_sql", "configure_sql",
           "extension_path", "file_config", "s3_config", "s3_url", "sql_literal"]

# The extension's functions, as `pragma_function_list` must show them (sorted, distinct names).
EXPECTED_FUNCTIONS = [
    "litestream_config",
    "litestream_configure",
    "litestream_restore",
    "litestream_start",
    "litestream_status",
    "litestream_stop",
    "litestream_sync",
    "litestream_version",
]
TXID_RE = re.compile(r"^[0-9a-f]{16}$")
# The tests' default: short enough that a test waits little for a commit to reach the replica.
TEST_SYNC_INTERVAL = "100ms"


def sql_literal(value):
    """`value` as an SQL literal (NULL, 0/1, an integer, or a quoted string)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _merge(base, extra):
    """base pairs, then `extra` keyword arguments (underscores become hyphens: part_size= ->
    'part-size'), each replacing the key it names or added at the end."""
    out = dict(base)
    for k, v in extra.items():
        out[k.replace("_", "-")] = v
    return list(out.items())


def s3_config(bucket, path, endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **extra):
    """(key, value) pairs configuring an S3 replica on the loopback server. Keyword arguments
    add or override keys (sync_interval='1s', part_size='5MB', lease='off', ...)."""
    base = [
        ("bucket", bucket),
        ("path", path),
        ("endpoint", require_loopback(endpoint)),
        ("region", "us-east-1"),
        ("force-path-style", "true"),
        ("access-key-id", access_key),
        ("secret-access-key", secret_key),
        ("sync-interval", TEST_SYNC_INTERVAL),
    ]
    return _merge(base, extra)


def file_config(directory, **extra):
    """(key, value) pairs configuring a `file` replica in `directory` (made absolute)."""
    directory = Path(directory).resolve()
    return _merge([("type", "file"), ("url", "file://%s" % directory),
                   ("sync-interval", TEST_SYNC_INTERVAL)], extra)


def config_sql(pairs):
    """One line of `SELECT litestream_configure(k, v);` statements."""
    return " ".join("SELECT litestream_configure(%s, %s);" % (sql_literal(k), sql_literal(v))
                    for k, v in pairs)


def configure_sql(bucket, path, endpoint, **extra):
    return config_sql(s3_config(bucket, path, endpoint, **extra))


def s3_url(bucket, path, endpoint):
    """Replica URL in the extension's form (force-path-style and region default with an endpoint)."""
    return "s3://%s/%s?endpoint=%s" % (bucket, path, require_loopback(endpoint))
