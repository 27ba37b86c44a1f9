//! Replication settings: the keys of `litestream_configure()`, their parsers, and the
//! resolution of a complete configuration into a typed [`ResolvedConfig`].
//!
//! Key names follow Litestream's YAML (`../shared/docs/litestream-format.md` §5.1, §3.5).
//! Every value is validated and normalized when it is set; [`Settings`] stores the
//! normalized strings, and [`Settings::resolve`] turns them into typed values when
//! replication starts.
//!
//! Self-contained: std and `serde_json` only.
//!
//! Secrets (`secret-access-key`) never appear in any output of this module: getters,
//! JSON, `Debug` and error messages show [`REDACTED`] or nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// What a set secret is shown as.
pub const REDACTED: &str = "********";
/// S3 minimum multipart part size (5 MiB); also the default.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3 maximum multipart part size (5 GiB).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Default part size (the AWS SDK default, 5 MiB).
pub const DEFAULT_PART_SIZE: u64 = MIN_PART_SIZE;
/// Upper bound for `concurrency`.
pub const MAX_CONCURRENCY: usize = 64;
/// Default `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 5;
/// Default `concurrency` for Cloudflare R2 endpoints (Litestream's `DefaultR2Concurrency`).
pub const R2_DEFAULT_CONCURRENCY: usize = 2;
/// Region used when neither the settings nor the environment name one.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Default `sync-interval`.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default `checkpoint-interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Default `min-checkpoint-page-count`.
pub const DEFAULT_MIN_CHECKPOINT_PAGE_COUNT: u32 = 1000;
/// Default `truncate-page-n`.
pub const DEFAULT_TRUNCATE_PAGE_N: u32 = 121_359;
/// Default `lease-ttl` (Litestream's `DefaultLeaseTTL`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// Shortest `lease-ttl`: the holder renews every third of it and stops uploading a safety margin
/// before it ends, so below a second a busy host or store would lose the lease all the time.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// Longest `lease-owner` accepted (it is written into every `lock.json`).
pub const MAX_LEASE_OWNER_CHARS: usize = 256;
/// Default `levels`: Litestream's L1/L2/L3 compaction intervals (`DefaultCompactionLevels`).
pub const DEFAULT_LEVELS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(5 * 60),
    Duration::from_secs(60 * 60),
];
/// At most this many compaction levels: 1..=8, level 9 holds snapshots (Litestream's limit).
pub const MAX_LEVELS: usize = 8;
/// Default `l0-retention` (Litestream's `DefaultL0Retention`).
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(5 * 60);
/// Default `snapshot-interval` and `snapshot-retention` (Litestream: 24 h each).
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
pub const DEFAULT_SNAPSHOT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

const BOOL_EXPECTED: &str = "expected true or false (also 1/0, yes/no, on/off)";
const DURATION_EXPECTED: &str = "expected a duration such as 0, 500ms, 1s, 1m30s";
const SIZE_EXPECTED: &str =
    "expected bytes (5242880) or a number with K, KB, M, MB, G or GB (1024-based, e.g. 5MB, 1.5MB, 1GB)";
const LEVELS_EXPECTED: &str = "expected comma-separated compaction intervals for levels 1, 2, … \
     such as 30s,5m,1h (1 to 8 durations, each above 0), or off for no compaction";
const ON_OFF_EXPECTED: &str = "expected on or off (also true/false, 1/0, yes/no)";
const URL_EXPECTED: &str = "expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR";
const QUERY_PARAMS: &str = "endpoint, region, force-path-style (or forcePathStyle), \
     skip-verify (or skipVerify), part-size (or partSize), concurrency";
/// Longest piece of user input echoed back in an error message.
const MAX_ECHO_CHARS: usize = 120;

// ---------------------------------------------------------------------------------------------
// Key table
// ---------------------------------------------------------------------------------------------

/// One configuration key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Name as in Litestream's YAML.
    pub name: &'static str,
    /// Default as a normalized string; `""` = no static default (derived or none).
    pub default: &'static str,
    /// The value is never shown.
    pub secret: bool,
    /// One-line description.
    pub help: &'static str,
}

static KEYS: [KeySpec; 24] = [
    KeySpec {
        name: "type",
        default: "",
        secret: false,
        help: "replica type: s3 or file (default: the url's scheme, else s3 when bucket is set)",
    },
    KeySpec {
        name: "url",
        default: "",
        secret: false,
        help: "replica URL, s3://BUCKET/PATH[?endpoint=…&region=…&force-path-style=…&skip-verify=…&part-size=…&concurrency=…] or file:///DIR; not combined with bucket/path",
    },
    KeySpec {
        name: "bucket",
        default: "",
        secret: false,
        help: "S3 bucket name",
    },
    KeySpec {
        name: "path",
        default: "",
        secret: false,
        help: "S3 key prefix of the replica (type s3), or the replica directory (type file; made absolute)",
    },
    KeySpec {
        name: "region",
        default: "",
        secret: false,
        help: "S3 region (default: AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1)",
    },
    KeySpec {
        name: "endpoint",
        default: "",
        secret: false,
        help: "S3-compatible endpoint, e.g. http://127.0.0.1:9000 (https:// is added when no scheme is given)",
    },
    KeySpec {
        name: "force-path-style",
        default: "false",
        secret: false,
        help: "path-style bucket addressing: true or false (default: true when an endpoint is set)",
    },
    KeySpec {
        name: "skip-verify",
        default: "false",
        secret: false,
        help: "skip TLS certificate verification: true or false",
    },
    KeySpec {
        name: "access-key-id",
        default: "",
        secret: false,
        help: "static S3 access key id, used together with secret-access-key (default: LITESTREAM_ACCESS_KEY_ID or the AWS default credential chain)",
    },
    KeySpec {
        name: "secret-access-key",
        default: "",
        secret: true,
        help: "static S3 secret access key, used together with access-key-id; never shown",
    },
    KeySpec {
        name: "sync-interval",
        default: "1s",
        secret: false,
        help: "how often new commits are uploaded, a duration such as 500ms or 1s (0 = on every commit)",
    },
    KeySpec {
        name: "part-size",
        default: "5242880",
        secret: false,
        help: "multipart upload part size: bytes or K/KB/KiB, M/MB/MiB, G/GB/GiB (1024-based), from 5 MiB to 5 GiB",
    },
    KeySpec {
        name: "concurrency",
        default: "5",
        secret: false,
        help: "multipart upload parts sent in parallel, 1 to 64 (default 5; 2 for Cloudflare R2 endpoints)",
    },
    KeySpec {
        name: "min-checkpoint-page-count",
        default: "1000",
        secret: false,
        help: "WAL size in pages that triggers a PASSIVE checkpoint",
    },
    KeySpec {
        name: "checkpoint-interval",
        default: "1m",
        secret: false,
        help: "time-based PASSIVE checkpoint interval, a duration (0 disables)",
    },
    KeySpec {
        name: "truncate-page-n",
        default: "121359",
        secret: false,
        help: "WAL size in pages that forces a TRUNCATE checkpoint ('off' disables)",
    },
    // ---- distributed lease (issue 4) ----
    KeySpec {
        name: "lease",
        default: "",
        secret: false,
        help: "one replicating instance per replica through lock.json and S3 conditional writes: on or off (default: on for s3, off for file)",
    },
    KeySpec {
        name: "lease-ttl",
        default: "30s",
        secret: false,
        help: "how long a lease lasts unless renewed (renewed every third of it), a duration of at least 1s",
    },
    KeySpec {
        name: "lease-owner",
        default: "",
        secret: false,
        help: "this instance's name in lock.json (default: hostname:pid)",
    },
    KeySpec {
        name: "levels",
        default: "30s,5m,1h",
        secret: false,
        help: "compaction intervals of levels 1, 2, …, comma-separated durations (sub-second allowed, at most 8), or off",
    },
    KeySpec {
        name: "l0-retention",
        default: "5m",
        secret: false,
        help: "how long level-0 files stay after they are compacted into level 1, a duration (0 keeps them)",
    },
    KeySpec {
        name: "snapshot-interval",
        default: "24h",
        secret: false,
        help: "how often a full level-9 snapshot is streamed from the database, a duration (0 disables)",
    },
    KeySpec {
        name: "snapshot-retention",
        default: "24h",
        secret: false,
        help: "how long level-9 snapshots are kept (the newest always is), a duration; older history goes with them",
    },
    KeySpec {
        name: "retention",
        default: "on",
        secret: false,
        help: "on: delete expired files from the replica; off: never delete remotely (for buckets with lifecycle rules)",
    },
];

/// All keys, in table order.
pub fn keys() -> &'static [KeySpec] {
    &KEYS
}

fn compact_key(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Finds a key. Matching ignores ASCII case, `-` and `_`, so `part-size`, `part_size`,
/// `PART-SIZE` and Litestream's URL spelling `partSize` all name the same key.
fn lookup(key: &str) -> Result<&'static KeySpec, ConfigError> {
    let wanted = compact_key(key);
    KEYS.iter()
        .find(|k| !wanted.is_empty() && compact_key(k.name) == wanted)
        .ok_or_else(|| unknown_key(key))
}

fn unknown_key(key: &str) -> ConfigError {
    let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    let mut message = format!(
        "unknown key '{}'; valid keys: {}",
        echo(key),
        names.join(", ")
    );
    let wanted = compact_key(key);
    if !wanted.is_empty() && wanted.chars().count() <= 64 {
        let best = KEYS
            .iter()
            .map(|k| (levenshtein(&wanted, &compact_key(k.name)), k))
            .min_by_key(|(d, _)| *d);
        if let Some((d, k)) = best {
            if d <= 2 {
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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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

fn invalid(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::new(
        ConfigErrorKind::InvalidValue,
        format!("invalid value '{}' for {}: {}", echo(value), key, expected),
    )
}

// ---------------------------------------------------------------------------------------------
// Scalar parsers
// ---------------------------------------------------------------------------------------------

/// Parses a boolean: true/false, 1/0, yes/no, on/off (ASCII case-insensitive, surrounding
/// whitespace ignored).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(BOOL_EXPECTED.to_string()),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SizeError {
    Syntax,
    TooLarge,
}

fn parse_size_inner(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let int_part = &s[..int_end];
    if int_part.is_empty() {
        return Err(SizeError::Syntax);
    }
    let mut rest = &s[int_end..];
    let mut frac_part = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_end = after_dot
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dot.len());
        frac_part = &after_dot[..frac_end];
        if frac_part.is_empty() {
            return Err(SizeError::Syntax);
        }
        rest = &after_dot[frac_end..];
    }
    let shift: u32 = match rest.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(SizeError::Syntax),
    };
    let mut whole: u64 = 0;
    for d in int_part.bytes() {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u64::from(d - b'0')))
            .ok_or(SizeError::TooLarge)?;
    }
    if whole > (u64::MAX >> shift) {
        return Err(SizeError::TooLarge);
    }
    let whole = whole << shift;
    // floor(0.frac × 2^shift), exactly: double the decimal fraction `shift` times and
    // collect the carries out of the units digit.
    let mut digits: Vec<u8> = frac_part.bytes().map(|b| b - b'0').collect();
    let mut frac_bytes: u64 = 0;
    for _ in 0..shift {
        let mut carry = 0u8;
        for d in digits.iter_mut().rev() {
            let v = *d * 2 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        frac_bytes = frac_bytes * 2 + u64::from(carry);
    }
    whole.checked_add(frac_bytes).ok_or(SizeError::TooLarge)
}

/// Parses a byte size: plain bytes (`5242880`), or a number (decimals allowed, `1.5MB`)
/// followed by K, KB, KiB, M, MB, MiB, G, GB or GiB (case-insensitive). K, M and G are
/// 1024-based. A fractional byte count is rounded down. No range check.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_inner(s).map_err(|e| match e {
        SizeError::Syntax => SIZE_EXPECTED.to_string(),
        SizeError::TooLarge => "size is too large".to_string(),
    })
}

/// Validates a part size given as text; the error texts are user-facing.
fn part_size_value(raw: &str) -> Result<u64, String> {
    let shown = echo(raw.trim());
    match parse_size_inner(raw) {
        Err(SizeError::Syntax) => Err(format!("invalid part-size '{shown}': {SIZE_EXPECTED}")),
        Err(SizeError::TooLarge) => Err(format!(
            "part-size {shown} is above the S3 maximum of 5 GiB ({MAX_PART_SIZE} bytes)"
        )),
        Ok(n) if n < MIN_PART_SIZE => Err(format!(
            "part-size {shown} ({n} bytes) is below the S3 minimum of 5 MiB ({MIN_PART_SIZE} bytes)"
        )),
        Ok(n) if n > MAX_PART_SIZE => Err(format!(
            "part-size {shown} ({n} bytes) is above the S3 maximum of 5 GiB ({MAX_PART_SIZE} bytes)"
        )),
        Ok(n) => Ok(n),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum DurationError {
    Syntax,
    MissingUnit,
    Negative,
    TooLarge,
}

/// Go's limit: a duration is an int64 count of nanoseconds.
const MAX_DURATION_NANOS: u128 = i64::MAX as u128;

fn parse_duration_inner(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Syntax);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_end];
        rest = &rest[int_end..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_end = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            frac_part = &after_dot[..frac_end];
            rest = &after_dot[frac_end..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Syntax);
        }
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let nanos_per_unit: u128 = match unit {
            "" => return Err(DurationError::MissingUnit),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::Syntax),
        };
        let mut whole: u128 = 0;
        for d in int_part.bytes() {
            whole = whole * 10 + u128::from(d - b'0');
            if whole > MAX_DURATION_NANOS {
                return Err(DurationError::TooLarge);
            }
        }
        // Fraction digits beyond 18 are below a nanosecond even for hours; like Go, they
        // are truncated.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac_part.bytes().take(18) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total += whole * nanos_per_unit + frac * nanos_per_unit / scale;
        if total > MAX_DURATION_NANOS {
            return Err(DurationError::TooLarge);
        }
    }
    // total ≤ i64::MAX, so it fits in u64.
    Ok(Duration::from_nanos(
        u64::try_from(total).unwrap_or(u64::MAX),
    ))
}

/// Parses a Go-style duration: a bare `0`, or a sequence of numbers with units (`ns`, `us`
/// or `µs`, `ms`, `s`, `m`, `h`), e.g. `500ms`, `1.5s`, `1h30m`. Negative values and bare
/// numbers other than 0 are rejected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_inner(s).map_err(|e| duration_reason(&e))
}

fn duration_reason(e: &DurationError) -> String {
    match e {
        DurationError::Syntax => DURATION_EXPECTED.to_string(),
        DurationError::MissingUnit => format!("missing unit; {DURATION_EXPECTED}"),
        DurationError::Negative => {
            format!("negative durations are not allowed; {DURATION_EXPECTED}")
        }
        DurationError::TooLarge => {
            format!("duration is too large (at most about 292 years); {DURATION_EXPECTED}")
        }
    }
}

fn duration_value(key: &str, raw: &str) -> Result<Duration, ConfigError> {
    parse_duration_inner(raw).map_err(|e| {
        let expected = match e {
            DurationError::Syntax => DURATION_EXPECTED.to_string(),
            DurationError::MissingUnit => {
                format!("{DURATION_EXPECTED} (a number needs a unit, e.g. 5s)")
            }
            DurationError::Negative => {
                format!("{DURATION_EXPECTED} (negative durations are not allowed)")
            }
            DurationError::TooLarge => format!("{DURATION_EXPECTED} (too large)"),
        };
        invalid(key, raw.trim(), &expected)
    })
}

fn with_fraction(value: u128, unit: u128, digits: usize) -> String {
    let whole = value / unit;
    let rem = value % unit;
    if rem == 0 {
        return whole.to_string();
    }
    let frac = format!("{rem:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Formats a duration in a canonical Go-like form that [`parse_duration`] reads back:
/// `0s`, `100ns`, `250µs`, `1.5ms`, `500ms`, `1s`, `1.5s`, `1m`, `1m30s`, `1h30m`, `2h0.5s`.
/// Unlike Go, zero components are left out (`1m`, not `1m0s`).
pub fn format_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".to_string();
    }
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}\u{b5}s", with_fraction(n, 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{}ms", with_fraction(n, 1_000_000, 6));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = (n / 60_000_000_000) % 60;
    let sec_nanos = n % 60_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if sec_nanos > 0 {
        out.push_str(&format!("{}s", with_fraction(sec_nanos, 1_000_000_000, 9)));
    }
    out
}

fn concurrency_value(raw: &str) -> Result<usize, String> {
    let t = raw.trim();
    match t.parse::<usize>() {
        Ok(n) if t.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_CONCURRENCY).contains(&n) => {
            Ok(n)
        }
        _ => Err(format!(
            "expected a whole number from 1 to {MAX_CONCURRENCY}"
        )),
    }
}

fn page_count_value(raw: &str) -> Result<u32, String> {
    let t = raw.trim();
    match t.parse::<u32>() {
        Ok(n) if n >= 1 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "expected a whole number of pages from 1 to {}",
            u32::MAX
        )),
    }
}

/// `truncate-page-n`: `Some(pages)`, or `None` = disabled (`off` or a negative number).
fn truncate_value(raw: &str) -> Result<Option<u32>, String> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Some(digits) = t.strip_prefix('-') {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if digits.bytes().all(|b| b == b'0') {
                return Err(truncate_zero_message());
            }
            return Ok(None);
        }
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        if t.bytes().all(|b| b == b'0') {
            return Err(truncate_zero_message());
        }
        if let Ok(n) = t.parse::<u32>() {
            return Ok(Some(n));
        }
    }
    Err(format!(
        "expected a whole number of pages from 1 to {}, or 'off' to disable TRUNCATE checkpoints",
        u32::MAX
    ))
}

fn truncate_zero_message() -> String {
    format!(
        "Litestream treats 0 as \"use the default\" ({DEFAULT_TRUNCATE_PAGE_N}); \
         use 'off' to disable TRUNCATE checkpoints, or a positive number of pages"
    )
}

const LEASE_EXPECTED: &str = "expected on or off (also true/false, 1/0, yes/no)";

/// `lease-ttl`: a duration of at least [`MIN_LEASE_TTL`].
fn lease_ttl_value(raw: &str) -> Result<Duration, String> {
    let expected = "expected a duration of at least 1s such as 5s, 30s or 1m";
    match parse_duration_inner(raw) {
        Ok(d) if d >= MIN_LEASE_TTL => Ok(d),
        Ok(_) => Err(format!(
            "{expected} (shorter leases would expire between renewals)"
        )),
        Err(DurationError::MissingUnit) => {
            Err(format!("{expected} (a number needs a unit, e.g. 30s)"))
        }
        Err(_) => Err(expected.to_string()),
    }
}

/// `lease-owner`: printable text of at most [`MAX_LEASE_OWNER_CHARS`] characters.
fn lease_owner_value(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() || has_control(t) || t.chars().count() > MAX_LEASE_OWNER_CHARS {
        return Err(format!(
            "expected a non-empty name of at most {MAX_LEASE_OWNER_CHARS} printable characters, such as web-1:4242; use NULL for the default hostname:pid"
        ));
    }
    Ok(t.to_string())
}

/// Litestream's default lease owner: `hostname:pid`, or `pid-<pid>` when the host has no name.
pub fn default_lease_owner(env: &dyn Fn(&str) -> Option<String>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| env("HOSTNAME"))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !has_control(h));
    let pid = std::process::id();
    match host {
        Some(h) => format!("{h}:{pid}"),
        None => format!("pid-{pid}"),
    }
}

/// `levels`: the compaction intervals of levels 1.. in order; empty = no compaction (`off`).
fn levels_value(raw: &str) -> Result<Vec<Duration>, String> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = t.split(',').map(str::trim).collect();
    if parts.len() > MAX_LEVELS {
        return Err(format!(
            "{} levels given, at most {MAX_LEVELS} (level 9 holds snapshots); {LEVELS_EXPECTED}",
            parts.len()
        ));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let level = i + 1;
        match parse_duration_inner(part) {
            Ok(d) if !d.is_zero() => out.push(d),
            Ok(_) => {
                return Err(format!(
                    "level {level} interval '{}' must be above 0; {LEVELS_EXPECTED}",
                    echo(part)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "level {level} interval '{}': {}; {LEVELS_EXPECTED}",
                    echo(part),
                    match e {
                        DurationError::MissingUnit => "a number needs a unit, e.g. 30s",
                        DurationError::Negative => "negative durations are not allowed",
                        DurationError::TooLarge => "too large",
                        DurationError::Syntax => "not a duration",
                    }
                ))
            }
        }
    }
    Ok(out)
}

fn format_levels(levels: &[Duration]) -> String {
    if levels.is_empty() {
        return "off".to_string();
    }
    levels
        .iter()
        .map(|d| format_duration(*d))
        .collect::<Vec<_>>()
        .join(",")
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'
}

fn bucket_value(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() || t.len() > 255 || !t.chars().all(is_name_char) {
        let mut msg = "expected a bucket name (letters, digits, '.', '-' and '_')".to_string();
        if t.contains('/') {
            msg.push_str("; put the key prefix in 'path'");
        }
        return Err(msg);
    }
    Ok(t.to_string())
}

fn region_value(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() || t.len() > 255 || !t.chars().all(is_name_char) {
        return Err("expected a region name such as us-east-1".to_string());
    }
    Ok(t.to_string())
}

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

/// True for hosts that Litestream reaches over plain `http://` when an endpoint in a URL
/// query has no scheme: `localhost`, `*.localhost`, `*.local`, loopback and private IPs.
fn is_local_host(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    let h = h.trim_start_matches('[').trim_end_matches(']');
    if h == "localhost" || h.ends_with(".localhost") || h.ends_with(".local") {
        return true;
    }
    if let Ok(ip) = h.parse::<Ipv4Addr>() {
        return ip.is_loopback() || ip.is_private();
    }
    if let Ok(ip) = h.parse::<Ipv6Addr>() {
        return ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00;
    }
    false
}

/// Splits `host[:port]` (IPv6 in brackets) and validates both parts.
fn split_host_port(hp: &str) -> Result<(&str, Option<&str>), String> {
    let (host, port) = if hp.starts_with('[') {
        let close = hp
            .find(']')
            .ok_or_else(|| "unclosed '[' in the IPv6 address".to_string())?;
        let inner = &hp[1..close];
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err("invalid IPv6 address".to_string());
        }
        let after = &hp[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("unexpected text after the IPv6 address".to_string()),
        };
        (&hp[..=close], port)
    } else {
        match hp.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    };
    if !host.starts_with('[') && (host.is_empty() || !host.chars().all(is_name_char)) {
        return Err("expected a host name or IP address".to_string());
    }
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && matches!(p.parse::<u16>(), Ok(n) if n > 0);
        if !ok {
            return Err("expected a port from 1 to 65535".to_string());
        }
    }
    Ok((host, port))
}

/// Normalizes an endpoint to `scheme://host[:port]`. Without a scheme, `https://` is added,
/// or `http://` for local hosts when `local_http` (Litestream's rule for URL queries).
fn endpoint_value(raw: &str, local_http: bool) -> Result<String, String> {
    const EXPECTED: &str =
        "expected an endpoint such as https://s3.example.com or http://127.0.0.1:9000";
    let t = raw.trim();
    if t.is_empty() {
        return Err(EXPECTED.to_string());
    }
    let (scheme, rest) = match t.find("://") {
        Some(i) => (Some(t[..i].to_ascii_lowercase()), &t[i + 3..]),
        None => (None, t),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(
            "credentials in the endpoint are not supported; use access-key-id and secret-access-key"
                .to_string(),
        );
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("{EXPECTED} (scheme, host and port only, no path)"));
    }
    let (host, _port) = split_host_port(rest).map_err(|e| format!("{e}; {EXPECTED}"))?;
    let scheme = match scheme.as_deref() {
        Some("http") => "http",
        Some("https") => "https",
        Some(other) => {
            return Err(format!(
                "unsupported scheme '{}://', only http:// and https://",
                echo(other)
            ))
        }
        None if local_http && is_local_host(host) => "http",
        None => "https",
    };
    Ok(format!("{scheme}://{rest}"))
}

/// The host of a normalized endpoint, without port.
fn endpoint_host(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = split_host_port(rest).map_or(rest, |(h, _)| h);
    host.to_ascii_lowercase()
}

fn is_r2_endpoint(endpoint: &str) -> bool {
    let host = endpoint_host(endpoint);
    host == "r2.cloudflarestorage.com" || host.ends_with(".r2.cloudflarestorage.com")
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

/// An `s3://` URL, with the settings it carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct S3Url {
    bucket: String,
    path: String,
    endpoint: Option<String>,
    region: Option<String>,
    force_path_style: Option<bool>,
    skip_verify: Option<bool>,
    part_size: Option<u64>,
    concurrency: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ReplicaUrl {
    S3(S3Url),
    File(PathBuf),
}

impl ReplicaUrl {
    fn scheme(&self) -> &'static str {
        match self {
            ReplicaUrl::S3(_) => "s3",
            ReplicaUrl::File(_) => "file",
        }
    }

    /// Canonical text; parsing it gives the same value back.
    fn canonical(&self) -> String {
        match self {
            ReplicaUrl::File(dir) => {
                format!("file://{}", encode(&dir.to_string_lossy(), PATH_SAFE))
            }
            ReplicaUrl::S3(u) => {
                let mut out = format!("s3://{}", u.bucket);
                if !u.path.is_empty() {
                    out.push('/');
                    out.push_str(&encode(&u.path, PATH_SAFE));
                }
                let mut query: Vec<(&str, String)> = Vec::new();
                if let Some(e) = &u.endpoint {
                    query.push(("endpoint", e.clone()));
                }
                if let Some(r) = &u.region {
                    query.push(("region", r.clone()));
                }
                if let Some(b) = u.force_path_style {
                    query.push(("force-path-style", b.to_string()));
                }
                if let Some(b) = u.skip_verify {
                    query.push(("skip-verify", b.to_string()));
                }
                if let Some(n) = u.part_size {
                    query.push(("part-size", n.to_string()));
                }
                if let Some(n) = u.concurrency {
                    query.push(("concurrency", n.to_string()));
                }
                for (i, (k, v)) in query.iter().enumerate() {
                    out.push(if i == 0 { '?' } else { '&' });
                    out.push_str(k);
                    out.push('=');
                    out.push_str(&encode(v, QUERY_SAFE));
                }
                out
            }
        }
    }
}

/// Characters kept as they are in a path (besides ASCII alphanumerics).
const PATH_SAFE: &str = "-._~/!$&'()*+,;=:@";
/// Characters kept as they are in a query value (besides ASCII alphanumerics).
const QUERY_SAFE: &str = "-._~/!$'()*,;:@";

fn encode(s: &str, safe: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || (b.is_ascii() && safe.contains(char::from(b))) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "invalid percent-encoding".to_string())?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding is not valid UTF-8".to_string())
}

/// Go's `path.Clean` for a path made relative: no empty or `.` segments, `..` resolved,
/// no leading or trailing `/`.
fn clean_url_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// What the host of an `s3://` URL says (Litestream's `s3.ParseHost`).
#[derive(Default)]
struct HostInfo {
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
}

/// `<bucket>.s3.<region><suffix>` or `s3.<region><suffix>` → (bucket, region).
fn split_provider_host<'a>(host: &'a str, suffix: &str) -> Option<(&'a str, &'a str)> {
    let stem = host.strip_suffix(suffix)?;
    let (pre, region) = stem.rsplit_once('.')?;
    if region.is_empty() {
        return None;
    }
    if pre == "s3" {
        return Some(("", region));
    }
    let bucket = pre.strip_suffix(".s3")?;
    Some((bucket, region))
}

fn parse_s3_host(host: &str) -> HostInfo {
    let lower = host.to_ascii_lowercase();
    // MinIO style: BUCKET.HOST:PORT (not for .com hosts).
    if host.contains(':') && !lower.contains(".com") {
        return match host.split_once('.') {
            Some((bucket, rest)) => HostInfo {
                bucket: bucket.to_string(),
                region: Some(DEFAULT_REGION.to_string()),
                endpoint: Some(format!("http://{rest}")),
            },
            None => HostInfo::default(),
        };
    }
    // AWS virtual-hosted style: BUCKET.s3[.REGION].amazonaws.com
    if let Some(stem) = lower.strip_suffix(".amazonaws.com") {
        if let Some(bucket) = stem.strip_suffix(".s3") {
            if !bucket.is_empty() {
                return HostInfo {
                    bucket: host[..bucket.len()].to_string(),
                    ..HostInfo::default()
                };
            }
        }
        if let Some((pre, region)) = stem.rsplit_once('.') {
            if let Some(bucket) = pre.strip_suffix(".s3") {
                if !bucket.is_empty() && !region.is_empty() {
                    return HostInfo {
                        bucket: host[..bucket.len()].to_string(),
                        region: Some(region.to_string()),
                        endpoint: None,
                    };
                }
            }
        }
    }
    // DigitalOcean Spaces: [BUCKET.]REGION.digitaloceanspaces.com
    if let Some(stem) = lower.strip_suffix(".digitaloceanspaces.com") {
        let (bucket, region) = stem.rsplit_once('.').unwrap_or(("", stem));
        if !region.is_empty() {
            return HostInfo {
                bucket: host[..bucket.len()].to_string(),
                region: Some(region.to_string()),
                endpoint: Some(format!("https://{region}.digitaloceanspaces.com")),
            };
        }
    }
    // Backblaze B2: [BUCKET.]s3.REGION.backblazeb2.com
    if let Some((bucket, region)) = split_provider_host(&lower, ".backblazeb2.com") {
        return HostInfo {
            bucket: host[..bucket.len()].to_string(),
            region: Some(region.to_string()),
            endpoint: Some(format!("https://s3.{region}.backblazeb2.com")),
        };
    }
    // Filebase: [BUCKET.]s3.filebase.com
    if lower == "s3.filebase.com" || lower.ends_with(".s3.filebase.com") {
        let bucket = lower.strip_suffix(".s3.filebase.com").map_or(0, str::len);
        return HostInfo {
            bucket: host[..bucket].to_string(),
            region: None,
            endpoint: Some("https://s3.filebase.com".to_string()),
        };
    }
    // Scaleway: [BUCKET.]s3.REGION.scw.cloud
    if let Some((bucket, region)) = split_provider_host(&lower, ".scw.cloud") {
        return HostInfo {
            bucket: host[..bucket.len()].to_string(),
            region: Some(region.to_string()),
            endpoint: Some(format!("https://s3.{region}.scw.cloud")),
        };
    }
    HostInfo {
        bucket: host.to_string(),
        ..HostInfo::default()
    }
}

/// Parses a replica URL; the error is the reason only (the caller adds the URL).
fn parse_replica_url(raw: &str) -> Result<ReplicaUrl, String> {
    let s = raw.trim();
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| URL_EXPECTED.to_string())?;
    if s.contains('#') {
        return Err("a '#' fragment is not allowed (write '#' as %23)".to_string());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "s3" => parse_s3_url(rest).map(ReplicaUrl::S3),
        "file" => parse_file_url(rest).map(ReplicaUrl::File),
        other => Err(format!(
            "unsupported scheme '{}://'; {URL_EXPECTED}",
            echo(other)
        )),
    }
}

fn parse_file_url(rest: &str) -> Result<PathBuf, String> {
    if rest.contains('?') {
        return Err("a file:// url takes no query parameters".to_string());
    }
    if !rest.starts_with('/') {
        return Err(
            "expected an absolute directory after file://, e.g. file:///var/backups/app.db (three slashes)"
                .to_string(),
        );
    }
    let decoded = decode(rest, false)?;
    if has_control(&decoded) {
        return Err("control characters are not allowed in the path".to_string());
    }
    Ok(PathBuf::from(format!("/{}", clean_url_path(&decoded))))
}

fn parse_s3_url(rest: &str) -> Result<S3Url, String> {
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, raw_path) = before_query.split_once('/').unwrap_or((before_query, ""));
    if authority.contains('@') {
        return Err(
            "credentials in the url are not supported; use access-key-id and secret-access-key"
                .to_string(),
        );
    }
    if authority.is_empty() {
        return Err(format!("missing bucket; {URL_EXPECTED}"));
    }
    if authority
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("arn:"))
    {
        return Err(
            "S3 access point ARNs are not supported; use s3://BUCKET/PATH (with endpoint= and region= if needed)"
                .to_string(),
        );
    }
    let mut info = parse_s3_host(authority);
    if info.bucket.is_empty() {
        return Err(format!("missing bucket; {URL_EXPECTED}"));
    }
    if let Some(e) = info.endpoint.take() {
        let e = endpoint_value(&e, false)
            .map_err(|reason| format!("invalid host '{}': {reason}", echo(authority)))?;
        info.endpoint = Some(e);
    }
    if let Some(r) = info.region.take() {
        let r = region_value(&r)
            .map_err(|reason| format!("invalid host '{}': {reason}", echo(authority)))?;
        info.region = Some(r);
    }
    let bucket = bucket_value(&info.bucket).map_err(|e| {
        if authority.contains(':') {
            format!(
                "invalid bucket '{}': a host with a port is read as BUCKET.HOST:PORT (MinIO style); otherwise use s3://BUCKET/PATH?endpoint=…",
                echo(&info.bucket)
            )
        } else {
            format!("invalid bucket '{}': {e}", echo(&info.bucket))
        }
    })?;
    let path_text = decode(raw_path, false)?;
    if has_control(&path_text) {
        return Err("control characters are not allowed in the path".to_string());
    }
    let mut url = S3Url {
        bucket,
        path: clean_url_path(&path_text),
        endpoint: info.endpoint,
        region: info.region,
        ..S3Url::default()
    };

    let mut seen: Vec<&'static str> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name_raw, value_raw) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name_raw, true)?;
        let value = decode(value_raw, true)?;
        let canonical: &'static str = match name.as_str() {
            "endpoint" => "endpoint",
            "region" => "region",
            "force-path-style" | "forcePathStyle" => "force-path-style",
            "skip-verify" | "skipVerify" => "skip-verify",
            "part-size" | "partSize" => "part-size",
            "concurrency" => "concurrency",
            _ => {
                return Err(format!(
                    "unknown query parameter '{}' (accepted: {QUERY_PARAMS})",
                    echo(&name)
                ))
            }
        };
        if seen.contains(&canonical) {
            return Err(format!(
                "query parameter '{canonical}' is given more than once"
            ));
        }
        seen.push(canonical);
        // Like Litestream (Go's query.Get), an empty value counts as not given.
        if value.trim().is_empty() {
            continue;
        }
        let bad =
            |reason: String| format!("query parameter {canonical}='{}': {reason}", echo(&value));
        match canonical {
            "endpoint" => url.endpoint = Some(endpoint_value(&value, true).map_err(bad)?),
            "region" => url.region = Some(region_value(&value).map_err(bad)?),
            "force-path-style" => url.force_path_style = Some(parse_bool(&value).map_err(bad)?),
            "skip-verify" => url.skip_verify = Some(parse_bool(&value).map_err(bad)?),
            "part-size" => url.part_size = Some(part_size_value(&value)?),
            _ => url.concurrency = Some(concurrency_value(&value).map_err(bad)?),
        }
    }
    Ok(url)
}

fn url_error(raw: &str, reason: &str) -> ConfigError {
    let t = raw.trim();
    // A URL with '@' may carry credentials: never echo it.
    let message = if t.contains('@') {
        format!("invalid value for url: {reason}")
    } else {
        format!("invalid value '{}' for url: {reason}", echo(t))
    };
    ConfigError::new(ConfigErrorKind::InvalidValue, message)
}

// ---------------------------------------------------------------------------------------------
// File paths
// ---------------------------------------------------------------------------------------------

/// Lexically cleans an absolute path: drops `.`, resolves `..`.
fn clean_abs_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn expand_home(p: &str, home: Option<String>) -> PathBuf {
    if p == "~" || p.starts_with("~/") {
        if let Some(h) = home.filter(|h| !h.is_empty()) {
            return PathBuf::from(h).join(p.trim_start_matches('~').trim_start_matches('/'));
        }
    }
    PathBuf::from(p)
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// A stored value; its `Debug` output hides secrets.
#[derive(Clone, PartialEq, Eq)]
struct Stored {
    text: String,
    secret: bool,
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            fmt::Debug::fmt(REDACTED, f)
        } else {
            fmt::Debug::fmt(&self.text, f)
        }
    }
}

/// The keys that were set, as normalized strings. `Debug` output hides secrets.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    values: BTreeMap<&'static str, Stored>,
    /// Current directory when a relative `path` was set; a `file` replica directory is
    /// resolved against it.
    path_base: Option<PathBuf>,
}

type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Settings {
    /// Empty settings (every key at its default).
    pub fn new() -> Self {
        Self::default()
    }

    fn stored(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|s| s.text.as_str())
    }

    /// Validates and normalizes `value` for `key`, stores it, and returns the value now in
    /// effect (as [`Settings::get`]). `None` resets the key to its default. Secrets come
    /// back as [`REDACTED`].
    pub fn set(&mut self, key: &str, value: Option<&str>) -> Result<Option<String>, ConfigError> {
        let spec = lookup(key)?;
        match value {
            None => {
                self.values.remove(spec.name);
                if spec.name == "path" {
                    self.path_base = None;
                }
            }
            Some(raw) => {
                let text = normalize(spec, raw)?;
                if spec.name == "path" {
                    self.path_base = if Path::new(&text).is_relative() {
                        std::env::current_dir().ok()
                    } else {
                        None
                    };
                }
                self.values.insert(
                    spec.name,
                    Stored {
                        text,
                        secret: spec.secret,
                    },
                );
            }
        }
        self.get(spec.name)
    }

    /// The value in effect for `key`: the value that was set, else the default as it would
    /// apply now (e.g. `force-path-style` is `true` once an endpoint is set, `concurrency`
    /// is `2` for a Cloudflare R2 endpoint, `type` follows the url or bucket, values in the
    /// url's query apply), else `None`. Secrets come back as [`REDACTED`].
    pub fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let spec = lookup(key)?;
        Ok(self.value_of(spec, &process_env))
    }

    fn value_of(&self, spec: &KeySpec, env: EnvFn<'_>) -> Option<String> {
        if spec.secret {
            return self.stored(spec.name).map(|_| REDACTED.to_string());
        }
        let url = self.url();
        let s3url = match &url {
            Some(ReplicaUrl::S3(u)) => Some(u),
            _ => None,
        };
        if spec.name == "path" {
            let p = self.stored("path")?;
            if self.stored("type") == Some("file") {
                if let Ok(dir) = self.file_dir(p, env) {
                    return Some(dir.to_string_lossy().into_owned());
                }
            }
            return Some(p.to_string());
        }
        if let Some(v) = self.stored(spec.name) {
            return Some(v.to_string());
        }
        match spec.name {
            "type" => self.derived_type(url.as_ref()).map(str::to_string),
            "force-path-style" => Some(
                s3url
                    .and_then(|u| u.force_path_style)
                    .unwrap_or_else(|| self.endpoint(s3url).is_some())
                    .to_string(),
            ),
            "skip-verify" => Some(
                s3url
                    .and_then(|u| u.skip_verify)
                    .unwrap_or(false)
                    .to_string(),
            ),
            "part-size" => Some(
                s3url
                    .and_then(|u| u.part_size)
                    .unwrap_or(DEFAULT_PART_SIZE)
                    .to_string(),
            ),
            "concurrency" => Some(self.concurrency(s3url).to_string()),
            "lease" => Some(
                if self.derived_type(url.as_ref()) == Some("file") {
                    "off"
                } else {
                    "on"
                }
                .to_string(),
            ),
            "lease-owner" => Some(default_lease_owner(env)),
            _ if spec.default.is_empty() => None,
            _ => Some(spec.default.to_string()),
        }
    }

    /// The stored url, parsed (it was validated when set).
    fn url(&self) -> Option<ReplicaUrl> {
        self.stored("url").and_then(|u| parse_replica_url(u).ok())
    }

    fn derived_type(&self, url: Option<&ReplicaUrl>) -> Option<&'static str> {
        match (self.stored("type"), url) {
            (Some("file"), _) => Some("file"),
            (Some(_), _) => Some("s3"),
            (None, Some(u)) => Some(u.scheme()),
            (None, None) if self.stored("bucket").is_some() => Some("s3"),
            _ => None,
        }
    }

    fn endpoint(&self, url: Option<&S3Url>) -> Option<String> {
        self.stored("endpoint")
            .map(str::to_string)
            .or_else(|| url.and_then(|u| u.endpoint.clone()))
    }

    fn concurrency(&self, url: Option<&S3Url>) -> usize {
        if let Some(n) = self.stored("concurrency").and_then(|v| v.parse().ok()) {
            return n;
        }
        if let Some(n) = url.and_then(|u| u.concurrency) {
            return n;
        }
        match self.endpoint(url) {
            Some(e) if is_r2_endpoint(&e) => R2_DEFAULT_CONCURRENCY,
            _ => DEFAULT_CONCURRENCY,
        }
    }

    fn file_dir(&self, p: &str, env: EnvFn<'_>) -> Result<PathBuf, ConfigError> {
        let expanded = expand_home(p, env("HOME"));
        if expanded.is_absolute() {
            return Ok(clean_abs_path(&expanded));
        }
        let base = match &self.path_base {
            Some(b) => b.clone(),
            None => std::env::current_dir().map_err(|e| {
                ConfigError::new(
                    ConfigErrorKind::Incomplete,
                    format!("cannot make the file replica path absolute: current directory unknown ({e}); set 'path' to an absolute directory"),
                )
            })?,
        };
        Ok(clean_abs_path(&base.join(expanded)))
    }

    /// All keys in table order, as a JSON object of strings (null = unset, no default);
    /// secrets as `"********"`. Key order in the `Value` follows serde_json's map (table
    /// order only with its `preserve_order` feature); [`Settings::to_json_string`] always
    /// keeps table order.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for spec in KEYS.iter() {
            let v = self.value_of(spec, &process_env);
            map.insert(
                spec.name.to_string(),
                v.map_or(serde_json::Value::Null, serde_json::Value::String),
            );
        }
        serde_json::Value::Object(map)
    }

    /// [`Settings::to_json`] as compact text, keys always in table order.
    pub fn to_json_string(&self) -> String {
        let mut out = String::from("{");
        for (i, spec) in KEYS.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = self.value_of(spec, &process_env);
            let value = v.map_or(serde_json::Value::Null, serde_json::Value::String);
            out.push_str(&serde_json::Value::String(spec.name.to_string()).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }

    /// Checks the whole configuration for starting replication and produces the typed
    /// configuration. Reads the environment (`AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// `LITESTREAM_ACCESS_KEY_ID`, `LITESTREAM_SECRET_ACCESS_KEY`, `HOME`).
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        self.resolve_with_env(&process_env)
    }

    fn resolve_with_env(&self, env: EnvFn<'_>) -> Result<ResolvedConfig, ConfigError> {
        let url = match self.stored("url") {
            Some(text) => Some(parse_replica_url(text).map_err(|e| url_error(text, &e))?),
            None => None,
        };
        let bucket = self.stored("bucket");
        let path = self.stored("path");

        if url.is_some() {
            let set: Vec<&str> = [("bucket", bucket), ("path", path)]
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| *k)
                .collect();
            if !set.is_empty() {
                let resets: Vec<String> = set
                    .iter()
                    .map(|k| format!("litestream_configure('{k}', NULL)"))
                    .collect();
                return Err(ConfigError::new(
                    ConfigErrorKind::Conflict,
                    format!(
                        "'url' cannot be combined with 'bucket' or 'path' (set: {}); reset {} with {}, or reset the url with litestream_configure('url', NULL)",
                        set.join(", "),
                        if set.len() == 1 { "it" } else { "them" },
                        resets.join(" and ")
                    ),
                ));
            }
        }

        let replica_type = match (self.stored("type"), &url) {
            (Some(t), Some(u)) if t != u.scheme() => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Conflict,
                    format!(
                        "type '{t}' contradicts the url scheme '{}://'; reset the type with litestream_configure('type', NULL) or change the url",
                        u.scheme()
                    ),
                ))
            }
            (Some(t), _) => t.to_string(),
            (None, Some(u)) => u.scheme().to_string(),
            (None, None) if bucket.is_some() => "s3".to_string(),
            (None, None) if path.is_some() => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Incomplete,
                    "'bucket' is not set: set 'bucket' for an S3 replica, or set 'type' to 'file' to use 'path' as the replica directory",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Incomplete,
                    "no replica configured: set 'bucket' and 'path' (S3) or 'url' (s3://… or file:///…)",
                ))
            }
        };

        let s3url = match &url {
            Some(ReplicaUrl::S3(u)) => Some(u),
            _ => None,
        };
        let part_size = match self.stored("part-size") {
            Some(v) => v.parse().unwrap_or(DEFAULT_PART_SIZE),
            None => s3url.and_then(|u| u.part_size).unwrap_or(DEFAULT_PART_SIZE),
        };
        let concurrency = self.concurrency(s3url);

        let target = if replica_type == "file" {
            if bucket.is_some() {
                return Err(ConfigError::new(
                    ConfigErrorKind::Conflict,
                    "'bucket' is set but the replica type is file; reset it with litestream_configure('bucket', NULL)",
                ));
            }
            let dir =
                match (&url, path) {
                    (Some(ReplicaUrl::File(dir)), _) => dir.clone(),
                    (_, Some(p)) => self.file_dir(p, env)?,
                    _ => return Err(ConfigError::new(
                        ConfigErrorKind::Incomplete,
                        "a file replica needs 'path' (the replica directory) or a file:///… url",
                    )),
                };
            ReplicaTarget::File { dir }
        } else {
            let (bucket, path) = match s3url {
                Some(u) => (Some(u.bucket.clone()), u.path.clone()),
                None => (bucket.map(str::to_string), path.unwrap_or("").to_string()),
            };
            let bucket = bucket.ok_or_else(|| {
                ConfigError::new(
                    ConfigErrorKind::Incomplete,
                    "an S3 replica needs 'bucket': set it with litestream_configure('bucket', 'my-bucket')",
                )
            })?;
            if path.is_empty() {
                let message = if s3url.is_some() {
                    "the url has no path: an S3 replica needs a key prefix, use s3://BUCKET/PATH"
                } else {
                    "an S3 replica needs 'path' (the key prefix in the bucket): set it with litestream_configure('path', 'app.db')"
                };
                return Err(ConfigError::new(ConfigErrorKind::Incomplete, message));
            }
            let endpoint = self.endpoint(s3url);
            let region = self
                .stored("region")
                .map(str::to_string)
                .or_else(|| s3url.and_then(|u| u.region.clone()))
                .or_else(|| env("AWS_REGION").filter(|r| !r.trim().is_empty()))
                .or_else(|| env("AWS_DEFAULT_REGION").filter(|r| !r.trim().is_empty()))
                .unwrap_or_else(|| DEFAULT_REGION.to_string());
            let force_path_style = match self.stored("force-path-style") {
                Some(v) => v == "true",
                None => s3url
                    .and_then(|u| u.force_path_style)
                    .unwrap_or(endpoint.is_some()),
            };
            let skip_verify = match self.stored("skip-verify") {
                Some(v) => v == "true",
                None => s3url.and_then(|u| u.skip_verify).unwrap_or(false),
            };
            let (access_key_id, secret_access_key) = credentials(
                self.stored("access-key-id"),
                self.stored("secret-access-key"),
                env,
            )?;
            ReplicaTarget::S3(S3Target {
                bucket,
                path,
                region,
                endpoint,
                force_path_style,
                skip_verify,
                access_key_id,
                secret_access_key,
                part_size,
                concurrency,
            })
        };

        let sync_interval = match self.stored("sync-interval") {
            Some(v) => duration_value("sync-interval", v)?,
            None => DEFAULT_SYNC_INTERVAL,
        };
        let checkpoint_interval = match self.stored("checkpoint-interval") {
            Some(v) => duration_value("checkpoint-interval", v)?,
            None => DEFAULT_CHECKPOINT_INTERVAL,
        };
        let min_checkpoint_page_count = match self.stored("min-checkpoint-page-count") {
            Some(v) => {
                page_count_value(v).map_err(|e| invalid("min-checkpoint-page-count", v, &e))?
            }
            None => DEFAULT_MIN_CHECKPOINT_PAGE_COUNT,
        };
        let truncate_page_n = match self.stored("truncate-page-n") {
            Some(v) => truncate_value(v).map_err(|e| invalid("truncate-page-n", v, &e))?,
            None => Some(DEFAULT_TRUNCATE_PAGE_N),
        };
        let lease = match self.stored("lease") {
            Some("on") if replica_type == "file" => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Conflict,
                    "lease 'on' needs an S3 replica (it relies on S3 conditional writes); a file replica has no lease: reset it with litestream_configure('lease', NULL)",
                ))
            }
            Some(v) => v == "on",
            None => replica_type != "file",
        };
        let lease_ttl = match self.stored("lease-ttl") {
            Some(v) => lease_ttl_value(v).map_err(|e| invalid("lease-ttl", v, &e))?,
            None => DEFAULT_LEASE_TTL,
        };
        let lease_owner = match self.stored("lease-owner") {
            Some(v) => v.to_string(),
            None => default_lease_owner(env),
        };

        let levels = match self.stored("levels") {
            Some(v) => levels_value(v).map_err(|e| invalid("levels", v, &e))?,
            None => DEFAULT_LEVELS.to_vec(),
        };
        let l0_retention = match self.stored("l0-retention") {
            Some(v) => duration_value("l0-retention", v)?,
            None => DEFAULT_L0_RETENTION,
        };
        let snapshot_interval = match self.stored("snapshot-interval") {
            Some(v) => duration_value("snapshot-interval", v)?,
            None => DEFAULT_SNAPSHOT_INTERVAL,
        };
        let snapshot_retention = match self.stored("snapshot-retention") {
            Some(v) => duration_value("snapshot-retention", v)?,
            None => DEFAULT_SNAPSHOT_RETENTION,
        };
        let retention = self.stored("retention") != Some("off");

        Ok(ResolvedConfig {
            target,
            sync_interval,
            min_checkpoint_page_count,
            checkpoint_interval: if checkpoint_interval.is_zero() {
                None
            } else {
                Some(checkpoint_interval)
            },
            truncate_page_n,
            part_size,
            concurrency,
            lease,
            lease_ttl,
            lease_owner,
            levels,
            l0_retention: (!l0_retention.is_zero()).then_some(l0_retention),
            snapshot_interval: (!snapshot_interval.is_zero()).then_some(snapshot_interval),
            snapshot_retention,
            retention,
        })
    }
}

/// Static credentials: both keys, or neither (then `LITESTREAM_ACCESS_KEY_ID` and
/// `LITESTREAM_SECRET_ACCESS_KEY` when both are present, else `None` = AWS default chain).
fn credentials(
    id: Option<&str>,
    secret: Option<&str>,
    env: EnvFn<'_>,
) -> Result<(Option<String>, Option<String>), ConfigError> {
    match (id, secret) {
        (Some(i), Some(s)) => Ok((Some(i.to_string()), Some(s.to_string()))),
        (Some(_), None) => Err(ConfigError::new(
            ConfigErrorKind::Incomplete,
            "'access-key-id' is set but 'secret-access-key' is not: set both (static credentials) or neither (AWS default credential chain)",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            ConfigErrorKind::Incomplete,
            "'secret-access-key' is set but 'access-key-id' is not: set both (static credentials) or neither (AWS default credential chain)",
        )),
        (None, None) => {
            let id = env("LITESTREAM_ACCESS_KEY_ID").filter(|v| !v.is_empty());
            let secret = env("LITESTREAM_SECRET_ACCESS_KEY").filter(|v| !v.is_empty());
            match (id, secret) {
                (Some(i), Some(s)) => Ok((Some(i), Some(s))),
                _ => Ok((None, None)),
            }
        }
    }
}

/// Validates and normalizes one value.
fn normalize(spec: &KeySpec, raw: &str) -> Result<String, ConfigError> {
    let key = spec.name;
    let t = raw.trim();
    match key {
        "type" => match t.to_ascii_lowercase().as_str() {
            "s3" => Ok("s3".to_string()),
            "file" => Ok("file".to_string()),
            _ => Err(invalid(key, t, "expected s3 or file")),
        },
        "url" => parse_replica_url(raw)
            .map(|u| u.canonical())
            .map_err(|e| url_error(raw, &e)),
        "bucket" => bucket_value(raw).map_err(|e| invalid(key, t, &e)),
        "region" => region_value(raw).map_err(|e| invalid(key, t, &e)),
        "path" => {
            if t.is_empty() || has_control(t) {
                Err(invalid(
                    key,
                    t,
                    "expected a non-empty key prefix (S3) or directory (file); use NULL to reset",
                ))
            } else {
                Ok(t.to_string())
            }
        }
        "endpoint" => endpoint_value(raw, false).map_err(|e| {
            if t.contains('@') {
                ConfigError::new(
                    ConfigErrorKind::InvalidValue,
                    format!("invalid value for endpoint: {e}"),
                )
            } else {
                invalid(key, t, &e)
            }
        }),
        "force-path-style" | "skip-verify" => parse_bool(raw)
            .map(|b| b.to_string())
            .map_err(|e| invalid(key, t, &e)),
        "access-key-id" => {
            if t.is_empty() || has_control(t) {
                Err(invalid(key, t, "expected a non-empty access key id"))
            } else {
                Ok(t.to_string())
            }
        }
        "secret-access-key" => {
            if t.is_empty() || has_control(t) {
                // Never echo the value.
                Err(ConfigError::new(
                    ConfigErrorKind::InvalidValue,
                    "invalid value for secret-access-key: expected a non-empty secret without control characters (the value is not shown)",
                ))
            } else {
                Ok(t.to_string())
            }
        }
        "sync-interval" | "checkpoint-interval" => duration_value(key, raw).map(format_duration),
        "part-size" => part_size_value(raw)
            .map(|n| n.to_string())
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidValue, e)),
        "concurrency" => concurrency_value(raw)
            .map(|n| n.to_string())
            .map_err(|e| invalid(key, t, &e)),
        "min-checkpoint-page-count" => page_count_value(raw)
            .map(|n| n.to_string())
            .map_err(|e| invalid(key, t, &e)),
        "truncate-page-n" => truncate_value(raw)
            .map(|v| v.map_or_else(|| "off".to_string(), |n| n.to_string()))
            .map_err(|e| invalid(key, t, &e)),
        "lease" => parse_bool(raw)
            .map(|on| if on { "on" } else { "off" }.to_string())
            .map_err(|_| invalid(key, t, LEASE_EXPECTED)),
        "lease-ttl" => lease_ttl_value(raw)
            .map(format_duration)
            .map_err(|e| invalid(key, t, &e)),
        "lease-owner" => lease_owner_value(raw).map_err(|e| invalid(key, t, &e)),
        "levels" => levels_value(raw)
            .map(|v| format_levels(&v))
            .map_err(|e| invalid(key, t, &e)),
        "l0-retention" | "snapshot-interval" | "snapshot-retention" => {
            duration_value(key, raw).map(format_duration)
        }
        "retention" => parse_bool(raw)
            .map(|b| if b { "on" } else { "off" }.to_string())
            .map_err(|_| invalid(key, t, ON_OFF_EXPECTED)),
        _ => Err(unknown_key(key)),
    }
}

// ---------------------------------------------------------------------------------------------
// Resolved configuration
// ---------------------------------------------------------------------------------------------

/// Where the replica lives.
#[derive(Clone, Debug)]
pub enum ReplicaTarget {
    /// An S3 (or S3-compatible) bucket and key prefix.
    S3(S3Target),
    /// A local directory (Litestream's file replica layout).
    File {
        /// Absolute replica directory.
        dir: PathBuf,
    },
}

/// Everything needed to talk to an S3 replica. `Debug` hides the secret.
#[derive(Clone)]
pub struct S3Target {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix (non-empty).
    pub path: String,
    /// Region: the setting, else the url's, else env `AWS_REGION`, then
    /// `AWS_DEFAULT_REGION`, then `us-east-1`.
    pub region: String,
    /// `scheme://host[:port]`, or `None` for AWS S3.
    pub endpoint: Option<String>,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Skip TLS certificate verification.
    pub skip_verify: bool,
    /// Static credentials (both or neither); `None` = AWS default chain.
    pub access_key_id: Option<String>,
    /// Static credentials (both or neither); never printed.
    pub secret_access_key: Option<String>,
    /// Multipart part size in bytes (5 MiB ..= 5 GiB).
    pub part_size: u64,
    /// Parts uploaded in parallel (1 ..= 64).
    pub concurrency: usize,
}

impl fmt::Debug for S3Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target")
            .field("bucket", &self.bucket)
            .field("path", &self.path)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| REDACTED),
            )
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl S3Target {
    /// `s3://bucket/path`, plus `?endpoint=…` when an endpoint is set (and
    /// `force-path-style=false` when path style is off for a custom endpoint). No
    /// credentials. Parsing it as a url gives the same bucket, path, endpoint and
    /// addressing style.
    pub fn display_url(&self) -> String {
        let url = ReplicaUrl::S3(S3Url {
            bucket: self.bucket.clone(),
            path: self.path.clone(),
            endpoint: self.endpoint.clone(),
            force_path_style: (self.endpoint.is_some() != self.force_path_style)
                .then_some(self.force_path_style),
            ..S3Url::default()
        });
        url.canonical()
    }
}

/// A complete, checked configuration.
#[derive(Clone, Debug)]
pub struct ResolvedConfig {
    /// The replica.
    pub target: ReplicaTarget,
    /// Upload loop period; zero = on every commit.
    pub sync_interval: Duration,
    /// WAL pages that trigger a PASSIVE checkpoint.
    pub min_checkpoint_page_count: u32,
    /// Time-based PASSIVE checkpoint; `None` = disabled.
    pub checkpoint_interval: Option<Duration>,
    /// WAL pages that force a TRUNCATE checkpoint; `None` = disabled.
    pub truncate_page_n: Option<u32>,
    /// Multipart part size in bytes.
    pub part_size: u64,
    /// Parts uploaded in parallel.
    pub concurrency: usize,
    /// Hold `lock.json` (distributed lease) while replicating; always false for a file replica.
    pub lease: bool,
    /// Lease duration unless renewed (at least [`MIN_LEASE_TTL`]).
    pub lease_ttl: Duration,
    /// This instance's name in `lock.json`.
    pub lease_owner: String,
    /// Compaction intervals of levels 1..=len (empty: no compaction).
    pub levels: Vec<Duration>,
    /// Age after which level-0 files already in level 1 are deleted; `None` = never.
    pub l0_retention: Option<Duration>,
    /// Level-9 snapshot interval; `None` = no level-9 snapshots.
    pub snapshot_interval: Option<Duration>,
    /// Age after which level-9 snapshots (and the history before them) are deleted.
    pub snapshot_retention: Duration,
    /// `retention`: false = never delete anything remotely.
    pub retention: bool,
}

impl ResolvedConfig {
    /// The S3 display url, or `file:///dir`.
    pub fn replica_display(&self) -> String {
        match &self.target {
            ReplicaTarget::S3(t) => t.display_url(),
            ReplicaTarget::File { dir } => format!("file://{}", dir.display()),
        }
    }
}

/// Parses a replica URL (as given in `litestream_restore` options) into a target. Everything
/// not in the URL takes its default: region from `AWS_REGION` / `AWS_DEFAULT_REGION` /
/// `us-east-1`, credentials from `LITESTREAM_ACCESS_KEY_ID` + `LITESTREAM_SECRET_ACCESS_KEY`
/// when both are set, else `None` (AWS default chain).
pub fn target_from_url(url: &str) -> Result<ReplicaTarget, ConfigError> {
    target_from_url_with_env(url, &process_env)
}

fn target_from_url_with_env(url: &str, env: EnvFn<'_>) -> Result<ReplicaTarget, ConfigError> {
    target_from_url_using(url, None, env)
}

/// Keys of a connection's configuration that also apply to a replica named by URL: a user who
/// configured credentials (or skip-verify) with `litestream_configure` and restores from another
/// replica by URL expects them to be used there too, as the environment's are.
const URL_INHERITED_KEYS: &[&str] = &["access-key-id", "secret-access-key", "skip-verify"];

/// The replica named by `url`, with the credentials configured in `configured` (a connection's
/// settings) when the URL is an S3 one; the environment fills in what neither gives.
pub fn target_from_url_with_settings(
    url: &str,
    configured: &Settings,
) -> Result<ReplicaTarget, ConfigError> {
    target_from_url_using(url, Some(configured), &process_env)
}

fn target_from_url_using(
    url: &str,
    configured: Option<&Settings>,
    env: EnvFn<'_>,
) -> Result<ReplicaTarget, ConfigError> {
    let mut settings = Settings::new();
    settings.set("url", Some(url))?;
    if let Some(c) = configured.filter(|_| url.trim_start().starts_with("s3://")) {
        for key in URL_INHERITED_KEYS {
            if let Some(v) = c.stored(key) {
                settings.set(key, Some(v))?;
            }
        }
    }
    settings.resolve_with_env(env).map(|r| r.target)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn set(s: &mut Settings, k: &str, v: &str) -> String {
        s.set(k, Some(v))
            .unwrap_or_else(|e| panic!("set {k}={v}: {e}"))
            .unwrap_or_default()
    }

    fn set_err(k: &str, v: &str) -> String {
        Settings::new()
            .set(k, Some(v))
            .expect_err(&format!("{k}={v} should fail"))
            .to_string()
    }

    fn s3_basic() -> Settings {
        let mut s = Settings::new();
        set(&mut s, "bucket", "mybucket");
        set(&mut s, "path", "db");
        s
    }

    fn resolve(s: &Settings) -> Result<ResolvedConfig, ConfigError> {
        s.resolve_with_env(&no_env)
    }

    fn s3_target(s: &Settings) -> S3Target {
        match resolve(s).expect("resolve").target {
            ReplicaTarget::S3(t) => t,
            other => panic!("not s3: {other:?}"),
        }
    }

    // --- key table ---------------------------------------------------------------------------

    #[test]
    fn key_table_order_and_defaults() {
        let names: Vec<&str> = keys().iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            [
                "type",
                "url",
                "bucket",
                "path",
                "region",
                "endpoint",
                "force-path-style",
                "skip-verify",
                "access-key-id",
                "secret-access-key",
                "sync-interval",
                "part-size",
                "concurrency",
                "min-checkpoint-page-count",
                "checkpoint-interval",
                "truncate-page-n",
                "lease",
                "lease-ttl",
                "lease-owner",
                "levels",
                "l0-retention",
                "snapshot-interval",
                "snapshot-retention",
                "retention"
            ]
        );
        let secrets: Vec<&str> = keys().iter().filter(|k| k.secret).map(|k| k.name).collect();
        assert_eq!(secrets, ["secret-access-key"]);
        // Every non-empty default is already in normalized form.
        for k in keys() {
            assert!(!k.help.is_empty());
            if !k.default.is_empty() {
                let n = normalize(k, k.default).unwrap();
                assert_eq!(n, k.default, "{}", k.name);
            }
        }
    }

    #[test]
    fn unknown_key_lists_all_keys() {
        let e = set_err("foo", "1");
        assert_eq!(
            e,
            "unknown key 'foo'; valid keys: type, url, bucket, path, region, endpoint, \
             force-path-style, skip-verify, access-key-id, secret-access-key, sync-interval, \
             part-size, concurrency, min-checkpoint-page-count, checkpoint-interval, truncate-page-n, \
             lease, lease-ttl, lease-owner, \
             levels, l0-retention, snapshot-interval, snapshot-retention, retention"
        );
        let e = Settings::new().get("foo").unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
        let e = set_err("part-sise", "5MB");
        assert!(
            e.starts_with("unknown key 'part-sise'; valid keys: type, url,"),
            "{e}"
        );
        assert!(
            e.ends_with(&format!("Did you mean 'part-size' ({})?", keys()[11].help)),
            "{e}"
        );
        assert!(set_err("", "x").starts_with("unknown key ''; valid keys:"));
    }

    #[test]
    fn key_spelling_variants() {
        let mut s = Settings::new();
        assert_eq!(set(&mut s, "partSize", "10MB"), "10485760");
        assert_eq!(set(&mut s, "PART_SIZE", "5MB"), "5242880");
        assert_eq!(set(&mut s, "forcePathStyle", "yes"), "true");
        assert_eq!(s.get(" Part-Size ").unwrap().as_deref(), Some("5242880"));
    }

    // --- part-size (issue 3) ---------------------------------------------------------------------

    #[test]
    fn size_formats_from_the_guide() {
        let cases = [
            ("5242880", 5_242_880),
            ("5120KB", 5_242_880),
            ("5120K", 5_242_880),
            ("5MB", 5_242_880),
            ("5M", 5_242_880),
            ("1GB", 1_073_741_824),
            ("1G", 1_073_741_824),
            ("1.5MB", 1_572_864),
            ("5MiB", 5_242_880),
            ("5120KiB", 5_242_880),
            ("1GiB", 1_073_741_824),
            ("5mb", 5_242_880),
            ("5Mb", 5_242_880),
            ("10MB", 10_485_760),
            ("50MB", 52_428_800),
            ("100MB", 104_857_600),
            ("5GB", 5_368_709_120),
            ("0", 0),
            ("5242880B", 5_242_880),
            (" 5MB ", 5_242_880),
            ("1.0000001MB", 1_048_576), // 1048576.1048576 rounded down
            ("1.9999999999B", 1),       // fractional bytes rounded down
            ("0.5K", 512),
            ("1.00000000000000000000000000000000000001G", 1_073_741_824),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        // K/M/G are 1024-based, so "5MB" is exactly the S3 minimum.
        assert_eq!(parse_size("5MB").unwrap(), MIN_PART_SIZE);
        assert_eq!(parse_size("5GB").unwrap(), MAX_PART_SIZE);
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184G").is_err());
        assert_eq!(parse_size("17179869183G"), Ok(17_179_869_183 << 30));
    }

    #[test]
    fn size_rejects() {
        for text in [
            "-5MB", "5XB", "", "1e9", "5 MB", "MB", ".5MB", "5.MB", "5TB", "1,5MB", "5MBB", "0x10",
        ] {
            assert_eq!(
                parse_size(text),
                Err(SIZE_EXPECTED.to_string()),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn part_size_setting() {
        let mut s = Settings::new();
        assert_eq!(s.get("part-size").unwrap().as_deref(), Some("5242880"));
        for (text, norm) in [
            ("10MB", "10485760"),
            ("5MB", "5242880"),
            ("50MB", "52428800"),
            ("100MB", "104857600"),
            ("5242880", "5242880"),
            ("5120KB", "5242880"),
            ("5120K", "5242880"),
            ("5M", "5242880"),
            ("1GB", "1073741824"),
            ("1G", "1073741824"),
            ("5MiB", "5242880"),
            ("5GB", "5368709120"),
        ] {
            assert_eq!(set(&mut s, "part-size", text), norm, "{text}");
        }
        assert_eq!(s.get("part-size").unwrap().as_deref(), Some("5368709120"));
        assert_eq!(
            s.set("part-size", None).unwrap().as_deref(),
            Some("5242880")
        );
    }

    #[test]
    fn part_size_error_texts() {
        assert_eq!(
            set_err("part-size", "4MB"),
            "part-size 4MB (4194304 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"
        );
        assert_eq!(
            set_err("part-size", "6GB"),
            "part-size 6GB (6442450944 bytes) is above the S3 maximum of 5 GiB (5368709120 bytes)"
        );
        assert_eq!(
            set_err("part-size", "0"),
            "part-size 0 (0 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"
        );
        assert_eq!(
            set_err("part-size", "1.5MB"),
            "part-size 1.5MB (1572864 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"
        );
        assert_eq!(
            set_err("part-size", "5242879"),
            "part-size 5242879 (5242879 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"
        );
        assert_eq!(
            set_err("part-size", "5368709121"),
            "part-size 5368709121 (5368709121 bytes) is above the S3 maximum of 5 GiB (5368709120 bytes)"
        );
        assert_eq!(
            set_err("part-size", "99999999999999999999GB"),
            "part-size 99999999999999999999GB is above the S3 maximum of 5 GiB (5368709120 bytes)"
        );
        for bad in ["5XB", "-5MB", "", "1e9", "5 MB"] {
            assert_eq!(
                set_err("part-size", bad),
                format!(
                    "invalid part-size '{bad}': expected bytes (5242880) or a number with K, KB, M, MB, G or GB (1024-based, e.g. 5MB, 1.5MB, 1GB)"
                )
            );
        }
        // A failed set leaves the previous value.
        let mut s = Settings::new();
        set(&mut s, "part-size", "10MB");
        assert!(s.set("part-size", Some("4MB")).is_err());
        assert_eq!(s.get("part-size").unwrap().as_deref(), Some("10485760"));
    }

    // --- concurrency -----------------------------------------------------------------------------

    #[test]
    fn concurrency_setting() {
        let mut s = Settings::new();
        assert_eq!(s.get("concurrency").unwrap().as_deref(), Some("5"));
        for (v, n) in [
            ("10", "10"),
            ("2", "2"),
            ("5", "5"),
            ("1", "1"),
            ("64", "64"),
            (" 7 ", "7"),
            ("007", "7"),
        ] {
            assert_eq!(set(&mut s, "concurrency", v), n);
        }
        for bad in [
            "0",
            "65",
            "-1",
            "1.5",
            "ten",
            "",
            "+5",
            "99999999999999999999999",
        ] {
            assert_eq!(
                set_err("concurrency", bad),
                format!(
                    "invalid value '{bad}' for concurrency: expected a whole number from 1 to 64"
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn r2_default_concurrency() {
        let mut s = s3_basic();
        set(
            &mut s,
            "endpoint",
            "https://0123abcd.r2.cloudflarestorage.com",
        );
        assert_eq!(s.get("concurrency").unwrap().as_deref(), Some("2"));
        assert_eq!(s3_target(&s).concurrency, 2);
        assert_eq!(resolve(&s).unwrap().concurrency, 2);
        assert_eq!(set(&mut s, "concurrency", "5"), "5");
        assert_eq!(s3_target(&s).concurrency, 5);
        assert_eq!(s.set("concurrency", None).unwrap().as_deref(), Some("2"));
        // Port and a scheme-less endpoint.
        set(&mut s, "endpoint", "abc.r2.cloudflarestorage.com:443");
        assert_eq!(s.get("concurrency").unwrap().as_deref(), Some("2"));
        // Via the url.
        let mut u = Settings::new();
        set(
            &mut u,
            "url",
            "s3://b/p?endpoint=https://acct.r2.cloudflarestorage.com",
        );
        assert_eq!(u.get("concurrency").unwrap().as_deref(), Some("2"));
        set(
            &mut u,
            "url",
            "s3://b/p?endpoint=https://acct.r2.cloudflarestorage.com&concurrency=7",
        );
        assert_eq!(u.get("concurrency").unwrap().as_deref(), Some("7"));
        // Not R2.
        let mut o = s3_basic();
        set(
            &mut o,
            "endpoint",
            "https://r2.cloudflarestorage.com.evil.example",
        );
        assert_eq!(o.get("concurrency").unwrap().as_deref(), Some("5"));
    }

    // --- the guide's examples --------------------------------------------------------------------

    #[test]
    fn guide_examples_configure() {
        // (part-size, concurrency, endpoint, force-path-style)
        let examples: [&[(&str, &str)]; 9] = [
            &[
                ("type", "s3"),
                ("bucket", "mybucket"),
                ("path", "db"),
                ("part-size", "10MB"),
            ],
            &[
                ("type", "s3"),
                ("bucket", "mybucket"),
                ("path", "db"),
                ("concurrency", "10"),
            ],
            &[
                ("type", "s3"),
                ("bucket", "mybucket"),
                ("path", "db"),
                ("endpoint", "s3.us-west-000.backblazeb2.com"),
                ("force-path-style", "true"),
                ("part-size", "10MB"),
            ],
            &[("part-size", "50MB")],
            &[("concurrency", "10")],
            &[("concurrency", "2")],
            &[
                ("type", "s3"),
                ("bucket", "mybucket"),
                ("path", "db"),
                ("part-size", "50MB"),
                ("concurrency", "10"),
            ],
            &[
                ("type", "s3"),
                ("bucket", "mybucket"),
                ("path", "db"),
                ("part-size", "5MB"),
                ("concurrency", "2"),
            ],
            &[
                ("type", "s3"),
                ("bucket", "mybucket"),
                ("path", "db"),
                ("endpoint", "s3.us-west-000.backblazeb2.com"),
                ("force-path-style", "true"),
                ("part-size", "100MB"),
                ("concurrency", "5"),
            ],
        ];
        for ex in examples {
            let mut s = s3_basic();
            for (k, v) in ex {
                s.set(k, Some(v))
                    .unwrap_or_else(|e| panic!("{k}: {v}: {e}"));
            }
            resolve(&s).unwrap_or_else(|e| panic!("{ex:?}: {e}"));
        }

        // B2 optimized, checked field by field.
        let mut s = Settings::new();
        set(&mut s, "type", "s3");
        set(&mut s, "bucket", "mybucket");
        set(&mut s, "path", "db");
        assert_eq!(
            set(&mut s, "endpoint", "s3.us-west-000.backblazeb2.com"),
            "https://s3.us-west-000.backblazeb2.com"
        );
        assert_eq!(set(&mut s, "force-path-style", "true"), "true");
        assert_eq!(set(&mut s, "part-size", "100MB"), "104857600");
        assert_eq!(set(&mut s, "concurrency", "5"), "5");
        let t = s3_target(&s);
        assert_eq!(
            t.endpoint.as_deref(),
            Some("https://s3.us-west-000.backblazeb2.com")
        );
        assert!(t.force_path_style);
        assert_eq!(t.part_size, 104_857_600);
        assert_eq!(t.concurrency, 5);
        assert_eq!(t.region, "us-east-1");

        // MinIO (defaults work).
        let mut m = s3_basic();
        assert_eq!(
            set(&mut m, "endpoint", "http://127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(m.get("force-path-style").unwrap().as_deref(), Some("true"));
        let t = s3_target(&m);
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(t.force_path_style);
        assert_eq!(t.part_size, 5_242_880);
        assert_eq!(t.concurrency, 5);
        assert_eq!(
            t.display_url(),
            "s3://mybucket/db?endpoint=http://127.0.0.1:9000"
        );

        // AWS defaults.
        let t = s3_target(&s3_basic());
        assert_eq!(t.endpoint, None);
        assert!(!t.force_path_style);
        assert_eq!((t.part_size, t.concurrency), (5_242_880, 5));
    }

    // --- durations -------------------------------------------------------------------------------

    #[test]
    fn compaction_and_retention_keys() {
        let mut s = s3_basic();
        let r = resolve(&s).unwrap();
        assert_eq!(r.levels, DEFAULT_LEVELS.to_vec());
        assert_eq!(r.l0_retention, Some(DEFAULT_L0_RETENTION));
        assert_eq!(r.snapshot_interval, Some(DEFAULT_SNAPSHOT_INTERVAL));
        assert_eq!(r.snapshot_retention, DEFAULT_SNAPSHOT_RETENTION);
        assert!(r.retention);
        assert_eq!(s.get("levels").unwrap().as_deref(), Some("30s,5m,1h"));
        assert_eq!(s.get("retention").unwrap().as_deref(), Some("on"));

        assert_eq!(set(&mut s, "levels", " 500ms, 2s ,1m30s"), "500ms,2s,1m30s");
        assert_eq!(set(&mut s, "levels", "OFF"), "off");
        assert_eq!(set(&mut s, "levels", "0.25s"), "250ms");
        assert_eq!(set(&mut s, "l0-retention", "0"), "0s");
        assert_eq!(set(&mut s, "snapshot-interval", "3000ms"), "3s");
        assert_eq!(set(&mut s, "snapshot-retention", "4s"), "4s");
        assert_eq!(set(&mut s, "retention", "false"), "off");
        let r = resolve(&s).unwrap();
        assert_eq!(r.levels, vec![Duration::from_millis(250)]);
        assert_eq!(r.l0_retention, None);
        assert_eq!(r.snapshot_interval, Some(Duration::from_secs(3)));
        assert_eq!(r.snapshot_retention, Duration::from_secs(4));
        assert!(!r.retention);
        set(&mut s, "levels", "off");
        set(&mut s, "snapshot-interval", "0");
        let r = resolve(&s).unwrap();
        assert!(r.levels.is_empty());
        assert_eq!(r.snapshot_interval, None);

        assert_eq!(
            set_err("levels", "30s,x"),
            "invalid value '30s,x' for levels: level 2 interval 'x': not a duration; expected \
             comma-separated compaction intervals for levels 1, 2, … such as 30s,5m,1h (1 to 8 \
             durations, each above 0), or off for no compaction"
        );
        assert!(set_err("levels", "1s,0").contains("level 2 interval '0' must be above 0"));
        assert!(set_err("levels", "5").contains("level 1 interval '5': a number needs a unit"));
        assert!(set_err("levels", "").contains("level 1 interval ''"));
        assert!(set_err("levels", "1s,1s,1s,1s,1s,1s,1s,1s,1s")
            .contains("9 levels given, at most 8 (level 9 holds snapshots)"));
        assert_eq!(
            set_err("retention", "maybe"),
            "invalid value 'maybe' for retention: expected on or off (also true/false, 1/0, yes/no)"
        );
        assert_eq!(
            set_err("l0-retention", "-5m"),
            "invalid value '-5m' for l0-retention: expected a duration such as 0, 500ms, 1s, 1m30s (negative durations are not allowed)"
        );
        assert!(set_err("snapshot-interval", "daily").contains("for snapshot-interval"));
    }

    #[test]
    fn durations_parse() {
        let ms = Duration::from_millis;
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("500ms", ms(500)),
            ("1s", ms(1000)),
            ("1.5s", ms(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("250μs", Duration::from_micros(250)),
            ("100ns", Duration::from_nanos(100)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("+1s", ms(1000)),
            (" 1m30s ", Duration::from_secs(90)),
            ("1h1m1s1ms1us1ns", Duration::from_nanos(3_661_001_001_001)),
            ("1.0000000019s", Duration::from_nanos(1_000_000_001)),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ];
        for (text, d) in cases {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
        for bad in [
            "",
            "1",
            "5",
            "1x",
            "-1s",
            "-0",
            "1 s",
            "s",
            ".s",
            "1h-1m",
            "1e3s",
            "2562048h",
            "99999999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("5").unwrap_err().starts_with("missing unit"));
    }

    #[test]
    fn durations_format_and_round_trip() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(100), "100ns"),
            (Duration::from_micros(250), "250µs"),
            (Duration::from_nanos(1_500_000), "1.5ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_nanos(7_200_500_000_000), "2h0.5s"),
            (Duration::from_nanos(1_000_000_001), "1.000000001s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
        for n in [
            1u64,
            999,
            1_001,
            999_999,
            1_000_001,
            59_999_999_999,
            3_600_000_000_001,
            i64::MAX as u64,
        ] {
            let d = Duration::from_nanos(n);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{n}");
        }
    }

    #[test]
    fn duration_settings() {
        let mut s = Settings::new();
        assert_eq!(s.get("sync-interval").unwrap().as_deref(), Some("1s"));
        assert_eq!(s.get("checkpoint-interval").unwrap().as_deref(), Some("1m"));
        assert_eq!(set(&mut s, "sync-interval", "0"), "0s");
        assert_eq!(set(&mut s, "sync-interval", "1000ms"), "1s");
        assert_eq!(set(&mut s, "sync-interval", "90s"), "1m30s");
        assert_eq!(set(&mut s, "checkpoint-interval", "0"), "0s");
        assert_eq!(
            set_err("sync-interval", "1x"),
            "invalid value '1x' for sync-interval: expected a duration such as 0, 500ms, 1s, 1m30s"
        );
        assert_eq!(
            set_err("sync-interval", "5"),
            "invalid value '5' for sync-interval: expected a duration such as 0, 500ms, 1s, 1m30s (a number needs a unit, e.g. 5s)"
        );
        assert_eq!(
            set_err("checkpoint-interval", "-1m"),
            "invalid value '-1m' for checkpoint-interval: expected a duration such as 0, 500ms, 1s, 1m30s (negative durations are not allowed)"
        );
        let r = {
            let mut b = s3_basic();
            set(&mut b, "sync-interval", "0");
            set(&mut b, "checkpoint-interval", "0");
            resolve(&b).unwrap()
        };
        assert_eq!(r.sync_interval, Duration::ZERO);
        assert_eq!(r.checkpoint_interval, None);
        let r = resolve(&s3_basic()).unwrap();
        assert_eq!(r.sync_interval, Duration::from_secs(1));
        assert_eq!(r.checkpoint_interval, Some(Duration::from_secs(60)));
    }

    // --- booleans --------------------------------------------------------------------------------

    #[test]
    fn booleans() {
        for t in ["true", "TRUE", "1", "yes", "Yes", "on", " on "] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "False", "0", "no", "NO", "off"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["maybe", "", "t", "2", "enable"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
        let mut s = Settings::new();
        assert_eq!(set(&mut s, "skip-verify", "ON"), "true");
        assert_eq!(set(&mut s, "force-path-style", "no"), "false");
        assert_eq!(
            set_err("force-path-style", "maybe"),
            "invalid value 'maybe' for force-path-style: expected true or false (also 1/0, yes/no, on/off)"
        );
    }

    #[test]
    fn force_path_style_default_follows_endpoint() {
        let mut s = s3_basic();
        assert_eq!(s.get("force-path-style").unwrap().as_deref(), Some("false"));
        set(&mut s, "endpoint", "http://127.0.0.1:9000");
        assert_eq!(s.get("force-path-style").unwrap().as_deref(), Some("true"));
        set(&mut s, "force-path-style", "false");
        assert!(!s3_target(&s).force_path_style);
        assert_eq!(
            s.set("force-path-style", None).unwrap().as_deref(),
            Some("true")
        );
        s.set("endpoint", None).unwrap();
        assert_eq!(s.get("force-path-style").unwrap().as_deref(), Some("false"));
    }

    // --- checkpoint keys -------------------------------------------------------------------------

    #[test]
    fn checkpoint_keys() {
        let mut s = s3_basic();
        assert_eq!(
            s.get("min-checkpoint-page-count").unwrap().as_deref(),
            Some("1000")
        );
        assert_eq!(s.get("truncate-page-n").unwrap().as_deref(), Some("121359"));
        assert_eq!(set(&mut s, "min-checkpoint-page-count", "500"), "500");
        assert_eq!(set(&mut s, "truncate-page-n", "OFF"), "off");
        let r = resolve(&s).unwrap();
        assert_eq!(r.min_checkpoint_page_count, 500);
        assert_eq!(r.truncate_page_n, None);
        assert_eq!(set(&mut s, "truncate-page-n", "-1"), "off");
        assert_eq!(
            set(&mut s, "truncate-page-n", "-99999999999999999999999"),
            "off"
        );
        assert_eq!(set(&mut s, "truncate-page-n", "200000"), "200000");
        assert_eq!(resolve(&s).unwrap().truncate_page_n, Some(200_000));
        assert_eq!(
            set_err("truncate-page-n", "0"),
            "invalid value '0' for truncate-page-n: Litestream treats 0 as \"use the default\" (121359); use 'off' to disable TRUNCATE checkpoints, or a positive number of pages"
        );
        assert!(set_err("truncate-page-n", "-0").contains("use 'off' to disable"));
        assert_eq!(
            set_err("truncate-page-n", "lots"),
            "invalid value 'lots' for truncate-page-n: expected a whole number of pages from 1 to 4294967295, or 'off' to disable TRUNCATE checkpoints"
        );
        assert!(set_err("truncate-page-n", "4294967296")
            .starts_with("invalid value '4294967296' for truncate-page-n"));
        for bad in ["0", "-5", "1.5", "", "x"] {
            assert_eq!(
                set_err("min-checkpoint-page-count", bad),
                format!("invalid value '{bad}' for min-checkpoint-page-count: expected a whole number of pages from 1 to 4294967295")
            );
        }
        let r = resolve(&s3_basic()).unwrap();
        assert_eq!(r.min_checkpoint_page_count, 1000);
        assert_eq!(r.truncate_page_n, Some(121_359));
    }

    // --- endpoint, bucket, region, type, path ----------------------------------------------------

    #[test]
    fn endpoint_values() {
        let mut s = Settings::new();
        for (v, n) in [
            (
                "s3.us-west-000.backblazeb2.com",
                "https://s3.us-west-000.backblazeb2.com",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("HTTP://localhost:8333/", "http://localhost:8333"),
            ("127.0.0.1:9000", "https://127.0.0.1:9000"),
            ("https://[::1]:9000", "https://[::1]:9000"),
            ("minio_1:9000", "https://minio_1:9000"),
        ] {
            assert_eq!(set(&mut s, "endpoint", v), n, "{v}");
        }
        for bad in [
            "ftp://x",
            "http://",
            "http://h/path",
            "http://h:0",
            "http://h:99999",
            "http://h:",
            "h?x=1",
            "",
            "http://[::1",
            "http://a b",
        ] {
            let e = set_err("endpoint", bad);
            assert!(
                e.starts_with(&format!("invalid value '{bad}' for endpoint: ")),
                "{e}"
            );
        }
        let e = set_err("endpoint", "https://user:pw@host");
        assert!(!e.contains("pw"), "{e}");
        assert_eq!(
            e,
            "invalid value for endpoint: credentials in the endpoint are not supported; use access-key-id and secret-access-key"
        );
    }

    #[test]
    fn local_host_rule() {
        for h in [
            "localhost",
            "minio.localhost",
            "nas.local",
            "127.0.0.1",
            "127.5.5.5",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.10",
            "[::1]",
            "[fd00::1]",
        ] {
            assert!(is_local_host(h), "{h}");
        }
        for h in [
            "example.com",
            "172.32.0.1",
            "172.200.1.1",
            "8.8.8.8",
            "[2001:db8::1]",
            "s3.amazonaws.com",
        ] {
            assert!(!is_local_host(h), "{h}");
        }
    }

    #[test]
    fn other_scalar_keys() {
        let mut s = Settings::new();
        assert_eq!(set(&mut s, "type", " S3 "), "s3");
        assert_eq!(set(&mut s, "type", "file"), "file");
        assert_eq!(
            set_err("type", "gcs"),
            "invalid value 'gcs' for type: expected s3 or file"
        );
        assert_eq!(set(&mut s, "bucket", "my-bucket.v2"), "my-bucket.v2");
        assert_eq!(
            set_err("bucket", "a/b"),
            "invalid value 'a/b' for bucket: expected a bucket name (letters, digits, '.', '-' and '_'); put the key prefix in 'path'"
        );
        assert!(set_err("bucket", "").starts_with("invalid value '' for bucket"));
        assert_eq!(set(&mut s, "region", "eu-west-1"), "eu-west-1");
        assert_eq!(
            set_err("region", "eu west"),
            "invalid value 'eu west' for region: expected a region name such as us-east-1"
        );
        assert!(set_err("path", "").starts_with("invalid value '' for path"));
        assert!(set_err("access-key-id", " ").starts_with("invalid value '' for access-key-id"));
        // Long values are cut in messages.
        let long = "x".repeat(1000);
        let e = set_err("type", &long);
        assert!(e.len() < 300 && e.contains('…'), "{e}");
    }

    // --- lease (issue 4) -------------------------------------------------------------------------

    #[test]
    fn lease_keys() {
        // Defaults: on for S3, off for a file replica; 30 s; hostname:pid.
        let s = s3_basic();
        assert_eq!(s.get("lease").unwrap().as_deref(), Some("on"));
        assert_eq!(s.get("lease-ttl").unwrap().as_deref(), Some("30s"));
        let owner = s.get("lease-owner").unwrap().unwrap();
        assert!(
            owner.ends_with(&format!(":{}", std::process::id())),
            "{owner}"
        );
        let r = resolve(&s).unwrap();
        assert!(r.lease);
        assert_eq!(r.lease_ttl, Duration::from_secs(30));
        assert_eq!(r.lease_owner, owner);
        let mut f = Settings::new();
        set(&mut f, "url", "file:///var/backups/app");
        assert_eq!(f.get("lease").unwrap().as_deref(), Some("off"));
        assert!(!resolve(&f).unwrap().lease);

        let mut s = s3_basic();
        assert_eq!(set(&mut s, "lease", "OFF"), "off");
        assert!(!resolve(&s).unwrap().lease);
        assert_eq!(set(&mut s, "lease", "true"), "on");
        assert_eq!(set(&mut s, "lease-ttl", "2s"), "2s");
        assert_eq!(set(&mut s, "lease-ttl", "1500ms"), "1.5s");
        assert_eq!(set(&mut s, "lease-owner", " web-1:42 "), "web-1:42");
        let r = resolve(&s).unwrap();
        assert!(r.lease);
        assert_eq!(r.lease_ttl, Duration::from_millis(1500));
        assert_eq!(r.lease_owner, "web-1:42");
        assert_eq!(
            s.set("lease-owner", None).unwrap().as_deref(),
            Some(owner.as_str())
        );

        assert_eq!(
            set_err("lease", "maybe"),
            "invalid value 'maybe' for lease: expected on or off (also true/false, 1/0, yes/no)"
        );
        assert_eq!(
            set_err("lease-ttl", "500ms"),
            "invalid value '500ms' for lease-ttl: expected a duration of at least 1s such as 5s, 30s or 1m (shorter leases would expire between renewals)"
        );
        assert_eq!(
            set_err("lease-ttl", "30"),
            "invalid value '30' for lease-ttl: expected a duration of at least 1s such as 5s, 30s or 1m (a number needs a unit, e.g. 30s)"
        );
        assert!(set_err("lease-ttl", "0").starts_with("invalid value '0' for lease-ttl"));
        assert!(set_err("lease-owner", "").starts_with("invalid value '' for lease-owner"));
        assert!(set_err("lease-owner", &"x".repeat(300)).contains("at most 256"));

        // lease on with a file replica is a contradiction, not silently ignored.
        let mut f = Settings::new();
        set(&mut f, "url", "file:///var/backups/app");
        set(&mut f, "lease", "on");
        let e = resolve(&f).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Conflict);
        assert!(
            e.message().contains("litestream_configure('lease', NULL)"),
            "{e}"
        );
        set(&mut f, "lease", "off");
        assert!(!resolve(&f).unwrap().lease);
    }

    #[test]
    fn default_owner_without_hostname() {
        let pid = std::process::id();
        let owner = default_lease_owner(&no_env);
        assert!(owner.ends_with(&format!(":{pid}")) || owner == format!("pid-{pid}"));
    }

    // --- URLs ------------------------------------------------------------------------------------

    fn s3url(text: &str) -> S3Url {
        match parse_replica_url(text) {
            Ok(ReplicaUrl::S3(u)) => u,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn url_s3_forms() {
        let u = s3url("s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333");
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.path, "app.db");
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:8333"));

        let u = s3url("S3://b//a/./b/../c/?region=eu-west-1&forcePathStyle=false&skipVerify=true&partSize=10485760&concurrency=3");
        assert_eq!(u.path, "a/c");
        assert_eq!(u.region.as_deref(), Some("eu-west-1"));
        assert_eq!(u.force_path_style, Some(false));
        assert_eq!(u.skip_verify, Some(true));
        assert_eq!(u.part_size, Some(10_485_760));
        assert_eq!(u.concurrency, Some(3));

        let u = s3url("s3://b/p?force-path-style=1&skip-verify=no&part-size=10MB");
        assert_eq!(
            (u.force_path_style, u.skip_verify, u.part_size),
            (Some(true), Some(false), Some(10_485_760))
        );

        // Endpoint without scheme in the query: http for local hosts, https otherwise.
        assert_eq!(
            s3url("s3://b/p?endpoint=localhost:9000")
                .endpoint
                .as_deref(),
            Some("http://localhost:9000")
        );
        assert_eq!(
            s3url("s3://b/p?endpoint=192.168.1.5:9000")
                .endpoint
                .as_deref(),
            Some("http://192.168.1.5:9000")
        );
        assert_eq!(
            s3url("s3://b/p?endpoint=[::1]:9000").endpoint.as_deref(),
            Some("http://[::1]:9000")
        );
        assert_eq!(
            s3url("s3://b/p?endpoint=s3.example.com")
                .endpoint
                .as_deref(),
            Some("https://s3.example.com")
        );
        assert_eq!(
            s3url("s3://b/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000")
                .endpoint
                .as_deref(),
            Some("http://127.0.0.1:9000")
        );

        // No path.
        assert_eq!(s3url("s3://bucket").path, "");
        assert_eq!(s3url("s3://bucket/").path, "");
        assert_eq!(s3url("s3://bucket/%20x%2Fy").path, " x/y");
        // Empty values count as not given (as in Litestream).
        assert_eq!(s3url("s3://b/p?region=&endpoint=").region, None);

        // Litestream's host forms.
        let u = s3url("s3://mybucket.s3.us-west-2.amazonaws.com/db");
        assert_eq!(
            (
                u.bucket.as_str(),
                u.region.as_deref(),
                u.endpoint.as_deref()
            ),
            ("mybucket", Some("us-west-2"), None)
        );
        let u = s3url("s3://mybucket.s3.amazonaws.com/db");
        assert_eq!((u.bucket.as_str(), u.region.as_deref()), ("mybucket", None));
        let u = s3url("s3://mybucket.s3.us-west-000.backblazeb2.com/db");
        assert_eq!(u.bucket, "mybucket");
        assert_eq!(
            u.endpoint.as_deref(),
            Some("https://s3.us-west-000.backblazeb2.com")
        );
        let u = s3url("s3://mybucket.nyc3.digitaloceanspaces.com/db");
        assert_eq!(
            (u.bucket.as_str(), u.endpoint.as_deref()),
            ("mybucket", Some("https://nyc3.digitaloceanspaces.com"))
        );
        let u = s3url("s3://mybucket.s3.filebase.com/db");
        assert_eq!(
            (u.bucket.as_str(), u.endpoint.as_deref()),
            ("mybucket", Some("https://s3.filebase.com"))
        );
        let u = s3url("s3://mybucket.s3.fr-par.scw.cloud/db");
        assert_eq!(
            (u.bucket.as_str(), u.endpoint.as_deref()),
            ("mybucket", Some("https://s3.fr-par.scw.cloud"))
        );
        let u = s3url("s3://mybucket.localhost:9000/db");
        assert_eq!(
            (
                u.bucket.as_str(),
                u.endpoint.as_deref(),
                u.region.as_deref()
            ),
            ("mybucket", Some("http://localhost:9000"), Some("us-east-1"))
        );
        // The query endpoint wins over the host form.
        let u = s3url("s3://mybucket.localhost:9000/db?endpoint=http://127.0.0.1:1");
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        // Plain dotted bucket names stay bucket names.
        assert_eq!(
            s3url("s3://my.bucket.example/db").bucket,
            "my.bucket.example"
        );
    }

    #[test]
    fn url_setting_normalizes_and_round_trips() {
        let mut s = Settings::new();
        let cases = [
            ("s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333", "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333"),
            (
                "s3://b/x/y?concurrency=3&forcePathStyle=TRUE&partSize=10MB&region=auto&skipVerify=0&endpoint=localhost:9000",
                "s3://b/x/y?endpoint=http://localhost:9000&region=auto&force-path-style=true&skip-verify=false&part-size=10485760&concurrency=3",
            ),
            ("s3://mybucket.s3.us-west-2.amazonaws.com/db", "s3://mybucket/db?region=us-west-2"),
            ("s3://bucket", "s3://bucket"),
            ("s3://b/a%20b%3Fc", "s3://b/a%20b%3Fc"),
            ("file:///var/backups/./app/", "file:///var/backups/app"),
            ("FILE:///tmp/a%20b", "file:///tmp/a%20b"),
            ("file:///", "file:///"),
        ];
        for (input, canonical) in cases {
            assert_eq!(set(&mut s, "url", input), canonical, "{input}");
            assert_eq!(
                set(&mut s, "url", canonical),
                canonical,
                "idempotent: {canonical}"
            );
            assert_eq!(s.get("url").unwrap().as_deref(), Some(canonical));
        }
    }

    #[test]
    fn url_errors() {
        let cases = [
            ("s3://b/p?foo=1", "unknown query parameter 'foo' (accepted: endpoint, region, force-path-style (or forcePathStyle), skip-verify (or skipVerify), part-size (or partSize), concurrency)"),
            ("s3:///p", "missing bucket; expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
            ("s3://?region=x", "missing bucket; expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
            ("s3://localhost:9000/p", "missing bucket; expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
            ("file://relative/dir", "expected an absolute directory after file://, e.g. file:///var/backups/app.db (three slashes)"),
            ("file://", "expected an absolute directory after file://, e.g. file:///var/backups/app.db (three slashes)"),
            ("file:///x?y=1", "a file:// url takes no query parameters"),
            ("gs://b/p", "unsupported scheme 'gs://'; expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
            ("/just/a/path", "expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
            ("", "expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
            ("s3://b/p?concurrency=0", "query parameter concurrency='0': expected a whole number from 1 to 64"),
            ("s3://b/p?forcePathStyle=maybe", "query parameter force-path-style='maybe': expected true or false (also 1/0, yes/no, on/off)"),
            ("s3://b/p?partSize=4MB", "part-size 4MB (4194304 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"),
            ("s3://b/p?endpoint=ftp://x", "query parameter endpoint='ftp://x': unsupported scheme 'ftp://', only http:// and https://"),
            ("s3://b/p?force-path-style=true&forcePathStyle=false", "query parameter 'force-path-style' is given more than once"),
            ("s3://b/p#frag", "a '#' fragment is not allowed (write '#' as %23)"),
            ("s3://b/p%zz", "invalid percent-encoding"),
            ("s3://b/p%ff", "percent-encoding is not valid UTF-8"),
            ("s3://arn:aws:s3:us-east-1:123:accesspoint/ap/db", "S3 access point ARNs are not supported; use s3://BUCKET/PATH (with endpoint= and region= if needed)"),
            ("s3://b a/p", "invalid bucket 'b a': expected a bucket name (letters, digits, '.', '-' and '_')"),
        ];
        for (url, reason) in cases {
            let e = set_err("url", url);
            assert_eq!(
                e,
                format!("invalid value '{url}' for url: {reason}"),
                "{url}"
            );
        }
        assert_eq!(
            set_err("url", "s3://b.host:abc/p"),
            "invalid value 's3://b.host:abc/p' for url: invalid host 'b.host:abc': expected a port from 1 to 65535; expected an endpoint such as https://s3.example.com or http://127.0.0.1:9000"
        );
        assert_eq!(
            set_err("url", "s3://b/p%+1"),
            "invalid value 's3://b/p%+1' for url: invalid percent-encoding"
        );
        // A URL with credentials is never echoed.
        let e = set_err("url", "s3://AKIA:hunter2@bucket/p");
        assert_eq!(
            e,
            "invalid value for url: credentials in the url are not supported; use access-key-id and secret-access-key"
        );
    }

    // --- resolve ---------------------------------------------------------------------------------

    #[test]
    fn resolve_s3_from_keys() {
        let mut s = s3_basic();
        set(&mut s, "region", "eu-central-1");
        set(&mut s, "access-key-id", "AKIDEXAMPLE");
        set(&mut s, "secret-access-key", SECRET);
        set(&mut s, "skip-verify", "true");
        set(&mut s, "part-size", "10MB");
        set(&mut s, "concurrency", "10");
        let r = resolve(&s).unwrap();
        assert_eq!(r.part_size, 10_485_760);
        assert_eq!(r.concurrency, 10);
        let ReplicaTarget::S3(t) = r.target.clone() else {
            panic!("s3")
        };
        assert_eq!(t.bucket, "mybucket");
        assert_eq!(t.path, "db");
        assert_eq!(t.region, "eu-central-1");
        assert!(t.skip_verify);
        assert_eq!(t.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(t.secret_access_key.as_deref(), Some(SECRET));
        assert_eq!(r.replica_display(), "s3://mybucket/db");
        // S3 path from the key is used verbatim.
        set(&mut s, "path", "/a//b/");
        assert_eq!(s3_target(&s).path, "/a//b/");
    }

    #[test]
    fn resolve_s3_from_url_with_overrides() {
        let mut s = Settings::new();
        set(&mut s, "url", "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333&region=r1&partSize=10MB&concurrency=3");
        assert_eq!(s.get("type").unwrap().as_deref(), Some("s3"));
        assert_eq!(s.get("force-path-style").unwrap().as_deref(), Some("true"));
        assert_eq!(s.get("part-size").unwrap().as_deref(), Some("10485760"));
        assert_eq!(s.get("bucket").unwrap(), None);
        let t = s3_target(&s);
        assert_eq!(
            (t.bucket.as_str(), t.path.as_str()),
            ("my-bucket", "app.db")
        );
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(t.region, "r1");
        assert!(t.force_path_style);
        assert_eq!((t.part_size, t.concurrency), (10_485_760, 3));
        assert_eq!(
            resolve(&s).unwrap().replica_display(),
            "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333"
        );
        // Explicit keys win over the url's query.
        set(&mut s, "region", "r2");
        set(&mut s, "endpoint", "https://s3.example.com");
        set(&mut s, "part-size", "20MB");
        set(&mut s, "concurrency", "4");
        set(&mut s, "force-path-style", "false");
        let t = s3_target(&s);
        assert_eq!(t.region, "r2");
        assert_eq!(t.endpoint.as_deref(), Some("https://s3.example.com"));
        assert_eq!(
            (t.part_size, t.concurrency, t.force_path_style),
            (20_971_520, 4, false)
        );
        assert_eq!(
            resolve(&s).unwrap().replica_display(),
            "s3://my-bucket/app.db?endpoint=https://s3.example.com&force-path-style=false"
        );
    }

    #[test]
    fn resolve_region_default_from_env() {
        let s = s3_basic();
        let env = |k: &str| match k {
            "AWS_REGION" => Some("ap-south-1".to_string()),
            "AWS_DEFAULT_REGION" => Some("eu-north-1".to_string()),
            _ => None,
        };
        let ReplicaTarget::S3(t) = s.resolve_with_env(&env).unwrap().target else {
            panic!()
        };
        assert_eq!(t.region, "ap-south-1");
        let env = |k: &str| (k == "AWS_DEFAULT_REGION").then(|| "eu-north-1".to_string());
        let ReplicaTarget::S3(t) = s.resolve_with_env(&env).unwrap().target else {
            panic!()
        };
        assert_eq!(t.region, "eu-north-1");
        assert_eq!(s3_target(&s).region, "us-east-1");
    }

    #[test]
    fn resolve_errors() {
        assert_eq!(
            resolve(&Settings::new()).unwrap_err().to_string(),
            "no replica configured: set 'bucket' and 'path' (S3) or 'url' (s3://… or file:///…)"
        );

        let mut s = Settings::new();
        set(&mut s, "bucket", "b");
        let e = resolve(&s).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Incomplete);
        assert_eq!(
            e.to_string(),
            "an S3 replica needs 'path' (the key prefix in the bucket): set it with litestream_configure('path', 'app.db')"
        );

        let mut s = Settings::new();
        set(&mut s, "path", "db");
        assert_eq!(
            resolve(&s).unwrap_err().to_string(),
            "'bucket' is not set: set 'bucket' for an S3 replica, or set 'type' to 'file' to use 'path' as the replica directory"
        );
        set(&mut s, "type", "s3");
        assert_eq!(
            resolve(&s).unwrap_err().to_string(),
            "an S3 replica needs 'bucket': set it with litestream_configure('bucket', 'my-bucket')"
        );

        let mut s = Settings::new();
        set(&mut s, "url", "s3://bucket");
        assert_eq!(
            resolve(&s).unwrap_err().to_string(),
            "the url has no path: an S3 replica needs a key prefix, use s3://BUCKET/PATH"
        );

        let mut s = s3_basic();
        set(&mut s, "url", "s3://other/x");
        let e = resolve(&s).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Conflict);
        assert_eq!(
            e.to_string(),
            "'url' cannot be combined with 'bucket' or 'path' (set: bucket, path); reset them with litestream_configure('bucket', NULL) and litestream_configure('path', NULL), or reset the url with litestream_configure('url', NULL)"
        );
        s.set("path", None).unwrap();
        assert_eq!(
            resolve(&s).unwrap_err().to_string(),
            "'url' cannot be combined with 'bucket' or 'path' (set: bucket); reset it with litestream_configure('bucket', NULL), or reset the url with litestream_configure('url', NULL)"
        );
        s.set("bucket", None).unwrap();
        assert!(resolve(&s).is_ok());

        let mut s = Settings::new();
        set(&mut s, "url", "s3://b/p");
        set(&mut s, "type", "file");
        assert_eq!(
            resolve(&s).unwrap_err().to_string(),
            "type 'file' contradicts the url scheme 's3://'; reset the type with litestream_configure('type', NULL) or change the url"
        );

        let mut s = Settings::new();
        set(&mut s, "type", "file");
        assert_eq!(
            resolve(&s).unwrap_err().to_string(),
            "a file replica needs 'path' (the replica directory) or a file:///… url"
        );
        set(&mut s, "bucket", "b");
        set(&mut s, "path", "/tmp/x");
        assert_eq!(
            resolve(&s).unwrap_err().to_string(),
            "'bucket' is set but the replica type is file; reset it with litestream_configure('bucket', NULL)"
        );
    }

    #[test]
    fn credentials_rules() {
        let mut s = s3_basic();
        set(&mut s, "access-key-id", "AKID");
        assert_eq!(
            resolve(&s).unwrap_err().to_string(),
            "'access-key-id' is set but 'secret-access-key' is not: set both (static credentials) or neither (AWS default credential chain)"
        );
        let mut s = s3_basic();
        set(&mut s, "secret-access-key", SECRET);
        let e = resolve(&s).unwrap_err().to_string();
        assert_eq!(
            e,
            "'secret-access-key' is set but 'access-key-id' is not: set both (static credentials) or neither (AWS default credential chain)"
        );
        assert!(!e.contains(SECRET));

        // Neither set: LITESTREAM_* env when both are present.
        let s = s3_basic();
        let both = |k: &str| match k {
            "LITESTREAM_ACCESS_KEY_ID" => Some("ENVID".to_string()),
            "LITESTREAM_SECRET_ACCESS_KEY" => Some("ENVSECRET".to_string()),
            _ => None,
        };
        let ReplicaTarget::S3(t) = s.resolve_with_env(&both).unwrap().target else {
            panic!()
        };
        assert_eq!(t.access_key_id.as_deref(), Some("ENVID"));
        assert_eq!(t.secret_access_key.as_deref(), Some("ENVSECRET"));
        let half = |k: &str| (k == "LITESTREAM_ACCESS_KEY_ID").then(|| "ENVID".to_string());
        let ReplicaTarget::S3(t) = s.resolve_with_env(&half).unwrap().target else {
            panic!()
        };
        assert_eq!((t.access_key_id, t.secret_access_key), (None, None));
        let t = s3_target(&s);
        assert_eq!((t.access_key_id, t.secret_access_key), (None, None));
    }

    #[test]
    fn file_replica() {
        let mut s = Settings::new();
        set(&mut s, "url", "file:///var/backups/app");
        assert_eq!(s.get("type").unwrap().as_deref(), Some("file"));
        let r = resolve(&s).unwrap();
        match &r.target {
            ReplicaTarget::File { dir } => assert_eq!(dir, Path::new("/var/backups/app")),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.replica_display(), "file:///var/backups/app");

        // type file + relative path: absolute against the current directory at set time.
        let cwd = std::env::current_dir().unwrap();
        let mut s = Settings::new();
        set(&mut s, "path", "replica/./dir");
        assert_eq!(s.get("path").unwrap().as_deref(), Some("replica/./dir"));
        set(&mut s, "type", "file");
        let expected = cwd.join("replica/dir");
        assert_eq!(
            s.get("path").unwrap().as_deref(),
            Some(expected.to_str().unwrap())
        );
        match resolve(&s).unwrap().target {
            ReplicaTarget::File { dir } => assert_eq!(dir, expected),
            other => panic!("{other:?}"),
        }
        // Set in the other order: the returned value is already absolute.
        let mut s = Settings::new();
        set(&mut s, "type", "file");
        assert_eq!(set(&mut s, "path", "d"), cwd.join("d").to_str().unwrap());
        assert_eq!(set(&mut s, "path", "/abs/../x"), "/x");
        // `~` is the home directory.
        let mut s = Settings::new();
        set(&mut s, "type", "file");
        set(&mut s, "path", "~/bk");
        let home = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
        match s.resolve_with_env(&home).unwrap().target {
            ReplicaTarget::File { dir } => assert_eq!(dir, Path::new("/home/u/bk")),
            other => panic!("{other:?}"),
        }
        // Credentials are not checked for a file replica.
        set(&mut s, "access-key-id", "x");
        assert!(s.resolve_with_env(&home).is_ok());
    }

    #[test]
    fn target_from_url_inherits_configured_credentials() {
        let mut configured = Settings::new();
        set(&mut configured, "bucket", "other");
        set(&mut configured, "access-key-id", "AKIDEXAMPLE");
        set(&mut configured, "secret-access-key", SECRET);
        set(&mut configured, "skip-verify", "true");
        let url = "s3://my-bucket/app.db?endpoint=https://127.0.0.1:8333";
        match target_from_url_using(url, Some(&configured), &no_env).unwrap() {
            ReplicaTarget::S3(t) => {
                assert_eq!(
                    (t.bucket.as_str(), t.path.as_str()),
                    ("my-bucket", "app.db")
                );
                assert_eq!(t.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
                assert_eq!(t.secret_access_key.as_deref(), Some(SECRET));
                assert!(t.skip_verify);
            }
            other => panic!("{other:?}"),
        }
        // A file URL takes nothing from an S3 configuration.
        match target_from_url_using("file:///tmp/r", Some(&configured), &no_env).unwrap() {
            ReplicaTarget::File { dir } => assert_eq!(dir, Path::new("/tmp/r")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn target_from_url_works() {
        match target_from_url_with_env(
            "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333",
            &no_env,
        )
        .unwrap()
        {
            ReplicaTarget::S3(t) => {
                assert_eq!(t.bucket, "my-bucket");
                assert_eq!(t.path, "app.db");
                assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
                assert!(t.force_path_style);
                assert_eq!(t.region, "us-east-1");
                assert_eq!((t.part_size, t.concurrency), (5_242_880, 5));
                assert_eq!((t.access_key_id, t.secret_access_key), (None, None));
            }
            other => panic!("{other:?}"),
        }
        match target_from_url_with_env("file:///tmp/replica", &no_env).unwrap() {
            ReplicaTarget::File { dir } => assert_eq!(dir, Path::new("/tmp/replica")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            target_from_url("s3://bucket").unwrap_err().to_string(),
            "the url has no path: an S3 replica needs a key prefix, use s3://BUCKET/PATH"
        );
        assert_eq!(
            target_from_url("s3://b/p?x=1").unwrap_err().to_string(),
            "invalid value 's3://b/p?x=1' for url: unknown query parameter 'x' (accepted: endpoint, region, force-path-style (or forcePathStyle), skip-verify (or skipVerify), part-size (or partSize), concurrency)"
        );
    }

    // --- redaction and reset ---------------------------------------------------------------------

    #[test]
    fn secret_never_shown() {
        let mut s = s3_basic();
        assert_eq!(s.get("secret-access-key").unwrap(), None);
        assert_eq!(s.to_json()["secret-access-key"], serde_json::Value::Null);
        assert_eq!(
            s.set("secret-access-key", Some(SECRET)).unwrap().as_deref(),
            Some(REDACTED)
        );
        set(&mut s, "access-key-id", "AKIDEXAMPLE");
        assert_eq!(
            s.get("secret-access-key").unwrap().as_deref(),
            Some(REDACTED)
        );
        assert_eq!(
            s.get("SECRET_ACCESS_KEY").unwrap().as_deref(),
            Some(REDACTED)
        );
        let json = s.to_json();
        assert_eq!(json["secret-access-key"], "********");
        assert_eq!(json["access-key-id"], "AKIDEXAMPLE");
        let texts = [
            json.to_string(),
            s.to_json_string(),
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{:?}", resolve(&s).unwrap()),
            format!("{:?}", s3_target(&s)),
            s3_target(&s).display_url(),
            resolve(&s).unwrap().replica_display(),
        ];
        for t in &texts {
            assert!(!t.contains(SECRET), "secret leaked: {t}");
            assert!(!t.contains("wJalr"), "secret leaked: {t}");
        }
        assert!(format!("{:?}", s3_target(&s)).contains("secret_access_key: Some(\"********\")"));
        // Errors about the secret do not echo it.
        for bad in ["", "   ", "abc\ndef"] {
            let e = Settings::new()
                .set("secret-access-key", Some(bad))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                "invalid value for secret-access-key: expected a non-empty secret without control characters (the value is not shown)"
            );
        }
        let e = Settings::new()
            .set("secret-access-key", Some("x\u{7}secretpart"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secretpart"));
        // Reset.
        assert_eq!(s.set("secret-access-key", None).unwrap(), None);
        assert_eq!(s.to_json()["secret-access-key"], serde_json::Value::Null);
    }

    #[test]
    fn reset_with_none_returns_default() {
        let mut s = Settings::new();
        let defaults = [
            ("part-size", "10MB", Some("5242880")),
            ("concurrency", "9", Some("5")),
            ("sync-interval", "5s", Some("1s")),
            ("checkpoint-interval", "0", Some("1m")),
            ("min-checkpoint-page-count", "5", Some("1000")),
            ("truncate-page-n", "off", Some("121359")),
            ("skip-verify", "true", Some("false")),
            ("force-path-style", "true", Some("false")),
            ("bucket", "b", None),
            ("region", "r", None),
            ("endpoint", "http://h:1", None),
            ("url", "s3://b/p", None),
            ("access-key-id", "a", None),
        ];
        for (k, v, d) in defaults {
            s.set(k, Some(v)).unwrap();
            assert_eq!(s.set(k, None).unwrap().as_deref(), d, "{k}");
            assert_eq!(s.get(k).unwrap().as_deref(), d, "{k}");
        }
        // Resetting a key that was never set is fine.
        assert_eq!(s.set("path", None).unwrap(), None);
        assert_eq!(s.set("type", None).unwrap(), None);
    }

    #[test]
    fn json_lists_all_keys() {
        let mut s = s3_basic();
        set(&mut s, "part-size", "10MB");
        let json = s.to_json();
        let obj = json.as_object().unwrap();
        assert_eq!(obj.len(), keys().len());
        assert_eq!(json["bucket"], "mybucket");
        assert_eq!(json["type"], "s3");
        assert_eq!(json["part-size"], "10485760");
        assert_eq!(json["concurrency"], "5");
        assert_eq!(json["url"], serde_json::Value::Null);
        assert_eq!(json["region"], serde_json::Value::Null);
        assert_eq!(json["sync-interval"], "1s");
        let text = s.to_json_string();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, json);
        // Table order in the text form.
        let positions: Vec<usize> = keys()
            .iter()
            .map(|k| text.find(&format!("\"{}\":", k.name)).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.starts_with("{\"type\":\"s3\",\"url\":null,\"bucket\":\"mybucket\""));
    }

    #[test]
    fn no_panics_on_odd_input() {
        let inputs = [
            "", " ", "\0", "\u{1F600}", "µ", "µs", "1µ", "%", "%%", "%f", "s3://", "s3://%", "s3://b/%",
            "s3://b?&&&", "s3://b/p?=", "s3://b/p?=x", "s3://[::1]:9000/p", "s3://b.[::1]:9000/p",
            "file:///%00", "s3://b/\u{7}", "[", "[]", "http://[", "http://[]:", "http://[::1]x",
            "9999999999999999999999999999999999999", "1.", ".", "-", "+", "-+", "+-1s", "1.5.5s",
            "1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h",
            "99999999999999999999999999999999999999999h", "0.99999999999999999999999999999999999999999G",
            "s3://B\u{e9}/p", "s3://\u{e9}\u{e9}.s3.amazonaws.com/p", "s3://x.s3.\u{e9}.amazonaws.com/p",
            "s3://\u{e9}.localhost:1/p", "s3://\u{e9}:1/p", "s3://a.\u{e9}.digitaloceanspaces.com/",
        ];
        for key in keys() {
            for v in inputs {
                let mut s = Settings::new();
                let _ = s.set(key.name, Some(v));
                let _ = s.get(key.name);
                let _ = s.to_json();
                let _ = s.to_json_string();
                let _ = s.resolve_with_env(&no_env);
            }
        }
        for v in inputs {
            let _ = parse_size(v);
            let _ = parse_duration(v);
            let _ = parse_bool(v);
            let _ = target_from_url_with_env(v, &no_env);
            let _ = Settings::new().set(v, Some("1"));
        }
        assert_eq!(
            parse_size("0.99999999999999999999999999999999999999999G"),
            Ok((1 << 30) - 1)
        );
    }
}
