"""boto3 against the loopback server: one way to make a client (path-style, retries, timeouts,
endpoint checked to be loopback), list a bucket, and empty it. boto3 is imported on first use,
so host programs and scripts that never talk to S3 do not need it."""
from pysupport.awsenv import ACCESS_KEY, SECRET_KEY, require_loopback

# S3 allows at most this many keys per DeleteObjects request.
DELETE_BATCH = 1000
# Standard-mode retries ride out a server that is briefly busy (SeaweedFS on two shared cores);
# a connect that takes more than seconds on loopback means the server is gone.
RETRIES = {"max_attempts": 3, "mode": "standard"}
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60


def s3_client(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **config):
    """A boto3 S3 client for `endpoint` (loopback only). `config` adds or overrides
    botocore Config options (e.g. max_pool_connections, request_checksum_calculation)."""
    import boto3
    from botocore.config import Config
    options = dict(s3={"addressing_style": "path"}, retries=RETRIES,
                   connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S)
    options.update(config)
    return boto3.client("s3", endpoint_url=require_loopback(endpoint), region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(**options))


def list_keys(client, bucket, prefix="", start_after=None):
    """Sorted [(key, size)] of every object under prefix (after start_after, if given)."""
    kw = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        kw["StartAfter"] = start_after
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(**kw):
        out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    return sorted(out)


def key_names(client, bucket, prefix="", start_after=None):
    """Sorted keys of every object under prefix (after start_after, if given)."""
    return [key for key, _ in list_keys(client, bucket, prefix, start_after)]


def empty_prefix(client, bucket, prefix=""):
    """Deletes every object under prefix."""
    keys = key_names(client, bucket, prefix)
    for i in range(0, len(keys), DELETE_BATCH):
        client.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in keys[i:i + DELETE_BATCH]]})


def uploads_left(client, bucket, prefix=""):
    """Multipart uploads still open under prefix."""
    kw = {"Prefix": prefix} if prefix else {}
    return client.list_multipart_uploads(Bucket=bucket, **kw).get("Uploads", [])


def empty_bucket(client, bucket):
    """Deletes every object and aborts every open multipart upload."""
    empty_prefix(client, bucket)
    for up in uploads_left(client, bucket):
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])


def census(client, bucket, prefix):
    """Object count and bytes per level directory (0000 … 0009) under prefix, and in total."""
    levels = {}
    for key, size in list_keys(client, bucket, prefix + "/"):
        parts = key[len(prefix) + 1:].split("/")
        level = parts[0] if len(parts) > 1 else "(top)"
        n, b = levels.get(level, (0, 0))
        levels[level] = (n + 1, b + size)
    return {"objects": sum(n for n, _ in levels.values()),
            "bytes": sum(b for _, b in levels.values()),
            "levels": {k: {"objects": n, "bytes": b} for k, (n, b) in sorted(levels.items())}}
