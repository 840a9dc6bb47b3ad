//! End-to-end checks against a real kube-apiserver: the control plane that
//! `testing/control-plane/up.sh` builds from Go modules and starts (`.ci/run`
//! does), or any cluster with kwok, named by `STRATA_E2E_KUBECONFIG`.
//! Skipped, with a notice on stderr, when it is not set.
//!
//! Strata runs as the ServiceAccount of `manifests/deploy/` with a token
//! from the TokenRequest API, so every call it makes passes the real RBAC
//! authorizer; the CRDs of `manifests/crds/` and the DRA objects go through
//! the real validation. Each test works in a namespace and with a scheduler
//! name of its own; see `cluster/mod.rs` for the harness.

mod cluster;

use cluster::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Plain pods are bound, an impossible one gets `PodScheduled=False` and a
/// `FailedScheduling` event, and nothing the scheduler wrote was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_schedules_reports_and_records_events() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("basic").await;
    let sched = "strata-e2e-basic";
    for i in 0..20 {
        c.create_pod(&ns, plain_pod(&format!("p-{i}"), sched, "10m"))
            .await;
    }
    c.create_pod(&ns, plain_pod("huge", sched, "100000")).await;
    let a = c.start(&config(sched), "e2e-basic").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    c.wait_bound(&ns, 20, Duration::from_secs(120)).await;
    let msg = c
        .wait_unschedulable(&ns, "huge", Duration::from_secs(60))
        .await;
    assert!(msg.contains("Insufficient cpu"), "{msg}");
    c.wait_failed_event(&ns, "huge", Duration::from_secs(60))
        .await;
    let t = Instant::now();
    loop {
        let scheduled = c
            .events(&ns)
            .await
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count();
        if scheduled >= 20 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{scheduled} Scheduled events"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The real authorizer refused nothing: no failed event, status patch or
    // bind (a 403 would land in these).
    let m = metrics(&a);
    assert_eq!(metric_sum(&m, "strata_events_failed_total", ""), 0.0, "{m}");
    assert_eq!(
        metric_sum(&m, "strata_pod_status_patches_total", "result=\"error\""),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "strata_informer_errors_total", ""),
        0.0,
        "{m}"
    );
    assert_scheduled_once(&c.events(&ns).await);
    a.shutdown().await;
    c.cleanup(&ns).await;
}

/// Two replicas; the leader is killed mid-run; the other takes the Lease
/// and every pod is bound exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_leader_killed_mid_run_every_pod_bound_once() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("failover").await;
    let sched = "strata-e2e-failover";
    let a = c.start(&config(sched), "e2e-a").await;
    let t = Instant::now();
    while !a.is_leader() {
        assert!(t.elapsed() < Duration::from_secs(30), "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = c.start(&config(sched), "e2e-b").await;
    assert!(b.wait_ready(Duration::from_secs(120)).await);
    assert!(!b.is_leader());
    for i in 0..60 {
        c.create_pod(&ns, plain_pod(&format!("p-{i}"), sched, "5m"))
            .await;
    }
    let t = Instant::now();
    while c.bound(&ns).await < 10 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the leader binds nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Killed with pods still arriving: what it had not bound, and every pod
    // created after, is the survivor's.
    let creating = {
        let c2 = c.admin.clone();
        let ns2 = ns.clone();
        tokio::spawn(async move {
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c2, &ns2);
            for i in 60..120 {
                let mut p = plain_pod(&format!("p-{i}"), "strata-e2e-failover", "5m");
                p["spec"]["tolerations"] = json!([{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]);
                let p = serde_json::from_value(p).expect("pod");
                pods.create(&PostParams::default(), &p)
                    .await
                    .expect("create pod");
            }
        })
    };
    a.kill();
    creating.await.expect("pods created");
    c.wait_bound(&ns, 120, Duration::from_secs(120)).await;
    let t = Instant::now();
    while !b.is_leader() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the survivor never led"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bound exactly once: one node per pod (the API keeps one), one
    // Scheduled event per pod, and the Lease held by the survivor.
    assert_scheduled_once(&c.events(&ns).await);
    let leases: Api<Lease> = Api::namespaced(c.admin.clone(), SYSTEM_NS);
    let l = leases.get(LEASE).await.expect("the Lease");
    assert_eq!(
        l.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("e2e-b")
    );
    b.shutdown().await;
    c.cleanup(&ns).await;
}

fn member(name: &str, sched: &str, label: &str, group: &str, min: Option<u32>) -> Value {
    let mut p = plain_pod(name, sched, "5m");
    p["metadata"]["labels"][label] = json!(group);
    if let Some(m) = min {
        p["metadata"]["annotations"] = json!({"strata.io/min-member": m.to_string()});
    }
    p
}

/// A gang written as pod annotations: nothing is bound while fewer than
/// `minMember` members exist, then all of them are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_gang_binds_all_members_or_none() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("gang").await;
    let sched = "strata-e2e-gang";
    let a = c.start(&config(sched), "e2e-gang").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    for i in 0..2 {
        let p = member(
            &format!("g-{i}"),
            sched,
            "strata.io/pod-group",
            "g",
            Some(3),
        );
        c.create_pod(&ns, p).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        c.bound(&ns).await,
        0,
        "a gang member was bound before minMember existed"
    );
    c.create_pod(
        &ns,
        member("g-2", sched, "strata.io/pod-group", "g", Some(3)),
    )
    .await;
    c.wait_bound(&ns, 3, Duration::from_secs(60)).await;
    a.shutdown().await;
    c.cleanup(&ns).await;
}

async fn wait_group_status(
    groups: &Api<DynamicObject>,
    name: &str,
    phase: &str,
    field: &str,
    n: u64,
) {
    let t = Instant::now();
    loop {
        let g = groups.get(name).await.expect("the PodGroup");
        let st = &g.data["status"];
        if st["phase"] == phase && st[field] == json!(n) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "PodGroup {name}: wanted phase {phase} and {field} {n}, status is {st}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// PodGroups of both APIs, created through the CRDs of `manifests/crds/`:
/// members are bound, kwok starts them, and the leader writes each group's
/// status through the status subresource the CRDs declare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_podgroup_status_is_written_back() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("podgroup").await;
    let sched = "strata-e2e-podgroup";
    let strata = pod_groups(&c.admin, &ns, "strata.io");
    let cosched = pod_groups(&c.admin, &ns, "scheduling.x-k8s.io");
    let obj = |api: &str, name: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": format!("{api}/v1alpha1"), "kind": "PodGroup",
            "metadata": {"name": name},
            "spec": {"minMember": 2}
        }))
        .expect("PodGroup")
    };
    strata
        .create(&PostParams::default(), &obj("strata.io", "pg"))
        .await
        .expect("create the strata.io PodGroup");
    cosched
        .create(&PostParams::default(), &obj("scheduling.x-k8s.io", "cs"))
        .await
        .expect("create the coscheduling PodGroup");
    let a = c.start(&config(sched), "e2e-podgroup").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    for i in 0..2 {
        c.create_pod(
            &ns,
            member(&format!("pg-{i}"), sched, "strata.io/pod-group", "pg", None),
        )
        .await;
        let p = member(
            &format!("cs-{i}"),
            sched,
            "scheduling.x-k8s.io/pod-group",
            "cs",
            None,
        );
        c.create_pod(&ns, p).await;
    }
    c.wait_bound(&ns, 4, Duration::from_secs(60)).await;
    wait_group_status(&strata, "pg", "Running", "running", 2).await;
    wait_group_status(&cosched, "cs", "Running", "running", 2).await;
    a.shutdown().await;
    c.cleanup(&ns).await;
}

const DRIVER: &str = "gpu.e2e.strata.io";

/// A claim for one device of the test's class goes through the real
/// `resource.k8s.io/v1` validation, is allocated from the ResourceSlice of
/// the one node that has devices, its status is written (allocation and
/// `reservedFor`) with the finalizer, and the pod lands on that node. A
/// claim asking for a model nobody has leaves its pod unschedulable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_dra_claim_is_allocated_and_pod_bound() {
    use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaim, ResourceSlice};
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("dra").await;
    let sched = "strata-e2e-dra";
    let class_name = format!("{ns}-gpu");
    let node = "strata-e2e-node-1";
    let classes: Api<DeviceClass> = Api::all(c.admin.clone());
    let slices: Api<ResourceSlice> = Api::all(c.admin.clone());
    let claims: Api<ResourceClaim> = Api::namespaced(c.admin.clone(), &ns);
    let class: DeviceClass = serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
        "metadata": {"name": class_name},
        "spec": {"selectors": [{"cel": {"expression": format!("device.driver == \"{DRIVER}\"")}}]}
    }))
    .expect("DeviceClass");
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("the API server accepts the DeviceClass");
    let slice: ResourceSlice = serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": format!("{ns}-slice")},
        "spec": {"driver": DRIVER, "nodeName": node,
                 "pool": {"name": format!("{ns}-pool"), "generation": 1, "resourceSliceCount": 1},
                 "devices": [
                     {"name": "gpu-0", "attributes": {"model": {"string": "a100"}}},
                     {"name": "gpu-1", "attributes": {"model": {"string": "a100"}}}
                 ]}
    }))
    .expect("ResourceSlice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("the API server accepts the ResourceSlice");
    let claim = |name: &str, model: &str| -> ResourceClaim {
        serde_json::from_value(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                "deviceClassName": class_name, "allocationMode": "ExactCount", "count": 1,
                "selectors": [{"cel": {"expression":
                    format!("device.attributes[\"{DRIVER}\"].model == \"{model}\"")}}]
            }}]}}
        }))
        .expect("ResourceClaim")
    };
    for (name, model) in [("c-ok", "a100"), ("c-none", "h100")] {
        claims
            .create(&PostParams::default(), &claim(name, model))
            .await
            .expect("the API server accepts the ResourceClaim");
    }
    let claim_pod = |name: &str, claim: &str| -> Value {
        let mut p = plain_pod(name, sched, "10m");
        p["spec"]["resourceClaims"] = json!([{"name": "gpu", "resourceClaimName": claim}]);
        p["spec"]["containers"][0]["resources"]["claims"] = json!([{"name": "gpu"}]);
        p
    };
    let a = c.start(&config(sched), "e2e-dra").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    c.create_pod(&ns, claim_pod("ok", "c-ok")).await;
    c.create_pod(&ns, claim_pod("none", "c-none")).await;
    c.wait_bound(&ns, 1, Duration::from_secs(60)).await;
    let ok = c.pods(&ns).get("ok").await.expect("pod ok");
    assert_eq!(node_of(&ok), Some(node));
    let cl = claims.get("c-ok").await.expect("claim c-ok");
    let st = cl.status.expect("claim status written");
    let results = st
        .allocation
        .as_ref()
        .and_then(|a| a.devices.as_ref())
        .and_then(|d| d.results.clone())
        .unwrap_or_default();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].driver, DRIVER);
    assert!(results[0].device.starts_with("gpu-"));
    let reserved = st.reserved_for.unwrap_or_default();
    assert_eq!(reserved.len(), 1);
    assert_eq!(reserved[0].name, "ok");
    assert_eq!(reserved[0].uid, ok.metadata.uid.clone().unwrap_or_default());
    assert!(
        cl.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "resource.kubernetes.io/delete-protection")
    );
    let msg = c
        .wait_unschedulable(&ns, "none", Duration::from_secs(60))
        .await;
    assert!(!msg.is_empty());
    assert!(node_of(&c.pods(&ns).get("none").await.expect("pod none")).is_none());
    a.shutdown().await;
    // Claims carry the finalizer and nobody runs the resourceclaim
    // controller here: release them so the namespace can go.
    for name in ["c-ok", "c-none"] {
        let _ = claims
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
        let _ = claims.delete(name, &DeleteParams::default()).await;
    }
    c.cleanup(&ns).await;
    let _ = slices
        .delete(&format!("{ns}-slice"), &DeleteParams::default())
        .await;
    let _ = classes.delete(&class_name, &DeleteParams::default()).await;
}

/// Malformed Strata, HAMi and PodGroup input: each pod gets
/// `PodScheduled=False` naming what is wrong and a `FailedScheduling` event,
/// and well-formed pods beside them keep being bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_malformed_input_is_reported_and_the_rest_scheduled() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("hostile").await;
    let sched = "strata-e2e-hostile";
    // A PodGroup object the CRD schema accepts but whose subgroup is wider
    // than the group.
    let groups = pod_groups(&c.admin, &ns, "strata.io");
    let bad_group: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "strata.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "wide"},
        "spec": {"minMember": 1, "topology": {"requiredLevel": "strata.io/cabinet"},
                 "subGroups": [{"name": "prefill", "minMember": 1,
                                "topology": {"requiredLevel": "strata.io/supernode"}}]}
    }))
    .expect("PodGroup");
    groups
        .create(&PostParams::default(), &bad_group)
        .await
        .expect("the CRD accepts the PodGroup");
    let a = c.start(&config(sched), "e2e-hostile").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");

    let mut timeout = member("bad-timeout", sched, "strata.io/pod-group", "t", None);
    timeout["metadata"]["annotations"] =
        json!({"strata.io/min-member": "1", "strata.io/schedule-timeout-seconds": "soon"});
    let mut min = member("bad-min", sched, "strata.io/pod-group", "m", None);
    min["metadata"]["annotations"] = json!({"strata.io/min-member": "three"});
    let mut wide = member("bad-subgroup", sched, "strata.io/pod-group", "wide", None);
    wide["metadata"]["labels"]["strata.io/subgroup"] = json!("prefill");
    let mut hami = plain_pod("bad-hami", sched, "10m");
    hami["spec"]["containers"][0]["resources"]["limits"] =
        json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "150"});
    let cases = [
        ("bad-timeout", timeout, "strata.io/schedule-timeout-seconds"),
        ("bad-min", min, "strata.io/min-member"),
        ("bad-subgroup", wide, "cannot be wider than its group"),
        ("bad-hami", hami, "nvidia.com/gpumem-percentage"),
    ];
    for (_, pod, _) in &cases {
        c.create_pod(&ns, pod.clone()).await;
    }
    for i in 0..10 {
        c.create_pod(&ns, plain_pod(&format!("good-{i}"), sched, "10m"))
            .await;
    }
    c.wait_bound(&ns, 10, Duration::from_secs(60)).await;
    for (name, _, says) in &cases {
        let msg = c
            .wait_unschedulable(&ns, name, Duration::from_secs(60))
            .await;
        assert!(msg.contains(says), "{name}: condition says {msg:?}");
        let note = c
            .wait_failed_event(&ns, name, Duration::from_secs(60))
            .await;
        assert!(note.contains(says), "{name}: event says {note:?}");
    }
    let pods = c.list_pods(&ns).await;
    for (name, _, _) in &cases {
        let p = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(*name));
        assert!(p.and_then(node_of).is_none(), "{name} was bound");
    }
    assert!(!a.engine_stopped(), "the scheduler stopped on bad input");
    a.shutdown().await;
    c.cleanup(&ns).await;
}

/// The port's writes against kube-apiserver's own patch semantics, as the
/// ServiceAccount: an annotation JSON patch lands only on the same, still
/// unbound pod (its `test` operations on `metadata.uid` and a missing
/// `spec.nodeName` mean what the port assumes), a pod annotated since the
/// informer's copy keeps both, and a bind onto a pod bound since is a
/// conflict, not a second bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_port_writes_only_onto_the_same_unbound_pod() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use strata_kube::client::RateLimiter;
    use strata_kube::leader::Gate;
    use strata_kube::metrics::Metrics;
    use strata_kube::port::KubeCluster;
    use strata_scheduler::cluster::{BindError, ClusterPort};
    use strata_scheduler::engine::RunControl;
    use strata_scheduler::model::PodInfo;

    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("port").await;
    let sched = "strata-e2e-port";
    let opts = c.options("e2e-port");
    let client = strata_kube::make_client(&opts)
        .await
        .expect("client from the ServiceAccount kubeconfig");
    let metrics = Arc::new(Metrics::new());
    let gate = Arc::new(Gate::new(Arc::new(RunControl::new()), metrics.clone()));
    gate.set_leader(true);
    let port = KubeCluster::new(
        client,
        Arc::new(RateLimiter::new(100.0, 100)),
        metrics,
        Arc::new(RateLimiter::new(100.0, 100)),
        16,
        "e2e-port".into(),
        gate,
    );
    let pods = c.pods(&ns);
    let info = |p: &k8s_openapi::api::core::v1::Pod| PodInfo::compile(p).expect("pod compiles");
    let ann: BTreeMap<String, String> = [(
        "strata.io/device-assignment".to_owned(),
        "{\"a\":1}".to_owned(),
    )]
    .into();
    let key = "strata.io/device-assignment";

    // No annotations at all: the map is made.
    c.create_pod(&ns, plain_pod("bare", sched, "10m")).await;
    let bare = info(&pods.get("bare").await.expect("get"));
    port.patch_pod_annotations(&bare, &ann)
        .await
        .expect("patch");
    let got = pods.get("bare").await.expect("get");
    assert_eq!(
        got.metadata.annotations.as_ref().and_then(|a| a.get(key)),
        Some(&"{\"a\":1}".to_owned())
    );

    // Annotated by someone else after the informer's copy: both kept.
    c.create_pod(&ns, plain_pod("late", sched, "10m")).await;
    let late = info(&pods.get("late").await.expect("get"));
    pods.patch(
        "late",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"team": "x"}}})),
    )
    .await
    .expect("annotate");
    port.patch_pod_annotations(&late, &ann)
        .await
        .expect("patch");
    let a = pods
        .get("late")
        .await
        .expect("get")
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(a.get("team").map(String::as_str), Some("x"));
    assert!(a.contains_key(key), "{a:?}");

    // Bound by another scheduler since: refused, nothing written; a bind
    // onto it is a conflict.
    c.create_pod(&ns, plain_pod("taken", sched, "10m")).await;
    let taken = info(&pods.get("taken").await.expect("get"));
    let binding: k8s_openapi::api::core::v1::Binding = serde_json::from_value(json!({
        "metadata": {"name": "taken"},
        "target": {"kind": "Node", "name": "strata-e2e-node-0"}
    }))
    .expect("binding");
    pods.create_subresource::<_, Value>("binding", "taken", &PostParams::default(), &binding)
        .await
        .expect("bind as another scheduler");
    let e = port
        .patch_pod_annotations(&taken, &ann)
        .await
        .expect_err("patched a pod bound elsewhere");
    assert!(
        e.0.contains("bound to strata-e2e-node-0 by someone else"),
        "{e}"
    );
    let got = pods.get("taken").await.expect("get");
    assert!(
        !got.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(key)
    );
    let e = port
        .bind(&taken, "strata-e2e-node-1".into())
        .await
        .expect_err("bound twice");
    assert!(matches!(e, BindError::Conflict(_)), "{e:?}");

    // Replaced under the same name: refused.
    pods.delete("bare", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    let t = Instant::now();
    while pods.get_opt("bare").await.expect("get").is_some() {
        assert!(t.elapsed() < Duration::from_secs(30), "bare not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.create_pod(&ns, plain_pod("bare", sched, "10m")).await;
    let e = port
        .patch_pod_annotations(&bare, &ann)
        .await
        .expect_err("patched a replaced pod");
    assert!(e.0.contains("was replaced"), "{e}");
    c.cleanup(&ns).await;
}

/// `manifests/deploy/01-admission-policy.yaml` against kube-apiserver: the
/// ServiceAccount's pod writes may touch only `strata.io/` and `hami.io/`
/// annotations (its ClusterRole must grant `patch` on every pod); the
/// admin's are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_admission_policy_limits_the_schedulers_pod_writes() {
    use kube::api::{Patch, PatchParams};
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("vap").await;
    let mut pod = plain_pod("p", "strata-e2e-vap", "10m");
    pod["metadata"]["annotations"] = json!({"team": "x"});
    c.create_pod(&ns, pod).await;
    let opts = c.options("e2e-vap");
    let sa = strata_kube::make_client(&opts)
        .await
        .expect("client from the ServiceAccount kubeconfig");
    let as_sa: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(sa, &ns);
    let merge = |v: Value| Patch::Merge(v);
    let pp = PatchParams::default();

    // Owned annotations: allowed, added and changed.
    let t = Instant::now();
    loop {
        // The policy takes a moment to be loaded after it is applied.
        let r = as_sa
            .patch(
                "p",
                &pp,
                &merge(json!({"metadata": {"annotations": {"strata.io/device-assignment": "{}", "hami.io/vgpu-node": "n"}}})),
            )
            .await;
        match r {
            Ok(_) => break,
            Err(e) => assert!(t.elapsed() < Duration::from_secs(30), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Anything else: refused, naming the policy.
    let refused = [
        json!({"metadata": {"labels": {"app": "other"}}}),
        json!({"metadata": {"annotations": {"team": "y"}}}),
        json!({"metadata": {"annotations": {"team": null}}}),
        json!({"metadata": {"annotations": {"example.com/new": "1"}}}),
        json!({"metadata": {"finalizers": ["example.com/keep"]}}),
        json!({"spec": {"activeDeadlineSeconds": 5}}),
    ];
    // Until the policy is seen as loaded, a refused write may pass: wait
    // for the first refusal before counting.
    let t = Instant::now();
    loop {
        match as_sa.patch("p", &pp, &merge(refused[0].clone())).await {
            Err(kube::Error::Api(s)) => {
                assert!(s.message.contains("strata-scheduler-pod-writes"), "{s:?}");
                break;
            }
            Err(e) => panic!("{e}"),
            Ok(_) => {
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "the policy never refused a label change"
                );
                // Undo as admin and try again.
                c.pods(&ns)
                    .patch(
                        "p",
                        &pp,
                        &merge(json!({"metadata": {"labels": {"app": "strata-e2e"}}})),
                    )
                    .await
                    .expect("restore");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    for p in &refused {
        let e = as_sa
            .patch("p", &pp, &merge(p.clone()))
            .await
            .expect_err(&format!("allowed {p}"));
        assert!(
            matches!(&e, kube::Error::Api(s) if s.message.contains("strata-scheduler-pod-writes")),
            "{p}: {e}"
        );
    }
    let got = c.pods(&ns).get("p").await.expect("get");
    let ann = got.metadata.annotations.unwrap_or_default();
    assert_eq!(ann.get("team").map(String::as_str), Some("x"));
    assert_eq!(
        ann.get("strata.io/device-assignment").map(String::as_str),
        Some("{}")
    );
    // The admin is not bound by it.
    c.pods(&ns)
        .patch(
            "p",
            &pp,
            &merge(json!({"metadata": {"annotations": {"team": "y"}}})),
        )
        .await
        .expect("admin writes");
    c.cleanup(&ns).await;
}

/// A token for ServiceAccount `name` in `ns` (TokenRequest API).
async fn token_for(c: &Cluster, ns: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas: Api<ServiceAccount> = Api::namespaced(c.admin.clone(), ns);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("sa");
    sas.create(&PostParams::default(), &sa)
        .await
        .expect("create the ServiceAccount");
    let req: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).expect("TokenRequest");
    sas.create_subresource::<TokenRequest, TokenRequest>(
        "token",
        name,
        &PostParams::default(),
        &req,
    )
    .await
    .expect("TokenRequest")
    .status
    .expect("a token")
    .token
}

/// `GET path` over HTTPS, trusting only `pem`, with an optional bearer
/// token: the status code and the body.
async fn https_get(
    addr: std::net::SocketAddr,
    pem: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.expect("PEM")).expect("a root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake, verified against the served certificate");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The health and metrics port as `strata run` serves it by default:
/// HTTPS (self-signed here), health checks open, `/metrics` only to a
/// token the API server authenticates (TokenReview) and allows to `get`
/// `/metrics` (SubjectAccessReview), as the scheduler's ServiceAccount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_secure_port_delegates_authentication_and_authorization() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("serving").await;
    let reader = token_for(&c, &ns, "metrics-reader").await;
    let nobody = token_for(&c, &ns, "nobody").await;
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-metrics")},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    }))
    .expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-metrics")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-metrics")},
        "subjects": [{"kind": "ServiceAccount", "name": "metrics-reader", "namespace": ns}]
    }))
    .expect("binding");
    let roles: Api<ClusterRole> = Api::all(c.admin.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(c.admin.clone());
    roles
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");

    let mut opts = c.options("e2e-serving");
    opts.leader_election.enabled = false;
    opts.serving = strata_kube::Serving::Secure(strata_kube::SecureServing::default());
    let client = strata_kube::make_client(&opts).await.expect("client");
    let stores = strata_plugins::pod_group::Stores::default();
    let cfg = strata_scheduler::config::SchedulerConfig::from_yaml(&config("strata-e2e-serving"))
        .expect("config");
    let a = strata_kube::Adapter::start_with_stores(cfg, opts, client, &stores)
        .await
        .expect("adapter starts");
    let addr = a.http_addr().expect("serving");
    let pem = a.serving_certificate().expect("HTTPS").to_owned();

    assert_eq!(https_get(addr, &pem, "/healthz", None).await.0, 200);
    assert_eq!(https_get(addr, &pem, "/livez", None).await.0, 200);
    assert_eq!(https_get(addr, &pem, "/metrics", None).await.0, 401);
    assert_eq!(
        https_get(addr, &pem, "/metrics", Some("not-a-token"))
            .await
            .0,
        401
    );
    let (code, body) = https_get(addr, &pem, "/metrics", Some(&nobody)).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cannot get path \"/metrics\""), "{body}");
    let (code, body) = https_get(addr, &pem, "/metrics", Some(&reader)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("strata_"), "{body}");
    // Plain HTTP on the port gets nothing.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(!out.contains("strata_"), "{out}");
    }
    a.shutdown().await;
    let _ = bindings
        .delete(&format!("{ns}-metrics"), &DeleteParams::default())
        .await;
    let _ = roles
        .delete(&format!("{ns}-metrics"), &DeleteParams::default())
        .await;
    c.cleanup(&ns).await;
}
