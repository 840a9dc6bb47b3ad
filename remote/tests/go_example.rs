//! The Go SDK's example plugin (`sdk/go/examples/vendorhealth`) against the
//! production engine: built with `go build`, started on a Unix socket, and
//! a simulator scenario run through it. Skipped without Go unless
//! `STRATA_GO_REQUIRED=1` (CI sets it).

mod common;

use common::{build_go_example, go_available, start_go_example};
use std::sync::atomic::Ordering;
use strata_scheduler::sdk::Registry;
use strata_simulator::{RunOptions, Scenario, Simulation};

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
    let bin = build_go_example(&dir);
    let _plugin = start_go_example(&bin, &sock);

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
