//! Informers: list everything (paginated), then watch from the list's
//! resourceVersion, turning every change into engine updates.
//!
//! One informer per resource runs as a tokio task. Its life:
//! 1. **List** in pages of `page_size` (`limit` / `continue`). A continue
//!    token that expired (410) restarts the list. Every object is handed to
//!    its [`Translate`]; at the end, objects known from before but absent
//!    from the list are reported deleted — this is how a relist reconciles
//!    the cache without a restart.
//! 2. Mark the resource **synced** (the adapter's readiness waits for all).
//! 3. **Watch** from the last resourceVersion seen, asking for bookmarks so
//!    that resourceVersion keeps moving even when nothing changes. A watch
//!    that ends (server timeout, cut connection) resumes from there. A 410
//!    Gone (as an HTTP error or as an `ERROR` event) means the version was
//!    compacted away: go back to 1.
//!
//! The informer remembers, per object, only its UID and resourceVersion:
//! enough to skip unchanged objects on a relist and to report deletions.

use crate::metrics::Metrics;
use futures::StreamExt;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::{Resource, ResourceExt};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use strata_scheduler::cluster::ClusterUpdate;

/// Server-side timeout asked for each watch (kube-scheduler's informers use
/// 5–10 minutes; shorter keeps connections fresh behind load balancers).
const WATCH_TIMEOUT_SECS: u32 = 290;
/// First and longest wait before retrying after an error.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where informers send engine updates: the engine loop's channel, counting
/// what was sent so readiness can tell when the engine has caught up.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<ClusterUpdate>,
    sent: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

impl Sink {
    /// A sink feeding `tx`.
    pub fn new(tx: mpsc::Sender<ClusterUpdate>) -> Sink {
        Sink {
            tx,
            sent: Arc::new(AtomicU64::new(0)),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends one update. False when the engine is gone.
    pub fn send(&self, u: ClusterUpdate) -> bool {
        // Count first: `sent` must never be below what the engine applied.
        self.sent.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(u).is_err() {
            self.sent.fetch_sub(1, Ordering::AcqRel);
            self.closed.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// Updates sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }
}

/// Turns one resource's objects into engine updates.
pub trait Translate<K>: Send + 'static {
    /// An object was added or changed.
    fn upsert(&mut self, obj: K, sink: &Sink);
    /// An object is gone: `last` is its final state when the watch said so,
    /// `None` when a relist found it missing.
    fn delete(&mut self, namespace: &str, name: &str, uid: &str, last: Option<K>, sink: &Sink);
}

/// A flag set once the first list was applied.
#[derive(Clone, Default)]
pub struct Synced(Arc<(AtomicBool, tokio::sync::Notify)>);

impl Synced {
    /// Sets the flag and wakes waiters.
    pub fn set(&self) {
        self.0.0.store(true, Ordering::Release);
        self.0.1.notify_waiters();
    }
    /// Whether set.
    pub fn is_set(&self) -> bool {
        self.0.0.load(Ordering::Acquire)
    }
    /// Waits until set.
    pub async fn wait(&self) {
        loop {
            let n = self.0.1.notified();
            if self.is_set() {
                return;
            }
            n.await;
        }
    }
}

type Key = (String, String);

/// One resource's informer.
pub struct Informer<K, T> {
    /// Name for logs and metrics (`pods`, `nodes`...).
    pub resource: &'static str,
    /// The API to list and watch (all namespaces).
    pub api: Api<K>,
    /// Objects per list page.
    pub page_size: u32,
    /// The translation to engine updates.
    pub translate: T,
    /// Where updates go.
    pub sink: Sink,
    /// Set after the first complete list.
    pub synced: Synced,
    /// Counters.
    pub metrics: Arc<Metrics>,
    known: FxHashMap<Key, (String, String)>,
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 410)
}

/// A watch that delivered nothing and ended sooner than this was not
/// healthy: the next one waits out the back-off.
const WATCH_MIN_HEALTHY: Duration = Duration::from_secs(1);

enum WatchEnd {
    /// Ended normally (`healthy`: it carried events or lasted) or by a
    /// transient error: resume from the last version.
    Resume { healthy: bool },
    /// The version is gone: relist.
    Gone,
    /// The engine is gone.
    Closed,
}

impl<K, T> Informer<K, T>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    T: Translate<K>,
{
    /// An informer.
    pub fn new(
        resource: &'static str,
        api: Api<K>,
        page_size: u32,
        translate: T,
        sink: Sink,
        synced: Synced,
        metrics: Arc<Metrics>,
    ) -> Self {
        Informer {
            resource,
            api,
            page_size,
            translate,
            sink,
            synced,
            metrics,
            known: FxHashMap::default(),
        }
    }

    /// Runs until the engine goes away (or the task is aborted).
    pub async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        'relist: loop {
            let rv = match self.list_all().await {
                Ok(Some(rv)) => rv,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(resource = self.resource, error = %e, "list failed; retrying");
                    self.metrics.informer_errors(self.resource);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            if !self.synced.is_set() {
                tracing::info!(
                    resource = self.resource,
                    objects = self.known.len(),
                    "initial list done"
                );
                self.synced.set();
            }
            let mut rv = rv;
            loop {
                match self.watch_from(&mut rv).await {
                    Ok(WatchEnd::Resume { healthy: true }) => {
                        backoff = BACKOFF_MIN;
                        self.metrics.watch_restart(self.resource);
                    }
                    Ok(WatchEnd::Resume { healthy: false }) => {
                        // An error event, or a watch that ended at once:
                        // back off rather than spin on the API server.
                        self.metrics.watch_restart(self.resource);
                        self.metrics.informer_errors(self.resource);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                    Ok(WatchEnd::Gone) => {
                        tracing::info!(resource = self.resource, rv = %rv, "resourceVersion expired (410 Gone); relisting");
                        self.metrics.relist(self.resource);
                        continue 'relist;
                    }
                    Ok(WatchEnd::Closed) => return,
                    Err(e) if is_gone(&e) => {
                        tracing::info!(resource = self.resource, rv = %rv, "resourceVersion expired (410 Gone); relisting");
                        self.metrics.relist(self.resource);
                        continue 'relist;
                    }
                    Err(e) => {
                        tracing::warn!(resource = self.resource, error = %e, "watch failed; retrying");
                        self.metrics.informer_errors(self.resource);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// Lists everything; returns the list's resourceVersion (`None` when
    /// the engine is gone).
    async fn list_all(&mut self) -> Result<Option<String>, kube::Error> {
        let mut seen: FxHashSet<Key> = FxHashSet::default();
        let mut cont: Option<String> = None;
        // The first list (the preload) is served from the API server's
        // watch cache (resourceVersion 0, "not older than"), as client-go's
        // reflectors ask, instead of a quorum read of every page from etcd;
        // the watch from its version brings anything newer. A relist after
        // 410 reads consistently: it must not go back in time.
        let from_cache = !self.synced.is_set();
        let rv = loop {
            let mut lp = ListParams::default().limit(self.page_size);
            if let Some(c) = &cont {
                lp = lp.continue_token(c);
            } else if from_cache {
                lp = lp.match_any();
            }
            let list = match self.api.list(&lp).await {
                Ok(l) => l,
                Err(e) if is_gone(&e) && cont.is_some() => {
                    // The continue token expired: start the list again.
                    tracing::info!(
                        resource = self.resource,
                        "list continue token expired; restarting the list"
                    );
                    cont = None;
                    seen.clear();
                    continue;
                }
                Err(e) => return Err(e),
            };
            for obj in list.items {
                let key = key_of(&obj);
                seen.insert(key.clone());
                if !self.apply(key, obj) {
                    return Ok(None);
                }
            }
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => cont = Some(c),
                None => break list.metadata.resource_version.unwrap_or_default(),
            }
        };
        let gone: Vec<Key> = self
            .known
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some((uid, _)) = self.known.remove(&k) {
                self.translate.delete(&k.0, &k.1, &uid, None, &self.sink);
            }
        }
        Ok(Some(rv))
    }

    /// Hands an added or changed object on, unless its version is the one
    /// already applied. A new UID under a known name is a new object: the
    /// old one is reported deleted first.
    fn apply(&mut self, key: Key, obj: K) -> bool {
        let uid = obj.uid().unwrap_or_default();
        let rv = obj.resource_version().unwrap_or_default();
        match self.known.get(&key) {
            Some((u, r)) if *u == uid && *r == rv && !rv.is_empty() => return true,
            Some((u, _)) if *u != uid => {
                let old = u.clone();
                self.translate
                    .delete(&key.0, &key.1, &old, None, &self.sink);
            }
            _ => {}
        }
        self.known.insert(key, (uid, rv));
        self.metrics.informer_event(self.resource);
        self.translate.upsert(obj, &self.sink);
        !self.sink.tx_closed()
    }

    async fn watch_from(&mut self, rv: &mut String) -> Result<WatchEnd, kube::Error> {
        let mut wp = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
        wp.bookmarks = true;
        let started = Instant::now();
        let mut delivered = false;
        let stream = self.api.watch(&wp, rv).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            if !matches!(ev, WatchEvent::Error(_)) {
                delivered = true;
            }
            match ev {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    if let Some(v) = o.resource_version() {
                        *rv = v;
                    }
                    let key = key_of(&o);
                    if !self.apply(key, o) {
                        return Ok(WatchEnd::Closed);
                    }
                }
                WatchEvent::Deleted(o) => {
                    if let Some(v) = o.resource_version() {
                        *rv = v;
                    }
                    let key = key_of(&o);
                    let uid = self
                        .known
                        .remove(&key)
                        .map(|(u, _)| u)
                        .or_else(|| o.uid())
                        .unwrap_or_default();
                    self.metrics.informer_event(self.resource);
                    self.translate
                        .delete(&key.0, &key.1, &uid, Some(o), &self.sink);
                    if self.sink.tx_closed() {
                        return Ok(WatchEnd::Closed);
                    }
                }
                WatchEvent::Bookmark(b) => {
                    *rv = b.metadata.resource_version;
                }
                WatchEvent::Error(s) => {
                    if s.code == 410 {
                        return Ok(WatchEnd::Gone);
                    }
                    tracing::warn!(resource = self.resource, code = s.code, message = %s.message, "watch error event");
                    return Ok(WatchEnd::Resume { healthy: false });
                }
            }
        }
        Ok(WatchEnd::Resume {
            healthy: delivered || started.elapsed() >= WATCH_MIN_HEALTHY,
        })
    }
}

impl Sink {
    /// Whether a send found the engine gone.
    fn tx_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

fn key_of<K: Resource>(o: &K) -> Key {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}
