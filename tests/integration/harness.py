"""The names the integration tests imported from here before the helpers moved to the shared
package pysupport/ (repository root). Kept so that test modules written against it still work;
new tests import from the pysupport modules directly (tests/integration/README.md)."""
from pathlib import Path

from pysupport.awsenv import AWS_ENV, child_env, require_loopback
from pysupport.extension import (EXPECTED_FUNCTIONS, TXID_RE, config_sql,
                                 configure_sql, file_config, s3_config, s3_url, sql_literal)
from pysupport.ltx import (LTX_NAME_RE, check_file_replica, check_ltx_chain,
                           check_other_level, check_s3_replica, is_full_snapshot, ltx_check,
                           ltx_decode, parse_rfc3339_ms)
from pysupport.paths import HOST_PYTHON, LTX_CHECK, REPO, SCRIPTS, SQL_DIR, SQLITE3
from pysupport.pyhost import PyHost, PyHostError
from pysupport.reference import reference_url
from pysupport.s3client import empty_bucket, list_keys, s3_client
from pysupport.s3server import S3Server
from pysupport.shell import (BUSY_TIMEOUT_MS, ShellError, assert_same_db, config_keys, dump,
                             dump_digest, ext_error, integrity, labeled, load_sql, render_sql,
                             replicate_shell, restore_args, restore_shell, run_sqlite_shell,
                             sqlite_shell)

HERE = Path(__file__).resolve().parent  # tests/integration (lease_host.py lives here)

__all__ = ["AWS_ENV", "BUSY_TIMEOUT_MS", "EXPECTED_FUNCTIONS", "HERE",
           "HOST_PYTHON", "LTX_CHECK", "LTX_NAME_RE", "PyHost", "PyHostError", "REPO", "S3Server",
           "SCRIPTS", "SQLITE3", "SQL_DIR", "ShellError", "TXID_RE", "assert_same_db",
           "check_file_replica", "check_ltx_chain", "check_other_level", "check_s3_replica",
           "child_env", "config_keys", "config_sql", "configure_sql", "dump", "dump_digest", "empty_bucket",
           "ext_error", "file_config", "integrity", "is_full_snapshot", "labeled", "list_keys",
           "load_sql", "ltx_check", "ltx_decode", "parse_rfc3339_ms", "reference_url",
           "render_sql", "replicate_shell", "require_loopback", "restore_args", "restore_shell",
           "run_sqlite_shell", "s3_client", "s3_config", "s3_url", "sql_literal", "sqlite_shell"]
