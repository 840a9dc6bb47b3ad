//! LeaderWorkerSet replicas against a real kube-apiserver: pods shaped as
//! the LWS controller makes them (labels `leaderworkerset.sigs.k8s.io/name`,
//! `group-index`, `worker-index`, `group-key`; annotations `size` and
//! `exclusive-topology`), with only `schedulerName` pointing at Strata and
//! no LWS controller or CRD installed. Every replica is bound whole inside
//! one super-node, each exclusive replica alone in its own; a replica too
//! big for any super-node stays wholly pending with a condition saying so.
//!
//! The test adds four kwok nodes of its own (two super-nodes of two
//! servers with 8 GPUs each) and deletes them at the end.

mod cluster;

use cluster::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const GPU: &str = "nvidia.com/gpu";

fn gpu_node(name: &str, supernode: &str) -> Value {
    kwok_gpu_node(name, "zone-lws", supernode)
}

/// Pod `w` of replica `r` of LWS `set`, as the LWS controller names,
/// labels and annotates it.
fn lws_pod(sched: &str, set: &str, r: u32, w: u32, size: u32, gpus: u32) -> Value {
    let name = if w == 0 {
        format!("{set}-{r}")
    } else {
        format!("{set}-{r}-{w}")
    };
    json!({
        "metadata": {
            "name": name,
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": set,
                "leaderworkerset.sigs.k8s.io/group-index": r.to_string(),
                "leaderworkerset.sigs.k8s.io/worker-index": w.to_string(),
                "leaderworkerset.sigs.k8s.io/group-key": format!("{set}-{r}-e2e"),
            },
            "annotations": {
                "leaderworkerset.sigs.k8s.io/size": size.to_string(),
                "leaderworkerset.sigs.k8s.io/exclusive-topology": "strata.io/supernode",
            }
        },
        "spec": {
            "schedulerName": sched,
            "containers": [{"name": "vllm", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi", GPU: gpus.to_string()},
                              "limits": {GPU: gpus.to_string()}}}]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_lws_replicas_bind_whole_inside_one_super_node() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let nodes: Api<Node> = Api::all(c.admin.clone());
    let names: Vec<(String, String)> = (0..4)
        .map(|i| (format!("strata-e2e-lws-{i}"), format!("lws-sn{}", i / 2)))
        .collect();
    for (n, _) in &names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
    for (n, sn) in &names {
        let node: Node = serde_json::from_value(gpu_node(n, sn)).expect("node JSON");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create a GPU node");
    }
    let sn_of: BTreeMap<String, String> = names.iter().cloned().collect();
    let ns = c.namespace("lws").await;
    let sched = "strata-e2e-lws";
    let a = c.start(&config(sched), "e2e-lws").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");

    // Three of four pods of replica 0: nothing may start.
    for w in 0..3 {
        c.create_pod(&ns, lws_pod(sched, "llm", 0, w, 4, 4)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        c.bound(&ns).await,
        0,
        "a replica started before all its pods existed"
    );
    // The rest of replica 0 and all of replica 1: 16 GPUs each, one
    // super-node each (exclusive).
    c.create_pod(&ns, lws_pod(sched, "llm", 0, 3, 4, 4)).await;
    for w in 0..4 {
        c.create_pod(&ns, lws_pod(sched, "llm", 1, w, 4, 4)).await;
    }
    c.wait_bound(&ns, 8, Duration::from_secs(60)).await;
    // A replica of 3 x 8 GPUs: no super-node offers 24.
    for w in 0..3 {
        c.create_pod(&ns, lws_pod(sched, "big", 0, w, 3, 8)).await;
    }
    let msg = c
        .wait_unschedulable(&ns, "big-0", Duration::from_secs(60))
        .await;
    assert!(
        msg.contains("LeaderWorkerSet replica") && msg.contains("can never be placed"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let pods = c.list_pods(&ns).await;
    let mut per_replica: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let replica = format!(
            "{}-{}",
            labels["leaderworkerset.sigs.k8s.io/name"],
            labels["leaderworkerset.sigs.k8s.io/group-index"]
        );
        let node = node_of(p).map(str::to_owned);
        let set = per_replica.entry(replica.clone()).or_default();
        set.insert(match node {
            Some(n) => sn_of.get(&n).cloned().unwrap_or(n),
            None => "<pending>".to_owned(),
        });
    }
    assert_eq!(per_replica["llm-0"].len(), 1, "{per_replica:?}");
    assert_eq!(per_replica["llm-1"].len(), 1, "{per_replica:?}");
    assert_ne!(
        per_replica["llm-0"], per_replica["llm-1"],
        "{per_replica:?}"
    );
    assert!(
        !per_replica["llm-0"].contains("<pending>"),
        "{per_replica:?}"
    );
    assert_eq!(
        per_replica["big-0"],
        BTreeSet::from(["<pending>".to_owned()]),
        "the replica too big stays wholly pending: {per_replica:?}"
    );
    a.shutdown().await;
    c.cleanup(&ns).await;
    for (n, _) in &names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
}
