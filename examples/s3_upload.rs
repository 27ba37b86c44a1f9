//! Upload one file through the extension's own S3 uploader (`litestream::s3`), configured through
//! the same settings parser as `litestream_configure()`; print one JSON line with the outcome.
//!
//! Used by tests/integration/test_multipart.py (a 64 MiB object at part-size 5MB and concurrency
//! 1, 3, 10) and by bench/ (throughput and peak RSS against part-size × concurrency).
//!
//! ```text
//! cargo build --release --example s3_upload
//! target/release/examples/s3_upload URL KEY FILE [key=value ...]
//!   URL    s3://BUCKET/PATH?endpoint=http://127.0.0.1:PORT   (credentials from AWS_* variables)
//!   KEY    object key to write (anywhere in the bucket)
//!   FILE   content; copied into a spool first, exactly as the replicator spools an LTX file
//!   key=value  any litestream_configure() key, e.g. part-size=5MB concurrency=3 skip-verify=true
//! ```
//!
//! Output: {"ok":true,"size":…,"seconds":…,"bytes_per_second":…,"peak_rss_bytes":…,
//! "rss_before_upload_bytes":…,"samples":…,"max_parts_done":…,"in_flight_seen":{…},"progress":{…}}
//! or {"ok":false,"error":"…"} with exit status 1.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litestream::config::{ReplicaTarget, Settings};
use litestream::replica_client::{ReplicaClient, Spool};
use litestream::s3::{upload, S3Client};

/// The replicator's spool threshold (src/replicator.rs SPOOL_MEMORY_LIMIT).
const SPOOL_MEMORY_LIMIT: usize = 8 << 20;

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    println!(
        "{}",
        serde_json::json!({"ok": false, "error": msg.to_string()})
    );
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: s3_upload URL KEY FILE [key=value ...]");
        std::process::exit(2);
    }
    let (url, key, file) = (&args[0], &args[1], &args[2]);
    // Without credentials the SDK's default chain would ask the EC2 instance metadata service, a
    // non-loopback address: refuse, and make sure it is never asked.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let has_key = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let configured = args[3..].iter().any(|a| a.starts_with("access-key-id="));
    let from_env = has_key("AWS_ACCESS_KEY_ID") && has_key("AWS_SECRET_ACCESS_KEY");
    if !(configured || from_env) {
        fail("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or access-key-id=… secret-access-key=…)");
    }
    let mut settings = Settings::new();
    if let Err(e) = settings.set("url", Some(url)) {
        fail(e);
    }
    for kv in &args[3..] {
        let Some((k, v)) = kv.split_once('=') else {
            fail(format!("expected key=value, got {kv}"));
        };
        if let Err(e) = settings.set(k, Some(v)) {
            fail(e);
        }
    }
    let cfg = settings.resolve().unwrap_or_else(|e| fail(e));
    let ReplicaTarget::S3(target) = cfg.target else {
        fail("not an S3 replica");
    };

    // Spool the file as the replicator spools an encoded LTX file (spilled to disk past 8 MiB).
    let spill_dir = std::env::temp_dir().join("s3_upload-spool");
    let mut spool = Spool::new(&spill_dir, SPOOL_MEMORY_LIMIT);
    let mut f = std::fs::File::open(file).unwrap_or_else(|e| fail(format!("{file}: {e}")));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| fail(e));
        if n == 0 {
            break;
        }
        spool.write_all(&buf[..n]).unwrap_or_else(|e| fail(e));
    }
    drop(buf);
    // Write the spool's dirty pages back now, untimed: otherwise the kernel flushes them while
    // the upload runs, competing for the disk with the server under test (boto3, the baseline,
    // reads its file straight from the page cache).
    if let Some(Ok(f)) = spool.file_handle() {
        let _ = f.sync_data();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2) // as the extension's runtime (src/runtime.rs)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e));
    let client = Arc::new(S3Client::new(&target, rt.handle().clone()).unwrap_or_else(|e| fail(e)));

    // Sample status while the upload runs, as litestream_status() would show it.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (client, done) = (client.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut samples, mut max_done, mut seen) = (0u64, 0u64, serde_json::Value::Null);
            while !done.load(Ordering::Relaxed) {
                let p = serde_json::to_value(client.progress().snapshot()).unwrap_or_default();
                let cur = &p["in_flight"];
                if !cur.is_null() {
                    samples += 1;
                    let d = cur["parts_done"].as_u64().unwrap_or(0);
                    if d >= max_done {
                        max_done = d;
                        seen = cur.clone();
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, max_done, seen)
        })
    };

    let rss_before = proc_status_kib("VmRSS:") * 1024;
    let t0 = Instant::now();
    let result = upload::put_object(&client, key, Vec::new(), &mut spool);
    let secs = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let (samples, max_done, seen) = sampler.join().unwrap_or_default();
    match result {
        Ok(size) => println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "size": size,
                "part_size": target.part_size,
                "concurrency": target.concurrency,
                "seconds": secs,
                "bytes_per_second": (size as f64 / secs.max(1e-9)) as u64,
                "peak_rss_bytes": proc_status_kib("VmHWM:") * 1024,
                "rss_before_upload_bytes": rss_before,
                "samples": samples,
                "max_parts_done": max_done,
                "in_flight_seen": seen,
                "progress": serde_json::to_value(client.progress().snapshot()).unwrap_or_default(),
            })
        ),
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"ok": false, "error": e.to_string(), "seconds": secs,
                                   "progress": serde_json::to_value(client.progress().snapshot()).unwrap_or_default()})
            );
            std::process::exit(1);
        }
    }
}
