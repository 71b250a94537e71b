//! `drlab bench sync|check|sim --quick -o json` run end to end and print the figures the
//! capacity issue asks for (shape and sanity only: timing goals live in the benchmark's own
//! output — each goal met or missed by how much — never in tests).

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_drlab")).args(args).output().expect("run drlab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    for g in v["goals"].as_array().unwrap_or_else(|| panic!("no goals: {v}")) {
        assert!(
            g["measured"].is_number() && g["met"].is_boolean(),
            "a goal says what was measured and whether it was met: {g}"
        );
    }
    v
}

#[test]
fn bench_sync_quick_prints_its_figures() {
    let v = bench(&["bench", "sync", "--quick", "--keys", "3000", "-o", "json"]);
    for field in [
        "ceiling_keys_per_s",
        "initial_keys_per_s",
        "make_mirror_keys_per_s",
        "stream_lag_p99_ms",
        "stream_rates_per_s",
        "sync_peak_rss_mib",
        "highest_rate_kept_up",
        "cores",
        "etcd_version",
    ] {
        assert!(!v[field].is_null(), "{field} missing: {v}");
    }
    assert_eq!(v["keys"], 3000, "{v}");
    assert!(v["initial_keys_per_s"].as_f64() > Some(0.0), "{v}");
    assert!(v["ceiling_keys_per_s"].as_f64() > Some(0.0), "{v}");
    // The four modes the capacity issue names, the goals' ceiling (concurrent txns) last.
    let modes = v["ceiling_modes"].as_array().unwrap_or_else(|| panic!("no ceiling modes: {v}"));
    assert_eq!(modes.len(), 4, "{v}");
    assert!(modes.iter().all(|m| m["keys_per_s"].as_f64() > Some(0.0) && m["mode"].is_string()), "{v}");
    assert_eq!(modes[3]["keys_per_s"], v["ceiling_keys_per_s"], "{v}");
    assert!(v["sync_peak_rss_mib"].as_f64() > Some(1.0), "the daemon's VmHWM was read: {v}");
    let streams = v["streams"].as_array().unwrap_or_else(|| panic!("no streams: {v}"));
    for tool in ["etcd-sync", "make-mirror"] {
        for mode in ["puts", "txns"] {
            let first = streams
                .iter()
                .find(|s| s["tool"] == tool && s["mode"] == mode)
                .unwrap_or_else(|| panic!("no {tool} {mode} round: {v}"));
            // At 1k writes/s both keep up on any machine: every written key is seen landing.
            assert_eq!(first["rate_target_per_s"], 1000, "{first}");
            assert_eq!(first["arrived"], first["keys"], "every key written must be seen arriving: {first}");
            assert!(first["keys"].as_u64() > Some(1000) && first["lag_ms"]["p99"].is_number(), "{first}");
        }
    }
}

#[test]
fn bench_check_quick_times_a_consistent_check() {
    let v = bench(&["bench", "check", "--quick", "--keys", "3000", "-o", "json"]);
    assert_eq!(v["keys"], 3000, "{v}");
    assert_eq!(v["consistent"], true, "both sides hold the same keys: the check must say so: {v}");
    assert!(v["check_seconds"].as_f64() > Some(0.0) && v["check_peak_rss_mib"].as_f64() > Some(0.0), "{v}");
}

#[test]
fn bench_sim_quick_measures_the_drill_and_scenario_seeds() {
    let v = bench(&["bench", "sim", "--quick", "-o", "json"]);
    assert_eq!((v["clusters"].as_u64(), v["machines_per_cluster"].as_u64()), (Some(50), Some(10)), "{v}");
    assert_eq!(v["drill_caught_up"], true, "{v}");
    assert_eq!(v["drill_vm_deletions"], 0, "{v}");
    assert!(v["sim_s_per_wall_s"].as_f64() > Some(1.0) && v["scenario_seeds_per_hour"].as_f64() > Some(0.0), "{v}");
}
