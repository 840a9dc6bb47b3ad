//! Devices: accelerators allocated by identity through the plugin API —
//! whole devices, HAMi-compatible fractional shares, interconnect-aware
//! choice within a node and a fragmentation-aware choice across nodes.
//!
//! ## Where device state lives
//!
//! The plugin keeps its own table, one entry per node that has devices: the
//! node's devices ([`model`]) and, per pod uid, the grants it holds. The
//! table is built from the nodes (annotation `strata.io/devices`, HAMi's
//! register annotation, or the allocatable count) and from the pods placed
//! on them (their assignment annotations, see [`assign`]) and kept current
//! through [`NodeObserver`]. Reserve takes grants, Unreserve gives back
//! exactly what Reserve took (by pod uid), PreBind writes the assignment on
//! the pod through the cluster port.
//!
//! The plugin is in the default profile: a pod that asks for no device
//! resource (and `scoreAllPods` off, the default) returns Skip from
//! PreFilter after a few lookups in its compiled requests, so Filter and
//! Score never run for it. When a binding fails after PreBind, Unreserve
//! gives the grants back; the annotations PreBind wrote stay on the unbound
//! pod (the node agent acts on bound pods only) until the next attempt's
//! PreBind writes every one of them again.
//!
//! The table sits behind an `RwLock<Arc<Table>>`. PreFilter clones the
//! `Arc` into the cycle state, so Filter and Score read it on any thread
//! without a lock; Reserve drops that clone before it writes, so writes
//! (copy-on-write with `Arc::make_mut`) normally copy nothing. All writes
//! happen on the scheduling thread, between or at the end of cycles.
//!
//! ## Invariants
//! - A device is never granted beyond its capacity (memory, compute, share
//!   count, exclusivity): every grant passes `Device::fits` against the
//!   device's use including earlier grants (property-tested).
//! - `Unreserve` releases the grants recorded under the pod's uid on that
//!   node, and only those; it is idempotent.
//! - A pod this scheduler assumed is not accounted by the observer (its
//!   Reserve is coming); every other pod on a node with device asks is
//!   accounted, from its annotation when it has a valid one.
//! - Filter allocates nothing on success for nodes with up to 16 devices.

pub mod alloc;
pub mod args;
pub mod assign;
#[cfg(test)]
mod domains_tests;
pub mod fragmentation;
pub mod model;
pub mod request;
#[cfg(test)]
mod tests;

use crate::common::device_domains::DeviceDomains;
use alloc::{FragCtx, Reject, UsageBuf, plan};
use args::{DevicePolicy, DevicesArgs, KindSpec, NodePolicy};
use fragmentation::{
    Class, Mix, Stats, class_of, fragmentation_after_change, fragmentation_from,
    node_fragmentation, stats,
};
use model::{Grants, Inventory, NodeDevices};
use parking_lot::RwLock;
use request::{PodAsk, asks_devices};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use strata_scheduler::sdk::{
    ActionType, ClusterEventKind, CycleState, EventResource, FilterPlugin, Handle, MAX_NODE_SCORE,
    NodeId, NodeInfo, NodeObserver, NodeRef, NodeScore, Plugin, PluginArgsError, PodInfo,
    PreBindPlugin, PreFilterPlugin, PreFilterResult, PreScorePlugin, ReservePlugin, ResourceId,
    ScorePlugin, Snapshot, Status,
};

/// The plugin's configuration name.
pub const NAME: &str = "Devices";

/// A node's devices with the fragmentation statistics of the current mix.
#[derive(Clone, Debug)]
struct NodeEntry {
    nd: NodeDevices,
    stats: Stats,
    /// Mix version `stats` were computed for.
    version: u64,
}

#[derive(Clone, Default)]
struct Table {
    nodes: Vec<Option<Arc<NodeEntry>>>,
    mix: Option<Arc<[Class]>>,
    mix_version: u64,
}

impl Table {
    fn get(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.get(id.index()).and_then(|e| e.as_deref())
    }
}

/// A what-if change from preemption or nominated pods.
#[derive(Clone, Debug)]
enum WhatIf {
    Removed(Arc<str>),
    Added(Arc<PodInfo>),
}

/// What Reserve took, for PreBind.
#[derive(Clone, Debug)]
struct Reserved {
    node: NodeId,
    annotations: Arc<BTreeMap<String, String>>,
}

/// Per-cycle state.
#[derive(Clone)]
struct CycleData {
    ask: Arc<PodAsk>,
    table: Option<Arc<Table>>,
    mix: Arc<[Class]>,
    mix_version: u64,
    node_policy: NodePolicy,
    device_policy: DevicePolicy,
    cpu: i64,
    mem: i64,
    whatif: SmallVec<[(NodeId, WhatIf); 1]>,
    reserved: Option<Reserved>,
}

impl CycleData {
    fn frag_policy(&self) -> DevicePolicy {
        if self.device_policy == DevicePolicy::Fragmentation
            && self.node_policy != NodePolicy::Fragmentation
        {
            DevicePolicy::Binpack
        } else {
            self.device_policy
        }
    }
}

/// The plugin.
pub struct Devices {
    args: DevicesArgs,
    handle: Handle,
    table: RwLock<Arc<Table>>,
    mix: Mix,
    domains: Arc<DeviceDomains>,
}

impl Devices {
    /// Builds the plugin from resolved args.
    pub fn new(args: DevicesArgs, handle: Handle) -> Devices {
        Devices::with_domains(args, handle, Arc::default())
    }

    /// As [`Devices::new`], keeping the per-domain device aggregates in
    /// `domains` (shared with whoever queries them).
    pub fn with_domains(args: DevicesArgs, handle: Handle, domains: Arc<DeviceDomains>) -> Devices {
        let mix = if args.workload.is_empty() {
            Mix::learned()
        } else {
            Mix::fixed(workload_classes(&args))
        };
        Devices {
            args,
            handle,
            table: RwLock::new(Arc::new(Table::default())),
            mix,
            domains,
        }
    }

    fn kinds(&self) -> &[KindSpec] {
        &self.args.kinds
    }

    /// The device usage of `nd` after placing the cycle's pod with its
    /// fragmentation policy, or `None` when it does not fit.
    fn usage_after(&self, nd: &NodeDevices, cd: &CycleData) -> Option<UsageBuf> {
        let mut used = UsageBuf::new();
        let mut out = Grants::new();
        plan(
            nd,
            &cd.ask,
            self.kinds(),
            cd.frag_policy(),
            None,
            &mut used,
            &mut out,
        )
        .ok()
        .map(|()| used)
    }

    /// Free devices per super-node, cabinet and server, kept current with
    /// every grant and release.
    pub fn domains(&self) -> &Arc<DeviceDomains> {
        &self.domains
    }

    /// Checks every node's accounting (used equals the sum of grants, no
    /// device beyond capacity). For tests and simulations.
    pub fn check_consistency(&self) -> Result<(), String> {
        let t = self.table.read().clone();
        for e in t.nodes.iter().flatten() {
            e.nd.check()?;
        }
        Ok(())
    }

    /// Whether `node` could have devices of a configured kind (cheap).
    fn may_have_devices(&self, node: &NodeInfo) -> bool {
        node.annotations.contains_key(model::DEVICES_ANNOTATION)
            || self.kinds().iter().any(|k| {
                node.allocatable[k.id] > 0
                    || k.hami_register
                        .as_deref()
                        .is_some_and(|a| node.annotations.contains_key(a))
            })
    }

    /// Replaces node `idx`'s entry.
    fn store(&self, idx: usize, entry: Option<NodeEntry>) {
        let mut g = self.table.write();
        let t = Arc::make_mut(&mut g);
        if t.nodes.len() <= idx {
            if entry.is_none() {
                return;
            }
            t.nodes.resize(idx + 1, None);
        }
        t.nodes[idx] = entry.map(|mut e| {
            if let Some(m) = t.mix.clone() {
                stats(&m, &e.nd.devices, &e.nd.used, &mut e.stats);
                e.version = t.mix_version;
            }
            Arc::new(e)
        });
        let nd = t.nodes[idx].as_ref().map(|e| &e.nd);
        self.domains.devices(
            idx as u32,
            nd.map(|nd| Inventory::new(nd, &self.args.kinds)),
        );
    }

    /// Whether `pod` is ours and assumed: its Reserve accounts it.
    fn awaits_reserve(&self, pod: &PodInfo, snap: &Snapshot) -> bool {
        pod.scheduler_name == self.handle.scheduler_name
            && snap.assigned_pod(&pod.uid).is_some_and(|p| p.assumed)
    }

    fn needs_reconcile(&self, nd: &NodeDevices, node: &NodeInfo, snap: &Snapshot) -> bool {
        nd.grants
            .keys()
            .any(|uid| snap.assigned_pod(uid).is_none_or(|p| p.node != node.id))
            || node.pods.iter().any(|p| {
                !nd.grants.contains_key(&p.uid)
                    && asks_devices(p, self.kinds())
                    && !self.awaits_reserve(p, snap)
            })
    }

    /// Brings grants in line with the pods on the node.
    fn reconcile(&self, nd: &mut NodeDevices, node: &NodeInfo, snap: &Snapshot) {
        let gone: Vec<Arc<str>> = nd
            .grants
            .keys()
            .filter(|uid| snap.assigned_pod(uid).is_none_or(|p| p.node != node.id))
            .cloned()
            .collect();
        for uid in gone {
            nd.release(&uid);
        }
        for p in &node.pods {
            if nd.grants.contains_key(&p.uid)
                || !asks_devices(p, self.kinds())
                || self.awaits_reserve(p, snap)
            {
                continue;
            }
            let Ok(ask) = PodAsk::compile(p, &self.args) else {
                continue;
            };
            if ask.is_empty() {
                continue;
            }
            let from_annotation = assign::read_back(p, self.kinds())
                .filter(|held| assign::matches_ask(held, &ask))
                .and_then(|held| alloc::grants_from_ids(nd, &held));
            let grants = match from_annotation {
                Some(g) => Some(g),
                None => {
                    let mut used = UsageBuf::new();
                    let mut out = Grants::new();
                    plan(
                        nd,
                        &ask,
                        self.kinds(),
                        DevicePolicy::Binpack,
                        None,
                        &mut used,
                        &mut out,
                    )
                    .ok()
                    .map(|_| out)
                }
            };
            match grants {
                Some(g) => nd.apply(p.uid.clone(), g),
                None => tracing::debug!(
                    pod = %p.key(),
                    node = %node.name,
                    "pod's devices cannot be accounted: the node's devices are over-committed"
                ),
            }
        }
    }

    /// The node's devices as a what-if evaluation sees them.
    fn view<'a>(&self, cd: &CycleData, e: &'a NodeEntry, id: NodeId) -> Cow<'a, NodeDevices> {
        if !cd.whatif.iter().any(|(n, _)| *n == id) {
            return Cow::Borrowed(&e.nd);
        }
        let mut nd = e.nd.clone();
        for (n, w) in &cd.whatif {
            if *n != id {
                continue;
            }
            match w {
                WhatIf::Removed(uid) => {
                    nd.release(uid);
                }
                WhatIf::Added(p) => {
                    if nd.grants.contains_key(&p.uid) {
                        continue;
                    }
                    if let Ok(ask) = PodAsk::compile(p, &self.args) {
                        let mut used = UsageBuf::new();
                        let mut out = Grants::new();
                        if plan(
                            &nd,
                            &ask,
                            self.kinds(),
                            DevicePolicy::Binpack,
                            None,
                            &mut used,
                            &mut out,
                        )
                        .is_ok()
                        {
                            nd.apply(p.uid.clone(), out);
                        }
                    }
                }
            }
        }
        Cow::Owned(nd)
    }

    fn reject(&self, r: Reject, e: &NodeEntry, node: &NodeInfo) -> Status {
        match r {
            Reject::NodeError => Status::unresolvable(format!(
                "node {} has unreadable device details: {}",
                node.name,
                e.nd.error.as_deref().unwrap_or("unknown error")
            )),
            Reject::Reason(r)
                if r == alloc::REASON_FILTERED || r == alloc::REASON_MEMORY_UNKNOWN =>
            {
                Status::unresolvable(r)
            }
            Reject::Reason(r) if self.kinds().iter().any(|k| k.reason_none == r) => {
                Status::unresolvable(r)
            }
            Reject::Reason(r) => Status::unschedulable(r),
        }
    }

    fn raw_score(&self, cd: &CycleData, node: &NodeInfo) -> i64 {
        let Some(table) = &cd.table else { return 0 };
        let cpu_before = node.free(ResourceId::CPU);
        let mem_before = node.free(ResourceId::MEMORY);
        let cpu_after = cpu_before - cd.cpu;
        let mem_after = mem_before - cd.mem;
        let entry = table.get(node.id);
        match cd.node_policy {
            NodePolicy::None => 0,
            NodePolicy::Fragmentation => {
                let Some(e) = entry else {
                    // No devices: nothing to fragment, and no device
                    // capacity left, so the tie-break sees a tight node. A
                    // cpu-only pod then prefers it to the cpu GPU pods need.
                    let cpu_frac = cpu_free_per_mille(node, cpu_after);
                    return FIT_RANGE - cpu_frac.clamp(0, FIT_RANGE);
                };
                if cd.mix.is_empty() {
                    return 0;
                }
                let nd = &e.nd;
                let cached = e.version == cd.mix_version && e.stats.len() == cd.mix.len();
                let before = if cached {
                    fragmentation_from(&cd.mix, &e.stats, cpu_before, mem_before)
                } else {
                    node_fragmentation(&cd.mix, &nd.devices, &nd.used, cpu_before, mem_before)
                };
                let mut used = UsageBuf::new();
                let after = if cd.ask.is_empty() {
                    if cached {
                        fragmentation_from(&cd.mix, &e.stats, cpu_after, mem_after)
                    } else {
                        node_fragmentation(&cd.mix, &nd.devices, &nd.used, cpu_after, mem_after)
                    }
                } else {
                    let ctx = FragCtx {
                        mix: &cd.mix,
                        stats: cached.then_some(&e.stats[..]),
                        cpu_free_after: cpu_after,
                        mem_free_after: mem_after,
                    };
                    let mut out = Grants::new();
                    if plan(
                        nd,
                        &cd.ask,
                        self.kinds(),
                        cd.frag_policy(),
                        Some(&ctx),
                        &mut used,
                        &mut out,
                    )
                    .is_err()
                    {
                        return i64::MIN / 4;
                    }
                    if out.len() == 1 && cached {
                        let g = out[0].device as usize;
                        fragmentation_after_change(
                            &cd.mix,
                            &e.stats,
                            &nd.devices[g],
                            &nd.used[g],
                            &used[g],
                            cpu_after,
                            mem_after,
                        )
                    } else {
                        node_fragmentation(&cd.mix, &nd.devices, &used, cpu_after, mem_after)
                    }
                };
                // Most placements change no class's fragment (an empty or
                // roomy GPU stays usable for every class), so equal
                // increases are common; the tighter node wins them, as
                // best-fit would pick (least cpu and device capacity left),
                // instead of a random one that spreads the pods.
                let u: &[model::Usage] = if cd.ask.is_empty() { &nd.used } else { &used };
                let cpu_frac = cpu_free_per_mille(node, cpu_after);
                let dev_frac = device_free_per_mille(&nd.devices, u);
                let fit = FIT_RANGE - (cpu_frac + dev_frac).clamp(0, FIT_RANGE);
                ((before - after) * 1000.0).round() as i64 * (FIT_RANGE + 1) + fit
            }
            NodePolicy::BestFit => {
                let cpu_frac = cpu_free_per_mille(node, cpu_after);
                let dev_frac = match entry {
                    None => 0,
                    Some(e) => {
                        let nd = &e.nd;
                        let used;
                        let u: &[model::Usage] = if cd.ask.is_empty() {
                            &nd.used
                        } else {
                            match self.usage_after(nd, cd) {
                                Some(u) => {
                                    used = u;
                                    &used
                                }
                                None => return i64::MIN / 4,
                            }
                        };
                        device_free_per_mille(&nd.devices, u)
                    }
                };
                -(cpu_frac + dev_frac)
            }
            NodePolicy::Binpack | NodePolicy::Spread => {
                let Some(e) = entry else { return 0 };
                let nd = &e.nd;
                let Some(used) = self.usage_after(nd, cd) else {
                    return i64::MIN / 4;
                };
                let mut util = 0i64;
                let mut n = 0i64;
                for (d, u) in nd.devices.iter().zip(&used) {
                    if !cd.ask.containers.iter().any(|c| c.kind == d.kind) {
                        continue;
                    }
                    n += 1;
                    util += (u.cores.min(d.cores) as i64 * 500 / d.cores.max(1) as i64)
                        + (u.memory.min(d.memory) as i64 * 500 / d.memory.max(1) as i64);
                }
                let util = if n == 0 { 0 } else { util / n };
                if cd.node_policy == NodePolicy::Binpack {
                    util
                } else {
                    -util
                }
            }
        }
    }
}

fn workload_classes(args: &DevicesArgs) -> Vec<Class> {
    args.workload
        .iter()
        .map(|w| {
            let (count, pct) = if w.devices > 0 {
                (w.devices, 100)
            } else {
                (1, w.share_percent)
            };
            Class {
                kind: 0,
                count,
                memory: request::MemAsk::Percent(pct),
                cores: pct,
                exclusive: pct >= 100,
                cpu_milli: w.cpu_milli,
                mem_bytes: w.memory,
                weight: w.weight,
            }
        })
        .collect()
}

strata_scheduler::plugin!(Devices: NAME => [PreFilter, Filter, PreScore, Score, Reserve, PreBind, NodeObserver] {
    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![
            ClusterEventKind::new(
                EventResource::Node,
                ActionType::ADD.or(ActionType::UPDATE_NODE),
            ),
            ClusterEventKind::new(EventResource::AssignedPod, ActionType::DELETE),
        ]
    }
});

/// Range of the best-fit tie-break under the fragmentation score: the
/// node's free cpu and free device capacity, each in thousandths.
const FIT_RANGE: i64 = 2000;

impl PreFilterPlugin for Devices {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snap: &Snapshot,
    ) -> PreFilterResult {
        // The common case in the default profile: a pod without devices
        // costs a few lookups in its compiled requests and nothing else.
        if !self.args.score_all_pods && !asks_devices(pod, self.kinds()) {
            return PreFilterResult::skip();
        }
        let ask = match PodAsk::compile(pod, &self.args) {
            Ok(a) => a,
            Err(msg) => return PreFilterResult::status(Status::unresolvable(msg)),
        };
        let node_policy = ask.node_policy.unwrap_or(self.args.node_policy);
        let scores_anyway = self.args.score_all_pods
            && matches!(node_policy, NodePolicy::Fragmentation | NodePolicy::BestFit);
        if ask.is_empty() && !scores_anyway {
            return PreFilterResult::skip();
        }
        let cpu = pod.spec.requests[ResourceId::CPU];
        let mem = pod.spec.requests[ResourceId::MEMORY];
        if let Some(c) = class_of(&ask, cpu, mem) {
            self.mix.observe(&pod.uid, c);
        }
        let (mix, version) = if node_policy == NodePolicy::Fragmentation {
            self.mix.snapshot()
        } else {
            (Arc::from(Vec::new()), 0)
        };
        // A new mix: recompute every node's statistics once.
        if node_policy == NodePolicy::Fragmentation && self.table.read().mix_version != version {
            let mut g = self.table.write();
            let t = Arc::make_mut(&mut g);
            for e in t.nodes.iter_mut().flatten() {
                let e = Arc::make_mut(e);
                stats(&mix, &e.nd.devices, &e.nd.used, &mut e.stats);
                e.version = version;
            }
            t.mix = Some(mix.clone());
            t.mix_version = version;
        }
        let empty = ask.is_empty();
        let device_policy = ask.device_policy.unwrap_or(self.args.device_policy);
        state.insert(CycleData {
            ask: Arc::new(ask),
            table: Some(self.table.read().clone()),
            mix,
            mix_version: version,
            node_policy,
            device_policy,
            cpu,
            mem,
            whatif: SmallVec::new(),
            reserved: None,
        });
        if empty {
            PreFilterResult::skip()
        } else {
            PreFilterResult::ok()
        }
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let Some(cd) = state.get_mut::<CycleData>() {
            cd.whatif
                .push((node.id, WhatIf::Added(Arc::new(other.clone()))));
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let Some(cd) = state.get_mut::<CycleData>() {
            cd.whatif
                .push((node.id, WhatIf::Removed(other.uid.clone())));
        }
        Status::success()
    }
}

impl FilterPlugin for Devices {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(cd) = state.get::<CycleData>() else {
            return Status::success();
        };
        if cd.ask.is_empty() {
            return Status::success();
        }
        let Some(table) = &cd.table else {
            return Status::error("Devices: Filter ran without PreFilter state");
        };
        let Some(e) = table.get(node.id) else {
            let k = cd.ask.containers[0].kind as usize;
            return Status::unresolvable(self.kinds()[k].reason_none);
        };
        let nd = self.view(cd, e, node.id);
        let mut used = UsageBuf::new();
        let mut out = Grants::new();
        let _ = pod;
        match plan(
            &nd,
            &cd.ask,
            self.kinds(),
            DevicePolicy::Binpack,
            None,
            &mut used,
            &mut out,
        ) {
            Ok(()) => Status::success(),
            Err(r) => self.reject(r, e, node),
        }
    }

    /// The verdict depends on the pod and on this plugin's entry for the
    /// node, which changes only together with the node: through the
    /// observer (after the node's generation moved) or in Reserve and
    /// Unreserve (right after the pod was assumed on it, right before it is
    /// forgotten). So equivalent pods may reuse it while the node stands.
    fn is_node_local(&self) -> bool {
        true
    }
}

impl PreScorePlugin for Devices {
    fn pre_score(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        _snap: &Snapshot,
        _feasible: &[NodeId],
    ) -> Status {
        match state.get::<CycleData>() {
            Some(cd) if cd.node_policy != NodePolicy::None && cd.table.is_some() => {
                if cd.ask.is_empty()
                    && !matches!(
                        cd.node_policy,
                        NodePolicy::Fragmentation | NodePolicy::BestFit
                    )
                {
                    Status::skip()
                } else {
                    Status::success()
                }
            }
            _ => Status::skip(),
        }
    }
}

impl ScorePlugin for Devices {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(cd) = state.get::<CycleData>() else {
            return Ok(0);
        };
        Ok(self.raw_score(cd, node))
    }

    fn has_normalize(&self) -> bool {
        true
    }

    /// As Filter's verdict, a node's raw score moves only with the node —
    /// and with the workload mix and the pod's policies, which are the key.
    fn is_node_local(&self) -> bool {
        true
    }

    fn node_local_key(&self, state: &CycleState) -> Option<u64> {
        let cd = state.get::<CycleData>()?;
        if cd.device_policy == DevicePolicy::Random {
            // Seeded by the pod's uid: not shared between pods.
            return None;
        }
        let policy = cd.node_policy as u64 * 16 + cd.device_policy as u64;
        Some(cd.mix_version.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ policy)
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        // Min-max onto 0..=99, and 100 for exactly the best raw score: with
        // thousands of nodes many raw scores share a bucket, but the best
        // placement must never tie with a worse one.
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for s in scores.iter() {
            lo = lo.min(s.score);
            hi = hi.max(s.score);
        }
        for s in scores.iter_mut() {
            s.score = if s.score == hi {
                MAX_NODE_SCORE
            } else {
                ((s.score - lo) as i128 * (MAX_NODE_SCORE - 1) as i128 / (hi - lo) as i128) as i64
            };
        }
        Status::success()
    }
}

impl ReservePlugin for Devices {
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: NodeRef,
        snap: &Snapshot,
    ) -> Status {
        let Some(cd) = state.get_mut::<CycleData>() else {
            return Status::success();
        };
        // Drop the cycle's view first, so the write below copies nothing.
        cd.table = None;
        if cd.ask.is_empty() {
            return Status::success();
        }
        let info = snap.node(node.id);
        let mut g = self.table.write();
        let t = Arc::make_mut(&mut g);
        let mix = t.mix.clone();
        let version = t.mix_version;
        let Some(Some(slot)) = t.nodes.get_mut(node.id.index()) else {
            return Status::unresolvable(format!("node {} has no devices", node.name));
        };
        let e = Arc::make_mut(slot);
        if e.nd.grants.contains_key(&pod.uid) {
            return Status::success();
        }
        // The pod is already assumed on the node: its cpu and memory are
        // counted, exactly as Score counted them as "after".
        let cached =
            e.version == version && e.stats.len() == cd.mix.len() && version == cd.mix_version;
        let ctx = FragCtx {
            mix: &cd.mix,
            stats: cached.then_some(&e.stats[..]),
            cpu_free_after: info.free(ResourceId::CPU),
            mem_free_after: info.free(ResourceId::MEMORY),
        };
        let mut used = UsageBuf::new();
        let mut out = Grants::new();
        if let Err(r) = plan(
            &e.nd,
            &cd.ask,
            &self.args.kinds,
            cd.frag_policy(),
            Some(&ctx),
            &mut used,
            &mut out,
        ) {
            return match r {
                Reject::Reason(r) => Status::unschedulable(r),
                Reject::NodeError => Status::unresolvable(format!(
                    "node {} has unreadable device details",
                    node.name
                )),
            };
        }
        e.nd.apply(pod.uid.clone(), out.clone());
        self.domains
            .devices(node.id.0, Some(Inventory::new(&e.nd, &self.args.kinds)));
        if let Some(m) = &mix {
            stats(m, &e.nd.devices, &e.nd.used, &mut e.stats);
            e.version = version;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ann = assign::annotations(pod, node.name.as_str(), &e.nd, &out, &self.args.kinds, now);
        cd.reserved = Some(Reserved {
            node: node.id,
            annotations: Arc::new(ann),
        });
        Status::success()
    }

    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: NodeRef) {
        if let Some(cd) = state.get_mut::<CycleData>() {
            cd.table = None;
            cd.reserved = None;
        }
        let held = self
            .table
            .read()
            .get(node.id)
            .is_some_and(|e| e.nd.grants.contains_key(&pod.uid));
        if !held {
            return;
        }
        let mut g = self.table.write();
        let t = Arc::make_mut(&mut g);
        let mix = t.mix.clone();
        let version = t.mix_version;
        if let Some(Some(slot)) = t.nodes.get_mut(node.id.index()) {
            let e = Arc::make_mut(slot);
            e.nd.release(&pod.uid);
            self.domains
                .devices(node.id.0, Some(Inventory::new(&e.nd, &self.args.kinds)));
            if let Some(m) = &mix {
                stats(m, &e.nd.devices, &e.nd.used, &mut e.stats);
                e.version = version;
            }
        }
    }
}

#[async_trait::async_trait]
impl PreBindPlugin for Devices {
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
        let Some(r) = state.get::<CycleData>().and_then(|cd| cd.reserved.clone()) else {
            return Status::success();
        };
        if r.node != node.id || r.annotations.is_empty() {
            return Status::success();
        }
        match self
            .handle
            .cluster
            .patch_pod_annotations(pod, &r.annotations)
            .await
        {
            Ok(()) => Status::success(),
            Err(e) => Status::error(format!(
                "writing the device assignment of pod {} (node {}): {e}",
                pod.key(),
                node.name
            )),
        }
    }
}

impl NodeObserver for Devices {
    fn node_changed(&self, node: &NodeInfo, snap: &Snapshot) {
        self.observe_node(node, snap);
        // Place the node in the device aggregates (labels, cordon), after
        // its entry is current.
        let t = self.table.read().clone();
        let nd = t.get(node.id).map(|e| &e.nd);
        if nd.is_some() || self.domains.has_node(node.id.0) {
            self.domains
                .node(node, nd.map(|nd| Inventory::new(nd, &self.args.kinds)));
        }
    }
}

impl Devices {
    /// Keeps node `node`'s entry current (see [`NodeObserver`]).
    fn observe_node(&self, node: &NodeInfo, snap: &Snapshot) {
        let idx = node.id.index();
        let cur: Option<Arc<NodeEntry>> = self.table.read().nodes.get(idx).cloned().flatten();
        if !node.present {
            if cur.is_some() {
                self.store(idx, None);
            }
            return;
        }
        let kinds = self.kinds();
        if cur.is_none() && !self.may_have_devices(node) {
            return;
        }
        let rebuild = cur
            .as_ref()
            .is_none_or(|e| !e.nd.source.matches(node, kinds));
        if !rebuild {
            let Some(e) = &cur else { return };
            if !self.needs_reconcile(&e.nd, node, snap) {
                return;
            }
            let mut nd = e.nd.clone();
            self.reconcile(&mut nd, node, snap);
            self.store(
                idx,
                Some(NodeEntry {
                    nd,
                    stats: Stats::new(),
                    version: 0,
                }),
            );
            return;
        }
        let mut nd = NodeDevices::inventory(node, kinds);
        if nd.devices.is_empty() && nd.error.is_none() {
            if cur.is_some() {
                self.store(idx, None);
            }
            return;
        }
        // Carry over what pods hold, by device identity.
        if let Some(old) = &cur {
            for (uid, grants) in &old.nd.grants {
                let held: Vec<assign::Held> = grants
                    .iter()
                    .filter_map(|g| {
                        let d = old.nd.devices.get(g.device as usize)?;
                        Some((
                            g.container,
                            d.id.to_string(),
                            g.memory,
                            g.cores,
                            g.exclusive,
                        ))
                    })
                    .collect();
                if let Some(gs) = alloc::grants_from_ids(&nd, &held) {
                    nd.apply(uid.clone(), gs);
                }
            }
        }
        self.reconcile(&mut nd, node, snap);
        self.store(
            idx,
            Some(NodeEntry {
                nd,
                stats: Stats::new(),
                version: 0,
            }),
        );
    }
}

/// Registers the plugin so that its device aggregates are kept in
/// `domains` (for example [`crate::Stores::devices`]).
pub fn register(registry: &mut strata_scheduler::sdk::Registry, domains: Arc<DeviceDomains>) {
    registry.register(NAME, move |args, handle| {
        Ok(Arc::new(Devices::with_domains(
            DevicesArgs::parse(args)?,
            handle.clone(),
            domains.clone(),
        )) as Arc<dyn Plugin>)
    });
}

/// Builds the plugin from its args.
pub fn factory(
    args: Option<&serde_json::Value>,
    handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(Devices::new(
        DevicesArgs::parse(args)?,
        handle.clone(),
    )))
}

/// Free cpu left on `node` after the pod (`cpu_after`), per mille of its
/// allocatable: BestFit's cpu measure, also Fragmentation's tie-break.
fn cpu_free_per_mille(node: &NodeInfo, cpu_after: i64) -> i64 {
    cpu_after.max(0) * 1000 / node.allocatable[ResourceId::CPU].max(1)
}

/// Mean free share of the healthy devices under usage `used`, per mille
/// (0 without healthy devices): BestFit's device measure, also
/// Fragmentation's tie-break.
fn device_free_per_mille(devices: &[model::Device], used: &[model::Usage]) -> i64 {
    let healthy = devices.iter().filter(|d| d.healthy).count() as i64;
    if healthy == 0 {
        return 0;
    }
    let free: i64 = devices
        .iter()
        .zip(used)
        .map(|(d, u)| i64::from(d.free_percent(u)))
        .sum();
    free * 10 / healthy
}
