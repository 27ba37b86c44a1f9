//! LTX files: the unit of replication in the Litestream 0.5 replica format (spec §1).
//!
//! An LTX file is `header (100 bytes) | page frames | 6-byte zero terminator | page index |
//! trailer (16 bytes)`; every fixed-width integer is big-endian. This module holds the format
//! constants, the [`Header`] and [`Trailer`] types, the [`LtxError`] type and the file-name
//! helpers; [`Encoder`], [`Decoder`] and [`compact`] live in the submodules. The invariants that
//! every file written or accepted here satisfies:
//! - the header passes [`Header::validate`] (exactly the rules of §1.2);
//! - page frames have non-zero page numbers in strictly ascending order, never the SQLite lock
//!   page ([`lock_page`]) and never beyond `header.commit`;
//! - a snapshot (`min_txid == 1`) holds every page `1..=commit` except the lock page;
//! - every page decompresses to exactly `page_size` bytes;
//! - the page index lists exactly the frames of the page block, at their offsets and sizes;
//! - the file checksum is CRC-64/GO-ISO over everything except itself, with the compressed
//!   payload replaced by the decompressed page (§1.6), stored with bit 63 set.
//!
//! The writer requires header flag NoChecksum (0x2), so both database checksums are 0, as in
//! every file Litestream writes, and it emits the size-prefixed LZ4 block page encoding. The
//! decoder also reads the legacy LZ4 frame encoding. It is stricter than Go's in a few places
//! (pgno order, lock page, `pgno <= commit`, snapshot completeness, exact page length, LZ4
//! frame checksums, an LZ4 block's final token, trailing bytes). Every Go encoder guarantees all
//! of these, so valid Litestream files are not rejected; in exchange, corruption is caught
//! wherever the format makes that possible (every single-byte change to the test fixtures is).

mod decoder;
mod encoder;
mod merge;

pub use decoder::{check_follows, check_named, verify, Decoder};
pub use encoder::{max_encoded_size, Encoder};
pub use merge::compact;

use std::fmt;
use std::io;

/// File magic, ASCII "LTX1".
pub const MAGIC: &[u8; 4] = b"LTX1";
/// Size of the file header in bytes.
pub const HEADER_SIZE: usize = 100;
/// Size of a page header (pgno u32 + flags u16). The block encoding adds a 4-byte size field.
pub const PAGE_HEADER_SIZE: usize = 6;
/// Size of the trailer (post-apply checksum u64 + file checksum u64).
pub const TRAILER_SIZE: usize = 16;
/// Header flag: database checksums are not tracked (pre/post-apply checksums are 0).
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 0x2;
/// Page flag: a u32 compressed size follows the page header, then one raw LZ4 block.
/// A page with flags 0 holds the legacy encoding: one LZ4 frame without a length prefix.
pub const PAGE_FLAG_SIZE: u16 = 0x1;
/// Bit forced on in every stored checksum, so that a valid checksum is never 0.
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// Byte offset of SQLite's PENDING_BYTE; the page containing it (the lock page) is never stored.
const PENDING_BYTE: u32 = 0x4000_0000;

/// CRC-64/GO-ISO (Go `hash/crc64` with the ISO table). Slice-by-16 because every page byte of
/// every file goes through it.
static CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_GO_ISO);

/// A running file checksum.
type Crc64Digest = crc::Digest<'static, u64, crc::Table<16>>;

/// The SQLite lock page for `page_size`: the page that holds byte 0x40000000 of the database.
/// SQLite never writes it, and LTX files never contain it.
pub fn lock_page(page_size: u32) -> u32 {
    // max(1) only guards the division against a zero page size passed by mistake.
    PENDING_BYTE / page_size.max(1) + 1
}

/// Whether `n` is a valid page size: a power of two from 512 to 65536.
pub fn is_valid_page_size(n: u32) -> bool {
    (512..=65536).contains(&n) && n.is_power_of_two()
}

/// The file name for a TXID range: `%016x-%016x.ltx`.
pub fn file_name(min_txid: u64, max_txid: u64) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

/// Parses a name of exactly the form `^[0-9a-f]{16}-[0-9a-f]{16}\.ltx$` into `(min, max)`.
/// Also rejects ranges that no valid header could carry (`min == 0` or `min > max`).
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let b = name.as_bytes();
    if b.len() != 16 + 1 + 16 + 4 || b.get(16) != Some(&b'-') || b.get(33..) != Some(b".ltx") {
        return None;
    }
    let min = parse_hex16(b.get(..16)?, false)?;
    let max = parse_hex16(b.get(17..33)?, false)?;
    (min >= 1 && min <= max).then_some((min, max))
}

/// A TXID as 16 lowercase hex digits, as used in file names and on the CLI.
pub fn format_txid(txid: u64) -> String {
    format!("{txid:016x}")
}

/// Parses exactly 16 hex digits. Upper case is accepted, as Go's `ltx.ParseTXID` does
/// (`strconv.ParseUint(s, 16, 64)`); file names, by contrast, must be lower case.
pub fn parse_txid(s: &str) -> Option<u64> {
    parse_hex16(s.as_bytes(), true)
}

/// Parses exactly 16 hex digits; `u64::from_str_radix` alone would also accept a leading '+'.
fn parse_hex16(b: &[u8], allow_upper: bool) -> Option<u64> {
    if b.len() != 16 {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' if allow_upper => c - b'A' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(digit))
    })
}

/// The page that must follow `prev` in a snapshot (`prev == 0`: none yet): the next page
/// number, skipping the lock page.
fn next_snapshot_pgno(prev: u32, lock_pgno: u32) -> u32 {
    let next = prev.saturating_add(1);
    if next == lock_pgno {
        next.saturating_add(1)
    } else {
        next
    }
}

/// The last page a complete snapshot of `commit` pages holds (0 for an empty database). It is
/// `commit` itself unless that is the lock page, which is never stored.
fn last_snapshot_pgno(commit: u32, lock_pgno: u32) -> u32 {
    if commit == lock_pgno {
        commit - 1
    } else {
        commit
    }
}

/// The 100-byte file header (§1.2). All fields are stored big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Only [`HEADER_FLAG_NO_CHECKSUM`] is allowed; Litestream always sets it.
    pub flags: u32,
    /// Power of two, 512..=65536.
    pub page_size: u32,
    /// Database size in pages after this file is applied.
    pub commit: u32,
    /// First TXID covered (inclusive, >= 1). 1 makes the file a snapshot.
    pub min_txid: u64,
    /// Last TXID covered (inclusive, >= min_txid).
    pub max_txid: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Rolling database checksum before apply; 0 when NoChecksum is set.
    pub pre_apply_checksum: u64,
    /// Offset in the `-wal` file where this file's WAL read began; 0 for compacted files.
    pub wal_offset: i64,
    /// Bytes of WAL consumed from `wal_offset`; 0 for compacted files.
    pub wal_size: i64,
    /// Salt-1 of the WAL generation read; 0 for compacted files.
    pub wal_salt1: u32,
    /// Salt-2 of the WAL generation read; 0 for compacted files.
    pub wal_salt2: u32,
    /// 0 in Litestream.
    pub node_id: u64,
}

impl Header {
    /// Serializes the header. Does not validate; the reserved bytes 80..100 are zero.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Parses the first [`HEADER_SIZE`] bytes of `b` and validates them. The reserved bytes are
    /// not checked, as in Go (they are covered by the file checksum anyway).
    pub fn from_bytes(b: &[u8]) -> Result<Header, LtxError> {
        let b: &[u8; HEADER_SIZE] =
            b.get(..HEADER_SIZE)
                .and_then(|s| s.try_into().ok())
                .ok_or(LtxError::Truncated {
                    what: "header",
                    offset: b.len() as u64,
                })?;
        if &b[0..4] != MAGIC {
            return Err(LtxError::InvalidHeader(format!(
                "bad magic {:02x?}, expected \"LTX1\"",
                &b[0..4]
            )));
        }
        // Fixed offsets into a fixed-size array: these conversions cannot fail.
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) << 32 | u64::from(u32_at(i + 4));
        let h = Header {
            flags: u32_at(4),
            page_size: u32_at(8),
            commit: u32_at(12),
            min_txid: u64_at(16),
            max_txid: u64_at(24),
            timestamp_ms: u64_at(32) as i64,
            pre_apply_checksum: u64_at(40),
            wal_offset: u64_at(48) as i64,
            wal_size: u64_at(56) as i64,
            wal_salt1: u32_at(64),
            wal_salt2: u32_at(68),
            node_id: u64_at(72),
        };
        h.validate()?;
        Ok(h)
    }

    /// Checks exactly the rules of §1.2 (Go `Header.Validate`), in the same order.
    pub fn validate(&self) -> Result<(), LtxError> {
        let bad = |msg: String| Err(LtxError::InvalidHeader(msg));
        if self.flags & !HEADER_FLAG_NO_CHECKSUM != 0 {
            return bad(format!(
                "flags 0x{:08x}: only 0x00000002 (NoChecksum) is allowed",
                self.flags
            ));
        }
        if !is_valid_page_size(self.page_size) {
            return bad(format!(
                "page size {} is not a power of two in 512..=65536",
                self.page_size
            ));
        }
        if self.min_txid == 0 || self.max_txid == 0 {
            return bad(format!(
                "TXIDs must be >= 1, got min {} max {}",
                self.min_txid, self.max_txid
            ));
        }
        if self.min_txid > self.max_txid {
            return bad(format!(
                "min TXID {} is greater than max TXID {}",
                format_txid(self.min_txid),
                format_txid(self.max_txid)
            ));
        }
        if self.wal_offset < 0 || self.wal_size < 0 {
            return bad(format!(
                "WAL offset {} and size {} must not be negative",
                self.wal_offset, self.wal_size
            ));
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return bad("WAL salts are set but the WAL offset is 0".into());
        }
        if self.wal_size != 0 && self.wal_offset == 0 {
            return bad("WAL size is set but the WAL offset is 0".into());
        }
        if self.is_snapshot() {
            if self.pre_apply_checksum != 0 {
                return bad("a snapshot (min TXID 1) must have pre-apply checksum 0".into());
            }
        } else if self.flags & HEADER_FLAG_NO_CHECKSUM != 0 {
            if self.pre_apply_checksum != 0 {
                return bad("pre-apply checksum must be 0 when NoChecksum is set".into());
            }
        } else if self.pre_apply_checksum & CHECKSUM_FLAG == 0 {
            // Also catches 0: a tracked checksum always has bit 63 set.
            return bad(format!(
                "pre-apply checksum {:016x} must have bit 63 set",
                self.pre_apply_checksum
            ));
        }
        Ok(())
    }

    /// A snapshot is any file starting at TXID 1; it holds the whole database.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }
}

/// The 16-byte trailer (§1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Rolling database checksum after apply; 0 in NoChecksum files.
    pub post_apply_checksum: u64,
    /// CRC-64/GO-ISO of the file (§1.6) with bit 63 set.
    pub file_checksum: u64,
}

impl Trailer {
    /// Serializes the trailer.
    pub fn to_bytes(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[..8].copy_from_slice(&self.post_apply_checksum.to_be_bytes());
        b[8..].copy_from_slice(&self.file_checksum.to_be_bytes());
        b
    }

    /// Parses a trailer; no validation (that needs the header and the computed checksum).
    pub fn from_bytes(b: &[u8; TRAILER_SIZE]) -> Trailer {
        let mut post = [0u8; 8];
        let mut file = [0u8; 8];
        post.copy_from_slice(&b[..8]);
        file.copy_from_slice(&b[8..]);
        Trailer {
            post_apply_checksum: u64::from_be_bytes(post),
            file_checksum: u64::from_be_bytes(file),
        }
    }
}

/// Everything that can go wrong while writing, reading or merging LTX files.
#[derive(Debug)]
#[non_exhaustive]
pub enum LtxError {
    /// The underlying reader or writer failed.
    Io(io::Error),
    /// The input ended at `offset` in the middle of `what`.
    Truncated { what: &'static str, offset: u64 },
    /// The header is malformed or breaks a rule of §1.2.
    InvalidHeader(String),
    /// The page block, page index or trailer is malformed; `offset` is where the problem was
    /// found (the start of the offending structure where known).
    Corrupt { offset: u64, msg: String },
    /// The file checksum in the trailer does not match the contents.
    ChecksumMismatch { stored: u64, computed: u64 },
    /// Bytes follow the trailer, which must end the file.
    TrailingData { offset: u64 },
    /// The caller broke the API contract (page order, buffer length, call sequence, ...).
    InvalidInput(String),
    /// Files of one chain (compaction inputs, a restore plan) have different page sizes.
    PageSizeMismatch { expected: u32, found: u32 },
    /// Files of one chain do not form a contiguous TXID sequence (§1.11).
    NotContiguous { prev: (u64, u64), next: (u64, u64) },
    /// The header's TXID range is not the one the file's name (its key) says.
    WrongFile {
        named: (u64, u64),
        found: (u64, u64),
    },
    /// The file's pre-apply checksum is not the post-apply checksum of the file before it.
    ChecksumChain {
        prev: (u64, u64),
        next: (u64, u64),
        post_apply: u64,
        pre_apply: u64,
    },
    /// A compaction input failed; `index` is its position in the input list.
    CompactInput {
        index: usize,
        min_txid: u64,
        max_txid: u64,
        source: Box<LtxError>,
    },
}

impl LtxError {
    /// The innermost error, looking through [`LtxError::CompactInput`] wrappers: lets callers
    /// match e.g. a checksum mismatch without caring whether it came from a compaction.
    pub fn innermost(&self) -> &LtxError {
        match self {
            LtxError::CompactInput { source, .. } => source.innermost(),
            e => e,
        }
    }

    /// The message without the "ltx: " prefix, so that wrapped errors read as one sentence.
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LtxError::Io(e) => write!(f, "I/O error: {e}"),
            LtxError::Truncated { what, offset } => {
                write!(
                    f,
                    "unexpected end of file at offset {offset} while reading the {what}"
                )
            }
            LtxError::InvalidHeader(msg) => write!(f, "invalid header: {msg}"),
            LtxError::Corrupt { offset, msg } => {
                write!(f, "corrupt file at offset {offset}: {msg}")
            }
            LtxError::ChecksumMismatch { stored, computed } => write!(
                f,
                "file checksum mismatch: stored {stored:016x}, computed {computed:016x}"
            ),
            LtxError::TrailingData { offset } => {
                write!(f, "unexpected data after the trailer at offset {offset}")
            }
            LtxError::InvalidInput(msg) => write!(f, "{msg}"),
            LtxError::PageSizeMismatch { expected, found } => write!(
                f,
                "files of one chain have different page sizes: {expected} and {found}"
            ),
            LtxError::NotContiguous { prev, next } => write!(
                f,
                "non-contiguous transaction ids: {} is followed by {} \
                 (need next min <= prev max + 1 and next max > prev max)",
                file_name(prev.0, prev.1),
                file_name(next.0, next.1)
            ),
            LtxError::WrongFile { named, found } => write!(
                f,
                "the file named {} holds TXIDs {}-{} by its header: it is not the file its \
                 name says",
                file_name(named.0, named.1),
                format_txid(found.0),
                format_txid(found.1)
            ),
            LtxError::ChecksumChain {
                prev,
                next,
                post_apply,
                pre_apply,
            } => write!(
                f,
                "{} does not continue {}: its pre-apply checksum {pre_apply:016x} is not the \
                 post-apply checksum {post_apply:016x} of the file before it",
                file_name(next.0, next.1),
                file_name(prev.0, prev.1)
            ),
            LtxError::CompactInput {
                index,
                min_txid,
                max_txid,
                source,
            } => {
                write!(
                    f,
                    "compaction input {index} ({}): ",
                    file_name(*min_txid, *max_txid)
                )?;
                source.describe(f)
            }
        }
    }
}

impl fmt::Display for LtxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ltx: ")?;
        self.describe(f)
    }
}

impl std::error::Error for LtxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LtxError::Io(e) => Some(e),
            LtxError::CompactInput { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<io::Error> for LtxError {
    fn from(e: io::Error) -> Self {
        LtxError::Io(e)
    }
}

/// Appends `v` as an unsigned LEB128 varint (Go `binary.AppendUvarint`).
fn append_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::testutil::example_header;
    use super::*;

    #[test]
    fn crc_is_go_iso() {
        assert_eq!(CRC64.checksum(b"123456789"), 0xB909_56C7_75A4_1001);
    }

    #[test]
    fn lock_page_numbers() {
        assert_eq!(lock_page(4096), 262_145);
        assert_eq!(lock_page(65536), 16_385);
        assert_eq!(lock_page(512), 2_097_153);
    }

    #[test]
    fn page_sizes() {
        for n in [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
            assert!(is_valid_page_size(n), "{n}");
        }
        for n in [0, 1, 256, 511, 513, 1000, 4095, 65535, 131_072, u32::MAX] {
            assert!(!is_valid_page_size(n), "{n}");
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(1, 255), "0000000000000001-00000000000000ff.ltx");
        assert_eq!(
            parse_file_name("0000000000000001-00000000000000ff.ltx"),
            Some((1, 255))
        );
        assert_eq!(
            parse_file_name(&file_name(u64::MAX, u64::MAX)),
            Some((u64::MAX, u64::MAX))
        );
        for bad in [
            "",
            "0000000000000001-00000000000000FF.ltx", // upper case
            "0000000000000001-00000000000000ff.LTX",
            "000000000000001-00000000000000ff.ltx", // 15 digits
            "0000000000000001-00000000000000ff.ltx.tmp",
            "x0000000000000001-00000000000000ff.ltx",
            "0000000000000001_00000000000000ff.ltx",
            "0000000000000000-0000000000000001.ltx", // min 0
            "0000000000000002-0000000000000001.ltx", // min > max
            "+000000000000001-0000000000000001.ltx",
            "000000000000000é-0000000000000001.lt", // multi-byte char, same byte length
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn txids() {
        assert_eq!(format_txid(0xff), "00000000000000ff");
        assert_eq!(parse_txid("00000000000000ff"), Some(0xff));
        assert_eq!(parse_txid("00000000000000FF"), Some(0xff));
        assert_eq!(parse_txid("ffffffffffffffff"), Some(u64::MAX));
        for bad in [
            "ff",
            "000000000000000ff",
            "+00000000000000f",
            "0x000000000000ff",
            "000000000000000g",
        ] {
            assert_eq!(parse_txid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn header_round_trip_and_layout() {
        let h = example_header();
        let b = h.to_bytes();
        // First 80 bytes of fixture A, from §1.12.
        let expected: [u8; 80] = [
            0x4c, 0x54, 0x58, 0x31, 0, 0, 0, 2, 0, 0, 0x10, 0, 0, 0, 0, 1, //
            0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, //
            0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0x10, 0x18, //
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&b[..80], &expected[..]);
        assert!(b[80..].iter().all(|&x| x == 0));
        assert_eq!(Header::from_bytes(&b).unwrap(), h);
        // Negative i64 fields survive the round trip (validation aside).
        let neg = Header {
            timestamp_ms: -5,
            ..h
        };
        assert_eq!(Header::from_bytes(&neg.to_bytes()).unwrap(), neg);
    }

    #[test]
    fn header_from_bytes_rejects() {
        let b = example_header().to_bytes();
        assert!(matches!(
            Header::from_bytes(&b[..99]),
            Err(LtxError::Truncated { .. })
        ));
        let mut bad = b;
        bad[3] = b'2';
        assert!(matches!(
            Header::from_bytes(&bad),
            Err(LtxError::InvalidHeader(_))
        ));
    }

    #[test]
    fn header_validation_rules() {
        let ok = example_header();
        assert!(ok.validate().is_ok());
        let incr = Header {
            min_txid: 2,
            max_txid: 3,
            ..ok
        };
        assert!(incr.validate().is_ok());
        let tracked = Header {
            flags: 0,
            pre_apply_checksum: CHECKSUM_FLAG | 5,
            ..incr
        };
        assert!(tracked.validate().is_ok());
        let rejected = [
            Header { flags: 1, ..ok },
            Header {
                flags: 0x8000_0002,
                ..ok
            },
            Header { page_size: 0, ..ok },
            Header {
                page_size: 3000,
                ..ok
            },
            Header {
                page_size: 131_072,
                ..ok
            },
            Header { min_txid: 0, ..ok },
            Header { max_txid: 0, ..ok },
            Header {
                min_txid: 2,
                max_txid: 1,
                ..ok
            },
            Header {
                wal_offset: -1,
                ..ok
            },
            Header { wal_size: -1, ..ok },
            Header {
                wal_offset: 0,
                wal_size: 0,
                ..ok
            }, // salts set
            Header {
                wal_offset: 0,
                wal_salt1: 0,
                wal_salt2: 0,
                ..ok
            }, // size set
            Header {
                pre_apply_checksum: CHECKSUM_FLAG,
                ..ok
            }, // snapshot
            Header {
                pre_apply_checksum: CHECKSUM_FLAG,
                ..incr
            }, // NoChecksum
            Header {
                pre_apply_checksum: 0,
                ..tracked
            },
            Header {
                pre_apply_checksum: 5,
                ..tracked
            },
        ];
        for h in rejected {
            assert!(
                matches!(h.validate(), Err(LtxError::InvalidHeader(_))),
                "{h:?}"
            );
        }
        // Salt alone (offset set, size 0) and no WAL fields at all are both fine.
        assert!(Header { wal_size: 0, ..ok }.validate().is_ok());
        let compacted = Header {
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            ..ok
        };
        assert!(compacted.validate().is_ok());
    }

    #[test]
    fn snapshot_lock_page_skip() {
        // A pretend lock page of 5 keeps this fast; the real ones are > 16384.
        let lock = 5;
        let mut seq = vec![];
        let mut p = 0;
        while p < 8 {
            p = next_snapshot_pgno(p, lock);
            seq.push(p);
        }
        assert_eq!(seq, [1, 2, 3, 4, 6, 7, 8]);
        assert_eq!(last_snapshot_pgno(0, lock), 0);
        assert_eq!(last_snapshot_pgno(4, lock), 4);
        assert_eq!(last_snapshot_pgno(5, lock), 4); // commit is the lock page itself
        assert_eq!(last_snapshot_pgno(6, lock), 6);
        assert_eq!(next_snapshot_pgno(u32::MAX, lock), u32::MAX); // saturates, no overflow
    }

    #[test]
    fn uvarints() {
        let mut v = vec![];
        for (n, enc) in [
            (0u64, &[0u8][..]),
            (1, &[1]),
            (100, &[0x64]),
            (127, &[0x7f]),
            (128, &[0x80, 1]),
            (300, &[0xac, 2]),
        ] {
            v.clear();
            append_uvarint(&mut v, n);
            assert_eq!(v, enc, "{n}");
        }
        v.clear();
        append_uvarint(&mut v, u64::MAX);
        assert_eq!(v.len(), 10);
    }

    #[test]
    fn error_messages() {
        let e = LtxError::ChecksumMismatch {
            stored: 0x86a5_079c_da24_236c,
            computed: 0x8000_0000_0000_0001,
        };
        assert_eq!(
            e.to_string(),
            "ltx: file checksum mismatch: stored 86a5079cda24236c, computed 8000000000000001"
        );
        let wrapped = LtxError::CompactInput {
            index: 2,
            min_txid: 3,
            max_txid: 3,
            source: Box::new(e),
        };
        assert_eq!(
            wrapped.to_string(),
            "ltx: compaction input 2 (0000000000000003-0000000000000003.ltx): file checksum \
             mismatch: stored 86a5079cda24236c, computed 8000000000000001"
        );
        assert!(matches!(
            wrapped.innermost(),
            LtxError::ChecksumMismatch { .. }
        ));
        let gap = LtxError::NotContiguous {
            prev: (1, 1),
            next: (3, 3),
        };
        assert!(gap.to_string().contains(
            "0000000000000001-0000000000000001.ltx is followed by 0000000000000003-0000000000000003.ltx"
        ));
    }
}

/// Shared test helpers: fixture paths, a PRNG, and a hand-rolled LTX writer that can emit the
/// legacy LZ4 frame encoding (which [`Encoder`] deliberately does not write).
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A NoChecksum header of 512-byte pages for TXIDs `min..=max` (WAL offset 32, size 1000,
    /// salts 1 and 2), as the merge and compaction tests build their inputs.
    pub fn hdr(min: u64, max: u64, commit: u32, ts: i64) -> Header {
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: 512,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: ts,
            wal_offset: 32,
            wal_size: 1000,
            wal_salt1: 1,
            wal_salt2: 2,
            ..Default::default()
        }
    }

    /// The bytes of a fixture: `<manifest>/tests/fixtures/ltx/NAME`.
    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/ltx/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {name} not found at {path}: {e}"))
    }

    /// xorshift64*: deterministic, dependency-free test data.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n.max(1)
        }
        pub fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next_u64() as u8;
            }
        }
    }

    /// The header of the §1.12 example files A and B.
    pub fn example_header() -> Header {
        Header {
            flags: 2,
            page_size: 4096,
            commit: 1,
            min_txid: 1,
            max_txid: 1,
            timestamp_ms: 1_700_000_000_000,
            pre_apply_checksum: 0,
            wal_offset: 32,
            wal_size: 4120,
            wal_salt1: 0x1122_3344,
            wal_salt2: 0x5566_7788,
            node_id: 0,
        }
    }

    /// Page 1 of the §1.12 example database.
    pub fn example_page() -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[..16].copy_from_slice(b"SQLite format 3\0");
        p[16..20].copy_from_slice(&[0x10, 0x00, 0x02, 0x02]);
        p
    }

    /// How `build_file` encodes one page.
    #[derive(Clone, Copy)]
    pub enum PageEnc {
        /// Flag 0x0001, u32 size, raw LZ4 block (as the Encoder writes).
        Block,
        /// Legacy flags 0: one LZ4 frame, with the given options.
        Frame(FrameOpts),
    }

    #[derive(Clone, Copy, Default)]
    pub struct FrameOpts {
        /// Split the page into blocks of this many bytes (0: one block).
        pub block_len: usize,
        /// Store blocks uncompressed (bit 31 of the size word).
        pub stored: bool,
        /// Blocks may reference earlier blocks (FLG bit 5 clear).
        pub linked: bool,
        pub block_checksums: bool,
        pub content_size: bool,
        pub content_checksum: bool,
    }

    impl FrameOpts {
        /// The layout ltx v0.5.1 writes: FLG 0x64, BD 0x40, one block, content checksum.
        pub fn go() -> Self {
            FrameOpts {
                content_checksum: true,
                ..Default::default()
            }
        }
    }

    /// One LZ4 frame holding `page`.
    pub fn lz4_frame(page: &[u8], o: FrameOpts) -> Vec<u8> {
        use lz4_flex::block::{compress_into, compress_into_with_dict, get_maximum_output_size};
        let mut f = vec![0x04, 0x22, 0x4d, 0x18];
        let mut flg = 0x40u8;
        if !o.linked {
            flg |= 0x20;
        }
        if o.block_checksums {
            flg |= 0x10;
        }
        if o.content_size {
            flg |= 0x08;
        }
        if o.content_checksum {
            flg |= 0x04;
        }
        let mut desc = vec![flg, 0x40];
        if o.content_size {
            desc.extend_from_slice(&(page.len() as u64).to_le_bytes());
        }
        f.extend_from_slice(&desc);
        f.push((super::decoder::xxh32(&desc, 0) >> 8) as u8);
        let block_len = if o.block_len == 0 {
            page.len()
        } else {
            o.block_len
        };
        let mut start = 0;
        while start < page.len() {
            let end = (start + block_len).min(page.len());
            let chunk = &page[start..end];
            let (word, data) = if o.stored {
                (chunk.len() as u32 | 0x8000_0000, chunk.to_vec())
            } else {
                let mut out = vec![0u8; get_maximum_output_size(chunk.len())];
                let n = if o.linked {
                    compress_into_with_dict(chunk, &mut out, &page[..start]).unwrap()
                } else {
                    compress_into(chunk, &mut out).unwrap()
                };
                out.truncate(n);
                (n as u32, out)
            };
            f.extend_from_slice(&word.to_le_bytes());
            f.extend_from_slice(&data);
            if o.block_checksums {
                f.extend_from_slice(&super::decoder::xxh32(&data, 0).to_le_bytes());
            }
            start = end;
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        if o.content_checksum {
            f.extend_from_slice(&super::decoder::xxh32(page, 0).to_le_bytes());
        }
        f
    }

    /// Builds a complete LTX file from already-ordered pages, computing index and checksum the
    /// way §1.4–§1.6 describe. No validation, so tests can also build invalid files.
    pub fn build_file(h: &Header, pages: &[(u32, PageEnc, Vec<u8>)]) -> Vec<u8> {
        let mut out = h.to_bytes().to_vec();
        let mut crc = CRC64.digest();
        crc.update(&out);
        let mut index = vec![];
        for (pgno, enc, data) in pages {
            let off = out.len();
            out.extend_from_slice(&pgno.to_be_bytes());
            match enc {
                PageEnc::Block => {
                    out.extend_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
                    let mut buf = vec![0u8; lz4_flex::block::get_maximum_output_size(data.len())];
                    let n = lz4_flex::block::compress_into(data, &mut buf).unwrap();
                    out.extend_from_slice(&(n as u32).to_be_bytes());
                    crc.update(&out[off..]);
                    out.extend_from_slice(&buf[..n]);
                }
                PageEnc::Frame(o) => {
                    out.extend_from_slice(&[0, 0]);
                    crc.update(&out[off..]);
                    out.extend_from_slice(&lz4_frame(data, *o));
                }
            }
            crc.update(data);
            append_uvarint(&mut index, u64::from(*pgno));
            append_uvarint(&mut index, off as u64);
            append_uvarint(&mut index, (out.len() - off) as u64);
        }
        index.push(0);
        let index_len = index.len() as u64;
        index.extend_from_slice(&index_len.to_be_bytes());
        let mut tail = vec![0u8; PAGE_HEADER_SIZE];
        tail.extend_from_slice(&index);
        tail.extend_from_slice(&0u64.to_be_bytes()); // post-apply checksum
        crc.update(&tail);
        out.extend_from_slice(&tail);
        out.extend_from_slice(&(crc.finalize() | CHECKSUM_FLAG).to_be_bytes());
        out
    }
}
