//! The follower's decisions, as pure functions of what it observed: which replica file to apply
//! next, whether a saved position still describes the local database, when to checkpoint.
//!
//! Invariants:
//! - `next_file` only offers a file that starts at or before the first TXID not yet applied and
//!   ends after it: applying the final page images of TXIDs `a..=b` (a ≤ applied + 1) to the
//!   state at `applied` gives exactly the state at `b`, because every page changed after
//!   `applied` is in the file. Anything that cannot be continued is `Gap` (a full image).
//! - `position_proven` accepts a position only when the wal-index ends exactly at it (same
//!   generation, same frame count, same cumulative checksum, same size: nothing committed
//!   after it), or when the WAL is empty and the database file is byte-for-byte the one stamped
//!   right after a complete checkpoint at that position.

use crate::replica_client::LtxFileInfo;
use crate::state::{DbStamp, Position};
use crate::wal;

/// What to do next to move the local database towards the replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextFile {
    /// Apply this file (as one commit).
    Apply(LtxFileInfo),
    /// Nothing in the listing goes past the applied TXID.
    CaughtUp,
    /// The replica has later TXIDs, but no file continues from the applied one (compacted or
    /// deleted): only a full image can catch up.
    Gap,
}

/// The next file after `applied`, from listings `levels[level]`. A level-0 file starting right
/// after `applied` is preferred (one commit per primary transaction, the smallest download);
/// otherwise the file that reaches furthest among those that continue `applied`.
pub fn next_file(levels: &[Vec<LtxFileInfo>], applied: u64) -> NextFile {
    let next = applied + 1;
    if let Some(f) = levels
        .first()
        .and_then(|l0| l0.iter().find(|f| f.min_txid == next))
    {
        return NextFile::Apply(f.clone());
    }
    let best = levels
        .iter()
        .flatten()
        .filter(|f| f.min_txid <= next && f.max_txid >= next)
        .max_by(|a, b| {
            a.max_txid
                .cmp(&b.max_txid)
                .then(b.level.cmp(&a.level))
                .then(b.min_txid.cmp(&a.min_txid))
        });
    match best {
        Some(f) => NextFile::Apply(f.clone()),
        None if levels.iter().flatten().any(|f| f.max_txid > applied) => NextFile::Gap,
        None => NextFile::CaughtUp,
    }
}

/// The replica's highest TXID in the listings.
pub fn max_txid(levels: &[Vec<LtxFileInfo>]) -> u64 {
    levels
        .iter()
        .flatten()
        .map(|f| f.max_txid)
        .max()
        .unwrap_or(0)
}

/// What the wal-index says now (read with the write lock held).
#[derive(Clone, Copy, Debug)]
pub struct LocalFacts {
    pub page_size: u32,
    pub max_frame: u32,
    pub n_page: u32,
    pub salts: (u32, u32),
    pub frame_checksum: (u32, u32),
    /// Identity of the database file now.
    pub db_stamp: Option<DbStamp>,
}

/// Whether `pos` still describes the local database exactly (see the module invariants).
pub fn position_proven(pos: &Position, now: &LocalFacts) -> bool {
    if pos.page_size != now.page_size {
        return false;
    }
    if now.max_frame == 0 {
        return pos.backfilled && pos.db_stamp.is_some() && pos.db_stamp == now.db_stamp;
    }
    let end = wal::WAL_HEADER_SIZE + now.max_frame as u64 * wal::frame_size(now.page_size);
    pos.wal.end == end
        && (pos.wal.salt1, pos.wal.salt2) == now.salts
        && pos.wal.frame_checksum == now.frame_checksum
        && pos.commit == now.n_page
}

/// What a standby period does about following, and about the gate (the WAL write lock taken
/// at `litestream_start()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandbyAction {
    /// Run a follower step (the follower adopts the gate).
    Follow,
    /// Let go of the gate: writes are accepted as without a follower.
    OpenGate,
    /// Keep the gate (the role is not known yet), or there is none.
    Wait,
}

/// What a standby knows about its role.
#[derive(Clone, Copy, Debug)]
pub struct StandbyFacts {
    /// No other process on this host replicates the file (this one talks to S3).
    pub local_claim: bool,
    /// The lease is known to be held by another instance.
    pub another_holds: bool,
    /// The lease answered (or a same-host sibling was found).
    pub resolved: bool,
    /// The holder is the instance that last replicated this very file.
    pub predecessor: bool,
    pub following: bool,
    /// How long the gate has been held, if it is.
    pub gate_held_for: Option<std::time::Duration>,
    pub gate_max: std::time::Duration,
}

/// Follow only as the host's replicator of the file, standby of another instance than this
/// file's own predecessor (which makes this database the replica's source, not a standby);
/// otherwise open the gate once the role is known, or after `gate_max` without an answer.
pub fn standby_action(f: &StandbyFacts) -> StandbyAction {
    if f.local_claim && !f.predecessor && (f.following || f.another_holds) {
        return StandbyAction::Follow;
    }
    match f.gate_held_for {
        Some(held) if (f.resolved && (!f.local_claim || f.predecessor)) || held > f.gate_max => {
            StandbyAction::OpenGate
        }
        _ => StandbyAction::Wait,
    }
}

/// How the follower keeps its WAL bounded after applying, given the frames in it and whether a
/// checkpoint has copied all of them into the database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    None,
    /// Copy frames into the database file (needs no write lock: runs while we hold it).
    Passive,
    /// Everything is copied: restart the WAL (SQLite's TRUNCATE, which needs the write lock for
    /// a moment).
    Truncate,
}

pub fn checkpoint(frames: u32, backfilled: u32, min_frames: u32) -> Checkpoint {
    if frames == 0 || frames < min_frames {
        Checkpoint::None
    } else if backfilled >= frames {
        Checkpoint::Truncate
    } else {
        Checkpoint::Passive
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::state::WalPosition;

    fn f(level: u8, min: u64, max: u64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 100,
            created_at: SystemTime::UNIX_EPOCH,
            key: format!("{level}/{min}-{max}"),
        }
    }

    #[test]
    fn prefers_the_next_level0_file() {
        let levels = vec![
            vec![f(0, 5, 5), f(0, 6, 6)],
            vec![f(1, 1, 6)],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![f(9, 1, 4)],
        ];
        assert_eq!(next_file(&levels, 4), NextFile::Apply(f(0, 5, 5)));
        assert_eq!(next_file(&levels, 5), NextFile::Apply(f(0, 6, 6)));
        assert_eq!(next_file(&levels, 6), NextFile::CaughtUp);
        // L0 starts later than needed: the compacted file that overlaps continues it.
        assert_eq!(next_file(&levels, 2), NextFile::Apply(f(1, 1, 6)));
        assert_eq!(next_file(&levels, 0), NextFile::Apply(f(1, 1, 6)));
    }

    #[test]
    fn a_hole_is_a_gap() {
        let levels = vec![vec![f(0, 8, 8)], vec![f(1, 1, 3)]];
        assert_eq!(next_file(&levels, 3), NextFile::Gap);
        assert_eq!(next_file(&levels, 8), NextFile::CaughtUp);
        assert_eq!(max_txid(&levels), 8);
        assert_eq!(next_file(&[], 0), NextFile::CaughtUp);
    }

    fn pos(end: u64, backfilled: bool, stamp: Option<DbStamp>) -> Position {
        Position {
            txid: 9,
            page_size: 4096,
            commit: 7,
            wal: WalPosition {
                end,
                salt1: 1,
                salt2: 2,
                checkpoint_seq: 0,
                frame_checksum: (3, 4),
            },
            backfilled,
            db_stamp: stamp,
        }
    }

    fn facts(max_frame: u32, stamp: Option<DbStamp>) -> LocalFacts {
        LocalFacts {
            page_size: 4096,
            max_frame,
            n_page: 7,
            salts: (1, 2),
            frame_checksum: (3, 4),
            db_stamp: stamp,
        }
    }

    #[test]
    fn a_position_is_proven_only_by_an_exact_end() {
        let end = 32 + 5 * 4120;
        assert!(position_proven(&pos(end, false, None), &facts(5, None)));
        // One frame more: something was committed after it.
        assert!(!position_proven(&pos(end, false, None), &facts(6, None)));
        let mut other = facts(5, None);
        other.frame_checksum = (3, 5);
        assert!(!position_proven(&pos(end, false, None), &other));
        other = facts(5, None);
        other.salts = (1, 3);
        assert!(!position_proven(&pos(end, false, None), &other));
        other = facts(5, None);
        other.n_page = 8;
        assert!(!position_proven(&pos(end, false, None), &other));
    }

    #[test]
    fn an_empty_wal_is_proven_only_by_the_stamp() {
        let stamp = DbStamp {
            size: 4096,
            inode: 1,
            mtime_ns: 5,
        };
        let moved = DbStamp {
            mtime_ns: 6,
            ..stamp
        };
        assert!(position_proven(
            &pos(32, true, Some(stamp)),
            &facts(0, Some(stamp))
        ));
        assert!(!position_proven(
            &pos(32, true, Some(stamp)),
            &facts(0, Some(moved))
        ));
        assert!(!position_proven(
            &pos(32, false, Some(stamp)),
            &facts(0, Some(stamp))
        ));
        assert!(!position_proven(&pos(32, true, None), &facts(0, None)));
    }

    #[test]
    fn standby_follows_only_another_hosts_holder() {
        use std::time::Duration;
        let base = StandbyFacts {
            local_claim: true,
            another_holds: true,
            resolved: true,
            predecessor: false,
            following: false,
            gate_held_for: Some(Duration::from_millis(10)),
            gate_max: Duration::from_secs(5),
        };
        assert_eq!(standby_action(&base), StandbyAction::Follow);
        // Our own dead predecessor still holds the lease: the source waits, writes accepted.
        let own = StandbyFacts {
            predecessor: true,
            ..base
        };
        assert_eq!(standby_action(&own), StandbyAction::OpenGate);
        // A same-host sibling shares the file with the holder.
        let sibling = StandbyFacts {
            local_claim: false,
            ..base
        };
        assert_eq!(standby_action(&sibling), StandbyAction::OpenGate);
        // Not known yet: keep writes waiting, but not for ever.
        let unknown = StandbyFacts {
            another_holds: false,
            resolved: false,
            ..base
        };
        assert_eq!(standby_action(&unknown), StandbyAction::Wait);
        let late = StandbyFacts {
            gate_held_for: Some(Duration::from_secs(6)),
            ..unknown
        };
        assert_eq!(standby_action(&late), StandbyAction::OpenGate);
        // A follower keeps following through a lease hiccup.
        let hiccup = StandbyFacts {
            following: true,
            ..unknown
        };
        assert_eq!(standby_action(&hiccup), StandbyAction::Follow);
        let no_gate = StandbyFacts {
            gate_held_for: None,
            ..sibling
        };
        assert_eq!(standby_action(&no_gate), StandbyAction::Wait);
    }

    #[test]
    fn checkpoints_copy_then_restart() {
        assert_eq!(checkpoint(0, 0, 10), Checkpoint::None);
        assert_eq!(checkpoint(5, 0, 10), Checkpoint::None);
        assert_eq!(checkpoint(10, 3, 10), Checkpoint::Passive);
        assert_eq!(checkpoint(10, 10, 10), Checkpoint::Truncate);
    }
}
