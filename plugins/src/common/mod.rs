//! Pieces several plugins share. A plugin imports from here and from the
//! public API of `strata-scheduler`, not from a sibling plugin.

pub mod args;
pub mod device_domains;
pub mod memory_borrow;
pub(crate) mod pod_label_index;
pub mod preemption;
pub mod resources;
pub mod scoring;
#[cfg(test)]
pub(crate) mod testkit;
pub(crate) mod topology_domains;
pub mod topology_placement;
