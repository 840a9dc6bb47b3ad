//! The simulated cluster: an in-memory API server behind the engine's
//! [`ClusterPort`].
//!
//! `bind` does what the `pods/binding` subresource does (refuses a pod that is
//! gone or already bound) and queues the bound pod as a confirmation that the
//! driver feeds back to the engine, as an informer would. `delete_pod` removes
//! the pod and queues its deletion. Conditions and events are kept (counts and
//! the last one per pod) for reports and tests.
//!
//! Invariants: a pod is bound at most once (a second bind is refused with
//! `Conflict` and counted in [`SimCluster::double_binds`]); every accepted
//! bind and delete produces exactly one queued update. Calls come from the
//! engine's binding tasks on other threads, so the state sits behind one
//! mutex; nothing here is on the per-node hot path.

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use strata_scheduler::cluster::{
    BindError, ClusterError, ClusterPort, ClusterUpdate, PodCondition, PodEvent,
};
use strata_scheduler::intern::Sym;
use strata_scheduler::model::PodInfo;

/// A pod as the simulated API server holds it.
#[derive(Clone, Debug)]
struct PodRecord {
    pod: Arc<PodInfo>,
    /// Wall-clock time the pod was created.
    created: Instant,
    /// Wall-clock time of its bind, if bound.
    bound_at: Option<Instant>,
}

/// The last condition published on a pod and how many were published.
#[derive(Clone, Debug)]
pub struct ConditionRecord {
    /// How many condition updates the pod received.
    pub count: u32,
    /// The last one.
    pub last: PodCondition,
}

#[derive(Default)]
struct State {
    pods: FxHashMap<Arc<str>, PodRecord>,
    /// Bound and deleted pods, to be fed back to the engine.
    pending: Vec<ClusterUpdate>,
    bind_calls: u64,
    bound: usize,
    delete_calls: u64,
    double_binds: u64,
    deleted: Vec<(Arc<str>, String)>,
    conditions: FxHashMap<Arc<str>, ConditionRecord>,
    events: BTreeMap<&'static str, u64>,
    last_event: FxHashMap<Arc<str>, PodEvent>,
    annotation_patches: u64,
    claim_status_writes: Vec<String>,
}

/// Told of every bind the cluster accepts and every pod it deletes, under
/// the cluster's lock, so in the order they happen (run-time checkers such
/// as [`crate::groups::BindAudit`]).
pub trait BindObserver: Send + Sync {
    /// `pod` was bound to `node`.
    fn bound(&self, pod: &PodInfo, node: Sym);
    /// `pod` was deleted.
    fn deleted(&self, pod: &PodInfo);
}

/// The simulated cluster. Share it as `Arc<SimCluster>`; the engine gets it
/// as `Arc<dyn ClusterPort>`.
#[derive(Default)]
pub struct SimCluster {
    state: Mutex<State>,
    observer: std::sync::OnceLock<Arc<dyn BindObserver>>,
}

impl SimCluster {
    /// An empty cluster.
    pub fn new() -> SimCluster {
        SimCluster::default()
    }

    /// Creates a pod (as `kubectl create` would); the caller tells the
    /// engine about it.
    pub fn create_pod(&self, pod: Arc<PodInfo>) {
        let mut st = self.state.lock();
        st.pods.insert(
            pod.uid.clone(),
            PodRecord {
                pod,
                created: Instant::now(),
                bound_at: None,
            },
        );
    }

    /// Sets the observer told of binds and deletions (once; later calls
    /// are ignored).
    pub fn set_observer(&self, observer: Arc<dyn BindObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Takes the queued confirmations (bound pods, deletions) in the order
    /// they happened.
    pub fn drain_updates(&self) -> Vec<ClusterUpdate> {
        std::mem::take(&mut self.state.lock().pending)
    }

    /// How many confirmations are queued.
    pub fn pending_updates(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// The node `uid` is bound to.
    pub fn binding(&self, uid: &str) -> Option<Sym> {
        self.state
            .lock()
            .pods
            .get(uid)
            .and_then(|r| r.pod.bound_node)
    }

    /// Whether `uid` is bound.
    pub fn is_bound(&self, uid: &str) -> bool {
        self.binding(uid).is_some()
    }

    /// Every existing pod's binding: `namespace/name` → node (`None` when
    /// unbound), sorted by pod.
    pub fn placements(&self) -> BTreeMap<String, Option<String>> {
        let st = self.state.lock();
        st.pods
            .values()
            .map(|r| (r.pod.key(), r.pod.bound_node.map(|n| n.as_str().to_owned())))
            .collect()
    }

    /// Bound pods (that still exist).
    pub fn bound_count(&self) -> usize {
        self.state.lock().bound
    }

    /// Delete calls received (accepted or not).
    pub fn delete_calls(&self) -> u64 {
        self.state.lock().delete_calls
    }

    /// Wall-clock time from creation to bind of every bound pod, and the
    /// latest bind.
    pub fn bind_latencies(&self) -> (Vec<std::time::Duration>, Option<Instant>) {
        let st = self.state.lock();
        let mut last = None::<Instant>;
        let lat = st
            .pods
            .values()
            .filter_map(|r| {
                let b = r.bound_at?;
                last = Some(last.map_or(b, |l| l.max(b)));
                Some(b.saturating_duration_since(r.created))
            })
            .collect();
        (lat, last)
    }

    /// Accepted and refused bind calls.
    pub fn bind_calls(&self) -> u64 {
        self.state.lock().bind_calls
    }

    /// Bind calls for a pod that was already bound. Always 0 unless the
    /// engine is wrong.
    pub fn double_binds(&self) -> u64 {
        self.state.lock().double_binds
    }

    /// Pods deleted, with the reason given.
    pub fn deleted(&self) -> Vec<(Arc<str>, String)> {
        self.state.lock().deleted.clone()
    }

    /// The last condition published on `uid`.
    pub fn condition(&self, uid: &str) -> Option<ConditionRecord> {
        self.state.lock().conditions.get(uid).cloned()
    }

    /// Events recorded, by reason.
    pub fn event_counts(&self) -> BTreeMap<String, u64> {
        self.state
            .lock()
            .events
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }

    /// The last event recorded on `uid`.
    pub fn last_event(&self, uid: &str) -> Option<PodEvent> {
        self.state.lock().last_event.get(uid).cloned()
    }

    /// The pod as the cluster holds it (with patched annotations).
    pub fn pod(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.state.lock().pods.get(uid).map(|r| r.pod.clone())
    }

    /// How many annotation patches pods received.
    pub fn annotation_patches(&self) -> u64 {
        self.state.lock().annotation_patches
    }

    /// ResourceClaim status writes (`namespace/name`), in order.
    pub fn claim_status_writes(&self) -> Vec<String> {
        self.state.lock().claim_status_writes.clone()
    }
}

#[async_trait::async_trait]
impl ClusterPort for SimCluster {
    async fn bind(&self, pod: &PodInfo, node: Sym) -> Result<(), BindError> {
        let mut st = self.state.lock();
        st.bind_calls += 1;
        let st = &mut *st;
        let Some(rec) = st.pods.get_mut(&pod.uid) else {
            return Err(BindError::NotFound(pod.key()));
        };
        if let Some(prev) = rec.pod.bound_node {
            st.double_binds += 1;
            return Err(BindError::Conflict(format!(
                "{} is already bound to {prev}",
                pod.key()
            )));
        }
        let mut bound = (*rec.pod).clone();
        bound.bound_node = Some(node);
        let bound = Arc::new(bound);
        rec.pod = bound.clone();
        rec.bound_at = Some(Instant::now());
        st.bound += 1;
        st.pending.push(ClusterUpdate::PodUpserted(bound));
        if let Some(o) = self.observer.get() {
            o.bound(pod, node);
        }
        Ok(())
    }

    async fn update_pod_condition(
        &self,
        pod: &PodInfo,
        condition: PodCondition,
    ) -> Result<(), ClusterError> {
        let mut st = self.state.lock();
        if !st.pods.contains_key(&pod.uid) {
            return Err(ClusterError(format!("pod {} not found", pod.key())));
        }
        match st.conditions.get_mut(&pod.uid) {
            Some(c) => {
                c.count += 1;
                c.last = condition;
            }
            None => {
                st.conditions.insert(
                    pod.uid.clone(),
                    ConditionRecord {
                        count: 1,
                        last: condition,
                    },
                );
            }
        }
        Ok(())
    }

    async fn delete_pod(&self, pod: &PodInfo, reason: &str) -> Result<(), ClusterError> {
        let mut st = self.state.lock();
        st.delete_calls += 1;
        let Some(rec) = st.pods.remove(&pod.uid) else {
            return Err(ClusterError(format!("pod {} not found", pod.key())));
        };
        if rec.pod.bound_node.is_some() {
            st.bound -= 1;
        }
        st.deleted.push((pod.uid.clone(), reason.to_owned()));
        st.pending.push(ClusterUpdate::PodDeleted {
            uid: pod.uid.clone(),
        });
        if let Some(o) = self.observer.get() {
            o.deleted(pod);
        }
        Ok(())
    }

    fn record_event(&self, event: PodEvent) {
        let mut st = self.state.lock();
        *st.events.entry(event.reason).or_default() += 1;
        st.last_event.insert(event.uid.clone(), event);
    }

    /// Merges the annotations into the stored pod, so the confirmation a
    /// later bind produces carries them (as the API would).
    async fn patch_pod_annotations(
        &self,
        pod: &PodInfo,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let mut st = self.state.lock();
        let Some(rec) = st.pods.get_mut(&pod.uid) else {
            return Err(ClusterError(format!("pod {} not found", pod.key())));
        };
        let mut p = (*rec.pod).clone();
        let mut merged = (*p.annotations).clone();
        merged.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        p.annotations = Arc::new(merged);
        rec.pod = Arc::new(p);
        st.annotation_patches += 1;
        Ok(())
    }

    /// Accepts the claim status (the DRA plugin keeps its own store
    /// current); counted for reports and tests.
    async fn update_resource_claim_status(
        &self,
        claim: &k8s_openapi::api::resource::v1::ResourceClaim,
    ) -> Result<Option<String>, ClusterError> {
        let mut st = self.state.lock();
        st.claim_status_writes.push(format!(
            "{}/{}",
            claim.metadata.namespace.as_deref().unwrap_or(""),
            claim.metadata.name.as_deref().unwrap_or("")
        ));
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_scheduler::cluster::EventKind;
    use strata_scheduler::testing;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn binds_once_and_confirms() {
        let c = SimCluster::new();
        let p = Arc::new(testing::pod("p").req("cpu", "1").build());
        assert!(matches!(
            block(c.bind(&p, Sym::new("n1"))),
            Err(BindError::NotFound(_))
        ));
        c.create_pod(p.clone());
        block(c.bind(&p, Sym::new("n1"))).unwrap();
        assert_eq!(c.binding(&p.uid), Some(Sym::new("n1")));
        let ups = c.drain_updates();
        assert_eq!(ups.len(), 1);
        match &ups[0] {
            ClusterUpdate::PodUpserted(b) => {
                assert_eq!(b.uid, p.uid);
                assert_eq!(b.bound_node, Some(Sym::new("n1")));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            block(c.bind(&p, Sym::new("n2"))),
            Err(BindError::Conflict(_))
        ));
        assert_eq!(c.double_binds(), 1);
        assert_eq!(c.bind_calls(), 3);
        assert_eq!(c.bound_count(), 1);
        assert!(c.drain_updates().is_empty());
        let (lat, last) = c.bind_latencies();
        assert_eq!(lat.len(), 1);
        assert!(last.is_some());
    }

    #[test]
    fn deletes_and_records() {
        let c = SimCluster::new();
        let p = Arc::new(testing::pod("victim").build());
        c.create_pod(p.clone());
        let cond = PodCondition {
            scheduled: false,
            reason: "Unschedulable".into(),
            message: "0/3 nodes are available".into(),
            nominated_node: None,
        };
        block(c.update_pod_condition(&p, cond.clone())).unwrap();
        block(c.update_pod_condition(&p, cond.clone())).unwrap();
        let rec = c.condition(&p.uid).unwrap();
        assert_eq!(rec.count, 2);
        assert_eq!(rec.last, cond);
        c.record_event(PodEvent {
            namespace: p.namespace,
            name: p.name.clone(),
            uid: p.uid.clone(),
            kind: EventKind::Warning,
            reason: "FailedScheduling",
            message: "no".into(),
        });
        assert_eq!(c.event_counts()["FailedScheduling"], 1);
        assert_eq!(c.last_event(&p.uid).unwrap().message, "no");
        block(c.delete_pod(&p, "preempted")).unwrap();
        assert!(block(c.delete_pod(&p, "again")).is_err());
        assert!(
            matches!(&c.drain_updates()[..], [ClusterUpdate::PodDeleted { uid }] if *uid == p.uid)
        );
        assert_eq!(c.deleted().len(), 1);
        assert_eq!(c.delete_calls(), 2);
        assert!(c.placements().is_empty());
    }
}
