//! LTX checks. `decode`: any bytes as a replica object. The streaming decoder, fed whole or in
//! short reads, and `verify` must agree; an accepted file must obey the format rules the decoder
//! promises (`ltx` module header), and re-encoding its pages must decode to the same file
//! contents. `roundtrip`: a header and pages built from the input, encoded, must decode to
//! exactly what was written, with the trailer the encoder reported.

use std::io::{self, Read};

use crate::input::Input;
use crate::ltx::{lock_page, verify, Decoder, Encoder, Header, Trailer, HEADER_FLAG_NO_CHECKSUM};

/// What a successful decode yields: the header, every page in file order, the trailer.
type Decoded = (Header, Vec<(u32, Vec<u8>)>, Trailer);

/// Pages decoded before the decoder must have failed: each frame needs at least a 6-byte page
/// header and 1 byte of payload, so an input can hold no more than this many (bounds memory).
fn max_pages(len: usize) -> usize {
    len / 7 + 1
}

fn decode_all<R: Read>(r: R, max: usize) -> Result<Decoded, String> {
    let mut dec = Decoder::new(r).map_err(|e| e.to_string())?;
    let header = *dec.header();
    let mut buf = vec![0u8; header.page_size as usize];
    let mut pages = Vec::new();
    while let Some(pgno) = dec.next_page(&mut buf).map_err(|e| e.to_string())? {
        pages.push((pgno, buf.clone()));
        assert!(
            pages.len() <= max,
            "more pages decoded than the input can hold"
        );
    }
    let trailer = dec.finish().map_err(|e| e.to_string())?;
    Ok((header, pages, trailer))
}

/// A reader that hands out the input in short, varying pieces (as a network body does).
struct Trickle<'a> {
    data: &'a [u8],
    state: u32,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let step = 1 + (self.state >> 16) as usize % 97;
        let n = step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The rules of an accepted file (`ltx` module header) that its decoded contents can show.
fn assert_well_formed((h, pages, t): &Decoded) {
    h.validate().expect("accepted header fails validate()");
    let lock = lock_page(h.page_size);
    let mut prev = 0u32;
    for (pgno, page) in pages {
        assert!(
            *pgno > prev,
            "pgnos not strictly ascending: {pgno} after {prev}"
        );
        assert!(*pgno <= h.commit, "page {pgno} beyond commit {}", h.commit);
        assert_ne!(*pgno, lock, "the lock page was accepted");
        assert_eq!(page.len(), h.page_size as usize);
        prev = *pgno;
    }
    if h.is_snapshot() {
        let want: Vec<u32> = (1..=h.commit).filter(|&p| p != lock).collect();
        let got: Vec<u32> = pages.iter().map(|(p, _)| *p).collect();
        assert_eq!(got, want, "snapshot accepted without every page 1..=commit");
    }
    assert_ne!(
        t.file_checksum & (1 << 63),
        0,
        "file checksum without bit 63"
    );
}

fn encode(h: &Header, pages: &[(u32, Vec<u8>)]) -> (Vec<u8>, Trailer) {
    let mut enc = Encoder::new(Vec::new(), *h).expect("encoder refuses a valid header");
    for (pgno, page) in pages {
        enc.write_page(*pgno, page)
            .unwrap_or_else(|e| panic!("encoder refuses page {pgno} of a valid file: {e}"));
    }
    enc.finish()
        .expect("encoder refuses to finish a valid file")
}

pub fn decode(data: &[u8]) {
    let max = max_pages(data.len());
    let whole = decode_all(data, max);
    let trickled = decode_all(
        Trickle {
            data,
            state: data.len() as u32,
        },
        max,
    );
    match (&whole, &trickled) {
        (Ok(a), Ok(b)) => assert!(a == b, "short reads decode to something else"),
        (Err(a), Err(b)) => assert_eq!(a, b, "short reads fail differently"),
        (a, b) => panic!(
            "short reads change the outcome: whole {:?}, short reads {:?}",
            a.as_ref().err(),
            b.as_ref().err()
        ),
    }
    let mut verified = Vec::new();
    let v = verify(data, |pgno, page| {
        if verified.len() < max {
            verified.push((pgno, page.to_vec()))
        }
    });
    assert_eq!(
        v.is_ok(),
        whole.is_ok(),
        "verify() and the decoder disagree"
    );

    let Ok(file) = whole else { return };
    assert_well_formed(&file);
    let (h, pages, trailer) = &file;
    assert_eq!(&verified, pages);
    if h.flags & HEADER_FLAG_NO_CHECKSUM == 0 {
        return; // the encoder writes NoChecksum files only
    }
    assert_eq!(
        trailer.post_apply_checksum, 0,
        "NoChecksum file with a post-apply checksum"
    );
    let (bytes, _) = encode(h, pages);
    let again = decode_all(bytes.as_slice(), usize::MAX).expect("re-encoded file does not decode");
    assert!(again.0 == *h && again.1 == *pages, "decode(encode(x)) != x");
}

pub fn roundtrip(data: &[u8]) {
    let mut input = Input::new(data);
    let page_size = 512u32 << (input.u8() % 8);
    let lock = lock_page(page_size);
    let snapshot = input.u8() & 1 == 1;
    let n = usize::from(input.u8() % 16);
    let mut pages: Vec<(u32, Vec<u8>)> = Vec::with_capacity(n);
    let mut pgno = 0u32;
    for _ in 0..n {
        let step = if snapshot {
            1
        } else {
            // mostly small steps, sometimes a jump (towards and past the lock page)
            match input.u8() {
                0 => input.u32().max(1),
                s => u32::from(s % 8) + 1,
            }
        };
        let Some(mut next) = pgno.checked_add(step) else {
            break;
        };
        if next == lock {
            let Some(after) = next.checked_add(1) else {
                break;
            };
            next = after;
        }
        pgno = next;
        pages.push((pgno, input.fill(page_size as usize)));
    }
    let commit = if snapshot {
        pgno
    } else {
        pgno.saturating_add(u32::from(input.u8() % 4))
    };
    let min_txid = if snapshot { 1 } else { input.u64() | 2 };
    let wal_offset = i64::from(input.u32());
    let header = Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid,
        max_txid: min_txid.saturating_add(u64::from(input.u16())),
        timestamp_ms: input.u64() as i64,
        pre_apply_checksum: 0,
        wal_offset,
        wal_size: if wal_offset == 0 {
            0
        } else {
            i64::from(input.u32())
        },
        wal_salt1: if wal_offset == 0 { 0 } else { input.u32() },
        wal_salt2: if wal_offset == 0 { 0 } else { input.u32() },
        node_id: input.u64(),
    };
    if commit == lock && snapshot {
        return; // the last page would be the lock page; covered by the encoder's unit tests
    }
    let (bytes, trailer) = encode(&header, &pages);
    let got = decode_all(bytes.as_slice(), usize::MAX)
        .unwrap_or_else(|e| panic!("encoded file does not decode: {e}"));
    assert!(got.0 == header, "header changed in the round trip");
    assert!(got.1 == pages, "pages changed in the round trip");
    assert_eq!(
        got.2, trailer,
        "trailer read back differs from the one written"
    );
    assert_well_formed(&got);
}
