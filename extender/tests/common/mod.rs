//! Shared by the extender tests: an engine with the test plugins of
//! `strata_scheduler::testing` (priority sort, cpu fit and most-free score,
//! a binder through the recording cluster) and the HTTP extender client.
#![allow(dead_code)]

pub mod go;

use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::{ClusterUpdate, PodEvent};
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::{CycleResult, Scheduler};
use strata_scheduler::framework::Registry;
use strata_scheduler::model::PodInfo;
use strata_scheduler::testing::plugins::{Binder, Cpu, Sort};
use strata_scheduler::testing::{RecordingCluster, node};

/// An engine and what it reports to.
pub struct Env {
    pub sched: Scheduler,
    pub cluster: Arc<RecordingCluster>,
    pub rt: tokio::runtime::Runtime,
}

/// A runtime for servers and binding cycles.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An engine whose configuration is `extenders` (YAML of the list) over
/// the test plugins, with the HTTP extender client registered.
pub fn env(rt: tokio::runtime::Runtime, extenders: &str) -> Env {
    try_env(rt, extenders).expect("the configuration is valid")
}

/// As [`env`], the configuration error when there is one.
pub fn try_env(rt: tokio::runtime::Runtime, extenders: &str) -> Result<Env, String> {
    let cluster = Arc::new(RecordingCluster::default());
    let mut reg = Registry::new();
    reg.register("Sort", |_, _| Ok(Arc::new(Sort)));
    reg.register("Cpu", |_, _| Ok(Arc::new(Cpu)));
    reg.register("Binder", |_, h| Ok(Arc::new(Binder(h.cluster.clone()))));
    strata_extender::register(&mut reg);
    let defaults = [("Sort", 0), ("Cpu", 1), ("Binder", 0)];
    let yaml = format!("parallelism: 1\nseed: 7\nextenders: {extenders}\n");
    let cfg = SchedulerConfig::from_yaml(&yaml).map_err(|e| e.to_string())?;
    let sched = Scheduler::new(
        cfg,
        &reg,
        &defaults,
        cluster.clone(),
        Arc::new(ManualClock::default()),
        rt.handle().clone(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Env { sched, cluster, rt })
}

impl Env {
    /// Adds a node with `cpu` cpus and the extra allocatable `extra`.
    pub fn add_node(&mut self, name: &str, cpu: &str, extra: &[(&str, &str)]) {
        let mut b = node(name).alloc("cpu", cpu).alloc("pods", "110");
        for (r, q) in extra {
            b = b.alloc(r, q);
        }
        self.sched
            .handle_update(ClusterUpdate::NodeUpserted(Arc::new(b.build())));
    }

    /// Adds a pod (pending, or bound when built with `.on(node)`).
    pub fn add_pod(&mut self, p: PodInfo) {
        self.sched
            .handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
    }

    /// Schedules every ready pod, then waits for their binding cycles.
    /// Returns each cycle's pod name and result.
    pub fn run(&mut self) -> Vec<(String, CycleResult)> {
        let mut out = Vec::new();
        while let Some(o) = self.sched.schedule_one() {
            out.push((o.pod.name.to_string(), o.result));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.sched.process_completions();
            let c = self.sched.counters();
            if c.bound + c.bind_failures >= c.scheduled || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        out
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<PodEvent> {
        self.cluster.events.lock().clone()
    }
}

/// The result of pod `name` in `results`.
pub fn result_of<'a>(results: &'a [(String, CycleResult)], name: &str) -> &'a CycleResult {
    &results
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no cycle for {name}: {results:?}"))
        .1
}

/// The node pod `name` was placed on.
pub fn placed(results: &[(String, CycleResult)], name: &str) -> String {
    match result_of(results, name) {
        CycleResult::Scheduled { node } => node.to_string(),
        other => panic!("{name} was not scheduled: {other:?}"),
    }
}
