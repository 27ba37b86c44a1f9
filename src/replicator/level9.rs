//! Level-9 snapshots for the compactor: a full image of the database at the replica's current
//! TXID, streamed from the database (as Litestream builds them) on a thread of its own, with a
//! connection and read transaction of its own, so that L0 uploads continue while it runs.
//!
//! Invariants:
//! - The position does not move: a level-9 file is `1-<txid>` of a TXID already in the replica.
//! - The WAL is sealed first (write lock held briefly, pending commits uploaded, the snapshot's
//!   read transaction started there), so no checkpoint can copy frames beyond the position into
//!   the file while it is read, and the WAL cannot restart over them.
//! - At most one snapshot runs per database, and `MAX_LEVEL9_AT_ONCE` per process;
//!   `litestream_stop()` cancels a running one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use rusqlite::Connection;

use super::capture::{empty_segment, wal_generation_unchanged, PageSource};
use super::worker::{open_wal_file, Worker};
use super::{RunState, Shared};
use crate::compactor::{Compactor, Level9Answer, Level9Outcome};
use crate::error::{Context, Error, Result};
use crate::host::DbFile;
use crate::ltx;
use crate::replica_client::{ReplicaClient, Spool, SNAPSHOT_LEVEL};
use crate::s3::lease::Lease;
use crate::state::Position;
use crate::wal::{self, Resume, ScanOutcome, WalHeader};

/// A level-9 snapshot is read again when the WAL restarted under it; a second restart needs a
/// checkpoint our read mark forbids, so two attempts suffice and the third is a margin.
const LEVEL9_ATTEMPTS: usize = 3;

/// Level-9 snapshots writing at once in this process, whatever the number of databases: each
/// holds a thread, a connection and a read transaction (which keeps its WAL from being
/// checkpointed past the snapshot) for as long as it streams. Litestream's schedule puts every
/// database's snapshot on the same boundary (midnight UTC for 24 h); the others are told to ask
/// again shortly.
const MAX_LEVEL9_AT_ONCE: usize = 2;
static LEVEL9_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Holds one of the process's snapshot slots until dropped.
struct Level9Slot;

impl Level9Slot {
    fn take() -> Option<Level9Slot> {
        LEVEL9_RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LEVEL9_AT_ONCE).then_some(n + 1)
            })
            .ok()
            .map(|_| Level9Slot)
    }
}

impl Drop for Level9Slot {
    fn drop(&mut self) {
        LEVEL9_RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// "Write a level-9 snapshot `1-<current TXID>` unless the TXID is at most `newer_than`".
pub(super) struct Level9Request {
    pub(super) newer_than: u64,
    pub(super) reply: SyncSender<Level9Answer>,
}

/// Ask the worker for a level-9 snapshot (the compactor's `SnapshotFn`); the answer arrives on
/// the receiver returned.
pub(super) fn request_level9(shared: &Shared, newer_than: u64) -> Result<Receiver<Level9Answer>> {
    let (reply, answer) = sync_channel(1);
    {
        let mut g = shared.lock();
        if g.stop_requested || g.state == RunState::Stopped {
            return Err(Error::msg("replication is stopping"));
        }
        g.level9 = Some(Level9Request { newer_than, reply });
    }
    shared.wake();
    Ok(answer)
}

impl Worker {
    /// Start a level-9 snapshot: a full image of the database at the replica's current TXID,
    /// streamed from the database (Litestream builds its snapshots from the database, not from
    /// the replica) on a thread of its own, so that L0 uploads go on meanwhile. The position does
    /// not move. The answer (the file written, not newer, or busy) goes to `req.reply`.
    pub(super) fn start_level9_snapshot(&mut self, req: Level9Request) {
        if self.level9_running() {
            let _ = req.reply.send(Ok(Level9Outcome::Busy));
            return;
        }
        let Some(slot) = Level9Slot::take() else {
            let _ = req.reply.send(Ok(Level9Outcome::Busy));
            return;
        };
        match self.seal_for_level9(req.newer_than) {
            Ok(Some(job)) => {
                let reply = req.reply;
                let thread = std::thread::Builder::new()
                    .name("litestream-snapshot".into())
                    .spawn(move || {
                        let _slot = slot;
                        let answer =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()))
                                .unwrap_or_else(|p| {
                                    Err(Error::msg(format!(
                                        "internal error in a level-9 snapshot: {}",
                                        crate::error::panic_message(p.as_ref())
                                    )))
                                });
                        let _ = reply.send(answer);
                    });
                // If the thread could not start, the reply sender went with the closure: the
                // requester sees the disconnect.
                if let Ok(t) = thread {
                    self.level9_thread = Some(t);
                }
            }
            Ok(None) => {
                let _ = req.reply.send(Ok(Level9Outcome::NotNewer));
            }
            Err(e) => {
                let _ = req.reply.send(Err(e));
            }
        }
    }

    /// A level-9 snapshot thread is running (a finished one is joined).
    fn level9_running(&mut self) -> bool {
        match &self.level9_thread {
            Some(t) if !t.is_finished() => true,
            Some(_) => {
                if let Some(t) = self.level9_thread.take() {
                    let _ = t.join();
                }
                false
            }
            None => false,
        }
    }

    /// Wait for a running level-9 snapshot (told to stop by `Shared::level9_cancel`).
    pub(super) fn join_level9(&mut self) {
        if let Some(t) = self.level9_thread.take() {
            let _ = t.join();
        }
    }

    /// Seal the WAL for a moment: with the write lock held, upload whatever is committed and start
    /// the snapshot connection's read transaction there. Its read mark then keeps every
    /// checkpoint from copying frames beyond the position into the database file (and the WAL
    /// from restarting over them) for as long as the snapshot reads, whatever our own connection
    /// does meanwhile; frames committed later are simply not part of it.
    fn seal_for_level9(&mut self, newer_than: u64) -> Result<Option<Level9Job>> {
        if let Some(lease) = &self.lease {
            lease.check()?;
        }
        let snap = self.open_connection()?;
        self.barrier
            .execute_batch("BEGIN IMMEDIATE")
            .context("waiting for the write lock to start a level-9 snapshot")?;
        self.barrier_held = true;
        let sealed = (|| -> Result<()> {
            self.sync_wal()?;
            begin_pinning_read(&snap)
        })();
        let _ = self.barrier.execute_batch("ROLLBACK");
        self.barrier_held = false;
        sealed?;
        let Some(pos) = self.pos else {
            return Ok(None);
        };
        if pos.txid <= newer_than || pos.commit == 0 {
            return Ok(None);
        }
        Ok(Some(Level9Job {
            conn: snap,
            pos,
            wal_path: self.wal_path.clone(),
            source: self.pages(),
            client: self.client.clone(),
            lease: self.lease.clone(),
            cancel: self.shared.level9_cancel.clone(),
            compactor: self.compactor.clone(),
        }))
    }
}

/// Start a read transaction and take its WAL read mark (the first read does).
pub(super) fn begin_pinning_read(conn: &Connection) -> Result<()> {
    conn.execute_batch("BEGIN")?;
    if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(Error::from(e).context("starting a read transaction on the database"));
    }
    Ok(())
}

/// One level-9 snapshot, run on its own thread: reads the image at `pos` through `conn`, whose
/// read transaction began at `pos` (see `Worker::seal_for_level9`), and uploads it.
pub(super) struct Level9Job {
    conn: Connection,
    pos: Position,
    wal_path: PathBuf,
    source: PageSource,
    client: Arc<dyn ReplicaClient>,
    lease: Option<Arc<Lease>>,
    cancel: Arc<AtomicBool>,
    /// Told of the file as soon as it is written.
    compactor: Arc<Compactor>,
}

impl Level9Job {
    fn run(self) -> Level9Answer {
        // A restart found after reading (see `wal_generation_unchanged`) means the file alone is
        // the image now; the next attempt sees the new salts and takes that path.
        let result = (|| {
            for _ in 0..LEVEL9_ATTEMPTS {
                if let Some((mut spool, timestamp_ms)) = self.encode()? {
                    if let Some(lease) = &self.lease {
                        lease.check()?;
                    }
                    let file = self.client.put(
                        SNAPSHOT_LEVEL,
                        1,
                        self.pos.txid,
                        timestamp_ms,
                        &mut spool,
                    )?;
                    self.compactor.record_snapshot(file.clone());
                    return Ok(Level9Outcome::Written(file));
                }
            }
            Err(Error::msg(
                "the WAL kept restarting while the level-9 snapshot was read; it will be retried",
            ))
        })();
        let _ = self.conn.execute_batch("COMMIT");
        crate::alloc::release_free_heap();
        result
    }

    /// The image at `pos` as a level-9 LTX file, or None when the WAL restarted while it was
    /// read. Also returns the file's timestamp.
    fn encode(&self) -> Result<Option<(Spool, i64)>> {
        let pos = &self.pos;
        let page_size = self.source.page_size;
        let (wal, header) = open_wal_file(&self.wal_path)?;
        // The position's frames: the current WAL generation up to `pos.wal.end`. Any other WAL
        // (none, truncated, or restarted after the seal, which SQLite allows only once every
        // frame is in the database file) contributes nothing: the file alone is the image.
        let seg = match (&wal, &header) {
            (Some(f), Some(h))
                if pos.wal.end > 32 && h.salts() == (pos.wal.salt1, pos.wal.salt2) =>
            {
                match wal::scan(f, Resume::FromStart, Some(pos.wal.end - 32))? {
                    ScanOutcome::Segment(s)
                        if s.end == pos.wal.end && (s.commits == 0 || s.commit == pos.commit) =>
                    {
                        Some(s)
                    }
                    _ if WalHeader::read(f)?.is_none_or(|n| n.salts() != h.salts()) => {
                        return Ok(None); // restarted while scanning
                    }
                    _ => {
                        return Err(Error::msg(
                            "the WAL no longer matches the replica position; the snapshot will be retried",
                        ))
                    }
                }
            }
            _ => None,
        };
        let empty_seg;
        let seg_ref = match &seg {
            Some(s) => s,
            None => {
                empty_seg = empty_segment(page_size, pos.commit);
                &empty_seg
            }
        };
        let mut header = self.source.ltx_header(pos.txid, pos.commit, seg_ref);
        header.min_txid = 1;
        let db = DbFile::new(&self.conn)?;
        if seg.is_none() && db.size()? < pos.commit as u64 * page_size as u64 {
            return Err(Error::msg(format!(
                "{} is shorter than the {} pages of TXID {}; the snapshot will be retried",
                self.source.db_path,
                pos.commit,
                ltx::format_txid(pos.txid)
            )));
        }
        let cancelled = || self.cancel.load(Ordering::Relaxed);
        let spool =
            self.source
                .encode_full_image(wal.as_ref(), &db, seg_ref, header, &cancelled)?;
        if let (Some(f), Some(s)) = (&wal, &seg) {
            if !wal_generation_unchanged(f, s)? {
                return Ok(None);
            }
        }
        Ok(Some((spool, header.timestamp_ms)))
    }
}
