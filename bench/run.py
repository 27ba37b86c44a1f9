#!/usr/bin/env python3
"""The benchmark: our extension vs plain SQLite vs the Litestream 0.5.17 sidecar, same run.

    .venv/bin/python bench/run.py              # default: a few minutes
    .venv/bin/python bench/run.py --full       # the documented run (README figures)
    .venv/bin/python bench/run.py --only a,b   # a subset: a commit overhead, b latency,
                                               #   c sustained rate, d CPU/RSS

Runs with any Python that has boto3 (the repo venv); the application processes are
`/usr/bin/python3 bench/host.py` (the only Python here that can load extensions). It starts its
own SeaweedFS (scripts/s3-server.sh, on a free port unless --port, SigV4 enforced), runs
every configuration of a measure interleaved, rotation by rotation (these machines are noisy, so
the figures that matter are ratios within a rotation), prints a table and writes
bench/out/bench-<time>.json and bench/out/latest.json. JSON left in bench/out/ by the upload
(upload*.json) and restore (restore*.json) benchmarks is included in the report.

Measures:
 a. commit overhead: one-row transactions (synchronous=FULL and NORMAL) and 1 MiB transactions;
    plain SQLite in WAL mode vs ours (sync-interval 1s and 0) vs the sidecar -> tx/s ratios.
 b. durable-commit latency: ours commit + litestream_sync(); and for every replicator, commit ->
    new L0 object visible in the bucket (ListObjectsV2 polled every ~5 ms).
 c. highest sustained write rate at which replication keeps up: offered rate stepped 1, 2, 4 ...
    MiB/s; keeps up = the writer achieved >= 95 % of it, the lag stayed bounded (ours: lag_ms from
    litestream_status() in the second half of the step) and the backlog drained quickly.
 d. CPU seconds and peak RSS to replicate the same page changes: host with ours minus the plain
    host, vs the sidecar process.
"""
import argparse
import glob
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport import reference  # noqa: E402
from pysupport.extension import s3_config  # noqa: E402
from pysupport.paths import BENCH_OUT as OUT, extension_path  # noqa: E402
from pysupport.ports import port_from_env  # noqa: E402
from pysupport.pyhost import HostProc, run_program  # noqa: E402
from pysupport.report import git_rev, machine_info, median, pct  # noqa: E402
from pysupport.s3client import key_names  # noqa: E402
from pysupport.s3server import S3Server  # noqa: E402

HOST_PY = Path(__file__).resolve().parent / "host.py"
EXT = extension_path()
BUCKET = "bench"

# test-infrastructure.md, "Reference figures of the Litestream 0.5.17 sidecar, measured here".
REFERENCE = {
    "sidecar_commit_ratio_small_full": "0.67 and 0.71 (two runs)",
    "sidecar_visible_default": "p50 677 ms, p99 950 ms",
    "sidecar_visible_100ms": "p50 108 ms, p99 136 ms",
    "sidecar_cpu_553MB": "11.9 CPU s, 147 MB peak RSS, 11 s to catch up, WAL 558 MB (4.7 MB without)",
}


def prepare_db(path, rows=0, row_bytes=0):
    """A fresh database in WAL mode with table t (and `rows` rows of random bytes), created in
    this process with the stdlib sqlite3 (no extension needed)."""
    path = str(path)
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    shutil.rmtree(os.path.join(os.path.dirname(path), "." + os.path.basename(path) + "-litestream"),
                  ignore_errors=True)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    if rows:
        c.execute("BEGIN")
        c.executemany("INSERT INTO t(id, v) VALUES (?, randomblob(?))",
                      [(i + 1, row_bytes) for i in range(rows)])
        c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


class Ctx:
    def __init__(self, args):
        self.args = args
        self.full = args.full
        self.work = Path(tempfile.mkdtemp(prefix="litestream-bench-"))
        self.endpoint = None
        self.client = None
        self.lbin = None
        self.n = 0

    def prefix(self, tag):
        self.n += 1
        return "%s-%03d" % (tag, self.n)

    def fresh_db(self, tag, rows=0, row_bytes=0):
        d = self.work / ("%s-%03d" % (tag, self.n))
        d.mkdir(parents=True, exist_ok=True)
        db = d / "db.sqlite"
        prepare_db(db, rows, row_bytes)
        return d, db

    def has_l0(self, prefix):
        return lambda: bool(self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/0000/",
                                                         MaxKeys=1).get("KeyCount"))

    def sidecar(self, d, db, prefix, sync_interval="1s", monitor_interval=None):
        sc = reference.Sidecar(self.lbin, db, BUCKET, prefix, self.endpoint, d, sync_interval,
                        monitor_interval)
        return sc.start(wait_for=self.has_l0(prefix))

    def ours(self, db, prefix, sync_interval, synchronous="FULL"):
        return {"db": str(db), "ext": EXT, "synchronous": synchronous,
                "config": s3_config(BUCKET, prefix, self.endpoint, sync_interval=sync_interval)}

    @staticmethod
    def plain(db, synchronous="FULL"):
        return {"db": str(db), "ext": None, "synchronous": synchronous}

    def cleanup(self, d):
        # keep the disk small on long runs; the bucket is thrown away with the server
        for f in Path(d).glob("db.sqlite*"):
            f.unlink(missing_ok=True)


def rotations(configs, reps):
    """Each rep runs every config once, starting one further along (no config always first)."""
    for r in range(reps):
        yield r, configs[r % len(configs):] + configs[:r % len(configs)]


# ---------------------------------------------------------------- a. commit overhead

def measure_a(ctx):
    """All four configurations run side by side (one host process each, fresh databases) and
    take turns: each round gives every configuration one chunk of `chunk_s` seconds of the
    workload, in rotating order, then a quiet pause of `quiet_s` (longer than the 1 s sync
    interval) so that a replicator's upload of that chunk's tail does not run during the next
    configuration's chunk. A noisy neighbour then hits all configurations alike; ratios are per
    round (tx/s of this configuration over plain's in the same round), median over rounds.
    Bias to know: the tail of each chunk (< 1 sync interval of work) is replicated during the
    pause, so replication looks slightly cheaper than in a steady state."""
    rounds = ctx.args.reps or (8 if ctx.full else 3)
    chunk_s = 3.0 if ctx.full else 2.0
    quiet_s = 1.3
    workloads = [
        {"name": "1-row tx, synchronous=FULL", "key": "small_full", "rows": 1,
         "row_bytes": 100, "synchronous": "FULL"},
        {"name": "1-row tx, synchronous=NORMAL", "key": "small_normal", "rows": 1,
         "row_bytes": 100, "synchronous": "NORMAL"},
        {"name": "1 MiB tx (16 x 64 KiB), FULL", "key": "large_1mib", "rows": 16,
         "row_bytes": 65536, "synchronous": "FULL"},
    ]
    configs = ["plain", "ours-1s", "ours-0", "litestream"]
    chunks = []  # {round, config, workload, txns, seconds, tps, cpu_s}
    drains = []
    hosts, sidecars, dirs = {}, [], []
    try:
        for cfg in configs:
            prefix = ctx.prefix("a-" + cfg)
            d, db = ctx.fresh_db(prefix)
            dirs.append(d)
            if cfg.startswith("ours"):
                params = ctx.ours(db, prefix, "1s" if cfg == "ours-1s" else "0")
            else:
                params = ctx.plain(db)
                if cfg == "litestream":
                    sidecars.append(ctx.sidecar(d, db, prefix))
            params["workloads"] = workloads
            hosts[cfg] = HostProc(HOST_PY, "chunks", params)
            assert hosts[cfg].readline() == "ready"
        for wi, w in enumerate(workloads):
            for r in range(rounds):
                order = configs[r % len(configs):] + configs[:r % len(configs)]
                for cfg in order:
                    n, secs, cpu = hosts[cfg].call("runfor %d %s" % (wi, chunk_s)).split()[1:]
                    n, secs = int(n), float(secs)
                    chunks.append({"round": r, "config": cfg, "workload": w["key"], "txns": n,
                                   "seconds": secs, "tps": n / secs, "cpu_s": float(cpu)})
                    time.sleep(quiet_s)
            for cfg in configs:
                if cfg.startswith("ours"):
                    drains.append({"config": cfg, "workload": w["key"],
                                   "seconds": float(hosts[cfg].call("drain").split()[1])})
            line = "  a %-28s" % w["name"]
            for cfg in configs:
                mine = [x for x in chunks if x["config"] == cfg and x["workload"] == w["key"]]
                line += " %s %.0f tx/s" % (cfg, sum(x["txns"] for x in mine) / sum(x["seconds"] for x in mine))
            print(line, flush=True)
        for sc in sidecars:
            if sc.proc.poll() is not None:
                raise RuntimeError("litestream exited during the run:\n" + sc.log.read_text()[-2000:])
    finally:
        for h in hosts.values():
            try:
                h.send("quit")
                h.finish()
            except Exception as e:  # noqa: BLE001
                print("  warning: host:", e)
        for sc in sidecars:
            sc.stop()
        for d in dirs:
            ctx.cleanup(d)
    summary = {}
    for w in workloads:
        k = w["key"]
        sel = [x for x in chunks if x["workload"] == k]
        row = {"name": w["name"], "txns": sum(x["txns"] for x in sel if x["config"] == "plain")}
        for cfg in configs:
            mine = [x for x in sel if x["config"] == cfg]
            row["tps_" + cfg] = sum(x["txns"] for x in mine) / sum(x["seconds"] for x in mine)
            if cfg != "plain":
                ratios = []
                for x in mine:
                    b = [y for y in sel if y["config"] == "plain" and y["round"] == x["round"]]
                    if b:
                        ratios.append(x["tps"] / b[0]["tps"])
                row["ratios_" + cfg] = ratios
                row["ratio_" + cfg] = median(ratios)
                row["ratio_min_" + cfg] = min(ratios)
                row["ratio_max_" + cfg] = max(ratios)
                row["ratio_total_" + cfg] = row["tps_" + cfg] / row["tps_plain"]
            if cfg.startswith("ours"):
                row["drain_s_" + cfg] = median([x["seconds"] for x in drains if x["config"] == cfg and x["workload"] == k])
        summary[k] = row
    return {"rounds": rounds, "chunk_s": chunk_s, "quiet_s": quiet_s, "workloads": workloads,
            "summary": summary, "chunks": chunks, "drains": drains}


# ---------------------------------------------------------------- b. latency

def poll_new_l0(client, prefix, last_key, timeout=30.0, every=0.005):
    """Wait for an L0 key after last_key; returns (key, seconds waited)."""
    t0 = time.perf_counter()
    while True:
        keys = key_names(client, BUCKET, prefix + "/0000/", start_after=last_key)
        if keys:
            return keys[-1], time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("no new L0 object under %s within %ss" % (prefix, timeout))
        time.sleep(every)


def visible_latency(ctx, cfg, n, gap_s):
    """commit (acknowledged by the host) -> a new L0 object listed in the bucket, n times."""
    prefix = ctx.prefix("b-" + cfg)
    d, db = ctx.fresh_db(prefix)
    sc = None
    if cfg.startswith("ours"):
        params = ctx.ours(db, prefix, {"ours-1s": "1s", "ours-0": "0"}[cfg])
    else:
        params = ctx.plain(db)
        sc = ctx.sidecar(d, db, prefix, *{"litestream": ("1s", None),
                                           "litestream-100ms": ("100ms", "100ms")}[cfg])
    host = HostProc(HOST_PY, "serve", params)
    lat = []
    try:
        assert host.readline() == "ready"
        keys = key_names(ctx.client, BUCKET, prefix + "/0000/")
        last = keys[-1] if keys else None
        rng = random.Random(5)
        for _ in range(n):
            time.sleep(rng.uniform(0, gap_s))
            # let whatever was in flight land first, so the next object is ours
            keys = key_names(ctx.client, BUCKET, prefix + "/0000/", start_after=last)
            last = keys[-1] if keys else last
            host.call("commit")
            last, waited = poll_new_l0(ctx.client, prefix, last)
            lat.append(waited * 1000)
    finally:
        try:
            host.send("quit")
            host.finish()
        except Exception as e:  # noqa: BLE001
            print("  warning: host:", e)
        if sc:
            sc.stop()
    ctx.cleanup(d)
    return lat


def measure_b(ctx):
    out = {}
    # ours: commit + litestream_sync(), timed inside the host
    n = ctx.args.lat_n or (1000 if ctx.full else 200)
    for cfg, interval in (("ours-0", "0"), ("ours-1s", "1s")):
        out["sync_" + cfg] = {"lat_ms": [], "commit_ms": []}
    for rep in range(2):
        for cfg, interval in ((("ours-0", "0"), ("ours-1s", "1s")) if rep == 0 else
                              (("ours-1s", "1s"), ("ours-0", "0"))):
            prefix = ctx.prefix("b-sync-" + cfg)
            d, db = ctx.fresh_db(prefix)
            params = ctx.ours(db, prefix, interval)
            params.update(n=n // 2, gap_ms=20)
            res, _ = run_program(HOST_PY, "synclat", params)
            out["sync_" + cfg]["lat_ms"] += res["lat_ms"]
            out["sync_" + cfg]["commit_ms"] += res["commit_ms"]
            ctx.cleanup(d)
    for k in list(out):
        v = out[k]["lat_ms"]
        out[k].update(n=len(v), p50=pct(v, 50), p99=pct(v, 99), max=max(v),
                      commit_p50=pct(out[k]["commit_ms"], 50))
        print("  b %-22s n=%d p50 %.1f ms p99 %.1f ms" % (k, len(v), out[k]["p50"], out[k]["p99"]), flush=True)
    # everyone: commit -> object visible
    m = ctx.args.vis_n or (100 if ctx.full else 20)
    plan = [("ours-0", 2 * m, 0.3), ("litestream-100ms", 2 * m, 0.3),
            ("ours-1s", m, 0.5), ("litestream", m, 0.5)]
    vis = {cfg: [] for cfg, _, _ in plan}
    for rep in range(2):
        for cfg, count, gap in (plan if rep == 0 else plan[::-1]):
            vis[cfg] += visible_latency(ctx, cfg, count // 2, gap)
    for cfg, v in vis.items():
        out["visible_" + cfg] = {"lat_ms": v, "n": len(v), "p50": pct(v, 50), "p99": pct(v, 99),
                                 "max": max(v)}
        print("  b visible %-16s n=%d p50 %.0f ms p99 %.0f ms" % (cfg, len(v), pct(v, 50), pct(v, 99)),
              flush=True)
    return out


# ---------------------------------------------------------------- c. sustained rate

def measure_c(ctx):
    # 256 KiB transactions updating random rows of a 256 MiB table: within one sync interval most
    # changed pages are distinct (a small table would let every replicator ship each page once
    # per interval however often it changed, hiding the cost)
    rows, row_bytes, keys = 4, 65536, 4096
    rates = [2, 4, 8, 16, 32, 64, 128, 256, 512]
    step_s = 10 if ctx.full else 4
    out = {"txn_bytes": rows * row_bytes, "step_s": step_s}
    plans = [("plain", None, None, 2.0), ("ours-1s", "1s", 3000, 2.0), ("ours-0", "0", 2000, 2.0),
             ("litestream", "1s", None, 2.0)]
    if not ctx.full:
        plans = [p for p in plans if p[0] != "ours-0"]
    for cfg, interval, lag_limit, drain_limit in plans:
        prefix = ctx.prefix("c-" + cfg)
        d, db = ctx.fresh_db(prefix, keys, row_bytes)
        sc = None
        if cfg.startswith("ours"):
            params = ctx.ours(db, prefix, interval, synchronous="NORMAL")
        elif cfg == "plain":  # the writer's own ceiling, nothing replicating
            params = ctx.plain(db, synchronous="NORMAL")
        else:
            params = ctx.plain(db, synchronous="NORMAL")
            sc = ctx.sidecar(d, db, prefix)
            # run by the host; the reference binary exits at start with AWS_CA_BUNDLE set
            params["drain_cmd"] = ["env", "-u", reference.CA_BUNDLE, ctx.lbin, "sync", "-wait",
                                   "-timeout", "120", "-socket", str(sc.sock), str(db)]
        params.update(rows=rows, row_bytes=row_bytes, update_keys=keys, rates_mib=rates,
                      step_s=step_s, lag_limit_ms=lag_limit or 10 ** 9, drain_limit_s=drain_limit)
        try:
            res, _ = run_program(HOST_PY, "rate", params, timeout=1800)
        finally:
            if sc:
                sc.stop()
        ok = [s["achieved_mib_s"] for s in res["steps"] if s["replication_ok"]]
        last = res["steps"][-1]
        out[cfg] = {"steps": res["steps"], "max_sustained_mib_s": max(ok) if ok else 0,
                    "lag_limit_ms": lag_limit, "drain_limit_s": drain_limit,
                    "ended_by": ("replication fell behind at %s MiB/s" % last["offered_mib_s"])
                    if not last["replication_ok"] else
                    ("writer saturated at %s MiB/s (achieved %.0f)" % (last["offered_mib_s"], last["achieved_mib_s"]))
                    if last["writer_saturated"] else "top of the scale"}
        print("  c %-10s kept up to %.0f MiB/s; %s" % (cfg, out[cfg]["max_sustained_mib_s"], out[cfg]["ended_by"]), flush=True)
        ctx.cleanup(d)
    return out


# ---------------------------------------------------------------- d. CPU / RSS

def measure_d(ctx):
    mb = ctx.args.cpu_mb or (500 if ctx.full else 100)
    reps = ctx.args.reps or (3 if ctx.full else 2)
    # appends: every page change is a new page, as in the reference figures (the WAL holds all
    # of it and each replicator has to ship all of it)
    rows, row_bytes, keys = 16, 65536, None
    configs = ["plain", "ours-1s", "litestream"]
    runs = []
    for r, order in rotations(configs, reps):
        for cfg in order:
            prefix = ctx.prefix("d-" + cfg)
            d, db = ctx.fresh_db(prefix, 16, row_bytes)
            base = {"rows": rows, "row_bytes": row_bytes, "update_keys": keys, "mb": mb}
            if cfg == "litestream":
                params = ctx.plain(db, synchronous="NORMAL")
                params.update(base, hold_for_sidecar=True)
                sc = ctx.sidecar(d, db, prefix)
                try:
                    cpu_start, _ = sc.usage()
                    host = HostProc(HOST_PY, "cpu", params)
                    line = host.readline()
                    assert line == "written", line
                    catchup = sc.sync_wait()
                    cpu, hwm = sc.usage()
                    host.send("")
                    res, _, _ = host.finish()
                finally:
                    sc.stop()
                res.update(catchup_s=catchup, sidecar_cpu_s=cpu, sidecar_cpu_s_at_ready=cpu_start,
                           sidecar_vm_hwm_kb=hwm)
            else:
                params = (ctx.plain(db, "NORMAL") if cfg == "plain"
                          else ctx.ours(db, prefix, "1s", synchronous="NORMAL"))
                params.update(base)
                res, _ = run_program(HOST_PY, "cpu", params, timeout=3600)
            res.pop("status", None)
            runs.append({"rep": r, "config": cfg, **res})
            print("  d rep %d %-10s %.0f MiB/s, host cpu %.1f s (ext threads %.1f s), host HWM %.0f MB, catch-up %s%s" % (
                r, cfg, res["mib_s"], res["cpu_s"], res["ext_thread_cpu_s"], res["vm_hwm_kb"] / 1024,
                "%.1f s" % res["catchup_s"] if res.get("catchup_s") is not None else "-",
                ", sidecar cpu %.1f s HWM %.0f MB" % (res["sidecar_cpu_s"], res["sidecar_vm_hwm_kb"] / 1024)
                if cfg == "litestream" else ""), flush=True)
            ctx.cleanup(d)
    plain_cpu = median([x["cpu_s"] for x in runs if x["config"] == "plain"])
    plain_hwm = median([x["vm_hwm_kb"] for x in runs if x["config"] == "plain"])
    ours = [x for x in runs if x["config"] == "ours-1s"]
    side = [x for x in runs if x["config"] == "litestream"]
    summary = {
        "mib": mb,
        "plain_host_cpu_s": plain_cpu, "plain_host_hwm_mb": plain_hwm / 1024,
        "plain_write_mib_s": median([x["mib_s"] for x in runs if x["config"] == "plain"]),
        "plain_max_wal_mb": median([x["max_wal_size"] for x in runs if x["config"] == "plain"]) / 1e6,
        "ours_cpu_s": median([x["cpu_s"] - plain_cpu for x in ours]),
        "ours_thread_cpu_s": median([x["ext_thread_cpu_s"] for x in ours]),
        "ours_rss_mb": median([(x["vm_hwm_kb"] - plain_hwm) / 1024 for x in ours]),
        "ours_host_hwm_mb": median([x["vm_hwm_kb"] / 1024 for x in ours]),
        "ours_catchup_s": median([x["catchup_s"] for x in ours]),
        "ours_write_mib_s": median([x["mib_s"] for x in ours]),
        "ours_max_wal_mb": median([x["max_wal_size"] for x in ours]) / 1e6,
        "sidecar_cpu_s": median([x["sidecar_cpu_s"] for x in side]),
        "sidecar_rss_mb": median([x["sidecar_vm_hwm_kb"] / 1024 for x in side]),
        "sidecar_catchup_s": median([x["catchup_s"] for x in side]),
        "sidecar_write_mib_s": median([x["mib_s"] for x in side]),
        "sidecar_max_wal_mb": median([x["max_wal_size"] for x in side]) / 1e6,
        "sidecar_host_cpu_s": median([x["cpu_s"] for x in side]),
    }
    return {"reps": reps, "summary": summary, "runs": runs}


# ---------------------------------------------------------------- report

def fmt(v, spec="%.2f"):
    return "-" if v is None else spec % v


def table(rows, headers):
    w = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(cells)) + " |"
    out = [line(headers), "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def report(res):
    info = res["machine"]
    lines = ["## Benchmark (%s; %s, nproc %s, %s; host SQLite %s; commit %s; %s run)" % (
        info["date"], info["cpu"], info["nproc"], info["mem"], info["host_sqlite"], res["git"],
        "full" if res["full"] else "default"), "",
        "Load average at start %s, at end %s (other tenants share this machine: compare ratios, "
        "not absolute rates). %s; SeaweedFS 4.48 on loopback." % (
            "/".join("%.1f" % x for x in info["loadavg"]),
            "/".join("%.1f" % x for x in info.get("loadavg_end", [])), res.get("litestream", "")), ""]
    if "a" in res:
        a = res["a"]
        lines += ["### a. Commit rate with replication ÷ plain SQLite in WAL mode", "",
                  "Median of %d per-round ratios [min-max]; each round runs every configuration for %.0f s "
                  "in rotating order with %.1f s pauses; plain tx/s is the mean over its chunks." % (
                      a["rounds"], a["chunk_s"], a["quiet_s"]), ""]
        rows = []
        for k, s in a["summary"].items():
            cell = lambda cfg: "%s [%s-%s]" % (fmt(s["ratio_" + cfg]), fmt(s["ratio_min_" + cfg]), fmt(s["ratio_max_" + cfg]))
            rows.append([s["name"], fmt(s["tps_plain"], "%.0f"),
                         cell("ours-1s"), cell("ours-0"), cell("litestream")])
        lines += [table(rows, ["workload", "plain tx/s", "ours, sync-interval 1s", "ours, sync-interval 0", "Litestream 0.5.17 sidecar"]), ""]
        lines += ["Reference (test-infrastructure.md): sidecar, 3000 one-row FULL: %s." % REFERENCE["sidecar_commit_ratio_small_full"], ""]
    if "b" in res:
        b = res["b"]
        lines += ["### b. Durable-commit latency", ""]
        rows = [["ours, commit + litestream_sync(), sync-interval 0", b["sync_ours-0"]["n"], fmt(b["sync_ours-0"]["p50"], "%.1f"), fmt(b["sync_ours-0"]["p99"], "%.1f")],
                ["ours, commit + litestream_sync(), sync-interval 1s", b["sync_ours-1s"]["n"], fmt(b["sync_ours-1s"]["p50"], "%.1f"), fmt(b["sync_ours-1s"]["p99"], "%.1f")]]
        names = {"ours-0": "ours, sync-interval 0, commit → L0 visible",
                 "ours-1s": "ours, sync-interval 1s, commit → L0 visible (no sync call)",
                 "litestream": "Litestream, default intervals, commit → L0 visible",
                 "litestream-100ms": "Litestream, sync+monitor 100ms, commit → L0 visible"}
        for cfg, name in names.items():
            v = b.get("visible_" + cfg)
            if v:
                rows.append([name, v["n"], fmt(v["p50"], "%.0f"), fmt(v["p99"], "%.0f")])
        lines += [table(rows, ["measure", "n", "p50 ms", "p99 ms"]), ""]
        lines += ["Reference: Litestream default %s; 100 ms intervals %s." % (
            REFERENCE["sidecar_visible_default"], REFERENCE["sidecar_visible_100ms"]), ""]
    if "c" in res:
        c = res["c"]
        lines += ["### c. Highest sustained write rate with replication keeping up", "",
                  "%d KiB transactions (random bytes, updating random rows of a 256 MiB table), synchronous=NORMAL; offered rate "
                  "doubled in %d s steps; kept up = the backlog drained within 2 s after the step and (ours) "
                  "lag_ms stayed under 3 s (sync-interval 1s) / 2 s (0) in the step's second half; a failing "
                  "step is retried once." % (c["txn_bytes"] // 1024, c["step_s"]), ""]
        rows = []
        for cfg in ("plain", "ours-1s", "ours-0", "litestream"):
            if cfg in c:
                steps = c[cfg]["steps"]
                ok = [s for s in steps if s["replication_ok"]]
                top = max(ok, key=lambda s: s["achieved_mib_s"]) if ok else None
                rows.append([cfg, fmt(c[cfg]["max_sustained_mib_s"], "%.0f"),
                             fmt(top and top["max_lag_ms_2nd_half"], "%d") if cfg.startswith("ours") else "n/a",
                             fmt(top and top["max_wal_size"] / 1e6, "%.0f"),
                             fmt(top and top["drain_s"], "%.2f"), c[cfg]["ended_by"]])
        lines += [table(rows, ["replicator", "kept up to MiB/s (achieved)", "max lag ms", "max WAL MB", "drain s", "stepping ended"]), ""]
    if "d" in res:
        s = res["d"]["summary"]
        lines += ["### d. Cost of replicating %d MiB of page changes (1 MiB transactions appending random bytes, synchronous=NORMAL; median of %d)" % (
            s["mib"], res["d"]["reps"]), ""]
        rows = [["ours: host with extension − plain host", fmt(s["ours_cpu_s"], "%.1f"), fmt(s["ours_rss_mb"], "%.0f"),
                 fmt(s["ours_catchup_s"], "%.1f"), fmt(s["ours_max_wal_mb"], "%.0f"), fmt(s["ours_write_mib_s"], "%.0f")],
                ["ours: the extension's threads alone", fmt(s["ours_thread_cpu_s"], "%.1f"), "", "", "", ""],
                ["Litestream 0.5.17 sidecar process", fmt(s["sidecar_cpu_s"], "%.1f"), fmt(s["sidecar_rss_mb"], "%.0f"),
                 fmt(s["sidecar_catchup_s"], "%.1f"), fmt(s["sidecar_max_wal_mb"], "%.0f"), fmt(s["sidecar_write_mib_s"], "%.0f")],
                ["(plain host, no replication)", fmt(s["plain_host_cpu_s"], "%.1f"), fmt(s["plain_host_hwm_mb"], "%.0f") + " (total)",
                 "-", fmt(s["plain_max_wal_mb"], "%.0f"), fmt(s["plain_write_mib_s"], "%.0f")]]
        lines += [table(rows, ["replicator", "CPU s", "peak RSS MB", "catch-up s", "max WAL MB", "writer MiB/s"]), ""]
        lines += ["Reference: sidecar, 553 MB: %s." % REFERENCE["sidecar_cpu_553MB"], ""]
    for kind in ("upload", "restore"):
        for path, data in sorted(res.get("included", {}).get(kind, {}).items()):
            lines += ["### %s benchmark (%s)" % (kind, path), "", "```", json.dumps(data, indent=1)[:3000], "```", ""]
    return "\n".join(lines)


def include_others():
    """JSON written by the upload and restore benchmarks, if present."""
    out = {}
    for kind in ("upload", "restore"):
        for path in sorted(glob.glob(str(OUT / ("%s*.json" % kind)))):
            try:
                out.setdefault(kind, {})[os.path.basename(path)] = json.loads(Path(path).read_text())
            except (OSError, ValueError) as e:
                print("warning: cannot read %s: %s" % (path, e))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the documented run (longer, larger)")
    ap.add_argument("--only", default="a,b,c,d", help="comma-separated measures: a,b,c,d")
    ap.add_argument("--port", type=int, default=port_from_env("BENCH_S3_PORT"),
                    help="SeaweedFS base port (default: BENCH_S3_PORT, else a free one)")
    ap.add_argument("--reps", type=int, help="rounds for a, rotations for d")
    ap.add_argument("--lat-n", type=int, help="b: commit+sync samples per config")
    ap.add_argument("--vis-n", type=int, help="b: commit->visible samples (default-interval configs)")
    ap.add_argument("--cpu-mb", type=int, help="d: MiB of page changes")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if not os.path.exists(EXT + ".so"):
        sys.exit("missing %s.so: run cargo build --release first" % EXT)
    ctx = Ctx(args)
    ctx.lbin = reference.litestream_bin()
    server = S3Server(buckets=(BUCKET,), port=args.port)
    print("starting SeaweedFS (state %s) ..." % server.state, flush=True)
    server.start()
    print("SeaweedFS on %s" % server.endpoint, flush=True)
    ctx.endpoint, ctx.client = server.endpoint, server.client()
    res = {"machine": machine_info(), "git": git_rev(), "full": args.full,
           "litestream": reference.version(ctx.lbin), "reference": REFERENCE}
    t_all = time.time()
    try:
        for m in args.only.split(","):
            m = m.strip()
            t0 = time.time()
            print("== measure %s" % m, flush=True)
            res[m] = {"a": measure_a, "b": measure_b, "c": measure_c, "d": measure_d}[m](ctx)
            res.setdefault("seconds", {})[m] = time.time() - t0
    finally:
        server.stop(remove_state=not args.keep)
        if not args.keep:
            shutil.rmtree(ctx.work, ignore_errors=True)
    res["seconds_total"] = time.time() - t_all
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["included"] = include_others()
    OUT.mkdir(parents=True, exist_ok=True)
    text = report(res)
    res["report_md"] = text
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("bench-%s%s.json" % (stamp, "-full" if args.full else ""), "latest.json"):
        (OUT / name).write_text(json.dumps(res, indent=1))
    (OUT / "latest.md").write_text(text + "\n")
    print()
    print(text)
    print("wrote %s and bench/out/latest.{json,md} (%.0f s)" % (OUT / ("bench-%s.json" % stamp), res["seconds_total"]))


if __name__ == "__main__":
    main()
