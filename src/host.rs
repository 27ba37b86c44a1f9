//! Every raw call into the host's SQLite C API lives here, and nowhere else.
//!
//! The extension never links a SQLite of its own: rusqlite's `loadable_extension` feature routes
//! each call through the `sqlite3_api_routines` table the host hands to `sqlite3_litestream_init`.
//! The few things rusqlite does not wrap for a connection it does not own — `sqlite3_wal_hook`,
//! file-control opcodes, reading pages through SQLite's own file handle — are done here, each
//! behind a small safe function whose comment states why it is sound.
//!
//! Invariants:
//! - No file descriptor on a database file is ever opened or closed by this crate: database pages
//!   are read through the `sqlite3_file` SQLite already has open, because closing *any* descriptor
//!   on a file drops every POSIX lock the process holds on it.
//! - No panic unwinds into C: every callback body runs inside `catch_unwind`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rusqlite::{ffi, Connection};

/// `sqlite3_result_subtype` value SQLite's JSON functions use for JSON text ('J').
pub const JSON_SUBTYPE: u32 = 74;

/// The extension entry point the host looks up by name (`sqlite3_` + `litestream` + `_init`).
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and API routine table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_litestream_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    // extension_init2 stores the routine table, wraps `db` without taking ownership and maps the
    // init result: Ok(true) -> SQLITE_OK_LOAD_PERMANENTLY, which keeps the library mapped after
    // the loading connection closes (our threads and hooks outlive it).
    let result = catch_unwind(AssertUnwindSafe(|| {
        Connection::extension_init2(db, pz_err_msg, p_api, crate::sql::register)
    }));
    result.unwrap_or(ffi::SQLITE_ERROR)
}

/// Called after each commit with the database path and the number of frames now in the WAL.
pub type CommitNotifier = fn(&str, u32);

struct WalHookTarget {
    db_path: String,
    notify: CommitNotifier,
}

unsafe extern "C" fn wal_hook_trampoline(
    arg: *mut c_void,
    _db: *mut ffi::sqlite3,
    db_name: *const c_char,
    frames: c_int,
) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `arg` is the Box<WalHookTarget> leaked in install_wal_hook; never freed.
        let target = &*(arg as *const WalHookTarget);
        // The hook fires for every attached database; only the main one is replicated.
        if !db_name.is_null() && CStr::from_ptr(db_name).to_bytes() == b"main" {
            (target.notify)(&target.db_path, frames.max(0) as u32);
        }
    }));
    // Returning SQLITE_OK: the hook replaces SQLite's auto-checkpoint for this connection, on
    // purpose — the replicator runs checkpoints itself, only after frames are in the replica.
    // SQLite calls the hook after the commit, with the write lock already released, so the
    // notifier may block this thread (backpressure) without blocking other writers.
    ffi::SQLITE_OK
}

/// Make every commit on `conn` call `notify(db_path)`.
///
/// The target is leaked on purpose: SQLite keeps the pointer for the connection's lifetime and
/// offers no destructor for it; one small allocation per `litestream_start()` call is the cost.
pub fn install_wal_hook(conn: &Connection, db_path: &str, notify: CommitNotifier) {
    let target = Box::into_raw(Box::new(WalHookTarget {
        db_path: db_path.to_string(),
        notify,
    }));
    // SAFETY: the handle is valid for the duration of the SQL function call that passes `conn`;
    // the trampoline matches SQLite's callback signature and never unwinds.
    unsafe {
        ffi::sqlite3_wal_hook(
            conn.handle(),
            Some(wal_hook_trampoline),
            target as *mut c_void,
        );
    }
}

/// The name of the VFS the connection's main database uses, so that the replicator's own
/// connection opens the file through the same VFS (mixing VFSes on one file breaks locking).
pub fn vfs_name(conn: &Connection) -> Option<String> {
    let mut vfs: *mut ffi::sqlite3_vfs = std::ptr::null_mut();
    // SAFETY: SQLITE_FCNTL_VFS_POINTER writes a `sqlite3_vfs*` into the pointer we pass.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_VFS_POINTER,
            &mut vfs as *mut _ as *mut c_void,
        )
    };
    if rc != ffi::SQLITE_OK || vfs.is_null() {
        return None;
    }
    // SAFETY: a registered VFS outlives every connection using it; zName is NUL-terminated.
    unsafe {
        let name = (*vfs).zName;
        (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned())
    }
}

/// Keep the `-wal` file when this connection closes (SQLITE_FCNTL_PERSIST_WAL), as Litestream
/// does: deleting it would discard the salts and offsets the next start proves continuity with.
pub fn set_persist_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut on: c_int = 1;
    // SAFETY: the opcode reads and writes one int through the pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_PERSIST_WAL,
            &mut on as *mut c_int as *mut c_void,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some("cannot set PERSIST_WAL".into()),
        ))
    }
}

/// Reads database pages through the `sqlite3_file` that `conn` already has open.
///
/// Borrowing the connection ties the file pointer's lifetime to it: SQLite keeps the main database
/// file open for as long as the connection is open.
pub struct DbFile<'c> {
    file: *mut ffi::sqlite3_file,
    _conn: PhantomData<&'c Connection>,
}

impl<'c> DbFile<'c> {
    pub fn new(conn: &'c Connection) -> rusqlite::Result<DbFile<'c>> {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: SQLITE_FCNTL_FILE_POINTER writes the `sqlite3_file*` of the main database.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                &mut file as *mut _ as *mut c_void,
            )
        };
        // SAFETY (of the deref): pMethods is set once the file is open; checked for null first.
        if rc != ffi::SQLITE_OK || file.is_null() || unsafe { (*file).pMethods.is_null() } {
            return Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(if rc == ffi::SQLITE_OK {
                    ffi::SQLITE_ERROR
                } else {
                    rc
                }),
                Some("cannot get the database file handle".into()),
            ));
        }
        Ok(DbFile {
            file,
            _conn: PhantomData,
        })
    }

    /// Size of the database file in bytes.
    pub fn size(&self) -> std::io::Result<u64> {
        let mut size: ffi::sqlite3_int64 = 0;
        // SAFETY: `file` is open (see new); xFileSize writes one int64.
        let rc = unsafe {
            match (*(*self.file).pMethods).xFileSize {
                Some(f) => f(self.file, &mut size),
                None => ffi::SQLITE_ERROR,
            }
        };
        if rc == ffi::SQLITE_OK {
            Ok(size.max(0) as u64)
        } else {
            Err(std::io::Error::other(format!(
                "xFileSize failed with SQLite code {rc}"
            )))
        }
    }

    /// Read `buf.len()` bytes at `offset`. Bytes past the end of file read as zeros (SQLite's
    /// SQLITE_IOERR_SHORT_READ contract), which is what a page beyond EOF means.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        // SAFETY: `file` is open; xRead writes at most buf.len() bytes into buf.
        let rc = unsafe {
            match (*(*self.file).pMethods).xRead {
                Some(f) => f(
                    self.file,
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len() as c_int,
                    offset as i64,
                ),
                None => ffi::SQLITE_ERROR,
            }
        };
        if rc == ffi::SQLITE_OK || rc == ffi::SQLITE_IOERR_SHORT_READ {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "reading the database file failed with SQLite code {rc}"
            )))
        }
    }
}

// ---- litestream_ltx: the virtual-table shim (issue 5) ----------------------------------------
//
// rusqlite's vtab traits are `unsafe` to implement: the structs must be `#[repr(C)]` with the
// SQLite base struct first, which is all that is done here. Everything else is in `ltx_table`.

use rusqlite::vtab::{
    eponymous_only_module, Context as VTabContext, Filters, IndexInfo, VTab, VTabConfig,
    VTabConnection, VTabCursor,
};

#[repr(C)]
pub struct LtxTab {
    /// SQLite's base class; must come first.
    base: ffi::sqlite3_vtab,
    db: Option<std::path::PathBuf>,
}

// SAFETY: #[repr(C)] with `sqlite3_vtab` first, as the trait requires.
unsafe impl<'vtab> VTab<'vtab> for LtxTab {
    type Aux = ();
    type Cursor = LtxCursor<'vtab>;

    fn connect(
        db: &mut VTabConnection,
        _aux: Option<&()>,
        _args: &[&[u8]],
    ) -> rusqlite::Result<(String, Self)> {
        // Reads configuration and talks to the network: never from a view or trigger.
        db.config(VTabConfig::DirectOnly)?;
        // SAFETY: the handle is the connection running xConnect, valid for this call; the
        // Connection made from it does not own it and never closes it.
        let conn = unsafe { Connection::from_handle(db.handle()) }?;
        let path = crate::ltx_table::main_db_path(&conn);
        Ok((
            crate::ltx_table::SCHEMA.to_string(),
            LtxTab {
                base: ffi::sqlite3_vtab::default(),
                db: path,
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<()> {
        crate::ltx_table::best_index(info)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<LtxCursor<'vtab>> {
        Ok(LtxCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            state: crate::ltx_table::Cursor::new(self.db.clone()),
            _tab: PhantomData,
        })
    }
}

#[repr(C)]
pub struct LtxCursor<'vtab> {
    /// SQLite's base class; must come first.
    base: ffi::sqlite3_vtab_cursor,
    state: crate::ltx_table::Cursor,
    _tab: PhantomData<&'vtab LtxTab>,
}

// SAFETY: #[repr(C)] with `sqlite3_vtab_cursor` first, as the trait requires.
unsafe impl VTabCursor for LtxCursor<'_> {
    fn filter(
        &mut self,
        idx_num: c_int,
        _idx_str: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        self.state.filter(idx_num, args)
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.state.next();
        Ok(())
    }

    fn eof(&self) -> bool {
        self.state.eof()
    }

    fn column(&self, ctx: &mut VTabContext, i: c_int) -> rusqlite::Result<()> {
        self.state.column(ctx, i)
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.state.rowid())
    }
}

/// Register `litestream_ltx` on a connection.
pub fn register_ltx_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_module(c"litestream_ltx", eponymous_only_module::<LtxTab>(), None)
}
