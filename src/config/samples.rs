//! Values shared by the unit tests and the fuzzer (`fuzz/make_dict.py` reads them from this
//! file and the key table into the dictionary of the text targets), so both exercise the same
//! inputs and neither keeps a copy that goes stale: every key's sample values (from the key table)
//! and a list of hostile fragments (edge numbers, broken URLs, odd Unicode, separators).
//!
//! Invariant: nothing here is used by the extension at run time; the functions are
//! `#[doc(hidden)]` (not API): the unit tests call them, the fuzzer reads this file.

use super::keys::keys;

/// Fragments that have tripped parsers: empty and blank text, control characters, non-ASCII
/// digits and units, numbers at and past every limit, unbalanced brackets and percent signs,
/// URL pieces, and combinations of them.
static ODD_INPUTS: &[&str] = &[
    "",
    " ",
    "\t",
    "\0",
    "\u{7}",
    "\u{1F600}",
    "🦀",
    "é",
    "µ",
    "µs",
    "1µ",
    "0",
    "1",
    "-1",
    "-0",
    "+1",
    "5",
    "1.5",
    "1.",
    "-",
    "+",
    "-+",
    "+-1s",
    "1.5.5s",
    "1e7",
    "1e9",
    "1E-3",
    "1e99999",
    "5e",
    "5MB",
    "5MiB",
    "5mb",
    "5.5MB",
    "5242879",
    "5GB",
    "K",
    "M",
    "G",
    "T",
    "KB",
    "kb",
    "B",
    "iB",
    "99999999999999999999",
    "9999999999999999999999999999999999999",
    "9223372036854775807s",
    "99999999999999999999999999999999999999999h",
    "0.99999999999999999999999999999999999999999G",
    "1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h",
    "1s",
    "100ms",
    "1ns",
    "1m30s",
    "-1s",
    "1h",
    "0s",
    "ms",
    "true",
    "false",
    "TRUE",
    "yes",
    "on",
    "off",
    "s3",
    "file",
    "gcs",
    "%",
    "%%",
    "%f",
    "%zz",
    "%41",
    "%2E%2E",
    "/",
    "//",
    ".",
    "..",
    "?",
    "&",
    "=",
    ":",
    "@",
    "user:pass@",
    "[",
    "[]",
    "[::1]",
    "127.0.0.1:9000",
    "999.1.1.1",
    "r2.cloudflarestorage.com",
    "endpoint=",
    "part-size=",
    "concurrency=",
    "region=",
    "force-path-style=",
    "http://",
    "https://",
    "http://[",
    "http://[]:",
    "http://[::1]x",
    "s3://",
    "s3://%",
    "s3://b",
    "s3://b/",
    "s3://b/%",
    "s3://b/p",
    "s3://b?&&&",
    "s3://b/p?=",
    "s3://b/p?=x",
    "s3://b/p?endpoint=",
    "s3://b/a/../c",
    "s3://[::1]:9000/p",
    "s3://b.[::1]:9000/p",
    "s3://b/\u{7}",
    "s3://B\u{e9}/p",
    "s3://\u{e9}\u{e9}.s3.amazonaws.com/p",
    "s3://x.s3.\u{e9}.amazonaws.com/p",
    "s3://\u{e9}.localhost:1/p",
    "s3://\u{e9}:1/p",
    "s3://a.\u{e9}.digitaloceanspaces.com/",
    "file://",
    "file:///",
    "file:///%00",
    "file:///tmp/x",
    "file://relative",
];

/// Hostile fragments for any key or parser.
#[doc(hidden)]
pub fn odd_inputs() -> &'static [&'static str] {
    ODD_INPUTS
}

/// Every key's sample values followed by the odd inputs: the vocabulary the fuzzer builds
/// values from.
#[doc(hidden)]
pub fn sample_values() -> Vec<&'static str> {
    keys()
        .iter()
        .flat_map(|k| k.samples.iter().copied())
        .chain(ODD_INPUTS.iter().copied())
        .collect()
}
