//! What PreFilter and PreScore share: the constraints that apply to a pod,
//! which nodes count toward them, and how matching pods are counted.
//!
//! Rules (kube-scheduler's, from "Pod Topology Spread Constraints"):
//! - A pod's own constraints are used when it has any; only otherwise the
//!   cluster defaults apply, with a selector derived for the pod.
//! - A node counts toward the domains only if it has *every* constraint's
//!   topology key, and, per constraint, passes the pod's nodeSelector and
//!   required node affinity (`nodeAffinityPolicy: Honor`, the default) and
//!   has no untolerated `NoSchedule`/`NoExecute` taint
//!   (`nodeTaintsPolicy: Honor`; the default is `Ignore`).
//! - A pod counts when it is in the incoming pod's namespace, matches the
//!   selector and is neither terminating nor finished. A constraint without a
//!   selector counts nothing.
//!
//! Counting walks the pods of a node once per selector set, matching each
//! pod once per *distinct* selector ([`SelectorIndex`]), not once per
//! constraint: the two system defaults share one selector. The walk is done
//! only for nodes that changed since a pod of the same kind was last
//! counted (`memo.rs`).

use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::labels::{Op, Requirement, Selector};
use strata_scheduler::model::{NodeInclusionPolicy, SpreadConstraint, WhenUnsatisfiable};
use strata_scheduler::sdk::{Labels, NodeInfo, PodInfo, Sym};

use super::args::DefaultConstraint;

/// Labels that controllers set to a different value on each pod (or each
/// revision) of one workload. They are left out of the selector derived for
/// default constraints, so pods of one StatefulSet or indexed Job still count
/// as one group.
pub(crate) const PER_POD_LABELS: [&str; 4] = [
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-revision-hash",
    "batch.kubernetes.io/job-completion-index",
];

/// A constraint as the plugin evaluates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Constraint {
    /// Maximum permitted skew.
    pub max_skew: i32,
    /// Node label key whose values are the domains.
    pub key: Sym,
    /// Which pods count; `None` counts none.
    pub selector: Option<Selector>,
    /// Minimum number of eligible domains (1 when not given).
    pub min_domains: i32,
    /// `nodeAffinityPolicy: Honor`.
    pub honor_affinity: bool,
    /// `nodeTaintsPolicy: Honor`.
    pub honor_taints: bool,
}

impl Constraint {
    fn from_pod(c: &SpreadConstraint) -> Constraint {
        Constraint {
            max_skew: c.max_skew,
            key: c.topology_key,
            selector: c.selector.clone(),
            min_domains: c.min_domains.unwrap_or(1),
            honor_affinity: c.node_affinity_policy == NodeInclusionPolicy::Honor,
            honor_taints: c.node_taints_policy == NodeInclusionPolicy::Honor,
        }
    }

    fn from_default(c: &DefaultConstraint, selector: &Selector) -> Constraint {
        Constraint {
            max_skew: c.max_skew,
            key: c.topology_key,
            selector: Some(selector.clone()),
            min_domains: c.min_domains.unwrap_or(1),
            honor_affinity: c.node_affinity_policy == NodeInclusionPolicy::Honor,
            honor_taints: c.node_taints_policy == NodeInclusionPolicy::Honor,
        }
    }

    /// Whether a pod with `labels` is one this constraint counts.
    #[inline]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// Whether a node with these inclusion results counts for this
    /// constraint.
    #[inline]
    pub fn includes(&self, inc: Inclusion) -> bool {
        (!self.honor_affinity || inc.affinity) && (!self.honor_taints || inc.taints)
    }
}

/// The plugin's configuration, resolved once when it is built.
#[derive(Clone, Debug)]
pub(crate) struct Defaults {
    /// Constraints for pods without their own.
    pub constraints: Vec<DefaultConstraint>,
    /// Whether they are kube-scheduler's built-in (System) ones.
    pub system: bool,
    /// [`PER_POD_LABELS`], interned.
    pub per_pod_labels: [Sym; 4],
}

impl Defaults {
    /// The constraints of `pod` that are hard (`hard`) or soft: its own when
    /// it has any, else the defaults with a selector derived for it.
    pub fn constraints(&self, pod: &PodInfo, hard: bool) -> Vec<Constraint> {
        let want = if hard {
            WhenUnsatisfiable::DoNotSchedule
        } else {
            WhenUnsatisfiable::ScheduleAnyway
        };
        let own = &pod.spec.spread_constraints;
        if !own.is_empty() {
            return own
                .iter()
                .filter(|c| c.when_unsatisfiable == want)
                .map(Constraint::from_pod)
                .collect();
        }
        if !self
            .constraints
            .iter()
            .any(|c| c.when_unsatisfiable == want)
        {
            return Vec::new();
        }
        let Some(selector) = self.default_selector(pod) else {
            return Vec::new();
        };
        self.constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == want)
            .map(|c| Constraint::from_default(c, &selector))
            .collect()
    }

    /// The selector of the workload `pod` belongs to, standing in for
    /// kube-scheduler's union of the selectors of the Services,
    /// ReplicationControllers, ReplicaSets and StatefulSets that select it.
    ///
    /// Strata has no informers for those objects yet, so a pod with a
    /// controlling owner is taken to be selected by its own labels (less the
    /// per-pod ones in [`PER_POD_LABELS`]); a pod without an owner, or left
    /// with no labels, gets no selector and so no default constraints, as
    /// kube-scheduler does when the derived selector is empty.
    pub fn default_selector(&self, pod: &PodInfo) -> Option<Selector> {
        pod.owner.as_ref()?;
        let reqs: SmallVec<[Requirement; 2]> = pod
            .labels
            .iter()
            .filter(|(k, _)| !self.per_pod_labels.contains(k))
            .map(|(key, v)| Requirement {
                key,
                op: Op::In(SmallVec::from_elem(v, 1)),
            })
            .collect();
        if reqs.is_empty() {
            None
        } else {
            Some(Selector { reqs })
        }
    }
}

/// Whether every constraint's topology key is a label of `node`.
#[inline]
pub(crate) fn has_all_keys(node: &NodeInfo, constraints: &[Constraint]) -> bool {
    constraints.iter().all(|c| node.labels.has(c.key))
}

/// A node's standing under the two inclusion policies, for one pod.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inclusion {
    /// The node passes the pod's nodeSelector and required node affinity.
    pub affinity: bool,
    /// The node has no NoSchedule/NoExecute taint the pod does not tolerate.
    pub taints: bool,
}

/// Which inclusion checks a pod's constraints need, decided once per cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InclusionChecks {
    affinity: bool,
    taints: bool,
}

impl InclusionChecks {
    /// The checks `constraints` of `pod` need: affinity only when some
    /// constraint honors it and the pod has a nodeSelector or required node
    /// affinity, taints only when some constraint honors them.
    pub fn new(pod: &PodInfo, constraints: &[Constraint]) -> InclusionChecks {
        let spec = &pod.spec;
        InclusionChecks {
            affinity: constraints.iter().any(|c| c.honor_affinity)
                && (spec.node_selector.is_some() || spec.required_node_affinity.is_some()),
            taints: constraints.iter().any(|c| c.honor_taints),
        }
    }

    /// Whether node affinity (nodeSelector, required affinity) is checked.
    #[inline]
    pub fn affinity(self) -> bool {
        self.affinity
    }

    /// Whether hard taints are checked.
    #[inline]
    pub fn taints(self) -> bool {
        self.taints
    }

    /// The node's standing; checks not needed report "included".
    #[inline]
    pub fn of(self, pod: &PodInfo, node: &NodeInfo) -> Inclusion {
        Inclusion {
            affinity: !self.affinity || pod.matches_required_node_affinity(node),
            taints: !self.taints || pod.tolerates_hard_taints(node),
        }
    }
}

/// Whether `other` can count toward `ns`'s constraints at all: same
/// namespace, not terminating (kube-scheduler skips those) and not finished.
#[inline]
pub(crate) fn countable(other: &PodInfo, ns: Sym) -> bool {
    other.namespace == ns && !other.terminating && !other.terminal
}

/// The distinct selectors of a set of constraints, so each pod is matched
/// once per selector.
#[derive(Clone, Debug, Default)]
pub(crate) struct SelectorIndex {
    selectors: SmallVec<[Selector; 2]>,
    /// For each constraint, its selector's index (`None`: counts nothing).
    of: SmallVec<[Option<usize>; 4]>,
}

/// Per-selector counters for one node, on the stack for the common case.
pub(crate) type SelectorCounts = SmallVec<[i64; 4]>;
/// Which selectors one node needs counted.
pub(crate) type SelectorMask = SmallVec<[bool; 4]>;

impl SelectorIndex {
    /// Indexes the selectors of `constraints`.
    pub fn new(constraints: &[Constraint]) -> SelectorIndex {
        let mut idx = SelectorIndex::default();
        for c in constraints {
            let slot = c.selector.as_ref().map(|s| {
                idx.selectors
                    .iter()
                    .position(|x| x == s)
                    .unwrap_or_else(|| {
                        idx.selectors.push(s.clone());
                        idx.selectors.len() - 1
                    })
            });
            idx.of.push(slot);
        }
        idx
    }

    /// The distinct selectors.
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// The selector index of constraint `i`.
    #[inline]
    pub fn of(&self, i: usize) -> Option<usize> {
        self.of.get(i).copied().flatten()
    }

    /// Marks the selector of constraint `i` as needed (by the reference
    /// count the tests compare the memo with).
    #[cfg(test)]
    pub fn need(&self, i: usize, mask: &mut SelectorMask) {
        if let Some(j) = self.of(i) {
            mask[j] = true;
        }
    }

    /// Counts, for each selector marked in `mask`, the countable pods of
    /// `pods` it matches; `out` is reset first.
    pub fn count(
        &self,
        pods: &[Arc<PodInfo>],
        ns: Sym,
        mask: &SelectorMask,
        out: &mut SelectorCounts,
    ) {
        out.iter_mut().for_each(|c| *c = 0);
        if !mask.iter().any(|m| *m) {
            return;
        }
        for p in pods {
            if !countable(p, ns) {
                continue;
            }
            for (j, s) in self.selectors.iter().enumerate() {
                if mask[j] && s.matches(&p.labels) {
                    out[j] += 1;
                }
            }
        }
    }

    /// Fresh zeroed scratch buffers sized for this index.
    pub fn scratch(&self) -> (SelectorMask, SelectorCounts) {
        (
            SmallVec::from_elem(false, self.selectors.len()),
            SmallVec::from_elem(0, self.selectors.len()),
        )
    }
}
