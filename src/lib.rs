//! litestream: a SQLite loadable extension that streams every committed transaction of a
//! database to S3 (or a directory) as a Litestream 0.5 replica, from inside the host process.
//!
//! Data flows one way: commit → WAL reader (`wal`) → LTX encoder (`ltx`) → uploader (`s3`,
//! `replica_client`) → replica, driven by `replicator`; and replica → restore plan → decoder →
//! file in `restore`. `sql` is the SQL surface, `runtime` the process-wide state, `config` the
//! settings, `host` the only place with `unsafe` calls into the host's SQLite, `alloc` the
//! allocator of the extension's own memory (enforced: `unsafe_code` is denied everywhere else).
#![deny(unsafe_code)]

mod alloc;
pub mod compactor;
pub mod config;
pub mod error;
mod follower;
mod host;
pub mod ltx;
mod ltx_table;
pub mod replica_client;
mod replicator;
pub mod restore;
mod runtime;
pub mod s3;
pub mod scheduler;
mod sql;
pub mod state;
pub mod wal;
pub mod wal_index;

/// The extension's own blocks: large ones mapped, so they go back to the system when freed.
#[global_allocator]
static ALLOCATOR: alloc::ExtensionAllocator = alloc::ExtensionAllocator;

// The entry point SQLite's loader calls: registers the SQL surface on each connection.
export_entry_point!(sql::register);

pub use sql::{FUNCTIONS, MODULES};

/// `litestream_version()`: crate version and the git commit it was built from.
pub fn version() -> String {
    format!(
        "litestream-sqlite {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("LITESTREAM_GIT_COMMIT")
    )
}
