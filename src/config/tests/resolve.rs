//! Resolution, credentials, file replicas, replicas by URL, redaction, reset, JSON, odd input.

use super::*;

// --- resolve ---------------------------------------------------------------------------------

#[test]
fn resolve_s3_from_keys() {
    let mut s = s3_basic();
    set(&mut s, "region", "eu-central-1");
    set(&mut s, "access-key-id", "AKIDEXAMPLE");
    set(&mut s, "secret-access-key", SECRET);
    set(&mut s, "part-size", "10MB");
    set(&mut s, "concurrency", "10");
    set(&mut s, "skip-verify", "true");
    // skip-verify is for a custom endpoint: without one (AWS) start refuses it.
    let e = resolve(&s).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Conflict);
    assert_eq!(
        e.to_string(),
        "skip-verify is true but no endpoint is set: skipping certificate checks is for a custom https:// endpoint (e.g. a self-signed MinIO), AWS S3 is always verified; set 'endpoint', or reset skip-verify with litestream_configure('skip-verify', NULL)"
    );
    let mut u = Settings::new();
    set(&mut u, "url", "s3://bkt/db?skip-verify=true");
    assert_eq!(resolve(&u).unwrap_err().to_string(), e.to_string());
    set(
        &mut u,
        "url",
        "s3://bkt/db?skip-verify=true&endpoint=https://10.0.0.5:9000",
    );
    assert!(s3_target(&u).skip_verify);
    set(&mut s, "endpoint", "https://minio.internal:9000");
    let r = resolve(&s).unwrap();
    assert_eq!(r.part_size, 10_485_760);
    assert_eq!(r.concurrency, 10);
    let ReplicaTarget::S3(t) = r.target.clone() else {
        panic!("s3")
    };
    assert_eq!(t.bucket, "mybucket");
    assert_eq!(t.path, "db");
    assert_eq!(t.region, "eu-central-1");
    assert!(t.skip_verify);
    assert_eq!(t.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
    assert_eq!(t.secret_access_key.as_deref(), Some(SECRET));
    assert_eq!(
        r.replica_display(),
        "s3://mybucket/db?endpoint=https://minio.internal:9000"
    );
    // S3 path from the key is used verbatim.
    set(&mut s, "path", "/a//b/");
    assert_eq!(s3_target(&s).path, "/a//b/");
}

#[test]
fn resolve_s3_from_url_with_overrides() {
    let mut s = Settings::new();
    set(&mut s, "url", "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333&region=r1&partSize=10MB&concurrency=3");
    assert_eq!(s.get("type").unwrap().as_deref(), Some("s3"));
    assert_eq!(s.get("force-path-style").unwrap().as_deref(), Some("true"));
    assert_eq!(s.get("part-size").unwrap().as_deref(), Some("10485760"));
    assert_eq!(s.get("bucket").unwrap(), None);
    let t = s3_target(&s);
    assert_eq!(
        (t.bucket.as_str(), t.path.as_str()),
        ("my-bucket", "app.db")
    );
    assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
    assert_eq!(t.region, "r1");
    assert!(t.force_path_style);
    assert_eq!((t.part_size, t.concurrency), (10_485_760, 3));
    assert_eq!(
        resolve(&s).unwrap().replica_display(),
        "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333"
    );
    // Explicit keys win over the url's query.
    set(&mut s, "region", "r2");
    set(&mut s, "endpoint", "https://s3.example.com");
    set(&mut s, "part-size", "20MB");
    set(&mut s, "concurrency", "4");
    set(&mut s, "force-path-style", "false");
    let t = s3_target(&s);
    assert_eq!(t.region, "r2");
    assert_eq!(t.endpoint.as_deref(), Some("https://s3.example.com"));
    assert_eq!(
        (t.part_size, t.concurrency, t.force_path_style),
        (20_971_520, 4, false)
    );
    assert_eq!(
        resolve(&s).unwrap().replica_display(),
        "s3://my-bucket/app.db?endpoint=https://s3.example.com&force-path-style=false"
    );
}

#[test]
fn resolve_region_default_from_env() {
    let s = s3_basic();
    let env = |k: &str| match k {
        "AWS_REGION" => Some("ap-south-1".to_string()),
        "AWS_DEFAULT_REGION" => Some("eu-north-1".to_string()),
        _ => None,
    };
    let ReplicaTarget::S3(t) = s.resolve_with_env(&env).unwrap().target else {
        panic!()
    };
    assert_eq!(t.region, "ap-south-1");
    let env = |k: &str| (k == "AWS_DEFAULT_REGION").then(|| "eu-north-1".to_string());
    let ReplicaTarget::S3(t) = s.resolve_with_env(&env).unwrap().target else {
        panic!()
    };
    assert_eq!(t.region, "eu-north-1");
    assert_eq!(s3_target(&s).region, "us-east-1");
}

#[test]
fn resolve_errors() {
    assert_eq!(
        resolve(&Settings::new()).unwrap_err().to_string(),
        "no replica configured: set 'bucket' and 'path' (S3) or 'url' (s3://… or file:///…)"
    );

    let mut s = Settings::new();
    set(&mut s, "bucket", "bkt");
    let e = resolve(&s).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Incomplete);
    assert_eq!(
        e.to_string(),
        "an S3 replica needs 'path' (the key prefix in the bucket): set it with litestream_configure('path', 'app.db')"
    );

    let mut s = Settings::new();
    set(&mut s, "path", "db");
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "'bucket' is not set: set 'bucket' for an S3 replica, or set 'type' to 'file' to use 'path' as the replica directory"
    );
    set(&mut s, "type", "s3");
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "an S3 replica needs 'bucket': set it with litestream_configure('bucket', 'my-bucket')"
    );

    // An S3 path given as a key is used verbatim (as Litestream's YAML path is), except that
    // dot segments are refused as they are in a url.
    let mut s = s3_basic();
    set(&mut s, "path", "a/../b");
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "invalid value 'a/../b' for path: a '..' segment in the path: '.' and '..' are not resolved (they would name a different key prefix in other tools); write the path without them"
    );
    // A file replica directory is cleaned (it names a directory, not a key), but not '/'.
    let mut s = Settings::new();
    set(&mut s, "type", "file");
    set(&mut s, "path", "/tmp/../");
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "invalid value '/tmp/../' for path: the replica directory cannot be the root directory /"
    );

    let mut s = s3_basic();
    set(&mut s, "url", "s3://other/x");
    let e = resolve(&s).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Conflict);
    assert_eq!(
        e.to_string(),
        "'url' cannot be combined with 'bucket' or 'path' (set: bucket, path); reset them with litestream_configure('bucket', NULL) and litestream_configure('path', NULL), or reset the url with litestream_configure('url', NULL)"
    );
    s.set("path", None).unwrap();
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "'url' cannot be combined with 'bucket' or 'path' (set: bucket); reset it with litestream_configure('bucket', NULL), or reset the url with litestream_configure('url', NULL)"
    );
    s.set("bucket", None).unwrap();
    assert!(resolve(&s).is_ok());

    let mut s = Settings::new();
    set(&mut s, "url", "s3://bkt/p");
    set(&mut s, "type", "file");
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "type 'file' contradicts the url scheme 's3://'; reset the type with litestream_configure('type', NULL) or change the url"
    );

    let mut s = Settings::new();
    set(&mut s, "type", "file");
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "a file replica needs 'path' (the replica directory) or a file:///… url"
    );
    set(&mut s, "bucket", "bkt");
    set(&mut s, "path", "/tmp/x");
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "'bucket' is set but the replica type is file; reset it with litestream_configure('bucket', NULL)"
    );
}

#[test]
fn credentials_rules() {
    let mut s = s3_basic();
    set(&mut s, "access-key-id", "AKID");
    assert_eq!(
        resolve(&s).unwrap_err().to_string(),
        "'access-key-id' is set but 'secret-access-key' is not: set both (static credentials) or neither (AWS default credential chain)"
    );
    let mut s = s3_basic();
    set(&mut s, "secret-access-key", SECRET);
    let e = resolve(&s).unwrap_err().to_string();
    assert_eq!(
        e,
        "'secret-access-key' is set but 'access-key-id' is not: set both (static credentials) or neither (AWS default credential chain)"
    );
    assert!(!e.contains(SECRET));

    // Neither set: LITESTREAM_* env when both are present.
    let s = s3_basic();
    let both = |k: &str| match k {
        "LITESTREAM_ACCESS_KEY_ID" => Some("ENVID".to_string()),
        "LITESTREAM_SECRET_ACCESS_KEY" => Some("ENVSECRET".to_string()),
        _ => None,
    };
    let ReplicaTarget::S3(t) = s.resolve_with_env(&both).unwrap().target else {
        panic!()
    };
    assert_eq!(t.access_key_id.as_deref(), Some("ENVID"));
    assert_eq!(t.secret_access_key.as_deref(), Some("ENVSECRET"));
    let half = |k: &str| (k == "LITESTREAM_ACCESS_KEY_ID").then(|| "ENVID".to_string());
    let ReplicaTarget::S3(t) = s.resolve_with_env(&half).unwrap().target else {
        panic!()
    };
    assert_eq!((t.access_key_id, t.secret_access_key), (None, None));
    let t = s3_target(&s);
    assert_eq!((t.access_key_id, t.secret_access_key), (None, None));
}

#[test]
fn file_replica() {
    let mut s = Settings::new();
    set(&mut s, "url", "file:///var/backups/app");
    assert_eq!(s.get("type").unwrap().as_deref(), Some("file"));
    let r = resolve(&s).unwrap();
    match &r.target {
        ReplicaTarget::File { dir } => assert_eq!(dir, Path::new("/var/backups/app")),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.replica_display(), "file:///var/backups/app");

    // type file + relative path: absolute against the current directory at set time.
    let cwd = std::env::current_dir().unwrap();
    let mut s = Settings::new();
    set(&mut s, "path", "replica/./dir");
    assert_eq!(s.get("path").unwrap().as_deref(), Some("replica/./dir"));
    set(&mut s, "type", "file");
    let expected = cwd.join("replica/dir");
    assert_eq!(
        s.get("path").unwrap().as_deref(),
        Some(expected.to_str().unwrap())
    );
    match resolve(&s).unwrap().target {
        ReplicaTarget::File { dir } => assert_eq!(dir, expected),
        other => panic!("{other:?}"),
    }
    // Set in the other order: the returned value is already absolute.
    let mut s = Settings::new();
    set(&mut s, "type", "file");
    assert_eq!(set(&mut s, "path", "d"), cwd.join("d").to_str().unwrap());
    assert_eq!(set(&mut s, "path", "/abs/../x"), "/x");
    // `~` is the home directory.
    let mut s = Settings::new();
    set(&mut s, "type", "file");
    set(&mut s, "path", "~/bk");
    let home = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
    match s.resolve_with_env(&home).unwrap().target {
        ReplicaTarget::File { dir } => assert_eq!(dir, Path::new("/home/u/bk")),
        other => panic!("{other:?}"),
    }
    // Credentials are not checked for a file replica.
    set(&mut s, "access-key-id", "x");
    assert!(s.resolve_with_env(&home).is_ok());
}

#[test]
fn target_from_url_inherits_configured_credentials() {
    let mut configured = Settings::new();
    set(&mut configured, "bucket", "other");
    set(&mut configured, "access-key-id", "AKIDEXAMPLE");
    set(&mut configured, "secret-access-key", SECRET);
    set(&mut configured, "skip-verify", "true");
    let url = "s3://my-bucket/app.db?endpoint=https://127.0.0.1:8333";
    match target_from_url_using(url, Some(&configured), &no_env).unwrap() {
        ReplicaTarget::S3(t) => {
            assert_eq!(
                (t.bucket.as_str(), t.path.as_str()),
                ("my-bucket", "app.db")
            );
            assert_eq!(t.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
            assert_eq!(t.secret_access_key.as_deref(), Some(SECRET));
            assert!(t.skip_verify);
        }
        other => panic!("{other:?}"),
    }
    // A url without an endpoint is AWS: the configured skip-verify does not follow it there.
    match target_from_url_using("s3://my-bucket/app.db", Some(&configured), &no_env).unwrap() {
        ReplicaTarget::S3(t) => {
            assert!(!t.skip_verify);
            assert_eq!(t.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
        }
        other => panic!("{other:?}"),
    }
    // A file URL takes nothing from an S3 configuration.
    match target_from_url_using("file:///tmp/r", Some(&configured), &no_env).unwrap() {
        ReplicaTarget::File { dir } => assert_eq!(dir, Path::new("/tmp/r")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn target_from_url_works() {
    match target_from_url_using_env(
        "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333",
        &no_env,
    )
    .unwrap()
    {
        ReplicaTarget::S3(t) => {
            assert_eq!(t.bucket, "my-bucket");
            assert_eq!(t.path, "app.db");
            assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
            assert!(t.force_path_style);
            assert_eq!(t.region, "us-east-1");
            assert_eq!((t.part_size, t.concurrency), (5_242_880, 5));
            assert_eq!((t.access_key_id, t.secret_access_key), (None, None));
        }
        other => panic!("{other:?}"),
    }
    match target_from_url_using_env("file:///tmp/replica", &no_env).unwrap() {
        ReplicaTarget::File { dir } => assert_eq!(dir, Path::new("/tmp/replica")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        target_from_url("s3://bucket").unwrap_err().to_string(),
        "invalid value 's3://bucket' for url: the url has no path: an S3 replica needs a key prefix, use s3://BUCKET/PATH (a replica at the bucket root is not supported)"
    );
    assert_eq!(
        target_from_url("s3://bkt/p?x=1").unwrap_err().to_string(),
        "invalid value 's3://bkt/p?x=1' for url: unknown query parameter 'x' (accepted: endpoint, region, force-path-style (or forcePathStyle), skip-verify (or skipVerify), part-size (or partSize), concurrency)"
    );
}

// --- redaction and reset ---------------------------------------------------------------------

#[test]
fn secret_never_shown() {
    let mut s = s3_basic();
    assert_eq!(s.get("secret-access-key").unwrap(), None);
    assert_eq!(s.to_json()["secret-access-key"], serde_json::Value::Null);
    assert_eq!(
        s.set("secret-access-key", Some(SECRET)).unwrap().as_deref(),
        Some(REDACTED)
    );
    set(&mut s, "access-key-id", "AKIDEXAMPLE");
    assert_eq!(
        s.get("secret-access-key").unwrap().as_deref(),
        Some(REDACTED)
    );
    assert_eq!(
        s.get("SECRET_ACCESS_KEY").unwrap().as_deref(),
        Some(REDACTED)
    );
    let json = s.to_json();
    assert_eq!(json["secret-access-key"], "********");
    assert_eq!(json["access-key-id"], "AKIDEXAMPLE");
    let texts = [
        json.to_string(),
        s.to_json_string(),
        format!("{s:?}"),
        format!("{s:#?}"),
        format!("{:?}", resolve(&s).unwrap()),
        format!("{:?}", s3_target(&s)),
        s3_target(&s).display_url(),
        resolve(&s).unwrap().replica_display(),
    ];
    for t in &texts {
        assert!(!t.contains(SECRET), "secret leaked: {t}");
        assert!(!t.contains("wJalr"), "secret leaked: {t}");
    }
    assert!(format!("{:?}", s3_target(&s)).contains("secret_access_key: Some(\"********\")"));
    // Errors about the secret do not echo it.
    for bad in ["", "   ", "abc\ndef"] {
        let e = Settings::new()
            .set("secret-access-key", Some(bad))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid value for secret-access-key: expected a non-empty secret without control characters (the value is not shown)"
        );
    }
    let e = Settings::new()
        .set("secret-access-key", Some("x\u{7}secretpart"))
        .unwrap_err()
        .to_string();
    assert!(!e.contains("secretpart"));
    // Reset.
    assert_eq!(s.set("secret-access-key", None).unwrap(), None);
    assert_eq!(s.to_json()["secret-access-key"], serde_json::Value::Null);
}

#[test]
fn reset_with_none_returns_default() {
    let mut s = Settings::new();
    let defaults = [
        ("part-size", "10MB", Some("5242880")),
        ("concurrency", "9", Some("5")),
        ("sync-interval", "5s", Some("1s")),
        ("checkpoint-interval", "0", Some("1m")),
        ("min-checkpoint-page-count", "5", Some("1000")),
        ("truncate-page-n", "off", Some("121359")),
        ("skip-verify", "true", Some("false")),
        ("force-path-style", "true", Some("false")),
        ("bucket", "bkt", None),
        ("region", "r", None),
        ("endpoint", "http://h:1", None),
        ("url", "s3://bkt/p", None),
        ("access-key-id", "a", None),
    ];
    for (k, v, d) in defaults {
        s.set(k, Some(v)).unwrap();
        assert_eq!(s.set(k, None).unwrap().as_deref(), d, "{k}");
        assert_eq!(s.get(k).unwrap().as_deref(), d, "{k}");
    }
    // Resetting a key that was never set is fine.
    assert_eq!(s.set("path", None).unwrap(), None);
    assert_eq!(s.set("type", None).unwrap(), None);
}

#[test]
fn json_lists_all_keys() {
    let mut s = s3_basic();
    set(&mut s, "part-size", "10MB");
    let json = s.to_json();
    let obj = json.as_object().unwrap();
    assert_eq!(obj.len(), keys().len());
    assert_eq!(json["bucket"], "mybucket");
    assert_eq!(json["type"], "s3");
    assert_eq!(json["part-size"], "10485760");
    assert_eq!(json["concurrency"], "5");
    assert_eq!(json["url"], serde_json::Value::Null);
    assert_eq!(json["region"], serde_json::Value::Null);
    assert_eq!(json["sync-interval"], "1s");
    let text = s.to_json_string();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, json);
    // Table order in the text form.
    let positions: Vec<usize> = keys()
        .iter()
        .map(|k| text.find(&format!("\"{}\":", k.name)).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.starts_with("{\"type\":\"s3\",\"url\":null,\"bucket\":\"mybucket\""));
}

#[test]
fn no_panics_on_odd_input() {
    // The same vocabulary the fuzzer starts from, plus pairs of it.
    let mut inputs: Vec<String> = sample_values().iter().map(|v| v.to_string()).collect();
    for a in odd_inputs().iter().step_by(7) {
        for b in odd_inputs().iter().step_by(5) {
            inputs.push(format!("{a}{b}"));
        }
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    for key in keys() {
        for &v in &inputs {
            let mut s = Settings::new();
            let _ = s.set(key.name, Some(v));
            let _ = s.get(key.name);
            let _ = s.to_json();
            let _ = s.to_json_string();
            let _ = s.resolve_with_env(&no_env);
        }
    }
    for &v in &inputs {
        let _ = parse_size(v);
        let _ = parse_duration(v);
        let _ = parse_bool(v);
        let _ = target_from_url_using_env(v, &no_env);
        let _ = Settings::new().set(v, Some("1"));
    }
    assert!(parse_size("0.99999999999999999999999999999999999999999G").is_err());
}

#[test]
fn changes_while_replicating_are_refused_unless_they_change_nothing() {
    let mut s = s3_basic();
    set(&mut s, "sync-interval", "1s");
    let db = "/data/app.db";
    let refused = |key: &str| {
        format!(
            "cannot change '{key}' while /data/app.db is being replicated (the replicator keeps the configuration it started with): call litestream_stop() first, then configure it and call litestream_start() again"
        )
    };
    for (key, value) in [
        ("type", Some("file")),
        ("sync-interval", Some("2s")),
        ("bucket", None),
        ("region", Some("eu-west-1")),
        ("secret-access-key", Some(SECRET)),
    ] {
        let e = s.set_while_replicating(key, value, db).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Conflict);
        assert_eq!(e.to_string(), refused(key), "{key}");
        assert!(!e.to_string().contains(SECRET));
    }
    // Nothing changed by a refusal.
    assert_eq!(s.get("sync-interval").unwrap().as_deref(), Some("1s"));
    assert_eq!(s.get("bucket").unwrap().as_deref(), Some("mybucket"));
    // The same value (in any spelling) or resetting an unset key changes nothing: accepted.
    assert_eq!(
        s.set_while_replicating("sync-interval", Some("1000ms"), db)
            .unwrap()
            .as_deref(),
        Some("1s")
    );
    assert_eq!(
        s.set_while_replicating("BUCKET", Some(" mybucket "), db)
            .unwrap()
            .as_deref(),
        Some("mybucket")
    );
    assert_eq!(s.set_while_replicating("region", None, db).unwrap(), None);
    // Unknown keys and bad values are reported as such, first.
    let e = s
        .set_while_replicating("bukket", Some("x"), db)
        .unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
    let e = s
        .set_while_replicating("sync-interval", Some("soon"), db)
        .unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::InvalidValue);
}
