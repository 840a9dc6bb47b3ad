//! Strata's group scaler: sizes inference services in whole prefill/decode
//! groups and asks the scheduler where each group would go.
//!
//! - [`model`]: the capacity model (tokens/s per prefill and per decode
//!   instance), the group shape, the latency proxies of the objective;
//! - [`policy`]: target load per group, the tidal profile and pre-scaling,
//!   to and from zero; and the per-role baseline an HPA gives;
//! - [`scaler`]: the scaler proper over a [`scaler::GroupPlacer`] — scale-up
//!   one whole group at a time after the scheduler's "where would one go",
//!   scale-down by the groups whose departure frees whole domains;
//! - [`engine`]: a [`scaler::GroupPlacer`] backed by the real engine and the
//!   PodGroup plugin's what-if planner, on an in-process cluster;
//! - [`trace`] and [`compare`]: the day-long comparison of per-role and
//!   group scaling on the Azure and Mooncake LLM traces;
//! - [`prometheus`]: instant queries of a Prometheus-compatible API, the
//!   controller's inputs (strictly parsed outside input);
//! - [`controller`]: the scaler against a real API server — a leader-only
//!   task of the scheduler's Kubernetes adapter that scales opted-in
//!   LeaderWorkerSets, asking the engine's PodGroup what-if in-process.
//!
//! The core ([`model`], [`policy`], [`scaler`]) has no I/O and no cluster
//! types; [`engine`] drives an in-process engine; only [`prometheus`] and
//! [`controller`] talk to the network.

#![warn(missing_docs)]

pub mod compare;
pub mod controller;
pub mod engine;
pub mod model;
pub mod policy;
pub mod prometheus;
pub mod scaler;
pub mod trace;
