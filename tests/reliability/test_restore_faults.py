"""A damaged replica restores to an exact state or not at all — ours and `litestream restore`.

A writer fills a replica with every kind of file (L0 chain kept whole, sub-second compaction
levels, level-9 snapshots); the database at every TXID is rebuilt from the L0 chain alone, as the
byte image a restore must produce. Then, trial after trial, one object is damaged at random —
replaced by the bytes (and metadata) of the file before it in its level or of any other object,
deleted, cut short, or one byte flipped — and
restored three ways: our latest, our `{"txid": k}` for a random k, and the reference latest. Each
must either fail (ours leaving no file behind) or produce exactly the image of a TXID: ours the
TXID it reports (and k when k was asked for), the reference some TXID. Swapping an object for one
with the same TXID range (a snapshot and a compacted file both starting at 1) or deleting one that
others cover is harmless, so "restored" is a valid outcome of every fault; a different database
never is. The object is put back after each trial.

RELIABILITY_RESTORE_FAULT_TRIALS (default 30) sets the number of trials, RELIABILITY_SEED the seed.
"""
import hashlib
import os
import random

from pysupport.awsenv import child_env
from pysupport.extension import s3_config
from pysupport.ltx import pages_of
from pysupport.reference import litestream_bin, run_reference
from pysupport.s3client import empty_prefix, key_names
from pysupport.shell import restore_shell, restored_txid
from rel_common import ACCESS_KEY, SECRET_KEY, seen
from rel_helpers import finish_writer, restore_env, start_writer

TRIALS = int(os.environ.get("RELIABILITY_RESTORE_FAULT_TRIALS", "30"))
SEED = int(os.environ.get("RELIABILITY_SEED", "11"))
FAULTS = ("stale", "swap", "delete", "truncate", "flip")


def images_by_txid(objects):
    """sha256 of the database image at every TXID, from the L0 chain (pages 1..commit)."""
    l0 = sorted((pages_of(body) for key, (body, _) in objects.items() if key.split("/")[-2] == "0000"),
                key=lambda d: int(d[0]["min_txid"], 16))
    assert [int(h["min_txid"], 16) for h, _ in l0] == list(range(1, len(l0) + 1)), "L0 has gaps"
    images, state = {}, {}
    for h, pages in l0:
        state.update(pages)
        zero = bytes(h["page_size"])
        image = b"".join(state.get(pg, zero) for pg in range(1, h["commit"] + 1))
        images[int(h["max_txid"], 16)] = hashlib.sha256(image).hexdigest()
    return images


def our_restore(ext, url, out, opts=None):
    """(returncode, TXID or None, stderr) of litestream_restore() in a sqlite3 process."""
    p = restore_shell(ext, out, url=url, options=opts, check=False, timeout=300,
                      env=child_env(restore_env()))
    seen("restore-faults ours", p.stdout + p.stderr)
    txid = restored_txid(p)
    return p.returncode, int(txid, 16) if txid else None, p.stderr


def reference_restore(url, out):
    p = run_reference(litestream_bin(), "restore", "-o", out, url, check=False, timeout=300,
                      env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    seen("restore-faults reference", p.stdout + p.stderr)
    return p.returncode, p.stderr


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage(client, bucket, objects, rng):
    """Applies one random fault; returns (description, fault, the key to put back)."""
    keys = sorted(objects)
    # Most objects are L0 files no latest restore reads: pick a level first, and in L0 one of
    # the newest files (beyond the last compaction, so in the plan), to damage what is read.
    level = rng.choice(sorted({k.split("/")[-2] for k in keys}))
    in_level = [k for k in keys if k.split("/")[-2] == level]
    key = rng.choice(in_level[-8:] if level == "0000" and rng.random() < 0.7 else in_level)
    body, meta = objects[key]
    fault = rng.choice(FAULTS)
    if fault in ("stale", "swap"):
        # stale: the file before it in its level (a copy gone wrong), swap: any other object
        i = in_level.index(key)
        other = in_level[i - 1] if fault == "stale" and i > 0 else rng.choice([k for k in keys if k != key])
        client.put_object(Bucket=bucket, Key=key, Body=objects[other][0], Metadata=objects[other][1])
        return "%s <- %s" % (key, other), fault, key
    if fault == "delete":
        client.delete_object(Bucket=bucket, Key=key)
        return "%s deleted" % key, fault, key
    if fault == "truncate":
        n = rng.randrange(len(body))
        client.put_object(Bucket=bucket, Key=key, Body=body[:n], Metadata=meta)
        return "%s cut to %d of %d bytes" % (key, n, len(body)), fault, key
    data = bytearray(body)
    off = rng.randrange(len(data))
    data[off] ^= rng.randrange(1, 256)
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=meta)
    return "%s byte %d flipped" % (key, off), fault, key


def test_damaged_replica_restores_an_exact_state_or_nothing(s3, ext, workdir):
    client, bucket = s3.client(), "crash"
    prefix = "restore-faults-%d" % os.getpid()
    config = s3_config(bucket, prefix, s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    config += [("lease", "off"), ("levels", "300ms,1s"), ("snapshot-interval", "1s"),
               ("l0-retention", "0"), ("retention", "off")]
    p, _ = start_writer({"db": str(workdir / "db.sqlite"), "ext": ext, "config": config,
                         "ack": str(workdir / "ack"), "seed": SEED, "duration_s": 4,
                         "sync_every": [1, 4], "bulk_p": 0.1, "delete_p": 0.1})
    seen("restore-faults writer", finish_writer(p))
    objects = {}
    for key in key_names(client, bucket, prefix + "/"):
        if key.endswith(".ltx"):
            obj = client.get_object(Bucket=bucket, Key=key)
            objects[key] = (obj["Body"].read(), obj["Metadata"])
    images = images_by_txid(objects)
    latest = max(images)
    levels = sorted({k.split("/")[-2] for k in objects})
    assert len(levels) >= 3, "expected L0, compacted and snapshot files, got levels %s" % levels
    url = "s3://%s/%s?endpoint=%s" % (bucket, prefix, s3.endpoint)
    ref_url = url + "&forcePathStyle=true&region=us-east-1"

    # Undamaged: both restorers give the newest image (the images are what restores produce).
    rc, txid, err = our_restore(ext, url, workdir / "clean.db")
    assert rc == 0 and txid == latest and digest(workdir / "clean.db") == images[latest], err
    rc, err = reference_restore(ref_url, workdir / "clean-ref.db")
    assert rc == 0 and digest(workdir / "clean-ref.db") == images[latest], err

    rng = random.Random(SEED)
    tally = {}
    for trial in range(TRIALS):
        what, fault, key = damage(client, bucket, objects, rng)
        wanted = rng.choice(sorted(images))
        runs = [("ours", {}), ("ours-txid", {"txid": "%016x" % wanted}), ("reference", None)]
        for name, opts in runs:
            out = workdir / ("t%d-%s.db" % (trial, name))
            if opts is None:
                rc, err = reference_restore(ref_url, out)
                txid = None
            else:
                rc, txid, err = our_restore(ext, url, out, opts)
            ctx = "trial %d (%s), %s: %s" % (trial, what, name, err.strip()[-400:])
            if rc == 0:
                got = digest(out)
                assert got in images.values(), "a restore that is no state of the database: " + ctx
                if opts is not None:
                    assert images.get(txid) == got, "restored image is not TXID %s's: %s" % (txid, ctx)
                if opts:
                    assert txid == wanted, "asked for TXID %d, got %s: %s" % (wanted, txid, ctx)
                outcome = "exact"
                out.unlink()
            else:
                left = [x.name for x in workdir.iterdir() if x.name.startswith(out.name)]
                assert opts is None or not left, "a failed restore left %s: %s" % (left, ctx)
                outcome = "refused"
            tally.setdefault((fault, name), {}).setdefault(outcome, 0)
            tally[(fault, name)][outcome] += 1
        body, meta = objects[key]
        client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)
    print("\n%d objects (levels %s), TXIDs 1..%d; outcomes per fault and restorer:" % (
        len(objects), ",".join(levels), latest))
    for (fault, name), outcomes in sorted(tally.items()):
        print("  %-8s %-10s %s" % (fault, name, outcomes))
    empty_prefix(client, bucket, prefix)
