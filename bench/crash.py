#!/usr/bin/env python3
"""Crash trials: SIGKILL a replicating writer at random moments; nothing acknowledged is lost.

    .venv/bin/python bench/crash.py                 # 20 trials (the CI subset, ~1-2 min)
    .venv/bin/python bench/crash.py --trials 200    # the documented run
    S3_ENDPOINT=http://127.0.0.1:9743 ... crash.py  # reuse a running server (test/testtesttest)

What one trial does and checks: pysupport/crash_trials.py (shared with
tests/reliability/test_crash.py). Prints one line per trial and a summary; writes
bench/out/crash-<time>.json. Exit 1 on any failure; failing trials keep their work directory.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport import crash_trials  # noqa: E402
from pysupport.paths import extension_path  # noqa: E402
from pysupport.ports import port_from_env  # noqa: E402
from pysupport.report import git_rev, machine_info, write_record  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--kills", type=int, default=1, help="SIGKILLs per trial on the same database")
    ap.add_argument("--max-run", type=float, default=2.5, help="latest kill, seconds after launch")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--port", type=int, default=port_from_env("CRASH_S3_PORT"),
                    help="SeaweedFS base port (default: CRASH_S3_PORT, else a free one)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                    help="use this configuration in every trial instead of random draws (repeatable)")
    args = ap.parse_args()
    bad = [kv for kv in args.config if "=" not in kv]
    if bad:
        ap.error("--config takes KEY=VALUE, got %s" % bad)
    ext = extension_path()
    if not os.path.exists(ext + ".so"):
        sys.exit("missing %s.so: run cargo build --release first" % ext)
    s = crash_trials.run(args.trials, args.kills, args.max_run, args.seed,
                         os.environ.get("S3_ENDPOINT"), args.port, keep=args.keep, ext=ext,
                         force=dict(kv.split("=", 1) for kv in args.config) or None)
    s["machine"] = machine_info()
    s["git"] = git_rev()
    path = write_record("crash", s)
    print("\n%d/%d trials passed (%d kills, %d before replication started, %d with an empty replica; "
          "%d restarts needed a snapshot; %d LTX files checked) in %.0f s, seed %d -> %s" % (
              s["passed"], s["trials"], s["kills"], s["kills_before_start"], s["kills_with_empty_replica"],
              s["restarts_with_snapshot"], s["ltx_files_checked"], s["seconds"], s["seed"], path))
    for f in s["failures"]:
        print("FAILED trial %d: %s" % (f["trial"], f["error"][:2000]))
    sys.exit(1 if s["failures"] else 0)


if __name__ == "__main__":
    main()
