//! The engine's side of kube-scheduler extenders (see [`crate::extenders`]):
//! which extenders a pod goes to, their filter after the in-tree Filter and
//! their scores beside Score, with the failure policy and the events.
//!
//! Called once per cycle per extender (never per node), on the scheduling
//! thread; a call blocks at most the extender's timeout.

use super::Scheduler;
use crate::cluster::{EventKind, PodEvent};
use crate::extenders::{Extender, MAX_EXTENDER_PRIORITY};
use crate::framework::{Diagnosis, MAX_NODE_SCORE, Status};
use crate::model::{NodeId, PodInfo};
use std::sync::Arc;

impl Scheduler {
    /// The extenders `pod` goes to, in configuration order.
    pub(super) fn interested_extenders(&self, pod: &PodInfo) -> Vec<Arc<dyn Extender>> {
        self.extenders
            .iter()
            .filter(|e| e.is_interested(pod))
            .cloned()
            .collect()
    }

    fn extender_event(&self, pod: &PodInfo, message: String) {
        self.cluster.record_event(PodEvent {
            namespace: pod.namespace,
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            kind: EventKind::Warning,
            reason: "ExtenderFailed",
            message,
        });
    }

    /// Runs the filtering extenders of `ext` over `feasible`, each on what
    /// the one before kept. Nodes they reject go into `diagnosis` with the
    /// extender's reason. `Err` (the attempt fails) when a non-ignorable
    /// extender fails; an ignorable one is skipped with an event.
    pub(super) fn extender_filter(
        &self,
        ext: &[Arc<dyn Extender>],
        pod: &PodInfo,
        mut feasible: Vec<NodeId>,
        diagnosis: &mut Diagnosis,
    ) -> Result<Vec<NodeId>, String> {
        let snap = self.cache.snapshot();
        for e in ext.iter().filter(|e| e.is_filter()) {
            if feasible.is_empty() {
                break;
            }
            let out = match e.filter(pod, &feasible, snap) {
                Ok(out) => out,
                Err(err) if e.is_ignorable() => {
                    tracing::info!(pod = %pod.key(), extender = e.name(), error = %err, "ignorable extender failed; skipped");
                    self.extender_event(
                        pod,
                        format!(
                            "extender {} failed and is ignorable, so it was skipped: {err}",
                            e.name()
                        ),
                    );
                    continue;
                }
                Err(err) => {
                    return Err(format!("extender {} failed to filter: {err}", e.name()));
                }
            };
            // The extender's client checks that it named only candidates;
            // keep that true whatever the client.
            let mut given = feasible.clone();
            given.sort_unstable();
            let known = |id: &NodeId| given.binary_search(id).is_ok();
            if let Some(bad) = out
                .feasible
                .iter()
                .chain(out.failed.iter().map(|(n, _)| n))
                .chain(out.failed_unresolvable.iter().map(|(n, _)| n))
                .find(|n| !known(n))
            {
                let err = format!(
                    "extender {} answered with node {} that was not a candidate",
                    e.name(),
                    snap.node(*bad).name
                );
                if e.is_ignorable() {
                    self.extender_event(pod, format!("{err}; ignorable, so it was skipped"));
                    continue;
                }
                return Err(err);
            }
            for (n, why) in &out.failed_unresolvable {
                diagnosis
                    .node_statuses
                    .push((*n, Status::unresolvable(why.clone())));
            }
            for (n, why) in &out.failed {
                if out.failed_unresolvable.iter().any(|(u, _)| u == n) {
                    continue;
                }
                diagnosis
                    .node_statuses
                    .push((*n, Status::unschedulable(why.clone())));
            }
            feasible = out.feasible;
        }
        Ok(feasible)
    }

    /// The prioritizing extenders' total for each of `feasible` (same
    /// order), as kube-scheduler adds it: each score times the extender's
    /// weight, scaled by `MAX_NODE_SCORE / MAX_EXTENDER_PRIORITY`. A failing
    /// prioritize is skipped (kube-scheduler ignores those errors), with an
    /// event.
    pub(super) fn extender_scores(
        &self,
        ext: &[Arc<dyn Extender>],
        pod: &PodInfo,
        feasible: &[NodeId],
    ) -> Vec<i64> {
        let mut totals = Vec::new();
        let snap = self.cache.snapshot();
        for e in ext.iter().filter(|e| e.is_prioritizer()) {
            let scores = match e.prioritize(pod, feasible, snap) {
                Ok(s) => s,
                Err(err) => {
                    tracing::info!(pod = %pod.key(), extender = e.name(), error = %err, "extender prioritize failed; its scores are skipped");
                    self.extender_event(
                        pod,
                        format!(
                            "extender {} failed to prioritize, its scores are skipped: {err}",
                            e.name()
                        ),
                    );
                    continue;
                }
            };
            if totals.is_empty() {
                totals = vec![0i64; feasible.len()];
            }
            let mut sorted: Vec<(NodeId, usize)> = feasible.iter().copied().zip(0..).collect();
            sorted.sort_unstable();
            for (node, score) in scores {
                let Ok(k) = sorted.binary_search_by_key(&node, |(n, _)| *n) else {
                    continue;
                };
                let add = score
                    .clamp(0, MAX_EXTENDER_PRIORITY)
                    .saturating_mul(e.weight())
                    .saturating_mul(MAX_NODE_SCORE / MAX_EXTENDER_PRIORITY);
                let t = &mut totals[sorted[k].1];
                *t = t.saturating_add(add);
            }
        }
        totals
    }
}
