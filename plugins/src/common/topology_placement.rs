//! Keeps a [`strata_topology::Topology`] current from the engine's node
//! changes: the bridge between the engine's compiled nodes (interned labels,
//! `ResourceVec`) and the topology crate, which knows neither.
//!
//! A plugin that keeps a [`TopologyTracker`] calls
//! [`TopologyTracker::node_changed`] from its `NodeObserver`; every assume,
//! forget, bind, pod deletion and node update then costs one O(depth)
//! aggregate update. Levels are node label keys, outermost first
//! ([`strata_topology::DEFAULT_LEVELS`] unless configured).

use strata_scheduler::resources::MAX_RESOURCES;
use strata_scheduler::sdk::{NodeInfo, ResourceId, ResourceVec, Sym};
use strata_topology::{Amounts, MAX_DIMS, NodeState, Topology};

// The two crates must agree on the width of a resource vector.
const _: () = assert!(MAX_DIMS == MAX_RESOURCES);

/// A resource vector as topology amounts (same slots).
#[inline]
pub fn amounts(v: &ResourceVec) -> Amounts {
    Amounts(v.0)
}

/// The name of resource slot `slot`, for messages.
pub fn slot_name(slot: usize) -> String {
    let mut v = ResourceVec::default();
    if slot < MAX_RESOURCES {
        v.0[slot] = 1;
    }
    v.nonzero_ids()
        .next()
        .map(ResourceId::name)
        .unwrap_or("?")
        .to_owned()
}

/// What the topology should know about `node`.
pub fn node_state(node: &NodeInfo) -> NodeState {
    NodeState {
        allocatable: amounts(&node.allocatable),
        requested: amounts(&node.requested),
        schedulable: node.present && !node.unschedulable,
    }
}

/// A topology kept in step with the engine's nodes.
#[derive(Clone, Debug)]
pub struct TopologyTracker {
    topo: Topology,
    keys: Vec<Sym>,
}

impl Default for TopologyTracker {
    fn default() -> Self {
        TopologyTracker::new(
            strata_topology::DEFAULT_LEVELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }
}

impl TopologyTracker {
    /// An empty tracker with these level label keys.
    pub fn new(levels: Vec<String>) -> TopologyTracker {
        TopologyTracker {
            keys: levels.iter().map(|l| Sym::new(l)).collect(),
            topo: Topology::new(levels),
        }
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The level label keys.
    pub fn levels(&self) -> &[String] {
        self.topo.levels()
    }

    /// Applies a node change (added, relabelled, pods placed or removed,
    /// cordoned, deleted).
    pub fn node_changed(&mut self, node: &NodeInfo) {
        let id = node.id.0;
        if !node.present {
            self.topo.remove_node(id);
            return;
        }
        let mut values: smallvec::SmallVec<[Option<&'static str>; 4]> = smallvec::SmallVec::new();
        for k in &self.keys {
            values.push(node.labels.get(*k).map(|v| v.as_str()));
        }
        self.topo.upsert_node(id, &values, node_state(node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_scheduler::testing::{cache_with, node, pod};

    #[test]
    fn tracker_follows_nodes_and_pods() {
        let cache = cache_with(
            vec![
                node("a")
                    .label("strata.io/supernode", "s0")
                    .label("strata.io/cabinet", "c0")
                    .alloc("example.com/npu", "8")
                    .build(),
                node("b")
                    .label("strata.io/supernode", "s0")
                    .label("strata.io/cabinet", "c1")
                    .alloc("example.com/npu", "8")
                    .build(),
            ],
            vec![pod("p").req("example.com/npu", "3").on("a").build()],
        );
        let snap = cache.snapshot();
        let mut t = TopologyTracker::default();
        for n in snap.nodes() {
            t.node_changed(n);
        }
        let npu = ResourceId::lookup("example.com/npu").unwrap().index();
        let topo = t.topology();
        assert_eq!(topo.domain(topo.root()).agg.free[npu], 13);
        assert_eq!(topo.domain(topo.root()).agg.max_free[npu], 8);
        let (a, b) = (
            snap.node_by_name(Sym::new("a")).unwrap(),
            snap.node_by_name(Sym::new("b")).unwrap(),
        );
        assert_eq!(topo.distance(a.id.0, b.id.0), Some(3));
        assert_eq!(slot_name(npu), "example.com/npu");
        let mut gone = a.clone();
        gone.present = false;
        t.node_changed(&gone);
        assert_eq!(t.topology().domain(t.topology().root()).agg.free[npu], 8);
        t.topology().check_consistency().unwrap();
    }
}
