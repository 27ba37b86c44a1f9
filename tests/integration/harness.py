"""The names the integration tests imported from here before the helpers moved to the shared
package pysupport/ (repository root). Kept so that test modules written against it still work;
new tests import from the pysupport modules directly (tests/integration/README.md)."""
from pathlib import Path

from pysupport.awsenv import AWS_ENV, child_env, require_loopback  # noqa: F401
from pysupport.extension import (CONFIG_KEYS, EXPECTED_FUNCTIONS, TXID_RE, config_sql,  # noqa: F401
                                 configure_sql, file_config, s3_config, s3_url, sql_literal)
from pysupport.ltx import (LTX_NAME_RE, check_file_replica, check_ltx_chain,  # noqa: F401
                           check_other_level, check_s3_replica, is_full_snapshot, ltx_check,
                           ltx_decode, parse_rfc3339_ms)
from pysupport.paths import HOST_PYTHON, LTX_CHECK, REPO, SCRIPTS, SQL_DIR, SQLITE3  # noqa: F401
from pysupport.pyhost import PyHost, PyHostError  # noqa: F401
from pysupport.reference import reference_url  # noqa: F401
from pysupport.s3client import empty_bucket, list_keys, s3_client  # noqa: F401
from pysupport.s3server import S3Server  # noqa: F401
from pysupport.shell import (BUSY_TIMEOUT_MS, ShellError, assert_same_db, dump,  # noqa: F401
                             dump_digest, ext_error, integrity, labeled, load_sql, render_sql,
                             replicate_shell, restore_args, restore_shell, run_sqlite_shell,
                             sqlite_shell)

HERE = Path(__file__).resolve().parent  # tests/integration (lease_host.py lives here)
