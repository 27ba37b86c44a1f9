"""Compaction, level-9 snapshots, retention and point-in-time restore, checked against
the real Litestream 0.5.17.

The whole L0 -> L1 -> L2 -> L9 -> retention cycle runs in seconds with sub-second intervals. Five
points are saved on the way (TXID, a timestamp, the source's .dump at that moment); each is then
restored by TXID and by timestamp with litestream_restore() and with `litestream restore
-txid/-timestamp`, and must equal its saved dump. A second phase lets L0 retention delete files;
afterwards the latest state and every retained point still restore, our answer and Litestream's
agree for every saved point, every object passes ltx_check.py, and `litestream ltx -level all`
lists exactly the rows of our litestream_ltx table.
"""
import json

from pysupport.extension import config_sql, s3_config, s3_url, sql_literal
from pysupport.ltx import LTX_NAME_RE, check_other_level, check_s3_replica
from pysupport.reference import reference_url, run_reference
from pysupport.s3client import list_keys
from pysupport.shell import (dump, load_sql, replicate_shell, restore_shell, restored_txid,
                             run_sqlite_shell, sqlite_shell)

PATH = "db"
# Short schedules: L1 every 500 ms, L2 every 2 s, a snapshot every 2 s kept 3 s (phase 1 lasts
# over 8 s, so at least four snapshot ticks fall in it and the first snapshot always expires).
CYCLE = dict(levels="500ms,2s", snapshot_interval="2s", snapshot_retention="3s")


# ---------------------------------------------------------------- helpers

def our_restore(ext, out, url, **opts):
    """litestream_restore(out, {url, **opts}) in a sqlite3 process; (ok, txid or error text)."""
    p = restore_shell(ext, out, url=url, options=opts, check=False)
    txid = restored_txid(p)
    return (True, txid) if p.returncode == 0 and txid else (False, p.stderr.strip())


def ref_restore(litestream_bin, out, url, *flags):
    p = run_reference(litestream_bin, "restore", *flags, "-o", out, url, check=False)
    return p.returncode == 0, (p.stderr or p.stdout).strip()


def our_ltx_rows(ext, url):
    out = run_sqlite_shell(":memory:", load_sql(ext, marker=False) + ".mode json\n"
                           "SELECT level, min_txid, max_txid, size, created_at FROM litestream_ltx(%s);\n"
                           % sql_literal(url))
    return [(r["level"], r["min_txid"], r["max_txid"], r["size"], r["created_at"])
            for r in json.loads(out or "[]")]


def ref_ltx_rows(litestream_bin, url):
    rows = json.loads(run_reference(litestream_bin, "ltx", "-level", "all", "-json", url).stdout)
    return [(r["level"], r["min_txid"], r["max_txid"], r["size"], r["timestamp"]) for r in rows]


def listing(s3, bucket):
    """{level: [(min, max)]} of the replica."""
    out = {}
    for key, _ in list_keys(s3.client, bucket, PATH + "/"):
        level, name = key.split("/")[-2:]
        m = LTX_NAME_RE.match(name)
        out.setdefault(int(level, 16), []).append((int(m.group(1), 16), int(m.group(2), 16)))
    return out


def check_every_object(s3, bucket):
    """Every object passes ltx_check.py, is named after its header and carries its timestamp."""
    keys = list_keys(s3.client, bucket)
    assert keys and all(k.startswith(PATH + "/") for k, _ in keys), keys[:5]
    for key, _ in keys:
        obj = s3.client.get_object(Bucket=bucket, Key=key)
        check_other_level(key, obj["Body"].read(), obj["Metadata"]["litestream-timestamp"])
    return len(keys)


def restore_point(ext, litestream_bin, tmp_path, url, ref_url, point, tag):
    """Restore one saved point four ways; returns {method: (ok, detail, dump or None)}."""
    txid, ts = point["txid"], point["ts"]
    out = {}
    for method, run in [
        ("ours-txid", lambda o: our_restore(ext, o, url, txid=txid)),
        ("ours-timestamp", lambda o: our_restore(ext, o, url, timestamp=ts)),
        ("ref-txid", lambda o: ref_restore(litestream_bin, o, ref_url, "-txid", txid)),
        ("ref-timestamp", lambda o: ref_restore(litestream_bin, o, ref_url, "-timestamp", ts)),
    ]:
        o = tmp_path / ("%s-%s-%s.db" % (tag, txid, method))
        ok, detail = run(o)
        out[method] = (ok, detail, dump(o) if ok else None)
    return out


# ---------------------------------------------------------------- the full cycle

WRITER = """
import datetime
def now_rfc3339():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)

c = start_replicating(P["db"], P["config"])
# Python's SQLite has no generate_series: a temp view instead.
c.execute("CREATE TEMP VIEW series(value) AS WITH RECURSIVE s(value) AS "
          "(SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 10000) SELECT value FROM s")
if P["create"]:
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
points = []
n = one(c, "SELECT count(*) FROM t")
for i in range(P["points"]):
    # A few transactions per point: inserts, updates, a delete; one point shrinks the file.
    c.execute("INSERT INTO t(v, b) SELECT 'p%d-' || value, randomblob(300) FROM series WHERE value <= 40" % i)
    c.execute("UPDATE t SET v = v || '+' WHERE id %% 7 = %d" % (i % 7))
    c.execute("DELETE FROM t WHERE id %% 11 = %d" % i)
    if i == 2:
        c.execute("DELETE FROM t WHERE id % 2 = 0")
        c.execute("VACUUM")
    txid = one(c, "SELECT litestream_sync(30000)")
    time.sleep(0.05)                  # the L0 file's timestamp is now strictly in the past
    ts = now_rfc3339()
    points.append({"txid": txid, "ts": ts, "dump": cli(P["db"], ".dump")})
    log("point", i, txid, ts)
    time.sleep(P["gap"])              # > 2 L1 intervals: an L1 file ends at this point
# One more write after the last point, so that the replica has files newer than every point.
c.execute("INSERT INTO t(v) VALUES ('tail')")
one(c, "SELECT litestream_sync(30000)")
time.sleep(P["tail"])
st = status(c)
stop = one(c, "SELECT litestream_stop()")
result = {"points": points, "status": st, "stop": stop, "final_dump": cli(P["db"], ".dump")}
"""


def test_full_cycle_and_point_in_time_restore(pyhost, ext, litestream_bin, s3, bucket, tmp_path):
    src = tmp_path / "src.db"
    url, ref_url = s3_url(bucket, PATH, s3.endpoint), reference_url(bucket, PATH, s3.endpoint)

    # ---- phase 1: the cycle runs; L0 is kept (l0-retention 60 s) so every point is a boundary.
    cfg = s3_config(bucket, PATH, s3.endpoint, l0_retention="60s", **CYCLE)
    r = pyhost.run(WRITER, timeout=120, db=str(src), config=cfg, create=True, points=5, gap=1.1,
                   tail=2.0)
    points, comp = r["points"], r["status"]["compaction"]
    assert comp["last_error"] is None, comp
    lv = listing(s3, bucket)
    assert all(lv.get(level) for level in (0, 1, 2, 9)), "levels after phase 1: %s" % lv
    assert comp["snapshots"] >= 2 and comp["deleted"] > 0, "no snapshot retention happened: %s" % comp
    assert len(lv[9]) < comp["snapshots"], "old snapshots were not deleted: %s vs %s" % (lv[9], comp)
    assert lv[0][0] == (1, 1) and len(lv[0]) == int(r["stop"], 16), "L0 is not complete: %s" % lv[0]
    check_s3_replica(s3.client, bucket, PATH)          # L0 chain + every other object
    assert our_ltx_rows(ext, url) == ref_ltx_rows(litestream_bin, ref_url)

    for i, point in enumerate(points):
        got = restore_point(ext, litestream_bin, tmp_path, url, ref_url, point, "p1")
        for method, (ok, detail, d) in got.items():
            assert ok, "point %d (TXID %s, %s): %s failed: %s" % (i, point["txid"], point["ts"], method, detail)
            assert d == point["dump"], "point %d (TXID %s): %s restored a different database" % (
                i, point["txid"], method)
        assert got["ours-txid"][1] == point["txid"] and got["ours-timestamp"][1] == point["txid"]

    # ---- phase 2: L0 retention (1 s) deletes L0 files; snapshots are kept (1 min).
    cfg2 = s3_config(bucket, PATH, s3.endpoint, l0_retention="1s",
                     **dict(CYCLE, snapshot_retention="1m"))
    r2 = pyhost.run(WRITER, timeout=120, db=str(src), config=cfg2, create=False, points=2, gap=0.6,
                    tail=3.0)
    comp2 = r2["status"]["compaction"]
    assert comp2["last_error"] is None, comp2
    lv2 = listing(s3, bucket)
    assert lv2[0][0][0] > 1 and len(lv2[0]) < len(lv[0]), "L0 retention deleted nothing: %s" % lv2[0]
    assert comp2["deleted"] > 0
    check_every_object(s3, bucket)
    assert our_ltx_rows(ext, url) == ref_ltx_rows(litestream_bin, ref_url)

    # The latest state restores, with ours and with Litestream.
    ok, txid = our_restore(ext, tmp_path / "latest-ours.db", url)
    assert ok and txid == r2["stop"], txid
    assert dump(tmp_path / "latest-ours.db") == r2["final_dump"]
    ok, detail = ref_restore(litestream_bin, tmp_path / "latest-ref.db", ref_url)
    assert ok, detail
    assert dump(tmp_path / "latest-ref.db") == r2["final_dump"]

    # Retained points: a file still ends there and it is not older than the oldest snapshot.
    oldest_snapshot = min(mx for _, mx in lv2[9])
    boundaries = {mx for files in lv2.values() for _, mx in files}
    retained = 0
    for i, point in enumerate(points + r2["points"]):
        p = int(point["txid"], 16)
        got = restore_point(ext, litestream_bin, tmp_path, url, ref_url, point, "p2")
        for kind in ("txid", "timestamp"):
            ours, theirs = got["ours-" + kind], got["ref-" + kind]
            # Our plan is Litestream's: the same answer for every point, retained or not.
            assert ours[0] == theirs[0], "point %d by %s: ours %s, Litestream %s" % (
                i, kind, ours[:2], theirs[:2])
            for method, (ok, detail, d) in (("ours", ours), ("ref", theirs)):
                if ok:
                    assert d == point["dump"], "point %d by %s (%s): a different database" % (i, kind, method)
        if p >= oldest_snapshot and p in boundaries:
            retained += 1
            assert got["ours-txid"][0], "retained point %d (TXID %s) does not restore: %s" % (
                i, point["txid"], got["ours-txid"][1])
    assert retained >= 2, "too few retained points to prove anything (%d)" % retained


def test_retention_off_deletes_nothing(pyhost, s3, bucket, tmp_path):
    cfg = s3_config(bucket, PATH, s3.endpoint, retention="off", l0_retention="1s",
                    levels="300ms", snapshot_interval="1s", snapshot_retention="1s")
    r = pyhost.run(WRITER, timeout=60, db=str(tmp_path / "src.db"), config=cfg, create=True,
                   points=3, gap=0.8, tail=2.5)
    comp = r["status"]["compaction"]
    assert comp["retention"] == "off" and comp["deleted"] == 0 and comp["snapshots"] >= 2, comp
    lv = listing(s3, bucket)
    assert [mn for mn, _ in lv[0]] == list(range(1, int(r["stop"], 16) + 1)), lv[0]
    assert len(lv[9]) == comp["snapshots"], (lv[9], comp)
    check_s3_replica(s3.client, bucket, PATH)


# ---------------------------------------------------------------- litestream_ltx

def test_ltx_table_surface(ext, s3, bucket, tmp_path):
    db = tmp_path / "t.db"
    # Eponymous virtual tables show in pragma_module_list, not pragma_function_list.
    out = run_sqlite_shell(db, load_sql(ext, marker=False) +
                           "SELECT name FROM pragma_module_list WHERE name LIKE 'litestream%' ORDER BY 1;\n"
                           "SELECT count(*) FROM pragma_function_list WHERE name = 'litestream_ltx';\n")
    assert out.split() == ["litestream_ltx", "0"]
    # Unconfigured: a clear error that says how to configure or pass a url.
    p = sqlite_shell(db, load_sql(ext, marker=False) + "SELECT * FROM litestream_ltx;\n", check=False)
    assert p.returncode != 0 and "litestream_ltx: no replica configured" in p.stderr, p.stderr
    assert "litestream_ltx('s3://" in p.stderr
    # Configured replica, url argument, and hidden url column.
    cfg = s3_config(bucket, PATH, s3.endpoint, levels="off", snapshot_interval="0")
    r = replicate_shell(ext, db, cfg)
    out = run_sqlite_shell(db, load_sql(ext, marker=False) + ".output /dev/null\n" + config_sql(cfg)
                           + "\n.output stdout\n"
                           "SELECT level || ' ' || min_txid || ' ' || max_txid || ' ' || (size > 100) || ' ' "
                           "|| (created_at GLOB '20[0-9][0-9]-*T*Z') || ' ' || key FROM litestream_ltx;\n"
                           "SELECT count(*), max(max_txid), min(url IS NULL) FROM litestream_ltx;\n"
                           "SELECT count(*), min(url = %s) FROM litestream_ltx(%s);\n"
                           % (sql_literal(s3_url(bucket, PATH, s3.endpoint)), sql_literal(s3_url(bucket, PATH, s3.endpoint))))
    lines = out.splitlines()
    n = int(r["stop"], 16)
    assert lines[:n] == ["0 %016x %016x 1 1 %s/0000/%016x-%016x.ltx" % (t, t, PATH, t, t) for t in range(1, n + 1)]
    assert lines[n:] == ["%d|%s|1" % (n, r["stop"]), "%d|1" % n]
    # DIRECTONLY: not from a view (an untrusted schema must not reach the network or config).
    p = sqlite_shell(db, load_sql(ext, marker=False) +
                     "CREATE VIEW v2 AS SELECT * FROM litestream_ltx;\nSELECT * FROM v2;\n", check=False)
    assert p.returncode != 0 and "unsafe use of virtual table" in p.stderr, p.stderr
    # A bad url names the problem.
    p = sqlite_shell(db, load_sql(ext, marker=False) + "SELECT * FROM litestream_ltx('ftp://x');\n", check=False)
    assert p.returncode != 0 and "litestream_ltx: invalid value 'ftp://x' for url" in p.stderr, p.stderr


# ---------------------------------------------------------------- restore options and progress

def test_restore_options_errors(ext, s3, bucket, tmp_path):
    url = s3_url(bucket, PATH, s3.endpoint)
    ok, err = our_restore(ext, tmp_path / "a.db", url, txid="0000000000000001", timestamp="2026-01-01T00:00:00Z")
    assert not ok and "txid and timestamp cannot be combined" in err, err
    ok, err = our_restore(ext, tmp_path / "a.db", url, timestamp="yesterday")
    assert not ok and "option timestamp must be an RFC 3339 time" in err, err
    ok, err = our_restore(ext, tmp_path / "a.db", url, timestamp="2000-01-01T00:00:00Z")
    assert not ok and "no backup files available" in err, err


def test_restore_progress_in_status(pyhost, ext, s3, bucket, tmp_path):
    """While litestream_restore() runs on one connection, litestream_status() on another shows it."""
    src = tmp_path / "big.db"
    cfg = s3_config(bucket, PATH, s3.endpoint, levels="off", snapshot_interval="0")
    r = pyhost.run("""
        import threading
        c = start_replicating(P["db"], P["config"])
        c.execute("CREATE TABLE t(b BLOB)")
        c.execute("INSERT INTO t SELECT randomblob(4000) FROM (WITH RECURSIVE s(v) AS "
                  "(SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < 10000) SELECT v FROM s)")
        for i in range(30):
            c.execute("INSERT INTO t VALUES (randomblob(100))")
            one(c, "SELECT litestream_sync(30000)")
        one(c, "SELECT litestream_stop()")
        seen = []
        def restore():
            r = connect(":memory:")
            one(r, "SELECT litestream_restore(?, json_object('url', ?))", P["out"], P["url"])
        t = threading.Thread(target=restore)
        t.start()
        watcher = connect(":memory:")
        while t.is_alive():
            st = status(watcher)
            if st["restores"]:
                seen.append(st["restores"][0])
            time.sleep(0.005)
        t.join()
        result = {"seen": seen, "after": status(watcher)["restores"]}
    """, timeout=120, db=str(src), config=cfg, out=str(tmp_path / "out.db"),
        url=s3_url(bucket, PATH, s3.endpoint))
    assert r["seen"], "no restore seen in litestream_status() while it ran"
    last = r["seen"][-1]
    assert last["output"] == str(tmp_path / "out.db") and last["target"] == "latest", last
    assert last["files_total"] >= 31 and last["bytes_total"] > 40_000_000, last
    assert {s["phase"] for s in r["seen"]} <= {"planning", "downloading", "checking"}
    assert r["after"] == []
