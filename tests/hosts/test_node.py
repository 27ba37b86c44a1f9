"""The npm tarballs installed into a fresh folder as a user installs them (`npm install` of the
two .tgz files: the entry package finds the library in its platform package), then Node hosts
load the extension and run the round trip against the test SeaweedFS:

- better-sqlite3 12.11.1, whose bundled SQLite leaves out the progress handler and the
  deprecated API (the extension must neither call those nor refuse to load): the README's Node
  example and the full host round trip through the package's load(db);
- the `sqlite3` npm package 6.0.1 through db.loadExtension(getLoadablePath(), callback).

The host drivers are built once per machine by scripts/install-hosts.sh and linked into the
fresh folder's node_modules; the litestream-sqlite packages come only from the tarballs."""
import json
import os
import re
import subprocess

import pytest

from pysupport.awsenv import child_env
from pysupport.paths import REPO

import readme
import scenario
import versions

RUNNER = REPO / "tests" / "hosts" / "node" / "runner.mjs"
DRIVERS = ("better-sqlite3", "sqlite3")


@pytest.fixture(scope="module")
def node_project(dist, node_hosts, tmp_path_factory):
    """A fresh folder with the tarballs installed and the host drivers linked in."""
    project = tmp_path_factory.mktemp("node-project")
    (project / "package.json").write_text(json.dumps({"private": True, "type": "module"}))
    want = versions.cargo_version()
    tarballs = [str(dist / ("%s-%s.tgz" % (name, want)))
                for name in ("litestream-sqlite-linux-x64", "litestream-sqlite")]
    p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--offline",
                        "--loglevel=error"] + tarballs, cwd=project, text=True,
                       capture_output=True, timeout=300, env=child_env())
    assert p.returncode == 0, "npm install of %s failed:\n%s\n%s" % (tarballs, p.stdout, p.stderr)
    for name in DRIVERS:
        os.symlink(node_hosts / name, project / "node_modules" / name)
    (project / "runner.mjs").write_text(RUNNER.read_text())
    return project


def test_installed_layout(node_project):
    """Both packages came from the tarballs; import and require give the same library path."""
    modules = node_project / "node_modules"
    for name in ("litestream-sqlite", "litestream-sqlite-linux-x64"):
        pkg = json.loads((modules / name / "package.json").read_text())
        assert pkg["version"] == versions.cargo_version(), (name, pkg["version"])
        assert not (modules / name).is_symlink()
    code = ("import { getLoadablePath } from 'litestream-sqlite';\n"
            "import { createRequire } from 'node:module';\n"
            "const cjs = createRequire(import.meta.url)('litestream-sqlite');\n"
            "console.log(getLoadablePath()); console.log(cjs.getLoadablePath());\n")
    p = subprocess.run(["node", "--input-type=module", "-e", code], cwd=node_project, text=True,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    esm, cjs = p.stdout.splitlines()
    assert esm == cjs == str(modules / "litestream-sqlite-linux-x64" / "liblitestream.so")


def test_readme_node_example(node_project, ext, s3, bucket, tmp_path):
    # The example must run from inside the project (its imports resolve from node_modules there).
    work = node_project / tmp_path.name
    work.mkdir()
    readme.run_example("node", ["node", "example.mjs"], work, s3, bucket, ext)


@pytest.mark.parametrize("driver", DRIVERS)
def test_node_host_round_trip(node_project, driver, s3, bucket, tmp_path):
    db, out = tmp_path / "app.db", tmp_path / "restored.db"
    steps = scenario.steps(bucket, s3.endpoint, out, host="node-" + driver)
    answers = scenario.run(["node", "runner.mjs", driver, str(db)], steps, cwd=node_project)
    scenario.check(answers, versions.cargo_version())
    scenario.verify_replica(s3, bucket, db, out)


# ---------------------------------------------------------------- the routines a host leaves out

SQLITE3EXT_H = "/usr/include/sqlite3ext.h"  # libsqlite3-dev (scripts/install-hosts.sh go)


def api_probe_source():
    """C for a loadable extension that prints every NULL slot of the host's sqlite3_api_routines
    (the struct only grows, so the system header's fields are a valid prefix of newer hosts')."""
    body = open(SQLITE3EXT_H).read()
    start = body.index("struct sqlite3_api_routines {")
    fields = re.sub(r"/\*.*?\*/", "", body[start:body.index("\n};", start)], flags=re.S)
    names = [m.group(1) for stmt in fields.split(";")
             for m in [re.search(r"\(\s*\*\s*(\w+)\s*\)", stmt)] if m]
    checks = "".join('  if (!api->%s) printf("sqlite3_%s\\n");\n' % (n, n) for n in names)
    return ("#include <stdio.h>\n#include <sqlite3ext.h>\nSQLITE_EXTENSION_INIT1\n"
            "int sqlite3_apiprobe_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {\n"
            + checks + "  fflush(stdout);\n  return SQLITE_OK;\n}\n")


def needed_routines():
    """The routines src/host.rs checks for before it lets the extension load."""
    text = (REPO / "src" / "host.rs").read_text()
    return set(re.findall(r'=> "(sqlite3_\w+)"', text))


@pytest.mark.parametrize("driver", DRIVERS)
def test_host_omits_no_needed_routine(node_project, driver, tmp_path):
    """Every routine the host's SQLite leaves out is one the extension never needs; for
    better-sqlite3 the probe must see the progress handler missing (else it proves nothing)."""
    (tmp_path / "apiprobe.c").write_text(api_probe_source())
    p = subprocess.run(["cc", "-shared", "-fPIC", "-o", "libapiprobe.so", "apiprobe.c"],
                       cwd=tmp_path, text=True, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    probe = str(tmp_path / "libapiprobe.so")
    load = {"better-sqlite3": "new (require('better-sqlite3'))(':memory:').loadExtension(%r)",
            "sqlite3": "new (require('sqlite3').Database)(':memory:')"
                       ".loadExtension(%r, (e) => { if (e) throw e; })"}[driver] % probe
    p = subprocess.run(["node", "-e", load], cwd=node_project, text=True, capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    missing = set(p.stdout.split())
    needed = needed_routines()
    assert len(needed) > 20, "src/host.rs no longer lists its routines as `field => \"name\"`"
    assert not missing & needed, "%s leaves out routines the extension needs: %s" % (
        driver, sorted(missing & needed))
    if driver == "better-sqlite3":
        assert "sqlite3_progress_handler" in missing, sorted(missing)
    print("%s leaves out: %s" % (driver, " ".join(sorted(missing))))
