//! What existing pods contribute, node by node.
//!
//! Filter and Score run once per node (16,000 of them) and must be a few map
//! lookups, so everything that depends on other pods is reduced to
//! [`TopoCounts`] keyed by topology pair, in four [`Target`]s:
//!
//! * `ExistingAnti`: pairs where an existing pod's required anti-affinity
//!   refers to the incoming pod;
//! * `Affinity`: pairs holding pods that match *all* of the incoming pod's
//!   required affinity terms;
//! * `Anti`: pairs holding pods that match one of its required anti-affinity
//!   terms (once per matching term);
//! * `Score`: kube-scheduler's topology score, the signed sum of matched
//!   preferred weights in both directions and of existing pods' required
//!   affinity × `hardPodAffinityWeight`.
//!
//! Every contribution comes from one existing pod and is keyed by a label of
//! that pod's node, so the totals are a sum of per-node parts.
//! [`Walker::visit_node`] computes one node's part; the memo (`memo.rs`)
//! keeps the parts and recomputes only nodes whose generation moved. The
//! tests check it against `Counts::scan`, the plain walk over every node.
//!
//! The walk is bound by memory latency (each pod is a pointer chase into
//! its own allocation), so a node's pods are gathered before they are looked
//! at: their loads then overlap instead of stalling one after another.

use super::args::InterPodAffinityArgs;
use super::memo::Views;
use super::topology::{NsScope, TopoCounts, matches_all};
use crate::common::topology_domains::{NONE, NodeSlots};
use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::model::{NamespaceLabels, PodAffinity, PodSpecInfo};
use strata_scheduler::sdk::{DomainVerdict, Labels, NodeInfo, PodInfo, ScoreLayer, Sym};

/// Which total a contribution goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    ExistingAnti,
    Affinity,
    Anti,
    Score,
}

/// The four totals. `Arc`s so a cycle's state and the memo share them; the
/// memo copies on write only if a previous cycle still holds them.
#[derive(Clone, Debug, Default)]
pub(super) struct Counts {
    pub(super) existing_anti: Arc<TopoCounts>,
    pub(super) affinity: Arc<TopoCounts>,
    pub(super) anti: Arc<TopoCounts>,
    pub(super) score: Arc<TopoCounts>,
    /// The totals again, per (total, key) as arrays by domain id (kept by
    /// the memo only; empty from [`Counts::scan`]).
    pub(super) dense: SmallVec<[Dense; 4]>,
}

/// One total of one key, by domain id (ids beyond the end count 0).
#[derive(Clone, Debug)]
pub(super) struct Dense {
    target: Target,
    key: Sym,
    counts: Arc<Vec<i64>>,
}

impl Dense {
    /// The key the total is over.
    #[inline]
    pub(super) fn key(&self) -> Sym {
        self.key
    }
}

impl Counts {
    /// Makes sure the dense total of (`target`, `key`) exists and covers
    /// `len` domains.
    pub(super) fn ensure_dense(&mut self, target: Target, key: Sym, len: usize) {
        match self
            .dense
            .iter_mut()
            .find(|d| d.target == target && d.key == key)
        {
            Some(d) => {
                if d.counts.len() < len {
                    Arc::make_mut(&mut d.counts).resize(len, 0);
                }
            }
            None => self.dense.push(Dense {
                target,
                key,
                counts: Arc::new(vec![0; len]),
            }),
        }
    }

    /// Adds `delta` to domain `dom` of the dense total of (`target`, `key`),
    /// if kept.
    pub(super) fn add_dense(&mut self, target: Target, key: Sym, dom: u32, delta: i64) {
        if dom == NONE || delta == 0 {
            return;
        }
        if let Some(d) = self
            .dense
            .iter_mut()
            .find(|d| d.target == target && d.key == key)
        {
            let c = Arc::make_mut(&mut d.counts);
            let i = dom as usize;
            if c.len() <= i {
                c.resize(i + 1, 0);
            }
            c[i] += delta;
        }
    }

    /// The score total as layers by domain, one per key it holds (what
    /// the engine's fast path compares across cycles); `None` if a key's
    /// dense total or domains are missing.
    pub(super) fn score_layers(&self, views: &Views) -> Option<Vec<ScoreLayer>> {
        self.score
            .keys()
            .iter()
            .map(|&k| {
                Some(ScoreLayer {
                    of_node: views.find(k)?.of_node.clone(),
                    values: self.dense_of(Target::Score, k)?.clone(),
                })
            })
            .collect()
    }

    /// The dense total of (`target`, `key`), if kept.
    fn dense_of(&self, target: Target, key: Sym) -> Option<&Arc<Vec<i64>>> {
        self.dense
            .iter()
            .find(|d| d.target == target && d.key == key)
            .map(|d| &d.counts)
    }

    /// Adds `delta` to one pair of one total.
    pub(super) fn add(&mut self, target: Target, key: Sym, value: Sym, delta: i64) {
        let c = match target {
            Target::ExistingAnti => &mut self.existing_anti,
            Target::Affinity => &mut self.affinity,
            Target::Anti => &mut self.anti,
            Target::Score => &mut self.score,
        };
        Arc::make_mut(c).add(key, value, delta);
    }

    /// The totals computed from scratch by visiting every node.
    #[cfg(test)]
    pub(super) fn scan(w: &Walker<'_>, snap: &strata_scheduler::sdk::Snapshot) -> Counts {
        let mut c = Counts::default();
        for node in snap.nodes() {
            if w.may_contribute(node) {
                w.visit_node(node, &mut |t, k, v, d| c.add(t, k, v, d));
            }
        }
        c
    }
}

/// The parts of an existing pod the walk reads, gathered ahead of use.
#[derive(Clone, Copy)]
struct Other<'a> {
    ns: Sym,
    labels: &'a Labels,
    aff: &'a PodAffinity,
}

impl<'a> Other<'a> {
    #[inline]
    fn of(p: &'a PodInfo) -> Other<'a> {
        Other {
            ns: p.namespace,
            labels: &p.labels,
            aff: &p.spec.affinity,
        }
    }
}

/// Everything that decides what an existing pod contributes for one
/// incoming pod: the pod, its terms' resolved namespace scopes, its
/// namespace's labels, and the plugin's arguments (together its [`Class`]).
pub(super) struct Walker<'a> {
    pub(super) pod: &'a PodInfo,
    pub(super) scopes: Scopes,
    /// The incoming pod's namespace and its labels, if the namespace is
    /// known (existing pods' namespace selectors are matched against it).
    pub(super) own_ns_labels: Arc<NamespaceLabels>,
    pub(super) args: InterPodAffinityArgs,
    /// Whether the score total is wanted (see `InterPodAffinity::may_score`).
    pub(super) want_score: bool,
    /// Whether every pod must be looked at (the incoming pod has terms of
    /// its own); otherwise only pods with terms, on nodes whose counters say
    /// they hold some.
    all: bool,
}

/// What decides an existing pod's contributions besides the pod itself:
/// incoming pods with equal classes get equal counts from equal nodes.
#[derive(Clone, Debug)]
pub(super) struct Class {
    namespace: Sym,
    labels: Arc<Labels>,
    spec: Arc<PodSpecInfo>,
    scopes: Scopes,
    own_ns_labels: Arc<NamespaceLabels>,
    args: InterPodAffinityArgs,
    want_score: bool,
}

/// The resolved namespace scopes of the incoming pod's four term lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Scopes {
    pub(super) required: SmallVec<[NsScope; 2]>,
    pub(super) required_anti: SmallVec<[NsScope; 2]>,
    pub(super) preferred: SmallVec<[NsScope; 2]>,
    pub(super) preferred_anti: SmallVec<[NsScope; 2]>,
}

impl<'a> Walker<'a> {
    /// The walker for `pod` against the namespaces in `ns_labels`.
    pub(super) fn new(
        pod: &'a PodInfo,
        ns_labels: &NamespaceLabels,
        args: InterPodAffinityArgs,
        want_score: bool,
    ) -> Walker<'a> {
        let aff = &pod.spec.affinity;
        let scopes = Scopes {
            required: NsScope::resolve_all(&aff.required, ns_labels),
            required_anti: NsScope::resolve_all(&aff.required_anti, ns_labels),
            preferred: NsScope::resolve_all(aff.preferred.iter().map(|w| &w.term), ns_labels),
            preferred_anti: NsScope::resolve_all(
                aff.preferred_anti.iter().map(|w| &w.term),
                ns_labels,
            ),
        };
        let own_ns_labels = Arc::new(
            ns_labels
                .get(&pod.namespace)
                .map(|l| std::iter::once((pod.namespace, l.clone())).collect())
                .unwrap_or_default(),
        );
        let all = !aff.required.is_empty()
            || !aff.required_anti.is_empty()
            || (want_score && (!aff.preferred.is_empty() || !aff.preferred_anti.is_empty()));
        Walker {
            pod,
            scopes,
            own_ns_labels,
            args,
            want_score,
            all,
        }
    }

    /// The walker's inputs, owned, to recognise later pods of the class.
    pub(super) fn class(&self) -> Class {
        Class {
            namespace: self.pod.namespace,
            labels: self.pod.labels.clone(),
            spec: self.pod.spec.clone(),
            scopes: self.scopes.clone(),
            own_ns_labels: self.own_ns_labels.clone(),
            args: self.args,
            want_score: self.want_score,
        }
    }

    /// Whether this walker's pod gets, from every node, the contributions a
    /// pod of class `c` gets.
    pub(super) fn is_class(&self, c: &Class) -> bool {
        let p = self.pod;
        p.namespace == c.namespace
            && (Arc::ptr_eq(&p.labels, &c.labels) || p.labels == c.labels)
            && (Arc::ptr_eq(&p.spec, &c.spec) || p.spec.affinity == c.spec.affinity)
            && self.scopes == c.scopes
            && self.own_ns_labels == c.own_ns_labels
            && self.args == c.args
            && self.want_score == c.want_score
    }

    /// Whether the walk matches every pod against the incoming pod's own
    /// terms (it has some), not only pods with terms of their own.
    #[inline]
    pub(super) fn looks_at_every_pod(&self) -> bool {
        self.all
    }

    /// Whether anything on `node` can contribute; decided from the node's
    /// counters without touching its pods.
    #[inline]
    pub(super) fn may_contribute(&self, node: &NodeInfo) -> bool {
        // Every contribution is keyed by one of the node's labels.
        !node.labels.is_empty()
            && (self.all
                || node.pods_with_required_anti_affinity > 0
                || (self.want_score && node.pods_with_affinity > 0))
    }

    /// Emits every contribution of the pods on `node`.
    pub(super) fn visit_node(&self, node: &NodeInfo, emit: &mut impl FnMut(Target, Sym, Sym, i64)) {
        let with_terms = node.pods_with_required_anti_affinity > 0
            || (self.want_score && node.pods_with_affinity > 0);
        for chunk in node.pods.chunks(CHUNK) {
            let mut others: SmallVec<[(Other<'_>, bool); CHUNK]> = SmallVec::new();
            others.extend(chunk.iter().map(|p| (Other::of(p), false)));
            for (o, has_terms) in others.iter_mut() {
                *has_terms = with_terms && o.aff.has_pod_affinity_terms();
            }
            for &(other, has_terms) in &others {
                if self.all {
                    self.visit_incoming(other, &node.labels, emit);
                }
                if has_terms {
                    self.visit_existing(other, &node.labels, &self.own_ns_labels, emit);
                }
            }
        }
    }

    /// `other` (on a node with `node_labels`) against the incoming pod's
    /// terms.
    #[inline]
    fn visit_incoming(
        &self,
        other: Other<'_>,
        node_labels: &Labels,
        emit: &mut impl FnMut(Target, Sym, Sym, i64),
    ) {
        let aff = &self.pod.spec.affinity;
        let s = &self.scopes;
        let mut on = |target, key, delta| {
            if let Some(v) = node_labels.get(key) {
                emit(target, key, v, delta);
            }
        };
        if matches_all(&aff.required, &s.required, other.ns, other.labels) {
            for t in &aff.required {
                on(Target::Affinity, t.topology_key, 1);
            }
        }
        for (t, sc) in aff.required_anti.iter().zip(&s.required_anti) {
            if sc.matches(t, other.ns, other.labels) {
                on(Target::Anti, t.topology_key, 1);
            }
        }
        if !self.want_score {
            return;
        }
        for (w, sc) in aff.preferred.iter().zip(&s.preferred) {
            if sc.matches(&w.term, other.ns, other.labels) {
                on(Target::Score, w.term.topology_key, i64::from(w.weight));
            }
        }
        for (w, sc) in aff.preferred_anti.iter().zip(&s.preferred_anti) {
            if sc.matches(&w.term, other.ns, other.labels) {
                on(Target::Score, w.term.topology_key, -i64::from(w.weight));
            }
        }
    }

    /// `other`'s own terms against the incoming pod.
    #[inline]
    fn visit_existing(
        &self,
        other: Other<'_>,
        node_labels: &Labels,
        ns_labels: &NamespaceLabels,
        emit: &mut impl FnMut(Target, Sym, Sym, i64),
    ) {
        let pod = self.pod;
        let mut on = |target, key, delta| {
            if let Some(v) = node_labels.get(key) {
                emit(target, key, v, delta);
            }
        };
        let refers = |t: &strata_scheduler::model::AffinityTerm| {
            t.matches(pod.namespace, &pod.labels, ns_labels)
        };
        for t in &other.aff.required_anti {
            if refers(t) {
                on(Target::ExistingAnti, t.topology_key, 1);
            }
        }
        if !self.want_score {
            return;
        }
        let hard = i64::from(self.args.hard_pod_affinity_weight);
        if hard > 0 {
            for t in &other.aff.required {
                if refers(t) {
                    on(Target::Score, t.topology_key, hard);
                }
            }
        }
        if !self.args.ignore_preferred_terms_of_existing_pods {
            for w in &other.aff.preferred {
                if refers(&w.term) {
                    on(Target::Score, w.term.topology_key, i64::from(w.weight));
                }
            }
            for w in &other.aff.preferred_anti {
                if refers(&w.term) {
                    on(Target::Score, w.term.topology_key, -i64::from(w.weight));
                }
            }
        }
    }
}

/// Pods gathered at a time; the buffer lives on the stack.
const CHUNK: usize = 16;

/// What PreFilter leaves for Filter. Cloned by preemption for each what-if
/// (cheaply: the counts are shared until changed).
#[derive(Clone, Debug)]
pub(super) struct FilterState {
    /// Resolved scopes of the incoming pod's required affinity terms.
    affinity_scopes: SmallVec<[NsScope; 2]>,
    /// Resolved scopes of its required anti-affinity terms.
    anti_scopes: SmallVec<[NsScope; 2]>,
    /// The incoming pod's namespace labels, for existing pods' namespace
    /// selectors when the extensions run without a snapshot.
    own_ns_labels: Arc<NamespaceLabels>,
    /// Pairs where existing pods' required anti-affinity refers to the pod.
    pub(super) existing_anti: Arc<TopoCounts>,
    /// Pairs holding pods that match all required affinity terms.
    pub(super) affinity: Arc<TopoCounts>,
    /// Pairs holding pods matching a required anti-affinity term.
    pub(super) anti: Arc<TopoCounts>,
    /// Whether the incoming pod matches all its own required affinity terms
    /// (the first pod of a group may then start it).
    pub(super) self_match: bool,
    /// The same totals by dense domain id, for Filter; dropped by any
    /// what-if update (which then reads the totals by pair).
    pub(super) fast: Option<Arc<Fast>>,
}

/// One key's node domains and one total's counts by domain.
#[derive(Debug)]
pub(super) struct Column {
    of_node: Arc<Vec<u32>>,
    counts: Arc<Vec<i64>>,
    /// One past the key's largest domain id.
    ids: usize,
}

impl Column {
    /// The domain of node slot `slot` and its count, `None` when the node
    /// lacks the key.
    #[inline]
    fn at(&self, slot: usize) -> Option<i64> {
        match self.of_node.get(slot).copied().unwrap_or(NONE) {
            NONE => None,
            d => Some(self.counts.get(d as usize).copied().unwrap_or(0)),
        }
    }
}

/// Filter's totals by domain id: per required affinity term, per required
/// anti-affinity term, and per key of existing pods' anti-affinity.
#[derive(Debug)]
pub(super) struct Fast {
    slots: NodeSlots,
    affinity: SmallVec<[Column; 2]>,
    anti: SmallVec<[Column; 2]>,
    existing: SmallVec<[Column; 2]>,
}

impl Fast {
    /// Columns for `pod` from the memo's dense totals and the domains of
    /// every key they and the pod's terms use; `None` if a key's domains
    /// are missing.
    pub(super) fn new(
        pod: &PodInfo,
        counts: &Counts,
        views: &Views,
        slots: NodeSlots,
    ) -> Option<Fast> {
        let aff = &pod.spec.affinity;
        let column = |target: Target, key: Sym| -> Option<Column> {
            let view = views.find(key)?;
            let counts = counts.dense_of(target, key).cloned().unwrap_or_default();
            Some(Column {
                of_node: view.of_node.clone(),
                ids: view.len.max(counts.len()),
                counts,
            })
        };
        Some(Fast {
            slots,
            affinity: aff
                .required
                .iter()
                .map(|t| column(Target::Affinity, t.topology_key))
                .collect::<Option<_>>()?,
            anti: aff
                .required_anti
                .iter()
                .map(|t| column(Target::Anti, t.topology_key))
                .collect::<Option<_>>()?,
            existing: counts
                .dense
                .iter()
                .filter(|d| d.target == Target::ExistingAnti)
                .map(|d| column(Target::ExistingAnti, d.key))
                .collect::<Option<_>>()?,
        })
    }
}

/// Filter's verdict, in kube-scheduler's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    Affinity,
    Anti,
    ExistingAnti,
}

impl FilterState {
    /// Filter by dense domain ids: the same rules as the checks by pair
    /// (`mod.rs`), reading `counts[domain_of[slot]]` per term and key.
    #[inline]
    pub(super) fn verdict_fast(&self, f: &Fast, node: &NodeInfo) -> Verdict {
        let slot = f.slots.id(node);
        let mut pods_exist = true;
        for c in &f.affinity {
            match c.at(slot) {
                // Every topology key must be on the node.
                None => return Verdict::Affinity,
                Some(n) => {
                    if n <= 0 {
                        pods_exist = false;
                    }
                }
            }
        }
        if !(pods_exist || (self.affinity.is_empty() && self.self_match)) {
            return Verdict::Affinity;
        }
        if !self.anti.is_empty() && f.anti.iter().any(|c| c.at(slot).is_some_and(|n| n > 0)) {
            return Verdict::Anti;
        }
        if !self.existing_anti.is_empty()
            && f.existing.iter().any(|c| c.at(slot).is_some_and(|n| n > 0))
        {
            return Verdict::ExistingAnti;
        }
        Verdict::Pass
    }

    /// [`FilterState::verdict_fast`] per domain, as layers the engine
    /// intersects: a node passes them all exactly when the verdict is
    /// [`Verdict::Pass`].
    pub(super) fn domain_verdicts(&self, f: &Fast) -> Vec<DomainVerdict> {
        // Domains beyond the counts hold none (count 0). A plain loop over
        // the slice, so it vectorizes: hostname layers have a domain per
        // node.
        fn layer(c: &Column, occupied: bool, absent: bool) -> DomainVerdict {
            let mut pass: Vec<bool> = c
                .counts
                .iter()
                .take(c.ids)
                .map(|&n| (n > 0) == occupied)
                .collect();
            pass.resize(c.ids, !occupied);
            DomainVerdict {
                of_node: c.of_node.clone(),
                pass,
                absent,
            }
        }
        let mut out = Vec::new();
        // Every key must be on the node; then every term's domain must hold
        // a matching pod, unless the pod may start its group (no matching
        // pod anywhere and it matches its own terms).
        let may_start = self.affinity.is_empty() && self.self_match;
        for c in &f.affinity {
            let mut l = layer(c, true, false);
            if may_start {
                l.pass.iter_mut().for_each(|p| *p = true);
            }
            out.push(l);
        }
        if !self.anti.is_empty() {
            for c in &f.anti {
                out.push(layer(c, false, true));
            }
        }
        if !self.existing_anti.is_empty() {
            for c in &f.existing {
                out.push(layer(c, false, true));
            }
        }
        out
    }

    /// The state for the walker's pod from its totals.
    pub(super) fn new(w: &Walker<'_>, counts: &Counts) -> FilterState {
        let pod = w.pod;
        FilterState {
            self_match: matches_all(
                &pod.spec.affinity.required,
                &w.scopes.required,
                pod.namespace,
                &pod.labels,
            ),
            affinity_scopes: w.scopes.required.clone(),
            anti_scopes: w.scopes.required_anti.clone(),
            own_ns_labels: w.own_ns_labels.clone(),
            existing_anti: counts.existing_anti.clone(),
            affinity: counts.affinity.clone(),
            anti: counts.anti.clone(),
            fast: None,
        }
    }

    /// `other` appears on (`delta` = 1) or leaves (`delta` = -1) a node with
    /// `node_labels`: the PreFilter extensions' update. Applies the same
    /// rules as the walk, restricted to the filter totals.
    pub(super) fn update_with_pod(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        node_labels: &Labels,
        delta: i64,
    ) {
        // The dense totals are not kept through what-if updates.
        self.fast = None;
        let aff = &pod.spec.affinity;
        for t in &other.spec.affinity.required_anti {
            if t.matches(pod.namespace, &pod.labels, &self.own_ns_labels)
                && let Some(v) = node_labels.get(t.topology_key)
            {
                Arc::make_mut(&mut self.existing_anti).add(t.topology_key, v, delta);
            }
        }
        if matches_all(
            &aff.required,
            &self.affinity_scopes,
            other.namespace,
            &other.labels,
        ) {
            for t in &aff.required {
                if let Some(v) = node_labels.get(t.topology_key) {
                    Arc::make_mut(&mut self.affinity).add(t.topology_key, v, delta);
                }
            }
        }
        for (t, s) in aff.required_anti.iter().zip(&self.anti_scopes) {
            if s.matches(t, other.namespace, &other.labels)
                && let Some(v) = node_labels.get(t.topology_key)
            {
                Arc::make_mut(&mut self.anti).add(t.topology_key, v, delta);
            }
        }
    }
}
