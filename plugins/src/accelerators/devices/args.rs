//! `DevicesArgs`: which extended resources are devices, how their shares are
//! asked for, and the placement policies.
//!
//! A device *kind* is data, not code: a vendor adds one by listing its
//! resource name (and, for fractional sharing, the resource names of its
//! memory and core shares and the annotation names of its node agent) in
//! `kinds`. The defaults cover NVIDIA GPUs with HAMi's names, Huawei Ascend
//! NPUs and AMD GPUs as whole devices.
//!
//! Every error names the field it concerns (`kinds[1].resource`,
//! `nodePolicy`), as the rest of the configuration does.

use crate::common::args::parse_at;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use strata_scheduler::sdk::{PluginArgsError, ResourceId};

/// How nodes are ranked for a device pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum NodePolicy {
    /// Least increase of the cluster's unusable GPU capacity for the
    /// expected workload mix (Fragmentation Gradient Descent, ATC'23).
    Fragmentation,
    /// Prefer nodes whose devices are already the most used (HAMi's
    /// `binpack`).
    Binpack,
    /// Prefer nodes whose devices are the least used (HAMi's `spread`).
    Spread,
    /// Prefer the node with the least free cpu and device capacity left
    /// after placement (the paper's best-fit baseline).
    BestFit,
    /// Do not score: every feasible node ties (ties are broken at random).
    None,
}

/// How devices are chosen within a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum DevicePolicy {
    /// Fill the most used device that still fits (HAMi's `binpack`).
    Binpack,
    /// Use the least used device (HAMi's `spread`).
    Spread,
    /// The device whose use least increases the node's fragmentation for
    /// the expected workload mix (only with `nodePolicy: Fragmentation`;
    /// otherwise `Binpack`).
    Fragmentation,
    /// A pseudo-random device (fixed per pod): the random baseline of the
    /// fragmentation experiments, not meant for production.
    Random,
}

impl NodePolicy {
    /// Parses a per-pod override (`hami.io/node-scheduler-policy`).
    pub fn from_annotation(v: &str) -> Option<NodePolicy> {
        match v.trim().to_ascii_lowercase().as_str() {
            "binpack" => Some(NodePolicy::Binpack),
            "spread" => Some(NodePolicy::Spread),
            "fragmentation" => Some(NodePolicy::Fragmentation),
            "bestfit" | "best-fit" => Some(NodePolicy::BestFit),
            _ => None,
        }
    }
}

impl DevicePolicy {
    /// Parses a per-pod override (`hami.io/gpu-scheduler-policy`).
    pub fn from_annotation(v: &str) -> Option<DevicePolicy> {
        match v.trim().to_ascii_lowercase().as_str() {
            "binpack" => Some(DevicePolicy::Binpack),
            "spread" => Some(DevicePolicy::Spread),
            "fragmentation" => Some(DevicePolicy::Fragmentation),
            _ => None,
        }
    }
}

/// One device kind, resolved.
#[derive(Clone, Debug)]
pub struct KindSpec {
    /// The extended resource counting devices (`nvidia.com/gpu`).
    pub resource: &'static str,
    /// Its slot in resource vectors.
    pub id: ResourceId,
    /// Resource giving device memory per device in MiB (`nvidia.com/gpumem`).
    pub memory: Option<ResourceId>,
    /// Resource giving device memory per device in percent.
    pub memory_percentage: Option<ResourceId>,
    /// Resource giving compute per device in percent (`nvidia.com/gpucores`).
    pub cores: Option<ResourceId>,
    /// Pod annotation listing allowed device types (comma-separated).
    pub use_type: Option<String>,
    /// Pod annotation listing forbidden device types.
    pub nouse_type: Option<String>,
    /// Pod annotation listing allowed device UUIDs.
    pub use_uuid: Option<String>,
    /// Pod annotation listing forbidden device UUIDs.
    pub nouse_uuid: Option<String>,
    /// Node annotation in HAMi's register format to read devices from
    /// (`hami.io/node-nvidia-register`), besides `strata.io/devices`.
    pub hami_register: Option<String>,
    /// Pod annotation in HAMi's assignment format to write (and read back):
    /// `hami.io/vgpu-devices-to-allocate`.
    pub hami_assignment: Option<String>,
    /// Pod annotation HAMi's node agent writes once devices are set up
    /// (`hami.io/vgpu-devices-allocated`); read back like the assignment.
    pub hami_allocated: Option<String>,
    /// Device type keyword in HAMi's assignment format (`NVIDIA`).
    pub type_keyword: String,
    /// Default memory share in MiB when a pod gives none (0: all of it).
    pub default_memory_mib: u64,
    /// Default compute share in percent when a pod gives none.
    pub default_cores: u32,
    /// Filter reason when a node has too few free devices of this kind.
    pub reason_insufficient: &'static str,
    /// Filter reason when a node has no devices of this kind at all.
    pub reason_none: &'static str,
}

impl KindSpec {
    /// Whether pods may ask for shares of one device.
    pub fn shareable(&self) -> bool {
        self.memory.is_some() || self.memory_percentage.is_some() || self.cores.is_some()
    }
}

/// The plugin's configuration, resolved.
#[derive(Clone, Debug)]
pub struct DevicesArgs {
    /// Device kinds.
    pub kinds: Arc<[KindSpec]>,
    /// How nodes are ranked.
    pub node_policy: NodePolicy,
    /// How devices are chosen within a node.
    pub device_policy: DevicePolicy,
    /// Whether pods that ask for no device are scored too (with
    /// `Fragmentation` and `BestFit`, so cpu-only pods keep away from the
    /// cpu that GPU pods will need). Default false: the plugin is in the
    /// default profile, and pods without devices must cost it nothing.
    pub score_all_pods: bool,
    /// A fixed expected workload mix for `Fragmentation` (classes of the
    /// first kind); empty: learn it from the pods seen.
    pub workload: Vec<WorkloadEntry>,
}

/// One class of the expected workload mix.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadEntry {
    /// Whole devices (0 with a share).
    pub devices: u32,
    /// Compute and memory share of one device in percent, for a class that
    /// asks for a share (`devices` 0).
    pub share_percent: u32,
    /// Cpu in millicores.
    pub cpu_milli: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Relative weight.
    pub weight: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawArgs {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    kinds: Option<Vec<Value>>,
    #[serde(default)]
    node_policy: Option<String>,
    #[serde(default)]
    device_policy: Option<String>,
    #[serde(default)]
    score_all_pods: Option<bool>,
    #[serde(default)]
    workload: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawKind {
    resource: String,
    #[serde(default)]
    memory_resource: Option<String>,
    #[serde(default)]
    memory_percentage_resource: Option<String>,
    #[serde(default)]
    cores_resource: Option<String>,
    #[serde(default)]
    use_type_annotation: Option<String>,
    #[serde(default)]
    nouse_type_annotation: Option<String>,
    #[serde(default)]
    use_uuid_annotation: Option<String>,
    #[serde(default)]
    nouse_uuid_annotation: Option<String>,
    #[serde(default)]
    hami_register_annotation: Option<String>,
    #[serde(default)]
    hami_assignment_annotation: Option<String>,
    #[serde(default)]
    hami_allocated_annotation: Option<String>,
    #[serde(default)]
    type_keyword: Option<String>,
    #[serde(default)]
    default_memory_mib: Option<u64>,
    #[serde(default)]
    default_cores: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWorkload {
    #[serde(default)]
    devices: Option<u32>,
    #[serde(default)]
    share_percent: Option<u32>,
    #[serde(default)]
    cpu: Option<String>,
    #[serde(default)]
    memory: Option<String>,
    weight: f64,
}

fn leak(s: String) -> &'static str {
    // Kinds are configured once per profile at start-up; their reason
    // strings live as long as the process so Filter can return them without
    // allocating.
    Box::leak(s.into_boxed_str())
}

fn resource(field: &str, name: &str) -> Result<ResourceId, PluginArgsError> {
    if name.is_empty() || !name.contains('/') {
        return Err(PluginArgsError::new(
            field,
            format!("{name:?} is not an extended resource name (domain/name)"),
        ));
    }
    ResourceId::of(name).map_err(|e| PluginArgsError::new(field, e.to_string()))
}

fn kind_from_raw(i: usize, k: RawKind) -> Result<KindSpec, PluginArgsError> {
    let f = |s: &str| format!("kinds[{i}].{s}");
    let id = resource(&f("resource"), &k.resource)?;
    let opt = |name: &Option<String>, field: &str| -> Result<Option<ResourceId>, PluginArgsError> {
        name.as_deref().map(|n| resource(&f(field), n)).transpose()
    };
    let memory = opt(&k.memory_resource, "memoryResource")?;
    let memory_percentage = opt(&k.memory_percentage_resource, "memoryPercentageResource")?;
    let cores = opt(&k.cores_resource, "coresResource")?;
    if let Some(c) = k.default_cores
        && c > 100
    {
        return Err(PluginArgsError::new(
            f("defaultCores"),
            format!("{c} is above 100 (percent of a device)"),
        ));
    }
    if let Some(m) = k.default_memory_mib
        && m > super::model::MAX_DEVICE_MEMORY_MIB
    {
        return Err(PluginArgsError::new(
            f("defaultMemoryMib"),
            format!(
                "{m} is more than any device holds (at most {} MiB)",
                super::model::MAX_DEVICE_MEMORY_MIB
            ),
        ));
    }
    let keyword = k.type_keyword.unwrap_or_else(|| {
        k.resource
            .split('/')
            .next()
            .and_then(|d| d.split('.').next())
            .unwrap_or("DEVICE")
            .to_ascii_uppercase()
    });
    Ok(KindSpec {
        resource: leak(k.resource.clone()),
        id,
        memory,
        memory_percentage,
        cores,
        use_type: k.use_type_annotation,
        nouse_type: k.nouse_type_annotation,
        use_uuid: k.use_uuid_annotation,
        nouse_uuid: k.nouse_uuid_annotation,
        hami_register: k.hami_register_annotation,
        hami_assignment: k.hami_assignment_annotation,
        hami_allocated: k.hami_allocated_annotation,
        type_keyword: keyword,
        default_memory_mib: k.default_memory_mib.unwrap_or(0),
        default_cores: k.default_cores.unwrap_or(0),
        reason_insufficient: leak(format!("Insufficient {} devices", k.resource)),
        reason_none: leak(format!("node(s) had no {} devices", k.resource)),
    })
}

/// The default kinds: NVIDIA GPUs with HAMi's resource and annotation names,
/// Huawei Ascend 910/310 NPUs and AMD GPUs as whole devices.
pub fn default_kinds() -> Vec<KindSpec> {
    let nvidia = RawKind {
        resource: "nvidia.com/gpu".into(),
        memory_resource: Some("nvidia.com/gpumem".into()),
        memory_percentage_resource: Some("nvidia.com/gpumem-percentage".into()),
        cores_resource: Some("nvidia.com/gpucores".into()),
        use_type_annotation: Some("nvidia.com/use-gputype".into()),
        nouse_type_annotation: Some("nvidia.com/nouse-gputype".into()),
        use_uuid_annotation: Some("nvidia.com/use-gpuuuid".into()),
        nouse_uuid_annotation: Some("nvidia.com/nouse-gpuuuid".into()),
        hami_register_annotation: Some("hami.io/node-nvidia-register".into()),
        hami_assignment_annotation: Some("hami.io/vgpu-devices-to-allocate".into()),
        hami_allocated_annotation: Some("hami.io/vgpu-devices-allocated".into()),
        type_keyword: Some("NVIDIA".into()),
        default_memory_mib: None,
        default_cores: None,
    };
    let whole = |r: &str, kw: &str| RawKind {
        resource: r.into(),
        memory_resource: None,
        memory_percentage_resource: None,
        cores_resource: None,
        use_type_annotation: None,
        nouse_type_annotation: None,
        use_uuid_annotation: None,
        nouse_uuid_annotation: None,
        hami_register_annotation: None,
        hami_assignment_annotation: None,
        hami_allocated_annotation: None,
        type_keyword: Some(kw.into()),
        default_memory_mib: None,
        default_cores: None,
    };
    let raws = vec![
        nvidia,
        whole("huawei.com/Ascend910", "Ascend910"),
        whole("huawei.com/Ascend310", "Ascend310"),
        whole("amd.com/gpu", "AMDGPU"),
    ];
    raws.into_iter()
        .enumerate()
        .filter_map(|(i, r)| kind_from_raw(i, r).ok())
        .collect()
}

/// The share resources of `kinds` (memory in MiB, memory percent, compute
/// percent): what the plugin accounts per device and nodes never advertise
/// in allocatable.
pub fn share_resources(kinds: &[KindSpec]) -> Vec<String> {
    kinds
        .iter()
        .flat_map(|k| [k.memory, k.memory_percentage, k.cores])
        .flatten()
        .map(|id| id.name().to_owned())
        .collect()
}

/// The share resources of the default kinds (HAMi's `nvidia.com/gpumem`,
/// `nvidia.com/gpumem-percentage`, `nvidia.com/gpucores`): the default of
/// NodeResourcesFit's `deviceShareResources`, so HAMi pods pass its Filter
/// (which names them as [`crate::common::resources::DEFAULT_DEVICE_SHARE_RESOURCES`]).
pub fn default_share_resources() -> Vec<String> {
    share_resources(&default_kinds())
}

fn quantity(field: &str, v: &Option<String>, milli: bool) -> Result<i64, PluginArgsError> {
    match v {
        None => Ok(0),
        Some(s) => {
            let q = strata_scheduler::resources::Quantity::parse(s)
                .map_err(|e| PluginArgsError::new(field, e.to_string()))?;
            Ok(if milli { q.milli_value() } else { q.value() })
        }
    }
}

impl DevicesArgs {
    /// Parses and validates `args` (`None`: the defaults).
    pub fn parse(args: Option<&Value>) -> Result<DevicesArgs, PluginArgsError> {
        let raw: RawArgs = match args {
            None => parse_at(&Value::Object(Default::default()), "")?,
            Some(v) => parse_at(v, "")?,
        };
        let _ = raw.api_version;
        if let Some(k) = raw.kind.as_deref()
            && k != "DevicesArgs"
        {
            return Err(PluginArgsError::new(
                "kind",
                format!("{k:?} is not \"DevicesArgs\""),
            ));
        }
        let kinds: Vec<KindSpec> = match raw.kinds {
            None => default_kinds(),
            Some(list) => {
                let mut out: Vec<KindSpec> = Vec::new();
                for (i, v) in list.iter().enumerate() {
                    let rk: RawKind = parse_at(v, &format!("kinds[{i}]"))?;
                    let k = kind_from_raw(i, rk)?;
                    if out.iter().any(|o| o.id == k.id) {
                        return Err(PluginArgsError::new(
                            format!("kinds[{i}].resource"),
                            format!("{:?} is listed twice", k.resource),
                        ));
                    }
                    out.push(k);
                }
                if out.len() > 64 {
                    return Err(PluginArgsError::new("kinds", "at most 64 device kinds"));
                }
                out
            }
        };
        let node_policy = match raw.node_policy.as_deref() {
            None => NodePolicy::Fragmentation,
            Some(s) => match s {
                "Fragmentation" => NodePolicy::Fragmentation,
                "Binpack" => NodePolicy::Binpack,
                "Spread" => NodePolicy::Spread,
                "BestFit" => NodePolicy::BestFit,
                "None" => NodePolicy::None,
                o => {
                    return Err(PluginArgsError::new(
                        "nodePolicy",
                        format!(
                            "{o:?} is not one of Fragmentation, Binpack, Spread, BestFit, None"
                        ),
                    ));
                }
            },
        };
        let device_policy = match raw.device_policy.as_deref() {
            None => {
                if node_policy == NodePolicy::Fragmentation {
                    DevicePolicy::Fragmentation
                } else {
                    DevicePolicy::Binpack
                }
            }
            Some(s) => match s {
                "Binpack" => DevicePolicy::Binpack,
                "Spread" => DevicePolicy::Spread,
                "Fragmentation" => DevicePolicy::Fragmentation,
                "Random" => DevicePolicy::Random,
                o => {
                    return Err(PluginArgsError::new(
                        "devicePolicy",
                        format!("{o:?} is not one of Binpack, Spread, Fragmentation, Random"),
                    ));
                }
            },
        };
        let mut workload = Vec::new();
        for (i, v) in raw.workload.iter().flatten().enumerate() {
            let f = format!("workload[{i}]");
            let w: RawWorkload = parse_at(v, &f)?;
            if !(w.weight.is_finite() && w.weight > 0.0) {
                return Err(PluginArgsError::new(
                    format!("{f}.weight"),
                    "must be a positive number",
                ));
            }
            let share = w.share_percent.unwrap_or(0);
            if share > 100 {
                return Err(PluginArgsError::new(
                    format!("{f}.sharePercent"),
                    format!("{share} is above 100 (percent of one device)"),
                ));
            }
            let devices = w.devices.unwrap_or(0);
            if devices == 0 && share == 0 {
                return Err(PluginArgsError::new(
                    f,
                    "give devices (whole devices) or sharePercent (a share of one)",
                ));
            }
            workload.push(WorkloadEntry {
                devices,
                share_percent: share,
                cpu_milli: quantity(&format!("{f}.cpu"), &w.cpu, true)?,
                memory: quantity(&format!("{f}.memory"), &w.memory, false)?,
                weight: w.weight,
            });
        }
        Ok(DevicesArgs {
            kinds: kinds.into(),
            node_policy,
            device_policy,
            score_all_pods: raw.score_all_pods.unwrap_or(false),
            workload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_share_resources_are_what_node_resources_fit_leaves_alone() {
        assert_eq!(
            default_share_resources(),
            crate::common::resources::DEFAULT_DEVICE_SHARE_RESOURCES
        );
    }

    #[test]
    fn defaults_cover_nvidia_ascend_amd() {
        let a = DevicesArgs::parse(None).unwrap();
        let names: Vec<&str> = a.kinds.iter().map(|k| k.resource).collect();
        assert_eq!(
            names,
            [
                "nvidia.com/gpu",
                "huawei.com/Ascend910",
                "huawei.com/Ascend310",
                "amd.com/gpu"
            ]
        );
        assert!(a.kinds[0].shareable());
        assert!(!a.kinds[1].shareable());
        assert_eq!(a.node_policy, NodePolicy::Fragmentation);
        assert_eq!(a.device_policy, DevicePolicy::Fragmentation);
        assert_eq!(
            a.kinds[0].reason_insufficient,
            "Insufficient nvidia.com/gpu devices"
        );
    }

    #[test]
    fn bad_args_name_the_field() {
        let cases = [
            (json!({"nodePolicy": "Packed"}), "nodePolicy"),
            (json!({"devicePolicy": "x"}), "devicePolicy"),
            (json!({"kinds": [{"resource": "gpu"}]}), "kinds[0].resource"),
            (
                json!({"kinds": [{"resource": "a.com/x"}, {"resource": "a.com/x"}]}),
                "kinds[1].resource",
            ),
            (
                json!({"kinds": [{"resource": "a.com/x", "defaultCores": 120}]}),
                "kinds[0].defaultCores",
            ),
            (
                json!({"kinds": [{"resource": "a.com/x", "colour": 1}]}),
                "kinds[0]",
            ),
            (
                json!({"workload": [{"sharePercent": 150, "weight": 1}]}),
                "workload[0].sharePercent",
            ),
            (
                json!({"workload": [{"devices": 1, "weight": 0}]}),
                "workload[0].weight",
            ),
            (
                json!({"workload": [{"devices": 1, "cpu": "lots", "weight": 1}]}),
                "workload[0].cpu",
            ),
            (json!({"kind": "OtherArgs"}), "kind"),
            (json!({"bogus": 1}), "args"),
        ];
        for (v, field) in cases {
            let e = DevicesArgs::parse(Some(&v)).unwrap_err();
            assert_eq!(e.field, field, "{v}: {e}");
        }
    }

    #[test]
    fn vendor_kind_is_configuration() {
        let a = DevicesArgs::parse(Some(&json!({
            "kinds": [{"resource": "example.com/npu", "coresResource": "example.com/npu-cores"}],
            "nodePolicy": "Binpack"
        })))
        .unwrap();
        assert_eq!(a.kinds.len(), 1);
        assert_eq!(a.kinds[0].type_keyword, "EXAMPLE");
        assert!(a.kinds[0].shareable());
        assert_eq!(a.device_policy, DevicePolicy::Binpack);
    }
}
