//! `litestream_ltx`: an eponymous table-valued function listing a replica's LTX files, the rows
//! `litestream ltx -level all` prints: level, min_txid, max_txid, size, created_at, key.
//!
//! `SELECT * FROM litestream_ltx` lists the replica configured for the calling connection's main
//! database; `SELECT * FROM litestream_ltx('s3://bucket/path?endpoint=…')` lists any replica
//! (the hidden `url` column). The virtual-table plumbing (`unsafe impl`s, panic guards) is
//! `host::TableFunction`; this module is the safe part: schema, planning, rows.
//!
//! Invariants:
//! - The table is DIRECTONLY (every `host::TableFunction` is): it reads configuration and talks
//!   to the network, so a view or trigger of an untrusted database cannot use it.
//! - `created_at` is the listing's LastModified (file replicas: mtime) in RFC 3339 whole seconds,
//!   UTC — the form Go's `time.RFC3339` prints — and `min_txid`/`max_txid` are 16 hex digits,
//!   so rows compare as text with Litestream's `-json` output.

use std::path::PathBuf;
use std::time::SystemTime;

use rusqlite::vtab::{Context, Filters, IndexConstraintOp, IndexInfo};
use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::host::{TableCursor, TableFunction};
use crate::ltx;
use crate::replica_client::{all_levels, LtxFileInfo};
use crate::runtime;

/// The table as one connection sees it: the settings of its main database.
pub struct LtxTable {
    /// Canonical path of the connection's main database (None: in-memory or temporary).
    db: Option<PathBuf>,
}

impl TableFunction for LtxTable {
    type Cursor = Cursor;
    const NAME: &'static str = "litestream_ltx";
    /// `url` is the hidden argument column.
    const SCHEMA: &'static str = "CREATE TABLE x(level INTEGER, min_txid TEXT, max_txid TEXT, \
                                  size INTEGER, created_at TEXT, key TEXT, url HIDDEN)";

    fn connect(conn: &Connection) -> rusqlite::Result<LtxTable> {
        Ok(LtxTable {
            db: main_db_path(conn),
        })
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<()> {
        best_index(info)
    }

    fn open(&self) -> rusqlite::Result<Cursor> {
        Ok(Cursor {
            db: self.db.clone(),
            ..Cursor::default()
        })
    }
}
const COL_URL: i32 = 6;
/// `idx_num` when a url argument is given.
const WITH_URL: i32 = 1;

/// The canonical path of the connection's main database (the key of its settings), or None
/// for in-memory and temporary databases.
fn main_db_path(conn: &Connection) -> Option<PathBuf> {
    match conn.path() {
        None | Some("") => None,
        Some(p) => std::fs::canonicalize(p).ok(),
    }
}

fn module_error(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ModuleError(format!("litestream_ltx: {e}"))
}

/// xBestIndex: use an `url = ?` constraint as the argument; refuse plans where it cannot be
/// used (SQLite then picks one where it can, as for `generate_series`).
fn best_index(info: &mut IndexInfo) -> rusqlite::Result<()> {
    let mut url_at = None;
    let mut url_unusable = false;
    for (i, c) in info.constraints().enumerate() {
        if c.column() != COL_URL {
            continue;
        }
        if !c.is_usable() {
            url_unusable = true;
        } else if c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ {
            url_at = Some(i);
        }
    }
    match url_at {
        Some(i) => {
            let mut usage = info.constraint_usage(i);
            usage.set_argv_index(1);
            usage.set_omit(true);
            info.set_idx_num(WITH_URL);
        }
        None if url_unusable => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                None,
            ))
        }
        None => info.set_idx_num(0),
    }
    // Listing is a network round trip per level: make SQLite run it once.
    info.set_estimated_cost(1e6);
    info.set_estimated_rows(1000);
    Ok(())
}

/// One scan's state.
#[derive(Default)]
pub struct Cursor {
    db: Option<PathBuf>,
    rows: Vec<LtxFileInfo>,
    pos: usize,
    url: Option<String>,
}

impl TableCursor for Cursor {
    fn filter(&mut self, idx_num: i32, args: &Filters<'_>) -> rusqlite::Result<()> {
        self.url = if idx_num == WITH_URL {
            Some(args.get::<Option<String>>(0)?.ok_or_else(|| {
                module_error("the url must not be NULL; expected s3://BUCKET/PATH or file:///DIR")
            })?)
        } else {
            None
        };
        self.rows = self.list().map_err(module_error)?;
        self.pos = 0;
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.pos += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.pos >= self.rows.len()
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.pos as i64)
    }

    fn column(&self, ctx: &mut Context, i: i32) -> rusqlite::Result<()> {
        let Some(f) = self.rows.get(self.pos) else {
            return ctx.set_result(&rusqlite::types::Null);
        };
        match i {
            0 => ctx.set_result(&(f.level as i64)),
            1 => ctx.set_result(&ltx::format_txid(f.min_txid)),
            2 => ctx.set_result(&ltx::format_txid(f.max_txid)),
            3 => ctx.set_result(&(f.size as i64)),
            4 => ctx.set_result(&rfc3339_seconds(f.created_at)),
            5 => ctx.set_result(&f.key),
            _ => ctx.set_result(&self.url),
        }
    }
}

impl Cursor {
    fn list(&self) -> Result<Vec<LtxFileInfo>> {
        let target = match &self.url {
            Some(u) => crate::config::target_from_url(u)?,
            None => {
                let key = self.db.clone().unwrap_or_default();
                runtime::with_settings(&key, |s| s.resolve())
                    .map_err(|e| {
                        Error::msg(format!(
                            "{e} (or pass a replica url: SELECT * FROM litestream_ltx('s3://…'))"
                        ))
                    })?
                    .target
            }
        };
        let client = runtime::open_client(&target)?;
        let mut rows = Vec::new();
        for level in all_levels() {
            rows.extend(client.list(level)?);
        }
        Ok(rows)
    }
}

/// Go's `t.Format(time.RFC3339)` of a UTC time: whole seconds (truncated), `Z`.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let ms = secs * 1000;
    crate::replica_client::format_timestamp_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn created_at_is_whole_seconds_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(rfc3339_seconds(t), "2023-11-14T22:13:20Z");
    }
}
