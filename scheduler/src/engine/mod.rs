//! The engine: one scheduling cycle at a time on the caller's thread, binding
//! cycles on an async pool.
//!
//! [`Scheduler`] owns the queue, the cache and the profiles. Cluster updates
//! are applied between cycles ([`Scheduler::handle_update`]), so a cycle
//! always sees one consistent snapshot. Finished binding cycles report back
//! through a channel and are applied by [`Scheduler::process_completions`],
//! also between cycles. Invariants:
//! - a pod is assumed in the cache at most once, and bound at most once: it
//!   is out of the queue (in flight) from its pop until its binding cycle
//!   ends, and a pod the cache already holds is never scheduled again;
//! - a failed Reserve, Permit, PreBind or Bind undoes every Reserve and the
//!   assumption, then requeues the pod;
//! - the engine calls the cluster only through [`ClusterPort`].

mod binding;
mod cycle;
mod equiv;
mod extend;
mod fast_path;
mod parallel;
mod profile;
mod run;
mod soft_scores;

pub use cycle::{CycleOutcome, CycleResult, PhaseTimes};
pub use parallel::PoolUse;
pub use run::{NoObserver, RunControl, RunObserver, RunSummary};

use crate::cache::{Cache, PdbInfo, Snapshot};
use crate::clock::Clock;
use crate::cluster::{ClusterPort, ClusterUpdate, EventKind, PodCondition, PodEvent};
use crate::config::{ConfigError, SchedulerConfig, resolve};
use crate::framework::{
    ActionType, ClusterEvent, EventObject, EventResource, Handle, Plugin, PreemptionClaims,
    Registry, WaitingPods,
};
use crate::intern::Sym;
use crate::model::{NodeId, PodInfo};
use crate::queue::{QueueStats, SchedulingQueue};
use binding::BindingDone;
use profile::Profile;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// Counters of what the engine did, for reports and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EngineCounters {
    /// Cycles that assumed a pod on a node.
    pub scheduled: u64,
    /// Cycles that found no node.
    pub unschedulable: u64,
    /// Cycles that ended in an error.
    pub errors: u64,
    /// Successful binds.
    pub bound: u64,
    /// Failed binding cycles (permit rejections included).
    pub bind_failures: u64,
    /// PostFilter runs that nominated a node.
    pub preemptions: u64,
    /// Pods deleted as preemption victims.
    pub victims: u64,
    /// Assumed pods dropped because their bind was never confirmed.
    pub expired_assumptions: u64,
}

/// The scheduler engine.
pub struct Scheduler {
    pub(crate) profiles: Vec<Profile>,
    pub(crate) by_name: FxHashMap<Sym, usize>,
    pub(crate) queue: SchedulingQueue,
    pub(crate) cache: Cache,
    pub(crate) cluster: Arc<dyn ClusterPort>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) waiting: WaitingPods,
    pub(crate) pool: Option<rayon::ThreadPool>,
    /// Whether a long Filter pass runs on `pool` (see [`parallel`]).
    pub(crate) filter_gate: parallel::ParallelGate,
    /// The same for Score passes.
    pub(crate) score_gate: parallel::ParallelGate,
    pub(crate) rng: crate::rng::SplitMix64,
    pub(crate) bind_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) done_tx: mpsc::Sender<BindingDone>,
    pub(crate) done_rx: mpsc::Receiver<BindingDone>,
    pub(crate) in_flight: usize,
    pub(crate) permit_deadlines: BinaryHeap<Reverse<(Duration, Arc<str>)>>,
    /// Pods nominated to nodes by preemption.
    pub(crate) nominated: FxHashMap<Arc<str>, (Arc<PodInfo>, NodeId)>,
    pub(crate) assumed_ttl: Duration,
    pub(crate) counters: EngineCounters,
    /// Extension-point times of the cycle in progress.
    pub(crate) phases: cycle::PhaseTimes,
    /// Plugins observing node changes.
    pub(crate) observers: Vec<Arc<dyn Plugin>>,
    /// Node-local filter and score results per equivalence class.
    pub(crate) equiv: equiv::EquivCaches,
    /// kube-scheduler extenders, in configuration order (every profile).
    pub(crate) extenders: Vec<Arc<dyn crate::extenders::Extender>>,
}

impl Scheduler {
    /// Builds the engine: resolves the profiles against `registry` (with
    /// `defaults` as the default plugin set) and starts with an empty cache.
    pub fn new(
        cfg: SchedulerConfig,
        registry: &Registry,
        defaults: &[(&'static str, i64)],
        cluster: Arc<dyn ClusterPort>,
        clock: Arc<dyn Clock>,
        rt: tokio::runtime::Handle,
    ) -> Result<Scheduler, ConfigError> {
        let waiting = WaitingPods::default();
        let preemption = PreemptionClaims::default();
        let handle_for = |name: &str| Handle {
            cluster: cluster.clone(),
            waiting: waiting.clone(),
            clock: clock.clone(),
            scheduler_name: Sym::new(name),
            preemption: preemption.clone(),
        };
        let resolved = resolve(&cfg, registry, defaults, &handle_for)?;
        let mut extenders = Vec::with_capacity(cfg.extenders.len());
        for (i, e) in cfg.extenders.iter().enumerate() {
            let Some(factory) = registry.extender_factory() else {
                return Err(ConfigError::Invalid {
                    field: "extenders".into(),
                    message: "this build of the scheduler has no extender client registered".into(),
                });
            };
            extenders.push(factory(i, e)?);
        }
        let profiles: Vec<Profile> = resolved.iter().map(Profile::from_resolved).collect();
        let by_name = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name, i))
            .collect();
        let sort = profiles[0].queue_sort.clone();
        let pre_enqueue = profiles
            .iter()
            .map(|p| (p.name, p.pre_enqueue.clone()))
            .collect();
        let mut all: Vec<Arc<dyn Plugin>> = Vec::new();
        for p in &profiles {
            for pl in p.all_plugins() {
                if !all.iter().any(|x| Arc::ptr_eq(x, &pl)) {
                    all.push(pl);
                }
            }
        }
        let observers: Vec<Arc<dyn Plugin>> = all
            .iter()
            .filter(|p| p.as_node_observer().is_some())
            .cloned()
            .collect();
        let queue =
            SchedulingQueue::new(sort, pre_enqueue, all, cfg.queue_settings(), clock.clone());
        let pool = if cfg.parallelism > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(cfg.parallelism)
                    .thread_name(|i| format!("strata-filter-{i}"))
                    .build()
                    .map_err(|e| ConfigError::Invalid {
                        field: "parallelism".into(),
                        message: format!("cannot start worker threads: {e}"),
                    })?,
            )
        } else {
            None
        };
        let (done_tx, done_rx) = mpsc::channel();
        Ok(Scheduler {
            profiles,
            by_name,
            queue,
            cache: Cache::new(),
            cluster,
            clock,
            rt,
            waiting,
            pool,
            filter_gate: parallel::ParallelGate::default(),
            score_gate: parallel::ParallelGate::default(),
            rng: crate::rng::SplitMix64::new(cfg.seed),
            bind_slots: Arc::new(tokio::sync::Semaphore::new(cfg.bind_concurrency)),
            done_tx,
            done_rx,
            in_flight: 0,
            permit_deadlines: BinaryHeap::new(),
            nominated: FxHashMap::default(),
            assumed_ttl: Duration::from_secs(cfg.assumed_pod_ttl_seconds),
            counters: EngineCounters::default(),
            phases: cycle::PhaseTimes::default(),
            observers,
            equiv: equiv::EquivCaches::new(cfg.equivalence_cache_classes),
            extenders,
        })
    }

    /// The snapshot of the cluster.
    pub fn snapshot(&self) -> &Snapshot {
        self.cache.snapshot()
    }

    /// The cache (for consistency checks in tests and reports).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Queue counts.
    pub fn queue_stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// The queue (read-only), e.g. to list pending pods and their messages.
    pub fn queue(&self) -> &SchedulingQueue {
        &self.queue
    }

    /// Counters.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Pods waiting at Permit.
    pub fn waiting_pods(&self) -> &WaitingPods {
        &self.waiting
    }

    /// Binding cycles (including pods waiting at Permit) not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether `scheduler_name` is one of this engine's profiles.
    pub fn serves(&self, scheduler_name: Sym) -> bool {
        self.by_name.contains_key(&scheduler_name)
    }

    /// Tells node observers about every node changed since the last call.
    pub(crate) fn notify_observers(&mut self) {
        let dirty = self.cache.take_dirty();
        if self.observers.is_empty() {
            return;
        }
        let snap = self.cache.snapshot();
        for id in dirty {
            let n = snap.node(id);
            for o in &self.observers {
                if let Some(ob) = o.as_node_observer() {
                    ob.node_changed(n, snap);
                }
            }
        }
        // Nodes whose answers moved with plugin-held state (in Reserve,
        // Unreserve or the calls above): cached results for them go stale.
        let mut stale = Vec::new();
        for o in &self.observers {
            if let Some(ob) = o.as_node_observer() {
                ob.take_stale_nodes(&mut stale);
            }
        }
        if !stale.is_empty() {
            stale.sort_unstable();
            stale.dedup();
            self.cache.invalidate_nodes(&stale);
        }
    }

    fn fire(&mut self, resource: EventResource, action: ActionType, object: EventObject<'_>) {
        self.notify_observers();
        let ev = ClusterEvent {
            resource,
            action,
            object,
        };
        self.queue.on_event(&ev);
    }

    /// Applies one cluster update.
    pub fn handle_update(&mut self, u: ClusterUpdate) {
        match u {
            ClusterUpdate::NodeUpserted(node) => match self.cache.upsert_node(&node) {
                Ok((id, change)) => {
                    let mut action = ActionType(0);
                    if change.allocatable && change.labels && change.taints && change.condition {
                        action = ActionType::ADD;
                    } else {
                        if change.allocatable {
                            action = action.or(ActionType::UPDATE_NODE_ALLOCATABLE);
                        }
                        if change.labels {
                            action = action.or(ActionType::UPDATE_NODE_LABEL);
                        }
                        if change.taints {
                            action = action.or(ActionType::UPDATE_NODE_TAINT);
                        }
                        if change.condition {
                            action = action.or(ActionType::UPDATE_NODE_CONDITION);
                        }
                    }
                    if action.0 != 0 {
                        // Borrow the node in place (no copy): observers first,
                        // then the queue, which is a separate field.
                        self.notify_observers();
                        let ev = ClusterEvent {
                            resource: EventResource::Node,
                            action,
                            object: EventObject::Node {
                                old: None,
                                new: Some(self.cache.snapshot().node(id)),
                            },
                        };
                        self.queue.on_event(&ev);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "node ignored"),
            },
            ClusterUpdate::NodeDeleted(name) => {
                if let Some(sym) = Sym::lookup(&name) {
                    self.cache.remove_node(sym);
                    self.fire(EventResource::Node, ActionType::DELETE, EventObject::None);
                }
            }
            ClusterUpdate::PodUpserted(pod) => self.pod_upserted(pod),
            ClusterUpdate::PodDeleted { uid } => self.pod_deleted(&uid),
            ClusterUpdate::PodInvalid {
                uid,
                namespace,
                name,
                scheduler_name,
                error,
            } => {
                let sn = Sym::new(&scheduler_name);
                if !self.serves(sn) {
                    return;
                }
                self.queue.delete(&uid);
                let message = format!(
                    "pod cannot be scheduled: {}: {}",
                    error.field, error.message
                );
                self.cluster.record_event(PodEvent {
                    namespace: Sym::new(&namespace),
                    name: name.as_str().into(),
                    uid: uid.clone(),
                    kind: EventKind::Warning,
                    reason: "FailedScheduling",
                    message: message.clone(),
                });
                let stub = Arc::new(PodInfo {
                    uid,
                    namespace: Sym::new(&namespace),
                    name: name.as_str().into(),
                    labels: Default::default(),
                    annotations: Default::default(),
                    priority: 0,
                    scheduler_name: sn,
                    bound_node: None,
                    nominated_node: None,
                    owner: None,
                    creation_ms: 0,
                    terminating: false,
                    terminal: false,
                    running: false,
                    equivalence: 0,
                    placement: 0,
                    spec: Arc::new(crate::model::PodSpecInfo::empty()),
                });
                self.publish_condition(
                    stub,
                    PodCondition {
                        scheduled: false,
                        reason: "Unschedulable".into(),
                        message,
                        nominated_node: None,
                    },
                );
            }
            ClusterUpdate::NamespaceUpserted { name, labels } => {
                self.cache.upsert_namespace(name, labels);
                self.fire(
                    EventResource::Namespace,
                    ActionType::ADD.or(ActionType::UPDATE),
                    EventObject::None,
                );
            }
            ClusterUpdate::NamespaceDeleted(name) => {
                self.cache.remove_namespace(name);
                self.fire(
                    EventResource::Namespace,
                    ActionType::DELETE,
                    EventObject::None,
                );
            }
            ClusterUpdate::PdbUpserted(pdb) => {
                let (ns, name) = (pdb.namespace, pdb.name.clone());
                self.cache.upsert_pdb(pdb);
                self.fire(
                    EventResource::PodDisruptionBudget,
                    ActionType::ADD.or(ActionType::UPDATE),
                    EventObject::Named {
                        namespace: ns,
                        name: &name,
                    },
                );
            }
            ClusterUpdate::PdbDeleted { namespace, name } => {
                self.cache.remove_pdb(namespace, &name);
                self.fire(
                    EventResource::PodDisruptionBudget,
                    ActionType::DELETE,
                    EventObject::Named {
                        namespace,
                        name: &name,
                    },
                );
            }
            ClusterUpdate::Custom {
                kind,
                namespace,
                name,
            } => {
                self.fire(
                    EventResource::Custom(kind),
                    ActionType::ALL,
                    EventObject::Named {
                        namespace,
                        name: &name,
                    },
                );
            }
            ClusterUpdate::Query(q) => {
                self.notify_observers();
                q.answer(self);
            }
        }
    }

    fn pod_upserted(&mut self, pod: Arc<PodInfo>) {
        self.pod_upserted_inner(pod);
        self.notify_observers();
    }

    fn pod_upserted_inner(&mut self, pod: Arc<PodInfo>) {
        if pod.bound_node.is_some() {
            // Bound (by us or anyone): the cache tracks it, the queue drops it.
            let existed = self
                .cache
                .snapshot()
                .assigned_pod(&pod.uid)
                .map(|p| p.pod.clone());
            if pod.terminal {
                if let Some(old) = self.cache.remove_pod(&pod.uid) {
                    self.fire(
                        EventResource::AssignedPod,
                        ActionType::DELETE,
                        EventObject::Pod {
                            old: Some(&old),
                            new: None,
                        },
                    );
                }
                self.queue.delete(&pod.uid);
                return;
            }
            self.cache.add_pod(pod.clone());
            if self.in_flight_binding(&pod.uid) {
                // Our own bind confirmed; the binding cycle's result will
                // finish the bookkeeping.
            } else {
                self.queue.delete(&pod.uid);
            }
            self.clear_nomination(&pod.uid);
            match existed {
                None => self.fire(
                    EventResource::AssignedPod,
                    ActionType::ADD,
                    EventObject::Pod {
                        old: None,
                        new: Some(&pod),
                    },
                ),
                Some(old) => {
                    let action = if old.labels != pod.labels {
                        ActionType::UPDATE_POD_LABEL
                    } else {
                        ActionType::UPDATE
                    };
                    self.fire(
                        EventResource::AssignedPod,
                        action,
                        EventObject::Pod {
                            old: Some(&old),
                            new: Some(&pod),
                        },
                    );
                }
            }
            return;
        }
        if !self.serves(pod.scheduler_name) || pod.terminal {
            return;
        }
        if pod.terminating {
            // Being deleted (a finalizer holds it): never scheduled, as in
            // kube-scheduler; the API would refuse its bind anyway.
            self.queue.delete(&pod.uid);
            self.clear_nomination(&pod.uid);
            return;
        }
        if self.cache.snapshot().assigned_pod(&pod.uid).is_some() {
            // Assumed by us; the API has not caught up yet.
            return;
        }
        let old = self.queue.get(&pod.uid).map(|q| q.pod.clone());
        if let Some(n) = pod
            .nominated_node
            .filter(|_| !self.nominated.contains_key(&pod.uid))
            && let Some(id) = self.cache.snapshot().node_id(n)
        {
            self.nominated.insert(pod.uid.clone(), (pod.clone(), id));
        }
        self.queue.add(pod.clone());
        if let Some(old) = old {
            let action = if old.spec.scheduling_gates.len() > pod.spec.scheduling_gates.len() {
                ActionType::UPDATE_POD_SCHEDULING_GATES
            } else if old.labels != pod.labels {
                ActionType::UPDATE_POD_LABEL
            } else {
                ActionType::UPDATE
            };
            self.fire(
                EventResource::UnscheduledPod,
                action,
                EventObject::Pod {
                    old: Some(&old),
                    new: Some(&pod),
                },
            );
        }
    }

    fn in_flight_binding(&self, uid: &str) -> bool {
        self.cache.is_assumed(uid) && self.queue.contains(uid)
    }

    fn pod_deleted(&mut self, uid: &str) {
        self.waiting.reject(uid, "PodDeleted", "pod was deleted");
        self.queue.delete(uid);
        self.clear_nomination(uid);
        if self.in_flight_binding(uid) {
            // The binding cycle will fail or finish; its completion forgets it.
            return;
        }
        if let Some(old) = self.cache.remove_pod(uid) {
            self.fire(
                EventResource::AssignedPod,
                ActionType::DELETE,
                EventObject::Pod {
                    old: Some(&old),
                    new: None,
                },
            );
        }
    }

    pub(crate) fn clear_nomination(&mut self, uid: &str) {
        self.nominated.remove(uid);
    }

    pub(crate) fn publish_condition(&self, pod: Arc<PodInfo>, cond: PodCondition) {
        let cluster = self.cluster.clone();
        self.rt.spawn(async move {
            if let Err(e) = cluster.update_pod_condition(&pod, cond).await {
                tracing::debug!(pod = %pod.key(), error = %e, "status update failed");
            }
        });
    }

    /// Flushes due pods from backoff and the unschedulable set, expires
    /// assumed pods never confirmed, and times out pods waiting at Permit.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        self.queue.flush();
        for pod in self.cache.cleanup_expired(now) {
            self.counters.expired_assumptions += 1;
            tracing::warn!(pod = %pod.key(), "assumed pod expired: its binding was never confirmed");
            self.fire(
                EventResource::AssignedPod,
                ActionType::DELETE,
                EventObject::Pod {
                    old: Some(&pod),
                    new: None,
                },
            );
        }
        while let Some(Reverse((t, _))) = self.permit_deadlines.peek() {
            if *t > now {
                break;
            }
            let Reverse((_, uid)) = self.permit_deadlines.pop().expect("peeked");
            self.waiting
                .reject(&uid, "Permit", "timed out waiting at Permit");
        }
    }

    /// The clock time at which [`Scheduler::tick`] next has work.
    pub fn next_deadline(&self) -> Option<Duration> {
        let p = self.permit_deadlines.peek().map(|Reverse((t, _))| *t);
        match (self.queue.next_deadline(), p) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Adds a PodDisruptionBudget directly (tests and simulator).
    pub fn add_pdb(&mut self, pdb: PdbInfo) {
        self.handle_update(ClusterUpdate::PdbUpserted(pdb));
    }
}

impl Scheduler {
    /// The side a Filter pass over `nodes` nodes takes (the calling thread
    /// when there is no pool).
    pub(crate) fn filter_side(&self, nodes: usize) -> parallel::Side {
        match self.pool {
            Some(_) => self.filter_gate.choose(nodes),
            None => parallel::Side::Caller,
        }
    }

    /// The same for a Score pass.
    pub(crate) fn score_side(&self, nodes: usize) -> parallel::Side {
        match self.pool {
            Some(_) => self.score_gate.choose(nodes),
            None => parallel::Side::Caller,
        }
    }

    /// How the worker pool has been used so far: its threads, the Filter
    /// and Score passes long enough to split, and how many of them it ran.
    pub fn pool_use(&self) -> PoolUse {
        let (fp, fpooled) = self.filter_gate.counts();
        let (sp, spooled) = self.score_gate.counts();
        PoolUse {
            threads: self.pool.as_ref().map_or(1, |p| p.current_num_threads()),
            long_passes: fp + sp,
            pooled_passes: fpooled + spooled,
        }
    }
}
