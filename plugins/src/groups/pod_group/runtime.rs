//! The plugin's working state, shared by every profile's instance: the
//! topology, each group's known members, its plan, and the capacity other
//! groups' plans hold.
//!
//! Invariants:
//! - `reserved[node]` is the sum of the shapes of planned members that are
//!   not yet assumed, over every group's current plan. A plan's reservation
//!   is released member by member at Reserve, and wholly when the plan is
//!   dropped, so a group never holds capacity past its plan.
//! - A member is `pending` (known, not on a node) or `placed` (assumed or
//!   bound, as the engine's node changes report), never both.
//! - Plans are dropped on any member failure, on timeout and on expiry, so
//!   two groups never wait on each other: the second to plan sees the
//!   first's reservations and either fits beside it or waits whole.

use super::borrow;
use super::spec::{GroupApi, PodGroupSpec};
use super::store::{GroupKey, GroupPhase, PodGroupStatus, PodGroupStore};
use crate::common::memory_borrow::BorrowFigures;
use crate::common::topology_placement::{TopologyTracker, amounts, slot_name};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Duration;
use strata_scheduler::sdk::{NodeId, NodeInfo, PodInfo, Snapshot, Status, Sym};
use strata_topology::{
    Amounts, DomainId, GroupRequest, MemberClass, Plan, PlanError, PlanInput, RoleRequest,
};

/// A planned member's place.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub node: u32,
    pub shape: Amounts,
    /// Whether `reserved` still counts it (not yet assumed).
    pub outstanding: bool,
}

/// A group's current plan.
#[derive(Clone, Debug)]
pub(crate) struct GroupPlan {
    pub created: Duration,
    pub domain: DomainId,
    pub slots: FxHashMap<Arc<str>, Slot>,
    /// Set when the plan was made by preempting: the group's priority. Its
    /// outstanding slots are then held against pods of lower or equal
    /// priority too (not only against other groups' plans) while the victims
    /// terminate.
    pub hold_priority: Option<i32>,
}

/// A member not on a node yet.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub pod: Arc<PodInfo>,
    pub sub: Option<usize>,
}

/// A placed member: where it stands and its subgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub bound: bool,
    pub running: bool,
    pub sub: Option<usize>,
}

/// One group's state.
#[derive(Default, Debug)]
pub(crate) struct GroupRt {
    pub sort_ts: Option<i64>,
    pub pending: FxHashMap<Arc<str>, Pending>,
    /// Placed members (assumed or bound).
    pub placed: FxHashMap<Arc<str>, Placed>,
    /// Placed members that are bound.
    pub bound: u32,
    /// Placed members whose pod phase is Running.
    pub running: u32,
    /// Members through Reserve and not unreserved.
    pub reserved_members: FxHashSet<Arc<str>>,
    pub plan: Option<GroupPlan>,
    pub wait_started: Option<Duration>,
    pub last_failure: Option<String>,
    pub avoid_nodes: FxHashSet<u32>,
    pub invalid: bool,
    /// The inline spec from the first member's annotations.
    pub inline: Option<Result<Arc<PodGroupSpec>, String>>,
    /// A LeaderWorkerSet replica's shape (from its first member) and the
    /// spec made from it.
    pub lws: Option<(super::lws::LwsShape, Result<Arc<PodGroupSpec>, String>)>,
    /// The service it spreads from (`spread.service`).
    pub service: Option<String>,
    /// A preemption in progress: the victims' uids and when it began. The
    /// group waits (keeping its plan) until they are gone from the snapshot
    /// or its schedule timeout passes.
    pub preemption: Option<(Vec<Arc<str>>, Duration)>,
}

impl GroupRt {
    /// Node slots the group holds: its placed members' nodes and its plan's.
    pub fn held_nodes(&self, snap: &Snapshot) -> Vec<u32> {
        let mut nodes: Vec<u32> = self
            .placed
            .keys()
            .filter_map(|u| snap.assigned_pod(u))
            .map(|p| p.node.0)
            .collect();
        if let Some(p) = &self.plan {
            nodes.extend(p.slots.values().map(|s| s.node));
        }
        nodes
    }

    /// Members known: pending and placed.
    pub fn known(&self) -> u32 {
        (self.pending.len() + self.placed.len()) as u32
    }
}

/// Whether `counts` (total, per subgroup) meet the group's minimums.
pub(crate) fn quorum(spec: &PodGroupSpec, total: u32, per_sub: &[u32]) -> bool {
    total >= spec.min_member
        && spec
            .subgroups
            .iter()
            .enumerate()
            .all(|(i, s)| per_sub.get(i).copied().unwrap_or(0) >= s.min_member)
}

/// Whether `pod` could run on `node` as far as the planner checks: present,
/// not cordoned, taints tolerated, node name, selector and required node
/// affinity. The engine's filters still run on the planned node.
pub(crate) fn eligible(pod: &PodInfo, node: &NodeInfo) -> bool {
    if !node.present || node.unschedulable {
        return false;
    }
    let s = &pod.spec;
    if s.node_name.is_some_and(|n| n != node.name) {
        return false;
    }
    if !pod.tolerates_hard_taints(node) || !pod.matches_required_node_affinity(node) {
        return false;
    }
    if s.host_ports
        .iter()
        .any(|p| node.used_ports.iter().any(|u| u.conflicts(p)))
    {
        return false;
    }
    true
}

/// Whether members like `pod` exclude each other per node: they use host
/// ports, or repel pods with their own labels on the same host.
pub(crate) fn one_per_node(pod: &PodInfo) -> bool {
    let s = &pod.spec;
    !s.host_ports.is_empty()
        || s.affinity.required_anti.iter().any(|t| {
            t.topology_key.as_str() == "kubernetes.io/hostname"
                && t.selector
                    .as_ref()
                    .is_some_and(|sel| sel.matches(&pod.labels))
        })
}

/// Members alike for planning: same requests and node constraints.
fn class_key(pod: &PodInfo) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    let s = &pod.spec;
    s.requests.hash(&mut h);
    s.node_selector.hash(&mut h);
    s.required_node_affinity.hash(&mut h);
    s.tolerations.hash(&mut h);
    s.node_name.hash(&mut h);
    s.host_ports.hash(&mut h);
    one_per_node(pod).hash(&mut h);
    h.finish()
}

/// Group members placed on one node: uid and group.
pub(crate) type NodeMembers = SmallVec<[(Arc<str>, GroupKey); 2]>;

/// Members of one class being planned: class key, a representative pod,
/// and their uids.
type PlanClass = (u64, Arc<PodInfo>, Vec<Arc<str>>);

/// The shared state.
pub(crate) struct Runtime {
    pub tracker: TopologyTracker,
    pub groups: FxHashMap<GroupKey, GroupRt>,
    /// Group members on each node (uid, group).
    pub node_members: FxHashMap<u32, NodeMembers>,
    pub reserved: FxHashMap<u32, Amounts>,
    pub default_timeout: Duration,
    /// Set when a plan made by preempting may hold capacity; read without
    /// the lock by PreFilter of pods outside groups.
    pub holds: Arc<std::sync::atomic::AtomicBool>,
}

/// What `lookup_spec` found.
pub(crate) enum Lookup {
    Found(Arc<PodGroupSpec>),
    Invalid(String),
    Missing,
}

impl Runtime {
    pub fn new(levels: Vec<String>, default_timeout: Duration) -> Runtime {
        Runtime {
            tracker: TopologyTracker::new(levels),
            groups: FxHashMap::default(),
            node_members: FxHashMap::default(),
            reserved: FxHashMap::default(),
            default_timeout,
            holds: Arc::default(),
        }
    }

    /// Per node, what plans made by preempting still hold (outstanding
    /// members) for groups of priority `priority` or higher.
    pub fn held_for(&self, priority: i32) -> (bool, FxHashMap<u32, Amounts>) {
        let mut any = false;
        let mut out: FxHashMap<u32, Amounts> = FxHashMap::default();
        for g in self.groups.values() {
            let Some(p) = &g.plan else { continue };
            let Some(hp) = p.hold_priority else { continue };
            any = true;
            if hp < priority {
                continue;
            }
            for s in p.slots.values().filter(|s| s.outstanding) {
                out.entry(s.node).or_default().add(&s.shape);
            }
        }
        (any, out)
    }

    /// The group's spec: its object, or its members' annotations.
    pub fn lookup_spec(&mut self, store: &PodGroupStore, key: GroupKey, pod: &PodInfo) -> Lookup {
        let levels = self.tracker.levels().to_vec();
        let checked = |spec: Arc<PodGroupSpec>| match spec.validate(&levels) {
            Ok(()) => Lookup::Found(spec),
            Err(e) => Lookup::Invalid(e.to_string()),
        };
        if let Some(obj) = store.get(&key) {
            return match obj.spec {
                Ok(s) => checked(s),
                Err(e) => Lookup::Invalid(e.to_string()),
            };
        }
        if key.api == GroupApi::LeaderWorkerSet {
            return self.lookup_lws(key, pod, &levels);
        }
        if key.api != GroupApi::Strata {
            return Lookup::Missing;
        }
        let g = self.groups.entry(key).or_default();
        if g.inline.is_none() {
            g.inline = PodGroupSpec::from_annotations(&pod.annotations)
                .map(|r| r.map(Arc::new).map_err(|e| e.to_string()));
        }
        match &g.inline {
            Some(Ok(s)) => checked(s.clone()),
            Some(Err(e)) => Lookup::Invalid(e.clone()),
            None => Lookup::Missing,
        }
    }

    /// A LeaderWorkerSet replica's spec, from `pod`'s metadata: checked on
    /// the pod itself and against the shape its siblings gave (the first
    /// member's, kept until the replica has no member left).
    fn lookup_lws(&mut self, key: GroupKey, pod: &PodInfo, levels: &[String]) -> Lookup {
        use super::lws;
        let (shape, _) = match lws::parse(&pod.labels, &pod.annotations) {
            Ok(s) => s,
            Err(e) => return Lookup::Invalid(format!("pod {}: {e}", pod.key())),
        };
        let g = self.groups.entry(key).or_default();
        // A newer template revision replacing a replica that is not placed:
        // its pending pods are the old revision's (LWS deletes them all
        // and creates the new ones, whose shape may differ), so they go.
        let revision = |l: &strata_scheduler::sdk::Labels| l.get_str(lws::REVISION_LABEL);
        let newer = revision(&pod.labels).is_some_and(|r| {
            g.placed.is_empty()
                && !g.pending.is_empty()
                && g.pending
                    .values()
                    .all(|p| revision(&p.pod.labels) != Some(r))
        });
        if newer && g.lws.as_ref().is_some_and(|(have, _)| *have != shape) {
            g.pending.clear();
        }
        let stale = g.pending.is_empty() && g.placed.is_empty();
        match &g.lws {
            Some((have, _)) if *have == shape => {}
            Some((have, _)) if !stale => {
                return Lookup::Invalid(format!(
                    "pod {} disagrees with the replica's other pods on its LeaderWorkerSet metadata ({}): every pod of a replica must carry the same size, topology and subgroup annotations",
                    pod.key(),
                    shape.difference(have)
                ));
            }
            _ => {
                let spec = shape
                    .check_levels(levels)
                    .and_then(|()| shape.spec())
                    .and_then(|s| s.validate(levels).map(|()| s))
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                g.lws = Some((shape, spec));
            }
        }
        match &g.lws {
            Some((_, Ok(s))) => Lookup::Found(s.clone()),
            Some((_, Err(e))) => Lookup::Invalid(e.clone()),
            None => Lookup::Missing,
        }
    }

    pub fn timeout(&self, spec: &PodGroupSpec) -> Duration {
        spec.schedule_timeout.unwrap_or(self.default_timeout)
    }

    /// Records `pod` as a known member (pending unless already placed).
    pub fn register(&mut self, key: GroupKey, pod: &PodInfo, sub: Option<usize>) {
        let g = self.groups.entry(key).or_default();
        if g.placed.contains_key(&pod.uid) {
            return;
        }
        match g.pending.get_mut(&pod.uid) {
            Some(p) => {
                if !Arc::ptr_eq(&p.pod.spec, &pod.spec) || p.pod.labels != pod.labels {
                    p.pod = Arc::new(pod.clone());
                    p.sub = sub;
                }
            }
            None => {
                // A name is unique in its namespace: a new uid under the
                // name of a pending member means that pod was deleted and
                // created again (a LeaderWorkerSet or StatefulSet replacing
                // its pod), even when its deletion never reached the store.
                g.pending.retain(|_, p| p.pod.name != pod.name);
                g.pending.insert(
                    pod.uid.clone(),
                    Pending {
                        pod: Arc::new(pod.clone()),
                        sub,
                    },
                );
            }
        }
    }

    /// Drops pods the store was told are gone.
    pub fn apply_forgotten(&mut self, store: &PodGroupStore) {
        for uid in store.take_forgotten() {
            for g in self.groups.values_mut() {
                g.pending.remove(&uid);
            }
        }
    }

    /// Releases a group's plan and every reservation it still holds.
    pub fn drop_plan(&mut self, key: GroupKey) {
        let Some(g) = self.groups.get_mut(&key) else {
            return;
        };
        if let Some(plan) = g.plan.take() {
            for s in plan.slots.values() {
                if s.outstanding
                    && let Some(r) = self.reserved.get_mut(&s.node)
                {
                    r.sub(&s.shape);
                    if r.is_zero() {
                        self.reserved.remove(&s.node);
                    }
                }
            }
        }
    }

    /// Member counts (total, per subgroup) among placed members, or among
    /// all known members.
    pub fn counts(&self, key: GroupKey, spec: &PodGroupSpec, known: bool) -> (u32, Vec<u32>) {
        let mut per = vec![0u32; spec.subgroups.len()];
        let Some(g) = self.groups.get(&key) else {
            return (0, per);
        };
        let mut total = 0;
        let mut count = |sub: Option<usize>| {
            total += 1;
            if let Some(i) = sub
                && let Some(c) = per.get_mut(i)
            {
                *c += 1;
            }
        };
        for p in g.placed.values() {
            count(p.sub);
        }
        if known {
            for p in g.pending.values() {
                count(p.sub);
            }
        }
        (total, per)
    }

    /// Publishes the group's status to the store.
    pub fn publish(&self, store: &PodGroupStore, key: GroupKey, spec: Option<&PodGroupSpec>) {
        let Some(g) = self.groups.get(&key) else {
            return;
        };
        let placed = g.placed.len() as u32;
        let min = spec.map(|s| s.min_member).unwrap_or(u32::MAX);
        let running = g.running;
        let phase = if g.invalid {
            GroupPhase::Invalid
        } else if running >= min {
            GroupPhase::Running
        } else if g.bound >= min {
            GroupPhase::Bound
        } else if placed >= min {
            GroupPhase::Scheduled
        } else if g.plan.is_some() {
            GroupPhase::Scheduling
        } else if g.last_failure.is_some() {
            GroupPhase::Unschedulable
        } else {
            GroupPhase::Pending
        };
        let topo = self.tracker.topology();
        store.set_status(
            key,
            PodGroupStatus {
                phase,
                members: g.known(),
                placed,
                bound: g.bound,
                running,
                last_failure: g.last_failure.clone(),
                domain: g
                    .plan
                    .as_ref()
                    .filter(|p| topo.contains_domain(p.domain))
                    .map(|p| topo.domain(p.domain).name()),
            },
        );
    }

    /// Applies an engine node change: topology, and which members are
    /// placed where.
    pub fn node_changed(&mut self, node: &NodeInfo, snap: &Snapshot, store: &PodGroupStore) {
        self.tracker.node_changed(node);
        let id = node.id.0;
        let mut now: SmallVec<[(Arc<str>, GroupKey); 2]> = SmallVec::new();
        for p in &node.pods {
            if let Some(k) = membership(p) {
                now.push((p.uid.clone(), k));
            }
        }
        let before = self.node_members.remove(&id).unwrap_or_default();
        if now.is_empty() && before.is_empty() {
            return;
        }
        let mut touched: SmallVec<[GroupKey; 2]> = SmallVec::new();
        for (uid, k) in &before {
            if !now.iter().any(|(u, _)| u == uid) {
                let g = self.groups.entry(*k).or_default();
                if let Some(p) = g.placed.remove(uid) {
                    g.bound -= p.bound as u32;
                    g.running -= p.running as u32;
                }
                if !touched.contains(k) {
                    touched.push(*k);
                }
            }
        }
        for (uid, k) in &now {
            let placement = snap.assigned_pod(uid);
            let bound = placement.is_some_and(|p| !p.assumed);
            let running = bound && placement.is_some_and(|p| p.pod.running);
            let g = self.groups.entry(*k).or_default();
            let sub = g
                .pending
                .remove(uid)
                .map(|p| p.sub)
                .or_else(|| g.placed.get(uid).map(|p| p.sub));
            let sub = match sub {
                Some(s) => s,
                None => {
                    // Placed before we saw it pending (restart, or bound by
                    // someone else): classify it now.
                    let pod = node.pods.iter().find(|p| &p.uid == uid);
                    match (store.get(k).and_then(|o| o.spec.ok()), pod) {
                        (Some(spec), Some(pod)) => spec.subgroup_of(&pod.labels).ok().flatten(),
                        _ => None,
                    }
                }
            };
            let now_placed = Placed {
                bound,
                running,
                sub,
            };
            let was = g.placed.insert(uid.clone(), now_placed);
            let (was_bound, was_running) = was.map_or((false, false), |p| (p.bound, p.running));
            g.bound = g.bound + bound as u32 - was_bound as u32;
            g.running = g.running + running as u32 - was_running as u32;
            let moved = was.map(|p| (p.bound, p.running)) != Some((bound, running));
            if moved && !touched.contains(k) {
                touched.push(*k);
            }
        }
        if !now.is_empty() {
            self.node_members.insert(id, now);
        }
        for k in touched {
            let spec = store.get(&k).and_then(|o| o.spec.ok());
            let g = self.groups.get(&k);
            let inline = g
                .and_then(|g| g.inline.as_ref())
                .and_then(|r| r.as_ref().ok())
                .or_else(|| {
                    g.and_then(|g| g.lws.as_ref())
                        .and_then(|(_, r)| r.as_ref().ok())
                })
                .cloned();
            self.publish(store, k, spec.as_deref().or(inline.as_deref()));
        }
    }

    /// Plans every pending member of the group not yet in its plan.
    /// Returns an unschedulable status when it cannot: Unschedulable when
    /// there is no room now (preemption may help), UnschedulableAndUnresolvable
    /// when the group can never fit.
    ///
    /// With `borrows` (MemoryPool's figures), a plan must also keep its
    /// members' borrowed memory ([`borrow::check`]): one that does not is
    /// made again without the pools and servers that fall short, a few
    /// times at most, and otherwise not made (Unschedulable, naming the
    /// shortfall).
    pub fn plan_group(
        &mut self,
        key: GroupKey,
        spec: &PodGroupSpec,
        snap: &Snapshot,
        now: Duration,
        borrows: Option<&dyn BorrowFigures>,
    ) -> Result<(), Status> {
        /// Plans made again without what fell short, at most.
        const REPLANS: usize = 4;
        let Some(prep) = self.prepare(key, spec, snap, true)? else {
            return Ok(());
        };
        let avoid_nodes = &self.groups[&key].avoid_nodes;
        let reps = &prep.reps;
        // Remote bytes per request role and class.
        let remote: Vec<Vec<i64>> = reps
            .iter()
            .map(|r| {
                r.iter()
                    .map(|p| borrows.map_or(0, |f| f.remote(p)))
                    .collect()
            })
            .collect();
        let mut excluded = borrow::Excluded::default();
        let mut short: Option<borrow::Short> = None;
        for _ in 0..=REPLANS {
            let eligible_fn = |role: usize, class: usize, node: u32| -> bool {
                if avoid_nodes.contains(&node) || (node as usize) >= snap.node_capacity() {
                    return false;
                }
                if let Some(f) = borrows
                    && !excluded.allows(f, remote[role][class], node)
                {
                    return false;
                }
                eligible(&reps[role][class], snap.node(NodeId(node)))
            };
            let input = PlanInput {
                eligible: &eligible_fn,
                reserved: &self.reserved,
                trust_aggregates: true,
            };
            let topo = self.tracker.topology();
            let req = &prep.req;
            let result = if prep.soft_avoid.is_empty() {
                topo.plan(req, &input)
            } else {
                let mut strict = req.clone();
                strict.avoid = prep.soft_avoid.clone();
                match topo.plan(&strict, &input) {
                    Ok(p) => Ok(p),
                    Err(e) if spec.spread.as_ref().is_some_and(|s| s.required) => Err(e),
                    Err(_) => topo.plan(req, &input),
                }
            };
            let plan = match result {
                Ok(p) => p,
                Err(e) => {
                    let msg = match &short {
                        Some(s) => format!(
                            "{key}: no room for its {} unplaced members{} with their borrowed memory now ({}); waiting for capacity",
                            req.members(),
                            prep.where_(&e),
                            s.message
                        ),
                        None => format!(
                            "{key}: no room for its {} unplaced members{} now; waiting for capacity",
                            req.members(),
                            prep.where_(&e)
                        ),
                    };
                    return Err(Status::unschedulable(msg));
                }
            };
            let Some(fig) = borrows else {
                self.install(key, &prep, &plan, now);
                return Ok(());
            };
            let mut members: Vec<(u32, &PodInfo)> = Vec::new();
            for (i, rp) in plan.roles.iter().enumerate() {
                for (ci, nodes) in rp.classes.iter().enumerate() {
                    members.extend(nodes.iter().map(|n| (*n, &*reps[i][ci])));
                }
            }
            match borrow::check(
                fig,
                &members,
                key.namespace,
                snap,
                &self.reserved,
                &mut excluded,
            ) {
                Ok(()) => {
                    self.install(key, &prep, &plan, now);
                    return Ok(());
                }
                Err(s) => {
                    let replan = s.replan;
                    short.get_or_insert(s);
                    if !replan {
                        break;
                    }
                }
            }
        }
        let why = short.map_or_else(String::new, |s| s.message);
        Err(Status::unschedulable(format!(
            "{key}: its {} unplaced members' borrowed memory does not fit: {why}; waiting for capacity",
            prep.req.members()
        )))
    }

    /// The planner's request for every pending member of the group not yet
    /// in its plan (`None`: nothing to plan), after the checks that reject a
    /// group early (never fits, a subgroup never fits and, with `check_free`,
    /// minResources against the cluster's free capacity — preemption skips
    /// that one, as evicting may free what is missing).
    pub fn prepare(
        &self,
        key: GroupKey,
        spec: &PodGroupSpec,
        snap: &Snapshot,
        check_free: bool,
    ) -> Result<Option<Prepared>, Status> {
        let levels = self.tracker.levels().to_vec();
        let level_of = |k: &Option<String>| {
            k.as_ref()
                .and_then(|k| levels.iter().position(|l| l == k))
                .map(|i| i + 1)
        };
        let req_level = level_of(&spec.required_level);
        let Some(g) = self.groups.get(&key) else {
            return Err(Status::unschedulable(format!("{key}: no member is known")));
        };
        // Members to plan, by role and class.
        let mut todo: Vec<&Pending> = g
            .pending
            .iter()
            .filter(|(u, _)| g.plan.as_ref().is_none_or(|p| !p.slots.contains_key(*u)))
            .map(|(_, p)| p)
            .collect();
        if todo.is_empty() {
            return Ok(None);
        }
        todo.sort_by(|a, b| a.pod.uid.cmp(&b.pod.uid));
        let nroles = spec.subgroups.len() + 1;
        let role_of = |sub: Option<usize>| sub.unwrap_or(spec.subgroups.len());
        // role -> class key -> (representative, uids)
        let mut classes: Vec<Vec<PlanClass>> = vec![Vec::new(); nroles];
        for p in &todo {
            let r = role_of(p.sub);
            let ck = class_key(&p.pod);
            match classes[r].iter_mut().find(|(k, _, _)| *k == ck) {
                Some(c) => c.2.push(p.pod.uid.clone()),
                None => classes[r].push((ck, p.pod.clone(), vec![p.pod.uid.clone()])),
            }
        }
        let topo = self.tracker.topology();
        // Keep a partly placed group inside the domain it already uses.
        let mut within = g
            .plan
            .as_ref()
            .map(|p| p.domain)
            .filter(|d| topo.contains_domain(*d));
        if within.is_none()
            && let Some(l) = req_level
            && let Some(uid) = g.placed.keys().next()
            && let Some(pl) = snap.assigned_pod(uid)
        {
            within = topo.ancestor_at(pl.node.0, l);
        }
        let mut req = GroupRequest {
            required_level: req_level,
            preferred_level: level_of(&spec.preferred_level),
            roles: Vec::new(),
            within,
            avoid: Vec::new(),
        };
        let mut role_index: Vec<usize> = Vec::new();
        for (r, cls) in classes.iter().enumerate() {
            if cls.is_empty() {
                continue;
            }
            role_index.push(r);
            req.roles.push(RoleRequest {
                required_level: spec
                    .subgroups
                    .get(r)
                    .and_then(|s| level_of(&s.required_level)),
                preferred_level: spec
                    .subgroups
                    .get(r)
                    .and_then(|s| level_of(&s.preferred_level)),
                classes: cls
                    .iter()
                    .map(|(_, rep, uids)| MemberClass {
                        shape: amounts(&rep.spec.requests),
                        count: uids.len() as u32,
                        max_per_node: one_per_node(rep).then_some(1),
                    })
                    .collect(),
            });
        }
        let level_name = |l: usize| {
            if l == 0 {
                "cluster".to_owned()
            } else {
                levels[l - 1].clone()
            }
        };
        // Never fits: reject early with the numbers.
        if g.placed.is_empty()
            && let Err(PlanError::NeverFits {
                level,
                slot,
                need,
                best,
            }) = topo.check_ever_fits(&req)
        {
            return Err(Status::unresolvable(format!(
                "{key} can never be placed: its {} members need {need} {} within one {} but the largest offers {best}",
                req.members(),
                slot_name(slot),
                level_name(level)
            )));
        }
        for (i, role) in req.roles.iter().enumerate() {
            if let Some(l) = role.required_level {
                let alone = GroupRequest {
                    required_level: Some(l),
                    roles: vec![role.clone()],
                    within: req.within,
                    ..Default::default()
                };
                if let Err(PlanError::NeverFits {
                    slot, need, best, ..
                }) = topo.check_ever_fits(&alone)
                {
                    let name = spec
                        .subgroups
                        .get(role_index[i])
                        .map(|s| s.name.as_str())
                        .unwrap_or("");
                    return Err(Status::unresolvable(format!(
                        "{key}: subgroup {name:?} can never be placed: it needs {need} {} within one {} but the largest offers {best}",
                        slot_name(slot),
                        level_name(l)
                    )));
                }
            }
        }
        if check_free && let Some(min) = &spec.min_resources {
            let free = topo.domain(topo.root()).agg.free;
            let need = amounts(min);
            if !free.covers(&need)
                && let Some(slot) = need.nonzero().find(|s| free[*s] < need[*s])
            {
                return Err(Status::unschedulable(format!(
                    "{key}: minResources asks for {} {} free but the cluster has {}",
                    need[slot],
                    slot_name(slot),
                    free[slot]
                )));
            }
        }
        // Spread from other groups of the same service.
        let mut soft_avoid: Vec<DomainId> = Vec::new();
        if let Some(sp) = &spec.spread
            && let Some(l) = level_of(&Some(sp.level.clone()))
        {
            for (k, other) in &self.groups {
                if *k == key || k.namespace != key.namespace {
                    continue;
                }
                if other.service.as_deref() != Some(sp.service.as_str()) {
                    continue;
                }
                for n in other.held_nodes(snap) {
                    if let Some(d) = topo.ancestor_at(n, l)
                        && !soft_avoid.contains(&d)
                    {
                        soft_avoid.push(d);
                    }
                }
            }
        }
        let reps: Vec<Vec<Arc<PodInfo>>> = role_index
            .iter()
            .map(|r| classes[*r].iter().map(|(_, rep, _)| rep.clone()).collect())
            .collect();
        Ok(Some(Prepared {
            req,
            classes,
            role_index,
            reps,
            soft_avoid,
            levels,
        }))
    }

    /// Gives every member of `prep` its node in `plan` and reserves the
    /// capacity (extending the group's plan when it has one).
    pub fn install(&mut self, key: GroupKey, prep: &Prepared, plan: &Plan, now: Duration) {
        let mut slots: Vec<(Arc<str>, Slot)> = Vec::new();
        for (i, rp) in plan.roles.iter().enumerate() {
            let r = prep.role_index[i];
            for (ci, nodes) in rp.classes.iter().enumerate() {
                let (_, rep, uids) = &prep.classes[r][ci];
                let shape = amounts(&rep.spec.requests);
                for (uid, n) in uids.iter().zip(nodes) {
                    slots.push((
                        uid.clone(),
                        Slot {
                            node: *n,
                            shape,
                            outstanding: true,
                        },
                    ));
                }
            }
        }
        for (_, s) in &slots {
            self.reserved.entry(s.node).or_default().add(&s.shape);
        }
        let g = self.groups.entry(key).or_default();
        match &mut g.plan {
            Some(p) => p.slots.extend(slots),
            None => {
                g.plan = Some(GroupPlan {
                    created: now,
                    domain: plan.domain,
                    slots: slots.into_iter().collect(),
                    hold_priority: None,
                })
            }
        }
        g.last_failure = None;
    }
}

/// A group's planner request and what is needed to turn its plan into
/// member slots.
pub(crate) struct Prepared {
    /// The request (roles and classes of the unplanned members).
    pub req: GroupRequest,
    /// Per role (subgroup index; the last is "no subgroup"): its classes.
    classes: Vec<Vec<PlanClass>>,
    /// The role of each request role.
    role_index: Vec<usize>,
    /// A representative pod per request role and class.
    pub reps: Vec<Vec<Arc<PodInfo>>>,
    /// Domains of other groups of the same service (spread).
    pub soft_avoid: Vec<DomainId>,
    levels: Vec<String>,
}

impl Prepared {
    /// " in one <level>" for a NoRoom error at a level below the cluster.
    pub fn where_(&self, e: &PlanError) -> String {
        match e {
            PlanError::NoRoom { level, .. } if *level > 0 => {
                format!(" in one {}", self.levels[*level - 1])
            }
            _ => String::new(),
        }
    }
}

/// The group `pod` belongs to, given the two label keys.
/// The two group label keys, interned once.
fn group_labels() -> (Sym, Sym) {
    static LABELS: std::sync::OnceLock<(Sym, Sym)> = std::sync::OnceLock::new();
    *LABELS.get_or_init(|| {
        (
            Sym::new(super::spec::GROUP_LABEL),
            Sym::new(super::spec::COSCHEDULING_LABEL),
        )
    })
}

/// The group `pod` belongs to: by Strata's or coscheduling's label, else
/// by its LeaderWorkerSet replica (an explicit group label wins).
pub(crate) fn membership(pod: &PodInfo) -> Option<GroupKey> {
    let (group_label, cosched_label) = group_labels();
    if let Some(n) = pod.labels.get(group_label) {
        return Some(GroupKey {
            api: GroupApi::Strata,
            namespace: pod.namespace,
            name: n,
        });
    }
    if let Some(n) = pod.labels.get(cosched_label) {
        return Some(GroupKey {
            api: GroupApi::Coscheduling,
            namespace: pod.namespace,
            name: n,
        });
    }
    super::lws::replica_of(&pod.labels).map(|n| GroupKey {
        api: GroupApi::LeaderWorkerSet,
        namespace: pod.namespace,
        name: n,
    })
}
