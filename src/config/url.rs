//! Replica URLs and S3 names: bucket and region names, endpoints (`scheme://host[:port]`),
//! the provider host forms Litestream understands (`s3.ParseHost`), and `s3://` / `file://`
//! URLs with their canonical text.
//!
//! Invariants:
//! - `ReplicaUrl::canonical` is a fixed point: parsing it gives the same value back.
//! - A URL that may carry credentials (`@` in it, or `%40`) is never echoed in an error, nor is
//!   any part of it that contains `@` (`quote`).
//! - Errors are reasons only; `url_error` adds the URL (or withholds it).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::parse::{concurrency_value, parse_bool, part_size_value, DEFAULT_REGION};
use super::{echo, has_control, quote, ConfigError, ConfigErrorKind};

const URL_EXPECTED: &str = "expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR";
/// Why `s3://BUCKET` and `s3://BUCKET/` are refused (as `path=''` is): Litestream writes such a
/// replica under `./` or `/` depending on that slash, so there is no bucket-root replica to
/// agree with, and a prefix keeps the replica's levels and lock.json apart from the rest of
/// the bucket.
const NO_PATH: &str =
    "the url has no path: an S3 replica needs a key prefix, use s3://BUCKET/PATH \
     (a replica at the bucket root is not supported)";
const QUERY_PARAMS: &str = "endpoint, region, force-path-style (or forcePathStyle), \
     skip-verify (or skipVerify), part-size (or partSize), concurrency";

/// S3's bucket name limits (and of every S3-compatible store that follows them).
const BUCKET_CHARS: std::ops::RangeInclusive<usize> = 3..=63;
/// DNS limits on a host name and on each of its labels (RFC 1035).
const MAX_HOST_CHARS: usize = 253;
const MAX_LABEL_CHARS: usize = 63;

const BUCKET_EXPECTED: &str = "expected an S3 bucket name: 3 to 63 lowercase letters, digits, \
     '.' and '-', starting and ending with a letter or digit, not an IP address";
const HOST_EXPECTED: &str = "expected a host name (dot-separated labels of letters, digits, '-' \
     and '_', none starting or ending with '-'), an IPv4 address or an [IPv6] address";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'
}

/// A bucket name as S3 accepts it; the error says which rule it breaks.
pub(super) fn bucket_value(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    let n = t.chars().count();
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let broken = if t.contains('/') {
        "a bucket name has no '/' (put the key prefix in 'path')".to_string()
    } else if n < *BUCKET_CHARS.start() {
        format!("too short ({n} characters)")
    } else if n > *BUCKET_CHARS.end() {
        format!("too long ({n} characters)")
    } else if t.chars().any(|c| c.is_ascii_uppercase()) {
        "uppercase letters".to_string()
    } else if !t
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        "characters other than lowercase letters, digits, '.' and '-'".to_string()
    } else if !edge_ok(t.chars().next()) || !edge_ok(t.chars().last()) {
        "it does not start and end with a letter or digit".to_string()
    } else if t.contains("..") {
        "two dots in a row".to_string()
    } else if t.parse::<Ipv4Addr>().is_ok() {
        "an IP address".to_string()
    } else {
        return Ok(t.to_string());
    };
    Err(format!("{broken}; {BUCKET_EXPECTED}"))
}

/// A host name (or IPv4 address) as DNS and URLs allow it; bracketed IPv6 is checked by the
/// caller. Underscores are allowed: container service names use them.
fn check_host_name(host: &str) -> Result<(), String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        (1..=MAX_LABEL_CHARS).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let labels_ok =
        !host.is_empty() && host.len() <= MAX_HOST_CHARS && host.split('.').all(label_ok);
    // An all-digit last label is no top-level domain: such a host is a mistyped IPv4 address.
    let numeric_tail = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if !labels_ok || numeric_tail {
        return Err(HOST_EXPECTED.to_string());
    }
    Ok(())
}

pub(super) fn region_value(raw: &str) -> Result<String, String> {
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
pub(super) fn is_local_host(host: &str) -> bool {
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
    if !host.starts_with('[') {
        check_host_name(host)?;
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
pub(super) fn endpoint_value(raw: &str, local_http: bool) -> Result<String, String> {
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
    if t.contains('@') {
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

pub(super) fn is_r2_endpoint(endpoint: &str) -> bool {
    let host = endpoint_host(endpoint);
    host == "r2.cloudflarestorage.com" || host.ends_with(".r2.cloudflarestorage.com")
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

/// An `s3://` URL, with the settings it carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct S3Url {
    pub(super) bucket: String,
    pub(super) path: String,
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) force_path_style: Option<bool>,
    pub(super) skip_verify: Option<bool>,
    pub(super) part_size: Option<u64>,
    pub(super) concurrency: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ReplicaUrl {
    S3(S3Url),
    File(PathBuf),
}

impl ReplicaUrl {
    pub(super) fn scheme(&self) -> &'static str {
        match self {
            ReplicaUrl::S3(_) => "s3",
            ReplicaUrl::File(_) => "file",
        }
    }

    /// Canonical text; parsing it gives the same value back.
    pub(super) fn canonical(&self) -> String {
        match self {
            ReplicaUrl::File(dir) => {
                format!("file://{}", encode(&dir.to_string_lossy(), PATH_SAFE))
            }
            ReplicaUrl::S3(u) => {
                let mut out = format!("s3://{}", canonical_host(&u.bucket));
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

/// The host that names `bucket` in a canonical url: the bucket itself, unless the host parser
/// would read it as something else (a bucket such as `x.s3.eu-west-1.backblazeb2.com` looks
/// like a provider's host), then AWS's virtual-hosted form `BUCKET.s3.amazonaws.com`, which
/// always names the bucket and nothing more (region and endpoint stay in the query).
fn canonical_host(bucket: &str) -> String {
    let read = parse_s3_host(bucket);
    if read.bucket == bucket && read.region.is_none() && read.endpoint.is_none() {
        bucket.to_string()
    } else {
        format!("{bucket}.s3.amazonaws.com")
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

/// The first `.` or `..` segment of a `/`-separated path. Such segments are refused rather
/// than resolved: Litestream cleans a url's path (`a/../b` → `b`) but uses a YAML path
/// verbatim, so the same text would name two different key prefixes.
pub(super) fn dot_segment(p: &str) -> Option<&str> {
    p.split('/').find(|seg| *seg == "." || *seg == "..")
}

pub(super) fn dot_segment_error(seg: &str) -> String {
    format!(
        "a '{seg}' segment in the path: '.' and '..' are not resolved (they would name a \
         different key prefix in other tools); write the path without them"
    )
}

/// The key prefix an `s3://` url's path names (the text after the bucket's `/`): one trailing
/// `/` is dropped; empty, `.` and `..` segments are refused, never rewritten.
fn s3_url_path(p: &str) -> Result<String, String> {
    let trimmed = p.strip_suffix('/').unwrap_or(p);
    if trimmed.is_empty() {
        return Err(NO_PATH.to_string());
    }
    if let Some(seg) = dot_segment(trimmed) {
        return Err(dot_segment_error(seg));
    }
    if trimmed.split('/').any(str::is_empty) {
        return Err(
            "an empty segment ('//') in the path: S3 keeps every '/' in a key, so write each one once"
                .to_string(),
        );
    }
    Ok(trimmed.to_string())
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
pub(super) fn parse_replica_url(raw: &str) -> Result<ReplicaUrl, String> {
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
            "unsupported scheme {}; {URL_EXPECTED}",
            quote(&format!("{other}://"))
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
    if let Some(seg) = dot_segment(&decoded) {
        return Err(dot_segment_error(seg));
    }
    // Repeated and trailing slashes name the same directory: dropped.
    let dir: Vec<&str> = decoded.split('/').filter(|seg| !seg.is_empty()).collect();
    if dir.is_empty() {
        return Err(
            "file:/// is the root directory: name a directory for the replica, e.g. file:///var/backups/app.db"
                .to_string(),
        );
    }
    Ok(PathBuf::from(format!("/{}", dir.join("/"))))
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
        path: s3_url_path(&path_text)?,
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
                    "unknown query parameter {} (accepted: {QUERY_PARAMS})",
                    quote(&name)
                ))
            }
        };
        if seen.contains(&canonical) {
            return Err(format!(
                "query parameter '{canonical}' is given more than once"
            ));
        }
        seen.push(canonical);
        // Litestream (Go's query.Get) treats an empty value as not given; here it is an error,
        // so `?endpoint=` with a lost variable cannot silently mean AWS.
        if value.trim().is_empty() {
            return Err(format!(
                "query parameter '{canonical}' has no value: give one or leave the parameter out"
            ));
        }
        let bad =
            |reason: String| format!("query parameter {canonical}={}: {reason}", quote(&value));
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

pub(super) fn url_error(raw: &str, reason: &str) -> ConfigError {
    let t = raw.trim();
    // A URL with '@' (also percent-encoded, which a query value decodes to) may carry
    // credentials: never echo it.
    let message = if t.contains('@') || t.to_ascii_lowercase().contains("%40") {
        format!("invalid value for url: {reason}")
    } else {
        format!("invalid value '{}' for url: {reason}", echo(t))
    };
    ConfigError::new(ConfigErrorKind::InvalidValue, message)
}

/// The `url` key's checker: the canonical text of a valid url.
pub(super) fn check_url(_key: &'static str, raw: &str) -> Result<String, ConfigError> {
    parse_replica_url(raw)
        .map(|u| u.canonical())
        .map_err(|e| url_error(raw, &e))
}
