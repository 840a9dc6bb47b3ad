//! Device aggregates per topology domain: how many healthy devices of each
//! kind are free in every super-node, cabinet and server, kept current as
//! devices are granted and released, so "a super-node with 64 free
//! accelerators of kind X" is a lookup, not a scan of 16,000 nodes.
//!
//! A *kind* is named two ways and counted under both: by the extended
//! resource that counts the devices (`nvidia.com/gpu`, which sums every
//! model) and by resource and model (`nvidia.com/gpu/NVIDIA-A100-SXM4-80GB`).
//! Each kind takes two slots of a [`strata_topology::Topology`] of its own
//! (separate from the PodGroup planner's resource topology, since slots here
//! mean device kinds, not resources): free whole devices (healthy, nothing
//! on them) and free device memory in MiB (healthy devices whose memory is
//! known). With [`MAX_DIMS`] slots that is at most [`MAX_KINDS`] kinds; kinds
//! seen after that are not counted and their queries answer `None` (logged
//! once).
//!
//! Two plugins feed it, each with its own part of a node's amounts (summed,
//! never overwriting each other): Devices ([`Source::Devices`]) and
//! DynamicResources ([`Source::Dra`]: the node-local devices of
//! ResourceSlices, counted per driver, in use when some claim or in-flight
//! allocation holds them). Placement (labels, cordon) follows the node
//! through the Devices plugin's node observer.
//!
//! Invariants:
//! - only nodes with at least one device are in this topology;
//! - a node's slots equal what the Devices plugin's [`DeviceInventory`]
//!   says after every write it makes (inventory, reserve, unreserve, pods bound or
//!   deleted): the property test recomputes them from scratch;
//! - a cordoned node counts nothing free (the topology's own rule).

use parking_lot::RwLock;
use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::sdk::{NodeInfo, Sym};
use strata_topology::{Amounts, MAX_DIMS, NodeState, Topology};

/// Slots per kind: free whole devices, free memory (MiB).
const SLOTS_PER_KIND: usize = 2;
/// How many kinds can be counted.
pub const MAX_KINDS: usize = MAX_DIMS / SLOTS_PER_KIND;

/// Free devices of one kind in one domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceFree {
    /// Healthy devices with nothing on them, on schedulable nodes.
    pub devices: i64,
    /// The most such devices on a single node of the domain.
    pub most_on_one_node: i64,
    /// Healthy devices on schedulable nodes, used or not.
    pub capacity: i64,
    /// Free memory of healthy devices (MiB; devices whose memory is known).
    pub memory_mib: i64,
    /// Schedulable nodes with devices in the domain.
    pub nodes: u32,
}

/// One domain's answer to a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainDevices {
    /// The domain's label value (or `cluster`).
    pub domain: String,
    /// What is free there.
    pub free: DeviceFree,
}

/// Where a node sits: its level label values and whether it is
/// schedulable (what re-placing it needs).
type Placement = (SmallVec<[Option<Sym>; 4]>, bool);

/// One source's amounts on a node: (allocatable, in use).
type Part = (Amounts, Amounts);

/// Who reports a node's devices. Each source's amounts are kept apart and
/// summed, so the Devices plugin and DRA never overwrite each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The Devices plugin (extended resources, `strata.io/devices`, HAMi).
    Devices = 0,
    /// DynamicResources (node-local devices of ResourceSlices).
    Dra = 1,
}

/// What one DRA driver offers on a node, for [`DeviceDomains::set_dra`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverCount {
    /// The driver (the kind name).
    pub driver: String,
    /// Devices.
    pub devices: i64,
    /// Devices allocated to some claim.
    pub used: i64,
}

/// One healthy device of the Devices plugin as the aggregates count it.
#[derive(Clone, Copy, Debug)]
pub struct CountedDevice<'a> {
    /// The extended resource that counts it (`nvidia.com/gpu`).
    pub resource: &'a str,
    /// Its model, when known.
    pub model: Option<&'a Arc<str>>,
    /// Whether some pod uses it.
    pub in_use: bool,
    /// Its memory and the memory in use, in MiB, when its memory is known.
    pub memory_mib: Option<(u64, u64)>,
}

/// A node's devices as the Devices plugin holds them, read through this so
/// the aggregates need not know its model. Implemented by value on a small
/// view (references), called with a generic, so reading costs no
/// allocation and no dynamic call.
pub trait DeviceInventory {
    /// Whether the node has no device at all (healthy or not).
    fn is_empty(&self) -> bool;
    /// Calls `f` for each healthy device.
    fn each_healthy_device(&self, f: impl FnMut(CountedDevice<'_>));
}

#[derive(Clone, Debug)]
struct NodeEntry {
    placement: Placement,
    parts: [Option<Part>; 2],
}

struct Inner {
    topo: Topology,
    keys: Vec<Sym>,
    /// Kind names; kind `k` owns slots `2k` and `2k + 1`.
    kinds: Vec<Arc<str>>,
    /// Per kind: (resource or driver, model); model `None` sums every model.
    kind_keys: Vec<(Arc<str>, Option<Arc<str>>)>,
    /// Per node id: where it was last placed and each source's amounts.
    nodes: Vec<Option<NodeEntry>>,
    overflow_logged: bool,
}

impl Inner {
    /// The slot of kind (resource, model), interning it on first sight.
    /// Allocates only then.
    fn kind_slot(&mut self, resource: &str, model: Option<&Arc<str>>) -> Option<usize> {
        if let Some(i) = self
            .kind_keys
            .iter()
            .position(|(r, m)| **r == *resource && m.as_deref() == model.map(|m| &**m))
        {
            return Some(i * SLOTS_PER_KIND);
        }
        let name = match model {
            Some(m) => format!("{resource}/{m}"),
            None => resource.to_owned(),
        };
        if self.kinds.len() >= MAX_KINDS {
            if !self.overflow_logged {
                self.overflow_logged = true;
                tracing::warn!(
                    kind = name,
                    max = MAX_KINDS,
                    "more device kinds than the domain aggregates can count; this kind is not counted"
                );
            }
            return None;
        }
        self.kinds.push(name.into());
        self.kind_keys.push((resource.into(), model.cloned()));
        Some((self.kinds.len() - 1) * SLOTS_PER_KIND)
    }

    fn find_slot(&self, name: &str) -> Option<usize> {
        self.kinds
            .iter()
            .position(|k| &**k == name)
            .map(|i| i * SLOTS_PER_KIND)
    }

    /// Allocatable and requested amounts of a node's devices.
    fn amounts(&mut self, inv: &impl DeviceInventory) -> Part {
        let mut alloc = Amounts::ZERO;
        let mut used = Amounts::ZERO;
        inv.each_healthy_device(|d| {
            let mut names: SmallVec<[Option<usize>; 2]> = SmallVec::new();
            names.push(self.kind_slot(d.resource, None));
            if let Some(model) = d.model {
                names.push(self.kind_slot(d.resource, Some(model)));
            }
            for s in names.into_iter().flatten() {
                alloc[s] += 1;
                if d.in_use {
                    used[s] += 1;
                }
                if let Some((total, taken)) = d.memory_mib {
                    alloc[s + 1] += total as i64;
                    used[s + 1] += taken.min(total) as i64;
                }
            }
        });
        (alloc, used)
    }

    fn placement(&self, node: &NodeInfo) -> Placement {
        (
            self.keys.iter().map(|k| node.labels.get(*k)).collect(),
            !node.unschedulable,
        )
    }

    /// Sets `source`'s part of node `id` (and its placement when given),
    /// then brings the topology in line: the node is counted while any
    /// source reports devices on it.
    fn apply(&mut self, id: u32, placement: Option<Placement>, source: Source, part: Option<Part>) {
        let idx = id as usize;
        if self.nodes.len() <= idx {
            if part.is_none() {
                return;
            }
            self.nodes.resize(idx + 1, None);
        }
        let Some(entry) = (match (&mut self.nodes[idx], placement) {
            (Some(e), p) => {
                let moved = p.as_ref().is_some_and(|p| *p != e.placement);
                if let Some(p) = p {
                    e.placement = p;
                }
                e.parts[source as usize] = part;
                Some((e.clone(), moved))
            }
            (slot @ None, Some(p)) => {
                if part.is_none() {
                    return;
                }
                let mut parts = [None, None];
                parts[source as usize] = part;
                let e = NodeEntry {
                    placement: p,
                    parts,
                };
                *slot = Some(e.clone());
                Some((e, true))
            }
            // Amounts for a node never placed: wait for its placement.
            (None, None) => None,
        }) else {
            return;
        };
        let (e, moved) = entry;
        if e.parts.iter().all(Option::is_none) {
            self.nodes[idx] = None;
            if self.topo.has_node(id) {
                self.topo.remove_node(id);
            }
            return;
        }
        let mut state = NodeState {
            allocatable: Amounts::ZERO,
            requested: Amounts::ZERO,
            schedulable: e.placement.1,
        };
        for (a, u) in e.parts.iter().flatten() {
            state.allocatable.add(a);
            state.requested.add(u);
        }
        if moved || !self.topo.has_node(id) {
            let values: SmallVec<[Option<&'static str>; 4]> = e
                .placement
                .0
                .iter()
                .map(|v| v.map(|v| v.as_str()))
                .collect();
            self.topo.upsert_node(id, &values, state);
        } else {
            self.topo.set_state(id, state);
        }
    }

    fn remove(&mut self, id: u32) {
        if let Some(e) = self.nodes.get_mut(id as usize) {
            *e = None;
        }
        if self.topo.has_node(id) {
            self.topo.remove_node(id);
        }
    }
}

/// Device aggregates per domain, shared between the plugins that write
/// them (Devices, DynamicResources) and whoever asks (other plugins, the
/// simulator's reports).
pub struct DeviceDomains {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for DeviceDomains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.read();
        f.debug_struct("DeviceDomains")
            .field("levels", &g.topo.levels())
            .field("kinds", &g.kinds)
            .finish()
    }
}

impl Default for DeviceDomains {
    fn default() -> Self {
        DeviceDomains::new(
            strata_topology::DEFAULT_LEVELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }
}

impl DeviceDomains {
    /// Empty aggregates over these level label keys, outermost first.
    pub fn new(levels: Vec<String>) -> DeviceDomains {
        DeviceDomains {
            inner: RwLock::new(Inner {
                keys: levels.iter().map(|l| Sym::new(l)).collect(),
                topo: Topology::new(levels),
                kinds: Vec::new(),
                kind_keys: Vec::new(),
                nodes: Vec::new(),
                overflow_logged: false,
            }),
        }
    }

    /// The level label keys.
    pub fn levels(&self) -> Vec<String> {
        self.inner.read().topo.levels().to_vec()
    }

    /// Whether node `id` is counted (some source reports devices on it).
    pub fn has_node(&self, id: u32) -> bool {
        self.inner.read().topo.has_node(id)
    }

    /// The kinds counted so far.
    pub fn kinds(&self) -> Vec<String> {
        self.inner
            .read()
            .kinds
            .iter()
            .map(|k| k.to_string())
            .collect()
    }

    /// The Devices plugin's view of `node`: places it (labels, cordon) and
    /// sets its devices `nd` (`None`: it has none). Costs a label
    /// comparison when the node has not moved and still has (or still
    /// lacks) devices: their use is updated by [`DeviceDomains::devices`].
    pub fn node(&self, node: &NodeInfo, nd: Option<impl DeviceInventory>) {
        let id = node.id.0;
        let nd = nd.filter(|nd| !nd.is_empty());
        if !node.present {
            self.inner.write().remove(id);
            return;
        }
        {
            let g = self.inner.read();
            let e = g.nodes.get(id as usize).and_then(Option::as_ref);
            let unchanged = match e {
                Some(e) => {
                    e.parts[Source::Devices as usize].is_some() == nd.is_some()
                        && e.placement == g.placement(node)
                }
                None => nd.is_none(),
            };
            if unchanged {
                return;
            }
        }
        let mut g = self.inner.write();
        let part = nd.map(|nd| g.amounts(&nd));
        let placement = g.placement(node);
        g.apply(id, Some(placement), Source::Devices, part);
    }

    /// Updates the Devices plugin's devices on node `id` (already placed by
    /// [`DeviceDomains::node`]); `None`: it has none any more.
    pub fn devices(&self, id: u32, nd: Option<impl DeviceInventory>) {
        let mut g = self.inner.write();
        let part = nd.filter(|nd| !nd.is_empty()).map(|nd| g.amounts(&nd));
        g.apply(id, None, Source::Devices, part);
    }

    /// DynamicResources' view of `node`: its node-local ResourceSlice
    /// devices per driver (empty: none).
    pub fn set_dra(&self, node: &NodeInfo, drivers: &[DriverCount]) {
        let id = node.id.0;
        if !node.present {
            self.inner.write().remove(id);
            return;
        }
        let mut g = self.inner.write();
        let part = if drivers.is_empty() {
            None
        } else {
            let mut alloc = Amounts::ZERO;
            let mut used = Amounts::ZERO;
            for d in drivers {
                if let Some(s) = g.kind_slot(&d.driver, None) {
                    alloc[s] += d.devices;
                    used[s] += d.used;
                }
            }
            Some((alloc, used))
        };
        let placement = g.placement(node);
        g.apply(id, Some(placement), Source::Dra, part);
    }

    /// What is free of `kind` in the whole cluster; `None` for a kind never
    /// seen (or not counted).
    pub fn cluster(&self, kind: &str) -> Option<DeviceFree> {
        let g = self.inner.read();
        let s = g.find_slot(kind)?;
        Some(free_of(&g.topo, g.topo.root(), s))
    }

    /// Every domain of `level` (a level label key) with what is free of
    /// `kind` there, fullest first; `None` for an unknown level or kind.
    pub fn domains(&self, level: &str, kind: &str) -> Option<Vec<DomainDevices>> {
        let mut out = self.collect(level, kind, |_| true)?;
        out.sort_by(|a, b| {
            b.free
                .devices
                .cmp(&a.free.devices)
                .then_with(|| a.domain.cmp(&b.domain))
        });
        Some(out)
    }

    /// Domains of `level` with at least `count` free devices of `kind`,
    /// tightest first (the one that would be left with the fewest free
    /// devices: least fragmentation), with `per_node` of them on one node
    /// when given. `None` for an unknown level or kind.
    pub fn fitting(
        &self,
        level: &str,
        kind: &str,
        count: i64,
        per_node: Option<i64>,
    ) -> Option<Vec<DomainDevices>> {
        let mut out = self.collect(level, kind, |f| {
            f.devices >= count && per_node.is_none_or(|p| f.most_on_one_node >= p)
        })?;
        out.sort_by(|a, b| {
            a.free
                .devices
                .cmp(&b.free.devices)
                .then_with(|| a.domain.cmp(&b.domain))
        });
        Some(out)
    }

    /// The domains of `level` whose free `kind` passes `keep`, unordered.
    fn collect(
        &self,
        level: &str,
        kind: &str,
        keep: impl Fn(&DeviceFree) -> bool,
    ) -> Option<Vec<DomainDevices>> {
        let g = self.inner.read();
        let s = g.find_slot(kind)?;
        let l = g.topo.level_of(level)?;
        Some(
            g.topo
                .domains_at(l, g.topo.root())
                .into_iter()
                .filter_map(|d| {
                    let free = free_of(&g.topo, d, s);
                    keep(&free).then(|| DomainDevices {
                        domain: g.topo.domain(d).name(),
                        free,
                    })
                })
                .collect(),
        )
    }

    /// Checks every aggregate against a full recomputation (tests).
    pub fn check_consistency(&self) -> Result<(), String> {
        self.inner.read().topo.check_consistency()
    }
}

fn free_of(t: &Topology, d: strata_topology::DomainId, s: usize) -> DeviceFree {
    let a = &t.domain(d).agg;
    DeviceFree {
        devices: a.free[s],
        most_on_one_node: a.max_free[s],
        capacity: a.capacity[s],
        memory_mib: a.free[s + 1],
        nodes: a.schedulable_nodes,
    }
}
