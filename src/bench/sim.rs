//! `drlab bench sim`: the simulator's speed — simulated seconds per wall second on the standard
//! drill topology (50 workload clusters × 10 Machines, heartbeat traffic, the real sync), and
//! scenario-seeds per hour on two threads (random explorer cases, each a full scenario run).

use std::time::Instant;

use harness::drill::DrillOptions;
use harness::explore::Explore;
use harness::scenario::Variant;
use serde_json::json;

use super::{Options, cores, goal, round};

/// The goal: the drill at 1000× real time.
const GOAL_SPEED: f64 = 1000.0;
const JOBS: usize = 2;

pub fn sim(opts: Options) -> Result<serde_json::Value, String> {
    let sim_secs = if opts.quick { 300 } else { 3600 };
    let o = DrillOptions {
        seed: 1,
        sim_secs,
        tick_ms: 10,
        clusters: 50,
        machines: 10,
        writes_per_s: 1.0,
        bare_metal: false,
        trace: None,
    };
    let wall = Instant::now();
    let r = harness::drill::drill(&o).map_err(|e| {
        format!("{e} (reproduce with: drlab world --seed 1 --sim-secs {sim_secs} --clusters 50 --machines 10)")
    })?;
    let drill_wall_s = wall.elapsed().as_secs_f64();
    let speed = sim_secs as f64 / drill_wall_s;

    let out = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cases = if opts.quick { 8 } else { 64 };
    let e =
        Explore { cases, jobs: JOBS, seed: 1, variant: Variant::Real, shrink_runs: 0, out: out.path().to_path_buf() };
    let wall = Instant::now();
    let explored = harness::explore::explore(&e, |_| {}).map_err(|e| e.to_string())?;
    let explore_wall_s = wall.elapsed().as_secs_f64();
    Ok(json!({
        "bench": "sim",
        "quick": opts.quick,
        "cores": cores(),
        "clusters": o.clusters,
        "machines_per_cluster": o.machines,
        "sim_secs": sim_secs,
        "tick_ms": o.tick_ms,
        "drill_wall_s": round(drill_wall_s, 2),
        "sim_s_per_wall_s": speed.round(),
        "drill_caught_up": r.caught_up(),
        "drill_vm_deletions": r.platform.vm_deletions,
        "scenario_seeds": explored.cases_run,
        "scenario_jobs": JOBS,
        "scenario_seeds_per_hour": (explored.cases_run as f64 * 3600.0 / explore_wall_s).round(),
        "scenario_failures": explored.finding.is_some(),
        "goals": [goal("drill sim-s per wall-s", speed, GOAL_SPEED, true)],
    }))
}
