"""Restart: stopping and starting again with no writes in between uploads nothing new (above all,
no new full snapshot), and replication then continues incrementally from the replica's TXID."""
from pysupport.extension import s3_config, s3_url
from pysupport.ltx import check_s3_replica, is_full_snapshot
from pysupport.paths import SQL_DIR
from pysupport.s3client import key_names
from pysupport.shell import assert_restores, replicate_shell, run_sqlite_shell

SMALL_WRITE = "UPDATE items SET qty = qty + 1 WHERE id IN (1, 2, 3);"


def _check_after_restart(s3, bucket, first_stop, idle_sync, idle_stop, final_stop):
    assert idle_sync == first_stop and idle_stop == first_stop, (
        "a restart with no writes moved the replica from %s to sync=%s stop=%s"
        % (first_stop, idle_sync, idle_stop))
    infos = check_s3_replica(s3.client, bucket, "db")          # contiguous L0 chain from TXID 1
    assert infos[-1]["max_txid"] == final_stop
    later = [i for i in infos if i["min_txid"] > first_stop]
    assert later, "the write after the restart was not replicated"
    snapshots = [i["name"] for i in later if is_full_snapshot(i)]
    assert not snapshots, "full snapshot(s) after a clean restart: %s" % snapshots


def test_restart_in_new_processes(ext, s3, bucket, tmp_path):
    src = tmp_path / "src.db"
    cfg = s3_config(bucket, "db", s3.endpoint)
    first = replicate_shell(ext, src, cfg)
    def l0_keys():  # compaction may run at start; what must not appear is a new L0 file
        return key_names(s3.client, bucket, "db/0000/")
    keys = l0_keys()
    idle = replicate_shell(ext, src, cfg, workload="")
    assert l0_keys() == keys, "L0 objects uploaded by a restart with no writes"
    more = replicate_shell(ext, src, cfg, workload=SMALL_WRITE)
    _check_after_restart(s3, bucket, first["stop"], idle["sync"], idle["stop"], more["stop"])
    assert_restores(ext, src, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint), more["stop"])


def test_restart_in_same_process(pyhost, ext, s3, bucket, tmp_path):
    src = tmp_path / "src.db"
    r = pyhost.run("""
        c = start_replicating(P["db"], P["config"])
        c.executescript(P["workload"])
        one(c, "SELECT litestream_sync(30000)")
        first_stop = one(c, "SELECT litestream_stop()")
        one(c, "SELECT litestream_start()")
        idle_sync = one(c, "SELECT litestream_sync(30000)")
        idle_stop = one(c, "SELECT litestream_stop()")
        one(c, "SELECT litestream_start()")
        c.executescript(P["small"])
        one(c, "SELECT litestream_sync(30000)")
        result = {"first_stop": first_stop, "idle_sync": idle_sync, "idle_stop": idle_stop,
                  "final_stop": one(c, "SELECT litestream_stop()")}
    """, db=str(src), config=s3_config(bucket, "db", s3.endpoint), small=SMALL_WRITE,
        workload=(SQL_DIR / "workload.sql").read_text())
    _check_after_restart(s3, bucket, r["first_stop"], r["idle_sync"], r["idle_stop"], r["final_stop"])
    assert_restores(ext, src, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint), r["final_stop"])


def test_writes_while_stopped_are_not_lost(ext, s3, bucket, tmp_path):
    """Another program writes while replication is stopped and its last connection checkpoints
    and deletes the WAL. The next start cannot prove continuity from the WAL, so the first sync
    must already include those writes (a snapshot), not report the old TXID."""
    src = tmp_path / "src.db"
    cfg = s3_config(bucket, "db", s3.endpoint)
    first = replicate_shell(ext, src, cfg)
    run_sqlite_shell(src, "INSERT INTO items(name, qty) VALUES ('written while stopped', 7);\n")
    assert not (tmp_path / "src.db-wal").exists(), "the writer's close should checkpoint and delete the WAL"
    again = replicate_shell(ext, src, cfg, workload="")
    assert again["sync"] > first["stop"], "the writes made while stopped were not uploaded"
    assert_restores(ext, src, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint))


CRASHING_WRITER = """
import sqlite3, sys, os
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.enable_load_extension(True); c.load_extension(sys.argv[2])
for k, v in zip(sys.argv[3::2], sys.argv[4::2]):
    c.execute("SELECT litestream_configure(?, ?)", (k, v))
c.execute("SELECT litestream_start()")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
for i in range(20):
    c.execute("INSERT INTO t(v) VALUES (?)", ("before %d" % i,))
print(c.execute("SELECT litestream_sync(30000)").fetchone()[0], flush=True)
for i in range(5):
    c.execute("INSERT INTO t(v) VALUES (?)", ("after %d" % i,))
os._exit(0)
"""


def test_lost_state_directory_after_a_crash_needs_no_snapshot(pyhost, ext, s3, bucket, tmp_path):
    """The process dies without litestream_stop() (os._exit: nothing runs at exit), with commits
    after its last sync, and its `.<db>-litestream/` directory is lost. The next start finds its
    position from the replica's newest L0 file (WAL offset and salts, as Litestream does) and the
    WAL that still holds that generation: it continues incrementally, uploads the commits the
    crash left behind, and takes no full snapshot."""
    import shutil
    src = tmp_path / "src.db"
    cfg = s3_config(bucket, "db", s3.endpoint, lease="off", levels="off", snapshot_interval="0")
    crashed = pyhost.run("""
        import subprocess, sys
        args = [sys.executable, "-c", P["script"], P["db"], P["ext"]]
        for k, v in P["config"]:
            args += [k, v]
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
        result = {"synced": p.stdout.strip(), "rc": p.returncode, "err": p.stderr}
    """, db=str(src), ext=ext, config=cfg, script=CRASHING_WRITER)
    assert crashed["rc"] == 0, crashed["err"]
    shutil.rmtree(tmp_path / ".src.db-litestream")
    r = pyhost.run("""
        c = connect(P["db"])
        configure(c, P["config"])
        one(c, "SELECT litestream_start()")
        synced = one(c, "SELECT litestream_sync(30000)")
        result = {"synced": synced, "status": status(c), "stop": one(c, "SELECT litestream_stop()")}
    """, db=str(src), config=cfg)
    assert r["status"]["snapshots"] == 0, r["status"]["last_snapshot_reason"]
    assert r["synced"] > crashed["synced"], (crashed, r["synced"])
    assert_restores(ext, src, tmp_path / "out.db", s3_url(bucket, "db", s3.endpoint), r["stop"])
