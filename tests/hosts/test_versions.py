"""One version number everywhere: Cargo.toml, litestream_version() of the built library, the
Python package's __version__ and wheel name/metadata, both npm packages and the dependency
between them."""
import json
import re
import tarfile
import zipfile

from pysupport.shell import run_sqlite_shell

import versions


def test_sources_agree():
    want = versions.cargo_version()
    assert {where: v for where, v in versions.declared().items() if v != want} == {}


def test_library_reports_cargo_version(ext):
    out = run_sqlite_shell(":memory:", ".load %s\nSELECT litestream_version();\n" % ext)
    assert re.match(r"^litestream-sqlite %s \((?:[0-9a-f]{12}(?:-dirty)?|unknown)\)$" % re.escape(
        versions.cargo_version()), out.strip()), out


def test_artifacts_carry_cargo_version(dist):
    want = versions.cargo_version()
    wheels = sorted(dist.glob("litestream_sqlite-*.whl"))
    assert [w.name.split("-")[1] for w in wheels] == [want], wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        meta = zf.read("litestream_sqlite-%s.dist-info/METADATA" % want).decode()
        init = zf.read("litestream_sqlite/__init__.py").decode()
    assert "\nVersion: %s\n" % want in meta
    assert '\n__version__ = "%s"\n' % want in init
    tarballs = sorted(dist.glob("litestream-sqlite*-%s.tgz" % want))
    assert len(tarballs) == 2, sorted(p.name for p in dist.glob("*.tgz"))
    for tgz in tarballs:
        with tarfile.open(tgz) as tf:
            pkg = json.load(tf.extractfile("package/package.json"))
        assert pkg["version"] == want, (tgz, pkg["version"])
        for dep, spec in pkg.get("optionalDependencies", {}).items():
            assert spec == want, (tgz, dep, spec)
