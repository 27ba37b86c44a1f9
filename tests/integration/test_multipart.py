"""Multipart uploads, part-size and concurrency, exactly as the S3 advanced configuration guide says
(s3-advanced-configuration.md), against SeaweedFS (enforces EntityTooSmall).

- the parser through SQL: every format in the guide, the limits, the guide's provider examples,
  and the exact error texts of 0, -5MB, 5XB, 4MB, 6GB, '', 1e9, 5 MB;
- a 64 MiB object at part-size 5MB with concurrency 1, 3, 10 through the extension's own uploader
  (examples/s3_upload.rs): 13 parts, the last one smaller, ETag `-13`, intact, never more than
  `concurrency` parts in flight, memory bounded by part-size × concurrency;
- a replication run whose first snapshot is larger than part-size goes multipart (status shows it
  in flight), restores intact, and sends no aws-chunked trailers or SDK checksums;
- faults: resets mid-body, 503s and a stalled response are retried per part; an upload that fails
  for good is aborted; the server stopped mid-upload, the process stopped or killed mid-upload:
  ListMultipartUploads is empty afterwards;
- skip-verify=true against an HTTPS endpoint with a self-signed certificate.

The proxy (pysupport/s3proxy.py) sits between the uploader and the server to record requests, inject faults,
slow uploads down, or terminate TLS.
"""
import base64
import hashlib
import json
import os
import subprocess
import threading
import time

import pytest

from pysupport.awsenv import child_env
from pysupport.extension import s3_config, s3_url
from pysupport.ltx import check_s3_replica
from pysupport.paths import REPO, UPLOADER
from pysupport.pyhost import PyHostError, snippet
from pysupport.s3client import list_keys, uploads_left
from pysupport.s3proxy import S3Proxy, self_signed_cert
from pysupport.s3server import S3Server
from pysupport.shell import assert_restores

MIB = 1 << 20
PART = 5 * MIB
SIZE_EXPECTED = ("expected a whole number of bytes (5242880, 5.24288e6) or a number with K, KB, "
                 "M, MB, G or GB (1024-based, e.g. 5MB, 1.5MB, 1GB)")
MIN_TEXT = "is below the S3 minimum of 5 MiB (5242880 bytes)"
MAX_TEXT = "is above the S3 maximum of 5 GiB (5368709120 bytes)"


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="session")
def uploader():
    """target/release/examples/s3_upload (built here if missing: the lib is already built)."""
    if not UPLOADER.exists():
        p = subprocess.run(["cargo", "build", "--release", "--example", "s3_upload"],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-4000:]
    return str(UPLOADER)


@pytest.fixture(scope="session")
def blob64(tmp_path_factory):
    path = tmp_path_factory.mktemp("blob") / "64mib.bin"
    path.write_bytes(os.urandom(64 * MIB))
    return path


def upload(uploader, endpoint, bucket, key, path, *settings, timeout=300):
    p = subprocess.run([uploader, "s3://%s/x?endpoint=%s" % (bucket, endpoint), key, str(path),
                        *settings], capture_output=True, text=True, timeout=timeout,
                       env=child_env())
    lines = p.stdout.strip().splitlines()
    assert lines, "s3_upload printed nothing (exit %d): %s" % (p.returncode, p.stderr[-2000:])
    return json.loads(lines[-1])


def upload_through(uploader, s3, bucket, key, path, *settings, timeout=300, **proxy_options):
    """upload() through an S3Proxy(s3.port, **proxy_options) in front of the server; returns
    (the uploader's result, the stopped proxy with its requests)."""
    with S3Proxy(s3.port, **proxy_options) as proxy:
        r = upload(uploader, proxy.url, bucket, key, path, *settings, timeout=timeout)
    return r, proxy


def nth(op, faults):
    """A proxy rule: the n-th request (from 1) of kind `op` gets the fault faults(n) (a dict or a
    function of n; None passes it); every other request passes."""
    fault_of = faults.get if isinstance(faults, dict) else faults
    count = {"n": 0}

    def rule(req):
        if req.op() != op:
            return None
        count["n"] += 1
        return fault_of(count["n"])
    return rule


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def assert_intact(s3, bucket, key, blob):
    """The object at key holds exactly the bytes of blob, and no multipart upload is left open."""
    assert sha256(s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()) == \
        sha256(blob.read_bytes()), "%s differs from what was uploaded" % key
    assert uploads_left(s3.client, bucket) == []


def part_number(req):
    return int(dict(x.split("=", 1) for x in req.query.split("&"))["partNumber"])


def assert_no_sdk_checksums(requests):
    """Custom endpoints: checksums only when required, so PutObject / UploadPart carry a plain
    Content-Length body: no aws-chunked encoding, no trailer, no x-amz-checksum-* header. Every
    body the uploader sends (not the lease's lock.json or probes) carries its own Content-MD5
    (checked against the bytes the proxy saw, if it hashed) as a signed header, and goes as
    UNSIGNED-PAYLOAD: no second hash pass over the body."""
    bodies = [r for r in requests if r.op() in ("PutObject", "UploadPart")]
    assert bodies, "no PutObject or UploadPart request seen"
    for r in bodies:
        h = r.headers
        assert "content-length" in h, (r.op(), h)
        assert "transfer-encoding" not in h, (r.op(), h)
        assert "aws-chunked" not in h.get("content-encoding", ""), (r.op(), h)
        assert "x-amz-trailer" not in h, (r.op(), h)
        assert "x-amz-decoded-content-length" not in h, (r.op(), h)
        assert not [k for k in h if k.startswith("x-amz-checksum-") or k == "x-amz-sdk-checksum-algorithm"], (r.op(), h)
        assert not h.get("x-amz-content-sha256", "").startswith("STREAMING-"), (r.op(), h)
        name = r.path.rsplit("/", 1)[-1]
        if name == "lock.json" or name.startswith(".lease-"):
            continue  # the lease's own objects, not the uploader's
        assert h.get("content-md5"), (r.op(), r.path, h)
        assert h.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD", (r.op(), h)
        signed = h.get("authorization", "").split("SignedHeaders=", 1)[-1].split(",", 1)[0]
        assert "content-md5" in signed.split(";"), (r.op(), h)
        if r.md5 is not None and r.action is None:
            assert h["content-md5"] == r.md5, (r.op(), h, r.md5)


def big_db_sql(mb):
    """SQL that fills table t with `mb` MB of incompressible blobs (LZ4 keeps them that size)."""
    return ("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB);"
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < %d) "
            "INSERT INTO t(b) SELECT randomblob(100000) FROM n;" % (mb * 10))


# ---------------------------------------------------------------- the parser, through SQL

GUIDE_SIZES = [
    # every format the guide lists, its examples, and the explicit binary units
    ("5242880", 5242880), ("5120KB", 5242880), ("5120K", 5242880), ("5MB", 5242880),
    ("5M", 5242880), ("1GB", 1073741824), ("1G", 1073741824), ("10MB", 10485760),
    ("50MB", 52428800), ("100MB", 104857600), ("5.5MB", 5767168), ("1.5GB", 1610612736),
    ("5mb", 5242880), ("1gb", 1073741824), ("5120kb", 5242880), ("5MiB", 5242880),
    ("5120KiB", 5242880), ("1GiB", 1073741824), ("5GB", 5368709120), (" 10MB ", 10485760),
]
BAD_SIZES = [
    ("0", "part-size 0 (0 bytes) " + MIN_TEXT),
    ("-5MB", "invalid part-size '-5MB': negative numbers are not allowed; " + SIZE_EXPECTED),
    ("5XB", "invalid part-size '5XB': " + SIZE_EXPECTED),
    ("4MB", "part-size 4MB (4194304 bytes) " + MIN_TEXT),
    ("6GB", "part-size 6GB (6442450944 bytes) " + MAX_TEXT),
    ("", "invalid part-size '': " + SIZE_EXPECTED),
    ("1.5", "invalid part-size '1.5': not a whole number of bytes; " + SIZE_EXPECTED),
    ("5 MB", "invalid part-size '5 MB': " + SIZE_EXPECTED),
    # the guide's decimal example is a valid format, but below the minimum
    ("1.5MB", "part-size 1.5MB (1572864 bytes) " + MIN_TEXT),
    ("5242879", "part-size 5242879 (5242879 bytes) " + MIN_TEXT),
]
BAD_CONCURRENCY = {"0": "", "65": "", "-1": "negative numbers are not allowed; ",
                   "1.5": "not a whole number; ", "": "", "ten": "", "2x": ""}


def test_part_size_and_concurrency_through_sql(pyhost, tmp_path):
    r = pyhost.run("""
        c = connect(P["db"])
        def configure_result(key, value):
            err = error_of(c, "SELECT litestream_configure(?, ?)", key, value)
            if err:
                return {"error": err}
            return {"set": one(c, "SELECT litestream_configure(?, ?)", key, value),
                    "get": one(c, "SELECT litestream_configure(?)", key),
                    "config": json.loads(one(c, "SELECT litestream_config()"))[key]}
        result = {
            "good": {v: configure_result("part-size", v) for v, _ in P["good"]},
            "bad": {v: configure_result("part-size", v) for v, _ in P["bad"]},
            "after_bad": one(c, "SELECT litestream_configure('part-size')"),
            "default_part_size": (one(c, "SELECT litestream_configure('part-size', NULL)"),
                                  one(c, "SELECT litestream_configure('part-size')")),
            "default_concurrency": one(c, "SELECT litestream_configure('concurrency')"),
            "conc_good": {v: configure_result("concurrency", v) for v in ["1", "2", "10", "64"]},
            "conc_bad": {v: configure_result("concurrency", v) for v in P["conc_bad"]},
        }
    """, db=str(tmp_path / "p.db"), good=GUIDE_SIZES, bad=BAD_SIZES, conc_bad=list(BAD_CONCURRENCY))
    for text, n in GUIDE_SIZES:
        got = r["good"][text]
        # litestream_configure returns the size in bytes; reading the key back gives the same.
        assert got == {"set": str(n), "get": str(n), "config": str(n)}, (text, got)
    for text, message in BAD_SIZES:
        assert r["bad"][text] == {"error": "litestream_configure: " + message}, (text, r["bad"][text])
    # a rejected value leaves the previous one (the last good value set above)
    assert r["after_bad"] == str(GUIDE_SIZES[-1][1])
    assert r["default_part_size"] == ["5242880", "5242880"]
    assert r["default_concurrency"] == "5"
    for v in ["1", "2", "10", "64"]:
        assert r["conc_good"][v]["set"] == v
    for v, why in BAD_CONCURRENCY.items():
        assert r["conc_bad"][v] == {
            "error": "litestream_configure: invalid value '%s' for concurrency: "
                     "%sexpected a whole number from 1 to 64" % (v, why)}, r["conc_bad"][v]


PROVIDERS = {
    # The guide's examples, as litestream_configure() pairs; none may fail. Nothing is started:
    # these endpoints are not on loopback.
    "aws": ([("bucket", "mybucket"), ("path", "db"), ("part-size", "10MB")],
            {"part-size": "10485760", "concurrency": "5"}),
    "high-performance": ([("bucket", "mybucket"), ("path", "db"), ("part-size", "50MB"),
                          ("concurrency", "10")], {"part-size": "52428800", "concurrency": "10"}),
    "resource-constrained": ([("bucket", "mybucket"), ("path", "db"), ("part-size", "5MB"),
                              ("concurrency", "2")], {"part-size": "5242880", "concurrency": "2"}),
    "backblaze-b2": ([("bucket", "mybucket"), ("path", "db"),
                      ("endpoint", "s3.us-west-000.backblazeb2.com"), ("force-path-style", "true"),
                      ("part-size", "100MB"), ("concurrency", "5")],
                     {"part-size": "104857600", "concurrency": "5", "force-path-style": "true"}),
    "b2-min": ([("bucket", "mybucket"), ("path", "db"),
                ("endpoint", "s3.us-west-000.backblazeb2.com"), ("force-path-style", "true"),
                ("part-size", "10MB")], {"part-size": "10485760"}),
    "minio": ([("bucket", "mybucket"), ("path", "db"), ("endpoint", "http://localhost:9000")],
              {"part-size": "5242880", "concurrency": "5"}),
    # Cloudflare R2 defaults to concurrency 2 unless set, as Litestream does
    "r2": ([("bucket", "mybucket"), ("path", "db"),
            ("endpoint", "https://0123abcd.r2.cloudflarestorage.com")], {"concurrency": "2"}),
    "r2-set": ([("bucket", "mybucket"), ("path", "db"),
                ("endpoint", "https://0123abcd.r2.cloudflarestorage.com"), ("concurrency", "6")],
               {"concurrency": "6"}),
    "r2-url": ([("url", "s3://mybucket/db?endpoint=https://0123abcd.r2.cloudflarestorage.com")],
               {"concurrency": "2"}),
}


def test_guide_provider_examples_configure(pyhost, tmp_path):
    r = pyhost.run("""
        result = {}
        for name, (pairs, _) in P["providers"].items():
            c = connect(P["dir"] + "/" + name + ".db")
            errors = [error_of(c, "SELECT litestream_configure(?, ?)", k, v) for k, v in pairs]
            result[name] = {"errors": [e for e in errors if e],
                            "config": json.loads(one(c, "SELECT litestream_config()"))}
    """, dir=str(tmp_path), providers=PROVIDERS)
    for name, (_, want) in PROVIDERS.items():
        assert r[name]["errors"] == [], (name, r[name])
        cfg = r[name]["config"]
        for k, v in want.items():
            assert cfg[k] == v, (name, k, cfg)


# ---------------------------------------------------------------- the uploader on its own

@pytest.mark.parametrize("concurrency", [1, 3, 10])
def test_64mib_object_is_a_13_part_multipart_upload(uploader, blob64, s3, bucket, concurrency):
    r, proxy = upload_through(uploader, s3, bucket, "big/obj", blob64, "part-size=5MB",
                              "concurrency=%d" % concurrency, hash_bodies=True)
    assert r["ok"], r
    head = s3.client.head_object(Bucket=bucket, Key="big/obj")
    assert head["ETag"].strip('"').endswith("-13"), head["ETag"]
    assert head["ContentLength"] == 64 * MIB
    assert_intact(s3, bucket, "big/obj", blob64)

    parts = [q for q in proxy.requests if q.op() == "UploadPart"]
    assert [q.op() for q in proxy.requests].count("CreateMultipartUpload") == 1
    assert [q.op() for q in proxy.requests].count("CompleteMultipartUpload") == 1
    sizes = sorted((part_number(q), q.body_len) for q in parts)
    assert [n for n, _ in sizes] == list(range(1, 14))
    assert all(size == PART for _, size in sizes[:-1]), sizes
    # S3's multipart ETag, MD5 of the parts' MD5s (the uploader relies on it when a complete's
    # answer is lost): SeaweedFS computes it the same way
    by_number = {part_number(q): q for q in parts}
    md5s = b"".join(base64.b64decode(by_number[n].md5) for n in range(1, 14))
    assert head["ETag"].strip('"') == "%s-13" % hashlib.md5(md5s).hexdigest()
    assert sizes[-1][1] == 64 * MIB - 12 * PART < PART  # the final part is smaller
    assert 1 <= proxy.max_active_bodies <= concurrency, proxy.max_active_bodies
    assert_no_sdk_checksums(proxy.requests)
    # status while it ran: parts done / total and the part size in effect
    seen = r["in_flight_seen"]
    assert seen["parts_total"] == 13 and seen["part_size"] == PART, seen
    assert seen["part_size_raised_from"] is None
    assert r["progress"]["in_flight"] is None and r["progress"]["multipart_uploads"] == 1
    # memory: the parts in flight and a small constant, not the object (bench/ measures it)
    assert r["peak_rss_bytes"] - r["rss_before_upload_bytes"] < PART * (concurrency + 1) + 24 * MIB, r


def test_object_below_part_size_is_one_streamed_put(uploader, blob64, s3, bucket):
    """part-size 100MB: the 64 MiB spool (spilled to disk) goes as one PutObject streamed from the
    file with its Content-MD5, not read into memory; a reset mid-body is retried."""
    r, proxy = upload_through(uploader, s3, bucket, "one/obj", blob64, "part-size=100MB",
                              rule=nth("PutObject", {1: ("reset", 3 * MIB)}), hash_bodies=True)
    assert r["ok"], r
    puts = [q for q in proxy.requests if q.op() == "PutObject"]
    assert [q.action for q in puts] == [("reset", 3 * MIB), None]
    assert puts[1].body_len == 64 * MIB
    assert puts[1].headers.get("content-md5"), puts[1].headers
    assert "UploadPart" not in [q.op() for q in proxy.requests]
    head = s3.client.head_object(Bucket=bucket, Key="one/obj")
    assert "-" not in head["ETag"]
    assert_intact(s3, bucket, "one/obj", blob64)
    assert_no_sdk_checksums(proxy.requests)
    assert r["peak_rss_bytes"] - r["rss_before_upload_bytes"] < 24 * MIB, r


def test_part_faults_are_retried(uploader, blob64, s3, bucket):
    """Resets mid-body, 503 SlowDown and 500 answers on some parts: each part is retried and the
    upload completes intact."""
    faults = {2: ("reset", MIB), 4: ("status", 503), 5: ("status", 500), 7: ("reset", 0),
              8: ("status", 503), 9: ("reset", PART - 1)}
    r, proxy = upload_through(uploader, s3, bucket, "faulty/obj", blob64, "part-size=5MB",
                              "concurrency=3", rule=nth("UploadPart", faults))
    assert r["ok"], r
    assert len([q for q in proxy.requests if q.op() == "UploadPart"]) == 13 + len(faults)
    assert_intact(s3, bucket, "faulty/obj", blob64)


def test_stalled_body_is_retried_within_seconds(uploader, blob64, s3, bucket):
    """A 20 MiB part whose connection stops moving (the server stops reading mid-body): the SDK's
    stalled-stream protection sees the body stop and retries long before the attempt deadline
    (30 s + 80 s for 20 MiB); the upload completes."""
    r, proxy = upload_through(uploader, s3, bucket, "stall20/obj", blob64, "part-size=20MB",
                              "concurrency=1", timeout=200, rule=nth("UploadPart", {1: ("stall",)}))
    assert r["ok"], r
    parts = [q for q in proxy.requests if q.op() == "UploadPart"]
    assert parts[0].action == ("stall",) and len(parts) == 5, [(q.query, q.action) for q in parts]
    retry_after = parts[1].started - parts[0].started
    assert retry_after < 60, "stalled part retried after %.0f s: the attempt deadline, not the stall" % retry_after
    assert_intact(s3, bucket, "stall20/obj", blob64)


@pytest.mark.slow
def test_stalled_part_is_retried(uploader, blob64, s3, bucket):
    """A part whose answer never comes (server accepted the body, then went silent) times out
    (attempt deadline scaled to the part) and is sent again; the upload completes."""
    t0 = time.monotonic()
    r, _ = upload_through(uploader, s3, bucket, "stall/obj", blob64, "part-size=5MB",
                          "concurrency=2", timeout=200, rule=nth("UploadPart", {3: ("stall_response",)}))
    assert r["ok"], r
    assert time.monotonic() - t0 < 150
    assert_intact(s3, bucket, "stall/obj", blob64)


def test_lost_complete_answer_is_recognized(uploader, blob64, s3, bucket):
    """The server completes the upload but the answer is lost (connection reset): the SDK sends
    CompleteMultipartUpload again. SeaweedFS (like AWS, for a while) answers a repeated complete
    with 200; a store that answers NoSuchUpload makes the uploader check the object's multipart
    ETag (the formula is checked against SeaweedFS in the 64 MiB test). Either way: no failure,
    no abort, no second upload."""
    r, proxy = upload_through(uploader, s3, bucket, "lost/obj", blob64, "part-size=5MB",
                              "concurrency=3",
                              rule=nth("CompleteMultipartUpload", {1: ("drop_response",)}))
    assert r["ok"], r
    ops = [q.op() for q in proxy.requests]
    assert ops.count("CompleteMultipartUpload") == 2, ops
    assert "AbortMultipartUpload" not in ops
    assert r["progress"]["multipart_uploads"] == 1
    assert_intact(s3, bucket, "lost/obj", blob64)


def test_failed_upload_is_aborted(uploader, blob64, s3, bucket):
    """Every part after the second is reset: after its retries the upload fails, the parts in
    flight are cancelled, and AbortMultipartUpload leaves nothing behind."""
    r, proxy = upload_through(uploader, s3, bucket, "doomed/obj", blob64, "part-size=5MB",
                              "concurrency=2", timeout=200,
                              rule=nth("UploadPart", lambda n: ("reset", 100) if n > 2 else None))
    assert not r["ok"]
    assert r["error"].startswith("multipart upload aborted: uploading part "), r["error"]
    assert "rounds of retries" in r["error"], r["error"]
    assert "AbortMultipartUpload" in [q.op() for q in proxy.requests]
    assert uploads_left(s3.client, bucket) == []
    assert list_keys(s3.client, bucket) == []
    assert r["progress"]["in_flight"] is None


# ---------------------------------------------------------------- through the extension

# A piece of the snippets below: they watch the snapshot's upload while it is in flight.
UPLOAD_IN_FLIGHT = '''
def upload_in_flight(c, timeout=60):
    """litestream_status()'s `upload` once one of its parts is done; None after timeout s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        up = status(c).get("upload")
        if up and up["parts_done"] >= 1:
            return up
        time.sleep(0.02)
    return None
'''


def test_snapshot_larger_than_part_size_goes_multipart(pyhost, s3, bucket, tmp_path):
    """A full replication run: the first snapshot (~24 MB) is a multipart upload at part-size 5MB,
    litestream_status() shows it in flight, and the replica restores intact."""
    # ~8 MiB/s per connection, so status can see the upload in flight
    db = tmp_path / "big.db"
    with S3Proxy(s3.port, rate=8 * MIB, hash_bodies=True) as proxy:
        r = pyhost.run(snippet(UPLOAD_IN_FLIGHT, """
            c = start_replicating(P["db"], P["config"], P["fill"])
            seen = upload_in_flight(c)
            one(c, "SELECT litestream_sync(120000)")
            c.execute("INSERT INTO t(b) VALUES (randomblob(10))")
            one(c, "SELECT litestream_sync(60000)")
            st = status(c)
            one(c, "SELECT litestream_stop()")
            result = {"seen": seen, "status": st}
        """), timeout=200, db=str(db), fill=big_db_sql(24),
            config=s3_config(bucket, "db", proxy.url, part_size="5MB", concurrency="3"))
    seen, st = r["seen"], r["status"]
    assert seen, "litestream_status() never showed the snapshot upload in flight"
    assert seen["part_size"] == PART and seen["part_size_raised_from"] is None
    assert seen["parts_total"] == -(-seen["size"] // PART) and seen["parts_total"] >= 5, seen
    assert 1 <= seen["parts_done"] <= seen["parts_total"]
    assert seen["bytes_per_second"] > 0 and seen["key"].startswith("db/0000/"), seen
    assert st["multipart_uploads"] >= 1 and st["upload"] is None, st
    assert (st["part_size"], st["concurrency"]) == (PART, 3)

    infos = check_s3_replica(s3.client, bucket, "db")
    snap = infos[0]
    head = s3.client.head_object(Bucket=bucket, Key=snap["key"])
    n = -(-head["ContentLength"] // PART)
    assert head["ContentLength"] > 4 * PART
    assert head["ETag"].strip('"').endswith("-%d" % n), (head["ETag"], head["ContentLength"])
    # the small follow-up transaction is a single PUT
    assert "-" not in s3.client.head_object(Bucket=bucket, Key=infos[-1]["key"])["ETag"]
    assert uploads_left(s3.client, bucket) == []
    assert_no_sdk_checksums(proxy.requests)
    assert proxy.max_active_bodies <= 3
    assert_restores(pyhost.ext, db, tmp_path / "restored.db", s3_url(bucket, "db", s3.endpoint))


def _run_in_thread(fn):
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def _wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


REPLICATE_UNTIL_SYNCED = """
    c = start_replicating(P["db"], P["config"], P["fill"])
    errors, status_errors = [], []
    deadline = time.time() + P["sync_for"]
    synced = None
    while time.time() < deadline:
        err = error_of(c, "SELECT litestream_sync(2000)")
        if err is None:
            synced = True
            break
        errors.append(err)
        le = status(c).get("last_error")
        if le:
            status_errors.append(le)
    st = status(c)
    stop_err = error_of(c, "SELECT litestream_stop()")
    result = {"synced": synced, "errors": errors[-3:], "status": st, "stop_err": stop_err,
              "status_errors": status_errors}
"""


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("outage", [10, 45])
def test_server_stopped_mid_upload(pyhost, tmp_path, outage):
    """SeaweedFS stops while the snapshot's parts are being sent and comes back `outage` seconds
    later. 10 s: the parts' retries outlast it and the upload completes. 45 s: the upload fails,
    its abort fails too (server down) and is retried once the server is back, then the snapshot is
    uploaded again. Either way ListMultipartUploads is empty and the replica restores intact."""
    server = S3Server(tmp_path / "s3", buckets=("mpbucket",)).start()
    proxy = None
    try:
        proxy = S3Proxy(server.port, rate=4 * MIB).start()
        db = tmp_path / "db.db"
        t, box = _run_in_thread(lambda: pyhost.run(
            REPLICATE_UNTIL_SYNCED, timeout=280, db=str(db), fill=big_db_sql(40), sync_for=230,
            config=s3_config("mpbucket", "db", proxy.url, part_size="5MB", concurrency="2")))
        _wait_for(lambda: sum(q.op() == "UploadPart" for q in proxy.requests) >= 3, 60,
                  "the snapshot's third part")
        server.stop()
        time.sleep(outage)
        server.start(fresh=False)  # same data: the multipart upload is still there
        t.join(290)
        ops = [q.op() for q in proxy.requests]
        print("outage %ds: %d CreateMultipartUpload, %d AbortMultipartUpload, %d UploadPart" % (
            outage, ops.count("CreateMultipartUpload"), ops.count("AbortMultipartUpload"),
            ops.count("UploadPart")))
        assert not t.is_alive(), "the host did not finish"
        if "error" in box:
            raise box["error"]
        r = box["result"]
        assert r["synced"], r
        # the outage showed in status while the parts were being retried, before any give-up
        assert r["status_errors"], "status showed no error during the outage: %s" % r
        print("status during the outage:", r["status_errors"][0])
        assert r["status"]["last_error"] is None, r["status"]
        if outage >= 45:
            # the first upload failed and was aborted once the server was back; then redone
            assert ops.count("CreateMultipartUpload") >= 2, ops
            assert "AbortMultipartUpload" in ops
        client = server.client()
        assert uploads_left(client, "mpbucket") == [], "multipart uploads left behind"
        infos = check_s3_replica(client, "mpbucket", "db")
        head = client.head_object(Bucket="mpbucket", Key=infos[0]["key"])
        assert head["ETag"].strip('"').endswith("-%d" % -(-head["ContentLength"] // PART))
        assert_restores(pyhost.ext, db, tmp_path / "out.db", s3_url("mpbucket", "db", server.endpoint))
    finally:
        if proxy:
            proxy.stop()
        server.stop()


def test_stop_mid_upload_completes_it(pyhost, s3, bucket, tmp_path):
    """litestream_stop() while the snapshot is being uploaded: the upload completes (stop waits for
    it), nothing is left in ListMultipartUploads, and the replica restores."""
    db = tmp_path / "db.db"
    with S3Proxy(s3.port, rate=6 * MIB) as proxy:
        r = pyhost.run(snippet(UPLOAD_IN_FLIGHT, """
            c = start_replicating(P["db"], P["config"], P["fill"])
            seen = upload_in_flight(c)
            t0 = time.time()
            stop_err = error_of(c, "SELECT litestream_stop()")
            result = {"seen": seen, "stop_err": stop_err, "stop_s": time.time() - t0}
        """), timeout=200, db=str(db), fill=big_db_sql(24),
            config=s3_config(bucket, "db", proxy.url, part_size="5MB", concurrency="2"))
    assert r["seen"] and r["seen"]["parts_done"] < r["seen"]["parts_total"], r
    assert r["stop_err"] is None, r
    assert uploads_left(s3.client, bucket) == []
    check_s3_replica(s3.client, bucket, "db")
    assert_restores(pyhost.ext, db, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint))


def test_killed_mid_upload_is_swept_on_next_start(pyhost, s3, bucket, tmp_path):
    """The host process dies mid-upload (os._exit: nothing can run): its multipart upload is left
    behind. The next process replicating to that path aborts it before its own first upload."""
    db = tmp_path / "db.db"
    with S3Proxy(s3.port, rate=4 * MIB) as proxy:
        # The dead process still holds the lease until it expires: keep that short.
        cfg = s3_config(bucket, "db", proxy.url, part_size="5MB", concurrency="2", lease_ttl="3s")
        with pytest.raises(PyHostError, match="exited 7"):
            pyhost.run(snippet(UPLOAD_IN_FLIGHT, """
                c = start_replicating(P["db"], P["config"], P["fill"])
                up = upload_in_flight(c)
                if up:
                    log("dying during", up)
                    os._exit(7)
            """), timeout=120, db=str(db), fill=big_db_sql(24), config=cfg)
        left = uploads_left(s3.client, bucket)
        assert len(left) == 1 and left[0]["Key"].startswith("db/0000/"), left
        # a different, unrelated upload in the bucket is never touched
        other = s3.client.create_multipart_upload(Bucket=bucket, Key="unrelated/file.bin")
        r = pyhost.run("""
            c = start_replicating(P["db"], P["config"])
            deadline = time.time() + 120
            while True:  # a standby until the dead holder's lease expires, then the holder
                err = error_of(c, "SELECT litestream_sync(5000)")
                if err is None or time.time() > deadline:
                    break
                time.sleep(0.2)
            one(c, "SELECT litestream_stop()")
            result = err
        """, timeout=200, db=str(db), config=cfg)
        assert r is None, r
    left = uploads_left(s3.client, bucket)
    assert [u["UploadId"] for u in left] == [other["UploadId"]], left
    s3.client.abort_multipart_upload(Bucket=bucket, Key="unrelated/file.bin",
                                     UploadId=other["UploadId"])
    check_s3_replica(s3.client, bucket, "db")


# ---------------------------------------------------------------- skip-verify

def test_skip_verify_with_a_self_signed_certificate(pyhost, s3, bucket, tmp_path):
    """HTTPS with a self-signed certificate for another name: refused by default (with a hint),
    replicated and restored with skip-verify=true."""
    cert = self_signed_cert(tmp_path, cn="not-this-host.example")
    with S3Proxy(s3.port, tls=cert) as proxy:
        endpoint = "https://127.0.0.1:%d" % proxy.port
        refused = pyhost.run("""
            c = start_replicating(P["db"], P["config"], "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            deadline = time.time() + 30
            st = status(c)
            while not st.get("last_error") and time.time() < deadline:
                time.sleep(0.1)
                st = status(c)
            result = st.get("last_error")  # no stop: its final-sync retries would take 30 s
        """, timeout=120, db=str(tmp_path / "refused.db"), config=s3_config(bucket, "a", endpoint))
        assert refused and "invalid peer certificate" in refused and "skip-verify=true" in refused, refused

        db = tmp_path / "ok.db"
        r = pyhost.run("""
            c = start_replicating(P["db"], P["config"],
                                  "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)")
            c.execute("INSERT INTO t VALUES (4)")
            one(c, "SELECT litestream_sync(30000)")
            one(c, "SELECT litestream_stop()")
            result = True
        """, timeout=120, db=str(db), config=s3_config(bucket, "b", endpoint, skip_verify="true"))
        assert r
        assert_restores(pyhost.ext, db, tmp_path / "out.db",
                        "s3://%s/b?endpoint=%s&skip-verify=true" % (bucket, endpoint))
    # it really went through TLS on the proxy
    assert any(q.op() == "PutObject" for q in proxy.requests)
    check_s3_replica(s3.client, bucket, "b")
