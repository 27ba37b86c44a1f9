#!/usr/bin/env bash
# The main job, end to end (README): build the extension, start an embedded S3 server (SeaweedFS on
# loopback), create a database with the sqlite3 shell, load the extension, configure it, start
# replication, write, litestream_sync(), stop, restore with litestream_restore() into a new file,
# and check that the copy has the same .dump and passes PRAGMA integrity_check. Prints OK.
#
#   scripts/demo.sh            (knobs: DEMO_DIR to keep the files, CARGO)
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true   # bash 5.2: keep '&' literal in ${x//a/b}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SQLITE3=${SQLITE3:-/usr/bin/sqlite3}
CARGO=${CARGO:-cargo}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN
cd "$REPO"

step() { echo; echo "--- $*"; }

# render TEMPLATE KEY=VALUE... : sql/TEMPLATE without comment lines, @KEY@ replaced by VALUE
render() {
  local text kv
  text=$(grep -v '^--' "$REPO/sql/$1"); shift
  for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
  printf '%s\n' "$text"
}
q() { printf "'%s'" "${1//\'/\'\'}"; }   # SQL string literal

step "build"
"$CARGO" build --release
EXT=$REPO/target/release/liblitestream
[ -f "$EXT.so" ] || { echo "no $EXT.so after cargo build --release" >&2; exit 1; }

step "start SeaweedFS (loopback, SigV4 enforced)"
WORK=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/litestream-demo.XXXXXX")}
mkdir -p "$WORK"
export S3_PORT S3_STATE=$WORK/s3 S3_AUTH=1 S3_BUCKETS=demo
S3_PORT=$(python3 "$REPO/tests/integration/free_port.py" s3)
cleanup() {
  bash "$REPO/scripts/s3-server.sh" stop || true
  [ -n "${DEMO_DIR:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
bash "$REPO/scripts/s3-server.sh" start >/dev/null
ENDPOINT=http://127.0.0.1:$S3_PORT
echo "S3 at $ENDPOINT, bucket demo; files in $WORK"

DB=$WORK/app.db
OUT=$WORK/restored.db
step "create $DB with the sqlite3 shell"
"$SQLITE3" -bail "$DB" "PRAGMA journal_mode=WAL; CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
  INSERT INTO notes(body) VALUES ('written before replication started');"

step "load, configure, start, write, litestream_sync(), stop"
CONFIG=""
for kv in bucket=demo path=app.db "endpoint=$ENDPOINT" region=us-east-1 \
          access-key-id=test secret-access-key=testtesttest sync-interval=100ms; do
  CONFIG+="SELECT litestream_configure($(q "${kv%%=*}"), $(q "${kv#*=}")); "
done
render replicate.sql "EXT=$EXT" "CONFIG=$CONFIG" "WORKLOAD=.read $REPO/sql/workload.sql" \
  SYNC_TIMEOUT_MS=30000 | "$SQLITE3" -bail "$DB"

step "litestream_restore() into $OUT"
ARGS="$(q "$OUT"), $(q "{\"url\": \"s3://demo/app.db?endpoint=$ENDPOINT\"}")"
render restore.sql "EXT=$EXT" "CONFIG=" "ARGS=$ARGS" | "$SQLITE3" -bail :memory:

step "compare"
if ! cmp -s <("$SQLITE3" "$DB" .dump) <("$SQLITE3" "$OUT" .dump); then
  echo "MISMATCH: .dump of $OUT differs from $DB" >&2; exit 1
fi
check=$("$SQLITE3" "$OUT" 'PRAGMA integrity_check;')
[ "$check" = ok ] || { echo "integrity_check of $OUT: $check" >&2; exit 1; }
rows=$("$SQLITE3" "$OUT" 'SELECT (SELECT count(*) FROM notes) + (SELECT count(*) FROM items);')
echo "restored copy: same .dump as the source, integrity_check ok, $rows rows"
echo OK
