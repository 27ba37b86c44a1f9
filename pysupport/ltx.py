"""LTX files and replica layouts, checked with the independent decoder tests/tools/ltx_check.py
(never with the extension's own code): every file decodes with valid checksums, is named after
its header, level-0 TXIDs run 1, 2, 3, ... without a gap from a full snapshot, and objects sit
at <path>/<%04x level>/<16 hex>-<16 hex>.ltx (S3) or ltx/<level>/... (file replica).

Failures are AssertionErrors naming the object.
"""
import importlib.util
import re
import struct
from datetime import datetime, timezone
from pathlib import Path

from pysupport.paths import LTX_CHECK
from pysupport.s3client import list_keys

LTX_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")
# SQLite never stores the page that holds the 1 GiB offset (its lock byte range).
LOCK_BYTE_OFFSET = 1 << 30
# A page frame: 4-byte page number, 2-byte flags (bit 0: size-prefixed LZ4 block encoding).
PAGE_HEADER = struct.Struct(">IH")
LEVELS = range(10)  # 0 = L0, 1..8 compaction, 9 snapshots

_module = None


def ltx_module():
    """tests/tools/ltx_check.py as a module (its CRC table self-checked once)."""
    global _module
    if _module is None:
        spec = importlib.util.spec_from_file_location("ltx_check", LTX_CHECK)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod._check_crc()
        _module = mod
    return _module


def ltx_decode(data):
    """Decode and fully verify one LTX file (raises ValueError); the header dict with 'pages'
    as [(pgno, (start, size))]."""
    return ltx_module().decode(data)


def ltx_check(path):
    """ltx_check.py's verdict on the file at `path`, as the dict it prints."""
    return ltx_decode(Path(path).read_bytes())


def pages_of(blob):
    """(header dict, {pgno: page bytes}) of an LTX file in the block encoding this extension
    writes; raises on any format error."""
    d = ltx_decode(blob)
    out = {}
    for pgno, (start, _) in d["pages"]:
        _, flags = PAGE_HEADER.unpack(blob[start:start + PAGE_HEADER.size])
        assert flags & 1, "legacy page encoding in a file we wrote"
        i = start + PAGE_HEADER.size
        (n,) = struct.unpack(">I", blob[i:i + 4])
        out[pgno] = ltx_module().lz4_block_decompress(blob[i + 4:i + 4 + n], d["page_size"])
    return d, out


def lock_page(page_size):
    return LOCK_BYTE_OFFSET // page_size + 1


def is_full_snapshot(info):
    """The file carries every page 1..commit (except SQLite's lock page)."""
    lock = lock_page(info["page_size"])
    want = {p for p in range(1, info["commit"] + 1) if p != lock}
    return {p for p, _ in info["pages"]} == want


def parse_rfc3339_ms(s):
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?Z$", s)
    assert m, "not an RFC3339 UTC timestamp: %r" % s
    t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    frac = m.group(2) or ""
    ms = int((frac[1:] + "000")[:3]) if frac else 0
    return int(t.timestamp()) * 1000 + ms


def check_other_level(name, data, meta_ts=None):
    """A compaction (L1..L8) or snapshot (L9) file: passes ltx_check.py, its name matches its
    header, and its litestream-timestamp metadata (if given) equals the header timestamp."""
    m = LTX_NAME_RE.match(name.rsplit("/", 1)[-1])
    assert m, "bad LTX file name %r" % name
    try:
        info = ltx_decode(data)
    except Exception as e:  # noqa: BLE001 - report which file
        raise AssertionError("%s fails ltx_check.py: %s" % (name, e)) from e
    assert (info["min_txid"], info["max_txid"]) == m.groups(), \
        "%s: header TXIDs %s-%s" % (name, info["min_txid"], info["max_txid"])
    if meta_ts is not None:
        assert parse_rfc3339_ms(meta_ts) == info["timestamp_ms"], \
            "%s: litestream-timestamp %r != header timestamp %d ms" % (name, meta_ts, info["timestamp_ms"])
    return info


def check_ltx_chain(files):
    """files: [(name, bytes, litestream-timestamp metadata or None)], in TXID order.
    Every file passes check_other_level; L0 TXIDs run 1, 2, 3, ... without gaps; the first file
    is a full snapshot at TXID 1. Returns the decoded headers (with 'name' added)."""
    assert files, "no LTX files in the replica"
    infos = []
    for i, (name, data, meta_ts) in enumerate(files):
        info = check_other_level(name, data, meta_ts)
        assert info["min_txid"] == info["max_txid"] == "%016x" % (i + 1), \
            "L0 files must be one TXID each, 1, 2, 3, ...: file %d is %s" % (i, name)
        info["name"] = name
        infos.append(info)
    assert is_full_snapshot(infos[0]), "first L0 file %s is not a full snapshot (%d pages, commit %d)" % (
        infos[0]["name"], len(infos[0]["pages"]), infos[0]["commit"])
    return infos


def l0_txids_of(names):
    """TXIDs of L0 file names (base names), checked one TXID each and 1..M without a gap."""
    txids = []
    for name in names:
        m = LTX_NAME_RE.match(name.rsplit("/", 1)[-1])
        assert m, "unexpected L0 object %s" % name
        assert m.group(1) == m.group(2), "L0 file %s spans several TXIDs" % name
        txids.append(int(m.group(1), 16))
    txids.sort()
    if txids != list(range(1, len(txids) + 1)):
        missing = sorted(set(range(1, (max(txids) if txids else 0) + 1)) - set(txids))
        raise AssertionError("L0 TXIDs have a gap: missing %s (have %d files, max %s)" % (
            missing[:10], len(txids), max(txids) if txids else None))
    return txids


def l0_txids(client, bucket, path):
    """TXIDs of an S3 replica's L0 files (names only), checked as l0_txids_of does."""
    return l0_txids_of([k for k, _ in list_keys(client, bucket, path + "/0000/")])


def ltx_check_l0(client, bucket, path):
    """Every L0 object of an S3 replica passes ltx_check.py; returns how many were checked."""
    keys = [k for k, _ in list_keys(client, bucket, path + "/0000/")]
    for k in keys:
        check_other_level(k, client.get_object(Bucket=bucket, Key=k)["Body"].read())
    return len(keys)


def check_s3_replica(client, bucket, path):
    """Every object in the bucket is `<path>/<%04x level>/<16 hex>-<16 hex>.ltx` and carries
    metadata litestream-timestamp; level 0 passes check_ltx_chain, other levels (compaction,
    snapshots) check_other_level. Returns the decoded level-0 headers (with 'key' added)."""
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


def _file_replica_levels(directory):
    """{level: sorted files} of a file replica; every file must be ltx/<level>/<min>-<max>.ltx."""
    directory = Path(directory)
    found = sorted(p for p in directory.rglob("*") if p.is_file())
    dirs = {directory / "ltx" / str(n): n for n in LEVELS}
    bad = [str(p.relative_to(directory)) for p in found
           if p.parent not in dirs or not LTX_NAME_RE.match(p.name)]
    assert not bad, "files outside ltx/<level>/<min>-<max>.ltx in %s: %s" % (directory, bad[:10])
    levels = {}
    for p in found:
        levels.setdefault(dirs[p.parent], []).append(p)
    return levels


def check_file_replica(directory):
    """Every file under directory is ltx/<level>/<16 hex>-<16 hex>.ltx; level 0 passes
    check_ltx_chain, other levels check_other_level. Returns the decoded level-0 headers."""
    levels = _file_replica_levels(directory)
    for level, paths in levels.items():
        if level:
            for p in paths:
                check_other_level(str(p), p.read_bytes())
    return check_ltx_chain([(p.name, p.read_bytes(), None) for p in levels.get(0, [])])


def file_l0_txids(directory):
    """TXIDs of a file replica's L0 files, checked 1..M without a gap; each passes ltx_check.py."""
    paths = _file_replica_levels(directory).get(0, []) if Path(directory).exists() else []
    for p in paths:
        check_other_level(str(p), p.read_bytes())
    return l0_txids_of([p.name for p in paths])
