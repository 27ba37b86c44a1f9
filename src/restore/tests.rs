//! Unit tests of the restore plan and progress registry.
use super::*;

pub fn info(level: u8, min: u64, max: u64, created_s: u64) -> LtxFileInfo {
    LtxFileInfo {
        level,
        min_txid: min,
        max_txid: max,
        size: 1000,
        created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(created_s),
        key: format!("{level}/{}", ltx::file_name(min, max)),
    }
}

pub fn levels_of(files: &[LtxFileInfo]) -> Vec<Vec<LtxFileInfo>> {
    let mut levels = vec![Vec::new(); 10];
    for f in files {
        levels[f.level as usize].push(f.clone());
    }
    for l in &mut levels {
        l.sort_by_key(|f| (f.min_txid, f.max_txid));
    }
    levels
}

fn names(plan: &[LtxFileInfo]) -> Vec<(u8, u64, u64)> {
    plan.iter()
        .map(|f| (f.level, f.min_txid, f.max_txid))
        .collect()
}

fn at(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s)
}

/// L0 1..=10 (created at second = txid), L1 1-4 (t=4), 5-8 (t=8), L2 1-8 (t=8),
/// snapshot 1-6 (t=6.5 → 7).
fn sample() -> Vec<Vec<LtxFileInfo>> {
    let mut files: Vec<LtxFileInfo> = (1..=10).map(|t| info(0, t, t, t)).collect();
    files.push(info(1, 1, 4, 4));
    files.push(info(1, 5, 8, 8));
    files.push(info(2, 1, 8, 8));
    files.push(info(9, 1, 6, 7));
    levels_of(&files)
}

#[test]
fn latest_prefers_snapshot_then_furthest_reach() {
    let plan = plan_files(&sample(), Target::Latest).unwrap();
    // Snapshot 1-6, then the furthest reach: L1 5-8 and L2 1-8 both reach 8, the smaller
    // MinTXID wins (L2 1-8), then L0 9 and 10.
    assert_eq!(names(&plan), [(9, 1, 6), (2, 1, 8), (0, 9, 9), (0, 10, 10)]);
}

#[test]
fn txid_targets_are_file_boundaries() {
    let lv = sample();
    assert_eq!(
        names(&plan_files(&lv, Target::Txid(6)).unwrap()),
        [(9, 1, 6)]
    );
    assert_eq!(
        names(&plan_files(&lv, Target::Txid(7)).unwrap()),
        [(9, 1, 6), (0, 7, 7)]
    );
    assert_eq!(
        names(&plan_files(&lv, Target::Txid(4)).unwrap()),
        [(1, 1, 4)]
    );
    assert_eq!(
        names(&plan_files(&lv, Target::Txid(9)).unwrap()),
        [(9, 1, 6), (2, 1, 8), (0, 9, 9)]
    );
    // Beyond the replica: not available.
    assert_eq!(
        plan_files(&lv, Target::Txid(11)),
        Err(PlanError::NotAvailable { reached: 10 })
    );
    // Only L1 1-4 covers TXID 3 once L0 is gone: 3 is not a boundary any more.
    let mut no_l0 = lv.clone();
    no_l0[0].clear();
    assert_eq!(
        plan_files(&no_l0, Target::Txid(3)),
        Err(PlanError::NotAvailable { reached: 0 })
    );
}

#[test]
fn timestamp_targets_use_creation_times() {
    let lv = sample();
    // Before t=7 the snapshot does not count; L0 up to 6 (created at 6 < 6.5).
    let plan = plan_files(&lv, Target::Timestamp(at(6) + Duration::from_millis(500))).unwrap();
    assert_eq!(names(&plan), [(1, 1, 4), (0, 5, 5), (0, 6, 6)]);
    // Strictly before: a file created exactly at the target is excluded.
    let plan = plan_files(&lv, Target::Timestamp(at(8))).unwrap();
    assert_eq!(names(&plan), [(9, 1, 6), (0, 7, 7)]);
    let plan = plan_files(&lv, Target::Timestamp(at(100))).unwrap();
    assert_eq!(plan.last().unwrap().max_txid, 10);
    assert_eq!(
        plan_files(&lv, Target::Timestamp(at(1))),
        Err(PlanError::NotAvailable { reached: 0 })
    );
}

#[test]
fn gaps_and_missing_snapshots() {
    let mut lv = levels_of(&[info(0, 1, 1, 1), info(0, 2, 2, 2), info(0, 4, 4, 4)]);
    match plan_files(&lv, Target::Latest) {
        Err(PlanError::NonContiguous { reached: 2, next }) => assert_eq!(next.min_txid, 4),
        other => panic!("{other:?}"),
    }
    // A TXID or timestamp target does not look past its point.
    assert_eq!(plan_files(&lv, Target::Txid(2)).unwrap().len(), 2);
    assert_eq!(plan_files(&lv, Target::Timestamp(at(3))).unwrap().len(), 2);
    // But a time after the gap's far side would silently stop short of it: refused.
    match plan_files(&lv, Target::Timestamp(at(100))) {
        Err(PlanError::NonContiguous { reached: 2, next }) => assert_eq!(next.min_txid, 4),
        other => panic!("{other:?}"),
    }
    // Without TXID 1 nothing can start the plan.
    lv[0].remove(0);
    assert_eq!(
        plan_files(&lv, Target::Txid(2)),
        Err(PlanError::NotAvailable { reached: 0 })
    );
    // A level-9 file that is not a snapshot from TXID 1 cannot start it either.
    lv[9].push(info(9, 2, 2, 2));
    match plan_files(&lv, Target::Txid(2)) {
        Err(PlanError::NoSnapshot { first }) => assert_eq!(first.min_txid, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plan_files(&levels_of(&[]), Target::Latest),
        Err(PlanError::NotAvailable { reached: 0 })
    );
}

#[test]
fn overlapping_files_and_ties() {
    // Overlap is allowed: 1-5 then 3-9. Ties on reach: smaller min, then higher level.
    let lv = levels_of(&[
        info(0, 1, 5, 1),
        info(1, 3, 9, 2),
        info(2, 3, 9, 3),
        info(3, 4, 9, 1),
    ]);
    assert_eq!(
        names(&plan_files(&lv, Target::Latest).unwrap()),
        [(0, 1, 5), (2, 3, 9)]
    );
}

#[test]
fn options_pick_one_target() {
    let mut o = RestoreOptions::default();
    assert_eq!(o.target().unwrap(), Target::Latest);
    o.txid = Some(5);
    assert_eq!(o.target().unwrap(), Target::Txid(5));
    o.timestamp = Some(at(5));
    assert!(o.target().is_err());
}

#[test]
fn progress_registry() {
    assert!(active_json()
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["output"] != "/x/y.db"));
    {
        let r = Registered::new(Path::new("/x/y.db"), "file:///r".into(), Target::Txid(3));
        r.0.files_total.store(4, Ordering::Relaxed);
        let all = active_json();
        let me = all
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["output"] == "/x/y.db")
            .unwrap()
            .clone();
        assert_eq!(me["target"], "TXID 0000000000000003");
        assert_eq!(me["files_total"], 4);
        assert_eq!(me["phase"], "planning");
    }
    assert!(active_json()
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["output"] != "/x/y.db"));
}
