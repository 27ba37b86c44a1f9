"""Running /usr/bin/python3 hosts (the only Python here whose sqlite3 can load the extension)
from pytest or an orchestrator: Python snippets (PyHost) and host programs with the
`MODE JSON` → `RESULT <json>` protocol of pysupport.hostside (run_program, HostProc).

Every host gets the child environment of pysupport.awsenv (plus what the caller adds) and the
repository root on sys.path, so it imports pysupport.hostside; a failure raises with the
host's stderr tail, never hangs past its timeout.
"""
import json
import subprocess
import textwrap
import time

from pysupport.awsenv import child_env
from pysupport.hostside import RESULT_PREFIX
from pysupport.paths import HOST_PYTHON, REPO

SNIPPET_TIMEOUT_S = 180
PROGRAM_TIMEOUT_S = 900


class HostError(AssertionError):
    pass


class PyHostError(HostError):
    pass


def parse_result(stdout):
    """The JSON of the last `RESULT ` line, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def _text(stream):
    return stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")


_PRELUDE = r'''
import json, os, sqlite3, subprocess, sys, time
sys.path.insert(0, %(repo)r)
from pysupport import hostside
from pysupport.hostside import cli, configure, error_of, one, status, wal_size
EXT = os.environ["LITESTREAM_EXT"]
P = json.loads(sys.argv[1])
log = hostside.logger("pyhost")


def connect(path, load=True):
    """An autocommit connection; with the extension loaded unless load=False."""
    return hostside.connect(path, EXT if load else None)


def start_replicating(path, pairs, setup=None):
    """connect(path) in WAL mode, the SQL script `setup` run, configured with pairs, after
    litestream_start()."""
    return hostside.start_replicating(path, EXT, pairs, setup)


result = None
'''


def snippet(*parts):
    """One PyHost snippet from several pieces, each dedented on its own (so a shared piece and a
    test's own code need not be indented alike)."""
    return "\n".join(textwrap.dedent(part) for part in parts)


class PyHost:
    """Runs a Python snippet in a fresh /usr/bin/python3 process that can load the extension.

    The snippet sees: EXT, P (the keyword arguments of run(), JSON round-tripped),
    connect(path, load=True), start_replicating(path, pairs, setup=None), one(c, sql, *args),
    error_of(c, sql, *args), configure(c, pairs), status(c), cli(db, sql), log(*args)
    (progress, shown if the snippet fails or hangs), wal_size(db), and the modules json, os,
    sqlite3, subprocess, sys, time; whatever it assigns to `result` (JSON-serialisable) is
    returned by run()."""

    def __init__(self, ext):
        self.ext = ext

    def run(self, code, timeout=SNIPPET_TIMEOUT_S, **params):
        script = (_PRELUDE % {"repo": str(REPO)} + textwrap.dedent(code)
                  + "\nhostside.emit_result(result)\n")
        t0 = time.monotonic()
        try:
            p = subprocess.run([HOST_PYTHON, "-c", script, json.dumps(params)], text=True,
                               capture_output=True, timeout=timeout,
                               env=child_env({"LITESTREAM_EXT": str(self.ext)}))
        except subprocess.TimeoutExpired as e:
            raise PyHostError("PyHost snippet timed out after %ss\n--- stderr\n%s" % (
                timeout, _text(e.stderr)[-4000:])) from None
        if p.returncode != 0:
            raise PyHostError("PyHost snippet exited %d after %.1fs\n--- stderr\n%s--- stdout\n%s" % (
                p.returncode, time.monotonic() - t0, p.stderr[-6000:], p.stdout[-2000:]))
        if RESULT_PREFIX not in p.stdout:
            raise PyHostError("PyHost snippet printed no result\n%s" % p.stdout[-2000:])
        return parse_result(p.stdout)


def _argv(program, mode, params):
    return [HOST_PYTHON, str(program), mode, json.dumps(params)]


def run_program(program, mode, params, timeout=PROGRAM_TIMEOUT_S, env=None):
    """`/usr/bin/python3 PROGRAM MODE JSON` to its end; returns (result, stderr). `env` adds
    to the child environment."""
    p = subprocess.run(_argv(program, mode, params), text=True, capture_output=True,
                       timeout=timeout, env=child_env(env))
    res = parse_result(p.stdout)
    if p.returncode != 0 or res is None:
        raise HostError("%s %s exited %d\n--- stderr\n%s\n--- stdout\n%s" % (
            program.name, mode, p.returncode, p.stderr[-4000:], p.stdout[-2000:]))
    return res, p.stderr


class HostProc:
    """A host program running in the background: a line protocol on its stdin/stdout (`ready`,
    `started`, commands and answers), then finish() for its RESULT. stderr goes to a pipe, or
    to `stderr` (a file) for programs that write a lot of it."""

    def __init__(self, program, mode, params, env=None, stderr=None):
        self.name = "%s %s" % (program.name, mode)
        self.p = subprocess.Popen(_argv(program, mode, params), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=stderr or subprocess.PIPE,
                                  text=True, bufsize=1, env=child_env(env))

    @property
    def pid(self):
        return self.p.pid

    def _stderr_tail(self):
        return self.p.stderr.read()[-4000:] if self.p.stderr else "(stderr in a file)"

    def readline(self):
        line = self.p.stdout.readline()
        if not line:
            err = self._stderr_tail()
            raise HostError("%s exited early (%s):\n%s" % (self.name, self.p.wait(), err))
        return line.rstrip("\n")

    def expect(self, prefix):
        """The next line, which must start with `prefix` (e.g. `ready`, `started`)."""
        line = self.readline()
        if not line.startswith(prefix):
            out, err = self.p.communicate(timeout=30)
            raise HostError("%s: expected %r, got %r\n%s\n%s" % (
                self.name, prefix, line, out[-2000:], (err or "")[-3000:]))
        return line

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def call(self, cmd):
        self.send(cmd)
        return self.readline()

    def finish(self, timeout=600):
        """Close stdin (the program's EOF), wait, and return (result, stdout, stderr)."""
        out, err = self.p.communicate(timeout=timeout)
        res = parse_result(out)
        if self.p.returncode != 0 or res is None:
            raise HostError("%s exited %d\n%s" % (self.name, self.p.returncode, (err or "")[-4000:]))
        return res, out, err or ""

    def kill(self):
        """SIGKILL; returns (stdout, stderr) of what it printed."""
        self.p.kill()
        out, err = self.p.communicate(timeout=30)
        return out, err or ""
