//! The device model: what devices a node has (by identity) and how much of
//! each is in use.
//!
//! A node's devices come from, in order of preference:
//! 1. the `strata.io/devices` node annotation (Strata's own format, below);
//! 2. a kind's HAMi register annotation (`hami.io/node-nvidia-register`,
//!    either HAMi's JSON list or its `uuid,count,mem,cores,type,numa,health[,index,mode]:`
//!    text form);
//! 3. the Node's allocatable count of the kind's extended resource, as
//!    that many anonymous whole devices (`<node>/<resource>/<i>`), with no
//!    memory known.
//!
//! A kind found in (1) or (2) is taken only from there; (3) fills in kinds a
//! node advertises but does not describe.
//!
//! ## `strata.io/devices`
//!
//! A JSON list, one object per device:
//!
//! ```json
//! [{"kind": "nvidia.com/gpu", "id": "GPU-3f2a", "model": "A100-SXM4-80GB",
//!   "memoryMiB": 81920, "cores": 100, "shares": 10, "healthy": true,
//!   "numa": 0, "group": "nvlink-0", "pcieSwitch": "sw-0"}]
//! ```
//!
//! `kind` (a configured device kind's resource name) and `id` (unique on the
//! node) are required. `"count": N` stands for N alike devices with ids
//! `{id}-0` to `{id}-(N-1)`; with `"groupSize": G` they form groups of G
//! (`{group}0`, `{group}1`, ...), e.g. two NVLink islands of four. `memoryMiB` 0 or absent means unknown: shares are
//! then counted in percent and absolute memory asks do not fit. `cores`
//! defaults to 100 (percent). `shares` is how many pods may share the device
//! (HAMi's split count): 10 for shareable kinds, 1 otherwise. `group` names
//! the interconnect island (NVLink domain, HCCS ring); devices without one
//! are grouped by `numa`. A malformed annotation leaves the node with no
//! devices of any kind and the reason is reported by Filter, so the pod's
//! event names the node's problem instead of the scheduler guessing.
//!
//! ## Invariants
//! - `used[d]` is the sum of the grants on device `d` of every pod in
//!   `grants`; `check()` verifies it (tests).
//! - A grant never takes a device beyond its capacity: memory, cores, share
//!   count, exclusivity. `fits` is the only gate.

use super::args::KindSpec;
use crate::common::device_domains::{CountedDevice, DeviceInventory};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::sdk::NodeInfo;

/// The node annotation listing device details.
pub const DEVICES_ANNOTATION: &str = "strata.io/devices";

/// The most memory one device may declare, in MiB (16 TiB, far above any
/// accelerator's). Device memory is summed per node and per topology domain
/// and multiplied into percentages; a bound here keeps that arithmetic
/// exact, where `memoryMiB: 18446744073709551615` used to wrap.
pub const MAX_DEVICE_MEMORY_MIB: u64 = 1 << 24;
/// The most compute one device may declare (`cores`, percent units).
pub const MAX_DEVICE_CORES: u32 = 10_000;
/// The most devices one node may have, from its annotations and its
/// allocatable together. Devices, their groups and PCIe switches are
/// numbered in `u16` (grants, per-kind counts); seventeen `count: 4096`
/// entries made 69,632 devices and overflowed them (an input written for
/// `fuzz/`'s `devices` target). The same bound as one entry's `count`, and
/// far above any server's.
pub const MAX_DEVICES_PER_NODE: usize = 4096;

/// Index of a device kind in the plugin's `kinds`.
pub type KindIdx = u8;

/// One device on a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    /// Which configured kind.
    pub kind: KindIdx,
    /// Identity (UUID), unique on the node.
    pub id: Arc<str>,
    /// Model / type name (`NVIDIA-A100-SXM4-80GB`).
    pub model: Arc<str>,
    /// Memory capacity in MiB; when `memory_known` is false, 100 (percent).
    pub memory: u64,
    /// Whether `memory` is in MiB (false: percent units).
    pub memory_known: bool,
    /// Compute capacity in percent (normally 100).
    pub cores: u32,
    /// How many pods may hold a share at once.
    pub shares: u32,
    /// Healthy devices only are allocated.
    pub healthy: bool,
    /// NUMA node (-1 unknown).
    pub numa: i32,
    /// Interconnect group, dense per node.
    pub group: u16,
    /// PCIe switch, dense per node (0 unknown).
    pub pcie: u16,
}

/// How much of one device is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory in the device's units.
    pub memory: u64,
    /// Compute in percent.
    pub cores: u32,
    /// Pods holding a share.
    pub tasks: u32,
    /// Held exclusively (a 100% compute ask).
    pub exclusive: bool,
}

/// What a pod holds of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Index of the container in `spec.containers`.
    pub container: u16,
    /// Device index on the node.
    pub device: u16,
    /// Memory in the device's units.
    pub memory: u64,
    /// Compute in percent.
    pub cores: u32,
    /// Exclusive hold.
    pub exclusive: bool,
}

/// A pod's grants on one node.
pub type Grants = SmallVec<[Grant; 4]>;

impl Usage {
    /// Adds a grant.
    pub fn add(&mut self, g: &Grant) {
        // Grants read back from pod annotations are not bounded by any
        // device: saturate (the device then takes no more) rather than wrap.
        self.memory = self.memory.saturating_add(g.memory);
        self.cores = self.cores.saturating_add(g.cores);
        self.tasks += 1;
        self.exclusive |= g.exclusive;
    }

    /// Removes a grant (the inverse of `add`; exclusivity is recomputed by
    /// the caller from the remaining grants when needed, but a device with
    /// an exclusive grant has exactly one task, so dropping it clears it).
    pub fn sub(&mut self, g: &Grant) {
        self.memory = self.memory.saturating_sub(g.memory);
        self.cores = self.cores.saturating_sub(g.cores);
        self.tasks = self.tasks.saturating_sub(1);
        if g.exclusive {
            self.exclusive = false;
        }
    }
}

impl Device {
    /// Whether a share of `memory` units and `cores` percent fits on top of
    /// `u`. The only capacity gate: memory, compute, share count, exclusive
    /// holds.
    #[inline]
    pub fn fits(&self, u: &Usage, memory: u64, cores: u32, exclusive: bool) -> bool {
        self.healthy
            && !u.exclusive
            && u.tasks < self.shares
            && (!exclusive || u.tasks == 0)
            && u.memory.saturating_add(memory) <= self.memory
            && u.cores.saturating_add(cores) <= self.cores
    }

    /// Free share in percent: the smaller of free compute and free memory,
    /// 0 when the device takes no more pods.
    #[inline]
    pub fn free_percent(&self, u: &Usage) -> u32 {
        if !self.healthy
            || u.exclusive
            || u.tasks >= self.shares
            || self.memory == 0
            || self.cores == 0
        {
            return 0;
        }
        let pct = |free: u64, of: u64| (u128::from(free) * 100 / u128::from(of)) as u32;
        let fc = pct(
            u64::from(self.cores.saturating_sub(u.cores)),
            u64::from(self.cores),
        );
        let fm = pct(self.memory.saturating_sub(u.memory), self.memory);
        fc.min(fm)
    }
}

/// A node's devices and their use, as this plugin tracks them.
#[derive(Clone, Debug, Default)]
pub struct NodeDevices {
    /// Devices, in a stable order.
    pub devices: Vec<Device>,
    /// Use per device (same order).
    pub used: Vec<Usage>,
    /// Grants per pod uid.
    pub grants: FxHashMap<Arc<str>, Grants>,
    /// Devices per kind (by kind index).
    pub per_kind: SmallVec<[u16; 4]>,
    /// Why the node's device annotation could not be read, if it could not.
    pub error: Option<Arc<str>>,
    /// What the inventory was built from (to rebuild only on change).
    pub source: Source,
}

/// The inputs of a node's inventory, compared to skip rebuilding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    /// Node name.
    pub name: String,
    /// Address of the node's annotation map (shared and replaced on change).
    pub annotations: usize,
    /// Allocatable of each kind's resource.
    pub counts: SmallVec<[i64; 4]>,
}

impl Source {
    /// The source of `node` for `kinds`.
    pub fn of(node: &NodeInfo, kinds: &[KindSpec]) -> Source {
        Source {
            name: node.name.as_str().to_owned(),
            annotations: Arc::as_ptr(&node.annotations) as usize,
            counts: kinds.iter().map(|k| node.allocatable[k.id]).collect(),
        }
    }

    /// Whether `node` still has this source (no allocation).
    pub fn matches(&self, node: &NodeInfo, kinds: &[KindSpec]) -> bool {
        self.annotations == Arc::as_ptr(&node.annotations) as usize
            && self.name == node.name.as_str()
            && self.counts.len() == kinds.len()
            && self
                .counts
                .iter()
                .zip(kinds)
                .all(|(c, k)| *c == node.allocatable[k.id])
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDevice {
    kind: String,
    id: String,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    group_size: Option<u32>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, rename = "memoryMiB")]
    memory_mib: Option<u64>,
    #[serde(default)]
    cores: Option<u32>,
    #[serde(default)]
    shares: Option<u32>,
    #[serde(default)]
    healthy: Option<bool>,
    #[serde(default)]
    numa: Option<i32>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    pcie_switch: Option<String>,
}

#[derive(Deserialize)]
struct HamiJsonDevice {
    id: String,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    devmem: Option<u64>,
    #[serde(default)]
    devcore: Option<u32>,
    #[serde(default, rename = "type")]
    typ: Option<String>,
    #[serde(default)]
    numa: Option<i32>,
    #[serde(default)]
    health: Option<bool>,
}

/// A device before group names are made dense.
struct Proto {
    dev: Device,
    group: Option<String>,
    pcie: Option<String>,
}

fn proto(kind: KindIdx, spec: &KindSpec, id: String, model: String, memory_mib: u64) -> Proto {
    Proto {
        dev: Device {
            kind,
            id: id.into(),
            model: model.into(),
            memory: if memory_mib > 0 { memory_mib } else { 100 },
            memory_known: memory_mib > 0,
            cores: 100,
            shares: if spec.shareable() { 10 } else { 1 },
            healthy: true,
            numa: -1,
            group: 0,
            pcie: 0,
        },
        group: None,
        pcie: None,
    }
}

fn parse_strata(text: &str, kinds: &[KindSpec]) -> Result<Vec<Proto>, String> {
    let raw: Vec<RawDevice> = serde_json::from_str(text)
        .map_err(|e| format!("annotation {DEVICES_ANNOTATION} is not a valid device list: {e}"))?;
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let Some(k) = kinds.iter().position(|k| k.resource == r.kind) else {
            // A kind this profile does not manage: not ours to allocate.
            continue;
        };
        if r.id.is_empty() {
            return Err(format!(
                "annotation {DEVICES_ANNOTATION}: device [{i}] has an empty id"
            ));
        }
        if let Some(c) = r.cores
            && !(1..=MAX_DEVICE_CORES).contains(&c)
        {
            return Err(format!(
                "annotation {DEVICES_ANNOTATION}: device {:?}: cores {c} is outside 1..={MAX_DEVICE_CORES}",
                r.id
            ));
        }
        if let Some(m) = r.memory_mib
            && m > MAX_DEVICE_MEMORY_MIB
        {
            return Err(format!(
                "annotation {DEVICES_ANNOTATION}: device {:?}: memoryMiB {m} is more than {MAX_DEVICE_MEMORY_MIB} (16 TiB)",
                r.id
            ));
        }
        if r.count == Some(0) || r.count.is_some_and(|c| c > 4096) {
            return Err(format!(
                "annotation {DEVICES_ANNOTATION}: device [{i}] count must be 1-4096"
            ));
        }
        if r.group_size == Some(0) {
            return Err(format!(
                "annotation {DEVICES_ANNOTATION}: device [{i}] groupSize must be at least 1"
            ));
        }
        let spec = &kinds[k];
        // `count: N` stands for N alike devices `{id}-0` .. `{id}-(N-1)`,
        // grouped `groupSize` at a time when given.
        let n = r.count.unwrap_or(1);
        if out.len() + n as usize > MAX_DEVICES_PER_NODE {
            return Err(format!(
                "annotation {DEVICES_ANNOTATION}: device [{i}] brings the node to {} devices; at most {MAX_DEVICES_PER_NODE} are allowed",
                out.len() + n as usize
            ));
        }
        for j in 0..n {
            let id = if r.count.is_some() {
                format!("{}-{j}", r.id)
            } else {
                r.id.clone()
            };
            let mut p = proto(
                k as KindIdx,
                spec,
                id,
                r.model.clone().unwrap_or_default(),
                r.memory_mib.unwrap_or(0),
            );
            if let Some(c) = r.cores {
                p.dev.cores = c;
            }
            if let Some(s) = r.shares {
                p.dev.shares = s.max(1);
            }
            p.dev.healthy = r.healthy.unwrap_or(true);
            p.dev.numa = r.numa.unwrap_or(-1);
            p.group = match (&r.group, r.group_size) {
                (g, Some(size)) => {
                    Some(format!("{}{}", g.as_deref().unwrap_or("group-"), j / size))
                }
                (g, None) => g.clone(),
            };
            p.pcie = r.pcie_switch.clone();
            out.push(p);
        }
    }
    Ok(out)
}

fn parse_hami(text: &str, kind: KindIdx, spec: &KindSpec, ann: &str) -> Result<Vec<Proto>, String> {
    let t = text.trim();
    let mut out = Vec::new();
    if t.starts_with('[') {
        let raw: Vec<HamiJsonDevice> = serde_json::from_str(t)
            .map_err(|e| format!("annotation {ann} is not a valid HAMi device list: {e}"))?;
        if raw.len() > MAX_DEVICES_PER_NODE {
            return Err(format!(
                "annotation {ann}: {} devices; at most {MAX_DEVICES_PER_NODE} are allowed",
                raw.len()
            ));
        }
        for r in raw {
            if let Some(m) = r.devmem
                && m > MAX_DEVICE_MEMORY_MIB
            {
                return Err(format!(
                    "annotation {ann}: device {:?}: devmem {m} is more than {MAX_DEVICE_MEMORY_MIB} MiB (16 TiB)",
                    r.id
                ));
            }
            if let Some(c) = r.devcore
                && c > MAX_DEVICE_CORES
            {
                return Err(format!(
                    "annotation {ann}: device {:?}: devcore {c} is more than {MAX_DEVICE_CORES}",
                    r.id
                ));
            }
            let mut p = proto(
                kind,
                spec,
                r.id,
                r.typ.unwrap_or_default(),
                r.devmem.unwrap_or(0),
            );
            p.dev.shares = r.count.unwrap_or(10).max(1);
            p.dev.cores = r.devcore.filter(|c| *c > 0).unwrap_or(100);
            p.dev.numa = r.numa.unwrap_or(-1);
            p.dev.healthy = r.health.unwrap_or(true);
            out.push(p);
        }
        return Ok(out);
    }
    for seg in t.split(':') {
        let seg = seg.trim();
        if seg.is_empty() {
            continue;
        }
        if out.len() == MAX_DEVICES_PER_NODE {
            return Err(format!(
                "annotation {ann}: more than {MAX_DEVICES_PER_NODE} devices; at most {MAX_DEVICES_PER_NODE} are allowed"
            ));
        }
        let f: SmallVec<[&str; 9]> = seg.split(',').collect();
        if f.len() != 7 && f.len() != 9 {
            return Err(format!(
                "annotation {ann}: device {seg:?} has {} fields, HAMi's format has 7 or 9",
                f.len()
            ));
        }
        let num = |i: usize, what: &str, max: u64| -> Result<u64, String> {
            let v = f[i].trim().parse::<u64>().map_err(|_| {
                format!(
                    "annotation {ann}: device {:?}: {what} {:?} is not a number",
                    f[0], f[i]
                )
            })?;
            if v > max {
                return Err(format!(
                    "annotation {ann}: device {:?}: {what} {v} is more than {max}",
                    f[0]
                ));
            }
            Ok(v)
        };
        let mut p = proto(
            kind,
            spec,
            f[0].trim().to_owned(),
            f[4].trim().to_owned(),
            num(2, "memory", MAX_DEVICE_MEMORY_MIB)?,
        );
        p.dev.shares = (num(1, "split count", u64::from(u32::MAX))? as u32).max(1);
        let cores = num(3, "cores", u64::from(MAX_DEVICE_CORES))? as u32;
        p.dev.cores = if cores == 0 { 100 } else { cores };
        p.dev.numa = f[5].trim().parse().unwrap_or(-1);
        p.dev.healthy = f[6].trim().eq_ignore_ascii_case("true");
        out.push(p);
    }
    Ok(out)
}

impl NodeDevices {
    /// Builds the inventory of `node` (no grants yet).
    pub fn inventory(node: &NodeInfo, kinds: &[KindSpec]) -> NodeDevices {
        let mut protos: Vec<Proto> = Vec::new();
        let mut described = vec![false; kinds.len()];
        let mut error: Option<Arc<str>> = None;
        if let Some(text) = node.annotations.get(DEVICES_ANNOTATION) {
            match parse_strata(text, kinds) {
                Ok(ps) => {
                    for p in &ps {
                        described[p.dev.kind as usize] = true;
                    }
                    protos.extend(ps);
                }
                Err(e) => error = Some(e.into()),
            }
        }
        if error.is_none() {
            for (k, spec) in kinds.iter().enumerate() {
                if described[k] {
                    continue;
                }
                let Some(ann) = spec.hami_register.as_deref() else {
                    continue;
                };
                let Some(text) = node.annotations.get(ann) else {
                    continue;
                };
                match parse_hami(text, k as KindIdx, spec, ann) {
                    Ok(ps) => {
                        described[k] = !ps.is_empty();
                        protos.extend(ps);
                    }
                    Err(e) => {
                        error = Some(e.into());
                        break;
                    }
                }
            }
        }
        if error.is_some() {
            protos.clear();
        } else {
            for (k, spec) in kinds.iter().enumerate() {
                if described[k] {
                    continue;
                }
                let n = node.allocatable[spec.id].clamp(0, MAX_DEVICES_PER_NODE as i64);
                for i in 0..n {
                    let mut p = proto(
                        k as KindIdx,
                        spec,
                        format!("{}/{}/{i}", node.name, spec.resource),
                        String::new(),
                        0,
                    );
                    p.dev.shares = 1;
                    protos.push(p);
                }
            }
        }
        if protos.len() > MAX_DEVICES_PER_NODE {
            error = Some(
                format!(
                    "node {} has {} devices (annotations and allocatable together); at most {MAX_DEVICES_PER_NODE} are allowed",
                    node.name,
                    protos.len()
                )
                .into(),
            );
            protos.clear();
        }
        // Duplicate ids on one node would make identity meaningless.
        let mut seen: FxHashMap<Arc<str>, ()> = FxHashMap::default();
        for p in &protos {
            if seen.insert(p.dev.id.clone(), ()).is_some() {
                error = Some(
                    format!(
                        "device id {:?} appears twice on node {}",
                        p.dev.id, node.name
                    )
                    .into(),
                );
                protos.clear();
                break;
            }
        }
        // Dense group and PCIe ids: explicit names first, else NUMA node.
        let mut groups: FxHashMap<String, u16> = FxHashMap::default();
        let mut pcies: FxHashMap<String, u16> = FxHashMap::default();
        let mut devices = Vec::with_capacity(protos.len());
        for mut p in protos {
            let gname = p
                .group
                .take()
                .unwrap_or_else(|| format!("numa:{}", p.dev.numa));
            let next = groups.len() as u16;
            p.dev.group = *groups.entry(gname).or_insert(next);
            p.dev.pcie = match p.pcie.take() {
                Some(s) => {
                    let next = pcies.len() as u16 + 1;
                    *pcies.entry(s).or_insert(next)
                }
                None => 0,
            };
            devices.push(p.dev);
        }
        let mut per_kind: SmallVec<[u16; 4]> = SmallVec::from_elem(0, kinds.len());
        for d in &devices {
            per_kind[d.kind as usize] += 1;
        }
        NodeDevices {
            used: vec![Usage::default(); devices.len()],
            devices,
            grants: FxHashMap::default(),
            per_kind,
            error,
            source: Source::of(node, kinds),
        }
    }

    /// Records `grants` for pod `uid` (replacing none: the caller checks).
    pub fn apply(&mut self, uid: Arc<str>, grants: Grants) {
        for g in &grants {
            if let Some(u) = self.used.get_mut(g.device as usize) {
                u.add(g);
            }
        }
        self.grants.insert(uid, grants);
    }

    /// Drops the grants of `uid`; returns them.
    pub fn release(&mut self, uid: &str) -> Option<Grants> {
        let grants = self.grants.remove(uid)?;
        for g in &grants {
            if let Some(u) = self.used.get_mut(g.device as usize) {
                u.sub(g);
            }
        }
        Some(grants)
    }

    /// Index of the device with `id`.
    pub fn index_of(&self, id: &str) -> Option<u16> {
        self.devices
            .iter()
            .position(|d| &*d.id == id)
            .map(|i| i as u16)
    }

    /// Whether `used` equals the sum of `grants` and nothing exceeds
    /// capacity (for tests).
    pub fn check(&self) -> Result<(), String> {
        let mut sum = vec![Usage::default(); self.devices.len()];
        for gs in self.grants.values() {
            for g in gs {
                sum[g.device as usize].add(g);
            }
        }
        for (i, (d, (u, s))) in self
            .devices
            .iter()
            .zip(self.used.iter().zip(&sum))
            .enumerate()
        {
            if u != s {
                return Err(format!(
                    "device {i} ({}): used {u:?} != sum of grants {s:?}",
                    d.id
                ));
            }
            if u.memory > d.memory
                || u.cores > d.cores
                || u.tasks > d.shares
                || (u.exclusive && u.tasks > 1)
            {
                return Err(format!(
                    "device {i} ({}): {u:?} exceeds capacity {d:?}",
                    d.id
                ));
            }
        }
        Ok(())
    }

    /// Free whole devices of `kind` (healthy, nothing on them).
    pub fn free_whole(&self, kind: KindIdx) -> u32 {
        self.devices
            .iter()
            .zip(&self.used)
            .filter(|(d, u)| d.kind == kind && d.healthy && u.tasks == 0)
            .count() as u32
    }
}

/// A node's devices with their kinds, as the device-domain aggregates
/// ([`crate::common::device_domains::DeviceDomains`]) read them.
#[derive(Clone, Copy)]
pub struct Inventory<'a> {
    nd: &'a NodeDevices,
    kinds: &'a [KindSpec],
}

impl<'a> Inventory<'a> {
    /// `nd` read with `kinds` (the plugin's configured kinds).
    pub fn new(nd: &'a NodeDevices, kinds: &'a [KindSpec]) -> Self {
        Inventory { nd, kinds }
    }
}

impl DeviceInventory for Inventory<'_> {
    fn is_empty(&self) -> bool {
        self.nd.devices.is_empty()
    }

    fn each_healthy_device(&self, mut f: impl FnMut(CountedDevice<'_>)) {
        for (d, u) in self.nd.devices.iter().zip(&self.nd.used) {
            if !d.healthy {
                continue;
            }
            let Some(spec) = self.kinds.get(d.kind as usize) else {
                continue;
            };
            f(CountedDevice {
                resource: spec.resource,
                model: (!d.model.is_empty()).then_some(&d.model),
                in_use: u.tasks > 0,
                memory_mib: d.memory_known.then_some((d.memory, u.memory)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accelerators::devices::args::default_kinds;
    use strata_scheduler::testing;

    fn info(n: k8s_openapi::api::core::v1::Node) -> NodeInfo {
        let c = testing::cache_with(vec![n], vec![]);
        c.snapshot().nodes().next().unwrap().clone()
    }

    fn annotated(name: &str, key: &str, v: &str) -> NodeInfo {
        let mut n = testing::node(name).alloc("nvidia.com/gpu", "2").build();
        n.metadata.annotations = Some([(key.to_owned(), v.to_owned())].into());
        info(n)
    }

    #[test]
    fn strata_annotation_is_read_with_groups() {
        let kinds = default_kinds();
        let n = annotated(
            "n1",
            DEVICES_ANNOTATION,
            r#"[{"kind":"nvidia.com/gpu","id":"g0","model":"A100","memoryMiB":81920,"group":"nv0","numa":0},
                {"kind":"nvidia.com/gpu","id":"g1","model":"A100","memoryMiB":81920,"group":"nv1","numa":0},
                {"kind":"nvidia.com/gpu","id":"g2","model":"A100","memoryMiB":81920,"group":"nv0","healthy":false},
                {"kind":"example.com/other","id":"x"}]"#,
        );
        let nd = NodeDevices::inventory(&n, &kinds);
        assert!(nd.error.is_none());
        assert_eq!(nd.devices.len(), 3);
        assert_eq!(nd.devices[0].group, nd.devices[2].group);
        assert_ne!(nd.devices[0].group, nd.devices[1].group);
        assert_eq!(nd.devices[0].shares, 10);
        assert!(!nd.devices[2].healthy);
        assert_eq!(nd.per_kind[0], 3);
    }

    #[test]
    fn compact_count_form_expands() {
        let kinds = default_kinds();
        let n = annotated(
            "n1",
            DEVICES_ANNOTATION,
            r#"[{"kind":"nvidia.com/gpu","id":"n1-gpu","count":8,"groupSize":4,"group":"nvl","memoryMiB":81920}]"#,
        );
        let nd = NodeDevices::inventory(&n, &kinds);
        assert!(nd.error.is_none(), "{:?}", nd.error);
        assert_eq!(nd.devices.len(), 8);
        assert_eq!(&*nd.devices[7].id, "n1-gpu-7");
        assert_eq!(nd.devices[0].group, nd.devices[3].group);
        assert_ne!(nd.devices[3].group, nd.devices[4].group);
    }

    #[test]
    fn hami_register_both_forms() {
        let kinds = default_kinds();
        let text = "GPU-a,10,32768,100,NVIDIA-Tesla V100-PCIE-32GB,0,true,0,hami-core:GPU-b,10,32768,100,NVIDIA-Tesla V100-PCIE-32GB,1,false:";
        let nd = NodeDevices::inventory(
            &annotated("n", "hami.io/node-nvidia-register", text),
            &kinds,
        );
        assert!(nd.error.is_none(), "{:?}", nd.error);
        assert_eq!(nd.devices.len(), 2);
        assert_eq!(&*nd.devices[0].model, "NVIDIA-Tesla V100-PCIE-32GB");
        assert_eq!(nd.devices[0].memory, 32768);
        assert!(nd.devices[0].memory_known);
        assert!(!nd.devices[1].healthy);
        let json = r#"[{"id":"GPU-c","count":4,"devmem":24576,"devcore":100,"type":"NVIDIA-L4","numa":1,"health":true}]"#;
        let nd = NodeDevices::inventory(
            &annotated("n", "hami.io/node-nvidia-register", json),
            &kinds,
        );
        assert_eq!(nd.devices.len(), 1);
        assert_eq!(nd.devices[0].shares, 4);
        assert_eq!(nd.devices[0].numa, 1);
    }

    #[test]
    fn allocatable_only_gives_anonymous_whole_devices() {
        let kinds = default_kinds();
        let n = info(
            testing::node("n2")
                .alloc("huawei.com/Ascend910", "8")
                .build(),
        );
        let nd = NodeDevices::inventory(&n, &kinds);
        assert_eq!(nd.devices.len(), 8);
        assert_eq!(&*nd.devices[3].id, "n2/huawei.com/Ascend910/3");
        assert!(!nd.devices[0].memory_known);
        assert_eq!(nd.devices[0].shares, 1);
    }

    #[test]
    fn malformed_annotations_are_reported_not_guessed() {
        let kinds = default_kinds();
        for (k, v, want) in [
            (DEVICES_ANNOTATION, "not json", "not a valid device list"),
            (
                DEVICES_ANNOTATION,
                r#"[{"kind":"nvidia.com/gpu","id":""}]"#,
                "empty id",
            ),
            (
                DEVICES_ANNOTATION,
                r#"[{"kind":"nvidia.com/gpu","id":"a"},{"kind":"nvidia.com/gpu","id":"a"}]"#,
                "appears twice",
            ),
            (
                "hami.io/node-nvidia-register",
                "GPU-a,10,x,100,T,0,true:",
                "memory",
            ),
            ("hami.io/node-nvidia-register", "GPU-a,10:", "7 or 9"),
            // Numbers past what a device can hold: refused, naming the
            // field (memoryMiB u64::MAX used to wrap the free-share sums).
            (
                DEVICES_ANNOTATION,
                r#"[{"kind":"nvidia.com/gpu","id":"a","memoryMiB":18446744073709551615}]"#,
                "memoryMiB 18446744073709551615 is more than 16777216",
            ),
            (
                DEVICES_ANNOTATION,
                r#"[{"kind":"nvidia.com/gpu","id":"a","memoryMiB":16777217}]"#,
                "memoryMiB 16777217",
            ),
            (
                DEVICES_ANNOTATION,
                r#"[{"kind":"nvidia.com/gpu","id":"a","cores":4294967295}]"#,
                "cores 4294967295 is outside",
            ),
            (
                DEVICES_ANNOTATION,
                r#"[{"kind":"nvidia.com/gpu","id":"a","memoryMiB":-1}]"#,
                "not a valid device list",
            ),
            (
                DEVICES_ANNOTATION,
                r#"[{"kind":"nvidia.com/gpu","id":"a","memoryMiB":1e300}]"#,
                "not a valid device list",
            ),
            (
                "hami.io/node-nvidia-register",
                "GPU-a,10,18446744073709551615,100,T,0,true:",
                "memory 18446744073709551615 is more than",
            ),
            (
                "hami.io/node-nvidia-register",
                "GPU-a,4294967296,100,100,T,0,true:",
                "split count 4294967296 is more than",
            ),
            (
                "hami.io/node-nvidia-register",
                "GPU-a,10,100,4294967396,T,0,true:",
                "cores 4294967396 is more than",
            ),
            (
                "hami.io/node-nvidia-register",
                r#"[{"id":"GPU-c","devmem":18446744073709551615}]"#,
                "devmem 18446744073709551615 is more than",
            ),
        ] {
            let nd = NodeDevices::inventory(&annotated("n", k, v), &kinds);
            let e = nd.error.as_deref().unwrap_or("");
            assert!(e.contains(want), "{v}: {e}");
            assert!(nd.devices.is_empty());
        }
    }

    /// More devices than a node may have, from any source or several
    /// together, make the node's error instead of overflowing the `u16`
    /// device numbers (seventeen `count: 4096` entries panicked in
    /// `per_kind`, run through fuzz/'s devices target); the limit itself is
    /// fine.
    #[test]
    fn too_many_devices_are_the_nodes_error() {
        let kinds = default_kinds();
        let entries = |n: usize, count: u32| {
            let e: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"kind":"nvidia.com/gpu","id":"g{i}","count":{count}}}"#))
                .collect();
            format!("[{}]", e.join(","))
        };
        let hami_text = |n: usize| {
            (0..n)
                .map(|i| format!("GPU-{i},10,1000,100,T,0,true:"))
                .collect::<String>()
        };
        let hami_json = |n: usize| {
            let e: Vec<String> = (0..n).map(|i| format!(r#"{{"id":"GPU-{i}"}}"#)).collect();
            format!("[{}]", e.join(","))
        };
        let register = "hami.io/node-nvidia-register";
        for (key, text, want) in [
            (DEVICES_ANNOTATION, entries(17, 4096), "8192"),
            (DEVICES_ANNOTATION, entries(2, 2049), "4098"),
            (DEVICES_ANNOTATION, entries(4097, 1), "4097"),
            (register, hami_text(4097), "more than 4096"),
            (register, hami_json(4097), "4097 devices"),
        ] {
            let nd = NodeDevices::inventory(&annotated("n", key, &text), &kinds);
            let e = nd.error.as_deref().unwrap_or("");
            assert!(e.contains(want) && e.contains("at most 4096"), "{e}");
            assert!(nd.devices.is_empty());
        }
        for (key, text) in [
            (DEVICES_ANNOTATION, entries(1, 4096)),
            (DEVICES_ANNOTATION, entries(2, 2048)),
            (register, hami_text(4096)),
            (register, hami_json(4096)),
        ] {
            let nd = NodeDevices::inventory(&annotated("n", key, &text), &kinds);
            assert_eq!(nd.error, None);
            assert_eq!(nd.devices.len(), MAX_DEVICES_PER_NODE);
            assert_eq!(nd.per_kind[0] as usize, MAX_DEVICES_PER_NODE);
        }
        // Described by annotation, and counted from allocatable, together.
        let mut n = testing::node("n")
            .alloc("huawei.com/Ascend910", "8")
            .build();
        n.metadata.annotations = Some([(DEVICES_ANNOTATION.to_owned(), entries(1, 4090))].into());
        let nd = NodeDevices::inventory(&info(n), &kinds);
        let e = nd.error.as_deref().unwrap_or("");
        assert!(e.contains("node n has 4098 devices"), "{e}");
    }

    proptest::proptest! {
        /// No annotation text makes the inventory parsers panic.
        #[test]
        fn inventory_never_panics(text in "\\PC{0,60}", n in proptest::num::u64::ANY, c in proptest::num::u64::ANY) {
            let kinds = default_kinds();
            let hami = format!("GPU-a,{c},{n},{c},T,0,true:");
            let strata = format!(r#"[{{"kind":"nvidia.com/gpu","id":"a","memoryMiB":{n},"cores":{}}}]"#, c % (1 << 32));
            for (k, v) in [
                (DEVICES_ANNOTATION, text.as_str()),
                ("hami.io/node-nvidia-register", text.as_str()),
                ("hami.io/node-nvidia-register", hami.as_str()),
                (DEVICES_ANNOTATION, strata.as_str()),
            ] {
                let nd = NodeDevices::inventory(&annotated("n", k, v), &kinds);
                for (d, u) in nd.devices.iter().zip(&nd.used) {
                    let _ = d.free_percent(u);
                    let _ = d.fits(u, u64::MAX, u32::MAX, false);
                }
            }
        }
    }

    /// A grant read back from a pod larger than its device saturates the
    /// usage instead of wrapping it.
    #[test]
    fn oversized_grants_saturate() {
        let d = Device {
            kind: 0,
            id: "g".into(),
            model: "".into(),
            memory: MAX_DEVICE_MEMORY_MIB,
            memory_known: true,
            cores: 100,
            shares: 10,
            healthy: true,
            numa: -1,
            group: 0,
            pcie: 0,
        };
        let mut u = Usage::default();
        let g = Grant {
            container: 0,
            device: 0,
            memory: u64::MAX,
            cores: u32::MAX,
            exclusive: false,
        };
        u.add(&g);
        u.add(&g);
        assert_eq!((u.memory, u.cores), (u64::MAX, u32::MAX));
        assert!(!d.fits(&u, 1, 0, false));
        assert_eq!(d.free_percent(&u), 0);
    }

    #[test]
    fn fits_is_the_capacity_gate() {
        let d = Device {
            kind: 0,
            id: "g".into(),
            model: "".into(),
            memory: 1000,
            memory_known: true,
            cores: 100,
            shares: 2,
            healthy: true,
            numa: 0,
            group: 0,
            pcie: 0,
        };
        let mut u = Usage::default();
        assert!(d.fits(&u, 1000, 100, true));
        assert!(!d.fits(&u, 1001, 0, false));
        u.add(&Grant {
            container: 0,
            device: 0,
            memory: 400,
            cores: 30,
            exclusive: false,
        });
        assert!(
            !d.fits(&u, 100, 100, true),
            "exclusive needs an empty device"
        );
        assert!(!d.fits(&u, 100, 71, false));
        assert!(d.fits(&u, 600, 70, false));
        assert_eq!(d.free_percent(&u), 60);
        u.add(&Grant {
            container: 0,
            device: 0,
            memory: 100,
            cores: 10,
            exclusive: false,
        });
        assert!(!d.fits(&u, 1, 1, false), "share count reached");
        assert_eq!(d.free_percent(&u), 0);
    }
}
