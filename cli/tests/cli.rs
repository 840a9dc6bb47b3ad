//! The `strata` binary end to end: arguments, outputs, exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the strata binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn simulate_small_prints_a_table_and_writes_json() {
    let dir = temp_dir("sim");
    let json = dir.join("report.json");
    let out = strata(&[
        "simulate",
        "small",
        "--quiet",
        "--seed",
        "5",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("pods scheduled / unschedulable / total"),
        "{stdout}"
    );
    assert!(stdout.contains("296 / 0 / 296"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["scenario"], "small");
    assert_eq!(report["seed"], 5);
    assert_eq!(report["pods"]["scheduled"], 296);
    assert!(report["pods_per_second"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn simulate_one_workload() {
    let out = strata(&["simulate", "small", "--quiet", "--only-workload", "spread"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("only workload spread"), "{stdout}");
    assert!(stdout.contains("60 / 0 / 60"), "{stdout}");

    let out = strata(&["simulate", "small", "--quiet", "--only-workload", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no workload named \"nope\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn simulate_reports_a_malformed_scenario_and_fails() {
    let dir = temp_dir("bad");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "name: bad\nnodePools:\n  - name: a\n    count: lots\n",
    )
    .unwrap();
    let out = strata(&["simulate", path.to_str().unwrap(), "--quiet"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.yaml:4:12: field `nodePools[0].count`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn simulate_lists_builtins() {
    let out = strata(&["simulate", "--list"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    for name in ["small", "demo", "basic-1k", "basic-4k", "basic-16k"] {
        assert!(stdout.contains(name), "{stdout}");
    }
}

#[test]
fn check_config_prints_profiles_or_the_error() {
    let dir = temp_dir("cfg");
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n  - schedulerName: strata\n    plugins:\n      score:\n        disabled: [{name: ImageLocality}]\n",
    )
    .unwrap();
    let out = strata(&["check-config", good.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("valid, 1 profile(s)"), "{stdout}");
    assert!(stdout.contains("profile strata"), "{stdout}");
    let score = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("score "))
        .expect("score line");
    assert!(score.contains("TaintToleration (3)"), "{score}");
    assert!(!score.contains("ImageLocality"), "{score}");

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "profiles:\n  - schedulerName: a\n    plugins: {filter: {enabled: [{name: Nope}]}}\n",
    )
    .unwrap();
    let out = strata(&["check-config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("field `profiles[0].plugins.filter.enabled[0].name`"),
        "{err}"
    );
    assert!(err.contains("Nope"), "{err}");

    let out = strata(&["check-config", dir.join("missing.yaml").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("missing.yaml"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `strata simulate --list | head -1`: the reader leaves before the
/// report is written; the command ends as it would have, without a panic.
#[test]
fn a_reader_that_left_the_pipe_is_not_a_crash() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    for args in [
        &["simulate", "--list"][..],
        &["simulate", "small", "--quiet"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(writer.try_clone().expect("the pipe's writer"))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("the strata binary runs");
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `parallelism` left out of the configuration: the thread count is the CPUs
/// this process may use, not the host's. Run under `taskset -c 0`, one CPU.
#[test]
fn default_parallelism_follows_the_cpu_affinity() {
    let dir = temp_dir("affinity");
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, "profiles:\n- schedulerName: strata-scheduler\n").expect("config written");
    let Ok(out) = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_strata"), "check-config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .output()
    else {
        eprintln!("taskset is not installed: skipped");
        return;
    };
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("parallelism 1,"), "{stdout}");
}

/// The same under a CPU quota: a cgroup allowed 1.5 CPUs gets one thread
/// (the quota rounded down), whatever the host has. Needs a writable cgroup
/// v1 `cpu` hierarchy (root in a container that mounts it read-write);
/// skipped where there is none.
#[test]
fn default_parallelism_follows_the_cgroup_cpu_quota() {
    let base = std::path::Path::new("/sys/fs/cgroup/cpu");
    let group = base.join(format!("strata-cli-test-{}", std::process::id()));
    let made = std::fs::create_dir_all(&group).is_ok()
        && std::fs::write(group.join("cpu.cfs_period_us"), "100000").is_ok()
        && std::fs::write(group.join("cpu.cfs_quota_us"), "150000").is_ok();
    if !made {
        let _ = std::fs::remove_dir(&group);
        eprintln!("no writable cgroup v1 cpu hierarchy: skipped");
        return;
    }
    let dir = temp_dir("quota");
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, "profiles:\n- schedulerName: strata-scheduler\n").expect("config written");
    // The shell moves itself into the group, then becomes strata.
    let out = Command::new("sh")
        .arg("-c")
        .arg("echo $$ > \"$1/cgroup.procs\" && exec \"$2\" check-config \"$3\"")
        .arg("sh")
        .arg(&group)
        .arg(env!("CARGO_BIN_EXE_strata"))
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .output()
        .expect("sh runs");
    let _ = std::fs::remove_dir(&group);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("parallelism 1,"), "{stdout}");
}
