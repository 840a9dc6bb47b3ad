//! The devices of all ResourceSlices, indexed by node, with each device's
//! CEL input built once.
//!
//! Rebuilt when the store's slices or classes change (not per pod). Only the
//! newest generation of each pool is used, as Kubernetes does. A device is
//! identified by `(driver, pool, device)`; its index in [`Index::devices`]
//! is what allocations and bitsets refer to.

use super::cel::{Attr, device_value, quantity_milli};
use super::store::DraStore;
use k8s_openapi::api::resource::v1 as resv1;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use strata_scheduler::labels::NodeSelector;
use strata_scheduler::sdk::{Labels, Sym};

/// Where a device can be used.
#[derive(Clone, Debug)]
pub enum Scope {
    /// On one node.
    Node(String),
    /// On every node.
    All,
    /// On nodes matching a selector.
    Selector(NodeSelector),
}

/// One capacity of a device.
#[derive(Clone, Debug)]
pub struct Capacity {
    /// Qualified name (`domain/name`).
    pub name: String,
    /// Amount, milli-units.
    pub value: i128,
    /// The request policy, if any.
    pub policy: Option<resv1::CapacityRequestPolicy>,
}

/// One device.
pub struct DraDevice {
    /// Driver.
    pub driver: String,
    /// Pool.
    pub pool: String,
    /// Device name.
    pub name: String,
    /// Where it can be used.
    pub scope: Scope,
    /// Qualified attributes (`domain/name`).
    pub attrs: Vec<(String, Attr)>,
    /// Capacities.
    pub capacity: Vec<Capacity>,
    /// May be allocated to several claims at once (consumable capacity).
    pub allow_multiple: bool,
    /// Taints.
    pub taints: Vec<resv1::DeviceTaint>,
    /// The CEL `device` input.
    pub value: cel::objects::Value,
    /// Devices whose CEL input is equal share this number (a selector gives
    /// them the same answer at the same cost).
    pub twin: u32,
}

impl DraDevice {
    /// Whether the device may be used on a node with `labels` and `name`.
    pub fn usable_on(&self, node: &str, labels: &Labels, name: Sym) -> bool {
        match &self.scope {
            Scope::Node(n) => n == node,
            Scope::All => true,
            Scope::Selector(s) => s.matches(labels, name),
        }
    }

    /// The attribute `qualified` (`domain/name`).
    pub fn attr(&self, qualified: &str) -> Option<&Attr> {
        self.attrs
            .iter()
            .find(|(k, _)| k == qualified)
            .map(|(_, v)| v)
    }
}

/// All devices.
#[derive(Default)]
pub struct Index {
    /// The store's inventory version this was built from.
    pub version: u64,
    /// Devices.
    pub devices: Vec<DraDevice>,
    /// Node-local devices by node name.
    pub by_node: FxHashMap<String, Vec<u32>>,
    /// Devices usable on more than one node.
    pub shared: Vec<u32>,
    /// `(driver, pool, device)` → index.
    pub by_key: FxHashMap<(String, String, String), u32>,
    /// How many distinct CEL inputs the devices have ([`DraDevice::twin`]
    /// is below it).
    pub twins: u32,
}

fn qualify(name: &str, driver: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("{driver}/{name}")
    }
}

fn attr_of(a: &resv1::DeviceAttribute) -> Option<Attr> {
    if let Some(i) = a.int {
        return Some(Attr::Int(i));
    }
    if let Some(b) = a.bool {
        return Some(Attr::Bool(b));
    }
    if let Some(s) = &a.string {
        return Some(Attr::Str(s.clone()));
    }
    if let Some(v) = &a.version {
        return semver::Version::parse(v).ok().map(Attr::Version);
    }
    None
}

impl Index {
    /// Builds the index from the store.
    pub fn build(store: &DraStore) -> Index {
        let version = store.inventory_version();
        let slices = store.slices();
        // Newest generation per (driver, pool).
        let mut newest: FxHashMap<(&str, &str), i64> = FxHashMap::default();
        for s in &slices {
            let k = (s.spec.driver.as_str(), s.spec.pool.name.as_str());
            let g = newest.entry(k).or_insert(s.spec.pool.generation);
            *g = (*g).max(s.spec.pool.generation);
        }
        let mut idx = Index {
            version,
            ..Index::default()
        };
        let mut twins: FxHashMap<String, u32> = FxHashMap::default();
        for s in &slices {
            let sp = &s.spec;
            if newest
                .get(&(sp.driver.as_str(), sp.pool.name.as_str()))
                .copied()
                != Some(sp.pool.generation)
            {
                continue;
            }
            let slice_scope = if let Some(n) = &sp.node_name {
                Some(Scope::Node(n.clone()))
            } else if sp.all_nodes == Some(true) {
                Some(Scope::All)
            } else {
                sp.node_selector
                    .as_ref()
                    .and_then(|ns| NodeSelector::compile(ns).ok())
                    .map(Scope::Selector)
            };
            for d in sp.devices.iter().flatten() {
                let scope = if sp.per_device_node_selection == Some(true) {
                    if let Some(n) = &d.node_name {
                        Scope::Node(n.clone())
                    } else if d.all_nodes == Some(true) {
                        Scope::All
                    } else if let Some(sel) = d
                        .node_selector
                        .as_ref()
                        .and_then(|ns| NodeSelector::compile(ns).ok())
                    {
                        Scope::Selector(sel)
                    } else {
                        continue;
                    }
                } else {
                    match &slice_scope {
                        Some(s) => s.clone(),
                        None => continue,
                    }
                };
                let attrs: Vec<(String, Attr)> = d
                    .attributes
                    .iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((qualify(k, &sp.driver), attr_of(v)?)))
                    .collect();
                let capacity: Vec<Capacity> = d
                    .capacity
                    .iter()
                    .flatten()
                    .filter_map(|(k, v)| {
                        Some(Capacity {
                            name: qualify(k, &sp.driver),
                            value: quantity_milli(&v.value.0)?,
                            policy: v.request_policy.clone(),
                        })
                    })
                    .collect();
                let allow_multiple = d.allow_multiple_allocations == Some(true);
                let cap_pairs: Vec<(String, i128)> =
                    capacity.iter().map(|c| (c.name.clone(), c.value)).collect();
                let value = device_value(&sp.driver, &attrs, &cap_pairs, allow_multiple);
                // What `value` is built from, spelled out: equal spellings,
                // equal inputs.
                let spelled = format!(
                    "{}\u{0}{attrs:?}\u{0}{cap_pairs:?}\u{0}{allow_multiple}",
                    sp.driver
                );
                let next = twins.len() as u32;
                let twin = *twins.entry(spelled).or_insert(next);
                let i = idx.devices.len() as u32;
                idx.by_key
                    .insert((sp.driver.clone(), sp.pool.name.clone(), d.name.clone()), i);
                match &scope {
                    Scope::Node(n) => idx.by_node.entry(n.clone()).or_default().push(i),
                    _ => idx.shared.push(i),
                }
                idx.devices.push(DraDevice {
                    driver: sp.driver.clone(),
                    pool: sp.pool.name.clone(),
                    name: d.name.clone(),
                    scope,
                    attrs,
                    capacity,
                    allow_multiple,
                    taints: d.taints.clone().unwrap_or_default(),
                    value,
                    twin,
                });
            }
        }
        idx.twins = twins.len() as u32;
        idx
    }

    /// Devices usable on a node: its own and the shared ones that match.
    pub fn on_node<'a>(
        &'a self,
        node: &'a str,
        labels: &'a Labels,
        name: Sym,
    ) -> impl Iterator<Item = u32> + 'a {
        self.by_node.get(node).into_iter().flatten().copied().chain(
            self.shared
                .iter()
                .copied()
                .filter(move |i| self.devices[*i as usize].usable_on(node, labels, name)),
        )
    }
}

/// A set of device indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bits(pub Vec<u64>);

impl Bits {
    /// An empty set for `n` devices.
    pub fn with_len(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    /// Adds `i`.
    pub fn set(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut(i as usize / 64) {
            *w |= 1 << (i % 64);
        }
    }
    /// Whether `i` is in.
    #[inline]
    pub fn has(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    /// How many are in.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

/// Shared handle.
pub type IndexRef = Arc<Index>;
