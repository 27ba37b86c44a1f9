#!/usr/bin/env python3
"""Soak: an hour of continuous writes with replication on; RSS flat, WAL bounded, lag bounded.

    nice -n 5 .venv/bin/python bench/soak.py                 # the documented run (3600 s)
    nice -n 5 .venv/bin/python bench/soak.py --smoke         # 3 minutes, short compaction intervals
    nice -n 5 .venv/bin/python bench/soak.py --plain --duration 900   # the baseline: no extension
    .venv/bin/python bench/soak.py --report bench/out/soak-<UTC>.json   # the summary again

Runs with any Python that has boto3 (the repo venv); the writer and the restore host are
bench/soak_host.py run by /usr/bin/python3, the only Python here that can load extensions. It
starts its own SeaweedFS (scripts/s3-server.sh, on --port or a free port, state in --s3-state or
a temporary directory, SigV4 enforced with test/testtesttest).

1. A database prefilled to about --db-mib MiB (table big: 64 KiB rows; table small: --small-cap
   rows of --small-bytes) in --work.
2. The writer (/usr/bin/python3) loads the extension, configures an S3 replica (part-size 5 MiB,
   compaction levels --levels, --l0-retention, --snapshot-interval, --snapshot-retention, so
   compaction, snapshots and retention all run several times), litestream_start(), then for
   --duration seconds commits --rate small transactions per second (insert one row, delete the
   oldest beyond --small-cap, update a random row every few commits) plus one --big-mib MiB
   transaction every --big-every seconds that also deletes the oldest big rows beyond the
   prefill, so the database stays the same size. It calls litestream_sync() every --sync-every
   commits and records each call's latency.
3. Every second it probes litestream_status() lag_ms; every --sample seconds it writes a sample
   (bench/out/soak-<UTC>.samples.jsonl while it runs): VmRSS, VmHWM, threads, open fds, CPU
   seconds, -wal and database file sizes, status fields (state, txid, lag_ms, bytes and objects
   uploaded, multipart uploads, checkpoints, snapshots, compactions per level, deletions,
   last_error), load average, commits, achieved rate, sync latencies of the window. The
   orchestrator adds every minute the bucket's object count and bytes per level and the
   SeaweedFS RSS.
4. At the end: final litestream_sync(), litestream_stop(); digest + integrity_check of the
   source; litestream_restore() into a new file from a separate host, and `litestream restore`
   (the reference binary: $LITESTREAM_BIN or scripts/install-litestream.sh), each
   compared with the source.
Prints a summary and writes bench/out/soak-<UTC>.json (all samples). Exit 1 when a restore
differs or the writer failed.
"""
import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport import reference  # noqa: E402
from pysupport.awsenv import ACCESS_KEY, SECRET_KEY  # noqa: E402
from pysupport.extension import s3_config  # noqa: E402
from pysupport.paths import BENCH_OUT, extension_path  # noqa: E402
from pysupport.ports import port_from_env  # noqa: E402
from pysupport.pyhost import HostError, HostProc, parse_result, run_program  # noqa: E402
from pysupport.report import git_rev, machine_info, pct  # noqa: E402
from pysupport.s3client import census as bucket_census  # noqa: E402
from pysupport.s3server import S3Server  # noqa: E402
from soak_host import BIG_ROW, MIB, digest  # noqa: E402

SOAK_HOST = Path(__file__).resolve().parent / "soak_host.py"


def prefill(path, big_mib, small_cap, small_bytes):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE small(id INTEGER PRIMARY KEY, v BLOB)")
    c.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
    c.execute("BEGIN")
    c.executemany("INSERT INTO big(id, v) VALUES (?, randomblob(?))",
                  [(i + 1, BIG_ROW) for i in range(big_mib * MIB // BIG_ROW)])
    c.executemany("INSERT INTO small(id, v) VALUES (?, randomblob(?))",
                  [(i + 1, small_bytes) for i in range(small_cap)])
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None


def kib_mib(kib):
    return "-" if kib is None else "%.1f" % (kib / 1024)


def linfit_slope(xs, ys):
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def analyse(samples, res, window_s):
    """The summary figures from the writer's samples and result."""
    dur = samples[-1]["t"] if samples else 0
    first = [s for s in samples if s["t"] <= window_s]
    last = [s for s in samples if s["t"] >= dur - window_s]
    warm = [s for s in samples if s["t"] >= window_s]
    rss_mib = lambda ss: max(s["vmrss_kib"] for s in ss) / 1024 if ss else None  # noqa: E731
    slope = linfit_slope([s["t"] / 3600 for s in warm], [s["vmrss_kib"] / 1024 for s in warm])
    wal = [s["wal_bytes"] for s in samples]
    lags = res["lags_ms"]
    syncs = res["syncs_ms"]
    final = samples[-1] if samples else {}
    errs = sorted({s["last_error"] for s in samples if s.get("last_error")}
                  | {s["compaction_error"] for s in samples if s.get("compaction_error")})
    return {
        "duration_s": dur, "window_s": window_s,
        "rss_first_max_mib": rss_mib(first), "rss_last_max_mib": rss_mib(last),
        "rss_slope_mib_per_h": slope, "rss_start_mib": samples[0]["vmrss_kib"] / 1024,
        "rss_end_mib": final.get("vmrss_kib", 0) / 1024, "hwm_mib": final.get("vmhwm_kib", 0) / 1024,
        "fds_first_max": max((s["fds"] for s in first), default=None),
        "fds_last_max": max((s["fds"] for s in last), default=None),
        "threads_max": max((s["threads"] for s in samples), default=None),
        "cpu_s": final.get("cpu_s"),
        "wal_max_mib": max(wal) / MIB if wal else None, "wal_p99_mib": pct(wal, 99) / MIB if wal else None,
        "wal_first_max_mib": max(s["wal_bytes"] for s in first) / MIB if first else None,
        "wal_last_max_mib": max(s["wal_bytes"] for s in last) / MIB if last else None,
        "db_first_mib": samples[0]["db_bytes"] / MIB, "db_max_mib": max(s["db_bytes"] for s in samples) / MIB,
        "db_end_mib": final.get("db_bytes", 0) / MIB,
        "lag_max_ms": max(lags) if lags else None, "lag_p99_ms": pct(lags, 99),
        "lag_p50_ms": pct(lags, 50),
        "lag_first_max_ms": max((s["lag_max_ms"] for s in first), default=None),
        "lag_last_max_ms": max((s["lag_max_ms"] for s in last), default=None),
        "sync_n": len(syncs), "sync_p50_ms": pct(syncs, 50), "sync_p99_ms": pct(syncs, 99),
        "sync_max_ms": max(syncs) if syncs else None, "sync_errors": len(res["sync_errors"]),
        "commits": res["commits"], "big_commits": res["big_commits"],
        "rate_avg": res["commits"] / max(1e-9, res["elapsed_s"]),
        "rate_min_window": min((s["rate"] for s in samples[1:-1]), default=None),
        "behind_resets": res["behind_resets"],
        "bytes_uploaded": final.get("bytes_uploaded"), "objects_uploaded": final.get("objects_uploaded"),
        "multipart_uploads": final.get("multipart_uploads"),
        "checkpoints": final.get("checkpoints"), "snapshots": final.get("snapshots"),
        "level9_snapshots": final.get("level9_snapshots"), "compactions": final.get("compactions"),
        "deleted": final.get("deleted"), "txid": final.get("txid"),
        "states": sorted({s["state"] for s in samples if s["t"] >= 10}),
        "sync_stall_max_s": max((s.get("sync_stall_max_s") or 0 for s in samples), default=None),
        "errors_seen": errs, "error_samples": sum(1 for s in samples if s.get("last_error") or s.get("compaction_error")),
        "load_avg_mean": sum(s["loadavg"] for s in samples) / len(samples),
        "load_avg_max": max(s["loadavg"] for s in samples),
        "final_sync_ms": res["final_sync_ms"], "stop_ms": res["stop_ms"],
    }


def verdicts(a, restores, census):
    v = {}
    # RSS flat: the last window's peak within 10 % (and 8 MiB) of the first window's, and the
    # linear trend after warm-up under 5 MiB/hour.
    grow = a["rss_last_max_mib"] - a["rss_first_max_mib"]
    v["rss_flat"] = bool(grow <= max(8.0, 0.10 * a["rss_first_max_mib"])
                         and (a["rss_slope_mib_per_h"] or 0) < 5.0)
    # WAL bounded: never beyond 64 MiB (16x the 4 MiB checkpoint threshold) and not growing.
    v["wal_bounded"] = bool(a["wal_max_mib"] <= 64 and a["wal_last_max_mib"] <= max(8.0, 1.5 * a["wal_first_max_mib"]))
    # lag bounded: p99 under 2 s, never above 30 s, and no worse at the end than at the start
    # (a level-9 snapshot holds the replicator for seconds: single spikes are expected).
    v["lag_bounded"] = bool(a["lag_p99_ms"] <= 2000 and a["lag_max_ms"] <= 30000
                            and a["lag_last_max_ms"] <= max(3000, 2 * a["lag_first_max_ms"]))
    v["no_errors"] = not a["errors_seen"] and not a["sync_errors"] and a["states"] == ["running"]
    for k, r in restores.items():
        v["restore_" + k] = bool(r.get("equal"))
    if len(census) >= 4:
        n = [c["objects"] for c in census]
        half = len(n) // 2
        # bucket bounded: retention keeps the object count from growing without end
        v["bucket_bounded"] = max(n[half:]) <= 1.5 * max(n[:half]) + 200
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3600, help="seconds of writes (3600)")
    ap.add_argument("--plain", action="store_true",
                    help="the baseline: the same writer with no extension loaded (RSS only, no S3)")
    ap.add_argument("--smoke", action="store_true",
                    help="3 minutes with compaction levels 10s,30s,1m, snapshots every 1m (kept 2m), L0 kept 30s")
    ap.add_argument("--rate", type=float, default=200, help="small transactions per second (200)")
    ap.add_argument("--small-bytes", type=int, default=200, help="bytes per small row (200)")
    ap.add_argument("--small-cap", type=int, default=100000, help="rows kept in table small (100000)")
    ap.add_argument("--big-mib", type=float, default=1.0, help="MiB per big transaction (1)")
    ap.add_argument("--big-every", type=float, default=4.0, help="seconds between big transactions (4)")
    ap.add_argument("--db-mib", type=int, default=160, help="prefilled size of table big, kept constant (160)")
    ap.add_argument("--sync-every", type=int, default=50, help="commits between litestream_sync() calls (50)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    ap.add_argument("--levels", default="30s,5m,15m")
    ap.add_argument("--l0-retention", default="5m")
    ap.add_argument("--snapshot-interval", default="15m")
    ap.add_argument("--snapshot-retention", default="30m")
    ap.add_argument("--sync-interval", default="1s")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                    help="further litestream_configure() pairs (repeatable)")
    ap.add_argument("--port", type=int, default=port_from_env("SOAK_S3_PORT"),
                    help="SeaweedFS base port (default: SOAK_S3_PORT, else a free one)")
    ap.add_argument("--s3-state", help="SeaweedFS state directory (default: a temporary one)")
    ap.add_argument("--work", help="work directory, emptied first (default: a temporary one)")
    ap.add_argument("--window", type=float, help="seconds of the first/last windows compared (600, smoke: 60)")
    ap.add_argument("--keep", action="store_true", help="keep the database, restores and SeaweedFS data")
    args = ap.parse_args()
    if args.smoke:
        if "--duration" not in sys.argv:
            args.duration = 180
        args.levels, args.l0_retention = "10s,30s,1m", "30s"
        args.snapshot_interval, args.snapshot_retention = "1m", "2m"
    window = args.window or min(600.0, args.duration / 3)
    ext = extension_path()
    if not os.path.exists(ext + ".so"):
        sys.exit("missing %s.so: run cargo build --release first" % ext)
    lbin = reference.litestream_bin()

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    BENCH_OUT.mkdir(parents=True, exist_ok=True)
    out_json = BENCH_OUT / ("soak-%s.json" % stamp)
    samples_path = BENCH_OUT / ("soak-%s.samples.jsonl" % stamp)
    if args.work:
        work = Path(args.work)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="litestream-soak-"))
    db = str(work / "soak.db")
    log = lambda msg: print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)  # noqa: E731
    if args.plain:
        try:
            sys.exit(run_plain(args, db, work, samples_path, BENCH_OUT / ("soak-plain-%s.json" % stamp), log))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    server = S3Server(args.s3_state, buckets=("soak",), port=args.port)
    log("starting SeaweedFS (state %s)" % server.state)
    server.start()
    log("SeaweedFS on %s" % server.endpoint)
    client = server.client()
    bucket, prefix = "soak", "soak-%s" % stamp
    machine = machine_info()
    rc = 1
    try:
        t = time.time()
        prefill(db, args.db_mib, args.small_cap, args.small_bytes)
        log("prefilled %s: %.1f MiB in %.1f s" % (db, os.path.getsize(db) / MIB, time.time() - t))
        config = s3_config(bucket, prefix, server.endpoint, sync_interval=args.sync_interval)
        config += [("part-size", "5MB"), ("levels", args.levels), ("l0-retention", args.l0_retention),
                   ("snapshot-interval", args.snapshot_interval),
                   ("snapshot-retention", args.snapshot_retention)]
        config += [tuple(kv.split("=", 1)) for kv in args.config]
        params = writer_params(args, db, work, samples_path, ext, config)
        shown = [(k, "***" if "secret" in k else v) for k, v in config]
        log("writer: %.0f s, %g tx/s + %g MiB every %g s, sync every %d commits; config %s" % (
            args.duration, args.rate, args.big_mib, args.big_every, args.sync_every, shown))
        errlog = open(work / "writer.stderr", "w")
        writer = HostProc(SOAK_HOST, "write", params, stderr=errlog)
        try:
            writer.expect("started")
        except HostError as e:
            raise RuntimeError("writer did not start: %s\n%s" % (e, (work / "writer.stderr").read_text()[-4000:]))
        log("replication started (writer pid %d, samples -> %s)" % (writer.pid, samples_path))
        census = []
        t_start = time.time()
        next_census = t_start
        next_report = t_start + 60
        while writer.p.poll() is None:
            now = time.time()
            if now >= next_census:
                try:
                    c = bucket_census(client, bucket, prefix)
                    c.update(t=round(now - t_start, 1), weed_rss_kib=proc_rss_kib(server.pid() or 0))
                    census.append(c)
                except Exception as e:  # noqa: BLE001 - a listing failure is recorded, not fatal
                    census.append({"t": round(now - t_start, 1), "error": str(e), "objects": 0})
                next_census += 60
            if now >= next_report:
                try:
                    s = json.loads(samples_path.read_text().splitlines()[-1])
                    cc = census[-1]
                    log("t=%5.0fs commits %7d rate %5.0f/s rss %6.1f MiB (anon %s, malloc %s+%s free) "
                        "wal %5.1f MiB db %6.1f MiB "
                        "lag %5d ms (max %5d) sync p50 %s ms up %7.1f MiB ckpt %d snap %d comp %s "
                        "del %s objs %s load %.2f%s" % (
                            s["t"], s["commits"], s["rate"], s["vmrss_kib"] / 1024,
                            kib_mib(s.get("rssanon_kib")), kib_mib(s.get("malloc_used_kib")),
                            kib_mib(s.get("malloc_free_kib")), s["wal_bytes"] / MIB,
                            s["db_bytes"] / MIB, s["lag_ms"], s["lag_max_ms"],
                            "%.1f" % s["sync_p50_ms"] if s["sync_p50_ms"] is not None else "-",
                            (s["bytes_uploaded"] or 0) / MIB, s["checkpoints"], s["snapshots"],
                            s["compactions"], s["deleted"], cc.get("objects"), s["loadavg"],
                            (" ERROR " + str(s["last_error"] or s["compaction_error"]))
                            if (s["last_error"] or s["compaction_error"]) else ""))
                except (IndexError, ValueError, KeyError) as e:
                    log("no sample yet (%s)" % e)
                next_report += 60
            time.sleep(1)
        named = parse_result(writer.p.stdout.read())
        errlog.close()
        if writer.p.returncode != 0 or named is None:
            raise RuntimeError("writer exited %d:\n%s" % (writer.p.returncode, (work / "writer.stderr").read_text()[-4000:]))
        res = json.loads(Path(named["file"]).read_text())
        c = bucket_census(client, bucket, prefix)
        c.update(t=round(time.time() - t_start, 1), weed_rss_kib=proc_rss_kib(server.pid() or 0))
        census.append(c)
        log("writer done: %d commits, stopped at TXID %s; checking the source" % (res["commits"], res["stopped_txid"]))
        src = digest(sqlite3.connect(db, isolation_level=None))
        restores = {}
        url = "s3://%s/%s?endpoint=%s" % (bucket, prefix, server.endpoint)
        ours_out = str(work / "restored-ours.db")
        t = time.time()
        try:
            r, _ = run_program(SOAK_HOST, "restore", {"ext": ext, "url": url, "out": ours_out},
                               timeout=1800, env={"LITESTREAM_ACCESS_KEY_ID": ACCESS_KEY,
                                                  "LITESTREAM_SECRET_ACCESS_KEY": SECRET_KEY})
        except HostError as e:
            r = {"error": str(e)}
        r["wall_s"] = time.time() - t
        r["equal"] = (r.get("digest") == src["digest"] and r.get("integrity") == "ok"
                      and r.get("txid") == res["stopped_txid"])
        restores["ours"] = r
        log("litestream_restore: %s" % {k: r.get(k) for k in ("txid", "integrity", "rows", "equal", "seconds", "error")})
        ref_out = work / "restored-ref.db"
        ref_url = reference.reference_url(bucket, prefix, server.endpoint)
        t = time.time()
        p = reference.run_reference(lbin, "restore", "-integrity-check", "full", "-o", ref_out,
                                    ref_url, check=False, timeout=1800)
        if p.returncode == 0:
            r = digest(sqlite3.connect(str(ref_out), isolation_level=None))
        else:
            r = {"error": "litestream restore exited %d: %s %s" % (p.returncode, p.stdout[-1000:], p.stderr[-2000:])}
        r["wall_s"] = time.time() - t
        r["equal"] = r.get("digest") == src["digest"] and r.get("integrity") == "ok"
        restores["reference"] = r
        log("litestream restore (reference): %s" % {k: r.get(k) for k in ("integrity", "rows", "equal", "wall_s", "error")})

        samples = [json.loads(ln) for ln in samples_path.read_text().splitlines()]
        a, v = summarise(samples, res, window, args.sample, args.levels, restores, census)
        report = {"machine": machine, "git": git_rev(), "ext": ext, "args": vars(args),
                  "config": shown, "summary": a, "verdicts": v, "source": src, "restores": restores,
                  "census": census, "writer": {k: res[k] for k in res if k not in ("syncs_ms", "lags_ms")},
                  "syncs_ms": res["syncs_ms"], "lags_ms": res["lags_ms"], "samples": samples}
        out_json.write_text(json.dumps(report, indent=1))
        print_summary(a, v, machine, out_json)
        rc = 0 if all(v.get(k) for k in ("restore_ours", "restore_reference")) else 1
    finally:
        if not args.keep:
            server.stop(remove_state=True)
            shutil.rmtree(work, ignore_errors=True)
        else:
            log("kept: %s, SeaweedFS on %s (stop: S3_STATE=%s S3_PORT=%d bash %s stop)" % (
                work, server.endpoint, server.state, server.port, server.script))
    sys.exit(rc)


def writer_params(args, db, work, samples_path, ext, config):
    """What soak_host.py's writer is told: the workload of the command line."""
    return {"ext": ext, "db": db, "config": config, "samples": str(samples_path),
            "duration_s": args.duration, "rate": args.rate, "small_bytes": args.small_bytes,
            "small_cap": args.small_cap, "big_bytes": int(args.big_mib * MIB),
            "big_every_s": args.big_every, "sync_every": args.sync_every,
            "sync_timeout_ms": 60000, "sample_s": args.sample,
            "result": str(work / "writer-result.json")}


def run_plain(args, db, work, samples_path, out_json, log):
    """The writer's RSS without the extension: what 'over plain SQLite' is measured against."""
    prefill(db, args.db_mib, args.small_cap, args.small_bytes)
    params = dict(writer_params(args, db, work, samples_path, None, []), plain=True)
    log("plain writer (no extension): %.0f s, %g tx/s + %g MiB every %g s" % (
        args.duration, args.rate, args.big_mib, args.big_every))
    writer = HostProc(SOAK_HOST, "write", params)
    writer.expect("started")
    writer.p.wait()
    named = parse_result(writer.p.stdout.read())
    if writer.p.returncode != 0 or named is None:
        log("plain writer exited %d" % writer.p.returncode)
        return 1
    res = json.loads(Path(named["file"]).read_text())
    rss = [s["vmrss_kib"] / 1024 for s in (json.loads(ln) for ln in samples_path.read_text().splitlines())]
    summary = {"commits": res["commits"], "rss_start_mib": rss[0], "rss_max_mib": max(rss),
               "rss_end_mib": rss[-1], "hwm_mib": res["proc"]["vmhwm_kib"] / 1024}
    out_json.write_text(json.dumps({"machine": machine_info(), "git": git_rev(), "args": vars(args),
                                    "summary": summary, "rss_mib": rss}, indent=1))
    log("plain: %d commits; RSS start %.1f, max %.1f, end %.1f, VmHWM %.1f MiB -> %s" % (
        res["commits"], summary["rss_start_mib"], summary["rss_max_mib"], summary["rss_end_mib"],
        summary["hwm_mib"], out_json))
    return 0


def duration_s(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for u in ("ms", "s", "m", "h"):
        if text.endswith(u):
            return float(text[:-len(u)]) * units[u]
    return float(text)


def summarise(samples, res, window, sample_s, levels, restores, census):
    a = analyse(samples, res, window)
    a["sample_s"] = sample_s
    v = verdicts(a, restores, [cc for cc in census if "error" not in cc])
    a["bucket_objects_max"] = max((cc["objects"] for cc in census), default=None)
    a["bucket_objects_end"] = census[-1]["objects"]
    a["bucket_mib_max"] = max((cc.get("bytes", 0) for cc in census), default=0) / MIB
    a["bucket_mib_end"] = census[-1].get("bytes", 0) / MIB
    a["weed_rss_max_mib"] = max((cc.get("weed_rss_kib") or 0 for cc in census), default=0) / 1024
    # RSS peaks and troughs per cycle of the slowest compaction level (its compaction, and the
    # level-9 snapshot on a similar schedule, are what the sawtooth follows)
    cycle = max(duration_s(x) for x in levels.split(",")) if levels not in ("", "off") else window
    a["rss_cycle_s"] = cycle
    a["rss_cycle_peaks_mib"], a["rss_cycle_troughs_mib"] = [], []
    t = 0.0
    while t < a["duration_s"]:
        blk = [s["vmrss_kib"] / 1024 for s in samples if t <= s["t"] < t + cycle]
        if blk and t + cycle / 2 <= a["duration_s"]:  # not a last sliver of a cycle
            a["rss_cycle_peaks_mib"].append(round(max(blk), 1))
            a["rss_cycle_troughs_mib"].append(round(min(blk), 1))
        t += cycle
    return a, v


def report_again(path):
    """--report FILE: recompute and print the summary of a finished run's JSON."""
    r = json.load(open(path))
    args = r["args"]
    window = args.get("window") or min(600.0, args["duration"] / 3)
    res = dict(r["writer"], syncs_ms=r["syncs_ms"], lags_ms=r["lags_ms"])
    a, v = summarise(r["samples"], res, window, args["sample"], args["levels"], r["restores"], r["census"])
    r["summary"], r["verdicts"] = a, v
    with open(path, "w") as f:
        json.dump(r, f, indent=1)
    print_summary(a, v, r["machine"], path)


def print_summary(a, v, machine, path):
    f = lambda x, d=1: "-" if x is None else ("%.*f" % (d, x))  # noqa: E731
    rows = [
        ("duration", "%s s (windows: first/last %s s)" % (f(a["duration_s"], 0), f(a["window_s"], 0))),
        ("commits", "%d (%d of ~1 MiB), %.1f tx/s average, lowest %s-s window %s tx/s, %d resets of the pacing" % (
            a["commits"], a["big_commits"], a["rate_avg"], f(a.get("sample_s"), 0), f(a["rate_min_window"], 0),
            a["behind_resets"])),
        ("writer RSS", "first-window max %s MiB, last-window max %s MiB, slope after warm-up %s MiB/h; start %s, end %s, VmHWM %s MiB" % (
            f(a["rss_first_max_mib"]), f(a["rss_last_max_mib"]), f(a["rss_slope_mib_per_h"], 2),
            f(a["rss_start_mib"]), f(a["rss_end_mib"]), f(a["hwm_mib"]))),
        ("writer RSS per %s-s cycle" % f(a.get("rss_cycle_s"), 0), "peaks %s, troughs %s MiB" % (
            a.get("rss_cycle_peaks_mib"), a.get("rss_cycle_troughs_mib"))),
        ("writer fds / threads", "fds first %s last %s, threads max %s, CPU %s s" % (
            a["fds_first_max"], a["fds_last_max"], a["threads_max"], f(a["cpu_s"]))),
        ("-wal file", "max %s MiB, p99 %s MiB (first window max %s, last %s)" % (
            f(a["wal_max_mib"], 2), f(a["wal_p99_mib"], 2), f(a["wal_first_max_mib"], 2), f(a["wal_last_max_mib"], 2))),
        ("database", "%s MiB at start, max %s, end %s" % (f(a["db_first_mib"]), f(a["db_max_mib"]), f(a["db_end_mib"]))),
        ("lag_ms (1 s probes)", "p50 %s, p99 %s, max %s (first window max %s, last %s)" % (
            f(a["lag_p50_ms"], 0), f(a["lag_p99_ms"], 0), f(a["lag_max_ms"], 0),
            f(a["lag_first_max_ms"], 0), f(a["lag_last_max_ms"], 0))),
        ("litestream_sync()", "%d calls: p50 %s ms, p99 %s ms, max %s ms (longest wait seen by a probe %s s), %d errors; final %s ms, stop %s ms" % (
            a["sync_n"], f(a["sync_p50_ms"]), f(a["sync_p99_ms"]), f(a["sync_max_ms"]), f(a["sync_stall_max_s"]), a["sync_errors"],
            f(a["final_sync_ms"]), f(a["stop_ms"]))),
        ("uploaded", "%s MiB in %s objects (%s multipart)" % (
            f((a["bytes_uploaded"] or 0) / MIB), a["objects_uploaded"], a["multipart_uploads"])),
        ("checkpoints / snapshots", "%s checkpoints, %s snapshots by the replicator, %s level-9 by the compactor" % (
            a["checkpoints"], a["snapshots"], a["level9_snapshots"])),
        ("compactions", "per level %s, %s objects deleted by retention" % (a["compactions"], a["deleted"])),
        ("bucket", "objects max %s end %s, MiB max %s end %s; SeaweedFS RSS max %s MiB" % (
            a["bucket_objects_max"], a["bucket_objects_end"], f(a["bucket_mib_max"]), f(a["bucket_mib_end"]),
            f(a["weed_rss_max_mib"]))),
        ("states / errors", "%s; %d samples with an error %s" % (a["states"], a["error_samples"], a["errors_seen"][:3])),
        ("load average", "mean %s, max %s (%s CPUs)" % (f(a["load_avg_mean"], 2), f(a["load_avg_max"], 2), machine["nproc"])),
    ]
    print()
    print("| measure | value |")
    print("| --- | --- |")
    for k, val in rows:
        print("| %s | %s |" % (k, val))
    print()
    print("verdicts: " + ", ".join("%s %s" % (k, "PASS" if ok else "FAIL") for k, ok in v.items()))
    print("-> %s" % path)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report_again(sys.argv[2])
    else:
        main()
