//! Failure paths at the API, against the in-process API server: binds
//! whose answer is lost or late, a Lease renewal behind a backlog of
//! writes, a replica that lost its Lease, and annotation writes racing
//! another scheduler.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use strata_fake_apiserver::{FakeApiServer, fixtures};
use strata_kube::client::RateLimiter;
use strata_kube::leader::Gate;
use strata_kube::metrics::Metrics;
use strata_kube::port::KubeCluster;
use strata_kube::{Adapter, AdapterOptions};
use strata_scheduler::cluster::ClusterPort;
use strata_scheduler::engine::RunControl;
use strata_scheduler::model::PodInfo;

async fn start_with(s: &FakeApiServer, opts: AdapterOptions) -> Adapter {
    Adapter::start(config(), opts, client(s), Vec::new())
        .await
        .expect("adapter starts")
}

fn lease(s: &FakeApiServer) -> serde_json::Value {
    s.get(
        "leases.coordination.k8s.io",
        "strata-system",
        "strata-scheduler",
    )
    .expect("the Lease exists")
}

/// Writes that change pods or claims (not events, not the Lease).
fn pod_writes(s: &FakeApiServer) -> Vec<String> {
    s.requests()
        .into_iter()
        .filter(|r| {
            matches!(r.call.verb.as_str(), "create" | "patch" | "update")
                && (r.call.resource.starts_with("pods") || r.call.resource.contains("claims"))
        })
        .map(|r| format!("{} {} {:?}", r.call.verb, r.call.resource, r.name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_committed_then_answered_500_counts_as_bound_once() {
    let s = server();
    s.create_many("nodes", fixtures::nodes(5)).unwrap();
    s.create_many("pods", fixtures::pending_pods("work", 20, SCHED))
        .unwrap();
    // The API server commits these bindings, then the answer is lost.
    s.fail_next_binds_after_commit(5);
    let a = start(&s, "a", false).await;
    wait_for(
        "the scheduler counts 20 binds",
        Duration::from_secs(30),
        || a.metrics().binds_with("bound") == 20,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(binds_per_uid(&s).len(), 20);
    assert!(binds_per_uid(&s).values().all(|n| *n == 1));
    assert_eq!(s.bindings().len(), 20, "no bind was retried");
    assert_eq!(
        a.metrics().binds_with("error"),
        0,
        "a committed bind read as failed"
    );
    assert_eq!(a.metrics().binds_with("conflict"), 0);
    assert_eq!(s.bind_conflicts(), 0, "a retry ran into its own bind");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_answered_late_is_read_back_after_the_bind_timeout() {
    let s = server();
    s.create_many("nodes", fixtures::nodes(5)).unwrap();
    s.create_many("pods", fixtures::pending_pods("work", 20, SCHED))
        .unwrap();
    // Committed, answered only after two minutes: far past the bind
    // timeout, far short of the client's 330 s read timeout.
    s.stall_next_binds_after_commit(4, Duration::from_secs(120));
    let mut o = options("a", false);
    o.bind_timeout = Duration::from_millis(500);
    let a = start_with(&s, o).await;
    wait_for(
        "the scheduler counts 20 binds, the stalled ones read back",
        Duration::from_secs(30),
        || a.metrics().binds_with("bound") == 20,
    )
    .await;
    assert!(binds_per_uid(&s).values().all(|n| *n == 1));
    assert_eq!(s.bindings().len(), 20);
    assert_eq!(a.metrics().binds_with("error"), 0);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_behind_a_backlog_of_binds() {
    let s = server();
    s.create_many("nodes", fixtures::nodes(5)).unwrap();
    // A client budget of 5 writes/s against 150 binds: about 30 s of
    // backlog, twenty times the Lease duration.
    let mut o = options("a", true);
    o.qps = 5.0;
    o.burst = 5;
    let a = start_with(&s, o).await;
    wait_for("a leads", Duration::from_secs(20), || a.is_leader()).await;
    for p in fixtures::pending_pods("work", 150, SCHED) {
        s.create("pods", p).unwrap();
    }
    wait_for("binds under way", Duration::from_secs(20), || {
        !s.bindings().is_empty()
    })
    .await;
    let transitions = lease(&s)["spec"]["leaseTransitions"].clone();
    for _ in 0..80 {
        assert!(
            a.is_leader() && !a.lost_leadership(),
            "leadership lost while binds queued (Lease: {})",
            lease(&s)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = lease(&s);
    assert_eq!(l["spec"]["holderIdentity"], "a");
    assert_eq!(l["spec"]["leaseTransitions"], transitions);
    assert!(
        s.bindings().len() < 150,
        "the backlog should still be there"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_lease_writes_nothing_more() {
    let s = server();
    s.create_many("nodes", fixtures::nodes(5)).unwrap();
    let mut o = options("a", true);
    o.qps = 10.0;
    o.burst = 1;
    let a = start_with(&s, o).await;
    wait_for("a leads", Duration::from_secs(20), || a.is_leader()).await;
    for p in fixtures::pending_pods("work", 100, SCHED) {
        s.create("pods", p).unwrap();
    }
    wait_for("some binds", Duration::from_secs(20), || {
        s.bindings().len() >= 5
    })
    .await;
    // Another replica takes the Lease (as after a partition: this one's
    // renewals did not reach the API server in time).
    // Retried while a's renewals race the write (409).
    wait_for("the Lease taken", Duration::from_secs(5), || {
        let mut l = lease(&s);
        let now = chrono_now();
        let transitions = l["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
        l["spec"]["holderIdentity"] = json!("intruder");
        l["spec"]["acquireTime"] = json!(now);
        l["spec"]["renewTime"] = json!(now);
        l["spec"]["leaseDurationSeconds"] = json!(3600);
        l["spec"]["leaseTransitions"] = json!(transitions + 1);
        s.update("leases.coordination.k8s.io", l).is_ok()
    })
    .await;
    wait_for("a gives up", Duration::from_secs(10), || {
        a.lost_leadership()
    })
    .await;
    assert!(!a.is_leader());
    s.record_requests(true);
    let at_loss = s.bindings().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A bind that had passed the leadership check just before the loss
    // may still land; nothing starts after.
    assert!(
        s.bindings().len() <= at_loss + 1,
        "{} binds after losing the Lease",
        s.bindings().len() - at_loss
    );
    let writes = pod_writes(&s);
    assert!(
        writes.iter().filter(|w| w.contains("binding")).count() <= 1
            && writes.iter().all(|w| w.contains("binding")),
        "writes after losing the Lease: {writes:?}"
    );
    assert!(
        s.bindings().len() < 100,
        "everything was bound before the loss"
    );
    assert_eq!(
        lease(&s)["spec"]["holderIdentity"],
        "intruder",
        "the lost replica campaigned again"
    );
    a.shutdown().await;
}

/// RFC 3339 with microseconds, as Lease times are written.
fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

fn port(s: &FakeApiServer, leader: bool) -> (KubeCluster, Arc<Gate>) {
    let metrics = Arc::new(Metrics::new());
    let gate = Arc::new(Gate::new(Arc::new(RunControl::new()), metrics.clone()));
    gate.set_leader(leader);
    let port = KubeCluster::new(
        client(s),
        Arc::new(RateLimiter::new(1000.0, 1000)),
        metrics,
        Arc::new(RateLimiter::new(1000.0, 1000)),
        16,
        "test".into(),
        gate.clone(),
    );
    (port, gate)
}

fn info(v: &serde_json::Value) -> PodInfo {
    PodInfo::compile(&serde_json::from_value(v.clone()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_are_written_only_onto_the_same_unbound_pod() {
    let s = server();
    s.create_many("nodes", fixtures::nodes(2)).unwrap();
    let (port, gate) = port(&s, true);
    let ann: BTreeMap<String, String> = [(
        "strata.io/device-assignment".to_owned(),
        "{\"a\":1}".to_owned(),
    )]
    .into();

    // A pod without annotations: the map is made.
    let mut bare = fixtures::pod("work", "bare", SCHED, 100, 64, None);
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let bare = info(&s.create("pods", bare).unwrap());
    port.patch_pod_annotations(&bare, &ann).await.unwrap();
    let got = s.get("pods", "work", "bare").unwrap();
    assert_eq!(
        got["metadata"]["annotations"]["strata.io/device-assignment"],
        "{\"a\":1}"
    );

    // A pod with annotations: the key joins them, none is lost.
    let p = info(
        &s.create("pods", fixtures::pod("work", "p", SCHED, 100, 64, None))
            .unwrap(),
    );
    port.patch_pod_annotations(&p, &ann).await.unwrap();
    let got = s.get("pods", "work", "p").unwrap();
    assert_eq!(got["metadata"]["annotations"].as_object().unwrap().len(), 2);

    // Someone annotated the pod after the informer's copy: both kept (the
    // first attempt's precondition fails, the second adds the key).
    let late = info(&{
        let mut v = fixtures::pod("work", "late", SCHED, 100, 64, None);
        v["metadata"].as_object_mut().unwrap().remove("annotations");
        s.create("pods", v).unwrap()
    });
    let mut v = s.get("pods", "work", "late").unwrap();
    v["metadata"]["annotations"] = json!({"team": "x"});
    s.update("pods", v).unwrap();
    port.patch_pod_annotations(&late, &ann).await.unwrap();
    let got = s.get("pods", "work", "late").unwrap();
    assert_eq!(got["metadata"]["annotations"]["team"], "x");
    assert_eq!(
        got["metadata"]["annotations"]["strata.io/device-assignment"],
        "{\"a\":1}"
    );

    // Bound by someone else since the informer's copy: refused, unwritten.
    let q = info(
        &s.create("pods", fixtures::pod("work", "q", SCHED, 100, 64, None))
            .unwrap(),
    );
    let mut v = s.get("pods", "work", "q").unwrap();
    v["spec"]["nodeName"] = json!("node-1");
    s.update("pods", v).unwrap();
    let e = port.patch_pod_annotations(&q, &ann).await.unwrap_err();
    assert!(e.0.contains("bound to node-1 by someone else"), "{e}");
    let got = s.get("pods", "work", "q").unwrap();
    assert!(got["metadata"]["annotations"]["strata.io/device-assignment"].is_null());

    // Replaced under the same name: refused.
    s.delete("pods", "work", "p").unwrap();
    s.create("pods", fixtures::pod("work", "p", SCHED, 100, 64, None))
        .unwrap();
    let e = port.patch_pod_annotations(&p, &ann).await.unwrap_err();
    assert!(e.0.contains("was replaced"), "{e}");

    // Not the leader: refused before any request.
    gate.set_leader(false);
    s.record_requests(true);
    let e = port.patch_pod_annotations(&bare, &ann).await.unwrap_err();
    assert!(e.0.contains("no longer holds the leader Lease"), "{e}");
    assert!(s.requests().is_empty(), "{:?}", s.requests());
    let e = port
        .bind(&bare, strata_scheduler::intern::Sym::from("node-0"))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("leader Lease"), "{e:?}");
    assert!(s.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_fails_at_once_is_retried_with_backoff() {
    let s = server();
    s.create_many("nodes", fixtures::nodes(2)).unwrap();
    let a = start(&s, "a", false).await;
    assert!(a.wait_ready(Duration::from_secs(10)).await);
    s.record_requests(true);
    // Every watch from now on opens and ends with an ERROR event (500).
    s.fail_next_watches(u64::MAX);
    s.interrupt_watches();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut per_resource: BTreeMap<String, usize> = BTreeMap::new();
    for r in s.requests().iter().filter(|r| r.call.verb == "watch") {
        *per_resource.entry(r.call.resource.clone()).or_default() += 1;
    }
    assert!(!per_resource.is_empty());
    // Back-off 0.2, 0.4, 0.8, 1.6 s: about five watches each in 3 s (a
    // spinning informer makes hundreds).
    assert!(
        per_resource.values().all(|n| *n <= 8),
        "watches per resource in 3 s: {per_resource:?}"
    );
    // Healthy again: the informers come back and a new pod is scheduled.
    s.fail_next_watches(0);
    s.create(
        "pods",
        fixtures::pod("work", "after-0", SCHED, 100, 64, None),
    )
    .unwrap();
    wait_for("the new pod bound", Duration::from_secs(30), || {
        s.bindings().len() == 1
    })
    .await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_pods_are_not_scheduled_and_hold_their_node_until_gone() {
    let s = server();
    // One node with room for one 1-CPU pod.
    s.create("nodes", fixtures::node("only", 0, 1, 64, 1))
        .unwrap();
    let a = start(&s, "a", false).await;
    assert!(a.wait_ready(Duration::from_secs(10)).await);
    let with_finalizer = |name: &str, node: Option<&str>| {
        let mut p = fixtures::pod("work", name, SCHED, 1000, 64, node);
        p["metadata"]["finalizers"] = json!(["example.com/hold"]);
        p
    };
    // A bound pod marked for deletion, kept by its finalizer: its CPU is
    // still taken.
    s.create("pods", with_finalizer("old", Some("only")))
        .unwrap();
    s.delete("pods", "work", "old").unwrap();
    assert!(
        !s.get("pods", "work", "old").unwrap()["metadata"]["deletionTimestamp"].is_null(),
        "the fake server keeps a pod with a finalizer"
    );
    // A pending pod marked for deletion: never attempted.
    s.create("pods", with_finalizer("going", None)).unwrap();
    s.delete("pods", "work", "going").unwrap();
    s.create("pods", fixtures::pod("work", "new", SCHED, 1000, 64, None))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.bindings().is_empty(), "{:?}", s.bindings());
    // The finalizers go: "old" is deleted, its CPU frees, "new" binds;
    // "going" is deleted without ever being bound.
    for name in ["old", "going"] {
        let mut v = s.get("pods", "work", name).unwrap();
        v["metadata"]["finalizers"] = json!([]);
        s.update("pods", v).unwrap();
        assert!(s.get("pods", "work", name).is_none());
    }
    wait_for("new bound", Duration::from_secs(30), || {
        s.bindings().len() == 1
    })
    .await;
    assert_eq!(s.bindings()[0].pod, "work/new");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_committed_then_answered_504_and_repeated_counts_as_bound() {
    let s = server();
    s.create_many("nodes", fixtures::nodes(5)).unwrap();
    s.create_many("pods", fixtures::pending_pods("work", 20, SCHED))
        .unwrap();
    // Committed, then 504: the client repeats the bind (kube's retry
    // policy does for 504) and the repeat is refused 409, "already
    // assigned" — to the node this scheduler chose.
    s.fail_next_binds_after_commit_with(5, 504);
    let a = start(&s, "a", false).await;
    wait_for(
        "the scheduler counts 20 binds",
        Duration::from_secs(30),
        || a.metrics().binds_with("bound") == 20,
    )
    .await;
    assert!(binds_per_uid(&s).values().all(|n| *n == 1));
    assert_eq!(s.bindings().len(), 20);
    assert!(s.bind_conflicts() >= 5, "the client repeated the binds");
    assert_eq!(a.metrics().binds_with("conflict"), 0);
    assert_eq!(a.metrics().binds_with("error"), 0);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answered_429_are_repeated_after_their_retry_after() {
    let s = server();
    s.create_many("nodes", fixtures::nodes(5)).unwrap();
    let a = start(&s, "a", false).await;
    assert!(a.wait_ready(Duration::from_secs(10)).await);
    s.record_requests(true);
    // The next 15 writes (binds, condition patches) are throttled; the
    // client (kube's server-aware retry policy) waits the Retry-After and
    // repeats them.
    s.throttle_next_writes(15, 1);
    for p in fixtures::pending_pods("work", 20, SCHED) {
        s.create("pods", p).unwrap();
    }
    wait_for("20 bound", Duration::from_secs(60), || {
        a.metrics().binds_with("bound") == 20
    })
    .await;
    let throttled = s.requests().iter().filter(|r| r.code == 429).count();
    assert_eq!(throttled, 15);
    assert!(binds_per_uid(&s).values().all(|n| *n == 1));
    assert_eq!(s.bindings().len(), 20);
    assert_eq!(
        a.metrics().binds_with("error"),
        0,
        "a throttled bind counted as failed"
    );
    a.shutdown().await;
}
