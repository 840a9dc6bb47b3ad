//! # strata-kube
//!
//! Strata's Kubernetes adapter: the engine's [`ClusterPort`] over the API
//! with kube-rs, and everything a scheduler needs to run in a cluster.
//!
//! - [`informer`]: list (paginated) then watch (bookmarks, resume, 410 →
//!   relist and reconcile) Nodes, Pods, PodDisruptionBudgets, Namespaces,
//!   PriorityClasses and custom resources, feeding the engine's update
//!   channel; [`convert`] strips what scheduling never reads first.
//! - [`port`]: binds (`pods/binding`), `PodScheduled` status patches,
//!   preemption deletions and rate-limited `events.k8s.io/v1` events.
//! - [`leader`]: Lease-based leader election; only the leader schedules.
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
pub mod http;
pub mod informer;
pub mod leader;
pub mod metrics;
pub mod options;
pub mod port;
pub mod translate;

pub use adapter::{Adapter, AdapterError, CustomResource};
pub use client::make_client;
pub use options::{AdapterOptions, LeaderElection};
