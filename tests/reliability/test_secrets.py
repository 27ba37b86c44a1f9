"""The secret access key never appears in anything the extension says: litestream_config(),
litestream_configure() read-backs, litestream_status() (running, failing, stopped), SQL errors
(bad combinations, a wrong secret, an unreachable endpoint, restore failures), stderr and the
state files. The server (SeaweedFS, SigV4 enforced) accepts only SECRET_KEY, so the successful
steps prove the configured secret was really used. The rest of the suite records its outputs
too; conftest.py scans all of them at the end of the session."""
import json
import secrets

from pysupport import crash_trials
from pysupport.extension import s3_config
from pysupport.ports import closed_port
from rel_common import ACCESS_KEY, SECRET_KEY, leaks, seen, seen_files

WRONG_SECRET = "Wrong-%s-DoNotLeak" % secrets.token_hex(8)


def run_script(ext, db, steps, env=None):
    """crash_host.py `script`: (each step's result or error, everything the host printed)."""
    res, err = crash_trials.host("script", {"ext": ext, "db": str(db), "steps": steps}, env=env)
    printed = json.dumps(res) + "\n" + err
    seen("script output", printed)
    return res["steps"], printed


def cfg_steps(pairs):
    return [{"sql": "SELECT litestream_configure(?, ?)", "args": [k, v]} for k, v in pairs]


STATUS = {"sql": "SELECT litestream_status()"}
CONFIG = {"sql": "SELECT litestream_config()"}


def test_secret_never_shown(s3, ext, workdir):
    good = s3_config("crash", "secrets", s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    steps = cfg_steps(good) + [
        {"sql": "SELECT litestream_configure('secret-access-key')"},
        CONFIG, STATUS,
        {"sql": "SELECT litestream_start()"},
        {"sql": "CREATE TABLE t(x)"}, {"sql": "INSERT INTO t VALUES (randomblob(5000))"},
        {"sql": "SELECT litestream_sync(20000)"},
        STATUS, CONFIG,
        {"sql": "SELECT litestream_stop()"}, STATUS,
        # the secret alone (no access key id) is refused without echoing it
        {"sql": "SELECT litestream_configure('access-key-id', NULL)"},
        {"sql": "SELECT litestream_start()"},
        CONFIG,
        # a restore from the same replica with the configured credentials
        {"sql": "SELECT litestream_configure('access-key-id', ?)", "args": [ACCESS_KEY]},
        {"sql": "SELECT litestream_restore(?, ?)", "args": [str(workdir / "r1.db"), json.dumps({"overwrite": True})]},
        # by URL: the configured credentials apply too (the environment's secret is a wrong one)
        {"sql": "SELECT litestream_restore(?, ?)", "args": [str(workdir / "r1u.db"), json.dumps(
            {"url": "s3://crash/secrets?endpoint=%s" % s3.endpoint})]},
    ]
    out, raw = run_script(ext, workdir / "good.db", steps)
    assert out[len(good)]["result"] == [["********"]], out[len(good)]
    synced = [s for s in out if s["sql"].startswith("SELECT litestream_sync")][0]
    assert "result" in synced, "replication with the configured secret failed: %s" % synced
    assert any("error" in s for s in out if s["sql"] == "SELECT litestream_start()"), \
        "start with a secret but no access key id succeeded: %s" % out
    restored, by_url = out[-2], out[-1]
    assert "result" in restored, restored
    assert "result" in by_url, "a restore by URL ignored the configured credentials: %s" % by_url
    assert SECRET_KEY not in raw, "secret in the outputs:\n%s" % raw[:3000]

    # a wrong secret: SigV4 fails; status, sync and stop errors must not echo it either
    wrong = s3_config("crash", "secrets-wrong", s3.endpoint, access_key=ACCESS_KEY,
                      secret_key=WRONG_SECRET)
    steps = cfg_steps(wrong) + [
        {"sql": "SELECT litestream_start()"},
        {"sql": "CREATE TABLE t(x)"}, {"sql": "INSERT INTO t VALUES (1)"},
        {"sleep": 2.5}, STATUS,
        {"sql": "SELECT litestream_sync(1500)"}, STATUS, CONFIG,
        {"sql": "SELECT litestream_stop()"},
        {"sql": "SELECT litestream_restore(?)", "args": [str(workdir / "r2.db")]},
    ]
    out, raw2 = run_script(ext, workdir / "wrong.db", steps)
    st = json.loads([s for s in out if s["sql"] == STATUS["sql"]][0]["result"][0][0])
    assert st["last_error"], "a wrong secret gave no error in status: %s" % st
    print("wrong secret -> status last_error:", st["last_error"])
    assert WRONG_SECRET not in raw2 and SECRET_KEY not in raw2, raw2[:3000]
    seen("wrong-secret outputs", raw2)

    # an unreachable endpoint, and the LITESTREAM_* environment variables as the source
    dead = "http://127.0.0.1:%d" % closed_port()
    steps = cfg_steps([("bucket", "crash"), ("path", "x"), ("endpoint", dead), ("sync-interval", "100ms")]) + [
        {"sql": "SELECT litestream_start()"}, {"sql": "CREATE TABLE t(x)"},
        {"sleep": 1.5}, STATUS, CONFIG, {"sql": "SELECT litestream_sync(1000)"},
        {"sql": "SELECT litestream_restore(?, ?)", "args": [str(workdir / "r3.db"), json.dumps({"url": "s3://crash/x?endpoint=%s" % dead})]},
    ]
    out, raw3 = run_script(ext, workdir / "dead.db", steps,
                           env={"LITESTREAM_ACCESS_KEY_ID": ACCESS_KEY,
                                "LITESTREAM_SECRET_ACCESS_KEY": SECRET_KEY})
    assert SECRET_KEY not in raw3, raw3[:3000]
    seen_files("state files", workdir)
    assert not leaks(), leaks()
