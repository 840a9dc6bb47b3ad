//! The two small data structures every phase of InterPodAffinity shares.
//!
//! [`NsScope`] is an incoming pod's term with its `namespaceSelector`
//! resolved, once per cycle, against the namespaces the snapshot knows, so
//! matching an existing pod is a set lookup rather than a selector evaluation
//! per pod, and so PreFilter extensions (which get no snapshot) can still match
//! pods in namespaces chosen by label. kube-scheduler does the same when it
//! merges the selected namespaces into the term.
//!
//! [`TopoCounts`] maps a topology pair (label key, label value) to a signed
//! count or score. Invariants: no entry holds zero (a pair whose count returns
//! to zero is removed, so `is_empty` means "nothing counted anywhere", which the
//! first-pod-of-a-group rule depends on), and `keys` lists every key that has
//! ever held an entry, so a node is checked with one label lookup and one map
//! lookup per key instead of one map lookup per node label.

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use strata_scheduler::model::{AffinityTerm, NamespaceLabels};
use strata_scheduler::sdk::{Labels, Sym};

/// Which namespaces an incoming pod's term covers, resolved at the start of
/// the cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum NsScope {
    /// Only the namespaces the term lists (no namespace selector).
    Listed,
    /// Every namespace (an empty namespace selector).
    All,
    /// The listed namespaces and those whose labels matched the selector.
    Selected(FxHashSet<Sym>),
}

impl NsScope {
    /// Resolves `term`'s namespace selector against `ns_labels`.
    pub(super) fn resolve(term: &AffinityTerm, ns_labels: &NamespaceLabels) -> NsScope {
        match &term.namespace_selector {
            None => NsScope::Listed,
            Some(sel) if sel.is_empty() => NsScope::All,
            Some(sel) => NsScope::Selected(
                ns_labels
                    .iter()
                    .filter(|(_, labels)| sel.matches(labels))
                    .map(|(ns, _)| *ns)
                    .collect(),
            ),
        }
    }

    /// Resolves every term of a list.
    pub(super) fn resolve_all<'a>(
        terms: impl IntoIterator<Item = &'a AffinityTerm>,
        ns_labels: &NamespaceLabels,
    ) -> SmallVec<[NsScope; 2]> {
        terms
            .into_iter()
            .map(|t| NsScope::resolve(t, ns_labels))
            .collect()
    }

    /// Whether a pod in `ns` with `labels` is one `term` (whose scope this
    /// is) refers to.
    #[inline]
    pub(super) fn matches(&self, term: &AffinityTerm, ns: Sym, labels: &Labels) -> bool {
        let Some(sel) = &term.selector else {
            return false;
        };
        let ns_ok = match self {
            NsScope::All => true,
            NsScope::Listed => term.namespaces.contains(&ns),
            NsScope::Selected(set) => term.namespaces.contains(&ns) || set.contains(&ns),
        };
        ns_ok && sel.matches(labels)
    }
}

/// Whether a pod in `ns` with `labels` matches every term (false for no
/// terms, as in kube-scheduler).
pub(super) fn matches_all(
    terms: &[AffinityTerm],
    scopes: &[NsScope],
    ns: Sym,
    labels: &Labels,
) -> bool {
    !terms.is_empty()
        && terms
            .iter()
            .zip(scopes)
            .all(|(t, s)| s.matches(t, ns, labels))
}

/// Packs a topology pair into one word: one hash round instead of two.
#[inline]
fn pair(key: Sym, value: Sym) -> u64 {
    ((key.index() as u64) << 32) | value.index() as u64
}

/// Signed counts (or scores) per topology pair. See the module docs for the
/// invariants.
#[derive(Clone, Debug, Default)]
pub(super) struct TopoCounts {
    keys: SmallVec<[Sym; 4]>,
    counts: FxHashMap<u64, i64>,
}

impl TopoCounts {
    /// Adds `delta` to the pair (`key`, `value`).
    pub(super) fn add(&mut self, key: Sym, value: Sym, delta: i64) {
        if delta == 0 {
            return;
        }
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
        let e = self.counts.entry(pair(key, value)).or_insert(0);
        *e += delta;
        if *e == 0 {
            self.counts.remove(&pair(key, value));
        }
    }

    /// Every key that has held a count.
    #[inline]
    pub(super) fn keys(&self) -> &[Sym] {
        &self.keys
    }

    /// The count of a pair (0 when absent).
    #[inline]
    pub(super) fn get(&self, key: Sym, value: Sym) -> i64 {
        self.counts.get(&pair(key, value)).copied().unwrap_or(0)
    }

    /// Whether no pair holds a count.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Whether any pair of a node's labels holds a positive count.
    #[inline]
    pub(super) fn any_positive_on(&self, node_labels: &Labels) -> bool {
        !self.counts.is_empty()
            && self
                .keys
                .iter()
                .any(|&k| node_labels.get(k).is_some_and(|v| self.get(k, v) > 0))
    }

    /// The sum over the pairs of a node's labels.
    #[inline]
    pub(super) fn sum_on(&self, node_labels: &Labels) -> i64 {
        self.keys
            .iter()
            .filter_map(|&k| node_labels.get(k).map(|v| self.get(k, v)))
            .sum()
    }

    /// Whether both hold the same counts (tests compare incremental and
    /// recomputed state).
    #[cfg(test)]
    pub(super) fn same_counts(&self, other: &TopoCounts) -> bool {
        self.counts == other.counts
    }
}
