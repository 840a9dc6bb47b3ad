//! Group scenarios end to end: no group is ever partly bound group-aware
//! (checked at every bind and at the end), the check does see pod-by-pod
//! partial binds, and time to place a group is measured in both modes.

use strata_simulator::groups::{self, GroupReport};
use strata_simulator::{RunOptions, Scenario};

/// More gangs than fit (they race for two super-nodes and time out), PD
/// units whose prefill prefers one cabinet, and plain pods in between.
const CONTENDED: &str = r#"
name: groups-contended
seed: 7
nodePools:
  - name: npu
    count: 16
    allocatable: {cpu: "192", memory: 2Ti, pods: "110", nvidia.com/gpu: "8"}
    labels:
      strata.io/supernode: "sn-{index/8}"
      strata.io/cabinet: "cab-{index/4%2}"
workloads:
  - name: gang
    count: 24
    arrival: {rate: 8}
    group: {name: gang, size: 4}
    template:
      metadata:
        labels: {app: gang}
        annotations:
          strata.io/min-member: "4"
          strata.io/schedule-timeout-seconds: "5"
          strata.io/topology-required-level: "strata.io/supernode"
      spec:
        containers:
          - name: w
            image: registry.example.com/train:1
            resources: {requests: {cpu: "16", memory: 64Gi, nvidia.com/gpu: "8"}}
  - name: prefill
    count: 4
    start: 1
    group: {name: pd, size: 2}
    template:
      metadata:
        labels: {app: llm, strata.io/subgroup: prefill}
        annotations:
          strata.io/min-member: "3"
          strata.io/subgroups: "prefill:2::strata.io/cabinet,decode:1"
          strata.io/topology-required-level: "strata.io/supernode"
      spec:
        containers:
          - name: w
            image: registry.example.com/llm:1
            resources: {requests: {cpu: "8", memory: 32Gi, nvidia.com/gpu: "4"}}
  - name: decode
    count: 2
    start: 1
    group: {name: pd, size: 1}
    template:
      metadata:
        labels: {app: llm, strata.io/subgroup: decode}
        annotations:
          strata.io/min-member: "3"
          strata.io/subgroups: "prefill:2::strata.io/cabinet,decode:1"
          strata.io/topology-required-level: "strata.io/supernode"
      spec:
        containers:
          - name: w
            image: registry.example.com/llm:1
            resources: {requests: {cpu: "8", memory: 32Gi, nvidia.com/gpu: "2"}}
  - name: plain
    count: 12
    arrival: {rate: 4}
    template:
      metadata:
        labels: {app: plain}
      spec:
        containers:
          - name: w
            image: registry.example.com/web:1
            resources: {requests: {cpu: "2", memory: 4Gi, nvidia.com/gpu: "1"}}
"#;

fn assert_never_partly_bound(g: &GroupReport) {
    assert_eq!(g.partial_bind_violations, 0, "{g:#?}");
    assert_eq!(g.groups_with_violations, 0, "{g:#?}");
    assert!(g.violation_examples.is_empty(), "{g:#?}");
    assert_eq!(g.partly_bound, 0, "{g:#?}");
}

#[test]
fn gangs_small_is_never_partly_bound_and_reports_time_to_place() {
    let sc = Scenario::load("gangs-small").expect("built-in scenario");
    let c = groups::compare(sc, &RunOptions::default(), "nvidia.com/gpu", true).unwrap();
    let (_, g) = &c.group_aware;
    assert_never_partly_bound(g);
    assert!(g.binds_checked > 0);
    assert_eq!(g.time_to_place_scheduler.count, g.complete);
    assert_eq!(g.time_to_place_virtual.count, g.complete);
    let (_, p) = c.pod_by_pod.as_ref().unwrap();
    assert!(p.partial_bind_violations > 0, "{p:#?}");
    let table = c.to_table();
    assert!(table.contains("time to place, scheduler p99"), "{table}");
    assert!(table.contains("partial-bind violations"), "{table}");
    assert!(table.contains("violation (pod-by-pod)"), "{table}");
    let json = serde_json::to_value(&c).unwrap();
    assert!(json["group_aware"][1]["time_to_place_virtual"]["p99_ms"].is_number());
    assert_eq!(json["group_aware"][1]["partial_bind_violations"], 0);
}

#[test]
fn contended_groups_are_never_partly_bound_at_any_bind() {
    let sc = Scenario::parse(CONTENDED, "groups-contended.yaml").expect("scenario");
    let c = groups::compare(sc, &RunOptions::default(), "nvidia.com/gpu", true).unwrap();
    let (r, g) = &c.group_aware;
    assert_eq!(r.double_binds, 0);
    assert!(r.cache_inconsistency.is_none(), "{r:?}");
    assert_never_partly_bound(g);
    assert_eq!(g.groups, 8);
    assert!(g.complete >= 3, "{g:#?}");
    assert!(g.binds_checked >= 12, "{g:#?}");
    // Virtual time to place starts at the minMember-th arrival: a group
    // that fits then is placed at that instant (the engine's work takes no
    // virtual time); only waiting for capacity would show here.
    assert_eq!(g.time_to_place_virtual.count, g.complete, "{g:#?}");
    assert_eq!(g.time_to_place_scheduler.count, g.complete, "{g:#?}");
    let (_, p) = c.pod_by_pod.as_ref().unwrap();
    assert!(
        p.partial_bind_violations > 0 && p.groups_with_violations > 0,
        "{p:#?}"
    );
}

/// LeaderWorkerSet-shaped pods (simulator/scenarios/lws-small.yaml), only
/// schedulerName pointing at Strata: every replica that fits is placed
/// whole inside one super-node, replicas with exclusive-topology each hold
/// a super-node alone, and the replica too big for any super-node stays
/// wholly pending. Pod by pod, the same pods are bound partly and spread.
#[test]
fn lws_replicas_are_placed_whole_each_inside_one_super_node() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/lws-small.yaml");
    let sc = Scenario::load(path).expect("lws-small");
    let mut sim = strata_simulator::Simulation::new(sc.clone(), &RunOptions::default()).unwrap();
    let r = sim.run();
    assert_eq!(r.double_binds, 0);
    let g = groups::measure(&sim, &sc, "nvidia.com/gpu");
    assert_never_partly_bound(&g);
    assert_eq!((g.groups, g.complete), (6, 5), "{g:#?}");
    assert_eq!(g.in_one_supernode, 1.0, "{g:#?}");
    let placed = sim.placements();
    let sn = |node: &str| node.trim_start_matches("gpu-").parse::<u32>().unwrap() / 8;
    let mut llm_sns = std::collections::BTreeSet::new();
    for rep in 0..3 {
        let sns: std::collections::BTreeSet<u32> = placed
            .iter()
            .filter(|(k, _)| {
                let i: u32 = k
                    .trim_start_matches("default/llm-")
                    .parse()
                    .unwrap_or(u32::MAX);
                i / 8 == rep
            })
            .map(|(_, n)| sn(n.as_deref().expect("bound")))
            .collect();
        assert_eq!(sns.len(), 1, "replica {rep}: {sns:?}");
        llm_sns.extend(sns);
    }
    assert_eq!(llm_sns.len(), 3, "exclusive replicas share no super-node");
    let huge_bound = placed
        .iter()
        .filter(|(k, n)| k.starts_with("default/huge-") && n.is_some())
        .count();
    assert_eq!(
        huge_bound, 0,
        "the replica that cannot fit is wholly pending"
    );
    let c = groups::compare(sc, &RunOptions::default(), "nvidia.com/gpu", true).unwrap();
    let (_, p) = c.pod_by_pod.as_ref().unwrap();
    assert!(p.partial_bind_violations > 0, "{p:#?}");
}
