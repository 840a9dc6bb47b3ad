//! Prometheus metrics, with kube-scheduler's names where the meaning is the
//! same, so existing dashboards and alerts work, plus `strata_*` ones for
//! what is Strata's own (informers, binds, events, leadership).
//!
//! kube-scheduler names used (same labels):
//! - `scheduler_pending_pods{queue}`: active, backoff, unschedulable, gated;
//! - `scheduler_schedule_attempts_total{result,profile}`: scheduled,
//!   unschedulable, error;
//! - `scheduler_scheduling_attempt_duration_seconds{result,profile}`;
//! - `scheduler_scheduling_algorithm_duration_seconds`: the scheduling cycle
//!   up to the choice of a node, or to the finding that none fits;
//! - `scheduler_framework_extension_point_duration_seconds{extension_point,status,profile}`:
//!   PreFilter, Filter, PostFilter, Score (PreScore to NormalizeScore),
//!   Reserve and Permit as the engine times them once per cycle
//!   ([`strata_scheduler::engine::PhaseTimes`]); Bind around the API call;
//! - `scheduler_plugin_execution_duration_seconds{plugin,extension_point,status}`:
//!   DefaultBinder's Bind only (per-plugin times of the other points are not
//!   measured: Filter and Score run per node, where timing would cost more
//!   than the plugins);
//! - `scheduler_pod_scheduling_sli_duration_seconds{attempts}`: from the
//!   pod's first entry in the queue to the end of the cycle that placed it;
//! - `scheduler_preemption_attempts_total`, `scheduler_preemption_victims`.
//!
//! The engine thread updates these from its [`RunObserver`] hooks; the
//! informers and the binder update theirs directly. All are lock-free
//! atomics except the label lookups of a `Family`.

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use strata_scheduler::clock::Clock;
use strata_scheduler::engine::{CycleOutcome, CycleResult, RunObserver, Scheduler};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PointLabels {
    extension_point: &'static str,
    status: &'static str,
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: &'static str,
    extension_point: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptsLabel {
    attempts: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s, as kube-scheduler's attempt durations.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn hist_family<L: Clone + std::hash::Hash + Eq>() -> Family<L, Histogram, fn() -> Histogram> {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// Every metric the adapter exports.
pub struct Metrics {
    registry: Registry,
    pending: Family<QueueLabel, Gauge>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: Family<AttemptLabels, Histogram, fn() -> Histogram>,
    algorithm_duration: Histogram,
    point_duration: Family<PointLabels, Histogram, fn() -> Histogram>,
    plugin_duration: Family<PluginLabels, Histogram, fn() -> Histogram>,
    sli_duration: Family<AttemptsLabel, Histogram, fn() -> Histogram>,
    preemption_attempts: Counter,
    preemption_victims: Histogram,
    binds: Family<ResultLabel, Counter>,
    in_flight: Gauge,
    cache_nodes: Gauge,
    cache_pods: Gauge,
    informer_events: Family<ResourceLabel, Counter>,
    relists: Family<ResourceLabel, Counter>,
    watch_restarts: Family<ResourceLabel, Counter>,
    informer_errors: Family<ResourceLabel, Counter>,
    events_sent: Counter,
    events_dropped: Counter,
    events_failed: Counter,
    status_patches: Family<ResultLabel, Counter>,
    leader: Gauge,
    ready: Gauge,
    preload_seconds: Gauge<f64, AtomicU64>,
    /// The profile name of Bind metrics (the first profile).
    bind_profile: Mutex<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            pending: Family::default(),
            attempts: Family::default(),
            attempt_duration: hist_family(),
            algorithm_duration: latency_histogram(),
            point_duration: hist_family(),
            plugin_duration: hist_family(),
            sli_duration: hist_family(),
            preemption_attempts: Counter::default(),
            preemption_victims: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
            binds: Family::default(),
            in_flight: Gauge::default(),
            cache_nodes: Gauge::default(),
            cache_pods: Gauge::default(),
            informer_events: Family::default(),
            relists: Family::default(),
            watch_restarts: Family::default(),
            informer_errors: Family::default(),
            events_sent: Counter::default(),
            events_dropped: Counter::default(),
            events_failed: Counter::default(),
            status_patches: Family::default(),
            leader: Gauge::default(),
            ready: Gauge::default(),
            preload_seconds: Gauge::default(),
            bind_profile: Mutex::new(String::new()),
            registry: Registry::default(),
        };
        r.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type",
            m.pending.clone(),
        );
        r.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result",
            m.attempts.clone(),
        );
        r.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding hand-off)",
            m.attempt_duration.clone(),
        );
        r.register(
            "scheduler_scheduling_algorithm_duration_seconds",
            "Scheduling algorithm latency in seconds",
            m.algorithm_duration.clone(),
        );
        r.register(
            "scheduler_framework_extension_point_duration_seconds",
            "Latency for running all plugins of a specific extension point",
            m.point_duration.clone(),
        );
        r.register(
            "scheduler_plugin_execution_duration_seconds",
            "Duration for running a plugin at a specific extension point",
            m.plugin_duration.clone(),
        );
        r.register(
            "scheduler_pod_scheduling_sli_duration_seconds",
            "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue",
            m.sli_duration.clone(),
        );
        r.register(
            "scheduler_preemption_attempts",
            "Total preemption attempts in the cluster till now",
            m.preemption_attempts.clone(),
        );
        r.register(
            "scheduler_preemption_victims",
            "Number of selected preemption victims",
            m.preemption_victims.clone(),
        );
        r.register(
            "strata_binds",
            "Binding calls by result (bound, conflict, not_found, error)",
            m.binds.clone(),
        );
        r.register(
            "strata_binds_in_flight",
            "Binding cycles not finished (waiting at Permit included)",
            m.in_flight.clone(),
        );
        r.register(
            "strata_cache_nodes",
            "Nodes in the scheduler's cache",
            m.cache_nodes.clone(),
        );
        r.register(
            "strata_cache_pods",
            "Pods placed on nodes in the scheduler's cache (bound and assumed)",
            m.cache_pods.clone(),
        );
        r.register(
            "strata_informer_events",
            "Objects received by informers (list items and watch events)",
            m.informer_events.clone(),
        );
        r.register(
            "strata_informer_relists",
            "Relists after a 410 Gone",
            m.relists.clone(),
        );
        r.register(
            "strata_informer_watch_restarts",
            "Watches resumed from the last resourceVersion",
            m.watch_restarts.clone(),
        );
        r.register(
            "strata_informer_errors",
            "List or watch calls that failed and were retried",
            m.informer_errors.clone(),
        );
        r.register(
            "strata_events_sent",
            "Events written to the API",
            m.events_sent.clone(),
        );
        r.register(
            "strata_events_dropped",
            "Events dropped by the rate limit or the queue bound",
            m.events_dropped.clone(),
        );
        r.register(
            "strata_events_failed",
            "Event writes the API refused",
            m.events_failed.clone(),
        );
        r.register(
            "strata_pod_status_patches",
            "PodScheduled condition patches by result",
            m.status_patches.clone(),
        );
        r.register(
            "strata_leader",
            "1 while this replica holds the leader Lease",
            m.leader.clone(),
        );
        r.register(
            "strata_ready",
            "1 once the preload is applied",
            m.ready.clone(),
        );
        r.register(
            "strata_preload_duration_seconds",
            "Time from start to the preload being applied",
            m.preload_seconds.clone(),
        );
        // Extender calls, by extender and verb (`strata_remote_plugin_*`).
        strata_extender::metrics::register(&mut r);
        for queue in ["active", "backoff", "unschedulable", "gated"] {
            m.pending.get_or_create(&QueueLabel { queue }).set(0);
        }
        // Remote plugins' calls: strata_remote_plugin_{duration_seconds,
        // errors_total,sent_bytes_total}{plugin,extension_point}.
        strata_remote::metrics::register(&mut r);
        Metrics { registry: r, ..m }
    }

    /// As [`Metrics::new`], with `collectors` read at each scrape (a
    /// plugin's own figures, such as MemoryPool's).
    pub fn with_collectors(
        collectors: Vec<Box<dyn prometheus_client::collector::Collector>>,
    ) -> Metrics {
        let mut m = Metrics::new();
        for c in collectors {
            m.registry.register_collector(c);
        }
        m
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }

    /// A list item or watch event for `resource`.
    pub fn informer_event(&self, resource: &'static str) {
        self.informer_events
            .get_or_create(&ResourceLabel { resource })
            .inc();
    }
    /// A relist of `resource`.
    pub fn relist(&self, resource: &'static str) {
        self.relists
            .get_or_create(&ResourceLabel { resource })
            .inc();
    }
    /// A resumed watch of `resource`.
    pub fn watch_restart(&self, resource: &'static str) {
        self.watch_restarts
            .get_or_create(&ResourceLabel { resource })
            .inc();
    }
    /// A failed list or watch of `resource`.
    pub fn informer_errors(&self, resource: &'static str) {
        self.informer_errors
            .get_or_create(&ResourceLabel { resource })
            .inc();
    }
    /// How many relists `resource` did (tests read it).
    pub fn relists_of(&self, resource: &'static str) -> u64 {
        self.relists
            .get_or_create(&ResourceLabel { resource })
            .get()
    }

    /// A bind call finished.
    pub fn bind_done(&self, result: &'static str, took: Duration) {
        self.binds.get_or_create(&ResultLabel { result }).inc();
        let status = if result == "bound" {
            "Success"
        } else {
            "Error"
        };
        let profile = self.bind_profile.lock().clone();
        self.point_duration
            .get_or_create(&PointLabels {
                extension_point: "Bind",
                status,
                profile,
            })
            .observe(took.as_secs_f64());
        self.plugin_duration
            .get_or_create(&PluginLabels {
                plugin: "DefaultBinder",
                extension_point: "Bind",
                status,
            })
            .observe(took.as_secs_f64());
    }
    /// Bind results so far with `result`.
    pub fn binds_with(&self, result: &'static str) -> u64 {
        self.binds.get_or_create(&ResultLabel { result }).get()
    }

    /// An event was written / dropped / refused.
    pub fn event_sent(&self) {
        self.events_sent.inc();
    }
    /// See [`Metrics::event_sent`].
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }
    /// See [`Metrics::event_sent`].
    pub fn event_failed(&self) {
        self.events_failed.inc();
    }
    /// Events dropped so far.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.get()
    }
    /// Events written so far.
    pub fn events_sent(&self) -> u64 {
        self.events_sent.get()
    }
    /// A status patch finished.
    pub fn status_patch(&self, ok: bool) {
        self.status_patches
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Leadership changed.
    pub fn set_leader(&self, on: bool) {
        self.leader.set(i64::from(on));
    }
    /// Readiness changed.
    pub fn set_ready(&self, on: bool, preload: Duration) {
        self.ready.set(i64::from(on));
        if on {
            self.preload_seconds.set(preload.as_secs_f64());
        }
    }
}

/// The engine-thread side: turns cycles and counters into metrics.
pub struct EngineObserver {
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    last_preemptions: u64,
    last_victims: u64,
    heartbeat: Arc<AtomicU64>,
    started: std::time::Instant,
    last_gauges: Option<std::time::Instant>,
}

/// How often the cache-size gauges (which walk the cache) are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_millis(500);

impl EngineObserver {
    /// An observer writing to `metrics`; `clock` is the engine's clock (for
    /// queue times); `heartbeat` gets the milliseconds since `started` at
    /// every hook call (for `/healthz`).
    pub fn new(
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        heartbeat: Arc<AtomicU64>,
        started: std::time::Instant,
        first_profile: &str,
    ) -> EngineObserver {
        *metrics.bind_profile.lock() = first_profile.to_owned();
        EngineObserver {
            metrics,
            clock,
            last_preemptions: 0,
            last_victims: 0,
            heartbeat,
            started,
            last_gauges: None,
        }
    }

    fn beat(&self) {
        self.heartbeat.store(
            self.started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl RunObserver for EngineObserver {
    fn cycle(&mut self, sched: &Scheduler, o: &CycleOutcome) {
        let profile = o.pod.scheduler_name.as_str().to_owned();
        let result = match &o.result {
            CycleResult::Scheduled { .. } | CycleResult::WaitingOnPermit { .. } => "scheduled",
            CycleResult::Unschedulable { .. } => "unschedulable",
            CycleResult::Failed { .. } => "error",
        };
        let labels = AttemptLabels { result, profile };
        let secs = o.duration.as_secs_f64();
        self.metrics.attempts.get_or_create(&labels).inc();
        self.metrics
            .attempt_duration
            .get_or_create(&labels)
            .observe(secs);
        let ph = &o.phases;
        if !ph.algorithm.is_zero() {
            self.metrics
                .algorithm_duration
                .observe(ph.algorithm.as_secs_f64());
        }
        let status = match result {
            "scheduled" => "Success",
            "unschedulable" => "Unschedulable",
            _ => "Error",
        };
        for (point, d) in [
            ("PreFilter", ph.pre_filter),
            ("Filter", ph.filter),
            ("PostFilter", ph.post_filter),
            ("Score", ph.score),
            ("Reserve", ph.reserve),
            ("Permit", ph.permit),
        ] {
            if !d.is_zero() {
                self.metrics
                    .point_duration
                    .get_or_create(&PointLabels {
                        extension_point: point,
                        status,
                        profile: labels.profile.clone(),
                    })
                    .observe(d.as_secs_f64());
            }
        }
        if result == "scheduled"
            && let Some(q) = sched.queue().get(&o.pod.uid)
        {
            let waited = self.clock.now().saturating_sub(q.first_enqueued);
            let attempts = q.attempts.max(1);
            let bucket = if attempts >= 15 {
                "15+".to_owned()
            } else {
                attempts.to_string()
            };
            self.metrics
                .sli_duration
                .get_or_create(&AttemptsLabel { attempts: bucket })
                .observe(waited.as_secs_f64());
        }
        let c = sched.counters();
        if c.preemptions > self.last_preemptions {
            let n = c.preemptions - self.last_preemptions;
            self.metrics.preemption_attempts.inc_by(n);
            let victims = c.victims.saturating_sub(self.last_victims);
            self.metrics
                .preemption_victims
                .observe(victims as f64 / n as f64);
        }
        self.last_preemptions = c.preemptions;
        self.last_victims = c.victims;
        self.beat();
    }

    fn idle(&mut self, sched: &Scheduler) {
        let q = sched.queue_stats();
        for (queue, n) in [
            ("active", q.active),
            ("backoff", q.backoff),
            ("unschedulable", q.unschedulable),
            ("gated", q.gated),
        ] {
            self.metrics
                .pending
                .get_or_create(&QueueLabel { queue })
                .set(n as i64);
        }
        self.metrics.in_flight.set(sched.in_flight() as i64);
        if self.last_gauges.is_none_or(|t| t.elapsed() >= GAUGE_PERIOD) {
            self.last_gauges = Some(std::time::Instant::now());
            self.metrics
                .cache_nodes
                .set(sched.snapshot().num_nodes() as i64);
            self.metrics
                .cache_pods
                .set(sched.snapshot().assigned_pods().count() as i64);
        }
        self.beat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_kube_scheduler_names() {
        let m = Metrics::new();
        m.bind_done("bound", Duration::from_millis(3));
        m.relist("pods");
        let text = m.encode();
        for name in [
            "scheduler_pending_pods",
            "scheduler_pending_pods{queue=\"unschedulable\"} 0",
            "scheduler_scheduling_algorithm_duration_seconds",
            "scheduler_framework_extension_point_duration_seconds_bucket{le=\"0.004\",extension_point=\"Bind\",status=\"Success\",profile=\"\"} 1",
            "scheduler_plugin_execution_duration_seconds_count{plugin=\"DefaultBinder\",extension_point=\"Bind\",status=\"Success\"} 1",
            "scheduler_preemption_attempts_total",
            "scheduler_preemption_victims",
            "strata_binds_total{result=\"bound\"} 1",
            "strata_informer_relists_total{resource=\"pods\"} 1",
            "strata_leader",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
