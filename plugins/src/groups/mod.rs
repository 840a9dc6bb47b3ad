//! Scheduling pods as groups: the `PodGroup` plugin (gangs, their queue
//! order, placement and preemption).

pub mod pod_group;
