//! Builders for nodes and pods in tests and benchmarks, here and in other
//! crates. Not for production code paths.

use crate::cache::Cache;
use crate::model::PodInfo;
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Builds a `corev1::Node`.
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    v: Value,
}

/// Starts a node called `name` with 4 cpus, 32Gi memory and 110 pods.
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        v: json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"}}
        }),
    }
}

impl NodeBuilder {
    /// Sets an allocatable quantity.
    pub fn alloc(mut self, resource: &str, q: &str) -> Self {
        self.v["status"]["allocatable"][resource] = json!(q);
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["labels"][k] = json!(v);
        self
    }
    /// Adds a taint.
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let t = json!({"key": key, "value": value, "effect": effect});
        match self.v["spec"]["taints"].as_array_mut() {
            Some(a) => a.push(t),
            None => self.v["spec"]["taints"] = json!([t]),
        }
        self
    }
    /// Cordons the node.
    pub fn unschedulable(mut self) -> Self {
        self.v["spec"]["unschedulable"] = json!(true);
        self
    }
    /// Adds an image with its size.
    pub fn image(mut self, name: &str, size: i64) -> Self {
        let i = json!({"names": [name], "sizeBytes": size});
        match self.v["status"]["images"].as_array_mut() {
            Some(a) => a.push(i),
            None => self.v["status"]["images"] = json!([i]),
        }
        self
    }
    /// The node.
    pub fn build(self) -> corev1::Node {
        serde_json::from_value(self.v).expect("test node is valid")
    }
}

/// Builds a pod.
#[derive(Clone, Debug)]
pub struct PodBuilder {
    v: Value,
}

/// Starts a pod `name` in namespace `default` with one container and no
/// requests.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        v: json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "app:1", "resources": {"requests": {}}}],
                     "schedulerName": "strata-scheduler"}
        }),
    }
}

impl PodBuilder {
    /// Sets the namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.v["metadata"]["namespace"] = json!(ns);
        self
    }
    /// Sets a request on the first container.
    pub fn req(mut self, resource: &str, q: &str) -> Self {
        self.v["spec"]["containers"][0]["resources"]["requests"][resource] = json!(q);
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["labels"][k] = json!(v);
        self
    }
    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["annotations"][k] = json!(v);
        self
    }
    /// Sets `spec.priority`.
    pub fn priority(mut self, p: i32) -> Self {
        self.v["spec"]["priority"] = json!(p);
        self
    }
    /// Binds the pod to a node (`spec.nodeName`).
    pub fn on(mut self, node: &str) -> Self {
        self.v["spec"]["nodeName"] = json!(node);
        self
    }
    /// Merges `patch` into `spec` (shallow: top-level spec keys replaced).
    pub fn spec(mut self, patch: Value) -> Self {
        if let (Some(spec), Some(p)) = (self.v["spec"].as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                spec.insert(k.clone(), v.clone());
            }
        }
        self
    }
    /// Sets the first container's host port.
    pub fn host_port(mut self, port: i32) -> Self {
        self.v["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": port, "hostPort": port}]);
        self
    }
    /// The API object.
    pub fn build_api(self) -> corev1::Pod {
        serde_json::from_value(self.v).expect("test pod is valid")
    }
    /// The compiled pod.
    pub fn build(self) -> PodInfo {
        PodInfo::compile(&self.build_api()).expect("test pod compiles")
    }
    /// The compiled pod in an `Arc`.
    pub fn arc(self) -> Arc<PodInfo> {
        Arc::new(self.build())
    }
}

/// A cache holding `nodes` and the bound `pods` (each must have `on(..)`).
pub fn cache_with(nodes: Vec<corev1::Node>, pods: Vec<PodInfo>) -> Cache {
    let mut c = Cache::new();
    for n in &nodes {
        c.upsert_node(n).expect("test node is valid");
    }
    for p in pods {
        c.add_pod(Arc::new(p));
    }
    c
}

/// A quantity map from pairs.
pub fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}
