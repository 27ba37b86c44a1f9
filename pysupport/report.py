"""What benchmark and trial reports are made of: percentiles, medians, the machine they ran on,
the git revision of the code measured, and where their JSON goes (bench/out/, git-ignored).

These machines are shared and noisy: reports carry the load average and the CPU model so that
figures from different runs are never compared without them."""
import json
import os
import platform
import statistics
import subprocess
import time

from pysupport.paths import BENCH_OUT, HOST_PYTHON, REPO


def pct(values, q):
    """q-th percentile (0-100) by linear interpolation; None for no values."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def median(values):
    """Median of the values that are not None; None if there are none."""
    values = [x for x in values if x is not None]
    return statistics.median(values) if values else None


def _proc_field(path, name):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_info():
    """Date, CPUs, CPU model, memory, kernel, Python, the host's SQLite and the load average."""
    mem_kib = _proc_field("/proc/meminfo", "MemTotal").split()
    host_sqlite = subprocess.run([HOST_PYTHON, "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
                                 text=True, capture_output=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "host": platform.node(),
            "nproc": os.cpu_count(), "cpu": _proc_field("/proc/cpuinfo", "model name"),
            "mem": "%.0f GiB" % (int(mem_kib[0]) / (1 << 20)) if mem_kib else "",
            "kernel": os.uname().release, "python": platform.python_version(),
            "host_sqlite": host_sqlite, "loadavg": os.getloadavg()}


def git_rev():
    """Short HEAD commit, `+dirty` when src/ has uncommitted changes."""
    p = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], text=True,
                       capture_output=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                           text=True, capture_output=True).stdout.strip()
    return p.stdout.strip() + ("+dirty" if dirty else "")


def write_record(name, record):
    """bench/out/<name>-<local time>.json; returns its path."""
    BENCH_OUT.mkdir(parents=True, exist_ok=True)
    path = BENCH_OUT / ("%s-%s.json" % (name, time.strftime("%Y%m%d-%H%M%S")))
    path.write_text(json.dumps(record, indent=1, default=str))
    return path
