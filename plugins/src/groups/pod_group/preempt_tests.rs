//! Gang preemption driven by the real engine (default profile) against an
//! in-memory cluster that records deletions: a group preempts as a whole or
//! not at all, victim gangs go whole or stay, equal priority is never a
//! victim, `preemptionPolicy: Never` preempts nothing, and a lone pod still
//! preempts through DefaultPreemption, never evicting a gang member.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use strata_scheduler::cache::PdbInfo;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::Scheduler;
use strata_scheduler::labels::Selector;
use strata_scheduler::sdk::Sym;
use strata_scheduler::testing::{PodBuilder, RecordingCluster, node, pod};

const GPU: &str = "nvidia.com/gpu";

struct H {
    s: Scheduler,
    clock: Arc<ManualClock>,
    cluster: Arc<RecordingCluster>,
    stores: crate::Stores,
    pods: BTreeMap<String, Arc<PodInfo>>,
    fed_binds: usize,
    fed_deletes: usize,
    /// Whether deletions reach the scheduler (victims terminate) at once.
    terminate: bool,
    _rt: tokio::runtime::Runtime,
}

impl H {
    fn new(nodes: Vec<k8s_openapi::api::core::v1::Node>) -> H {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cluster = Arc::new(RecordingCluster::default());
        let stores = crate::Stores::default();
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
        H {
            s,
            clock,
            cluster,
            stores,
            pods: BTreeMap::new(),
            fed_binds: 0,
            fed_deletes: 0,
            terminate: true,
            _rt: rt,
        }
    }

    fn add(&mut self, p: PodInfo) {
        let p = Arc::new(p);
        self.pods.insert(p.key(), p.clone());
        self.s.handle_update(ClusterUpdate::PodUpserted(p));
    }

    fn pdb(&mut self, app: &str, allowed: i32) {
        let m: BTreeMap<String, String> = [("app".to_owned(), app.to_owned())].into();
        self.s.handle_update(ClusterUpdate::PdbUpserted(PdbInfo {
            namespace: Sym::new("default"),
            name: app.into(),
            selector: Some(Selector::from_exact(&m)),
            disruptions_allowed: allowed,
        }));
    }

    /// Feeds recorded deletions back (the victims are gone).
    fn feed_deletions(&mut self) -> bool {
        let del = self.cluster.deleted.lock().clone();
        let mut moved = false;
        for key in &del[self.fed_deletes..] {
            if let Some(p) = self.pods.remove(key) {
                self.stores.pod_groups.forget_pod(&p.uid);
                self.s
                    .handle_update(ClusterUpdate::PodDeleted { uid: p.uid.clone() });
                moved = true;
            }
        }
        self.fed_deletes = del.len();
        moved
    }

    /// Schedules until nothing moves; the last message per pod.
    fn run(&mut self) -> BTreeMap<String, String> {
        let mut msgs = BTreeMap::new();
        for _ in 0..1_000 {
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
            // Victim deletions run on the runtime: wait until every victim
            // named by a `Preempted` event (recorded in the cycle) has been
            // deleted, however loaded the machine is.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let named = self
                    .cluster
                    .events
                    .lock()
                    .iter()
                    .filter(|e| e.reason == "Preempted")
                    .count();
                if self.cluster.deleted.lock().len() >= named
                    || std::time::Instant::now() >= deadline
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let bound = self.cluster.binds.lock().clone();
            for (key, node) in bound[self.fed_binds..].iter() {
                if let Some(p) = self.pods.get(key) {
                    let mut b = (**p).clone();
                    b.bound_node = Some(Sym::new(node));
                    self.s
                        .handle_update(ClusterUpdate::PodUpserted(Arc::new(b)));
                }
                moved = true;
            }
            self.fed_binds = bound.len();
            if self.terminate && self.feed_deletions() {
                moved = true;
            }
            let q = self.s.queue_stats();
            if !moved && q.active == 0 {
                if q.backoff == 0 {
                    break;
                }
                // Let backoffs expire (well within every group's timeout).
                self.clock.advance(Duration::from_secs(1));
                self.s.tick();
            }
        }
        msgs
    }

    fn deleted(&self) -> BTreeSet<String> {
        self.cluster.deleted.lock().iter().cloned().collect()
    }

    /// Pods bound by the scheduler (still present), by key.
    fn bound(&self) -> BTreeMap<String, String> {
        self.cluster
            .binds
            .lock()
            .iter()
            .filter(|(k, _)| self.pods.contains_key(k))
            .cloned()
            .collect()
    }
}

/// `sn` super-nodes × `cab` cabinets × `per` servers with 8 GPUs.
fn cluster(sn: u32, cab: u32, per: u32) -> Vec<k8s_openapi::api::core::v1::Node> {
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

/// A member of inline gang `group` (minMember `min`, required super-node).
fn member(group: &str, i: u32, min: u32, gpus: u32, prio: i32) -> PodBuilder {
    pod(&format!("{group}-{i}"))
        .label(spec::GROUP_LABEL, group)
        .annotation(spec::ANN_MIN_MEMBER, &min.to_string())
        .annotation(spec::ANN_REQUIRED_LEVEL, "strata.io/supernode")
        .req(GPU, &gpus.to_string())
        .req("cpu", "1")
        .priority(prio)
}

/// A running pod outside groups.
fn running(name: &str, node: &str, gpus: u32, prio: i32) -> PodInfo {
    pod(name)
        .req(GPU, &gpus.to_string())
        .req("cpu", "1")
        .priority(prio)
        .on(node)
        .build()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| format!("default/{s}")).collect()
}

fn supernode_of(node: &str) -> &str {
    node.split('-').nth(1).unwrap_or("")
}

/// 2 super-nodes of 4 servers, every server full: sn0 with priority-10
/// pods, sn1 with priority-20 pods.
fn full_cluster() -> H {
    let mut h = H::new(cluster(2, 2, 2));
    for s in 0..2 {
        for c in 0..2 {
            for x in 0..2 {
                let n = format!("n-{s}-{c}-{x}");
                h.add(running(&format!("low-{s}-{c}-{x}"), &n, 8, 10 + 10 * s));
            }
        }
    }
    h.run();
    h
}

#[test]
fn gang_preempts_the_lowest_priority_super_node_then_binds_whole() {
    let mut h = full_cluster();
    for i in 0..4 {
        h.add(member("train", i, 4, 8, 1000).build());
    }
    h.run();
    assert_eq!(
        h.deleted(),
        names(&["low-0-0-0", "low-0-0-1", "low-0-1-0", "low-0-1-1"]),
        "the four priority-10 pods of sn0, nothing in sn1"
    );
    let b = h.bound();
    let gang: Vec<_> = b.iter().filter(|(k, _)| k.contains("train")).collect();
    assert_eq!(gang.len(), 4, "{b:?}");
    assert!(gang.iter().all(|(_, n)| supernode_of(n) == "0"), "{gang:?}");
    let st = h.stores.pod_groups.all_status();
    assert_eq!(st[0].1.phase, GroupPhase::Bound, "{st:?}");
    h.s.cache().check_consistency().unwrap();
}

#[test]
fn gang_that_cannot_fit_even_after_preemption_evicts_nothing() {
    // Every super-node has two servers taken by more important pods.
    let mut h = H::new(cluster(2, 2, 2));
    for s in 0..2 {
        for c in 0..2 {
            for x in 0..2 {
                let prio = if c == 0 { 5000 } else { 10 };
                let n = format!("n-{s}-{c}-{x}");
                h.add(running(&format!("p-{s}-{c}-{x}"), &n, 8, prio));
            }
        }
    }
    h.run();
    for i in 0..4 {
        h.add(member("train", i, 4, 8, 1000).build());
    }
    let msgs = h.run();
    assert!(h.deleted().is_empty(), "{:?}", h.deleted());
    assert_eq!(h.bound().keys().filter(|k| k.contains("train")).count(), 0);
    let m = msgs
        .iter()
        .find(|(k, _)| k.contains("train"))
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    assert!(
        m.contains(
            "pod group default/train cannot fit even after preempting every lower-priority pod"
        ),
        "{m}"
    );
    let st = h.stores.pod_groups.all_status();
    let train = st.iter().find(|(k, _)| k.name.as_str() == "train").unwrap();
    assert!(
        train
            .1
            .last_failure
            .as_deref()
            .is_some_and(|f| f.contains("cannot fit even after preempting")),
        "{train:?}"
    );
}

/// One super-node of 4 servers; on each server a member of low-priority
/// gang `old` (4 GPUs) and a lone low-priority pod (4 GPUs).
fn with_old_gang(old_top_prio: i32) -> H {
    let mut h = H::new(cluster(1, 2, 2));
    let nodes = ["n-0-0-0", "n-0-0-1", "n-0-1-0", "n-0-1-1"];
    for (i, n) in nodes.iter().enumerate() {
        let prio = if i == 3 { old_top_prio } else { 10 };
        h.add(
            pod(&format!("old-{i}"))
                .label(spec::GROUP_LABEL, "old")
                .annotation(spec::ANN_MIN_MEMBER, "4")
                .req(GPU, "4")
                .req("cpu", "1")
                .priority(prio)
                .on(n)
                .build(),
        );
        h.add(running(&format!("lone-{i}"), n, 4, 20));
    }
    h.run();
    h
}

#[test]
fn a_victim_gang_is_evicted_whole() {
    let mut h = with_old_gang(10);
    for i in 0..2 {
        h.add(member("new", i, 2, 8, 1000).build());
    }
    h.run();
    let d = h.deleted();
    let old: Vec<_> = d.iter().filter(|k| k.contains("old-")).collect();
    assert_eq!(old.len(), 4, "the whole old gang or nothing: {d:?}");
    let lone = d.iter().filter(|k| k.contains("lone-")).count();
    assert_eq!(lone, 2, "only the lone pods on the two servers used: {d:?}");
    assert_eq!(h.bound().keys().filter(|k| k.contains("new")).count(), 2);
}

#[test]
fn a_gang_with_a_member_that_may_not_be_preempted_is_not_touched() {
    // old-3 is as important as the new gang: old stays whole, and without
    // it nothing frees a full server.
    let mut h = with_old_gang(1000);
    for i in 0..2 {
        h.add(member("new", i, 2, 8, 1000).build());
    }
    h.run();
    assert!(h.deleted().is_empty(), "{:?}", h.deleted());
    assert_eq!(h.bound().keys().filter(|k| k.contains("new")).count(), 0);
}

#[test]
fn equal_priority_pods_are_never_victims() {
    let mut h = H::new(cluster(1, 2, 2));
    for (i, n) in ["n-0-0-0", "n-0-0-1", "n-0-1-0", "n-0-1-1"]
        .iter()
        .enumerate()
    {
        h.add(running(&format!("eq-{i}"), n, 8, 1000));
    }
    h.run();
    for i in 0..2 {
        h.add(member("new", i, 2, 8, 1000).build());
    }
    h.run();
    assert!(h.deleted().is_empty(), "{:?}", h.deleted());
}

#[test]
fn preemption_policy_never_preempts_nothing() {
    let mut h = full_cluster();
    for i in 0..4 {
        h.add(
            member("polite", i, 4, 8, 1000)
                .spec(serde_json::json!({"preemptionPolicy": "Never"}))
                .build(),
        );
    }
    let msgs = h.run();
    assert!(h.deleted().is_empty(), "{:?}", h.deleted());
    let m = msgs.values().next().cloned().unwrap_or_default();
    assert!(m.contains("preemptionPolicy=Never"), "{m}");
}

#[test]
fn a_lone_pod_still_preempts_through_default_preemption() {
    let mut h = full_cluster();
    h.add(
        pod("vip")
            .req(GPU, "8")
            .req("cpu", "1")
            .priority(1000)
            .build(),
    );
    h.run();
    let d = h.deleted();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d.iter().next().unwrap().contains("low-0-"), "{d:?}");
    assert!(h.bound().contains_key("default/vip"));
}

#[test]
fn a_lone_pod_evicts_a_lone_pod_rather_than_a_running_gang_member() {
    // Each server: an old gang member (priority 10) and a lone pod
    // (priority 20), 4 GPUs each. A lone pod by priority alone would evict
    // a gang member; PodGroup's claims, shared with DefaultPreemption
    // through the engine's handles, keep the gang whole.
    let mut h = with_old_gang(10);
    h.add(
        pod("vip")
            .req(GPU, "4")
            .req("cpu", "1")
            .priority(1000)
            .build(),
    );
    h.run();
    let d = h.deleted();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d.iter().all(|k| k.contains("lone-")), "{d:?}");
    assert!(h.bound().contains_key("default/vip"));
}

#[test]
fn budget_keeping_victims_are_preferred() {
    // sn0's pods are covered by a budget allowing no disruption; sn1's,
    // although more important, are not: the gang goes to sn1.
    let mut h = H::new(cluster(2, 2, 2));
    for s in 0..2 {
        for c in 0..2 {
            for x in 0..2 {
                let n = format!("n-{s}-{c}-{x}");
                let mut p = pod(&format!("low-{s}-{c}-{x}"))
                    .req(GPU, "8")
                    .req("cpu", "1")
                    .priority(10 + 10 * s)
                    .on(&n);
                if s == 0 {
                    p = p.label("app", "guarded");
                }
                h.add(p.build());
            }
        }
    }
    h.pdb("guarded", 0);
    h.run();
    for i in 0..4 {
        h.add(member("train", i, 4, 8, 1000).build());
    }
    h.run();
    let d = h.deleted();
    assert_eq!(d.len(), 4, "{d:?}");
    assert!(d.iter().all(|k| k.contains("low-1-")), "{d:?}");
}

#[test]
fn freed_capacity_is_held_for_the_group_while_victims_terminate() {
    let mut h = full_cluster();
    h.terminate = false;
    for i in 0..4 {
        h.add(member("train", i, 4, 8, 1000).build());
    }
    h.run();
    let victims = h.deleted();
    assert_eq!(victims.len(), 4);
    // Three victims are gone, one still terminates: the gang waits, and a
    // lone pod of lower priority arrives while three servers look free.
    let last = victims.iter().next_back().cloned().unwrap();
    for key in victims.iter().filter(|k| **k != last) {
        let p = h.pods.remove(key).unwrap();
        h.s.handle_update(ClusterUpdate::PodDeleted { uid: p.uid.clone() });
    }
    h.fed_deletes = 0;
    h.add(
        pod("late")
            .req(GPU, "8")
            .req("cpu", "1")
            .priority(500)
            .build(),
    );
    h.run();
    let b = h.bound();
    assert!(
        b.get("default/late").is_none_or(|n| supernode_of(n) == "1"),
        "the held servers of sn0 went to a lone pod: {b:?}"
    );
    h.terminate = true;
    h.run();
    let b = h.bound();
    assert_eq!(b.keys().filter(|k| k.contains("train")).count(), 4, "{b:?}");
    assert!(
        b.keys()
            .filter(|k| k.contains("train"))
            .all(|k| supernode_of(&b[k]) == "0")
    );
    assert!(!h.deleted().contains("default/late"), "{:?}", h.deleted());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random clusters of lone pods and small gangs at random priorities,
    /// then a high-priority gang: every victim is below the gang's priority,
    /// a victim gang goes whole, and when anything was evicted the gang
    /// ends fully bound inside one super-node; otherwise nothing of it is
    /// bound or all of it is.
    #[test]
    fn gang_preemption_invariants(
        fill in proptest::collection::vec((0u8..4, 0i32..3), 8),
        gang_size in 1u32..5,
        gpus in prop_oneof![Just(4u32), Just(8u32)],
    ) {
        let mut h = H::new(cluster(2, 2, 2));
        let prio_of = |p: i32| [10, 500, 1000][p as usize];
        let mut gangs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, (kind, p)) in fill.iter().enumerate() {
            let n = format!("n-{}-{}-{}", i / 4, (i / 2) % 2, i % 2);
            match kind {
                0 => {}
                1 => h.add(running(&format!("lone-{i}"), &n, 8, prio_of(*p))),
                // Gang members in pairs over neighbouring servers.
                _ => {
                    let g = format!("g{}", i / 2);
                    let name = format!("{g}-m{i}");
                    gangs.entry(g.clone()).or_default().push(format!("default/{name}"));
                    h.add(
                        pod(&name)
                            .label(spec::GROUP_LABEL, &g)
                            .annotation(spec::ANN_MIN_MEMBER, "1")
                            .req(GPU, "8")
                            .req("cpu", "1")
                            .priority(prio_of(*p))
                            .on(&n)
                            .build(),
                    );
                }
            }
        }
        let before: BTreeMap<String, i32> =
            h.pods.iter().map(|(k, p)| (k.clone(), p.priority)).collect();
        h.run();
        for i in 0..gang_size {
            h.add(member("hi", i, gang_size, gpus, 1000).build());
        }
        h.run();
        let d = h.deleted();
        for k in &d {
            let p = before.get(k).copied().unwrap_or(i32::MAX);
            prop_assert!(p < 1000, "victim {k} has priority {p}");
        }
        for (g, members) in &gangs {
            let gone = members.iter().filter(|m| d.contains(*m)).count();
            prop_assert!(gone == 0 || gone == members.len(), "gang {g} partly evicted: {d:?}");
        }
        let b = h.bound();
        let hi: Vec<&String> = b.iter().filter(|(k, _)| k.contains("/hi-")).map(|(_, n)| n).collect();
        prop_assert!(hi.is_empty() || hi.len() == gang_size as usize, "partly bound: {b:?}");
        if !d.is_empty() {
            prop_assert_eq!(hi.len(), gang_size as usize, "evicted {:?} but not bound: {:?}", d, b);
        }
        let sns: BTreeSet<&str> = hi.iter().map(|n| supernode_of(n)).collect();
        prop_assert!(sns.len() <= 1, "{b:?}");
    }
}

#[test]
fn a_coscheduling_group_preempts_as_a_whole_despite_its_min_resources() {
    // One super-node of 4 full servers; the group asks for 24 GPUs at least.
    let mut h = H::new(cluster(1, 2, 2));
    for (i, n) in ["n-0-0-0", "n-0-0-1", "n-0-1-0", "n-0-1-1"]
        .iter()
        .enumerate()
    {
        h.add(running(&format!("low-{i}"), n, 8, i as i32));
    }
    h.run();
    let k = h
        .stores
        .pod_groups
        .upsert_object(&serde_json::json!({
            "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": "job", "namespace": "default"},
            "spec": {"minMember": 3, "minResources": {"nvidia.com/gpu": "24"}}}))
        .unwrap();
    h.s.handle_update(ClusterUpdate::Custom {
        kind: KIND,
        namespace: k.namespace,
        name: k.name.as_str().to_owned(),
    });
    for i in 0..3 {
        h.add(
            pod(&format!("job-{i}"))
                .label(spec::COSCHEDULING_LABEL, "job")
                .req(GPU, "8")
                .req("cpu", "1")
                .priority(1000)
                .build(),
        );
    }
    h.run();
    assert_eq!(
        h.deleted(),
        names(&["low-0", "low-1", "low-2"]),
        "the three least important"
    );
    assert_eq!(h.bound().keys().filter(|k| k.contains("job-")).count(), 3);
}

#[test]
fn a_pd_group_preempts_for_every_role_inside_its_super_node() {
    let mut h = full_cluster();
    let k = h
        .stores
        .pod_groups
        .upsert_object(&serde_json::json!({
            "apiVersion": "strata.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "pd"},
            "spec": {"topology": {"requiredLevel": "strata.io/supernode"},
                     "subGroups": [
                        {"name": "prefill", "minMember": 2, "selector": {"matchLabels": {"role": "prefill"}},
                         "topology": {"requiredLevel": "strata.io/cabinet"}},
                        {"name": "decode", "minMember": 1, "selector": {"matchLabels": {"role": "decode"}}}]}}))
        .unwrap();
    h.s.handle_update(ClusterUpdate::Custom {
        kind: KIND,
        namespace: k.namespace,
        name: k.name.as_str().to_owned(),
    });
    for (name, role, gpus) in [
        ("pd-p0", "prefill", 8),
        ("pd-p1", "prefill", 8),
        ("pd-d0", "decode", 4),
    ] {
        h.add(
            pod(name)
                .label(spec::GROUP_LABEL, "pd")
                .label("role", role)
                .req(GPU, &gpus.to_string())
                .req("cpu", "1")
                .priority(1000)
                .build(),
        );
    }
    h.run();
    let d = h.deleted();
    assert_eq!(d.len(), 3, "two prefill servers and one for decode: {d:?}");
    assert!(d.iter().all(|k| k.contains("low-0-")), "{d:?}");
    let b = h.bound();
    assert_eq!(b.keys().filter(|k| k.contains("pd-")).count(), 3, "{b:?}");
    let cab = |k: &str| b[k].split('-').nth(2).unwrap().to_owned();
    assert_eq!(cab("default/pd-p0"), cab("default/pd-p1"), "{b:?}");
}
