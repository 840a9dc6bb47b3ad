//! The group scaler controller against the fake API server: Strata's
//! adapter with the controller as a leader task (leader election on), a
//! fake Prometheus, a LeaderWorkerSet type registered without a scale
//! subresource (so `spec.replicas` is merge-patched on the object), and the
//! test playing the LWS controller.

mod support;

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use strata_fake_apiserver::{FakeApiServer, Options, ResourceType, fixtures};
use strata_kube::leader::LeaderTask;
use strata_kube::{Adapter, AdapterOptions};
use strata_scaler::controller::config::ScalerConfig;
use strata_scaler::controller::{ControllerStatus, ScalerController};
use strata_scheduler::config::SchedulerConfig;
use support::*;

const SCHED: &str = "strata-scheduler";

fn options() -> AdapterOptions {
    let mut o = AdapterOptions {
        qps: 5000.0,
        burst: 5000,
        http_address: None,
        shutdown_grace: Duration::from_secs(5),
        ..AdapterOptions::default()
    };
    let l = &mut o.leader_election;
    l.enabled = true;
    l.lease_duration = Duration::from_millis(1500);
    l.renew_deadline = Duration::from_millis(1000);
    l.retry_period = Duration::from_millis(200);
    l.lease_namespace = "strata-system".into();
    l.identity = "scaler-api-test".into();
    o
}

struct Rig {
    s: FakeApiServer,
    prom: FakeProm,
    client: kube::Client,
    status: Arc<std::sync::Mutex<ControllerStatus>>,
    a: Adapter,
}

/// The fake API server with two super-nodes of two 8-GPU servers (one
/// exclusive replica of two 8-GPU pods fits per super-node), an opted-in
/// LWS at one replica, a fake Prometheus at `LOW`, and Strata with the
/// controller (period 1 s) as its leader task.
async fn rig() -> Rig {
    let s = FakeApiServer::start_with(Options::default()).expect("fake API server");
    s.create_many(
        "namespaces",
        ["default", "serving", "strata-system"].map(fixtures::namespace),
    )
    .unwrap();
    s.register(ResourceType {
        group: "leaderworkerset.x-k8s.io".into(),
        version: "v1".into(),
        plural: "leaderworkersets".into(),
        kind: "LeaderWorkerSet".into(),
        namespaced: true,
        status_subresource: true,
    });
    // Two super-nodes of two 8-GPU servers: one exclusive replica of two
    // 8-GPU pods per super-node.
    for i in 0..4 {
        let mut n = fixtures::node(&format!("gpu-{i}"), i, 32, 128, 1);
        n["metadata"]["labels"]["strata.io/supernode"] = json!(format!("sn{}", i / 2));
        for f in ["capacity", "allocatable"] {
            n["status"][f]["nvidia.com/gpu"] = json!("8");
        }
        s.create("nodes", n).unwrap();
    }
    s.create(
        "leaderworkersets.leaderworkerset.x-k8s.io",
        lws_object("serving", "llm", SCHED, 1, 2, 8),
    )
    .unwrap();
    let prom = FakeProm::start(LOW).await;
    let client = kube::Client::try_from(kube::Config::new(s.url().parse().unwrap())).unwrap();
    let cfg = SchedulerConfig::from_yaml(
        "podInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 2\nprofiles: [{schedulerName: strata-scheduler}]\n",
    )
    .unwrap();
    let scfg = ScalerConfig::from_value(Some(&scaler_section(&prom.url, "1s"))).unwrap();
    let stores = strata_plugins::pod_group::Stores::default();
    let ctl = Arc::new(ScalerController::new(scfg, stores.pod_groups.clone(), "api-test").unwrap());
    let status = ctl.status();
    let tasks: Vec<Arc<dyn LeaderTask>> = vec![ctl];
    let a = Adapter::start_with_tasks(
        cfg,
        options(),
        client.clone(),
        &stores,
        &strata_scheduler::framework::Registry::new(),
        tasks,
    )
    .await
    .expect("adapter starts");
    Rig {
        s,
        prom,
        client,
        status,
        a,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_an_lws_only_as_far_as_whole_replicas_fit_and_acts_on_nothing_without_metrics() {
    let Rig {
        s,
        prom,
        client,
        status,
        a,
    } = rig().await;
    let lwsc = fake_lws_controller(client.clone(), "serving", "llm");
    let last = |k: &str| status.lock().unwrap().last.get(k).cloned();
    let events = |reason: &str| {
        status
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| e.0 == reason)
            .count()
    };
    let bound = |s: &FakeApiServer| {
        s.list("pods")
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_string())
            .count()
    };
    let t = Duration::from_secs(60);

    // Low load: one replica wanted, one there.
    wait_until("a first decision", t, || async {
        last("serving/llm").is_some_and(|d| d.desired == 1)
    })
    .await;
    assert_eq!(replicas(&client, "serving", "llm").await, 1);
    wait_until("replica 0 bound", t, || async { bound(&s) == 2 }).await;

    // High load: four wanted, only two fit whole (one per super-node).
    prom.set(HIGH);
    wait_until("scale-up to 2", t, || async {
        replicas(&client, "serving", "llm").await == 2
    })
    .await;
    wait_until("ScaleUpLimited", t, || async {
        events("ScaleUpLimited") > 0
    })
    .await;
    wait_until("both replicas bound", t, || async { bound(&s) == 4 }).await;
    let d = last("serving/llm").unwrap();
    assert_eq!(d.desired, 4, "{d:?}");
    assert!(d.note.as_deref().unwrap_or("").contains("no room"), "{d:?}");
    // Each replica inside one super-node, the two in different ones.
    let mut sn_of_replica = std::collections::BTreeMap::new();
    for p in s.list("pods") {
        let node = p["spec"]["nodeName"].as_str().unwrap().to_owned();
        let i: usize = node.trim_start_matches("gpu-").parse().unwrap();
        let r = p["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/group-index"]
            .as_str()
            .unwrap()
            .to_owned();
        sn_of_replica
            .entry(r)
            .or_insert_with(std::collections::BTreeSet::new)
            .insert(i / 2);
    }
    assert_eq!(sn_of_replica.len(), 2, "{sn_of_replica:?}");
    assert!(
        sn_of_replica.values().all(|s| s.len() == 1),
        "{sn_of_replica:?}"
    );
    let sns: std::collections::BTreeSet<_> = sn_of_replica.values().flatten().collect();
    assert_eq!(sns.len(), 2, "{sn_of_replica:?}");
    // Still high and nothing more fits: it stays at two.
    let periods = status.lock().unwrap().periods;
    wait_until("three more periods", t, || async {
        status.lock().unwrap().periods >= periods + 3
    })
    .await;
    assert_eq!(replicas(&client, "serving", "llm").await, 2);
    wait_until("the scale-up measured", t, || async {
        !status.lock().unwrap().scale_ups.is_empty()
    })
    .await;

    // Metrics gone: no action, a Warning event on the LWS.
    prom.set(Answer::Broken);
    wait_until("ScalerMetricsUnavailable", t, || async {
        events("ScalerMetricsUnavailable") > 0
    })
    .await;
    let ev = s
        .list("events.events.k8s.io")
        .into_iter()
        .find(|e| e["reason"] == "ScalerMetricsUnavailable")
        .expect("the event is written");
    assert_eq!(ev["regarding"]["kind"], "LeaderWorkerSet");
    assert_eq!(ev["regarding"]["name"], "llm");
    assert!(ev["note"].as_str().unwrap().contains("HTTP 503"), "{ev}");
    assert_eq!(replicas(&client, "serving", "llm").await, 2);
    prom.set(Answer::Empty);
    wait_until("an empty answer reported", t, || async {
        last("serving/llm")
            .and_then(|d| d.note)
            .is_some_and(|n| n.contains("no series"))
    })
    .await;
    assert_eq!(replicas(&client, "serving", "llm").await, 2);

    // Low again: back to one (LWS drops the highest index).
    prom.set(LOW);
    wait_until("scale-down to 1", t, || async {
        replicas(&client, "serving", "llm").await == 1
    })
    .await;
    wait_until("replica 1's pods gone", t, || async {
        s.count("pods") == 2
    })
    .await;
    let down = status
        .lock()
        .unwrap()
        .events
        .iter()
        .rev()
        .find(|e| e.0 == "ScaledDown")
        .cloned()
        .expect("a ScaledDown event");
    assert!(
        down.2.contains("highest indices") && down.2.contains("strata.io/supernode=sn"),
        "{down:?}"
    );
    lwsc.abort();
    a.shutdown().await;
}

/// Without an LWS controller no pod ever appears: the replicas asked for
/// and not placed are planned first, so the count stops where the what-if
/// says the cluster is full instead of climbing every period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_asked_for_and_not_yet_placed_count_against_the_room() {
    let Rig {
        s: _s,
        prom,
        client,
        status,
        a,
    } = rig().await;
    prom.set(HIGH);
    let t = Duration::from_secs(60);
    wait_until("scale-up to 2", t, || async {
        replicas(&client, "serving", "llm").await == 2
    })
    .await;
    let periods = status.lock().unwrap().periods;
    wait_until("five more periods", t, || async {
        status.lock().unwrap().periods >= periods + 5
    })
    .await;
    assert_eq!(replicas(&client, "serving", "llm").await, 2);
    let d = status.lock().unwrap().last["serving/llm"].clone();
    assert_eq!((d.desired, d.placed), (4, Some(0)), "{d:?}");
    a.shutdown().await;
}
