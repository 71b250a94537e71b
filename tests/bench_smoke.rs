//! `drlab bench sync --quick -o json` runs end to end and prints the figures the capacity issue
//! builds on (shape only: timing goals live in the benchmark's own output, not in tests).

use std::process::Command;

#[test]
fn bench_sync_quick_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_drlab"))
        .args(["bench", "sync", "--quick", "-o", "json"])
        .output()
        .expect("run drlab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    for field in [
        "ceiling_keys_per_s",
        "initial_keys_per_s",
        "stream_lag_p99_ms",
        "stream_rate_target_per_s",
        "cores",
        "etcd_version",
    ] {
        assert!(!v[field].is_null(), "{field} missing: {v}");
    }
    assert!(v["initial_keys_per_s"].as_f64() > Some(0.0), "{v}");
    assert!(v["ceiling_keys_per_s"].as_f64() > Some(0.0), "{v}");
}
