#!/usr/bin/env python3
"""Independent LTX (v3, as used by Litestream 0.5.x) decoder/validator.

Written from the spec in ../docs/litestream-format.md (not from Go source) and used to
cross-check files produced by github.com/superfly/ltx v0.5.1 (LZ4 *frame* page
encoding) and v0.5.2 (size-prefixed LZ4 *block* page encoding).

Usage: python3 ltx_check.py FILE.ltx [...]
Checks: header layout, page frames (both encodings), page index, trailer,
file checksum (CRC-64/GO-ISO, bit 63 forced on). Stdlib only.
"""

# Provenance: copied unchanged, apart from this note, from the reference tools the project was
# started with, where it was written from a description of the LTX format (the
# litestream-format.md named above, which is not part of this repository), independently of
# this extension's Rust code. The tests use it as a second opinion on every LTX file.
import struct
import sys

# CRC-64/GO-ISO: poly 0x1B (reflected 0xD800000000000000), refin/refout,
# init 0xFFFF_FFFF_FFFF_FFFF, xorout 0xFFFF_FFFF_FFFF_FFFF.
_POLY_REFLECTED = 0xD800000000000000
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY_REFLECTED if _c & 1 else _c >> 1
    _TABLE.append(_c)
_MASK = 0xFFFFFFFFFFFFFFFF


class Crc64:
    """Streaming CRC-64/GO-ISO (same results as Go hash/crc64 with crc64.ISO)."""

    def __init__(self):
        self.v = 0

    def update(self, data):
        crc = self.v ^ _MASK
        for b in data:
            crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
        self.v = crc ^ _MASK


def _check_crc():
    h = Crc64()
    h.update(b"123456789")
    assert h.v == 0xB90956C775A41001, hex(h.v)


def lz4_block_decompress(src, out_len):
    """Decompress one raw LZ4 block; if out_len is set the result must be exactly that long."""
    dst = bytearray()
    i = 0
    while i < len(src):
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        dst += src[i:i + lit]
        i += lit
        if i >= len(src):  # last sequence carries literals only
            break
        off = src[i] | (src[i + 1] << 8)
        i += 2
        if off == 0 or off > len(dst):
            raise ValueError("bad lz4 match offset")
        mlen = token & 15
        if mlen == 15:
            while True:
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        for _ in range(mlen):
            dst.append(dst[-off])
    if out_len is not None and len(dst) != out_len:
        raise ValueError("lz4 block decoded to %d bytes, want %d" % (len(dst), out_len))
    return bytes(dst)


def lz4_frame_decompress(b, i, out_len):
    """Parse one LZ4 frame starting at b[i]; return (data, next_offset)."""
    if b[i:i + 4] != b"\x04\x22\x4d\x18":
        raise ValueError("bad lz4 frame magic")
    flg = b[i + 4]
    i += 6  # magic + FLG + BD
    if flg & 0x08:  # content size present
        i += 8
    i += 1  # header checksum byte (not verified here)
    out = bytearray()
    while True:
        (bsz,) = struct.unpack("<I", b[i:i + 4])
        i += 4
        if bsz == 0:  # EndMark
            break
        n = bsz & 0x7FFFFFFF
        if bsz & 0x80000000:  # stored (uncompressed) block
            out += b[i:i + n]
        else:
            out += lz4_block_decompress(b[i:i + n], None)
        i += n
        if flg & 0x10:  # block checksum present
            i += 4
    if flg & 0x04:  # content checksum present
        i += 4
    if len(out) != out_len:
        raise ValueError("lz4 frame decoded to %d bytes, want %d" % (len(out), out_len))
    return bytes(out), i


def uvarint(b, i):
    x = 0
    s = 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << s
        if c < 0x80:
            return x, i
        s += 7


HDR = struct.Struct(">4sIIIQQqQqqIIQ")  # first 80 bytes of the 100-byte header


def decode(b):
    if len(b) < 100 + 6 + 1 + 8 + 16:
        raise ValueError("file too short")
    (magic, flags, psz, commit, min_txid, max_txid, ts, pre, wal_off, wal_sz,
     salt1, salt2, node) = HDR.unpack(b[:80])
    if magic != b"LTX1":
        raise ValueError("bad magic")
    if flags & ~0x2:
        raise ValueError("bad header flags %#x" % flags)
    if psz < 512 or psz > 65536 or psz & (psz - 1):
        raise ValueError("bad page size")
    if min_txid == 0 or max_txid == 0 or min_txid > max_txid:
        raise ValueError("bad txid range")
    h = Crc64()
    h.update(b[:100])
    i = 100
    frames = {}
    prev = 0
    while True:
        pgno, pflags = struct.unpack(">IH", b[i:i + 6])
        start = i
        h.update(b[i:i + 6])
        i += 6
        if pgno == 0 and pflags == 0:
            break
        if pgno == 0 or pflags & ~0x1:
            raise ValueError("bad page header")
        if pgno <= prev:
            raise ValueError("pages out of order")
        prev = pgno
        if pflags & 0x1:  # size-prefixed LZ4 block (ltx >= v0.5.2)
            (n,) = struct.unpack(">I", b[i:i + 4])
            h.update(b[i:i + 4])
            i += 4
            data = lz4_block_decompress(b[i:i + n], psz)
            i += n
        else:  # legacy: one LZ4 frame, no length prefix (ltx v0.5.0/v0.5.1)
            data, i = lz4_frame_decompress(b, i, psz)
        h.update(data)  # decompressed bytes are hashed, not the payload
        frames[pgno] = (start, i - start)
    idx_start = i
    index = {}
    while True:
        pgno, i = uvarint(b, i)
        if pgno == 0:
            break
        off, i = uvarint(b, i)
        size, i = uvarint(b, i)
        index[pgno] = (off, size)
    (idx_size,) = struct.unpack(">Q", b[i:i + 8])
    if idx_size != i - idx_start:
        raise ValueError("page index size mismatch")
    i += 8
    h.update(b[idx_start:i])
    if i + 16 != len(b):
        raise ValueError("trailing bytes after trailer")
    post, file_ck = struct.unpack(">QQ", b[i:i + 16])
    h.update(b[i:i + 8])
    if file_ck != (h.v | (1 << 63)):
        raise ValueError("file checksum mismatch: stored %#x calc %#x" % (file_ck, h.v | (1 << 63)))
    if index != frames:
        raise ValueError("page index does not match page frames")
    return {
        "flags": flags, "page_size": psz, "commit": commit,
        "min_txid": "%016x" % min_txid, "max_txid": "%016x" % max_txid,
        "timestamp_ms": ts, "pre_apply": "%016x" % pre, "wal_offset": wal_off,
        "wal_size": wal_sz, "salt1": "%08x" % salt1, "salt2": "%08x" % salt2,
        "node_id": node, "post_apply": "%016x" % post, "file_checksum": "%016x" % file_ck,
        "pages": sorted(frames.items()),
    }


if __name__ == "__main__":
    _check_crc()
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            print(path, decode(f.read()))
