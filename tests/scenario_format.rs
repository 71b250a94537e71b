//! The scenario format: unknown fields, bad types and impossible timelines are errors that
//! point at file:line:column.

use harness::scenario::{ScenarioError, parse};

const BASE: &str = "name: t\nproves: p\nduration_s: 60\n";

fn error(text: &str) -> (u64, u64, String) {
    match parse("t.yaml", text) {
        Err(ScenarioError::Invalid { path, line, column, message }) => {
            assert_eq!(path, "t.yaml");
            (line, column, message)
        }
        other => panic!("expected an error for:\n{text}\ngot {other:?}"),
    }
}

#[test]
fn a_minimal_scenario_parses_with_defaults() {
    let s = parse("t.yaml", BASE).expect("parses");
    assert_eq!((s.topology.clusters, s.topology.machines, s.seeds.clone()), (2, 3, vec![1]));
    assert!(harness::scenario::schema()["properties"]["timeline"].is_object());
}

#[test]
fn unknown_fields_and_bad_types_point_at_the_line() {
    let (line, _, msg) = error(&format!("{BASE}topology:\n  clusters: 2\n  machine: 3\n"));
    assert_eq!(line, 6, "{msg}");
    assert!(msg.contains("machine"), "{msg}");
    let (line, col, msg) = error(&format!("{BASE}seeds: [1, two]\n"));
    assert_eq!((line, col), (4, 12), "{msg}");
    assert_eq!(msg, "invalid u64", "the location is said once");
    let (line, _, msg) = error(&format!("{BASE}variant: owner-order-of\n"));
    assert_eq!(line, 4, "{msg}");
}

#[test]
fn impossible_timelines_point_at_the_entry() {
    let t = |entries: &str| error(&format!("{BASE}timeline:\n{entries}"));
    let (line, col, msg) = t("  - at_s: 5\n    partition: [sync, primary]\n  - at_s: 4\n    heal: [sync, standby]\n");
    assert_eq!((line, col), (7, 5), "{msg}");
    assert!(msg.contains("no earlier entry partitions"), "{msg}");
    let (line, _, msg) = t("  - at_s: 61\n    crash: sync\n");
    assert!(line == 5 && msg.contains("outside"), "{line}: {msg}");
    let (_, _, msg) = t("  - at_s: 1\n    restart: sync\n");
    assert!(msg.contains("no earlier entry crashes"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    crash: sync\n    compact: primary\n");
    assert!(msg.contains("exactly one action"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    failover: {}\n  - at_s: 2\n    failover: {}\n");
    assert!(msg.contains("one failover"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    lose_key: {side: standby, kind: Clustr, name: x}\n");
    assert!(msg.contains("unknown kind `Clustr`"), "{msg}");
    let (_, _, msg) = t("  - when: failover.ended\n    crash: sync\n");
    assert!(msg.contains("no failover"), "{msg}");
    let (_, _, msg) =
        t("  - at_s: 1\n    partition_oneway: [sync, primary]\n  - at_s: 2\n    heal_oneway: [primary, sync]\n");
    assert!(msg.contains("heal_oneway of primary → sync, which no earlier entry holds"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    slow_disk: {side: standby, ms: 20000}\n");
    assert!(msg.contains("slow_disk ms must be at most 10000"), "{msg}");
    let (line, _, msg) = t("  - at_s: 1\n    abort: {}\n");
    assert!(line == 5 && msg.contains("an abort needs a failover"), "{line}: {msg}");
    let (line, _, msg) = t("  - at_s: 9\n    failover: {}\n  - at_s: 8\n    abort: {}\n");
    assert!(line == 7 && msg.contains("an abort needs a failover at or before it"), "{line}: {msg}");
    let (_, _, msg) = t("  - at_s: 1\n    failover: {}\n  - at_s: 2\n    abort: {}\n  - at_s: 3\n    abort: {}\n");
    assert!(msg.contains("one abort"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    failover: {}\n  - at_s: 2\n    abort: {now: true}\n");
    assert!(msg.contains("now"), "an abort takes no parameters: {msg}");
    let (line, _, msg) = t("  - at_s: 1\n    failback: {}\n");
    assert!(line == 5 && msg.contains("a failback needs a failover before it"), "{line}: {msg}");
    let (_, _, msg) =
        t("  - at_s: 1\n    failover: {}\n  - at_s: 2\n    failback: {}\n  - at_s: 3\n    failback: {}\n");
    assert!(msg.contains("one failback"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    failover: {}\n  - at_s: 2\n    abort: {}\n  - at_s: 3\n    failback: {}\n");
    assert!(msg.contains("a failback after an abort"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    reinstall_sync: {}\n");
    assert!(msg.contains("reinstall_sync needs an uninstall_sync before it"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    uninstall_sync: {}\n  - at_s: 2\n    failover: {}\n");
    assert!(msg.contains("an upgrade's uninstall and a failover"), "{msg}");
    let (_, _, msg) = t("  - at_s: 1\n    scale: {cluster: wc-99, replicas: 1}\n");
    assert!(msg.contains("wc-99"), "{msg}");
    let (line, _, msg) = t("  - at_s: 1\n    recreate_machineset: {side: primary, cluster: wc-02}\n");
    assert!(line == 5 && msg.contains("recreate_machineset of `wc-02`, not one of the topology's clusters"), "{msg}");
    let (line, _, msg) =
        t("  - at_s: 1\n    snapshot_save: standby\n  - at_s: 2\n    snapshot_restore: {side: primary}\n");
    assert!(
        line == 7 && msg.contains("snapshot_restore of the primary, which no earlier entry saves"),
        "{line}: {msg}"
    );
    let (_, _, msg) = t(
        "  - at_s: 1\n    snapshot_save: primary\n  - at_s: 2\n    crash: primary\n  - at_s: 3\n    snapshot_restore: {side: primary}\n",
    );
    assert!(msg.contains("which is crashed"), "{msg}");
    let (_, _, msg) = t(
        "  - at_s: 1\n    snapshot_save: primary\n  - at_s: 2\n    snapshot_restore: {side: primary, bump_revision: 2000000000}\n",
    );
    assert!(msg.contains("bump_revision must be at most"), "{msg}");
    // The zombie host exists only when the scenario starts one, within the run.
    let (line, col, msg) = t("  - at_s: 1\n    partition: [sync-zombie, standby]\n");
    assert!((line, col) == (5, 5) && msg.contains("does not start"), "{line}:{col}: {msg}");
    let zombie =
        |z: &str, entries: &str| error(&format!("{BASE}sync:\n  start_s: 1\n  zombie_s: {z}\ntimeline:\n{entries}"));
    let (_, _, msg) = zombie("60", "  - at_s: 1\n    crash: sync-zombie\n");
    assert!(msg.contains("sync.zombie_s must be within the duration"), "{msg}");
    let ok = format!("{BASE}sync:\n  start_s: 1\n  zombie_s: 5\ntimeline:\n  - at_s: 6\n    crash: sync-zombie\n");
    assert!(parse("t.yaml", &ok).is_ok(), "a scenario with a zombie may crash it");
}

#[test]
fn what_the_world_does_not_model_is_refused_by_name() {
    // Plans are bare-metal hosts': named on VMs, the invariant and the rollout are refused.
    let (_, _, msg) = error(&format!("{BASE}expect:\n  fail: [plans-never-regress]\n"));
    assert!(msg.contains("needs `provider: baremetal`"), "{msg}");
    let rollout = "timeline:\n  - at_s: 5\n    rollout_plans: {cluster: wc-00}\n";
    let (_, _, msg) = error(&format!("{BASE}{rollout}"));
    assert!(msg.contains("rollout_plans needs `provider: baremetal`"), "{msg}");
    let bare_metal = "topology:\n  clusters: 1\n  machines: 2\n  provider: baremetal\n  dns_ttl_s: 30\n  encryption: same\n  misnamed_global: false\n";
    assert!(parse("t.yaml", &format!("{BASE}{bare_metal}{rollout}expect:\n  fail: [plans-never-regress]\n")).is_ok());
    // Seed 002's misnamed resource is created once per side (the name would collide).
    let twice = "timeline:\n  - at_s: 5\n    create_misnamed_global: standby\n  - at_s: 6\n    create_misnamed_global: standby\n";
    let (line, _, msg) = error(&format!("{BASE}{twice}"));
    assert_eq!(line, 7, "the second entry");
    assert!(msg.contains("create_misnamed_global on the standby, which already has `workers`"), "{msg}");
    let at_start = "topology:\n  clusters: 1\n  machines: 2\n  provider: vm\n  dns_ttl_s: 30\n  encryption: same\n  misnamed_global: true\n";
    let once = "timeline:\n  - at_s: 5\n    create_misnamed_global: primary\n";
    let (_, _, msg) = error(&format!("{BASE}{at_start}{once}"));
    assert!(msg.contains("which already has `workers`"), "{msg}");
    let (_, _, msg) = error(&format!("{BASE}teeth:\n  real: [rpo]\n"));
    assert!(msg.contains("teeth name mutants"), "{msg}");
    // The primary's controllers are gated only in a world with a failback's reverse sync.
    let gate = "timeline:\n  - at_s: 5\n    clear_gate: primary\n";
    let (line, _, msg) = error(&format!("{BASE}{gate}"));
    assert!(line == 5 && msg.contains("a gate on the primary holds nothing"), "{line}: {msg}");
    let by_hand = "timeline:\n  - at_s: 5\n    clear_gate: standby\n  - at_s: 6\n    switch_dns: standby\n";
    assert!(parse("t.yaml", &format!("{BASE}{by_hand}")).is_ok());
}

/// What an operator's gate write leaves: the gate it found, in the new state, epoch kept.
#[test]
fn a_gate_written_by_hand_keeps_its_epoch() {
    use harness::timeline::gate_by_hand;
    use sync::target::{Gate, GateState};
    let found = Gate { state: GateState::Syncing, epoch: 3, proven_at: Some(41) };
    let cleared = gate_by_hand(Some(&found.encode()), GateState::Cleared);
    assert_eq!(cleared, Gate { state: GateState::Cleared, ..found.clone() });
    assert_eq!(gate_by_hand(Some(&cleared.encode()), GateState::Syncing), found);
    // No gate (or not one of ours): epoch 0, which a sync starting later takes over.
    for none in [None, Some(&b"not json"[..])] {
        assert_eq!(
            gate_by_hand(none, GateState::Cleared),
            Gate { state: GateState::Cleared, epoch: 0, proven_at: None }
        );
    }
}

/// A scenario's rules file (`sync.rules`) is checked when the scenario is read: an error points
/// at the line and column inside the scenario file.
#[test]
fn a_bad_rules_file_in_a_scenario_points_into_the_scenario() {
    let text = format!(
        "{BASE}sync:\n  start_s: 1\n  rules: |\n    rules:\n      - include: {{namespace: kube-system}}\n      - incluude: {{prefix: /registry/}}\n"
    );
    let (line, col, msg) = error(&text);
    assert_eq!((line, col), (9, 9), "{msg}");
    assert!(msg.starts_with("sync.rules: ") && msg.contains("incluude"), "{msg}");
    let ok = text.replace("incluude", "include");
    let s = parse("t.yaml", &ok).expect("parses");
    let rules = s.sync.rules().expect("valid rules");
    assert_eq!(rules.decide(b"/registry/configmaps/kube-system/x"), sync::rules::Decision::Include);
    // The hard deny list stands whatever the file says.
    assert_eq!(rules.decide(b"/registry/leases/kube-system/kube-controller-manager"), sync::rules::Decision::Denied);
}
