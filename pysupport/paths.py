"""Where things are. Every path derives from this file's place in the repository, so a checkout
works wherever it lives; the only absolute paths are the two system hosts that can load the
extension (Debian's /usr/bin/python3 and /usr/bin/sqlite3). Standard library only: host
programs run by /usr/bin/python3 import it."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"  # s3-server.sh, install-litestream.sh
SQL_DIR = REPO / "sql"  # replicate.sql, restore.sql, workload.sql
LTX_CHECK = REPO / "tests" / "tools" / "ltx_check.py"  # the independent LTX checker
BENCH_OUT = REPO / "bench" / "out"  # benchmark and trial records (git-ignored)
# The extension's own uploader (examples/s3_upload.rs), built by `cargo build --example`.
UPLOADER = REPO / "target" / "release" / "examples" / "s3_upload"

# Debian's interpreter: the pyenv `python3` on PATH was built without enable_load_extension,
# so it only runs pytest and the orchestrators, never the extension.
HOST_PYTHON = "/usr/bin/python3"
SQLITE3 = os.environ.get("SQLITE3_CLI", "/usr/bin/sqlite3")


def extension_path():
    """The built extension without its .so suffix (as `.load` and load_extension take it):
    LITESTREAM_EXT, else target/release/liblitestream."""
    path = os.environ.get("LITESTREAM_EXT") or str(REPO / "target" / "release" / "liblitestream")
    return str(Path(path).resolve())
