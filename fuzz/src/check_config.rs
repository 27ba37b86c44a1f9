//! Configuration checks: the key table (`config::keys()`) driven like `litestream_configure()`
//! calls. The input is text, one call per line: `key=value` sets, a bare `key` resets. Every
//! call either succeeds or is an `Err` whose message names the key; an accepted value, set again
//! in fresh settings, is shown unchanged (normalization is a fixed point); and no output (set and
//! get results, errors, JSON, `Debug`, resolution) ever contains the secret. The harness wraps
//! every secret it passes around a marker, so a leak is any output holding the marker. Each
//! value is also fed to the scalar parsers (sizes, durations, bools), and a parsed duration must
//! survive `format_duration` unchanged.

use crate::config::{
    format_duration, key_name, keys, parse_bool, parse_duration, parse_size, target_from_url,
    ConfigErrorKind, ReplicaTarget, S3Target, Settings,
};

/// Put in the middle of every secret the harness sets. Long enough never to appear by chance.
const MARK: &str = "QmarkSECRETmarkQ";
const SECRET_KEY: &str = "secret-access-key";
/// At most this many calls per input: enough for any combination of keys, bounded work.
const MAX_CALLS: usize = 48;
/// At most this many calls with unknown keys per input: each computes "did you mean" edit
/// distances to every key, which, instrumented, costs more than all the other calls together.
const MAX_UNKNOWN_KEYS: usize = 4;

/// `raw` with [`MARK`] inserted in the middle of its trimmed text (so trimming keeps it).
fn marked(raw: &str) -> String {
    let t = raw.trim();
    let start = raw.len() - raw.trim_start().len();
    let mut mid = start + t.len() / 2;
    while !raw.is_char_boundary(mid) {
        mid += 1;
    }
    format!("{}{MARK}{}", &raw[..mid], &raw[mid..])
}

/// The key `key` names, matched as documented (ASCII case, `-` and `_` ignored); written out
/// here independently of `config::key_name`, which must agree, and cheap (unlike the
/// "did you mean" that `key_name` works out for an unknown key).
fn spelled(key: &str) -> Option<&'static str> {
    let compact = |s: &str| -> String {
        s.trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = compact(key);
    keys()
        .iter()
        .find(|k| !wanted.is_empty() && compact(k.name) == wanted)
        .map(|k| k.name)
}

fn scalars(v: &str) {
    let _ = parse_size(v);
    let _ = parse_bool(v);
    if let Ok(d) = parse_duration(v) {
        let text = format_duration(d);
        assert_eq!(
            parse_duration(&text),
            Ok(d),
            "duration {v:?} formats as {text:?}, which does not read back"
        );
    }
}

/// `S3Target::display_url` promises: parsed as a url it gives the same bucket, path, endpoint
/// and addressing style, for a path without empty segments or a leading `/` (which only a
/// verbatim `path` key can have).
fn check_display_url(t: &S3Target) {
    let url = t.display_url();
    assert!(!url.contains(MARK), "display url holds the secret: {url}");
    if t.path.starts_with('/') || t.path.split('/').any(str::is_empty) {
        return;
    }
    let again = match target_from_url(&url) {
        Ok(ReplicaTarget::S3(a)) => a,
        other => panic!("display url {url:?} of {t:?} reads back as {other:?}"),
    };
    assert_eq!(
        (
            &again.bucket,
            &again.path,
            &again.endpoint,
            again.force_path_style
        ),
        (&t.bucket, &t.path, &t.endpoint, t.force_path_style),
        "display url {url:?} names another replica"
    );
}

pub fn keys_and_values(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if text.contains(MARK) {
        return;
    }
    let mut settings = Settings::new();
    let mut outputs: Vec<String> = Vec::new();
    let mut unknown = 0;
    for line in text.split('\n').take(MAX_CALLS) {
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        let name = spelled(key);
        if name.is_none() {
            unknown += 1;
            if unknown > MAX_UNKNOWN_KEYS {
                continue;
            }
        }
        assert_eq!(
            key_name(key).ok(),
            name,
            "key {key:?} looked up differently"
        );
        let value = match (name, value) {
            (Some(SECRET_KEY), Some(v)) => Some(marked(v)),
            (_, v) => v.map(str::to_string),
        };
        if let Some(v) = &value {
            scalars(v);
        }
        let result = settings.set(key, value.as_deref());
        match (name, &result) {
            (None, r) => {
                let e = r.as_ref().expect_err("unknown key accepted");
                assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
            }
            (Some(name), Err(e)) => {
                assert!(value.is_some(), "resetting {name} failed: {e}");
                assert!(
                    e.message().contains(name),
                    "error for {name} does not name the key: {e}"
                );
            }
            (Some(name), Ok(shown)) => {
                if let (Some(shown), false) = (shown, name == SECRET_KEY) {
                    let mut fresh = Settings::new();
                    let again = fresh.set(name, Some(shown));
                    assert_eq!(
                        again.as_ref().ok().and_then(|v| v.as_deref()),
                        Some(shown.as_str()),
                        "{name}: {value:?} is shown as {shown:?}, which sets to {again:?}"
                    );
                }
            }
        }
        outputs.push(format!("{result:?}"));
        if let Some(name) = name {
            outputs.push(format!("{:?}", settings.get(name)));
        }
    }
    for spec in keys() {
        outputs.push(format!("{:?}", settings.get(spec.name)));
    }
    outputs.push(settings.to_json_string());
    outputs.push(settings.to_json().to_string());
    outputs.push(format!("{settings:?}"));
    let json = settings.to_json_string();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).ok(),
        Some(settings.to_json()),
        "to_json_string() is not the JSON of to_json(): {json}"
    );
    match settings.resolve() {
        Ok(resolved) => {
            outputs.push(format!("{resolved:?}"));
            outputs.push(resolved.replica_display());
            if let ReplicaTarget::S3(t) = &resolved.target {
                check_display_url(t);
            }
        }
        Err(e) => outputs.push(e.to_string()),
    }
    for o in &outputs {
        assert!(!o.contains(MARK), "the secret leaks: {o}");
    }
}
