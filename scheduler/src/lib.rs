//! # strata-scheduler
//!
//! The scheduling engine of Strata, a Kubernetes scheduler for AI clusters.
//!
//! This crate holds the plugin framework (the traits vendors implement), the
//! scheduling queue, the cache and its snapshot, the scheduling and binding
//! cycles, profiles and configuration, and the [`cluster::ClusterPort`]
//! through which the engine talks to a cluster. It holds no plugins (those
//! are in `strata-plugins`) and does no I/O of its own: the Kubernetes
//! adapter and the simulator implement the port.
//!
//! The flow of one pod: a [`cluster::ClusterUpdate`] adds it to the
//! [`queue::SchedulingQueue`]; [`engine::Scheduler::schedule_one`] pops it and
//! runs PreFilter, Filter (over every candidate node), PostFilter when
//! nothing fits, PreScore, Score and NormalizeScore, then assumes it in the
//! [`cache::Cache`] and runs Reserve and Permit; the binding cycle runs
//! PreBind, Bind and PostBind on an async pool.
//!
//! A plugin imports from [`sdk`] only: the traits, the views and the
//! [`plugin!`] macro that declares which extension points it serves.
//! Builders for tests ([`testing`]) are behind the `testing` feature.

#![warn(missing_docs)]

pub mod cache;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod extenders;
pub mod framework;
pub mod intern;
pub mod labels;
pub mod model;
pub mod queue;
pub mod resources;
pub mod rng;
pub mod sdk;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
