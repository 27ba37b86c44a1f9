"""Helpers for the programs that run inside /usr/bin/python3 and load the extension: PyHost
snippets, bench/host.py, the crash writer (crash_host.py), the soak writer, the lease host.

Standard library only, and nothing that opens a file descriptor on a database file SQLite may
hold locks on (closing one would drop the process's POSIX locks): sizes come from stat().
Connections are in autocommit mode (isolation_level=None): the programs say BEGIN/COMMIT.
A host program ends by printing one `RESULT <json>` line (emit_result) that its driver reads.
"""
import ctypes
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time

from pysupport.paths import SQLITE3

RESULT_PREFIX = "RESULT "
BUSY_TIMEOUT_S = 30
CLI_BUSY_TIMEOUT_MS = 10000


def load(c, ext):
    """Load the extension into connection c; extension loading is off again afterwards."""
    c.enable_load_extension(True)
    try:
        c.load_extension(ext)
    finally:
        c.enable_load_extension(False)


def connect(path, ext=None, timeout=BUSY_TIMEOUT_S):
    """An autocommit connection (usable from any thread), with the extension `ext` loaded if given."""
    c = sqlite3.connect(str(path), isolation_level=None, timeout=timeout, check_same_thread=False)
    if ext:
        load(c, ext)
    return c


def one(c, sql, *args):
    """The first column of the first row, or None."""
    row = c.execute(sql, args).fetchone()
    return None if row is None else row[0]


def error_of(c, sql, *args):
    """The error message of a statement that should fail, or None if it succeeded."""
    try:
        c.execute(sql, args).fetchall()
    except sqlite3.Error as e:
        return str(e)
    return None


def configure(c, pairs):
    for k, v in pairs:
        one(c, "SELECT litestream_configure(?, ?)", k, v)


def status(c):
    return json.loads(one(c, "SELECT litestream_status()"))


def start_replicating(path, ext, pairs, setup=None, timeout=BUSY_TIMEOUT_S):
    """A connection to `path` in WAL mode with the extension loaded, configured with `pairs`,
    that has called litestream_start(); the SQL script `setup` runs first, if given (the
    database then has content when replication starts)."""
    c = connect(path, ext, timeout)
    c.execute("PRAGMA journal_mode=WAL").fetchone()
    if setup:
        c.executescript(setup)
    configure(c, pairs)
    one(c, "SELECT litestream_start()")
    return c


def cli(db, sql):
    """Run SQL in a separate sqlite3 process (another process writing to the database)."""
    p = subprocess.run([SQLITE3, "-bail", "-cmd", ".timeout %d" % CLI_BUSY_TIMEOUT_MS, str(db)],
                       input=sql, text=True, capture_output=True)
    if p.returncode:
        raise RuntimeError("sqlite3 %s failed: %s" % (db, p.stderr))
    return p.stdout


def logger(name):
    """A log(*args) that writes `[name <seconds since now>] args` to stderr (progress a driver
    shows when the program fails or hangs)."""
    t0 = time.time()

    def log(*args):
        print("[%s %.2fs]" % (name, time.time() - t0), *args, file=sys.stderr, flush=True)
    return log


def file_size(path):
    """Size of a file, 0 if it does not exist (stat only: no descriptor on a database file)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def wal_size(db):
    return file_size(str(db) + "-wal")


def cpu_seconds():
    """User + system CPU seconds of this process (every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def vm_hwm_kib():
    """Peak resident set size of this process (KiB)."""
    return proc_self().get("vmhwm_kib", 0)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _find_mallinfo2():
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    fn.restype = _Mallinfo2
    return fn


_MALLINFO2 = _find_mallinfo2()


def malloc_kib():
    """glibc's own view of its heap (mallinfo2, all arenas): bytes in use by malloc callers
    (`malloc_used_kib`), bytes free but kept in the arenas (`malloc_free_kib`) and in
    malloc's own mmapped blocks (`malloc_mmap_kib`). Empty when the C library has no mallinfo2."""
    if _MALLINFO2 is None:
        return {}
    m = _MALLINFO2()
    return {"malloc_used_kib": m.uordblks // 1024, "malloc_free_kib": m.fordblks // 1024,
            "malloc_mmap_kib": m.hblkhd // 1024}


def proc_self():
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem (KiB), glibc's heap (malloc_kib), threads,
    open fds and CPU seconds of this process."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[k.lower() + "_kib"] = int(v.split()[0])
            elif k == "Threads":
                out["threads"] = int(v)
    out["fds"] = len(os.listdir("/proc/self/fd"))
    out["cpu_s"] = cpu_seconds()
    out.update(malloc_kib())
    return out


def thread_cpu():
    """CPU seconds per thread name of this process (the extension names its threads
    litestream-replicator and litestream-io; SQLite and Python run on MainThread)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/stat" % tid) as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return out


def emit_result(result):
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_modes(modes, argv=None):
    """`program MODE JSON`: runs modes[MODE](params) and emits its result."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in modes:
        sys.exit("usage: %s MODE JSON, MODE one of %s (got %r)" % (
            os.path.basename(sys.argv[0]), ", ".join(sorted(modes)), argv[:1]))
    emit_result(modes[argv[0]](json.loads(argv[1])))
