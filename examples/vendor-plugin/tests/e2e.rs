//! The vendor's scheduler binary against a real kube-apiserver with kwok
//! nodes (`strata run` path): the harness's four kwok nodes, three of them
//! reported failed by the vendor agent's annotation; `vendor-scheduler run`
//! with VendorHealth enabled schedules every pod onto the healthy node, and
//! the PreBind annotation is on each pod, read back from the API.
//!
//! Uses the end-to-end harness of `strata-kube` (`STRATA_E2E_KUBECONFIG`;
//! skipped with a notice when it is not set, failed instead with
//! `STRATA_E2E_REQUIRED=1`). The scheduler runs with the admin kubeconfig:
//! the manifests' admission policy lets Strata's ServiceAccount write only
//! `strata.io/` and `hami.io/` pod annotations, and a vendor adds its own
//! prefix there when it deploys (see docs/PLUGINS.md).

#[path = "../../../adapter/tests/cluster/mod.rs"]
mod cluster;

use cluster::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vendor_health::{HEALTH, PLACED_ON_HEALTH};

/// Stops the scheduler (and the test's marks on the nodes) even when an
/// assertion fails.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn mark(nodes: &Api<Node>, name: &str, health: Option<&str>) {
    let patch = serde_json::json!({"metadata": {"annotations": {HEALTH: health}}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_vendor_scheduler_places_pods_on_healthy_nodes_and_tells_the_agent() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let admin_kc = kubeconfig().expect("set up, so set");
    let nodes: Api<Node> = Api::all(c.admin.clone());
    let healthy = format!("strata-e2e-node-{}", NODES - 1);
    for i in 0..NODES - 1 {
        mark(&nodes, &format!("strata-e2e-node-{i}"), Some("failed")).await;
    }
    mark(&nodes, &healthy, Some("ok")).await;

    let ns = c.namespace("vendor").await;
    let sched = "vendor-e2e";
    let dir = std::env::temp_dir().join(format!("vendor-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "podInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 2\n\
             profiles:\n- schedulerName: {sched}\n  plugins: {{multiPoint: {{enabled: [{{name: VendorHealth, weight: 2}}]}}}}\n"
        ),
    )
    .expect("write the config");
    let child = Command::new(env!("CARGO_BIN_EXE_vendor-scheduler"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&admin_kc)
        .args([
            "--leader-elect",
            "false",
            "--http-address",
            "127.0.0.1:0",
            "--insecure-serving",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vendor-scheduler run");
    let stop = Stop(child);

    for i in 0..6 {
        c.create_pod(&ns, plain_pod(&format!("p-{i}"), sched, "10m"))
            .await;
    }
    c.wait_bound(&ns, 6, Duration::from_secs(90)).await;
    for p in c.list_pods(&ns).await {
        let name = p.metadata.name.clone().unwrap_or_default();
        assert_eq!(node_of(&p), Some(healthy.as_str()), "pod {name}");
        let note = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PLACED_ON_HEALTH));
        assert_eq!(note.map(String::as_str), Some("ok"), "pod {name}");
    }

    drop(stop);
    for i in 0..NODES {
        mark(&nodes, &format!("strata-e2e-node-{i}"), None).await;
    }
    c.cleanup(&ns).await;
}
