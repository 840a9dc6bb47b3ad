//! InterPodAffinity: kube-scheduler's inter-pod affinity and anti-affinity.
//!
//! A pod's `podAffinity` / `podAntiAffinity` terms say where it may (Filter,
//! from `required…` terms) and would rather (Score, from `preferred…` terms)
//! run relative to other pods: "in the same topology domain as pods matching
//! this selector" or "not in one with them", a domain being all nodes sharing
//! the value of the term's `topologyKey` label. Existing pods' terms count
//! too: an existing pod's required anti-affinity keeps matching pods out of
//! its domain (symmetry), and its affinity terms attract matching pods in
//! scoring.
//!
//! # How the work is split
//!
//! Whether a node passes depends on every other pod in the cluster, but
//! Filter and Score run per node and must be a few map lookups. So PreFilter
//! and PreScore reduce the existing pods to counts per topology pair (label
//! key, label value) (`scan.rs`); Score looks up the node's values of the
//! relevant keys. Filter reads arrays instead: the memo also keeps the three
//! filter totals per key by dense domain id (a per-key domain index of its
//! own, the type PodTopologySpread uses: `pod_topology_spread/domains.rs`),
//! so a node costs `counts[domain_of[node]]` per term and key, with the
//! node's slot found without reading its `NodeInfo`. PreFilter extensions
//! (preemption's what-ifs) update only the totals by pair, and Filter on
//! such a state goes back to the lookups by pair. The result depends on pods
//! on other nodes, so neither Filter nor Score is node-local.
//!
//! Reducing 100,000 pods costs milliseconds, so the reduction is kept per
//! class of incoming pod (same namespace, labels and terms: the replicas of
//! one workload) and per node, and a cycle re-walks only the nodes whose
//! generation moved since the class was last seen (`memo.rs`). A new class
//! (a new workload's first pod) walks only the nodes that may contribute:
//! those holding a pod with a value of an `In` requirement of one of its
//! terms' selectors, or a pod whose own term may refer to it
//! (`common/pod_label_index.rs`); only a term without an `In` requirement
//! makes it walk every node (~10 ms on 16,000 nodes and 100,000 pods). Each
//! further replica costs ~10 µs in PreFilter and PreScore.
//!
//! # Behaviour kept from kube-scheduler
//!
//! * Filter checks, in order: the pod's required affinity (rejection is
//!   `UnschedulableAndUnresolvable`: removing pods cannot create a matching
//!   pod), its required anti-affinity, then existing pods' required
//!   anti-affinity (both `Unschedulable`: preemption may help).
//! * A node without a required affinity term's topology key fails it; a node
//!   without an anti-affinity term's key is never in conflict with it.
//! * An existing pod counts toward the incoming pod's affinity only if it
//!   matches *all* required affinity terms.
//! * The first pod of a group: when no pod anywhere matches the required
//!   affinity terms and the pod matches them itself, it passes on every node
//!   that has all the terms' topology keys.
//! * PreFilter returns Skip when the pod has no required terms and no
//!   existing pod's required anti-affinity refers to it.
//! * Scores are min-max normalized into 0..=100 with kube-scheduler's
//!   floating-point formula (all zero when every node scores the same).
//!
//! One deliberate difference: kube-scheduler matches an existing pod's
//! *preferred* terms without the incoming pod's namespace labels, so such a
//! term with a non-empty `namespaceSelector` never matches there; Strata
//! evaluates the selector against the namespace's labels, as the API
//! documents.

mod args;
mod memo;
mod scan;
mod topology;

#[cfg(test)]
mod tests;

pub use args::{InterPodAffinityArgs, MAX_HARD_POD_AFFINITY_WEIGHT};

use crate::common::topology_domains::NodeSlots;
use memo::Memo;
use scan::{Fast, FilterState, Verdict, Walker};
use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::model::AffinityTerm;
use strata_scheduler::sdk::{
    ActionType, ClusterEvent, ClusterEventKind, CycleState, DomainScores, DomainVerdict,
    EventObject, EventResource, FilterPlugin, Handle, Labels, MAX_NODE_SCORE, NodeId, NodeInfo,
    NodeScore, Plugin, PluginArgsError, PodInfo, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    QueueingHint, ScoreLayer, ScorePlugin, Snapshot, Status, Sym,
};
use topology::TopoCounts;

/// The plugin's configuration name.
pub const NAME: &str = "InterPodAffinity";

/// Filter reason: the pod's required affinity is not satisfied.
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Filter reason: the pod's required anti-affinity is violated.
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Filter reason: an existing pod's required anti-affinity is violated.
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// The InterPodAffinity plugin.
#[derive(Debug, Default)]
pub struct InterPodAffinity {
    args: InterPodAffinityArgs,
    /// Per-class totals reused across cycles.
    memo: Memo,
}

impl InterPodAffinity {
    /// A plugin with these arguments.
    pub fn new(args: InterPodAffinityArgs) -> InterPodAffinity {
        InterPodAffinity {
            args,
            memo: Memo::default(),
        }
    }

    /// Its arguments.
    pub fn args(&self) -> InterPodAffinityArgs {
        self.args
    }

    /// Whether PreScore could find anything to score for `pod`: with
    /// `ignorePreferredTermsOfExistingPods`, only if it has preferred terms.
    fn may_score(&self, pod: &PodInfo) -> bool {
        let aff = &pod.spec.affinity;
        !self.args.ignore_preferred_terms_of_existing_pods
            || !aff.preferred.is_empty()
            || !aff.preferred_anti.is_empty()
    }

    /// The walker for `pod` in this cycle.
    fn walker<'a>(&self, pod: &'a PodInfo, snap: &Snapshot) -> Walker<'a> {
        Walker::new(pod, snap.namespace_labels(), self.args, self.may_score(pod))
    }
}

/// Builds the plugin from its `pluginConfig` args.
pub fn factory(
    args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(InterPodAffinity::new(
        InterPodAffinityArgs::from_json(args)?,
    )))
}

/// What PreScore leaves for Score and NormalizeScore.
#[derive(Clone)]
struct ScoreState {
    scores: Arc<TopoCounts>,
    /// The scores as layers by domain (for the engine's fast path, and
    /// for Score: a node's score is the sum of its domains' values).
    layers: Option<Vec<ScoreLayer>>,
    /// The snapshot's node slots, which index the layers.
    slots: NodeSlots,
}

strata_scheduler::plugin!(InterPodAffinity: NAME => [PreFilter, Filter, PreScore, Score] {

    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![
            ClusterEventKind::new(
                EventResource::AssignedPod,
                ActionType::ADD
                    .or(ActionType::DELETE)
                    .or(ActionType::UPDATE_POD_LABEL),
            ),
            ClusterEventKind::new(
                EventResource::Node,
                ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL),
            ),
            ClusterEventKind::new(
                EventResource::Namespace,
                ActionType::ADD.or(ActionType::UPDATE),
            ),
        ]
    }

    fn queueing_hint(&self, pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        match (event.resource, event.object) {
            (EventResource::AssignedPod, EventObject::Pod { old, new }) => {
                hint_after_pod_change(pod, old, new)
            }
            (EventResource::Node, EventObject::Node { old, new }) => {
                hint_after_node_change(old, new)
            }
            _ => QueueingHint::Queue,
        }
    }
});

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> PreFilterResult {
        let w = self.walker(pod, snap);
        let aff = &pod.spec.affinity;
        let keys: SmallVec<[Sym; 4]> = aff
            .required
            .iter()
            .chain(&aff.required_anti)
            .map(|t| t.topology_key)
            .collect();
        let (counts, views) = self.memo.counts(&w, snap, &keys);
        if counts.existing_anti.is_empty()
            && aff.required.is_empty()
            && aff.required_anti.is_empty()
        {
            return PreFilterResult::skip();
        }
        let mut fs = FilterState::new(&w, &counts);
        fs.fast = Fast::new(pod, &counts, &views, NodeSlots::of(snap)).map(Arc::new);
        state.insert(fs);
        PreFilterResult::ok()
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        // No state: PreFilter skipped this plugin, whose Filter then never runs.
        if let Some(s) = state.get_mut::<FilterState>() {
            s.update_with_pod(pod, other, &node.labels, 1);
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.get_mut::<FilterState>() {
            s.update_with_pod(pod, other, &node.labels, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for InterPodAffinity {
    /// The verdict by domain while PreFilter's dense totals stand (not after
    /// a what-if update).
    fn domain_verdicts(&self, state: &CycleState) -> Option<Vec<DomainVerdict>> {
        let s = state.get::<FilterState>()?;
        let f = s.fast.as_ref()?;
        Some(s.domain_verdicts(f))
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<FilterState>() else {
            return Status::error("InterPodAffinity: Filter ran without PreFilter state");
        };
        if let Some(f) = &s.fast {
            return match s.verdict_fast(f, node) {
                Verdict::Pass => Status::success(),
                Verdict::Affinity => Status::unresolvable(REASON_AFFINITY),
                Verdict::Anti => Status::unschedulable(REASON_ANTI_AFFINITY),
                Verdict::ExistingAnti => Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY),
            };
        }
        if !satisfies_affinity(s, pod, &node.labels) {
            return Status::unresolvable(REASON_AFFINITY);
        }
        if !satisfies_anti_affinity(s, pod, &node.labels) {
            return Status::unschedulable(REASON_ANTI_AFFINITY);
        }
        if s.existing_anti.any_positive_on(&node.labels) {
            return Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

/// The pod's required affinity on a node with `labels`.
#[inline]
fn satisfies_affinity(s: &FilterState, pod: &PodInfo, labels: &Labels) -> bool {
    let mut pods_exist = true;
    for t in &pod.spec.affinity.required {
        match labels.get(t.topology_key) {
            // Every topology key must be on the node.
            None => return false,
            Some(v) => {
                if s.affinity.get(t.topology_key, v) <= 0 {
                    pods_exist = false;
                }
            }
        }
    }
    // The first pod of a group may go where no matching pod is yet, if no
    // matching pod exists anywhere and it matches its own terms.
    pods_exist || (s.affinity.is_empty() && s.self_match)
}

/// The pod's required anti-affinity on a node with `labels`.
#[inline]
fn satisfies_anti_affinity(s: &FilterState, pod: &PodInfo, labels: &Labels) -> bool {
    s.anti.is_empty()
        || pod.spec.affinity.required_anti.iter().all(|t| {
            labels
                .get(t.topology_key)
                .is_none_or(|v| s.anti.get(t.topology_key, v) <= 0)
        })
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        _feasible: &[NodeId],
    ) -> Status {
        if !self.may_score(pod) {
            return Status::skip();
        }
        // A memo hit: PreFilter brought the totals up to date moments ago.
        // The keys of the pod's own preferred terms, whose domains the
        // views then always hold.
        let aff = &pod.spec.affinity;
        let mut keys: SmallVec<[Sym; 4]> = SmallVec::new();
        for t in aff.preferred.iter().chain(&aff.preferred_anti) {
            if !keys.contains(&t.term.topology_key) {
                keys.push(t.term.topology_key);
            }
        }
        let (counts, views) = self.memo.counts(&self.walker(pod, snap), snap, &keys);
        if counts.score.is_empty() {
            // No pod counts toward a preferred term yet (a Deployment's
            // first pod): every node scores 0, as with Skip. A pod with
            // preferred terms of its own says so through zero layers of
            // their keys, the shape its next pods' scores will have, so the
            // engine keeps its soft-score index instead of rebuilding it.
            let layers: Option<Vec<ScoreLayer>> = keys
                .iter()
                .map(|&k| {
                    Some(ScoreLayer {
                        of_node: views.find(k)?.of_node.clone(),
                        values: Arc::new(Vec::new()),
                    })
                })
                .collect();
            return match layers {
                Some(layers) if !layers.is_empty() => {
                    state.insert(ScoreState {
                        layers: Some(layers),
                        scores: counts.score,
                        slots: NodeSlots::of(snap),
                    });
                    Status::success()
                }
                _ => Status::skip(),
            };
        }
        state.insert(ScoreState {
            layers: counts.score_layers(&views),
            scores: counts.score,
            slots: NodeSlots::of(snap),
        });
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        match state.get::<ScoreState>() {
            Some(s) => Ok(match &s.layers {
                // The same sum by domain id, without a label lookup per key.
                Some(layers) => {
                    let slot = s.slots.id(node);
                    layers
                        .iter()
                        .map(|l| match l.of_node.get(slot).copied() {
                            None | Some(DomainVerdict::NO_DOMAIN) => 0,
                            Some(d) => l.values.get(d as usize).copied().unwrap_or(0),
                        })
                        .sum()
                }
                None => s.scores.sum_on(&node.labels),
            }),
            None => Err(Status::error(
                "InterPodAffinity: Score ran without PreScore state",
            )),
        }
    }

    fn has_normalize(&self) -> bool {
        true
    }

    /// A node's score is the sum, over the keys of the score totals, of
    /// the total of the node's domain: one layer per key. Normalization is
    /// min-max, a function of the distinct scores.
    fn domain_scores(&self, state: &CycleState) -> Option<DomainScores> {
        let layers = state.get::<ScoreState>()?.layers.clone()?;
        Some(DomainScores { salt: 0, layers })
    }

    fn normalize(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        if state.get::<ScoreState>().is_none() {
            return Status::success();
        }
        normalize_min_max(scores);
        Status::success()
    }
}

/// kube-scheduler's min-max normalization into `0..=MAX_NODE_SCORE`, with
/// its floating-point arithmetic and truncation so ties break identically.
fn normalize_min_max(scores: &mut [NodeScore]) {
    let (Some(min), Some(max)) = (
        scores.iter().map(|s| s.score).min(),
        scores.iter().map(|s| s.score).max(),
    ) else {
        return;
    };
    let diff = max - min;
    for s in scores {
        s.score = if diff > 0 {
            (MAX_NODE_SCORE as f64 * ((s.score - min) as f64 / diff as f64)) as i64
        } else {
            0
        };
    }
}

/// Whether `term` may refer to a pod in `ns` with `labels`. Hints have no
/// namespace labels, so a term with a namespace selector is assumed to cover
/// the namespace: a wrong guess only costs a retry.
fn may_match(term: &AffinityTerm, ns: Sym, labels: &Labels) -> bool {
    term.selector.as_ref().is_some_and(|s| s.matches(labels))
        && (term.namespaces.contains(&ns) || term.namespace_selector.is_some())
}

fn may_match_all(terms: &[AffinityTerm], p: &PodInfo) -> bool {
    !terms.is_empty() && terms.iter().all(|t| may_match(t, p.namespace, &p.labels))
}

/// Whether an assigned pod's add, delete or label change may make `pod`
/// (rejected by this plugin) schedulable.
fn hint_after_pod_change(
    pod: &PodInfo,
    old: Option<&PodInfo>,
    new: Option<&PodInfo>,
) -> QueueingHint {
    let aff = &pod.spec.affinity;
    let queue = match (old, new) {
        // A new pod can only help the pod's required affinity.
        (None, Some(n)) => may_match_all(&aff.required, n),
        // A gone pod may have blocked through either side's anti-affinity,
        // or been the only match keeping the first-pod rule from applying.
        (Some(o), None) => {
            aff.required_anti
                .iter()
                .any(|t| may_match(t, o.namespace, &o.labels))
                || o.spec
                    .affinity
                    .required_anti
                    .iter()
                    .any(|t| may_match(t, pod.namespace, &pod.labels))
                || may_match_all(&aff.required, o)
        }
        // Labels changed: it may now match the affinity, or stop matching an
        // anti-affinity term. Its own terms did not change.
        (Some(o), Some(n)) => {
            (!may_match_all(&aff.required, o) && may_match_all(&aff.required, n))
                || aff.required_anti.iter().any(|t| {
                    may_match(t, o.namespace, &o.labels) && !may_match(t, n.namespace, &n.labels)
                })
        }
        (None, None) => true,
    };
    if queue {
        QueueingHint::Queue
    } else {
        QueueingHint::Skip
    }
}

/// Whether a node add or label change may help. Existing pods' anti-affinity
/// keys are unknown here, so any new node and any label change retries.
fn hint_after_node_change(old: Option<&NodeInfo>, new: Option<&NodeInfo>) -> QueueingHint {
    match (old, new) {
        (Some(o), Some(n)) if o.labels == n.labels => QueueingHint::Skip,
        _ => QueueingHint::Queue,
    }
}
