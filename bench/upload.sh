#!/usr/bin/env bash
# The upload benchmark in one command: builds the extension and its uploader example,
# then runs bench/upload.py (tables on stdout, JSON in bench/out/).
#
#   bench/upload.sh                      # default run: 256 MiB object, 256 MiB database (~20 min)
#   bench/upload.sh --rss-db-mib 1100    # the documented run: snapshot RSS with a >= 1 GiB database
#   bench/upload.sh --repeat 1 --concurrency 1,5 --part-mib 5,50 --skip latency   # a quick look
#
# Uses the pytest venv (${LITESTREAM_VENV_DIR:-<repo>/.venv}, created as scripts/test.sh does) for
# boto3, and scripts/s3-server.sh for SeaweedFS. Loopback only.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LITESTREAM_VENV_DIR:-$REPO/.venv}
cd "$REPO"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_CA_BUNDLE
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import boto3' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r tests/integration/requirements.txt
fi
nice -n 10 cargo build --release --lib --example s3_upload
exec "$VENV/bin/python" bench/upload.py "$@"
