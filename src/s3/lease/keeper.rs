//! The lease keeper: one task per replicated database, on the lease pool, that acquires, renews
//! and finally releases lock.json through a [`LeaseStore`], and the [`Lease`] handle the replicator reads.
//!
//! Each step is one conditional write: acquire (`If-None-Match: *`, or `If-Match` on an expired
//! lock with token + 1), renew (`If-Match` on our last ETag, same token) and release (conditional
//! DELETE, or an already expired write). A write whose answer was lost is recognised as ours by
//! its body (see `Keeper::own_write`).
//!
//! Invariants:
//! - The fence is granted only after a successful lock write and only until `sent + ttl −
//!   margin`; it is revoked before any release, and a release is attempted only while the fence
//!   is still open (past it, another instance may hold the lease already).
//! - Only the process holding the local flock (`local.rs`) talks to S3 about the lease.
//! - Tokens grow: a new holder's token is above the expired lock's and above every token found in
//!   the replica (a release deletes lock.json, the objects keep theirs).
//! - Lock order: the replicator may call into the lease while holding its own lock; the lease
//!   never calls the replicator's waker while holding its own.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::fence::Fence;
use super::local::{LocalLock, LocalNote, LOCAL_POLL};
use super::record::{format_rfc3339, unix_now, LeaseRecord, LockFormat, Timing};
use super::store::{ignored_message, Cond, LeaseStore, ProbeError, StoreError};
use super::LeaseSetup;
use crate::error::{Error, Result};
use crate::scheduler::{Next, Scheduler, Task, TaskHandle};

/// Pause before retrying after a 409 ConditionalRequestConflict (another conditional write to the
/// same key was in flight); jittered so that racers do not collide again.
const CONFLICT_RETRY: Duration = Duration::from_millis(50);
/// A keeper whose provider ignores conditional writes never acquires; it only looks for the stop
/// (which pokes it) this often.
const PARKED_WAIT: Duration = Duration::from_secs(3600);
/// Our own recent lock.json writes remembered (body, when sent): enough to recognise a write of
/// ours that landed although we never heard its answer (see `Keeper::own_write`).
const OWN_WRITES_KEPT: usize = 8;

/// The lease as this instance knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Holder,
    Standby,
}

/// A snapshot of the lease state, for status, sync and the replicator.
#[derive(Clone, Debug)]
pub struct View {
    pub role: Role,
    /// This instance's owner string.
    pub me: String,
    /// The last lock seen or written (the holder's).
    pub lock: Option<LeaseRecord>,
    /// We know who holds it (or that another local process handles the lease).
    pub resolved: bool,
    /// Another process on this host holds the local lock and talks to S3.
    pub local_waiting: bool,
    /// Last error of the lease loop (cleared by the next success).
    pub error: Option<String>,
    /// Set when this instance lost the lease, until it holds one again.
    pub lost: Option<String>,
    /// The lease can never work here (provider ignores conditional writes, unreadable lock).
    pub fatal: bool,
}

/// `litestream_status().lease`: the same keys whatever the role; with the lease off only the
/// first four (there is no instance to describe).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeaseStatus {
    /// `holder`, `standby` or `off`.
    pub role: &'static str,
    /// The holder as last seen (ourselves when holding).
    pub owner: Option<String>,
    pub token: Option<u64>,
    /// Unix seconds, by the holder's clock.
    pub expires_at: Option<f64>,
    #[serde(flatten)]
    pub instance: Option<InstanceStatus>,
}

/// The part of [`LeaseStatus`] about this instance (absent with the lease off).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceStatus {
    /// This instance's owner string.
    pub instance: String,
    /// Another process on this host holds the local lock and talks to S3.
    pub local_standby: bool,
    /// Last error of the lease loop.
    pub error: Option<String>,
}

impl LeaseStatus {
    /// The status of a replica without a lease.
    pub fn off() -> LeaseStatus {
        LeaseStatus {
            role: "off",
            owner: None,
            token: None,
            expires_at: None,
            instance: None,
        }
    }
}

impl View {
    /// `litestream_status().lease`.
    pub fn status(&self) -> LeaseStatus {
        LeaseStatus {
            role: match self.role {
                Role::Holder => "holder",
                Role::Standby => "standby",
            },
            owner: self.lock.as_ref().map(|l| l.owner.clone()),
            token: self.lock.as_ref().map(|l| l.token),
            expires_at: self.lock.as_ref().map(|l| l.expires_at),
            instance: Some(InstanceStatus {
                instance: self.me.clone(),
                local_standby: self.local_waiting,
                error: self.error.clone(),
            }),
        }
    }

    /// Why this instance is not replicating before it knows who holds the lease (the lock was
    /// not read yet, or reading it fails).
    pub fn undecided_message(&self, lock_url: &str) -> String {
        let why = self
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        format!(
            "this instance ({}) does not hold the lease {lock_url} and does not know yet who does{why}",
            self.me
        )
    }

    /// Why a standby does not replicate, naming the holder and until when its lease runs; None
    /// while that is unknown.
    pub fn standby_message(&self, lock_url: &str) -> Option<String> {
        if self.role == Role::Holder {
            return None;
        }
        if self.fatal {
            return self.error.clone();
        }
        let holder = match &self.lock {
            Some(l) => format!(
                "{} (token {}, until {})",
                if l.owner.is_empty() {
                    "an unnamed instance"
                } else {
                    &l.owner
                },
                l.token,
                format_rfc3339(l.expires_at)
            ),
            None => "another instance".to_string(),
        };
        if let Some(lost) = &self.lost {
            return Some(format!(
                "this instance ({}) is not replicating: {lost}; the lease {lock_url} is held by {holder}",
                self.me
            ));
        }
        if !self.resolved {
            return None;
        }
        let via = if self.local_waiting {
            "; another process on this host is next in line"
        } else {
            ""
        };
        Some(format!(
            "this instance ({}) is a standby: the lease {lock_url} is held by {holder}{via}; only the holder uploads, so call litestream_sync() there (litestream_stop() on the holder hands the lease over)",
            self.me
        ))
    }
}

#[derive(Clone, Debug)]
struct Held {
    token: u64,
    etag: String,
    /// When the last successful lock write was sent (monotonic).
    sent: Instant,
}

struct KState {
    stop: bool,
    probed: bool,
    fatal: bool,
    local_claim: bool,
    local_waiting: bool,
    held: Option<Held>,
    /// The fence closed while we still believed we held the lease (renewals failing).
    lapsed: bool,
    epoch: u64,
    seen: Option<LeaseRecord>,
    resolved: bool,
    error: Option<String>,
    lost: Option<String>,
    /// Bodies of our latest lock writes (acquire, renew) with when each was sent, newest last.
    written: Vec<(String, Instant)>,
}

struct Keeper {
    store: Arc<dyn LeaseStore>,
    fence: Arc<Fence>,
    timing: Timing,
    owner: String,
    lock_url: String,
    local: LocalLock,
    state: Mutex<KState>,
    waker: Box<dyn Fn() + Send + Sync>,
}

/// A running lease: a task that acquires, renews and finally releases lock.json.
pub struct Lease {
    keeper: Arc<Keeper>,
    task: TaskHandle,
}

/// The keeper's loop, one step at a time on the lease pool.
struct KeeperTask {
    keeper: Arc<Keeper>,
    /// This process holds the local lock.
    local: bool,
    last_note: Option<LocalNote>,
    /// The provider ignores conditional writes: never acquire, only wait for the stop.
    parked: bool,
}

impl Lease {
    /// Start the lease's task on `pool`. `meta_dir` holds the local lock file; `waker` is called
    /// (without any lease lock held) whenever the role changes.
    pub fn start(
        setup: LeaseSetup,
        meta_dir: &Path,
        waker: Box<dyn Fn() + Send + Sync>,
        pool: &Scheduler,
    ) -> Result<Lease> {
        std::fs::create_dir_all(meta_dir)
            .map_err(|e| Error::msg(format!("creating {}: {e}", meta_dir.display())))?;
        setup.fence.enable();
        let keeper = Arc::new(Keeper {
            lock_url: setup.store.describe(),
            store: setup.store,
            fence: setup.fence,
            timing: setup.timing,
            owner: setup.owner,
            local: LocalLock::new(meta_dir),
            state: Mutex::new(KState {
                stop: false,
                probed: setup.probed,
                fatal: false,
                local_claim: false,
                local_waiting: false,
                held: None,
                lapsed: false,
                epoch: 0,
                seen: None,
                resolved: false,
                error: None,
                lost: None,
                written: Vec::new(),
            }),
            waker,
        });
        let task = pool.spawn(Box::new(KeeperTask {
            keeper: keeper.clone(),
            local: false,
            last_note: None,
            parked: false,
        }));
        Ok(Lease { keeper, task })
    }

    /// `Some((token, epoch))` while this instance holds the lease and may upload. The epoch
    /// changes at every acquisition (and after a lapse), so the replicator knows to re-read the
    /// replica's position.
    pub fn holding(&self) -> Option<(u64, u64)> {
        let s = self.keeper.lock();
        match &s.held {
            Some(h) if !s.lapsed && self.keeper.fence.check().is_ok() => Some((h.token, s.epoch)),
            _ => None,
        }
    }

    /// Upload gate with a clear error.
    pub fn check(&self) -> Result<()> {
        self.keeper.fence.check().map_err(Error::msg)
    }

    /// This process holds the local lock (so the database's checkpoints are its job).
    pub fn has_local_claim(&self) -> bool {
        self.keeper.lock().local_claim
    }

    pub fn lock_url(&self) -> &str {
        &self.keeper.lock_url
    }

    pub fn view(&self) -> View {
        let holding = self.holding().is_some();
        let s = self.keeper.lock();
        View {
            role: if holding { Role::Holder } else { Role::Standby },
            me: self.keeper.owner.clone(),
            lock: s.seen.clone(),
            resolved: s.resolved,
            local_waiting: s.local_waiting,
            error: s.error.clone(),
            lost: s.lost.clone(),
            fatal: s.fatal,
        }
    }

    /// Release the lease (if held) so a standby takes over at once, and end the task.
    pub fn stop(&self) {
        self.keeper.lock().stop = true;
        self.task.poke();
        self.task.wait_done();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Normally stopped by the replicator; never leave the task renewing for nobody.
        self.stop();
    }
}

impl Task for KeeperTask {
    fn run(&mut self) -> Next {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step())) {
            Ok(Some(wait)) => Next::At(Instant::now() + wait),
            Ok(None) => {
                let k = &self.keeper;
                k.release();
                k.local.release();
                k.update(|s| s.local_claim = false);
                Next::Done
            }
            Err(p) => {
                let k = &self.keeper;
                let msg = crate::error::panic_message(p.as_ref());
                k.fence.revoke();
                let mut s = k.lock();
                s.held = None;
                s.fatal = true;
                s.error = Some(format!("internal error in the lease keeper: {msg}"));
                drop(s);
                (k.waker)();
                Next::Done
            }
        }
    }
}

impl KeeperTask {
    /// One step of the keeper; returns how long to wait before the next one, or None to stop
    /// (a stop pokes the task, so it never waits the whole pause).
    fn step(&mut self) -> Option<Duration> {
        let k = self.keeper.clone();
        if k.lock().stop {
            return None;
        }
        if self.parked {
            return Some(PARKED_WAIT);
        }
        // 1. The local lock: only its holder talks to S3 about the lease.
        if !self.local {
            match k.local.try_claim() {
                Ok(true) => {
                    self.local = true;
                    k.update(|s| {
                        s.local_claim = true;
                        s.local_waiting = false;
                        s.resolved = false;
                    });
                }
                Ok(false) => {
                    let note = k.local.read_note();
                    k.update(|s| {
                        s.local_waiting = true;
                        s.resolved = true;
                        s.error = None;
                        if let Some(n) = note {
                            s.seen = match (n.token, n.expires_at) {
                                (Some(token), Some(expires_at)) => Some(LeaseRecord {
                                    token,
                                    expires_at,
                                    owner: n.owner.unwrap_or_default(),
                                    format: LockFormat::Token,
                                }),
                                _ => None,
                            };
                        }
                    });
                    return Some(LOCAL_POLL);
                }
                Err(e) => {
                    k.set_error(format!(
                        "taking the local lease lock {}: {e}",
                        k.local.path().display()
                    ));
                    return Some(k.timing.standby_poll());
                }
            }
        }
        // 2. The provider must honour conditional writes (when start could not tell).
        if !k.lock().probed {
            match k.store.probe() {
                Ok(()) => k.update(|s| s.probed = true),
                Err(ProbeError::Ignored(detail)) => {
                    let m = ignored_message(&k.lock_url, &detail);
                    k.update(|s| {
                        s.fatal = true;
                        s.error = Some(m);
                    });
                    // Never acquire; wait for stop.
                    self.parked = true;
                    return Some(PARKED_WAIT);
                }
                Err(ProbeError::Inconclusive(e)) => {
                    k.set_error(e);
                    return Some(k.timing.standby_poll());
                }
            }
        }
        // 3. Acquire or renew.
        let held = k.lock().held.clone();
        let wait = match held {
            None => k.acquire_step(),
            Some(h) => k.renew_step(h),
        };
        if self.local {
            let note = k.local_note();
            if self.last_note.as_ref() != Some(&note) && k.local.write_note(&note).is_ok() {
                self.last_note = Some(note);
            }
        }
        Some(wait)
    }
}

impl Keeper {
    fn lock(&self) -> MutexGuard<'_, KState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `f` to the state; wake the replicator if the role or the error changed.
    fn update(&self, f: impl FnOnce(&mut KState)) {
        // What the replicator reacts to.
        let seen = |s: &KState| {
            (
                s.held.is_some(),
                s.lapsed,
                s.epoch,
                s.resolved,
                s.error.clone(),
                s.lost.clone(),
            )
        };
        let mut s = self.lock();
        let before = seen(&s);
        f(&mut s);
        let after = seen(&s);
        drop(s);
        if before != after {
            (self.waker)();
        }
    }

    fn set_error(&self, e: String) {
        self.update(|s| s.error = Some(e));
    }

    /// Remember a lock write before it is sent.
    fn note_write(&self, body: &str, sent: Instant) {
        let mut s = self.lock();
        if s.written.len() >= OWN_WRITES_KEPT {
            s.written.remove(0);
        }
        s.written.push((body.to_string(), sent));
    }

    /// When we sent `body`, if it is one of our own recent lock writes. A write can land while
    /// its answer is lost (a reset, a timeout) and every retry of it fail: then lock.json holds
    /// our write under an ETag we never saw, and our next conditional write gets a 412. The body
    /// is unique (it carries `expires_at` to the microsecond), so finding it byte for byte in
    /// lock.json proves nobody has written since: the lease is still ours, not taken over.
    fn own_write(&self, body: &[u8]) -> Option<Instant> {
        self.lock()
            .written
            .iter()
            .rev()
            .find(|(b, _)| b.as_bytes() == body)
            .map(|(_, sent)| *sent)
    }

    fn local_note(&self) -> LocalNote {
        let s = self.lock();
        LocalNote {
            poller: self.owner.clone(),
            token: s.seen.as_ref().map(|l| l.token),
            expires_at: s.seen.as_ref().map(|l| l.expires_at),
            owner: s.seen.as_ref().map(|l| l.owner.clone()),
        }
    }

    /// One acquisition attempt; returns how long to wait before the next step.
    fn acquire_step(&self) -> Duration {
        let poll = self.timing.standby_poll();
        let current = match self.store.get() {
            Ok(c) => c,
            Err(e) => {
                self.set_error(format!("reading the lease {}: {e}", self.lock_url));
                return poll;
            }
        };
        let now = unix_now();
        let (cond, token) = match current {
            None => (Cond::Absent, 1),
            Some((body, etag)) => match LeaseRecord::parse(&body) {
                Err(e) => {
                    self.set_error(format!(
                        "the lease {} is not a lock this program understands ({e}); it is left alone — delete it if no other instance replicates to this path",
                        self.lock_url
                    ));
                    return poll;
                }
                Ok(rec) if !rec.expired(now) => {
                    if let Some(sent) = self.own_write(&body) {
                        // An acquisition of ours that landed unheard (see `own_write`).
                        self.become_holder(rec, etag, sent);
                        return Duration::ZERO;
                    }
                    let wait = self.timing.standby_wait(&rec, now);
                    self.update(|s| {
                        s.seen = Some(rec);
                        s.resolved = true;
                        s.error = None;
                    });
                    return wait;
                }
                Ok(rec) => (Cond::Matches(etag), rec.token.saturating_add(1)),
            },
        };
        // Tokens must also stay above those in the replica (a release deletes lock.json).
        let token = match self.store.replica_token() {
            Ok(t) => token.max(t.saturating_add(1)),
            Err(e) => {
                self.set_error(format!(
                    "reading the newest lease token in the replica beside {}: {e}",
                    self.lock_url
                ));
                return poll;
            }
        };
        let sent = Instant::now();
        let rec = LeaseRecord::new(
            token,
            unix_now() + self.timing.ttl.as_secs_f64(),
            &self.owner,
        );
        let body = rec.to_json();
        self.note_write(&body, sent);
        match self.store.put(&body, &cond) {
            Ok(etag) => {
                self.become_holder(rec, etag, sent);
                self.timing.renew_every()
            }
            Err(StoreError::Precondition) | Err(StoreError::NotFound) => {
                // Another instance won, or the lock changed under us. Our own write may also have
                // landed with only its response lost (the SDK retried it into a 412): then the
                // lock is byte for byte what we sent (this write or an earlier unheard one).
                match self.store.get() {
                    Ok(Some((b, etag))) if self.own_write(&b).is_some() => {
                        let sent = self.own_write(&b).unwrap_or(sent);
                        match LeaseRecord::parse(&b) {
                            Ok(mine) => self.become_holder(mine, etag, sent),
                            Err(_) => self.become_holder(rec, etag, sent),
                        }
                        Duration::ZERO
                    }
                    Ok(Some((b, _))) => {
                        if let Ok(other) = LeaseRecord::parse(&b) {
                            let wait = self.timing.standby_wait(&other, unix_now());
                            self.update(|s| {
                                s.seen = Some(other);
                                s.resolved = true;
                                s.error = None;
                            });
                            return wait;
                        }
                        Duration::ZERO
                    }
                    _ => Duration::ZERO,
                }
            }
            Err(StoreError::Conflict) => jitter(CONFLICT_RETRY),
            Err(StoreError::Other(e)) => {
                self.set_error(format!("acquiring the lease {}: {e}", self.lock_url));
                poll
            }
        }
    }

    fn become_holder(&self, rec: LeaseRecord, etag: String, sent: Instant) {
        self.fence
            .grant(rec.token, self.timing.fence_deadline(sent));
        self.update(|s| {
            s.held = Some(Held {
                token: rec.token,
                etag,
                sent,
            });
            s.lapsed = false;
            s.epoch += 1;
            s.seen = Some(rec);
            s.resolved = true;
            s.error = None;
            s.lost = None;
        });
    }

    /// Renew when due; returns how long to wait before the next step.
    fn renew_step(&self, h: Held) -> Duration {
        let due = h.sent + self.timing.renew_every();
        let now = Instant::now();
        if now < due && !self.lock().lapsed {
            return due - now;
        }
        let sent = Instant::now();
        let rec = LeaseRecord::new(
            h.token,
            unix_now() + self.timing.ttl.as_secs_f64(),
            &self.owner,
        );
        let body = rec.to_json();
        self.note_write(&body, sent);
        let outcome = match self.store.put(&body, &Cond::Matches(h.etag.clone())) {
            Err(StoreError::Precondition) | Err(StoreError::NotFound) => {
                // As in acquire: a lost response to our own successful write looks like this, be
                // it this write (the SDK retried it into a 412) or an earlier one whose every
                // attempt seemed to fail. Then the lease is still ours, as of when that write
                // was sent; the fence runs from then, and the next renewal is due from then.
                match self.store.get() {
                    Ok(Some((b, etag))) => match (self.own_write(&b), LeaseRecord::parse(&b)) {
                        (Some(sent), Ok(mine)) if mine.token == h.token => Ok((etag, sent, mine)),
                        (_, parsed) => Err((StoreError::Precondition, parsed.ok())),
                    },
                    Ok(None) => Err((StoreError::Precondition, None)),
                    Err(e) => Err((e, None)),
                }
            }
            Ok(etag) => Ok((etag, sent, rec)),
            Err(e) => Err((e, None)),
        };
        match outcome {
            Ok((etag, sent, rec)) => {
                self.fence.grant(h.token, self.timing.fence_deadline(sent));
                self.update(|s| {
                    s.held = Some(Held {
                        token: h.token,
                        etag,
                        sent,
                    });
                    if s.lapsed {
                        // Nobody took over (our ETag still matched), but the replicator paused:
                        // a new epoch makes it re-read the replica before it continues.
                        s.lapsed = false;
                        s.epoch += 1;
                        s.lost = None;
                    }
                    s.seen = Some(rec);
                    s.error = None;
                });
                // Due one interval after the write that holds (an earlier one, if it was unheard).
                (sent + self.timing.renew_every()).saturating_duration_since(Instant::now())
            }
            Err((StoreError::Precondition, seen)) => {
                self.fence.revoke();
                let by = seen
                    .as_ref()
                    .map(|r| format!(" by {} (token {})", r.owner, r.token))
                    .unwrap_or_default();
                let msg = format!(
                    "lost lease: lock.json was taken over{by} before this instance could renew token {}",
                    h.token
                );
                self.update(|s| {
                    s.held = None;
                    s.lapsed = false;
                    s.lost = Some(msg);
                    if seen.is_some() {
                        s.seen = seen;
                    }
                });
                Duration::ZERO
            }
            Err((StoreError::Conflict, _)) => jitter(CONFLICT_RETRY),
            Err((e, _)) => {
                let deadline = self.timing.fence_deadline(h.sent);
                let lapsed = Instant::now() >= deadline;
                let msg = format!("renewing the lease {}: {e}", self.lock_url);
                self.update(|s| {
                    if lapsed && !s.lapsed {
                        s.lapsed = true;
                        s.lost = Some(format!(
                            "lost lease: token {} could not be renewed in time ({e})",
                            h.token
                        ));
                    }
                    s.error = Some(msg);
                });
                self.timing.renew_retry()
            }
        }
    }

    /// On stop: hand the lease over at once. Only while the fence is open — past it, another
    /// instance may already hold the lease, and a provider that ignored If-Match on DELETE would
    /// then delete theirs.
    fn release(&self) {
        let held = self.lock().held.clone();
        let Some(h) = held else {
            self.fence.revoke();
            return;
        };
        let open = self.fence.check().is_ok();
        self.fence.revoke();
        let mut result = Ok(());
        if open {
            result = match self.store.delete(&h.etag) {
                Ok(()) | Err(StoreError::NotFound) | Err(StoreError::Precondition) => Ok(()),
                Err(StoreError::Conflict) => self.store.delete(&h.etag),
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                // Conditional DELETE refused: write an already expired lock instead.
                let expired = LeaseRecord::new(
                    h.token,
                    unix_now() - self.timing.ttl.as_secs_f64(),
                    &self.owner,
                );
                result = match self
                    .store
                    .put(&expired.to_json(), &Cond::Matches(h.etag.clone()))
                {
                    Ok(_) | Err(StoreError::Precondition) | Err(StoreError::NotFound) => Ok(()),
                    Err(e2) => Err(StoreError::Other(format!("{e}; then {e2}"))),
                };
            }
        }
        self.update(|s| {
            s.held = None;
            s.lapsed = false;
            if let Err(e) = &result {
                s.error = Some(format!(
                    "releasing the lease {} failed ({e}); a standby takes over when it expires",
                    self.lock_url
                ));
            }
        });
    }
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis().max(1) as u64;
    d + Duration::from_millis(crate::replica_client::rand_u64() % ms)
}
