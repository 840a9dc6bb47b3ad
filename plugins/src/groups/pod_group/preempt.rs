//! Gang preemption: a group preempts as a whole, or not at all.
//!
//! kube-scheduler preempts for one pod at a time. For a gang that is both
//! wasteful and harmful: evicting room for one member of a group that still
//! cannot be placed whole only churns, and evicting one member of another
//! gang breaks that gang. So a member of a group never preempts alone
//! (DefaultPreemption skips pods this plugin marked in the cycle state, see
//! [`preempts_as_group`]); when the group cannot be planned, PodGroup's
//! PostFilter looks for a set of victims that lets the planner place every
//! unplaced member at once, honouring the group's required level and its
//! subgroups, and evicts nothing unless it finds one.
//!
//! How victims are found (all of it a what-if: the topology is not touched):
//! - **Who may go.** Pods of strictly lower priority than the group (the
//!   lowest priority among its unplaced members), bound, not terminal.
//!   A member of another group is a victim only together with every member
//!   of its group that is on a node (a *unit*); a group with a member of equal
//!   or higher priority, or with a member only assumed (its binding cycle is
//!   running), is not touched. Pods of the group itself are never victims.
//!   A group whose members ask for `preemptionPolicy: Never` preempts nothing.
//! - **Where.** Domains of the group's required level (the whole cluster
//!   when it has none; the domain it already uses when partly placed) whose
//!   free capacity plus every unit's requests could cover the group are
//!   candidates, those missing the least first, at most [`MAX_DOMAINS`].
//! - **Which.** In each candidate domain the planner runs with every unit's
//!   requests given back (negative reservations, so aggregates cannot prune
//!   and only the domain's nodes are scanned). On each planned node units are
//!   then taken, budget-keeping ones first and lowest priority first, until the
//!   members planned there fit. Finally, as kube-scheduler's reprieve, each
//!   chosen unit (most important first, budget-breaking ones before the
//!   others) is given back if the group can still be planned without it.
//!   PodDisruptionBudgets are counted with DefaultPreemption's rule.
//! - **Choice.** Domains are compared with DefaultPreemption's node criteria
//!   ([`crate::common::preemption::cost_key`]): fewest budget violations,
//!   lowest most-important victim, lowest priority sum, fewest victims.
//!
//! When even evicting every unit leaves no room, nothing is evicted and the
//! group is told why ("cannot fit even after preempting every lower-priority
//! pod"). Otherwise the caller installs the plan found (its capacity held, see
//! `GroupPlan::hold_priority`), nominates the preempting member to its
//! planned node and records the victims; the group waits until they are gone
//! (their deletions requeue it) and then binds on its plan.
//!
//! Approximations: host ports and inter-pod rules are not simulated (the
//! planner does not model them; the engine's filters still run on the planned
//! nodes); PodDisruptionBudgets are counted once over all candidates, not per
//! domain; the reprieve pass stops after [`REPRIEVE_NODE_BUDGET`] node
//! visits, so a large domain may keep a victim it could have spared; only
//! the [`MAX_DOMAINS`] most promising domains are tried, so "cannot fit"
//! may be reported although a less promising domain could have helped.
//! A victim gang's pending (not yet placed) members are left alone: they
//! hold nothing, and may be placed again later.

use super::runtime::{Prepared, Runtime, eligible};
use super::spec::PodGroupSpec;
use super::store::GroupKey;
use crate::common::preemption::{CostKey, cost_key, more_important, split_by_pdb, start_ms};
use crate::common::topology_placement::amounts;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use strata_scheduler::model::PreemptionPolicy;
use strata_scheduler::sdk::{CycleState, NodeId, PodInfo, PreemptionClaimant, Snapshot};
use strata_topology::{Amounts, DomainId, GroupRequest, Plan, PlanInput};

/// At most this many candidate domains are evaluated.
pub(crate) const MAX_DOMAINS: usize = 16;
/// The reprieve pass stops re-planning once the re-plans have looked at this
/// many nodes in total (each re-plan scans its domain's nodes).
pub(crate) const REPRIEVE_NODE_BUDGET: u64 = 2_000_000;

/// Put in the cycle state by PodGroup's PreFilter for every member of a
/// group it handles: its preemption is the group's.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupCycle {
    /// The group could not be planned for lack of room now: PostFilter may
    /// preempt for it.
    pub plan_failed: bool,
}

/// PodGroup's preemption claims, registered on the scheduler's
/// [`PreemptionClaims`](strata_scheduler::sdk::PreemptionClaims) by
/// its factory.
pub(crate) struct GroupClaims;

impl PreemptionClaimant for GroupClaims {
    /// A member of a group PodGroup handles (PreFilter put [`GroupCycle`]
    /// in its state): its preemption is the group's, for the whole group or
    /// not at all; evicting pods for this member alone would churn.
    fn claims_preemptor(&self, state: &CycleState, _pod: &PodInfo) -> bool {
        state.get::<GroupCycle>().is_some()
    }

    /// A pod of a group (either API's label) is only ever evicted together
    /// with its whole group, by a preempting group: a lone pod never breaks
    /// a gang.
    fn claims_victim(&self, pod: &PodInfo) -> bool {
        super::runtime::membership(pod).is_some()
    }
}

/// Pods evicted together: a lone pod, or every placed member of a group.
#[derive(Debug)]
struct Unit {
    pods: Vec<Arc<PodInfo>>,
    /// Requests per node.
    nodes: Vec<(u32, Amounts)>,
    /// Whether evicting it breaks a PodDisruptionBudget.
    violating: bool,
    /// Its most important pod's priority.
    priority: i32,
    /// Its most important pod's start (for ordering).
    start: i64,
}

/// What the search found.
pub(crate) enum Outcome {
    /// The group may not preempt (policy, nothing to plan).
    NotEligible(String),
    /// Even with every lower-priority pod gone the group does not fit.
    Impossible(String),
    /// Evict `victims`, then the group fits as `plan`.
    Found(Box<Choice>),
}

/// A preemption to carry out.
pub(crate) struct Choice {
    /// The group's priority.
    pub priority: i32,
    /// The request planned.
    pub prep: Prepared,
    /// Where the members go once the victims are gone.
    pub plan: Plan,
    /// Whom to evict (whole units).
    pub victims: Vec<Arc<PodInfo>>,
}

/// The group's priority and whether it may preempt: the lowest priority
/// among `pod` and the group's unplaced members; `Never` on any of them
/// forbids preemption.
fn group_priority(rt: &Runtime, key: GroupKey, pod: &PodInfo) -> Result<i32, String> {
    let mut prio = pod.priority;
    let mut never = pod.spec.preemption_policy == PreemptionPolicy::Never;
    if let Some(g) = rt.groups.get(&key) {
        for p in g.pending.values() {
            prio = prio.min(p.pod.priority);
            never |= p.pod.spec.preemption_policy == PreemptionPolicy::Never;
        }
    }
    if never {
        return Err(format!(
            "{key}: not eligible to preempt due to preemptionPolicy=Never"
        ));
    }
    Ok(prio)
}

/// Every unit of pods below `prio` that may be evicted, with the budgets
/// applied.
fn units(key: GroupKey, prio: i32, snap: &Snapshot) -> Vec<Unit> {
    let mut lone: Vec<Arc<PodInfo>> = Vec::new();
    let mut groups: FxHashMap<GroupKey, (bool, Vec<Arc<PodInfo>>)> = FxHashMap::default();
    for n in snap.nodes() {
        for p in &n.pods {
            if p.terminal {
                continue;
            }
            let assumed = snap.assigned_pod(&p.uid).is_none_or(|a| a.assumed);
            match super::runtime::membership(p) {
                Some(k) if k == key => {}
                Some(k) => {
                    let e = groups.entry(k).or_insert((true, Vec::new()));
                    e.0 &= p.priority < prio && !assumed;
                    e.1.push(p.clone());
                }
                None if p.priority < prio && !assumed => lone.push(p.clone()),
                None => {}
            }
        }
    }
    let mut out: Vec<Vec<Arc<PodInfo>>> = lone.into_iter().map(|p| vec![p]).collect();
    out.extend(groups.into_values().filter(|(ok, _)| *ok).map(|(_, v)| v));
    // Budgets: most important first, as DefaultPreemption counts them.
    let mut all: Vec<Arc<PodInfo>> = out.iter().flatten().cloned().collect();
    all.sort_by(|a, b| more_important(a, b));
    let pdbs: Vec<_> = snap
        .pdbs()
        .iter()
        .filter(|p| p.selector.as_ref().is_some_and(|s| !s.is_empty()))
        .collect();
    let (violating, _) = split_by_pdb(all, &pdbs);
    let violating: FxHashSet<Arc<str>> = violating.into_iter().map(|p| p.uid.clone()).collect();
    out.into_iter()
        .map(|mut pods| {
            pods.sort_by(|a, b| more_important(a, b));
            let mut nodes: Vec<(u32, Amounts)> = Vec::new();
            for p in &pods {
                let Some(at) = snap.assigned_pod(&p.uid) else {
                    continue;
                };
                let a = amounts(&p.spec.requests);
                match nodes.iter_mut().find(|(n, _)| *n == at.node.0) {
                    Some((_, v)) => v.add(&a),
                    None => nodes.push((at.node.0, a)),
                }
            }
            Unit {
                violating: pods.iter().any(|p| violating.contains(&p.uid)),
                priority: pods[0].priority,
                start: start_ms(&pods[0]),
                nodes,
                pods,
            }
        })
        .collect()
}

/// `reserved` with the requests of `units` (indices into `all`) given back.
fn freed<'a>(
    reserved: &FxHashMap<u32, Amounts>,
    all: &[Unit],
    units: impl Iterator<Item = &'a usize>,
) -> FxHashMap<u32, Amounts> {
    let mut r = reserved.clone();
    for &u in units {
        for (n, a) in &all[u].nodes {
            r.entry(*n).or_default().sub(a);
        }
    }
    r
}

/// Finds the victims that let the group's unplaced members be planned.
pub(crate) fn find(
    rt: &Runtime,
    key: GroupKey,
    spec: &PodGroupSpec,
    pod: &PodInfo,
    snap: &Snapshot,
) -> Outcome {
    let prio = match group_priority(rt, key, pod) {
        Ok(p) => p,
        Err(m) => return Outcome::NotEligible(m),
    };
    // Cheap first: without a lower-priority pod there is nothing to do (the
    // common case of a group waiting for capacity among equals).
    if !snap
        .nodes()
        .any(|n| n.pods.iter().any(|p| p.priority < prio && !p.terminal))
    {
        return Outcome::NotEligible(format!(
            "{key}: no pod of lower priority than {prio} to preempt"
        ));
    }
    let prep = match rt.prepare(key, spec, snap, false) {
        Ok(Some(p)) => p,
        Ok(None) => return Outcome::NotEligible(format!("{key}: no member left to plan")),
        Err(s) => return Outcome::NotEligible(s.message()),
    };
    let impossible = |why: String| {
        Outcome::Impossible(format!(
            "{key} cannot fit even after preempting every lower-priority pod (below priority {prio}): {why}"
        ))
    };
    let all = units(key, prio, snap);
    if all.is_empty() {
        return impossible(
            "every one belongs to a group with a member that may not be preempted now".into(),
        );
    }
    let topo = rt.tracker.topology();
    let mut req = prep.req.clone();
    if spec.spread.as_ref().is_some_and(|s| s.required) {
        req.avoid = prep.soft_avoid.clone();
    }
    let level = req.required_level.unwrap_or(0);
    let under = req.within.unwrap_or(topo.root());
    let domains = if topo.domain(under).level >= level {
        vec![under]
    } else {
        topo.domains_at(level, under)
    };
    // Upper bound per domain: free now, minus reservations, plus every unit.
    let total = req.total();
    let mut bound: FxHashMap<DomainId, Amounts> = FxHashMap::default();
    let dom_of = |n: u32| {
        if level == 0 {
            Some(under)
        } else {
            topo.ancestor_at(n, level)
        }
    };
    for u in &all {
        for (n, a) in &u.nodes {
            if let Some(d) = dom_of(*n) {
                bound.entry(d).or_default().add(a);
            }
        }
    }
    for (n, a) in &rt.reserved {
        if let Some(d) = dom_of(*n) {
            bound.entry(d).or_default().sub(a);
        }
    }
    let mut cands: Vec<(i64, DomainId)> = domains
        .into_iter()
        .filter_map(|d| {
            let extra = bound.get(&d)?;
            let now = topo.domain(d).agg.free;
            let mut with = now;
            with.add(extra);
            if !with.covers(&total) {
                return None;
            }
            // What is missing now, relative to the need, summed over slots.
            let missing: i64 = total
                .nonzero()
                .map(|s| (total[s] - now[s]).max(0).saturating_mul(1000) / total[s].max(1))
                .sum();
            Some((missing, d))
        })
        .collect();
    if cands.is_empty() {
        return impossible(format!(
            "no {} could hold its {} unplaced members",
            level_label(rt, level),
            req.members()
        ));
    }
    cands.sort_unstable();
    cands.truncate(MAX_DOMAINS);

    let reps = &prep.reps;
    let avoid_nodes = rt.groups.get(&key).map(|g| &g.avoid_nodes);
    let elig = |role: usize, class: usize, node: u32| -> bool {
        if avoid_nodes.is_some_and(|a| a.contains(&node)) || (node as usize) >= snap.node_capacity()
        {
            return false;
        }
        eligible(&reps[role][class], snap.node(NodeId(node)))
    };
    let mut by_node: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
    for (i, u) in all.iter().enumerate() {
        for (n, _) in &u.nodes {
            by_node.entry(*n).or_default().push(i);
        }
    }
    let everyone: Vec<usize> = (0..all.len()).collect();
    let freed_all = freed(&rt.reserved, &all, everyone.iter());
    let mut budget = REPRIEVE_NODE_BUDGET;
    let mut best: Option<(CostKey, Plan, Vec<usize>)> = None;
    let mut first_err: Option<String> = None;
    for (_, d) in cands {
        let mut r = req.clone();
        if level > 0 {
            r.within = Some(d);
        }
        let plan_with = |reserved: &FxHashMap<u32, Amounts>| {
            topo.plan(
                &r,
                &PlanInput {
                    eligible: &elig,
                    reserved,
                    trust_aggregates: false,
                },
            )
        };
        let mut plan = match plan_with(&freed_all) {
            Ok(p) => p,
            Err(e) => {
                first_err.get_or_insert_with(|| format!("no room{}", prep.where_(&e)));
                continue;
            }
        };
        let Some(mut chosen) = pick(rt, &r, &all, &by_node, &plan) else {
            continue;
        };
        // Reprieve: give back whoever the group can do without.
        let mut order = chosen.clone();
        order.sort_by(|a, b| {
            let (a, b) = (&all[*a], &all[*b]);
            b.violating
                .cmp(&a.violating)
                .then(b.priority.cmp(&a.priority))
                .then(a.start.cmp(&b.start))
        });
        let visits = u64::from(topo.domain(r.within.unwrap_or(d)).agg.nodes).max(1);
        for u in order {
            if budget < visits {
                break;
            }
            budget -= visits;
            let without = freed(&rt.reserved, &all, chosen.iter().filter(|c| **c != u));
            if let Ok(p) = plan_with(&without) {
                plan = p;
                chosen.retain(|c| *c != u);
            }
        }
        let pods: Vec<Arc<PodInfo>> = chosen
            .iter()
            .flat_map(|u| all[*u].pods.iter().cloned())
            .collect();
        let violations = chosen
            .iter()
            .filter(|u| all[**u].violating)
            .map(|u| all[*u].pods.len())
            .sum();
        let cost = cost_key(&pods, violations);
        if best.as_ref().is_none_or(|(c, _, _)| cost < *c) {
            best = Some((cost, plan, chosen));
        }
    }
    let Some((_, plan, chosen)) = best else {
        return impossible(first_err.unwrap_or_else(|| "no room".into()));
    };
    let mut victims: Vec<Arc<PodInfo>> = chosen
        .iter()
        .flat_map(|u| all[*u].pods.iter().cloned())
        .collect();
    victims.sort_by(|a, b| more_important(a, b));
    Outcome::Found(Box::new(Choice {
        priority: prio,
        prep,
        plan,
        victims,
    }))
}

/// The name of `level` for messages.
fn level_label(rt: &Runtime, level: usize) -> String {
    if level == 0 {
        "cluster".to_owned()
    } else {
        rt.tracker.levels()[level - 1].clone()
    }
}

/// On each node of `plan`, takes units until the members planned there fit:
/// budget-keeping units first, then lowest priority, then fewest pods.
/// `None` when a node cannot be cleared (the plan counted on more than the
/// units free).
fn pick(
    rt: &Runtime,
    req: &GroupRequest,
    all: &[Unit],
    by_node: &FxHashMap<u32, Vec<usize>>,
    plan: &Plan,
) -> Option<Vec<usize>> {
    let topo = rt.tracker.topology();
    let mut need: FxHashMap<u32, Amounts> = FxHashMap::default();
    for (ri, rp) in plan.roles.iter().enumerate() {
        for (ci, nodes) in rp.classes.iter().enumerate() {
            let shape = req.roles.get(ri)?.classes.get(ci)?.shape;
            for n in nodes {
                need.entry(*n).or_default().add(&shape);
            }
        }
    }
    let free_of = |n: u32| {
        let mut f = topo
            .node_state(n)
            .map(|s| {
                let mut a = s.allocatable;
                a.sub(&s.requested);
                a
            })
            .unwrap_or_default();
        if let Some(r) = rt.reserved.get(&n) {
            f.sub(r);
        }
        f
    };
    let mut free: FxHashMap<u32, Amounts> = FxHashMap::default();
    let mut chosen: Vec<usize> = Vec::new();
    let mut nodes: Vec<u32> = need.keys().copied().collect();
    nodes.sort_unstable();
    for n in nodes {
        let want = need[&n];
        if free.entry(n).or_insert_with(|| free_of(n)).covers(&want) {
            continue;
        }
        let mut cands: Vec<usize> = by_node
            .get(&n)
            .map(|v| v.iter().copied().filter(|u| !chosen.contains(u)).collect())
            .unwrap_or_default();
        cands.sort_by_key(|u| {
            let u = &all[*u];
            (
                u.violating,
                u.priority,
                u.pods.len(),
                std::cmp::Reverse(u.start),
            )
        });
        for u in cands {
            chosen.push(u);
            for (m, a) in &all[u].nodes {
                free.entry(*m).or_insert_with(|| free_of(*m)).add(a);
            }
            if free[&n].covers(&want) {
                break;
            }
        }
        if !free[&n].covers(&want) {
            return None;
        }
    }
    Some(chosen)
}
