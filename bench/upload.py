#!/usr/bin/env python3
"""Upload benchmark: the extension's uploader against the same server's raw ingest.

    bench/upload.sh [options]            (builds, then runs this with the pytest venv's python)

1. throughput: one object of --size-mib through the extension's own uploader
   (target/release/examples/s3_upload: litestream::s3, the code the replicator runs) and through
   boto3's managed upload (the same part size and concurrency, checksums only when required, as
   ours with a custom endpoint), side by side, alternating, --repeat times each; medians and the
   ratio ours / boto3, for concurrency 1, 2, 5, 10 × part size 5, 10, 50, 100 MiB;
2. the same through a delaying proxy (--rtt-ms round trip on loopback; `tc netem` is not available
   on this kernel), to show concurrency hiding latency;
3. peak RSS of a /usr/bin/python3 host while the extension snapshots a --rss-db-mib database
   (the first sync of litestream_start()), against part-size × concurrency.

Prints tables and writes everything to bench/out/upload-<UTC time>.json. Only 127.0.0.1 is used:
its own SeaweedFS (scripts/s3-server.sh, fresh state, SigV4) unless S3_ENDPOINT is set.
Performance is measured here, never asserted in tests.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport.awsenv import child_env, require_loopback  # noqa: E402
from pysupport.paths import BENCH_OUT, UPLOADER, extension_path  # noqa: E402
from pysupport.pyhost import PyHost  # noqa: E402
from pysupport.report import machine_info  # noqa: E402
from pysupport.s3client import s3_client  # noqa: E402
from pysupport.s3proxy import S3Proxy  # noqa: E402
from pysupport.s3server import S3Server  # noqa: E402
from pysupport.shell import run_sqlite_shell  # noqa: E402

MIB = 1 << 20
BUCKET = "bench"


# ---------------------------------------------------------------- the boto3 side (child process)

def boto_child(endpoint, key, path, part, concurrency):
    """Runs in its own process (no GIL shared with the proxy): upload, print JSON."""
    import resource

    from boto3.s3.transfer import TransferConfig
    s3 = s3_client(endpoint, request_checksum_calculation="when_required",
                   response_checksum_validation="when_required",
                   max_pool_connections=max(10, concurrency), retries={"max_attempts": 5})
    tc = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                        max_concurrency=concurrency, use_threads=True)
    t0 = time.perf_counter()
    s3.upload_file(path, BUCKET, key, Config=tc)
    secs = time.perf_counter() - t0
    print(json.dumps({"ok": True, "seconds": secs,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


# ---------------------------------------------------------------- runners

def run_ours(endpoint, key, path, part_mib, conc):
    p = subprocess.run([str(UPLOADER), "s3://%s/x?endpoint=%s" % (BUCKET, endpoint), key, str(path),
                        "part-size=%dMB" % part_mib, "concurrency=%d" % conc],
                       capture_output=True, text=True, env=child_env(), timeout=3600)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if not r.get("ok"):
        raise RuntimeError("s3_upload failed: %s" % r)
    return r


def run_boto(endpoint, key, path, part_mib, conc):
    p = subprocess.run([sys.executable, __file__, "--boto-child", endpoint, key, str(path),
                        str(part_mib * MIB), str(conc)], capture_output=True, text=True,
                       env=child_env(), timeout=3600)
    if p.returncode != 0:
        raise RuntimeError("boto3 upload failed: %s" % p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def throughput(server, blob, size, concs, parts, repeat, rtt_ms):
    label = "%d ms" % rtt_ms
    rows = []
    for conc in concs:
        # A fresh server per row: SeaweedFS keeps overwritten data until a vacuum.
        endpoint = server.fresh()
        proxy = S3Proxy(server.port, delay_ms=rtt_ms / 2).start() if rtt_ms else None
        target = proxy.url if proxy else endpoint
        try:
            for part in parts:
                ours, boto = [], []
                for i in range(repeat):
                    # alternate who goes first, so drift in the machine's load hits both alike
                    order = [("ours", ours), ("boto3", boto)] if i % 2 == 0 else [("boto3", boto), ("ours", ours)]
                    for who, acc in order:
                        fn = run_ours if who == "ours" else run_boto
                        r = fn(target, "tp/%s" % who, blob, part, conc)
                        acc.append(size / r["seconds"] / MIB)
                row = {"rtt": label, "concurrency": conc, "part_mib": part,
                       "parts": -(-size // (part * MIB)),
                       "ours_mib_s": statistics.median(ours), "boto3_mib_s": statistics.median(boto),
                       "ours_runs": ours, "boto3_runs": boto}
                row["ratio"] = row["ours_mib_s"] / row["boto3_mib_s"]
                rows.append(row)
                print("  %-6s conc %2d  part %3d MiB (%3d parts)  ours %7.1f MiB/s  boto3 %7.1f MiB/s  ratio %.2f"
                      % (label, conc, part, row["parts"], row["ours_mib_s"], row["boto3_mib_s"], row["ratio"]),
                      flush=True)
        finally:
            if proxy:
                proxy.stop()
    return rows


# The host's RSS before the snapshot (extension loaded, configured) and its peak during it.
RSS_SNIPPET = """
c = connect(P["db"])
configure(c, P["config"])
base = hostside.proc_self()["vmrss_kib"]
t0 = time.time()
one(c, "SELECT litestream_start()")
one(c, "SELECT litestream_sync(3600000)")
secs = time.time() - t0
st = status(c)
peak = hostside.vm_hwm_kib()
one(c, "SELECT litestream_stop()")
result = {"base_kib": base, "peak_kib": peak, "seconds": secs, "status": st}
"""


def make_db(path, mib):
    sql = ("PRAGMA journal_mode=WAL; PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);"
           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < %d) "
           "INSERT INTO t(b) SELECT randomblob(100000) FROM n; PRAGMA wal_checkpoint(TRUNCATE);"
           % (mib * MIB // 100000))
    run_sqlite_shell(path, sql + "\n", timeout=3600)


def rss(server, workdir, db_mib, combos):
    db = workdir / "rss.db"
    make_db(db, db_mib)
    rows = []
    for i, (part, conc) in enumerate(combos):
        endpoint = server.fresh()
        shutil.rmtree(workdir / ".rss.db-litestream", ignore_errors=True)
        cfg = [("url", "s3://%s/rss-%d-%d?endpoint=%s" % (BUCKET, i, int(time.time()), endpoint)),
               ("part-size", "%dMB" % part), ("concurrency", str(conc))]
        r = PyHost(extension_path()).run(RSS_SNIPPET, timeout=7200, db=str(db), config=cfg)
        size = os.path.getsize(db)
        row = {"db_mib": size / MIB, "part_mib": part, "concurrency": conc,
               "part_x_conc_mib": part * conc,
               "base_rss_mib": r["base_kib"] / 1024, "peak_rss_mib": r["peak_kib"] / 1024,
               "growth_mib": (r["peak_kib"] - r["base_kib"]) / 1024,
               "snapshot_seconds": r["seconds"], "mib_s": size / MIB / r["seconds"],
               "multipart_uploads": r["status"].get("multipart_uploads")}
        rows.append(row)
        print("  db %6.0f MiB  part %3d MiB × conc %2d = %4d MiB   RSS %5.0f → %5.0f MiB (+%4.0f)   %5.1f s  %6.1f MiB/s"
              % (row["db_mib"], part, conc, part * conc, row["base_rss_mib"], row["peak_rss_mib"],
                 row["growth_mib"], row["snapshot_seconds"], row["mib_s"]), flush=True)
    db.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.rmtree(workdir / ".rss.db-litestream", ignore_errors=True)
    return rows


class Server:
    """The S3 server under test: S3_ENDPOINT if set, else our own SeaweedFS, started afresh (new
    port, new data directory) by fresh() and warmed up untimed: a new SeaweedFS grows its volumes
    on the first writes, which takes seconds that neither client should be charged."""

    def __init__(self, work, external=None):
        self.work = work
        self.external = external
        self.server = None
        self.port = None
        self.warm = work / "warm.bin"
        self.warm.write_bytes(os.urandom(16 * MIB))

    def fresh(self):
        if self.external:
            endpoint = require_loopback(self.external).rstrip("/")
        else:
            self.stop()
            self.server = S3Server(tempfile.mkdtemp(prefix="s3-", dir=self.work),
                                   buckets=(BUCKET,)).start()
            endpoint = self.server.endpoint
        self.port = int(endpoint.rsplit(":", 1)[1])
        s3 = s3_client(endpoint)
        try:
            s3.create_bucket(Bucket=BUCKET)
        except Exception:  # noqa: BLE001 - exists already
            pass
        run_ours(endpoint, "warm/ours", self.warm, 5, 2)
        run_boto(endpoint, "warm/boto3", self.warm, 5, 2)
        return endpoint

    def stop(self):
        if self.server:
            self.server.stop(remove_state=True)
            self.server = None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256, help="object size for throughput (256)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per client and setting (2; median)")
    ap.add_argument("--rtt-ms", type=int, default=20, help="round trip added by the proxy (20; 0 = skip)")
    ap.add_argument("--rss-db-mib", type=int, default=256,
                    help="database size for the RSS runs (256; the documented run uses 1100)")
    ap.add_argument("--concurrency", default="1,2,5,10")
    ap.add_argument("--part-mib", default="5,10,50,100")
    ap.add_argument("--skip", default="", help="comma list of: throughput, latency, rss")
    ap.add_argument("--boto-child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.boto_child:
        ep, key, path, part, conc = a.boto_child
        return boto_child(ep, key, path, int(part), int(conc))

    skip = set(filter(None, a.skip.split(",")))
    concs = [int(x) for x in a.concurrency.split(",")]
    parts = [int(x) for x in a.part_mib.split(",")]
    BENCH_OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="litestream-bench-"))
    result = {"machine": machine_info(), "settings": vars(a), "throughput": [], "latency": [], "rss": []}
    server = Server(work, os.environ.get("S3_ENDPOINT"))
    result["server"] = {"external": server.external, "kind": "SeaweedFS 4.48 (weed mini)"}
    try:
        blob = work / "blob.bin"
        with open(blob, "wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(MIB))
        size = a.size_mib * MIB
        print("machine: %s" % json.dumps(result["machine"]))
        if "throughput" not in skip:
            print("\nthroughput, loopback, %d MiB object (median of %d):" % (a.size_mib, a.repeat))
            result["throughput"] = throughput(server, blob, size, concs, parts, a.repeat, 0)
        if "latency" not in skip and a.rtt_ms > 0:
            print("\nthroughput through a %d ms round-trip delay proxy (median of %d):" % (a.rtt_ms, a.repeat))
            result["latency"] = throughput(server, blob, size, concs, parts, a.repeat, a.rtt_ms)
        blob.unlink()
        if "rss" not in skip:
            combos = [(5, 1), (5, 5), (5, 10), (10, 5), (50, 2), (50, 5), (100, 5)]
            print("\npeak RSS of a /usr/bin/python3 host snapshotting a %d MiB database:" % a.rss_db_mib)
            result["rss"] = rss(server, work, a.rss_db_mib, combos)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = BENCH_OUT / ("upload-%s.json" % stamp)
        path.write_text(json.dumps(result, indent=2))
        print("\nwrote %s" % path)
    print_tables(result)


def print_tables(r):
    for name in ("throughput", "latency"):
        rows = r[name]
        if not rows:
            continue
        print("\n%s (MiB/s, ours / boto3 = ratio)" % name)
        concs = sorted({x["concurrency"] for x in rows})
        parts = sorted({x["part_mib"] for x in rows})
        print("%-12s" % "part \\ conc" + "".join("%24d" % c for c in concs))
        for p in parts:
            cells = []
            for c in concs:
                x = next((x for x in rows if x["concurrency"] == c and x["part_mib"] == p), None)
                cells.append("%24s" % ("%.0f / %.0f = %.2f" % (x["ours_mib_s"], x["boto3_mib_s"], x["ratio"]) if x else "-"))
            print("%-12s" % ("%d MiB" % p) + "".join(cells))
    if r["rss"]:
        print("\npeak RSS while snapshotting (MiB)")
        print("%8s %6s %10s %10s %10s %8s %8s" % ("part", "conc", "part×conc", "base", "peak", "growth", "MiB/s"))
        for x in r["rss"]:
            print("%8d %6d %10d %10.0f %10.0f %8.0f %8.1f" % (x["part_mib"], x["concurrency"], x["part_x_conc_mib"],
                                                           x["base_rss_mib"], x["peak_rss_mib"], x["growth_mib"], x["mib_s"]))


if __name__ == "__main__":
    main()
