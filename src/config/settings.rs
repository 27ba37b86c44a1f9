//! [`Settings`]: the keys a database was configured with, as normalized text, and the values
//! in effect (set, else derived from other keys, else the key's default) as
//! `litestream_configure(key)` and `litestream_config()` show them.
//!
//! Invariants:
//! - Only text a key's checker returned is stored; a failed `set` leaves the previous value.
//! - Secrets are stored but never returned: getters and JSON show [`REDACTED`], `Debug` too.
//! - The value shown for an unset key is what `resolve` would use (same derivation code), except
//!   where it needs the environment at start (region, credentials).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::keys::{self, lookup, Default, KeySpec};
use super::parse::{format_on_off, DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE, R2_DEFAULT_CONCURRENCY};
use super::url::{is_r2_endpoint, parse_replica_url, ReplicaUrl, S3Url};
use super::{default_lease_owner, ConfigError, ConfigErrorKind, REDACTED};

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

/// Reads an environment variable (a parameter so tests can supply their own environment).
pub(super) type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Settings {
    /// Empty settings (every key at its default).
    pub fn new() -> Self {
        Self::default()
    }

    /// The normalized text stored for `key`, if it was set.
    pub(super) fn stored(&self, key: &KeySpec) -> Option<&str> {
        self.values.get(key.name).map(|s| s.text.as_str())
    }

    /// Validates and normalizes `value` for `key`, stores it, and returns the value now in
    /// effect (as [`Settings::get`]). `None` resets the key to its default. Secrets come
    /// back as [`REDACTED`].
    pub fn set(&mut self, key: &str, value: Option<&str>) -> Result<Option<String>, ConfigError> {
        let spec = lookup(key)?;
        let is_path = spec.name == keys::PATH.name;
        match value {
            None => {
                self.values.remove(spec.name);
                if is_path {
                    self.path_base = None;
                }
            }
            Some(raw) => {
                let text = spec.normalize(raw)?;
                if is_path {
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

    /// [`Settings::set`] for a database that is being replicated (`db` names it in the error).
    /// The running replicator keeps the configuration it started with, so one rule holds for
    /// every key: a value that changes nothing is accepted (and returned), any change is
    /// refused with the way out (stop, configure, start). A bad value or an unknown key is
    /// reported as such first.
    pub fn set_while_replicating(
        &mut self,
        key: &str,
        value: Option<&str>,
        db: &str,
    ) -> Result<Option<String>, ConfigError> {
        let spec = lookup(key)?;
        let mut changed = self.clone();
        changed.set(key, value)?;
        if changed.stored(spec) == self.stored(spec) {
            return self.get(spec.name);
        }
        Err(ConfigError::new(
            ConfigErrorKind::Conflict,
            format!(
                "cannot change '{}' while {db} is being replicated (the replicator keeps the configuration it started with): call litestream_stop() first, then configure it and call litestream_start() again",
                spec.name
            ),
        ))
    }

    /// The value in effect for `key`: the value that was set, else the default as it would
    /// apply now (e.g. `force-path-style` is `true` once an endpoint is set, `concurrency`
    /// is `2` for a Cloudflare R2 endpoint, `type` follows the url or bucket, values in the
    /// url's query apply), else `None`. Secrets come back as [`REDACTED`].
    pub fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let spec = lookup(key)?;
        Ok(self.value_of(spec, &process_env))
    }

    /// The value in effect for `spec`, as [`Settings::get`] shows it.
    pub(super) fn value_of(&self, spec: &KeySpec, env: EnvFn<'_>) -> Option<String> {
        if spec.secret {
            return self.stored(spec).map(|_| REDACTED.to_string());
        }
        if spec.name == keys::PATH.name {
            let p = self.stored(&keys::PATH)?;
            if self.stored(&keys::TYPE) == Some("file") {
                if let Ok(dir) = self.file_dir(p, env) {
                    return Some(dir.to_string_lossy().into_owned());
                }
            }
            return Some(p.to_string());
        }
        if let Some(v) = self.stored(spec) {
            return Some(v.to_string());
        }
        match spec.default() {
            Default::None => None,
            Default::Fixed(text) => Some(text()),
            Default::Derived(derive) => derive(self, env),
        }
    }

    /// The S3 url, if the url is one.
    pub(super) fn s3_url(&self) -> Option<S3Url> {
        match self.url() {
            Some(ReplicaUrl::S3(u)) => Some(u),
            _ => None,
        }
    }

    // Derived defaults (the key table points at these): what an unset key is, given the rest.

    pub(super) fn default_type(&self, _env: EnvFn<'_>) -> Option<String> {
        self.derived_type(self.url().as_ref()).map(str::to_string)
    }

    pub(super) fn default_force_path_style(&self, _env: EnvFn<'_>) -> Option<String> {
        let url = self.s3_url();
        let url = url.as_ref();
        let on = url
            .and_then(|u| u.force_path_style)
            .unwrap_or_else(|| self.endpoint(url).is_some());
        Some(on.to_string())
    }

    pub(super) fn default_skip_verify(&self, _env: EnvFn<'_>) -> Option<String> {
        let on = self.s3_url().and_then(|u| u.skip_verify).unwrap_or(false);
        Some(on.to_string())
    }

    pub(super) fn default_part_size(&self, _env: EnvFn<'_>) -> Option<String> {
        Some(self.part_size(self.s3_url().as_ref()).to_string())
    }

    pub(super) fn default_concurrency(&self, _env: EnvFn<'_>) -> Option<String> {
        Some(self.concurrency(self.s3_url().as_ref()).to_string())
    }

    pub(super) fn default_lease(&self, _env: EnvFn<'_>) -> Option<String> {
        let file = self.derived_type(self.url().as_ref()) == Some("file");
        Some(format_on_off(!file))
    }

    pub(super) fn default_lease_owner(&self, env: EnvFn<'_>) -> Option<String> {
        Some(default_lease_owner(env))
    }

    /// The stored url, parsed (it was validated when set).
    pub(super) fn url(&self) -> Option<ReplicaUrl> {
        self.stored(&keys::URL)
            .and_then(|u| parse_replica_url(u).ok())
    }

    pub(super) fn derived_type(&self, url: Option<&ReplicaUrl>) -> Option<&'static str> {
        match (self.stored(&keys::TYPE), url) {
            (Some("file"), _) => Some("file"),
            (Some(_), _) => Some("s3"),
            (None, Some(u)) => Some(u.scheme()),
            (None, None) if self.stored(&keys::BUCKET).is_some() => Some("s3"),
            _ => None,
        }
    }

    /// The endpoint: the key, else the url's.
    pub(super) fn endpoint(&self, url: Option<&S3Url>) -> Option<String> {
        self.stored(&keys::ENDPOINT)
            .map(str::to_string)
            .or_else(|| url.and_then(|u| u.endpoint.clone()))
    }

    /// The part size: the key, else the url's, else the default.
    pub(super) fn part_size(&self, url: Option<&S3Url>) -> u64 {
        self.stored(&keys::PART_SIZE)
            .and_then(|v| v.parse().ok())
            .or_else(|| url.and_then(|u| u.part_size))
            .unwrap_or(DEFAULT_PART_SIZE)
    }

    /// The concurrency: the key, else the url's, else the provider's default.
    pub(super) fn concurrency(&self, url: Option<&S3Url>) -> usize {
        if let Some(n) = self.stored(&keys::CONCURRENCY).and_then(|v| v.parse().ok()) {
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

    /// A `file` replica directory: `~` expanded, made absolute against the directory current
    /// when `path` was set, cleaned.
    pub(super) fn file_dir(&self, p: &str, env: EnvFn<'_>) -> Result<PathBuf, ConfigError> {
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

    /// Every key in table order with the value shown for it (null = unset, no default).
    fn shown(&self) -> impl Iterator<Item = (&'static str, serde_json::Value)> + '_ {
        keys::keys().iter().map(|spec| {
            let v = self.value_of(spec, &process_env);
            (
                spec.name,
                v.map_or(serde_json::Value::Null, serde_json::Value::String),
            )
        })
    }

    /// All keys in table order, as a JSON object of strings (null = unset, no default);
    /// secrets as `"********"`. Key order in the `Value` follows serde_json's map (table
    /// order only with its `preserve_order` feature); [`Settings::to_json_string`] always
    /// keeps table order.
    pub fn to_json(&self) -> serde_json::Value {
        let map = self
            .shown()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<serde_json::Map<_, _>>();
        serde_json::Value::Object(map)
    }

    /// [`Settings::to_json`] as compact text, keys always in table order.
    pub fn to_json_string(&self) -> String {
        let fields: Vec<String> = self
            .shown()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.to_string())))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

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
