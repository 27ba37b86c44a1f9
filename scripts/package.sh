#!/usr/bin/env bash
# Builds the installable packages into dist/ from the release build of the extension:
#
#   dist/litestream_sqlite-<version>-py3-none-manylinux_<glibc>_<arch>.whl   (pip install)
#   dist/litestream-sqlite-<version>.tgz                                     (npm, the entry package)
#   dist/litestream-sqlite-linux-x64-<version>.tgz                           (npm, the library)
#
#   scripts/package.sh [--python] [--npm]      (default: both)
#
# Uses target/release/liblitestream.so as it is (LITESTREAM_LIB names another); runs
# `cargo build --release` only when there is none. The packaged copy is stripped of its symbol
# table (the dynamic symbols SQLite needs stay). Needs python3 and binutils (objdump, strip);
# --npm also needs npm. No network: the wheel is built with python/build_wheel.py (standard
# library), the npm tarballs with `npm pack`. The same inputs give the same bytes.
set -euo pipefail
# A failing command names itself: CI shows only the end of the output.
trap 'echo "package.sh: line $LINENO failed (exit $?): $BASH_COMMAND" >&2' ERR
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${CARGO:-cargo}
DIST=$REPO/dist
STAGE=$DIST/build
cd "$REPO"

want_python=0 want_npm=0
for arg in "$@"; do
  case "$arg" in
    --python) want_python=1 ;;
    --npm) want_npm=1 ;;
    *) echo "package.sh: unknown argument '$arg'; accepted: --python, --npm" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { want_python=1; want_npm=1; }

for tool in python3 objdump strip; do
  command -v "$tool" >/dev/null || { echo "package.sh needs $tool (binutils, python3)" >&2; exit 1; }
done
if [ $want_npm = 1 ] && ! command -v npm >/dev/null; then
  echo "package.sh --npm needs npm (Node.js); use --python to build only the wheel" >&2; exit 1
fi

VERSION=$(python3 scripts/versions.py)

LIB=${LITESTREAM_LIB:-$REPO/target/release/liblitestream.so}
if [ ! -f "$LIB" ]; then
  [ -z "${LITESTREAM_LIB:-}" ] || { echo "package.sh: LITESTREAM_LIB=$LIB does not exist" >&2; exit 1; }
  echo "no $LIB yet: cargo build --release" >&2
  "$CARGO" build --release
fi

rm -rf "$STAGE"
mkdir -p "$STAGE"
strip --strip-unneeded -o "$STAGE/liblitestream.so" "$LIB"
# Read whole, then searched: `objdump | grep -q` under pipefail fails when grep stops reading
# before objdump has written everything (SIGPIPE).
dynamic_symbols=$(objdump -T "$STAGE/liblitestream.so")
if ! grep -qw sqlite3_litestream_init <<<"$dynamic_symbols"; then
  echo "package.sh: $LIB does not export sqlite3_litestream_init" >&2; exit 1
fi
echo "library: $LIB -> $(du -k "$STAGE/liblitestream.so" | cut -f1) KiB stripped, version $VERSION"

if [ $want_python = 1 ]; then
  rm -f "$DIST"/litestream_sqlite-*.whl
  python3 python/build_wheel.py --lib "$STAGE/liblitestream.so" --out "$DIST"
fi

if [ $want_npm = 1 ]; then
  rm -f "$DIST"/litestream-sqlite-*.tgz
  for pkg in npm/litestream-sqlite npm/litestream-sqlite-linux-x64; do
    name=$(basename "$pkg")
    mkdir -p "$STAGE/npm/$name"
    cp "$pkg"/* "$STAGE/npm/$name/"
    cp LICENSE "$STAGE/npm/$name/"
  done
  cp README.md "$STAGE/npm/litestream-sqlite/README.md"
  cp "$STAGE/liblitestream.so" "$STAGE/npm/litestream-sqlite-linux-x64/"
  for name in litestream-sqlite-linux-x64 litestream-sqlite; do
    (cd "$STAGE/npm/$name" && npm pack --silent --pack-destination "$DIST" >/dev/null)
    echo "$DIST/$name-$VERSION.tgz"
  done
fi
