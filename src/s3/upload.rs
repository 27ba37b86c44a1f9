//! The uploader: one PutObject for objects smaller than `part-size`, a multipart upload for the
//! rest, with at most `concurrency` parts in flight.
//!
//! Invariants:
//! - Memory stays within part-size × concurrency plus a small constant, whatever the object size,
//!   and in practice far below it: a spool that spilled to disk (every object over 8 MiB) is
//!   streamed from its file, each part in flight holding only a couple of 256 KiB chunks plus the
//!   HTTP client's write buffer, whatever the part size; an in-memory spool (at most 8 MiB) is sent
//!   from copies of its slices. Parts start only when a slot is free. The same goes for a single
//!   PutObject: with `part-size: 5GB` that object can be gigabytes, and is never read into memory.
//! - Every body carries its Content-MD5, computed before sending: checked by every S3-compatible
//!   store (SeaweedFS included) and a signed header, so over plain HTTP too the signature covers
//!   the body through it. The payload itself goes as UNSIGNED-PAYLOAD: a SHA-256 of every body
//!   would be a second hash pass for the same protection (a tenth of the uploader's CPU while
//!   catching up, on cores the store may share; SeaweedFS does not even check it). Bodies stream
//!   in small frames: the SDK's stalled-stream protection then sees a body that stops moving and
//!   fails the attempt within seconds instead of at the attempt deadline.
//! - An upload never needs more than S3's 10,000 parts: when the size would exceed it, the part
//!   size is raised just enough (to a whole MiB) and status shows the raised size and the
//!   configured one.
//! - Every part is retried: first by the SDK (5xx, throttling, timeouts, resets, a stalled body),
//!   then in further rounds here with growing pauses, because one lost part costs the whole upload.
//!   Every attempt has a deadline scaled to the body size, so nothing waits forever.
//! - No multipart upload is left behind: on failure the parts still in flight are cancelled and the
//!   upload is aborted; an abort that fails, and uploads a previous writer left under our prefix,
//!   are `leftovers`' to clean up.
//! - Status (`Progress::current`) lists the multipart uploads and large single PUTs in flight with
//!   parts done / total, bytes per second and the part size in effect; the entry is removed however
//!   the upload ends.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use md5::{Digest, Md5};

use super::leftovers::{self, ActiveUpload};
use super::{run, sdk_error, timeouts, S3Client};
use crate::error::{Error, Result};
use crate::replica_client::{InFlight, Progress, Spool};

/// S3's limit on parts per multipart upload.
pub const MAX_PARTS: u64 = 10_000;
const MIB: u64 = 1 << 20;

/// Each upload attempt may take this long for the round trip and the store's own work…
const ATTEMPT_BASE: Duration = Duration::from_secs(30);
/// …plus the body at this rate (256 KiB/s: a slow uplink still finishes a 100 MiB part in under
/// 7 minutes, while a stuck response to a 5 MiB part is given up after 50 s).
const ATTEMPT_FLOOR_RATE: u64 = 256 * 1024;
/// One attempt of CompleteMultipartUpload: AWS may take minutes to assemble thousands of parts
/// (other requests get `OPERATION_ATTEMPT_TIMEOUT`).
pub(crate) const COMPLETE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Rounds per part (each round is the SDK's own quick retries); pauses between rounds start at
/// `PART_ROUND_PAUSE` and double (2, 4, 8, 16 s), so a part survives an outage of about half a
/// minute before the upload is given up (and aborted); the replicator then retries it whole.
const PART_ROUNDS: u32 = 5;
const PART_ROUND_PAUSE: Duration = Duration::from_secs(2);
/// Single PUTs at least this large are shown in status while they run (smaller ones take
/// milliseconds and would only flicker).
const TRACK_SINGLE_PUT_FROM: u64 = 5 * MIB;
/// Chunk size when streaming a spool file; one chunk is read ahead while the previous one is sent.
const FILE_CHUNK: u64 = 256 * 1024;
/// Frame size of an in-memory body: small enough that the HTTP client pulls frames as the socket
/// drains (so a stalled connection shows as a body that stops moving), large enough to be cheap.
const MEMORY_FRAME: usize = 128 * 1024;

/// The part size to use for an object of `size` bytes: the configured one, or the smallest whole
/// number of MiB that keeps the upload within 10,000 parts.
pub fn effective_part_size(size: u64, configured: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    if needed <= configured {
        configured
    } else {
        needed.div_ceil(MIB) * MIB
    }
}

/// The deadline of one attempt of a request carrying `len` body bytes.
pub fn attempt_timeout(len: u64) -> Duration {
    ATTEMPT_BASE + Duration::from_secs(len.div_ceil(ATTEMPT_FLOOR_RATE))
}

fn upload_config(len: u64) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::new().timeout_config(timeouts(attempt_timeout(len)))
}

/// Upload `body` to `key` with the given user metadata. Returns the bytes stored.
pub fn put_object(
    c: &S3Client,
    key: &str,
    metadata: Vec<(String, String)>,
    body: &mut Spool,
) -> Result<u64> {
    leftovers::before_upload(c);
    let size = body.len();
    if size < c.target.part_size {
        put_single(c, key, metadata, body)?;
    } else {
        put_multipart(c, key, metadata, body)?;
    }
    c.progress.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
    c.progress.objects_uploaded.fetch_add(1, Ordering::Relaxed);
    Ok(size)
}

// ---- status -------------------------------------------------------------------------------------

static NEXT_UPLOAD: AtomicU64 = AtomicU64::new(1);

/// This upload's entry in `Progress::current`, removed on drop however the upload ends.
pub(super) struct Tracked {
    progress: Arc<Progress>,
    id: u64,
}

impl Tracked {
    pub(super) fn start(
        progress: &Arc<Progress>,
        key: &str,
        size: u64,
        part_size: u64,
        configured: u64,
    ) -> Tracked {
        let id = NEXT_UPLOAD.fetch_add(1, Ordering::Relaxed);
        let entry = InFlight {
            id,
            key: key.to_string(),
            size,
            part_size,
            parts_total: size.div_ceil(part_size).max(1),
            parts_done: 0,
            bytes_done: 0,
            started: Instant::now(),
            part_size_raised_from: (part_size > configured).then_some(configured),
        };
        progress
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
        Tracked {
            progress: progress.clone(),
            id,
        }
    }

    fn update(&self, f: impl FnOnce(&mut InFlight)) {
        let mut all = self
            .progress
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(e) = all.iter_mut().find(|e| e.id == self.id) {
            f(e);
        }
    }

    fn part_done(&self, len: u64) {
        self.update(|e| {
            e.parts_done += 1;
            e.bytes_done += len;
        });
    }

    /// A streamed upload learns its size at its last part (until then it shows the bound).
    pub(super) fn set_size(&self, size: u64) {
        self.update(|e| {
            e.size = size;
            e.parts_total = size.div_ceil(e.part_size).max(1);
        });
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.progress
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|e| e.id != self.id);
    }
}

// ---- bodies -------------------------------------------------------------------------------------

/// A body's Content-MD5 (base64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Digests {
    md5: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Digests {
    fn of(data: &[u8]) -> Digests {
        Digests {
            md5: aws_smithy_types::base64::encode(Md5::digest(data)),
        }
    }

    /// Of `len` bytes of `file` from `offset`, read in 1 MiB pieces.
    fn of_file(file: &File, offset: u64, len: u64) -> io::Result<Digests> {
        let mut md5 = Md5::new();
        let mut buf = vec![0u8; MIB.min(len) as usize];
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(MIB) as usize;
            file.read_exact_at(&mut buf[..n], offset + off)?;
            md5.update(&buf[..n]);
            off += n as u64;
        }
        Ok(Digests {
            md5: aws_smithy_types::base64::encode(md5.finalize()),
        })
    }
}

/// In-memory bytes sent in `MEMORY_FRAME` slices (no copies). Retryable.
fn memory_stream(data: Bytes) -> ByteStream {
    ByteStream::new(SdkBody::retryable(move || {
        SdkBody::from_body_1_x(MemoryBody { data: data.clone() })
    }))
}

struct MemoryBody {
    data: Bytes,
}

impl http_body::Body for MemoryBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = this.data.len().min(MEMORY_FRAME);
        Poll::Ready(Some(Ok(http_body::Frame::data(this.data.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() as u64)
    }
}

/// A request body that reads `len` bytes of `file` from `offset` in `FILE_CHUNK` pieces.
/// Retryable: every attempt gets a fresh reader over the same file.
fn file_stream(file: Arc<File>, offset: u64, len: u64) -> ByteStream {
    ByteStream::new(SdkBody::retryable(move || {
        SdkBody::from_body_1_x(FileBody::new(file.clone(), offset, len))
    }))
}

type BoxError = Box<dyn StdError + Send + Sync>;

struct FileBody {
    file: Arc<File>,
    /// File offset of the body's first byte.
    start: u64,
    /// Body offset of the next read to start.
    next: u64,
    len: u64,
    /// Bytes handed to the HTTP client so far.
    delivered: u64,
    /// The read in progress (on tokio's blocking pool: file reads must not stall an I/O worker).
    reading: Option<tokio::task::JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    fn new(file: Arc<File>, start: u64, len: u64) -> FileBody {
        FileBody {
            file,
            start,
            next: 0,
            len,
            delivered: 0,
            reading: None,
        }
    }

    fn start_read(&mut self) {
        let n = (self.len - self.next).min(FILE_CHUNK) as usize;
        let (file, off) = (self.file.clone(), self.start + self.next);
        self.next += n as u64;
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, off)?;
            Ok(Bytes::from(buf))
        }));
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.reading.is_none() {
            if this.next >= this.len {
                return Poll::Ready(None);
            }
            this.start_read();
        }
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let chunk = match Pin::new(reading).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        this.reading = None;
        let chunk = match chunk {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
            Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
        };
        this.delivered += chunk.len() as u64;
        if this.next < this.len {
            // Read ahead while this chunk goes out.
            this.start_read();
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.delivered >= self.len
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len - self.delivered)
    }
}

// ---- single PUT ---------------------------------------------------------------------------------

fn put_single(
    c: &S3Client,
    key: &str,
    metadata: Vec<(String, String)>,
    body: &mut Spool,
) -> Result<()> {
    let len = body.len();
    let read_err = |e: io::Error| Error::msg(format!("reading spooled upload: {e}"));
    let data = match body.file_handle() {
        // In memory: at most the spool's memory limit.
        None => PartBody::Memory(Bytes::from(body.as_memory().unwrap_or_default().to_vec())),
        // Spilled to disk: stream it from the file.
        Some(file) => PartBody::File {
            file: Arc::new(file.map_err(read_err)?),
            offset: 0,
            len,
        },
    };
    let digests = data.digests().map_err(read_err)?;
    put_body(c, key, metadata, data, digests)
}

/// One PutObject of `data`, whose digests are given.
pub(super) fn put_body(
    c: &S3Client,
    key: &str,
    metadata: Vec<(String, String)>,
    data: PartBody,
    digests: Digests,
) -> Result<()> {
    let len = data.len();
    let tracked = (len >= TRACK_SINGLE_PUT_FROM)
        .then(|| Tracked::start(&c.progress, key, len, len, c.target.part_size));
    let client = c.client.clone();
    let bucket = c.target.bucket.clone();
    let key_owned = key.to_string();
    run(&c.rt, async move {
        let mut req = client
            .put_object()
            .bucket(&bucket)
            .key(&key_owned)
            .content_length(len as i64)
            .content_md5(digests.md5)
            .body(data.stream());
        for (k, v) in metadata {
            req = req.metadata(k, v);
        }
        req.customize()
            .config_override(upload_config(len))
            .send()
            .await
            .map_err(|e| sdk_error("uploading", &format!("s3://{bucket}/{key_owned}"), e))?;
        Ok::<(), Error>(())
    })?;
    if let Some(t) = &tracked {
        t.part_done(len);
    }
    Ok(())
}

// ---- multipart ----------------------------------------------------------------------------------

fn put_multipart(
    c: &S3Client,
    key: &str,
    metadata: Vec<(String, String)>,
    body: &mut Spool,
) -> Result<()> {
    let size = body.len();
    let configured = c.target.part_size;
    let part_size = effective_part_size(size, configured);
    let upload_id = create(c, key, metadata)?;
    let active = ActiveUpload::new(&upload_id);
    let tracked = Tracked::start(&c.progress, key, size, part_size, configured);
    let result = upload_parts(c, key, &upload_id, body, part_size, tracked)
        .and_then(|parts| complete(c, key, &upload_id, parts));
    finish_multipart(c, key, &upload_id, active, result)
}

/// CreateMultipartUpload; returns the upload id.
pub(super) fn create(c: &S3Client, key: &str, metadata: Vec<(String, String)>) -> Result<String> {
    let client = c.client.clone();
    let (bucket, key) = (c.target.bucket.clone(), key.to_string());
    run(&c.rt, async move {
        let url = format!("s3://{bucket}/{key}");
        let mut req = client.create_multipart_upload().bucket(&bucket).key(&key);
        for (k, v) in metadata {
            req = req.metadata(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| sdk_error("starting multipart upload of", &url, e))?;
        resp.upload_id()
            .map(str::to_string)
            .ok_or_else(|| Error::msg(format!("starting multipart upload of {url}: no upload id")))
    })
}

/// The end of every multipart upload, however it went: counted, or aborted (`leftovers` retries
/// an abort that fails); then uploads the server made for lost CreateMultipartUpload answers go.
pub(super) fn finish_multipart(
    c: &S3Client,
    key: &str,
    upload_id: &str,
    active: ActiveUpload,
    result: Result<()>,
) -> Result<()> {
    *c.progress
        .retrying
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = None;
    let outcome = match result {
        Ok(()) => {
            c.progress.multipart_uploads.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(leftovers::abort_failed(c, key, upload_id, e)),
    };
    drop(active);
    leftovers::abort_unheard_uploads(c, key);
    outcome
}

/// CompleteMultipartUpload. If an earlier attempt completed the upload but its answer was lost
/// (the retry then finds NoSuchUpload), the object is there: it is ours when its ETag is the one
/// these parts make (S3's multipart ETag: MD5 of the parts' MD5s, then `-<parts>`).
pub(super) fn complete(
    c: &S3Client,
    key: &str,
    upload_id: &str,
    parts: Vec<CompletedPart>,
) -> Result<()> {
    let expected = multipart_etag(&parts);
    let client = c.client.clone();
    let (bucket, key, upload_id) = (
        c.target.bucket.clone(),
        key.to_string(),
        upload_id.to_string(),
    );
    run(&c.rt, async move {
        let url = format!("s3://{bucket}/{key}");
        let sent = client
            .complete_multipart_upload()
            .bucket(&bucket)
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::new()
                    .timeout_config(timeouts(COMPLETE_ATTEMPT_TIMEOUT)),
            )
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") && expected.is_some() => {
                let head = client.head_object().bucket(&bucket).key(&key).send().await;
                let etag = head
                    .ok()
                    .and_then(|h| h.e_tag().map(|t| t.trim_matches('"').to_string()));
                if etag.is_some() && etag == expected {
                    Ok(())
                } else {
                    Err(sdk_error("completing multipart upload of", &url, e))
                }
            }
            Err(e) => Err(sdk_error("completing multipart upload of", &url, e)),
        }
    })
}

/// The ETag S3 gives a completed multipart upload of these parts, if every part's ETag is a plain
/// MD5 (it is unless the store encrypts with SSE-KMS/C, or is not S3-like there).
fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    let mut md5 = Md5::new();
    for p in parts {
        let t = p.e_tag()?.trim_matches('"');
        if t.len() != 32 {
            return None;
        }
        for i in (0..32).step_by(2) {
            md5.update([u8::from_str_radix(t.get(i..i + 2)?, 16).ok()?]);
        }
    }
    Some(format!("{}-{}", hex(&md5.finalize()), parts.len()))
}

/// Where a part's bytes come from: a copy of a slice of an in-memory spool (at most the spool's
/// memory limit in all), or a region of the spool's file, streamed (then a part in flight costs
/// a few chunks of memory, not part-size).
pub(super) enum PartBody {
    Memory(Bytes),
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl PartBody {
    fn len(&self) -> u64 {
        match self {
            PartBody::Memory(b) => b.len() as u64,
            PartBody::File { len, .. } => *len,
        }
    }

    fn stream(&self) -> ByteStream {
        match self {
            PartBody::Memory(b) => memory_stream(b.clone()),
            PartBody::File { file, offset, len } => file_stream(file.clone(), *offset, *len),
        }
    }

    pub(super) fn digests(&self) -> io::Result<Digests> {
        match self {
            PartBody::Memory(b) => Ok(Digests::of(b)),
            PartBody::File { file, offset, len } => Digests::of_file(file, *offset, *len),
        }
    }
}

/// Sends its part's outcome when dropped: also when the task panics or is cancelled, so the
/// uploader never waits for a message that cannot come.
struct Report {
    tx: std::sync::mpsc::Sender<(i32, u64, Result<String>)>,
    part: i32,
    len: u64,
    outcome: Option<Result<String>>,
}

impl Drop for Report {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Err(Error::msg(format!(
                "part {} upload ended without a result",
                self.part
            )))
        });
        let _ = self.tx.send((self.part, self.len, outcome));
    }
}

/// Send every part of a spool with at most `concurrency` in flight; returns the parts in order.
fn upload_parts(
    c: &S3Client,
    key: &str,
    upload_id: &str,
    body: &mut Spool,
    part_size: u64,
    tracked: Tracked,
) -> Result<Vec<CompletedPart>> {
    let size = body.len();
    let read_err = |e: io::Error| Error::msg(format!("reading spooled upload: {e}"));
    let file = match body.file_handle() {
        Some(f) => Some(Arc::new(f.map_err(read_err)?)),
        None => None,
    };
    let mut sender = PartSender::new(c, key, upload_id, tracked);
    for (i, offset) in (0..size).step_by(part_size as usize).enumerate() {
        let len = part_size.min(size - offset);
        let data = match &file {
            Some(file) => PartBody::File {
                file: file.clone(),
                offset,
                len,
            },
            None => {
                let mut buf = vec![0u8; len as usize];
                body.read_at(&mut buf, offset).map_err(read_err)?;
                PartBody::Memory(Bytes::from(buf))
            }
        };
        sender.send(i as i32 + 1, data)?;
    }
    sender.finish()
}

/// The parts of one multipart upload in flight: `send` hashes a part (on the caller's thread, not
/// on the runtime's I/O workers, and while earlier parts are still sending) and starts it once
/// fewer than `concurrency` parts are in flight. On the first failure, or when dropped
/// unfinished, the parts still in flight are cancelled (their connections close).
pub(super) struct PartSender<'c> {
    c: &'c S3Client,
    job: Arc<PartJob>,
    tx: std::sync::mpsc::Sender<(i32, u64, Result<String>)>,
    rx: std::sync::mpsc::Receiver<(i32, u64, Result<String>)>,
    running: HashMap<i32, tokio::task::JoinHandle<()>>,
    parts: Vec<CompletedPart>,
    tracked: Tracked,
    concurrency: usize,
}

impl<'c> PartSender<'c> {
    pub(super) fn new(
        c: &'c S3Client,
        key: &str,
        upload_id: &str,
        tracked: Tracked,
    ) -> PartSender<'c> {
        let (tx, rx) = std::sync::mpsc::channel();
        PartSender {
            c,
            job: Arc::new(PartJob {
                client: c.client.clone(),
                bucket: c.target.bucket.clone(),
                key: key.to_string(),
                upload_id: upload_id.to_string(),
                progress: c.progress.clone(),
            }),
            tx,
            rx,
            running: HashMap::new(),
            parts: Vec::new(),
            tracked,
            concurrency: c.target.concurrency.max(1),
        }
    }

    pub(super) fn tracked(&self) -> &Tracked {
        &self.tracked
    }

    /// Hash `data` and start it as part number `part`, after waiting for a free slot.
    pub(super) fn send(&mut self, part: i32, data: PartBody) -> Result<()> {
        let digests = data
            .digests()
            .map_err(|e| Error::msg(format!("reading spooled upload: {e}")))?;
        while self.running.len() >= self.concurrency {
            self.wait_one()?;
        }
        let report = Report {
            tx: self.tx.clone(),
            part,
            len: data.len(),
            outcome: None,
        };
        let job = self.job.clone();
        let handle = self.c.rt.spawn(async move {
            // Move the whole guard in (a closure would capture only the field it assigns).
            let mut report = report;
            report.outcome = Some(send_part(&job, part, data, digests).await);
        });
        self.running.insert(part, handle);
        Ok(())
    }

    /// Wait for one part in flight to end.
    fn wait_one(&mut self) -> Result<()> {
        let (part, len, outcome) = self
            .rx
            .recv()
            .map_err(|_| Error::msg("internal: part uploads vanished"))?;
        self.running.remove(&part);
        let etag = outcome?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(part)
                .e_tag(etag)
                .build(),
        );
        self.tracked.part_done(len);
        Ok(())
    }

    /// Wait for every part; returns them in order.
    pub(super) fn finish(mut self) -> Result<Vec<CompletedPart>> {
        while !self.running.is_empty() {
            self.wait_one()?;
        }
        let mut parts = std::mem::take(&mut self.parts);
        parts.sort_by_key(|p| p.part_number());
        if parts
            .iter()
            .enumerate()
            .any(|(i, p)| p.part_number() != Some(i as i32 + 1))
        {
            return Err(Error::msg("internal: multipart upload with a missing part"));
        }
        Ok(parts)
    }
}

impl Drop for PartSender<'_> {
    fn drop(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let handles: Vec<_> = self.running.drain().map(|(_, h)| h).collect();
        run(&self.c.rt, async move {
            for h in &handles {
                h.abort();
            }
            for h in handles {
                let _ = h.await;
            }
        });
    }
}

/// Whether a request that failed after the SDK's own retries deserves another round: failures
/// of the network or the server, never a refusal (4xx other than timeouts and throttling).
pub(super) fn worth_another_round<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            matches!(
                s.err().code(),
                Some(
                    "InternalError"
                        | "ServiceUnavailable"
                        | "SlowDown"
                        | "RequestTimeout"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeTooSkewed"
                )
            ) || s.err().code().is_none()
        }
        _ => false,
    }
}

/// What every part of one multipart upload shares.
pub(super) struct PartJob {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    progress: Arc<Progress>,
}

async fn send_part(job: &PartJob, part: i32, data: PartBody, digests: Digests) -> Result<String> {
    let PartJob {
        client,
        bucket,
        key,
        upload_id,
        progress,
    } = job;
    let len = data.len();
    let mut pause = PART_ROUND_PAUSE;
    let mut round = 1;
    loop {
        let sent = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part)
            .content_length(len as i64)
            .content_md5(digests.md5.clone())
            .body(data.stream())
            .customize()
            .config_override(upload_config(len))
            .send()
            .await;
        match sent {
            Ok(out) => {
                *progress.retrying.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return out.e_tag().map(str::to_string).ok_or_else(|| {
                    Error::msg(format!(
                        "uploading part {part} of s3://{bucket}/{key}: no ETag in the response"
                    ))
                });
            }
            Err(e) if round < PART_ROUNDS && worth_another_round(&e) => {
                let what = format!("uploading part {part} of");
                *progress.retrying.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                    "{} (retrying, round {} of {PART_ROUNDS})",
                    sdk_error(&what, &format!("s3://{bucket}/{key}"), e),
                    round + 1
                ));
                tokio::time::sleep(pause).await;
                pause *= 2;
                round += 1;
            }
            Err(e) => {
                let what = if round > 1 {
                    format!("uploading part {part} ({round} rounds of retries) of")
                } else {
                    format!("uploading part {part} of")
                };
                return Err(sdk_error(&what, &format!("s3://{bucket}/{key}"), e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_only_past_ten_thousand_parts() {
        let five = 5 * MIB;
        assert_eq!(effective_part_size(64 * MIB, five), five);
        assert_eq!(effective_part_size(five * MAX_PARTS, five), five);
        // One byte more would need 10,001 parts: the next whole MiB.
        assert_eq!(effective_part_size(five * MAX_PARTS + 1, five), 6 * MIB);
        let huge = 100 * 1024 * MIB * 1024; // 100 TiB
        let p = effective_part_size(huge, five);
        assert!(huge.div_ceil(p) <= MAX_PARTS && p.is_multiple_of(MIB));
        // Never above what the size needs, never below the configured size.
        for size in [
            1,
            5 * MIB,
            49 * 1024 * MIB,
            50 * 1024 * MIB,
            51 * 1024 * MIB,
        ] {
            let p = effective_part_size(size, five);
            assert!(p >= five && size.div_ceil(p) <= MAX_PARTS, "{size}");
            assert!(p == five || size.div_ceil(p - MIB) > MAX_PARTS, "{size}");
        }
    }

    #[test]
    fn attempt_deadline_scales_with_the_body() {
        assert_eq!(attempt_timeout(0), ATTEMPT_BASE);
        assert_eq!(
            attempt_timeout(5 * MIB),
            ATTEMPT_BASE + Duration::from_secs(20)
        );
        assert_eq!(
            attempt_timeout(5 * 1024 * MIB),
            ATTEMPT_BASE + Duration::from_secs(20480)
        );
    }

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        let part = |n: i32, data: &[u8]| {
            CompletedPart::builder()
                .part_number(n)
                .e_tag(format!("\"{}\"", hex(&Md5::digest(data))))
                .build()
        };
        let parts = [part(1, b"hello "), part(2, b"world")];
        let mut concat = Vec::new();
        concat.extend_from_slice(&Md5::digest(b"hello "));
        concat.extend_from_slice(&Md5::digest(b"world"));
        assert_eq!(
            multipart_etag(&parts),
            Some(format!("{}-2", hex(&Md5::digest(&concat))))
        );
        let odd = [CompletedPart::builder()
            .part_number(1)
            .e_tag("\"not-an-md5\"")
            .build()];
        assert_eq!(multipart_etag(&odd), None);
    }

    #[test]
    fn digests_are_content_md5() {
        assert_eq!(Digests::of(b"").md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(Digests::of(b"abc").md5, "kAFQmDzST7DWlj99KOF/cg==");
    }

    #[test]
    fn memory_body_frames_the_bytes_without_loss() {
        use http_body::Body;
        let data: Vec<u8> = (0..(MEMORY_FRAME * 2 + 5))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut body = MemoryBody {
            data: Bytes::from(data.clone()),
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        let mut frames = 0;
        loop {
            assert_eq!(
                body.size_hint().exact(),
                Some((data.len() - out.len()) as u64)
            );
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let chunk = f.into_data().unwrap();
                    assert!(chunk.len() <= MEMORY_FRAME);
                    out.extend_from_slice(&chunk);
                    frames += 1;
                }
                Poll::Ready(None) => break,
                other => panic!("unexpected {:?}", other.is_pending()),
            }
        }
        assert_eq!(out, data);
        assert_eq!(frames, 3);
        assert!(body.is_end_stream());
    }

    #[test]
    fn file_body_streams_exactly_the_file() {
        use http_body::Body;
        let dir = std::env::temp_dir().join(format!("ls-filebody-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..(FILE_CHUNK * 3 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let mut body = FileBody::new(file.clone(), 0, data.len() as u64);
            assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
            let mut out = Vec::new();
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                out.extend_from_slice(frame.unwrap().data_ref().unwrap());
            }
            assert!(body.is_end_stream());
            out
        });
        assert_eq!(got, data);
        let d = Digests::of_file(&file, 0, data.len() as u64).unwrap();
        assert_eq!(d, Digests::of(&data));
        // A region in the middle, as a multipart part streams it.
        let (off, len) = (FILE_CHUNK + 3, FILE_CHUNK + 100);
        let region = rt.block_on(async {
            let mut body = FileBody::new(file.clone(), off, len);
            let mut out = Vec::new();
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                out.extend_from_slice(frame.unwrap().data_ref().unwrap());
            }
            out
        });
        assert_eq!(region, &data[off as usize..(off + len) as usize]);
        assert_eq!(
            Digests::of_file(&file, off, len).unwrap(),
            Digests::of(&region)
        );
        assert_eq!(d.md5, aws_smithy_types::base64::encode(Md5::digest(&data)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
