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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::config::{format_duration, ResolvedConfig};
use crate::error::{Context, Error, Result};
use crate::ltx::{self, Decoder};
use crate::replica_client::{
    all_levels, format_timestamp_ms, unix_ms, LtxFileInfo, ReplicaClient, Spool, SNAPSHOT_LEVEL,
    SPOOL_MEMORY_LIMIT,
};
use crate::restore::{plan_files, Target};

/// Inputs open at once in one merge. Every open input holds a download stream and a page, so
/// this bounds connections and memory when a level has piled up thousands of files.
const MERGE_FAN_IN: usize = 32;
/// How often level-0 retention is checked besides after each level-1 compaction (Litestream's
/// `l0-retention-check-interval`).
const L0_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// A failed task is tried again after at most this long.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(10);
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
/// its TXID is at most the given one; returns the TXID and size written, or None if it was not
/// newer.
pub type SnapshotFn = Arc<dyn Fn(u64) -> Result<Option<(u64, u64)>> + Send + Sync>;

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

// ---- the thread -----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
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
    /// The current error of each task that failed on its last run (cleared when it succeeds).
    errors: Vec<(Task, String)>,
}

struct Shared {
    stop: Mutex<bool>,
    cond: Condvar,
    status: Mutex<Status>,
}

impl Shared {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to one replicator's compaction thread.
pub struct Compactor {
    shared: Arc<Shared>,
    settings: Settings,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Worker {
    shared: Arc<Shared>,
    client: Arc<dyn ReplicaClient>,
    settings: Settings,
    spill_dir: PathBuf,
    snapshot: SnapshotFn,
    may_write: MayWrite,
    confirmed: Confirmed,
}

impl Compactor {
    pub fn start(
        client: Arc<dyn ReplicaClient>,
        settings: Settings,
        spill_dir: &Path,
        snapshot: SnapshotFn,
        may_write: MayWrite,
        confirmed: Confirmed,
    ) -> Result<Compactor> {
        let shared = Arc::new(Shared {
            stop: Mutex::new(false),
            cond: Condvar::new(),
            status: Mutex::new(Status {
                levels: settings
                    .levels
                    .iter()
                    .map(|_| LevelStatus::default())
                    .collect(),
                ..Status::default()
            }),
        });
        let worker = Worker {
            shared: shared.clone(),
            client,
            settings: settings.clone(),
            spill_dir: spill_dir.to_path_buf(),
            snapshot,
            may_write,
            confirmed,
        };
        let thread = std::thread::Builder::new()
            .name("litestream-compactor".into())
            .spawn(move || worker.run())
            .context("starting the compaction thread")?;
        Ok(Compactor {
            shared,
            settings,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stop the thread after its current task.
    pub fn stop(&self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.cond.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
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

impl Worker {
    fn run(self) {
        let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_loop()));
        if let Err(panic) = body {
            let msg = crate::error::panic_message(panic.as_ref());
            self.shared.status().errors.push((
                Task::L0Retention,
                format!("internal error in compaction: {msg}"),
            ));
        }
    }

    fn stopping(&self) -> bool {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_loop(&self) {
        // Every task runs once at start, then on its schedule.
        let start = SystemTime::now();
        let mut due: Vec<(Task, SystemTime)> = (1..=self.settings.levels.len() as u8)
            .map(|n| (Task::Level(n), start))
            .collect();
        if self.settings.snapshot_interval.is_some() {
            due.push((Task::Snapshot, start));
        }
        if self.settings.l0_retention.is_some() {
            due.push((Task::L0Retention, start + L0_RETENTION_CHECK_INTERVAL));
        }
        if due.is_empty() {
            return;
        }
        loop {
            // The earliest task; ties in task order (levels upwards, then snapshot, retention).
            let (idx, when) = due
                .iter()
                .enumerate()
                .min_by_key(|(_, (task, at))| (*at, *task))
                .map(|(i, (_, at))| (i, *at))
                .expect("at least one task");
            {
                let mut stop = self.shared.stop.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if *stop {
                        return;
                    }
                    let wait = match when.duration_since(SystemTime::now()) {
                        Ok(d) if !d.is_zero() => d,
                        _ => break,
                    };
                    stop = self
                        .shared
                        .cond
                        .wait_timeout(stop, wait)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
            let task = due[idx].0;
            let result = self.run_task(task);
            let failed = result.is_err();
            {
                let mut s = self.shared.status();
                s.errors.retain(|(t, _)| *t != task);
                if let Err(e) = result {
                    let what = match task {
                        Task::Level(n) => format!("compacting into level {n}"),
                        Task::Snapshot => "level-9 snapshot".to_string(),
                        Task::L0Retention => "level-0 retention".to_string(),
                    };
                    s.errors.push((task, format!("{what}: {e}")));
                }
            }
            let now = SystemTime::now();
            due[idx].1 = match task {
                Task::Level(n) => next_boundary(now, self.settings.levels[n as usize - 1]),
                Task::Snapshot => next_boundary(
                    now,
                    self.settings
                        .snapshot_interval
                        .unwrap_or(Duration::from_secs(86_400)),
                ),
                Task::L0Retention => now + L0_RETENTION_CHECK_INTERVAL,
            };
            if failed {
                // Do not wait a whole interval (up to a day) to try again.
                due[idx].1 = due[idx].1.min(now + RETRY_AFTER_ERROR);
            }
        }
    }

    fn run_task(&self, task: Task) -> Result<()> {
        if !(self.may_write)() {
            return Ok(());
        }
        match task {
            Task::Level(n) => {
                let interval = self.settings.levels[n as usize - 1];
                if let Some(out) = self.compact_level(n, interval)? {
                    let mut s = self.shared.status();
                    let l = &mut s.levels[n as usize - 1];
                    l.compactions += 1;
                    l.last = Some((out.min_txid, out.max_txid, out.size, SystemTime::now()));
                }
                if n == 1 {
                    self.enforce_l0_retention()?;
                }
                Ok(())
            }
            Task::Snapshot => {
                let interval = self
                    .settings
                    .snapshot_interval
                    .unwrap_or(Duration::from_secs(86_400));
                let made = self.snapshot_tick(interval);
                // Retention runs on every snapshot tick, whether or not a snapshot was made.
                let kept = self.enforce_snapshot_retention();
                made?;
                kept
            }
            Task::L0Retention => self.enforce_l0_retention(),
        }
    }

    /// One level-`dst` run. Returns the file written, if any.
    fn compact_level(&self, dst: u8, interval: Duration) -> Result<Option<LtxFileInfo>> {
        let dst_files = self.client.list(dst)?;
        let newest = dst_files.iter().max_by_key(|f| f.max_txid);
        if newest.is_some_and(|f| f.created_at > prev_boundary(SystemTime::now(), interval)) {
            return Ok(None); // too early: this interval already has its file
        }
        let dst_max = newest.map_or(0, |f| f.max_txid);
        let mut inputs = compaction_inputs(&self.client.list(dst - 1)?, dst_max);
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
        let size = self.client.put(
            dst,
            header.min_txid,
            header.max_txid,
            header.timestamp_ms,
            &mut spool,
        )?;
        Ok(Some(LtxFileInfo {
            level: dst,
            min_txid: header.min_txid,
            max_txid: header.max_txid,
            size,
            created_at: SystemTime::now(),
            key: String::new(),
        }))
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

    /// A snapshot-level tick: ask the replicator for a snapshot unless this interval has one.
    fn snapshot_tick(&self, interval: Duration) -> Result<()> {
        let l9 = self.client.list(SNAPSHOT_LEVEL)?;
        let newest = l9.iter().max_by_key(|f| f.max_txid);
        if newest.is_some_and(|f| f.created_at > prev_boundary(SystemTime::now(), interval)) {
            return Ok(());
        }
        if let Some((txid, size)) = (self.snapshot)(newest.map_or(0, |f| f.max_txid))? {
            let mut s = self.shared.status();
            s.snapshots += 1;
            s.last_snapshot = Some((txid, size, SystemTime::now()));
        }
        Ok(())
    }

    fn list_all(&self) -> Result<Vec<Vec<LtxFileInfo>>> {
        all_levels().map(|l| self.client.list(l)).collect()
    }

    fn enforce_snapshot_retention(&self) -> Result<()> {
        let levels = self.list_all()?;
        let threshold = SystemTime::now()
            .checked_sub(self.settings.snapshot_retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (mut doomed, floor) =
            select_snapshot_retention(&levels[SNAPSHOT_LEVEL as usize], threshold);
        for files in levels.iter().skip(1).take(self.settings.levels.len()) {
            doomed.extend(select_txid_retention(files, floor));
        }
        self.delete(&levels, doomed)
    }

    fn enforce_l0_retention(&self) -> Result<()> {
        let Some(retention) = self.settings.l0_retention else {
            return Ok(());
        };
        let levels = self.list_all()?;
        let threshold = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let doomed = select_l0_retention(&levels[0], &levels[1], threshold);
        self.delete(&levels, doomed)
    }

    fn delete(&self, levels: &[Vec<LtxFileInfo>], doomed: Vec<LtxFileInfo>) -> Result<()> {
        if doomed.is_empty() || !self.settings.retention || !(self.may_write)() {
            return Ok(());
        }
        let n = doomed.len();
        let Some(doomed) = guard_latest(levels, doomed) else {
            return Err(Error::msg(format!(
                "refusing to delete {n} expired files: the latest restore would no longer reach the same TXID"
            )));
        };
        if doomed.is_empty() {
            return Ok(());
        }
        self.client.delete(&doomed)?;
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
    use crate::ltx::{Encoder, Header, HEADER_FLAG_NO_CHECKSUM};
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
                            for l in 1..=levels_n as usize {
                                doomed.extend(select_txid_retention(&lv[l], floor));
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

    fn put_file(client: &FileReplicaClient, level: u8, h: Header, pages: &[(u32, u8)]) {
        let mut spool = Spool::new(&std::env::temp_dir(), 1 << 20);
        let mut enc = Encoder::new(&mut spool, h).unwrap();
        for &(pgno, tag) in pages {
            enc.write_page(pgno, &vec![tag; 512]).unwrap();
        }
        enc.finish().unwrap();
        client
            .put(level, h.min_txid, h.max_txid, h.timestamp_ms, &mut spool)
            .unwrap();
    }

    fn hdr(min: u64, max: u64, commit: u32, ts: i64) -> Header {
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: 512,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: ts,
            wal_offset: 32,
            wal_size: 1000,
            wal_salt1: 1,
            wal_salt2: 2,
            ..Default::default()
        }
    }

    fn worker(client: Arc<FileReplicaClient>, dir: &Path) -> Worker {
        Worker {
            shared: Arc::new(Shared {
                stop: Mutex::new(false),
                cond: Condvar::new(),
                status: Mutex::new(Status {
                    levels: vec![LevelStatus::default(), LevelStatus::default()],
                    ..Status::default()
                }),
            }),
            client,
            settings: Settings {
                levels: vec![Duration::from_secs(30), Duration::from_secs(300)],
                l0_retention: Some(Duration::from_secs(1)),
                snapshot_interval: None,
                snapshot_retention: Duration::from_secs(60),
                retention: true,
            },
            spill_dir: dir.join("tmp"),
            snapshot: Arc::new(|_| Ok(None)),
            may_write: Arc::new(|| true),
            confirmed: Arc::new(|| u64::MAX),
        }
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
        let w = worker(client.clone(), &dir);
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
        put_file(&client, 0, hdr(81, 81, 3, 81), &[(1, 81)]);
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
            let w = worker(client.clone(), &dir);
            let e = w.compact_level(1, Duration::from_millis(1)).unwrap_err();
            assert!(
                e.message().contains("not the file its name says")
                    && e.message().contains(&l0[3].key),
                "{e}"
            );
            assert!(client.list(1).unwrap().is_empty());
            // Deleted instead: compaction stops at the gap (restore refuses to cross it).
            std::fs::remove_file(&l0[3].key).unwrap();
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
        let dir =
            std::env::temp_dir().join(format!("ls-compact-{}", crate::replica_client::rand_u64()));
        let client = Arc::new(FileReplicaClient::new(&dir));
        for t in 1..=5u64 {
            put_file(&client, 0, hdr(t, t, 1, t as i64), &[(1, t as u8)]);
        }
        let mut w = worker(client.clone(), &dir);
        w.settings.retention = false;
        w.compact_level(1, Duration::from_millis(1))
            .unwrap()
            .unwrap();
        put_file(&client, 0, hdr(6, 6, 1, 6), &[(1, 6)]);
        w.enforce_l0_retention().unwrap();
        assert_eq!(client.list(0).unwrap().len(), 6);
        w.settings.retention = true;
        w.enforce_l0_retention().unwrap();
        assert_eq!(client.list(0).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
