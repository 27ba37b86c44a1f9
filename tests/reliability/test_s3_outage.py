"""The S3 server is SIGKILLed and restarted while the extension replicates: the error shows in
status, litestream_sync() fails cleanly meanwhile, and once the server is back replication
converges with nothing lost (L0 TXIDs without a gap, every object valid, no multipart upload
left open, the restore equals the database)."""
import time

import benchlib as bl
import crash
from conftest import ACCESS_KEY, SECRET_KEY, seen
from helpers import finish_writer, read_status_log, restore_and_compare, start_writer


def test_s3_killed_and_restarted(own_s3, ext, workdir):
    db, ack, slog = workdir / "db.sqlite", workdir / "acked.txt", workdir / "status.jsonl"
    config = bl.ext_config("outage", "db", own_s3.endpoint, "100ms", access_key=ACCESS_KEY,
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
    own_s3.kill9()
    time.sleep(4)
    own_s3.start(fresh=False)
    t_up = time.time()
    res = finish_writer(writer)
    rows = read_status_log(slog)
    during = [r for r in rows if t_kill + 2.0 <= r["t"] <= t_up]
    assert during, "no status sampled during the outage"
    errors = [r["status"] for r in during if r["status"]["state"] == "error" or r["status"]["last_error"]]
    assert errors, "status never showed the outage: %s" % during[-1]
    print("outage error in status:", errors[-1]["last_error"])
    assert res["sync_errors"], "no litestream_sync() failed while the server was down"
    print("sync error meanwhile:", res["sync_errors"][0]["error"])
    for e in res["sync_errors"]:
        assert "litestream_sync" in e["error"] and "timed out" in e["error"], e
    final = res["status"]
    assert final["state"] == "running" and final["last_error"] is None, final
    print("converged %.1f s after the restart; final sync took %.2f s" % (
        rows[-1]["t"] - t_up, res["final_sync_s"]))
    client = own_s3.client()
    txids = crash.l0_txids(client, "outage", "db")
    assert int(res["stopped_txid"], 16) == len(txids)
    crash.ltx_check_all(client, "outage", "db")
    uploads = client.list_multipart_uploads(Bucket="outage").get("Uploads", [])
    assert not uploads, "multipart uploads left open: %s" % [(u["Key"], u["UploadId"]) for u in uploads]
    acked = crash.read_acked(ack)
    url = "s3://outage/db?endpoint=%s" % own_s3.endpoint
    restore_and_compare(ext, url, workdir / "restored.db", db, acked)
