//! PodTopologySpread: spreads matching pods evenly over topology domains
//! (zones, hosts, any node label), as kube-scheduler's plugin of that name
//! does ("Pod Topology Spread Constraints" in the Kubernetes docs).
//!
//! - Hard constraints (`DoNotSchedule`) are a PreFilter + Filter
//!   (`filter.rs`); soft ones (`ScheduleAnyway`) a PreScore + Score +
//!   NormalizeScore (`score.rs`). What counts and which nodes are eligible
//!   is shared (`common.rs`); the cluster defaults are `args.rs`.
//! - All counting happens once per cycle in PreFilter/PreScore, in dense
//!   domain ids (`domains.rs`: per topology key, every node slot's domain);
//!   Filter and Score are two array reads and a comparison per constraint
//!   and never allocate. Their results depend on every node's pods, so they
//!   are not node-local.
//! - The counts are remembered per kind of incoming pod and re-counted only
//!   on the nodes changed since (`memo.rs`), so a cycle of a replica costs
//!   O(changed nodes) plus, in PreScore, O(feasible nodes). Which domains
//!   each node counts toward is shared by workloads that differ only in
//!   their selector, and a new workload counts only the nodes holding a pod
//!   its selector may match (`common/pod_label_index.rs`).
//! - PreFilter extensions keep the counts right under preemption's what-if
//!   additions and removals.
//!
//! Known approximation: kube-scheduler derives the selector of *default*
//! constraints from the Services, ReplicationControllers, ReplicaSets and
//! StatefulSets selecting the pod. Strata has no informers for those yet, so
//! a pod with a controlling owner uses its own labels (less per-pod labels
//! such as `statefulset.kubernetes.io/pod-name`) and an ownerless pod gets
//! no default constraints.

mod args;
mod common;
mod filter;
mod memo;
mod score;
#[cfg(test)]
mod tests;

pub use args::{
    DefaultConstraint, DefaultingType, LABEL_HOSTNAME, LABEL_ZONE, PodTopologySpreadArgs,
};
pub use filter::{ERR_CONSTRAINTS_NOT_MATCH, ERR_NODE_LABEL_NOT_MATCH};

use common::{Constraint, Defaults, PER_POD_LABELS, has_all_keys};
use memo::Memo;
use std::sync::Arc;
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, EventObject, EventResource, Handle, NodeInfo,
    Plugin, PluginArgsError, PodInfo, QueueingHint, Sym,
};

/// The plugin's configuration name.
pub const NAME: &str = "PodTopologySpread";

/// The plugin.
#[derive(Debug)]
pub struct PodTopologySpread {
    defaults: Defaults,
    hostname: Sym,
    /// Counts of recent kinds of incoming pod, kept across cycles.
    memo: Memo,
}

impl PodTopologySpread {
    /// Builds the plugin from validated args.
    pub fn new(args: &PodTopologySpreadArgs) -> PodTopologySpread {
        PodTopologySpread {
            defaults: Defaults {
                constraints: args.effective_defaults(),
                system: args.defaulting_type == DefaultingType::System,
                per_pod_labels: PER_POD_LABELS.map(Sym::new),
            },
            hostname: Sym::new(LABEL_HOSTNAME),
            memo: Memo::default(),
        }
    }

    /// The hard constraints of `pod` (its own, or the defaults).
    fn hard_constraints(&self, pod: &PodInfo) -> Vec<Constraint> {
        self.defaults.constraints(pod, true)
    }

    fn hint_pod(
        &self,
        pod: &PodInfo,
        old: Option<&PodInfo>,
        new: Option<&PodInfo>,
    ) -> QueueingHint {
        // Only assigned pods in the pod's namespace (or the pod itself) can
        // change its counts.
        let involved = |p: &PodInfo| {
            p.uid == pod.uid || (p.bound_node.is_some() && p.namespace == pod.namespace)
        };
        if new.is_some_and(|p| !involved(p)) || old.is_some_and(|p| !involved(p)) {
            return QueueingHint::Skip;
        }
        let constraints = self.hard_constraints(pod);
        let hint = |b: bool| {
            if b {
                QueueingHint::Queue
            } else {
                QueueingHint::Skip
            }
        };
        match (old, new) {
            (Some(o), Some(n)) => {
                if o.uid == pod.uid {
                    return QueueingHint::Queue;
                }
                if o.labels == n.labels {
                    return QueueingHint::Skip;
                }
                hint(
                    constraints
                        .iter()
                        .any(|c| c.matches(&o.labels) != c.matches(&n.labels)),
                )
            }
            (Some(p), None) | (None, Some(p)) => {
                hint(constraints.iter().any(|c| c.matches(&p.labels)))
            }
            (None, None) => QueueingHint::Queue,
        }
    }

    fn hint_node(
        &self,
        pod: &PodInfo,
        old: Option<&NodeInfo>,
        new: Option<&NodeInfo>,
    ) -> QueueingHint {
        let constraints = self.hard_constraints(pod);
        // Other label changes matter only through the pod's node affinity.
        let affinity_matters = (pod.spec.node_selector.is_some()
            || pod.spec.required_node_affinity.is_some())
            && constraints.iter().any(|c| c.honor_affinity);
        match (old, new) {
            (_, Some(n)) if !has_all_keys(n, &constraints) => QueueingHint::Skip,
            (None, Some(_)) => QueueingHint::Queue,
            (Some(o), Some(n)) => {
                let relevant = !has_all_keys(o, &constraints)
                    || constraints
                        .iter()
                        .any(|c| o.labels.get(c.key) != n.labels.get(c.key))
                    || (affinity_matters && o.labels != n.labels)
                    || (o.taints != n.taints && constraints.iter().any(|c| c.honor_taints));
                if relevant {
                    QueueingHint::Queue
                } else {
                    QueueingHint::Skip
                }
            }
            (Some(o), None) => {
                if has_all_keys(o, &constraints) {
                    QueueingHint::Queue
                } else {
                    QueueingHint::Skip
                }
            }
            (None, None) => QueueingHint::Queue,
        }
    }
}

strata_scheduler::plugin!(PodTopologySpread: NAME => [PreFilter, Filter, PreScore, Score] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![
            // A matching pod placed, removed or relabelled changes the counts.
            ClusterEventKind::new(
                EventResource::AssignedPod,
                ActionType::ADD
                    .or(ActionType::DELETE)
                    .or(ActionType::UPDATE_POD_LABEL),
            ),
            // Nodes define the domains and, through the inclusion policies,
            // which of them are eligible.
            ClusterEventKind::new(
                EventResource::Node,
                ActionType::ADD
                    .or(ActionType::DELETE)
                    .or(ActionType::UPDATE_NODE_LABEL)
                    .or(ActionType::UPDATE_NODE_TAINT),
            ),
        ]
    }

    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        match event.object {
            EventObject::Pod { old, new } => self.hint_pod(pod, old, new),
            EventObject::Node { old, new } => self.hint_node(pod, old, new),
            _ => QueueingHint::Queue,
        }
    }
});

/// Builds the plugin from its `pluginConfig` args
/// ([`PodTopologySpreadArgs`]).
pub fn factory(
    args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    let args = PodTopologySpreadArgs::parse(args)?;
    Ok(Arc::new(PodTopologySpread::new(&args)))
}
