//! `drlab run | replay | schema` from the command line: exit codes (0 as expected, 1 an
//! invariant not as expected, 2 bad input — with nothing written), the reproduce line, a replay
//! in another process giving the same trace hash, and a check (rto) shown failing.

use std::path::Path;
use std::process::Command;

fn drlab(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drlab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("drlab runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn a_passing_run_writes_its_directory_and_replays_identically_in_another_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("run");
    let out_s = out.display().to_string();
    let (code, text) = drlab(&["run", "scenarios/planned-failover.yaml", "--seed", "2", "--out", &out_s]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("held      no-vm-destroyed") && text.contains("verdict: PASS"), "{text}");
    for f in ["scenario.yaml", "trace.jsonl", "verdicts.json", "summary.txt"] {
        assert!(out.join(f).exists(), "{f} written");
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("verdicts.json")).unwrap()).unwrap();
    assert_eq!((v["version"].as_u64(), v["seed"].as_u64(), v["pass"].as_bool()), (Some(1), Some(2), Some(true)));
    let (code, text) = drlab(&["replay", &out_s]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("replayed: same trace hash and verdict"), "{text}");
}

#[test]
fn a_failed_expectation_exits_1_with_the_reproduce_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // An RTO target no failover can meet: rto must be reported violated.
    let s = write(
        tmp.path(),
        "tight.yaml",
        "name: tight\nproves: p\nduration_s: 90\ntopology: {clusters: 1, machines: 2, provider: vm, dns_ttl_s: 10, encryption: same, misnamed_global: false}\ntimeline:\n  - at_s: 20\n    failover: {}\nexpect:\n  rto_s_max: 0\n",
    );
    let out = tmp.path().join("run").display().to_string();
    let (code, text) = drlab(&["run", &s, "--out", &out]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("VIOLATED  rto  ← must hold"), "{text}");
    assert!(text.contains(&format!("reproduce with: drlab run {s} --seed 1 --variant real")), "{text}");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = write(
        tmp.path(),
        "bad.yaml",
        "name: bad\nproves: p\nduration_s: 60\ntimeline:\n  - at_s: 3\n    heal: [sync, primary]\n",
    );
    let out = tmp.path().join("run");
    let (code, text) = drlab(&["run", &s, "--out", &out.display().to_string()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("{s}:5:5:")), "file:line:column: {text}");
    assert!(!out.exists(), "nothing written");
    let (code, text) = drlab(&["run", "scenarios/partition.yaml", "--variant", "nope"]);
    assert!(code == 2 && text.contains("unknown variant `nope`"), "{text}");
    let (code, text) = drlab(&["run", "scenarios/partition.yaml", "--backend", "nope"]);
    assert!(code == 2 && text.contains("invalid value 'nope'"), "{text}");
    let out = tmp.path().join("dns");
    let (code, text) =
        drlab(&["run", "scenarios/dns-ttl.yaml", "--backend", "etcd", "--out", &out.display().to_string()]);
    assert!(code == 2 && text.contains("cannot run on real etcd"), "{text}");
    assert!(!out.exists(), "nothing written");
    let (code, text) = drlab(&["run", "no/such.yaml"]);
    assert!(code == 2 && text.contains("no/such.yaml"), "{text}");
}

#[test]
fn schema_prints_a_json_schema() {
    let (code, text) = drlab(&["schema"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert!(v["properties"]["timeline"].is_object() && v["properties"]["teeth"].is_object(), "{text}");
}

#[test]
#[cfg(feature = "mutants")]
fn explore_writes_a_shrunk_failure_that_drlab_run_replays() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().display().to_string();
    let args =
        ["explore", "--cases", "2", "--seed", "3", "--variant", "ignore-rules-off", "--jobs", "1", "--out", &out];
    let (code, text) = drlab(&args);
    assert_eq!(code, 1, "{text}");
    // The explorer names the scenario it wrote, and says to replay it.
    let path = text.lines().rev().find_map(|l| l.strip_prefix("scenario: ")).expect("a scenario line");
    assert!(text.contains(&format!("reproduce with: drlab run {path}\n")), "{text}");
    let (code, again) = drlab(&["run", path, "--out", &tmp.path().join("again").display().to_string()]);
    assert_eq!(code, 1, "{again}");
    assert!(again.contains("VIOLATED  standby-globals-untouched  ← must hold"), "{again}");
}

#[test]
fn explore_refuses_bad_input_with_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("x").display().to_string();
    let (code, text) = drlab(&["explore", "--cases", "0", "--seed", "1", "--out", &out]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cases must be 1..="), "{text}");
    let (code, text) = drlab(&["explore", "--variant", "nope", "--out", &out]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("unknown variant `nope`"), "{text}");
    assert!(!tmp.path().join("x").exists(), "nothing written");
}
