//! NodeAffinity: `spec.nodeSelector` and node affinity ("Assigning Pods to
//! Nodes"), plus the profile-wide `addedAffinity` of NodeAffinityArgs
//! ("Scheduler Configuration", node affinity per scheduling profile).
//!
//! Rules, as the Kubernetes docs state them:
//! - a node fits when it matches the pod's `nodeSelector` (every pair) AND
//!   its required node affinity (any term; within a term, every expression)
//!   AND the profile's added required affinity;
//! - a term with no expressions and no fields matches nothing;
//! - the score of a node is the sum of the weights of the preferred terms it
//!   matches (the pod's and the profile's), rescaled to `0..=100` by the
//!   highest score among the feasible nodes.
//!
//! Everything the hot path reads was compiled when the pod was queued
//! (selectors over interned labels), so Filter and Score are node-local and
//! allocation-free on success. PreFilter narrows the candidates when every
//! required term pins `metadata.name` with `matchFields`, which turns a
//! DaemonSet-style pod into a lookup instead of a scan of every node.

use std::sync::Arc;
use strata_scheduler::labels::{NodeSelector, NodeSelectorTerm, Op};
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, CycleState, EventResource, FilterPlugin, Handle,
    MAX_NODE_SCORE, NodeId, NodeInfo, NodeScore, Plugin, PluginArgsError, PodInfo, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, QueueingHint, ScorePlugin, Snapshot, Status, Sym,
};

mod args;

pub use args::NodeAffinityArgs;

/// The plugin's configuration name.
pub const NAME: &str = "NodeAffinity";

/// Why a node was rejected by the pod's own selector or affinity.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Why a node was rejected by the profile's `addedAffinity`.
pub const REASON_ENFORCED: &str = "node(s) didn't match scheduler-enforced node affinity";

/// Why a pod fits no node at all: its required terms pin disjoint sets of
/// node names.
pub const REASON_CONFLICT: &str = "pod affinity terms conflict";

/// The NodeAffinity plugin.
#[derive(Debug, Clone, Default)]
pub struct NodeAffinity {
    args: NodeAffinityArgs,
}

impl NodeAffinity {
    /// A plugin with compiled arguments.
    pub fn new(args: NodeAffinityArgs) -> NodeAffinity {
        NodeAffinity { args }
    }

    /// Whether `node` satisfies the profile's added required affinity.
    #[inline]
    fn enforced_fits(&self, node: &NodeInfo) -> bool {
        self.args
            .added_required
            .as_ref()
            .is_none_or(|s| s.matches(&node.labels, node.name))
    }

    /// Whether `node` passes everything this plugin's Filter checks.
    #[inline]
    fn fits(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        self.enforced_fits(node) && pod.matches_required_node_affinity(node)
    }
}

/// Sum of the weights of the terms in `terms` that `node` matches.
#[inline]
fn weight_sum(terms: &[(i32, NodeSelectorTerm)], node: &NodeInfo) -> i64 {
    terms
        .iter()
        .filter(|(_, t)| t.matches(&node.labels, node.name))
        .map(|(w, _)| i64::from(*w))
        .sum()
}

/// The node names a required node selector pins, if it pins any.
///
/// Terms are ORed, so a single term without a `metadata.name In` field lets
/// every node through (`None`). Within a term the field requirements are
/// ANDed, so several `In` lists intersect. `Some(empty)` means the terms
/// contradict themselves and no node can match.
fn pinned_names(sel: &NodeSelector) -> Option<Vec<Sym>> {
    let mut union: Vec<Sym> = Vec::new();
    for term in &sel.terms {
        let mut term_names: Option<Vec<Sym>> = None;
        for op in &term.names {
            if let Op::In(values) = op {
                term_names = Some(match term_names {
                    None => values.to_vec(),
                    Some(mut acc) => {
                        acc.retain(|n| values.contains(n));
                        acc
                    }
                });
            }
        }
        union.extend(term_names?);
    }
    union.sort_unstable();
    union.dedup();
    Some(union)
}

pub use crate::common::scoring::default_normalize_score;

strata_scheduler::plugin!(NodeAffinity: NAME => [PreFilter, Filter, PreScore, Score] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![ClusterEventKind::new(
            EventResource::Node,
            ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL),
        )]
    }

    /// Retry when a node now fits that did not before (a new node, or new
    /// labels on an existing one).
    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        crate::common::scoring::hint_node_now_fits(event, |n| self.fits(pod, n))
    }
});

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> PreFilterResult {
        let spec = &pod.spec;
        let Some(required) = spec.required_node_affinity.as_ref() else {
            if spec.node_selector.is_none() && self.args.added_required.is_none() {
                return PreFilterResult::skip();
            }
            return PreFilterResult::ok();
        };
        match pinned_names(required) {
            None => PreFilterResult::ok(),
            Some(names) if names.is_empty() => {
                PreFilterResult::status(Status::unresolvable(REASON_CONFLICT))
            }
            Some(names) => {
                let mut ids: Vec<NodeId> = names
                    .into_iter()
                    .filter_map(|n| snap.node_by_name(n).map(|node| node.id))
                    .collect();
                ids.sort_unstable();
                PreFilterResult::nodes(ids)
            }
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !self.enforced_fits(node) {
            return Status::unresolvable(REASON_ENFORCED);
        }
        if !pod.matches_required_node_affinity(node) {
            return Status::unresolvable(REASON);
        }
        Status::success()
    }

    fn is_node_local(&self) -> bool {
        true
    }

    /// Reads the pod's spec only (requests, node rules, tolerations, ports).
    fn node_local_reads_pod_identity(&self) -> bool {
        false
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snap: &Snapshot,
        _feasible: &[NodeId],
    ) -> Status {
        if pod.spec.preferred_node_affinity.is_empty() && self.args.added_preferred.is_empty() {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(weight_sum(&self.args.added_preferred, node)
            + weight_sum(&pod.spec.preferred_node_affinity, node))
    }

    fn has_normalize(&self) -> bool {
        true
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, false, scores);
        Status::success()
    }

    fn is_node_local(&self) -> bool {
        true
    }

    /// Reads the pod's spec only (requests, node rules, tolerations, ports).
    fn node_local_reads_pod_identity(&self) -> bool {
        false
    }
}

/// Builds the plugin from NodeAffinityArgs (`addedAffinity`, optional).
pub fn factory(
    args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(NodeAffinity::new(NodeAffinityArgs::parse(args)?)))
}

#[cfg(test)]
mod tests;
