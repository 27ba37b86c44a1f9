//! Scalar values: sizes, counts, durations, booleans, checkpoint and compaction keys.

use super::*;

// --- part-size ------------------------------------------------------------------------------------

#[test]
fn size_formats_from_the_guide() {
    let cases = [
        ("5242880", 5_242_880),
        ("5120KB", 5_242_880),
        ("5120K", 5_242_880),
        ("5MB", 5_242_880),
        ("5M", 5_242_880),
        ("1GB", 1_073_741_824),
        ("1G", 1_073_741_824),
        ("1.5MB", 1_572_864),
        ("5MiB", 5_242_880),
        ("5120KiB", 5_242_880),
        ("1GiB", 1_073_741_824),
        ("5mb", 5_242_880),
        ("5Mb", 5_242_880),
        ("10MB", 10_485_760),
        ("50MB", 52_428_800),
        ("100MB", 104_857_600),
        ("5GB", 5_368_709_120),
        ("0", 0),
        ("5242880B", 5_242_880),
        (" 5MB ", 5_242_880),
        ("0.5K", 512),
        ("1e9", 1_000_000_000),
        ("5.24288e6", 5_242_880),
        ("5242880.0", 5_242_880),
        ("1.5e0MB", 1_572_864),
    ];
    for (text, bytes) in cases {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    // K/M/G are 1024-based, so "5MB" is exactly the S3 minimum.
    assert_eq!(parse_size("5MB").unwrap(), MIN_PART_SIZE);
    assert_eq!(parse_size("5GB").unwrap(), MAX_PART_SIZE);
    assert!(parse_size("99999999999999999999").is_err());
    assert!(parse_size("17179869184G").is_err());
    assert_eq!(parse_size("17179869183G"), Ok(17_179_869_183 << 30));
}

#[test]
fn size_rejects() {
    for text in [
        "5XB", "", "5 MB", "MB", ".5MB", "5.MB", "5TB", "1,5MB", "5MBB", "0x10", "1e", "+5MB",
    ] {
        assert_eq!(
            parse_size(text),
            Err(SIZE_EXPECTED.to_string()),
            "{text:?} should be rejected"
        );
    }
    assert_eq!(
        parse_size("-5MB"),
        Err(format!("negative numbers are not allowed; {SIZE_EXPECTED}"))
    );
    // A fraction of a byte is refused, never rounded.
    for text in [
        "1.5",
        "1.9999999999B",
        "1.0000001MB",
        "0.1K",
        "1.00000000000000000000000000000000000001G",
        "0.99999999999999999999999999999999999999999G",
        "5242880.5",
        "1e-1",
    ] {
        assert_eq!(
            parse_size(text),
            Err(format!("not a whole number of bytes; {SIZE_EXPECTED}")),
            "{text:?}"
        );
    }
}

#[test]
fn part_size_setting() {
    let mut s = Settings::new();
    assert_eq!(s.get("part-size").unwrap().as_deref(), Some("5242880"));
    for (text, norm) in [
        ("10MB", "10485760"),
        ("5MB", "5242880"),
        ("50MB", "52428800"),
        ("100MB", "104857600"),
        ("5242880", "5242880"),
        ("5120KB", "5242880"),
        ("5120K", "5242880"),
        ("5M", "5242880"),
        ("1GB", "1073741824"),
        ("1G", "1073741824"),
        ("5MiB", "5242880"),
        ("5GB", "5368709120"),
    ] {
        assert_eq!(set(&mut s, "part-size", text), norm, "{text}");
    }
    assert_eq!(s.get("part-size").unwrap().as_deref(), Some("5368709120"));
    assert_eq!(
        s.set("part-size", None).unwrap().as_deref(),
        Some("5242880")
    );
}

#[test]
fn part_size_error_texts() {
    assert_eq!(
        set_err("part-size", "4MB"),
        "part-size 4MB (4194304 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"
    );
    assert_eq!(
        set_err("part-size", "6GB"),
        "part-size 6GB (6442450944 bytes) is above the S3 maximum of 5 GiB (5368709120 bytes)"
    );
    assert_eq!(
        set_err("part-size", "0"),
        "part-size 0 (0 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"
    );
    assert_eq!(
        set_err("part-size", "1.5MB"),
        "part-size 1.5MB (1572864 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"
    );
    assert_eq!(
        set_err("part-size", "5242879"),
        "part-size 5242879 (5242879 bytes) is below the S3 minimum of 5 MiB (5242880 bytes)"
    );
    assert_eq!(
        set_err("part-size", "5368709121"),
        "part-size 5368709121 (5368709121 bytes) is above the S3 maximum of 5 GiB (5368709120 bytes)"
    );
    assert_eq!(
        set_err("part-size", "99999999999999999999GB"),
        "part-size 99999999999999999999GB is above the S3 maximum of 5 GiB (5368709120 bytes)"
    );
    for bad in ["5XB", "", "1e", "5 MB"] {
        assert_eq!(
            set_err("part-size", bad),
            format!(
                "invalid part-size '{bad}': expected a whole number of bytes (5242880, 5.24288e6) or a number with K, KB, M, MB, G or GB (1024-based, e.g. 5MB, 1.5MB, 1GB)"
            )
        );
    }
    assert_eq!(
        set_err("part-size", "-5MB"),
        format!("invalid part-size '-5MB': negative numbers are not allowed; {SIZE_EXPECTED}")
    );
    // The value given is echoed, never its rounded-down byte count.
    assert_eq!(
        set_err("part-size", "1.5"),
        format!("invalid part-size '1.5': not a whole number of bytes; {SIZE_EXPECTED}")
    );
    assert_eq!(
        set_err("part-size", "5242880.5"),
        format!("invalid part-size '5242880.5': not a whole number of bytes; {SIZE_EXPECTED}")
    );
    // Exponent notation (how SQL REALs arrive) is the same number as its plain form.
    let mut s = Settings::new();
    assert_eq!(set(&mut s, "part-size", "1e7"), "10000000");
    assert_eq!(set(&mut s, "part-size", "10000000"), "10000000");
    assert_eq!(set(&mut s, "part-size", "1.048576e7"), "10485760");
    // A failed set leaves the previous value.
    let mut s = Settings::new();
    set(&mut s, "part-size", "10MB");
    assert!(s.set("part-size", Some("4MB")).is_err());
    assert_eq!(s.get("part-size").unwrap().as_deref(), Some("10485760"));
}

// --- concurrency -----------------------------------------------------------------------------

#[test]
fn concurrency_setting() {
    let mut s = Settings::new();
    assert_eq!(s.get("concurrency").unwrap().as_deref(), Some("5"));
    for (v, n) in [
        ("10", "10"),
        ("2", "2"),
        ("5", "5"),
        ("1", "1"),
        ("64", "64"),
        (" 7 ", "7"),
        ("007", "7"),
        ("8.0", "8"),
        ("1e1", "10"),
    ] {
        assert_eq!(set(&mut s, "concurrency", v), n);
    }
    for bad in ["0", "65", "ten", "", "+5", "6.4e1x"] {
        assert_eq!(
            set_err("concurrency", bad),
            format!("invalid value '{bad}' for concurrency: expected a whole number from 1 to 64"),
            "{bad}"
        );
    }
    for (bad, why) in [
        ("-1", "negative numbers are not allowed; "),
        ("1.5", "not a whole number; "),
        ("99999999999999999999999", "too large; "),
    ] {
        assert_eq!(
            set_err("concurrency", bad),
            format!(
                "invalid value '{bad}' for concurrency: {why}expected a whole number from 1 to 64"
            ),
            "{bad}"
        );
    }
}

#[test]
fn r2_default_concurrency() {
    let mut s = s3_basic();
    set(
        &mut s,
        "endpoint",
        "https://0123abcd.r2.cloudflarestorage.com",
    );
    assert_eq!(s.get("concurrency").unwrap().as_deref(), Some("2"));
    assert_eq!(s3_target(&s).concurrency, 2);
    assert_eq!(resolve(&s).unwrap().concurrency, 2);
    assert_eq!(set(&mut s, "concurrency", "5"), "5");
    assert_eq!(s3_target(&s).concurrency, 5);
    assert_eq!(s.set("concurrency", None).unwrap().as_deref(), Some("2"));
    // Port and a scheme-less endpoint.
    set(&mut s, "endpoint", "abc.r2.cloudflarestorage.com:443");
    assert_eq!(s.get("concurrency").unwrap().as_deref(), Some("2"));
    // Via the url.
    let mut u = Settings::new();
    set(
        &mut u,
        "url",
        "s3://bkt/p?endpoint=https://acct.r2.cloudflarestorage.com",
    );
    assert_eq!(u.get("concurrency").unwrap().as_deref(), Some("2"));
    set(
        &mut u,
        "url",
        "s3://bkt/p?endpoint=https://acct.r2.cloudflarestorage.com&concurrency=7",
    );
    assert_eq!(u.get("concurrency").unwrap().as_deref(), Some("7"));
    // Not R2.
    let mut o = s3_basic();
    set(
        &mut o,
        "endpoint",
        "https://r2.cloudflarestorage.com.evil.example",
    );
    assert_eq!(o.get("concurrency").unwrap().as_deref(), Some("5"));
}

// --- the guide's examples --------------------------------------------------------------------

#[test]
fn guide_examples_configure() {
    // (part-size, concurrency, endpoint, force-path-style)
    let examples: [&[(&str, &str)]; 9] = [
        &[
            ("type", "s3"),
            ("bucket", "mybucket"),
            ("path", "db"),
            ("part-size", "10MB"),
        ],
        &[
            ("type", "s3"),
            ("bucket", "mybucket"),
            ("path", "db"),
            ("concurrency", "10"),
        ],
        &[
            ("type", "s3"),
            ("bucket", "mybucket"),
            ("path", "db"),
            ("endpoint", "s3.us-west-000.backblazeb2.com"),
            ("force-path-style", "true"),
            ("part-size", "10MB"),
        ],
        &[("part-size", "50MB")],
        &[("concurrency", "10")],
        &[("concurrency", "2")],
        &[
            ("type", "s3"),
            ("bucket", "mybucket"),
            ("path", "db"),
            ("part-size", "50MB"),
            ("concurrency", "10"),
        ],
        &[
            ("type", "s3"),
            ("bucket", "mybucket"),
            ("path", "db"),
            ("part-size", "5MB"),
            ("concurrency", "2"),
        ],
        &[
            ("type", "s3"),
            ("bucket", "mybucket"),
            ("path", "db"),
            ("endpoint", "s3.us-west-000.backblazeb2.com"),
            ("force-path-style", "true"),
            ("part-size", "100MB"),
            ("concurrency", "5"),
        ],
    ];
    for ex in examples {
        let mut s = s3_basic();
        for (k, v) in ex {
            s.set(k, Some(v))
                .unwrap_or_else(|e| panic!("{k}: {v}: {e}"));
        }
        resolve(&s).unwrap_or_else(|e| panic!("{ex:?}: {e}"));
    }

    // B2 optimized, checked field by field.
    let mut s = Settings::new();
    set(&mut s, "type", "s3");
    set(&mut s, "bucket", "mybucket");
    set(&mut s, "path", "db");
    assert_eq!(
        set(&mut s, "endpoint", "s3.us-west-000.backblazeb2.com"),
        "https://s3.us-west-000.backblazeb2.com"
    );
    assert_eq!(set(&mut s, "force-path-style", "true"), "true");
    assert_eq!(set(&mut s, "part-size", "100MB"), "104857600");
    assert_eq!(set(&mut s, "concurrency", "5"), "5");
    let t = s3_target(&s);
    assert_eq!(
        t.endpoint.as_deref(),
        Some("https://s3.us-west-000.backblazeb2.com")
    );
    assert!(t.force_path_style);
    assert_eq!(t.part_size, 104_857_600);
    assert_eq!(t.concurrency, 5);
    assert_eq!(t.region, "us-east-1");

    // MinIO (defaults work).
    let mut m = s3_basic();
    assert_eq!(
        set(&mut m, "endpoint", "http://127.0.0.1:9000"),
        "http://127.0.0.1:9000"
    );
    assert_eq!(m.get("force-path-style").unwrap().as_deref(), Some("true"));
    let t = s3_target(&m);
    assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(t.force_path_style);
    assert_eq!(t.part_size, 5_242_880);
    assert_eq!(t.concurrency, 5);
    assert_eq!(
        t.display_url(),
        "s3://mybucket/db?endpoint=http://127.0.0.1:9000"
    );

    // AWS defaults.
    let t = s3_target(&s3_basic());
    assert_eq!(t.endpoint, None);
    assert!(!t.force_path_style);
    assert_eq!((t.part_size, t.concurrency), (5_242_880, 5));
}

// --- durations -------------------------------------------------------------------------------

#[test]
fn compaction_and_retention_keys() {
    let mut s = s3_basic();
    let r = resolve(&s).unwrap();
    assert_eq!(r.levels, DEFAULT_LEVELS.to_vec());
    assert_eq!(r.l0_retention, Some(DEFAULT_L0_RETENTION));
    assert_eq!(r.snapshot_interval, Some(DEFAULT_SNAPSHOT_INTERVAL));
    assert_eq!(r.snapshot_retention, DEFAULT_SNAPSHOT_RETENTION);
    assert!(r.retention);
    assert_eq!(s.get("levels").unwrap().as_deref(), Some("30s,5m,1h"));
    assert_eq!(s.get("retention").unwrap().as_deref(), Some("on"));

    assert_eq!(set(&mut s, "levels", " 500ms, 2s ,1m30s"), "500ms,2s,1m30s");
    assert_eq!(set(&mut s, "levels", "OFF"), "off");
    assert_eq!(set(&mut s, "levels", "0.25s"), "250ms");
    assert_eq!(set(&mut s, "l0-retention", "0"), "0s");
    assert_eq!(set(&mut s, "snapshot-interval", "3000ms"), "3s");
    assert_eq!(set(&mut s, "snapshot-retention", "4s"), "4s");
    assert_eq!(set(&mut s, "retention", "false"), "off");
    let r = resolve(&s).unwrap();
    assert_eq!(r.levels, vec![Duration::from_millis(250)]);
    assert_eq!(r.l0_retention, None);
    assert_eq!(r.snapshot_interval, Some(Duration::from_secs(3)));
    assert_eq!(r.snapshot_retention, Duration::from_secs(4));
    assert!(!r.retention);
    set(&mut s, "levels", "off");
    set(&mut s, "snapshot-interval", "0");
    let r = resolve(&s).unwrap();
    assert!(r.levels.is_empty());
    assert_eq!(r.snapshot_interval, None);

    assert_eq!(
        set_err("levels", "30s,x"),
        "invalid value '30s,x' for levels: level 2 interval 'x': not a duration; expected \
         comma-separated compaction intervals for levels 1, 2, … such as 30s,5m,1h (1 to 8 \
         durations, each above 0), or off for no compaction"
    );
    assert!(set_err("levels", "1s,0").contains("level 2 interval '0' must be above 0"));
    assert!(set_err("levels", "5").contains("level 1 interval '5': a number needs a unit"));
    assert!(set_err("levels", "").contains("level 1 interval ''"));
    assert!(set_err("levels", "1s,1s,1s,1s,1s,1s,1s,1s,1s")
        .contains("9 levels given, at most 8 (level 9 holds snapshots)"));
    assert_eq!(
        set_err("retention", "maybe"),
        "invalid value 'maybe' for retention: expected on or off (also true/false, 1/0, yes/no)"
    );
    assert_eq!(
        set_err("l0-retention", "-5m"),
        "invalid value '-5m' for l0-retention: expected a duration such as 0, 500ms, 1s, 1m30s (negative durations are not allowed)"
    );
    assert!(set_err("snapshot-interval", "daily").contains("for snapshot-interval"));
}

#[test]
fn durations_parse() {
    let ms = Duration::from_millis;
    let cases = [
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("500ms", ms(500)),
        ("1s", ms(1000)),
        ("1.5s", ms(1500)),
        ("2m", Duration::from_secs(120)),
        ("1h30m", Duration::from_secs(5400)),
        ("250us", Duration::from_micros(250)),
        ("250µs", Duration::from_micros(250)),
        ("250μs", Duration::from_micros(250)),
        ("100ns", Duration::from_nanos(100)),
        (".5s", ms(500)),
        ("1.s", ms(1000)),
        ("+1s", ms(1000)),
        (" 1m30s ", Duration::from_secs(90)),
        ("1h1m1s1ms1us1ns", Duration::from_nanos(3_661_001_001_001)),
        ("1.0000000019s", Duration::from_nanos(1_000_000_001)),
        ("2562047h", Duration::from_secs(2_562_047 * 3600)),
    ];
    for (text, d) in cases {
        assert_eq!(parse_duration(text), Ok(d), "{text}");
    }
    for bad in [
        "",
        "1",
        "5",
        "1x",
        "-1s",
        "-0",
        "1 s",
        "s",
        ".s",
        "1h-1m",
        "1e3s",
        "2562048h",
        "99999999999999999999999s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert!(parse_duration("5").unwrap_err().starts_with("missing unit"));
}

#[test]
fn durations_format_and_round_trip() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(100), "100ns"),
        (Duration::from_micros(250), "250µs"),
        (Duration::from_nanos(1_500_000), "1.5ms"),
        (Duration::from_millis(500), "500ms"),
        (Duration::from_secs(1), "1s"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::from_secs(60), "1m"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(5400), "1h30m"),
        (Duration::from_secs(7200), "2h"),
        (Duration::from_nanos(7_200_500_000_000), "2h0.5s"),
        (Duration::from_nanos(1_000_000_001), "1.000000001s"),
    ];
    for (d, text) in cases {
        assert_eq!(format_duration(d), text);
        assert_eq!(parse_duration(text), Ok(d), "{text}");
    }
    for n in [
        1u64,
        999,
        1_001,
        999_999,
        1_000_001,
        59_999_999_999,
        3_600_000_000_001,
        i64::MAX as u64,
    ] {
        let d = Duration::from_nanos(n);
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{n}");
    }
}

#[test]
fn duration_settings() {
    let mut s = Settings::new();
    assert_eq!(s.get("sync-interval").unwrap().as_deref(), Some("1s"));
    assert_eq!(s.get("checkpoint-interval").unwrap().as_deref(), Some("1m"));
    assert_eq!(set(&mut s, "sync-interval", "0"), "0s");
    assert_eq!(set(&mut s, "sync-interval", "1000ms"), "1s");
    assert_eq!(set(&mut s, "sync-interval", "90s"), "1m30s");
    assert_eq!(set(&mut s, "checkpoint-interval", "0"), "0s");
    // Non-zero intervals below the floor would make the replicator spin; 0 is allowed.
    assert_eq!(set(&mut s, "sync-interval", "10ms"), "10ms");
    assert_eq!(set(&mut s, "sync-interval", "0s"), "0s");
    assert_eq!(MIN_SYNC_INTERVAL, Duration::from_millis(10));
    for bad in ["1ns", "1ms", "9.999ms", "9999us"] {
        assert_eq!(
            set_err("sync-interval", bad),
            format!("invalid value '{bad}' for sync-interval: expected 0 (upload on every commit) or a duration of at least 10ms such as 100ms or 1s (a shorter interval makes the replicator poll the WAL in a busy loop)")
        );
    }
    assert_eq!(
        set_err("sync-interval", "1x"),
        "invalid value '1x' for sync-interval: expected a duration such as 0, 500ms, 1s, 1m30s"
    );
    assert_eq!(
        set_err("sync-interval", "5"),
        "invalid value '5' for sync-interval: expected a duration such as 0, 500ms, 1s, 1m30s (a number needs a unit, e.g. 5s)"
    );
    assert_eq!(
        set_err("checkpoint-interval", "-1m"),
        "invalid value '-1m' for checkpoint-interval: expected a duration such as 0, 500ms, 1s, 1m30s (negative durations are not allowed)"
    );
    let r = {
        let mut b = s3_basic();
        set(&mut b, "sync-interval", "0");
        set(&mut b, "checkpoint-interval", "0");
        resolve(&b).unwrap()
    };
    assert_eq!(r.sync_interval, Duration::ZERO);
    assert_eq!(r.checkpoint_interval, None);
    let r = resolve(&s3_basic()).unwrap();
    assert_eq!(r.sync_interval, Duration::from_secs(1));
    assert_eq!(r.checkpoint_interval, Some(Duration::from_secs(60)));
}

// --- booleans --------------------------------------------------------------------------------

#[test]
fn booleans() {
    for t in ["true", "TRUE", "1", "yes", "Yes", "on", " on "] {
        assert_eq!(parse_bool(t), Ok(true), "{t}");
    }
    for f in ["false", "False", "0", "no", "NO", "off"] {
        assert_eq!(parse_bool(f), Ok(false), "{f}");
    }
    for bad in ["maybe", "", "t", "2", "enable"] {
        assert!(parse_bool(bad).is_err(), "{bad}");
    }
    let mut s = Settings::new();
    assert_eq!(set(&mut s, "skip-verify", "ON"), "true");
    assert_eq!(set(&mut s, "force-path-style", "no"), "false");
    assert_eq!(
        set_err("force-path-style", "maybe"),
        "invalid value 'maybe' for force-path-style: expected true or false (also 1/0, yes/no, on/off)"
    );
}

#[test]
fn force_path_style_default_follows_endpoint() {
    let mut s = s3_basic();
    assert_eq!(s.get("force-path-style").unwrap().as_deref(), Some("false"));
    set(&mut s, "endpoint", "http://127.0.0.1:9000");
    assert_eq!(s.get("force-path-style").unwrap().as_deref(), Some("true"));
    set(&mut s, "force-path-style", "false");
    assert!(!s3_target(&s).force_path_style);
    assert_eq!(
        s.set("force-path-style", None).unwrap().as_deref(),
        Some("true")
    );
    s.set("endpoint", None).unwrap();
    assert_eq!(s.get("force-path-style").unwrap().as_deref(), Some("false"));
}

// --- checkpoint keys -------------------------------------------------------------------------

#[test]
fn checkpoint_keys() {
    let mut s = s3_basic();
    assert_eq!(
        s.get("min-checkpoint-page-count").unwrap().as_deref(),
        Some("1000")
    );
    assert_eq!(s.get("truncate-page-n").unwrap().as_deref(), Some("121359"));
    assert_eq!(set(&mut s, "min-checkpoint-page-count", "500"), "500");
    assert_eq!(set(&mut s, "truncate-page-n", "OFF"), "off");
    let r = resolve(&s).unwrap();
    assert_eq!(r.min_checkpoint_page_count, 500);
    assert_eq!(r.truncate_page_n, None);
    // Negative numbers are errors, not a silent 'off'.
    for bad in ["-1", "-5", "-99999999999999999999999", "-0"] {
        assert_eq!(
            set_err("truncate-page-n", bad),
            format!("invalid value '{bad}' for truncate-page-n: negative numbers are not allowed (use 'off' to disable TRUNCATE checkpoints); expected a whole number of pages from 1 to 4294967295, or 'off' to disable TRUNCATE checkpoints")
        );
    }
    assert_eq!(s.get("truncate-page-n").unwrap().as_deref(), Some("off"));
    assert_eq!(set(&mut s, "truncate-page-n", "200000"), "200000");
    assert_eq!(set(&mut s, "truncate-page-n", "2e5"), "200000");
    assert_eq!(resolve(&s).unwrap().truncate_page_n, Some(200_000));
    assert_eq!(
        set_err("truncate-page-n", "0"),
        "invalid value '0' for truncate-page-n: Litestream treats 0 as \"use the default\" (121359); use 'off' to disable TRUNCATE checkpoints, or a positive number of pages"
    );
    assert!(set_err("truncate-page-n", "0.0").contains("Litestream treats 0"));
    assert!(set_err("truncate-page-n", "1.5").contains("not a whole number; "));
    assert_eq!(
        set_err("truncate-page-n", "lots"),
        "invalid value 'lots' for truncate-page-n: expected a whole number of pages from 1 to 4294967295, or 'off' to disable TRUNCATE checkpoints"
    );
    assert!(set_err("truncate-page-n", "4294967296")
        .starts_with("invalid value '4294967296' for truncate-page-n"));
    for (bad, why) in [
        ("0", ""),
        ("-5", "negative numbers are not allowed; "),
        ("1.5", "not a whole number; "),
        ("", ""),
        ("x", ""),
        ("4294967296", ""),
    ] {
        assert_eq!(
            set_err("min-checkpoint-page-count", bad),
            format!("invalid value '{bad}' for min-checkpoint-page-count: {why}expected a whole number of pages from 1 to 4294967295")
        );
    }
    assert_eq!(set(&mut s, "min-checkpoint-page-count", "1e3"), "1000");
    let r = resolve(&s3_basic()).unwrap();
    assert_eq!(r.min_checkpoint_page_count, 1000);
    assert_eq!(r.truncate_page_n, Some(121_359));
}
