"""Litestream replication to S3 from inside SQLite, as a loadable extension.

This package ships the compiled extension (``liblitestream.so``) and two helpers to load it into
a :mod:`sqlite3` connection. Once loaded, the extension is driven with SQL::

    import sqlite3
    import litestream_sqlite

    db = sqlite3.connect("app.db")
    litestream_sqlite.load(db)
    db.execute("SELECT litestream_configure('url', 's3://my-bucket/app.db')")
    db.execute("SELECT litestream_start()")

Loading needs a Python whose :mod:`sqlite3` module was built with extension loading; many are
not (pyenv's and python.org's builds by default). :func:`load` says so clearly when that is the
case.
"""

from __future__ import annotations

import os
from typing import Protocol

__all__ = ["__version__", "loadable_path", "load"]

# Kept equal to Cargo.toml's version and litestream_version() by the packaging build and a test.
__version__ = "0.1.0"

# The library's file name without its suffix: SQLite adds the platform's suffix itself and derives
# the entry point (sqlite3_litestream_init) from the name.
_LIBRARY_STEM = "liblitestream"


class _LoadableConnection(Protocol):
    """What :func:`load` needs of a connection: sqlite3.Connection and its look-alikes."""

    def enable_load_extension(self, enabled: bool, /) -> None: ...

    def load_extension(self, path: str, /) -> None: ...


def loadable_path() -> str:
    """The path of the bundled extension without its file suffix.

    Pass it to ``Connection.load_extension``, the sqlite3 shell's ``.load`` or any other SQLite
    host; SQLite appends ``.so`` itself.
    """
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), _LIBRARY_STEM)


def load(conn: _LoadableConnection) -> None:
    """Load the extension into ``conn``.

    Extension loading is enabled only for the duration of the call and disabled again afterwards
    (also when loading fails), so SQL run later on this connection cannot load other libraries.
    The extension stays loaded in the process; loading it into further connections is cheap.

    Raises :class:`RuntimeError` when this Python's sqlite3 module cannot load extensions, and
    ``sqlite3.OperationalError`` when SQLite refuses the library (its message says why).
    """
    if not hasattr(conn, "enable_load_extension"):
        raise RuntimeError(
            "litestream_sqlite.load: this Python's sqlite3 module was built without extension "
            "loading (enable_load_extension is missing), as pyenv and python.org builds are by "
            "default; use a Python that has it (for example the distribution's /usr/bin/python3 "
            "on Debian or Ubuntu) or rebuild Python with --enable-loadable-sqlite-extensions"
        )
    conn.enable_load_extension(True)
    try:
        conn.load_extension(loadable_path())
    finally:
        conn.enable_load_extension(False)
