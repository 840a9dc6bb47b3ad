//! [`ChangeTracker`]: which nodes changed since a reader last looked.
//!
//! Plugins that keep per-node memos across cycles (counts per topology
//! domain, per-node parts of a total) re-read only the nodes whose
//! generation moved. The snapshot's change log names them; when the log no
//! longer reaches back to the reader's last look (or on the first look),
//! every slot's generation is compared instead. Either way a slot is
//! reported once per call, and only if its generation differs from the one
//! seen last.

use super::Snapshot;
use smallvec::SmallVec;

/// Generation of a slot never seen.
const NEVER: u64 = u64::MAX;

/// Remembers, per node slot, the generation last seen, and the snapshot's
/// change sequence it is up to date with.
#[derive(Clone, Debug, Default)]
pub struct ChangeTracker {
    seen: Vec<u64>,
    seq: u64,
}

impl ChangeTracker {
    /// A tracker that has seen nothing: the first
    /// [`ChangeTracker::changed`] reports every node slot.
    pub const fn new() -> ChangeTracker {
        ChangeTracker {
            seen: Vec::new(),
            seq: 0,
        }
    }

    /// Forgets everything seen (the reader dropped its memo).
    pub fn reset(&mut self) {
        self.seen.clear();
        self.seq = 0;
    }

    /// Node slots known (the snapshot's slot count at the last look).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no slot was seen yet.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records every slot's current generation without reporting any: for
    /// a reader that brought its memo up to date some other way (it knew
    /// which few slots could matter). O(slots), a copy.
    pub fn catch_up(&mut self, snap: &Snapshot) {
        self.seen.clear();
        self.seen.extend_from_slice(snap.generations());
        self.seq = snap.change_seq();
    }

    /// The node slots whose generation moved since the last call, each
    /// once; records their new generations. Costs O(changes) when the
    /// snapshot's change log reaches back far enough, O(slots) otherwise.
    pub fn changed(&mut self, snap: &Snapshot) -> SmallVec<[u32; 8]> {
        let gens = snap.generations();
        let old_len = self.seen.len();
        if old_len < gens.len() {
            self.seen.resize(gens.len(), NEVER);
        }
        let mut changed: SmallVec<[u32; 8]> = SmallVec::new();
        match snap.changes_since(self.seq) {
            Some(log) if old_len > 0 => {
                let candidates = log
                    .iter()
                    .map(|id| id.index())
                    .chain(old_len.min(gens.len())..gens.len());
                for i in candidates {
                    if let (Some(seen), Some(&g)) = (self.seen.get_mut(i), gens.get(i))
                        && *seen != g
                    {
                        *seen = g;
                        changed.push(i as u32);
                    }
                }
            }
            _ => {
                for (i, (seen, &g)) in self.seen.iter_mut().zip(gens).enumerate() {
                    if *seen != g {
                        *seen = g;
                        changed.push(i as u32);
                    }
                }
            }
        }
        self.seq = snap.change_seq();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cache_with, node, pod};
    use std::sync::Arc;

    #[test]
    fn reports_every_slot_first_then_only_what_changed() {
        let mut c = cache_with(
            vec![node("a").build(), node("b").build(), node("c").build()],
            vec![],
        );
        let mut t = ChangeTracker::new();
        assert_eq!(t.changed(c.snapshot()).len(), 3);
        assert!(t.changed(c.snapshot()).is_empty(), "nothing moved");
        let b = c.snapshot().node_id(crate::intern::Sym::new("b")).unwrap();
        c.add_pod(Arc::new(pod("p").on("b").build()));
        c.add_pod(Arc::new(pod("q").on("b").build()));
        assert_eq!(
            t.changed(c.snapshot()).as_slice(),
            &[b.0],
            "once, however often"
        );
        c.upsert_node(&node("d").build()).unwrap();
        assert_eq!(t.changed(c.snapshot()).len(), 1, "a new slot");
        t.reset();
        assert_eq!(t.changed(c.snapshot()).len(), 4);
        t.catch_up(c.snapshot());
        assert!(t.changed(c.snapshot()).is_empty(), "caught up");
        c.add_pod(Arc::new(pod("r").on("b").build()));
        assert_eq!(t.changed(c.snapshot()).as_slice(), &[b.0]);
    }

    #[test]
    fn an_invalidated_node_moves_without_telling_observers() {
        let mut c = cache_with(vec![node("a").build(), node("b").build()], vec![]);
        let mut t = ChangeTracker::new();
        t.changed(c.snapshot());
        c.take_dirty();
        let a = c.snapshot().node_id(crate::intern::Sym::new("a")).unwrap();
        let g = c.snapshot().generations()[a.index()];
        c.invalidate_nodes(&[a, crate::model::NodeId(99)]);
        assert!(c.snapshot().generations()[a.index()] > g);
        assert_eq!(t.changed(c.snapshot()).as_slice(), &[a.0]);
        assert!(c.take_dirty().is_empty(), "the node itself did not change");
    }
}
