//! Where a restore writes: the checks made before anything is downloaded, the temporary file the
//! pages go into, and the final replace.
//!
//! Invariants:
//! - Every refusal happens before anything is written: a path that cannot become a database file
//!   (a directory, a symbolic link, a device, a missing parent directory), an existing file
//!   without `overwrite`, a database something uses, a stale `-wal` or `-journal` beside an output
//!   that does not exist yet.
//! - `overwrite` replaces only a file nothing uses: no replicator of this process or of another
//!   process runs on it, and no connection of any process holds a lock on it ([`ExclusiveUse`]).
//!   The check is made up front and again, holding the lock, at the replace.
//! - The restored pages never meet a stale `-wal` or `-journal` (SQLite would replay either over
//!   them: a WAL's frames are checked against the WAL's own header, not against the database):
//!   they are removed while the exclusive lock keeps every connection out, before the new file
//!   takes the name. Without `overwrite` the new file takes the name only if it is still free.
//! - The pages go into a temporary file of this restore's own beside the output (a unique name,
//!   so that two restores to one path cannot write into each other's), created once the plan is
//!   made; it is removed on every path that does not end in the rename.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::{Context, Error, Result};

/// Files SQLite keeps beside a database and would apply to (or share with) whatever file has the
/// database's name: the WAL and the rollback journal are replayed, the wal-index is reset.
const SIDECARS: [&str; 3] = ["-wal", "-journal", "-shm"];
/// The sidecars whose content would be applied to the restored pages.
const REPLAYED_SIDECARS: [&str; 2] = ["-wal", "-journal"];

/// The restore's output: its path and the temporary file beside it.
pub struct Output {
    path: PathBuf,
    overwrite: bool,
    tmp_path: PathBuf,
    tmp: Option<File>,
    /// The temporary file exists (it is removed on drop unless `done`).
    created: bool,
    /// Set once the temporary file has become the output (nothing to clean up any more).
    done: bool,
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn exists(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::msg(format!("checking {}: {e}", path.display()))),
    }
}

impl Output {
    /// Checks everything that can be checked before downloading (see the module documentation).
    /// Writes nothing.
    pub fn prepare(path: &Path, overwrite: bool) -> Result<Output> {
        let shown = path.display();
        let Some(name) = path.file_name() else {
            return Err(Error::msg(format!(
                "the output path {shown} does not name a file: give a path such as /data/app.db"
            )));
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        match fs::metadata(parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::msg(format!(
                    "cannot restore to {shown}: {} is not a directory",
                    parent.display()
                )))
            }
            Err(e) => {
                return Err(Error::msg(format!(
                    "cannot restore to {shown}: its directory {}: {e}",
                    parent.display()
                )))
            }
        }
        match exists(path)? {
            None => {
                if !overwrite {
                    refuse_stale_sidecars(path)?;
                }
            }
            Some(m) => {
                // What can never be replaced is said first: overwrite would not help.
                replaceable(path, &m)?;
                if !overwrite {
                    return Err(not_replaced(path, "already exists"));
                }
                // Only a probe: the lock is taken again, and held, at the replace.
                drop(ExclusiveUse::take(path)?);
            }
        }
        // `<name>.<random>.tmp`: beside the output (the rename stays within one filesystem),
        // found by anyone looking for files named after it, and this restore's alone.
        let tmp_path = parent.join(format!(
            "{}.{:016x}.tmp",
            name.to_string_lossy(),
            crate::replica_client::rand_u64()
        ));
        Ok(Output {
            path: path.to_path_buf(),
            overwrite,
            tmp_path,
            tmp: None,
            created: false,
            done: false,
        })
    }

    /// Creates the temporary file: the first thing a restore writes, once its plan is made.
    pub fn create_tmp(&mut self) -> Result<()> {
        let tmp = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&self.tmp_path)
            .with_context(|| {
                format!(
                    "cannot restore to {}: creating {}",
                    self.path.display(),
                    self.tmp_path.display()
                )
            })?;
        self.tmp = Some(tmp);
        self.created = true;
        Ok(())
    }

    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// The temporary file the pages are written into.
    pub fn tmp_file(&self) -> Result<&File> {
        self.tmp
            .as_ref()
            .ok_or_else(|| Error::msg("internal error: the restore's temporary file is not open"))
    }

    /// Makes the (synced, checked) temporary file the output: under the exclusive lock when
    /// replacing, with the replayed sidecars gone first; without `overwrite`, only if the name is
    /// still free. Then the directory is synced.
    pub fn replace(mut self) -> Result<()> {
        let shown = self.path.display().to_string();
        // Our own descriptor on the temporary file closes before the file becomes a database
        // anyone may open (and lock) under its new name.
        drop(self.tmp.take());
        let _lock = match exists(&self.path)? {
            Some(m) if self.overwrite => {
                replaceable(&self.path, &m)?;
                Some(ExclusiveUse::take(&self.path)?)
            }
            Some(_) => return Err(not_replaced(&self.path, "appeared while restoring")),
            None => None,
        };
        if self.overwrite {
            for suffix in SIDECARS {
                let p = sidecar(&self.path, suffix);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::msg(format!("removing {}: {e}", p.display()))),
                }
            }
            fs::rename(&self.tmp_path, &self.path)
                .with_context(|| format!("renaming {} to {shown}", self.tmp_path.display()))?;
        } else {
            refuse_stale_sidecars(&self.path)?;
            link_if_free(&self.tmp_path, &self.path)?;
        }
        self.done = true;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))
        // `_lock` is released here, after the new file has the name: until then no connection
        // could open the old file and its sidecars.
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        drop(self.tmp.take());
        if self.created && !self.done {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

fn not_replaced(path: &Path, what: &str) -> Error {
    Error::msg(format!(
        "{} {what}; restore never replaces a file unless asked: pass '{{\"overwrite\": true}}'",
        path.display()
    ))
}

/// An existing output must be a regular file to be replaced.
fn replaceable(path: &Path, m: &fs::Metadata) -> Result<()> {
    let shown = path.display();
    let ft = m.file_type();
    if ft.is_dir() {
        return Err(Error::msg(format!(
            "cannot restore to {shown}: it is a directory; give the path of a database file, such as {}",
            path.join("app.db").display()
        )));
    }
    if ft.is_symlink() {
        let target = fs::canonicalize(path)
            .map(|t| format!(" (to {})", t.display()))
            .unwrap_or_default();
        return Err(Error::msg(format!(
            "cannot restore to {shown}: it is a symbolic link{target}; a restore would replace the \
             link, not the database: give the path of the file itself"
        )));
    }
    if !ft.is_file() {
        return Err(Error::msg(format!(
            "cannot restore to {shown}: it is not a regular file (a device, socket or FIFO)"
        )));
    }
    Ok(())
}

/// A `-wal` or `-journal` left beside a path with no database would be replayed over the
/// restored pages the first time SQLite opens them.
fn refuse_stale_sidecars(path: &Path) -> Result<()> {
    for suffix in REPLAYED_SIDECARS {
        let p = sidecar(path, suffix);
        if exists(&p)?.is_some() {
            return Err(Error::msg(format!(
                "{} exists beside {}, left by an earlier database of that name: SQLite would apply \
                 it to the restored pages; remove it, or pass '{{\"overwrite\": true}}' to have \
                 restore remove it",
                p.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// Gives `tmp` the name `path` only if no file has it: a hard link fails if the name is taken,
/// where a rename would silently replace it. Filesystems without hard links get a rename after
/// an existence check.
fn link_if_free(tmp: &Path, path: &Path) -> Result<()> {
    match fs::hard_link(tmp, path) {
        Ok(()) => {
            fs::remove_file(tmp).with_context(|| format!("removing {}", tmp.display()))?;
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Err(not_replaced(path, "appeared while restoring"))
        }
        Err(_) => {
            if exists(path)?.is_some() {
                return Err(not_replaced(path, "appeared while restoring"));
            }
            fs::rename(tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        }
    }
}

/// Proof, through the host's SQLite, that nothing uses a database file: no replicator runs on it
/// (in this process or, by the local lease lock, in another) and a connection of our own holds
/// SQLite's EXCLUSIVE lock on it. Dropping it closes that connection and frees the lock.
///
/// Why the lock is sound as a test of "no connection uses it":
/// - It is SQLite's own locking, so it sees every connection the way SQLite does: POSIX advisory
///   locks between processes, and within this process the unix VFS's one lock table per inode,
///   shared by all of the process's connections. A connection of this process conflicts with ours
///   exactly as one of another process does, and closing ours cannot drop its locks (SQLite keeps
///   a descriptor open while the inode has locks). No descriptor of our own is ever opened on
///   the file.
/// - A connection to a WAL database holds a SHARED lock on the database file from its first read
///   until it closes — a replicator, an idle application connection, another process's reader
///   alike. A rollback-journal database's connection holds a lock only inside a transaction:
///   an idle one is invisible (to SQLite itself too); one in a transaction is seen. So is a
///   connection that was opened but has not read yet, in either mode: it holds no lock, and the
///   first read it makes would be of the old file's descriptor. No lock-based test can see it.
/// - `locking_mode=EXCLUSIVE` makes SQLite take the EXCLUSIVE lock before it opens a WAL (the
///   wal-index then lives in our heap, the `-shm` file is not touched), and `BEGIN EXCLUSIVE`
///   takes it in rollback mode; it is held until our connection closes. A busy timeout of 0
///   turns a conflict into an immediate SQLITE_BUSY.
/// - While it is held, no connection can start reading the file, so none can open or replay its
///   `-wal` or `-journal`: they can be removed and the new file renamed into place with nobody
///   in between. `NO_CKPT_ON_CLOSE`: our connection's close must not checkpoint and then delete
///   `<path>-wal` by name, which by then may be the restored database's.
pub struct ExclusiveUse {
    _conn: Option<Connection>,
}

impl ExclusiveUse {
    pub fn take(path: &Path) -> Result<ExclusiveUse> {
        let shown = path.display();
        let canonical = fs::canonicalize(path).with_context(|| format!("resolving {shown}"))?;
        if crate::runtime::replicator(&canonical).is_some_and(|r| !r.is_stopped()) {
            return Err(Error::msg(format!(
                "cannot restore over {shown}: this process is replicating it (litestream_start() \
                 was called on it), and the replica would receive the replaced database; call \
                 litestream_stop() first"
            )));
        }
        let lease_lock = crate::state::meta_dir(&canonical).join(crate::s3::lease::LOCAL_LOCK_NAME);
        if let Ok(f) = File::open(&lease_lock) {
            // A flock (never a POSIX lock): probing it cannot disturb SQLite's locks, and the
            // replicator holding it keeps it through its own descriptor.
            if let Err(std::fs::TryLockError::WouldBlock) = f.try_lock() {
                return Err(Error::msg(format!(
                    "cannot restore over {shown}: another process is replicating it (it holds \
                     {}); stop replication there first",
                    lease_lock.display()
                )));
            }
        }
        let in_use = || {
            Error::msg(format!(
                "cannot restore over {shown}: it is in use — a connection (of this or another \
                 process) holds a lock on it; close every connection to it first (overwrite \
                 replaces only a file nothing uses)"
            ))
        };
        // The default VFS: the one the unix lock table above belongs to.
        let conn = Connection::open_with_flags(&canonical, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .with_context(|| format!("opening {shown} to check that nothing uses it"))?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        let locked = conn
            .query_row("PRAGMA locking_mode=EXCLUSIVE", [], |r| {
                r.get::<_, String>(0)
            })
            .map(|_| ())
            .and_then(|()| conn.execute_batch("BEGIN EXCLUSIVE"));
        match locked {
            Ok(()) => Ok(ExclusiveUse { _conn: Some(conn) }),
            Err(e) => match e.sqlite_error_code() {
                Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => Err(in_use()),
                // Not a database (or not a readable one): no connection can be using it as one.
                Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                    Ok(ExclusiveUse { _conn: None })
                }
                _ => Err(Error::msg(format!(
                    "cannot restore over {shown}: could not take SQLite's exclusive lock to \
                     check that nothing uses it: {e}"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ls-output-{:016x}",
            crate::replica_client::rand_u64()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn refused(path: &Path, overwrite: bool, why: &str) {
        match Output::prepare(path, overwrite) {
            Err(e) => assert!(e.message().contains(why), "{}: {e}", path.display()),
            Ok(_) => panic!("{} accepted", path.display()),
        }
    }

    #[test]
    fn refusals_write_nothing() {
        // Paths that need no SQLite to be refused (the in-use probe is an integration test).
        let d = scratch();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("real.db"), b"").unwrap();
        std::os::unix::fs::symlink(d.join("real.db"), d.join("link.db")).unwrap();
        fs::write(d.join("gone.db-wal"), b"stale").unwrap();
        let before = names(&d);
        refused(&d.join("sub"), true, "it is a directory");
        refused(&d.join("sub"), false, "it is a directory");
        refused(&d.join("link.db"), true, "symbolic link");
        refused(&d.join("real.db"), false, "already exists");
        refused(&d.join("nodir/x.db"), true, "its directory");
        refused(&d.join("real.db/x.db"), true, "is not a directory");
        refused(&d.join("gone.db"), false, "gone.db-wal exists beside");
        refused(Path::new("/"), true, "does not name a file");
        assert_eq!(names(&d), before);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn temporary_file_is_removed_unless_it_becomes_the_output() {
        let d = scratch();
        let out = d.join("new.db");
        let mut o = Output::prepare(&out, false).unwrap();
        assert!(!o.tmp_path().exists(), "prepare wrote something");
        o.create_tmp().unwrap();
        assert!(o.tmp_path().exists() && o.tmp_path().starts_with(&d));
        drop(o);
        assert!(names(&d).is_empty(), "{:?}", names(&d));

        let mut o = Output::prepare(&out, false).unwrap();
        o.create_tmp().unwrap();
        fs::write(o.tmp_path(), b"pages").unwrap();
        // The name is taken meanwhile: without overwrite it is not replaced.
        fs::write(&out, b"someone else's").unwrap();
        let e = o.replace().unwrap_err();
        assert!(e.message().contains("appeared while restoring"), "{e}");
        assert_eq!(fs::read(&out).unwrap(), b"someone else's");
        assert_eq!(names(&d), ["new.db"]);

        fs::remove_file(&out).unwrap();
        let mut o = Output::prepare(&out, false).unwrap();
        o.create_tmp().unwrap();
        fs::write(o.tmp_path(), b"pages").unwrap();
        o.replace().unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"pages");
        assert_eq!(names(&d), ["new.db"]);
        let _ = fs::remove_dir_all(&d);
    }
}
