//! Multipart uploads left behind: ours whose abort failed, and those of a writer that died.
//!
//! Invariants:
//! - An upload of this process that is still running is never aborted, whatever client runs it
//!   ([`ActiveUpload`]): another client of this process may replicate to the same prefix.
//! - A failed upload whose abort fails for a reason that may pass (server unreachable) is kept in
//!   [`PendingAborts`] and aborted later: before the next upload, and meanwhile by a background
//!   task with growing pauses, for [`ABORT_RETRY_FOR`] — whether or not anything is uploaded
//!   again, and after the client is dropped. Refusals are not retried (a lifecycle rule can clean
//!   those up).
//! - Whenever this client may start writing to the replica — its first upload, and the first one
//!   after each acquisition of the lease — the multipart uploads of replica files under its prefix
//!   that began before then and are not this process's are aborted: only one writer replicates to
//!   a prefix at a time, so they belong to a writer that died or lost the lease.
//! - An upload the server made for a CreateMultipartUpload whose answer was lost (the SDK then
//!   retried it) is aborted after the upload of that key ends.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::Client;
use once_cell::sync::Lazy;

use super::upload::worth_another_round;
use super::{run, sdk_error, S3Client};
use crate::error::Error;
use crate::ltx;
use crate::replica_client::Progress;

/// First pause of the background abort retries; it doubles up to [`ABORT_RETRY_MAX_PAUSE`].
const ABORT_RETRY_FIRST_PAUSE: Duration = Duration::from_secs(1);
/// An outage of minutes is retried about twice a minute: cheap, and prompt once it is over.
const ABORT_RETRY_MAX_PAUSE: Duration = Duration::from_secs(30);
/// The background retries give up after this long; what is still left is swept by the next
/// writer of the prefix (or a lifecycle rule).
const ABORT_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

/// Multipart uploads in progress in this process, by upload id.
static ACTIVE_UPLOADS: Lazy<Mutex<HashSet<String>>> = Lazy::new(|| Mutex::new(HashSet::new()));

fn active_uploads() -> MutexGuard<'static, HashSet<String>> {
    ACTIVE_UPLOADS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A multipart upload of this process, from its creation until it completes or is aborted.
pub(super) struct ActiveUpload(String);

impl ActiveUpload {
    pub(super) fn new(upload_id: &str) -> ActiveUpload {
        active_uploads().insert(upload_id.to_string());
        ActiveUpload(upload_id.to_string())
    }
}

impl Drop for ActiveUpload {
    fn drop(&mut self) {
        active_uploads().remove(&self.0);
    }
}

/// Why an abort (or a listing) failed: `retry` when it may work later (network, 5xx), not when
/// the store refused (say, no permission for AbortMultipartUpload).
struct Failure {
    message: String,
    retry: bool,
}

/// Abort one multipart upload. An upload that no longer exists (completed, or aborted by someone
/// else) counts as aborted.
async fn try_abort(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> std::result::Result<(), Failure> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
        Err(e) => Err(Failure {
            retry: worth_another_round(&e),
            message: sdk_error("aborting multipart upload of", key, e).to_string(),
        }),
    }
}

/// Uploads whose abort failed for a reason that may pass: (key, upload id).
#[derive(Debug, Default)]
pub(crate) struct PendingAborts {
    uploads: Mutex<Vec<(String, String)>>,
    /// A background task is retrying them.
    retrying: AtomicBool,
}

impl PendingAborts {
    fn lock(&self) -> MutexGuard<'_, Vec<(String, String)>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.lock())
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Abort each of `uploads`; returns the ones to try again (failures that may pass), having
/// counted the others in `progress.uploads_aborted`.
async fn abort_each(
    client: &Client,
    bucket: &str,
    uploads: Vec<(String, String)>,
    progress: &Progress,
) -> Vec<(String, String)> {
    let tried = uploads.len();
    let mut again = Vec::new();
    for (key, id) in uploads {
        if let Err(f) = try_abort(client, bucket, &key, &id).await {
            if f.retry {
                again.push((key, id));
            }
        }
    }
    progress
        .uploads_aborted
        .fetch_add((tried - again.len()) as u64, Ordering::Relaxed);
    again
}

/// Remember an upload whose abort failed, and make sure a background task retries it.
fn abort_later(c: &S3Client, key: &str, upload_id: &str) {
    c.pending_aborts
        .lock()
        .push((key.to_string(), upload_id.to_string()));
    retry_in_background(c);
}

/// Start the background retries of the pending aborts unless they are running already. The task
/// owns what it needs, so it outlives the client (the runtime outlives every client).
pub(super) fn retry_in_background(c: &S3Client) {
    if c.pending_aborts.is_empty() || c.pending_aborts.retrying.swap(true, Ordering::SeqCst) {
        return;
    }
    let pending = c.pending_aborts.clone();
    let (client, bucket, progress) = (
        c.client.clone(),
        c.target.bucket.clone(),
        c.progress.clone(),
    );
    c.rt.spawn(async move {
        let give_up = Instant::now() + ABORT_RETRY_FOR;
        let mut pause = ABORT_RETRY_FIRST_PAUSE;
        loop {
            tokio::time::sleep(pause).await;
            let batch = pending.take();
            let again = abort_each(&client, &bucket, batch, &progress).await;
            pending.lock().extend(again);
            if Instant::now() >= give_up {
                pending.retrying.store(false, Ordering::SeqCst);
                return;
            }
            if pending.is_empty() {
                pending.retrying.store(false, Ordering::SeqCst);
                // One added after the check above found the task still running: take it on.
                if pending.is_empty() || pending.retrying.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
            pause = (pause * 2).min(ABORT_RETRY_MAX_PAUSE);
        }
    });
}

/// Before an upload: retry the aborts that failed earlier, and abort the uploads a previous
/// writer left under our prefix if this client has not looked since it may write (see the
/// module invariants). Best effort: a listing that failed for a reason that may pass is tried
/// again before the next upload.
pub(super) fn before_upload(c: &S3Client) {
    let pending = c.pending_aborts.take();
    if !pending.is_empty() {
        let (client, bucket, progress) = (
            c.client.clone(),
            c.target.bucket.clone(),
            c.progress.clone(),
        );
        let again = run(&c.rt, async move {
            abort_each(&client, &bucket, pending, &progress).await
        });
        c.pending_aborts.lock().extend(again);
        retry_in_background(c);
    }
    // Lease off: acquisition 0 for ever, so this client sweeps once. (0 in `swept_for` is
    // "not swept yet", hence + 1.)
    let (acquisition, acquired_at) = c.fence.acquisition();
    let stamp = acquisition + 1;
    if c.swept_for.load(Ordering::SeqCst) != stamp {
        let since = acquired_at.map_or(c.created, |t| t.max(c.created));
        match sweep(c, since) {
            Err(f) if f.retry => {}
            _ => c.swept_for.store(stamp, Ordering::SeqCst),
        }
    }
}

/// `<path>/<%04x level>/<min>-<max>.ltx`: only keys of our own layout are ever swept.
fn is_replica_key(prefix: &str, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else {
        return false;
    };
    let Some((level, name)) = rest.split_once('/') else {
        return false;
    };
    level.len() == 4
        && level.bytes().all(|b| b.is_ascii_hexdigit())
        && ltx::parse_file_name(name).is_some()
}

/// Abort the multipart uploads of replica files under our prefix that were started before
/// `since` and are not this process's. Returns how many.
fn sweep(c: &S3Client, since: SystemTime) -> std::result::Result<u64, Failure> {
    let prefix = format!("{}/", c.target.path);
    let (client, bucket) = (c.client.clone(), c.target.bucket.clone());
    let n = run(&c.rt, async move {
        let mut stale = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let resp = client
                .list_multipart_uploads()
                .bucket(&bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| Failure {
                    retry: worth_another_round(&e),
                    message: sdk_error(
                        "listing multipart uploads in",
                        &format!("s3://{bucket}/{prefix}"),
                        e,
                    )
                    .to_string(),
                })?;
            for u in resp.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let initiated = u
                    .initiated()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                if is_replica_key(&prefix, key) && initiated < since {
                    stale.push((key.to_string(), id.to_string()));
                }
            }
            if resp.is_truncated() != Some(true) {
                break;
            }
            key_marker = resp.next_key_marker().map(str::to_string);
            id_marker = resp.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        let mut aborted = 0u64;
        for (key, id) in stale {
            // Checked at the last moment: an upload of this process is never swept.
            if active_uploads().contains(&id) {
                continue;
            }
            if try_abort(&client, &bucket, &key, &id).await.is_ok() {
                aborted += 1;
            }
        }
        Ok::<_, Failure>(aborted)
    })?;
    c.progress.uploads_aborted.fetch_add(n, Ordering::Relaxed);
    Ok(n)
}

/// A multipart upload failed with `e`: abort it, or remember to abort it later. Returns the
/// error to report, saying what became of the upload.
pub(super) fn abort_failed(c: &S3Client, key: &str, upload_id: &str, e: Error) -> Error {
    let client = c.client.clone();
    let (bucket, key_owned, id) = (
        c.target.bucket.clone(),
        key.to_string(),
        upload_id.to_string(),
    );
    let aborted = run(&c.rt, async move {
        try_abort(&client, &bucket, &key_owned, &id).await
    });
    match aborted {
        Ok(()) => e.context("multipart upload aborted"),
        Err(a) if a.retry => {
            abort_later(c, key, upload_id);
            e.context(format!(
                "multipart upload failed, and aborting it failed too ({}); \
                 the abort is retried in the background and before the next upload",
                a.message
            ))
        }
        Err(a) => e.context(format!(
            "multipart upload failed, and the store refused to abort it ({}); \
             a lifecycle rule (AbortIncompleteMultipartUpload) can clean it up",
            a.message
        )),
    }
}

/// Abort the other multipart uploads of `key`: a CreateMultipartUpload whose answer was lost (a
/// reset, a stalled or cut answer) is retried by the SDK, and the upload the server made for the
/// lost attempt is then one we never heard of, left open forever unless aborted. One writer
/// replicates to a prefix at a time, so an upload of this very key that no client of this
/// process is running is such an orphan (or a dead process's). Best effort: the listing and the
/// aborts have the SDK's retries; what still fails is left to the sweep and lifecycle rules.
pub(super) fn abort_unheard_uploads(c: &S3Client, key: &str) {
    let (client, bucket, key) = (c.client.clone(), c.target.bucket.clone(), key.to_string());
    let n = run(&c.rt, async move {
        let Ok(resp) = client
            .list_multipart_uploads()
            .bucket(&bucket)
            .prefix(&key)
            .send()
            .await
        else {
            return 0;
        };
        let mut aborted = 0;
        for u in resp.uploads() {
            let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                continue;
            };
            if k == key
                && !active_uploads().contains(id)
                && try_abort(&client, &bucket, k, id).await.is_ok()
            {
                aborted += 1;
            }
        }
        aborted
    });
    c.progress.uploads_aborted.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::S3Target;
    use aws_sdk_s3::config::{Credentials, Region};
    use aws_smithy_runtime_api::client::http::{
        http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_types::retry::RetryConfig;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Answers AbortMultipartUpload with a 500 the first `failures` times, then with success.
    #[derive(Debug)]
    struct FlakyAborts {
        aborts: Arc<AtomicUsize>,
        failures: usize,
    }

    impl HttpConnector for FlakyAborts {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let is_abort = request.method() == "DELETE" && request.uri().contains("uploadId=");
            let n = if is_abort {
                self.aborts.fetch_add(1, Ordering::SeqCst)
            } else {
                usize::MAX
            };
            let status: u16 = if is_abort && n < self.failures {
                500
            } else {
                204
            };
            let answer = aws_sdk_s3::config::http::HttpResponse::new(
                status.try_into().unwrap(),
                aws_smithy_types::body::SdkBody::from(""),
            );
            HttpConnectorFuture::ready(Ok(answer))
        }
    }

    #[test]
    fn a_failed_abort_is_retried_later_without_another_upload() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let target = S3Target {
            bucket: "b".into(),
            path: "p".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            force_path_style: true,
            skip_verify: false,
            access_key_id: Some("a".into()),
            secret_access_key: Some("b".into()),
            part_size: 5 << 20,
            concurrency: 1,
        };
        let aborts = Arc::new(AtomicUsize::new(0));
        let connector = SharedHttpConnector::new(FlakyAborts {
            aborts: aborts.clone(),
            failures: 2,
        });
        let mut c = S3Client::new(&target, rt.handle().clone()).unwrap();
        c.client = Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version_latest()
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("a", "b", None, None, "test"))
                .endpoint_url("http://127.0.0.1:9")
                .force_path_style(true)
                .retry_config(RetryConfig::disabled())
                .http_client(http_client_fn(move |_, _| connector.clone()))
                .build(),
        );
        let e = abort_failed(&c, "p/0000/x.ltx", "u1", Error::msg("part 1 failed"));
        assert!(e.to_string().contains("retried in the background"), "{e}");
        assert_eq!(aborts.load(Ordering::SeqCst), 1);
        assert!(!c.pending_aborts.is_empty());
        // Nothing is uploaded again: the background task alone retries (after 1 s, then 2 s).
        let t0 = Instant::now();
        while !(c.pending_aborts.is_empty() && aborts.load(Ordering::SeqCst) == 3) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "not retried: {} aborts, pending {:?}",
                aborts.load(Ordering::SeqCst),
                c.pending_aborts
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(c.progress.uploads_aborted.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(
            aborts.load(Ordering::SeqCst),
            3,
            "aborted again after success"
        );
        assert!(!c.pending_aborts.retrying.load(Ordering::SeqCst));
    }

    #[test]
    fn only_replica_keys_are_swept() {
        let p = "db/";
        assert!(is_replica_key(
            p,
            "db/0000/0000000000000001-0000000000000001.ltx"
        ));
        assert!(is_replica_key(
            p,
            "db/0009/0000000000000001-00000000000000ff.ltx"
        ));
        assert!(!is_replica_key(p, "db/0000/notes.txt"));
        assert!(!is_replica_key(
            p,
            "db/sub/0000/0000000000000001-0000000000000001.ltx"
        ));
        assert!(!is_replica_key(
            p,
            "other/0000/0000000000000001-0000000000000001.ltx"
        ));
        assert!(!is_replica_key(p, "db/0000/"));
    }
}
