"""A Rust application as the host: tests/rust_host (rusqlite linked to the system libsqlite3)
loads the extension, commits from two connections on two threads, syncs, stops and restores.
The restore must equal the source and the replica must be well formed."""
import subprocess

from pysupport.awsenv import child_env
from pysupport.ltx import check_s3_replica
from pysupport.paths import REPO
from pysupport.shell import assert_same_db

HOST_DIR = REPO / "tests" / "rust_host"
HOST_BIN = HOST_DIR / "target" / "release" / "litestream-rust-host"


def build_host():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=HOST_DIR, check=True, timeout=900)
    assert HOST_BIN.exists()


def test_rust_host_round_trip(ext, s3, bucket, tmp_path):
    build_host()
    src, out = tmp_path / "host.db", tmp_path / "restored.db"
    r = subprocess.run(
        [str(HOST_BIN), ext, str(src), str(out), "bucket=" + bucket, "path=rusthost",
         "endpoint=" + s3.endpoint, "sync-interval=100ms"],
        env=child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, "rust host failed:\n%s\n%s" % (r.stdout, r.stderr)
    lines = dict(l.split(" -> ", 1) for l in r.stdout.splitlines() if " -> " in l)
    assert lines["start"] == "started"
    assert lines["sync"] == lines["stop"] == lines["restore"]
    assert_same_db(src, out)
    check_s3_replica(s3.client, bucket, "rusthost")
