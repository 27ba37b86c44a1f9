//! Unit tests of the configuration module, by concept: the key table, scalar values, names and
//! endpoints, URLs, and resolution (with redaction and reset). Helpers shared by all of them
//! live here.

pub(super) use std::path::Path;
pub(super) use std::time::Duration;

pub(super) use super::keys::*;
pub(super) use super::parse::*;
pub(super) use super::resolve::*;
pub(super) use super::url::*;
pub(super) use super::*;

mod keys;
mod names;
mod resolve;
mod urls;
mod values;

pub(super) const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

pub(super) fn set(s: &mut Settings, k: &str, v: &str) -> String {
    s.set(k, Some(v))
        .unwrap_or_else(|e| panic!("set {k}={v}: {e}"))
        .unwrap_or_default()
}

pub(super) fn set_err(k: &str, v: &str) -> String {
    Settings::new()
        .set(k, Some(v))
        .expect_err(&format!("{k}={v} should fail"))
        .to_string()
}

pub(super) fn s3_basic() -> Settings {
    let mut s = Settings::new();
    set(&mut s, "bucket", "mybucket");
    set(&mut s, "path", "db");
    s
}

pub(super) fn resolve(s: &Settings) -> Result<ResolvedConfig, ConfigError> {
    s.resolve_with_env(&no_env)
}

pub(super) fn s3_target(s: &Settings) -> S3Target {
    match resolve(s).expect("resolve").target {
        ReplicaTarget::S3(t) => t,
        other => panic!("not s3: {other:?}"),
    }
}

pub(super) fn target_from_url_using_env(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ReplicaTarget, ConfigError> {
    target_from_url_using(url, None, env)
}
