//! MemoryPool against a real kube-apiserver: PreBind writes the borrow plan
//! on the pod, a pod asking for more remote memory than any pool has gets
//! `PodScheduled=False` naming the shortfall, the loans of a deleted
//! borrower come back (a waiting pod then fits), and a cordoned lender
//! leaves a `MemoryLenderLost` event on its borrower.
//!
//! Three kwok servers of one super-node of this test's own: `a` (cabinet 0,
//! lends nothing), `b` (cabinet 0, lends 16Gi), `c` (cabinet 1, lends
//! 24Gi), 64Gi each. Skipped without a cluster (see `cluster/mod.rs`).

mod cluster;

use cluster::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const GI: i64 = 1 << 30;

fn server(name: &str, sn: &str, cab: &str, lend: Option<&str>) -> Node {
    let mut v = kwok_node(name, "zone-mp", 16, 64);
    v["metadata"]["labels"]["strata.io/supernode"] = json!(sn);
    v["metadata"]["labels"]["strata.io/cabinet"] = json!(cab);
    if let Some(l) = lend {
        v["metadata"]["annotations"]["strata.io/memory-lendable"] = json!(l);
        v["metadata"]["annotations"]["strata.io/memory-medium"] = json!("dram");
    }
    serde_json::from_value(v).expect("node JSON")
}

fn borrower(name: &str, sched: &str, sn: &str, local: &str, borrow: &str) -> Value {
    json!({
        "metadata": {"name": name, "annotations": {"strata.io/memory-borrow": borrow}},
        "spec": {
            "schedulerName": sched,
            "nodeSelector": {"strata.io/supernode": sn},
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "100m", "memory": local}}}]
        }
    })
}

/// The pod's plan: (node, [(lender, bytes, distance)], remote bytes).
async fn plan_of(c: &Cluster, ns: &str, pod: &str) -> (String, Vec<(String, i64, String)>, i64) {
    let p = c.pods(ns).get(pod).await.expect("get pod");
    let node = node_of(&p).expect("bound").to_owned();
    let text = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("strata.io/memory-borrow-plan"))
        .unwrap_or_else(|| panic!("{pod} has no borrow plan: {:?}", p.metadata.annotations))
        .clone();
    let doc: Value = serde_json::from_str(&text).expect("plan JSON");
    let lenders = doc["lenders"]
        .as_array()
        .expect("lenders")
        .iter()
        .map(|l| {
            (
                l["node"].as_str().unwrap_or_default().to_owned(),
                l["bytes"].as_i64().unwrap_or_default(),
                l["distance"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    (
        node,
        lenders,
        doc["remoteBytes"].as_i64().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_memory_pool_plans_reports_shortfall_and_gives_back() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("mempool").await;
    let sn = format!("{ns}-sn");
    let name = |s: &str| format!("{ns}-{s}");
    let nodes: Api<Node> = Api::all(c.admin.clone());
    for n in [
        server(&name("a"), &sn, "cab-0", None),
        server(&name("b"), &sn, "cab-0", Some("16Gi")),
        server(&name("c"), &sn, "cab-1", Some("24Gi")),
    ] {
        nodes
            .create(&PostParams::default(), &n)
            .await
            .expect("create a server");
    }
    let sched = "strata-e2e-mempool";
    let a = c.start(&config(sched), "e2e-mempool").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");

    // 60Gi local at 25%: 20Gi remote, from the other servers of the pool.
    c.create_pod(&ns, borrower("first", sched, &sn, "60Gi", "25%"))
        .await;
    c.wait_bound(&ns, 1, Duration::from_secs(60)).await;
    let (node, lenders, remote) = plan_of(&c, &ns, "first").await;
    assert_eq!(remote, 20 * GI);
    assert_eq!(lenders.iter().map(|l| l.1).sum::<i64>(), 20 * GI);
    for (lender, _, distance) in &lenders {
        assert_ne!(lender, &node, "a server does not lend to itself");
        assert!([name("b"), name("c")].contains(lender), "{lender}");
        let near = (node == name("a") || node == name("b"))
            && (lender == &name("a") || lender == &name("b"));
        assert_eq!(distance, if near { "near" } else { "pool" });
    }

    // More than the pool has: Unschedulable, naming the shortfall.
    c.create_pod(&ns, borrower("huge", sched, &sn, "1Gi", "100Gi"))
        .await;
    let msg = c
        .wait_unschedulable(&ns, "huge", Duration::from_secs(60))
        .await;
    assert!(msg.contains("needs 100Gi remote, pool "), "{msg}");
    eprintln!("huge: {msg}");

    // 40Gi remote fits only on a, borrowing all of b and c: not while the
    // first pod holds 20Gi of it.
    c.create_pod(&ns, borrower("second", sched, &sn, "2Gi", "40Gi"))
        .await;
    let msg = c
        .wait_unschedulable(&ns, "second", Duration::from_secs(60))
        .await;
    assert!(msg.contains("remote") || msg.contains("pool"), "{msg}");
    c.pods(&ns)
        .delete("first", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete the first borrower");
    let t = Instant::now();
    loop {
        let p = c.pods(&ns).get("second").await.expect("get pod");
        if node_of(&p).is_some() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the second borrower was not bound after the first left"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (node, mut lenders, remote) = plan_of(&c, &ns, "second").await;
    assert_eq!(node, name("a"));
    assert_eq!(remote, 40 * GI);
    lenders.sort();
    assert_eq!(
        lenders,
        vec![
            (name("b"), 16 * GI, "near".to_owned()),
            (name("c"), 24 * GI, "pool".to_owned())
        ]
    );

    // A lender cordoned: the borrower is told.
    nodes
        .patch(
            &name("c"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .expect("cordon c");
    let t = Instant::now();
    loop {
        let found = c.events(&ns).await.into_iter().find(|e| {
            e.reason.as_deref() == Some("MemoryLenderLost")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("second")
        });
        if let Some(e) = found {
            let note = e.note.unwrap_or_default();
            assert!(
                note.contains("is cordoned") && note.contains("24Gi"),
                "{note}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no MemoryLenderLost event on the borrower"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m = metrics(&a);
    assert_eq!(metric_sum(&m, "strata_events_failed_total", ""), 0.0, "{m}");
    // Borrowed bytes per pool domain and namespace, failures by reason.
    assert_eq!(
        metric_sum(
            &m,
            "strata_memory_pool_borrowed_bytes",
            &format!("pool=\"{sn}\"")
        ),
        (40 * GI) as f64,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "strata_memory_pool_namespace_borrowed_bytes",
            &format!("namespace=\"{ns}\"")
        ),
        (40 * GI) as f64,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "strata_memory_pool_failures_total",
            "reason=\"pool_short\""
        ) >= 2.0,
        "{m}"
    );
    a.shutdown().await;
    c.cleanup(&ns).await;
    for n in ["a", "b", "c"] {
        let _ = nodes.delete(&name(n), &DeleteParams::default()).await;
    }
}
