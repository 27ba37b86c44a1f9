"""Every file above level 0 says the same as the L0 chain it stands for.

A level-9 snapshot is read from the live database (WAL frames + database file) while writers run,
and compacted files are merged from L0 files; a restore prefers them over the L0 chain. So a
snapshot that disagrees with the chain at its TXID corrupts restores silently — the crash trials
found one (pages of a later WAL generation read into a level-9 snapshot, while a WAL restart
overwrote the frames being read). This test provokes exactly that: tiny checkpoint thresholds
(a WAL restart every few commits), sub-second compaction levels and snapshot interval, L0 files
kept; then it rebuilds the database at every TXID from L0 alone and compares each higher-level
file page by page (and commit size) against it.
"""
import os

from pysupport.extension import s3_config
from pysupport.ltx import lock_page, pages_of
from pysupport.s3client import empty_prefix, key_names
from rel_common import ACCESS_KEY, SECRET_KEY, seen
from rel_helpers import finish_writer, restore_and_compare, start_writer

SECONDS = float(os.environ.get("RELIABILITY_LEVELS_SECONDS", "8"))


def test_every_level_matches_the_l0_chain(s3, ext, workdir):
    client, bucket = s3.client(), "crash"
    prefix = "levels-%d" % os.getpid()
    db = workdir / "db.sqlite"
    config = s3_config(bucket, prefix, s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    config += [("lease", "off"), ("min-checkpoint-page-count", "10"),
               ("levels", "300ms,1s"), ("snapshot-interval", "500ms"), ("l0-retention", "0"),
               ("retention", "off")]
    p, _ = start_writer({"db": str(db), "ext": ext, "config": config, "ack": str(workdir / "ack"),
                         "seed": 7, "duration_s": SECONDS, "sync_every": [1, 4],
                         "bulk_p": 0.1, "delete_p": 0.1})
    res = finish_writer(p, timeout=SECONDS + 300)
    seen("levels writer", res)

    files = {}
    for key in key_names(client, bucket, prefix + "/"):
        level = int(key.split("/")[-2], 16)
        files.setdefault(level, []).append(
            pages_of(client.get_object(Bucket=bucket, Key=key)["Body"].read()) + (key,))
    l0 = sorted(files.pop(0), key=lambda f: int(f[0]["min_txid"], 16))
    txids = [int(h["min_txid"], 16) for h, _, _ in l0]
    assert txids == list(range(1, len(txids) + 1)), "L0 has gaps: %s" % txids[:50]

    # The database at every TXID, from L0 alone (page maps share unchanged pages).
    at, state, commit = {}, {}, 0
    for h, pages, _ in l0:
        commit = h["commit"]
        state = {pg: v for pg, v in {**state, **pages}.items() if pg <= commit}
        at[int(h["max_txid"], 16)] = (commit, state)

    checked = {}
    for level, fs in sorted(files.items()):
        for h, pages, key in fs:
            lo, hi = int(h["min_txid"], 16), int(h["max_txid"], 16)
            commit, want = at[hi]
            assert h["commit"] == commit, "%s: commit %d, the L0 chain has %d" % (key, h["commit"], commit)
            if level == 9:
                assert lo == 1, key
                bad = [pg for pg in range(1, commit + 1) if pages.get(pg) != want.get(pg)
                       and pg != lock_page(h["page_size"])]
            else:
                # A compacted file holds the newest version (as of `hi`) of each page it has.
                bad = [pg for pg, v in pages.items() if pg <= commit and v != want.get(pg)]
            assert not bad, "%s differs from the L0 chain at TXID %d on pages %s" % (key, hi, bad[:20])
            checked[level] = checked.get(level, 0) + 1
    print("L0 files: %d; files checked per level: %s" % (len(l0), checked))
    assert checked.get(9, 0) >= 2, "expected several level-9 snapshots, got %s" % checked
    assert checked.get(1, 0) >= 2, "expected several level-1 files, got %s" % checked

    url = "s3://%s/%s?endpoint=%s" % (bucket, prefix, s3.endpoint)
    restore_and_compare(ext, url, workdir / "restored.db", db, res["last"])
    empty_prefix(client, bucket, prefix)
