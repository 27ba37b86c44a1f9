"""The application process of bench/many.py: `/usr/bin/python3 bench/many_host.py MODE JSON`.

    ours   load the extension on one connection per database, configure each (its own prefix in
           one bucket) and litestream_start() every one; then write `written` of them at `rate`
           transactions per second each for duration_s seconds, sampling this process (threads,
           RSS, CPU) and the written databases' litestream_status() lag; final sync and stop
    plain  the same writes with no extension (the baseline: what the application itself costs)

Prints `RESULT <json>`.
"""
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from pysupport.hostside import configure, connect, one, proc_self, run_modes  # noqa: E402

import json  # noqa: E402

WRITER_THREADS = 4  # the written databases are split among this many application threads
ROW = "x" * 100


def _open_all(p, ext):
    conns = []
    for i, db in enumerate(p["dbs"]):
        c = connect(db, ext)
        c.execute("PRAGMA journal_mode=wal")
        c.execute("PRAGMA synchronous=NORMAL")
        if ext:
            configure(c, [(k, v.replace("{i}", str(i))) for k, v in p["config"]])
            one(c, "SELECT litestream_start()")
        conns.append(c)
    return conns


def _run(p, ext):
    base = proc_self()
    t0 = time.monotonic()
    conns = _open_all(p, ext)
    started_s = time.monotonic() - t0
    # The window measures the steady state: every database's first cycle (lease, listing,
    # initial snapshot) is done before it starts.
    if ext:
        for c in conns:
            one(c, "SELECT litestream_sync(300000)")
    settled_s = time.monotonic() - t0
    time.sleep(p.get("settle_s", 0))
    after_start = proc_self()
    written = conns[:p["written"]]
    stop = threading.Event()
    commits = [0] * WRITER_THREADS

    def writer(k):
        mine = written[k::WRITER_THREADS]
        period = 1.0 / p["rate"]
        nxt = time.monotonic()
        while not stop.is_set():
            for c in mine:
                c.execute("INSERT INTO t(body) VALUES (?)", (ROW,))
                commits[k] += 1
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))

    threads = [threading.Thread(target=writer, args=(k,), daemon=True)
               for k in range(WRITER_THREADS)]
    cpu0 = proc_self()["cpu_s"]
    window = [time.time()]
    for t in threads:
        t.start()
    peak_threads, lags = after_start["threads"], []
    end = time.monotonic() + p["duration_s"]
    while time.monotonic() < end:
        time.sleep(1.0)
        s = proc_self()
        peak_threads = max(peak_threads, s["threads"])
        if ext:
            for c in written:
                lags.append(json.loads(one(c, "SELECT litestream_status()"))["lag_ms"])
    stop.set()
    for t in threads:
        t.join()
    window.append(time.time())
    cpu = proc_self()["cpu_s"] - cpu0
    errors = []
    if ext:
        for c in conns:
            one(c, "SELECT litestream_sync(60000)")
        st = [json.loads(one(c, "SELECT litestream_status()")) for c in conns]
        errors = [s["last_error"] for s in st if s.get("last_error")][:3]
        for c in conns:
            one(c, "SELECT litestream_stop()")
    end_s = proc_self()
    return {"dbs": len(conns), "written": len(written), "start_s": started_s,
            "settled_s": settled_s,
            "threads_base": base["threads"] - 1, "threads_peak": peak_threads - len(threads) - 1,
            "rss_kib": end_s["vmhwm_kib"], "rss_base_kib": base["vmrss_kib"], "cpu_s": cpu,
            "commits": sum(commits), "lags_ms": lags, "errors": errors, "window": window}


def mode_ours(p):
    return _run(p, p["ext"])


def mode_plain(p):
    return _run(p, None)


if __name__ == "__main__":
    run_modes({"ours": mode_ours, "plain": mode_plain})
