//! Replica URLs: forms, canonical text, errors.

use super::*;

// --- URLs ------------------------------------------------------------------------------------

fn s3url(text: &str) -> S3Url {
    match parse_replica_url(text) {
        Ok(ReplicaUrl::S3(u)) => u,
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn url_s3_forms() {
    let u = s3url("s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333");
    assert_eq!(u.bucket, "my-bucket");
    assert_eq!(u.path, "app.db");
    assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:8333"));

    let u = s3url("S3://bkt/a/c/?region=eu-west-1&forcePathStyle=false&skipVerify=true&partSize=10485760&concurrency=3");
    assert_eq!(u.path, "a/c");
    assert_eq!(u.region.as_deref(), Some("eu-west-1"));
    assert_eq!(u.force_path_style, Some(false));
    assert_eq!(u.skip_verify, Some(true));
    assert_eq!(u.part_size, Some(10_485_760));
    assert_eq!(u.concurrency, Some(3));

    let u = s3url("s3://bkt/p?force-path-style=1&skip-verify=no&part-size=10MB");
    assert_eq!(
        (u.force_path_style, u.skip_verify, u.part_size),
        (Some(true), Some(false), Some(10_485_760))
    );

    // Endpoint without scheme in the query: http for local hosts, https otherwise.
    assert_eq!(
        s3url("s3://bkt/p?endpoint=localhost:9000")
            .endpoint
            .as_deref(),
        Some("http://localhost:9000")
    );
    assert_eq!(
        s3url("s3://bkt/p?endpoint=192.168.1.5:9000")
            .endpoint
            .as_deref(),
        Some("http://192.168.1.5:9000")
    );
    assert_eq!(
        s3url("s3://bkt/p?endpoint=[::1]:9000").endpoint.as_deref(),
        Some("http://[::1]:9000")
    );
    assert_eq!(
        s3url("s3://bkt/p?endpoint=s3.example.com")
            .endpoint
            .as_deref(),
        Some("https://s3.example.com")
    );
    assert_eq!(
        s3url("s3://bkt/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000")
            .endpoint
            .as_deref(),
        Some("http://127.0.0.1:9000")
    );

    assert_eq!(s3url("s3://bucket/%20x%2Fy").path, " x/y");
    assert_eq!(s3url("s3://bucket/db/").path, "db");

    // Litestream's host forms.
    let u = s3url("s3://mybucket.s3.us-west-2.amazonaws.com/db");
    assert_eq!(
        (
            u.bucket.as_str(),
            u.region.as_deref(),
            u.endpoint.as_deref()
        ),
        ("mybucket", Some("us-west-2"), None)
    );
    let u = s3url("s3://mybucket.s3.amazonaws.com/db");
    assert_eq!((u.bucket.as_str(), u.region.as_deref()), ("mybucket", None));
    let u = s3url("s3://mybucket.s3.us-west-000.backblazeb2.com/db");
    assert_eq!(u.bucket, "mybucket");
    assert_eq!(
        u.endpoint.as_deref(),
        Some("https://s3.us-west-000.backblazeb2.com")
    );
    let u = s3url("s3://mybucket.nyc3.digitaloceanspaces.com/db");
    assert_eq!(
        (u.bucket.as_str(), u.endpoint.as_deref()),
        ("mybucket", Some("https://nyc3.digitaloceanspaces.com"))
    );
    let u = s3url("s3://mybucket.s3.filebase.com/db");
    assert_eq!(
        (u.bucket.as_str(), u.endpoint.as_deref()),
        ("mybucket", Some("https://s3.filebase.com"))
    );
    let u = s3url("s3://mybucket.s3.fr-par.scw.cloud/db");
    assert_eq!(
        (u.bucket.as_str(), u.endpoint.as_deref()),
        ("mybucket", Some("https://s3.fr-par.scw.cloud"))
    );
    let u = s3url("s3://mybucket.localhost:9000/db");
    assert_eq!(
        (
            u.bucket.as_str(),
            u.endpoint.as_deref(),
            u.region.as_deref()
        ),
        ("mybucket", Some("http://localhost:9000"), Some("us-east-1"))
    );
    // The query endpoint wins over the host form.
    let u = s3url("s3://mybucket.localhost:9000/db?endpoint=http://127.0.0.1:1");
    assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:1"));
    // Plain dotted bucket names stay bucket names.
    assert_eq!(
        s3url("s3://my.bucket.example/db").bucket,
        "my.bucket.example"
    );
}

#[test]
fn url_setting_normalizes_and_round_trips() {
    let mut s = Settings::new();
    let cases = [
        ("s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333", "s3://my-bucket/app.db?endpoint=http://127.0.0.1:8333"),
        (
            "s3://bkt/x/y?concurrency=3&forcePathStyle=TRUE&partSize=10MB&region=auto&skipVerify=0&endpoint=localhost:9000",
            "s3://bkt/x/y?endpoint=http://localhost:9000&region=auto&force-path-style=true&skip-verify=false&part-size=10485760&concurrency=3",
        ),
        ("s3://mybucket.s3.us-west-2.amazonaws.com/db", "s3://mybucket/db?region=us-west-2"),
        ("s3://bkt/a%20b%3Fc", "s3://bkt/a%20b%3Fc"),
        ("s3://bkt/db/", "s3://bkt/db"),
        ("file:///var/backups//app/", "file:///var/backups/app"),
        ("FILE:///tmp/a%20b", "file:///tmp/a%20b"),
    ];
    for (input, canonical) in cases {
        assert_eq!(set(&mut s, "url", input), canonical, "{input}");
        assert_eq!(
            set(&mut s, "url", canonical),
            canonical,
            "idempotent: {canonical}"
        );
        assert_eq!(s.get("url").unwrap().as_deref(), Some(canonical));
    }
}

#[test]
fn url_errors() {
    let cases = [
        ("s3://bkt/p?foo=1", "unknown query parameter 'foo' (accepted: endpoint, region, force-path-style (or forcePathStyle), skip-verify (or skipVerify), part-size (or partSize), concurrency)"),
        ("s3:///p", "missing bucket; expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
        ("s3://?region=x", "missing bucket; expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
        ("s3://localhost:9000/p", "missing bucket; expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
        ("file://relative/dir", "expected an absolute directory after file://, e.g. file:///var/backups/app.db (three slashes)"),
        ("file://", "expected an absolute directory after file://, e.g. file:///var/backups/app.db (three slashes)"),
        ("file:///x?y=1", "a file:// url takes no query parameters"),
        ("gs://b/p", "unsupported scheme 'gs://'; expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
        ("/just/a/path", "expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
        ("", "expected s3://BUCKET/PATH[?endpoint=…&region=…] or file:///DIR"),
        ("s3://bkt/p?concurrency=0", "query parameter concurrency='0': expected a whole number from 1 to 64"),
        ("s3://bkt/p?forcePathStyle=maybe", "query parameter force-path-style='maybe': expected true or false (also 1/0, yes/no, on/off)"),
        ("s3://bkt/p?partSize=4MB", "part-size 4MB (4194304 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"),
        ("s3://bkt/p?endpoint=ftp://x", "query parameter endpoint='ftp://x': unsupported scheme 'ftp://', only http:// and https://"),
        ("s3://bkt/p?force-path-style=true&forcePathStyle=false", "query parameter 'force-path-style' is given more than once"),
        ("s3://bkt/p#frag", "a '#' fragment is not allowed (write '#' as %23)"),
        // No bucket-root replica, as path='' is refused: Litestream would write it under ./ or /.
        ("s3://test", "the url has no path: an S3 replica needs a key prefix, use s3://BUCKET/PATH (a replica at the bucket root is not supported)"),
        ("s3://test/", "the url has no path: an S3 replica needs a key prefix, use s3://BUCKET/PATH (a replica at the bucket root is not supported)"),
        ("s3://test?endpoint=http://127.0.0.1:9000", "the url has no path: an S3 replica needs a key prefix, use s3://BUCKET/PATH (a replica at the bucket root is not supported)"),
        // Dot segments are refused, never resolved into another key prefix.
        ("s3://test/a/../b", "a '..' segment in the path: '.' and '..' are not resolved (they would name a different key prefix in other tools); write the path without them"),
        ("s3://test/./b", "a '.' segment in the path: '.' and '..' are not resolved (they would name a different key prefix in other tools); write the path without them"),
        ("s3://test/a/%2E%2E/b", "a '..' segment in the path: '.' and '..' are not resolved (they would name a different key prefix in other tools); write the path without them"),
        ("s3://test/..", "a '..' segment in the path: '.' and '..' are not resolved (they would name a different key prefix in other tools); write the path without them"),
        ("s3://test//a", "an empty segment ('//') in the path: S3 keeps every '/' in a key, so write each one once"),
        ("s3://test/a//b", "an empty segment ('//') in the path: S3 keeps every '/' in a key, so write each one once"),
        ("file:///var/../etc", "a '..' segment in the path: '.' and '..' are not resolved (they would name a different key prefix in other tools); write the path without them"),
        ("file:///", "file:/// is the root directory: name a directory for the replica, e.g. file:///var/backups/app.db"),
        ("file:////", "file:/// is the root directory: name a directory for the replica, e.g. file:///var/backups/app.db"),
        // An empty query value is an error, not "not given".
        ("s3://test/db?endpoint=", "query parameter 'endpoint' has no value: give one or leave the parameter out"),
        ("s3://test/db?region=&partSize=10MB", "query parameter 'region' has no value: give one or leave the parameter out"),
        ("s3://test/db?endpoint", "query parameter 'endpoint' has no value: give one or leave the parameter out"),
        ("s3://bkt/p%zz", "invalid percent-encoding"),
        ("s3://bkt/p%ff", "percent-encoding is not valid UTF-8"),
        ("s3://arn:aws:s3:us-east-1:123:accesspoint/ap/db", "S3 access point ARNs are not supported; use s3://BUCKET/PATH (with endpoint= and region= if needed)"),
        ("s3://b a/p", "invalid bucket 'b a': characters other than lowercase letters, digits, '.' and '-'; expected an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit, not an IP address"),
    ];
    for (url, reason) in cases {
        let e = set_err("url", url);
        assert_eq!(
            e,
            format!("invalid value '{url}' for url: {reason}"),
            "{url}"
        );
    }
    assert_eq!(
        set_err("url", "s3://b.host:abc/p"),
        "invalid value 's3://b.host:abc/p' for url: invalid host 'b.host:abc': expected a port from 1 to 65535; expected an endpoint such as https://s3.example.com or http://127.0.0.1:9000"
    );
    assert_eq!(
        set_err("url", "s3://bkt/p%+1"),
        "invalid value 's3://bkt/p%+1' for url: invalid percent-encoding"
    );
    // A URL with credentials is never echoed.
    let e = set_err("url", "s3://AKIA:hunter2@bucket/p");
    assert_eq!(
        e,
        "invalid value for url: credentials in the url are not supported; use access-key-id and secret-access-key"
    );
}

/// Found by the `url` fuzz target: the url was withheld, but the reason quoted the part that
/// held the credentials. No part with `@`, as written or percent-encoded, is quoted.
#[test]
fn url_error_never_quotes_a_part_with_credentials() {
    for (url, secret) in [
        ("s3://bucket/db?endpoint=user:pass@host", "pass@host"),
        ("s3://bucket/db?endpoint=user:pass%40host", "pass@host"),
        ("s3://bucket/db?endpoint=user:pass@http://host", "pass@"),
        ("s3://bucket/db?region=AKIA:hunter2@x", "hunter2"),
        ("s3://bucket/db?part-size=AKIA:hunter2@x", "hunter2"),
        ("s3://bucket/db?concurrency=hunter2%40x", "hunter2"),
        ("s3://bucket/db?AKIA:hunter2@x=1", "hunter2"),
        ("user:hunter2@s3://bucket/db", "hunter2"),
    ] {
        let e = set_err("url", url);
        assert!(!e.contains(secret), "{url}: {e}");
        assert!(e.contains("for url"), "{url}: {e}");
    }
    assert_eq!(
        set_err("url", "s3://bucket/db?endpoint=user:pass@host"),
        "invalid value for url: query parameter endpoint=(not shown: it may hold credentials): \
         credentials in the endpoint are not supported; use access-key-id and secret-access-key"
    );
    // An endpoint with '@' before its "://" is credentials too, not a scheme to quote.
    let e = set_err("endpoint", "user:pw@https://host");
    assert!(!e.contains("pw"), "{e}");
}

/// Found by the `url` fuzz target: a url pasted into `bucket` was quoted in its error, user and
/// secret included. No key quotes a value that contains `@`.
#[test]
fn no_key_quotes_a_value_with_credentials() {
    let pasted = "s3://AKIA:hunter2@bucket/db";
    for key in [
        "bucket",
        "region",
        "type",
        "part-size",
        "levels",
        "sync-interval",
        "lease",
    ] {
        let e = set_err(key, pasted);
        assert!(!e.contains("hunter2"), "{key}: {e}");
        assert!(e.contains(key), "{key}: {e}");
    }
    assert!(!set_err("levels", "1s,AKIA:hunter2@x").contains("hunter2"));
    assert_eq!(
        set_err("region", "AKIA:hunter2@x"),
        "invalid value (not shown: it may hold credentials) for region: expected a region name such as us-east-1"
    );
    // Without '@' the value is quoted as before.
    assert_eq!(
        set_err("region", "a b"),
        "invalid value 'a b' for region: expected a region name such as us-east-1"
    );
}

/// Found by the `url` fuzz target: a bucket whose name looks like a provider's host (here
/// Backblaze's) was written bare in the canonical url, which then named another bucket at
/// another endpoint. The canonical text must name the same bucket, region and endpoint.
#[test]
fn canonical_url_of_a_bucket_that_looks_like_a_provider_host() {
    for url in [
        "s3://my-west-000.backblazeb2.com.s3.uest-0.backblazeb2.com.s3.2.amazonaws.com/mseb",
        "s3://mybuck4sbucket-we.s3.00.backblazeb2.com.s3.us-west-2.amazonaws.com/msdb",
        "s3://b.nyc3.digitaloceanspaces.com.s3.amazonaws.com/db",
        "s3://x.s3.filebase.com.s3.amazonaws.com/db?endpoint=http://127.0.0.1:9000",
    ] {
        let first = s3url(url);
        let canonical = ReplicaUrl::S3(first.clone()).canonical();
        assert_eq!(s3url(&canonical), first, "{url} → {canonical}");
        assert_eq!(ReplicaUrl::S3(s3url(&canonical)).canonical(), canonical);
    }
    assert_eq!(
        ReplicaUrl::S3(s3url(
            "s3://mybuck4sbucket-we.s3.00.backblazeb2.com.s3.us-west-2.amazonaws.com/msdb"
        ))
        .canonical(),
        "s3://mybuck4sbucket-we.s3.00.backblazeb2.com.s3.amazonaws.com/msdb?region=us-west-2"
    );
    // A plain bucket stays bare.
    assert_eq!(
        ReplicaUrl::S3(s3url("s3://my-bucket/db")).canonical(),
        "s3://my-bucket/db"
    );
}
