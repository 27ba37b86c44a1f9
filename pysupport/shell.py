"""The sqlite3 shell host (/usr/bin/sqlite3, which can `.load`): the scripts in sql/ with their
@NAME@ placeholders filled, restores, and comparisons of databases.

Every script runs with `-bail` and a busy timeout, as an application would set one (the
replicator's checkpoints briefly hold locks), in the child environment of pysupport.awsenv.
A failure raises ShellError with the exit status, stderr and the script's head.
"""
import hashlib
import json
import re
import subprocess
from pathlib import Path

from pysupport.awsenv import child_env
from pysupport.extension import TXID_RE, config_sql, sql_literal
from pysupport.paths import SQL_DIR, SQLITE3

BUSY_TIMEOUT_MS = 10000
SHELL_TIMEOUT_S = 180
# `.dump` of a database too big to hold twice in memory is hashed while it streams.
DUMP_CHUNK = 1 << 20


class ShellError(AssertionError):
    def __init__(self, msg, stdout="", stderr="", returncode=None):
        super().__init__(msg)
        self.stdout, self.stderr, self.returncode = stdout, stderr, returncode


def render_sql(name, **values):
    """<repo>/sql/<name> without its comment lines, each @KEY@ replaced by values[KEY] verbatim."""
    text = "".join(line for line in (SQL_DIR / name).read_text().splitlines(True)
                   if not line.startswith("--"))
    for key, val in values.items():
        text = text.replace("@%s@" % key, str(val))
    left = re.findall(r"@[A-Z][A-Z_]*@", text)
    if left:
        raise ValueError("sql/%s: placeholders not filled: %s" % (name, sorted(set(left))))
    return text


def sqlite_shell(db, sql_text, check=True, timeout=SHELL_TIMEOUT_S, env=None):
    """Run sql_text through `sqlite3 -bail DB`; returns the CompletedProcess (raises ShellError
    on a non-zero exit when check)."""
    p = subprocess.run([SQLITE3, "-bail", "-cmd", ".timeout %d" % BUSY_TIMEOUT_MS, str(db)],
                       input=sql_text, text=True, capture_output=True, timeout=timeout,
                       env=env or child_env())
    if check and p.returncode != 0:
        raise ShellError("sqlite3 %s exited %d\n--- stderr\n%s--- stdout (tail)\n%s\n--- script\n%s"
                         % (db, p.returncode, p.stderr, p.stdout[-2000:], sql_text[:4000]),
                         p.stdout, p.stderr, p.returncode)
    return p


def run_sqlite_shell(db, sql_text, **kw):
    """stdout of `sqlite3 -bail DB < sql_text`; raises ShellError (with stderr) on failure."""
    return sqlite_shell(db, sql_text, **kw).stdout


def config_keys(ext):
    """The configuration keys as the extension itself lists them (the keys of
    litestream_config(), in its order), so no test keeps a copy that can go stale."""
    out = run_sqlite_shell(":memory:", load_sql(ext, marker=False) + "SELECT litestream_config();\n")
    return list(json.loads(out))


def load_sql(ext, marker=True):
    """`.load` of the extension, then (marker) a `loaded=<version>` line proving it loaded."""
    return '.load "%s"\n' % ext + ("SELECT 'loaded=' || litestream_version();\n" if marker else "")


def assert_loaded(p):
    assert "loaded=" in p.stdout, "the extension did not load: %s" % p.stderr


def ext_error(ext, db, sql_text, **kw):
    """Loads the extension in `sqlite3 -bail DB`, runs sql_text, which must fail, and returns the
    error (stderr). Fails if the extension itself did not load."""
    p = sqlite_shell(db, load_sql(ext) + sql_text, check=False, **kw)
    assert_loaded(p)
    assert p.returncode != 0, "expected an error, got success; stdout:\n%s" % p.stdout
    assert p.stderr.strip(), "failed without a message on stderr"
    return p.stderr


def labeled(stdout):
    """`key=value` lines of a script's output (our scripts label every result they print)."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^([a-z_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def replicate_shell(ext, db, config, workload=None, sync_timeout_ms=30000, timeout=SHELL_TIMEOUT_S):
    """sql/replicate.sql on `db` in one sqlite3 process: load, configure, start, workload, sync,
    status, stop. Returns the labeled results (start, sync, status, stop)."""
    workload = workload if workload is not None else ".read %s" % (SQL_DIR / "workload.sql")
    script = render_sql("replicate.sql", EXT=ext, CONFIG=config_sql(config), WORKLOAD=workload,
                        SYNC_TIMEOUT_MS=sync_timeout_ms)
    return labeled(run_sqlite_shell(db, script, timeout=timeout))


def restore_args(out, url=None, overwrite=None, options=None):
    """litestream_restore()'s SQL arguments: out, and the options object when there is one
    (url, overwrite, then `options`: txid, timestamp, ...)."""
    opts = {}
    if url is not None:
        opts["url"] = url
    if overwrite is not None:
        opts["overwrite"] = overwrite
    opts.update(options or {})
    args = [sql_literal(str(out))]
    if opts:
        args.append(sql_literal(json.dumps(opts)))
    return ", ".join(args)


def restored_txid(p):
    """The TXID a sql/restore.sql run printed, or None."""
    m = re.search(r"^restored=([0-9a-f]{16})$", p.stdout, re.M)
    return m.group(1) if m else None


def restore_shell(ext, out, url=None, overwrite=None, host_db=":memory:", config=None,
                  check=True, timeout=SHELL_TIMEOUT_S, options=None, env=None):
    """sql/restore.sql: litestream_restore(out[, options]) from a sqlite3 process whose main
    database is host_db (configured with `config` pairs first, if given). With check=True returns
    the TXID; with check=False returns the CompletedProcess (restored_txid() reads it)."""
    script = render_sql("restore.sql", EXT=ext, CONFIG=config_sql(config or []),
                        ARGS=restore_args(out, url, overwrite, options))
    p = sqlite_shell(host_db, script, check=check, timeout=timeout, env=env)
    if not check:
        assert_loaded(p)
        return p
    txid = restored_txid(p)
    assert txid is not None and TXID_RE.match(txid), "restore returned %r" % p.stdout
    return txid


# ---------------------------------------------------------------- comparing databases

def dump(db):
    """`.dump` text of db through the shell."""
    return run_sqlite_shell(db, ".dump\n")


def dump_digest(db, timeout=600):
    """sha256 and size of `.dump` (for databases too big to hold two dumps in memory)."""
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen([SQLITE3, "-bail", str(db), ".dump"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=child_env()) as p:
        for chunk in iter(lambda: p.stdout.read(DUMP_CHUNK), b""):
            h.update(chunk)
            n += len(chunk)
        err = p.stderr.read().decode(errors="replace")
        rc = p.wait(timeout=timeout)
    if rc != 0:
        raise ShellError("sqlite3 %s .dump exited %d: %s" % (db, rc, err), stderr=err, returncode=rc)
    return h.hexdigest(), n


def integrity(db):
    return run_sqlite_shell(db, "PRAGMA integrity_check;\n").strip()


def assert_same_db(src, restored, big=False):
    """restored has the same `.dump` as src and passes PRAGMA integrity_check."""
    assert Path(restored).exists(), "%s does not exist" % restored
    assert integrity(restored) == "ok"
    if big:
        a, b = dump_digest(src), dump_digest(restored)
        assert a == b, "dump of %s (sha256, bytes) %s != %s of %s" % (restored, b, a, src)
        return
    a, b = dump(src), dump(restored)
    if a != b:
        la, lb = a.splitlines(), b.splitlines()
        i = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
        raise AssertionError(
            "dump of %s differs from %s at line %d (%d vs %d lines):\n  src: %s\n  got: %s"
            % (restored, src, i + 1, len(la), len(lb), (la[i] if i < len(la) else "<end>")[:300],
               (lb[i] if i < len(lb) else "<end>")[:300]))


def assert_restores(ext, src, out, url, txid=None, big=False, timeout=SHELL_TIMEOUT_S):
    """litestream_restore(out, {url}) succeeds (with TXID `txid`, if given) and `out` equals
    `src`. Returns the TXID restored."""
    got = restore_shell(ext, out, url=url, timeout=timeout)
    if txid is not None:
        assert got == txid, "restore returned TXID %s, the replica ends at %s" % (got, txid)
    assert_same_db(src, out, big=big)
    return got
