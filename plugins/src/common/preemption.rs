//! How preemption ranks what it would evict, shared by DefaultPreemption
//! (one pod's victims on one node) and PodGroup (a group's victims in one
//! domain).
//!
//! The cost of a set of victims: kube-scheduler's criteria for choosing a
//! node, each applied only to break the ties of the previous one:
//!
//! 1. fewest PodDisruptionBudget violations;
//! 2. lowest priority of the most important victim;
//! 3. smallest sum of victim priorities, each shifted by 2^31 so every term
//!    is positive (otherwise a node with many negative-priority victims
//!    would beat a node with one of the same priority);
//! 4. fewest victims;
//! 5. latest start among the highest-priority victims (disturb the pods that
//!    have run the shortest);
//! 6. the first candidate in evaluation order (the caller's tie-break).
//!
//! A lexicographic minimum over [`cost_key`] gives the same answer as applying
//! the criteria one after another.
//!
//! Victims themselves are ordered by [`more_important`] and split by
//! [`split_by_pdb`].

use std::cmp::{Ordering, Reverse};
use std::sync::Arc;
use strata_scheduler::cache::PdbInfo;
use strata_scheduler::sdk::PodInfo;

/// The cost of evicting `pods` (`pdb_violations` of them against a budget)
/// by the criteria of this module; smaller is better. DefaultPreemption
/// compares candidate nodes by it, PodGroup's gang preemption candidate
/// domains.
pub type CostKey = (usize, i64, i64, usize, Reverse<i64>);

/// See [`CostKey`].
pub fn cost_key(pods: &[Arc<PodInfo>], pdb_violations: usize) -> CostKey {
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

/// The start time used to order pods: creation time, with an unknown (0)
/// time counted as "now" (the latest), as kube-scheduler does for a pod
/// without a start time.
#[inline]
pub fn start_ms(p: &PodInfo) -> i64 {
    if p.creation_ms == 0 {
        i64::MAX
    } else {
        p.creation_ms
    }
}

/// kube-scheduler's `MoreImportantPod` as an ordering: `Less` when `a` is
/// more important (higher priority, then earlier start).
pub fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| start_ms(a).cmp(&start_ms(b)))
}

/// Splits `pods` (most important first; order is kept in both halves) into
/// those whose eviction would break a budget and those whose would not.
/// Each matching budget's `disruptions_allowed` counts down as pods are
/// considered, so the first pods a budget covers may go and later ones
/// violate it. A pod without labels matches no budget; a budget with no or
/// an empty selector matches nothing (kube-scheduler's rule for preemption).
pub fn split_by_pdb(
    pods: Vec<Arc<PodInfo>>,
    pdbs: &[&PdbInfo],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let mut violating = Vec::new();
    let mut non_violating = Vec::new();
    for p in pods {
        let mut violated = false;
        if !p.labels.is_empty() {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.namespace != p.namespace {
                    continue;
                }
                let Some(sel) = pdb.selector.as_ref().filter(|s| !s.is_empty()) else {
                    continue;
                };
                if !sel.matches(&p.labels) {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(p);
        } else {
            non_violating.push(p);
        }
    }
    (violating, non_violating)
}
