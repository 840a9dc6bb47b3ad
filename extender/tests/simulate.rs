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
{workloads}"#,
            url = ext.url,
            workloads = low_and_high(16, 2)
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

/// The preemption scenarios' workloads: `low` one-cpu pods at priority 0,
/// then from t=10 s `high` two-cpu pods at priority 1000.
fn low_and_high(low: usize, high: usize) -> String {
    format!(
        r#"workloads:
  - name: low
    count: {low}
    template:
      spec:
        priority: 0
        containers:
          - name: pause
            image: registry.k8s.io/pause:3.10
            resources: {{requests: {{cpu: "1", memory: 1Gi}}}}
  - name: high
    count: {high}
    start: 10
    template:
      spec:
        priority: 1000
        containers:
          - name: pause
            image: registry.k8s.io/pause:3.10
            resources: {{requests: {{cpu: "2", memory: 1Gi}}}}
"#
    )
}

/// What the preemption stub answers.
#[derive(Clone, Copy, Debug)]
enum PreemptAnswer {
    /// Not JSON.
    Garbage,
    /// A node that was not a candidate.
    UnknownNode,
    /// A victim UID that is on no candidate node.
    UnknownVictim,
}

/// Serves `preemptVerb` at `/ext/preempt` on loopback with `answer`; the
/// URL prefix. The runtime must outlive the simulation.
fn preempt_stub(rt: &tokio::runtime::Runtime, answer: PreemptAnswer) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/ext/preempt",
        post(move |body: axum::body::Bytes| async move {
            let args: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let node = args["NodeNameToMetaVictims"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            match answer {
                PreemptAnswer::Garbage => "{\"NodeNameToMetaVictims\": [oops".to_owned(),
                PreemptAnswer::UnknownNode => serde_json::json!({"NodeNameToMetaVictims": {
                    "ghost-node": {"Pods": [{"UID": "x"}], "NumPDBViolations": 0}}})
                .to_string(),
                PreemptAnswer::UnknownVictim => serde_json::json!({"NodeNameToMetaVictims": {
                    node: {"Pods": [{"UID": "default/nobody"}], "NumPDBViolations": 0}}})
                .to_string(),
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/ext")
}

/// A preemption extender that answers garbage, an unknown node or an
/// unknown victim: when it is not ignorable, preemption stops for that pod
/// with an ExtenderFailed event and nothing is evicted (as kube-scheduler,
/// the pod's FailedScheduling message stays the filters' diagnosis);
/// when it is ignorable, it is skipped (with the event) and preemption
/// goes on without it.
#[test]
fn a_bad_preemption_answer_gets_the_failure_policy() {
    for answer in [
        PreemptAnswer::Garbage,
        PreemptAnswer::UnknownNode,
        PreemptAnswer::UnknownVictim,
    ] {
        for ignorable in [false, true] {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let url = preempt_stub(&rt, answer);
            let workloads = low_and_high(8, 1);
            let scenario = format!(
                r#"
name: extender-bad-preempt
seed: 7
config:
  profiles:
    - schedulerName: default-scheduler
  extenders:
    - urlPrefix: {url}
      preemptVerb: preempt
      nodeCacheCapable: true
      ignorable: {ignorable}
nodePools:
  - {{name: node, count: 2, allocatable: {{cpu: "4", memory: 16Gi, pods: "110"}}}}
{workloads}"#
            );
            let case = format!("{answer:?} ignorable={ignorable}");
            let (sim, report) = simulate(&format!("bad-preempt-{ignorable}"), &scenario);
            assert_eq!(report.double_binds, 0, "{case}");
            let placements = sim.placements();
            let high = placements.get("default/high-0").cloned().flatten();
            let low_bound = placements
                .iter()
                .filter(|(k, v)| k.starts_with("default/low-") && v.is_some())
                .count();
            let failed = sim.cluster().event_counts().get("ExtenderFailed").copied();
            assert!(failed.unwrap_or(0) > 0, "{case}: no ExtenderFailed event");
            if let PreemptAnswer::Garbage = answer {
                let metrics = strata_extender::metrics::encode();
                assert!(
                    metrics
                        .lines()
                        .any(|l| l.starts_with("strata_remote_plugin_errors_total")
                            && l.contains(&url)
                            && l.contains("preempt")
                            && l.contains("reason=\"decode\"")),
                    "{case}: {metrics}"
                );
            }
            if ignorable {
                assert!(high.is_some(), "{case}: preemption went on without it");
                assert!(low_bound < 8, "{case}: a victim was evicted");
            } else {
                assert_eq!(high, None, "{case}: preemption stopped");
                assert_eq!(low_bound, 8, "{case}: nothing evicted");
                assert_eq!(sim.cluster().delete_calls(), 0, "{case}");
            }
        }
    }
}
