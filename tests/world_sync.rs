//! The world with the real sync in it: a steady drill converges without touching the standby's
//! own resources, and a partition of the sync link stops the copy until it heals.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use harness::drill::{compare, platform_config, sync_settings};
use harness::simsync::SyncHost;
use sim::k8s::kind;
use sim::platform::{PRIMARY, Platform, STANDBY};
use sim::topology::{NS, Topology};
use sim::world::Step;

#[test]
fn a_steady_drill_converges_and_leaves_the_standby_globals_alone() {
    let cfg = platform_config(11, 60, Topology::vm(3, 4));
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let global_before = p.standby.etcd.get(kind::MACHINE.key(NS, "global-cp-0").as_bytes());
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let report = p.run(&mut sim, Vec::new()).expect("runs");
    let diff = compare(&p, &settings);
    assert!(diff.is_clean(), "the standby matches the primary by the sync's rules (seed=11): {diff:?}");
    assert!(handle.status().applied_ops > 0);
    assert_eq!(report.vm_deletions, 0);
    assert_eq!(
        p.standby.etcd.get(kind::MACHINE.key(NS, "global-cp-0").as_bytes()),
        global_before,
        "the standby's own global Machine is never overwritten"
    );
    // A copy that lost the owner order or the encryption boundary would show up as stale or
    // missed keys above; the standby's Secrets must also open with the standby's own key.
    let plan = kind::SECRET.key(NS, "wc-00-md-0-0-plan");
    let sealed = p.standby.etcd.get(plan.as_bytes()).expect("plan Secret copied");
    let obj = p.standby.api.decode(&plan, &sealed).expect("the standby reads the copied Secret");
    assert_eq!(obj.secret_data("plan"), Some(&b"{\"generation\":1}"[..]));
}

#[test]
fn a_partition_of_the_sync_link_stops_the_copy_until_it_heals() {
    let cfg = platform_config(12, 90, Topology::vm(2, 3));
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let look = |at: u64| {
        let (seen, handle, primary) = (seen.clone(), handle.clone(), p.primary.etcd.clone());
        Step::new(Duration::from_secs(at), move |_| {
            seen.borrow_mut().push((handle.status().checkpoint, primary.revision()));
        })
    };
    let steps = vec![
        Step::new(Duration::from_secs(20), |sim| p.faults.partition(sim, "sync", PRIMARY)),
        look(30),
        look(59),
        Step::new(Duration::from_secs(60), |sim| {
            p.faults.heal(sim, "sync", PRIMARY);
            p.faults.reset_link(sim, "sync", PRIMARY);
        }),
    ];
    p.run(&mut sim, steps).expect("runs");
    let seen = seen.borrow();
    let ((cp30, head30), (cp59, head59)) = (seen[0], seen[1]);
    assert_eq!(cp30, cp59, "nothing was applied while the link was held (seed=12)");
    assert!(head59 > head30, "the primary kept taking writes meanwhile");
    assert!(cp59 < head59);
    let end = handle.status();
    assert_eq!(end.checkpoint, p.primary.etcd.revision(), "caught up after the heal: {end:?}");
    assert!(compare(&p, &settings).is_clean());
}

#[test]
fn secrets_sealed_after_a_key_rotation_the_sync_was_not_given_are_undecryptable() {
    let cfg = platform_config(13, 60, Topology::vm(1, 2));
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let steps = vec![
        // The primary rotates to a key the sync's EncryptionConfiguration does not have...
        Step::new(Duration::from_secs(10), |_| p.primary.api.rotate_key("key2", [2; 32])),
        // ... and then writes new Secrets (a new cluster's CA, etcd, sa, proxy).
        Step::new(Duration::from_secs(15), |_| {
            p.act(sim::platform::Action::CreateWorkload { cluster: "wc-new".into(), machines: 1 })
        }),
    ];
    p.run(&mut sim, steps).expect("runs");
    let status = handle.status();
    let ca = kind::SECRET.key(NS, "wc-new-ca");
    assert!(status.undecryptable.contains(&ca), "the sync reports it cannot carry {ca}: {:?}", status.undecryptable);
    assert!(p.standby.etcd.get(ca.as_bytes()).is_none(), "and never writes what the standby could not read");
    let diff = compare(&p, &settings);
    assert!(diff.missed.contains(&ca), "the offline comparison sees it missing: {diff:?}");
    // Secrets sealed before the rotation still cross.
    assert!(p.standby.etcd.get(kind::SECRET.key(NS, "wc-00-ca").as_bytes()).is_some());
}
