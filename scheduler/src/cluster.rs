//! The `Cluster` port: everything the engine receives from and sends to the
//! cluster. The Kubernetes adapter implements it over the API; the simulator
//! implements it in memory. The engine never knows which it has.

use crate::cache::PdbInfo;
use crate::intern::Sym;
use crate::labels::Labels;
use crate::model::{CompileError, PodInfo};
use k8s_openapi::api::core::v1 as corev1;
use std::sync::Arc;

/// Something that happened in the cluster, as the engine consumes it.
#[derive(Clone, Debug)]
pub enum ClusterUpdate {
    /// A node was added or changed.
    NodeUpserted(Arc<corev1::Node>),
    /// A node was deleted.
    NodeDeleted(String),
    /// A pod was added or changed (bound or not, any scheduler).
    PodUpserted(Arc<PodInfo>),
    /// A pod was deleted.
    PodDeleted {
        /// UID.
        uid: Arc<str>,
    },
    /// A pod that could not be compiled; the engine reports it if it belongs
    /// to one of its profiles.
    PodInvalid {
        /// UID.
        uid: Arc<str>,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// `spec.schedulerName`.
        scheduler_name: String,
        /// What is wrong.
        error: CompileError,
    },
    /// A namespace was added or its labels changed.
    NamespaceUpserted {
        /// Name.
        name: Sym,
        /// Labels.
        labels: Labels,
    },
    /// A namespace was deleted.
    NamespaceDeleted(Sym),
    /// A PodDisruptionBudget was added or changed.
    PdbUpserted(PdbInfo),
    /// A PodDisruptionBudget was deleted.
    PdbDeleted {
        /// Namespace.
        namespace: Sym,
        /// Name.
        name: String,
    },
    /// A custom object a plugin watches changed (kind as the plugin
    /// registers it, e.g. `PodGroup`). Plugins hold its data themselves.
    Custom {
        /// Kind.
        kind: &'static str,
        /// Namespace.
        namespace: Sym,
        /// Name.
        name: String,
    },
    /// Not a change: a question for the engine, answered on its own thread
    /// between cycles, against the cache, the snapshot and the plugins'
    /// state as they stand after every update sent before it (a controller
    /// in the same process asking the PodGroup plugin's what-if, say).
    Query(EngineQuery),
}

/// A question for the engine: a function run once on the engine thread
/// with the [`Scheduler`](crate::engine::Scheduler), which answers through
/// whatever channel it captured. Node observers (the topology aggregates)
/// are brought up to date first. Keep it short: the engine schedules
/// nothing while it runs.
#[derive(Clone)]
pub struct EngineQuery(Arc<parking_lot::Mutex<Option<QueryFn>>>);

type QueryFn = Box<dyn FnOnce(&crate::engine::Scheduler) + Send>;

impl EngineQuery {
    /// A query running `f` (once, however often the update is cloned).
    pub fn new(f: impl FnOnce(&crate::engine::Scheduler) + Send + 'static) -> EngineQuery {
        EngineQuery(Arc::new(parking_lot::Mutex::new(Some(Box::new(f)))))
    }

    /// Runs the function if no clone ran it yet.
    pub(crate) fn answer(&self, sched: &crate::engine::Scheduler) {
        let f = self.0.lock().take();
        if let Some(f) = f {
            f(sched);
        }
    }
}

impl std::fmt::Debug for EngineQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineQuery")
    }
}

/// Why a bind failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The pod is already bound (HTTP 409): forget, do not retry.
    #[error("pod is already bound: {0}")]
    Conflict(String),
    /// The pod is gone (HTTP 404): forget, do not retry.
    #[error("pod no longer exists: {0}")]
    NotFound(String),
    /// Anything else: requeue with backoff.
    #[error("bind failed: {0}")]
    Other(String),
}

impl BindError {
    /// Whether a bind failure message (a `BindError` rendered by a Bind
    /// plugin into its status) says the pod is already bound or gone, so a
    /// retry cannot help.
    pub fn is_final(message: &str) -> bool {
        message.contains("pod is already bound:") || message.contains("pod no longer exists:")
    }
}

/// A failure of a non-bind call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

/// The scheduling condition to publish on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCondition {
    /// `PodScheduled` status: false for unschedulable.
    pub scheduled: bool,
    /// `Unschedulable`, `SchedulerError`, ...
    pub reason: String,
    /// The aggregated message.
    pub message: String,
    /// `status.nominatedNodeName` to set (Some("") clears it).
    pub nominated_node: Option<String>,
}

/// An event to record on a pod (events.k8s.io/v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    /// The pod's namespace.
    pub namespace: Sym,
    /// The pod's name.
    pub name: Arc<str>,
    /// The pod's uid.
    pub uid: Arc<str>,
    /// `Normal` or `Warning`.
    pub kind: EventKind,
    /// `Scheduled`, `FailedScheduling`, `Preempted`...
    pub reason: &'static str,
    /// The note.
    pub message: String,
}

/// Event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

/// The engine's outbound calls. Implementations must be cheap to call from
/// the scheduling thread: `record_event` must not block, and the async calls
/// run on the binding pool.
#[async_trait::async_trait]
pub trait ClusterPort: Send + Sync + 'static {
    /// Binds `pod` to `node` (the `pods/binding` subresource).
    async fn bind(&self, pod: &PodInfo, node: Sym) -> Result<(), BindError>;

    /// Publishes the PodScheduled condition (and nominated node) on a pod.
    async fn update_pod_condition(
        &self,
        pod: &PodInfo,
        condition: PodCondition,
    ) -> Result<(), ClusterError>;

    /// Deletes a pod (a preemption victim), with a reason for its event.
    async fn delete_pod(&self, pod: &PodInfo, reason: &str) -> Result<(), ClusterError>;

    /// Records an event. Must not block; may drop or aggregate under load.
    fn record_event(&self, event: PodEvent);

    /// Merges `annotations` into the pod's `metadata.annotations` (a merge
    /// patch on the pod), before it is bound: how PreBind plugins hand a
    /// decision to the node agent (device assignments). The default refuses,
    /// so a port that cannot do it fails loudly instead of losing the data.
    async fn patch_pod_annotations(
        &self,
        pod: &PodInfo,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let _ = annotations;
        Err(ClusterError(format!(
            "this cluster port cannot patch the annotations of pod {}",
            pod.key()
        )))
    }

    /// Replaces the status of a `resource.k8s.io/v1` ResourceClaim (the
    /// `status` subresource) with `claim.status`, guarded by
    /// `claim.metadata.resourceVersion` when set: how the DRA plugin writes
    /// an allocation and `reservedFor` in PreBind. Returns the
    /// resourceVersion the API server gave the written claim, when the port
    /// knows it (the plugin assumes the claim at that version, so its next
    /// write is not refused as stale). The default refuses.
    async fn update_resource_claim_status(
        &self,
        claim: &k8s_openapi::api::resource::v1::ResourceClaim,
    ) -> Result<Option<String>, ClusterError> {
        Err(ClusterError(format!(
            "this cluster port cannot write the status of ResourceClaim {}/{}",
            claim.metadata.namespace.as_deref().unwrap_or(""),
            claim.metadata.name.as_deref().unwrap_or("")
        )))
    }
}
