//! # strata-extender
//!
//! kube-scheduler extenders for Strata: the HTTP client of
//! `k8s.io/kube-scheduler/extender/v1` behind the engine's
//! [`strata_scheduler::extenders::Extender`] hook, so that an extender
//! written for kube-scheduler works with Strata unchanged.
//!
//! [`register`] installs the client in a plugin registry; a configuration's
//! `extenders:` entries (kube-scheduler's `Extender` fields) then become
//! [`HttpExtender`]s when the scheduler is built. What the engine does with
//! them (filter after the in-tree Filter, scores beside Score, bind, the
//! failure policy) is described in [`strata_scheduler::extenders`]; this
//! crate owns the wire: JSON types ([`types`]), the objects sent
//! ([`objects`]), timeouts, TLS and the metrics ([`metrics`]).
//!
//! Preemption: an extender with a `preemptVerb` gets DefaultPreemption's
//! candidates (`ExtenderPreemptionArgs`) and answers the nodes and victims it
//! keeps (`ExtenderPreemptionResult`); the engine checks the answer.

#![warn(missing_docs)]

mod http;
pub mod metrics;
pub mod objects;
mod tls;
pub mod types;

pub use http::{CallError, HttpExtender, MAX_ANSWER_BYTES};

use std::sync::Arc;
use strata_scheduler::framework::Registry;

/// Installs the HTTP extender client in `registry`, so that `extenders:`
/// in the configuration is served.
pub fn register(registry: &mut Registry) {
    registry.set_extender_factory(Arc::new(http::factory));
}
