"""Helpers for the reliability tests: run crash_host.py, check replicas, mount tmpfs."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import benchlib as bl
import crash
from rel_common import seen

LTX_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")


def start_writer(params):
    """The writer as a background process; waits until it printed `started`."""
    p = subprocess.Popen([bl.HOST_PYTHON, str(crash.CRASH_HOST), "write", json.dumps(params)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=bl.child_env())
    line = p.stdout.readline()
    if not line.startswith("started"):
        out, err = p.communicate(timeout=30)
        raise AssertionError("writer did not start: %s %s %s" % (line, out, err[-3000:]))
    return p, time.time()


def finish_writer(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    seen("writer stderr", err)
    seen("writer stdout", out)
    res = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
    assert p.returncode == 0 and res is not None, "writer exited %s:\n%s" % (p.returncode, err[-4000:])
    return res


def read_status_log(path):
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    seen("status log %s" % path, Path(path).read_text())
    return rows


def restore_and_compare(ext, url, out, db, acked):
    """Restore (ours) equals the database and holds every acknowledged value."""
    from rel_common import ACCESS_KEY, SECRET_KEY
    res, err = crash.host("restore", {"ext": ext, "url": url, "out": str(out), "overwrite": True},
                          env=crash.restore_env(ACCESS_KEY, SECRET_KEY))
    seen("restore", res)
    seen("restore stderr", err)
    assert "error" not in res, res
    assert res["integrity"] == "ok", res
    assert res["max"] >= acked, "restored max %s < acknowledged %d" % (res["max"], acked)
    assert res["count"] == res["max"] and res["min"] == 1, "counter has holes: %s" % res
    src, _ = crash.host("inspect", {"db": str(db)})
    assert src["integrity"] == "ok", src
    assert (res["digest"], res["max"], res["bulk"]) == (src["digest"], src["max"], src["bulk"]), (
        "restore differs from the database: %s vs %s" % (res, src))
    return res


def file_l0_txids(directory):
    """TXIDs of a file replica's L0 files (ltx/0/<min>-<max>.ltx), checked 1..M without gaps;
    every file decodes with ltx_check.py."""
    sys.path.insert(0, str(bl.TOOLS))
    import ltx_check
    d = Path(directory) / "ltx" / "0"
    txids = []
    for f in sorted(d.iterdir()) if d.exists() else []:
        m = LTX_NAME.match(f.name)
        assert m, "unexpected file in the replica: %s" % f
        assert m.group(1) == m.group(2), f
        ltx_check.decode(f.read_bytes())
        txids.append(int(m.group(1), 16))
    assert txids == list(range(1, len(txids) + 1)), "gap in %s: %s" % (d, txids)
    return txids


def can_mount():
    if os.geteuid() != 0:
        return False
    probe = Path("/tmp/litestream-rel-mount-probe-%d" % os.getpid())
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return ok


def mount_tmpfs(path, size):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", str(path)],
                   check=True, capture_output=True)


def remount(path, opts):
    subprocess.run(["mount", "-o", "remount,%s" % opts, str(path)], check=True, capture_output=True)


def umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)
