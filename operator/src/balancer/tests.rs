use super::*;
use meshchat_wire::PartitionLoad;
use time::OffsetDateTime;

fn timing() -> RoundTiming {
    RoundTiming {
        interval_ms: 30_000,
        heartbeat_timeout_ms: 5_000,
    }
}

fn report(id: &str, parts: &[i32], load: f64, draining: bool) -> LoadReport {
    LoadReport {
        v: 1,
        worker_id: id.into(),
        address: format!("http://{id}"),
        internal_address: Some(format!("http://{id}:9080")),
        generation: 0,
        partitions: parts
            .iter()
            .map(|p| PartitionLoad {
                partition: *p,
                epoch: 1,
                ..Default::default()
            })
            .collect(),
        load_factor: load,
        draining,
        timestamp: OffsetDateTime::UNIX_EPOCH,
    }
}

fn owners(t: &AssignmentTable) -> BTreeMap<String, Vec<i32>> {
    let mut m: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for a in &t.partitions {
        m.entry(a.owner.clone()).or_default().push(a.partition);
    }
    m
}

fn started(n: usize) -> Balancer {
    started_with(n, Policy::default())
}

fn started_with(n: usize, policy: Policy) -> Balancer {
    let mut b = Balancer::new("mesh", 12, policy, timing(), None, 0);
    for i in 0..n {
        b.observe(report(&format!("w{i}"), &[], 0.0, false), 100);
    }
    assert!(b.tick(1_000).is_none(), "no round during the warm-up");
    for i in 0..n {
        b.observe(report(&format!("w{i}"), &[], 0.0, false), 5_000);
    }
    let first = b.tick(5_000).expect("initial assignment");
    assert_eq!(first.table.generation, 1);
    assert_eq!(first.moves.len(), 12);
    b
}

#[test]
fn initial_assignment_after_warm_up() {
    let b = started(3);
    let o = owners(b.table());
    assert_eq!(o.values().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 4]);
    assert_eq!(b.table().workers.len(), 3);
}

#[test]
fn a_silent_worker_fails_over_without_release() {
    let mut b = started(3);
    for t in [6_000, 8_000, 10_000] {
        b.observe(report("w0", &[], 0.1, false), t);
        b.observe(report("w1", &[], 0.1, false), t);
        assert!(b.tick(t).is_none(), "nothing changes while all are alive");
    }
    // w2 last heard at 5_000; dead after 10_000
    b.observe(report("w0", &[], 0.1, false), 10_500);
    b.observe(report("w1", &[], 0.1, false), 10_500);
    let out = b.tick(10_500).expect("failover");
    failed_over_from_w2(&out);
}

/// w2's four partitions all went to others, as a failover (epoch 2), and w2 owns nothing.
fn failed_over_from_w2(out: &Outcome) {
    assert_eq!(out.moves.len(), 4);
    assert!(
        out.table
            .partitions
            .iter()
            .filter(|a| a.from.as_deref() == Some("w2"))
            .all(|a| a.failover && a.epoch == 2)
    );
    assert!(!owners(&out.table).contains_key("w2"));
}

fn sent_at(mut r: LoadReport, unix_ms: u64) -> LoadReport {
    r.timestamp = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).expect("a time");
    r
}

#[test]
fn a_worker_kubernetes_reports_gone_fails_over_at_once_and_a_new_process_comes_back() {
    let mut b = started(3);
    b.observe(sent_at(report("w2", &[], 0.1, false), 5_900), 6_000);
    assert!(b.tick(6_000).is_none());
    // its pod is deleted at 6_100, well within the heartbeat timeout (5 s from 6_000)
    b.gone("w2", 6_100);
    let out = b.tick(6_200).expect("failover at once");
    failed_over_from_w2(&out);
    // a heartbeat the dead process sent before, read late, does not bring it back
    b.observe(sent_at(report("w2", &[], 0.1, false), 6_050), 6_300);
    assert!(!b.summary(6_300).workers.iter().any(|w| w.id == "w2" && w.alive));
    // the new pod's process (same name) does
    b.observe(sent_at(report("w2", &[], 0.0, false), 7_000), 7_000);
    assert!(b.summary(7_000).workers.iter().any(|w| w.id == "w2" && w.alive));
}

#[test]
fn a_handoff_under_way_from_a_gone_worker_becomes_a_failover() {
    let mut b = started(3);
    // w2 drains: its partitions move to the others as planned handoffs
    b.observe(sent_at(report("w2", &[], 0.1, true), 5_900), 6_000);
    let drain = b.tick(6_000).expect("drain");
    let moved: Vec<i32> = drain.moves.iter().map(|m| m.partition).collect();
    assert!(!moved.is_empty());
    assert!(drain.table.partitions.iter().all(|a| !a.failover));
    // its pod goes before the releases are written
    b.gone("w2", 6_100);
    let out = b.tick(6_200).expect("the handoffs republished as failovers");
    assert!(out.moves.is_empty(), "{:?}", out.moves);
    assert_eq!(out.table.generation, drain.table.generation + 1);
    for a in &out.table.partitions {
        let was = drain.table.partitions.iter().find(|d| d.partition == a.partition);
        assert_eq!(Some(&a.owner), was.map(|d| &d.owner), "nobody else moves");
        assert_eq!(a.failover, moved.contains(&a.partition), "{a:?}");
    }
    assert!(b.tick(6_400).is_none(), "published once");
}

#[test]
fn a_gone_worker_that_owns_nothing_moves_nothing() {
    let mut b = started(3);
    b.gone("somebody-else", 6_000);
    assert!(b.tick(6_100).is_none());
    assert_eq!(owners(b.table()).len(), 3);
}

#[test]
fn draining_moves_partitions_as_planned_handoffs() {
    let mut b = started(3);
    b.observe(report("w1", &[], 0.1, true), 6_000);
    b.observe(report("w0", &[], 0.1, false), 6_000);
    b.observe(report("w2", &[], 0.1, false), 6_000);
    let out = b.tick(6_000).expect("drain");
    let moved: Vec<_> = out
        .table
        .partitions
        .iter()
        .filter(|a| a.from.as_deref() == Some("w1"))
        .collect();
    assert_eq!(moved.len(), 4);
    assert!(moved.iter().all(|a| !a.failover));
}

#[test]
fn migrate_requests_move_at_once_and_refuse_dead_targets() {
    let mut b = started(3);
    let held = owners(b.table())["w0"].clone();
    let req = MigrateRequest {
        v: 1,
        id: "m".into(),
        source: "w0".into(),
        target: "w1".into(),
        partitions: held.clone(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
    };
    b.observe(report("w1", &[], 0.1, false), 6_000);
    let out = b.migrate(&req, 6_000).expect("accepted").expect("moves");
    assert_eq!(out.moves.len(), held.len());
    assert!(owners(&out.table)["w1"].len() == 8);
    let dead = MigrateRequest {
        target: "w9".into(),
        ..req
    };
    assert!(b.migrate(&dead, 6_000).is_err());
}

#[test]
fn migrate_requests_go_through_the_cooldown() {
    let mut b = started(3);
    let p = owners(b.table())["w0"][0];
    let req = |target: &str| MigrateRequest {
        v: 1,
        id: "m".into(),
        source: String::new(),
        target: target.into(),
        partitions: vec![p],
        timestamp: OffsetDateTime::UNIX_EPOCH,
    };
    for w in ["w0", "w1", "w2"] {
        b.observe(report(w, &[], 0.1, false), 6_000);
    }
    assert!(b.migrate(&req("w1"), 6_000).expect("first").is_some());
    let cooldown = Policy::default().cooldown_ms;
    for w in ["w0", "w1", "w2"] {
        b.observe(report(w, &[], 0.1, false), 6_000 + cooldown / 2);
    }
    let back = b
        .migrate(&req("w2"), 6_000 + cooldown / 2)
        .expect_err("ping-pong refused");
    assert!(back.contains("cooldown"), "{back}");
    for w in ["w0", "w1", "w2"] {
        b.observe(report(w, &[], 0.1, false), 6_000 + cooldown);
    }
    assert!(
        b.migrate(&req("w2"), 6_000 + cooldown + 1)
            .expect("after the cooldown")
            .is_some()
    );
}

#[test]
fn a_restarted_balancer_continues_the_table() {
    let b = started(2);
    let table = b.table().clone();
    let mut again = Balancer::new(
        "mesh",
        12,
        Policy::default(),
        timing(),
        Some(table.clone()),
        50_000,
    );
    again.observe(report("w0", &[], 0.0, false), 50_100);
    again.observe(report("w1", &[], 0.0, false), 50_100);
    assert!(
        again.tick(51_000).is_none(),
        "warming up: workers keep the last table"
    );
    again.observe(report("w0", &[], 0.0, false), 55_000);
    again.observe(report("w1", &[], 0.0, false), 55_000);
    assert!(again.tick(55_000).is_none(), "nothing to change");
    assert_eq!(again.table(), &table);
}

/// Heartbeats of all three workers at `t`, each reporting what it holds with its load.
fn beat(b: &mut Balancer, loads: [f64; 3], t: u64) {
    let held = owners(b.table());
    for (i, l) in loads.iter().enumerate() {
        let id = format!("w{i}");
        let parts = held.get(&id).cloned().unwrap_or_default();
        b.observe(report(&id, &parts, *l, false), t);
    }
}

#[test]
fn a_one_heartbeat_spike_moves_nothing_but_a_lasting_skew_does() {
    // a budget large enough for a whole partition of this small mesh
    let mut b = started_with(
        3,
        Policy {
            max_move_fraction: 0.5,
            ..Policy::default()
        },
    );
    let mut t = 5_000;
    // steady even load, then one heartbeat where w0 looks saturated
    for _ in 0..30 {
        t += 1_000;
        beat(&mut b, [0.5, 0.5, 0.5], t);
    }
    t += 1_000;
    beat(&mut b, [1.0, 0.5, 0.5], t);
    assert!(b.tick(t).is_none(), "a single spike is smoothed away");
    t += 1_000;
    beat(&mut b, [0.5, 0.5, 0.5], t);
    t += 30_000;
    beat(&mut b, [0.5, 0.5, 0.5], t);
    assert!(b.tick(t).is_none(), "even load: nothing to do");
    // the same skew held for two intervals is real (and the initial cooldown is over)
    for _ in 0..60 {
        t += 1_000;
        beat(&mut b, [1.0, 0.4, 0.4], t);
    }
    let out = b.tick(t).expect("a lasting skew is balanced");
    assert!(
        out.moves.iter().all(|m| m.from.as_deref() == Some("w0")),
        "{:?}",
        out.moves
    );
}

#[test]
fn a_table_with_another_heartbeat_timeout_is_republished_with_ours_at_once() {
    let mut b = started(3);
    b.observe(report("w0", &[], 0.0, false), 6_000);
    let old = b.table().clone();
    assert_eq!(
        old.heartbeat_timeout_ms, 5_000,
        "tables carry the balancer's timeout"
    );
    // a restarted balancer whose ChatAgent now says 8 s: before its warm-up ends (and anyone
    // could be declared dead under 8 s) the workers get a table saying so, owners unchanged
    let slower = RoundTiming {
        heartbeat_timeout_ms: 8_000,
        ..timing()
    };
    let mut b = Balancer::new(
        "mesh",
        12,
        Policy::default(),
        slower.clone(),
        Some(old.clone()),
        10_000,
    );
    let out = b.tick(10_001).expect("republished during the warm-up");
    assert!(out.moves.is_empty());
    assert_eq!(out.table.generation, old.generation + 1);
    assert_eq!(out.table.heartbeat_timeout_ms, 8_000);
    assert_eq!(owners(&out.table), owners(&old));
    assert_eq!(
        out.table.workers, old.workers,
        "addresses kept for owners not heard yet"
    );
    assert!(b.tick(10_002).is_none(), "once");
    // the same timeout: nothing to republish
    let mut same = Balancer::new("mesh", 12, Policy::default(), timing(), Some(old), 10_000);
    assert!(same.tick(10_001).is_none());
}
