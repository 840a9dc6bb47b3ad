//! A simulator scenario end to end through the Go extender
//! (`testing/extender-go/`): the production engine in virtual time, the
//! extender over loopback for filter and prioritize, once per cycle.

mod common;

use common::go;
use std::collections::BTreeMap;
use strata_scheduler::framework::Registry;
use strata_simulator::{RunOptions, Scenario, Simulation};

/// Pods per node pool (the node name up to its last `-`).
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
fn scenario_through_the_go_extender() {
    let Some(bin) = go::go_extender_binary() else {
        return;
    };
    let ext = go::GoExtender::start(&bin, &["-reject", "^bad-", "-prefer", "^good-"]);
    let scenario = format!(
        r#"
name: extender-small
seed: 7
config:
  profiles:
    - schedulerName: default-scheduler
  extenders:
    - urlPrefix: {url}
      filterVerb: filter
      prioritizeVerb: prioritize
      weight: 10
      nodeCacheCapable: true
nodePools:
  - {{name: good, count: 2, allocatable: {{cpu: "4", memory: 16Gi, pods: "110"}}}}
  - {{name: plain, count: 2, allocatable: {{cpu: "4", memory: 16Gi, pods: "110"}}}}
  - {{name: bad, count: 2, allocatable: {{cpu: "4", memory: 16Gi, pods: "110"}}}}
workloads:
  - name: plain
    count: 12
    template:
      spec:
        containers:
          - name: pause
            image: registry.k8s.io/pause:3.10
            resources: {{requests: {{cpu: "1", memory: 1Gi}}}}
"#,
        url = ext.url
    );
    let dir = std::env::temp_dir().join(format!("strata-extender-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("extender-small.yaml");
    std::fs::write(&path, scenario).unwrap();
    let mut plugins = Registry::new();
    strata_extender::register(&mut plugins);
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
    assert_eq!(
        pools.get("bad"),
        None,
        "the extender rejects them: {pools:?}"
    );
    assert_eq!(
        pools.get("good"),
        Some(&8),
        "the extender prefers them: {pools:?}"
    );
    assert_eq!(pools.get("plain"), Some(&4), "{pools:?}");
    let calls = ext.calls();
    let filters = calls.iter().filter(|c| c["verb"] == "filter").count();
    assert_eq!(filters, 12, "one filter call per cycle");
    assert!(
        calls
            .iter()
            .filter(|c| c["verb"] == "filter")
            .all(|c| c["nodeNames"] == true),
        "{calls:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
