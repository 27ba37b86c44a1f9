#!/usr/bin/env python3
"""Many databases in one process (issue 12): threads, memory, CPU, S3 requests and lag.

    .venv/bin/python bench/many.py                          # 10, 100, 1000 databases, 60 s each
    .venv/bin/python bench/many.py --counts 1000 --duration 300    # the issue's 5-minute run

For each count N: N database files (10 % of them, at least one, written at --rate transactions
per second each; the rest idle), replicated three ways in turn, in the same run against the same
SeaweedFS (through a counting proxy):

    plain   the application alone, no replication (the baseline)
    ours    the extension loaded into the application, one litestream_start() per database
    ref     the same writes from a plain process, with one `litestream replicate` (0.5.17)
            replicating all N files from one config

Reported per run: threads (peak, beyond the process's own), peak RSS, CPU seconds during the
window (ours: the application process, so ours − plain is the extension's share; ref: the
sidecar alone), S3 requests by kind during the window, per database and hour for idle and
written databases, and the written databases' lag p50/p99 (litestream_status() every second;
the sidecar has no such figure). JSON in bench/out/many-<UTC>.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport.awsenv import child_env  # noqa: E402
from pysupport.paths import HOST_PYTHON, extension_path  # noqa: E402
from pysupport.pyhost import run_program  # noqa: E402
from pysupport.reference import litestream_bin, reference_env  # noqa: E402
from pysupport.report import pct  # noqa: E402
from pysupport.s3proxy import S3Proxy  # noqa: E402
from pysupport.s3server import S3Server  # noqa: E402

HERE = Path(__file__).resolve().parent
HOST = HERE / "many_host.py"
BUCKET = "many"


def settle_seconds(n):
    """Time given to the sidecar's start-up (opening, initial snapshots) before its window; ours
    also waits for every database's first sync."""
    return min(30, 2 + n / 50)


def make_dbs(work, n):
    dbs = []
    for i in range(n):
        db = work / ("tenant-%04d.db" % i)
        subprocess.run(["sqlite3", str(db)], input="PRAGMA journal_mode=wal;"
                       "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);"
                       "INSERT INTO t(body) VALUES ('seed');", text=True, check=True,
                       capture_output=True)
        dbs.append(str(db))
    return dbs


def requests_in(proxy, window, prefix, written):
    """S3 requests in the window under `prefix`: by kind, and per database split idle/written."""
    t0, t1 = window
    kinds, per_db = Counter(), Counter()
    for r in list(proxy.requests):
        if not (t0 <= r.started <= t1):
            continue
        path = r.path.split("?")[0]
        rest = path.split("/%s/%s/" % (BUCKET, prefix), 1)
        if len(rest) != 2 and prefix not in r.query:
            continue
        kinds[r.op()] += 1
        if len(rest) == 2:
            try:
                per_db[int(rest[1].split("/")[0])] += 1
            except ValueError:
                pass
    return kinds, per_db


def per_db_hour(per_db, n, written, seconds):
    hours = seconds / 3600.0
    w = [per_db.get(i, 0) for i in range(written)]
    idle = [per_db.get(i, 0) for i in range(written, n)]
    avg = lambda v: (sum(v) / len(v) / hours) if v else None  # noqa: E731
    return {"written": avg(w), "idle": avg(idle)}


def sidecar_config(work, dbs, endpoint, prefix):
    lines = ["logging:\n  level: warn\n  stderr: true\n", "dbs:\n"]
    for i, db in enumerate(dbs):
        lines.append("  - path: %s\n    replicas:\n      - type: s3\n        bucket: %s\n"
                     "        path: %s/%d\n        endpoint: %s\n        region: us-east-1\n"
                     "        force-path-style: true\n        sync-interval: 1s\n"
                     % (db, BUCKET, prefix, i, endpoint))
    cfg = work / "litestream.yml"
    cfg.write_text("".join(lines))
    return cfg


def proc_usage(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    out = {"cpu_s": cpu}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "VmHWM":
                out["rss_kib"] = int(v.split()[0])
            elif k == "Threads":
                out["threads"] = int(v)
    return out


def run_plain_or_ours(mode, dbs, written, args, endpoint, prefix):
    cfg = [("url", "s3://%s/%s/{i}?endpoint=%s" % (BUCKET, prefix, endpoint)),
           ("sync-interval", "1s")]
    params = {"dbs": dbs, "written": written, "rate": args.rate, "duration_s": args.duration,
              "ext": str(extension_path()), "config": cfg, "settle_s": settle_seconds(len(dbs))}
    res, _ = run_program(HOST, mode, params, timeout=args.duration * 3 + 900)
    return res


def run_ref(dbs, written, args, endpoint, prefix, work):
    cfg = sidecar_config(work, dbs, endpoint, prefix)
    log = open(work / "litestream.log", "w")
    proc = subprocess.Popen([litestream_bin(), "replicate", "-config", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT, env=reference_env())
    try:
        time.sleep(settle_seconds(len(dbs)))  # let it open and snapshot every database
        u0 = proc_usage(proc.pid)
        peak = u0["threads"]
        params = {"dbs": dbs, "written": written, "rate": args.rate,
                  "duration_s": args.duration, "config": []}
        writer = subprocess.Popen([HOST_PYTHON, str(HOST), "plain", json.dumps(params)],
                                  stdout=subprocess.PIPE, text=True, env=child_env())
        while writer.poll() is None:
            time.sleep(1)
            peak = max(peak, proc_usage(proc.pid)["threads"])
        out = writer.stdout.read()
        res = json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:])
        u1 = proc_usage(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return {"dbs": len(dbs), "written": written, "threads_peak": peak, "rss_kib": u1["rss_kib"],
            "cpu_s": u1["cpu_s"] - u0["cpu_s"], "commits": res["commits"], "lags_ms": [],
            "errors": [], "window": res["window"]}


def summarize(kind, res, proxy, prefix, n, written):
    window = res["window"]
    seconds = window[1] - window[0]
    kinds, per_db = requests_in(proxy, window, prefix, written) if proxy else (Counter(), {})
    return {"kind": kind, "dbs": n, "written": written, "seconds": seconds,
            "threads": res["threads_peak"], "rss_mib": res["rss_kib"] / 1024.0,
            "cpu_s": res["cpu_s"], "commits": res["commits"],
            "lag_p50_ms": pct(res["lags_ms"], 50), "lag_p99_ms": pct(res["lags_ms"], 99),
            "requests": dict(kinds), "per_db_hour": per_db_hour(per_db, n, written, seconds),
            "errors": res["errors"], "start_s": res.get("start_s"),
            "settled_s": res.get("settled_s")}


def fmt(v, f="%.0f"):
    return "–" if v is None else f % v


def table(rows):
    out = ["| DBs (written) | run | threads | peak RSS MiB | CPU s | PUT | LIST | GET | other "
           "| req/DB/h idle | req/DB/h written | lag p50 / p99 ms |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        q = Counter(r["requests"])
        put = q.pop("PutObject", 0) + q.pop("UploadPart", 0)
        lst = q.pop("ListObjectsV2", 0)
        get = q.pop("GetObject", 0) + q.pop("HeadObject", 0)
        out.append("| %d (%d) | %s | %d | %.0f | %.1f | %d | %d | %d | %d | %s | %s | %s / %s |" % (
            r["dbs"], r["written"], r["kind"], r["threads"], r["rss_mib"], r["cpu_s"], put, lst,
            get, sum(q.values()), fmt(r["per_db_hour"]["idle"]),
            fmt(r["per_db_hour"]["written"]), fmt(r["lag_p50_ms"]), fmt(r["lag_p99_ms"])))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--counts", default="10,100,1000")
    ap.add_argument("--duration", type=int, default=60, help="seconds of writes per run")
    ap.add_argument("--rate", type=float, default=10.0, help="tx/s per written database")
    ap.add_argument("--written-share", type=float, default=0.1)
    ap.add_argument("--no-ref", action="store_true", help="skip the reference sidecar")
    ap.add_argument("--work", help="work directory (default: a temporary one, removed)")
    args = ap.parse_args()

    work_root = Path(args.work or tempfile.mkdtemp(prefix="many-"))
    server = S3Server(buckets=(BUCKET,)).start()
    proxy = S3Proxy(server.port).start()
    rows = []
    load0 = os.getloadavg()
    try:
        for n in [int(x) for x in args.counts.split(",")]:
            written = max(1, int(n * args.written_share))
            for kind in ["plain", "ours"] + ([] if args.no_ref else ["ref"]):
                work = work_root / ("%s-%d" % (kind, n))
                work.mkdir(parents=True, exist_ok=True)
                dbs = make_dbs(work, n)
                prefix = "%s-%d" % (kind, n)
                print("== %d databases (%d written), %s" % (n, written, kind), flush=True)
                if kind == "ref":
                    res = run_ref(dbs, written, args, proxy.url, prefix, work)
                else:
                    res = run_plain_or_ours(kind, dbs, written, args, proxy.url, prefix)
                row = summarize(kind, res, proxy if kind != "plain" else None, prefix, n, written)
                rows.append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(work, ignore_errors=True)
    finally:
        proxy.stop()
        server.stop(remove_state=True)
        if not args.work:
            shutil.rmtree(work_root, ignore_errors=True)
    md = table(rows)
    print()
    print(md)
    print("\nload average: %s at start, %s at end; %d s per run, %.0f tx/s per written database"
          % (" ".join("%.1f" % x for x in load0), " ".join("%.1f" % x for x in os.getloadavg()),
             args.duration, args.rate))
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / ("many-%s.json" % stamp)).write_text(json.dumps({"rows": rows, "args": vars(args)},
                                                           indent=1))
    (out / "many-latest.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
