#!/usr/bin/env python3
"""Crash trials: SIGKILL a replicating writer at random moments; nothing acknowledged is lost.

    .venv/bin/python bench/crash.py                 # 20 trials (the CI subset, ~1-2 min)
    .venv/bin/python bench/crash.py --trials 200    # the documented run
    S3_ENDPOINT=http://127.0.0.1:9743 ... crash.py  # reuse a running server (test/testtesttest)

One trial:
 1. a fresh database; a writer process (/usr/bin/python3 bench/crash_host.py write) starts
    replication with a randomly drawn configuration (sync-interval 0 / 100ms / 1s; default or
    tiny checkpoint thresholds, so WAL restarts happen under the kill; sometimes sub-second
    compaction levels and level-9 snapshots), commits a monotonic
    counter (one value per transaction, sometimes with 200 KiB of bulk rows or deletions) and
    calls litestream_sync() every 1-8 commits, appending each acknowledged value to a file
    (fsynced) after the call returned;
 2. SIGKILL at a random moment between 0.05 s and --max-run seconds after launch (some land
    during start-up or the first snapshot); repeated --kills times on the same database;
 3. after each kill: the replica's L0 files are TXIDs 1..M without a gap; our restore passes
    integrity_check, holds the counter values 1..max without a hole, and max >= every
    acknowledged value (and <= what the database itself holds);
 4. finally a clean restart of replication on the original database: the next TXID is M + 1
    (no gap; whether it needed a new snapshot is counted), and a restore equals the database
    (same digest of every row).
Prints one line per trial and a summary; writes bench/out/crash-<time>.json. Exit 1 on any
failure.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

CRASH_HOST = bl.REPO / "bench" / "crash_host.py"
LTX_KEY = re.compile(r"/0000/([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")


class TrialFailure(AssertionError):
    pass


def host(mode, params, timeout=180, env=None):
    p = subprocess.run([bl.HOST_PYTHON, str(CRASH_HOST), mode, json.dumps(params)], text=True,
                       capture_output=True, timeout=timeout, env=bl.child_env(env))
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
    if p.returncode != 0 or res is None:
        raise TrialFailure("crash_host %s exited %d\n%s" % (mode, p.returncode, p.stderr[-4000:]))
    return res, p.stderr


def l0_txids(client, bucket, prefix):
    """TXIDs of the L0 files, checked to run 1..M without a gap (names only)."""
    keys = bl.list_keys(client, bucket, prefix + "/0000/")
    txids = []
    for k in keys:
        m = LTX_KEY.search(k)
        if not m:
            raise TrialFailure("unexpected object %s" % k)
        lo, hi = int(m.group(1), 16), int(m.group(2), 16)
        if lo != hi:
            raise TrialFailure("L0 file %s spans several TXIDs" % k)
        txids.append(lo)
    txids.sort()
    if txids != list(range(1, len(txids) + 1)):
        missing = sorted(set(range(1, (max(txids) if txids else 0) + 1)) - set(txids))
        raise TrialFailure("L0 TXIDs have a gap: missing %s (have %d files, max %s)" % (
            missing[:10], len(txids), max(txids) if txids else None))
    return txids


def ltx_check_all(client, bucket, prefix):
    """Every object decodes with tests/tools/ltx_check.py (checksums included)."""
    sys.path.insert(0, str(bl.TOOLS))
    import ltx_check
    n = 0
    for k in bl.list_keys(client, bucket, prefix + "/0000/"):
        data = client.get_object(Bucket=bucket, Key=k)["Body"].read()
        try:
            ltx_check.decode(data)
        except Exception as e:  # noqa: BLE001
            raise TrialFailure("%s fails ltx_check.py: %s" % (k, e)) from e
        n += 1
    return n


def restore_env(access_key, secret_key):
    return {"LITESTREAM_ACCESS_KEY_ID": access_key, "LITESTREAM_SECRET_ACCESS_KEY": secret_key}


def read_acked(path):
    try:
        vals = [int(x) for x in Path(path).read_text().split()]
    except FileNotFoundError:
        return 0
    return max(vals) if vals else 0


# TRUNCATE checkpoints currently lose commits that land between the replicator's barrier and
# its wal_checkpoint(TRUNCATE) (see tests/reliability/test_crash.py::test_truncate_checkpoint_race).
# Until that is fixed the random draws leave truncate-page-n at its default (~500 MB, never reached
# here); set CRASH_TRUNCATE=1 (or this constant) to draw small values again.
TRUNCATE_IN_DRAWS = os.environ.get("CRASH_TRUNCATE", "1") == "1"


def draw_config(rng):
    cfg = {"sync-interval": rng.choice(["0", "100ms", "1s"])}
    if rng.random() < 0.5:
        # frequent checkpoints and WAL restarts while the kill can land
        cfg["min-checkpoint-page-count"] = str(rng.choice([10, 50, 200]))
    if rng.random() < 0.25 and TRUNCATE_IN_DRAWS:
        cfg["truncate-page-n"] = str(rng.choice([100, 400]))
    if rng.random() < 0.25:
        cfg["checkpoint-interval"] = "1s"
    if rng.random() < 0.25:
        # compaction and level-9 snapshots (read from the live database) under the kill; a
        # restore prefers them to the L0 chain
        cfg["levels"] = "300ms,1s"
        cfg["snapshot-interval"] = "500ms"
    return cfg


def check_restore(client, ctx, prefix, out, acked, label):
    url = "s3://%s/%s?endpoint=%s" % (ctx["bucket"], prefix, ctx["endpoint"])
    # a restore from a URL takes its credentials from LITESTREAM_ACCESS_KEY_ID/SECRET_ACCESS_KEY
    res, _ = host("restore", {"ext": bl.EXT, "url": url, "out": str(out), "overwrite": True},
                  env=restore_env(ctx["access_key"], ctx["secret_key"]))
    if "error" in res:
        raise TrialFailure("%s: restore failed: %s" % (label, res["error"]))
    if res["integrity"] != "ok":
        raise TrialFailure("%s: restored integrity_check: %s" % (label, res["integrity"]))
    mx, cnt, mn = res["max"] or 0, res["count"], res["min"]
    if mx and (mn != 1 or cnt != mx):
        raise TrialFailure("%s: restored counter has holes: count %d min %s max %d" % (label, cnt, mn, mx))
    if mx < acked:
        raise TrialFailure("%s: LOST acknowledged commits: restored max %d < acknowledged %d" % (
            label, mx, acked))
    return res


def run_trial(i, ctx, rng):
    """One trial; returns a dict (raises TrialFailure on any violation)."""
    client, bucket = ctx["client"], ctx["bucket"]
    prefix = "crash-%s-%03d" % (ctx["run"], i)
    d = Path(ctx["work"]) / ("t%03d" % i)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    db, ackf, out = d / "db.sqlite", d / "acked.txt", d / "restored.db"
    cfg = draw_config(rng)
    if ctx.get("force"):
        cfg = dict(ctx["force"])
        cfg.setdefault("sync-interval", "1s")
    # The lease has its own kill tests (tests/integration/test_lease.py). Here the writer restarted
    # after a SIGKILL must replicate at once, not stand by until the dead holder's lease expires.
    cfg.setdefault("lease", "off")
    config = bl.ext_config(bucket, prefix, ctx["endpoint"], cfg.pop("sync-interval"),
                           access_key=ctx["access_key"], secret_key=ctx["secret_key"])
    config += sorted(cfg.items())
    trial = {"trial": i, "config": {k: v for k, v in config if k not in (
        "access-key-id", "secret-access-key", "endpoint", "bucket", "region", "force-path-style",
        "path")},
             "kills": []}
    ctx["last_config"] = trial["config"]
    stderr_all = []
    for k in range(ctx["kills"]):
        params = {"db": str(db), "ext": bl.EXT, "config": config, "ack": str(ackf),
                  "seed": rng.randrange(1 << 30), "synchronous": rng.choice(["NORMAL", "FULL"])}
        delay = rng.uniform(0.05, ctx["max_run"])
        p = subprocess.Popen([bl.HOST_PYTHON, str(CRASH_HOST), "write", json.dumps(params)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=bl.child_env())
        time.sleep(delay)
        alive = p.poll() is None
        p.send_signal(signal.SIGKILL)
        out_s, err_s = p.communicate(timeout=30)
        stderr_all.append(err_s)
        if not alive:
            raise TrialFailure("writer exited before the kill (%s):\n%s" % (p.returncode, err_s[-3000:]))
        started = "started" in out_s
        acked = read_acked(ackf)
        txids = l0_txids(client, bucket, prefix)
        kill = {"after_s": round(delay, 3), "started": started, "acked": acked, "l0_max": len(txids)}
        if txids:
            r = check_restore(client, ctx, prefix, out, acked, "trial %d kill %d" % (i, k))
            kill.update(restored_max=r["max"] or 0, restored_txid=r["txid"])
        elif acked:
            raise TrialFailure("trial %d kill %d: %d acknowledged but the replica is empty" % (i, k, acked))
        trial["kills"].append(kill)
    # clean restart on the original database: resumes at M + 1, restore equals the database
    m_before = len(l0_txids(client, bucket, prefix))
    try:
        state = json.loads((d / ".db.sqlite-litestream" / "extension-state.json").read_text())
        state_txid = state["position"]["txid"]
    except (OSError, ValueError, KeyError, TypeError):
        state_txid = None
    params = {"db": str(db), "ext": bl.EXT, "config": config, "ack": str(ackf),
              "seed": rng.randrange(1 << 30), "commits": ctx["resume_commits"], "sync_every": [1, 5]}
    res, err = host("write", params, timeout=300)
    stderr_all.append(err)
    for kill in trial["kills"]:
        if kill.get("restored_max", 0) > res["before"] and kill is trial["kills"][-1]:
            raise TrialFailure("trial %d: restore had counter %d beyond the database's %d" % (
                i, kill["restored_max"], res["before"]))
    txids = l0_txids(client, bucket, prefix)
    if len(txids) <= m_before:
        raise TrialFailure("trial %d: the restart uploaded nothing (max TXID %d)" % (i, m_before))
    st = res["status"]
    trial["resume"] = {"before": res["before"], "last": res["last"], "l0_before": m_before,
                       "state_txid_before": state_txid,
                       "l0_after": len(txids), "snapshot_on_restart": bool(st.get("snapshots")),
                       "stopped_txid": res["stopped_txid"], "status": st}
    if int(res["stopped_txid"], 16) != len(txids):
        raise TrialFailure("trial %d: litestream_stop() returned %s but the replica ends at %d" % (
            i, res["stopped_txid"], len(txids)))
    r = check_restore(client, ctx, prefix, out, read_acked(ackf), "trial %d after restart" % i)
    src, _ = host("inspect", {"db": str(db)})
    if src["integrity"] != "ok":
        raise TrialFailure("trial %d: the source database fails integrity_check: %s" % (i, src["integrity"]))
    if (r["digest"], r["max"], r["bulk"]) != (src["digest"], src["max"], src["bulk"]):
        raise TrialFailure("trial %d: restore after restart differs from the database: %s vs %s" % (
            i, {k: r[k] for k in ("max", "count", "bulk", "digest")},
            {k: src[k] for k in ("max", "count", "bulk", "digest")}))
    if ctx["ltx_check_every"] and i % ctx["ltx_check_every"] == 0:
        trial["ltx_checked"] = ltx_check_all(client, bucket, prefix)
    trial["stderr"] = stderr_all
    if not ctx.get("keep"):
        shutil.rmtree(d, ignore_errors=True)
    return trial


def run(trials=20, kills=1, max_run=2.5, seed=None, endpoint=None, port=9743, work=None,
        resume_commits=30, ltx_check_every=5, access_key="test", secret_key="testtesttest",
        keep=False, log=print, force=None):
    """Run the trials (starting a SeaweedFS unless endpoint is given). Returns the summary dict;
    summary['failures'] lists what went wrong."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    server = None
    if not endpoint:
        server = bl.S3Server(port, "/tmp/s3-bench-crash-%d" % port, buckets=("crash",),
                             access_key=access_key, secret_key=secret_key).start()
        endpoint = server.endpoint
    bucket = "crash"
    client = bl.s3_client(endpoint, access_key, secret_key)
    try:
        client.create_bucket(Bucket=bucket)
    except Exception:  # noqa: BLE001 - exists already
        pass
    work = Path(work or bl.mkwork("litestream-crash-"))
    ctx = {"client": client, "bucket": bucket, "endpoint": endpoint, "work": work,
           "run": "%s-%d" % (time.strftime("%H%M%S"), os.getpid()), "kills": kills, "max_run": max_run,
           "resume_commits": resume_commits, "ltx_check_every": ltx_check_every,
           "access_key": access_key, "secret_key": secret_key, "keep": keep, "force": force}
    results, failures = [], []
    t0 = time.time()
    try:
        for i in range(trials):
            try:
                tr = run_trial(i, ctx, rng)
                results.append(tr)
                k = tr["kills"][-1]
                log("trial %3d ok  %-60s kill@%.2fs acked %4d restored %4s l0 %3d | restart: +%d commits, l0 %d->%d%s" % (
                    i, " ".join("%s=%s" % kv for kv in tr["config"].items()), k["after_s"], k["acked"],
                    k.get("restored_max", "-"), k["l0_max"], tr["resume"]["last"] - tr["resume"]["before"],
                    tr["resume"]["l0_before"], tr["resume"]["l0_after"],
                    (" (snapshot; state file at %s)" % tr["resume"]["state_txid_before"])
                    if tr["resume"]["snapshot_on_restart"] else ""))
            except (TrialFailure, subprocess.TimeoutExpired, bl.HostError) as e:
                failures.append({"trial": i, "error": str(e), "config": ctx.get("last_config"),
                                 "workdir": str(Path(work) / ("t%03d" % i)),
                                 "prefix": "crash-%s-%03d" % (ctx["run"], i)})
                log("trial %3d FAILED (%s; kept %s): %s" % (
                    i, " ".join("%s=%s" % kv for kv in (ctx.get("last_config") or {}).items()),
                    failures[-1]["workdir"], e))
    finally:
        if server:
            server.stop()
            shutil.rmtree(server.state, ignore_errors=True)
        if not keep and not failures:
            shutil.rmtree(work, ignore_errors=True)
    kills_all = [k for tr in results for k in tr["kills"]]
    summary = {
        "seed": seed, "trials": trials, "kills_per_trial": kills, "passed": len(results),
        "failures": failures, "seconds": time.time() - t0,
        "kills": len(kills_all),
        "kills_before_start": sum(1 for k in kills_all if not k["started"]),
        "kills_with_empty_replica": sum(1 for k in kills_all if not k["l0_max"]),
        "acked_total": sum(k["acked"] for k in kills_all),
        "restarts_with_snapshot": sum(1 for tr in results if tr["resume"]["snapshot_on_restart"]),
        # the state file matched the replica, yet the restart could not prove WAL continuity
        "restarts_with_snapshot_despite_state": sum(
            1 for tr in results if tr["resume"]["snapshot_on_restart"]
            and tr["resume"]["state_txid_before"] == tr["resume"]["l0_before"]),
        "ltx_files_checked": sum(tr.get("ltx_checked", 0) for tr in results),
        "results": results,
    }
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--kills", type=int, default=1, help="SIGKILLs per trial on the same database")
    ap.add_argument("--max-run", type=float, default=2.5, help="latest kill, seconds after launch")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--port", type=int, default=int(os.environ.get("CRASH_S3_PORT", 9743)))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                    help="use this configuration in every trial instead of random draws (repeatable)")
    args = ap.parse_args()
    if not os.path.exists(bl.EXT + ".so"):
        sys.exit("missing %s.so: run cargo build --release first" % bl.EXT)
    s = run(args.trials, args.kills, args.max_run, args.seed, os.environ.get("S3_ENDPOINT"),
            args.port, keep=args.keep,
            force=dict(kv.split("=", 1) for kv in args.config) or None)
    out = bl.REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("crash-%s.json" % time.strftime("%Y%m%d-%H%M%S"))
    s["machine"] = bl.machine_info()
    s["git"] = bl.git_rev()
    path.write_text(json.dumps(s, indent=1))
    print("\n%d/%d trials passed (%d kills, %d before replication started, %d with an empty replica; "
          "%d restarts needed a snapshot; %d LTX files checked) in %.0f s, seed %d -> %s" % (
              s["passed"], s["trials"], s["kills"], s["kills_before_start"], s["kills_with_empty_replica"],
              s["restarts_with_snapshot"], s["ltx_files_checked"], s["seconds"], s["seed"], path))
    for f in s["failures"]:
        print("FAILED trial %d: %s" % (f["trial"], f["error"][:2000]))
    sys.exit(1 if s["failures"] else 0)


if __name__ == "__main__":
    main()
