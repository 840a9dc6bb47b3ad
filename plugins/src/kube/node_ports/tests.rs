//! NodePorts tests: protocol, IP and wildcard rules of host-port conflicts.

use super::*;
use crate::common::testkit;
use serde_json::{Value, json};
use strata_scheduler::sdk::{Code, Sym};
use strata_scheduler::testing;

/// A container port spec: `(hostIP, protocol, hostPort)`; empty IP and
/// protocol are left out so the API defaults apply.
fn ports(ps: &[(&str, &str, i32)]) -> Value {
    let list: Vec<Value> = ps
        .iter()
        .map(|(ip, proto, port)| {
            let mut v = json!({"containerPort": 8080, "hostPort": port});
            if !ip.is_empty() {
                v["hostIP"] = json!(ip);
            }
            if !proto.is_empty() {
                v["protocol"] = json!(proto);
            }
            v
        })
        .collect();
    json!({"containers": [{"name": "c", "image": "app:1", "ports": list}]})
}

fn pod_with_ports(name: &str, ps: &[(&str, &str, i32)]) -> testing::PodBuilder {
    testing::pod(name).spec(ports(ps))
}

#[test]
fn host_port_conflicts() {
    type Ports<'a> = &'a [(&'a str, &'a str, i32)];
    let cases: Vec<(&str, Ports<'_>, Ports<'_>, bool)> = vec![
        (
            "same port, both wildcard",
            &[("", "", 80)],
            &[("", "", 80)],
            false,
        ),
        (
            "node wildcard vs pod IP",
            &[("", "", 80)],
            &[("10.0.0.1", "", 80)],
            false,
        ),
        (
            "node IP vs pod wildcard",
            &[("10.0.0.1", "TCP", 80)],
            &[("0.0.0.0", "TCP", 80)],
            false,
        ),
        (
            "same IP",
            &[("10.0.0.1", "", 80)],
            &[("10.0.0.1", "TCP", 80)],
            false,
        ),
        (
            "different IPs",
            &[("10.0.0.1", "", 80)],
            &[("10.0.0.2", "", 80)],
            true,
        ),
        (
            "different protocols",
            &[("", "TCP", 80)],
            &[("", "UDP", 80)],
            true,
        ),
        ("different ports", &[("", "", 80)], &[("", "", 81)], true),
        (
            "one of several collides",
            &[("", "UDP", 53)],
            &[("", "", 8000), ("", "UDP", 53)],
            false,
        ),
        ("no host port on the node", &[], &[("", "", 80)], true),
    ];
    for (name, used, wanted, fits) in cases {
        let mut pods = vec![];
        if !used.is_empty() {
            pods.push(pod_with_ports("old", used).on("n1").build());
        }
        let cache = testing::cache_with(vec![testing::node("n1").build()], pods);
        let snap = cache.snapshot();
        let node = snap.node_by_name(Sym::new("n1")).unwrap();
        let pod = pod_with_ports("new", wanted).build();
        let mut state = CycleState::new();
        assert!(
            NodePorts
                .pre_filter(&mut state, &pod, snap)
                .status
                .is_success(),
            "{name}"
        );
        let st = NodePorts.filter(&state, &pod, node);
        if fits {
            assert!(st.is_success(), "{name}: {st}");
        } else {
            assert_eq!(st.code(), Code::Unschedulable, "{name}");
            assert_eq!(st.message(), REASON);
        }
    }
}

#[test]
fn pods_without_host_ports_skip() {
    let cache = testing::cache_with(
        vec![testing::node("n1").build()],
        vec![testing::pod("old").host_port(80).on("n1").build()],
    );
    let snap = cache.snapshot();
    let mut state = CycleState::new();
    let plain = testing::pod("p").build();
    assert!(
        NodePorts
            .pre_filter(&mut state, &plain, snap)
            .status
            .is_skip()
    );
    // A container port without a host port is not a host port.
    let container_only = testing::pod("q")
        .spec(json!({"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}))
        .build();
    assert!(
        NodePorts
            .pre_filter(&mut state, &container_only, snap)
            .status
            .is_skip()
    );
    let node = snap.node_by_name(Sym::new("n1")).unwrap();
    assert!(NodePorts.filter(&state, &container_only, node).is_success());
    assert!(
        !NodePorts
            .filter(&state, &testing::pod("r").host_port(80).build(), node)
            .is_success()
    );
}

#[test]
fn requeued_when_a_conflicting_pod_leaves() {
    let plugin = factory(None, &testkit::handle()).unwrap();
    assert!(plugin.as_pre_filter().is_some());
    assert!(plugin.as_filter().unwrap().is_node_local());
    let pod = testing::pod("p").host_port(80).build();
    let holder = testing::pod("a").host_port(80).on("n1").build();
    let other = testing::pod("b").host_port(81).on("n1").build();
    let deleted = |gone| ClusterEvent {
        resource: EventResource::AssignedPod,
        action: ActionType::DELETE,
        object: EventObject::Pod {
            old: Some(gone),
            new: None,
        },
    };
    assert_eq!(
        plugin.queueing_hint(&pod, &deleted(&holder)),
        QueueingHint::Queue
    );
    assert_eq!(
        plugin.queueing_hint(&pod, &deleted(&other)),
        QueueingHint::Skip
    );
    let node_added = ClusterEvent {
        resource: EventResource::Node,
        action: ActionType::ADD,
        object: EventObject::None,
    };
    assert_eq!(plugin.queueing_hint(&pod, &node_added), QueueingHint::Queue);
    let kinds = plugin.events_to_register();
    assert!(kinds.contains(&ClusterEventKind::new(
        EventResource::AssignedPod,
        ActionType::DELETE
    )));
    assert!(kinds.contains(&ClusterEventKind::new(EventResource::Node, ActionType::ADD)));
}
