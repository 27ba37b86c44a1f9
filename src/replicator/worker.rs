//! The replicator of one database, a task on the replicator pool: each step looks for a reason
//! to sync, runs at most one cycle (upload every committed frame, then checkpoint if due), follows
//! the lease, and says when it wants to look again.
//!
//! Invariants:
//! - Only the replicator's task touches the `Worker` (its connections, position and WAL handle),
//!   one step at a time; the SQL side talks to it through `Shared` and pokes it
//!   (`Shared::wake`).
//! - `synced_gen` advances only after a cycle that started after the request it covers, and
//!   with it the state leaves `Error`: a sync that returns never sees an error already mended.
//! - While the lease is held by someone else the worker holds no read transaction (it must not pin
//!   a WAL it does not replicate) and on every new acquisition re-reads the replica's position.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;

use super::capture::{Encoded, SealedL0};
use super::decide::{self, CheckpointMode, Plan, PlanFacts, Wake};
use super::{RunState, Shared};
use crate::compactor::Compactor;
use crate::error::{Context, Error, Result};
use crate::ltx;
use crate::replica_client::{self, ReplicaClient};
use crate::s3::lease::Lease;
use crate::scheduler::{Next, Task};
use crate::state::{self, Position};
use crate::wal::{self, WalHeader};

/// Without a sync interval (0 = upload on every commit) other processes' commits are still only
/// seen by polling; this is how often.
const MIN_POLL: Duration = Duration::from_millis(100);
/// While our read transaction pins the WAL, this often we look for a checkpoint of another
/// connection (FULL, RESTART, TRUNCATE) that waits for it while holding the write lock, and step
/// aside once everything is uploaded. SQLite's busy handler retries after 1, 2, 5, 10, 15 ms …,
/// so a 10 ms probe lets such a checkpoint finish within a few tens of milliseconds instead of its
/// whole busy timeout, during which every writer would wait (an application running
/// `PRAGMA wal_checkpoint(TRUNCATE)` with a 60 s timeout took 31 s and its writers failed).
const CHECKPOINTER_PROBE: Duration = Duration::from_millis(10);
/// An idle database (nothing uploaded and no checkpointer seen for `PROBE_ACTIVE_FOR`) is probed
/// less often: 100 probes a second cost ~0.8 % of a core per database, and applications mostly
/// checkpoint while or after they write.
const CHECKPOINTER_PROBE_IDLE: Duration = Duration::from_millis(200);
const PROBE_ACTIVE_FOR: Duration = Duration::from_secs(5);
/// A WAL generation past this size while the replicator is still uploading means a writer
/// outpaces it; the rest is uploaded with the write lock held (see `cycle`). Hooked writers wait
/// in backpressure long before (16 MiB); this bounds writers in other processes: unbounded, a
/// 91 MB/s writer grew the WAL to 596 MB.
const OUTPACED_WAL_BYTES: u64 = 32 << 20;
/// Passes a cycle adds for sync requests that arrive while it uploads (see `cycle`); bounded so
/// that a stream of sync calls cannot keep the checkpoint from running.
const EXTRA_SYNC_PASSES: u32 = 2;
/// How long `litestream_stop()` waits for a lease that has not answered yet (a stop right after
/// start) before it reports that nothing may have reached the replica.
const LEASE_RESOLVE_AT_STOP: Duration = Duration::from_secs(5);
/// `litestream_stop()` keeps retrying the final sync this long (Litestream's shutdown-sync-timeout).
const SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// A standby wakes at least this often (besides lease changes) to refresh status and to run the
/// checkpoints of a database nobody else on this host replicates.
const STANDBY_TICK: Duration = Duration::from_secs(1);

/// The replicator thread's state. Not shared: only the thread touches it.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: Connection,
    pub(super) barrier: Connection,
    pub(super) in_read_txn: bool,
    pub(super) wal_path: PathBuf,
    pub(super) db_file_path: PathBuf,
    pub(super) meta: PathBuf,
    pub(super) page_size: u32,
    pub(super) client: Arc<dyn ReplicaClient>,
    /// Position from the state file, to be checked against the replica before it is trusted.
    pub(super) saved: Vec<Position>,
    /// Position of the last upload; None until known (then the next file is a snapshot).
    pub(super) pos: Option<Position>,
    /// The replica's highest TXID, once listed.
    pub(super) remote_max: Option<u64>,
    pub(super) last_checkpoint: Instant,
    pub(super) synced_since_checkpoint: bool,
    /// Checkpoints given up because commits arrived between the upload and the write lock (see
    /// `checkpoint_inner`), in this run.
    pub(super) checkpoint_deferrals: u64,
    /// Our read transaction has pinned the WAL without a gap (other than the moments our own
    /// barrier holds writers off) since `pos` was uploaded in this run. While pinned, a complete
    /// checkpoint leaves us on read mark 0, which forbids further backfill, so the WAL can restart
    /// at most once and only over frames we have uploaded. False at start and after a standby
    /// period, when the WAL may have done anything meanwhile.
    pub(super) pinned: bool,
    /// The barrier connection holds the write lock right now.
    pub(super) barrier_held: bool,
    /// A third connection, opened on first use: the read transaction that takes over from
    /// `conn`'s when the pin moves forward without a gap (`checkpoint::move_pin_forward`).
    pub(super) spare: Option<Connection>,
    /// The wal-index's commit counter and the hooked commits when last compared (see
    /// `checkpoint::foreign_commits_since_last_look`).
    pub(super) commit_marks: Option<(u32, u64)>,
    /// None = lease off.
    pub(super) lease: Option<Arc<Lease>>,
    /// Epoch of the lease acquisition this worker's position belongs to; None = not holding.
    pub(super) lease_epoch: Option<u64>,
    /// WAL size at the last standby checkpoint (skip checkpoints when nothing was written).
    pub(super) standby_wal_len: u64,
    /// The VFS the host opened the database with (our connections use the same one).
    pub(super) vfs: Option<String>,
    /// The level-9 snapshot running on its own thread, if any.
    pub(super) level9_thread: Option<std::thread::JoinHandle<()>>,
    /// Told of every level-0 file uploaded, so it knows the replica without listing it.
    pub(super) compactor: Arc<Compactor>,
    pub(super) pace: Pace,
    /// The wal-index header as the last successful cycle left it (see `idle_poll`).
    pub(super) idle_mark: Option<crate::wal_index::WalIndexHeader>,
    /// While standby of another host: keeps the database equal to the replica (see `follow`).
    pub(super) follower: Option<crate::follower::Follower>,
    /// The WAL write lock taken at start with a lease, and since when (see `follow`).
    pub(super) gate: Option<(crate::follower::Injector, Instant)>,
}

/// When the loop of one replicator looks again: the pacing it carries from step to step.
pub(super) struct Pace {
    /// The next poll of the WAL for commits of connections without the hook.
    next_poll: Instant,
    /// The next look for a checkpointer waiting on our read transaction.
    next_probe: Instant,
    /// The last time something was uploaded or a checkpointer was let through.
    active_at: Instant,
    /// After a failed cycle: the current delay and when to try again.
    backoff: Option<(Duration, Instant)>,
    /// Sync requests up to this number have had a cycle started for them. A request bypasses
    /// the error backoff once, not on every loop, or a waiter would hammer a dead endpoint.
    attempted: u64,
}

impl Pace {
    pub(super) fn new() -> Pace {
        let now = Instant::now();
        Pace {
            next_poll: now,
            next_probe: now + CHECKPOINTER_PROBE,
            active_at: now,
            backoff: None,
            attempted: 0,
        }
    }
}

impl Task for Worker {
    /// One step of the replicator on the replicator pool: at most one cycle, then the time of
    /// the next look (commits, sync requests, stops and lease changes poke it sooner).
    fn run(&mut self) -> Next {
        let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step()));
        match body {
            Ok(next) => next,
            Err(panic) => {
                let msg = crate::error::panic_message(panic.as_ref());
                let mut g = self.shared.lock();
                g.last_error = Some(format!("internal error in the replicator: {msg}"));
                g.state = RunState::Stopped;
                drop(g);
                // A dead replicator must not keep the lease from a standby.
                if let Some(l) = &self.lease {
                    l.stop();
                }
                self.shared.cond.notify_all();
                Next::Done
            }
        }
    }
}

impl Worker {
    fn step(&mut self) -> Next {
        let interval = self.shared.cfg.sync_interval;
        let poll = if interval.is_zero() {
            MIN_POLL
        } else {
            interval
        };
        loop {
            // ---- lease gate: replicate only while holding the lease ----
            if let Some(lease) = self.lease.clone() {
                match lease.holding() {
                    Some((_, epoch)) => {
                        if self.lease_epoch != Some(epoch) {
                            // A follower first applies everything up to the replica's max.
                            if !self.finish_following() {
                                if self.shared.lock().stop_requested {
                                    self.shutdown();
                                    return Next::Done;
                                }
                                return Next::At(Instant::now() + super::follow::CATCH_UP_RETRY);
                            }
                            self.take_over(epoch);
                            self.pace.backoff = None;
                            self.pace.next_poll = Instant::now();
                        }
                    }
                    None => {
                        // Not the holder: a pending level-9 request is refused (dropped).
                        self.shared.lock().level9 = None;
                        return match self.standby_wait(&lease) {
                            Some(at) => Next::At(at),
                            None => {
                                self.shutdown();
                                Next::Done
                            }
                        };
                    }
                }
            }
            // Is there a reason to run a cycle?
            let (wake, facts, stopping, ticket) = {
                let mut g = self.shared.lock();
                let pace = &self.pace;
                let facts = decide::WaitFacts {
                    now: Instant::now(),
                    stop_requested: g.stop_requested,
                    lease_changed: g.lease_changed && self.lease.is_some(),
                    sync_wanted: g.sync_requested > pace.attempted.max(g.synced_gen)
                        || g.pressure
                        || g.catch_up,
                    level9_wanted: g.level9.is_some(),
                    dirty_since: g.dirty_since,
                    sync_interval: interval,
                    next_poll: pace.next_poll,
                    retry_at: pace.backoff.map(|(_, at)| at),
                    probe_at: (self.in_read_txn && pace.backoff.is_none())
                        .then_some(pace.next_probe),
                };
                let wake = decide::wake(&facts);
                match wake {
                    // Pokes (commits, sync requests, stops, lease changes) come sooner.
                    Wake::SleepUntil(due) => return Next::At(due),
                    Wake::LeaseChanged => g.lease_changed = false,
                    _ => {}
                }
                (wake, facts, g.stop_requested, g.sync_requested)
            };
            match wake {
                Wake::LeaseChanged if !stopping => continue, // back to the lease gate
                Wake::Probe => {
                    self.probe();
                    continue;
                }
                Wake::Cycle if self.idle_poll(&facts) => {
                    self.pace.next_poll = Instant::now() + poll;
                    self.shared.lock().last_sync_at = Some(SystemTime::now());
                    continue;
                }
                _ => {}
            }
            self.pace.attempted = ticket;
            self.pace.next_poll = Instant::now() + poll;
            self.run_cycle(ticket);
            if stopping {
                self.shutdown();
                return Next::Done;
            }
            // Let the other databases of the pool have the thread before looking again.
            return Next::At(Instant::now());
        }
    }

    /// This poll finds nothing new: the wal-index header is the one the last successful cycle
    /// ended on and no checkpoint is due (see `decide::skip_idle_poll`).
    fn idle_poll(&self, facts: &decide::WaitFacts) -> bool {
        let Some(mark) = self.idle_mark else {
            return false;
        };
        let unchanged = matches!(self.wal_index(), Ok(Some(h)) if h == mark);
        decide::skip_idle_poll(
            facts,
            unchanged,
            unchanged && self.checkpoint_due().is_some(),
        )
    }

    /// A probe between cycles: let a waiting checkpointer through, and notice a WAL grown by
    /// writers without the hook.
    fn probe(&mut self) {
        let result = self.yield_to_checkpointer();
        if matches!(result, Ok(true)) {
            self.pace.active_at = Instant::now();
        }
        // Commits of connections without the hook are otherwise only seen at the next poll: a
        // catch-up step of WAL beyond the upload is a reason to cycle now, as it is for a hooked
        // commit. (Counted from the upload: a WAL a reader keeps from restarting is no reason.)
        if self.wal_bytes_pending().unwrap_or(0) >= super::CATCH_UP_WAL_BYTES {
            self.shared.lock().catch_up = true;
            self.pace.active_at = Instant::now();
        }
        self.pace.next_probe = Instant::now()
            + if self.pace.active_at.elapsed() < PROBE_ACTIVE_FOR {
                CHECKPOINTER_PROBE
            } else {
                CHECKPOINTER_PROBE_IDLE
            };
        if let Err(e) = result {
            let mut g = self.shared.lock();
            g.state = RunState::Error;
            g.last_error = Some(e.to_string());
            let delay = decide::next_backoff(self.pace.backoff.map(|(d, _)| d));
            self.pace.backoff = Some((delay, Instant::now() + delay));
        }
    }

    /// One cycle and what it tells status, waiters and the pace.
    fn run_cycle(&mut self, ticket: u64) {
        let serves_pressure = {
            let mut g = self.shared.lock();
            g.covering_since = g.dirty_since.take();
            g.catch_up = false;
            g.pressure
        };
        let txid_before = self.pos.map(|p| p.txid);
        // Read before the cycle: everything committed up to this header is in what the cycle
        // reads, and anything later (or the cycle's own checkpoint) changes the header again.
        let mark = self.wal_index().ok().flatten();
        let result = self.cycle(ticket);
        self.idle_mark = mark.filter(|_| result.is_ok());
        if self.pos.map(|p| p.txid) != txid_before {
            self.pace.active_at = Instant::now();
        }
        // A level-9 snapshot requested by the compactor (which reports its errors itself).
        let level9 = self.shared.lock().level9.take();
        if let Some(req) = level9 {
            self.start_level9_snapshot(req);
        }
        let mut g = self.shared.lock();
        if g.pressure && serves_pressure {
            // The cycle ended without a checkpoint attempt (an error, nothing to checkpoint):
            // release backpressure waiters anyway rather than spin on the flag. A writer that
            // began to wait during the cycle (asked to, see `RESTART_WAL_BYTES`) waits for the
            // next one, which runs at once.
            g.pressure = false;
            g.checkpoint_attempts += 1;
        }
        match result {
            Ok(()) => {
                g.state = RunState::Running;
                g.last_error = None;
                g.covering_since = None;
                self.pace.backoff = None;
            }
            Err(e) => {
                g.state = RunState::Error;
                g.last_error = Some(e.to_string());
                g.dirty_since = g.oldest_pending();
                g.covering_since = None;
                let delay = decide::next_backoff(self.pace.backoff.map(|(d, _)| d));
                self.pace.backoff = Some((delay, Instant::now() + delay));
            }
        }
        drop(g);
        self.shared.cond.notify_all();
    }

    /// The final sync on `litestream_stop()`: retried for a while if the replica is unreachable,
    /// then a checkpoint that leaves a position the next start can continue from.
    pub(super) fn shutdown(&mut self) {
        // A level-9 snapshot was told to give up by `Replicator::stop`; it ends at its next page.
        self.join_level9();
        if let Some(l) = self.lease.clone() {
            // A stop right after start: let the lease say who holds it (its first request is
            // normally a few milliseconds away) before deciding there is nothing to flush.
            let deadline = Instant::now() + LEASE_RESOLVE_AT_STOP;
            while !l.view().resolved && l.holding().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Some((_, epoch)) = l.holding() {
                if self.lease_epoch != Some(epoch) {
                    if !self.finish_following_at_stop() {
                        return;
                    }
                    self.take_over(epoch);
                }
            }
            // A standby that stops: its follower lets go of the write lock.
            self.follower = None;
            self.gate = None;
        }
        if let Some(l) = self.lease.as_ref().filter(|l| l.holding().is_none()) {
            // A standby has nothing to flush when another instance is known to hold the lease:
            // the holder owns the replica. One that never learnt who holds it (S3 unreachable,
            // refused credentials) cannot say that: its commits may be in no replica at all.
            let view = l.view();
            let unowned = (!view.resolved || view.fatal || view.error.is_some()).then(|| {
                format!(
                    "the lease {} could not be taken{}",
                    l.lock_url(),
                    view.error.map(|e| format!(" ({e})")).unwrap_or_default()
                )
            });
            let _ = self.end_read();
            let mut g = self.shared.lock();
            g.level9 = None;
            g.state = RunState::Stopped;
            g.last_error = unowned;
            drop(g);
            self.shared.cond.notify_all();
            return;
        }
        let deadline = Instant::now() + SHUTDOWN_SYNC_TIMEOUT;
        let mut result = self.cycle(u64::MAX);
        while result.is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            result = self.cycle(u64::MAX);
        }
        if result.is_ok() {
            // Leave the WAL fully backfilled, so that the next start can prove continuity even if
            // the WAL restarts once while we are not watching.
            result = self.checkpoint(CheckpointMode::Passive, true, false);
        }
        let _ = self.end_read();
        let mut g = self.shared.lock();
        // A pending level-9 request is dropped: its requester sees the disconnect.
        g.level9 = None;
        g.state = RunState::Stopped;
        g.last_error = result.err().map(|e| e.to_string());
        drop(g);
        self.shared.cond.notify_all();
    }

    pub(super) fn begin_read(&mut self) -> Result<()> {
        if !self.in_read_txn {
            // A fresh read transaction taken while writers are free to run leaves a gap in which
            // the WAL may have been checkpointed and restarted any number of times.
            if !self.barrier_held {
                self.pinned = false;
            }
            self.conn.execute_batch("BEGIN")?;
            // The first read takes the WAL read mark; the transaction holds it until COMMIT.
            if let Err(e) = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                    r.get::<_, i64>(0)
                })
            {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(
                    Error::from(e).context("starting the read transaction that pins the WAL")
                );
            }
            self.in_read_txn = true;
        }
        Ok(())
    }

    pub(super) fn end_read(&mut self) -> Result<()> {
        if self.in_read_txn {
            self.conn.execute_batch("COMMIT")?;
            self.in_read_txn = false;
        }
        Ok(())
    }

    /// Upload every committed frame not yet in the replica, then checkpoint if the policy says so.
    pub(super) fn cycle(&mut self, ticket: u64) -> Result<()> {
        self.begin_read()?;
        let mut ticket = ticket;
        for pass in 1.. {
            if !self.sync_wal_within(Some(OUTPACED_WAL_BYTES))? {
                // A writer outpaces the upload, one that backpressure does not slow down (another
                // process): finish under the write lock, taken eagerly, and checkpoint there; then
                // whatever remains if the lock could not be had.
                self.checkpoint(CheckpointMode::Passive, false, false)?;
                self.sync_wal()?;
            }
            let newer = {
                let mut g = self.shared.lock();
                g.synced_gen = g.synced_gen.max(ticket.min(g.sync_requested));
                g.uploaded_frames = self.pos.map_or(0, |p| p.frames());
                // The replica has everything: an error of an earlier cycle is over. Said here, not
                // only when the cycle ends (after its checkpoint), because a waiter released just
                // below may read the status at once and must not see the old error.
                if g.state == RunState::Error {
                    g.state = RunState::Running;
                    g.last_error = None;
                }
                g.txid = self
                    .pos
                    .map(|p| p.txid)
                    .unwrap_or(self.remote_max.unwrap_or(0));
                g.last_sync_at = Some(SystemTime::now());
                g.wal_size = self.wal_file_len();
                g.sync_requested
            };
            self.shared.cond.notify_all();
            // A sync requested while this pass ran is answered by one more pass (which starts
            // after it) before the checkpoint, instead of after it: the checkpoint of a large WAL
            // takes as long as uploading a good part of it, and the waiter would wait for both.
            if newer <= ticket || ticket == u64::MAX || pass > EXTRA_SYNC_PASSES {
                break;
            }
            ticket = newer;
            self.pace.attempted = ticket;
        }
        self.checkpoint_if_needed()
    }

    pub(super) fn ensure_remote_position(&mut self) -> Result<u64> {
        if let Some(max) = self.remote_max {
            return Ok(max);
        }
        let levels = replica_client::list_all_levels(self.client.as_ref()).with_context(|| {
            format!(
                "reading the replica position from {}",
                self.client.describe()
            )
        })?;
        let max = replica_client::max_txid_of(&levels);
        // The compactor's manifest starts from this listing rather than making its own.
        self.compactor.offer_listing(levels);
        self.remote_max = Some(max);
        // The saved position counts only if the replica still ends exactly where we left it.
        self.pos = std::mem::take(&mut self.saved)
            .into_iter()
            .find(|p| p.txid == max && max > 0);
        if self.pos.is_none() && max > 0 {
            // No state file (lost, or never written on this host): the newest L0 file says which
            // WAL generation and offset it covers, as Litestream resumes. `plan` trusts it only if
            // the WAL still holds that generation up to there.
            self.pos = self.position_from_replica(max)?;
        }
        self.shared.lock().txid = max;
        Ok(max)
    }

    /// The position the replica's newest L0 file implies for this database: its TXID, database
    /// size and WAL range (`wal_offset + wal_size`, salts), if the current WAL is that generation
    /// and has a frame ending there. None when nothing on this host can continue it.
    pub(super) fn position_from_replica(&self, max: u64) -> Result<Option<Position>> {
        let Some(newest) = self
            .client
            .list(0)?
            .into_iter()
            .rfind(|f| f.max_txid == max && f.min_txid == max)
        else {
            return Ok(None);
        };
        let mut bytes = [0u8; ltx::HEADER_SIZE];
        self.client
            .open(&newest)?
            .read_exact(&mut bytes)
            .with_context(|| format!("reading the header of {}", newest.key))?;
        let header = ltx::Header::from_bytes(&bytes)?;
        let end = (header.wal_offset + header.wal_size).max(0) as u64;
        let salts = (header.wal_salt1, header.wal_salt2);
        if header.page_size != self.page_size || end <= wal::WAL_HEADER_SIZE {
            return Ok(None);
        }
        let (Some(f), Some(h)) = self.open_wal()? else {
            return Ok(None);
        };
        if h.salts() != salts {
            return Ok(None);
        }
        let prev = end - wal::frame_size(self.page_size);
        let Some(frame) = wal::read_frame_header(&f, prev)? else {
            return Ok(None);
        };
        if frame.salts() != salts || frame.commit != header.commit {
            return Ok(None);
        }
        Ok(Some(Position {
            txid: max,
            page_size: self.page_size,
            commit: header.commit,
            wal: state::WalPosition {
                end,
                salt1: salts.0,
                salt2: salts.1,
                checkpoint_seq: h.checkpoint_seq,
                frame_checksum: frame.checksum(),
            },
            backfilled: false,
            db_stamp: None,
        }))
    }

    /// Upload L0 files until the replica holds every committed frame of the WAL.
    pub(super) fn sync_wal(&mut self) -> Result<()> {
        self.sync_wal_within(None).map(|_| ())
    }

    /// `sync_wal`, but stop early (returning false) once the WAL's current generation holds more
    /// than `limit` bytes while writers are free to run and what is left to upload does not
    /// shrink from one file to the next: writers outpace us. A backlog that shrinks (a start
    /// after downtime, a burst that is over) is uploaded without the write lock: holding it for
    /// the whole catch-up stalled every writer for seconds, and a 262 MiB catch-up waited for its
    /// checkpoint before `litestream_sync()` returned.
    pub(super) fn sync_wal_within(&mut self, limit: Option<u64>) -> Result<bool> {
        self.ensure_remote_position()?;
        let client = self.client.clone();
        // The last file encoded, completed once the next one is (or before anything else):
        // files become visible in TXID order, and its last parts overlap the next file's reads.
        // Dropped on an error: its upload is aborted and the position stays where it was.
        let mut sealed: Option<SealedL0<'_>> = None;
        let mut left_before: Option<u64> = None;
        loop {
            let base = sealed.as_ref().map(|s| s.pos).or(self.pos);
            if let Some(limit) = limit.filter(|_| !self.barrier_held) {
                let in_use = self.wal_bytes_in_use()?;
                if in_use > limit {
                    let uploaded = base
                        .map(|p| p.wal.end)
                        .filter(|&end| end <= in_use)
                        .unwrap_or(wal::WAL_HEADER_SIZE);
                    let left = in_use - uploaded;
                    if left_before.is_some_and(|before| left >= before) {
                        if let Some(s) = sealed.take() {
                            self.complete_sealed(s)?;
                        }
                        return Ok(false);
                    }
                    left_before = Some(left);
                }
            }
            let (wal, header) = self.open_wal()?;
            let plan = self.plan_from(base.as_ref(), wal.as_ref(), header.as_ref())?;
            let encoded = match (plan, wal.as_ref(), base) {
                (Plan::Incremental(resume), Some(f), Some(base)) => {
                    self.encode_incremental(f, resume, base, client.as_ref())?
                }
                (Plan::Incremental(_), None, _) => Encoded::Nothing { moved: None },
                (Plan::Incremental(_), Some(_), None) => {
                    return Err(Error::msg("internal: incremental sync without a position"));
                }
                (Plan::Snapshot { reason }, _, _) => Encoded::Snapshot { reason },
            };
            if let Encoded::Sealed { file, more } = encoded {
                if let Some(previous) = sealed.replace(file) {
                    self.complete_sealed(previous)?;
                }
                if more {
                    continue;
                }
                break;
            }
            if let Some(s) = sealed.take() {
                self.complete_sealed(s)?;
            }
            match encoded {
                Encoded::Nothing { moved } => {
                    if moved.is_some() {
                        self.pos = moved;
                    }
                    return Ok(true);
                }
                Encoded::Replan => continue,
                Encoded::Snapshot { reason } => {
                    if !self.write_snapshot(wal.as_ref(), &reason)? {
                        return Ok(true);
                    }
                }
                Encoded::Sealed { .. } => unreachable!("handled above"),
            }
        }
        if let Some(s) = sealed.take() {
            self.complete_sealed(s)?;
        }
        Ok(true)
    }

    /// Decide where to continue reading: gather the facts `decide::plan` needs.
    pub(super) fn plan(&self, wal: Option<&File>, header: Option<&WalHeader>) -> Result<Plan> {
        self.plan_from(self.pos.as_ref(), wal, header)
    }

    /// `plan`, continuing `pos` (a sealed file's position while it is not complete yet).
    pub(super) fn plan_from(
        &self,
        pos: Option<&Position>,
        wal: Option<&File>,
        header: Option<&WalHeader>,
    ) -> Result<Plan> {
        // The frame before our end, in the current file: still ours if it carries the position's
        // salts and checksum (only looked at when the WAL holds the position's generation).
        let prev_frame_intact = match (pos, wal, header) {
            (Some(p), Some(f), Some(h))
                if p.wal.end > 32 && h.salts() == (p.wal.salt1, p.wal.salt2) =>
            {
                let prev = p.wal.end - wal::frame_size(self.page_size);
                wal::read_frame_header(f, prev)?.is_some_and(|fh| {
                    fh.salts() == h.salts() && fh.checksum() == p.wal.frame_checksum
                })
            }
            _ => true,
        };
        Ok(decide::plan(&PlanFacts {
            pos,
            page_size: self.page_size,
            wal_header: header.map(|h| (h.page_size, h.salts())),
            prev_frame_intact,
            pinned: self.pinned,
            db_unchanged_since_stop: pos.is_some_and(|p| self.db_unchanged_since_stop(p)),
        }))
    }

    /// The database file still has the identity recorded at the last stop's checkpoint.
    pub(super) fn db_unchanged_since_stop(&self, pos: &Position) -> bool {
        pos.db_stamp.is_some() && pos.db_stamp == state::DbStamp::of(&self.db_file_path).ok()
    }

    /// Make the L0 file that moves the replica to `new_pos` visible — `store` uploads it, or
    /// completes its streamed upload — and make it our position. The state file names `new_pos`
    /// as pending first, so a crash right after the upload still leaves a position that matches
    /// the replica.
    pub(super) fn upload(
        &mut self,
        new_pos: &Position,
        store: impl FnOnce() -> Result<replica_client::LtxFileInfo>,
    ) -> Result<()> {
        if let Some(l) = &self.lease {
            l.check()?;
        }
        state::save(
            &self.meta,
            &self.client.describe(),
            self.pos.as_ref(),
            Some(new_pos),
        )
        .with_context(|| format!("saving replication state in {}", self.meta.display()))?;
        let txid = new_pos.txid;
        let file = store()?;
        self.compactor.record_upload(file);
        self.remote_max = Some(txid);
        let mut pos = *new_pos;
        if let Ok(Some(idx)) = self.wal_index() {
            pos.backfilled |= decide::backfilled_by_wal_index(&pos, &idx, self.page_size);
        }
        self.pos = Some(pos);
        // Uploads happen inside a cycle, with the read transaction held.
        self.pinned = self.in_read_txn;
        Ok(())
    }

    pub(super) fn after_upload(&mut self) -> Result<()> {
        self.synced_since_checkpoint = true;
        if let Some(pos) = &self.pos {
            self.shared.lock().txid = pos.txid;
            state::save(&self.meta, &self.client.describe(), Some(pos), None)
                .with_context(|| format!("saving replication state in {}", self.meta.display()))?;
        }
        Ok(())
    }

    /// Just acquired the lease (or kept it across a lapse): whatever we knew about the replica may
    /// be stale — another holder may have written to it. Re-read its max TXID and offer the newest
    /// saved position (the state file may be newer than ours: another process on this host may
    /// have replicated this very database); `ensure_remote_position` trusts it only if it is the
    /// replica's max, and `plan()` only if the WAL proves continuity. Otherwise: a snapshot.
    pub(super) fn take_over(&mut self, epoch: u64) {
        self.lease_epoch = Some(epoch);
        self.pinned = false;
        let mut candidates = state::load(&self.meta, &self.client.describe());
        candidates.extend(self.pos.take());
        candidates.append(&mut self.saved);
        candidates.retain(|p| p.page_size == self.page_size);
        self.saved = candidates;
        self.pos = None;
        self.remote_max = None;
        let mut g = self.shared.lock();
        g.state = RunState::Running;
        g.last_error = None;
    }

    /// One standby step: no read transaction, status from the lease, checkpoints if this
    /// process is the one responsible for the database on this host. Returns when to look
    /// again (lease changes poke sooner), or None on stop.
    pub(super) fn standby_wait(&mut self, lease: &Lease) -> Option<Instant> {
        if self.lease_epoch.take().is_some() {
            // Lost the lease: keep our position only as a hint for the next acquisition.
            if let Some(p) = self.pos.take() {
                self.saved.push(p);
            }
            self.remote_max = None;
        }
        let _ = self.end_read();
        self.pinned = false;
        // Standby of another host (nobody else here replicates this file): follow the replica
        // (the follower runs the checkpoints then). A same-host sibling does nothing. The
        // status is published first: a follow step may take a while (a full image).
        self.publish_standby(lease, None);
        let mut tick = STANDBY_TICK;
        if let Some((error, next)) = self.standby_follow(lease) {
            tick = next.min(STANDBY_TICK);
            if error.is_some() {
                self.publish_standby(lease, error);
            }
        }
        let mut g = self.shared.lock();
        if g.stop_requested {
            return None;
        }
        if std::mem::take(&mut g.lease_changed) {
            return Some(Instant::now());
        }
        Some(Instant::now() + tick)
    }

    /// A standby's state and error in status: the lease's, else `other` (a follow error).
    fn publish_standby(&self, lease: &Lease, other: Option<String>) {
        let view = lease.view();
        let mut g = self.shared.lock();
        let (state, error) = if view.fatal {
            (RunState::Error, view.error.clone())
        } else if let Some(lost) = &view.lost {
            (RunState::Standby, Some(lost.clone()))
        } else if let Some(e) = &view.error {
            (RunState::Error, Some(format!("lease: {e}")))
        } else {
            (RunState::Standby, other)
        };
        g.state = state;
        g.last_error = error;
        g.dirty_since = None;
        g.covering_since = None;
        drop(g);
        self.shared.cond.notify_all();
    }

    /// The `-wal` file (None when there is none) and its header (None when it has no valid one).
    pub(super) fn open_wal(&self) -> Result<(Option<File>, Option<WalHeader>)> {
        open_wal_file(&self.wal_path)
    }

    /// A new connection of our own to the database, through the host's SQLite and the same VFS.
    pub(super) fn open_connection(&self) -> Result<Connection> {
        super::open_connection(&self.db_file_path, self.vfs.as_deref())
    }
}

/// The `-wal` file at `path` (None when there is none) and its header (None when it has no valid
/// one). Our own descriptor on the WAL is harmless: SQLite takes no POSIX locks on that file (its
/// WAL locks are on the `-shm`), so closing it drops none.
pub(super) fn open_wal_file(path: &Path) -> Result<(Option<File>, Option<WalHeader>)> {
    let wal = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::msg(format!("opening {}: {e}", path.display()))),
    };
    let header = match &wal {
        Some(f) => WalHeader::read(f)?,
        None => None,
    };
    Ok((wal, header))
}
