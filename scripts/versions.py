#!/usr/bin/env python3
"""The version number, as every place that states it states it; exit 1 when they disagree.

    python3 scripts/versions.py          # prints "0.1.0" or lists every disagreement

Cargo.toml's [package] version is the source of truth: litestream_version() reports it (the
crate's CARGO_PKG_VERSION), and the Python and npm packages must declare the same number. The
packaging build (scripts/package.sh) runs this first; tests/hosts/test_versions.py also checks
the built artifacts and the loaded library.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON_INIT = REPO / "python" / "litestream_sqlite" / "__init__.py"
NPM_MAIN = REPO / "npm" / "litestream-sqlite" / "package.json"
NPM_PLATFORM_PACKAGES = sorted((REPO / "npm").glob("litestream-sqlite-*/package.json"))


def cargo_version() -> str:
    text = (REPO / "Cargo.toml").read_text()
    table = re.search(r"^\[package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    match = table and re.search(r'^version\s*=\s*"([^"]+)"', table.group(1), re.M)
    if not match:
        raise SystemExit('versions.py: no version = "..." in the [package] table of Cargo.toml')
    return match.group(1)


def python_version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', PYTHON_INIT.read_text(), re.M)
    if not match:
        raise SystemExit('versions.py: no __version__ = "..." line in %s' % PYTHON_INIT)
    return match.group(1)


def declared() -> dict[str, str]:
    """Where -> the version it states."""
    found = {"Cargo.toml [package] version": cargo_version(),
             str(PYTHON_INIT.relative_to(REPO)) + " __version__": python_version()}
    main = json.loads(NPM_MAIN.read_text())
    found[str(NPM_MAIN.relative_to(REPO)) + " version"] = main["version"]
    for name, spec in sorted(main.get("optionalDependencies", {}).items()):
        found["%s optionalDependencies[%s]" % (NPM_MAIN.relative_to(REPO), name)] = spec
    for pkg in NPM_PLATFORM_PACKAGES:
        found[str(pkg.relative_to(REPO)) + " version"] = json.loads(pkg.read_text())["version"]
    return found


def main() -> int:
    versions = declared()
    want = cargo_version()
    wrong = {where: v for where, v in versions.items() if v != want}
    if wrong:
        print("versions disagree with Cargo.toml's %s:" % want, file=sys.stderr)
        for where, v in wrong.items():
            print("  %s = %s" % (where, v), file=sys.stderr)
        return 1
    print(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
