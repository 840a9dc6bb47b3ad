//! A watch that falls behind etcd compaction recovers with nothing lost,
//! against a real kube-apiserver and etcd.
//!
//! The test starts a control plane of its own (`testing/control-plane/up.sh`)
//! with the API server's watch cache off, so watches are served by etcd and a
//! resourceVersion older than etcd's compaction is answered 410 Gone. The
//! scheduler reaches the API server through a proxy the test cuts; while it
//! is cut, pods and a node are created, pods deleted, and etcd compacted to
//! its newest revision. When the proxy is restored every informer must
//! resume from a compacted version, get 410, relist and reconcile.

mod cluster;

use cluster::*;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_watch_behind_etcd_compaction_relists_and_loses_nothing() {
    if kubeconfig().is_none() {
        return;
    }
    let Some(cp) = OwnControlPlane::start("compaction", &["--watch-cache=false"]) else {
        return;
    };
    let mut c = Cluster::setup_at(&cp.kubeconfig).await;
    let server = kube::config::Kubeconfig::read_from(&cp.kubeconfig)
        .expect("kubeconfig")
        .clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("server URL");
    let upstream: std::net::SocketAddr = server
        .trim_start_matches("https://")
        .parse()
        .expect("host:port");
    let proxy = CuttableProxy::start(upstream).await;
    c.route_scheduler_through(&format!("https://{}", proxy.addr));

    let ns = c.namespace("compaction").await;
    let sched = "strata-e2e-compaction";
    let mut opts = c.options("e2e-compaction");
    // This test is about watches; a Lease lost during the cut would only
    // add a wait.
    opts.leader_election.enabled = false;
    let client = strata_kube::make_client(&opts).await.expect("client");
    let stores = strata_plugins::pod_group::Stores::default();
    let cfg = strata_scheduler::config::SchedulerConfig::from_yaml(&config(sched)).expect("config");
    let a = strata_kube::Adapter::start_with_stores(cfg, opts, client, &stores)
        .await
        .expect("adapter starts");
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    for i in 0..10 {
        c.create_pod(&ns, plain_pod(&format!("before-{i}"), sched, "10m"))
            .await;
    }
    c.wait_bound(&ns, 10, Duration::from_secs(60)).await;
    let relists_before = metric_sum(&metrics(&a), "strata_informer_relists_total", "");

    proxy.cut();
    // While the scheduler sees nothing: new pods, a new node that one of
    // them needs, two bound pods deleted, then etcd compacted past all of it.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.admin.clone());
    let late: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(kwok_node("strata-e2e-late-node", "zone-late", 8, 16))
            .expect("node");
    nodes
        .create(&PostParams::default(), &late)
        .await
        .expect("create the late node");
    for i in 0..10 {
        c.create_pod(&ns, plain_pod(&format!("during-{i}"), sched, "10m"))
            .await;
    }
    let mut pinned = plain_pod("pinned-late", sched, "10m");
    pinned["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "strata-e2e-late-node"});
    c.create_pod(&ns, pinned).await;
    for i in 0..2 {
        c.pods(&ns)
            .delete(
                &format!("before-{i}"),
                &DeleteParams::default().grace_period(0),
            )
            .await
            .expect("delete a bound pod");
    }
    let rev = cp.compact_etcd();
    assert!(rev > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    // 8 before + 10 during + the pinned one.
    c.wait_bound(&ns, 19, Duration::from_secs(120)).await;
    let pinned = c.pods(&ns).get("pinned-late").await.expect("pinned pod");
    assert_eq!(node_of(&pinned), Some("strata-e2e-late-node"));
    assert_scheduled_once(&c.events(&ns).await);
    // The informers did relist (410 after compaction) and their caches
    // match the API: the deleted pods are gone from the scheduler's cache.
    let t = Instant::now();
    loop {
        let m = metrics(&a);
        let relists = metric_sum(&m, "strata_informer_relists_total", "");
        let cached = metric_sum(&m, "strata_cache_pods", "");
        let all: Api<k8s_openapi::api::core::v1::Pod> = Api::all(c.admin.clone());
        let in_api = all
            .list(&Default::default())
            .await
            .expect("list pods")
            .items
            .iter()
            .filter(|p| node_of(p).is_some())
            .count() as f64;
        let cached_nodes = metric_sum(&m, "strata_cache_nodes", "");
        let api_nodes = nodes
            .list(&Default::default())
            .await
            .expect("nodes")
            .items
            .len() as f64;
        if relists > relists_before && cached == in_api && cached_nodes == api_nodes {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "after compaction: relists {relists_before} -> {relists}, cache holds {cached} bound pods and {cached_nodes} nodes, the API {in_api} and {api_nodes}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    a.shutdown().await;
    drop(c);
    drop(cp);
}
