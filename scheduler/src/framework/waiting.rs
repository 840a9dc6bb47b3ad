//! Pods held at Permit until every waiting plugin allows them, one rejects
//! them, or their time runs out. Gang plugins use this to release a group as a
//! whole.

use crate::intern::Sym;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// How a wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermitDecision {
    /// Every waiting plugin allowed the pod.
    Allowed,
    /// A plugin rejected it, with the plugin and message.
    Rejected {
        /// The plugin that rejected.
        plugin: String,
        /// Why.
        message: String,
    },
}

struct Entry {
    pending: Vec<&'static str>,
    node: Sym,
    pod_key: String,
    tx: Option<oneshot::Sender<PermitDecision>>,
}

/// The set of pods waiting at Permit. Cheap to clone; all clones share it.
#[derive(Clone, Default)]
pub struct WaitingPods {
    inner: Arc<Mutex<FxHashMap<Arc<str>, Entry>>>,
}

/// A waiting pod as plugins see it.
#[derive(Clone, Debug)]
pub struct WaitingPodView {
    /// UID.
    pub uid: Arc<str>,
    /// `namespace/name`.
    pub pod_key: String,
    /// The node it was assumed on.
    pub node: Sym,
    /// Plugins that still have to allow it.
    pub pending: Vec<&'static str>,
}

impl WaitingPods {
    /// Registers a pod waiting on `plugins`; returns the receiver the binding
    /// cycle awaits.
    pub(crate) fn add(
        &self,
        uid: Arc<str>,
        pod_key: String,
        node: Sym,
        plugins: Vec<&'static str>,
    ) -> oneshot::Receiver<PermitDecision> {
        let (tx, rx) = oneshot::channel();
        self.inner.lock().insert(
            uid,
            Entry {
                pending: plugins,
                node,
                pod_key,
                tx: Some(tx),
            },
        );
        rx
    }

    /// Removes a pod (its wait is over one way or the other).
    pub(crate) fn remove(&self, uid: &str) {
        self.inner.lock().remove(uid);
    }

    /// `plugin` allows the pod; when no plugin is left pending it proceeds.
    /// Returns false when the pod is not waiting.
    pub fn allow(&self, uid: &str, plugin: &str) -> bool {
        let mut g = self.inner.lock();
        let Some(e) = g.get_mut(uid) else {
            return false;
        };
        e.pending.retain(|p| *p != plugin);
        if e.pending.is_empty()
            && let Some(tx) = e.tx.take()
        {
            let _ = tx.send(PermitDecision::Allowed);
        }
        true
    }

    /// `plugin` rejects the pod. Returns false when it is not waiting.
    pub fn reject(&self, uid: &str, plugin: &str, message: &str) -> bool {
        let mut g = self.inner.lock();
        let Some(e) = g.get_mut(uid) else {
            return false;
        };
        if let Some(tx) = e.tx.take() {
            let _ = tx.send(PermitDecision::Rejected {
                plugin: plugin.to_owned(),
                message: message.to_owned(),
            });
        }
        true
    }

    /// A snapshot of the waiting pods.
    pub fn list(&self) -> Vec<WaitingPodView> {
        self.inner
            .lock()
            .iter()
            .map(|(uid, e)| WaitingPodView {
                uid: uid.clone(),
                pod_key: e.pod_key.clone(),
                node: e.node,
                pending: e.pending.clone(),
            })
            .collect()
    }

    /// How many of `uids` every waiting plugin has allowed (their binding
    /// cycles are past Permit, not yet finished), counting up to `enough`.
    /// One lock for the whole question; for checkers and tests.
    pub fn count_allowed<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a str>,
        enough: usize,
    ) -> usize {
        let g = self.inner.lock();
        let mut n = 0;
        for uid in uids {
            if n >= enough {
                break;
            }
            if g.get(uid)
                .is_some_and(|e| e.pending.is_empty() && e.tx.is_none())
            {
                n += 1;
            }
        }
        n
    }

    /// Whether `uid` is waiting.
    pub fn contains(&self, uid: &str) -> bool {
        self.inner.lock().contains_key(uid)
    }

    /// How many pods wait.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_allowed_counts_only_pods_every_plugin_allowed() {
        let w = WaitingPods::default();
        // Keep the receivers: the decisions are sent to live waits.
        let _rx: Vec<_> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|uid| w.add(Arc::from(uid), uid.into(), Sym::new("n"), vec!["P", "Q"]))
            .collect();
        w.allow("a", "P");
        w.allow("a", "Q");
        w.allow("b", "P");
        w.allow("c", "P");
        w.allow("c", "Q");
        w.reject("d", "P", "no");
        let all = ["a", "b", "c", "d", "gone"];
        assert_eq!(w.count_allowed(all, usize::MAX), 2);
        assert_eq!(w.count_allowed(all, 1), 1);
        assert_eq!(w.count_allowed(["b", "d"], usize::MAX), 0);
    }
}
