//! The replicator's decisions, as pure functions of what it has observed: where the next L0 file
//! continues from (or why it must be a full snapshot), whether a checkpoint is due and of which
//! kind, and what the thread should do next. The thread gathers the facts (reads the WAL header,
//! stats files, looks at the clock) and does the I/O; everything here is unit-tested.
//!
//! Invariants:
//! - `plan` answers `Incremental` only when the facts prove that the WAL still holds every frame
//!   committed since the position: the same generation with the frame before the position intact,
//!   or exactly one restart that our own complete checkpoint allowed while our read transaction
//!   pinned the WAL (read mark 0 forbids a second), or a database file untouched since the
//!   checkpoint at the last stop. Any other case is a snapshot with the reason stated.
//! - `checkpoint_mode` never asks for a checkpoint before the position exists, nor again once
//!   everything up to it is backfilled.

use std::time::{Duration, Instant};

use crate::config::ResolvedConfig;
use crate::state::Position;
use crate::wal::Resume;
use crate::wal_index::WalIndexHeader;

/// Retry backoff after a failed cycle: doubles from the first value to the cap (Litestream: 5 min).
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How the next L0 file is produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Continue the WAL from a proven position.
    Incremental(Resume),
    /// Full database image at the next TXID.
    Snapshot { reason: String },
}

impl Plan {
    fn snapshot(reason: &str) -> Plan {
        Plan::Snapshot {
            reason: reason.into(),
        }
    }
}

/// What the replicator knows when it plans the next file.
#[derive(Clone, Copy, Debug)]
pub struct PlanFacts<'a> {
    /// Our position in the replica (None: not proven; the next file is a snapshot).
    pub pos: Option<&'a Position>,
    /// The database's page size.
    pub page_size: u32,
    /// The WAL header's page size and salts (None: no WAL, or no valid header).
    pub wal_header: Option<(u32, (u32, u32))>,
    /// The frame just before `pos.wal.end` still carries the position's salts and checksum (true
    /// when there is no such frame to check).
    pub prev_frame_intact: bool,
    /// Our read transaction has pinned the WAL without a gap since `pos` was uploaded.
    pub pinned: bool,
    /// The database file still has the identity recorded at the last stop's checkpoint.
    pub db_unchanged_since_stop: bool,
}

/// Decide where to continue reading (litestream-format.md §3.6, with our own checkpoints and read
/// mark used to prove that at most one restart happened).
pub fn plan(f: &PlanFacts<'_>) -> Plan {
    let Some(pos) = f.pos else {
        return Plan::snapshot("no continuous position in the replica");
    };
    let resume_at = Resume::At {
        offset: pos.wal.end,
        salt1: pos.wal.salt1,
        salt2: pos.wal.salt2,
    };
    // Nothing was lost since the position if everything before it was checkpointed by us with
    // writers held off — or there was no WAL at it — and we have been pinned since: our read
    // transaction then sits on read mark 0, which forbids any further backfill. Or: the database
    // file is exactly as it was when everything was checkpointed at the last stop, so nothing was
    // backfilled since and no generation can have come and gone.
    let nothing_lost_since = (f.pinned && (pos.backfilled || pos.wal.is_empty()))
        || (pos.backfilled && f.db_unchanged_since_stop);
    let Some((wal_page_size, salts)) = f.wal_header else {
        // No valid WAL header: the WAL is empty (a commit writes the header first). Nothing is
        // new only if the database file is known to equal the replica; otherwise a connection may
        // have checkpointed commits we never saw and then deleted or truncated the WAL.
        return if nothing_lost_since {
            Plan::Incremental(resume_at)
        } else {
            Plan::snapshot("the WAL was emptied by a checkpoint the replicator did not see")
        };
    };
    if wal_page_size != f.page_size {
        return Plan::snapshot("the WAL page size changed");
    }
    if salts == (pos.wal.salt1, pos.wal.salt2) {
        // Same WAL generation: the frame before our end must still be the one we read.
        return if f.prev_frame_intact {
            Plan::Incremental(resume_at)
        } else {
            Plan::snapshot("the WAL was overwritten behind the replicator")
        };
    }
    // New salts: the WAL restarted (or appeared); this generation is the only one since, and it
    // is still whole, when nothing can have been lost. (The header's checkpoint sequence cannot
    // prove this: SQLite keeps that counter per connection.)
    if nothing_lost_since {
        Plan::Incremental(Resume::FromStart)
    } else {
        Plan::snapshot("the WAL restarted without a checkpoint the replicator could account for")
    }
}

/// A checkpoint of ours. Every kind runs with writers held off by the barrier connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    Passive,
    /// PASSIVE, then shrink the WAL file.
    Truncate,
}

/// The checkpoint policy, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub min_page_count: u32,
    pub interval: Option<Duration>,
    pub truncate_page_n: Option<u32>,
}

impl CheckpointPolicy {
    pub fn from_config(cfg: &ResolvedConfig) -> CheckpointPolicy {
        CheckpointPolicy {
            min_page_count: cfg.min_checkpoint_page_count,
            interval: cfg.checkpoint_interval,
            truncate_page_n: cfg.truncate_page_n,
        }
    }

    fn interval_elapsed(&self, since_last: Duration) -> bool {
        self.interval.is_some_and(|i| since_last >= i)
    }

    fn truncate_due(&self, frames: u64) -> bool {
        self.truncate_page_n.is_some_and(|n| frames >= n as u64)
    }
}

/// What the replicator knows when it considers a checkpoint after a cycle.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointFacts {
    /// Frames in the WAL up to our position.
    pub frames: u64,
    /// Everything up to the position is already in the database file.
    pub backfilled: bool,
    /// A hooked writer waits for the WAL to shrink.
    pub pressured: bool,
    pub since_last: Duration,
    /// Something was uploaded since the last checkpoint.
    pub synced_since: bool,
}

/// Which checkpoint (if any) the replicator runs after a cycle that reached its position.
pub fn checkpoint_mode(policy: &CheckpointPolicy, f: &CheckpointFacts) -> Option<CheckpointMode> {
    if f.backfilled {
        // The WAL's next writer restarts it; checkpointing again would only take the write lock
        // for nothing.
        return None;
    }
    let interval_due = policy.interval_elapsed(f.since_last) && f.synced_since && f.frames > 1;
    if policy.truncate_due(f.frames) {
        Some(CheckpointMode::Truncate)
    } else if f.frames >= policy.min_page_count as u64 || f.pressured || interval_due {
        Some(CheckpointMode::Passive)
    } else {
        None
    }
}

/// How a due checkpoint runs (see `checkpoint::checkpoint_if_needed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointRoute {
    /// With the write lock; `defer_if_busy`: give up if commits slipped in before the lock.
    Locked { defer_if_busy: bool },
    /// A PASSIVE one beside the writers; `ask_pause`: and ask the next hooked commit to wait.
    Unlocked { ask_pause: bool },
}

/// Below `max_deferred` bytes of WAL, with no hooked writer waiting, a PASSIVE checkpoint that
/// finds commits made since the upload runs without the write lock (taking it would only find
/// them and give up), and past `restart_at` asks for the pause that lets the WAL restart. With a
/// writer waiting (the pause), a TRUNCATE, or past `max_deferred`: the lock.
pub fn checkpoint_route(
    mode: CheckpointMode,
    wal_in_use: u64,
    writer_waiting: bool,
    commits_since_upload: bool,
    max_deferred: u64,
    restart_at: u64,
) -> CheckpointRoute {
    let defer_if_busy = wal_in_use < max_deferred;
    if defer_if_busy && !writer_waiting && mode == CheckpointMode::Passive && commits_since_upload {
        CheckpointRoute::Unlocked {
            ask_pause: wal_in_use >= restart_at,
        }
    } else {
        CheckpointRoute::Locked { defer_if_busy }
    }
}

/// What a hooked commit that leaves `wal_frames` frames in the WAL does, `uploaded_frames` of
/// them in the replica (counted in the generation they belong to: more than `wal_frames` means
/// the WAL restarted since, and none is): `step` is how many `catch_up_bytes` the WAL holds (kept
/// for the next commit), `catch_up` whether it crossed into a new one (start a cycle now), `wait`
/// whether the writer waits for a checkpoint (backpressure on what is not uploaded, or a pause
/// asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitPressure {
    pub step: u64,
    pub catch_up: bool,
    pub wait: bool,
}

pub fn commit_pressure(
    wal_frames: u64,
    uploaded_frames: u64,
    frame_size: u64,
    last_step: u64,
    pause_asked: bool,
    catch_up_bytes: u64,
    backpressure_bytes: u64,
) -> CommitPressure {
    let step = wal_frames * frame_size / catch_up_bytes;
    let pending = match wal_frames.checked_sub(uploaded_frames) {
        Some(beyond) => beyond,
        None => wal_frames,
    };
    CommitPressure {
        step,
        catch_up: step > last_step,
        wait: pending * frame_size >= backpressure_bytes || pause_asked,
    }
}

/// The SQLite checkpoint a standby runs for a database nobody else on this host replicates
/// (`PRAGMA wal_checkpoint(<mode>)`), given the WAL's frame count.
pub fn standby_checkpoint_mode(
    policy: &CheckpointPolicy,
    frames: u64,
    since_last: Duration,
) -> Option<&'static str> {
    if policy.truncate_due(frames) {
        Some("TRUNCATE")
    } else if frames >= policy.min_page_count as u64 || policy.interval_elapsed(since_last) {
        Some("PASSIVE")
    } else {
        None
    }
}

/// What the replicator thread, waiting between cycles, knows.
#[derive(Clone, Copy, Debug)]
pub struct WaitFacts {
    pub now: Instant,
    pub stop_requested: bool,
    /// The lease changed role or error (only counted when a lease is in use).
    pub lease_changed: bool,
    /// A sync request not yet attempted, or a writer under backpressure.
    pub sync_wanted: bool,
    /// A level-9 snapshot is asked for.
    pub level9_wanted: bool,
    /// The first hooked commit not yet covered by a cycle.
    pub dirty_since: Option<Instant>,
    pub sync_interval: Duration,
    /// When the WAL is next polled for commits of connections without the hook.
    pub next_poll: Instant,
    /// While backing off after an error: when to try again.
    pub retry_at: Option<Instant>,
    /// While our read transaction pins the WAL: when to look for a checkpoint of another
    /// connection that waits for it.
    pub probe_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Run the final sync and stop.
    Stop,
    /// Go back to the lease gate.
    LeaseChanged,
    /// Run a cycle now.
    Cycle,
    /// Look for a checkpoint of another connection waiting for our read transaction.
    Probe,
    /// Nothing to do before this instant (or an event).
    SleepUntil(Instant),
}

/// What to do next. While backing off, only an explicit request (sync, backpressure, level 9)
/// bypasses the wait.
pub fn wake(f: &WaitFacts) -> Wake {
    if f.stop_requested {
        return Wake::Stop;
    }
    if f.lease_changed {
        return Wake::LeaseChanged;
    }
    if f.sync_wanted || f.level9_wanted {
        return Wake::Cycle;
    }
    let due = match f.retry_at {
        Some(retry) => retry,
        None => {
            let commit_due = f.dirty_since.map(|t| t + f.sync_interval);
            commit_due.map_or(f.next_poll, |c| c.min(f.next_poll))
        }
    };
    if f.now >= due {
        return Wake::Cycle;
    }
    match f.probe_at {
        Some(p) if f.now >= p => Wake::Probe,
        Some(p) => Wake::SleepUntil(due.min(p)),
        None => Wake::SleepUntil(due),
    }
}

/// A cycle woken only by the poll timer (no hooked commit, no request, no retry) can be skipped
/// when the wal-index header is the one the last successful cycle ended on — no connection of
/// any process has committed (every commit moves `iChange`) or checkpointed since — and no
/// checkpoint is due. A thousand idle databases then cost a memory read each per poll instead of
/// a cycle each.
pub fn skip_idle_poll(f: &WaitFacts, wal_unchanged: bool, checkpoint_due: bool) -> bool {
    let poll_only =
        !f.sync_wanted && !f.level9_wanted && f.dirty_since.is_none() && f.retry_at.is_none();
    poll_only && wal_unchanged && !checkpoint_due
}

/// What a release of our read transaction, let go so that another connection's blocking
/// checkpoint could finish, proved about the WAL: `before` was read with everything up to the
/// position uploaded, `after` once the read transaction was taken again; `new_generation_commits`
/// counts the commits in the WAL from its start (when it is a generation other than `before`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YieldOutcome {
    /// Nothing committed since the position can be missing from the WAL: as good as pinned.
    pub pinned: bool,
    /// And every frame up to the position is in the database file.
    pub backfilled: bool,
}

/// Whether the wal-index shows every frame up to `pos` — and none after it — already in the
/// database file: a checkpoint of another connection (or of SQLite's auto-checkpoint before the
/// hook was installed) backfilled exactly what the position covers. Then the position counts as
/// backfilled, as after our own checkpoint: while our read transaction pins the WAL, the WAL can
/// restart only over frames the position covers (on read mark 0 nothing can be backfilled
/// further; on a read mark of 1 or more it cannot restart at all). Without this, a writer that restarted such a WAL cost a full snapshot
/// (the first commit after a start whose database had been auto-checkpointed).
pub fn backfilled_by_wal_index(pos: &Position, idx: &WalIndexHeader, page_size: u32) -> bool {
    let frame = 24 + page_size as u64;
    idx.salts == (pos.wal.salt1, pos.wal.salt2)
        && pos.wal.end > 32
        && 32 + idx.backfilled as u64 * frame == pos.wal.end
}

pub fn after_yield(
    before: &WalIndexHeader,
    after: Option<&WalIndexHeader>,
    new_generation_commits: Option<u64>,
) -> YieldOutcome {
    let unproven = YieldOutcome {
        pinned: false,
        backfilled: false,
    };
    let Some(after) = after else { return unproven };
    let restarted_once = after.salts.0 == before.salts.0.wrapping_add(1);
    if after.change == before.change {
        // No commit at all: the database is still the position's state, whatever the checkpoint
        // did to the WAL. A restart (new salts) happens only once everything was backfilled.
        return YieldOutcome {
            pinned: true,
            backfilled: after.salts != before.salts || after.fully_backfilled(),
        };
    }
    // Commits came in. They are all still in the WAL if the WAL restarted exactly once (salt 1
    // counts restarts) and its new generation holds exactly as many commits as the counter moved:
    // then none landed in the old generation after the position.
    let moved = after.change.wrapping_sub(before.change) as u64;
    if restarted_once && new_generation_commits == Some(moved) {
        return YieldOutcome {
            pinned: true,
            backfilled: true,
        };
    }
    // Otherwise only the WAL can tell (same generation: `plan` checks continuity).
    unproven
}

/// The delay before retrying after a failed cycle, given the previous one.
pub fn next_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(BACKOFF_START, |d| (d * 2).min(BACKOFF_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_route_goes_without_the_lock_only_when_taking_it_would_be_for_nothing() {
        const MIB: u64 = 1 << 20;
        let route = |mode, in_use, waiting, slipped| {
            checkpoint_route(mode, in_use * MIB, waiting, slipped, 48 * MIB, 16 * MIB)
        };
        let passive = CheckpointMode::Passive;
        // Nothing new since the upload: the complete checkpoint, with the lock.
        assert_eq!(
            route(passive, 8, false, false),
            CheckpointRoute::Locked {
                defer_if_busy: true
            }
        );
        // Commits since: beside the writers; past 16 MiB also ask for the pause.
        assert_eq!(
            route(passive, 8, false, true),
            CheckpointRoute::Unlocked { ask_pause: false }
        );
        assert_eq!(
            route(passive, 16, false, true),
            CheckpointRoute::Unlocked { ask_pause: true }
        );
        // The pause itself (a writer waits): the lock, even if another writer slipped in.
        assert_eq!(
            route(passive, 20, true, true),
            CheckpointRoute::Locked {
                defer_if_busy: true
            }
        );
        // Past the deferral size (a writer without the hook): the lock, uploading under it.
        assert_eq!(
            route(passive, 48, false, true),
            CheckpointRoute::Locked {
                defer_if_busy: false
            }
        );
        // TRUNCATE needs the lock.
        assert_eq!(
            route(CheckpointMode::Truncate, 8, false, true),
            CheckpointRoute::Locked {
                defer_if_busy: true
            }
        );
    }

    #[test]
    fn commit_pressure_pokes_once_per_step_and_waits_when_asked_or_past_the_bound() {
        const MIB: u64 = 1 << 20;
        // Frames of 1 MiB, to count in MiB.
        let at = |wal, uploaded, last, asked| {
            commit_pressure(wal, uploaded, MIB, last, asked, 16 * MIB, 48 * MIB)
        };
        let quiet = at(15, 0, 0, false);
        assert_eq!((quiet.step, quiet.catch_up, quiet.wait), (0, false, false));
        let crossed = at(16, 0, 0, false);
        assert_eq!(
            (crossed.step, crossed.catch_up, crossed.wait),
            (1, true, false)
        );
        // The next commit in the same step does not poke again.
        assert!(!at(17, 0, 1, false).catch_up);
        // After a restart the step goes down, and the next crossing pokes again.
        assert_eq!(at(1, 40, 2, false).step, 0);
        assert!(at(30, 30, 1, true).wait);
        // Backpressure counts what is not uploaded: the frames past the upload, or all of a
        // WAL that restarted since (fewer frames than uploaded).
        assert!(at(48, 0, 2, false).wait);
        assert!(!at(47, 0, 2, false).wait);
        assert!(!at(90, 50, 5, false).wait);
        assert!(at(100, 50, 6, false).wait);
        assert!(at(48, 60, 3, false).wait);
    }

    use crate::state::WalPosition;

    const SALTS: (u32, u32) = (7, 9);

    fn pos(backfilled: bool) -> Position {
        Position {
            txid: 5,
            page_size: 4096,
            commit: 3,
            wal: WalPosition {
                end: 32 + 2 * (24 + 4096),
                salt1: SALTS.0,
                salt2: SALTS.1,
                checkpoint_seq: 0,
                frame_checksum: (1, 2),
            },
            backfilled,
            db_stamp: None,
        }
    }

    fn facts(p: &Position) -> PlanFacts<'_> {
        PlanFacts {
            pos: Some(p),
            page_size: 4096,
            wal_header: Some((4096, SALTS)),
            prev_frame_intact: true,
            pinned: true,
            db_unchanged_since_stop: false,
        }
    }

    fn is_snapshot(p: Plan, why: &str) -> bool {
        matches!(p, Plan::Snapshot { reason } if reason.contains(why))
    }

    #[test]
    fn no_position_means_snapshot() {
        let p = pos(false);
        let f = PlanFacts {
            pos: None,
            ..facts(&p)
        };
        assert!(is_snapshot(plan(&f), "no continuous position"));
    }

    #[test]
    fn same_generation_continues_only_if_the_previous_frame_is_intact() {
        let p = pos(false);
        let f = facts(&p);
        assert_eq!(
            plan(&f),
            Plan::Incremental(Resume::At {
                offset: p.wal.end,
                salt1: 7,
                salt2: 9
            })
        );
        let torn = PlanFacts {
            prev_frame_intact: false,
            ..f
        };
        assert!(is_snapshot(plan(&torn), "overwritten"));
        let other_page_size = PlanFacts {
            wal_header: Some((1024, SALTS)),
            ..f
        };
        assert!(is_snapshot(plan(&other_page_size), "page size"));
    }

    #[test]
    fn a_restart_is_accepted_only_after_our_checkpoint_while_pinned() {
        let restarted = |p: &Position, pinned: bool, unchanged: bool| {
            let f = PlanFacts {
                wal_header: Some((4096, (8, 1))),
                pinned,
                db_unchanged_since_stop: unchanged,
                ..facts(p)
            };
            plan(&f)
        };
        let backfilled = pos(true);
        let not_backfilled = pos(false);
        assert_eq!(
            restarted(&backfilled, true, false),
            Plan::Incremental(Resume::FromStart)
        );
        // Unpinned: a second restart may have discarded frames.
        assert!(is_snapshot(
            restarted(&backfilled, false, false),
            "restarted without a checkpoint"
        ));
        // Our checkpoint did not cover the position.
        assert!(is_snapshot(
            restarted(&not_backfilled, true, false),
            "restarted"
        ));
        // The database file untouched since the checkpoint at the last stop.
        assert_eq!(
            restarted(&backfilled, false, true),
            Plan::Incremental(Resume::FromStart)
        );
        assert!(is_snapshot(
            restarted(&not_backfilled, false, true),
            "restarted"
        ));
    }

    #[test]
    fn a_restart_from_no_wal_at_the_position_is_accepted_while_pinned() {
        let mut p = pos(false);
        p.wal = WalPosition {
            end: 32,
            salt1: 0,
            salt2: 0,
            checkpoint_seq: 0,
            frame_checksum: (0, 0),
        };
        let f = PlanFacts {
            wal_header: Some((4096, SALTS)),
            ..facts(&p)
        };
        assert_eq!(plan(&f), Plan::Incremental(Resume::FromStart));
        let unpinned = PlanFacts { pinned: false, ..f };
        assert!(is_snapshot(plan(&unpinned), "restarted"));
    }

    #[test]
    fn an_emptied_wal_is_trusted_only_with_proof() {
        let backfilled = pos(true);
        let f = PlanFacts {
            wal_header: None,
            ..facts(&backfilled)
        };
        assert!(matches!(plan(&f), Plan::Incremental(Resume::At { .. })));
        let unpinned = PlanFacts { pinned: false, ..f };
        assert!(is_snapshot(plan(&unpinned), "emptied"));
        let stamped = PlanFacts {
            db_unchanged_since_stop: true,
            ..unpinned
        };
        assert!(matches!(plan(&stamped), Plan::Incremental(_)));
        let p = pos(false);
        let not_backfilled = PlanFacts {
            wal_header: None,
            ..facts(&p)
        };
        assert!(is_snapshot(plan(&not_backfilled), "emptied"));
    }

    fn policy() -> CheckpointPolicy {
        CheckpointPolicy {
            min_page_count: 1000,
            interval: Some(Duration::from_secs(60)),
            truncate_page_n: Some(121_359),
        }
    }

    fn ckpt(frames: u64) -> CheckpointFacts {
        CheckpointFacts {
            frames,
            backfilled: false,
            pressured: false,
            since_last: Duration::from_secs(1),
            synced_since: true,
        }
    }

    #[test]
    fn checkpoint_thresholds() {
        let p = policy();
        assert_eq!(checkpoint_mode(&p, &ckpt(10)), None);
        assert_eq!(
            checkpoint_mode(&p, &ckpt(1000)),
            Some(CheckpointMode::Passive)
        );
        assert_eq!(
            checkpoint_mode(&p, &ckpt(121_359)),
            Some(CheckpointMode::Truncate)
        );
        let pressured = CheckpointFacts {
            pressured: true,
            ..ckpt(10)
        };
        assert_eq!(
            checkpoint_mode(&p, &pressured),
            Some(CheckpointMode::Passive)
        );
        let done = CheckpointFacts {
            backfilled: true,
            ..ckpt(200_000)
        };
        assert_eq!(checkpoint_mode(&p, &done), None);
        let no_truncate = CheckpointPolicy {
            truncate_page_n: None,
            ..p
        };
        assert_eq!(
            checkpoint_mode(&no_truncate, &ckpt(200_000)),
            Some(CheckpointMode::Passive)
        );
    }

    #[test]
    fn interval_checkpoints_need_new_uploads_and_more_than_one_frame() {
        let p = policy();
        let due = CheckpointFacts {
            since_last: Duration::from_secs(61),
            ..ckpt(2)
        };
        assert_eq!(checkpoint_mode(&p, &due), Some(CheckpointMode::Passive));
        let nothing_new = CheckpointFacts {
            synced_since: false,
            ..due
        };
        assert_eq!(checkpoint_mode(&p, &nothing_new), None);
        let one_frame = CheckpointFacts { frames: 1, ..due };
        assert_eq!(checkpoint_mode(&p, &one_frame), None);
        let off = CheckpointPolicy {
            interval: None,
            ..p
        };
        assert_eq!(checkpoint_mode(&off, &due), None);
    }

    #[test]
    fn standby_checkpoints() {
        let p = policy();
        let s = Duration::from_secs(1);
        assert_eq!(standby_checkpoint_mode(&p, 10, s), None);
        assert_eq!(standby_checkpoint_mode(&p, 1000, s), Some("PASSIVE"));
        assert_eq!(standby_checkpoint_mode(&p, 130_000, s), Some("TRUNCATE"));
        assert_eq!(
            standby_checkpoint_mode(&p, 10, Duration::from_secs(61)),
            Some("PASSIVE")
        );
    }

    fn waiting(now: Instant) -> WaitFacts {
        WaitFacts {
            now,
            stop_requested: false,
            lease_changed: false,
            sync_wanted: false,
            level9_wanted: false,
            dirty_since: None,
            sync_interval: Duration::from_secs(1),
            next_poll: now + Duration::from_secs(1),
            retry_at: None,
            probe_at: None,
        }
    }

    #[test]
    fn idle_polls_are_skipped_only_when_nothing_can_be_new() {
        let now = Instant::now();
        let idle = waiting(now);
        assert!(skip_idle_poll(&idle, true, false));
        assert!(!skip_idle_poll(&idle, false, false), "the WAL moved");
        assert!(!skip_idle_poll(&idle, true, true), "a checkpoint is due");
        for busy in [
            WaitFacts {
                sync_wanted: true,
                ..idle
            },
            WaitFacts {
                level9_wanted: true,
                ..idle
            },
            WaitFacts {
                dirty_since: Some(now),
                ..idle
            },
            WaitFacts {
                retry_at: Some(now),
                ..idle
            },
        ] {
            assert!(!skip_idle_poll(&busy, true, false), "{busy:?}");
        }
    }

    #[test]
    fn wake_order_and_deadlines() {
        let now = Instant::now();
        let idle = waiting(now);
        assert_eq!(wake(&idle), Wake::SleepUntil(idle.next_poll));
        let stop = WaitFacts {
            stop_requested: true,
            lease_changed: true,
            ..idle
        };
        assert_eq!(wake(&stop), Wake::Stop);
        let lease = WaitFacts {
            lease_changed: true,
            sync_wanted: true,
            ..idle
        };
        assert_eq!(wake(&lease), Wake::LeaseChanged);
        let sync = WaitFacts {
            sync_wanted: true,
            ..idle
        };
        assert_eq!(wake(&sync), Wake::Cycle);
        // A commit is uploaded one interval after it was noticed, if that is before the poll.
        let dirty = WaitFacts {
            dirty_since: Some(now - Duration::from_millis(400)),
            ..idle
        };
        assert_eq!(
            wake(&dirty),
            Wake::SleepUntil(now + Duration::from_millis(600))
        );
        let overdue = WaitFacts {
            dirty_since: Some(now - Duration::from_secs(2)),
            ..idle
        };
        assert_eq!(wake(&overdue), Wake::Cycle);
    }

    #[test]
    fn probes_come_after_due_cycles() {
        let now = Instant::now();
        let soon = now + Duration::from_millis(10);
        let idle = WaitFacts {
            probe_at: Some(soon),
            ..waiting(now)
        };
        assert_eq!(wake(&idle), Wake::SleepUntil(soon));
        let due = WaitFacts {
            probe_at: Some(now),
            ..idle
        };
        assert_eq!(wake(&due), Wake::Probe);
        let cycle_too = WaitFacts {
            sync_wanted: true,
            ..due
        };
        assert_eq!(wake(&cycle_too), Wake::Cycle);
    }

    fn index(change: u32, salts: (u32, u32), max_frame: u32, backfilled: u32) -> WalIndexHeader {
        WalIndexHeader {
            change,
            max_frame,
            page_count: 3,
            salts,
            backfilled,
        }
    }

    #[test]
    fn a_position_is_backfilled_when_the_wal_index_backfilled_exactly_it() {
        let p = pos(false); // two frames
        assert!(backfilled_by_wal_index(&p, &index(3, SALTS, 2, 2), 4096));
        // More frames after the position, not backfilled: still exactly it.
        assert!(backfilled_by_wal_index(&p, &index(3, SALTS, 5, 2), 4096));
        // Less, or more than the position (frames we did not upload would go on a restart).
        assert!(!backfilled_by_wal_index(&p, &index(3, SALTS, 2, 1), 4096));
        assert!(!backfilled_by_wal_index(&p, &index(3, SALTS, 5, 3), 4096));
        // Another generation, or no frame at all.
        assert!(!backfilled_by_wal_index(&p, &index(3, (8, 1), 2, 2), 4096));
        let empty = Position {
            wal: WalPosition { end: 32, ..p.wal },
            ..p
        };
        assert!(!backfilled_by_wal_index(
            &empty,
            &index(3, SALTS, 0, 0),
            4096
        ));
    }

    #[test]
    fn a_yield_is_proven_safe_by_the_commit_counter() {
        let before = index(10, (5, 9), 40, 12);
        // Nothing committed; the checkpoint backfilled everything (FULL) or restarted (RESTART,
        // TRUNCATE).
        let full = index(10, (5, 9), 40, 40);
        assert_eq!(
            after_yield(&before, Some(&full), None),
            YieldOutcome {
                pinned: true,
                backfilled: true
            }
        );
        let truncated = index(10, (6, 77), 0, 0);
        assert_eq!(
            after_yield(&before, Some(&truncated), None),
            YieldOutcome {
                pinned: true,
                backfilled: true
            }
        );
        let partial = index(10, (5, 9), 40, 30);
        assert_eq!(
            after_yield(&before, Some(&partial), None),
            YieldOutcome {
                pinned: true,
                backfilled: false
            }
        );
        // Two commits, both in the one new generation.
        let restarted = index(12, (6, 3), 4, 0);
        assert!(after_yield(&before, Some(&restarted), Some(2)).pinned);
        // One of them went to the old generation (and was backfilled away): unproven.
        assert!(!after_yield(&before, Some(&restarted), Some(1)).pinned);
        // Two restarts: unproven.
        let twice = index(12, (7, 3), 4, 0);
        assert!(!after_yield(&before, Some(&twice), Some(2)).pinned);
        // Same generation with commits: left to `plan`.
        let appended = index(12, (5, 9), 44, 12);
        assert!(!after_yield(&before, Some(&appended), None).pinned);
        assert!(!after_yield(&before, None, None).pinned);
    }

    #[test]
    fn backoff_holds_off_commits_but_not_requests() {
        let now = Instant::now();
        let retry = now + Duration::from_secs(4);
        let backing_off = WaitFacts {
            retry_at: Some(retry),
            dirty_since: Some(now - Duration::from_secs(10)),
            next_poll: now,
            ..waiting(now)
        };
        assert_eq!(wake(&backing_off), Wake::SleepUntil(retry));
        let asked = WaitFacts {
            sync_wanted: true,
            ..backing_off
        };
        assert_eq!(wake(&asked), Wake::Cycle);
        assert_eq!(next_backoff(None), BACKOFF_START);
        assert_eq!(
            next_backoff(Some(Duration::from_secs(4))),
            Duration::from_secs(8)
        );
        assert_eq!(next_backoff(Some(BACKOFF_MAX)), BACKOFF_MAX);
    }
}
