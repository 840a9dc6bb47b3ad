//! What the scaler's API-level and end-to-end tests share: a fake
//! Prometheus endpoint, a LeaderWorkerSet object, a stand-in for the LWS
//! controller (it creates and deletes the pods of each replica as
//! `spec.replicas` says), and the scaler's configuration.

#![allow(dead_code)]

use axum::extract::{Query, State};
use axum::http::StatusCode;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_plugins::pod_group::lws::NAME_LABEL;
use strata_scaler::controller::lws::{self, Lws};

/// Polls `f` every 50 ms until it is true; fails the test naming `what`
/// after `timeout`.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> F,
) {
    let t = std::time::Instant::now();
    while !f().await {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the fake Prometheus answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Answer {
    /// requests/s, prompt tokens/s, output tokens/s.
    Load(f64, f64, f64),
    /// HTTP 503 with a non-JSON body.
    Broken,
    /// Every query has no series.
    Empty,
}

/// A Prometheus-compatible `/api/v1/query` on 127.0.0.1. A query whose text
/// holds `requests`, `prompt` or `output` gets that figure of the answer.
pub struct FakeProm {
    pub url: String,
    pub answer: Arc<Mutex<Answer>>,
    pub asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct PromState {
    answer: Arc<Mutex<Answer>>,
    asked: Arc<Mutex<Vec<String>>>,
}

async fn query(
    State(st): State<PromState>,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let text = q.get("query").cloned().unwrap_or_default();
    st.asked.lock().unwrap().push(text.clone());
    let answer = *st.answer.lock().unwrap();
    let v = match answer {
        Answer::Broken => return (StatusCode::SERVICE_UNAVAILABLE, "overloaded".into()),
        Answer::Empty => {
            return (
                StatusCode::OK,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into(),
            );
        }
        Answer::Load(r, p, o) => {
            if text.contains("requests") {
                r
            } else if text.contains("prompt") {
                p
            } else if text.contains("output") {
                o
            } else {
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"status":"error","errorType":"bad_data","error":"unknown metric"}"#.into(),
                );
            }
        }
    };
    let body = json!({"status": "success", "data": {"resultType": "vector",
        "result": [{"metric": {}, "value": [1_700_000_000.0, v.to_string()]}]}});
    (StatusCode::OK, body.to_string())
}

impl FakeProm {
    pub async fn start(answer: Answer) -> FakeProm {
        let st = PromState {
            answer: Arc::new(Mutex::new(answer)),
            asked: Arc::new(Mutex::new(Vec::new())),
        };
        let app = axum::Router::new()
            .route("/api/v1/query", axum::routing::get(query))
            .with_state(st.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        FakeProm {
            url,
            answer: st.answer,
            asked: st.asked,
            task,
        }
    }

    pub fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }
}

impl Drop for FakeProm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The scaler's section: model `m` (one prefill and one decode instance
/// per replica; a decode instance serves 640 output tokens/s at target 0.8,
/// so 300 tokens/s need one replica and 2,500 need four), a fast period,
/// no tide, no scale to zero, a one-period scale-down window.
pub fn scaler_section(prom: &str, period: &str) -> Value {
    json!({
        "enabled": true, "period": period,
        "prometheus": {"url": prom, "timeout": "2s"},
        "queries": {"requests": "requests{ns=\"$namespace\",svc=\"$name\"}",
                    "promptTokens": "prompt{ns=\"$namespace\",svc=\"$name\"}",
                    "outputTokens": "output{ns=\"$namespace\",svc=\"$name\"}"},
        "models": {"m": {"prefillTokensPerSecond": 10000, "decodeTokensPerSecond": 1000,
                         "baseTpotSeconds": 0.02, "prefillAccelerators": 8, "decodeAccelerators": 8,
                         "objective": {"ttftSeconds": 1, "tpotSeconds": 0.1},
                         "minGroups": 1, "maxGroups": 10}},
        "policy": {"target": 0.8, "scaleDownWindow": 1, "idleMinutes": 0, "tide": {"enabled": false}},
    })
}

/// Load needing one replica.
pub const LOW: Answer = Answer::Load(10.0, 1000.0, 300.0);
/// Load needing four replicas.
pub const HIGH: Answer = Answer::Load(10.0, 1000.0, 2500.0);

/// An opted-in LWS of `size` pods of `gpus` GPUs each, exclusive per
/// super-node.
pub fn lws_object(ns: &str, name: &str, sched: &str, replicas: u32, size: u32, gpus: u32) -> Value {
    json!({
        "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "namespace": ns,
            "annotations": {lws::MODEL_ANNOTATION: "m",
                            "leaderworkerset.sigs.k8s.io/exclusive-topology": "strata.io/supernode"}},
        "spec": {"replicas": replicas, "leaderWorkerTemplate": {"size": size,
            "workerTemplate": {"metadata": {"labels": {"app": name}},
                "spec": {"schedulerName": sched,
                    // kwok's nodes (end-to-end) carry this taint.
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "vllm", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": gpus.to_string()},
                                      "limits": {"nvidia.com/gpu": gpus.to_string()}}}]}}}}
    })
}

/// `spec.replicas` of an LWS.
pub async fn replicas(client: &kube::Client, ns: &str, name: &str) -> u32 {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &lws::api_resource());
    let o = api.get(name).await.expect("read the LeaderWorkerSet");
    o.data["spec"]["replicas"].as_u64().unwrap_or(1) as u32
}

/// Plays the LWS controller for `name` until dropped: every 100 ms, the
/// pods of replicas below `spec.replicas` exist, the others do not.
pub fn fake_lws_controller(
    client: kube::Client,
    ns: &str,
    name: &str,
) -> tokio::task::JoinHandle<()> {
    let (ns, name) = (ns.to_owned(), name.to_owned());
    tokio::spawn(async move {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &lws::api_resource());
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        loop {
            if let Ok(o) = api.get(&name).await
                && let Ok(Some(l)) = Lws::from_object(&o)
            {
                let mine = |p: &k8s_openapi::api::core::v1::Pod| {
                    p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(NAME_LABEL))
                        .is_some_and(|n| *n == name)
                };
                // (No label selector: the fake API server has none.)
                let have: BTreeSet<String> = pods
                    .list(&ListParams::default())
                    .await
                    .map(|l| {
                        l.items
                            .into_iter()
                            .filter(|p| mine(p))
                            .filter_map(|p| p.metadata.name)
                            .collect()
                    })
                    .unwrap_or_default();
                for p in &have {
                    let index = p
                        .strip_prefix(&format!("{name}-"))
                        .and_then(|r| r.split('-').next())
                        .and_then(|i| i.parse::<u32>().ok());
                    if index.is_some_and(|i| i >= l.replicas) {
                        let _ = pods.delete(p, &DeleteParams::default()).await;
                    }
                }
                for i in 0..l.replicas {
                    for w in 0..l.size {
                        let Ok(mut pod) = l.pod(i, w) else { continue };
                        let pn = pod.metadata.name.clone().unwrap_or_default();
                        if have.contains(&pn) {
                            continue;
                        }
                        pod.metadata.uid = None;
                        if let Err(e) = pods.create(&PostParams::default(), &pod).await {
                            eprintln!("stand-in LWS controller: creating {pn}: {e}");
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
