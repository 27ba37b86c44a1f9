//! Restore: replica → restore plan → LTX decoder → database file.
//!
//! The plan is Litestream's (litestream-format.md §6.1): the newest usable snapshot, then greedily
//! the file that reaches furthest from the current TXID across levels 8..0, until nothing extends
//! it. Applying the plan writes each file's pages at their offsets into `<out>.tmp` and truncates
//! to the file's commit size, in TXID order — the same result as Litestream's k-way merge, with
//! one file open at a time.
//!
//! Invariants:
//! - Either the output is a complete database that passed `PRAGMA integrity_check`, or nothing is
//!   written: every file's checksum is verified, the temporary file is fsynced and checked before
//!   the rename, and removed on any error.
//! - An existing output is never replaced unless `overwrite` is set; then its `-wal`, `-shm` and
//!   `-journal` files go too (a stale WAL would be replayed over the restored pages).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Context, Error, Result};
use crate::ltx::{self, Decoder};
use crate::replica_client::{all_levels, LtxFileInfo, ReplicaClient, SNAPSHOT_LEVEL};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub overwrite: bool,
    /// Restore to exactly this TXID (a file boundary in some level).
    pub txid: Option<u64>,
}

/// Build the list of files to apply, lowest TXID first.
pub fn plan(client: &dyn ReplicaClient, txid: Option<u64>) -> Result<Vec<LtxFileInfo>> {
    let mut levels: Vec<Vec<LtxFileInfo>> = Vec::new();
    for level in all_levels() {
        let mut files = client.list(level)?;
        if let Some(t) = txid {
            files.retain(|f| f.max_txid <= t);
        }
        levels.push(files);
    }
    let mut plan = Vec::new();
    let mut current = 0u64;
    if let Some(snap) = levels[SNAPSHOT_LEVEL as usize].last() {
        current = snap.max_txid;
        plan.push(snap.clone());
    }
    loop {
        if txid.is_some_and(|t| current >= t) {
            break;
        }
        let best = levels[..SNAPSHOT_LEVEL as usize]
            .iter()
            .flatten()
            .filter(|f| f.min_txid <= current + 1 && f.max_txid > current)
            .min_by(|a, b| {
                b.max_txid
                    .cmp(&a.max_txid)
                    .then(a.min_txid.cmp(&b.min_txid))
                    .then(b.level.cmp(&a.level))
                    .then(a.created_at.cmp(&b.created_at))
            });
        match best {
            Some(f) => {
                current = f.max_txid;
                plan.push(f.clone());
            }
            None => break,
        }
    }
    if plan.is_empty() {
        return Err(Error::msg(format!(
            "no backup files available in {}",
            client.describe()
        )));
    }
    if txid.is_none() {
        if let Some(f) = levels.iter().flatten().find(|f| f.min_txid > current + 1) {
            return Err(Error::msg(format!(
                "non-contiguous ltx files in {}: nothing covers TXID {} before {}",
                client.describe(),
                ltx::format_txid(current + 1),
                f.key
            )));
        }
    }
    if let Some(t) = txid {
        if current < t || current != t {
            return Err(Error::msg(format!(
                "TXID {} is not available in {}: restorable points are file boundaries",
                ltx::format_txid(t),
                client.describe()
            )));
        }
    }
    if plan[0].min_txid != 1 {
        return Err(Error::msg(format!(
            "{} has no snapshot to start from: the oldest usable file {} begins at TXID {}",
            client.describe(),
            plan[0].key,
            ltx::format_txid(plan[0].min_txid)
        )));
    }
    Ok(plan)
}

/// Restore into `out`; returns the TXID restored.
pub fn restore(client: &dyn ReplicaClient, out: &Path, opts: &RestoreOptions) -> Result<u64> {
    if out.exists() && !opts.overwrite {
        return Err(Error::msg(format!(
            "{} already exists; restore never replaces a file unless asked: pass '{{\"overwrite\": true}}'",
            out.display()
        )));
    }
    let files = plan(client, opts.txid)?;
    let tmp = PathBuf::from(format!("{}.tmp", out.display()));
    let result = apply(client, &files, &tmp).and_then(|txid| {
        integrity_check(&tmp)?;
        if opts.overwrite {
            for suffix in ["-wal", "-shm", "-journal"] {
                let p = PathBuf::from(format!("{}{suffix}", out.display()));
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::msg(format!("removing {}: {e}", p.display()))),
                }
            }
        }
        fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
        Ok(txid)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write every planned file's pages into `tmp`; returns the final TXID.
fn apply(client: &dyn ReplicaClient, files: &[LtxFileInfo], tmp: &Path) -> Result<u64> {
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut page_size = 0u32;
    let mut buf = Vec::new();
    let mut txid = 0;
    for file in files {
        if file.size < ltx::HEADER_SIZE as u64 {
            return Err(Error::msg(format!(
                "{} is too small ({} bytes) to be an LTX file",
                file.key, file.size
            )));
        }
        let reader = client.open(file)?;
        let mut dec = Decoder::new(reader).with_context(|| format!("reading {}", file.key))?;
        let h = *dec.header();
        if page_size == 0 {
            page_size = h.page_size;
            buf = vec![0u8; page_size as usize];
        } else if h.page_size != page_size {
            return Err(Error::msg(format!(
                "{} has page size {}, earlier files {}",
                file.key, h.page_size, page_size
            )));
        }
        while let Some(pgno) = dec
            .next_page(&mut buf)
            .with_context(|| format!("reading {}", file.key))?
        {
            out.write_all_at(&buf, (pgno as u64 - 1) * page_size as u64)
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        dec.finish()
            .with_context(|| format!("verifying {}", file.key))?;
        // The database may have shrunk (VACUUM): the file ends at this commit.
        out.set_len(h.commit as u64 * page_size as u64)
            .with_context(|| format!("resizing {}", tmp.display()))?;
        txid = h.max_txid;
    }
    out.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    Ok(txid)
}

/// `PRAGMA integrity_check` on the restored file, through the host's SQLite, before it is
/// renamed into place. `immutable=1`: no locks, no `-wal`/`-shm` created beside the file.
fn integrity_check(path: &Path) -> Result<()> {
    let uri = format!(
        "file:{}?immutable=1",
        uri_escape(&path.display().to_string())
    );
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("opening restored {}", path.display()))?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "restored database failed PRAGMA integrity_check: {}",
            rows.into_iter().take(5).collect::<Vec<_>>().join("; ")
        )))
    }
}

/// Percent-encode the characters that mean something in a SQLite URI filename.
fn uri_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}
