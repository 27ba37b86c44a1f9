"""Faults: an unreachable S3 endpoint, and a corrupt object in the replica."""
import json
import re

import pytest

from pysupport.extension import s3_config, s3_url
from pysupport.ltx import check_s3_replica, ltx_decode
from pysupport.ports import closed_port
from pysupport.shell import replicate_shell, restore_shell


def test_unreachable_endpoint(pyhost, tmp_path):
    """start succeeds, status reports the error, sync(1000) fails with a timeout error in about
    a second, and stop returns (it may report the failed final sync) instead of hanging."""
    endpoint = "http://127.0.0.1:%d" % closed_port()
    r = pyhost.run("""
        c = start_replicating(P["db"], P["config"])
        log("started")
        c.execute("CREATE TABLE t(x)")
        c.execute("INSERT INTO t VALUES (1)")
        deadline = time.time() + 15
        st = status(c)
        while not st.get("last_error") and time.time() < deadline:
            time.sleep(0.1)
            st = status(c)
        log("status:", st)
        t0 = time.time()
        sync_err = error_of(c, "SELECT litestream_sync(1000)")
        sync_s = time.time() - t0
        log("sync(1000) after %.1fs:" % sync_s, sync_err)
        st_after = status(c)
        t0 = time.time()
        stop_err = error_of(c, "SELECT litestream_stop()")
        log("stop after %.1fs:" % (time.time() - t0), stop_err)
        result = {"status": st, "sync_err": sync_err, "sync_s": sync_s, "status_after": st_after,
                  "stop_err": stop_err, "stop_s": time.time() - t0}
    """, timeout=150, db=str(tmp_path / "u.db"), config=s3_config("unreachable", "db", endpoint))
    st, seen = r["status"], "\n" + json.dumps(r, indent=1)
    assert st["state"] in ("running", "error"), seen
    assert st.get("last_error"), "status shows no error after 15 s against a closed port" + seen
    assert r["sync_err"], "litestream_sync(1000) succeeded against a closed port" + seen
    assert re.search(r"(?i)time[ d-]*out", r["sync_err"]), seen
    assert r["sync_s"] < 10, "litestream_sync(1000) took %.1f s" % r["sync_s"] + seen
    assert r["status_after"]["state"] in ("running", "error"), seen
    assert r["stop_s"] < 60, "litestream_stop() took %.1f s" % r["stop_s"] + seen


@pytest.mark.parametrize("where", ["trailer", "page-data"])
def test_corrupt_object_fails_restore(ext, s3, bucket, tmp_path, where):
    src = tmp_path / "src.db"
    # L0 only (no compaction, no level-9 snapshot), so that the corrupted file is in the plan
    replicate_shell(ext, src, s3_config(bucket, "db", s3.endpoint, levels="off", snapshot_interval="0"))
    # the object holding the largest page frame: an incompressible page of the workload's blob
    size, start, target = max(((size, start, info) for info in check_s3_replica(s3.client, bucket, "db")
                               for _, (start, size) in info["pages"]), key=lambda t: t[:2])
    assert size > 4000, "no incompressible page in the replica"
    obj = s3.client.get_object(Bucket=bucket, Key=target["key"])
    data = bytearray(obj["Body"].read())
    # last byte of the file checksum, or the middle of that page's LZ4 literals
    off = len(data) - 1 if where == "trailer" else start + size // 2
    data[off] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):  # ltx_check.py agrees it is a checksum fault
        ltx_decode(bytes(data))
    s3.client.put_object(Bucket=bucket, Key=target["key"], Body=bytes(data), Metadata=obj["Metadata"])

    out = tmp_path / "out.db"
    p = restore_shell(ext, out, url=s3_url(bucket, "db", s3.endpoint), check=False)
    assert p.returncode != 0, "restore of a corrupt replica succeeded"
    assert re.search(r"(?i)checksum", p.stderr), p.stderr
    leftovers = sorted(x.name for x in tmp_path.iterdir() if x.name.startswith("out.db"))
    assert not leftovers, "restore left %s behind" % leftovers
