//! TaintToleration tests, from the examples of "Taints and Tolerations".

use super::*;
use crate::common::testkit;
use serde_json::{Value, json};
use strata_scheduler::sdk::{Code, Sym};
use strata_scheduler::testing;

fn tolerating(t: Value) -> PodInfo {
    testing::pod("p").spec(json!({ "tolerations": t })).build()
}

#[test]
fn filter_follows_the_docs() {
    // The docs' node: `kubectl taint nodes node1 key1=value1:NoSchedule`.
    let cache = testing::cache_with(
        vec![
            testing::node("node1")
                .taint("key1", "value1", "NoSchedule")
                .build(),
            testing::node("clean").build(),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let node1 = snap.node_by_name(Sym::new("node1")).unwrap();
    let clean = snap.node_by_name(Sym::new("clean")).unwrap();
    let state = CycleState::new();
    let cases: Vec<(&str, Value, bool)> = vec![
        ("no tolerations", json!([]), false),
        (
            "Equal",
            json!([{"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoSchedule"}]),
            true,
        ),
        (
            "Exists",
            json!([{"key": "key1", "operator": "Exists", "effect": "NoSchedule"}]),
            true,
        ),
        (
            "Exists, any effect",
            json!([{"key": "key1", "operator": "Exists"}]),
            true,
        ),
        (
            "empty key with Exists tolerates everything",
            json!([{"operator": "Exists"}]),
            true,
        ),
        (
            "empty key with Exists and an effect",
            json!([{"operator": "Exists", "effect": "NoSchedule"}]),
            true,
        ),
        (
            "empty key with Exists, other effect",
            json!([{"operator": "Exists", "effect": "NoExecute"}]),
            false,
        ),
        (
            "wrong value",
            json!([{"key": "key1", "operator": "Equal", "value": "value2", "effect": "NoSchedule"}]),
            false,
        ),
        (
            "wrong effect",
            json!([{"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoExecute"}]),
            false,
        ),
        (
            "PreferNoSchedule toleration",
            json!([{"key": "key1", "operator": "Exists", "effect": "PreferNoSchedule"}]),
            false,
        ),
        (
            "one of several",
            json!([{"key": "other", "operator": "Exists"}, {"key": "key1", "operator": "Equal", "value": "value1"}]),
            true,
        ),
    ];
    for (name, tolerations, fits) in cases {
        let pod = tolerating(tolerations);
        assert!(
            TaintToleration.filter(&state, &pod, clean).is_success(),
            "{name}"
        );
        let st = TaintToleration.filter(&state, &pod, node1);
        if fits {
            assert!(st.is_success(), "{name}: {st}");
        } else {
            assert_eq!(st.code(), Code::UnschedulableAndUnresolvable, "{name}");
            assert_eq!(
                st.message(),
                "node(s) had untolerated taint {key1: value1}",
                "{name}"
            );
        }
    }
}

#[test]
fn filter_reports_the_first_untolerated_hard_taint() {
    // The docs' multi-taint example: the pod tolerates key1:NoSchedule and
    // key1:NoExecute but not key2:NoSchedule.
    let cache = testing::cache_with(
        vec![
            testing::node("node1")
                .taint("key1", "value1", "NoSchedule")
                .taint("key1", "value1", "NoExecute")
                .taint("key2", "value2", "NoSchedule")
                .build(),
            testing::node("soft")
                .taint("key2", "", "PreferNoSchedule")
                .build(),
            testing::node("valueless")
                .taint("dedicated", "", "NoExecute")
                .build(),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let pod = tolerating(json!([
        {"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoSchedule"},
        {"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoExecute"}
    ]));
    let state = CycleState::new();
    let node = |n: &str| snap.node_by_name(Sym::new(n)).unwrap();
    assert_eq!(
        TaintToleration
            .filter(&state, &pod, node("node1"))
            .message(),
        "node(s) had untolerated taint {key2: value2}"
    );
    // PreferNoSchedule never filters.
    assert!(
        TaintToleration
            .filter(&state, &pod, node("soft"))
            .is_success()
    );
    assert_eq!(
        TaintToleration
            .filter(&state, &pod, node("valueless"))
            .message(),
        "node(s) had untolerated taint {dedicated: }"
    );
}

fn score_all(pod: &PodInfo, snap: &Snapshot, nodes: &[&str]) -> (Vec<i64>, Vec<i64>) {
    let mut state = CycleState::new();
    let ids: Vec<NodeId> = nodes
        .iter()
        .map(|n| snap.node_by_name(Sym::new(n)).unwrap().id)
        .collect();
    assert!(
        TaintToleration
            .pre_score(&mut state, pod, snap, &ids)
            .is_success()
    );
    let mut scores: Vec<NodeScore> = ids
        .iter()
        .map(|&n| NodeScore {
            node: n,
            score: TaintToleration.score(&state, pod, snap.node(n)).unwrap(),
        })
        .collect();
    let raw = scores.iter().map(|s| s.score).collect();
    // Without PreScore's state the raw scores are the same.
    for s in &scores {
        assert_eq!(
            TaintToleration
                .score(&CycleState::new(), pod, snap.node(s.node))
                .unwrap(),
            s.score
        );
    }
    assert!(TaintToleration.has_normalize());
    assert!(
        TaintToleration
            .normalize(&state, pod, &mut scores)
            .is_success()
    );
    (raw, scores.iter().map(|s| s.score).collect())
}

#[test]
fn score_prefers_fewer_intolerable_prefer_no_schedule_taints() {
    let cache = testing::cache_with(
        vec![
            testing::node("none").build(),
            testing::node("one")
                .taint("a", "1", "PreferNoSchedule")
                .build(),
            testing::node("two")
                .taint("a", "1", "PreferNoSchedule")
                .taint("b", "2", "PreferNoSchedule")
                .build(),
            testing::node("hard").taint("c", "3", "NoSchedule").build(),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let all = ["none", "one", "two", "hard"];
    // Hard taints do not count in scoring.
    let (raw, norm) = score_all(&testing::pod("p").build(), snap, &all);
    assert_eq!(raw, vec![0, 1, 2, 0]);
    assert_eq!(norm, vec![100, 50, 0, 100]);
    // Tolerating `a` (empty effect) removes it from the count.
    let (raw, norm) = score_all(
        &tolerating(json!([{"key": "a", "operator": "Exists"}])),
        snap,
        &all,
    );
    assert_eq!(raw, vec![0, 0, 1, 0]);
    assert_eq!(norm, vec![100, 100, 0, 100]);
    // A PreferNoSchedule toleration counts; a NoSchedule one does not.
    let pod = tolerating(json!([
        {"key": "a", "operator": "Equal", "value": "1", "effect": "PreferNoSchedule"},
        {"key": "b", "operator": "Exists", "effect": "NoSchedule"}
    ]));
    let (raw, _) = score_all(&pod, snap, &all);
    assert_eq!(raw, vec![0, 0, 1, 0]);
    // Tolerating everything: all counts are zero, every node gets 100.
    let (raw, norm) = score_all(&tolerating(json!([{"operator": "Exists"}])), snap, &all);
    assert_eq!(raw, vec![0, 0, 0, 0]);
    assert_eq!(norm, vec![100, 100, 100, 100]);
    // Three nodes, reversed normalization with integer division.
    let cache = testing::cache_with(
        vec![
            testing::node("x")
                .taint("a", "", "PreferNoSchedule")
                .build(),
            testing::node("y")
                .taint("a", "", "PreferNoSchedule")
                .taint("b", "", "PreferNoSchedule")
                .taint("c", "", "PreferNoSchedule")
                .build(),
        ],
        vec![],
    );
    let (raw, norm) = score_all(&testing::pod("p").build(), cache.snapshot(), &["x", "y"]);
    assert_eq!(raw, vec![1, 3]);
    assert_eq!(norm, vec![67, 0]);
}

#[test]
fn requeued_when_taints_become_tolerable() {
    let cache = testing::cache_with(
        vec![
            testing::node("tainted")
                .taint("k", "v", "NoSchedule")
                .build(),
            testing::node("clean").build(),
            testing::node("soft")
                .taint("k", "v", "PreferNoSchedule")
                .build(),
        ],
        vec![],
    );
    let snap = cache.snapshot();
    let node = |n: &str| snap.node_by_name(Sym::new(n));
    let ev = |old, new| ClusterEvent {
        resource: EventResource::Node,
        action: ActionType::UPDATE_NODE_TAINT,
        object: strata_scheduler::framework::EventObject::Node { old, new },
    };
    let plugin = factory(None, &testkit::handle()).unwrap();
    let pod = testing::pod("p").build();
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(None, node("clean"))),
        QueueingHint::Queue
    );
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(None, node("tainted"))),
        QueueingHint::Skip
    );
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(node("tainted"), node("soft"))),
        QueueingHint::Queue
    );
    assert_eq!(
        plugin.queueing_hint(&pod, &ev(node("clean"), node("soft"))),
        QueueingHint::Skip
    );
    let tolerant = tolerating(json!([{"key": "k", "operator": "Exists"}]));
    assert_eq!(
        plugin.queueing_hint(&tolerant, &ev(None, node("tainted"))),
        QueueingHint::Queue
    );
    assert!(plugin.as_filter().unwrap().is_node_local());
    assert!(plugin.as_score().unwrap().is_node_local());
    let kinds = plugin.events_to_register();
    assert!(
        kinds[0].actions.intersects(ActionType::ADD)
            && kinds[0].actions.intersects(ActionType::UPDATE_NODE_TAINT)
    );
}
