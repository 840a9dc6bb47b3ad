//! Which nodes hold pods with a given label, and pods whose affinity terms
//! may refer to a pod with a given label.
//!
//! PodTopologySpread and InterPodAffinity keep their counts per kind of
//! incoming pod (`memo.rs` in each). A new kind (a new Deployment's first
//! pod, with its own selector) used to be counted by walking every pod of
//! every node. Most selectors hold an `In` requirement (`matchLabels` is
//! one): only a pod carrying one of its values for that key can match, so
//! only the nodes holding such a pod can contribute anything. This index
//! names those nodes per (label key, label value); a memo then walks only
//! them, and every other node contributes zero.
//!
//! The index is a superset by design: it ignores namespaces, terminating
//! pods and the selector's other requirements. Whoever uses it still applies
//! the exact rules to the candidates' pods, so the result equals a walk over
//! every node.
//!
//! For existing pods' affinity terms (InterPodAffinity's symmetric rules)
//! it also names, per (key, value), the nodes holding a pod with a term
//! whose selector requires that value, and the nodes holding a pod with a
//! term it cannot index (no `In` requirement): those are always candidates.
//!
//! Invariants: after [`PodLabelIndex::refresh`] on a snapshot, for every
//! present node slot `s` and every label (k, v) of a pod on it, `s` is in
//! `by_label[(k, v)]`; every pair's set is non-empty (empty sets are
//! removed); the index is brought up to date from the snapshot's change log
//! (O(changed nodes)) and starts over on another snapshot.

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use strata_scheduler::cache::ChangeTracker;
use strata_scheduler::labels::{Op, Selector};
use strata_scheduler::model::AffinityTerm;
use strata_scheduler::sdk::{Labels, NodeId, NodeInfo, Snapshot, Sym};

/// A label (key, value).
type Pair = (Sym, Sym);

/// What one node slot put into the index, to take it out again.
#[derive(Clone, Debug, Default)]
struct Slot {
    labels: SmallVec<[Pair; 4]>,
    terms: SmallVec<[Pair; 2]>,
    unindexed: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct PodLabelIndex {
    snapshot: u64,
    changes: ChangeTracker,
    /// Whether existing pods' affinity terms are indexed too.
    with_terms: bool,
    slots: Vec<Slot>,
    by_label: FxHashMap<Pair, FxHashSet<u32>>,
    by_term: FxHashMap<Pair, FxHashSet<u32>>,
    /// Slots holding a pod with a term that has no `In` requirement.
    unindexed: FxHashSet<u32>,
}

/// The `In` requirement of `sel` to index or look up by: the one with the
/// fewest values (`None`: the selector has none).
fn in_requirement(sel: &Selector) -> Option<(Sym, &[Sym])> {
    sel.reqs
        .iter()
        .filter_map(|r| match &r.op {
            Op::In(vs) => Some((r.key, vs.as_slice())),
            _ => None,
        })
        .min_by_key(|(_, vs)| vs.len())
}

impl PodLabelIndex {
    /// An empty index; `with_terms` also indexes existing pods' terms.
    pub(crate) fn new(with_terms: bool) -> PodLabelIndex {
        PodLabelIndex {
            with_terms,
            ..PodLabelIndex::default()
        }
    }

    /// Brings the index up to date with `snap`.
    pub(crate) fn refresh(&mut self, snap: &Snapshot) {
        if self.snapshot != snap.id() {
            *self = PodLabelIndex::new(self.with_terms);
            self.snapshot = snap.id();
        }
        let changed = self.changes.changed(snap);
        if self.slots.len() < snap.generations().len() {
            self.slots.resize(snap.generations().len(), Slot::default());
        }
        for slot in changed {
            self.reindex(slot, snap.node(NodeId(slot)));
        }
    }

    fn reindex(&mut self, slot: u32, node: &NodeInfo) {
        let old = std::mem::take(&mut self.slots[slot as usize]);
        for p in &old.labels {
            remove(&mut self.by_label, p, slot);
        }
        for p in &old.terms {
            remove(&mut self.by_term, p, slot);
        }
        if old.unindexed {
            self.unindexed.remove(&slot);
        }
        if !node.present {
            return;
        }
        let mut new = Slot::default();
        for p in &node.pods {
            new.labels.extend(p.labels.iter());
            if self.with_terms && p.spec.affinity.has_pod_affinity_terms() {
                let a = &p.spec.affinity;
                let terms = a
                    .required
                    .iter()
                    .chain(&a.required_anti)
                    .chain(a.preferred.iter().map(|w| &w.term))
                    .chain(a.preferred_anti.iter().map(|w| &w.term));
                for t in terms {
                    index_term(t, &mut new);
                }
            }
        }
        new.labels.sort_unstable();
        new.labels.dedup();
        new.terms.sort_unstable();
        new.terms.dedup();
        for p in &new.labels {
            self.by_label.entry(*p).or_default().insert(slot);
        }
        for p in &new.terms {
            self.by_term.entry(*p).or_default().insert(slot);
        }
        if new.unindexed {
            self.unindexed.insert(slot);
        }
        self.slots[slot as usize] = new;
    }

    /// Adds to `out` every node slot that may hold a pod `sel` matches, and
    /// returns true; returns false (adding nothing) when the selector has
    /// no `In` requirement, so any node may. `out` may repeat slots.
    pub(crate) fn candidates(&self, sel: &Selector, out: &mut Vec<u32>) -> bool {
        let Some((key, values)) = in_requirement(sel) else {
            return false;
        };
        for v in values {
            if let Some(s) = self.by_label.get(&(key, *v)) {
                out.extend(s.iter().copied());
            }
        }
        true
    }

    /// Adds to `out` every node slot holding a pod with an affinity term
    /// that may refer to a pod with `labels` (needs `with_terms`). `out`
    /// may repeat slots.
    pub(crate) fn term_candidates(&self, labels: &Labels, out: &mut Vec<u32>) {
        debug_assert!(self.with_terms);
        for p in labels.iter() {
            if let Some(s) = self.by_term.get(&p) {
                out.extend(s.iter().copied());
            }
        }
        out.extend(self.unindexed.iter().copied());
    }
}

/// Indexes one existing pod's term into `slot`.
fn index_term(t: &AffinityTerm, slot: &mut Slot) {
    // A term without a selector refers to no pod.
    let Some(sel) = &t.selector else { return };
    match in_requirement(sel) {
        Some((key, values)) => slot.terms.extend(values.iter().map(|v| (key, *v))),
        None => slot.unindexed = true,
    }
}

fn remove(map: &mut FxHashMap<Pair, FxHashSet<u32>>, p: &Pair, slot: u32) {
    if let Some(s) = map.get_mut(p) {
        s.remove(&slot);
        if s.is_empty() {
            map.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use strata_scheduler::testing;

    /// A pod on node `n{node}` with `app` = `a{app}`, and, if `term`, a
    /// required anti-affinity to `app` = `a{term}`.
    fn pod(
        i: usize,
        node: usize,
        app: usize,
        term: Option<usize>,
    ) -> strata_scheduler::sdk::PodInfo {
        let mut b = testing::pod(&format!("p{i}"))
            .on(&format!("n{node}"))
            .label("app", &format!("a{app}"));
        if let Some(t) = term {
            b = b.spec(serde_json::json!({"affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"app": format!("a{t}")}}
                }]
            }}}));
        }
        b.build()
    }

    proptest! {
        /// Through pods added and removed, the candidates of `app In (aK)`
        /// are exactly the nodes holding such a pod, and the term
        /// candidates of a pod labelled `app=aK` exactly the nodes holding a
        /// pod whose term names `aK`, as a fresh index says.
        #[test]
        fn incremental_index_equals_fresh(
            steps in prop::collection::vec((any::<bool>(), 0usize..4, 0usize..3, prop::option::of(0usize..3)), 1..30),
        ) {
            let nodes = (0..4).map(|i| testing::node(&format!("n{i}")).build()).collect();
            let mut cache = testing::cache_with(nodes, vec![]);
            let mut idx = PodLabelIndex::new(true);
            let mut uids: Vec<Arc<str>> = Vec::new();
            for (i, (add, node, app, term)) in steps.iter().enumerate() {
                if *add || uids.is_empty() {
                    let p = pod(i, *node, *app, *term);
                    uids.push(p.uid.clone());
                    cache.add_pod(Arc::new(p));
                } else {
                    let uid = uids.remove(i % uids.len());
                    cache.remove_pod(&uid);
                }
                idx.refresh(cache.snapshot());
                let mut fresh = PodLabelIndex::new(true);
                fresh.refresh(cache.snapshot());
                for a in 0..3 {
                    let v = Sym::new(&format!("a{a}"));
                    let sel = Selector {
                        reqs: smallvec::smallvec![strata_scheduler::labels::Requirement {
                            key: Sym::new("app"),
                            op: Op::In(smallvec::smallvec![v]),
                        }],
                    };
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    prop_assert!(idx.candidates(&sel, &mut got));
                    prop_assert!(fresh.candidates(&sel, &mut want));
                    got.sort_unstable();
                    want.sort_unstable();
                    let by_walk: Vec<u32> = cache
                        .snapshot()
                        .nodes()
                        .filter(|n| n.pods.iter().any(|p| p.labels.get(Sym::new("app")) == Some(v)))
                        .map(|n| n.id.0)
                        .collect();
                    let mut by_walk = by_walk;
                    by_walk.sort_unstable();
                    prop_assert_eq!(&got, &want);
                    prop_assert_eq!(&got, &by_walk);
                    let name = format!("a{a}");
                    let labels = Labels::from_pairs([("app", name.as_str())]);
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    idx.term_candidates(&labels, &mut got);
                    fresh.term_candidates(&labels, &mut want);
                    got.sort_unstable();
                    want.sort_unstable();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }

    #[test]
    fn a_selector_without_in_has_no_candidate_list() {
        let idx = PodLabelIndex::new(false);
        let sel = Selector {
            reqs: smallvec::smallvec![strata_scheduler::labels::Requirement {
                key: Sym::new("app"),
                op: Op::Exists,
            }],
        };
        let mut out = Vec::new();
        assert!(!idx.candidates(&sel, &mut out));
        assert!(!idx.candidates(&Selector::default(), &mut out));
        assert!(out.is_empty());
    }
}
