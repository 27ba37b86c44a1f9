//! Process-wide state: the configuration of each database, the replicators, and the tokio
//! runtime they share.
//!
//! Invariants:
//! - One tokio runtime per process, created by the first `litestream_start()` (or restore), and
//!   one replicator per database path, shared by every connection of the process.
//! - After `fork()` the child has the parent's memory but none of its threads. The first call in
//!   the child notices the new pid and forgets (leaks, never drops) everything the parent had
//!   running: dropping would join threads that do not exist and close connections the parent
//!   still uses. The child can then start afresh.
//! - Configuration belongs to a database (its canonical path), not to a connection.
//! - A replicator runs while a connection that called `litestream_start()` on its database is
//!   open: each such connection holds a [`ConnectionGuard`], and when the last one closes the
//!   replicator is stopped as `litestream_stop()` would (final sync, checkpoint, release of the
//!   lease), on a thread of its own so that closing a connection never waits on S3.
//! - At most one replicator per database runs at any moment, stopping ones included: a start
//!   waits for the database's stop in progress to finish first.
//! - At process exit (`exit()`, a return from `main`) the running replicators are stopped, and
//!   the exit waits for them at most [`EXIT_BUDGET`]: the lease is released so that the next
//!   process does not wait for it to expire, unless the final sync cannot finish in time (S3
//!   unreachable, a long upload), in which case the lease is left to expire. A forked child that
//!   started nothing of its own does nothing at exit.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Once, Weak};
use std::time::Duration;

use once_cell::sync::Lazy;

use crate::config::{ReplicaTarget, Settings};
use crate::error::{Context, Error, Result};
use crate::replica_client::{FileReplicaClient, ReplicaClient};
use crate::replicator::Replicator;
use crate::s3::S3Client;
use crate::scheduler::Scheduler;

/// Worker threads for S3 I/O. Uploads are network-bound; two threads keep a multipart upload's
/// parts flowing without competing with the host for cores.
const RUNTIME_THREADS: usize = 2;
/// Threads of the background pool (compaction and retention of every database). Merges are
/// network-bound and each database's jobs run one at a time; two threads keep one long merge
/// from holding up every other database.
const BACKGROUND_THREADS: usize = 2;
/// Threads of the replicator pool, shared by every database's replicator. A step blocks for
/// the time of its uploads; four let a slow upload of one database leave the others going,
/// and stay four whether the process replicates one database or a thousand.
const REPLICATOR_THREADS: usize = 4;
/// Threads of the lease pool: renewals are single small requests, kept apart from uploads and
/// merges so that a busy replicator pool never delays one past the lease's TTL.
const LEASE_THREADS: usize = 2;
/// How long a process exit waits for its replicators to stop (final sync, then the lease
/// released). Long enough for the final upload of a healthy replica; short enough that an
/// unreachable one delays the exit by no more than this.
const EXIT_BUDGET: Duration = Duration::from_secs(2);

struct Process {
    pid: u32,
    runtime: Option<tokio::runtime::Runtime>,
    /// The pool that runs compaction, snapshots' scheduling and retention for every database.
    background: Option<Scheduler>,
    /// The pool that runs every database's replicator.
    replicator_pool: Option<Scheduler>,
    /// The pool that runs every database's lease.
    lease_pool: Option<Scheduler>,
    replicators: HashMap<PathBuf, Arc<Replicator>>,
    /// Open connections that called `litestream_start()`, per database.
    connections: HashMap<PathBuf, usize>,
    /// Stops running in the background, per database (see `stop_in_background`).
    stopping: HashMap<PathBuf, Arc<Stopping>>,
}

static PROCESS: Lazy<Mutex<Process>> = Lazy::new(|| {
    Mutex::new(Process {
        pid: std::process::id(),
        runtime: None,
        background: None,
        replicator_pool: None,
        lease_pool: None,
        replicators: HashMap::new(),
        connections: HashMap::new(),
        stopping: HashMap::new(),
    })
});

/// The process that has replicators to stop at exit; a forked child inherits the exit handler
/// but not this value's meaning, so the handler compares it with its own pid.
static EXIT_PID: AtomicU32 = AtomicU32::new(0);
/// Bumped when a forked child first notices it is one: commit notifiers forget the parent's
/// replicators they remembered.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static EXIT_HANDLER: Once = Once::new();

static SETTINGS: Lazy<Mutex<HashMap<PathBuf, Settings>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// One lock per database, held for the whole of a start: two connections starting the same
/// database at once get one replicator, and never while the database's last one is stopping.
static STARTS: Lazy<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

fn process() -> MutexGuard<'static, Process> {
    let mut p = PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if p.pid != pid {
        // Forked: the parent's threads are gone in this process. Leak their remains.
        std::mem::forget(p.runtime.take());
        // The pool's threads did not come along either (and its lock may be held by one).
        std::mem::forget(p.background.take());
        std::mem::forget(p.replicator_pool.take());
        std::mem::forget(p.lease_pool.take());
        std::mem::forget(std::mem::take(&mut p.replicators));
        std::mem::forget(std::mem::take(&mut p.stopping));
        // The parent's connections are the parent's to count.
        p.connections.clear();
        // Close inherited local-lock descriptors, or this child would hold the parent's claim on
        // its databases forever.
        crate::s3::lease::after_fork();
        FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
        p.pid = pid;
    }
    p
}

/// A handle to the shared runtime, creating it on first use.
pub fn runtime_handle() -> Result<tokio::runtime::Handle> {
    let mut p = process();
    if p.runtime.is_none() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("litestream-io")
            .enable_all()
            .build()
            .context("starting the litestream runtime")?;
        p.runtime = Some(rt);
    }
    Ok(p.runtime
        .as_ref()
        .map(|r| r.handle().clone())
        .expect("runtime just created"))
}

/// The pool that runs every database's compaction, created on first use.
pub fn background_scheduler() -> Scheduler {
    process()
        .background
        .get_or_insert_with(|| Scheduler::new("background", BACKGROUND_THREADS))
        .clone()
}

/// The pool that runs every database's replicator, created on first use.
pub fn replicator_scheduler() -> Scheduler {
    process()
        .replicator_pool
        .get_or_insert_with(|| Scheduler::new("replicator", REPLICATOR_THREADS))
        .clone()
}

/// The pool that runs every database's lease, created on first use.
pub fn lease_scheduler() -> Scheduler {
    process()
        .lease_pool
        .get_or_insert_with(|| Scheduler::new("lease", LEASE_THREADS))
        .clone()
}

/// Run `f` with the settings of one database (created empty on first use).
pub fn with_settings<T>(db: &Path, f: impl FnOnce(&mut Settings) -> T) -> T {
    let mut all = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    f(all.entry(db.to_path_buf()).or_default())
}

pub fn replicator(db: &Path) -> Option<Arc<Replicator>> {
    process().replicators.get(db).cloned()
}

/// What `litestream_start()` got: whether this call started the replicator, and the guard that
/// counts the calling connection until it closes.
pub struct Started {
    pub started: bool,
    pub guard: ConnectionGuard,
}

/// One open connection that called `litestream_start()` on `db`. Dropped when that connection
/// closes; the last one of a database stops its replicator.
#[derive(Debug)]
pub struct ConnectionGuard {
    db: PathBuf,
    /// A forked child closing a connection it inherited must not count it: it is the parent's.
    pid: u32,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        // Runs inside SQLite's close of the connection (xDestroy): nothing may unwind into C.
        let _ = catch_unwind(AssertUnwindSafe(|| connection_closed(&self.db, self.pid)));
    }
}

fn count_connection(p: &mut Process, db: &Path) -> ConnectionGuard {
    *p.connections.entry(db.to_path_buf()).or_default() += 1;
    ConnectionGuard {
        db: db.to_path_buf(),
        pid: p.pid,
    }
}

fn connection_closed(db: &Path, pid: u32) {
    if pid != std::process::id() {
        return;
    }
    let mut p = process();
    let Some(n) = p.connections.get_mut(db) else {
        return;
    };
    *n = n.saturating_sub(1);
    if *n > 0 {
        return;
    }
    p.connections.remove(db);
    if let Some(r) = p.replicators.remove(db) {
        stop_in_background(&mut p, db, r);
    }
}

/// Start replicating `db` unless a replicator is already running for it, and count the calling
/// connection.
pub fn start(db: &Path, vfs: Option<&str>) -> Result<Started> {
    let serial = STARTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(db.to_path_buf())
        .or_default()
        .clone();
    let _serial = serial.lock().unwrap_or_else(|p| p.into_inner());
    wait_for_stop_in_progress(db);
    {
        let mut p = process();
        if p.replicators.get(db).is_some_and(|r| !r.is_stopped()) {
            let guard = count_connection(&mut p, db);
            return Ok(Started {
                started: false,
                guard,
            });
        }
    }
    let cfg = with_settings(db, |s| s.resolve())?;
    // An S3 replica with the lease on gets its lock.json keeper; this probes the provider and
    // fails start() if it ignores conditional writes.
    let (client, lease): (Arc<dyn ReplicaClient>, _) = match &cfg.target {
        ReplicaTarget::S3(t) if cfg.lease => {
            let s3 = Arc::new(S3Client::new(t, runtime_handle()?)?);
            let setup = crate::s3::lease::prepare(&s3, cfg.lease_ttl, &cfg.lease_owner)?;
            (s3, Some(setup))
        }
        _ => (open_client(&cfg.target)?, None),
    };
    let r = Arc::new(Replicator::start(db, vfs, cfg, client, lease)?);
    let mut p = process();
    p.replicators.insert(db.to_path_buf(), r.clone());
    let guard = count_connection(&mut p, db);
    EXIT_PID.store(p.pid, Ordering::SeqCst);
    drop(p);
    EXIT_HANDLER.call_once(|| {
        // Without the handler a process that just exits leaves its lease to expire: that is
        // all that is lost, so a refusal is not an error.
        let _ = crate::host::at_exit(stop_all_at_exit);
    });
    Ok(Started {
        started: true,
        guard,
    })
}

/// Stop replicating `db`: final sync, then the thread ends. Returns the last TXID. A stop
/// already running in the background (the last connection closed) is waited for.
pub fn stop(db: &Path) -> Result<u64> {
    let mut p = process();
    if let Some(r) = p.replicators.remove(db) {
        let stopping = stop_begins(&mut p, db);
        drop(p);
        return run_stop(db, &r, &stopping);
    }
    match p.stopping.get(db).cloned() {
        Some(s) => {
            drop(p);
            s.wait()
        }
        None => Err(Error::msg(format!(
            "{} is not being replicated by this process",
            db.display()
        ))),
    }
}

/// The outcome of a stop running on a thread of its own.
#[derive(Default)]
struct Stopping {
    result: Mutex<Option<Result<u64>>>,
    done: Condvar,
}

impl Stopping {
    fn finish(&self, r: Result<u64>) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<u64> {
        let mut g = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = g.as_ref() {
                return r.clone();
            }
            g = self.done.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Register the stop of `db`'s replicator (already out of `p.replicators`) in `p.stopping`.
fn stop_begins(p: &mut Process, db: &Path) -> Arc<Stopping> {
    let stopping = Arc::new(Stopping::default());
    p.stopping.insert(db.to_path_buf(), stopping.clone());
    stopping
}

/// Stop `r`, publish the outcome in `stopping` and unregister it. Returns the outcome.
fn run_stop(db: &Path, r: &Replicator, stopping: &Arc<Stopping>) -> Result<u64> {
    let result = catch_unwind(AssertUnwindSafe(|| r.stop())).unwrap_or_else(|panic| {
        Err(Error::msg(format!(
            "internal error while stopping: {}",
            crate::error::panic_message(panic.as_ref())
        )))
    });
    stopping.finish(result.clone());
    let mut p = process();
    if p.stopping.get(db).is_some_and(|s| Arc::ptr_eq(s, stopping)) {
        p.stopping.remove(db);
    }
    result
}

/// Stop `r` (already out of `p.replicators`) on a thread of its own.
fn stop_in_background(p: &mut Process, db: &Path, r: Arc<Replicator>) {
    let stopping = stop_begins(p, db);
    let job = {
        let (db, stopping) = (db.to_path_buf(), stopping.clone());
        move || {
            let _ = run_stop(&db, &r, &stopping);
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("litestream-stop".into())
        .spawn(job)
    {
        // The job (and with it the replicator) was dropped unrun: only the thread limit does
        // this, and then the lease expires on its own.
        stopping.finish(Err(Error::msg(format!("starting the stop thread: {e}"))));
        p.stopping.remove(db);
    }
}

fn wait_for_stop_in_progress(db: &Path) {
    let stopping = process().stopping.get(db).cloned();
    if let Some(s) = stopping {
        let _ = s.wait();
    }
}

/// The exit handler: stop every replicator of this process, waiting at most [`EXIT_BUDGET`].
/// All the work runs on a helper thread, so that nothing it waits for (a lock a thread holds
/// as the process exits, a slow S3) can hold up the exit longer than that.
extern "C" fn stop_all_at_exit() {
    let _ = catch_unwind(|| {
        if EXIT_PID.load(Ordering::SeqCst) != std::process::id() {
            return;
        }
        let (done, finished) = mpsc::channel();
        let helper = std::thread::Builder::new()
            .name("litestream-exit".into())
            .spawn(move || {
                let stopping: Vec<Arc<Stopping>> = {
                    let mut p = process();
                    let running: Vec<_> = p.replicators.drain().collect();
                    for (db, r) in running {
                        stop_in_background(&mut p, &db, r);
                    }
                    p.stopping.values().cloned().collect()
                };
                for s in stopping {
                    let _ = s.wait();
                }
                let _ = done.send(());
            });
        if helper.is_ok() {
            let _ = finished.recv_timeout(EXIT_BUDGET);
        }
    });
}

/// The WAL hook of a connection that started replication of `db`: tells its replicator about
/// each commit.
pub fn commit_notifier(db: PathBuf) -> crate::host::CommitNotifier {
    // The replicator found last time, and the fork generation it belongs to: a commit then costs
    // an uncontended lock and a pointer upgrade, not a lookup of the path in the process table.
    let cached: Mutex<(u64, Weak<Replicator>)> = Mutex::new((u64::MAX, Weak::new()));
    Box::new(move |frames| {
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        // try_lock: the hook runs inside the host's commit; never make a commit wait on a lock
        // another thread holds (a missed notification is found by the next poll).
        let Ok(mut cache) = cached.try_lock() else {
            return;
        };
        if cache.0 == generation {
            if let Some(r) = cache.1.upgrade() {
                if r.notify_commit(frames) {
                    return;
                }
            }
        }
        let found = match PROCESS.try_lock() {
            Ok(p) => p.replicators.get(&db).cloned(),
            Err(_) => None,
        };
        *cache = (
            generation,
            found.as_ref().map(Arc::downgrade).unwrap_or_default(),
        );
        drop(cache);
        if let Some(r) = found {
            r.notify_commit(frames);
        }
    })
}

/// A client for a replica target (S3 clients share the process runtime).
pub fn open_client(target: &ReplicaTarget) -> Result<Arc<dyn ReplicaClient>> {
    Ok(match target {
        ReplicaTarget::S3(t) => Arc::new(S3Client::new(t, runtime_handle()?)?),
        ReplicaTarget::File { dir } => Arc::new(FileReplicaClient::new(dir)),
    })
}
