"""Helpers shared by the integration tests (imported by conftest.py and the test modules).

Hosts used to load the extension:
- the sqlite3 CLI (/usr/bin/sqlite3, 3.40.1) running the scripts in <repo>/sql/;
- /usr/bin/python3 (Debian's, SQLite 3.40.1) through PyHost. The default `python3` on PATH (pyenv)
  was built without enable_load_extension, so it only runs pytest itself.

Every process started here inherits AWS_ENV (loopback-only credentials, no EC2 metadata lookups).
"""
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCRIPTS = REPO / "scripts"  # s3-server.sh, install-litestream.sh
LTX_CHECK = REPO / "tests" / "tools" / "ltx_check.py"  # the independent LTX checker
SQL_DIR = REPO / "sql"
SQLITE3 = os.environ.get("SQLITE3_CLI", "/usr/bin/sqlite3")
HOST_PYTHON = "/usr/bin/python3"

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "testtesttest",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Anything that could steer an AWS SDK away from the explicit loopback configuration.
_AWS_DROP = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
             "AWS_SESSION_TOKEN")
os.environ.update(AWS_ENV)
for _k in _AWS_DROP:
    os.environ.pop(_k, None)

# The extension's functions, as `pragma_function_list` must show them (sorted, distinct names).
EXPECTED_FUNCTIONS = [
    "litestream_config",
    "litestream_configure",
    "litestream_restore",
    "litestream_start",
    "litestream_status",
    "litestream_stop",
    "litestream_sync",
    "litestream_version",
]
BUSY_TIMEOUT_MS = 10000
TXID_RE = re.compile(r"^[0-9a-f]{16}$")
LTX_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")


def child_env(extra=None, drop_ca_bundle=False):
    """Environment for a child process: ours plus AWS_ENV; without AWS_CA_BUNDLE if asked
    (the reference litestream binary refuses to start with it set)."""
    env = dict(os.environ)
    env.update(AWS_ENV)
    for k in _AWS_DROP:
        env.pop(k, None)
    if drop_ca_bundle:
        env.pop("AWS_CA_BUNDLE", None)
    env.update(extra or {})
    return env


def require_loopback(url):
    if not re.match(r"^https?://(127\.\d+\.\d+\.\d+|localhost)(:\d+)?(/|$)", url):
        raise RuntimeError("refusing non-loopback S3 endpoint %r" % url)
    return url


# ---------------------------------------------------------------- SQL text helpers

def sql_literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


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


def _pairs(extra):
    return [(k.replace("_", "-"), v) for k, v in extra.items()]


def _merge(base, extra):
    out = dict(base)
    for k, v in _pairs(extra):
        out[k] = v
    return list(out.items())


def s3_config(bucket, path, endpoint, **extra):
    """(key, value) pairs configuring an S3 replica on the loopback server. Keyword arguments
    add or override keys (underscores become hyphens: part_size= -> 'part-size')."""
    base = [
        ("bucket", bucket),
        ("path", path),
        ("endpoint", require_loopback(endpoint)),
        ("region", "us-east-1"),
        ("force-path-style", "true"),
        ("access-key-id", AWS_ENV["AWS_ACCESS_KEY_ID"]),
        ("secret-access-key", AWS_ENV["AWS_SECRET_ACCESS_KEY"]),
        ("sync-interval", "100ms"),
    ]
    return _merge(base, extra)


def file_config(directory, **extra):
    """(key, value) pairs configuring a `file` replica in `directory` (absolute)."""
    directory = Path(directory).resolve()
    return _merge([("type", "file"), ("url", "file://%s" % directory), ("sync-interval", "100ms")], extra)


def config_sql(pairs):
    """One line of `SELECT litestream_configure(k, v);` statements."""
    return " ".join("SELECT litestream_configure(%s, %s);" % (sql_literal(k), sql_literal(v))
                    for k, v in pairs)


def configure_sql(bucket, path, endpoint, **extra):
    return config_sql(s3_config(bucket, path, endpoint, **extra))


def s3_url(bucket, path, endpoint):
    """Replica URL in the extension's form (force-path-style and region default with an endpoint)."""
    return "s3://%s/%s?endpoint=%s" % (bucket, path, require_loopback(endpoint))


def reference_url(bucket, path, endpoint):
    """Replica URL as the reference `litestream` CLI takes it."""
    return "s3://%s/%s?endpoint=%s&forcePathStyle=true&region=us-east-1" % (
        bucket, path, require_loopback(endpoint))


# ---------------------------------------------------------------- the sqlite3 CLI host

class ShellError(AssertionError):
    def __init__(self, msg, stdout="", stderr="", returncode=None):
        super().__init__(msg)
        self.stdout, self.stderr, self.returncode = stdout, stderr, returncode


def sqlite_shell(db, sql_text, check=True, timeout=180, env=None):
    """Run sql_text through `sqlite3 -bail DB` (with a busy timeout, as an application would set:
    the replicator's checkpoints briefly hold locks); returns the CompletedProcess."""
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


def ext_error(ext, db, sql_text, **kw):
    """Loads the extension in `sqlite3 -bail DB`, runs sql_text, which must fail, and returns the
    error (stderr). Fails if the extension itself did not load."""
    p = sqlite_shell(db, load_sql(ext) + sql_text, check=False, **kw)
    assert "loaded=" in p.stdout, "the extension did not load: %s" % p.stderr
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


def load_sql(ext, marker=True):
    """`.load` of the extension, then (marker) a `loaded=<version>` line proving it loaded."""
    return '.load "%s"\n' % ext + ("SELECT 'loaded=' || litestream_version();\n" if marker else "")


def config_keys(ext):
    """The configuration keys as the extension itself lists them (the keys of
    litestream_config(), in its order), so no test keeps a copy that can go stale."""
    out = run_sqlite_shell(":memory:", load_sql(ext, marker=False) + "SELECT litestream_config();\n")
    return list(json.loads(out))


def replicate_shell(ext, db, config, workload=None, sync_timeout_ms=30000, timeout=180):
    """sql/replicate.sql on `db` in one sqlite3 process: load, configure, start, workload, sync,
    status, stop. Returns the labeled results (start, sync, status, stop)."""
    workload = workload if workload is not None else ".read %s" % (SQL_DIR / "workload.sql")
    script = render_sql("replicate.sql", EXT=ext, CONFIG=config_sql(config), WORKLOAD=workload,
                        SYNC_TIMEOUT_MS=sync_timeout_ms)
    return labeled(run_sqlite_shell(db, script, timeout=timeout))


def restore_args(out, url=None, overwrite=None):
    opts = {}
    if url is not None:
        opts["url"] = url
    if overwrite is not None:
        opts["overwrite"] = overwrite
    args = [sql_literal(str(out))]
    if opts:
        args.append(sql_literal(json.dumps(opts)))
    return ", ".join(args)


def restore_shell(ext, out, url=None, overwrite=None, host_db=":memory:", config=None,
                  check=True, timeout=180):
    """sql/restore.sql: litestream_restore(out[, options]) from a sqlite3 process whose main
    database is host_db (configured with `config` pairs first, if given). With check=True returns
    the TXID; with check=False returns the CompletedProcess."""
    script = render_sql("restore.sql", EXT=ext, CONFIG=config_sql(config or []),
                        ARGS=restore_args(out, url, overwrite))
    p = sqlite_shell(host_db, script, check=check, timeout=timeout)
    if not check:
        assert "loaded=" in p.stdout, "the extension did not load: %s" % p.stderr
        return p
    txid = labeled(p.stdout).get("restored")
    assert txid is not None and TXID_RE.match(txid), "restore returned %r" % p.stdout
    return txid


# ---------------------------------------------------------------- comparing databases

def dump(db):
    """`.dump` text of db through the CLI."""
    return run_sqlite_shell(db, ".dump\n")


def dump_digest(db, timeout=600):
    """sha256 and size of `.dump` (for databases too big to hold two dumps in memory)."""
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen([SQLITE3, "-bail", str(db), ".dump"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=child_env()) as p:
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
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


# ---------------------------------------------------------------- LTX checks

_ltx_mod = None


def _ltx_module():
    global _ltx_mod
    if _ltx_mod is None:
        spec = importlib.util.spec_from_file_location("ltx_check", LTX_CHECK)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod._check_crc()
        _ltx_mod = mod
    return _ltx_mod


def ltx_decode(data):
    """Decode and fully verify one LTX file with tests/tools/ltx_check.py (raises ValueError)."""
    return _ltx_module().decode(data)


def ltx_check(path):
    """ltx_check.py's verdict on the file at `path`, as the dict it prints."""
    return ltx_decode(Path(path).read_bytes())


def is_full_snapshot(info):
    """The file carries every page 1..commit (except SQLite's lock page)."""
    lock = 1073741824 // info["page_size"] + 1
    want = {p for p in range(1, info["commit"] + 1) if p != lock}
    return {p for p, _ in info["pages"]} == want


def parse_rfc3339_ms(s):
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?Z$", s)
    assert m, "not an RFC3339 UTC timestamp: %r" % s
    t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    frac = m.group(2) or ""
    ms = int((frac[1:] + "000")[:3]) if frac else 0
    return int(t.timestamp()) * 1000 + ms


def check_ltx_chain(files):
    """files: [(name, bytes, litestream-timestamp metadata or None)], in TXID order.
    Every file passes ltx_check.py; names match their headers; L0 TXIDs run 1, 2, 3, ... without
    gaps; the first file is a full snapshot at TXID 1; metadata (if given) equals the header
    timestamp. Returns the decoded headers (with 'name' added)."""
    assert files, "no LTX files in the replica"
    infos = []
    for i, (name, data, meta_ts) in enumerate(files):
        m = LTX_NAME_RE.match(name)
        assert m, "bad LTX file name %r" % name
        try:
            info = ltx_decode(data)
        except Exception as e:  # noqa: BLE001 - report which file
            raise AssertionError("%s fails ltx_check.py: %s" % (name, e)) from e
        assert (info["min_txid"], info["max_txid"]) == m.groups(), \
            "%s: header TXIDs %s-%s" % (name, info["min_txid"], info["max_txid"])
        assert info["min_txid"] == info["max_txid"] == "%016x" % (i + 1), \
            "L0 files must be one TXID each, 1, 2, 3, ...: file %d is %s" % (i, name)
        if meta_ts is not None:
            assert parse_rfc3339_ms(meta_ts) == info["timestamp_ms"], \
                "%s: litestream-timestamp %r != header timestamp %d ms" % (name, meta_ts, info["timestamp_ms"])
        info["name"] = name
        infos.append(info)
    assert is_full_snapshot(infos[0]), "first L0 file %s is not a full snapshot (%d pages, commit %d)" % (
        infos[0]["name"], len(infos[0]["pages"]), infos[0]["commit"])
    return infos


# ---------------------------------------------------------------- S3 helpers

def s3_client(endpoint):
    import boto3
    from botocore.config import Config
    return boto3.client(
        "s3", endpoint_url=require_loopback(endpoint), region_name="us-east-1",
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                      connect_timeout=5, read_timeout=60))


def list_keys(client, bucket, prefix=""):
    """Sorted [(key, size)] of every object under prefix."""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    return sorted(out)


def empty_bucket(client, bucket):
    keys = [k for k, _ in list_keys(client, bucket)]
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
    for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])


def check_other_level(name, data, meta_ts=None):
    """A compaction (L1..L8) or snapshot (L9) file: passes ltx_check.py, its name matches its
    header, and its litestream-timestamp metadata (if given) equals the header timestamp."""
    m = LTX_NAME_RE.match(name.rsplit("/", 1)[-1])
    assert m, "bad LTX file name %r" % name
    try:
        info = ltx_decode(data)
    except Exception as e:  # noqa: BLE001 - report which file
        raise AssertionError("%s fails ltx_check.py: %s" % (name, e)) from e
    assert (info["min_txid"], info["max_txid"]) == m.groups(), name
    if meta_ts is not None:
        assert parse_rfc3339_ms(meta_ts) == info["timestamp_ms"], name
    return info


def check_s3_replica(client, bucket, path):
    """Every object in the bucket is `<path>/<%04x level>/<16 hex>-<16 hex>.ltx` and carries
    metadata litestream-timestamp; level 0 passes check_ltx_chain, other levels (compaction,
    snapshots) check_other_level. Returns the decoded level-0 headers."""
    key_re = re.compile(r"^%s/(000[0-9])/[0-9a-f]{16}-[0-9a-f]{16}\.ltx$" % re.escape(path))
    keys = list_keys(client, bucket)
    bad = [k for k, _ in keys if not key_re.match(k)]
    assert not bad, "objects outside %s/<level>/<min>-<max>.ltx: %s" % (path, bad[:10])
    files = []
    for key, _ in keys:
        obj = client.get_object(Bucket=bucket, Key=key)
        meta = obj.get("Metadata", {})
        assert "litestream-timestamp" in meta, "%s has no litestream-timestamp metadata: %r" % (key, meta)
        if key_re.match(key).group(1) != "0000":
            check_other_level(key, obj["Body"].read(), meta["litestream-timestamp"])
            continue
        files.append((key.rsplit("/", 1)[1], obj["Body"].read(), meta["litestream-timestamp"]))
    infos = check_ltx_chain(files)
    for info in infos:
        info["key"] = "%s/0000/%s" % (path, info["name"])
    return infos


def check_file_replica(directory):
    """Every file under directory is ltx/<level>/<16 hex>-<16 hex>.ltx; level 0 passes
    check_ltx_chain, other levels check_other_level. Returns the decoded level-0 headers."""
    directory = Path(directory)
    found = sorted(p for p in directory.rglob("*") if p.is_file())
    levels = [directory / "ltx" / str(n) for n in range(10)]
    bad = [str(p.relative_to(directory)) for p in found
           if p.parent not in levels or not LTX_NAME_RE.match(p.name)]
    assert not bad, "files outside ltx/<level>/<min>-<max>.ltx in %s: %s" % (directory, bad[:10])
    for p in found:
        if p.parent != levels[0]:
            check_other_level(str(p), p.read_bytes())
    return check_ltx_chain([(p.name, p.read_bytes(), None) for p in found if p.parent == levels[0]])


# ---------------------------------------------------------------- the Python host

class PyHostError(AssertionError):
    pass


_PRELUDE = r'''
import json, os, sqlite3, subprocess, sys, time
EXT = os.environ["LITESTREAM_EXT"]
P = json.loads(sys.argv[1])
T0 = time.time()

def connect(path, load=True):
    """A connection in autocommit mode; with the extension loaded unless load=False."""
    c = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    if load:
        c.enable_load_extension(True)
        c.load_extension(EXT)
        c.enable_load_extension(False)
    return c

def one(c, sql, *args):
    row = c.execute(sql, args).fetchone()
    return None if row is None else row[0]

def error_of(c, sql, *args):
    """The error message of a statement that should fail, or None if it succeeded."""
    try:
        c.execute(sql, args).fetchall()
    except sqlite3.Error as e:
        return str(e)
    return None

def configure(c, pairs):
    for k, v in pairs:
        one(c, "SELECT litestream_configure(?, ?)", k, v)

def status(c):
    return json.loads(one(c, "SELECT litestream_status()"))

def cli(db, sql):
    """Run SQL in a separate sqlite3 process (another process writing to the database)."""
    p = subprocess.run(["/usr/bin/sqlite3", "-bail", "-cmd", ".timeout 10000", db], input=sql,
                       text=True, capture_output=True)
    if p.returncode:
        raise RuntimeError("sqlite3 %s failed: %s" % (db, p.stderr))
    return p.stdout

def log(*args):
    """Progress to stderr: shown by run() when the snippet fails or times out."""
    print("[pyhost %.2fs]" % (time.time() - T0), *args, file=sys.stderr, flush=True)

def wal_size(db):
    try:
        return os.path.getsize(db + "-wal")
    except FileNotFoundError:
        return 0

result = None
'''

_MARK = "@@PYHOST_RESULT@@"


class PyHost:
    """Runs a Python snippet in a fresh /usr/bin/python3 process that can load the extension.

    The snippet sees: EXT, P (the keyword arguments of run(), JSON round-tripped), connect(path),
    one(c, sql, *args), error_of(c, sql, *args), configure(c, pairs), status(c), cli(db, sql),
    log(*args) (progress, shown if the snippet fails or hangs), wal_size(db); whatever it
    assigns to `result` (JSON-serialisable) is returned by run()."""

    def __init__(self, ext):
        self.ext = ext

    def run(self, code, timeout=180, **params):
        script = _PRELUDE + textwrap.dedent(code) + "\nprint(%r + json.dumps(result))\n" % _MARK
        t0 = time.monotonic()
        try:
            p = subprocess.run([HOST_PYTHON, "-c", script, json.dumps(params)], text=True,
                               capture_output=True, timeout=timeout,
                               env=child_env({"LITESTREAM_EXT": str(self.ext)}))
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            raise PyHostError("PyHost snippet timed out after %ss\n--- stderr\n%s" % (
                timeout, err[-4000:])) from None
        if p.returncode != 0:
            raise PyHostError("PyHost snippet exited %d after %.1fs\n--- stderr\n%s--- stdout\n%s" % (
                p.returncode, time.monotonic() - t0, p.stderr[-6000:], p.stdout[-2000:]))
        for line in reversed(p.stdout.splitlines()):
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK):])
        raise PyHostError("PyHost snippet printed no result\n%s" % p.stdout[-2000:])


# ---------------------------------------------------------------- the S3 server

class S3Server:
    """SeaweedFS through scripts/s3-server.sh on a free loopback port, SigV4 enforced."""

    def __init__(self, state_dir, buckets=("test",)):
        from free_port import free_s3_port
        self.port = free_s3_port()
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.buckets = list(buckets)
        self.env = child_env({"S3_PORT": str(self.port), "S3_STATE": str(state_dir),
                              "S3_AUTH": "1", "S3_BUCKETS": ",".join(self.buckets)})
        self.script = SCRIPTS / "s3-server.sh"

    def start(self):
        p = subprocess.run(["bash", str(self.script), "start"], env=self.env, text=True,
                           capture_output=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError("s3-server.sh failed:\n%s\n%s" % (p.stdout, p.stderr))
        return self

    def stop(self):
        subprocess.run(["bash", str(self.script), "stop"], env=self.env, timeout=60)
