//! Restore: replica → restore plan → LTX decoder → database file.
//!
//! The plan is Litestream's `CalcRestorePlan` (litestream-format.md §6.1): the newest usable
//! level-9 snapshot, then greedily the file that reaches furthest from the current TXID across
//! levels 8..0, until nothing extends it. A TXID target admits only files ending at or before it
//! and must be reached exactly; a timestamp target only files created strictly before it
//! (creation time = the object's `litestream-timestamp` metadata, else LastModified) — a time
//! after the newest file gives the latest state. Applying the plan writes each file's pages at
//! their offsets into a temporary file beside the output and truncates it to the file's commit
//! size, in TXID order — the same result as Litestream's k-way merge.
//!
//! Downloads run in parallel ahead of the file being applied: small files are prefetched into
//! memory by a few threads, within a window of files and bytes, so memory stays bounded whatever
//! the replica; a file too large to prefetch is streamed by the applying thread itself.
//!
//! Invariants:
//! - Either the output is a complete database that passed `PRAGMA integrity_check`, or nothing is
//!   written: every file's checksum is verified, the temporary file is fsynced and checked before
//!   the rename, and removed on any error.
//! - Object names are not trusted: each file's header must be the file its key names and follow
//!   the file before it (contiguous TXIDs, one page size, chained checksums where the files have
//!   them), the plan must start with a snapshot, and the restored page 1 must agree with the last
//!   file's page size and commit. A replaced or missing object is an error, never a database that
//!   differs from the state it claims to be.
//! - Ask for TXID X, get X or an error.
//! - The output rules (never replace unless `overwrite`, never a file something uses, never next
//!   to a stale `-wal`/`-journal`, refusals before any download) are `output`'s.
//! - While a restore runs, `litestream_status()` of any connection of the process shows it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use once_cell::sync::Lazy;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Context, Error, Result};
use crate::ltx::{self, Decoder};
mod output;

use output::Output;

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
    /// Latest or timestamp restore: a level has an admitted file starting after the covered
    /// range, so a file in between is missing.
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
    // A file the target admits but the plan could not reach means a file between them is
    // missing: the latest state (or the one at the time) is not there to restore. A TXID target
    // needs no such check: it is reached exactly or not at all.
    if !matches!(target, Target::Txid(_)) && !plan.is_empty() {
        for l in 0..SNAPSHOT_LEVEL {
            if let Some(f) = level(l)
                .iter()
                .find(|f| f.min_txid > current.saturating_add(1) && admits(target, f))
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
    for level in all_levels() {
        levels.push(match target {
            Target::Timestamp(_) => client.list_timestamped(level)?,
            _ => client.list(level)?,
        });
    }
    if let Target::Timestamp(ts) = target {
        // A time after the newest file is the latest state (the README's promise; `litestream
        // restore` refuses it). One before every file has nothing to restore.
        let oldest = levels.iter().flatten().map(|f| f.created_at).min();
        match oldest {
            None => {
                return Err(Error::msg(format!(
                    "no backup files available in {}",
                    client.describe()
                )))
            }
            Some(first) if ts <= first => {
                return Err(Error::msg(format!(
                    "no backup files available in {} for {}: its oldest file was created at {}",
                    client.describe(),
                    describe_target(target),
                    format_time(first)
                )))
            }
            Some(_) => {}
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
    let target = opts.target()?;
    // Everything that can refuse the output does so before anything is downloaded or written.
    let mut output = Output::prepare(out, opts.overwrite)?;
    let progress = Registered::new(out, client.describe(), target);
    let files = plan(client, target)?;
    output.create_tmp()?;
    progress.0.files_total.store(files.len(), Ordering::Relaxed);
    progress
        .0
        .bytes_total
        .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    progress.0.set_phase("downloading");
    let applied = apply(client, &files, &output, &progress.0);
    crate::alloc::release_free_heap();
    let txid = applied?;
    if let Target::Txid(t) = target {
        // The chain checks make this impossible; it stays as the promise itself: ask for X, get
        // X or an error.
        if txid != t {
            return Err(Error::msg(format!(
                "restored TXID {} instead of the requested {}: nothing was written",
                ltx::format_txid(txid),
                ltx::format_txid(t)
            )));
        }
    }
    progress.0.set_phase("checking");
    integrity_check(output.tmp_path())?;
    output.replace()?;
    Ok(txid)
}

/// Write every planned file's pages into the output's temporary file; returns the final TXID.
/// Each file's header must be the file its key names and follow the file before it
/// (`ltx::check_named`, `ltx::check_follows`), so that a replaced, stale or foreign object is
/// refused rather than applied; the restored page 1 must then agree with the last file.
fn apply(
    client: &dyn ReplicaClient,
    files: &[LtxFileInfo],
    output: &Output,
    progress: &RestoreProgress,
) -> Result<u64> {
    if let Some(f) = files.iter().find(|f| f.size < ltx::HEADER_SIZE as u64) {
        return Err(Error::msg(format!(
            "{} is too small ({} bytes) to be an LTX file",
            f.key, f.size
        )));
    }
    let out = output.tmp_file()?;
    let tmp = output.tmp_path();
    let mut writer = PageWriter {
        out,
        path: tmp,
        page_size: 0,
        run_start: 0,
        run: Vec::new(),
    };
    let mut buf = Vec::new();
    // The last file applied: its header and the post-apply checksum of its trailer.
    let mut prev: Option<(ltx::Header, u64)> = None;
    std::thread::scope(|scope| -> Result<()> {
        let prefetch = Prefetch::start(scope, client, files);
        for (i, file) in files.iter().enumerate() {
            let reader: Box<dyn Read + Send> = match prefetch.take(i)? {
                Some(bytes) => Box::new(std::io::Cursor::new(bytes)),
                None => client.open(file)?,
            };
            let mut dec = Decoder::new(reader).with_context(|| format!("reading {}", file.key))?;
            let h = *dec.header();
            ltx::check_named(&h, (file.min_txid, file.max_txid))
                .with_context(|| format!("reading {}", file.key))?;
            match &prev {
                Some((ph, post_apply)) => ltx::check_follows(ph, Some(*post_apply), &h)
                    .with_context(|| {
                        format!("applying {} after the plan's earlier files", file.key)
                    })?,
                None if !h.is_snapshot() => {
                    return Err(Error::msg(format!(
                        "{} cannot start a restore: it is not a snapshot (its TXIDs begin at {})",
                        file.key,
                        ltx::format_txid(h.min_txid)
                    )))
                }
                None => {
                    writer.page_size = h.page_size;
                    buf = vec![0u8; h.page_size as usize];
                }
            }
            while let Some(pgno) = dec
                .next_page(&mut buf)
                .with_context(|| format!("reading {}", file.key))?
            {
                writer.write(pgno, &buf)?;
            }
            let trailer = dec
                .finish()
                .with_context(|| format!("verifying {}", file.key))?;
            writer.flush()?;
            // The database may have shrunk (VACUUM): the file ends at this commit.
            out.set_len(h.commit as u64 * h.page_size as u64)
                .with_context(|| format!("resizing {}", tmp.display()))?;
            prev = Some((h, trailer.post_apply_checksum));
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            progress.bytes_done.fetch_add(file.size, Ordering::Relaxed);
        }
        Ok(())
    })?;
    let Some((last, _)) = prev else {
        return Err(Error::msg("internal error: an empty restore plan"));
    };
    check_page_one(out, tmp, &last)?;
    out.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    Ok(last.max_txid)
}

/// The restored database's own header must agree with the last file applied: SQLite's page size
/// field, and the in-header database size (kept by every SQLite since 3.7.0, valid when its
/// version-valid-for number equals the change counter) equal to the file's commit. A file from
/// another database, or a chain that lost a file that resized the database, fails here even when
/// every file decodes cleanly.
fn check_page_one(out: &File, tmp: &Path, last: &ltx::Header) -> Result<()> {
    if last.commit == 0 {
        return Ok(());
    }
    let mut hdr = [0u8; 100];
    out.read_exact_at(&mut hdr, 0)
        .with_context(|| format!("reading back {}", tmp.display()))?;
    let be32 = |i: usize| u32::from_be_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    let fail = |what: String| {
        Err(Error::msg(format!(
            "the restored database contradicts its last file ({}): {what}; nothing was written",
            ltx::file_name(last.min_txid, last.max_txid)
        )))
    };
    if &hdr[..16] != b"SQLite format 3\0" {
        return fail("page 1 does not start with the SQLite header".into());
    }
    let page_size = match u16::from_be_bytes([hdr[16], hdr[17]]) {
        1 => 65536,
        n => u32::from(n),
    };
    if page_size != last.page_size {
        return fail(format!(
            "page 1 says the page size is {page_size}, the files say {}",
            last.page_size
        ));
    }
    let (in_header_size, change_counter, valid_for) = (be32(28), be32(24), be32(92));
    if valid_for == change_counter && in_header_size != 0 && in_header_size != last.commit {
        return fail(format!(
            "page 1 says the database has {in_header_size} pages, the last file's commit is {}",
            last.commit
        ));
    }
    Ok(())
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
pub(crate) mod tests;
