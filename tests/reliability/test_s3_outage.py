"""The S3 server is SIGKILLed and restarted while the extension replicates (6 MiB multipart
uploads in flight around the kill): the error shows in status, litestream_sync() fails cleanly
meanwhile, and once the server is back replication converges with nothing lost (L0 TXIDs without
a gap, every object valid, the restore equals the database, every acknowledged value present).
Separately: no multipart upload may be left open on the server."""
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from pysupport.crash_trials import read_acked
from pysupport.extension import s3_config
from pysupport.ltx import l0_txids, ltx_check_l0
from pysupport.s3client import uploads_left
from rel_common import ACCESS_KEY, SECRET_KEY, seen_files
from rel_helpers import (finish_writer, read_status_log, restore_and_compare, seaweedfs,
                         start_writer)


@pytest.fixture(scope="module")
def outage(ext):
    """Runs the scenario once; the tests below check its outcome."""
    work = Path(tempfile.mkdtemp(prefix="litestream-rel-outage-"))
    server = seaweedfs("RELIABILITY_S3_PORT2", "outage").start()
    try:
        db, ack, slog = work / "db.sqlite", work / "acked.txt", work / "status.jsonl"
        config = s3_config("outage", "db", server.endpoint, access_key=ACCESS_KEY,
                           secret_key=SECRET_KEY)
        writer, t0 = start_writer({
            "db": str(db), "ext": ext, "config": config, "ack": str(ack), "seed": 7,
            "duration_s": 10, "pace_s": 0.005, "sync_every": [2, 10], "tolerate_sync_errors": True,
            "sync_timeout_ms": 1500, "final_sync_timeout_ms": 120000, "status_log": str(slog),
            "status_every_s": 0.1, "bulk_p": 0.05,
            # 6 MiB transactions (multipart uploads) just before and during the outage
            "big_at_s": [1.8, 2.6]})
        time.sleep(max(0.0, t0 + 2.0 - time.time()))
        t_kill = time.time()
        server.kill9()
        time.sleep(4)
        server.start(fresh=False)
        t_up = time.time()
        res = finish_writer(writer)
        rows = read_status_log(slog)
        client = server.client()
        yield {"server": server, "client": client, "work": work, "db": db, "ack": ack, "res": res,
               "rows": rows, "t_kill": t_kill, "t_up": t_up,
               "uploads": uploads_left(client, "outage")}
    finally:
        server.stop(remove_state=True)
        seen_files("outage workdir", work)
        shutil.rmtree(work, ignore_errors=True)


def test_s3_killed_and_restarted_converges(outage, ext):
    res, rows = outage["res"], outage["rows"]
    during = [r for r in rows if outage["t_kill"] + 2.0 <= r["t"] <= outage["t_up"]]
    assert during, "no status sampled during the outage"
    errors = [r["status"] for r in during if r["status"]["state"] == "error" or r["status"]["last_error"]]
    assert errors, "status never showed the outage: %s" % during[-1]
    print("\noutage error in status:", errors[-1]["last_error"])
    assert res["sync_errors"], "no litestream_sync() failed while the server was down"
    print("sync error meanwhile:", res["sync_errors"][0]["error"])
    for e in res["sync_errors"]:
        assert "litestream_sync" in e["error"] and "timed out" in e["error"], e
    final = res["status"]
    assert final["state"] == "running" and final["last_error"] is None, (
        "state %r, last_error %r after the final sync" % (final["state"], final["last_error"]))
    assert final["multipart_uploads"] >= 1, "no multipart upload happened: %s" % final
    print("final sync after the restart took %.2f s" % res["final_sync_s"])
    txids = l0_txids(outage["client"], "outage", "db")
    assert int(res["stopped_txid"], 16) == len(txids)
    ltx_check_l0(outage["client"], "outage", "db")
    url = "s3://outage/db?endpoint=%s" % outage["server"].endpoint
    restore_and_compare(ext, url, outage["work"] / "restored.db", outage["db"], read_acked(outage["ack"]))


def test_s3_outage_leaves_no_open_multipart_upload(outage):
    # A part that fails while the server is down is retried in rounds; an upload that still
    # fails is aborted, and an abort that fails is retried before the next upload (src/s3/upload.rs).
    uploads = outage["uploads"]
    assert not uploads, "multipart uploads left open: %s" % [(u["Key"], u["UploadId"]) for u in uploads]
