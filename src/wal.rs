//! Reader for SQLite's write-ahead log (the `-wal` file), as Litestream 0.5 uses it to turn newly
//! committed WAL frames into L0 LTX files (format spec §3.1, §3.3 steps 3–4, §3.6).
//!
//! The module parses the 32-byte WAL header, walks frames sequentially while recomputing SQLite's
//! cumulative checksum, and reports which page versions belong to *committed* transactions.
//! Invariants the rest of the replicator relies on:
//! - Only frames up to the last valid commit frame are ever reported: frames are buffered per
//!   transaction and merged into [`Segment::pages`] only when a commit frame (commit field ≠ 0) is read,
//!   so an uncommitted or torn tail is never visible and [`Segment::end`] always sits on a commit boundary.
//! - The valid WAL ends, exactly as in SQLite, at the first frame that is short, carries other salts,
//!   has page number 0, or whose cumulative checksum does not match. Nothing after that point is trusted,
//!   even if later bytes look like valid frames (they are usually left over from before a WAL restart).
//! - A header that is short, has a wrong magic or a wrong checksum means "no WAL" (SQLite treats the WAL
//!   as empty then); only I/O failures and impossible-but-checksummed headers are errors.
//! - Any file content is handled without panicking; offsets use checked arithmetic.
//!
//! Everything is `std` only. Reads go through [`ReadAt`] (positioned reads), so a scan never moves a
//! shared file cursor and works on an in-memory buffer in tests. Scans read the file in large chunks
//! so that checksumming a multi-hundred-megabyte WAL is bound by memory bandwidth, not syscalls.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;

/// Size of the WAL file header.
pub const WAL_HEADER_SIZE: u64 = 32;
/// Size of the header that precedes every page in the WAL.
pub const FRAME_HEADER_SIZE: u64 = 24;
/// The only WAL format version SQLite has ever written.
pub const WAL_VERSION: u32 = 3_007_000;
/// WAL magic with little-endian checksum words; the magic with bit 0 set means big-endian.
pub const WAL_MAGIC_LE: u32 = 0x377f_0682;
/// WAL magic with big-endian checksum words.
pub const WAL_MAGIC_BE: u32 = 0x377f_0683;

/// How much a scan reads per positioned read. Large enough that syscall overhead is negligible next
/// to the checksum work, small enough not to matter for memory.
const READ_CHUNK: usize = 1 << 20;

/// Size of one frame (frame header + page) for `page_size`.
pub fn frame_size(page_size: u32) -> u64 {
    FRAME_HEADER_SIZE + u64::from(page_size)
}

/// Whether `page_size` is one SQLite can use (the WAL header stores 65536 literally, unlike the
/// database header's special value 1, so the LTX rule applies as it is).
pub use crate::ltx::is_valid_page_size;

/// Errors from reading a WAL. Malformed or torn WAL *content* is normally not an error (it simply ends
/// the valid WAL); these cover I/O failures and headers that are checksummed yet unusable.
#[derive(Debug)]
pub enum WalError {
    /// An I/O error while reading `len` bytes at `offset`.
    Io {
        offset: u64,
        len: usize,
        source: io::Error,
    },
    /// The header checksum is valid but the version is not 3007000.
    UnsupportedVersion(u32),
    /// The header checksum is valid but the page size is not a power of two in 512..=65536
    /// (also returned by [`distinct_salts`] for a bad `page_size` argument).
    InvalidPageSize(u32),
    /// [`read_frame_page`] could not read the whole page: the file ends inside it.
    ShortRead {
        offset: u64,
        wanted: usize,
        got: usize,
    },
    /// An offset computation would exceed `u64::MAX`.
    OffsetOverflow { offset: u64 },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io {
                offset,
                len,
                source,
            } => {
                write!(
                    f,
                    "wal: reading {len} bytes at offset {offset} failed: {source}"
                )
            }
            WalError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "wal: unsupported WAL format version {v} (expected {WAL_VERSION})"
                )
            }
            WalError::InvalidPageSize(p) => write!(
                f,
                "wal: invalid page size {p} (must be a power of two between 512 and 65536)"
            ),
            WalError::ShortRead {
                offset,
                wanted,
                got,
            } => write!(
                f,
                "wal: short read at offset {offset}: wanted {wanted} bytes, file provides {got}"
            ),
            WalError::OffsetOverflow { offset } => {
                write!(f, "wal: offset arithmetic overflows at offset {offset}")
            }
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Positioned reads. Implemented for [`std::fs::File`] (via `pread`, so concurrent readers never
/// share a cursor), for `[u8]`/`Vec<u8>` (tests, in-memory copies) and for references to any of them.
/// A short read at end of file returns the number of bytes read (0 at or past EOF).
#[allow(clippy::len_without_is_empty)] // an "is_empty" would be meaningless for a WAL source
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn len(&self) -> io::Result<u64>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= <[u8]>::len(self) {
            return Ok(0);
        }
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        ReadAt::read_at(self.as_slice(), buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        ReadAt::len(self.as_slice())
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
}

/// Fill as much of `buf` as the file provides from `offset`. `read_at` may legally return fewer bytes
/// than asked before EOF (and may be interrupted), so loop until full or a 0-byte read.
fn read_full<F: ReadAt + ?Sized>(f: &F, buf: &mut [u8], offset: u64) -> Result<usize, WalError> {
    let mut got = 0;
    while got < buf.len() {
        let pos = offset
            .checked_add(got as u64)
            .ok_or(WalError::OffsetOverflow { offset })?;
        match f.read_at(&mut buf[got..], pos) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(WalError::Io {
                    offset: pos,
                    len: buf.len() - got,
                    source,
                })
            }
        }
    }
    Ok(got)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// SQLite's WAL checksum, continued from `seed` over `data`, with words decoded big-endian when
/// `big_endian` is set (magic 0x377f0683) and little-endian otherwise. For each pair of words
/// `(x0, x1)`: `s0 += x0 + s1; s1 += x1 + s0` (wrapping). Trailing bytes that do not form a full
/// 8-byte pair are ignored; every input SQLite checksums is a multiple of 8.
pub fn wal_checksum(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    // Two monomorphic loops so the byte-order decision is not inside the hot loop.
    if big_endian {
        checksum_with(seed, data, u32::from_be_bytes)
    } else {
        checksum_with(seed, data, u32::from_le_bytes)
    }
}

#[inline(always)]
fn checksum_with(seed: (u32, u32), data: &[u8], decode: fn([u8; 4]) -> u32) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    for pair in data.chunks_exact(8) {
        let x0 = decode([pair[0], pair[1], pair[2], pair[3]]);
        let x1 = decode([pair[4], pair[5], pair[6], pair[7]]);
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

/// The 32-byte WAL header (all fields stored big-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum1: u32,
    pub checksum2: u32,
}

impl WalHeader {
    /// Read the header at offset 0. `None` when the file is shorter than 32 bytes, the magic is wrong,
    /// or the header checksum does not match (SQLite treats such a WAL as empty; a mismatch is also what
    /// a torn header write during a restart looks like). `Err` only for an I/O error, or a header with a
    /// valid checksum whose version is not 3007000 or whose page size is invalid.
    pub fn read<F: ReadAt + ?Sized>(f: &F) -> Result<Option<WalHeader>, WalError> {
        let mut buf = [0u8; WAL_HEADER_SIZE as usize];
        if read_full(f, &mut buf, 0)? < buf.len() {
            return Ok(None);
        }
        WalHeader::parse(&buf)
    }

    /// Parse header bytes (the first 32 bytes of `buf`), with the same rules as [`WalHeader::read`].
    pub fn parse(buf: &[u8]) -> Result<Option<WalHeader>, WalError> {
        if buf.len() < WAL_HEADER_SIZE as usize {
            return Ok(None);
        }
        let magic = be32(buf, 0);
        if magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE {
            return Ok(None);
        }
        let hdr = WalHeader {
            magic,
            version: be32(buf, 4),
            page_size: be32(buf, 8),
            checkpoint_seq: be32(buf, 12),
            salt1: be32(buf, 16),
            salt2: be32(buf, 20),
            checksum1: be32(buf, 24),
            checksum2: be32(buf, 28),
        };
        // The checksum is checked before the other fields: an unchecksummed header is just garbage
        // (e.g. a half-written restart), not evidence of an unsupported format.
        let sum = wal_checksum(hdr.big_endian_checksums(), (0, 0), &buf[..24]);
        if sum != (hdr.checksum1, hdr.checksum2) {
            return Ok(None);
        }
        if hdr.version != WAL_VERSION {
            return Err(WalError::UnsupportedVersion(hdr.version));
        }
        if !is_valid_page_size(hdr.page_size) {
            return Err(WalError::InvalidPageSize(hdr.page_size));
        }
        Ok(Some(hdr))
    }

    /// `(salt1, salt2)`: every frame written since the last WAL restart carries these.
    pub fn salts(&self) -> (u32, u32) {
        (self.salt1, self.salt2)
    }

    /// Whether checksum words are decoded big-endian (magic 0x377f0683).
    pub fn big_endian_checksums(&self) -> bool {
        self.magic & 1 == 1
    }

    /// `24 + page_size`.
    pub fn frame_size(&self) -> u64 {
        frame_size(self.page_size)
    }
}

/// One committed frame's location, for the caller to read the page from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef {
    pub pgno: u32,
    /// Offset of the 24-byte frame header; the page data follows it.
    pub offset: u64,
}

/// What a scan of committed frames found.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The WAL header at the time of the scan. With [`Resume::At`] its salts may differ from the salts
    /// the frames were validated against (those are the resume salts).
    pub header: WalHeader,
    /// Where reading began (32, or a resume offset).
    pub start: u64,
    /// Offset just past the last *committed* frame read (== `start` if none). Always a commit boundary.
    pub end: u64,
    /// DB size in pages from the last commit frame (0 if no commit read).
    pub commit: u32,
    /// pgno -> frame offset of its latest committed version; pages > `commit` removed.
    pub pages: BTreeMap<u32, u64>,
    /// Cumulative checksum of the last committed frame (the seed at `start` if none).
    pub last_frame_checksum: (u32, u32),
    /// Number of commit frames read.
    pub commits: u32,
}

impl Segment {
    /// True when no committed frame was read.
    pub fn is_empty(&self) -> bool {
        self.commits == 0
    }

    /// Bytes of committed frames read (`end - start`).
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// The committed pages as [`FrameRef`]s, in ascending page number.
    pub fn frame_refs(&self) -> impl Iterator<Item = FrameRef> + '_ {
        self.pages
            .iter()
            .map(|(&pgno, &offset)| FrameRef { pgno, offset })
    }
}

/// Where a [`scan`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// At offset 32, with the header's salts and checksum.
    FromStart,
    /// At a frame boundary previously returned as [`Segment::end`], with the salts of that segment.
    At { offset: u64, salt1: u32, salt2: u32 },
}

/// Result of [`scan`].
#[derive(Debug, Clone)]
pub enum ScanOutcome {
    /// Header absent/invalid: nothing to read.
    NoWal,
    Segment(Segment),
    /// Resume point invalid: the frame just before `offset` does not exist, or does not carry the
    /// expected salts, or the offset is not frame-aligned (which is how a changed page size shows up),
    /// or (offset 32) the header salts differ. The caller decides (it will usually snapshot or restart at
    /// 32 as §3.3/§3.6 say).
    PrevFrameMismatch {
        reason: String,
    },
}

/// One frame header (all fields stored big-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub pgno: u32,
    /// DB size in pages after this transaction if this is a commit frame, else 0.
    pub commit: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum1: u32,
    pub checksum2: u32,
}

impl FrameHeader {
    fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            pgno: be32(b, 0),
            commit: be32(b, 4),
            salt1: be32(b, 8),
            salt2: be32(b, 12),
            checksum1: be32(b, 16),
            checksum2: be32(b, 20),
        }
    }

    pub fn salts(&self) -> (u32, u32) {
        (self.salt1, self.salt2)
    }

    pub fn checksum(&self) -> (u32, u32) {
        (self.checksum1, self.checksum2)
    }
}

/// Read one frame header at `offset`. `None` if the file ends before all 24 bytes.
pub fn read_frame_header<F: ReadAt + ?Sized>(
    f: &F,
    offset: u64,
) -> Result<Option<FrameHeader>, WalError> {
    let mut buf = [0u8; FRAME_HEADER_SIZE as usize];
    if read_full(f, &mut buf, offset)? < buf.len() {
        return Ok(None);
    }
    Ok(Some(FrameHeader::parse(&buf)))
}

/// Read the page data of the frame at `offset` (the frame header's offset) into `buf`, whose length
/// must be the page size. Errors with [`WalError::ShortRead`] if the file ends inside the page.
/// This does not validate the frame; callers use offsets a [`scan`] returned.
pub fn read_frame_page<F: ReadAt + ?Sized>(
    f: &F,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), WalError> {
    let at = offset
        .checked_add(FRAME_HEADER_SIZE)
        .ok_or(WalError::OffsetOverflow { offset })?;
    let got = read_full(f, buf, at)?;
    if got < buf.len() {
        return Err(WalError::ShortRead {
            offset: at,
            wanted: buf.len(),
            got,
        });
    }
    Ok(())
}

/// §3.6 helper: the distinct salt pairs found in frame headers from offset 32 up to (excluding)
/// `until`, in order of first appearance (used to detect a missed checkpoint restart). Only frame headers
/// are read; it stops early where the file ends. Frames are not validated: stale frames from before a
/// restart are exactly what this is meant to see.
pub fn distinct_salts<F: ReadAt + ?Sized>(
    f: &F,
    page_size: u32,
    until: u64,
) -> Result<Vec<(u32, u32)>, WalError> {
    if !is_valid_page_size(page_size) {
        return Err(WalError::InvalidPageSize(page_size));
    }
    let fsz = frame_size(page_size);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut off = WAL_HEADER_SIZE;
    while off < until {
        let Some(fh) = read_frame_header(f, off)? else {
            break;
        };
        if seen.insert(fh.salts()) {
            out.push(fh.salts());
        }
        let Some(next) = off.checked_add(fsz) else {
            break;
        };
        off = next;
    }
    Ok(out)
}

/// Buffered positioned reader: serves whole frames out of a large buffer so a scan issues one read
/// per ~1 MiB instead of two per frame.
struct ChunkReader<'a, F: ?Sized> {
    f: &'a F,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    /// Number of valid bytes in `buf`.
    filled: usize,
}

impl<'a, F: ReadAt + ?Sized> ChunkReader<'a, F> {
    fn new(f: &'a F) -> Self {
        ChunkReader {
            f,
            buf: Vec::new(),
            base: 0,
            filled: 0,
        }
    }

    /// The `n` bytes at `offset`, or `None` if the file ends before them.
    fn get(&mut self, offset: u64, n: usize) -> Result<Option<&[u8]>, WalError> {
        let Some(end) = offset.checked_add(n as u64) else {
            return Ok(None);
        };
        let buffered_end = self.base.saturating_add(self.filled as u64);
        if offset < self.base || end > buffered_end {
            // Size the buffer to what the file can still provide (so tiny WALs do not cost a 1 MiB
            // allocation per scan) but never below one request. The file may grow while we read (SQLite
            // appends concurrently); then the next refill simply picks up the new bytes.
            let avail = self.f.len().map_err(|source| WalError::Io {
                offset,
                len: n,
                source,
            })?;
            let avail = usize::try_from(avail.saturating_sub(offset)).unwrap_or(usize::MAX);
            let want = n.max(avail.min(READ_CHUNK));
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            self.base = offset;
            self.filled = 0;
            self.filled = read_full(self.f, &mut self.buf[..want], offset)?;
        }
        let start = (offset - self.base) as usize;
        if start + n > self.filled {
            return Ok(None);
        }
        Ok(Some(&self.buf[start..start + n]))
    }
}

/// Scan committed frames (§3.3 steps 3–4).
///
/// - `FromStart`: read the header, take its salts; the running checksum is seeded by the header
///   checksum; the first frame is at 32.
/// - `At { offset > 32 }`: the offset must be frame-aligned and the (complete) frame at
///   `offset - frame_size` must carry `(salt1, salt2)`; its checksum words seed the running checksum (it
///   is not re-verified: its earlier frames may since have been overwritten by a restart, which is the
///   caller's business per §3.6). Frames are validated against the given salts, not the header's.
/// - `At { offset == 32 }`: the header's salts must equal `(salt1, salt2)`; seed = header checksum.
///
/// Frames are read sequentially. The valid WAL ends (treated as EOF) at a short frame, a salt mismatch,
/// page number 0 (SQLite never writes it and rejects such frames) or a checksum mismatch. Frames are
/// buffered per transaction and merged into `pages` only at a commit frame; an uncommitted tail is
/// ignored. Pages numbered above the *final* commit size are dropped at the end (as Litestream does; an
/// intermediate shrink does not drop them, matching what SQLite's WAL lookup would return).
///
/// If `max_bytes` is `Some(n)`, the scan stops at the first commit boundary at or after `start + n`
/// bytes; the remainder is for the next call. At least one transaction is always read if present, so
/// `Some(0)` reads exactly one.
pub fn scan<F: ReadAt + ?Sized>(
    f: &F,
    resume: Resume,
    max_bytes: Option<u64>,
) -> Result<ScanOutcome, WalError> {
    let Some(header) = WalHeader::read(f)? else {
        return Ok(ScanOutcome::NoWal);
    };
    let fsz = header.frame_size();
    let fsz_usize = fsz as usize; // ≤ 65560, validated by WalHeader::read
    let big_endian = header.big_endian_checksums();
    let header_checksum = (header.checksum1, header.checksum2);
    let mismatch = |reason: String| Ok(ScanOutcome::PrevFrameMismatch { reason });

    let mut reader = ChunkReader::new(f);
    let (start, salts, seed) = match resume {
        Resume::FromStart => (WAL_HEADER_SIZE, header.salts(), header_checksum),
        Resume::At {
            offset,
            salt1,
            salt2,
        } => {
            if offset < WAL_HEADER_SIZE {
                return mismatch(format!(
                    "resume offset {offset} is inside the {WAL_HEADER_SIZE}-byte WAL header"
                ));
            }
            if !(offset - WAL_HEADER_SIZE).is_multiple_of(fsz) {
                return mismatch(format!(
                    "resume offset {offset} is not frame-aligned for page size {} (page size changed?)",
                    header.page_size
                ));
            }
            if offset == WAL_HEADER_SIZE {
                if header.salts() != (salt1, salt2) {
                    return mismatch(format!(
                        "WAL header salts {:08x}/{:08x} differ from expected {salt1:08x}/{salt2:08x}",
                        header.salt1, header.salt2
                    ));
                }
                (offset, (salt1, salt2), header_checksum)
            } else {
                let prev = offset - fsz;
                let Some(frame) = reader.get(prev, fsz_usize)? else {
                    return mismatch(format!(
                        "previous frame at offset {prev} does not exist (WAL shorter than {offset} bytes)"
                    ));
                };
                let fh = FrameHeader::parse(frame);
                if fh.salts() != (salt1, salt2) {
                    return mismatch(format!(
                        "previous frame at offset {prev} has salts {:08x}/{:08x}, expected {salt1:08x}/{salt2:08x}",
                        fh.salt1, fh.salt2
                    ));
                }
                (offset, (salt1, salt2), fh.checksum())
            }
        }
    };

    let mut seg = Segment {
        header,
        start,
        end: start,
        commit: 0,
        pages: BTreeMap::new(),
        last_frame_checksum: seed,
        commits: 0,
    };
    // Frames of the transaction being read; a Vec (in file order) is cheaper than a map here, and
    // replaying it in order into `pages` keeps the latest version of each page.
    let mut tx: Vec<(u32, u64)> = Vec::new();
    let mut checksum = seed;
    let mut off = start;
    // A short frame (file ends inside it) ends the valid WAL, as does each check below.
    while let Some(frame) = reader.get(off, fsz_usize)? {
        let fh = FrameHeader::parse(frame);
        if fh.salts() != salts || fh.pgno == 0 {
            break;
        }
        checksum = wal_checksum(big_endian, checksum, &frame[..8]);
        checksum = wal_checksum(big_endian, checksum, &frame[FRAME_HEADER_SIZE as usize..]);
        if checksum != fh.checksum() {
            break;
        }
        tx.push((fh.pgno, off));
        let Some(next) = off.checked_add(fsz) else {
            break;
        };
        off = next;
        if fh.commit != 0 {
            seg.pages.extend(tx.drain(..));
            seg.commit = fh.commit;
            seg.end = off;
            seg.last_frame_checksum = checksum;
            seg.commits = seg.commits.saturating_add(1);
            if let Some(limit) = max_bytes {
                if seg.end - start >= limit {
                    break;
                }
            }
        }
    }
    let commit = seg.commit;
    seg.pages.retain(|&pgno, _| pgno <= commit);
    Ok(ScanOutcome::Segment(seg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};

    // ---------- helpers ----------

    /// Reference checksum, written independently of `wal_checksum` so the two cross-check.
    fn ref_checksum(be: bool, mut s: (u32, u32), data: &[u8]) -> (u32, u32) {
        assert_eq!(data.len() % 8, 0);
        let mut i = 0;
        while i < data.len() {
            let w = |j: usize| {
                let b = [data[j], data[j + 1], data[j + 2], data[j + 3]];
                if be {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                }
            };
            s.0 = s.0.wrapping_add(w(i)).wrapping_add(s.1);
            s.1 = s.1.wrapping_add(w(i + 4)).wrapping_add(s.0);
            i += 8;
        }
        s
    }

    /// Writes synthetic WAL files the way SQLite does (header, cumulative frame checksums, restarts
    /// overwriting from offset 32 while leaving older frames behind).
    struct WalBuilder {
        buf: Vec<u8>,
        page_size: u32,
        be: bool,
        salts: (u32, u32),
        checkpoint_seq: u32,
        cks: (u32, u32),
        pos: u64,
        counter: u32,
    }

    impl WalBuilder {
        fn new(page_size: u32, be: bool, salts: (u32, u32)) -> Self {
            let mut b = WalBuilder {
                buf: Vec::new(),
                page_size,
                be,
                salts,
                checkpoint_seq: 0,
                cks: (0, 0),
                pos: 0,
                counter: 0,
            };
            b.write_header();
            b
        }

        fn fsz(&self) -> u64 {
            frame_size(self.page_size)
        }

        fn put(&mut self, at: u64, bytes: &[u8]) {
            let at = at as usize;
            if self.buf.len() < at + bytes.len() {
                self.buf.resize(at + bytes.len(), 0);
            }
            self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        }

        fn write_header(&mut self) {
            let mut h = Vec::with_capacity(32);
            h.extend_from_slice(&(if self.be { WAL_MAGIC_BE } else { WAL_MAGIC_LE }).to_be_bytes());
            h.extend_from_slice(&WAL_VERSION.to_be_bytes());
            h.extend_from_slice(&self.page_size.to_be_bytes());
            h.extend_from_slice(&self.checkpoint_seq.to_be_bytes());
            h.extend_from_slice(&self.salts.0.to_be_bytes());
            h.extend_from_slice(&self.salts.1.to_be_bytes());
            let c = ref_checksum(self.be, (0, 0), &h);
            h.extend_from_slice(&c.0.to_be_bytes());
            h.extend_from_slice(&c.1.to_be_bytes());
            self.put(0, &h);
            self.cks = c;
            self.pos = WAL_HEADER_SIZE;
        }

        /// Deterministic page content tagged with pgno and a write counter.
        fn page(&mut self, pgno: u32) -> Vec<u8> {
            self.counter += 1;
            let mut p = vec![0u8; self.page_size as usize];
            let mut x = (u64::from(pgno) << 32) | u64::from(self.counter) | 1;
            for chunk in p.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            p[0..4].copy_from_slice(&pgno.to_be_bytes());
            p[4..8].copy_from_slice(&self.counter.to_be_bytes());
            p
        }

        /// Append a frame; returns its offset.
        fn frame(&mut self, pgno: u32, commit: u32) -> u64 {
            let data = self.page(pgno);
            self.frame_with(pgno, commit, &data)
        }

        fn frame_with(&mut self, pgno: u32, commit: u32, data: &[u8]) -> u64 {
            let mut h = Vec::with_capacity(24);
            h.extend_from_slice(&pgno.to_be_bytes());
            h.extend_from_slice(&commit.to_be_bytes());
            let c = ref_checksum(self.be, self.cks, &h);
            let c = ref_checksum(self.be, c, data);
            h.extend_from_slice(&self.salts.0.to_be_bytes());
            h.extend_from_slice(&self.salts.1.to_be_bytes());
            h.extend_from_slice(&c.0.to_be_bytes());
            h.extend_from_slice(&c.1.to_be_bytes());
            let off = self.pos;
            self.put(off, &h);
            self.put(off + FRAME_HEADER_SIZE, data);
            self.cks = c;
            self.pos += self.fsz();
            off
        }

        /// A transaction writing `pgnos` in order, committing with DB size `commit`. Returns the offset
        /// just past its commit frame.
        fn tx(&mut self, pgnos: &[u32], commit: u32) -> u64 {
            for (i, &p) in pgnos.iter().enumerate() {
                let c = if i + 1 == pgnos.len() { commit } else { 0 };
                self.frame(p, c);
            }
            self.pos
        }

        /// WAL restart as SQLite does it: new header (salt1 + 1, new salt2, seq + 1), frames from 32
        /// again; old bytes after the write position are left in place.
        fn restart(&mut self, salt2: u32) {
            self.salts = (self.salts.0.wrapping_add(1), salt2);
            self.checkpoint_seq += 1;
            self.write_header();
        }
    }

    fn segment(o: ScanOutcome) -> Segment {
        match o {
            ScanOutcome::Segment(s) => s,
            other => panic!("expected a segment, got {other:?}"),
        }
    }

    fn scan_ok<F: ReadAt + ?Sized>(f: &F, r: Resume, max: Option<u64>) -> Segment {
        segment(scan(f, r, max).expect("scan"))
    }

    fn resume_after(s: &Segment) -> Resume {
        Resume::At {
            offset: s.end,
            salt1: s.header.salt1,
            salt2: s.header.salt2,
        }
    }

    fn is_mismatch(o: &ScanOutcome) -> bool {
        matches!(o, ScanOutcome::PrevFrameMismatch { .. })
    }

    /// A standard multi-transaction WAL: page size 512, 4 transactions, some pages rewritten.
    fn sample(be: bool) -> (WalBuilder, Vec<u64>) {
        let mut b = WalBuilder::new(512, be, (0x1122_3344, 0x5566_7788));
        let ends = vec![
            b.tx(&[1, 2, 3], 3),
            b.tx(&[2], 3),
            b.tx(&[4, 5, 1, 5], 5),
            b.tx(&[3, 6], 6),
        ];
        (b, ends)
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "litestream-wal-test-{}-{}-{}",
                std::process::id(),
                tag,
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sqlite3_bin() -> String {
        let bin = std::env::var("SQLITE3").unwrap_or_else(|_| "/usr/bin/sqlite3".to_string());
        assert!(
            Path::new(&bin).exists(),
            "sqlite3 CLI not found at {bin} (set SQLITE3); the real-WAL tests need it"
        );
        bin
    }

    /// Run a script through the sqlite3 CLI in `dir` on `db`; returns stdout.
    fn sqlite3(dir: &TempDir, db: &str, script: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(sqlite3_bin())
            .arg(db)
            .current_dir(&dir.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sqlite3");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "sqlite3 failed: {stderr}"
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Checks every invariant a Segment must satisfy against the file it came from.
    fn check_invariants(f: &[u8], s: &Segment) {
        let fsz = s.header.frame_size();
        assert!(s.end >= s.start);
        assert_eq!((s.end - s.start) % fsz, 0);
        assert!(s.end <= f.len() as u64);
        if s.commits == 0 {
            assert_eq!(s.end, s.start);
            assert_eq!(s.commit, 0);
            assert!(s.pages.is_empty());
        } else {
            let last = read_frame_header(f, s.end - fsz).unwrap().unwrap();
            assert_eq!(last.commit, s.commit);
            assert_eq!(last.checksum(), s.last_frame_checksum);
        }
        for (&pgno, &off) in &s.pages {
            assert!(pgno >= 1 && pgno <= s.commit);
            assert!(off >= s.start && off + fsz <= s.end);
            assert_eq!((off - WAL_HEADER_SIZE) % fsz, 0);
            assert_eq!(read_frame_header(f, off).unwrap().unwrap().pgno, pgno);
        }
    }

    // ---------- basic pieces ----------

    #[test]
    fn frame_size_and_constants() {
        assert_eq!(frame_size(4096), 4120);
        assert_eq!(frame_size(65536), 65560);
        assert!(is_valid_page_size(512) && is_valid_page_size(65536));
        assert!(
            !is_valid_page_size(256) && !is_valid_page_size(131072) && !is_valid_page_size(1000)
        );
    }

    #[test]
    fn checksum_matches_reference_both_orders() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        for be in [false, true] {
            for seed in [(0, 0), (1, 2), (u32::MAX, 0x8000_0000)] {
                assert_eq!(wal_checksum(be, seed, &data), ref_checksum(be, seed, &data));
            }
        }
        // Trailing partial words are ignored rather than panicking.
        assert_eq!(
            wal_checksum(false, (5, 6), &data[..13]),
            wal_checksum(false, (5, 6), &data[..8])
        );
    }

    #[test]
    fn read_at_impls() {
        let v: Vec<u8> = (0..10).collect();
        let mut b = [0u8; 4];
        assert_eq!(ReadAt::read_at(&v, &mut b, 8).unwrap(), 2);
        assert_eq!(&b[..2], &[8, 9]);
        assert_eq!(ReadAt::read_at(&v, &mut b, 10).unwrap(), 0);
        assert_eq!(ReadAt::read_at(&v, &mut b, u64::MAX).unwrap(), 0);
        let s: &[u8] = &v;
        assert_eq!(ReadAt::len(&s).unwrap(), 10);

        let dir = TempDir::new("readat");
        std::fs::write(dir.path("f"), &v).unwrap();
        let file = std::fs::File::open(dir.path("f")).unwrap();
        assert_eq!(ReadAt::len(&file).unwrap(), 10);
        assert_eq!(ReadAt::read_at(&file, &mut b, 7).unwrap(), 3);
        assert_eq!(&b[..3], &[7, 8, 9]);
    }

    #[test]
    fn header_parsing() {
        let b = WalBuilder::new(4096, false, (7, 9));
        let h = WalHeader::read(&b.buf).unwrap().unwrap();
        assert_eq!(h.magic, WAL_MAGIC_LE);
        assert_eq!(h.version, WAL_VERSION);
        assert_eq!(h.page_size, 4096);
        assert_eq!(h.salts(), (7, 9));
        assert!(!h.big_endian_checksums());
        assert!(WalHeader::read(&WalBuilder::new(1024, true, (1, 2)).buf)
            .unwrap()
            .unwrap()
            .big_endian_checksums());

        // Short, empty, wrong magic, bad checksum: no WAL.
        assert_eq!(WalHeader::read(&Vec::new()).unwrap(), None);
        assert_eq!(WalHeader::read(&b.buf[..31]).unwrap(), None);
        let mut m = b.buf.clone();
        m[3] = 0x84;
        assert_eq!(WalHeader::read(&m).unwrap(), None);
        let mut m = b.buf.clone();
        m[20] ^= 1;
        assert_eq!(WalHeader::read(&m).unwrap(), None);
        assert!(matches!(
            scan(&m, Resume::FromStart, None).unwrap(),
            ScanOutcome::NoWal
        ));

        // Checksummed but unusable: errors.
        let mut v = WalBuilder::new(4096, false, (1, 2));
        v.buf[4..8].copy_from_slice(&3_007_001u32.to_be_bytes());
        let c = ref_checksum(false, (0, 0), &v.buf[..24]);
        v.buf[24..28].copy_from_slice(&c.0.to_be_bytes());
        v.buf[28..32].copy_from_slice(&c.1.to_be_bytes());
        let e = WalHeader::read(&v.buf).unwrap_err();
        assert!(matches!(e, WalError::UnsupportedVersion(3_007_001)), "{e}");
        assert!(e.to_string().contains("3007001"));
        for bad in [1000u32, 256, 131072, 0] {
            let mut p = WalBuilder::new(4096, true, (1, 2));
            p.buf[8..12].copy_from_slice(&bad.to_be_bytes());
            let c = ref_checksum(true, (0, 0), &p.buf[..24]);
            p.buf[24..28].copy_from_slice(&c.0.to_be_bytes());
            p.buf[28..32].copy_from_slice(&c.1.to_be_bytes());
            assert!(
                matches!(WalHeader::read(&p.buf), Err(WalError::InvalidPageSize(x)) if x == bad)
            );
            assert!(scan(&p.buf, Resume::FromStart, None).is_err());
        }
    }

    #[test]
    fn frame_header_and_page_reads() {
        let (b, _) = sample(false);
        let fh = read_frame_header(&b.buf, 32).unwrap().unwrap();
        assert_eq!((fh.pgno, fh.commit), (1, 0));
        assert_eq!(fh.salts(), (0x1122_3344, 0x5566_7788));
        let third = 32 + 2 * frame_size(512);
        assert_eq!(read_frame_header(&b.buf, third).unwrap().unwrap().commit, 3);
        let mut page = vec![0u8; 512];
        read_frame_page(&b.buf, third, &mut page).unwrap();
        assert_eq!(&page[0..4], &3u32.to_be_bytes());
        assert_eq!(
            read_frame_header(&b.buf, b.buf.len() as u64 - 23).unwrap(),
            None
        );
        assert_eq!(read_frame_header(&b.buf, u64::MAX - 3).unwrap(), None);
        let last = b.buf.len() as u64 - frame_size(512);
        read_frame_page(&b.buf, last, &mut page).unwrap();
        let e = read_frame_page(&b.buf, last + 1, &mut page).unwrap_err();
        assert!(
            matches!(
                e,
                WalError::ShortRead {
                    wanted: 512,
                    got: 511,
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(
            read_frame_page(&b.buf, u64::MAX - 1, &mut page),
            Err(WalError::OffsetOverflow { .. })
        ));
    }

    // ---------- synthetic scans ----------

    #[test]
    fn multiple_transactions_latest_version_wins() {
        for be in [false, true] {
            let (b, ends) = sample(be);
            let s = scan_ok(&b.buf, Resume::FromStart, None);
            check_invariants(&b.buf, &s);
            let fsz = frame_size(512);
            let at = |i: u64| 32 + i * fsz;
            assert_eq!(s.start, 32);
            assert_eq!(s.end, *ends.last().unwrap());
            assert_eq!(s.end, b.buf.len() as u64);
            assert_eq!(s.commit, 6);
            assert_eq!(s.commits, 4);
            assert_eq!(s.header.big_endian_checksums(), be);
            // Frames: 0:p1 1:p2 2:p3 | 3:p2 | 4:p4 5:p5 6:p1 7:p5 | 8:p3 9:p6
            let expect: BTreeMap<u32, u64> = [
                (1, at(6)),
                (2, at(3)),
                (3, at(8)),
                (4, at(4)),
                (5, at(7)),
                (6, at(9)),
            ]
            .into_iter()
            .collect();
            assert_eq!(s.pages, expect);
            assert_eq!(s.last_frame_checksum, b.cks);
            let refs: Vec<FrameRef> = s.frame_refs().collect();
            assert_eq!(
                refs[0],
                FrameRef {
                    pgno: 1,
                    offset: at(6)
                }
            );
            assert_eq!(s.size(), 10 * fsz);
        }
    }

    #[test]
    fn empty_wal_header_only() {
        let b = WalBuilder::new(4096, false, (1, 2));
        let s = scan_ok(&b.buf, Resume::FromStart, None);
        assert!(s.is_empty());
        assert_eq!((s.start, s.end, s.commit, s.commits), (32, 32, 0, 0));
        assert_eq!(
            s.last_frame_checksum,
            (s.header.checksum1, s.header.checksum2)
        );
        // Resuming at 32 on an empty WAL with the right salts is fine.
        let s = scan_ok(
            &b.buf,
            Resume::At {
                offset: 32,
                salt1: 1,
                salt2: 2,
            },
            None,
        );
        assert!(s.is_empty());
    }

    #[test]
    fn uncommitted_tail_ignored() {
        let (mut b, ends) = sample(false);
        b.frame(7, 0);
        b.frame(1, 0);
        let s = scan_ok(&b.buf, Resume::FromStart, None);
        check_invariants(&b.buf, &s);
        assert_eq!(s.end, *ends.last().unwrap());
        assert!(s.end < b.buf.len() as u64);
        assert!(!s.pages.contains_key(&7));
        assert_eq!(s.pages[&1], 32 + 6 * frame_size(512));
        // Only uncommitted frames: nothing at all.
        let mut u = WalBuilder::new(512, false, (3, 4));
        u.frame(1, 0);
        u.frame(2, 0);
        let s = scan_ok(&u.buf, Resume::FromStart, None);
        assert!(s.is_empty() && s.pages.is_empty());
    }

    #[test]
    fn torn_last_frame() {
        let (mut b, ends) = sample(false);
        b.tx(&[2, 7], 7);
        for cut in [1usize, 24, 100, frame_size(512) as usize - 1] {
            let torn = &b.buf[..b.buf.len() - cut];
            let s = scan_ok(torn, Resume::FromStart, None);
            check_invariants(torn, &s);
            assert_eq!(s.end, *ends.last().unwrap(), "cut {cut}");
            assert_eq!(s.commit, 6);
        }
        // Torn in the sense of stale page bytes with a fresh header: checksum catches it.
        let mut t = b.buf.clone();
        let n = t.len();
        t[n - 1] ^= 0xff;
        assert_eq!(
            scan_ok(&t, Resume::FromStart, None).end,
            *ends.last().unwrap()
        );
    }

    #[test]
    fn wrong_salt_mid_file_ends_wal() {
        let (b, ends) = sample(false);
        let fsz = frame_size(512);
        // Frame 5 (inside transaction 3) gets another salt: tx 3 and 4 are gone.
        let mut m = b.buf.clone();
        let off = (32 + 5 * fsz) as usize;
        m[off + 8] ^= 0x10;
        let s = scan_ok(&m, Resume::FromStart, None);
        check_invariants(&m, &s);
        assert_eq!(s.end, ends[1]);
        assert_eq!(s.commit, 3);
        assert_eq!(s.commits, 2);
        assert!(!s.pages.contains_key(&4));
        // Salt2 too.
        let mut m = b.buf.clone();
        m[off + 12] ^= 0x01;
        assert_eq!(scan_ok(&m, Resume::FromStart, None).end, ends[1]);
    }

    #[test]
    fn bad_checksum_mid_file_ends_wal() {
        let (b, ends) = sample(true);
        let fsz = frame_size(512);
        for (frame, expect_end) in [(0u64, 32u64), (3, ends[0]), (7, ends[1]), (9, ends[2])] {
            let off = (32 + frame * fsz) as usize;
            // Page data, the commit field and the stored checksum each break the chain.
            for delta in [FRAME_HEADER_SIZE as usize + 100, 4, 16, 23] {
                let mut m = b.buf.clone();
                m[off + delta] ^= 0x40;
                let s = scan_ok(&m, Resume::FromStart, None);
                check_invariants(&m, &s);
                assert_eq!(s.end, expect_end, "frame {frame} delta {delta}");
            }
        }
    }

    #[test]
    fn page_zero_frame_ends_wal() {
        let mut b = WalBuilder::new(512, false, (1, 1));
        let e1 = b.tx(&[1, 2], 2);
        b.tx(&[0, 3], 3); // correctly checksummed but SQLite never writes pgno 0
        let s = scan_ok(&b.buf, Resume::FromStart, None);
        assert_eq!(s.end, e1);
    }

    #[test]
    fn shrink_drops_pages_above_final_commit() {
        let mut b = WalBuilder::new(512, false, (9, 9));
        b.tx(&[1, 2, 3, 4, 5], 5);
        b.tx(&[1, 2], 2); // e.g. VACUUM shrinking the DB to 2 pages
        let s = scan_ok(&b.buf, Resume::FromStart, None);
        check_invariants(&b.buf, &s);
        assert_eq!(s.commit, 2);
        assert_eq!(s.pages.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn restarted_wal_only_new_frames() {
        let (mut b, ends) = sample(false);
        let old_salts = b.salts;
        let old_len = b.buf.len();
        b.restart(0xdead_beef);
        let new_end = b.tx(&[1, 9, 4], 9);
        assert_eq!(b.buf.len(), old_len, "old frames remain after the new ones");
        let s = scan_ok(&b.buf, Resume::FromStart, None);
        check_invariants(&b.buf, &s);
        assert_eq!(s.header.salts(), (old_salts.0 + 1, 0xdead_beef));
        assert_eq!(s.header.checkpoint_seq, 1);
        assert_eq!(s.end, new_end);
        assert_eq!(s.commit, 9);
        assert_eq!(s.commits, 1);
        assert_eq!(s.pages.len(), 3);
        // The stale frame after the new ones still carries the old salts; §3.6 sees both pairs.
        assert_eq!(
            distinct_salts(&b.buf, 512, b.buf.len() as u64).unwrap(),
            vec![b.salts, old_salts]
        );
        assert_eq!(distinct_salts(&b.buf, 512, new_end).unwrap(), vec![b.salts]);
        // Resuming the old position with the old salts: the previous frame still exists with old
        // salts, so the resume is accepted and (nothing old follows) yields nothing new.
        let old = Resume::At {
            offset: ends[3],
            salt1: old_salts.0,
            salt2: old_salts.1,
        };
        let s = scan_ok(&b.buf, old, None);
        assert!(s.is_empty());
        // A resume point that the restart overwrote no longer carries the old salts.
        let overwritten = Resume::At {
            offset: ends[0],
            salt1: old_salts.0,
            salt2: old_salts.1,
        };
        assert!(is_mismatch(&scan(&b.buf, overwritten, None).unwrap()));
        // Offset 32 with old salts: header salts changed.
        let at32 = Resume::At {
            offset: 32,
            salt1: old_salts.0,
            salt2: old_salts.1,
        };
        assert!(is_mismatch(&scan(&b.buf, at32, None).unwrap()));
    }

    #[test]
    fn resume_continues_exactly() {
        for be in [false, true] {
            let (mut b, _) = sample(be);
            b.tx(&[7, 2, 8], 8);
            b.tx(&[8], 8);
            b.frame(3, 0); // uncommitted tail
            let whole = scan_ok(&b.buf, Resume::FromStart, None);
            check_invariants(&b.buf, &whole);
            let fsz = frame_size(512);
            // Every frame boundary: the first part ends at the first commit boundary at/after it.
            let mut mid = 32;
            while mid <= whole.end {
                let first = scan_ok(&b.buf, Resume::FromStart, Some(mid - 32));
                check_invariants(&b.buf, &first);
                assert!(first.end >= mid || first.end == whole.end);
                let second = scan_ok(&b.buf, resume_after(&first), None);
                check_invariants(&b.buf, &second);
                assert_eq!(second.start, first.end);
                assert_eq!(second.end, whole.end);
                assert_eq!(second.last_frame_checksum, whole.last_frame_checksum);
                assert_eq!(first.commits + second.commits, whole.commits);
                let mut merged = first.pages.clone();
                merged.extend(second.pages.iter().map(|(&k, &v)| (k, v)));
                let final_commit = if second.is_empty() {
                    first.commit
                } else {
                    second.commit
                };
                merged.retain(|&p, _| p <= final_commit);
                assert_eq!(merged, whole.pages, "split at {mid}");
                assert_eq!(final_commit, whole.commit);
                mid += fsz;
            }
        }
    }

    #[test]
    fn prev_frame_mismatch_cases() {
        let (b, ends) = sample(false);
        let (s1, s2) = b.salts;
        let fsz = frame_size(512);
        let at = |offset: u64, salt1: u32, salt2: u32| Resume::At {
            offset,
            salt1,
            salt2,
        };
        // Valid resume points work.
        for &e in &ends {
            assert!(!is_mismatch(&scan(&b.buf, at(e, s1, s2), None).unwrap()));
        }
        let len = b.buf.len() as u64;
        let cases = [
            ("unaligned", at(ends[0] + 8, s1, s2)),
            ("inside header", at(16, s1, s2)),
            ("zero", at(0, s1, s2)),
            ("past end", at(len + fsz, s1, s2)),
            ("far past end", at(32 + 1000 * fsz, s1, s2)),
            ("huge", at(u64::MAX - (u64::MAX - 32) % fsz, s1, s2)),
            ("wrong salt1", at(ends[1], s1 ^ 1, s2)),
            ("wrong salt2", at(ends[1], s1, s2 ^ 1)),
            ("header salts at 32", at(32, s1, s2 ^ 4)),
        ];
        for (name, r) in cases {
            match scan(&b.buf, r, None).unwrap() {
                ScanOutcome::PrevFrameMismatch { reason } => assert!(!reason.is_empty()),
                other => panic!("{name}: expected mismatch, got {other:?}"),
            }
        }
        // Previous frame torn (file ends inside it).
        let torn = &b.buf[..b.buf.len() - 10];
        assert!(is_mismatch(&scan(torn, at(len, s1, s2), None).unwrap()));
        // Page size changed: the same byte offset is no longer aligned for the new frame size.
        let mut big = WalBuilder::new(4096, false, (s1, s2));
        big.tx(&[1, 2, 3, 4], 4);
        assert!(is_mismatch(
            &scan(&big.buf, at(ends[1], s1, s2), None).unwrap()
        ));
        // Resume in the middle of a transaction is accepted (the caller's offsets are commit
        // boundaries; we only check the previous frame).
        assert!(!is_mismatch(
            &scan(&b.buf, at(32 + fsz, s1, s2), None).unwrap()
        ));
    }

    #[test]
    fn resume_at_end_and_after_growth() {
        let (mut b, _) = sample(false);
        let first = scan_ok(&b.buf, Resume::FromStart, None);
        let again = scan_ok(&b.buf, resume_after(&first), None);
        assert!(again.is_empty());
        assert_eq!(again.end, first.end);
        assert_eq!(again.last_frame_checksum, first.last_frame_checksum);
        let e = b.tx(&[2, 10], 10);
        let more = scan_ok(&b.buf, resume_after(&first), None);
        check_invariants(&b.buf, &more);
        assert_eq!(more.end, e);
        assert_eq!(more.commit, 10);
        assert_eq!(more.pages.keys().copied().collect::<Vec<_>>(), vec![2, 10]);
    }

    #[test]
    fn max_bytes_chunking() {
        for be in [false, true] {
            let mut b = WalBuilder::new(512, be, (42, 43));
            let mut boundaries = vec![];
            for i in 0..20u32 {
                let n = 1 + (i * 7) % 5;
                let pages: Vec<u32> = (0..n).map(|k| 1 + (i + k * 3) % 12).collect();
                boundaries.push(b.tx(&pages, 12));
            }
            b.frame(1, 0);
            let whole = scan_ok(&b.buf, Resume::FromStart, None);
            let fsz = frame_size(512);
            for limit in [0, 1, fsz - 1, fsz, 3 * fsz, 7 * fsz + 5, 1 << 20] {
                let mut chunks = vec![scan_ok(&b.buf, Resume::FromStart, Some(limit))];
                loop {
                    let next = scan_ok(&b.buf, resume_after(chunks.last().unwrap()), Some(limit));
                    if next.is_empty() {
                        break;
                    }
                    chunks.push(next);
                }
                let mut merged = BTreeMap::new();
                let mut prev_end = 32;
                let mut commits = 0;
                for c in &chunks {
                    check_invariants(&b.buf, c);
                    assert_eq!(c.start, prev_end);
                    assert!(
                        boundaries.contains(&c.end),
                        "chunk ends on a commit boundary"
                    );
                    // Stops at the *first* boundary at or after start+limit.
                    let before: Vec<u64> = boundaries
                        .iter()
                        .copied()
                        .filter(|&x| x > c.start && x < c.end)
                        .collect();
                    if c.end != whole.end {
                        assert!(c.size() >= limit, "limit {limit}");
                    }
                    for x in before {
                        assert!(x - c.start < limit, "stopped late: limit {limit}");
                    }
                    merged.extend(c.pages.iter().map(|(&k, &v)| (k, v)));
                    commits += c.commits;
                    prev_end = c.end;
                }
                assert_eq!(prev_end, whole.end);
                assert_eq!(commits, whole.commits);
                assert_eq!(merged, whole.pages);
                assert_eq!(
                    chunks.last().unwrap().last_frame_checksum,
                    whole.last_frame_checksum
                );
                if limit == 0 || limit == 1 {
                    assert_eq!(chunks.len(), 20, "one transaction per chunk");
                }
            }
        }
    }

    #[test]
    fn distinct_salts_cases() {
        let (mut b, _) = sample(false);
        let a = b.salts;
        assert_eq!(distinct_salts(&b.buf, 512, u64::MAX).unwrap(), vec![a]);
        assert_eq!(
            distinct_salts(&b.buf, 512, 32).unwrap(),
            Vec::<(u32, u32)>::new()
        );
        b.restart(5);
        let n1 = b.salts;
        b.tx(&[1, 2, 3], 3);
        b.restart(6);
        let n2 = b.salts;
        b.tx(&[1], 3);
        // Order of first appearance: newest frames at the start, older generations after.
        assert_eq!(
            distinct_salts(&b.buf, 512, u64::MAX).unwrap(),
            vec![n2, n1, a]
        );
        assert!(matches!(
            distinct_salts(&b.buf, 1000, u64::MAX),
            Err(WalError::InvalidPageSize(1000))
        ));
    }

    #[test]
    fn scan_real_file_handle() {
        let (b, _) = sample(true);
        let dir = TempDir::new("file");
        std::fs::write(dir.path("wal"), &b.buf).unwrap();
        let f = std::fs::File::open(dir.path("wal")).unwrap();
        let from_file = scan_ok(&f, Resume::FromStart, None);
        let from_mem = scan_ok(&b.buf, Resume::FromStart, None);
        assert_eq!(from_file.pages, from_mem.pages);
        assert_eq!(from_file.end, from_mem.end);
        assert_eq!(from_file.last_frame_checksum, from_mem.last_frame_checksum);
    }

    #[test]
    fn large_wal_crosses_chunk_boundaries() {
        // Frames straddle the 1 MiB read buffer repeatedly (4120 does not divide 1 MiB).
        let mut b = WalBuilder::new(4096, false, (1, 2));
        for i in 0..300u32 {
            b.tx(&[1 + i % 50, 1 + (i * 13) % 50], 50);
        }
        let s = scan_ok(&b.buf, Resume::FromStart, None);
        check_invariants(&b.buf, &s);
        assert_eq!(s.end, b.buf.len() as u64);
        assert_eq!(s.commits, 300);
        assert_eq!(s.last_frame_checksum, b.cks);
    }

    // ---------- real WAL files from the sqlite3 CLI ----------

    /// Several transactions of different sizes; checks commit fields against PRAGMA page_count after
    /// each one, then rebuilds the database from the DB file + committed WAL pages and lets SQLite
    /// verify it.
    #[test]
    fn real_sqlite_wal() {
        let dir = TempDir::new("real");
        let script = "\
PRAGMA journal_mode=WAL;
PRAGMA wal_autocheckpoint=0;
CREATE TABLE t(id INTEGER PRIMARY KEY, x BLOB);
PRAGMA page_count;
INSERT INTO t(x) VALUES(randomblob(3000));
PRAGMA page_count;
INSERT INTO t(x) VALUES(randomblob(100));
PRAGMA page_count;
BEGIN;
INSERT INTO t(x) SELECT randomblob(700) FROM t;
INSERT INTO t(x) SELECT randomblob(900) FROM t;
INSERT INTO t(x) SELECT randomblob(20000) FROM t;
COMMIT;
PRAGMA page_count;
CREATE INDEX tx ON t(x);
PRAGMA page_count;
UPDATE t SET x = randomblob(50) WHERE id % 2 = 0;
PRAGMA page_count;
DELETE FROM t WHERE id > 6;
PRAGMA page_count;
SELECT count(*), sum(length(x)), hex(sum(id * length(x))) FROM t;
.shell cp db db-copy
.shell cp db-wal wal-copy
PRAGMA cache_size=2;
BEGIN;
INSERT INTO t(x) SELECT randomblob(5000) FROM t;
INSERT INTO t(x) SELECT randomblob(5000) FROM t;
.shell cp db-wal wal-uncommitted
ROLLBACK;
";
        let out = sqlite3(&dir, "db", script);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "wal");
        assert_eq!(lines[1], "0"); // wal_autocheckpoint
        let page_counts: Vec<u32> = lines[2..9].iter().map(|l| l.parse().unwrap()).collect();
        let summary = lines[9].to_string();

        let wal = std::fs::read(dir.path("wal-copy")).unwrap();
        let whole = scan_ok(&wal, Resume::FromStart, None);
        check_invariants(&wal, &whole);
        assert_eq!(whole.header.page_size, 4096);
        assert_eq!(whole.end, wal.len() as u64);
        assert_eq!(whole.commits, 7);
        assert_eq!(whole.commit, *page_counts.last().unwrap());

        // One transaction per chunk: each commit matches page_count after that statement.
        let mut commits = vec![];
        let mut s = scan_ok(&wal, Resume::FromStart, Some(0));
        while !s.is_empty() {
            assert_eq!(s.commits, 1);
            commits.push(s.commit);
            s = scan_ok(&wal, resume_after(&s), Some(0));
        }
        assert_eq!(commits, page_counts);

        // A write transaction larger than the (tiny) page cache spills uncommitted frames into the
        // WAL before it is rolled back; they must not change anything.
        let unc = std::fs::read(dir.path("wal-uncommitted")).unwrap();
        assert!(unc.len() > wal.len(), "expected spilled uncommitted frames");
        let s2 = scan_ok(&unc, Resume::FromStart, None);
        assert_eq!(s2.end, whole.end);
        assert_eq!(s2.pages, whole.pages);

        // Rebuild: DB file (nothing checkpointed yet) + committed pages, truncated to `commit`.
        let mut db = std::fs::read(dir.path("db-copy")).unwrap();
        let ps = whole.header.page_size as usize;
        db.resize(whole.commit as usize * ps, 0);
        let mut page = vec![0u8; ps];
        for r in whole.frame_refs() {
            read_frame_page(&wal, r.offset, &mut page).unwrap();
            let at = (r.pgno as usize - 1) * ps;
            db[at..at + ps].copy_from_slice(&page);
        }
        std::fs::write(dir.path("rebuilt"), &db).unwrap();
        let check = sqlite3(
            &dir,
            "rebuilt",
            "PRAGMA integrity_check;\nSELECT count(*), sum(length(x)), hex(sum(id * length(x))) FROM t;\n",
        );
        assert_eq!(check, format!("ok\n{summary}\n"));
    }

    /// A real WAL restart: after a completed checkpoint the next write rewrites the header with new
    /// salts and starts again at offset 32, leaving older frames behind it.
    #[test]
    fn real_sqlite_wal_restart() {
        let dir = TempDir::new("restart");
        let script = "\
PRAGMA journal_mode=WAL;
PRAGMA wal_autocheckpoint=0;
CREATE TABLE t(x);
INSERT INTO t VALUES(randomblob(20000));
INSERT INTO t VALUES(randomblob(20000));
.shell cp db-wal before
PRAGMA wal_checkpoint;
INSERT INTO t VALUES(1);
PRAGMA page_count;
.shell cp db-wal after
";
        let out = sqlite3(&dir, "db", script);
        let page_count: u32 = out.lines().last().unwrap().parse().unwrap();
        let before = std::fs::read(dir.path("before")).unwrap();
        let after = std::fs::read(dir.path("after")).unwrap();
        let old = scan_ok(&before, Resume::FromStart, None);
        assert_eq!(old.commits, 3);
        assert_eq!(old.end, before.len() as u64);

        let new = scan_ok(&after, Resume::FromStart, None);
        check_invariants(&after, &new);
        assert_ne!(new.header.salts(), old.header.salts());
        assert_eq!(new.header.salt1, old.header.salt1.wrapping_add(1));
        assert_eq!(new.header.checkpoint_seq, old.header.checkpoint_seq + 1);
        assert_eq!(new.commits, 1);
        assert_eq!(new.commit, page_count);
        assert!(
            new.end < after.len() as u64,
            "stale frames remain after the new ones"
        );
        assert_eq!(
            distinct_salts(&after, 4096, after.len() as u64).unwrap(),
            vec![new.header.salts(), old.header.salts()]
        );
        // The old resume point: its previous frame is stale but intact, so the resume is accepted;
        // the §3.6 logic in the caller is what notices the header salts changed.
        let (s1, s2) = old.header.salts();
        let r = Resume::At {
            offset: old.end,
            salt1: s1,
            salt2: s2,
        };
        assert!(scan_ok(&after, r, None).is_empty());
        let r = Resume::At {
            offset: 32,
            salt1: s1,
            salt2: s2,
        };
        assert!(is_mismatch(&scan(&after, r, None).unwrap()));
    }

    // ---------- robustness ----------

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    #[test]
    fn no_panic_on_mutated_wals() {
        let mut bases = vec![];
        for be in [false, true] {
            let (mut b, _) = sample(be);
            b.restart(77);
            b.tx(&[2, 3], 4);
            bases.push(b.buf);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut segments = 0;
        for i in 0..10_000 {
            let mut w = bases[i % 2].clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(8) {
                    0 => w.truncate(rng.below(w.len() as u64 + 1) as usize),
                    1 => {
                        let n = rng.below(2000) as usize;
                        w.extend((0..n).map(|_| rng.next() as u8));
                    }
                    2 | 3 => {
                        if !w.is_empty() {
                            let at = rng.below(w.len() as u64) as usize;
                            w[at] = rng.next() as u8;
                        }
                    }
                    4 => {
                        // A header field with a recomputed header checksum (reaches the
                        // version/page-size checks and odd page sizes).
                        if w.len() >= 32 {
                            let field = 4 * rng.below(6) as usize;
                            let v = match rng.below(3) {
                                0 => rng.next() as u32,
                                1 => 1u32 << rng.below(20),
                                _ => 0,
                            };
                            w[field..field + 4].copy_from_slice(&v.to_be_bytes());
                            let be = w[3] & 1 == 1;
                            let c = ref_checksum(be, (0, 0), &w[..24]);
                            w[24..28].copy_from_slice(&c.0.to_be_bytes());
                            w[28..32].copy_from_slice(&c.1.to_be_bytes());
                        }
                    }
                    5 => {
                        // Duplicate a span elsewhere (frames copied to odd places).
                        if w.len() > 64 {
                            let from = rng.below(w.len() as u64 - 32) as usize;
                            let to = rng.below(w.len() as u64 - 32) as usize;
                            let n = rng.below(600).min((w.len() - from.max(to)) as u64) as usize;
                            let tmp = w[from..from + n].to_vec();
                            w[to..to + n].copy_from_slice(&tmp);
                        }
                    }
                    6 => {
                        // Flip a commit field to something arbitrary.
                        let off = 32 + 536 * rng.below(16) as usize + 4;
                        if off + 4 <= w.len() {
                            w[off..off + 4].copy_from_slice(&(rng.next() as u32).to_be_bytes());
                        }
                    }
                    _ => {
                        if !w.is_empty() {
                            let at = rng.below(w.len() as u64) as usize;
                            w[at] ^= 1 << rng.below(8);
                        }
                    }
                }
            }
            let max = match rng.below(3) {
                0 => None,
                1 => Some(rng.below(4000)),
                _ => Some(rng.next()),
            };
            let resume = match rng.below(4) {
                0 => Resume::FromStart,
                1 => Resume::At {
                    offset: 32 + 536 * rng.below(20),
                    salt1: 0x1122_3344,
                    salt2: 0x5566_7788,
                },
                2 => Resume::At {
                    offset: 32 + 536 * rng.below(20),
                    salt1: 0x1122_3345,
                    salt2: 77,
                },
                _ => Resume::At {
                    offset: rng.next() >> rng.below(64),
                    salt1: rng.next() as u32,
                    salt2: rng.next() as u32,
                },
            };
            let _ = WalHeader::read(&w);
            if let Ok(ScanOutcome::Segment(s)) = scan(&w, resume, max) {
                check_invariants(&w, &s);
                segments += 1;
            }
            let _ = distinct_salts(&w, 512, rng.next());
            let _ = read_frame_header(&w, rng.next() >> rng.below(64));
            let mut page = vec![0u8; 512];
            let _ = read_frame_page(&w, rng.next() >> rng.below(64), &mut page);
        }
        assert!(segments > 1000, "mutations should often leave a usable WAL");
    }

    #[test]
    fn error_display_and_source() {
        let e = WalError::Io {
            offset: 4096,
            len: 24,
            source: io::Error::other("boom"),
        };
        assert!(e.to_string().contains("4096") && e.to_string().contains("boom"));
        assert!(std::error::Error::source(&e).is_some());
        assert!(WalError::InvalidPageSize(3)
            .to_string()
            .contains("page size 3"));
        assert!(std::error::Error::source(&WalError::InvalidPageSize(3)).is_none());
    }

    /// `cargo test --release -- --ignored bench_scan_200mb --nocapture`
    #[test]
    #[ignore]
    fn bench_scan_200mb() {
        let frames = 200 * 1024 * 1024 / 4120;
        let mut b = WalBuilder::new(4096, false, (1, 2));
        for i in 0..frames as u32 {
            let commit = if i % 10 == 9 { 5000 } else { 0 };
            b.frame(1 + i % 5000, commit);
        }
        let dir = TempDir::new("bench");
        std::fs::write(dir.path("wal"), &b.buf).unwrap();
        drop(b);
        let f = std::fs::File::open(dir.path("wal")).unwrap();
        let t = std::time::Instant::now();
        let s = scan_ok(&f, Resume::FromStart, None);
        let el = t.elapsed();
        eprintln!(
            "scanned {} MB, {} commits, {} pages in {:?}",
            s.end / (1 << 20),
            s.commits,
            s.pages.len(),
            el
        );
        let t = std::time::Instant::now();
        let salts = distinct_salts(&f, 4096, u64::MAX).unwrap();
        eprintln!(
            "distinct_salts over {frames} frames: {:?} in {:?}",
            salts,
            t.elapsed()
        );
    }
}
