"""The README's examples, run as written: each fenced block that follows a line
`<!-- example: NAME -->` is taken verbatim, with only the replica URL pointed at the test server
(`s3://my-bucket/app.db` gets the test bucket and `?endpoint=...`) and the from-source library
path (`./target/release/liblitestream`) made absolute. Credentials come from the environment, as
the README says. After the example ran in a fresh folder, its app.db is restored from the bucket
by the sqlite3 shell, and the copy must equal the source."""
import re
import subprocess

from pysupport.awsenv import child_env
from pysupport.extension import s3_url
from pysupport.paths import REPO
from pysupport.shell import assert_restores

README = REPO / "README.md"
REPLICA_URL = "s3://my-bucket/app.db"
SOURCE_LIBRARY = "./target/release/liblitestream"
# example name -> the file its text is written to in the work folder
FILE_NAMES = {"python": "example.py", "node": "example.mjs", "shell": "example.sql",
              "rust": "main.rs"}


def example(name):
    """The text of the README's `name` example."""
    text = README.read_text()
    match = re.search(r"^<!-- example: %s -->\n```[a-z]*\n(.*?)^```$" % re.escape(name), text,
                      re.M | re.S)
    assert match, "README.md has no block after '<!-- example: %s -->'" % name
    return match.group(1)


def prepared(name, bucket, endpoint, ext):
    text = example(name)
    assert REPLICA_URL in text, "the %s example no longer uses %s" % (name, REPLICA_URL)
    text = text.replace(REPLICA_URL, s3_url(bucket, "app.db", endpoint))
    return text.replace(SOURCE_LIBRARY, ext)


def run_example(name, cmd, work, s3, bucket, ext, stdin_file=False, env=None, timeout=240):
    """Write the example into `work`, run `cmd` there (with the example file on stdin if asked),
    then restore app.db from the bucket and compare."""
    path = work / FILE_NAMES[name]
    path.write_text(prepared(name, bucket, s3.endpoint, ext))
    stdin = path.open() if stdin_file else subprocess.DEVNULL
    try:
        p = subprocess.run(cmd, cwd=work, stdin=stdin, text=True, capture_output=True,
                           timeout=timeout, env=child_env(env or {}))
    finally:
        if stdin_file:
            stdin.close()
    assert p.returncode == 0, "the README's %s example failed (%s):\n%s\n%s" % (
        name, cmd, p.stdout[-2000:], p.stderr[-3000:])
    assert_restores(ext, work / "app.db", work / "restored.db", s3_url(bucket, "app.db", s3.endpoint))
    return p.stdout
