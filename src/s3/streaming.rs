//! A replica file uploaded while it is still being encoded: each part leaves as soon as it is
//! full, so reading and encoding the next pages overlaps with sending the previous ones, and no
//! byte goes through a spool file on disk.
//!
//! Invariants:
//! - Nothing becomes visible before `finish`: parts of a multipart upload are invisible until
//!   CompleteMultipartUpload, and a file smaller than one part is held and sent as one PutObject
//!   at the end. Dropped unfinished (the WAL restarted under the reader, a write failed, the
//!   caller gave up), the multipart upload is aborted (`leftovers` retries a failed abort).
//! - Memory: the part being filled plus at most `concurrency` parts in flight. `S3Client` streams
//!   only when that stays within `STREAM_MEMORY_BUDGET` and the caller's size bound fits in
//!   10,000 parts of the configured size; otherwise the file is spooled and uploaded as before.
//! - After the first failure every further write fails with the same message, and `finish`
//!   returns it: the encoder stops at once instead of encoding pages nobody will upload.

use std::io::{self, Write};
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::leftovers::{self, ActiveUpload};
use super::upload::{self, PartBody, PartSender, Tracked};
use super::S3Client;
use crate::error::{Error, Result};

/// Parts in memory at most (the one being filled and those in flight) for a streamed upload:
/// 5 MiB × (5 + 1) = 30 MiB with the defaults. Larger part sizes or concurrency spool instead,
/// where a part in flight costs a few 256 KiB chunks whatever its size.
pub const STREAM_MEMORY_BUDGET: u64 = 64 << 20;

/// Whether an upload of at most `size_bound` bytes may stream with this configuration.
pub fn may_stream(part_size: u64, concurrency: usize, size_bound: u64) -> bool {
    part_size.saturating_mul(concurrency as u64 + 1) <= STREAM_MEMORY_BUDGET
        && upload::effective_part_size(size_bound, part_size) == part_size
}

/// The multipart upload, once the first part is full.
struct Multipart<'c> {
    upload_id: String,
    active: ActiveUpload,
    sender: PartSender<'c>,
    next_part: i32,
}

/// One object written through `Write` and stored by `finish`.
pub struct StreamingPut<'c> {
    c: &'c S3Client,
    key: String,
    metadata: Vec<(String, String)>,
    part_size: u64,
    /// For status until the size is known.
    size_bound: u64,
    buf: Vec<u8>,
    multipart: Option<Multipart<'c>>,
    len: u64,
    failed: Option<String>,
}

impl<'c> StreamingPut<'c> {
    pub fn new(
        c: &'c S3Client,
        key: String,
        metadata: Vec<(String, String)>,
        size_bound: u64,
    ) -> StreamingPut<'c> {
        leftovers::before_upload(c);
        StreamingPut {
            c,
            key,
            metadata,
            part_size: c.target.part_size,
            size_bound,
            buf: Vec::new(),
            multipart: None,
            len: 0,
            failed: None,
        }
    }

    /// Hand the full buffer to the multipart upload (starting it on the first part).
    fn ship(&mut self) -> Result<()> {
        if self.multipart.is_none() {
            let upload_id = upload::create(self.c, &self.key, std::mem::take(&mut self.metadata))?;
            let active = ActiveUpload::new(&upload_id);
            let tracked = Tracked::start(
                &self.c.progress,
                &self.key,
                self.size_bound.max(self.part_size),
                self.part_size,
                self.part_size,
            );
            let sender = PartSender::new(self.c, &self.key, &upload_id, tracked);
            self.multipart = Some(Multipart {
                upload_id,
                active,
                sender,
                next_part: 1,
            });
        }
        let data = std::mem::take(&mut self.buf);
        let Some(m) = self.multipart.as_mut() else {
            return Err(Error::msg("internal: multipart upload missing"));
        };
        let part = m.next_part;
        m.next_part += 1;
        m.sender.send(part, PartBody::Memory(Bytes::from(data)))
    }

    /// Store the object. Returns the bytes stored.
    pub fn finish(mut self) -> Result<u64> {
        if let Some(msg) = self.failed.take() {
            return Err(Error::msg(msg));
        }
        let size = self.len;
        let Some(mut m) = self.multipart.take() else {
            // Smaller than one part: one PutObject.
            let data = PartBody::Memory(Bytes::from(std::mem::take(&mut self.buf)));
            let digests = data
                .digests()
                .map_err(|e| Error::msg(format!("hashing upload: {e}")))?;
            upload::put_body(
                self.c,
                &self.key,
                std::mem::take(&mut self.metadata),
                data,
                digests,
            )?;
            self.counted(size);
            return Ok(size);
        };
        m.sender.tracked().set_size(size);
        let mut result = Ok(());
        if !self.buf.is_empty() {
            let data = std::mem::take(&mut self.buf);
            let part = m.next_part;
            result = m.sender.send(part, PartBody::Memory(Bytes::from(data)));
        }
        let Multipart {
            upload_id,
            active,
            sender,
            ..
        } = m;
        let result = result
            .and_then(|()| sender.finish())
            .and_then(|parts| upload::complete(self.c, &self.key, &upload_id, parts));
        upload::finish_multipart(self.c, &self.key, &upload_id, active, result)?;
        self.counted(size);
        Ok(size)
    }

    fn counted(&self, size: u64) {
        let p = &self.c.progress;
        p.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
        p.objects_uploaded.fetch_add(1, Ordering::Relaxed);
    }
}

impl Write for StreamingPut<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::other(msg.clone()));
        }
        if self.buf.capacity() == 0 {
            // A part, or what is left of the bound when that is less (most L0 files are small).
            let left = self.size_bound.saturating_sub(self.len).max(64 * 1024);
            self.buf.reserve_exact(self.part_size.min(left) as usize);
        }
        let room = self.part_size as usize - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.len += n as u64;
        if self.buf.len() as u64 == self.part_size {
            if let Err(e) = self.ship() {
                let msg = e.to_string();
                self.failed = Some(msg.clone());
                return Err(io::Error::other(msg));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StreamingPut<'_> {
    fn drop(&mut self) {
        // Unfinished: cancel the parts in flight, then abort the upload.
        if let Some(m) = self.multipart.take() {
            let Multipart {
                upload_id,
                active,
                sender,
                ..
            } = m;
            drop(sender);
            let _ = upload::finish_multipart(
                self.c,
                &self.key,
                &upload_id,
                active,
                Err(Error::msg("upload abandoned before it was complete")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn streams_only_within_the_memory_budget_and_the_part_limit() {
        assert!(may_stream(5 * MIB, 5, 64 * MIB));
        assert!(may_stream(10 * MIB, 5, 64 * MIB));
        assert!(!may_stream(10 * MIB, 6, 64 * MIB), "70 MiB of parts");
        assert!(!may_stream(100 * MIB, 1, 64 * MIB));
        // A bound past 10,000 parts of the configured size would need a larger part size.
        assert!(may_stream(5 * MIB, 5, 5 * MIB * 10_000));
        assert!(!may_stream(5 * MIB, 5, 5 * MIB * 10_000 + 1));
    }
}
