//! NodeName: a pod that names its node in `spec.nodeName` fits only that
//! node ("Assigning Pods to Nodes", nodeName).
//!
//! The rule reads the pod and the node's name only, so the Filter is
//! node-local and allocation-free. No other node can become acceptable, so a
//! rejected pod waits for its named node to be added.

use std::sync::Arc;
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, CycleState, EventObject, EventResource,
    FilterPlugin, Handle, NodeInfo, Plugin, PluginArgsError, PodInfo, QueueingHint, Status,
};

/// The plugin's configuration name.
pub const NAME: &str = "NodeName";

/// Why a node was rejected.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// Rejects every node but the one the pod names.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeName;

/// Whether `pod` may run on `node` as far as `spec.nodeName` goes.
#[inline]
fn fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.spec.node_name.is_none_or(|n| n == node.name)
}

strata_scheduler::plugin!(NodeName: NAME => [Filter] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![ClusterEventKind::new(EventResource::Node, ActionType::ADD)]
    }

    /// Only the arrival of the named node helps.
    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        match event.object {
            EventObject::Node { new: Some(n), .. } if fits(pod, n) => QueueingHint::Queue,
            _ => QueueingHint::Skip,
        }
    }
});

impl FilterPlugin for NodeName {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if fits(pod, node) {
            Status::success()
        } else {
            Status::unresolvable(REASON)
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

/// Builds the plugin. NodeName takes no arguments.
pub fn factory(
    _args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(NodeName))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testkit;
    use strata_scheduler::sdk::{Code, Sym};
    use strata_scheduler::testing;

    #[test]
    fn only_the_named_node_fits() {
        let cache = testing::cache_with(
            vec![testing::node("n1").build(), testing::node("n2").build()],
            vec![],
        );
        let snap = cache.snapshot();
        let n1 = snap.node_by_name(Sym::new("n1")).unwrap();
        let n2 = snap.node_by_name(Sym::new("n2")).unwrap();
        let state = CycleState::new();
        let named = testing::pod("p").on("n1").build();
        let free = testing::pod("q").build();
        assert!(NodeName.filter(&state, &named, n1).is_success());
        let st = NodeName.filter(&state, &named, n2);
        assert_eq!(st.code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(st.message(), REASON);
        assert!(NodeName.filter(&state, &free, n1).is_success());
        assert!(NodeName.filter(&state, &free, n2).is_success());
        // An empty nodeName means "not set".
        let empty = testing::pod("e").on("").build();
        assert!(NodeName.filter(&state, &empty, n2).is_success());
    }

    #[test]
    fn requeued_only_when_the_named_node_arrives() {
        let p = factory(None, &testkit::handle()).unwrap();
        assert!(p.as_filter().unwrap().is_node_local());
        let cache = testing::cache_with(
            vec![testing::node("n1").build(), testing::node("n2").build()],
            vec![],
        );
        let snap = cache.snapshot();
        let add = |name: &str| ClusterEvent {
            resource: EventResource::Node,
            action: ActionType::ADD,
            object: EventObject::Node {
                old: None,
                new: snap.node_by_name(Sym::new(name)),
            },
        };
        let pod = testing::pod("p").on("n1").build();
        assert_eq!(p.queueing_hint(&pod, &add("n1")), QueueingHint::Queue);
        assert_eq!(p.queueing_hint(&pod, &add("n2")), QueueingHint::Skip);
        assert!(
            p.events_to_register()
                .iter()
                .all(|k| k.resource == EventResource::Node)
        );
    }
}
