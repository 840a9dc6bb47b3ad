//! Accelerators through the real adapter against the fake API server: DRA
//! objects (`resource.k8s.io/v1`) reach the DynamicResources plugin, its
//! allocation is written into the claim's status before the pod is bound,
//! a claim that cannot be satisfied yet is retried when the missing object
//! appears, a 409 on the claim status write is never overwritten, and the
//! Devices plugin's assignment is patched onto the pod before the bind.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use strata_fake_apiserver::{FakeApiServer, RequestRecord, ResourceType, fixtures};
use strata_kube::Adapter;
use strata_scheduler::config::SchedulerConfig;

const DRIVER: &str = "gpu.example.com";
const CLAIMS: &str = "resourceclaims.resource.k8s.io";

/// The test profile: the default plugins plus Devices and DynamicResources
/// (NodeResourcesFit ignores HAMi's share resources, which Devices
/// accounts).
const CONFIG: &str = r#"
parallelism: 2
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 2
profiles:
  - schedulerName: strata-scheduler
    plugins:
      multiPoint:
        enabled:
          - {name: Devices, weight: 2}
          - {name: DynamicResources}
    pluginConfig:
      - name: NodeResourcesFit
        args: {ignoredResources: [nvidia.com/gpumem, nvidia.com/gpumem-percentage, nvidia.com/gpucores]}
"#;

/// A server serving `resource.k8s.io/v1`, with a CPU-only node and a node
/// `gpu-node` whose ResourceSlice publishes `devices` (name, model).
fn dra_server(devices: &[(&str, &str)]) -> FakeApiServer {
    let s = server();
    for (plural, kind, namespaced) in [
        ("deviceclasses", "DeviceClass", false),
        ("resourceslices", "ResourceSlice", false),
        ("resourceclaims", "ResourceClaim", true),
        ("resourceclaimtemplates", "ResourceClaimTemplate", true),
    ] {
        let rt = ResourceType::new("resource.k8s.io", "v1", plural, kind, namespaced);
        // Claims have a status subresource: the plugin's allocation must
        // go through it, as kube-apiserver ignores status elsewhere.
        s.register(if plural == "resourceclaims" {
            rt.with_status_subresource()
        } else {
            rt
        });
    }
    s.create("nodes", fixtures::node("cpu-node", 0, 16, 64, 1))
        .unwrap();
    s.create("nodes", fixtures::node("gpu-node", 1, 16, 64, 1))
        .unwrap();
    let devs: Vec<Value> = devices
        .iter()
        .map(|(name, model)| json!({"name": name, "attributes": {"model": {"string": model}}}))
        .collect();
    s.create(
        "resourceslices.resource.k8s.io",
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
               "metadata": {"name": "gpu-node-gpu.example.com"},
               "spec": {"driver": DRIVER, "nodeName": "gpu-node",
                        "pool": {"name": "gpu-node", "generation": 1, "resourceSliceCount": 1},
                        "devices": devs}}),
    )
    .unwrap();
    s
}

/// A DeviceClass selecting the driver's devices with CEL.
fn device_class(name: &str) -> Value {
    json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
           "metadata": {"name": name},
           "spec": {"selectors": [{"cel": {"expression": format!("device.driver == \"{DRIVER}\"")}}]}})
}

/// A claim for one device of `class`, of `model` when given.
fn claim(name: &str, class: &str, model: Option<&str>) -> Value {
    let mut exactly = json!({"deviceClassName": class, "allocationMode": "ExactCount", "count": 1});
    if let Some(m) = model {
        exactly["selectors"] = json!([{"cel": {"expression":
            format!("device.attributes[\"{DRIVER}\"].model == \"{m}\"")}}]);
    }
    json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
           "metadata": {"name": name, "namespace": "work"},
           "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}})
}

/// A pending pod using `source` (`resourceClaimName` or
/// `resourceClaimTemplateName`) as its claim `gpu`.
fn claim_pod(name: &str, source: Value) -> Value {
    let mut p = fixtures::pod("work", name, SCHED, 100, 64, None);
    let mut rc = json!({"name": "gpu"});
    if let (Some(m), Some(s)) = (rc.as_object_mut(), source.as_object()) {
        m.extend(s.clone());
    }
    p["spec"]["resourceClaims"] = json!([rc]);
    p["spec"]["containers"][0]["resources"]["claims"] = json!([{"name": "gpu"}]);
    p
}

async fn start_dra(s: &FakeApiServer) -> Adapter {
    let c = client(s);
    let stores = strata_plugins::pod_group::Stores::default();
    let custom = strata_kube::dra::dra_resources(&c, &stores.dra).await;
    assert_eq!(custom.len(), 4, "the four DRA kinds are watched");
    let registry = strata_plugins::registry_with(&stores);
    let cfg = SchedulerConfig::from_yaml(CONFIG).unwrap();
    let a = Adapter::start_with_registry(cfg, options("dra", false), c, custom, registry)
        .await
        .expect("adapter starts");
    assert!(a.wait_ready(Duration::from_secs(30)).await, "ready");
    a
}

fn bound_to(s: &FakeApiServer, pod: &str) -> Option<String> {
    let key = format!("work/{pod}");
    s.bindings()
        .into_iter()
        .find(|b| b.pod == key)
        .map(|b| b.node)
}

fn position(log: &[RequestRecord], f: impl Fn(&RequestRecord) -> bool) -> Option<usize> {
    log.iter().position(f)
}

fn is_call(r: &RequestRecord, verb: &str, resource: &str, name: &str, code: u16) -> bool {
    r.call.verb == verb
        && r.call.resource == resource
        && r.name.as_deref() == Some(name)
        && r.code == code
}

/// The pod's PodScheduled condition.
fn scheduled_condition(s: &FakeApiServer, pod: &str) -> Option<Value> {
    let p = s.get("pods", "work", pod)?;
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
}

/// The devices allocated to a claim, as `pool/device`.
fn allocated(c: &Value) -> Vec<String> {
    c["status"]["allocation"]["devices"]["results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r["pool"].as_str().unwrap_or(""),
                        r["device"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn reserved_for(c: &Value) -> Vec<(String, String)> {
    c["status"]["reservedFor"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("").to_owned(),
                        r["uid"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every call the adapter made is one `strata_kube::API_CALLS` lists (and
/// so one the RBAC manifest allows, which `tests/manifests.rs` checks).
fn assert_calls_listed(s: &FakeApiServer) {
    for c in s.calls() {
        assert!(
            strata_kube::API_CALLS
                .iter()
                .any(|k| k.verb == c.verb && k.group == c.group && k.resource == c.resource),
            "the adapter made {c:?}, which strata_kube::API_CALLS does not list"
        );
    }
}

fn uid_of(s: &FakeApiServer, pod: &str) -> String {
    s.get("pods", "work", pod).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_is_allocated_and_reserved_before_the_pod_is_bound() {
    let s = dra_server(&[("gpu-0", "H100"), ("gpu-1", "A100")]);
    s.create(
        "deviceclasses.resource.k8s.io",
        device_class("gpu.example.com"),
    )
    .unwrap();
    s.create(CLAIMS, claim("a100", "gpu.example.com", Some("A100")))
        .unwrap();
    let a = start_dra(&s).await;
    s.record_requests(true);
    s.create(
        "pods",
        claim_pod("trainer", json!({"resourceClaimName": "a100"})),
    )
    .unwrap();
    wait_for("the pod bound", Duration::from_secs(30), || {
        bound_to(&s, "trainer").is_some()
    })
    .await;
    assert_eq!(
        bound_to(&s, "trainer").as_deref(),
        Some("gpu-node"),
        "only gpu-node has the device"
    );

    let c = s.get(CLAIMS, "work", "a100").unwrap();
    assert_eq!(
        allocated(&c),
        ["gpu-node/gpu-1"],
        "the A100, chosen by the CEL selector: {c}"
    );
    assert_eq!(
        c["status"]["allocation"]["devices"]["results"][0]["driver"],
        DRIVER
    );
    assert_eq!(
        c["status"]["allocation"]["devices"]["results"][0]["request"],
        "gpu"
    );
    assert_eq!(
        c["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"]
            [0],
        "gpu-node",
        "{c}"
    );
    assert_eq!(
        reserved_for(&c),
        [("trainer".to_owned(), uid_of(&s, "trainer"))]
    );
    assert_eq!(c["status"]["reservedFor"][0]["resource"], "pods");
    assert_eq!(
        c["metadata"]["finalizers"],
        json!(["resource.kubernetes.io/delete-protection"]),
        "an allocated claim is protected until it is deallocated"
    );

    // The status was written (PUT of the status subresource), before the
    // binding.
    let log = s.requests();
    let write = position(&log, |r| {
        is_call(r, "update", "resourceclaims/status", "a100", 200)
    })
    .unwrap_or_else(|| panic!("no claim status update: {log:?}"));
    let bind = position(&log, |r| {
        is_call(r, "create", "pods/binding", "trainer", 201)
    })
    .unwrap();
    let finalizer = position(&log, |r| is_call(r, "patch", "resourceclaims", "a100", 200))
        .unwrap_or_else(|| panic!("no finalizer patch: {log:?}"));
    assert!(
        finalizer < write && write < bind,
        "the finalizer, then the claim status, then the binding: {log:?}"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_class_waits_then_schedules_when_the_class_appears() {
    let s = dra_server(&[("gpu-0", "A100")]);
    s.create(CLAIMS, claim("tpu", "tpu.example.com", None))
        .unwrap();
    let a = start_dra(&s).await;
    s.create(
        "pods",
        claim_pod("waiter", json!({"resourceClaimName": "tpu"})),
    )
    .unwrap();
    wait_for(
        "PodScheduled=False naming the class",
        Duration::from_secs(30),
        || {
            scheduled_condition(&s, "waiter").is_some_and(|c| {
                c["status"] == "False"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("DeviceClass \"tpu.example.com\""))
            })
        },
    )
    .await;
    assert_eq!(
        scheduled_condition(&s, "waiter").unwrap()["reason"],
        "Unschedulable"
    );
    wait_for("a FailedScheduling event", Duration::from_secs(10), || {
        s.list("events.events.k8s.io").iter().any(|e| {
            e["regarding"]["name"] == "waiter"
                && e["reason"] == "FailedScheduling"
                && e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("tpu.example.com"))
        })
    })
    .await;
    assert!(bound_to(&s, "waiter").is_none());

    // The class appears: the DeviceClass event retries the pod.
    s.create(
        "deviceclasses.resource.k8s.io",
        device_class("tpu.example.com"),
    )
    .unwrap();
    wait_for(
        "the pod bound once the class exists",
        Duration::from_secs(30),
        || bound_to(&s, "waiter").is_some(),
    )
    .await;
    assert_eq!(bound_to(&s, "waiter").as_deref(), Some("gpu-node"));
    let c = s.get(CLAIMS, "work", "tpu").unwrap();
    assert_eq!(allocated(&c), ["gpu-node/gpu-0"]);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_assignment_is_patched_onto_the_pod_before_the_bind() {
    let s = dra_server(&[]);
    let mut n = fixtures::node("hami-node", 2, 16, 64, 1);
    for k in ["allocatable", "capacity"] {
        n["status"][k]["nvidia.com/gpu"] = json!("20");
    }
    n["metadata"]["annotations"]["strata.io/devices"] = json!(
        json!([
            {"kind": "nvidia.com/gpu", "id": "GPU-aaaa", "model": "A100", "memoryMiB": 81920},
            {"kind": "nvidia.com/gpu", "id": "GPU-bbbb", "model": "A100", "memoryMiB": 81920}
        ])
        .to_string()
    );
    s.create("nodes", n).unwrap();
    let a = start_dra(&s).await;
    s.record_requests(true);
    let mut p = fixtures::pod("work", "share", SCHED, 100, 64, None);
    p["spec"]["containers"][0]["resources"]["limits"] = json!({
        "nvidia.com/gpu": "1", "nvidia.com/gpumem": "20000", "nvidia.com/gpucores": "30"});
    s.create("pods", p).unwrap();
    wait_for("the device pod bound", Duration::from_secs(30), || {
        bound_to(&s, "share").is_some()
    })
    .await;
    assert_eq!(bound_to(&s, "share").as_deref(), Some("hami-node"));

    let pod = s.get("pods", "work", "share").unwrap();
    let ann = &pod["metadata"]["annotations"];
    let assignment: Value = serde_json::from_str(
        ann["strata.io/device-assignment"]
            .as_str()
            .unwrap_or_else(|| panic!("no assignment annotation: {ann}")),
    )
    .unwrap();
    assert_eq!(assignment["node"], "hami-node");
    let d = &assignment["devices"][0];
    assert!(
        d["id"] == "GPU-aaaa" || d["id"] == "GPU-bbbb",
        "{assignment}"
    );
    assert_eq!(d["memoryMiB"], 20000);
    assert_eq!(d["cores"], 30);
    assert!(
        ann["hami.io/vgpu-devices-to-allocate"]
            .as_str()
            .is_some_and(|v| v.starts_with("GPU-")),
        "HAMi's annotation for its node agent: {ann}"
    );
    // Annotations already on the pod stay (a merge patch).
    assert!(ann["kubectl.kubernetes.io/last-applied-configuration"].is_string());

    let log = s.requests();
    let patch = position(&log, |r| is_call(r, "patch", "pods", "share", 200))
        .unwrap_or_else(|| panic!("no pod patch: {log:?}"));
    let bind = position(&log, |r| is_call(r, "create", "pods/binding", "share", 201)).unwrap();
    assert!(
        patch < bind,
        "the assignment must be on the pod before the bind"
    );
    a.shutdown().await;
    assert_calls_listed(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_on_the_claim_status_is_retried_and_nothing_is_allocated_twice() {
    let s = dra_server(&[("gpu-0", "A100"), ("gpu-1", "A100")]);
    s.create(
        "deviceclasses.resource.k8s.io",
        device_class("gpu.example.com"),
    )
    .unwrap();
    s.create(CLAIMS, claim("first", "gpu.example.com", None))
        .unwrap();
    s.create(CLAIMS, claim("second", "gpu.example.com", None))
        .unwrap();
    let a = start_dra(&s).await;
    s.record_requests(true);
    // Someone else changed the claim between the plugin's read and its
    // write: the API answers 409.
    s.conflict_next_updates(&format!("{CLAIMS}/status"), 1);
    s.create(
        "pods",
        claim_pod("first-pod", json!({"resourceClaimName": "first"})),
    )
    .unwrap();
    wait_for(
        "the pod bound after a retry",
        Duration::from_secs(30),
        || bound_to(&s, "first-pod").is_some(),
    )
    .await;
    let log = s.requests();
    let conflict = position(&log, |r| {
        is_call(r, "update", "resourceclaims/status", "first", 409)
    })
    .unwrap_or_else(|| panic!("no refused write: {log:?}"));
    let written = position(&log, |r| {
        is_call(r, "update", "resourceclaims/status", "first", 200)
    })
    .unwrap();
    let bind = position(&log, |r| {
        is_call(r, "create", "pods/binding", "first-pod", 201)
    })
    .unwrap();
    assert!(
        conflict < written && written < bind,
        "refused write, then a write, then the bind: {log:?}"
    );
    assert!(
        !log[..written]
            .iter()
            .any(|r| r.call.resource == "pods/binding"),
        "no bind before the claim status was written"
    );

    // The other device is still free for the next claim: the refused
    // attempt left nothing reserved.
    s.create(
        "pods",
        claim_pod("second-pod", json!({"resourceClaimName": "second"})),
    )
    .unwrap();
    wait_for("the second pod bound", Duration::from_secs(30), || {
        bound_to(&s, "second-pod").is_some()
    })
    .await;
    let first = s.get(CLAIMS, "work", "first").unwrap();
    let second = s.get(CLAIMS, "work", "second").unwrap();
    let (f, g) = (allocated(&first), allocated(&second));
    assert_eq!(f.len(), 1, "{first}");
    assert_eq!(g.len(), 1, "{second}");
    assert_ne!(f, g, "one device in two claims");
    assert_eq!(reserved_for(&first).len(), 1, "{first}");
    assert_eq!(
        first["metadata"]["finalizers"],
        json!(["resource.kubernetes.io/delete-protection"]),
        "the retry found the finalizer of the refused attempt and did not add it twice"
    );
    assert_eq!(reserved_for(&second).len(), 1, "{second}");
    assert!(binds_per_uid(&s).values().all(|n| *n == 1));
    a.shutdown().await;
    assert_calls_listed(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_committed_then_answered_500_keeps_the_claims_allocation() {
    let s = dra_server(&[("gpu-0", "A100")]);
    s.create(
        "deviceclasses.resource.k8s.io",
        device_class("gpu.example.com"),
    )
    .unwrap();
    s.create(CLAIMS, claim("first", "gpu.example.com", None))
        .unwrap();
    let a = start_dra(&s).await;
    // The API server binds the pod, then the answer is lost: the pod runs,
    // so its claim must stay allocated and reserved for it.
    s.fail_next_binds_after_commit(1);
    s.create(
        "pods",
        claim_pod("first-pod", json!({"resourceClaimName": "first"})),
    )
    .unwrap();
    wait_for("the bind counted", Duration::from_secs(30), || {
        a.metrics().binds_with("bound") == 1
    })
    .await;
    // An undo, had there been one, is written well within this.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = s.get(CLAIMS, "work", "first").unwrap();
    assert_eq!(allocated(&c), vec!["gpu-node/gpu-0".to_owned()], "{c}");
    assert_eq!(
        reserved_for(&c),
        vec![("first-pod".to_owned(), uid_of(&s, "first-pod"))],
        "{c}"
    );
    assert_eq!(s.bindings().len(), 1);
    assert_eq!(a.metrics().binds_with("error"), 0);
    a.shutdown().await;
    assert_calls_listed(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_refused_with_409_is_written_again() {
    let s = dra_server(&[("gpu-0", "A100")]);
    s.create(
        "deviceclasses.resource.k8s.io",
        device_class("gpu.example.com"),
    )
    .unwrap();
    s.create(CLAIMS, claim("first", "gpu.example.com", None))
        .unwrap();
    let a = start_dra(&s).await;
    // Slow answers leave a window between the claim write and the undo.
    s.set_latency(Duration::from_millis(150));
    s.record_requests(true);
    s.fail_next_binds(1);
    s.create(
        "pods",
        claim_pod("first-pod", json!({"resourceClaimName": "first"})),
    )
    .unwrap();
    wait_for("the claim allocated", Duration::from_secs(30), || {
        !allocated(&s.get(CLAIMS, "work", "first").unwrap()).is_empty()
    })
    .await;
    // The bind fails; the undo's first write is refused.
    s.conflict_next_updates(&format!("{CLAIMS}/status"), 1);
    wait_for(
        "the pod taken out of the claim after the refused undo",
        Duration::from_secs(10),
        || reserved_for(&s.get(CLAIMS, "work", "first").unwrap()).is_empty(),
    )
    .await;
    let log = s.requests();
    let failed_bind = position(&log, |r| {
        is_call(r, "create", "pods/binding", "first-pod", 500)
    })
    .unwrap_or_else(|| panic!("no failed bind: {log:?}"));
    let refused = position(&log, |r| {
        is_call(r, "update", "resourceclaims/status", "first", 409)
    })
    .unwrap_or_else(|| panic!("no refused undo: {log:?}"));
    assert!(failed_bind < refused, "{log:?}");
    // The pod is retried and binds, its claim allocated once.
    wait_for("the pod bound", Duration::from_secs(30), || {
        bound_to(&s, "first-pod").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = s.get(CLAIMS, "work", "first").unwrap();
    assert_eq!(allocated(&c).len(), 1, "{c}");
    assert_eq!(reserved_for(&c).len(), 1, "{c}");
    assert!(binds_per_uid(&s).values().all(|n| *n == 1));
    a.shutdown().await;
    assert_calls_listed(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_from_a_template_is_the_controllers_and_the_pod_waits_for_it() {
    let s = dra_server(&[("gpu-0", "A100")]);
    s.create(
        "deviceclasses.resource.k8s.io",
        device_class("gpu.example.com"),
    )
    .unwrap();
    s.create(
        "resourceclaimtemplates.resource.k8s.io",
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
               "metadata": {"name": "one-gpu", "namespace": "work"},
               "spec": {"spec": claim("x", "gpu.example.com", None)["spec"].clone()}}),
    )
    .unwrap();
    let a = start_dra(&s).await;
    s.record_requests(true);
    s.create(
        "pods",
        claim_pod("templated", json!({"resourceClaimTemplateName": "one-gpu"})),
    )
    .unwrap();
    wait_for(
        "the pod waits for the controller's claim",
        Duration::from_secs(30),
        || {
            scheduled_condition(&s, "templated").is_some_and(|c| {
                c["status"] == "False"
                    && c["message"].as_str().is_some_and(|m| {
                        m.contains("waiting for the ResourceClaim made from template work/one-gpu")
                    })
            })
        },
    )
    .await;
    assert!(bound_to(&s, "templated").is_none());
    assert_eq!(s.count(CLAIMS), 0, "the scheduler never creates claims");

    // The resourceclaim controller makes the claim: owned by the pod, with
    // the pod's claim name in an annotation and a generated name.
    let uid = uid_of(&s, "templated");
    let mut c = claim("templated-gpu-x7k2q", "gpu.example.com", None);
    c["metadata"]["annotations"] = json!({"resource.kubernetes.io/pod-claim-name": "gpu"});
    c["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod",
        "name": "templated", "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    s.create(CLAIMS, c).unwrap();
    wait_for(
        "the pod bound once its claim exists",
        Duration::from_secs(30),
        || bound_to(&s, "templated").is_some(),
    )
    .await;
    let c = s.get(CLAIMS, "work", "templated-gpu-x7k2q").unwrap();
    assert_eq!(allocated(&c), ["gpu-node/gpu-0"]);
    assert_eq!(reserved_for(&c), [("templated".to_owned(), uid)]);
    assert!(
        !s.requests()
            .iter()
            .any(|r| r.call.verb == "create" && r.call.resource == "resourceclaims"),
        "the scheduler never creates claims"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_dra_api_still_becomes_ready() {
    let s = server();
    s.create("nodes", fixtures::node("n0", 0, 8, 32, 1))
        .unwrap();
    let c = client(&s);
    let stores = strata_plugins::pod_group::Stores::default();
    let custom = strata_kube::dra::dra_resources(&c, &stores.dra).await;
    assert!(custom.is_empty(), "resource.k8s.io/v1 is not served");
    let registry = strata_plugins::registry_with(&stores);
    let cfg = SchedulerConfig::from_yaml(CONFIG).unwrap();
    let a = Adapter::start_with_registry(cfg, options("no-dra", false), c, custom, registry)
        .await
        .unwrap();
    assert!(a.wait_ready(Duration::from_secs(30)).await);
    s.create("pods", fixtures::pod("work", "plain", SCHED, 100, 64, None))
        .unwrap();
    wait_for("a plain pod bound", Duration::from_secs(30), || {
        bound_to(&s, "plain").is_some()
    })
    .await;
    a.shutdown().await;
}

/// The two PreBind calls of the port, directly: what they write and how
/// their failures read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_writes_annotations_and_claim_status_and_names_failures() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use strata_kube::client::RateLimiter;
    use strata_kube::leader::Gate;
    use strata_kube::metrics::Metrics;
    use strata_kube::port::KubeCluster;
    use strata_scheduler::cluster::ClusterPort;
    use strata_scheduler::engine::RunControl;
    use strata_scheduler::model::PodInfo;

    let s = dra_server(&[]);
    let metrics = Arc::new(Metrics::new());
    let gate = Arc::new(Gate::new(Arc::new(RunControl::new()), metrics.clone()));
    gate.set_leader(true);
    let port = KubeCluster::new(
        client(&s),
        Arc::new(RateLimiter::new(1000.0, 1000)),
        metrics,
        Arc::new(RateLimiter::new(1000.0, 1000)),
        16,
        "test".into(),
        gate,
    );
    let info = |v: Value| PodInfo::compile(&serde_json::from_value(v).unwrap()).unwrap();
    let p = info(
        s.create("pods", fixtures::pod("work", "p", SCHED, 100, 64, None))
            .unwrap(),
    );
    let ann: BTreeMap<String, String> =
        [("strata.io/device-assignment".to_owned(), "{}".to_owned())].into();

    // Merged into what is there.
    port.patch_pod_annotations(&p, &ann).await.unwrap();
    let got = s.get("pods", "work", "p").unwrap();
    assert_eq!(
        got["metadata"]["annotations"]["strata.io/device-assignment"],
        "{}"
    );
    assert!(
        got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // Recreated under the same name: the uid precondition refuses.
    s.delete("pods", "work", "p").unwrap();
    s.create("pods", fixtures::pod("work", "p", SCHED, 100, 64, None))
        .unwrap();
    let e = port.patch_pod_annotations(&p, &ann).await.unwrap_err();
    assert!(e.0.contains("was replaced"), "{e}");
    assert!(s.get("pods", "work", "p").unwrap()["metadata"]["annotations"]["strata.io/device-assignment"].is_null());

    // Gone.
    s.delete("pods", "work", "p").unwrap();
    let e = port.patch_pod_annotations(&p, &ann).await.unwrap_err();
    assert!(e.0.contains("no longer exists"), "{e}");

    // Claim status: written with the resourceVersion read...
    s.create(CLAIMS, claim("c", "gpu.example.com", None))
        .unwrap();
    let read: k8s_openapi::api::resource::v1::ResourceClaim =
        serde_json::from_value(s.get(CLAIMS, "work", "c").unwrap()).unwrap();
    let mut mine = read.clone();
    mine.status = Some(k8s_openapi::api::resource::v1::ResourceClaimStatus {
        reserved_for: Some(vec![
            k8s_openapi::api::resource::v1::ResourceClaimConsumerReference {
                resource: "pods".into(),
                name: "a".into(),
                uid: "uid-a".into(),
                api_group: None,
            },
        ]),
        ..Default::default()
    });
    port.update_resource_claim_status(&mine).await.unwrap();
    let stored = s.get(CLAIMS, "work", "c").unwrap();
    assert_eq!(
        reserved_for(&stored),
        [("a".to_owned(), "uid-a".to_owned())]
    );
    assert_eq!(
        stored["spec"],
        serde_json::to_value(&read.spec).unwrap(),
        "only the status changes"
    );

    // ...and a second write from the same (now stale) version is refused,
    // not written over the first.
    let mut other = read.clone();
    other.status = Some(k8s_openapi::api::resource::v1::ResourceClaimStatus {
        reserved_for: Some(vec![
            k8s_openapi::api::resource::v1::ResourceClaimConsumerReference {
                resource: "pods".into(),
                name: "b".into(),
                uid: "uid-b".into(),
                api_group: None,
            },
        ]),
        ..Default::default()
    });
    let e = port.update_resource_claim_status(&other).await.unwrap_err();
    assert!(e.0.contains("409") && e.0.contains("work/c"), "{e}");
    assert_eq!(
        reserved_for(&s.get(CLAIMS, "work", "c").unwrap()),
        [("a".to_owned(), "uid-a".to_owned())]
    );

    // A claim that is gone.
    s.delete(CLAIMS, "work", "c").unwrap();
    let e = port.update_resource_claim_status(&mine).await.unwrap_err();
    assert!(e.0.contains("no longer exists"), "{e}");
}
