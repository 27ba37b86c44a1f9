"""The wheel, installed into a fresh virtualenv of a Python that can load extensions
(/usr/bin/python3: Debian's), runs the README's Python example against the test SeaweedFS, and
the full host round trip; the restored copies equal their sources.

The wheel's platform tag is also checked against auditwheel's reading of the library, when
scripts/package.sh's caller installed auditwheel (scripts/test.sh does)."""
import os
import subprocess

import pytest

from pysupport.awsenv import child_env
from pysupport.paths import HOST_PYTHON, REPO

import readme
import scenario
import versions


@pytest.fixture(scope="module")
def wheel_venv(dist, tmp_path_factory):
    """A fresh venv of /usr/bin/python3 with only the wheel installed (no network: --no-index)."""
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([HOST_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = sorted(dist.glob("litestream_sqlite-*.whl"))[-1]
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--quiet",
                        "--disable-pip-version-check", str(wheel)], text=True,
                       capture_output=True, timeout=180)
    assert p.returncode == 0, p.stderr
    return venv / "bin" / "python"


def test_package_api(wheel_venv):
    code = ("import sqlite3, litestream_sqlite as l\n"
            "c = sqlite3.connect(':memory:')\n"
            "l.load(c)\n"
            "print(l.__version__)\n"
            "print(c.execute('SELECT litestream_version()').fetchone()[0])\n"
            "try:\n"
            "    c.load_extension(l.loadable_path())\n"
            "    print('loading still enabled')\n"
            "except sqlite3.OperationalError as e:\n"
            "    print('disabled:', e)\n"
            "print(l.loadable_path())\n")
    p = subprocess.run([str(wheel_venv), "-c", code], text=True, capture_output=True, timeout=60,
                       cwd="/", env=child_env())
    assert p.returncode == 0, p.stderr
    version, reported, disabled, path = p.stdout.splitlines()
    assert version == versions.cargo_version()
    assert reported.startswith("litestream-sqlite %s " % version)
    assert disabled.startswith("disabled:"), disabled
    assert "site-packages/litestream_sqlite/liblitestream" in path and os.path.exists(path + ".so")


def test_load_without_extension_support_says_why(wheel_venv):
    """A connection class without enable_load_extension (pyenv's sqlite3) gets a clear error."""
    code = ("import litestream_sqlite as l\n"
            "class NoLoading: pass\n"
            "try:\n"
            "    l.load(NoLoading())\n"
            "except RuntimeError as e:\n"
            "    print(e)\n")
    p = subprocess.run([str(wheel_venv), "-c", code], text=True, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "built without extension loading" in p.stdout, p.stdout


def test_readme_python_example(wheel_venv, ext, s3, bucket, tmp_path):
    readme.run_example("python", [str(wheel_venv), "example.py"], tmp_path, s3, bucket, ext)


def test_python_host_round_trip(wheel_venv, s3, bucket, tmp_path):
    db, out = tmp_path / "app.db", tmp_path / "restored.db"
    steps = scenario.steps(bucket, s3.endpoint, out, host="python-wheel")
    runner = REPO / "tests" / "hosts" / "python" / "runner.py"
    answers = scenario.run([str(wheel_venv), str(runner), str(db)], steps, cwd=tmp_path)
    scenario.check(answers, versions.cargo_version())
    scenario.verify_replica(s3, bucket, db, out)


def test_platform_tag_matches_auditwheel(dist):
    auditwheel = os.environ.get("LITESTREAM_AUDITWHEEL")
    if not auditwheel:
        pytest.skip("LITESTREAM_AUDITWHEEL not set (scripts/test.sh installs auditwheel)")
    wheel = sorted(dist.glob("litestream_sqlite-*.whl"))[-1]
    tag = wheel.name[:-len(".whl")].split("-")[-1]
    p = subprocess.run([auditwheel, "show", str(wheel)], text=True, capture_output=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert 'consistent with the following platform tag: "%s"' % tag in " ".join(p.stdout.split()), p.stdout
