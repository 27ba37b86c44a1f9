//! One database's replicator: commit → WAL reader → LTX encoder → uploader → replica, and the
//! checkpoints that keep the WAL bounded.
//!
//! Each replicated database has one background thread that owns two connections of its own,
//! opened through the host's SQLite: `conn` holds a long read transaction that pins the WAL (no
//! other connection can restart or truncate it while we have not read it), and `barrier` takes the
//! write lock around our own checkpoints so no commit can slip between "read everything" and
//! "checkpoint". The thread wakes on commits of hooked connections, on `litestream_sync()`, and
//! polls at `sync-interval` for commits of other connections and processes.
//!
//! Invariants:
//! - Nothing committed is lost: a checkpoint runs only after every frame it can backfill is in the
//!   replica, and a WAL restart is accepted only when it is the single restart that follows such a
//!   checkpoint in this run: from that checkpoint on, our read transaction sits on read mark 0,
//!   which forbids any further backfill and hence a second restart. Any other discontinuity — a
//!   missed restart, a WAL rewritten
//!   or deleted behind our back, a replica that moved — produces a full snapshot at the next TXID.
//! - TXIDs are contiguous: each upload is `<txid>-<txid>.ltx` at the replica's max + 1.
//! - `synced_gen` only advances after an upload that began after the corresponding sync request,
//!   which is what lets `litestream_sync()` promise "everything committed before the call".
//! - With a lease (`s3::lease`), nothing touches the replica unless the lease is held: a standby
//!   holds no read transaction (it must not pin a WAL it does not replicate), and on every new
//!   acquisition the replica's position is re-read, so an instance continues at the replica's
//!   max + 1 — incrementally only when its saved position is that max and the WAL proves it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OpenFlags};

use crate::compactor::{self, Compactor};
use crate::config::ResolvedConfig;
use crate::error::{Context, Error, Result};
use crate::host::DbFile;
use crate::ltx::{self, Encoder, Header};
use crate::replica_client::{self, Progress, ReplicaClient, Spool, SNAPSHOT_LEVEL};
use crate::s3::lease::{Lease, LeaseSetup};
use crate::state::{self, Position, WalPosition};
use crate::wal::{self, ReadAt, Resume, ScanOutcome, Segment, WalHeader};

/// Litestream's `max-sync-wal-bytes`: one L0 file covers at most this much WAL (more follows in the
/// next file), so a burst of writes does not become one giant upload.
const MAX_SYNC_WAL_BYTES: u64 = 64 << 20;
/// Encoded LTX files up to this size stay in memory; larger ones spill to a temporary file.
const SPOOL_MEMORY_LIMIT: usize = 8 << 20;
/// How long our connections wait for locks (Litestream's `busy-timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// Without a sync interval (0 = upload on every commit) other processes' commits are still only
/// seen by polling; this is how often.
const MIN_POLL: Duration = Duration::from_millis(100);
/// Retry backoff after a failed cycle: doubles from the first value to the cap (Litestream: 5 min).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Backpressure: a hooked connection whose commit leaves the WAL larger than this waits (in the
/// WAL hook, after its commit, holding no lock) until the replicator has caught up and attempted a
/// checkpoint. Without it a writer faster than the upload grows the WAL without bound: the WAL can
/// only restart once everything in it is in the replica (Litestream's sidecar let a 553 MB burst
/// grow its WAL to 558 MB, test-infrastructure.md).
const BACKPRESSURE_WAL_BYTES: u64 = 16 << 20;
/// A writer never waits longer than this per commit, whatever the replica does.
const BACKPRESSURE_MAX_WAIT: Duration = Duration::from_secs(5);
/// `litestream_stop()` keeps retrying the final sync this long (Litestream's shutdown-sync-timeout).
pub const SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// A standby wakes at least this often (besides lease changes) to refresh status and to run the
/// checkpoints of a database nobody else on this host replicates.
const STANDBY_TICK: Duration = Duration::from_secs(1);
/// A level-9 snapshot is read again when the WAL restarted under it; a second restart needs a
/// checkpoint our read mark forbids, so two attempts suffice and the third is a margin.
const LEVEL9_ATTEMPTS: usize = 3;
/// A checkpoint that finds new commits under its write lock gives up (the next cycle uploads them
/// without the lock) while the WAL is below this size. Hooked writers past it wait in
/// backpressure, which gives the next attempt a quiet moment; past it, a writer that never
/// pauses (another process, which backpressure does not slow down) gets its commits uploaded
/// under the lock, so it cannot starve checkpoints and grow the WAL without bound.
const MAX_DEFERRED_WAL_BYTES: u64 = BACKPRESSURE_WAL_BYTES;

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
    /// Checkpoint attempts, successful or not (backpressure waiters watch this).
    checkpoint_attempts: u64,
    /// A hooked writer is waiting for the WAL to shrink: cycle and checkpoint now.
    pressure: bool,
    wal_size: u64,
    /// The lease thread changed role or error since the worker last looked.
    lease_changed: bool,
    /// A level-9 snapshot asked for by the compactor (see `request_level9`).
    level9: Option<Level9Request>,
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

/// "Write a level-9 snapshot `1-<current TXID>` unless the TXID is at most `newer_than`"; the
/// answer is the TXID and size written, or None.
type Level9Answer = Result<Option<(u64, u64)>>;
struct Level9Request {
    newer_than: u64,
    reply: std::sync::mpsc::SyncSender<Level9Answer>,
}

pub struct Shared {
    db_path: String,
    replica: String,
    cfg: ResolvedConfig,
    progress: Arc<Progress>,
    frame_size: u64,
    inner: Mutex<Inner>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is caught at the thread boundary; the data stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to a running replicator, shared by every connection of the process.
pub struct Replicator {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    lease: Option<Arc<Lease>>,
    compactor: Compactor,
}

impl Replicator {
    /// Open the replicator's connections, put the database in WAL mode and start the thread.
    /// Everything that can be checked without the network is checked here, so that mistakes are
    /// SQL errors of `litestream_start()`; network problems show up in status instead.
    pub fn start(
        db_path: &Path,
        vfs: Option<&str>,
        cfg: ResolvedConfig,
        client: Arc<dyn ReplicaClient>,
        lease: Option<LeaseSetup>,
    ) -> Result<Replicator> {
        let open = || -> Result<Connection> {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = match vfs {
                Some(v) => Connection::open_with_flags_and_vfs(db_path, flags, v)?,
                None => Connection::open_with_flags(db_path, flags)?,
            };
            conn.busy_timeout(BUSY_TIMEOUT)?;
            Ok(conn)
        };
        let conn = open().with_context(|| format!("opening {}", db_path.display()))?;
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
        let barrier = open().with_context(|| format!("opening {}", db_path.display()))?;

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
                checkpoint_attempts: 0,
                pressure: false,
                wal_size: 0,
                lease_changed: false,
                level9: None,
            }),
            cond: Condvar::new(),
        });
        let lease = match lease {
            Some(setup) => {
                let weak = Arc::downgrade(&shared);
                let waker = Box::new(move || {
                    if let Some(s) = weak.upgrade() {
                        s.lock().lease_changed = true;
                        s.cond.notify_all();
                    }
                });
                Some(Arc::new(Lease::start(setup, &meta, waker)?))
            }
            None => None,
        };
        let compaction = compactor::Settings::from_config(&shared.cfg);
        let spill_dir = meta.join("tmp");
        let compactor_client = client.clone();
        let mut worker = Worker {
            shared: shared.clone(),
            conn,
            barrier,
            in_read_txn: false,
            wal_path: PathBuf::from(format!("{}-wal", db_path.display())),
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
            lease: lease.clone(),
            lease_epoch: None,
            standby_wal_len: 0,
        };
        worker.begin_read()?;
        let thread = std::thread::Builder::new()
            .name("litestream-replicator".into())
            .spawn(move || worker.run())
            .context("starting the replicator thread")?;
        // ---- compactor (issue 5) ----
        // Level-9 snapshots are streamed by the worker thread, which owns the connections.
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
            compactor_client,
            compaction,
            &spill_dir,
            snapshot,
            may_write,
            confirmed,
        ) {
            Ok(c) => c,
            Err(e) => {
                shared.lock().stop_requested = true;
                shared.cond.notify_all();
                let _ = thread.join();
                if let Some(l) = &lease {
                    l.stop();
                }
                return Err(e);
            }
        };
        Ok(Replicator {
            shared,
            thread: Mutex::new(Some(thread)),
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
    pub fn notify_commit(&self, wal_frames: u32) {
        let mut g = self.shared.lock();
        if g.dirty_since.is_none() {
            g.dirty_since = Some(Instant::now());
        }
        let pressured = wal_frames as u64 * self.shared.frame_size >= BACKPRESSURE_WAL_BYTES;
        if pressured && g.state == RunState::Running && !g.stop_requested {
            g.pressure = true;
            self.shared.cond.notify_all();
            let seen = g.checkpoint_attempts;
            let deadline = Instant::now() + BACKPRESSURE_MAX_WAIT;
            while g.checkpoint_attempts == seen && g.state == RunState::Running && !g.stop_requested
            {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                g = self
                    .shared
                    .cond
                    .wait_timeout(g, deadline - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            return;
        }
        drop(g);
        self.shared.cond.notify_all();
    }

    /// Block until everything committed before this call is in the replica; returns that TXID.
    pub fn sync(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        g.sync_requested += 1;
        let ticket = g.sync_requested;
        self.shared.cond.notify_all();
        loop {
            // Lease (issue 4): a standby answers at once instead of timing out.
            if let Some(l) = &self.lease {
                if let Some(m) = l.view().standby_message(l.lock_url()) {
                    return Err(Error::msg(m));
                }
            }
            if g.synced_gen >= ticket {
                return Ok(g.txid);
            }
            if g.state == RunState::Stopped {
                return Err(Error::msg(
                    "replication is stopped; call litestream_start() first",
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                let why = g
                    .last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default();
                return Err(Error::msg(format!(
                    "timed out after {} ms waiting for the replica ({}) to catch up{why}",
                    timeout.as_millis(),
                    self.shared.replica
                )));
            }
            g = self
                .shared
                .cond
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Final sync, final checkpoint, then stop the thread. Returns the last TXID in the replica.
    pub fn stop(&self) -> Result<u64> {
        // The compactor first: it may be waiting on the worker for a level-9 snapshot.
        self.compactor.stop();
        {
            let mut g = self.shared.lock();
            g.stop_requested = true;
        }
        self.shared.cond.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        // Lease (issue 4): after the final sync, release so a standby takes over at once.
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

    pub fn status(&self) -> serde_json::Value {
        let g = self.shared.lock();
        let progress = self.shared.progress.to_json();
        // Lease (issue 4): not holding means not running, even before the worker has noticed.
        let lease = self.lease.as_ref().map(|l| l.view());
        let state = match (&lease, g.state) {
            (Some(v), RunState::Running) if v.role != crate::s3::lease::Role::Holder => {
                RunState::Standby
            }
            (_, s) => s,
        };
        serde_json::json!({
            "state": state.as_str(),
            "db": self.shared.db_path,
            "replica": self.shared.replica,
            "txid": ltx::format_txid(g.txid),
            "last_sync_at": g.last_sync_at.map(|t| replica_client::format_timestamp_ms(unix_ms(t))),
            "lag_ms": g.oldest_pending().map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
            "bytes_uploaded": progress["bytes_uploaded"],
            "objects_uploaded": progress["objects_uploaded"],
            "multipart_uploads": progress["multipart_uploads"],
            "upload": progress["in_flight"],
            "snapshots": g.snapshots,
            "last_snapshot_reason": g.last_snapshot_reason,
            "checkpoints": g.checkpoints,
            "checkpoints_deferred": g.checkpoint_deferrals,
            "wal_size": g.wal_size,
            "sync_interval": crate::config::format_duration(self.shared.cfg.sync_interval),
            "part_size": self.shared.cfg.part_size,
            "concurrency": self.shared.cfg.concurrency,
            // An upload riding out a failure (retrying a part) is no error yet, but shows it.
            "last_error": g.last_error.clone().or_else(|| progress["retrying"].as_str().map(str::to_string)),
            "compaction": self.compactor.status_json(),
            "lease": match &lease {
                Some(v) => v.to_json(),
                None => serde_json::json!({
                    "role": "off", "owner": null, "token": null, "expires_at": null,
                }),
            },
        })
    }
}

/// Ask the worker thread for a level-9 snapshot and wait for its answer (the compactor's
/// `SnapshotFn`).
fn request_level9(shared: &Shared, newer_than: u64) -> Level9Answer {
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

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How the next L0 file is produced.
enum Plan {
    /// Continue the WAL from a proven position.
    Incremental(Resume),
    /// Full database image at the next TXID.
    Snapshot { reason: String },
}

/// The replicator thread's state. Not shared: only the thread touches it.
struct Worker {
    shared: Arc<Shared>,
    conn: Connection,
    barrier: Connection,
    in_read_txn: bool,
    wal_path: PathBuf,
    db_file_path: PathBuf,
    meta: PathBuf,
    page_size: u32,
    client: Arc<dyn ReplicaClient>,
    /// Position from the state file, to be checked against the replica before it is trusted.
    saved: Vec<Position>,
    /// Position of the last upload; None until known (then the next file is a snapshot).
    pos: Option<Position>,
    /// The replica's highest TXID, once listed.
    remote_max: Option<u64>,
    last_checkpoint: Instant,
    synced_since_checkpoint: bool,
    /// Checkpoints given up because commits arrived between the upload and the write lock (see
    /// `checkpoint_inner`), in this run.
    checkpoint_deferrals: u64,
    /// Our read transaction has pinned the WAL without a gap (other than the moments our own
    /// barrier holds writers off) since `pos` was uploaded in this run. While pinned, a complete
    /// checkpoint leaves us on read mark 0, which forbids further backfill, so the WAL can restart
    /// at most once and only over frames we have uploaded. False at start and after a standby
    /// period, when the WAL may have done anything meanwhile.
    pinned: bool,
    /// The barrier connection holds the write lock right now.
    barrier_held: bool,
    /// Lease (issue 4): None = lease off.
    lease: Option<Arc<Lease>>,
    /// Epoch of the lease acquisition this worker's position belongs to; None = not holding.
    lease_epoch: Option<u64>,
    /// WAL size at the last standby checkpoint (skip checkpoints when nothing was written).
    standby_wal_len: u64,
}

impl Worker {
    fn run(mut self) {
        let shared = self.shared.clone();
        let lease = self.lease.clone();
        let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_loop()));
        if let Err(panic) = body {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            let mut g = shared.lock();
            g.last_error = Some(format!("internal error in the replicator: {msg}"));
            g.state = RunState::Stopped;
            drop(g);
            // Lease (issue 4): a dead replicator must not keep the lease from a standby.
            if let Some(l) = &lease {
                l.stop();
            }
        }
        shared.cond.notify_all();
    }

    fn run_loop(&mut self) {
        let interval = self.shared.cfg.sync_interval;
        let poll = if interval.is_zero() {
            MIN_POLL
        } else {
            interval
        };
        let mut next_poll = Instant::now();
        let mut backoff: Option<(Duration, Instant)> = None;
        // Sync requests up to this number have had a cycle started for them. A request bypasses
        // the error backoff once, not on every loop, or a waiter would hammer a dead endpoint.
        let mut attempted = 0u64;
        loop {
            // ---- lease gate (issue 4): replicate only while holding the lease ----
            if let Some(lease) = self.lease.clone() {
                match lease.holding() {
                    Some((_, epoch)) => {
                        if self.lease_epoch != Some(epoch) {
                            self.take_over(epoch);
                            backoff = None;
                            next_poll = Instant::now();
                        }
                    }
                    None => {
                        // Not the holder: a pending level-9 request is refused (dropped).
                        self.shared.lock().level9 = None;
                        if self.standby_wait(&lease) {
                            self.shutdown();
                            return;
                        }
                        continue;
                    }
                }
            }
            // Wait for a reason to run a cycle.
            let (stopping, ticket, lease_poke) = {
                let mut g = self.shared.lock();
                let mut lease_poke = false;
                loop {
                    let now = Instant::now();
                    if g.stop_requested {
                        break;
                    }
                    if std::mem::take(&mut g.lease_changed) && self.lease.is_some() {
                        lease_poke = true;
                        break;
                    }
                    let retry_at = backoff.map(|(_, at)| at);
                    let sync_wanted = g.sync_requested > attempted.max(g.synced_gen) || g.pressure;
                    let commit_due = g.dirty_since.map(|t| t + interval);
                    let mut due = next_poll;
                    if let Some(c) = commit_due {
                        due = due.min(c);
                    }
                    if let Some(r) = retry_at {
                        // While backing off, only an explicit sync request bypasses the wait.
                        due = r;
                    }
                    if sync_wanted || now >= due || g.level9.is_some() {
                        break;
                    }
                    g = self
                        .shared
                        .cond
                        .wait_timeout(g, due - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                (g.stop_requested, g.sync_requested, lease_poke)
            };
            if lease_poke && !stopping {
                continue; // back to the lease gate
            }
            attempted = ticket;
            next_poll = Instant::now() + poll;
            {
                let mut g = self.shared.lock();
                g.covering_since = g.dirty_since.take();
            }
            let result = self.cycle(ticket);
            // A level-9 snapshot requested by the compactor (which reports its errors itself).
            let level9 = self.shared.lock().level9.take();
            if let Some(req) = level9 {
                let _ = req.reply.send(self.write_level9_snapshot(req.newer_than));
            }
            let mut g = self.shared.lock();
            if g.pressure {
                // The cycle ended without a checkpoint attempt (an error, nothing to checkpoint):
                // release backpressure waiters anyway rather than spin on the flag.
                g.pressure = false;
                g.checkpoint_attempts += 1;
            }
            match result {
                Ok(()) => {
                    g.state = RunState::Running;
                    g.last_error = None;
                    g.covering_since = None;
                    backoff = None;
                }
                Err(e) => {
                    g.state = RunState::Error;
                    g.last_error = Some(e.to_string());
                    g.dirty_since = g.oldest_pending();
                    g.covering_since = None;
                    let delay = backoff
                        .map(|(d, _)| (d * 2).min(BACKOFF_MAX))
                        .unwrap_or(BACKOFF_START);
                    backoff = Some((delay, Instant::now() + delay));
                }
            }
            drop(g);
            self.shared.cond.notify_all();
            if stopping {
                self.shutdown();
                return;
            }
        }
    }

    /// The final sync on `litestream_stop()`: retried for a while if the replica is unreachable,
    /// then a checkpoint that leaves a position the next start can continue from.
    fn shutdown(&mut self) {
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

    // ---- read transaction that pins the WAL -------------------------------------------------

    fn begin_read(&mut self) -> Result<()> {
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

    fn end_read(&mut self) -> Result<()> {
        if self.in_read_txn {
            self.conn.execute_batch("COMMIT")?;
            self.in_read_txn = false;
        }
        Ok(())
    }

    // ---- one cycle ------------------------------------------------------------------------

    /// Upload every committed frame not yet in the replica, then checkpoint if the policy says so.
    fn cycle(&mut self, ticket: u64) -> Result<()> {
        self.begin_read()?;
        self.sync_wal()?;
        {
            let mut g = self.shared.lock();
            g.synced_gen = g.synced_gen.max(ticket.min(g.sync_requested));
            g.txid = self
                .pos
                .map(|p| p.txid)
                .unwrap_or(self.remote_max.unwrap_or(0));
            g.last_sync_at = Some(SystemTime::now());
            g.wal_size = std::fs::metadata(&self.wal_path)
                .map(|m| m.len())
                .unwrap_or(0);
        }
        self.shared.cond.notify_all();
        self.checkpoint_if_needed()
    }

    fn ensure_remote_position(&mut self) -> Result<u64> {
        if let Some(max) = self.remote_max {
            return Ok(max);
        }
        let max = replica_client::replica_max_txid(self.client.as_ref()).with_context(|| {
            format!(
                "reading the replica position from {}",
                self.client.describe()
            )
        })?;
        self.remote_max = Some(max);
        // The saved position counts only if the replica still ends exactly where we left it.
        self.pos = std::mem::take(&mut self.saved)
            .into_iter()
            .find(|p| p.txid == max && max > 0);
        self.shared.lock().txid = max;
        Ok(max)
    }

    /// Upload L0 files until the replica holds every committed frame of the WAL.
    fn sync_wal(&mut self) -> Result<()> {
        self.ensure_remote_position()?;
        loop {
            let (wal, header) = self.open_wal()?;
            let plan = self.plan(wal.as_ref(), header.as_ref())?;
            let more = match plan {
                Plan::Incremental(resume) => match wal.as_ref() {
                    Some(f) => self.write_incremental(f, resume)?,
                    None => false,
                },
                Plan::Snapshot { reason } => self.write_snapshot(wal.as_ref(), &reason)?,
            };
            if !more {
                return Ok(());
            }
        }
    }

    /// Decide where to continue reading (litestream-format.md §3.6, with our own checkpoints and
    /// read mark used to prove that at most one restart happened).
    fn plan(&self, wal: Option<&File>, header: Option<&WalHeader>) -> Result<Plan> {
        let Some(pos) = self.pos else {
            return Ok(Plan::Snapshot {
                reason: "no continuous position in the replica".into(),
            });
        };
        let Some(header) = header else {
            // No valid WAL header: the WAL is empty (a commit writes the header first). Nothing
            // is new only if the database file is known to equal the replica: the WAL was empty
            // at our position, or we checkpointed everything ourselves, pinned ever since; or the
            // file is untouched since the checkpoint at the last stop. Otherwise a connection may
            // have checkpointed commits we never saw and then deleted or truncated the WAL.
            if (self.pinned && (pos.backfilled || pos.wal.is_empty()))
                || (pos.backfilled && self.db_unchanged_since_stop(&pos))
            {
                return Ok(Plan::Incremental(Resume::At {
                    offset: pos.wal.end,
                    salt1: pos.wal.salt1,
                    salt2: pos.wal.salt2,
                }));
            }
            return Ok(Plan::Snapshot {
                reason: "the WAL was emptied by a checkpoint the replicator did not see".into(),
            });
        };
        if header.page_size != self.page_size {
            return Ok(Plan::Snapshot {
                reason: "the WAL page size changed".into(),
            });
        }
        if header.salts() == (pos.wal.salt1, pos.wal.salt2) {
            // Same WAL generation: the frame before our end must still be the one we read.
            let f = wal.ok_or_else(|| Error::msg("WAL vanished while reading it"))?;
            if pos.wal.end > 32 {
                let prev = pos.wal.end - wal::frame_size(self.page_size);
                match wal::read_frame_header(f, prev)? {
                    Some(h)
                        if h.salts() == header.salts()
                            && h.checksum() == pos.wal.frame_checksum => {}
                    _ => {
                        return Ok(Plan::Snapshot {
                            reason: "the WAL was overwritten behind the replicator".into(),
                        })
                    }
                }
            }
            return Ok(Plan::Incremental(Resume::At {
                offset: pos.wal.end,
                salt1: pos.wal.salt1,
                salt2: pos.wal.salt2,
            }));
        }
        // New salts: the WAL restarted (or appeared). Safe if everything before it was
        // checkpointed by us with writers held off — or there was no WAL at our position — and we
        // have been pinned since: our read transaction then sits on read mark 0, which forbids
        // any further backfill, so this generation is the only one since and it is still whole.
        // (The header's checkpoint sequence cannot prove this: SQLite keeps that counter per
        // connection.)
        if self.pinned && (pos.backfilled || pos.wal.is_empty()) {
            return Ok(Plan::Incremental(Resume::FromStart));
        }
        // Or: the database file is exactly as it was when everything was checkpointed at the last
        // stop. Then nothing was backfilled since, so no generation can have come and gone: the
        // current WAL (even a new file, as after the last connection deleted the old one) holds
        // every change since.
        if pos.backfilled && self.db_unchanged_since_stop(&pos) {
            return Ok(Plan::Incremental(Resume::FromStart));
        }
        Ok(Plan::Snapshot {
            reason: "the WAL restarted without a checkpoint the replicator could account for"
                .into(),
        })
    }

    /// The database file still has the identity recorded at the last stop's checkpoint.
    fn db_unchanged_since_stop(&self, pos: &Position) -> bool {
        pos.db_stamp.is_some() && pos.db_stamp == state::DbStamp::of(&self.db_file_path).ok()
    }

    /// Read committed frames from `resume` and upload them as the next L0 file. Returns true when
    /// more WAL remains beyond the chunk limit.
    fn write_incremental(&mut self, wal: &File, resume: Resume) -> Result<bool> {
        let seg = match wal::scan(wal, resume, Some(MAX_SYNC_WAL_BYTES))? {
            ScanOutcome::NoWal => return Ok(false),
            ScanOutcome::PrevFrameMismatch { reason } => {
                return self.write_snapshot(Some(wal), &format!("WAL continuity lost ({reason})"));
            }
            ScanOutcome::Segment(s) => s,
        };
        let pos = self
            .pos
            .ok_or_else(|| Error::msg("internal: incremental sync without a position"))?;
        if seg.commits == 0 {
            // Nothing new. A restart with no frames yet still moves our position to the new
            // generation, so the old frames' salts are never looked for again.
            if matches!(resume, Resume::FromStart) {
                self.pos = Some(Position {
                    wal: wal_position(&seg, seg.header.checkpoint_seq),
                    backfilled: false,
                    db_stamp: None,
                    ..pos
                });
            }
            return Ok(false);
        }
        let txid = pos.txid + 1;
        let db = DbFile::new(&self.conn)?;
        let header = self.ltx_header(txid, seg.commit, &seg);
        let mut spool = Spool::new(&self.meta.join("tmp"), SPOOL_MEMORY_LIMIT);
        let mut enc = Encoder::new(&mut spool, header)?;
        let mut buf = vec![0u8; self.page_size as usize];
        let lock_page = ltx::lock_page(self.page_size);
        // Pages the transaction changed, plus pages the database grew by that are not in the WAL
        // (read from the database file), as Litestream does.
        let mut pages: Vec<u32> = seg.pages.keys().copied().collect();
        if seg.commit > pos.commit {
            pages.extend(
                (pos.commit + 1..=seg.commit)
                    .filter(|p| !seg.pages.contains_key(p) && *p != lock_page),
            );
            pages.sort_unstable();
        }
        for pgno in pages {
            self.read_page(wal, &db, &seg, pgno, &mut buf)?;
            enc.write_page(pgno, &buf)?;
        }
        enc.finish()?;
        if !wal_generation_unchanged(wal, &seg)? {
            return Ok(true); // what was read may be torn: plan again
        }
        let more = seg.end < wal.len().unwrap_or(0) && seg.size() >= MAX_SYNC_WAL_BYTES;
        let new_pos = Position {
            txid,
            page_size: self.page_size,
            commit: seg.commit,
            wal: wal_position(&seg, seg.header.checkpoint_seq),
            backfilled: false,
            db_stamp: None,
        };
        self.upload(&new_pos, header.timestamp_ms, &mut spool)?;
        self.after_upload()?;
        Ok(more)
    }

    /// Upload a full image of the database at the next TXID. Returns true (nothing uploaded) when
    /// the WAL restarted while it was read: the caller plans again.
    fn write_snapshot(&mut self, wal: Option<&File>, reason: &str) -> Result<bool> {
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
        let header = self.ltx_header(txid, commit, seg_ref);
        let mut spool = self.encode_full_image(wal, &db, seg_ref, header)?;
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
        self.upload(&new_pos, header.timestamp_ms, &mut spool)
            .map_err(|e| e.context(format!("snapshot ({reason})")))?;
        let mut g = self.shared.lock();
        g.snapshots += 1;
        g.last_snapshot_reason = Some(format!("TXID {}: {reason}", ltx::format_txid(txid)));
        drop(g);
        self.after_upload()?;
        Ok(false)
    }

    /// Every page 1..=header.commit (but the lock page) into an LTX file: from the WAL segment
    /// where it has the page, else from the database file.
    fn encode_full_image(
        &self,
        wal: Option<&File>,
        db: &DbFile,
        seg: &Segment,
        header: Header,
    ) -> Result<Spool> {
        let mut spool = Spool::new(&self.meta.join("tmp"), SPOOL_MEMORY_LIMIT);
        let mut enc = Encoder::new(&mut spool, header)?;
        let mut buf = vec![0u8; self.page_size as usize];
        let lock_page = ltx::lock_page(self.page_size);
        let dummy: &[u8] = &[];
        for pgno in (1..=header.commit).filter(|p| *p != lock_page) {
            match wal {
                Some(f) => self.read_page(f, db, seg, pgno, &mut buf)?,
                None => self.read_page(&dummy, db, seg, pgno, &mut buf)?,
            }
            enc.write_page(pgno, &buf)?;
        }
        enc.finish()?;
        Ok(spool)
    }

    // ---- level-9 snapshots for the compactor (issue 5) ---------------------------------------

    /// Stream a full image of the database at the replica's current TXID to level 9 (Litestream
    /// builds its snapshots from the database, not from the replica). The position does not
    /// move. Returns the TXID and size written, or None when the TXID is at most `newer_than`
    /// or there is nothing to snapshot yet.
    fn write_level9_snapshot(&mut self, newer_than: u64) -> Result<Option<(u64, u64)>> {
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
    fn encode_level9(&self, pos: &Position) -> Result<Option<(Spool, i64)>> {
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

    /// A page's latest committed content: the WAL frame if the segment has one, else the file.
    fn read_page<F: ReadAt + ?Sized>(
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
                .with_context(|| format!("reading page {pgno} of {}", self.shared.db_path))?,
        }
        Ok(())
    }

    fn ltx_header(&self, txid: u64, commit: u32, seg: &Segment) -> Header {
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

    /// Upload the L0 file that moves the replica to `new_pos`, and make it our position. The state
    /// file names `new_pos` as pending first, so a crash right after the upload still leaves a
    /// position that matches the replica.
    fn upload(&mut self, new_pos: &Position, timestamp_ms: i64, spool: &mut Spool) -> Result<()> {
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
        self.client.put(0, txid, txid, timestamp_ms, spool)?;
        self.remote_max = Some(txid);
        self.pos = Some(*new_pos);
        // Uploads happen inside a cycle, with the read transaction held.
        self.pinned = self.in_read_txn;
        Ok(())
    }

    fn after_upload(&mut self) -> Result<()> {
        self.synced_since_checkpoint = true;
        if let Some(pos) = &self.pos {
            self.shared.lock().txid = pos.txid;
            state::save(&self.meta, &self.client.describe(), Some(pos), None)
                .with_context(|| format!("saving replication state in {}", self.meta.display()))?;
        }
        Ok(())
    }

    // ---- lease (issue 4) --------------------------------------------------------------------

    /// Just acquired the lease (or kept it across a lapse): whatever we knew about the replica may
    /// be stale — another holder may have written to it. Re-read its max TXID and offer the newest
    /// saved position (the state file may be newer than ours: another process on this host may
    /// have replicated this very database); `ensure_remote_position` trusts it only if it is the
    /// replica's max, and `plan()` only if the WAL proves continuity. Otherwise: a snapshot.
    fn take_over(&mut self, epoch: u64) {
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

    /// One standby period: no read transaction, status from the lease, checkpoints if this
    /// process is the one responsible for the database on this host. Returns true on stop.
    fn standby_wait(&mut self, lease: &Lease) -> bool {
        if self.lease_epoch.take().is_some() {
            // Lost the lease: keep our position only as a hint for the next acquisition.
            if let Some(p) = self.pos.take() {
                self.saved.push(p);
            }
            self.remote_max = None;
        }
        let _ = self.end_read();
        self.pinned = false;
        let view = lease.view();
        let checkpoint = if lease.has_local_claim() {
            self.standby_checkpoint().err()
        } else {
            None
        };
        let mut g = self.shared.lock();
        let (state, error) = if view.fatal {
            (RunState::Error, view.error.clone())
        } else if let Some(lost) = &view.lost {
            (RunState::Standby, Some(lost.clone()))
        } else if let Some(e) = &view.error {
            (RunState::Error, Some(format!("lease: {e}")))
        } else {
            (RunState::Standby, checkpoint.map(|e| e.to_string()))
        };
        g.state = state;
        g.last_error = error;
        g.dirty_since = None;
        g.covering_since = None;
        drop(g);
        self.shared.cond.notify_all();
        let deadline = Instant::now() + STANDBY_TICK;
        let mut g = self.shared.lock();
        loop {
            if g.stop_requested {
                return true;
            }
            if std::mem::take(&mut g.lease_changed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .shared
                .cond
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// A standby's database still needs checkpoints (the extension replaced the host's
    /// auto-checkpoint). Plain ones: nothing of it is being replicated from here, and whatever
    /// it does to the WAL only means a snapshot when this instance takes over.
    fn standby_checkpoint(&mut self) -> Result<()> {
        let len = std::fs::metadata(&self.wal_path)
            .map(|m| m.len())
            .unwrap_or(0);
        if len == self.standby_wal_len {
            return Ok(());
        }
        let frames = len.saturating_sub(32) / wal::frame_size(self.page_size);
        let cfg = &self.shared.cfg;
        let mode = if cfg.truncate_page_n.is_some_and(|n| frames >= n as u64) {
            "TRUNCATE"
        } else if frames >= cfg.min_checkpoint_page_count as u64
            || cfg
                .checkpoint_interval
                .is_some_and(|i| self.last_checkpoint.elapsed() >= i)
        {
            "PASSIVE"
        } else {
            return Ok(());
        };
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(0)
            })
            .with_context(|| format!("standby checkpoint({mode})"))?;
        self.last_checkpoint = Instant::now();
        self.standby_wal_len = std::fs::metadata(&self.wal_path)
            .map(|m| m.len())
            .unwrap_or(0);
        self.shared.lock().checkpoints += 1;
        Ok(())
    }

    // ---- checkpoints ----------------------------------------------------------------------

    fn checkpoint_if_needed(&mut self) -> Result<()> {
        let Some(pos) = self.pos else { return Ok(()) };
        if pos.backfilled {
            // Everything up to our position is already in the database file; the WAL's next
            // writer restarts it. Checkpointing again would only take the write lock for nothing.
            return Ok(());
        }
        let frames = pos.wal.end.saturating_sub(32) / wal::frame_size(self.page_size);
        let cfg = &self.shared.cfg;
        let pressured = self.shared.lock().pressure;
        let interval_due = cfg
            .checkpoint_interval
            .is_some_and(|i| self.last_checkpoint.elapsed() >= i)
            && self.synced_since_checkpoint
            && frames > 1;
        let mode = if cfg.truncate_page_n.is_some_and(|n| frames >= n as u64) {
            CheckpointMode::Truncate
        } else if frames >= cfg.min_checkpoint_page_count as u64 || pressured || interval_due {
            CheckpointMode::Passive
        } else {
            return Ok(());
        };
        // Below the backpressure size, commits that slip in defer the checkpoint; above it an
        // upload under the lock is the lesser evil (see MAX_DEFERRED_WAL_BYTES).
        let wal_len = std::fs::metadata(&self.wal_path)
            .map(|m| m.len())
            .unwrap_or(0);
        self.checkpoint(mode, false, wal_len < MAX_DEFERRED_WAL_BYTES)
    }

    /// Checkpoint with writers held off: take the write lock on the barrier connection, upload
    /// whatever was committed meanwhile (the WAL is now sealed), checkpoint, release. If every
    /// frame was backfilled, the position is marked so the WAL's next restart is accepted.
    /// `stamp`: also record the database file's identity while writers are still held off (at
    /// stop), see `state::DbStamp`.
    /// `defer_if_busy`: give up (for now) rather than upload while writers are held off.
    fn checkpoint(&mut self, mode: CheckpointMode, stamp: bool, defer_if_busy: bool) -> Result<()> {
        let result = self.checkpoint_inner(mode, stamp, defer_if_busy);
        let mut g = self.shared.lock();
        g.checkpoint_attempts += 1;
        g.pressure = false;
        drop(g);
        self.shared.cond.notify_all();
        result
    }

    fn checkpoint_inner(
        &mut self,
        mode: CheckpointMode,
        stamp: bool,
        defer_if_busy: bool,
    ) -> Result<()> {
        // The cycle that calls this has just uploaded, with writers free to run: what is left
        // for the locked section below is normally nothing, so it does no network I/O while the
        // application cannot commit.
        if self.barrier.execute_batch("BEGIN IMMEDIATE").is_err() {
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
            }
        }
        Ok(())
    }
}

impl Worker {
    /// Whether the WAL holds a commit the replica does not (a local read of the WAL; no upload).
    /// Anything that would need a snapshot counts as yes.
    fn has_unuploaded_commits(&self) -> Result<bool> {
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

    /// The `-wal` file (None when there is none) and its header (None when it has no valid one).
    fn open_wal(&self) -> Result<(Option<File>, Option<WalHeader>)> {
        let wal = match File::open(&self.wal_path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::msg(format!(
                    "opening {}: {e}",
                    self.wal_path.display()
                )))
            }
        };
        let header = match &wal {
            Some(f) => WalHeader::read(f)?,
            None => None,
        };
        Ok((wal, header))
    }

    /// Shrink the WAL file after a complete checkpoint. Run from the barrier connection (no longer
    /// in its write transaction) while `conn` keeps its read transaction on read mark 0: a commit
    /// that slips in before the truncation restarts the WAL and appends frames, which TRUNCATE
    /// would have to backfill — and backfilling needs read mark 0 exclusively, so it gives up
    /// (SQLITE_BUSY) instead of truncating frames we have not read. Busy timeout 0: never hold
    /// the write lock while waiting for that.
    fn truncate_wal(&mut self) -> Result<()> {
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckpointMode {
    Passive,
    Truncate,
}

/// Whether the WAL still holds the generation `seg` was read from, checked after its frames were
/// read. Frames we read can be overwritten by a WAL restart when our read transaction sits on read
/// mark 0 (the WAL was fully checkpointed when it began): SQLite then allows one restart, and the
/// new generation overwrites frames from the start of the file while we may still be reading
/// them (found by the crash trials: a level-9 snapshot with three pages of a later transaction).
/// A writer writes the new WAL header before any frame of the new generation, so unchanged salts
/// after the reads prove every read saw the old generation.
fn wal_generation_unchanged(wal: &File, seg: &Segment) -> Result<bool> {
    if seg.end <= wal::WAL_HEADER_SIZE {
        return Ok(true); // no frame was read
    }
    Ok(WalHeader::read(wal)?.is_some_and(|h| h.salts() == seg.header.salts()))
}

/// A WAL segment with no frames: every page comes from the database file.
fn empty_segment(page_size: u32, commit: u32) -> Segment {
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

fn wal_position(seg: &Segment, checkpoint_seq: u32) -> WalPosition {
    let (salt1, salt2) = seg.header.salts();
    WalPosition {
        end: seg.end,
        salt1,
        salt2,
        checkpoint_seq,
        frame_checksum: seg.last_frame_checksum,
    }
}
