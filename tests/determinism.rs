//! Same seed, same trace: `drlab world` run in separate processes, and in a debug and a release
//! build, must print the same `trace-hash:`; another seed must not. Separate processes catch
//! state that leaks between runs; two build profiles catch libraries that read the real clock
//! (timing then differs with the build's speed).

use std::path::{Path, PathBuf};
use std::process::Command;

const SEED: u64 = 5;
const SIM_SECS: &str = "45";

fn run(bin: &Path, seed: u64) -> String {
    let out = Command::new(bin)
        .args(["world", "--seed", &seed.to_string(), "--sim-secs", SIM_SECS])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} world --seed {seed} failed: {stdout}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("seed: {seed}\n")), "the seed is printed: {stdout}");
    assert!(stdout.contains(" sim-s/wall-s"), "the speed is printed: {stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace-hash: "))
        .unwrap_or_else(|| panic!("no trace-hash line in: {stdout}"))
        .to_string()
}

/// The same binary built with the other profile (`target/debug` ↔ `target/release`), or
/// `DRLAB_OTHER_PROFILE_BIN`.
fn other_profile_binary(this: &Path) -> PathBuf {
    if let Ok(p) = std::env::var("DRLAB_OTHER_PROFILE_BIN") {
        return p.into();
    }
    let profile_dir = this.parent().expect("binary has a directory");
    let other = if profile_dir.ends_with("release") { "debug" } else { "release" };
    profile_dir.parent().expect("target dir").join(other).join(this.file_name().expect("file name"))
}

#[test]
fn same_seed_same_trace_across_processes_and_profiles() {
    let this = PathBuf::from(env!("CARGO_BIN_EXE_drlab"));
    let first = run(&this, SEED);
    let second = run(&this, SEED);
    assert_eq!(first, second, "two processes of seed={SEED} gave different traces");

    let other = other_profile_binary(&this);
    assert!(
        other.is_file(),
        "{} is missing: build it (`cargo build --bin drlab`, or with --release) — `make test` does",
        other.display()
    );
    let other_hash = run(&other, SEED);
    assert_eq!(first, other_hash, "{} and {} disagree on seed={SEED}", this.display(), other.display());

    let different = run(&this, SEED + 1);
    assert_ne!(first, different, "seeds {SEED} and {} gave the same trace", SEED + 1);
}
