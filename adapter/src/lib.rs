//! # strata-kube
//!
//! Strata's Kubernetes adapter: the engine's [`ClusterPort`] over the API
//! with kube-rs, and everything a scheduler needs to run in a cluster.
//!
//! - [`informer`]: list (paginated) then watch (bookmarks, resume, 410 →
//!   relist and reconcile) Nodes, Pods, PodDisruptionBudgets, Namespaces,
//!   PriorityClasses and custom resources, feeding the engine's update
//!   channel; [`convert`] strips what scheduling never reads first.
//! - [`groups`] and [`dra`]: custom resources plugins read — PodGroups, and
//!   the DRA objects (`resource.k8s.io/v1` DeviceClasses, ResourceSlices,
//!   ResourceClaims, ResourceClaimTemplates) — fed into the plugins' stores;
//!   an API the cluster does not serve is skipped. The leader writes each
//!   PodGroup's status back ([`groups::StatusWriter`]).
//! - [`port`]: binds (`pods/binding`), `PodScheduled` status patches,
//!   preemption deletions, rate-limited `events.k8s.io/v1` events, and the
//!   PreBind writes: pod annotations (merge patch; device assignments) and
//!   ResourceClaim status (PUT of `resourceclaims/status` guarded by the
//!   claim's resourceVersion, after the delete-protection finalizer; DRA
//!   allocations).
//! - [`leader`]: Lease-based leader election; only the leader schedules,
//!   and only the leader's [`leader::LeaderTask`]s write (PodGroup status,
//!   the group scaler).
//! - [`query`]: questions tasks of the same process ask the engine (the
//!   PodGroup what-if), answered on the engine thread between cycles.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` ([`metrics`]: kube-scheduler's
//!   metric names plus `strata_*`).
//! - [`Adapter`]: starts and stops all of it around the engine's run loop,
//!   which runs on its own OS thread.
//!
//! This crate is separate from `strata-scheduler` so the engine carries no
//! HTTP or Kubernetes client dependency; the engine only knows its
//! [`ClusterPort`] (a deviation from the first design, which put the adapter
//! inside the engine crate).
//!
//! [`ClusterPort`]: strata_scheduler::cluster::ClusterPort

#![warn(missing_docs)]

mod adapter;
pub mod client;
pub mod convert;
pub mod dra;
pub mod groups;
pub mod http;
pub mod informer;
pub mod leader;
pub mod memory_pool;
pub mod metrics;
pub mod options;
pub mod port;
pub mod query;
pub mod serving;
pub mod translate;

pub use adapter::{Adapter, AdapterError, CustomResource};

/// Where an API call applies, for RBAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (or a cluster-scoped resource): a ClusterRole.
    Cluster,
    /// Only the scheduler's own namespace (the Lease's): a Role.
    OwnNamespace,
}

/// One kind of API call the adapter makes, as RBAC names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiCall {
    /// `list`, `watch`, `get`, `create`, `update`, `patch`, `delete`.
    pub verb: &'static str,
    /// API group (empty for core).
    pub group: &'static str,
    /// Resource, with `/subresource` when there is one.
    pub resource: &'static str,
    /// Where.
    pub scope: Scope,
}

const fn call(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    scope: Scope,
) -> ApiCall {
    ApiCall {
        verb,
        group,
        resource,
        scope,
    }
}

/// Every API call the adapter makes (custom resources a plugin registers
/// aside): the manifests' RBAC must allow each, and nothing more. Tests
/// check both, and that a run makes no call outside this list.
pub const API_CALLS: &[ApiCall] = &[
    call("list", "", "nodes", Scope::Cluster),
    call("watch", "", "nodes", Scope::Cluster),
    // A bind or annotation patch whose answer was lost or refused is read
    // back before its outcome is decided.
    call("get", "", "pods", Scope::Cluster),
    call("list", "", "pods", Scope::Cluster),
    // The HTTPS port's delegated authentication and authorization.
    call(
        "create",
        "authentication.k8s.io",
        "tokenreviews",
        Scope::Cluster,
    ),
    call(
        "create",
        "authorization.k8s.io",
        "subjectaccessreviews",
        Scope::Cluster,
    ),
    call("watch", "", "pods", Scope::Cluster),
    call("list", "", "namespaces", Scope::Cluster),
    call("watch", "", "namespaces", Scope::Cluster),
    call("list", "policy", "poddisruptionbudgets", Scope::Cluster),
    call("watch", "policy", "poddisruptionbudgets", Scope::Cluster),
    call(
        "list",
        "scheduling.k8s.io",
        "priorityclasses",
        Scope::Cluster,
    ),
    call(
        "watch",
        "scheduling.k8s.io",
        "priorityclasses",
        Scope::Cluster,
    ),
    call("list", "strata.io", "podgroups", Scope::Cluster),
    call("watch", "strata.io", "podgroups", Scope::Cluster),
    call("list", "scheduling.x-k8s.io", "podgroups", Scope::Cluster),
    call("watch", "scheduling.x-k8s.io", "podgroups", Scope::Cluster),
    call("patch", "strata.io", "podgroups/status", Scope::Cluster),
    call(
        "patch",
        "scheduling.x-k8s.io",
        "podgroups/status",
        Scope::Cluster,
    ),
    call("list", "resource.k8s.io", "deviceclasses", Scope::Cluster),
    call("watch", "resource.k8s.io", "deviceclasses", Scope::Cluster),
    call("list", "resource.k8s.io", "resourceslices", Scope::Cluster),
    call("watch", "resource.k8s.io", "resourceslices", Scope::Cluster),
    call("list", "resource.k8s.io", "resourceclaims", Scope::Cluster),
    call("watch", "resource.k8s.io", "resourceclaims", Scope::Cluster),
    call(
        "list",
        "resource.k8s.io",
        "resourceclaimtemplates",
        Scope::Cluster,
    ),
    call(
        "watch",
        "resource.k8s.io",
        "resourceclaimtemplates",
        Scope::Cluster,
    ),
    call("patch", "resource.k8s.io", "resourceclaims", Scope::Cluster),
    call(
        "update",
        "resource.k8s.io",
        "resourceclaims/status",
        Scope::Cluster,
    ),
    call("patch", "", "pods", Scope::Cluster),
    call("create", "", "pods/binding", Scope::Cluster),
    call("patch", "", "pods/status", Scope::Cluster),
    call("delete", "", "pods", Scope::Cluster),
    call("create", "events.k8s.io", "events", Scope::Cluster),
    call("get", "coordination.k8s.io", "leases", Scope::OwnNamespace),
    call(
        "create",
        "coordination.k8s.io",
        "leases",
        Scope::OwnNamespace,
    ),
    call(
        "update",
        "coordination.k8s.io",
        "leases",
        Scope::OwnNamespace,
    ),
];
pub use client::make_client;
pub use options::{AdapterOptions, LeaderElection};
pub use serving::{SecureServing, Serving};
