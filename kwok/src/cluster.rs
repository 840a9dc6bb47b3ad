//! The API calls of a run: creating nodes and pods many at a time,
//! following bindings by watch, reading `/metrics`, cleaning up.
//!
//! Creates go through a bounded number of in-flight requests (a semaphore),
//! so the API server is kept busy without an unbounded burst of
//! connections. Bindings are learnt from a watch on the run's namespace: the
//! first event showing a pod with `spec.nodeName` is its bind time; an event
//! showing a different node for a pod already seen bound is a double bind
//! (the API forbids it, so any count above zero is a finding).
//!
//! There is no kube-controller-manager on the local control plane, so
//! nothing finalizes a deleted namespace or collects pods: cleanup deletes
//! the pods itself (grace period 0, since kwok's kubelet stand-in may not
//! confirm), then the namespace, then finalizes the namespace if it is
//! still there.

use crate::objects::{PlannedPod, RUN_LABEL};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A failed API call, naming what it was for.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        /// The call, e.g. `creating node gpu-3`.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Nodes of the scenario exist already.
    #[error(
        "node {0} already exists (left by an earlier run with --keep? `kubectl delete nodes -l {RUN_LABEL}` removes those)"
    )]
    NodeExists(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Api { what, source }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Creates `nodes`, `concurrency` at a time.
pub async fn create_nodes(
    client: &kube::Client,
    nodes: Vec<Node>,
    concurrency: usize,
) -> Result<(), ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    let results = futures::stream::iter(nodes)
        .map(|n| {
            let api = api.clone();
            async move {
                let name = n.metadata.name.clone().unwrap_or_default();
                let created = match api.create(&PostParams::default(), &n).await {
                    Ok(c) => c,
                    Err(e) if is_code(&e, 409) => return Err(ClusterError::NodeExists(name)),
                    Err(e) => return Err(api_err(format!("creating node {name}"))(e)),
                };
                untaint_not_ready(&api, &created, &n).await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

/// The taint the API server's TaintNodesByCondition admission puts on every
/// new node; kube-controller-manager's node lifecycle controller removes it
/// once the node reports Ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Plays the node lifecycle controller for a node just created: when the
/// API server added the not-ready taint, put back the taints asked for
/// (kwok reports the node Ready at once; without kube-controller-manager
/// nothing else would ever lift the taint, and no pod would fit).
async fn untaint_not_ready(
    api: &Api<Node>,
    created: &Node,
    asked: &Node,
) -> Result<(), ClusterError> {
    let taints = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
    };
    let have = taints(created);
    if !have.iter().any(|t| t.key == NOT_READY_TAINT) {
        return Ok(());
    }
    let want: Vec<_> = have
        .into_iter()
        .filter(|t| t.key != NOT_READY_TAINT)
        .collect();
    debug_assert_eq!(want.len(), taints(asked).len());
    let name = created.metadata.name.clone().unwrap_or_default();
    let patch = serde_json::json!({"spec": {"taints": want}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err(format!(
            "removing the not-ready taint of node {name}"
        )))?;
    Ok(())
}

/// Creates namespace `name`, labelled with the run.
pub async fn create_namespace(
    client: &kube::Client,
    name: &str,
    run: &str,
) -> Result<(), ClusterError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some([(RUN_LABEL.to_owned(), run.to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .map_err(api_err(format!("creating namespace {name}")))?;
    Ok(())
}

/// When each pod's create was sent, by its index in the plan.
pub type SentTimes = Arc<Mutex<Vec<Option<Instant>>>>;

/// A new, empty [`SentTimes`] for `n` pods.
pub fn sent_times(n: usize) -> SentTimes {
    Arc::new(Mutex::new(vec![None; n]))
}

/// Creates the planned pods, each at `start + at` (its arrival), at most
/// `concurrency` in flight. Records when each create was sent. Pods that
/// fail to create are counted and the first error kept.
pub async fn create_pods(
    client: &kube::Client,
    plan: &[PlannedPod],
    concurrency: usize,
    start: Instant,
    sent: SentTimes,
) -> (usize, Option<ClusterError>) {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let failures = Arc::new(Mutex::new((0usize, None::<ClusterError>)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in plan.iter().enumerate() {
        tokio::time::sleep_until(start + p.at).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let ns = p.pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod = p.pod.clone();
        let sent = sent.clone();
        let failures = failures.clone();
        tasks.spawn(async move {
            sent.lock()[i] = Some(Instant::now());
            if let Err(e) = api.create(&PostParams::default(), &pod).await {
                let name = pod.metadata.name.unwrap_or_default();
                let mut f = failures.lock();
                f.0 += 1;
                if f.1.is_none() {
                    f.1 = Some(api_err(format!("creating pod {ns}/{name}"))(e));
                }
            }
            drop(permit);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut f = failures.lock();
    (f.0, f.1.take())
}

/// One pod's bind as the watch saw it.
#[derive(Clone, Debug)]
pub struct Bound {
    /// When the watch delivered it.
    pub at: Instant,
    /// The node.
    pub node: String,
}

/// What the watch has seen so far.
#[derive(Debug, Default)]
pub struct BindLog {
    /// Pod name → index in the plan.
    index: HashMap<String, usize>,
    /// Per planned pod, its bind.
    pub bound: Vec<Option<Bound>>,
    /// Binds seen.
    pub bound_count: usize,
    /// Pods seen bound to a second, different node.
    pub double_binds: usize,
}

impl BindLog {
    /// A log for pods named `names`, in plan order.
    pub fn new(names: impl IntoIterator<Item = String>) -> BindLog {
        let index: HashMap<String, usize> =
            names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
        let n = index.len();
        BindLog {
            index,
            bound: vec![None; n],
            ..Default::default()
        }
    }

    /// Records what an event says of `pod`.
    pub fn observe(&mut self, pod: &Pod, at: Instant) {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            return;
        };
        let Some(&i) = pod.metadata.name.as_ref().and_then(|n| self.index.get(n)) else {
            return;
        };
        match &self.bound[i] {
            None => {
                self.bound[i] = Some(Bound {
                    at,
                    node: node.to_owned(),
                });
                self.bound_count += 1;
            }
            Some(b) if b.node != node => self.double_binds += 1,
            Some(_) => {}
        }
    }
}

/// Follows binds in `namespace` into `log` until dropped (abort the task).
pub fn watch_binds(
    client: &kube::Client,
    namespace: &str,
    log: Arc<Mutex<BindLog>>,
    progress: tokio::sync::watch::Sender<usize>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    tokio::spawn(async move {
        let mut rv: Option<String> = None;
        loop {
            let version = match &rv {
                Some(v) => v.clone(),
                None => {
                    // (Re)list: every pod counts as an event.
                    match api.list(&ListParams::default()).await {
                        Ok(list) => {
                            let now = Instant::now();
                            let mut l = log.lock();
                            for p in &list.items {
                                l.observe(p, now);
                            }
                            let _ = progress.send(l.bound_count);
                            list.metadata.resource_version.unwrap_or_default()
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "listing pods failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    }
                }
            };
            rv = Some(version.clone());
            let wp = WatchParams::default().timeout(290);
            let stream = match api.watch(&wp, &version).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "watching pods failed; listing again");
                    rv = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(WatchEvent::Added(p)) | Ok(WatchEvent::Modified(p)) => {
                        let mut l = log.lock();
                        l.observe(&p, Instant::now());
                        let _ = progress.send(l.bound_count);
                        rv = p.metadata.resource_version.clone();
                    }
                    Ok(WatchEvent::Deleted(p)) => rv = p.metadata.resource_version.clone(),
                    Ok(WatchEvent::Bookmark(b)) => rv = Some(b.metadata.resource_version),
                    Ok(WatchEvent::Error(s)) => {
                        tracing::debug!(code = s.code, message = %s.message, "watch ended");
                        rv = None;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "watch stream failed; resuming");
                        break;
                    }
                }
            }
        }
    })
}

/// Waits until `want` pods are bound, `deadline` passes, or nothing new is
/// bound for `idle` once `creating_done` says every create was sent.
pub async fn wait_bound(
    mut progress: tokio::sync::watch::Receiver<usize>,
    want: usize,
    deadline: Instant,
    idle: Duration,
    creating_done: impl Fn() -> bool,
) {
    let mut last_change = Instant::now();
    let mut last = *progress.borrow();
    loop {
        if last >= want || Instant::now() >= deadline {
            return;
        }
        let tick = tokio::time::sleep(Duration::from_millis(200));
        tokio::select! {
            r = progress.changed() => {
                if r.is_err() { return; }
                let now = *progress.borrow();
                if now != last {
                    last = now;
                    last_change = Instant::now();
                }
            }
            _ = tick => {
                if creating_done() && last_change.elapsed() >= idle {
                    return;
                }
            }
        }
    }
}

/// Waits until no pod of `namespace` is short of phase Running (kwok has
/// caught up with the pods bound so far), or `timeout` passes. False on
/// timeout.
pub async fn wait_running(
    client: &kube::Client,
    namespace: &str,
    timeout: Duration,
) -> Result<bool, ClusterError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default()
        .fields("status.phase!=Running")
        .limit(1);
    let deadline = Instant::now() + timeout;
    loop {
        let page = api
            .list(&lp)
            .await
            .map_err(api_err(format!("listing pods in {namespace}")))?;
        if page.items.is_empty() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Every pod of `namespace`.
pub async fn list_pods(client: &kube::Client, namespace: &str) -> Result<Vec<Pod>, ClusterError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(2000);
    loop {
        let page = api
            .list(&lp)
            .await
            .map_err(api_err(format!("listing pods in {namespace}")))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

/// Every node of run `run`.
pub async fn list_nodes(client: &kube::Client, run: &str) -> Result<Vec<Node>, ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut out = Vec::new();
    let mut lp = ListParams::default()
        .labels(&format!("{RUN_LABEL}={run}"))
        .limit(2000);
    loop {
        let page = api.list(&lp).await.map_err(api_err("listing nodes"))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

/// Deletes every pod of `namespace` at once (grace period 0) and waits
/// until they are gone.
pub async fn delete_pods(client: &kube::Client, namespace: &str) -> Result<(), ClusterError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dp = DeleteParams::default().grace_period(0);
    let left = |api: Api<Pod>| async move {
        api.list(&ListParams::default().limit(1))
            .await
            .map(|l| !l.items.is_empty())
            .map_err(api_err(format!("listing pods in {namespace}")))
    };
    // Deleting ten thousand pods can take the API server longer than its
    // request timeout (60 s) on a small machine: the call then fails (504,
    // or the connection is closed) after deleting part of them. Each call
    // makes progress, so it is repeated while pods are left.
    let mut last = None;
    for _ in 0..30 {
        match api.delete_collection(&dp, &ListParams::default()).await {
            Ok(_) => {
                // Deleted with grace 0: gone at once, or soon.
                for _ in 0..600 {
                    if !left(api.clone()).await? {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(e) => {
                tracing::warn!(namespace, error = %e, "deleting pods did not finish in one call; repeating");
                last = Some(e);
                if !left(api.clone()).await? {
                    return Ok(());
                }
            }
        }
    }
    match last {
        Some(e) => Err(api_err(format!("deleting the pods of {namespace}"))(e)),
        None => Ok(()),
    }
}

/// Deletes namespace `name` (its pods first), finalizing it when no
/// namespace controller does.
pub async fn delete_namespace(client: &kube::Client, name: &str) -> Result<(), ClusterError> {
    delete_pods(client, name).await?;
    let api: Api<Namespace> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_code(&e, 404) => return Ok(()),
        Err(e) => return Err(api_err(format!("deleting namespace {name}"))(e)),
    }
    for _ in 0..20 {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(api_err(format!("reading namespace {name}"))(e)),
        }
    }
    // Still terminating: no namespace controller; finalize it ourselves.
    if let Some(mut ns) = api
        .get_opt(name)
        .await
        .map_err(api_err(format!("reading namespace {name}")))?
    {
        if let Some(spec) = ns.spec.as_mut() {
            spec.finalizers = Some(Vec::new());
        }
        match api
            .replace_subresource("finalize", name, &PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(e) if is_code(&e, 404) => {}
            Err(e) => return Err(api_err(format!("finalizing namespace {name}"))(e)),
        }
    }
    Ok(())
}

/// Deletes the nodes of run `run`.
pub async fn delete_nodes(client: &kube::Client, run: &str) -> Result<(), ClusterError> {
    let api: Api<Node> = Api::all(client.clone());
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&format!("{RUN_LABEL}={run}")),
    )
    .await
    .map_err(api_err("deleting the run's nodes"))?;
    Ok(())
}

/// The API server's `/metrics` text.
pub async fn apiserver_metrics(client: &kube::Client) -> Result<String, ClusterError> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a constant request builds");
    client
        .request_text(req)
        .await
        .map_err(api_err("reading the API server's /metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.spec = Some(Default::default());
        p.spec.as_mut().unwrap().node_name = node.map(Into::into);
        p
    }

    #[test]
    fn bind_log_counts_first_binds_and_double_binds() {
        let mut l = BindLog::new(["a".to_owned(), "b".to_owned()]);
        let t = Instant::now();
        l.observe(&pod("a", None), t);
        assert_eq!(l.bound_count, 0);
        l.observe(&pod("a", Some("n1")), t);
        l.observe(&pod("a", Some("n1")), t + Duration::from_secs(1));
        assert_eq!(l.bound_count, 1);
        assert_eq!(l.bound[0].as_ref().unwrap().at, t);
        l.observe(&pod("a", Some("n2")), t);
        assert_eq!(l.double_binds, 1);
        l.observe(&pod("stranger", Some("n1")), t);
        assert_eq!(l.bound_count, 1);
        l.observe(&pod("b", Some("n3")), t);
        assert_eq!(l.bound_count, 2);
    }
}
