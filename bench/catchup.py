#!/usr/bin/env python3
"""Catch-up: how fast a backlog of WAL reaches S3, against the raw ingest rate of the same server.

    .venv/bin/python bench/catchup.py                # 512 MiB backlog, 5 MiB parts x 5, 3 rounds
    .venv/bin/python bench/catchup.py --mb 256 --part-mib 5,10 --concurrency 2,5 --repeat 2

Each round runs both, alternating, against one SeaweedFS on loopback (SigV4, plain HTTP):

    ours  `bench/host.py catchup`: a database is replicated and stopped, --mb MiB of incompressible
          1 MiB transactions go into its WAL with nothing checkpointing, then
          litestream_start() + litestream_sync() are timed: reading the WAL, encoding the L0 files
          (LZ4), uploading them, confirming them.
    raw   boto3's managed upload (`upload_file`, threads, checksums only when required) of one
          file as large as everything ours stored, with the same part size and concurrency: the
          server's ingest rate for those bytes, measured in the same run.

Reported per configuration: the median MiB/s of bytes stored (ours: the L0 files written during
catch-up; raw: the file), ours / raw, the backlog's own rate (WAL bytes / seconds), the
extension's thread CPU and the host's peak RSS. JSON in bench/out/catchup-<UTC>.json.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport.paths import extension_path  # noqa: E402
from pysupport.pyhost import run_program  # noqa: E402
from pysupport.s3client import list_keys, s3_client  # noqa: E402
from pysupport.s3server import S3Server  # noqa: E402

HERE = Path(__file__).resolve().parent
HOST = HERE / "host.py"
BUCKET = "catchup"
MIB = 1 << 20


def run_ours(work, endpoint, prefix, args, part_mib, conc):
    db = work / ("%s.db" % prefix.replace("/", "-"))
    cfg = [("url", "s3://%s/%s?endpoint=%s" % (BUCKET, prefix, endpoint)),
           ("part-size", "%dMB" % part_mib), ("concurrency", str(conc))]
    params = {"db": str(db), "ext": str(extension_path()), "config": cfg, "mb": args.mb,
              "rows": 16, "row_bytes": 64 * 1024}
    res, _ = run_program(HOST, "catchup", params, timeout=1800)
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(str(db) + suffix)
        except FileNotFoundError:
            pass
    shutil.rmtree(work / (".%s-litestream" % db.name), ignore_errors=True)
    return res


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored_l0_bytes(client, prefix):
    """Bytes of the level-0 files but the first (the initial snapshot of the tiny database)."""
    l0 = list_keys(client, BUCKET, prefix + "/0000/")
    return sum(size for _, size in l0[1:]), len(l0) - 1


def run_raw(client, path, part_mib, conc, key):
    from boto3.s3.transfer import TransferConfig
    tc = TransferConfig(multipart_threshold=part_mib * MIB, multipart_chunksize=part_mib * MIB,
                        max_concurrency=conc, use_threads=True)
    t0 = time.perf_counter()
    client.upload_file(str(path), BUCKET, key, Config=tc)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mb", type=int, default=512, help="MiB of backlog written into the WAL")
    ap.add_argument("--part-mib", default="5", help="part sizes in MiB, comma separated")
    ap.add_argument("--concurrency", default="5", help="concurrency values, comma separated")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="catchup-"))
    server = S3Server(buckets=(BUCKET,)).start()
    client = s3_client(server.endpoint, request_checksum_calculation="when_required",
                       max_pool_connections=32)
    load0 = os.getloadavg()
    rows, runs = [], []
    try:
        for part_mib in [int(x) for x in args.part_mib.split(",")]:
            for conc in [int(x) for x in args.concurrency.split(",")]:
                ours, raw = [], []
                for r in range(args.repeat):
                    prefix = "p%d-c%d-r%d" % (part_mib, conc, r)
                    c0 = proc_cpu_s(server.pid())
                    res = run_ours(work, server.endpoint, prefix, args, part_mib, conc)
                    c1 = proc_cpu_s(server.pid())
                    stored, files = stored_l0_bytes(client, prefix)
                    o = {"kind": "ours", "part_mib": part_mib, "concurrency": conc,
                         "seconds": res["seconds"], "stored_bytes": stored, "files": files,
                         "wal_bytes": res["wal_bytes"], "ext_thread_cpu_s": res["ext_thread_cpu_s"],
                         "vm_hwm_kib": res["vm_hwm_kib"], "server_cpu_s": c1 - c0,
                         "mib_s": stored / MIB / res["seconds"],
                         "wal_mib_s": res["wal_bytes"] / MIB / res["seconds"]}
                    blob = work / "raw.bin"
                    with open(blob, "wb") as f:
                        left = stored
                        while left > 0:
                            n = min(left, 8 * MIB)
                            f.write(os.urandom(n))
                            left -= n
                    c0 = proc_cpu_s(server.pid())
                    secs = run_raw(client, blob, part_mib, conc, prefix + "-raw.bin")
                    c1 = proc_cpu_s(server.pid())
                    blob.unlink()
                    w = {"kind": "raw", "part_mib": part_mib, "concurrency": conc,
                         "seconds": secs, "stored_bytes": stored, "mib_s": stored / MIB / secs,
                         "server_cpu_s": c1 - c0}
                    for x in (o, w):
                        runs.append(x)
                        print(json.dumps(x), flush=True)
                    ours.append(o)
                    raw.append(w)
                med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
                rows.append({"part_mib": part_mib, "concurrency": conc,
                             "ours_mib_s": med(ours, "mib_s"), "raw_mib_s": med(raw, "mib_s"),
                             "ratio": statistics.median(o["mib_s"] / w["mib_s"]
                                                        for o, w in zip(ours, raw)),
                             "ours_wal_mib_s": med(ours, "wal_mib_s"),
                             "ext_cpu_s": med(ours, "ext_thread_cpu_s"),
                             "hwm_mib": med(ours, "vm_hwm_kib") / 1024.0,
                             "files": med(ours, "files")})
    finally:
        server.stop(remove_state=True)
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| part × concurrency | ours MiB/s | raw boto3 MiB/s | ours / raw (median of rounds) "
             "| backlog (WAL) MiB/s | L0 files | extension CPU s | host peak RSS MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append("| %d MiB × %d | %.0f | %.0f | %.2f | %.0f | %d | %.1f | %.0f |" % (
            r["part_mib"], r["concurrency"], r["ours_mib_s"], r["raw_mib_s"], r["ratio"],
            r["ours_wal_mib_s"], r["files"], r["ext_cpu_s"], r["hwm_mib"]))
    md = "\n".join(lines)
    print()
    print(md)
    print("\n%d MiB backlog, %d rounds; load average %s at start, %s at end" % (
        args.mb, args.repeat, " ".join("%.1f" % x for x in load0),
        " ".join("%.1f" % x for x in os.getloadavg())))
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / ("catchup-%s.json" % stamp)).write_text(json.dumps(
        {"rows": rows, "runs": runs, "args": vars(args), "load": [load0, os.getloadavg()]},
        indent=1))


if __name__ == "__main__":
    main()
