//! Compaction, level-9 snapshots and retention: what keeps a replica small and quick to restore
//! (litestream-format.md §2.3–2.5), run by one background thread per replicator.
//!
//! Schedule (Litestream's): each compaction level N (1..=8) runs once at start and then at every
//! multiple of its interval since Go's zero time (for 30 s, 5 min, 1 h and 24 h: the round
//! minute, hour and midnight UTC); a run is skipped as "too early" when level N already has a
//! file made after the current boundary. A run merges every level N−1 file beyond level N's
//! highest TXID into one level-N file (`ltx::compact`, a streaming k-way merge: one page per
//! input in memory, at most `MERGE_FAN_IN` inputs open at once, larger sets merged in rounds
//! through spooled intermediates), uploaded through `ReplicaClient::put`, so large outputs go
//! multipart. The snapshot level (9) runs on the same kind of schedule: the replicator streams a
//! full `1-<current TXID>` image from the database itself (not from the replica), then snapshot
//! retention runs. Level-0 retention runs after every level-1 compaction and every
//! `L0_RETENTION_CHECK_INTERVAL`.
//!
//! Invariants:
//! - Retention never removes a file that the restore plan of a retained point needs. A retained
//!   point is a TXID that is still the end of some listed file and is not older than the oldest
//!   kept snapshot; restoring it by TXID, or by a timestamp whose state it is, keeps working.
//!   Litestream's rules are followed, with one tightening: level-0 files are deleted only up to
//!   a level-1 file boundary, so that every kept level-0 boundary stays reachable (Litestream
//!   could delete part of the level-0 range under a level-1 file and strand the level-0 files
//!   above it). Before any delete, the latest restore plan is recomputed without the doomed
//!   files; if it would change, nothing is deleted.
//! - With `retention` off nothing is ever deleted remotely.
//! - Nothing is written or deleted unless `may_write()` says so (the lease holder only).
//! - A failed task leaves the replica as it was (an upload is atomic) and is retried at the
//!   next tick; the error shows in status.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{format_duration, ResolvedConfig};
use crate::error::{Context, Error, Result};
use crate::ltx::{self, Decoder};
use crate::replica_client::{
    all_levels, format_timestamp_ms, unix_ms, LtxFileInfo, ReplicaClient, Spool, SNAPSHOT_LEVEL,
    SPOOL_MEMORY_LIMIT,
};
use crate::restore::{plan_files, Target};
use crate::scheduler::{Next, Scheduler, Task, TaskHandle};

/// Inputs open at once in one merge. Every open input holds a download stream and a page, so
/// this bounds connections and memory when a level has piled up thousands of files.
const MERGE_FAN_IN: usize = 32;
/// How often level-0 retention is checked besides after each level-1 compaction (Litestream's
/// `l0-retention-check-interval`).
const L0_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// A failed job is tried again after at most this long.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(10);
/// The manifest (what the replica holds) is reloaded at least this often even when nothing
/// went wrong, so that a change made by something else (a lifecycle rule, an operator) is seen
/// within hours; every other load is caused by a new lease or a failed job. Listing every level
/// of every database on each tick is what makes LIST dominate Litestream users' S3 bills.
const MANIFEST_MAX_AGE: Duration = Duration::from_secs(6 * 60 * 60);
/// While a level-9 snapshot is being written, the compactor looks for the answer this often.
const LEVEL9_POLL: Duration = Duration::from_secs(1);
/// How long a stop waits for the answer of a snapshot in progress (it gives up at its next
/// page, unless it is already uploading).
const LEVEL9_STOP_WAIT: Duration = Duration::from_secs(30);
/// When the process's snapshot slots are all taken, asked again after this long.
const LEVEL9_BUSY_RETRY: Duration = Duration::from_secs(5);
/// Seconds from Go's zero time (0001-01-01T00:00:00Z) to the Unix epoch: Litestream aligns its
/// schedules with `time.Truncate`, which counts from Go's zero time.
const GO_ZERO_TO_UNIX_SECS: u128 = 62_135_596_800;

/// Whether this process may write to the replica now (the lease holder); checked before every
/// upload and delete.
pub type MayWrite = Arc<dyn Fn() -> bool + Send + Sync>;
/// The highest TXID the replicator knows it uploaded (its position). A level-0 file beyond it
/// may be an upload whose answer was lost: the replicator then uploads that TXID again, built
/// afresh from the WAL with whatever was committed since, under the same name. Compacting the
/// first version would leave those commits out of level 1 (and so out of every restore that
/// uses it), so level-0 files beyond this are not compacted yet.
pub type Confirmed = Arc<dyn Fn() -> u64 + Send + Sync>;
/// Asks the replicator to stream a level-9 snapshot `1-<current TXID>` from the database unless
/// its TXID is at most the given one; returns at once with where the answer will arrive.
pub type SnapshotFn = Arc<dyn Fn(u64) -> Result<Receiver<Level9Answer>> + Send + Sync>;
/// The answer to a level-9 request.
pub type Level9Answer = Result<Level9Outcome>;

#[derive(Debug)]
pub enum Level9Outcome {
    /// The file written.
    Written(LtxFileInfo),
    /// The replica's TXID is not newer than the newest snapshot.
    NotNewer,
    /// Too many snapshots run in this process right now; ask again later.
    Busy,
}

/// The compaction and retention settings (from `ResolvedConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub levels: Vec<Duration>,
    pub l0_retention: Option<Duration>,
    pub snapshot_interval: Option<Duration>,
    pub snapshot_retention: Duration,
    pub retention: bool,
}

impl Settings {
    pub fn from_config(cfg: &ResolvedConfig) -> Settings {
        Settings {
            levels: cfg.levels.clone(),
            l0_retention: cfg.l0_retention,
            snapshot_interval: cfg.snapshot_interval,
            snapshot_retention: cfg.snapshot_retention,
            retention: cfg.retention,
        }
    }
}

// ---- schedule math --------------------------------------------------------------------------

fn go_nanos(t: SystemTime) -> u128 {
    let unix = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    GO_ZERO_TO_UNIX_SECS * 1_000_000_000 + unix
}

fn from_go_nanos(n: u128) -> SystemTime {
    let unix = n.saturating_sub(GO_ZERO_TO_UNIX_SECS * 1_000_000_000);
    SystemTime::UNIX_EPOCH
        + Duration::new((unix / 1_000_000_000) as u64, (unix % 1_000_000_000) as u32)
}

/// `t` rounded down to a multiple of `interval` since Go's zero time (Go's `Time.Truncate`).
pub fn prev_boundary(t: SystemTime, interval: Duration) -> SystemTime {
    let i = interval.as_nanos().max(1);
    let n = go_nanos(t);
    from_go_nanos(n - n % i)
}

/// The first boundary after `t`: when a level's next run is due.
pub fn next_boundary(t: SystemTime, interval: Duration) -> SystemTime {
    prev_boundary(t, interval) + interval
}

// ---- what to merge, what to delete (pure) ---------------------------------------------------

/// The inputs of a level-N run: the level N−1 files from `dst_max + 1` on (Litestream seeks by
/// MinTXID), as far as they are contiguous.
pub fn compaction_inputs(src: &[LtxFileInfo], dst_max: u64) -> Vec<LtxFileInfo> {
    let mut out: Vec<LtxFileInfo> = Vec::new();
    for f in src.iter().filter(|f| f.min_txid > dst_max) {
        if let Some(prev) = out.last() {
            let contiguous = f.min_txid <= prev.max_txid + 1 && f.max_txid > prev.max_txid;
            if !contiguous {
                break;
            }
        }
        out.push(f.clone());
    }
    out
}

/// Level-0 files to delete: from the oldest, those already in level 1 (MaxTXID ≤ the highest
/// level-1 MaxTXID) and created before `threshold`, stopping at the first file too recent; then
/// cut back to the last level-1 file boundary, so the level-0 files kept stay reachable from a
/// level-1 file; and never the newest level-0 file.
pub fn select_l0_retention(
    l0: &[LtxFileInfo],
    l1: &[LtxFileInfo],
    threshold: SystemTime,
) -> Vec<LtxFileInfo> {
    let l1_max = l1.iter().map(|f| f.max_txid).max().unwrap_or(0);
    if l1_max == 0 {
        return Vec::new();
    }
    let mut doomed = Vec::new();
    for f in l0 {
        if f.created_at > threshold {
            break;
        }
        if f.max_txid <= l1_max {
            doomed.push(f.clone());
        }
    }
    // Keep the newest level-0 file: Litestream takes the replica's position from level 0.
    if l0.last().is_some_and(|last| doomed.last() == Some(last)) {
        doomed.pop();
    }
    let Some(end) = doomed.last().map(|f| f.max_txid) else {
        return doomed;
    };
    let cut = l1
        .iter()
        .map(|f| f.max_txid)
        .filter(|&m| m <= end)
        .max()
        .unwrap_or(0);
    doomed.retain(|f| f.max_txid <= cut);
    doomed
}

/// Snapshots to delete (created before `threshold`, never the newest) and the TXID below which
/// lower-level files may go: the MaxTXID of the deleted snapshot just before the oldest kept one
/// (Litestream's deliberately conservative floor; 0 when nothing is deleted).
pub fn select_snapshot_retention(
    l9: &[LtxFileInfo],
    threshold: SystemTime,
) -> (Vec<LtxFileInfo>, u64) {
    let mut doomed: Vec<LtxFileInfo> = l9
        .iter()
        .filter(|f| f.created_at < threshold)
        .cloned()
        .collect();
    if l9.last().is_some_and(|last| doomed.last() == Some(last)) {
        doomed.pop();
    }
    let mut floor = 0;
    for (i, f) in l9.iter().enumerate() {
        if doomed.contains(f) {
            continue;
        }
        if i > 0 {
            floor = l9[i - 1].max_txid;
        }
        break;
    }
    (doomed, floor)
}

/// Files of a compaction level entirely below `floor` (MaxTXID < floor), never the last one.
pub fn select_txid_retention(files: &[LtxFileInfo], floor: u64) -> Vec<LtxFileInfo> {
    let mut doomed: Vec<LtxFileInfo> = files
        .iter()
        .filter(|f| f.max_txid < floor)
        .cloned()
        .collect();
    if files.last().is_some_and(|last| doomed.last() == Some(last)) {
        doomed.pop();
    }
    doomed
}

/// Drops from `doomed` whatever the latest restore plan of `levels` uses, and refuses (None) if
/// the plan without the doomed files would not reach the same TXID.
pub fn guard_latest(
    levels: &[Vec<LtxFileInfo>],
    mut doomed: Vec<LtxFileInfo>,
) -> Option<Vec<LtxFileInfo>> {
    let same = |a: &LtxFileInfo, b: &LtxFileInfo| {
        (a.level, a.min_txid, a.max_txid) == (b.level, b.min_txid, b.max_txid)
    };
    let before = match plan_files(levels, Target::Latest) {
        Ok(p) => p,
        // Nothing restorable now (e.g. a gap someone else made): do not make it worse.
        Err(_) => return None,
    };
    doomed.retain(|d| !before.iter().any(|p| same(p, d)));
    let after: Vec<Vec<LtxFileInfo>> = levels
        .iter()
        .map(|l| {
            l.iter()
                .filter(|f| !doomed.iter().any(|d| same(d, f)))
                .cloned()
                .collect()
        })
        .collect();
    match plan_files(&after, Target::Latest) {
        Ok(p) if p.last().map(|f| f.max_txid) == before.last().map(|f| f.max_txid) => Some(doomed),
        _ => None,
    }
}

// ---- the task --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    /// Compaction into level `n` (1-based).
    Level(u8),
    Snapshot,
    L0Retention,
}

#[derive(Default)]
struct LevelStatus {
    compactions: u64,
    last: Option<(u64, u64, u64, SystemTime)>,
}

#[derive(Default)]
struct Status {
    levels: Vec<LevelStatus>,
    snapshots: u64,
    last_snapshot: Option<(u64, u64, SystemTime)>,
    deleted: u64,
    /// Full listings of the replica (the manifest's loads).
    listings: u64,
    /// The current error of each job that failed on its last run (cleared when it succeeds).
    errors: Vec<(Job, String)>,
}

struct Shared {
    stop: AtomicBool,
    status: Mutex<Status>,
    /// Files the replicator uploaded since the task last looked.
    uploaded: Mutex<Vec<LtxFileInfo>>,
    /// A listing of every level the replicator made (it lists the replica to find its position
    /// on each new lease), and when: the manifest starts from it instead of listing again.
    offered: Mutex<Option<(Vec<Vec<LtxFileInfo>>, Instant)>>,
}

impl Shared {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the replica holds, per level (0..=9), each sorted by TXIDs: loaded with one listing
/// per level, then kept up to date with what this process writes and deletes, so that a
/// database that is not written costs no requests at all. Reloaded on every new lease, after any
/// failed job, and every `MANIFEST_MAX_AGE`.
struct Manifest {
    levels: Vec<Vec<LtxFileInfo>>,
    loaded_at: Instant,
}

impl Manifest {
    fn load(client: &dyn ReplicaClient) -> Result<Manifest> {
        Ok(Manifest {
            levels: all_levels()
                .map(|l| client.list(l))
                .collect::<Result<_>>()?,
            loaded_at: Instant::now(),
        })
    }

    fn add(&mut self, f: LtxFileInfo) {
        let Some(level) = self.levels.get_mut(f.level as usize) else {
            return;
        };
        level.retain(|g| (g.min_txid, g.max_txid) != (f.min_txid, f.max_txid));
        let at = level.partition_point(|g| (g.min_txid, g.max_txid) < (f.min_txid, f.max_txid));
        level.insert(at, f);
    }

    fn remove(&mut self, gone: &[LtxFileInfo]) {
        for f in gone {
            if let Some(level) = self.levels.get_mut(f.level as usize) {
                level.retain(|g| (g.min_txid, g.max_txid) != (f.min_txid, f.max_txid));
            }
        }
    }
}

/// Handle to one replicator's compaction, a task on the background scheduler.
pub struct Compactor {
    shared: Arc<Shared>,
    settings: Settings,
    task: Option<TaskHandle>,
}

/// The compaction of one replica, run step by step by the scheduler.
struct CompactionTask {
    shared: Arc<Shared>,
    client: Arc<dyn ReplicaClient>,
    settings: Settings,
    spill_dir: PathBuf,
    snapshot: SnapshotFn,
    may_write: MayWrite,
    confirmed: Confirmed,
    /// When each job is next due.
    due: Vec<(Job, SystemTime)>,
    manifest: Option<Manifest>,
    /// May write (holds the lease) as of the last step: a new lease means a new manifest.
    was_writer: bool,
    /// When this task last saw that this instance may not write (or started): a listing offered
    /// before that may be from an earlier lease.
    not_writer_at: Instant,
    /// A level-9 snapshot asked for and not answered yet.
    level9: Option<Receiver<Level9Answer>>,
}

impl Compactor {
    pub fn start(
        client: Arc<dyn ReplicaClient>,
        settings: Settings,
        spill_dir: &Path,
        snapshot: SnapshotFn,
        may_write: MayWrite,
        confirmed: Confirmed,
        scheduler: &Scheduler,
    ) -> Result<Compactor> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            status: Mutex::new(Status {
                levels: settings
                    .levels
                    .iter()
                    .map(|_| LevelStatus::default())
                    .collect(),
                ..Status::default()
            }),
            uploaded: Mutex::new(Vec::new()),
            offered: Mutex::new(None),
        });
        let task = CompactionTask::new(
            shared.clone(),
            client,
            settings.clone(),
            spill_dir,
            snapshot,
            may_write,
            confirmed,
        );
        // Nothing to schedule (compaction, snapshots and retention all off): no task at all.
        let handle = (!task.due.is_empty()).then(|| scheduler.spawn(Box::new(task)));
        Ok(Compactor {
            shared,
            settings,
            task: handle,
        })
    }

    /// A file the replicator uploaded (level 0, or a level-9 snapshot), and knows it did.
    pub fn record_upload(&self, file: LtxFileInfo) {
        self.shared
            .uploaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(file);
    }

    /// The replicator listed every level of the replica (`levels[l]` = level l, sorted), before
    /// uploading anything on its current lease.
    pub fn offer_listing(&self, levels: Vec<Vec<LtxFileInfo>>) {
        *self
            .shared
            .offered
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((levels, Instant::now()));
    }

    /// A level-9 snapshot reached the replica. Counted by the thread that wrote it, at once, so
    /// that status agrees with the replica even when the answer to the request is never read
    /// (a stop that gave up waiting for it).
    pub fn record_snapshot(&self, file: LtxFileInfo) {
        let mut s = self.shared.status();
        s.snapshots += 1;
        s.last_snapshot = Some((file.max_txid, file.size, SystemTime::now()));
        drop(s);
        self.record_upload(file);
    }

    /// Stop after the current job (a merge in progress gives up at its next input).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(task) = &self.task {
            task.poke();
            task.wait_done();
        }
    }

    pub fn status_json(&self) -> serde_json::Value {
        let s = self.shared.status();
        let at = |t: SystemTime| format_timestamp_ms(unix_ms(t));
        serde_json::json!({
            "levels": self.settings.levels.iter().zip(&s.levels).enumerate().map(|(i, (iv, l))| {
                serde_json::json!({
                    "level": i + 1,
                    "interval": format_duration(*iv),
                    "compactions": l.compactions,
                    "last": l.last.map(|(min, max, size, t)| serde_json::json!({
                        "min_txid": ltx::format_txid(min),
                        "max_txid": ltx::format_txid(max),
                        "size": size,
                        "at": at(t),
                    })),
                })
            }).collect::<Vec<_>>(),
            "snapshot_interval": self.settings.snapshot_interval.map(format_duration),
            "snapshot_retention": format_duration(self.settings.snapshot_retention),
            "snapshots": s.snapshots,
            "last_snapshot": s.last_snapshot.map(|(txid, size, t)| serde_json::json!({
                "max_txid": ltx::format_txid(txid),
                "size": size,
                "at": at(t),
            })),
            "l0_retention": self.settings.l0_retention.map(format_duration),
            "retention": if self.settings.retention { "on" } else { "off" },
            "deleted": s.deleted,
            "listings": s.listings,
            "last_error": (!s.errors.is_empty()).then(|| {
                s.errors.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().join("; ")
            }),
        })
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Task for CompactionTask {
    fn run(&mut self) -> Next {
        match catch_unwind(AssertUnwindSafe(|| self.step())) {
            Ok(next) => next,
            Err(panic) => {
                let msg = crate::error::panic_message(panic.as_ref());
                self.shared.status().errors.push((
                    Job::L0Retention,
                    format!("internal error in compaction: {msg}"),
                ));
                Next::Done
            }
        }
    }
}

impl CompactionTask {
    fn new(
        shared: Arc<Shared>,
        client: Arc<dyn ReplicaClient>,
        settings: Settings,
        spill_dir: &Path,
        snapshot: SnapshotFn,
        may_write: MayWrite,
        confirmed: Confirmed,
    ) -> CompactionTask {
        // Every job runs once at start, then on its schedule.
        let start = SystemTime::now();
        let mut due: Vec<(Job, SystemTime)> = (1..=settings.levels.len() as u8)
            .map(|n| (Job::Level(n), start))
            .collect();
        if settings.snapshot_interval.is_some() {
            due.push((Job::Snapshot, start));
        }
        if settings.l0_retention.is_some() {
            due.push((Job::L0Retention, start + L0_RETENTION_CHECK_INTERVAL));
        }
        CompactionTask {
            shared,
            client,
            settings,
            spill_dir: spill_dir.to_path_buf(),
            snapshot,
            may_write,
            confirmed,
            due,
            manifest: None,
            was_writer: false,
            not_writer_at: Instant::now(),
            level9: None,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Run the earliest due job, if any is due; then say when the next one is.
    fn step(&mut self) -> Next {
        if self.stopping() {
            self.collect_level9_at_stop();
            return Next::Done;
        }
        if self.due.is_empty() {
            return Next::Done;
        }
        let writer = (self.may_write)();
        if writer && !self.was_writer {
            // A new lease: another instance may have written to the replica meanwhile.
            self.manifest = None;
        }
        if !writer {
            self.not_writer_at = Instant::now();
        }
        self.was_writer = writer;
        // The earliest job; ties in job order (levels upwards, then snapshot, retention).
        let (idx, when) = self
            .due
            .iter()
            .enumerate()
            .min_by_key(|(_, (job, at))| (*at, *job))
            .map(|(i, (_, at))| (i, *at))
            .expect("at least one job");
        let now = SystemTime::now();
        if let Ok(wait) = when.duration_since(now) {
            if !wait.is_zero() {
                return Next::At(Instant::now() + wait);
            }
        }
        let job = self.due[idx].0;
        let result = self.run_job(job);
        // A merge's download chunks and pages are many small blocks the arenas would keep.
        crate::alloc::release_free_heap();
        let failed = result.is_err();
        {
            let mut s = self.shared.status();
            s.errors.retain(|(j, _)| *j != job);
            if let Err(e) = &result {
                let what = match job {
                    Job::Level(n) => format!("compacting into level {n}"),
                    Job::Snapshot => "level-9 snapshot".to_string(),
                    Job::L0Retention => "level-0 retention".to_string(),
                };
                s.errors.push((job, format!("{what}: {e}")));
            }
        }
        let now = SystemTime::now();
        self.due[idx].1 = match (job, &self.level9) {
            // Waiting for the replicator's answer: look again shortly.
            (Job::Snapshot, Some(_)) => now + LEVEL9_POLL,
            (Job::Level(n), _) => next_boundary(now, self.settings.levels[n as usize - 1]),
            (Job::Snapshot, None) => next_boundary(
                now,
                self.settings
                    .snapshot_interval
                    .unwrap_or(Duration::from_secs(86_400)),
            ),
            (Job::L0Retention, _) => now + L0_RETENTION_CHECK_INTERVAL,
        };
        if failed {
            // What we knew of the replica may be what went wrong; and do not wait a whole
            // interval (up to a day) to try again.
            self.manifest = None;
            self.due[idx].1 = self.due[idx].1.min(now + RETRY_AFTER_ERROR);
        }
        // One job per step keeps steps short; the next due one runs in the next step.
        Next::At(Instant::now())
    }

    fn run_job(&mut self, job: Job) -> Result<()> {
        if !(self.may_write)() {
            return Ok(());
        }
        match job {
            Job::Level(n) => {
                let interval = self.settings.levels[n as usize - 1];
                if let Some(out) = self.compact_level(n, interval)? {
                    let mut s = self.shared.status();
                    let l = &mut s.levels[n as usize - 1];
                    l.compactions += 1;
                    l.last = Some((out.min_txid, out.max_txid, out.size, SystemTime::now()));
                    drop(s);
                    if n == 1 {
                        self.enforce_l0_retention()?;
                    }
                }
                Ok(())
            }
            Job::Snapshot => {
                let interval = self
                    .settings
                    .snapshot_interval
                    .unwrap_or(Duration::from_secs(86_400));
                let ticked = self.snapshot_tick(interval);
                // Retention runs on every snapshot tick, whether or not a snapshot was made (it
                // needs no request unless something is due for deletion).
                let kept = self.enforce_snapshot_retention();
                ticked?;
                kept
            }
            Job::L0Retention => self.enforce_l0_retention(),
        }
    }

    /// The replica's files as far as this process knows, loading them when needed, with the
    /// level-0 uploads the replicator reported since the last look.
    fn manifest(&mut self) -> Result<&mut Manifest> {
        let stale = self
            .manifest
            .as_ref()
            .is_none_or(|m| m.loaded_at.elapsed() >= MANIFEST_MAX_AGE);
        if stale {
            // The replicator's listing will do if it was taken on this lease (after this task
            // last saw the lease not held) and is not old; otherwise list.
            let offered = self
                .shared
                .offered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .filter(|(levels, at)| {
                    *at >= self.not_writer_at
                        && at.elapsed() < MANIFEST_MAX_AGE
                        && levels.len() == all_levels().count()
                });
            self.manifest = Some(match offered {
                Some((levels, at)) => Manifest {
                    levels,
                    loaded_at: at,
                },
                None => {
                    self.shared.status().listings += 1;
                    Manifest::load(self.client.as_ref())?
                }
            });
        }
        let uploaded = std::mem::take(
            &mut *self
                .shared
                .uploaded
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let m = self.manifest.as_mut().expect("just loaded");
        for f in uploaded {
            m.add(f);
        }
        Ok(m)
    }

    /// One level-`dst` run. Returns the file written, if any.
    fn compact_level(&mut self, dst: u8, interval: Duration) -> Result<Option<LtxFileInfo>> {
        let m = self.manifest()?;
        let dst_files = &m.levels[dst as usize];
        let newest = dst_files.iter().max_by_key(|f| f.max_txid);
        if newest.is_some_and(|f| f.created_at > prev_boundary(SystemTime::now(), interval)) {
            return Ok(None); // too early: this interval already has its file
        }
        let dst_max = newest.map_or(0, |f| f.max_txid);
        let mut inputs = compaction_inputs(&m.levels[dst as usize - 1], dst_max);
        if dst == 1 {
            let confirmed = (self.confirmed)();
            inputs.retain(|f| f.max_txid <= confirmed);
        }
        if inputs.is_empty() || self.stopping() {
            return Ok(None);
        }
        let (mut spool, header) = self.merge(&inputs)?;
        if (header.min_txid, header.max_txid)
            != (inputs[0].min_txid, inputs[inputs.len() - 1].max_txid)
        {
            return Err(Error::msg(format!(
                "merged {} files into TXIDs {}-{}, but their names say {}-{}",
                inputs.len(),
                ltx::format_txid(header.min_txid),
                ltx::format_txid(header.max_txid),
                ltx::format_txid(inputs[0].min_txid),
                ltx::format_txid(inputs[inputs.len() - 1].max_txid)
            )));
        }
        if !(self.may_write)() {
            return Ok(None);
        }
        let out = self.client.put(
            dst,
            header.min_txid,
            header.max_txid,
            header.timestamp_ms,
            &mut spool,
        )?;
        self.manifest()?.add(out.clone());
        Ok(Some(out))
    }

    /// Merge `inputs` (contiguous, in TXID order) into one spooled LTX file.
    fn merge(&self, inputs: &[LtxFileInfo]) -> Result<(Spool, ltx::Header)> {
        let mut readers: Vec<Box<dyn Read + Send>> = Vec::new();
        let mut spools: Vec<(Spool, ltx::Header)> = Vec::new();
        if inputs.len() > MERGE_FAN_IN {
            // Round 1: groups of MERGE_FAN_IN into intermediates; then merge those (again in
            // rounds if there are very many).
            for group in inputs.chunks(MERGE_FAN_IN) {
                if self.stopping() {
                    return Err(Error::msg("stopping"));
                }
                spools.push(self.merge(group)?);
            }
            if spools.len() > MERGE_FAN_IN {
                return self.merge_spools(spools);
            }
            for (s, _) in spools {
                readers.push(Box::new(SpoolReader { spool: s, pos: 0 }));
            }
            // The readers are intermediates now, not the named files (checked in round 1).
            return self.merge_readers(readers, &[]);
        }
        for f in inputs {
            readers.push(self.client.open(f)?);
        }
        self.merge_readers(readers, inputs)
    }

    fn merge_spools(&self, spools: Vec<(Spool, ltx::Header)>) -> Result<(Spool, ltx::Header)> {
        let mut next = Vec::new();
        let mut it = spools.into_iter().peekable();
        while it.peek().is_some() {
            let group: Vec<_> = it.by_ref().take(MERGE_FAN_IN).collect();
            let readers: Vec<Box<dyn Read + Send>> = group
                .into_iter()
                .map(|(s, _)| Box::new(SpoolReader { spool: s, pos: 0 }) as Box<dyn Read + Send>)
                .collect();
            next.push(self.merge_readers(readers, &[])?);
        }
        if next.len() == 1 {
            return Ok(next.pop().expect("one"));
        }
        self.merge_spools(next)
    }

    fn merge_readers(
        &self,
        readers: Vec<Box<dyn Read + Send>>,
        names: &[LtxFileInfo],
    ) -> Result<(Spool, ltx::Header)> {
        let mut decoders = Vec::with_capacity(readers.len());
        for (i, r) in readers.into_iter().enumerate() {
            let what = names
                .get(i)
                .map_or("an intermediate merge", |f| f.key.as_str());
            let dec = Decoder::new(r).with_context(|| format!("reading {what}"))?;
            // A replica file is merged only if its header is the file its key names; the merge
            // itself checks that the inputs chain (ltx::compact).
            if let Some(f) = names.get(i) {
                ltx::check_named(dec.header(), (f.min_txid, f.max_txid))
                    .with_context(|| format!("reading {}", f.key))?;
            }
            decoders.push(dec);
        }
        let spool = Spool::new(&self.spill_dir, SPOOL_MEMORY_LIMIT);
        let (spool, header, _) = ltx::compact(decoders, spool).map_err(|e| {
            let detail = match &e {
                ltx::LtxError::CompactInput { index, .. } => names
                    .get(*index)
                    .map(|f| format!(" ({})", f.key))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            Error::msg(format!("merging{detail}: {e}"))
        })?;
        Ok((spool, header))
    }

    /// A snapshot-level tick: ask the replicator for a snapshot unless this interval has one, or
    /// collect the answer to the one asked for. Returns whether a round finished (a snapshot
    /// written, or none needed).
    fn snapshot_tick(&mut self, interval: Duration) -> Result<bool> {
        if let Some(answer) = &self.level9 {
            let outcome = match answer.try_recv() {
                Ok(a) => a,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => Err(Error::msg(
                    "replication stopped before the snapshot was written",
                )),
            };
            self.level9 = None;
            return match outcome? {
                // Counted and added to the manifest by `Compactor::record_snapshot`.
                Level9Outcome::Written(_) => Ok(true),
                Level9Outcome::NotNewer => Ok(true),
                Level9Outcome::Busy => {
                    // Other databases' snapshots are running: ask again shortly.
                    self.due_again(Job::Snapshot, SystemTime::now() + LEVEL9_BUSY_RETRY);
                    Ok(false)
                }
            };
        }
        let m = self.manifest()?;
        let newest = m.levels[SNAPSHOT_LEVEL as usize]
            .iter()
            .max_by_key(|f| f.max_txid);
        if newest.is_some_and(|f| f.created_at > prev_boundary(SystemTime::now(), interval)) {
            return Ok(true);
        }
        let newer_than = newest.map_or(0, |f| f.max_txid);
        self.level9 = Some((self.snapshot)(newer_than)?);
        Ok(false)
    }

    /// A snapshot asked for before the stop is told to give up, but it may already be uploading:
    /// wait for its answer (as the stop waits for any job in progress). The thread that wrote it
    /// has counted it (`Compactor::record_snapshot`).
    fn collect_level9_at_stop(&mut self) {
        if let Some(answer) = self.level9.take() {
            let _ = answer.recv_timeout(LEVEL9_STOP_WAIT);
        }
    }

    /// Make `job` due at `at` (used from inside its own run; `step` keeps the earlier time).
    fn due_again(&mut self, job: Job, at: SystemTime) {
        if let Some(d) = self.due.iter_mut().find(|(j, _)| *j == job) {
            d.1 = at;
        }
    }

    fn enforce_snapshot_retention(&mut self) -> Result<()> {
        let threshold = SystemTime::now()
            .checked_sub(self.settings.snapshot_retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let compaction_levels = self.settings.levels.len();
        let m = self.manifest()?;
        let (mut doomed, floor) =
            select_snapshot_retention(&m.levels[SNAPSHOT_LEVEL as usize], threshold);
        for files in m.levels.iter().skip(1).take(compaction_levels) {
            doomed.extend(select_txid_retention(files, floor));
        }
        self.delete(doomed)
    }

    fn enforce_l0_retention(&mut self) -> Result<()> {
        let Some(retention) = self.settings.l0_retention else {
            return Ok(());
        };
        let threshold = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let m = self.manifest()?;
        let doomed = select_l0_retention(&m.levels[0], &m.levels[1], threshold);
        self.delete(doomed)
    }

    fn delete(&mut self, doomed: Vec<LtxFileInfo>) -> Result<()> {
        if doomed.is_empty() || !self.settings.retention || !(self.may_write)() {
            return Ok(());
        }
        let n = doomed.len();
        let m = self.manifest()?;
        let Some(doomed) = guard_latest(&m.levels, doomed) else {
            return Err(Error::msg(format!(
                "refusing to delete {n} expired files: the latest restore would no longer reach the same TXID"
            )));
        };
        if doomed.is_empty() {
            return Ok(());
        }
        self.client.delete(&doomed)?;
        self.manifest()?.remove(&doomed);
        self.shared.status().deleted += doomed.len() as u64;
        Ok(())
    }
}

/// Reads a spooled intermediate merge from its start.
struct SpoolReader {
    spool: Spool,
    pos: u64,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.spool.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.spool.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::testutil::hdr;
    use crate::ltx::{Encoder, Header};
    use crate::replica_client::FileReplicaClient;
    use crate::restore::tests::{info, levels_of};

    fn at_ms(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn boundaries_align_like_go_truncate() {
        // 2023-11-14T22:13:20Z.
        let t = at_ms(1_700_000_000_000);
        assert_eq!(
            next_boundary(t, Duration::from_secs(30)),
            at_ms(1_700_000_010_000)
        );
        assert_eq!(
            prev_boundary(t, Duration::from_secs(300)),
            at_ms(1_699_999_800_000)
        );
        // 24 h: midnight UTC.
        assert_eq!(
            next_boundary(t, Duration::from_secs(86_400)),
            at_ms(1_700_006_400_000)
        );
        // On a boundary: the next one is a whole interval later.
        assert_eq!(
            next_boundary(at_ms(1_700_000_010_000), Duration::from_secs(30)),
            at_ms(1_700_000_040_000)
        );
        // Sub-second intervals.
        assert_eq!(
            next_boundary(at_ms(1_700_000_000_123), Duration::from_millis(500)),
            at_ms(1_700_000_000_500)
        );
        // An interval that does not divide a day counts from Go's zero time, not 1970:
        // (62135596800 + 1700000000) mod 7 = 3, so the previous 7 s boundary is 3 s earlier.
        assert_eq!((62_135_596_800u64 + 1_700_000_000) % 7, 3);
        assert_eq!(
            prev_boundary(t, Duration::from_secs(7)),
            at_ms(1_699_999_997_000)
        );
    }

    #[test]
    fn inputs_start_after_destination_and_stop_at_gaps() {
        let l0: Vec<_> = [1, 2, 3, 4, 6, 7]
            .iter()
            .map(|&t| info(0, t, t, t))
            .collect();
        let names = |v: Vec<LtxFileInfo>| v.iter().map(|f| f.min_txid).collect::<Vec<_>>();
        assert_eq!(names(compaction_inputs(&l0, 0)), [1, 2, 3, 4]);
        assert_eq!(names(compaction_inputs(&l0, 2)), [3, 4]);
        assert_eq!(names(compaction_inputs(&l0, 4)), [6, 7]);
        assert!(compaction_inputs(&l0, 7).is_empty());
    }

    #[test]
    fn l0_retention_rules() {
        let l0: Vec<_> = (1..=10).map(|t| info(0, t, t, t)).collect();
        let l1 = vec![info(1, 1, 4, 5), info(1, 5, 8, 9)];
        let txids = |v: Vec<LtxFileInfo>| v.iter().map(|f| f.max_txid).collect::<Vec<_>>();
        // Everything old: up to L1's max (8), and 8 is an L1 boundary.
        assert_eq!(
            txids(select_l0_retention(&l0, &l1, at_ms(100_000))),
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
        // Only 1..=6 old enough: cut back to the L1 boundary 4, so 5 and 6 stay reachable.
        assert_eq!(
            txids(select_l0_retention(&l0, &l1, at_ms(6_000))),
            [1, 2, 3, 4]
        );
        // Stop at the first file too recent, even if later ones are older (clock skew).
        let mut skewed = l0.clone();
        skewed[2].created_at = at_ms(1_000_000);
        assert_eq!(
            txids(select_l0_retention(&skewed, &l1, at_ms(100_000))),
            Vec::<u64>::new()
        );
        // Never the newest L0 file.
        let l1_all = vec![info(1, 1, 10, 11)];
        assert_eq!(
            select_l0_retention(&l0, &l1_all, at_ms(100_000)).len(),
            0,
            "cut back to a boundary below 10 (none) leaves nothing"
        );
        let l1_two = vec![info(1, 1, 9, 10), info(1, 10, 10, 11)];
        assert_eq!(
            txids(select_l0_retention(&l0, &l1_two, at_ms(100_000))),
            [1, 2, 3, 4, 5, 6, 7, 8, 9]
        );
        // No L1 yet: nothing.
        assert!(select_l0_retention(&l0, &[], at_ms(100_000)).is_empty());
    }

    #[test]
    fn snapshot_and_txid_retention_rules() {
        let l9 = vec![info(9, 1, 10, 10), info(9, 1, 20, 20), info(9, 1, 30, 30)];
        let (doomed, floor) = select_snapshot_retention(&l9, at_ms(25_000));
        assert_eq!(doomed.len(), 2);
        // Oldest kept is 1-30; the deleted one just before it ends at 20.
        assert_eq!(floor, 20);
        let (doomed, floor) = select_snapshot_retention(&l9, at_ms(15_000));
        assert_eq!((doomed.len(), floor), (1, 10));
        let (doomed, floor) = select_snapshot_retention(&l9, at_ms(5_000));
        assert_eq!((doomed.len(), floor), (0, 0));
        // All expired: the newest stays.
        let (doomed, floor) = select_snapshot_retention(&l9, at_ms(99_000));
        assert_eq!((doomed.len(), floor), (2, 20));

        let l1 = vec![info(1, 1, 5, 5), info(1, 6, 19, 19), info(1, 20, 25, 25)];
        let gone: Vec<u64> = select_txid_retention(&l1, 20)
            .iter()
            .map(|f| f.max_txid)
            .collect();
        assert_eq!(gone, [5, 19]);
        assert_eq!(
            select_txid_retention(&l1[..1], 20).len(),
            0,
            "keeps the last file"
        );
    }

    #[test]
    fn guard_keeps_latest_plan_files() {
        let files = vec![info(0, 1, 1, 1), info(0, 2, 2, 2), info(0, 3, 3, 3)];
        let lv = levels_of(&files);
        // Deleting L0 1 would break the latest restore: refused.
        assert_eq!(guard_latest(&lv, vec![files[0].clone()]), Some(vec![]));
        let with_l1 = levels_of(&[files.clone(), vec![info(1, 1, 2, 2)]].concat());
        assert_eq!(
            guard_latest(&with_l1, vec![files[0].clone(), files[1].clone()]),
            Some(vec![files[0].clone(), files[1].clone()])
        );
    }

    /// A replica history driven by the same selection rules, with Litestream's timing: L0 file
    /// per write, compactions, snapshots, and both retentions, in random order. After every
    /// retention, every retained point must restore by TXID and by timestamp to exactly itself.
    #[test]
    fn retention_never_strands_a_retained_point() {
        #[derive(Clone)]
        struct F {
            info: LtxFileInfo,
            /// The `litestream-timestamp` metadata: newest input's time for compacted files.
            meta: SystemTime,
        }
        let mut rng = crate::ltx::testutil::Rng(0x5eed_1234);
        for round in 0..60 {
            let mut files: Vec<F> = Vec::new();
            let mut ts_of: Vec<SystemTime> = vec![SystemTime::UNIX_EPOCH]; // ts_of[txid]
            let mut now_ms = 1_000_000u64;
            let mut txid = 0u64;
            let levels_n = 1 + (round % 3) as u8;
            let l0_retention = 1_000 + rng.below(5_000);
            let snap_retention = 2_000 + rng.below(20_000);
            for _step in 0..400 {
                now_ms += 1 + rng.below(300);
                let now = at_ms(now_ms);
                let listing = |files: &[F]| {
                    levels_of(&files.iter().map(|f| f.info.clone()).collect::<Vec<_>>())
                };
                match rng.below(10) {
                    0..=4 => {
                        txid += 1;
                        ts_of.push(now);
                        let mut i = info(0, txid, txid, 0);
                        i.created_at = now;
                        files.push(F { info: i, meta: now });
                    }
                    5 | 6 => {
                        let dst = 1 + rng.below(levels_n as u64) as u8;
                        let lv = listing(&files);
                        let dst_max = lv[dst as usize]
                            .iter()
                            .map(|f| f.max_txid)
                            .max()
                            .unwrap_or(0);
                        let inputs = compaction_inputs(&lv[dst as usize - 1], dst_max);
                        if let (Some(a), Some(b)) = (inputs.first(), inputs.last()) {
                            let mut i = info(dst, a.min_txid, b.max_txid, 0);
                            i.created_at = now;
                            files.push(F {
                                info: i,
                                meta: ts_of[b.max_txid as usize],
                            });
                        }
                    }
                    7 => {
                        let lv = listing(&files);
                        let newest = lv[9].iter().map(|f| f.max_txid).max().unwrap_or(0);
                        if txid > newest {
                            let mut i = info(9, 1, txid, 0);
                            i.created_at = now;
                            files.push(F { info: i, meta: now });
                        }
                    }
                    _ => {
                        let lv = listing(&files);
                        let mut doomed = select_l0_retention(
                            &lv[0],
                            &lv[1],
                            at_ms(now_ms.saturating_sub(l0_retention)),
                        );
                        if rng.below(2) == 0 {
                            let (d, floor) = select_snapshot_retention(
                                &lv[9],
                                at_ms(now_ms.saturating_sub(snap_retention)),
                            );
                            doomed.extend(d);
                            for files in lv.iter().skip(1).take(levels_n as usize) {
                                doomed.extend(select_txid_retention(files, floor));
                            }
                        }
                        let before = lv.clone();
                        files.retain(|f| !doomed.contains(&f.info));
                        check_retained(
                            &before,
                            &files
                                .iter()
                                .map(|f| (f.info.clone(), f.meta))
                                .collect::<Vec<_>>(),
                            &ts_of,
                            txid,
                        );
                    }
                }
            }
        }

        fn check_retained(
            before: &[Vec<LtxFileInfo>],
            after: &[(LtxFileInfo, SystemTime)],
            ts_of: &[SystemTime],
            txid: u64,
        ) {
            let lv = levels_of(&after.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
            let meta = levels_of(
                &after
                    .iter()
                    .map(|(f, m)| LtxFileInfo {
                        created_at: *m,
                        ..f.clone()
                    })
                    .collect::<Vec<_>>(),
            );
            let reach = |lv: &[Vec<LtxFileInfo>], t: Target| {
                plan_files(lv, t)
                    .ok()
                    .and_then(|p| p.last().map(|f| f.max_txid))
            };
            // The latest restore is never affected.
            assert_eq!(reach(&lv, Target::Latest), reach(before, Target::Latest));
            if txid > 0 && !lv.iter().all(|l| l.is_empty()) {
                assert_eq!(reach(&lv, Target::Latest), Some(txid));
            }
            let oldest_snapshot = lv[9].iter().map(|f| f.max_txid).min().unwrap_or(0);
            for (level, files) in meta.iter().enumerate() {
                for f in files {
                    let p = f.max_txid;
                    if p < oldest_snapshot {
                        continue;
                    }
                    assert_eq!(
                        reach(&lv, Target::Txid(p)),
                        Some(p),
                        "retained point {p} no longer restores by TXID"
                    );
                    // By timestamp: any time at which the database was at `p` and this file
                    // already existed (a compacted file carries its newest input's time; a
                    // snapshot the time it was taken).
                    let t = if level == SNAPSHOT_LEVEL as usize {
                        f.created_at
                    } else {
                        ts_of[p as usize]
                    } + Duration::from_micros(1);
                    let still_p = ts_of.get(p as usize + 1).is_none_or(|next| *next > t);
                    let snapshot_before =
                        meta[9].iter().any(|s| s.max_txid <= p && s.created_at < t);
                    if still_p && (snapshot_before || oldest_snapshot == 0) {
                        assert_eq!(
                            reach(&meta, Target::Timestamp(t)),
                            Some(p),
                            "retained point {p} (level {level}) no longer restores by timestamp"
                        );
                    }
                }
            }
        }
    }

    // ---- compaction against a file replica ----------------------------------------------

    fn put_file(
        client: &FileReplicaClient,
        level: u8,
        h: Header,
        pages: &[(u32, u8)],
    ) -> LtxFileInfo {
        let mut spool = Spool::new(&std::env::temp_dir(), 1 << 20);
        let mut enc = Encoder::new(&mut spool, h).unwrap();
        for &(pgno, tag) in pages {
            enc.write_page(pgno, &vec![tag; 512]).unwrap();
        }
        enc.finish().unwrap();
        client
            .put(level, h.min_txid, h.max_txid, h.timestamp_ms, &mut spool)
            .unwrap()
    }

    fn worker(client: Arc<FileReplicaClient>, dir: &Path) -> CompactionTask {
        let settings = Settings {
            levels: vec![Duration::from_secs(30), Duration::from_secs(300)],
            l0_retention: Some(Duration::from_secs(1)),
            snapshot_interval: None,
            snapshot_retention: Duration::from_secs(60),
            retention: true,
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            status: Mutex::new(Status {
                levels: vec![LevelStatus::default(), LevelStatus::default()],
                ..Status::default()
            }),
            uploaded: Mutex::new(Vec::new()),
            offered: Mutex::new(None),
        });
        CompactionTask::new(
            shared,
            client,
            settings,
            &dir.join("tmp"),
            Arc::new(|_| Err(Error::msg("no snapshots here"))),
            Arc::new(|| true),
            Arc::new(|| u64::MAX),
        )
    }

    /// An upload the replicator made and told the compactor about.
    fn uploaded(w: &CompactionTask, f: LtxFileInfo) {
        w.shared.uploaded.lock().unwrap().push(f);
    }

    fn pages(client: &FileReplicaClient, f: &LtxFileInfo) -> (Header, Vec<(u32, u8)>) {
        let mut v = vec![];
        let (h, _) = crate::ltx::verify(client.open(f).unwrap(), |p, d| v.push((p, d[0]))).unwrap();
        (h, v)
    }

    #[test]
    fn compacts_levels_through_a_replica_client() {
        let dir =
            std::env::temp_dir().join(format!("ls-compact-{}", crate::replica_client::rand_u64()));
        let client = Arc::new(FileReplicaClient::new(&dir));
        // 1: snapshot of 3 pages; 2..=80: each rewrites page 2 (tag = txid), 50 shrinks to 2
        // pages and 51 grows back to 3 with a new page 3.
        put_file(&client, 0, hdr(1, 1, 3, 1), &[(1, 1), (2, 1), (3, 1)]);
        for t in 2..=80u64 {
            let (commit, pages): (u32, Vec<(u32, u8)>) = match t {
                50 => (2, vec![(2, 50)]),
                51 => (3, vec![(2, 51), (3, 51)]),
                _ => (3, vec![(2, t as u8)]),
            };
            put_file(&client, 0, hdr(t, t, commit, t as i64), &pages);
        }
        let mut w = worker(client.clone(), &dir);
        // 80 inputs > MERGE_FAN_IN: merged in rounds.
        let out = w
            .compact_level(1, Duration::from_secs(30))
            .unwrap()
            .unwrap();
        assert_eq!((out.min_txid, out.max_txid), (1, 80));
        let l1 = client.list(1).unwrap();
        let (h, p) = pages(&client, &l1[0]);
        assert_eq!(
            (h.min_txid, h.max_txid, h.commit, h.timestamp_ms),
            (1, 80, 3, 80)
        );
        assert_eq!((h.wal_offset, h.wal_size, h.wal_salt1), (0, 0, 0));
        assert_eq!(p, [(1, 1), (2, 80), (3, 51)]);
        // Only the new file is merged next time.
        uploaded(&w, put_file(&client, 0, hdr(81, 81, 3, 81), &[(1, 81)]));
        let out = w
            .compact_level(1, Duration::from_millis(10))
            .unwrap()
            .unwrap();
        assert_eq!((out.min_txid, out.max_txid), (81, 81));
        // Level 2 merges both level-1 files.
        let out = w
            .compact_level(2, Duration::from_millis(10))
            .unwrap()
            .unwrap();
        assert_eq!((out.min_txid, out.max_txid), (1, 81));
        let (_, p) = pages(&client, &client.list(2).unwrap()[0]);
        assert_eq!(p, [(1, 81), (2, 80), (3, 51)]);
        // Nothing new: nothing written.
        std::thread::sleep(Duration::from_millis(20));
        assert!(w
            .compact_level(2, Duration::from_millis(10))
            .unwrap()
            .is_none());

        // L0 retention (1 s; the file client's mtimes are the header timestamps, long past):
        // everything up to L1's last boundary below the newest L0 file.
        w.enforce_l0_retention().unwrap();
        let l0: Vec<u64> = client.list(0).unwrap().iter().map(|f| f.max_txid).collect();
        assert_eq!(l0, [81]);
        assert_eq!(w.shared.status().deleted, 80);
        let lv: Vec<Vec<LtxFileInfo>> = all_levels().map(|l| client.list(l).unwrap()).collect();
        assert_eq!(
            plan_files(&lv, Target::Latest)
                .unwrap()
                .last()
                .unwrap()
                .max_txid,
            81
        );
        // All of that from one listing: what the task wrote, deleted and was told of is known.
        assert_eq!(w.shared.status().listings, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A directory replica of L0 files 1..=n, each a one-page database whose page holds its TXID.
    fn one_page_l0_replica(n: u64) -> (PathBuf, Arc<FileReplicaClient>) {
        let dir =
            std::env::temp_dir().join(format!("ls-compact-{}", crate::replica_client::rand_u64()));
        let client = Arc::new(FileReplicaClient::new(&dir));
        for t in 1..=n {
            put_file(&client, 0, hdr(t, t, 1, t as i64), &[(1, t as u8)]);
        }
        (dir, client)
    }

    #[test]
    fn an_idle_replica_costs_no_listing() {
        let (dir, client) = one_page_l0_replica(3);
        let mut w = worker(client.clone(), &dir);
        w.compact_level(1, Duration::from_millis(1)).unwrap();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(2));
            assert!(w
                .compact_level(1, Duration::from_millis(1))
                .unwrap()
                .is_none());
            // Level 2 takes the level-1 file once, then has nothing new either.
            w.compact_level(2, Duration::from_millis(1)).unwrap();
            w.enforce_l0_retention().unwrap();
        }
        assert_eq!(w.shared.status().listings, 1);
        // A failed job (or a new lease) forgets it: the next one lists again.
        w.manifest = None;
        w.compact_level(1, Duration::from_millis(1)).unwrap();
        assert_eq!(w.shared.status().listings, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_refuses_a_file_that_is_not_the_one_its_key_names() {
        // A few inputs (one merge) and many (merged in rounds): either way the replaced file is
        // named in the error and nothing reaches level 1.
        for n in [6u64, 40] {
            let dir = std::env::temp_dir()
                .join(format!("ls-compact-{}", crate::replica_client::rand_u64()));
            let client = Arc::new(FileReplicaClient::new(&dir));
            put_file(&client, 0, hdr(1, 1, 2, 1), &[(1, 1), (2, 1)]);
            for t in 2..=n {
                put_file(&client, 0, hdr(t, t, 2, t as i64), &[(2, t as u8)]);
            }
            let l0 = client.list(0).unwrap();
            // Object 4 now holds the (valid) bytes of object 3.
            std::fs::copy(&l0[2].key, &l0[3].key).unwrap();
            let mut w = worker(client.clone(), &dir);
            let e = w.compact_level(1, Duration::from_millis(1)).unwrap_err();
            assert!(
                e.message().contains("not the file its name says")
                    && e.message().contains(&l0[3].key),
                "{e}"
            );
            assert!(client.list(1).unwrap().is_empty());
            // Deleted instead: compaction stops at the gap (restore refuses to cross it). The
            // failed run forgot what it knew of the replica.
            std::fs::remove_file(&l0[3].key).unwrap();
            w.manifest = None;
            let out = w
                .compact_level(1, Duration::from_millis(1))
                .unwrap()
                .unwrap();
            assert_eq!((out.min_txid, out.max_txid), (1, 3));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn retention_off_deletes_nothing() {
        let (dir, client) = one_page_l0_replica(5);
        let mut w = worker(client.clone(), &dir);
        w.settings.retention = false;
        w.compact_level(1, Duration::from_millis(1))
            .unwrap()
            .unwrap();
        uploaded(&w, put_file(&client, 0, hdr(6, 6, 1, 6), &[(1, 6)]));
        w.enforce_l0_retention().unwrap();
        assert_eq!(client.list(0).unwrap().len(), 6);
        w.settings.retention = true;
        w.enforce_l0_retention().unwrap();
        assert_eq!(client.list(0).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
