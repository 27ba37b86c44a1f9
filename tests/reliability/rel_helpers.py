"""What the reliability tests share beyond pysupport: the crash writer driven with every output
recorded for the secret scan (rel_common.seen), restores checked against the database, this
suite's SeaweedFS servers, and tmpfs mounts for the file-replica faults (root only)."""
import json
import os
import subprocess
import tempfile
from pathlib import Path

from pysupport import crash_trials
from pysupport.crash_trials import start_writer
from pysupport.ports import port_from_env
from pysupport.s3server import S3Server
from rel_common import ACCESS_KEY, SECRET_KEY, seen


__all__ = ["can_mount", "finish_writer", "inspect", "mount_tmpfs", "read_status_log", "remount",
           "restore_and_compare", "restore_env", "same_rows", "seaweedfs", "start_writer", "umount"]


def seaweedfs(port_variable, bucket):
    """A SeaweedFS of this suite's own (SigV4 with ACCESS_KEY / SECRET_KEY) serving `bucket`, on
    the port the environment variable names (else a free one), in a temporary state dir."""
    return S3Server(buckets=(bucket,), port=port_from_env(port_variable), access_key=ACCESS_KEY,
                    secret_key=SECRET_KEY)


def finish_writer(writer, timeout=300):
    """The writer's result once it ended by itself (its outputs recorded)."""
    res, out, err = writer.finish(timeout=timeout)
    seen("writer stderr", err)
    seen("writer stdout", out)
    return res


def read_status_log(path):
    text = Path(path).read_text()
    seen("status log %s" % path, text)
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def restore_env():
    return crash_trials.restore_env(ACCESS_KEY, SECRET_KEY)


def inspect(db):
    """integrity_check, counter range and digest of a database (crash_host.py inspect)."""
    return crash_trials.host("inspect", {"db": str(db)})[0]


def same_rows(a, b):
    return (a["digest"], a["max"], a["bulk"]) == (b["digest"], b["max"], b["bulk"])


def restore_and_compare(ext, url, out, db, acked):
    """Restore (ours) equals the database and holds every acknowledged value."""
    res, err = crash_trials.host("restore", {"ext": ext, "url": url, "out": str(out),
                                             "overwrite": True}, env=restore_env())
    seen("restore", res)
    seen("restore stderr", err)
    assert "error" not in res, res
    assert res["integrity"] == "ok", res
    assert res["max"] >= acked, "restored max %s < acknowledged %d" % (res["max"], acked)
    assert res["count"] == res["max"] and res["min"] == 1, "counter has holes: %s" % res
    src = inspect(db)
    assert src["integrity"] == "ok", src
    assert same_rows(res, src), "restore differs from the database: %s vs %s" % (res, src)
    return res


def can_mount():
    if os.geteuid() != 0:
        return False
    probe = Path(tempfile.mkdtemp(prefix="litestream-rel-mount-probe-"))
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
