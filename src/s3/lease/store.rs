//! Where lock.json lives, and the conditional writes the protocol is made of.
//!
//! Every write is conditional: `If-None-Match: *` when there is no lock, `If-Match: <etag>` (the
//! ETag of the lock we read or wrote, verbatim) otherwise; the release is a conditional DELETE.
//! A 412 means another instance won; a 409 (ConditionalRequestConflict) is retried by the caller.
//!
//! Invariants:
//! - The store never decides anything: it maps each answer onto [`StoreError`] and the keeper
//!   (`keeper.rs`) acts on it.
//! - A provider that ignores conditional writes would let several instances "win"; the probe
//!   detects it (a second `If-None-Match: *` PUT of a probe object must fail), and the probe
//!   object is removed whatever the outcome.
//! - Lease requests bypass the fence (they are how the fence gets opened) and retry less than
//!   uploads do: each must finish well within a renewal interval.

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::runtime::Handle;

use super::fence::TOKEN_METADATA;
use super::record::{Timing, LOCK_NAME};
use crate::s3::{run, S3Client};

/// lock.json larger than this is not a lease (it is read into memory).
const MAX_LOCK_BYTES: usize = 64 * 1024;
/// Attempts per lease request: lease requests must finish well within a renewal interval, so
/// they retry less than uploads do (a failed renewal is retried by the lease loop itself).
const LEASE_ATTEMPTS: u32 = 3;

/// The condition of a lock write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// `If-None-Match: *`: only if there is no lock.
    Absent,
    /// `If-Match: <etag>`: only if the lock is still the one we read or wrote.
    Matches(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// 412: the condition failed, another instance wrote the lock.
    Precondition,
    /// 404: no lock (AWS and moto answer If-Match on a missing key this way; SeaweedFS with 412).
    NotFound,
    /// 409 ConditionalRequestConflict: a concurrent conditional write; retry.
    Conflict,
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Precondition => f.write_str("412 PreconditionFailed"),
            StoreError::NotFound => f.write_str("404 not found"),
            StoreError::Conflict => f.write_str("409 ConditionalRequestConflict"),
            StoreError::Other(m) => f.write_str(m),
        }
    }
}

/// What the conditional-write probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The provider accepted a write its condition should have refused.
    Ignored(String),
    /// The probe could not run (network, permissions); try again later.
    Inconclusive(String),
}

/// Where lock.json lives. Blocking calls, made from the lease thread.
pub trait LeaseStore: Send + Sync {
    /// `s3://bucket/path/lock.json` (no credentials).
    fn describe(&self) -> String;
    /// The lock's body and ETag (verbatim, quotes included), or None.
    fn get(&self) -> std::result::Result<Option<(Vec<u8>, String)>, StoreError>;
    /// Conditional write; returns the new ETag.
    fn put(&self, body: &str, cond: &Cond) -> std::result::Result<String, StoreError>;
    /// Conditional delete (`If-Match`).
    fn delete(&self, etag: &str) -> std::result::Result<(), StoreError>;
    /// Check that conditional writes are honoured.
    fn probe(&self) -> std::result::Result<(), ProbeError>;
    /// The highest lease token on the newest object of each level (0 if none). A new holder's
    /// token is above it, so tokens never decrease in TXID order even after a release deleted
    /// lock.json. (A holder that wrote nothing may see its token reused; no object carries it.)
    fn replica_token(&self) -> std::result::Result<u64, StoreError> {
        Ok(0)
    }
}

/// lock.json in an S3 bucket, through a client tuned for small, quick requests.
pub struct S3LeaseStore {
    client: Client,
    rt: Handle,
    bucket: String,
    prefix: String,
    key: String,
    display: String,
}

impl S3LeaseStore {
    pub fn new(s3: &S3Client, timing: Timing) -> S3LeaseStore {
        // A lease request must finish well within a renewal interval; the lease loop retries.
        let attempt = (timing.ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let conf = s3
            .base_conf
            .to_builder()
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(LEASE_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(1)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(attempt)
                    .operation_timeout(attempt * 2)
                    .build(),
            )
            .build();
        let prefix = s3.target.path.clone();
        let key = format!("{prefix}/{LOCK_NAME}");
        S3LeaseStore {
            client: Client::from_conf(conf),
            rt: s3.rt.clone(),
            bucket: s3.target.bucket.clone(),
            display: format!("s3://{}/{key}", s3.target.bucket),
            prefix,
            key,
        }
    }

    fn put_key(
        &self,
        key: &str,
        body: &str,
        cond: &Cond,
    ) -> std::result::Result<String, StoreError> {
        let client = self.client.clone();
        let (bucket, key, body, cond) = (
            self.bucket.clone(),
            key.to_string(),
            body.as_bytes().to_vec(),
            cond.clone(),
        );
        run(&self.rt, async move {
            let mut req = client
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(body));
            req = match &cond {
                Cond::Absent => req.if_none_match("*"),
                Cond::Matches(etag) => req.if_match(etag),
            };
            let out = req
                .send()
                .await
                .map_err(|e| classify("writing", &format!("s3://{bucket}/{key}"), e))?;
            out.e_tag().map(str::to_string).ok_or_else(|| {
                StoreError::Other(format!(
                    "writing s3://{bucket}/{key}: the response carries no ETag, so the lease could not be renewed"
                ))
            })
        })
    }

    fn delete_key(&self, key: &str, etag: Option<&str>) -> std::result::Result<(), StoreError> {
        let client = self.client.clone();
        let (bucket, key, etag) = (
            self.bucket.clone(),
            key.to_string(),
            etag.map(str::to_string),
        );
        run(&self.rt, async move {
            client
                .delete_object()
                .bucket(&bucket)
                .key(&key)
                .set_if_match(etag)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("deleting", &format!("s3://{bucket}/{key}"), e))
        })
    }
}

/// Map an SDK error onto the lease's outcomes (by HTTP status, then by error code).
fn classify<E, R>(what: &str, url: &str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    let status = match &e {
        SdkError::ServiceError(se) => {
            let raw: &dyn std::any::Any = se.raw();
            raw.downcast_ref::<aws_sdk_s3::config::http::HttpResponse>()
                .map(|r| r.status().as_u16())
        }
        _ => None,
    };
    match (status, e.code()) {
        (Some(412), _) | (_, Some("PreconditionFailed")) => StoreError::Precondition,
        (Some(409), _) | (_, Some("ConditionalRequestConflict")) => StoreError::Conflict,
        (Some(404), _) | (_, Some("NoSuchKey")) | (_, Some("NotFound")) => StoreError::NotFound,
        _ => StoreError::Other(crate::s3::sdk_error(what, url, e).to_string()),
    }
}

impl LeaseStore for S3LeaseStore {
    fn describe(&self) -> String {
        self.display.clone()
    }

    fn get(&self) -> std::result::Result<Option<(Vec<u8>, String)>, StoreError> {
        let client = self.client.clone();
        let (bucket, key) = (self.bucket.clone(), self.key.clone());
        let r = run(&self.rt, async move {
            let url = format!("s3://{bucket}/{key}");
            let out = client
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| classify("reading", &url, e))?;
            if out.content_length().unwrap_or(0) > MAX_LOCK_BYTES as i64 {
                return Err(StoreError::Other(format!(
                    "{url} is larger than {MAX_LOCK_BYTES} bytes: not a lease"
                )));
            }
            let etag = out.e_tag().map(str::to_string).ok_or_else(|| {
                StoreError::Other(format!("reading {url}: the response carries no ETag"))
            })?;
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| StoreError::Other(format!("reading {url}: {e}")))?
                .into_bytes()
                .to_vec();
            Ok((body, etag))
        });
        match r {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put(&self, body: &str, cond: &Cond) -> std::result::Result<String, StoreError> {
        self.put_key(&self.key, body, cond)
    }

    fn delete(&self, etag: &str) -> std::result::Result<(), StoreError> {
        self.delete_key(&self.key, Some(etag))
    }

    fn probe(&self) -> std::result::Result<(), ProbeError> {
        let key = format!(
            "{}/.lease-probe-{:016x}",
            self.prefix,
            crate::replica_client::rand_u64()
        );
        let url = format!("s3://{}/{key}", self.bucket);
        let body = "{\"probe\": \"litestream lease: checking conditional writes\"}";
        let inconclusive = |e: StoreError| {
            ProbeError::Inconclusive(format!(
                "checking that the S3 provider honours conditional writes ({url}): {e}"
            ))
        };
        let first = match self.put_key(&key, body, &Cond::Absent) {
            Ok(etag) => etag,
            Err(e) => {
                // The object may exist all the same: a PUT whose answer was lost (the SDK's retry
                // of it then meets our own object: 412). Remove it, or it is litter in the replica.
                let _ = self.delete_key(&key, None);
                return Err(inconclusive(e));
            }
        };
        let verdict = (|| {
            match self.put_key(&key, body, &Cond::Absent) {
                Err(StoreError::Precondition) | Err(StoreError::Conflict) => {}
                Ok(_) => {
                    return Err(ProbeError::Ignored(
                        "a second PUT with If-None-Match: * of an existing object succeeded".into(),
                    ))
                }
                Err(e) => return Err(inconclusive(e)),
            }
            let wrong = format!("\"{}-litestream-probe\"", first.trim_matches('"'));
            match self.put_key(&key, body, &Cond::Matches(wrong)) {
                Err(StoreError::Precondition) | Err(StoreError::Conflict) => Ok(()),
                Ok(_) => Err(ProbeError::Ignored(
                    "a PUT with If-Match: <a different ETag> succeeded".into(),
                )),
                Err(e) => Err(inconclusive(e)),
            }
        })();
        let _ = self.delete_key(&key, None);
        verdict
    }

    fn replica_token(&self) -> std::result::Result<u64, StoreError> {
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let base = self.prefix.clone();
        // The newest file of each level (by TXID) is the last one written there, so the highest
        // token among them is the newest token of any holder that wrote anything.
        run(&self.rt, async move {
            let mut best = 0u64;
            for level in crate::replica_client::all_levels() {
                let prefix = format!("{base}/{level:04x}/");
                let url = format!("s3://{bucket}/{prefix}");
                let mut newest: Option<((u64, u64), String)> = None;
                let mut cont: Option<String> = None;
                loop {
                    let resp = client
                        .list_objects_v2()
                        .bucket(&bucket)
                        .prefix(&prefix)
                        .set_continuation_token(cont.take())
                        .send()
                        .await
                        .map_err(|e| classify("listing", &url, e))?;
                    for obj in resp.contents() {
                        let Some(key) = obj.key() else { continue };
                        let name = &key[prefix.len().min(key.len())..];
                        if let Some((min, max)) = crate::ltx::parse_file_name(name) {
                            if newest.as_ref().is_none_or(|(n, _)| (max, min) > *n) {
                                newest = Some(((max, min), key.to_string()));
                            }
                        }
                    }
                    match resp.next_continuation_token() {
                        Some(t) if resp.is_truncated() == Some(true) => cont = Some(t.to_string()),
                        _ => break,
                    }
                }
                let Some((_, key)) = newest else { continue };
                let head = match client.head_object().bucket(&bucket).key(&key).send().await {
                    Ok(h) => h,
                    Err(e) => match classify(
                        "reading the metadata of",
                        &format!("s3://{bucket}/{key}"),
                        e,
                    ) {
                        // Removed meanwhile (retention): a newer file took its place.
                        StoreError::NotFound => continue,
                        e => return Err(e),
                    },
                };
                let token = head
                    .metadata()
                    .and_then(|m| m.get(TOKEN_METADATA))
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                best = best.max(token);
            }
            Ok(best)
        })
    }
}

/// The error `litestream_start()` fails with on a provider that ignores conditional writes.
pub fn ignored_message(store: &str, detail: &str) -> String {
    format!(
        "the S3 provider ignores conditional writes ({detail}; probed beside {store}), so the lease \
         cannot guarantee that only one instance replicates this database; if only one instance \
         ever replicates it, turn the lease off with litestream_configure('lease', 'off')"
    )
}
