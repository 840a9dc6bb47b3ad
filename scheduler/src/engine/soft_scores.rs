//! The fast path's scores that are not node-local but depend on a node's
//! topology domains ([`ScorePlugin::domain_scores`]: preferred inter-pod
//! affinity, `ScheduleAnyway` spread).
//!
//! Such a plugin's raw score on a node changes only when the node changes
//! or when the value of one of its domains changes, so the class keeps each
//! feasible node's raw scores and re-scores only those nodes. What
//! normalization does to a raw score depends only on the set of distinct
//! raw scores, so nodes are grouped by their tuple of raw scores (those of
//! the node-local plugins that normalize, then those of the domain-scored
//! plugins): a group's total over the domain-scored plugins is computed
//! once per cycle from one normalization per distinct value, and a node's
//! leaf in the best-score tree is its cached node-local total plus its
//! group's total. A cycle costs O(nodes re-scored + groups) plus O(log n)
//! per leaf set, and O(feasible nodes) only when a group's total moves (the
//! smallest or largest raw score changed), which is rare once a workload's
//! first few pods are placed.
//!
//! Invariants while `valid`: every feasible node of the class (passing the
//! node-local filters and every domain layer) is in exactly one group, the
//! one of its current raw tuple, and its leaf is its cached total plus that
//! group's total; every other live position holds `i64::MIN`; `raw` of a
//! node is current when `gen` equals the node's generation. The answer is
//! the scan's: same totals up to a constant (node-local plugins that
//! normalize must have one raw score over the feasible nodes, else the scan
//! runs), same positions, same tie count.

use super::equiv::{ClassCache, MaxTree, PASS};
use super::fast_path::{CachedScore, refresh_scores};
use crate::cache::Snapshot;
use crate::framework::{CycleState, DomainScores, DomainVerdict, NodeScore, ScorePlugin};
use crate::model::{NodeId, PodInfo};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::Arc;

/// A generation no node has.
const NEVER: u64 = u64::MAX;
/// A node in no group.
const NO_GROUP: u32 = u32::MAX;

/// A domain-scored plugin: name, plugin and weight.
pub(super) type DomainScored<'a> = (&'static str, &'a dyn ScorePlugin, i64);

/// Raw scores of one node: the node-local plugins that normalize, then the
/// domain-scored ones.
type Tuple = SmallVec<[i64; 4]>;

/// Nodes sharing a raw tuple.
#[derive(Clone, Debug)]
struct Group {
    tuple: Tuple,
    /// Feasible nodes in the group.
    count: u32,
    /// Weighted normalized total of the domain-scored plugins.
    total: i64,
}

/// One plugin's last answer, with each layer's nodes grouped by domain.
#[derive(Clone, Debug, Default)]
struct Remembered {
    salt: u64,
    layers: Vec<crate::framework::ScoreLayer>,
    /// Per layer, CSR offsets by domain id into `members`.
    start: Vec<Vec<u32>>,
    /// Per layer, node slots sorted by domain id.
    members: Vec<Vec<u32>>,
}

impl Remembered {
    fn new(ans: DomainScores, capacity: usize) -> Remembered {
        let mut r = Remembered {
            salt: ans.salt,
            ..Remembered::default()
        };
        for layer in &ans.layers {
            let of = &layer.of_node;
            let used = |d: u32| d != DomainVerdict::NO_DOMAIN;
            let n = of
                .iter()
                .take(capacity)
                .copied()
                .filter(|d| used(*d))
                .max()
                .map_or(0, |d| d as usize + 1)
                .max(layer.values.len());
            let mut start = vec![0u32; n + 1];
            for &d in of.iter().take(capacity).filter(|d| used(**d)) {
                start[d as usize + 1] += 1;
            }
            for d in 0..n {
                start[d + 1] += start[d];
            }
            let mut next = start.clone();
            let mut members = vec![0u32; start[n] as usize];
            for (slot, &d) in of.iter().enumerate().take(capacity) {
                if used(d) {
                    members[next[d as usize] as usize] = slot as u32;
                    next[d as usize] += 1;
                }
            }
            r.start.push(start);
            r.members.push(members);
        }
        r.layers = ans.layers;
        r
    }

    /// Whether `ans` has this answer's salt and mappings (values may
    /// differ).
    fn same_shape(&self, ans: &DomainScores) -> bool {
        self.salt == ans.salt
            && self.layers.len() == ans.layers.len()
            && self
                .layers
                .iter()
                .zip(&ans.layers)
                .all(|(a, b)| Arc::ptr_eq(&a.of_node, &b.of_node))
    }

    /// Adds to `out` the node slots of domains whose value differs in
    /// `ans` (same shape), and takes `ans`'s values.
    fn take_changes(&mut self, ans: DomainScores, out: &mut Vec<u32>) {
        for (l, new) in ans.layers.into_iter().enumerate() {
            let old = &self.layers[l].values;
            if Arc::ptr_eq(old, &new.values) {
                continue;
            }
            let n = old.len().max(new.values.len());
            let at = |v: &[i64], d: usize| v.get(d).copied().unwrap_or(0);
            const CHUNK: usize = 64;
            let mut d = 0;
            while d < n {
                let end = (d + CHUNK).min(n);
                let same = end <= old.len()
                    && end <= new.values.len()
                    && old[d..end] == new.values[d..end];
                if !same {
                    for k in d..end {
                        if at(old, k) != at(&new.values, k) {
                            let start = &self.start[l];
                            if k + 1 < start.len() {
                                let (lo, hi) = (start[k] as usize, start[k + 1] as usize);
                                out.extend_from_slice(&self.members[l][lo..hi]);
                            }
                        }
                    }
                }
                d = end;
            }
            self.layers[l].values = new.values;
        }
    }
}

/// A class's domain-scored state (see the module docs).
#[derive(Clone, Default)]
pub(crate) struct SoftIndex {
    /// Whether the fields below describe the class.
    pub valid: bool,
    /// Which plugins are cached and domain-scored, and their keys.
    sig: u64,
    layout: u64,
    /// Node-local plugins that normalize (the tuple's first entries).
    normalizing: usize,
    plugins: Vec<Remembered>,
    /// Per node slot, the domain-scored plugins' raw scores.
    raw: Vec<i64>,
    /// Per node slot, the generation `raw` was computed at.
    generation: Vec<u64>,
    group_of: Vec<u32>,
    groups: Vec<Group>,
    by_tuple: FxHashMap<Tuple, u32>,
    /// The group a node was last placed in (neighbours often share a
    /// tuple: a full build looks most nodes up here, not in `by_tuple`).
    last: Option<u32>,
    free: Vec<u32>,
    /// Per live position: the node's total, `i64::MIN` if not feasible.
    pub tree: MaxTree,
}

/// Inputs of one cycle.
pub(super) struct Inputs<'a, 'b> {
    pub snap: &'a Snapshot,
    pub cached: &'a [CachedScore<'b>],
    pub domain: &'a [DomainScored<'b>],
    pub answers: Vec<DomainScores>,
    /// Identifies the cached and domain-scored plugin sets.
    pub sig: u64,
    pub state: &'a CycleState,
    pub pod: &'a PodInfo,
}

impl SoftIndex {
    fn feasible(cc: &ClassCache, slot: usize) -> bool {
        cc.verdict[slot] == PASS && cc.fast.domains.passes(slot)
    }

    /// Puts node `slot` (feasible) in the group of its raw tuple,
    /// re-scoring what is stale.
    fn place(
        &mut self,
        cc: &mut ClassCache,
        slot: usize,
        inp: &Inputs<'_, '_>,
    ) -> Result<(), String> {
        let id = NodeId(slot as u32);
        let g = inp.snap.generations()[slot];
        refresh_scores(cc, id, g, inp.snap, inp.cached, inp.state, inp.pod)?;
        let nd = inp.domain.len();
        if self.generation[slot] != g {
            let node = inp.snap.node(id);
            for (p, (name, sp, _)) in inp.domain.iter().enumerate() {
                self.raw[slot * nd + p] = sp
                    .score(inp.state, inp.pod, node)
                    .map_err(|s| format!("running Score plugin {name}: {}", s.message()))?;
            }
            self.generation[slot] = g;
        }
        let mut t = Tuple::new();
        for k in 0..self.normalizing {
            t.push(cc.raw[k][slot]);
        }
        t.extend_from_slice(&self.raw[slot * nd..(slot + 1) * nd]);
        // Compared element by element: a tuple is a few integers, and
        // slice equality would call `memcmp` for them.
        let same = |a: &Tuple| a.len() == t.len() && a.iter().zip(&t).all(|(x, y)| x == y);
        let last = self
            .last
            .filter(|&gi| self.groups.get(gi as usize).is_some_and(|g| same(&g.tuple)));
        let gi = match last.or_else(|| self.by_tuple.get(&t).copied()) {
            Some(gi) => gi,
            None => {
                let group = Group {
                    tuple: t.clone(),
                    count: 0,
                    total: 0,
                };
                let gi = match self.free.pop() {
                    Some(gi) => {
                        self.groups[gi as usize] = group;
                        gi
                    }
                    None => {
                        self.groups.push(group);
                        (self.groups.len() - 1) as u32
                    }
                };
                self.by_tuple.insert(t, gi);
                gi
            }
        };
        self.groups[gi as usize].count += 1;
        self.group_of[slot] = gi;
        self.last = Some(gi);
        Ok(())
    }

    /// Takes node `slot` out of its group, if in one.
    fn leave(&mut self, slot: usize) {
        let gi = std::mem::replace(&mut self.group_of[slot], NO_GROUP);
        if gi != NO_GROUP {
            self.groups[gi as usize].count -= 1;
        }
    }

    /// Recomputes every non-empty group's total; `Ok(None)` when a
    /// node-local plugin that normalizes has several raw scores (take the
    /// scan), else whether a group that was non-empty before (`had`) got
    /// another total.
    fn totals(&mut self, inp: &Inputs<'_, '_>, had: &[bool]) -> Result<Option<bool>, String> {
        let width = self.normalizing + inp.domain.len();
        let mut distinct: Vec<Vec<i64>> = vec![Vec::new(); width];
        for g in self.groups.iter().filter(|g| g.count > 0) {
            for (k, v) in g.tuple.iter().enumerate() {
                distinct[k].push(*v);
            }
        }
        for d in &mut distinct {
            d.sort_unstable();
            d.dedup();
        }
        if distinct[..self.normalizing].iter().any(|d| d.len() > 1) {
            return Ok(None);
        }
        // Per domain-scored plugin, its distinct raw scores normalized.
        let mut normalized: Vec<Vec<i64>> = Vec::with_capacity(inp.domain.len());
        for (p, (name, sp, _)) in inp.domain.iter().enumerate() {
            let values = &distinct[self.normalizing + p];
            if !sp.has_normalize() || values.len() < 2 {
                // One value normalizes to a constant: no effect on the
                // choice, as the scan's shortcut.
                normalized.push(if sp.has_normalize() {
                    vec![0; values.len()]
                } else {
                    values.clone()
                });
                continue;
            }
            let mut scores: Vec<NodeScore> = values
                .iter()
                .map(|v| NodeScore {
                    node: NodeId(0),
                    score: *v,
                })
                .collect();
            let s = sp.normalize(inp.state, inp.pod, &mut scores);
            if !s.is_success() {
                return Err(format!(
                    "running NormalizeScore of plugin {name}: {}",
                    s.message()
                ));
            }
            normalized.push(scores.into_iter().map(|s| s.score).collect());
        }
        let mut moved = false;
        for (gi, g) in self.groups.iter_mut().enumerate() {
            if g.count == 0 {
                continue;
            }
            let mut total = 0i64;
            for (p, (_, _, w)) in inp.domain.iter().enumerate() {
                let k = self.normalizing + p;
                let at = distinct[k].binary_search(&g.tuple[k]).unwrap_or(0);
                total += normalized[p][at] * w;
            }
            if had.get(gi).copied().unwrap_or(false) && total != g.total {
                moved = true;
            }
            g.total = total;
        }
        Ok(Some(moved))
    }

    /// Drops empty groups.
    fn sweep(&mut self) {
        self.last = None;
        for (gi, g) in self.groups.iter_mut().enumerate() {
            if g.count == 0 && !g.tuple.is_empty() {
                self.by_tuple.remove(&g.tuple);
                g.tuple.clear();
                self.free.push(gi as u32);
            }
        }
    }

    /// The leaf of node `slot`.
    fn leaf(&self, cc: &ClassCache, slot: usize) -> i64 {
        match self.group_of[slot] {
            NO_GROUP => i64::MIN,
            gi => cc.plain_total[slot] + self.groups[gi as usize].total,
        }
    }

    /// Builds the tree from every feasible node's leaf.
    fn build_tree(&mut self, cc: &ClassCache, snap: &Snapshot) {
        let mut leaves = vec![i64::MIN; snap.num_nodes()];
        for &id in cc.fast.candidates() {
            if let Some(pos) = snap.live_position(id) {
                leaves[pos] = self.leaf(cc, id.index());
            }
        }
        self.tree = MaxTree::build(&leaves);
    }
}

/// Brings the class's domain-scored index up to date (from scratch when
/// needed) and its tree with it. `Ok(false)`: take the scan (a node-local
/// plugin that normalizes varies across the feasible nodes).
pub(super) fn update(cc: &mut ClassCache, inp: Inputs<'_, '_>) -> Result<bool, String> {
    let mut soft = std::mem::take(&mut cc.fast.soft);
    let r = update_with(&mut soft, cc, inp);
    soft.valid = matches!(r, Ok(true));
    cc.fast.soft = soft;
    // The plain tree did not follow the pending nodes.
    cc.fast.tree_valid = false;
    r
}

fn update_with(
    soft: &mut SoftIndex,
    cc: &mut ClassCache,
    mut inp: Inputs<'_, '_>,
) -> Result<bool, String> {
    let snap = inp.snap;
    let cap = snap.node_capacity();
    let normalizing = inp
        .cached
        .iter()
        .filter(|(_, sp, _)| sp.has_normalize())
        .count();
    let answers = std::mem::take(&mut inp.answers);
    let mut full = !soft.valid
        || soft.sig != inp.sig
        || soft.layout != snap.layout_version()
        || soft.generation.len() != cap
        || soft.normalizing != normalizing
        || soft.tree.len() < snap.num_nodes()
        || soft.plugins.len() != answers.len()
        || soft
            .plugins
            .iter()
            .zip(&answers)
            .any(|(r, a)| !r.same_shape(a));
    let nd = inp.domain.len();
    if full {
        *soft = SoftIndex {
            sig: inp.sig,
            layout: snap.layout_version(),
            normalizing,
            plugins: answers
                .into_iter()
                .map(|a| Remembered::new(a, cap))
                .collect(),
            raw: vec![0; cap * nd],
            generation: vec![NEVER; cap],
            group_of: vec![NO_GROUP; cap],
            ..SoftIndex::default()
        };
        cc.fast.pending.clear();
        let feasible = cc.fast.candidates().to_vec();
        for id in feasible {
            soft.place(cc, id.index(), &inp)?;
        }
    } else {
        let mut dirty: Vec<u32> = Vec::new();
        for (r, a) in soft.plugins.iter_mut().zip(answers) {
            r.take_changes(a, &mut dirty);
        }
        for &slot in &dirty {
            soft.generation[slot as usize] = NEVER;
        }
        dirty.extend(cc.fast.pending.drain(..).map(|id| id.0));
        dirty.sort_unstable();
        dirty.dedup();
        let had: Vec<bool> = soft.groups.iter().map(|g| g.count > 0).collect();
        let mut set = Vec::with_capacity(dirty.len());
        for slot in dirty {
            let s = slot as usize;
            let Some(pos) = snap.live_position(NodeId(slot)) else {
                soft.leave(s);
                continue;
            };
            soft.leave(s);
            if SoftIndex::feasible(cc, s) {
                soft.place(cc, s, &inp)?;
            }
            set.push((pos, s));
        }
        match soft.totals(&inp, &had)? {
            None => return Ok(false),
            Some(true) => {
                full = true;
            }
            Some(false) => {
                for &(pos, s) in &set {
                    let v = soft.leaf(cc, s);
                    soft.tree.set_leaf(pos, v);
                }
                let positions: Vec<usize> = set.iter().map(|(p, _)| *p).collect();
                soft.tree.repair(&positions);
            }
        }
        if !full {
            soft.sweep();
            return Ok(true);
        }
        soft.build_tree(cc, snap);
        soft.sweep();
        return Ok(true);
    }
    if soft.totals(&inp, &[])?.is_none() {
        return Ok(false);
    }
    soft.build_tree(cc, snap);
    soft.sweep();
    Ok(true)
}
