//! The engine's side of kube-scheduler extenders (see [`crate::extenders`]):
//! which extenders a pod goes to, their filter after the in-tree Filter and
//! their scores beside Score, with the failure policy and the events.
//!
//! Called once per cycle per extender (never per node), on the scheduling
//! thread; a call blocks at most the extender's timeout.

use super::Scheduler;
use crate::cache::Snapshot;
use crate::cluster::{ClusterPort, EventKind, PodEvent};
use crate::extenders::{Extender, ExtenderVictims, MAX_EXTENDER_PRIORITY};
use crate::framework::{
    Diagnosis, MAX_NODE_SCORE, PreemptionCandidate, PreemptionExtenders, Status,
};
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

    /// The extenders consulted on `pod`'s preemption.
    pub(super) fn preemption_call(&self, pod: &PodInfo) -> PreemptionCall<'_> {
        PreemptionCall {
            extenders: self
                .extenders
                .iter()
                .filter(|e| e.supports_preemption() && e.is_interested(pod))
                .cloned()
                .collect(),
            snap: self.cache.snapshot(),
            cluster: &*self.cluster,
        }
    }

    fn extender_event(&self, pod: &PodInfo, message: String) {
        extender_failed(&*self.cluster, pod, message);
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

/// The extenders consulted on one pod's preemption
/// ([`crate::framework::PostFilterContext::extenders`]): those interested
/// in the pod with a `preemptVerb`, in configuration order.
pub(super) struct PreemptionCall<'a> {
    /// The extenders.
    pub extenders: Vec<Arc<dyn Extender>>,
    /// The snapshot the candidates were found on.
    pub snap: &'a Snapshot,
    /// Where failure events go.
    pub cluster: &'a dyn ClusterPort,
}

impl PreemptionCall<'_> {
    fn event(&self, pod: &PodInfo, message: String) {
        extender_failed(self.cluster, pod, message);
    }
}

/// The `ExtenderFailed` warning event on `pod`.
fn extender_failed(cluster: &dyn ClusterPort, pod: &PodInfo, message: String) {
    cluster.record_event(PodEvent {
        namespace: pod.namespace,
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        kind: EventKind::Warning,
        reason: "ExtenderFailed",
        message,
    });
}

/// Checks an extender's preemption answer against the candidates it was
/// given and turns it into candidates: `Err` names what is wrong. Nodes it
/// answered with no victims are left out when `drop_empty` (an ignorable
/// extender), and are an error otherwise (kube-scheduler's check).
/// Candidates keep the order they were given in.
pub(super) fn narrow_candidates(
    pod: &PodInfo,
    given: &[PreemptionCandidate],
    answer: &[ExtenderVictims],
    snap: &Snapshot,
    drop_empty: bool,
) -> Result<Vec<PreemptionCandidate>, String> {
    let mut kept: Vec<Option<PreemptionCandidate>> = vec![None; given.len()];
    for v in answer {
        let Some(k) = given.iter().position(|c| c.node.name.as_str() == v.node) else {
            return Err(format!(
                "answered with node {:?} that was not a candidate",
                v.node
            ));
        };
        if kept[k].is_some() {
            return Err(format!("answered node {:?} twice", v.node));
        }
        if v.pods.is_empty() {
            if drop_empty {
                continue;
            }
            return Err(format!(
                "expected at least one victim pod on node {:?}",
                v.node
            ));
        }
        let Ok(pdb_violations) = usize::try_from(v.pdb_violations) else {
            return Err(format!(
                "answered {} PodDisruptionBudget violations on node {:?}",
                v.pdb_violations, v.node
            ));
        };
        let node = snap.node(given[k].node.id);
        let mut victims: Vec<Arc<PodInfo>> = Vec::with_capacity(v.pods.len());
        for uid in &v.pods {
            let Some(p) = node.pods.iter().find(|p| *p.uid == **uid) else {
                return Err(format!(
                    "claims to preempt pod (UID {uid:?}) on node {:?}, which is not there",
                    v.node
                ));
            };
            if p.priority >= pod.priority {
                return Err(format!(
                    "names pod {} (priority {}) on node {:?} as a victim, which is not of lower priority than {} ({})",
                    p.key(),
                    p.priority,
                    v.node,
                    pod.key(),
                    pod.priority
                ));
            }
            if !victims.iter().any(|q| q.uid == p.uid) {
                victims.push(Arc::clone(p));
            }
        }
        // Most important first, as the plugin orders its own victims.
        victims.sort_by_key(|p| std::cmp::Reverse(p.priority));
        kept[k] = Some(PreemptionCandidate {
            node: given[k].node,
            victims,
            pdb_violations,
        });
    }
    Ok(kept.into_iter().flatten().collect())
}

impl PreemptionExtenders for PreemptionCall<'_> {
    fn is_empty(&self) -> bool {
        self.extenders.is_empty()
    }

    fn process(
        &self,
        pod: &PodInfo,
        mut candidates: Vec<PreemptionCandidate>,
    ) -> Result<Vec<PreemptionCandidate>, Status> {
        for e in &self.extenders {
            if candidates.is_empty() {
                break;
            }
            let narrowed = e
                .process_preemption(pod, &candidates, self.snap)
                .map_err(|err| err.to_string())
                .and_then(|answer| {
                    narrow_candidates(pod, &candidates, &answer, self.snap, e.is_ignorable())
                });
            match narrowed {
                Ok(c) => candidates = c,
                Err(err) if e.is_ignorable() => {
                    tracing::info!(pod = %pod.key(), extender = e.name(), error = %err, "ignorable extender failed on preemption; skipped");
                    self.event(
                        pod,
                        format!(
                            "extender {} failed on preemption and is ignorable, so it was skipped: {err}",
                            e.name()
                        ),
                    );
                }
                Err(err) => {
                    let msg = format!("extender {} failed on preemption: {err}", e.name());
                    self.event(pod, msg.clone());
                    return Err(Status::error(msg));
                }
            }
        }
        Ok(candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::NodeRef;
    use crate::testing::{cache_with, node, pod};

    fn victims(node: &str, uids: &[&str], pdb: i64) -> ExtenderVictims {
        ExtenderVictims {
            node: node.into(),
            pods: uids.iter().map(|u| (*u).to_owned()).collect(),
            pdb_violations: pdb,
        }
    }

    /// Only a narrowing of the candidates is taken: unknown nodes, pods
    /// not on the node, victims of equal or higher priority, negative
    /// budget counts and repeated nodes are refused naming what is wrong;
    /// empty nodes are dropped only when the extender is ignorable.
    #[test]
    fn answers_must_narrow_the_candidates() {
        let cache = cache_with(
            vec![node("n1").build(), node("n2").build(), node("n3").build()],
            vec![
                pod("a").on("n1").priority(1).build(),
                pod("b").on("n1").priority(2).build(),
                pod("c").on("n2").priority(1).build(),
                pod("hi").on("n2").priority(50).build(),
            ],
        );
        let snap = cache.snapshot();
        let preemptor = pod("p").priority(10).build();
        let cand = |name: &str, uids: &[&str]| {
            let info = snap.node_by_name(crate::intern::Sym::new(name)).unwrap();
            PreemptionCandidate {
                node: NodeRef {
                    id: info.id,
                    name: info.name,
                },
                victims: uids
                    .iter()
                    .map(|u| Arc::clone(info.pods.iter().find(|p| &*p.uid == *u).unwrap()))
                    .collect(),
                pdb_violations: 0,
            }
        };
        let given = vec![cand("n1", &["uid-a", "uid-b"]), cand("n2", &["uid-c"])];
        let narrow = |answer: &[ExtenderVictims], drop_empty| {
            narrow_candidates(&preemptor, &given, answer, snap, drop_empty)
        };

        // n2 dropped, n1 narrowed to one victim, order kept.
        let kept = narrow(&[victims("n1", &["uid-a"], 1)], false).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].node.name.as_str(), "n1");
        assert_eq!(kept[0].victims.len(), 1);
        assert_eq!(&*kept[0].victims[0].uid, "uid-a");
        assert_eq!(kept[0].pdb_violations, 1);
        let kept = narrow(
            &[victims("n2", &["uid-c"], 0), victims("n1", &["uid-b"], 0)],
            false,
        )
        .unwrap();
        let order: Vec<&str> = kept.iter().map(|c| c.node.name.as_str()).collect();
        assert_eq!(order, ["n1", "n2"]);

        for (answer, needle) in [
            (victims("n3", &["uid-a"], 0), "not a candidate"),
            (victims("ghost", &["uid-a"], 0), "not a candidate"),
            (victims("n1", &["uid-c"], 0), "not there"),
            (victims("n1", &["uid-nope"], 0), "not there"),
            (victims("n2", &["uid-hi"], 0), "not of lower priority"),
            (victims("n1", &["uid-a"], -1), "PodDisruptionBudget"),
            (victims("n1", &[], 0), "at least one victim"),
        ] {
            let err = narrow(std::slice::from_ref(&answer), false).unwrap_err();
            assert!(err.contains(needle), "{answer:?}: {err}");
        }
        let err = narrow(
            &[victims("n1", &["uid-a"], 0), victims("n1", &["uid-b"], 0)],
            false,
        )
        .unwrap_err();
        assert!(err.contains("twice"), "{err}");
        // An ignorable extender's empty node is dropped, not an error.
        let kept = narrow(&[victims("n1", &[], 0), victims("n2", &["uid-c"], 0)], true).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].node.name.as_str(), "n2");
    }
}
