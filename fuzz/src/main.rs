//! Randomized mutation testing ("fuzzing" without coverage guidance, no extra dependencies) of
//! the code that parses untrusted input: the LTX decoder (replica objects), the WAL scanner (a
//! `-wal` file anyone may have written) and configuration parsing (SQL arguments). Each target
//! starts from valid seeds, mutates them (bit flips, random bytes, truncation, extension,
//! duplication, splicing, interesting values) and runs the parser under `catch_unwind`, with
//! overflow checks and debug assertions on. Invariant checked: no input panics; a corrupt input
//! is an `Err`, never a crash. Panicking inputs are written to `fuzz/crashes/`.
//!
//!   cargo run --release -- [--iters N] [--seed S] [ltx] [wal] [config]
//!
//! Default: 1,000,000 iterations per target. "depth reached" counts how far inputs got: LTX
//! [header rejected, header ok, a page decoded, whole file valid]; WAL [no header, header or
//! resume mismatch, segment without commits, segment with commits] (approximately); config
//! [nothing accepted, a value accepted, a configuration resolved].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use litestream::config::{self, target_from_url, Settings};
use litestream::ltx::{verify, Decoder, Encoder};
use litestream::ltx::{Header, HEADER_FLAG_NO_CHECKSUM};
use litestream::wal::{self, Resume, ScanOutcome};

/// xorshift64*: deterministic for a seed, fast, good enough for mutation choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const INTERESTING: &[u32] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x1ff,
    511,
    512,
    513,
    4096,
    65535,
    65536,
    65537,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            2 => d.truncate(rng.below(d.len() + 1)),
            3 => {
                let n = rng.below(64);
                let extra = rng.bytes(n);
                let at = rng.below(d.len() + 1);
                d.splice(at..at, extra);
            }
            4 if !d.is_empty() => {
                // duplicate a chunk somewhere else
                let a = rng.below(d.len());
                let b = (a + rng.below(256)).min(d.len());
                let chunk = d[a..b].to_vec();
                let at = rng.below(d.len() + 1);
                d.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                // splice: our prefix, the other's suffix
                let a = rng.below(d.len() + 1);
                let b = rng.below(other.len());
                d.truncate(a);
                d.extend_from_slice(&other[b..]);
            }
            6 if d.len() >= 4 => {
                let i = rng.below(d.len() - 3);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                d[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            7 if d.len() >= 8 => {
                // an 8-byte field set to something extreme (TXIDs, offsets, timestamps)
                let i = rng.below(d.len() - 7);
                let v: u64 = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => i64::MAX as u64,
                    _ => rng.next(),
                };
                d[i..i + 8].copy_from_slice(&v.to_be_bytes());
            }
            _ if !d.is_empty() => {
                let i = rng.below(d.len());
                let n = (1 + rng.below(32)).min(d.len() - i);
                let v = if rng.chance(2) { 0 } else { 0xff };
                d[i..i + n].iter_mut().for_each(|b| *b = v);
            }
            _ => {}
        }
    }
    d
}

// ---------------------------------------------------------------- LTX

fn ltx_seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ltx");
    for d in [dir, PathBuf::from("tests/fixtures/ltx")] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    seeds.push(b);
                }
            }
            break;
        }
    }
    for &page_size in &[512u32, 1024, 4096] {
        for snapshot in [true, false] {
            let npages = 1 + rng.below(5) as u32;
            let commit = npages + if snapshot { 0 } else { rng.below(3) as u32 };
            let h = Header {
                flags: HEADER_FLAG_NO_CHECKSUM,
                page_size,
                commit,
                min_txid: if snapshot { 1 } else { 5 },
                max_txid: if snapshot { 1 } else { 7 },
                timestamp_ms: 1_700_000_000_000,
                pre_apply_checksum: 0,
                wal_offset: 32,
                wal_size: 4120,
                wal_salt1: 0x1234,
                wal_salt2: 0x5678,
                node_id: 0,
            };
            let mut out = Vec::new();
            let Ok(mut enc) = Encoder::new(&mut out, h) else {
                continue;
            };
            let mut ok = true;
            for pgno in 1..=npages {
                // half compressible, half random pages: both LZ4 paths
                let page = if pgno % 2 == 0 {
                    rng.bytes(page_size as usize)
                } else {
                    let mut p = vec![0u8; page_size as usize];
                    p[..8].copy_from_slice(&rng.next().to_be_bytes());
                    p
                };
                ok &= enc.write_page(pgno, &page).is_ok();
            }
            if ok && enc.finish().is_ok() {
                seeds.push(out);
            }
        }
    }
    seeds
}

/// Returns how deep the input got: 0 header rejected, 1 header ok, 2 a page decoded, 3 valid file.
fn ltx_one(data: &[u8]) -> usize {
    let mut depth = 0;
    if let Ok(mut dec) = Decoder::new(data) {
        depth = 1;
        let ps = dec.header().page_size as usize;
        if ps <= 65536 {
            let mut buf = vec![0u8; ps];
            for _ in 0..100_000 {
                match dec.next_page(&mut buf) {
                    Ok(Some(_)) => depth = 2,
                    _ => break,
                }
            }
            if dec.finish().is_ok() {
                depth = 3;
            }
        }
    }
    let _ = verify(data, |_, _| {});
    depth
}

// ---------------------------------------------------------------- WAL

fn wal_seed(rng: &mut Rng, page_size: u32, big_endian: bool, txns: usize) -> Vec<u8> {
    let mut d = Vec::new();
    let magic: u32 = if big_endian { 0x377f_0683 } else { 0x377f_0682 };
    let (salt1, salt2) = (rng.next() as u32, rng.next() as u32);
    for v in [
        magic,
        3_007_000,
        page_size,
        rng.below(3) as u32,
        salt1,
        salt2,
    ] {
        d.extend_from_slice(&v.to_be_bytes());
    }
    let ck = wal::wal_checksum(big_endian, (0, 0), &d[..24]);
    d.extend_from_slice(&ck.0.to_be_bytes());
    d.extend_from_slice(&ck.1.to_be_bytes());
    let mut seed = ck;
    let mut db_pages = 1u32;
    for _ in 0..txns {
        let n = 1 + rng.below(4);
        for i in 0..n {
            let pgno = 1 + rng.below(db_pages as usize + 2) as u32;
            db_pages = db_pages.max(pgno);
            let commit = if i + 1 == n { db_pages } else { 0 };
            let page = rng.bytes(page_size as usize);
            let mut fh = Vec::with_capacity(24);
            fh.extend_from_slice(&pgno.to_be_bytes());
            fh.extend_from_slice(&commit.to_be_bytes());
            seed = wal::wal_checksum(big_endian, seed, &fh[..8]);
            seed = wal::wal_checksum(big_endian, seed, &page);
            fh.extend_from_slice(&salt1.to_be_bytes());
            fh.extend_from_slice(&salt2.to_be_bytes());
            fh.extend_from_slice(&seed.0.to_be_bytes());
            fh.extend_from_slice(&seed.1.to_be_bytes());
            d.extend_from_slice(&fh);
            d.extend_from_slice(&page);
        }
    }
    d
}

/// Returns 0 no header, 1 header but no segment, 2 a segment with frames.
fn wal_one(rng: &mut Rng, data: &[u8]) -> usize {
    let resume = if rng.chance(2) {
        Resume::FromStart
    } else {
        let salts = wal::WalHeader::parse(data)
            .ok()
            .flatten()
            .map(|h| h.salts())
            .unwrap_or((0, 0));
        Resume::At {
            offset: match rng.below(3) {
                0 => rng.next(),
                1 => 32 + (rng.below(8) as u64) * (24 + 512),
                _ => rng.below(data.len() + 1) as u64,
            },
            salt1: salts.0,
            salt2: salts.1,
        }
    };
    let max = if rng.chance(3) {
        Some(rng.next() % (data.len() as u64 + 1))
    } else {
        None
    };
    let mut depth = 0;
    match wal::scan(data, resume, max) {
        Ok(ScanOutcome::Segment(seg)) => {
            depth = if seg.commits > 0 { 2 } else { 1 };
            let ps = seg.header.page_size as usize;
            if ps <= 65536 {
                let mut buf = vec![0u8; ps];
                for fr in seg.frame_refs().take(64) {
                    let _ = wal::read_frame_page(data, fr.offset, &mut buf);
                }
            }
        }
        Ok(ScanOutcome::PrevFrameMismatch { .. }) => depth = 1,
        _ => {}
    }
    let _ = wal::read_frame_header(data, rng.below(data.len() + 1) as u64);
    depth
}

// ---------------------------------------------------------------- config

/// A value built from the crate's own vocabulary (every key's samples and the odd inputs its
/// unit tests use), with random characters mixed in.
fn random_value(rng: &mut Rng, tokens: &[&str]) -> String {
    let mut s = String::new();
    for _ in 0..1 + rng.below(5) {
        if rng.chance(8) {
            let n = rng.below(12);
            s.extend((0..n).map(|_| char::from_u32(rng.next() as u32 % 0x250).unwrap_or('x')));
        } else {
            s.push_str(tokens[rng.below(tokens.len())]);
        }
    }
    s
}

/// Returns 0 nothing accepted, 1 some value accepted, 2 a configuration resolved.
fn config_one(rng: &mut Rng, tokens: &[&str]) -> usize {
    let keys = config::keys();
    let mut depth = 0;
    let mut s = Settings::new();
    for _ in 0..1 + rng.below(6) {
        let spec = &keys[rng.below(keys.len())];
        let key = if rng.chance(20) {
            random_value(rng, tokens)
        } else {
            spec.name.to_string()
        };
        let value = if rng.chance(10) {
            None
        } else if rng.chance(3) && !spec.samples.is_empty() {
            // a valid value of this key, mutated: reaches past the first check more often
            let sample = spec.samples[rng.below(spec.samples.len())].as_bytes();
            let other = tokens[rng.below(tokens.len())].as_bytes();
            Some(String::from_utf8_lossy(&mutate(rng, sample, other)).into_owned())
        } else {
            Some(random_value(rng, tokens))
        };
        if s.set(&key, value.as_deref()).is_ok() {
            depth = depth.max(1);
        }
        let _ = s.get(&key);
    }
    let _ = s.to_json();
    if s.resolve().is_ok() {
        depth = 2;
    }
    let _ = target_from_url(&random_value(rng, tokens));
    depth
}

// ---------------------------------------------------------------- driver

fn save_crash(target: &str, data: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crashes");
    let _ = std::fs::create_dir_all(&dir);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let p = dir.join(format!("{target}-{h:016x}.bin"));
    let _ = std::fs::write(&p, data);
    p
}

fn main() {
    let mut iters: u64 = 1_000_000;
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut targets: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => iters = args.next().and_then(|v| v.parse().ok()).expect("--iters N"),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed S"),
            t => targets.push(t.to_string()),
        }
    }
    if targets.is_empty() {
        targets = vec!["ltx".into(), "wal".into(), "config".into()];
    }
    // quiet: a panic is reported by us, with the input saved
    std::panic::set_hook(Box::new(|_| {}));
    let config_tokens = config::sample_values();
    let mut failed = 0;
    for target in &targets {
        let mut rng = Rng(seed | 1);
        let seeds: Vec<Vec<u8>> = match target.as_str() {
            "ltx" => ltx_seeds(&mut rng),
            "wal" => {
                let mut v = Vec::new();
                for ps in [512u32, 1024, 4096] {
                    for be in [false, true] {
                        let txns = 1 + rng.below(4);
                        v.push(wal_seed(&mut rng, ps, be, txns));
                    }
                }
                v
            }
            "config" => vec![Vec::new()],
            other => panic!("unknown target {other}: ltx, wal, config"),
        };
        let t0 = Instant::now();
        let mut panics = 0u64;
        let mut depths = [0u64; 4];
        for _ in 0..iters {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            let data = if target == "config" {
                Vec::new()
            } else {
                mutate(&mut rng, a, b)
            };
            let mut sub = Rng(rng.next() | 1);
            let r = catch_unwind(AssertUnwindSafe(|| match target.as_str() {
                "ltx" => ltx_one(&data),
                "wal" => wal_one(&mut sub, &data),
                _ => config_one(&mut sub, &config_tokens),
            }));
            if let Ok(d) = r {
                depths[d.min(3)] += 1;
            }
            if r.is_err() {
                panics += 1;
                if panics <= 5 {
                    let p = save_crash(target, &data);
                    eprintln!(
                        "{target}: PANIC on input saved to {} (sub-seed {})",
                        p.display(),
                        sub.0
                    );
                }
            }
        }
        println!(
            "{target}: {iters} executions in {:.1} s, {} seeds, {panics} panics; depth reached {:?}",
            t0.elapsed().as_secs_f64(),
            seeds.len(),
            depths
        );
        if panics > 0 {
            failed += 1;
        }
    }
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
