//! `drlab preflight`: the real preflight (crate `failover`) against the simulated platform.

use std::process::ExitCode;

use harness::drill::PreflightDrill;

pub fn preflight(f: PreflightDrill) -> ExitCode {
    let o = &f.drill;
    let mut reproduce = format!(
        "reproduce with: drlab preflight --seed {} --clusters {} --machines {}",
        o.seed, o.clusters, o.machines
    );
    if f.misnamed_global {
        reproduce.push_str(" --misnamed-global");
    }
    if f.keys_differ {
        reproduce.push_str(" --keys-differ");
    }
    if f.sa_key_differs {
        reproduce.push_str(" --sa-key-differs");
    }
    if f.cert_without_standby_vip {
        reproduce.push_str(" --cert-without-standby-vip");
    }
    if !(1..=sim::topology::CLUSTERS_MAX).contains(&o.clusters)
        || !(2..=sim::topology::MACHINES_PER_CLUSTER_MAX).contains(&o.machines)
    {
        eprintln!(
            "error: --clusters must be 1..={} and --machines 2..={}",
            sim::topology::CLUSTERS_MAX,
            sim::topology::MACHINES_PER_CLUSTER_MAX
        );
        return ExitCode::from(2);
    }
    println!("seed: {}", o.seed);
    let pf = match harness::drill::preflight_drill(&f) {
        Ok(Some(Ok(pf))) => pf,
        Ok(Some(Err(e))) => {
            eprintln!("error: {e}\n{reproduce}");
            return ExitCode::from(2);
        }
        Ok(None) => {
            eprintln!("error: preflight did not finish within the run\n{reproduce}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}\n{reproduce}");
            return ExitCode::from(2);
        }
    };
    for line in pf.lines() {
        println!("  {line}");
    }
    println!(
        "preflight: {} blocking, {} warnings, {} advice, {} not checked",
        pf.blocking.len(),
        pf.warnings.len(),
        pf.advice.len(),
        pf.not_checked.len()
    );
    if pf.blocking.is_empty() && pf.warnings.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("{reproduce}");
        ExitCode::from(1)
    }
}
