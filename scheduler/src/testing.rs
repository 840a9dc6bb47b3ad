//! Builders for nodes and pods in tests and benchmarks, here and in other
//! crates. Not for production code paths: compiled for this crate's tests
//! and, in other crates, with the `testing` feature (as a dev-dependency).

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
    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["annotations"][k] = json!(v);
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

/// A cluster port for tests that records what the engine asks of it and
/// can be told to fail: `fail_binds` / `conflict` make that many upcoming
/// binds fail (as a transient error / as "already bound"), and
/// `bind_delay_ms` slows every bind down.
#[derive(Default)]
pub struct RecordingCluster {
    /// Successful binds: pod key and node.
    pub binds: parking_lot::Mutex<Vec<(String, String)>>,
    /// Upcoming binds to fail with a transient error.
    pub fail_binds: std::sync::atomic::AtomicUsize,
    /// Upcoming binds to fail with "already bound".
    pub conflict: std::sync::atomic::AtomicUsize,
    /// Delay of every bind, milliseconds.
    pub bind_delay_ms: std::sync::atomic::AtomicU64,
    /// Conditions published: pod key and condition.
    pub conditions: parking_lot::Mutex<Vec<(String, crate::cluster::PodCondition)>>,
    /// Events recorded.
    pub events: parking_lot::Mutex<Vec<crate::cluster::PodEvent>>,
    /// Pods deleted (preemption victims): pod key.
    pub deleted: parking_lot::Mutex<Vec<String>>,
    /// Annotations merged into pods by PreBind plugins: pod key and the
    /// annotations of one patch.
    pub annotations: parking_lot::Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

fn take_one(c: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    c.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
}

#[async_trait::async_trait]
impl crate::cluster::ClusterPort for RecordingCluster {
    async fn bind(
        &self,
        pod: &PodInfo,
        node: crate::intern::Sym,
    ) -> Result<(), crate::cluster::BindError> {
        let d = self.bind_delay_ms.load(std::sync::atomic::Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(d)).await;
        }
        if take_one(&self.conflict) {
            return Err(crate::cluster::BindError::Conflict(pod.key()));
        }
        if take_one(&self.fail_binds) {
            return Err(crate::cluster::BindError::Other(
                "apiserver unavailable".into(),
            ));
        }
        self.binds.lock().push((pod.key(), node.to_string()));
        Ok(())
    }
    async fn update_pod_condition(
        &self,
        pod: &PodInfo,
        c: crate::cluster::PodCondition,
    ) -> Result<(), crate::cluster::ClusterError> {
        self.conditions.lock().push((pod.key(), c));
        Ok(())
    }
    async fn delete_pod(
        &self,
        pod: &PodInfo,
        _reason: &str,
    ) -> Result<(), crate::cluster::ClusterError> {
        self.deleted.lock().push(pod.key());
        Ok(())
    }
    fn record_event(&self, e: crate::cluster::PodEvent) {
        self.events.lock().push(e);
    }
    /// Recorded (device plugins write assignments as pod annotations).
    async fn patch_pod_annotations(
        &self,
        pod: &PodInfo,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), crate::cluster::ClusterError> {
        self.annotations
            .lock()
            .push((pod.key(), annotations.clone()));
        Ok(())
    }
}

/// The [`Handle`](crate::framework::Handle) a plugin is built with, around
/// `cluster`, with a manual clock at zero, the profile `strata-scheduler`
/// and no preemption claims.
pub fn handle(cluster: Arc<dyn crate::cluster::ClusterPort>) -> crate::framework::Handle {
    crate::framework::Handle {
        cluster,
        waiting: crate::framework::WaitingPods::default(),
        clock: Arc::new(crate::clock::ManualClock::default()),
        scheduler_name: crate::intern::Sym::new("strata-scheduler"),
        preemption: Default::default(),
    }
}

/// Minimal plugins for engine tests: a priority QueueSort, a cpu-only fit
/// (node-local Filter and a most-free Score), and a binder that calls the
/// cluster port.
pub mod plugins {
    use crate::cluster::ClusterPort;
    use crate::framework::{
        ActionType, BindPlugin, ClusterEventKind, CycleState, EventResource, FilterPlugin, NodeRef,
        QueueSortPlugin, ScorePlugin, SortKey, Status,
    };
    use crate::model::{NodeInfo, PodInfo};
    use crate::resources::ResourceId;
    use std::sync::Arc;

    /// Higher priority first, then earlier arrival. Named `Sort`.
    pub struct Sort;
    crate::plugin!(Sort: "Sort" => [QueueSort]);
    impl QueueSortPlugin for Sort {
        fn sort_key(&self, pod: &PodInfo, t: u64) -> SortKey {
            SortKey {
                primary: -(pod.priority as i64),
                secondary: t as i64,
                tertiary: 0,
            }
        }
    }

    /// Cpu requests must fit; the node with the most free cpu scores best.
    /// Named `Cpu`; retries on node add and assigned-pod delete.
    pub struct Cpu;
    crate::plugin!(Cpu: "Cpu" => [Filter, Score] {
        fn events_to_register(&self) -> Vec<ClusterEventKind> {
            vec![
                ClusterEventKind::new(EventResource::Node, ActionType::ADD),
                ClusterEventKind::new(EventResource::AssignedPod, ActionType::DELETE),
            ]
        }
    });
    impl FilterPlugin for Cpu {
        fn is_node_local(&self) -> bool {
            true
        }
        fn filter(&self, _s: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
            if node.free(ResourceId::CPU) < pod.spec.requests[ResourceId::CPU] {
                Status::unschedulable("Insufficient cpu")
            } else {
                Status::success()
            }
        }
    }
    impl ScorePlugin for Cpu {
        fn is_node_local(&self) -> bool {
            true
        }
        fn score(&self, _s: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
            Ok(node.free(ResourceId::CPU) * 100 / node.allocatable[ResourceId::CPU].max(1))
        }
    }

    /// Binds through the cluster port. Named `Binder`.
    pub struct Binder(pub Arc<dyn ClusterPort>);
    crate::plugin!(Binder: "Binder" => [Bind]);
    #[async_trait::async_trait]
    impl BindPlugin for Binder {
        async fn bind(&self, _s: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
            match self.0.bind(pod, node.name).await {
                Ok(()) => Status::success(),
                Err(e) => Status::error(e.to_string()),
            }
        }
    }
}
