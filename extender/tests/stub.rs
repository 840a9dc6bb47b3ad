//! The extender client and the engine's extender hook against an
//! in-process stub extender (axum on loopback): batching, filter and
//! prioritize semantics, score scaling, bind, managedResources, and every
//! kind of bad behaviour under both failure policies.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::{env, placed, result_of, runtime, try_env};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use strata_scheduler::cluster::EventKind;
use strata_scheduler::engine::CycleResult;
use strata_scheduler::testing::pod;

/// How the stub answers filter.
#[derive(Clone, Debug, PartialEq)]
enum Filter {
    /// Rejects nodes whose name contains the text.
    Reject(&'static str),
    /// Garbage instead of JSON.
    Garbage,
    /// `{"Error": ...}`.
    Error,
    /// Names a node that was not sent.
    Unknown,
    /// Answers after 3 s.
    Hang,
    /// HTTP 500.
    Status500,
}

struct Stub {
    filter: Mutex<Filter>,
    /// Node-name part that scores, and its score.
    prefer: Mutex<(&'static str, i64)>,
    bind_error: Mutex<String>,
    calls: Mutex<Vec<(String, Value)>>,
}

impl Stub {
    fn new() -> Arc<Stub> {
        Arc::new(Stub {
            filter: Mutex::new(Filter::Reject("bad")),
            prefer: Mutex::new(("c", 10)),
            bind_error: Mutex::new(String::new()),
            calls: Mutex::new(Vec::new()),
        })
    }
    fn calls(&self, verb: &str) -> Vec<Value> {
        self.calls
            .lock()
            .iter()
            .filter(|(v, _)| v == verb)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// The candidate names of filter/prioritize args.
fn names(args: &Value) -> Vec<String> {
    if let Some(n) = args["NodeNames"].as_array() {
        return n.iter().map(|x| x.as_str().unwrap().to_owned()).collect();
    }
    args["Nodes"]["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn filter(State(s): State<Arc<Stub>>, body: Bytes) -> (StatusCode, String) {
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.calls.lock().push(("filter".into(), args.clone()));
    let mode = s.filter.lock().clone();
    let all = names(&args);
    match mode {
        Filter::Reject(bad) => {
            let keep: Vec<&String> = all.iter().filter(|n| !n.contains(bad)).collect();
            let failed: serde_json::Map<String, Value> = all
                .iter()
                .filter(|n| n.contains(bad))
                .map(|n| (n.clone(), json!("stub says no")))
                .collect();
            let by_name = args["NodeNames"].is_array();
            let answer = if by_name {
                json!({"NodeNames": keep, "FailedNodes": failed, "FailedAndUnresolvableNodes": null, "Error": ""})
            } else {
                let items: Vec<Value> = args["Nodes"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| !n["metadata"]["name"].as_str().unwrap().contains(bad))
                    .cloned()
                    .collect();
                json!({"Nodes": {"items": items}, "NodeNames": null, "FailedNodes": failed, "Error": ""})
            };
            (StatusCode::OK, answer.to_string())
        }
        Filter::Garbage => (StatusCode::OK, "<html>not json".into()),
        Filter::Error => (
            StatusCode::OK,
            json!({"Error": "stub is broken"}).to_string(),
        ),
        Filter::Unknown => (StatusCode::OK, json!({"NodeNames": ["ghost"]}).to_string()),
        Filter::Hang => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, json!({"NodeNames": all}).to_string())
        }
        Filter::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "oops".into()),
    }
}

async fn prioritize(State(s): State<Arc<Stub>>, body: Bytes) -> (StatusCode, String) {
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.calls.lock().push(("prioritize".into(), args.clone()));
    let (part, score) = *s.prefer.lock();
    let list: Vec<Value> = names(&args)
        .into_iter()
        .map(|n| {
            let sc = if n.contains(part) { score } else { 0 };
            json!({"Host": n, "Score": sc})
        })
        .collect();
    (StatusCode::OK, Value::Array(list).to_string())
}

async fn bind(State(s): State<Arc<Stub>>, body: Bytes) -> (StatusCode, String) {
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.calls.lock().push(("bind".into(), args));
    let e = s.bind_error.lock().clone();
    (StatusCode::OK, json!({ "Error": e }).to_string())
}

/// Starts the stub on loopback; its URL prefix.
fn serve(rt: &tokio::runtime::Runtime, stub: Arc<Stub>) -> String {
    let app = Router::new()
        .route("/ext/filter", post(filter))
        .route("/ext/prioritize", post(prioritize))
        .route("/ext/bind", post(bind))
        .with_state(stub);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/ext")
}

/// A URL where nothing listens.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/ext")
}

fn four_nodes(e: &mut common::Env) {
    for n in ["n-a", "n-b", "n-bad", "n-c"] {
        e.add_node(n, "4", &[]);
    }
}

/// Filter gets the nodes that passed the in-tree filters, once per cycle
/// (never per node); prioritize gets what filter kept; the preferred node
/// wins; nodeCacheCapable sends names.
#[test]
fn filter_and_prioritize_are_batched_once_per_cycle() {
    let rt = runtime();
    let stub = Stub::new();
    let url = serve(&rt, stub.clone());
    let mut e = env(
        rt,
        &format!(
            "[{{urlPrefix: '{url}', filterVerb: filter, prioritizeVerb: prioritize, weight: 1, nodeCacheCapable: true}}]"
        ),
    );
    four_nodes(&mut e);
    // n-b cannot hold the pod: the in-tree cpu filter removes it first.
    e.add_node("n-tiny", "1", &[]);
    e.add_pod(pod("p").req("cpu", "2").build());
    let r = e.run();
    assert_eq!(placed(&r, "p"), "n-c");
    let f = stub.calls("filter");
    assert_eq!(f.len(), 1, "one filter call per cycle");
    let mut sent = names(&f[0]);
    sent.sort();
    assert_eq!(sent, ["n-a", "n-b", "n-bad", "n-c"]);
    assert!(f[0].get("Nodes").is_none(), "names only: {}", f[0]);
    assert_eq!(f[0]["Pod"]["metadata"]["name"], "p");
    assert_eq!(
        f[0]["Pod"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "2"
    );
    let p = stub.calls("prioritize");
    assert_eq!(p.len(), 1);
    let mut sent = names(&p[0]);
    sent.sort();
    assert_eq!(sent, ["n-a", "n-b", "n-c"], "what filter kept");
    let text = strata_extender::metrics::encode();
    assert!(
        text.contains(&format!("plugin=\"{url}\"")) && text.contains("extension_point=\"filter\""),
        "{text}"
    );
}

/// Without nodeCacheCapable the nodes go as objects (name, labels,
/// allocatable), and an answered node list is read back.
#[test]
fn node_objects_without_node_cache() {
    let rt = runtime();
    let stub = Stub::new();
    let url = serve(&rt, stub.clone());
    let mut e = env(rt, &format!("[{{urlPrefix: '{url}', filterVerb: filter}}]"));
    four_nodes(&mut e);
    e.add_pod(pod("p").req("cpu", "1").build());
    let r = e.run();
    assert!(
        matches!(result_of(&r, "p"), CycleResult::Scheduled { node } if !node.as_str().contains("bad"))
    );
    let f = stub.calls("filter");
    assert_eq!(f.len(), 1);
    let items = f[0]["Nodes"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["status"]["allocatable"]["cpu"], "4");
    assert!(f[0].get("NodeNames").is_none());
}

/// Nodes the extender rejects count in the pod's message with its reason.
#[test]
fn rejected_everywhere_is_unschedulable_with_the_extenders_reason() {
    let rt = runtime();
    let stub = Stub::new();
    *stub.filter.lock() = Filter::Reject("n-");
    let url = serve(&rt, stub.clone());
    let mut e = env(
        rt,
        &format!("[{{urlPrefix: '{url}', filterVerb: filter, nodeCacheCapable: true}}]"),
    );
    four_nodes(&mut e);
    e.add_pod(pod("p").req("cpu", "1").build());
    let r = e.run();
    match result_of(&r, "p") {
        CycleResult::Unschedulable { message } => {
            assert!(
                message.contains("0/4 nodes are available") && message.contains("4 stub says no"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Scores are the extender's 0..=10 times its weight times 10
/// (MaxNodeScore / MaxExtenderPriority), added to the plugins' total.
#[test]
fn prioritize_scores_are_weighted_and_scaled() {
    // n-c is half full: the cpu score gives it 50, n-a 100. The extender
    // prefers n-c with `score` at `weight`.
    let cases = [(4, 1, "n-a"), (6, 1, "n-c"), (3, 2, "n-c"), (2, 2, "n-a")];
    for (score, weight, want) in cases {
        let rt = runtime();
        let stub = Stub::new();
        *stub.prefer.lock() = ("c", score);
        let url = serve(&rt, stub.clone());
        let mut e = env(
            rt,
            &format!(
                "[{{urlPrefix: '{url}', prioritizeVerb: prioritize, weight: {weight}, nodeCacheCapable: true}}]"
            ),
        );
        e.add_node("n-a", "4", &[]);
        e.add_node("n-c", "4", &[]);
        e.add_pod(pod("old").req("cpu", "2").on("n-c").build());
        e.add_pod(pod("p").req("cpu", "1").build());
        let r = e.run();
        // 100 vs 50 + 10·score·weight, minus the pod's own request in both.
        assert_eq!(placed(&r, "p"), want, "score {score} weight {weight}");
    }
}

/// The bind extender binds (the Bind plugins do not), with kube-scheduler's
/// ExtenderBindingArgs; its Error fails the bind and the pod is retried.
#[test]
fn binder_extender_binds_instead_of_the_bind_plugins() {
    let rt = runtime();
    let stub = Stub::new();
    let url = serve(&rt, stub.clone());
    let mut e = env(rt, &format!("[{{urlPrefix: '{url}', bindVerb: bind}}]"));
    e.add_node("n-a", "4", &[]);
    e.add_pod(pod("p").namespace("team").req("cpu", "1").build());
    let r = e.run();
    assert_eq!(placed(&r, "p"), "n-a");
    assert_eq!(e.sched.counters().bound, 1);
    assert!(
        e.cluster.binds.lock().is_empty(),
        "the Binder plugin did not bind"
    );
    let b = stub.calls("bind");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["PodName"], "p");
    assert_eq!(b[0]["PodNamespace"], "team");
    assert_eq!(b[0]["Node"], "n-a");
    assert!(b[0]["PodUID"].as_str().is_some_and(|u| !u.is_empty()));

    *stub.bind_error.lock() = "no room at the inn".into();
    e.add_pod(pod("q").req("cpu", "1").build());
    e.run();
    assert_eq!(e.sched.counters().bind_failures, 1);
    let ev = e.events();
    assert!(
        ev.iter().any(|x| x.name.as_ref() == "q"
            && x.reason == "FailedScheduling"
            && x.message.contains(&url)
            && x.message.contains("no room at the inn")),
        "{ev:?}"
    );
}

/// With managedResources only pods asking for one of them go to the
/// extender (requests or limits); the others never reach it.
#[test]
fn managed_resources_route_only_the_pods_that_ask() {
    let rt = runtime();
    let stub = Stub::new();
    let url = serve(&rt, stub.clone());
    let mut e = env(
        rt,
        &format!(
            "[{{urlPrefix: '{url}', filterVerb: filter, bindVerb: bind, nodeCacheCapable: true, managedResources: [{{name: example.com/gpu, ignoredByScheduler: true}}]}}]"
        ),
    );
    for n in ["n-a", "n-bad"] {
        e.add_node(n, "4", &[("example.com/gpu", "4")]);
    }
    e.add_pod(pod("plain").req("cpu", "1").build());
    e.add_pod(
        pod("gpu")
            .req("cpu", "1")
            .req("example.com/gpu", "1")
            .build(),
    );
    let r = e.run();
    assert!(matches!(
        result_of(&r, "plain"),
        CycleResult::Scheduled { .. }
    ));
    assert_eq!(placed(&r, "gpu"), "n-a");
    let pods: Vec<String> = stub
        .calls("filter")
        .iter()
        .map(|a| a["Pod"]["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pods, ["gpu"]);
    let binds = stub.calls("bind");
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0]["PodName"], "gpu");
    // The plain pod was bound by the Bind plugin.
    assert_eq!(e.cluster.binds.lock().len(), 1);
}

/// Every bad behaviour, non-ignorable: the attempt fails naming the
/// extender (FailedScheduling); ignorable: the pod is placed anyway and an
/// ExtenderFailed event names the extender. Each is counted by reason.
#[test]
fn bad_behaviour_gets_the_failure_policy() {
    let cases: [(Option<Filter>, &str, &str); 6] = [
        (
            Some(Filter::Garbage),
            "not a valid ExtenderFilterResult",
            "decode",
        ),
        (Some(Filter::Error), "stub is broken", "remote_error"),
        (
            Some(Filter::Unknown),
            "\"ghost\", which was not a candidate",
            "unknown_node",
        ),
        (Some(Filter::Hang), "no answer within", "timeout"),
        (Some(Filter::Status500), "code 500", "http_status"),
        (None, "filter at", "connect"),
    ];
    for (mode, text, reason) in cases {
        for ignorable in [false, true] {
            let rt = runtime();
            let stub = Stub::new();
            let url = match &mode {
                Some(m) => {
                    *stub.filter.lock() = m.clone();
                    serve(&rt, stub.clone())
                }
                None => closed_port(),
            };
            let mut e = env(
                rt,
                &format!(
                    "[{{urlPrefix: '{url}', filterVerb: filter, nodeCacheCapable: true, httpTimeout: 300ms, ignorable: {ignorable}}}]"
                ),
            );
            four_nodes(&mut e);
            e.add_pod(pod("p").req("cpu", "1").build());
            let r = e.run();
            let ev = e.events();
            let case = format!("{mode:?} ignorable={ignorable}");
            if ignorable {
                assert!(
                    matches!(result_of(&r, "p"), CycleResult::Scheduled { .. }),
                    "{case}: {r:?}"
                );
                assert!(
                    ev.iter().any(|x| x.reason == "ExtenderFailed"
                        && x.kind == EventKind::Warning
                        && x.message.contains(&url)
                        && x.message.contains(text)),
                    "{case}: {ev:?}"
                );
            } else {
                match result_of(&r, "p") {
                    CycleResult::Failed { message } => {
                        assert!(
                            message.contains(&url) && message.contains(text),
                            "{case}: {message}"
                        )
                    }
                    other => panic!("{case}: {other:?}"),
                }
                assert!(
                    ev.iter()
                        .any(|x| x.reason == "FailedScheduling" && x.message.contains(&url)),
                    "{case}: {ev:?}"
                );
            }
            let metrics = strata_extender::metrics::encode();
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with("strata_remote_plugin_errors_total")
                        && l.contains(&url)
                        && l.contains(&format!("reason=\"{reason}\""))),
                "{case}: {metrics}"
            );
        }
    }
}

/// A failing prioritize is skipped (kube-scheduler ignores those errors):
/// the pod is placed by the plugins' scores, with an event; a score out of
/// range is such a failure.
#[test]
fn failing_prioritize_is_skipped() {
    let rt = runtime();
    let stub = Stub::new();
    *stub.prefer.lock() = ("c", 11);
    let url = serve(&rt, stub.clone());
    let mut e = env(
        rt,
        &format!(
            "[{{urlPrefix: '{url}', prioritizeVerb: prioritize, weight: 5, nodeCacheCapable: true}}]"
        ),
    );
    e.add_node("n-a", "4", &[]);
    e.add_node("n-c", "4", &[]);
    e.add_pod(pod("old").req("cpu", "2").on("n-c").build());
    e.add_pod(pod("p").req("cpu", "1").build());
    let r = e.run();
    assert_eq!(placed(&r, "p"), "n-a");
    assert!(
        e.events()
            .iter()
            .any(|x| x.reason == "ExtenderFailed" && x.message.contains("scored 11")),
        "{:?}",
        e.events()
    );
}

/// Configuration errors name the field, at start-up.
#[test]
fn bad_configuration_names_the_field() {
    for (yaml, field) in [
        ("[{urlPrefix: 'ftp://x'}]", "extenders[0].urlPrefix"),
        (
            "[{urlPrefix: 'http://x', prioritizeVerb: p, weight: 0}]",
            "extenders[0].weight",
        ),
        (
            "[{urlPrefix: 'https://x', enableHTTPS: true, tlsConfig: {caFile: /nonexistent/ca.pem}}]",
            "extenders[0].tlsConfig.caFile",
        ),
        (
            "[{urlPrefix: 'https://x', enableHTTPS: true, tlsConfig: {caData: '!!notbase64'}}]",
            "extenders[0].tlsConfig.caData",
        ),
        (
            "[{urlPrefix: 'https://x', enableHTTPS: true, tlsConfig: {certData: 'eA=='}}]",
            "extenders[0].tlsConfig.keyFile",
        ),
    ] {
        let err = try_env(runtime(), yaml).err().unwrap_or_default();
        assert!(err.contains(field), "{yaml}: {err}");
    }
}
