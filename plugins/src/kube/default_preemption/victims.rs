//! The what-if on one node: which pods would have to go for the preemptor to
//! fit, found the way kube-scheduler finds them.
//!
//! 1. Every pod of strictly lower priority is removed from a copy of the
//!    node, and each removal is reported to the profile's PreFilter
//!    extensions on a copy of the cycle state, so plugins whose PreFilter
//!    state counts pods (spread, anti-affinity) see the same world as the
//!    node copy. Pods of equal or higher priority are never touched, nor
//!    pods a gang plugin claims as victims (members of a pod group: a lone
//!    pod never breaks a gang; PodGroup's PostFilter preempts whole groups).
//! 2. If the filters still fail, preemption cannot help on this node.
//! 3. Otherwise the removed pods are given back one at a time, most important
//!    first (higher priority, then earlier start), those whose eviction would
//!    break a PodDisruptionBudget before the others; a pod stays if the filters
//!    still pass with it back. Whoever could not be given back is a victim.
//!
//! Every filter run "with nominated pods" follows kube-scheduler: when pods
//! of equal or higher priority are nominated to the node, the filters must
//! pass both with them placed there and without them, so the preemptor never
//! takes room freed for a more important pod, yet does not depend on a
//! nominated pod that may land elsewhere.
//!
//! Invariants: the node and state given in are private copies (the caller
//! clones them), so nothing here can leak into the snapshot or the real
//! cycle state; the node copy and the state copy always describe the same
//! set of pods when a filter runs.

use crate::common::preemption::{more_important, split_by_pdb};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use strata_scheduler::cache::PdbInfo;
use strata_scheduler::framework::Claims;
use strata_scheduler::sdk::{CycleState, FilterEvaluator, NodeId, NodeInfo, PodInfo, Status};

/// Reason kube-scheduler gives for a node without lower-priority pods.
pub(super) const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// The pods to evict on one node and how many PodDisruptionBudgets that
/// breaks.
#[derive(Clone, Debug)]
pub(super) struct Victims {
    /// Most important first (priority descending, then start time).
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of `pods` are evicted against a budget.
    pub pdb_violations: usize,
}

/// Everything the per-node what-if needs about the preemptor, prepared once
/// per PostFilter call.
pub(super) struct Preemptor<'a> {
    /// The pod that does not fit.
    pub pod: &'a PodInfo,
    /// Pods a gang plugin keeps from being lone victims.
    pub claims: Claims,
    /// The profile's filters and PreFilter extensions.
    pub evaluator: &'a dyn FilterEvaluator,
    /// Pods nominated to each node with priority >= the preemptor's (the
    /// preemptor itself excluded).
    pub nominated: FxHashMap<NodeId, Vec<Arc<PodInfo>>>,
    /// Budgets that can match a pod (those with a non-empty selector).
    pub pdbs: Vec<&'a PdbInfo>,
}

impl Preemptor<'_> {
    /// Runs the filters on `node` as kube-scheduler's
    /// `RunFilterPluginsWithNominatedPods` does: first with the
    /// equal-or-higher-priority nominated pods added (to copies), then, if
    /// any were added and that passed, again without them.
    pub(super) fn filters_with_nominated(&self, state: &CycleState, node: &NodeInfo) -> Status {
        if let Some(noms) = self.nominated.get(&node.id).filter(|n| !n.is_empty()) {
            let mut node_with = node.clone();
            let mut state_with = state.clone();
            for other in noms {
                node_with.add_pod(Arc::clone(other));
                let s = self
                    .evaluator
                    .add_pod(&mut state_with, self.pod, other, &node_with);
                if !s.is_success() {
                    return as_error(s, "adding nominated pod", other);
                }
            }
            let s = self
                .evaluator
                .run_filters(&state_with, self.pod, &node_with);
            if !s.is_success() {
                return s;
            }
        }
        self.evaluator.run_filters(state, self.pod, node)
    }

    /// Finds the victims on `node` (a private copy, as is `state`).
    ///
    /// `Err` carries the node's status when it is no candidate: the filters'
    /// rejection, [`NO_VICTIMS`] (UnschedulableAndUnresolvable) when nothing
    /// there has lower priority, or an `Error` when a PreFilter extension
    /// failed.
    pub(super) fn select_victims_on_node(
        &self,
        mut state: CycleState,
        mut node: NodeInfo,
    ) -> Result<Victims, Status> {
        let prio = self.pod.priority;
        // Pods a gang plugin claims (members of a group) are evicted only
        // with their whole group, by that plugin, never one by one here.
        let mut potential: Vec<Arc<PodInfo>> = node
            .pods
            .iter()
            .filter(|p| p.priority < prio && !self.claims.victim_claimed(p))
            .cloned()
            .collect();
        if potential.is_empty() {
            return Err(Status::unresolvable(NO_VICTIMS));
        }
        for p in &potential {
            self.remove(&mut state, &mut node, p)?;
        }
        let s = self.filters_with_nominated(&state, &node);
        if !s.is_success() {
            return Err(s);
        }
        potential.sort_by(|a, b| more_important(a, b));
        let (violating, non_violating) = split_by_pdb(potential, &self.pdbs);
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        for p in violating {
            if !self.reprieve(&mut state, &mut node, p, &mut victims)? {
                pdb_violations += 1;
            }
        }
        for p in non_violating {
            self.reprieve(&mut state, &mut node, p, &mut victims)?;
        }
        victims.sort_by(|a, b| more_important(a, b));
        Ok(Victims {
            pods: victims,
            pdb_violations,
        })
    }

    fn remove(
        &self,
        state: &mut CycleState,
        node: &mut NodeInfo,
        p: &Arc<PodInfo>,
    ) -> Result<(), Status> {
        node.remove_pod(&p.uid);
        let s = self.evaluator.remove_pod(state, self.pod, p, node);
        if s.is_success() {
            Ok(())
        } else {
            Err(as_error(s, "removing pod", p))
        }
    }

    /// Gives `p` back; keeps it when the pod still fits, otherwise takes it
    /// out again and records it as a victim. Returns whether it was kept.
    fn reprieve(
        &self,
        state: &mut CycleState,
        node: &mut NodeInfo,
        p: Arc<PodInfo>,
        victims: &mut Vec<Arc<PodInfo>>,
    ) -> Result<bool, Status> {
        node.add_pod(Arc::clone(&p));
        let s = self.evaluator.add_pod(state, self.pod, &p, node);
        if !s.is_success() {
            return Err(as_error(s, "adding pod", &p));
        }
        if self.filters_with_nominated(state, node).is_success() {
            return Ok(true);
        }
        self.remove(state, node, &p)?;
        victims.push(p);
        Ok(false)
    }
}

/// A PreFilter extension that fails is an internal error, not a rejection.
fn as_error(s: Status, what: &str, p: &PodInfo) -> Status {
    Status::error(format!(
        "preemption: {what} {} in a what-if evaluation failed: {s}",
        p.key()
    ))
}
