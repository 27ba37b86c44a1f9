//! The S3 replica client: Litestream's S3 key layout on top of aws-sdk-s3.
//!
//! Keys are `<path>/<%04x level>/<%016x min>-<%016x max>.ltx`, every object carries
//! `x-amz-meta-litestream-timestamp` (the LTX header timestamp, Go RFC3339Nano), exactly as
//! Litestream 0.5 writes them, so that either program can restore the other's replica.
//!
//! Invariants:
//! - Callers are plain threads (the replicator, SQL functions on the host's thread). Futures run on
//!   the extension's own tokio runtime and the caller waits on a channel — never `block_on` on a
//!   thread the host may itself be running a runtime on.
//! - Error texts carry the operation, the key and the S3 error code/message; never credentials.
//! - For custom endpoints, request checksums are computed only when an operation requires them:
//!   S3-compatible stores reject the SDK's default aws-chunked trailers (Litestream #889, #918, #947).
//! - No request can hang forever: connects time out, every attempt has a deadline (uploads: scaled
//!   to the body size), a body that stops moving trips the SDK's stalled-stream protection, and
//!   attempts are finite. A failing request is retried a few times within seconds; longer outages
//!   are the replicator's to ride out (its own backoff), so `litestream_stop()` stays prompt.
//! - `skip-verify=true` swaps in an HTTPS client that does not verify certificates
//!   (`insecure_tls`); everything else is the SDK's default client.

mod download;
mod insecure_tls;
pub mod lease;
mod leftovers;
pub mod streaming;
pub mod upload;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::retry::RetryPartition;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::runtime::Handle;

use crate::config::S3Target;
use crate::error::{Error, Result};
use crate::ltx;
use crate::replica_client::{
    format_timestamp_ms, LtxFileInfo, Progress, PutStream, ReplicaClient, Spool, SpooledPut,
};
use download::{BodyReader, Resume};
use streaming::StreamingPut;

/// Attempts per S3 request (the SDK's standard retry: 5xx, throttling, timeouts, resets).
/// Litestream uses 10 with the SDK's default backoff (up to 20 s apart), which hides an unreachable
/// endpoint from status for minutes. We retry a request a few times, quickly, and let the
/// replicator's own cycle-level backoff (and its status) handle outages; multipart parts get
/// further rounds in the uploader, since a lost part costs the whole upload.
const MAX_ATTEMPTS: u32 = 5;
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A refused or black-holed endpoint must surface as an error within seconds, not hang a sync.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one attempt of a request without a large body (list, head, get until its
/// headers arrive, delete). These take milliseconds; an answer that has not come after this long
/// is a stalled connection, and every minute spent on it blocks the replicator or the compactor
/// (and `litestream_stop()`, which joins them). A download's body is not under this deadline: it
/// is watched by stalled-stream protection instead. CompleteMultipartUpload, which may take
/// minutes on AWS for thousands of parts, overrides it (`upload::COMPLETE_ATTEMPT_TIMEOUT`).
pub(crate) const OPERATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body (or a download) that moves no bytes for this long is a stalled connection: the
/// attempt fails as a timeout and is retried on a fresh connection.
const STALL_GRACE: Duration = Duration::from_secs(10);

/// The timeouts every request gets; uploads override the attempt timeout (see `upload`).
pub(crate) fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .build()
}
/// HEAD requests in flight when reading `litestream-timestamp` metadata for a listing
/// (Litestream's `MetadataConcurrency`).
const METADATA_CONCURRENCY: usize = 50;

/// Run a future on the extension's runtime from a plain thread and wait for its result.
pub fn run<F>(rt: &Handle, fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    // The task always sends unless the runtime is shutting down; report that plainly.
    rx.recv()
        .unwrap_or_else(|_| panic!("litestream runtime stopped while a request was running"))
}

/// Map an SDK error to a message: operation, key, and the error chain (code and message).
pub fn sdk_error<E, R>(what: &str, key: &str, e: SdkError<E, R>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    let mut detail = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
        None => error_chain(&e),
    };
    if detail.contains("invalid peer certificate") {
        detail.push_str(
            " (an endpoint with a self-signed certificate needs skip-verify=true, or its CA in \
             the system trust store)",
        );
    }
    Error::msg(format!("{what} {key}: {detail}"))
}

/// "a: b: c" from an error and its sources, Display only (the SDK's Debug output would dump
/// whole responses).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// An S3 client bound to one bucket and key prefix.
pub struct S3Client {
    pub(crate) client: Client,
    pub(crate) rt: Handle,
    pub(crate) target: S3Target,
    pub(crate) progress: Arc<Progress>,
    /// When this client was made: multipart uploads under our prefix initiated before then and
    /// not ours are leftovers of a writer that died mid-upload (see `leftovers`).
    pub(crate) created: SystemTime,
    /// The lease acquisition (+ 1) this client last looked for such leftovers in; 0 = never.
    pub(crate) swept_for: AtomicU64,
    /// Multipart uploads whose abort failed (server unreachable), retried later.
    pub(crate) pending_aborts: Arc<leftovers::PendingAborts>,
    /// Closed fence = no mutating request leaves `client`; its token tags uploads.
    pub(crate) fence: Arc<lease::Fence>,
    /// `client`'s configuration without the fence, for the lease's own requests.
    pub(crate) base_conf: aws_sdk_s3::Config,
}

/// The HTTP clients every S3 client of this process shares (one verifying certificates, one
/// not), with the process id they belong to. Each SDK configuration loaded on its own brings an
/// HTTP client of its own — TLS roots, connector, connection pool: ~0.5 MiB and an idle connection
/// per database, 560 MiB for a thousand databases. A forked child starts new ones: the parent's
/// pooled connections belong to a runtime the child does not run.
static SHARED_HTTP: Mutex<(u32, Option<SharedHttpClient>, Option<SharedHttpClient>)> =
    Mutex::new((0, None, None));

/// The process's shared HTTP client (`skip_verify`: the one that accepts any certificate), if
/// one was made yet; `made` is stored as it when there is none.
fn shared_http(skip_verify: bool, made: Option<SharedHttpClient>) -> Option<SharedHttpClient> {
    let mut g = SHARED_HTTP.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if g.0 != pid {
        *g = (pid, None, None);
    }
    let slot = if skip_verify { &mut g.2 } else { &mut g.1 };
    if slot.is_none() {
        *slot = made;
    }
    slot.clone()
}

impl S3Client {
    pub fn new(target: &S3Target, rt: Handle) -> Result<S3Client> {
        let t = target.clone();
        let base_conf = run(&rt, async move {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(Region::new(t.region.clone()));
            let shared = shared_http(t.skip_verify, t.skip_verify.then(insecure_tls::http_client));
            if let Some(http) = shared.clone() {
                loader = loader.http_client(http);
            }
            if let (Some(ak), Some(sk)) = (t.access_key_id.clone(), t.secret_access_key.clone()) {
                loader = loader.credentials_provider(Credentials::new(
                    ak,
                    sk,
                    None,
                    None,
                    "litestream-configure",
                ));
            }
            let sdk = loader.load().await;
            if shared.is_none() {
                // The first client of the process: its default HTTP client is everyone's.
                shared_http(false, sdk.http_client());
            }
            let mut b = aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(t.force_path_style)
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(MAX_ATTEMPTS)
                        .with_initial_backoff(INITIAL_BACKOFF)
                        .with_max_backoff(MAX_BACKOFF),
                )
                // Each client has its own retry token bucket: one unreachable replica must not use
                // up the retries of every other database in the process.
                .retry_partition(RetryPartition::new(format!(
                    "litestream-{}",
                    crate::replica_client::rand_u64()
                )))
                .timeout_config(timeouts(OPERATION_ATTEMPT_TIMEOUT))
                .stalled_stream_protection(
                    StalledStreamProtectionConfig::enabled()
                        .grace_period(STALL_GRACE)
                        .build(),
                );
            if let Some(ep) = &t.endpoint {
                b = b
                    .endpoint_url(ep.clone())
                    .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                    .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
            }
            b.build()
        });
        let fence = Arc::new(lease::Fence::new());
        let client = Client::from_conf(
            base_conf
                .to_builder()
                .interceptor(lease::FenceInterceptor(fence.clone()))
                .build(),
        );
        Ok(S3Client {
            client,
            rt,
            target: target.clone(),
            progress: Arc::new(Progress::default()),
            created: SystemTime::now(),
            swept_for: AtomicU64::new(0),
            pending_aborts: Arc::default(),
            fence,
            base_conf,
        })
    }

    /// `<path>/<%04x level>/` — the prefix of one level.
    pub fn level_prefix(&self, level: u8) -> String {
        format!("{}/{:04x}/", self.target.path, level)
    }

    pub fn key(&self, level: u8, min: u64, max: u64) -> String {
        format!("{}{}", self.level_prefix(level), ltx::file_name(min, max))
    }

    pub fn bucket(&self) -> &str {
        &self.target.bucket
    }
}

impl Drop for S3Client {
    fn drop(&mut self) {
        // Uploads whose abort failed: retried in the background (the runtime outlives us).
        leftovers::retry_in_background(self);
    }
}

impl S3Client {
    /// The user metadata of an upload: its header timestamp and the lease token. Refuses early
    /// when the lease is not held (the fence stops the requests anyway).
    fn upload_metadata(&self, timestamp_ms: i64) -> Result<Vec<(String, String)>> {
        let mut meta = vec![(
            "litestream-timestamp".to_string(),
            format_timestamp_ms(timestamp_ms),
        )];
        self.fence.check().map_err(Error::msg)?;
        if let Some(token) = self.fence.token() {
            meta.push((lease::TOKEN_METADATA.to_string(), token.to_string()));
        }
        Ok(meta)
    }
}

/// What was stored, as a listing would show it.
fn stored(level: u8, min_txid: u64, max_txid: u64, size: u64, key: String) -> LtxFileInfo {
    LtxFileInfo {
        level,
        min_txid,
        max_txid,
        size,
        created_at: std::time::SystemTime::now(),
        key,
    }
}

/// A streamed upload with the names of the file it stores.
struct Streamed<'a> {
    put: StreamingPut<'a>,
    level: u8,
    min_txid: u64,
    max_txid: u64,
    key: String,
}

impl std::io::Write for Streamed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.put.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.put.flush()
    }
}

impl PutStream for Streamed<'_> {
    fn finish(self: Box<Self>) -> Result<LtxFileInfo> {
        let Streamed {
            put,
            level,
            min_txid,
            max_txid,
            key,
        } = *self;
        let size = put.finish()?;
        Ok(stored(level, min_txid, max_txid, size, key))
    }
}

impl ReplicaClient for S3Client {
    fn describe(&self) -> String {
        self.target.display_url()
    }

    fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>> {
        let client = self.client.clone();
        let bucket = self.target.bucket.clone();
        let prefix = self.level_prefix(level);
        let mut out = run(&self.rt, async move {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let resp = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| sdk_error("listing", &format!("s3://{bucket}/{prefix}"), e))?;
                for obj in resp.contents() {
                    let Some(key) = obj.key() else { continue };
                    let name = key.rsplit('/').next().unwrap_or(key);
                    // Only direct children named like LTX files: Litestream ignores the rest too.
                    if key.len() != prefix.len() + name.len() {
                        continue;
                    }
                    let Some((min_txid, max_txid)) = ltx::parse_file_name(name) else {
                        continue;
                    };
                    let created_at = obj
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push(LtxFileInfo {
                        level,
                        min_txid,
                        max_txid,
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        created_at,
                        key: key.to_string(),
                    });
                }
                match resp.next_continuation_token() {
                    Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            Ok::<_, Error>(out)
        })?;
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    fn list_timestamped(&self, level: u8) -> Result<Vec<LtxFileInfo>> {
        let mut files = self.list(level)?;
        if files.is_empty() {
            return Ok(files);
        }
        let client = self.client.clone();
        let bucket = self.target.bucket.clone();
        let keys: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
        let stamps = run(&self.rt, async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(METADATA_CONCURRENCY));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, key) in keys.into_iter().enumerate() {
                let (client, bucket, sem) = (client.clone(), bucket.clone(), sem.clone());
                tasks.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let resp = client
                        .head_object()
                        .bucket(&bucket)
                        .key(&key)
                        .send()
                        .await
                        .map_err(|e| {
                            sdk_error("reading metadata of", &format!("s3://{bucket}/{key}"), e)
                        })?;
                    let stamp = resp
                        .metadata()
                        .and_then(|m| m.get("litestream-timestamp"))
                        .and_then(|v| crate::replica_client::parse_timestamp(v));
                    Ok::<_, Error>((i, stamp))
                });
            }
            let mut out = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                out.push(joined.map_err(|e| Error::msg(format!("metadata request failed: {e}")))??);
            }
            Ok::<_, Error>(out)
        })?;
        for (i, stamp) in stamps {
            // Missing or unparsable metadata: keep LastModified, as Litestream does.
            if let Some(t) = stamp {
                files[i].created_at = t;
            }
        }
        Ok(files)
    }

    fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        body: &mut Spool,
    ) -> Result<LtxFileInfo> {
        let key = self.key(level, min_txid, max_txid);
        let meta = self.upload_metadata(timestamp_ms)?;
        let size = upload::put_object(self, &key, meta, body)?;
        Ok(stored(level, min_txid, max_txid, size, key))
    }

    fn put_streaming<'a>(
        &'a self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        spill_dir: &Path,
        size_bound: u64,
    ) -> Result<Box<dyn PutStream + 'a>> {
        let t = &self.target;
        let Some(memory) = streaming::may_stream(t.part_size, t.concurrency, size_bound) else {
            return Ok(Box::new(SpooledPut::new(
                self,
                level,
                min_txid,
                max_txid,
                timestamp_ms,
                spill_dir,
            )));
        };
        let key = self.key(level, min_txid, max_txid);
        let meta = self.upload_metadata(timestamp_ms)?;
        Ok(Box::new(Streamed {
            put: StreamingPut::new(self, key.clone(), meta, size_bound, memory),
            level,
            min_txid,
            max_txid,
            key,
        }))
    }

    fn open(&self, file: &LtxFileInfo) -> Result<Box<dyn Read + Send>> {
        let client = self.client.clone();
        let bucket = self.target.bucket.clone();
        let key = file.key.clone();
        let (body, etag) = run(&self.rt, async move {
            client
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .map(|r| (r.body, r.e_tag))
                .map_err(|e| sdk_error("downloading", &format!("s3://{bucket}/{key}"), e))
        })?;
        let resume = Resume {
            client: self.client.clone(),
            bucket: self.target.bucket.clone(),
            key: file.key.clone(),
            etag,
        };
        Ok(Box::new(BodyReader::new(
            &self.rt,
            body,
            file.key.clone(),
            Some(resume),
        )))
    }

    fn delete(&self, files: &[LtxFileInfo]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        // DeleteObjects takes at most 1000 keys per request.
        for chunk in files.chunks(1000) {
            let ids: Vec<ObjectIdentifier> = chunk
                .iter()
                .filter_map(|f| ObjectIdentifier::builder().key(&f.key).build().ok())
                .collect();
            let client = self.client.clone();
            let bucket = self.target.bucket.clone();
            run(&self.rt, async move {
                let delete = Delete::builder()
                    .set_objects(Some(ids))
                    .quiet(true)
                    .build()
                    .map_err(|e| Error::msg(e.to_string()))?;
                let resp = client
                    .delete_objects()
                    .bucket(&bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| sdk_error("deleting objects in", &format!("s3://{bucket}"), e))?;
                if let Some(err) = resp.errors().first() {
                    return Err(Error::msg(format!(
                        "deleting s3://{bucket}/{}: {}: {}",
                        err.key().unwrap_or(""),
                        err.code().unwrap_or(""),
                        err.message().unwrap_or("")
                    )));
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }
}
