//! SchedulingGates: holds a pod out of the active queue while it has
//! scheduling gates ("Pod Scheduling Readiness" in the Kubernetes docs).
//!
//! A gated pod is never tried: PreEnqueue keeps it aside with
//! UnschedulableAndUnresolvable and the message `waiting for scheduling
//! gates: [a b]`. Gates can only be removed, never added, once a pod exists,
//! so the one event that can release it is an update of the pod itself that
//! removes its gates.

use std::sync::Arc;
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, EventObject, EventResource, Handle, Plugin,
    PluginArgsError, PodInfo, PreEnqueuePlugin, QueueingHint, Status,
};

/// The plugin's configuration name.
pub const NAME: &str = "SchedulingGates";

/// Keeps gated pods out of the active queue.
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedulingGates;

/// The message for a pod held by `gates`, in kube-scheduler's spelling (Go
/// prints a string slice as `[a b]`).
fn waiting_message(gates: &[String]) -> String {
    format!("waiting for scheduling gates: [{}]", gates.join(" "))
}

strata_scheduler::plugin!(SchedulingGates: NAME => [PreEnqueue] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![ClusterEventKind::new(
            EventResource::UnscheduledPod,
            ActionType::UPDATE_POD_SCHEDULING_GATES,
        )]
    }

    /// Only an update of this very pod that leaves it without gates helps.
    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        match event.object {
            EventObject::Pod { new: Some(new), .. }
                if new.uid == pod.uid && new.spec.scheduling_gates.is_empty() =>
            {
                QueueingHint::Queue
            }
            _ => QueueingHint::Skip,
        }
    }
});

impl PreEnqueuePlugin for SchedulingGates {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        let gates = &pod.spec.scheduling_gates;
        if gates.is_empty() {
            Status::success()
        } else {
            Status::unresolvable(waiting_message(gates))
        }
    }
}

/// Builds the plugin. SchedulingGates takes no arguments.
pub fn factory(
    _args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(SchedulingGates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testkit;
    use serde_json::json;
    use strata_scheduler::sdk::Code;
    use strata_scheduler::testing;

    fn gated(name: &str, gates: &[&str]) -> PodInfo {
        let gates: Vec<_> = gates.iter().map(|g| json!({ "name": g })).collect();
        testing::pod(name)
            .spec(json!({ "schedulingGates": gates }))
            .build()
    }

    #[test]
    fn gated_pods_wait_with_kube_message() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (
                &["example.com/foo"],
                Some("waiting for scheduling gates: [example.com/foo]"),
            ),
            (
                &["example.com/foo", "example.com/bar"],
                Some("waiting for scheduling gates: [example.com/foo example.com/bar]"),
            ),
        ];
        for (gates, want) in cases {
            let st = SchedulingGates.pre_enqueue(&gated("p", gates));
            match want {
                None => assert!(st.is_success(), "{gates:?}: {st}"),
                Some(msg) => {
                    assert_eq!(st.code(), Code::UnschedulableAndUnresolvable, "{gates:?}");
                    assert_eq!(st.message(), *msg);
                }
            }
        }
        // A pod without the field at all is not gated.
        assert!(
            SchedulingGates
                .pre_enqueue(&testing::pod("plain").build())
                .is_success()
        );
    }

    #[test]
    fn only_the_pods_own_gate_removal_requeues_it() {
        let p = factory(None, &testkit::handle()).unwrap();
        assert!(p.as_pre_enqueue().is_some());
        assert_eq!(
            p.events_to_register(),
            vec![ClusterEventKind::new(
                EventResource::UnscheduledPod,
                ActionType::UPDATE_POD_SCHEDULING_GATES
            )]
        );
        let old = gated("p", &["a", "b"]);
        let half = gated("p", &["b"]);
        let open = gated("p", &[]);
        let other_open = gated("q", &[]);
        fn ev<'a>(old: &'a PodInfo, new: &'a PodInfo) -> ClusterEvent<'a> {
            ClusterEvent {
                resource: EventResource::UnscheduledPod,
                action: ActionType::UPDATE_POD_SCHEDULING_GATES,
                object: EventObject::Pod {
                    old: Some(old),
                    new: Some(new),
                },
            }
        }
        assert_eq!(p.queueing_hint(&old, &ev(&old, &open)), QueueingHint::Queue);
        assert_eq!(p.queueing_hint(&old, &ev(&old, &half)), QueueingHint::Skip);
        assert_eq!(
            p.queueing_hint(&old, &ev(&other_open, &other_open)),
            QueueingHint::Skip
        );
    }
}
