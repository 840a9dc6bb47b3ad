//! Tests built from the examples of the Kubernetes docs ("Pod Topology
//! Spread Constraints"), kube-scheduler's scoring formula worked by hand, and
//! a property test that the PreFilter extensions agree with a fresh PreFilter,
//! and one that the memo's counts equal a fresh count through random cluster
//! histories.

use super::filter::inspect;
use super::*;
use crate::common::topology_domains as domains;
use k8s_openapi::api::core::v1 as corev1;
use proptest::prelude::*;
use serde_json::{Value, json};
use strata_scheduler::cache::Cache;
use strata_scheduler::model::OwnerRef;
use strata_scheduler::sdk::{
    Code, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeId, NodeScore, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Status,
};
use strata_scheduler::testing;

fn system() -> PodTopologySpread {
    PodTopologySpread::new(&PodTopologySpreadArgs::default())
}

fn with_args(v: Value) -> PodTopologySpread {
    PodTopologySpread::new(&PodTopologySpreadArgs::parse(Some(&v)).expect("valid args"))
}

/// A node labelled as in the docs: `zone` and `node`.
fn zone_node(name: &str, zone: &str) -> corev1::Node {
    testing::node(name)
        .label("zone", zone)
        .label("node", name)
        .build()
}

fn foo_pod(name: &str, node: &str) -> PodInfo {
    testing::pod(name).label("foo", "bar").on(node).build()
}

fn constraint(max_skew: i32, key: &str, when: &str) -> Value {
    json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
           "labelSelector": {"matchLabels": {"foo": "bar"}}})
}

fn hard(max_skew: i32, key: &str) -> Value {
    constraint(max_skew, key, "DoNotSchedule")
}

fn soft(max_skew: i32, key: &str) -> Value {
    constraint(max_skew, key, "ScheduleAnyway")
}

/// `mypod` (labelled `foo: bar`) with `constraints` and more spec fields.
fn mypod(constraints: Vec<Value>, extra: Value) -> PodInfo {
    let mut spec = json!({"topologySpreadConstraints": constraints});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    testing::pod("mypod").label("foo", "bar").spec(spec).build()
}

fn owned(mut p: PodInfo) -> PodInfo {
    p.owner = Some(OwnerRef {
        kind: "ReplicaSet".into(),
        name: "web-5d4f".into(),
        uid: "rs-uid".into(),
    });
    p
}

/// The docs' 4-node cluster: zoneA = node1, node2; zoneB = node3, node4;
/// one `foo: bar` pod on each of node1, node2, node3.
fn docs_cluster() -> Cache {
    testing::cache_with(
        vec![
            zone_node("node1", "zoneA"),
            zone_node("node2", "zoneA"),
            zone_node("node3", "zoneB"),
            zone_node("node4", "zoneB"),
        ],
        vec![
            foo_pod("p1", "node1"),
            foo_pod("p2", "node2"),
            foo_pod("p3", "node3"),
        ],
    )
}

/// PreFilter then Filter on every node: each node's status.
fn filter_all(pl: &PodTopologySpread, pod: &PodInfo, cache: &Cache) -> Vec<(String, Status)> {
    let snap = cache.snapshot();
    let mut state = CycleState::new();
    let r = pl.pre_filter(&mut state, pod, snap);
    assert!(r.status.is_success(), "PreFilter: {}", r.status);
    assert!(r.nodes.is_none());
    let mut out: Vec<(String, Status)> = snap
        .nodes()
        .map(|n| (n.name.to_string(), pl.filter(&state, pod, n)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The nodes that pass.
fn feasible(pl: &PodTopologySpread, pod: &PodInfo, cache: &Cache) -> Vec<String> {
    filter_all(pl, pod, cache)
        .into_iter()
        .filter(|(_, s)| s.is_success())
        .map(|(n, _)| n)
        .collect()
}

/// Scores by node name, sorted.
type Named = Vec<(String, i64)>;

/// PreScore, Score and NormalizeScore over every node: raw and final scores.
fn score_all(pl: &PodTopologySpread, pod: &PodInfo, cache: &Cache) -> (Named, Named) {
    let snap = cache.snapshot();
    let ids: Vec<NodeId> = snap.node_ids().to_vec();
    let mut state = CycleState::new();
    let s = pl.pre_score(&mut state, pod, snap, &ids);
    assert!(s.is_success(), "PreScore: {s}");
    let mut scores: Vec<NodeScore> = ids
        .iter()
        .map(|&id| NodeScore {
            node: id,
            score: pl.score(&state, pod, snap.node(id)).expect("score"),
        })
        .collect();
    let named = |v: &[NodeScore]| {
        let mut out: Vec<(String, i64)> = v
            .iter()
            .map(|ns| (snap.node(ns.node).name.to_string(), ns.score))
            .collect();
        out.sort();
        out
    };
    let raw = named(&scores);
    assert!(pl.normalize(&state, pod, &mut scores).is_success());
    (raw, named(&scores))
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

#[test]
fn docs_one_constraint() {
    let cache = docs_cluster();
    // zoneA holds 2, zoneB 1: with maxSkew 1 only zoneB is allowed.
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    assert_eq!(
        feasible(&system(), &pod, &cache),
        names(&["node3", "node4"])
    );
    let statuses = filter_all(&system(), &pod, &cache);
    assert_eq!(statuses[0].1.code(), Code::Unschedulable);
    assert_eq!(statuses[0].1.reasons()[0], ERR_CONSTRAINTS_NOT_MATCH);
    // With maxSkew 2 the pod may go anywhere.
    let pod = mypod(vec![hard(2, "zone")], json!({}));
    assert_eq!(
        feasible(&system(), &pod, &cache),
        names(&["node1", "node2", "node3", "node4"])
    );
}

#[test]
fn docs_two_constraints() {
    let cache = docs_cluster();
    // Zone says zoneB; node says node4 (the only one without a pod).
    let pod = mypod(vec![hard(1, "zone"), hard(1, "node")], json!({}));
    assert_eq!(feasible(&system(), &pod, &cache), names(&["node4"]));
}

#[test]
fn docs_conflicting_constraints() {
    // zoneA: node1 (2 pods), node2 (1); zoneB: node3 (2). Zone allows only
    // zoneB, node allows only node2: the pod stays Pending.
    let cache = testing::cache_with(
        vec![
            zone_node("node1", "zoneA"),
            zone_node("node2", "zoneA"),
            zone_node("node3", "zoneB"),
        ],
        vec![
            foo_pod("p1", "node1"),
            foo_pod("p2", "node1"),
            foo_pod("p3", "node2"),
            foo_pod("p4", "node3"),
            foo_pod("p5", "node3"),
        ],
    );
    let zone_only = mypod(vec![hard(1, "zone")], json!({}));
    assert_eq!(feasible(&system(), &zone_only, &cache), names(&["node3"]));
    let node_only = mypod(vec![hard(1, "node")], json!({}));
    assert_eq!(feasible(&system(), &node_only, &cache), names(&["node2"]));
    let both = mypod(vec![hard(1, "zone"), hard(1, "node")], json!({}));
    assert!(feasible(&system(), &both, &cache).is_empty());
}

/// The docs' 5-node example: zoneC must be excluded with node affinity.
fn five_node_cluster() -> Cache {
    testing::cache_with(
        vec![
            zone_node("node1", "zoneA"),
            zone_node("node2", "zoneA"),
            zone_node("node3", "zoneB"),
            zone_node("node4", "zoneB"),
            zone_node("node5", "zoneC"),
        ],
        vec![
            foo_pod("p1", "node1"),
            foo_pod("p2", "node2"),
            foo_pod("p3", "node3"),
        ],
    )
}

fn not_zone_c() -> Value {
    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["zoneC"]}]}]
    }}}})
}

#[test]
fn node_affinity_policy_honor_vs_ignore() {
    let cache = five_node_cluster();
    // Honor (the default): zoneC is not a domain, the minimum is zoneB's 1.
    // (node5 passes this plugin; NodeAffinity rejects it.)
    let pod = mypod(vec![hard(1, "zone")], not_zone_c());
    assert_eq!(
        feasible(&system(), &pod, &cache),
        names(&["node3", "node4", "node5"])
    );
    // Ignore: empty zoneC counts, the minimum is 0, and only zoneC passes.
    let mut c = hard(1, "zone");
    c["nodeAffinityPolicy"] = json!("Ignore");
    let pod = mypod(vec![c], not_zone_c());
    assert_eq!(feasible(&system(), &pod, &cache), names(&["node5"]));
    // A nodeSelector is honored the same way.
    let cache = testing::cache_with(
        vec![
            testing::node("a1")
                .label("zone", "a")
                .label("disk", "ssd")
                .build(),
            testing::node("b1")
                .label("zone", "b")
                .label("disk", "hdd")
                .build(),
        ],
        vec![foo_pod("p1", "a1")],
    );
    let pod = mypod(
        vec![hard(1, "zone")],
        json!({"nodeSelector": {"disk": "ssd"}}),
    );
    // Only zone a is eligible: min 1, a1 has 1 + 1 - 1 = 1.
    assert_eq!(feasible(&system(), &pod, &cache), names(&["a1", "b1"]));
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    assert_eq!(feasible(&system(), &pod, &cache), names(&["b1"]));
}

#[test]
fn node_taints_policy_honor_vs_ignore() {
    let nodes = || {
        vec![
            zone_node("node1", "zoneA"),
            testing::node("node2")
                .label("zone", "zoneB")
                .taint("dedicated", "gpu", "NoSchedule")
                .build(),
            testing::node("node3")
                .label("zone", "zoneC")
                .taint("maintenance", "", "NoExecute")
                .build(),
            testing::node("node4")
                .label("zone", "zoneD")
                .taint("soft", "", "PreferNoSchedule")
                .build(),
        ]
    };
    let cache = testing::cache_with(
        nodes(),
        vec![
            foo_pod("p1", "node1"),
            foo_pod("p2", "node1"),
            foo_pod("p3", "node4"),
            foo_pod("p4", "node4"),
        ],
    );
    let mut honor = hard(1, "zone");
    honor["nodeTaintsPolicy"] = json!("Honor");
    // Honor: zoneB and zoneC are out (untolerated NoSchedule/NoExecute);
    // PreferNoSchedule does not exclude. Domains A=2, D=2: min 2.
    let pod = mypod(vec![honor.clone()], json!({}));
    assert_eq!(
        feasible(&system(), &pod, &cache),
        names(&["node1", "node2", "node3", "node4"])
    );
    // Ignore (the default): the empty tainted zones count, min 0.
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    assert_eq!(
        feasible(&system(), &pod, &cache),
        names(&["node2", "node3"])
    );
    // Tolerating the NoSchedule taint brings zoneB back (min 0 again, so
    // zones A and D fail).
    let pod = mypod(
        vec![honor],
        json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
    );
    assert_eq!(
        feasible(&system(), &pod, &cache),
        names(&["node2", "node3"])
    );
}

#[test]
fn min_domains_forces_global_minimum_to_zero() {
    let cache = testing::cache_with(
        vec![zone_node("a1", "zoneA"), zone_node("b1", "zoneB")],
        vec![foo_pod("p1", "a1"), foo_pod("p2", "b1")],
    );
    // Two domains with 1 each: skew 1 + 1 - 1 = 1 everywhere.
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    assert_eq!(feasible(&system(), &pod, &cache), names(&["a1", "b1"]));
    let mut c = hard(1, "zone");
    c["minDomains"] = json!(2);
    let pod = mypod(vec![c.clone()], json!({}));
    assert_eq!(feasible(&system(), &pod, &cache), names(&["a1", "b1"]));
    // Fewer domains (2) than minDomains (3): the global minimum is 0 and
    // 1 + 1 - 0 > 1, so no node fits until a third zone appears.
    c["minDomains"] = json!(3);
    let pod = mypod(vec![c.clone()], json!({}));
    assert!(feasible(&system(), &pod, &cache).is_empty());
    // With maxSkew 2 the same nodes fit again.
    c["maxSkew"] = json!(2);
    let pod = mypod(vec![c], json!({}));
    assert_eq!(feasible(&system(), &pod, &cache), names(&["a1", "b1"]));
}

#[test]
fn missing_topology_key_is_unresolvable_and_not_counted() {
    let cache = testing::cache_with(
        vec![
            zone_node("node1", "zoneA"),
            zone_node("node2", "zoneB"),
            // Has a zone but not the `node` key of the second constraint.
            testing::node("node3").label("zone", "zoneB").build(),
            testing::node("bare").build(),
        ],
        vec![
            foo_pod("p1", "node1"),
            // Neither counts: their nodes lack a key of some constraint.
            foo_pod("p2", "node3"),
            foo_pod("p3", "bare"),
        ],
    );
    let pod = mypod(vec![hard(1, "zone"), hard(3, "node")], json!({}));
    let st = filter_all(&system(), &pod, &cache);
    let by_name = |n: &str| {
        st.iter()
            .find(|(x, _)| x == n)
            .map(|(_, s)| s.clone())
            .unwrap()
    };
    for n in ["bare", "node3"] {
        let s = by_name(n);
        assert_eq!(s.code(), Code::UnschedulableAndUnresolvable, "{n}");
        assert_eq!(s.reasons()[0], ERR_NODE_LABEL_NOT_MATCH);
        assert_eq!(
            ERR_NODE_LABEL_NOT_MATCH,
            "node(s) didn't match pod topology spread constraints (missing required label)"
        );
    }
    // zoneA 1, zoneB 0 (node3's pod is not counted): only zoneB fits.
    assert!(!by_name("node1").is_success());
    assert!(by_name("node2").is_success());
    let mut state = CycleState::new();
    system().pre_filter(&mut state, &pod, cache.snapshot());
    assert_eq!(
        inspect::all(&state, 0),
        vec![("zoneA".to_owned(), 1), ("zoneB".to_owned(), 0)]
    );
}

#[test]
fn only_the_pods_namespace_and_live_pods_count() {
    let mut terminating = foo_pod("p-term", "node3");
    terminating.terminating = true;
    let mut finished = foo_pod("p-done", "node3");
    finished.terminal = true;
    let cache = testing::cache_with(
        vec![zone_node("node1", "zoneA"), zone_node("node3", "zoneB")],
        vec![
            foo_pod("p1", "node1"),
            testing::pod("other-ns")
                .namespace("other")
                .label("foo", "bar")
                .on("node3")
                .build(),
            testing::pod("other-ns2")
                .namespace("other")
                .label("foo", "bar")
                .on("node3")
                .build(),
            terminating,
            finished,
        ],
    );
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    let mut state = CycleState::new();
    system().pre_filter(&mut state, &pod, cache.snapshot());
    assert_eq!(
        inspect::all(&state, 0),
        vec![("zoneA".to_owned(), 1), ("zoneB".to_owned(), 0)]
    );
    assert_eq!(feasible(&system(), &pod, &cache), names(&["node3"]));
    // The same pod in namespace `other` sees zoneB 2, zoneA 0.
    let mut pod_other = pod.clone();
    pod_other.namespace = "other".into();
    assert_eq!(feasible(&system(), &pod_other, &cache), names(&["node1"]));
}

#[test]
fn incoming_pod_not_matching_its_selector_adds_nothing() {
    let cache = docs_cluster();
    let pod = testing::pod("mypod")
        .label("app", "other")
        .spec(json!({"topologySpreadConstraints": [hard(1, "zone")]}))
        .build();
    // zoneA: 2 + 0 - 1 = 1 <= 1: every node fits.
    assert_eq!(
        feasible(&system(), &pod, &cache),
        names(&["node1", "node2", "node3", "node4"])
    );
    // A constraint without a selector counts nothing and never rejects.
    let pod = mypod(
        vec![json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"})],
        json!({}),
    );
    assert_eq!(
        feasible(&system(), &pod, &cache),
        names(&["node1", "node2", "node3", "node4"])
    );
}

#[test]
fn match_label_keys_narrow_the_counted_pods() {
    let cache = testing::cache_with(
        vec![zone_node("a1", "zoneA"), zone_node("b1", "zoneB")],
        vec![
            testing::pod("v1a")
                .label("foo", "bar")
                .label("rev", "1")
                .on("a1")
                .build(),
            testing::pod("v1b")
                .label("foo", "bar")
                .label("rev", "1")
                .on("a1")
                .build(),
            testing::pod("v2")
                .label("foo", "bar")
                .label("rev", "2")
                .on("b1")
                .build(),
        ],
    );
    let mut c = hard(1, "zone");
    c["matchLabelKeys"] = json!(["rev"]);
    let pod = testing::pod("mypod")
        .label("foo", "bar")
        .label("rev", "2")
        .spec(json!({"topologySpreadConstraints": [c]}))
        .build();
    // Only rev=2 pods count: zoneA 0, zoneB 1.
    assert_eq!(feasible(&system(), &pod, &cache), names(&["a1"]));
}

#[test]
fn pre_filter_skips_pods_without_hard_constraints() {
    let cache = docs_cluster();
    let pl = system();
    let snap = cache.snapshot();
    for pod in [
        testing::pod("plain").label("foo", "bar").build(),
        owned(testing::pod("owned").label("foo", "bar").build()),
        mypod(vec![soft(1, "zone")], json!({})),
    ] {
        let mut state = CycleState::new();
        assert!(
            pl.pre_filter(&mut state, &pod, snap).status.is_skip(),
            "{}",
            pod.name
        );
    }
    // Without PreFilter state Filter reports an error rather than passing.
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    let s = pl.filter(&CycleState::new(), &pod, snap.nodes().next().unwrap());
    assert_eq!(s.code(), Code::Error);
}

#[test]
fn list_defaults_apply_to_owned_pods_without_constraints() {
    let pl = with_args(json!({"defaultingType": "List", "defaultConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
    ]}));
    let cache = docs_cluster();
    // Derived selector = the pod's labels: foo=bar.
    let pod = owned(testing::pod("mypod").label("foo", "bar").build());
    assert_eq!(feasible(&pl, &pod, &cache), names(&["node3", "node4"]));
    // Per-pod labels are left out of the derived selector.
    let pod = owned(
        testing::pod("web-0")
            .label("foo", "bar")
            .label("statefulset.kubernetes.io/pod-name", "web-0")
            .label("controller-revision-hash", "abc")
            .build(),
    );
    assert_eq!(feasible(&pl, &pod, &cache), names(&["node3", "node4"]));
    // No owner, or nothing to select on: no default constraints.
    let snap = cache.snapshot();
    for pod in [
        testing::pod("bare").label("foo", "bar").build(),
        owned(testing::pod("unlabelled").build()),
    ] {
        let mut state = CycleState::new();
        assert!(
            pl.pre_filter(&mut state, &pod, snap).status.is_skip(),
            "{}",
            pod.name
        );
    }
    // A pod's own constraints replace the defaults entirely.
    let pod = owned(mypod(vec![soft(1, "zone")], json!({})));
    let mut state = CycleState::new();
    assert!(pl.pre_filter(&mut state, &pod, snap).status.is_skip());
}

#[test]
fn scoring_prefers_the_emptier_domain() {
    let cache = docs_cluster();
    let pod = mypod(vec![soft(1, "zone")], json!({}));
    // Domains zoneA (2) and zoneB (1), weight ln(2 + 2).
    let w = 4f64.ln();
    let (raw, norm) = score_all(&system(), &pod, &cache);
    let a = (2.0 * w).round() as i64;
    let b = w.round() as i64;
    assert_eq!(
        raw,
        pairs(&[("node1", a), ("node2", a), ("node3", b), ("node4", b)])
    );
    // 100 * (max + min - s) / max.
    let na = 100 * (a + b - a) / a;
    assert_eq!(
        norm,
        pairs(&[("node1", na), ("node2", na), ("node3", 100), ("node4", 100)])
    );
    assert!(norm[2].1 > norm[0].1);
}

#[test]
fn scoring_follows_kube_formula_for_hostname() {
    // n1 1 pod, n2 2 pods, n3 none: hostname weight ln(3 + 2).
    let nodes = vec![
        testing::node("n1").build(),
        testing::node("n2").build(),
        testing::node("n3").build(),
    ];
    let pods = vec![
        foo_pod("p1", "n1"),
        foo_pod("p2", "n2"),
        foo_pod("p3", "n2"),
    ];
    let cache = testing::cache_with(nodes, pods);
    let pod = mypod(vec![soft(1, LABEL_HOSTNAME)], json!({}));
    let (raw, norm) = score_all(&system(), &pod, &cache);
    // round(1.609) = 2, round(3.219) = 3, 0.
    assert_eq!(raw, pairs(&[("n1", 2), ("n2", 3), ("n3", 0)]));
    assert_eq!(norm, pairs(&[("n1", 33), ("n2", 0), ("n3", 100)]));
    // maxSkew 2 adds 1 to every raw score: 3, 4, 1 -> 100*(5-s)/4.
    let pod = mypod(vec![soft(2, LABEL_HOSTNAME)], json!({}));
    let (raw, norm) = score_all(&system(), &pod, &cache);
    assert_eq!(raw, pairs(&[("n1", 3), ("n2", 4), ("n3", 1)]));
    assert_eq!(norm, pairs(&[("n1", 50), ("n2", 25), ("n3", 100)]));
    // No matching pod anywhere: every raw score is 0 and every node gets 100.
    let pod = testing::pod("x")
        .spec(json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": LABEL_HOSTNAME,
            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"none": "x"}}}]}))
        .build();
    let (_, norm) = score_all(&system(), &pod, &cache);
    assert_eq!(norm, pairs(&[("n1", 100), ("n2", 100), ("n3", 100)]));
}

#[test]
fn scoring_ignores_nodes_missing_a_key() {
    let cache = testing::cache_with(
        vec![
            zone_node("a1", "zoneA"),
            zone_node("b1", "zoneB"),
            testing::node("bare").build(),
        ],
        vec![foo_pod("p1", "a1"), foo_pod("p2", "bare")],
    );
    let pod = mypod(vec![soft(1, "zone")], json!({}));
    let (raw, norm) = score_all(&system(), &pod, &cache);
    // Two domains (bare is ignored, raw -1): a1 = round(ln 4) = 1, b1 = 0.
    // b1 and bare normalize differently, so their raw scores differ too.
    assert_eq!(raw, pairs(&[("a1", 1), ("b1", 0), ("bare", -1)]));
    assert_eq!(norm, pairs(&[("a1", 0), ("b1", 100), ("bare", 0)]));
}

fn web_cluster() -> Cache {
    let node = |n: &str, zone: Option<&str>| {
        let b = testing::node(n);
        match zone {
            Some(z) => b.label(LABEL_ZONE, z).build(),
            None => b.build(),
        }
    };
    let web = |n: &str, on: &str| owned(testing::pod(n).label("app", "web").on(on).build());
    testing::cache_with(
        vec![
            node("a1", Some("a")),
            node("a2", Some("a")),
            node("b1", Some("b")),
            node("c1", None),
        ],
        vec![web("w1", "a1"), web("w2", "a1"), web("w3", "b1")],
    )
}

#[test]
fn system_defaults_score_owned_pods() {
    let cache = web_cluster();
    let pod = owned(testing::pod("w4").label("app", "web").build());
    let (raw, norm) = score_all(&system(), &pod, &cache);
    // Hostname (maxSkew 3): weight ln(4 + 2); zone (maxSkew 5): domains a,
    // b and "" (c1 has no zone but is not ignored under System), ln(3 + 2).
    // a1: 2*1.792+2 + 2*1.609+4 = 12.80; a2: 2 + 7.22 = 9.22;
    // b1: 1.792+2 + 1.609+4 = 9.40; c1: hostname only, 2.
    assert_eq!(raw, pairs(&[("a1", 13), ("a2", 9), ("b1", 9), ("c1", 2)]));
    assert_eq!(
        norm,
        pairs(&[("a1", 15), ("a2", 46), ("b1", 46), ("c1", 100)])
    );
    // Ownerless pods get no default spreading.
    let bare = testing::pod("lonely").label("app", "web").build();
    let mut state = CycleState::new();
    let ids = cache.snapshot().node_ids().to_vec();
    assert!(
        system()
            .pre_score(&mut state, &bare, cache.snapshot(), &ids)
            .is_skip()
    );
    // Pods with only hard constraints of their own get no soft scoring.
    let hard_only = owned(mypod(vec![hard(1, "zone")], json!({})));
    assert!(
        system()
            .pre_score(&mut state, &hard_only, cache.snapshot(), &ids)
            .is_skip()
    );
}

#[test]
fn list_defaults_require_every_key_when_scoring() {
    let pl = with_args(json!({"defaultingType": "List", "defaultConstraints": [
        {"maxSkew": 3, "topologyKey": LABEL_HOSTNAME, "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 5, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "ScheduleAnyway"}
    ]}));
    let cache = web_cluster();
    let pod = owned(testing::pod("w4").label("app", "web").build());
    let (raw, norm) = score_all(&pl, &pod, &cache);
    // c1 lacks the zone key and is ignored: hostname ln(3 + 2), zone ln(2 + 2).
    // a1: 3.219+2 + 2.773+4 = 11.99; a2: 2 + 6.77 = 8.77; b1: 3.609 + 5.386 = 9.00.
    // Ignored c1 scores -1 raw (see `score.rs`), 0 normalized.
    assert_eq!(raw, pairs(&[("a1", 12), ("a2", 9), ("b1", 9), ("c1", -1)]));
    assert_eq!(
        norm,
        pairs(&[("a1", 75), ("a2", 100), ("b1", 100), ("c1", 0)])
    );
}

#[test]
fn score_only_counts_domains_of_feasible_nodes() {
    // b1 is not feasible: zone b is not a domain, so weight is ln(1 + 2) and
    // pods in zone b are not counted anywhere.
    let cache = testing::cache_with(
        vec![
            zone_node("a1", "zoneA"),
            zone_node("a2", "zoneA"),
            zone_node("b1", "zoneB"),
        ],
        vec![
            foo_pod("p1", "a1"),
            foo_pod("p2", "a1"),
            foo_pod("p3", "a2"),
            foo_pod("p4", "b1"),
        ],
    );
    let snap = cache.snapshot();
    let feasible: Vec<NodeId> = snap
        .nodes()
        .filter(|n| n.name.as_str() != "b1")
        .map(|n| n.id)
        .collect();
    let pod = mypod(vec![soft(1, "zone")], json!({}));
    let pl = system();
    let mut state = CycleState::new();
    assert!(pl.pre_score(&mut state, &pod, snap, &feasible).is_success());
    let s = pl.score(&state, &pod, snap.node(feasible[0])).unwrap();
    // round(3 * ln 3) = 3; with zone b as a domain it would be round(3 * ln 4) = 4.
    assert_eq!(s, 3);
}

#[test]
fn kube_stale_critical_path_case_stays_exact() {
    // Domains A=0, B=1, C=1. Adding twice to A then once to B leaves the
    // true minimum at C's 1 (kube-scheduler's two-path cache reports 2).
    let cache = testing::cache_with(
        vec![
            zone_node("a1", "A"),
            zone_node("b1", "B"),
            zone_node("c1", "C"),
        ],
        vec![foo_pod("p1", "b1"), foo_pod("p2", "c1")],
    );
    let snap = cache.snapshot();
    let pl = system();
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    let mut state = CycleState::new();
    pl.pre_filter(&mut state, &pod, snap);
    let node = |n: &str| snap.node_by_name(n.into()).unwrap();
    assert_eq!(inspect::min_and_len(&state, 0), (0, 3));
    pl.add_pod(&mut state, &pod, &foo_pod("x1", "a1"), node("a1"));
    assert_eq!(inspect::min_and_len(&state, 0), (1, 3));
    pl.add_pod(&mut state, &pod, &foo_pod("x2", "a1"), node("a1"));
    assert_eq!(inspect::min_and_len(&state, 0), (1, 3));
    pl.add_pod(&mut state, &pod, &foo_pod("x3", "b1"), node("b1"));
    assert_eq!(inspect::min_and_len(&state, 0), (1, 3));
    // c1: 1 + 1 - 1 = 1 fits; a1: 2 + 1 - 1 = 2 does not.
    assert!(pl.filter(&state, &pod, node("c1")).is_success());
    assert!(!pl.filter(&state, &pod, node("a1")).is_success());
    pl.remove_pod(&mut state, &pod, &foo_pod("p2", "c1"), node("c1"));
    assert_eq!(inspect::min_and_len(&state, 0), (0, 3));
    // A clone is independent of the original.
    let before = inspect::all(&state, 0);
    let mut copy = state.clone();
    pl.remove_pod(&mut copy, &pod, &foo_pod("x1", "a1"), node("a1"));
    assert_eq!(inspect::all(&state, 0), before);
    assert_ne!(inspect::all(&copy, 0), before);
}

#[test]
fn extensions_ignore_what_prefilter_does_not_count() {
    let cache = docs_cluster();
    let snap = cache.snapshot();
    let pl = system();
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    let mut state = CycleState::new();
    pl.pre_filter(&mut state, &pod, snap);
    let before = inspect::all(&state, 0);
    let node4 = snap.node_by_name("node4".into()).unwrap();
    let other_ns = testing::pod("o")
        .namespace("other")
        .label("foo", "bar")
        .build();
    let mut terminating = foo_pod("t", "node4");
    terminating.terminating = true;
    let unmatched = testing::pod("u").label("foo", "baz").build();
    for p in [&other_ns, &terminating, &unmatched] {
        assert!(pl.add_pod(&mut state, &pod, p, node4).is_success());
    }
    assert_eq!(inspect::all(&state, 0), before);
    assert!(pl.has_extensions());
    // Without state (PreFilter skipped) the extensions do nothing.
    let mut empty = CycleState::new();
    assert!(pl.add_pod(&mut empty, &pod, &other_ns, node4).is_success());
}

#[test]
fn events_and_hints() {
    use strata_scheduler::sdk::{ActionType, ClusterEvent, EventObject, EventResource};
    let pl = system();
    let ev = pl.events_to_register();
    assert!(ev.iter().any(|e| e.resource == EventResource::AssignedPod
        && e.actions.intersects(ActionType::DELETE)
        && e.actions.intersects(ActionType::UPDATE_POD_LABEL)));
    assert!(ev.iter().any(|e| e.resource == EventResource::Node
        && e.actions.intersects(ActionType::UPDATE_NODE_LABEL)
        && e.actions.intersects(ActionType::UPDATE_NODE_TAINT)));
    assert!(!pl.as_filter().unwrap().is_node_local());
    assert!(!pl.as_score().unwrap().is_node_local());

    let pod = mypod(vec![hard(1, "zone")], json!({}));
    let pod_ev = |old: Option<&PodInfo>, new: Option<&PodInfo>, action| {
        let e = ClusterEvent {
            resource: EventResource::AssignedPod,
            action,
            object: EventObject::Pod { old, new },
        };
        pl.queueing_hint(&pod, &e)
    };
    let matching = foo_pod("m", "node1");
    let other = testing::pod("o").label("foo", "baz").on("node1").build();
    let other_ns = testing::pod("n")
        .namespace("x")
        .label("foo", "bar")
        .on("node1")
        .build();
    assert_eq!(
        pod_ev(Some(&matching), None, ActionType::DELETE),
        QueueingHint::Queue
    );
    assert_eq!(
        pod_ev(None, Some(&matching), ActionType::ADD),
        QueueingHint::Queue
    );
    assert_eq!(
        pod_ev(Some(&other), None, ActionType::DELETE),
        QueueingHint::Skip
    );
    assert_eq!(
        pod_ev(Some(&other_ns), None, ActionType::DELETE),
        QueueingHint::Skip
    );
    assert_eq!(
        pod_ev(Some(&other), Some(&matching), ActionType::UPDATE_POD_LABEL),
        QueueingHint::Queue
    );
    let also_other = testing::pod("o").label("foo", "qux").on("node1").build();
    assert_eq!(
        pod_ev(
            Some(&other),
            Some(&also_other),
            ActionType::UPDATE_POD_LABEL
        ),
        QueueingHint::Skip
    );

    let cache = testing::cache_with(
        vec![
            zone_node("z1", "zoneA"),
            zone_node("z2", "zoneB"),
            testing::node("bare").build(),
            testing::node("tainted")
                .label("zone", "zoneA")
                .taint("k", "v", "NoSchedule")
                .build(),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let n = |name: &str| snap.node_by_name(name.into()).unwrap();
    let node_ev = |old: Option<&NodeInfo>, new: Option<&NodeInfo>| {
        let e = ClusterEvent {
            resource: EventResource::Node,
            action: ActionType::UPDATE_NODE_LABEL,
            object: EventObject::Node { old, new },
        };
        pl.queueing_hint(&pod, &e)
    };
    assert_eq!(node_ev(None, Some(n("z1"))), QueueingHint::Queue);
    assert_eq!(node_ev(None, Some(n("bare"))), QueueingHint::Skip);
    assert_eq!(node_ev(Some(n("z1")), None), QueueingHint::Queue);
    assert_eq!(node_ev(Some(n("bare")), None), QueueingHint::Skip);
    // Gaining the key, or changing its value, may help.
    assert_eq!(node_ev(Some(n("bare")), Some(n("z1"))), QueueingHint::Queue);
    assert_eq!(node_ev(Some(n("z1")), Some(n("z2"))), QueueingHint::Queue);
    // A taint change matters only to constraints that honor taints.
    assert_eq!(
        node_ev(Some(n("z1")), Some(n("tainted"))),
        QueueingHint::Skip
    );
    let mut c = hard(1, "zone");
    c["nodeTaintsPolicy"] = json!("Honor");
    let honor = mypod(vec![c], json!({}));
    let e = ClusterEvent {
        resource: EventResource::Node,
        action: ActionType::UPDATE_NODE_TAINT,
        object: EventObject::Node {
            old: Some(n("z1")),
            new: Some(n("tainted")),
        },
    };
    assert_eq!(pl.queueing_hint(&honor, &e), QueueingHint::Queue);
    // Any label change may matter when the pod's node affinity is honored.
    let with_selector = mypod(
        vec![hard(1, "zone")],
        json!({"nodeSelector": {"disk": "ssd"}}),
    );
    assert_eq!(pl.queueing_hint(&with_selector, &e), QueueingHint::Queue);
}

#[test]
fn factory_rejects_bad_args() {
    // The factory parses with PodTopologySpreadArgs::parse; spot-check the
    // errors the brief calls out.
    for (v, field) in [
        (
            json!({"defaultingType": "List", "defaultConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": {"a": "b"}}}]}),
            "defaultConstraints[0].labelSelector",
        ),
        (
            json!({"defaultingType": "List", "defaultConstraints": [
                {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]}),
            "defaultConstraints[0].maxSkew",
        ),
        (json!({"defaultingType": "Sometimes"}), "defaultingType"),
    ] {
        let e = PodTopologySpreadArgs::parse(Some(&v)).unwrap_err();
        assert_eq!(e.field, field);
    }
}

// ---- PreFilter extensions agree with a fresh PreFilter -------------------

/// One pod in the property test: node index, matches the selector, in the
/// incoming pod's namespace, terminating.
#[derive(Clone, Debug)]
struct Spec {
    node: usize,
    matching: bool,
    same_ns: bool,
    terminating: bool,
}

const NODES: usize = 7;

fn prop_nodes() -> Vec<corev1::Node> {
    vec![
        testing::node("n0")
            .label("zone", "A")
            .label("disk", "ssd")
            .build(),
        testing::node("n1")
            .label("zone", "A")
            .label("disk", "ssd")
            .build(),
        testing::node("n2")
            .label("zone", "B")
            .label("disk", "ssd")
            .build(),
        testing::node("n3")
            .label("zone", "B")
            .label("disk", "ssd")
            .taint("dedicated", "x", "NoSchedule")
            .build(),
        testing::node("n4")
            .label("zone", "C")
            .label("disk", "hdd")
            .build(),
        testing::node("n5")
            .label("zone", "D")
            .label("disk", "ssd")
            .build(),
        // No zone: never counted.
        testing::node("n6").label("disk", "ssd").build(),
    ]
}

fn prop_pod(i: usize, s: &Spec) -> PodInfo {
    let mut p = testing::pod(&format!("q{i}"))
        .namespace(if s.same_ns { "default" } else { "other" })
        .label("foo", if s.matching { "bar" } else { "baz" })
        .on(&format!("n{}", s.node))
        .build();
    p.terminating = s.terminating;
    p
}

fn prop_incoming() -> PodInfo {
    let mut zone = hard(1, "zone");
    zone["nodeTaintsPolicy"] = json!("Honor");
    zone["minDomains"] = json!(3);
    mypod(
        vec![zone, hard(2, LABEL_HOSTNAME)],
        json!({"nodeSelector": {"disk": "ssd"}}),
    )
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        0..NODES,
        any::<bool>(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(node, matching, same_ns, terminating)| Spec {
            node,
            matching,
            same_ns,
            terminating,
        })
}

/// Domains, minimum and Filter verdicts the plugin sees.
fn observe(
    pl: &PodTopologySpread,
    state: &CycleState,
    pod: &PodInfo,
    cache: &Cache,
) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..2 {
        out.push(format!(
            "{:?} {:?}",
            inspect::all(state, i),
            inspect::min_and_len(state, i)
        ));
    }
    for n in cache.snapshot().nodes() {
        out.push(format!("{} {:?}", n.name, pl.filter(state, pod, n).code()));
    }
    out
}

proptest! {
    #[test]
    fn extensions_match_fresh_pre_filter(
        initial in prop::collection::vec(spec_strategy(), 0..12),
        ops in prop::collection::vec((any::<bool>(), any::<usize>(), spec_strategy()), 1..10),
    ) {
        let pl = system();
        let pod = prop_incoming();
        let mut placed: Vec<PodInfo> = initial.iter().enumerate().map(|(i, s)| prop_pod(i, s)).collect();
        let cache = testing::cache_with(prop_nodes(), placed.clone());
        let mut state = CycleState::new();
        prop_assert!(pl.pre_filter(&mut state, &pod, cache.snapshot()).status.is_success());
        let mut next = initial.len();
        for (add, pick, spec) in ops {
            if add || placed.is_empty() {
                let p = prop_pod(next, &spec);
                next += 1;
                let node = cache.snapshot().node_by_name(format!("n{}", spec.node).as_str().into()).unwrap();
                pl.add_pod(&mut state, &pod, &p, node);
                placed.push(p);
            } else {
                let p = placed.remove(pick % placed.len());
                let name = p.bound_node.unwrap();
                let node = cache.snapshot().node_by_name(name).unwrap();
                pl.remove_pod(&mut state, &pod, &p, node);
            }
            let fresh_cache = testing::cache_with(prop_nodes(), placed.clone());
            let mut fresh = CycleState::new();
            pl.pre_filter(&mut fresh, &pod, fresh_cache.snapshot());
            prop_assert_eq!(
                observe(&pl, &state, &pod, &fresh_cache),
                observe(&pl, &fresh, &pod, &fresh_cache)
            );
        }
    }
}

/// Timing at the target scale: 16,000 nodes in 16 zones, 100,000 pods of
/// 50 workloads. Run with `cargo test --release -p strata-plugins --lib
/// pod_topology_spread::tests::scale -- --ignored --nocapture`.
#[test]
#[ignore]
fn scale_16k_nodes_100k_pods() {
    use std::time::Instant;
    use strata_scheduler::sdk::Sym;
    let mut cache = Cache::new();
    for i in 0..16_000 {
        let n = testing::node(&format!("n{i}"))
            .label(LABEL_ZONE, &format!("z{}", i % 16))
            .build();
        cache.upsert_node(&n).unwrap();
    }
    let templates: Vec<PodInfo> = (0..50)
        .map(|w| {
            owned(
                testing::pod("t")
                    .label("app", &format!("web-{w}"))
                    .on("n0")
                    .build(),
            )
        })
        .collect();
    for i in 0..100_000usize {
        let mut p = templates[i % 50].with_identity(&format!("u{i}"), &format!("p{i}"));
        p.bound_node = Some(Sym::new(&format!("n{}", (i * 7919) % 16_000)));
        cache.add_pod(std::sync::Arc::new(p));
    }
    let snap = cache.snapshot();
    let ids = snap.node_ids().to_vec();
    let pl = system();
    let incoming = owned(testing::pod("new").label("app", "web-3").build());
    let hard_pod = mypod(
        vec![hard(1, LABEL_ZONE), hard(1, LABEL_HOSTNAME)],
        json!({}),
    );
    let rounds = 20;
    let t = Instant::now();
    for _ in 0..rounds {
        let mut state = CycleState::new();
        assert!(pl.pre_score(&mut state, &incoming, snap, &ids).is_success());
        let mut scores: Vec<NodeScore> = ids
            .iter()
            .map(|&id| NodeScore {
                node: id,
                score: pl.score(&state, &incoming, snap.node(id)).unwrap(),
            })
            .collect();
        pl.normalize(&state, &incoming, &mut scores);
    }
    eprintln!(
        "system-default PreScore+Score+Normalize: {:?}/cycle",
        t.elapsed() / rounds
    );
    let t = Instant::now();
    for _ in 0..rounds {
        let mut state = CycleState::new();
        pl.pre_filter(&mut state, &hard_pod, snap);
        let ok = snap
            .nodes()
            .filter(|n| pl.filter(&state, &hard_pod, n).is_success())
            .count();
        assert!(ok > 0);
    }
    eprintln!(
        "hard zone+hostname PreFilter+Filter: {:?}/cycle",
        t.elapsed() / rounds
    );
    let mut state = CycleState::new();
    pl.pre_filter(&mut state, &hard_pod, snap);
    let t = Instant::now();
    for id in &ids {
        let mut copy = state.clone();
        let node = snap.node(*id);
        if let Some(p) = node.pods.first() {
            pl.remove_pod(&mut copy, &hard_pod, p, node);
        }
        let _ = pl.filter(&copy, &hard_pod, node);
    }
    eprintln!(
        "what-if clone+remove+filter on every node: {:?} total",
        t.elapsed()
    );
}

// ---- The memo equals a fresh count through any cluster history -----------

/// A change to the cluster, or a check of the memo.
#[derive(Clone, Debug)]
enum Step {
    AddPod(Spec),
    RemovePod(prop::sample::Index),
    /// Node, new zone (None removes the label), disk ssd, tainted.
    Relabel(usize, Option<usize>, bool, bool),
    RemoveNode(usize),
    /// Checks incoming pod kind `k`.
    Check(usize),
}

fn memo_node(i: usize, zone: Option<usize>, ssd: bool, tainted: bool) -> corev1::Node {
    let name = format!("n{i}");
    let mut b = testing::node(&name).label("disk", if ssd { "ssd" } else { "hdd" });
    if let Some(z) = zone {
        b = b.label("zone", ["A", "B", "C"][z]);
    }
    if tainted {
        b = b.taint("dedicated", "x", "NoSchedule");
    }
    b.build()
}

fn memo_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => spec_strategy().prop_map(Step::AddPod),
        2 => any::<prop::sample::Index>().prop_map(Step::RemovePod),
        2 => (0..NODES + 2, prop::option::of(0..3usize), prop::bool::weighted(0.7), prop::bool::weighted(0.2))
            .prop_map(|(n, z, s, t)| Step::Relabel(n, z, s, t)),
        1 => (0..NODES + 2).prop_map(Step::RemoveNode),
        4 => (0..5usize).prop_map(Step::Check),
    ]
}

/// Incoming pods of several kinds: hard zone (taints honored, minDomains)
/// and hostname with a nodeSelector; soft zone and hostname; an owned pod
/// under the System defaults (nodes without a zone still scored); a hard
/// constraint with another selector and node affinity ignored; one whose
/// selector has no `In` requirement.
fn memo_kinds() -> Vec<PodInfo> {
    let mut other = hard(1, "zone");
    other["labelSelector"] = json!({"matchLabels": {"foo": "baz"}});
    other["nodeAffinityPolicy"] = json!("Ignore");
    let mut exists = hard(1, "zone");
    exists["labelSelector"] = json!({"matchExpressions": [{"key": "foo", "operator": "Exists"}]});
    vec![
        prop_incoming(),
        mypod(
            vec![soft(1, "zone"), soft(2, LABEL_HOSTNAME)],
            json!({"nodeSelector": {"disk": "ssd"}}),
        ),
        owned(testing::pod("sys").label("foo", "bar").build()),
        mypod(
            vec![other, soft(1, "zone")],
            json!({"nodeSelector": {"disk": "hdd"}}),
        ),
        // No `In` requirement: a new entry walks every node.
        mypod(vec![exists, soft(1, "zone")], json!({})),
    ]
}

/// Filter verdicts (or "skip") on every node.
fn verdicts(pl: &PodTopologySpread, pod: &PodInfo, cache: &Cache) -> Vec<String> {
    let snap = cache.snapshot();
    let mut state = CycleState::new();
    let r = pl.pre_filter(&mut state, pod, snap);
    if r.status.is_skip() {
        return vec!["skip".into()];
    }
    let mut out: Vec<String> = snap
        .nodes()
        .map(|n| format!("{} {:?}", n.name, pl.filter(&state, pod, n).code()))
        .collect();
    // The per-domain verdicts the engine's fast path reads agree with
    // Filter on every node.
    let layers = pl
        .domain_verdicts(&state)
        .expect("domain verdicts after PreFilter");
    for n in snap.nodes() {
        let by_domain = layers.iter().all(|l| l.passes(n.id.index()));
        assert_eq!(
            by_domain,
            pl.filter(&state, pod, n).is_success(),
            "node {} domain verdicts disagree with Filter",
            n.name
        );
    }
    out.sort();
    out
}

/// Raw and normalized scores over every node (empty on skip).
fn memo_scores(pl: &PodTopologySpread, pod: &PodInfo, cache: &Cache) -> (Named, Named) {
    let snap = cache.snapshot();
    let mut state = CycleState::new();
    let ids: Vec<NodeId> = snap.node_ids().to_vec();
    if ids.is_empty() || pl.pre_score(&mut state, pod, snap, &ids).is_skip() {
        return (Vec::new(), Vec::new());
    }
    score_all(pl, pod, cache)
}

/// Applies one history step to `cache` (pods added or removed, nodes
/// relabelled or removed); returns the kind to check for a `Check` step.
fn apply_step(
    cache: &mut strata_scheduler::cache::Cache,
    uids: &mut Vec<std::sync::Arc<str>>,
    i: usize,
    st: &Step,
) -> Option<usize> {
    match st {
        Step::AddPod(s) => {
            let p = prop_pod(i, s);
            if cache
                .snapshot()
                .node_by_name(p.bound_node.unwrap())
                .is_some()
            {
                uids.push(p.uid.clone());
                cache.add_pod(std::sync::Arc::new(p));
            }
        }
        Step::RemovePod(ix) => {
            if !uids.is_empty() {
                let uid = uids.swap_remove(ix.index(uids.len()));
                cache.remove_pod(&uid);
            }
        }
        Step::Relabel(n, z, ssd, t) => {
            cache.upsert_node(&memo_node(*n, *z, *ssd, *t)).unwrap();
        }
        Step::RemoveNode(n) => {
            cache.remove_node(format!("n{n}").as_str().into());
        }
        Step::Check(k) => return Some(*k),
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Through any history of pods added and removed and nodes relabelled,
    /// tainted, added and removed, the memo's counts for each kind of
    /// incoming pod equal a fresh count over every node, and PreFilter,
    /// Filter, PreScore and Score answer as a plugin with no memo yet.
    #[test]
    fn memo_matches_fresh_count(steps in prop::collection::vec(memo_step(), 1..40)) {
        let pl = system();
        let kinds = memo_kinds();
        let mut cache = testing::cache_with(prop_nodes(), vec![]);
        let mut uids: Vec<std::sync::Arc<str>> = Vec::new();
        let mut signatures = vec![rustc_hash::FxHashMap::default(); kinds.len()];
        for (i, st) in steps.iter().enumerate() {
            if let Some(k) = apply_step(&mut cache, &mut uids, i, st) {
                let pod = &kinds[k];
                let snap = cache.snapshot();
                // What the engine's fast path relies on to keep scores.
                let checked = crate::common::testkit::check_domain_scores(&pl, pod, snap, &signatures[k]);
                prop_assert!(checked.is_ok(), "step {}: {:?}", i, checked.err());
                signatures[k] = checked.unwrap_or_default();
                for hard in [true, false] {
                    let cs = pl.defaults.constraints(pod, hard);
                    if cs.is_empty() {
                        continue;
                    }
                    let require_all = hard || !pod.spec.spread_constraints.is_empty();
                    // A memo that never saw the history, so its entry is
                    // new (counted from the label index's candidates, or
                    // by the walk).
                    let fresh = memo::Memo::default().with(pod, &cs, require_all, snap, |e, v| e.by_value(v));
                    prop_assert_eq!(
                        pl.memo.with(pod, &cs, require_all, snap, |e, v| e.by_value(v)),
                        fresh,
                        "step {} kind {} hard {}", i, k, hard
                    );
                    if hard {
                        let want = filter::count_domains(pod, &cs, snap);
                        let got: Vec<_> = pl.memo.with(pod, &cs, true, snap, |e, v| {
                            (0..cs.len()).map(|j| e.totals_by_value(j, &v[j])).collect()
                        });
                        prop_assert_eq!(got, want, "step {} kind {}", i, k);
                    }
                }
                let new = system();
                prop_assert_eq!(verdicts(&pl, pod, &cache), verdicts(&new, pod, &cache), "step {}", i);
                prop_assert_eq!(memo_scores(&pl, pod, &cache), memo_scores(&new, pod, &cache), "step {}", i);
            }
        }
        prop_assert!(pl.memo.len() <= memo::CAPACITY);
    }
}

/// One plugin used on two clusters whose nodes have identical generations
/// but different pods must not mix them up; the memo stays bounded.
#[test]
fn memo_never_crosses_snapshots() {
    let pl = system();
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    for round in 0..3 {
        let a = testing::cache_with(
            vec![zone_node("n1", "A"), zone_node("n2", "B")],
            vec![foo_pod("x", "n1")],
        );
        assert_eq!(feasible(&pl, &pod, &a), names(&["n2"]), "round {round}");
        drop(a);
        let b = testing::cache_with(
            vec![zone_node("n1", "A"), zone_node("n2", "B")],
            vec![foo_pod("x", "n2")],
        );
        assert_eq!(feasible(&pl, &pod, &b), names(&["n1"]), "round {round}");
    }
    let cache = testing::cache_with(vec![zone_node("n1", "A")], vec![]);
    for i in 0..3 * memo::CAPACITY {
        let q = mypod(vec![hard(1, &format!("key-{i}"))], json!({}));
        let mut state = CycleState::new();
        let _ = pl.pre_filter(&mut state, &q, cache.snapshot());
    }
    assert_eq!(pl.memo.len(), memo::CAPACITY);
    assert_eq!(pl.memo.shapes(), memo::SHAPE_CAPACITY);
}

/// Workloads that differ only in their selector (one Deployment each)
/// share the memo's per-node shape; each keeps its own counts.
#[test]
fn selectors_share_one_shape() {
    let pl = system();
    let cache = testing::cache_with(
        vec![zone_node("n1", "A"), zone_node("n2", "B")],
        vec![foo_pod("x", "n1")],
    );
    for i in 0..20 {
        let mut c = hard(1, "zone");
        c["labelSelector"] = json!({"matchLabels": {"app": format!("svc-{i}")}});
        let q = mypod(vec![c], json!({}));
        let mut state = CycleState::new();
        let _ = pl.pre_filter(&mut state, &q, cache.snapshot());
    }
    assert_eq!(pl.memo.shapes(), 1);
    assert_eq!(pl.memo.len(), memo::CAPACITY);
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    assert_eq!(feasible(&pl, &pod, &cache), names(&["n2"]));
}

// ---- The dense-domain Filter and Score equal a from-scratch reference ----

/// Filter verdicts computed from scratch by value, the way the plugin did
/// before domains were dense ids: the node's label value, a count per value
/// over every node, the skew formula.
fn reference_verdicts(pl: &PodTopologySpread, pod: &PodInfo, cache: &Cache) -> Vec<String> {
    let snap = cache.snapshot();
    let cs = pl.defaults.constraints(pod, true);
    if cs.is_empty() {
        return vec!["skip".into()];
    }
    let counts = filter::count_domains(pod, &cs, snap);
    let mut out: Vec<String> = snap
        .nodes()
        .map(|n| {
            let mut code = Code::Success;
            for (i, c) in cs.iter().enumerate() {
                let Some(v) = n.labels.get(c.key) else {
                    code = Code::UnschedulableAndUnresolvable;
                    break;
                };
                let len = counts[i].len();
                let min = counts[i].values().copied().min().unwrap_or(0);
                let global_min = if len == 0 || (len as i64) < i64::from(c.min_domains) {
                    0
                } else {
                    min
                };
                let me = i64::from(c.matches(&pod.labels));
                let skew = counts[i].get(&v).copied().unwrap_or(0) + me - global_min;
                if skew > i64::from(c.max_skew) {
                    code = Code::Unschedulable;
                    break;
                }
            }
            format!("{} {:?}", n.name, code)
        })
        .collect();
    out.sort();
    out
}

/// Raw and normalized scores over every node computed from scratch by value
/// (kube-scheduler's rules as `score.rs` describes them), every node
/// feasible.
fn reference_scores(pl: &PodTopologySpread, pod: &PodInfo, cache: &Cache) -> (Named, Named) {
    let snap = cache.snapshot();
    let cs = pl.defaults.constraints(pod, false);
    if snap.num_nodes() == 0 || cs.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let require_all = !pod.spec.spread_constraints.is_empty() || !pl.defaults.system;
    let host = Sym::new(LABEL_HOSTNAME);
    let checks = common::InclusionChecks::new(pod, &cs);
    let takes_part = |n: &NodeInfo| !require_all || common::has_all_keys(n, &cs);
    // Matching pods of constraint i on a node taking part.
    let on_node = |n: &NodeInfo, c: &common::Constraint| -> i64 {
        n.pods
            .iter()
            .filter(|p| common::countable(p, pod.namespace) && c.matches(&p.labels))
            .count() as i64
    };
    let value = |n: &NodeInfo, c: &common::Constraint| n.labels.get(c.key).unwrap_or(Sym::EMPTY);
    let scored: Vec<&NodeInfo> = snap.nodes().filter(|n| takes_part(n)).collect();
    let mut raw: Vec<(String, i64, bool)> = Vec::new();
    for n in snap.nodes() {
        if !takes_part(n) {
            raw.push((n.name.to_string(), -1, true));
            continue;
        }
        let mut score = 0.0f64;
        for c in &cs {
            let Some(v) = n.labels.get(c.key) else {
                continue;
            };
            let (count, size) = if c.key == host {
                (on_node(n, c), scored.len())
            } else {
                let total: i64 = snap
                    .nodes()
                    .filter(|m| takes_part(m) && c.includes(checks.of(pod, m)) && value(m, c) == v)
                    .map(|m| on_node(m, c))
                    .sum();
                let mut domains: Vec<Sym> = scored.iter().map(|m| value(m, c)).collect();
                domains.sort_unstable_by_key(|s| s.as_str());
                domains.dedup();
                (total, domains.len())
            };
            score += count as f64 * ((size + 2) as f64).ln() + f64::from(c.max_skew - 1);
        }
        raw.push((n.name.to_string(), score.round() as i64, false));
    }
    let min = raw
        .iter()
        .filter(|r| !r.2)
        .map(|r| r.1)
        .min()
        .unwrap_or(i64::MAX);
    let max = raw
        .iter()
        .filter(|r| !r.2)
        .map(|r| r.1)
        .max()
        .unwrap_or(0)
        .max(0);
    let mut norm: Named = raw
        .iter()
        .map(|(name, s, ignored)| {
            let v = if *ignored {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s) / max
            };
            (name.clone(), v)
        })
        .collect();
    let mut raw: Named = raw.into_iter().map(|(n, s, _)| (n, s)).collect();
    raw.sort();
    norm.sort();
    (raw, norm)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// On random clusters with random relabels (zones added, changed,
    /// removed; nodes tainted, added and removed) and pods placed and
    /// removed, the plugin's Filter and Score, reading dense domain ids kept
    /// across the whole history, equal a from-scratch count by label value.
    #[test]
    fn dense_domains_match_reference(steps in prop::collection::vec(memo_step(), 1..40)) {
        let pl = system();
        let kinds = memo_kinds();
        let mut cache = testing::cache_with(prop_nodes(), vec![]);
        let mut uids: Vec<std::sync::Arc<str>> = Vec::new();
        for (i, st) in steps.iter().enumerate() {
            if let Some(k) = apply_step(&mut cache, &mut uids, i, st) {
                let pod = &kinds[k];
                prop_assert_eq!(verdicts(&pl, pod, &cache), reference_verdicts(&pl, pod, &cache), "step {}", i);
                let got = memo_scores(&pl, pod, &cache);
                if !got.0.is_empty() {
                    prop_assert_eq!(got, reference_scores(&pl, pod, &cache), "step {}", i);
                }
            }
        }
    }
}

/// A node relabelled through many values: the domain index renumbers once
/// most ids are no longer held, and verdicts stay those of a fresh count.
#[test]
fn domain_index_renumbers_after_churn() {
    let pl = system();
    let pod = mypod(vec![hard(1, "zone")], json!({}));
    let mut cache = testing::cache_with(
        vec![zone_node("n1", "A"), zone_node("n2", "B")],
        vec![foo_pod("x", "n1")],
    );
    for i in 0..300 {
        cache
            .upsert_node(&zone_node("n2", &format!("z{i}")))
            .unwrap();
        if i % 7 == 0 {
            cache
                .upsert_node(&zone_node("n3", &format!("y{i}")))
                .unwrap();
        }
        assert_eq!(
            verdicts(&pl, &pod, &cache),
            reference_verdicts(&pl, &pod, &cache),
            "round {i}"
        );
    }
    assert_eq!(feasible(&pl, &pod, &cache), names(&["n2", "n3"]));
    assert_eq!(pl.memo.keys(), 1);
}

/// A node of the snapshot is found by address; a copy (as preemption's
/// what-if passes) falls back to its id; both give the node's slot.
#[test]
fn node_slots_find_snapshot_nodes_and_copies() {
    let cache = testing::cache_with(
        vec![
            zone_node("n1", "A"),
            zone_node("n2", "B"),
            zone_node("n3", "C"),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let slots = domains::NodeSlots::of(snap);
    for n in snap.nodes() {
        assert_eq!(slots.id(n), n.id.index());
        let copy = n.clone();
        assert_eq!(slots.id(&copy), n.id.index());
    }
    assert_eq!(domains::NodeSlots::default().id(snap.node(NodeId(1))), 1);
}
