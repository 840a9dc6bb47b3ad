//! What a pod asks of devices, compiled once per scheduling attempt.
//!
//! Each app container is read separately, as HAMi does: a container asking
//! `nvidia.com/gpu: 2` with `nvidia.com/gpumem: 3000` gets two distinct
//! devices with 3000 MiB on each; two containers may share one device.
//! Limits are read first (device resources are limits-only in practice),
//! then requests.
//!
//! Rules (HAMi's, where HAMi has one):
//! - memory: `gpumem` (MiB) wins over `gpumem-percentage`; neither means the
//!   kind's `defaultMemoryMiB`, and 0 there means 100% of the device;
//! - compute: `gpucores` percent, else the kind's `defaultCores` (0: any
//!   device with room for the memory); 100 means the device exclusively;
//! - a memory or compute ask without a count means one device;
//! - kinds without share resources are whole devices, exclusively held;
//! - a share above 100% of a device, a count above what any node could
//!   have, or an unknown policy annotation is the pod's error, reported as
//!   UnschedulableAndUnresolvable with the container and resource named.
//!
//! Init containers are not given devices of their own: they run before the
//! app containers and use theirs (an approximation of HAMi, documented).

use super::args::{DevicePolicy, DevicesArgs, KindSpec, NodePolicy};
use super::model::{KindIdx, MAX_DEVICE_MEMORY_MIB};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use strata_scheduler::resources::Quantity;
use strata_scheduler::sdk::{PodInfo, ResourceId};

/// Pod annotation overriding the node policy (HAMi's name).
pub const NODE_POLICY_ANNOTATION: &str = "hami.io/node-scheduler-policy";
/// Pod annotation overriding the device policy (HAMi's name).
pub const DEVICE_POLICY_ANNOTATION: &str = "hami.io/gpu-scheduler-policy";

/// The most devices one container may ask for.
pub const MAX_DEVICES_PER_CONTAINER: u32 = 256;

/// How much memory of one device a share asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemAsk {
    /// MiB.
    MiB(u64),
    /// Percent of the device.
    Percent(u32),
}

impl MemAsk {
    /// In the units of a device with `memory` capacity; `None` when the
    /// device's memory is unknown and the ask is absolute.
    #[inline]
    pub fn units(self, memory: u64, memory_known: bool) -> Option<u64> {
        match self {
            MemAsk::MiB(m) => memory_known.then_some(m),
            MemAsk::Percent(p) => Some(((memory * p as u64) / 100).max(if p > 0 { 1 } else { 0 })),
        }
    }
}

/// One container's ask for one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContainerAsk {
    /// Index in `spec.containers`.
    pub container: u16,
    /// The kind.
    pub kind: KindIdx,
    /// Distinct devices.
    pub count: u32,
    /// Memory per device.
    pub memory: MemAsk,
    /// Compute per device, percent.
    pub cores: u32,
    /// Held exclusively.
    pub exclusive: bool,
}

impl ContainerAsk {
    /// The share of one device this asks for, in percent (for scoring):
    /// the larger of compute and memory when memory is relative.
    pub fn share_percent(&self) -> u32 {
        if self.exclusive {
            return 100;
        }
        match self.memory {
            MemAsk::Percent(p) => p.max(self.cores).min(100),
            MemAsk::MiB(_) => self.cores.min(100),
        }
    }
}

/// Device selection filters of one kind (HAMi's use/nouse annotations).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Allowed types (upper-cased substrings); empty allows all.
    pub use_types: Vec<String>,
    /// Forbidden types (upper-cased substrings).
    pub nouse_types: Vec<String>,
    /// Allowed UUIDs; empty allows all.
    pub use_uuids: Vec<String>,
    /// Forbidden UUIDs.
    pub nouse_uuids: Vec<String>,
}

impl Filters {
    /// Whether a device of `model` with `id` may be used.
    pub fn allows(&self, model: &str, id: &str) -> bool {
        if !self.use_uuids.is_empty() && !self.use_uuids.iter().any(|u| u == id) {
            return false;
        }
        if self.nouse_uuids.iter().any(|u| u == id) {
            return false;
        }
        if self.use_types.is_empty() && self.nouse_types.is_empty() {
            return true;
        }
        let up = model.to_ascii_uppercase();
        (self.use_types.is_empty() || self.use_types.iter().any(|t| up.contains(t.as_str())))
            && !self.nouse_types.iter().any(|t| up.contains(t.as_str()))
    }

    fn is_empty(&self) -> bool {
        self.use_types.is_empty()
            && self.nouse_types.is_empty()
            && self.use_uuids.is_empty()
            && self.nouse_uuids.is_empty()
    }
}

/// A pod's device asks, compiled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodAsk {
    /// Per container and kind.
    pub containers: SmallVec<[ContainerAsk; 2]>,
    /// Filters per kind that has any.
    pub filters: SmallVec<[(KindIdx, Filters); 1]>,
    /// Per-pod node policy override.
    pub node_policy: Option<NodePolicy>,
    /// Per-pod device policy override.
    pub device_policy: Option<DevicePolicy>,
    /// A number derived from the pod's uid, for the `Random` device policy
    /// (the same pod gets the same choice in Score and Reserve).
    pub seed: u64,
}

impl PodAsk {
    /// Whether the pod asks for any device.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    /// The filters of `kind`.
    pub fn filters_of(&self, kind: KindIdx) -> Option<&Filters> {
        self.filters
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, f)| f)
    }

    /// Devices asked in all, and the device share of the pod in percent of
    /// one device (whole devices count 100 each).
    pub fn demand_percent(&self) -> u32 {
        self.containers
            .iter()
            .map(|c| c.count * c.share_percent())
            .sum()
    }
}

fn amount(
    limits: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    requests: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    name: &str,
) -> Option<Result<i64, String>> {
    let q = limits
        .and_then(|m| m.get(name))
        .or_else(|| requests.and_then(|m| m.get(name)))?;
    Some(
        Quantity::parse(&q.0)
            .map(|q| q.value())
            .map_err(|e| e.to_string()),
    )
}

fn list(v: &str, upper: bool) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if upper {
                s.to_ascii_uppercase()
            } else {
                s.to_owned()
            }
        })
        .collect()
}

/// Whether a pod asks for any of `args`' device resources (cheap: reads the
/// compiled request vector only).
pub fn asks_devices(pod: &PodInfo, kinds: &[KindSpec]) -> bool {
    let r = &pod.spec.requests;
    kinds.iter().any(|k| {
        r[k.id] > 0
            || k.memory.is_some_and(|m| r[m] > 0)
            || k.memory_percentage.is_some_and(|m| r[m] > 0)
            || k.cores.is_some_and(|m| r[m] > 0)
    })
}

impl PodAsk {
    /// Compiles `pod`'s asks. `Err` is a message for the pod's condition.
    pub fn compile(pod: &PodInfo, args: &DevicesArgs) -> Result<PodAsk, String> {
        let mut out = PodAsk {
            seed: {
                use std::hash::{Hash, Hasher};
                let mut h = rustc_hash::FxHasher::default();
                pod.uid.hash(&mut h);
                h.finish()
            },
            ..PodAsk::default()
        };
        if let Some(v) = pod.annotations.get(NODE_POLICY_ANNOTATION) {
            out.node_policy = Some(NodePolicy::from_annotation(v).ok_or_else(|| {
                format!("annotation {NODE_POLICY_ANNOTATION}: {v:?} is not binpack, spread, fragmentation or bestfit")
            })?);
        }
        if let Some(v) = pod.annotations.get(DEVICE_POLICY_ANNOTATION) {
            out.device_policy = Some(DevicePolicy::from_annotation(v).ok_or_else(|| {
                format!("annotation {DEVICE_POLICY_ANNOTATION}: {v:?} is not binpack, spread or fragmentation")
            })?);
        }
        if !asks_devices(pod, &args.kinds) {
            return Ok(out);
        }
        for (ci, c) in pod.spec.raw.containers.iter().enumerate() {
            let res = c.resources.as_ref();
            let limits = res.and_then(|r| r.limits.as_ref());
            let requests = res.and_then(|r| r.requests.as_ref());
            if limits.is_none() && requests.is_none() {
                continue;
            }
            for (ki, k) in args.kinds.iter().enumerate() {
                let at = |name: &str| -> Result<Option<i64>, String> {
                    match amount(limits, requests, name) {
                        None => Ok(None),
                        Some(Ok(v)) => Ok(Some(v)),
                        Some(Err(e)) => Err(format!("container {:?}: {name}: {e}", c.name)),
                    }
                };
                let name_of = |id: Option<ResourceId>| id.map(|i| i.name()).unwrap_or("");
                let count = at(k.resource)?;
                let mem = match k.memory {
                    Some(m) => at(name_of(Some(m)))?,
                    None => None,
                };
                let pct = match k.memory_percentage {
                    Some(m) => at(name_of(Some(m)))?,
                    None => None,
                };
                let cores = match k.cores {
                    Some(m) => at(name_of(Some(m)))?,
                    None => None,
                };
                if count.is_none() && mem.is_none() && pct.is_none() && cores.is_none() {
                    continue;
                }
                let bad = |what: &str, v: i64, why: &str| {
                    format!("container {:?}: {what} {v} {why}", c.name)
                };
                let count = match count {
                    Some(n) if n < 0 => return Err(bad(k.resource, n, "is negative")),
                    Some(0) => {
                        if mem.is_some() || pct.is_some() || cores.is_some() {
                            return Err(bad(
                                k.resource,
                                0,
                                "with a memory or compute share asks for no device",
                            ));
                        }
                        continue;
                    }
                    Some(n) if n > MAX_DEVICES_PER_CONTAINER as i64 => {
                        return Err(bad(
                            k.resource,
                            n,
                            &format!("is more than {MAX_DEVICES_PER_CONTAINER} devices"),
                        ));
                    }
                    Some(n) => n as u32,
                    None => 1,
                };
                if let Some(p) = pct
                    && !(0..=100).contains(&p)
                {
                    return Err(bad(
                        name_of(k.memory_percentage),
                        p,
                        "is not a share of one device (0-100%)",
                    ));
                }
                if let Some(p) = cores
                    && !(0..=100).contains(&p)
                {
                    return Err(bad(
                        name_of(k.cores),
                        p,
                        "is not a share of one device (0-100%)",
                    ));
                }
                if let Some(m) = mem
                    && m < 0
                {
                    return Err(bad(name_of(k.memory), m, "is negative"));
                }
                if let Some(m) = mem
                    && m as u64 > MAX_DEVICE_MEMORY_MIB
                {
                    return Err(bad(
                        name_of(k.memory),
                        m,
                        &format!(
                            "MiB is more than any device holds (at most {MAX_DEVICE_MEMORY_MIB} MiB)"
                        ),
                    ));
                }
                let (memory, cores, exclusive) = if k.shareable() {
                    let memory = match (mem, pct) {
                        (Some(m), _) if m > 0 => MemAsk::MiB(m as u64),
                        (_, Some(p)) if p > 0 => MemAsk::Percent(p as u32),
                        _ if k.default_memory_mib > 0 => MemAsk::MiB(k.default_memory_mib),
                        _ => MemAsk::Percent(100),
                    };
                    let cores = cores.map(|c| c as u32).unwrap_or(k.default_cores);
                    (memory, cores, cores >= 100)
                } else {
                    (MemAsk::Percent(100), 100, true)
                };
                out.containers.push(ContainerAsk {
                    container: ci as u16,
                    kind: ki as KindIdx,
                    count,
                    memory,
                    cores,
                    exclusive,
                });
            }
        }
        for (ki, k) in args.kinds.iter().enumerate() {
            if !out.containers.iter().any(|c| c.kind as usize == ki) {
                continue;
            }
            let get = |a: &Option<String>| a.as_deref().and_then(|n| pod.annotations.get(n));
            let f = Filters {
                use_types: get(&k.use_type).map(|v| list(v, true)).unwrap_or_default(),
                nouse_types: get(&k.nouse_type)
                    .map(|v| list(v, true))
                    .unwrap_or_default(),
                use_uuids: get(&k.use_uuid).map(|v| list(v, false)).unwrap_or_default(),
                nouse_uuids: get(&k.nouse_uuid)
                    .map(|v| list(v, false))
                    .unwrap_or_default(),
            };
            if !f.is_empty() {
                out.filters.push((ki as KindIdx, f));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use strata_scheduler::testing;

    fn args() -> DevicesArgs {
        DevicesArgs::parse(None).unwrap()
    }

    fn pod_with(limits: serde_json::Value) -> PodInfo {
        testing::pod("p")
            .spec(json!({"containers": [{"name": "c", "resources": {"limits": limits}}]}))
            .build()
    }

    #[test]
    fn hami_share_rules() {
        let a = args();
        let cases: Vec<(serde_json::Value, Option<ContainerAsk>)> = vec![
            (
                json!({"nvidia.com/gpu": "1"}),
                Some(ContainerAsk {
                    container: 0,
                    kind: 0,
                    count: 1,
                    memory: MemAsk::Percent(100),
                    cores: 0,
                    exclusive: false,
                }),
            ),
            (
                json!({"nvidia.com/gpu": "2", "nvidia.com/gpumem": "3000"}),
                Some(ContainerAsk {
                    container: 0,
                    kind: 0,
                    count: 2,
                    memory: MemAsk::MiB(3000),
                    cores: 0,
                    exclusive: false,
                }),
            ),
            (
                json!({"nvidia.com/gpumem-percentage": "50", "nvidia.com/gpucores": "30"}),
                Some(ContainerAsk {
                    container: 0,
                    kind: 0,
                    count: 1,
                    memory: MemAsk::Percent(50),
                    cores: 30,
                    exclusive: false,
                }),
            ),
            (
                json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000", "nvidia.com/gpumem-percentage": "50"}),
                Some(ContainerAsk {
                    container: 0,
                    kind: 0,
                    count: 1,
                    memory: MemAsk::MiB(1000),
                    cores: 0,
                    exclusive: false,
                }),
            ),
            (
                json!({"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"}),
                Some(ContainerAsk {
                    container: 0,
                    kind: 0,
                    count: 1,
                    memory: MemAsk::Percent(100),
                    cores: 100,
                    exclusive: true,
                }),
            ),
            (
                json!({"huawei.com/Ascend910": "4"}),
                Some(ContainerAsk {
                    container: 0,
                    kind: 1,
                    count: 4,
                    memory: MemAsk::Percent(100),
                    cores: 100,
                    exclusive: true,
                }),
            ),
            (json!({"cpu": "1"}), None),
        ];
        for (limits, want) in cases {
            let ask = PodAsk::compile(&pod_with(limits.clone()), &a).unwrap();
            assert_eq!(ask.containers.first().copied(), want, "{limits}");
        }
    }

    #[test]
    fn bad_shares_name_container_and_resource() {
        let a = args();
        for (limits, want) in [
            (
                json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "150"}),
                "nvidia.com/gpumem-percentage 150 is not a share",
            ),
            (
                json!({"nvidia.com/gpu": "1", "nvidia.com/gpucores": "101"}),
                "nvidia.com/gpucores 101 is not a share",
            ),
            (
                json!({"nvidia.com/gpu": "0", "nvidia.com/gpucores": "10"}),
                "asks for no device",
            ),
            (json!({"nvidia.com/gpu": "100000"}), "more than 256"),
            (
                json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "9223372036854775807"}),
                "nvidia.com/gpumem 9223372036854775807 MiB is more than any device holds",
            ),
            (
                json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "16777217"}),
                "is more than any device holds",
            ),
        ] {
            let e = PodAsk::compile(&pod_with(limits.clone()), &a).unwrap_err();
            assert!(
                e.contains("container \"c\"") && e.contains(want),
                "{limits}: {e}"
            );
        }
    }

    #[test]
    fn annotations_filters_and_policies() {
        let a = args();
        let p = testing::pod("p")
            .annotation("nvidia.com/use-gputype", "a100, H100")
            .annotation("nvidia.com/nouse-gpuuuid", "GPU-1")
            .annotation(NODE_POLICY_ANNOTATION, "spread")
            .annotation(DEVICE_POLICY_ANNOTATION, "binpack")
            .spec(json!({"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}))
            .build();
        let ask = PodAsk::compile(&p, &a).unwrap();
        assert_eq!(ask.node_policy, Some(NodePolicy::Spread));
        assert_eq!(ask.device_policy, Some(DevicePolicy::Binpack));
        let f = ask.filters_of(0).unwrap();
        assert!(f.allows("NVIDIA-A100-SXM4", "GPU-0"));
        assert!(!f.allows("NVIDIA-A100-SXM4", "GPU-1"));
        assert!(!f.allows("Tesla V100", "GPU-0"));
        let p = testing::pod("p")
            .annotation(NODE_POLICY_ANNOTATION, "pack-it")
            .build();
        let e = PodAsk::compile(&p, &a).unwrap_err();
        assert!(
            e.contains("hami.io/node-scheduler-policy") && e.contains("pack-it"),
            "{e}"
        );
    }
}
