//! Scheduling pods as groups: the `PodGroup` plugin (gangs, their queue
//! order, placement and preemption) and the topology placement it keeps.

pub mod pod_group;
pub mod topology_placement;
