//! Where replica files live: the `ReplicaClient` trait, the local-directory implementation, and
//! `Spool`, the buffer an LTX file is encoded into before it is uploaded.
//!
//! Invariants:
//! - A file is visible under its final name only once it is complete (S3 PUT/multipart complete are
//!   atomic; the file client writes `*.tmp`, fsyncs, renames, fsyncs the directory).
//! - Listings are returned sorted by (min_txid, max_txid) whatever order the store gives; names
//!   that are not `%016x-%016x.ltx` are skipped (a `.tmp` left by a crash, foreign files).
//! - The S3 layout is `<path>/<%04x level>/<name>`; the file layout is `<dir>/ltx/<level>/<name>`
//!   (Litestream uses the two schemes for its S3 and file backends; a replica made by either
//!   program must be readable by the other).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::error::{Context, Error, Result};
use crate::ltx;

/// Litestream's snapshot level (`SnapshotLevel`); levels 1..=8 are compaction levels.
pub const SNAPSHOT_LEVEL: u8 = 9;

/// One LTX file in a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LtxFileInfo {
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
    pub size: u64,
    /// LIST LastModified (S3) or mtime (file).
    pub created_at: SystemTime,
    /// Full object key or path, for messages and listings.
    pub key: String,
}

/// Where replica files are stored. Blocking: callers are the replicator's own thread and SQL
/// functions; the S3 implementation drives the shared tokio runtime internally.
pub trait ReplicaClient: Send + Sync {
    /// `s3://bucket/path?endpoint=…` or `file:///dir`, never with credentials.
    fn describe(&self) -> String;
    /// Every LTX file of one level, sorted by (min_txid, max_txid).
    fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>>;
    /// As `list`, but `created_at` is the file's own timestamp (S3: the `litestream-timestamp`
    /// metadata, read with HEAD requests, falling back to LastModified when it is missing or
    /// unreadable), as Litestream uses for point-in-time restores. Costs one request per file.
    fn list_timestamped(&self, level: u8) -> Result<Vec<LtxFileInfo>> {
        // The file backend stores the header timestamp as mtime: the listing already has it.
        self.list(level)
    }
    /// Store a complete LTX file under `<level>/<min>-<max>.ltx`, tagged with its header timestamp.
    /// Returns what was stored, as a listing would show it.
    fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        body: &mut Spool,
    ) -> Result<LtxFileInfo>;
    /// Store an LTX file as it is written, of at most `size_bound` bytes (as `put`, once
    /// `finish`ed; nothing if dropped). S3 sends its parts while later ones are still being
    /// encoded when memory allows (`s3::streaming`); otherwise, and for the file backend, the file
    /// is spooled (spilling to `spill_dir`) and `put` at `finish`.
    fn put_streaming<'a>(
        &'a self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        spill_dir: &Path,
        size_bound: u64,
    ) -> Result<Box<dyn PutStream + 'a>>;
    /// A reader over the whole file.
    fn open(&self, file: &LtxFileInfo) -> Result<Box<dyn Read + Send>>;
    /// Remove files (retention). Missing files are not an error.
    fn delete(&self, files: &[LtxFileInfo]) -> Result<()>;
    /// Upload counters and the upload in flight, for status.
    fn progress(&self) -> Arc<Progress>;
}
/// An LTX file being stored while it is written (`ReplicaClient::put_streaming`).
pub trait PutStream: Write {
    /// Store it; returns what was stored, as a listing would show it.
    fn finish(self: Box<Self>) -> Result<LtxFileInfo>;
}

/// The `PutStream` of a client that stores whole files: spool, then `put`.
pub struct SpooledPut<'a> {
    client: &'a dyn ReplicaClient,
    level: u8,
    min_txid: u64,
    max_txid: u64,
    timestamp_ms: i64,
    spool: Spool,
}

impl<'a> SpooledPut<'a> {
    pub fn new(
        client: &'a dyn ReplicaClient,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        spill_dir: &Path,
    ) -> SpooledPut<'a> {
        SpooledPut {
            client,
            level,
            min_txid,
            max_txid,
            timestamp_ms,
            spool: Spool::new(spill_dir, SPOOL_MEMORY_LIMIT),
        }
    }
}

impl Write for SpooledPut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spool.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spool.flush()
    }
}

impl PutStream for SpooledPut<'_> {
    fn finish(mut self: Box<Self>) -> Result<LtxFileInfo> {
        let client = self.client;
        let (level, min, max, ts) = (self.level, self.min_txid, self.max_txid, self.timestamp_ms);
        client.put(level, min, max, ts, &mut self.spool)
    }
}

/// Live figures for `litestream_status()`.
#[derive(Default)]
pub struct Progress {
    pub bytes_uploaded: AtomicU64,
    pub objects_uploaded: AtomicU64,
    pub multipart_uploads: AtomicU64,
    /// Multipart uploads found left behind under the replica's prefix (by a process that died
    /// mid-upload) or whose abort failed earlier, and aborted since.
    pub uploads_aborted: AtomicU64,
    /// Uploads running now, oldest first (one per replicator in practice; a Vec so that two
    /// threads sharing a client never clear each other's entry).
    pub current: Mutex<Vec<InFlight>>,
    /// The failure a running upload is riding out (a part being retried after a failed round),
    /// so that status shows an outage before the upload gives up; cleared by the next part
    /// stored and when the upload ends.
    pub retrying: Mutex<Option<String>>,
}

/// An upload currently running: every multipart upload, and single PUTs of at least 5 MiB.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// Distinguishes concurrent entries; only the uploader that added an entry removes it.
    pub id: u64,
    pub key: String,
    pub size: u64,
    pub part_size: u64,
    pub parts_total: u64,
    pub parts_done: u64,
    pub bytes_done: u64,
    pub started: Instant,
    /// Set when the configured part size had to be raised to stay within 10,000 parts.
    pub part_size_raised_from: Option<u64>,
}

impl InFlight {
    pub fn to_json(&self) -> serde_json::Value {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        serde_json::json!({
            "key": self.key,
            "size": self.size,
            "part_size": self.part_size,
            "part_size_raised_from": self.part_size_raised_from,
            "parts_done": self.parts_done,
            "parts_total": self.parts_total,
            "bytes_done": self.bytes_done,
            "bytes_per_second": (self.bytes_done as f64 / secs) as u64,
            "elapsed_ms": self.started.elapsed().as_millis() as u64,
        })
    }
}

/// What `Progress` counts, at one moment.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProgressSnapshot {
    pub bytes_uploaded: u64,
    pub objects_uploaded: u64,
    pub multipart_uploads: u64,
    pub uploads_aborted: u64,
    /// The oldest upload running (status shows one), and how many run.
    pub in_flight: Option<serde_json::Value>,
    pub uploads_in_flight: usize,
    pub retrying: Option<String>,
}

impl Progress {
    pub fn snapshot(&self) -> ProgressSnapshot {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        ProgressSnapshot {
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            objects_uploaded: self.objects_uploaded.load(Ordering::Relaxed),
            multipart_uploads: self.multipart_uploads.load(Ordering::Relaxed),
            uploads_aborted: self.uploads_aborted.load(Ordering::Relaxed),
            in_flight: current.first().map(InFlight::to_json),
            uploads_in_flight: current.len(),
            retrying: self
                .retrying
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Every level a replica may hold, lowest first: 0..=8 compaction levels and 9 for snapshots.
pub fn all_levels() -> impl Iterator<Item = u8> {
    0..=SNAPSHOT_LEVEL
}

/// Highest MaxTXID found in any level (0 for an empty replica).
pub fn replica_max_txid(client: &dyn ReplicaClient) -> Result<u64> {
    Ok(max_txid_of(&list_all_levels(client)?))
}

/// Every level's files (`[l]` = level l), one listing each.
pub fn list_all_levels(client: &dyn ReplicaClient) -> Result<Vec<Vec<LtxFileInfo>>> {
    all_levels().map(|l| client.list(l)).collect()
}

/// The highest TXID in a listing of every level (0 for an empty replica).
pub fn max_txid_of(levels: &[Vec<LtxFileInfo>]) -> u64 {
    levels
        .iter()
        .filter_map(|l| l.last())
        .map(|f| f.max_txid)
        .max()
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Litestream's `litestream-timestamp` metadata value: RFC 3339 in UTC with the fraction's
/// trailing zeros trimmed (Go's RFC3339Nano), e.g. `2023-11-14T22:13:20.123Z`.
pub fn format_timestamp_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if millis != 0 {
        let frac = format!("{millis:03}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses an RFC 3339 time (`2023-11-14T22:13:20.123Z`, offsets allowed); see [`parse_rfc3339`].
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    parse_rfc3339(s).ok()
}

/// Parses any RFC 3339 `date-time` (§5.6): `YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)`, with `T`/`Z`
/// in either case or a space for the `T` (the RFC's readability note), any number of fraction
/// digits (kept to the nanosecond), real calendar days (leap years included), and the leap second
/// `23:59:60` (UTC), which POSIX time cannot name: it is taken as the last nanosecond of
/// `23:59:59`. Years are the RFC's four digits, 0000 to 9999 — all of them representable. The
/// error says what is wrong with the text.
pub fn parse_rfc3339(text: &str) -> std::result::Result<SystemTime, String> {
    let b = text.trim().as_bytes();
    let digits = |at: usize, n: usize, what: &str| -> std::result::Result<i64, String> {
        let part = b
            .get(at..at + n)
            .filter(|p| p.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| format!("expected {n} digits of the {what} at character {}", at + 1))?;
        Ok(part.iter().fold(0i64, |v, d| v * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8], what: &str| -> std::result::Result<(), String> {
        match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(format!("expected {what} at character {}", at + 1)),
        }
    };
    if (b.len() > 4 && b[..5].iter().all(u8::is_ascii_digit)) || b.first() == Some(&b'+') {
        return Err("years have four digits in RFC 3339 (0000 to 9999)".into());
    }
    let year = digits(0, 4, "year")?;
    sep(4, b"-", "'-'")?;
    let month = digits(5, 2, "month")?;
    sep(7, b"-", "'-'")?;
    let day = digits(8, 2, "day")?;
    sep(10, b"Tt ", "'T'")?;
    let hour = digits(11, 2, "hour")?;
    sep(13, b":", "':'")?;
    let minute = digits(14, 2, "minute")?;
    sep(16, b":", "':'")?;
    let mut second = digits(17, 2, "second")?;
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(format!(
                "expected fraction digits after '.' at character {}",
                at + 1
            ));
        }
        for _ in (at - start)..9 {
            nanos *= 10;
        }
    }
    let offset_s = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&c @ (b'+' | b'-')) => {
            let oh = digits(at + 1, 2, "offset hours")?;
            sep(at + 3, b":", "':' in the offset")?;
            let om = digits(at + 4, 2, "offset minutes")?;
            if oh > 23 || om > 59 {
                return Err(format!("offset {oh:02}:{om:02} is out of range"));
            }
            at += 6;
            let s = oh * 3600 + om * 60;
            if c == b'-' {
                -s
            } else {
                s
            }
        }
        _ => {
            return Err(format!(
                "expected 'Z' or an offset such as +02:00 at character {}",
                at + 1
            ))
        }
    };
    if at != b.len() {
        return Err(format!(
            "unexpected text after the time at character {}",
            at + 1
        ));
    }
    if !(1..=12).contains(&month) {
        return Err(format!("month {month:02} is out of range"));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day < 1 || day > month_days[month as usize - 1] {
        return Err(format!(
            "day {day:02} is out of range for {year:04}-{month:02}"
        ));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!(
            "time {hour:02}:{minute:02}:{second:02} is out of range"
        ));
    }
    let local_s = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60;
    let utc_s = local_s - offset_s;
    if second == 60 {
        if utc_s.rem_euclid(86_400) != 23 * 3600 + 59 * 60 {
            return Err("second 60 (a leap second) exists only at 23:59 UTC".into());
        }
        second = 59;
        nanos = 999_999_999;
    }
    let secs = utc_s + second;
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(secs as u64, nanos as u32))
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(std::time::Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(std::time::Duration::from_nanos(nanos as u64)))
    };
    t.ok_or_else(|| format!("{} cannot be represented on this system", text.trim()))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Encoded LTX files up to this size stay in memory (replicator and compactor alike); larger
/// ones spill to a temporary file.
pub const SPOOL_MEMORY_LIMIT: usize = 8 << 20;

/// Spools an encoded LTX file: in memory while small, spilled to an unlinked temporary file once
/// it passes `memory_limit`, so a multi-GiB snapshot never sits in RAM.
pub struct Spool {
    memory: Vec<u8>,
    file: Option<File>,
    len: u64,
    memory_limit: usize,
    spill_dir: PathBuf,
}

impl Spool {
    pub fn new(spill_dir: &Path, memory_limit: usize) -> Spool {
        Spool {
            memory: Vec::new(),
            file: None,
            len: 0,
            memory_limit,
            spill_dir: spill_dir.to_path_buf(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole content when it is held in memory.
    pub fn as_memory(&self) -> Option<&[u8]> {
        self.file.is_none().then_some(&self.memory[..])
    }

    /// A second handle on the spill file (None while the content is in memory), so that an
    /// upload can stream the body from disk instead of copying it into memory.
    pub fn file_handle(&self) -> Option<io::Result<File>> {
        self.file.as_ref().map(File::try_clone)
    }

    /// Read `buf.len()` bytes at `offset` (for multipart parts and the file client).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.file {
            None => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                let src = self.memory.get(start..start + buf.len()).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "spool read past end")
                })?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Some(f) => {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(buf, offset)
            }
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        fs::create_dir_all(&self.spill_dir)?;
        let path =
            self.spill_dir
                .join(format!("spool-{}-{:x}.tmp", std::process::id(), rand_u64()));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Unlinked at once: the space is freed when the handle drops, even after a crash.
        let _ = fs::remove_file(&path);
        f.write_all(&self.memory)?;
        self.memory = Vec::new();
        self.file = Some(f);
        Ok(())
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() > self.memory_limit {
            self.spill()?;
        }
        match &mut self.file {
            Some(f) => f.write_all(buf)?,
            None => self.memory.extend_from_slice(buf),
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// A cheap non-cryptographic random number (temporary names, jitter).
pub fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A replica in a local directory, in Litestream's file-backend layout `<dir>/ltx/<level>/<name>`.
pub struct FileReplicaClient {
    dir: PathBuf,
    progress: Arc<Progress>,
}

impl FileReplicaClient {
    pub fn new(dir: &Path) -> FileReplicaClient {
        FileReplicaClient {
            dir: dir.to_path_buf(),
            progress: Arc::new(Progress::default()),
        }
    }

    fn level_dir(&self, level: u8) -> PathBuf {
        self.dir.join("ltx").join(level.to_string())
    }
}

impl ReplicaClient for FileReplicaClient {
    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>> {
        let dir = self.level_dir(level);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::msg(format!("listing {}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let Some((min_txid, max_txid)) = name.to_str().and_then(ltx::parse_file_name) else {
                continue;
            };
            let meta = entry
                .metadata()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            out.push(LtxFileInfo {
                level,
                min_txid,
                max_txid,
                size: meta.len(),
                created_at: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                key: entry.path().display().to_string(),
            });
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        body: &mut Spool,
    ) -> Result<LtxFileInfo> {
        let dir = self.level_dir(level);
        let path = dir.join(ltx::file_name(min_txid, max_txid));
        let tmp = path.with_extension("ltx.tmp");
        let write = |body: &Spool| -> io::Result<()> {
            fs::create_dir_all(&dir)?;
            let mut f = File::create(&tmp)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            while off < body.len() {
                let n = ((body.len() - off) as usize).min(buf.len());
                body.read_at(&mut buf[..n], off)?;
                f.write_all(&buf[..n])?;
                off += n as u64;
            }
            f.sync_all()?;
            // The header timestamp doubles as mtime, as Litestream's file backend does, so that
            // point-in-time restores see the same times on both backends.
            let t = SystemTime::UNIX_EPOCH
                + std::time::Duration::from_millis(timestamp_ms.max(0) as u64);
            let _ = f.set_modified(t);
            drop(f);
            fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        };
        if let Err(e) = write(body) {
            // A full disk fails the write half-way; the same name is not always written again
            // (a later compaction covers a different range), so the partial file goes now.
            let _ = fs::remove_file(&tmp);
            return Err(Error::from(e).context(format!("writing {}", path.display())));
        }
        self.progress
            .bytes_uploaded
            .fetch_add(body.len(), Ordering::Relaxed);
        self.progress
            .objects_uploaded
            .fetch_add(1, Ordering::Relaxed);
        Ok(LtxFileInfo {
            level,
            min_txid,
            max_txid,
            size: body.len(),
            // As the listing shows it: the mtime, set to the header timestamp.
            created_at: SystemTime::UNIX_EPOCH
                + std::time::Duration::from_millis(timestamp_ms.max(0) as u64),
            key: path.display().to_string(),
        })
    }

    fn put_streaming<'a>(
        &'a self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        spill_dir: &Path,
        _size_bound: u64,
    ) -> Result<Box<dyn PutStream + 'a>> {
        Ok(Box::new(SpooledPut::new(
            self,
            level,
            min_txid,
            max_txid,
            timestamp_ms,
            spill_dir,
        )))
    }

    fn open(&self, file: &LtxFileInfo) -> Result<Box<dyn Read + Send>> {
        let path = self
            .level_dir(file.level)
            .join(ltx::file_name(file.min_txid, file.max_txid));
        let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 16, f)))
    }

    fn delete(&self, files: &[LtxFileInfo]) -> Result<()> {
        for file in files {
            let path = self
                .level_dir(file.level)
                .join(ltx::file_name(file.min_txid, file.max_txid));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::msg(format!("deleting {}: {e}", path.display()))),
            }
        }
        Ok(())
    }

    fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }
}

/// Copy a spool to a writer (used by tests and by the file client).
pub fn copy_spool(body: &mut Spool, w: &mut impl Write) -> io::Result<()> {
    if let Some(f) = &mut body.file {
        f.seek(SeekFrom::Start(0))?;
        io::copy(f, w)?;
        return Ok(());
    }
    w.write_all(&body.memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_go_rfc3339nano() {
        assert_eq!(
            format_timestamp_ms(1_700_000_000_000),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            format_timestamp_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_timestamp_ms(1_700_000_000_120),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(format_timestamp_ms(1), "1970-01-01T00:00:00.001Z");
    }

    #[test]
    fn timestamps_parse_back() {
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        for v in [
            1_700_000_000_000i64,
            1_700_000_000_123,
            1_700_000_000_120,
            1,
        ] {
            assert_eq!(
                ms(parse_timestamp(&format_timestamp_ms(v)).unwrap()),
                v as u128
            );
        }
        assert_eq!(
            ms(parse_timestamp("2023-11-14T23:13:20+01:00").unwrap()),
            1_700_000_000_000
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2023-11-14 22:13:20"), None);
    }

    #[test]
    fn rfc3339_all_valid_forms() {
        let secs = |s: &str| {
            let t = parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
                Err(e) => {
                    let d = e.duration();
                    let whole = -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0);
                    (whole, (1_000_000_000 - d.subsec_nanos()) % 1_000_000_000)
                }
            }
        };
        // Beyond what u64 nanoseconds since 1970 hold (year 2554): plain seconds are used.
        assert_eq!(secs("2999-01-01T00:00:00Z"), (32_472_144_000, 0));
        assert_eq!(
            secs("9999-12-31T23:59:59.999999999Z"),
            (253_402_300_799, 999_999_999)
        );
        assert_eq!(secs("0000-01-01T00:00:00Z"), (-62_167_219_200, 0));
        assert_eq!(secs("1969-12-31T23:59:59.5Z"), (-1, 500_000_000));
        // Fractions of any length, offsets, lower case, a space for the T.
        assert_eq!(secs("2023-11-14T22:13:20.1Z"), (1_700_000_000, 100_000_000));
        assert_eq!(
            secs("2023-11-14T22:13:20.123456789123Z"),
            (1_700_000_000, 123_456_789)
        );
        assert_eq!(secs("2023-11-15T03:43:20+05:30"), (1_700_000_000, 0));
        assert_eq!(secs("2023-11-14T12:13:20-10:00"), (1_700_000_000, 0));
        assert_eq!(secs("2023-11-14t22:13:20z"), (1_700_000_000, 0));
        assert_eq!(secs("2023-11-14 22:13:20Z"), (1_700_000_000, 0));
        assert_eq!(secs("2023-11-14T22:13:20-00:00"), (1_700_000_000, 0));
        // Leap years and the leap second.
        assert_eq!(secs("2024-02-29T00:00:00Z"), (1_709_164_800, 0));
        assert_eq!(secs("2000-02-29T00:00:00Z"), (951_782_400, 0));
        assert_eq!(secs("2016-12-31T23:59:60Z"), (1_483_228_799, 999_999_999));
        assert_eq!(
            secs("2017-01-01T08:59:60+09:00"),
            (1_483_228_799, 999_999_999)
        );
        for (bad, why) in [
            ("2023-02-29T00:00:00Z", "day 29 is out of range"),
            ("1900-02-29T00:00:00Z", "day 29 is out of range"),
            ("2023-13-01T00:00:00Z", "month 13"),
            ("2023-04-31T00:00:00Z", "day 31"),
            ("2023-01-01T24:00:00Z", "out of range"),
            ("2023-01-01T12:00:60Z", "leap second"),
            ("2023-01-01T00:00:00+24:00", "offset 24:00"),
            ("10000-01-01T00:00:00Z", "four digits"),
            ("+2023-01-01T00:00:00Z", "four digits"),
            ("2023-01-01T00:00:00", "'Z' or an offset"),
            ("2023-01-01T00:00:00.Z", "fraction digits"),
            ("2023-01-01T00:00:00Zjunk", "unexpected text"),
            ("2023-1-01T00:00:00Z", "month"),
            ("", "year"),
        ] {
            let e = parse_rfc3339(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn spool_spills_and_reads_back() {
        let dir = std::env::temp_dir();
        let mut s = Spool::new(&dir, 10);
        s.write_all(b"hello").unwrap();
        assert!(s.as_memory().is_some());
        s.write_all(b" world, spilled").unwrap();
        assert!(s.as_memory().is_none());
        let mut buf = [0u8; 5];
        s.read_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        let mut all = Vec::new();
        copy_spool(&mut s, &mut all).unwrap();
        assert_eq!(all, b"hello world, spilled");
    }
}
