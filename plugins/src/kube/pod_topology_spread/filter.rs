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
//! Everything but the node's domain is fixed for the cycle, so PreFilter
//! folds it into one limit per constraint (`maxSkew - self + global_min`)
//! and Filter reads the node's dense domain id and that domain's count
//! (`domains.rs`): two array reads and a comparison per constraint.
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
#[cfg(test)]
use strata_scheduler::sdk::Sym;
use strata_scheduler::sdk::{
    CycleState, DomainVerdict, FilterPlugin, PreFilterPlugin, PreFilterResult, Snapshot, Status,
};
use strata_scheduler::sdk::{NodeInfo, PodInfo};

use super::PodTopologySpread;
use super::common::{Constraint, InclusionChecks, countable, has_all_keys};
use crate::common::topology_domains::{KeyView, NONE, NodeSlots};

/// Filter's reason when the skew would exceed `maxSkew`.
pub const ERR_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// Filter's reason when the node lacks a constraint's topology key.
pub const ERR_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// Counts per domain id as PreFilter found them, shared by every clone (and
/// with the memo until its next change).
#[derive(Debug)]
struct BaseCounts {
    /// Matching pods per domain id (0 where no node counts).
    sums: Arc<Vec<i64>>,
    /// Nodes counting toward each domain id: a domain is eligible while
    /// positive.
    holders: Arc<Vec<u32>>,
    min: i64,
    /// Distinct counts ascending with how many domains hold each; built on
    /// the first what-if update only.
    histogram: OnceLock<Vec<(i64, u32)>>,
}

impl BaseCounts {
    fn new(sums: Arc<Vec<i64>>, holders: Arc<Vec<u32>>) -> BaseCounts {
        let mut b = BaseCounts {
            sums,
            holders,
            min: i64::MAX,
            histogram: OnceLock::new(),
        };
        b.min = b.eligible().min().unwrap_or(i64::MAX);
        b
    }

    /// The counts of the eligible domains.
    fn eligible(&self) -> impl Iterator<Item = i64> + '_ {
        self.holders
            .iter()
            .enumerate()
            .filter(|(_, h)| **h > 0)
            .map(|(d, _)| self.sums.get(d).copied().unwrap_or(0))
    }

    /// The count of domain `d`, `None` when it is not eligible.
    #[inline]
    fn get(&self, d: u32) -> Option<i64> {
        let d = d as usize;
        match self.holders.get(d) {
            Some(h) if *h > 0 => Some(self.sums.get(d).copied().unwrap_or(0)),
            _ => None,
        }
    }

    /// One past the largest domain id either array covers.
    fn len(&self) -> usize {
        self.sums.len().max(self.holders.len())
    }

    fn histogram(&self) -> &[(i64, u32)] {
        self.histogram.get_or_init(|| {
            let mut h: FxHashMap<i64, u32> = FxHashMap::default();
            for c in self.eligible() {
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
    /// Node slot -> domain id ([`NONE`]: the node lacks the key).
    of_node: Arc<Vec<u32>>,
    base: Arc<BaseCounts>,
    /// Domains changed by what-if updates, with their current counts.
    changed: SmallVec<[(u32, i64); 2]>,
    /// Number of eligible domains.
    len: usize,
    /// One past the largest domain id of the key.
    ids: usize,
    /// Smallest count over all domains (`i64::MAX` when there are none).
    min: i64,
    /// The largest count a node's domain may hold for the node to pass:
    /// `maxSkew - self + global_min`, so the skew check is one comparison
    /// per node (the verdict is per domain, decided once per cycle).
    limit: i64,
    /// Domain id -> value, for the tests' inspection.
    #[cfg(test)]
    values: Vec<Sym>,
}

impl Domains {
    fn new(view: &KeyView, base: BaseCounts, eligible: usize, c: &Constraint, me: i64) -> Domains {
        let mut d = Domains {
            of_node: view.of_node.clone(),
            len: eligible,
            ids: view.len.max(base.len()),
            min: base.min,
            base: Arc::new(base),
            changed: SmallVec::new(),
            limit: 0,
            #[cfg(test)]
            values: view.values.clone(),
        };
        d.set_limit(c, me);
        d
    }

    fn set_limit(&mut self, c: &Constraint, me: i64) {
        self.limit = i64::from(c.max_skew) - me + self.global_min(c.min_domains);
    }

    /// The domain of node slot `slot` ([`NONE`] without the key).
    #[inline]
    fn of(&self, slot: usize) -> u32 {
        self.of_node.get(slot).copied().unwrap_or(NONE)
    }

    /// The count of domain `d`, `None` when it is not an eligible domain.
    #[inline]
    fn get(&self, d: u32) -> Option<i64> {
        if !self.changed.is_empty()
            && let Some((_, c)) = self.changed.iter().find(|(k, _)| *k == d)
        {
            return Some(*c);
        }
        self.base.get(d)
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

    /// Adds `delta` to domain `d`, making it eligible if it was not.
    fn add(&mut self, d: u32, delta: i64) {
        let old = self.get(d);
        let new = old.unwrap_or(0) + delta;
        if old.is_none() {
            self.len += 1;
        }
        match self.changed.iter_mut().find(|(k, _)| *k == d) {
            Some(e) => e.1 = new,
            None => self.changed.push((d, new)),
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
                .filter(|(k, _)| self.base.get(*k) == Some(count))
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
    /// Where the snapshot's nodes are, to find a node's slot without
    /// reading it.
    slots: NodeSlots,
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
        let self_match: Arc<[i64]> = constraints
            .iter()
            .map(|c| i64::from(c.matches(&pod.labels)))
            .collect();
        // Only nodes with every key count: `require_all`.
        let domains: Vec<Domains> = self.memo.with(pod, &constraints, true, snap, |e, views| {
            constraints
                .iter()
                .zip(views)
                .enumerate()
                .map(|(i, (c, v))| {
                    let base = BaseCounts::new(e.sums(i).clone(), e.holders(i).clone());
                    Domains::new(v, base, e.eligible(i), c, self_match[i])
                })
                .collect()
        });
        state.insert(PreFilterState {
            constraints: constraints.into(),
            self_match,
            domains,
            slots: NodeSlots::of(snap),
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
        // `node` is a node of the snapshot PreFilter indexed, so it has a
        // domain exactly when it has the key.
        let d = s.domains[i].of(node.id.index());
        if d != NONE {
            s.domains[i].add(d, delta);
            let me = s.self_match[i];
            s.domains[i].set_limit(c, me);
        }
    }
}

impl FilterPlugin for PodTopologySpread {
    /// One layer per hard constraint: a domain passes when its count is
    /// within the constraint's limit, exactly as [`FilterPlugin::filter`]
    /// decides for the domain's nodes.
    fn domain_verdicts(&self, state: &CycleState) -> Option<Vec<DomainVerdict>> {
        let s = state.get::<PreFilterState>()?;
        Some(
            s.domains
                .iter()
                .map(|d| DomainVerdict {
                    of_node: d.of_node.clone(),
                    pass: (0..d.ids as u32)
                        .map(|v| d.get(v).unwrap_or(0) <= d.limit)
                        .collect(),
                    // A node lacking the key is unresolvable.
                    absent: false,
                })
                .collect(),
        )
    }

    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<PreFilterState>() else {
            return Status::error("PodTopologySpread: no PreFilter state for this cycle");
        };
        let slot = s.slots.id(node);
        for d in &s.domains {
            let v = d.of(slot);
            if v == NONE {
                return Status::unresolvable(ERR_NODE_LABEL_NOT_MATCH);
            }
            // count + self - global_min > maxSkew, i.e. count > limit.
            let count = if d.changed.is_empty() {
                d.base.get(v)
            } else {
                d.get(v)
            };
            if count.unwrap_or(0) > d.limit {
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
        let mut ids: Vec<u32> = (0..d.base.len() as u32)
            .filter(|k| d.base.get(*k).is_some())
            .collect();
        ids.extend(d.changed.iter().map(|(k, _)| *k));
        let name = |k: u32| d.values.get(k as usize).map_or("", |v| v.as_str());
        ids.sort_unstable_by_key(|k| name(*k));
        ids.dedup();
        ids.into_iter()
            .map(|k| (name(k).to_owned(), d.get(k).unwrap_or(0)))
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
