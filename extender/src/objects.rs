//! The API objects an extender gets, rebuilt from the engine's view.
//!
//! The pod is whole: its metadata as the scheduler knows it (name,
//! namespace, UID, labels, annotations, owner) and its spec as the API
//! server sent it. A node (sent only to extenders that are not
//! nodeCacheCapable) carries what the scheduler keeps of it: name, labels,
//! annotations, taints, `spec.unschedulable` and `status.allocatable`
//! (also given as `status.capacity`); an extender that needs more of the
//! node keeps its own cache and sets nodeCacheCapable, as with
//! kube-scheduler.

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use strata_scheduler::model::{NodeInfo, PodInfo};

/// The pod as the API would show it (without status).
pub fn pod_object(pod: &PodInfo) -> corev1::Pod {
    let labels: BTreeMap<String, String> = pod
        .labels
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
        .collect();
    corev1::Pod {
        metadata: ObjectMeta {
            name: Some(pod.name.to_string()),
            namespace: Some(pod.namespace.as_str().to_owned()),
            uid: Some(pod.uid.to_string()),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: (!pod.annotations.is_empty()).then(|| (*pod.annotations).clone()),
            owner_references: pod.owner.as_ref().map(|o| {
                let api_version = match &*o.kind {
                    "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Deployment" => "apps/v1",
                    "Job" | "CronJob" => "batch/v1",
                    _ => "v1",
                };
                vec![OwnerReference {
                    api_version: api_version.to_owned(),
                    kind: o.kind.to_string(),
                    name: o.name.to_string(),
                    uid: o.uid.to_string(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some((*pod.spec.raw).clone()),
        status: None,
    }
}

/// The node as the scheduler knows it.
pub fn node_object(node: &NodeInfo) -> corev1::Node {
    let labels: BTreeMap<String, String> = node
        .labels
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
        .collect();
    let allocatable: BTreeMap<String, Quantity> = node
        .allocatable
        .nonzero_ids()
        .map(|id| {
            let v = node.allocatable[id];
            let q = if id.is_milli() {
                if v % 1000 == 0 {
                    format!("{}", v / 1000)
                } else {
                    format!("{v}m")
                }
            } else {
                v.to_string()
            };
            (id.name().to_owned(), Quantity(q))
        })
        .collect();
    let taints: Vec<corev1::Taint> = node
        .taints
        .iter()
        .map(|t| corev1::Taint {
            key: t.key.as_str().to_owned(),
            value: (!t.value.is_empty()).then(|| t.value.as_str().to_owned()),
            effect: t.effect.as_str().to_owned(),
            time_added: None,
        })
        .collect();
    corev1::Node {
        metadata: ObjectMeta {
            name: Some(node.name.as_str().to_owned()),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: (!node.annotations.is_empty()).then(|| (*node.annotations).clone()),
            ..Default::default()
        },
        spec: Some(corev1::NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            unschedulable: node.unschedulable.then_some(true),
            ..Default::default()
        }),
        status: Some(corev1::NodeStatus {
            capacity: Some(allocatable.clone()),
            allocatable: Some(allocatable),
            ..Default::default()
        }),
    }
}
