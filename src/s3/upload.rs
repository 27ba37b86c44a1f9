//! The uploader: one PutObject for small objects, a multipart upload for objects of at least
//! `part-size`, with at most `concurrency` parts in flight.
//!
//! Invariants:
//! - Memory is bounded by part-size × concurrency (+ one part being read), whatever the object
//!   size: parts are read from the spool one at a time, just before they are sent.
//! - An upload never needs more than S3's 10,000 parts: when the size would exceed it, the part
//!   size is raised just enough (to a whole MiB) and that is reported in status.
//! - A multipart upload that fails is aborted (AbortMultipartUpload), so no orphaned parts keep
//!   costing money. Each request is retried by the SDK's standard retryer (5xx, throttling,
//!   timeouts, resets) before an upload is declared failed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::{run, sdk_error, S3Client};
use crate::error::{Error, Result};
use crate::replica_client::{InFlight, Spool};

/// S3's limit on parts per multipart upload.
pub const MAX_PARTS: u64 = 10_000;
const MIB: u64 = 1 << 20;

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

/// Upload `body` to `key` with the given user metadata.
pub fn put_object(
    c: &S3Client,
    key: &str,
    metadata: Vec<(String, String)>,
    body: &mut Spool,
) -> Result<u64> {
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

fn put_single(
    c: &S3Client,
    key: &str,
    metadata: Vec<(String, String)>,
    body: &mut Spool,
) -> Result<()> {
    let data = match body.as_memory() {
        Some(m) => m.to_vec(),
        None => {
            let mut v = vec![0u8; body.len() as usize];
            body.read_at(&mut v, 0)
                .map_err(|e| Error::msg(format!("reading spooled upload: {e}")))?;
            v
        }
    };
    let client = c.client.clone();
    let bucket = c.target.bucket.clone();
    let key = key.to_string();
    run(&c.rt, async move {
        let mut req = client
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .body(ByteStream::from(data));
        for (k, v) in metadata {
            req = req.metadata(k, v);
        }
        req.send()
            .await
            .map_err(|e| sdk_error("uploading", &format!("s3://{bucket}/{key}"), e))?;
        Ok(())
    })
}

fn put_multipart(
    c: &S3Client,
    key: &str,
    metadata: Vec<(String, String)>,
    body: &mut Spool,
) -> Result<()> {
    let size = body.len();
    let part_size = effective_part_size(size, c.target.part_size);
    let parts_total = size.div_ceil(part_size);
    let bucket = c.target.bucket.clone();
    let url = format!("s3://{bucket}/{key}");

    let upload_id = {
        let client = c.client.clone();
        let (bucket, key, url) = (bucket.clone(), key.to_string(), url.clone());
        run(&c.rt, async move {
            let mut req = client.create_multipart_upload().bucket(&bucket).key(&key);
            for (k, v) in metadata {
                req = req.metadata(k, v);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| sdk_error("starting multipart upload of", &url, e))?;
            resp.upload_id().map(str::to_string).ok_or_else(|| {
                Error::msg(format!("starting multipart upload of {url}: no upload id"))
            })
        })?
    };

    *c.progress.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(InFlight {
        key: key.to_string(),
        size,
        part_size,
        parts_total,
        parts_done: 0,
        bytes_done: 0,
        started: Instant::now(),
        part_size_raised_from: (part_size != c.target.part_size).then_some(c.target.part_size),
    });

    let result = upload_parts(c, key, &upload_id, body, part_size, parts_total).and_then(|parts| {
        let client = c.client.clone();
        let (bucket, key, url, upload_id) = (
            bucket.clone(),
            key.to_string(),
            url.clone(),
            upload_id.clone(),
        );
        run(&c.rt, async move {
            client
                .complete_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("completing multipart upload of", &url, e))?;
            Ok(())
        })
    });
    *c.progress.current.lock().unwrap_or_else(|p| p.into_inner()) = None;

    if let Err(e) = result {
        let client = c.client.clone();
        let (key, upload_id) = (key.to_string(), upload_id.clone());
        let abort = run(&c.rt, async move {
            client
                .abort_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await
                .map(|_| ())
        });
        return Err(match abort {
            Ok(()) => e.context("multipart upload aborted"),
            Err(a) => e.context(format!(
                "multipart upload failed and aborting it failed too ({a})"
            )),
        });
    }
    c.progress.multipart_uploads.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Send every part with at most `concurrency` in flight; returns the parts in order.
fn upload_parts(
    c: &S3Client,
    key: &str,
    upload_id: &str,
    body: &mut Spool,
    part_size: u64,
    parts_total: u64,
) -> Result<Vec<CompletedPart>> {
    let size = body.len();
    let concurrency = c.target.concurrency.max(1);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<(i32, String, u64)>>();
    let mut in_flight = 0usize;
    let mut parts: Vec<CompletedPart> = Vec::with_capacity(parts_total as usize);
    let mut first_error: Option<Error> = None;

    let collect = |res: Result<(i32, String, u64)>,
                   parts: &mut Vec<CompletedPart>,
                   first_error: &mut Option<Error>| match res {
        Ok((n, etag, len)) => {
            parts.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
            if let Some(cur) = c
                .progress
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                cur.parts_done += 1;
                cur.bytes_done += len;
            }
        }
        Err(e) => {
            first_error.get_or_insert(e);
        }
    };

    for index in 0..parts_total {
        if first_error.is_some() {
            break;
        }
        while in_flight >= concurrency {
            let res = done_rx
                .recv()
                .map_err(|_| Error::msg("upload worker vanished"))?;
            in_flight -= 1;
            collect(res, &mut parts, &mut first_error);
        }
        let offset = index * part_size;
        let len = part_size.min(size - offset);
        let mut data = vec![0u8; len as usize];
        body.read_at(&mut data, offset)
            .map_err(|e| Error::msg(format!("reading spooled upload: {e}")))?;
        let part_number = (index + 1) as i32;
        let client = c.client.clone();
        let bucket = c.target.bucket.clone();
        let (key, upload_id, tx) = (key.to_string(), upload_id.to_string(), done_tx.clone());
        c.rt.spawn(async move {
            let res = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(part_number)
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| {
                    sdk_error(
                        &format!("uploading part {part_number} of"),
                        &format!("s3://{bucket}/{key}"),
                        e,
                    )
                })
                .and_then(|r| {
                    r.e_tag()
                        .map(|t| (part_number, t.to_string(), len))
                        .ok_or_else(|| {
                            Error::msg(format!("part {part_number} of {key}: no ETag in response"))
                        })
                });
            let _ = tx.send(res);
        });
        in_flight += 1;
    }
    while in_flight > 0 {
        let res = done_rx
            .recv()
            .map_err(|_| Error::msg("upload worker vanished"))?;
        in_flight -= 1;
        collect(res, &mut parts, &mut first_error);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    parts.sort_by_key(|p| p.part_number());
    Ok(parts)
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
        assert!(huge.div_ceil(p) <= MAX_PARTS && p % MIB == 0);
    }
}
