//! Streaming LTX reader.
//!
//! [`Decoder::new`] reads and validates the header; [`Decoder::next_page`] returns the pages in
//! file order; [`Decoder::finish`] reads the page index and trailer and verifies the file
//! checksum. It reads from any `Read` (a file, an HTTP body) through an internal buffer; its
//! memory use is constant (one compressed-payload buffer, and a digest of the page index it
//! expects rather than the index itself).
//! Both page encodings are read, even mixed in one file: flag 0x0001 (u32 size + raw LZ4 block)
//! and the legacy flags 0 (one LZ4 frame, parsed here field by field because it has no length
//! prefix). Invariants checked, each as soon as its data is read: pgnos non-zero and strictly
//! ascending, never the lock page, never above `commit`; a snapshot holds every page
//! 1..=commit except the lock page; every page decompresses to exactly `page_size` bytes; LZ4
//! frame header, block and content checksums (XXH32) match; the index lists exactly the frames
//! seen, at the offsets and sizes seen; the file checksum matches; nothing follows the trailer.
//! The file checksum covers decompressed pages, not LZ4 bytes, so the LZ4 layer is decoded
//! strictly here (own block decoder, all frame checksums) to let no corrupted byte through.
//! Pages are handed out before the file checksum can be checked, so callers must discard what
//! they got if `finish` fails. After any error the decoder refuses further use.

use std::io::{self, BufRead, BufReader, Read};

use lz4_flex::block::get_maximum_output_size;

use super::{
    append_uvarint, last_snapshot_pgno, lock_page, next_snapshot_pgno, Crc64Digest, Header,
    LtxError, Trailer, CHECKSUM_FLAG, CRC64, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, PAGE_FLAG_SIZE,
    PAGE_HEADER_SIZE, TRAILER_SIZE,
};

/// Magic number that opens an LZ4 frame (0x184D2204, little-endian).
const LZ4_FRAME_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

/// The input plus a count of bytes consumed, which gives the frame offsets the page index is
/// checked against and the offsets quoted in errors.
struct Source<R: Read> {
    r: BufReader<R>,
    pos: u64,
}

impl<R: Read> Source<R> {
    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), LtxError> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(LtxError::Truncated {
                what,
                offset: self.pos,
            }),
            Err(e) => Err(LtxError::Io(e)),
        }
    }

    fn read_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], LtxError> {
        let mut b = [0u8; N];
        self.read_exact(&mut b, what)?;
        Ok(b)
    }

    fn at_eof(&mut self) -> Result<bool, LtxError> {
        loop {
            match self.r.fill_buf() {
                Ok(b) => return Ok(b.is_empty()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LtxError::Io(e)),
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading page frames.
    Pages,
    /// The terminator was read; only finish() remains.
    PagesDone,
    /// An error occurred; the stream position is unknown, so nothing more can be trusted.
    Failed,
}

/// Streaming decoder; see the module documentation for what it checks.
pub struct Decoder<R: Read> {
    src: Source<R>,
    header: Header,
    lock_pgno: u32,
    /// Running file checksum (§1.6): fed the header, page prefixes and *decompressed* pages.
    hash: Crc64Digest,
    state: State,
    /// Last pgno read, 0 before the first.
    prev_pgno: u32,
    /// Number of page frames read.
    pages_read: u64,
    /// CRC of the page index this file must have: the (pgno, offset, size) varints of every
    /// frame read. Comparing digests instead of keeping the entries keeps memory constant
    /// however many pages the file holds.
    expected_index: Crc64Digest,
    /// Reused buffer for encoding one index entry.
    entry: Vec<u8>,
    /// Compressed payload of the current page (or LZ4 block); sized for the largest valid one.
    scratch: Vec<u8>,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header.
    pub fn new(r: R) -> Result<Self, LtxError> {
        let mut src = Source {
            r: BufReader::with_capacity(16 << 10, r),
            pos: 0,
        };
        let bytes: [u8; HEADER_SIZE] = src.read_array("header")?;
        let header = Header::from_bytes(&bytes)?;
        let mut hash = CRC64.digest();
        hash.update(&bytes);
        // LZ4 cannot expand data beyond this bound, so a larger payload is corrupt; the cap also
        // keeps a corrupt size field from making us allocate gigabytes.
        let scratch = vec![0; get_maximum_output_size(header.page_size as usize)];
        Ok(Decoder {
            src,
            header,
            lock_pgno: lock_page(header.page_size),
            hash,
            state: State::Pages,
            prev_pgno: 0,
            pages_read: 0,
            expected_index: CRC64.digest(),
            entry: Vec::with_capacity(30),
            scratch,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next page into `buf` (whose length must be the page size) and returns its
    /// pgno, or `Ok(None)` once the page block's terminator has been read.
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        match self.state {
            State::Failed => {
                return Err(LtxError::InvalidInput(
                    "decoder: unusable after an earlier error".into(),
                ))
            }
            State::PagesDone => return Ok(None),
            State::Pages => {}
        }
        if buf.len() != self.header.page_size as usize {
            return Err(LtxError::InvalidInput(format!(
                "decoder: page buffer is {} bytes, the page size is {}",
                buf.len(),
                self.header.page_size
            )));
        }
        let result = self.read_frame(buf);
        match result {
            Err(_) => self.state = State::Failed,
            Ok(None) => self.state = State::PagesDone,
            Ok(Some(_)) => {}
        }
        result
    }

    /// After `next_page` returned `None`: reads the page index and trailer, checks the index
    /// against the frames read, verifies the file checksum and that the input ends there.
    pub fn finish(mut self) -> Result<Trailer, LtxError> {
        match self.state {
            State::PagesDone => {}
            State::Pages => {
                return Err(LtxError::InvalidInput(
                    "decoder: finish() called before next_page() returned None".into(),
                ))
            }
            State::Failed => {
                return Err(LtxError::InvalidInput(
                    "decoder: finish() called after an earlier error".into(),
                ))
            }
        }

        // Page index: one (pgno, offset, size) entry per frame, in order, then a 0 end marker.
        let index_start = self.src.pos;
        let mut actual_index = CRC64.digest();
        let mut entries = 0u64;
        loop {
            let pgno = self.read_uvarint()?;
            if pgno == 0 {
                break;
            }
            let offset = self.read_uvarint()?;
            let size = self.read_uvarint()?;
            entries += 1;
            if entries > self.pages_read {
                return Err(corrupt(
                    index_start,
                    format!(
                        "page index has more entries than the page block's {} pages",
                        self.pages_read
                    ),
                ));
            }
            // Re-encoded rather than hashed as read, so only the values have to match.
            self.entry.clear();
            append_uvarint(&mut self.entry, pgno);
            append_uvarint(&mut self.entry, offset);
            append_uvarint(&mut self.entry, size);
            actual_index.update(&self.entry);
        }
        if entries != self.pages_read {
            return Err(corrupt(
                index_start,
                format!(
                    "page index has {entries} entries, the page block has {} pages",
                    self.pages_read
                ),
            ));
        }
        if actual_index.finalize() != self.expected_index.finalize() {
            return Err(corrupt(
                index_start,
                "page index entries do not match the pgnos, offsets and sizes of the page block"
                    .into(),
            ));
        }
        let index_len = self.src.pos - index_start;
        let size_at = self.src.pos;
        let size_bytes: [u8; 8] = self.src.read_array("page index size")?;
        self.hash.update(&size_bytes);
        let stored_len = u64::from_be_bytes(size_bytes);
        if stored_len != index_len {
            return Err(corrupt(
                size_at,
                format!("page index size field says {stored_len} bytes, the index is {index_len}"),
            ));
        }

        // Trailer: everything but the file checksum itself is hashed.
        let trailer_at = self.src.pos;
        let t: [u8; TRAILER_SIZE] = self.src.read_array("trailer")?;
        self.hash.update(&t[..8]);
        let trailer = Trailer::from_bytes(&t);
        let computed = self.hash.finalize() | CHECKSUM_FLAG;
        if trailer.file_checksum != computed {
            return Err(LtxError::ChecksumMismatch {
                stored: trailer.file_checksum,
                computed,
            });
        }
        // ltx's Trailer.Validate rules for the post-apply checksum.
        let no_checksum = self.header.flags & HEADER_FLAG_NO_CHECKSUM != 0;
        let post = trailer.post_apply_checksum;
        if no_checksum && post != 0 {
            return Err(corrupt(
                trailer_at,
                format!("post-apply checksum {post:016x} must be 0 when NoChecksum is set"),
            ));
        }
        if !no_checksum && post & CHECKSUM_FLAG == 0 {
            return Err(corrupt(
                trailer_at,
                format!("post-apply checksum {post:016x} must have bit 63 set"),
            ));
        }
        if !self.src.at_eof()? {
            return Err(LtxError::TrailingData {
                offset: self.src.pos,
            });
        }
        Ok(trailer)
    }

    /// Reads one page frame (or the terminator), updating the file checksum and the expected
    /// page index.
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        let offset = self.src.pos;
        let ph: [u8; PAGE_HEADER_SIZE] = self.src.read_array("page header")?;
        self.hash.update(&ph);
        let pgno = u32::from_be_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let flags = u16::from_be_bytes([ph[4], ph[5]]);

        if pgno == 0 && flags == 0 {
            // Terminator: a snapshot must have reached its last page by now.
            let last = last_snapshot_pgno(self.header.commit, self.lock_pgno);
            if self.header.is_snapshot() && self.prev_pgno != last {
                return Err(corrupt(
                    offset,
                    format!(
                        "snapshot ends after page {}, but commit {} needs every page up to {last}",
                        self.prev_pgno, self.header.commit
                    ),
                ));
            }
            return Ok(None);
        }
        self.check_page_header(pgno, flags, offset)?;

        if flags & PAGE_FLAG_SIZE != 0 {
            self.read_block_payload(pgno, offset, buf)?;
        } else {
            read_lz4_frame(&mut self.src, &mut self.scratch, buf).map_err(|e| match e {
                FrameError::Ltx(e) => e,
                FrameError::Bad(msg) => corrupt(offset, format!("page {pgno}: LZ4 frame: {msg}")),
            })?;
        }
        self.hash.update(buf);
        self.entry.clear();
        append_uvarint(&mut self.entry, u64::from(pgno));
        append_uvarint(&mut self.entry, offset);
        append_uvarint(&mut self.entry, self.src.pos - offset);
        self.expected_index.update(&self.entry);
        self.pages_read += 1;
        self.prev_pgno = pgno;
        Ok(Some(pgno))
    }

    fn check_page_header(&self, pgno: u32, flags: u16, offset: u64) -> Result<(), LtxError> {
        let bad = |msg: String| Err(corrupt(offset, msg));
        if pgno == 0 {
            return bad(format!("page header has pgno 0 but flags 0x{flags:04x}"));
        }
        if flags & !PAGE_FLAG_SIZE != 0 {
            return bad(format!("page {pgno}: invalid page flags 0x{flags:04x}"));
        }
        if pgno <= self.prev_pgno {
            return bad(format!(
                "page {pgno} follows page {}: page numbers must be strictly ascending",
                self.prev_pgno
            ));
        }
        if pgno > self.header.commit {
            return bad(format!(
                "page {pgno} is beyond the commit size {}",
                self.header.commit
            ));
        }
        if pgno == self.lock_pgno {
            return bad(format!(
                "page {pgno} is the lock page, which is never stored"
            ));
        }
        if self.header.is_snapshot() {
            let expected = next_snapshot_pgno(self.prev_pgno, self.lock_pgno);
            if pgno != expected {
                return bad(format!(
                    "snapshot is missing page {expected} (next stored page is {pgno})"
                ));
            }
        }
        Ok(())
    }

    /// Block encoding: u32 compressed size (hashed), then one raw LZ4 block (not hashed).
    fn read_block_payload(
        &mut self,
        pgno: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), LtxError> {
        let size_bytes: [u8; 4] = self.src.read_array("page size field")?;
        self.hash.update(&size_bytes);
        let n = u32::from_be_bytes(size_bytes) as usize;
        let cap = self.scratch.len();
        let Some(payload) = self.scratch.get_mut(..n) else {
            return Err(corrupt(
                offset,
                format!(
                    "page {pgno}: compressed size {n} exceeds the maximum {cap} for page size {}",
                    buf.len()
                ),
            ));
        };
        self.src.read_exact(payload, "page data")?;
        let got = lz4_block_decompress(payload, buf, 0)
            .map_err(|e| corrupt(offset, format!("page {pgno}: invalid LZ4 block: {e}")))?;
        if got != buf.len() {
            return Err(corrupt(
                offset,
                format!(
                    "page {pgno}: LZ4 block decompressed to {got} bytes, the page size is {}",
                    buf.len()
                ),
            ));
        }
        Ok(())
    }

    /// Reads one unsigned LEB128 varint of the page index, hashing its bytes (Go
    /// `binary.ReadUvarint`: at most 10 bytes, no overflow).
    fn read_uvarint(&mut self) -> Result<u64, LtxError> {
        let start = self.src.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let [b] = self.src.read_array::<1>("page index")?;
            self.hash.update(&[b]);
            if i == 9 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt(start, "page index varint overflows 64 bits".into()))
    }
}

fn corrupt(offset: u64, msg: String) -> LtxError {
    LtxError::Corrupt { offset, msg }
}

/// Error of the LZ4 frame parser: either from the input itself, or a message about the frame
/// that the caller prefixes with the page number and offset.
enum FrameError {
    Ltx(LtxError),
    Bad(String),
}

impl From<LtxError> for FrameError {
    fn from(e: LtxError) -> Self {
        FrameError::Ltx(e)
    }
}

/// Reads one LZ4 frame (the legacy page encoding, §1.3) and decompresses it into `out`, which
/// it must fill exactly. Any valid frame is accepted (content size, block checksums, several
/// blocks, linked blocks), except dictionary IDs, which no LTX writer uses; the header checksum,
/// block checksums and content checksum are all verified, because the file checksum covers
/// only the decompressed page and not these bytes.
fn read_lz4_frame<R: Read>(
    src: &mut Source<R>,
    scratch: &mut [u8],
    out: &mut [u8],
) -> Result<(), FrameError> {
    let bad = |msg: String| Err(FrameError::Bad(msg));
    let magic: [u8; 4] = src.read_array("LZ4 frame header")?;
    if magic != LZ4_FRAME_MAGIC {
        return bad(format!("bad magic {magic:02x?}"));
    }
    let [flg, bd] = src.read_array::<2>("LZ4 frame header")?;
    if flg >> 6 != 0b01 {
        return bad(format!("unsupported version in FLG 0x{flg:02x}"));
    }
    if flg & 0x02 != 0 {
        return bad(format!("reserved bit set in FLG 0x{flg:02x}"));
    }
    if flg & 0x01 != 0 {
        return bad("dictionary IDs are not supported".into());
    }
    if bd & 0x8f != 0 {
        return bad(format!("reserved bits set in BD 0x{bd:02x}"));
    }
    let block_max: usize = match (bd >> 4) & 0x7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        code => return bad(format!("invalid maximum block size code {code} in BD")),
    };
    let independent = flg & 0x20 != 0;
    let block_checksums = flg & 0x10 != 0;
    let has_content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;

    // The header checksum covers FLG, BD and the optional content size.
    let mut desc = [0u8; 10];
    desc[0] = flg;
    desc[1] = bd;
    let mut desc_len = 2;
    if has_content_size {
        let cs: [u8; 8] = src.read_array("LZ4 frame header")?;
        desc[2..10].copy_from_slice(&cs);
        desc_len = 10;
        let size = u64::from_le_bytes(cs);
        if size != out.len() as u64 {
            return bad(format!(
                "content size {size}, the page size is {}",
                out.len()
            ));
        }
    }
    let [hc] = src.read_array::<1>("LZ4 frame header")?;
    let expected_hc = (xxh32(&desc[..desc_len], 0) >> 8) as u8;
    if hc != expected_hc {
        return bad(format!(
            "header checksum 0x{hc:02x}, expected 0x{expected_hc:02x}"
        ));
    }

    let mut pos = 0; // bytes of `out` filled
    loop {
        let word = u32::from_le_bytes(src.read_array("LZ4 block size")?);
        if word == 0 {
            break; // EndMark
        }
        let stored = word & 0x8000_0000 != 0;
        let n = (word & 0x7fff_ffff) as usize;
        if n == 0 {
            return bad("empty block".into());
        }
        if n > block_max {
            return bad(format!(
                "block of {n} bytes exceeds the frame's maximum block size {block_max}"
            ));
        }
        let left = out.len() - pos; // pos <= out.len() always holds
        let (raw, produced): (&[u8], usize) = if stored {
            let Some(dst) = out.get_mut(pos..).and_then(|rest| rest.get_mut(..n)) else {
                return bad(format!(
                    "stored block of {n} bytes overflows the page ({left} bytes left)"
                ));
            };
            src.read_exact(dst, "LZ4 block")?;
            (dst, n)
        } else {
            let cap = scratch.len();
            let Some(data) = scratch.get_mut(..n) else {
                return bad(format!(
                    "compressed block of {n} bytes exceeds the maximum {cap} for this page size"
                ));
            };
            src.read_exact(data, "LZ4 block")?;
            // Linked blocks may copy from the page decoded so far; independent ones may not.
            let result = match out.get_mut(pos..) {
                Some(rest) if independent => lz4_block_decompress(data, rest, 0),
                _ => lz4_block_decompress(data, out, pos),
            };
            let m = match result {
                Ok(0) => return bad("block decompressed to 0 bytes".into()),
                Ok(m) => m,
                Err(e) => return bad(format!("invalid LZ4 block: {e}")),
            };
            (data, m)
        };
        if block_checksums {
            let stored_ck = u32::from_le_bytes(src.read_array("LZ4 block checksum")?);
            let computed = xxh32(raw, 0);
            if stored_ck != computed {
                return bad(format!(
                    "block checksum {stored_ck:08x}, computed {computed:08x}"
                ));
            }
        }
        pos += produced;
    }
    if pos != out.len() {
        return bad(format!(
            "decompressed to {pos} bytes, the page size is {}",
            out.len()
        ));
    }
    if content_checksum {
        let stored_ck = u32::from_le_bytes(src.read_array("LZ4 content checksum")?);
        let computed = xxh32(out, 0);
        if stored_ck != computed {
            return bad(format!(
                "content checksum {stored_ck:08x}, computed {computed:08x}"
            ));
        }
    }
    Ok(())
}

/// Decompresses one raw LZ4 block into `out[start..]` and returns the number of bytes
/// produced; `out[..start]` is history that matches may reach back into (linked frame blocks).
/// Written here rather than taken from lz4_flex so that it can be strict: besides every bounds
/// check, the block must end with a literals-only sequence whose token has a zero match-length
/// nibble, as every LZ4 encoder writes it. Decoders that ignore that nibble would accept a
/// corrupted byte the file checksum cannot see (it covers only the decompressed page).
fn lz4_block_decompress(src: &[u8], out: &mut [u8], start: usize) -> Result<usize, String> {
    let mut i = 0; // read position in src
    let mut o = start; // write position in out
    loop {
        let token = *src
            .get(i)
            .ok_or("block ends where a sequence token was expected")?;
        i += 1;

        let mut lit_len = usize::from(token >> 4);
        if lit_len == 15 {
            lit_len = lit_len.saturating_add(read_length_extension(src, &mut i)?);
        }
        let literals = i
            .checked_add(lit_len)
            .and_then(|end| src.get(i..end))
            .ok_or_else(|| format!("{lit_len} literals run past the end of the block"))?;
        let dst = o
            .checked_add(lit_len)
            .and_then(|end| out.get_mut(o..end))
            .ok_or_else(|| format!("{lit_len} literals overflow the page at byte {o}"))?;
        dst.copy_from_slice(literals);
        i += lit_len;
        o += lit_len;

        if i == src.len() {
            // End of block: the last sequence carries literals only.
            if token & 0x0f != 0 {
                return Err(format!("last token 0x{token:02x} has a match length"));
            }
            return Ok(o - start);
        }

        let off = match src.get(i..i + 2) {
            Some(&[lo, hi]) => usize::from(u16::from_le_bytes([lo, hi])),
            _ => return Err("block ends inside a match offset".into()),
        };
        i += 2;
        if off == 0 || off > o {
            return Err(format!("match offset {off} at byte {o} is out of range"));
        }
        let mut match_len = usize::from(token & 0x0f);
        if match_len == 15 {
            match_len = match_len.saturating_add(read_length_extension(src, &mut i)?);
        }
        match_len = match_len.saturating_add(4); // the minimum match length is implied
        let end = o
            .checked_add(match_len)
            .filter(|&end| end <= out.len())
            .ok_or_else(|| format!("match of {match_len} bytes overflows the page at byte {o}"))?;
        // The match may overlap its own output (off < match_len), repeating a pattern of
        // period `off`. Copy in chunks that never overlap: out[from..o] always holds a whole
        // number of periods, so it can be copied forward as one piece, doubling each time.
        let from = o - off;
        while o < end {
            let n = (o - from).min(end - o);
            out.copy_within(from..from + n, o);
            o += n;
        }
    }
}

/// Reads the 255-continued length extension of an LZ4 token (each 255 byte adds 255 and
/// continues; any other byte adds itself and ends).
fn read_length_extension(src: &[u8], i: &mut usize) -> Result<usize, String> {
    let mut len = 0usize;
    loop {
        let b = *src.get(*i).ok_or("block ends inside a length")?;
        *i += 1;
        // Saturating: an absurd length must fail the bounds checks, not overflow.
        len = len.saturating_add(usize::from(b));
        if b != 255 {
            return Ok(len);
        }
    }
}

/// XXH32, the checksum of the LZ4 frame format (header byte, block and content checksums).
pub(super) fn xxh32(data: &[u8], seed: u32) -> u32 {
    const P1: u32 = 0x9E37_79B1;
    const P2: u32 = 0x85EB_CA77;
    const P3: u32 = 0xC2B2_AE3D;
    const P4: u32 = 0x27D4_EB2F;
    const P5: u32 = 0x1656_67B1;
    let round = |acc: u32, lane: u32| {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    };
    let le32 = |c: &[u8]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]);

    let stripes = data.chunks_exact(16);
    let tail = stripes.remainder();
    let mut h = if data.len() >= 16 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        for stripe in stripes {
            for (lane, word) in v.iter_mut().zip(stripe.chunks_exact(4)) {
                *lane = round(*lane, le32(word));
            }
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u32);
    let words = tail.chunks_exact(4);
    let bytes = words.remainder();
    for word in words {
        h = h
            .wrapping_add(le32(word).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
    }
    for &b in bytes {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

// ---- chains of files ---------------------------------------------------------------------
//
// A file's checksum proves only that its bytes are intact, not that it is the file its key
// names: an object overwritten with another valid LTX file (a copy gone wrong, a replica mixed
// up with another) decodes cleanly. Whoever reads files by key — a restore plan, a compaction —
// must therefore hold every header to its key and to the file before it. These two checks are
// the one place that is done.

/// Checks that `header` is the file whose key names the TXID range `named` (min, max).
pub fn check_named(header: &Header, named: (u64, u64)) -> Result<(), LtxError> {
    let found = (header.min_txid, header.max_txid);
    if found != named {
        return Err(LtxError::WrongFile { named, found });
    }
    Ok(())
}

/// Checks that `next` may follow `prev` in one chain of files applied in order (a restore plan,
/// compaction inputs): the same page size; contiguous TXIDs (`next.min <= prev.max + 1` and
/// `next.max > prev.max`: overlap allowed, gaps and steps back not, §1.11); and, where the format
/// allows it, the database checksums chain: when `next` tracks checksums and starts right after
/// `prev`, its pre-apply checksum must be `prev_post_apply` (the post-apply checksum in `prev`'s
/// trailer, once read; `None` skips that part). Litestream files never track checksums (flag
/// NoChecksum, both checksums 0), so for them the TXID and page-size rules are all there is.
pub fn check_follows(
    prev: &Header,
    prev_post_apply: Option<u64>,
    next: &Header,
) -> Result<(), LtxError> {
    if next.page_size != prev.page_size {
        return Err(LtxError::PageSizeMismatch {
            expected: prev.page_size,
            found: next.page_size,
        });
    }
    // Saturating: a prev ending at u64::MAX can be followed by nothing, since next.max must
    // exceed it.
    let contiguous =
        next.min_txid <= prev.max_txid.saturating_add(1) && next.max_txid > prev.max_txid;
    if !contiguous {
        return Err(LtxError::NotContiguous {
            prev: (prev.min_txid, prev.max_txid),
            next: (next.min_txid, next.max_txid),
        });
    }
    let tracks = |h: &Header| h.flags & HEADER_FLAG_NO_CHECKSUM == 0;
    let adjacent = next.min_txid == prev.max_txid.saturating_add(1);
    if let Some(post_apply) = prev_post_apply {
        if tracks(prev)
            && tracks(next)
            && adjacent
            && post_apply != 0
            && next.pre_apply_checksum != post_apply
        {
            return Err(LtxError::ChecksumChain {
                prev: (prev.min_txid, prev.max_txid),
                next: (next.min_txid, next.max_txid),
                post_apply,
                pre_apply: next.pre_apply_checksum,
            });
        }
    }
    Ok(())
}

/// Decodes and verifies a whole file, calling `f(pgno, page)` for each page in order. The
/// pages are passed before the checksum is known: discard them if this returns an error.
pub fn verify<R: Read>(r: R, mut f: impl FnMut(u32, &[u8])) -> Result<(Header, Trailer), LtxError> {
    let mut dec = Decoder::new(r)?;
    let mut buf = vec![0u8; dec.header().page_size as usize];
    while let Some(pgno) = dec.next_page(&mut buf)? {
        f(pgno, &buf);
    }
    let header = *dec.header();
    let trailer = dec.finish()?;
    Ok((header, trailer))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{
        build_file, example_header, example_page, fixture, lz4_frame, FrameOpts, PageEnc, Rng,
    };
    use super::*;

    const BLOCK_1: &str = "example-1page-block-ltx052.ltx";
    const FRAME_1: &str = "example-1page-frame-ltx051.ltx";
    const BLOCK_2: &str = "example-2page-random-block-ltx052.ltx";
    const FRAME_2: &str = "example-2page-random-frame-ltx051.ltx";

    /// Header, trailer and pages of a fully verified file.
    type Decoded = (Header, Trailer, Vec<(u32, Vec<u8>)>);

    fn decode(file: &[u8]) -> Result<Decoded, LtxError> {
        let mut pages = vec![];
        let (h, t) = verify(file, |pgno, data| pages.push((pgno, data.to_vec())))?;
        Ok((h, t, pages))
    }

    fn expect_corrupt(file: &[u8], needle: &str) {
        match decode(file) {
            Err(LtxError::Corrupt { msg, .. }) => assert!(msg.contains(needle), "{msg}"),
            Err(e) => panic!("expected Corrupt containing {needle:?}, got {e}"),
            Ok(_) => panic!("expected Corrupt containing {needle:?}, decoded fine"),
        }
    }

    #[test]
    fn xxh32_vectors() {
        assert_eq!(xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(xxh32(b"abc", 0), 0x32D1_53FF);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition", 0),
            0xE229_3B2F
        );
        // The LZ4 frame header checksum byte ltx v0.5.1 writes for FLG 0x64, BD 0x40.
        assert_eq!((xxh32(&[0x64, 0x40], 0) >> 8) as u8, 0xA7);
        // The content checksum stored in fixture B (a9 aa 1e 85, little-endian).
        assert_eq!(xxh32(&example_page(), 0), 0x851E_AAA9);
    }

    #[test]
    fn lz4_matches_lz4_flex() {
        use lz4_flex::block::{compress_into, decompress_into, get_maximum_output_size};
        let mut rng = Rng(5);
        for round in 0..300 {
            // Data of every flavour: runs (overlapping matches), repeats at distance, noise.
            let len = 1 + rng.below(6000) as usize;
            let mut data = vec![0u8; len];
            let mut i = 0;
            while i < len {
                let n = (1 + rng.below(300) as usize).min(len - i);
                match rng.below(3) {
                    0 => data[i..i + n].fill(rng.next_u64() as u8),
                    1 if i > 0 => {
                        let off = 1 + rng.below(i as u64) as usize;
                        for k in i..i + n {
                            data[k] = data[k - off];
                        }
                    }
                    _ => rng.fill(&mut data[i..i + n]),
                }
                i += n;
            }
            let mut comp = vec![0u8; get_maximum_output_size(len)];
            let n = compress_into(&data, &mut comp).unwrap();
            let mut out = vec![0u8; len];
            assert_eq!(
                lz4_block_decompress(&comp[..n], &mut out, 0),
                Ok(len),
                "round {round}"
            );
            assert_eq!(out, data, "round {round}");
        }
        // On garbage and on mutated valid blocks, whatever we accept lz4_flex decodes the same.
        let mut seed_block = vec![0u8; 64];
        for (i, b) in seed_block.iter_mut().enumerate() {
            *b = (i % 7) as u8;
        }
        let mut comp = vec![0u8; get_maximum_output_size(64)];
        let n = compress_into(&seed_block, &mut comp).unwrap();
        comp.truncate(n);
        let mut accepted = 0;
        for round in 0..20_000 {
            let src = if round % 2 == 0 {
                let mut g = vec![0u8; 1 + rng.below(40) as usize];
                rng.fill(&mut g);
                g
            } else {
                let mut m = comp.clone();
                let i = rng.below(m.len() as u64) as usize;
                m[i] ^= 1 << rng.below(8);
                m
            };
            let mut ours = vec![0u8; 600];
            let mut theirs = vec![0u8; 600];
            if let Ok(n) = lz4_block_decompress(&src, &mut ours, 0) {
                accepted += 1;
                assert_eq!(
                    decompress_into(&src, &mut theirs).ok(),
                    Some(n),
                    "{src:02x?}"
                );
                assert_eq!(ours[..n], theirs[..n]);
            }
        }
        assert!(accepted > 1000, "only {accepted} blocks were valid");
    }

    #[test]
    fn lz4_strictness() {
        let mut out = [0u8; 16];
        // "abc" then a match of 8 at offset 3, then 1 final literal.
        let ok = [0x34, b'a', b'b', b'c', 3, 0, 0x10, b'z'];
        assert_eq!(lz4_block_decompress(&ok, &mut out, 0), Ok(12));
        assert_eq!(&out[..12], b"abcabcabcabz");
        let mut nibble = ok;
        nibble[6] = 0x11; // final literals-only token with a match nibble
        assert!(lz4_block_decompress(&nibble, &mut out, 0).is_err());
        // Ending right after a match (no final literals token).
        assert!(lz4_block_decompress(&ok[..6], &mut out, 0).is_err());
        // Offset 0, offset before the start, output overflow, truncated literals.
        assert!(lz4_block_decompress(&[0x30, 1, 2, 3, 0, 0, 0x00], &mut out, 0).is_err());
        assert!(lz4_block_decompress(&[0x30, 1, 2, 3, 4, 0, 0x00], &mut out, 0).is_err());
        assert!(lz4_block_decompress(&[0x3f, 1, 2, 3, 1, 0, 200, 0x00], &mut out, 0).is_err());
        assert!(lz4_block_decompress(&[0x50, 1, 2], &mut out, 0).is_err());
        assert!(lz4_block_decompress(&[], &mut out, 0).is_err());
        // History before `start` is reachable (linked frame blocks).
        let mut buf = *b"xyz\0\0\0\0\0";
        assert_eq!(
            lz4_block_decompress(&[0x01, 3, 0, 0x00], &mut buf, 3),
            Ok(5)
        );
        assert_eq!(&buf, b"xyzxyzxy");
    }

    #[test]
    fn one_page_fixtures() {
        for (name, checksum, frame_size) in [
            (BLOCK_1, 0x86a5_079c_da24_236c, 66),
            (FRAME_1, 0xb21d_9178_5173_fd3e, 81),
        ] {
            let file = fixture(name);
            let (h, t, pages) = decode(&file).unwrap();
            assert_eq!(h, example_header(), "{name}");
            assert_eq!(t.post_apply_checksum, 0);
            assert_eq!(t.file_checksum, checksum, "{name}");
            assert_eq!(pages, vec![(1, example_page())], "{name}");
            // The index entry (pgno 1, offset 100, size) sits right after the terminator.
            let idx = HEADER_SIZE + frame_size + PAGE_HEADER_SIZE;
            assert_eq!(&file[idx..idx + 4], &[1, 100, frame_size as u8, 0]);
        }
    }

    #[test]
    fn two_page_fixtures() {
        let expected = Header {
            flags: 2,
            page_size: 4096,
            commit: 3,
            min_txid: 5,
            max_txid: 5,
            timestamp_ms: 1,
            ..Default::default()
        };
        let (hb, tb, block) = decode(&fixture(BLOCK_2)).unwrap();
        let (hf, tf, frame) = decode(&fixture(FRAME_2)).unwrap();
        assert_eq!(hb, expected);
        assert_eq!(hf, expected);
        assert_eq!(tb.file_checksum, 0xa9f4_d7a9_90dd_81e1);
        assert_eq!(tf.file_checksum, 0xba51_95a4_9e0c_05af);
        assert_eq!(block.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(block, frame, "both encodings hold the same pages");
        assert_ne!(block[0].1, block[1].1);
        // Incompressible: the frame fixture stores the page (size word 0x80001000).
        let f = fixture(FRAME_2);
        assert_eq!(&f[113..117], &0x8000_1000u32.to_le_bytes());
    }

    #[test]
    fn streaming_api() {
        let file = fixture(BLOCK_2);
        let mut dec = Decoder::new(&file[..]).unwrap();
        assert_eq!(dec.header().commit, 3);
        let mut small = vec![0u8; 512];
        assert!(matches!(
            dec.next_page(&mut small),
            Err(LtxError::InvalidInput(_))
        ));
        let mut buf = vec![0u8; 4096];
        assert_eq!(dec.next_page(&mut buf).unwrap(), Some(1)); // still usable
        let early = Decoder::new(&file[..]).unwrap();
        assert!(matches!(early.finish(), Err(LtxError::InvalidInput(_))));
        assert_eq!(dec.next_page(&mut buf).unwrap(), Some(3));
        assert_eq!(dec.next_page(&mut buf).unwrap(), None);
        assert_eq!(dec.next_page(&mut buf).unwrap(), None);
        assert_eq!(dec.finish().unwrap().file_checksum, 0xa9f4_d7a9_90dd_81e1);
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        for (name, patterns) in [
            (BLOCK_1, &[0x01u8, 0x80, 0xff][..]),
            (FRAME_1, &[0x01, 0x80, 0xff][..]),
            (BLOCK_2, &[0x10][..]),
            (FRAME_2, &[0x10][..]),
        ] {
            let file = fixture(name);
            for i in 0..file.len() {
                for &x in patterns {
                    let mut bad = file.clone();
                    bad[i] ^= x;
                    assert!(
                        decode(&bad).is_err(),
                        "{name}: byte {i} ^ {x:#04x} accepted"
                    );
                }
            }
        }
    }

    #[test]
    fn truncation_and_trailing_bytes() {
        for name in [BLOCK_1, FRAME_1] {
            let file = fixture(name);
            for len in 0..file.len() {
                assert!(
                    decode(&file[..len]).is_err(),
                    "{name}: {len} bytes accepted"
                );
            }
            assert!(matches!(
                decode(&file[..file.len() - 1]),
                Err(LtxError::Truncated {
                    what: "trailer",
                    ..
                })
            ));
            assert!(matches!(
                decode(&file[..50]),
                Err(LtxError::Truncated {
                    what: "header",
                    offset: 0
                })
            ));
            let mut long = file.clone();
            long.push(0);
            assert!(matches!(decode(&long), Err(LtxError::TrailingData { .. })));
        }
    }

    #[test]
    fn fuzz_mutations_never_panic() {
        let files: Vec<Vec<u8>> = [BLOCK_1, FRAME_1, BLOCK_2, FRAME_2]
            .iter()
            .map(|n| fixture(n))
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..20_000 {
            // Mostly the small files: they exercise the same paths much faster.
            let pick = if rng.below(10) < 8 {
                rng.below(2)
            } else {
                2 + rng.below(2)
            };
            let mut f = files[pick as usize].clone();
            for _ in 0..1 + rng.below(4) {
                let len = f.len() as u64;
                let i = rng.below(len) as usize;
                match rng.below(6) {
                    0 => f[i] ^= 1 << rng.below(8),
                    1 => f[i] = rng.next_u64() as u8,
                    2 => f.insert(i, rng.next_u64() as u8),
                    3 => {
                        f.remove(i);
                    }
                    4 => f.truncate(i),
                    _ => {
                        // Overwrite with a boundary value: 0x00, 0x7f, 0x80 or 0xff.
                        f[i] = [0x00, 0x7f, 0x80, 0xff][rng.below(4) as usize];
                    }
                }
                if f.is_empty() {
                    break;
                }
            }
            if decode(&f).is_ok() && !files.contains(&f) {
                accepted += 1;
            }
        }
        // A mutation that changes nothing (e.g. 0xff over 0xff) leaves the file valid; any
        // real change must be caught.
        assert_eq!(accepted, 0, "mutated files were accepted");
    }

    #[test]
    fn frame_variants() {
        let mut rng = Rng(99);
        let mut page = vec![0u8; 4096];
        for chunk in page.chunks_mut(64) {
            let v = rng.next_u64() as u8;
            chunk[..32].iter_mut().for_each(|b| *b = v); // half runs, half random
            rng.fill(&mut chunk[32..]);
        }
        let variants = [
            FrameOpts::go(),
            FrameOpts::default(),
            FrameOpts {
                stored: true,
                ..FrameOpts::go()
            },
            FrameOpts {
                block_len: 1000,
                ..FrameOpts::go()
            },
            FrameOpts {
                block_len: 1000,
                linked: true,
                ..FrameOpts::go()
            },
            FrameOpts {
                block_len: 1024,
                stored: true,
                block_checksums: true,
                ..FrameOpts::default()
            },
            FrameOpts {
                block_checksums: true,
                content_size: true,
                content_checksum: true,
                ..FrameOpts::default()
            },
        ];
        let h = Header {
            commit: 2,
            ..example_header()
        };
        for o in variants {
            let pages = vec![
                (1, PageEnc::Frame(o), example_page()),
                (2, PageEnc::Frame(o), page.clone()),
            ];
            let (_, _, got) = decode(&build_file(&h, &pages)).unwrap();
            assert_eq!(got, vec![(1, example_page()), (2, page.clone())]);
        }
    }

    #[test]
    fn go_frame_layout_matches_fixture() {
        // Our test frame writer reproduces the ltx v0.5.1 layout byte for byte around the
        // payload; check that against fixture B so the frame tests above mean something.
        let f = lz4_frame(&example_page(), FrameOpts::go());
        let b = fixture(FRAME_1);
        assert_eq!(&f[..7], &b[106..113]); // magic, FLG, BD, HC
        assert_eq!(&f[f.len() - 8..], &b[173..181]); // EndMark, XXH32
    }

    #[test]
    fn mixed_encodings_in_one_file() {
        let pages: Vec<(u32, PageEnc, Vec<u8>)> = (1..=4u32)
            .map(|p| {
                let enc = match p {
                    2 => PageEnc::Frame(FrameOpts::go()),
                    3 => PageEnc::Frame(FrameOpts {
                        stored: true,
                        ..FrameOpts::go()
                    }),
                    _ => PageEnc::Block,
                };
                (p, enc, vec![p as u8; 4096])
            })
            .collect();
        let h = Header {
            commit: 4,
            ..example_header()
        };
        let (_, _, got) = decode(&build_file(&h, &pages)).unwrap();
        let want: Vec<(u32, Vec<u8>)> = pages.into_iter().map(|(p, _, d)| (p, d)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn frame_errors() {
        let page = example_page();
        let h = example_header();
        let file_with = |frame: Vec<u8>| {
            // Splice a hand-made frame into fixture-shaped file; structural checks fire
            // before the file checksum is reached.
            let mut f = build_file(&h, &[(1, PageEnc::Frame(FrameOpts::go()), page.clone())]);
            let good = lz4_frame(&page, FrameOpts::go());
            f.splice(106..106 + good.len(), frame);
            f
        };
        let go = lz4_frame(&page, FrameOpts::go());

        let mut f = go.clone();
        f[6] ^= 1; // header checksum
        expect_corrupt(&file_with(f), "header checksum");
        let mut f = go.clone();
        let n = f.len();
        f[n - 1] ^= 1; // content checksum
        expect_corrupt(&file_with(f), "content checksum");
        let mut f = go.clone();
        f[4] |= 0x01; // dictionary ID flag (and HC now wrong, but FLG is checked first)
        expect_corrupt(&file_with(f), "dictionary");
        let mut f = go.clone();
        f[0] = 0x05;
        expect_corrupt(&file_with(f), "magic");

        // Content size that is not the page size (with a correct header checksum).
        let mut f = lz4_frame(
            &page,
            FrameOpts {
                content_size: true,
                ..FrameOpts::go()
            },
        );
        f[7] = 0xff; // content size is bytes 6..14, header checksum byte 14
        f[14] = (xxh32(&f[4..14], 0) >> 8) as u8;
        expect_corrupt(&file_with(f), "content size");

        // A block checksum that does not match.
        let mut f = lz4_frame(
            &page,
            FrameOpts {
                block_checksums: true,
                ..FrameOpts::go()
            },
        );
        let n = f.len();
        f[n - 9] ^= 1; // last byte of the block checksum (before EndMark + content checksum)
        expect_corrupt(&file_with(f), "block checksum");

        // A frame that decodes to less than a page.
        let short = lz4_frame(&page[..4000], FrameOpts::default());
        expect_corrupt(&file_with(short), "decompressed to 4000 bytes");

        // A stored block bigger than the page.
        let mut f = go[..7].to_vec();
        f.extend_from_slice(&(0x8000_0000u32 | 5000).to_le_bytes());
        f.extend_from_slice(&[0u8; 5000]);
        expect_corrupt(&file_with(f), "overflows the page");
    }

    #[test]
    fn structural_errors() {
        let h = |commit: u32, min: u64| Header {
            flags: 2,
            page_size: 512,
            commit,
            min_txid: min,
            max_txid: min.max(3),
            timestamp_ms: 1,
            ..Default::default()
        };
        let p = |pgno: u32| (pgno, PageEnc::Block, vec![pgno as u8; 512]);
        expect_corrupt(&build_file(&h(5, 2), &[p(2), p(1)]), "strictly ascending");
        expect_corrupt(&build_file(&h(5, 2), &[p(2), p(2)]), "strictly ascending");
        expect_corrupt(&build_file(&h(5, 2), &[p(6)]), "beyond the commit");
        expect_corrupt(&build_file(&h(5, 1), &[p(1), p(3)]), "missing page 2");
        expect_corrupt(&build_file(&h(5, 1), &[p(2)]), "missing page 1");
        expect_corrupt(
            &build_file(&h(3, 1), &[p(1), p(2)]),
            "snapshot ends after page 2",
        );
        let short = (1, PageEnc::Block, vec![1u8; 500]);
        expect_corrupt(&build_file(&h(1, 1), &[short]), "decompressed to 500 bytes");
        // Incremental files may be sparse, and a snapshot may be complete.
        assert!(decode(&build_file(&h(9, 2), &[p(2), p(9)])).is_ok());
        assert!(decode(&build_file(&h(2, 1), &[p(1), p(2)])).is_ok());

        // The lock page: 64 KiB pages put it at 16385, reachable in an incremental file.
        let big = Header {
            page_size: 65536,
            ..h(20_000, 2)
        };
        let lock = (16_385, PageEnc::Block, vec![0u8; 65536]);
        expect_corrupt(&build_file(&big, &[lock]), "lock page");

        // Invalid page flags and pgno 0 with flags set.
        let mut f = fixture(BLOCK_1);
        f[105] = 0x03;
        expect_corrupt(&f, "invalid page flags");
        let mut f = fixture(BLOCK_1);
        f[100..104].copy_from_slice(&[0, 0, 0, 0]);
        expect_corrupt(&f, "pgno 0");
        // Compressed size beyond any valid LZ4 block for this page size.
        let mut f = fixture(BLOCK_1);
        f[106..110].copy_from_slice(&100_000u32.to_be_bytes());
        expect_corrupt(&f, "exceeds the maximum");
    }

    #[test]
    fn index_and_trailer_errors() {
        let file = fixture(BLOCK_1);
        // Index entry (0xac: pgno 1, off 100, size 66, end 0), then index size at 0xb0.
        let mut f = file.clone();
        f[0xad] = 101;
        expect_corrupt(&f, "do not match");
        let mut f = file.clone();
        f[0xac] = 0;
        expect_corrupt(&f, "page index has 0 entries, the page block has 1 pages");
        let mut f = file.clone();
        f[0xaf] = 7;
        expect_corrupt(&f, "more entries");
        // A non-minimal varint with the right value is accepted up to the index size check.
        let mut f = file.clone();
        f.splice(0xac..0xad, [0x81, 0x00]);
        expect_corrupt(&f, "page index size");
        let mut f = file.clone();
        f[0xb7] = 5;
        expect_corrupt(&f, "page index size");
        let mut f = file.clone();
        f[0xc7] ^= 1;
        assert!(matches!(decode(&f), Err(LtxError::ChecksumMismatch { .. })));
        // An overlong varint in the index.
        let mut f = file.clone();
        f.splice(
            0xac..0xad,
            [
                0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
        );
        expect_corrupt(&f, "overflows");
    }

    #[test]
    fn post_apply_must_be_zero_with_no_checksum() {
        // Build a file whose trailer carries a post-apply checksum but whose file checksum is
        // right, to reach the post-apply rule.
        let mut f = fixture(BLOCK_1);
        let n = f.len();
        f[n - 16] = 0x80;
        let mut crc = CRC64.digest();
        crc.update(&f[..HEADER_SIZE + 10]);
        crc.update(&example_page());
        crc.update(&f[HEADER_SIZE + 66..n - 8]);
        let ck = crc.finalize() | CHECKSUM_FLAG;
        f[n - 8..].copy_from_slice(&ck.to_be_bytes());
        expect_corrupt(&f, "post-apply checksum");
    }

    /// A reader that returns at most 3 bytes per call and is sometimes interrupted.
    struct Trickle<'a> {
        data: &'a [u8],
        calls: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(5) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_and_io_errors() {
        for name in [BLOCK_1, FRAME_1, BLOCK_2, FRAME_2] {
            let file = fixture(name);
            let r = Trickle {
                data: &file,
                calls: 0,
            };
            assert!(verify(r, |_, _| {}).is_ok(), "{name}");
        }
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("connection reset"))
            }
        }
        assert!(matches!(Decoder::new(Broken), Err(LtxError::Io(_))));
    }

    #[test]
    fn failed_decoder_stays_failed() {
        let mut f = fixture(BLOCK_1);
        f[110] ^= 0xff; // first LZ4 token
        let mut dec = Decoder::new(&f[..]).unwrap();
        let mut buf = vec![0u8; 4096];
        assert!(matches!(
            dec.next_page(&mut buf),
            Err(LtxError::Corrupt { .. })
        ));
        assert!(matches!(
            dec.next_page(&mut buf),
            Err(LtxError::InvalidInput(_))
        ));
        assert!(matches!(dec.finish(), Err(LtxError::InvalidInput(_))));
    }

    #[test]
    fn chain_checks() {
        let h = |min: u64, max: u64| Header {
            min_txid: min,
            max_txid: max,
            ..example_header()
        };
        check_named(&h(4, 4), (4, 4)).unwrap();
        let e = check_named(&h(3, 3), (4, 4)).unwrap_err();
        assert!(matches!(
            e,
            LtxError::WrongFile {
                named: (4, 4),
                found: (3, 3)
            }
        ));
        assert!(e.to_string().contains(
            "the file named 0000000000000004-0000000000000004.ltx holds TXIDs \
             0000000000000003-0000000000000003 by its header"
        ));
        // Contiguous, overlapping: fine. Same range again, a step back, a gap: not.
        check_follows(&h(1, 3), None, &h(4, 4)).unwrap();
        check_follows(&h(1, 6), Some(0), &h(1, 8)).unwrap();
        for (prev, next) in [((3, 3), (3, 3)), ((1, 5), (2, 4)), ((1, 3), (5, 5))] {
            assert!(matches!(
                check_follows(&h(prev.0, prev.1), None, &h(next.0, next.1)),
                Err(LtxError::NotContiguous { .. })
            ));
        }
        assert!(check_follows(&h(1, u64::MAX), None, &h(2, u64::MAX)).is_err());
        let other_size = Header {
            page_size: 1024,
            ..h(2, 2)
        };
        assert!(matches!(
            check_follows(&h(1, 1), None, &other_size),
            Err(LtxError::PageSizeMismatch {
                expected: 4096,
                found: 1024
            })
        ));
        // Files that track database checksums chain them: next's pre-apply = prev's post-apply.
        let tracked = |min: u64, max: u64, pre: u64| Header {
            flags: 0,
            pre_apply_checksum: pre,
            ..h(min, max)
        };
        let post = CHECKSUM_FLAG | 0x1234;
        check_follows(&tracked(1, 1, 0), Some(post), &tracked(2, 2, post)).unwrap();
        let e = check_follows(
            &tracked(1, 1, 0),
            Some(post),
            &tracked(2, 2, CHECKSUM_FLAG | 9),
        )
        .unwrap_err();
        assert!(matches!(e, LtxError::ChecksumChain { .. }), "{e}");
        // Not checkable: the trailer not read yet, overlapping files, a NoChecksum side.
        check_follows(&tracked(1, 1, 0), None, &tracked(2, 2, CHECKSUM_FLAG | 9)).unwrap();
        check_follows(
            &tracked(1, 3, 0),
            Some(post),
            &tracked(2, 4, CHECKSUM_FLAG | 9),
        )
        .unwrap();
        check_follows(&h(1, 1), Some(post), &tracked(2, 2, CHECKSUM_FLAG | 9)).unwrap();
    }
}
