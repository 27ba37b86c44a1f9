//! The key table: every key of `litestream_configure()`, in the order `litestream_config()`
//! lists them, each with the function that checks and normalizes its values, its default and
//! sample values.
//!
//! Invariants:
//! - [`KEYS`] is the only list of keys. Lookup, the unknown-key message, JSON output,
//!   resolution (through the `pub(super)` constants, so a misspelt name does not compile) and
//!   the fuzzer all go through it.
//! - A key's checker returns the normalized text that is stored; checking normalized text again
//!   gives the same text (unit-tested for every default and sample).
//! - A key's fixed default is the display text of a typed constant in `parse`, never a second
//!   copy of it.
//! - Checkers echo the value given except for the secret, and for a url or endpoint carrying
//!   `@` (credentials).

use super::parse::{
    self, format_duration, format_levels, parse_bool, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_L0_RETENTION, DEFAULT_LEASE_TTL, DEFAULT_LEVELS, DEFAULT_MIN_CHECKPOINT_PAGE_COUNT,
    DEFAULT_SNAPSHOT_INTERVAL, DEFAULT_SNAPSHOT_RETENTION, DEFAULT_SYNC_INTERVAL,
    DEFAULT_TRUNCATE_PAGE_N,
};
use super::settings::{EnvFn, Settings};
use super::url::{self, endpoint_value};
use super::{echo, has_control, invalid, ConfigError, ConfigErrorKind};

/// Checks a value given for a key (the key's name, the raw value) and returns the normalized
/// text to store.
type Check = fn(&'static str, &str) -> Result<String, ConfigError>;

/// What a key is when it has not been set.
#[derive(Clone, Copy)]
pub(super) enum Default {
    /// Nothing: the key is unset (shown as null).
    None,
    /// Follows from other keys or the environment, as the function works it out.
    Derived(fn(&Settings, EnvFn<'_>) -> Option<String>),
    /// A fixed value: the display text of the key's typed default constant.
    Fixed(fn() -> String),
}

/// One configuration key.
#[derive(Clone, Copy)]
pub struct KeySpec {
    /// Name as in Litestream's YAML.
    pub name: &'static str,
    /// The value is never shown.
    pub secret: bool,
    /// One-line description.
    pub help: &'static str,
    /// Values this key accepts, as a user might write them: shared by the unit tests and the
    /// fuzzer (which mutates them).
    #[doc(hidden)]
    pub samples: &'static [&'static str],
    check: Check,
    default: Default,
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySpec")
            .field("name", &self.name)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl KeySpec {
    /// Validates and normalizes one value for this key.
    pub(super) fn normalize(&self, raw: &str) -> Result<String, ConfigError> {
        (self.check)(self.name, raw)
    }

    /// The fixed default as normalized text; `None` for keys without one or whose default
    /// follows from other settings.
    pub fn fixed_default(&self) -> Option<String> {
        match self.default {
            Default::Fixed(text) => Some(text()),
            Default::None | Default::Derived(_) => None,
        }
    }

    pub(super) fn default(&self) -> Default {
        self.default
    }
}

pub(super) const TYPE: KeySpec = KeySpec {
    name: "type",
    secret: false,
    help: "replica type: s3 or file (default: the url's scheme, else s3 when bucket is set)",
    samples: &["s3", "file", " S3 "],
    check: check_type,
    default: Default::Derived(Settings::default_type),
};
pub(super) const URL: KeySpec = KeySpec {
    name: "url",
    secret: false,
    help: "replica URL, s3://BUCKET/PATH[?endpoint=…&region=…&force-path-style=…&skip-verify=…&part-size=…&concurrency=…] or file:///DIR; not combined with bucket/path",
    samples: &[
        "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333",
        "s3://mybucket.s3.us-west-2.amazonaws.com/db",
        "s3://backups/x/y?concurrency=3&forcePathStyle=TRUE&partSize=10MB&region=auto",
        "file:///var/backups/app",
    ],
    check: url::check_url,
    default: Default::None,
};
pub(super) const BUCKET: KeySpec = KeySpec {
    name: "bucket",
    secret: false,
    help: "S3 bucket name",
    samples: &["mybucket", "my-bucket.v2"],
    check: |key, raw| text(key, raw, url::bucket_value),
    default: Default::None,
};
pub(super) const PATH: KeySpec = KeySpec {
    name: "path",
    secret: false,
    help: "S3 key prefix of the replica (type s3), or the replica directory (type file; made absolute)",
    samples: &["db", "app/prod.db", "/var/backups/app"],
    check: check_path,
    default: Default::None,
};
pub(super) const REGION: KeySpec = KeySpec {
    name: "region",
    secret: false,
    help: "S3 region (default: AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1)",
    samples: &["us-east-1", "eu-west-1", "auto"],
    check: |key, raw| text(key, raw, url::region_value),
    default: Default::None,
};
pub(super) const ENDPOINT: KeySpec = KeySpec {
    name: "endpoint",
    secret: false,
    help: "S3-compatible endpoint, e.g. http://127.0.0.1:9000 (https:// is added when no scheme is given)",
    samples: &[
        "http://127.0.0.1:9000",
        "s3.us-west-000.backblazeb2.com",
        "https://[::1]:9000",
    ],
    check: check_endpoint,
    default: Default::None,
};
pub(super) const FORCE_PATH_STYLE: KeySpec = KeySpec {
    name: "force-path-style",
    secret: false,
    help: "path-style bucket addressing: true or false (default: true when an endpoint is set)",
    samples: &["true", "false", "yes", "0"],
    check: |key, raw| typed(key, raw, parse_bool, |b| b.to_string()),
    default: Default::Derived(Settings::default_force_path_style),
};
pub(super) const SKIP_VERIFY: KeySpec = KeySpec {
    name: "skip-verify",
    secret: false,
    help: "skip TLS certificate verification: true or false",
    samples: &["true", "false", "ON"],
    check: |key, raw| typed(key, raw, parse_bool, |b| b.to_string()),
    default: Default::Derived(Settings::default_skip_verify),
};
pub(super) const ACCESS_KEY_ID: KeySpec = KeySpec {
    name: "access-key-id",
    secret: false,
    help: "static S3 access key id, used together with secret-access-key (default: LITESTREAM_ACCESS_KEY_ID or the AWS default credential chain)",
    samples: &["AKIDEXAMPLE", "test"],
    check: check_access_key_id,
    default: Default::None,
};
pub(super) const SECRET_ACCESS_KEY: KeySpec = KeySpec {
    name: "secret-access-key",
    secret: true,
    help: "static S3 secret access key, used together with access-key-id; never shown",
    samples: &["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "testtesttest"],
    check: check_secret,
    default: Default::None,
};
pub(super) const SYNC_INTERVAL: KeySpec = KeySpec {
    name: "sync-interval",
    secret: false,
    help:
        "how often new commits are uploaded, a duration such as 500ms or 1s (0 = on every commit)",
    samples: &["1s", "100ms", "0", "1m30s"],
    check: |key, raw| typed(key, raw, parse::sync_interval_value, format_duration),
    default: Default::Fixed(|| format_duration(DEFAULT_SYNC_INTERVAL)),
};
pub(super) const PART_SIZE: KeySpec = KeySpec {
    name: "part-size",
    secret: false,
    help: "multipart upload part size: bytes or K/KB/KiB, M/MB/MiB, G/GB/GiB (1024-based), from 5 MiB to 5 GiB",
    samples: &["5MB", "10MB", "5242880", "1GB", "5120KiB"],
    check: check_part_size,
    default: Default::Derived(Settings::default_part_size),
};
pub(super) const CONCURRENCY: KeySpec = KeySpec {
    name: "concurrency",
    secret: false,
    help: "multipart upload parts sent in parallel, 1 to 64 (default 5; 2 for Cloudflare R2 endpoints)",
    samples: &["5", "1", "64", "007"],
    check: |key, raw| typed(key, raw, parse::concurrency_value, |n| n.to_string()),
    default: Default::Derived(Settings::default_concurrency),
};
pub(super) const MIN_CHECKPOINT_PAGE_COUNT: KeySpec = KeySpec {
    name: "min-checkpoint-page-count",
    secret: false,
    help: "WAL size in pages that triggers a PASSIVE checkpoint",
    samples: &["1000", "1", "500"],
    check: |key, raw| typed(key, raw, parse::page_count_value, |n| n.to_string()),
    default: Default::Fixed(|| DEFAULT_MIN_CHECKPOINT_PAGE_COUNT.to_string()),
};
pub(super) const CHECKPOINT_INTERVAL: KeySpec = KeySpec {
    name: "checkpoint-interval",
    secret: false,
    help: "time-based PASSIVE checkpoint interval, a duration (0 disables)",
    samples: &["1m", "0", "30s"],
    check: duration,
    default: Default::Fixed(|| format_duration(DEFAULT_CHECKPOINT_INTERVAL)),
};
pub(super) const TRUNCATE_PAGE_N: KeySpec = KeySpec {
    name: "truncate-page-n",
    secret: false,
    help: "WAL size in pages that forces a TRUNCATE checkpoint ('off' disables)",
    samples: &["121359", "off", "200000", "OFF"],
    check: |key, raw| typed(key, raw, parse::truncate_value, parse::format_truncate),
    default: Default::Fixed(|| parse::format_truncate(Some(DEFAULT_TRUNCATE_PAGE_N))),
};
pub(super) const LEASE: KeySpec = KeySpec {
    name: "lease",
    secret: false,
    help: "one replicating instance per replica through lock.json and S3 conditional writes: on or off (default: on for s3, off for file)",
    samples: &["on", "off", "true"],
    check: |key, raw| typed(key, raw, parse::on_off, parse::format_on_off),
    default: Default::Derived(Settings::default_lease),
};
pub(super) const LEASE_TTL: KeySpec = KeySpec {
    name: "lease-ttl",
    secret: false,
    help: "how long a lease lasts unless renewed (renewed every third of it), a duration of at least 1s",
    samples: &["30s", "1s", "1500ms", "1m"],
    check: |key, raw| typed(key, raw, parse::lease_ttl_value, format_duration),
    default: Default::Fixed(|| format_duration(DEFAULT_LEASE_TTL)),
};
pub(super) const LEASE_OWNER: KeySpec = KeySpec {
    name: "lease-owner",
    secret: false,
    help: "this instance's name in lock.json (default: hostname:pid)",
    samples: &["web-1:4242", " host:1 "],
    check: |key, raw| text(key, raw, parse::lease_owner_value),
    default: Default::Derived(Settings::default_lease_owner),
};
pub(super) const LEVELS: KeySpec = KeySpec {
    name: "levels",
    secret: false,
    help: "compaction intervals of levels 1, 2, …, comma-separated durations (sub-second allowed, at most 8), or off",
    samples: &["30s,5m,1h", "off", " 500ms, 2s ,1m30s", "0.25s"],
    check: |key, raw| typed(key, raw, parse::levels_value, |v| format_levels(&v)),
    default: Default::Fixed(|| format_levels(&DEFAULT_LEVELS)),
};
pub(super) const L0_RETENTION: KeySpec = KeySpec {
    name: "l0-retention",
    secret: false,
    help: "how long level-0 files stay after they are compacted into level 1, a duration (0 keeps them)",
    samples: &["5m", "0", "30s"],
    check: duration,
    default: Default::Fixed(|| format_duration(DEFAULT_L0_RETENTION)),
};
pub(super) const SNAPSHOT_INTERVAL: KeySpec = KeySpec {
    name: "snapshot-interval",
    secret: false,
    help:
        "how often a full level-9 snapshot is streamed from the database, a duration (0 disables)",
    samples: &["24h", "0", "3000ms"],
    check: duration,
    default: Default::Fixed(|| format_duration(DEFAULT_SNAPSHOT_INTERVAL)),
};
pub(super) const SNAPSHOT_RETENTION: KeySpec = KeySpec {
    name: "snapshot-retention",
    secret: false,
    help: "how long level-9 snapshots are kept (the newest always is), a duration; older history goes with them",
    samples: &["24h", "4s", "168h"],
    check: duration,
    default: Default::Fixed(|| format_duration(DEFAULT_SNAPSHOT_RETENTION)),
};
pub(super) const RETENTION: KeySpec = KeySpec {
    name: "retention",
    secret: false,
    help: "on: delete expired files from the replica; off: never delete remotely (for buckets with lifecycle rules)",
    samples: &["on", "off", "false"],
    check: |key, raw| typed(key, raw, parse::on_off, parse::format_on_off),
    default: Default::Fixed(|| parse::format_on_off(true)),
};

/// Every key, in the order `litestream_config()` lists them.
static KEYS: [KeySpec; 24] = [
    TYPE,
    URL,
    BUCKET,
    PATH,
    REGION,
    ENDPOINT,
    FORCE_PATH_STYLE,
    SKIP_VERIFY,
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    SYNC_INTERVAL,
    PART_SIZE,
    CONCURRENCY,
    MIN_CHECKPOINT_PAGE_COUNT,
    CHECKPOINT_INTERVAL,
    TRUNCATE_PAGE_N,
    LEASE,
    LEASE_TTL,
    LEASE_OWNER,
    LEVELS,
    L0_RETENTION,
    SNAPSHOT_INTERVAL,
    SNAPSHOT_RETENTION,
    RETENTION,
];

/// All keys, in table order.
pub fn keys() -> &'static [KeySpec] {
    &KEYS
}

/// The canonical name of `key` (any accepted spelling), or the unknown-key error.
pub fn key_name(key: &str) -> Result<&'static str, ConfigError> {
    lookup(key).map(|k| k.name)
}

// ---------------------------------------------------------------------------------------------
// Checkers shared by several keys
// ---------------------------------------------------------------------------------------------

/// A value read by `parse` and stored as `show` writes it.
fn typed<T>(
    key: &'static str,
    raw: &str,
    parse: fn(&str) -> Result<T, String>,
    show: fn(T) -> String,
) -> Result<String, ConfigError> {
    parse(raw)
        .map(show)
        .map_err(|e| invalid(key, raw.trim(), &e))
}

/// A text value checked (and normalized) by `check`.
fn text(
    key: &'static str,
    raw: &str,
    check: fn(&str) -> Result<String, String>,
) -> Result<String, ConfigError> {
    typed(key, raw, check, |s| s)
}

fn duration(key: &'static str, raw: &str) -> Result<String, ConfigError> {
    typed(key, raw, parse::duration_setting, format_duration)
}

fn check_type(key: &'static str, raw: &str) -> Result<String, ConfigError> {
    text(key, raw, |raw| {
        match raw.trim().to_ascii_lowercase().as_str() {
            t @ ("s3" | "file") => Ok(t.to_string()),
            _ => Err("expected s3 or file".to_string()),
        }
    })
}

fn check_path(key: &'static str, raw: &str) -> Result<String, ConfigError> {
    text(key, raw, |raw| {
        let t = raw.trim();
        if t.is_empty() || has_control(t) {
            Err(
                "expected a non-empty key prefix (S3) or directory (file); use NULL to reset"
                    .into(),
            )
        } else {
            Ok(t.to_string())
        }
    })
}

fn check_endpoint(key: &'static str, raw: &str) -> Result<String, ConfigError> {
    endpoint_value(raw, false).map_err(|e| {
        if raw.contains('@') {
            // May carry credentials: never echoed.
            ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("invalid value for {key}: {e}"),
            )
        } else {
            invalid(key, raw.trim(), &e)
        }
    })
}

fn check_access_key_id(key: &'static str, raw: &str) -> Result<String, ConfigError> {
    text(key, raw, |raw| {
        let t = raw.trim();
        if t.is_empty() || has_control(t) {
            Err("expected a non-empty access key id".into())
        } else {
            Ok(t.to_string())
        }
    })
}

fn check_secret(key: &'static str, raw: &str) -> Result<String, ConfigError> {
    let t = raw.trim();
    if t.is_empty() || has_control(t) {
        // Never echo the value.
        return Err(ConfigError::new(
            ConfigErrorKind::InvalidValue,
            format!("invalid value for {key}: expected a non-empty secret without control characters (the value is not shown)"),
        ));
    }
    Ok(t.to_string())
}

fn check_part_size(_key: &'static str, raw: &str) -> Result<String, ConfigError> {
    // part_size_value's messages already name the key and the value.
    parse::part_size_value(raw)
        .map(|n| n.to_string())
        .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidValue, e))
}

// ---------------------------------------------------------------------------------------------
// Lookup
// ---------------------------------------------------------------------------------------------

fn compact_key(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Finds a key. Matching ignores ASCII case, `-` and `_`, so `part-size`, `part_size`,
/// `PART-SIZE` and Litestream's URL spelling `partSize` all name the same key.
pub(super) fn lookup(key: &str) -> Result<&'static KeySpec, ConfigError> {
    let wanted = compact_key(key);
    KEYS.iter()
        .find(|k| !wanted.is_empty() && compact_key(k.name) == wanted)
        .ok_or_else(|| unknown_key(key))
}

/// Longest key (compacted) for which a "did you mean" is computed: the edit distance is
/// quadratic, and nothing that long is a typo of a key.
const MAX_SUGGEST_CHARS: usize = 64;
/// Largest edit distance still suggested: one or two slips.
const MAX_SUGGEST_DISTANCE: usize = 2;

fn unknown_key(key: &str) -> ConfigError {
    let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    let mut message = format!(
        "unknown key '{}'; valid keys: {}",
        echo(key),
        names.join(", ")
    );
    let wanted = compact_key(key);
    if !wanted.is_empty() && wanted.chars().count() <= MAX_SUGGEST_CHARS {
        let best = KEYS
            .iter()
            .map(|k| (levenshtein(&wanted, &compact_key(k.name)), k))
            .min_by_key(|(d, _)| *d);
        if let Some((d, k)) = best {
            if d <= MAX_SUGGEST_DISTANCE {
                message.push_str(&format!(". Did you mean '{}' ({})?", k.name, k.help));
            }
        }
    }
    ConfigError::new(ConfigErrorKind::UnknownKey, message)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
