//! "Where would one more group of this shape go, and what would it
//! displace?" — the planner run on a hypothetical group, reserving nothing.
//!
//! First the group is planned against free capacity (minus other groups'
//! outstanding plans), exactly as a real group would be. If it does not fit
//! and the caller allows displacing pods below a priority, it is planned
//! again as if those pods were gone (aggregates cannot prune then, so this
//! pass looks at every node it may use), and on each planned node the
//! lowest-priority pods are chosen as victims until the planned members
//! fit.

use super::runtime::{Runtime, eligible};
use super::spec::PodGroupSpec;
use crate::common::topology_placement::amounts;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use strata_scheduler::sdk::{NodeId, PodInfo, Snapshot, Sym};
use strata_topology::{Amounts, GroupRequest, MemberClass, Plan, PlanInput, RoleRequest};

/// A hypothetical group.
#[derive(Clone, Debug)]
pub struct WhatIfGroup {
    /// The group's spec (levels, subgroups, spread is ignored).
    pub spec: PodGroupSpec,
    /// Member templates and how many members each stands for; a template's
    /// labels pick its subgroup.
    pub members: Vec<(Arc<PodInfo>, u32)>,
    /// Pods with a priority below this may be displaced; `None`: none may.
    pub displace_below: Option<i32>,
}

/// Where the group would go.
#[derive(Clone, Debug)]
pub struct WhatIfAnswer {
    /// The domain holding it (label value, or `cluster`).
    pub domain: String,
    /// Members per node, by node name, sorted.
    pub nodes: Vec<(Sym, u32)>,
    /// Pods that would have to go, lowest priority first per node.
    pub displaced: Vec<Arc<PodInfo>>,
}

/// How many copies of a hypothetical group fit at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhatIfCount {
    /// Copies planned, at most the number asked; each is planned whole on
    /// what the ones before it left free.
    pub fits: u32,
    /// The domain of each copy planned, in order.
    pub domains: Vec<String>,
    /// Why the next copy did not fit (`None` when all asked for fit).
    pub refusal: Option<String>,
}

/// The planner's request for `q` and one member template per class.
type Request = (GroupRequest, Vec<Vec<Arc<PodInfo>>>);

fn request(rt: &Runtime, q: &WhatIfGroup) -> Result<Request, String> {
    let levels = rt.tracker.levels();
    q.spec.validate(levels).map_err(|e| e.to_string())?;
    let level_of = |k: &Option<String>| {
        k.as_ref()
            .and_then(|k| levels.iter().position(|l| l == k))
            .map(|i| i + 1)
    };
    let nroles = q.spec.subgroups.len() + 1;
    let mut roles: Vec<Vec<(Arc<PodInfo>, u32)>> = vec![Vec::new(); nroles];
    for (pod, n) in &q.members {
        let sub = q.spec.subgroup_of(&pod.labels).map_err(|e| e.to_string())?;
        roles[sub.unwrap_or(nroles - 1)].push((pod.clone(), *n));
    }
    let mut req = GroupRequest {
        required_level: level_of(&q.spec.required_level),
        preferred_level: level_of(&q.spec.preferred_level),
        ..Default::default()
    };
    let mut reps: Vec<Vec<Arc<PodInfo>>> = Vec::new();
    for (r, members) in roles.iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        req.roles.push(RoleRequest {
            required_level: q
                .spec
                .subgroups
                .get(r)
                .and_then(|s| level_of(&s.required_level)),
            preferred_level: q
                .spec
                .subgroups
                .get(r)
                .and_then(|s| level_of(&s.preferred_level)),
            classes: members
                .iter()
                .map(|(p, n)| MemberClass {
                    shape: amounts(&p.spec.requests),
                    count: *n,
                    max_per_node: super::runtime::one_per_node(p).then_some(1),
                })
                .collect(),
        });
        reps.push(members.iter().map(|(p, _)| p.clone()).collect());
    }
    Ok((req, reps))
}

/// Plans up to `count` copies of `q` one after the other, each on the
/// capacity the copies before it left (free capacity minus other groups'
/// outstanding plans, as [`what_if`]); nothing is displaced or reserved.
/// A required spread (LeaderWorkerSet's exclusive topology) is kept: no
/// copy goes into a domain of its level that another group of the service
/// (in the namespace of `q`'s members) holds or has planned, or that an
/// earlier copy took.
pub(crate) fn what_if_count(
    rt: &Runtime,
    snap: &Snapshot,
    q: &WhatIfGroup,
    count: u32,
) -> Result<WhatIfCount, String> {
    let (mut req, reps) = request(rt, q)?;
    let topo = rt.tracker.topology();
    let elig = |role: usize, class: usize, node: u32| {
        (node as usize) < snap.node_capacity()
            && eligible(&reps[role][class], snap.node(NodeId(node)))
    };
    // A required spread (LWS exclusive topology): the domains other groups
    // of the service hold or have planned, and each copy's, are avoided.
    let spread = q
        .spec
        .spread
        .as_ref()
        .filter(|sp| sp.required)
        .and_then(|sp| {
            let l = rt.tracker.levels().iter().position(|x| *x == sp.level)? + 1;
            Some((sp, l))
        });
    if let Some((sp, l)) = spread {
        let ns = q.members.first().map(|(p, _)| p.namespace);
        for (k, other) in &rt.groups {
            if Some(k.namespace) != ns || other.service.as_deref() != Some(sp.service.as_str()) {
                continue;
            }
            for n in other.held_nodes(snap) {
                if let Some(d) = topo.ancestor_at(n, l)
                    && !req.avoid.contains(&d)
                {
                    req.avoid.push(d);
                }
            }
        }
    }
    let mut held = rt.reserved.clone();
    let mut out = WhatIfCount {
        fits: 0,
        domains: Vec::new(),
        refusal: None,
    };
    while out.fits < count {
        let input = PlanInput {
            eligible: &elig,
            reserved: &held,
            trust_aggregates: true,
        };
        match topo.plan(&req, &input) {
            Ok(plan) => {
                for (ri, rp) in plan.roles.iter().enumerate() {
                    for (ci, nodes) in rp.classes.iter().enumerate() {
                        let shape = req.roles[ri].classes[ci].shape;
                        for n in nodes {
                            held.entry(*n).or_default().add(&shape);
                            if let Some((_, l)) = spread
                                && let Some(d) = topo.ancestor_at(*n, l)
                                && !req.avoid.contains(&d)
                            {
                                req.avoid.push(d);
                            }
                        }
                    }
                }
                out.fits += 1;
                out.domains.push(topo.domain(plan.domain).name());
            }
            Err(e) => {
                out.refusal = Some(format!("no room now: {e}"));
                break;
            }
        }
    }
    Ok(out)
}

pub(crate) fn what_if(
    rt: &Runtime,
    snap: &Snapshot,
    q: &WhatIfGroup,
) -> Result<WhatIfAnswer, String> {
    let (req, reps) = request(rt, q)?;
    let topo = rt.tracker.topology();
    let elig = |role: usize, class: usize, node: u32| {
        (node as usize) < snap.node_capacity()
            && eligible(&reps[role][class], snap.node(NodeId(node)))
    };
    let input = PlanInput {
        eligible: &elig,
        reserved: &rt.reserved,
        trust_aggregates: true,
    };
    let answer = |plan: &Plan, displaced: Vec<Arc<PodInfo>>| {
        let mut per: FxHashMap<u32, u32> = FxHashMap::default();
        for rp in &plan.roles {
            for nodes in &rp.classes {
                for n in nodes {
                    *per.entry(*n).or_default() += 1;
                }
            }
        }
        let mut nodes: Vec<(Sym, u32)> = per
            .into_iter()
            .map(|(n, c)| (snap.node(NodeId(n)).name, c))
            .collect();
        nodes.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        WhatIfAnswer {
            domain: topo.domain(plan.domain).name(),
            nodes,
            displaced,
        }
    };
    let first = topo.plan(&req, &input);
    let err = match first {
        Ok(plan) => return Ok(answer(&plan, Vec::new())),
        Err(e) => e,
    };
    let Some(below) = q.displace_below else {
        return Err(format!("no room now: {err}"));
    };
    // Pretend every pod below the priority is gone.
    let mut freed = rt.reserved.clone();
    for n in snap.nodes() {
        let mut v = Amounts::ZERO;
        for p in n.pods.iter().filter(|p| p.priority < below) {
            v.add(&amounts(&p.spec.requests));
        }
        if !v.is_zero() {
            freed.entry(n.id.0).or_default().sub(&v);
        }
    }
    let input = PlanInput {
        eligible: &elig,
        reserved: &freed,
        trust_aggregates: false,
    };
    let plan = topo
        .plan(&req, &input)
        .map_err(|e| format!("no room even after displacing pods below priority {below}: {e}"))?;
    // Victims: per planned node, lowest priority first until it fits.
    let mut need: FxHashMap<u32, Amounts> = FxHashMap::default();
    for (ri, rp) in plan.roles.iter().enumerate() {
        for (ci, nodes) in rp.classes.iter().enumerate() {
            let shape = req.roles[ri].classes[ci].shape;
            for n in nodes {
                need.entry(*n).or_default().add(&shape);
            }
        }
    }
    let mut displaced = Vec::new();
    let mut ids: Vec<u32> = need.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let node = snap.node(NodeId(id));
        let mut free = amounts(&node.allocatable);
        free.sub(&amounts(&node.requested));
        if let Some(r) = rt.reserved.get(&id) {
            free.sub(r);
        }
        let want = need[&id];
        let mut cands: Vec<&Arc<PodInfo>> =
            node.pods.iter().filter(|p| p.priority < below).collect();
        cands.sort_by_key(|p| (p.priority, std::cmp::Reverse(p.creation_ms)));
        for p in cands {
            if free.covers(&want) {
                break;
            }
            free.add(&amounts(&p.spec.requests));
            displaced.push(p.clone());
        }
    }
    Ok(answer(&plan, displaced))
}
