//! Test host: `litestream-rust-host EXT DB OUT SETTING=VALUE...`
//!
//! Loads the extension into a rusqlite connection, applies the settings with
//! `litestream_configure`, starts replication, commits from the loading connection and from a
//! second connection on another thread, syncs, stops, and restores into OUT. Prints one line per
//! step; exits non-zero on any error. The calling test compares OUT with DB.
use rusqlite::{Connection, LoadExtensionGuard};
use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: litestream-rust-host EXT DB OUT KEY=VALUE...".into());
    }
    let (ext, db, out) = (&args[1], &args[2], &args[3]);
    let conn = Connection::open(db)?;
    // SAFETY: loading our own extension, built by this repository.
    unsafe {
        let _guard = LoadExtensionGuard::new(&conn)?;
        conn.load_extension(ext, None::<&str>)?;
    }
    for kv in &args[4..] {
        let (k, v) = kv.split_once('=').ok_or("settings are KEY=VALUE")?;
        let got: Option<String> = conn.query_row("SELECT litestream_configure(?1, ?2)", [k, v], |r| r.get(0))?;
        println!("configure {k} -> {}", got.unwrap_or_default());
    }
    let started: String = conn.query_row("SELECT litestream_start()", [], |r| r.get(0))?;
    println!("start -> {started}");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS host_rows(id INTEGER PRIMARY KEY, who TEXT, n INTEGER, pad BLOB)")?;

    let db2 = db.clone();
    let other = std::thread::spawn(move || -> Result<(), String> {
        let c = Connection::open(&db2).map_err(|e| e.to_string())?;
        c.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| e.to_string())?;
        for i in 0..200 {
            c.execute("INSERT INTO host_rows(who, n, pad) VALUES ('thread', ?1, randomblob(300))", [i])
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    for i in 0..200 {
        conn.execute("INSERT INTO host_rows(who, n, pad) VALUES ('main', ?1, randomblob(300))", [i])?;
    }
    other.join().map_err(|_| "writer thread panicked")??;
    let txid: String = conn.query_row("SELECT litestream_sync(30000)", [], |r| r.get(0))?;
    println!("sync -> {txid}");
    let stopped: String = conn.query_row("SELECT litestream_stop()", [], |r| r.get(0))?;
    println!("stop -> {stopped}");
    let restored: String = conn.query_row("SELECT litestream_restore(?1)", [out], |r| r.get(0))?;
    println!("restore -> {restored}");
    Ok(())
}
