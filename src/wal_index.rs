//! The wal-index header (the start of the `-shm` file), as SQLite's `wal.c` documents it: what
//! every connection of a WAL database agrees is the latest committed state.
//!
//! The replicator reads it through SQLite's own mapping (`host::DbFile::read_wal_index`) for two
//! facts the WAL file alone cannot give: `change`, a counter SQLite increments on every commit
//! and keeps across WAL restarts and truncations (so an unchanged counter proves that nothing was
//! committed meanwhile), and `backfilled`, how far checkpoints have copied the WAL into the
//! database file.
//!
//! Invariants:
//! - A header is returned only when both copies agree and the checksum over the first copy
//!   matches, exactly the test SQLite's readers apply; anything else (a writer mid-update, a
//!   wal-index not yet initialised) is `None`, and the caller treats it as "unknown".
//! - Salts are compared as the WAL header stores them (big-endian bytes), so they can be matched
//!   against `wal::WalHeader` and LTX positions.

use crate::wal::wal_checksum;

/// Size of one copy of the header (`sizeof(WalIndexHdr)`).
const HDR_BYTES: usize = 48;
/// Offset of `nBackfill` in the checkpoint information after the two copies.
const BACKFILL_AT: usize = 2 * HDR_BYTES;

/// The fields of the wal-index header the replicator uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalIndexHeader {
    /// `iChange`: incremented by every commit.
    pub change: u32,
    /// `mxFrame`: frames of the current WAL generation that are committed.
    pub max_frame: u32,
    /// `nPage`: database size in pages after the last commit.
    pub page_count: u32,
    /// The WAL generation's salts, as in the WAL header.
    pub salts: (u32, u32),
    /// `nBackfill`: frames of this generation already copied into the database file.
    pub backfilled: u32,
}

fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl WalIndexHeader {
    /// Parse the first 136 bytes of the wal-index, as read by `host::DbFile::read_wal_index`.
    pub fn parse(bytes: &[u8]) -> Option<WalIndexHeader> {
        if bytes.len() < BACKFILL_AT + 4 {
            return None;
        }
        let (first, second) = (&bytes[..HDR_BYTES], &bytes[HDR_BYTES..2 * HDR_BYTES]);
        let is_init = first[12] != 0;
        if first != second || !is_init {
            return None;
        }
        // The checksum covers everything before it, read in the host's byte order.
        let native_big_endian = cfg!(target_endian = "big");
        let sum = wal_checksum(native_big_endian, (0, 0), &first[..40]);
        if sum != (ne_u32(first, 40), ne_u32(first, 44)) {
            return None;
        }
        Some(WalIndexHeader {
            change: ne_u32(first, 8),
            max_frame: ne_u32(first, 16),
            page_count: ne_u32(first, 20),
            salts: (be_u32(first, 32), be_u32(first, 36)),
            backfilled: ne_u32(bytes, BACKFILL_AT),
        })
    }

    /// Every frame of this generation is in the database file.
    pub fn fully_backfilled(&self) -> bool {
        self.backfilled == self.max_frame
    }
}

/// Read the header, retrying while a writer is between its two copies (SQLite's readers retry
/// the same way). `read` returns the raw bytes, or None when there is no wal-index.
pub fn read_consistent(mut read: impl FnMut() -> Option<[u8; 136]>) -> Option<WalIndexHeader> {
    /// A writer updates the two copies in a few instructions; this many tries outlast it.
    const ATTEMPTS: usize = 100;
    for _ in 0..ATTEMPTS {
        if let Some(h) = WalIndexHeader::parse(&read()?) {
            return Some(h);
        }
        std::thread::yield_now();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as SQLite's walIndexWriteHdr lays it out (native order, checksum, two copies).
    fn build(change: u32, max_frame: u32, salts: (u32, u32), backfilled: u32) -> [u8; 136] {
        let mut h = [0u8; HDR_BYTES];
        h[0..4].copy_from_slice(&3_007_000u32.to_ne_bytes());
        h[8..12].copy_from_slice(&change.to_ne_bytes());
        h[12] = 1; // isInit
        h[14..16].copy_from_slice(&4096u16.to_ne_bytes());
        h[16..20].copy_from_slice(&max_frame.to_ne_bytes());
        h[20..24].copy_from_slice(&7u32.to_ne_bytes());
        h[32..36].copy_from_slice(&salts.0.to_be_bytes());
        h[36..40].copy_from_slice(&salts.1.to_be_bytes());
        let sum = wal_checksum(cfg!(target_endian = "big"), (0, 0), &h[..40]);
        h[40..44].copy_from_slice(&sum.0.to_ne_bytes());
        h[44..48].copy_from_slice(&sum.1.to_ne_bytes());
        let mut out = [0u8; 136];
        out[..48].copy_from_slice(&h);
        out[48..96].copy_from_slice(&h);
        out[96..100].copy_from_slice(&backfilled.to_ne_bytes());
        out
    }

    #[test]
    fn parses_what_sqlite_writes() {
        let h = WalIndexHeader::parse(&build(41, 10, (0xdead_beef, 5), 10)).unwrap();
        assert_eq!(
            h,
            WalIndexHeader {
                change: 41,
                max_frame: 10,
                page_count: 7,
                salts: (0xdead_beef, 5),
                backfilled: 10
            }
        );
        assert!(h.fully_backfilled());
    }

    #[test]
    fn refuses_torn_uninitialised_or_corrupt_headers() {
        let good = build(1, 2, (3, 4), 0);
        let mut torn = good;
        torn[48 + 8] ^= 1; // second copy differs
        assert_eq!(WalIndexHeader::parse(&torn), None);
        let mut uninit = build(1, 2, (3, 4), 0);
        uninit[12] = 0;
        uninit[60] = 0;
        assert_eq!(WalIndexHeader::parse(&uninit), None);
        let mut bad_sum = good;
        bad_sum[16] ^= 1;
        bad_sum[64] ^= 1; // both copies agree, checksum does not
        assert_eq!(WalIndexHeader::parse(&bad_sum), None);
        assert_eq!(WalIndexHeader::parse(&good[..50]), None);
    }

    #[test]
    fn retries_until_the_copies_agree() {
        let good = build(9, 0, (1, 1), 0);
        let mut torn = good;
        torn[8] ^= 0xff;
        let mut reads = vec![good, torn, torn];
        let h = read_consistent(|| reads.pop()).unwrap();
        assert_eq!(h.change, 9);
        assert_eq!(read_consistent(|| None), None);
    }
}
