//! Level-9 snapshots for the compactor: a full image of the database at the replica's current
//! TXID, streamed from the database (as Litestream builds them), written by the replicator thread
//! because it owns the connections and the WAL pin.
//!
//! Invariants:
//! - The position does not move: a level-9 file is `1-<txid>` of a TXID already in the replica.
//! - The WAL is sealed first (write lock held briefly, pending commits uploaded, read mark moved
//!   to the WAL's end), so no checkpoint can copy frames beyond the position into the file while
//!   it is read.

use super::capture::{empty_segment, wal_generation_unchanged};
use super::worker::Worker;
use super::{RunState, Shared};
use crate::error::{Context, Error, Result};
use crate::host::DbFile;
use crate::ltx;
use crate::replica_client::{Spool, SNAPSHOT_LEVEL};
use crate::state::Position;
use crate::wal::{self, Resume, ScanOutcome, WalHeader};
use std::time::Duration;

/// A level-9 snapshot is read again when the WAL restarted under it; a second restart needs a
/// checkpoint our read mark forbids, so two attempts suffice and the third is a margin.
const LEVEL9_ATTEMPTS: usize = 3;

/// "Write a level-9 snapshot `1-<current TXID>` unless the TXID is at most `newer_than`"; the
/// answer is the TXID and size written, or None.
pub(super) type Level9Answer = Result<Option<(u64, u64)>>;
pub(super) struct Level9Request {
    pub(super) newer_than: u64,
    pub(super) reply: std::sync::mpsc::SyncSender<Level9Answer>,
}

/// Ask the worker thread for a level-9 snapshot and wait for its answer (the compactor's
/// `SnapshotFn`).
pub(super) fn request_level9(shared: &Shared, newer_than: u64) -> Level9Answer {
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    {
        let mut g = shared.lock();
        if g.stop_requested || g.state == RunState::Stopped {
            return Err(Error::msg("replication is stopping"));
        }
        g.level9 = Some(Level9Request { newer_than, reply });
    }
    shared.cond.notify_all();
    loop {
        match answer.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => return r,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::msg(
                    "replication stopped before the snapshot was written",
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if shared.lock().state == RunState::Stopped {
                    return Err(Error::msg(
                        "replication stopped before the snapshot was written",
                    ));
                }
            }
        }
    }
}

impl Worker {
    /// Stream a full image of the database at the replica's current TXID to level 9 (Litestream
    /// builds its snapshots from the database, not from the replica). The position does not
    /// move. Returns the TXID and size written, or None when the TXID is at most `newer_than`
    /// or there is nothing to snapshot yet.
    pub(super) fn write_level9_snapshot(&mut self, newer_than: u64) -> Result<Option<(u64, u64)>> {
        if let Some(lease) = &self.lease {
            lease.check()?;
        }
        // Seal the WAL for a moment: upload whatever is committed and move our read mark to the
        // WAL's end. Afterwards no checkpoint can copy frames beyond the position into the
        // database file while we read it, and frames committed meanwhile are simply ignored.
        // (The cycle that runs just before this uploaded what was committed, without the lock,
        // so the sealed section has little left to send.)
        self.barrier
            .execute_batch("BEGIN IMMEDIATE")
            .context("waiting for the write lock to start a level-9 snapshot")?;
        self.barrier_held = true;
        let sealed = (|| -> Result<()> {
            self.sync_wal()?;
            self.end_read()?;
            self.begin_read()
        })();
        let _ = self.barrier.execute_batch("ROLLBACK");
        self.barrier_held = false;
        if let Err(e) = sealed {
            let _ = self.begin_read();
            return Err(e);
        }
        let Some(pos) = self.pos else {
            return Ok(None);
        };
        if pos.txid <= newer_than || pos.commit == 0 {
            return Ok(None);
        }
        // A restart found after reading (see `wal_generation_unchanged`) means the file alone is
        // the image now; the second attempt sees the new salts and takes that path.
        for _ in 0..LEVEL9_ATTEMPTS {
            if let Some((mut spool, timestamp_ms)) = self.encode_level9(&pos)? {
                let size =
                    self.client
                        .put(SNAPSHOT_LEVEL, 1, pos.txid, timestamp_ms, &mut spool)?;
                return Ok(Some((pos.txid, size)));
            }
        }
        Err(Error::msg(
            "the WAL kept restarting while the level-9 snapshot was read; it will be retried",
        ))
    }

    /// The image at `pos` (sealed, our read mark at its end) as a level-9 LTX file, or None when
    /// the WAL restarted while it was read. Also returns the file's timestamp.
    pub(super) fn encode_level9(&self, pos: &Position) -> Result<Option<(Spool, i64)>> {
        let (wal, header) = self.open_wal()?;
        // The position's frames: the current WAL generation up to `pos.wal.end`. Any other WAL
        // (none, truncated, or restarted after the seal, which SQLite allows only once every
        // frame is in the database file) contributes nothing: the file alone is the image.
        let seg = match (&wal, &header) {
            (Some(f), Some(h))
                if pos.wal.end > 32 && h.salts() == (pos.wal.salt1, pos.wal.salt2) =>
            {
                match wal::scan(f, Resume::FromStart, Some(pos.wal.end - 32))? {
                    ScanOutcome::Segment(s)
                        if s.end == pos.wal.end && (s.commits == 0 || s.commit == pos.commit) =>
                    {
                        Some(s)
                    }
                    _ if WalHeader::read(f)?.is_none_or(|n| n.salts() != h.salts()) => {
                        return Ok(None); // restarted while scanning
                    }
                    _ => {
                        return Err(Error::msg(
                            "the WAL no longer matches the replica position; the snapshot will be retried",
                        ))
                    }
                }
            }
            _ => None,
        };
        let empty_seg;
        let seg_ref = match &seg {
            Some(s) => s,
            None => {
                empty_seg = empty_segment(self.page_size, pos.commit);
                &empty_seg
            }
        };
        let mut header = self.ltx_header(pos.txid, pos.commit, seg_ref);
        header.min_txid = 1;
        let db = DbFile::new(&self.conn)?;
        if seg.is_none() && db.size()? < pos.commit as u64 * self.page_size as u64 {
            return Err(Error::msg(format!(
                "{} is shorter than the {} pages of TXID {}; the snapshot will be retried",
                self.shared.db_path,
                pos.commit,
                ltx::format_txid(pos.txid)
            )));
        }
        let spool = self.encode_full_image(wal.as_ref(), &db, seg_ref, header)?;
        if let (Some(f), Some(s)) = (&wal, &seg) {
            if !wal_generation_unchanged(f, s)? {
                return Ok(None);
            }
        }
        Ok(Some((spool, header.timestamp_ms)))
    }
}
