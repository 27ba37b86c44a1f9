//! The distributed lease: exactly one instance replicates a database to a given S3 replica path.
//!
//! The lease is `<path>/lock.json`, `{"token": 1, "expires_at": 1740151473.206179, "owner":
//! "hostname:pid"}`, written only with S3 conditional writes: `If-None-Match: *` when there is no
//! lock, `If-Match: <etag>` (the ETag of the lock we read, verbatim) to take over an expired one
//! (token + 1), to renew ours (same token) and to release it (conditional DELETE, or an already
//! expired write). A lock written by Litestream's Go `s3.Leaser` (`"generation"`, RFC 3339
//! `expires_at`) is read and respected until it expires. A 412 means another instance won; a 409
//! (ConditionalRequestConflict) is retried.
//!
//! Processes on one host first take an advisory `flock` on `<meta dir>/lease.lock` (never a POSIX
//! `fcntl` lock: those belong to SQLite and are dropped by any close of the file). Only the process
//! holding it talks to S3 about the lease; the others wait on the flock, which the kernel frees the
//! moment its holder dies. The flock holder writes what it saw into that file so the others can
//! show who holds the lease without asking S3.
//!
//! Invariants:
//! - Fencing: a holder uploads only while `now < sent + ttl − margin` on its monotonic clock, where
//!   `sent` is when it sent its last successful lock write (whose `expires_at` is `sent + ttl` by its
//!   wall clock). Standbys take over only after `expires_at` by theirs, so with clock skew below the
//!   margin the old holder has stopped before anyone else starts. [`Fence`] is checked by the
//!   replicator before each upload and by [`FenceInterceptor`] on every mutating S3 request just
//!   before it goes on the wire, so even a holder that was frozen (SIGSTOP) between the two checks
//!   sends nothing once it wakes up past its deadline.
//! - Every object uploaded under a lease carries its token in user metadata
//!   (`litestream-lease-token`), so a checker can prove that tokens never decrease in TXID order.
//! - A provider that ignores conditional writes would let several instances "win"; it is detected
//!   (a second `If-None-Match: *` PUT of a probe object must fail) and refused.
//! - Lock order: the replicator may call into the lease while holding its own lock; the lease never
//!   calls the replicator's waker while holding its own.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use once_cell::sync::Lazy;
use tokio::runtime::Handle;

use super::{run, S3Client};
use crate::error::{Error, Result};

/// User metadata key carrying the lease token on every uploaded object.
pub const TOKEN_METADATA: &str = "litestream-lease-token";
/// The lock object, beside the replica's level directories (Litestream's `s3.Leaser` key).
pub const LOCK_NAME: &str = "lock.json";
/// The local advisory lock file inside the database's meta directory.
pub const LOCAL_LOCK_NAME: &str = "lease.lock";
/// How often a process waiting for the local flock tries again. A dead holder frees it at once,
/// so this bounds the local hand-over delay; a failed non-blocking flock costs one syscall.
const LOCAL_POLL: Duration = Duration::from_millis(200);
/// A standby re-reads lock.json at least this often, so a released lease is taken at once.
const MAX_STANDBY_POLL: Duration = Duration::from_secs(1);
/// A standby wakes this long after the holder's `expires_at`: the comparison is strict
/// (`now > expires_at`), and the wake-up must not land just before it.
const EXPIRY_SLACK: Duration = Duration::from_millis(5);
/// Pause before retrying after a 409 ConditionalRequestConflict (another conditional write to the
/// same key was in flight); jittered so that racers do not collide again.
const CONFLICT_RETRY: Duration = Duration::from_millis(50);
/// Retry period of a failed renewal (network error): several tries fit before the fence closes.
const MAX_RENEW_RETRY: Duration = Duration::from_secs(1);
/// Our own recent lock.json writes remembered (body, when sent): enough to recognise a write of
/// ours that landed although we never heard its answer (see `Keeper::own_write`).
const OWN_WRITES_KEPT: usize = 8;
/// lock.json larger than this is not a lease (it is read into memory).
const MAX_LOCK_BYTES: usize = 64 * 1024;
/// Attempts per lease request: lease requests must finish well within a renewal interval, so
/// they retry less than uploads do (a failed renewal is retried by the lease loop itself).
const LEASE_ATTEMPTS: u32 = 3;

// ---------------------------------------------------------------------------------------------
// lock.json
// ---------------------------------------------------------------------------------------------

/// Which program's format a lock was read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockFormat {
    /// `{"token": N, "expires_at": <Unix seconds>, "owner": "…"}` (the guide's format; ours).
    Token,
    /// Litestream's Go `s3.Leaser`: `{"generation": N, "expires_at": "<RFC 3339>", "owner": "…"}`.
    GoLeaser,
}

/// The content of `lock.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRecord {
    /// Lease generation; each new holder writes the previous token + 1.
    pub token: u64,
    /// Unix seconds (wall clock of the writer) after which the lease is free.
    pub expires_at: f64,
    pub owner: String,
    pub format: LockFormat,
}

impl LeaseRecord {
    pub fn new(token: u64, expires_at: f64, owner: &str) -> LeaseRecord {
        LeaseRecord {
            token,
            expires_at,
            owner: owner.to_string(),
            format: LockFormat::Token,
        }
    }

    /// The body we write, exactly in the guide's layout and key order:
    /// `{"token": 1, "expires_at": 1740151473.206179, "owner": "hostname:pid"}`.
    pub fn to_json(&self) -> String {
        let owner = serde_json::Value::String(self.owner.clone()).to_string();
        format!(
            "{{\"token\": {}, \"expires_at\": {}, \"owner\": {owner}}}",
            self.token,
            format_unix_seconds(self.expires_at)
        )
    }

    /// Reads either format. Anything else is an error: a lock we cannot understand is never
    /// overwritten.
    pub fn parse(body: &[u8]) -> std::result::Result<LeaseRecord, String> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let owner = match obj.get("owner") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err("\"owner\" is not a string".into()),
        };
        let (token, format) = if let Some(t) = obj.get("token") {
            (
                t.as_u64().ok_or("\"token\" is not a whole number ≥ 0")?,
                LockFormat::Token,
            )
        } else if let Some(g) = obj.get("generation") {
            (
                g.as_u64()
                    .ok_or("\"generation\" is not a whole number ≥ 0")?,
                LockFormat::GoLeaser,
            )
        } else {
            return Err("neither \"token\" nor \"generation\" is present".into());
        };
        let expires_at = match obj.get("expires_at") {
            Some(serde_json::Value::Number(n)) => {
                n.as_f64().ok_or("\"expires_at\" is out of range")?
            }
            Some(serde_json::Value::String(s)) => parse_rfc3339(s)?,
            _ => return Err("\"expires_at\" is missing or neither a number nor a time".into()),
        };
        if !expires_at.is_finite() {
            return Err("\"expires_at\" is not finite".into());
        }
        Ok(LeaseRecord {
            token,
            expires_at,
            owner,
            format,
        })
    }

    /// Free to take: strictly past `expires_at` (Litestream: `time.Now().After(expires_at)`).
    pub fn expired(&self, now: f64) -> bool {
        now > self.expires_at
    }
}

/// Unix seconds with microseconds, as in the guide's example (`1740151473.206179`).
pub fn format_unix_seconds(t: f64) -> String {
    format!("{t:.6}")
}

/// RFC 3339 with any offset (Go writes the local offset, e.g. `-06:00`) → Unix seconds.
pub fn parse_rfc3339(s: &str) -> std::result::Result<f64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("\"expires_at\" {s:?} is not an RFC 3339 time ({e})"))?;
    Ok(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// Unix seconds → `2025-02-21T15:24:33.206Z`, for messages.
pub fn format_rfc3339(t: f64) -> String {
    crate::replica_client::format_timestamp_ms((t * 1000.0).round() as i64)
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------------------

/// Every period of the protocol, derived from the TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub ttl: Duration,
}

impl Timing {
    pub fn new(ttl: Duration) -> Timing {
        Timing { ttl }
    }

    /// The holder renews every third of the TTL: two renewals can fail before the fence closes.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How long before its lease ends (by its own clock) a holder stops uploading: a fifth of the
    /// TTL, at least a second (clock skew, request latency), but never more than a third, so the
    /// fence always stays open past the next renewal.
    pub fn fence_margin(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_secs(1)).min(self.ttl / 3)
    }

    /// Last moment a holder may upload after a lock write sent at `sent`.
    pub fn fence_deadline(&self, sent: Instant) -> Instant {
        sent + self.ttl - self.fence_margin()
    }

    /// How often a standby reads lock.json: at most a second (a released lease is taken at once),
    /// more often for short TTLs.
    pub fn standby_poll(&self) -> Duration {
        (self.ttl / 3).min(MAX_STANDBY_POLL)
    }

    /// How long a standby that saw `rec` sleeps: until the next poll, or just past the expiry.
    pub fn standby_wait(&self, rec: &LeaseRecord, now: f64) -> Duration {
        let until_expiry = rec.expires_at - now;
        let poll = self.standby_poll();
        if until_expiry <= 0.0 {
            return Duration::ZERO;
        }
        let to_expiry =
            Duration::from_secs_f64(until_expiry.min(poll.as_secs_f64())) + EXPIRY_SLACK;
        to_expiry.min(poll)
    }

    /// Retry period of a failed renewal.
    pub fn renew_retry(&self) -> Duration {
        (self.ttl / 12).clamp(Duration::from_millis(50), MAX_RENEW_RETRY)
    }
}

// ---------------------------------------------------------------------------------------------
// Fence
// ---------------------------------------------------------------------------------------------

/// Process-local start of the monotonic clock, so deadlines fit in plain numbers.
static BASE: Lazy<Instant> = Lazy::new(Instant::now);

/// Whether this instance may write to the replica now, and under which token. Disabled (the
/// default, lease off) it allows everything and adds no token.
#[derive(Debug, Default)]
pub struct Fence {
    inner: Mutex<FenceState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct FenceState {
    enabled: bool,
    token: u64,
    /// Deadline as an offset from BASE; None = not held.
    deadline: Option<Duration>,
}

impl Fence {
    pub fn new() -> Fence {
        Fence::default()
    }

    fn state(&self) -> MutexGuard<'_, FenceState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on writes need a held lease.
    pub fn enable(&self) {
        let mut s = self.state();
        s.enabled = true;
        s.deadline = None;
    }

    pub fn grant(&self, token: u64, deadline: Instant) {
        let mut s = self.state();
        s.token = token;
        s.deadline = Some(deadline.saturating_duration_since(*BASE));
    }

    pub fn revoke(&self) {
        self.state().deadline = None;
    }

    pub fn enabled(&self) -> bool {
        self.state().enabled
    }

    /// Ok when writes are allowed right now.
    pub fn check(&self) -> std::result::Result<(), String> {
        let s = *self.state();
        if !s.enabled {
            return Ok(());
        }
        match s.deadline {
            Some(d) if BASE.elapsed() < d => Ok(()),
            Some(_) => Err(format!(
                "lost lease: lease token {} was not renewed in time, so this instance stopped writing to the replica",
                s.token
            )),
            None => Err("this instance does not hold the lease, so it does not write to the replica".into()),
        }
    }

    /// The token to tag uploads with (None when the lease is off).
    pub fn token(&self) -> Option<u64> {
        let s = *self.state();
        (s.enabled && s.token > 0).then_some(s.token)
    }
}

/// Refuses every mutating S3 request (PUT, POST, DELETE; not AbortMultipartUpload) while the fence
/// is closed, at the last moment before the request is transmitted (after signing, before the
/// bytes go out).
#[derive(Debug)]
pub struct FenceInterceptor(pub Arc<Fence>);

impl Intercept for FenceInterceptor {
    fn name(&self) -> &'static str {
        "LitestreamLeaseFence"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let request = context.request();
        match request.method() {
            "GET" | "HEAD" => Ok(()),
            // AbortMultipartUpload changes no object; letting it through leaves no orphaned parts.
            "DELETE" if request.uri().contains("uploadId=") => Ok(()),
            _ => self.0.check().map_err(BoxError::from),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store: lock.json operations
// ---------------------------------------------------------------------------------------------

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
        _ => StoreError::Other(super::sdk_error(what, url, e).to_string()),
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

/// Providers (endpoint + bucket) already seen to honour conditional writes in this process.
static PROBED_OK: Lazy<Mutex<std::collections::HashSet<String>>> =
    Lazy::new(|| Mutex::new(Default::default()));

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

// ---------------------------------------------------------------------------------------------
// The lease keeper
// ---------------------------------------------------------------------------------------------

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

impl View {
    /// `litestream_status().lease`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "role": match self.role { Role::Holder => "holder", Role::Standby => "standby" },
            "owner": self.lock.as_ref().map(|l| l.owner.clone()),
            "token": self.lock.as_ref().map(|l| l.token),
            "expires_at": self.lock.as_ref().map(|l| l.expires_at),
            "instance": self.me,
            "local_standby": self.local_waiting,
            "error": self.error,
        })
    }

    /// The error `litestream_sync()` gives at once on a standby; None while it is unknown.
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
    /// Key of this keeper's local lock file in LOCAL_LOCKS.
    id: u64,
    store: Arc<dyn LeaseStore>,
    fence: Arc<Fence>,
    timing: Timing,
    owner: String,
    lock_url: String,
    local_path: PathBuf,
    state: Mutex<KState>,
    cond: Condvar,
    waker: Box<dyn Fn() + Send + Sync>,
}

/// A running lease: a thread that acquires, renews and finally releases lock.json.
pub struct Lease {
    keeper: Arc<Keeper>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Lease {
    /// Start the lease thread. `meta_dir` holds the local lock file; `waker` is called (without
    /// any lease lock held) whenever the role changes.
    pub fn start(
        setup: LeaseSetup,
        meta_dir: &Path,
        waker: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Lease> {
        std::fs::create_dir_all(meta_dir)
            .map_err(|e| Error::msg(format!("creating {}: {e}", meta_dir.display())))?;
        setup.fence.enable();
        let keeper = Arc::new(Keeper {
            id: NEXT_KEEPER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            lock_url: setup.store.describe(),
            store: setup.store,
            fence: setup.fence,
            timing: setup.timing,
            owner: setup.owner,
            local_path: meta_dir.join(LOCAL_LOCK_NAME),
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
            cond: Condvar::new(),
            waker,
        });
        let k = keeper.clone();
        let thread = std::thread::Builder::new()
            .name("litestream-lease".into())
            .spawn(move || {
                let k2 = k.clone();
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| k.run())) {
                    let msg = crate::error::panic_message(p.as_ref());
                    k2.fence.revoke();
                    let mut s = k2.lock();
                    s.held = None;
                    s.fatal = true;
                    s.error = Some(format!("internal error in the lease thread: {msg}"));
                    drop(s);
                    (k2.waker)();
                }
            })
            .map_err(|e| Error::msg(format!("starting the lease thread: {e}")))?;
        Ok(Lease {
            keeper,
            thread: Mutex::new(Some(thread)),
        })
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

    /// Release the lease (if held) so a standby takes over at once, and end the thread.
    pub fn stop(&self) {
        {
            let mut s = self.keeper.lock();
            s.stop = true;
        }
        self.keeper.cond.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Normally stopped by the replicator; never leave the thread renewing for nobody.
        self.stop();
    }
}

/// What a waiting process reads from the local lock file.
#[derive(serde::Serialize, serde::Deserialize)]
struct LocalNote {
    /// The process holding the local lock.
    poller: String,
    token: Option<u64>,
    expires_at: Option<f64>,
    owner: Option<String>,
}

impl Keeper {
    fn lock(&self) -> MutexGuard<'_, KState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleep up to `d`, or until stop. Returns true when stopping.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.lock();
        loop {
            if s.stop {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .cond
                .wait_timeout(s, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Apply `f` to the state; wake the replicator if the role or the error changed.
    fn update(&self, f: impl FnOnce(&mut KState)) {
        let mut s = self.lock();
        let before = (
            s.held.is_some(),
            s.lapsed,
            s.epoch,
            s.resolved,
            s.error.clone(),
            s.lost.clone(),
        );
        f(&mut s);
        let after = (
            s.held.is_some(),
            s.lapsed,
            s.epoch,
            s.resolved,
            s.error.clone(),
            s.lost.clone(),
        );
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

    fn run(&self) {
        let mut local = false;
        let mut last_note = String::new();
        loop {
            if self.lock().stop {
                break;
            }
            // 1. The local lock: only its holder talks to S3 about the lease.
            if !local {
                match claim_local(&self.local_path) {
                    Ok(Some(f)) => {
                        local_locks().insert(self.id, f);
                        local = true;
                        self.update(|s| {
                            s.local_claim = true;
                            s.local_waiting = false;
                            s.resolved = false;
                        });
                    }
                    Ok(None) => {
                        let note = read_local_note(&self.local_path);
                        self.update(|s| {
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
                        if self.sleep(LOCAL_POLL) {
                            break;
                        }
                        continue;
                    }
                    Err(e) => {
                        self.set_error(format!(
                            "taking the local lease lock {}: {e}",
                            self.local_path.display()
                        ));
                        if self.sleep(self.timing.standby_poll()) {
                            break;
                        }
                        continue;
                    }
                }
            }
            // 2. The provider must honour conditional writes (when start could not tell).
            if !self.lock().probed {
                match self.store.probe() {
                    Ok(()) => self.update(|s| s.probed = true),
                    Err(ProbeError::Ignored(detail)) => {
                        let m = ignored_message(&self.lock_url, &detail);
                        self.update(|s| {
                            s.fatal = true;
                            s.error = Some(m);
                        });
                        // Never acquire; wait for stop.
                        while !self.sleep(Duration::from_secs(3600)) {}
                        break;
                    }
                    Err(ProbeError::Inconclusive(e)) => {
                        self.set_error(e);
                        if self.sleep(self.timing.standby_poll()) {
                            break;
                        }
                        continue;
                    }
                }
            }
            // 3. Acquire or renew.
            let held = self.lock().held.clone();
            let wait = match held {
                None => self.acquire_step(),
                Some(h) => self.renew_step(h),
            };
            if local {
                let note = self.local_note();
                if note != last_note {
                    if let Some(f) = local_locks().get_mut(&self.id) {
                        if write_local_note(f, &note).is_ok() {
                            last_note = note;
                        }
                    }
                }
            }
            if self.sleep(wait) {
                break;
            }
        }
        self.release();
        // Closing the descriptor frees the flock for the next local process.
        local_locks().remove(&self.id);
        self.update(|s| s.local_claim = false);
    }

    fn local_note(&self) -> String {
        let s = self.lock();
        let note = LocalNote {
            poller: self.owner.clone(),
            token: s.seen.as_ref().map(|l| l.token),
            expires_at: s.seen.as_ref().map(|l| l.expires_at),
            owner: s.seen.as_ref().map(|l| l.owner.clone()),
        };
        serde_json::to_string(&note).unwrap_or_default()
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

/// The local lock files this process holds, by keeper. They live here rather than on the lease
/// thread's stack so that a forked child can close its inherited copies ([`after_fork`]): a flock
/// belongs to the open file description, so a child keeping a copy would hold this host's claim
/// after its parent died — and keep itself from ever taking it.
static LOCAL_LOCKS: Lazy<Mutex<std::collections::HashMap<u64, File>>> =
    Lazy::new(|| Mutex::new(Default::default()));
static NEXT_KEEPER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn local_locks() -> MutexGuard<'static, std::collections::HashMap<u64, File>> {
    LOCAL_LOCKS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Called in a forked child (by the runtime, before anything else): close the local lock files
/// inherited from the parent, whose lease threads do not exist here. The parent keeps its claim.
pub fn after_fork() {
    // try_lock: a lock held by a parent thread at fork time stays held forever in the child;
    // then leaking the descriptors is the only option left.
    let guard = match LOCAL_LOCKS.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    };
    if let Some(mut g) = guard {
        g.clear();
    }
}

/// Try the local advisory lock (flock, exclusive, non-blocking). Some(file) = ours while the
/// file stays open.
fn claim_local(path: &Path) -> std::io::Result<Option<File>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn read_local_note(path: &Path) -> Option<LocalNote> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

fn write_local_note(f: &mut File, note: &str) -> std::io::Result<()> {
    f.set_len(0)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(note.as_bytes())?;
    f.write_all(b"\n")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    #[test]
    fn body_has_exactly_the_guides_layout() {
        let r = LeaseRecord::new(1, 1740151473.206179, "hostname:pid");
        assert_eq!(
            r.to_json(),
            r#"{"token": 1, "expires_at": 1740151473.206179, "owner": "hostname:pid"}"#
        );
        let back = LeaseRecord::parse(r.to_json().as_bytes()).unwrap();
        assert_eq!(back, r);
        // Owners are JSON-escaped.
        let r = LeaseRecord::new(7, 0.5, "we\"ird\\host:1");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["owner"], "we\"ird\\host:1");
        assert_eq!(v["token"], 7);
        assert_eq!(v["expires_at"], 0.5);
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["token", "expires_at", "owner"]
        );
    }

    #[test]
    fn parses_go_leaser_locks() {
        // Go's time.Time JSON: RFC3339Nano with the writer's local offset.
        let go = br#"{"generation":4,"expires_at":"2025-02-21T09:24:33.206179123-06:00","owner":"web-2:77"}"#;
        let r = LeaseRecord::parse(go).unwrap();
        assert_eq!(r.format, LockFormat::GoLeaser);
        assert_eq!(r.token, 4);
        assert_eq!(r.owner, "web-2:77");
        assert!(
            (r.expires_at - 1740151473.206179).abs() < 1e-6,
            "{}",
            r.expires_at
        );
        // UTC, no fraction, owner omitted (Go's omitempty).
        let r =
            LeaseRecord::parse(br#"{"generation":1,"expires_at":"2025-02-21T15:24:33Z"}"#).unwrap();
        assert_eq!(r.expires_at, 1740151473.0);
        assert_eq!(r.owner, "");
        assert!(r.expired(1740151473.5) && !r.expired(1740151473.0));
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"token": -1, "expires_at": 1}"#,
            br#"{"token": 1}"#,
            br#"{"token": 1, "expires_at": "yesterday"}"#,
            br#"{"generation": 1, "expires_at": true}"#,
            br#"{"token": 1, "expires_at": 1, "owner": 5}"#,
        ] {
            assert!(
                LeaseRecord::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn timing_math() {
        let t = Timing::new(Duration::from_secs(30));
        assert_eq!(t.renew_every(), Duration::from_secs(10));
        assert_eq!(t.fence_margin(), Duration::from_secs(6));
        assert_eq!(t.standby_poll(), Duration::from_secs(1));
        let sent = Instant::now();
        assert_eq!(t.fence_deadline(sent), sent + Duration::from_secs(24));
        // Short TTLs: the margin never closes the fence before the next renewal.
        for ms in [1000u64, 1500, 2000, 3000, 5000, 10_000, 60_000] {
            let t = Timing::new(Duration::from_millis(ms));
            assert!(t.fence_margin() >= t.ttl / 5 || t.fence_margin() == t.ttl / 3);
            assert!(t.renew_every() < t.ttl - t.fence_margin(), "{ms}");
            assert!(
                t.renew_retry() < t.ttl - t.fence_margin() - t.renew_every(),
                "{ms}"
            );
            assert!(t.standby_poll() <= t.ttl / 3);
        }
        let t = Timing::new(Duration::from_secs(2));
        assert_eq!(t.fence_margin(), Duration::from_secs(2) / 3);
        // Standby: poll, or wake just after the expiry when it comes first.
        let rec = LeaseRecord::new(1, 100.0, "x");
        assert_eq!(t.standby_wait(&rec, 90.0), t.standby_poll());
        let w = t.standby_wait(&rec, 99.9);
        assert!(
            w > Duration::from_millis(100) && w < Duration::from_millis(110),
            "{w:?}"
        );
        assert_eq!(t.standby_wait(&rec, 100.5), Duration::ZERO);
    }

    #[test]
    fn fence_opens_and_closes() {
        let f = Fence::new();
        assert!(f.check().is_ok() && f.token().is_none()); // lease off
        f.enable();
        assert!(f.check().is_err());
        f.grant(3, Instant::now() + Duration::from_secs(5));
        assert!(f.check().is_ok());
        assert_eq!(f.token(), Some(3));
        f.grant(3, Instant::now() - Duration::from_millis(1));
        assert!(f.check().unwrap_err().contains("lost lease"));
        f.revoke();
        assert!(f.check().is_err());
    }

    /// The fence interceptor refuses mutating requests at the wire while the lease is not held,
    /// and lets reads through: a fake connector counts what is actually sent.
    #[test]
    fn interceptor_stops_writes_before_they_are_sent() {
        use aws_sdk_s3::config::{Credentials, Region};
        use aws_smithy_runtime_api::client::http::{
            http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
        };
        use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
        use std::sync::atomic::AtomicUsize;

        #[derive(Debug)]
        struct Counting(Arc<AtomicUsize>);
        impl HttpConnector for Counting {
            fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
                self.0.fetch_add(1, Ordering::SeqCst);
                let ok = aws_sdk_s3::config::http::HttpResponse::new(
                    200.try_into().unwrap(),
                    aws_smithy_types::body::SdkBody::from(""),
                );
                HttpConnectorFuture::ready(Ok(ok))
            }
        }
        let sent = Arc::new(AtomicUsize::new(0));
        let connector = SharedHttpConnector::new(Counting(sent.clone()));
        let fence = Arc::new(Fence::new());
        fence.enable();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9")
            .force_path_style(true)
            .http_client(http_client_fn(move |_, _| connector.clone()))
            .interceptor(FenceInterceptor(fence.clone()))
            .build();
        let client = Client::from_conf(conf);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let put = || {
            rt.block_on(
                client
                    .put_object()
                    .bucket("b")
                    .key("p/0000/x.ltx")
                    .body(ByteStream::from_static(b"x"))
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| crate::s3::error_chain(&e))
        };
        let chain = put().unwrap_err();
        assert_eq!(sent.load(Ordering::SeqCst), 0, "a write reached the wire");
        assert!(chain.contains("does not hold the lease"), "{chain}");
        let _ = rt.block_on(client.head_object().bucket("b").key("k").send());
        assert_eq!(sent.load(Ordering::SeqCst), 1, "reads are not fenced");
        fence.grant(4, Instant::now() + Duration::from_secs(5));
        put().unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        fence.grant(4, Instant::now() - Duration::from_millis(1));
        assert!(put().is_err());
        let _ = rt.block_on(client.delete_object().bucket("b").key("k").send());
        assert_eq!(
            sent.load(Ordering::SeqCst),
            2,
            "an expired lease still wrote"
        );
        // Aborting a multipart upload is allowed: it only cleans up parts.
        let _ = rt.block_on(
            client
                .abort_multipart_upload()
                .bucket("b")
                .key("k")
                .upload_id("u1")
                .send(),
        );
        assert_eq!(sent.load(Ordering::SeqCst), 3, "abort was fenced");
    }

    /// lock.json in memory, with S3's conditional-write semantics (or none, to test the probe).
    #[derive(Default)]
    struct MemStore {
        obj: Mutex<Option<(Vec<u8>, String)>>,
        version: AtomicU64,
        ignore_conditions: AtomicBool,
        writes: AtomicU64,
        replica_token: AtomicU64,
        /// The next this many successful writes land but report a network error (lost answer).
        lose_answers: AtomicU64,
    }

    impl MemStore {
        fn set(&self, body: &str) {
            let v = self.version.fetch_add(1, Ordering::SeqCst);
            *self.obj.lock().unwrap() = Some((body.as_bytes().to_vec(), format!("\"v{v}\"")));
        }
        fn record(&self) -> Option<LeaseRecord> {
            let g = self.obj.lock().unwrap();
            g.as_ref().map(|(b, _)| LeaseRecord::parse(b).unwrap())
        }
    }

    impl LeaseStore for MemStore {
        fn describe(&self) -> String {
            "mem://lock.json".into()
        }
        fn get(&self) -> std::result::Result<Option<(Vec<u8>, String)>, StoreError> {
            Ok(self.obj.lock().unwrap().clone())
        }
        fn put(&self, body: &str, cond: &Cond) -> std::result::Result<String, StoreError> {
            let mut g = self.obj.lock().unwrap();
            if !self.ignore_conditions.load(Ordering::SeqCst) {
                match (cond, g.as_ref()) {
                    (Cond::Absent, Some(_)) => return Err(StoreError::Precondition),
                    (Cond::Matches(_), None) => return Err(StoreError::NotFound),
                    (Cond::Matches(e), Some((_, cur))) if e != cur => {
                        return Err(StoreError::Precondition)
                    }
                    _ => {}
                }
            }
            let v = self.version.fetch_add(1, Ordering::SeqCst);
            let etag = format!("\"v{v}\"");
            *g = Some((body.as_bytes().to_vec(), etag.clone()));
            self.writes.fetch_add(1, Ordering::SeqCst);
            let lose = self
                .lose_answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if lose.is_ok() {
                return Err(StoreError::Other("connection reset (test)".into()));
            }
            Ok(etag)
        }
        fn delete(&self, etag: &str) -> std::result::Result<(), StoreError> {
            let mut g = self.obj.lock().unwrap();
            match g.as_ref() {
                None => Err(StoreError::NotFound),
                Some((_, cur)) if cur != etag => Err(StoreError::Precondition),
                _ => {
                    *g = None;
                    Ok(())
                }
            }
        }
        fn probe(&self) -> std::result::Result<(), ProbeError> {
            if self.ignore_conditions.load(Ordering::SeqCst) {
                Err(ProbeError::Ignored("test".into()))
            } else {
                Ok(())
            }
        }
        fn replica_token(&self) -> std::result::Result<u64, StoreError> {
            Ok(self.replica_token.load(Ordering::SeqCst))
        }
    }

    /// A temporary meta directory, removed when dropped.
    struct TmpDir(PathBuf);
    impl std::ops::Deref for TmpDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmpdir(tag: &str) -> TmpDir {
        let d = std::env::temp_dir().join(format!(
            "ls-lease-{tag}-{}-{:x}",
            std::process::id(),
            crate::replica_client::rand_u64()
        ));
        std::fs::create_dir_all(&d).unwrap();
        TmpDir(d)
    }

    fn start(store: &Arc<MemStore>, owner: &str, dir: &Path, ttl_ms: u64) -> Lease {
        Lease::start(
            LeaseSetup {
                store: store.clone(),
                fence: Arc::new(Fence::new()),
                timing: Timing::new(Duration::from_millis(ttl_ms)),
                owner: owner.into(),
                probed: false,
            },
            dir,
            Box::new(|| {}),
        )
        .unwrap()
    }

    fn wait_for(what: &str, secs: f64, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(
                t0.elapsed().as_secs_f64() < secs,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_renewal_that_landed_unheard_keeps_the_lease() {
        // The renewal's write lands but its answer is lost and the request fails; the next
        // renewal's If-Match (the ETag before it) then fails with a 412 against our own write.
        let store = Arc::new(MemStore::default());
        let d = tmpdir("unheard-renew");
        let l = start(&store, "u:1", &d, 1200);
        wait_for("hold", 3.0, || l.holding().is_some());
        let writes = store.writes.load(Ordering::SeqCst);
        store.lose_answers.store(2, Ordering::SeqCst);
        wait_for("two unheard writes and a renewal", 5.0, || {
            store.writes.load(Ordering::SeqCst) >= writes + 4
        });
        let v = l.view();
        assert!(v.lost.is_none(), "lost its own lease: {:?}", v.lost);
        assert!(l.holding().is_some());
        assert_eq!(store.record().unwrap().token, 1);
        l.stop();
        assert!(store.record().is_none(), "released on stop");
    }

    #[test]
    fn an_acquisition_that_landed_unheard_is_ours() {
        let store = Arc::new(MemStore::default());
        store.lose_answers.store(1, Ordering::SeqCst);
        let d = tmpdir("unheard-acquire");
        let t0 = Instant::now();
        let l = start(&store, "u:2", &d, 3000);
        wait_for("hold", 2.5, || l.holding().is_some());
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "waited for our own lock to expire"
        );
        assert_eq!(store.record().unwrap().token, 1);
        l.stop();
    }

    #[test]
    fn one_holder_then_release_hands_over_at_once() {
        let store = Arc::new(MemStore::default());
        let (da, db) = (tmpdir("a"), tmpdir("b"));
        let a = start(&store, "a:1", &da, 3000);
        wait_for("a to hold", 5.0, || a.holding().is_some());
        let b = start(&store, "b:2", &db, 3000);
        wait_for("b to see a", 5.0, || b.view().resolved);
        let v = b.view();
        assert_eq!(v.role, Role::Standby);
        assert_eq!(v.lock.as_ref().unwrap().owner, "a:1");
        assert!(v
            .standby_message("mem://lock.json")
            .unwrap()
            .contains("held by a:1 (token 1"));
        assert!(a.view().standby_message("x").is_none());
        let t0 = Instant::now();
        a.stop();
        assert!(a.holding().is_none());
        wait_for("b to take over", 3.0, || b.holding().is_some());
        // Released, not expired: well within the 3 s TTL.
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t0.elapsed()
        );
        let rec = store.record().unwrap();
        assert_eq!((rec.token, rec.owner.as_str()), (1, "b:2"));
        b.stop();
        assert!(store.record().is_none(), "release deletes lock.json");
    }

    #[test]
    fn respects_a_go_lock_until_it_expires_then_takes_over() {
        let store = Arc::new(MemStore::default());
        let exp =
            time::OffsetDateTime::from_unix_timestamp_nanos(((unix_now() + 1.2) * 1e9) as i128)
                .unwrap()
                .to_offset(time::UtcOffset::from_hms(-6, 0, 0).unwrap())
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
        store.set(&format!(
            r#"{{"generation":41,"expires_at":"{exp}","owner":"go-host:9"}}"#
        ));
        let d = tmpdir("go");
        let l = start(&store, "rust:1", &d, 2000);
        wait_for("the standby view", 3.0, || l.view().resolved);
        assert_eq!(l.view().lock.unwrap().owner, "go-host:9");
        assert!(l.holding().is_none());
        let t0 = Instant::now();
        wait_for("takeover after expiry", 4.0, || l.holding().is_some());
        assert!(
            t0.elapsed() > Duration::from_millis(700),
            "{:?}",
            t0.elapsed()
        );
        let rec = store.record().unwrap();
        assert_eq!(rec.token, 42);
        assert_eq!(rec.format, LockFormat::Token);
        l.stop();
    }

    #[test]
    fn renews_and_keeps_the_fence_open() {
        let store = Arc::new(MemStore::default());
        let d = tmpdir("renew");
        let l = start(&store, "r:1", &d, 1000);
        wait_for("hold", 3.0, || l.holding().is_some());
        let first = store.record().unwrap().expires_at;
        std::thread::sleep(Duration::from_millis(1500)); // longer than the TTL
        assert!(l.holding().is_some(), "renewals keep the lease");
        assert!(store.record().unwrap().expires_at > first + 0.5);
        assert_eq!(store.record().unwrap().token, 1);
        // Someone overwrites the lock (takeover): the next renewal finds out.
        store.set(&LeaseRecord::new(2, unix_now() + 60.0, "thief:9").to_json());
        wait_for("lost", 3.0, || l.view().lost.is_some());
        assert!(l.holding().is_none());
        assert!(l.check().is_err());
        assert!(l
            .view()
            .lost
            .unwrap()
            .contains("taken over by thief:9 (token 2)"));
        l.stop();
        // Not ours: stop must not delete it.
        assert_eq!(store.record().unwrap().owner, "thief:9");
    }

    #[test]
    fn tokens_stay_above_the_replicas_after_a_release() {
        // lock.json was deleted by a release; the replica's newest object carries token 5.
        let store = Arc::new(MemStore::default());
        store.replica_token.store(5, Ordering::SeqCst);
        let d = tmpdir("floor");
        let l = start(&store, "n:1", &d, 2000);
        wait_for("hold", 3.0, || l.holding().is_some());
        assert_eq!(store.record().unwrap().token, 6);
        l.stop();
        // An expired lock with a lower token than the replica's: still above the replica.
        store.set(&LeaseRecord::new(2, unix_now() - 1.0, "old:1").to_json());
        let l = start(&store, "n:2", &d, 2000);
        wait_for("hold", 3.0, || l.holding().is_some());
        assert_eq!(store.record().unwrap().token, 6);
        l.stop();
    }

    #[test]
    fn local_lock_lets_one_process_poll() {
        let store = Arc::new(MemStore::default());
        let d = tmpdir("local");
        let a = start(&store, "a:1", &d, 2000);
        wait_for("a holds", 3.0, || a.holding().is_some());
        let b = start(&store, "b:2", &d, 2000);
        wait_for("b waits locally", 3.0, || b.view().local_waiting);
        assert!(!b.has_local_claim() && a.has_local_claim());
        wait_for("b reads the note", 3.0, || b.view().lock.is_some());
        assert_eq!(b.view().lock.unwrap().owner, "a:1");
        assert!(b
            .view()
            .standby_message("u")
            .unwrap()
            .contains("another process on this host"));
        let writes = store.writes.load(Ordering::SeqCst);
        a.stop();
        wait_for("b holds", 3.0, || b.holding().is_some());
        assert!(b.has_local_claim());
        assert!(store.writes.load(Ordering::SeqCst) > writes);
        b.stop();
    }

    #[test]
    fn racing_keepers_elect_exactly_one() {
        for _round in 0..5 {
            let store = Arc::new(MemStore::default());
            let dirs: Vec<TmpDir> = (0..8).map(|_| tmpdir("race")).collect();
            let leases: Vec<Lease> = (0..8)
                .map(|i| start(&store, &format!("n{i}:1"), &dirs[i], 3000))
                .collect();
            wait_for("all resolved", 5.0, || {
                leases
                    .iter()
                    .all(|l| l.view().resolved || l.holding().is_some())
            });
            let holders: Vec<usize> = (0..8).filter(|&i| leases[i].holding().is_some()).collect();
            assert_eq!(holders.len(), 1, "{holders:?}");
            assert_eq!(store.record().unwrap().owner, format!("n{}:1", holders[0]));
        }
    }

    #[test]
    fn a_provider_ignoring_conditions_never_grants() {
        let store = Arc::new(MemStore::default());
        store.ignore_conditions.store(true, Ordering::SeqCst);
        let d = tmpdir("ign");
        let l = start(&store, "x:1", &d, 1000);
        wait_for("fatal", 3.0, || l.view().fatal);
        let v = l.view();
        assert!(v
            .error
            .unwrap()
            .contains("litestream_configure('lease', 'off')"));
        assert!(l.holding().is_none());
        assert!(store.record().is_none());
        l.stop();
        assert!(ignored_message("s3://b/p/lock.json", "d").contains("ignores conditional writes"));
    }
}
