#!/usr/bin/env bash
# Installs the SQLite hosts the host tests (tests/hosts) load the extension into, each only when
# it is missing, and prints `export ...` lines saying where they are:
#
#   node     better-sqlite3 and the `sqlite3` npm package, built from source by `npm install`
#            (their prebuilt downloads come from outside the npm registry, so node-gyp compiles
#            them against the installed Node's headers) into <tools>/node-hosts-<versions>
#   go       Debian's golang-go, golang-github-mattn-go-sqlite3-dev and libsqlite3-dev (apt-get,
#            as root): mattn/go-sqlite3 built in GOPATH mode against the system SQLite
#   auditwheel  PyPI's auditwheel, which reads the wheel's library as pip's manylinux check does
#
#   scripts/install-hosts.sh [node] [go] [auditwheel]     (default: all three)
#
# Knobs: LITESTREAM_TOOLS_DIR [~/.cache/litestream-sqlite-tools]. A host that cannot be installed is an error that
# names it; nothing is skipped silently.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# better-sqlite3 12: version 13 needs Node 22 (it crashes on Node 20). 12.11.1 bundles SQLite
# 3.53.2 built with SQLITE_OMIT_PROGRESS_CALLBACK and SQLITE_OMIT_DEPRECATED, the case the
# extension's missing-routine check exists for. sqlite3 6.0.1: the callback-style driver.
NODE_HOST_PACKAGES=(better-sqlite3@12.11.1 sqlite3@6.0.1)
# auditwheel 6.4.2: the release the wheel's platform tag was checked with.
AUDITWHEEL_SPEC=auditwheel==6.4.2
# Debian's Go toolchain, the driver's source and the system SQLite's headers.
GO_DEBIAN_PACKAGES=(golang-go golang-github-mattn-go-sqlite3-dev libsqlite3-dev)
# Where Debian's golang-*-dev packages put Go sources (a GOPATH entry).
DEBIAN_GOPATH=/usr/share/gocode

install_node_hosts() {
  command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "install-hosts.sh node: node and npm are needed (Node.js 20 or later)" >&2; exit 1; }
  local dir=$TOOLS_DIR/node-hosts-$(echo "${NODE_HOST_PACKAGES[*]}" | tr ' @' '-_')
  local want="${NODE_HOST_PACKAGES[*]} node-$(node --version)"
  mkdir -p "$TOOLS_DIR"
  (
    flock 9
    if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$want" ]; then
      echo "building ${NODE_HOST_PACKAGES[*]} into $dir (first run only, a few minutes)" >&2
      rm -rf "$dir" && mkdir -p "$dir"
      echo '{"private": true}' >"$dir/package.json"
      # node-gyp compiles against the headers of the Node that runs it when they are installed
      # beside it (<prefix>/include/node); otherwise it would try to download them.
      local prefix; prefix=$(dirname "$(dirname "$(command -v node)")")
      if [ -f "$prefix/include/node/node.h" ]; then export npm_config_nodedir=$prefix; fi
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "${NODE_HOST_PACKAGES[@]}" >&2)
      echo "$want" >"$dir/.installed"
    fi
  ) 9>"$dir.lock"
  echo "export LITESTREAM_NODE_HOSTS=$dir/node_modules"
}

install_go_host() {
  local missing=()
  command -v go >/dev/null || missing+=(golang-go)
  [ -f "$DEBIAN_GOPATH/src/github.com/mattn/go-sqlite3/sqlite3.go" ] ||
    missing+=(golang-github-mattn-go-sqlite3-dev)
  [ -f /usr/include/sqlite3.h ] || missing+=(libsqlite3-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null ||
      { echo "install-hosts.sh go: install ${missing[*]} (Debian package names); no apt-get here" >&2; exit 1; }
    [ "$(id -u)" = 0 ] ||
      { echo "install-hosts.sh go: apt-get install ${missing[*]} needs root" >&2; exit 1; }
    echo "apt-get install ${GO_DEBIAN_PACKAGES[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${GO_DEBIAN_PACKAGES[@]}" >&2
  fi
  echo "export LITESTREAM_GO_GOPATH=$DEBIAN_GOPATH"
}

install_auditwheel() {
  tool_venv "$TOOLS_DIR/auditwheel" "$AUDITWHEEL_SPEC"
  echo "export LITESTREAM_AUDITWHEEL=$TOOLS_DIR/auditwheel/bin/auditwheel"
}

[ $# -gt 0 ] || set -- node go auditwheel
for host in "$@"; do
  case "$host" in
    node) install_node_hosts ;;
    go) install_go_host ;;
    auditwheel) install_auditwheel ;;
    *) echo "install-hosts.sh: unknown host '$host'; accepted: node, go, auditwheel" >&2; exit 2 ;;
  esac
done
