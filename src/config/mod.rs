//! Replication settings: the keys of `litestream_configure()`, their parsers, and the
//! resolution of a complete configuration into a typed [`ResolvedConfig`].
//!
//! Key names follow Litestream's YAML (`../shared/docs/litestream-format.md` §5.1, §3.5).
//!
//! Invariants:
//! - The key table in `keys` is the only list of keys: each entry carries its checker and its
//!   default, and everything else (lookup, JSON, resolution, the fuzzer) goes through it.
//! - Every value is validated and normalized when it is set; [`Settings`] stores only
//!   normalized text, which its key's parser always reads back, so resolving never meets a
//!   value that was not accepted once.
//! - Every error names the key (or url part), echoes the value given (bounded, control
//!   characters replaced; not at all when it contains `@`, see `quote`) and says what is
//!   accepted.
//! - Secrets (`secret-access-key`) never appear in any output of this module: getters, JSON,
//!   `Debug` and error messages show [`REDACTED`] or nothing.
//!
//! Self-contained: std and `serde_json` only.
//!
//! Layout: `keys` (the table, lookup), `number` (exact decimal numbers: sizes, counts),
//! `parse` (scalar parsers and formatters), `url`
//! (endpoints, bucket names, replica URLs), `settings` (stored values, getters, JSON),
//! `resolve` (settings → [`ResolvedConfig`], environment, credentials), `samples` (values
//! the unit tests and the fuzzer share).

use std::fmt;

mod keys;
mod number;
mod parse;
mod resolve;
mod samples;
mod settings;
mod url;

#[cfg(test)]
mod tests;

pub use keys::{key_name, keys, KeySpec};
pub use parse::{
    default_lease_owner, format_duration, parse_bool, parse_duration, parse_size,
    DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CONCURRENCY, DEFAULT_L0_RETENTION, DEFAULT_LEASE_TTL,
    DEFAULT_LEVELS, DEFAULT_MIN_CHECKPOINT_PAGE_COUNT, DEFAULT_PART_SIZE, DEFAULT_REGION,
    DEFAULT_SNAPSHOT_INTERVAL, DEFAULT_SNAPSHOT_RETENTION, DEFAULT_SYNC_INTERVAL,
    DEFAULT_TRUNCATE_PAGE_N, MAX_CONCURRENCY, MAX_LEASE_OWNER_CHARS, MAX_LEVELS, MAX_PART_SIZE,
    MIN_LEASE_TTL, MIN_PART_SIZE, MIN_SYNC_INTERVAL, R2_DEFAULT_CONCURRENCY,
};
pub use resolve::{
    target_from_url, target_from_url_with_settings, ReplicaTarget, ResolvedConfig, S3Target,
};
#[doc(hidden)]
pub use samples::{odd_inputs, sample_values};
pub use settings::Settings;

/// What a set secret is shown as.
pub const REDACTED: &str = "********";
/// Longest piece of user input echoed back in an error message: enough to recognise a value,
/// short enough that a pasted blob does not flood the SQL error.
const MAX_ECHO_CHARS: usize = 120;

/// What kind of problem a [`ConfigError`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The key does not exist.
    UnknownKey,
    /// The value given for a key (or inside the url) is not acceptable.
    InvalidValue,
    /// Settings contradict each other (e.g. `url` together with `bucket`).
    Conflict,
    /// Something needed to start replication is missing.
    Incomplete,
}

/// A configuration error. The message is meant for users (it becomes the SQL error text)
/// and never contains a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
}

impl ConfigError {
    fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            message: message.into(),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The user-facing message (same as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// User input as echoed in messages: at most [`MAX_ECHO_CHARS`] characters, control
/// characters replaced.
fn echo(v: &str) -> String {
    let mut out: String = v
        .chars()
        .take(MAX_ECHO_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if v.chars().count() > MAX_ECHO_CHARS {
        out.push('…');
    }
    out
}

/// User input as an error quotes it: `'text'` (as [`echo`] shows it), or a note that it is not
/// shown when it contains `@`: any value may be a pasted `user:secret@host` url, and no bad
/// value needs its `@` part quoted to be recognised.
fn quote(v: &str) -> String {
    if v.contains('@') {
        "(not shown: it may hold credentials)".to_string()
    } else {
        format!("'{}'", echo(v))
    }
}

/// The standard message for a bad value: `invalid value 'V' for KEY: EXPECTED` (V as [`quote`]
/// shows it).
fn invalid(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::new(
        ConfigErrorKind::InvalidValue,
        format!("invalid value {} for {}: {}", quote(value), key, expected),
    )
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}
