//! NodeAffinity tests, from the examples of "Assigning Pods to Nodes" and
//! "Scheduler Configuration" and the edge cases of each operator.

use super::*;
use crate::common::testkit;
use proptest::prelude::*;
use serde_json::{Value, json};
use strata_scheduler::cache::Cache;
use strata_scheduler::sdk::Code;
use strata_scheduler::testing;

fn cluster() -> Cache {
    testing::cache_with(
        vec![
            testing::node("n1")
                .label("zone", "a")
                .label("disk", "ssd")
                .label("gpus", "8")
                .build(),
            testing::node("n2")
                .label("zone", "b")
                .label("gpus", "2")
                .build(),
            testing::node("n3").label("zone", "c").build(),
        ],
        vec![],
    )
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": op})
    } else {
        json!({"key": key, "operator": op, "values": values})
    }
}

fn required(terms: Value) -> Value {
    json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}})
}

fn pod_with(spec: Value) -> PodInfo {
    testing::pod("p").spec(spec).build()
}

fn affinity(node_affinity: Value) -> PodInfo {
    pod_with(json!({"affinity": {"nodeAffinity": node_affinity}}))
}

fn id(snap: &Snapshot, name: &str) -> NodeId {
    snap.node_by_name(Sym::new(name)).map(|n| n.id).unwrap()
}

/// Names of the nodes `plugin`'s Filter accepts for `pod`, sorted.
fn fitting(plugin: &NodeAffinity, pod: &PodInfo, snap: &Snapshot) -> Vec<&'static str> {
    let state = CycleState::new();
    let mut out: Vec<_> = snap
        .nodes()
        .filter(|n| {
            let st = plugin.filter(&state, pod, n);
            assert!(
                st.is_success() || st.code() == Code::UnschedulableAndUnresolvable,
                "{st}"
            );
            st.is_success()
        })
        .map(|n| n.name.as_str())
        .collect();
    out.sort_unstable();
    out
}

#[test]
fn required_affinity_operators() {
    let cache = cluster();
    let snap = cache.snapshot();
    let plugin = NodeAffinity::default();
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "In",
            json!([{"matchExpressions": [expr("zone", "In", &["a", "b"])]}]),
            vec!["n1", "n2"],
        ),
        (
            "NotIn",
            json!([{"matchExpressions": [expr("zone", "NotIn", &["a"])]}]),
            vec!["n2", "n3"],
        ),
        (
            "NotIn, key absent",
            json!([{"matchExpressions": [expr("disk", "NotIn", &["ssd"])]}]),
            vec!["n2", "n3"],
        ),
        (
            "Exists",
            json!([{"matchExpressions": [expr("disk", "Exists", &[])]}]),
            vec!["n1"],
        ),
        (
            "DoesNotExist",
            json!([{"matchExpressions": [expr("disk", "DoesNotExist", &[])]}]),
            vec!["n2", "n3"],
        ),
        (
            "Gt",
            json!([{"matchExpressions": [expr("gpus", "Gt", &["4"])]}]),
            vec!["n1"],
        ),
        (
            "Gt is strict",
            json!([{"matchExpressions": [expr("gpus", "Gt", &["8"])]}]),
            vec![],
        ),
        (
            "Lt, key absent fails",
            json!([{"matchExpressions": [expr("gpus", "Lt", &["4"])]}]),
            vec!["n2"],
        ),
        (
            "Gt on a non-integer label",
            json!([{"matchExpressions": [expr("zone", "Gt", &["1"])]}]),
            vec![],
        ),
        (
            "expressions in a term are ANDed",
            json!([{"matchExpressions": [expr("zone", "In", &["a", "b"]), expr("gpus", "Lt", &["4"])]}]),
            vec!["n2"],
        ),
        (
            "terms are ORed",
            json!([
                {"matchExpressions": [expr("zone", "In", &["a"])]},
                {"matchExpressions": [expr("zone", "In", &["c"])]}
            ]),
            vec!["n1", "n3"],
        ),
        ("an empty term matches nothing", json!([{}]), vec![]),
        (
            "an empty expression list matches nothing",
            json!([{"matchExpressions": []}]),
            vec![],
        ),
        (
            "an empty term does not block another term",
            json!([{}, {"matchExpressions": [expr("zone", "In", &["b"])]}]),
            vec!["n2"],
        ),
        (
            "matchFields In",
            json!([{"matchFields": [expr("metadata.name", "In", &["n2"])]}]),
            vec!["n2"],
        ),
        (
            "matchFields NotIn",
            json!([{"matchFields": [expr("metadata.name", "NotIn", &["n2"])]}]),
            vec!["n1", "n3"],
        ),
        (
            "fields and expressions are ANDed",
            json!([{
                "matchFields": [expr("metadata.name", "In", &["n1", "n2"])],
                "matchExpressions": [expr("zone", "In", &["b", "c"])]
            }]),
            vec!["n2"],
        ),
    ];
    for (name, terms, want) in cases {
        let pod = affinity(required(terms));
        assert_eq!(fitting(&plugin, &pod, snap), want, "{name}");
    }
}

#[test]
fn node_selector_and_affinity_must_both_hold() {
    let cache = cluster();
    let snap = cache.snapshot();
    let plugin = NodeAffinity::default();
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("nothing set", json!({}), vec!["n1", "n2", "n3"]),
        (
            "nodeSelector",
            json!({"nodeSelector": {"zone": "b"}}),
            vec!["n2"],
        ),
        (
            "nodeSelector pairs are ANDed",
            json!({"nodeSelector": {"zone": "a", "gpus": "2"}}),
            vec![],
        ),
        (
            "empty nodeSelector",
            json!({"nodeSelector": {}}),
            vec!["n1", "n2", "n3"],
        ),
        (
            "selector and affinity agree",
            json!({
                "nodeSelector": {"disk": "ssd"},
                "affinity": {"nodeAffinity": required(json!([{"matchExpressions": [expr("zone", "In", &["a", "b"])]}]))}
            }),
            vec!["n1"],
        ),
        (
            "selector and affinity disagree",
            json!({
                "nodeSelector": {"zone": "a"},
                "affinity": {"nodeAffinity": required(json!([{"matchExpressions": [expr("gpus", "Lt", &["4"])]}]))}
            }),
            vec![],
        ),
        (
            "preferred terms never filter",
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [expr("zone", "In", &["a"])]}}
            ]}}}),
            vec!["n1", "n2", "n3"],
        ),
    ];
    for (name, spec, want) in cases {
        assert_eq!(fitting(&plugin, &pod_with(spec), snap), want, "{name}");
    }
    let pod = pod_with(json!({"nodeSelector": {"zone": "b"}}));
    let st = plugin.filter(
        &CycleState::new(),
        &pod,
        snap.node_by_name(Sym::new("n1")).unwrap(),
    );
    assert_eq!(st.code(), Code::UnschedulableAndUnresolvable);
    assert_eq!(st.message(), REASON);
}

#[test]
fn docs_example_required_and_preferred() {
    // "Assigning Pods to Nodes", node affinity example: the pod must run in
    // zone antarctica-east1 or antarctica-west1, and prefers nodes with
    // another-node-label-key=another-node-label-value.
    let cache = testing::cache_with(
        vec![
            testing::node("east")
                .label("topology.kubernetes.io/zone", "antarctica-east1")
                .label("another-node-label-key", "another-node-label-value")
                .build(),
            testing::node("west")
                .label("topology.kubernetes.io/zone", "antarctica-west1")
                .build(),
            testing::node("north")
                .label("topology.kubernetes.io/zone", "arctic-1")
                .build(),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let pod = affinity(json!({
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            expr("topology.kubernetes.io/zone", "In", &["antarctica-east1", "antarctica-west1"])
        ]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [
            expr("another-node-label-key", "In", &["another-node-label-value"])
        ]}}]
    }));
    let plugin = NodeAffinity::default();
    assert_eq!(fitting(&plugin, &pod, snap), vec!["east", "west"]);
    let feasible = [id(snap, "east"), id(snap, "west")];
    assert_eq!(score_all(&plugin, &pod, snap, &feasible), vec![100, 0]);
}

/// Runs PreScore, Score and NormalizeScore over `feasible`.
fn score_all(
    plugin: &NodeAffinity,
    pod: &PodInfo,
    snap: &Snapshot,
    feasible: &[NodeId],
) -> Vec<i64> {
    let mut state = CycleState::new();
    assert!(
        plugin
            .pre_score(&mut state, pod, snap, feasible)
            .is_success()
    );
    let mut scores: Vec<NodeScore> = feasible
        .iter()
        .map(|&n| NodeScore {
            node: n,
            score: plugin.score(&state, pod, snap.node(n)).unwrap(),
        })
        .collect();
    assert!(plugin.has_normalize());
    assert!(plugin.normalize(&state, pod, &mut scores).is_success());
    scores.iter().map(|s| s.score).collect()
}

#[test]
fn docs_example_weights() {
    // "Assigning Pods to Nodes", node affinity weight: two nodes match the
    // required rule; the one labelled label-2=key-2 (weight 50) wins over
    // the one labelled label-1=key-1 (weight 1).
    let cache = testing::cache_with(
        vec![
            testing::node("one")
                .label("kubernetes.io/os", "linux")
                .label("label-1", "key-1")
                .build(),
            testing::node("two")
                .label("kubernetes.io/os", "linux")
                .label("label-2", "key-2")
                .build(),
            testing::node("both")
                .label("kubernetes.io/os", "linux")
                .label("label-1", "key-1")
                .label("label-2", "key-2")
                .build(),
            testing::node("none")
                .label("kubernetes.io/os", "linux")
                .build(),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let pod = affinity(json!({
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            expr("kubernetes.io/os", "In", &["linux"])
        ]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [expr("label-1", "In", &["key-1"])]}},
            {"weight": 50, "preference": {"matchExpressions": [expr("label-2", "In", &["key-2"])]}}
        ]
    }));
    let plugin = NodeAffinity::default();
    let feasible: Vec<_> = ["one", "two", "both", "none"]
        .iter()
        .map(|n| id(snap, n))
        .collect();
    let raw: Vec<i64> = feasible
        .iter()
        .map(|&n| {
            plugin
                .score(&CycleState::new(), &pod, snap.node(n))
                .unwrap()
        })
        .collect();
    assert_eq!(raw, vec![1, 50, 51, 0]);
    // 100 * s / 51, integer division as kube-scheduler does.
    assert_eq!(
        score_all(&plugin, &pod, snap, &feasible),
        vec![1, 98, 100, 0]
    );
}

#[test]
fn pre_score_skips_pods_without_preferences() {
    let cache = cluster();
    let snap = cache.snapshot();
    let plugin = NodeAffinity::default();
    let mut state = CycleState::new();
    let plain = testing::pod("p").build();
    assert!(
        plugin
            .pre_score(&mut state, &plain, snap, snap.node_ids())
            .is_skip()
    );
    let required_only = affinity(required(
        json!([{"matchExpressions": [expr("zone", "In", &["a"])]}]),
    ));
    assert!(
        plugin
            .pre_score(&mut state, &required_only, snap, snap.node_ids())
            .is_skip()
    );
    // No node matches any preferred term: all scores stay 0.
    let pod = affinity(json!({"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 7, "preference": {"matchExpressions": [expr("zone", "In", &["nowhere"])]}}
    ]}));
    assert_eq!(
        score_all(&plugin, &pod, snap, snap.node_ids()),
        vec![0, 0, 0]
    );
}

#[test]
fn pre_filter_skips_pods_without_requirements() {
    let cache = cluster();
    let snap = cache.snapshot();
    let plugin = NodeAffinity::default();
    let mut state = CycleState::new();
    assert!(
        plugin
            .pre_filter(&mut state, &testing::pod("p").build(), snap)
            .status
            .is_skip()
    );
    let preferred_only = affinity(json!({"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [expr("zone", "In", &["a"])]}}
    ]}));
    assert!(
        plugin
            .pre_filter(&mut state, &preferred_only, snap)
            .status
            .is_skip()
    );
    let selector = pod_with(json!({"nodeSelector": {"zone": "a"}}));
    let r = plugin.pre_filter(&mut state, &selector, snap);
    assert!(r.status.is_success() && r.nodes.is_none());
    // With an added required affinity every pod is checked.
    let enforced = NodeAffinity::new(
        NodeAffinityArgs::parse(Some(&json!({"addedAffinity": required(json!([
            {"matchExpressions": [expr("zone", "In", &["a"])]}
        ]))})))
        .unwrap(),
    );
    assert!(
        enforced
            .pre_filter(&mut state, &testing::pod("p").build(), snap)
            .status
            .is_success()
    );
    // An added preferred affinity alone leaves nothing to filter.
    let preferring = NodeAffinity::new(
        NodeAffinityArgs::parse(Some(
            &json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [expr("zone", "In", &["a"])]}}
            ]}}),
        ))
        .unwrap(),
    );
    assert!(
        preferring
            .pre_filter(&mut state, &testing::pod("p").build(), snap)
            .status
            .is_skip()
    );
}

#[test]
fn pre_filter_narrows_to_pinned_node_names() {
    let cache = cluster();
    let snap = cache.snapshot();
    let plugin = NodeAffinity::default();
    let names = |values: &[&str]| json!({"matchFields": [expr("metadata.name", "In", values)]});
    let ids = |names: &[&str]| {
        let mut v: Vec<NodeId> = names.iter().map(|n| id(snap, n)).collect();
        v.sort_unstable();
        Some(v)
    };
    let cases: Vec<(&str, Value, Option<Vec<NodeId>>)> = vec![
        (
            "labels only",
            json!([{"matchExpressions": [expr("zone", "In", &["a"])]}]),
            None,
        ),
        (
            "one term, unknown names dropped",
            json!([names(&["n3", "n1", "ghost"])]),
            ids(&["n1", "n3"]),
        ),
        (
            "terms union",
            json!([names(&["n1"]), names(&["n2", "n1"])]),
            ids(&["n1", "n2"]),
        ),
        (
            "a term without names lets every node through",
            json!([names(&["n1"]), {"matchExpressions": [expr("zone", "In", &["c"])]}]),
            None,
        ),
        (
            "In fields of one term intersect",
            json!([{"matchFields": [expr("metadata.name", "In", &["n1", "n2"]), expr("metadata.name", "In", &["n2", "n3"])]}]),
            ids(&["n2"]),
        ),
        (
            "NotIn does not pin",
            json!([{"matchFields": [expr("metadata.name", "NotIn", &["n1"])]}]),
            None,
        ),
        (
            "only unknown names",
            json!([names(&["ghost"])]),
            Some(vec![]),
        ),
    ];
    for (name, terms, want) in cases {
        let pod = affinity(required(terms));
        let r = plugin.pre_filter(&mut CycleState::new(), &pod, snap);
        assert!(r.status.is_success(), "{name}: {}", r.status);
        assert_eq!(r.nodes, want, "{name}");
    }
    let conflict = affinity(required(json!([
        {"matchFields": [expr("metadata.name", "In", &["n1"]), expr("metadata.name", "In", &["n2"])]}
    ])));
    let r = plugin.pre_filter(&mut CycleState::new(), &conflict, snap);
    assert_eq!(r.status.code(), Code::UnschedulableAndUnresolvable);
    assert_eq!(r.status.message(), REASON_CONFLICT);
    assert!(r.nodes.is_none());
}

#[test]
fn added_affinity_applies_to_every_pod() {
    let cache = cluster();
    let snap = cache.snapshot();
    let args = json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "NodeAffinityArgs",
        "addedAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [expr("zone", "In", &["a", "b"])]}
            ]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [expr("gpus", "Exists", &[])]}}
            ]
        }
    });
    let plugin_arc = factory(Some(&args), &testkit::handle()).unwrap();
    let plugin = NodeAffinity::new(NodeAffinityArgs::parse(Some(&args)).unwrap());
    assert!(!plugin.args.is_empty());
    let plain = testing::pod("p").build();
    assert_eq!(fitting(&plugin, &plain, snap), vec!["n1", "n2"]);
    // The pod's own affinity is ANDed with the added one.
    let own = affinity(required(
        json!([{"matchExpressions": [expr("zone", "In", &["b", "c"])]}]),
    ));
    assert_eq!(fitting(&plugin, &own, snap), vec!["n2"]);
    let n3 = snap.node_by_name(Sym::new("n3")).unwrap();
    let st = plugin_arc
        .as_filter()
        .unwrap()
        .filter(&CycleState::new(), &plain, n3);
    assert_eq!(st.code(), Code::UnschedulableAndUnresolvable);
    assert_eq!(st.message(), REASON_ENFORCED);
    // Added preferred terms add to the pod's own.
    let prefers_zone_a = affinity(json!({"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 30, "preference": {"matchExpressions": [expr("zone", "In", &["a"])]}}
    ]}));
    let feasible = [id(snap, "n1"), id(snap, "n2"), id(snap, "n3")];
    let raw: Vec<i64> = feasible
        .iter()
        .map(|&n| {
            plugin
                .score(&CycleState::new(), &prefers_zone_a, snap.node(n))
                .unwrap()
        })
        .collect();
    assert_eq!(raw, vec![40, 10, 0]);
    assert_eq!(
        score_all(&plugin, &plain, snap, &feasible),
        vec![100, 100, 0]
    );
}

#[test]
fn bad_args_name_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (json!(3), "args"),
        (json!({"addedAfinity": {}}), "addedAfinity"),
        (json!({"addedAffinity": []}), "addedAffinity"),
        (
            json!({"addedAffinity": {"required": {}}}),
            "addedAffinity.required",
        ),
        (
            json!({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}),
            "addedAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        ),
        (
            json!({"addedAffinity": required(json!([{"matchExpressions": [expr("zone", "Near", &["a"])]}]))}),
            "addedAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        ),
        (
            json!({"addedAffinity": required(json!([{"matchExpressions": [expr("gpus", "Gt", &["many"])]}]))}),
            "addedAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        ),
        (
            json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [expr("zone", "In", &["a"])]}},
                {"weight": 0, "preference": {"matchExpressions": [expr("zone", "In", &["a"])]}}
            ]}}),
            "addedAffinity.preferredDuringSchedulingIgnoredDuringExecution[1].weight",
        ),
        (
            json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 101, "preference": {}}
            ]}}),
            "addedAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
        ),
        (
            json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "preference": {"matchExpressions": [expr("zone", "In", &[])]}}
            ]}}),
            "addedAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference",
        ),
        (
            json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": "heavy"}}),
            "addedAffinity",
        ),
    ];
    for (args, field) in cases {
        let err = NodeAffinityArgs::parse(Some(&args)).unwrap_err();
        assert_eq!(err.field, field, "{args}: {err}");
        assert!(factory(Some(&args), &testkit::handle()).is_err());
    }
    for ok in [
        json!(null),
        json!({}),
        json!({"addedAffinity": null}),
        json!({"addedAffinity": {}}),
    ] {
        assert!(
            NodeAffinityArgs::parse(Some(&ok)).unwrap().is_empty(),
            "{ok}"
        );
    }
    assert!(NodeAffinityArgs::parse(None).unwrap().is_empty());
}

#[test]
fn requeued_when_a_node_starts_to_match() {
    let cache = testing::cache_with(
        vec![
            testing::node("before").label("zone", "b").build(),
            testing::node("after").label("zone", "a").build(),
            testing::node("also")
                .label("zone", "a")
                .label("x", "y")
                .build(),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let node = |n: &str| snap.node_by_name(Sym::new(n));
    let ev = |old, new| ClusterEvent {
        resource: EventResource::Node,
        action: ActionType::UPDATE_NODE_LABEL,
        object: strata_scheduler::framework::EventObject::Node { old, new },
    };
    let plugin = factory(None, &testkit::handle()).unwrap();
    let pod = pod_with(json!({"nodeSelector": {"zone": "a"}}));
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(None, node("after"))),
        QueueingHint::Queue
    );
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(None, node("before"))),
        QueueingHint::Skip
    );
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(node("before"), node("after"))),
        QueueingHint::Queue
    );
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(node("after"), node("also"))),
        QueueingHint::Skip
    );
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(node("after"), None)),
        QueueingHint::Skip
    );
    let kinds = plugin.events_to_register();
    assert!(kinds.iter().all(|k| k.resource == EventResource::Node));
    assert!(
        kinds[0].actions.intersects(ActionType::ADD)
            && kinds[0].actions.intersects(ActionType::UPDATE_NODE_LABEL)
    );
    assert!(plugin.as_filter().unwrap().is_node_local());
    assert!(plugin.as_score().unwrap().is_node_local());
}

#[test]
fn default_normalize_score_examples() {
    let run = |raw: &[i64], reverse: bool| {
        let mut s: Vec<NodeScore> = raw
            .iter()
            .enumerate()
            .map(|(i, &score)| NodeScore {
                node: NodeId(i as u32),
                score,
            })
            .collect();
        default_normalize_score(MAX_NODE_SCORE, reverse, &mut s);
        s.iter().map(|s| s.score).collect::<Vec<_>>()
    };
    assert_eq!(run(&[0, 0], false), vec![0, 0]);
    assert_eq!(run(&[0, 0], true), vec![100, 100]);
    assert_eq!(run(&[1, 50, 0], false), vec![2, 100, 0]);
    assert_eq!(run(&[1, 2, 0], true), vec![50, 0, 100]);
    assert_eq!(run(&[], true), Vec::<i64>::new());
}

proptest! {
    /// Normalized scores stay in range, keep the order, and the best node
    /// gets the maximum (or, reversed, the worst gets it).
    #[test]
    fn normalize_is_monotone_and_bounded(raw in proptest::collection::vec(0i64..10_000, 1..50), reverse in any::<bool>()) {
        let mut s: Vec<NodeScore> = raw
            .iter()
            .enumerate()
            .map(|(i, &score)| NodeScore { node: NodeId(i as u32), score })
            .collect();
        default_normalize_score(MAX_NODE_SCORE, reverse, &mut s);
        let max = raw.iter().copied().max().unwrap_or(0);
        for i in 0..raw.len() {
            prop_assert!((0..=MAX_NODE_SCORE).contains(&s[i].score));
            for j in 0..raw.len() {
                if raw[i] < raw[j] {
                    if reverse { prop_assert!(s[i].score >= s[j].score) } else { prop_assert!(s[i].score <= s[j].score) }
                }
            }
            if raw[i] == max {
                prop_assert_eq!(s[i].score, if reverse && max > 0 { 0 } else if max > 0 || reverse { MAX_NODE_SCORE } else { 0 });
            }
        }
    }
}
