//! The key table: order, defaults, samples, lookup and the unknown-key message.

use super::*;

// --- key table ---------------------------------------------------------------------------

#[test]
fn key_table_order_and_defaults() {
    let names: Vec<&str> = keys().iter().map(|k| k.name).collect();
    assert_eq!(
        names,
        [
            "type",
            "url",
            "bucket",
            "path",
            "region",
            "endpoint",
            "force-path-style",
            "skip-verify",
            "access-key-id",
            "secret-access-key",
            "sync-interval",
            "part-size",
            "concurrency",
            "min-checkpoint-page-count",
            "checkpoint-interval",
            "truncate-page-n",
            "lease",
            "lease-ttl",
            "lease-owner",
            "levels",
            "l0-retention",
            "snapshot-interval",
            "snapshot-retention",
            "retention"
        ]
    );
    let secrets: Vec<&str> = keys().iter().filter(|k| k.secret).map(|k| k.name).collect();
    assert_eq!(secrets, ["secret-access-key"]);
    // Every fixed default is already in normalized form.
    for k in keys() {
        assert!(!k.help.is_empty());
        if let Some(d) = k.fixed_default() {
            assert_eq!(k.normalize(&d).unwrap(), d, "{}", k.name);
        }
    }
}

#[test]
fn fixed_defaults_come_from_the_typed_constants() {
    let fixed: Vec<(&str, String)> = keys()
        .iter()
        .filter_map(|k| k.fixed_default().map(|d| (k.name, d)))
        .collect();
    let expect = [
        ("sync-interval", "1s"),
        ("min-checkpoint-page-count", "1000"),
        ("checkpoint-interval", "1m"),
        ("truncate-page-n", "121359"),
        ("lease-ttl", "30s"),
        ("levels", "30s,5m,1h"),
        ("l0-retention", "5m"),
        ("snapshot-interval", "24h"),
        ("snapshot-retention", "24h"),
        ("retention", "on"),
    ];
    let fixed: Vec<(&str, &str)> = fixed.iter().map(|(k, d)| (*k, d.as_str())).collect();
    assert_eq!(fixed, expect);
    // What resolve runs with is the constant itself.
    let r = resolve(&s3_basic()).unwrap();
    assert_eq!(r.sync_interval, DEFAULT_SYNC_INTERVAL);
    assert_eq!(
        r.min_checkpoint_page_count,
        DEFAULT_MIN_CHECKPOINT_PAGE_COUNT
    );
    assert_eq!(r.checkpoint_interval, Some(DEFAULT_CHECKPOINT_INTERVAL));
    assert_eq!(r.truncate_page_n, Some(DEFAULT_TRUNCATE_PAGE_N));
    assert_eq!(r.lease_ttl, DEFAULT_LEASE_TTL);
    assert_eq!(r.levels, DEFAULT_LEVELS.to_vec());
    assert_eq!(r.part_size, DEFAULT_PART_SIZE);
    assert_eq!(r.concurrency, DEFAULT_CONCURRENCY);
}

/// Every sample of every key is accepted, its normalized text normalizes to itself, and a
/// configuration holding it still resolves (or fails only for a reason other than the value).
#[test]
fn every_sample_is_accepted_and_normalized_text_is_stable() {
    for k in keys() {
        assert!(!k.samples.is_empty(), "{} has no samples", k.name);
        for v in k.samples {
            let n = k
                .normalize(v)
                .unwrap_or_else(|e| panic!("{} sample {v:?}: {e}", k.name));
            assert_eq!(k.normalize(&n).unwrap(), n, "{} {v:?}", k.name);
            let mut s = Settings::new();
            s.set(k.name, Some(v)).unwrap();
            if let Err(e) = s.resolve_with_env(&no_env) {
                assert_ne!(
                    e.kind(),
                    ConfigErrorKind::InvalidValue,
                    "{} {v:?}: {e}",
                    k.name
                );
            }
        }
    }
}

#[test]
fn key_name_finds_every_spelling() {
    assert_eq!(key_name("PART_SIZE").unwrap(), "part-size");
    assert_eq!(key_name("forcePathStyle").unwrap(), "force-path-style");
    assert_eq!(
        key_name("nope").unwrap_err().kind(),
        ConfigErrorKind::UnknownKey
    );
}

#[test]
fn unknown_key_lists_all_keys() {
    let e = set_err("foo", "1");
    assert_eq!(
        e,
        "unknown key 'foo'; valid keys: type, url, bucket, path, region, endpoint, \
         force-path-style, skip-verify, access-key-id, secret-access-key, sync-interval, \
         part-size, concurrency, min-checkpoint-page-count, checkpoint-interval, truncate-page-n, \
         lease, lease-ttl, lease-owner, \
         levels, l0-retention, snapshot-interval, snapshot-retention, retention"
    );
    let e = Settings::new().get("foo").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
    let e = set_err("part-sise", "5MB");
    assert!(
        e.starts_with("unknown key 'part-sise'; valid keys: type, url,"),
        "{e}"
    );
    assert!(
        e.ends_with(&format!("Did you mean 'part-size' ({})?", keys()[11].help)),
        "{e}"
    );
    assert!(set_err("", "x").starts_with("unknown key ''; valid keys:"));
}

#[test]
fn key_spelling_variants() {
    let mut s = Settings::new();
    assert_eq!(set(&mut s, "partSize", "10MB"), "10485760");
    assert_eq!(set(&mut s, "PART_SIZE", "5MB"), "5242880");
    assert_eq!(set(&mut s, "forcePathStyle", "yes"), "true");
    assert_eq!(s.get(" Part-Size ").unwrap().as_deref(), Some("5242880"));
}
