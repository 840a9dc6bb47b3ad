//! DefaultPreemption: when a pod fits no node, find a node where evicting
//! lower-priority pods would let it fit, and say which pods to evict.
//!
//! This is kube-scheduler's default PostFilter, as the Kubernetes
//! documentation ("Pod Priority and Preemption") describes it:
//!
//! - A pod with `preemptionPolicy: Never` never preempts. A pod already
//!   nominated to a node where a lower-priority pod is terminating waits for
//!   it instead of preempting again (unless that node can no longer help it).
//! - Only nodes whose Filter rejection was `Unschedulable` are candidates;
//!   `UnschedulableAndUnresolvable` (a taint, a selector) cannot be fixed by
//!   evicting pods.
//! - Candidate nodes are dry-run one by one in a fixed order starting at an
//!   offset derived from the pod's uid (kube-scheduler uses a random offset;
//!   a hash keeps the spreading and makes runs reproducible). The search stops
//!   once it holds at least `DefaultPreemptionArgs::num_candidates` candidates,
//!   at least one of them without PodDisruptionBudget violations.
//! - On each node the smallest set of lower-priority victims is found
//!   (module `victims`). The candidates then go to the kube-scheduler
//!   extenders with a `preemptVerb` ([`PostFilterContext::extenders`]),
//!   which may drop nodes and narrow victims; then one node is chosen
//!   (module `select`).
//!
//! The plugin is pure: it reads the snapshot and returns a
//! [`PostFilterResult`]. The engine deletes the victims, sets the pod's
//! nominated node and clears the nominations of lower-priority pods nominated
//! to the same node. When the pod must wait for a terminating victim, the
//! result names its current nominated node with an Unschedulable status (the
//! nomination stands); when no node can help, `nominated_node` is `None`
//! (kube-scheduler clears a stale nomination in that case).
//!
//! PreemptionPolicy, priorities and PodDisruptionBudgets are read from the
//! snapshot; the plugin keeps no state between cycles.
//!
//! Gang plugins keep their pods through the scheduler's preemption claims
//! ([`strata_scheduler::sdk::PreemptionClaims`], from the
//! [`Handle`]): a pod whose preemption a claimant takes in this cycle is
//! skipped (PodGroup preempts for a member's whole group in its own
//! PostFilter, never for one member here), and a pod a claimant keeps (a
//! running group member) is never a victim.

mod args;
mod select;
mod victims;

#[cfg(test)]
mod tests;

pub use args::DefaultPreemptionArgs;

use rustc_hash::{FxHashMap, FxHasher};
use select::Candidate;
use std::hash::Hasher;
use std::sync::Arc;
use strata_scheduler::model::PreemptionPolicy;
use strata_scheduler::sdk::{
    Code, CycleState, Diagnosis, Handle, NodeId, NodeRef, Plugin, PluginArgsError, PodInfo,
    PostFilterContext, PostFilterPlugin, PostFilterResult, PreemptionCandidate, PreemptionClaims,
    Reason, Snapshot, Status,
};
use victims::{Preemptor, Victims};

/// The plugin's configuration name.
pub const NAME: &str = "DefaultPreemption";

/// Message for a pod whose policy forbids preemption.
const NOT_ELIGIBLE_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
/// Message for a pod waiting for a victim on its nominated node.
const NOT_ELIGIBLE_TERMINATING: &str =
    "not eligible due to a terminating pod on the nominated node.";
/// Reason for nodes preemption cannot fix.
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// The DefaultPreemption plugin.
#[derive(Debug, Clone)]
pub struct DefaultPreemption {
    args: DefaultPreemptionArgs,
    /// What gang plugins keep to themselves: pods they preempt for, pods
    /// only they evict.
    claims: PreemptionClaims,
}

impl DefaultPreemption {
    /// A plugin with validated `args`.
    pub fn new(args: DefaultPreemptionArgs) -> Result<Self, PluginArgsError> {
        args.validate()?;
        Ok(DefaultPreemption {
            args,
            claims: PreemptionClaims::default(),
        })
    }

    /// The plugin deferring to the claimants of `claims` (the scheduler's,
    /// from its [`Handle`]): it returns Skip for a pod a claimant preempts
    /// for, and never picks a pod a claimant keeps as a victim.
    pub fn with_claims(mut self, claims: PreemptionClaims) -> Self {
        self.claims = claims;
        self
    }

    /// The arguments in force.
    pub fn args(&self) -> &DefaultPreemptionArgs {
        &self.args
    }
}

/// Builds the plugin from its `pluginConfig` args (`DefaultPreemptionArgs`).
pub fn factory(
    args: Option<&serde_json::Value>,
    handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(
        DefaultPreemption::new(DefaultPreemptionArgs::from_json(args)?)?
            .with_claims(handle.preemption.clone()),
    ))
}

strata_scheduler::plugin!(DefaultPreemption: NAME => [PostFilter]);

/// The Filter outcome of every node, as preemption reads it: a node missing
/// from the diagnosis takes the PreFilter rejection if there was one, and
/// otherwise counts as not helpable (it was never a candidate, e.g. a
/// PreFilter narrowed the nodes).
struct NodeCodes<'a> {
    by_node: Vec<Option<&'a Status>>,
    fallback: Code,
}

impl<'a> NodeCodes<'a> {
    fn new(d: &'a Diagnosis, capacity: usize) -> Self {
        let mut by_node = vec![None; capacity];
        for (id, s) in &d.node_statuses {
            if let Some(slot) = by_node.get_mut(id.index()) {
                *slot = Some(s);
            }
        }
        let fallback = d
            .pre_filter
            .as_ref()
            .map_or(Code::UnschedulableAndUnresolvable, |s| s.code());
        NodeCodes { by_node, fallback }
    }

    fn code(&self, id: NodeId) -> Code {
        match self.by_node.get(id.index()).copied().flatten() {
            Some(s) => s.code(),
            None => self.fallback,
        }
    }
}

fn unschedulable(msg: impl Into<Reason>, keep: Option<NodeRef>) -> PostFilterResult {
    PostFilterResult {
        status: Status::unschedulable(msg),
        nominated_node: keep,
        victims: Vec::new(),
        clear_nominations: Vec::new(),
    }
}

/// Whether `pod` may preempt now (kube-scheduler's
/// `PodEligibleToPreemptOthers`). `Err` carries the message and, when the
/// pod should keep waiting on its nominated node, that node.
fn eligible(
    pod: &PodInfo,
    snap: &Snapshot,
    codes: &NodeCodes<'_>,
) -> Result<(), (&'static str, Option<NodeRef>)> {
    if pod.spec.preemption_policy == PreemptionPolicy::Never {
        return Err((NOT_ELIGIBLE_NEVER, None));
    }
    let Some(node) = pod.nominated_node.and_then(|n| snap.node_by_name(n)) else {
        return Ok(());
    };
    if codes.code(node.id) == Code::UnschedulableAndUnresolvable {
        // The nominated node cannot take the pod any more: look again.
        return Ok(());
    }
    if node
        .pods
        .iter()
        .any(|p| p.priority < pod.priority && p.terminating)
    {
        let keep = NodeRef {
            id: node.id,
            name: node.name,
        };
        return Err((NOT_ELIGIBLE_TERMINATING, Some(keep)));
    }
    Ok(())
}

/// Where the search starts among `n` potential nodes: a stable hash of the
/// pod's uid, so different pods spread their preemptions but a replay makes
/// the same choice.
fn offset_for(pod: &PodInfo, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let mut h = FxHasher::default();
    h.write(pod.uid.as_bytes());
    (h.finish() % n as u64) as usize
}

impl DefaultPreemption {
    /// The dry run over the potential nodes: candidates (those without
    /// budget violations first, each group in evaluation order) and the
    /// statuses of the nodes that are no candidate.
    fn find_candidates(
        &self,
        state: &CycleState,
        pre: &Preemptor<'_>,
        snap: &Snapshot,
        potential: &[NodeId],
        failures: &mut Vec<(NodeId, Status)>,
    ) -> Vec<Candidate> {
        let want = self.args.num_candidates(potential.len());
        let offset = offset_for(pre.pod, potential.len());
        let mut non_violating = Vec::new();
        let mut violating = Vec::new();
        for i in 0..potential.len() {
            let id = potential[(offset + i) % potential.len()];
            let node = snap.node(id);
            match pre.select_victims_on_node(state.clone(), node.clone()) {
                Ok(v) if !v.pods.is_empty() => {
                    let c = Candidate {
                        node: NodeRef {
                            id,
                            name: node.name,
                        },
                        victims: v,
                    };
                    if c.victims.pdb_violations == 0 {
                        non_violating.push(c);
                    } else {
                        violating.push(c);
                    }
                    if !non_violating.is_empty() && non_violating.len() + violating.len() >= want {
                        break;
                    }
                }
                Ok(_) => failures.push((
                    id,
                    Status::error(format!(
                        "preemption: expected at least one victim pod on node {}",
                        node.name
                    )),
                )),
                Err(s) => failures.push((id, s)),
            }
        }
        non_violating.append(&mut violating);
        non_violating
    }
}

impl DefaultPreemption {
    /// Hands `candidates` to the extenders with a `preemptVerb` and keeps
    /// what they keep (kube-scheduler's `callExtenders`). A victim a gang
    /// plugin keeps is never evicted for a lone pod, whatever an extender
    /// answers: a candidate naming one is dropped.
    fn call_extenders(
        &self,
        pre: &Preemptor<'_>,
        ctx: &PostFilterContext<'_>,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<Candidate>, Status> {
        let given = candidates
            .into_iter()
            .map(|c| PreemptionCandidate {
                node: c.node,
                victims: c.victims.pods,
                pdb_violations: c.victims.pdb_violations,
            })
            .collect();
        let kept = ctx.extenders.process(pre.pod, given)?;
        Ok(kept
            .into_iter()
            .filter(|c| !c.victims.iter().any(|v| pre.claims.victim_claimed(v)))
            .map(|c| Candidate {
                node: c.node,
                victims: Victims {
                    pods: c.victims,
                    pdb_violations: c.pdb_violations,
                },
            })
            .collect())
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        ctx: &PostFilterContext<'_>,
    ) -> PostFilterResult {
        let claims = self.claims.current();
        if claims.preemptor_claimant(state, pod).is_some() {
            // A gang plugin preempts for this pod (for its whole group or
            // not at all); evicting pods for it alone would churn.
            return PostFilterResult {
                status: Status::skip(),
                ..Default::default()
            };
        }
        let snap = ctx.snapshot;
        let codes = NodeCodes::new(ctx.diagnosis, snap.node_capacity());
        if let Err((msg, keep)) = eligible(pod, snap, &codes) {
            return unschedulable(msg, keep);
        }

        let mut failures: Vec<(NodeId, Status)> = Vec::new();
        let mut potential: Vec<NodeId> = Vec::new();
        for &id in snap.node_ids() {
            if codes.code(id) == Code::Unschedulable {
                potential.push(id);
            } else {
                failures.push((id, Status::unresolvable(NOT_HELPFUL)));
            }
        }

        let mut nominated: FxHashMap<NodeId, Vec<Arc<PodInfo>>> = FxHashMap::default();
        for (p, node) in ctx.nominated {
            // A pod already bound or assumed is counted on its node already.
            if p.priority >= pod.priority && p.uid != pod.uid && snap.assigned_pod(&p.uid).is_none()
            {
                nominated.entry(*node).or_default().push(Arc::clone(p));
            }
        }
        let pre = Preemptor {
            pod,
            claims,
            evaluator: ctx.evaluator,
            nominated,
            pdbs: snap
                .pdbs()
                .iter()
                .filter(|p| p.selector.as_ref().is_some_and(|s| !s.is_empty()))
                .collect(),
        };

        let mut candidates = if potential.is_empty() {
            Vec::new()
        } else {
            self.find_candidates(state, &pre, snap, &potential, &mut failures)
        };
        if !candidates.is_empty() && !ctx.extenders.is_empty() {
            candidates = match self.call_extenders(&pre, ctx, candidates) {
                Ok(c) => c,
                Err(status) => {
                    return PostFilterResult {
                        status,
                        ..Default::default()
                    };
                }
            };
        }
        let Some(best) = select::pick_one(&candidates) else {
            if let Some((_, err)) = failures.iter().find(|(_, s)| s.code() == Code::Error) {
                return PostFilterResult {
                    status: err.clone(),
                    ..Default::default()
                };
            }
            let diagnosis = Diagnosis {
                node_statuses: failures,
                ..Default::default()
            };
            return unschedulable(diagnosis.message(snap.num_nodes()), None);
        };
        let chosen = candidates.swap_remove(best);
        let clear_nominations = ctx
            .nominated
            .iter()
            .filter(|(p, n)| *n == chosen.node.id && p.priority < pod.priority && p.uid != pod.uid)
            .map(|(p, _)| Arc::clone(p))
            .collect();
        PostFilterResult {
            status: Status::success(),
            nominated_node: Some(chosen.node),
            victims: chosen.victims.pods,
            clear_nominations,
        }
    }
}
