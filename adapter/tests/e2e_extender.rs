//! End-to-end: a kube-scheduler extender built in Go from the upstream
//! types (`testing/extender-go/`), unmodified, against a real API server.
//! Strata filters and scores through it and lets it bind (the extender
//! posts the Binding itself, with client-go); an ignorable extender that is
//! down is skipped; with `managedResources` only the pods asking for the
//! extender's resource reach it, and `ignoredByScheduler` keeps
//! NodeResourcesFit from refusing a resource no node advertises.
//!
//! Needs `STRATA_E2E_KUBECONFIG` (see `e2e.rs`) and Go; skipped without
//! them, failed with `STRATA_E2E_REQUIRED=1`.

mod cluster;
// The Go extender's harness, shared with the extender crate's own tests.
#[allow(dead_code)]
#[path = "../../extender/tests/common/go.rs"]
mod go;

use cluster::*;
use go::{GoExtender, go_extender_binary};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn widget_pod(name: &str, sched: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "schedulerName": sched,
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                "resources": {
                    "requests": {"cpu": "10m", "example.com/widget": "1"},
                    "limits": {"example.com/widget": "1"}
                }}]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_go_extender_filters_scores_and_binds() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let admin_kc = std::env::var("STRATA_E2E_KUBECONFIG").expect("set when setup succeeded");
    // Rejects node 0, prefers node 1, binds through the API server.
    let Some(bin) = go_extender_binary() else {
        return;
    };
    let go = GoExtender::start(
        &bin,
        &[
            "-reject",
            "^strata-e2e-node-0$",
            "-prefer",
            "^strata-e2e-node-1$",
            "-kubeconfig",
            &admin_kc,
        ],
    );
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let a = l.local_addr().expect("its address");
        drop(l);
        format!("http://{a}/down")
    };
    let ns = c.namespace("extender").await;
    let sched = "strata-e2e-extender";
    let cfg = format!(
        "{}extenders:\n\
         - {{urlPrefix: '{}', filterVerb: filter, prioritizeVerb: prioritize, bindVerb: bind, weight: 5, nodeCacheCapable: true, httpTimeout: 5s, managedResources: [{{name: example.com/widget, ignoredByScheduler: true}}]}}\n\
         - {{urlPrefix: '{down}', filterVerb: filter, ignorable: true, httpTimeout: 2s}}\n",
        config(sched),
        go.url
    );
    for i in 0..3 {
        c.create_pod(&ns, widget_pod(&format!("widget-{i}"), sched))
            .await;
        c.create_pod(&ns, plain_pod(&format!("plain-{i}"), sched, "10m"))
            .await;
    }
    let a = c.start(&cfg, "e2e-extender").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    c.wait_bound(&ns, 6, Duration::from_secs(120)).await;

    for p in c.list_pods(&ns).await {
        let name = p.metadata.name.clone().unwrap_or_default();
        let node = node_of(&p).unwrap_or_default().to_owned();
        if name.starts_with("widget") {
            assert_eq!(node, "strata-e2e-node-1", "{name}: the extender's choice");
        }
    }
    let calls = c_calls(&go);
    let pods_of = |verb: &str| -> Vec<String> {
        let mut v: Vec<String> = calls
            .iter()
            .filter(|c| c["verb"] == verb)
            .map(|c| c["pod"].as_str().unwrap_or_default().to_owned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let widgets: Vec<String> = (0..3).map(|i| format!("{ns}/widget-{i}")).collect();
    assert_eq!(pods_of("filter"), widgets, "only the widget pods reach it");
    assert_eq!(pods_of("bind"), widgets, "it bound the widget pods");
    assert!(
        calls
            .iter()
            .filter(|c| c["verb"] == "filter")
            .all(|c| c["nodeNames"] == true),
        "{calls:?}"
    );

    // The down extender was skipped, with an event naming it, and counted.
    let t = Instant::now();
    loop {
        let n = c
            .events(&ns)
            .await
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("ExtenderFailed")
                    && e.note.as_deref().is_some_and(|m| m.contains(&down))
            })
            .count();
        if n > 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no ExtenderFailed event"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m = metrics(&a);
    assert!(
        metric_sum(
            &m,
            "strata_remote_plugin_errors_total",
            &format!("plugin=\"{down}\"")
        ) >= 6.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "strata_remote_plugin_duration_seconds_count",
            "extension_point=\"bind\""
        ) >= 3.0,
        "{m}"
    );
    assert_scheduled_once(&c.events(&ns).await);
    a.shutdown().await;
    c.cleanup(&ns).await;
}

fn c_calls(go: &GoExtender) -> Vec<Value> {
    go.calls()
}
