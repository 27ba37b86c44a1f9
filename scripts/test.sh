#!/usr/bin/env bash
# The project's test command (README; CI runs it through .ci/run on a fresh clone).
#
#   scripts/test.sh [PYTEST_ARGS...]     e.g. scripts/test.sh -k roundtrip -x
#
# 1. installs what is missing: the pytest venv (${LITESTREAM_VENV_DIR:-<repo>/.venv}, from the
#    default python3, pinned tests/integration/requirements.txt) and the reference Litestream
#    (scripts/install-litestream.sh); SeaweedFS is installed by scripts/s3-server.sh;
# 2. cargo build --release (target/release/liblitestream.so), then cargo test --release
#    (same profile: the dependency tree is built once), then the fuzz targets for a bounded time
#    (scripts/fuzz.sh: cargo-fuzz on the nightly toolchain, each installed when missing);
# 3. packages that build into dist/ (scripts/package.sh: the wheel and the npm tarballs, no second
#    compile) and installs the other SQLite hosts (scripts/install-hosts.sh: better-sqlite3 and
#    sqlite3 for Node, Go with mattn/go-sqlite3; auditwheel), each only when missing;
# 4. starts SeaweedFS on a free loopback port with a throwaway state dir, SigV4 enforced;
# 5. runs the integration tests (pytest; "no tests collected" counts as a failure);
# 6. runs the host tests (tests/hosts: the packages installed as users install them, every host
#    replicating and restoring, the README's examples, one version everywhere);
# 7. runs the reliability suite's CI subset (tests/reliability: crash trials, S3 outage and faults,
#    file-replica faults, secrets);
# 8. stops the server on exit and exits non-zero if any phase failed. Prints the time per phase.
#
# Knobs: LITESTREAM_VENV_DIR, LITESTREAM_TOOLS_DIR (default ~/.cache/litestream-sqlite-tools),
# CARGO (cargo), LITESTREAM_SKIP_HOSTS=1 (no packages, no host tests), LITESTREAM_SKIP_RELIABILITY=1,
# LITESTREAM_FUZZ_SECONDS (per fuzz target, default 10), LITESTREAM_SKIP_FUZZ=1.
# Only 127.0.0.1 is ever contacted; AWS_* are forced to loopback test credentials below.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LITESTREAM_VENV_DIR:-$REPO/.venv}
CARGO=${CARGO:-cargo}
REQS=$REPO/tests/integration/requirements.txt
cd "$REPO"

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN

T_ALL=$(date +%s.%N)
TIMES=()
FAILED=() # "NAME|LOG" of each failed phase
# Each phase's output also goes to a log here; a failed phase's last lines are repeated after
# the timing table, so that the end of the output (all a CI excerpt may show) says why.
PHASE_LOGS=$(mktemp -d "${TMPDIR:-/tmp}/litestream-test-logs.XXXXXX")
PHASE_LOG=
TAIL_LINES=25
now() { date +%s.%N; }
phase_start() {
  T0=$(now); echo; echo "=== $1"
  PHASE_LOG=$PHASE_LOGS/$(printf '%s' "$1" | tr -c 'A-Za-z0-9' '-').log
  : >"$PHASE_LOG"
}
phase_end() { # NAME STATUS
  local dt; dt=$(awk -v a="$T0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')
  TIMES+=("$(printf '%-28s %7ss  %s' "$1" "$dt" "$2")")
  echo "=== $1: $2 in ${dt}s"
  case "$2" in ok*) ;; *) FAILED+=("$1|$PHASE_LOG") ;; esac
}
# logged CMD...: runs CMD with its output shown and kept in the phase's log; returns its status.
logged() {
  local rc
  set +e
  "$@" > >(tee -a "$PHASE_LOG") 2> >(tee -a "$PHASE_LOG" >&2)
  rc=$?
  set -e
  return $rc
}
summary() {
  echo; echo "=== timing"
  printf '  %s\n' "${TIMES[@]}"
  awk -v a="$T_ALL" -v b="$(now)" 'BEGIN{printf "  %-28s %7.1fs\n", "total", b-a}'
  local f
  for f in ${FAILED[@]+"${FAILED[@]}"}; do
    [ -s "${f#*|}" ] || continue
    echo; echo "=== why '${f%%|*}' failed (the last $TAIL_LINES lines of its output)"
    tail -n $TAIL_LINES "${f#*|}"
  done
}

# ---------------------------------------------------------------- 1. tools
phase_start "python venv"
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/pytest" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$REQS"
  echo "$want" >"$stamp"
fi
"$VENV/bin/python" -c 'import boto3, pytest; print("pytest", pytest.__version__, "boto3", boto3.__version__)'
phase_end "python venv" ok

phase_start "reference litestream"
LITESTREAM_BIN=$(bash "$REPO/scripts/install-litestream.sh" | tail -1)
env -u AWS_CA_BUNDLE "$LITESTREAM_BIN" version
export LITESTREAM_BIN
phase_end "reference litestream" ok

# ---------------------------------------------------------------- 2. build + unit tests
phase_start "cargo build --release"
if logged "$CARGO" build --release; then
  phase_end "cargo build --release" ok
else
  phase_end "cargo build --release" FAILED
  summary; exit 1
fi
export LITESTREAM_EXT=$REPO/target/release/liblitestream
if [ ! -f "$LITESTREAM_EXT.so" ]; then
  echo "cargo build --release produced no $LITESTREAM_EXT.so" >&2
  summary; exit 1
fi

phase_start "cargo test --release"
if logged "$CARGO" test --release; then phase_end "cargo test --release" ok
else phase_end "cargo test --release" FAILED; fi

# Coverage-guided fuzzing (scripts/fuzz.sh): a clean build of the fuzz crate (~50 s on 2 cores:
# it compiles the parsers and their 4 dependencies, not the SDK), then each target for
# LITESTREAM_FUZZ_SECONDS. Skipped for a focused run (pytest arguments) or LITESTREAM_SKIP_FUZZ=1.
if [ -z "${LITESTREAM_SKIP_FUZZ:-}" ] && [ $# -eq 0 ]; then
  phase_start "fuzz"
  if logged bash "$REPO/scripts/fuzz.sh" "${LITESTREAM_FUZZ_SECONDS:-10}"; then phase_end "fuzz" ok
  else phase_end "fuzz" FAILED; fi
fi

# ---------------------------------------------------------------- 3. packages + other hosts
RUN_HOSTS=1
[ -z "${LITESTREAM_SKIP_HOSTS:-}" ] || RUN_HOSTS=0
if [ $RUN_HOSTS = 1 ]; then
  phase_start "package"
  if LITESTREAM_LIB=$LITESTREAM_EXT.so logged bash "$REPO/scripts/package.sh"; then
    phase_end "package" ok
  else
    phase_end "package" FAILED; RUN_HOSTS=0
  fi
fi
if [ $RUN_HOSTS = 1 ]; then
  phase_start "host tools"
  if hosts_env=$(bash "$REPO/scripts/install-hosts.sh" node go auditwheel 2> >(tee -a "$PHASE_LOG" >&2)); then
    eval "$hosts_env"
    export LITESTREAM_NODE_HOSTS LITESTREAM_GO_GOPATH LITESTREAM_AUDITWHEEL
    phase_end "host tools" ok
  else
    phase_end "host tools" FAILED; RUN_HOSTS=0
  fi
fi

# ---------------------------------------------------------------- 4. S3 server
phase_start "seaweedfs start"
S3_STATE=$(mktemp -d "${TMPDIR:-/tmp}/litestream-test-s3.XXXXXX")
S3_PORT=$("$VENV/bin/python" "$REPO/pysupport/ports.py" s3)
S3_BUCKETS=test,litestream
export S3_PORT S3_STATE S3_BUCKETS S3_AUTH=1
stop_s3() {
  S3_PORT=$S3_PORT S3_STATE=$S3_STATE bash "$REPO/scripts/s3-server.sh" stop || true
  rm -rf "$S3_STATE"
}
trap stop_s3 EXIT
bash "$REPO/scripts/s3-server.sh" start >/dev/null
export S3_ENDPOINT=http://127.0.0.1:$S3_PORT
echo "S3_ENDPOINT=$S3_ENDPOINT (state $S3_STATE)"
phase_end "seaweedfs start" ok

# ---------------------------------------------------------------- 5. integration tests
phase_start "pytest tests/integration"
set +e
logged "$VENV/bin/pytest" tests/integration "$@"
rc=$?
set -e
case $rc in
  0) phase_end "pytest tests/integration" ok ;;
  5) phase_end "pytest tests/integration" "FAILED (no tests collected)" ;;
  *) phase_end "pytest tests/integration" "FAILED (exit $rc)" ;;
esac

# ---------------------------------------------------------------- 6. host tests
# With pytest arguments (a focused run) selecting none of them, "no tests collected" is fine.
if [ $RUN_HOSTS = 1 ]; then
  phase_start "pytest tests/hosts"
  set +e
  logged "$VENV/bin/pytest" tests/hosts "$@"
  rc=$?
  set -e
  case $rc in
    0) phase_end "pytest tests/hosts" ok ;;
    5) if [ $# -gt 0 ]; then phase_end "pytest tests/hosts" "ok (none selected)"
       else phase_end "pytest tests/hosts" "FAILED (no tests collected)"; fi ;;
    *) phase_end "pytest tests/hosts" "FAILED (exit $rc)" ;;
  esac
elif [ -z "${LITESTREAM_SKIP_HOSTS:-}" ]; then
  TIMES+=("$(printf '%-28s %7s   %s' "pytest tests/hosts" "-" "FAILED (not run: see above)")")
  FAILED+=("pytest tests/hosts|")
fi

# ---------------------------------------------------------------- 7. reliability (CI subset)
# Crash trials (20 SIGKILLs, 6 with TRUNCATE checkpoints), S3 server killed and restarted, random
# S3 faults through a proxy, read-only / full `file` replica (needs root for tmpfs; skipped
# otherwise), secrets scan. These start their own SeaweedFS servers on free loopback ports.
# The documented full runs: bench/README.md. Skipped when pytest arguments were given (a focused
# run) or LITESTREAM_SKIP_RELIABILITY=1.
if [ -z "${LITESTREAM_SKIP_RELIABILITY:-}" ] && [ $# -eq 0 ]; then
  phase_start "pytest tests/reliability"
  set +e
  logged "$VENV/bin/pytest" tests/reliability -q
  rc=$?
  set -e
  case $rc in
    0) phase_end "pytest tests/reliability" ok ;;
    5) phase_end "pytest tests/reliability" "FAILED (no tests collected)" ;;
    *) phase_end "pytest tests/reliability" "FAILED (exit $rc)" ;;
  esac
fi

summary
if [ ${#FAILED[@]} -gt 0 ]; then
  echo; echo "FAILED: $(printf '%s\n' "${FAILED[@]}" | cut -d'|' -f1 | paste -sd, | sed 's/,/, /g')"
  echo "each phase's whole output: $PHASE_LOGS"
  exit 1
fi
rm -rf "$PHASE_LOGS"
echo "all phases passed"
