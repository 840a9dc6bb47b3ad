//! PreFilter and Filter: the hard (`DoNotSchedule`) constraints.
//!
//! PreFilter counts, once per cycle, the matching pods of every eligible
//! domain (see `common.rs` for what is eligible and what counts), taking the
//! totals the memo keeps up to date (`memo.rs`). Filter then
//! checks, per constraint and with no allocation:
//!
//! ```text
//! node lacks the topology key                 -> UnschedulableAndUnresolvable
//! count(node's domain) + self - global_min > maxSkew -> Unschedulable
//! ```
//!
//! where `self` is 1 when the incoming pod matches the constraint's own
//! selector, and `global_min` is the smallest count over the eligible
//! domains, or 0 while there are fewer eligible domains than `minDomains`.
//!
//! Preemption's what-if checks call `add_pod`/`remove_pod` on a clone of the
//! state, once per candidate node. The counts computed by PreFilter are
//! shared behind an `Arc` and never copied: a clone carries only the few
//! domains changed since, and the exact global minimum is recomputed from the
//! shared sorted histogram of counts plus those changes. (kube-scheduler
//! keeps the two smallest domains only, which can go stale after several
//! updates; this stays exact.)

use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::{Arc, OnceLock};
use strata_scheduler::cache::Snapshot;
use strata_scheduler::framework::{
    CycleState, FilterPlugin, PreFilterPlugin, PreFilterResult, Status,
};
use strata_scheduler::intern::Sym;
use strata_scheduler::model::{NodeInfo, PodInfo};

use super::PodTopologySpread;
use super::common::{Constraint, InclusionChecks, countable, has_all_keys};

/// Filter's reason when the skew would exceed `maxSkew`.
pub const ERR_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// Filter's reason when the node lacks a constraint's topology key.
pub const ERR_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// Counts per domain as PreFilter found them; shared by every clone (and
/// with the memo until its next change).
#[derive(Debug, Default)]
struct BaseCounts {
    counts: Arc<FxHashMap<Sym, i64>>,
    min: i64,
    /// Distinct counts ascending with how many domains hold each; built on
    /// the first what-if update only.
    histogram: OnceLock<Vec<(i64, u32)>>,
}

impl BaseCounts {
    fn new(counts: Arc<FxHashMap<Sym, i64>>) -> BaseCounts {
        let min = counts.values().copied().min().unwrap_or(i64::MAX);
        BaseCounts {
            counts,
            min,
            histogram: OnceLock::new(),
        }
    }

    fn histogram(&self) -> &[(i64, u32)] {
        self.histogram.get_or_init(|| {
            let mut h: FxHashMap<i64, u32> = FxHashMap::default();
            for &c in self.counts.values() {
                *h.entry(c).or_default() += 1;
            }
            let mut v: Vec<(i64, u32)> = h.into_iter().collect();
            v.sort_unstable();
            v
        })
    }
}

/// The matching-pod count of each eligible domain of one constraint.
#[derive(Clone, Debug)]
struct Domains {
    base: Arc<BaseCounts>,
    /// Domains changed by what-if updates, with their current counts.
    changed: SmallVec<[(Sym, i64); 2]>,
    /// Number of eligible domains.
    len: usize,
    /// Smallest count over all domains (`i64::MAX` when there are none).
    min: i64,
}

impl Domains {
    fn new(counts: Arc<FxHashMap<Sym, i64>>) -> Domains {
        let base = BaseCounts::new(counts);
        Domains {
            len: base.counts.len(),
            min: base.min,
            base: Arc::new(base),
            changed: SmallVec::new(),
        }
    }

    /// The count of domain `v`, `None` when it is not an eligible domain.
    #[inline]
    fn get(&self, v: Sym) -> Option<i64> {
        if !self.changed.is_empty()
            && let Some((_, c)) = self.changed.iter().find(|(k, _)| *k == v)
        {
            return Some(*c);
        }
        self.base.counts.get(&v).copied()
    }

    /// The global minimum for a constraint with `min_domains`.
    #[inline]
    fn global_min(&self, min_domains: i32) -> i64 {
        if (self.len as i64) < i64::from(min_domains) || self.len == 0 {
            0
        } else {
            self.min
        }
    }

    /// Adds `delta` to domain `v`, making it eligible if it was not.
    fn add(&mut self, v: Sym, delta: i64) {
        let old = self.get(v);
        let new = old.unwrap_or(0) + delta;
        if old.is_none() {
            self.len += 1;
        }
        match self.changed.iter_mut().find(|(k, _)| *k == v) {
            Some(e) => e.1 = new,
            None => self.changed.push((v, new)),
        }
        self.min = self.recompute_min();
    }

    /// The exact minimum over base counts overridden by `changed`: the
    /// smallest changed count, or the smallest base count still held by a
    /// domain that was not changed. At most `changed.len() + 1` histogram
    /// entries are visited.
    fn recompute_min(&self) -> i64 {
        let mut best = self
            .changed
            .iter()
            .map(|(_, c)| *c)
            .min()
            .unwrap_or(i64::MAX);
        for &(count, n) in self.base.histogram() {
            if count >= best {
                break;
            }
            let moved = self
                .changed
                .iter()
                .filter(|(k, _)| self.base.counts.get(k) == Some(&count))
                .count() as u32;
            if n > moved {
                best = count;
                break;
            }
        }
        best
    }
}

/// What PreFilter leaves for Filter: the hard constraints and their counts.
#[derive(Clone, Debug)]
struct PreFilterState {
    constraints: Arc<[Constraint]>,
    /// Per constraint: 1 when the incoming pod matches its selector.
    self_match: Arc<[i64]>,
    /// Per constraint.
    domains: Vec<Domains>,
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> PreFilterResult {
        let constraints = self.defaults.constraints(pod, true);
        if constraints.is_empty() {
            return PreFilterResult::skip();
        }
        // Only nodes with every key count: `require_all`.
        let counts: Vec<Arc<FxHashMap<Sym, i64>>> =
            self.memo.with(pod, &constraints, true, snap, |e| {
                (0..constraints.len())
                    .map(|i| e.totals(i).clone())
                    .collect()
            });
        let self_match: Arc<[i64]> = constraints
            .iter()
            .map(|c| i64::from(c.matches(&pod.labels)))
            .collect();
        state.insert(PreFilterState {
            constraints: constraints.into(),
            self_match,
            domains: counts.into_iter().map(Domains::new).collect(),
        });
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
        update(state, pod, other, node, 1);
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        update(state, pod, other, node, -1);
        Status::success()
    }
}

/// Counts matching pods per eligible domain, for each constraint, walking
/// every node: what the memo's totals must equal.
#[cfg(test)]
pub(super) fn count_domains(
    pod: &PodInfo,
    constraints: &[Constraint],
    snap: &Snapshot,
) -> Vec<FxHashMap<Sym, i64>> {
    let mut counts: Vec<FxHashMap<Sym, i64>> = vec![FxHashMap::default(); constraints.len()];
    let index = super::common::SelectorIndex::new(constraints);
    let checks = InclusionChecks::new(pod, constraints);
    let (mut mask, mut per_selector) = index.scratch();
    for node in snap.nodes() {
        if !has_all_keys(node, constraints) {
            continue;
        }
        let inc = checks.of(pod, node);
        mask.iter_mut().for_each(|m| *m = false);
        for (i, c) in constraints.iter().enumerate() {
            if c.includes(inc) {
                index.need(i, &mut mask);
            }
        }
        index.count(&node.pods, pod.namespace, &mask, &mut per_selector);
        for (i, c) in constraints.iter().enumerate() {
            if !c.includes(inc) {
                continue;
            }
            let Some(v) = node.labels.get(c.key) else {
                continue;
            };
            // The domain is eligible even when it holds no matching pod.
            *counts[i].entry(v).or_insert(0) += index.of(i).map_or(0, |j| per_selector[j]);
        }
    }
    counts
}

/// Applies a what-if placement (`delta` 1) or removal (-1) of `other` on
/// `node` to the counts, with the rules PreFilter counted by, so that the
/// result equals a fresh PreFilter on the changed cluster.
fn update(state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
    let Some(s) = state.get_mut::<PreFilterState>() else {
        // PreFilter skipped this pod: nothing to update.
        return;
    };
    if !countable(other, pod.namespace) || !has_all_keys(node, &s.constraints) {
        return;
    }
    let inc = InclusionChecks::new(pod, &s.constraints).of(pod, node);
    for (i, c) in s.constraints.iter().enumerate() {
        if !c.matches(&other.labels) || !c.includes(inc) {
            continue;
        }
        if let Some(v) = node.labels.get(c.key) {
            s.domains[i].add(v, delta);
        }
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<PreFilterState>() else {
            return Status::error("PodTopologySpread: no PreFilter state for this cycle");
        };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = node.labels.get(c.key) else {
                return Status::unresolvable(ERR_NODE_LABEL_NOT_MATCH);
            };
            let d = &s.domains[i];
            let skew = d.get(v).unwrap_or(0) + s.self_match[i] - d.global_min(c.min_domains);
            if skew > i64::from(c.max_skew) {
                return Status::unschedulable(ERR_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
pub(super) mod inspect {
    //! Test access to the private state.
    use super::*;

    /// Every domain's count of constraint `i`, sorted, as seen by Filter.
    pub fn all(state: &CycleState, i: usize) -> Vec<(String, i64)> {
        let s = state.get::<PreFilterState>().expect("PreFilter state");
        let d = &s.domains[i];
        let mut keys: Vec<Sym> = d.base.counts.keys().copied().collect();
        keys.extend(d.changed.iter().map(|(k, _)| *k));
        keys.sort_unstable_by_key(|k| k.as_str());
        keys.dedup();
        keys.into_iter()
            .map(|k| (k.as_str().to_owned(), d.get(k).unwrap_or(0)))
            .collect()
    }

    /// The global minimum and domain count of constraint `i`.
    pub fn min_and_len(state: &CycleState, i: usize) -> (i64, usize) {
        let s = state.get::<PreFilterState>().expect("PreFilter state");
        let d = &s.domains[i];
        let m = if d.len == 0 { i64::MAX } else { d.min };
        (m, d.len)
    }
}
