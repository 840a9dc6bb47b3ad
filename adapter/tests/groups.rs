//! PodGroups from the API server reach the PodGroup plugin: a coscheduling
//! group (`scheduling.x-k8s.io/v1alpha1`) holds its members until
//! `minMember` of them exist, then they are bound together; a cluster that
//! does not serve a PodGroup API still starts.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use strata_fake_apiserver::{ResourceType, fixtures};
use strata_kube::Adapter;

fn member(name: &str) -> serde_json::Value {
    let mut p = fixtures::pod("work", name, SCHED, 100, 128, None);
    p["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] = json!("trainers");
    p
}

async fn start_with_groups(s: &strata_fake_apiserver::FakeApiServer) -> Adapter {
    let c = client(s);
    let stores = strata_plugins::pod_group::Stores::default();
    let custom = strata_kube::groups::pod_group_resources(&c, &stores.pod_groups).await;
    let registry = strata_plugins::registry_with(&stores);
    Adapter::start_with_registry(config(), options("g", false), c, custom, registry)
        .await
        .expect("adapter starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coscheduling_group_binds_all_or_nothing() {
    let s = server();
    // Only the coscheduling CRD is installed; the Strata one is not served.
    s.register(ResourceType::new(
        "scheduling.x-k8s.io",
        "v1alpha1",
        "podgroups",
        "PodGroup",
        true,
    ));
    s.create_many(
        "nodes",
        (0..4)
            .map(|i| fixtures::node(&format!("n{i}"), i, 8, 32, 1))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    s.create(
        "podgroups.scheduling.x-k8s.io",
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
               "metadata": {"name": "trainers", "namespace": "work"},
               "spec": {"minMember": 3, "scheduleTimeoutSeconds": 30}}),
    )
    .unwrap();
    let a = start_with_groups(&s).await;
    assert!(
        a.wait_ready(Duration::from_secs(30)).await,
        "ready without the strata.io PodGroup API"
    );

    // Two of three members: nobody is bound.
    s.create("pods", member("trainer-0")).unwrap();
    s.create("pods", member("trainer-1")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        s.bindings()
            .iter()
            .all(|b| !b.pod.starts_with("work/trainer")),
        "a partial group must not be bound: {:?}",
        s.bindings()
    );

    // The third arrives: all three are bound, each once.
    s.create("pods", member("trainer-2")).unwrap();
    wait_for("all three members bound", Duration::from_secs(30), || {
        s.bindings()
            .iter()
            .filter(|b| b.pod.starts_with("work/trainer"))
            .count()
            == 3
    })
    .await;
    assert!(binds_per_uid(&s).values().all(|n| *n == 1));
    a.shutdown().await;
}
