//! One database's replicator: commit → WAL reader → LTX encoder → uploader → replica, and the
//! checkpoints that keep the WAL bounded.
//!
//! Each replicated database has one task on the replicator pool (a fixed number of threads
//! for every database of the process, `runtime::replicator_scheduler`). It owns two connections
//! of its own, opened through the host's SQLite: `conn` holds a long read transaction that pins
//! the WAL (no other connection can restart or truncate it while we have not read it), and
//! `barrier` takes the write lock around our own checkpoints so no commit can slip between "read
//! everything" and "checkpoint". The task is poked by commits of hooked connections, by
//! `litestream_sync()`, stops and lease changes, and polls at `sync-interval` for commits of
//! other connections and processes.
//!
//! Invariants:
//! - Nothing committed is lost: the WAL restarts (overwrites frames) only after a complete
//!   checkpoint, and our read transaction forbids that until every frame is in the replica — it
//!   holds read mark 1 or more, or read mark 0 once everything is uploaded and backfilled (see
//!   `checkpoint`). A restart is accepted only when it is the single one that can follow such a
//!   state in this run: read mark 0 forbids any further backfill and hence a second restart. Any
//!   other discontinuity — a missed restart, a WAL rewritten or deleted behind our back, a replica
//!   that moved — produces a full snapshot at the next TXID.
//! - TXIDs are contiguous: each upload is `<txid>-<txid>.ltx` at the replica's max + 1.
//! - `synced_gen` only advances after an upload that began after the corresponding sync request,
//!   which is what lets `litestream_sync()` promise "everything committed before the call".
//! - With a lease (`s3::lease`), nothing touches the replica unless the lease is held: a standby
//!   holds no read transaction (it must not pin a WAL it does not replicate), and on every new
//!   acquisition the replica's position is re-read, so an instance continues at the replica's
//!   max + 1 — incrementally only when its saved position is that max and the WAL proves it.

mod capture;
mod checkpoint;
mod decide;
mod follow;
mod level9;
mod worker;

pub use status::Status;
mod status;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OpenFlags};

use crate::compactor::{self, Compactor};
use crate::config::ResolvedConfig;
use crate::error::{Context, Error, Result};
use crate::ltx;
use crate::replica_client::{self, unix_ms, Progress, ReplicaClient};
use crate::s3::lease::{Lease, LeaseSetup, LeaseStatus, Role};
use crate::scheduler::TaskHandle;
use crate::state;
use crate::wal;

use level9::{request_level9, Level9Request};
use worker::Worker;

/// How long our connections wait for locks (Litestream's `busy-timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// Backpressure: a hooked connection whose commit leaves more than this in the WAL that is not in
/// the replica waits (in the WAL hook, after its commit, holding no lock) until the replicator has
/// caught up and attempted a checkpoint. Counted from what is uploaded, not from the WAL's
/// start: a WAL that a reader keeps from restarting grows, but waiting would not shrink it (a
/// looping reader made the writer wait for a cycle per commit, 240 commits/s). Without it a writer faster than the upload grows the WAL without bound: the WAL can
/// only restart once everything in it is in the replica (Litestream's sidecar let a 553 MB burst
/// grow its WAL to 558 MB, test-infrastructure.md). Normally the writer is asked to wait long
/// before (`RESTART_WAL_BYTES`); this is the bound when the replica is slower than the writer.
const BACKPRESSURE_WAL_BYTES: u64 = 48 << 20;
/// Each time a hooked commit takes the WAL past another multiple of this, the replicator starts a
/// cycle at once instead of at the next sync interval: it uploads and backfills (without holding
/// writers off) while the writer goes on, so that little is left to do in the pause that lets the
/// WAL restart. A writer of one-row transactions at synchronous=NORMAL fills 16 MiB in ~70 ms.
const CATCH_UP_WAL_BYTES: u64 = 16 << 20;
/// Past this, a cycle that could not checkpoint with writers held off (commits kept arriving)
/// asks the next hooked commit to wait (`Inner::park_requested`): that pause is the quiet moment
/// in which the rest is uploaded and the WAL completely checkpointed, so the next commit restarts
/// it. Waiting only at `BACKPRESSURE_WAL_BYTES` instead, with the whole WAL still to upload and
/// backfill in the pause, cost 1-row NORMAL commits 23 % of plain SQLite's rate (parks of ~34 ms
/// every 16 MiB, bench a, 2026-12-08).
const RESTART_WAL_BYTES: u64 = 16 << 20;
/// With a lease, `litestream_start()` waits at most this long for the instance to know its role
/// (the lease's first S3 round trips; catching up with the replica when it must).
const START_ROLE_WAIT: Duration = Duration::from_secs(2);
/// A writer never waits longer than this per commit, whatever the replica does.
const BACKPRESSURE_MAX_WAIT: Duration = Duration::from_secs(5);
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Error,
    Stopped,
    /// Another instance holds the lease; this one waits to take over.
    Standby,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Error => "error",
            RunState::Stopped => "stopped",
            RunState::Standby => "standby",
        }
    }
}

/// What the SQL functions see and poke; guarded by `Shared::inner`.
struct Inner {
    state: RunState,
    stop_requested: bool,
    /// First commit notified by a hook since the running cycle (if any) started.
    dirty_since: Option<Instant>,
    /// While a cycle runs: the first hooked commit it is meant to cover. A commit that lands
    /// while the cycle runs may or may not be in what it reads, so it goes to `dirty_since` and
    /// is only cleared by a later cycle; clearing one timestamp at the end of the cycle would hide
    /// it (lag_ms 0 while a commit waits).
    covering_since: Option<Instant>,
    /// Sync requests made so far, and the highest request number a finished upload covers.
    sync_requested: u64,
    synced_gen: u64,
    txid: u64,
    last_sync_at: Option<SystemTime>,
    last_error: Option<String>,
    snapshots: u64,
    /// Why the latest full snapshot was taken (a snapshot costs a whole database upload).
    last_snapshot_reason: Option<String>,
    checkpoints: u64,
    /// Checkpoints deferred because commits arrived while they waited for the write lock.
    checkpoint_deferrals: u64,
    /// Times our read transaction stepped aside for another connection's checkpoint.
    checkpoints_yielded: u64,
    /// PASSIVE checkpoints run beside the writers (`checkpoint::backfill_unlocked`).
    checkpoints_unlocked: u64,
    /// Checkpoint attempts, successful or not (backpressure waiters watch this).
    checkpoint_attempts: u64,
    /// A hooked writer is waiting for the WAL to shrink: cycle and checkpoint now.
    pressure: bool,
    /// A hooked commit took the WAL past another `CATCH_UP_WAL_BYTES`: cycle now.
    catch_up: bool,
    /// How many times `CATCH_UP_WAL_BYTES` the WAL held at the last such commit.
    catch_up_step: u64,
    /// The next hooked commit waits as under backpressure (see `RESTART_WAL_BYTES`).
    park_requested: bool,
    /// Commits notified by the hook (see `checkpoint::foreign_commits_since_last_look`).
    hooked_commits: u64,
    /// Frames of the WAL known to be in the replica, counted from the start of the generation
    /// they belong to: after a commit that leaves the WAL with fewer, it has restarted since.
    uploaded_frames: u64,
    wal_size: u64,
    /// The lease thread changed role or error since the worker last looked.
    lease_changed: bool,
    /// A level-9 snapshot asked for by the compactor (see `request_level9`).
    level9: Option<Level9Request>,
    /// The follower's status, once this instance has followed the replica.
    follow: Option<crate::follower::FollowStatus>,
    /// A follower runs right now (standby of another host).
    following: bool,
    /// The gate taken at start was opened or handed to a follower (see `follow`).
    gate_settled: bool,
}

impl Inner {
    /// The oldest hooked commit not known to be in the replica (what `lag_ms` measures).
    fn oldest_pending(&self) -> Option<Instant> {
        match (self.dirty_since, self.covering_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

pub struct Shared {
    db_path: String,
    replica: String,
    cfg: ResolvedConfig,
    progress: Arc<Progress>,
    frame_size: u64,
    inner: Mutex<Inner>,
    cond: Condvar,
    /// Tells a running level-9 snapshot to give up (set by `litestream_stop()`).
    level9_cancel: Arc<AtomicBool>,
    /// The worker's task on the replicator pool (set once it is spawned).
    task: OnceLock<TaskHandle>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is caught at the thread boundary; the data stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something the worker acts on changed (a commit, a sync request, a stop, the lease): poke
    /// its task, and wake the waiters of `cond`.
    fn wake(&self) {
        self.cond.notify_all();
        self.poke();
    }

    /// Poke the worker's task only (nobody waiting on `cond` cares).
    fn poke(&self) {
        if let Some(t) = self.task.get() {
            t.poke();
        }
    }

    /// Wait on the condition variable until `until` at the latest (or a notification).
    fn wait<'a>(&self, g: MutexGuard<'a, Inner>, until: Instant) -> MutexGuard<'a, Inner> {
        let timeout = until.saturating_duration_since(Instant::now());
        self.cond
            .wait_timeout(g, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0)
    }
}

/// A connection of the replicator's own to `db_path`, through the host's SQLite and `vfs`.
fn open_connection(db_path: &Path, vfs: Option<&str>) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match vfs {
        Some(v) => Connection::open_with_flags_and_vfs(db_path, flags, v),
        None => Connection::open_with_flags(db_path, flags),
    }
    .with_context(|| format!("opening {}", db_path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Handle to a running replicator, shared by every connection of the process.
pub struct Replicator {
    shared: Arc<Shared>,
    lease: Option<Arc<Lease>>,
    compactor: Arc<Compactor>,
}

impl Replicator {
    /// Open the replicator's connections, put the database in WAL mode and start its task.
    /// Everything that can be checked without the network is checked here, so that mistakes are
    /// SQL errors of `litestream_start()`; network problems show up in status instead.
    pub fn start(
        db_path: &Path,
        vfs: Option<&str>,
        cfg: ResolvedConfig,
        client: Arc<dyn ReplicaClient>,
        lease: Option<LeaseSetup>,
    ) -> Result<Replicator> {
        let open = || open_connection(db_path, vfs);
        let conn = open()?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
            .with_context(|| format!("switching {} to WAL mode", db_path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::msg(format!(
                "{} cannot use WAL mode (journal_mode stays '{mode}'); replication reads the WAL, so the database must be able to use it",
                db_path.display()
            )));
        }
        crate::host::set_persist_wal(&conn)?;
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let barrier = open()?;

        let progress = client.progress();
        let replica = client.describe();
        let meta = state::meta_dir(db_path);
        let mut saved = state::load(&meta, &replica);
        saved.retain(|p| p.page_size == page_size);

        let shared = Arc::new(Shared {
            db_path: db_path.display().to_string(),
            replica,
            cfg,
            progress,
            frame_size: wal::frame_size(page_size),
            inner: Mutex::new(Inner {
                state: RunState::Running,
                stop_requested: false,
                dirty_since: None,
                covering_since: None,
                sync_requested: 0,
                synced_gen: 0,
                txid: 0,
                last_sync_at: None,
                last_error: None,
                snapshots: 0,
                last_snapshot_reason: None,
                checkpoints: 0,
                checkpoint_deferrals: 0,
                checkpoints_yielded: 0,
                checkpoints_unlocked: 0,
                checkpoint_attempts: 0,
                pressure: false,
                catch_up: false,
                catch_up_step: 0,
                park_requested: false,
                uploaded_frames: 0,
                hooked_commits: 0,
                wal_size: 0,
                lease_changed: false,
                level9: None,
                follow: None,
                following: false,
                gate_settled: false,
            }),
            cond: Condvar::new(),
            level9_cancel: Arc::new(AtomicBool::new(false)),
            task: OnceLock::new(),
        });
        let lease = match lease {
            Some(setup) => {
                let weak = Arc::downgrade(&shared);
                let waker = Box::new(move || {
                    if let Some(s) = weak.upgrade() {
                        s.lock().lease_changed = true;
                        s.wake();
                    }
                });
                Some(Arc::new(Lease::start(
                    setup,
                    &meta,
                    waker,
                    &crate::runtime::lease_scheduler(),
                )?))
            }
            None => None,
        };
        let compaction = compactor::Settings::from_config(&shared.cfg);
        let spill_dir = meta.join("tmp");
        // Level-9 snapshots are sealed by the worker, which owns the connections.
        let snapshot_shared = shared.clone();
        let snapshot: compactor::SnapshotFn =
            Arc::new(move |newer_than| request_level9(&snapshot_shared, newer_than));
        // Only the lease holder compacts, snapshots and deletes (the S3 client's fence refuses
        // writes of a non-holder anyway; this keeps a standby from even trying).
        let may_write: compactor::MayWrite = match &lease {
            Some(l) => {
                let l = l.clone();
                Arc::new(move || l.holding().is_some())
            }
            None => Arc::new(|| true),
        };
        // Level 1 takes only level-0 files the worker knows are uploaded (see `Confirmed`).
        let confirmed_shared = shared.clone();
        let confirmed: compactor::Confirmed = Arc::new(move || confirmed_shared.lock().txid);
        let compactor = match Compactor::start(
            client.clone(),
            compaction,
            &spill_dir,
            snapshot,
            may_write,
            confirmed,
            &crate::runtime::background_scheduler(),
        ) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                if let Some(l) = &lease {
                    l.stop();
                }
                return Err(e);
            }
        };
        let wal_path = PathBuf::from(format!("{}-wal", db_path.display()));
        // With a lease, no write is accepted before this instance knows its role (see `follow`).
        let gate = match &lease {
            Some(_) => crate::follower::Injector::gate(open()?, &wal_path, page_size)?
                .map(|g| (g, Instant::now())),
            None => None,
        };
        let mut worker = Worker {
            shared: shared.clone(),
            conn,
            barrier,
            in_read_txn: false,
            wal_path,
            db_file_path: db_path.to_path_buf(),
            meta,
            page_size,
            client,
            saved,
            pos: None,
            remote_max: None,
            last_checkpoint: Instant::now(),
            synced_since_checkpoint: false,
            checkpoint_deferrals: 0,
            pinned: false,
            barrier_held: false,
            spare: None,
            commit_marks: None,
            lease: lease.clone(),
            lease_epoch: None,
            standby_wal_len: 0,
            vfs: vfs.map(str::to_string),
            level9_thread: None,
            compactor: compactor.clone(),
            pace: worker::Pace::new(),
            idle_mark: None,
            follower: None,
            gate,
        };
        worker.begin_read()?;
        let gated = worker.gate.is_some();
        let task = crate::runtime::replicator_scheduler().spawn(Box::new(worker));
        let _ = shared.task.set(task);
        if gated {
            // Return once writes are either accepted (primary, sibling) or refused by a follower,
            // so that a host without a busy timeout does not meet the gate itself.
            let deadline = Instant::now() + START_ROLE_WAIT;
            let mut g = shared.lock();
            while !g.gate_settled && Instant::now() < deadline {
                g = shared.wait(g, deadline);
            }
        }
        Ok(Replicator {
            shared,
            lease,
            compactor,
        })
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.lock().state == RunState::Stopped
    }

    /// Called from the WAL hook of a connection that started replication: a commit happened and
    /// the WAL now holds `wal_frames` frames. Past the backpressure size, the committing thread
    /// waits until the replicator has caught up and tried to checkpoint.
    /// Returns false (and does nothing) when this replicator has stopped: the commit belongs to
    /// the database's next one, if any.
    pub fn notify_commit(&self, wal_frames: u32) -> bool {
        let mut g = self.shared.lock();
        if g.state == RunState::Stopped {
            return false;
        }
        g.hooked_commits = g.hooked_commits.wrapping_add(1);
        let first = g.dirty_since.is_none();
        if first {
            g.dirty_since = Some(Instant::now());
        }
        let p = decide::commit_pressure(
            wal_frames as u64,
            g.uploaded_frames,
            self.shared.frame_size,
            g.catch_up_step,
            g.park_requested,
            CATCH_UP_WAL_BYTES,
            BACKPRESSURE_WAL_BYTES,
        );
        g.catch_up_step = p.step; // also down: the WAL restarted
        if p.wait && g.state == RunState::Running && !g.stop_requested {
            g.pressure = true;
            g.park_requested = false;
            self.shared.wake();
            let seen = g.checkpoint_attempts;
            let deadline = Instant::now() + BACKPRESSURE_MAX_WAIT;
            while g.checkpoint_attempts == seen && g.state == RunState::Running && !g.stop_requested
            {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                g = self.shared.wait(g, deadline);
            }
            return true;
        }
        if p.catch_up {
            g.catch_up = true;
        }
        drop(g);
        // Only the first commit since the last cycle can bring the next one forward (to
        // `sync-interval` after it); later ones change nothing the worker looks at, but for one
        // that took the WAL past another catch-up step. Poking on every commit cost the writer a
        // context switch per commit on two cores.
        if first || p.catch_up || self.shared.cfg.sync_interval.is_zero() {
            self.shared.poke();
        }
        true
    }

    /// Block until everything committed before this call is in the replica; returns that TXID.
    ///
    /// A standby waits too, within the same timeout: it may take the lease over meanwhile (a
    /// process restarted after a crash waits for its predecessor's lease to expire), and then
    /// its first upload covers the call. Only a lease that can never work fails at once.
    pub fn sync(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        g.sync_requested += 1;
        let ticket = g.sync_requested;
        self.shared.wake();
        loop {
            if g.synced_gen >= ticket {
                return Ok(g.txid);
            }
            if g.state == RunState::Stopped {
                return Err(Error::msg(
                    "replication is stopped; call litestream_start() first",
                ));
            }
            let view = self.lease.as_ref().map(|l| l.view());
            if let Some(v) = view.as_ref().filter(|v| v.fatal) {
                return Err(Error::msg(v.error.clone().unwrap_or_default()));
            }
            if Instant::now() >= deadline {
                let waited = format!("timed out after {} ms", timeout.as_millis());
                if let (Some(l), Some(v)) = (&self.lease, view.filter(|v| v.role != Role::Holder)) {
                    return Err(Error::msg(format!(
                        "{waited} waiting for the lease: {}",
                        v.standby_message(l.lock_url())
                            .unwrap_or_else(|| v.undecided_message(l.lock_url()))
                    )));
                }
                let why = g
                    .last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default();
                return Err(Error::msg(format!(
                    "{waited} waiting for the replica ({}) to catch up{why}",
                    self.shared.replica
                )));
            }
            g = self.shared.wait(g, deadline);
        }
    }

    /// Final sync, final checkpoint, then end the task. Returns the last TXID in the replica.
    pub fn stop(&self) -> Result<u64> {
        // The compactor first: it may be waiting on a level-9 snapshot, which is told to give up.
        self.shared.level9_cancel.store(true, Ordering::Relaxed);
        self.compactor.stop();
        {
            let mut g = self.shared.lock();
            g.stop_requested = true;
        }
        self.shared.wake();
        // The worker's last step runs the final sync and drops the task.
        if let Some(task) = self.shared.task.get() {
            task.wait_done();
        }
        // After the final sync, release the lease so that a standby takes over at once.
        if let Some(l) = &self.lease {
            l.stop();
        }
        let g = self.shared.lock();
        match &g.last_error {
            // Never synced in this run: not one commit since litestream_start() is in the replica.
            Some(e) if g.last_sync_at.is_none() => Err(Error::msg(format!(
                "replication stopped, but nothing reached the replica {} ({e}): no commit made \
                 since litestream_start() is in it",
                self.shared.replica
            ))),
            Some(e) => Err(Error::msg(format!(
                "replication stopped, but the final sync failed ({e}); the replica holds TXID {}",
                ltx::format_txid(g.txid)
            ))),
            None => Ok(g.txid),
        }
    }

    pub fn status(&self) -> Status {
        let g = self.shared.lock();
        let progress = self.shared.progress.snapshot();
        // Not holding the lease means not running, even before the worker has noticed.
        let lease = self.lease.as_ref().map(|l| l.view());
        let state = match (&lease, g.state) {
            (Some(v), RunState::Running) if v.role != Role::Holder => RunState::Standby,
            (_, s) => s,
        };
        let role = match &lease {
            Some(v) if v.role != Role::Holder && g.following => "following",
            Some(v) if v.role != Role::Holder => "standby",
            _ => "primary",
        };
        Status {
            state: state.as_str(),
            role: Some(role),
            follow: g.follow.clone(),
            db: Some(self.shared.db_path.clone()),
            replica: Some(self.shared.replica.clone()),
            txid: Some(ltx::format_txid(g.txid)),
            last_sync_at: g
                .last_sync_at
                .map(|t| replica_client::format_timestamp_ms(unix_ms(t))),
            lag_ms: g
                .oldest_pending()
                .map(|t| t.elapsed().as_millis() as u64)
                .unwrap_or(0),
            bytes_uploaded: progress.bytes_uploaded,
            objects_uploaded: progress.objects_uploaded,
            multipart_uploads: progress.multipart_uploads,
            upload: progress.in_flight,
            snapshots: g.snapshots,
            last_snapshot_reason: g.last_snapshot_reason.clone(),
            checkpoints: g.checkpoints,
            checkpoints_deferred: g.checkpoint_deferrals,
            checkpoints_yielded: g.checkpoints_yielded,
            checkpoints_unlocked: g.checkpoints_unlocked,
            wal_size: g.wal_size,
            sync_interval: Some(crate::config::format_duration(
                self.shared.cfg.sync_interval,
            )),
            part_size: Some(self.shared.cfg.part_size),
            concurrency: Some(self.shared.cfg.concurrency),
            // An upload riding out a failure (retrying a part) is no error yet, but shows it.
            last_error: g.last_error.clone().or(progress.retrying),
            compaction: Some(self.compactor.status_json()),
            lease: Some(match &lease {
                Some(v) => v.status(),
                None => LeaseStatus::off(),
            }),
            restores: None,
        }
    }
}
