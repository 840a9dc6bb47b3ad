//! Choosing one node among the preemption candidates.
//!
//! kube-scheduler's criteria, each applied only to break the ties of the
//! previous one:
//!
//! 1. fewest PodDisruptionBudget violations;
//! 2. lowest priority of the most important victim;
//! 3. smallest sum of victim priorities, each shifted by 2^31 so every term
//!    is positive (otherwise a node with many negative-priority victims
//!    would beat a node with one of the same priority);
//! 4. fewest victims;
//! 5. latest start among the highest-priority victims (disturb the pods that
//!    have run the shortest);
//! 6. the first candidate in evaluation order.
//!
//! A lexicographic minimum over that key gives the same answer as applying
//! the criteria one after another.

use super::victims::{Victims, start_ms};
use std::cmp::Reverse;
use std::sync::Arc;
use strata_scheduler::framework::NodeRef;
use strata_scheduler::model::PodInfo;

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

/// The cost of evicting `pods` (`pdb_violations` of them against a budget)
/// by the criteria above; smaller is better. Shared with PodGroup's gang
/// preemption, which compares candidate domains the same way.
pub(crate) type CostKey = (usize, i64, i64, usize, Reverse<i64>);

/// See [`CostKey`].
pub(crate) fn cost_key(pods: &[Arc<PodInfo>], pdb_violations: usize) -> CostKey {
    let Some(highest) = pods.iter().map(|p| p.priority).max() else {
        // No victim at all costs nothing: best possible.
        return (pdb_violations, i64::MIN, i64::MIN, 0, Reverse(i64::MAX));
    };
    let sum: i64 = pods
        .iter()
        .map(|p| i64::from(p.priority) + (i64::from(i32::MAX) + 1))
        .sum();
    let earliest_of_highest = pods
        .iter()
        .filter(|p| p.priority == highest)
        .map(|p| start_ms(p))
        .min()
        .unwrap_or(i64::MAX);
    (
        pdb_violations,
        i64::from(highest),
        sum,
        pods.len(),
        Reverse(earliest_of_highest),
    )
}

/// The index of the best candidate, `None` when there is none.
pub(super) fn pick_one(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .min_by_key(|(i, c)| (key(c), *i))
        .map(|(i, _)| i)
}
