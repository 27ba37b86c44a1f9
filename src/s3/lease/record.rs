//! lock.json and the clock arithmetic of the lease protocol.
//!
//! The lease is `<path>/lock.json`, `{"token": 1, "expires_at": 1740151473.206179, "owner":
//! "hostname:pid"}`. A lock written by Litestream's Go `s3.Leaser` (`"generation"`, RFC 3339
//! `expires_at`) is read and respected too.
//!
//! Invariants:
//! - A body we write has exactly the guide's layout and key order; a body we cannot read is an
//!   error, never a default, so a lock we do not understand is never overwritten.
//! - A lock is free only strictly past its `expires_at` (Litestream's `time.Now().After`).
//! - Every period derives from the TTL ([`Timing`]), and the fence always stays open past the next
//!   renewal, so a holder whose renewals succeed never stops uploading.

use std::time::{Duration, Instant, SystemTime};

/// The lock object, beside the replica's level directories (Litestream's `s3.Leaser` key).
pub const LOCK_NAME: &str = "lock.json";
/// A standby re-reads lock.json at least this often, so a released lease is taken at once.
const MAX_STANDBY_POLL: Duration = Duration::from_secs(1);
/// A standby wakes this long after the holder's `expires_at`: the comparison is strict
/// (`now > expires_at`), and the wake-up must not land just before it.
const EXPIRY_SLACK: Duration = Duration::from_millis(5);
/// Retry period of a failed renewal (network error): several tries fit before the fence closes.
const MAX_RENEW_RETRY: Duration = Duration::from_secs(1);

/// Which program's format a lock was read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockFormat {
    /// `{"token": N, "expires_at": <Unix seconds>, "owner": "…"}` (the guide's format; ours).
    Token,
    /// Litestream's Go `s3.Leaser`: `{"generation": N, "expires_at": "<RFC 3339>", "owner": "…"}`.
    GoLeaser,
}

/// The content of `lock.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRecord {
    /// Lease generation; each new holder writes the previous token + 1.
    pub token: u64,
    /// Unix seconds (wall clock of the writer) after which the lease is free.
    pub expires_at: f64,
    pub owner: String,
    pub format: LockFormat,
}

impl LeaseRecord {
    pub fn new(token: u64, expires_at: f64, owner: &str) -> LeaseRecord {
        LeaseRecord {
            token,
            expires_at,
            owner: owner.to_string(),
            format: LockFormat::Token,
        }
    }

    /// The body we write, exactly in the guide's layout and key order:
    /// `{"token": 1, "expires_at": 1740151473.206179, "owner": "hostname:pid"}`.
    pub fn to_json(&self) -> String {
        let owner = serde_json::Value::String(self.owner.clone()).to_string();
        format!(
            "{{\"token\": {}, \"expires_at\": {}, \"owner\": {owner}}}",
            self.token,
            format_unix_seconds(self.expires_at)
        )
    }

    /// Reads either format. Anything else is an error: a lock we cannot understand is never
    /// overwritten.
    pub fn parse(body: &[u8]) -> std::result::Result<LeaseRecord, String> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let owner = match obj.get("owner") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err("\"owner\" is not a string".into()),
        };
        let (token, format) = if let Some(t) = obj.get("token") {
            (
                t.as_u64().ok_or("\"token\" is not a whole number ≥ 0")?,
                LockFormat::Token,
            )
        } else if let Some(g) = obj.get("generation") {
            (
                g.as_u64()
                    .ok_or("\"generation\" is not a whole number ≥ 0")?,
                LockFormat::GoLeaser,
            )
        } else {
            return Err("neither \"token\" nor \"generation\" is present".into());
        };
        let expires_at = match obj.get("expires_at") {
            Some(serde_json::Value::Number(n)) => {
                n.as_f64().ok_or("\"expires_at\" is out of range")?
            }
            Some(serde_json::Value::String(s)) => parse_rfc3339(s)?,
            _ => return Err("\"expires_at\" is missing or neither a number nor a time".into()),
        };
        if !expires_at.is_finite() {
            return Err("\"expires_at\" is not finite".into());
        }
        Ok(LeaseRecord {
            token,
            expires_at,
            owner,
            format,
        })
    }

    /// Free to take: strictly past `expires_at` (Litestream: `time.Now().After(expires_at)`).
    pub fn expired(&self, now: f64) -> bool {
        now > self.expires_at
    }
}

/// Unix seconds with microseconds, as in the guide's example (`1740151473.206179`).
pub fn format_unix_seconds(t: f64) -> String {
    format!("{t:.6}")
}

/// RFC 3339 with any offset (Go writes the local offset, e.g. `-06:00`) → Unix seconds.
pub fn parse_rfc3339(s: &str) -> std::result::Result<f64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("\"expires_at\" {s:?} is not an RFC 3339 time ({e})"))?;
    Ok(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// Unix seconds → `2025-02-21T15:24:33.206Z`, for messages.
pub fn format_rfc3339(t: f64) -> String {
    crate::replica_client::format_timestamp_ms((t * 1000.0).round() as i64)
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Every period of the protocol, derived from the TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub ttl: Duration,
}

impl Timing {
    pub fn new(ttl: Duration) -> Timing {
        Timing { ttl }
    }

    /// The holder renews every third of the TTL: two renewals can fail before the fence closes.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How long before its lease ends (by its own clock) a holder stops uploading: a fifth of the
    /// TTL, at least a second (clock skew, request latency), but never more than a third, so the
    /// fence always stays open past the next renewal.
    pub fn fence_margin(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_secs(1)).min(self.ttl / 3)
    }

    /// Last moment a holder may upload after a lock write sent at `sent`.
    pub fn fence_deadline(&self, sent: Instant) -> Instant {
        sent + self.ttl - self.fence_margin()
    }

    /// How often a standby reads lock.json: at most a second (a released lease is taken at once),
    /// more often for short TTLs.
    pub fn standby_poll(&self) -> Duration {
        (self.ttl / 3).min(MAX_STANDBY_POLL)
    }

    /// How long a standby that saw `rec` sleeps: until the next poll, or just past the expiry.
    pub fn standby_wait(&self, rec: &LeaseRecord, now: f64) -> Duration {
        let until_expiry = rec.expires_at - now;
        let poll = self.standby_poll();
        if until_expiry <= 0.0 {
            return Duration::ZERO;
        }
        let to_expiry =
            Duration::from_secs_f64(until_expiry.min(poll.as_secs_f64())) + EXPIRY_SLACK;
        to_expiry.min(poll)
    }

    /// Retry period of a failed renewal.
    pub fn renew_retry(&self) -> Duration {
        (self.ttl / 12).clamp(Duration::from_millis(50), MAX_RENEW_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_exactly_the_guides_layout() {
        let r = LeaseRecord::new(1, 1740151473.206179, "hostname:pid");
        assert_eq!(
            r.to_json(),
            r#"{"token": 1, "expires_at": 1740151473.206179, "owner": "hostname:pid"}"#
        );
        let back = LeaseRecord::parse(r.to_json().as_bytes()).unwrap();
        assert_eq!(back, r);
        // Owners are JSON-escaped.
        let r = LeaseRecord::new(7, 0.5, "we\"ird\\host:1");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["owner"], "we\"ird\\host:1");
        assert_eq!(v["token"], 7);
        assert_eq!(v["expires_at"], 0.5);
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["token", "expires_at", "owner"]
        );
    }

    #[test]
    fn parses_go_leaser_locks() {
        // Go's time.Time JSON: RFC3339Nano with the writer's local offset.
        let go = br#"{"generation":4,"expires_at":"2025-02-21T09:24:33.206179123-06:00","owner":"web-2:77"}"#;
        let r = LeaseRecord::parse(go).unwrap();
        assert_eq!(r.format, LockFormat::GoLeaser);
        assert_eq!(r.token, 4);
        assert_eq!(r.owner, "web-2:77");
        assert!(
            (r.expires_at - 1740151473.206179).abs() < 1e-6,
            "{}",
            r.expires_at
        );
        // UTC, no fraction, owner omitted (Go's omitempty).
        let r =
            LeaseRecord::parse(br#"{"generation":1,"expires_at":"2025-02-21T15:24:33Z"}"#).unwrap();
        assert_eq!(r.expires_at, 1740151473.0);
        assert_eq!(r.owner, "");
        assert!(r.expired(1740151473.5) && !r.expired(1740151473.0));
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"token": -1, "expires_at": 1}"#,
            br#"{"token": 1}"#,
            br#"{"token": 1, "expires_at": "yesterday"}"#,
            br#"{"generation": 1, "expires_at": true}"#,
            br#"{"token": 1, "expires_at": 1, "owner": 5}"#,
        ] {
            assert!(
                LeaseRecord::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn timing_math() {
        let t = Timing::new(Duration::from_secs(30));
        assert_eq!(t.renew_every(), Duration::from_secs(10));
        assert_eq!(t.fence_margin(), Duration::from_secs(6));
        assert_eq!(t.standby_poll(), Duration::from_secs(1));
        let sent = Instant::now();
        assert_eq!(t.fence_deadline(sent), sent + Duration::from_secs(24));
        // Short TTLs: the margin never closes the fence before the next renewal.
        for ms in [1000u64, 1500, 2000, 3000, 5000, 10_000, 60_000] {
            let t = Timing::new(Duration::from_millis(ms));
            assert!(t.fence_margin() >= t.ttl / 5 || t.fence_margin() == t.ttl / 3);
            assert!(t.renew_every() < t.ttl - t.fence_margin(), "{ms}");
            assert!(
                t.renew_retry() < t.ttl - t.fence_margin() - t.renew_every(),
                "{ms}"
            );
            assert!(t.standby_poll() <= t.ttl / 3);
        }
        let t = Timing::new(Duration::from_secs(2));
        assert_eq!(t.fence_margin(), Duration::from_secs(2) / 3);
        // Standby: poll, or wake just after the expiry when it comes first.
        let rec = LeaseRecord::new(1, 100.0, "x");
        assert_eq!(t.standby_wait(&rec, 90.0), t.standby_poll());
        let w = t.standby_wait(&rec, 99.9);
        assert!(
            w > Duration::from_millis(100) && w < Duration::from_millis(110),
            "{w:?}"
        );
        assert_eq!(t.standby_wait(&rec, 100.5), Duration::ZERO);
    }
}
