//! NodePorts: a pod that asks for host ports fits only nodes where none of
//! them is taken (kube-scheduler's NodePorts plugin).
//!
//! Two host ports collide when they share protocol and port and either share
//! the host IP or one of them binds `0.0.0.0` (every address); see
//! [`HostPort::conflicts`]. The pod's ports were compiled when it was queued
//! and the node keeps the ports of the pods placed on it, so the Filter reads
//! both directly: node-local, no per-cycle state, no allocation. Preemption's
//! what-if nodes carry their own `used_ports`, so no PreFilter extension is
//! needed either.

use std::sync::Arc;
use strata_scheduler::model::HostPort;
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, CycleState, EventObject, EventResource,
    FilterPlugin, Handle, NodeInfo, Plugin, PluginArgsError, PodInfo, PreFilterPlugin,
    PreFilterResult, QueueingHint, Snapshot, Status,
};

/// The plugin's configuration name.
pub const NAME: &str = "NodePorts";

/// Why a node was rejected.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The NodePorts plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodePorts;

/// Whether any of `wanted` collides with any of `used`.
#[inline]
fn any_conflict(wanted: &[HostPort], used: &[HostPort]) -> bool {
    wanted.iter().any(|w| used.iter().any(|u| w.conflicts(u)))
}

strata_scheduler::plugin!(NodePorts: NAME => [PreFilter, Filter] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![
            // Host ports of a pod cannot change, so only deletions free them.
            ClusterEventKind::new(EventResource::AssignedPod, ActionType::DELETE),
            ClusterEventKind::new(EventResource::Node, ActionType::ADD),
        ]
    }

    /// A deleted pod helps only if it held a port this pod wants; a new node
    /// always may.
    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        if event.resource != EventResource::AssignedPod {
            return QueueingHint::Queue;
        }
        match event.object {
            EventObject::Pod { old, new } => match old.or(new) {
                Some(gone) if !any_conflict(&pod.spec.host_ports, &gone.spec.host_ports) => {
                    QueueingHint::Skip
                }
                _ => QueueingHint::Queue,
            },
            _ => QueueingHint::Queue,
        }
    }
});

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snap: &Snapshot,
    ) -> PreFilterResult {
        if pod.spec.host_ports.is_empty() {
            PreFilterResult::skip()
        } else {
            PreFilterResult::ok()
        }
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if any_conflict(&pod.spec.host_ports, &node.used_ports) {
            Status::unschedulable(REASON)
        } else {
            Status::success()
        }
    }

    fn is_node_local(&self) -> bool {
        true
    }

    /// Reads the pod's spec only (requests, node rules, tolerations, ports).
    fn node_local_reads_pod_identity(&self) -> bool {
        false
    }
}

/// Builds the plugin. NodePorts takes no arguments.
pub fn factory(
    _args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(NodePorts))
}

#[cfg(test)]
mod tests;
