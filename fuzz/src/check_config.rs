//! Configuration checks: the key table (`config::keys()`) driven like `litestream_configure()`
//! calls. The input is text, one call per line: `key=value` sets, a bare `key` resets. Every
//! call either succeeds or is an `Err` whose message names the key; an accepted value, set again
//! in fresh settings, is shown unchanged (normalization is a fixed point); and no output (set and
//! get results, errors, JSON, `Debug`, resolution) ever contains the secret. The harness wraps
//! every secret it passes around a marker, so a leak is any output holding the marker. Each
//! value is also fed to the scalar parsers (sizes, durations, bools), and a parsed duration must
//! survive `format_duration` unchanged.

use crate::config::{
    format_duration, key_name, keys, parse_bool, parse_duration, parse_size, ConfigErrorKind,
    Settings,
};

/// Put in the middle of every secret the harness sets. Long enough never to appear by chance.
const MARK: &str = "QmarkSECRETmarkQ";
const SECRET_KEY: &str = "secret-access-key";
/// At most this many calls per input: enough for any combination of keys, bounded work.
const MAX_CALLS: usize = 48;

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

pub fn keys_and_values(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if text.contains(MARK) {
        return;
    }
    let mut settings = Settings::new();
    let mut outputs: Vec<String> = Vec::new();
    for line in text.split('\n').take(MAX_CALLS) {
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        let name = key_name(key);
        let value = match (&name, value) {
            (Ok(SECRET_KEY), Some(v)) => Some(marked(v)),
            (_, v) => v.map(str::to_string),
        };
        if let Some(v) = &value {
            scalars(v);
        }
        let result = settings.set(key, value.as_deref());
        match (&name, &result) {
            (Err(e), _) => {
                assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
                assert!(result.is_err(), "unknown key {key:?} accepted");
            }
            (Ok(name), Err(e)) => {
                assert!(value.is_some(), "resetting {name} failed: {e}");
                assert!(
                    e.message().contains(name),
                    "error for {name} does not name the key: {e}"
                );
            }
            (Ok(name), Ok(shown)) => {
                if let (Some(shown), false) = (shown, *name == SECRET_KEY) {
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
        if let Ok(name) = name {
            outputs.push(format!("{:?}", settings.get(name)));
        }
    }
    for spec in keys() {
        outputs.push(format!("{:?}", settings.get(spec.name)));
    }
    outputs.push(settings.to_json_string());
    outputs.push(settings.to_json().to_string());
    outputs.push(format!("{settings:?}"));
    match settings.resolve() {
        Ok(resolved) => {
            outputs.push(format!("{resolved:?}"));
            outputs.push(resolved.replica_display());
        }
        Err(e) => outputs.push(e.to_string()),
    }
    for o in &outputs {
        assert!(!o.contains(MARK), "the secret leaks: {o}");
    }
}
