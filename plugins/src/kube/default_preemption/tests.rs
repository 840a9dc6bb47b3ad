//! Tests for DefaultPreemption, driven through a small test-only
//! [`FilterEvaluator`]: a resource fit (requests against allocatable, and
//! the pod count), a node label that makes a node unresolvable, and an
//! "exclusive" rule whose per-node counts live in the cycle state and are
//! kept up to date only through `add_pod`/`remove_pod`, so a plugin that
//! forgot the PreFilter extensions would get the wrong answer.

use super::select::{Candidate, pick_one};
use super::victims::Victims;
use super::*;
use proptest::prelude::*;
use rustc_hash::FxHashSet;
use std::collections::BTreeMap;
use std::sync::Mutex;
use strata_scheduler::cache::{Cache, PdbInfo};
use strata_scheduler::labels::Selector;
use strata_scheduler::sdk::{
    FilterEvaluator, NO_PREEMPTION_EXTENDERS, NodeInfo, PostFilterContext, PreemptionClaimant,
    ResourceId, Sym,
};
use strata_scheduler::testing::{cache_with, node, pod};

const UNRESOLVABLE_LABEL: &str = "test/unresolvable";
const EXCLUSIVE_LABEL: &str = "exclusive";
/// A pod with this label needs a pod labelled [`FRIEND_LABEL`] on its node
/// (a stand-in for required pod affinity).
const NEEDS_FRIEND_LABEL: &str = "needs-friend";
const FRIEND_LABEL: &str = "friend";

/// Per-node count of pods labelled `exclusive`, as a PreFilter would keep.
#[derive(Clone, Default)]
struct ExclusiveCounts(FxHashMap<NodeId, i32>);

fn is_exclusive(p: &PodInfo) -> bool {
    p.labels.get_str(EXCLUSIVE_LABEL).is_some()
}

/// The test evaluator; records which nodes it filtered.
#[derive(Default)]
struct TestEvaluator {
    seen: Mutex<FxHashSet<NodeId>>,
}

impl FilterEvaluator for TestEvaluator {
    fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if let Ok(mut s) = self.seen.lock() {
            s.insert(node.id);
        }
        if node.labels.get_str(UNRESOLVABLE_LABEL).is_some() {
            return Status::unresolvable("node(s) didn't match Pod's node affinity/selector");
        }
        if node.requested[ResourceId::PODS] + 1 > node.allocatable[ResourceId::PODS] {
            return Status::unschedulable("Too many pods");
        }
        for r in pod.spec.requests.nonzero_ids() {
            if node.requested[r] + pod.spec.requests[r] > node.allocatable[r] {
                return Status::unschedulable(format!("Insufficient {r}"));
            }
        }
        if pod.labels.get_str(NEEDS_FRIEND_LABEL).is_some()
            && !node
                .pods
                .iter()
                .any(|q| q.labels.get_str(FRIEND_LABEL).is_some())
        {
            return Status::unschedulable("node(s) didn't satisfy pod affinity");
        }
        if is_exclusive(pod) {
            let Some(c) = state.get::<ExclusiveCounts>() else {
                return Status::error("exclusive state missing");
            };
            if c.0.get(&node.id).copied().unwrap_or(0) > 0 {
                return Status::unschedulable("node(s) had an exclusive pod");
            }
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let (true, Some(c)) = (is_exclusive(other), state.get_mut::<ExclusiveCounts>()) {
            *c.0.entry(node.id).or_default() -= 1;
        }
        Status::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let (true, Some(c)) = (is_exclusive(other), state.get_mut::<ExclusiveCounts>()) {
            *c.0.entry(node.id).or_default() += 1;
        }
        Status::success()
    }
}

/// The "PreFilter" of the test evaluator.
fn prepare_state(snap: &Snapshot) -> CycleState {
    let mut counts = ExclusiveCounts::default();
    for n in snap.nodes() {
        let c = n.pods.iter().filter(|p| is_exclusive(p)).count() as i32;
        counts.0.insert(n.id, c);
    }
    let mut s = CycleState::new();
    s.insert(counts);
    s
}

/// The Filter pass the engine would have run: every node must reject.
fn diagnose(snap: &Snapshot, pod: &PodInfo, state: &CycleState, ev: &TestEvaluator) -> Diagnosis {
    let mut d = Diagnosis::default();
    for n in snap.nodes() {
        let s = ev.run_filters(state, pod, n);
        assert!(
            !s.is_success(),
            "test setup: {} fits {} without preemption",
            pod.name,
            n.name
        );
        d.node_statuses.push((n.id, s));
    }
    d
}

fn run_with(
    plugin: &DefaultPreemption,
    cache: &Cache,
    p: &PodInfo,
    nominated: &[(Arc<PodInfo>, NodeId)],
    ev: &TestEvaluator,
) -> PostFilterResult {
    let snap = cache.snapshot();
    let mut state = prepare_state(snap);
    let diagnosis = diagnose(snap, p, &state, ev);
    let ctx = PostFilterContext {
        snapshot: snap,
        diagnosis: &diagnosis,
        evaluator: ev,
        nominated,
        extenders: NO_PREEMPTION_EXTENDERS,
    };
    plugin.post_filter(&mut state, p, &ctx)
}

fn run(cache: &Cache, p: &PodInfo) -> PostFilterResult {
    run_nominated(cache, p, &[])
}

fn run_nominated(
    cache: &Cache,
    p: &PodInfo,
    nominated: &[(Arc<PodInfo>, NodeId)],
) -> PostFilterResult {
    let plugin = DefaultPreemption::new(DefaultPreemptionArgs::default()).unwrap();
    run_with(&plugin, cache, p, nominated, &TestEvaluator::default())
}

/// A bound pod: `name` on `node_name`, `cpu` cores requested, `prio`.
fn bound(name: &str, node_name: &str, cpu: &str, prio: i32) -> PodInfo {
    pod(name)
        .req("cpu", cpu)
        .priority(prio)
        .on(node_name)
        .build()
}

fn incoming(cpu: &str, prio: i32) -> PodInfo {
    pod("incoming").req("cpu", cpu).priority(prio).build()
}

fn names(pods: &[Arc<PodInfo>]) -> Vec<&str> {
    pods.iter().map(|p| &*p.name).collect()
}

fn nominated_name(r: &PostFilterResult) -> Option<&'static str> {
    r.nominated_node.map(|n| n.name.as_str())
}

fn pdb(name: &str, app: &str, allowed: i32) -> PdbInfo {
    let m: BTreeMap<String, String> = [("app".to_owned(), app.to_owned())].into();
    PdbInfo {
        namespace: Sym::new("default"),
        name: name.into(),
        selector: Some(Selector::from_exact(&m)),
        disruptions_allowed: allowed,
    }
}

fn node_id(cache: &Cache, name: &str) -> NodeId {
    cache.snapshot().node_id(Sym::new(name)).unwrap()
}

#[test]
fn lowest_priority_pod_is_the_victim() {
    // Either pod would make room; the higher-priority one is reprieved first.
    let cache = cache_with(
        vec![node("n1").build()],
        vec![bound("low", "n1", "2", 1), bound("mid", "n1", "2", 5)],
    );
    let r = run(&cache, &incoming("2", 10));
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(nominated_name(&r), Some("n1"));
    assert_eq!(names(&r.victims), ["low"]);
    assert!(r.clear_nominations.is_empty());
}

/// A gang plugin as a vendor would write one: its members carry
/// `vendor.example/gang`; its PreFilter marks the cycle of a member it
/// preempts for with [`GangCycle`].
struct FakeGang;

#[derive(Clone)]
struct GangCycle;

impl PreemptionClaimant for FakeGang {
    fn claims_preemptor(&self, state: &CycleState, _pod: &PodInfo) -> bool {
        state.get::<GangCycle>().is_some()
    }
    fn claims_victim(&self, pod: &PodInfo) -> bool {
        pod.labels.get(Sym::new("vendor.example/gang")).is_some()
    }
}

/// DefaultPreemption deferring to [`FakeGang`].
fn with_fake_gang() -> DefaultPreemption {
    let claims = PreemptionClaims::default();
    claims.register("FakeGang", Arc::new(FakeGang));
    DefaultPreemption::new(DefaultPreemptionArgs::default())
        .unwrap()
        .with_claims(claims)
}

#[test]
fn a_pod_whose_preemption_is_claimed_is_left_to_the_claimant() {
    // The same cluster where a lone pod preempts: once the gang plugin
    // marked the cycle (it preempts for this pod), DefaultPreemption evicts
    // nothing.
    let cache = cache_with(
        vec![node("n1").build()],
        vec![bound("low", "n1", "2", 1), bound("mid", "n1", "2", 5)],
    );
    let p = incoming("2", 10);
    let plugin = with_fake_gang();
    let ev = TestEvaluator::default();
    let snap = cache.snapshot();
    let mut state = prepare_state(snap);
    state.insert(GangCycle);
    let diagnosis = diagnose(snap, &p, &state, &ev);
    let ctx = PostFilterContext {
        snapshot: snap,
        diagnosis: &diagnosis,
        evaluator: &ev,
        nominated: &[],
        extenders: NO_PREEMPTION_EXTENDERS,
    };
    let r = plugin.post_filter(&mut state, &p, &ctx);
    assert_eq!(r.status.code(), Code::Skip, "{}", r.status);
    assert!(r.victims.is_empty() && r.nominated_node.is_none());
    // Unmarked, the same pod preempts.
    assert_eq!(names(&run(&cache, &p).victims), ["low"]);
}

#[test]
fn reprieve_keeps_the_victim_set_minimal() {
    // Four 1-cpu pods of priorities 1..4 fill 4 cpus; a 2-cpu pod needs the
    // two least important gone, no more.
    let pods = (1..=4)
        .map(|i| bound(&format!("p{i}"), "n1", "1", i))
        .collect();
    let cache = cache_with(vec![node("n1").build()], pods);
    let r = run(&cache, &incoming("2", 10));
    assert!(r.status.is_success(), "{}", r.status);
    // Most important first.
    assert_eq!(names(&r.victims), ["p2", "p1"]);
}

#[test]
fn reprieve_skips_a_small_pod_it_cannot_keep_but_keeps_a_later_one() {
    // 4 cpus: a (prio 3, 3 cpu), b (prio 2, 1 cpu). Incoming needs 3 cpus:
    // a is reprieved first? 3 + 3 > 4, so a goes; then b (1 cpu) fits back.
    let cache = cache_with(
        vec![node("n1").build()],
        vec![bound("a", "n1", "3", 3), bound("b", "n1", "1", 2)],
    );
    let r = run(&cache, &incoming("3", 10));
    assert_eq!(names(&r.victims), ["a"]);
}

#[test]
fn equal_and_higher_priority_pods_are_never_victims() {
    // n1: only equal-priority pods. n2: a lower one that is not enough on its
    // own beside a higher one.
    let cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![
            bound("same1", "n1", "2", 10),
            bound("same2", "n1", "2", 10),
            bound("low", "n2", "1", 1),
            bound("high", "n2", "3", 20),
        ],
    );
    let r = run(&cache, &incoming("2", 10));
    assert_eq!(r.status.code(), Code::Unschedulable);
    assert!(r.victims.is_empty());
    assert_eq!(r.nominated_node, None);
    assert_eq!(
        r.status.message(),
        "0/2 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for incoming pod."
    );

    // With equal-priority pods beside a lower one, only the lower one goes.
    let cache = cache_with(
        vec![node("n1").build()],
        vec![bound("same", "n1", "2", 10), bound("low", "n1", "2", 9)],
    );
    let r = run(&cache, &incoming("2", 10));
    assert_eq!(names(&r.victims), ["low"]);
}

#[test]
fn node_with_fewer_pdb_violations_wins() {
    // n1's victim is less important but protected by a budget with no
    // disruptions left; n2's victim is unprotected.
    let mut cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![
            pod("db")
                .label("app", "db")
                .req("cpu", "4")
                .priority(1)
                .on("n1")
                .build(),
            bound("web", "n2", "4", 5),
        ],
    );
    cache.upsert_pdb(pdb("db-pdb", "db", 0));
    let r = run(&cache, &incoming("2", 10));
    assert!(r.status.is_success());
    assert_eq!(nominated_name(&r), Some("n2"));
    assert_eq!(names(&r.victims), ["web"]);

    // With a disruption allowed, the budget is not violated: the lower
    // priority victim on n1 wins again.
    cache.upsert_pdb(pdb("db-pdb", "db", 1));
    let r = run(&cache, &incoming("2", 10));
    assert_eq!(nominated_name(&r), Some("n1"));
    assert_eq!(names(&r.victims), ["db"]);
}

#[test]
fn budget_protected_pods_are_reprieved_first() {
    // On one node: "db" (prio 1) is protected, "batch" (prio 2) is not. Both
    // take 2 of 4 cpus; either could make room. Priority alone would evict
    // "db"; budgets make "batch" the victim, with no violation.
    let mut cache = cache_with(
        vec![node("n1").build()],
        vec![
            pod("db")
                .label("app", "db")
                .req("cpu", "2")
                .priority(1)
                .on("n1")
                .build(),
            bound("batch", "n1", "2", 2),
        ],
    );
    cache.upsert_pdb(pdb("db-pdb", "db", 0));
    let r = run(&cache, &incoming("2", 10));
    assert_eq!(names(&r.victims), ["batch"]);
}

#[test]
fn a_reprieved_protected_pod_is_no_violation() {
    // n1: protected "db" is reprieved, "batch" goes: no violation, highest
    // victim priority 2. n2: one unprotected victim of priority 3. n1 wins
    // only if the reprieved "db" is not counted as a violation.
    let mut cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![
            pod("db")
                .label("app", "db")
                .req("cpu", "2")
                .priority(1)
                .on("n1")
                .build(),
            bound("batch", "n1", "2", 2),
            bound("other", "n2", "4", 3),
        ],
    );
    cache.upsert_pdb(pdb("db-pdb", "db", 0));
    let r = run(&cache, &incoming("2", 10));
    assert_eq!(nominated_name(&r), Some("n1"));
    assert_eq!(names(&r.victims), ["batch"]);
}

#[test]
fn protected_pods_are_reprieved_most_important_first() {
    // Both pods violate the budget if evicted and only one can stay: the
    // more important one stays.
    let mut cache = cache_with(
        vec![node("n1").build()],
        vec![
            pod("db-a")
                .label("app", "db")
                .req("cpu", "2")
                .priority(1)
                .on("n1")
                .build(),
            pod("db-b")
                .label("app", "db")
                .req("cpu", "2")
                .priority(2)
                .on("n1")
                .build(),
        ],
    );
    cache.upsert_pdb(pdb("db-pdb", "db", 0));
    let r = run(&cache, &incoming("2", 10));
    assert_eq!(names(&r.victims), ["db-a"]);
}

#[test]
fn budget_allowance_counts_down_across_pods() {
    // Two pods of one budget allowing one disruption both have to go: one
    // violation. A node where only one of them must go is preferred even
    // though its victim has the higher priority.
    let db = |name: &str, node_name: &str, cpu: &str, prio: i32| {
        pod(name)
            .label("app", "db")
            .req("cpu", cpu)
            .priority(prio)
            .on(node_name)
            .build()
    };
    let mut cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![
            db("a1", "n1", "2", 1),
            db("a2", "n1", "2", 1),
            db("b1", "n2", "4", 3),
        ],
    );
    cache.upsert_pdb(pdb("db-pdb", "db", 1));
    let r = run(&cache, &incoming("4", 10));
    assert_eq!(nominated_name(&r), Some("n2"));
    assert_eq!(names(&r.victims), ["b1"]);
}

#[test]
fn unlabeled_pods_and_empty_selectors_match_no_budget() {
    let mut cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![bound("plain", "n1", "4", 1), bound("other", "n2", "4", 2)],
    );
    cache.upsert_pdb(PdbInfo {
        namespace: Sym::new("default"),
        name: "everything".into(),
        selector: Some(Selector::default()),
        disruptions_allowed: 0,
    });
    let r = run(&cache, &incoming("2", 10));
    assert_eq!(nominated_name(&r), Some("n1"));
}

#[test]
fn never_policy_does_not_preempt() {
    let cache = cache_with(vec![node("n1").build()], vec![bound("low", "n1", "4", 1)]);
    let p = pod("incoming")
        .req("cpu", "2")
        .priority(10)
        .spec(serde_json::json!({"preemptionPolicy": "Never"}))
        .build();
    let r = run(&cache, &p);
    assert_eq!(r.status.code(), Code::Unschedulable);
    assert_eq!(
        r.status.message(),
        "not eligible due to preemptionPolicy=Never."
    );
    assert!(r.victims.is_empty());
    assert_eq!(r.nominated_node, None);
}

#[test]
fn unresolvable_nodes_are_not_helped() {
    let cache = cache_with(
        vec![
            node("n1").label(UNRESOLVABLE_LABEL, "x").build(),
            node("n2").label(UNRESOLVABLE_LABEL, "x").build(),
        ],
        vec![bound("low1", "n1", "4", 1), bound("low2", "n2", "4", 1)],
    );
    let ev = TestEvaluator::default();
    let plugin = DefaultPreemption::new(DefaultPreemptionArgs::default()).unwrap();
    let r = run_with(&plugin, &cache, &incoming("2", 10), &[], &ev);
    assert_eq!(r.status.code(), Code::Unschedulable);
    assert_eq!(
        r.status.message(),
        "0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    assert!(r.victims.is_empty());
    // Only the diagnosis pass looked at the nodes: no what-if ran.
    assert_eq!(ev.seen.lock().unwrap().len(), 2);
}

#[test]
fn no_lower_priority_pods_means_no_victims() {
    let cache = cache_with(
        vec![
            node("n1").build(),
            node("n2").label(UNRESOLVABLE_LABEL, "x").build(),
        ],
        vec![bound("big", "n1", "4", 100)],
    );
    let r = run(&cache, &incoming("2", 10));
    assert_eq!(
        r.status.message(),
        "0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
    );
}

#[test]
fn prefilter_rejection_applies_to_every_node() {
    let cache = cache_with(vec![node("n1").build()], vec![bound("low", "n1", "4", 1)]);
    let snap = cache.snapshot();
    let p = incoming("2", 10);
    let ev = TestEvaluator::default();
    let mut state = prepare_state(snap);
    let plugin = DefaultPreemption::new(DefaultPreemptionArgs::default()).unwrap();
    for (pre, expect_victims) in [
        (Status::unresolvable("pod group is not complete"), false),
        (Status::unschedulable("quota"), true),
    ] {
        let d = Diagnosis {
            pre_filter: Some(pre),
            ..Default::default()
        };
        let ctx = PostFilterContext {
            snapshot: snap,
            diagnosis: &d,
            evaluator: &ev,
            nominated: &[],
            extenders: NO_PREEMPTION_EXTENDERS,
        };
        let r = plugin.post_filter(&mut state, &p, &ctx);
        assert_eq!(!r.victims.is_empty(), expect_victims, "{}", r.status);
    }
}

#[test]
fn higher_priority_nominated_pods_keep_their_room() {
    // n1's victim is less important, but a priority-20 pod is nominated to
    // n1 and needs 2 of its cpus: evicting everything there leaves 2 < 3.
    let cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![bound("low1", "n1", "4", 1), bound("low2", "n2", "4", 2)],
    );
    let n1 = node_id(&cache, "n1");
    let n2 = node_id(&cache, "n2");
    let p = incoming("3", 10);
    let r = run(&cache, &p);
    assert_eq!(
        nominated_name(&r),
        Some("n1"),
        "without nominations n1 is best"
    );

    let important = pod("important").req("cpu", "2").priority(20).arc();
    // A lower-priority pod nominated to n2 does not hold room against us,
    // and loses its nomination when we take n2.
    let minor = pod("minor").req("cpu", "2").priority(5).arc();
    let nominated = [(important, n1), (minor.clone(), n2)];
    let r = run_nominated(&cache, &p, &nominated);
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(nominated_name(&r), Some("n2"));
    assert_eq!(names(&r.victims), ["low2"]);
    assert_eq!(names(&r.clear_nominations), ["minor"]);
}

#[test]
fn equal_priority_nominated_pods_hold_room_too() {
    let cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![bound("low1", "n1", "4", 1), bound("low2", "n2", "4", 2)],
    );
    let n1 = node_id(&cache, "n1");
    let peer = pod("peer").req("cpu", "2").priority(10).arc();
    let r = run_nominated(&cache, &incoming("3", 10), &[(peer, n1)]);
    assert_eq!(nominated_name(&r), Some("n2"));
    assert!(
        r.clear_nominations.is_empty(),
        "an equal-priority nomination stays"
    );
}

#[test]
fn filters_must_pass_without_the_nominated_pods_as_well() {
    // The incoming pod needs a "friend" on its node; the only friend is a
    // pod nominated there, which may yet land elsewhere. kube-scheduler's
    // second pass (without nominated pods) rejects the node.
    let cache = cache_with(vec![node("n1").build()], vec![bound("low", "n1", "4", 1)]);
    let n1 = node_id(&cache, "n1");
    let friend = pod("friend").label(FRIEND_LABEL, "y").priority(20).arc();
    let p = pod("incoming")
        .label(NEEDS_FRIEND_LABEL, "y")
        .req("cpu", "2")
        .priority(10)
        .build();
    let r = run_nominated(&cache, &p, &[(friend, n1)]);
    assert_eq!(r.status.code(), Code::Unschedulable);
    assert_eq!(
        r.status.message(),
        "0/1 nodes are available: 1 node(s) didn't satisfy pod affinity."
    );
    // A bound friend is enough.
    let cache = cache_with(
        vec![node("n1").build()],
        vec![
            bound("low", "n1", "4", 1),
            pod("friend")
                .label(FRIEND_LABEL, "y")
                .priority(20)
                .on("n1")
                .build(),
        ],
    );
    let r = run(&cache, &p);
    assert_eq!(names(&r.victims), ["low"]);
}

#[test]
fn the_pods_own_nomination_is_not_counted_against_it() {
    let cache = cache_with(vec![node("n1").build()], vec![bound("low", "n1", "4", 1)]);
    let n1 = node_id(&cache, "n1");
    let p = PodInfo {
        nominated_node: Some(Sym::new("n1")),
        ..incoming("3", 10)
    };
    let r = run_nominated(&cache, &p, &[(Arc::new(p.clone()), n1)]);
    assert!(r.status.is_success(), "{}", r.status);
    assert!(r.clear_nominations.is_empty());
}

#[test]
fn waits_for_a_terminating_victim_on_its_nominated_node() {
    let terminating = PodInfo {
        terminating: true,
        ..bound("leaving", "n1", "4", 1)
    };
    let cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![terminating, bound("low", "n2", "4", 1)],
    );
    let p = PodInfo {
        nominated_node: Some(Sym::new("n1")),
        ..incoming("2", 10)
    };
    let r = run(&cache, &p);
    assert_eq!(r.status.code(), Code::Unschedulable);
    assert_eq!(
        r.status.message(),
        "not eligible due to a terminating pod on the nominated node."
    );
    assert_eq!(nominated_name(&r), Some("n1"), "keeps its nomination");
    assert!(r.victims.is_empty());

    // Without a nomination it preempts as usual.
    let r = run(&cache, &incoming("2", 10));
    assert!(r.status.is_success());
}

#[test]
fn nominated_node_that_became_unresolvable_allows_preemption_again() {
    let terminating = PodInfo {
        terminating: true,
        ..bound("leaving", "n1", "4", 1)
    };
    let cache = cache_with(
        vec![
            node("n1").label(UNRESOLVABLE_LABEL, "x").build(),
            node("n2").build(),
        ],
        vec![terminating, bound("low", "n2", "4", 1)],
    );
    let p = PodInfo {
        nominated_node: Some(Sym::new("n1")),
        ..incoming("2", 10)
    };
    let r = run(&cache, &p);
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(nominated_name(&r), Some("n2"));
}

#[test]
fn prefilter_extensions_are_kept_in_step() {
    // The incoming pod is exclusive: any exclusive pod on the node blocks it
    // whatever the resources. Only the cycle-state counts say so, and only
    // remove_pod/add_pod keep them right.
    let cache = cache_with(
        vec![node("n1").build()],
        vec![
            pod("excl")
                .label(EXCLUSIVE_LABEL, "y")
                .req("cpu", "1")
                .priority(5)
                .on("n1")
                .build(),
            bound("small", "n1", "1", 1),
        ],
    );
    let p = pod("incoming")
        .label(EXCLUSIVE_LABEL, "y")
        .req("cpu", "1")
        .priority(10)
        .build();
    let r = run(&cache, &p);
    assert!(r.status.is_success(), "{}", r.status);
    // "small" is reprieved even though it is less important.
    assert_eq!(names(&r.victims), ["excl"]);
}

#[test]
fn search_stops_after_enough_candidates() {
    // 20 equal nodes; with an absolute floor of 3 and no percentage only 3
    // what-ifs run (plus the 20 diagnosis runs, which the evaluator also sees
    // but on all nodes: count what-if nodes by a fresh evaluator).
    let nodes: Vec<_> = (0..20).map(|i| node(&format!("n{i:02}")).build()).collect();
    let pods = (0..20)
        .map(|i| bound(&format!("p{i:02}"), &format!("n{i:02}"), "4", 1))
        .collect();
    let cache = cache_with(nodes, pods);
    let snap = cache.snapshot();
    let p = incoming("2", 10);
    let mut state = prepare_state(snap);
    let d = diagnose(snap, &p, &state, &TestEvaluator::default());
    let ev = TestEvaluator::default();
    let args = DefaultPreemptionArgs {
        min_candidate_nodes_percentage: 0,
        min_candidate_nodes_absolute: 3,
    };
    let plugin = DefaultPreemption::new(args).unwrap();
    let ctx = PostFilterContext {
        snapshot: snap,
        diagnosis: &d,
        evaluator: &ev,
        nominated: &[],
        extenders: NO_PREEMPTION_EXTENDERS,
    };
    let r = plugin.post_filter(&mut state, &p, &ctx);
    assert!(r.status.is_success());
    assert_eq!(ev.seen.lock().unwrap().len(), 3);
    // Deterministic: the same pod makes the same choice.
    let again = plugin.post_filter(&mut state, &p, &ctx);
    assert_eq!(again.nominated_node, r.nominated_node);

    // Defaults: max(20 * 10%, 100) capped at 20: every node is tried.
    let ev = TestEvaluator::default();
    let ctx = PostFilterContext {
        evaluator: &ev,
        ..ctx
    };
    let plugin = DefaultPreemption::new(DefaultPreemptionArgs::default()).unwrap();
    plugin.post_filter(&mut state, &p, &ctx);
    assert_eq!(ev.seen.lock().unwrap().len(), 20);
}

#[test]
fn violating_candidates_do_not_end_the_search() {
    // With a floor of 1, a first candidate that violates a budget is not
    // enough: the search goes on until a clean one is found.
    let db = |name: &str, n: &str| {
        pod(name)
            .label("app", "db")
            .req("cpu", "4")
            .priority(1)
            .on(n)
            .build()
    };
    let nodes: Vec<_> = (0..6).map(|i| node(&format!("n{i}")).build()).collect();
    let mut pods: Vec<_> = (0..5)
        .map(|i| db(&format!("db{i}"), &format!("n{i}")))
        .collect();
    pods.push(bound("free", "n5", "4", 9));
    let mut cache = cache_with(nodes, pods);
    cache.upsert_pdb(pdb("db-pdb", "db", 0));
    let args = DefaultPreemptionArgs {
        min_candidate_nodes_percentage: 0,
        min_candidate_nodes_absolute: 1,
    };
    let plugin = DefaultPreemption::new(args).unwrap();
    let r = run_with(
        &plugin,
        &cache,
        &incoming("2", 10),
        &[],
        &TestEvaluator::default(),
    );
    assert_eq!(nominated_name(&r), Some("n5"));
    assert_eq!(names(&r.victims), ["free"]);
}

// --- choosing among candidates -------------------------------------------

fn cand(node_idx: u32, violations: usize, victims: &[(i32, i64)]) -> Candidate {
    Candidate {
        node: NodeRef {
            id: NodeId(node_idx),
            name: Sym::new(&format!("n{node_idx}")),
        },
        victims: Victims {
            pods: victims
                .iter()
                .enumerate()
                .map(|(i, (prio, created))| {
                    Arc::new(PodInfo {
                        creation_ms: *created,
                        ..pod(&format!("v{node_idx}-{i}")).priority(*prio).build()
                    })
                })
                .collect(),
            pdb_violations: violations,
        },
    }
}

#[test]
fn pick_one_follows_kube_schedulers_criteria_in_order() {
    struct Case {
        name: &'static str,
        candidates: Vec<Candidate>,
        want: usize,
    }
    let cases = [
        Case {
            name: "fewest budget violations beats lower priorities",
            candidates: vec![cand(0, 1, &[(1, 10)]), cand(1, 0, &[(100, 10), (100, 10)])],
            want: 1,
        },
        Case {
            name: "lowest highest-victim priority",
            candidates: vec![
                cand(0, 0, &[(5, 10)]),
                cand(1, 0, &[(3, 10), (3, 10), (3, 10)]),
            ],
            want: 1,
        },
        Case {
            name: "smallest priority sum",
            candidates: vec![
                cand(0, 0, &[(5, 10), (4, 10)]),
                cand(1, 0, &[(5, 10), (2, 10)]),
            ],
            want: 1,
        },
        Case {
            // Shifted by 2^31, two victims at -100 cost more than one at 0.
            name: "sum is shifted so negative priorities do not favour more victims",
            candidates: vec![cand(0, 0, &[(0, 10), (-100, 10)]), cand(1, 0, &[(0, 10)])],
            want: 1,
        },
        Case {
            name: "fewest victims",
            candidates: vec![
                cand(0, 0, &[(5, 10), (1, 10), (1, 10)]),
                cand(1, 0, &[(5, 10), (2, 10)]),
            ],
            want: 1,
        },
        Case {
            name: "latest start among the highest-priority victims",
            candidates: vec![
                cand(0, 0, &[(5, 100), (1, 900)]),
                cand(1, 0, &[(5, 200), (1, 50)]),
            ],
            want: 1,
        },
        Case {
            name: "earliest of several highest-priority victims is what counts",
            candidates: vec![
                cand(0, 0, &[(5, 300), (5, 10)]),
                cand(1, 0, &[(5, 200), (5, 150)]),
            ],
            want: 1,
        },
        Case {
            name: "unknown start counts as now",
            candidates: vec![cand(0, 0, &[(5, 500)]), cand(1, 0, &[(5, 0)])],
            want: 1,
        },
        Case {
            name: "full tie: first in order",
            candidates: vec![cand(7, 0, &[(5, 10)]), cand(3, 0, &[(5, 10)])],
            want: 0,
        },
    ];
    for c in cases {
        assert_eq!(pick_one(&c.candidates), Some(c.want), "{}", c.name);
    }
    assert_eq!(pick_one(&[]), None);
}

// --- arguments ------------------------------------------------------------

#[test]
fn args_defaults_and_parsing() {
    let d = DefaultPreemptionArgs::from_json(None).unwrap();
    assert_eq!(d, DefaultPreemptionArgs::default());
    assert_eq!(d.min_candidate_nodes_percentage, 10);
    assert_eq!(d.min_candidate_nodes_absolute, 100);
    let v = serde_json::json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "DefaultPreemptionArgs",
        "minCandidateNodesPercentage": 50,
    });
    let a = DefaultPreemptionArgs::from_json(Some(&v)).unwrap();
    assert_eq!(a.min_candidate_nodes_percentage, 50);
    assert_eq!(a.min_candidate_nodes_absolute, 100);
    assert_eq!(
        DefaultPreemptionArgs::from_json(Some(&serde_json::Value::Null)).unwrap(),
        DefaultPreemptionArgs::default()
    );
}

#[test]
fn bad_args_name_the_field() {
    let cases = [
        (
            serde_json::json!({"minCandidateNodesPercentage": 101}),
            "minCandidateNodesPercentage",
        ),
        (
            serde_json::json!({"minCandidateNodesPercentage": -1}),
            "minCandidateNodesPercentage",
        ),
        (
            serde_json::json!({"minCandidateNodesAbsolute": -1}),
            "minCandidateNodesAbsolute",
        ),
        (
            serde_json::json!({"minCandidateNodesPercentage": 0, "minCandidateNodesAbsolute": 0}),
            "minCandidateNodesPercentage",
        ),
        (
            serde_json::json!({"minCandidateNodesPercentage": "10"}),
            "minCandidateNodesPercentage",
        ),
        (
            serde_json::json!({"minCandidateNodesAbsolute": 1.5}),
            "minCandidateNodesAbsolute",
        ),
        (
            serde_json::json!({"minCandidateNodesAbsolute": 1u64 << 40}),
            "minCandidateNodesAbsolute",
        ),
        (
            serde_json::json!({"minCandidateNodes": 3}),
            "minCandidateNodes",
        ),
        (serde_json::json!([1, 2]), "args"),
    ];
    for (v, field) in cases {
        let e = DefaultPreemptionArgs::from_json(Some(&v)).unwrap_err();
        assert_eq!(e.field, field, "{v}: {e}");
    }
    // Zero in one of them alone is fine.
    for v in [
        serde_json::json!({"minCandidateNodesPercentage": 0}),
        serde_json::json!({"minCandidateNodesAbsolute": 0}),
    ] {
        assert!(DefaultPreemptionArgs::from_json(Some(&v)).is_ok(), "{v}");
    }
}

#[test]
fn factory_validates() {
    let handle = test_handle();
    assert!(factory(None, &handle).is_ok());
    let bad = serde_json::json!({"minCandidateNodesAbsolute": -5});
    match factory(Some(&bad), &handle) {
        Err(e) => assert_eq!(e.field, "minCandidateNodesAbsolute"),
        Ok(_) => panic!("bad args accepted"),
    }
    let ok = factory(None, &handle).ok().unwrap();
    assert_eq!(ok.name(), NAME);
    assert!(ok.as_post_filter().is_some());
}

fn test_handle() -> Handle {
    testing_handle::handle()
}

mod testing_handle {
    use super::*;
    use strata_scheduler::clock::ManualClock;
    use strata_scheduler::cluster::{BindError, PodCondition, PodEvent};
    use strata_scheduler::sdk::{ClusterError, ClusterPort, WaitingPods};

    /// A cluster nobody calls: the plugin is pure.
    struct NoCluster;

    #[async_trait::async_trait]
    impl ClusterPort for NoCluster {
        async fn bind(&self, _pod: &PodInfo, _node: Sym) -> Result<(), BindError> {
            unreachable!("DefaultPreemption never binds")
        }
        async fn update_pod_condition(
            &self,
            _pod: &PodInfo,
            _c: PodCondition,
        ) -> Result<(), ClusterError> {
            unreachable!("DefaultPreemption never writes pods")
        }
        async fn delete_pod(&self, _pod: &PodInfo, _reason: &str) -> Result<(), ClusterError> {
            unreachable!("DefaultPreemption never deletes pods itself")
        }
        fn record_event(&self, _event: PodEvent) {}
    }

    pub(super) fn handle() -> Handle {
        Handle {
            cluster: Arc::new(NoCluster),
            waiting: WaitingPods::default(),
            clock: Arc::new(ManualClock::default()),
            scheduler_name: Sym::new("strata-scheduler"),
            preemption: Default::default(),
        }
    }
}

#[test]
fn num_candidates_formula() {
    let d = DefaultPreemptionArgs::default();
    assert_eq!(d.num_candidates(16_000), 1_600);
    assert_eq!(d.num_candidates(5_000), 500);
    assert_eq!(d.num_candidates(500), 100);
    assert_eq!(d.num_candidates(50), 50);
    assert_eq!(d.num_candidates(0), 0);
    let a = DefaultPreemptionArgs {
        min_candidate_nodes_percentage: 0,
        min_candidate_nodes_absolute: 5,
    };
    assert_eq!(a.num_candidates(1000), 5);
    let a = DefaultPreemptionArgs {
        min_candidate_nodes_percentage: 100,
        min_candidate_nodes_absolute: 0,
    };
    assert_eq!(a.num_candidates(1000), 1000);
}

// --- invariants -------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// On one node with random pods: victims all have lower priority, the
    /// pod fits once they are gone, and none of them could have stayed.
    #[test]
    fn victims_are_lower_priority_sufficient_and_minimal(
        pods in proptest::collection::vec((0i32..20, 1i64..=4), 1..8),
        want_cpu in 1i64..=8,
        prio in 0i32..20,
    ) {
        let alloc = 8i64;
        let mut used = 0;
        let mut placed = Vec::new();
        for (i, (p, cpu)) in pods.iter().enumerate() {
            if used + cpu <= alloc {
                used += cpu;
                placed.push(bound(&format!("p{i}"), "n1", &cpu.to_string(), *p));
            }
        }
        prop_assume!(used + want_cpu > alloc);
        let cache = cache_with(vec![node("n1").alloc("cpu", &alloc.to_string()).build()], placed.clone());
        let p = incoming(&want_cpu.to_string(), prio);
        let r = run(&cache, &p);
        let lower_cpu: i64 = placed.iter().filter(|q| q.priority < prio).map(|q| q.spec.requests[ResourceId::CPU] / 1000).sum();
        let feasible = used - lower_cpu + want_cpu <= alloc && lower_cpu > 0;
        prop_assert_eq!(r.status.is_success(), feasible, "{}", r.status);
        if feasible {
            let freed: i64 = r.victims.iter().map(|v| v.spec.requests[ResourceId::CPU] / 1000).sum();
            prop_assert!(r.victims.iter().all(|v| v.priority < prio));
            prop_assert!(used - freed + want_cpu <= alloc);
            for v in &r.victims {
                let cpu = v.spec.requests[ResourceId::CPU] / 1000;
                prop_assert!(used - freed + cpu + want_cpu > alloc, "{} could have stayed", v.name);
            }
        }
    }
}

// --- through the real NodeResourcesFit and TaintToleration plugins ---------

/// Runs real plugins the way the engine's evaluator does: PreFilter once,
/// Filters in order, PreFilter extensions for what-if pods.
struct PluginEvaluator {
    plugins: Vec<Arc<dyn Plugin>>,
}

impl PluginEvaluator {
    fn new() -> Self {
        let handle = test_handle();
        // Built by configuration name, as a profile builds them.
        let registry = crate::registry();
        let plugins = ["TaintToleration", "NodeResourcesFit"]
            .map(|name| registry.get(name).expect("registered")(None, &handle).unwrap())
            .to_vec();
        PluginEvaluator { plugins }
    }

    fn pre_filter(&self, snap: &Snapshot, pod: &PodInfo) -> CycleState {
        let mut state = CycleState::new();
        for p in &self.plugins {
            if let Some(pf) = p.as_pre_filter() {
                let r = pf.pre_filter(&mut state, pod, snap);
                assert!(r.status.is_success() || r.status.is_skip(), "{}", r.status);
            }
        }
        state
    }

    fn each_extension(
        &self,
        mut f: impl FnMut(&dyn strata_scheduler::framework::PreFilterPlugin) -> Status,
    ) -> Status {
        for p in &self.plugins {
            if let Some(pf) = p.as_pre_filter().filter(|pf| pf.has_extensions()) {
                let s = f(pf);
                if !s.is_success() {
                    return s;
                }
            }
        }
        Status::success()
    }
}

impl FilterEvaluator for PluginEvaluator {
    fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for p in &self.plugins {
            if let Some(f) = p.as_filter() {
                let s = f.filter(state, pod, node);
                if !s.is_success() {
                    return s;
                }
            }
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        self.each_extension(|pf| pf.remove_pod(state, pod, other, node))
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        self.each_extension(|pf| pf.add_pod(state, pod, other, node))
    }
}

fn run_real(cache: &Cache, p: &PodInfo) -> PostFilterResult {
    let snap = cache.snapshot();
    let ev = PluginEvaluator::new();
    let mut state = ev.pre_filter(snap, p);
    let mut d = Diagnosis::default();
    for n in snap.nodes() {
        let s = ev.run_filters(&state, p, n);
        assert!(!s.is_success(), "test setup: {} fits {}", p.name, n.name);
        d.node_statuses.push((n.id, s));
    }
    let ctx = PostFilterContext {
        snapshot: snap,
        diagnosis: &d,
        evaluator: &ev,
        nominated: &[],
        extenders: NO_PREEMPTION_EXTENDERS,
    };
    DefaultPreemption::new(DefaultPreemptionArgs::default())
        .unwrap()
        .post_filter(&mut state, p, &ctx)
}

#[test]
fn real_plugins_choose_victims_by_cpu_and_memory() {
    // n1 is short of memory, n2 of cpu; evicting the priority-1 pods on n2
    // frees enough of both, while on n1 even the lower pods cannot free 6Gi.
    let mem = |name: &str, n: &str, cpu: &str, mem: &str, prio: i32| {
        pod(name)
            .req("cpu", cpu)
            .req("memory", mem)
            .priority(prio)
            .on(n)
            .build()
    };
    let cache = cache_with(
        vec![
            node("n1").alloc("memory", "8Gi").build(),
            node("n2").alloc("memory", "8Gi").build(),
            node("tainted")
                .taint("dedicated", "gpu", "NoSchedule")
                .build(),
        ],
        vec![
            mem("n1-high", "n1", "1", "4Gi", 100),
            mem("n1-low", "n1", "1", "3Gi", 1),
            mem("n2-a", "n2", "1", "1Gi", 1),
            mem("n2-b", "n2", "2", "1Gi", 1),
            mem("n2-c", "n2", "1", "1Gi", 50),
            mem("t-low", "tainted", "4", "1Gi", 1),
        ],
    );
    let p = pod("incoming")
        .req("cpu", "2")
        .req("memory", "6Gi")
        .priority(10)
        .build();
    let r = run_real(&cache, &p);
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(nominated_name(&r), Some("n2"));
    // n2 has 4 cpus and 8Gi. With both priority-1 pods gone 3 cpus and 7Gi
    // are free; giving "n2-a" (1 cpu, 1Gi) back still leaves room for 2 cpus
    // and 6Gi, so only "n2-b" goes. n1 could free only 3Gi.
    assert_eq!(names(&r.victims), ["n2-b"]);
}

#[test]
fn real_plugins_report_what_preemption_cannot_fix() {
    // A request larger than any node's allocatable is unresolvable for
    // NodeResourcesFit; an untolerated taint is unresolvable for
    // TaintToleration: preemption helps nowhere.
    let cache = cache_with(
        vec![
            node("n1").build(),
            node("tainted")
                .taint("dedicated", "gpu", "NoSchedule")
                .build(),
        ],
        vec![
            bound("low", "n1", "2", 1),
            bound("t-low", "tainted", "4", 1),
        ],
    );
    let r = run_real(&cache, &incoming("8", 10));
    assert_eq!(r.status.code(), Code::Unschedulable);
    assert_eq!(
        r.status.message(),
        "0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
}

#[test]
fn a_lone_pod_never_evicts_a_claimed_gang_member() {
    // n1: a gang member (prio 1) and a lone pod (prio 5), 2 cpus each on 4.
    // Kube-scheduler would evict the gang member (lowest priority); with a
    // gang plugin claiming its members, the lone pod is evicted, since a
    // gang loses its members only as a whole.
    let member = |name: &str, node: &str| {
        pod(name)
            .req("cpu", "2")
            .priority(1)
            .label("vendor.example/gang", "train")
            .on(node)
            .build()
    };
    let gang = with_fake_gang();
    let run =
        |cache: &Cache, p: &PodInfo| run_with(&gang, cache, p, &[], &TestEvaluator::default());
    let cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![
            member("g0", "n1"),
            bound("mid", "n1", "2", 5),
            member("g1", "n2"),
            member("g2", "n2"),
        ],
    );
    let r = run(&cache, &incoming("2", 10));
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(nominated_name(&r), Some("n1"));
    assert_eq!(names(&r.victims), ["mid"]);
    // Only gang members below it: nothing to preempt.
    let cache = cache_with(
        vec![node("n2").build()],
        vec![member("g1", "n2"), member("g2", "n2")],
    );
    let r = run(&cache, &incoming("2", 10));
    assert!(!r.status.is_success());
    assert!(r.victims.is_empty()); // Without a claimant the member is an ordinary victim (kube's choice).
    let cache = cache_with(
        vec![node("n1").build()],
        vec![member("g0", "n1"), bound("mid", "n1", "2", 5)],
    );
    let r = run_nominated(&cache, &incoming("2", 10), &[]);
    assert_eq!(names(&r.victims), ["g0"]);
}

/// Extenders with a `preemptVerb` as the engine hands them to the plugin:
/// this one keeps only the nodes not in `forbid`, or fails.
struct FakeExtenders {
    forbid: &'static str,
    fail: bool,
    seen: Mutex<Vec<String>>,
}

impl strata_scheduler::sdk::PreemptionExtenders for FakeExtenders {
    fn is_empty(&self) -> bool {
        false
    }
    fn process(
        &self,
        _pod: &PodInfo,
        candidates: Vec<strata_scheduler::sdk::PreemptionCandidate>,
    ) -> Result<Vec<strata_scheduler::sdk::PreemptionCandidate>, Status> {
        self.seen
            .lock()
            .unwrap()
            .extend(candidates.iter().map(|c| c.node.name.as_str().to_owned()));
        if self.fail {
            return Err(Status::error("extender x failed on preemption: down"));
        }
        Ok(candidates
            .into_iter()
            .filter(|c| c.node.name.as_str() != self.forbid)
            .collect())
    }
}

/// The candidates go to the extenders before one is chosen: the node the
/// plugin would pick alone is dropped by the extender and the other is
/// taken; an extender's failure is the attempt's status, with no victims.
#[test]
fn preemption_extenders_narrow_the_candidates() {
    let cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![
            bound("low1", "n1", "4", 1),
            bound("low2", "n2", "4", 1),
            bound("lower2", "n2", "0", 0),
        ],
    );
    let p = incoming("2", 10);
    let alone = run(&cache, &p);
    assert!(alone.status.is_success(), "{}", alone.status);
    let chosen = nominated_name(&alone).unwrap();
    let other = if chosen == "n1" { "n2" } else { "n1" };

    let snap = cache.snapshot();
    let plugin = DefaultPreemption::new(DefaultPreemptionArgs::default()).unwrap();
    let ev = TestEvaluator::default();
    for fail in [false, true] {
        let mut state = prepare_state(snap);
        let diagnosis = diagnose(snap, &p, &state, &ev);
        let ext = FakeExtenders {
            forbid: chosen,
            fail,
            seen: Mutex::new(Vec::new()),
        };
        let ctx = PostFilterContext {
            snapshot: snap,
            diagnosis: &diagnosis,
            evaluator: &ev,
            nominated: &[],
            extenders: &ext,
        };
        let r = plugin.post_filter(&mut state, &p, &ctx);
        let mut seen = ext.seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, ["n1", "n2"], "every candidate went to the extenders");
        if fail {
            assert_eq!(r.status.code(), Code::Error, "{}", r.status);
            assert!(r.status.message().contains("extender x"));
            assert!(r.victims.is_empty() && r.nominated_node.is_none());
        } else {
            assert!(r.status.is_success(), "{}", r.status);
            assert_eq!(nominated_name(&r), Some(other));
            assert!(
                r.victims
                    .iter()
                    .all(|v| v.bound_node.map(|n| n.as_str()) == Some(other))
            );
        }
    }
}
