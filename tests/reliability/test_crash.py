"""SIGKILL a replicating writer at random moments: nothing acknowledged is lost, restores pass
integrity_check, and the next start continues the TXIDs without a gap (pysupport/crash_trials.py
does the work, as for bench/crash.py; CRASH_TRIALS picks the number of trials, 20 by default, 200
in the documented run)."""
import os

from pysupport import crash_trials
from pysupport.report import write_record
from rel_common import ACCESS_KEY, SECRET_KEY, seen


def test_crash_trials(s3, ext):
    trials = int(os.environ.get("CRASH_TRIALS", "20"))
    kills = int(os.environ.get("CRASH_KILLS", "1"))
    lines = []
    s = crash_trials.run(trials=trials, kills=kills, endpoint=s3.endpoint, access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, log=lines.append, ext=ext,
                         seed=int(os.environ["CRASH_SEED"]) if os.environ.get("CRASH_SEED") else None)
    for tr in s["results"]:
        seen("crash trial %d" % tr["trial"], tr)
    seen("crash failures", s["failures"])
    # the trial record (failures included) in bench/out/, as bench/crash.py keeps it
    print("trial record:", write_record("crash-pytest", s))
    print("\n".join(lines))
    print("%d/%d trials, %d kills (%d before start), %d restarts needed a snapshot, %d LTX files checked, %.0f s, seed %d" % (
        s["passed"], trials, s["kills"], s["kills_before_start"], s["restarts_with_snapshot"],
        s["ltx_files_checked"], s["seconds"], s["seed"]))
    assert not s["failures"], "seed %d:\n%s" % (s["seed"], "\n\n".join(
        "trial %d: %s" % (f["trial"], f["error"]) for f in s["failures"]))


def test_truncate_checkpoint_race(s3, ext):
    """Crash trials with TRUNCATE checkpoints every ~100 WAL pages (truncate-page-n=100)."""
    forced_trials(s3, ext, "truncate", int(os.environ.get("CRASH_TRUNCATE_TRIALS", "6")),
                  force={"truncate-page-n": "100", "sync-interval": "100ms"})


def test_fast_writer_crash_trials(s3, ext):
    """Crash trials with a writer that commits as fast as it can at synchronous=NORMAL and syncs
    only every few thousand commits: the WAL passes 16 MiB within the run, so the kill lands among
    cycles started early, PASSIVE checkpoints run beside the writer (after the read transaction
    moved forward on the spare connection) and the pauses in which the WAL restarts."""
    forced_trials(s3, ext, "fast writer", int(os.environ.get("CRASH_FAST_TRIALS", "6")),
                  max_run=3.0, force={"sync-interval": "1s"},
                  writer={"synchronous": "NORMAL", "sync_every": [2000, 8000]})


def forced_trials(s3, ext, label, trials, **options):
    """`trials` crash trials with the given crash_trials.run options; none may fail."""
    lines = []
    s = crash_trials.run(trials=trials, endpoint=s3.endpoint, access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, log=lines.append, ext=ext, **options)
    for tr in s["results"]:
        seen("%s trial %d" % (label, tr["trial"]), tr)
    seen("%s failures" % label, s["failures"])
    print("\n".join(lines))
    assert not s["failures"], "seed %d:\n%s" % (s["seed"], "\n\n".join(
        "trial %d: %s" % (f["trial"], f["error"]) for f in s["failures"]))
