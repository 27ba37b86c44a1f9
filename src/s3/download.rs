//! Downloads as blocking readers with bounded memory, resumed where a broken body stopped.
//!
//! A blocking task on the extension's runtime pulls a GET's body into a [`BodyBuffer`] that
//! `BodyReader::read` drains. Why the bound is in bytes: a compaction holds up to 32 inputs open
//! at once and reads each only when the k-way merge reaches its pages, so an input waits with a
//! full buffer; the network's chunks grow to ~400 KiB, and a buffer of 16 chunks per input held
//! up to 6 MiB each — 52 MiB during one soak compaction, which glibc's arenas then kept
//! (bench/RESULTS.md, "Memory"). The kernel's socket buffer keeps a sequential reader (a restore)
//! fed while the task waits.
//!
//! Invariants:
//! - An open download holds at most `BODY_BUFFER_BYTES` plus the one chunk that crossed it, and
//!   the chunk `read` is draining.
//! - A body that breaks off is resumed at the byte where it stopped by a ranged GET pinned to the
//!   first answer's ETag (If-Match), so the pieces are of one and the same object; at most
//!   `BODY_RESUMES` times, then `read` returns the error (and keeps returning it).
//! - Dropping the reader ends the task at its next chunk; the body (and its connection) drop with it.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::runtime::Handle;

use super::sdk_error;

/// Bytes buffered ahead of the reader per open download.
const BODY_BUFFER_BYTES: usize = 256 << 10;
/// A download whose body breaks off (connection reset, an answer cut short, a stalled stream) is
/// resumed where it stopped, up to this many times per object: the SDK retries a request only
/// until its headers arrive, and without this one broken body among the dozens of files a
/// compaction or a restore reads fails the whole run — under a steady error rate, ever more
/// surely as the inputs pile up.
const BODY_RESUMES: u32 = 5;

/// How to fetch the rest of an object.
pub struct Resume {
    pub client: Client,
    pub bucket: String,
    pub key: String,
    pub etag: Option<String>,
}

impl Resume {
    async fn from(&self, offset: u64) -> Result<ByteStream, String> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .range(format!("bytes={offset}-"));
        if let Some(etag) = &self.etag {
            req = req.if_match(etag);
        }
        req.send().await.map(|r| r.body).map_err(|e| {
            sdk_error(
                "resuming the download of",
                &format!("s3://{}/{}", self.bucket, self.key),
                e,
            )
            .to_string()
        })
    }
}

/// The chunks between the network task and the reader.
#[derive(Default)]
struct Buffered {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// Set once the body ended: `Ok` at its end, `Err` when it broke off for good.
    end: Option<Result<(), String>>,
    reader_gone: bool,
}

#[derive(Default)]
struct BodyBuffer {
    state: Mutex<Buffered>,
    changed: Condvar,
}

impl BodyBuffer {
    fn lock(&self) -> MutexGuard<'_, Buffered> {
        // Nothing that can panic runs under this lock, so a poisoned one still holds a whole queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for room, then queues `chunk`; false when the reader is gone.
    fn push(&self, chunk: Bytes) -> bool {
        let mut st = self.lock();
        while st.bytes >= BODY_BUFFER_BYTES && !st.reader_gone {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.reader_gone {
            return false;
        }
        st.bytes += chunk.len();
        st.chunks.push_back(chunk);
        self.changed.notify_all();
        true
    }

    fn finish(&self, end: Result<(), String>) {
        self.lock().end = Some(end);
        self.changed.notify_all();
    }

    /// The next chunk, waiting for one; `Ok(None)` at the body's end.
    fn pop(&self) -> Result<Option<Bytes>, String> {
        let mut st = self.lock();
        loop {
            if let Some(chunk) = st.chunks.pop_front() {
                st.bytes -= chunk.len();
                self.changed.notify_all();
                return Ok(Some(chunk));
            }
            match &st.end {
                Some(Ok(())) => return Ok(None),
                Some(Err(e)) => return Err(e.clone()),
                None => st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

/// An S3 response body as a blocking `Read` (see the module documentation).
pub struct BodyReader {
    buffer: Arc<BodyBuffer>,
    current: Bytes,
    key: String,
}

impl BodyReader {
    pub fn new(
        rt: &Handle,
        mut body: ByteStream,
        key: String,
        resume: Option<Resume>,
    ) -> BodyReader {
        let buffer = Arc::new(BodyBuffer::default());
        let filler = buffer.clone();
        rt.spawn_blocking(move || {
            // spawn_blocking: waiting for room must not stall a runtime worker.
            let handle = Handle::current();
            let mut offset: u64 = 0;
            let mut resumes = 0;
            let end = loop {
                match handle.block_on(body.next()) {
                    None => break Ok(()),
                    Some(Ok(chunk)) => {
                        offset += chunk.len() as u64;
                        if !filler.push(chunk) {
                            return;
                        }
                    }
                    Some(Err(e)) => match &resume {
                        Some(r) if resumes < BODY_RESUMES => {
                            resumes += 1;
                            match handle.block_on(r.from(offset)) {
                                Ok(rest) => body = rest,
                                Err(e2) => {
                                    break Err(format!("{e}; resuming at byte {offset}: {e2}"))
                                }
                            }
                        }
                        _ => break Err(e.to_string()),
                    },
                }
            };
            filler.finish(end);
        });
        BodyReader {
            buffer,
            current: Bytes::new(),
            key,
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.buffer.pop() {
                Ok(Some(chunk)) => self.current = chunk,
                Ok(None) => return Ok(0),
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "downloading {}: {e}",
                        self.key
                    )))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        self.buffer.lock().reader_gone = true;
        self.buffer.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_holds_at_most_its_bound_plus_one_chunk() {
        let b = Arc::new(BodyBuffer::default());
        let filler = b.clone();
        let chunk = Bytes::from(vec![7u8; 100 << 10]);
        let t = std::thread::spawn(move || {
            for _ in 0..10 {
                assert!(filler.push(chunk.clone()));
            }
            filler.finish(Ok(()));
        });
        // The filler stops once 256 KiB are queued: 3 chunks of 100 KiB, never a fourth.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(b.lock().chunks.len(), 3);
        let mut total = 0;
        while let Some(c) = b.pop().unwrap() {
            assert!(b.lock().bytes < BODY_BUFFER_BYTES + (100 << 10));
            total += c.len();
        }
        t.join().unwrap();
        assert_eq!(total, 10 * (100 << 10));
    }

    #[test]
    fn a_gone_reader_releases_the_filler_and_errors_repeat() {
        let b = Arc::new(BodyBuffer::default());
        let filler = b.clone();
        let t = std::thread::spawn(move || {
            let big = Bytes::from(vec![0u8; BODY_BUFFER_BYTES]);
            assert!(filler.push(big.clone()));
            filler.push(big) // waits for room until the reader goes
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        b.lock().reader_gone = true;
        b.changed.notify_all();
        assert!(!t.join().unwrap());

        let e = BodyBuffer::default();
        e.finish(Err("connection reset".into()));
        assert_eq!(e.pop().unwrap_err(), "connection reset");
        assert_eq!(e.pop().unwrap_err(), "connection reset");
    }
}
