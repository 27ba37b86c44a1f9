//! The replication position, and the small state file that carries it across restarts.
//!
//! A position says: TXID `txid` is in the replica, and it covers the WAL up to byte `end` of the
//! WAL generation identified by `salts` and `checkpoint_seq`; the frame just before `end` has the
//! cumulative checksum `frame_checksum` (SQLite's checksums chain through every frame since the
//! header, so a match proves the WAL up to `end` is the very one we read).
//!
//! Invariants:
//! - The state file is only a hint. It is trusted only when its replica and TXID equal what the
//!   replica itself says and the WAL still proves continuity; anything else means a full snapshot
//!   at the replica's next TXID — never a silent gap.
//! - Before an upload the file records the current position and the one the upload will make
//!   (`pending`); after it, just the new one. A crash between the upload and the second write
//!   leaves both, and the replica's max TXID says which one is true — so a restart after a crash
//!   mid-sync needs no snapshot.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the WAL stood when TXID `txid` was uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalPosition {
    /// Offset just past the last frame included in the replica (32 = no frames).
    pub end: u64,
    pub salt1: u32,
    pub salt2: u32,
    /// The WAL header's checkpoint sequence, for diagnosis only: SQLite keeps the counter per
    /// connection, so it proves nothing about restarts made by other connections.
    pub checkpoint_seq: u32,
    /// Cumulative checksum of the frame ending at `end` (the header's checksum when end == 32).
    pub frame_checksum: (u32, u32),
}

impl WalPosition {
    /// The position of a snapshot taken while there was no WAL (or only an invalid one).
    pub fn is_empty(&self) -> bool {
        self.end <= 32 && self.salt1 == 0 && self.salt2 == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub txid: u64,
    pub page_size: u32,
    /// Database size in pages at `txid`.
    pub commit: u32,
    pub wal: WalPosition,
    /// Every frame up to `wal.end` is in the database file, and was found so with our read
    /// transaction pinning the WAL (see `replicator` for why the next restart then cannot
    /// discard unseen frames).
    pub backfilled: bool,
    /// Identity of the database file taken right after that checkpoint, with writers held off
    /// (only at `litestream_stop()`); lets the next start accept a WAL that was deleted and
    /// recreated meanwhile, as long as the file did not change.
    #[serde(default)]
    pub db_stamp: Option<DbStamp>,
}

impl Position {
    /// Frames of its WAL generation the position covers.
    pub fn frames(&self) -> u64 {
        self.wal.end.saturating_sub(crate::wal::WAL_HEADER_SIZE)
            / crate::wal::frame_size(self.page_size)
    }
}

/// Size, inode and modification time of the database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStamp {
    pub size: u64,
    pub inode: u64,
    pub mtime_ns: i128,
}

impl DbStamp {
    pub fn of(path: &Path) -> std::io::Result<DbStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path)?;
        Ok(DbStamp {
            size: m.len(),
            inode: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }

    /// Take a stamp that any later write is guaranteed to change: file times come from a coarse
    /// kernel clock (a tick of a few ms), so wait until the clock has moved past the file's mtime —
    /// otherwise a write in the same tick would leave the stamp unchanged.
    pub fn take_settled(path: &Path) -> std::io::Result<DbStamp> {
        let stamp = DbStamp::of(path)?;
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let settle_ns: i128 = 20_000_000;
        if now_ns < stamp.mtime_ns + settle_ns {
            std::thread::sleep(std::time::Duration::from_nanos(
                (stamp.mtime_ns + settle_ns - now_ns).min(settle_ns) as u64,
            ));
        }
        Ok(stamp)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    replica: String,
    #[serde(default)]
    position: Option<Position>,
    #[serde(default)]
    pending: Option<Position>,
}

const STATE_VERSION: u32 = 1;

/// `<dir>/.<name>-litestream` — the directory Litestream also uses for a database's local state.
pub fn meta_dir(db_path: &Path) -> PathBuf {
    let name = db_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db_path.with_file_name(format!(".{name}-litestream"))
}

fn state_path(meta: &Path) -> PathBuf {
    meta.join("extension-state.json")
}

/// The saved positions (current and pending), if the file exists, parses, and belongs to
/// `replica`. The caller keeps the one whose TXID is the replica's max.
pub fn load(meta: &Path, replica: &str) -> Vec<Position> {
    let Some(state) = fs::read_to_string(state_path(meta))
        .ok()
        .and_then(|text| serde_json::from_str::<StateFile>(&text).ok())
    else {
        return Vec::new();
    };
    if state.version != STATE_VERSION || state.replica != replica {
        return Vec::new();
    }
    state.position.into_iter().chain(state.pending).collect()
}

/// Record `position`, and `pending` when an upload that would move to it is about to start.
pub fn save(
    meta: &Path,
    replica: &str,
    position: Option<&Position>,
    pending: Option<&Position>,
) -> std::io::Result<()> {
    fs::create_dir_all(meta)?;
    let path = state_path(meta);
    let tmp = path.with_extension("json.tmp");
    let state = StateFile {
        version: STATE_VERSION,
        replica: replica.to_string(),
        position: position.copied(),
        pending: pending.copied(),
    };
    fs::write(
        &tmp,
        serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?,
    )?;
    fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replica_check() {
        let dir = std::env::temp_dir().join(format!("ls-state-{}", std::process::id()));
        let pos = Position {
            txid: 7,
            page_size: 4096,
            commit: 3,
            wal: WalPosition {
                end: 32 + 3 * 4120,
                salt1: 1,
                salt2: 2,
                checkpoint_seq: 0,
                frame_checksum: (5, 6),
            },
            backfilled: false,
            db_stamp: None,
        };
        save(&dir, "s3://b/p", Some(&pos), None).unwrap();
        assert_eq!(load(&dir, "s3://b/p"), vec![pos]);
        assert_eq!(load(&dir, "s3://b/other"), vec![]);
        let next = Position { txid: 8, ..pos };
        save(&dir, "s3://b/p", Some(&pos), Some(&next)).unwrap();
        assert_eq!(load(&dir, "s3://b/p"), vec![pos, next]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn meta_dir_is_litestreams() {
        assert_eq!(
            meta_dir(Path::new("/data/app.db")),
            PathBuf::from("/data/.app.db-litestream")
        );
    }
}
