//! The cluster as one scheduling cycle sees it.
//!
//! There is one `Snapshot`, owned by the cache and changed only between
//! cycles by the engine thread. A cycle borrows it immutably, so every plugin
//! in the cycle sees the same state and the per-node hot path reads it
//! without locks. Changes are applied in place (a node's entry, a pod's
//! entry), never by rebuilding.

use crate::intern::Sym;
use crate::labels::Selector;
use crate::model::{NamespaceLabels, NodeId, NodeInfo, PodInfo};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// A PodDisruptionBudget, compiled.
#[derive(Clone, Debug)]
pub struct PdbInfo {
    /// Namespace.
    pub namespace: Sym,
    /// Name.
    pub name: Arc<str>,
    /// Which pods it covers; `None` covers none.
    pub selector: Option<Selector>,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i32,
}

/// Where an assigned pod is.
#[derive(Clone, Debug)]
pub struct PodPlacement {
    /// The pod.
    pub pod: Arc<PodInfo>,
    /// Its node.
    pub node: NodeId,
    /// Whether it is only assumed (bind not yet confirmed).
    pub assumed: bool,
}

/// The read-only view of the cluster a cycle works on.
#[derive(Default)]
pub struct Snapshot {
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) by_name: FxHashMap<Sym, NodeId>,
    /// Present nodes, in a stable order.
    pub(crate) live: Vec<NodeId>,
    /// Position of each node in `live` (u32::MAX when absent).
    pub(crate) live_pos: Vec<u32>,
    pub(crate) free_slots: Vec<NodeId>,
    /// `nodes[i].generation`, densely, so per-cycle validity checks touch
    /// 8 bytes per node instead of a whole `NodeInfo`.
    pub(crate) gens: Vec<u64>,
    /// Bumped whenever the order of `live` changes (a node added or
    /// removed), so indexes over live positions know to rebuild.
    pub(crate) layout: u64,
    /// Node ids in the order they changed, since sequence `change_base`.
    pub(crate) change_log: Vec<NodeId>,
    pub(crate) change_base: u64,
    pub(crate) pods: FxHashMap<Arc<str>, PodPlacement>,
    pub(crate) namespaces: NamespaceLabels,
    pub(crate) pdbs: Vec<PdbInfo>,
    pub(crate) image_nodes: FxHashMap<Sym, u32>,
    pub(crate) generation: u64,
    pub(crate) id: SnapshotId,
}

/// A process-unique snapshot identity, drawn when a snapshot is created.
#[derive(Debug)]
pub(crate) struct SnapshotId(u64);

impl Default for SnapshotId {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        SnapshotId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Snapshot {
    /// The node with `id`. Panics on an id this snapshot never issued.
    #[inline]
    pub fn node(&self, id: NodeId) -> &NodeInfo {
        &self.nodes[id.index()]
    }

    /// The node called `name`, if present.
    pub fn node_by_name(&self, name: Sym) -> Option<&NodeInfo> {
        self.by_name
            .get(&name)
            .map(|id| &self.nodes[id.index()])
            .filter(|n| n.present)
    }

    /// The id of the node called `name` (present or placeholder).
    pub fn node_id(&self, name: Sym) -> Option<NodeId> {
        self.by_name.get(&name).copied()
    }

    /// Ids of the nodes that exist, in a stable order.
    #[inline]
    pub fn node_ids(&self) -> &[NodeId] {
        &self.live
    }

    /// The nodes that exist.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> + '_ {
        self.live.iter().map(|id| &self.nodes[id.index()])
    }

    /// How many nodes exist.
    #[inline]
    pub fn num_nodes(&self) -> usize {
        self.live.len()
    }

    /// One past the largest node id issued: size per-node vectors with this.
    #[inline]
    pub fn node_capacity(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's generation, indexed by node id (see
    /// [`NodeInfo::generation`]); a cached per-node result computed at
    /// generation `g` is valid while `generations()[id] == g`.
    #[inline]
    pub fn generations(&self) -> &[u64] {
        &self.gens
    }

    /// Position of a node in [`Snapshot::node_ids`], if it exists.
    #[inline]
    pub fn live_position(&self, id: NodeId) -> Option<usize> {
        match self.live_pos.get(id.index()) {
            Some(&p) if p != u32::MAX => Some(p as usize),
            _ => None,
        }
    }

    /// Version of the order of [`Snapshot::node_ids`]; it changes whenever a
    /// node is added or removed.
    #[inline]
    pub fn layout_version(&self) -> u64 {
        self.layout
    }

    /// Sequence number of the next node change; pass it later to
    /// [`Snapshot::changes_since`].
    #[inline]
    pub fn change_seq(&self) -> u64 {
        self.change_base + self.change_log.len() as u64
    }

    /// Nodes changed since sequence `seq` (with repeats), or `None` when the
    /// log no longer reaches back that far.
    pub fn changes_since(&self, seq: u64) -> Option<&[NodeId]> {
        if seq < self.change_base {
            return None;
        }
        self.change_log.get((seq - self.change_base) as usize..)
    }

    /// A bound or assumed pod by uid.
    pub fn assigned_pod(&self, uid: &str) -> Option<&PodPlacement> {
        self.pods.get(uid)
    }

    /// All bound and assumed pods.
    pub fn assigned_pods(&self) -> impl Iterator<Item = &PodPlacement> + '_ {
        self.pods.values()
    }

    /// Labels of known namespaces.
    pub fn namespace_labels(&self) -> &NamespaceLabels {
        &self.namespaces
    }

    /// PodDisruptionBudgets.
    pub fn pdbs(&self) -> &[PdbInfo] {
        &self.pdbs
    }

    /// On how many nodes an image (normalized name) is present.
    pub fn image_node_count(&self, image: Sym) -> u32 {
        self.image_nodes.get(&image).copied().unwrap_or(0)
    }

    /// Bumped on every change to the snapshot.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Unique in the process. A plugin cache that outlives one cycle keys
    /// on this together with [`Snapshot::generations`], so it never reuses
    /// results computed on another snapshot (another cache, another test).
    pub fn id(&self) -> u64 {
        self.id.0
    }
}
