//! The replicator's side of following (the follower itself is `crate::follower`): a standby of
//! another host runs one follower step per standby period, and on acquiring the lease lets the
//! follower catch up with the replica's max before the usual acquisition path runs.
//!
//! Invariants:
//! - The worker never takes over (never uploads) while a follower exists that has not caught
//!   up: the saved position it then continues from is the replica's max, so the acquisition
//!   path continues incrementally instead of publishing a stale database as a snapshot.
//! - The follower (and with it the WAL write lock) is dropped before the worker replicates, so
//!   the application's writes are accepted from then on.

use std::time::Duration;

use super::worker::Worker;
use super::RunState;
use crate::follower::{standby_action, Follower, Injector, Settings, StandbyAction, StandbyFacts};
use crate::replica_client;
use crate::s3::lease::{Lease, Role};
use crate::state;

/// After a failed catch-up at acquisition, try again after this long.
pub(super) const CATCH_UP_RETRY: Duration = Duration::from_millis(500);
/// With a lease, `litestream_start()` takes the WAL write lock (the gate): writes wait until this
/// instance knows its role. If the lease cannot say (S3 unreachable) within this long, the gate
/// opens and writes are accepted as without a follower.
const GATE_MAX: Duration = Duration::from_secs(5);

/// In the meta directory: the lease owner string of the instance that last took the lease to
/// replicate this file.
const HOLDER_FILE: &str = "lease-holder";

impl Worker {
    /// Tell a waiting `litestream_start()` that writes are now accepted or refused for good.
    fn settle_gate(&self) {
        self.shared.lock().gate_settled = true;
        self.shared.cond.notify_all();
    }

    /// Remember that this instance replicates the file from now on (see `standby_follow`), and
    /// that writes are accepted from now on.
    fn record_holder(&self) {
        self.settle_gate();
        if let Some(l) = &self.lease {
            let _ = std::fs::create_dir_all(&self.meta);
            let _ = std::fs::write(self.meta.join(HOLDER_FILE), l.view().me);
        }
    }

    /// The standby part of a standby period: follow when another instance is known to hold the
    /// lease and this process is the host's replicator of the file; open the gate once the role
    /// is known otherwise (a same-host sibling shares the file with the holder: it must not
    /// keep its writes off). Some((error, next step)) when a follower step ran.
    pub(super) fn standby_follow(&mut self, lease: &Lease) -> Option<(Option<String>, Duration)> {
        let view = lease.view();
        let another_holds = view.resolved && view.role != Role::Holder;
        // The holder is the instance that last replicated this very file (this process's
        // predecessor, killed, its lease not yet expired): this database is the replica's
        // source, not a standby of another host — it waits for the lease as before.
        let predecessor = view.lock.as_ref().is_some_and(|l| {
            std::fs::read_to_string(self.meta.join(HOLDER_FILE)).is_ok_and(|o| o == l.owner)
        });
        let facts = StandbyFacts {
            local_claim: lease.has_local_claim(),
            another_holds,
            resolved: view.resolved,
            predecessor,
            following: self.follower.is_some(),
            gate_held_for: self.gate.as_ref().map(|(_, since)| since.elapsed()),
            gate_max: GATE_MAX,
        };
        match standby_action(&facts) {
            StandbyAction::Follow => return Some(self.follow_step()),
            StandbyAction::OpenGate => {
                self.gate = None;
                self.settle_gate();
            }
            StandbyAction::Wait => {}
        }
        None
    }

    /// One follower step (creating the follower on first use). Returns the error to show, if
    /// any, and when the follower wants to run next.
    pub(super) fn follow_step(&mut self) -> (Option<String>, Duration) {
        if self.follower.is_none() {
            match self.new_follower() {
                Ok(f) => {
                    self.follower = Some(f);
                    self.shared.lock().following = true;
                    self.settle_gate();
                }
                Err(e) => {
                    // Cannot follow (no shared memory, say): at least keep the WAL bounded.
                    let checkpoint = self.standby_checkpoint().err();
                    let why = match checkpoint {
                        Some(c) => format!("cannot follow the replica: {e}; {c}"),
                        None => format!("cannot follow the replica: {e}"),
                    };
                    return (Some(why), Duration::from_secs(1));
                }
            }
        }
        let Some(f) = self.follower.as_mut() else {
            return (None, Duration::from_secs(1));
        };
        let r = f.step();
        let status = f.status();
        let mut g = self.shared.lock();
        g.follow = Some(status);
        g.following = true;
        drop(g);
        match r {
            Ok(next) => (None, next),
            Err(e) => (Some(format!("follow: {e}")), Duration::from_secs(1)),
        }
    }

    fn new_follower(&mut self) -> crate::error::Result<Follower> {
        let inj = match self.gate.take() {
            Some((gate, _)) => gate,
            None => Injector::new(self.open_connection()?, &self.wal_path, self.page_size)?,
        };
        let cfg = &self.shared.cfg;
        Follower::new(
            inj,
            self.open_connection()?,
            self.client.clone(),
            &self.db_file_path,
            self.page_size,
            Settings {
                poll: cfg.sync_interval,
                checkpoint_frames: cfg.min_checkpoint_page_count,
            },
        )
    }

    /// Taking the lease without a follower: whether the replica holds a history this database is
    /// not known to be part of (no saved position at or past the replica's max, and the WAL does
    /// not continue its newest file). Publishing the database then would replace the replica's
    /// latest state with an unrelated one; it follows first instead (its content kept aside).
    fn must_follow_first(&self) -> crate::error::Result<bool> {
        let max = replica_client::replica_max_txid(self.client.as_ref())?;
        if max == 0 {
            return Ok(false);
        }
        let mut known = state::load(&self.meta, &self.client.describe());
        known.extend(self.pos);
        known.extend(self.saved.iter().copied());
        if known.iter().any(|p| p.txid >= max) {
            // This database wrote that TXID (or later ones the replica lost): it is the source;
            // the acquisition path continues it or snapshots it, as before.
            return Ok(false);
        }
        Ok(self.position_from_replica(max)?.is_none())
    }

    /// Make sure a follower exists when the acquisition must catch up first.
    fn follower_for_acquisition(&mut self) -> crate::error::Result<()> {
        if self.follower.is_none() && self.must_follow_first()? {
            self.follower = Some(self.new_follower()?);
            self.shared.lock().following = true;
        }
        Ok(())
    }

    /// On acquiring the lease: a follower (made if the acquisition must catch up first) applies
    /// everything up to the replica's max. None: nothing to follow, writes are accepted from now
    /// on (gate opened, holder recorded).
    fn catch_up_before_holding(&mut self) -> Option<crate::error::Result<()>> {
        Some(
            match (self.follower_for_acquisition(), self.follower.as_mut()) {
                (Err(e), _) => Err(e),
                (Ok(()), None) => {
                    self.gate = None;
                    self.record_holder();
                    return None;
                }
                (Ok(()), Some(f)) => f.catch_up().map(|_| ()),
            },
        )
    }

    /// Just acquired the lease: a follower applies everything up to the replica's max and is
    /// dropped. false: it could not, and the worker must not take over yet (its caller retries
    /// after `CATCH_UP_RETRY`).
    pub(super) fn finish_following(&mut self) -> bool {
        let Some(r) = self.catch_up_before_holding() else {
            return true;
        };
        let status = self.follower.as_ref().map(|f| f.status());
        let mut g = self.shared.lock();
        if status.is_some() {
            g.follow = status;
        }
        match r {
            Ok(_) => {
                g.following = false;
                drop(g);
                self.follower = None;
                self.gate = None;
                self.record_holder();
                true
            }
            Err(e) => {
                g.state = RunState::Error;
                g.last_error = Some(format!(
                    "holding the lease, but not yet caught up with the replica (writes stay refused): {e}"
                ));
                false
            }
        }
    }

    /// `finish_following` at `litestream_stop()`: one attempt. false: the worker stops without
    /// replicating (status says why) rather than publish a database behind the replica.
    pub(super) fn finish_following_at_stop(&mut self) -> bool {
        let Some(r) = self.catch_up_before_holding() else {
            return true;
        };
        self.gate = None;
        match r {
            Ok(_) => {
                self.follower = None;
                self.shared.lock().following = false;
                self.record_holder();
                true
            }
            Err(e) => {
                self.follower = None;
                let mut g = self.shared.lock();
                g.following = false;
                g.level9 = None;
                g.state = RunState::Stopped;
                g.last_error = Some(format!(
                    "stopped while catching up with the replica; nothing was uploaded: {e}"
                ));
                drop(g);
                self.shared.cond.notify_all();
                false
            }
        }
    }
}
