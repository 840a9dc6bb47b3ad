//! # strata-plugins
//!
//! Every in-tree plugin of Strata, built on the public plugin API of
//! `strata-scheduler` exactly as a vendor's plugin would be, one module each
//! in a folder per family: [`kube`] (kube-scheduler's defaults), [`groups`]
//! (PodGroup), [`accelerators`] (Devices, DynamicResources). What several
//! plugins share is in [`common`]; a plugin imports nothing from a sibling
//! (a unit test reads the sources and keeps it so; see
//! `docs/ARCHITECTURE.md`, "The plugin boundary").
//!
//! [`registry`] returns all of them by configuration name;
//! [`default_plugins`] is the set a profile runs when its configuration does
//! not say otherwise, with kube-scheduler's default score weights, plus the
//! accelerator plugins (`Devices`, `DynamicResources`) so HAMi and DRA pods
//! are served by the default profile, and [`memory`]'s `MemoryPool`. Each
//! returns Skip from PreFilter for a pod that does not use it (no device,
//! no claim, no `strata.io/memory-borrow` while nothing is lent), so such
//! pods run none of their Filter or Score.

#![warn(missing_docs)]

pub mod accelerators;
#[cfg(test)]
mod boundary;
pub mod common;
pub mod groups;
pub mod kube;
pub mod memory;

// The paths the adapter, simulator, cli and fuzz targets use for the stores
// and object types they fill: kept at the crate root.
pub use accelerators::{devices, dra};

/// The PodGroup plugin ([`groups::pod_group`]) at the path the adapter,
/// simulator and cli use, with [`Stores`] (which used to live in it).
pub mod pod_group {
    pub use crate::Stores;
    pub use crate::groups::pod_group::*;
}

use kube::{
    balanced_allocation, default_binder, default_preemption, image_locality, inter_pod_affinity,
    node_affinity, node_name, node_ports, node_resources_fit, node_unschedulable,
    pod_topology_spread, priority_sort, scheduling_gates, taint_toleration,
};
use strata_scheduler::sdk::Registry;

/// Every store a plugin may need, filled by the adapter or the simulator
/// and handed to [`registry_with`].
#[derive(Clone, Default)]
pub struct Stores {
    /// PodGroup objects (both APIs).
    pub pod_groups: pod_group::PodGroupStore,
    /// DRA objects (DeviceClasses, ResourceSlices, ResourceClaims and
    /// ResourceClaimTemplates), read by the DynamicResources plugin.
    pub dra: std::sync::Arc<dra::DraStore>,
    /// Free devices per topology domain, kept by the Devices plugin.
    pub devices: std::sync::Arc<common::device_domains::DeviceDomains>,
    /// The memory-pool ledger and its figures, kept by MemoryPool.
    pub memory_pool: std::sync::Arc<memory::memory_pool::PoolStore>,
}

/// All in-tree plugins by name.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(priority_sort::NAME, priority_sort::factory);
    r.register(scheduling_gates::NAME, scheduling_gates::factory);
    r.register(node_name::NAME, node_name::factory);
    r.register(node_unschedulable::NAME, node_unschedulable::factory);
    r.register(node_resources_fit::NAME, node_resources_fit::factory);
    r.register(balanced_allocation::NAME, balanced_allocation::factory);
    r.register(node_affinity::NAME, node_affinity::factory);
    r.register(taint_toleration::NAME, taint_toleration::factory);
    r.register(node_ports::NAME, node_ports::factory);
    r.register(pod_topology_spread::NAME, pod_topology_spread::factory);
    r.register(inter_pod_affinity::NAME, inter_pod_affinity::factory);
    r.register(image_locality::NAME, image_locality::factory);
    r.register(default_preemption::NAME, default_preemption::factory);
    r.register(default_binder::NAME, default_binder::factory);
    r.register(devices::NAME, devices::factory);
    r.register(dra::NAME, dra::factory);
    // The group planner reads the figures of the ledger MemoryPool builds.
    let borrows = common::memory_borrow::BorrowLink::default();
    let link = borrows.clone();
    r.register(memory::memory_pool::NAME, move |a, h| {
        memory::memory_pool::factory_linked(a, h, &link)
    });
    let groups = pod_group::PodGroupStore::new();
    r.register(pod_group::NAME, move |a, h| {
        pod_group::factory_with_borrows(a, h, &groups, &borrows)
    });
    r
}

/// All in-tree plugins, with the stores the adapter or simulator fills
/// (PodGroup objects, DRA objects): plugins that read a store share the
/// given one.
pub fn registry_with(stores: &Stores) -> Registry {
    let mut r = registry();
    let groups = stores.pod_groups.clone();
    let borrows = common::memory_borrow::BorrowLink::to(stores.memory_pool.clone());
    r.register(pod_group::NAME, move |a, h| {
        pod_group::factory_with_borrows(a, h, &groups, &borrows)
    });
    dra::register_with_domains(&mut r, stores.dra.clone(), stores.devices.clone());
    devices::register(&mut r, stores.devices.clone());
    memory::memory_pool::register(&mut r, stores.memory_pool.clone());
    r
}

/// The default plugin set (kube-scheduler's `multiPoint` defaults, with
/// `Devices` besides `DynamicResources`) with score weights; plugins that do
/// not score carry weight 0. Opt out per profile with
/// `multiPoint.disabled: [{name: Devices}]`.
pub fn default_plugins() -> Vec<(&'static str, i64)> {
    vec![
        (scheduling_gates::NAME, 0),
        // Group-aware QueueSort: orders plain pods exactly as PrioritySort.
        (pod_group::NAME, 0),
        (node_unschedulable::NAME, 0),
        (node_name::NAME, 0),
        (taint_toleration::NAME, 3),
        (node_affinity::NAME, 2),
        (node_ports::NAME, 0),
        (node_resources_fit::NAME, 1),
        // DRA claims (kube-scheduler's default since 1.34).
        (dra::NAME, 0),
        // Whole and HAMi-shared devices.
        (devices::NAME, 2),
        // Memory borrowed across a super-node's servers; Skip for pods
        // that do not borrow while nothing is lent.
        (memory::memory_pool::NAME, 1),
        (pod_topology_spread::NAME, 2),
        (inter_pod_affinity::NAME, 2),
        (default_preemption::NAME, 0),
        (balanced_allocation::NAME, 1),
        (image_locality::NAME, 1),
        (default_binder::NAME, 0),
    ]
}
