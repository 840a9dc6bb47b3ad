//! The group scaler against a real kube-apiserver (`STRATA_E2E_KUBECONFIG`,
//! see `testing/control-plane/`), skipped without one.
//!
//! Strata runs as `strata run` would, authenticated as its ServiceAccount
//! with `manifests/deploy/` and `manifests/scaler/rbac.yaml` applied (so
//! the real RBAC authorizer refuses any call the manifests do not grant),
//! leader election on, and the controller as its leader task. The LWS CRD
//! comes from `manifests/scaler/leaderworkerset-crd-for-tests.yaml` (with
//! the scale subresource); no LWS controller runs: the test creates and
//! deletes each replica's pods as `spec.replicas` says. Prometheus is a
//! small HTTP server in the test.
//!
//! Raising the load asks for four replicas; two super-nodes can hold two
//! exclusive replicas, so `spec.replicas` goes to 2 and stays there, with a
//! ScaleUpLimited event; broken metrics change nothing and leave a Warning
//! event; lowering the load brings it back to 1.

#[path = "../../adapter/tests/cluster/mod.rs"]
mod cluster;
mod support;

use cluster::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strata_kube::Adapter;
use strata_kube::leader::LeaderTask;
use strata_scaler::controller::ScalerController;
use strata_scaler::controller::config::ScalerConfig;
use strata_scaler::controller::lws;
use strata_scheduler::config::SchedulerConfig;
use support::*;

fn manifest(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(rel)
}

fn gpu_node(name: &str, supernode: &str) -> Value {
    kwok_gpu_node(name, "zone-scaler", supernode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_scaler_raises_lws_replicas_only_as_far_as_whole_replicas_fit() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    apply_file(
        &c.admin,
        &manifest("scaler/leaderworkerset-crd-for-tests.yaml"),
    )
    .await;
    apply_file(&c.admin, &manifest("scaler/rbac.yaml")).await;
    let all: Api<DynamicObject> = Api::all_with(c.admin.clone(), &lws::api_resource());
    wait_until("the LWS API served", Duration::from_secs(60), || async {
        all.list(&Default::default()).await.is_ok()
    })
    .await;
    let nodes: Api<Node> = Api::all(c.admin.clone());
    let names: Vec<(String, String)> = (0..4)
        .map(|i| {
            (
                format!("strata-e2e-scaler-{i}"),
                format!("scaler-sn{}", i / 2),
            )
        })
        .collect();
    for (n, sn) in &names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
        let node: Node = serde_json::from_value(gpu_node(n, sn)).expect("node JSON");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create a GPU node");
    }
    let sn_of: BTreeMap<String, String> = names.iter().cloned().collect();
    let ns = c.namespace("scaler").await;
    let sched = "strata-e2e-scaler";
    let lws_api: Api<DynamicObject> =
        Api::namespaced_with(c.admin.clone(), &ns, &lws::api_resource());
    let obj: DynamicObject =
        serde_json::from_value(lws_object(&ns, "llm", sched, 1, 2, 8)).expect("LWS JSON");
    lws_api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create the LeaderWorkerSet");

    let prom = FakeProm::start(LOW).await;
    let cfg = SchedulerConfig::from_yaml(&config(sched)).expect("scheduler config");
    let opts = c.options("e2e-scaler");
    let client = strata_kube::make_client(&opts)
        .await
        .expect("client from the ServiceAccount kubeconfig");
    let scfg = ScalerConfig::from_value(Some(&scaler_section(&prom.url, "1s"))).unwrap();
    let stores = strata_plugins::pod_group::Stores::default();
    let ctl =
        Arc::new(ScalerController::new(scfg, stores.pod_groups.clone(), "e2e-scaler").unwrap());
    let status = ctl.status();
    let tasks: Vec<Arc<dyn LeaderTask>> = vec![ctl];
    let a = Adapter::start_with_tasks(
        cfg,
        opts,
        client,
        &stores,
        &strata_scheduler::framework::Registry::new(),
        tasks,
    )
    .await
    .expect("adapter starts");
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    let lwsc = fake_lws_controller(c.admin.clone(), &ns, "llm");
    let key = format!("{ns}/llm");
    let t = Duration::from_secs(120);
    let reasons = |c: &Cluster, ns: String| {
        let c = c.admin.clone();
        async move {
            let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c, &ns);
            api.list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
        }
    };

    // Low load: one replica, bound.
    c.wait_bound(&ns, 2, t).await;
    wait_until("a decision", t, || async {
        status.lock().unwrap().last.contains_key(&key)
    })
    .await;
    assert_eq!(replicas(&c.admin, &ns, "llm").await, 1);

    // High load: four wanted, two fit whole.
    prom.set(HIGH);
    wait_until("spec.replicas 2", t, || async {
        replicas(&c.admin, &ns, "llm").await == 2
    })
    .await;
    c.wait_bound(&ns, 4, t).await;
    wait_until("a ScaleUpLimited event", t, || async {
        reasons(&c, ns.clone())
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("ScaleUpLimited"))
    })
    .await;
    let periods = status.lock().unwrap().periods;
    wait_until("three more periods", t, || async {
        status.lock().unwrap().periods >= periods + 3
    })
    .await;
    assert_eq!(
        replicas(&c.admin, &ns, "llm").await,
        2,
        "never beyond what fits whole"
    );
    let mut per_replica: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in c.list_pods(&ns).await {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let r = labels["leaderworkerset.sigs.k8s.io/group-index"].clone();
        let n = node_of(&p).map(str::to_owned).unwrap_or_default();
        per_replica
            .entry(r)
            .or_default()
            .insert(sn_of.get(&n).cloned().unwrap_or(n));
    }
    assert_eq!(per_replica.len(), 2, "{per_replica:?}");
    assert!(
        per_replica.values().all(|s| s.len() == 1),
        "{per_replica:?}"
    );
    assert_ne!(per_replica["0"], per_replica["1"], "{per_replica:?}");
    wait_until("the scale-up measured", t, || async {
        !status.lock().unwrap().scale_ups.is_empty()
    })
    .await;
    for (svc, n, took) in &status.lock().unwrap().scale_ups {
        // Reported, not asserted: from the decision to every pod of the new
        // replicas bound, including the test's stand-in LWS controller
        // creating the pods (it polls every 100 ms).
        eprintln!(
            "scale-up of {svc} by {n} replica(s): decision to bound whole in {} ms",
            took.as_millis()
        );
    }

    // Broken metrics: no action, a Warning event on the LeaderWorkerSet.
    prom.set(Answer::Broken);
    wait_until("a ScalerMetricsUnavailable event", t, || async {
        reasons(&c, ns.clone()).await.iter().any(|e| {
            e.reason.as_deref() == Some("ScalerMetricsUnavailable")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("LeaderWorkerSet")
        })
    })
    .await;
    assert_eq!(replicas(&c.admin, &ns, "llm").await, 2);

    // Low load: back to one replica.
    prom.set(LOW);
    wait_until("spec.replicas 1", t, || async {
        replicas(&c.admin, &ns, "llm").await == 1
    })
    .await;
    assert!(a.is_leader());
    lwsc.abort();
    a.shutdown().await;
    c.cleanup(&ns).await;
    for (n, _) in &names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
}
