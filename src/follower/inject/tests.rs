//! The wal-index and WAL layouts the injector writes, checked against the crate's independent
//! readers (`wal_index::WalIndexHeader::parse`, `wal::scan`) and against SQLite's lookup rule
//! (newest frame ≤ a reader's `mxFrame`) on an in-memory wal-index.

use std::collections::HashMap;

use super::*;
use crate::wal::{Resume, ScanOutcome};

/// A wal-index in memory: regions of 8192 words, created zeroed on first use.
#[derive(Default)]
struct MemIndex {
    regions: Vec<Vec<u32>>,
}

impl MemIndex {
    fn region(&mut self, i: usize) -> &mut Vec<u32> {
        while self.regions.len() <= i {
            self.regions.push(vec![0; 8192]);
        }
        &mut self.regions[i]
    }

    fn header_bytes(&mut self) -> [u8; 136] {
        let mut out = [0u8; 136];
        for i in 0..34 {
            out[4 * i..4 * i + 4].copy_from_slice(&self.region(0)[i].to_ne_bytes());
        }
        out
    }
}

impl WalIndexMem for MemIndex {
    fn load32(&mut self, region: usize, word: usize) -> Result<u32> {
        Ok(self.region(region)[word])
    }
    fn store32(&mut self, region: usize, word: usize, value: u32) -> Result<()> {
        self.region(region)[word] = value;
        Ok(())
    }
    fn load16(&mut self, region: usize, half: usize) -> Result<u16> {
        let w = self.region(region)[half / 2].to_ne_bytes();
        let i = (half % 2) * 2;
        Ok(u16::from_ne_bytes([w[i], w[i + 1]]))
    }
    fn store16(&mut self, region: usize, half: usize, value: u16) -> Result<()> {
        let r = self.region(region);
        let mut w = r[half / 2].to_ne_bytes();
        let i = (half % 2) * 2;
        w[i..i + 2].copy_from_slice(&value.to_ne_bytes());
        r[half / 2] = u32::from_ne_bytes(w);
        Ok(())
    }
    fn barrier(&mut self) {}
}

fn header(max_frame: u32, change: u32) -> IndexHeader {
    IndexHeader {
        version: 0,
        unused: 0,
        change,
        is_init: 0,
        big_end_cksum: 0,
        page_size_field: encode_page_size(4096),
        max_frame,
        n_page: 9,
        frame_cksum: (11, 12),
        salt: [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 5],
        cksum: (0, 0),
    }
}

#[test]
fn header_is_what_sqlite_readers_accept() {
    let mut mem = MemIndex::default();
    assert_eq!(read_header(&mut mem).unwrap(), None, "uninitialised");
    let written = write_header(&mut mem, header(17, 41)).unwrap();
    assert_eq!(read_header(&mut mem).unwrap(), Some(written));
    let parsed = crate::wal_index::WalIndexHeader::parse(&mem.header_bytes()).unwrap();
    assert_eq!(parsed.change, 41);
    assert_eq!(parsed.max_frame, 17);
    assert_eq!(parsed.page_count, 9);
    assert_eq!(parsed.salts, (0xdead_beef, 5));
    assert_eq!(written.salts(), (0xdead_beef, 5));
    assert_eq!(written.page_size(), 4096);
    // A torn update (copy 1 written, copy 0 not yet) is refused, as SQLite's readers refuse it.
    mem.store32(0, HDR_WORDS + 4, 18).unwrap();
    assert_eq!(read_header(&mut mem).unwrap(), None);
}

#[test]
fn page_size_encoding_round_trips() {
    for ps in [512u32, 1024, 4096, 8192, 32768, 65536] {
        let h = IndexHeader {
            page_size_field: encode_page_size(ps),
            ..header(0, 0)
        };
        assert_eq!(h.page_size(), ps);
    }
    assert_eq!(encode_page_size(65536), 1);
}

#[test]
fn region_arithmetic_matches_wal_c() {
    assert_eq!(frame_region(1), 0);
    assert_eq!(frame_region(4062), 0);
    assert_eq!(frame_region(4063), 1);
    assert_eq!(frame_region(4062 + 4096), 1);
    assert_eq!(frame_region(4062 + 4096 + 1), 2);
    assert_eq!(region_zero(1), 4062);
    assert_eq!(pgno_word(0, 1), 34);
    assert_eq!(pgno_word(0, 4062), 4095);
    assert_eq!(pgno_word(2, 1), 0);
}

/// Simulates commits of random pages across three regions and checks every lookup a reader at
/// any earlier `mxFrame` would make.
#[test]
fn lookups_find_the_newest_frame_at_every_snapshot() {
    let mut mem = MemIndex::default();
    let mut history: Vec<u32> = Vec::new(); // frame i+1 holds history[i]
    let mut max = 0u32;
    let mut seed = 7u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    while max < 9000 {
        let n = 1 + next() % 40;
        for i in 0..n {
            let pgno = 1 + next() % 700;
            index_frame(&mut mem, max + 1 + i, pgno, max).unwrap();
            history.push(pgno);
        }
        max += n;
    }
    for snapshot in [1u32, 100, 4062, 4063, 5000, 8158, 8159, max] {
        let mut newest: HashMap<u32, u32> = HashMap::new();
        for (i, p) in history[..snapshot as usize].iter().enumerate() {
            newest.insert(*p, i as u32 + 1);
        }
        for pgno in 1..=701 {
            assert_eq!(
                find_frame(&mut mem, pgno, snapshot).unwrap(),
                newest.get(&pgno).copied(),
                "page {pgno} at mxFrame {snapshot}"
            );
        }
    }
}

#[test]
fn a_new_generation_and_a_dead_writers_leftovers_are_forgotten() {
    let mut mem = MemIndex::default();
    for f in 1..=20 {
        index_frame(&mut mem, f, 100 + f, f - 1).unwrap();
    }
    // A writer died after indexing frames 11..=20 without publishing: the next commit after
    // mxFrame 10 must not leave them findable.
    index_frame(&mut mem, 11, 500, 10).unwrap();
    assert_eq!(find_frame(&mut mem, 500, 11).unwrap(), Some(11));
    for f in 12..=20 {
        assert_eq!(
            find_frame(&mut mem, 100 + f, 20).unwrap(),
            None,
            "stale frame {f}"
        );
    }
    assert_eq!(find_frame(&mut mem, 105, 11).unwrap(), Some(5));
    // A restarted WAL starts at frame 1 again: the old generation's entries are gone.
    index_frame(&mut mem, 1, 900, 0).unwrap();
    assert_eq!(find_frame(&mut mem, 105, 11).unwrap(), None);
    assert_eq!(find_frame(&mut mem, 900, 1).unwrap(), Some(1));
}

/// Frames written the injector's way read back through the crate's WAL scanner (which applies
/// SQLite's recovery rules: salts, chained checksums, commit frames).
#[test]
fn frames_are_a_valid_wal_commit() {
    let ps = 4096u32;
    let (hdr, mut sum) = encode_wal_header(ps, 3, (0x1234_5678, 0x9abc_def0));
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&hdr[16..24]);
    let big_end = cfg!(target_endian = "big");
    let mut wal = hdr.to_vec();
    let pages: Vec<(u32, Vec<u8>)> = (1..=5u32)
        .map(|p| (p * 2, vec![p as u8; ps as usize]))
        .collect();
    for (i, (pgno, data)) in pages.iter().enumerate() {
        let commit = if i == pages.len() - 1 { 12 } else { 0 };
        sum = encode_frame(&mut wal, big_end, sum, &salt, *pgno, commit, data);
    }
    let parsed = WalHeader::parse(&wal).unwrap().unwrap();
    assert_eq!(parsed.salts(), (0x1234_5678, 0x9abc_def0));
    assert_eq!(parsed.checkpoint_seq, 3);
    let ScanOutcome::Segment(seg) = wal::scan(&wal, Resume::FromStart, None).unwrap() else {
        panic!("no segment");
    };
    assert_eq!(seg.commits, 1);
    assert_eq!(seg.commit, 12);
    assert_eq!(seg.end, wal.len() as u64);
    assert_eq!(seg.last_frame_checksum, sum);
    assert_eq!(
        seg.pages.keys().copied().collect::<Vec<_>>(),
        vec![2, 4, 6, 8, 10]
    );
    // A second commit continues the chain from the first one's checksum.
    let end = wal.len();
    encode_frame(
        &mut wal,
        big_end,
        sum,
        &salt,
        3,
        12,
        &vec![9u8; ps as usize],
    );
    let ScanOutcome::Segment(seg) = wal::scan(
        &wal,
        Resume::At {
            offset: end as u64,
            salt1: 0x1234_5678,
            salt2: 0x9abc_def0,
        },
        None,
    )
    .unwrap() else {
        panic!("no segment");
    };
    assert_eq!(seg.commits, 1);
    assert_eq!(seg.pages.keys().copied().collect::<Vec<_>>(), vec![3]);
}
