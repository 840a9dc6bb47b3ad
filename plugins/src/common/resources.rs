//! Resources as NodeResourcesFit, NodeResourcesBalancedAllocation and
//! ImageLocality read them: the `resources` list of their args, how
//! kube-scheduler reads a node's allocatable and requested amounts for
//! scoring, and its three `scoringStrategy` functions.
//!
//! Invariants, as in kube-scheduler's `resourceAllocationScorer`:
//! - cpu and memory use the *non-zero* requests (a container that requests
//!   nothing counts as 100m / 200Mi) unless the caller asks for plain
//!   requests (BalancedAllocation does);
//! - ephemeral storage and scalar resources (extended, hugepages, prefixed
//!   native, attachable volumes) use plain requests;
//! - a scalar resource the pod does not request, any resource the node has
//!   none of (allocatable 0), and any other name (`pods`, unknown native
//!   names) drop out of the weighted average entirely.
//!
//! Everything here runs per node: no allocation, integer arithmetic widened
//! to `i128` so byte counts times 100 cannot overflow.

use crate::common::args::parse_at;
use serde::Deserialize;
use serde_json::Value;
use strata_scheduler::sdk::{MAX_NODE_SCORE, NodeInfo, PluginArgsError, PodInfo, ResourceId};

/// The extended resources the Devices plugin accounts per device when its
/// kinds are the defaults (HAMi's NVIDIA memory in MiB, memory in percent
/// and cores): the default of NodeResourcesFit's `deviceShareResources`, so
/// HAMi pods pass its Filter.
pub const DEFAULT_DEVICE_SHARE_RESOURCES: [&str; 3] = [
    "nvidia.com/gpumem",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpucores",
];

/// One entry of a `resources` list, before defaulting.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawResourceSpec {
    name: String,
    #[serde(default)]
    weight: Option<i64>,
}

/// A resource to score, validated and resolved to its slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResourceSpec {
    /// The configured name.
    pub name: String,
    /// The slot in resource vectors.
    pub id: ResourceId,
    /// Weight after defaulting (0 or unset means 1).
    pub weight: i64,
}

/// kube-scheduler's default `resources`: cpu and memory, weight 1.
pub(crate) fn default_resources() -> Vec<ResourceSpec> {
    vec![
        ResourceSpec {
            name: "cpu".into(),
            id: ResourceId::CPU,
            weight: 1,
        },
        ResourceSpec {
            name: "memory".into(),
            id: ResourceId::MEMORY,
            weight: 1,
        },
    ]
}

/// Parses a `resources` list at `path`: names must be non-empty and
/// distinct, weights default from 0 to 1. Weight ranges are the caller's.
/// An empty or absent list gives the defaults.
pub(crate) fn parse_resources(
    v: Option<&Value>,
    path: &str,
) -> Result<Vec<ResourceSpec>, PluginArgsError> {
    let items: Vec<Value> = match v {
        None | Some(Value::Null) => return Ok(default_resources()),
        Some(v) => parse_at(v, path)?,
    };
    if items.is_empty() {
        return Ok(default_resources());
    }
    let mut out: Vec<ResourceSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let raw: RawResourceSpec = parse_at(item, &at)?;
        if raw.name.is_empty() {
            return Err(PluginArgsError::new(
                format!("{at}.name"),
                "must not be empty",
            ));
        }
        if out.iter().any(|r| r.name == raw.name) {
            return Err(PluginArgsError::new(
                format!("{at}.name"),
                format!("duplicate resource {:?}", raw.name),
            ));
        }
        let id = ResourceId::of(&raw.name)
            .map_err(|e| PluginArgsError::new(format!("{at}.name"), e.to_string()))?;
        let weight = match raw.weight {
            None | Some(0) => 1,
            Some(w) => w,
        };
        out.push(ResourceSpec {
            name: raw.name,
            id,
            weight,
        });
    }
    Ok(out)
}

/// How a configured resource is read for scoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// cpu or memory: non-zero requests unless plain ones are asked for.
    CpuMemory,
    /// ephemeral-storage: plain requests, scored even when the pod asks none.
    EphemeralStorage,
    /// A scalar resource: plain requests, skipped when the pod asks none.
    Scalar,
    /// Never scored (`pods`, unknown native names).
    Unscored,
}

/// Whether kube-scheduler treats `name` as an extended resource: a name with
/// a domain prefix that is not in the `kubernetes.io` namespace (and not a
/// quota-style `requests.` name).
pub(crate) fn is_extended_resource_name(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// Whether kube-scheduler accounts `name` as a scalar resource: extended,
/// hugepages, prefixed native (`*kubernetes.io/*`) or attachable volumes.
pub(crate) fn is_scalar_resource_name(name: &str) -> bool {
    is_extended_resource_name(name)
        || name.contains("kubernetes.io/")
        || name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
}

/// The class of a resource.
pub(crate) fn classify(id: ResourceId, name: &str) -> Class {
    if id == ResourceId::CPU || id == ResourceId::MEMORY {
        Class::CpuMemory
    } else if id == ResourceId::EPHEMERAL_STORAGE {
        Class::EphemeralStorage
    } else if id != ResourceId::PODS && is_scalar_resource_name(name) {
        Class::Scalar
    } else {
        Class::Unscored
    }
}

/// A configured resource ready for the per-node loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scored {
    /// Slot.
    pub id: ResourceId,
    /// Weight (1..=100).
    pub weight: i64,
    /// How it is read.
    pub class: Class,
}

impl Scored {
    /// Resolves validated specs.
    pub(crate) fn from_specs(specs: &[ResourceSpec]) -> Vec<Scored> {
        specs
            .iter()
            .map(|s| Scored {
                id: s.id,
                weight: s.weight,
                class: classify(s.id, &s.name),
            })
            .collect()
    }

    /// The pod's request of this resource as scoring sees it.
    #[inline]
    pub(crate) fn pod_request(&self, pod: &PodInfo, use_requested: bool) -> i64 {
        if self.class == Class::CpuMemory && !use_requested {
            pod.spec.non_zero_requests[self.id]
        } else {
            pod.spec.requests[self.id]
        }
    }

    /// `(allocatable, requested including the pod)` on `node`, or `None`
    /// when this resource drops out of the score for this pod and node.
    #[inline]
    pub(crate) fn read(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        use_requested: bool,
    ) -> Option<(i64, i64)> {
        let id = self.id;
        let pod_req = self.pod_request(pod, use_requested);
        let used = match self.class {
            Class::CpuMemory if !use_requested => node.non_zero_requested[id],
            Class::CpuMemory | Class::EphemeralStorage => node.requested[id],
            Class::Scalar if pod_req != 0 => node.requested[id],
            Class::Scalar | Class::Unscored => return None,
        };
        let alloc = node.allocatable[id];
        // kube skips allocatable 0; a negative allocatable (a malformed
        // node) is skipped too rather than divided by.
        if alloc <= 0 {
            return None;
        }
        Some((alloc, used.saturating_add(pod_req)))
    }
}

/// `LeastAllocated` for one resource: the free share, 0..=100.
#[inline]
pub(crate) fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (((capacity - requested) as i128 * MAX_NODE_SCORE as i128) / capacity as i128) as i64
}

/// `MostAllocated` for one resource: the used share, 0..=100 (requests above
/// capacity, possible through non-zero defaults, count as full).
#[inline]
pub(crate) fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 {
        return 0;
    }
    let r = requested.clamp(0, capacity);
    ((r as i128 * MAX_NODE_SCORE as i128) / capacity as i128) as i64
}

/// kube's broken-linear function through `shape` (sorted utilization
/// points with scores): flat before the first and after the last point,
/// linear between, integer arithmetic truncating toward zero.
#[inline]
pub(crate) fn broken_linear(shape: &[(i64, i64)], p: i64) -> i64 {
    for (i, &(u, s)) in shape.iter().enumerate() {
        if p <= u {
            if i == 0 {
                return s;
            }
            let (u0, s0) = shape[i - 1];
            return s0 + (s - s0) * (p - u0) / (u - u0);
        }
    }
    shape.last().map_or(0, |&(_, s)| s)
}

/// `RequestedToCapacityRatio` for one resource: utilization in percent
/// through the shape; over capacity counts as 100%.
#[inline]
pub(crate) fn ratio_score(shape: &[(i64, i64)], requested: i64, capacity: i64) -> i64 {
    let utilization = if capacity <= 0 || requested > capacity {
        100
    } else {
        ((requested.max(0) as i128 * 100) / capacity as i128) as i64
    };
    broken_linear(shape, utilization)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_name_classes_follow_kube() {
        assert!(is_extended_resource_name("nvidia.com/gpu"));
        assert!(!is_extended_resource_name("kubernetes.io/foo"));
        assert!(!is_extended_resource_name("cpu"));
        assert!(!is_extended_resource_name("requests.example.com/foo"));
        assert!(is_scalar_resource_name("hugepages-2Mi"));
        assert!(is_scalar_resource_name("attachable-volumes-aws-ebs"));
        assert!(is_scalar_resource_name("kubernetes.io/batch-cpu"));
        assert!(!is_scalar_resource_name("storage"));
        assert_eq!(classify(ResourceId::PODS, "pods"), Class::Unscored);
        assert_eq!(classify(ResourceId::CPU, "cpu"), Class::CpuMemory);
        assert_eq!(
            classify(ResourceId::EPHEMERAL_STORAGE, "ephemeral-storage"),
            Class::EphemeralStorage
        );
    }

    #[test]
    fn per_resource_functions() {
        assert_eq!(least_requested(3000, 4000), 25);
        assert_eq!(least_requested(5000, 4000), 0);
        assert_eq!(least_requested(0, 0), 0);
        assert_eq!(most_requested(3000, 4000), 75);
        assert_eq!(most_requested(5000, 4000), 100);
        // Bytes large enough to overflow i64 when multiplied by 100.
        assert_eq!(least_requested(i64::MAX / 2, i64::MAX), 50);
        let up = [(0, 0), (100, 100)];
        assert_eq!(ratio_score(&up, 3, 8), 37);
        assert_eq!(ratio_score(&up, 9, 8), 100);
        let down = [(0, 100), (100, 0)];
        assert_eq!(ratio_score(&down, 1, 4), 75);
        // Flat before the first point and after the last.
        let mid = [(20, 30), (80, 90)];
        assert_eq!(broken_linear(&mid, 0), 30);
        assert_eq!(broken_linear(&mid, 50), 60);
        assert_eq!(broken_linear(&mid, 100), 90);
        // Truncation toward zero on a falling segment, as Go's integer division.
        assert_eq!(broken_linear(&[(0, 100), (30, 0)], 10), 67);
    }
}
