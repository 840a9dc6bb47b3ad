//! Reuse of the walk over existing pods across cycles.
//!
//! Walking 100,000 pods costs milliseconds, and consecutive pods are usually
//! replicas of one workload: same namespace, labels and terms (one
//! [`Class`]), so they get the same contribution from every node that has
//! not changed in between. The memo keeps, per class, each node's part of
//! the totals and the node generation it was computed at; a cycle compares
//! the snapshot's dense generation array with its own (8 bytes per node) and
//! re-walks only the nodes that moved, usually the one the previous replica
//! was placed on.
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

use super::scan::{Class, Counts, Target, Walker};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use strata_scheduler::cache::Snapshot;
use strata_scheduler::intern::Sym;
use strata_scheduler::model::NodeId;

/// Classes remembered at once. Each costs 8 bytes per node plus its parts.
pub(super) const CAPACITY: usize = 16;

/// A generation no node has: slots not looked at yet.
const NEVER: u64 = u64::MAX;

/// One node's contributions, aggregated per total and pair.
type Part = SmallVec<[(Target, Sym, Sym, i64); 4]>;

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

struct Entry {
    class: Class,
    snapshot: u64,
    /// Generation each node slot's part was computed at.
    gens: Vec<u64>,
    /// Parts of the nodes that contribute anything, by slot.
    parts: FxHashMap<u32, Part>,
    counts: Counts,
    last_used: u64,
}

impl Memo {
    /// The totals for the walker's pod on `snap`, brought up to date.
    pub(super) fn counts(&self, w: &Walker<'_>, snap: &Snapshot) -> Counts {
        let mut inner = self.inner.lock();
        let Inner { entries, tick } = &mut *inner;
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
                    gens: Vec::new(),
                    parts: FxHashMap::default(),
                    counts: Counts::default(),
                    last_used: 0,
                });
                entries.len() - 1
            }
        };
        let e = &mut entries[idx];
        e.last_used = *tick;
        e.refresh(w, snap);
        e.counts.clone()
    }

    /// How many classes are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

impl Entry {
    /// Re-walks the nodes whose generation moved since the last call.
    fn refresh(&mut self, w: &Walker<'_>, snap: &Snapshot) {
        let gens = snap.generations();
        if self.gens.len() < gens.len() {
            self.gens.resize(gens.len(), NEVER);
        }
        let mut changed: SmallVec<[u32; 8]> = SmallVec::new();
        for (i, (seen, &g)) in self.gens.iter_mut().zip(gens).enumerate() {
            if *seen != g {
                *seen = g;
                changed.push(i as u32);
            }
        }
        for slot in changed {
            self.recompute(slot, w, snap);
        }
    }

    /// Replaces one node's part of the totals.
    fn recompute(&mut self, slot: u32, w: &Walker<'_>, snap: &Snapshot) {
        if let Some(old) = self.parts.remove(&slot) {
            for (t, k, v, d) in old {
                self.counts.add(t, k, v, -d);
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
            None => part.push((t, k, v, d)),
        });
        part.retain(|e| e.3 != 0);
        for &(t, k, v, d) in &part {
            self.counts.add(t, k, v, d);
        }
        if !part.is_empty() {
            self.parts.insert(slot, part);
        }
    }
}
