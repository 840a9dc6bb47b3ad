//! The scheduler's cache: nodes, and the pods bound or assumed on them.
//!
//! A pod goes `assume` (the scheduling cycle picked a node) → `finish_binding`
//! (the bind call returned) → `add_pod` from the cluster (the bind is
//! confirmed). A failed bind `forget`s the assumed pod; an assumed pod whose
//! bind is never confirmed expires after a TTL and is dropped. The cache owns
//! the one [`Snapshot`] that cycles read.

mod changes;
mod snapshot;

pub use changes::ChangeTracker;
pub use snapshot::{PdbInfo, PodPlacement, Snapshot};

use crate::intern::Sym;
use crate::labels::Labels;
use crate::model::{NodeId, NodeInfo, PodInfo};
use crate::resources::ResourceError;
use k8s_openapi::api::core::v1 as corev1;
use std::sync::Arc;
use std::time::Duration;

/// Errors from cache operations; all are bugs or races the caller handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The pod is already in the cache.
    #[error("pod {0} is already assumed or bound")]
    AlreadyPresent(String),
    /// The pod is not in the cache.
    #[error("pod {0} is not in the cache")]
    NotFound(String),
    /// The node is unknown.
    #[error("node {0} is not in the cache")]
    UnknownNode(String),
    /// A node's resources could not be read.
    #[error("node {node}: {source}")]
    BadNode {
        /// The node.
        node: String,
        /// The problem.
        source: ResourceError,
    },
}

/// Change summary of a node update, for requeue decisions.
#[derive(Clone, Debug, Default)]
pub struct NodeChange {
    /// Allocatable changed.
    pub allocatable: bool,
    /// Labels changed.
    pub labels: bool,
    /// Taints changed.
    pub taints: bool,
    /// Schedulability (cordon) changed.
    pub condition: bool,
}

#[derive(Default)]
struct AssumedState {
    /// When the assumption expires; `None` while the bind is in flight.
    deadline: Option<Duration>,
}

/// Nodes and assigned pods.
#[derive(Default)]
pub struct Cache {
    snap: Snapshot,
    assumed: rustc_hash::FxHashMap<Arc<str>, AssumedState>,
    /// Nodes changed since the last [`Cache::take_dirty`].
    dirty: Vec<NodeId>,
    /// Assumption deadlines, earliest first; entries whose pod is no longer
    /// assumed with that deadline are skipped.
    expiry: std::collections::BinaryHeap<std::cmp::Reverse<(Duration, Arc<str>)>>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Cache {
        Cache::default()
    }

    /// The snapshot cycles read.
    #[inline]
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// Records that node `id` changed: its generation is mirrored into the
    /// snapshot's dense array and it is queued for observers.
    fn touched(&mut self, id: NodeId) {
        self.dirty.push(id);
        self.logged(id);
    }

    /// Mirrors node `id`'s generation into the snapshot's dense array and
    /// appends it to the change log (readers of the log re-read it).
    fn logged(&mut self, id: NodeId) {
        self.snap.gens[id.index()] = self.snap.nodes[id.index()].generation;
        let limit = (4 * self.snap.nodes.len()).max(4096);
        if self.snap.change_log.len() >= limit {
            // Readers further behind than this rebuild from scratch.
            self.snap.change_base += self.snap.change_log.len() as u64;
            self.snap.change_log.clear();
        }
        self.snap.change_log.push(id);
    }

    fn slot_for(&mut self, name: Sym) -> NodeId {
        if let Some(id) = self.snap.by_name.get(&name) {
            return *id;
        }
        let id = match self.snap.free_slots.pop() {
            Some(id) => {
                // Generations never go back, so caches keyed on them stay safe
                // when a slot is reused.
                let g = self.snap.gens[id.index()] + 1;
                let mut n = NodeInfo::placeholder(id, name);
                n.generation = g;
                self.snap.nodes[id.index()] = n;
                self.snap.gens[id.index()] = g;
                id
            }
            None => {
                let id = NodeId(self.snap.nodes.len() as u32);
                self.snap.nodes.push(NodeInfo::placeholder(id, name));
                self.snap.live_pos.push(u32::MAX);
                self.snap.gens.push(0);
                id
            }
        };
        self.snap.by_name.insert(name, id);
        id
    }

    fn set_live(&mut self, id: NodeId, live: bool) {
        let pos = self.snap.live_pos[id.index()];
        match (live, pos == u32::MAX) {
            (true, true) => {
                self.snap.live_pos[id.index()] = self.snap.live.len() as u32;
                self.snap.live.push(id);
                self.snap.layout += 1;
            }
            (false, false) => {
                let last = *self.snap.live.last().expect("live list not empty");
                self.snap.live.swap_remove(pos as usize);
                if last != id {
                    self.snap.live_pos[last.index()] = pos;
                }
                self.snap.live_pos[id.index()] = u32::MAX;
                self.snap.layout += 1;
            }
            _ => {}
        }
    }

    fn count_images(&mut self, id: NodeId, delta: i32) {
        for (img, _) in &self.snap.nodes[id.index()].images {
            let c = self.snap.image_nodes.entry(*img).or_default();
            *c = c.saturating_add_signed(delta);
        }
    }

    /// Adds or updates a node; returns its id and what changed.
    pub fn upsert_node(&mut self, node: &corev1::Node) -> Result<(NodeId, NodeChange), CacheError> {
        let name = Sym::new(node.metadata.name.as_deref().unwrap_or(""));
        let id = self.slot_for(name);
        let was_present = self.snap.nodes[id.index()].present;
        if was_present {
            self.count_images(id, -1);
        }
        let n = &mut self.snap.nodes[id.index()];
        let before = (
            n.allocatable.clone(),
            n.labels.clone(),
            n.taints.clone(),
            n.unschedulable,
        );
        let res = n.set_node(node);
        if let Err(source) = res {
            // Keep the node out of scheduling rather than half-updated.
            n.present = false;
            n.generation += 1;
            self.set_live(id, false);
            self.touched(id);
            return Err(CacheError::BadNode {
                node: name.to_string(),
                source,
            });
        }
        let change = NodeChange {
            allocatable: !was_present || before.0 != n.allocatable,
            labels: !was_present || before.1 != n.labels,
            taints: !was_present || before.2 != n.taints,
            condition: !was_present || before.3 != n.unschedulable,
        };
        self.count_images(id, 1);
        self.set_live(id, true);
        self.touched(id);
        Ok((id, change))
    }

    /// Removes a node. Pods still reported on it keep a placeholder so their
    /// usage is not lost if the node comes back.
    pub fn remove_node(&mut self, name: Sym) -> Option<NodeId> {
        let id = *self.snap.by_name.get(&name)?;
        if self.snap.nodes[id.index()].present {
            self.count_images(id, -1);
        }
        self.set_live(id, false);
        let n = &mut self.snap.nodes[id.index()];
        n.present = false;
        n.generation += 1;
        let empty = n.pods.is_empty();
        self.touched(id);
        if empty {
            self.snap.by_name.remove(&name);
            self.snap.free_slots.push(id);
        }
        self.snap.generation += 1;
        Some(id)
    }

    /// Records that the scheduler placed `pod` on `node` before the bind is
    /// confirmed.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: NodeId) -> Result<(), CacheError> {
        if self.snap.pods.contains_key(&pod.uid) {
            return Err(CacheError::AlreadyPresent(pod.key()));
        }
        if node.index() >= self.snap.nodes.len() || !self.snap.nodes[node.index()].present {
            return Err(CacheError::UnknownNode(format!("{node:?}")));
        }
        self.snap.nodes[node.index()].add_pod(pod.clone());
        self.touched(node);
        self.assumed
            .insert(pod.uid.clone(), AssumedState::default());
        self.snap.pods.insert(
            pod.uid.clone(),
            PodPlacement {
                pod,
                node,
                assumed: true,
            },
        );
        self.snap.generation += 1;
        Ok(())
    }

    /// The bind call for an assumed pod returned; start its expiry clock.
    pub fn finish_binding(&mut self, uid: &str, now: Duration, ttl: Duration) {
        if let Some(a) = self.assumed.get_mut(uid) {
            // A configured TTL is bounded, but the clock must not overflow
            // whatever it is given.
            let d = now.saturating_add(ttl);
            a.deadline = Some(d);
            self.expiry.push(std::cmp::Reverse((d, uid.into())));
        }
    }

    /// Drops an assumed pod (its bind failed or it was rejected at Permit).
    pub fn forget(&mut self, uid: &str) -> Result<Arc<PodInfo>, CacheError> {
        if self.assumed.remove(uid).is_none() {
            return Err(CacheError::NotFound(uid.to_owned()));
        }
        self.remove_pod(uid)
            .ok_or_else(|| CacheError::NotFound(uid.to_owned()))
    }

    /// Whether `uid` is assumed (not yet confirmed).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.assumed.contains_key(uid)
    }

    /// A bound pod reported by the cluster. Confirms an assumed pod, moves a
    /// pod whose node changed, or adds a new one. Returns the node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) -> Option<NodeId> {
        let node_name = pod.bound_node?;
        if pod.terminal {
            self.remove_pod(&pod.uid);
            return None;
        }
        let id = self.slot_for(node_name);
        if let Some(existing) = self.snap.pods.get(&pod.uid) {
            if existing.node == id {
                // Confirmation or update on the same node: swap the object in
                // (labels may have changed) keeping the accounting exact.
                self.assumed.remove(&pod.uid);
                let n = &mut self.snap.nodes[id.index()];
                n.remove_pod(&pod.uid);
                n.add_pod(pod.clone());
                self.touched(id);
                self.snap.pods.insert(
                    pod.uid.clone(),
                    PodPlacement {
                        pod,
                        node: id,
                        assumed: false,
                    },
                );
                self.snap.generation += 1;
                return Some(id);
            }
            // Bound somewhere other than assumed: trust the cluster.
            self.assumed.remove(&pod.uid);
            self.remove_pod(&pod.uid.clone());
        }
        let id = self.slot_for(node_name);
        self.snap.nodes[id.index()].add_pod(pod.clone());
        self.touched(id);
        self.snap.pods.insert(
            pod.uid.clone(),
            PodPlacement {
                pod,
                node: id,
                assumed: false,
            },
        );
        self.snap.generation += 1;
        Some(id)
    }

    /// Removes an assigned pod (deleted, or finished). Returns it.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let placement = self.snap.pods.remove(uid)?;
        self.assumed.remove(uid);
        let n = &mut self.snap.nodes[placement.node.index()];
        let pod = n.remove_pod(uid);
        let (gone, name) = (!n.present && n.pods.is_empty(), n.name);
        self.touched(placement.node);
        if gone {
            self.snap.by_name.remove(&name);
            self.snap.free_slots.push(placement.node);
        }
        self.snap.generation += 1;
        pod
    }

    /// Drops assumed pods whose deadline passed; returns them.
    pub fn cleanup_expired(&mut self, now: Duration) -> Vec<Arc<PodInfo>> {
        let mut out = Vec::new();
        while let Some(std::cmp::Reverse((d, _))) = self.expiry.peek() {
            if *d > now {
                break;
            }
            let std::cmp::Reverse((d, uid)) = self.expiry.pop().expect("peeked");
            if self
                .assumed
                .get(&uid)
                .is_some_and(|a| a.deadline == Some(d))
                && let Some(p) = self.remove_pod(&uid)
            {
                out.push(p);
            }
        }
        out
    }

    /// Moves the generation of each node in `ids` (unknown slots are
    /// ignored) without changing the node: results cached for it (the
    /// equivalence cache's verdicts and scores, plugins' per-node memos) are
    /// recomputed. For plugin-held state a node's answers depend on (see
    /// `NodeObserver::take_stale_nodes`). Node observers are not told: the
    /// node did not change.
    pub fn invalidate_nodes(&mut self, ids: &[NodeId]) {
        for &id in ids {
            let Some(n) = self.snap.nodes.get_mut(id.index()) else {
                continue;
            };
            n.generation += 1;
            self.logged(id);
        }
    }

    /// Nodes changed (pods placed or removed, node object updated or
    /// deleted) since the last call, without duplicates.
    pub fn take_dirty(&mut self) -> Vec<NodeId> {
        let mut d = std::mem::take(&mut self.dirty);
        d.sort_unstable();
        d.dedup();
        d
    }

    /// Sets a namespace's labels.
    pub fn upsert_namespace(&mut self, name: Sym, labels: Labels) {
        self.snap.namespaces.insert(name, labels);
        self.snap.generation += 1;
    }

    /// Removes a namespace.
    pub fn remove_namespace(&mut self, name: Sym) {
        self.snap.namespaces.remove(&name);
        self.snap.generation += 1;
    }

    /// Adds or replaces a PodDisruptionBudget.
    pub fn upsert_pdb(&mut self, pdb: PdbInfo) {
        self.snap
            .pdbs
            .retain(|p| !(p.namespace == pdb.namespace && p.name == pdb.name));
        self.snap.pdbs.push(pdb);
        self.snap.generation += 1;
    }

    /// Removes a PodDisruptionBudget.
    pub fn remove_pdb(&mut self, namespace: Sym, name: &str) {
        self.snap
            .pdbs
            .retain(|p| !(p.namespace == namespace && &*p.name == name));
        self.snap.generation += 1;
    }

    /// Checks internal consistency: every node's requested equals the sum of
    /// its pods, and every pod is on the node its placement says. For tests.
    pub fn check_consistency(&self) -> Result<(), String> {
        use crate::resources::{ResourceId, ResourceVec};
        for n in &self.snap.nodes {
            let mut sum = ResourceVec::default();
            for p in &n.pods {
                sum.add(&p.spec.requests);
                sum[ResourceId::PODS] += 1;
                match self.snap.pods.get(&p.uid) {
                    Some(pl) if pl.node == n.id => {}
                    other => {
                        return Err(format!(
                            "pod {} on node {} misplaced: {:?}",
                            p.key(),
                            n.name,
                            other.map(|p| p.node)
                        ));
                    }
                }
            }
            if sum != n.requested {
                return Err(format!(
                    "node {}: requested {:?} != sum of pods {:?}",
                    n.name, n.requested, sum
                ));
            }
        }
        let placed: usize = self.snap.nodes.iter().map(|n| n.pods.len()).sum();
        if placed != self.snap.pods.len() {
            return Err(format!(
                "{placed} pods on nodes but {} in the index",
                self.snap.pods.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{cache_with, node, pod};
    use std::sync::Arc;
    use std::time::Duration;

    /// An assumed pod's expiry saturates: a TTL as long as a Duration holds,
    /// started at a clock reading past zero, used to overflow `now + ttl`.
    #[test]
    fn longest_ttl_does_not_overflow_the_clock() {
        let mut c = cache_with(vec![node("a").build()], vec![]);
        let a = c.snapshot().node_id(crate::intern::Sym::new("a")).unwrap();
        let p = Arc::new(pod("p").build());
        c.assume(p.clone(), a).unwrap();
        c.finish_binding(&p.uid, Duration::from_secs(7), Duration::MAX);
        assert!(c.cleanup_expired(Duration::from_secs(1 << 40)).is_empty());
        assert!(c.is_assumed(&p.uid));
    }
}
