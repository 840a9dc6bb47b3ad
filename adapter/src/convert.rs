//! API objects to engine updates, in one place.
//!
//! Everything that arrives from the API passes through here before anything
//! is kept: `managedFields`, the `last-applied-configuration` annotation and
//! every status field scheduling does not read are dropped first, so memory
//! holds only what the engine compiles. Pods are compiled here (on the
//! informer's task, not the scheduling thread); a pod that does not compile
//! becomes [`ClusterUpdate::PodInvalid`] so the engine can report it.
//!
//! Priority: the API server's Priority admission plugin normally fills
//! `spec.priority` from the pod's PriorityClass. Where it has not (a pod
//! created before its class, or admission disabled), the adapter resolves it
//! from the PriorityClasses it watches, as admission would have.

use k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodStatus, Volume};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use strata_scheduler::cache::PdbInfo;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::intern::Sym;
use strata_scheduler::labels::{Labels, Selector};
use strata_scheduler::model::PodInfo;

/// The annotation `kubectl apply` leaves: often the largest thing on an
/// object, and never read by a scheduler.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Class values by name, and the global default class (name, value).
type ClassTable = (FxHashMap<String, i32>, Option<(String, i32)>);

/// PriorityClass values by name, and the global default.
#[derive(Default)]
pub struct PriorityClasses {
    inner: RwLock<ClassTable>,
}

impl PriorityClasses {
    /// Records a class.
    pub fn upsert(&self, pc: &PriorityClass) {
        let Some(name) = pc.metadata.name.clone() else {
            return;
        };
        let mut g = self.inner.write();
        g.0.insert(name.clone(), pc.value);
        if pc.global_default == Some(true) {
            g.1 = Some((name, pc.value));
        } else if g.1.as_ref().is_some_and(|(n, _)| *n == name) {
            g.1 = None;
        }
    }

    /// Forgets a class.
    pub fn delete(&self, name: &str) {
        let mut g = self.inner.write();
        g.0.remove(name);
        if g.1.as_ref().is_some_and(|(n, _)| n == name) {
            g.1 = None;
        }
    }

    /// The priority admission would give a pod with `class` (or none).
    pub fn resolve(&self, class: Option<&str>) -> Option<i32> {
        let g = self.inner.read();
        match class.filter(|c| !c.is_empty()) {
            Some("system-node-critical") => Some(2_000_001_000),
            Some("system-cluster-critical") => Some(2_000_000_000),
            Some(c) => g.0.get(c).copied(),
            None => g.1.as_ref().map(|(_, v)| *v),
        }
    }
}

/// Drops what scheduling never reads from a container: everything but its
/// name, image, resources, ports and restart policy (which makes an init
/// container a sidecar).
fn strip_container(c: &mut Container) {
    *c = Container {
        name: std::mem::take(&mut c.name),
        image: c.image.take(),
        resources: c.resources.take(),
        ports: c.ports.take(),
        restart_policy: c.restart_policy.take(),
        ..Container::default()
    };
}

/// Whether a volume is one a scheduler looks at (claims, CSI and the
/// in-tree disks that cannot be shared between nodes); config maps,
/// secrets, projected tokens and empty dirs are not.
fn volume_matters(v: &Volume) -> bool {
    v.persistent_volume_claim.is_some()
        || v.ephemeral.is_some()
        || v.csi.is_some()
        || v.gce_persistent_disk.is_some()
        || v.aws_elastic_block_store.is_some()
        || v.azure_disk.is_some()
        || v.rbd.is_some()
        || v.iscsi.is_some()
}

/// Drops what scheduling never reads from a pod: `managedFields`, the
/// last-applied annotation, container details other than requests, ports
/// and images (env, commands, probes, mounts...), volumes no scheduler
/// considers, pod-level fields of the kubelet's only (DNS, host aliases,
/// security context, pull secrets), and every status field but the phase
/// and the nominated node. At 100,000 pods this is most of the memory.
pub fn strip_pod(pod: &mut Pod) {
    let md = &mut pod.metadata;
    md.managed_fields = None;
    if let Some(a) = md.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.iter_mut().for_each(strip_container);
        spec.init_containers
            .iter_mut()
            .flatten()
            .for_each(strip_container);
        spec.ephemeral_containers = None;
        if let Some(vs) = spec.volumes.as_mut() {
            vs.retain(volume_matters);
        }
        spec.dns_config = None;
        spec.host_aliases = None;
        spec.image_pull_secrets = None;
        spec.security_context = None;
        spec.readiness_gates = None;
    }
    if let Some(s) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: s.phase,
            nominated_node_name: s.nominated_node_name,
            ..PodStatus::default()
        });
    }
}

/// Drops what scheduling never reads from a node. Annotations stay (but
/// the last-applied one): plugins read device details from them
/// (`strata.io/devices`, HAMi's register annotations).
pub fn strip_node(node: &mut Node) {
    let md = &mut node.metadata;
    md.managed_fields = None;
    if let Some(a) = md.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    if let Some(s) = node.status.take() {
        node.status = Some(NodeStatus {
            allocatable: s.allocatable,
            capacity: s.capacity,
            images: s.images,
            ..NodeStatus::default()
        });
    }
}

/// The engine update for an added or changed pod.
pub fn pod_update(mut pod: Pod, priorities: &PriorityClasses) -> ClusterUpdate {
    strip_pod(&mut pod);
    if let Some(spec) = pod.spec.as_mut()
        && spec.priority.is_none()
        && let Some(p) = priorities.resolve(spec.priority_class_name.as_deref())
    {
        spec.priority = Some(p);
    }
    match PodInfo::compile(&pod) {
        Ok(p) => ClusterUpdate::PodUpserted(Arc::new(p)),
        Err(error) => {
            let md = &pod.metadata;
            let namespace = md.namespace.clone().unwrap_or_default();
            let name = md.name.clone().unwrap_or_default();
            ClusterUpdate::PodInvalid {
                uid: md
                    .uid
                    .as_deref()
                    .unwrap_or(&format!("{namespace}/{name}"))
                    .into(),
                namespace,
                name,
                scheduler_name: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.scheduler_name.clone())
                    .unwrap_or_else(|| "default-scheduler".to_owned()),
                error,
            }
        }
    }
}

/// The engine update for an added or changed node.
pub fn node_update(mut node: Node) -> ClusterUpdate {
    strip_node(&mut node);
    ClusterUpdate::NodeUpserted(Arc::new(node))
}

/// The engine update for an added or changed PodDisruptionBudget. A
/// selector that does not compile covers no pod (and is logged).
pub fn pdb_update(pdb: &PodDisruptionBudget) -> ClusterUpdate {
    let namespace = Sym::new(pdb.metadata.namespace.as_deref().unwrap_or("default"));
    let name: Arc<str> = pdb.metadata.name.as_deref().unwrap_or("").into();
    let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| match Selector::compile(s) {
        Ok(sel) => Some(sel),
        Err(e) => {
            tracing::warn!(pdb = %format!("{namespace}/{name}"), error = %e, "PodDisruptionBudget selector ignored");
            None
        }
    });
    ClusterUpdate::PdbUpserted(PdbInfo {
        namespace,
        name,
        selector,
        disruptions_allowed: pdb
            .status
            .as_ref()
            .map(|s| s.disruptions_allowed)
            .unwrap_or(0),
    })
}

/// The engine update for an added or changed namespace.
pub fn namespace_update(ns: &k8s_openapi::api::core::v1::Namespace) -> ClusterUpdate {
    ClusterUpdate::NamespaceUpserted {
        name: Sym::new(ns.metadata.name.as_deref().unwrap_or("")),
        labels: Labels::from_map(ns.metadata.labels.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api_pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn stripping_keeps_what_compile_reads() {
        let mut p = api_pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u",
                         "annotations": {LAST_APPLIED: "{...}", "keep": "me"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "nominatedNodeName": "n1", "conditions": [{"type": "PodScheduled", "status": "False"}],
                       "containerStatuses": []}
        }));
        strip_pod(&mut p);
        assert!(p.metadata.managed_fields.is_none());
        let a = p.metadata.annotations.as_ref().unwrap();
        assert!(!a.contains_key(LAST_APPLIED) && a.contains_key("keep"));
        let s = p.status.as_ref().unwrap();
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(s.nominated_node_name.as_deref(), Some("n1"));
        assert!(s.conditions.is_none() && s.container_statuses.is_none());
    }

    #[test]
    fn stripping_keeps_requests_ports_images_and_claims() {
        let mut p = api_pod(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{"name": "c", "image": "x:1", "env": [{"name": "A", "value": "b"}], "command": ["run"],
                                "ports": [{"containerPort": 80, "hostPort": 80}],
                                "resources": {"requests": {"cpu": "1"}}, "readinessProbe": {"httpGet": {"port": 80}}}],
                "initContainers": [{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}, "args": ["x"]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}, {"name": "cfg", "configMap": {"name": "c"}}],
                "dnsConfig": {"nameservers": ["1.1.1.1"]}, "nodeSelector": {"a": "b"}
            }
        }));
        let before = PodInfo::compile(&p).unwrap();
        strip_pod(&mut p);
        let spec = p.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert!(c.env.is_none() && c.command.is_none() && c.readiness_probe.is_none());
        assert_eq!(c.image.as_deref(), Some("x:1"));
        assert_eq!(
            spec.init_containers.as_ref().unwrap()[0]
                .restart_policy
                .as_deref(),
            Some("Always")
        );
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 1);
        assert_eq!(vols[0].name, "data");
        assert!(spec.dns_config.is_none() && spec.node_selector.is_some());
        let after = PodInfo::compile(&p).unwrap();
        assert_eq!(before.spec.requests, after.spec.requests);
        assert_eq!(before.spec.host_ports, after.spec.host_ports);
        assert_eq!(before.spec.images, after.spec.images);
    }

    #[test]
    fn node_stripping_keeps_allocatable_and_images() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n", "labels": {"a": "b"}, "managedFields": [{"manager": "kubelet"}]},
            "status": {"allocatable": {"cpu": "4"}, "images": [{"names": ["x:1"], "sizeBytes": 10}],
                       "conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"architecture": "amd64", "bootID": "",
                       "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "",
                       "operatingSystem": "", "osImage": "", "systemUUID": ""}}
        }))
        .unwrap();
        strip_node(&mut n);
        let s = n.status.as_ref().unwrap();
        assert!(s.allocatable.is_some() && s.images.is_some());
        assert!(s.conditions.is_none() && s.node_info.is_none());
        assert!(n.metadata.managed_fields.is_none());
        assert_eq!(n.metadata.labels.as_ref().unwrap()["a"], "b");
        let mut n: Node = serde_json::from_value(json!({"metadata": {"name": "n",
            "annotations": {LAST_APPLIED: "{}", "strata.io/devices": "[]"}}}))
        .unwrap();
        strip_node(&mut n);
        let a = n.metadata.annotations.as_ref().unwrap();
        assert_eq!(a.len(), 1, "device annotations stay: {a:?}");
        assert!(a.contains_key("strata.io/devices"));
    }

    #[test]
    fn priority_from_class_when_admission_did_not_set_it() {
        let pcs = PriorityClasses::default();
        pcs.upsert(
            &serde_json::from_value(json!({"metadata": {"name": "high"}, "value": 1000})).unwrap(),
        );
        pcs.upsert(
            &serde_json::from_value(
                json!({"metadata": {"name": "dflt"}, "value": 7, "globalDefault": true}),
            )
            .unwrap(),
        );
        let mk = |extra: serde_json::Value| {
            let mut spec = json!({"containers": [{"name": "c"}], "schedulerName": "s"});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            api_pod(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}))
        };
        let prio = |u: ClusterUpdate| match u {
            ClusterUpdate::PodUpserted(p) => p.priority,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            prio(pod_update(mk(json!({"priorityClassName": "high"})), &pcs)),
            1000
        );
        assert_eq!(prio(pod_update(mk(json!({})), &pcs)), 7);
        assert_eq!(
            prio(pod_update(
                mk(json!({"priorityClassName": "high", "priority": 5})),
                &pcs
            )),
            5
        );
        assert_eq!(
            prio(pod_update(
                mk(json!({"priorityClassName": "system-node-critical"})),
                &pcs
            )),
            2_000_001_000
        );
        pcs.delete("dflt");
        assert_eq!(prio(pod_update(mk(json!({})), &pcs)), 0);
    }

    #[test]
    fn a_pod_that_does_not_compile_is_reported_not_dropped() {
        let p = api_pod(json!({
            "metadata": {"name": "bad", "namespace": "ns", "uid": "u1"},
            "spec": {"schedulerName": "strata-scheduler",
                     "containers": [{"name": "c", "resources": {"requests": {"cpu": "lots"}}}]}
        }));
        match pod_update(p, &PriorityClasses::default()) {
            ClusterUpdate::PodInvalid {
                uid,
                name,
                scheduler_name,
                error,
                ..
            } => {
                assert_eq!(
                    (&*uid, name.as_str(), scheduler_name.as_str()),
                    ("u1", "bad", "strata-scheduler")
                );
                assert!(error.field.contains("containers[0]"), "{}", error.field);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pdb_to_engine() {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}},
            "status": {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3}
        }))
        .unwrap();
        match pdb_update(&pdb) {
            ClusterUpdate::PdbUpserted(p) => {
                assert_eq!(p.disruptions_allowed, 1);
                assert!(p.selector.is_some());
                assert_eq!(&*p.name, "db");
            }
            other => panic!("{other:?}"),
        }
    }
}
