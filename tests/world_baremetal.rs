//! The bare-metal provider of the world: Machines on registered hosts, whose destructive act is
//! a reset plan written to the host's plan Secret (not a VM delete). Each assertion is one a
//! wrong model fails (see the comments).

use std::time::Duration;

use sim::iaas::Destruction;
use sim::k8s::capi::baremetal::Plan;
use sim::k8s::{Object, kind};
use sim::platform::{Action, PRIMARY, Platform, PlatformConfig};
use sim::topology::{Provider, Topology};
use sim::world::Step;

fn objects(p: &Platform, side: &str) -> Vec<Object> {
    let api = &p.side(side).api;
    let kvs = p.side(side).etcd.dump();
    kvs.iter()
        .filter(|(k, _)| k.starts_with(b"/registry/"))
        .filter_map(|(k, v)| api.decode(&String::from_utf8_lossy(k), v).ok())
        .collect()
}

fn named<'a>(objs: &'a [Object], kind: &kind::Kind, name: &str) -> Option<&'a Object> {
    objs.iter().find(|o| o.kind == kind && o.name() == name)
}

#[test]
fn a_bare_metal_scale_down_resets_exactly_the_removed_host_and_a_scale_up_registers_new_ones() {
    let cfg = PlatformConfig {
        seed: 5,
        sim_secs: 60,
        topology: Topology { clusters: 2, machines: 3, provider: Provider::Baremetal },
        writes_per_s: 0.0,
        ..PlatformConfig::default()
    };
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let hosts_before = p.iaas.vms().len();
    let steps = vec![
        Step::new(Duration::from_secs(10), |_| p.act(Action::Scale { cluster: "wc-00".into(), replicas: 1 })),
        Step::new(Duration::from_secs(30), |_| p.act(Action::Scale { cluster: "wc-01".into(), replicas: 3 })),
    ];
    p.run(&mut sim, steps).expect("runs");

    // Exactly the removed worker's host is reset — by its plan, not by a VM delete (a model that
    // deleted a VM, or reset every host of the cluster, fails here).
    let gone: Vec<(String, Destruction)> = p.iaas.deletions().iter().map(|d| (d.vm.id.clone(), d.action)).collect();
    assert_eq!(gone, [("host-wc-00-md-0-1".to_string(), Destruction::Reset)]);
    let objs = objects(&p, PRIMARY);
    let plan = named(&objs, &kind::SECRET, "wc-00-md-0-1-plan").expect("the host's plan Secret stays");
    assert_eq!(Plan::of(plan), Some(Plan { generation: 2, reset: true }), "the reset is the plan's next generation");
    assert!(named(&objs, &kind::MACHINE_INVENTORY, "wc-00-md-0-1").is_some(), "the host stays registered");
    assert!(named(&objs, &kind::BAREMETAL_MACHINE, "wc-00-md-0-1").is_none(), "its BaremetalMachine is gone");
    let kept = named(&objs, &kind::SECRET, "wc-00-md-0-0-plan").expect("the other worker's plan");
    assert_eq!(Plan::of(kept), Some(Plan { generation: 1, reset: false }), "the kept host's plan is untouched");

    // The scale-up made one Machine on a new host, with its registration and first plan; no VM.
    let new: Vec<&Object> = objs
        .iter()
        .filter(|o| o.kind == &kind::BAREMETAL_MACHINE && o.name().starts_with("wc-01-md-0-") && o.name().len() > 12)
        .collect();
    assert_eq!(new.len(), 1, "one new worker for wc-01: {new:?}");
    let name = new[0].name();
    let host = new[0].field(&["spec", "providerID"]).and_then(|v| v.as_str()).expect("a host");
    assert_eq!(host, format!("host-{name}"));
    assert!(p.iaas.vms().iter().any(|v| v.id == host), "the new host is in the IaaS");
    assert_eq!(p.iaas.vms().len(), hosts_before, "one host reset, one registered");
    let first = named(&objs, &kind::SECRET, &format!("{name}-plan")).expect("the new host's plan Secret");
    assert_eq!(Plan::of(first), Some(Plan { generation: 1, reset: false }));
    assert!(named(&objs, &kind::MACHINE_INVENTORY, name).is_some());
    assert!(p.iaas.vms().iter().all(|v| !v.id.starts_with("vm-wc-")), "bare-metal workloads have no VMs");
}
