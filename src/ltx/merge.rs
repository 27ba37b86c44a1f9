//! Compaction: merging consecutive LTX files into one (spec §1.11, Go `ltx.Compactor`).
//!
//! Inputs are decoders positioned after their headers, ordered by TXID. Each must follow the one
//! before it by [`check_follows`] (the chain rules restore applies too): one page size,
//! `min_txid <= prev.max_txid + 1` and `max_txid > prev.max_txid` (overlap allowed, gaps not),
//! and chained database checksums where the files track them. The pages are merged as a streaming
//! k-way merge by pgno: for each pgno the page of the *latest* input that holds it wins, and
//! pages above the last input's `commit` are dropped (the database shrank). Every input is read
//! to its end and its file checksum verified before the output is finished, so a corrupt input
//! fails the compaction instead of silently contributing pages; the caller must discard the
//! output on error. Memory: one page buffer per input plus each decoder's own buffers.
//! The output header is NoChecksum, page size of the inputs, commit/max TXID/timestamp of the
//! last input, min TXID of the first, WAL fields and node ID 0. When min TXID is 1 the output is
//! a snapshot and the encoder insists that the merged pages cover 1..=commit.

use std::io::{Read, Write};

use super::{check_follows, Decoder, Encoder, Header, LtxError, Trailer, HEADER_FLAG_NO_CHECKSUM};

/// One input of the merge and its look-ahead page.
struct Input<R: Read> {
    dec: Decoder<R>,
    /// Pgno of the page waiting in `buf`; `None` once the input's page block is exhausted.
    pending: Option<u32>,
    buf: Vec<u8>,
    index: usize,
}

impl<R: Read> Input<R> {
    /// Reads the input's next page into `buf`.
    fn advance(&mut self) -> Result<(), LtxError> {
        self.pending = self
            .dec
            .next_page(&mut self.buf)
            .map_err(|e| wrap(self.index, self.dec.header(), e))?;
        Ok(())
    }
}

/// Tags an input's error with the input's position and TXID range.
fn wrap(index: usize, h: &Header, e: LtxError) -> LtxError {
    LtxError::CompactInput {
        index,
        min_txid: h.min_txid,
        max_txid: h.max_txid,
        source: Box::new(e),
    }
}

/// Merges `inputs` into one file written to `out`; returns the writer, the output header and
/// its trailer. See the module documentation for the rules.
pub fn compact<R: Read, W: Write>(
    inputs: Vec<Decoder<R>>,
    out: W,
) -> Result<(W, Header, Trailer), LtxError> {
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
        return Err(LtxError::InvalidInput(
            "compact: at least one input is required".into(),
        ));
    };
    let (first, last) = (*first.header(), *last.header());
    for pair in inputs.windows(2) {
        check_follows(pair[0].header(), None, pair[1].header())?;
    }

    let header = Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size: first.page_size,
        commit: last.commit,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        ..Header::default()
    };
    let mut enc = Encoder::new(out, header)?;

    let page_size = header.page_size as usize;
    let mut inputs: Vec<Input<R>> = inputs
        .into_iter()
        .enumerate()
        .map(|(index, dec)| Input {
            dec,
            pending: None,
            buf: vec![0; page_size],
            index,
        })
        .collect();
    for input in &mut inputs {
        input.advance()?;
    }

    // Each round emits the smallest pending pgno and moves every input holding it forward.
    while let Some(pgno) = inputs.iter().filter_map(|i| i.pending).min() {
        if pgno <= header.commit {
            // Later inputs hold newer versions of the page, so search from the back.
            if let Some(winner) = inputs.iter().rev().find(|i| i.pending == Some(pgno)) {
                enc.write_page(pgno, &winner.buf)?;
            }
        }
        for input in inputs.iter_mut().filter(|i| i.pending == Some(pgno)) {
            input.advance()?;
        }
    }

    // Every page block is exhausted; now check each input's index and checksum, and that its
    // database checksums chain with the input before it (the trailers are known only now).
    let mut prev: Option<(Header, Trailer)> = None;
    for input in inputs {
        let h = *input.dec.header();
        let trailer = input.dec.finish().map_err(|e| wrap(input.index, &h, e))?;
        if let Some((ph, pt)) = &prev {
            check_follows(ph, Some(pt.post_apply_checksum), &h)?;
        }
        prev = Some((h, trailer));
    }
    let (out, trailer) = enc.finish()?;
    Ok((out, header, trailer))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{build_file, fixture, hdr, FrameOpts, PageEnc};
    use super::super::verify;
    use super::*;

    fn page(tag: u8) -> Vec<u8> {
        vec![tag; 512]
    }

    /// Encodes a file with the real encoder.
    fn file(h: Header, pages: &[(u32, u8)]) -> Vec<u8> {
        let mut enc = Encoder::new(Vec::new(), h).unwrap();
        for &(pgno, tag) in pages {
            enc.write_page(pgno, &page(tag)).unwrap();
        }
        enc.finish().unwrap().0
    }

    fn run(files: &[Vec<u8>]) -> Result<(Vec<u8>, Header, Trailer), LtxError> {
        let decs = files
            .iter()
            .map(|f| Decoder::new(&f[..]))
            .collect::<Result<Vec<_>, _>>()?;
        compact(decs, Vec::new())
    }

    fn pages_of(f: &[u8]) -> Vec<(u32, u8)> {
        let mut v = vec![];
        verify(f, |pgno, d| v.push((pgno, d[0]))).unwrap();
        v
    }

    #[test]
    fn merges_snapshot_and_incrementals() {
        let a = file(
            hdr(1, 1, 4, 10),
            &[(1, 0xa1), (2, 0xa2), (3, 0xa3), (4, 0xa4)],
        );
        let b = file(hdr(2, 2, 4, 20), &[(2, 0xb2)]);
        let c = file(hdr(3, 3, 3, 30), &[(1, 0xc1)]); // database shrinks to 3 pages
        let (out, h, t) = run(&[a, b, c]).unwrap();
        assert_eq!(
            h,
            Header {
                flags: 2,
                page_size: 512,
                commit: 3,
                min_txid: 1,
                max_txid: 3,
                timestamp_ms: 30,
                ..Default::default()
            }
        );
        let (h2, t2) = verify(&out[..], |_, _| {}).unwrap();
        assert_eq!((h2, t2), (h, t));
        assert_eq!(pages_of(&out), [(1, 0xc1), (2, 0xb2), (3, 0xa3)]);
    }

    #[test]
    fn incremental_merge_and_overlap() {
        let a = file(hdr(2, 3, 10, 1), &[(5, 1), (7, 1)]);
        let b = file(hdr(3, 5, 10, 2), &[(2, 2), (7, 2), (10, 2)]); // overlaps TXID 3
        let (out, h, _) = run(&[a, b]).unwrap();
        assert_eq!((h.min_txid, h.max_txid, h.commit), (2, 5, 10));
        assert_eq!(pages_of(&out), [(2, 2), (5, 1), (7, 2), (10, 2)]);
    }

    #[test]
    fn single_input_and_legacy_frames() {
        // A legacy frame-encoded input comes out block-encoded with the same pages.
        let (out, h, _) = run(&[fixture("example-2page-random-frame-ltx051.ltx")]).unwrap();
        assert_eq!(
            (h.min_txid, h.max_txid, h.commit, h.wal_offset),
            (5, 5, 3, 0)
        );
        let mut a = vec![];
        verify(&out[..], |p, d| a.push((p, d.to_vec()))).unwrap();
        let mut b = vec![];
        let original = fixture("example-2page-random-block-ltx052.ltx");
        verify(&original[..], |p, d| b.push((p, d.to_vec()))).unwrap();
        assert_eq!(a, b);

        // Mixed encodings across inputs.
        let x = build_file(
            &hdr(1, 1, 2, 1),
            &[
                (1, PageEnc::Frame(FrameOpts::go()), page(1)),
                (2, PageEnc::Block, page(2)),
            ],
        );
        let y = build_file(
            &hdr(2, 2, 2, 2),
            &[(2, PageEnc::Frame(FrameOpts::go()), page(3))],
        );
        let (out, _, _) = run(&[x, y]).unwrap();
        assert_eq!(pages_of(&out), [(1, 1), (2, 3)]);
    }

    #[test]
    fn rejects_gaps_and_backwards_ranges() {
        let a = file(hdr(1, 1, 1, 1), &[(1, 1)]);
        let c = file(hdr(3, 3, 1, 3), &[(1, 3)]);
        match run(&[a.clone(), c]) {
            Err(e @ LtxError::NotContiguous { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("0000000000000001-0000000000000001.ltx"),
                    "{msg}"
                );
                assert!(
                    msg.contains("0000000000000003-0000000000000003.ltx"),
                    "{msg}"
                );
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Same range twice: next.max must exceed prev.max.
        assert!(matches!(
            run(&[a.clone(), a]),
            Err(LtxError::NotContiguous { .. })
        ));
    }

    #[test]
    fn rejects_page_size_mismatch() {
        let a = file(hdr(1, 1, 1, 1), &[(1, 1)]);
        let b_hdr = Header {
            page_size: 1024,
            ..hdr(2, 2, 1, 2)
        };
        let mut enc = Encoder::new(Vec::new(), b_hdr).unwrap();
        enc.write_page(1, &[0u8; 1024]).unwrap();
        let b = enc.finish().unwrap().0;
        assert!(matches!(
            run(&[a, b]),
            Err(LtxError::PageSizeMismatch {
                expected: 512,
                found: 1024
            })
        ));
    }

    #[test]
    fn rejects_empty_input_list() {
        let none: Vec<Decoder<&[u8]>> = vec![];
        assert!(matches!(
            compact(none, Vec::new()),
            Err(LtxError::InvalidInput(_))
        ));
    }

    #[test]
    fn corrupt_input_fails_with_context() {
        let a = file(hdr(1, 1, 2, 1), &[(1, 1), (2, 1)]);
        let mut b = file(hdr(2, 2, 2, 2), &[(2, 2)]);
        let n = b.len();
        b[n - 9] ^= 1; // post-apply checksum: only the file checksum catches it
        match run(&[a, b]) {
            Err(e) => {
                assert!(matches!(
                    e,
                    LtxError::CompactInput {
                        index: 1,
                        min_txid: 2,
                        max_txid: 2,
                        ..
                    }
                ));
                assert!(
                    matches!(e.innermost(), LtxError::ChecksumMismatch { .. }),
                    "{e}"
                );
            }
            Ok(_) => panic!("corrupt input accepted"),
        }
    }

    #[test]
    fn snapshot_output_must_be_complete() {
        // A 1-1 snapshot of 2 pages followed by a file that grows the database to 4 pages but
        // only writes page 4: page 3 is nowhere, so the snapshot output is rejected.
        let a = file(hdr(1, 1, 2, 1), &[(1, 1), (2, 1)]);
        let b = file(hdr(2, 2, 4, 2), &[(4, 2)]);
        assert!(matches!(run(&[a, b]), Err(LtxError::InvalidInput(_))));
    }
}
