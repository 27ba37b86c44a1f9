//! Restore: replica → restore plan → LTX decoder → database file.
//!
//! The plan is Litestream's `CalcRestorePlan` (litestream-format.md §6.1): the newest usable
//! level-9 snapshot, then greedily the file that reaches furthest from the current TXID across
//! levels 8..0, until nothing extends it. A TXID target admits only files ending at or before it;
//! a timestamp target only files created strictly before it (creation time = the object's
//! `litestream-timestamp` metadata, else LastModified), and like `litestream restore` it must lie
//! within the replica's [oldest, newest] LastModified. Applying the plan writes each file's pages
//! at their offsets into `<out>.tmp` and truncates to the file's commit size, in TXID order — the
//! same result as Litestream's k-way merge.
//!
//! Downloads run in parallel ahead of the file being applied: small files are prefetched into
//! memory by a few threads, within a window of files and bytes, so memory stays bounded whatever
//! the replica; a file too large to prefetch is streamed by the applying thread itself.
//!
//! Invariants:
//! - Either the output is a complete database that passed `PRAGMA integrity_check`, or nothing is
//!   written: every file's checksum is verified, the temporary file is fsynced and checked before
//!   the rename, and removed on any error.
//! - An existing output is never replaced unless `overwrite` is set; then its `-wal`, `-shm` and
//!   `-journal` files go too (a stale WAL would be replayed over the restored pages).
//! - While a restore runs, `litestream_status()` of any connection of the process shows it.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use once_cell::sync::Lazy;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Context, Error, Result};
use crate::ltx::{self, Decoder};
use crate::replica_client::{
    all_levels, format_timestamp_ms, LtxFileInfo, ReplicaClient, SNAPSHOT_LEVEL,
};

/// Threads downloading files ahead of the one being applied.
const PREFETCH_THREADS: usize = 8;
/// How far ahead of the applied file prefetching may run, in files and in bytes held: bounds
/// memory to about this many bytes plus one streamed file's buffers.
const PREFETCH_WINDOW_FILES: usize = 64;
const PREFETCH_WINDOW_BYTES: u64 = 64 << 20;
/// Files above this size are not held in memory: the applying thread streams them.
const PREFETCH_MAX_FILE: u64 = 8 << 20;
/// A failed download is retried this often, after 250 ms, 500 ms, … (Litestream's resumable
/// reader retries 3 times with the same backoff).
const FETCH_ATTEMPTS: u32 = 4;
const FETCH_BACKOFF: Duration = Duration::from_millis(250);
/// Consecutive pages are written in runs of up to this many bytes.
const WRITE_RUN_BYTES: usize = 1 << 20;

/// What to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Everything in the replica.
    Latest,
    /// Exactly this TXID (a file boundary in some level).
    Txid(u64),
    /// The last state whose files were all created strictly before this time.
    Timestamp(SystemTime),
}

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub overwrite: bool,
    /// Restore to exactly this TXID (a file boundary in some level).
    pub txid: Option<u64>,
    /// Restore to the state as of this time.
    pub timestamp: Option<SystemTime>,
}

impl RestoreOptions {
    pub fn target(&self) -> Result<Target> {
        match (self.txid, self.timestamp) {
            (Some(_), Some(_)) => Err(Error::msg(
                "options txid and timestamp cannot be combined: give one restore point",
            )),
            (Some(t), None) => Ok(Target::Txid(t)),
            (None, Some(t)) => Ok(Target::Timestamp(t)),
            (None, None) => Ok(Target::Latest),
        }
    }
}

/// Why no plan could be made (pure planning, see `plan_files`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// No file matches the target, or the files stop short of a TXID target
    /// (Litestream's `ErrTxNotAvailable`).
    NotAvailable { reached: u64 },
    /// Latest restore: a level has a file starting after the covered range.
    NonContiguous { reached: u64, next: LtxFileInfo },
    /// The plan does not start at TXID 1, so it cannot produce a whole database.
    NoSnapshot { first: LtxFileInfo },
}

fn better(curr: &LtxFileInfo, next: &LtxFileInfo) -> bool {
    // Litestream's order: largest MaxTXID, then smallest MinTXID, then highest level, then
    // earliest creation.
    if next.max_txid != curr.max_txid {
        return next.max_txid > curr.max_txid;
    }
    if next.min_txid != curr.min_txid {
        return next.min_txid < curr.min_txid;
    }
    if next.level != curr.level {
        return next.level > curr.level;
    }
    next.created_at < curr.created_at
}

fn admits(target: Target, f: &LtxFileInfo) -> bool {
    match target {
        Target::Latest => true,
        Target::Txid(t) => f.max_txid <= t,
        Target::Timestamp(ts) => f.created_at < ts,
    }
}

/// The restore plan over listings `levels[level]` (levels 0..=9, each in (min, max) order).
pub fn plan_files(
    levels: &[Vec<LtxFileInfo>],
    target: Target,
) -> std::result::Result<Vec<LtxFileInfo>, PlanError> {
    let empty = Vec::new();
    let level = |l: u8| levels.get(l as usize).unwrap_or(&empty);
    let mut plan: Vec<LtxFileInfo> = Vec::new();
    // The last admitted snapshot in listing order.
    if let Some(snap) = level(SNAPSHOT_LEVEL).iter().rfind(|f| admits(target, f)) {
        plan.push(snap.clone());
    }
    let mut current = plan.last().map_or(0, |f| f.max_txid);
    let reached_target = |current: u64| matches!(target, Target::Txid(t) if current >= t);
    if !reached_target(current) {
        // Greedy: each step takes the admitted file that is contiguous with `current` and reaches
        // furthest. Each level is swept once by a cursor: a file passed over can never become
        // useful later, because `current` only grows.
        struct Cursor<'a> {
            files: &'a [LtxFileInfo],
            pos: usize,
            candidate: Option<&'a LtxFileInfo>,
        }
        let mut cursors: Vec<Cursor<'_>> = (0..SNAPSHOT_LEVEL)
            .rev()
            .map(|l| Cursor {
                files: level(l),
                pos: 0,
                candidate: None,
            })
            .collect();
        loop {
            let mut best: Option<(usize, &LtxFileInfo)> = None;
            for (ci, c) in cursors.iter_mut().enumerate() {
                if c.candidate.is_some_and(|f| f.max_txid <= current) {
                    c.candidate = None;
                }
                while let Some(f) = c.files.get(c.pos) {
                    if f.min_txid > current.saturating_add(1) {
                        break;
                    }
                    c.pos += 1;
                    if f.max_txid <= current || !admits(target, f) {
                        continue;
                    }
                    if c.candidate.is_none_or(|b| better(b, f)) {
                        c.candidate = Some(f);
                    }
                }
                if let Some(f) = c.candidate {
                    if best.is_none_or(|(_, b)| better(b, f)) {
                        best = Some((ci, f));
                    }
                }
            }
            let Some((ci, f)) = best else { break };
            cursors[ci].candidate = None;
            current = f.max_txid;
            plan.push(f.clone());
            if reached_target(current) {
                break;
            }
        }
    }
    if target == Target::Latest && !plan.is_empty() {
        for l in 0..SNAPSHOT_LEVEL {
            if let Some(f) = level(l)
                .iter()
                .find(|f| f.min_txid > current.saturating_add(1))
            {
                return Err(PlanError::NonContiguous {
                    reached: current,
                    next: f.clone(),
                });
            }
        }
    }
    if plan.is_empty() || matches!(target, Target::Txid(t) if current < t) {
        return Err(PlanError::NotAvailable { reached: current });
    }
    if plan[0].min_txid != 1 {
        return Err(PlanError::NoSnapshot {
            first: plan[0].clone(),
        });
    }
    Ok(plan)
}

fn describe_target(target: Target) -> String {
    match target {
        Target::Latest => "latest".into(),
        Target::Txid(t) => format!("TXID {}", ltx::format_txid(t)),
        Target::Timestamp(t) => format!("timestamp {}", format_time(t)),
    }
}

fn format_time(t: SystemTime) -> String {
    let ms = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    format_timestamp_ms(ms)
}

/// Build the list of files to apply, lowest TXID first.
pub fn plan(client: &dyn ReplicaClient, target: Target) -> Result<Vec<LtxFileInfo>> {
    let mut levels: Vec<Vec<LtxFileInfo>> = Vec::new();
    if let Target::Timestamp(ts) = target {
        // Like `litestream restore -timestamp` on a replica URL: the time must lie within the
        // replica's LastModified range.
        let mut bounds: Option<(SystemTime, SystemTime)> = None;
        for level in all_levels() {
            for f in client.list(level)? {
                bounds = Some(match bounds {
                    None => (f.created_at, f.created_at),
                    Some((a, b)) => (a.min(f.created_at), b.max(f.created_at)),
                });
            }
        }
        let Some((first, last)) = bounds else {
            return Err(Error::msg(format!(
                "no backup files available in {}",
                client.describe()
            )));
        };
        if ts < first || ts > last {
            return Err(Error::msg(format!(
                "timestamp {} does not exist in {}: its files were created from {} to {}",
                format_time(ts),
                client.describe(),
                format_time(first),
                format_time(last)
            )));
        }
        for level in all_levels() {
            levels.push(client.list_timestamped(level)?);
        }
    } else {
        for level in all_levels() {
            levels.push(client.list(level)?);
        }
    }
    plan_files(&levels, target).map_err(|e| match e {
        PlanError::NotAvailable { reached } => {
            let detail = match target {
                Target::Txid(_) if reached > 0 => format!(
                    "; restorable points are file boundaries, the nearest below is {}",
                    ltx::format_txid(reached)
                ),
                Target::Txid(_) => "; restorable points are file boundaries".into(),
                _ => String::new(),
            };
            Error::msg(format!(
                "no backup files available in {} for {}{detail}",
                client.describe(),
                describe_target(target)
            ))
        }
        PlanError::NonContiguous { reached, next } => Error::msg(format!(
            "non-contiguous ltx files in {}: nothing covers TXID {} before {}",
            client.describe(),
            ltx::format_txid(reached + 1),
            next.key
        )),
        PlanError::NoSnapshot { first } => Error::msg(format!(
            "{} has no snapshot to start from for {}: the oldest usable file {} begins at TXID {}",
            client.describe(),
            describe_target(target),
            first.key,
            ltx::format_txid(first.min_txid)
        )),
    })
}

// ---- progress ---------------------------------------------------------------------------

/// One running restore, as `litestream_status()` shows it.
pub struct RestoreProgress {
    output: String,
    replica: String,
    target: String,
    started: Instant,
    phase: Mutex<&'static str>,
    files_total: AtomicUsize,
    files_done: AtomicUsize,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
}

static ACTIVE: Lazy<Mutex<Vec<Arc<RestoreProgress>>>> = Lazy::new(|| Mutex::new(Vec::new()));

impl RestoreProgress {
    fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    fn to_json(&self) -> serde_json::Value {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let done = self.bytes_done.load(Ordering::Relaxed);
        serde_json::json!({
            "output": self.output,
            "replica": self.replica,
            "target": self.target,
            "phase": *self.phase.lock().unwrap_or_else(|p| p.into_inner()),
            "files_total": self.files_total.load(Ordering::Relaxed),
            "files_done": self.files_done.load(Ordering::Relaxed),
            "bytes_total": self.bytes_total.load(Ordering::Relaxed),
            "bytes_done": done,
            "elapsed_ms": (secs * 1000.0) as u64,
            "bytes_per_second": (done as f64 / secs) as u64,
        })
    }
}

/// Registers a restore for status; unregisters on drop.
struct Registered(Arc<RestoreProgress>);

impl Registered {
    fn new(output: &Path, replica: String, target: Target) -> Registered {
        let p = Arc::new(RestoreProgress {
            output: output.display().to_string(),
            replica,
            target: describe_target(target),
            started: Instant::now(),
            phase: Mutex::new("planning"),
            files_total: AtomicUsize::new(0),
            files_done: AtomicUsize::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
        });
        ACTIVE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p.clone());
        Registered(p)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        ACTIVE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !Arc::ptr_eq(p, &self.0));
    }
}

/// Restores running in this process right now (for `litestream_status()`).
pub fn active_json() -> serde_json::Value {
    let all = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    serde_json::Value::Array(all.iter().map(|p| p.to_json()).collect())
}

// ---- restore ----------------------------------------------------------------------------

/// Restore into `out`; returns the TXID restored.
pub fn restore(client: &dyn ReplicaClient, out: &Path, opts: &RestoreOptions) -> Result<u64> {
    if out.exists() && !opts.overwrite {
        return Err(Error::msg(format!(
            "{} already exists; restore never replaces a file unless asked: pass '{{\"overwrite\": true}}'",
            out.display()
        )));
    }
    let target = opts.target()?;
    let progress = Registered::new(out, client.describe(), target);
    let files = plan(client, target)?;
    progress.0.files_total.store(files.len(), Ordering::Relaxed);
    progress
        .0
        .bytes_total
        .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    progress.0.set_phase("downloading");
    let tmp = PathBuf::from(format!("{}.tmp", out.display()));
    let result = apply(client, &files, &tmp, &progress.0).and_then(|txid| {
        progress.0.set_phase("checking");
        integrity_check(&tmp)?;
        if opts.overwrite {
            for suffix in ["-wal", "-shm", "-journal"] {
                let p = PathBuf::from(format!("{}{suffix}", out.display()));
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::msg(format!("removing {}: {e}", p.display()))),
                }
            }
        }
        fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
        Ok(txid)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write every planned file's pages into `tmp`; returns the final TXID.
fn apply(
    client: &dyn ReplicaClient,
    files: &[LtxFileInfo],
    tmp: &Path,
    progress: &RestoreProgress,
) -> Result<u64> {
    if let Some(f) = files.iter().find(|f| f.size < ltx::HEADER_SIZE as u64) {
        return Err(Error::msg(format!(
            "{} is too small ({} bytes) to be an LTX file",
            f.key, f.size
        )));
    }
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut writer = PageWriter {
        out: &out,
        path: tmp,
        page_size: 0,
        run_start: 0,
        run: Vec::new(),
    };
    let mut buf = Vec::new();
    let mut txid = 0;
    std::thread::scope(|scope| -> Result<u64> {
        let prefetch = Prefetch::start(scope, client, files);
        for (i, file) in files.iter().enumerate() {
            let reader: Box<dyn Read + Send> = match prefetch.take(i)? {
                Some(bytes) => Box::new(std::io::Cursor::new(bytes)),
                None => client.open(file)?,
            };
            let mut dec = Decoder::new(reader).with_context(|| format!("reading {}", file.key))?;
            let h = *dec.header();
            if writer.page_size == 0 {
                writer.page_size = h.page_size;
                buf = vec![0u8; h.page_size as usize];
            } else if h.page_size != writer.page_size {
                return Err(Error::msg(format!(
                    "{} has page size {}, earlier files {}",
                    file.key, h.page_size, writer.page_size
                )));
            }
            while let Some(pgno) = dec
                .next_page(&mut buf)
                .with_context(|| format!("reading {}", file.key))?
            {
                writer.write(pgno, &buf)?;
            }
            dec.finish()
                .with_context(|| format!("verifying {}", file.key))?;
            writer.flush()?;
            // The database may have shrunk (VACUUM): the file ends at this commit.
            out.set_len(h.commit as u64 * h.page_size as u64)
                .with_context(|| format!("resizing {}", tmp.display()))?;
            txid = h.max_txid;
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            progress.bytes_done.fetch_add(file.size, Ordering::Relaxed);
        }
        Ok(txid)
    })?;
    out.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    Ok(txid)
}

/// Writes pages at their offsets, coalescing consecutive page numbers into one write.
struct PageWriter<'a> {
    out: &'a File,
    path: &'a Path,
    page_size: u32,
    run_start: u32,
    run: Vec<u8>,
}

impl PageWriter<'_> {
    fn write(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        let ps = self.page_size as usize;
        let next = self.run_start as u64 + (self.run.len() / ps) as u64;
        if self.run.is_empty() || pgno as u64 != next || self.run.len() + ps > WRITE_RUN_BYTES {
            self.flush()?;
            self.run_start = pgno;
        }
        self.run.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.run.is_empty() {
            let off = (self.run_start as u64 - 1) * self.page_size as u64;
            self.out
                .write_all_at(&self.run, off)
                .with_context(|| format!("writing {}", self.path.display()))?;
            self.run.clear();
        }
        Ok(())
    }
}

enum Slot {
    Waiting,
    Fetching,
    Ready(Vec<u8>),
    Failed(Error),
    Taken,
}

struct PrefetchState {
    slots: Vec<Slot>,
    /// Next file a prefetch thread considers.
    next: usize,
    /// File the applying thread is on.
    applying: usize,
    /// Bytes claimed by downloads in flight or waiting to be applied.
    held: u64,
    cancel: bool,
}

/// Downloads small files ahead of the applying thread (see the module documentation).
struct Prefetch<'a> {
    files: &'a [LtxFileInfo],
    state: Arc<(Mutex<PrefetchState>, Condvar)>,
}

impl<'a> Prefetch<'a> {
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        client: &'scope dyn ReplicaClient,
        files: &'scope [LtxFileInfo],
    ) -> Prefetch<'scope> {
        let state = Arc::new((
            Mutex::new(PrefetchState {
                slots: files.iter().map(|_| Slot::Waiting).collect(),
                next: 0,
                applying: 0,
                held: 0,
                cancel: false,
            }),
            Condvar::new(),
        ));
        let wanted = files
            .iter()
            .filter(|f| f.size <= PREFETCH_MAX_FILE)
            .count()
            .min(PREFETCH_THREADS);
        for _ in 0..wanted {
            let state = state.clone();
            scope.spawn(move || prefetch_thread(client, files, &state));
        }
        Prefetch { files, state }
    }

    /// File `i`'s bytes once downloaded, or None when the caller must stream it itself.
    fn take(&self, i: usize) -> Result<Option<Vec<u8>>> {
        let (lock, cond) = &*self.state;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        g.applying = i;
        cond.notify_all();
        if self.files[i].size > PREFETCH_MAX_FILE {
            return Ok(None);
        }
        loop {
            match std::mem::replace(&mut g.slots[i], Slot::Taken) {
                Slot::Ready(bytes) => {
                    g.held -= self.files[i].size;
                    cond.notify_all();
                    return Ok(Some(bytes));
                }
                Slot::Failed(e) => return Err(e),
                other => {
                    g.slots[i] = other;
                    g = cond.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

impl Drop for Prefetch<'_> {
    fn drop(&mut self) {
        let (lock, cond) = &*self.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).cancel = true;
        cond.notify_all();
    }
}

fn prefetch_thread(
    client: &dyn ReplicaClient,
    files: &[LtxFileInfo],
    state: &(Mutex<PrefetchState>, Condvar),
) {
    let (lock, cond) = state;
    loop {
        let i = {
            let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if g.cancel {
                    return;
                }
                while g.next < files.len() && files[g.next].size > PREFETCH_MAX_FILE {
                    g.next += 1;
                }
                if g.next >= files.len() {
                    return;
                }
                let i = g.next;
                let size = files[i].size;
                let in_window = i < g.applying + PREFETCH_WINDOW_FILES
                    && (g.held + size <= PREFETCH_WINDOW_BYTES || i == g.applying);
                if in_window {
                    g.next += 1;
                    g.held += size;
                    g.slots[i] = Slot::Fetching;
                    break i;
                }
                g = cond.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        };
        let result = fetch(client, &files[i], || {
            lock.lock().unwrap_or_else(|p| p.into_inner()).cancel
        });
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        g.slots[i] = match result {
            Ok(bytes) => Slot::Ready(bytes),
            Err(e) => Slot::Failed(e),
        };
        cond.notify_all();
    }
}

/// Download one whole file, retrying transient failures.
fn fetch(
    client: &dyn ReplicaClient,
    file: &LtxFileInfo,
    cancelled: impl Fn() -> bool,
) -> Result<Vec<u8>> {
    let mut delay = FETCH_BACKOFF;
    let mut attempt = 1;
    loop {
        let result = client.open(file).and_then(|mut r| {
            let mut bytes = Vec::with_capacity(file.size as usize);
            r.read_to_end(&mut bytes)
                .with_context(|| format!("downloading {}", file.key))?;
            if bytes.len() as u64 != file.size {
                return Err(Error::msg(format!(
                    "downloading {}: got {} bytes, the listing says {}",
                    file.key,
                    bytes.len(),
                    file.size
                )));
            }
            Ok(bytes)
        });
        match result {
            Ok(b) => return Ok(b),
            Err(e) if attempt >= FETCH_ATTEMPTS || cancelled() => return Err(e),
            Err(_) => {
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

/// `PRAGMA integrity_check` on the restored file, through the host's SQLite, before it is
/// renamed into place. `immutable=1`: no locks, no `-wal`/`-shm` created beside the file.
fn integrity_check(path: &Path) -> Result<()> {
    let uri = format!(
        "file:{}?immutable=1",
        uri_escape(&path.display().to_string())
    );
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("opening restored {}", path.display()))?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "restored database failed PRAGMA integrity_check: {}",
            rows.into_iter().take(5).collect::<Vec<_>>().join("; ")
        )))
    }
}

/// Percent-encode the characters that mean something in a SQLite URI filename.
fn uri_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn info(level: u8, min: u64, max: u64, created_s: u64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 1000,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(created_s),
            key: format!("{level}/{}", ltx::file_name(min, max)),
        }
    }

    pub fn levels_of(files: &[LtxFileInfo]) -> Vec<Vec<LtxFileInfo>> {
        let mut levels = vec![Vec::new(); 10];
        for f in files {
            levels[f.level as usize].push(f.clone());
        }
        for l in &mut levels {
            l.sort_by_key(|f| (f.min_txid, f.max_txid));
        }
        levels
    }

    fn names(plan: &[LtxFileInfo]) -> Vec<(u8, u64, u64)> {
        plan.iter()
            .map(|f| (f.level, f.min_txid, f.max_txid))
            .collect()
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    /// L0 1..=10 (created at second = txid), L1 1-4 (t=4), 5-8 (t=8), L2 1-8 (t=8),
    /// snapshot 1-6 (t=6.5 → 7).
    fn sample() -> Vec<Vec<LtxFileInfo>> {
        let mut files: Vec<LtxFileInfo> = (1..=10).map(|t| info(0, t, t, t)).collect();
        files.push(info(1, 1, 4, 4));
        files.push(info(1, 5, 8, 8));
        files.push(info(2, 1, 8, 8));
        files.push(info(9, 1, 6, 7));
        levels_of(&files)
    }

    #[test]
    fn latest_prefers_snapshot_then_furthest_reach() {
        let plan = plan_files(&sample(), Target::Latest).unwrap();
        // Snapshot 1-6, then the furthest reach: L1 5-8 and L2 1-8 both reach 8, the smaller
        // MinTXID wins (L2 1-8), then L0 9 and 10.
        assert_eq!(names(&plan), [(9, 1, 6), (2, 1, 8), (0, 9, 9), (0, 10, 10)]);
    }

    #[test]
    fn txid_targets_are_file_boundaries() {
        let lv = sample();
        assert_eq!(
            names(&plan_files(&lv, Target::Txid(6)).unwrap()),
            [(9, 1, 6)]
        );
        assert_eq!(
            names(&plan_files(&lv, Target::Txid(7)).unwrap()),
            [(9, 1, 6), (0, 7, 7)]
        );
        assert_eq!(
            names(&plan_files(&lv, Target::Txid(4)).unwrap()),
            [(1, 1, 4)]
        );
        assert_eq!(
            names(&plan_files(&lv, Target::Txid(9)).unwrap()),
            [(9, 1, 6), (2, 1, 8), (0, 9, 9)]
        );
        // Beyond the replica: not available.
        assert_eq!(
            plan_files(&lv, Target::Txid(11)),
            Err(PlanError::NotAvailable { reached: 10 })
        );
        // Only L1 1-4 covers TXID 3 once L0 is gone: 3 is not a boundary any more.
        let mut no_l0 = lv.clone();
        no_l0[0].clear();
        assert_eq!(
            plan_files(&no_l0, Target::Txid(3)),
            Err(PlanError::NotAvailable { reached: 0 })
        );
    }

    #[test]
    fn timestamp_targets_use_creation_times() {
        let lv = sample();
        // Before t=7 the snapshot does not count; L0 up to 6 (created at 6 < 6.5).
        let plan = plan_files(&lv, Target::Timestamp(at(6) + Duration::from_millis(500))).unwrap();
        assert_eq!(names(&plan), [(1, 1, 4), (0, 5, 5), (0, 6, 6)]);
        // Strictly before: a file created exactly at the target is excluded.
        let plan = plan_files(&lv, Target::Timestamp(at(8))).unwrap();
        assert_eq!(names(&plan), [(9, 1, 6), (0, 7, 7)]);
        let plan = plan_files(&lv, Target::Timestamp(at(100))).unwrap();
        assert_eq!(plan.last().unwrap().max_txid, 10);
        assert_eq!(
            plan_files(&lv, Target::Timestamp(at(1))),
            Err(PlanError::NotAvailable { reached: 0 })
        );
    }

    #[test]
    fn gaps_and_missing_snapshots() {
        let mut lv = levels_of(&[info(0, 1, 1, 1), info(0, 2, 2, 2), info(0, 4, 4, 4)]);
        match plan_files(&lv, Target::Latest) {
            Err(PlanError::NonContiguous { reached: 2, next }) => assert_eq!(next.min_txid, 4),
            other => panic!("{other:?}"),
        }
        // A TXID or timestamp target does not look past its point.
        assert_eq!(plan_files(&lv, Target::Txid(2)).unwrap().len(), 2);
        assert!(plan_files(&lv, Target::Timestamp(at(100))).is_ok());
        // Without TXID 1 nothing can start the plan.
        lv[0].remove(0);
        assert_eq!(
            plan_files(&lv, Target::Txid(2)),
            Err(PlanError::NotAvailable { reached: 0 })
        );
        // A level-9 file that is not a snapshot from TXID 1 cannot start it either.
        lv[9].push(info(9, 2, 2, 2));
        match plan_files(&lv, Target::Txid(2)) {
            Err(PlanError::NoSnapshot { first }) => assert_eq!(first.min_txid, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            plan_files(&levels_of(&[]), Target::Latest),
            Err(PlanError::NotAvailable { reached: 0 })
        );
    }

    #[test]
    fn overlapping_files_and_ties() {
        // Overlap is allowed: 1-5 then 3-9. Ties on reach: smaller min, then higher level.
        let lv = levels_of(&[
            info(0, 1, 5, 1),
            info(1, 3, 9, 2),
            info(2, 3, 9, 3),
            info(3, 4, 9, 1),
        ]);
        assert_eq!(
            names(&plan_files(&lv, Target::Latest).unwrap()),
            [(0, 1, 5), (2, 3, 9)]
        );
    }

    #[test]
    fn options_pick_one_target() {
        let mut o = RestoreOptions::default();
        assert_eq!(o.target().unwrap(), Target::Latest);
        o.txid = Some(5);
        assert_eq!(o.target().unwrap(), Target::Txid(5));
        o.timestamp = Some(at(5));
        assert!(o.target().is_err());
    }

    #[test]
    fn progress_registry() {
        assert!(active_json()
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["output"] != "/x/y.db"));
        {
            let r = Registered::new(Path::new("/x/y.db"), "file:///r".into(), Target::Txid(3));
            r.0.files_total.store(4, Ordering::Relaxed);
            let all = active_json();
            let me = all
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["output"] == "/x/y.db")
                .unwrap()
                .clone();
            assert_eq!(me["target"], "TXID 0000000000000003");
            assert_eq!(me["files_total"], 4);
            assert_eq!(me["phase"], "planning");
        }
        assert!(active_json()
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["output"] != "/x/y.db"));
    }
}
