//! # strata-topology
//!
//! The shape of an AI cluster as a graph of domains — cluster → super-node
//! → cabinet → server, or whatever levels the node labels describe — with
//! the free capacity of every domain kept current incrementally, and the
//! planner that places a whole group of pods against it at once.
//!
//! What it is for: answering "which super-node can take 64 accelerators",
//! "which cabinets should this group use" and "how far apart are these two
//! servers" without scanning every node, at 16,000 nodes.
//!
//! What it is not: it knows no Kubernetes types and no scheduler types.
//! Nodes are `u32` ids chosen by the caller (Strata's plugins use the
//! engine's `NodeId`), resources are slots of an [`Amounts`] vector, and
//! label values arrive as strings. The caller keeps it current by calling
//! [`Topology::upsert_node`], [`Topology::set_state`] and
//! [`Topology::remove_node`] whenever a node or the pods on it change.
//!
//! ```
//! use strata_topology::{Amounts, NodeState, Topology, GroupRequest, RoleRequest, MemberClass, PlanInput, any_node};
//! let mut t = Topology::default(); // strata.io/supernode, strata.io/cabinet, kubernetes.io/hostname
//! let gpu = |n| Amounts::from_pairs(&[(4, n)]);
//! for id in 0..4u32 {
//!     let sn = format!("sn{}", id / 2);
//!     let host = format!("h{id}");
//!     let state = NodeState { allocatable: gpu(8), requested: Amounts::ZERO, schedulable: true };
//!     t.upsert_node(id, &[Some(&sn), Some("cab0"), Some(&host)], state);
//! }
//! assert_eq!(t.domain(t.root()).agg.free[4], 32);
//! assert_eq!(t.distance(0, 1), Some(2)); // same cabinet
//! let req = GroupRequest {
//!     required_level: t.level_of("strata.io/supernode"),
//!     roles: vec![RoleRequest { classes: vec![MemberClass::new(gpu(8), 2)], ..Default::default() }],
//!     ..Default::default()
//! };
//! let reserved = Default::default();
//! let plan = t.plan(&req, &PlanInput { eligible: &any_node, reserved: &reserved, trust_aggregates: true }).unwrap();
//! assert_eq!(plan.roles[0].classes[0].len(), 2);
//! ```

#![warn(missing_docs)]

mod amounts;
mod graph;
mod plan;

pub use amounts::{Amounts, MAX_DIMS};
pub use graph::{Aggregates, DEFAULT_LEVELS, Domain, DomainId, DomainKey, NodeState, Topology};
pub use plan::{
    GroupRequest, MemberClass, Plan, PlanError, PlanInput, RolePlan, RoleRequest, any_node,
};
