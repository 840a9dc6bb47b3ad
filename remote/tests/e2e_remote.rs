//! The Go example plugin (`sdk/go/examples/vendorhealth`) through Strata
//! against a real kube-apiserver with kwok nodes: three of the harness's
//! four nodes are reported failed, every pod lands on the healthy one; the
//! plugin is then killed (a pod gets FailedScheduling naming it) and
//! restarted (the pod binds after a resynchronisation).
//!
//! Uses `strata-kube`'s end-to-end harness (`STRATA_E2E_KUBECONFIG`;
//! skipped without it unless `STRATA_E2E_REQUIRED=1`) and needs Go.

#[path = "../../adapter/tests/cluster/mod.rs"]
mod cluster;
mod common;

use cluster::*;
use common::{build_go_example, go_available, start_go_example};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;
use strata_scheduler::config::SchedulerConfig;

const HEALTH: &str = "vendor.example.com/health";

async fn mark(nodes: &Api<Node>, name: &str, health: Option<&str>) {
    let patch = serde_json::json!({"metadata": {"annotations": {HEALTH: health}}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_go_plugin_filters_and_survives_a_restart() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    assert!(go_available(), "the end-to-end run needs Go on PATH");
    let dir = std::env::temp_dir().join(format!("strata-remote-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sock = dir.join("vh.sock");
    let bin = build_go_example(&dir);
    let plugin = start_go_example(&bin, &sock);

    let nodes: Api<Node> = Api::all(c.admin.clone());
    let healthy = format!("strata-e2e-node-{}", NODES - 1);
    for i in 0..NODES - 1 {
        mark(&nodes, &format!("strata-e2e-node-{i}"), Some("failed")).await;
    }
    mark(&nodes, &healthy, Some("ok")).await;

    let ns = c.namespace("remote").await;
    let sched = "remote-e2e";
    let yaml = format!(
        "podInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 2\nprofiles:\n- schedulerName: {sched}\n  \
         plugins: {{multiPoint: {{enabled: [{{name: GoVendorHealth, weight: 2}}]}}}}\n  \
         pluginConfig:\n  - name: GoVendorHealth\n    args: {{remote: {{endpoint: \"unix://{}\", timeout: 2s, failurePolicy: Fail}}}}\n",
        sock.display()
    );
    let plugins = strata_remote::registry_for(&yaml, &strata_plugins::registry());
    let cfg = SchedulerConfig::from_yaml(&yaml).expect("config");
    let opts = c.options("remote-e2e");
    let client = strata_kube::make_client(&opts).await.expect("client");
    let stores = strata_plugins::pod_group::Stores::default();
    let a = strata_kube::Adapter::start_with_plugins(cfg, opts, client, &stores, &plugins)
        .await
        .expect("adapter starts");

    for i in 0..4 {
        c.create_pod(&ns, plain_pod(&format!("p-{i}"), sched, "10m"))
            .await;
    }
    c.wait_bound(&ns, 4, Duration::from_secs(90)).await;
    for p in c.list_pods(&ns).await {
        assert_eq!(node_of(&p), Some(healthy.as_str()));
    }
    let m = metrics(&a);
    assert!(
        metric_sum(
            &m,
            "strata_remote_plugin_duration_seconds_count",
            r#"plugin="GoVendorHealth",extension_point="Filter""#
        ) >= 4.0,
        "{m}"
    );

    // The plugin dies: the next pod fails, naming it.
    drop(plugin);
    c.create_pod(&ns, plain_pod("after-crash", sched, "10m"))
        .await;
    let note = c
        .wait_failed_event(&ns, "after-crash", Duration::from_secs(60))
        .await;
    assert!(note.contains("GoVendorHealth"), "{note}");

    // Back: a new session, a full snapshot, and the pod binds on the
    // healthy node.
    let _plugin = start_go_example(&bin, &sock);
    c.wait_bound(&ns, 5, Duration::from_secs(90)).await;
    for p in c.list_pods(&ns).await {
        assert_eq!(node_of(&p), Some(healthy.as_str()));
    }
    let m = metrics(&a);
    assert!(
        metric_sum(
            &m,
            "strata_remote_plugin_errors_total",
            r#"plugin="GoVendorHealth""#
        ) >= 1.0,
        "{m}"
    );

    a.shutdown().await;
    for i in 0..NODES {
        mark(&nodes, &format!("strata-e2e-node-{i}"), None).await;
    }
    c.cleanup(&ns).await;
}
