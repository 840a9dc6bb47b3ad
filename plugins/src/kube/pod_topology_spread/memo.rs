//! Reuse of the count of matching pods across cycles.
//!
//! Counting walks every pod of every node, milliseconds at 16,000 nodes, and
//! consecutive pods are usually replicas of one workload: same namespace,
//! constraints and node affinity/tolerations (one [`Class`]), so every node
//! that has not changed in between contributes the same to their counts.
//! What a class needs splits in two, kept apart so that many workloads
//! (each its own selector) share the part that does not depend on the
//! selector:
//!
//! * a [`Shape`] (the class less its namespace and selectors: the
//!   constraints' keys and inclusion policies, the pod's node affinity and
//!   tolerations) says, per node, which domain of each constraint the node
//!   counts toward, and keeps per domain how many nodes do (`holders`): a
//!   domain is eligible exactly while it has one. Every Deployment with a
//!   zone spread and no node affinity shares one shape;
//! * an [`Entry`] (per class) keeps, per node holding any matching pod, its
//!   matching pods per selector and the domains it counted toward, and per
//!   domain the sums of those (`sums`).
//!
//! Both re-count only the nodes that changed since they were last used,
//! found through the snapshot's change log (O(changes)), or by comparing the
//! dense generation array (8 bytes per node) when the log no longer reaches
//! back that far. A new entry (a new workload's first pod) does not walk
//! every node: the plugin's [`PodLabelIndex`] names the nodes holding a pod
//! with one of the values of an `In` requirement of each selector
//! (`matchLabels` gives one), and only those can hold a matching pod; a
//! selector without an `In` requirement falls back to the walk.
//!
//! Invariants:
//! * shapes and entries are used only on the snapshot they were built from
//!   ([`Snapshot::id`]), and a node's part only while the node's generation
//!   is the one it was computed at; generations never repeat for a node slot,
//!   so a stale part is never taken for a fresh one;
//! * after [`Memo::with`] brought a shape and an entry up to date, the
//!   entry's sums equal the sum of its parts, every part's domains are the
//!   shape's for that node, and a domain is eligible exactly while some node
//!   counts toward it, so the totals equal what a walk over every node gives
//!   (the tests check this against random cluster histories);
//! * the lock is taken once in PreFilter and once in PreScore, never on the
//!   per-node path; shapes and entries are few (least recently used ones are
//!   dropped, and rebuilt cheaply if needed again).
//!
//! Domains are dense ids from the per-key [`DomainIndex`] kept next to the
//! entries (`domains.rs`), so the totals are arrays indexed by domain id and
//! Filter and Score read `sums[domain_of[node]]`. Shapes and entries
//! remember the epoch of each key's index and start over when it changes
//! (ids renumbered).

use parking_lot::Mutex;
#[cfg(test)]
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::cache::ChangeTracker;
use strata_scheduler::labels::{NodeSelector, Selector};
use strata_scheduler::model::Toleration;
use strata_scheduler::sdk::{NodeId, NodeInfo, PodInfo, Snapshot, Sym};

use super::common::{Constraint, InclusionChecks, SelectorCounts, SelectorIndex, SelectorMask};
use crate::common::pod_label_index::PodLabelIndex;
use crate::common::topology_domains::{DomainIndex, EMPTY, KeyView, NONE};

/// Classes remembered at once. Each costs 8 bytes per node plus a part per
/// node holding a matching pod.
pub(super) const CAPACITY: usize = 16;

/// Shapes remembered at once. Each costs about 40 bytes per node.
pub(super) const SHAPE_CAPACITY: usize = 8;

/// What decides which domains each node counts toward: a class less its
/// namespace and selectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ShapeKey {
    /// Per constraint: topology key, `nodeAffinityPolicy: Honor`,
    /// `nodeTaintsPolicy: Honor`.
    keys: SmallVec<[(Sym, bool, bool); 4]>,
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

/// What decides every node's contribution to an incoming pod's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Class {
    namespace: Sym,
    /// Per constraint, its selector.
    selectors: SmallVec<[Option<Selector>; 4]>,
    shape: ShapeKey,
}

impl Class {
    /// The class of `pod` counted under `constraints`.
    pub(super) fn new(pod: &PodInfo, constraints: &[Constraint], require_all: bool) -> Class {
        let checks = InclusionChecks::new(pod, constraints);
        let spec = &pod.spec;
        Class {
            namespace: pod.namespace,
            selectors: constraints.iter().map(|c| c.selector.clone()).collect(),
            shape: ShapeKey {
                keys: constraints
                    .iter()
                    .map(|c| (c.key, c.honor_affinity, c.honor_taints))
                    .collect(),
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
            },
        }
    }
}

/// Per constraint, the domain id a node counts toward (`None`: the node
/// does not pass the constraint's inclusion policies).
type Vals = SmallVec<[Option<u32>; 4]>;

/// One node's contribution to an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Part {
    /// Matching pods per selector.
    sel: SelectorCounts,
    /// The domains the node counted toward (its shape's, when counted).
    vals: Vals,
}

/// The remembered shapes and classes.
pub(super) struct Memo {
    inner: Mutex<Inner>,
}

impl Default for Memo {
    fn default() -> Memo {
        Memo {
            inner: Mutex::new(Inner {
                shapes: Vec::new(),
                entries: Vec::new(),
                labels: PodLabelIndex::new(false),
                domains: DomainIndex::default(),
                tick: 0,
            }),
        }
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("Memo")
            .field("shapes", &inner.shapes.len())
            .field("entries", &inner.entries.len())
            .finish()
    }
}

struct Inner {
    shapes: Vec<Shape>,
    entries: Vec<Entry>,
    /// Which nodes hold pods with each label (a new entry's candidates).
    labels: PodLabelIndex,
    domains: DomainIndex,
    tick: u64,
}

/// Which domains each node counts toward, for one shape on one snapshot.
#[derive(Debug)]
pub(super) struct Shape {
    key: ShapeKey,
    snapshot: u64,
    changes: ChangeTracker,
    /// Per constraint: the epoch of its key's domain index the ids are from.
    epochs: SmallVec<[u64; 4]>,
    /// Per node slot: `None` when the node counts for nothing, else the
    /// domains it counts toward.
    vals: Vec<Option<Vals>>,
    /// Per constraint, by domain id: how many nodes count toward it.
    /// Shared with the cycle states built from it.
    holders: Vec<Arc<Vec<u32>>>,
    /// Per constraint: how many domains some node counts toward.
    eligible: Vec<usize>,
    last_used: u64,
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
    /// The parts of counting nodes holding a matching pod, by slot.
    parts: rustc_hash::FxHashMap<u32, Part>,
    /// Per constraint, by domain id: matching pods over the nodes counting
    /// toward the domain (0 for domains no node counts toward). Shared with
    /// the cycle states built from it.
    sums: Vec<Arc<Vec<i64>>>,
    last_used: u64,
}

/// An entry with its shape, both brought up to date: what
/// [`Memo::with`] hands out.
pub(super) struct Counted<'a> {
    entry: &'a Entry,
    shape: &'a Shape,
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
        f: impl FnOnce(&Counted<'_>, &[KeyView]) -> R,
    ) -> R {
        let class = Class::new(pod, constraints, require_all);
        let mut inner = self.inner.lock();
        let Inner {
            shapes,
            entries,
            labels,
            domains,
            tick,
        } = &mut *inner;
        *tick += 1;
        let views = key_views(domains, constraints, snap, *tick);
        // Shapes and entries of another snapshot can never be used again.
        shapes.retain(|e| e.snapshot == snap.id());
        entries.retain(|e| e.snapshot == snap.id());
        let si = match shapes.iter().position(|s| s.key == class.shape) {
            Some(i) => i,
            None => {
                evict_lru(shapes, SHAPE_CAPACITY, |s| s.last_used);
                shapes.push(Shape::new(class.shape.clone(), snap));
                shapes.len() - 1
            }
        };
        let shape = &mut shapes[si];
        shape.last_used = *tick;
        shape.refresh(pod, snap, &views);
        let idx = match entries.iter().position(|e| e.class == class) {
            Some(i) => i,
            None => {
                evict_lru(entries, CAPACITY, |e| e.last_used);
                entries.push(Entry::new(class, constraints, snap));
                entries.len() - 1
            }
        };
        let e = &mut entries[idx];
        e.last_used = *tick;
        e.refresh(snap, &views, shape, labels);
        f(&Counted { entry: e, shape }, &views)
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

    /// How many shapes are remembered.
    #[cfg(test)]
    pub(super) fn shapes(&self) -> usize {
        self.inner.lock().shapes.len()
    }
}

/// Drops the least recently used element when `v` is full.
fn evict_lru<T>(v: &mut Vec<T>, capacity: usize, used: impl Fn(&T) -> u64) {
    if v.len() >= capacity
        && let Some(lru) = v
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| used(e))
            .map(|(i, _)| i)
    {
        v.swap_remove(lru);
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

/// Whether `epochs` are the epochs of `views`.
fn same_epochs(epochs: &[u64], views: &[KeyView]) -> bool {
    epochs.len() == views.len() && epochs.iter().zip(views).all(|(e, v)| *e == v.epoch)
}

impl Shape {
    fn new(key: ShapeKey, snap: &Snapshot) -> Shape {
        let n = key.keys.len();
        Shape {
            key,
            snapshot: snap.id(),
            changes: ChangeTracker::new(),
            epochs: SmallVec::new(),
            vals: Vec::new(),
            holders: vec![Arc::default(); n],
            eligible: vec![0; n],
            last_used: 0,
        }
    }

    /// Re-reads the nodes whose generation moved since the last call.
    fn refresh(&mut self, pod: &PodInfo, snap: &Snapshot, views: &[KeyView]) {
        if !same_epochs(&self.epochs, views) {
            let n = self.key.keys.len();
            self.changes.reset();
            self.vals.clear();
            self.holders = vec![Arc::default(); n];
            self.eligible = vec![0; n];
            self.epochs = views.iter().map(|v| v.epoch).collect();
        }
        for (i, v) in views.iter().enumerate() {
            if self.holders[i].len() < v.len {
                Arc::make_mut(&mut self.holders[i]).resize(v.len, 0);
            }
        }
        let slots = snap.generations().len();
        if self.vals.len() < slots {
            self.vals.resize(slots, None);
        }
        for slot in self.changes.changed(snap) {
            let s = slot as usize;
            if let Some(old) = self.vals[s].take() {
                self.apply(&old, false);
            }
            let new = self.vals_of(snap.node(NodeId(slot)), pod, views);
            if let Some(v) = &new {
                self.apply(v, true);
            }
            self.vals[s] = new;
        }
    }

    /// The domains `node` counts toward, `None` when it counts for nothing.
    fn vals_of(&self, node: &NodeInfo, pod: &PodInfo, views: &[KeyView]) -> Option<Vals> {
        let k = &self.key;
        // Only nodes that exist take part (as in `Snapshot::nodes`).
        if !node.present || (k.require_all && !k.keys.iter().all(|c| node.labels.has(c.0))) {
            return None;
        }
        let inc = k.checks.of(pod, node);
        Some(
            k.keys
                .iter()
                .zip(views)
                .map(|(&(_, affinity, taints), v)| {
                    let included = (!affinity || inc.affinity) && (!taints || inc.taints);
                    // A missing key counts as the empty value (only
                    // possible without `require_all`).
                    included.then(|| match v.of(node.id) {
                        NONE => EMPTY,
                        d => d,
                    })
                })
                .collect(),
        )
    }

    /// Counts a node toward (`add`) or away from its domains.
    fn apply(&mut self, vals: &Vals, add: bool) {
        for (i, d) in vals.iter().enumerate() {
            let Some(d) = *d else { continue };
            let d = d as usize;
            let holders = Arc::make_mut(&mut self.holders[i]);
            if holders.len() <= d {
                holders.resize(d + 1, 0);
            }
            let h = &mut holders[d];
            if add {
                *h += 1;
                if *h == 1 {
                    self.eligible[i] += 1;
                }
            } else if *h > 0 {
                *h -= 1;
                if *h == 0 {
                    self.eligible[i] -= 1;
                }
            }
        }
    }
}

impl Entry {
    fn new(class: Class, constraints: &[Constraint], snap: &Snapshot) -> Entry {
        let n = constraints.len();
        Entry {
            index: SelectorIndex::new(constraints),
            class,
            snapshot: snap.id(),
            changes: ChangeTracker::new(),
            epochs: SmallVec::new(),
            parts: rustc_hash::FxHashMap::default(),
            sums: vec![Arc::default(); n],
            last_used: 0,
        }
    }

    /// Re-counts the nodes whose generation moved since the last call; a
    /// new entry counts only the nodes `labels` names, when it can.
    fn refresh(
        &mut self,
        snap: &Snapshot,
        views: &[KeyView],
        shape: &Shape,
        labels: &mut PodLabelIndex,
    ) {
        if !same_epochs(&self.epochs, views) {
            // Domain ids renumbered: start over.
            self.changes.reset();
            self.parts.clear();
            self.sums = vec![Arc::default(); views.len()];
            self.epochs = views.iter().map(|v| v.epoch).collect();
        }
        for (i, v) in views.iter().enumerate() {
            if self.sums[i].len() < v.len {
                Arc::make_mut(&mut self.sums[i]).resize(v.len, 0);
            }
        }
        let (mut mask, mut scratch) = self.index.scratch();
        mask.iter_mut().for_each(|m| *m = true);
        if self.changes.is_empty() {
            labels.refresh(snap);
            let mut candidates = Vec::new();
            let all_indexed = self
                .index
                .selectors()
                .iter()
                .all(|s| labels.candidates(s, &mut candidates));
            if all_indexed {
                // Only these nodes may hold a matching pod; every other
                // node's part is empty.
                candidates.sort_unstable();
                candidates.dedup();
                for slot in candidates {
                    self.recount(slot, snap, shape, &mask, &mut scratch);
                }
                self.changes.catch_up(snap);
                return;
            }
        }
        for slot in self.changes.changed(snap) {
            self.recount(slot, snap, shape, &mask, &mut scratch);
        }
    }

    /// Replaces one node's part of the sums.
    fn recount(
        &mut self,
        slot: u32,
        snap: &Snapshot,
        shape: &Shape,
        mask: &SelectorMask,
        scratch: &mut SelectorCounts,
    ) {
        if let Some(old) = self.parts.remove(&slot) {
            self.apply(&old, -1);
        }
        let Some(Some(vals)) = shape.vals.get(slot as usize) else {
            return;
        };
        let node = snap.node(NodeId(slot));
        self.index
            .count(&node.pods, self.class.namespace, mask, scratch);
        if scratch.iter().all(|c| *c == 0) {
            return;
        }
        let part = Part {
            sel: scratch.clone(),
            vals: vals.clone(),
        };
        self.apply(&part, 1);
        self.parts.insert(slot, part);
    }

    /// Adds (`sign` 1) or takes away (-1) a part from the sums.
    fn apply(&mut self, part: &Part, sign: i64) {
        for (i, d) in part.vals.iter().enumerate() {
            let (Some(d), Some(j)) = (*d, self.index.of(i)) else {
                continue;
            };
            let d = d as usize;
            let sums = Arc::make_mut(&mut self.sums[i]);
            if sums.len() <= d {
                sums.resize(d + 1, 0);
            }
            sums[d] += part.sel[j] * sign;
        }
    }
}

/// Per constraint, the eligible domains by value with their sums and
/// holders; per node slot with matching pods, its counts per constraint.
#[cfg(test)]
pub(super) type ByValue = (Vec<Vec<(Sym, i64, u32)>>, Vec<(u32, Vec<i64>)>);

impl Counted<'_> {
    /// Matching pods of constraint `i` by domain id, over the nodes
    /// counting toward the domain (0 where none does; ids beyond the end
    /// count 0).
    #[inline]
    pub(super) fn sums(&self, i: usize) -> &Arc<Vec<i64>> {
        &self.entry.sums[i]
    }

    /// How many nodes count toward each domain of constraint `i`, by
    /// domain id (ids beyond the end: none). A domain is eligible exactly
    /// when this is positive.
    #[inline]
    pub(super) fn holders(&self, i: usize) -> &Arc<Vec<u32>> {
        &self.shape.holders[i]
    }

    /// How many domains of constraint `i` some node counts toward.
    #[inline]
    pub(super) fn eligible(&self, i: usize) -> usize {
        self.shape.eligible[i]
    }

    /// The matching pods of constraint `i`'s selector on node `id` (0 when
    /// the node counts for nothing).
    #[inline]
    pub(super) fn on_node(&self, id: NodeId, i: usize) -> i64 {
        match (self.entry.index.of(i), self.entry.parts.get(&id.0)) {
            (Some(j), Some(p)) => p.sel[j],
            _ => 0,
        }
    }

    /// Matching pods per eligible domain of constraint `i` by value (for
    /// tests).
    #[cfg(test)]
    pub(super) fn totals_by_value(&self, i: usize, view: &KeyView) -> FxHashMap<Sym, i64> {
        self.holders(i)
            .iter()
            .enumerate()
            .filter(|(_, h)| **h > 0)
            .map(|(d, _)| {
                let n = self.sums(i).get(d).copied().unwrap_or(0);
                (view.value(d as u32), n)
            })
            .collect()
    }

    /// Everything the counts say, domains by value, for comparing a memo
    /// with a fresh one (for tests): per constraint, the eligible domains
    /// with their sums and holders, and per node its matching pods per
    /// constraint; checks the eligible counts on the way.
    #[cfg(test)]
    pub(super) fn by_value(&self, views: &[KeyView]) -> ByValue {
        let n = views.len();
        let totals = (0..n)
            .map(|i| {
                let h = self.holders(i);
                assert_eq!(
                    self.eligible(i),
                    h.iter().filter(|x| **x > 0).count(),
                    "eligible count"
                );
                for (d, s) in self.sums(i).iter().enumerate() {
                    assert!(
                        *s == 0 || h.get(d).is_some_and(|x| *x > 0),
                        "sum without holder"
                    );
                }
                let mut t: Vec<(Sym, i64, u32)> = h
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| **x > 0)
                    .map(|(d, x)| {
                        let s = self.sums(i).get(d).copied().unwrap_or(0);
                        (views[i].value(d as u32), s, *x)
                    })
                    .collect();
                t.sort_unstable_by_key(|x| x.0.as_str());
                t
            })
            .collect();
        let mut nodes: Vec<(u32, Vec<i64>)> = self
            .entry
            .parts
            .keys()
            .map(|s| (*s, (0..n).map(|i| self.on_node(NodeId(*s), i)).collect()))
            .filter(|(_, c): &(u32, Vec<i64>)| c.iter().any(|x| *x != 0))
            .collect();
        nodes.sort_unstable();
        (totals, nodes)
    }
}
