//! The group planner: places every member of a group at once against the
//! topology, without touching it.
//!
//! A group is a list of roles (a plain gang has one; a PD unit has a
//! `prefill` and a `decode` role), each a list of member classes (members
//! with the same shape: resource amounts and eligible nodes). The planner
//! picks one domain for the whole group (at its required level, or the
//! cluster), then one domain per role (at the role's required level, inside
//! the group's), then a node for every member.
//!
//! How it chooses, at every level:
//! - *best fit*: when a single child domain can hold everything left, the
//!   tightest such child is taken, so partly used domains fill up before
//!   empty ones are opened (least fragmentation);
//! - *fill*: otherwise the children that can hold the most are filled first,
//!   so a group spans as few domains as possible, then best fit again for the
//!   remainder.
//! - *preferences*: a preferred level (the group's, or a role's) is first
//!   tried as if it were required — group and roles tightened together, then
//!   the group alone, then the roles alone — and the plan as required comes
//!   last, so a preference can change where a group goes but never makes a
//!   placeable group fail. A role that does not fit one domain of its
//!   preferred level spills over as few as the fill order allows.
//!
//! Aggregates ([`crate::Aggregates`]) give an upper bound on what a domain
//! can hold, so most domains are ruled out or ordered without looking at
//! their nodes; nodes are scanned only inside domains the plan may use.
//! Work done by the plan is tentative and rolled back on failure: a plan is a
//! pure function of the topology, the reservations passed in and the request.

use crate::amounts::Amounts;
use crate::graph::{DomainId, Topology};
use rustc_hash::FxHashMap;

/// Members that share a shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberClass {
    /// What one member asks for.
    pub shape: Amounts,
    /// How many members.
    pub count: u32,
    /// At most this many members of the class on one node (members that
    /// use a host port, or repel each other per node); `None`: no limit.
    pub max_per_node: Option<u32>,
}

impl MemberClass {
    /// `count` members of `shape`, any number per node.
    pub fn new(shape: Amounts, count: u32) -> MemberClass {
        MemberClass {
            shape,
            count,
            max_per_node: None,
        }
    }
}

/// One role (subgroup) of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleRequest {
    /// Every member of the role inside one domain of this level.
    pub required_level: Option<usize>,
    /// Try first to fit the whole role inside one domain of this (deeper)
    /// level; when none has room, the role spills over as few domains of
    /// that level as the fill order allows. Never a reason to fail.
    pub preferred_level: Option<usize>,
    /// Its member classes.
    pub classes: Vec<MemberClass>,
}

/// A group to place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRequest {
    /// Every member inside one domain of this level (0 or `None`: anywhere).
    pub required_level: Option<usize>,
    /// Try first to fit the whole group inside one domain of this (deeper)
    /// level; fall back to the required level.
    pub preferred_level: Option<usize>,
    /// The roles.
    pub roles: Vec<RoleRequest>,
    /// Place only inside this domain (re-planning a partly placed group).
    pub within: Option<DomainId>,
    /// Use no node under these domains (anti-affinity between groups).
    pub avoid: Vec<DomainId>,
}

impl GroupRequest {
    /// Sum of every member's shape.
    pub fn total(&self) -> Amounts {
        let mut t = Amounts::ZERO;
        for r in &self.roles {
            for c in &r.classes {
                t.add_scaled(&c.shape, i64::from(c.count));
            }
        }
        t
    }

    /// Number of members.
    pub fn members(&self) -> u32 {
        self.roles
            .iter()
            .flat_map(|r| r.classes.iter())
            .map(|c| c.count)
            .sum()
    }
}

/// Where each member goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The domain holding the whole group (at the level it was planned at).
    pub domain: DomainId,
    /// Per role: its domain and, per class, one node per member.
    pub roles: Vec<RolePlan>,
}

/// One role's placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolePlan {
    /// The domain holding the role.
    pub domain: DomainId,
    /// Per class, the node of each member.
    pub classes: Vec<Vec<u32>>,
}

/// Why a group cannot be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No domain of `level` could ever hold the group: even empty, the
    /// largest offers `best` of slot `slot` and the group needs `need`.
    #[error(
        "no domain at level {level} can ever hold the group: slot {slot} needs {need}, the largest has {best}"
    )]
    NeverFits {
        /// The level (0: the cluster).
        level: usize,
        /// The resource slot.
        slot: usize,
        /// What the group needs.
        need: i64,
        /// The most any domain of that level has.
        best: i64,
    },
    /// No domain of `level` has room now.
    #[error(
        "no domain at level {level} has room for the group now ({candidates} had enough free in total)"
    )]
    NoRoom {
        /// The level the group must fit in.
        level: usize,
        /// How many domains passed the aggregate check but failed when
        /// members were placed on nodes.
        candidates: usize,
    },
    /// A role's level is not below or equal to the group's, or not a level.
    #[error("role {role}: level {level} is not a level inside the group's level {group_level}")]
    BadLevel {
        /// The role.
        role: usize,
        /// Its level.
        level: usize,
        /// The group's level.
        group_level: usize,
    },
}

/// What a plan takes into account besides the topology.
pub struct PlanInput<'a> {
    /// Whether a member of `(role, class)` may go on `node` (taints,
    /// selectors...). Called only for nodes the plan looks at.
    pub eligible: &'a dyn Fn(usize, usize, u32) -> bool,
    /// Amounts held on nodes by others that the topology does not show yet
    /// (other groups' plans). May be negative in what-if questions (pods
    /// assumed gone).
    pub reserved: &'a FxHashMap<u32, Amounts>,
    /// Whether aggregates may prune (false when `reserved` holds negative
    /// amounts, which aggregates do not know about).
    pub trust_aggregates: bool,
}

/// Every node allowed.
pub fn any_node(_role: usize, _class: usize, _node: u32) -> bool {
    true
}

struct Work<'a> {
    topo: &'a Topology,
    input: &'a PlanInput<'a>,
    used: FxHashMap<u32, Amounts>,
    /// Members placed per (role, class, node), for `max_per_node`.
    counts: FxHashMap<(usize, usize, u32), u32>,
    /// `max_per_node` per role and class.
    limits: Vec<Vec<Option<u32>>>,
    log: Vec<(u32, Amounts, usize, usize)>,
    avoided: Vec<bool>,
}

impl Work<'_> {
    fn free(&self, n: u32) -> Amounts {
        let Some(st) = self.topo.node_state(n) else {
            return Amounts::ZERO;
        };
        if !st.schedulable || self.avoided.get(n as usize).copied().unwrap_or(false) {
            return Amounts::ZERO;
        }
        let mut f = st.allocatable;
        f.sub(&st.requested);
        if let Some(r) = self.input.reserved.get(&n) {
            f.sub(r);
        }
        if let Some(u) = self.used.get(&n) {
            f.sub(u);
        }
        f
    }

    #[inline]
    fn fits(&self, n: u32, role: usize, class: usize, shape: &Amounts) -> u32 {
        let mut c = self.free(n).fit_count(shape);
        if let Some(Some(max)) = self.limits.get(role).and_then(|r| r.get(class)) {
            c = c.min(max.saturating_sub(self.counts.get(&(role, class, n)).copied().unwrap_or(0)));
        }
        if c == 0 || !(self.input.eligible)(role, class, n) {
            return 0;
        }
        c
    }

    fn take(&mut self, n: u32, shape: &Amounts, role: usize, class: usize) {
        self.used.entry(n).or_default().add(shape);
        *self.counts.entry((role, class, n)).or_default() += 1;
        self.log.push((n, *shape, role, class));
    }

    fn mark(&self) -> usize {
        self.log.len()
    }

    fn rollback(&mut self, mark: usize) {
        while self.log.len() > mark {
            let (n, s, role, class) = self.log.pop().expect("len checked");
            if let Some(u) = self.used.get_mut(&n) {
                u.sub(&s);
            }
            if let Some(c) = self.counts.get_mut(&(role, class, n)) {
                *c -= 1;
            }
        }
    }

    fn upper_bound(&self, d: DomainId, shape: &Amounts) -> u32 {
        if self.input.trust_aggregates {
            self.topo.domain(d).agg.fit_upper_bound(shape)
        } else {
            u32::MAX
        }
    }

    /// Members of the class that fit under `d`, counting up to `limit`.
    fn capacity(&self, d: DomainId, role: usize, class: usize, shape: &Amounts, limit: u32) -> u32 {
        if self.upper_bound(d, shape) == 0 {
            return 0;
        }
        let dom = self.topo.domain(d);
        let mut sum = 0u32;
        for n in dom.direct_nodes() {
            sum = sum.saturating_add(self.fits(*n, role, class, shape));
            if sum >= limit {
                return sum;
            }
        }
        for c in self.topo.children(d) {
            if sum >= limit {
                break;
            }
            sum = sum.saturating_add(self.capacity(c, role, class, shape, limit - sum));
        }
        sum
    }

    /// Places up to `remaining` members of the class under `d`, packing
    /// tightly; decrements `remaining` and appends nodes to `out`.
    fn place(
        &mut self,
        d: DomainId,
        role: usize,
        class: usize,
        shape: &Amounts,
        remaining: &mut u32,
        out: &mut Vec<u32>,
    ) {
        if *remaining == 0 {
            return;
        }
        let topo = self.topo;
        let dom = topo.domain(d);
        if !dom.direct_nodes().is_empty() {
            // Deepest level: tightest nodes first.
            let mut nodes: Vec<(u32, u32)> = dom
                .direct_nodes()
                .iter()
                .map(|n| (self.fits(*n, role, class, shape), *n))
                .filter(|(k, _)| *k > 0)
                .collect();
            nodes.sort_unstable();
            for (k, n) in nodes {
                let t = k.min(*remaining);
                for _ in 0..t {
                    self.take(n, shape, role, class);
                    out.push(n);
                }
                *remaining -= t;
                if *remaining == 0 {
                    return;
                }
            }
            return;
        }
        let mut kids: Vec<(u32, DomainId)> = topo
            .children(d)
            .map(|c| (self.upper_bound(c, shape), c))
            .filter(|(ub, _)| *ub > 0)
            .collect();
        kids.sort_unstable();
        // Best fit, looking at nodes lazily: the tightest child (by its
        // aggregate bound) that really holds everything left.
        let want = *remaining;
        for (ub, c) in &kids {
            if *ub >= want && self.capacity(*c, role, class, shape, want) >= want {
                self.place(*c, role, class, shape, remaining, out);
                return;
            }
        }
        // No child holds it all: fill the largest first. Capacities are
        // computed once; placing into one child leaves the others' intact.
        let mut caps: Vec<(u32, DomainId)> = kids
            .iter()
            .map(|(_, c)| (self.capacity(*c, role, class, shape, want), *c))
            .filter(|(cap, _)| *cap > 0)
            .collect();
        while *remaining > 0 && !caps.is_empty() {
            let want = *remaining;
            // Best fit for the remainder, if some child now holds it all.
            let pick = caps
                .iter()
                .enumerate()
                .filter(|(_, (cap, _))| *cap >= want)
                .min_by_key(|(_, (cap, c))| (*cap, *c))
                .or_else(|| {
                    caps.iter()
                        .enumerate()
                        .max_by_key(|(_, (cap, c))| (*cap, std::cmp::Reverse(*c)))
                })
                .map(|(i, _)| i);
            let Some(i) = pick else {
                return;
            };
            let (_, c) = caps.swap_remove(i);
            self.place(c, role, class, shape, remaining, out);
        }
    }

    /// Places every member of `role` under `d`, or nothing.
    fn place_role(&mut self, d: DomainId, role: usize, req: &RoleRequest) -> Option<Vec<Vec<u32>>> {
        let mark = self.mark();
        let mut order: Vec<usize> = (0..req.classes.len()).collect();
        // Largest members first: they are the hardest to fit.
        order.sort_by_key(|i| std::cmp::Reverse(req.classes[*i].shape.0.iter().sum::<i64>()));
        let mut out = vec![Vec::new(); req.classes.len()];
        for ci in order {
            let c = &req.classes[ci];
            let mut remaining = c.count;
            let mut nodes = Vec::with_capacity(c.count as usize);
            self.place(d, role, ci, &c.shape, &mut remaining, &mut nodes);
            if remaining > 0 {
                self.rollback(mark);
                return None;
            }
            out[ci] = nodes;
        }
        Some(out)
    }

    /// Places the whole group inside `d`, or nothing.
    fn place_group(&mut self, d: DomainId, req: &GroupRequest) -> Option<Vec<RolePlan>> {
        let mark = self.mark();
        let mut order: Vec<usize> = (0..req.roles.len()).collect();
        // Roles pinned deepest first (they have the fewest places to go),
        // then the largest.
        order.sort_by_key(|i| {
            let r = &req.roles[*i];
            (
                std::cmp::Reverse(r.required_level.unwrap_or(0)),
                std::cmp::Reverse(role_total(r).0.iter().sum::<i64>()),
            )
        });
        let mut plans: Vec<Option<RolePlan>> = vec![None; req.roles.len()];
        for ri in order {
            let role = &req.roles[ri];
            let level = role.required_level.unwrap_or(0);
            let targets = if level > self.topo.domain(d).level {
                self.ordered_candidates(self.topo.domains_at(level, d), &role_total(role), role)
            } else {
                vec![d]
            };
            let mut placed = None;
            for t in targets {
                if let Some(classes) = self.place_role(t, ri, role) {
                    placed = Some(RolePlan { domain: t, classes });
                    break;
                }
            }
            match placed {
                Some(p) => plans[ri] = Some(p),
                None => {
                    self.rollback(mark);
                    return None;
                }
            }
        }
        Some(
            plans
                .into_iter()
                .map(|p| p.expect("every role placed"))
                .collect(),
        )
    }

    /// Domains that may hold `total`, tightest first.
    fn ordered_candidates(
        &self,
        domains: Vec<DomainId>,
        total: &Amounts,
        role: &RoleRequest,
    ) -> Vec<DomainId> {
        let mut scored: Vec<(i64, DomainId)> = domains
            .into_iter()
            .filter(|d| !self.input.trust_aggregates || self.topo.domain(*d).agg.free.covers(total))
            .filter(|d| {
                role.classes
                    .iter()
                    .all(|c| self.upper_bound(*d, &c.shape) > 0)
            })
            .map(|d| (slack(&self.topo.domain(d).agg.free, total), d))
            .collect();
        scored.sort_unstable();
        scored.into_iter().map(|(_, d)| d).collect()
    }
}

fn role_total(r: &RoleRequest) -> Amounts {
    let mut t = Amounts::ZERO;
    for c in &r.classes {
        t.add_scaled(&c.shape, i64::from(c.count));
    }
    t
}

/// How loosely `total` fits in `free`: the smallest free/need ratio over the
/// slots the group asks for, in thousandths. Smaller is tighter.
fn slack(free: &Amounts, total: &Amounts) -> i64 {
    let mut s = i64::MAX;
    for (f, n) in free.0.iter().zip(total.0.iter()) {
        if *n > 0 {
            s = s.min(f.saturating_mul(1000) / n);
        }
    }
    s
}

impl Topology {
    /// Checks that some domain of the group's required level could hold the
    /// group if it were empty (its summed allocatable covers the demand).
    /// A group failing this can never be placed: reject it early.
    pub fn check_ever_fits(&self, req: &GroupRequest) -> Result<(), PlanError> {
        let level = req.required_level.unwrap_or(0);
        let total = req.total();
        let under = req.within.unwrap_or(self.root());
        let domains = self.domains_at(level, under);
        let mut worst: Option<(usize, i64, i64)> = None;
        for slot in total.nonzero() {
            let need = total[slot];
            let best = domains
                .iter()
                .map(|d| self.domain(*d).agg.capacity[slot])
                .max()
                .unwrap_or(0);
            if best < need && worst.is_none() {
                worst = Some((slot, need, best));
            }
        }
        if domains.is_empty() && !total.is_zero() {
            let slot = total.nonzero().next().unwrap_or(0);
            return Err(PlanError::NeverFits {
                level,
                slot,
                need: total[slot],
                best: 0,
            });
        }
        match worst {
            Some((slot, need, best)) => Err(PlanError::NeverFits {
                level,
                slot,
                need,
                best,
            }),
            None => Ok(()),
        }
    }

    /// Plans the group. Nothing is changed; the plan is valid against this
    /// topology and `input.reserved`.
    pub fn plan(&self, req: &GroupRequest, input: &PlanInput<'_>) -> Result<Plan, PlanError> {
        let group_level = req.required_level.unwrap_or(0);
        for (ri, r) in req.roles.iter().enumerate() {
            if let Some(l) = r.required_level
                && (l > self.depth() || (l < group_level && l != 0))
            {
                return Err(PlanError::BadLevel {
                    role: ri,
                    level: l,
                    group_level,
                });
            }
        }
        let mut avoided = Vec::new();
        if !req.avoid.is_empty() {
            avoided = vec![false; self.node_bound()];
            for d in &req.avoid {
                if self.contains_domain(*d) {
                    self.for_each_node(*d, &mut |n| avoided[n as usize] = true);
                }
            }
        }
        let mut work = Work {
            topo: self,
            input,
            used: FxHashMap::default(),
            counts: FxHashMap::default(),
            limits: req
                .roles
                .iter()
                .map(|r| r.classes.iter().map(|c| c.max_per_node).collect())
                .collect(),
            log: Vec::new(),
            avoided,
        };
        // Preferences are tried as requirements, tightest first; the plan as
        // required is the last attempt, so its error is the one reported.
        let group_pref = req
            .preferred_level
            .filter(|p| *p > group_level && *p <= self.depth());
        let roles_tight = self.roles_at_preferred(req);
        let mut attempts: Vec<GroupRequest> = Vec::with_capacity(3);
        if let Some(p) = group_pref {
            let tight = GroupRequest {
                required_level: Some(p),
                preferred_level: None,
                ..req.clone()
            };
            if let Some(roles) = &roles_tight {
                attempts.push(GroupRequest {
                    roles: roles.clone(),
                    ..tight.clone()
                });
            }
            attempts.push(tight);
        }
        if let Some(roles) = roles_tight {
            attempts.push(GroupRequest {
                roles,
                preferred_level: None,
                ..req.clone()
            });
        }
        for a in &attempts {
            if let Ok(plan) = self.plan_at(a, &mut work) {
                return Ok(plan);
            }
        }
        self.plan_at(req, &mut work)
    }

    /// The roles with every usable preferred level turned into a required
    /// one, or `None` when no role has a preference deeper than what it
    /// already requires.
    fn roles_at_preferred(&self, req: &GroupRequest) -> Option<Vec<RoleRequest>> {
        let floor = req.required_level.unwrap_or(0);
        let mut any = false;
        let roles = req
            .roles
            .iter()
            .map(|r| {
                let required = r.required_level.unwrap_or(0).max(floor);
                match r.preferred_level {
                    Some(p) if p > required && p <= self.depth() => {
                        any = true;
                        RoleRequest {
                            required_level: Some(p),
                            preferred_level: None,
                            classes: r.classes.clone(),
                        }
                    }
                    _ => r.clone(),
                }
            })
            .collect();
        any.then_some(roles)
    }

    fn plan_at(&self, req: &GroupRequest, work: &mut Work<'_>) -> Result<Plan, PlanError> {
        let level = req.required_level.unwrap_or(0);
        let under = req.within.unwrap_or(self.root());
        let total = req.total();
        let all = if self.domain(under).level >= level {
            vec![under]
        } else {
            self.domains_at(level, under)
        };
        let merged = RoleRequest {
            required_level: None,
            preferred_level: None,
            classes: req
                .roles
                .iter()
                .flat_map(|r| r.classes.iter().cloned())
                .collect(),
        };
        let candidates = work.ordered_candidates(all, &total, &merged);
        let n = candidates.len();
        for d in candidates {
            if let Some(roles) = work.place_group(d, req) {
                return Ok(Plan { domain: d, roles });
            }
        }
        Err(PlanError::NoRoom {
            level,
            candidates: n,
        })
    }

    /// One past the largest node id known.
    pub fn node_bound(&self) -> usize {
        self.leaf_bound()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::NodeState;

    const GPU: usize = 4;

    fn gpus(n: i64) -> Amounts {
        Amounts::from_pairs(&[(GPU, n)])
    }

    /// `sn` super-nodes × `cab` cabinets × `per` servers of 8 GPUs.
    fn cluster(sn: u32, cab: u32, per: u32) -> Topology {
        let mut t = Topology::default();
        let mut id = 0;
        for s in 0..sn {
            for c in 0..cab {
                for _ in 0..per {
                    let (a, b, h) = (format!("sn{s}"), format!("cab{c}"), format!("h{id}"));
                    t.upsert_node(
                        id,
                        &[Some(&a), Some(&b), Some(&h)],
                        NodeState {
                            allocatable: gpus(8),
                            requested: Amounts::ZERO,
                            schedulable: true,
                        },
                    );
                    id += 1;
                }
            }
        }
        t
    }

    fn use_gpus(t: &mut Topology, n: u32, used: i64) {
        let mut s = *t.node_state(n).unwrap();
        s.requested = gpus(used);
        t.set_state(n, s);
    }

    fn input(reserved: &FxHashMap<u32, Amounts>) -> PlanInput<'_> {
        PlanInput {
            eligible: &any_node,
            reserved,
            trust_aggregates: true,
        }
    }

    fn gang(count: u32, per: i64, level: Option<usize>) -> GroupRequest {
        GroupRequest {
            required_level: level,
            roles: vec![RoleRequest {
                classes: vec![MemberClass::new(gpus(per), count)],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn best_fit_prefers_the_partly_used_super_node() {
        let mut t = cluster(3, 2, 4);
        // sn1 has 3 nodes fully used: 40 GPUs free; sn0 and sn2 have 64.
        for n in 8..11 {
            use_gpus(&mut t, n, 8);
        }
        let r = FxHashMap::default();
        let p = t.plan(&gang(4, 8, Some(1)), &input(&r)).unwrap();
        assert_eq!(t.domain(p.domain).name(), "sn1");
        // Packed in one cabinet of sn1: the one with 1 free node left plus
        // ... cabinet0 of sn1 has nodes 8..12 (3 used) so only 1 free; the
        // tightest cabinet holding 4 is cabinet1.
        let nodes = &p.roles[0].classes[0];
        assert_eq!(nodes.len(), 4);
        let cabs: std::collections::BTreeSet<_> =
            nodes.iter().map(|n| t.ancestor_at(*n, 2)).collect();
        assert_eq!(cabs.len(), 1);
    }

    #[test]
    fn large_gang_spans_few_super_nodes() {
        let t = cluster(10, 8, 8); // 64 servers per super-node
        let r = FxHashMap::default();
        let p = t.plan(&gang(200, 8, None), &input(&r)).unwrap();
        let nodes = &p.roles[0].classes[0];
        assert_eq!(nodes.len(), 200);
        let sns: std::collections::BTreeSet<_> =
            nodes.iter().map(|n| t.ancestor_at(*n, 1)).collect();
        assert_eq!(sns.len(), 4, "200 servers need 4 super-nodes of 64");
        let distinct: std::collections::BTreeSet<_> = nodes.iter().collect();
        assert_eq!(distinct.len(), 200);
    }

    #[test]
    fn members_share_nodes_when_small() {
        let t = cluster(1, 1, 2);
        let r = FxHashMap::default();
        let p = t.plan(&gang(4, 2, None), &input(&r)).unwrap();
        assert_eq!(
            p.roles[0].classes[0],
            vec![0, 0, 0, 0],
            "tight packing puts all four on one node"
        );
        let mut one_each = gang(2, 2, None);
        one_each.roles[0].classes[0].max_per_node = Some(1);
        let p = t.plan(&one_each, &input(&r)).unwrap();
        assert_eq!(p.roles[0].classes[0], vec![0, 1]);
        one_each.roles[0].classes[0].count = 3;
        assert!(t.plan(&one_each, &input(&r)).is_err());
    }

    #[test]
    fn required_level_that_cannot_hold_is_never_fits_or_no_room() {
        let mut t = cluster(2, 2, 2);
        // 32 GPUs per super-node; 40 never fit in one.
        let e = t.check_ever_fits(&gang(5, 8, Some(1))).unwrap_err();
        assert_eq!(
            e,
            PlanError::NeverFits {
                level: 1,
                slot: GPU,
                need: 40,
                best: 32
            }
        );
        assert!(t.check_ever_fits(&gang(4, 8, Some(1))).is_ok());
        use_gpus(&mut t, 0, 8);
        use_gpus(&mut t, 4, 8);
        let r = FxHashMap::default();
        assert!(matches!(
            t.plan(&gang(4, 8, Some(1)), &input(&r)),
            Err(PlanError::NoRoom { level: 1, .. })
        ));
    }

    #[test]
    fn reservations_of_other_plans_are_respected() {
        let t = cluster(2, 1, 2);
        let mut r = FxHashMap::default();
        r.insert(0, gpus(8));
        r.insert(1, gpus(8));
        let p = t.plan(&gang(2, 8, Some(1)), &input(&r)).unwrap();
        assert_eq!(t.domain(p.domain).name(), "sn1");
        r.insert(2, gpus(1));
        assert!(t.plan(&gang(2, 8, Some(1)), &input(&r)).is_err());
    }

    #[test]
    fn roles_pinned_to_cabinets_inside_one_super_node() {
        let t = cluster(2, 2, 2);
        let req = GroupRequest {
            required_level: Some(1),
            roles: vec![
                RoleRequest {
                    required_level: Some(2),
                    classes: vec![MemberClass::new(gpus(4), 4)],
                    ..Default::default()
                },
                RoleRequest {
                    required_level: Some(2),
                    classes: vec![MemberClass::new(gpus(8), 2)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = FxHashMap::default();
        let p = t.plan(&req, &input(&r)).unwrap();
        for rp in &p.roles {
            for nodes in &rp.classes {
                for n in nodes {
                    assert_eq!(t.ancestor_at(*n, 1), Some(p.domain));
                    assert_eq!(t.ancestor_at(*n, 2), Some(rp.domain));
                }
            }
        }
        assert_ne!(
            p.roles[0].domain, p.roles[1].domain,
            "each cabinet holds 16 GPUs: one role each"
        );
    }

    #[test]
    fn eligibility_and_avoid_are_honoured() {
        let t = cluster(2, 1, 2);
        let r = FxHashMap::default();
        let only_odd = |_: usize, _: usize, n: u32| n % 2 == 1;
        let inp = PlanInput {
            eligible: &only_odd,
            reserved: &r,
            trust_aggregates: true,
        };
        let p = t.plan(&gang(2, 8, None), &inp).unwrap();
        assert!(p.roles[0].classes[0].iter().all(|n| n % 2 == 1));
        let sn0 = t.ancestor_at(0, 1).unwrap();
        let mut req = gang(2, 8, Some(1));
        req.avoid = vec![sn0];
        let p = t.plan(&req, &input(&r)).unwrap();
        assert_ne!(p.domain, sn0);
    }

    #[test]
    fn preferred_level_packs_when_possible_and_falls_back() {
        let mut t = cluster(2, 2, 2);
        let r = FxHashMap::default();
        let mut req = gang(3, 8, None);
        req.preferred_level = Some(1);
        let p = t.plan(&req, &input(&r)).unwrap();
        assert_eq!(t.domain(p.domain).level, 1);
        for n in [0, 1, 4, 5] {
            use_gpus(&mut t, n, 8);
        }
        // Each super-node has 2 free servers now: 3 must span two.
        let p = t.plan(&req, &input(&r)).unwrap();
        assert_eq!(p.domain, t.root());
    }

    fn role(
        classes: Vec<MemberClass>,
        required: Option<usize>,
        preferred: Option<usize>,
    ) -> RoleRequest {
        RoleRequest {
            required_level: required,
            preferred_level: preferred,
            classes,
        }
    }

    fn cabinets_of(t: &Topology, nodes: &[u32]) -> std::collections::BTreeSet<Option<DomainId>> {
        nodes.iter().map(|n| t.ancestor_at(*n, 2)).collect()
    }

    #[test]
    fn role_preferred_level_keeps_the_role_in_one_cabinet_when_one_has_room() {
        // One super-node, two cabinets of two servers. cab0: 8 free on
        // node 0 only; cab1: 4 free on node 2 and 8 on node 3. A role of
        // one 8-GPU and one 4-GPU member: placed class by class it starts
        // in cab0 (first of the ties) and spills the 4 into cab1; with the
        // preference both go to cab1, the one cabinet that holds 12.
        let mut t = cluster(1, 2, 2);
        use_gpus(&mut t, 1, 8);
        use_gpus(&mut t, 2, 4);
        let r = FxHashMap::default();
        let classes = vec![MemberClass::new(gpus(8), 1), MemberClass::new(gpus(4), 1)];
        let loose = GroupRequest {
            roles: vec![role(classes.clone(), None, None)],
            ..Default::default()
        };
        let p = t.plan(&loose, &input(&r)).unwrap();
        let all: Vec<u32> = p.roles[0].classes.concat();
        assert_eq!(
            cabinets_of(&t, &all).len(),
            2,
            "without a preference: {p:?}"
        );
        let pref = GroupRequest {
            roles: vec![role(classes, None, Some(2))],
            ..Default::default()
        };
        let p = t.plan(&pref, &input(&r)).unwrap();
        let all: Vec<u32> = p.roles[0].classes.concat();
        assert_eq!(all.len(), 2);
        assert_eq!(cabinets_of(&t, &all).len(), 1, "{p:?}");
        assert_eq!(t.ancestor_at(all[0], 2), t.ancestor_at(3, 2));
    }

    #[test]
    fn role_preference_picks_the_super_node_with_a_cabinet_that_fits() {
        // sn0 (nodes 0-3) is the tightest for the group, but its 16 free
        // GPUs are split 8 + 8 over its cabinets; sn1 has a whole free
        // cabinet. The required level (super-node) holds either way.
        let mut t = cluster(2, 2, 2);
        use_gpus(&mut t, 1, 8);
        use_gpus(&mut t, 3, 8);
        use_gpus(&mut t, 4, 4);
        let r = FxHashMap::default();
        let mut req = GroupRequest {
            required_level: Some(1),
            roles: vec![role(vec![MemberClass::new(gpus(8), 2)], None, None)],
            ..Default::default()
        };
        let p = t.plan(&req, &input(&r)).unwrap();
        assert_eq!(t.domain(p.domain).name(), "sn0");
        assert_eq!(cabinets_of(&t, &p.roles[0].classes[0]).len(), 2);
        req.roles[0].preferred_level = Some(2);
        let p = t.plan(&req, &input(&r)).unwrap();
        assert_eq!(t.domain(p.domain).name(), "sn1");
        let cabs = cabinets_of(&t, &p.roles[0].classes[0]);
        assert_eq!(cabs.len(), 1, "{p:?}");
        assert_eq!(cabs.into_iter().next().flatten(), Some(p.roles[0].domain));
    }

    #[test]
    fn role_preference_spills_over_as_few_cabinets_as_possible_and_never_fails() {
        // 4 cabinets of 2 servers in one super-node: 3 servers' worth
        // cannot fit one cabinet, so the role spans exactly two.
        let t = cluster(1, 4, 2);
        let r = FxHashMap::default();
        let req = GroupRequest {
            required_level: Some(1),
            roles: vec![role(vec![MemberClass::new(gpus(8), 3)], None, Some(2))],
            ..Default::default()
        };
        let p = t.plan(&req, &input(&r)).unwrap();
        let nodes = &p.roles[0].classes[0];
        assert_eq!(nodes.len(), 3);
        assert_eq!(cabinets_of(&t, nodes).len(), 2, "{p:?}");
        // A preference above or at the required level changes nothing.
        let mut shallow = req.clone();
        shallow.roles[0].preferred_level = Some(1);
        assert_eq!(t.plan(&shallow, &input(&r)), {
            let mut plain = req.clone();
            plain.roles[0].preferred_level = None;
            t.plan(&plain, &input(&r))
        });
        // A preference beyond the deepest level is ignored, not an error.
        let mut deep = req.clone();
        deep.roles[0].preferred_level = Some(9);
        assert!(t.plan(&deep, &input(&r)).is_ok());
    }

    #[test]
    fn role_preference_with_pinned_sibling_inside_one_super_node() {
        // PD unit in one super-node: decode pinned to a cabinet, prefill
        // preferred in one. Two super-nodes of two cabinets (16 GPUs each).
        let t = cluster(2, 2, 2);
        let r = FxHashMap::default();
        let req = GroupRequest {
            required_level: Some(1),
            roles: vec![
                role(vec![MemberClass::new(gpus(4), 4)], None, Some(2)),
                role(vec![MemberClass::new(gpus(8), 2)], Some(2), None),
            ],
            ..Default::default()
        };
        let p = t.plan(&req, &input(&r)).unwrap();
        let prefill = &p.roles[0].classes[0];
        assert_eq!(cabinets_of(&t, prefill).len(), 1, "{p:?}");
        let decode = &p.roles[1].classes[0];
        assert_eq!(cabinets_of(&t, decode).len(), 1);
        for n in prefill.iter().chain(decode) {
            assert_eq!(t.ancestor_at(*n, 1), Some(p.domain));
        }
        // Prefill of 24 GPUs cannot sit in one 16-GPU cabinet: it spills,
        // still inside the group's super-node, next to decode's cabinet.
        let mut big = req.clone();
        big.roles[0].classes[0].count = 6;
        big.roles[1].classes[0].count = 1;
        let p = t.plan(&big, &input(&r)).unwrap();
        let prefill = &p.roles[0].classes[0];
        assert_eq!(prefill.len(), 6);
        assert_eq!(cabinets_of(&t, prefill).len(), 2);
        for n in prefill.iter().chain(&p.roles[1].classes[0]) {
            assert_eq!(t.ancestor_at(*n, 1), Some(p.domain));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A role's preference never decides whether a group can be placed,
        /// never breaks a required level, and never spreads the role over
        /// more domains of its preferred level than the plan without it.
        #[test]
        fn role_preference_never_fails_a_group_or_breaks_requirements(
            used in proptest::collection::vec(0i64..=8, 16),
            prefill in 1u32..8,
            per in proptest::sample::select(vec![2i64, 4, 8]),
            decode in 0u32..4,
            group_level in proptest::option::of(1usize..=2),
            decode_level in proptest::option::of(2usize..=2),
        ) {
            let mut t = cluster(2, 2, 4);
            for (n, u) in used.iter().enumerate() {
                use_gpus(&mut t, n as u32, *u);
            }
            let r = FxHashMap::default();
            let mut req = GroupRequest {
                required_level: group_level,
                roles: vec![role(vec![MemberClass::new(gpus(per), prefill)], None, None)],
                ..Default::default()
            };
            if decode > 0 {
                req.roles.push(role(vec![MemberClass::new(gpus(4), decode)], decode_level, None));
            }
            let plain = t.plan(&req, &input(&r));
            req.roles[0].preferred_level = Some(2);
            let preferred = t.plan(&req, &input(&r));
            // The planner is greedy, so a preference may even find a plan the
            // plain order misses; it must never lose one.
            proptest::prop_assert!(plain.is_err() || preferred.is_ok());
            if let (Ok(plain), Ok(p)) = (plain, preferred) {
                if let Some(l) = group_level {
                    for rp in &p.roles {
                        for n in rp.classes.concat() {
                            proptest::prop_assert_eq!(t.ancestor_at(n, l), Some(p.domain));
                        }
                    }
                }
                if decode > 0 && decode_level.is_some() {
                    proptest::prop_assert_eq!(cabinets_of(&t, &p.roles[1].classes[0]).len(), 1);
                }
                let spread = |pl: &Plan| cabinets_of(&t, &pl.roles[0].classes[0]).len();
                proptest::prop_assert!(spread(&p) <= spread(&plain), "{:?} vs {:?}", p, plain);
                // Placed members each got a node with room.
                proptest::prop_assert_eq!(p.roles[0].classes[0].len(), prefill as usize);
            }
        }
    }

    #[test]
    fn negative_reservations_model_evictions() {
        let mut t = cluster(1, 1, 1);
        use_gpus(&mut t, 0, 8);
        let mut r = FxHashMap::default();
        let inp = PlanInput {
            eligible: &any_node,
            reserved: &r,
            trust_aggregates: true,
        };
        assert!(t.plan(&gang(1, 8, None), &inp).is_err());
        r.insert(0, gpus(-8));
        let inp = PlanInput {
            eligible: &any_node,
            reserved: &r,
            trust_aggregates: false,
        };
        assert_eq!(
            t.plan(&gang(1, 8, None), &inp).unwrap().roles[0].classes[0],
            vec![0]
        );
    }
}
