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
//!
//! Domains are dense ids from the per-key [`DomainIndex`] kept next to the
//! entries (`domains.rs`), so the totals are arrays indexed by domain id
//! ([`ABSENT`] where no node counts toward the domain) and Filter and Score
//! read `totals[domain_of[node]]`. An entry remembers the epoch of each
//! key's index and starts over when it changes (ids renumbered).

use parking_lot::Mutex;
#[cfg(test)]
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::cache::ChangeTracker;
use strata_scheduler::labels::{NodeSelector, Selector};
use strata_scheduler::model::Toleration;
use strata_scheduler::sdk::{NodeId, NodeInfo, PodInfo, Snapshot, Sym};

use super::common::{
    Constraint, InclusionChecks, SelectorCounts, SelectorIndex, SelectorMask, has_all_keys,
};
use crate::common::topology_domains::{DomainIndex, EMPTY, KeyView, NONE};

/// The total of a domain no node counts toward (not an eligible domain).
pub(super) const ABSENT: i64 = -1;

/// Classes remembered at once. Each costs about 100 bytes per node.
pub(super) const CAPACITY: usize = 8;

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
    /// Per constraint, the domain id the node counts toward (`None`: the
    /// node does not pass the constraint's inclusion policies).
    vals: SmallVec<[Option<u32>; 4]>,
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
    domains: DomainIndex,
    tick: u64,
}

/// The counts of one class on one snapshot.
#[derive(Debug)]
pub(super) struct Entry {
    class: Class,
    index: SelectorIndex,
    snapshot: u64,
    /// Which node slots changed since the parts were last brought up to
    /// date.
    changes: ChangeTracker,
    /// Per constraint: the epoch of its key's domain index the ids are
    /// from.
    epochs: SmallVec<[u64; 4]>,
    /// Each node slot's part (`None`: the node counts for nothing).
    parts: Vec<Option<Part>>,
    /// Per constraint, by domain id: matching pods over the nodes counting
    /// toward the domain, [`ABSENT`] when none does. Shared with the cycle
    /// states built from it.
    totals: Vec<Arc<Vec<i64>>>,
    /// Per constraint, by domain id: how many nodes count toward it.
    holders: Vec<Vec<u32>>,
    /// Per constraint: how many domains some node counts toward.
    eligible: Vec<usize>,
    last_used: u64,
}

impl Memo {
    /// Runs `f` on the counts of `pod` under `constraints`, brought up to
    /// date with `snap`, and on each constraint's key domains.
    pub(super) fn with<R>(
        &self,
        pod: &PodInfo,
        constraints: &[Constraint],
        require_all: bool,
        snap: &Snapshot,
        f: impl FnOnce(&Entry, &[KeyView]) -> R,
    ) -> R {
        let class = Class::new(pod, constraints, require_all);
        let mut inner = self.inner.lock();
        let Inner {
            entries,
            domains,
            tick,
        } = &mut *inner;
        *tick += 1;
        let views = key_views(domains, constraints, snap, *tick);
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
        e.refresh(pod, snap, &views);
        f(e, &views)
    }

    /// How many keys are indexed.
    #[cfg(test)]
    pub(super) fn keys(&self) -> usize {
        self.inner.lock().domains.len()
    }

    /// How many classes are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

/// Each constraint's key domains, refreshed once per distinct key.
fn key_views(
    domains: &mut DomainIndex,
    constraints: &[Constraint],
    snap: &Snapshot,
    tick: u64,
) -> SmallVec<[KeyView; 4]> {
    let mut views: SmallVec<[KeyView; 4]> = SmallVec::new();
    for (i, c) in constraints.iter().enumerate() {
        let v = match constraints[..i].iter().position(|p| p.key == c.key) {
            Some(j) => views[j].clone(),
            None => domains.refresh(c.key, snap, tick),
        };
        views.push(v);
    }
    views
}

impl Entry {
    fn new(class: Class, snap: &Snapshot) -> Entry {
        let n = class.constraints.len();
        Entry {
            index: SelectorIndex::new(&class.constraints),
            class,
            snapshot: snap.id(),
            changes: ChangeTracker::new(),
            epochs: SmallVec::new(),
            parts: Vec::new(),
            totals: vec![Arc::default(); n],
            holders: vec![Vec::new(); n],
            eligible: vec![0; n],
            last_used: 0,
        }
    }

    /// Forgets every part (the domain ids changed).
    fn reset(&mut self) {
        let n = self.class.constraints.len();
        self.changes.reset();
        self.parts.clear();
        self.totals = vec![Arc::default(); n];
        self.holders = vec![Vec::new(); n];
        self.eligible = vec![0; n];
    }

    /// A fresh entry counted from every node with its own domain index
    /// (for tests).
    #[cfg(test)]
    pub(super) fn fresh(
        pod: &PodInfo,
        constraints: &[Constraint],
        require_all: bool,
        snap: &Snapshot,
    ) -> (Entry, SmallVec<[KeyView; 4]>) {
        let mut domains = DomainIndex::default();
        let views = key_views(&mut domains, constraints, snap, 1);
        let mut e = Entry::new(Class::new(pod, constraints, require_all), snap);
        e.refresh(pod, snap, &views);
        (e, views)
    }

    /// Whether two entries hold the same counts, domains compared by value
    /// (for tests).
    #[cfg(test)]
    pub(super) fn same_counts(&self, views: &[KeyView], other: &Entry, others: &[KeyView]) -> bool {
        type Named = (
            Vec<(usize, SelectorCounts, Vec<Option<Sym>>)>,
            Vec<Vec<(Sym, i64, u32)>>,
        );
        let named = |e: &Entry, vs: &[KeyView]| -> Named {
            let parts = e
                .parts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    p.as_ref().map(|p| {
                        let vals = p
                            .vals
                            .iter()
                            .zip(vs)
                            .map(|(d, v)| d.map(|d| v.value(d)))
                            .collect();
                        (i, p.sel.clone(), vals)
                    })
                })
                .collect();
            let totals = (0..e.totals.len())
                .map(|i| {
                    let mut t: Vec<(Sym, i64, u32)> = e.totals[i]
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n != ABSENT)
                        .map(|(d, n)| (vs[i].value(d as u32), *n, e.holders[i][d]))
                        .collect();
                    t.sort_unstable_by_key(|x| x.0.as_str());
                    t
                })
                .collect();
            (parts, totals)
        };
        let consistent = |e: &Entry| {
            (0..e.totals.len()).all(|i| {
                e.eligible[i] == e.holders[i].iter().filter(|h| **h > 0).count()
                    && e.totals[i]
                        .iter()
                        .zip(&e.holders[i])
                        .all(|(t, h)| (*t == ABSENT) == (*h == 0))
            })
        };
        consistent(self) && consistent(other) && named(self, views) == named(other, others)
    }

    /// Matching pods per domain of constraint `i` by value, over the nodes
    /// counting toward it; a domain is present exactly when some node counts
    /// toward it (for tests).
    #[cfg(test)]
    pub(super) fn totals_by_value(&self, i: usize, view: &KeyView) -> FxHashMap<Sym, i64> {
        self.totals[i]
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != ABSENT)
            .map(|(d, n)| (view.value(d as u32), *n))
            .collect()
    }

    /// Matching pods of constraint `i` by domain id, [`ABSENT`] for domains
    /// no node counts toward (ids beyond the end are absent too).
    #[inline]
    pub(super) fn totals(&self, i: usize) -> &Arc<Vec<i64>> {
        &self.totals[i]
    }

    /// How many domains of constraint `i` some node counts toward.
    #[inline]
    pub(super) fn eligible(&self, i: usize) -> usize {
        self.eligible[i]
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
    fn refresh(&mut self, pod: &PodInfo, snap: &Snapshot, views: &[KeyView]) {
        if self.epochs.len() != views.len()
            || self.epochs.iter().zip(views).any(|(e, v)| *e != v.epoch)
        {
            self.reset();
            self.epochs = views.iter().map(|v| v.epoch).collect();
        }
        for (i, v) in views.iter().enumerate() {
            if self.holders[i].len() < v.len {
                self.holders[i].resize(v.len, 0);
                Arc::make_mut(&mut self.totals[i]).resize(v.len, ABSENT);
            }
        }
        let slots = snap.generations().len();
        if self.parts.len() < slots {
            self.parts.resize(slots, None);
        }
        let (mut mask, mut scratch) = self.index.scratch();
        mask.iter_mut().for_each(|m| *m = true);
        let changed = self.changes.changed(snap);
        for slot in changed {
            self.recount(slot, pod, snap, views, &mask, &mut scratch);
        }
    }

    /// Replaces one node's part of the totals.
    fn recount(
        &mut self,
        slot: u32,
        pod: &PodInfo,
        snap: &Snapshot,
        views: &[KeyView],
        mask: &SelectorMask,
        scratch: &mut SelectorCounts,
    ) {
        let s = slot as usize;
        if let Some(old) = self.parts[s].take() {
            self.apply(&old, -1);
        }
        let node = snap.node(NodeId(slot));
        if let Some(part) = self.part_of(node, pod, views, mask, scratch) {
            self.apply(&part, 1);
            self.parts[s] = Some(part);
        }
    }

    /// A node's contribution, `None` when it counts for nothing.
    fn part_of(
        &self,
        node: &NodeInfo,
        pod: &PodInfo,
        views: &[KeyView],
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
            // A missing key counts as the empty value (only possible
            // without `require_all`).
            vals: c
                .constraints
                .iter()
                .zip(views)
                .map(|(k, v)| {
                    k.includes(inc).then(|| match v.of(node.id) {
                        NONE => EMPTY,
                        d => d,
                    })
                })
                .collect(),
        })
    }

    /// Adds (`sign` 1) or takes away (-1) a part from the totals.
    fn apply(&mut self, part: &Part, sign: i64) {
        for (i, d) in part.vals.iter().enumerate() {
            let Some(d) = *d else { continue };
            let d = d as usize;
            let n = self.index.of(i).map_or(0, |j| part.sel[j]) * sign;
            let totals = Arc::make_mut(&mut self.totals[i]);
            if totals.len() <= d {
                totals.resize(d + 1, ABSENT);
                self.holders[i].resize(d + 1, 0);
            }
            let holders = &mut self.holders[i][d];
            if sign > 0 {
                *holders += 1;
                if *holders == 1 {
                    self.eligible[i] += 1;
                    totals[d] = n;
                } else {
                    totals[d] += n;
                }
            } else if *holders > 0 {
                *holders -= 1;
                if *holders == 0 {
                    self.eligible[i] -= 1;
                    totals[d] = ABSENT;
                } else {
                    totals[d] += n;
                }
            }
        }
    }
}
