//! Local coordination: processes on one host first take an advisory `flock` on
//! `<meta dir>/lease.lock`, and only the process holding it talks to S3 about the lease.
//!
//! The others wait on the flock, which the kernel frees the moment its holder dies. The flock
//! holder writes what it saw into that file (a [`LocalNote`]) so the others can show who holds
//! the lease without asking S3.
//!
//! Invariants:
//! - Never a POSIX `fcntl` lock: those belong to SQLite and are dropped by any close of the file.
//!   `lease.lock` is our own file, which SQLite never opens, so opening and closing it is safe.
//! - A held flock's descriptor lives in a process-wide table, not on a thread's stack, so that a
//!   forked child can close its inherited copies ([`after_fork`]): a flock belongs to the open
//!   file description, so a child keeping a copy would hold this host's claim after its parent
//!   died — and keep itself from ever taking it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use once_cell::sync::Lazy;

/// The local advisory lock file inside the database's meta directory.
pub const LOCAL_LOCK_NAME: &str = "lease.lock";
/// How often a process waiting for the local flock tries again. A dead holder frees it at once,
/// so this bounds the local hand-over delay; a failed non-blocking flock costs one syscall.
pub const LOCAL_POLL: Duration = Duration::from_millis(200);

/// The held local lock files of this process, by [`LocalLock`] id.
static HELD: Lazy<Mutex<HashMap<u64, File>>> = Lazy::new(|| Mutex::new(HashMap::new()));
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn held() -> MutexGuard<'static, HashMap<u64, File>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a waiting process reads from the local lock file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalNote {
    /// The process holding the local lock.
    pub poller: String,
    pub token: Option<u64>,
    pub expires_at: Option<f64>,
    pub owner: Option<String>,
}

/// One lease keeper's claim on the local lock of a database.
#[derive(Debug)]
pub struct LocalLock {
    id: u64,
    path: PathBuf,
}

impl LocalLock {
    /// The local lock of the database whose meta directory is `meta_dir` (not yet claimed).
    pub fn new(meta_dir: &Path) -> LocalLock {
        LocalLock {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path: meta_dir.join(LOCAL_LOCK_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Try the flock (exclusive, non-blocking). Ok(true): ours until [`LocalLock::release`].
    pub fn try_claim(&self) -> std::io::Result<bool> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        match f.try_lock() {
            Ok(()) => {
                held().insert(self.id, f);
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// What the process holding the flock last wrote (None when unreadable or not written yet).
    pub fn read_note(&self) -> Option<LocalNote> {
        let mut text = String::new();
        File::open(&self.path)
            .ok()?
            .read_to_string(&mut text)
            .ok()?;
        serde_json::from_str(text.trim()).ok()
    }

    /// Replace the note (only while claimed; otherwise nothing is written).
    pub fn write_note(&self, note: &LocalNote) -> std::io::Result<()> {
        let text = serde_json::to_string(note)?;
        let mut all = held();
        let Some(f) = all.get_mut(&self.id) else {
            return Ok(());
        };
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")
    }

    /// Closing the descriptor frees the flock for the next local process.
    pub fn release(&self) {
        held().remove(&self.id);
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        self.release();
    }
}

/// Called in a forked child (by the runtime, before anything else): close the local lock files
/// inherited from the parent, whose lease threads do not exist here. The parent keeps its claim.
pub fn after_fork() {
    // try_lock: a lock held by a parent thread at fork time stays held forever in the child;
    // then leaking the descriptors is the only option left.
    let guard = match HELD.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    if let Some(mut g) = guard {
        g.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_file_and_notes_pass_between_claimants() {
        let dir = std::env::temp_dir().join(format!(
            "ls-local-{}-{:x}",
            std::process::id(),
            crate::replica_client::rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (LocalLock::new(&dir), LocalLock::new(&dir));
        assert!(a.try_claim().unwrap());
        assert!(!b.try_claim().unwrap(), "two claims on one flock");
        let note = LocalNote {
            poller: "a:1".into(),
            token: Some(3),
            expires_at: Some(12.5),
            owner: Some("x:2".into()),
        };
        a.write_note(&note).unwrap();
        b.write_note(&LocalNote {
            poller: "b:1".into(),
            token: None,
            expires_at: None,
            owner: None,
        })
        .unwrap(); // not claimed: writes nothing
        assert_eq!(b.read_note(), Some(note));
        a.release();
        assert!(b.try_claim().unwrap(), "released claim not free");
        drop(b);
        assert!(a.try_claim().unwrap(), "dropped claim not free");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
