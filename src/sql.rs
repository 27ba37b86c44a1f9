//! The SQL surface: every function the extension registers, and nothing else.
//!
//! Each function resolves the calling connection's main database (by canonical path, so every
//! connection of the process shares its configuration and replicator), calls into the runtime,
//! and turns errors into SQL errors that start with the function's name.
//!
//! Invariants:
//! - Functions with side effects, or that reveal configuration, are `SQLITE_DIRECTONLY`: a
//!   trigger or view in an untrusted database cannot call them.
//! - JSON results carry SQLite's JSON subtype, so `->` and `json_*` treat them as JSON.
//! - rusqlite runs each function body under `catch_unwind`: no panic crosses into SQLite.
//! - Secrets never leave through here: config and status output come pre-redacted.
//! - A connection that called `litestream_start()` is counted until it closes: its
//!   `litestream_start` function owns the count ([`StartedBy`]), and SQLite destroys the function
//!   when the connection closes. Loading the extension again on the same connection shares the
//!   count instead of ending it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use once_cell::sync::Lazy;

use rusqlite::functions::{Context as FnContext, FunctionFlags, SubType};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::host;
use crate::replicator::Status;
use crate::restore::{self, RestoreOptions};
use crate::runtime;

/// `litestream_sync()` without an argument waits this long.
const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The functions this extension registers, in the order they are registered; a test pins it.
pub const FUNCTIONS: &[&str] = &[
    "litestream_version",
    "litestream_configure",
    "litestream_config",
    "litestream_start",
    "litestream_stop",
    "litestream_sync",
    "litestream_status",
    "litestream_restore",
];

/// Virtual-table modules this extension registers (eponymous: usable as table-valued functions;
/// they show in `pragma_module_list`, not `pragma_function_list`); a test pins it.
pub const MODULES: &[&str] = &["litestream_ltx"];

/// Called once per connection that loads the extension. Returns Ok(true): stay loaded.
pub fn register(conn: Connection) -> rusqlite::Result<bool> {
    let pure = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    let direct = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    let json = direct | FunctionFlags::SQLITE_RESULT_SUBTYPE;

    conn.create_scalar_function(c"litestream_version", 0, pure, |_| Ok(crate::version()))?;
    conn.create_scalar_function(c"litestream_configure", 1, direct, |ctx| {
        sql_result("litestream_configure", configure(ctx))
    })?;
    conn.create_scalar_function(c"litestream_configure", 2, direct, |ctx| {
        sql_result("litestream_configure", configure(ctx))
    })?;
    conn.create_scalar_function(c"litestream_config", 0, json, |ctx| {
        json_result("litestream_config", config_json(ctx))
    })?;
    let started_by = StartedBy::of(&conn);
    conn.create_scalar_function(c"litestream_start", 0, direct, move |ctx| {
        sql_result("litestream_start", start(ctx, &started_by))
    })?;
    conn.create_scalar_function(c"litestream_stop", 0, direct, |ctx| {
        sql_result("litestream_stop", stop(ctx))
    })?;
    conn.create_scalar_function(c"litestream_sync", 0, direct, |ctx| {
        sql_result("litestream_sync", sync(ctx))
    })?;
    conn.create_scalar_function(c"litestream_sync", 1, direct, |ctx| {
        sql_result("litestream_sync", sync(ctx))
    })?;
    conn.create_scalar_function(c"litestream_status", 0, json, |ctx| {
        json_result("litestream_status", status(ctx))
    })?;
    conn.create_scalar_function(c"litestream_restore", 1, direct, |ctx| {
        sql_result("litestream_restore", restore_fn(ctx))
    })?;
    conn.create_scalar_function(c"litestream_restore", 2, direct, |ctx| {
        sql_result("litestream_restore", restore_fn(ctx))
    })?;
    host::register_table_function::<crate::ltx_table::LtxTable>(&conn, c"litestream_ltx")?;
    Ok(true)
}

fn user_error(function: &str, e: Error) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(format!("{function}: {e}").into())
}

fn sql_result<T>(function: &str, r: Result<T>) -> rusqlite::Result<T> {
    r.map_err(|e| user_error(function, e))
}

fn json_result(
    function: &str,
    r: Result<serde_json::Value>,
) -> rusqlite::Result<(String, SubType)> {
    r.map(|v| (v.to_string(), Some(host::JSON_SUBTYPE)))
        .map_err(|e| user_error(function, e))
}

/// The calling connection's main database: its canonical path, or None for `:memory:` and
/// temporary databases (SQLite reports an empty file name for both).
fn main_db(ctx: &FnContext<'_>) -> Result<(Option<PathBuf>, Option<String>)> {
    let (path, vfs) = host::with_calling_connection(ctx, |conn| {
        (conn.path().map(str::to_string), host::vfs_name(conn))
    })?;
    let path = match path.as_deref() {
        None | Some("") => None,
        Some(p) => {
            Some(std::fs::canonicalize(p).map_err(|e| Error::msg(format!("resolving {p}: {e}")))?)
        }
    };
    Ok((path, vfs))
}

/// Configuration of memory and temporary databases lives under the empty path; they can be
/// configured (to restore from, say) but never replicated.
fn settings_key(path: &Option<PathBuf>) -> PathBuf {
    path.clone().unwrap_or_default()
}

fn require_file_db(path: Option<PathBuf>) -> Result<PathBuf> {
    path.ok_or_else(|| {
        Error::msg("the main database is in-memory or temporary; only a database file can be replicated (open a file, e.g. sqlite3 app.db)")
    })
}

fn arg_text(ctx: &FnContext<'_>, i: usize, what: &str) -> Result<Option<String>> {
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(_) => return Err(Error::msg(format!("{what} must be text, not a blob"))),
    })
}

fn configure(ctx: &FnContext<'_>) -> Result<Option<String>> {
    let key = arg_text(ctx, 0, "the key")?.ok_or_else(|| Error::msg("the key must not be NULL"))?;
    let (path, _) = main_db(ctx)?;
    let key_path = settings_key(&path);
    if ctx.len() == 1 {
        return Ok(runtime::with_settings(&key_path, |s| s.get(&key))?);
    }
    // An unknown key is reported before anything about the value.
    let name = crate::config::key_name(&key)?;
    let value = arg_text(ctx, 1, &format!("the value for {name}"))?;
    let replicating = path.as_deref().and_then(runtime::replicator);
    let replicating = replicating.is_some_and(|r| !r.is_stopped());
    let db = key_path.display().to_string();
    Ok(runtime::with_settings(&key_path, |s| {
        if replicating {
            s.set_while_replicating(&key, value.as_deref(), &db)
        } else {
            s.set(&key, value.as_deref())
        }
    })?)
}

fn config_json(ctx: &FnContext<'_>) -> Result<serde_json::Value> {
    let (path, _) = main_db(ctx)?;
    Ok(runtime::with_settings(&settings_key(&path), |s| {
        s.to_json()
    }))
}

/// The `litestream_start()` of one connection: holds the count of that connection for the
/// database it started, until SQLite destroys the function (the connection closes).
#[derive(Debug)]
struct StartedBy {
    connection: usize,
    guard: Mutex<Option<runtime::ConnectionGuard>>,
}

/// Each open connection's [`StartedBy`], by connection identity, so that a second load of the
/// extension on a connection (which replaces, and so destroys, its functions) keeps the count.
static STARTED_BY: Lazy<Mutex<HashMap<usize, Weak<StartedBy>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

impl StartedBy {
    fn of(conn: &Connection) -> Arc<StartedBy> {
        let connection = host::connection_id(conn);
        let mut all = STARTED_BY.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = all.get(&connection).and_then(Weak::upgrade) {
            return existing;
        }
        let fresh = Arc::new(StartedBy {
            connection,
            guard: Mutex::new(None),
        });
        all.insert(connection, Arc::downgrade(&fresh));
        fresh
    }

    fn hold(&self, guard: runtime::ConnectionGuard) {
        let previous = self
            .guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(guard);
        // Dropped outside the lock: the new guard already counts this connection.
        drop(previous);
    }
}

impl Drop for StartedBy {
    fn drop(&mut self) {
        // Runs inside SQLite's close (xDestroy): never unwind into C, and never wait on the
        // table (in a forked child a thread of the parent may have left it locked). An entry
        // left behind is harmless: it no longer upgrades, and the next connection at this
        // address replaces it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Ok(mut all) = STARTED_BY.try_lock() {
                if all
                    .get(&self.connection)
                    .is_some_and(|w| w.strong_count() == 0)
                {
                    all.remove(&self.connection);
                }
            }
        }));
        // Then `guard` drops: the connection is no longer counted.
    }
}

fn start(ctx: &FnContext<'_>, started_by: &StartedBy) -> Result<&'static str> {
    let (path, vfs) = main_db(ctx)?;
    let path = require_file_db(path)?;
    let started = runtime::start(&path, vfs.as_deref())?;
    started_by.hold(started.guard);
    // Every connection that calls start() wakes the replicator on its commits. The hook also
    // replaces this connection's auto-checkpoint: checkpoints are the replicator's job now.
    host::with_calling_connection(ctx, |conn| {
        host::install_wal_hook(conn, runtime::commit_notifier(path.clone()))
    })?;
    Ok(if started.started {
        "started"
    } else {
        "already running"
    })
}

fn stop(ctx: &FnContext<'_>) -> Result<String> {
    let (path, _) = main_db(ctx)?;
    let path = require_file_db(path)?;
    Ok(crate::ltx::format_txid(runtime::stop(&path)?))
}

fn sync(ctx: &FnContext<'_>) -> Result<String> {
    let timeout = if ctx.len() == 1 {
        match ctx.get_raw(0) {
            ValueRef::Integer(ms) if ms > 0 => Duration::from_millis(ms as u64),
            ValueRef::Null => DEFAULT_SYNC_TIMEOUT,
            other => {
                return Err(Error::msg(format!(
                    "invalid timeout {}: expected a positive number of milliseconds",
                    describe_value(other)
                )))
            }
        }
    } else {
        DEFAULT_SYNC_TIMEOUT
    };
    let (path, _) = main_db(ctx)?;
    let path = require_file_db(path)?;
    let r = runtime::replicator(&path).ok_or_else(|| {
        Error::msg(format!(
            "{} is not being replicated; call litestream_start() first",
            path.display()
        ))
    })?;
    Ok(crate::ltx::format_txid(r.sync(timeout)?))
}

fn describe_value(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
        ValueRef::Blob(_) => "a blob".into(),
    }
}

fn status(ctx: &FnContext<'_>) -> Result<serde_json::Value> {
    let (path, _) = main_db(ctx)?;
    let mut status = match path.as_deref().and_then(runtime::replicator) {
        Some(r) => r.status(),
        None => {
            let replica = runtime::with_settings(&settings_key(&path), |s| {
                s.resolve().ok().map(|c| c.replica_display())
            });
            Status::stopped(path.as_deref().map(|p| p.display().to_string()), replica)
        }
    };
    // Restores are process-wide: every connection sees the ones running.
    status.restores = Some(restore::active_json());
    Ok(serde_json::to_value(status)?)
}

fn restore_fn(ctx: &FnContext<'_>) -> Result<String> {
    let out = arg_text(ctx, 0, "the output path")?
        .ok_or_else(|| Error::msg("the output path must not be NULL"))?;
    if out.is_empty() {
        return Err(Error::msg("the output path must not be empty"));
    }
    let mut opts = RestoreOptions::default();
    let mut url = None;
    if ctx.len() == 2 {
        if let Some(text) = arg_text(ctx, 1, "the options")? {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Error::msg(format!(
                    "options must be a JSON object such as '{{\"overwrite\": true}}': {e}"
                ))
            })?;
            let obj = v
                .as_object()
                .ok_or_else(|| Error::msg("options must be a JSON object"))?;
            for (k, v) in obj {
                match k.as_str() {
                    "url" => {
                        url = Some(
                            v.as_str()
                                .ok_or_else(|| Error::msg("option url must be a string"))?
                                .to_string(),
                        )
                    }
                    "overwrite" => {
                        opts.overwrite = v
                            .as_bool()
                            .ok_or_else(|| Error::msg("option overwrite must be true or false"))?
                    }
                    "txid" => {
                        let s = v.as_str().unwrap_or("");
                        opts.txid = Some(crate::ltx::parse_txid(s).ok_or_else(|| {
                            Error::msg(format!("option txid must be 16 hex digits such as \"00000000000000a3\", not {v}"))
                        })?);
                    }
                    "timestamp" => {
                        let s = v.as_str().unwrap_or("");
                        opts.timestamp = Some(crate::replica_client::parse_rfc3339(s).map_err(|why| {
                            Error::msg(format!("option timestamp must be an RFC 3339 time such as \"2026-11-25T10:00:00Z\", not {v}: {why}"))
                        })?);
                    }
                    other => {
                        return Err(Error::msg(format!(
                        "unknown option '{other}'; valid options: url, overwrite, txid, timestamp"
                    )))
                    }
                }
            }
        }
    }
    let (path, _) = main_db(ctx)?;
    let key = settings_key(&path);
    let target = match url {
        Some(u) => runtime::with_settings(&key, |s| {
            crate::config::target_from_url_with_settings(&u, s)
        })?,
        None => runtime::with_settings(&key, |s| s.resolve())?.target,
    };
    let client = runtime::open_client(&target)?;
    let txid = restore::restore(client.as_ref(), Path::new(&out), &opts)?;
    Ok(crate::ltx::format_txid(txid))
}
