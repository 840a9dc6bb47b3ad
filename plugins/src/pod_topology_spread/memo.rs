//! Reuse of the count of matching pods across cycles.
//!
//! Counting walks every pod of every node, milliseconds at 16,000 nodes, and
//! consecutive pods are usually replicas of one workload: same namespace,
//! constraints and node affinity/tolerations (one [`Class`]), so every node
//! that has not changed in between contributes the same to their counts. The
//! memo keeps, per class, each node's part (its matching pods per selector
//! and, per constraint, the domain it counts toward when it passes the
//! inclusion policies) and the per-domain totals of those parts. A cycle
//! re-counts only the nodes that changed since the class was last used,
//! found through the snapshot's change log (O(changes)), or by comparing the
//! dense generation array (8 bytes per node) when the log no longer reaches
//! back that far.
//!
//! Invariants:
//! * an entry is used only on the snapshot it was built from
//!   ([`Snapshot::id`]), and a node's part only while the node's generation
//!   is the one it was computed at; generations never repeat for a node slot,
//!   so a stale part is never taken for a fresh one;
//! * an entry's totals equal the sum of its parts, and a domain is in the
//!   totals exactly while at least one node counts toward it (`holders`), so
//!   the totals equal what a walk over every node gives (the tests check
//!   this against random cluster histories);
//! * the lock is taken once in PreFilter and once in PreScore, never on the
//!   per-node path; entries are few (least recently used ones are dropped).

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::cache::Snapshot;
use strata_scheduler::intern::Sym;
use strata_scheduler::labels::{NodeSelector, Selector};
use strata_scheduler::model::{NodeId, NodeInfo, PodInfo, Toleration};

use super::common::{
    Constraint, InclusionChecks, SelectorCounts, SelectorIndex, SelectorMask, has_all_keys,
};

/// Classes remembered at once. Each costs about 100 bytes per node.
pub(super) const CAPACITY: usize = 8;

/// A generation no node has: slots not looked at yet.
const NEVER: u64 = u64::MAX;

/// What decides every node's contribution to an incoming pod's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Class {
    namespace: Sym,
    constraints: Vec<Constraint>,
    /// Nodes lacking a topology key count for nothing.
    require_all: bool,
    checks: InclusionChecks,
    /// The pod's nodeSelector, when `checks` look at affinity.
    node_selector: Option<Selector>,
    /// The pod's required node affinity, when `checks` look at affinity.
    node_affinity: Option<NodeSelector>,
    /// The pod's tolerations, when `checks` look at taints.
    tolerations: Vec<Toleration>,
}

impl Class {
    /// The class of `pod` counted under `constraints`.
    pub(super) fn new(pod: &PodInfo, constraints: &[Constraint], require_all: bool) -> Class {
        let checks = InclusionChecks::new(pod, constraints);
        let spec = &pod.spec;
        Class {
            namespace: pod.namespace,
            constraints: constraints.to_vec(),
            require_all,
            checks,
            node_selector: if checks.affinity() {
                spec.node_selector.clone()
            } else {
                None
            },
            node_affinity: if checks.affinity() {
                spec.required_node_affinity.clone()
            } else {
                None
            },
            tolerations: if checks.taints() {
                spec.tolerations.clone()
            } else {
                Vec::new()
            },
        }
    }
}

/// One node's contribution.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Part {
    /// Matching pods per selector.
    sel: SelectorCounts,
    /// Per constraint, the domain the node counts toward (`None`: the node
    /// does not pass the constraint's inclusion policies).
    vals: SmallVec<[Option<Sym>; 4]>,
}

/// The remembered classes.
#[derive(Default)]
pub(super) struct Memo {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.inner.lock().entries.len())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    tick: u64,
}

/// The counts of one class on one snapshot.
#[derive(Debug)]
pub(super) struct Entry {
    class: Class,
    index: SelectorIndex,
    snapshot: u64,
    /// The snapshot's change sequence the entry is up to date with.
    seq: u64,
    /// Generation each node slot's part was computed at.
    gens: Vec<u64>,
    /// Each node slot's part (`None`: the node counts for nothing).
    parts: Vec<Option<Part>>,
    /// Per constraint: matching pods per domain, over the nodes counting
    /// toward it. Shared with the cycle states built from it.
    totals: Vec<Arc<FxHashMap<Sym, i64>>>,
    /// Per constraint: how many nodes count toward each domain.
    holders: Vec<FxHashMap<Sym, u32>>,
    last_used: u64,
}

impl Memo {
    /// Runs `f` on the counts of `pod` under `constraints`, brought up to
    /// date with `snap`.
    pub(super) fn with<R>(
        &self,
        pod: &PodInfo,
        constraints: &[Constraint],
        require_all: bool,
        snap: &Snapshot,
        f: impl FnOnce(&Entry) -> R,
    ) -> R {
        let class = Class::new(pod, constraints, require_all);
        let mut inner = self.inner.lock();
        let Inner { entries, tick } = &mut *inner;
        *tick += 1;
        // Entries of another snapshot can never be used again.
        entries.retain(|e| e.snapshot == snap.id());
        let idx = match entries.iter().position(|e| e.class == class) {
            Some(i) => i,
            None => {
                if entries.len() >= CAPACITY
                    && let Some(lru) = entries
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.last_used)
                        .map(|(i, _)| i)
                {
                    entries.swap_remove(lru);
                }
                entries.push(Entry::new(class, snap));
                entries.len() - 1
            }
        };
        let e = &mut entries[idx];
        e.last_used = *tick;
        e.refresh(pod, snap);
        f(e)
    }

    /// How many classes are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

impl Entry {
    fn new(class: Class, snap: &Snapshot) -> Entry {
        let n = class.constraints.len();
        Entry {
            index: SelectorIndex::new(&class.constraints),
            class,
            snapshot: snap.id(),
            seq: 0,
            gens: Vec::new(),
            parts: Vec::new(),
            totals: vec![Arc::default(); n],
            holders: vec![FxHashMap::default(); n],
            last_used: 0,
        }
    }

    /// A fresh entry counted from every node (for tests).
    #[cfg(test)]
    pub(super) fn fresh(
        pod: &PodInfo,
        constraints: &[Constraint],
        require_all: bool,
        snap: &Snapshot,
    ) -> Entry {
        let mut e = Entry::new(Class::new(pod, constraints, require_all), snap);
        e.refresh(pod, snap);
        e
    }

    /// Whether two entries hold the same counts (for tests).
    #[cfg(test)]
    pub(super) fn same_counts(&self, other: &Entry) -> bool {
        let parts = |e: &Entry| -> Vec<(usize, Part)> {
            e.parts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.clone().map(|p| (i, p)))
                .collect()
        };
        self.totals == other.totals && self.holders == other.holders && parts(self) == parts(other)
    }

    /// Matching pods per domain of constraint `i`, over the nodes counting
    /// toward it; a domain is present exactly when some node counts toward
    /// it (with or without matching pods).
    #[inline]
    pub(super) fn totals(&self, i: usize) -> &Arc<FxHashMap<Sym, i64>> {
        &self.totals[i]
    }

    /// The matching pods of constraint `i`'s selector on node `id` (0 when
    /// the node counts for nothing).
    #[inline]
    pub(super) fn on_node(&self, id: NodeId, i: usize) -> i64 {
        match (self.index.of(i), self.parts.get(id.index())) {
            (Some(j), Some(Some(p))) => p.sel[j],
            _ => 0,
        }
    }

    /// Re-counts the nodes whose generation moved since the last call.
    fn refresh(&mut self, pod: &PodInfo, snap: &Snapshot) {
        let gens = snap.generations();
        let old_len = self.gens.len();
        if old_len < gens.len() {
            self.gens.resize(gens.len(), NEVER);
            self.parts.resize(gens.len(), None);
        }
        let (mut mask, mut scratch) = self.index.scratch();
        mask.iter_mut().for_each(|m| *m = true);
        let mut changed: SmallVec<[u32; 8]> = SmallVec::new();
        match snap.changes_since(self.seq) {
            Some(log) if old_len > 0 => {
                let candidates = log
                    .iter()
                    .map(|id| id.index())
                    .chain(old_len.min(gens.len())..gens.len());
                for i in candidates {
                    if let (Some(seen), Some(&g)) = (self.gens.get_mut(i), gens.get(i))
                        && *seen != g
                    {
                        *seen = g;
                        changed.push(i as u32);
                    }
                }
            }
            _ => {
                for (i, (seen, &g)) in self.gens.iter_mut().zip(gens).enumerate() {
                    if *seen != g {
                        *seen = g;
                        changed.push(i as u32);
                    }
                }
            }
        }
        self.seq = snap.change_seq();
        for slot in changed {
            self.recount(slot, pod, snap, &mask, &mut scratch);
        }
    }

    /// Replaces one node's part of the totals.
    fn recount(
        &mut self,
        slot: u32,
        pod: &PodInfo,
        snap: &Snapshot,
        mask: &SelectorMask,
        scratch: &mut SelectorCounts,
    ) {
        let s = slot as usize;
        if let Some(old) = self.parts[s].take() {
            self.apply(&old, -1);
        }
        let node = snap.node(NodeId(slot));
        if let Some(part) = self.part_of(node, pod, mask, scratch) {
            self.apply(&part, 1);
            self.parts[s] = Some(part);
        }
    }

    /// A node's contribution, `None` when it counts for nothing.
    fn part_of(
        &self,
        node: &NodeInfo,
        pod: &PodInfo,
        mask: &SelectorMask,
        scratch: &mut SelectorCounts,
    ) -> Option<Part> {
        let c = &self.class;
        // Only nodes that exist take part (as in `Snapshot::nodes`).
        if !node.present || (c.require_all && !has_all_keys(node, &c.constraints)) {
            return None;
        }
        let inc = c.checks.of(pod, node);
        self.index.count(&node.pods, c.namespace, mask, scratch);
        Some(Part {
            sel: scratch.clone(),
            vals: c
                .constraints
                .iter()
                .map(|k| {
                    k.includes(inc)
                        .then(|| node.labels.get(k.key).unwrap_or(Sym::EMPTY))
                })
                .collect(),
        })
    }

    /// Adds (`sign` 1) or takes away (-1) a part from the totals.
    fn apply(&mut self, part: &Part, sign: i64) {
        for (i, v) in part.vals.iter().enumerate() {
            let Some(v) = *v else { continue };
            let n = self.index.of(i).map_or(0, |j| part.sel[j]) * sign;
            let totals = Arc::make_mut(&mut self.totals[i]);
            let holders = self.holders[i].entry(v).or_insert(0);
            if sign > 0 {
                *holders += 1;
                *totals.entry(v).or_insert(0) += n;
            } else {
                *holders = holders.saturating_sub(1);
                if *holders == 0 {
                    self.holders[i].remove(&v);
                    totals.remove(&v);
                } else if let Some(t) = totals.get_mut(&v) {
                    *t += n;
                }
            }
        }
    }
}
