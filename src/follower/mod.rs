//! The follower: while another instance holds the lease, keep this host's database equal to the
//! replica, one replica file = one WAL commit (`inject`), so that every connection reading the
//! database sees each applied transaction atomically; and leave, after each commit, the position
//! the replicator continues from when this instance takes the lease over.
//!
//! Concepts, one file each: `decide` (which file next, whether a saved position still describes
//! the database, checkpoints — pure, unit-tested) and `inject` (the WAL and wal-index writer).
//!
//! Invariants:
//! - The follower holds SQLite's WAL write lock for as long as it follows (taken back within
//!   milliseconds after each WAL restart it lets SQLite make): no other connection, of this
//!   process or another, can commit meanwhile — writers fail with SQLITE_BUSY ("database is
//!   locked") after their busy timeout instead of writing something the replica would never see.
//! - A commit that slipped in anyway (the lock was free at start, or during a restart) is
//!   noticed by the wal-index change counter; the database is then treated as diverged.
//! - The local database is only ever replaced by the replica's state after a consistent copy of
//!   it was kept (`<db>.diverged-<txid>`), unless it is provably a state of the replica.
//! - After each applied file the state file records the position exactly as if this instance
//!   had uploaded that TXID: the replicator's own acquisition path (saved position = replica
//!   max, WAL proves continuity) then continues at max + 1 without a snapshot.

mod decide;
mod inject;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;
use serde::Serialize;

use crate::error::{Context, Error, Result};
use crate::ltx::{self, Decoder};
use crate::replica_client::{self, all_levels, LtxFileInfo, ReplicaClient};
use crate::state::{self, DbStamp, Position};

pub use decide::{standby_action, StandbyAction, StandbyFacts};
use decide::{Checkpoint, LocalFacts, NextFile};
pub use inject::Injector;
use inject::{IndexHeader, Injected};

/// While the holder is active (a file applied within `ACTIVE_WINDOW`), the replica is polled
/// this much more often than the sync interval (at most every `MIN_POLL`): a file appears every
/// sync interval, and a quarter of it bounds the wait for one at a LIST request per quarter.
const ACTIVE_POLL_DIVISOR: u32 = 4;
const ACTIVE_WINDOW: Duration = Duration::from_secs(10);
/// The write lock was busy (a commit or checkpoint of another connection): try again this soon.
const LOCK_RETRY: Duration = Duration::from_millis(20);
/// One step applies files for at most this long, so that the replicator's loop sees lease
/// changes and stops in time.
const STEP_BUDGET: Duration = Duration::from_secs(2);
/// Taking the write lock back after a WAL restart: this many tries, 1 ms apart.
const RELOCK_TRIES: u32 = 1000;
/// The poll interval's floor (a sync interval of 0 means "upload every commit" on a primary).
const MIN_POLL: Duration = Duration::from_millis(100);

/// How the follower runs.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Poll the replica this often while nothing arrives (the sync interval).
    pub poll: Duration,
    /// Checkpoint once the WAL holds this many frames (`min-checkpoint-page-count`).
    pub checkpoint_frames: u32,
}

/// `litestream_status()`'s `follow` object.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FollowStatus {
    /// TXID the local database equals (16 hex digits), once known.
    pub txid: Option<String>,
    /// The replica's highest TXID as last listed.
    pub replica_txid: Option<String>,
    /// How long the oldest replica file not yet applied has existed (0 when caught up).
    pub lag_ms: u64,
    pub files_applied: u64,
    pub bytes_applied: u64,
    /// Full images applied (first follow of a database, or after a gap or divergence).
    pub full_images: u64,
    pub last_applied_at: Option<String>,
    pub last_error: Option<String>,
    /// Copies kept of local states the replica never had.
    pub diverged: Vec<String>,
}

struct Applied {
    pos: Position,
    /// The wal-index change counter right after our last commit.
    change: u32,
}

pub struct Follower {
    inj: Injector,
    /// A plain connection for checkpoints and copies (never holds the lock).
    reader: Connection,
    client: Arc<dyn ReplicaClient>,
    replica: String,
    meta: PathBuf,
    db_path: PathBuf,
    page_size: u32,
    settings: Settings,
    applied: Option<Applied>,
    status: FollowStatus,
    /// The last time a file was applied.
    active_at: Option<Instant>,
}

impl Follower {
    /// Follow `db_path` (page size `page_size`, already in WAL mode) from `client`, with an
    /// injector (see [`Injector::gate`]) and a plain connection of the caller's to it.
    pub fn new(
        inj: Injector,
        reader: Connection,
        client: Arc<dyn ReplicaClient>,
        db_path: &Path,
        page_size: u32,
        settings: Settings,
    ) -> Result<Follower> {
        crate::host::set_persist_wal(&reader)?;
        Ok(Follower {
            inj,
            reader,
            replica: client.describe(),
            client,
            meta: state::meta_dir(db_path),
            db_path: db_path.to_path_buf(),
            page_size,
            settings: Settings {
                poll: settings.poll.max(MIN_POLL),
                ..settings
            },
            applied: None,
            status: FollowStatus::default(),
            active_at: None,
        })
    }

    pub fn status(&self) -> FollowStatus {
        self.status.clone()
    }

    /// The TXID the local database equals, once known.
    pub fn applied_txid(&self) -> Option<u64> {
        self.applied.as_ref().map(|a| a.pos.txid)
    }

    /// One poll and whatever it finds to apply (bounded by `STEP_BUDGET`). Returns how long to
    /// wait before the next step.
    pub fn step(&mut self) -> Result<Duration> {
        let r = self.step_inner();
        self.status.last_error = r.as_ref().err().map(|e| e.to_string());
        r
    }

    fn step_inner(&mut self) -> Result<Duration> {
        if !self.lock()? {
            return Ok(LOCK_RETRY);
        }
        if !self.ready()? {
            return Ok(self.settings.poll);
        }
        let started = Instant::now();
        let mut applied_any = false;
        let mut levels = vec![self.client.list(0)?];
        let mut full = false;
        loop {
            let txid = self.applied_txid().unwrap_or(0);
            match decide::next_file(&levels, txid) {
                NextFile::Apply(f) => {
                    self.apply_file(&f)?;
                    applied_any = true;
                }
                NextFile::CaughtUp if full || !levels[0].is_empty() => break,
                NextFile::Gap if full => {
                    self.full_image()?;
                    applied_any = true;
                }
                // Level 0 alone cannot say: list every level.
                NextFile::CaughtUp | NextFile::Gap => {
                    levels = self.list_all()?;
                    full = true;
                }
            }
            if started.elapsed() >= STEP_BUDGET {
                break;
            }
        }
        self.update_lag(&levels);
        self.checkpoint_if_due()?;
        if applied_any {
            self.active_at = Some(Instant::now());
        }
        let active = self.active_at.is_some_and(|t| t.elapsed() < ACTIVE_WINDOW);
        Ok(if active {
            (self.settings.poll / ACTIVE_POLL_DIVISOR).max(MIN_POLL)
        } else {
            self.settings.poll
        })
    }

    /// Apply everything up to the replica's max TXID (called right after this instance took the
    /// lease, before it writes anything). Returns the TXID the database now equals (0: the
    /// replica is empty and the database was left as it is).
    pub fn catch_up(&mut self) -> Result<u64> {
        let r = self.catch_up_inner();
        self.status.last_error = r.as_ref().err().map(|e| e.to_string());
        r
    }

    fn catch_up_inner(&mut self) -> Result<u64> {
        let mut tries = 0;
        while !self.lock()? {
            tries += 1;
            if tries > RELOCK_TRIES {
                return Err(Error::msg(
                    "cannot take the WAL write lock to catch up with the replica: another connection keeps writing",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if !self.ready()? {
            return Ok(0);
        }
        loop {
            let levels = self.list_all()?;
            let mut progressed = false;
            loop {
                match decide::next_file(&levels, self.applied_txid().unwrap_or(0)) {
                    NextFile::Apply(f) => self.apply_file(&f)?,
                    NextFile::Gap => self.full_image()?,
                    NextFile::CaughtUp => break,
                }
                progressed = true;
            }
            self.update_lag(&levels);
            if !progressed {
                self.mark_if_backfilled()?;
                return Ok(self.applied_txid().unwrap_or(0));
            }
        }
    }

    /// Hold the write lock (Ok(false): busy right now).
    fn lock(&mut self) -> Result<bool> {
        self.inj.try_lock()
    }

    /// The wal-index header, letting SQLite recover it first if it needs that.
    fn header(&mut self) -> Result<IndexHeader> {
        if let Some(h) = self.inj.header()? {
            return Ok(h);
        }
        self.inj.unlock();
        self.inj.refresh()?;
        for _ in 0..RELOCK_TRIES {
            if self.inj.try_lock()? {
                if let Some(h) = self.inj.header()? {
                    return Ok(h);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(Error::msg("the wal-index (-shm) has no valid header"))
    }

    /// Know which replica state the database holds, or make it hold one. Ok(false): the replica
    /// is empty, nothing to follow yet.
    fn ready(&mut self) -> Result<bool> {
        if let Some(a) = &self.applied {
            let change = a.change;
            let hdr = self.header()?;
            if hdr.change == change {
                return Ok(true);
            }
            // Someone committed although we follow: that commit is not in the replica.
            self.applied = None;
        }
        let hdr = self.header()?;
        let facts = LocalFacts {
            page_size: self.page_size,
            max_frame: hdr.max_frame,
            n_page: hdr.n_page,
            salts: hdr.salts(),
            frame_checksum: hdr.frame_cksum,
            db_stamp: DbStamp::of(&self.db_path).ok(),
        };
        let levels = self.list_all()?;
        let max = decide::max_txid(&levels);
        let mut saved = state::load(&self.meta, &self.replica);
        saved.sort_by_key(|p| std::cmp::Reverse(p.txid));
        for p in &saved {
            if p.txid <= max
                && decide::position_proven(p, &facts)
                && self.matches_replica(&levels, p)?
            {
                self.set_applied(*p, hdr.change);
                return Ok(true);
            }
        }
        if max == 0 {
            return Ok(false);
        }
        let label = saved.iter().map(|p| p.txid).max().unwrap_or(0);
        if hdr.n_page > 0
            || std::fs::metadata(&self.db_path)
                .map(|m| m.len())
                .unwrap_or(0)
                > 0
        {
            self.keep_diverged(label)?;
        }
        self.full_image()?;
        Ok(true)
    }

    fn set_applied(&mut self, pos: Position, change: u32) {
        self.status.txid = Some(ltx::format_txid(pos.txid));
        self.applied = Some(Applied { pos, change });
    }

    fn list_all(&self) -> Result<Vec<Vec<LtxFileInfo>>> {
        let mut levels = Vec::new();
        for level in all_levels() {
            levels.push(self.client.list(level)?);
        }
        Ok(levels)
    }

    /// Whether the replica's own file ending at `pos.txid` agrees with the local database: each of
    /// its pages equals the local page, and its size is the local size. A saved position only
    /// says what this host did; the replica may hold another history for that TXID (an old
    /// primary whose last upload never landed).
    fn matches_replica(&mut self, levels: &[Vec<LtxFileInfo>], pos: &Position) -> Result<bool> {
        let Some(file) = levels
            .iter()
            .flatten()
            .filter(|f| f.max_txid == pos.txid)
            .min_by_key(|f| f.size)
        else {
            return Ok(false);
        };
        let mut dec = Decoder::new(self.client.open(file)?)
            .with_context(|| format!("reading {}", file.key))?;
        let h = *dec.header();
        if h.page_size != self.page_size || h.commit != pos.commit {
            return Ok(false);
        }
        let mut theirs = vec![0u8; self.page_size as usize];
        let mut ours = vec![0u8; self.page_size as usize];
        let mut same = true;
        while let Some(pgno) = dec
            .next_page(&mut theirs)
            .with_context(|| format!("reading {}", file.key))?
        {
            self.inj.read_page(pgno, &mut ours)?;
            if pgno == 1 {
                // The WAL-mode marks may differ in a file written from a rollback-mode database.
                ours[18..20].copy_from_slice(&theirs[18..20]);
            }
            same &= ours == theirs;
        }
        dec.finish()
            .with_context(|| format!("verifying {}", file.key))?;
        Ok(same)
    }

    /// Keep a consistent copy of the local database before it is replaced (VACUUM INTO reads one
    /// snapshot; with the write lock held nothing commits meanwhile).
    fn keep_diverged(&mut self, txid: u64) -> Result<()> {
        let base = format!(
            "{}.diverged-{}",
            self.db_path.display(),
            ltx::format_txid(txid)
        );
        let mut path = PathBuf::from(&base);
        let mut n = 1;
        while path.exists() {
            path = PathBuf::from(format!("{base}-{n}"));
            n += 1;
        }
        self.reader
            .execute("VACUUM INTO ?1", [path.display().to_string()])
            .with_context(|| {
                format!(
                    "keeping a copy of the diverged database in {}",
                    path.display()
                )
            })?;
        self.status.diverged.push(path.display().to_string());
        Ok(())
    }

    /// Apply one replica file as one commit. The file is verified (checksum, name) before the
    /// commit is published; a bad file publishes nothing.
    fn apply_file(&mut self, file: &LtxFileInfo) -> Result<()> {
        let mut dec = Decoder::new(self.client.open(file)?)
            .with_context(|| format!("reading {}", file.key))?;
        let h = *dec.header();
        ltx::check_named(&h, (file.min_txid, file.max_txid))
            .with_context(|| format!("reading {}", file.key))?;
        if h.page_size != self.page_size {
            return Err(Error::msg(format!(
                "{} has {}-byte pages, the local database {}",
                file.key, h.page_size, self.page_size
            )));
        }
        self.header()?;
        let mut first_page = vec![0u8; self.page_size as usize];
        let mut buf = vec![0u8; self.page_size as usize];
        let mut w = self.inj.begin()?;
        let mut pages = 0u32;
        while let Some(pgno) = dec
            .next_page(&mut buf)
            .with_context(|| format!("reading {}", file.key))?
        {
            w.page(pgno, &buf)?;
            pages += 1;
        }
        dec.finish()
            .with_context(|| format!("verifying {}", file.key))?;
        if pages == 0 {
            // A commit needs a frame: page 1 as it is carries the new size.
            drop(w);
            self.inj.read_page(1, &mut first_page)?;
            let mut w = self.inj.begin()?;
            w.page(1, &first_page)?;
            let injected = w.finish(h.commit, h.max_txid)?;
            return self.record(injected, file.size);
        }
        let injected = w.finish(h.commit, h.max_txid)?;
        self.record(injected, file.size)
    }

    /// Replace the database's content with the replica's latest state, as one commit of every
    /// page (restored and integrity-checked into a temporary file first).
    fn full_image(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.meta)
            .with_context(|| format!("creating {}", self.meta.display()))?;
        let tmp = self.meta.join(format!(
            "follow-image-{:016x}.db",
            replica_client::rand_u64()
        ));
        let result = (|| -> Result<()> {
            let txid = crate::restore::restore(self.client.as_ref(), &tmp, &Default::default())?;
            let image = File::open(&tmp).with_context(|| format!("opening {}", tmp.display()))?;
            let size = image.metadata()?.len();
            let ps = self.page_size as u64;
            let mut page1 = [0u8; 18];
            image.read_exact_at(&mut page1, 0)?;
            let image_ps = match u16::from_be_bytes([page1[16], page1[17]]) {
                1 => 65536,
                n => n as u64,
            };
            if image_ps != ps {
                return Err(Error::msg(format!(
                    "the replica's pages are {image_ps} bytes, the local database's {ps}: it cannot follow this replica"
                )));
            }
            let pages = (size / ps) as u32;
            let lock_page = ltx::lock_page(self.page_size);
            self.header()?;
            let mut buf = vec![0u8; ps as usize];
            let mut w = self.inj.begin()?;
            for pgno in 1..=pages {
                if pgno == lock_page {
                    continue;
                }
                image.read_exact_at(&mut buf, (pgno as u64 - 1) * ps)?;
                w.page(pgno, &buf)?;
            }
            let injected = w.finish(pages, txid)?;
            self.status.full_images += 1;
            self.record(injected, size)
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    fn record(&mut self, injected: Injected, bytes: u64) -> Result<()> {
        let pos = injected.position;
        state::save(&self.meta, &self.replica, Some(&pos), None)
            .with_context(|| format!("saving the follow position in {}", self.meta.display()))?;
        self.set_applied(pos, injected.header.change);
        self.status.files_applied += 1;
        self.status.bytes_applied += bytes;
        self.status.last_applied_at = Some(replica_client::format_timestamp_ms(
            replica_client::unix_ms(SystemTime::now()),
        ));
        Ok(())
    }

    fn update_lag(&mut self, levels: &[Vec<LtxFileInfo>]) {
        let applied = self.applied_txid().unwrap_or(0);
        let max = decide::max_txid(levels);
        if max > 0 {
            self.status.replica_txid = Some(ltx::format_txid(max));
        }
        let oldest_pending = levels
            .iter()
            .flatten()
            .filter(|f| f.max_txid > applied)
            .map(|f| f.created_at)
            .min();
        self.status.lag_ms = oldest_pending
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
    }

    /// Keep the WAL bounded: PASSIVE copies frames into the database file while we keep the lock;
    /// once all are copied, SQLite's TRUNCATE restarts the WAL (it needs the write lock, which
    /// we release for that moment and take back at once).
    fn checkpoint_if_due(&mut self) -> Result<()> {
        let hdr = self.header()?;
        let backfilled = self.inj.backfilled()?;
        match decide::checkpoint(hdr.max_frame, backfilled, self.settings.checkpoint_frames) {
            Checkpoint::None => Ok(()),
            Checkpoint::Passive => {
                self.reader
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                    .context("follower checkpoint(PASSIVE)")?;
                self.mark_if_backfilled()
            }
            Checkpoint::Truncate => self.restart_wal(hdr.change),
        }
    }

    /// If every frame up to the applied position is in the database file (a checkpoint copied
    /// them while we held the write lock), say so in the saved position, with the file's stamp:
    /// the next writer may restart the WAL — the application's first commit after taking over
    /// does — and the replicator accepts that restart only for a backfilled position whose
    /// database file is unchanged (`replicator::decide::plan`).
    fn mark_if_backfilled(&mut self) -> Result<()> {
        let hdr = self.header()?;
        let backfilled = self.inj.backfilled()?;
        let Some(a) = self.applied.as_mut() else {
            return Ok(());
        };
        if a.pos.backfilled
            || hdr.max_frame == 0
            || backfilled < hdr.max_frame
            || hdr.change != a.change
        {
            return Ok(());
        }
        a.pos.backfilled = true;
        a.pos.db_stamp = DbStamp::take_settled(&self.db_path).ok();
        let pos = a.pos;
        state::save(&self.meta, &self.replica, Some(&pos), None)
            .with_context(|| format!("saving the follow position in {}", self.meta.display()))
    }

    fn restart_wal(&mut self, change: u32) -> Result<()> {
        self.inj.unlock();
        self.reader.busy_timeout(Duration::ZERO)?;
        let r = self
            .reader
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        self.reader.busy_timeout(Duration::from_secs(1))?;
        let mut locked = false;
        for _ in 0..RELOCK_TRIES {
            if self.inj.try_lock()? {
                locked = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        r.context("follower checkpoint(TRUNCATE)")?;
        if !locked {
            return Ok(()); // the next step takes it, and sees whether anything was committed
        }
        let hdr = self.header()?;
        if hdr.change != change || hdr.max_frame != 0 {
            return Ok(()); // a commit slipped in (the next step's check), or the WAL stayed
        }
        // The database file now holds exactly the applied state and the WAL is empty: the
        // stamp proves it to the next start (and to the replicator's continuity check).
        if let Some(a) = self.applied.as_mut() {
            a.pos.backfilled = true;
            a.pos.db_stamp = DbStamp::take_settled(&self.db_path).ok();
            let pos = a.pos;
            state::save(&self.meta, &self.replica, Some(&pos), None).with_context(|| {
                format!("saving the follow position in {}", self.meta.display())
            })?;
        }
        Ok(())
    }
}
