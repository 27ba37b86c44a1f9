//! Scalar parsers and formatters: booleans, byte sizes, counts, Go-style durations, compaction
//! levels, and the typed defaults of every key.
//!
//! Invariants:
//! - Each parser accepts exactly what its error text says it accepts; the text is the reason
//!   only (the caller adds key and value).
//! - Formatters produce text their parser reads back to the same value (`format_duration` ∘
//!   `parse_duration` is the identity), so normalized settings re-parse exactly.
//! - Every default exists once, here, as a typed constant; the key table shows it through the
//!   formatter of its key.
//! - Arithmetic on user input is checked: overflow is an error, never a wrap or a panic.

use std::time::Duration;

use super::number::{self, NumberError};
use super::{echo, has_control, quote};

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
/// Shortest non-zero `sync-interval`. The replicator polls the WAL once per interval (for
/// commits of connections and processes whose WAL hook it does not see): at 1 ns it spins a
/// core, at 1 ms it costs about 4 % of one while idle, at 10 ms about 1 % (0.04–0.05 CPU-s per
/// 5 s measured on an idle started database). Commits of hooked connections and
/// `litestream_sync()` wake it at once whatever the interval, so shorter polls buy little, and
/// 10 ms is still far below an S3 round trip. `0` stays the way to upload on every commit.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(10);
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
pub(super) const SIZE_EXPECTED: &str = "expected a whole number of bytes (5242880, 5.24288e6) \
     or a number with K, KB, M, MB, G or GB (1024-based, e.g. 5MB, 1.5MB, 1GB)";
const LEVELS_EXPECTED: &str = "expected comma-separated compaction intervals for levels 1, 2, … \
     such as 30s,5m,1h (1 to 8 durations, each above 0), or off for no compaction";
const ON_OFF_EXPECTED: &str = "expected on or off (also true/false, 1/0, yes/no)";

/// Parses a boolean: true/false, 1/0, yes/no, on/off (ASCII case-insensitive, surrounding
/// whitespace ignored).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(BOOL_EXPECTED.to_string()),
    }
}

/// The reason a size or count was refused, in words.
fn number_reason(e: NumberError, what: &str) -> &'static str {
    match e {
        NumberError::Syntax => "",
        NumberError::Negative => "negative numbers are not allowed; ",
        NumberError::Fraction if what == "bytes" => "not a whole number of bytes; ",
        NumberError::Fraction => "not a whole number; ",
        NumberError::TooLarge => "too large; ",
    }
}

/// Parses a byte size: plain bytes (`5242880`, also `5.24288e6`), or a number (decimals
/// allowed, `1.5MB`) followed by B, K, KB, KiB, M, MB, MiB, G, GB or GiB (case-insensitive).
/// K, M and G are 1024-based. The result must be a whole number of bytes. No range check.
pub fn parse_size(s: &str) -> Result<u64, String> {
    number::size(s).map_err(|e| format!("{}{SIZE_EXPECTED}", number_reason(e, "bytes")))
}

/// Validates a part size; the error texts are user-facing and name the key.
pub(super) fn part_size_value(raw: &str) -> Result<u64, String> {
    if raw.contains('@') {
        return Err(format!("invalid part-size {}: {SIZE_EXPECTED}", quote(raw)));
    }
    let shown = echo(raw.trim());
    match number::size(raw) {
        Err(NumberError::TooLarge) => Err(format!(
            "part-size {shown} is above the S3 maximum of 5 GiB ({MAX_PART_SIZE} bytes)"
        )),
        Err(e) => Err(format!(
            "invalid part-size '{shown}': {}{SIZE_EXPECTED}",
            number_reason(e, "bytes")
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

/// A duration setting; the error says what is accepted, in the words of a key's message.
pub(super) fn duration_setting(raw: &str) -> Result<Duration, String> {
    parse_duration_inner(raw).map_err(|e| match e {
        DurationError::Syntax => DURATION_EXPECTED.to_string(),
        DurationError::MissingUnit => {
            format!("{DURATION_EXPECTED} (a number needs a unit, e.g. 5s)")
        }
        DurationError::Negative => {
            format!("{DURATION_EXPECTED} (negative durations are not allowed)")
        }
        DurationError::TooLarge => format!("{DURATION_EXPECTED} (too large)"),
    })
}

/// `sync-interval`: 0 (upload on every commit) or at least [`MIN_SYNC_INTERVAL`].
pub(super) fn sync_interval_value(raw: &str) -> Result<Duration, String> {
    match duration_setting(raw)? {
        d if d.is_zero() || d >= MIN_SYNC_INTERVAL => Ok(d),
        _ => Err(format!(
            "expected 0 (upload on every commit) or a duration of at least {} such as 100ms or 1s \
             (a shorter interval makes the replicator poll the WAL in a busy loop)",
            format_duration(MIN_SYNC_INTERVAL)
        )),
    }
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

/// A whole number within `range`; the error gives the reason and `expected`.
fn count_in<T: TryFrom<u64>>(
    raw: &str,
    range: std::ops::RangeInclusive<u64>,
    expected: &str,
) -> Result<T, String> {
    let n = number::whole_number(raw).map_err(|e| format!("{}{expected}", number_reason(e, "")))?;
    if !range.contains(&n) {
        return Err(expected.to_string());
    }
    T::try_from(n).map_err(|_| expected.to_string())
}

pub(super) fn concurrency_value(raw: &str) -> Result<usize, String> {
    let expected = format!("expected a whole number from 1 to {MAX_CONCURRENCY}");
    count_in(raw, 1..=MAX_CONCURRENCY as u64, &expected)
}

pub(super) fn page_count_value(raw: &str) -> Result<u32, String> {
    let expected = format!("expected a whole number of pages from 1 to {}", u32::MAX);
    count_in(raw, 1..=u64::from(u32::MAX), &expected)
}

/// `truncate-page-n`: `Some(pages)`, or `None` = disabled (`off`).
pub(super) fn truncate_value(raw: &str) -> Result<Option<u32>, String> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let expected = format!(
        "expected a whole number of pages from 1 to {}, or 'off' to disable TRUNCATE checkpoints",
        u32::MAX
    );
    match number::whole_number(raw) {
        Ok(0) => Err(truncate_zero_message()),
        Err(NumberError::Negative) => Err(format!(
            "negative numbers are not allowed (use 'off' to disable TRUNCATE checkpoints); {expected}"
        )),
        _ => count_in(raw, 1..=u64::from(u32::MAX), &expected).map(Some),
    }
}

/// `truncate-page-n` as stored: the page count, or `off`.
pub(super) fn format_truncate(pages: Option<u32>) -> String {
    pages.map_or_else(|| "off".to_string(), |n| n.to_string())
}

fn truncate_zero_message() -> String {
    format!(
        "Litestream treats 0 as \"use the default\" ({DEFAULT_TRUNCATE_PAGE_N}); \
         use 'off' to disable TRUNCATE checkpoints, or a positive number of pages"
    )
}

/// `lease`, `retention`: a boolean written as on/off.
pub(super) fn on_off(raw: &str) -> Result<bool, String> {
    parse_bool(raw).map_err(|_| ON_OFF_EXPECTED.to_string())
}

pub(super) fn format_on_off(on: bool) -> String {
    if on { "on" } else { "off" }.to_string()
}

/// `lease-ttl`: a duration of at least [`MIN_LEASE_TTL`].
pub(super) fn lease_ttl_value(raw: &str) -> Result<Duration, String> {
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
pub(super) fn lease_owner_value(raw: &str) -> Result<String, String> {
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
pub(super) fn levels_value(raw: &str) -> Result<Vec<Duration>, String> {
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
                    "level {level} interval {} must be above 0; {LEVELS_EXPECTED}",
                    quote(part)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "level {level} interval {}: {}; {LEVELS_EXPECTED}",
                    quote(part),
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

pub(super) fn format_levels(levels: &[Duration]) -> String {
    if levels.is_empty() {
        return "off".to_string();
    }
    levels
        .iter()
        .map(|d| format_duration(*d))
        .collect::<Vec<_>>()
        .join(",")
}
