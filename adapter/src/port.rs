//! The engine's [`ClusterPort`] over the Kubernetes API: binds through the
//! `pods/binding` subresource, publishes the `PodScheduled` condition with a
//! strategic merge patch of `pods/status`, deletes preemption victims with a
//! UID precondition, and records `events.k8s.io/v1` events.
//!
//! Two calls serve PreBind plugins, both made before the pod is bound:
//! - [`ClusterPort::patch_pod_annotations`]: a JSON merge patch of the pod's
//!   `metadata.annotations` (the Devices plugin's assignment for the node
//!   agent), with the pod's uid as a precondition. A pod that is gone (404)
//!   or was recreated under its name (409) is an error: binding it cannot
//!   work.
//! - [`ClusterPort::update_resource_claim_status`]: a PUT of
//!   `resourceclaims/{name}/status` (`resource.k8s.io/v1`) carrying the
//!   claim's `resourceVersion`, so a claim changed since the plugin read it
//!   gives 409 Conflict, which the plugin sees as an error (the pod is
//!   retried against the newer claim); nothing is overwritten blindly. An
//!   allocation is first protected by the [`CLAIM_FINALIZER`] (a merge
//!   patch of `metadata.finalizers`, guarded by the same resourceVersion),
//!   as kube-scheduler does.
//!
//! Limits that keep 100,000 pending pods from flooding the API server:
//! - every write waits on the client rate limit ([`RateLimiter`]);
//! - a pod's condition is patched only when it differs from the last one
//!   this replica patched for that pod (kube-scheduler does the same);
//! - events go through a bounded queue with a budget of their own, and an
//!   event identical to one sent for the same pod in the last
//!   [`EVENT_DEDUP_WINDOW`] is not sent again; what does not fit is dropped
//!   and counted (`strata_events_dropped_total`), never blocking the engine.

use crate::client::RateLimiter;
use crate::leader::Gate;
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::resource::v1::ResourceClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use strata_scheduler::cluster::{
    BindError, ClusterError, ClusterPort, EventKind, PodCondition, PodEvent,
};
use strata_scheduler::intern::Sym;
use strata_scheduler::model::PodInfo;

/// How long an identical event for the same pod is suppressed.
pub const EVENT_DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Longest event note the API accepts.
const MAX_NOTE: usize = 1024;
/// The finalizer that keeps an allocated ResourceClaim until it is
/// deallocated (Kubernetes' `resource.kubernetes.io/delete-protection`).
pub const CLAIM_FINALIZER: &str = "resource.kubernetes.io/delete-protection";
/// Remembered conditions beyond which the memory is cleared.
const MAX_REMEMBERED_CONDITIONS: usize = 500_000;
/// How long one `pods/binding` call may take by default. The client's
/// read timeout (330 s, for watches) is far too long to hold a binding
/// slot.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an unanswered bind is read back before its outcome is given up
/// as unknown.
const BIND_RESOLVE_FOR: Duration = Duration::from_secs(60);

/// The Kubernetes implementation of the engine's port.
pub struct KubeCluster {
    client: kube::Client,
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    events: tokio::sync::mpsc::Sender<PodEvent>,
    last_condition: Mutex<FxHashMap<Arc<str>, u64>>,
    /// Set when the replica is killed: every call fails at once.
    dead: Arc<AtomicBool>,
    /// Leadership: no write starts once this replica stops leading.
    gate: Arc<Gate>,
    /// How long one `pods/binding` call may take before its outcome is
    /// treated as unknown and read back from the API.
    bind_timeout: Duration,
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl KubeCluster {
    /// A port over `client`. Spawns the event writer on the current
    /// runtime.
    pub fn new(
        client: kube::Client,
        limiter: Arc<RateLimiter>,
        metrics: Arc<Metrics>,
        event_limiter: Arc<RateLimiter>,
        event_queue: usize,
        reporting_instance: String,
        gate: Arc<Gate>,
    ) -> KubeCluster {
        let (tx, rx) = tokio::sync::mpsc::channel(event_queue.max(1));
        let dead = Arc::new(AtomicBool::new(false));
        tokio::spawn(event_writer(
            client.clone(),
            rx,
            event_limiter,
            metrics.clone(),
            reporting_instance,
            dead.clone(),
        ));
        KubeCluster {
            client,
            limiter,
            metrics,
            events: tx,
            last_condition: Mutex::new(FxHashMap::default()),
            dead,
            gate,
            bind_timeout: BIND_TIMEOUT,
        }
    }

    /// Sets how long one bind call may take (default [`BIND_TIMEOUT`]).
    pub fn set_bind_timeout(&mut self, d: Duration) {
        self.bind_timeout = d;
    }

    /// Makes every later call fail (a crashed replica).
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    fn pods(&self, ns: Sym) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns.as_str())
    }

    /// Whether this replica may write: not killed, and still the leader
    /// (checked again after each wait on the rate limiter, so a replica
    /// that lost its Lease starts no PreBind write and no bind).
    fn check_alive(&self) -> Result<(), String> {
        if self.dead.load(Ordering::SeqCst) {
            Err("this scheduler replica was stopped".into())
        } else if !self.gate.is_leader() {
            Err("this scheduler replica no longer holds the leader Lease".into())
        } else {
            Ok(())
        }
    }

    /// After a bind whose answer was lost (timeout, 5xx, cut connection),
    /// reads the pod back until the API says what happened: bound to
    /// `node` (the bind took effect), bound elsewhere or gone (final), or
    /// still unbound (safe to retry). Never assumes.
    async fn resolve_bind(&self, pod: &PodInfo, node: Sym, cause: &str) -> Result<(), BindError> {
        let api = self.pods(pod.namespace);
        let mut wait = Duration::from_millis(200);
        let deadline = Instant::now() + BIND_RESOLVE_FOR;
        loop {
            let read = tokio::time::timeout(self.bind_timeout, api.get_opt(&pod.name)).await;
            match read {
                Ok(Ok(None)) => {
                    return Err(BindError::NotFound(format!(
                        "{}: gone after an unanswered bind ({cause})",
                        pod.key()
                    )));
                }
                Ok(Ok(Some(p))) if p.metadata.uid.as_deref() != Some(&*pod.uid) => {
                    return Err(BindError::NotFound(format!(
                        "{}: replaced after an unanswered bind ({cause})",
                        pod.key()
                    )));
                }
                Ok(Ok(Some(p))) => {
                    let bound = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
                    return match bound {
                        Some(n) if n == node.as_str() => {
                            tracing::info!(pod = %pod.key(), node = %node, cause, "bind answered with an error, but the pod is bound: treated as bound");
                            Ok(())
                        }
                        Some(other) => Err(BindError::Conflict(format!(
                            "{}: bound to {other} by someone else ({cause})",
                            pod.key()
                        ))),
                        None => Err(BindError::Other(format!(
                            "{}: {cause}; the pod is not bound",
                            pod.key()
                        ))),
                    };
                }
                Ok(Err(e)) if api_code(&e) == Some(404) => {
                    return Err(BindError::NotFound(format!(
                        "{}: gone after an unanswered bind ({cause})",
                        pod.key()
                    )));
                }
                Ok(Err(_)) | Err(_) => {}
            }
            if Instant::now() >= deadline {
                // Still unknown: report a plain failure (the pod is retried;
                // a bind that did take effect makes the retry's bind 409).
                return Err(BindError::Other(format!(
                    "{}: {cause}; reading the pod back failed for {BIND_RESOLVE_FOR:?}, outcome unknown",
                    pod.key()
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

#[async_trait::async_trait]
impl ClusterPort for KubeCluster {
    async fn bind(&self, pod: &PodInfo, node: Sym) -> Result<(), BindError> {
        self.check_alive().map_err(BindError::Other)?;
        self.limiter.acquire().await;
        self.check_alive().map_err(BindError::Other)?;
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(pod.name.to_string()),
                namespace: Some(pod.namespace.to_string()),
                uid: Some(pod.uid.to_string()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..ObjectReference::default()
            },
        };
        let start = Instant::now();
        let api = self.pods(pod.namespace);
        let pp = PostParams::default();
        let call =
            api.create_subresource::<_, serde_json::Value>("binding", &pod.name, &pp, &binding);
        let r = match tokio::time::timeout(self.bind_timeout, call).await {
            Ok(r) => r,
            Err(_) => {
                let cause = format!("the bind call timed out after {:?}", self.bind_timeout);
                let r = self.resolve_bind(pod, node, &cause).await;
                self.metrics
                    .bind_done(if r.is_ok() { "bound" } else { "error" }, start.elapsed());
                return r;
            }
        };
        let took = start.elapsed();
        match r {
            Ok(_) => {
                self.metrics.bind_done("bound", took);
                Ok(())
            }
            Err(e) => {
                let msg = format!("{}: {e}", pod.key());
                match api_code(&e) {
                    Some(409) => {
                        // Bound already — possibly by this very bind, when
                        // the client repeated it after a 504 or a cut
                        // connection: the pod says which.
                        let r = self
                            .resolve_bind(pod, node, &format!("the bind was refused: {e}"))
                            .await;
                        let outcome = match &r {
                            Ok(()) => "bound",
                            Err(BindError::Conflict(_)) => "conflict",
                            Err(BindError::NotFound(_)) => "not_found",
                            Err(_) => "error",
                        };
                        self.metrics.bind_done(outcome, start.elapsed());
                        r
                    }
                    Some(404) => {
                        self.metrics.bind_done("not_found", took);
                        Err(BindError::NotFound(msg))
                    }
                    // A 4xx other than 409/404/429 is a refusal: nothing was
                    // written. Anything else (5xx, 429, a cut connection) may
                    // have been committed: ask the API.
                    Some(c) if (400..500).contains(&c) && c != 429 => {
                        self.metrics.bind_done("error", took);
                        Err(BindError::Other(msg))
                    }
                    _ => {
                        let r = self
                            .resolve_bind(pod, node, &format!("the bind call failed: {e}"))
                            .await;
                        self.metrics
                            .bind_done(if r.is_ok() { "bound" } else { "error" }, start.elapsed());
                        r
                    }
                }
            }
        }
    }

    async fn update_pod_condition(
        &self,
        pod: &PodInfo,
        c: PodCondition,
    ) -> Result<(), ClusterError> {
        self.check_alive().map_err(ClusterError)?;
        let fp = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (c.scheduled, &c.reason, &c.message, &c.nominated_node).hash(&mut h);
            h.finish()
        };
        {
            let mut g = self.last_condition.lock();
            if g.get(&pod.uid) == Some(&fp) {
                return Ok(());
            }
            if g.len() >= MAX_REMEMBERED_CONDITIONS {
                g.clear();
            }
            g.insert(pod.uid.clone(), fp);
        }
        let mut status = serde_json::json!({
            "conditions": [{
                "type": "PodScheduled",
                "status": if c.scheduled { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).map(|t| t.to_string()).unwrap_or_default(),
                "lastProbeTime": null,
            }]
        });
        match c.nominated_node.as_deref() {
            Some("") => status["nominatedNodeName"] = serde_json::Value::Null,
            Some(n) => status["nominatedNodeName"] = serde_json::json!(n),
            None => {}
        }
        let patch = serde_json::json!({"status": status});
        self.limiter.acquire().await;
        let r = self
            .pods(pod.namespace)
            .patch_status(
                &pod.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await;
        self.metrics.status_patch(r.is_ok());
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                // Let a later attempt try again.
                self.last_condition.lock().remove(&pod.uid);
                if api_code(&e) == Some(404) {
                    return Ok(());
                }
                Err(ClusterError(format!(
                    "patching the status of {}: {e}",
                    pod.key()
                )))
            }
        }
    }

    async fn delete_pod(&self, pod: &PodInfo, reason: &str) -> Result<(), ClusterError> {
        self.check_alive().map_err(ClusterError)?;
        self.limiter.acquire().await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.pods(pod.namespace).delete(&pod.name, &dp).await {
            Ok(_) => {
                tracing::info!(pod = %pod.key(), reason, "deleted preemption victim");
                Ok(())
            }
            Err(e) if matches!(api_code(&e), Some(404) | Some(409)) => Ok(()),
            Err(e) => Err(ClusterError(format!("deleting {}: {e}", pod.key()))),
        }
    }

    fn record_event(&self, event: PodEvent) {
        // A replica that stopped leading reports nothing: its view is stale.
        if !self.gate.is_leader() {
            return;
        }
        if self.events.try_send(event).is_err() {
            self.metrics.event_dropped();
        }
    }

    async fn patch_pod_annotations(
        &self,
        pod: &PodInfo,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        self.check_alive().map_err(ClusterError)?;
        if annotations.is_empty() {
            return Ok(());
        }
        // A JSON patch whose first operations are preconditions: the same
        // pod (uid) and still unbound (no spec.nodeName). A pod recreated
        // under its name, or bound by another scheduler (a new leader, say),
        // fails the test (422) and nothing is written.
        let api = self.pods(pod.namespace);
        let mut map_exists = !pod.annotations.is_empty();
        for attempt in 0..2 {
            // Typed through serde: kube names json-patch's type without
            // re-exporting it.
            let patch = serde_json::from_value(annotation_patch(&pod.uid, annotations, map_exists))
                .map_err(|e| {
                    ClusterError(format!(
                        "building the annotation patch of {}: {e}",
                        pod.key()
                    ))
                })?;
            self.limiter.acquire().await;
            self.check_alive().map_err(ClusterError)?;
            let r = api
                .patch(
                    &pod.name,
                    &PatchParams::default(),
                    &Patch::<()>::Json(patch),
                )
                .await;
            let e = match r {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match api_code(&e) {
                Some(404) => {
                    return Err(ClusterError(format!(
                        "patching the annotations of {}: the pod no longer exists",
                        pod.key()
                    )));
                }
                Some(422) if attempt == 0 => {}
                _ => {
                    return Err(ClusterError(format!(
                        "patching the annotations of {}: {e}",
                        pod.key()
                    )));
                }
            }
            // A precondition failed: find out which.
            let current = api.get_opt(&pod.name).await.map_err(|e| {
                ClusterError(format!("patching the annotations of {}: {e}", pod.key()))
            })?;
            let Some(current) = current else {
                return Err(ClusterError(format!(
                    "patching the annotations of {}: the pod no longer exists",
                    pod.key()
                )));
            };
            if current.metadata.uid.as_deref() != Some(&*pod.uid) {
                return Err(ClusterError(format!(
                    "patching the annotations of {}: the pod was replaced (uid {} is gone)",
                    pod.key(),
                    pod.uid
                )));
            }
            if let Some(n) = current.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                return Err(ClusterError(format!(
                    "patching the annotations of {}: the pod was bound to {n} by someone else",
                    pod.key()
                )));
            }
            // Only the annotation map's presence differed from what the
            // informer showed: once more with the map as it is.
            map_exists = current.metadata.annotations.is_some();
        }
        Err(ClusterError(format!(
            "patching the annotations of {}: the pod kept changing",
            pod.key()
        )))
    }

    async fn update_resource_claim_status(
        &self,
        claim: &ResourceClaim,
    ) -> Result<Option<String>, ClusterError> {
        self.check_alive().map_err(ClusterError)?;
        let ns = claim.metadata.namespace.as_deref().unwrap_or("default");
        let name = claim.metadata.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(ClusterError(
                "writing a ResourceClaim status: the claim has no name".into(),
            ));
        }
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), ns);
        let claim_error = |e: kube::Error, rv: Option<&str>, what: &str| {
            ClusterError(match api_code(&e) {
                Some(409) => format!(
                    "ResourceClaim {ns}/{name} changed since resourceVersion {} was read (409 Conflict); \
                     {what} was not written: {e}",
                    rv.unwrap_or("?")
                ),
                Some(404) => format!("ResourceClaim {ns}/{name} no longer exists"),
                _ => format!("writing {what} of ResourceClaim {ns}/{name}: {e}"),
            })
        };
        // An allocation is protected by the finalizer first, in a normal
        // write of the object (status writes cannot change metadata), as
        // kube-scheduler does; the resourceclaim controller removes it
        // once the claim is deallocated. A merge patch of the finalizer
        // list guarded by the resourceVersion never loses another writer's
        // change; the status write then uses the version it produced.
        let mut claim = std::borrow::Cow::Borrowed(claim);
        let allocates = claim
            .status
            .as_ref()
            .is_some_and(|s| s.allocation.is_some());
        let protected = claim
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == CLAIM_FINALIZER);
        if allocates && !protected {
            let mut finalizers = claim.metadata.finalizers.clone().unwrap_or_default();
            finalizers.push(CLAIM_FINALIZER.to_owned());
            let mut md = serde_json::json!({"finalizers": finalizers});
            if let Some(rv) = &claim.metadata.resource_version {
                md["resourceVersion"] = serde_json::json!(rv);
            }
            self.limiter.acquire().await;
            self.check_alive().map_err(ClusterError)?;
            let updated = api
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&serde_json::json!({"metadata": md})),
                )
                .await
                .map_err(|e| {
                    claim_error(
                        e,
                        claim.metadata.resource_version.as_deref(),
                        "the finalizer",
                    )
                })?;
            let c = claim.to_mut();
            c.metadata.finalizers = updated.metadata.finalizers;
            c.metadata.resource_version = updated.metadata.resource_version;
        }
        self.limiter.acquire().await;
        self.check_alive().map_err(ClusterError)?;
        api.replace_status(name, &PostParams::default(), &claim)
            .await
            .map(|written| written.metadata.resource_version)
            .map_err(|e| claim_error(e, claim.metadata.resource_version.as_deref(), "the status"))
    }
}

/// The JSON patch (RFC 6902) that writes `annotations` onto pod `uid`
/// only while it is that pod and unbound. With `map_exists` each key is
/// added into the existing map; without, the map is created, tested absent
/// first so no annotation is ever dropped.
fn annotation_patch(
    uid: &str,
    annotations: &BTreeMap<String, String>,
    map_exists: bool,
) -> serde_json::Value {
    let mut ops = vec![
        serde_json::json!({"op": "test", "path": "/metadata/uid", "value": uid}),
        serde_json::json!({"op": "test", "path": "/spec/nodeName", "value": null}),
    ];
    if map_exists {
        for (k, v) in annotations {
            let key = k.replace('~', "~0").replace('/', "~1");
            ops.push(serde_json::json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": v}));
        }
    } else {
        ops.push(serde_json::json!({"op": "test", "path": "/metadata/annotations", "value": null}));
        ops.push(
            serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": annotations}),
        );
    }
    serde_json::Value::Array(ops)
}

fn event_action(reason: &str) -> &'static str {
    match reason {
        "Scheduled" => "Binding",
        "Preempted" => "Preempting",
        _ => "Scheduling",
    }
}

/// An event's name as client-go's event recorder makes it: the pod's name,
/// a dot, the time in hexadecimal nanoseconds. kube-apiserver validates
/// `generateName` as a DNS subdomain too, so `<pod>.` (ending in a dot) is
/// refused; the name is cut to stay within the 253 characters of one.
fn event_name(pod: &str, nanos: i128) -> String {
    let suffix = format!(".{:x}", nanos.max(0));
    let mut stem = truncate(pod, 253 - suffix.len());
    while stem.ends_with(['.', '-']) {
        stem.pop();
    }
    format!("{stem}{suffix}")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The event for `e` as events.k8s.io/v1 writes it.
pub fn build_event(e: &PodEvent, reporting_instance: &str) -> Event {
    let now = jiff::Timestamp::now();
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(&e.name, now.as_nanosecond())),
            namespace: Some(e.namespace.to_string()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(event_action(e.reason).to_owned()),
        reason: Some(e.reason.to_owned()),
        note: Some(truncate(&e.message, MAX_NOTE)),
        type_: Some(
            match e.kind {
                EventKind::Normal => "Normal",
                EventKind::Warning => "Warning",
            }
            .to_owned(),
        ),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(e.name.to_string()),
            namespace: Some(e.namespace.to_string()),
            uid: Some(e.uid.to_string()),
            ..ObjectReference::default()
        }),
        reporting_controller: Some("strata.io/scheduler".into()),
        reporting_instance: Some(reporting_instance.to_owned()),
        ..Event::default()
    }
}

async fn event_writer(
    client: kube::Client,
    mut rx: tokio::sync::mpsc::Receiver<PodEvent>,
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    instance: String,
    dead: Arc<AtomicBool>,
) {
    let mut recent: FxHashMap<u64, Instant> = FxHashMap::default();
    while let Some(e) = rx.recv().await {
        if dead.load(Ordering::SeqCst) {
            continue;
        }
        let key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&*e.uid, e.reason, &e.message).hash(&mut h);
            h.finish()
        };
        let now = Instant::now();
        if recent
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < EVENT_DEDUP_WINDOW)
        {
            metrics.event_dropped();
            continue;
        }
        if recent.len() > 50_000 {
            recent.retain(|_, t| now.duration_since(*t) < EVENT_DEDUP_WINDOW);
        }
        recent.insert(key, now);
        limiter.acquire().await;
        let api: Api<Event> = Api::namespaced(client.clone(), e.namespace.as_str());
        match api
            .create(&PostParams::default(), &build_event(&e, &instance))
            .await
        {
            Ok(_) => metrics.event_sent(),
            Err(err) => {
                metrics.event_failed();
                tracing::debug!(error = %err, "writing an event failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_shaped_as_kube_scheduler_writes_them() {
        let e = PodEvent {
            namespace: Sym::new("ns"),
            name: "p".into(),
            uid: "u".into(),
            kind: EventKind::Warning,
            reason: "FailedScheduling",
            message: "x".repeat(5000),
        };
        let ev = build_event(&e, "me");
        assert_eq!(ev.action.as_deref(), Some("Scheduling"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.note.as_ref().unwrap().len(), MAX_NOTE);
        assert_eq!(ev.regarding.as_ref().unwrap().uid.as_deref(), Some("u"));
        let name = ev.metadata.name.as_deref().unwrap();
        assert!(name.starts_with("p.") && name.len() > 2, "{name}");
        assert!(ev.metadata.generate_name.is_none());
        let long = event_name(&"a".repeat(253), 0x187d_0b1f_2a3c_4d5e);
        assert_eq!(long.len(), 253);
        assert!(long.ends_with(".187d0b1f2a3c4d5e"), "{long}");
        assert_eq!(event_name("p-1", 255), "p-1.ff");
        assert_eq!(event_action("Scheduled"), "Binding");
        assert_eq!(truncate("héllo", 2), "h");
    }
}
