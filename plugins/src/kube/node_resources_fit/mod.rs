//! NodeResourcesFit: a pod goes only where every resource it requests still
//! fits, and among those nodes the `scoringStrategy` prefers spreading
//! (`LeastAllocated`, the default), packing (`MostAllocated`) or a custom
//! utilization curve (`RequestedToCapacityRatio`). Kubernetes docs:
//! "Resource Management for Pods and Containers", "Resource Bin Packing",
//! `NodeResourcesFitArgs` in the scheduler configuration reference.
//!
//! ## Filter
//! A node fails when one more pod exceeds its `pods` allocatable ("Too many
//! pods"), or when a requested amount exceeds allocatable minus what placed
//! pods request ("Insufficient cpu", "Insufficient memory", "Insufficient
//! ephemeral-storage", `Insufficient <name>`). Every failing resource is
//! reported on the one Status. When the request exceeds the node's whole
//! allocatable the status is `UnschedulableAndUnresolvable` (preemption
//! cannot help), as in kube-scheduler. The pod's requests are the compiled
//! effective requests (init containers, sidecars, overhead), so a pod that
//! requests nothing still needs a pod slot. `ignoredResources` and
//! `ignoredResourceGroups` exempt extended resources from the check, and so
//! does Strata's `deviceShareResources` (by default HAMi's per-device
//! shares `nvidia.com/gpumem`, `nvidia.com/gpumem-percentage` and
//! `nvidia.com/gpucores`, which no node advertises: the Devices plugin
//! accounts them per device).
//!
//! PreFilter turns the pod's requests into a short list of (resource,
//! amount, reason) checks, so the per-node Filter is a few compares with
//! static reason strings and allocates only the Status of a rejection.
//!
//! ## Score
//! A weighted average of one score per configured resource (see
//! the `scoring` module). Pod requests are compiled into the pod, so Score needs no
//! PreScore state. Scores are already in `0..=MAX_NODE_SCORE`; there is no
//! normalization.
//!
//! Filter and Score read only the pod and the node: both are node-local.

mod args;

use crate::common::resources::{self, Scored, is_extended_resource_name, is_scalar_resource_name};
use args::{FitArgs, StrategyType};
use smallvec::SmallVec;
use std::sync::{Arc, OnceLock};
use strata_scheduler::resources::MAX_RESOURCES;
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, Code, CycleState, EventObject, EventResource,
    FilterPlugin, Handle, NodeInfo, Plugin, PluginArgsError, PodInfo, PreFilterPlugin,
    PreFilterResult, QueueingHint, ResourceId, ResourceVec, ScorePlugin, Snapshot, Status,
};

/// The plugin's configuration name.
pub const NAME: &str = "NodeResourcesFit";

/// Reason when one more pod exceeds the node's `pods` allocatable.
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
/// Reason for cpu.
pub const REASON_CPU: &str = "Insufficient cpu";
/// Reason for memory.
pub const REASON_MEMORY: &str = "Insufficient memory";
/// Reason for ephemeral storage.
pub const REASON_EPHEMERAL_STORAGE: &str = "Insufficient ephemeral-storage";

/// `Insufficient <name>` for a resource, as a static string. Strings for
/// other resources are built once per resource slot and kept for the life
/// of the process (at most [`MAX_RESOURCES`]), so rejections never format.
pub fn insufficient_reason(id: ResourceId) -> &'static str {
    static OTHERS: [OnceLock<&'static str>; MAX_RESOURCES] =
        [const { OnceLock::new() }; MAX_RESOURCES];
    match id {
        ResourceId::CPU => REASON_CPU,
        ResourceId::MEMORY => REASON_MEMORY,
        ResourceId::EPHEMERAL_STORAGE => REASON_EPHEMERAL_STORAGE,
        ResourceId::PODS => REASON_TOO_MANY_PODS,
        _ => OTHERS[id.index()]
            .get_or_init(|| Box::leak(format!("Insufficient {}", id.name()).into_boxed_str())),
    }
}

/// One resource the Filter compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Check {
    id: ResourceId,
    amount: i64,
    reason: &'static str,
}

/// What PreFilter derives from the pod for Filter.
#[derive(Clone, Debug, Default)]
struct FitState {
    checks: SmallVec<[Check; 4]>,
}

/// Checks the pod's resource requests against each node and scores nodes
/// by how much of them would be in use.
#[derive(Debug)]
pub struct NodeResourcesFit {
    /// `ignoredResources` and `deviceShareResources` together: the Filter
    /// treats both alike.
    ignored_resources: Vec<String>,
    ignored_resource_groups: Vec<String>,
    strategy: StrategyType,
    /// `RequestedToCapacityRatio` shape, scores scaled to 0..=100.
    shape: Vec<(i64, i64)>,
    resources: Vec<Scored>,
}

impl NodeResourcesFit {
    /// Builds the plugin from `NodeResourcesFitArgs` (`None`: defaults).
    pub fn from_args(
        args: Option<&serde_json::Value>,
    ) -> Result<NodeResourcesFit, PluginArgsError> {
        let a = FitArgs::parse(args)?;
        Ok(NodeResourcesFit {
            ignored_resources: a
                .ignored_resources
                .into_iter()
                .chain(a.device_share_resources)
                .collect(),
            ignored_resource_groups: a.ignored_resource_groups,
            strategy: a.strategy,
            shape: a.shape,
            resources: Scored::from_specs(&a.resources),
        })
    }

    /// Whether the Filter skips `name` (an ignored extended resource or a
    /// device share the Devices plugin accounts).
    fn is_ignored(&self, name: &str) -> bool {
        if !is_extended_resource_name(name) {
            return false;
        }
        if self.ignored_resources.iter().any(|r| r == name) {
            return true;
        }
        let group = name.split('/').next().unwrap_or(name);
        self.ignored_resource_groups.iter().any(|g| g == group)
    }

    /// The checks for a pod's requests: cpu, memory, ephemeral storage, then
    /// scalar resources by slot, leaving out zero requests, ignored extended
    /// resources and names kube-scheduler does not account (non-scalar).
    fn checks_for(&self, requests: &ResourceVec) -> SmallVec<[Check; 4]> {
        let mut out = SmallVec::new();
        for id in requests.nonzero_ids() {
            let amount = requests[id];
            if amount <= 0 || id == ResourceId::PODS {
                continue;
            }
            if id.is_extended() {
                let name = id.name();
                if !is_scalar_resource_name(name) || self.is_ignored(name) {
                    continue;
                }
            }
            out.push(Check {
                id,
                amount,
                reason: insufficient_reason(id),
            });
        }
        out
    }

    /// The Filter itself: `None` when the pod fits.
    #[inline]
    fn check(checks: &[Check], node: &NodeInfo) -> Option<Status> {
        let mut reasons: SmallVec<[&'static str; 4]> = SmallVec::new();
        let mut code = Code::Unschedulable;
        let pods = ResourceId::PODS;
        if node.requested[pods].saturating_add(1) > node.allocatable[pods] {
            reasons.push(REASON_TOO_MANY_PODS);
        }
        for c in checks {
            let alloc = node.allocatable[c.id];
            if c.amount > alloc.saturating_sub(node.requested[c.id]) {
                reasons.push(c.reason);
                if c.amount > alloc {
                    code = Code::UnschedulableAndUnresolvable;
                }
            }
        }
        let (first, rest) = reasons.split_first()?;
        let mut s = Status::new(code, *first);
        for r in rest {
            s = s.with_reason(*r);
        }
        Some(s)
    }

    /// Whether the pod could fit on an empty node with `alloc` allocatable
    /// (what kube's queueing hint asks of a new or changed node).
    fn fits_allocatable(&self, pod: &PodInfo, alloc: &ResourceVec) -> bool {
        alloc[ResourceId::PODS] >= 1
            && self
                .checks_for(&pod.spec.requests)
                .iter()
                .all(|c| c.amount <= alloc[c.id])
    }

    /// Whether a node update raised the allocatable of the pod slot or of
    /// any resource the pod requests.
    fn any_requested_increased(&self, pod: &PodInfo, old: &ResourceVec, new: &ResourceVec) -> bool {
        new[ResourceId::PODS] > old[ResourceId::PODS]
            || self
                .checks_for(&pod.spec.requests)
                .iter()
                .any(|c| new[c.id] > old[c.id])
    }

    /// The weighted score of `node` for `pod`.
    #[inline]
    fn score_node(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (mut total, mut weights) = (0i128, 0i128);
        let ratio = self.strategy == StrategyType::RequestedToCapacityRatio;
        for r in &self.resources {
            let Some((alloc, req)) = r.read(pod, node, false) else {
                continue;
            };
            let s = match self.strategy {
                StrategyType::LeastAllocated => resources::least_requested(req, alloc),
                StrategyType::MostAllocated => resources::most_requested(req, alloc),
                StrategyType::RequestedToCapacityRatio => {
                    resources::ratio_score(&self.shape, req, alloc)
                }
            };
            // kube's RequestedToCapacityRatio leaves resources scoring 0
            // out of the average; the other two count them.
            if ratio && s <= 0 {
                continue;
            }
            total += i128::from(s) * i128::from(r.weight);
            weights += i128::from(r.weight);
        }
        if weights == 0 {
            return 0;
        }
        if ratio {
            (total as f64 / weights as f64).round() as i64
        } else {
            (total / weights) as i64
        }
    }
}

/// Builds the plugin.
pub fn factory(
    args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(NodeResourcesFit::from_args(args)?))
}

strata_scheduler::plugin!(NodeResourcesFit: NAME => [PreFilter, Filter, Score] {

    /// A node added or given more allocatable; an assigned pod deleted or
    /// scaled down; a pending pod holding a nomination deleted.
    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![
            ClusterEventKind::new(
                EventResource::Node,
                ActionType::ADD.or(ActionType::UPDATE_NODE_ALLOCATABLE),
            ),
            ClusterEventKind::new(
                EventResource::AssignedPod,
                ActionType::DELETE.or(ActionType::UPDATE_POD_SCALE_DOWN),
            ),
            ClusterEventKind::new(EventResource::UnscheduledPod, ActionType::DELETE),
        ]
    }

    /// As kube-scheduler's hints: a node helps only if the pod fits its
    /// allocatable and (for an update) the allocatable of something the pod
    /// needs went up; a pod helps if it was placed (or nominated) and gave
    /// back something the pod requests.
    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        let yes = |b: bool| {
            if b {
                QueueingHint::Queue
            } else {
                QueueingHint::Skip
            }
        };
        match event.object {
            EventObject::Node {
                old,
                new: Some(new),
            } => {
                if !self.fits_allocatable(pod, &new.allocatable) {
                    return QueueingHint::Skip;
                }
                match old {
                    None => QueueingHint::Queue,
                    Some(old) => {
                        yes(self.any_requested_increased(pod, &old.allocatable, &new.allocatable))
                    }
                }
            }
            EventObject::Node { new: None, .. } => QueueingHint::Skip,
            EventObject::Pod {
                old: Some(old),
                new: None,
            } => yes(event.resource == EventResource::AssignedPod || old.nominated_node.is_some()),
            EventObject::Pod {
                old: Some(old),
                new: Some(new),
            } => {
                if new.uid == pod.uid {
                    return QueueingHint::Queue;
                }
                let freed = pod.spec.requests.nonzero_ids().any(|id| {
                    pod.spec.requests[id] > 0 && new.spec.requests[id] < old.spec.requests[id]
                });
                yes(freed)
            }
            _ => QueueingHint::Queue,
        }
    }
});

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snap: &Snapshot,
    ) -> PreFilterResult {
        state.insert(FitState {
            checks: self.checks_for(&pod.spec.requests),
        });
        PreFilterResult::ok()
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<FitState>() else {
            return Status::error("NodeResourcesFit: PreFilter state is missing");
        };
        NodeResourcesFit::check(&s.checks, node).unwrap_or_default()
    }

    fn is_node_local(&self) -> bool {
        true
    }

    /// Reads the pod's spec only (requests, node rules, tolerations, ports).
    fn node_local_reads_pod_identity(&self) -> bool {
        false
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(self.score_node(pod, node))
    }

    fn is_node_local(&self) -> bool {
        true
    }

    /// Reads the pod's spec only (requests, node rules, tolerations, ports).
    fn node_local_reads_pod_identity(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;
