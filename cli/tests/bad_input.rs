//! Bad numbers get a clear answer from the real binary: exit code 1 and a
//! message naming the field, never a panic (exit 101). Each input here
//! crashed the binary or was silently accepted before.

use std::path::PathBuf;
use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the strata binary runs")
}

fn temp_file(name: &str, body: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    let p = d.join(name);
    std::fs::write(&p, body).expect("temp file");
    p
}

/// Runs `args` and checks it failed cleanly with `want` in its message.
fn refused(args: &[&str], want: &str) {
    let out = strata(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
}

const MAX: u64 = u64::MAX;

#[test]
fn check_config_refuses_out_of_range_numbers_naming_the_field() {
    for (i, (yaml, field)) in [
        (
            "leaderElection: {leaseDuration: 99999999999999999999999h}".to_owned(),
            "field `leaderElection.leaseDuration`",
        ),
        (
            format!("bindConcurrency: {}", (1u64 << 61) + 1),
            "field `bindConcurrency`",
        ),
        (
            format!("podInitialBackoffSeconds: {MAX}\npodMaxBackoffSeconds: {MAX}"),
            "field `podInitialBackoffSeconds`",
        ),
        (
            format!("podMaxInUnschedulablePodsSeconds: {MAX}"),
            "field `podMaxInUnschedulablePodsSeconds`",
        ),
        (
            format!("assumedPodTtlSeconds: {MAX}"),
            "field `assumedPodTtlSeconds`",
        ),
        (
            "clientConnection: {qps: 1e-300}".to_owned(),
            "field `clientConnection.qps`",
        ),
        (
            "healthzBindAddress: nowhere".to_owned(),
            "field `healthzBindAddress`",
        ),
    ]
    .iter()
    .enumerate()
    {
        let f = temp_file(&format!("cfg-{i}.yaml"), yaml);
        refused(&["check-config", f.to_str().unwrap()], field);
    }
}

fn scenario(config: &str, workload: &str, annotations: &str) -> String {
    format!(
        "name: bad\n{config}nodePools: [{{name: a, count: 2, allocatable: {{cpu: \"4\", memory: 8Gi, pods: \"110\"}}}}]\nworkloads:\n  - name: w\n    count: 3\n{workload}    template:\n      metadata: {{annotations: {{{annotations}}}}}\n      spec: {{containers: [{{name: c, image: i, resources: {{requests: {{cpu: 100m}}}}}}]}}\n"
    )
}

#[test]
fn simulate_refuses_out_of_range_numbers_naming_the_field() {
    for (i, (text, field)) in [
        (
            scenario("", "    start: 1e300\n", ""),
            "field `workloads[0].start`",
        ),
        (
            scenario("", "    arrival: {rate: 1e-300}\n", ""),
            "field `workloads[0].arrival.rate`",
        ),
        (
            scenario("config: {bindConcurrency: 3000000000000000000}\n", "", ""),
            "bindConcurrency",
        ),
        (
            scenario(
                &format!("config: {{podMaxInUnschedulablePodsSeconds: {MAX}}}\n"),
                "",
                "",
            ),
            "podMaxInUnschedulablePodsSeconds",
        ),
        (
            scenario(
                "",
                "    group: {name: g, size: 3}\n",
                "strata.io/min-member: \"4294967295\"",
            ),
            "strata.io/min-member: must be a whole number from 1 to 150000",
        ),
    ]
    .iter()
    .enumerate()
    {
        let f = temp_file(&format!("sc-{i}.yaml"), text);
        refused(&["simulate", "--quiet", f.to_str().unwrap()], field);
    }
}

#[test]
fn run_refuses_out_of_range_durations_before_connecting() {
    let ok = temp_file("run-ok.yaml", "profiles: [{schedulerName: s}]\n");
    refused(
        &[
            "run",
            "--config",
            ok.to_str().unwrap(),
            "--shutdown-grace",
            "99999999999999999999999h",
        ],
        "shutdownGrace: must be at most 24h",
    );
    let lease = temp_file(
        "run-lease.yaml",
        "leaderElection: {leaseDuration: 99999999999999999999999h}\n",
    );
    refused(
        &["run", "--config", lease.to_str().unwrap()],
        "leaderElection.leaseDuration: must be at most 24h",
    );
}

/// A configuration whose only profile serves none of the scenario's pods
/// runs (there is nothing wrong with it) but says so on stderr.
#[test]
fn simulate_warns_when_no_profile_serves_the_pods() {
    let f = temp_file(
        "unserved.yaml",
        &scenario("config: {profiles: [{schedulerName: other}]}\n", "", ""),
    );
    let out = strata(&["simulate", "--quiet", f.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no profile serves any of the scenario's pods")
            && stderr.contains("\"default-scheduler\""),
        "{stderr}"
    );
}

#[test]
fn replay_openb_refuses_bad_mixes_before_reading_any_data() {
    for (mix, want) in [
        ("share=120", "share is 120%"),
        ("share=70,multi=40", "share + multi is 110%"),
        ("cpu=100", "no pod asks for a GPU"),
        ("gpus=3", "unknown key \"gpus\""),
    ] {
        refused(
            &["replay-openb", "--data", "/nonexistent", "--mix", mix],
            want,
        );
    }
    // A flag clap refuses: its usage error (exit 2), not a panic.
    let out = strata(&["replay-openb", "--data", "/nonexistent", "--seeds", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--seeds"), "{stderr}");
}
