//! The cycle-time setup shared by `examples/remote_cycle.rs` and
//! `benches/remote_cycle.rs`: the vendor health rule in process (declared
//! node-local, or not so that the engine scans every node), a scheduler
//! with one rule plugin over the default plugins, a cluster of health-
//! annotated nodes, and a run of one-template pods.

use std::sync::Arc;
use std::time::Duration;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::{CycleResult, Scheduler};
use strata_scheduler::sdk::*;
use strata_scheduler::testing::{RecordingCluster, node, pod};

/// The same rule, in process (as examples/vendor-plugin's Filter and Score).
pub struct InProc;

/// The same rule, not declared node-local: the engine scans every node each
/// cycle, as it does with a remote Filter.
pub struct InProcScan;

impl FilterPlugin for InProcScan {
    fn filter(&self, s: &CycleState, p: &PodInfo, n: &NodeInfo) -> Status {
        InProc.filter(s, p, n)
    }
}

impl ScorePlugin for InProcScan {
    fn score(&self, s: &CycleState, p: &PodInfo, n: &NodeInfo) -> Result<i64, Status> {
        InProc.score(s, p, n)
    }
}

strata_scheduler::plugin!(InProcScan: "InProcScan" => [Filter, Score]);

fn health(n: &NodeInfo) -> &str {
    n.annotations
        .get("vendor.example.com/health")
        .map_or("ok", String::as_str)
}

impl FilterPlugin for InProc {
    fn filter(&self, _: &CycleState, _: &PodInfo, n: &NodeInfo) -> Status {
        if health(n) == "failed" {
            return Status::unschedulable("node(s) reported failed by the vendor agent");
        }
        Status::success()
    }
    fn is_node_local(&self) -> bool {
        true
    }
}

impl ScorePlugin for InProc {
    fn score(&self, _: &CycleState, _: &PodInfo, n: &NodeInfo) -> Result<i64, Status> {
        Ok(match health(n) {
            "degraded" => 20,
            "failed" => 0,
            _ => 100,
        })
    }
    fn is_node_local(&self) -> bool {
        true
    }
}

strata_scheduler::plugin!(InProc: "InProcHealth" => [Filter, Score]);

pub fn scheduler(
    name: &str,
    args: &str,
    reg: &Registry,
    cluster: Arc<RecordingCluster>,
    rt: &tokio::runtime::Runtime,
) -> Scheduler {
    let yaml = format!(
        "parallelism: 2\nseed: 7\nprofiles:\n  - schedulerName: strata-scheduler\n    plugins:\n      multiPoint:\n        enabled: [{{name: {name}, weight: 2}}]\n    pluginConfig:\n      - name: {name}\n        args: {args}\n"
    );
    let cfg = SchedulerConfig::from_yaml(&yaml).unwrap();
    let defaults = strata_plugins::default_plugins();
    Scheduler::new(
        cfg,
        reg,
        &defaults,
        cluster,
        Arc::new(ManualClock::default()),
        rt.handle().clone(),
    )
    .unwrap()
}

pub fn fill(s: &mut Scheduler, nodes: usize) {
    for i in 0..nodes {
        let h = match i * 16 / nodes {
            14 => "degraded",
            15 => "failed",
            _ => "ok",
        };
        s.handle_update(ClusterUpdate::NodeUpserted(Arc::new(
            node(&format!("n{i:05}"))
                .alloc("cpu", "64")
                .alloc("memory", "256Gi")
                .alloc("pods", "110")
                .annotation("vendor.example.com/health", h)
                .build(),
        )));
    }
}

/// Cycle durations of `pods` pods (one template), in ms, sorted.
pub fn run(s: &mut Scheduler, tag: &str, pods: usize, cpu: &str) -> Vec<f64> {
    for i in 0..pods {
        s.handle_update(ClusterUpdate::PodUpserted(Arc::new(
            pod(&format!("{tag}-{i}"))
                .label("app", "bench")
                .req("cpu", cpu)
                .build(),
        )));
    }
    let mut d = Vec::new();
    while let Some(o) = s.schedule_one() {
        if !matches!(o.result, CycleResult::Failed { .. }) {
            d.push(o.duration.as_secs_f64() * 1e3);
        } else {
            panic!("{:?}", o.result);
        }
        if s.in_flight() > 0 {
            s.wait_for_completion(Duration::from_millis(1));
        }
    }
    d.sort_by(f64::total_cmp);
    d
}

/// Adds pod `name` (one cpu, the run's template) and schedules it: one
/// cycle, its binding awaited. Returns the scheduling cycle's duration as
/// the engine measured it (what the benchmark sums; the binding cycle,
/// which runs beside the next cycles, is left out).
pub fn schedule(s: &mut Scheduler, name: &str) -> Duration {
    s.handle_update(ClusterUpdate::PodUpserted(Arc::new(
        pod(name).label("app", "bench").req("cpu", "1").build(),
    )));
    let o = s.schedule_one().expect("a pod to schedule");
    assert!(
        !matches!(o.result, CycleResult::Failed { .. }),
        "{:?}",
        o.result
    );
    while s.in_flight() > 0 {
        s.wait_for_completion(Duration::from_millis(1));
    }
    o.duration
}
