//! The scheduler's model as protocol messages, and node sets as runs.
//!
//! Quantities go out as the engine keeps them: cpu in millicores, every
//! other resource in its base unit. Nothing here runs per node per cycle
//! except when that node changed (a delta) or on a full sync.

use crate::pb;
use std::collections::HashMap;
use strata_scheduler::sdk::{NodeId, NodeInfo, PodInfo, ResourceVec};

/// `v`'s non-zero amounts by resource name.
pub(crate) fn resources(v: &ResourceVec) -> HashMap<String, i64> {
    v.nonzero_ids()
        .map(|id| (id.name().to_owned(), v.0[id.index()]))
        .collect()
}

/// The pod being scheduled.
pub(crate) fn pod(p: &PodInfo) -> pb::Pod {
    pb::Pod {
        uid: p.uid.to_string(),
        namespace: p.namespace.as_str().to_owned(),
        name: p.name.to_string(),
        labels: p
            .labels
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect(),
        annotations: p
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        priority: p.priority,
        requests: resources(&p.spec.requests),
    }
}

/// A node and the pods placed on it.
pub(crate) fn node(n: &NodeInfo) -> pb::Node {
    pb::Node {
        id: n.id.0,
        name: n.name.as_str().to_owned(),
        labels: n
            .labels
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect(),
        annotations: n
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        taints: n
            .taints
            .iter()
            .map(|t| pb::Taint {
                key: t.key.as_str().to_owned(),
                value: t.value.as_str().to_owned(),
                effect: format!("{:?}", t.effect),
            })
            .collect(),
        unschedulable: n.unschedulable,
        allocatable: resources(&n.allocatable),
        requested: resources(&n.requested),
        pods: n
            .pods
            .iter()
            .map(|p| pb::PodRef {
                uid: p.uid.to_string(),
                namespace: p.namespace.as_str().to_owned(),
                name: p.name.to_string(),
                priority: p.priority,
                requests: resources(&p.spec.requests),
            })
            .collect(),
    }
}

/// Encodes `ids` (any order, no repeats) as ascending runs, and returns the
/// ids in that order (the order a Score answer follows).
pub(crate) fn node_set(ids: &[NodeId]) -> (pb::NodeSet, Vec<NodeId>) {
    let mut sorted = ids.to_vec();
    if !sorted.is_sorted() {
        sorted.sort_unstable();
    }
    sorted.dedup();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i].0;
        let mut len = 1u32;
        while i + (len as usize) < sorted.len() && sorted[i + len as usize].0 == start + len {
            len += 1;
        }
        runs.push(start);
        runs.push(len);
        i += len as usize;
    }
    (pb::NodeSet { runs }, sorted)
}

/// Why a set of runs is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSetError {
    /// An odd number of values.
    #[error("runs hold {0} values, not (first, count) pairs")]
    Odd(usize),
    /// A run past `u32::MAX` or expanding beyond the limit.
    #[error("runs expand to more than {0} nodes")]
    TooLarge(usize),
    /// Runs out of order or overlapping.
    #[error("runs are not ascending and disjoint at run {0}")]
    Unordered(usize),
}

/// Expands runs into ids, refusing more than `limit` ids (outside input).
pub fn expand(set: &pb::NodeSet, limit: usize) -> Result<Vec<u32>, NodeSetError> {
    if !set.runs.len().is_multiple_of(2) {
        return Err(NodeSetError::Odd(set.runs.len()));
    }
    let mut out = Vec::new();
    let mut next: u64 = 0;
    for (k, pair) in set.runs.chunks_exact(2).enumerate() {
        let (first, count) = (u64::from(pair[0]), u64::from(pair[1]));
        if first < next {
            return Err(NodeSetError::Unordered(k));
        }
        let end = first + count;
        if end > u64::from(u32::MAX) + 1 || out.len() as u64 + count > limit as u64 {
            return Err(NodeSetError::TooLarge(limit));
        }
        out.extend((first..end).map(|i| i as u32));
        next = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contiguous_ids_are_one_run() {
        let ids: Vec<NodeId> = (0..16_000).map(NodeId).collect();
        let (set, order) = node_set(&ids);
        assert_eq!(set.runs, vec![0, 16_000]);
        assert_eq!(order.len(), 16_000);
    }

    #[test]
    fn bad_runs_are_refused() {
        assert!(expand(&pb::NodeSet { runs: vec![1] }, 10).is_err());
        assert!(
            expand(
                &pb::NodeSet {
                    runs: vec![5, 2, 4, 1]
                },
                10
            )
            .is_err()
        );
        assert!(
            expand(
                &pb::NodeSet {
                    runs: vec![0, u32::MAX]
                },
                1000
            )
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn runs_round_trip(mut ids in proptest::collection::btree_set(0u32..5_000, 0..400)) {
            let v: Vec<NodeId> = ids.iter().rev().map(|i| NodeId(*i)).collect();
            let (set, order) = node_set(&v);
            let back = expand(&set, 10_000).unwrap();
            let want: Vec<u32> = std::mem::take(&mut ids).into_iter().collect();
            prop_assert_eq!(&back, &want);
            prop_assert_eq!(order.iter().map(|n| n.0).collect::<Vec<_>>(), want);
            // Never more runs than ids.
            prop_assert!(set.runs.len() <= 2 * back.len());
        }
    }
}
