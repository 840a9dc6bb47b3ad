//! The harness of the end-to-end suites: a real kube-apiserver (the one
//! `testing/control-plane/up.sh` starts, or any cluster with kwok), named by
//! `STRATA_E2E_KUBECONFIG`.
//!
//! [`Cluster::setup`] applies what a user applies — `manifests/deploy/`
//! (namespace, ServiceAccount, RBAC) and `manifests/crds/` — by server-side
//! apply, creates a few kwok nodes, and writes a kubeconfig carrying a token
//! for the `strata-system/strata-scheduler` ServiceAccount (TokenRequest
//! API). Strata runs with that kubeconfig only, so the real RBAC authorizer
//! refuses anything the manifests do not grant; the tests' own reads and
//! writes use the admin kubeconfig.
//!
//! The manifests give the scheduler one Lease (`strata-scheduler` in
//! `strata-system`), so the tests of one binary take turns: `setup` holds a
//! process-wide lock until the `Cluster` is dropped.

#![allow(dead_code)]

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{AuthInfo, Kubeconfig, NamedAuthInfo};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use strata_kube::{Adapter, AdapterOptions};
use strata_scheduler::config::SchedulerConfig;

/// Nodes the harness keeps in the cluster (kwok fakes them).
pub const NODES: usize = 4;
/// The namespace and ServiceAccount of `manifests/deploy/`.
pub const SYSTEM_NS: &str = "strata-system";
pub const SERVICE_ACCOUNT: &str = "strata-scheduler";
/// The Lease the RBAC manifest lets the scheduler hold.
pub const LEASE: &str = "strata-scheduler";

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `STRATA_E2E_KUBECONFIG`, or `None` with a notice on stderr. With
/// `STRATA_E2E_REQUIRED=1` (set by `.ci/run` when it started a control
/// plane) a missing kubeconfig fails the test instead.
pub fn kubeconfig() -> Option<PathBuf> {
    match std::env::var("STRATA_E2E_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var("STRATA_E2E_REQUIRED").as_deref() != Ok("1"),
                "STRATA_E2E_REQUIRED=1 but STRATA_E2E_KUBECONFIG is not set"
            );
            // Written to stderr directly: libtest captures eprintln! of a
            // passing test, and the skip must be visible.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: end-to-end test needs STRATA_E2E_KUBECONFIG (testing/control-plane/up.sh starts a control plane and writes one); see adapter/README.md"
            );
            None
        }
    }
}

/// `rel` in the repository: the nearest folder above the including crate
/// that holds `manifests/` (crates sit one or two levels down).
fn repo_path(rel: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here
        .ancestors()
        .find(|d| d.join("manifests/deploy").is_dir())
        .unwrap_or(here);
    root.join(rel)
}

/// The cluster, set up, and this test's turn on it.
pub struct Cluster {
    /// The admin client (the tests' own calls).
    pub admin: kube::Client,
    /// A kubeconfig for the scheduler's ServiceAccount.
    pub sa_kubeconfig: PathBuf,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Takes this test's turn and makes sure the manifests, CRDs, nodes and
    /// the ServiceAccount token are in place. `None`: no cluster (skipped).
    pub async fn setup() -> Option<Cluster> {
        Some(Cluster::setup_at(&kubeconfig()?).await)
    }

    /// As [`Cluster::setup`], on the cluster of admin kubeconfig `kc`.
    pub async fn setup_at(kc: &Path) -> Cluster {
        let turn = TURN.lock().await;
        let admin = client_from(kc).await;
        for f in [
            "manifests/deploy/00-namespace.yaml",
            "manifests/deploy/01-admission-policy.yaml",
            "manifests/deploy/01-rbac.yaml",
        ] {
            apply_file(&admin, &repo_path(f)).await;
        }
        for f in [
            "manifests/crds/strata.io_podgroups.yaml",
            "manifests/crds/scheduling.x-k8s.io_podgroups.yaml",
        ] {
            apply_file(&admin, &repo_path(f)).await;
        }
        wait_crds_established(
            &admin,
            &["podgroups.strata.io", "podgroups.scheduling.x-k8s.io"],
        )
        .await;
        ensure_nodes(&admin).await;
        let sa_kubeconfig = write_sa_kubeconfig(&admin, kc).await;
        // A Lease left by a killed replica of an earlier test would make
        // this test wait out its duration.
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(admin.clone(), SYSTEM_NS);
        let _ = leases.delete(LEASE, &DeleteParams::default()).await;
        Cluster {
            admin,
            sa_kubeconfig,
            _turn: turn,
        }
    }

    /// Points the ServiceAccount kubeconfig at `server` (a proxy in front of
    /// the API server, say).
    pub fn route_scheduler_through(&mut self, server: &str) {
        let mut kc = Kubeconfig::read_from(&self.sa_kubeconfig).expect("kubeconfig");
        for c in &mut kc.clusters {
            if let Some(c) = c.cluster.as_mut() {
                c.server = Some(server.to_owned());
            }
        }
        let text = serde_yaml_ng::to_string(&kc).expect("kubeconfig YAML");
        std::fs::write(&self.sa_kubeconfig, text).expect("write the kubeconfig");
    }

    /// A fresh namespace `strata-e2e-<tag>-<n>` for this test.
    pub async fn namespace(&self, tag: &str) -> String {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000_000)
            .unwrap_or(0);
        let ns = format!("strata-e2e-{tag}-{suffix}");
        let nss: Api<Namespace> = Api::all(self.admin.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace"),
        )
        .await
        .expect("create the test namespace");
        ns
    }

    /// Adapter options as `strata run` would have them from
    /// `manifests/deploy/02-config.yaml`, with the ServiceAccount's
    /// kubeconfig and fast leader election.
    pub fn options(&self, identity: &str) -> AdapterOptions {
        let mut o = AdapterOptions {
            kubeconfig: Some(self.sa_kubeconfig.clone()),
            http_address: Some("127.0.0.1:0".parse().expect("address")),
            qps: 500.0,
            burst: 500,
            // The tests read /metrics directly; the secure port has a test
            // of its own.
            serving: strata_kube::Serving::Insecure,
            ..AdapterOptions::default()
        };
        let l = &mut o.leader_election;
        l.enabled = true;
        l.lease_namespace = SYSTEM_NS.into();
        l.lease_name = LEASE.into();
        l.identity = identity.into();
        l.lease_duration = Duration::from_secs(4);
        l.renew_deadline = Duration::from_secs(3);
        l.retry_period = Duration::from_millis(500);
        o
    }

    /// Starts Strata as `strata run` does (every in-tree plugin, PodGroups
    /// and DRA objects watched), authenticated as the ServiceAccount.
    pub async fn start(&self, config_yaml: &str, identity: &str) -> Adapter {
        let cfg = SchedulerConfig::from_yaml(config_yaml).expect("scheduler config");
        let opts = self.options(identity);
        let client = strata_kube::make_client(&opts)
            .await
            .expect("client from the ServiceAccount kubeconfig");
        let stores = strata_plugins::pod_group::Stores::default();
        Adapter::start_with_stores(cfg, opts, client, &stores)
            .await
            .expect("adapter starts")
    }

    pub fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), ns)
    }

    /// Creates a pod from JSON in `ns` (tolerating kwok's taint).
    pub async fn create_pod(&self, ns: &str, mut pod: Value) {
        pod["spec"]["tolerations"] = json!([
            {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
        ]);
        let p: Pod = serde_json::from_value(pod).expect("pod JSON");
        self.pods(ns)
            .create(&PostParams::default(), &p)
            .await
            .expect("create pod");
    }

    pub async fn list_pods(&self, ns: &str) -> Vec<Pod> {
        self.pods(ns)
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
    }

    pub async fn bound(&self, ns: &str) -> usize {
        self.list_pods(ns)
            .await
            .iter()
            .filter(|p| node_of(p).is_some())
            .count()
    }

    pub async fn wait_bound(&self, ns: &str, n: usize, timeout: Duration) {
        let t = Instant::now();
        loop {
            let b = self.bound(ns).await;
            if b >= n {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "only {b} of {n} pods bound in {ns} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn events(&self, ns: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), ns);
        events
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
    }

    /// Waits until `pod` has `PodScheduled=False` and returns its message.
    pub async fn wait_unschedulable(&self, ns: &str, pod: &str, timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            let p = self.pods(ns).get(pod).await.expect("get pod");
            if let Some(c) = scheduled_condition(&p)
                && c.status == "False"
            {
                assert_eq!(c.reason.as_deref(), Some("Unschedulable"), "{c:?}");
                return c.message.unwrap_or_default();
            }
            assert!(
                t.elapsed() < timeout,
                "no PodScheduled=False condition on {ns}/{pod} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for a `FailedScheduling` event about `pod`; returns its note.
    pub async fn wait_failed_event(&self, ns: &str, pod: &str, timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            let found = self.events(ns).await.into_iter().find(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
            });
            if let Some(e) = found {
                return e.note.unwrap_or_default();
            }
            assert!(
                t.elapsed() < timeout,
                "no FailedScheduling event for {ns}/{pod} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Deletes the namespace's pods at once (there is no kubelet to wait
    /// for), then the namespace.
    pub async fn cleanup(&self, ns: &str) {
        let _ = self
            .pods(ns)
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default(),
            )
            .await;
        let nss: Api<Namespace> = Api::all(self.admin.clone());
        let _ = nss.delete(ns, &DeleteParams::default()).await;
    }
}

pub fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

pub fn scheduled_condition(p: &Pod) -> Option<k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .cloned()
}

/// A plain pod of `cpu` for scheduler `sched`.
pub fn plain_pod(name: &str, sched: &str, cpu: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": "strata-e2e"}},
        "spec": {
            "schedulerName": sched,
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]
        }
    })
}

/// The scheduler configuration of a test: one profile named `sched`,
/// short backoffs.
pub fn config(sched: &str) -> String {
    format!(
        "podInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 2\nprofiles: [{{schedulerName: {sched}}}]\n"
    )
}

async fn client_from(kc: &Path) -> kube::Client {
    let o = AdapterOptions {
        kubeconfig: Some(kc.to_path_buf()),
        ..AdapterOptions::default()
    };
    strata_kube::make_client(&o)
        .await
        .expect("client from STRATA_E2E_KUBECONFIG")
}

/// Server-side applies every document of a YAML file, as
/// `kubectl apply --server-side` does.
pub async fn apply_file(client: &kube::Client, path: &Path) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if v.is_null() {
            continue;
        }
        apply(client, v).await;
    }
}

/// Server-side applies one object given as JSON.
pub async fn apply(client: &kube::Client, v: Value) {
    let obj: DynamicObject = serde_json::from_value(v).expect("an object with apiVersion and kind");
    let types = obj.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("apiVersion");
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("the API server does not serve {gvk:?}: {e}"));
    let name = obj.metadata.name.clone().expect("metadata.name");
    let api: Api<DynamicObject> = match (&caps.scope, obj.metadata.namespace.as_deref()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        (kube::discovery::Scope::Namespaced, None) => {
            Api::default_namespaced_with(client.clone(), &ar)
        }
        _ => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("strata-e2e").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
}

async fn wait_crds_established(client: &kube::Client, names: &[&str]) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let t = Instant::now();
    for name in names {
        loop {
            let crd = crds.get(name).await.expect("read the CRD");
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "CRD {name} not established"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A kwok node: kwok's annotation and taint, capacity and allocatable set
/// at creation (kwok keeps its status Ready), hostname and zone labels.
pub fn kwok_node(name: &str, zone: &str, cpu: u32, memory_gi: u32) -> Value {
    let res = json!({"cpu": cpu.to_string(), "memory": format!("{memory_gi}Gi"), "pods": "110"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "type": "kwok",
                "topology.kubernetes.io/zone": zone
            }
        },
        "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]},
        "status": {"capacity": res, "allocatable": res}
    })
}

/// A kwok server of 32 cpus, 128Gi and 8 `nvidia.com/gpu`, in `supernode`
/// (`strata.io/supernode`) and its one cabinet `{supernode}-cab`.
pub fn kwok_gpu_node(name: &str, zone: &str, supernode: &str) -> Value {
    let mut n = kwok_node(name, zone, 32, 128);
    n["metadata"]["labels"]["strata.io/supernode"] = json!(supernode);
    n["metadata"]["labels"]["strata.io/cabinet"] = json!(format!("{supernode}-cab"));
    for f in ["capacity", "allocatable"] {
        n["status"][f]["nvidia.com/gpu"] = json!("8");
    }
    n
}

async fn ensure_nodes(client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..NODES {
        let name = format!("strata-e2e-node-{i}");
        if nodes.get_opt(&name).await.expect("read nodes").is_some() {
            continue;
        }
        let n: Node = serde_json::from_value(kwok_node(&name, &format!("zone-{}", i % 2), 32, 128))
            .expect("node JSON");
        match nodes.create(&PostParams::default(), &n).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create node {name}: {e}"),
        }
    }
}

/// Requests a token for the scheduler's ServiceAccount and writes a
/// kubeconfig with it (same server and CA as the admin's).
async fn write_sa_kubeconfig(admin: &kube::Client, admin_kc: &Path) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), SYSTEM_NS);
    let req: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200}
    }))
    .expect("TokenRequest");
    let tr: TokenRequest = sas
        .create_subresource("token", SERVICE_ACCOUNT, &PostParams::default(), &req)
        .await
        .expect("TokenRequest for the scheduler's ServiceAccount");
    let token = tr.status.expect("a token").token;
    let mut kc = Kubeconfig::read_from(admin_kc).expect("admin kubeconfig");
    kc.auth_infos = vec![NamedAuthInfo {
        name: "strata-scheduler".into(),
        auth_info: Some(AuthInfo {
            token: Some(token.into()),
            ..AuthInfo::default()
        }),
        ..NamedAuthInfo::default()
    }];
    for ctx in &mut kc.contexts {
        if let Some(c) = ctx.context.as_mut() {
            c.user = Some("strata-scheduler".into());
        }
    }
    let dir = std::env::temp_dir().join(format!("strata-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("scheduler.kubeconfig");
    let text = serde_yaml_ng::to_string(&kc).expect("kubeconfig YAML");
    std::fs::write(&path, text).expect("write the ServiceAccount kubeconfig");
    path
}

/// The adapter's `/metrics` text.
pub fn metrics(a: &Adapter) -> String {
    use std::io::{Read, Write};
    let addr = a.http_addr().expect("the adapter serves HTTP");
    let mut c = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let _ = write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

/// The sum of a metric's samples whose label set contains `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every pod named in a `Scheduled` event at most once.
pub fn assert_scheduled_once(events: &[Event]) {
    let mut per_pod = std::collections::HashMap::new();
    for e in events
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
}

/// A `strata.io/v1alpha1` or `scheduling.x-k8s.io/v1alpha1` PodGroup API.
pub fn pod_groups(client: &kube::Client, ns: &str, group: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, "v1alpha1", "PodGroup"),
        "podgroups",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// A control plane of a test's own, started with
/// `testing/control-plane/up.sh` (the binaries `build.sh` made), stopped
/// on drop (and by up.sh's watcher should the test process die).
pub struct OwnControlPlane {
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
    pub etcd_url: String,
}

impl OwnControlPlane {
    /// `None` (with a notice) when the control plane's binaries are not
    /// built here; with `STRATA_E2E_REQUIRED=1` that fails instead.
    pub fn start(tag: &str, apiserver_args: &[&str]) -> Option<OwnControlPlane> {
        let dir = repo_path("testing/control-plane");
        let bin = std::process::Command::new(dir.join("build.sh"))
            .arg("--print-bin-dir")
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        let built = bin
            .as_ref()
            .is_some_and(|b| b.join("kube-apiserver").exists());
        if !built {
            assert!(
                std::env::var("STRATA_E2E_REQUIRED").as_deref() != Ok("1"),
                "STRATA_E2E_REQUIRED=1 but the control plane is not built (testing/control-plane/build.sh)"
            );
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: this end-to-end test starts its own control plane and needs testing/control-plane/build.sh to have built it"
            );
            return None;
        }
        let state = std::env::temp_dir().join(format!("strata-cp-{tag}-{}", std::process::id()));
        let mut cmd = std::process::Command::new(dir.join("up.sh"));
        cmd.arg(&state)
            .arg("--kwok")
            .arg("--watch-pid")
            .arg(std::process::id().to_string());
        for a in apiserver_args {
            cmd.arg("--apiserver-arg").arg(a);
        }
        let out = cmd.output().expect("run up.sh");
        assert!(
            out.status.success(),
            "up.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(state.join("env")).expect("up.sh's env file");
        let var = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {k}=")))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{k} missing from up.sh's env"))
        };
        Some(OwnControlPlane {
            kubeconfig: PathBuf::from(var("KUBECONFIG")),
            etcd_url: var("ETCD_URL"),
            state,
        })
    }

    /// Compacts etcd up to its current revision (physically), as
    /// kube-apiserver's periodic compaction does; returns the revision.
    pub fn compact_etcd(&self) -> i64 {
        let addr = self.etcd_url.trim_start_matches("http://").to_owned();
        let range = http_post(&addr, "/v3/kv/range", r#"{"key":"AA==","limit":1}"#);
        let v: Value = serde_json::from_str(&range).expect("etcd range answer");
        let rev: i64 = v["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("etcd revision");
        let body = format!(r#"{{"revision":"{rev}","physical":true}}"#);
        let out = http_post(&addr, "/v3/kv/compaction", &body);
        let v: Value = serde_json::from_str(&out).expect("etcd compaction answer");
        assert!(
            v.get("header").is_some(),
            "etcd refused the compaction: {out}"
        );
        rev
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo_path("testing/control-plane/down.sh"))
            .arg(&self.state)
            .status();
    }
}

/// A plain HTTP/1.1 POST of JSON; returns the body.
fn http_post(addr: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("connect to etcd");
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write to etcd");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("read etcd's answer");
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // etcd's gateway may answer chunked: keep the JSON object.
    match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_owned(),
        _ => body.to_owned(),
    }
}

/// A TCP proxy in front of the API server that the test can cut: while cut,
/// live connections are dropped and new ones refused, as when the network
/// between the scheduler and its API server fails.
pub struct CuttableProxy {
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> CuttableProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let (cut2, conns2) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                conns2.lock().unwrap_or_else(|e| e.into_inner()).push(h);
            }
        });
        CuttableProxy {
            addr,
            cut,
            conns,
            accept,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Sends `sig` (`STOP`, `CONT`, `KILL`, ...) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Who holds the scheduler's Lease (`None` when nobody does).
pub async fn lease_holder(c: &Cluster) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.admin.clone(), SYSTEM_NS);
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}
