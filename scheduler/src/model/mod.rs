//! The engine's compiled view of Kubernetes objects.
//!
//! Kubernetes objects arrive as `k8s-openapi` types and are compiled once, when
//! they enter the cache or the queue, into the forms the hot path reads:
//! interned labels, resource vectors, compiled selectors. Plugins read these;
//! the original spec stays reachable (`PodSpecInfo::raw`) for the rare field
//! the engine does not compile.

mod node;
mod pod;
mod taints;

pub use node::{HostPort, NodeId, NodeInfo};
pub use pod::{
    AffinityTerm, CompileError, NamespaceLabels, NodeInclusionPolicy, OwnerRef, PodAffinity,
    PodInfo, PodSpecInfo, PreemptionPolicy, SpreadConstraint, WeightedAffinityTerm,
    WhenUnsatisfiable,
};
pub use taints::{Taint, TaintEffect, Toleration, TolerationOp, tolerated};
