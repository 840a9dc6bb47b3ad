//! A simulator scenario end to end through the Go extender
//! (`testing/extender-go/`): the production engine in virtual time, the
//! extender over loopback for filter and prioritize, once per cycle.

mod common;

use common::go;
use std::collections::BTreeMap;
use strata_scheduler::framework::Registry;
use strata_simulator::{Report, RunOptions, Scenario, Simulation};

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

/// Runs scenario `yaml` (written to a file named after `tag`) with the
/// HTTP extender client registered: the simulation and its report.
fn simulate(tag: &str, yaml: &str) -> (Simulation, Report) {
    let dir = std::env::temp_dir().join(format!("strata-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let mut plugins = Registry::new();
    strata_extender::register(&mut plugins);
    let scenario = Scenario::load_with(path.to_str().unwrap(), &plugins).expect("the scenario");
    let _ = std::fs::remove_dir_all(&dir);
    let opts = RunOptions {
        plugins,
        ..Default::default()
    };
    let mut sim = Simulation::new(scenario, &opts).expect("simulation starts");
    let report = sim.run();
    (sim, report)
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
    let (sim, report) = simulate("extender-small", &scenario);
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
}

/// Preemption through the Go extender's `preemptVerb`: low-priority pods
/// fill every node, then high-priority pods arrive; the extender forbids
/// evictions on the `keep` nodes, so the preemptors land on the `open`
/// nodes and every pod on `keep` survives. Both forms of the arguments:
/// victims by UID (nodeCacheCapable) and whole pods.
#[test]
fn preemption_through_the_go_extender() {
    let Some(bin) = go::go_extender_binary() else {
        return;
    };
    for node_cache_capable in [true, false] {
        let ext = go::GoExtender::start(&bin, &["-no-preempt", "^keep-"]);
        let scenario = format!(
            r#"
name: extender-preempt
seed: 7
config:
  profiles:
    - schedulerName: default-scheduler
  extenders:
    - urlPrefix: {url}
      preemptVerb: preempt
      nodeCacheCapable: {node_cache_capable}
nodePools:
  - {{name: keep, count: 2, allocatable: {{cpu: "4", memory: 16Gi, pods: "110"}}}}
  - {{name: open, count: 2, allocatable: {{cpu: "4", memory: 16Gi, pods: "110"}}}}
workloads:
  - name: low
    count: 16
    template:
      spec:
        priority: 0
        containers:
          - name: pause
            image: registry.k8s.io/pause:3.10
            resources: {{requests: {{cpu: "1", memory: 1Gi}}}}
  - name: high
    count: 2
    start: 10
    template:
      spec:
        priority: 1000
        containers:
          - name: pause
            image: registry.k8s.io/pause:3.10
            resources: {{requests: {{cpu: "2", memory: 1Gi}}}}
"#,
            url = ext.url
        );
        let (sim, report) = simulate(&format!("extender-preempt-{node_cache_capable}"), &scenario);
        assert_eq!(report.double_binds, 0);
        let placements = sim.placements();
        for i in 0..2 {
            let node = placements
                .get(&format!("default/high-{i}"))
                .cloned()
                .flatten();
            assert!(
                node.as_deref().is_some_and(|n| n.starts_with("open-")),
                "high-{i} preempted on {node:?}, the extender forbids keep-*: {}",
                report.to_table()
            );
        }
        let on_keep = placements
            .values()
            .filter(|n| n.as_deref().is_some_and(|n| n.starts_with("keep-")))
            .count();
        assert_eq!(on_keep, 8, "nothing evicted on keep-*: {placements:?}");
        let calls = ext.verb("preempt");
        assert!(!calls.is_empty(), "preemption consulted the extender");
        assert_eq!(calls[0]["nodes"], 4, "every candidate was sent: {calls:?}");
        assert!(
            calls
                .iter()
                .all(|c| c["nodeNames"] == node_cache_capable && c["victims"].as_u64() > Some(0)),
            "{calls:?}"
        );
    }
}
