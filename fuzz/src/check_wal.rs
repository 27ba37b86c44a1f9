//! WAL checks. `scan_image`: any bytes as a `-wal` file. `scan_generated`: a WAL written the way
//! SQLite writes one (header, cumulative checksums, commits, restarts that overwrite from offset
//! 32 and leave stale frames behind), then damaged (a byte changed, a tail cut off) as the input
//! says; this reaches deep states that random bytes almost never do (valid checksum chains,
//! WALs of more than one read chunk).
//!
//! For both, the scanner must agree with a plain reference model of the WAL rules written from
//! the `wal` module header (not from its code): valid WAL ends at the first short frame, other
//! salts, page number 0 or checksum mismatch; only committed transactions count. It must give the
//! same answer through a file that returns short reads; scanning in steps (`max_bytes`, resuming
//! at each returned end) must reach the same end, commit and checksum; resuming at any commit
//! boundary must find the rest.

use std::collections::BTreeMap;
use std::io;

use crate::input::Input;
use crate::wal::{
    self, distinct_salts, read_frame_page, scan, ReadAt, Resume, ScanOutcome, Segment,
    FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WAL_MAGIC_BE, WAL_MAGIC_LE, WAL_VERSION,
};

// ---------------------------------------------------------------- reference model

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// SQLite's WAL checksum (walChecksumBytes), written out again.
fn checksum(big_endian: bool, mut s: (u32, u32), data: &[u8]) -> (u32, u32) {
    for w in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        s.0 = s.0.wrapping_add(word(&w[..4])).wrapping_add(s.1);
        s.1 = s.1.wrapping_add(word(&w[4..])).wrapping_add(s.0);
    }
    s
}

#[derive(Debug, PartialEq, Eq)]
struct Model {
    salts: (u32, u32),
    page_size: u32,
    end: u64,
    commit: u32,
    pages: BTreeMap<u32, u64>,
    last_checksum: (u32, u32),
    commits: u32,
    /// Offsets just past every commit frame, in order.
    boundaries: Vec<u64>,
}

/// `Ok(None)`: no WAL. `Err`: a checksummed header the scanner must refuse.
fn model(d: &[u8]) -> Result<Option<Model>, ()> {
    if d.len() < 32 {
        return Ok(None);
    }
    let magic = be32(d, 0);
    if magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE {
        return Ok(None);
    }
    let be = magic == WAL_MAGIC_BE;
    let mut ck = checksum(be, (0, 0), &d[..24]);
    if ck != (be32(d, 24), be32(d, 28)) {
        return Ok(None);
    }
    let page_size = be32(d, 8);
    if be32(d, 4) != WAL_VERSION
        || !(512..=65536).contains(&page_size)
        || !page_size.is_power_of_two()
    {
        return Err(());
    }
    let salts = (be32(d, 16), be32(d, 20));
    let fsz = 24 + page_size as usize;
    let mut m = Model {
        salts,
        page_size,
        end: 32,
        commit: 0,
        pages: BTreeMap::new(),
        last_checksum: ck,
        commits: 0,
        boundaries: Vec::new(),
    };
    let mut tx = Vec::new();
    let mut off = 32usize;
    while off + fsz <= d.len() {
        let f = &d[off..off + fsz];
        if (be32(f, 8), be32(f, 12)) != salts || be32(f, 0) == 0 {
            break;
        }
        ck = checksum(be, ck, &f[..8]);
        ck = checksum(be, ck, &f[24..]);
        if ck != (be32(f, 16), be32(f, 20)) {
            break;
        }
        tx.push((be32(f, 0), off as u64));
        off += fsz;
        if be32(f, 4) != 0 {
            m.pages.extend(tx.drain(..));
            m.commit = be32(f, 4);
            m.end = off as u64;
            m.last_checksum = ck;
            m.commits += 1;
            m.boundaries.push(off as u64);
        }
    }
    let commit = m.commit;
    m.pages.retain(|&p, _| p <= commit);
    Ok(Some(m))
}

// ---------------------------------------------------------------- the scanner against it

/// A file that returns at most a few bytes per read (positioned reads may be short).
struct ShortReads<'a>(&'a [u8]);

impl ReadAt for ShortReads<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let step = 1 + (offset as usize * 7 + buf.len()) % 61;
        let n = buf.len().min(step);
        ReadAt::read_at(self.0, &mut buf[..n], offset)
    }
    fn len(&self) -> io::Result<u64> {
        ReadAt::len(self.0)
    }
}

fn segment(o: ScanOutcome) -> Segment {
    match o {
        ScanOutcome::Segment(s) => s,
        other => panic!("expected a segment, got {other:?}"),
    }
}

fn check_image(d: &[u8]) {
    let want = model(d);
    let got = scan(d, Resume::FromStart, None);
    let m = match (want, got) {
        (Ok(None), Ok(ScanOutcome::NoWal)) => return,
        (Err(()), Err(_)) => return,
        (Ok(Some(m)), Ok(ScanOutcome::Segment(s))) => {
            assert_eq!(s.start, WAL_HEADER_SIZE);
            assert_eq!(s.end, m.end, "end");
            assert_eq!(s.commit, m.commit, "commit");
            assert_eq!(s.pages, m.pages, "pages");
            assert_eq!(
                s.last_frame_checksum, m.last_checksum,
                "last frame checksum"
            );
            assert_eq!(s.commits, m.commits, "commits");
            assert_eq!(s.size(), s.end - s.start);
            assert_eq!(s.is_empty(), m.commits == 0);
            let mut page = vec![0u8; m.page_size as usize];
            for fr in s.frame_refs() {
                read_frame_page(d, fr.offset, &mut page).expect("a committed frame is unreadable");
            }
            m
        }
        (want, got) => panic!("scanner says {got:?}, the WAL rules say {want:?}"),
    };

    // Same answer through short reads.
    let short = segment(scan(&ShortReads(d), Resume::FromStart, None).expect("short reads fail"));
    assert_eq!(
        (
            short.end,
            short.commit,
            &short.pages,
            short.last_frame_checksum
        ),
        (m.end, m.commit, &m.pages, m.last_checksum),
        "short reads scan differently"
    );

    // Stepwise: one transaction per call (max_bytes 0; for long WALs a sixteenth of it per
    // call), resuming where the last call ended.
    let (s1, s2) = m.salts;
    let step = if m.boundaries.len() <= 32 {
        0
    } else {
        (m.end - WAL_HEADER_SIZE) / 16
    };
    let mut at = WAL_HEADER_SIZE;
    let mut ends = Vec::new();
    let mut merged: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last = None;
    loop {
        let resume = Resume::At {
            offset: at,
            salt1: s1,
            salt2: s2,
        };
        let seg = segment(scan(d, resume, Some(step)).expect("resume failed"));
        assert_eq!(seg.start, at);
        if seg.is_empty() {
            assert_eq!(seg.end, at);
            break;
        }
        if step == 0 {
            assert_eq!(
                seg.commits, 1,
                "max_bytes 0 must read exactly one transaction"
            );
        } else {
            assert!(
                seg.size() >= step || seg.end == m.end,
                "stopped before max_bytes"
            );
        }
        merged.retain(|&p, _| p <= seg.commit);
        merged.extend(seg.pages.iter());
        ends.push(seg.end);
        at = seg.end;
        last = Some((seg.commit, seg.last_frame_checksum));
        assert!(
            ends.len() <= m.boundaries.len(),
            "more transactions stepwise than in one scan"
        );
    }
    assert!(
        ends.iter().all(|e| m.boundaries.contains(e)),
        "stepwise scan stops off a commit boundary"
    );
    assert_eq!(
        ends.last().copied().unwrap_or(WAL_HEADER_SIZE),
        m.end,
        "stepwise scan ends elsewhere"
    );
    if step == 0 {
        assert_eq!(ends, m.boundaries);
    }
    if let Some(last) = last {
        assert_eq!(last, (m.commit, m.last_checksum));
    }
    // Pages merged transaction by transaction: a page the whole scan keeps can only be missing
    // when an earlier commit shrank the database below it (then its later growth is new pages).
    for (p, off) in &merged {
        assert_eq!(
            m.pages.get(p),
            Some(off),
            "stepwise scan has another version of page {p}"
        );
    }

    // Resuming at any commit boundary finds exactly the rest.
    for &b in m.boundaries.iter().rev().take(8) {
        let resume = Resume::At {
            offset: b,
            salt1: s1,
            salt2: s2,
        };
        let seg = segment(scan(d, resume, None).expect("resume failed"));
        assert_eq!((seg.start, seg.end), (b, m.end), "resume at {b}");
        if seg.commits > 0 {
            assert_eq!(
                (seg.commit, seg.last_frame_checksum),
                (m.commit, m.last_checksum)
            );
        }
    }
    // Resuming with other salts is a mismatch, never frames.
    if m.end > WAL_HEADER_SIZE {
        let resume = Resume::At {
            offset: m.end,
            salt1: s1 ^ 1,
            salt2: s2,
        };
        assert!(matches!(
            scan(d, resume, None),
            Ok(ScanOutcome::PrevFrameMismatch { .. })
        ));
    }

    let salts = distinct_salts(d, m.page_size, m.end).expect("distinct_salts failed");
    if m.end > WAL_HEADER_SIZE {
        assert_eq!(salts.first(), Some(&m.salts));
    }
}

/// Resume offsets from the input (anything, aligned or not) must never panic.
fn check_resume_anywhere(d: &[u8], input: &mut Input) {
    let offset = match input.u8() % 3 {
        0 => input.u64(),
        1 => u64::from(input.u16()),
        _ => input.u64() % (d.len() as u64 + 1),
    };
    let resume = Resume::At {
        offset,
        salt1: input.u32(),
        salt2: input.u32(),
    };
    let _ = scan(d, resume, Some(input.u64() % (d.len() as u64 + 1)));
    let _ = wal::read_frame_header(d, offset);
    let _ = distinct_salts(d, 512 << (input.u8() % 8), offset);
}

pub fn scan_image(data: &[u8]) {
    check_image(data);
    let tail = data.get(data.len().saturating_sub(16)..).unwrap_or(&[]);
    check_resume_anywhere(data, &mut Input::new(tail));
}

// ---------------------------------------------------------------- generated WALs

struct Writer {
    buf: Vec<u8>,
    page_size: u32,
    be: bool,
    salts: (u32, u32),
    ck: (u32, u32),
    pos: usize,
}

impl Writer {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        if self.buf.len() < at + bytes.len() {
            self.buf.resize(at + bytes.len(), 0);
        }
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn header(&mut self, seq: u32) {
        let magic = if self.be { WAL_MAGIC_BE } else { WAL_MAGIC_LE };
        let mut h = Vec::with_capacity(32);
        for v in [
            magic,
            WAL_VERSION,
            self.page_size,
            seq,
            self.salts.0,
            self.salts.1,
        ] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        self.ck = checksum(self.be, (0, 0), &h);
        h.extend_from_slice(&self.ck.0.to_be_bytes());
        h.extend_from_slice(&self.ck.1.to_be_bytes());
        self.put(0, &h);
        self.pos = 32;
    }

    fn frame(&mut self, pgno: u32, commit: u32, page: &[u8]) {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&pgno.to_be_bytes());
        h.extend_from_slice(&commit.to_be_bytes());
        self.ck = checksum(self.be, self.ck, &h);
        self.ck = checksum(self.be, self.ck, page);
        for v in [self.salts.0, self.salts.1, self.ck.0, self.ck.1] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        let at = self.pos;
        self.put(at, &h);
        self.put(at + FRAME_HEADER_SIZE as usize, page);
        self.pos += FRAME_HEADER_SIZE as usize + page.len();
    }
}

/// Largest WAL built: a bit more than two of the scanner's 1 MiB read chunks.
const MAX_GENERATED: usize = 2 << 20 | 300_000;

pub fn scan_generated(data: &[u8]) {
    let mut input = Input::new(data);
    let page_size = 512u32 << (input.u8() % 8);
    let mut w = Writer {
        buf: Vec::new(),
        page_size,
        be: input.u8() & 1 == 1,
        salts: (input.u32(), input.u32()),
        ck: (0, 0),
        pos: 0,
    };
    let mut seq = 0;
    w.header(seq);
    let mut db_pages = 1u32;
    let fsz = FRAME_HEADER_SIZE as usize + page_size as usize;
    while !input.is_empty() && w.pos + fsz <= MAX_GENERATED {
        match input.u8() % 16 {
            // restart: new salts, frames from 32 again over the old ones
            0 => {
                seq += 1;
                w.salts = (w.salts.0.wrapping_add(1), input.u32());
                w.header(seq);
            }
            // a run of identical-pattern frames (cheap way to a multi-MiB WAL)
            1 => {
                let n = usize::from(input.u8());
                let page = input.fill(page_size as usize);
                for i in 0..n {
                    if w.pos + fsz > MAX_GENERATED {
                        break;
                    }
                    let pgno = 1 + (i as u32 % db_pages.max(1));
                    let commit = if i + 1 == n { db_pages } else { 0 };
                    w.frame(pgno, commit, &page);
                }
            }
            // one frame: pgno and commit from the input (0 is possible: SQLite never writes it)
            op => {
                let pgno = match op {
                    2 => input.u32(),
                    _ => 1 + u32::from(input.u8()) % db_pages.saturating_add(2),
                };
                db_pages = db_pages.max(pgno);
                let commit = match input.u8() % 4 {
                    0 => 0,
                    1 => u32::from(input.u8()),
                    _ => db_pages,
                };
                if commit != 0 {
                    db_pages = commit.max(1);
                }
                let page = input.fill(page_size as usize);
                w.frame(pgno, commit, &page);
            }
        }
    }
    let mut d = w.buf;
    // damage, as the tail of the input says (after the ops it is all zeros: none)
    let tail = data.get(data.len().saturating_sub(8)..).unwrap_or(&[]);
    let mut t = Input::new(tail);
    match t.u8() % 4 {
        1 if !d.is_empty() => {
            let at = t.u32() as usize % d.len();
            d[at] ^= t.u8() | 1;
        }
        2 => d.truncate(t.u32() as usize % (d.len() + 1)),
        _ => {}
    }
    check_image(&d);
}
