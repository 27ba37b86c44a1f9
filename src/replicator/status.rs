//! `litestream_status()`: what one database's replication looks like right now, as a typed
//! record serialized to JSON with the keys the README documents.
//!
//! Invariant: nothing here can hold a secret — the replica is shown in its redacted display form
//! and errors never carry credentials (see `error`).

use serde::Serialize;

use crate::s3::lease::LeaseStatus;

/// The status of one database: the same keys whether or not it is being replicated (what only a
/// running replicator knows is `null` or zero otherwise).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// `running`, `error`, `standby` or `stopped`.
    pub state: &'static str,
    /// `primary` (replicates: holds the lease, or no lease), `standby` (another instance holds
    /// it) or `following` (a standby that keeps the database equal to the replica).
    pub role: Option<&'static str>,
    /// The follower's position and counters (`follower::FollowStatus`), once it has run.
    pub follow: Option<crate::follower::FollowStatus>,
    pub db: Option<String>,
    pub replica: Option<String>,
    pub txid: Option<String>,
    pub last_sync_at: Option<String>,
    pub lag_ms: u64,
    pub bytes_uploaded: u64,
    pub objects_uploaded: u64,
    pub multipart_uploads: u64,
    /// The oldest upload in flight.
    pub upload: Option<serde_json::Value>,
    pub snapshots: u64,
    pub last_snapshot_reason: Option<String>,
    pub checkpoints: u64,
    pub checkpoints_deferred: u64,
    /// Checkpoints of other connections our read transaction stepped aside for.
    pub checkpoints_yielded: u64,
    /// Checkpoints run with writers free to commit: they copy what they can and leave the WAL's
    /// restart to a later one.
    pub checkpoints_unlocked: u64,
    pub wal_size: u64,
    pub sync_interval: Option<String>,
    pub part_size: Option<u64>,
    pub concurrency: Option<usize>,
    pub last_error: Option<String>,
    pub compaction: Option<serde_json::Value>,
    pub lease: Option<LeaseStatus>,
    /// Restores running in this process (every database's status shows them).
    pub restores: Option<serde_json::Value>,
}

impl Status {
    /// The status of a database this process does not replicate.
    pub fn stopped(db: Option<String>, replica: Option<String>) -> Status {
        Status {
            state: "stopped",
            db,
            replica,
            ..Status::default()
        }
    }
}
