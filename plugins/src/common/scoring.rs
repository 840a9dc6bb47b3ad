//! Small pieces several plugins share: kube-scheduler's default score
//! normalization, and the queueing hint of filters that judge one node.

use strata_scheduler::sdk::{ClusterEvent, EventObject, NodeInfo, NodeScore, QueueingHint};

/// kube-scheduler's `DefaultNormalizeScore`: rescales `scores` so the highest
/// becomes `max_priority` (integer division, as kube does). With `reverse`,
/// the order flips (`max_priority - scaled`), and when every score is zero
/// every node gets `max_priority`; without it, all-zero scores stay zero.
pub fn default_normalize_score(max_priority: i64, reverse: bool, scores: &mut [NodeScore]) {
    let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if max == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = max_priority;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        // i128 keeps max_priority * score exact for any i64 score.
        let scaled = (i128::from(max_priority) * i128::from(s.score) / i128::from(max)) as i64;
        s.score = if reverse {
            max_priority - scaled
        } else {
            scaled
        };
    }
}

/// The queueing hint of a filter that judges one node at a time: retry when
/// a node now passes (`fits`) that did not before (a new node, or a change
/// to an existing one); skip every other event.
pub(crate) fn hint_node_now_fits(
    event: &ClusterEvent<'_>,
    fits: impl Fn(&NodeInfo) -> bool,
) -> QueueingHint {
    match event.object {
        EventObject::Node {
            old,
            new: Some(new),
        } if fits(new) => {
            if old.is_some_and(&fits) {
                QueueingHint::Skip
            } else {
                QueueingHint::Queue
            }
        }
        _ => QueueingHint::Skip,
    }
}
