//! PodGroups from the API server reach the PodGroup plugin: a coscheduling
//! group (`scheduling.x-k8s.io/v1alpha1`) holds its members until
//! `minMember` of them exist, then they are bound together; a cluster that
//! does not serve a PodGroup API still starts.
//!
//! And the plugin's status reaches the objects: the leader merge-patches
//! the `status` subresource of both APIs (pending with the reason, then
//! scheduled with the counts; a failure reason for a group that cannot
//! fit); a standby writes nothing until it leads; a group whose object is
//! gone is dropped after one 404, and a 5xx is retried with the latest
//! status; shutdown writes the last changes.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use strata_fake_apiserver::{FakeApiServer, ResourceType, fixtures};
use strata_kube::Adapter;
use strata_kube::client::RateLimiter;
use strata_kube::groups::{PodGroupHandler, StatusWriter, StatusWriterTask};
use strata_plugins::pod_group::{GroupApi, GroupKey, PodGroupStore, Stores};
use strata_scheduler::intern::Sym;

const STRATA: &str = "podgroups.strata.io";
const COSCHED: &str = "podgroups.scheduling.x-k8s.io";

fn member(name: &str) -> Value {
    let mut p = fixtures::pod("work", name, SCHED, 100, 128, None);
    p["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] = json!("trainers");
    p
}

/// A member of Strata's group `group`, asking for `cpu_m` millicores.
fn strata_member(group: &str, name: &str, cpu_m: u32) -> Value {
    let mut p = fixtures::pod("work", name, SCHED, cpu_m, 128, None);
    p["metadata"]["labels"]["strata.io/pod-group"] = json!(group);
    p
}

fn strata_group(name: &str, min: u32) -> Value {
    json!({"apiVersion": "strata.io/v1alpha1", "kind": "PodGroup",
           "metadata": {"name": name, "namespace": "work"},
           "spec": {"minMember": min, "scheduleTimeoutSeconds": 30}})
}

fn cosched_group(name: &str, min: u32) -> Value {
    json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
           "metadata": {"name": name, "namespace": "work"},
           "spec": {"minMember": min, "scheduleTimeoutSeconds": 30}})
}

/// A server serving both PodGroup APIs, with four nodes of 8 CPUs.
fn server_with_groups() -> FakeApiServer {
    let s = server();
    s.register(
        ResourceType::new("strata.io", "v1alpha1", "podgroups", "PodGroup", true)
            .with_status_subresource(),
    );
    s.register(
        ResourceType::new(
            "scheduling.x-k8s.io",
            "v1alpha1",
            "podgroups",
            "PodGroup",
            true,
        )
        .with_status_subresource(),
    );
    s.create_many(
        "nodes",
        (0..4)
            .map(|i| fixtures::node(&format!("n{i}"), i, 8, 32, 1))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    s
}

/// The object's status (Null when there is none).
fn status_of(s: &FakeApiServer, resource: &str, name: &str) -> Value {
    s.get(resource, "work", name)
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

/// Waits until the object's status satisfies `f`, showing the last one
/// seen on timeout.
async fn wait_status(
    s: &FakeApiServer,
    resource: &str,
    name: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let t = std::time::Instant::now();
    loop {
        let st = status_of(s, resource, name);
        if f(&st) {
            return st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; {resource} {name} status: {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wrote_group_status(s: &FakeApiServer) -> bool {
    s.calls()
        .iter()
        .any(|c| c.verb == "patch" && c.resource == "podgroups/status")
}

async fn start_with_stores(
    s: &FakeApiServer,
    stores: &Stores,
    identity: &str,
    leader: bool,
) -> Adapter {
    let c = client(s);
    let custom = strata_kube::groups::pod_group_resources(&c, &stores.pod_groups).await;
    let registry = strata_plugins::registry_with(stores);
    Adapter::start_with_registry(config(), options(identity, leader), c, custom, registry)
        .await
        .expect("adapter starts")
}

async fn start_with_groups(s: &FakeApiServer) -> Adapter {
    start_with_stores(s, &Stores::default(), "g", false).await
}

/// Holds the Lease for someone else for an hour, so a replica started
/// with leader election stays a standby until the test gives it up.
fn hold_lease(s: &FakeApiServer) {
    let now = jiff::Timestamp::now().to_string();
    s.create(
        "leases.coordination.k8s.io",
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "strata-scheduler", "namespace": "strata-system"},
               "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                        "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}),
    )
    .unwrap();
}

fn release_lease(s: &FakeApiServer) {
    let mut l = s
        .get(
            "leases.coordination.k8s.io",
            "strata-system",
            "strata-scheduler",
        )
        .expect("lease");
    l["spec"]["holderIdentity"] = Value::Null;
    l["spec"]["leaseDurationSeconds"] = json!(1);
    s.update("leases.coordination.k8s.io", l).unwrap();
}

fn key(api: GroupApi, name: &str) -> GroupKey {
    GroupKey {
        api,
        namespace: Sym::new("work"),
        name: Sym::new(name),
    }
}

async fn wait_store_members(store: &PodGroupStore, k: GroupKey, members: u32) {
    wait_for(
        &format!("{k} with {members} members in the standby's store"),
        Duration::from_secs(30),
        || store.status(&k).is_some_and(|st| st.members == members),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coscheduling_group_binds_all_or_nothing() {
    let s = server();
    // Only the coscheduling CRD is installed; the Strata one is not served.
    s.register(
        ResourceType::new(
            "scheduling.x-k8s.io",
            "v1alpha1",
            "podgroups",
            "PodGroup",
            true,
        )
        .with_status_subresource(),
    );
    s.create_many(
        "nodes",
        (0..4)
            .map(|i| fixtures::node(&format!("n{i}"), i, 8, 32, 1))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    s.create(
        "podgroups.scheduling.x-k8s.io",
        json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
               "metadata": {"name": "trainers", "namespace": "work"},
               "spec": {"minMember": 3, "scheduleTimeoutSeconds": 30}}),
    )
    .unwrap();
    let a = start_with_groups(&s).await;
    assert!(
        a.wait_ready(Duration::from_secs(30)).await,
        "ready without the strata.io PodGroup API"
    );

    // Two of three members: nobody is bound.
    s.create("pods", member("trainer-0")).unwrap();
    s.create("pods", member("trainer-1")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        s.bindings()
            .iter()
            .all(|b| !b.pod.starts_with("work/trainer")),
        "a partial group must not be bound: {:?}",
        s.bindings()
    );

    // The third arrives: all three are bound, each once.
    s.create("pods", member("trainer-2")).unwrap();
    wait_for("all three members bound", Duration::from_secs(30), || {
        s.bindings()
            .iter()
            .filter(|b| b.pod.starts_with("work/trainer"))
            .count()
            == 3
    })
    .await;
    assert!(binds_per_uid(&s).values().all(|n| *n == 1));
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_writes_both_apis_status_pending_then_scheduled() {
    let s = server_with_groups();
    s.create(STRATA, strata_group("gang", 3)).unwrap();
    s.create(COSCHED, cosched_group("trainers", 3)).unwrap();
    let a = start_with_groups(&s).await;
    assert!(a.wait_ready(Duration::from_secs(30)).await);

    // Two of three members: pending, and the Strata object says why.
    for i in 0..2 {
        s.create("pods", strata_member("gang", &format!("gang-{i}"), 100))
            .unwrap();
        s.create("pods", member(&format!("trainer-{i}"))).unwrap();
    }
    let st = wait_status(&s, STRATA, "gang", "gang pending with 2 members", |st| {
        st["members"] == 2
    })
    .await;
    assert_eq!(st["phase"], "Pending", "{st}");
    assert_eq!(st["placed"], 0, "{st}");
    assert_eq!(st["running"], 0, "{st}");
    assert_eq!(
        st["message"], "waiting for members: 2 of minMember 3 exist",
        "{st}"
    );
    let st = wait_status(&s, COSCHED, "trainers", "trainers pending", |st| {
        st["phase"] == "Pending"
    })
    .await;
    assert!(
        st.get("scheduled").is_none_or(|v| v == 0),
        "nothing is scheduled yet: {st}"
    );
    assert!(s.bindings().is_empty(), "{:?}", s.bindings());

    // The third members: all bound, and both objects say so with counts.
    s.create("pods", strata_member("gang", "gang-2", 100))
        .unwrap();
    s.create("pods", member("trainer-2")).unwrap();
    wait_for("six members bound", Duration::from_secs(30), || {
        s.bindings().len() == 6
    })
    .await;
    let st = wait_status(&s, STRATA, "gang", "gang bound", |st| {
        st["phase"] == "Bound"
    })
    .await;
    assert_eq!(st["members"], 3, "{st}");
    assert_eq!(st["placed"], 3, "{st}");
    assert_eq!(st["bound"], 3, "{st}");
    assert_eq!(st["running"], 0, "nothing started yet: {st}");
    assert!(st.get("lastFailure").is_none(), "{st}");
    assert_eq!(
        st["message"], "3 members bound, 0 running (minMember 3)",
        "{st}"
    );
    assert!(
        st["scheduleStartTime"]
            .as_str()
            .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
        "{st}"
    );
    let st = wait_status(&s, COSCHED, "trainers", "trainers scheduled", |st| {
        st["phase"] == "Scheduled"
    })
    .await;
    assert_eq!(st["scheduled"], 3, "{st}");
    // Only fields of the published coscheduling status.
    for k in st.as_object().unwrap().keys() {
        assert!(
            ["phase", "scheduled", "running", "scheduleStartTime"].contains(&k.as_str()),
            "{k} in {st}"
        );
    }

    // The kubelet starts the members (pod phase Running): both objects
    // count them and say Running.
    for name in [
        "gang-0",
        "gang-1",
        "gang-2",
        "trainer-0",
        "trainer-1",
        "trainer-2",
    ] {
        let mut p = s.get("pods", "work", name).expect("the member");
        p["status"]["phase"] = json!("Running");
        s.update("pods", p).unwrap();
    }
    let st = wait_status(&s, STRATA, "gang", "gang running", |st| {
        st["phase"] == "Running"
    })
    .await;
    assert_eq!(st["running"], 3, "{st}");
    assert_eq!(st["message"], "3 members running (minMember 3)", "{st}");
    let st = wait_status(&s, COSCHED, "trainers", "trainers running", |st| {
        st["phase"] == "Running"
    })
    .await;
    assert_eq!(st["running"], 3, "{st}");

    // A group object deleted under the writer: no crash, no retry storm;
    // other groups are still written.
    s.delete(STRATA, "work", "gang").unwrap();
    s.delete("pods", "work", "gang-0").unwrap();
    s.create(STRATA, strata_group("later", 2)).unwrap();
    s.create("pods", strata_member("later", "later-0", 100))
        .unwrap();
    wait_status(&s, STRATA, "later", "a later group written", |st| {
        st["members"] == 1
    })
    .await;
    assert!(s.get(STRATA, "work", "gang").is_none(), "not recreated");
    a.shutdown().await;
    // Both status writes are listed for RBAC.
    for group in ["strata.io", "scheduling.x-k8s.io"] {
        assert!(
            strata_kube::API_CALLS
                .iter()
                .any(|c| c.verb == "patch" && c.group == group && c.resource == "podgroups/status"),
            "{group}"
        );
        assert!(
            s.calls()
                .iter()
                .any(|c| c.verb == "patch" && c.group == group && c.resource == "podgroups/status"),
            "{group}: {:?}",
            s.calls()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_larger_than_the_cluster_gets_a_failure_reason() {
    let s = server_with_groups();
    // Four nodes fit one 6-CPU member each; the group needs five.
    s.create(STRATA, strata_group("huge", 5)).unwrap();
    let a = start_with_groups(&s).await;
    assert!(a.wait_ready(Duration::from_secs(30)).await);
    for i in 0..5 {
        s.create("pods", strata_member("huge", &format!("huge-{i}"), 6000))
            .unwrap();
    }
    let st = wait_status(&s, STRATA, "huge", "a failure reason", |st| {
        st["lastFailure"].is_string()
    })
    .await;
    assert!(
        st["phase"] == "Unschedulable" || st["phase"] == "Invalid",
        "{st}"
    );
    assert_eq!(st["members"], 5, "{st}");
    assert_eq!(st["placed"], 0, "{st}");
    assert_eq!(st["message"], st["lastFailure"], "{st}");
    assert!(s.bindings().is_empty(), "{:?}", s.bindings());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_writes_no_status_until_it_leads() {
    let s = server_with_groups();
    hold_lease(&s);
    s.create(STRATA, strata_group("gang", 3)).unwrap();
    let stores = Stores::default();
    let a = start_with_stores(&s, &stores, "standby", true).await;
    assert!(a.wait_ready(Duration::from_secs(30)).await);
    assert!(!a.is_leader());
    for i in 0..2 {
        s.create("pods", strata_member("gang", &format!("gang-{i}"), 100))
            .unwrap();
    }
    // The standby's store is warm...
    wait_store_members(&stores.pod_groups, key(GroupApi::Strata, "gang"), 2).await;
    // ... but it writes nothing over several write intervals.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!wrote_group_status(&s), "{:?}", s.calls());
    assert!(status_of(&s, STRATA, "gang").is_null());

    // Once it leads, it writes what it kept.
    release_lease(&s);
    wait_for("leadership", Duration::from_secs(10), || a.is_leader()).await;
    let st = wait_status(
        &s,
        STRATA,
        "gang",
        "status written by the new leader",
        |st| st["members"] == 2,
    )
    .await;
    assert_eq!(st["phase"], "Pending", "{st}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_objects_are_dropped_and_server_errors_retried_with_the_latest() {
    let s = server_with_groups();
    // A standby replica computes statuses into the store and never drains
    // it; this test drains it with its own writer.
    hold_lease(&s);
    s.create(STRATA, strata_group("here", 5)).unwrap();
    let stores = Stores::default();
    let a = start_with_stores(&s, &stores, "standby", true).await;
    assert!(a.wait_ready(Duration::from_secs(30)).await);
    // "gone" is in the store but not (any more) on the server.
    stores
        .pod_groups
        .upsert_object(&strata_group("gone", 5))
        .unwrap();
    for i in 0..2 {
        s.create("pods", strata_member("here", &format!("here-{i}"), 100))
            .unwrap();
        s.create("pods", strata_member("gone", &format!("gone-{i}"), 100))
            .unwrap();
    }
    let store = &stores.pod_groups;
    wait_store_members(store, key(GroupApi::Strata, "here"), 2).await;
    wait_store_members(store, key(GroupApi::Strata, "gone"), 2).await;
    // Without kube's own retry of 503s, so they reach the writer.
    let mut cfg = kube::Config::new(s.url().parse().unwrap());
    cfg.default_retry = false;
    let mut w = StatusWriter::new(
        kube::Client::try_from(cfg).unwrap(),
        Arc::new(RateLimiter::new(100.0, 10)),
        store.clone(),
        vec![GroupApi::Strata, GroupApi::Coscheduling],
    );
    let r = w.flush().await;
    assert_eq!(
        (r.written, r.gone, r.retry, r.failed),
        (1, 1, 0, 0),
        "{r:?}"
    );
    assert_eq!(status_of(&s, STRATA, "here")["members"], 2);
    // The 404 is not retried, and the object's own status update coming
    // back through the watch is not written again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = w.flush().await;
    assert_eq!(
        (r.written, r.gone, r.retry, r.failed),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(w.pending(), 0);

    // A server error keeps the write; a newer status replaces it, and the
    // next round writes the newest.
    s.create("pods", strata_member("here", "here-2", 100))
        .unwrap();
    wait_store_members(store, key(GroupApi::Strata, "here"), 3).await;
    s.set_unavailable(true);
    let r = w.flush().await;
    s.set_unavailable(false);
    assert_eq!((r.written, r.retry), (0, 1), "{r:?}");
    assert_eq!(w.pending(), 1);
    s.create("pods", strata_member("here", "here-3", 100))
        .unwrap();
    wait_store_members(store, key(GroupApi::Strata, "here"), 4).await;
    let r = w.flush().await;
    assert_eq!((r.written, r.retry), (1, 0), "{r:?}");
    assert_eq!(status_of(&s, STRATA, "here")["members"], 4);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_the_last_changes() {
    let s = server_with_groups();
    s.create(STRATA, strata_group("gang", 3)).unwrap();
    let stores = Stores::default();
    // A writer that would wait an hour between rounds: only the flush at
    // shutdown can write.
    let writer = Arc::new(StatusWriterTask::new(
        stores.pod_groups.clone(),
        vec![GroupApi::Strata],
        Duration::from_secs(3600),
    ));
    let handler = PodGroupHandler::new(
        stores.pod_groups.clone(),
        "strata.io",
        "v1alpha1",
        GroupApi::Strata,
    )
    .with_leader_task(writer);
    let custom = vec![strata_kube::CustomResource {
        api_resource: kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("strata.io", "v1alpha1", "PodGroup"),
            "podgroups",
        ),
        kind: strata_plugins::pod_group::KIND,
        handler: Arc::new(handler),
    }];
    let a = Adapter::start_with_registry(
        config(),
        options("g", false),
        client(&s),
        custom,
        strata_plugins::registry_with(&stores),
    )
    .await
    .expect("adapter starts");
    assert!(a.wait_ready(Duration::from_secs(30)).await);
    for i in 0..2 {
        s.create("pods", strata_member("gang", &format!("gang-{i}"), 100))
            .unwrap();
    }
    wait_store_members(&stores.pod_groups, key(GroupApi::Strata, "gang"), 2).await;
    assert!(status_of(&s, STRATA, "gang").is_null());
    a.shutdown().await;
    let st = status_of(&s, STRATA, "gang");
    assert_eq!(st["members"], 2, "{st}");
    assert_eq!(st["phase"], "Pending", "{st}");
}
