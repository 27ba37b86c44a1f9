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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use once_cell::sync::Lazy;

use crate::config::{ReplicaTarget, Settings};
use crate::error::{Context, Error, Result};
use crate::replica_client::{FileReplicaClient, ReplicaClient};
use crate::replicator::Replicator;
use crate::s3::S3Client;

/// Worker threads for S3 I/O. Uploads are network-bound; two threads keep a multipart upload's
/// parts flowing without competing with the host for cores.
const RUNTIME_THREADS: usize = 2;

struct Process {
    pid: u32,
    runtime: Option<tokio::runtime::Runtime>,
    replicators: HashMap<PathBuf, Arc<Replicator>>,
}

static PROCESS: Lazy<Mutex<Process>> = Lazy::new(|| {
    Mutex::new(Process {
        pid: std::process::id(),
        runtime: None,
        replicators: HashMap::new(),
    })
});

static SETTINGS: Lazy<Mutex<HashMap<PathBuf, Settings>>> = Lazy::new(|| Mutex::new(HashMap::new()));

fn process() -> MutexGuard<'static, Process> {
    let mut p = PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if p.pid != pid {
        // Forked: the parent's threads are gone in this process. Leak their remains.
        std::mem::forget(p.runtime.take());
        let old = std::mem::take(&mut p.replicators);
        std::mem::forget(old);
        // Lease (issue 4): close inherited local-lock descriptors, or this child would hold the
        // parent's claim on its databases forever.
        crate::s3::lease::after_fork();
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

/// Run `f` with the settings of one database (created empty on first use).
pub fn with_settings<T>(db: &Path, f: impl FnOnce(&mut Settings) -> T) -> T {
    let mut all = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    f(all.entry(db.to_path_buf()).or_default())
}

pub fn replicator(db: &Path) -> Option<Arc<Replicator>> {
    process().replicators.get(db).cloned()
}

/// Start replicating `db` unless a replicator is already running for it.
/// Returns the replicator and whether this call started it.
pub fn start(db: &Path, vfs: Option<&str>) -> Result<(Arc<Replicator>, bool)> {
    if let Some(r) = replicator(db) {
        if !r.is_stopped() {
            return Ok((r, false));
        }
    }
    let cfg = with_settings(db, |s| s.resolve())?;
    // Lease (issue 4): an S3 replica with the lease on gets its lock.json keeper; this probes
    // the provider and fails start() if it ignores conditional writes.
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
    // Another connection may have raced us here; keep the first one.
    if let Some(existing) = p.replicators.get(db) {
        if !existing.is_stopped() {
            let existing = existing.clone();
            drop(p);
            let _ = r.stop();
            return Ok((existing, false));
        }
    }
    p.replicators.insert(db.to_path_buf(), r.clone());
    Ok((r, true))
}

/// Stop replicating `db`: final sync, then the thread ends. Returns the last TXID.
pub fn stop(db: &Path) -> Result<u64> {
    let r = process().replicators.remove(db).ok_or_else(|| {
        Error::msg(format!(
            "{} is not being replicated by this process",
            db.display()
        ))
    })?;
    r.stop()
}

/// WAL-hook target: a hooked connection committed to `db_path`.
pub fn notify_commit(db_path: &str, wal_frames: u32) {
    // try_lock: the hook runs inside the host's commit; never make a commit wait on our lock.
    let r = match PROCESS.try_lock() {
        Ok(p) => p.replicators.get(Path::new(db_path)).cloned(),
        Err(_) => None,
    };
    if let Some(r) = r {
        r.notify_commit(wal_frames);
    }
}

/// A client for a replica target (S3 clients share the process runtime).
pub fn open_client(target: &ReplicaTarget) -> Result<Arc<dyn ReplicaClient>> {
    Ok(match target {
        ReplicaTarget::S3(t) => Arc::new(S3Client::new(t, runtime_handle()?)?),
        ReplicaTarget::File { dir } => Arc::new(FileReplicaClient::new(dir)),
    })
}
