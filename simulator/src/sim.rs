//! The run loop: the real engine against a [`SimCluster`] in virtual time.
//!
//! Nodes are created first, then pods arrive at their virtual times. The loop
//! schedules until the active queue is empty, waits for the binding cycles
//! that are running, feeds the confirmed bindings (and deletions) back to the
//! engine the way an informer would, and only when nothing is left to do now
//! moves the [`ManualClock`] to the next arrival or the engine's next
//! deadline (a backoff expiry, an unschedulable flush, a Permit timeout) and
//! ticks the engine.
//!
//! Invariants:
//! - Determinism: the engine sees the same sequence of calls for the same
//!   scenario and seed. Confirmations are fed only at quiet points (active
//!   queue empty, no binding cycle running), sorted by the order in which the
//!   pods were scheduled, and virtual time never depends on the wall clock.
//! - Termination: virtual time only moves forward; the run stops when every
//!   pod is bound, when nothing has progressed for a full unschedulable
//!   max-stay plus the longest backoff (so every remaining pod was retried at
//!   least once after its last flush), or after a hard cap on clock moves.

use crate::cluster::SimCluster;
use crate::groups::{BindAudit, CycleMark};
use crate::report::{
    self, CycleCounts, Latency, MessageCount, PodCounts, Report, Utilization, WorkloadReport,
};
use crate::scenario::{PodArrival, Scenario, ScenarioError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustc_hash::FxHashMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_scheduler::clock::{Clock, ManualClock};
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::{ConfigError, SchedulerConfig};
use strata_scheduler::engine::{CycleOutcome, CycleResult, Scheduler};
use strata_scheduler::framework::Registry;
use strata_scheduler::resources::ResourceId;

/// The profile name used when a scenario gives no configuration: the name
/// Kubernetes gives a pod that sets no `schedulerName`.
pub const DEFAULT_PROFILE: &str = "default-scheduler";

/// How many times the loop may move the clock before it gives up.
const MAX_CLOCK_MOVES: u64 = 1_000_000;

/// How long to wait for running binding cycles before giving up on them.
const BINDING_PATIENCE: Duration = Duration::from_secs(30);

/// Knobs of one run that are not part of the scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Show a progress bar on stderr (only if it is a terminal, and only
    /// once the run has taken about two seconds).
    pub progress: bool,
    /// Overrides the configuration's `parallelism`.
    pub parallelism: Option<usize>,
    /// Overrides the configuration's `equivalenceCacheClasses` (0 turns the
    /// engine's reuse of per-node results off: the baseline for comparisons).
    pub equivalence_cache: Option<usize>,
    /// Plugins added to the in-tree ones (a vendor's, through
    /// `strata_cli::Strata`); a name already in the tree replaces that
    /// plugin. The scenario's configuration enables them as any other.
    pub plugins: Registry,
}

/// Why a simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is malformed.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The scheduler configuration is invalid.
    #[error("{file}: field `config`: {error}")]
    Config {
        /// The scenario it came from.
        file: String,
        /// What is wrong.
        error: ConfigError,
    },
    /// The async runtime could not start.
    #[error("cannot start the binding runtime: {0}")]
    Runtime(std::io::Error),
}

/// The scheduler configuration a scenario runs with.
pub fn scenario_config(
    scenario: &Scenario,
    opts: &RunOptions,
) -> Result<SchedulerConfig, SimError> {
    let mut cfg = match &scenario.config {
        Some(text) => SchedulerConfig::from_yaml(&text.0).map_err(|error| SimError::Config {
            file: scenario.source.clone(),
            error,
        })?,
        None => SchedulerConfig::default_with_name(DEFAULT_PROFILE),
    };
    cfg.seed = opts.seed.unwrap_or(scenario.seed);
    if let Some(p) = opts.parallelism {
        let max = strata_scheduler::config::MAX_PARALLELISM;
        if p > max {
            tracing::warn!("--parallelism {p} is more than {max} threads; using {max}");
        }
        cfg.parallelism = p.clamp(1, max);
    }
    if let Some(c) = opts.equivalence_cache {
        cfg.equivalence_cache_classes = c;
    }
    Ok(cfg)
}

/// The workloads whose pods no profile of `cfg` serves (their
/// `spec.schedulerName` names none), with the name they give. Such pods are
/// only counted, never scheduled, as a cluster would leave them to another
/// scheduler.
pub fn unserved_workloads<'a>(
    scenario: &'a Scenario,
    cfg: &SchedulerConfig,
) -> Vec<(&'a str, String)> {
    scenario
        .workloads
        .iter()
        .filter(|w| w.count > 0)
        .filter_map(|w| {
            let name = w
                .template
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.scheduler_name.clone())
                .unwrap_or_else(|| "default-scheduler".to_owned());
            (!cfg.profiles.iter().any(|p| p.scheduler_name == name))
                .then_some((w.name.as_str(), name))
        })
        .collect()
}

/// Warns (the run goes on) when workloads name a scheduler no profile is
/// for: a run where no pod is served schedules nothing and would otherwise
/// report zero cycles without a word.
fn warn_unserved(scenario: &Scenario, cfg: &SchedulerConfig) {
    let unserved = unserved_workloads(scenario, cfg);
    if unserved.is_empty() {
        return;
    }
    let profiles: Vec<&str> = cfg
        .profiles
        .iter()
        .map(|p| p.scheduler_name.as_str())
        .collect();
    let which: Vec<String> = unserved
        .iter()
        .map(|(w, n)| format!("{w} (schedulerName {n:?})"))
        .collect();
    let served = scenario.workloads.iter().filter(|w| w.count > 0).count();
    if unserved.len() == served {
        tracing::warn!(
            "{}: no profile serves any of the scenario's pods, so nothing will be scheduled: profiles {profiles:?}; workloads {}",
            scenario.source,
            which.join(", ")
        );
    } else {
        tracing::warn!(
            "{}: no profile serves workloads {} (profiles {profiles:?}); their pods will not be scheduled",
            scenario.source,
            which.join(", ")
        );
    }
}

/// One simulation: the engine, the simulated cluster and the virtual clock.
/// Field order matters: the engine is dropped before the runtime it spawns on.
pub struct Simulation {
    scheduler: Scheduler,
    cluster: Arc<SimCluster>,
    clock: Arc<ManualClock>,
    scenario: Scenario,
    seed: u64,
    settle_window: Duration,
    only_workload: Option<String>,
    opts: RunOptions,
    // What the run observed.
    arrivals: Vec<PodArrival>,
    cycle_durations: Vec<Duration>,
    /// Cycle durations per workload (by index), and which workload each
    /// pod belongs to.
    workload_cycles: Vec<Vec<Duration>>,
    workload_of: FxHashMap<Arc<str>, usize>,
    cycles: CycleCounts,
    /// Order in which pods were last sent to bind, for feeding confirmations
    /// back deterministically.
    bind_order: FxHashMap<Arc<str>, u64>,
    /// The last failure per pod: whether it was "unschedulable" (rather
    /// than an error) and its message. Cleared when the pod is scheduled.
    last_message: FxHashMap<Arc<str>, (bool, String)>,
    /// The report, once run.
    report: Option<Report>,
    /// The groups' bind checker and timer, set when the run starts.
    audit: Option<Arc<BindAudit>>,
    /// The DRA objects the DynamicResources plugin reads (from the
    /// scenario's `dra` section, and claims made from templates).
    dra: Arc<strata_plugins::dra::DraStore>,
    _rt: tokio::runtime::Runtime,
}

impl Simulation {
    /// Builds the engine for `scenario`.
    pub fn new(scenario: Scenario, opts: &RunOptions) -> Result<Simulation, SimError> {
        let cfg = scenario_config(&scenario, opts)?;
        warn_unserved(&scenario, &cfg);
        let seed = cfg.seed;
        let q = cfg.queue_settings();
        let settle_window = q
            .max_unschedulable_stay
            .saturating_add(q.max_backoff)
            .saturating_add(Duration::from_secs(1));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strata-sim-bind")
            .enable_all()
            .build()
            .map_err(SimError::Runtime)?;
        let cluster = Arc::new(SimCluster::new());
        let clock = Arc::new(ManualClock::default());
        let stores = strata_plugins::pod_group::Stores::default();
        let mut registry = strata_plugins::registry_with(&stores);
        registry.extend(&opts.plugins);
        let scheduler = Scheduler::new(
            cfg,
            &registry,
            &strata_plugins::default_plugins(),
            cluster.clone(),
            clock.clone(),
            rt.handle().clone(),
        )
        .map_err(|error| SimError::Config {
            file: scenario.source.clone(),
            error,
        })?;
        Ok(Simulation {
            scheduler,
            cluster,
            clock,
            seed,
            settle_window,
            only_workload: None,
            opts: opts.clone(),
            arrivals: Vec::new(),
            cycle_durations: Vec::new(),
            workload_cycles: Vec::new(),
            workload_of: FxHashMap::default(),
            cycles: CycleCounts::default(),
            bind_order: FxHashMap::default(),
            last_message: FxHashMap::default(),
            report: None,
            audit: None,
            scenario,
            dra: stores.dra.clone(),
            _rt: rt,
        })
    }

    /// Notes that the scenario was narrowed to one workload (for the report).
    pub fn set_only_workload(&mut self, name: Option<String>) {
        self.only_workload = name;
    }

    /// The engine (its snapshot and cache, after a run).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The simulated cluster (bindings, conditions, events).
    pub fn cluster(&self) -> &SimCluster {
        &self.cluster
    }

    /// The DRA store (claims with their allocations, after a run).
    pub fn dra_store(&self) -> &strata_plugins::dra::DraStore {
        &self.dra
    }

    /// The groups' bind checker and timer (once the run has started).
    pub fn bind_audit(&self) -> Option<&BindAudit> {
        self.audit.as_deref()
    }

    /// Virtual time now.
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Runs the scenario to the end and reports. A simulation runs once;
    /// a second call returns the same report without re-running.
    pub fn run(&mut self) -> Report {
        if let Some(r) = &self.report {
            return r.clone();
        }
        let wall_start = Instant::now();
        for node in self.scenario.nodes() {
            self.scheduler
                .handle_update(ClusterUpdate::NodeUpserted(Arc::new(node)));
        }
        if let Some(d) = &self.scenario.dra {
            let sc = &self.scenario;
            for u in crate::dra::load(d, |p| sc.pool_node_names(p), &self.dra) {
                self.scheduler.handle_update(u);
            }
        }
        self.arrivals = self.scenario.arrivals();
        let audit = Arc::new(BindAudit::new(
            &self.arrivals,
            self.scheduler.waiting_pods().clone(),
            self.clock.clone(),
        ));
        self.cluster.set_observer(audit.clone());
        self.audit = Some(audit);
        let total = self.arrivals.len();
        for a in &self.arrivals {
            if !self.scheduler.serves(a.pod.scheduler_name) {
                self.last_message.insert(
                    a.pod.uid.clone(),
                    (
                        false,
                        format!(
                            "no profile serves schedulerName {:?}",
                            a.pod.scheduler_name.as_str()
                        ),
                    ),
                );
            }
        }
        tracing::info!(
            scenario = %self.scenario.name,
            nodes = self.scenario.node_count(),
            pods = total,
            seed = self.seed,
            "simulation starting"
        );
        let mut progress = Progress::new(self.opts.progress, total as u64);
        let phase_start = Instant::now();
        let mut next = 0usize;
        let mut last_progress = Duration::ZERO;
        let mut moves = 0u64;
        loop {
            let now = self.clock.now();
            while next < total && self.arrivals[next].at <= now {
                let pod = self.arrivals[next].pod.clone();
                self.cluster.create_pod(pod.clone());
                for u in crate::dra::claims_for_pod(&pod, &self.dra) {
                    self.scheduler.handle_update(u);
                }
                self.scheduler
                    .handle_update(ClusterUpdate::PodUpserted(pod));
                next += 1;
                last_progress = now;
            }
            let cycles = self.drain_cycles(&mut progress);
            self.settle_bindings();
            let fed = self.feed_confirmations();
            progress.set(self.cluster.bound_count() as u64);
            if fed > 0 {
                last_progress = now;
            }
            if fed > 0 || (cycles > 0 && self.scheduler.queue_stats().active > 0) {
                continue;
            }
            if next == total && self.cluster.bound_count() == total {
                break;
            }
            let mut t = self.scheduler.next_deadline();
            if next < total {
                let at = self.arrivals[next].at;
                t = Some(t.map_or(at, |d| d.min(at)));
            }
            let Some(mut t) = t else {
                break;
            };
            if next == total && now >= last_progress + self.settle_window {
                break;
            }
            moves += 1;
            if moves > MAX_CLOCK_MOVES {
                tracing::warn!(
                    moves,
                    "simulation stopped: too many clock moves without finishing"
                );
                break;
            }
            if t <= now {
                t = now + Duration::from_millis(1);
            }
            self.clock.advance_to(t);
            self.scheduler.tick();
        }
        progress.finish();
        let phase_end = self.cluster.bind_latencies().1.unwrap_or_else(Instant::now);
        self.await_conditions();
        let scheduling = phase_end.saturating_duration_since(phase_start);
        let report = self.report(scheduling, wall_start.elapsed());
        self.report = Some(report.clone());
        report
    }

    /// Schedules until no pod is ready; returns how many cycles ran.
    fn drain_cycles(&mut self, progress: &mut Progress) -> u64 {
        let mut n = 0u64;
        loop {
            if let Some(a) = &self.audit {
                a.begin_cycle();
            }
            let Some(o) = self.scheduler.schedule_one() else {
                if let Some(a) = &self.audit {
                    a.no_cycle();
                }
                break;
            };
            self.record(o);
            n += 1;
            if n.is_multiple_of(256) {
                progress.set(self.cluster.bound_count() as u64);
            }
        }
        n
    }

    fn record(&mut self, o: CycleOutcome) {
        self.cycle_durations.push(o.duration);
        if self.workload_of.len() < self.arrivals.len() {
            self.workload_of = self
                .arrivals
                .iter()
                .map(|a| (a.pod.uid.clone(), a.workload))
                .collect();
        }
        if let Some(&w) = self.workload_of.get(&o.pod.uid) {
            if self.workload_cycles.len() <= w {
                self.workload_cycles.resize(w + 1, Vec::new());
            }
            self.workload_cycles[w].push(o.duration);
        }
        if let Some(a) = &self.audit {
            let mark = match o.result {
                CycleResult::Scheduled { .. } => CycleMark::Passed,
                CycleResult::WaitingOnPermit { .. } => CycleMark::Waiting,
                _ => CycleMark::NotPlaced,
            };
            a.record(&o.pod.uid, mark, o.duration);
        }
        self.cycles.total += 1;
        let seq = self.cycles.total;
        match o.result {
            CycleResult::Scheduled { .. } => {
                self.cycles.scheduled += 1;
                self.bind_order.insert(o.pod.uid.clone(), seq);
                self.last_message.remove(&o.pod.uid);
            }
            CycleResult::WaitingOnPermit { .. } => {
                self.cycles.waiting_on_permit += 1;
                self.bind_order.insert(o.pod.uid.clone(), seq);
                self.last_message.remove(&o.pod.uid);
            }
            CycleResult::Unschedulable { message } => {
                self.cycles.unschedulable += 1;
                self.last_message.insert(o.pod.uid.clone(), (true, message));
            }
            CycleResult::Failed { message } => {
                self.cycles.failed += 1;
                self.last_message
                    .insert(o.pod.uid.clone(), (false, message));
            }
        }
    }

    /// Waits until every binding cycle not held at Permit has finished and
    /// every victim deletion the engine started has reached the cluster.
    fn settle_bindings(&mut self) {
        let start = Instant::now();
        loop {
            self.scheduler.process_completions();
            let binding = self.scheduler.in_flight() > self.scheduler.waiting_pods().len();
            let deleting = self.cluster.delete_calls() < self.scheduler.counters().victims;
            if !binding && !deleting {
                return;
            }
            if start.elapsed() > BINDING_PATIENCE {
                tracing::warn!(
                    in_flight = self.scheduler.in_flight(),
                    "binding cycles did not finish; going on without them"
                );
                return;
            }
            if binding {
                self.scheduler
                    .wait_for_completion(Duration::from_millis(50));
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Feeds bound pods and deletions back to the engine in scheduling
    /// order; returns how many updates were fed.
    fn feed_confirmations(&mut self) -> usize {
        let mut ups = self.cluster.drain_updates();
        let key = |u: &ClusterUpdate| -> (u8, u64, Arc<str>) {
            match u {
                ClusterUpdate::PodDeleted { uid } => (0, 0, uid.clone()),
                ClusterUpdate::PodUpserted(p) => (
                    1,
                    self.bind_order.get(&p.uid).copied().unwrap_or(u64::MAX),
                    p.uid.clone(),
                ),
                _ => (2, 0, Arc::from("")),
            }
        };
        ups.sort_by_cached_key(key);
        let n = ups.len();
        for u in ups {
            self.scheduler.handle_update(u);
        }
        n
    }

    /// Condition updates go out asynchronously; give the last ones a moment
    /// to land so the cluster's view matches the report.
    fn await_conditions(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let missing = self.arrivals.iter().any(|a| {
                let uid = &a.pod.uid;
                self.last_message
                    .get(uid)
                    .is_some_and(|(unsched, _)| *unsched)
                    && !self.cluster.is_bound(uid)
                    && self.cluster.condition(uid).is_none()
            });
            if !missing || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Pod key → node for every pod the scenario created (`None` when
    /// unbound), sorted by pod.
    pub fn placements(&self) -> std::collections::BTreeMap<String, Option<String>> {
        self.cluster.placements()
    }

    fn report(&self, scheduling: Duration, total: Duration) -> Report {
        let mut per_workload: Vec<WorkloadReport> = self
            .scenario
            .workloads
            .iter()
            .map(|w| WorkloadReport {
                name: w.name.clone(),
                ..Default::default()
            })
            .collect();
        let mut messages: FxHashMap<&str, (usize, &str)> = FxHashMap::default();
        let deleted: rustc_hash::FxHashSet<Arc<str>> =
            self.cluster.deleted().into_iter().map(|(u, _)| u).collect();
        let mut counts = PodCounts {
            total: self.arrivals.len(),
            deleted: deleted.len(),
            ..Default::default()
        };
        for (i, w) in per_workload.iter_mut().enumerate() {
            if let Some(c) = self.workload_cycles.get(i) {
                w.cycle_seconds = c.iter().map(Duration::as_secs_f64).sum();
                w.cycle_latency = Latency::from_samples(&mut c.clone());
            }
        }
        for a in &self.arrivals {
            let w = &mut per_workload[a.workload];
            w.total += 1;
            if deleted.contains(&a.pod.uid) {
                continue;
            }
            if self.cluster.is_bound(&a.pod.uid) {
                w.scheduled += 1;
                counts.scheduled += 1;
            } else {
                w.unschedulable += 1;
                counts.unschedulable += 1;
                let msg = self
                    .last_message
                    .get(&a.pod.uid)
                    .map(|(_, m)| m.as_str())
                    .unwrap_or("never attempted");
                let e = messages.entry(msg).or_insert((0, &a.pod.uid));
                e.0 += 1;
            }
        }
        let mut unschedulable_messages: Vec<MessageCount> = messages
            .into_iter()
            .map(|(m, (n, ex))| MessageCount {
                message: m.to_owned(),
                pods: n,
                example: ex.to_owned(),
            })
            .collect();
        unschedulable_messages
            .sort_by(|a, b| b.pods.cmp(&a.pods).then_with(|| a.message.cmp(&b.message)));
        unschedulable_messages.truncate(report::MAX_MESSAGES);

        let mut cycle = self.cycle_durations.clone();
        let (mut bind_lat, _) = self.cluster.bind_latencies();
        let snap = self.scheduler.snapshot();
        let utilization = Utilization::from_nodes(snap.nodes().filter(|n| n.present).map(|n| {
            (
                n.requested[ResourceId::CPU],
                n.allocatable[ResourceId::CPU],
                n.requested[ResourceId::MEMORY],
                n.allocatable[ResourceId::MEMORY],
            )
        }));
        let secs = scheduling.as_secs_f64();
        Report {
            scenario: self.scenario.name.clone(),
            source: self.scenario.source.clone(),
            seed: self.seed,
            only_workload: self.only_workload.clone(),
            nodes: self.scenario.node_count(),
            pods_per_second: if secs > 0.0 {
                counts.scheduled as f64 / secs
            } else {
                0.0
            },
            pods: counts,
            cycles: self.cycles.clone(),
            scheduling_seconds: secs,
            total_seconds: total.as_secs_f64(),
            virtual_seconds: self.clock.now().as_secs_f64(),
            cycle_latency: Latency::from_samples(&mut cycle),
            queue_to_bound_latency: Latency::from_samples(&mut bind_lat),
            peak_rss_bytes: report::peak_rss_bytes(),
            utilization,
            workloads: per_workload,
            unschedulable_messages,
            events: self.cluster.event_counts(),
            double_binds: self.cluster.double_binds(),
            cache_inconsistency: self.scheduler.cache().check_consistency().err(),
            worker_pool: self.scheduler.pool_use().into(),
        }
    }
}

/// A progress bar that appears only on a terminal and only once a run has
/// lasted long enough to need one.
struct Progress {
    enabled: bool,
    start: Instant,
    total: u64,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(enabled: bool, total: u64) -> Progress {
        Progress {
            enabled: enabled && std::io::stderr().is_terminal(),
            start: Instant::now(),
            total,
            bar: None,
        }
    }

    fn set(&mut self, bound: u64) {
        if self.bar.is_none() && self.enabled && self.start.elapsed() > Duration::from_secs(2) {
            let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} pods bound {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            self.bar = Some(bar);
        }
        if let Some(b) = &self.bar {
            b.set_position(bound);
            let secs = self.start.elapsed().as_secs_f64();
            if secs > 0.0 {
                b.set_message(format!("({:.0} pods/s)", bound as f64 / secs));
            }
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
