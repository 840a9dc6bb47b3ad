//! Plugin-level tests: the extension points driven against a cache, the
//! way the engine drives them, and the property tests of the issue (never
//! beyond capacity; Unreserve returns exactly what Reserve took).

use super::*;
use crate::accelerators::devices::model::DEVICES_ANNOTATION;
use parking_lot::Mutex;
use proptest::prelude::*;
use serde_json::{Value, json};
use strata_scheduler::cache::Cache;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::{BindError, PodCondition, PodEvent};
use strata_scheduler::sdk::{ClusterError, ClusterPort, Code, Sym, WaitingPods};
use strata_scheduler::testing;

#[derive(Default)]
struct Patches {
    patched: Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

#[async_trait::async_trait]
impl ClusterPort for Patches {
    async fn bind(&self, _pod: &PodInfo, _node: Sym) -> Result<(), BindError> {
        Ok(())
    }
    async fn update_pod_condition(
        &self,
        _pod: &PodInfo,
        _c: PodCondition,
    ) -> Result<(), ClusterError> {
        Ok(())
    }
    async fn delete_pod(&self, _pod: &PodInfo, _reason: &str) -> Result<(), ClusterError> {
        Ok(())
    }
    fn record_event(&self, _e: PodEvent) {}
    async fn patch_pod_annotations(
        &self,
        pod: &PodInfo,
        a: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        self.patched.lock().push((pod.key(), a.clone()));
        Ok(())
    }
}

fn handle(cluster: Arc<dyn ClusterPort>) -> Handle {
    Handle {
        cluster,
        waiting: WaitingPods::default(),
        clock: Arc::new(ManualClock::default()),
        scheduler_name: Sym::new("strata-scheduler"),
        preemption: Default::default(),
    }
}

/// A device entry for `strata.io/devices`.
fn gpu(id: &str, model: &str, mem: u64, group: &str) -> Value {
    json!({"kind": "nvidia.com/gpu", "id": id, "model": model, "memoryMiB": mem, "group": group})
}

fn gpu_node(name: &str, devices: &[Value]) -> k8s_openapi::api::core::v1::Node {
    let mut n = testing::node(name)
        .alloc("cpu", "64")
        .alloc("memory", "512Gi")
        .alloc("nvidia.com/gpu", &(devices.len() * 10).to_string())
        .build();
    n.metadata.annotations = Some(
        [(
            DEVICES_ANNOTATION.to_owned(),
            Value::Array(devices.to_vec()).to_string(),
        )]
        .into(),
    );
    n
}

fn eight_a100(name: &str) -> k8s_openapi::api::core::v1::Node {
    let devs: Vec<Value> = (0..8)
        .map(|i| {
            gpu(
                &format!("{name}-g{i}"),
                "A100",
                81920,
                if i < 4 { "nv0" } else { "nv1" },
            )
        })
        .collect();
    gpu_node(name, &devs)
}

fn gpu_pod(name: &str, limits: Value) -> PodInfo {
    testing::pod(name)
        .spec(json!({"containers": [{"name": "main", "resources": {"limits": limits}}]}))
        .build()
}

struct Rig {
    plugin: Devices,
    cache: Cache,
    patches: Arc<Patches>,
}

impl Rig {
    fn new(nodes: Vec<k8s_openapi::api::core::v1::Node>, pods: Vec<PodInfo>, args: Value) -> Rig {
        let patches = Arc::new(Patches::default());
        let plugin = Devices::new(
            DevicesArgs::parse(Some(&args)).unwrap(),
            handle(patches.clone()),
        );
        let mut cache = testing::cache_with(nodes, pods);
        cache.take_dirty();
        for n in cache.snapshot().nodes() {
            plugin.node_changed(n, cache.snapshot());
        }
        Rig {
            plugin,
            cache,
            patches,
        }
    }

    fn notify(&mut self) {
        for id in self.cache.take_dirty() {
            let n = self.cache.snapshot().node(id);
            self.plugin.node_changed(n, self.cache.snapshot());
        }
    }

    fn id(&self, name: &str) -> NodeId {
        self.cache.snapshot().node_id(Sym::new(name)).unwrap()
    }

    fn node_ref(&self, name: &str) -> NodeRef {
        NodeRef {
            id: self.id(name),
            name: Sym::new(name),
        }
    }

    /// PreFilter, PreScore, Score and NormalizeScore of `pod` over `nodes`,
    /// each step asserted to succeed: the scores in the order of `nodes`.
    fn normalized_scores(&self, pod: &PodInfo, nodes: &[&str]) -> Vec<NodeScore> {
        let (mut st, _) = self.pre_filter(pod);
        let ids: Vec<NodeId> = nodes.iter().map(|n| self.id(n)).collect();
        let snap = self.cache.snapshot();
        assert!(self.plugin.pre_score(&mut st, pod, snap, &ids).is_success());
        let mut scores: Vec<NodeScore> = ids
            .iter()
            .map(|id| NodeScore {
                node: *id,
                score: self.plugin.score(&st, pod, snap.node(*id)).unwrap(),
            })
            .collect();
        assert!(self.plugin.normalize(&st, pod, &mut scores).is_success());
        scores
    }

    fn pre_filter(&self, pod: &PodInfo) -> (CycleState, PreFilterResult) {
        let mut st = CycleState::new();
        let r = self.plugin.pre_filter(&mut st, pod, self.cache.snapshot());
        (st, r)
    }

    fn filter(&self, st: &CycleState, pod: &PodInfo, node: &str) -> Status {
        self.plugin
            .filter(st, pod, self.cache.snapshot().node(self.id(node)))
    }

    /// Assumes and reserves like the engine: assume, observers, Reserve.
    fn place(&mut self, pod: &PodInfo, node: &str) -> (CycleState, Status) {
        let (mut st, r) = self.pre_filter(pod);
        assert!(!r.status.is_rejected(), "{:?}", r.status);
        let arc = Arc::new(pod.clone());
        let nr = self.node_ref(node);
        self.cache.assume(arc, nr.id).unwrap();
        self.notify();
        let s = self.plugin.reserve(&mut st, pod, nr, self.cache.snapshot());
        (st, s)
    }

    fn grants(&self, pod: &PodInfo, node: &str) -> Vec<(String, u64, u32)> {
        let t = self.plugin.table.read().clone();
        let e = t.get(self.id(node)).unwrap();
        let mut v: Vec<(String, u64, u32)> =
            e.nd.grants
                .get(&pod.uid)
                .map(|gs| {
                    gs.iter()
                        .map(|g| {
                            (
                                e.nd.devices[g.device as usize].id.to_string(),
                                g.memory,
                                g.cores,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
        v.sort();
        v
    }

    fn used(&self, node: &str) -> Vec<model::Usage> {
        self.plugin
            .table
            .read()
            .get(self.id(node))
            .unwrap()
            .nd
            .used
            .clone()
    }
}

#[test]
fn whole_devices_by_identity_and_unreserve_returns_them() {
    let mut rig = Rig::new(
        vec![eight_a100("n1")],
        vec![],
        json!({"nodePolicy": "Binpack"}),
    );
    let p = gpu_pod(
        "train",
        json!({"nvidia.com/gpu": "2", "nvidia.com/gpucores": "100"}),
    );
    let before = rig.used("n1");
    let (mut st, s) = rig.place(&p, "n1");
    assert!(s.is_success(), "{s:?}");
    let g = rig.grants(&p, "n1");
    assert_eq!(g.len(), 2);
    assert!(
        g.iter()
            .all(|(_, mem, cores)| *mem == 81920 && *cores == 100)
    );
    rig.plugin.check_consistency().unwrap();
    rig.plugin.unreserve(&mut st, &p, rig.node_ref("n1"));
    assert_eq!(
        rig.used("n1"),
        before,
        "unreserve gives back exactly what reserve took"
    );
    // Idempotent.
    rig.plugin.unreserve(&mut st, &p, rig.node_ref("n1"));
    assert_eq!(rig.used("n1"), before);
}

#[test]
fn multi_device_asks_stay_in_one_interconnect_group() {
    let mut rig = Rig::new(
        vec![eight_a100("n1")],
        vec![],
        json!({"nodePolicy": "Binpack"}),
    );
    // One device of group nv0 taken: a 4-device pod must use nv1 whole.
    let small = gpu_pod(
        "small",
        json!({"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"}),
    );
    assert!(rig.place(&small, "n1").1.is_success());
    let g0 = rig.grants(&small, "n1");
    let big = gpu_pod(
        "big",
        json!({"nvidia.com/gpu": "4", "nvidia.com/gpucores": "100"}),
    );
    assert!(rig.place(&big, "n1").1.is_success());
    let g = rig.grants(&big, "n1");
    let in_nv1 = g
        .iter()
        .filter(|(id, _, _)| ["n1-g4", "n1-g5", "n1-g6", "n1-g7"].contains(&id.as_str()))
        .count();
    let in_small = ["n1-g0", "n1-g1", "n1-g2", "n1-g3"].contains(&g0[0].0.as_str());
    assert!(in_small);
    assert_eq!(in_nv1, 4, "{g:?}");
    // Three left in nv0: a 3-device pod takes them (the smallest group that fits).
    let three = gpu_pod(
        "three",
        json!({"nvidia.com/gpu": "3", "nvidia.com/gpucores": "100"}),
    );
    assert!(rig.place(&three, "n1").1.is_success());
    assert!(
        rig.grants(&three, "n1")
            .iter()
            .all(|(id, _, _)| ["n1-g0", "n1-g1", "n1-g2", "n1-g3"].contains(&id.as_str()))
    );
    rig.plugin.check_consistency().unwrap();
}

#[test]
fn shares_binpack_or_spread_per_pod() {
    let devs = [gpu("a", "A100", 40000, "x"), gpu("b", "A100", 40000, "x")];
    let mut rig = Rig::new(
        vec![gpu_node("n1", &devs)],
        vec![],
        json!({"nodePolicy": "Binpack", "devicePolicy": "Binpack"}),
    );
    let share = |name: &str, policy: Option<&str>| {
        let mut b = testing::pod(name)
            .spec(json!({"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000", "nvidia.com/gpucores": "25"}}}]}));
        if let Some(p) = policy {
            b = b.annotation(request::DEVICE_POLICY_ANNOTATION, p);
        }
        b.build()
    };
    let p1 = share("p1", None);
    let p2 = share("p2", None);
    let p3 = share("p3", Some("spread"));
    assert!(rig.place(&p1, "n1").1.is_success());
    assert!(rig.place(&p2, "n1").1.is_success());
    assert_eq!(
        rig.grants(&p1, "n1")[0].0,
        rig.grants(&p2, "n1")[0].0,
        "binpack shares one device"
    );
    assert!(rig.place(&p3, "n1").1.is_success());
    assert_ne!(
        rig.grants(&p3, "n1")[0].0,
        rig.grants(&p1, "n1")[0].0,
        "spread takes the emptier device"
    );
    assert_eq!(rig.grants(&p1, "n1")[0].1, 10000);
    rig.plugin.check_consistency().unwrap();
}

#[test]
fn memory_and_share_count_are_never_overcommitted() {
    let devs = [json!({"kind": "nvidia.com/gpu", "id": "a", "memoryMiB": 1000, "shares": 3})];
    let mut rig = Rig::new(vec![gpu_node("n1", &devs)], vec![], json!({}));
    let p =
        |n: &str, mem: &str| gpu_pod(n, json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem": mem}));
    assert!(rig.place(&p("a", "600"), "n1").1.is_success());
    let big = p("b", "500");
    let (st, _) = rig.pre_filter(&big);
    let s = rig.filter(&st, &big, "n1");
    assert_eq!(s.code(), Code::Unschedulable);
    assert_eq!(s.message(), "Insufficient nvidia.com/gpu devices");
    assert!(rig.place(&p("c", "200"), "n1").1.is_success());
    assert!(rig.place(&p("d", "100"), "n1").1.is_success());
    let e = p("e", "10");
    let (st, _) = rig.pre_filter(&e);
    assert!(
        rig.filter(&st, &e, "n1").is_rejected(),
        "share count 3 reached"
    );
    rig.plugin.check_consistency().unwrap();
}

#[test]
fn hami_type_and_uuid_selection_is_honoured() {
    let v100 = gpu_node(
        "old",
        &[gpu("v-0", "NVIDIA-Tesla V100-PCIE-32GB", 32768, "x")],
    );
    let a100 = gpu_node(
        "new",
        &[
            gpu("a-0", "NVIDIA-A100-SXM4-80GB", 81920, "x"),
            gpu("a-1", "NVIDIA-A100-SXM4-80GB", 81920, "x"),
        ],
    );
    let rig = Rig::new(vec![v100, a100], vec![], json!({}));
    let p = testing::pod("p")
        .annotation("nvidia.com/use-gputype", "a100")
        .annotation("nvidia.com/nouse-gpuuuid", "a-0")
        .spec(json!({"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}))
        .build();
    let (st, r) = rig.pre_filter(&p);
    assert!(r.status.is_success());
    let s = rig.filter(&st, &p, "old");
    assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
    assert!(s.message().contains("type or UUID"), "{s}");
    assert!(rig.filter(&st, &p, "new").is_success());
    let mut rig = rig;
    assert!(rig.place(&p, "new").1.is_success());
    assert_eq!(rig.grants(&p, "new")[0].0, "a-1");
}

#[test]
fn bad_input_is_unresolvable_with_a_message() {
    let rig = Rig::new(vec![eight_a100("n1")], vec![], json!({}));
    let p = gpu_pod(
        "p",
        json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "150"}),
    );
    let (_, r) = rig.pre_filter(&p);
    assert_eq!(r.status.code(), Code::UnschedulableAndUnresolvable);
    assert!(
        r.status
            .message()
            .contains("nvidia.com/gpumem-percentage 150"),
        "{}",
        r.status
    );
    let mut bad = testing::node("broken").alloc("nvidia.com/gpu", "8").build();
    bad.metadata.annotations = Some([(DEVICES_ANNOTATION.to_owned(), "[{oops".to_owned())].into());
    let rig = Rig::new(vec![bad], vec![], json!({}));
    let p = gpu_pod("p", json!({"nvidia.com/gpu": "1"}));
    let (st, _) = rig.pre_filter(&p);
    let s = rig.filter(&st, &p, "broken");
    assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
    assert!(
        s.message()
            .contains("node broken has unreadable device details")
            && s.message().contains("strata.io/devices"),
        "{s}"
    );
}

#[test]
fn observer_accounts_bound_pods_and_releases_deleted_ones() {
    // A pod bound before (by an earlier run) with its assignment annotation.
    let prior = testing::pod("prior")
        .on("n1")
        .annotation("hami.io/vgpu-devices-allocated", "n1-g5,NVIDIA,40960,50:;")
        .spec(json!({"nodeName": "n1", "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50", "nvidia.com/gpucores": "50"}}}]}))
        .build();
    // A pod bound without any annotation: accounted on some device.
    let bare = testing::pod("bare")
        .spec(json!({"nodeName": "n1", "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "2", "nvidia.com/gpucores": "100"}}}]}))
        .build();
    let mut rig = Rig::new(
        vec![eight_a100("n1")],
        vec![prior.clone(), bare.clone()],
        json!({}),
    );
    assert_eq!(
        rig.grants(&prior, "n1"),
        vec![("n1-g5".to_owned(), 40960, 50)]
    );
    assert_eq!(rig.grants(&bare, "n1").len(), 2);
    rig.plugin.check_consistency().unwrap();
    rig.cache.remove_pod(&prior.uid);
    rig.notify();
    assert!(rig.grants(&prior, "n1").is_empty());
    assert_eq!(rig.used("n1")[5], model::Usage::default());
}

#[test]
fn node_update_keeps_grants_by_identity() {
    let mut rig = Rig::new(
        vec![eight_a100("n1")],
        vec![],
        json!({"nodePolicy": "Binpack"}),
    );
    let p = gpu_pod(
        "p",
        json!({"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"}),
    );
    assert!(rig.place(&p, "n1").1.is_success());
    let held = rig.grants(&p, "n1");
    // The node object is updated (devices reordered): grants follow the ids.
    let mut devs: Vec<Value> = (0..8)
        .rev()
        .map(|i| gpu(&format!("n1-g{i}"), "A100", 81920, "nv"))
        .collect();
    devs.push(gpu("n1-g8", "A100", 81920, "nv"));
    rig.cache.upsert_node(&gpu_node("n1", &devs)).unwrap();
    rig.notify();
    assert_eq!(rig.grants(&p, "n1"), held);
    rig.plugin.check_consistency().unwrap();
}

#[test]
fn prebind_writes_the_assignment_through_the_port() {
    let mut rig = Rig::new(vec![eight_a100("n1")], vec![], json!({}));
    let p = gpu_pod(
        "p",
        json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "20000", "nvidia.com/gpucores": "30"}),
    );
    let (st, s) = rig.place(&p, "n1");
    assert!(s.is_success());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let s = rt.block_on(rig.plugin.pre_bind(&st, &p, rig.node_ref("n1")));
    assert!(s.is_success(), "{s}");
    let patched = rig.patches.patched.lock().clone();
    assert_eq!(patched.len(), 1);
    let (key, ann) = &patched[0];
    assert_eq!(key, "default/p");
    let id = &rig.grants(&p, "n1")[0].0;
    assert_eq!(
        ann["hami.io/vgpu-devices-to-allocate"],
        format!("{id},NVIDIA,20000,30:;")
    );
    assert!(ann[assign::ASSIGNMENT_ANNOTATION].contains(id.as_str()));
}

#[test]
fn fragmentation_policy_fills_fragments_first() {
    // Two nodes: one GPU half used on n1, empty GPUs on n2. Mix: half
    // whole-GPU pods, half 50% shares. A 50% share belongs on n1's half.
    let args =
        json!({"workload": [{"devices": 1, "weight": 1}, {"sharePercent": 50, "weight": 1}]});
    let devs1 = [
        gpu("n1-a", "A100", 1000, "x"),
        gpu("n1-b", "A100", 1000, "x"),
    ];
    let devs2 = [
        gpu("n2-a", "A100", 1000, "x"),
        gpu("n2-b", "A100", 1000, "x"),
    ];
    let mut rig = Rig::new(
        vec![gpu_node("n1", &devs1), gpu_node("n2", &devs2)],
        vec![],
        args,
    );
    let half = |n: &str| {
        gpu_pod(
            n,
            json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50", "nvidia.com/gpucores": "50"}),
        )
    };
    assert!(rig.place(&half("first"), "n1").1.is_success());
    let p = half("second");
    let scores = rig.normalized_scores(&p, &["n1", "n2"]);
    assert_eq!(scores[0].score, MAX_NODE_SCORE, "{scores:?}");
    assert_eq!(scores[1].score, 0, "{scores:?}");
    // And within n1 it lands on the half-used device.
    assert!(rig.place(&p, "n1").1.is_success());
    assert_eq!(
        rig.grants(&p, "n1")[0].0,
        rig.grants(&half("first"), "n1")[0].0
    );
}

#[test]
fn fragmentation_ties_go_to_the_tighter_node() {
    // Mix: 25% shares only. A 25% share leaves every GPU usable for the
    // class on either node (no fragmentation change): the node already in
    // use must win, not a coin toss that spreads pods over empty nodes.
    let args = json!({"workload": [{"sharePercent": 25, "weight": 1}]});
    let mut rig = Rig::new(
        vec![
            gpu_node("n1", &[gpu("n1-a", "A100", 1000, "x")]),
            gpu_node("n2", &[gpu("n2-a", "A100", 1000, "x")]),
        ],
        vec![],
        args,
    );
    let quarter = |n: &str| {
        gpu_pod(
            n,
            json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "25", "nvidia.com/gpucores": "25"}),
        )
    };
    assert!(rig.place(&quarter("first"), "n1").1.is_success());
    let p = quarter("second");
    let scores = rig.normalized_scores(&p, &["n1", "n2"]);
    assert_eq!(scores[0].score, MAX_NODE_SCORE, "{scores:?}");
    assert!(scores[1].score < MAX_NODE_SCORE, "{scores:?}");
}

/// A node of `cpu` cores and 512 GiB with `gpus` anonymous-model GPUs.
fn node_with_cpu(name: &str, cpu: &str, gpus: usize) -> k8s_openapi::api::core::v1::Node {
    let devs: Vec<Value> = (0..gpus)
        .map(|i| gpu(&format!("{name}-g{i}"), "A100", 1000, "x"))
        .collect();
    let mut n = gpu_node(name, &devs);
    if let Some(st) = n.status.as_mut() {
        for m in [&mut st.allocatable, &mut st.capacity]
            .into_iter()
            .flatten()
        {
            m.insert(
                "cpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.into()),
            );
        }
    }
    n
}

#[test]
fn cpu_only_pods_prefer_nodes_without_devices() {
    // A cpu-only pod changes no GPU's usability on either node, but the
    // cpu of the GPU node is what its GPUs' pods will need: the plain
    // node wins.
    let args =
        json!({"scoreAllPods": true, "workload": [{"devices": 1, "cpu": "10", "weight": 1}]});
    let plain = testing::node("plain")
        .alloc("cpu", "64")
        .alloc("memory", "512Gi")
        .build();
    let rig = Rig::new(vec![node_with_cpu("gpu", "64", 2), plain], vec![], args);
    let web = testing::pod("web")
        .req("cpu", "4")
        .req("memory", "1Gi")
        .build();
    let scores = rig.normalized_scores(&web, &["gpu", "plain"]);
    assert_eq!(scores[1].score, MAX_NODE_SCORE, "{scores:?}");
    assert!(scores[0].score < MAX_NODE_SCORE, "{scores:?}");
}

#[test]
fn cpu_only_pods_keep_off_cpu_that_gpus_need() {
    // Expected: 1-GPU pods of 10 cores. "tight" has 2 GPUs and 24 cores:
    // both GPUs are usable (2 pods × 10 cores). An 8-core pod there leaves
    // 16 of the 20 cores they need: 40% of a GPU stranded. On "roomy" (100
    // cores) it strands nothing. Before cpu bounded the usable devices both
    // nodes scored alike and the tighter one won.
    let args =
        json!({"scoreAllPods": true, "workload": [{"devices": 1, "cpu": "10", "weight": 1}]});
    let rig = Rig::new(
        vec![
            node_with_cpu("tight", "24", 2),
            node_with_cpu("roomy", "100", 2),
        ],
        vec![],
        args,
    );
    let batch = testing::pod("batch")
        .req("cpu", "8")
        .req("memory", "1Gi")
        .build();
    let scores = rig.normalized_scores(&batch, &["tight", "roomy"]);
    assert_eq!(scores[1].score, MAX_NODE_SCORE, "{scores:?}");
    assert_eq!(scores[0].score, 0, "{scores:?}");
    // A 1-GPU pod of 10 cores strands nothing on either: the tighter node
    // (its cpu matches its GPUs) takes it.
    let train = testing::pod("train")
        .spec(json!({"containers": [{"name": "main", "resources": {
            "requests": {"cpu": "10", "memory": "1Gi"},
            "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"}}}]}))
        .build();
    let scores = rig.normalized_scores(&train, &["tight", "roomy"]);
    assert_eq!(scores[0].score, MAX_NODE_SCORE, "{scores:?}");
}

#[test]
fn preemption_what_if_sees_devices_freed() {
    let victim = testing::pod("victim")
        .spec(json!({"nodeName": "n1", "containers": [{"name": "main", "resources": {"limits": {"huawei.com/Ascend910": "8"}}}]}))
        .build();
    let n = testing::node("n1")
        .alloc("huawei.com/Ascend910", "8")
        .build();
    let rig = Rig::new(vec![n], vec![victim.clone()], json!({}));
    let p = testing::pod("p")
        .spec(json!({"containers": [{"name": "main", "resources": {"limits": {"huawei.com/Ascend910": "4"}}}]}))
        .build();
    let (mut st, _) = rig.pre_filter(&p);
    assert_eq!(rig.filter(&st, &p, "n1").code(), Code::Unschedulable);
    let node = rig.cache.snapshot().node(rig.id("n1")).clone();
    assert!(
        rig.plugin
            .remove_pod(&mut st, &p, &victim, &node)
            .is_success()
    );
    assert!(rig.filter(&st, &p, "n1").is_success());
}

#[derive(Clone, Debug)]
enum Op {
    Place {
        mem_pct: u32,
        cores: u32,
        count: u32,
    },
    Unreserve(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop_oneof![Just(0u32), 10u32..=100], prop_oneof![Just(0u32), Just(100), 5u32..=60], 1u32..=3)
            .prop_map(|(mem_pct, cores, count)| Op::Place { mem_pct, cores, count }),
        1 => (0usize..16).prop_map(Op::Unreserve),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever sequence of placements and unreserves: no device beyond its
    /// memory, compute or share count, and Unreserve restores the exact use
    /// from before the matching Reserve.
    #[test]
    fn reserve_never_exceeds_capacity_and_unreserve_is_exact(ops in proptest::collection::vec(op(), 1..40)) {
        let devs: Vec<Value> = (0..4)
            .map(|i| json!({"kind": "nvidia.com/gpu", "id": format!("g{i}"), "memoryMiB": 1000 + i * 500, "shares": 4, "group": if i < 2 { "a" } else { "b" }}))
            .collect();
        let mut rig = Rig::new(vec![gpu_node("n1", &devs)], vec![], json!({"nodePolicy": "Binpack"}));
        let mut placed: Vec<(PodInfo, CycleState, Vec<model::Usage>)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            match o {
                Op::Place { mem_pct, cores, count } => {
                    let mut limits = json!({"nvidia.com/gpu": count.to_string()});
                    if *mem_pct > 0 {
                        limits["nvidia.com/gpumem-percentage"] = json!(mem_pct.to_string());
                    }
                    if *cores > 0 {
                        limits["nvidia.com/gpucores"] = json!(cores.to_string());
                    }
                    let p = gpu_pod(&format!("p{i}"), limits);
                    let before = rig.used("n1");
                    let (st, f) = rig.pre_filter(&p);
                    let fits = rig.filter(&st, &p, "n1").is_success();
                    drop(st);
                    let _ = f;
                    let (st, s) = rig.place(&p, "n1");
                    prop_assert_eq!(fits, s.is_success(), "Filter and Reserve agree");
                    if s.is_success() {
                        placed.push((p, st, before));
                    } else {
                        rig.cache.forget(&p.uid).unwrap();
                        rig.notify();
                        prop_assert_eq!(rig.used("n1"), before);
                    }
                }
                Op::Unreserve(k) => {
                    // Unreserve the most recent placement (reverse order
                    // restores the exact earlier state).
                    if placed.is_empty() { continue; }
                    let _ = k;
                    let (p, mut st, before) = placed.pop().unwrap();
                    rig.plugin.unreserve(&mut st, &p, rig.node_ref("n1"));
                    prop_assert_eq!(rig.used("n1"), before);
                    rig.cache.forget(&p.uid).unwrap();
                    rig.notify();
                }
            }
            prop_assert!(rig.plugin.check_consistency().is_ok(), "{:?}", rig.plugin.check_consistency());
            // The domain aggregates follow every grant and release.
            let free_whole = rig.used("n1").iter().filter(|u| u.tasks == 0).count() as i64;
            let d = rig.plugin.domains().cluster("nvidia.com/gpu").unwrap_or_default();
            prop_assert_eq!(d.devices, free_whole);
            prop_assert!(rig.plugin.domains().check_consistency().is_ok());
        }
    }
}

#[test]
fn domain_aggregates_follow_reserve_bind_delete_and_cordon() {
    let label = |mut n: k8s_openapi::api::core::v1::Node, sn: &str| {
        n.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("strata.io/supernode".into(), sn.into());
        n
    };
    let mut rig = Rig::new(
        vec![
            label(eight_a100("a1"), "sn-a"),
            label(eight_a100("a2"), "sn-a"),
            label(eight_a100("b1"), "sn-b"),
        ],
        vec![],
        json!({"nodePolicy": "Binpack"}),
    );
    let dom = rig.plugin.domains().clone();
    let free = |sn: &str| {
        dom.domains("strata.io/supernode", "nvidia.com/gpu/A100")
            .unwrap()
            .into_iter()
            .find(|d| d.domain == sn)
            .map(|d| d.free.devices)
    };
    assert_eq!(free("sn-a"), Some(16));
    assert_eq!(free("sn-b"), Some(8));
    let p = gpu_pod(
        "p",
        json!({"nvidia.com/gpu": "6", "nvidia.com/gpucores": "100"}),
    );
    let (mut st, s) = rig.place(&p, "a1");
    assert!(s.is_success(), "{s:?}");
    assert_eq!(free("sn-a"), Some(10));
    // 12 free devices with 8 on one node: only sn-a has 12.
    let fit = dom
        .fitting("strata.io/supernode", "nvidia.com/gpu", 12, Some(8))
        .unwrap();
    assert_eq!(fit.len(), 0, "sn-a has 10 left, sn-b 8: {fit:?}");
    let fit = dom
        .fitting("strata.io/supernode", "nvidia.com/gpu", 8, Some(8))
        .unwrap();
    assert_eq!(
        fit.iter().map(|d| d.domain.as_str()).collect::<Vec<_>>(),
        ["sn-b", "sn-a"],
        "tightest first"
    );
    rig.plugin.unreserve(&mut st, &p, rig.node_ref("a1"));
    assert_eq!(free("sn-a"), Some(16));
    // Cordon b1: sn-b offers nothing.
    let mut b1 = label(eight_a100("b1"), "sn-b");
    b1.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
    rig.cache.upsert_node(&b1).unwrap();
    rig.notify();
    assert_eq!(free("sn-b"), Some(0));
    // Relabel a2 into sn-b: it moves with its devices.
    rig.cache
        .upsert_node(&label(eight_a100("a2"), "sn-b"))
        .unwrap();
    rig.notify();
    assert_eq!(free("sn-a"), Some(8));
    assert_eq!(free("sn-b"), Some(8));
    dom.check_consistency().unwrap();
}
