//! VendorHealth through the simulator: the scenario
//! `scenarios/vendor-health.yaml` enables it on the default profile, as a
//! vendor's configuration would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use strata_scheduler::sdk::Registry;
use strata_simulator::{RunOptions, Scenario, Simulation};

fn scenario_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/vendor-health.yaml")
}

/// Pods per node pool (`ok`, `degraded`, `failed`) and unbound pods.
fn by_pool(placements: &BTreeMap<String, Option<String>>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for node in placements.values() {
        let pool = match node {
            Some(n) => n.rsplit_once('-').map_or(n.as_str(), |(p, _)| p).to_owned(),
            None => "unbound".to_owned(),
        };
        *m.entry(pool).or_insert(0) += 1;
    }
    m
}

#[test]
fn failed_nodes_receive_no_pods_and_healthy_ones_fill_first() {
    let mut plugins = Registry::new();
    plugins.register(vendor_health::NAME, vendor_health::factory);
    let path = scenario_path();
    let scenario = Scenario::load_with(path.to_str().unwrap(), &plugins).expect("the scenario");
    let opts = RunOptions {
        plugins,
        ..Default::default()
    };
    let mut sim = Simulation::new(scenario, &opts).expect("simulation starts");
    let report = sim.run();
    assert_eq!(report.pods.scheduled, 12, "{}", report.to_table());
    assert_eq!(report.double_binds, 0);
    let pools = by_pool(&sim.placements());
    assert_eq!(pools.get("failed"), None, "{pools:?}");
    // 4 cpus each: the two healthy nodes take eight pods, the rest go to
    // the degraded ones.
    assert_eq!(pools.get("ok"), Some(&8), "{pools:?}");
    assert_eq!(pools.get("degraded"), Some(&4), "{pools:?}");
}

#[test]
fn the_vendor_binary_simulates_the_scenario_and_strata_refuses_it() {
    let dir = std::env::temp_dir().join(format!("vendor-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vendor-scheduler"))
        .args(["simulate", "--quiet", "--json"])
        .arg(&json)
        .arg(scenario_path())
        .output()
        .expect("run vendor-scheduler");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["pods"]["scheduled"], 12, "{report}");
    // The same scenario through Strata's own entry point, which does not
    // carry the plugin: refused, naming it.
    let e = strata_cli::Strata::new()
        .run_from([
            "strata",
            "simulate",
            "--quiet",
            scenario_path().to_str().unwrap(),
        ])
        .expect_err("VendorHealth is not an in-tree plugin")
        .to_string();
    assert!(e.contains("VendorHealth"), "{e}");
}
