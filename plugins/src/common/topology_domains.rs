//! Dense topology domains: for a node label key used as a topology key,
//! every node slot gets a small domain id (PodTopologySpread and
//! InterPodAffinity both read it), so the per-node path reads
//! `counts[domain_of[node]]` (two array reads) instead of a binary search in
//! the node's labels and a hash lookup of the value.
//!
//! A [`KeyDomains`] is kept per key and per snapshot, registered the first
//! time a pod's constraint names the key and brought up to date at the start
//! of every cycle that uses it from the snapshot's change log (O(changed
//! nodes)), or by comparing the dense generation array when the log no
//! longer reaches back. Node added, relabelled or deleted: its slot is
//! re-read.
//!
//! Invariants:
//! * `of_node[slot]` is the id of the node's value for the key while the
//!   node is present and has the key, [`NONE`] otherwise, as of the
//!   generation its change tracker last saw; after [`KeyDomains::refresh`]
//!   on a snapshot every slot is current;
//! * id 0 is always the empty value (`Sym::EMPTY`), which also stands for a
//!   missing key where the scoring rules treat it so;
//! * ids are never reused while the `epoch` stays the same. Values no node
//!   holds any more keep their id until the index is rebuilt (when fewer
//!   than half of the ids are held), which draws a new epoch: whoever keeps
//!   arrays indexed by domain id compares epochs and starts over on a change.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use strata_scheduler::cache::ChangeTracker;
use strata_scheduler::sdk::{NodeId, NodeInfo, Snapshot, Sym};

/// The domain of a node without the key (or of an absent node slot).
pub(crate) const NONE: u32 = u32::MAX;

/// The domain id of the empty value.
pub(crate) const EMPTY: u32 = 0;

/// Ids below this many are never worth a rebuild.
const REBUILD_MIN: usize = 64;

/// Process-unique epochs, so an index rebuilt or re-registered is never
/// taken for the one an array was built against.
fn next_epoch() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The dense domains of one label key on one snapshot.
#[derive(Debug)]
pub(crate) struct KeyDomains {
    key: Sym,
    snapshot: u64,
    epoch: u64,
    /// Which slots changed since the index was last brought up to date.
    changes: ChangeTracker,
    /// Node slot -> domain id ([`NONE`]: absent or without the key). Shared
    /// with the cycle states that read it; copied on write only while one
    /// still holds it.
    of_node: Arc<Vec<u32>>,
    ids: FxHashMap<Sym, u32>,
    /// Domain id -> value.
    values: Vec<Sym>,
    /// Domain id -> how many node slots hold it.
    holders: Vec<u32>,
    /// Ids with at least one holder.
    held: usize,
    /// Slots holding some id (present nodes with the key).
    with_key: usize,
    pub(crate) last_used: u64,
}

impl KeyDomains {
    /// An empty index of `key` for `snap` (call [`KeyDomains::refresh`]).
    pub(crate) fn new(key: Sym, snap: &Snapshot) -> KeyDomains {
        let mut k = KeyDomains {
            key,
            snapshot: snap.id(),
            epoch: 0,
            changes: ChangeTracker::new(),
            of_node: Arc::default(),
            ids: FxHashMap::default(),
            values: Vec::new(),
            holders: Vec::new(),
            held: 0,
            with_key: 0,
            last_used: 0,
        };
        k.reset();
        k
    }

    /// Forgets every slot and id and draws a new epoch.
    fn reset(&mut self) {
        self.epoch = next_epoch();
        self.changes.reset();
        self.of_node = Arc::default();
        self.ids.clear();
        self.values.clear();
        self.holders.clear();
        self.held = 0;
        self.with_key = 0;
        self.intern(Sym::EMPTY);
    }

    /// The key.
    #[inline]
    pub(crate) fn key(&self) -> Sym {
        self.key
    }

    /// The snapshot the index belongs to.
    #[inline]
    pub(crate) fn snapshot(&self) -> u64 {
        self.snapshot
    }

    /// What a cycle keeps of the index: its epoch, size and slot domains.
    pub(crate) fn view(&self) -> KeyView {
        KeyView {
            epoch: self.epoch,
            len: self.values.len(),
            held: self.held,
            with_key: self.with_key,
            of_node: self.of_node.clone(),
            #[cfg(test)]
            values: self.values.clone(),
        }
    }

    fn intern(&mut self, v: Sym) -> u32 {
        if let Some(&d) = self.ids.get(&v) {
            return d;
        }
        let d = self.values.len() as u32;
        self.ids.insert(v, d);
        self.values.push(v);
        self.holders.push(0);
        d
    }

    fn set(&mut self, slot: usize, d: u32) {
        // Most changes (pods placed) leave the domain as it was: no copy of
        // an array a cycle state still shares.
        if self.of_node.get(slot) == Some(&d) {
            return;
        }
        let of = Arc::make_mut(&mut self.of_node);
        let old = std::mem::replace(&mut of[slot], d);
        if let Some(h) = self.holders.get_mut(old as usize) {
            *h -= 1;
            self.with_key -= 1;
            if *h == 0 {
                self.held -= 1;
            }
        }
        if let Some(h) = self.holders.get_mut(d as usize) {
            *h += 1;
            self.with_key += 1;
            if *h == 1 {
                self.held += 1;
            }
        }
    }

    /// Brings every slot up to date with `snap` (renumbering, with a new
    /// epoch, when most ids are no longer held).
    pub(crate) fn refresh(&mut self, snap: &Snapshot) {
        let slots = snap.generations().len();
        if self.of_node.len() < slots {
            Arc::make_mut(&mut self.of_node).resize(slots, NONE);
        }
        let changed = self.changes.changed(snap);
        for slot in changed {
            let node = snap.node(NodeId(slot));
            let d = match node.labels.get(self.key) {
                Some(v) if node.present => self.intern(v),
                _ => NONE,
            };
            self.set(slot as usize, d);
        }
        // Values nobody holds any more: renumber once they are the majority.
        if self.values.len() > REBUILD_MIN && self.values.len() > 2 * (self.held + 1) {
            self.reset();
            self.refresh(snap);
        }
    }
}

/// One key's domains as a cycle reads them (the slot array is shared, not
/// copied).
#[derive(Clone, Debug)]
pub(crate) struct KeyView {
    /// The index's epoch (see the module docs).
    pub epoch: u64,
    /// One past the largest domain id.
    pub len: usize,
    /// How many ids some node holds.
    pub held: usize,
    /// How many present nodes have the key.
    pub with_key: usize,
    /// Node slot -> domain id.
    pub of_node: Arc<Vec<u32>>,
    /// Domain id -> value.
    #[cfg(test)]
    pub values: Vec<Sym>,
}

impl KeyView {
    /// The domain of node slot `id` ([`NONE`] without the key).
    #[inline]
    pub(crate) fn of(&self, id: NodeId) -> u32 {
        self.of_node.get(id.index()).copied().unwrap_or(NONE)
    }

    /// The value of domain `d`.
    #[cfg(test)]
    pub(crate) fn value(&self, d: u32) -> Sym {
        self.values.get(d as usize).copied().unwrap_or(Sym::EMPTY)
    }
}

/// Finds a node's slot from where its `NodeInfo` lives, without reading it.
///
/// Filter gets a `&NodeInfo`, and reading even its `id` is a cache miss per
/// node when no other filter touched that part of it (the engine skips
/// node-local filters whose answer it remembers): on 16,000 nodes that miss
/// was most of PodTopologySpread's Filter. The snapshot keeps its nodes in
/// one array indexed by id, so a node inside that array is found by address
/// arithmetic alone. A node anywhere else (preemption's what-if copies) is
/// outside the array's range, since allocations never overlap, and falls
/// back to its `id`. Valid for the snapshot it was taken from, which no one
/// changes while a cycle runs; no `unsafe` is involved: addresses are only
/// compared, never dereferenced.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodeSlots {
    base: usize,
    len: usize,
}

impl NodeSlots {
    /// The slots of `snap`'s node array.
    pub(crate) fn of(snap: &Snapshot) -> NodeSlots {
        let len = snap.node_capacity();
        if len == 0 {
            return NodeSlots::default();
        }
        NodeSlots {
            base: std::ptr::from_ref(snap.node(NodeId(0))) as usize,
            len,
        }
    }

    /// The slot of `node`.
    #[inline]
    pub(crate) fn id(&self, node: &NodeInfo) -> usize {
        let size = std::mem::size_of::<NodeInfo>();
        let off = (std::ptr::from_ref(node) as usize).wrapping_sub(self.base);
        if off < self.len * size && off.is_multiple_of(size) {
            off / size
        } else {
            id_of_copy(node)
        }
    }
}

/// A node outside the snapshot's array: read its id. Kept out of line so
/// the compiler does not load `id` on every call to pick it with a
/// conditional move (which would bring the miss back).
#[cold]
#[inline(never)]
fn id_of_copy(node: &NodeInfo) -> usize {
    node.id.index()
}

/// The indexes of the keys in use, on one snapshot at a time.
#[derive(Debug, Default)]
pub(crate) struct DomainIndex {
    keys: Vec<KeyDomains>,
}

/// Keys remembered at once.
const KEY_CAPACITY: usize = 16;

impl DomainIndex {
    /// Registers `key` if new, brings its index up to date with `snap` and
    /// returns what a cycle reads of it.
    /// `tick` orders uses: the least recently used key is dropped when there
    /// are too many, never one used at this tick.
    pub(crate) fn refresh(&mut self, key: Sym, snap: &Snapshot, tick: u64) -> KeyView {
        self.keys.retain(|k| k.snapshot() == snap.id());
        let pos = match self.keys.iter().position(|k| k.key() == key) {
            Some(p) => p,
            None => {
                if self.keys.len() >= KEY_CAPACITY
                    && let Some(lru) = self
                        .keys
                        .iter()
                        .enumerate()
                        .filter(|(_, k)| k.last_used != tick)
                        .min_by_key(|(_, k)| k.last_used)
                        .map(|(i, _)| i)
                {
                    self.keys.swap_remove(lru);
                }
                self.keys.push(KeyDomains::new(key, snap));
                self.keys.len() - 1
            }
        };
        let k = &mut self.keys[pos];
        k.last_used = tick;
        k.refresh(snap);
        k.view()
    }

    /// How many keys are indexed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}
