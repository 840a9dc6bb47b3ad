//! # strata-kwok
//!
//! Runs a simulator scenario against a real API server whose nodes are
//! [kwok](https://kwok.sigs.k8s.io) nodes, and measures the scheduler that
//! binds its pods: the same scenario files as `strata simulate`, the same
//! figures where they make sense (pods/s, create-to-bind latency, every pod
//! bound, none bound twice), plus what only a real cluster shows (the API
//! server's request latencies, a scheduler's start-up and memory).
//!
//! - [`objects`]: the scenario as kwok Nodes and Pods (no I/O).
//! - [`check`]: placement checks on the final state, from the API objects
//!   alone (no I/O).
//! - [`measure`]: throughput samples as scheduler_perf takes them, latency
//!   percentiles (no I/O).
//! - [`apimetrics`]: reading the API server's `/metrics` text (no I/O).
//! - [`cluster`]: the API calls — concurrent creates, the bind watch,
//!   cleanup.
//! - [`run`]: whole runs: [`run::run`] against a scheduler already running,
//!   [`run::compare`] starting each of several schedulers in turn on the
//!   same objects.
//!
//! What it is not: a kwok installer or a control plane. It expects an API
//! server with kwok managing nodes annotated `kwok.x-k8s.io/node: fake`
//! (`testing/control-plane/up.sh DIR --kwok` starts one on loopback).

#![warn(missing_docs)]

pub mod apimetrics;
pub mod check;
pub mod cluster;
pub mod measure;
pub mod objects;
pub mod run;

pub use run::{Contender, RunError, RunOptions, RunReport, compare};
