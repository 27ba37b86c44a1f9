#!/usr/bin/env python3
"""Restore benchmark: our litestream_restore() against `litestream restore` (0.5.17) on the same
replica, side by side in one run, printed as ratios.

The replica is written by our extension and is what a long-running database accumulates between
compactions: one full snapshot (the database, L0 TXID 1) plus N small L0 files (a few changed
pages each). Compaction and level-9 snapshots are off while it is built, so the restore really has
to apply N+1 files. Both restores then run R times, alternating, from the same bucket; each
output is checked (ours and Litestream's must be byte-identical, and agree with the source).

    bench/restore/run.py                       # default: 64 MiB database + 200 L0 files, 3 rounds
    bench/restore/run.py --db-mib 1024 --l0 1000 --rounds 3     # the documented full run

Server: S3_ENDPOINT (a running loopback server accepting AWS_ACCESS_KEY_ID/SECRET), otherwise
SeaweedFS is started through scripts/s3-server.sh on --s3-port with a throwaway state
directory and stopped at the end. Needs target/release/liblitestream.so (cargo build --release),
/usr/bin/sqlite3 and the reference binary (LITESTREAM_BIN, else install-litestream.sh).

Notes on fairness: our restore always runs PRAGMA integrity_check before it renames the file into
place (a project invariant); `litestream restore` does not unless given -integrity-check, so both
variants of Litestream are timed. Times are wall clock of the whole process (sqlite3 loading the
extension, or the litestream binary), and peak RSS comes from /usr/bin/time.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
SQLITE3 = "/usr/bin/sqlite3"
AWS = {"AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
       "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testtesttest"),
       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def env(drop_ca=False):
    e = dict(os.environ)
    e.update(AWS)
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        e.pop(k, None)
    if drop_ca:
        e.pop("AWS_CA_BUNDLE", None)
    return e


def loopback(url):
    if not re.match(r"^http://(127\.\d+\.\d+\.\d+|localhost):\d+/?$", url):
        sys.exit("refusing non-loopback S3 endpoint %r" % url)
    return url.rstrip("/")


def sh(args, stdin=None, timeout=3600, drop_ca=False):
    p = subprocess.run(args, input=stdin, text=True, capture_output=True, timeout=timeout,
                       env=env(drop_ca))
    if p.returncode != 0:
        sys.exit("%s failed (%d):\n%s\n%s" % (" ".join(map(str, args))[:300], p.returncode,
                                              p.stdout[-2000:], p.stderr[-2000:]))
    return p.stdout


def timed(args, stdin=None, drop_ca=False):
    """Wall seconds and peak RSS (MiB) of a process, via /usr/bin/time."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "@@maxrss=%M", *map(str, args)], input=stdin,
                       text=True, capture_output=True, env=env(drop_ca))
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("%s failed (%d):\n%s\n%s" % (args[0], p.returncode, p.stdout[-2000:], p.stderr[-3000:]))
    rss = int(re.search(r"@@maxrss=(\d+)", p.stderr).group(1)) / 1024
    return wall, rss


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(db):
    return sh([SQLITE3, str(db), "SELECT count(*), sum(id), total(length(b)), "
               "(SELECT group_concat(v) FROM (SELECT v FROM t ORDER BY id DESC LIMIT 50)) FROM t;"]).strip()


# Deletes the benchmark's objects from a shared server (boto3 if available, else left alone).
CLEANUP = r"""
import sys
try:
    import boto3
except ImportError:
    sys.exit(0)
ep, bucket, prefix = sys.argv[1:4]
c = boto3.client("s3", endpoint_url=ep, region_name="us-east-1")
keys = [o["Key"] for p in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in p.get("Contents", [])]
for i in range(0, len(keys), 1000):
    c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db-mib", type=int, default=64, help="database size in MiB (full run: 1024)")
    ap.add_argument("--l0", type=int, default=200, help="small L0 files after the snapshot (full run: 1000)")
    ap.add_argument("--rounds", type=int, default=3, help="restores of each kind, alternating")
    ap.add_argument("--s3-port", type=int, default=0,
                    help="base port for our own SeaweedFS (default: a free one)")
    ap.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()

    ext = REPO / "target" / "release" / "liblitestream"
    if not ext.with_suffix(".so").exists():
        sys.exit("build first: cargo build --release")
    ls_bin = os.environ.get("LITESTREAM_BIN") or sh(
        ["bash", str(SCRIPTS / "install-litestream.sh")]).strip().splitlines()[-1]
    version = sh([ls_bin, "version"], drop_ca=True).strip()

    work = Path(a.work or tempfile.mkdtemp(prefix="bench-restore-"))
    work.mkdir(parents=True, exist_ok=True)
    server_env = None
    endpoint = os.environ.get("S3_ENDPOINT")
    bucket = "bench"
    if endpoint:
        endpoint = loopback(endpoint)
        bucket = os.environ.get("BENCH_BUCKET", "test")
    else:
        if not a.s3_port:
            sys.path.insert(0, str(REPO / "tests" / "integration"))
            from free_port import free_s3_port  # noqa: PLC0415 - shared helper of the test suite
            a.s3_port = free_s3_port()
        server_env = env()
        server_env.update(S3_PORT=str(a.s3_port), S3_STATE=str(work / "s3"), S3_AUTH="1",
                          S3_BUCKETS=bucket)
        subprocess.run(["bash", str(SCRIPTS / "s3-server.sh"), "start"], env=server_env,
                       check=True, capture_output=True, timeout=600)
        endpoint = "http://127.0.0.1:%d" % a.s3_port
    path = "restore-bench-%s" % uuid.uuid4().hex[:8]
    ours_url = "s3://%s/%s?endpoint=%s" % (bucket, path, endpoint)
    ref_url = "s3://%s/%s?endpoint=%s&forcePathStyle=true&region=us-east-1" % (bucket, path, endpoint)
    try:
        # ---- the source database and its replica
        src = work / "src.db"
        rows = a.db_mib * 1024 * 1024 // 4096
        cfg = [("bucket", bucket), ("path", path), ("endpoint", endpoint), ("region", "us-east-1"),
               ("force-path-style", "true"), ("access-key-id", AWS["AWS_ACCESS_KEY_ID"]),
               ("secret-access-key", AWS["AWS_SECRET_ACCESS_KEY"]), ("sync-interval", "10ms"),
               ("levels", "off"), ("snapshot-interval", "0"),
               # No TRUNCATE checkpoint: after one, the replicator currently re-snapshots the
               # whole database at the next write, and the replica would hold several full
               # copies instead of the one snapshot + small files this benchmark is about.
               ("truncate-page-n", "off")]
        # One sqlite3 process creates the data and then replicates it, so that the WAL the
        # replicator starts from is the one SQLite keeps using.
        script = ["PRAGMA journal_mode=WAL;",
                  "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, b BLOB);",
                  "INSERT INTO t(v, b) SELECT value, randomblob(3900) FROM generate_series(1, %d);" % rows,
                  "SELECT 'created=' || total_changes();",
                  '.load "%s"' % ext, ".output /dev/null"]
        script += ["SELECT litestream_configure('%s', '%s');" % kv for kv in cfg]
        script += ["SELECT litestream_start();", "SELECT litestream_sync(3600000);",
                   ".output stdout", "SELECT 'snapshot=' || litestream_sync();", ".output /dev/null"]
        for i in range(a.l0):
            # A few changed pages per file: rows spread over the whole database.
            script.append("UPDATE t SET v = v + 1, b = randomblob(3900) WHERE id IN (%d, %d, %d);"
                          % (1 + (i * 7919) % rows, 1 + (i * 104729) % rows, rows - i % rows))
            script.append("SELECT litestream_sync(60000);")
        script += [".output stdout", "SELECT 'txid=' || litestream_stop();"]
        t0 = time.monotonic()
        out = sh([SQLITE3, "-bail", "-cmd", ".timeout 10000", str(src)], stdin="\n".join(script) + "\n")
        t_replicate = time.monotonic() - t0
        txid = re.search(r"txid=([0-9a-f]{16})", out).group(1)
        listing = json.loads(sh([ls_bin, "ltx", "-level", "all", "-json", ref_url], drop_ca=True))
        n_files = len(listing)
        replica_bytes = sum(f["size"] for f in listing)
        src_size = src.stat().st_size
        src_fp = fingerprint(src)
        print("replica: %d files, %.1f MiB (database %.1f MiB, TXID %s); built in %.1f s"
              % (n_files, replica_bytes / 2**20, src_size / 2**20, txid, t_replicate), flush=True)

        # ---- restores, alternating
        kinds = {
            "ours": lambda o: timed([SQLITE3, "-bail", ":memory:"], stdin=(
                '.load "%s"\nSELECT litestream_restore(\'%s\', json_object(\'url\', \'%s\'));\n'
                % (ext, o, ours_url))),
            "litestream": lambda o: timed([ls_bin, "restore", "-o", o, ref_url], drop_ca=True),
            "litestream+check": lambda o: timed([ls_bin, "restore", "-integrity-check", "full", "-o", o,
                                                 ref_url], drop_ca=True),
        }
        results = {k: [] for k in kinds}
        digests = {}
        for r in range(a.rounds):
            for kind, run in kinds.items():
                o = work / ("out-%s-%d.db" % (kind.replace("+", "-"), r))
                wall, rss = run(o)
                results[kind].append((wall, rss))
                digests.setdefault(kind, sha256(o))
                if r == 0 and kind == "ours":
                    assert fingerprint(o) == src_fp, "our restore differs from the source"
                o.unlink()
                print("  round %d %-17s %7.2f s  %6.0f MiB RSS" % (r + 1, kind, wall, rss), flush=True)
        assert len(set(digests.values())) == 1, "restored files differ: %s" % digests

        med = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
        rss = {k: max(m for _, m in v) for k, v in results.items()}
        mib = src_size / 2**20
        print()
        print("restore of %.0f MiB database + %d L0 files (%d objects, %.0f MiB), median of %d:"
              % (mib, a.l0, n_files, replica_bytes / 2**20, a.rounds))
        for k in kinds:
            print("  %-17s %7.2f s  %6.1f MiB/s  peak RSS %5.0f MiB" % (k, med[k], mib / med[k], rss[k]))
        print("  ratio litestream / ours:        %.2fx" % (med["litestream"] / med["ours"]))
        print("  ratio litestream+check / ours:  %.2fx  (both verify integrity)"
              % (med["litestream+check"] / med["ours"]))
        print("  %s; outputs byte-identical (sha256 %s…)" % (version, next(iter(digests.values()))[:12]))
        if a.json:
            Path(a.json).write_text(json.dumps({
                "db_mib": mib, "l0_files": a.l0, "objects": n_files, "replica_bytes": replica_bytes,
                "rounds": a.rounds, "median_seconds": med, "peak_rss_mib": rss,
                "ratio_litestream_over_ours": med["litestream"] / med["ours"],
                "ratio_litestream_check_over_ours": med["litestream+check"] / med["ours"],
                "litestream_version": version}, indent=2))
    finally:
        if not server_env:  # our own server goes away with its state; a shared one is cleaned
            sh([sys.executable, "-c", CLEANUP, endpoint, bucket, path + "/"])
        if server_env:
            subprocess.run(["bash", str(SCRIPTS / "s3-server.sh"), "stop"], env=server_env,
                           capture_output=True, timeout=120)
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
