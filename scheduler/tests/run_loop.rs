//! Tests of the engine's run loop ([`Scheduler::run`]) on its own thread with
//! the system clock: updates sent on the channel are applied, nothing is
//! scheduled before the scheduling flag is up (and then everything sent
//! before it is already applied), pausing hands back pods waiting at Permit,
//! and stopping waits for binds in flight.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use strata_scheduler::clock::SystemClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::{CycleOutcome, CycleResult, RunControl, RunObserver, Scheduler};
use strata_scheduler::framework::*;
use strata_scheduler::model::PodInfo;
use strata_scheduler::testing::plugins::{Binder, Cpu, Sort};
use strata_scheduler::testing::{RecordingCluster, node, pod};

/// Holds pods annotated `wait` at Permit for a long time.
struct Holder;
strata_scheduler::plugin!(Holder: "Holder" => [Permit]);
impl PermitPlugin for Holder {
    fn permit(&self, _s: &mut CycleState, pod: &PodInfo, _n: NodeRef) -> PermitResult {
        if pod.annotations.contains_key("wait") {
            PermitResult::wait(Duration::from_secs(600))
        } else {
            PermitResult::allow()
        }
    }
}

/// Records every cycle's result and, at each idle turn, the number of
/// nodes the cache holds.
#[derive(Default)]
struct Recorder {
    results: Arc<Mutex<Vec<(String, CycleResult, usize)>>>,
}
impl RunObserver for Recorder {
    fn cycle(&mut self, sched: &Scheduler, o: &CycleOutcome) {
        let nodes = sched.snapshot().num_nodes();
        self.results
            .lock()
            .push((o.pod.key(), o.result.clone(), nodes));
    }
}

struct Running {
    tx: mpsc::Sender<ClusterUpdate>,
    control: Arc<RunControl>,
    cluster: Arc<RecordingCluster>,
    results: Arc<Mutex<Vec<(String, CycleResult, usize)>>>,
    thread: std::thread::JoinHandle<(strata_scheduler::engine::RunSummary, usize)>,
    _rt: tokio::runtime::Runtime,
}

fn start(grace: Duration) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster = Arc::new(RecordingCluster::default());
    let mut reg = Registry::new();
    reg.register("Sort", |_, _| Ok(Arc::new(Sort)));
    reg.register("Cpu", |_, _| Ok(Arc::new(Cpu)));
    reg.register("Holder", |_, _| Ok(Arc::new(Holder)));
    reg.register("Binder", |_, h| Ok(Arc::new(Binder(h.cluster.clone()))));
    let defaults = [("Sort", 0), ("Cpu", 0), ("Holder", 0), ("Binder", 0)];
    let cfg = SchedulerConfig::from_yaml(
        "parallelism: 1\nprofiles: [{schedulerName: strata-scheduler}]\n",
    )
    .unwrap();
    let mut sched = Scheduler::new(
        cfg,
        &reg,
        &defaults,
        cluster.clone(),
        Arc::new(SystemClock::default()),
        rt.handle().clone(),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let control = Arc::new(RunControl::new());
    let results: Arc<Mutex<Vec<(String, CycleResult, usize)>>> = Arc::default();
    let c2 = control.clone();
    let mut rec = Recorder {
        results: results.clone(),
    };
    let thread = std::thread::spawn(move || {
        let s = sched.run(&rx, &c2, &mut rec, grace);
        (s, sched.waiting_pods().len())
    });
    Running {
        tx,
        control,
        cluster,
        results,
        thread,
        _rt: rt,
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn node_up(name: &str, cpu: &str) -> ClusterUpdate {
    ClusterUpdate::NodeUpserted(Arc::new(node(name).alloc("cpu", cpu).build()))
}

fn pod_up(p: PodInfo) -> ClusterUpdate {
    ClusterUpdate::PodUpserted(Arc::new(p))
}

#[test]
fn nothing_is_scheduled_before_the_flag_and_the_preload_is_applied_first() {
    let r = start(Duration::from_secs(5));
    for i in 0..20 {
        r.tx.send(pod_up(pod(&format!("p{i}")).req("cpu", "1").build()))
            .unwrap();
    }
    for i in 0..50 {
        r.tx.send(node_up(&format!("n{i}"), "1")).unwrap();
    }
    wait_until("updates applied", || r.control.applied() == 70);
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        r.results.lock().is_empty(),
        "scheduled before the flag was set"
    );
    assert!(r.cluster.binds.lock().is_empty());
    // More nodes, then the flag: the first cycle must already see them all.
    for i in 50..60 {
        r.tx.send(node_up(&format!("n{i}"), "1")).unwrap();
    }
    r.control.set_scheduling(true);
    wait_until("all bound", || r.cluster.binds.lock().len() == 20);
    let results = r.results.lock().clone();
    assert_eq!(results.len(), 20);
    assert!(
        results
            .iter()
            .all(|(_, res, nodes)| matches!(res, CycleResult::Scheduled { .. }) && *nodes == 60)
    );
    r.control.request_stop();
    let (summary, _) = r.thread.join().unwrap();
    assert_eq!(summary.cycles, 20);
    assert_eq!(summary.updates, 80);
    assert!(!summary.disconnected);
    assert_eq!(summary.abandoned_binds, 0);
}

#[test]
fn pausing_stops_scheduling_and_hands_back_waiting_pods() {
    let r = start(Duration::from_secs(5));
    r.tx.send(node_up("n1", "100")).unwrap();
    r.tx.send(pod_up(
        pod("held").req("cpu", "1").annotation("wait", "").build(),
    ))
    .unwrap();
    r.control.set_scheduling(true);
    wait_until("held pod at Permit", || r.results.lock().len() == 1);
    assert!(matches!(
        r.results.lock()[0].1,
        CycleResult::WaitingOnPermit { .. }
    ));
    r.control.set_scheduling(false);
    // The rejected pod goes back to the queue; while paused, new pods wait.
    std::thread::sleep(Duration::from_millis(100));
    r.tx.send(pod_up(pod("later").req("cpu", "1").build()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(r.results.lock().len(), 1, "scheduled while paused");
    assert!(r.cluster.binds.lock().is_empty());
    // Resuming schedules the new pod; the held one waits again at Permit
    // after its backoff (it was rejected, not bound).
    r.control.set_scheduling(true);
    wait_until("later bound", || {
        r.cluster
            .binds
            .lock()
            .iter()
            .any(|(p, _)| p == "default/later")
    });
    r.control.request_stop();
    let (summary, waiting_after) = r.thread.join().unwrap();
    assert_eq!(
        waiting_after, 0,
        "stop must hand back pods waiting at Permit"
    );
    assert_eq!(summary.abandoned_binds, 0);
    assert!(
        !r.cluster
            .binds
            .lock()
            .iter()
            .any(|(p, _)| p == "default/held")
    );
}

#[test]
fn stop_waits_for_binds_in_flight() {
    let r = start(Duration::from_secs(5));
    r.cluster
        .bind_delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    r.tx.send(node_up("n1", "100")).unwrap();
    for i in 0..5 {
        r.tx.send(pod_up(pod(&format!("p{i}")).req("cpu", "1").build()))
            .unwrap();
    }
    r.control.set_scheduling(true);
    wait_until("cycles", || r.results.lock().len() == 5);
    r.control.request_stop();
    let (summary, _) = r.thread.join().unwrap();
    assert_eq!(summary.abandoned_binds, 0);
    assert_eq!(
        r.cluster.binds.lock().len(),
        5,
        "binds in flight at stop must finish"
    );
}

#[test]
fn stop_gives_up_on_binds_after_the_grace_period() {
    let r = start(Duration::from_millis(50));
    r.cluster
        .bind_delay_ms
        .store(5_000, std::sync::atomic::Ordering::SeqCst);
    r.tx.send(node_up("n1", "100")).unwrap();
    r.tx.send(pod_up(pod("slow").req("cpu", "1").build()))
        .unwrap();
    r.control.set_scheduling(true);
    wait_until("cycle", || r.results.lock().len() == 1);
    let t = Instant::now();
    r.control.request_stop();
    let (summary, _) = r.thread.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(summary.abandoned_binds, 1);
}

#[test]
fn the_loop_ends_when_every_sender_is_gone() {
    let r = start(Duration::from_secs(1));
    r.tx.send(node_up("n1", "1")).unwrap();
    drop(r.tx);
    let (summary, _) = r.thread.join().unwrap();
    assert!(summary.disconnected);
    assert_eq!(summary.updates, 1);
}

#[test]
fn a_query_is_answered_once_on_the_engine_thread_after_the_updates_sent_before_it() {
    use strata_scheduler::cluster::EngineQuery;
    // Paused (no scheduling flag): a standby answers questions too.
    let r = start(Duration::from_secs(5));
    for i in 0..30 {
        r.tx.send(node_up(&format!("n{i}"), "4")).unwrap();
    }
    let (atx, arx) = mpsc::channel();
    let main = std::thread::current().id();
    let q = EngineQuery::new(move |s: &Scheduler| {
        let _ = atx.send((s.snapshot().num_nodes(), std::thread::current().id()));
    });
    // Sent twice (the update is Clone): run once.
    r.tx.send(ClusterUpdate::Query(q.clone())).unwrap();
    r.tx.send(ClusterUpdate::Query(q)).unwrap();
    let (nodes, thread) = arx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(nodes, 30, "every node sent before the question is applied");
    assert_ne!(thread, main, "answered on the engine thread");
    wait_until("both applied", || r.control.applied() == 32);
    assert!(arx.try_recv().is_err(), "the question ran once");
    r.control.request_stop();
    r.thread.join().unwrap();
}
