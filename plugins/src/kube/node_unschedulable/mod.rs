//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes no new
//! pods, except pods that tolerate the taint
//! `node.kubernetes.io/unschedulable:NoSchedule` ("Taints and Tolerations",
//! taint-based evictions and cordoning).
//!
//! The taint is built once, when the plugin is built (interning takes a
//! lock), so the Filter compares symbols only. The rule reads the pod and the
//! node alone: the Filter is node-local.

use std::sync::Arc;
use strata_scheduler::model::{Taint, TaintEffect, tolerated};
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, CycleState, EventResource, FilterPlugin, Handle,
    NodeInfo, Plugin, PluginArgsError, PodInfo, QueueingHint, Status, Sym,
};

/// The plugin's configuration name.
pub const NAME: &str = "NodeUnschedulable";

/// Why a node was rejected.
pub const REASON: &str = "node(s) were unschedulable";

/// The taint key a cordoned node is treated as carrying.
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// Rejects cordoned nodes for pods that do not tolerate cordoning.
#[derive(Debug, Clone)]
pub struct NodeUnschedulable {
    taint: Taint,
}

impl Default for NodeUnschedulable {
    fn default() -> Self {
        NodeUnschedulable {
            taint: Taint {
                key: Sym::new(UNSCHEDULABLE_TAINT_KEY),
                value: Sym::EMPTY,
                effect: TaintEffect::NoSchedule,
            },
        }
    }
}

impl NodeUnschedulable {
    #[inline]
    fn fits(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        !node.unschedulable || tolerated(&pod.spec.tolerations, &self.taint)
    }
}

strata_scheduler::plugin!(NodeUnschedulable: NAME => [Filter] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![ClusterEventKind::new(
            EventResource::Node,
            ActionType::ADD
                .or(ActionType::UPDATE_NODE_CONDITION)
                .or(ActionType::UPDATE_NODE_TAINT),
        )]
    }

    /// Retry when a node the pod may use appears: a new node that fits, or
    /// an update that makes a node fit which did not before (uncordoned).
    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        crate::common::scoring::hint_node_now_fits(event, |n| self.fits(pod, n))
    }
});

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if self.fits(pod, node) {
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

/// Builds the plugin. NodeUnschedulable takes no arguments.
pub fn factory(
    _args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(NodeUnschedulable::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testkit;
    use serde_json::json;
    use strata_scheduler::sdk::Code;
    use strata_scheduler::testing;

    fn with_tolerations(t: serde_json::Value) -> PodInfo {
        testing::pod("p").spec(json!({ "tolerations": t })).build()
    }

    #[test]
    fn cordoned_nodes_reject_unless_tolerated() {
        let cache = testing::cache_with(
            vec![
                testing::node("open").build(),
                testing::node("cordoned").unschedulable().build(),
            ],
            vec![],
        );
        let snap = cache.snapshot();
        let open = snap.node_by_name(Sym::new("open")).unwrap();
        let cordoned = snap.node_by_name(Sym::new("cordoned")).unwrap();
        let plugin = NodeUnschedulable::default();
        let state = CycleState::new();
        let cases = [
            ("no tolerations", testing::pod("p").build(), false),
            (
                "exact toleration",
                with_tolerations(
                    json!([{"key": UNSCHEDULABLE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]),
                ),
                true,
            ),
            (
                "key with any effect",
                with_tolerations(json!([{"key": UNSCHEDULABLE_TAINT_KEY, "operator": "Exists"}])),
                true,
            ),
            (
                "tolerate everything",
                with_tolerations(json!([{"operator": "Exists"}])),
                true,
            ),
            (
                "wrong effect",
                with_tolerations(
                    json!([{"key": UNSCHEDULABLE_TAINT_KEY, "operator": "Exists", "effect": "NoExecute"}]),
                ),
                false,
            ),
            (
                "Equal with empty value",
                with_tolerations(
                    json!([{"key": UNSCHEDULABLE_TAINT_KEY, "operator": "Equal", "value": ""}]),
                ),
                true,
            ),
            (
                "other key",
                with_tolerations(json!([{"key": "dedicated", "operator": "Exists"}])),
                false,
            ),
        ];
        for (name, pod, fits_cordoned) in cases {
            assert!(plugin.filter(&state, &pod, open).is_success(), "{name}");
            let st = plugin.filter(&state, &pod, cordoned);
            if fits_cordoned {
                assert!(st.is_success(), "{name}: {st}");
            } else {
                assert_eq!(st.code(), Code::UnschedulableAndUnresolvable, "{name}");
                assert_eq!(st.message(), REASON);
            }
        }
    }

    #[test]
    fn requeued_when_a_node_opens() {
        let p = factory(None, &testkit::handle()).unwrap();
        assert!(p.as_filter().unwrap().is_node_local());
        let cache = testing::cache_with(
            vec![
                testing::node("open").build(),
                testing::node("cordoned").unschedulable().build(),
            ],
            vec![],
        );
        let snap = cache.snapshot();
        let open = snap.node_by_name(Sym::new("open"));
        let cordoned = snap.node_by_name(Sym::new("cordoned"));
        let ev = |old, new| ClusterEvent {
            resource: EventResource::Node,
            action: ActionType::UPDATE_NODE_CONDITION,
            object: strata_scheduler::framework::EventObject::Node { old, new },
        };
        let pod = testing::pod("p").build();
        assert_eq!(p.queueing_hint(&pod, &ev(None, open)), QueueingHint::Queue);
        assert_eq!(
            p.queueing_hint(&pod, &ev(None, cordoned)),
            QueueingHint::Skip
        );
        assert_eq!(
            p.queueing_hint(&pod, &ev(cordoned, open)),
            QueueingHint::Queue
        );
        assert_eq!(p.queueing_hint(&pod, &ev(open, open)), QueueingHint::Skip);
        assert_eq!(
            p.queueing_hint(&pod, &ev(open, cordoned)),
            QueueingHint::Skip
        );
        let kinds = p.events_to_register();
        assert!(kinds[0].actions.intersects(ActionType::ADD));
        assert!(
            kinds[0]
                .actions
                .intersects(ActionType::UPDATE_NODE_CONDITION)
        );
    }
}
