//! # strata-fake-apiserver
//!
//! A Kubernetes API server for tests, in process and over real HTTP on
//! 127.0.0.1, so the Kubernetes adapter is driven through the same kube-rs
//! client it uses against a real cluster. No kube-apiserver binary can run
//! on the build machines; this server follows the documented API semantics
//! the adapter relies on instead:
//!
//! - list with `limit` / `continue`, served from a consistent snapshot; a
//!   continue token expires (410 `Expired`) after a compaction;
//! - watch from a `resourceVersion`, with `BOOKMARK` events when asked
//!   (`allowWatchBookmarks`), `timeoutSeconds`, and an `ERROR` event carrying
//!   410 Gone when the version was compacted away;
//! - create / get / update (resourceVersion conflicts give 409) / merge and
//!   strategic-merge patch (conditions merge by `type`; a `metadata.uid`
//!   in the patch is a precondition) / delete with preconditions, on
//!   objects and their `status` subresource; for types with a status
//!   subresource (pods, nodes, namespaces, PDBs, and registered types that
//!   say so) a client's create drops `status` (nodes excepted) and its
//!   writes to the object itself keep the stored status, as kube-apiserver's
//!   strategies do;
//! - the `pods/binding` subresource: 409 when `spec.nodeName` is already
//!   set (or the UID differs), 404 when the pod is gone;
//! - events (`events.k8s.io/v1` and core), Leases (`coordination.k8s.io/v1`),
//!   PodDisruptionBudgets, PriorityClasses, Namespaces, and any resource a
//!   test registers ([`FakeApiServer::register`]).
//!
//! It is not a full API server: no admission (beyond defaulting a pod's
//! `schedulerName` and phase), no label or field selectors, no
//! authentication, and deletion is immediate (no graceful termination).
//!
//! Tests steer it with [`FakeApiServer`]'s methods: write objects directly,
//! compact the watch log ([`FakeApiServer::compact`]), cut every watch
//! ([`FakeApiServer::interrupt_watches`]), add latency, fail binds, answer
//! updates with 409 Conflict ([`FakeApiServer::conflict_next_updates`]), and
//! read back every binding and every API call made (for RBAC checks), or
//! every request in order ([`FakeApiServer::record_requests`]).

#![warn(missing_docs)]

pub mod fixtures;
mod http;
mod store;

pub use http::{ApiCall, RequestRecord};
pub use store::{ApiError, ResourceType, WriteScope, builtin_resources};

use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use store::Store;

/// Settings of a server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events kept per resource for watches to resume from; older ones are
    /// compacted (a watch from before them gets 410 Gone).
    pub log_capacity: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Added to the handling of every request but watches.
    pub latency: Duration,
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Runtime threads serving requests.
    pub worker_threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_capacity: 200_000,
            bookmark_interval: Duration::from_millis(500),
            latency: Duration::ZERO,
            port: 0,
            worker_threads: 2,
        }
    }
}

/// A successful binding, as the server recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindRecord {
    /// The pod's UID.
    pub uid: String,
    /// `namespace/name`.
    pub pod: String,
    /// The node.
    pub node: String,
}

pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub latency_us: AtomicU64,
    pub fail_binds: AtomicU64,
    /// Bindings to commit and then answer `ambiguous_code`.
    pub ambiguous_binds: AtomicU64,
    pub ambiguous_code: AtomicU64,
    /// Bindings to commit and then answer only after `stall_ms`.
    pub stalled_binds: AtomicU64,
    pub stall_ms: AtomicU64,
    /// Watches to open and end at once with an ERROR event (500).
    pub failing_watches: AtomicU64,
    /// Writes to refuse with 429 and `retry_after_secs`.
    pub throttled_writes: AtomicU64,
    pub retry_after_secs: AtomicU64,
    pub bindings: Mutex<Vec<BindRecord>>,
    pub bind_conflicts: AtomicU64,
    pub calls: Mutex<BTreeSet<ApiCall>>,
    pub unavailable: AtomicBool,
    /// `plural[.group][/sub]` → updates left to answer with 409.
    pub update_conflicts: Mutex<HashMap<String, u64>>,
    /// Every request in order, when recording.
    pub requests: Mutex<Option<Vec<RequestRecord>>>,
}

/// A running server. Dropping it stops it.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a server with default options on a free port.
    pub fn start() -> std::io::Result<FakeApiServer> {
        FakeApiServer::start_with(Options::default())
    }

    /// Starts a server on its own runtime thread.
    pub fn start_with(opts: Options) -> std::io::Result<FakeApiServer> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(opts.log_capacity)),
            latency_us: AtomicU64::new(opts.latency.as_micros() as u64),
            fail_binds: AtomicU64::new(0),
            ambiguous_binds: AtomicU64::new(0),
            ambiguous_code: AtomicU64::new(500),
            stalled_binds: AtomicU64::new(0),
            stall_ms: AtomicU64::new(0),
            failing_watches: AtomicU64::new(0),
            throttled_writes: AtomicU64::new(0),
            retry_after_secs: AtomicU64::new(1),
            bindings: Mutex::new(Vec::new()),
            bind_conflicts: AtomicU64::new(0),
            calls: Mutex::new(BTreeSet::new()),
            unavailable: AtomicBool::new(false),
            update_conflicts: Mutex::new(HashMap::new()),
            requests: Mutex::new(None),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.max(1))
            .thread_name("fake-apiserver")
            .enable_all()
            .build()?;
        // A std listener: this may be called from within another runtime,
        // where blocking on ours is not allowed.
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", opts.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let s2 = shared.clone();
        let interval = opts.bookmark_interval;
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(error = %e, "fake API server cannot listen");
                            return;
                        }
                    };
                    let bookmarks = async {
                        let mut t = tokio::time::interval(interval);
                        loop {
                            t.tick().await;
                            s2.store.lock().bookmark();
                        }
                    };
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                tracing::warn!(error = %e, "fake API server stopped");
                            }
                        }
                        _ = bookmarks => {}
                        _ = rx => {}
                    }
                });
                rt.shutdown_background();
            })?;
        Ok(FakeApiServer {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig pointing at this server (plain HTTP, no credentials).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// Registers another resource (e.g. a CRD's).
    pub fn register(&self, rt: ResourceType) {
        self.shared.store.lock().register(rt);
    }

    fn rt(&self, resource: &str) -> Result<ResourceType, ApiError> {
        let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
        self.shared
            .store
            .lock()
            .resource_type(group, plural)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("unknown resource {resource}")))
    }

    /// Creates an object. `resource` is `plural` for the core group or
    /// `plural.group` (`leases.coordination.k8s.io`); the namespace comes
    /// from the object.
    pub fn create(&self, resource: &str, obj: Value) -> Result<Value, ApiError> {
        let rt = self.rt(resource)?;
        let o = self.shared.store.lock().create(&rt, "", obj, true)?;
        Ok((*o.value).clone())
    }

    /// Creates many objects without logging them for watches (a preload
    /// before any client connects: cheaper, and a watch from before it gets
    /// 410 Gone as from a compacted log).
    pub fn create_many(
        &self,
        resource: &str,
        objs: impl IntoIterator<Item = Value>,
    ) -> Result<usize, ApiError> {
        let rt = self.rt(resource)?;
        let mut store = self.shared.store.lock();
        let mut n = 0;
        for o in objs {
            store.create(&rt, "", o, false)?;
            n += 1;
        }
        store.compact();
        Ok(n)
    }

    /// Replaces an object, status included, as a kubelet or controller
    /// would through both endpoints (no resourceVersion check unless the
    /// object carries one). Clients' writes over HTTP keep the status of
    /// types with a status subresource.
    pub fn update(&self, resource: &str, obj: Value) -> Result<Value, ApiError> {
        let rt = self.rt(resource)?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let o = self
            .shared
            .store
            .lock()
            .update(&rt, &ns, &name, obj, WriteScope::Whole)?;
        Ok((*o.value).clone())
    }

    /// Deletes an object.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let rt = self.rt(resource)?;
        let o = self
            .shared
            .store
            .lock()
            .delete(&rt, namespace, name, None, None)?;
        Ok((*o.value).clone())
    }

    /// Reads an object.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = self.rt(resource).ok()?;
        let ns = if rt.namespaced { namespace } else { "" };
        self.shared
            .store
            .lock()
            .get(&rt, ns, name)
            .ok()
            .map(|o| (*o.value).clone())
    }

    /// Every object of a resource.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        let Ok(rt) = self.rt(resource) else {
            return Vec::new();
        };
        self.shared
            .store
            .lock()
            .all(&rt, None)
            .into_iter()
            .map(|o| (*o.value).clone())
            .collect()
    }

    /// How many objects of a resource exist.
    pub fn count(&self, resource: &str) -> usize {
        let Ok(rt) = self.rt(resource) else { return 0 };
        self.shared.store.lock().all(&rt, None).len()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().current_rv()
    }

    /// Drops the watch log: watches resuming from any earlier version get
    /// 410 Gone, and paginated lists in progress expire.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        self.shared.store.lock().open_watches()
    }

    /// Ends every open watch; returns how many there were.
    pub fn interrupt_watches(&self) -> usize {
        self.shared.store.lock().interrupt_watches()
    }

    /// Sets the latency added to every request but watches.
    pub fn set_latency(&self, d: Duration) {
        self.shared
            .latency_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The next `n` binding calls fail with 500.
    pub fn fail_next_binds(&self, n: u64) {
        self.shared.fail_binds.store(n, Ordering::SeqCst);
    }

    /// The next `n` bindings are committed (the pod is bound) and then
    /// answered with 500, as when a response is lost after etcd wrote it.
    pub fn fail_next_binds_after_commit(&self, n: u64) {
        self.fail_next_binds_after_commit_with(n, 500);
    }

    /// As [`FakeApiServer::fail_next_binds_after_commit`], answering `code`
    /// (504 Gateway Timeout, say, which clients repeat).
    pub fn fail_next_binds_after_commit_with(&self, n: u64, code: u16) {
        self.shared
            .ambiguous_code
            .store(u64::from(code), Ordering::SeqCst);
        self.shared.ambiguous_binds.store(n, Ordering::SeqCst);
    }

    /// The next `n` bindings are committed and answered only after `d` (a
    /// client with a shorter timeout never sees the answer).
    pub fn stall_next_binds_after_commit(&self, n: u64, d: Duration) {
        self.shared
            .stall_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
        self.shared.stalled_binds.store(n, Ordering::SeqCst);
    }

    /// The next `n` writes (create, update, patch, delete of any resource)
    /// are refused with 429 Too Many Requests, `Retry-After` and
    /// `details.retryAfterSeconds` of `secs`, as API Priority and Fairness
    /// rejects a request: nothing is processed.
    pub fn throttle_next_writes(&self, n: u64, secs: u64) {
        self.shared.retry_after_secs.store(secs, Ordering::SeqCst);
        self.shared.throttled_writes.store(n, Ordering::SeqCst);
    }

    /// The next `n` watches (of any resource) open and end at once with an
    /// ERROR event carrying a 500 Status, as a failing API server's do.
    pub fn fail_next_watches(&self, n: u64) {
        self.shared.failing_watches.store(n, Ordering::SeqCst);
    }

    /// The next `n` updates (PUT) of `resource` answer 409 Conflict, as if
    /// someone had changed the object since the client read it. `resource`
    /// is named as in [`FakeApiServer::create`], with `/status` for the
    /// subresource (`resourceclaims.resource.k8s.io/status`).
    pub fn conflict_next_updates(&self, resource: &str, n: u64) {
        self.shared
            .update_conflicts
            .lock()
            .insert(resource.to_owned(), n);
    }

    /// Starts (`true`, clearing what was recorded) or stops recording every
    /// request in order, for tests that check the order of calls.
    pub fn record_requests(&self, on: bool) {
        *self.shared.requests.lock() = on.then(Vec::new);
    }

    /// The requests recorded since [`FakeApiServer::record_requests`], in
    /// the order they were served.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().clone().unwrap_or_default()
    }

    /// Answers every request with 503 while `true`.
    pub fn set_unavailable(&self, on: bool) {
        self.shared.unavailable.store(on, Ordering::SeqCst);
    }

    /// Every successful binding, in order.
    pub fn bindings(&self) -> Vec<BindRecord> {
        self.shared.bindings.lock().clone()
    }

    /// How many binding calls were refused with 409.
    pub fn bind_conflicts(&self) -> u64 {
        self.shared.bind_conflicts.load(Ordering::SeqCst)
    }

    /// Every distinct API call served so far.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.shared.calls.lock().iter().cloned().collect()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.store.lock().interrupt_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
