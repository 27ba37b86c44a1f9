#!/usr/bin/env python3
"""Build the litestream-sqlite wheel from an already built extension, with the standard library.

    python3 python/build_wheel.py --lib dist/build/liblitestream.so --out dist

Invariants:
- The wheel is reproducible: the same inputs give the same bytes (entries sorted, fixed
  timestamps and permissions, fixed compression level), so its hash can be compared across runs.
- Its platform tag is what the library really needs: manylinux_<glibc>_<arch>, where <glibc> is
  the newest GLIBC_x.y symbol version the library imports (read with objdump -T) and <arch> comes
  from the ELF header. The library is loaded by SQLite, not imported by Python, so the wheel is
  py3-none (any CPython 3 or PyPy 3 whose sqlite3 can load extensions).
- The version is Cargo.toml's; the build refuses to run when litestream_sqlite.__version__
  disagrees with it.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))
import versions  # noqa: E402 - the one reader of the version numbers
DIST_NAME = "litestream-sqlite"
IMPORT_NAME = "litestream_sqlite"
LIBRARY_NAME = "liblitestream.so"
# ELF e_machine values of the architectures manylinux names.
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64"}
# Zip entries carry this date (zip cannot go before 1980) unless SOURCE_DATE_EPOCH says otherwise.
DEFAULT_DATE = (1980, 1, 2, 0, 0, 0)
ZIP_EPOCH = 315619200  # 1980-01-02 in Unix seconds
# The oldest Python that reads litestream_sqlite (positional-only parameters, PEP 570).
REQUIRES_PYTHON = ">=3.8"


def platform_tag(lib: Path) -> str:
    header = lib.read_bytes()[:20]
    if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        sys.exit("build_wheel: %s is not a 64-bit little-endian ELF library" % lib)
    machine = int.from_bytes(header[18:20], "little")
    if machine not in ELF_MACHINES:
        sys.exit("build_wheel: %s is for ELF machine %#x; accepted: %s" % (
            lib, machine, ", ".join(ELF_MACHINES.values())))
    try:
        symbols = subprocess.run(["objdump", "-T", str(lib)], check=True, text=True,
                                 capture_output=True).stdout
    except FileNotFoundError:
        sys.exit("build_wheel: objdump (binutils) is needed to read the glibc symbol versions")
    glibc = {tuple(int(x) for x in m) for m in re.findall(r"\bGLIBC_(\d+)\.(\d+)\b", symbols)}
    if not glibc:
        sys.exit("build_wheel: %s imports no GLIBC_ symbol versions: not a glibc library?" % lib)
    major, minor = max(glibc)
    return "manylinux_%d_%d_%s" % (major, minor, ELF_MACHINES[machine])


def metadata(version: str) -> str:
    readme = (HERE / "README.md").read_text()
    return "".join([
        "Metadata-Version: 2.1\n",
        "Name: %s\n" % DIST_NAME,
        "Version: %s\n" % version,
        "Summary: Replicate SQLite databases to S3 as Litestream 0.5 replicas, from inside the "
        "process (a loadable extension)\n",
        "License: Apache-2.0\n",
        "Keywords: sqlite,litestream,replication,s3,backup,extension\n",
        "Classifier: License :: OSI Approved :: Apache Software License\n",
        "Classifier: Operating System :: POSIX :: Linux\n",
        "Classifier: Programming Language :: Python :: 3\n",
        "Classifier: Topic :: Database\n",
        "Classifier: Typing :: Typed\n",
        "Requires-Python: %s\n" % REQUIRES_PYTHON,
        "Description-Content-Type: text/markdown\n",
        "\n",
        readme,
    ])


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d\n" % (name, digest, len(data))


def build(lib: Path, out: Path, date: tuple) -> Path:
    version = versions.cargo_version()
    if versions.python_version() != version:
        sys.exit("build_wheel: %s.__version__ is %r but Cargo.toml says %r: make them equal" % (
            IMPORT_NAME, versions.python_version(), version))
    tag = "py3-none-" + platform_tag(lib)
    dist_info = "%s-%s.dist-info" % (IMPORT_NAME, version)
    files = {  # name in the wheel -> (bytes, executable)
        "%s/__init__.py" % IMPORT_NAME: ((HERE / IMPORT_NAME / "__init__.py").read_bytes(), False),
        "%s/py.typed" % IMPORT_NAME: (b"", False),
        "%s/%s" % (IMPORT_NAME, LIBRARY_NAME): (lib.read_bytes(), True),
        "%s/METADATA" % dist_info: (metadata(version).encode(), False),
        "%s/WHEEL" % dist_info: ((
            "Wheel-Version: 1.0\nGenerator: %s python/build_wheel.py\nRoot-Is-Purelib: false\n"
            "Tag: %s\n" % (DIST_NAME, tag)).encode(), False),
        "%s/LICENSE" % dist_info: ((REPO / "LICENSE").read_bytes(), False),
    }
    record_name = "%s/RECORD" % dist_info
    record = "".join(record_line(n, files[n][0]) for n in sorted(files)) + record_name + ",,\n"
    files[record_name] = (record.encode(), False)

    out.mkdir(parents=True, exist_ok=True)
    wheel = out / ("%s-%s-%s.whl" % (IMPORT_NAME, version, tag))
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        # RECORD last, as the wheel spec recommends; everything else sorted
        for name in sorted(files, key=lambda n: (n == record_name, n)):
            data, executable = files[name]
            info = zipfile.ZipInfo(name, date_time=date)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so the permission bits below are honoured
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            zf.writestr(info, data, compresslevel=9)
    tmp.replace(wheel)
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", required=True, type=Path, help="the built liblitestream.so")
    parser.add_argument("--out", required=True, type=Path, help="folder for the .whl")
    args = parser.parse_args()
    date = DEFAULT_DATE
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        if not epoch.isdigit():
            sys.exit("build_wheel: SOURCE_DATE_EPOCH must be whole seconds since 1970, got %r"
                     % epoch)
        date = time.gmtime(max(int(epoch), ZIP_EPOCH))[:6]
    print(build(args.lib, args.out, date))


if __name__ == "__main__":
    main()
