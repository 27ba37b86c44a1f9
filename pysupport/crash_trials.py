"""Crash trials: SIGKILL a replicating writer at random moments; nothing acknowledged is lost.

One trial:
 1. a fresh database; a writer process (crash_host.py `write`, in /usr/bin/python3) starts
    replication with a randomly drawn configuration (sync-interval 0 / 100ms / 1s; default or
    tiny checkpoint thresholds, so WAL restarts happen under the kill; sometimes TRUNCATE
    checkpoints, sub-second compaction levels and level-9 snapshots), commits a monotonic
    counter (one value per transaction, sometimes with 200 KiB of bulk rows or deletions) and
    calls litestream_sync() every 1-8 commits, appending each acknowledged value to a file
    (fsynced) after the call returned;
 2. SIGKILL at a random moment between 0.05 s and max_run seconds after launch (some land during
    start-up or the first snapshot); repeated `kills` times on the same database;
 3. after each kill: the replica's L0 files are TXIDs 1..M without a gap; our restore passes
    integrity_check, holds the counter values 1..max without a hole, and max >= every
    acknowledged value (and <= what the database itself holds);
 4. finally a clean restart of replication on the original database: the next TXID is M + 1
    (no gap; whether it needed a new snapshot is counted), and a restore equals the database
    (same digest of every row).

run() returns a summary whose `failures` lists what went wrong (empty: every trial passed).
Used by bench/crash.py (the command) and tests/reliability/test_crash.py.
"""
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pysupport.awsenv import ACCESS_KEY, SECRET_KEY
from pysupport.extension import s3_config
from pysupport.ltx import l0_txids, ltx_check_l0
from pysupport.paths import extension_path
from pysupport.pyhost import HostProc, run_program
from pysupport.s3client import s3_client
from pysupport.s3server import S3Server

CRASH_HOST = Path(__file__).resolve().parent / "crash_host.py"
BUCKET = "crash"
HOST_TIMEOUT_S = 180
RESUME_TIMEOUT_S = 300
# CRASH_TRUNCATE=0 leaves truncate-page-n out of the draws (its default, ~500 MB of WAL, is never
# reached here), to tell a TRUNCATE-checkpoint failure from any other.
TRUNCATE_IN_DRAWS = os.environ.get("CRASH_TRUNCATE", "1") == "1"
# Keys that are the same in every trial, left out of the trial record.
FIXED_KEYS = ("access-key-id", "secret-access-key", "endpoint", "bucket", "region",
              "force-path-style", "path")


class TrialFailure(AssertionError):
    pass


def host(mode, params, timeout=HOST_TIMEOUT_S, env=None):
    """crash_host.py MODE to its end: (result, stderr)."""
    return run_program(CRASH_HOST, mode, params, timeout=timeout, env=env)


def start_writer(params, env=None):
    """The writer in the background, once it printed `started`: (HostProc, start time)."""
    w = HostProc(CRASH_HOST, "write", params, env=env)
    w.expect("started")
    return w, time.time()


def restore_env(access_key, secret_key):
    """A restore from a URL takes its credentials from these (no configured replica)."""
    return {"LITESTREAM_ACCESS_KEY_ID": access_key, "LITESTREAM_SECRET_ACCESS_KEY": secret_key}


def read_acked(path):
    """The highest acknowledged counter value in the writer's ack file (0 if none)."""
    try:
        vals = [int(x) for x in Path(path).read_text().split()]
    except FileNotFoundError:
        return 0
    return max(vals) if vals else 0


def draw_config(rng):
    cfg = {"sync-interval": rng.choice(["0", "100ms", "1s"])}
    if rng.random() < 0.5:
        # frequent checkpoints and WAL restarts while the kill can land
        cfg["min-checkpoint-page-count"] = str(rng.choice([10, 50, 200]))
    if rng.random() < 0.25 and TRUNCATE_IN_DRAWS:
        # TRUNCATE checkpoints (the barrier, then wal_checkpoint(TRUNCATE)) under the kill
        cfg["truncate-page-n"] = str(rng.choice([100, 400]))
    if rng.random() < 0.25:
        cfg["checkpoint-interval"] = "1s"
    if rng.random() < 0.25:
        # compaction and level-9 snapshots (read from the live database) under the kill; a
        # restore prefers them to the L0 chain
        cfg["levels"] = "300ms,1s"
        cfg["snapshot-interval"] = "500ms"
    return cfg


def check_restore(ctx, prefix, out, acked, label):
    url = "s3://%s/%s?endpoint=%s" % (BUCKET, prefix, ctx["endpoint"])
    res, _ = host("restore", {"ext": ctx["ext"], "url": url, "out": str(out), "overwrite": True},
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


def _trial_config(i, ctx, rng):
    cfg = draw_config(rng)  # drawn even when forced: a seed gives the same kills either way
    if ctx.get("force"):
        cfg = dict(ctx["force"])
    cfg.setdefault("sync-interval", "1s")
    # The lease has its own kill tests (tests/integration/test_lease.py). Here the writer restarted
    # after a SIGKILL must replicate at once, not stand by until the dead holder's lease expires.
    cfg.setdefault("lease", "off")
    prefix = "crash-%s-%03d" % (ctx["run"], i)
    config = s3_config(BUCKET, prefix, ctx["endpoint"], access_key=ctx["access_key"],
                       secret_key=ctx["secret_key"], sync_interval=cfg.pop("sync-interval"))
    return prefix, config + sorted(cfg.items())


def _kill_once(i, k, ctx, rng, paths, config, prefix):
    """One writer launch, SIGKILLed after a random delay; the replica checked afterwards."""
    db, ackf, out = paths
    params = {"db": str(db), "ext": ctx["ext"], "config": config, "ack": str(ackf),
              "seed": rng.randrange(1 << 30), "synchronous": rng.choice(["NORMAL", "FULL"])}
    params.update(ctx.get("writer") or {})
    delay = rng.uniform(0.05, ctx["max_run"])
    w = HostProc(CRASH_HOST, "write", params)
    time.sleep(delay)
    alive = w.p.poll() is None
    out_s, err_s = w.kill()
    if not alive:
        raise TrialFailure("writer exited before the kill (%s):\n%s" % (w.p.returncode, err_s[-3000:]))
    acked = read_acked(ackf)
    txids = l0_txids(ctx["client"], BUCKET, prefix)
    kill = {"after_s": round(delay, 3), "started": "started" in out_s, "acked": acked,
            "l0_max": len(txids)}
    if txids:
        r = check_restore(ctx, prefix, out, acked, "trial %d kill %d" % (i, k))
        kill.update(restored_max=r["max"] or 0, restored_txid=r["txid"])
    elif acked:
        raise TrialFailure("trial %d kill %d: %d acknowledged but the replica is empty" % (i, k, acked))
    return kill, err_s


def run_trial(i, ctx, rng):
    """One trial; returns a dict (raises TrialFailure on any violation)."""
    client = ctx["client"]
    d = Path(ctx["work"]) / ("t%03d" % i)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    db, ackf, out = d / "db.sqlite", d / "acked.txt", d / "restored.db"
    prefix, config = _trial_config(i, ctx, rng)
    trial = {"trial": i, "config": {k: v for k, v in config if k not in FIXED_KEYS}, "kills": []}
    ctx["last_config"] = trial["config"]
    stderr_all = []
    for k in range(ctx["kills"]):
        kill, err = _kill_once(i, k, ctx, rng, (db, ackf, out), config, prefix)
        trial["kills"].append(kill)
        stderr_all.append(err)
    # clean restart on the original database: resumes at M + 1, restore equals the database
    m_before = len(l0_txids(client, BUCKET, prefix))
    try:
        state = json.loads((d / ".db.sqlite-litestream" / "extension-state.json").read_text())
        state_txid = state["position"]["txid"]
    except (OSError, ValueError, KeyError, TypeError):
        state_txid = None
    params = {"db": str(db), "ext": ctx["ext"], "config": config, "ack": str(ackf),
              "seed": rng.randrange(1 << 30), "commits": ctx["resume_commits"], "sync_every": [1, 5]}
    res, err = host("write", params, timeout=RESUME_TIMEOUT_S)
    stderr_all.append(err)
    last_kill = trial["kills"][-1]
    if last_kill.get("restored_max", 0) > res["before"]:
        raise TrialFailure("trial %d: restore had counter %d beyond the database's %d" % (
            i, last_kill["restored_max"], res["before"]))
    txids = l0_txids(client, BUCKET, prefix)
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
    r = check_restore(ctx, prefix, out, read_acked(ackf), "trial %d after restart" % i)
    src, _ = host("inspect", {"db": str(db)})
    if src["integrity"] != "ok":
        raise TrialFailure("trial %d: the source database fails integrity_check: %s" % (i, src["integrity"]))
    compared = ("max", "count", "bulk", "digest")
    if (r["digest"], r["max"], r["bulk"]) != (src["digest"], src["max"], src["bulk"]):
        raise TrialFailure("trial %d: restore after restart differs from the database: %s vs %s" % (
            i, {k: r[k] for k in compared}, {k: src[k] for k in compared}))
    if ctx["ltx_check_every"] and i % ctx["ltx_check_every"] == 0:
        trial["ltx_checked"] = ltx_check_l0(client, BUCKET, prefix)
    trial["stderr"] = stderr_all
    if not ctx.get("keep"):
        shutil.rmtree(d, ignore_errors=True)
    return trial


def _describe(config):
    return " ".join("%s=%s" % kv for kv in (config or {}).items())


def _log_pass(log, i, tr):
    k, resume = tr["kills"][-1], tr["resume"]
    log("trial %3d ok  %-60s kill@%.2fs acked %4d restored %4s l0 %3d | restart: +%d commits, l0 %d->%d%s" % (
        i, _describe(tr["config"]), k["after_s"], k["acked"], k.get("restored_max", "-"), k["l0_max"],
        resume["last"] - resume["before"], resume["l0_before"], resume["l0_after"],
        (" (snapshot; state file at %s)" % resume["state_txid_before"])
        if resume["snapshot_on_restart"] else ""))


def summarize(seed, trials, kills, results, failures, seconds):
    kills_all = [k for tr in results for k in tr["kills"]]
    return {
        "seed": seed, "trials": trials, "kills_per_trial": kills, "passed": len(results),
        "failures": failures, "seconds": seconds,
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


def run(trials=20, kills=1, max_run=2.5, seed=None, endpoint=None, port=None, work=None,
        resume_commits=30, ltx_check_every=5, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
        keep=False, log=print, force=None, ext=None, writer=None):
    """Run the trials (on a SeaweedFS of their own unless endpoint is given; `port` fixes its
    port). `force`: the configuration of every trial; `writer`: parameters of the killed writer
    (crash_host.py write) over the drawn ones. Returns the summary dict; summary['failures']
    lists what went wrong."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    server = None
    if not endpoint:
        server = S3Server(buckets=(BUCKET,), port=port, access_key=access_key,
                          secret_key=secret_key).start()
        endpoint = server.endpoint
    client = s3_client(endpoint, access_key, secret_key)
    try:
        client.create_bucket(Bucket=BUCKET)
    except Exception:  # noqa: BLE001 - exists already
        pass
    work = Path(work or tempfile.mkdtemp(prefix="litestream-crash-"))
    ctx = {"client": client, "endpoint": endpoint, "work": work, "ext": ext or extension_path(),
           "run": "%s-%d" % (time.strftime("%H%M%S"), os.getpid()), "kills": kills,
           "max_run": max_run, "resume_commits": resume_commits, "ltx_check_every": ltx_check_every,
           "access_key": access_key, "secret_key": secret_key, "keep": keep, "force": force,
           "writer": writer}
    results, failures = [], []
    t0 = time.time()
    try:
        for i in range(trials):
            try:
                tr = run_trial(i, ctx, rng)
                results.append(tr)
                _log_pass(log, i, tr)
            except (AssertionError, subprocess.TimeoutExpired) as e:
                failures.append({"trial": i, "error": str(e), "config": ctx.get("last_config"),
                                 "workdir": str(work / ("t%03d" % i)),
                                 "prefix": "crash-%s-%03d" % (ctx["run"], i)})
                log("trial %3d FAILED (%s; kept %s): %s" % (
                    i, _describe(ctx.get("last_config")), failures[-1]["workdir"], e))
    finally:
        if server:
            server.stop(remove_state=True)
        if not keep and not failures:
            shutil.rmtree(work, ignore_errors=True)
    return summarize(seed, trials, kills, results, failures, time.time() - t0)
