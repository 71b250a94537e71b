//! The owner-order observer behind no-dependent-before-owner: it must see the whole of the
//! standby's history or say which revisions it missed. A watch lost to a crashed etcd or a reset
//! connection is taken up where it stopped; one the etcd compacted meanwhile is listed afresh and
//! the revisions in between are reported as not observed — never passed silently.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::fixtures::capi;
use harness::observe::OwnerOrder;
use harness::simsync::conn_config;
use sim::etcd::{Config, SimEtcd};
use sim::fault::Faults;
use sim::net::{Connector as SimConnector, Links};
use sim::trace::Trace;
use sim::world::{Step, add_etcd, builder, run_schedule};
use sync::conn::Connector;

#[test]
fn the_observer_resumes_after_a_crash_and_reports_what_a_compaction_hid() {
    let seed = 3;
    let links = Links::default();
    let trace = Trace::new(None).expect("trace");
    let mut sim = builder(seed, Duration::from_secs(30), Duration::from_millis(1)).build();
    let standby = SimEtcd::new(Config { seed, ..Config::default() });
    add_etcd(&mut sim, "standby", standby.clone(), links.clone(), trace.clone());

    let observer = OwnerOrder::default();
    let obs = observer.clone();
    let l = links.clone();
    sim.host("observer", move || {
        let (obs, l) = (obs.clone(), l.clone());
        async move {
            let connector = Connector::custom(SimConnector::new(l));
            let etcd = sync::conn::connect(&conn_config("standby"), &connector, 0).await?;
            let _ = obs.run(etcd, |_| true).await;
            std::future::pending::<()>().await;
            Ok(())
        }
    });

    // The revision each write landed at, by name.
    let landed: Arc<Mutex<Vec<(&'static str, i64)>>> = Arc::default();
    let out = landed.clone();
    let l = links.clone();
    sim.client("writer", async move {
        let connector = Connector::custom(SimConnector::new(l));
        let etcd = sync::conn::connect(&conn_config("standby"), &connector, 0).await?;
        let mut kv = etcd.kv.clone();
        let mut put = async |name: &'static str, owner_uid: &str| -> Result<(), Box<dyn std::error::Error>> {
            // The first write is the owner itself; the others name it or a missing owner.
            let (k, v) = if owner_uid.is_empty() {
                capi("machinesets", "MachineSet", "ms", "uid-ms", &[])
            } else {
                capi("machines", "Machine", name, &format!("uid-{name}"), &[("MachineSet", "ms", owner_uid)])
            };
            let r = etcd.call(kv.put(k, v, None)).await?;
            out.lock().expect("landed").push((name, r.header().map(|h| h.revision()).unwrap_or(0)));
            Ok(())
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        put("owned", "").await?;
        // The standby crashes at 3 s and is back at 5 s.
        tokio::time::sleep(Duration::from_secs(7)).await;
        put("after-restart", "uid-missing").await?;
        // The observer is cut off from 10 s to 13 s and the standby compacts at 12 s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        put("while-cut-off", "uid-missing").await?;
        put("filler", "uid-ms").await?; // the compaction keeps only the head
        tokio::time::sleep(Duration::from_secs(8)).await;
        put("after-heal", "uid-missing").await?;
        Ok(())
    });

    let faults = Faults::new(links, trace.clone());
    let (f1, f2, f3, f4, f5) = (faults.clone(), faults.clone(), faults.clone(), faults.clone(), faults.clone());
    let compacted = standby.clone();
    let steps = vec![
        Step::new(Duration::from_secs(3), move |sim| f1.crash(sim, "standby")),
        Step::new(Duration::from_secs(5), move |sim| f2.restart(sim, "standby")),
        Step::new(Duration::from_secs(10), move |sim| f3.partition(sim, "observer", "standby")),
        Step::new(Duration::from_secs(12), move |_| {
            f4.compact(&compacted, "standby");
        }),
        Step::new(Duration::from_secs(13), move |sim| {
            // Reset first: what the held connection carried is gone with it.
            f5.reset_link(sim, "observer", "standby");
            f5.heal(sim, "observer", "standby");
        }),
    ];
    run_schedule(&mut sim, steps, seed, &trace).unwrap_or_else(|e| panic!("{e} (reproduce with seed={seed})"));

    let landed = landed.lock().expect("landed").clone();
    let rev = |name: &str| landed.iter().find(|(n, _)| *n == name).map(|(_, r)| *r).expect("written");
    let seen: Vec<(String, i64)> = observer.violations().into_iter().map(|v| (v.key, v.revision)).collect();
    let seen_at = |name: &str| seen.iter().any(|(k, r)| k.ends_with(&format!("/{name}")) && *r == rev(name));
    assert!(seen_at("after-restart"), "taken up after the crash: {seen:?} (reproduce with seed={seed})");
    assert!(seen_at("after-heal"), "taken up after the compaction: {seen:?}");
    let gaps = observer.gaps();
    assert!(
        gaps.iter().any(|(a, b)| *a <= rev("while-cut-off") && rev("while-cut-off") <= *b),
        "what the compaction hid is reported: {gaps:?}, landed {landed:?}"
    );
    assert!(observer.reconnects() >= 2, "{}", observer.reconnects());
}
