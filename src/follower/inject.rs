//! The WAL writer of a follower: appends one set of page images to the `-wal` file as ONE
//! committed transaction and publishes it through the wal-index, exactly as SQLite's own writer
//! does (`sqlite3WalFrames` + `walIndexAppend` + `walIndexWriteHdr` in `wal.c`), so that every
//! other connection — of this process or any other — sees the transaction atomically.
//!
//! The sequence, with SQLite's WAL write lock (wal-index lock 0) held by our own connection:
//! 1. read the wal-index header (both copies equal, checksum valid — else SQLite must recover
//!    it first: [`InjectError::NeedsRecovery`]);
//! 2. if `mxFrame` is 0, write a fresh WAL header (new salts, as a restart would);
//! 3. append one frame per page after `mxFrame`, only the last one a commit frame (database
//!    size), checksums chained from the previous frame; fsync;
//! 4. enter the frames in the wal-index's page-number arrays and hash tables;
//! 5. write the new header: copy 1, barrier, copy 0 (readers compare copy 0 with copy 1 and
//!    retry on a mismatch, so they see the old commit or the new one, never a mix).
//!
//! Invariants:
//! - Nothing above `mxFrame` is visible to any reader, and the commit frame is written last:
//!   until step 5 readers see the old state; a crash before the fsync leaves at most a torn,
//!   uncommitted tail that SQLite's recovery ignores (it stops at the first bad checksum and
//!   uses only complete commits).
//! - Frames are only ever appended: a frame some reader may use (≤ `mxFrame`) is never
//!   overwritten, and the WAL is never restarted here (SQLite's checkpoints do that).
//! - The pure parts (header layout, hash-table maintenance, frame lookup) work on any
//!   [`WalIndexMem`] and are unit-tested on an in-memory wal-index; the SQLite-mapped one is
//!   [`ShmMem`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Context, Error, Result};
use crate::host::{DbFile, ShmRegion, WAL_WRITE_LOCK};
use crate::state::{Position, WalPosition};
use crate::wal::{self, wal_checksum, WalHeader};

/// `sizeof(WalIndexHdr)` in 32-bit words.
const HDR_WORDS: usize = 12;
/// Two header copies and `WalCkptInfo` (136 bytes) precede region 0's page-number array.
const INDEX_HDR_WORDS: usize = 34;
/// `WalCkptInfo.nBackfill`, right after the two header copies.
const BACKFILL_WORD: usize = 2 * HDR_WORDS;
/// Frames indexed per region (`HASHTABLE_NPAGE`), and in region 0 after the header.
const NPAGE: u32 = 4096;
const NPAGE_ONE: u32 = NPAGE - INDEX_HDR_WORDS as u32;
/// Hash slots per region (`HASHTABLE_NSLOT`), u16 each, starting right after the 4096 words
/// of page numbers.
const NSLOT: usize = 8192;
const HASH_AT_HALF: usize = 2 * NPAGE as usize;
/// `HASHTABLE_HASH_1`: the multiplier of SQLite's page-number hash.
const HASH_MUL: u32 = 383;
/// `WALINDEX_MAX_VERSION`, the wal-index header's iVersion.
const INDEX_VERSION: u32 = 3_007_000;
/// Frames are written in batches of about this many bytes (one pwrite each).
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Why a commit could not be injected.
#[derive(Debug)]
pub enum InjectError {
    /// The wal-index header is not valid (torn by a crashed writer, or not yet initialised):
    /// SQLite recovers it on the next read; release the lock, read, try again.
    NeedsRecovery,
    /// The wal-index or WAL contradicts itself or us: never written over.
    Corrupt(String),
    Io(Error),
}

impl std::fmt::Display for InjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InjectError::NeedsRecovery => write!(f, "the wal-index needs recovery"),
            InjectError::Corrupt(m) => write!(f, "{m}"),
            InjectError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<Error> for InjectError {
    fn from(e: Error) -> Self {
        InjectError::Io(e)
    }
}

impl From<std::io::Error> for InjectError {
    fn from(e: std::io::Error) -> Self {
        InjectError::Io(Error::msg(e.to_string()))
    }
}

impl From<InjectError> for Error {
    fn from(e: InjectError) -> Self {
        match e {
            InjectError::Io(e) => e,
            other => Error::msg(other.to_string()),
        }
    }
}

/// 32-bit and 16-bit access to the wal-index, region by region (regions are 32 KiB).
pub trait WalIndexMem {
    fn load32(&mut self, region: usize, word: usize) -> Result<u32>;
    fn store32(&mut self, region: usize, word: usize, value: u32) -> Result<()>;
    fn load16(&mut self, region: usize, half: usize) -> Result<u16>;
    fn store16(&mut self, region: usize, half: usize, value: u16) -> Result<()>;
    /// A memory barrier between stores other processes read in order.
    fn barrier(&mut self);
}

/// `WalIndexHdr`, every field as SQLite keeps it (native byte order, salts as raw bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    pub version: u32,
    pub unused: u32,
    pub change: u32,
    pub is_init: u8,
    pub big_end_cksum: u8,
    /// Page size as SQLite encodes it in 16 bits (`(sz & 0xff00) | (sz >> 16)`).
    pub page_size_field: u16,
    pub max_frame: u32,
    pub n_page: u32,
    pub frame_cksum: (u32, u32),
    pub salt: [u8; 8],
    pub cksum: (u32, u32),
}

fn native_big_endian() -> bool {
    cfg!(target_endian = "big")
}

impl IndexHeader {
    fn to_bytes(self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0..4].copy_from_slice(&self.version.to_ne_bytes());
        b[4..8].copy_from_slice(&self.unused.to_ne_bytes());
        b[8..12].copy_from_slice(&self.change.to_ne_bytes());
        b[12] = self.is_init;
        b[13] = self.big_end_cksum;
        b[14..16].copy_from_slice(&self.page_size_field.to_ne_bytes());
        b[16..20].copy_from_slice(&self.max_frame.to_ne_bytes());
        b[20..24].copy_from_slice(&self.n_page.to_ne_bytes());
        b[24..28].copy_from_slice(&self.frame_cksum.0.to_ne_bytes());
        b[28..32].copy_from_slice(&self.frame_cksum.1.to_ne_bytes());
        b[32..40].copy_from_slice(&self.salt);
        b[40..44].copy_from_slice(&self.cksum.0.to_ne_bytes());
        b[44..48].copy_from_slice(&self.cksum.1.to_ne_bytes());
        b
    }

    fn from_bytes(b: &[u8; 48]) -> IndexHeader {
        let u = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&b[32..40]);
        IndexHeader {
            version: u(0),
            unused: u(4),
            change: u(8),
            is_init: b[12],
            big_end_cksum: b[13],
            page_size_field: u16::from_ne_bytes([b[14], b[15]]),
            max_frame: u(16),
            n_page: u(20),
            frame_cksum: (u(24), u(28)),
            salt,
            cksum: (u(40), u(44)),
        }
    }

    fn words(self) -> [u32; HDR_WORDS] {
        let b = self.to_bytes();
        std::array::from_fn(|i| {
            u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        })
    }

    /// The checksum SQLite's `walIndexWriteHdr` stores (native order, over the first 40 bytes).
    fn computed_cksum(&self) -> (u32, u32) {
        wal_checksum(native_big_endian(), (0, 0), &self.to_bytes()[..40])
    }

    /// Set `is_init`, `version` and the checksum, as `walIndexWriteHdr` does before storing.
    fn sealed(mut self) -> IndexHeader {
        self.is_init = 1;
        self.version = INDEX_VERSION;
        self.cksum = self.computed_cksum();
        self
    }

    /// The WAL generation's salts as the WAL header stores them (big-endian values).
    pub fn salts(&self) -> (u32, u32) {
        let s = &self.salt;
        (
            u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
            u32::from_be_bytes([s[4], s[5], s[6], s[7]]),
        )
    }

    pub fn page_size(&self) -> u32 {
        let f = self.page_size_field as u32;
        (f & 0xfe00) + ((f & 0x0001) << 16)
    }
}

fn encode_page_size(page_size: u32) -> u16 {
    ((page_size & 0xff00) | (page_size >> 16)) as u16
}

/// Read the header the way SQLite's readers do: copy 0, barrier, copy 1; valid only if the copies
/// agree, it is initialised and its checksum holds.
pub fn read_header(mem: &mut dyn WalIndexMem) -> Result<Option<IndexHeader>> {
    let mut first = [0u8; 48];
    let mut second = [0u8; 48];
    for i in 0..HDR_WORDS {
        first[4 * i..4 * i + 4].copy_from_slice(&mem.load32(0, i)?.to_ne_bytes());
    }
    mem.barrier();
    for i in 0..HDR_WORDS {
        second[4 * i..4 * i + 4].copy_from_slice(&mem.load32(0, HDR_WORDS + i)?.to_ne_bytes());
    }
    if first != second {
        return Ok(None);
    }
    let h = IndexHeader::from_bytes(&first);
    if h.is_init == 0 || h.computed_cksum() != h.cksum {
        return Ok(None);
    }
    Ok(Some(h))
}

/// Publish `hdr` (sealed first): copy 1, barrier, copy 0 — `walIndexWriteHdr`'s order.
pub fn write_header(mem: &mut dyn WalIndexMem, hdr: IndexHeader) -> Result<IndexHeader> {
    let hdr = hdr.sealed();
    let words = hdr.words();
    for (i, w) in words.iter().enumerate() {
        mem.store32(0, HDR_WORDS + i, *w)?;
    }
    mem.barrier();
    for (i, w) in words.iter().enumerate() {
        mem.store32(0, i, *w)?;
    }
    mem.barrier();
    Ok(hdr)
}

/// `walFramePage`: the region indexing frame `frame` (1-based).
fn frame_region(frame: u32) -> usize {
    ((frame + NPAGE - NPAGE_ONE - 1) / NPAGE) as usize
}

/// `iZero` of a region: frames before it.
fn region_zero(region: usize) -> u32 {
    if region == 0 {
        0
    } else {
        NPAGE_ONE + (region as u32 - 1) * NPAGE
    }
}

/// The word holding the page number of the region's `idx`-th frame (1-based).
fn pgno_word(region: usize, idx: u32) -> usize {
    let first = if region == 0 { INDEX_HDR_WORDS } else { 0 };
    first + idx as usize - 1
}

fn hash_of(pgno: u32) -> usize {
    (pgno.wrapping_mul(HASH_MUL) as usize) & (NSLOT - 1)
}

/// `walCleanupHash`: forget every entry of the region holding `max_frame` that lies beyond it
/// (left by a writer that died mid-transaction).
fn cleanup_hash(mem: &mut dyn WalIndexMem, max_frame: u32) -> Result<()> {
    if max_frame == 0 {
        return Ok(());
    }
    let region = frame_region(max_frame);
    let limit = max_frame - region_zero(region);
    for slot in 0..NSLOT {
        if mem.load16(region, HASH_AT_HALF + slot)? as u32 > limit {
            mem.store16(region, HASH_AT_HALF + slot, 0)?;
        }
    }
    for w in pgno_word(region, limit + 1)..NPAGE as usize {
        mem.store32(region, w, 0)?;
    }
    Ok(())
}

/// `walIndexAppend`: enter frame `frame` (1-based) holding `pgno`. `max_frame` is the committed
/// frame count before this transaction (for the cleanup of a dead writer's leftovers).
pub fn index_frame(mem: &mut dyn WalIndexMem, frame: u32, pgno: u32, max_frame: u32) -> Result<()> {
    let region = frame_region(frame);
    let idx = frame - region_zero(region);
    if idx == 1 {
        // First frame of the region: whatever it held belongs to an earlier WAL generation.
        for w in pgno_word(region, 1)..NPAGE as usize {
            mem.store32(region, w, 0)?;
        }
        for slot in 0..NSLOT {
            mem.store16(region, HASH_AT_HALF + slot, 0)?;
        }
    }
    if mem.load32(region, pgno_word(region, idx))? != 0 {
        cleanup_hash(mem, max_frame)?;
    }
    let mut key = hash_of(pgno);
    let mut collide = idx;
    while mem.load16(region, HASH_AT_HALF + key)? != 0 {
        if collide == 0 {
            return Err(Error::msg(
                "the wal-index hash table is full (corrupt wal-index)",
            ));
        }
        collide -= 1;
        key = (key + 1) & (NSLOT - 1);
    }
    mem.store32(region, pgno_word(region, idx), pgno)?;
    mem.store16(region, HASH_AT_HALF + key, idx as u16)?;
    Ok(())
}

/// `walFindFrame`: the newest frame ≤ `max_frame` that holds `pgno`, if any.
pub fn find_frame(mem: &mut dyn WalIndexMem, pgno: u32, max_frame: u32) -> Result<Option<u32>> {
    if max_frame == 0 {
        return Ok(None);
    }
    for region in (0..=frame_region(max_frame)).rev() {
        let zero = region_zero(region);
        let mut found = None;
        let mut key = hash_of(pgno);
        for _ in 0..NSLOT {
            let slot = mem.load16(region, HASH_AT_HALF + key)? as u32;
            if slot == 0 {
                break;
            }
            let frame = slot + zero;
            if frame <= max_frame && mem.load32(region, pgno_word(region, slot))? == pgno {
                found = Some(frame);
            }
            key = (key + 1) & (NSLOT - 1);
        }
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The 32-byte WAL header SQLite writes when a transaction starts an empty WAL (native
/// checksum order, as `sqlite3WalFrames` does). Returns the bytes and their checksum.
pub fn encode_wal_header(
    page_size: u32,
    checkpoint_seq: u32,
    salts: (u32, u32),
) -> ([u8; 32], (u32, u32)) {
    let mut h = [0u8; 32];
    let magic = if native_big_endian() {
        wal::WAL_MAGIC_BE
    } else {
        wal::WAL_MAGIC_LE
    };
    h[0..4].copy_from_slice(&magic.to_be_bytes());
    h[4..8].copy_from_slice(&wal::WAL_VERSION.to_be_bytes());
    h[8..12].copy_from_slice(&page_size.to_be_bytes());
    h[12..16].copy_from_slice(&checkpoint_seq.to_be_bytes());
    h[16..20].copy_from_slice(&salts.0.to_be_bytes());
    h[20..24].copy_from_slice(&salts.1.to_be_bytes());
    let sum = wal_checksum(native_big_endian(), (0, 0), &h[..24]);
    h[24..28].copy_from_slice(&sum.0.to_be_bytes());
    h[28..32].copy_from_slice(&sum.1.to_be_bytes());
    (h, sum)
}

/// Append one frame (header + page) to `out`; returns its cumulative checksum.
pub fn encode_frame(
    out: &mut Vec<u8>,
    big_end: bool,
    prev: (u32, u32),
    salt: &[u8; 8],
    pgno: u32,
    commit: u32,
    page: &[u8],
) -> (u32, u32) {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&pgno.to_be_bytes());
    h[4..8].copy_from_slice(&commit.to_be_bytes());
    h[8..16].copy_from_slice(salt);
    let sum = wal_checksum(big_end, wal_checksum(big_end, prev, &h[..8]), page);
    h[16..20].copy_from_slice(&sum.0.to_be_bytes());
    h[20..24].copy_from_slice(&sum.1.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(page);
    sum
}

/// The wal-index as SQLite mapped it for a connection (regions mapped on first use, extended
/// when frames reach a new region).
pub struct ShmMem<'c> {
    db: &'c DbFile<'c>,
    regions: Vec<Option<ShmRegion<'c>>>,
}

impl<'c> ShmMem<'c> {
    pub fn new(db: &'c DbFile<'c>) -> ShmMem<'c> {
        ShmMem {
            db,
            regions: Vec::new(),
        }
    }

    fn region(&mut self, i: usize) -> Result<&ShmRegion<'c>> {
        if self.regions.len() <= i {
            self.regions.resize_with(i + 1, || None);
        }
        if self.regions[i].is_none() {
            self.regions[i] = Some(self.db.shm_region(i, true).ok_or_else(|| {
                Error::msg(format!("cannot map region {i} of the wal-index (-shm)"))
            })?);
        }
        Ok(self.regions[i].as_ref().expect("mapped above"))
    }
}

impl WalIndexMem for ShmMem<'_> {
    fn load32(&mut self, region: usize, word: usize) -> Result<u32> {
        Ok(self.region(region)?.load_u32(word))
    }
    fn store32(&mut self, region: usize, word: usize, value: u32) -> Result<()> {
        self.region(region)?.store_u32(word, value);
        Ok(())
    }
    fn load16(&mut self, region: usize, half: usize) -> Result<u16> {
        Ok(self.region(region)?.load_u16(half))
    }
    fn store16(&mut self, region: usize, half: usize, value: u16) -> Result<()> {
        self.region(region)?.store_u16(half, value);
        Ok(())
    }
    fn barrier(&mut self) {
        self.db.shm_barrier();
    }
}

/// A connection of the follower's own that holds SQLite's WAL write lock and injects commits.
/// It never runs a write transaction or a blocking checkpoint itself (SQLite would try to take
/// the lock it holds); its reads only trigger SQLite's own wal-index recovery when needed.
pub struct Injector {
    conn: Connection,
    wal_path: PathBuf,
    page_size: u32,
    locked: bool,
}

/// The result of one injected commit.
#[derive(Clone, Copy, Debug)]
pub struct Injected {
    /// Where the commit ends in the WAL, as a `Position` of the TXID it carries.
    pub position: Position,
    /// The wal-index header now published.
    pub header: IndexHeader,
}

impl Injector {
    /// Wrap `conn` (a fresh connection to the database, in WAL mode).
    pub fn new(conn: Connection, wal_path: &Path, page_size: u32) -> Result<Injector> {
        crate::host::set_persist_wal(&conn)?;
        let inj = Injector {
            conn,
            wal_path: wal_path.to_path_buf(),
            page_size,
            locked: false,
        };
        inj.refresh()?;
        Ok(inj)
    }

    /// An injector holding the write lock (a few tries over a few milliseconds; None when a
    /// writer kept it): what `litestream_start()` takes with a lease, so that no write is
    /// accepted before this instance knows whether it is the primary.
    pub fn gate(conn: Connection, wal_path: &Path, page_size: u32) -> Result<Option<Injector>> {
        /// A commit holds the lock for a few milliseconds at most.
        const TRIES: u32 = 50;
        let mut inj = Injector::new(conn, wal_path, page_size)?;
        for _ in 0..TRIES {
            if inj.try_lock()? {
                return Ok(Some(inj));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(None)
    }

    /// One read on our connection: opens the WAL and wal-index, and lets SQLite recover a
    /// wal-index that needs it. Only without the lock (recovery takes it).
    pub fn refresh(&self) -> Result<()> {
        debug_assert!(!self.locked);
        self.conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .context("reading the database before following")?;
        Ok(())
    }

    /// Take the WAL write lock, without waiting. false: a writer (or checkpoint) holds it.
    pub fn try_lock(&mut self) -> Result<bool> {
        if self.locked {
            return Ok(true);
        }
        let db = DbFile::new(&self.conn)?;
        match db.shm_lock_exclusive(WAL_WRITE_LOCK) {
            Some(got) => {
                self.locked = got;
                Ok(got)
            }
            None => Err(Error::msg(
                "the database's VFS has no shared-memory locks; a follower needs them",
            )),
        }
    }

    pub fn unlock(&mut self) {
        if self.locked {
            if let Ok(db) = DbFile::new(&self.conn) {
                db.shm_unlock_exclusive(WAL_WRITE_LOCK);
            }
            self.locked = false;
        }
    }

    /// The wal-index header now (valid only; with the lock held it cannot change under us).
    pub fn header(&self) -> Result<Option<IndexHeader>> {
        let db = DbFile::new(&self.conn)?;
        let mut mem = ShmMem::new(&db);
        read_header(&mut mem)
    }

    /// `nBackfill`: frames of this generation checkpointed into the database file.
    pub fn backfilled(&self) -> Result<u32> {
        let db = DbFile::new(&self.conn)?;
        let mut mem = ShmMem::new(&db);
        mem.load32(0, BACKFILL_WORD)
    }

    /// Read page `pgno` as the latest commit has it: from its newest WAL frame, else from the
    /// database file (through SQLite's own handle). Lock held, so nothing moves meanwhile.
    pub fn read_page(&self, pgno: u32, buf: &mut [u8]) -> Result<()> {
        let db = DbFile::new(&self.conn)?;
        let mut mem = ShmMem::new(&db);
        let hdr = read_header(&mut mem)?.ok_or(InjectError::NeedsRecovery)?;
        match find_frame(&mut mem, pgno, hdr.max_frame)? {
            Some(frame) => {
                let wal = File::open(&self.wal_path)
                    .with_context(|| format!("opening {}", self.wal_path.display()))?;
                let at = wal::WAL_HEADER_SIZE
                    + (frame as u64 - 1) * wal::frame_size(self.page_size)
                    + wal::FRAME_HEADER_SIZE;
                wal.read_exact_at(buf, at)
                    .with_context(|| format!("reading {}", self.wal_path.display()))?;
            }
            None => db
                .read_at(buf, (pgno as u64 - 1) * self.page_size as u64)
                .context("reading the database file")?,
        }
        Ok(())
    }

    /// Start a commit. The lock must be held.
    pub fn begin(&mut self) -> std::result::Result<CommitWriter<'_>, InjectError> {
        if !self.locked {
            return Err(InjectError::Corrupt(
                "internal error: a commit without the WAL write lock".into(),
            ));
        }
        let db = DbFile::new(&self.conn).map_err(|e| InjectError::Io(e.into()))?;
        let hdr = {
            let mut mem = ShmMem::new(&db);
            read_header(&mut mem)?.ok_or(InjectError::NeedsRecovery)?
        };
        let wal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.wal_path)
            .map_err(|e| {
                InjectError::Io(Error::msg(format!(
                    "opening {}: {e}",
                    self.wal_path.display()
                )))
            })?;
        let on_disk =
            WalHeader::read(&wal).map_err(|e| InjectError::Io(Error::msg(e.to_string())))?;
        let fs = wal::frame_size(self.page_size);
        let (salt, big_end, prev, checkpoint_seq, header_bytes) = if hdr.max_frame == 0 {
            // A new WAL generation: new salts (salt-1 + 1, a random salt-2, as a restart makes
            // them), so no frame left in the file from before can pass for one of ours.
            let salt1 = hdr.salts().0.wrapping_add(1);
            let salt2 = crate::replica_client::rand_u64() as u32;
            let seq = on_disk
                .map(|h| h.checkpoint_seq.wrapping_add(1))
                .unwrap_or(0);
            let (bytes, sum) = encode_wal_header(self.page_size, seq, (salt1, salt2));
            let mut salt = [0u8; 8];
            salt.copy_from_slice(&bytes[16..24]);
            (salt, native_big_endian(), sum, seq, Some(bytes))
        } else {
            let Some(disk) = on_disk else {
                return Err(InjectError::Corrupt(format!(
                    "{} has no valid header but the wal-index says it holds {} frames",
                    self.wal_path.display(),
                    hdr.max_frame
                )));
            };
            if disk.salts() != hdr.salts()
                || disk.page_size != self.page_size
                || hdr.page_size() != self.page_size
            {
                return Err(InjectError::Corrupt(format!(
                    "{} is not the WAL generation the wal-index describes",
                    self.wal_path.display()
                )));
            }
            let last = wal::read_frame_header(
                &wal,
                wal::WAL_HEADER_SIZE + (hdr.max_frame as u64 - 1) * fs,
            )
            .map_err(|e| InjectError::Io(Error::msg(e.to_string())))?;
            if last.map(|f| f.checksum()) != Some(hdr.frame_cksum) {
                return Err(InjectError::Corrupt(format!(
                    "the last committed frame of {} does not carry the wal-index's checksum",
                    self.wal_path.display()
                )));
            }
            (
                hdr.salt,
                hdr.big_end_cksum != 0,
                hdr.frame_cksum,
                disk.checkpoint_seq,
                None,
            )
        };
        Ok(CommitWriter {
            inj: self,
            wal,
            hdr,
            salt,
            big_end,
            prev,
            checkpoint_seq,
            header_bytes,
            next_offset: wal::WAL_HEADER_SIZE + hdr.max_frame as u64 * fs,
            buf: Vec::with_capacity(WRITE_BATCH_BYTES + fs as usize),
            pending: None,
            pgnos: Vec::new(),
        })
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.unlock();
    }
}

/// One commit being written: pages go in with [`CommitWriter::page`], [`CommitWriter::finish`]
/// writes the commit frame and publishes. Dropped unfinished, nothing is visible (no commit
/// frame was written; SQLite's next writer overwrites the uncommitted frames).
pub struct CommitWriter<'a> {
    inj: &'a Injector,
    wal: File,
    hdr: IndexHeader,
    salt: [u8; 8],
    big_end: bool,
    prev: (u32, u32),
    checkpoint_seq: u32,
    header_bytes: Option<[u8; 32]>,
    next_offset: u64,
    buf: Vec<u8>,
    /// The latest page, held back: it becomes the commit frame if it is the last.
    pending: Option<(u32, Vec<u8>)>,
    pgnos: Vec<u32>,
}

impl CommitWriter<'_> {
    /// Add the image of page `pgno` (pages in any order, each at most once).
    pub fn page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        if data.len() != self.inj.page_size as usize || pgno == 0 {
            return Err(Error::msg(format!(
                "internal error: page {pgno} of {} bytes for a {}-byte page size",
                data.len(),
                self.inj.page_size
            )));
        }
        if let Some((p, d)) = self.pending.take() {
            self.frame(p, 0, &d)?;
        }
        let mut copy = data.to_vec();
        if pgno == 1 {
            // The WAL-mode marks (file format read/write version 2): page 1 as the primary had
            // it in WAL mode; forced so that a database is never switched out of WAL by a page.
            copy[18] = 2;
            copy[19] = 2;
        }
        self.pending = Some((pgno, copy));
        Ok(())
    }

    fn frame(&mut self, pgno: u32, commit: u32, data: &[u8]) -> Result<()> {
        self.prev = encode_frame(
            &mut self.buf,
            self.big_end,
            self.prev,
            &self.salt,
            pgno,
            commit,
            data,
        );
        self.pgnos.push(pgno);
        if self.buf.len() >= WRITE_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.wal
            .write_all_at(&self.buf, self.next_offset)
            .with_context(|| format!("writing {}", self.inj.wal_path.display()))?;
        self.next_offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Write the commit frame (database size `commit` pages), fsync, index the frames, publish
    /// the header. Returns where the commit ends, as a position of `txid`.
    pub fn finish(mut self, commit: u32, txid: u64) -> std::result::Result<Injected, InjectError> {
        let Some((pgno, data)) = self.pending.take() else {
            return Err(InjectError::Corrupt(
                "internal error: a commit without pages".into(),
            ));
        };
        if commit == 0 {
            return Err(InjectError::Corrupt(
                "internal error: a commit of 0 pages".into(),
            ));
        }
        self.frame(pgno, commit, &data)?;
        self.flush()?;
        if let Some(h) = self.header_bytes {
            self.wal
                .write_all_at(&h, 0)
                .with_context(|| format!("writing {}", self.inj.wal_path.display()))?;
        }
        self.wal
            .sync_data()
            .with_context(|| format!("syncing {}", self.inj.wal_path.display()))?;
        let frames = self.pgnos.len() as u32;
        let db = DbFile::new(&self.inj.conn).map_err(|e| InjectError::Io(e.into()))?;
        let mut mem = ShmMem::new(&db);
        // The header must not have moved: we hold the write lock.
        if read_header(&mut mem)? != Some(self.hdr) {
            return Err(InjectError::Corrupt(
                "the wal-index header changed while the WAL write lock was held".into(),
            ));
        }
        let before = self.hdr.max_frame;
        for (i, pgno) in self.pgnos.iter().enumerate() {
            index_frame(&mut mem, before + 1 + i as u32, *pgno, before)?;
        }
        let new = write_header(
            &mut mem,
            IndexHeader {
                change: self.hdr.change.wrapping_add(1),
                big_end_cksum: u8::from(self.big_end),
                page_size_field: encode_page_size(self.inj.page_size),
                max_frame: before + frames,
                n_page: commit,
                frame_cksum: self.prev,
                salt: self.salt,
                ..self.hdr
            },
        )?;
        let (salt1, salt2) = new.salts();
        Ok(Injected {
            position: Position {
                txid,
                page_size: self.inj.page_size,
                commit,
                wal: WalPosition {
                    end: self.next_offset,
                    salt1,
                    salt2,
                    checkpoint_seq: self.checkpoint_seq,
                    frame_checksum: self.prev,
                },
                backfilled: false,
                db_stamp: None,
            },
            header: new,
        })
    }
}

#[cfg(test)]
mod tests;
