//! # strata-simulator
//!
//! An in-process cluster that drives Strata's real engine: the same
//! `Scheduler`, plugins, queue and cache as production, with a simulated
//! [`ClusterPort`](strata_scheduler::cluster::ClusterPort) instead of the
//! Kubernetes API and a virtual clock instead of the wall clock. Benchmarks
//! run here therefore measure the production code path.
//!
//! - [`scenario`]: scenario files (node pools with per-index labels,
//!   workloads stamped out of pod templates, arrival patterns) and the
//!   built-in scenarios; [`pattern`]: the per-node placeholders in a pool's
//!   label and taint values.
//! - [`cluster`]: [`SimCluster`], the in-memory API server behind the port.
//! - [`config_check`]: full validation of a scheduler configuration.
//! - [`dra`]: DRA objects in scenarios and the resourceclaim controller's
//!   part the simulator plays.
//! - [`groups`]: group membership stamped onto workloads, the bind audit
//!   ("never partly bound", checked at every bind) and the group report,
//!   group-aware against pod by pod.
//! - [`sim`]: [`Simulation`], the virtual-time run loop.
//! - [`report`]: [`Report`], what a run measured.
//! - [`openb`]: replay of the Alibaba GPU-sharing trace, comparing the
//!   fragmentation-aware, best-fit and random policies.
//! - [`openb_mix`]: workload mixes generated from the trace's
//!   distributions, and summaries over seeds.
//! - [`openb_html`]: the replay as a self-contained HTML page (allocation
//!   against arrived demand, per policy).
//! - [`occupancy_html`]: `strata simulate --html`, the report and a map of
//!   accelerator use per super-node → cabinet → server.
//!
//! What this crate is not: a kubelet or controller simulator. Pods never run
//! or finish; nodes never fail; only scheduling is simulated.

#![warn(missing_docs)]

pub mod cluster;
pub mod config_check;
pub mod dra;
pub mod groups;
pub mod memory_pool;
pub mod occupancy_html;
pub mod openb;
pub mod openb_html;
pub mod openb_mix;
pub mod pattern;
pub mod report;
pub mod scenario;
pub mod sim;

pub use cluster::SimCluster;
pub use report::{Report, WorkerPool};
pub use scenario::{Scenario, ScenarioError};
pub use sim::{RunOptions, SimError, Simulation};

/// Loads `path_or_name` (a file, or a built-in scenario name), optionally
/// narrows it to one workload, runs it and reports.
pub fn run_scenario(
    path_or_name: &str,
    only_workload: Option<&str>,
    opts: &RunOptions,
) -> Result<Report, SimError> {
    let mut scenario = Scenario::load(path_or_name)?;
    if let Some(w) = only_workload {
        scenario.only_workload(w)?;
    }
    let mut sim = Simulation::new(scenario, opts)?;
    sim.set_only_workload(only_workload.map(str::to_owned));
    Ok(sim.run())
}
