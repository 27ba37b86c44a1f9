//! Resolution: [`Settings`] → a checked, typed [`ResolvedConfig`] (what `litestream_start()`
//! and `litestream_restore()` run with), including the environment (region, credentials,
//! `HOME`) and replicas named by URL.
//!
//! Invariants:
//! - A typed value is its key's value in effect (set, else derived, else default: the same
//!   text `litestream_configure(key)` shows) read back by the key's parser, so what is shown
//!   and what runs cannot differ.
//! - Contradictions and gaps (url with bucket, type against url scheme, half the credentials,
//!   lease on a file replica, skip-verify without an endpoint) are errors that say which
//!   key to reset; nothing is silently ignored.
//! - `Debug` of every type here hides the secret access key.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::keys::{self, KeySpec};
use super::parse::{self, parse_bool, DEFAULT_REGION};
use super::settings::{process_env, EnvFn, Settings};
use super::url::{dot_segment, dot_segment_error, parse_replica_url, url_error, ReplicaUrl, S3Url};
use super::{invalid, ConfigError, ConfigErrorKind, REDACTED};

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
    /// addressing style (for a path without empty segments or a leading `/`, which only a
    /// verbatim `path` key can have).
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
    /// Lease duration unless renewed (at least [`super::MIN_LEASE_TTL`]).
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

/// The two kinds of replica.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    S3,
    File,
}

/// `Some(d)` unless `d` is zero (the keys where 0 disables something).
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Settings {
    /// Checks the whole configuration for starting replication and produces the typed
    /// configuration. Reads the environment (`AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// `LITESTREAM_ACCESS_KEY_ID`, `LITESTREAM_SECRET_ACCESS_KEY`, `HOME`).
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        self.resolve_with_env(&process_env)
    }

    pub(super) fn resolve_with_env(&self, env: EnvFn<'_>) -> Result<ResolvedConfig, ConfigError> {
        let url = self.checked_url()?;
        let kind = self.replica_kind(url.as_ref())?;
        let part_size = self.effective(&keys::PART_SIZE, env, parse::part_size_value)?;
        let concurrency = self.effective(&keys::CONCURRENCY, env, parse::concurrency_value)?;
        let target = match (kind, &url) {
            (Kind::File, _) => self.file_target(url.as_ref(), env)?,
            (Kind::S3, url) => {
                let url = match url {
                    Some(ReplicaUrl::S3(u)) => Some(u),
                    _ => None,
                };
                ReplicaTarget::S3(self.s3_target(url, env, part_size, concurrency)?)
            }
        };
        Ok(ResolvedConfig {
            target,
            sync_interval: self.effective(&keys::SYNC_INTERVAL, env, parse::sync_interval_value)?,
            min_checkpoint_page_count: self.effective(
                &keys::MIN_CHECKPOINT_PAGE_COUNT,
                env,
                parse::page_count_value,
            )?,
            checkpoint_interval: nonzero(self.effective(
                &keys::CHECKPOINT_INTERVAL,
                env,
                parse::duration_setting,
            )?),
            truncate_page_n: self.effective(&keys::TRUNCATE_PAGE_N, env, parse::truncate_value)?,
            part_size,
            concurrency,
            lease: self.lease(kind, env)?,
            lease_ttl: self.effective(&keys::LEASE_TTL, env, parse::lease_ttl_value)?,
            lease_owner: self.effective(&keys::LEASE_OWNER, env, parse::lease_owner_value)?,
            levels: self.effective(&keys::LEVELS, env, parse::levels_value)?,
            l0_retention: nonzero(self.effective(
                &keys::L0_RETENTION,
                env,
                parse::duration_setting,
            )?),
            snapshot_interval: nonzero(self.effective(
                &keys::SNAPSHOT_INTERVAL,
                env,
                parse::duration_setting,
            )?),
            snapshot_retention: self.effective(
                &keys::SNAPSHOT_RETENTION,
                env,
                parse::duration_setting,
            )?,
            retention: self.effective(&keys::RETENTION, env, parse::on_off)?,
        })
    }

    /// The value in effect for `key` (as `get` shows it), read by the key's parser.
    fn effective<T>(
        &self,
        key: &KeySpec,
        env: EnvFn<'_>,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let text = self.value_of(key, env).ok_or_else(|| {
            ConfigError::new(
                ConfigErrorKind::Incomplete,
                format!("'{}' has no value: set it", key.name),
            )
        })?;
        parse(&text).map_err(|e| invalid(key.name, &text, &e))
    }

    /// The url, parsed, and alone: `bucket` and `path` name the replica too, so they cannot be
    /// combined with it.
    fn checked_url(&self) -> Result<Option<ReplicaUrl>, ConfigError> {
        let Some(text) = self.stored(&keys::URL) else {
            return Ok(None);
        };
        let url = parse_replica_url(text).map_err(|e| url_error(text, &e))?;
        let set: Vec<&str> = [&keys::BUCKET, &keys::PATH]
            .into_iter()
            .filter(|k| self.stored(k).is_some())
            .map(|k| k.name)
            .collect();
        if set.is_empty() {
            return Ok(Some(url));
        }
        let resets: Vec<String> = set
            .iter()
            .map(|k| format!("litestream_configure('{k}', NULL)"))
            .collect();
        Err(ConfigError::new(
            ConfigErrorKind::Conflict,
            format!(
                "'url' cannot be combined with 'bucket' or 'path' (set: {}); reset {} with {}, or reset the url with litestream_configure('url', NULL)",
                set.join(", "),
                if set.len() == 1 { "it" } else { "them" },
                resets.join(" and ")
            ),
        ))
    }

    /// S3 or file: the `type` key, which must agree with the url's scheme, else the scheme,
    /// else S3 when a bucket is set.
    fn replica_kind(&self, url: Option<&ReplicaUrl>) -> Result<Kind, ConfigError> {
        let kind = |t: &str| if t == "file" { Kind::File } else { Kind::S3 };
        match (self.stored(&keys::TYPE), url) {
            (Some(t), Some(u)) if t != u.scheme() => Err(ConfigError::new(
                ConfigErrorKind::Conflict,
                format!(
                    "type '{t}' contradicts the url scheme '{}://'; reset the type with litestream_configure('type', NULL) or change the url",
                    u.scheme()
                ),
            )),
            (Some(t), _) => Ok(kind(t)),
            (None, Some(u)) => Ok(kind(u.scheme())),
            (None, None) if self.stored(&keys::BUCKET).is_some() => Ok(Kind::S3),
            (None, None) if self.stored(&keys::PATH).is_some() => Err(ConfigError::new(
                ConfigErrorKind::Incomplete,
                "'bucket' is not set: set 'bucket' for an S3 replica, or set 'type' to 'file' to use 'path' as the replica directory",
            )),
            (None, None) => Err(ConfigError::new(
                ConfigErrorKind::Incomplete,
                "no replica configured: set 'bucket' and 'path' (S3) or 'url' (s3://… or file:///…)",
            )),
        }
    }

    fn file_target(
        &self,
        url: Option<&ReplicaUrl>,
        env: EnvFn<'_>,
    ) -> Result<ReplicaTarget, ConfigError> {
        if self.stored(&keys::BUCKET).is_some() {
            return Err(ConfigError::new(
                ConfigErrorKind::Conflict,
                "'bucket' is set but the replica type is file; reset it with litestream_configure('bucket', NULL)",
            ));
        }
        let dir = match (url, self.stored(&keys::PATH)) {
            (Some(ReplicaUrl::File(dir)), _) => dir.clone(),
            (_, Some(p)) => {
                let dir = self.file_dir(p, env)?;
                if dir.parent().is_none() {
                    return Err(invalid(
                        keys::PATH.name,
                        p,
                        "the replica directory cannot be the root directory /",
                    ));
                }
                dir
            }
            _ => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Incomplete,
                    "a file replica needs 'path' (the replica directory) or a file:///… url",
                ))
            }
        };
        Ok(ReplicaTarget::File { dir })
    }

    fn s3_target(
        &self,
        url: Option<&S3Url>,
        env: EnvFn<'_>,
        part_size: u64,
        concurrency: usize,
    ) -> Result<S3Target, ConfigError> {
        let (bucket, path) = self.bucket_and_path(url)?;
        let (access_key_id, secret_access_key) = credentials(
            self.stored(&keys::ACCESS_KEY_ID),
            self.stored(&keys::SECRET_ACCESS_KEY),
            env,
        )?;
        let endpoint = self.endpoint(url);
        let skip_verify = self.effective(&keys::SKIP_VERIFY, env, parse_bool)?;
        if skip_verify && endpoint.is_none() {
            return Err(ConfigError::new(
                ConfigErrorKind::Conflict,
                "skip-verify is true but no endpoint is set: skipping certificate checks is for a custom https:// endpoint (e.g. a self-signed MinIO), AWS S3 is always verified; set 'endpoint', or reset skip-verify with litestream_configure('skip-verify', NULL)",
            ));
        }
        Ok(S3Target {
            bucket,
            path,
            region: self.region(url, env),
            endpoint,
            force_path_style: self.effective(&keys::FORCE_PATH_STYLE, env, parse_bool)?,
            skip_verify,
            access_key_id,
            secret_access_key,
            part_size,
            concurrency,
        })
    }

    fn bucket_and_path(&self, url: Option<&S3Url>) -> Result<(String, String), ConfigError> {
        let (bucket, path) = match url {
            Some(u) => (Some(u.bucket.clone()), u.path.clone()),
            None => (
                self.stored(&keys::BUCKET).map(str::to_string),
                self.stored(&keys::PATH).unwrap_or("").to_string(),
            ),
        };
        let bucket = bucket.ok_or_else(|| {
            ConfigError::new(
                ConfigErrorKind::Incomplete,
                "an S3 replica needs 'bucket': set it with litestream_configure('bucket', 'my-bucket')",
            )
        })?;
        // A url's path is never empty (its parser refuses that).
        if path.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Incomplete,
                "an S3 replica needs 'path' (the key prefix in the bucket): set it with litestream_configure('path', 'app.db')",
            ));
        }
        if let Some(seg) = dot_segment(&path) {
            return Err(invalid(keys::PATH.name, &path, &dot_segment_error(seg)));
        }
        Ok((bucket, path))
    }

    /// The key, else the url's, else `AWS_REGION`, `AWS_DEFAULT_REGION`, `us-east-1`.
    fn region(&self, url: Option<&S3Url>, env: EnvFn<'_>) -> String {
        self.stored(&keys::REGION)
            .map(str::to_string)
            .or_else(|| url.and_then(|u| u.region.clone()))
            .or_else(|| env("AWS_REGION").filter(|r| !r.trim().is_empty()))
            .or_else(|| env("AWS_DEFAULT_REGION").filter(|r| !r.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_REGION.to_string())
    }

    fn lease(&self, kind: Kind, env: EnvFn<'_>) -> Result<bool, ConfigError> {
        if kind == Kind::File && self.stored(&keys::LEASE) == Some("on") {
            return Err(ConfigError::new(
                ConfigErrorKind::Conflict,
                "lease 'on' needs an S3 replica (it relies on S3 conditional writes); a file replica has no lease: reset it with litestream_configure('lease', NULL)",
            ));
        }
        Ok(kind == Kind::S3 && self.effective(&keys::LEASE, env, parse::on_off)?)
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

/// Parses a replica URL (as given in `litestream_restore` options) into a target. Everything
/// not in the URL takes its default: region from `AWS_REGION` / `AWS_DEFAULT_REGION` /
/// `us-east-1`, credentials from `LITESTREAM_ACCESS_KEY_ID` + `LITESTREAM_SECRET_ACCESS_KEY`
/// when both are set, else `None` (AWS default chain).
pub fn target_from_url(url: &str) -> Result<ReplicaTarget, ConfigError> {
    target_from_url_using(url, None, &process_env)
}

/// Keys of a connection's configuration that also apply to a replica named by URL: a user who
/// configured credentials (or skip-verify) with `litestream_configure` and restores from another
/// replica by URL expects them to be used there too, as the environment's are.
const URL_INHERITED_KEYS: [&KeySpec; 3] = [
    &keys::ACCESS_KEY_ID,
    &keys::SECRET_ACCESS_KEY,
    &keys::SKIP_VERIFY,
];

/// The replica named by `url`, with the credentials configured in `configured` (a connection's
/// settings) when the URL is an S3 one; the environment fills in what neither gives.
pub fn target_from_url_with_settings(
    url: &str,
    configured: &Settings,
) -> Result<ReplicaTarget, ConfigError> {
    target_from_url_using(url, Some(configured), &process_env)
}

pub(super) fn target_from_url_using(
    url: &str,
    configured: Option<&Settings>,
    env: EnvFn<'_>,
) -> Result<ReplicaTarget, ConfigError> {
    let mut settings = Settings::new();
    settings.set(keys::URL.name, Some(url))?;
    if let Some(c) = configured.filter(|_| url.trim_start().starts_with("s3://")) {
        // skip-verify only ever applies to a custom endpoint: a url without one is AWS.
        let has_endpoint = settings.endpoint(settings.s3_url().as_ref()).is_some();
        for key in URL_INHERITED_KEYS {
            if key.name == keys::SKIP_VERIFY.name && !has_endpoint {
                continue;
            }
            if let Some(v) = c.stored(key) {
                settings.set(key.name, Some(v))?;
            }
        }
    }
    settings.resolve_with_env(env).map(|r| r.target)
}
