//! MemoryPool: memory borrowed across the servers of a super-node.
//!
//! A pod annotated `strata.io/memory-borrow` (a share such as `25%` of its
//! total memory, or an amount such as `16Gi`) runs with its memory request
//! on its node and the rest mapped from lenders of its pool domain (by
//! default its super-node, label `strata.io/supernode`). A node lends what
//! `strata.io/memory-lendable` says (or the args' default share), less what
//! its own pods requested. See `docs/memory-pool.md` for the model and a
//! worked example.
//!
//! Points:
//! - PreFilter: parses the pod's ask (malformed: UnschedulableAndUnresolvable
//!   naming the annotation), checks its namespace's cap, and rejects the pod
//!   at once when no pool can lend enough, naming the shortfall ("needs
//!   12Gi remote, pool sn-3 has 8Gi"). A pod that does not borrow returns
//!   Skip while no node has lent anything (the common case: it costs one
//!   annotation lookup); once memory is lent, its Filter keeps it off the
//!   memory lenders' pods need (`lent + requested + pod <= allocatable`).
//! - Filter: the node's free memory, less what it has lent, covers the
//!   request, and the rest of its pool can lend the remote part: a read of
//!   the pool and cabinet aggregates, never a walk over the lenders.
//! - Score: the nearest lenders first (same cabinet before the rest of the
//!   super-node), weighted by medium, then the pool's headroom after the
//!   borrow.
//! - Reserve picks the lenders deterministically (see [`pool::Ledger::plan`])
//!   and takes their memory; Unreserve and the borrower's deletion give it
//!   back. PreBind writes the plan on the pod (`strata.io/memory-borrow-plan`).
//! - NodeObserver keeps the ledger current and, when a lender is deleted,
//!   cordoned or can no longer cover what it lent, records a
//!   `MemoryLenderLost` warning on each affected borrower.
//!
//! Known limit: the remote amount is fixed by the pod (its share of its
//! own total), so every feasible node borrows the same amount; Score orders
//! nodes by where the memory comes from, not by how much.

pub mod model;
pub mod pool;
#[cfg(test)]
mod tests;

use crate::common::memory_borrow::{BorrowFigures, BorrowLink};
use model::{MEDIA, MemoryPoolArgs, PLAN, PodBorrow, human, pod_ask};
use parking_lot::Mutex;
use pool::{BorrowPlan, Ledger, View};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use strata_scheduler::cluster::{EventKind, PodEvent};
use strata_scheduler::sdk::{
    ActionType, ClusterEventKind, CycleState, EventResource, FilterPlugin, Handle, MAX_NODE_SCORE,
    NodeId, NodeInfo, NodeObserver, NodeRef, Plugin, PluginArgsError, PodInfo, PreBindPlugin,
    PreFilterPlugin, PreFilterResult, PreScorePlugin, ReservePlugin, ResourceId, ScorePlugin,
    Snapshot, Status, Sym,
};

/// The plugin's configuration name.
pub const NAME: &str = "MemoryPool";

/// Why a borrowing pod was refused, for the failure counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Its `strata.io/memory-borrow` annotation does not parse.
    Malformed = 0,
    /// Its namespace would pass its cap.
    NamespaceCap = 1,
    /// No pool domain can lend enough.
    PoolShort = 2,
    /// Reserve found the lenders short (a node changed since Filter).
    LendersShort = 3,
}

impl Failure {
    /// Every reason.
    pub const ALL: [Failure; 4] = [
        Failure::Malformed,
        Failure::NamespaceCap,
        Failure::PoolShort,
        Failure::LendersShort,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::NamespaceCap => "namespace_cap",
            Failure::PoolShort => "pool_short",
            Failure::LendersShort => "lenders_short",
        }
    }
}

/// The figures the plugin exports: borrowed bytes per pool domain and per
/// namespace, failures by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolMetrics {
    /// Remote bytes held, by pool domain.
    pub borrowed_by_pool: BTreeMap<String, i64>,
    /// Remote bytes held, by namespace.
    pub borrowed_by_namespace: BTreeMap<String, i64>,
    /// Pods refused, by reason ([`Failure::as_str`]).
    pub failures: BTreeMap<&'static str, u64>,
    /// Bytes lent in all.
    pub lent_bytes: i64,
    /// Plans held.
    pub plans: usize,
}

/// The ledger shared by every profile's MemoryPool (memory is physical:
/// one ledger per scheduler), with the failure counters. Built with the
/// first profile's args.
#[derive(Default)]
pub struct PoolStore {
    ledger: Mutex<Option<Ledger>>,
    /// The caps of the profile that built the ledger, for
    /// [`BorrowFigures::namespace_room`].
    caps: Mutex<Option<MemoryPoolArgs>>,
    failures: [AtomicU64; 4],
}

/// The figures the PodGroup planner reads (through a
/// [`BorrowLink`](crate::common::memory_borrow::BorrowLink)).
impl BorrowFigures for PoolStore {
    fn remote(&self, pod: &PodInfo) -> i64 {
        pod_ask(pod).ok().flatten().map_or(0, |b| b.remote)
    }

    fn pool(&self, n: NodeId) -> Option<usize> {
        self.with_ledger(|l| l.view().pool_of(n)).flatten()
    }

    fn pool_name(&self, pool: usize) -> String {
        self.with_ledger(|l| l.domain_name(pool))
            .unwrap_or_else(|| "?".to_owned())
    }

    fn pool_lendable(&self, pool: usize) -> i64 {
        self.with_ledger(|l| (0..MEDIA).map(|m| l.view().dom_free(pool, m)).sum())
            .unwrap_or(0)
    }

    fn lendable(&self, n: NodeId) -> i64 {
        self.with_ledger(|l| (0..MEDIA).map(|m| l.view().lendable(n, m)).sum())
            .unwrap_or(0)
    }

    fn lent(&self, n: NodeId) -> i64 {
        self.with_ledger(|l| l.view().lent(n)).unwrap_or(0)
    }

    fn namespace_room(&self, ns: Sym) -> Option<i64> {
        let cap = self.caps.lock().as_ref()?.cap_of(ns.as_str())?;
        let held = self.with_ledger(|l| l.namespace_borrowed(ns)).unwrap_or(0);
        Some(cap - held)
    }
}

impl PoolStore {
    /// Runs `f` on the ledger (none before the plugin is built).
    pub fn with_ledger<R>(&self, f: impl FnOnce(&Ledger) -> R) -> Option<R> {
        self.ledger.lock().as_ref().map(f)
    }

    fn count(&self, f: Failure) {
        self.failures[f as usize].fetch_add(1, Relaxed);
    }

    /// The current figures.
    pub fn metrics(&self) -> PoolMetrics {
        let mut m = PoolMetrics::default();
        for f in Failure::ALL {
            m.failures
                .insert(f.as_str(), self.failures[f as usize].load(Relaxed));
        }
        if let Some(l) = self.ledger.lock().as_ref() {
            for p in l.plans() {
                *m.borrowed_by_pool.entry(p.pool.clone()).or_default() += p.remote;
            }
            for (ns, v) in l.by_namespace() {
                m.borrowed_by_namespace.insert(ns.as_str().to_owned(), v);
            }
            m.lent_bytes = l.lent_total();
            m.plans = l.plans().count();
        }
        m
    }
}

/// The plugin.
pub struct MemoryPool {
    args: MemoryPoolArgs,
    handle: Handle,
    store: Arc<PoolStore>,
}

/// Per-cycle state.
#[derive(Clone)]
struct CycleData {
    view: Option<Arc<View>>,
    ask: Option<PodBorrow>,
    local: i64,
    plan: Option<Arc<BorrowPlan>>,
}

impl MemoryPool {
    /// The plugin with its args, keeping its ledger in `store`.
    pub fn new(args: MemoryPoolArgs, handle: Handle, store: Arc<PoolStore>) -> MemoryPool {
        {
            let mut g = store.ledger.lock();
            if g.is_none() {
                *g = Some(Ledger::new(&args));
                *store.caps.lock() = Some(args.clone());
            }
        }
        MemoryPool {
            args,
            handle,
            store,
        }
    }

    /// The shared ledger and counters.
    pub fn store(&self) -> &Arc<PoolStore> {
        &self.store
    }

    fn view(&self) -> Option<Arc<View>> {
        self.store.ledger.lock().as_ref().map(|l| l.view().clone())
    }

    /// What a borrow from `av` (`[near, pool][medium]`) of `remote` bytes
    /// is worth: nearness and medium of the memory taken, then the pool's
    /// headroom after it. 0..=100.
    fn worth(&self, av: &[[i64; MEDIA]; 2], remote: i64) -> i64 {
        const DISTANCE_WEIGHT: [i64; 2] = [100, 60];
        let mut order = [0usize, 1];
        order.sort_by_key(|m| -self.args.medium_weights[*m]);
        let mut rest = remote;
        let mut worth: i128 = 0;
        for (d, tier) in av.iter().enumerate() {
            for m in order {
                let take = tier[m].min(rest);
                rest -= take;
                worth += take as i128 * (DISTANCE_WEIGHT[d] * self.args.medium_weights[m]) as i128;
            }
        }
        let total: i64 = av.iter().flatten().sum();
        if remote <= 0 || total <= 0 {
            return 0;
        }
        let nearness = (worth / (remote as i128 * 100)) as i64;
        let headroom = ((total - remote).max(0) as i128 * 100 / total as i128) as i64;
        ((nearness * 3 + headroom) / 4).clamp(0, MAX_NODE_SCORE)
    }
}

strata_scheduler::plugin!(MemoryPool: NAME => [PreFilter, Filter, PreScore, Score, Reserve, PreBind, NodeObserver] {
    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![
            ClusterEventKind::new(
                EventResource::Node,
                ActionType::ADD.or(ActionType::UPDATE_NODE),
            ),
            // A borrower leaving gives its lenders' memory back.
            ClusterEventKind::new(EventResource::AssignedPod, ActionType::DELETE),
        ]
    }
});

impl PreFilterPlugin for MemoryPool {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snap: &Snapshot,
    ) -> PreFilterResult {
        let ask = match pod_ask(pod) {
            Ok(a) => a,
            Err(e) => {
                self.store.count(Failure::Malformed);
                return PreFilterResult::status(Status::unresolvable(e.to_string()));
            }
        };
        let local = pod.spec.requests[ResourceId::MEMORY];
        let Some(b) = ask else {
            // Not a borrower: only the lenders' memory matters, and only
            // once something is lent.
            if local <= 0 {
                return PreFilterResult::skip();
            }
            let view = self.view();
            if view.as_ref().is_none_or(|v| v.lent_total() == 0) {
                return PreFilterResult::skip();
            }
            state.insert(CycleData {
                view,
                ask: None,
                local,
                plan: None,
            });
            return PreFilterResult::ok();
        };
        let g = self.store.ledger.lock();
        let Some(ledger) = g.as_ref() else {
            return PreFilterResult::status(Status::error("the memory pool ledger is not built"));
        };
        let ns = pod.namespace.as_str();
        if let Some(cap) = self.args.cap_of(ns) {
            let held = ledger.namespace_borrowed(pod.namespace);
            if held + b.remote > cap {
                drop(g);
                self.store.count(Failure::NamespaceCap);
                // Unresolvable by preemption, which does not model loans
                // (see `docs/memory-pool.md`); retried when a borrower
                // leaves.
                return PreFilterResult::status(Status::unresolvable(format!(
                    "namespace {ns} holds {} of remote memory; {} more would pass its cap of {}",
                    human(held),
                    human(b.remote),
                    human(cap)
                )));
            }
        }
        let best = ledger
            .pools()
            .into_iter()
            .max_by_key(|(d, free)| (*free, std::cmp::Reverse(*d)));
        match best {
            Some((_, free)) if free >= b.remote => {}
            other => {
                let msg = match other {
                    Some((d, free)) => format!(
                        "needs {} remote, pool {} has {}",
                        human(b.remote),
                        ledger.domain_name(d),
                        human(free)
                    ),
                    None => format!("needs {} remote, no node lends memory", human(b.remote)),
                };
                drop(g);
                self.store.count(Failure::PoolShort);
                return PreFilterResult::status(Status::unresolvable(msg));
            }
        }
        let view = Some(ledger.view().clone());
        drop(g);
        state.insert(CycleData {
            view,
            ask: Some(b),
            local,
            plan: None,
        });
        PreFilterResult::ok()
    }
}

impl FilterPlugin for MemoryPool {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(cd) = state.get::<CycleData>() else {
            return Status::success();
        };
        let Some(view) = &cd.view else {
            return Status::success();
        };
        let lent = view.lent(node.id);
        if lent > 0
            && node.allocatable[ResourceId::MEMORY] - node.requested[ResourceId::MEMORY] - lent
                < cd.local
        {
            return Status::unschedulable("node(s) lent the memory this pod needs to their pool");
        }
        if let Some(b) = cd.ask {
            // A node without a pool has nobody to borrow from.
            let total: i64 = view
                .available(node.id)
                .map_or(0, |av| av.iter().flatten().sum());
            if total < b.remote {
                return Status::unschedulable("node(s) whose memory pool cannot lend enough");
            }
        }
        Status::success()
    }

    /// The verdict reads the node, the pod's ask, and the ledger's figures
    /// for the node (what it lends and has lent) and for its pool and
    /// cabinet (their lendable memory). The ledger reports every node whose
    /// figures, or whose pool's, moved without the node changing
    /// ([`NodeObserver::take_stale_nodes`]), so equivalent pods may reuse
    /// the verdict while the node's generation stands.
    fn is_node_local(&self) -> bool {
        true
    }
}

impl PreScorePlugin for MemoryPool {
    fn pre_score(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        _snap: &Snapshot,
        _feasible: &[NodeId],
    ) -> Status {
        match state.get::<CycleData>() {
            Some(cd) if cd.ask.is_some() && cd.view.is_some() => Status::success(),
            _ => Status::skip(),
        }
    }
}

impl ScorePlugin for MemoryPool {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(cd) = state.get::<CycleData>() else {
            return Ok(0);
        };
        let (Some(view), Some(b)) = (&cd.view, cd.ask) else {
            return Ok(0);
        };
        Ok(view
            .available(node.id)
            .map_or(0, |av| self.worth(&av, b.remote)))
    }

    /// As Filter's verdict: the score reads what the node's cabinet and
    /// pool can lend, reported stale when it moves.
    fn is_node_local(&self) -> bool {
        true
    }

    /// The remote amount (the medium weights are the plugin's own).
    fn node_local_key(&self, state: &CycleState) -> Option<u64> {
        let remote = state
            .get::<CycleData>()
            .and_then(|cd| cd.ask)
            .map(|b| b.remote);
        Some(remote.unwrap_or(0) as u64)
    }
}

impl ReservePlugin for MemoryPool {
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: NodeRef,
        _snap: &Snapshot,
    ) -> Status {
        let Some(cd) = state.get_mut::<CycleData>() else {
            return Status::success();
        };
        cd.view = None;
        let Some(b) = cd.ask else {
            return Status::success();
        };
        let mut g = self.store.ledger.lock();
        let Some(ledger) = g.as_mut() else {
            return Status::error("the memory pool ledger is not built");
        };
        if let Some(p) = ledger.plan_of(&pod.uid) {
            cd.plan = Some(p.clone());
            return Status::success();
        }
        let loans = match ledger.plan(node.id, b.remote, &self.args.medium_weights) {
            Ok(l) => l,
            Err(short) => {
                drop(g);
                self.store.count(Failure::LendersShort);
                return Status::unschedulable(format!(
                    "needs {} remote, pool {} has {}",
                    human(b.remote),
                    short.pool,
                    human(short.available)
                ));
            }
        };
        let pool = ledger
            .pool_of(node.id)
            .map_or_else(|| "?".to_owned(), |d| ledger.domain_name(d));
        ledger.apply(BorrowPlan {
            uid: pod.uid.clone(),
            namespace: pod.namespace,
            name: pod.name.clone(),
            borrower: node.id,
            pool,
            remote: b.remote,
            lenders: loans,
        });
        cd.plan = ledger.plan_of(&pod.uid).cloned();
        Status::success()
    }

    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, _node: NodeRef) {
        let had = match state.get_mut::<CycleData>() {
            Some(cd) => {
                cd.view = None;
                cd.plan.take().is_some()
            }
            None => false,
        };
        if had && let Some(l) = self.store.ledger.lock().as_mut() {
            l.release(&pod.uid);
        }
    }
}

/// The plan as the pod's annotation value.
pub fn plan_annotation(plan: &BorrowPlan) -> String {
    let doc = model::PlanDoc {
        pool: plan.pool.clone(),
        remote_bytes: plan.remote,
        lenders: plan
            .lenders
            .iter()
            .map(|l| model::LoanDoc {
                node: l.node_name.as_str().to_owned(),
                bytes: l.bytes,
                medium: l.medium.as_str().to_owned(),
                distance: l.distance.as_str().to_owned(),
            })
            .collect(),
    };
    serde_json::to_string(&doc).unwrap_or_default()
}

#[async_trait::async_trait]
impl PreBindPlugin for MemoryPool {
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
        let Some(plan) = state.get::<CycleData>().and_then(|cd| cd.plan.clone()) else {
            return Status::success();
        };
        let note = BTreeMap::from([(PLAN.to_owned(), plan_annotation(&plan))]);
        match self.handle.cluster.patch_pod_annotations(pod, &note).await {
            Ok(()) => Status::success(),
            Err(e) => Status::error(format!(
                "writing the memory borrow plan of pod {} (node {}): {e}",
                pod.key(),
                node.name
            )),
        }
    }
}

impl NodeObserver for MemoryPool {
    fn take_stale_nodes(&self, out: &mut Vec<NodeId>) {
        if let Some(l) = self.store.ledger.lock().as_mut() {
            l.take_stale(out);
        }
    }

    fn node_changed(&self, node: &NodeInfo, snap: &Snapshot) {
        let notices = match self.store.ledger.lock().as_mut() {
            Some(l) => l.node_changed(node, snap, &self.args),
            None => return,
        };
        for n in notices {
            self.handle.cluster.record_event(PodEvent {
                namespace: n.plan.namespace,
                name: n.plan.name.clone(),
                uid: n.plan.uid.clone(),
                kind: EventKind::Warning,
                reason: "MemoryLenderLost",
                message: n.message,
            });
        }
    }
}

/// Registers the plugin with its ledger in `store` (shared with whoever
/// reads its metrics).
pub fn register(registry: &mut strata_scheduler::sdk::Registry, store: Arc<PoolStore>) {
    registry.register(NAME, move |args, handle| {
        Ok(Arc::new(MemoryPool::new(
            MemoryPoolArgs::parse(args)?,
            handle.clone(),
            store.clone(),
        )) as Arc<dyn Plugin>)
    });
}

/// Builds the plugin from its args, with a ledger of its own.
pub fn factory(
    args: Option<&serde_json::Value>,
    handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    factory_linked(args, handle, &BorrowLink::default())
}

/// [`factory`], publishing the ledger's figures through `link` (for the
/// PodGroup planner) unless it already points at another ledger.
pub fn factory_linked(
    args: Option<&serde_json::Value>,
    handle: &Handle,
    link: &BorrowLink,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    let store = Arc::new(PoolStore::default());
    let p = MemoryPool::new(MemoryPoolArgs::parse(args)?, handle.clone(), store.clone());
    link.set(store);
    Ok(Arc::new(p))
}
