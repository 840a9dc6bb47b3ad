//! Choosing one node among the preemption candidates: the lexicographic
//! minimum of [`cost_key`] (kube-scheduler's criteria, see
//! [`crate::common::preemption`]), the first candidate in evaluation order
//! breaking a tie.

use super::victims::Victims;
use crate::common::preemption::{CostKey, cost_key};
use strata_scheduler::sdk::NodeRef;

/// A node where preemption lets the pod fit, with what it costs.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    /// The node.
    pub node: NodeRef,
    /// What must be evicted there.
    pub victims: Victims,
}

/// The sort key of a candidate; smaller is better. The evaluation index is
/// the final tie-break.
fn key(c: &Candidate) -> CostKey {
    cost_key(&c.victims.pods, c.victims.pdb_violations)
}

/// The index of the best candidate, `None` when there is none.
pub(super) fn pick_one(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .min_by_key(|(i, c)| (key(c), *i))
        .map(|(i, _)| i)
}
