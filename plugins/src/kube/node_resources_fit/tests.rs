//! Tests built from kube-scheduler's documented behaviour: the Filter's
//! reasons and codes, the three scoring strategies (including the "Resource
//! Bin Packing" example), requeue hints, and a property test that the
//! Filter accepts exactly when every requested resource fits.

use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use strata_scheduler::sdk::{MAX_NODE_SCORE, NodeId, Sym};
use strata_scheduler::testing;
use strata_scheduler::testing::{NodeBuilder, PodBuilder};

fn plugin(args: Value) -> NodeResourcesFit {
    NodeResourcesFit::from_args(Some(&args)).unwrap()
}

/// The compiled node `n` with `placed` pods bound to it.
fn node_info(n: NodeBuilder, placed: Vec<PodBuilder>) -> NodeInfo {
    let pods = placed
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.spec(json!({}))
                .on("n")
                .build()
                .with_identity(&format!("placed-{i}"), &format!("placed-{i}"))
        })
        .collect();
    let cache = testing::cache_with(vec![n.build()], pods);
    cache.snapshot().nodes().next().unwrap().clone()
}

fn run_filter(pl: &NodeResourcesFit, pod: &PodInfo, node: &NodeInfo) -> Status {
    let mut state = CycleState::new();
    let cache = testing::cache_with(vec![], vec![]);
    let r = pl.pre_filter(&mut state, pod, cache.snapshot());
    assert!(r.status.is_success());
    assert!(r.nodes.is_none());
    pl.filter(&state, pod, node)
}

fn n4() -> NodeBuilder {
    // 4 cpu, 32Gi, 110 pods.
    testing::node("n")
}

/// name, pod, node, pods placed on it, expected (code, reasons) or fits.
type FilterCase = (
    &'static str,
    PodBuilder,
    NodeBuilder,
    Vec<PodBuilder>,
    Option<(Code, Vec<&'static str>)>,
);

#[test]
fn filter_table() {
    let pl = plugin(json!({}));
    let us = Code::Unschedulable;
    let ur = Code::UnschedulableAndUnresolvable;
    let cases: Vec<FilterCase> =
        vec![
        (
            "fits on an empty node",
            testing::pod("p").req("cpu", "1").req("memory", "1Gi"),
            n4(),
            vec![],
            None,
        ),
        (
            "exactly fills the node",
            testing::pod("p").req("cpu", "3"),
            n4(),
            vec![testing::pod("a").req("cpu", "1")],
            None,
        ),
        (
            "cpu taken by placed pods: preemption could help",
            testing::pod("p").req("cpu", "3"),
            n4(),
            vec![testing::pod("a").req("cpu", "2")],
            Some((us, vec![REASON_CPU])),
        ),
        (
            "cpu larger than the node: unresolvable",
            testing::pod("p").req("cpu", "5"),
            n4(),
            vec![],
            Some((ur, vec![REASON_CPU])),
        ),
        (
            "all reasons on one status, in kube's order",
            testing::pod("p").req("cpu", "3").req("memory", "40Gi"),
            n4().alloc("pods", "1"),
            vec![testing::pod("a").req("cpu", "2")],
            Some((ur, vec![REASON_TOO_MANY_PODS, REASON_CPU, REASON_MEMORY])),
        ),
        (
            "a pod requesting nothing still needs a slot",
            testing::pod("p"),
            n4().alloc("pods", "2"),
            vec![testing::pod("a"), testing::pod("b")],
            Some((us, vec![REASON_TOO_MANY_PODS])),
        ),
        (
            "a node that takes no pods",
            testing::pod("p"),
            n4().alloc("pods", "0"),
            vec![],
            Some((us, vec![REASON_TOO_MANY_PODS])),
        ),
        (
            "a pod requesting nothing fits where others left no room",
            testing::pod("p"),
            n4(),
            vec![testing::pod("a").req("cpu", "4").req("memory", "32Gi")],
            None,
        ),
        (
            "ephemeral storage",
            testing::pod("p").req("ephemeral-storage", "20Gi"),
            n4().alloc("ephemeral-storage", "30Gi"),
            vec![testing::pod("a").req("ephemeral-storage", "11Gi")],
            Some((us, vec![REASON_EPHEMERAL_STORAGE])),
        ),
        (
            "an extended resource the node lacks",
            testing::pod("p").req("example.com/gpu", "1"),
            n4(),
            vec![],
            Some((ur, vec!["Insufficient example.com/gpu"])),
        ),
        (
            "an extended resource that fits",
            testing::pod("p").req("example.com/gpu", "2"),
            n4().alloc("example.com/gpu", "4"),
            vec![testing::pod("a").req("example.com/gpu", "2")],
            None,
        ),
        (
            "hugepages",
            testing::pod("p").req("hugepages-2Mi", "4Mi").req("memory", "1Gi"),
            n4().alloc("hugepages-2Mi", "2Mi"),
            vec![],
            Some((ur, vec!["Insufficient hugepages-2Mi"])),
        ),
        (
            "pod overhead counts",
            testing::pod("p").req("cpu", "3500m").spec(json!({"overhead": {"cpu": "600m"}})),
            n4(),
            vec![],
            Some((ur, vec![REASON_CPU])),
        ),
        (
            "the largest init container counts",
            testing::pod("p").req("cpu", "1").spec(json!({"initContainers": [
                {"name": "init", "image": "i:1", "resources": {"requests": {"cpu": "3500m"}}}
            ]})),
            n4(),
            vec![testing::pod("a").req("cpu", "1")],
            Some((us, vec![REASON_CPU])),
        ),
    ];
    for (name, pod, node, placed, want) in cases {
        let pod = pod.build();
        let node = node_info(node, placed);
        let got = run_filter(&pl, &pod, &node);
        match want {
            None => assert!(got.is_success(), "{name}: {got}"),
            Some((code, reasons)) => {
                assert_eq!(got.code(), code, "{name}: {got}");
                let rs: Vec<&str> = got.reasons().iter().map(|r| r.as_ref()).collect();
                assert_eq!(rs, reasons, "{name}");
            }
        }
    }
}

#[test]
fn ignored_extended_resources() {
    let pod = testing::pod("p")
        .req("example.com/gpu", "1")
        .req("example.org/fpga", "1")
        .req("hugepages-1Gi", "1Gi")
        .build();
    let node = node_info(n4(), vec![]);
    let reasons = |pl: &NodeResourcesFit| -> Vec<String> {
        run_filter(pl, &pod, &node)
            .reasons()
            .iter()
            .map(|r| r.to_string())
            .collect()
    };
    let all = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        reasons(&plugin(json!({}))).tap_sort(),
        all(&[
            "Insufficient example.com/gpu",
            "Insufficient example.org/fpga",
            "Insufficient hugepages-1Gi"
        ])
    );
    // Only extended resources can be ignored: hugepages stays checked.
    assert_eq!(
        reasons(&plugin(
            json!({"ignoredResources": ["example.com/gpu", "hugepages-1Gi"]})
        ))
        .tap_sort(),
        vec![
            "Insufficient example.org/fpga".to_string(),
            "Insufficient hugepages-1Gi".to_string()
        ]
    );
    assert_eq!(
        reasons(&plugin(json!({"ignoredResourceGroups": ["example.org"]}))).tap_sort(),
        vec![
            "Insufficient example.com/gpu".to_string(),
            "Insufficient hugepages-1Gi".to_string()
        ]
    );
    let pl = plugin(
        json!({"ignoredResources": ["example.com/gpu"], "ignoredResourceGroups": ["example.org"]}),
    );
    let hp = testing::pod("q")
        .req("example.com/gpu", "1")
        .req("example.org/fpga", "1")
        .build();
    assert!(run_filter(&pl, &hp, &node).is_success());
}

#[test]
fn device_share_resources_are_left_to_devices() {
    // A HAMi pod on a HAMi node: the device count is allocatable, the
    // shares are not.
    let pod = testing::pod("p")
        .req("nvidia.com/gpu", "1")
        .req("nvidia.com/gpumem", "3000")
        .req("nvidia.com/gpumem-percentage", "10")
        .req("nvidia.com/gpucores", "30")
        .build();
    let node = node_info(n4().alloc("nvidia.com/gpu", "20"), vec![]);
    let none = node_info(n4(), vec![]);
    let reasons = |pl: &NodeResourcesFit, n: &NodeInfo| -> Vec<String> {
        run_filter(pl, &pod, n)
            .reasons()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .tap_sort()
    };
    // Default args: only the count is checked.
    let default = NodeResourcesFit::from_args(None).unwrap();
    assert!(run_filter(&default, &pod, &node).is_success());
    assert_eq!(
        reasons(&default, &none),
        vec!["Insufficient nvidia.com/gpu".to_string()]
    );
    // Given other args, the default list stays.
    assert!(
        run_filter(
            &plugin(json!({"ignoredResources": ["example.com/x"]})),
            &pod,
            &node
        )
        .is_success()
    );
    // `[]`: kube-scheduler's strict check.
    assert_eq!(
        reasons(&plugin(json!({"deviceShareResources": []})), &node),
        vec![
            "Insufficient nvidia.com/gpucores".to_string(),
            "Insufficient nvidia.com/gpumem".to_string(),
            "Insufficient nvidia.com/gpumem-percentage".to_string()
        ]
    );
    // A list replaces the default.
    assert_eq!(
        reasons(
            &plugin(json!({"deviceShareResources": ["nvidia.com/gpucores"]})),
            &node
        ),
        vec![
            "Insufficient nvidia.com/gpumem".to_string(),
            "Insufficient nvidia.com/gpumem-percentage".to_string()
        ]
    );
}

trait TapSort {
    fn tap_sort(self) -> Self;
}

impl TapSort for Vec<String> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}

#[test]
fn filter_without_pre_filter_is_an_error() {
    let pl = plugin(json!({}));
    let pod = testing::pod("p").build();
    let node = node_info(n4(), vec![]);
    assert_eq!(
        pl.filter(&CycleState::new(), &pod, &node).code(),
        Code::Error
    );
}

fn score(
    pl: &NodeResourcesFit,
    pod: &PodBuilder,
    node: NodeBuilder,
    placed: Vec<PodBuilder>,
) -> i64 {
    let pod = pod.clone().build();
    let node = node_info(node, placed);
    pl.score(&CycleState::new(), &pod, &node).unwrap()
}

fn sized(cpu: &str, mem: &str) -> NodeBuilder {
    testing::node("n").alloc("cpu", cpu).alloc("memory", mem)
}

#[test]
fn least_allocated() {
    let pl = plugin(json!({}));
    // kube-scheduler's "nothing scheduled, resources requested, differently
    // sized nodes": cpu (4000-3000)*100/4000 = 25, memory
    // (10000-5000)*100/10000 = 50, average 37; the larger node 50.
    let p = testing::pod("p").req("cpu", "3000m").req("memory", "5000");
    assert_eq!(score(&pl, &p, sized("4000m", "10000"), vec![]), 37);
    assert_eq!(score(&pl, &p, sized("6000m", "10000"), vec![]), 50);
    // Requests above what is free score 0 for that resource.
    assert_eq!(score(&pl, &p, sized("2000m", "10000"), vec![]), 25);
    // A pod requesting nothing counts as 100m and 200Mi: cpu 3900/4000 ->
    // 97, memory 9800/10000 -> 98, average 97.
    let empty = testing::pod("e");
    assert_eq!(score(&pl, &empty, sized("4000m", "10000Mi"), vec![]), 97);
    // So do placed pods that request nothing: 2 x (100m, 200Mi) used + the
    // pod's own (100m, 200Mi): cpu 3700/4000 -> 92, memory 9400/10000 -> 94.
    assert_eq!(
        score(
            &pl,
            &empty,
            sized("4000m", "10000Mi"),
            vec![testing::pod("a"), testing::pod("b")]
        ),
        93
    );
    // Weights: cpu 25 x 3 + memory 50 x 1 over 4 = 31.
    let w = plugin(json!({"scoringStrategy": {"type": "LeastAllocated",
        "resources": [{"name": "cpu", "weight": 3}, {"name": "memory", "weight": 1}]}}));
    assert_eq!(score(&w, &p, sized("4000m", "10000"), vec![]), 31);
}

#[test]
fn most_allocated() {
    let pl = plugin(json!({"scoringStrategy": {"type": "MostAllocated"}}));
    // The reverse of the LeastAllocated example: cpu 75, memory 50 -> 62.
    let p = testing::pod("p").req("cpu", "3000m").req("memory", "5000");
    assert_eq!(score(&pl, &p, sized("4000m", "10000"), vec![]), 62);
    assert_eq!(score(&pl, &p, sized("6000m", "10000"), vec![]), 50);
    // Over capacity counts as full, not zero.
    assert_eq!(score(&pl, &p, sized("2000m", "10000"), vec![]), 75);
    // With placed pods: cpu (1000+3000)/8000 = 50, memory (5000+5000)/20000 = 50.
    assert_eq!(
        score(
            &pl,
            &p,
            sized("8000m", "20000"),
            vec![testing::pod("a").req("cpu", "1000m").req("memory", "5000")]
        ),
        50
    );
}

#[test]
fn resources_the_node_or_pod_lack_drop_out() {
    let pl = plugin(json!({"scoringStrategy": {"type": "MostAllocated",
        "resources": [{"name": "cpu", "weight": 1}, {"name": "example.com/gpu", "weight": 3}]}}));
    let node = || sized("4000m", "10000Mi").alloc("example.com/gpu", "4");
    // The pod asks no gpu: only cpu (2000/4000 -> 50) counts.
    let cpu_only = testing::pod("p").req("cpu", "2000m");
    assert_eq!(score(&pl, &cpu_only, node(), vec![]), 50);
    // With a gpu request: (50 x 1 + 75 x 3) / 4 = 68.
    let gpu = testing::pod("p")
        .req("cpu", "2000m")
        .req("example.com/gpu", "3");
    assert_eq!(score(&pl, &gpu, node(), vec![]), 68);
    // A node without the gpu: the resource drops out (the Filter rejects
    // such a node anyway).
    assert_eq!(score(&pl, &gpu, sized("4000m", "10000Mi"), vec![]), 50);
    // Ephemeral storage counts even when the pod asks none.
    let eph = plugin(json!({"scoringStrategy": {"type": "LeastAllocated",
        "resources": [{"name": "ephemeral-storage", "weight": 1}]}}));
    assert_eq!(
        score(
            &eph,
            &testing::pod("p"),
            testing::node("n").alloc("ephemeral-storage", "100Gi"),
            vec![testing::pod("a").req("ephemeral-storage", "50Gi")]
        ),
        50
    );
    // `pods` is never scored.
    let pods = plugin(json!({"scoringStrategy": {"type": "LeastAllocated",
        "resources": [{"name": "pods", "weight": 1}]}}));
    assert_eq!(
        score(&pods, &testing::pod("p"), testing::node("n"), vec![]),
        0
    );
}

#[test]
fn requested_to_capacity_ratio_bin_packing_example() {
    // "Resource Bin Packing": intel.com/foo weight 5, memory 1, cpu 3, shape
    // {0, 0}, {100, 10}; the pod asks foo 2, 256MB, 2 cpu.
    let pl = plugin(json!({"scoringStrategy": {
        "type": "RequestedToCapacityRatio",
        "resources": [
            {"name": "intel.com/foo", "weight": 5},
            {"name": "memory", "weight": 1},
            {"name": "cpu", "weight": 3}
        ],
        "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}
    }}));
    let pod = testing::pod("p")
        .req("intel.com/foo", "2")
        .req("memory", "256Mi")
        .req("cpu", "2");
    let node = |foo: &str| sized("8", "1024Mi").alloc("intel.com/foo", foo);
    // Node 1: foo 3/4 = 75, memory 512/1024 = 50, cpu 3/8 = 37 (the docs'
    // 0..10 scale gives 7, 5, 3 and 5); on 0..100: (375 + 50 + 111) / 9 = 59.6 -> 60.
    let used1 = testing::pod("u")
        .req("intel.com/foo", "1")
        .req("memory", "256Mi")
        .req("cpu", "1");
    assert_eq!(score(&pl, &pod, node("4"), vec![used1]), 60);
    // Node 2: foo 4/8 = 50, memory 768/1024 = 75, cpu 8/8 = 100 (docs: 7);
    // (250 + 75 + 300) / 9 = 69.4 -> 69.
    let used2 = testing::pod("u")
        .req("intel.com/foo", "2")
        .req("memory", "512Mi")
        .req("cpu", "6");
    assert_eq!(score(&pl, &pod, node("8"), vec![used2]), 69);
}

#[test]
fn requested_to_capacity_ratio_shapes() {
    let with_shape = |shape: Value| {
        plugin(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": shape}}}),
        )
    };
    let p = testing::pod("p").req("cpu", "1").req("memory", "5Gi");
    // Least-allocated-like shape: cpu 25% -> 75, memory 50% -> 50; 62.5 -> 63.
    let least =
        with_shape(json!([{"utilization": 0, "score": 10}, {"utilization": 100, "score": 0}]));
    assert_eq!(score(&least, &p, sized("4", "10Gi"), vec![]), 63);
    // Most-allocated-like: 25 and 50 -> 37.5 -> 38.
    let most =
        with_shape(json!([{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]));
    assert_eq!(score(&most, &p, sized("4", "10Gi"), vec![]), 38);
    // A resource scoring 0 is left out of the average (kube's rule): cpu at
    // 0% of 100 cores scores 0, so only memory's 50 counts.
    let tiny = testing::pod("p").req("cpu", "10m").req("memory", "5Gi");
    assert_eq!(score(&most, &tiny, sized("100", "10Gi"), vec![]), 50);
    // A single point is a constant.
    let flat = with_shape(json!([{"utilization": 50, "score": 7}]));
    assert_eq!(score(&flat, &p, sized("4", "10Gi"), vec![]), 70);
    // Three points: rising to 80% then falling; cpu 25% -> 25 * 100 / 80 = 31,
    // memory 90% -> 100 - 50 = 50 (falls 100 -> 0 over 80..100); (31 + 50) / 2 = 40.5 -> 41.
    let peak = with_shape(json!([
        {"utilization": 0, "score": 0}, {"utilization": 80, "score": 10}, {"utilization": 100, "score": 0}
    ]));
    let p90 = testing::pod("p").req("cpu", "1").req("memory", "9Gi");
    assert_eq!(score(&peak, &p90, sized("4", "10Gi"), vec![]), 41);
}

#[test]
fn scores_stay_in_range() {
    let pod = testing::pod("p").req("cpu", "100").req("memory", "1Ti");
    for args in [
        json!({}),
        json!({"scoringStrategy": {"type": "MostAllocated"}}),
        json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 10}, {"utilization": 100, "score": 10}]}}}),
    ] {
        let pl = plugin(args);
        for node in [
            sized("1", "1Gi"),
            sized("1000", "100Ti"),
            testing::node("n").alloc("cpu", "0").alloc("memory", "0"),
        ] {
            let s = score(&pl, &pod, node, vec![]);
            assert!((0..=100).contains(&s), "{s}");
        }
    }
}

#[test]
fn node_local_and_events() {
    let pl = plugin(json!({}));
    assert!(FilterPlugin::is_node_local(&pl));
    assert!(ScorePlugin::is_node_local(&pl));
    let ev = pl.events_to_register();
    assert!(ev.contains(&ClusterEventKind::new(
        EventResource::Node,
        ActionType::ADD.or(ActionType::UPDATE_NODE_ALLOCATABLE)
    )));
    assert!(ev.iter().any(|e| e.resource == EventResource::AssignedPod
        && e.actions.intersects(ActionType::DELETE)
        && e.actions.intersects(ActionType::UPDATE_POD_SCALE_DOWN)));
    assert_eq!(pl.name(), NAME);
    assert!(pl.as_pre_filter().is_some() && pl.as_filter().is_some() && pl.as_score().is_some());
}

#[test]
fn queueing_hints() {
    let pl = plugin(json!({}));
    let pod = testing::pod("p")
        .req("cpu", "3")
        .req("example.com/gpu", "1")
        .build();
    let small = node_info(
        testing::node("n")
            .alloc("example.com/gpu", "1")
            .alloc("cpu", "2"),
        vec![],
    );
    let big = node_info(
        testing::node("n")
            .alloc("example.com/gpu", "1")
            .alloc("cpu", "8"),
        vec![],
    );
    let big_more_mem = node_info(
        testing::node("n")
            .alloc("example.com/gpu", "1")
            .alloc("cpu", "8")
            .alloc("memory", "64Gi"),
        vec![],
    );
    let node_ev = |old: Option<&NodeInfo>, new: Option<&NodeInfo>, action| {
        let e = ClusterEvent {
            resource: EventResource::Node,
            action,
            object: EventObject::Node { old, new },
        };
        pl.queueing_hint(&pod, &e)
    };
    assert_eq!(
        node_ev(None, Some(&small), ActionType::ADD),
        QueueingHint::Skip
    );
    assert_eq!(
        node_ev(None, Some(&big), ActionType::ADD),
        QueueingHint::Queue
    );
    assert_eq!(
        node_ev(
            Some(&small),
            Some(&big),
            ActionType::UPDATE_NODE_ALLOCATABLE
        ),
        QueueingHint::Queue
    );
    // Memory, which the pod does not request, went up: no help.
    assert_eq!(
        node_ev(
            Some(&big),
            Some(&big_more_mem),
            ActionType::UPDATE_NODE_ALLOCATABLE
        ),
        QueueingHint::Skip
    );
    // A node that does not have the gpu never helps; with the gpu ignored it does.
    let no_gpu = node_info(testing::node("n").alloc("cpu", "8"), vec![]);
    assert_eq!(
        node_ev(None, Some(&no_gpu), ActionType::ADD),
        QueueingHint::Skip
    );
    let ignoring = plugin(json!({"ignoredResourceGroups": ["example.com"]}));
    let e = ClusterEvent {
        resource: EventResource::Node,
        action: ActionType::ADD,
        object: EventObject::Node {
            old: None,
            new: Some(&no_gpu),
        },
    };
    assert_eq!(ignoring.queueing_hint(&pod, &e), QueueingHint::Queue);

    let placed = testing::pod("a").req("cpu", "2").on("n").build();
    let placed_smaller = testing::pod("a").req("cpu", "1").on("n").build();
    let placed_less_mem = testing::pod("a")
        .req("cpu", "2")
        .req("memory", "1Gi")
        .on("n")
        .build();
    let pod_ev = |resource, action, old: Option<&PodInfo>, new: Option<&PodInfo>| {
        let e = ClusterEvent {
            resource,
            action,
            object: EventObject::Pod { old, new },
        };
        pl.queueing_hint(&pod, &e)
    };
    assert_eq!(
        pod_ev(
            EventResource::AssignedPod,
            ActionType::DELETE,
            Some(&placed),
            None
        ),
        QueueingHint::Queue
    );
    let pending = testing::pod("b").req("cpu", "2").build();
    assert_eq!(
        pod_ev(
            EventResource::UnscheduledPod,
            ActionType::DELETE,
            Some(&pending),
            None
        ),
        QueueingHint::Skip
    );
    let mut nominated = pending.clone();
    nominated.nominated_node = Some(Sym::new("n"));
    assert_eq!(
        pod_ev(
            EventResource::UnscheduledPod,
            ActionType::DELETE,
            Some(&nominated),
            None
        ),
        QueueingHint::Queue
    );
    assert_eq!(
        pod_ev(
            EventResource::AssignedPod,
            ActionType::UPDATE_POD_SCALE_DOWN,
            Some(&placed),
            Some(&placed_smaller)
        ),
        QueueingHint::Queue
    );
    // Scaled down in memory only (which the pod does not request).
    assert_eq!(
        pod_ev(
            EventResource::AssignedPod,
            ActionType::UPDATE_POD_SCALE_DOWN,
            Some(&placed_less_mem),
            Some(&placed)
        ),
        QueueingHint::Skip
    );
}

#[test]
fn reasons_are_static_and_stable() {
    let id = ResourceId::of("example.com/reason-test").unwrap();
    let a = insufficient_reason(id);
    assert_eq!(a, "Insufficient example.com/reason-test");
    assert!(std::ptr::eq(a, insufficient_reason(id)));
    assert_eq!(insufficient_reason(ResourceId::CPU), REASON_CPU);
}

/// The Filter's answer computed directly from the definition.
fn fits_by_definition(
    alloc: &ResourceVec,
    used: &ResourceVec,
    req: &ResourceVec,
    ids: &[ResourceId],
) -> bool {
    let pods_ok = used[ResourceId::PODS] < alloc[ResourceId::PODS];
    pods_ok
        && ids
            .iter()
            .all(|&id| req[id] == 0 || req[id] <= alloc[id] - used[id])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn filter_accepts_exactly_when_everything_fits(
        alloc in proptest::collection::vec(0i64..6, 5),
        used in proptest::collection::vec(0i64..6, 5),
        req in proptest::collection::vec(0i64..6, 4),
        pods_alloc in 0i64..4,
        pods_used in 0i64..4,
    ) {
        let pl = plugin(json!({}));
        let gpu = ResourceId::of("example.com/prop-gpu").unwrap();
        let ids = [ResourceId::CPU, ResourceId::MEMORY, ResourceId::EPHEMERAL_STORAGE, gpu];
        // Units: cpu in whole cores (millicores underneath), memory and
        // storage in Gi, the gpu in devices.
        let scale = |id: ResourceId| match id {
            ResourceId::CPU => 1000,
            ResourceId::MEMORY | ResourceId::EPHEMERAL_STORAGE => 1 << 30,
            _ => 1,
        };
        let mut node = NodeInfo::placeholder(NodeId(0), Sym::new("n"));
        node.present = true;
        for (i, &id) in ids.iter().enumerate() {
            node.allocatable[id] = alloc[i] * scale(id);
            node.requested[id] = used[i] * scale(id);
        }
        node.allocatable[ResourceId::PODS] = pods_alloc;
        node.requested[ResourceId::PODS] = pods_used;
        let mut b = testing::pod("p");
        for (i, &id) in ids.iter().enumerate() {
            if req[i] > 0 {
                let q = match id {
                    ResourceId::CPU => format!("{}", req[i]),
                    ResourceId::MEMORY | ResourceId::EPHEMERAL_STORAGE => format!("{}Gi", req[i]),
                    _ => format!("{}", req[i]),
                };
                b = b.req(id.name(), &q);
            }
        }
        let pod = b.build();
        let st = run_filter(&pl, &pod, &node);
        let want = fits_by_definition(&node.allocatable, &node.requested, &pod.spec.requests, &ids);
        prop_assert_eq!(st.is_success(), want, "status {}", st);
        if !want {
            prop_assert!(st.is_rejected());
            // One reason per failing resource, nothing else.
            let mut n = usize::from(pods_used + 1 > pods_alloc);
            for &id in &ids {
                let r = pod.spec.requests[id];
                if r > 0 && r > node.allocatable[id] - node.requested[id] {
                    n += 1;
                }
            }
            prop_assert_eq!(st.reasons().len(), n);
            // Unresolvable exactly when some request exceeds the whole node.
            let over = ids.iter().any(|&id| pod.spec.requests[id] > node.allocatable[id]);
            prop_assert_eq!(st.code() == Code::UnschedulableAndUnresolvable, over);
        }
    }

    #[test]
    fn scores_are_within_bounds(
        cpu_alloc in 0i64..64, mem_alloc in 0i64..64, cpu_used in 0i64..80, mem_used in 0i64..80,
        cpu_req in 0i64..40, mem_req in 0i64..40, strategy in 0usize..3,
    ) {
        let args = [
            json!({}),
            json!({"scoringStrategy": {"type": "MostAllocated"}}),
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 3}, {"utilization": 70, "score": 10}, {"utilization": 100, "score": 1}]}}}),
        ];
        let pl = plugin(args[strategy].clone());
        let mut node = NodeInfo::placeholder(NodeId(0), Sym::new("n"));
        node.allocatable[ResourceId::CPU] = cpu_alloc * 1000;
        node.allocatable[ResourceId::MEMORY] = mem_alloc << 30;
        node.non_zero_requested[ResourceId::CPU] = cpu_used * 1000;
        node.non_zero_requested[ResourceId::MEMORY] = mem_used << 30;
        let mut b = testing::pod("p");
        if cpu_req > 0 { b = b.req("cpu", &cpu_req.to_string()); }
        if mem_req > 0 { b = b.req("memory", &format!("{mem_req}Gi")); }
        let s = pl.score(&CycleState::new(), &b.build(), &node).unwrap();
        prop_assert!((0..=MAX_NODE_SCORE).contains(&s));
    }
}
