//! Checkpoints. The complete ones, which let the WAL restart, run only after every frame is in
//! the replica, with the write lock held by the barrier connection so no commit slips between
//! "uploaded everything" and "checkpoint". When commits keep arriving, a PASSIVE one runs beside
//! the writers instead (`backfill_unlocked`): it copies, and copying loses nothing, because only a
//! restart overwrites frames and our read mark forbids restarts. A standby runs plain ones for a
//! database nobody on this host replicates.
//!
//! Invariants:
//! - Nothing is uploaded while writers are held off below the backpressure size: commits that
//!   slipped in after the upload defer the complete checkpoint (to the pause a hooked writer is
//!   asked for, or the next cycle).
//! - Our read transaction always holds a read mark: 1 or more (no restart possible), or 0, which
//!   SQLite gives only to a reader of a WAL backfilled to its end, and which we take only when
//!   every frame is uploaded (after the complete checkpoint, or `move_pin_forward`).
//! - A complete checkpoint marks the position `backfilled`: the WAL's next restart is the one
//!   `decide::plan` may accept. TRUNCATE runs from the barrier connection while our read mark 0
//!   is held, so a commit that slips in makes it give up rather than truncate unread frames.

use std::time::{Duration, Instant};

use super::decide::{
    self, CheckpointFacts, CheckpointMode, CheckpointPolicy, CheckpointRoute, Plan,
};
use super::worker::Worker;
use super::{BACKPRESSURE_WAL_BYTES, BUSY_TIMEOUT, RESTART_WAL_BYTES};
use crate::error::{Context, Error, Result};
use crate::host::{DbFile, WAL_CKPT_LOCK, WAL_WRITE_LOCK};
use crate::state;
use crate::wal::{self, ScanOutcome};
use crate::wal_index::{self, WalIndexHeader};

/// A checkpoint that finds new commits under its write lock gives up (the next cycle uploads them
/// without the lock) while the WAL is below this size. Hooked writers are asked for a pause long
/// before (`RESTART_WAL_BYTES`), and wait unasked at this size (backpressure); past it, a writer
/// that never pauses gets its commits uploaded under the lock, taken eagerly, so it cannot
/// starve checkpoints and grow the WAL without bound.
const MAX_DEFERRED_WAL_BYTES: u64 = BACKPRESSURE_WAL_BYTES;
/// The same, while commits of connections without the hook (another process, or a connection
/// that never called `litestream_start()`) are arriving: no pause can be asked of them, so the
/// lock is taken sooner. At 48 MiB a plain process writing 1 MiB transactions back to back grew
/// the WAL to 103–141 MB, at this size to 67–75 MB (69–77 MB before hooked writers got pauses).
const FOREIGN_MAX_DEFERRED_WAL_BYTES: u64 = 16 << 20;
/// Commits counted by the wal-index but not (yet) by the hook that are still taken for hooked
/// ones: a commit is in the wal-index a moment before its connection's hook runs.
const HOOK_LAG_COMMITS: u64 = 4;
/// A writer waiting for a complete checkpoint waits at most this much longer for older readers
/// to end (`let_readers_leave`); a reader's query usually takes microseconds to milliseconds.
const READERS_LEAVE_MAX: Duration = Duration::from_millis(20);
const READERS_LEAVE_POLL: Duration = Duration::from_micros(200);
/// Stepping aside for another connection's checkpoint lasts at most this long (it may wait for
/// readers other than ours); our read transaction is taken again as soon as the checkpoint is
/// done or anything is committed, checked this often.
const YIELD_MAX: Duration = Duration::from_secs(1);
const YIELD_POLL: Duration = Duration::from_millis(1);

impl Worker {
    /// A standby's database still needs checkpoints (the extension replaced the host's
    /// auto-checkpoint). Plain ones: nothing of it is being replicated from here, and whatever
    /// it does to the WAL only means a snapshot when this instance takes over.
    pub(super) fn standby_checkpoint(&mut self) -> Result<()> {
        let len = self.wal_file_len();
        if len == self.standby_wal_len {
            return Ok(());
        }
        let frames = len.saturating_sub(32) / wal::frame_size(self.page_size);
        let policy = CheckpointPolicy::from_config(&self.shared.cfg);
        let Some(mode) =
            decide::standby_checkpoint_mode(&policy, frames, self.last_checkpoint.elapsed())
        else {
            return Ok(());
        };
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(0)
            })
            .with_context(|| format!("standby checkpoint({mode})"))?;
        self.last_checkpoint = Instant::now();
        self.standby_wal_len = self.wal_file_len();
        self.shared.lock().checkpoints += 1;
        Ok(())
    }

    pub(super) fn checkpoint_if_needed(&mut self) -> Result<()> {
        let Some(mode) = self.checkpoint_due() else {
            return Ok(());
        };
        // Below the backpressure size, commits that slip in defer the checkpoint; above it an
        // upload under the lock is the lesser evil (see MAX_DEFERRED_WAL_BYTES).
        let in_use = self.wal_bytes_in_use()?;
        let waiting = self.shared.lock().pressure;
        let max_deferred = if self.foreign_commits_since_last_look() {
            FOREIGN_MAX_DEFERRED_WAL_BYTES
        } else {
            MAX_DEFERRED_WAL_BYTES
        };
        // Looked at only when it can matter: a read of the WAL past the position.
        let may_skip_lock = in_use < max_deferred && !waiting;
        let slipped = may_skip_lock && self.has_unuploaded_commits()?;
        let route = decide::checkpoint_route(
            mode,
            in_use,
            waiting,
            slipped,
            max_deferred,
            RESTART_WAL_BYTES,
        );
        match route {
            CheckpointRoute::Locked { defer_if_busy } => {
                self.checkpoint(mode, false, defer_if_busy)
            }
            CheckpointRoute::Unlocked { ask_pause } => {
                // Commits arrived since the upload: taking the write lock now would only find
                // them and give up, and make the writer wait for nothing. Backfill what is safe
                // without it, and past `RESTART_WAL_BYTES` ask the next hooked commit for the
                // pause in which the rest gets done.
                self.backfill_unlocked()?;
                if ask_pause {
                    self.shared.lock().park_requested = true;
                }
                Ok(())
            }
        }
    }

    /// Whether connections without the hook committed since the last look: the wal-index counts
    /// every commit, the hook only those of connections that called `litestream_start()`.
    fn foreign_commits_since_last_look(&mut self) -> bool {
        let hooked = self.shared.lock().hooked_commits;
        let Ok(Some(idx)) = self.wal_index() else {
            return false;
        };
        let foreign = self.commit_marks.is_some_and(|(change, hooked_then)| {
            u64::from(idx.change.wrapping_sub(change))
                > hooked.wrapping_sub(hooked_then) + HOOK_LAG_COMMITS
        });
        self.commit_marks = Some((idx.change, hooked));
        foreign
    }

    /// A PASSIVE checkpoint with writers free to run, right after a cycle uploaded every frame
    /// of the WAL it saw. The pin first moves forward (a new read transaction taken before the
    /// old one ends), so that the checkpoint may copy up to where the WAL ended then: backfill
    /// stops at the lowest read mark in use, ours included. Frames it copies that are not
    /// uploaded yet are not lost: only a restart of the WAL overwrites frames, and a restart
    /// needs no reader on read marks 1 and up — ours keeps one, unless it got read mark 0, which
    /// SQLite gives only to a reader of a completely backfilled WAL (see `move_pin_forward`).
    /// The copying and the syncs it costs then happen beside the writers instead of in the pause
    /// that lets the WAL restart.
    pub(super) fn backfill_unlocked(&mut self) -> Result<()> {
        self.move_pin_forward()?;
        // Its answer (busy, frames, backfilled) is read again from the wal-index below.
        let r = self
            .barrier
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        match r {
            Ok(_) => {}
            // Another connection is checkpointing: it backfills for us.
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
            Err(e) => return Err(Error::from(e).context("checkpoint without the write lock")),
        }
        self.note_backfill_at_position();
        self.checkpoint_deferrals += 1;
        let mut g = self.shared.lock();
        g.checkpoints_unlocked += 1;
        g.checkpoint_deferrals = self.checkpoint_deferrals;
        Ok(())
    }

    /// Take a new read transaction on the spare connection, then end `conn`'s: the WAL is pinned
    /// throughout, so nothing about `pinned` changes, and the new read mark is where the WAL ends
    /// now. Called only right after a cycle uploaded everything up to the WAL's end, so that if
    /// SQLite hands out read mark 0 (which lets the next writer restart the WAL) every frame is
    /// in the replica: read mark 0 goes only to a reader of a WAL backfilled to its end, and
    /// backfill cannot have passed the old pin, which that upload covered.
    pub(super) fn move_pin_forward(&mut self) -> Result<()> {
        if !self.in_read_txn {
            return self.begin_read();
        }
        let mut spare = match self.spare.take() {
            Some(c) => c,
            None => self.open_connection()?,
        };
        spare.execute_batch("BEGIN")?;
        if let Err(e) = spare.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            let _ = spare.execute_batch("ROLLBACK");
            self.spare = Some(spare);
            return Err(Error::from(e).context("moving the read transaction that pins the WAL"));
        }
        std::mem::swap(&mut self.conn, &mut spare);
        let ended = spare.execute_batch("COMMIT");
        self.spare = Some(spare);
        ended?;
        self.note_backfill_at_position();
        Ok(())
    }

    /// The position counts as backfilled when the wal-index shows exactly its frames copied (see
    /// `decide::backfilled_by_wal_index`), so that a restart of the WAL is continued from.
    fn note_backfill_at_position(&mut self) {
        if let (Some(pos), Ok(Some(idx))) = (self.pos, self.wal_index()) {
            if decide::backfilled_by_wal_index(&pos, &idx, self.page_size) {
                if let Some(p) = self.pos.as_mut() {
                    p.backfilled = true;
                }
            }
        }
    }

    /// The checkpoint the policy asks for at the current position, if any.
    pub(super) fn checkpoint_due(&self) -> Option<CheckpointMode> {
        let pos = self.pos?;
        let facts = CheckpointFacts {
            frames: pos.frames(),
            backfilled: pos.backfilled,
            pressured: self.shared.lock().pressure,
            since_last: self.last_checkpoint.elapsed(),
            synced_since: self.synced_since_checkpoint,
        };
        let policy = CheckpointPolicy::from_config(&self.shared.cfg);
        decide::checkpoint_mode(&policy, &facts)
    }

    /// Checkpoint with writers held off: take the write lock on the barrier connection, upload
    /// whatever was committed meanwhile (the WAL is now sealed), checkpoint, release. If every
    /// frame was backfilled, the position is marked so the WAL's next restart is accepted.
    /// `stamp`: also record the database file's identity while writers are still held off (at
    /// stop), see `state::DbStamp`.
    /// `defer_if_busy`: give up (for now) rather than upload while writers are held off.
    pub(super) fn checkpoint(
        &mut self,
        mode: CheckpointMode,
        stamp: bool,
        defer_if_busy: bool,
    ) -> Result<()> {
        let result = self.checkpoint_inner(mode, stamp, defer_if_busy);
        let mut g = self.shared.lock();
        g.checkpoint_attempts += 1;
        g.pressure = false;
        drop(g);
        self.shared.cond.notify_all();
        result
    }

    pub(super) fn checkpoint_inner(
        &mut self,
        mode: CheckpointMode,
        stamp: bool,
        defer_if_busy: bool,
    ) -> Result<()> {
        // The cycle that calls this has just uploaded, with writers free to run: what is left
        // for the locked section below is normally nothing, so it does no network I/O while the
        // application cannot commit.
        // Past the deferral size (or outpaced, or at stop) the WAL must not grow further: a
        // writer that never pauses (in another process, which backpressure does not slow down)
        // is out-waited by retrying the lock eagerly; below it, one ordinary attempt.
        let eager = !defer_if_busy;
        if eager {
            crate::host::set_eager_busy_handler(&self.barrier)?;
        }
        let locked = self.barrier.execute_batch("BEGIN IMMEDIATE");
        if eager {
            self.barrier.busy_timeout(BUSY_TIMEOUT)?;
        }
        if locked.is_err() {
            // A writer holds the lock; try again next cycle rather than stall it.
            return Ok(());
        }
        self.barrier_held = true;
        let mut db_stamp = None;
        let result = (|| -> Result<Option<(i64, i64)>> {
            if defer_if_busy && self.has_unuploaded_commits()? {
                // Commits slipped in after the upload. Uploading them now would hold every writer
                // for an S3 round trip — or for a stalled request's whole timeout (the fault suite
                // measured 51 s commits, and "database is locked" for a 5 s busy timeout). The
                // next cycle uploads them without the lock and tries again.
                return Ok(None);
            }
            self.sync_wal()?;
            self.end_read()?;
            let r: (i64, i64, i64) =
                self.conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
            if stamp && r.1 >= 0 && r.1 == r.2 {
                db_stamp = state::DbStamp::take_settled(&self.db_file_path).ok();
            }
            self.begin_read()?;
            Ok(Some((r.1, r.2)))
        })();
        let _ = self.barrier.execute_batch("ROLLBACK");
        self.barrier_held = false;
        let (log, done) = match result {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.checkpoint_deferrals += 1;
                self.shared.lock().checkpoint_deferrals = self.checkpoint_deferrals;
                return Ok(());
            }
            Err(e) => {
                let _ = self.begin_read();
                return Err(e.context("checkpoint"));
            }
        };
        self.last_checkpoint = Instant::now();
        self.synced_since_checkpoint = false;
        self.shared.lock().checkpoints += 1;
        let complete = log >= 0 && log == done;

        if complete {
            if let Some(p) = self.pos.as_mut() {
                p.backfilled = true;
                p.db_stamp = db_stamp;
                let p = *p;
                let _ = state::save(&self.meta, &self.client.describe(), Some(&p), None);
            }
            if mode == CheckpointMode::Truncate {
                self.truncate_wal()?;
            } else if self.shared.lock().pressure {
                self.let_readers_leave();
            }
        }
        Ok(())
    }

    /// After a complete checkpoint, with a hooked writer waiting for it: give the readers that
    /// still hold read marks 1 and up (they began before it finished) a moment to end, so that
    /// the writer's next commit restarts the WAL — a restart needs none, and readers that begin
    /// now take read mark 0 (the WAL is backfilled to its end). Without this, a thread that
    /// queries in a loop kept the WAL from ever restarting: plain SQLite's grew to 1 GB in 6 s
    /// of one-row commits, ours to 211 MB.
    fn let_readers_leave(&self) {
        let Ok(db) = DbFile::new(&self.conn) else {
            return;
        };
        let deadline = Instant::now() + READERS_LEAVE_MAX;
        while db.readers_past_mark_0() == Some(true) && Instant::now() < deadline {
            std::thread::sleep(READERS_LEAVE_POLL);
        }
    }

    /// Whether the WAL holds a commit the replica does not (a local read of the WAL; no upload).
    /// Anything that would need a snapshot counts as yes.
    pub(super) fn has_unuploaded_commits(&self) -> Result<bool> {
        let (wal, header) = self.open_wal()?;
        Ok(match (self.plan(wal.as_ref(), header.as_ref())?, &wal) {
            (Plan::Snapshot { .. }, _) => true,
            (Plan::Incremental(_), None) => false,
            // One committed transaction beyond the position is enough to answer.
            (Plan::Incremental(resume), Some(f)) => match wal::scan(f, resume, Some(1))? {
                ScanOutcome::Segment(seg) => seg.commits > 0,
                ScanOutcome::NoWal => false,
                ScanOutcome::PrevFrameMismatch { .. } => true,
            },
        })
    }

    /// Shrink the WAL file after a complete checkpoint. Run from the barrier connection (no longer
    /// in its write transaction) while `conn` keeps its read transaction on read mark 0: a commit
    /// that slips in before the truncation restarts the WAL and appends frames, which TRUNCATE
    /// would have to backfill — and backfilling needs read mark 0 exclusively, so it gives up
    /// (SQLITE_BUSY) instead of truncating frames we have not read. Busy timeout 0: never hold
    /// the write lock while waiting for that.
    pub(super) fn truncate_wal(&mut self) -> Result<()> {
        self.barrier.busy_timeout(Duration::ZERO)?;
        let r = self
            .barrier
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        self.barrier.busy_timeout(BUSY_TIMEOUT)?;
        match r {
            // busy = 1: a writer or reader was in the way; the next checkpoint tries again.
            Ok(_) => Ok(()),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(()),
            Err(e) => Err(Error::from(e).context("checkpoint(TRUNCATE)")),
        }
    }

    /// The wal-index header as SQLite's connections see it now (None: unknown).
    pub(super) fn wal_index(&self) -> Result<Option<WalIndexHeader>> {
        let db = DbFile::new(&self.conn)?;
        Ok(wal_index::read_consistent(|| db.read_wal_index()))
    }

    /// If another connection's blocking checkpoint waits for our read transaction, upload what is
    /// committed, let go of the read transaction until that checkpoint is done, and take it again;
    /// the wal-index's commit counter then tells whether nothing was missed (`decide::after_yield`),
    /// in which case the position stays as good as pinned. Returns whether it stepped aside.
    pub(super) fn yield_to_checkpointer(&mut self) -> Result<bool> {
        if !self.blocking_checkpoint_waits()? {
            return Ok(false);
        }
        // Writers are held off by that checkpoint (it holds the write lock), so what is
        // committed now is everything until it is done.
        self.sync_wal()?;
        let Some(pos) = self.pos else {
            return Ok(false);
        };
        let Some(before) = self.wal_index()? else {
            return Ok(false);
        };
        let frames = pos.frames();
        let at_position = before.max_frame as u64 == frames
            && (before.salts == (pos.wal.salt1, pos.wal.salt2) || before.max_frame == 0);
        if !at_position {
            return Ok(false); // commits since the upload: the next cycle takes them first
        }
        self.end_read()?;
        let deadline = Instant::now() + YIELD_MAX;
        while Instant::now() < deadline {
            std::thread::sleep(YIELD_POLL);
            let db = DbFile::new(&self.conn)?;
            let busy = db.wal_lock_held_by_other(WAL_CKPT_LOCK) == Some(true);
            let committed = wal_index::read_consistent(|| db.read_wal_index()).map(|h| h.change)
                != Some(before.change);
            if !busy || committed {
                break;
            }
        }
        self.begin_read()?;
        let after = self.wal_index()?;
        let new_generation_commits = match after {
            Some(a) if a.salts != before.salts => self.commits_from_wal_start(a.salts)?,
            _ => None,
        };
        let outcome = decide::after_yield(&before, after.as_ref(), new_generation_commits);
        self.pinned = outcome.pinned;
        if outcome.backfilled {
            if let Some(p) = self.pos.as_mut() {
                p.backfilled = true;
            }
        }
        self.shared.lock().checkpoints_yielded += 1;
        Ok(true)
    }

    /// A FULL, RESTART or TRUNCATE checkpoint of another connection holds both the checkpoint and
    /// the write lock while it waits for readers (a PASSIVE one holds only the first and waits
    /// for no one).
    fn blocking_checkpoint_waits(&self) -> Result<bool> {
        let db = DbFile::new(&self.conn)?;
        Ok(db.wal_lock_held_by_other(WAL_CKPT_LOCK) == Some(true)
            && db.wal_lock_held_by_other(WAL_WRITE_LOCK) == Some(true))
    }

    /// Commits in the WAL from its start, if its header carries `salts` (None otherwise).
    fn commits_from_wal_start(&self, salts: (u32, u32)) -> Result<Option<u64>> {
        let (wal, header) = self.open_wal()?;
        match (wal, header) {
            (Some(f), Some(h)) if h.salts() == salts => {
                Ok(match wal::scan(&f, wal::Resume::FromStart, None)? {
                    ScanOutcome::Segment(seg) => Some(seg.commits as u64),
                    _ => None,
                })
            }
            _ => Ok(None),
        }
    }

    /// Size of the `-wal` file (0 when there is none). It only shrinks on TRUNCATE.
    pub(super) fn wal_file_len(&self) -> u64 {
        std::fs::metadata(&self.wal_path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Bytes of committed frames not in the replica: past our position in its generation, or the
    /// whole generation when the WAL has restarted since.
    pub(super) fn wal_bytes_pending(&self) -> Result<u64> {
        let Some(h) = self.wal_index()? else {
            return Ok(self.wal_file_len());
        };
        let uploaded = match self.pos {
            Some(p) if h.salts == (p.wal.salt1, p.wal.salt2) => p.frames(),
            _ => 0,
        };
        Ok((h.max_frame as u64).saturating_sub(uploaded) * wal::frame_size(self.page_size))
    }

    /// Bytes of the WAL's current generation: its committed frames, by the wal-index (the file
    /// keeps its size after a restart), else the file's size.
    pub(super) fn wal_bytes_in_use(&self) -> Result<u64> {
        Ok(match self.wal_index()? {
            Some(h) => wal::WAL_HEADER_SIZE + h.max_frame as u64 * wal::frame_size(self.page_size),
            None => self.wal_file_len(),
        })
    }
}
