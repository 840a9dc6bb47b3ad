//! The JSON of `k8s.io/kube-scheduler/extender/v1`, field for field.
//!
//! The Go types carry no `json` tags, so their JSON names are the Go field
//! names (`Pod`, `NodeNames`, `FailedNodes`, `Host`, `Score`, ...); Strata
//! writes exactly those. Go's decoder matches names without regard to case,
//! so an extender in another language may answer `nodeNames` or `error`
//! and kube-scheduler still reads it: the answers here accept the
//! lower-camel spellings too. A Go `nil` map, slice or pointer is `null`,
//! which reads as absent.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `ExtenderArgs`: what filter and prioritize send. Exactly one of `Nodes`
/// (node objects) and `NodeNames` (nodeCacheCapable) is set.
#[derive(Clone, Debug, Serialize)]
pub struct ExtenderArgs<'a, P: Serialize, N: Serialize> {
    /// The pod.
    #[serde(rename = "Pod")]
    pub pod: &'a P,
    /// `v1.NodeList` of the candidates, when not nodeCacheCapable.
    #[serde(rename = "Nodes", skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList<N>>,
    /// Names of the candidates, when nodeCacheCapable.
    #[serde(rename = "NodeNames", skip_serializing_if = "Option::is_none")]
    pub node_names: Option<Vec<&'a str>>,
}

/// A `v1.NodeList` as sent: its items only.
#[derive(Clone, Debug, Serialize)]
pub struct NodeList<N: Serialize> {
    /// The nodes.
    pub items: Vec<N>,
}

/// A node of an answered `v1.NodeList`: only its name is read (the
/// scheduler keeps its own view of the node, as kube-scheduler keeps the
/// node of its cache for nodeCacheCapable answers).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct NamedObject {
    /// `metadata`.
    #[serde(default)]
    pub metadata: NamedMeta,
}

/// `metadata.name`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct NamedMeta {
    /// The name.
    #[serde(default)]
    pub name: String,
}

/// An answered `v1.NodeList`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct NodeListAnswer {
    /// The nodes (`null` reads as none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<NamedObject>,
}

/// `ExtenderFilterResult`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ExtenderFilterResult {
    /// The nodes that passed, as objects.
    #[serde(default, rename = "Nodes", alias = "nodes")]
    pub nodes: Option<NodeListAnswer>,
    /// The nodes that passed, by name (nodeCacheCapable).
    #[serde(
        default,
        rename = "NodeNames",
        alias = "nodeNames",
        alias = "nodenames"
    )]
    pub node_names: Option<Vec<String>>,
    /// Failed nodes and why.
    #[serde(
        default,
        rename = "FailedNodes",
        alias = "failedNodes",
        deserialize_with = "null_as_default"
    )]
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes that failed so that preemption would not help either.
    #[serde(
        default,
        rename = "FailedAndUnresolvableNodes",
        alias = "failedAndUnresolvableNodes",
        deserialize_with = "null_as_default"
    )]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// An error: the whole call failed.
    #[serde(
        default,
        rename = "Error",
        alias = "error",
        deserialize_with = "null_as_default"
    )]
    pub error: String,
}

/// `HostPriority`: one node's score.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostPriority {
    /// The node name.
    #[serde(rename = "Host", alias = "host")]
    pub host: String,
    /// Its score, `0..=MaxExtenderPriority` (10).
    #[serde(rename = "Score", alias = "score", default)]
    pub score: i64,
}

/// `HostPriorityList`.
pub type HostPriorityList = Vec<HostPriority>;

/// `ExtenderBindingArgs`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExtenderBindingArgs {
    /// The pod's name.
    #[serde(rename = "PodName")]
    pub pod_name: String,
    /// The pod's namespace.
    #[serde(rename = "PodNamespace")]
    pub pod_namespace: String,
    /// The pod's UID.
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    /// The node to bind to.
    #[serde(rename = "Node")]
    pub node: String,
}

/// `ExtenderBindingResult`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ExtenderBindingResult {
    /// An error: the bind failed.
    #[serde(
        default,
        rename = "Error",
        alias = "error",
        deserialize_with = "null_as_default"
    )]
    pub error: String,
}

/// `MetaPod`: a pod by UID, in preemption answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetaPod {
    /// The pod's UID.
    #[serde(rename = "UID", alias = "uid")]
    pub uid: String,
}

/// `MetaVictims`: the victims on one node, by UID.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetaVictims {
    /// The pods to evict.
    #[serde(
        rename = "Pods",
        alias = "pods",
        default,
        deserialize_with = "null_as_default"
    )]
    pub pods: Vec<MetaPod>,
    /// How many PodDisruptionBudgets their eviction violates.
    #[serde(rename = "NumPDBViolations", alias = "numPDBViolations", default)]
    pub num_pdb_violations: i64,
}

/// `Victims`: the pods to evict on one node, whole (what an extender that
/// is not nodeCacheCapable gets).
#[derive(Clone, Debug, Serialize)]
pub struct Victims<P: Serialize> {
    /// The pods to evict.
    #[serde(rename = "Pods")]
    pub pods: Vec<P>,
    /// How many PodDisruptionBudgets their eviction violates.
    #[serde(rename = "NumPDBViolations")]
    pub num_pdb_violations: i64,
}

/// `ExtenderPreemptionArgs`: the preemptor and the candidate nodes with
/// their victims. Exactly one of the maps is set: victims by UID
/// (`NodeNameToMetaVictims`) for a nodeCacheCapable extender, whole pods
/// (`NodeNameToVictims`) for the others, as kube-scheduler sends them.
#[derive(Clone, Debug, Serialize)]
pub struct ExtenderPreemptionArgs<'a, P: Serialize> {
    /// The preemptor.
    #[serde(rename = "Pod")]
    pub pod: &'a P,
    /// The candidate nodes and their victims, whole.
    #[serde(rename = "NodeNameToVictims", skip_serializing_if = "Option::is_none")]
    pub node_name_to_victims: Option<BTreeMap<String, Victims<P>>>,
    /// The candidate nodes and their victims, by UID.
    #[serde(
        rename = "NodeNameToMetaVictims",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_name_to_meta_victims: Option<BTreeMap<String, MetaVictims>>,
}

/// `ExtenderPreemptionResult`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ExtenderPreemptionResult {
    /// The nodes the extender keeps, with their (possibly fewer) victims.
    #[serde(
        rename = "NodeNameToMetaVictims",
        alias = "nodeNameToMetaVictims",
        default,
        deserialize_with = "null_as_default"
    )]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a Go extender built on the upstream types writes reads back.
    #[test]
    fn go_answers_read() {
        let r: ExtenderFilterResult = serde_json::from_str(
            r#"{"Nodes":null,"NodeNames":["a","b"],"FailedNodes":{"c":"busy"},"FailedAndUnresolvableNodes":null,"Error":""}"#,
        )
        .unwrap();
        assert_eq!(
            r.node_names.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert!(r.nodes.is_none());
        assert_eq!(r.failed_nodes["c"], "busy");
        assert!(r.failed_and_unresolvable_nodes.is_empty());
        let r: ExtenderFilterResult = serde_json::from_str(
            r#"{"Nodes":{"metadata":{},"items":[{"metadata":{"name":"a","labels":{"x":"y"}},"spec":{}}]},"NodeNames":null,"FailedNodes":null,"FailedAndUnresolvableNodes":{"z":"gone"},"Error":""}"#,
        )
        .unwrap();
        assert_eq!(r.nodes.unwrap().items[0].metadata.name, "a");
        assert_eq!(r.failed_and_unresolvable_nodes["z"], "gone");
        let p: HostPriorityList =
            serde_json::from_str(r#"[{"Host":"a","Score":10},{"host":"b","score":3}]"#).unwrap();
        assert_eq!(p[1].score, 3);
        let b: ExtenderBindingResult = serde_json::from_str(r#"{"Error":"no"}"#).unwrap();
        assert_eq!(b.error, "no");
        let e: ExtenderPreemptionResult = serde_json::from_str(
            r#"{"NodeNameToMetaVictims":{"n":{"Pods":[{"UID":"u"}],"NumPDBViolations":1}}}"#,
        )
        .unwrap();
        assert_eq!(e.node_name_to_meta_victims["n"].pods[0].uid, "u");
    }

    /// What Strata sends carries the Go field names.
    #[test]
    fn args_use_go_names() {
        let pod = serde_json::json!({"metadata": {"name": "p"}});
        let a = ExtenderArgs::<_, serde_json::Value> {
            pod: &pod,
            nodes: None,
            node_names: Some(vec!["a"]),
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"Pod":{"metadata":{"name":"p"}},"NodeNames":["a"]}"#
        );
        let b = ExtenderBindingArgs {
            pod_name: "p".into(),
            pod_namespace: "ns".into(),
            pod_uid: "u".into(),
            node: "n".into(),
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"PodName":"p","PodNamespace":"ns","PodUID":"u","Node":"n"}"#
        );
        let v = ExtenderPreemptionArgs {
            pod: &pod,
            node_name_to_victims: None,
            node_name_to_meta_victims: Some(BTreeMap::from([(
                "n".to_owned(),
                MetaVictims {
                    pods: vec![MetaPod { uid: "u".into() }],
                    num_pdb_violations: 0,
                },
            )])),
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"Pod":{"metadata":{"name":"p"}},"NodeNameToMetaVictims":{"n":{"Pods":[{"UID":"u"}],"NumPDBViolations":0}}}"#
        );
        let v = ExtenderPreemptionArgs {
            pod: &pod,
            node_name_to_victims: Some(BTreeMap::from([(
                "n".to_owned(),
                Victims {
                    pods: vec![pod.clone()],
                    num_pdb_violations: 1,
                },
            )])),
            node_name_to_meta_victims: None,
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"Pod":{"metadata":{"name":"p"}},"NodeNameToVictims":{"n":{"Pods":[{"metadata":{"name":"p"}}],"NumPDBViolations":1}}}"#
        );
    }

    proptest::proptest! {
        /// No text makes reading an answer panic.
        #[test]
        fn garbage_never_panics(s in "\\PC{0,200}") {
            let _ = serde_json::from_str::<ExtenderFilterResult>(&s);
            let _ = serde_json::from_str::<HostPriorityList>(&s);
            let _ = serde_json::from_str::<ExtenderBindingResult>(&s);
            let _ = serde_json::from_str::<ExtenderPreemptionResult>(&s);
        }
    }
}
