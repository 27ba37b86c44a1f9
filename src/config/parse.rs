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

use super::{echo, has_control};

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
pub(super) const SIZE_EXPECTED: &str =
    "expected bytes (5242880) or a number with K, KB, M, MB, G or GB (1024-based, e.g. 5MB, 1.5MB, 1GB)";
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
pub(super) fn part_size_value(raw: &str) -> Result<u64, String> {
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

/// `sync-interval`.
pub(super) fn sync_interval_value(raw: &str) -> Result<Duration, String> {
    duration_setting(raw)
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

pub(super) fn concurrency_value(raw: &str) -> Result<usize, String> {
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

pub(super) fn page_count_value(raw: &str) -> Result<u32, String> {
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
pub(super) fn truncate_value(raw: &str) -> Result<Option<u32>, String> {
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
