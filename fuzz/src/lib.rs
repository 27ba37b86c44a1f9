//! The fuzz harness: one check per target, each a function from the input bytes to `()` that
//! panics (a libFuzzer finding) when an invariant of the code under test breaks. The targets in
//! `fuzz_targets/` only call these.
//!
//! The code under test is the main crate's own `ltx`, `wal` and `config` modules, compiled here
//! from the same source files (`#[path]`) rather than through a dependency on the whole
//! extension: those modules depend on std, lz4_flex, crc and serde_json only (their `//!`
//! headers say so), and this keeps the instrumented build free of the AWS SDK, tokio and rusqlite.
//! If one of them ever reaches into the rest of the crate, this crate stops compiling, which is
//! the signal to keep parsers free of I/O layers. Their `#[cfg(test)]` parts are not compiled.
//!
//! Invariants every check asserts, beyond "no panic, no overflow" (the targets build with debug
//! assertions and overflow checks): a rejected input is an `Err`; whatever is accepted obeys the
//! documented rules of its format; where there is a writer, decode(encode(x)) == x; parsed
//! configuration text is a fixed point of its normalization; errors never echo secret values.

#![allow(dead_code)] // the mounted modules carry API the checks do not use

#[path = "../../src/config/mod.rs"]
pub mod config;
#[path = "../../src/ltx/mod.rs"]
pub mod ltx;
#[path = "../../src/wal.rs"]
pub mod wal;

pub mod check_compact;
pub mod check_config;
pub mod check_ltx;
pub mod check_url;
pub mod check_wal;
pub mod input;
