//! LTX compaction check: 1 to 4 files built from the input (one page size; TXID ranges that
//! usually chain, sometimes overlap, leave a gap or step back; page sets and commits that grow
//! and shrink), compacted into one. The result must be what the compactor's module header
//! promises, computed here independently: an error exactly when the TXIDs do not chain (or a
//! snapshot's merged pages do not cover 1..=commit); otherwise a file that decodes to, for every
//! pgno up to the last input's commit, the page of the latest input holding it, with min TXID of
//! the first input and commit, max TXID and timestamp of the last.

use std::collections::BTreeMap;

use crate::input::Input;
use crate::ltx::{compact, lock_page, Decoder, Encoder, Header, HEADER_FLAG_NO_CHECKSUM};

struct File {
    header: Header,
    pages: Vec<(u32, Vec<u8>)>,
    bytes: Vec<u8>,
}

fn build(input: &mut Input, page_size: u32, min_txid: u64, max_txid: u64) -> File {
    let lock = lock_page(page_size);
    let snapshot = min_txid == 1;
    let mut pages = Vec::new();
    let mut pgno = 0u32;
    let n = input.u8() % 12;
    for _ in 0..n {
        let step = if snapshot {
            1
        } else {
            u32::from(input.u8() % 4) + 1
        };
        pgno += step;
        if pgno == lock {
            pgno += 1;
        }
        // Small pages keep the merge cheap; a tag byte tells the inputs' versions apart.
        let mut page = input.fill(page_size as usize);
        page[0] = min_txid as u8;
        pages.push((pgno, page));
    }
    let commit = if snapshot {
        pgno
    } else {
        // often above the last page written (the database grew elsewhere or shrank below it)
        match input.u8() % 4 {
            0 => pgno.saturating_sub(u32::from(input.u8() % 4)),
            _ => pgno + u32::from(input.u8() % 8),
        }
    };
    let header = Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid,
        max_txid,
        timestamp_ms: i64::from(input.u32()),
        wal_offset: 32,
        wal_size: 4096,
        wal_salt1: 1,
        wal_salt2: 2,
        ..Header::default()
    };
    // A non-snapshot may not hold pages above its own commit (the encoder refuses them).
    pages.retain(|(p, _)| *p <= commit);
    let mut enc = Encoder::new(Vec::new(), header).expect("encoder refuses a valid header");
    for (p, page) in &pages {
        enc.write_page(*p, page)
            .expect("encoder refuses a valid page");
    }
    let (bytes, _) = enc.finish().expect("encoder refuses to finish");
    File {
        header,
        pages,
        bytes,
    }
}

pub fn merge(data: &[u8]) {
    let mut input = Input::new(data);
    let page_size = 512u32 << (input.u8() % 4);
    let count = 1 + usize::from(input.u8() % 4);
    let mut files = Vec::with_capacity(count);
    let mut max = 0u64;
    for i in 0..count {
        // min TXID: usually right after the previous file; sometimes an overlap, a gap, a
        // step back. The first file is a snapshot (TXID 1) half of the time.
        let min = match (i, input.u8() % 8) {
            (0, k) if k < 4 => 1,
            (0, k) => 2 + u64::from(k),
            (_, 0) => max.saturating_sub(u64::from(input.u8() % 3)).max(1),
            (_, 1) => max + 2 + u64::from(input.u8() % 3),
            _ => max + 1,
        };
        let len = u64::from(input.u8() % 3);
        let file_max = match input.u8() % 8 {
            0 => max.max(min), // may not exceed the previous file's max: a step back
            _ => min + len,
        };
        files.push(build(&mut input, page_size, min, file_max));
        max = file_max;
    }

    let chains = files.windows(2).all(|w| {
        let (p, n) = (&w[0].header, &w[1].header);
        n.min_txid <= p.max_txid + 1 && n.max_txid > p.max_txid
    });
    let (first, last) = (&files[0].header, &files[files.len() - 1].header);
    let mut want: BTreeMap<u32, &[u8]> = BTreeMap::new();
    for f in &files {
        for (p, page) in &f.pages {
            want.insert(*p, page);
        }
    }
    want.retain(|p, _| *p <= last.commit);
    let lock = lock_page(page_size);
    let complete = want
        .keys()
        .copied()
        .eq((1..=last.commit).filter(|&p| p != lock));
    let ok_expected = chains && (first.min_txid != 1 || complete);

    let decoders = files
        .iter()
        .map(|f| Decoder::new(f.bytes.as_slice()).expect("valid input does not decode"))
        .collect();
    let result = compact(decoders, Vec::new());
    let (bytes, header, trailer) = match (result, ok_expected) {
        (Ok(r), true) => r,
        (Err(_), false) => return,
        (Ok(_), false) => panic!("compaction accepted inputs that do not chain or cover"),
        (Err(e), true) => panic!("compaction of valid inputs failed: {e}"),
    };
    assert_eq!(
        (
            header.min_txid,
            header.max_txid,
            header.commit,
            header.timestamp_ms
        ),
        (
            first.min_txid,
            last.max_txid,
            last.commit,
            last.timestamp_ms
        ),
        "output header"
    );
    assert_eq!(header.page_size, page_size);
    let mut dec = Decoder::new(bytes.as_slice()).expect("compacted file does not decode");
    assert_eq!(*dec.header(), header);
    let mut buf = vec![0u8; page_size as usize];
    let mut got = Vec::new();
    while let Some(p) = dec
        .next_page(&mut buf)
        .expect("compacted page does not decode")
    {
        got.push((p, buf.clone()));
    }
    assert_eq!(
        dec.finish().expect("compacted file does not verify"),
        trailer
    );
    let want: Vec<(u32, Vec<u8>)> = want.into_iter().map(|(p, b)| (p, b.to_vec())).collect();
    assert!(got == want, "compacted pages differ from the merge");
}
