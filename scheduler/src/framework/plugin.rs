//! The extension points. A plugin is one value implementing [`Plugin`] and
//! returning itself from the `as_*` accessor of each point it serves; the
//! [`plugin!`](crate::plugin) macro writes that impl from a list of points.
//!
//! This is the surface vendors build on (through [`crate::sdk`]): keep it
//! small and stable.

use super::cycle_state::CycleState;
use super::events::{ClusterEvent, ClusterEventKind, QueueingHint};
use super::status::{Diagnosis, Status};
use super::waiting::WaitingPods;
use crate::cache::Snapshot;
use crate::clock::Clock;
use crate::cluster::ClusterPort;
use crate::intern::Sym;
use crate::model::{NodeId, NodeInfo, PodInfo};
use std::sync::Arc;
use std::time::Duration;

/// A node chosen for a pod: id in the snapshot and name in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeRef {
    /// Snapshot id.
    pub id: NodeId,
    /// Node name.
    pub name: Sym,
}

/// A plugin. Implement the traits of the extension points it serves and
/// declare them with [`plugin!`](crate::plugin), which writes this impl:
/// `name` and `Some(self)` from the matching accessors. The engine reads
/// the accessors once, when it builds a profile.
pub trait Plugin: Send + Sync + 'static {
    /// The name used in configuration (`NodeResourcesFit`).
    fn name(&self) -> &'static str;

    /// PreEnqueue: may hold a pod back from the active queue.
    fn as_pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        None
    }
    /// QueueSort: orders the active queue.
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    /// PreFilter.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// Filter.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// PostFilter.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// PreScore.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// Score (and NormalizeScore).
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    /// Reserve / Unreserve.
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    /// Permit.
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        None
    }
    /// PreBind.
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
    /// Bind.
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
    /// PostBind.
    fn as_post_bind(&self) -> Option<&dyn PostBindPlugin> {
        None
    }
    /// Observes every change to a node's state (not an extension point of
    /// kube-scheduler: the hook for plugins that keep their own per-node or
    /// per-domain aggregates, such as topology or devices).
    fn as_node_observer(&self) -> Option<&dyn NodeObserver> {
        None
    }

    /// The cluster events that can make a pod this plugin rejected
    /// schedulable again (kube-scheduler's EventsToRegister). A plugin that
    /// rejects pods and registers nothing leaves them to the periodic flush.
    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        Vec::new()
    }

    /// Finer answer for one pod and one registered event. Default: retry.
    fn queueing_hint(&self, _pod: &PodInfo, _event: &ClusterEvent<'_>) -> QueueingHint {
        QueueingHint::Queue
    }
}

/// Told about every node whose state changed: the Node object, or the pods
/// placed on it (bound, assumed, forgotten, deleted). Called on the
/// scheduling thread between cycles, after the change, with the snapshot
/// that now holds it; `node.present` is false for a deleted node.
pub trait NodeObserver: Send + Sync {
    /// `node` changed.
    fn node_changed(&self, node: &NodeInfo, snap: &Snapshot);

    /// Appends to `out` the nodes whose answers from this plugin's
    /// node-local Filter or Score moved since the last call although the
    /// nodes themselves did not (state the plugin holds changed: memory a
    /// node lent to its pool, a pool's lendable total), and forgets them.
    /// The engine bumps their generations, so results cached for them are
    /// recomputed: a plugin that keeps such state may still declare
    /// [`FilterPlugin::is_node_local`] as long as it reports every node
    /// whose answer it moved. Called on the scheduling thread before each
    /// cycle, after [`NodeObserver::node_changed`]. The default reports
    /// nothing.
    fn take_stale_nodes(&self, _out: &mut Vec<NodeId>) {}
}

/// PreEnqueue: runs when a pod is added to the queue or re-checked; a
/// non-success keeps it out of the active queue (gated).
pub trait PreEnqueuePlugin: Send + Sync {
    /// Success lets the pod in.
    fn pre_enqueue(&self, pod: &PodInfo) -> Status;
}

/// Position in the active queue; smaller pops first. The queue breaks
/// remaining ties by arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SortKey {
    /// Most significant part.
    pub primary: i64,
    /// Next.
    pub secondary: i64,
    /// Least significant.
    pub tertiary: u64,
}

/// QueueSort: maps a queued pod to its [`SortKey`]. One per process: every
/// profile must use the same.
pub trait QueueSortPlugin: Send + Sync {
    /// The key. `enqueued_ns` is when the pod (re-)entered the queue, in
    /// nanoseconds of the scheduler's clock.
    fn sort_key(&self, pod: &PodInfo, enqueued_ns: u64) -> SortKey;
}

/// What PreFilter decided.
#[derive(Clone, Debug, Default)]
pub struct PreFilterResult {
    /// Success, Skip (do not run this plugin's Filter), or a rejection.
    pub status: Status,
    /// If set, only these nodes are candidates (intersected across plugins).
    pub nodes: Option<Vec<NodeId>>,
}

impl PreFilterResult {
    /// Success, all nodes.
    pub fn ok() -> Self {
        PreFilterResult::default()
    }
    /// Skip this plugin's Filter.
    pub fn skip() -> Self {
        PreFilterResult {
            status: Status::skip(),
            nodes: None,
        }
    }
    /// A whole-pod status.
    pub fn status(status: Status) -> Self {
        PreFilterResult {
            status,
            nodes: None,
        }
    }
    /// Success, restricted to `nodes`.
    pub fn nodes(nodes: Vec<NodeId>) -> Self {
        PreFilterResult {
            status: Status::success(),
            nodes: Some(nodes),
        }
    }
}

/// PreFilter: per-pod work before nodes are filtered.
pub trait PreFilterPlugin: Send + Sync {
    /// Computes state for Filter, or rejects the pod, or narrows the nodes.
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot)
    -> PreFilterResult;

    /// Whether `add_pod`/`remove_pod` are implemented (kube-scheduler's
    /// PreFilterExtensions), so preemption can update this plugin's state.
    fn has_extensions(&self) -> bool {
        false
    }

    /// `other` is now on `node` in a what-if evaluation (preemption,
    /// nominated pods): update state computed in `pre_filter`.
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        Status::success()
    }

    /// `other` was removed from `node` in a what-if evaluation.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        Status::success()
    }
}

/// Filter: can the pod run on this node? Called for every candidate node,
/// possibly from several threads: no locks, no allocation on success.
pub trait FilterPlugin: Send + Sync {
    /// Success, or why not.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;

    /// True when the result depends only on the pod and this node's
    /// [`NodeInfo`] (and on state PreFilter derived from the pod alone).
    /// The engine may then reuse the result for equivalent pods until the
    /// node changes.
    fn is_node_local(&self) -> bool {
        false
    }

    /// Whether this cycle's verdicts are node-local, per cycle: `Some(key)`
    /// when they depend only on the pod's equivalence class, this node's
    /// [`NodeInfo`] and `key` (state the plugin holds or derived in
    /// PreFilter, which it summarizes in `key`; a plugin whose held state
    /// moves an answer without the node changing reports the node through
    /// [`NodeObserver::take_stale_nodes`]). Equivalent pods whose cycles
    /// give the same key share cached verdicts; `None` runs `filter` on
    /// every node this cycle. Default: `Some(0)` when
    /// [`FilterPlugin::is_node_local`], else `None`.
    fn node_local_verdict_key(&self, _state: &CycleState) -> Option<u64> {
        if self.is_node_local() { Some(0) } else { None }
    }

    /// Whether the node-local verdicts may read the pod's identity: its
    /// labels, annotations or namespace, or its inter-pod rules (pod
    /// affinity and anti-affinity, topology spread constraints). `false`
    /// promises that two pods whose specs are otherwise equal
    /// ([`PodInfo::placement`]) get the same verdict on a node (given the
    /// same [`FilterPlugin::node_local_verdict_key`]), so the engine may
    /// hand one class's cached verdicts to a new class: every Deployment
    /// has its own labels and selectors, but its first pod then costs no
    /// pass over the nodes. Default `true` (answers are never shared).
    fn node_local_reads_pod_identity(&self) -> bool {
        true
    }

    /// For a filter that is not node-local but whose verdict in this cycle
    /// depends only on which topology domain each node is in (spread and
    /// inter-pod constraints after PreFilter counted the domains): that
    /// verdict, one [`DomainVerdict`] per layer. A node passes exactly when
    /// it passes every layer. The engine's fast path then keeps the feasible
    /// set across cycles and revisits only the nodes of domains whose verdict
    /// changed, instead of calling [`FilterPlugin::filter`] on every node.
    ///
    /// `None` (the default) when the plugin cannot say, for this cycle: the
    /// engine calls `filter` on every node. An answer must agree with
    /// `filter` on every node of the snapshot PreFilter saw (on success or
    /// not; the reasons still come from `filter`).
    fn domain_verdicts(&self, _state: &CycleState) -> Option<Vec<DomainVerdict>> {
        None
    }
}

/// One layer of a filter's per-domain verdict (see
/// [`FilterPlugin::domain_verdicts`]).
#[derive(Clone, Debug)]
pub struct DomainVerdict {
    /// Node slot ([`NodeId`] index) to domain id; [`DomainVerdict::NO_DOMAIN`]
    /// (or a slot beyond the end) for a node without one, whose verdict is
    /// `absent`. The engine recognises an unchanged mapping by the `Arc`'s
    /// address, so a plugin should hand out the same `Arc` while the mapping
    /// does not change.
    pub of_node: Arc<Vec<u32>>,
    /// Domain id to whether its nodes pass; ids beyond the end (other than
    /// `NO_DOMAIN`) fail.
    pub pass: Vec<bool>,
    /// Whether nodes without a domain pass (a node lacking the key of an
    /// anti-affinity term does; one lacking a spread key does not).
    pub absent: bool,
}

impl DomainVerdict {
    /// The domain of a node without one (it lacks the topology key, or is
    /// absent): its verdict is `absent` whatever the counts are.
    pub const NO_DOMAIN: u32 = u32::MAX;

    /// Whether node slot `slot` passes this layer.
    #[inline]
    pub fn passes(&self, slot: usize) -> bool {
        match self.of_node.get(slot) {
            Some(&d) if d != Self::NO_DOMAIN => self.pass.get(d as usize).copied().unwrap_or(false),
            _ => self.absent,
        }
    }
}

/// What PostFilter achieved.
#[derive(Clone, Debug, Default)]
pub struct PostFilterResult {
    /// Success when the pod may fit after the actions below.
    pub status: Status,
    /// The node the pod is nominated to.
    pub nominated_node: Option<NodeRef>,
    /// Pods to delete so the pod fits (preemption victims).
    pub victims: Vec<Arc<PodInfo>>,
    /// Lower-priority pods nominated to the same node that lose their
    /// nomination.
    pub clear_nominations: Vec<Arc<PodInfo>>,
}

/// What a PostFilter plugin may use besides the snapshot.
pub struct PostFilterContext<'a> {
    /// The snapshot.
    pub snapshot: &'a Snapshot,
    /// Why each node was rejected.
    pub diagnosis: &'a Diagnosis,
    /// Runs the profile's PreFilter extensions and Filters on a what-if node.
    pub evaluator: &'a dyn FilterEvaluator,
    /// Pods nominated to nodes (by earlier preemptions), with their nodes.
    pub nominated: &'a [(Arc<PodInfo>, NodeId)],
    /// The kube-scheduler extenders with a `preemptVerb` that this pod goes
    /// to: a preemption plugin hands them its candidates before choosing
    /// one ([`NO_PREEMPTION_EXTENDERS`] where there are none).
    pub extenders: &'a dyn PreemptionExtenders,
}

/// A node where evicting `victims` would let the pod fit.
#[derive(Clone, Debug)]
pub struct PreemptionCandidate {
    /// The node.
    pub node: NodeRef,
    /// The pods to evict there, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many of `victims` are evicted against a PodDisruptionBudget.
    pub pdb_violations: usize,
}

/// The extenders consulted on preemption (kube-scheduler's
/// `callExtenders`): each may drop candidates and narrow their victims,
/// in configuration order, each seeing what the one before kept.
pub trait PreemptionExtenders: Send + Sync {
    /// Whether any extender is consulted (when not, `process` returns its
    /// input).
    fn is_empty(&self) -> bool;
    /// The candidates the extenders keep. `Err` is the status the pod's
    /// attempt ends with: a non-ignorable extender failed or answered
    /// something that is not a narrowing of what it was given.
    fn process(
        &self,
        pod: &PodInfo,
        candidates: Vec<PreemptionCandidate>,
    ) -> Result<Vec<PreemptionCandidate>, Status>;
}

/// No preemption extenders: every candidate is kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPreemptionExtenders;

/// The value of [`NoPreemptionExtenders`], for [`PostFilterContext::extenders`].
pub const NO_PREEMPTION_EXTENDERS: &NoPreemptionExtenders = &NoPreemptionExtenders;

impl PreemptionExtenders for NoPreemptionExtenders {
    fn is_empty(&self) -> bool {
        true
    }
    fn process(
        &self,
        _pod: &PodInfo,
        candidates: Vec<PreemptionCandidate>,
    ) -> Result<Vec<PreemptionCandidate>, Status> {
        Ok(candidates)
    }
}

/// Runs the current profile's filters against modified nodes (for
/// preemption's what-if checks).
pub trait FilterEvaluator: Send + Sync {
    /// Runs every Filter of the profile on `node` with `state`.
    fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
    /// Calls every PreFilter extension's `remove_pod`.
    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status;
    /// Calls every PreFilter extension's `add_pod`.
    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status;
}

/// PostFilter: runs when no node fits (preemption lives here).
pub trait PostFilterPlugin: Send + Sync {
    /// Tries to make room.
    fn post_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        ctx: &PostFilterContext<'_>,
    ) -> PostFilterResult;
}

/// PreScore: per-pod work before scoring.
pub trait PreScorePlugin: Send + Sync {
    /// Success, Skip (do not run this plugin's Score) or Error.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        feasible: &[NodeId],
    ) -> Status;
}

/// One node's score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeScore {
    /// The node.
    pub node: NodeId,
    /// Its score.
    pub score: i64,
}

/// The highest score a plugin should report after normalization.
pub const MAX_NODE_SCORE: i64 = 100;

/// Score and NormalizeScore.
pub trait ScorePlugin: Send + Sync {
    /// Scores one feasible node. Called for every feasible node, possibly
    /// from several threads.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;

    /// Whether `normalize` does anything (saves a pass when not).
    fn has_normalize(&self) -> bool {
        false
    }

    /// Rescales all scores into `0..=MAX_NODE_SCORE`.
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [NodeScore]) -> Status {
        Status::success()
    }

    /// As [`FilterPlugin::is_node_local`], for scores before normalization.
    fn is_node_local(&self) -> bool {
        false
    }

    /// For a score that depends on one node plus a small per-cycle input
    /// (for example cluster-wide image counts computed in PreScore): a key
    /// of that input, so the engine may reuse the node's score while the key
    /// and the node are unchanged. `None` means "recompute every cycle".
    /// The default is `Some(0)` for node-local scores and `None` otherwise.
    fn node_local_key(&self, _state: &CycleState) -> Option<u64> {
        if self.is_node_local() { Some(0) } else { None }
    }

    /// As [`FilterPlugin::node_local_reads_pod_identity`], for the scores
    /// kept under [`ScorePlugin::node_local_key`].
    fn node_local_reads_pod_identity(&self) -> bool {
        true
    }

    /// For a score that is not node-local but whose raw score in this
    /// cycle depends only on the node and on which topology domain it is in
    /// (spread and inter-pod preferences after PreScore counted the
    /// domains): what it depends on, so the engine's fast path keeps the
    /// scores across cycles of a pod class and calls
    /// [`ScorePlugin::score`] again only on nodes that changed or whose
    /// domain's value changed, instead of on every feasible node.
    ///
    /// `None` (the default): the engine scores every feasible node. An
    /// answer promises, for pods of one [`PodInfo::placement`] (equal specs
    /// apart from identity and inter-pod rules: the engine carries answers
    /// from one Deployment's class to the next one's):
    /// - on a node whose generation did not move, `score` returns what it
    ///   returned in an earlier cycle when `salt` is the same and, in every
    ///   layer, the node's domain and that domain's value are the same (so
    ///   whatever else the score reads of the pod, such as its own counts
    ///   kept outside the layers, must be in `salt`);
    /// - with `has_normalize`, `normalize` gives each score a value that
    ///   depends only on that score and on the set of distinct scores it was
    ///   given (not on node ids, order or repeats), so the engine may
    ///   normalize one score per distinct value.
    fn domain_scores(&self, _state: &CycleState) -> Option<DomainScores> {
        None
    }
}

/// What a score depends on besides the node itself (see
/// [`ScorePlugin::domain_scores`]).
#[derive(Clone, Debug, Default)]
pub struct DomainScores {
    /// Everything else the scores depend on (weights, say), hashed: any
    /// change makes the engine score every node again.
    pub salt: u64,
    /// The topology layers the scores read.
    pub layers: Vec<ScoreLayer>,
}

/// One topology layer a score reads: a domain per node and a value per
/// domain.
#[derive(Clone, Debug)]
pub struct ScoreLayer {
    /// Node slot to domain id ([`DomainVerdict::NO_DOMAIN`] or beyond the
    /// end: none). Recognised unchanged by the `Arc`'s address, as in
    /// [`DomainVerdict`].
    pub of_node: Arc<Vec<u32>>,
    /// Domain id to the value the score reads (ids beyond the end: 0).
    /// Compared by content; an unchanged `Arc` is not compared.
    pub values: Arc<Vec<i64>>,
}

/// Reserve and Unreserve: claim and give back plugin-held resources.
pub trait ReservePlugin: Send + Sync {
    /// The pod is assumed on `node`; claim what the plugin tracks.
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: NodeRef,
        snap: &Snapshot,
    ) -> Status;
    /// The pod will not run on `node` after all; give back exactly what
    /// `reserve` took. Must be idempotent.
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: NodeRef);
}

/// Permit's answer.
#[derive(Clone, Debug)]
pub struct PermitResult {
    /// Success, Wait or a rejection.
    pub status: Status,
    /// With Wait: how long at most.
    pub timeout: Duration,
}

impl PermitResult {
    /// Proceed.
    pub fn allow() -> Self {
        PermitResult {
            status: Status::success(),
            timeout: Duration::ZERO,
        }
    }
    /// Hold the pod up to `timeout`.
    pub fn wait(timeout: Duration) -> Self {
        PermitResult {
            status: Status::wait(),
            timeout,
        }
    }
    /// Reject.
    pub fn reject(status: Status) -> Self {
        PermitResult {
            status,
            timeout: Duration::ZERO,
        }
    }
}

/// Permit: the last gate before binding; may hold pods (gangs wait here).
pub trait PermitPlugin: Send + Sync {
    /// Allow, wait, or reject.
    fn permit(&self, state: &mut CycleState, pod: &PodInfo, node: NodeRef) -> PermitResult;
}

/// PreBind: work before the bind call (volumes, device claims). Runs in the
/// binding cycle, off the scheduling thread.
#[async_trait::async_trait]
pub trait PreBindPlugin: Send + Sync {
    /// Success to continue.
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status;
}

/// Bind: performs the binding. The first plugin not returning Skip wins.
#[async_trait::async_trait]
pub trait BindPlugin: Send + Sync {
    /// Success, Skip (let the next binder try) or an error.
    async fn bind(&self, state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status;
}

/// PostBind: informational, after a successful bind.
pub trait PostBindPlugin: Send + Sync {
    /// Notification.
    fn post_bind(&self, state: &CycleState, pod: &PodInfo, node: NodeRef);
}

/// What a plugin gets when it is built.
#[derive(Clone)]
pub struct Handle {
    /// The cluster, for plugins that call it (binders, claim writers).
    pub cluster: Arc<dyn ClusterPort>,
    /// Pods waiting at Permit.
    pub waiting: WaitingPods,
    /// The scheduler's clock.
    pub clock: Arc<dyn Clock>,
    /// The profile's scheduler name.
    pub scheduler_name: Sym,
    /// Preemption claims, shared by every plugin of the scheduler: a gang
    /// plugin registers here what general preemption must leave to it.
    pub preemption: super::PreemptionClaims,
}

/// Why a plugin could not be built from its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PluginArgsError {
    /// Field path inside the plugin's args.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl PluginArgsError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PluginArgsError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Builds a plugin from its `pluginConfig` args (`None` when not given).
pub type PluginFactory = Arc<
    dyn Fn(Option<&serde_json::Value>, &Handle) -> Result<Arc<dyn Plugin>, PluginArgsError>
        + Send
        + Sync,
>;

/// Plugin factories by name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: std::collections::BTreeMap<String, PluginFactory>,
    extender: Option<crate::extenders::ExtenderFactory>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `factory` under `name`; a later registration replaces an
    /// earlier one (so a vendor can swap an in-tree plugin).
    pub fn register(
        &mut self,
        name: &str,
        factory: impl Fn(
            Option<&serde_json::Value>,
            &Handle,
        ) -> Result<Arc<dyn Plugin>, PluginArgsError>
        + Send
        + Sync
        + 'static,
    ) {
        self.factories.insert(name.to_owned(), Arc::new(factory));
    }

    /// The factory for `name`.
    pub fn get(&self, name: &str) -> Option<&PluginFactory> {
        self.factories.get(name)
    }

    /// Registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(|s| s.as_str())
    }

    /// Adds every factory of `other`, replacing those of the same name (how
    /// a vendor's plugins are layered over the in-tree ones).
    pub fn extend(&mut self, other: &Registry) {
        for (name, f) in &other.factories {
            self.factories.insert(name.clone(), f.clone());
        }
        if let Some(e) = &other.extender {
            self.extender = Some(e.clone());
        }
    }

    /// Sets what builds the configuration's `extenders:` (an HTTP client
    /// crate such as `strata-extender` registers it; the engine has none).
    pub fn set_extender_factory(&mut self, factory: crate::extenders::ExtenderFactory) {
        self.extender = Some(factory);
    }

    /// What builds `extenders:`, if a client was registered.
    pub fn extender_factory(&self) -> Option<&crate::extenders::ExtenderFactory> {
        self.extender.as_ref()
    }

    /// Whether no plugin is registered.
    pub fn is_empty(&self) -> bool {
        self.factories.is_empty()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}
