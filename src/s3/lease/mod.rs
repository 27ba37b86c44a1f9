//! The distributed lease: exactly one instance replicates a database to a given S3 replica path.
//!
//! Three concepts, one file each (plus the record they share):
//! - the protocol: `record` (lock.json and the timing derived from the TTL), `store` (the
//!   conditional writes against S3, and the probe that they are honoured) and `keeper` (the
//!   thread that acquires, renews and releases, and the [`Lease`] handle the replicator reads);
//! - local coordination (`local`): an `flock` in `.<db>-litestream/` so only one process per host
//!   polls S3, closed in a forked child;
//! - fencing (`fence`): the [`Fence`] every upload passes, the SDK interceptor that enforces it
//!   at the wire, and the token metadata each object carries.
//!
//! Invariants:
//! - A holder uploads only while its fence is open, and its fence closes before its lease can
//!   expire by its own clock; standbys take over only after the expiry by theirs.
//! - `litestream_start()` fails on a provider seen to ignore conditional writes ([`prepare`]):
//!   there the lease could not keep two instances from replicating at once.

mod fence;
mod keeper;
mod local;
mod record;
mod store;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use once_cell::sync::Lazy;

pub use fence::{Fence, FenceInterceptor, TOKEN_METADATA};
pub use keeper::{Lease, LeaseStatus, Role, View};
pub use local::{after_fork, LOCAL_LOCK_NAME};
pub use record::Timing;
pub use store::LeaseStore;

use crate::error::{Error, Result};
use crate::s3::S3Client;
use store::{ignored_message, ProbeError, S3LeaseStore};

/// Providers (endpoint + bucket) already seen to honour conditional writes in this process.
static PROBED_OK: Lazy<Mutex<HashSet<String>>> = Lazy::new(|| Mutex::new(Default::default()));

/// What the replicator needs to run a lease.
pub struct LeaseSetup {
    pub store: Arc<dyn LeaseStore>,
    pub fence: Arc<Fence>,
    pub timing: Timing,
    pub owner: String,
    /// The conditional-write probe already passed.
    pub probed: bool,
}

/// Called by `litestream_start()`: set up the lease of an S3 replica and probe the provider.
/// Fails only when the provider is seen to ignore conditional writes; if the probe cannot run
/// (network), the lease thread repeats it before it ever acquires.
pub fn prepare(s3: &S3Client, ttl: Duration, owner: &str) -> Result<LeaseSetup> {
    let timing = Timing::new(ttl);
    let store = S3LeaseStore::new(s3, timing);
    let provider = format!(
        "{}|{}",
        s3.target.endpoint.as_deref().unwrap_or("aws"),
        s3.target.bucket
    );
    let known = PROBED_OK
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&provider);
    let probed = known
        || match store.probe() {
            Ok(()) => {
                PROBED_OK
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(provider);
                true
            }
            Err(ProbeError::Ignored(detail)) => {
                return Err(Error::msg(ignored_message(&store.describe(), &detail)))
            }
            Err(ProbeError::Inconclusive(_)) => false,
        };
    s3.fence.enable();
    Ok(LeaseSetup {
        store: Arc::new(store),
        fence: s3.fence.clone(),
        timing,
        owner: owner.to_string(),
        probed,
    })
}
