//! Engine tests with small in-test plugins and a fake cluster: the cycle
//! phases, failure paths, Permit waits and configuration errors.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::{ConfigError, SchedulerConfig};
use strata_scheduler::engine::{CycleResult, Scheduler};
use strata_scheduler::framework::*;
use strata_scheduler::intern::Sym;
use strata_scheduler::model::{NodeInfo, PodInfo};
use strata_scheduler::testing::plugins::{Binder, Cpu, Sort};
use strata_scheduler::testing::{RecordingCluster, node, pod};

/// Records the pod count of every node it is told about.
#[derive(Default)]
struct Watcher {
    seen: Mutex<Vec<(String, usize, bool)>>,
}
strata_scheduler::plugin!(Watcher: "Watcher" => [NodeObserver]);
impl NodeObserver for Watcher {
    fn node_changed(&self, node: &NodeInfo, _snap: &strata_scheduler::cache::Snapshot) {
        self.seen
            .lock()
            .push((node.name.to_string(), node.pods.len(), node.present));
    }
}

/// Counts reservations; holds pods with annotation `wait` at Permit.
#[derive(Default)]
struct Holder {
    reserved: AtomicUsize,
}
strata_scheduler::plugin!(Holder: "Holder" => [Reserve, Permit]);
impl ReservePlugin for Holder {
    fn reserve(
        &self,
        _s: &mut CycleState,
        _p: &PodInfo,
        _n: NodeRef,
        _snap: &strata_scheduler::cache::Snapshot,
    ) -> Status {
        self.reserved.fetch_add(1, Ordering::SeqCst);
        Status::success()
    }
    fn unreserve(&self, _s: &mut CycleState, _p: &PodInfo, _n: NodeRef) {
        self.reserved.fetch_sub(1, Ordering::SeqCst);
    }
}
impl PermitPlugin for Holder {
    fn permit(&self, _s: &mut CycleState, pod: &PodInfo, _n: NodeRef) -> PermitResult {
        if pod.annotations.contains_key("wait") {
            PermitResult::wait(Duration::from_secs(30))
        } else {
            PermitResult::allow()
        }
    }
}

struct Env {
    sched: Scheduler,
    cluster: Arc<RecordingCluster>,
    clock: Arc<ManualClock>,
    holder: Arc<Holder>,
    watcher: Arc<Watcher>,
    _rt: tokio::runtime::Runtime,
}

fn env_with(yaml: &str) -> Result<Env, ConfigError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster = Arc::new(RecordingCluster::default());
    let clock = Arc::new(ManualClock::default());
    let holder = Arc::new(Holder::default());
    let mut reg = Registry::new();
    reg.register("Sort", |_, _| Ok(Arc::new(Sort)));
    reg.register("Cpu", |_, _| Ok(Arc::new(Cpu)));
    reg.register("Binder", |_, h| Ok(Arc::new(Binder(h.cluster.clone()))));
    let watcher = Arc::new(Watcher::default());
    let w2 = watcher.clone();
    reg.register("Watcher", move |_, _| Ok(w2.clone()));
    let h2 = holder.clone();
    reg.register("Holder", move |_, _| Ok(h2.clone()));
    reg.register("Picky", |args, _| {
        let v = args
            .and_then(|a| a.get("level"))
            .and_then(|l| l.as_i64())
            .unwrap_or(1);
        if v < 0 {
            return Err(PluginArgsError::new("level", "must not be negative"));
        }
        Ok(Arc::new(Sort))
    });
    let defaults = [
        ("Sort", 0),
        ("Cpu", 1),
        ("Holder", 0),
        ("Binder", 0),
        ("Watcher", 0),
    ];
    let cfg = SchedulerConfig::from_yaml(yaml)?;
    let sched = Scheduler::new(
        cfg,
        &reg,
        &defaults,
        cluster.clone(),
        clock.clone(),
        rt.handle().clone(),
    )?;
    Ok(Env {
        sched,
        cluster,
        clock,
        holder,
        watcher,
        _rt: rt,
    })
}

fn env() -> Env {
    env_with("parallelism: 1\nseed: 7\n").unwrap()
}

impl Env {
    fn add_node(&mut self, name: &str, cpu: &str) {
        self.sched
            .handle_update(ClusterUpdate::NodeUpserted(Arc::new(
                node(name).alloc("cpu", cpu).build(),
            )));
    }
    fn add_pod(&mut self, p: PodInfo) {
        self.sched
            .handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
    }
    /// Runs cycles and waits for binds until nothing is left to do.
    fn drain(&mut self) -> Vec<CycleResult> {
        let mut out = Vec::new();
        loop {
            while let Some(o) = self.sched.schedule_one() {
                out.push(o.result);
            }
            if self.sched.in_flight() > self.sched.waiting_pods().len()
                && self.sched.wait_for_completion(Duration::from_secs(5)) > 0
            {
                continue;
            }
            if self.sched.queue_stats().active == 0 {
                return out;
            }
        }
    }
}

#[test]
fn schedules_without_overcommit_and_binds_once() {
    let mut e = env();
    e.add_node("a", "4");
    e.add_node("b", "2");
    for i in 0..6 {
        e.add_pod(pod(&format!("p{i}")).req("cpu", "1").build());
    }
    let results = e.drain();
    let scheduled = results
        .iter()
        .filter(|r| matches!(r, CycleResult::Scheduled { .. }))
        .count();
    assert_eq!(scheduled, 6);
    let binds = e.cluster.binds.lock().clone();
    assert_eq!(binds.len(), 6);
    let mut keys: Vec<_> = binds.iter().map(|b| b.0.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6, "a pod was bound twice");
    assert_eq!(binds.iter().filter(|b| b.1 == "a").count(), 4);
    e.sched.cache().check_consistency().unwrap();
    // A seventh pod does not fit anywhere.
    e.add_pod(pod("p6").req("cpu", "1").build());
    let r = e.drain();
    match &r[0] {
        CycleResult::Unschedulable { message } => {
            assert_eq!(message, "0/2 nodes are available: 2 Insufficient cpu.")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(e.sched.queue_stats().unschedulable, 1);
}

#[test]
fn unschedulable_pod_moves_on_node_add() {
    let mut e = env();
    e.add_node("a", "1");
    e.add_pod(pod("big").req("cpu", "2").build());
    e.drain();
    assert_eq!(e.sched.queue_stats().unschedulable, 1);
    let events = e.cluster.events.lock().clone();
    assert!(events.iter().any(|ev| &*ev.name == "big"
        && ev.reason == "FailedScheduling"
        && ev.message == "0/1 nodes are available: 1 Insufficient cpu."));
    // The condition is published asynchronously.
    let mut seen = false;
    for _ in 0..100 {
        let conds = e.cluster.conditions.lock().clone();
        if conds
            .iter()
            .any(|(k, c)| k == "default/big" && !c.scheduled && c.reason == "Unschedulable")
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seen, "PodScheduled=False condition published");
    e.add_node("b", "4");
    // Backoff of the first attempt must pass first.
    e.clock.advance(Duration::from_secs(1));
    let r = e.drain();
    assert_eq!(
        r,
        vec![CycleResult::Scheduled {
            node: Sym::new("b")
        }]
    );
}

#[test]
fn failed_bind_forgets_and_retries() {
    let mut e = env();
    e.add_node("a", "1");
    e.cluster.fail_binds.store(1, Ordering::SeqCst);
    e.add_pod(pod("p").req("cpu", "1").build());
    e.drain();
    assert_eq!(e.sched.counters().bind_failures, 1);
    assert_eq!(e.holder.reserved.load(Ordering::SeqCst), 0, "unreserve ran");
    assert!(
        e.sched.snapshot().assigned_pod("uid-p").is_none(),
        "assumption forgotten"
    );
    assert_eq!(e.sched.queue_stats().backoff, 1);
    e.clock.advance(Duration::from_secs(1));
    e.drain();
    assert_eq!(e.cluster.binds.lock().len(), 1);
    e.sched.cache().check_consistency().unwrap();
}

#[test]
fn conflict_is_not_retried() {
    let mut e = env();
    e.add_node("a", "1");
    e.cluster.conflict.store(1, Ordering::SeqCst);
    e.add_pod(pod("p").req("cpu", "1").build());
    e.drain();
    assert_eq!(e.sched.queue_stats(), Default::default());
    assert!(e.cluster.binds.lock().is_empty());
}

#[test]
fn permit_wait_allowed_and_timed_out() {
    let mut e = env();
    e.add_node("a", "4");
    e.add_pod(pod("w1").req("cpu", "1").annotation("wait", "1").build());
    e.add_pod(pod("w2").req("cpu", "1").annotation("wait", "1").build());
    let r = e.drain();
    assert!(matches!(r[0], CycleResult::WaitingOnPermit { .. }));
    assert_eq!(e.sched.waiting_pods().len(), 2);
    assert!(e.sched.waiting_pods().allow("uid-w1", "Holder"));
    assert_eq!(e.sched.wait_for_completion(Duration::from_secs(5)), 1);
    assert_eq!(e.cluster.binds.lock().len(), 1);
    // w2 times out and gives back what it reserved.
    e.clock.advance(Duration::from_secs(31));
    e.sched.tick();
    assert_eq!(e.sched.wait_for_completion(Duration::from_secs(5)), 1);
    assert_eq!(e.holder.reserved.load(Ordering::SeqCst), 1);
    assert!(e.sched.snapshot().assigned_pod("uid-w2").is_none());
    assert_eq!(e.sched.queue_stats().unschedulable, 1);
    e.sched.cache().check_consistency().unwrap();
}

#[test]
fn pods_of_other_schedulers_are_left_alone_but_counted() {
    let mut e = env();
    e.add_node("a", "2");
    let mut other = pod("theirs").req("cpu", "1").build();
    other.scheduler_name = Sym::new("default-scheduler");
    e.add_pod(other);
    assert_eq!(e.sched.queue_stats().active, 0);
    e.add_pod(pod("bound").req("cpu", "2").on("a").build());
    e.add_pod(pod("mine").req("cpu", "1").build());
    let r = e.drain();
    assert!(
        matches!(r[0], CycleResult::Unschedulable { .. }),
        "capacity used by a pod bound elsewhere counts"
    );
}

#[test]
fn a_pending_pod_being_deleted_is_not_scheduled() {
    let mut e = env();
    e.add_node("a", "4");
    let mut going = pod("going").req("cpu", "1").build();
    going.terminating = true;
    e.add_pod(going);
    assert_eq!(e.sched.queue_stats().active, 0, "queued while terminating");
    // Queued first, then marked for deletion (a finalizer keeps it).
    e.add_pod(pod("later").req("cpu", "1").build());
    let mut later = pod("later").req("cpu", "1").build();
    later.terminating = true;
    e.add_pod(later);
    assert!(e.drain().is_empty(), "a terminating pod was attempted");
    let s = e.sched.queue_stats();
    assert_eq!((s.active, s.backoff, s.unschedulable), (0, 0, 0));
}

#[test]
fn deleted_bound_pod_frees_capacity_and_requeues() {
    let mut e = env();
    e.add_node("a", "1");
    e.add_pod(pod("old").req("cpu", "1").on("a").build());
    e.add_pod(pod("new").req("cpu", "1").build());
    e.drain();
    assert_eq!(e.sched.queue_stats().unschedulable, 1);
    e.sched.handle_update(ClusterUpdate::PodDeleted {
        uid: "uid-old".into(),
    });
    e.clock.advance(Duration::from_secs(1));
    let r = e.drain();
    assert!(matches!(r[0], CycleResult::Scheduled { .. }));
}

#[test]
fn same_seed_same_placements() {
    let run = || {
        let mut e = env();
        for i in 0..10 {
            e.add_node(&format!("n{i}"), "100");
        }
        for i in 0..50 {
            e.add_pod(pod(&format!("p{i}")).build());
        }
        e.drain();
        let mut b = e.cluster.binds.lock().clone();
        b.sort();
        b
    };
    assert_eq!(run(), run());
}

#[test]
fn configuration_errors_name_the_field() {
    let err = |y: &str| match env_with(y) {
        Ok(_) => panic!("accepted: {y}"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err(
            "profiles:\n- schedulerName: s\n  plugins:\n    filter:\n      enabled:\n      - name: Nope\n"
        ),
        "configuration: profiles[0].plugins.filter.enabled[0].name: unknown plugin \"Nope\""
    );
    assert_eq!(
        err(
            "profiles:\n- schedulerName: s\n  plugins:\n    score:\n      enabled:\n      - name: Cpu\n        weight: -2\n"
        ),
        "configuration: profiles[0].plugins.score.enabled[0].weight: -2 is outside 1..=1000"
    );
    assert_eq!(
        err(
            "profiles:\n- schedulerName: s\n  plugins:\n    filter:\n      enabled:\n      - name: Binder\n"
        ),
        "configuration: profiles[0].plugins.filter.enabled[0].name: plugin \"Binder\" does not implement the filter extension point"
    );
    assert_eq!(
        err(
            "profiles:\n- schedulerName: s\n  plugins:\n    queueSort:\n      disabled:\n      - name: '*'\n"
        ),
        "configuration: profiles[0].plugins.queueSort: exactly one QueueSort plugin is needed, found 0"
    );
    assert!(err("parallelism: 0\n").contains("parallelism: 0 is outside 1..=1024"));
    assert!(
        err("profiles:\n- schedulerName: a\n- schedulerName: a\n")
            .contains("profiles[1].schedulerName")
    );
    assert!(err("percentageOfNodesToScore: 101\n").contains("percentageOfNodesToScore"));
    let e = err("profilez: []\n");
    assert!(e.contains("unknown field `profilez`"), "{e}");
    assert!(
        env_with("leaderElection: {leaderElect: true}\n").is_ok(),
        "adapter settings are accepted"
    );
    let e = err(
        "profiles:\n- schedulerName: s\n  pluginConfig:\n  - name: Picky\n    args: {level: -1}\n",
    );
    assert_eq!(
        e,
        "configuration: profiles[0].pluginConfig[0].args.level: must not be negative"
    );
    assert!(err("profiles: [\n").starts_with("configuration: line"));
}

#[test]
fn two_profiles_share_one_queue() {
    let mut e = env_with(
        "parallelism: 1\nprofiles:\n- schedulerName: strata-scheduler\n- schedulerName: gpu\n",
    )
    .unwrap();
    e.add_node("a", "4");
    let mut g = pod("g").req("cpu", "1").build();
    g.scheduler_name = Sym::new("gpu");
    e.add_pod(g);
    e.add_pod(pod("s").req("cpu", "1").build());
    assert_eq!(e.drain().len(), 2);
    assert_eq!(e.cluster.binds.lock().len(), 2);
}

#[test]
fn node_observers_see_every_change() {
    let mut e = env();
    e.add_node("a", "4");
    e.cluster.fail_binds.store(1, Ordering::SeqCst);
    e.add_pod(pod("p").req("cpu", "1").build());
    e.drain();
    e.sched
        .handle_update(ClusterUpdate::NodeDeleted("a".into()));
    let seen = e.watcher.seen.lock().clone();
    // Added; assumed (1 pod); forgotten after the failed bind (0); deleted.
    let a: Vec<(usize, bool)> = seen
        .iter()
        .filter(|s| s.0 == "a")
        .map(|s| (s.1, s.2))
        .collect();
    assert_eq!(a, vec![(0, true), (1, true), (0, true), (0, false)]);
}

#[test]
fn equivalence_cache_changes_nothing() {
    let run = |classes: usize| {
        let mut e = env_with(&format!(
            "parallelism: 1\nseed: 3\nequivalenceCacheClasses: {classes}\n"
        ))
        .unwrap();
        for i in 0..20 {
            e.add_node(&format!("n{i}"), &format!("{}", 2 + i % 5));
        }
        for i in 0..120 {
            // Three templates interleaved; some do not fit anywhere.
            let cpu = ["500m", "1", "3"][i % 3];
            e.add_pod(pod(&format!("p{i}")).req("cpu", cpu).build());
        }
        let results = e.drain();
        let mut b = e.cluster.binds.lock().clone();
        b.sort();
        e.sched.cache().check_consistency().unwrap();
        (results, b)
    };
    let (r0, b0) = run(0);
    let (r1, b1) = run(32);
    assert_eq!(b0, b1);
    assert_eq!(r0, r1);
    assert!(
        r0.iter()
            .any(|r| matches!(r, CycleResult::Unschedulable { .. }))
    );
}
