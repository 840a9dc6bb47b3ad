//! PodGroup: gangs and prefill/decode (PD) groups, placed whole against the
//! topology.
//!
//! One plugin, at every extension point a group needs:
//! - **QueueSort** keeps a group's members together in the active queue
//!   (one key per group: priority, then the time the group was first seen);
//!   pods outside groups are ordered exactly as PrioritySort orders them.
//! - **PreEnqueue** holds members back until `minMember` of them exist.
//! - **PreFilter** of the first member to run plans the whole group (which
//!   domain, then which node for every member and subgroup) against the
//!   topology aggregates, keeps the plan, reserves its capacity against
//!   other groups' plans and activates the waiting siblings; every member's
//!   PreFilter then returns its planned node, so Filter runs on one node.
//! - **Reserve/Unreserve** track the members assumed; a member that fails
//!   releases the whole group: every waiting sibling is rejected, the engine
//!   unreserves and forgets them, and the group backs off as one.
//! - **PostFilter** preempts for the whole group when it finds no room
//!   (module `preempt`): victims of strictly lower priority, whole victim
//!   gangs or none, nothing evicted unless every unplaced member then fits.
//!   DefaultPreemption skips members (they are marked in the cycle state).
//!   The preempting member is nominated to its planned node (the engine
//!   nominates one node per pod); the rest of the plan stays here, its
//!   capacity held against other groups' plans and, through **Filter**,
//!   against pods outside groups of lower or equal priority, until the
//!   victims are gone (their deletions requeue the group) or the group's
//!   timeout passes.
//! - **Permit** holds members until `minMember` (and every subgroup's
//!   minimum) are assumed, then allows them all.
//! - **NodeObserver** keeps the topology and the placed members current on
//!   every assume, forget, bind and delete.
//!
//! Groups come from a [`PodGroupStore`] (Strata's `strata.io/v1alpha1`
//! PodGroup and the coscheduling `scheduling.x-k8s.io/v1alpha1` one) or
//! from annotations on the members. A group that is malformed, contradicts
//! itself or can never fit is rejected with an UnschedulableAndUnresolvable
//! status naming the group and the problem; one that only lacks room now is
//! Unschedulable, so PostFilter may preempt for it.
//!
//! No deadlock: a plan is made against free capacity minus other groups'
//! outstanding plans, so two groups never plan onto the same capacity; the
//! one that cannot fit waits whole (no member assumed) until capacity is
//! freed. Plans are dropped on failure, timeout or expiry, so capacity is
//! never held longer than `scheduleTimeoutSeconds`.

mod borrow;
pub mod lws;
mod preempt;
#[cfg(test)]
mod preempt_tests;
mod runtime;
pub mod spec;
pub mod store;
#[cfg(test)]
mod tests;
mod whatif;

pub use spec::{GroupApi, PodGroupSpec, SpecError, SpreadSpec, SubGroupSpec};
pub use store::{GroupKey, GroupPhase, KIND, PodGroupStatus, PodGroupStore, StoreError};
pub use whatif::{WhatIfAnswer, WhatIfCount, WhatIfGroup};

use crate::common::memory_borrow::BorrowLink;
use parking_lot::Mutex;
use runtime::{Lookup, Runtime, quorum};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, CycleState, EventObject, EventResource,
    FilterPlugin, Handle, NodeId, NodeInfo, NodeObserver, NodeRef, PermitPlugin, PermitResult,
    Plugin, PluginArgsError, PodInfo, PodsToActivate, PostFilterContext, PostFilterPlugin,
    PostFilterResult, PreEnqueuePlugin, PreFilterPlugin, PreFilterResult, QueueSortPlugin,
    QueueingHint, ReservePlugin, Snapshot, SortKey, Status,
};

/// The plugin's configuration name.
pub const NAME: &str = "PodGroup";

/// How long members wait at Permit when the group does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// `pluginConfig` args.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodGroupArgs {
    /// Topology level label keys, outermost first. Default:
    /// `strata.io/supernode`, `strata.io/cabinet`, `kubernetes.io/hostname`.
    #[serde(default)]
    pub topology_levels: Option<Vec<String>>,
    /// Permit timeout for groups that set none (seconds, at least 1).
    #[serde(default)]
    pub default_schedule_timeout_seconds: Option<u64>,
}

/// The PodGroup plugin.
pub struct PodGroupPlugin {
    store: PodGroupStore,
    /// Whether some group's preemption plan may hold capacity (pods outside
    /// groups then check it in Filter); cleared when none is left.
    holds: Arc<AtomicBool>,
    rt: Arc<Mutex<Runtime>>,
    handle: Handle,
    /// MemoryPool's figures: a plan must keep its members' borrows.
    borrows: BorrowLink,
}

/// Builds the plugin around `store` (every instance built with the same
/// store shares its state, so several profiles agree on groups).
pub fn factory_with(
    args: Option<&serde_json::Value>,
    handle: &Handle,
    store: &PodGroupStore,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    factory_with_borrows(args, handle, store, &BorrowLink::default())
}

/// [`factory_with`], planning groups with the memory their members borrow
/// as MemoryPool publishes it through `borrows` (see the `borrow` module).
pub fn factory_with_borrows(
    args: Option<&serde_json::Value>,
    handle: &Handle,
    store: &PodGroupStore,
    borrows: &BorrowLink,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    let args: PodGroupArgs = match args {
        None => PodGroupArgs::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| PluginArgsError::new("args", e.to_string()))?,
    };
    let levels: Vec<String> = match args.topology_levels {
        Some(l) => {
            if l.is_empty() {
                return Err(PluginArgsError::new(
                    "topologyLevels",
                    "at least one level is needed",
                ));
            }
            for (i, k) in l.iter().enumerate() {
                if k.is_empty() || l[..i].contains(k) {
                    return Err(PluginArgsError::new(
                        format!("topologyLevels[{i}]"),
                        format!("{k:?}: levels must be distinct, non-empty label keys"),
                    ));
                }
            }
            l
        }
        None => strata_topology::DEFAULT_LEVELS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let timeout = match args.default_schedule_timeout_seconds {
        Some(s) if !(1..=strata_scheduler::config::MAX_SECONDS).contains(&s) => {
            return Err(PluginArgsError::new(
                "defaultScheduleTimeoutSeconds",
                format!(
                    "{s} is outside 1..={} seconds (one year)",
                    strata_scheduler::config::MAX_SECONDS
                ),
            ));
        }
        Some(s) => Duration::from_secs(s),
        None => DEFAULT_TIMEOUT,
    };
    let rt = store
        .runtime
        .get_or_init(|| Arc::new(Mutex::new(Runtime::new(levels.clone(), timeout))))
        .clone();
    if rt.lock().tracker.levels() != levels.as_slice() {
        return Err(PluginArgsError::new(
            "topologyLevels",
            "every profile must use the same topology levels (they share one topology)",
        ));
    }
    let holds = rt.lock().holds.clone();
    handle
        .preemption
        .register(NAME, Arc::new(preempt::GroupClaims));
    Ok(Arc::new(PodGroupPlugin {
        store: store.clone(),
        holds,
        rt,
        handle: handle.clone(),
        borrows: borrows.clone(),
    }))
}

impl PodGroupPlugin {
    /// The store this plugin reads groups from.
    pub fn store(&self) -> &PodGroupStore {
        &self.store
    }

    /// Where would one more group of this shape go, and what would it
    /// displace? Plans against `snap` with the same planner members use,
    /// reserving nothing.
    pub fn what_if(&self, snap: &Snapshot, q: &WhatIfGroup) -> Result<WhatIfAnswer, String> {
        whatif::what_if(&self.rt.lock(), snap, q)
    }

    /// Rejects every waiting member of `key` and drops its plan.
    fn release(&self, rt: &mut Runtime, key: GroupKey, except: &str, message: &str) {
        rt.drop_plan(key);
        if let Some(g) = rt.groups.get_mut(&key) {
            g.wait_started = None;
            g.last_failure = Some(message.to_owned());
            let uids: Vec<Arc<str>> = g
                .reserved_members
                .iter()
                .filter(|u| &***u != except)
                .cloned()
                .collect();
            for uid in uids {
                self.handle.waiting.reject(&uid, NAME, message);
            }
        }
    }

    fn spec_of(&self, rt: &mut Runtime, key: GroupKey, pod: &PodInfo) -> Lookup {
        rt.lookup_spec(&self.store, key, pod)
    }

    /// PreFilter of a pod outside groups: Skip, unless plans made by
    /// preempting hold capacity for groups of its priority or higher; then
    /// Filter keeps it off that capacity (as kube-scheduler counts nominated
    /// pods of equal or higher priority), so what the victims free goes to
    /// the group that evicted them.
    fn pre_filter_outside(&self, state: &mut CycleState, pod: &PodInfo) -> PreFilterResult {
        if !self.holds.load(Ordering::Acquire) {
            return PreFilterResult::skip();
        }
        let rt = self.rt.lock();
        let (any, held) = rt.held_for(pod.priority);
        if !any {
            // Under the lock: a PostFilter setting it again cannot be lost.
            self.holds.store(false, Ordering::Release);
        }
        drop(rt);
        if held.is_empty() {
            return PreFilterResult::skip();
        }
        state.insert(Held(held));
        PreFilterResult::ok()
    }

    /// Gang preemption (see the `preempt` module): victims that let the
    /// whole group be planned, the plan installed and held, and `pod`
    /// nominated to its planned node; or nothing evicted and why.
    fn preempt_for_group(
        &self,
        key: GroupKey,
        pod: &PodInfo,
        ctx: &PostFilterContext<'_>,
    ) -> PostFilterResult {
        let fail = |msg: String| PostFilterResult {
            status: Status::unschedulable(msg),
            ..Default::default()
        };
        let snap = ctx.snapshot;
        let mut rt = self.rt.lock();
        let spec = match self.spec_of(&mut rt, key, pod) {
            Lookup::Found(s) => s,
            _ => return fail(format!("{key} is gone or invalid")),
        };
        let choice = match preempt::find(&rt, key, &spec, pod, snap) {
            preempt::Outcome::Found(c) => c,
            preempt::Outcome::NotEligible(msg) => return fail(msg),
            preempt::Outcome::Impossible(msg) => {
                rt.groups.entry(key).or_default().last_failure = Some(msg.clone());
                rt.publish(&self.store, key, Some(&spec));
                return fail(msg);
            }
        };
        let now = self.handle.clock.now();
        rt.drop_plan(key);
        rt.install(key, &choice.prep, &choice.plan, now);
        let g = rt.groups.get_mut(&key).expect("installed");
        let Some(plan) = g.plan.as_mut() else {
            return fail(format!("{key}: preemption plan was not kept"));
        };
        plan.hold_priority = Some(choice.priority);
        let planned: FxHashSet<u32> = plan.slots.values().map(|s| s.node).collect();
        let Some(node) = plan.slots.get(&pod.uid).map(|s| s.node) else {
            rt.drop_plan(key);
            return fail(format!("{key}: planned without member {}", pod.key()));
        };
        let uids: Vec<Arc<str>> = choice.victims.iter().map(|v| v.uid.clone()).collect();
        g.preemption = Some((uids, now));
        g.last_failure = Some(format!(
            "{key}: preempting {} lower-priority pods to place its members; waiting for them to terminate",
            choice.victims.len()
        ));
        rt.publish(&self.store, key, Some(&spec));
        self.holds.store(true, Ordering::Release);
        drop(rt);
        let clear_nominations = ctx
            .nominated
            .iter()
            .filter(|(p, n)| {
                planned.contains(&n.0)
                    && p.priority < choice.priority
                    && runtime::membership(p) != Some(key)
            })
            .map(|(p, _)| Arc::clone(p))
            .collect();
        let id = NodeId(node);
        PostFilterResult {
            status: Status::success(),
            nominated_node: Some(NodeRef {
                id,
                name: snap.node(id).name,
            }),
            victims: choice.victims,
            clear_nominations,
        }
    }
}

impl PodGroupStore {
    /// As [`PodGroupPlugin::what_if`], for holders of the store (scaling
    /// plugins, tools). Fails when no PodGroup plugin was built with it.
    pub fn what_if(&self, snap: &Snapshot, q: &WhatIfGroup) -> Result<WhatIfAnswer, String> {
        let rt = self
            .runtime
            .get()
            .ok_or("the PodGroup plugin is not enabled")?;
        whatif::what_if(&rt.lock(), snap, q)
    }

    /// How many copies of `q` fit at once (up to `count`), each planned
    /// whole on what the copies before it left free, reserving nothing.
    /// Fails when no PodGroup plugin was built with the store, or `q` is
    /// not a valid group.
    pub fn what_if_count(
        &self,
        snap: &Snapshot,
        q: &WhatIfGroup,
        count: u32,
    ) -> Result<WhatIfCount, String> {
        let rt = self
            .runtime
            .get()
            .ok_or("the PodGroup plugin is not enabled")?;
        whatif::what_if_count(&rt.lock(), snap, q, count)
    }
}

strata_scheduler::plugin!(PodGroupPlugin: NAME => [PreEnqueue, QueueSort, PreFilter, Filter, PostFilter, Reserve, Permit, NodeObserver] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![
            ClusterEventKind::new(EventResource::Custom(KIND), ActionType::ALL),
            ClusterEventKind::new(EventResource::AssignedPod, ActionType::DELETE),
            ClusterEventKind::new(
                EventResource::Node,
                ActionType::ADD
                    .or(ActionType::UPDATE_NODE_ALLOCATABLE)
                    .or(ActionType::UPDATE_NODE_LABEL)
                    .or(ActionType::UPDATE_NODE_TAINT)
                    .or(ActionType::UPDATE_NODE_CONDITION),
            ),
            ClusterEventKind::new(
                EventResource::UnscheduledPod,
                ActionType::ADD.or(ActionType::UPDATE),
            ),
        ]
    }

    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        match (event.resource, event.object) {
            (EventResource::Custom(KIND), EventObject::Named { namespace, name }) => {
                match runtime::membership(pod) {
                    Some(k) if k.namespace == namespace && k.name.as_str() == name => {
                        QueueingHint::Queue
                    }
                    _ => QueueingHint::Skip,
                }
            }
            (
                EventResource::UnscheduledPod,
                EventObject::Pod {
                    new: Some(other), ..
                },
            ) => match (runtime::membership(pod), runtime::membership(other)) {
                (Some(a), Some(b)) if a == b => QueueingHint::Queue,
                _ => QueueingHint::Skip,
            },
            _ => QueueingHint::Queue,
        }
    }
});

impl QueueSortPlugin for PodGroupPlugin {
    fn sort_key(&self, pod: &PodInfo, enqueued_ns: u64) -> SortKey {
        let own = i64::try_from(enqueued_ns).unwrap_or(i64::MAX);
        let Some(key) = runtime::membership(pod) else {
            // Exactly PrioritySort.
            return SortKey {
                primary: -i64::from(pod.priority),
                secondary: own,
                tertiary: 0,
            };
        };
        let ts = {
            let mut rt = self.rt.lock();
            *rt.groups.entry(key).or_default().sort_ts.get_or_insert(own)
        };
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        key.hash(&mut h);
        SortKey {
            primary: -i64::from(pod.priority),
            secondary: ts,
            tertiary: h.finish() | 1,
        }
    }
}

impl PreEnqueuePlugin for PodGroupPlugin {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        let Some(key) = runtime::membership(pod) else {
            return Status::success();
        };
        let mut rt = self.rt.lock();
        rt.apply_forgotten(&self.store);
        let spec = match self.spec_of(&mut rt, key, pod) {
            Lookup::Found(s) => s,
            // Let PreFilter report the problem on the pod.
            Lookup::Invalid(_) => return Status::success(),
            Lookup::Missing => {
                return Status::unresolvable(format!(
                    "{key} not found: waiting for the PodGroup object"
                ));
            }
        };
        let Ok(sub) = spec.subgroup_of(&pod.labels) else {
            return Status::success();
        };
        rt.register(key, pod, sub);
        let (total, per) = rt.counts(key, &spec, true);
        if quorum(&spec, total, &per) {
            return Status::success();
        }
        rt.publish(&self.store, key, Some(&spec));
        Status::unresolvable(format!(
            "{key}: waiting for members: {total} of minMember {} exist{}",
            spec.min_member,
            spec.subgroups
                .iter()
                .zip(per.iter())
                .filter(|(s, n)| **n < s.min_member)
                .map(|(s, n)| format!(", subgroup {} has {n} of {}", s.name, s.min_member))
                .collect::<String>()
        ))
    }
}

impl PreFilterPlugin for PodGroupPlugin {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> PreFilterResult {
        let Some(key) = runtime::membership(pod) else {
            return self.pre_filter_outside(state, pod);
        };
        state.insert(preempt::GroupCycle::default());
        let mut rt = self.rt.lock();
        rt.apply_forgotten(&self.store);
        let spec = match self.spec_of(&mut rt, key, pod) {
            Lookup::Found(s) => s,
            Lookup::Invalid(msg) => {
                rt.groups.entry(key).or_default().invalid = true;
                rt.publish(&self.store, key, None);
                return PreFilterResult::status(Status::unresolvable(format!(
                    "{key} is invalid: {msg}"
                )));
            }
            Lookup::Missing => {
                return PreFilterResult::status(Status::unresolvable(format!("{key} not found")));
            }
        };
        let sub = match spec.subgroup_of(&pod.labels) {
            Ok(s) => s,
            Err(e) => {
                return PreFilterResult::status(Status::unresolvable(format!(
                    "{key}: pod {}: {}",
                    pod.key(),
                    e
                )));
            }
        };
        rt.register(key, pod, sub);
        let now = self.handle.clock.now();
        let timeout = rt.timeout(&spec);
        {
            let g = rt.groups.entry(key).or_default();
            g.invalid = false;
            g.service = spec.spread.as_ref().map(|s| s.service.clone());
        }
        // A preemption in progress: wait, plan kept, until its victims are
        // gone (their deletions requeue the group) or the timeout passes.
        if let Some((victims, started)) = rt.groups[&key].preemption.clone() {
            let left = victims
                .iter()
                .filter(|u| snap.assigned_pod(u).is_some())
                .count();
            if left > 0 && now.saturating_sub(started) <= timeout {
                return PreFilterResult::status(Status::unschedulable(format!(
                    "{key}: waiting for {left} preempted pods to terminate"
                )));
            }
            let g = rt.groups.get_mut(&key).expect("registered");
            g.preemption = None;
            if left > 0 {
                rt.drop_plan(key);
            } else if let Some(p) = g.plan.as_mut() {
                // The plan's members may take their time from now on.
                p.created = now;
            }
        }
        // An expired plan (members never came) holds capacity no longer.
        let (placed_total, placed_per) = rt.counts(key, &spec, false);
        let expired = rt.groups[&key].plan.as_ref().is_some_and(|p| {
            now.saturating_sub(p.created) > timeout && !quorum(&spec, placed_total, &placed_per)
        });
        if expired {
            self.release(
                &mut rt,
                key,
                "",
                &format!("{key}: its members did not all arrive within {timeout:?}"),
            );
        }
        // The planned node, if it still has room.
        if let Some(slot) = rt.groups[&key]
            .plan
            .as_ref()
            .and_then(|p| p.slots.get(&pod.uid))
            .cloned()
        {
            let ok = (slot.node as usize) < snap.node_capacity() && {
                let n = snap.node(NodeId(slot.node));
                n.present
                    && pod
                        .spec
                        .requests
                        .nonzero_ids()
                        .all(|r| n.free(r) >= pod.spec.requests[r])
            };
            if ok {
                return PreFilterResult::nodes(vec![NodeId(slot.node)]);
            }
            rt.drop_plan(key);
        }
        let (known, per) = rt.counts(key, &spec, true);
        if !quorum(&spec, known, &per) {
            return PreFilterResult::status(Status::unresolvable(format!(
                "{key}: waiting for members: {known} of minMember {} exist",
                spec.min_member
            )));
        }
        let borrows = self.borrows.get();
        if let Err(status) = rt.plan_group(key, &spec, snap, now, borrows.as_deref()) {
            if status.code() == strata_scheduler::sdk::Code::Unschedulable {
                // No room now: PostFilter may preempt for the whole group.
                state.insert(preempt::GroupCycle { plan_failed: true });
            }
            let msg = status.message();
            self.release(&mut rt, key, &pod.uid, &msg);
            if status.code() == strata_scheduler::sdk::Code::UnschedulableAndUnresolvable
                && msg.contains("can never be placed")
            {
                rt.groups.entry(key).or_default().invalid = true;
            }
            rt.publish(&self.store, key, Some(&spec));
            return PreFilterResult::status(status);
        }
        let g = &rt.groups[&key];
        let Some(slot) = g.plan.as_ref().and_then(|p| p.slots.get(&pod.uid)).cloned() else {
            return PreFilterResult::status(Status::error(format!(
                "{key}: planned without member {}",
                pod.key()
            )));
        };
        let siblings: Vec<Arc<str>> = g
            .pending
            .keys()
            .filter(|u| ***u != *pod.uid)
            .cloned()
            .collect();
        rt.publish(&self.store, key, Some(&spec));
        drop(rt);
        if !siblings.is_empty() {
            state.insert(PodsToActivate(siblings));
        }
        PreFilterResult::nodes(vec![NodeId(slot.node)])
    }
}

/// Capacity held per node for preempting groups of at least the pod's
/// priority (PreFilter of pods outside groups, read by Filter).
#[derive(Clone, Debug)]
struct Held(FxHashMap<u32, strata_topology::Amounts>);

/// Filter's reason for a node whose free capacity is held.
const HELD: &str = "node capacity is held for a preempting pod group";

impl FilterPlugin for PodGroupPlugin {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(Held(held)) = state.get::<Held>() else {
            return Status::success();
        };
        let Some(h) = held.get(&node.id.0) else {
            return Status::success();
        };
        for r in pod.spec.requests.nonzero_ids() {
            if node.free(r) - h.0[r.index()] < pod.spec.requests[r] {
                return Status::unschedulable(HELD);
            }
        }
        Status::success()
    }
}

impl PostFilterPlugin for PodGroupPlugin {
    fn post_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        ctx: &PostFilterContext<'_>,
    ) -> PostFilterResult {
        let skip = PostFilterResult {
            status: Status::skip(),
            ..Default::default()
        };
        let Some(key) = runtime::membership(pod) else {
            return skip;
        };
        if ctx.diagnosis.pre_filter.is_some() {
            if state
                .get::<preempt::GroupCycle>()
                .is_some_and(|c| c.plan_failed)
            {
                return self.preempt_for_group(key, pod, ctx);
            }
            return skip;
        }
        // The planned node failed a filter the planner does not model
        // (ports, pod affinity...): avoid it and re-plan the group.
        let mut rt = self.rt.lock();
        let node = rt
            .groups
            .get(&key)
            .and_then(|g| g.plan.as_ref())
            .and_then(|p| p.slots.get(&pod.uid))
            .map(|s| s.node);
        if let (Some(n), Some(g)) = (node, rt.groups.get_mut(&key)) {
            g.avoid_nodes.insert(n);
        }
        let why = ctx.diagnosis.message(ctx.snapshot.num_nodes());
        self.release(
            &mut rt,
            key,
            &pod.uid,
            &format!(
                "{key}: member {} did not fit its planned node: {why}",
                pod.key()
            ),
        );
        skip
    }
}

impl ReservePlugin for PodGroupPlugin {
    fn reserve(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _node: NodeRef,
        _snap: &Snapshot,
    ) -> Status {
        let Some(key) = runtime::membership(pod) else {
            return Status::success();
        };
        let now = self.handle.clock.now();
        let mut rt = self.rt.lock();
        let rt = &mut *rt;
        let g = rt.groups.entry(key).or_default();
        g.reserved_members.insert(pod.uid.clone());
        g.wait_started.get_or_insert(now);
        if let Some(slot) = g.plan.as_mut().and_then(|p| p.slots.get_mut(&pod.uid))
            && slot.outstanding
        {
            slot.outstanding = false;
            if let Some(r) = rt.reserved.get_mut(&slot.node) {
                r.sub(&slot.shape);
                if r.is_zero() {
                    rt.reserved.remove(&slot.node);
                }
            }
        }
        Status::success()
    }

    fn unreserve(&self, _state: &mut CycleState, pod: &PodInfo, _node: NodeRef) {
        let Some(key) = runtime::membership(pod) else {
            return;
        };
        let mut rt = self.rt.lock();
        let Some(g) = rt.groups.get_mut(&key) else {
            return;
        };
        if !g.reserved_members.remove(&pod.uid) {
            return;
        }
        // It goes back to the queue: count it as a known member again.
        let sub = g.placed.get(&pod.uid).and_then(|p| p.sub);
        g.pending.insert(
            pod.uid.clone(),
            runtime::Pending {
                pod: Arc::new(pod.clone()),
                sub,
            },
        );
        let spec = match self.spec_of(&mut rt, key, pod) {
            Lookup::Found(s) => s,
            _ => {
                self.release(
                    &mut rt,
                    key,
                    &pod.uid,
                    &format!("{key}: member {} was released", pod.key()),
                );
                return;
            }
        };
        // Still complete without it (it failed after the group was allowed):
        // the others go on; it retries alone.
        let (mut total, mut per) = rt.counts(key, &spec, false);
        if rt.groups[&key].placed.contains_key(&pod.uid) {
            total -= 1;
            if let Some(s) = rt.groups[&key].placed.get(&pod.uid).and_then(|p| p.sub)
                && let Some(c) = per.get_mut(s)
            {
                *c -= 1;
            }
        }
        if quorum(&spec, total, &per) {
            return;
        }
        let msg = format!(
            "{key}: member {} was not placed, so the group is released and backs off",
            pod.key()
        );
        self.release(&mut rt, key, &pod.uid, &msg);
        rt.publish(&self.store, key, Some(&spec));
    }
}

impl PermitPlugin for PodGroupPlugin {
    fn permit(&self, _state: &mut CycleState, pod: &PodInfo, _node: NodeRef) -> PermitResult {
        let Some(key) = runtime::membership(pod) else {
            return PermitResult::allow();
        };
        let mut rt = self.rt.lock();
        let spec = match self.spec_of(&mut rt, key, pod) {
            Lookup::Found(s) => s,
            _ => {
                return PermitResult::reject(Status::unresolvable(format!(
                    "{key} is gone or invalid"
                )));
            }
        };
        let (total, per) = rt.counts(key, &spec, false);
        if quorum(&spec, total, &per) {
            let g = rt.groups.get_mut(&key).expect("counted");
            g.wait_started = None;
            g.last_failure = None;
            let uids: Vec<Arc<str>> = g
                .reserved_members
                .iter()
                .filter(|u| ***u != *pod.uid)
                .cloned()
                .collect();
            rt.publish(&self.store, key, Some(&spec));
            drop(rt);
            for uid in uids {
                self.handle.waiting.allow(&uid, NAME);
            }
            return PermitResult::allow();
        }
        let timeout = rt.timeout(&spec);
        let now = self.handle.clock.now();
        let started = rt.groups[&key].wait_started.unwrap_or(now);
        let left = started
            .saturating_add(timeout)
            .saturating_sub(now)
            .max(Duration::from_millis(1));
        PermitResult::wait(left)
    }
}

impl NodeObserver for PodGroupPlugin {
    fn node_changed(&self, node: &NodeInfo, snap: &Snapshot) {
        self.rt.lock().node_changed(node, snap, &self.store);
    }
}

/// Builds the plugin around a fresh store (for [`crate::registry`]; use
/// [`factory_with`] to share a store with the adapter or simulator).
pub fn factory(
    args: Option<&serde_json::Value>,
    handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    factory_with(args, handle, &PodGroupStore::new())
}
