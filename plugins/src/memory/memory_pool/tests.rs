//! Plugin-level tests, the extension points driven against a cache the way
//! the engine drives them, and the property tests of the issue: lent plus
//! used never exceeds a node's allocatable; every plan's lenders are in the
//! borrower's pool domain; everything lent comes back when borrowers leave.

use super::*;
use k8s_openapi::api::core::v1::Node;
use proptest::prelude::*;
use rustc_hash::FxHashMap;
use strata_scheduler::cache::Cache;
use strata_scheduler::sdk::{Code, Sym};
use strata_scheduler::testing::{self, RecordingCluster};

const GI: i64 = 1 << 30;

/// A server of super-node `sn`, cabinet `cab`, lending `lend`.
fn server(name: &str, sn: &str, cab: &str, mem: &str, lend: Option<&str>) -> Node {
    let mut b = testing::node(name)
        .alloc("cpu", "64")
        .alloc("memory", mem)
        .alloc("pods", "110")
        .label("strata.io/supernode", sn)
        .label("strata.io/cabinet", cab);
    if let Some(l) = lend {
        b = b.annotation(model::LENDABLE, l);
    }
    b.build()
}

struct Harness {
    cache: Cache,
    plugin: Arc<dyn Plugin>,
    store: Arc<PoolStore>,
    cluster: Arc<RecordingCluster>,
}

impl Harness {
    fn new(nodes: Vec<Node>, args: serde_json::Value) -> Harness {
        let cluster = Arc::new(RecordingCluster::default());
        let store = Arc::new(PoolStore::default());
        let plugin: Arc<dyn Plugin> = Arc::new(MemoryPool::new(
            MemoryPoolArgs::parse(Some(&args)).expect("valid args"),
            testing::handle(cluster.clone()),
            store.clone(),
        ));
        let mut cache = Cache::new();
        for n in &nodes {
            cache.upsert_node(n).unwrap();
        }
        let mut h = Harness {
            cache,
            plugin,
            store,
            cluster,
        };
        h.observe_all();
        h
    }

    fn observe_all(&mut self) {
        let snap = self.cache.snapshot();
        for n in snap.nodes() {
            self.plugin
                .as_node_observer()
                .unwrap()
                .node_changed(n, snap);
        }
        self.cache.take_dirty();
    }

    fn observe(&mut self) {
        let dirty = self.cache.take_dirty();
        let snap = self.cache.snapshot();
        for id in dirty {
            self.plugin
                .as_node_observer()
                .unwrap()
                .node_changed(snap.node(id), snap);
        }
    }

    /// What the engine does before each cycle after the observers ran:
    /// the nodes the plugin reports stale get new generations.
    fn invalidate_stale(&mut self) {
        let mut stale = Vec::new();
        self.plugin
            .as_node_observer()
            .unwrap()
            .take_stale_nodes(&mut stale);
        stale.sort_unstable();
        stale.dedup();
        self.cache.invalidate_nodes(&stale);
    }

    /// Pod `pod`'s answer on every node (Filter's code and reasons, and
    /// for a feasible borrower its score), or `None` when PreFilter
    /// decides for all nodes at once (skip or reject: nothing is cached;
    /// the engine keys its cache on the filters that run).
    fn answers(&self, pod: &PodInfo) -> Option<Vec<(NodeId, String)>> {
        let (st, r) = self.pre_filter(pod);
        if !r.status.is_success() {
            return None;
        }
        let snap = self.cache.snapshot();
        let out = snap
            .nodes()
            .map(|n| {
                let s = self.plugin.as_filter().unwrap().filter(&st, pod, n);
                let score = if s.is_success() {
                    self.plugin.as_score().unwrap().score(&st, pod, n).unwrap()
                } else {
                    -1
                };
                (n.id, format!("{s} {score}"))
            })
            .collect();
        Some(out)
    }

    fn id(&self, name: &str) -> NodeId {
        self.cache.snapshot().node_id(Sym::new(name)).unwrap()
    }

    fn pre_filter(&self, pod: &PodInfo) -> (CycleState, PreFilterResult) {
        let mut st = CycleState::default();
        let r =
            self.plugin
                .as_pre_filter()
                .unwrap()
                .pre_filter(&mut st, pod, self.cache.snapshot());
        (st, r)
    }

    fn filter(&self, st: &CycleState, pod: &PodInfo, name: &str) -> Status {
        let snap = self.cache.snapshot();
        self.plugin
            .as_filter()
            .unwrap()
            .filter(st, pod, snap.node(self.id(name)))
    }

    /// One scheduling attempt of this plugin alone (memory fit included):
    /// the best-scoring feasible node, then assume, Reserve and PreBind.
    /// Returns the node, or the rejection.
    fn schedule(&mut self, pod: &Arc<PodInfo>) -> Result<String, Status> {
        let (mut st, r) = self.pre_filter(pod);
        if !r.status.is_success() && !r.status.is_skip() {
            return Err(r.status);
        }
        let snap = self.cache.snapshot();
        let mut best: Option<(i64, NodeId)> = None;
        for n in snap.nodes() {
            let free = n.allocatable[ResourceId::MEMORY] - n.requested[ResourceId::MEMORY];
            if free < pod.spec.requests[ResourceId::MEMORY] {
                continue;
            }
            if !r.status.is_skip()
                && !self
                    .plugin
                    .as_filter()
                    .unwrap()
                    .filter(&st, pod, n)
                    .is_success()
            {
                continue;
            }
            let s = if st.get::<CycleData>().is_some_and(|c| c.ask.is_some()) {
                self.plugin.as_score().unwrap().score(&st, pod, n).unwrap()
            } else {
                0
            };
            if best.is_none_or(|(b, id)| s > b || (s == b && n.id < id)) {
                best = Some((s, n.id));
            }
        }
        let Some((_, id)) = best else {
            return Err(Status::unschedulable("no node"));
        };
        let node = NodeRef {
            id,
            name: snap.node(id).name,
        };
        self.cache.assume(pod.clone(), id).unwrap();
        self.observe();
        let s =
            self.plugin
                .as_reserve()
                .unwrap()
                .reserve(&mut st, pod, node, self.cache.snapshot());
        if !s.is_success() {
            self.plugin
                .as_reserve()
                .unwrap()
                .unreserve(&mut st, pod, node);
            self.cache.forget(&pod.uid).unwrap();
            self.observe();
            return Err(s);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let s = rt.block_on(self.plugin.as_pre_bind().unwrap().pre_bind(&st, pod, node));
        assert!(s.is_success(), "{}", s.message());
        Ok(node.name.as_str().to_owned())
    }

    fn delete(&mut self, uid: &str) {
        self.cache.remove_pod(uid);
        self.observe();
    }

    fn check(&self) {
        self.store
            .with_ledger(|l| l.check(self.cache.snapshot()))
            .unwrap()
            .unwrap();
    }

    fn lent(&self, name: &str) -> i64 {
        self.store
            .with_ledger(|l| l.lent_by(self.id(name)))
            .unwrap()
    }

    fn plan(&self, uid: &str) -> Option<Arc<BorrowPlan>> {
        self.store.with_ledger(|l| l.plan_of(uid).cloned()).unwrap()
    }
}

fn borrower(name: &str, mem: &str, borrow: &str) -> Arc<PodInfo> {
    testing::pod(name)
        .req("memory", mem)
        .annotation(model::BORROW, borrow)
        .arc()
}

/// Two super-nodes; sn-0 has cabinets c0 (a, b) and c1 (c), sn-1 has d.
fn cluster() -> Vec<Node> {
    vec![
        server("a", "sn-0", "c0", "256Gi", None),
        server("b", "sn-0", "c0", "256Gi", Some("32Gi")),
        server("c", "sn-0", "c1", "256Gi", Some("64Gi")),
        server("d", "sn-1", "c2", "256Gi", Some("128Gi")),
    ]
}

#[test]
fn a_borrower_takes_the_nearest_lender_first_and_the_plan_is_written() {
    let mut h = Harness::new(cluster(), serde_json::json!({}));
    // 240Gi local at 25%: 80Gi remote. Only sn-0 (32 + 64) or sn-1 (d's
    // own 128Gi, which it cannot lend to itself) could lend; sn-0 it is.
    let p = borrower("p", "240Gi", "25%");
    assert_eq!(h.schedule(&p).unwrap(), "a");
    let plan = h.plan(&p.uid).unwrap();
    assert_eq!(plan.remote, 80 * GI);
    assert_eq!(plan.pool, "sn-0");
    let lenders: Vec<(&str, i64, model::Distance)> = plan
        .lenders
        .iter()
        .map(|l| (l.node_name.as_str(), l.bytes / GI, l.distance))
        .collect();
    assert_eq!(
        lenders,
        vec![
            ("b", 32, model::Distance::Near),
            ("c", 48, model::Distance::Pool)
        ]
    );
    assert_eq!(h.lent("b"), 32 * GI);
    assert_eq!(h.lent("c"), 48 * GI);
    let patches = h.cluster.annotations.lock().clone();
    assert_eq!(patches.len(), 1);
    let doc: model::PlanDoc = serde_json::from_str(&patches[0].1[model::PLAN]).unwrap();
    assert_eq!(doc.pool, "sn-0");
    assert_eq!(doc.remote_bytes, 80 * GI);
    assert_eq!(doc.lenders[0].node, "b");
    assert_eq!(doc.lenders[0].medium, "dram");
    assert_eq!(doc.lenders[0].distance, "near");
    assert_eq!(doc.lenders[1].distance, "pool");
    h.check();
}

#[test]
fn filter_reads_the_pool_aggregates() {
    let h = Harness::new(cluster(), serde_json::json!({}));
    // 90Gi remote: sn-0 can lend 96Gi to a or... b lends 32, c 64: from a
    // 96Gi, from b only c's 64Gi, from c only b's 32Gi.
    let p = borrower("p", "90Gi", "90Gi");
    let (st, r) = h.pre_filter(&p);
    assert!(r.status.is_success());
    assert!(h.filter(&st, &p, "a").is_success());
    let s = h.filter(&st, &p, "b");
    assert_eq!(s.code(), Code::Unschedulable);
    assert_eq!(
        s.reasons()[0],
        "node(s) whose memory pool cannot lend enough"
    );
    assert!(!h.filter(&st, &p, "c").is_success());
    // d is alone in sn-1: nobody else lends there.
    assert!(!h.filter(&st, &p, "d").is_success());
}

#[test]
fn no_pool_can_lend_enough_names_the_shortfall() {
    let mut h = Harness::new(cluster(), serde_json::json!({}));
    let p = borrower("p", "16Gi", "200Gi");
    let err = h.schedule(&p).unwrap_err();
    // Preemption, which does not model loans, is not tried.
    assert_eq!(err.code(), Code::UnschedulableAndUnresolvable);
    assert_eq!(err.message(), "needs 200Gi remote, pool sn-1 has 128Gi");
    assert_eq!(h.store.metrics().failures["pool_short"], 1);
}

#[test]
fn a_malformed_ask_is_unresolvable_and_names_the_annotation() {
    let h = Harness::new(cluster(), serde_json::json!({}));
    for bad in ["lots", "120%", "-3Gi"] {
        let p = borrower("p", "16Gi", bad);
        let (_, r) = h.pre_filter(&p);
        assert_eq!(r.status.code(), Code::UnschedulableAndUnresolvable, "{bad}");
        assert!(
            r.status.message().contains("strata.io/memory-borrow"),
            "{}",
            r.status.message()
        );
    }
    assert_eq!(h.store.metrics().failures["malformed"], 3);
}

#[test]
fn pods_that_do_not_borrow_skip_until_memory_is_lent() {
    let mut h = Harness::new(cluster(), serde_json::json!({}));
    let plain = testing::pod("plain").req("memory", "200Gi").arc();
    assert!(h.pre_filter(&plain).1.status.is_skip());
    let p = borrower("p", "240Gi", "25%");
    h.schedule(&p).unwrap();
    // b lent 32Gi of its 256Gi: a 240Gi pod no longer fits there, c (48Gi
    // lent) neither; 200Gi still fits on b.
    let (st, r) = h.pre_filter(&plain);
    assert!(r.status.is_success());
    assert!(h.filter(&st, &plain, "b").is_success());
    let big = testing::pod("big").req("memory", "240Gi").arc();
    let (st, _) = h.pre_filter(&big);
    let s = h.filter(&st, &big, "b");
    assert_eq!(
        s.reasons()[0],
        "node(s) lent the memory this pod needs to their pool"
    );
    assert!(h.filter(&st, &big, "d").is_success());
    // Once the borrower leaves, the plain pod skips again.
    h.delete(&p.uid);
    assert!(h.pre_filter(&big).1.status.is_skip());
}

#[test]
fn a_lender_never_lends_what_its_own_pods_requested() {
    let mut h = Harness::new(cluster(), serde_json::json!({}));
    // c's own pod takes 220Gi of 256Gi: it can lend 36Gi, not its 64Gi.
    let own = testing::pod("own").req("memory", "220Gi").on("c").arc();
    h.cache.add_pod(own);
    h.observe();
    // sn-0 can lend a pod on a 32 + 36 = 68Gi.
    let p = borrower("p", "200Gi", "69Gi");
    assert!(h.schedule(&p).is_err());
    let p = borrower("p2", "200Gi", "68Gi");
    assert_eq!(h.schedule(&p).unwrap(), "a");
    assert_eq!(h.lent("c"), 36 * GI);
    h.check();
}

#[test]
fn unreserve_and_deletion_give_everything_back() {
    let mut h = Harness::new(cluster(), serde_json::json!({}));
    let p = borrower("p", "240Gi", "25%");
    let node = h.schedule(&p).unwrap();
    let mut st = CycleState::default();
    st.insert(CycleData {
        view: None,
        ask: None,
        local: 0,
        plan: h.plan(&p.uid),
    });
    let nref = NodeRef {
        id: h.id(&node),
        name: Sym::new(&node),
    };
    h.plugin.as_reserve().unwrap().unreserve(&mut st, &p, nref);
    // Idempotent.
    h.plugin.as_reserve().unwrap().unreserve(&mut st, &p, nref);
    assert_eq!(h.store.metrics().lent_bytes, 0);
    h.cache.forget(&p.uid).unwrap();
    h.observe();
    h.check();
    // Bound, then deleted.
    let q = borrower("q", "240Gi", "25%");
    h.schedule(&q).unwrap();
    assert_eq!(h.store.metrics().lent_bytes, 80 * GI);
    assert_eq!(h.store.metrics().borrowed_by_namespace["default"], 80 * GI);
    assert_eq!(h.store.metrics().borrowed_by_pool["sn-0"], 80 * GI);
    h.delete(&q.uid);
    assert_eq!(h.store.metrics().lent_bytes, 0);
    assert!(h.store.metrics().borrowed_by_namespace.is_empty());
    h.check();
}

#[test]
fn a_namespace_cap_is_kept() {
    let mut h = Harness::new(
        cluster(),
        serde_json::json!({"namespaceCaps": {"team-a": "40Gi"}}),
    );
    let p = testing::pod("p1")
        .namespace("team-a")
        .req("memory", "16Gi")
        .annotation(model::BORROW, "30Gi")
        .arc();
    h.schedule(&p).unwrap();
    let q = testing::pod("p2")
        .namespace("team-a")
        .req("memory", "16Gi")
        .annotation(model::BORROW, "30Gi")
        .arc();
    let err = h.schedule(&q).unwrap_err();
    assert_eq!(err.code(), Code::UnschedulableAndUnresolvable);
    assert_eq!(
        err.message(),
        "namespace team-a holds 30Gi of remote memory; 30Gi more would pass its cap of 40Gi"
    );
    // Another namespace is not capped.
    let r = borrower("p3", "16Gi", "30Gi");
    h.schedule(&r).unwrap();
    assert_eq!(h.store.metrics().failures["namespace_cap"], 1);
    h.check();
}

#[test]
fn a_lender_that_goes_away_or_shrinks_tells_its_borrowers() {
    let mut h = Harness::new(cluster(), serde_json::json!({}));
    let p = borrower("p", "240Gi", "25%");
    h.schedule(&p).unwrap();
    // c shrinks its offer below the 48Gi it lent.
    h.cache
        .upsert_node(&server("c", "sn-0", "c1", "256Gi", Some("16Gi")))
        .unwrap();
    h.observe();
    // b is cordoned.
    let mut b = server("b", "sn-0", "c0", "256Gi", Some("32Gi"));
    b.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        unschedulable: Some(true),
        ..Default::default()
    });
    h.cache.upsert_node(&b).unwrap();
    h.observe();
    // Again: no second event for the same state.
    h.observe_all();
    let events = h.cluster.events.lock().clone();
    let msgs: Vec<&str> = events
        .iter()
        .filter(|e| e.reason == "MemoryLenderLost")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        msgs,
        vec![
            "memory lender c now lends at most 16Gi but has lent 48Gi: 48Gi of this pod's remote memory may be missing",
            "memory lender b is cordoned: 32Gi of this pod's remote memory may be missing",
        ]
    );
    h.check();
    // Deleted.
    h.cache.remove_node(Sym::new("c"));
    h.observe();
    let last = h.cluster.events.lock().last().unwrap().message.clone();
    assert!(last.contains("c was deleted"), "{last}");
    h.check();
}

#[test]
fn hbm_is_taken_after_dram_and_scores_lower() {
    let nodes = vec![
        server("a", "sn-0", "c0", "256Gi", None),
        testing::node("h")
            .alloc("memory", "256Gi")
            .label("strata.io/supernode", "sn-0")
            .label("strata.io/cabinet", "c0")
            .annotation(model::LENDABLE, "64Gi")
            .annotation(model::MEDIUM, "hbm")
            .build(),
        server("x", "sn-0", "c1", "256Gi", Some("64Gi")),
        server("y", "sn-0", "c1", "256Gi", None),
    ];
    let mut h = Harness::new(nodes, serde_json::json!({}));
    let p = borrower("p", "64Gi", "32Gi");
    let (st, _) = h.pre_filter(&p);
    let score = |n: &str| {
        let snap = h.cache.snapshot();
        h.plugin
            .as_score()
            .unwrap()
            .score(&st, &p, snap.node(h.id(n)))
            .unwrap()
    };
    // y has DRAM near it (x); a has only HBM near it (h).
    assert!(score("y") > score("a"), "{} {}", score("y"), score("a"));
    assert_eq!(h.schedule(&p).unwrap(), "y");
    let plan = h.plan(&p.uid).unwrap();
    assert_eq!(plan.lenders[0].node_name.as_str(), "x");
    assert_eq!(plan.lenders[0].medium, model::Medium::Dram);
}

#[derive(Clone, Debug)]
enum Op {
    Borrow { mem_gi: i64, share: i64 },
    Plain { mem_gi: i64, node: usize },
    Leave(usize),
    Offer { node: usize, gi: i64 },
    Cordon(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (8i64..200, 5i64..60).prop_map(|(mem_gi, share)| Op::Borrow { mem_gi, share }),
        2 => (8i64..120, 0usize..8).prop_map(|(mem_gi, node)| Op::Plain { mem_gi, node }),
        3 => (0usize..64).prop_map(Op::Leave),
        1 => (0usize..8, 0i64..200).prop_map(|(node, gi)| Op::Offer { node, gi }),
        1 => (0usize..8, any::<bool>()).prop_map(|(n, c)| Op::Cordon(n, c)),
    ]
}

fn prop_node(i: usize, gi: i64, cordoned: bool) -> Node {
    let mut n = server(
        &format!("n{i}"),
        &format!("sn-{}", i / 4),
        &format!("c{}", i / 2),
        "256Gi",
        Some(&format!("{gi}Gi")),
    );
    if cordoned {
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lending_invariants_hold(ops in prop::collection::vec(op(), 1..40)) {
        let mut offers = [64i64; 8];
        let mut cordoned = [false; 8];
        let nodes = (0..8).map(|i| prop_node(i, 64, false)).collect();
        let mut h = Harness::new(nodes, serde_json::json!({}));
        let mut pods: Vec<Arc<PodInfo>> = Vec::new();
        // Probes of three equivalence classes, each with the answers the
        // engine's cache would hold: (generation, answer) per node.
        let probes = [
            testing::pod("plain-probe").req("memory", "100Gi").arc(),
            borrower("quarter-probe", "60Gi", "25%"),
            borrower("amount-probe", "16Gi", "48Gi"),
        ];
        let mut cached: Vec<FxHashMap<NodeId, (u64, String)>> = vec![FxHashMap::default(); 3];
        for (k, op) in ops.into_iter().enumerate() {
            match op {
                Op::Borrow { mem_gi, share } => {
                    let p = borrower(&format!("b{k}"), &format!("{mem_gi}Gi"), &format!("{share}%"));
                    if let Ok(node) = h.schedule(&p) {
                        let plan = h.plan(&p.uid).unwrap();
                        let pool = |n: &str| n[1..].parse::<usize>().unwrap() / 4;
                        for l in &plan.lenders {
                            // Every lender is in the borrower's pool domain.
                            prop_assert_eq!(pool(l.node_name.as_str()), pool(&node));
                            prop_assert_ne!(l.node_name.as_str(), node.as_str());
                        }
                        pods.push(p);
                    }
                }
                Op::Plain { mem_gi, node } => {
                    let p = testing::pod(&format!("p{k}")).req("memory", &format!("{mem_gi}Gi")).arc();
                    let (st, r) = h.pre_filter(&p);
                    let name = format!("n{node}");
                    let n = h.cache.snapshot().node(h.id(&name)).clone();
                    let fits = n.allocatable[ResourceId::MEMORY] - n.requested[ResourceId::MEMORY]
                        >= p.spec.requests[ResourceId::MEMORY]
                        && (r.status.is_skip() || h.filter(&st, &p, &name).is_success());
                    if fits {
                        h.cache.assume(p.clone(), n.id).unwrap();
                        h.observe();
                        pods.push(p);
                    }
                }
                Op::Leave(i) => {
                    if !pods.is_empty() {
                        let p = pods.remove(i % pods.len());
                        h.delete(&p.uid);
                    }
                }
                Op::Offer { node, gi } => {
                    offers[node] = gi;
                    h.cache.upsert_node(&prop_node(node, gi, cordoned[node])).unwrap();
                    h.observe();
                }
                Op::Cordon(node, c) => {
                    cordoned[node] = c;
                    h.cache.upsert_node(&prop_node(node, offers[node], c)).unwrap();
                    h.observe();
                }
            }
            // Lent plus used within allocatable (unless the node shrank and
            // its borrowers were told), lenders in the pool, view current.
            let r = h.store.with_ledger(|l| l.check(h.cache.snapshot())).unwrap();
            prop_assert!(r.is_ok(), "{:?}", r);
            // A cached answer whose node kept its generation (the plugin
            // reported no change) is still the answer: Filter and Score may
            // be treated as node-local.
            h.invalidate_stale();
            for (probe, memo) in probes.iter().zip(cached.iter_mut()) {
                let Some(now) = h.answers(probe) else { continue };
                let gens = h.cache.snapshot().generations();
                for (id, a) in now {
                    let g = gens[id.index()];
                    if let Some((was_g, was)) = memo.get(&id)
                        && *was_g == g
                    {
                        prop_assert_eq!(was, &a, "step {} {:?} node {:?}", k, probe.name, id);
                    }
                    memo.insert(id, (g, a));
                }
            }
        }
        // Everything lent comes back when the borrowers leave.
        for p in pods.drain(..) {
            h.delete(&p.uid);
        }
        prop_assert_eq!(h.store.metrics().lent_bytes, 0);
        for i in 0..8 {
            prop_assert_eq!(h.lent(&format!("n{i}")), 0);
        }
        let back = h.store.with_ledger(|l| {
            let t = l.topology();
            t.domain(t.root()).agg.free[0]
        }).unwrap();
        let offered: i64 = (0..8).filter(|i| !cordoned[*i]).map(|i| offers[i] * GI).sum();
        prop_assert_eq!(back, offered);
        h.check();
    }
}

#[test]
fn plans_on_bound_pods_are_restored_after_a_restart() {
    let plan = |lenders: &[(&str, i64, &str)]| {
        let doc = model::PlanDoc {
            pool: "sn-0".to_owned(),
            remote_bytes: lenders.iter().map(|l| l.1 * GI).sum(),
            lenders: lenders
                .iter()
                .map(|(n, b, d)| model::LoanDoc {
                    node: n.to_string(),
                    bytes: b * GI,
                    medium: "dram".to_owned(),
                    distance: d.to_string(),
                })
                .collect(),
        };
        serde_json::to_string(&doc).unwrap()
    };
    let mut h = Harness::new(cluster(), serde_json::json!({}));
    // Bound before this scheduler started: one borrower seen before its
    // lenders (a), one after (c).
    let p = testing::pod("p")
        .req("memory", "100Gi")
        .annotation(model::BORROW, "15Gi")
        .annotation(model::PLAN, &plan(&[("b", 10, "near"), ("c", 5, "pool")]))
        .on("a")
        .arc();
    let q = testing::pod("q")
        .req("memory", "100Gi")
        .annotation(model::BORROW, "8Gi")
        .annotation(model::PLAN, &plan(&[("b", 8, "pool")]))
        .on("c")
        .arc();
    let junk = testing::pod("junk")
        .req("memory", "1Gi")
        .annotation(model::PLAN, "{not json")
        .on("b")
        .arc();
    h.cache.add_pod(p.clone());
    h.cache.add_pod(q.clone());
    h.cache.add_pod(junk);
    h.observe();
    assert_eq!(h.lent("b"), 18 * GI);
    assert_eq!(h.lent("c"), 5 * GI);
    assert_eq!(h.plan(&p.uid).unwrap().remote, 15 * GI);
    h.check();
    // A fresh ledger seeing the same cluster, nodes in order.
    let mut h2 = Harness::new(cluster(), serde_json::json!({}));
    h2.cache = std::mem::take(&mut h.cache);
    h2.observe_all();
    assert_eq!(h2.lent("b"), 18 * GI);
    assert_eq!(h2.lent("c"), 5 * GI);
    h2.check();
    h2.delete(&p.uid);
    h2.delete(&q.uid);
    assert_eq!(h2.store.metrics().lent_bytes, 0);
    h2.check();
}

#[test]
fn a_server_without_a_pool_label_lends_nothing_and_stays_out_of_the_graph() {
    let mut nodes = cluster();
    nodes.push(
        testing::node("loner")
            .alloc("cpu", "64")
            .alloc("memory", "256Gi")
            .alloc("pods", "110")
            .annotation(model::LENDABLE, "64Gi")
            .build(),
    );
    let h = Harness::new(nodes, serde_json::json!({}));
    let loner = h.id("loner");
    h.store
        .with_ledger(|l| {
            assert!(!l.topology().has_node(loner.0), "no domain kept for it");
            assert!(l.topology().has_node(h.id("a").0));
        })
        .unwrap();
    let p = borrower("p", "16Gi", "8Gi");
    let (st, r) = h.pre_filter(&p);
    assert!(r.status.is_success());
    let s = h.filter(&st, &p, "loner");
    assert_eq!(
        s.reasons()[0],
        "node(s) whose memory pool cannot lend enough"
    );
    assert!(h.filter(&st, &p, "a").is_success());
    h.check();
}
