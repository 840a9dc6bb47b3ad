//! Objects to fill a server with, shaped like what a real cluster returns
//! (labels, owner references, `managedFields`, status), so clients are
//! measured on realistic sizes.

use serde_json::{Value, json};

/// A node with `cpu` cores, `memory_gi` GiB and room for 110 pods, labelled
/// with a hostname, a zone (one of `zones`) and a rack.
pub fn node(name: &str, index: usize, cpu: u32, memory_gi: u32, zones: usize) -> Value {
    let zone = format!("zone-{}", index % zones.max(1));
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": zone,
                "topology.kubernetes.io/region": "region-1",
                "strata.io/rack": format!("rack-{}", index / 32),
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:allocatable": {}, "f:capacity": {}, "f:conditions": {}}}}],
        },
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {
            "capacity": {"cpu": cpu.to_string(), "memory": format!("{memory_gi}Gi"), "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": cpu.to_string(), "memory": format!("{memory_gi}Gi"), "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
            ],
            "nodeInfo": {"kubeletVersion": "v1.34.0", "containerRuntimeVersion": "containerd://2.0.0", "osImage": "Debian", "kernelVersion": "6.1",
                         "architecture": "amd64", "operatingSystem": "linux", "machineID": "m", "systemUUID": "s", "bootID": "b",
                         "kubeProxyVersion": "", "osImage2": null},
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": name}],
            "images": [{"names": ["registry.k8s.io/pause:3.10"], "sizeBytes": 320_000}],
        }
    })
}

/// `n` nodes named `node-00000`... with 64 cores and 256 GiB each in 8 zones.
pub fn nodes(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| node(&format!("node-{i:05}"), i, 64, 256, 8))
        .collect()
}

/// A pod of a ReplicaSet-like owner, asking for `cpu_m` millicores and
/// `memory_mi` MiB, for `scheduler`; bound to `node` when given (then
/// Running, with the usual conditions).
pub fn pod(
    namespace: &str,
    name: &str,
    scheduler: &str,
    cpu_m: u32,
    memory_mi: u32,
    node: Option<&str>,
) -> Value {
    let app = name.rsplit_once('-').map(|(a, _)| a).unwrap_or(name);
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"app": app, "pod-template-hash": "5d8f7c9b6"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{{\"name\":\"{name}\"}}}}")},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-5d8f7c9b6"),
                                 "uid": format!("rs-{app}"), "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}, "f:ownerReferences": {}},
                               "f:spec": {"f:containers": {}, "f:schedulerName": {}}}}],
        },
        "spec": {
            "schedulerName": scheduler,
            "containers": [{
                "name": "app", "image": format!("registry.example/{app}:1.0"),
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "serve"}, {"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": format!("{cpu_m}m"), "memory": format!("{memory_mi}Mi")},
                              "limits": {"memory": format!("{memory_mi}Mi")}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent",
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"}
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
        p["status"] = json!({
            "phase": "Running", "qosClass": "Burstable", "hostIP": "10.0.0.1", "podIP": "10.1.0.1",
            "startTime": "2025-01-01T00:00:00Z",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                           {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": format!("registry.example/{app}:1.0"),
                                   "imageID": "sha256:0", "containerID": "containerd://0", "started": true,
                                   "state": {"running": {"startedAt": "2025-01-01T00:00:01Z"}}}],
        });
    }
    p
}

/// `n` pods bound round-robin over `nodes` node names (`node-00000`...),
/// for the default scheduler, in namespace `ns`.
pub fn bound_pods(ns: &str, n: usize, nodes: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            pod(
                ns,
                &format!("running-{}-{i}", i % 50),
                "default-scheduler",
                250,
                256,
                Some(&format!("node-{:05}", i % nodes.max(1))),
            )
        })
        .collect()
}

/// `n` pending pods for `scheduler` in namespace `ns`.
pub fn pending_pods(ns: &str, n: usize, scheduler: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            pod(
                ns,
                &format!("pending-{}-{i}", i % 20),
                scheduler,
                100,
                128,
                None,
            )
        })
        .collect()
}

/// A namespace.
pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
}
