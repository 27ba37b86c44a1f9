//! URL and S3 name checks (`config/url.rs`, reached as users reach it: the `url`, `endpoint`,
//! `bucket` and `region` keys and `target_from_url`). The input is one value. An accepted url is
//! stored as canonical text that sets to itself and names the same replica as the original; an
//! error names its key, stays short whatever the input's length, and never quotes the text
//! around an `@` (credentials, `user:secret@host`), as written or percent-encoded.

use crate::config::{target_from_url, ConfigErrorKind, Settings};

/// Error messages echo at most 120 characters of input (twice at most: a part and its value);
/// the rest is fixed text. Anything longer means input is echoed unbounded.
const MAX_MESSAGE_CHARS: usize = 1200;

/// The text around each `@` (up to 4 characters either side, at least 5 in all): what a
/// message must not quote if it withholds `user:secret@host`.
fn credential_windows(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for (i, _) in chars.iter().enumerate().filter(|(_, c)| **c == '@') {
        let w: String = chars[i.saturating_sub(4)..(i + 5).min(chars.len())]
            .iter()
            .collect();
        if w.chars().count() >= 5 {
            out.push(w);
        }
    }
    out
}

/// `%XX` decoded (invalid escapes kept), lossy: how a query value may hide an `@`.
fn percent_decoded(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) if hex.is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit())) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_key(key: &str, raw: &str) -> Option<String> {
    let mut s = Settings::new();
    match s.set(key, Some(raw)) {
        Ok(shown) => {
            let shown = shown.expect("a set key shows a value");
            let again = Settings::new().set(key, Some(&shown));
            assert_eq!(
                again.as_ref().ok().and_then(|v| v.as_deref()),
                Some(shown.as_str()),
                "{key}: {raw:?} is stored as {shown:?}, which sets to {again:?}"
            );
            Some(shown)
        }
        Err(e) => {
            let m = e.message();
            assert_eq!(e.kind(), ConfigErrorKind::InvalidValue, "{key}: {m}");
            assert!(m.contains(key), "error for {key} does not name it: {m}");
            assert!(
                m.chars().count() <= MAX_MESSAGE_CHARS,
                "{key}: error of {} characters",
                m.chars().count()
            );
            for text in [raw.to_string(), percent_decoded(raw)] {
                for w in credential_windows(&text) {
                    assert!(
                        !m.contains(&w),
                        "{key}: text around '@' ({w:?}) is echoed: {m}"
                    );
                }
            }
            None
        }
    }
}

pub fn url(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    if let Some(canonical) = check_key("url", &raw) {
        let a = target_from_url(&raw).map(|t| format!("{t:?}"));
        let b = target_from_url(&canonical).map(|t| format!("{t:?}"));
        assert_eq!(
            a, b,
            "{raw:?} and its canonical form {canonical:?} name different replicas"
        );
    }
    for key in ["endpoint", "bucket", "region"] {
        check_key(key, &raw);
    }
}
