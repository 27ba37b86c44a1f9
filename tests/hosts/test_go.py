"""Go's mattn/go-sqlite3 (Debian's golang-github-mattn-go-sqlite3-dev, built in GOPATH mode with
-tags libsqlite3 against the system SQLite; no module proxy) loads the extension through
SQLiteDriver.Extensions and runs the host round trip against the test SeaweedFS."""
import os
import shutil
import subprocess

from pysupport.awsenv import child_env
from pysupport.paths import REPO

import scenario
import versions

SOURCE = REPO / "tests" / "hosts" / "go" / "main.go"


def build_runner(go_gopath, work):
    """go build in GOPATH mode: our runner in a throwaway GOPATH entry, the driver in Debian's."""
    gopath = work / "gopath"
    pkg = gopath / "src" / "litestreamhost"
    pkg.mkdir(parents=True)
    shutil.copy(SOURCE, pkg / "main.go")
    binary = work / "runner"
    env = {"GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "",
           "GOPATH": "%s%s%s" % (gopath, os.pathsep, go_gopath)}
    p = subprocess.run(["go", "build", "-tags", "libsqlite3", "-o", str(binary), "litestreamhost"],
                       cwd=pkg, text=True, capture_output=True, timeout=600,
                       env=child_env(env))
    assert p.returncode == 0, "go build failed:\n%s\n%s" % (p.stdout, p.stderr)
    return binary


def test_go_host_round_trip(go_gopath, ext, s3, bucket, tmp_path):
    runner = build_runner(go_gopath, tmp_path)
    db, out = tmp_path / "app.db", tmp_path / "restored.db"
    steps = scenario.steps(bucket, s3.endpoint, out, host="go-mattn")
    answers = scenario.run([str(runner), ext + ".so", str(db)], steps, cwd=tmp_path)
    scenario.check(answers, versions.cargo_version())
    scenario.verify_replica(s3, bucket, db, out)
