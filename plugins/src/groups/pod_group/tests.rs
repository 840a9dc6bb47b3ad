//! PodGroup tests: the plugin's hooks driven by the real engine with an
//! in-memory cluster, plus property tests for all-or-nothing placement and
//! for the absence of deadlock between competing groups.

use super::*;
use crate::common::testkit::FakeCluster;
use k8s_openapi::api::core::v1 as corev1;
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::Scheduler;
use strata_scheduler::sdk::Sym;
use strata_scheduler::testing::{node, pod};

const GPU: &str = "nvidia.com/gpu";

/// The engine with the default plugins (PodGroup included) against an
/// in-memory cluster, driven to quiescence like the simulator does.
struct Harness {
    s: Scheduler,
    cluster: Arc<FakeCluster>,
    clock: Arc<ManualClock>,
    stores: crate::Stores,
    pods: BTreeMap<String, Arc<PodInfo>>,
    fed: usize,
    _rt: tokio::runtime::Runtime,
}

impl Harness {
    fn new(nodes: Vec<corev1::Node>) -> Harness {
        Harness::with_stores(nodes, crate::Stores::default())
    }

    fn with_stores(nodes: Vec<corev1::Node>, stores: crate::Stores) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cluster = Arc::new(FakeCluster::default());
        let clock = Arc::new(ManualClock::default());
        let mut cfg = SchedulerConfig::default_with_name("strata-scheduler");
        cfg.parallelism = 1;
        let mut s = Scheduler::new(
            cfg,
            &crate::registry_with(&stores),
            &crate::default_plugins(),
            cluster.clone(),
            clock.clone(),
            rt.handle().clone(),
        )
        .unwrap();
        for n in nodes {
            s.handle_update(ClusterUpdate::NodeUpserted(Arc::new(n)));
        }
        Harness {
            s,
            cluster,
            clock,
            stores,
            pods: BTreeMap::new(),
            fed: 0,
            _rt: rt,
        }
    }

    fn add(&mut self, p: PodInfo) {
        let p = Arc::new(p);
        self.pods.insert(p.key(), p.clone());
        self.s.handle_update(ClusterUpdate::PodUpserted(p));
    }

    fn delete(&mut self, key: &str) {
        if let Some(p) = self.pods.remove(key) {
            self.stores.pod_groups.forget_pod(&p.uid);
            self.s
                .handle_update(ClusterUpdate::PodDeleted { uid: p.uid.clone() });
        }
    }

    fn group(&mut self, obj: serde_json::Value) {
        let k = self.stores.pod_groups.upsert_object(&obj).unwrap();
        self.s.handle_update(ClusterUpdate::Custom {
            kind: KIND,
            namespace: k.namespace,
            name: k.name.as_str().to_owned(),
        });
    }

    /// Schedules until nothing moves; returns the last messages per pod.
    fn run(&mut self) -> BTreeMap<String, String> {
        let mut msgs = BTreeMap::new();
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(o) = self.s.schedule_one() {
                moved = true;
                if let strata_scheduler::engine::CycleResult::Unschedulable { message } = o.result {
                    msgs.insert(o.pod.key(), message);
                } else {
                    msgs.remove(&o.pod.key());
                }
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while self.s.in_flight() > self.s.waiting_pods().len()
                && std::time::Instant::now() < deadline
            {
                self.s.wait_for_completion(Duration::from_millis(20));
            }
            self.s.process_completions();
            let bound = self.cluster.bound();
            for (key, node) in bound[self.fed..].iter() {
                if let Some(p) = self.pods.get(key) {
                    let mut b = (**p).clone();
                    b.bound_node = Some(Sym::new(node));
                    self.s
                        .handle_update(ClusterUpdate::PodUpserted(Arc::new(b)));
                }
                moved = true;
            }
            self.fed = bound.len();
            if !moved && self.s.queue_stats().active == 0 {
                break;
            }
        }
        msgs
    }

    /// Moves the clock, ticks and runs.
    fn advance(&mut self, d: Duration) -> BTreeMap<String, String> {
        self.clock.advance(d);
        self.s.tick();
        // Pods rejected at Permit finish their binding cycles off-thread.
        while self.s.wait_for_completion(Duration::from_millis(30)) > 0 {}
        self.run()
    }

    fn bound(&self) -> BTreeMap<String, String> {
        self.cluster
            .bound()
            .into_iter()
            .filter(|(k, _)| self.pods.contains_key(k))
            .collect()
    }

    fn bound_of(&self, prefix: &str) -> usize {
        self.bound()
            .keys()
            .filter(|k| k.starts_with(&format!("default/{prefix}")))
            .count()
    }
}

/// `sn` super-nodes × `cab` cabinets × `per` servers with 8 GPUs.
fn cluster(sn: u32, cab: u32, per: u32) -> Vec<corev1::Node> {
    let mut out = Vec::new();
    for s in 0..sn {
        for c in 0..cab {
            for h in 0..per {
                out.push(
                    node(&format!("n-{s}-{c}-{h}"))
                        .label("strata.io/supernode", &format!("sn{s}"))
                        .label("strata.io/cabinet", &format!("cab{c}"))
                        .alloc(GPU, "8")
                        .alloc("cpu", "64")
                        .build(),
                );
            }
        }
    }
    out
}

/// A member of inline group `group` (annotations define it).
fn member(group: &str, i: u32, min: u32, gpus: u32) -> strata_scheduler::testing::PodBuilder {
    pod(&format!("{group}-{i}"))
        .label(spec::GROUP_LABEL, group)
        .annotation(spec::ANN_MIN_MEMBER, &min.to_string())
        .req(GPU, &gpus.to_string())
        .req("cpu", "1")
}

fn supernode_of(node: &str) -> &str {
    node.split('-').nth(1).unwrap_or("")
}

#[test]
fn plain_pods_sort_exactly_like_priority_sort() {
    let h = Harness::new(vec![]);
    let _ = h;
    let store = PodGroupStore::new();
    let p = factory_with(None, &crate::common::testkit::handle(), &store).unwrap();
    let qs = p.as_queue_sort().unwrap();
    let priority_sort = crate::registry().get("PrioritySort").expect("registered")(
        None,
        &crate::common::testkit::handle(),
    )
    .unwrap();
    let ps = priority_sort.as_queue_sort().unwrap();
    for (prio, t) in [(0, 5u64), (100, 1), (-3, 99)] {
        let pd = pod("x").priority(prio).build();
        assert_eq!(qs.sort_key(&pd, t), ps.sort_key(&pd, t));
    }
    // Members share one key whatever their own enqueue time.
    let a = member("g", 0, 2, 1).build();
    let b = member("g", 1, 2, 1).build();
    assert_eq!(qs.sort_key(&a, 10), qs.sort_key(&b, 500));
    assert!(qs.sort_key(&a, 10) < qs.sort_key(&pod("late").build(), 11));
}

#[test]
fn pod_group_claims_preemption_of_its_members() {
    let handle = crate::common::testkit::handle();
    let _plugin = factory_with(None, &handle, &PodGroupStore::new()).unwrap();
    let claims = handle.preemption.current();
    // Running members are never lone victims; other pods may be.
    assert!(claims.victim_claimed(&member("g", 0, 2, 1).build()));
    assert!(!claims.victim_claimed(&pod("lone").build()));
    // A member's preemption is PodGroup's once its PreFilter marked the
    // cycle.
    let mut state = CycleState::new();
    let m = member("g", 0, 2, 1).build();
    assert_eq!(claims.preemptor_claimant(&state, &m), None);
    state.insert(super::preempt::GroupCycle::default());
    assert_eq!(claims.preemptor_claimant(&state, &m), Some(NAME));
}

#[test]
fn gang_waits_for_min_member_then_binds_whole_in_one_super_node() {
    let mut h = Harness::new(cluster(2, 2, 2));
    h.add(
        member("job", 0, 3, 8)
            .annotation(spec::ANN_REQUIRED_LEVEL, "strata.io/supernode")
            .build(),
    );
    h.add(
        member("job", 1, 3, 8)
            .annotation(spec::ANN_REQUIRED_LEVEL, "strata.io/supernode")
            .build(),
    );
    h.run();
    assert_eq!(h.bound().len(), 0, "two of three members must not start");
    assert_eq!(h.s.queue_stats().gated, 2);
    h.add(
        member("job", 2, 3, 8)
            .annotation(spec::ANN_REQUIRED_LEVEL, "strata.io/supernode")
            .build(),
    );
    h.run();
    let b = h.bound();
    assert_eq!(b.len(), 3, "{b:?}");
    let sns: std::collections::BTreeSet<_> =
        b.values().map(|n| supernode_of(n).to_owned()).collect();
    assert_eq!(sns.len(), 1, "one super-node: {b:?}");
    h.s.cache().check_consistency().unwrap();
    let st = h.stores.pod_groups.all_status();
    assert_eq!((st[0].1.bound, st[0].1.running), (3, 0));
    assert_eq!(st[0].1.phase, GroupPhase::Bound);
    // The kubelet starts two, then the third: Running once minMember run.
    let start = |h: &mut Harness, key: &str| {
        let mut p = (*h.pods[key]).clone();
        p.bound_node = Some(Sym::new(&b[key]));
        p.running = true;
        h.s.handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
    };
    let keys: Vec<String> = b.keys().cloned().collect();
    start(&mut h, &keys[0]);
    start(&mut h, &keys[1]);
    let st = h.stores.pod_groups.all_status();
    assert_eq!((st[0].1.running, st[0].1.phase), (2, GroupPhase::Bound));
    start(&mut h, &keys[2]);
    let st = h.stores.pod_groups.all_status();
    assert_eq!((st[0].1.running, st[0].1.phase), (3, GroupPhase::Running));
}

#[test]
fn group_that_can_never_fit_is_rejected_with_a_clear_message() {
    let mut h = Harness::new(cluster(2, 1, 2)); // 16 GPUs per super-node
    for i in 0..3 {
        h.add(
            member("big", i, 3, 8)
                .annotation(spec::ANN_REQUIRED_LEVEL, "strata.io/supernode")
                .build(),
        );
    }
    let msgs = h.run();
    assert_eq!(h.bound().len(), 0);
    let m = msgs.values().next().expect("a member was tried");
    assert!(
        m.contains("pod group default/big can never be placed"),
        "{m}"
    );
    assert!(
        m.contains(
            "need 24 nvidia.com/gpu within one strata.io/supernode but the largest offers 16"
        ),
        "{m}"
    );
    // Rejected early: tried once, not churning.
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let st = h.stores.pod_groups.all_status();
    assert!(
        st.is_empty() || st[0].1.phase == GroupPhase::Invalid,
        "{st:?}"
    );
}

#[test]
fn malformed_annotations_and_contradictions_are_reported_on_the_pods() {
    let mut h = Harness::new(cluster(1, 1, 2));
    h.add(
        member("bad", 0, 1, 1)
            .annotation(spec::ANN_TIMEOUT, "soon")
            .build(),
    );
    let msgs = h.run();
    let m = &msgs["default/bad-0"];
    assert!(
        m.contains("pod group default/bad is invalid: strata.io/schedule-timeout-seconds"),
        "{m}"
    );
    h.group(json!({"apiVersion": "strata.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "pd"},
        "spec": {"topology": {"requiredLevel": "strata.io/cabinet"},
                 "subGroups": [{"name": "prefill", "minMember": 1, "topology": {"requiredLevel": "strata.io/supernode"}}]}}));
    h.add(
        pod("pd-0")
            .label(spec::GROUP_LABEL, "pd")
            .label(spec::SUBGROUP_LABEL, "prefill")
            .build(),
    );
    let msgs = h.run();
    let m = &msgs["default/pd-0"];
    assert!(
        m.contains("pod group default/pd is invalid")
            && m.contains("cannot be wider than its group"),
        "{m}"
    );
    h.group(json!({"apiVersion": "strata.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "ov"},
        "spec": {"subGroups": [
            {"name": "a", "minMember": 1, "selector": {"matchLabels": {"x": "1"}}},
            {"name": "b", "minMember": 1, "selector": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}]}}));
    h.add(
        pod("ov-0")
            .label(spec::GROUP_LABEL, "ov")
            .label("x", "1")
            .build(),
    );
    let msgs = h.run();
    assert!(
        msgs["default/ov-0"].contains("must not overlap"),
        "{msgs:?}"
    );
    assert_eq!(h.bound().len(), 0);
}

/// A minMember no cluster can meet (a group's or a subgroup's, from the
/// PodGroup object or the annotations) is reported on the pods, naming the
/// field; the pods used to wait for members forever without an event.
#[test]
fn minmember_that_can_never_be_met_is_reported_on_the_pods() {
    let mut h = Harness::new(cluster(1, 1, 2));
    h.add(member("huge", 0, u32::MAX, 1).build());
    h.group(
        json!({"apiVersion": "strata.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "sg"},
        "spec": {"minMember": 1, "subGroups": [{"name": "prefill", "minMember": 4294967295u64}]}}),
    );
    h.add(
        pod("sg-0")
            .label(spec::GROUP_LABEL, "sg")
            .label(spec::SUBGROUP_LABEL, "prefill")
            .build(),
    );
    h.add(
        member("sga", 0, 1, 1)
            .annotation(spec::ANN_SUBGROUPS, "a:1,b:4294967295")
            .label(spec::SUBGROUP_LABEL, "a")
            .build(),
    );
    let msgs = h.run();
    for (pod, field) in [
        ("default/huge-0", "strata.io/min-member"),
        ("default/sg-0", "spec.subGroups[0].minMember"),
        ("default/sga-0", "strata.io/subgroups[1]"),
    ] {
        let m = msgs
            .get(pod)
            .unwrap_or_else(|| panic!("no message for {pod}: {msgs:?}"));
        assert!(
            m.contains("is invalid") && m.contains(field) && m.contains("4294967295"),
            "{pod}: {m}"
        );
    }
    assert_eq!(h.bound().len(), 0);
}

#[test]
fn pd_group_keeps_ratio_and_super_node_locality() {
    let mut h = Harness::new(cluster(2, 2, 2));
    h.group(json!({"apiVersion": "strata.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "pd"},
        "spec": {"topology": {"requiredLevel": "strata.io/supernode"},
                 "subGroups": [
                    {"name": "prefill", "minMember": 2, "selector": {"matchLabels": {"role": "prefill"}},
                     "topology": {"requiredLevel": "strata.io/cabinet"}},
                    {"name": "decode", "minMember": 1, "selector": {"matchLabels": {"role": "decode"}}}]}}));
    // A busy node in sn0 makes sn1 the only super-node where prefill fits
    // in one cabinet next to decode.
    h.add(pod("filler").req(GPU, "8").build());
    h.run();
    for i in 0..2 {
        h.add(
            pod(&format!("pd-p{i}"))
                .label(spec::GROUP_LABEL, "pd")
                .label("role", "prefill")
                .req(GPU, "8")
                .build(),
        );
    }
    h.run();
    assert_eq!(
        h.bound_of("pd-"),
        0,
        "decode is missing: the 2:1 unit waits"
    );
    h.add(
        pod("pd-d0")
            .label(spec::GROUP_LABEL, "pd")
            .label("role", "decode")
            .req(GPU, "4")
            .build(),
    );
    h.run();
    let b = h.bound();
    assert_eq!(h.bound_of("pd-"), 3, "{b:?}");
    let nodes: Vec<&String> = b
        .iter()
        .filter(|(k, _)| k.contains("pd-"))
        .map(|(_, n)| n)
        .collect();
    let sn: std::collections::BTreeSet<_> = nodes.iter().map(|n| supernode_of(n)).collect();
    assert_eq!(sn.len(), 1, "{b:?}");
    let cab = |k: &str| b[k].split('-').nth(2).unwrap().to_owned();
    assert_eq!(
        cab("default/pd-p0"),
        cab("default/pd-p1"),
        "prefill in one cabinet: {b:?}"
    );
}

#[test]
fn coscheduling_pod_groups_work_unchanged() {
    let mut h = Harness::new(cluster(1, 1, 4));
    h.group(
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"minMember": 3, "scheduleTimeoutSeconds": 10, "minResources": {"cpu": "3"}}}),
    );
    for i in 0..2 {
        h.add(
            pod(&format!("nginx-{i}"))
                .label(spec::COSCHEDULING_LABEL, "nginx")
                .req("cpu", "1")
                .build(),
        );
    }
    h.run();
    assert_eq!(h.bound().len(), 0);
    h.add(
        pod("nginx-2")
            .label(spec::COSCHEDULING_LABEL, "nginx")
            .req("cpu", "1")
            .build(),
    );
    h.run();
    assert_eq!(h.bound_of("nginx-"), 3);
    // A member of a group with no object waits, gated, naming it.
    h.add(
        pod("orphan")
            .label(spec::COSCHEDULING_LABEL, "missing")
            .build(),
    );
    h.run();
    assert_eq!(h.s.queue_stats().gated, 1);
    let q =
        h.s.queue()
            .pending_pods()
            .next()
            .map(|q| q.last_message.clone())
            .unwrap_or_default();
    assert!(
        q.contains("pod group default/missing (scheduling.x-k8s.io) not found"),
        "{q}"
    );
}

#[test]
fn timeout_releases_every_waiting_member() {
    let mut h = Harness::new(cluster(1, 1, 4));
    for i in 0..3 {
        h.add(
            member("t", i, 3, 8)
                .annotation(spec::ANN_TIMEOUT, "5")
                .build(),
        );
    }
    // Take one member away after the group was planned: the others wait.
    let first = h.s.schedule_one().unwrap();
    assert!(
        matches!(
            first.result,
            strata_scheduler::engine::CycleResult::WaitingOnPermit { .. }
        ),
        "{:?}",
        first.result
    );
    let gone = h
        .pods
        .keys()
        .find(|k| **k != first.pod.key())
        .cloned()
        .unwrap();
    h.delete(&gone);
    h.run();
    assert_eq!(h.s.waiting_pods().len(), 2);
    assert_eq!(h.bound().len(), 0);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.s.waiting_pods().len(), 0, "all released at the timeout");
    assert_eq!(h.bound().len(), 0, "nothing partly bound");
    assert_eq!(
        h.s.snapshot().assigned_pods().count(),
        0,
        "nothing left assumed"
    );
    h.s.cache().check_consistency().unwrap();
    // A replacement member arrives: the group completes.
    h.add(
        member("t", 9, 3, 8)
            .annotation(spec::ANN_TIMEOUT, "5")
            .build(),
    );
    h.advance(Duration::from_secs(20));
    assert_eq!(h.bound().len(), 3);
}

#[test]
fn planned_node_failing_a_filter_is_avoided_on_replan() {
    // The planner does not model host ports; the engine's NodePorts does.
    let mut h = Harness::new(cluster(1, 1, 3));
    h.add(pod("holder").host_port(8080).req("cpu", "1").build());
    h.run();
    for i in 0..2 {
        h.add(member("hp", i, 2, 1).host_port(8080).build());
    }
    h.advance(Duration::from_secs(1));
    for _ in 0..5 {
        h.advance(Duration::from_secs(15));
    }
    let b = h.bound();
    assert_eq!(h.bound_of("hp-"), 2, "{b:?}");
    let nodes: std::collections::BTreeSet<_> = b.values().collect();
    assert_eq!(
        nodes.len(),
        3,
        "each on its own node, away from the holder: {b:?}"
    );
}

#[test]
fn what_if_answers_without_reserving_and_names_victims() {
    let mut h = Harness::new(cluster(2, 1, 2));
    for i in 0..4 {
        h.add(pod(&format!("low-{i}")).priority(1).req(GPU, "6").build());
    }
    h.run();
    assert_eq!(h.bound().len(), 4);
    let store = h.stores.pod_groups.clone();
    let tmpl = Arc::new(pod("tmpl").priority(100).req(GPU, "8").build());
    let q = WhatIfGroup {
        spec: PodGroupSpec {
            min_member: 2,
            required_level: Some("strata.io/supernode".into()),
            ..Default::default()
        },
        members: vec![(tmpl.clone(), 2)],
        displace_below: None,
    };
    let e = store.what_if(h.s.snapshot(), &q).unwrap_err();
    assert!(e.contains("no room"), "{e}");
    let a = store
        .what_if(
            h.s.snapshot(),
            &WhatIfGroup {
                displace_below: Some(50),
                ..q
            },
        )
        .unwrap();
    assert_eq!(a.nodes.iter().map(|(_, n)| n).sum::<u32>(), 2);
    assert_eq!(a.displaced.len(), 2, "one 6-GPU pod per planned node");
    assert!(a.domain.starts_with("sn"));
    // Nothing was reserved: a real 2-GPU pod still fits anywhere.
    h.add(pod("small").req(GPU, "2").build());
    h.run();
    assert_eq!(h.bound().len(), 5);
}

#[test]
fn what_if_count_plans_copies_on_what_the_earlier_ones_left() {
    // Two super-nodes of two 8-GPU servers: one 2 x 8-GPU group each.
    let mut h = Harness::new(cluster(2, 1, 2));
    h.run();
    let store = h.stores.pod_groups.clone();
    let tmpl = Arc::new(pod("tmpl").req(GPU, "8").build());
    let q = WhatIfGroup {
        spec: PodGroupSpec {
            min_member: 2,
            required_level: Some("strata.io/supernode".into()),
            ..Default::default()
        },
        members: vec![(tmpl, 2)],
        displace_below: None,
    };
    let c = store.what_if_count(h.s.snapshot(), &q, 5).unwrap();
    assert_eq!(c.fits, 2, "{c:?}");
    let doms: std::collections::BTreeSet<_> = c.domains.iter().collect();
    assert_eq!(doms.len(), 2, "one copy per super-node: {c:?}");
    assert!(c.refusal.as_deref().unwrap().contains("no room"), "{c:?}");
    let one = store.what_if_count(h.s.snapshot(), &q, 1).unwrap();
    assert_eq!((one.fits, one.refusal), (1, None));
    // A pod taking half of one super-node leaves room for one copy.
    h.add(pod("half").req(GPU, "8").build());
    h.run();
    let c = store.what_if_count(h.s.snapshot(), &q, 5).unwrap();
    assert_eq!(c.fits, 1, "{c:?}");
}

#[test]
fn what_if_count_keeps_a_required_spread_between_copies() {
    // Two super-nodes of four servers: two 2-server copies fit in each,
    // but copies that must not share a super-node fit once per super-node.
    let mut h = Harness::new(cluster(2, 1, 4));
    h.run();
    let store = h.stores.pod_groups.clone();
    let tmpl = Arc::new(pod("tmpl").req(GPU, "8").build());
    let mut q = WhatIfGroup {
        spec: PodGroupSpec {
            min_member: 2,
            required_level: Some("strata.io/supernode".into()),
            ..Default::default()
        },
        members: vec![(tmpl, 2)],
        displace_below: None,
    };
    assert_eq!(store.what_if_count(h.s.snapshot(), &q, 9).unwrap().fits, 4);
    q.spec.spread = Some(SpreadSpec {
        service: "svc".into(),
        level: "strata.io/supernode".into(),
        required: true,
    });
    let c = store.what_if_count(h.s.snapshot(), &q, 9).unwrap();
    assert_eq!(c.fits, 2, "{c:?}");
    assert_ne!(c.domains[0], c.domains[1]);
}

#[test]
fn args_are_checked() {
    let store = PodGroupStore::new();
    let hd = crate::common::testkit::handle();
    let e = factory_with(Some(&json!({"topologyLevels": []})), &hd, &store)
        .err()
        .unwrap();
    assert_eq!(e.field, "topologyLevels");
    let e = factory_with(Some(&json!({"topologyLevels": ["a", "a"]})), &hd, &store)
        .err()
        .unwrap();
    assert_eq!(e.field, "topologyLevels[1]");
    let e = factory_with(
        Some(&json!({"defaultScheduleTimeoutSeconds": 0})),
        &hd,
        &store,
    )
    .err()
    .unwrap();
    assert_eq!(e.field, "defaultScheduleTimeoutSeconds");
    let e = factory_with(Some(&json!({"levels": ["a"]})), &hd, &store)
        .err()
        .unwrap();
    assert!(e.message.contains("unknown field"), "{e}");
    factory_with(
        Some(&json!({"topologyLevels": ["zone", "rack", "kubernetes.io/hostname"]})),
        &hd,
        &store,
    )
    .unwrap();
    let e = factory_with(None, &hd, &store).err().unwrap();
    assert!(e.message.contains("same topology levels"), "{e}");
}

#[test]
fn groups_racing_for_the_same_super_nodes_never_deadlock() {
    // 2 super-nodes × 4 servers; three groups of 3 servers each, each
    // required inside one super-node: at most two fit at once.
    let mut h = Harness::new(cluster(2, 1, 4));
    for i in 0..3 {
        for g in ["a", "b", "c"] {
            h.add(
                member(g, i, 3, 8)
                    .annotation(spec::ANN_REQUIRED_LEVEL, "strata.io/supernode")
                    .annotation(spec::ANN_TIMEOUT, "5")
                    .build(),
            );
        }
    }
    h.run();
    for _ in 0..4 {
        h.advance(Duration::from_secs(11));
    }
    let counts: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|g| h.bound_of(&format!("{g}-")))
        .collect();
    assert!(
        counts.iter().all(|c| *c == 0 || *c == 3),
        "partly bound: {counts:?}"
    );
    assert_eq!(counts.iter().filter(|c| **c == 3).count(), 2, "{counts:?}");
    assert_eq!(
        h.s.waiting_pods().len(),
        0,
        "nobody holds capacity while waiting"
    );
    // Free one group: the third completes.
    let done = ["a", "b", "c"]
        .into_iter()
        .find(|g| h.bound_of(&format!("{g}-")) == 3)
        .unwrap();
    for i in 0..3 {
        let key = format!("default/{done}-{i}");
        h.delete(&key);
    }
    for _ in 0..4 {
        h.advance(Duration::from_secs(11));
    }
    let counts: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|g| h.bound_of(&format!("{g}-")))
        .collect();
    assert_eq!(counts.iter().filter(|c| **c == 3).count(), 2, "{counts:?}");
}

/// The cabinet (`c` of `n-s-c-h`) and super-node of every bound pod whose
/// key starts with `default/{prefix}`.
fn placed_in(h: &Harness, prefix: &str) -> Vec<(String, String)> {
    h.bound()
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("default/{prefix}")))
        .map(|(_, n)| {
            let parts: Vec<&str> = n.split('-').collect();
            (parts[1].to_owned(), format!("{}-{}", parts[1], parts[2]))
        })
        .collect()
}

#[test]
fn pd_prefill_preferred_in_one_cabinet_moves_to_the_super_node_that_has_one() {
    // sn0 is the tightest super-node for the unit (20 GPUs free: 8 + 4 in
    // cab0, 8 in cab1), so without the preference the unit lands there with
    // prefill split over both cabinets. sn1 has cab1 entirely free: with
    // prefill preferred in one cabinet the unit goes to sn1, prefill in
    // cab1, and the group's required super-node still holds.
    let mut h = Harness::new(cluster(2, 2, 2));
    h.add(pod("f0").req(GPU, "4").on("n-0-0-1").build());
    h.add(pod("f1").req(GPU, "8").on("n-0-1-1").build());
    h.add(pod("f2").req(GPU, "4").on("n-1-0-0").build());
    h.group(json!({"apiVersion": "strata.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "pd"},
        "spec": {"topology": {"requiredLevel": "strata.io/supernode"},
                 "subGroups": [
                    {"name": "prefill", "minMember": 2, "selector": {"matchLabels": {"role": "prefill"}},
                     "topology": {"preferredLevel": "strata.io/cabinet"}},
                    {"name": "decode", "minMember": 1, "selector": {"matchLabels": {"role": "decode"}}}]}}));
    for i in 0..2 {
        h.add(
            pod(&format!("pd-p{i}"))
                .label(spec::GROUP_LABEL, "pd")
                .label("role", "prefill")
                .req(GPU, "8")
                .build(),
        );
    }
    h.add(
        pod("pd-d0")
            .label(spec::GROUP_LABEL, "pd")
            .label("role", "decode")
            .req(GPU, "4")
            .build(),
    );
    h.run();
    assert_eq!(h.bound_of("pd-"), 3, "{:?}", h.bound());
    let prefill = placed_in(&h, "pd-p");
    let cabs: std::collections::BTreeSet<_> = prefill.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(
        cabs.into_iter().collect::<Vec<_>>(),
        vec!["1-1".to_owned()],
        "{prefill:?}"
    );
    let sns: std::collections::BTreeSet<_> =
        placed_in(&h, "pd-").into_iter().map(|(s, _)| s).collect();
    assert_eq!(sns.len(), 1, "the unit stays in one super-node");
}

#[test]
fn pd_prefill_preferred_in_one_cabinet_spreads_over_two_when_none_fits_and_never_fails() {
    // One super-node of two 16-GPU cabinets: prefill needs 24 GPUs, so no
    // cabinet holds it; the preference must not stop the unit from binding,
    // and prefill spans exactly two cabinets. Annotations define the unit
    // (`name:minMember:requiredLevel:preferredLevel`).
    let mut h = Harness::new(cluster(1, 2, 2));
    let subgroups = "prefill:3::strata.io/cabinet,decode:1";
    for i in 0..3 {
        h.add(
            member("pd", i, 4, 8)
                .label(spec::SUBGROUP_LABEL, "prefill")
                .annotation(spec::ANN_SUBGROUPS, subgroups)
                .annotation(spec::ANN_REQUIRED_LEVEL, "strata.io/supernode")
                .build(),
        );
    }
    h.add(
        member("pd", 3, 4, 4)
            .label(spec::SUBGROUP_LABEL, "decode")
            .annotation(spec::ANN_SUBGROUPS, subgroups)
            .annotation(spec::ANN_REQUIRED_LEVEL, "strata.io/supernode")
            .build(),
    );
    let msgs = h.run();
    assert_eq!(h.bound_of("pd-"), 4, "{msgs:?}");
    let prefill: Vec<(String, String)> = (0..3)
        .flat_map(|i| placed_in(&h, &format!("pd-{i}")))
        .collect();
    let cabs: std::collections::BTreeSet<_> = prefill.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(cabs.len(), 2, "{prefill:?}");
    // With room for it in one cabinet, a second unit's prefill stays in one.
    let mut h = Harness::new(cluster(1, 2, 2));
    let subgroups = "prefill:2::strata.io/cabinet,decode:1";
    for i in 0..2 {
        h.add(
            member("pd", i, 3, 8)
                .label(spec::SUBGROUP_LABEL, "prefill")
                .annotation(spec::ANN_SUBGROUPS, subgroups)
                .build(),
        );
    }
    h.add(
        member("pd", 2, 3, 8)
            .label(spec::SUBGROUP_LABEL, "decode")
            .annotation(spec::ANN_SUBGROUPS, subgroups)
            .build(),
    );
    h.run();
    assert_eq!(h.bound_of("pd-"), 3);
    let prefill: Vec<(String, String)> = (0..2)
        .flat_map(|i| placed_in(&h, &format!("pd-{i}")))
        .collect();
    let cabs: std::collections::BTreeSet<_> = prefill.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(cabs.len(), 1, "{prefill:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whatever the group sizes and arrival order, no group is ever partly
    /// bound, nothing stays assumed, and if any group fits alone at least
    /// one group completes.
    #[test]
    fn gangs_are_all_or_nothing(
        sizes in proptest::collection::vec(1u32..6, 1..5),
        servers in 2u32..7,
        order in proptest::collection::vec(any::<u16>(), 30),
    ) {
        let mut h = Harness::new(cluster(1, 1, servers));
        let mut pods: Vec<PodInfo> = Vec::new();
        for (g, n) in sizes.iter().enumerate() {
            for i in 0..*n {
                pods.push(member(&format!("g{g}"), i, *n, 8).annotation(spec::ANN_TIMEOUT, "3").build());
            }
        }
        // Interleave arrivals.
        let mut idx: Vec<usize> = (0..pods.len()).collect();
        idx.sort_by_key(|i| order[*i % order.len()].wrapping_mul(*i as u16 + 1));
        for i in idx {
            h.add(pods[i].clone());
            h.run();
        }
        for _ in 0..6 {
            h.advance(Duration::from_secs(4));
        }
        let mut any = false;
        for (g, n) in sizes.iter().enumerate() {
            let c = h.bound_of(&format!("g{g}-")) as u32;
            prop_assert!(c == 0 || c == *n, "group g{} has {} of {} bound", g, c, n);
            any |= c == *n;
        }
        prop_assert_eq!(h.s.waiting_pods().len(), 0);
        let fits_alone = sizes.iter().any(|n| *n <= servers);
        prop_assert!(!fits_alone || any, "no group completed although one fits: {:?} on {} servers", sizes, servers);
        prop_assert!(h.s.cache().check_consistency().is_ok());
    }
}

/// Pod `w` of replica `r` of LeaderWorkerSet `set`, as the LWS controller
/// labels and annotates it (size `size`, `gpus` each).
fn lws_pod(
    set: &str,
    r: u32,
    w: u32,
    size: u32,
    gpus: u32,
) -> strata_scheduler::testing::PodBuilder {
    let name = if w == 0 {
        format!("{set}-{r}")
    } else {
        format!("{set}-{r}-{w}")
    };
    pod(&name)
        .label(lws::NAME_LABEL, set)
        .label(lws::GROUP_INDEX_LABEL, &r.to_string())
        .label(lws::WORKER_INDEX_LABEL, &w.to_string())
        .label(lws::GROUP_KEY_LABEL, &format!("{set}-{r}-key"))
        .annotation(lws::SIZE_ANNOTATION, &size.to_string())
        .req(GPU, &gpus.to_string())
        .req("cpu", "1")
}

/// LWS replicas with exclusive-topology are placed whole, each alone in a
/// super-node; a replica arriving with no free super-node stays wholly
/// pending, with a message naming the replica; members wait until all
/// `size` pods of their replica exist.
#[test]
fn lws_replicas_are_placed_whole_and_exclusive() {
    let mut h = Harness::new(cluster(2, 2, 2)); // 32 GPUs per super-node
    let excl = |b: strata_scheduler::testing::PodBuilder| {
        b.annotation(lws::EXCLUSIVE_ANNOTATION, "strata.io/supernode")
            .build()
    };
    // Three of four pods of replica 0: nothing starts.
    for w in 0..3 {
        h.add(excl(lws_pod("llm", 0, w, 4, 4)));
    }
    h.run();
    assert_eq!(
        h.bound().len(),
        0,
        "3 of 4 pods of a replica must not start"
    );
    h.add(excl(lws_pod("llm", 0, 3, 4, 4)));
    for w in 0..4 {
        h.add(excl(lws_pod("llm", 1, w, 4, 4)));
    }
    h.run();
    let b = h.bound();
    assert_eq!(b.len(), 8, "{b:?}");
    let sn_of = |r: &str| -> std::collections::BTreeSet<String> {
        b.iter()
            .filter(|(k, _)| k.starts_with(&format!("default/llm-{r}")))
            .map(|(_, n)| supernode_of(n).to_owned())
            .collect()
    };
    let (a, c) = (sn_of("0"), sn_of("1"));
    assert_eq!(
        (a.len(), c.len()),
        (1, 1),
        "each replica in one super-node: {b:?}"
    );
    assert_ne!(a, c, "exclusive: one replica per super-node: {b:?}");
    // 16 GPUs are left in each super-node, but both are held exclusively.
    for w in 0..4 {
        h.add(excl(lws_pod("llm", 2, w, 4, 4)));
    }
    let msgs = h.run();
    assert_eq!(h.bound_of("llm-2"), 0, "{:?}", h.bound());
    let m = msgs
        .iter()
        .find(|(k, _)| k.starts_with("default/llm-2"))
        .map(|(_, m)| m)
        .expect("a member was tried");
    assert!(m.contains("LeaderWorkerSet replica default/llm-2"), "{m}");
    let st = h.stores.pod_groups.all_status();
    let done = st
        .iter()
        .filter(|(k, s)| k.api == GroupApi::LeaderWorkerSet && s.phase == GroupPhase::Bound)
        .count();
    assert_eq!(done, 2, "{st:?}");
    h.s.cache().check_consistency().unwrap();
}

/// Without exclusive-topology a replica is a plain gang (packed wherever
/// it fits, never partly); an explicit strata.io/pod-group label wins over
/// the LWS labels.
#[test]
fn lws_without_exclusive_is_a_gang_and_explicit_groups_win() {
    let mut h = Harness::new(cluster(1, 1, 2)); // 16 GPUs
    for w in 0..3 {
        h.add(lws_pod("big", 0, w, 3, 8).build()); // 24 GPUs: never fits
    }
    let msgs = h.run();
    assert_eq!(h.bound().len(), 0);
    let m = msgs.values().next().unwrap();
    assert!(
        m.contains("LeaderWorkerSet replica default/big-0 can never be placed"),
        "{m}"
    );
    // Same LWS labels, but the pods name a Strata group of one.
    let p = lws_pod("own", 0, 0, 3, 8)
        .label(spec::GROUP_LABEL, "solo")
        .annotation(spec::ANN_MIN_MEMBER, "1")
        .build();
    h.add(p);
    h.run();
    assert_eq!(h.bound_of("own-0"), 1, "{:?}", h.bound());
}

/// Malformed or inconsistent LWS metadata is reported on the pods, naming
/// the key: a missing size, pods of one replica disagreeing on their size,
/// an exclusive topology that is no topology level.
#[test]
fn lws_metadata_problems_are_reported_on_the_pods() {
    let mut h = Harness::new(cluster(1, 1, 2));
    let mut p = lws_pod("nosize", 0, 0, 2, 1).build();
    Arc::make_mut(&mut p.annotations).remove(lws::SIZE_ANNOTATION);
    h.add(p);
    let msgs = h.run();
    let m = &msgs["default/nosize-0"];
    assert!(
        m.contains("LeaderWorkerSet replica default/nosize-0 is invalid")
            && m.contains("leaderworkerset.sigs.k8s.io/size: the annotation is missing"),
        "{m}"
    );
    h.add(lws_pod("mix", 0, 0, 2, 1).build());
    h.add(lws_pod("mix", 0, 1, 3, 1).build());
    let msgs = h.run();
    let m = msgs.values().find(|m| m.contains("mix-0")).expect("tried");
    assert!(
        m.contains("disagrees with the replica's other pods") && m.contains("size"),
        "{m}"
    );
    h.add(
        lws_pod("gke", 0, 0, 1, 1)
            .annotation(lws::EXCLUSIVE_ANNOTATION, "cloud.google.com/gke-nodepool")
            .build(),
    );
    let msgs = h.run();
    let m = &msgs["default/gke-0"];
    assert!(
        m.contains("leaderworkerset.sigs.k8s.io/exclusive-topology")
            && m.contains("not one of the topology levels"),
        "{m}"
    );
    assert_eq!(h.bound().len(), 0);
}

/// Subgroups with subgroup-exclusive-topology: each subgroup inside one
/// cabinet, the replica inside one super-node.
#[test]
fn lws_subgroups_each_in_one_cabinet() {
    let mut h = Harness::new(cluster(2, 2, 2)); // 16 GPUs per cabinet
    for w in 0..4 {
        h.add(
            lws_pod("sg", 0, w, 4, 8)
                .annotation(lws::EXCLUSIVE_ANNOTATION, "strata.io/supernode")
                .annotation(lws::SUBGROUP_SIZE_ANNOTATION, "2")
                .annotation(lws::SUBGROUP_EXCLUSIVE_ANNOTATION, "strata.io/cabinet")
                .build(),
        );
    }
    h.run();
    let b = h.bound();
    assert_eq!(b.len(), 4, "{b:?}");
    let cab = |k: &str| {
        let n = &b[k];
        n.rsplit_once('-').unwrap().0.to_owned()
    };
    assert_eq!(cab("default/sg-0"), cab("default/sg-0-1"), "{b:?}");
    assert_eq!(cab("default/sg-0-2"), cab("default/sg-0-3"), "{b:?}");
}

/// LWS recreates a replica's pods under the same names (new uids); a
/// pending member deleted without the store being told (`forget_pod`) must
/// not count towards the replica, or the plan would wait for a pod that
/// no longer exists.
#[test]
fn a_recreated_pod_replaces_its_deleted_namesake() {
    let mut h = Harness::new(cluster(1, 1, 2));
    let old = lws_pod("re", 0, 0, 2, 8).build();
    h.add(old.clone());
    h.run();
    // Deleted without forget_pod, then created again with a new uid.
    h.pods.remove(&old.key());
    h.s.handle_update(ClusterUpdate::PodDeleted {
        uid: old.uid.clone(),
    });
    h.add(old.with_identity("uid-re-0-again", "re-0"));
    h.add(lws_pod("re", 0, 1, 2, 8).build());
    h.run();
    assert_eq!(h.bound_of("re-0"), 2, "{:?}", h.bound());
    let st = h.stores.pod_groups.all_status();
    assert_eq!(st[0].1.members, 2, "{st:?}");
}

/// A rolling update of an LWS that is not placed yet changes the replica's
/// size: the new revision's pods replace the old revision's pending pods
/// (deleted without the store being told) instead of being reported as
/// disagreeing; pods of one revision that disagree still are.
#[test]
fn a_newer_lws_revision_replaces_pending_pods_of_the_old_one() {
    let mut h = Harness::new(cluster(1, 1, 2));
    let rev = lws::REVISION_LABEL;
    let old = lws_pod("up", 0, 0, 3, 8).label(rev, "r1").build();
    h.add(old.clone());
    h.add(lws_pod("up", 0, 1, 3, 8).label(rev, "r1").build());
    h.run();
    assert_eq!(h.bound().len(), 0, "2 of 3");
    for k in ["default/up-0", "default/up-0-1"] {
        let p = h.pods.remove(k).unwrap();
        h.s.handle_update(ClusterUpdate::PodDeleted { uid: p.uid.clone() });
    }
    let new0 = lws_pod("up", 0, 0, 2, 8).label(rev, "r2").build();
    h.add(new0.with_identity("uid-up-0-r2", "up-0"));
    let new1 = lws_pod("up", 0, 1, 2, 8).label(rev, "r2").build();
    h.add(new1.with_identity("uid-up-0-1-r2", "up-0-1"));
    let msgs = h.run();
    assert_eq!(h.bound_of("up-0"), 2, "{:?} {msgs:?}", h.bound());
}
