//! Capture: the committed frames since the position (or the whole database) become the next
//! L0 file, `<txid>-<txid>.ltx`, encoded into a spool and uploaded.
//!
//! Invariants:
//! - A page's content is the newest committed frame of the segment that has it, else the
//!   database file read through SQLite's own file handle (never a descriptor of ours).
//! - Every read of WAL frames is confirmed afterwards by the WAL header's salts: a restart that
//!   overwrote frames while they were read makes the caller plan again, never upload.

use std::fs::File;
use std::path::PathBuf;
use std::time::SystemTime;

use super::worker::Worker;
use crate::error::{Context, Error, Result};
use crate::host::DbFile;
use crate::ltx::{self, Encoder, Header};
use crate::replica_client::{unix_ms, PutStream, ReplicaClient, Spool, SPOOL_MEMORY_LIMIT};
use crate::state::{Position, WalPosition};
use crate::wal::{self, ReadAt, Resume, ScanOutcome, Segment, WalHeader};

/// Litestream's `max-sync-wal-bytes`: one L0 file covers at most this much WAL (more follows in the
/// next file), so a burst of writes does not become one giant upload.
const MAX_SYNC_WAL_BYTES: u64 = 64 << 20;

/// An L0 file encoded and checked, its parts sent or still in flight, not yet visible: it is
/// completed once the next file is encoded (`Worker::sync_wal_within`), so that its last parts
/// go out while the next file's pages are read.
pub(super) struct SealedL0<'a> {
    pub(super) pos: Position,
    sink: Box<dyn PutStream + 'a>,
}

/// What reading the WAL from a position gave.
pub(super) enum Encoded<'a> {
    /// No new commit. `moved`: a WAL restart with no frames yet still moves the position to the
    /// new generation, so the old frames' salts are never looked for again.
    Nothing { moved: Option<Position> },
    /// The next L0 file; `more` when WAL remains beyond the chunk limit.
    Sealed { file: SealedL0<'a>, more: bool },
    /// The WAL restarted while it was read: plan again (the upload is dropped).
    Replan,
    /// The WAL does not continue the position: a snapshot is needed.
    Snapshot { reason: String },
}

impl Worker {
    /// Read committed frames from `resume` after `base` and encode them as the next L0 file,
    /// streamed to `client` (nothing is visible before `SealedL0::complete`).
    pub(super) fn encode_incremental<'a>(
        &mut self,
        wal: &File,
        resume: Resume,
        base: Position,
        client: &'a dyn ReplicaClient,
    ) -> Result<Encoded<'a>> {
        let seg = match wal::scan(wal, resume, Some(MAX_SYNC_WAL_BYTES))? {
            ScanOutcome::NoWal => return Ok(Encoded::Nothing { moved: None }),
            ScanOutcome::PrevFrameMismatch { reason } => {
                return Ok(Encoded::Snapshot {
                    reason: format!("WAL continuity lost ({reason})"),
                });
            }
            ScanOutcome::Segment(s) => s,
        };
        if seg.commits == 0 {
            let moved = matches!(resume, Resume::FromStart).then(|| Position {
                wal: wal_position(&seg, seg.header.checkpoint_seq),
                backfilled: false,
                db_stamp: None,
                ..base
            });
            return Ok(Encoded::Nothing { moved });
        }
        let txid = base.txid + 1;
        let db = DbFile::new(&self.conn)?;
        let source = self.pages();
        let header = source.ltx_header(txid, seg.commit, &seg);
        let mut buf = vec![0u8; self.page_size as usize];
        let lock_page = ltx::lock_page(self.page_size);
        // Pages the transaction changed, plus pages the database grew by that are not in the WAL
        // (read from the database file), as Litestream does.
        let mut pages: Vec<u32> = seg.pages.keys().copied().collect();
        if seg.commit > base.commit {
            pages.extend(
                (base.commit + 1..=seg.commit)
                    .filter(|p| !seg.pages.contains_key(p) && *p != lock_page),
            );
            pages.sort_unstable();
        }
        // Streamed: the parts go out while later pages are read and encoded.
        let bound = ltx::max_encoded_size(self.page_size, pages.len() as u64);
        let mut sink =
            client.put_streaming(0, txid, txid, header.timestamp_ms, &source.spill_dir, bound)?;
        let mut enc = Encoder::new(&mut sink, header)?;
        for pgno in pages {
            source.read_page(wal, &db, &seg, pgno, &mut buf)?;
            enc.write_page(pgno, &buf)?;
        }
        enc.finish()?;
        if !wal_generation_unchanged(wal, &seg)? {
            return Ok(Encoded::Replan);
        }
        let more = seg.end < wal.len().unwrap_or(0) && seg.size() >= MAX_SYNC_WAL_BYTES;
        let pos = Position {
            txid,
            page_size: self.page_size,
            commit: seg.commit,
            wal: wal_position(&seg, seg.header.checkpoint_seq),
            backfilled: false,
            db_stamp: None,
        };
        Ok(Encoded::Sealed {
            file: SealedL0 { pos, sink },
            more,
        })
    }

    /// Make a sealed L0 file visible and our position.
    pub(super) fn complete_sealed(&mut self, sealed: SealedL0<'_>) -> Result<()> {
        let SealedL0 { pos, sink } = sealed;
        self.upload(&pos, || sink.finish())?;
        self.after_upload()
    }

    /// Upload a full image of the database at the next TXID. Returns true (nothing uploaded) when
    /// the WAL restarted while it was read: the caller plans again.
    pub(super) fn write_snapshot(&mut self, wal: Option<&File>, reason: &str) -> Result<bool> {
        let txid = match self.pos {
            Some(p) => p.txid + 1,
            None => self.ensure_remote_position()? + 1,
        };
        let seg = match wal {
            Some(f) => match wal::scan(f, Resume::FromStart, None)? {
                ScanOutcome::Segment(s) => Some(s),
                _ => None,
            },
            None => None,
        };
        let db = DbFile::new(&self.conn)?;
        let commit = match &seg {
            Some(s) if s.commits > 0 => s.commit,
            _ => (db.size()? / self.page_size as u64) as u32,
        };
        if commit == 0 {
            // An empty database has no pages to snapshot yet; the first write will give it some.
            return Ok(false);
        }
        let empty_seg;
        let seg_ref = match &seg {
            Some(s) => s,
            None => {
                empty_seg = empty_segment(self.page_size, commit);
                &empty_seg
            }
        };
        let source = self.pages();
        let header = source.ltx_header(txid, commit, seg_ref);
        let mut spool = source.encode_full_image(wal, &db, seg_ref, header, &|| false)?;
        if let (Some(f), Some(s)) = (wal, &seg) {
            if !wal_generation_unchanged(f, s)? {
                return Ok(true);
            }
        }
        let new_pos = Position {
            txid,
            page_size: self.page_size,
            commit,
            wal: wal_position(seg_ref, seg_ref.header.checkpoint_seq),
            backfilled: false,
            db_stamp: None,
        };
        let client = self.client.clone();
        self.upload(&new_pos, || {
            client.put(0, txid, txid, header.timestamp_ms, &mut spool)
        })
        .map_err(|e| e.context(format!("snapshot ({reason})")))?;
        let mut g = self.shared.lock();
        g.snapshots += 1;
        g.last_snapshot_reason = Some(format!("TXID {}: {reason}", ltx::format_txid(txid)));
        drop(g);
        self.after_upload()?;
        Ok(false)
    }

    /// How this database's pages are read and encoded.
    pub(super) fn pages(&self) -> PageSource {
        PageSource {
            page_size: self.page_size,
            spill_dir: self.meta.join("tmp"),
            db_path: self.shared.db_path.clone(),
        }
    }
}

/// Reads a database's pages (from a WAL segment or the file) and encodes them into LTX files;
/// owned data only, so that a level-9 snapshot can do it on a thread of its own.
pub(super) struct PageSource {
    pub(super) page_size: u32,
    /// Where spools spill (the state directory's `tmp`).
    pub(super) spill_dir: PathBuf,
    /// For error messages.
    pub(super) db_path: String,
}

impl PageSource {
    /// Every page 1..=header.commit (but the lock page) into an LTX file: from the WAL segment
    /// where it has the page, else from the database file. `cancelled` is polled between pages.
    pub(super) fn encode_full_image(
        &self,
        wal: Option<&File>,
        db: &DbFile,
        seg: &Segment,
        header: Header,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Spool> {
        let mut spool = Spool::new(&self.spill_dir, SPOOL_MEMORY_LIMIT);
        let mut enc = Encoder::new(&mut spool, header)?;
        let mut buf = vec![0u8; self.page_size as usize];
        let lock_page = ltx::lock_page(self.page_size);
        let dummy: &[u8] = &[];
        for pgno in (1..=header.commit).filter(|p| *p != lock_page) {
            if pgno % 1024 == 0 && cancelled() {
                return Err(Error::msg("replication is stopping"));
            }
            match wal {
                Some(f) => self.read_page(f, db, seg, pgno, &mut buf)?,
                None => self.read_page(&dummy, db, seg, pgno, &mut buf)?,
            }
            enc.write_page(pgno, &buf)?;
        }
        enc.finish()?;
        Ok(spool)
    }

    /// A page's latest committed content: the WAL frame if the segment has one, else the file.
    pub(super) fn read_page<F: ReadAt + ?Sized>(
        &self,
        wal: &F,
        db: &DbFile,
        seg: &Segment,
        pgno: u32,
        buf: &mut [u8],
    ) -> Result<()> {
        match seg.pages.get(&pgno) {
            Some(&frame) => wal::read_frame_page(wal, frame, buf)?,
            None => db
                .read_at(buf, (pgno as u64 - 1) * self.page_size as u64)
                .with_context(|| format!("reading page {pgno} of {}", self.db_path))?,
        }
        Ok(())
    }

    pub(super) fn ltx_header(&self, txid: u64, commit: u32, seg: &Segment) -> Header {
        let (salt1, salt2) = seg.header.salts();
        Header {
            flags: ltx::HEADER_FLAG_NO_CHECKSUM,
            page_size: self.page_size,
            commit,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: unix_ms(SystemTime::now()),
            pre_apply_checksum: 0,
            // Litestream resumes from WALOffset + WALSize of the newest L0 file when it takes a
            // replica over; an offset below the WAL header size makes its verify step fail.
            wal_offset: seg.start.max(32) as i64,
            wal_size: seg.end.saturating_sub(seg.start) as i64,
            wal_salt1: salt1,
            wal_salt2: salt2,
            node_id: 0,
        }
    }
}

/// Whether the WAL still holds the generation `seg` was read from, checked after its frames were
/// read. Frames we read can be overwritten by a WAL restart when our read transaction sits on read
/// mark 0 (the WAL was fully checkpointed when it began): SQLite then allows one restart, and the
/// new generation overwrites frames from the start of the file while we may still be reading
/// them (found by the crash trials: a level-9 snapshot with three pages of a later transaction).
/// A writer writes the new WAL header before any frame of the new generation, so unchanged salts
/// after the reads prove every read saw the old generation.
pub(super) fn wal_generation_unchanged(wal: &File, seg: &Segment) -> Result<bool> {
    if seg.end <= wal::WAL_HEADER_SIZE {
        return Ok(true); // no frame was read
    }
    Ok(WalHeader::read(wal)?.is_some_and(|h| h.salts() == seg.header.salts()))
}

/// A WAL segment with no frames: every page comes from the database file.
pub(super) fn empty_segment(page_size: u32, commit: u32) -> Segment {
    Segment {
        header: WalHeader {
            magic: 0,
            version: 0,
            page_size,
            checkpoint_seq: 0,
            salt1: 0,
            salt2: 0,
            checksum1: 0,
            checksum2: 0,
        },
        start: 32,
        end: 32,
        commit,
        pages: Default::default(),
        last_frame_checksum: (0, 0),
        commits: 0,
    }
}

pub(super) fn wal_position(seg: &Segment, checkpoint_seq: u32) -> WalPosition {
    let (salt1, salt2) = seg.header.salts();
    WalPosition {
        end: seg.end,
        salt1,
        salt2,
        checkpoint_seq,
        frame_checksum: seg.last_frame_checksum,
    }
}
