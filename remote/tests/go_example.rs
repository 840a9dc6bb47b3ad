//! The Go SDK's example plugin (`sdk/go/examples/vendorhealth`) against the
//! production engine: built with `go build`, started on a Unix socket, and
//! a simulator scenario run through it. Skipped without Go unless
//! `STRATA_GO_REQUIRED=1` (CI sets it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use strata_scheduler::sdk::Registry;
use strata_simulator::{RunOptions, Scenario, Simulation};

fn go_available() -> bool {
    Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_and_start(dir: &Path, sock: &Path) -> Plugin {
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk/go");
    let bin = dir.join("vendorhealth");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("./examples/vendorhealth")
        .current_dir(&sdk)
        .output()
        .expect("running go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = Command::new(&bin)
        .arg("-listen")
        .arg(format!("unix://{}", sock.display()))
        .spawn()
        .expect("starting vendorhealth");
    let p = Plugin(child);
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "vendorhealth did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

const SCENARIO: &str = r#"
name: remote-vendor-health
seed: 7
config:
  profiles:
    - schedulerName: default-scheduler
      plugins:
        multiPoint:
          enabled: [{name: GoVendorHealth, weight: 2}]
      pluginConfig:
        - name: GoVendorHealth
          args:
            remote: {endpoint: "unix://SOCKET", timeout: 2s}
            degradedScore: 20
nodePools:
  - name: ok
    count: 2
    allocatable: {cpu: "4", memory: 16Gi, pods: "110"}
    annotations: {vendor.example.com/health: ok}
  - name: degraded
    count: 2
    allocatable: {cpu: "4", memory: 16Gi, pods: "110"}
    annotations: {vendor.example.com/health: degraded}
  - name: failed
    count: 2
    allocatable: {cpu: "4", memory: 16Gi, pods: "110"}
    annotations: {vendor.example.com/health: failed}
workloads:
  - name: plain
    count: 12
    template:
      spec:
        containers:
          - name: pause
            image: registry.k8s.io/pause:3.10
            resources: {requests: {cpu: "1", memory: 1Gi}}
"#;

#[test]
fn the_go_example_plugin_places_a_simulated_workload() {
    if !go_available() {
        assert!(
            std::env::var_os("STRATA_GO_REQUIRED").is_none(),
            "STRATA_GO_REQUIRED is set but `go` is not on PATH"
        );
        eprintln!("SKIPPED: no Go toolchain");
        return;
    }
    let dir = std::env::temp_dir().join(format!("strata-go-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vh.sock");
    let _plugin = build_and_start(&dir, &sock);

    let yaml = SCENARIO.replace("SOCKET", &sock.display().to_string());
    let path = dir.join("scenario.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let plugins = strata_remote::registry_for(&yaml, &Registry::new());
    assert!(plugins.get("GoVendorHealth").is_some());
    let scenario = Scenario::load_with(path.to_str().unwrap(), &plugins).expect("the scenario");
    let opts = RunOptions {
        plugins,
        ..Default::default()
    };
    let mut sim = Simulation::new(scenario, &opts).expect("simulation starts");
    let report = sim.run();
    assert_eq!(report.pods.scheduled, 12, "{}", report.to_table());
    let mut pools = std::collections::BTreeMap::<String, usize>::new();
    for node in sim.placements().values().flatten() {
        let pool = node.rsplit_once('-').map_or(node.as_str(), |(p, _)| p);
        *pools.entry(pool.to_owned()).or_default() += 1;
    }
    assert_eq!(pools.get("failed"), None, "{pools:?}");
    assert_eq!(pools.get("ok"), Some(&8), "{pools:?}");
    assert_eq!(pools.get("degraded"), Some(&4), "{pools:?}");
    let stats = strata_remote::stats("GoVendorHealth").unwrap();
    assert_eq!(stats.full_syncs.load(Ordering::SeqCst), 1);
    assert_eq!(stats.handshakes.load(Ordering::SeqCst), 1);
}
