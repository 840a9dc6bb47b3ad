//! End-to-end checks on a real cluster (kind or kwok), run only when
//! `STRATA_E2E_KUBECONFIG` names a kubeconfig; skipped, with a notice on
//! stderr, otherwise. See adapter/README.md for how to run them.
//!
//! Each test works in a namespace of its own (`strata-e2e-*`, deleted at
//! the end) and with a scheduler name of its own, so a Strata already
//! deployed in the cluster does not take its pods. The pods tolerate the
//! taints kind's control plane and kwok's fake nodes carry.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use strata_kube::{Adapter, AdapterOptions};
use strata_scheduler::config::SchedulerConfig;

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var("STRATA_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            // Written to stderr directly: libtest captures eprintln! of a
            // passing test, and the skip must be visible.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: end-to-end test needs STRATA_E2E_KUBECONFIG (a kind or kwok cluster's kubeconfig); see adapter/README.md"
            );
            None
        }
    }
}

struct Env {
    client: kube::Client,
    ns: String,
    sched: String,
    kubeconfig: PathBuf,
}

impl Env {
    async fn new(kc: PathBuf, tag: &str) -> Env {
        let o = AdapterOptions {
            kubeconfig: Some(kc.clone()),
            ..AdapterOptions::default()
        };
        let client = strata_kube::make_client(&o)
            .await
            .expect("client from STRATA_E2E_KUBECONFIG");
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000_000;
        let ns = format!("strata-e2e-{tag}-{suffix}");
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("create the test namespace");
        Env {
            client,
            sched: format!("strata-e2e-{tag}"),
            ns,
            kubeconfig: kc,
        }
    }

    fn options(&self, identity: &str) -> AdapterOptions {
        let mut o = AdapterOptions {
            kubeconfig: Some(self.kubeconfig.clone()),
            http_address: Some("127.0.0.1:0".parse().unwrap()),
            ..AdapterOptions::default()
        };
        let l = &mut o.leader_election;
        l.lease_namespace = self.ns.clone();
        l.lease_name = self.sched.clone();
        l.identity = identity.into();
        l.lease_duration = Duration::from_secs(4);
        l.renew_deadline = Duration::from_secs(3);
        l.retry_period = Duration::from_millis(500);
        o
    }

    async fn start(&self, identity: &str) -> Adapter {
        let cfg =
            SchedulerConfig::from_yaml(&format!("profiles: [{{schedulerName: {}}}]\n", self.sched))
                .unwrap();
        Adapter::start(cfg, self.options(identity), self.client.clone(), Vec::new())
            .await
            .expect("adapter starts")
    }

    /// Starts the scheduler as `strata run` does (PodGroups and DRA objects
    /// watched when served).
    async fn start_full(&self, identity: &str) -> Adapter {
        let cfg =
            SchedulerConfig::from_yaml(&format!("profiles: [{{schedulerName: {}}}]\n", self.sched))
                .unwrap();
        let stores = strata_plugins::pod_group::Stores::default();
        Adapter::start_with_stores(cfg, self.options(identity), self.client.clone(), &stores)
            .await
            .expect("adapter starts")
    }

    /// Creates pod `name` of group `group`; `min` sets the inline group's
    /// `strata.io/min-member` (none: the group is a PodGroup object).
    async fn create_member(&self, name: &str, group: &str, min: Option<u32>) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let mut p = json!({
            "metadata": {"name": name, "labels": {"app": "strata-e2e", "strata.io/pod-group": group}},
            "spec": {
                "schedulerName": self.sched,
                "tolerations": [
                    {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
                ],
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}}}]
            }
        });
        if let Some(m) = min {
            p["metadata"]["annotations"] = json!({"strata.io/min-member": m.to_string()});
        }
        pods.create(&PostParams::default(), &serde_json::from_value(p).unwrap())
            .await
            .expect("create pod");
    }

    async fn create_pods(&self, n: usize, cpu: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        for i in 0..n {
            let p = json!({
                "metadata": {"name": format!("p-{cpu}-{i}").replace(['.', 'm'], "x"), "labels": {"app": "strata-e2e"}},
                "spec": {
                    "schedulerName": self.sched,
                    "tolerations": [
                        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]
                }
            });
            pods.create(&PostParams::default(), &serde_json::from_value(p).unwrap())
                .await
                .expect("create pod");
        }
    }

    async fn pods(&self) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        pods.list(&ListParams::default())
            .await
            .expect("list pods")
            .items
    }

    async fn bound(&self) -> usize {
        self.pods()
            .await
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count()
    }

    async fn wait_bound(&self, n: usize, timeout: Duration) {
        let t = Instant::now();
        loop {
            let b = self.bound().await;
            if b >= n {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "only {b} of {n} pods bound after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn cleanup(self) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let _ = nss.delete(&self.ns, &DeleteParams::default()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_schedules_reports_and_records_events() {
    let Some(kc) = kubeconfig() else { return };
    let env = Env::new(kc, "basic").await;
    env.create_pods(20, "10m").await;
    env.create_pods(1, "100000").await;
    let a = env.start("e2e-basic").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    env.wait_bound(20, Duration::from_secs(120)).await;
    // The impossible pod: PodScheduled=False, Unschedulable, and an event.
    let t = Instant::now();
    loop {
        let pods = env.pods().await;
        let huge = pods
            .iter()
            .find(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("p-100000"))
            })
            .unwrap();
        let cond = huge
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .cloned();
        if let Some(c) = cond {
            assert_eq!(c.status, "False");
            assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no PodScheduled condition on the unschedulable pod"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let t = Instant::now();
    loop {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        let scheduled = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count();
        let failed = evs
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedScheduling"));
        if scheduled >= 20 && failed {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "events missing: {scheduled} Scheduled, FailedScheduling {failed}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    a.shutdown().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_leader_killed_mid_run_every_pod_bound_once() {
    let Some(kc) = kubeconfig() else { return };
    let env = Env::new(kc, "failover").await;
    let a = env.start("e2e-a").await;
    let t = Instant::now();
    while !a.is_leader() {
        assert!(t.elapsed() < Duration::from_secs(30), "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = env.start("e2e-b").await;
    assert!(b.wait_ready(Duration::from_secs(120)).await);
    env.create_pods(60, "5m").await;
    let t = Instant::now();
    while env.bound().await < 10 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the leader binds nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.kill();
    env.wait_bound(60, Duration::from_secs(120)).await;
    assert!(b.is_leader());
    // Bound exactly once: the API refuses a second binding (409), so each
    // pod has one node and one Scheduled event at most.
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    let mut per_pod = std::collections::HashMap::new();
    for e in evs
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
    {
        let name = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        *per_pod.entry(name).or_insert(0) += 1;
    }
    assert!(
        per_pod.values().all(|n| *n == 1),
        "a pod was reported bound twice: {per_pod:?}"
    );
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let l = leases.get(&env.sched).await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("e2e-b"));
    b.shutdown().await;
    env.cleanup().await;
}

/// A gang written as pod annotations: nothing is bound while fewer than
/// `minMember` members exist, then all of them are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_gang_binds_all_members_or_none() {
    let Some(kc) = kubeconfig() else { return };
    let env = Env::new(kc, "gang").await;
    let a = env.start_full("e2e-gang").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    env.create_member("g-0", "g", Some(3)).await;
    env.create_member("g-1", "g", Some(3)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        env.bound().await,
        0,
        "a gang member was bound before minMember existed"
    );
    env.create_member("g-2", "g", Some(3)).await;
    env.wait_bound(3, Duration::from_secs(60)).await;
    a.shutdown().await;
    env.cleanup().await;
}

/// A `strata.io/v1alpha1` PodGroup (its CRD installed from
/// `manifests/crds/` when the cluster lacks it): its members are bound and
/// the leader writes the group's status back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_podgroup_status_is_written_back() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let Some(kc) = kubeconfig() else { return };
    let env = Env::new(kc, "podgroup").await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let installed = crds
        .get_opt("podgroups.strata.io")
        .await
        .expect("read CRDs")
        .is_none();
    if installed {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/crds/strata.io_podgroups.yaml");
        let text = std::fs::read_to_string(&path).expect("the CRD manifest");
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).expect("CRD yaml");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("install the CRD");
    }
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("strata.io", "v1alpha1", "PodGroup"),
        "podgroups",
    );
    let groups: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &ar);
    // The CRD may take a moment to be served.
    let t = Instant::now();
    while groups.list(&ListParams::default()).await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "PodGroup API not served"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "strata.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "pg"},
        "spec": {"minMember": 2}
    }))
    .unwrap();
    groups
        .create(&PostParams::default(), &obj)
        .await
        .expect("create the PodGroup");
    let a = env.start_full("e2e-podgroup").await;
    assert!(a.wait_ready(Duration::from_secs(120)).await, "not ready");
    env.create_member("pg-0", "pg", None).await;
    env.create_member("pg-1", "pg", None).await;
    env.wait_bound(2, Duration::from_secs(60)).await;
    let t = Instant::now();
    loop {
        let g = groups.get("pg").await.expect("the PodGroup");
        let phase = g.data["status"]["phase"].as_str().unwrap_or("").to_owned();
        if phase == "Running" {
            assert_eq!(g.data["status"]["running"], json!(2));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "PodGroup status not written: {:?}",
            g.data.get("status")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    a.shutdown().await;
    env.cleanup().await;
    if installed {
        let _ = crds
            .delete("podgroups.strata.io", &DeleteParams::default())
            .await;
    }
}
