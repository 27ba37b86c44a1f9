"""A `file` replica whose directory turns read-only, or whose disk fills up: a clear error in
status (naming the directory and the OS reason), litestream_sync() fails cleanly, the host keeps
running, and replication resumes by itself once the directory is writable / has space again."""
import os
import re
import time

import pytest

from pysupport.crash_trials import read_acked
from pysupport.extension import file_config
from pysupport.ltx import file_l0_txids
from rel_helpers import (can_mount, finish_writer, mount_tmpfs, read_status_log, remount,
                         restore_and_compare, start_writer, umount)

MOUNT = can_mount()


def run_fault(ext, workdir, replica, break_it, fix_it, reason_re, extra=None):
    db, ack, slog = workdir / "db.sqlite", workdir / "acked.txt", workdir / "status.jsonl"
    params = {"db": str(db), "ext": ext, "config": file_config(replica), "ack": str(ack), "seed": 11,
              "duration_s": 8, "pace_s": 0.005, "sync_every": [2, 10], "tolerate_sync_errors": True,
              "sync_timeout_ms": 1000, "final_sync_timeout_ms": 120000, "status_log": str(slog),
              "status_every_s": 0.1}
    params.update(extra or {})
    writer, t0 = start_writer(params)
    time.sleep(max(0.0, t0 + 1.5 - time.time()))
    t_break = time.time()
    break_it()
    time.sleep(3)
    fix_it()
    t_fix = time.time()
    res = finish_writer(writer)
    rows = read_status_log(slog)
    during = [r["status"] for r in rows if t_break + 1.0 <= r["t"] <= t_fix]
    errs = [s for s in during if s["last_error"]]
    assert errs, "status never showed the fault: %s" % (during[-1:] or rows[-1:])
    msg = errs[-1]["last_error"]
    print("status during the fault: state=%s last_error=%s" % (errs[-1]["state"], msg))
    assert errs[-1]["state"] == "error", errs[-1]
    assert re.search(reason_re, msg), "the error does not give the OS reason: %s" % msg
    assert str(replica) in msg, "the error does not name the replica directory: %s" % msg
    assert res["sync_errors"], "litestream_sync() never failed during the fault"
    print("litestream_sync() meanwhile:", res["sync_errors"][0]["error"])
    final = res["status"]
    assert final["state"] == "running" and final["last_error"] is None, final
    txids = file_l0_txids(replica)
    assert int(res["stopped_txid"], 16) == len(txids)
    restore_and_compare(ext, "file://%s" % replica, workdir / "restored.db", db, read_acked(ack))
    # Compaction writes other levels (ltx/<level>/); anything not named like an LTX file there
    # (a *.tmp left by a failed write) is a leftover.
    ltx_name = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{16}\.ltx$")
    leftovers = [p for p in replica.rglob("*") if p.is_file()
                 and not (p.parent.parent.name == "ltx" and p.parent.name.isdigit() and ltx_name.match(p.name))]
    assert not leftovers, "temporary files left in the replica: %s" % leftovers


def test_read_only_directory(ext, workdir):
    replica = workdir / "replica"
    replica.mkdir()
    if MOUNT:
        mount_tmpfs(replica, "256m")
        brk, fix = (lambda: remount(replica, "ro")), (lambda: remount(replica, "rw"))
    elif os.geteuid() != 0:
        brk, fix = (lambda: os.chmod(replica / "ltx" / "0", 0o555)), (lambda: os.chmod(replica / "ltx" / "0", 0o755))
    else:
        pytest.skip("root without mount(2): cannot make a directory read-only for ourselves")
    try:
        run_fault(ext, workdir, replica, brk, fix, r"(?i)read-only file system|permission denied")
    finally:
        if MOUNT:
            umount(replica)


@pytest.mark.skipif(not MOUNT, reason="needs root and mount(2) for a small tmpfs")
def test_full_disk(ext, workdir):
    replica = workdir / "replica"
    replica.mkdir()
    mount_tmpfs(replica, "4m")
    try:
        run_fault(ext, workdir, replica,
                  # fill what is left, leaving the replicator no room
                  lambda: os.system("dd if=/dev/zero of=%s/filler bs=64k 2>/dev/null" % replica),
                  lambda: (os.unlink(replica / "filler"), remount(replica, "size=256m")),
                  r"(?i)no space left on device",
                  extra={"bulk_p": 0.2})
    finally:
        umount(replica)
