//! A replica file uploaded while it is still being encoded: each part leaves as soon as it is
//! full, so reading and encoding the next pages overlaps with sending the previous ones, and no
//! byte goes through a spool file on disk.
//!
//! Invariants:
//! - Nothing becomes visible before `finish`: parts of a multipart upload are invisible until
//!   CompleteMultipartUpload, and a file smaller than one part is held and sent as one PutObject
//!   at the end. Dropped unfinished (the WAL restarted under the reader, a write failed, the
//!   caller gave up), the multipart upload is aborted (`leftovers` retries a failed abort).
//! - Memory: the part being filled plus at most `concurrency` parts in flight, or the whole file
//!   when it is smaller than that. Every streamed upload of the process reserves that much from
//!   one `STREAM_MEMORY_BUDGET` first (the replicator's pipeline holds two at once: the sealed
//!   file completing while the next is encoded); when the reservation does not fit, or the
//!   caller's size bound needs more than 10,000 parts of the configured size, the file is spooled
//!   and uploaded as before. So streaming adds at most the budget to the process, however many
//!   databases it replicates.
//! - After the first failure every further write fails with the same message, and `finish`
//!   returns it: the encoder stops at once instead of encoding pages nobody will upload.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::leftovers::{self, ActiveUpload};
use super::upload::{self, PartBody, PartSender, Tracked};
use super::S3Client;
use crate::error::{Error, Result};

/// Memory all streamed uploads of the process may hold at once (parts being filled and in
/// flight). One large file takes 5 MiB × (5 + 1) = 30 MiB with the defaults, so one database's
/// pipeline (two files) fits; anything beyond spools, where a part in flight costs a few 256 KiB
/// chunks whatever its size. Issue 14's goal is the writer within 64 MiB of plain SQLite.
pub const STREAM_MEMORY_BUDGET: u64 = 64 << 20;

/// Bytes reserved by the streamed uploads alive now, across the process.
static RESERVED: AtomicU64 = AtomicU64::new(0);

/// A share of `STREAM_MEMORY_BUDGET`, given back when dropped.
pub struct Reservation(u64);

impl Reservation {
    fn take(bytes: u64) -> Option<Reservation> {
        RESERVED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes)
                    .filter(|&total| total <= STREAM_MEMORY_BUDGET)
            })
            .ok()
            .map(|_| Reservation(bytes))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        RESERVED.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// The memory a streamed upload of at most `size_bound` bytes holds at most.
fn stream_memory(part_size: u64, concurrency: usize, size_bound: u64) -> u64 {
    part_size
        .saturating_mul(concurrency as u64 + 1)
        .min(size_bound.max(64 * 1024))
}

/// The reservation to stream an upload of at most `size_bound` bytes with this configuration, or
/// `None` when it must be spooled (the budget is taken, or the part size is too small).
pub fn may_stream(part_size: u64, concurrency: usize, size_bound: u64) -> Option<Reservation> {
    if upload::effective_part_size(size_bound, part_size) != part_size {
        return None;
    }
    Reservation::take(stream_memory(part_size, concurrency, size_bound))
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
    /// Held until the upload is finished or dropped.
    _memory: Reservation,
}

impl<'c> StreamingPut<'c> {
    pub fn new(
        c: &'c S3Client,
        key: String,
        metadata: Vec<(String, String)>,
        size_bound: u64,
        memory: Reservation,
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
            _memory: memory,
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
        // The only test that takes reservations (no other unit test streams to S3).
        let a = may_stream(5 * MIB, 5, 64 * MIB).expect("30 MiB of parts fits");
        assert_eq!(a.0, 30 * MIB);
        let b = may_stream(5 * MIB, 5, 64 * MIB).expect("the pipeline's second file fits");
        assert!(
            may_stream(5 * MIB, 5, 64 * MIB).is_none(),
            "a third would pass 64 MiB"
        );
        let small = may_stream(5 * MIB, 5, 100 * 1024).expect("a small file takes what it needs");
        assert_eq!(small.0, 100 * 1024);
        drop((a, b, small));
        assert!(may_stream(10 * MIB, 5, 1024 * MIB).is_some());
        assert!(
            may_stream(10 * MIB, 6, 1024 * MIB).is_none(),
            "70 MiB of parts"
        );
        assert!(may_stream(100 * MIB, 1, 1024 * MIB).is_none());
        // ... unless the file itself is smaller than that.
        assert!(may_stream(10 * MIB, 6, 60 * MIB).is_some());
        // A bound past 10,000 parts of the configured size would need a larger part size.
        assert!(may_stream(5 * MIB, 5, 5 * MIB * 10_000).is_some());
        assert!(may_stream(5 * MIB, 5, 5 * MIB * 10_000 + 1).is_none());
        assert_eq!(RESERVED.load(Ordering::Acquire), 0);
    }
}
