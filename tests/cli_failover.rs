//! `drlab failover` from the command line: a planned failover drill, its dry run, bad input.

use std::process::Command;

fn drlab(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drlab")).args(args).output().expect("drlab runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_failover_drill_reports_every_step_rpo_and_rto() {
    let (code, out) = drlab(&["failover", "--seed", "3"]);
    assert_eq!(code, 0, "{out}");
    for step in ["fence-primary", "pinned-check", "clear-gate", "switch-dns", "unpause-clusters"] {
        assert!(out.contains(step), "step {step} listed: {out}");
    }
    assert!(out.contains("RPO 0 keys"), "{out}");
    assert!(out.contains("platform domain -> standby"), "{out}");
    assert!(out.contains("vm-deletions: 0"), "{out}");
}

#[test]
fn a_dry_run_changes_nothing() {
    let (code, out) = drlab(&["failover", "--seed", "3", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dry run, nothing changed") && out.contains("guards (check at source"), "{out}");
    assert!(out.contains("platform domain -> primary"), "DNS untouched: {out}");
}

#[test]
fn an_abort_after_the_failover_is_refused_and_says_fail_back() {
    let (code, out) = drlab(&["failover", "--seed", "3", "--abort-at", "100"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failover: done") && out.contains("abort: cannot abort"), "{out}");
    assert!(out.contains("then fail back") && out.contains("platform domain -> standby"), "{out}");
    assert!(out.contains("reproduce with: drlab failover --seed 3") && out.contains("--abort-at 100"), "{out}");
}

#[test]
fn a_failback_drill_returns_the_platform_to_the_old_primary() {
    let (code, out) = drlab(&["failover", "--seed", "3", "--failback-at", "80"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("failover: done") && out.contains("failback: done; RPO 0 keys"), "{out}");
    assert!(out.contains("platform domain -> primary") && out.contains("vm-deletions: 0"), "{out}");
    let (code, out) = drlab(&["failover", "--seed", "3", "--failback-at", "20"]);
    assert_eq!(code, 2, "a failback before the failover: {out}");
    assert!(out.contains("--failback-at after --at"), "{out}");
}

#[test]
fn impossible_timing_is_bad_input() {
    let (code, out) = drlab(&["failover", "--at", "500", "--sim-secs", "100"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--at must be before --sim-secs"), "{out}");
    let (code, out) = drlab(&["failover", "--at", "30", "--abort-at", "10"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--abort-at from --at to --sim-secs"), "{out}");
}

#[test]
fn an_unplanned_failover_drill_fails_over_without_the_lost_primary() {
    let (code, out) = drlab(&["failover", "--seed", "3", "--unplanned"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("failover: done (unplanned); RPO 0 revisions known lost"), "{out}");
    assert!(out.contains("platform domain -> standby") && out.contains("vm-deletions: 0"), "{out}");
    let (code, out) = drlab(&["failover", "--seed", "3", "--unplanned", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("quiesce-primary: skipped") && out.contains("check at the standby alone"), "{out}");
    let (code, out) = drlab(&["failover", "--unplanned", "--at", "3"]);
    assert_eq!(code, 2, "the primary cannot be lost before the start: {out}");
}

#[test]
fn preflight_names_misnamed_globals_and_differing_keys_by_fingerprint_only() {
    let (code, out) = drlab(&["preflight", "--seed", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("preflight: 0 blocking, 0 warnings"), "{out}");
    assert!(out.contains("checked: primary: 12 global resources, 1 agent Roles, encryption fingerprint read"), "{out}");
    assert!(out.contains("token signing read, platform certificate: 3 names"), "{out}");
    assert!(out.contains("not checked: primary: etcd server certificate SANs"), "what the world lacks is said: {out}");
    let (code, out) = drlab(&["preflight", "--seed", "2", "--misnamed-global", "--keys-differ"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BLOCKING primary MachineDeployment workers: lacks the `global-` prefix"), "{out}");
    assert!(out.contains("WARNING EncryptionConfiguration: encryption provider configurations differ"), "{out}");
    // The standby's key is 32 bytes of 2 (harness::drill::keys_differ): never printed.
    assert!(!out.contains("AgICAgIC") && !out.contains("secret:"), "no key material: {out}");
    assert!(out.contains("reproduce with: drlab preflight --seed 2") && out.contains("--keys-differ"), "{out}");
    let (code, out) = drlab(&["preflight", "--seed", "2", "--sa-key-differs"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "BLOCKING /etc/kubernetes/pki/sa.key, sa.pub (primary / standby): ServiceAccount signing keys differ"
        ),
        "{out}"
    );
    // The standby's signing key is 32 bytes of 8 (harness::drill::sa_key_differs): never printed.
    assert!(!out.contains("CAgICAgI") && !out.contains("0808080808"), "no key material: {out}");
    let (code, out) = drlab(&["preflight", "--clusters", "0"]);
    assert_eq!(code, 2, "{out}");
}

/// Seed 000: the platform certificate must cover the domain and both VIPs. One issued before the
/// standby existed blocks, on both sides (the standby's is the same certificate), with what it
/// covers; its private key never shows.
#[test]
fn preflight_blocks_a_platform_certificate_without_the_standby_vip() {
    let (code, out) = drlab(&["preflight", "--cert-without-standby-vip"]);
    assert_eq!(code, 1, "{out}");
    for side in ["primary", "standby"] {
        let line = format!(
            "BLOCKING {side} Secret cpaas-system/dex.tls: the platform certificate does not cover `standby` (it \
             covers platform.example.com, primary)"
        );
        assert!(out.contains(&line), "{out}");
    }
    assert!(!out.contains("PRIVATE KEY"), "no key material: {out}");
    assert!(out.contains("--cert-without-standby-vip"), "the reproduce line names the flag: {out}");
}

/// The names preflight reads are the certificate's own (parsed from its PEM), and what is not a
/// certificate is said so rather than read as "covers nothing".
#[test]
fn certificate_names_are_read_from_the_pem() {
    let names: Vec<String> = ["platform.example.com", "primary", "10.0.0.7"].map(String::from).to_vec();
    let secret = sim::topology::platform_certificate(&names, 7);
    let sim::k8s::Body::Secret { data, .. } = &secret.body else { panic!("a Secret") };
    assert_eq!(failover::preflight::certificate_names(&data["tls.crt"]), Ok(names.clone()));
    assert_eq!(sim::topology::platform_certificate(&names, 7).body, secret.body, "same seed, same bytes");
    assert!(
        failover::preflight::certificate_names(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .is_err()
    );
    assert!(failover::preflight::certificate_names(b"kubeconfig").is_err());
}

#[test]
fn a_dr_aware_upgrade_drill_uninstalls_and_reinstalls_the_sync() {
    let (code, out) = drlab(&["failover", "--seed", "3", "--upgrade", "--at", "30", "--reinstall-at", "70"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upgrade uninstall: done") && out.contains("upgrade reinstall: done"), "{out}");
    assert!(!out.contains("failover:"), "no failover runs in an upgrade drill: {out}");
    assert!(out.contains("sync: Streaming"), "the new epoch streams: {out}");
    assert!(out.contains("platform domain -> primary") && out.contains("vm-deletions: 0"), "{out}");
    let (code, out) = drlab(&["failover", "--upgrade", "--at", "30", "--reinstall-at", "20"]);
    assert_eq!(code, 2, "a reinstall before the uninstall: {out}");
    assert!(out.contains("--reinstall-at after --at"), "{out}");
    let (code, out) = drlab(&["failover", "--reinstall-at", "70"]);
    assert_eq!(code, 2, "--reinstall-at needs --upgrade: {out}");
}
