#!/usr/bin/env python3
"""What a commit costs the writing thread, in instructions (valgrind --tool=callgrind counts
instructions, not seconds: the same figure whatever else the machine is doing).

    .venv/bin/python bench/commit_instructions.py                   # plain vs ours
    .venv/bin/python bench/commit_instructions.py --also OTHER.so   # and another build, same run

/usr/bin/python3 commits --commits one-row transactions (synchronous=NORMAL, WAL) on the
main thread: without the extension (plain), and with it replicating to SeaweedFS at
sync-interval 1s (ours). Reported: the main thread's instructions, their ratio to plain's
(plain ÷ ours: 1.0 = free), and the extension's instructions per commit on that thread (start,
first sync and stop included, amortized). The other threads (replicator, I/O) are listed apart.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport.awsenv import child_env  # noqa: E402
from pysupport.paths import HOST_PYTHON, extension_path  # noqa: E402
from pysupport.s3server import S3Server  # noqa: E402

WRITER = r'''
import os, sys, tempfile
sys.path.insert(0, %(repo)r)
from pysupport.hostside import configure, connect, one
ext, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = connect(os.path.join(tempfile.mkdtemp(), "a.db"), ext or None)
c.execute("PRAGMA journal_mode=wal"); c.execute("PRAGMA synchronous=NORMAL")
c.execute("CREATE TABLE t(b BLOB)")
if ext:
    configure(c, [("url", "s3://bench/commit-%%d?endpoint=%%s" %% (os.getpid(), endpoint)),
                  ("sync-interval", "1s")])
    one(c, "SELECT litestream_start()")
    one(c, "SELECT litestream_sync(60000)")
row = b"x" * 100
for _ in range(n):
    c.execute("INSERT INTO t VALUES (?)", (row,))
if ext:
    one(c, "SELECT litestream_stop()")
'''


def run(ext, endpoint, commits, work):
    """Instructions per thread (main first) of one writer under callgrind."""
    out = Path(tempfile.mkdtemp(dir=work))
    script = out / "writer.py"
    script.write_text(WRITER % {"repo": str(Path(__file__).resolve().parents[1])})
    subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                    "--callgrind-out-file=%s/cg.%%p" % out, HOST_PYTHON, str(script),
                    ext or "", endpoint, str(commits)],
                   check=True, capture_output=True, env=child_env())
    threads = []
    for f in sorted(glob.glob(str(out / "cg.*-*")), key=lambda p: int(p.rsplit("-", 1)[1])):
        m = re.search(r"^(?:summary|totals): (\d+)", Path(f).read_text(errors="replace"), re.M)
        threads.append(int(m.group(1)) if m else 0)
    return threads


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--commits", type=int, default=20000)
    ap.add_argument("--also", action="append", default=[], help="another build of the extension")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="commit-instr-")
    server = S3Server(buckets=("bench",)).start()
    try:
        runs = [("plain", None), ("ours", str(extension_path()))]
        runs += [("also %s" % p, p) for p in args.also]
        results = [(label, run(ext, server.endpoint, args.commits, work)) for label, ext in runs]
    finally:
        server.stop(remove_state=True)
    plain = results[0][1][0]
    print("| run | writer thread instructions | plain ÷ this | per commit | other threads |")
    print("| --- | ---: | ---: | ---: | --- |")
    for label, threads in results:
        main_thread, others = threads[0], threads[1:]
        print("| %s | %d | %.3f | %+.0f | %s |" % (
            label, main_thread, plain / main_thread, (main_thread - plain) / args.commits,
            "%d threads, %.1f M" % (len(others), sum(others) / 1e6) if others else "–"))
    print("\n%d one-row commits, synchronous=NORMAL, sync-interval 1s" % args.commits)


if __name__ == "__main__":
    main()
