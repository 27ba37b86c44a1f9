//! The lease as a whole — keeper, local lock and fence together — against lock.json in memory
//! with S3's conditional-write semantics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::record::{unix_now, LeaseRecord, LockFormat};
use super::store::{ignored_message, Cond, ProbeError, StoreError};
use super::*;

/// lock.json in memory, with S3's conditional-write semantics (or none, to test the probe).
#[derive(Default)]
struct MemStore {
    obj: Mutex<Option<(Vec<u8>, String)>>,
    version: AtomicU64,
    ignore_conditions: AtomicBool,
    writes: AtomicU64,
    replica_token: AtomicU64,
    /// The next this many successful writes land but report a network error (lost answer).
    lose_answers: AtomicU64,
}

impl MemStore {
    fn set(&self, body: &str) {
        let v = self.version.fetch_add(1, Ordering::SeqCst);
        *self.obj.lock().unwrap() = Some((body.as_bytes().to_vec(), format!("\"v{v}\"")));
    }
    fn record(&self) -> Option<LeaseRecord> {
        let g = self.obj.lock().unwrap();
        g.as_ref().map(|(b, _)| LeaseRecord::parse(b).unwrap())
    }
}

impl LeaseStore for MemStore {
    fn describe(&self) -> String {
        "mem://lock.json".into()
    }
    fn get(&self) -> std::result::Result<Option<(Vec<u8>, String)>, StoreError> {
        Ok(self.obj.lock().unwrap().clone())
    }
    fn put(&self, body: &str, cond: &Cond) -> std::result::Result<String, StoreError> {
        let mut g = self.obj.lock().unwrap();
        if !self.ignore_conditions.load(Ordering::SeqCst) {
            match (cond, g.as_ref()) {
                (Cond::Absent, Some(_)) => return Err(StoreError::Precondition),
                (Cond::Matches(_), None) => return Err(StoreError::NotFound),
                (Cond::Matches(e), Some((_, cur))) if e != cur => {
                    return Err(StoreError::Precondition)
                }
                _ => {}
            }
        }
        let v = self.version.fetch_add(1, Ordering::SeqCst);
        let etag = format!("\"v{v}\"");
        *g = Some((body.as_bytes().to_vec(), etag.clone()));
        self.writes.fetch_add(1, Ordering::SeqCst);
        let lose = self
            .lose_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if lose.is_ok() {
            return Err(StoreError::Other("connection reset (test)".into()));
        }
        Ok(etag)
    }
    fn delete(&self, etag: &str) -> std::result::Result<(), StoreError> {
        let mut g = self.obj.lock().unwrap();
        match g.as_ref() {
            None => Err(StoreError::NotFound),
            Some((_, cur)) if cur != etag => Err(StoreError::Precondition),
            _ => {
                *g = None;
                Ok(())
            }
        }
    }
    fn probe(&self) -> std::result::Result<(), ProbeError> {
        if self.ignore_conditions.load(Ordering::SeqCst) {
            Err(ProbeError::Ignored("test".into()))
        } else {
            Ok(())
        }
    }
    fn replica_token(&self) -> std::result::Result<u64, StoreError> {
        Ok(self.replica_token.load(Ordering::SeqCst))
    }
}

/// A temporary meta directory, removed when dropped.
struct TmpDir(PathBuf);
impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}
impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(tag: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!(
        "ls-lease-{tag}-{}-{:x}",
        std::process::id(),
        crate::replica_client::rand_u64()
    ));
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

fn start(store: &Arc<MemStore>, owner: &str, dir: &Path, ttl_ms: u64) -> Lease {
    Lease::start(
        LeaseSetup {
            store: store.clone(),
            fence: Arc::new(Fence::new()),
            timing: Timing::new(Duration::from_millis(ttl_ms)),
            owner: owner.into(),
            probed: false,
        },
        dir,
        Box::new(|| {}),
        &crate::scheduler::Scheduler::new("test-lease", 2),
    )
    .unwrap()
}

fn wait_for(what: &str, secs: f64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed().as_secs_f64() < secs,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_renewal_that_landed_unheard_keeps_the_lease() {
    // The renewal's write lands but its answer is lost and the request fails; the next
    // renewal's If-Match (the ETag before it) then fails with a 412 against our own write.
    let store = Arc::new(MemStore::default());
    let d = tmpdir("unheard-renew");
    let l = start(&store, "u:1", &d, 1200);
    wait_for("hold", 3.0, || l.holding().is_some());
    let writes = store.writes.load(Ordering::SeqCst);
    store.lose_answers.store(2, Ordering::SeqCst);
    wait_for("two unheard writes and a renewal", 5.0, || {
        store.writes.load(Ordering::SeqCst) >= writes + 4
    });
    let v = l.view();
    assert!(v.lost.is_none(), "lost its own lease: {:?}", v.lost);
    assert!(l.holding().is_some());
    assert_eq!(store.record().unwrap().token, 1);
    l.stop();
    assert!(store.record().is_none(), "released on stop");
}

#[test]
fn an_acquisition_that_landed_unheard_is_ours() {
    let store = Arc::new(MemStore::default());
    store.lose_answers.store(1, Ordering::SeqCst);
    let d = tmpdir("unheard-acquire");
    let t0 = Instant::now();
    let l = start(&store, "u:2", &d, 3000);
    wait_for("hold", 2.5, || l.holding().is_some());
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "waited for our own lock to expire"
    );
    assert_eq!(store.record().unwrap().token, 1);
    l.stop();
}

#[test]
fn one_holder_then_release_hands_over_at_once() {
    let store = Arc::new(MemStore::default());
    let (da, db) = (tmpdir("a"), tmpdir("b"));
    let a = start(&store, "a:1", &da, 3000);
    wait_for("a to hold", 5.0, || a.holding().is_some());
    let b = start(&store, "b:2", &db, 3000);
    wait_for("b to see a", 5.0, || b.view().resolved);
    let v = b.view();
    assert_eq!(v.role, Role::Standby);
    assert_eq!(v.lock.as_ref().unwrap().owner, "a:1");
    assert!(v
        .standby_message("mem://lock.json")
        .unwrap()
        .contains("held by a:1 (token 1"));
    assert!(a.view().standby_message("x").is_none());
    let t0 = Instant::now();
    a.stop();
    assert!(a.holding().is_none());
    wait_for("b to take over", 3.0, || b.holding().is_some());
    // Released, not expired: well within the 3 s TTL.
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let rec = store.record().unwrap();
    assert_eq!((rec.token, rec.owner.as_str()), (1, "b:2"));
    b.stop();
    assert!(store.record().is_none(), "release deletes lock.json");
}

#[test]
fn respects_a_go_lock_until_it_expires_then_takes_over() {
    let store = Arc::new(MemStore::default());
    let exp = time::OffsetDateTime::from_unix_timestamp_nanos(((unix_now() + 1.2) * 1e9) as i128)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(-6, 0, 0).unwrap())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    store.set(&format!(
        r#"{{"generation":41,"expires_at":"{exp}","owner":"go-host:9"}}"#
    ));
    let d = tmpdir("go");
    let l = start(&store, "rust:1", &d, 2000);
    wait_for("the standby view", 3.0, || l.view().resolved);
    assert_eq!(l.view().lock.unwrap().owner, "go-host:9");
    assert!(l.holding().is_none());
    let t0 = Instant::now();
    wait_for("takeover after expiry", 4.0, || l.holding().is_some());
    assert!(
        t0.elapsed() > Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    let rec = store.record().unwrap();
    assert_eq!(rec.token, 42);
    assert_eq!(rec.format, LockFormat::Token);
    l.stop();
}

#[test]
fn renews_and_keeps_the_fence_open() {
    let store = Arc::new(MemStore::default());
    let d = tmpdir("renew");
    let l = start(&store, "r:1", &d, 1000);
    wait_for("hold", 3.0, || l.holding().is_some());
    let first = store.record().unwrap().expires_at;
    std::thread::sleep(Duration::from_millis(1500)); // longer than the TTL
    assert!(l.holding().is_some(), "renewals keep the lease");
    assert!(store.record().unwrap().expires_at > first + 0.5);
    assert_eq!(store.record().unwrap().token, 1);
    // Someone overwrites the lock (takeover): the next renewal finds out.
    store.set(&LeaseRecord::new(2, unix_now() + 60.0, "thief:9").to_json());
    wait_for("lost", 3.0, || l.view().lost.is_some());
    assert!(l.holding().is_none());
    assert!(l.check().is_err());
    assert!(l
        .view()
        .lost
        .unwrap()
        .contains("taken over by thief:9 (token 2)"));
    l.stop();
    // Not ours: stop must not delete it.
    assert_eq!(store.record().unwrap().owner, "thief:9");
}

#[test]
fn tokens_stay_above_the_replicas_after_a_release() {
    // lock.json was deleted by a release; the replica's newest object carries token 5.
    let store = Arc::new(MemStore::default());
    store.replica_token.store(5, Ordering::SeqCst);
    let d = tmpdir("floor");
    let l = start(&store, "n:1", &d, 2000);
    wait_for("hold", 3.0, || l.holding().is_some());
    assert_eq!(store.record().unwrap().token, 6);
    l.stop();
    // An expired lock with a lower token than the replica's: still above the replica.
    store.set(&LeaseRecord::new(2, unix_now() - 1.0, "old:1").to_json());
    let l = start(&store, "n:2", &d, 2000);
    wait_for("hold", 3.0, || l.holding().is_some());
    assert_eq!(store.record().unwrap().token, 6);
    l.stop();
}

#[test]
fn local_lock_lets_one_process_poll() {
    let store = Arc::new(MemStore::default());
    let d = tmpdir("local");
    let a = start(&store, "a:1", &d, 2000);
    wait_for("a holds", 3.0, || a.holding().is_some());
    let b = start(&store, "b:2", &d, 2000);
    wait_for("b waits locally", 3.0, || b.view().local_waiting);
    assert!(!b.has_local_claim() && a.has_local_claim());
    wait_for("b reads the note", 3.0, || b.view().lock.is_some());
    assert_eq!(b.view().lock.unwrap().owner, "a:1");
    assert!(b
        .view()
        .standby_message("u")
        .unwrap()
        .contains("another process on this host"));
    let writes = store.writes.load(Ordering::SeqCst);
    a.stop();
    wait_for("b holds", 3.0, || b.holding().is_some());
    assert!(b.has_local_claim());
    assert!(store.writes.load(Ordering::SeqCst) > writes);
    b.stop();
}

#[test]
fn racing_keepers_elect_exactly_one() {
    for _round in 0..5 {
        let store = Arc::new(MemStore::default());
        let dirs: Vec<TmpDir> = (0..8).map(|_| tmpdir("race")).collect();
        let leases: Vec<Lease> = (0..8)
            .map(|i| start(&store, &format!("n{i}:1"), &dirs[i], 3000))
            .collect();
        wait_for("all resolved", 5.0, || {
            leases
                .iter()
                .all(|l| l.view().resolved || l.holding().is_some())
        });
        let holders: Vec<usize> = (0..8).filter(|&i| leases[i].holding().is_some()).collect();
        assert_eq!(holders.len(), 1, "{holders:?}");
        assert_eq!(store.record().unwrap().owner, format!("n{}:1", holders[0]));
    }
}

#[test]
fn a_provider_ignoring_conditions_never_grants() {
    let store = Arc::new(MemStore::default());
    store.ignore_conditions.store(true, Ordering::SeqCst);
    let d = tmpdir("ign");
    let l = start(&store, "x:1", &d, 1000);
    wait_for("fatal", 3.0, || l.view().fatal);
    let v = l.view();
    assert!(v
        .error
        .unwrap()
        .contains("litestream_configure('lease', 'off')"));
    assert!(l.holding().is_none());
    assert!(store.record().is_none());
    l.stop();
    assert!(ignored_message("s3://b/p/lock.json", "d").contains("ignores conditional writes"));
}

#[test]
fn status_has_the_documented_keys_in_every_role() {
    let keys = |s: &LeaseStatus| {
        let v = serde_json::to_value(s).unwrap();
        v.as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    let off = LeaseStatus::off();
    assert_eq!(keys(&off), ["role", "owner", "token", "expires_at"]);
    assert_eq!(
        serde_json::to_string(&off).unwrap(),
        r#"{"role":"off","owner":null,"token":null,"expires_at":null}"#
    );
    let view = View {
        role: Role::Standby,
        me: "me:1".into(),
        lock: Some(LeaseRecord::new(4, 12.5, "them:2")),
        resolved: true,
        local_waiting: true,
        error: None,
        lost: None,
        fatal: false,
    };
    let st = view.status();
    assert_eq!(
        keys(&st),
        [
            "role",
            "owner",
            "token",
            "expires_at",
            "instance",
            "local_standby",
            "error"
        ]
    );
    let v = serde_json::to_value(&st).unwrap();
    assert_eq!(v["role"], "standby");
    assert_eq!(v["owner"], "them:2");
    assert_eq!(v["token"], 4);
    assert_eq!(v["expires_at"], 12.5);
    assert_eq!(v["instance"], "me:1");
    assert_eq!(v["local_standby"], true);
    assert!(v["error"].is_null());
}
