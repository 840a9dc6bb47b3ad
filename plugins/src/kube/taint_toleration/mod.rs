//! TaintToleration: node taints against pod tolerations ("Taints and
//! Tolerations").
//!
//! - Filter: a node with a `NoSchedule` or `NoExecute` taint that none of the
//!   pod's tolerations tolerates is rejected, naming the first such taint as
//!   kube-scheduler prints it: `node(s) had untolerated taint {key: value}`.
//! - Score: the number of `PreferNoSchedule` taints the pod does not
//!   tolerate, normalized in reverse (fewer is better; when no feasible node
//!   has any, every node gets the maximum).
//!
//! Only tolerations whose effect is `PreferNoSchedule` or empty can tolerate
//! a `PreferNoSchedule` taint; PreScore keeps just those, once per pod, so
//! Score scans fewer. Both Filter and Score read the pod and one node only
//! (node-local) and allocate nothing unless they reject.

use std::sync::Arc;
use strata_scheduler::model::{Taint, TaintEffect, Toleration, tolerated};
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, CycleState, EventResource, FilterPlugin, Handle,
    MAX_NODE_SCORE, NodeId, NodeInfo, NodeScore, Plugin, PluginArgsError, PodInfo, PreScorePlugin,
    QueueingHint, ScorePlugin, Snapshot, Status,
};

use crate::common::scoring::default_normalize_score;

/// The plugin's configuration name.
pub const NAME: &str = "TaintToleration";

/// The TaintToleration plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaintToleration;

/// The pod's tolerations that can tolerate a `PreferNoSchedule` taint.
#[derive(Clone, Debug)]
struct PreferTolerations(Vec<Toleration>);

/// The first `NoSchedule`/`NoExecute` taint of `node` that `pod` does not
/// tolerate.
#[inline]
fn first_untolerated<'n>(pod: &PodInfo, node: &'n NodeInfo) -> Option<&'n Taint> {
    node.taints.iter().find(|t| {
        matches!(t.effect, TaintEffect::NoSchedule | TaintEffect::NoExecute)
            && !tolerated(&pod.spec.tolerations, t)
    })
}

/// How many `PreferNoSchedule` taints of `node` none of `tolerations`
/// tolerates.
#[inline]
fn intolerable_prefer_no_schedule(tolerations: &[Toleration], node: &NodeInfo) -> i64 {
    node.taints
        .iter()
        .filter(|t| t.effect == TaintEffect::PreferNoSchedule && !tolerated(tolerations, t))
        .count() as i64
}

strata_scheduler::plugin!(TaintToleration: NAME => [Filter, PreScore, Score] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![ClusterEventKind::new(
            EventResource::Node,
            ActionType::ADD.or(ActionType::UPDATE_NODE_TAINT),
        )]
    }

    /// Retry when a node's hard taints become tolerable: a new node the pod
    /// tolerates, or a taint change that removes what the pod did not
    /// tolerate.
    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        crate::common::scoring::hint_node_now_fits(event, |n| first_untolerated(pod, n).is_none())
    }
});

impl FilterPlugin for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match first_untolerated(pod, node) {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!("node(s) had untolerated taint {t}")),
        }
    }

    fn is_node_local(&self) -> bool {
        true
    }

    /// Reads the pod's spec only (requests, node rules, tolerations, ports).
    fn node_local_reads_pod_identity(&self) -> bool {
        false
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snap: &Snapshot,
        _feasible: &[NodeId],
    ) -> Status {
        let prefer = pod
            .spec
            .tolerations
            .iter()
            .filter(|t| t.effect.is_none_or(|e| e == TaintEffect::PreferNoSchedule))
            .cloned()
            .collect();
        state.insert(PreferTolerations(prefer));
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        // Without PreScore's state the pod's full list gives the same count:
        // a toleration with another effect never tolerates PreferNoSchedule.
        let tolerations = state
            .get::<PreferTolerations>()
            .map_or(pod.spec.tolerations.as_slice(), |p| p.0.as_slice());
        Ok(intolerable_prefer_no_schedule(tolerations, node))
    }

    fn has_normalize(&self) -> bool {
        true
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, true, scores);
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

/// Builds the plugin. TaintToleration takes no arguments.
pub fn factory(
    _args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(TaintToleration))
}

#[cfg(test)]
mod tests;
