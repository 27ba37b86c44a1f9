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

Server: S3_ENDPOINT (a running loopback server accepting test / testtesttest), otherwise
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from pysupport import reference  # noqa: E402
from pysupport.awsenv import child_env, require_loopback  # noqa: E402
from pysupport.extension import config_sql, s3_config, s3_url  # noqa: E402
from pysupport.paths import SQLITE3, extension_path  # noqa: E402
from pysupport.s3client import empty_prefix, s3_client  # noqa: E402
from pysupport.s3server import S3Server  # noqa: E402
from pysupport.shell import run_sqlite_shell  # noqa: E402

# Every step is a process that may take minutes on a 1 GiB database.
STEP_TIMEOUT_S = 3600


def timed(args, stdin=None, reference_binary=False):
    """Wall seconds and peak RSS (MiB) of a process, via /usr/bin/time."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "@@maxrss=%M", *map(str, args)], input=stdin,
                       text=True, capture_output=True, timeout=STEP_TIMEOUT_S,
                       env=reference.reference_env() if reference_binary else child_env())
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
    return run_sqlite_shell(db, "SELECT count(*), sum(id), total(length(b)), "
                            "(SELECT group_concat(v) FROM (SELECT v FROM t ORDER BY id DESC LIMIT 50)) FROM t;\n"
                            ).strip()


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

    ext = extension_path()
    if not Path(ext + ".so").exists():
        sys.exit("build first: cargo build --release")
    ls_bin = reference.litestream_bin()
    version = reference.version(ls_bin)

    work = Path(a.work or tempfile.mkdtemp(prefix="bench-restore-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    endpoint = os.environ.get("S3_ENDPOINT")
    bucket = "bench"
    if endpoint:
        endpoint = require_loopback(endpoint).rstrip("/")
        bucket = os.environ.get("BENCH_BUCKET", "test")
    else:
        server = S3Server(work / "s3", buckets=(bucket,), port=a.s3_port or None).start()
        endpoint = server.endpoint
    path = "restore-bench-%s" % uuid.uuid4().hex[:8]
    ours_url = s3_url(bucket, path, endpoint)
    ref_url = reference.reference_url(bucket, path, endpoint)
    try:
        # ---- the source database and its replica
        src = work / "src.db"
        rows = a.db_mib * 1024 * 1024 // 4096
        # No TRUNCATE checkpoint: after one, the replicator re-snapshots the whole database at
        # the next write, and the replica would hold several full copies instead of the one
        # snapshot + small files this benchmark is about.
        cfg = s3_config(bucket, path, endpoint, sync_interval="10ms", levels="off",
                        snapshot_interval="0", truncate_page_n="off")
        # One sqlite3 process creates the data and then replicates it, so that the WAL the
        # replicator starts from is the one SQLite keeps using.
        script = ["PRAGMA journal_mode=WAL;",
                  "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, b BLOB);",
                  "INSERT INTO t(v, b) SELECT value, randomblob(3900) FROM generate_series(1, %d);" % rows,
                  "SELECT 'created=' || total_changes();",
                  '.load "%s"' % ext, ".output /dev/null"]
        script += [config_sql(cfg)]
        script += ["SELECT litestream_start();", "SELECT litestream_sync(3600000);",
                   ".output stdout", "SELECT 'snapshot=' || litestream_sync();", ".output /dev/null"]
        for i in range(a.l0):
            # A few changed pages per file: rows spread over the whole database.
            script.append("UPDATE t SET v = v + 1, b = randomblob(3900) WHERE id IN (%d, %d, %d);"
                          % (1 + (i * 7919) % rows, 1 + (i * 104729) % rows, rows - i % rows))
            script.append("SELECT litestream_sync(60000);")
        script += [".output stdout", "SELECT 'txid=' || litestream_stop();"]
        t0 = time.monotonic()
        out = run_sqlite_shell(src, "\n".join(script) + "\n", timeout=STEP_TIMEOUT_S)
        t_replicate = time.monotonic() - t0
        txid = re.search(r"txid=([0-9a-f]{16})", out).group(1)
        listing = json.loads(reference.run_reference(ls_bin, "ltx", "-level", "all", "-json", ref_url,
                                                     timeout=STEP_TIMEOUT_S).stdout)
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
            "litestream": lambda o: timed([ls_bin, "restore", "-o", o, ref_url], reference_binary=True),
            "litestream+check": lambda o: timed([ls_bin, "restore", "-integrity-check", "full", "-o", o,
                                                 ref_url], reference_binary=True),
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
        if server:  # our own server goes away with its state; a shared one is cleaned
            server.stop(remove_state=True)
        else:
            try:
                empty_prefix(s3_client(endpoint), bucket, path + "/")
            except ImportError:
                print("boto3 missing: the benchmark's objects stay under %s/%s/" % (bucket, path))
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
