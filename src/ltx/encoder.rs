//! Streaming LTX writer.
//!
//! [`Encoder::new`] validates and writes the header; [`Encoder::write_page`] compresses one page
//! into a size-prefixed LZ4 block frame (page flag 0x0001, the encoding of ltx v0.5.2 /
//! Litestream >= 0.5.16) and writes it at once; [`Encoder::finish`] writes the terminator, the
//! page index and the trailer. Invariants enforced on the caller: the header carries flag
//! NoChecksum (this writer cannot compute database checksums, so it writes 0 for both); pages
//! come in strictly ascending pgno, never 0, never the lock page, never above `header.commit`,
//! each exactly `page_size` bytes; a snapshot (`min_txid == 1`) gets every page 1..=commit except
//! the lock page (checked as pages arrive and again in `finish`). Memory use is one compression
//! buffer plus the encoded page index (a few bytes per page), whatever the database size. After
//! a write to the underlying writer fails, the encoder refuses further use, because the output
//! no longer matches its own bookkeeping.

use std::io::Write;

use lz4_flex::block::{compress_into, get_maximum_output_size};

use super::{
    append_uvarint, last_snapshot_pgno, lock_page, next_snapshot_pgno, Crc64Digest, Header,
    LtxError, Trailer, CHECKSUM_FLAG, CRC64, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, PAGE_FLAG_SIZE,
    PAGE_HEADER_SIZE,
};

/// Page header plus the u32 compressed-size field of the block encoding.
const FRAME_PREFIX: usize = PAGE_HEADER_SIZE + 4;

/// The most bytes an LTX file of `pages` pages of `page_size` can take: every page
/// incompressible (LZ4's worst case), every index varint at its longest. Uploads use it to choose
/// a part size before the file exists.
pub fn max_encoded_size(page_size: u32, pages: u64) -> u64 {
    let frame = (FRAME_PREFIX + get_maximum_output_size(page_size as usize)) as u64;
    let index_entry = 3 * 10;
    HEADER_SIZE as u64
        + pages * (frame + index_entry)
        + PAGE_HEADER_SIZE as u64 // terminator
        + 1 // index end marker
        + 8 // index size
        + super::TRAILER_SIZE as u64
}

/// Streaming encoder; see the module documentation for the rules it enforces.
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    lock_pgno: u32,
    /// Running file checksum (§1.6): fed the header, page prefixes and *uncompressed* pages.
    hash: Crc64Digest,
    bytes_written: u64,
    pages_written: u64,
    /// Last page written, 0 before the first.
    prev_pgno: u32,
    /// The page index entries, already varint-encoded, in pgno order.
    index: Vec<u8>,
    /// Reused per page: frame prefix followed by the compressed payload.
    frame: Vec<u8>,
    /// Set when the underlying writer failed part-way.
    poisoned: bool,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it. The header must have flag NoChecksum (0x2): the
    /// trailer's post-apply checksum is always written as 0, which ltx only allows then.
    pub fn new(mut w: W, header: Header) -> Result<Self, LtxError> {
        header.validate()?;
        if header.flags & HEADER_FLAG_NO_CHECKSUM == 0 {
            return Err(LtxError::InvalidInput(format!(
                "encoder: header flags 0x{:08x} lack NoChecksum (0x2); database checksums are \
                 not supported",
                header.flags
            )));
        }
        let bytes = header.to_bytes();
        w.write_all(&bytes)?;
        let mut hash = CRC64.digest();
        hash.update(&bytes);
        let frame_cap = FRAME_PREFIX + get_maximum_output_size(header.page_size as usize);
        Ok(Encoder {
            w,
            header,
            lock_pgno: lock_page(header.page_size),
            hash,
            bytes_written: HEADER_SIZE as u64,
            pages_written: 0,
            prev_pgno: 0,
            index: Vec::new(),
            frame: vec![0; frame_cap],
            poisoned: false,
        })
    }

    /// The header this encoder was created with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of pages written so far.
    pub fn pages_written(&self) -> u64 {
        self.pages_written
    }

    /// Number of bytes written to the underlying writer so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Compresses and writes page `pgno`. `data` must be exactly `page_size` bytes.
    /// A rejected page (wrong order, length, ...) leaves the encoder usable.
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        self.check_usable()?;
        self.check_page(pgno, data.len())?;

        // Frame: pgno | flags 0x0001 | compressed size | raw LZ4 block.
        // `frame` was sized for the worst case in new(), so this slice is always in bounds.
        let n = compress_into(data, &mut self.frame[FRAME_PREFIX..]).map_err(|e| {
            LtxError::InvalidInput(format!(
                "encoder: LZ4 compression of page {pgno} failed: {e}"
            ))
        })?;
        let frame_len = FRAME_PREFIX + n;
        self.frame[0..4].copy_from_slice(&pgno.to_be_bytes());
        self.frame[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        self.frame[6..10].copy_from_slice(&(n as u32).to_be_bytes());

        if let Err(e) = self.w.write_all(&self.frame[..frame_len]) {
            self.poisoned = true;
            return Err(e.into());
        }
        // The checksum covers the prefix and the page as it will be after decompression, not
        // the LZ4 bytes, so any valid LZ4 output gives the same checksum.
        self.hash.update(&self.frame[..FRAME_PREFIX]);
        self.hash.update(data);

        append_uvarint(&mut self.index, u64::from(pgno));
        append_uvarint(&mut self.index, self.bytes_written);
        append_uvarint(&mut self.index, frame_len as u64);
        self.bytes_written += frame_len as u64;
        self.pages_written += 1;
        self.prev_pgno = pgno;
        Ok(())
    }

    /// Writes the terminator, page index and trailer, flushes, and returns the writer and the
    /// trailer. Fails if a snapshot is missing pages at the end.
    pub fn finish(mut self) -> Result<(W, Trailer), LtxError> {
        self.check_usable()?;
        if self.header.is_snapshot() {
            let last = last_snapshot_pgno(self.header.commit, self.lock_pgno);
            if self.prev_pgno != last {
                return Err(LtxError::InvalidInput(format!(
                    "encoder: snapshot is incomplete: last page written is {}, but commit {} \
                     needs every page up to {last}",
                    self.prev_pgno, self.header.commit
                )));
            }
        }

        // terminator | index entries | end marker | index size | post-apply checksum
        let mut tail = Vec::with_capacity(PAGE_HEADER_SIZE + self.index.len() + 1 + 16);
        tail.extend_from_slice(&[0u8; PAGE_HEADER_SIZE]);
        tail.extend_from_slice(&self.index);
        tail.push(0);
        let index_size = self.index.len() as u64 + 1; // entries + end marker
        tail.extend_from_slice(&index_size.to_be_bytes());
        tail.extend_from_slice(&0u64.to_be_bytes());
        self.hash.update(&tail);

        let trailer = Trailer {
            post_apply_checksum: 0,
            file_checksum: self.hash.finalize() | CHECKSUM_FLAG,
        };
        tail.extend_from_slice(&trailer.file_checksum.to_be_bytes());
        self.w.write_all(&tail)?;
        self.w.flush()?;
        Ok((self.w, trailer))
    }

    fn check_usable(&self) -> Result<(), LtxError> {
        if self.poisoned {
            return Err(LtxError::InvalidInput(
                "encoder: unusable after an earlier write error".into(),
            ));
        }
        Ok(())
    }

    /// The page rules from the module documentation; nothing is written if one fails.
    fn check_page(&self, pgno: u32, len: usize) -> Result<(), LtxError> {
        let h = &self.header;
        let bad = |msg: String| Err(LtxError::InvalidInput(format!("encoder: {msg}")));
        if len != h.page_size as usize {
            return bad(format!(
                "page {pgno} is {len} bytes, the page size is {}",
                h.page_size
            ));
        }
        if pgno == 0 {
            return bad("page number 0 is invalid".into());
        }
        if pgno > h.commit {
            return bad(format!("page {pgno} is beyond commit {}", h.commit));
        }
        if pgno == self.lock_pgno {
            return bad(format!("page {pgno} is the lock page and is never stored"));
        }
        if pgno <= self.prev_pgno {
            return bad(format!(
                "page {pgno} after page {}: pages must be strictly ascending",
                self.prev_pgno
            ));
        }
        if h.is_snapshot() {
            let expected = next_snapshot_pgno(self.prev_pgno, self.lock_pgno);
            if pgno != expected {
                return bad(format!(
                    "snapshot must contain every page: expected page {expected}, got {pgno}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{example_header, example_page, fixture, Rng};
    use super::super::{verify, Decoder, TRAILER_SIZE};
    use super::*;

    #[test]
    fn max_encoded_size_bounds_incompressible_pages() {
        let mut rng = Rng(7);
        let pages: Vec<(u32, Vec<u8>)> = (1..=50)
            .map(|pgno| {
                let mut p = vec![0u8; 4096];
                rng.fill(&mut p);
                (pgno, p)
            })
            .collect();
        let h = Header {
            commit: 50,
            ..example_header()
        };
        let (out, _) = encode(h, &pages);
        let bound = max_encoded_size(4096, 50);
        assert!(out.len() as u64 <= bound, "{} > {bound}", out.len());
        // …and not wildly above it (it sizes buffers and multipart parts).
        assert!(
            bound < out.len() as u64 * 115 / 100,
            "{bound} vs {}",
            out.len()
        );
    }

    fn encode(h: Header, pages: &[(u32, Vec<u8>)]) -> (Vec<u8>, Trailer) {
        let mut enc = Encoder::new(Vec::new(), h).unwrap();
        for (pgno, data) in pages {
            enc.write_page(*pgno, data).unwrap();
        }
        let n = enc.bytes_written();
        let (out, trailer) = enc.finish().unwrap();
        assert!(out.len() as u64 > n);
        (out, trailer)
    }

    fn decode_all(file: &[u8]) -> (Header, Trailer, Vec<(u32, Vec<u8>)>) {
        let mut pages = vec![];
        let (h, t) = verify(file, |pgno, data| pages.push((pgno, data.to_vec()))).unwrap();
        (h, t, pages)
    }

    fn snapshot_header(page_size: u32, commit: u32) -> Header {
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid: 1,
            max_txid: 1,
            timestamp_ms: 1,
            ..Default::default()
        }
    }

    #[test]
    fn example_a_reproduced() {
        let golden = fixture("example-1page-block-ltx052.ltx");
        let (out, trailer) = encode(example_header(), &[(1, example_page())]);
        assert_eq!(&out[..HEADER_SIZE], &golden[..HEADER_SIZE]);
        assert_eq!(trailer.post_apply_checksum, 0);
        assert_ne!(trailer.file_checksum & CHECKSUM_FLAG, 0);

        // Index: pgno 1, offset 100, size = 10 + our LZ4 length; end marker; size 4.
        let frame_len = out.len() - HEADER_SIZE - 6 - 4 - 8 - TRAILER_SIZE;
        let idx = &out[out.len() - TRAILER_SIZE - 8 - 4..];
        assert_eq!(&idx[..4], &[1, 100, frame_len as u8, 0]);
        assert_eq!(&idx[4..12], &4u64.to_be_bytes());

        if out[HEADER_SIZE..HEADER_SIZE + 10] == golden[HEADER_SIZE..HEADER_SIZE + 10] {
            // lz4_flex chose the same 56-byte block as Go, so everything must match.
            assert_eq!(out, golden);
            assert_eq!(trailer.file_checksum, 0x86a5_079c_da24_236c);
        } else {
            println!("note: lz4_flex block differs from Go's; checked via the decoder instead");
        }
        if let Some(stdout) = ltx_check(&out, "example-a") {
            let ck = format!("'file_checksum': '{:016x}'", trailer.file_checksum);
            assert!(stdout.contains(&ck), "{stdout}");
        }
        let (h, t, pages) = decode_all(&out);
        assert_eq!(h, example_header());
        assert_eq!(t, trailer);
        assert_eq!(pages, vec![(1, example_page())]);
    }

    /// Runs the independent Python checker on `file`; returns its output, or `None` (after
    /// printing a note) when python3 is not available.
    fn ltx_check(file: &[u8], tag: &str) -> Option<String> {
        let path = std::env::temp_dir().join(format!("ltx-{tag}-{}.ltx", std::process::id()));
        std::fs::write(&path, file).unwrap();
        let checker = format!("{}/tests/tools/ltx_check.py", env!("CARGO_MANIFEST_DIR"));
        let result = std::process::Command::new("python3")
            .arg(&checker)
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        match result {
            Err(e) => {
                println!("note: python3 not available ({e}); skipping ltx_check.py");
                None
            }
            Ok(o) => {
                let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
                assert!(
                    o.status.success(),
                    "ltx_check.py rejected the file: {stdout}{}",
                    String::from_utf8_lossy(&o.stderr)
                );
                Some(stdout)
            }
        }
    }

    #[test]
    fn python_checker_accepts_output() {
        let mut rng = Rng(7);
        let mut pages = vec![];
        for pgno in 1..=5u32 {
            let mut p = vec![0u8; 1024];
            if pgno % 2 == 1 {
                rng.fill(&mut p); // incompressible
            } else {
                p[..8].copy_from_slice(&u64::from(pgno).to_be_bytes());
            }
            pages.push((pgno, p));
        }
        let (out, trailer) = encode(snapshot_header(1024, 5), &pages);
        if let Some(stdout) = ltx_check(&out, "multi") {
            let ck = format!("'file_checksum': '{:016x}'", trailer.file_checksum);
            assert!(stdout.contains(&ck), "{stdout}");
            assert!(stdout.contains("'commit': 5"), "{stdout}");
        }
    }

    #[test]
    fn round_trips() {
        let mut rng = Rng(0x1234_5678);
        for &ps in &[512u32, 1024, 4096, 65536] {
            for kind in 0..3 {
                let commit = 1 + rng.below(6) as u32;
                let pages: Vec<(u32, Vec<u8>)> = (1..=commit)
                    .map(|pgno| {
                        let mut p = vec![0u8; ps as usize];
                        match kind {
                            0 => rng.fill(&mut p), // incompressible
                            1 => {
                                // compressible: short random runs
                                for chunk in p.chunks_mut(16) {
                                    let v = rng.next_u64() as u8;
                                    chunk.iter_mut().for_each(|b| *b = v);
                                }
                            }
                            _ => {
                                let n = rng.below(ps as u64) as usize;
                                rng.fill(&mut p[..n]); // random prefix, zero tail
                            }
                        }
                        (pgno, p)
                    })
                    .collect();
                let h = snapshot_header(ps, commit);
                let (out, trailer) = encode(h, &pages);
                let (h2, t2, got) = decode_all(&out);
                assert_eq!(h2, h);
                assert_eq!(t2, trailer);
                assert_eq!(got, pages, "page size {ps} kind {kind}");
            }
        }
    }

    #[test]
    fn sparse_incremental_round_trip() {
        let h = Header {
            commit: 100,
            min_txid: 7,
            max_txid: 9,
            ..snapshot_header(512, 100)
        };
        let pages: Vec<(u32, Vec<u8>)> = [3u32, 4, 50, 100]
            .iter()
            .map(|&p| (p, vec![p as u8; 512]))
            .collect();
        let (out, _) = encode(h, &pages);
        let (h2, _, got) = decode_all(&out);
        assert_eq!(h2, h);
        assert_eq!(got, pages);
    }

    #[test]
    fn empty_files() {
        // An incremental file with no pages, and a snapshot of an empty database.
        let incr = Header {
            min_txid: 2,
            max_txid: 2,
            ..snapshot_header(4096, 1)
        };
        for h in [incr, snapshot_header(4096, 0)] {
            let (out, _) = encode(h, &[]);
            assert_eq!(out.len(), HEADER_SIZE + 6 + 1 + 8 + TRAILER_SIZE);
            let (h2, _, got) = decode_all(&out);
            assert_eq!(h2, h);
            assert!(got.is_empty());
        }
    }

    #[test]
    fn counters() {
        let mut enc = Encoder::new(Vec::new(), snapshot_header(512, 2)).unwrap();
        assert_eq!(enc.bytes_written(), 100);
        enc.write_page(1, &[1u8; 512]).unwrap();
        enc.write_page(2, &[2u8; 512]).unwrap();
        assert_eq!(enc.pages_written(), 2);
        let before = enc.bytes_written() as usize;
        assert_eq!(enc.header().commit, 2);
        let (out, _) = enc.finish().unwrap();
        // Everything after the page block: terminator, index, index size, trailer.
        let size_at = out.len() - TRAILER_SIZE - 8;
        let index_size = u64::from_be_bytes(out[size_at..size_at + 8].try_into().unwrap());
        assert_eq!(
            out.len(),
            before + 6 + index_size as usize + 8 + TRAILER_SIZE
        );
    }

    #[test]
    fn rejects_bad_pages() {
        let incr = Header {
            min_txid: 2,
            max_txid: 2,
            ..snapshot_header(65536, 20_000)
        };
        let mut enc = Encoder::new(Vec::new(), incr).unwrap();
        let page = vec![0u8; 65536];
        let err = |r: Result<(), LtxError>| match r {
            Err(LtxError::InvalidInput(m)) => m,
            other => panic!("expected InvalidInput, got {other:?}"),
        };
        assert!(err(enc.write_page(1, &page[..100])).contains("100 bytes"));
        assert!(err(enc.write_page(0, &page)).contains("0"));
        assert!(err(enc.write_page(20_001, &page)).contains("beyond commit"));
        assert!(err(enc.write_page(16_385, &page)).contains("lock page"));
        enc.write_page(16_386, &page).unwrap(); // rejected pages left the encoder usable
        assert!(err(enc.write_page(16_386, &page)).contains("ascending"));
        assert!(err(enc.write_page(5, &page)).contains("ascending"));
        enc.write_page(20_000, &page).unwrap();
        let (out, _) = enc.finish().unwrap();
        let (_, _, got) = decode_all(&out);
        assert_eq!(
            got.iter().map(|p| p.0).collect::<Vec<_>>(),
            [16_386, 20_000]
        );
    }

    #[test]
    fn snapshot_must_be_complete() {
        let page = vec![0u8; 512];
        let mut enc = Encoder::new(Vec::new(), snapshot_header(512, 3)).unwrap();
        assert!(matches!(
            enc.write_page(2, &page),
            Err(LtxError::InvalidInput(_))
        ));
        enc.write_page(1, &page).unwrap();
        assert!(matches!(
            enc.write_page(3, &page),
            Err(LtxError::InvalidInput(_))
        ));
        enc.write_page(2, &page).unwrap();
        match enc.finish() {
            Err(LtxError::InvalidInput(m)) => assert!(m.contains("incomplete"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let bad = Header {
            page_size: 1000,
            ..snapshot_header(512, 1)
        };
        assert!(matches!(
            Encoder::new(Vec::new(), bad),
            Err(LtxError::InvalidHeader(_))
        ));
        let tracked = Header {
            flags: 0,
            ..snapshot_header(512, 1)
        };
        assert!(matches!(
            Encoder::new(Vec::new(), tracked),
            Err(LtxError::InvalidInput(_))
        ));
    }

    /// A writer that fails after `left` bytes.
    struct FailingWriter {
        left: usize,
    }
    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_poison() {
        assert!(matches!(
            Encoder::new(FailingWriter { left: 50 }, snapshot_header(512, 2)),
            Err(LtxError::Io(_))
        ));
        let mut enc = Encoder::new(FailingWriter { left: 120 }, snapshot_header(512, 2)).unwrap();
        assert!(matches!(
            enc.write_page(1, &[0u8; 512]),
            Err(LtxError::Io(_))
        ));
        assert!(matches!(
            enc.write_page(1, &[0u8; 512]),
            Err(LtxError::InvalidInput(_))
        ));
        assert!(enc.finish().is_err());
    }

    #[test]
    fn decoder_reads_encoder_output_streaming() {
        let pages: Vec<(u32, Vec<u8>)> = (1..=3).map(|p| (p, vec![p as u8; 4096])).collect();
        let (out, trailer) = encode(snapshot_header(4096, 3), &pages);
        let mut dec = Decoder::new(&out[..]).unwrap();
        let mut buf = vec![0u8; 4096];
        for (pgno, data) in &pages {
            assert_eq!(dec.next_page(&mut buf).unwrap(), Some(*pgno));
            assert_eq!(&buf, data);
        }
        assert_eq!(dec.next_page(&mut buf).unwrap(), None);
        assert_eq!(dec.finish().unwrap(), trailer);
    }
}
