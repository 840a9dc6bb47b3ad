//! Reuse of the walk over existing pods across cycles.
//!
//! Walking 100,000 pods costs milliseconds, and consecutive pods are usually
//! replicas of one workload: same namespace, labels and terms (one
//! [`Class`]), so they get the same contribution from every node that has
//! not changed in between. The memo keeps, per class, each node's part of
//! the totals and the node generation it was computed at; a cycle finds the
//! nodes changed since through the snapshot's change log (or, when the log
//! no longer reaches back, by comparing the dense generation array with its
//! own, 8 bytes per node) and re-walks only the nodes that moved, usually
//! the one the previous replica was placed on.
//!
//! Invariants:
//! * an entry is used only on the snapshot it was built from
//!   ([`Snapshot::id`]), and a node's part only while the node's generation
//!   is the one it was computed at; generations never repeat for a node slot,
//!   so a stale part is never taken for a fresh one;
//! * an entry's totals always equal the sum of its parts, which equals what
//!   a walk over every node would give (the tests check this against
//!   random cluster histories);
//! * the lock is taken once in PreFilter and once in PreScore, never on the
//!   per-node path; entries are few (least recently used ones are dropped).
//!
//! Next to the totals by topology pair, an entry keeps the three filter
//! totals (`Affinity`, `Anti`, `ExistingAnti`) as dense arrays per key,
//! indexed by the key's domain ids (the plugin's [`DomainIndex`], the one
//! PodTopologySpread uses), so Filter reads `counts[domain_of[node]]`. A
//! part remembers the domain each contribution went to; the entry starts
//! over when a key's index is renumbered (its epoch changes).

use super::scan::{Class, Counts, Target, Walker};
use crate::common::pod_label_index::PodLabelIndex;
use crate::common::topology_domains::{DomainIndex, KeyView};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use strata_scheduler::cache::ChangeTracker;
use strata_scheduler::sdk::{NodeId, Snapshot, Sym};

/// Classes remembered at once. Each costs 8 bytes per node plus its parts.
pub(super) const CAPACITY: usize = 16;

/// One node's contributions, aggregated per total and pair, with the
/// pair's domain id.
type Part = SmallVec<[(Target, Sym, Sym, i64, u32); 4]>;

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

struct Inner {
    entries: Vec<Entry>,
    /// Which nodes hold pods with each label or with terms naming it (a
    /// new entry's candidates).
    labels: PodLabelIndex,
    domains: DomainIndex,
    tick: u64,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            entries: Vec::new(),
            labels: PodLabelIndex::new(true),
            domains: DomainIndex::default(),
            tick: 0,
        }
    }
}

struct Entry {
    class: Class,
    snapshot: u64,
    /// Which node slots changed since the parts were last brought up to
    /// date.
    changes: ChangeTracker,
    /// Parts of the nodes that contribute anything, by slot.
    parts: FxHashMap<u32, Part>,
    counts: Counts,
    /// Key epochs the dense totals' domain ids are from.
    epochs: SmallVec<[(Sym, u64); 4]>,
    last_used: u64,
}

impl Memo {
    /// The totals for the walker's pod on `snap`, brought up to date, and
    /// the domains of `keys` (and of every key the dense totals use).
    pub(super) fn counts(&self, w: &Walker<'_>, snap: &Snapshot, keys: &[Sym]) -> (Counts, Views) {
        let mut inner = self.inner.lock();
        let Inner {
            entries,
            labels,
            domains,
            tick,
        } = &mut *inner;
        *tick += 1;
        // Entries of another snapshot can never be used again.
        entries.retain(|e| e.snapshot == snap.id());
        let idx = match entries.iter().position(|e| w.is_class(&e.class)) {
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
                entries.push(Entry {
                    class: w.class(),
                    snapshot: snap.id(),
                    changes: ChangeTracker::new(),
                    parts: FxHashMap::default(),
                    counts: Counts::default(),
                    epochs: SmallVec::new(),
                    last_used: 0,
                });
                entries.len() - 1
            }
        };
        let e = &mut entries[idx];
        e.last_used = *tick;
        let mut views = Views::default();
        for &k in keys {
            views.get(k, domains, snap, *tick);
        }
        e.refresh(w, snap, domains, labels, &mut views, *tick);
        // The domains of every key a dense total is kept for.
        for d in &e.counts.dense {
            views.get(d.key(), domains, snap, *tick);
        }
        (e.counts.clone(), views)
    }

    /// How many classes are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

/// Key domains fetched during one call, each key refreshed once.
#[derive(Debug, Default)]
pub(super) struct Views(SmallVec<[(Sym, KeyView); 4]>);

impl Views {
    /// The domains of `key`, registered and refreshed on first use.
    fn get(&mut self, key: Sym, domains: &mut DomainIndex, snap: &Snapshot, tick: u64) -> &KeyView {
        let i = match self.0.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.0.push((key, domains.refresh(key, snap, tick)));
                self.0.len() - 1
            }
        };
        &self.0[i].1
    }

    /// The domains of `key`, if fetched.
    pub(super) fn find(&self, key: Sym) -> Option<&KeyView> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl Entry {
    /// Re-walks the nodes whose generation moved since the last call.
    fn refresh(
        &mut self,
        w: &Walker<'_>,
        snap: &Snapshot,
        domains: &mut DomainIndex,
        labels: &mut PodLabelIndex,
        views: &mut Views,
        tick: u64,
    ) {
        // Domain ids renumbered: every part's ids are stale.
        let stale = self
            .epochs
            .iter()
            .any(|&(k, ep)| views.get(k, domains, snap, tick).epoch != ep);
        if stale {
            self.changes.reset();
            self.parts.clear();
            self.counts = Counts::default();
            self.epochs.clear();
        }
        if self.changes.is_empty() {
            // A new entry: walk only the nodes that may hold a pod the
            // incoming pod's terms match or a pod with a term that may
            // refer to it, when the label index can name them. Every
            // other node's part is empty.
            labels.refresh(snap);
            if let Some(slots) = candidates(w, labels) {
                for slot in slots {
                    self.recompute(slot, w, snap, domains, views, tick);
                }
                self.changes.catch_up(snap);
                return;
            }
        }
        // Only slots whose generation moved are re-walked (found through
        // the snapshot's change log when it reaches back far enough).
        let changed = self.changes.changed(snap);
        for slot in changed {
            self.recompute(slot, w, snap, domains, views, tick);
        }
    }

    /// Replaces one node's part of the totals.
    fn recompute(
        &mut self,
        slot: u32,
        w: &Walker<'_>,
        snap: &Snapshot,
        domains: &mut DomainIndex,
        views: &mut Views,
        tick: u64,
    ) {
        if let Some(old) = self.parts.remove(&slot) {
            for (t, k, v, d, dom) in old {
                self.counts.add(t, k, v, -d);
                self.counts.add_dense(t, k, dom, -d);
            }
        }
        let node = snap.node(NodeId(slot));
        // Only nodes that exist take part (as in `Snapshot::nodes`).
        if !node.present || !w.may_contribute(node) {
            return;
        }
        let mut part = Part::new();
        w.visit_node(node, &mut |t, k, v, d| match part
            .iter_mut()
            .find(|e| e.0 == t && e.1 == k && e.2 == v)
        {
            Some(e) => e.3 += d,
            None => part.push((t, k, v, d, 0)),
        });
        part.retain(|e| e.3 != 0);
        for e in part.iter_mut() {
            // The pair's value is the node's label for the key, so its
            // domain is the node's.
            let view = views.get(e.1, domains, snap, tick);
            e.4 = view.of(node.id);
            {
                let epoch = view.epoch;
                let len = view.len;
                if !self.epochs.iter().any(|(k, _)| *k == e.1) {
                    self.epochs.push((e.1, epoch));
                }
                self.counts.ensure_dense(e.0, e.1, len);
            }
        }
        for &(t, k, v, d, dom) in &part {
            self.counts.add(t, k, v, d);
            self.counts.add_dense(t, k, dom, d);
        }
        if !part.is_empty() {
            self.parts.insert(slot, part);
        }
    }
}

/// The node slots whose part may be non-empty for the walker's pod, sorted
/// and without repeats: those holding a pod that one of the pod's terms
/// (the ones the walk looks at) may match, and those holding a pod with a
/// term that may refer to the pod. `None` when a term's selector has no
/// `In` requirement (any node may hold a match).
fn candidates(w: &Walker<'_>, labels: &PodLabelIndex) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    if w.looks_at_every_pod() {
        let aff = &w.pod.spec.affinity;
        let mut terms: SmallVec<[&strata_scheduler::model::AffinityTerm; 4]> =
            aff.required.iter().chain(&aff.required_anti).collect();
        if w.want_score {
            terms.extend(aff.preferred.iter().map(|t| &t.term));
            terms.extend(aff.preferred_anti.iter().map(|t| &t.term));
        }
        for t in terms {
            // A term without a selector matches no pod.
            if let Some(sel) = &t.selector
                && !labels.candidates(sel, &mut out)
            {
                return None;
            }
        }
    }
    labels.term_candidates(&w.pod.labels, &mut out);
    out.sort_unstable();
    out.dedup();
    Some(out)
}
