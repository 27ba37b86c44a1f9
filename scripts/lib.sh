# Sourced by the scripts in this folder: where their tools live and how they get there.
#
# Tools are installed from their registries under $LITESTREAM_TOOLS_DIR (default
# ${XDG_CACHE_HOME:-~/.cache}/litestream-sqlite-tools, a per-user cache that every clone uses),
# each once: an flock serialises parallel first runs, and a stamp file written last names the
# exact versions, so a changed pin or an interrupted install reinstalls.

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPTS_DIR/.." && pwd)
TOOLS_DIR=${LITESTREAM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/litestream-sqlite-tools}

# tool_venv DIR SPEC... : make sure the virtualenv DIR has exactly the pip specs SPEC installed.
tool_venv() {
  local dir=$1; shift
  local want="$*"
  mkdir -p "$(dirname "$dir")"
  (
    flock 9
    if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$want" ]; then
      echo "installing $want into $dir (first run only)" >&2
      rm -rf "$dir"
      "${PYTHON:-python3}" -m venv "$dir" >&2 || {
        echo "python3 -m venv failed: install python3-venv (Debian/Ubuntu) or set PYTHON" >&2
        exit 1
      }
      "$dir/bin/pip" install -q --disable-pip-version-check "$@" >&2
      echo "$want" >"$dir/.installed"
    fi
  ) 9>"$dir.lock"
}
