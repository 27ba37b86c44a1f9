//! Names and endpoints: endpoint, bucket, region, type, path, lease keys.

use super::*;

// --- endpoint, bucket, region, type, path ----------------------------------------------------

#[test]
fn endpoint_values() {
    let mut s = Settings::new();
    for (v, n) in [
        (
            "s3.us-west-000.backblazeb2.com",
            "https://s3.us-west-000.backblazeb2.com",
        ),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("HTTP://localhost:8333/", "http://localhost:8333"),
        ("127.0.0.1:9000", "https://127.0.0.1:9000"),
        ("https://[::1]:9000", "https://[::1]:9000"),
        ("minio_1:9000", "https://minio_1:9000"),
        ("http://seaweed.local", "http://seaweed.local"),
        ("https://a-1.b.example:443", "https://a-1.b.example:443"),
    ] {
        assert_eq!(set(&mut s, "endpoint", v), n, "{v}");
    }
    for bad in [
        "ftp://x",
        "http://",
        "http://h/path",
        "http://h:0",
        "http://h:99999",
        "http://h:",
        "h?x=1",
        "",
        "http://[::1",
        "http://a b",
    ] {
        let e = set_err("endpoint", bad);
        assert!(
            e.starts_with(&format!("invalid value '{bad}' for endpoint: ")),
            "{e}"
        );
    }
    // The host must be a host name or an IP address: no scheme-less junk becomes https://junk.
    for bad in [
        "-1",
        "http://-1",
        "1",
        "999.1.1.1",
        "1.2.3",
        "-host.example",
        "host-.example",
        "a..b",
        ".example.com",
        "example.com.",
        "http://ex!ample.com",
        "https://:9000",
    ] {
        assert_eq!(
            set_err("endpoint", bad),
            format!("invalid value '{bad}' for endpoint: expected a host name (dot-separated labels of letters, digits, '-' and '_', none starting or ending with '-'), an IPv4 address or an [IPv6] address; expected an endpoint such as https://s3.example.com or http://127.0.0.1:9000"),
            "{bad}"
        );
    }
    let long_label = format!("{}.example.com", "a".repeat(64));
    assert!(set_err("endpoint", &long_label).contains("expected a host name"));
    let long_host = ["abcdefghij"; 26].join(".");
    assert!(set_err("endpoint", &long_host).contains("expected a host name"));
    let e = set_err("endpoint", "https://user:pw@host");
    assert!(!e.contains("pw"), "{e}");
    assert_eq!(
        e,
        "invalid value for endpoint: credentials in the endpoint are not supported; use access-key-id and secret-access-key"
    );
}

#[test]
fn local_host_rule() {
    for h in [
        "localhost",
        "minio.localhost",
        "nas.local",
        "127.0.0.1",
        "127.5.5.5",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.10",
        "[::1]",
        "[fd00::1]",
    ] {
        assert!(is_local_host(h), "{h}");
    }
    for h in [
        "example.com",
        "172.32.0.1",
        "172.200.1.1",
        "8.8.8.8",
        "[2001:db8::1]",
        "s3.amazonaws.com",
    ] {
        assert!(!is_local_host(h), "{h}");
    }
}

#[test]
fn bucket_names_follow_the_s3_rules() {
    let mut s = Settings::new();
    for ok in [
        "my-bucket.v2",
        "abc",
        "a1b",
        "1bucket",
        &"a".repeat(63),
        "t-test-0f3a9c21",
    ] {
        assert_eq!(set(&mut s, "bucket", ok), ok);
    }
    let rules = "expected an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-', \
         starting and ending with a letter or digit, not an IP address";
    let long = "a".repeat(64);
    for (bad, broken) in [
        (
            "a/b",
            "a bucket name has no '/' (put the key prefix in 'path')",
        ),
        ("ab", "too short (2 characters)"),
        (long.as_str(), "too long (64 characters)"),
        ("MyBucket", "uppercase letters"),
        (
            "my_bucket",
            "characters other than lowercase letters, digits, '.' and '-'",
        ),
        (
            "my bucket",
            "characters other than lowercase letters, digits, '.' and '-'",
        ),
        (
            "-bucket",
            "it does not start and end with a letter or digit",
        ),
        (
            "bucket.",
            "it does not start and end with a letter or digit",
        ),
        ("my..bucket", "two dots in a row"),
        ("192.168.1.1", "an IP address"),
    ] {
        assert_eq!(
            set_err("bucket", bad),
            format!("invalid value '{bad}' for bucket: {broken}; {rules}"),
            "{bad}"
        );
    }
    // The same rules apply to the bucket of a url.
    assert!(set_err("url", "s3://My_Bucket/db")
        .contains("invalid bucket 'My_Bucket': uppercase letters"));
}

#[test]
fn other_scalar_keys() {
    let mut s = Settings::new();
    assert_eq!(set(&mut s, "type", " S3 "), "s3");
    assert_eq!(set(&mut s, "type", "file"), "file");
    assert_eq!(
        set_err("type", "gcs"),
        "invalid value 'gcs' for type: expected s3 or file"
    );
    assert!(set_err("bucket", "").starts_with("invalid value '' for bucket"));
    assert_eq!(set(&mut s, "region", "eu-west-1"), "eu-west-1");
    assert_eq!(
        set_err("region", "eu west"),
        "invalid value 'eu west' for region: expected a region name such as us-east-1"
    );
    assert!(set_err("path", "").starts_with("invalid value '' for path"));
    assert!(set_err("access-key-id", " ").starts_with("invalid value '' for access-key-id"));
    // Long values are cut in messages.
    let long = "x".repeat(1000);
    let e = set_err("type", &long);
    assert!(e.len() < 300 && e.contains('…'), "{e}");
}

// --- lease ----------------------------------------------------------------------------------------

#[test]
fn lease_keys() {
    // Defaults: on for S3, off for a file replica; 30 s; hostname:pid.
    let s = s3_basic();
    assert_eq!(s.get("lease").unwrap().as_deref(), Some("on"));
    assert_eq!(s.get("lease-ttl").unwrap().as_deref(), Some("30s"));
    let owner = s.get("lease-owner").unwrap().unwrap();
    assert!(
        owner.ends_with(&format!(":{}", std::process::id())),
        "{owner}"
    );
    let r = resolve(&s).unwrap();
    assert!(r.lease);
    assert_eq!(r.lease_ttl, Duration::from_secs(30));
    assert_eq!(r.lease_owner, owner);
    let mut f = Settings::new();
    set(&mut f, "url", "file:///var/backups/app");
    assert_eq!(f.get("lease").unwrap().as_deref(), Some("off"));
    assert!(!resolve(&f).unwrap().lease);

    let mut s = s3_basic();
    assert_eq!(set(&mut s, "lease", "OFF"), "off");
    assert!(!resolve(&s).unwrap().lease);
    assert_eq!(set(&mut s, "lease", "true"), "on");
    assert_eq!(set(&mut s, "lease-ttl", "2s"), "2s");
    assert_eq!(set(&mut s, "lease-ttl", "1500ms"), "1.5s");
    assert_eq!(set(&mut s, "lease-owner", " web-1:42 "), "web-1:42");
    let r = resolve(&s).unwrap();
    assert!(r.lease);
    assert_eq!(r.lease_ttl, Duration::from_millis(1500));
    assert_eq!(r.lease_owner, "web-1:42");
    assert_eq!(
        s.set("lease-owner", None).unwrap().as_deref(),
        Some(owner.as_str())
    );

    assert_eq!(
        set_err("lease", "maybe"),
        "invalid value 'maybe' for lease: expected on or off (also true/false, 1/0, yes/no)"
    );
    assert_eq!(
        set_err("lease-ttl", "500ms"),
        "invalid value '500ms' for lease-ttl: expected a duration of at least 1s such as 5s, 30s or 1m (shorter leases would expire between renewals)"
    );
    assert_eq!(
        set_err("lease-ttl", "30"),
        "invalid value '30' for lease-ttl: expected a duration of at least 1s such as 5s, 30s or 1m (a number needs a unit, e.g. 30s)"
    );
    assert!(set_err("lease-ttl", "0").starts_with("invalid value '0' for lease-ttl"));
    assert!(set_err("lease-owner", "").starts_with("invalid value '' for lease-owner"));
    assert!(set_err("lease-owner", &"x".repeat(300)).contains("at most 256"));

    // lease on with a file replica is a contradiction, not silently ignored.
    let mut f = Settings::new();
    set(&mut f, "url", "file:///var/backups/app");
    set(&mut f, "lease", "on");
    let e = resolve(&f).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Conflict);
    assert!(
        e.message().contains("litestream_configure('lease', NULL)"),
        "{e}"
    );
    set(&mut f, "lease", "off");
    assert!(!resolve(&f).unwrap().lease);
}

#[test]
fn default_owner_without_hostname() {
    let pid = std::process::id();
    let owner = default_lease_owner(&no_env);
    assert!(owner.ends_with(&format!(":{pid}")) || owner == format!("pid-{pid}"));
}
