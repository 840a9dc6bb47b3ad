//! PreScore, Score and NormalizeScore: the soft (`ScheduleAnyway`)
//! constraints, scored the way kube-scheduler does.
//!
//! PreScore, once per cycle:
//! - takes the pod's soft constraints (or the soft defaults);
//! - marks feasible nodes that lack a topology key as *ignored* (score 0),
//!   except with the System defaults, where a node without a zone label is
//!   still scored on hostname spreading;
//! - the domains of a constraint are the values its key takes on the
//!   feasible, non-ignored nodes (a missing key counts as the empty value,
//!   as in kube-scheduler); its weight is `ln(number of domains + 2)`, and for
//!   `kubernetes.io/hostname` `ln(feasible non-ignored nodes + 2)`;
//! - counts, over all nodes that pass the inclusion policies, the matching
//!   pods of each of those domains; for `kubernetes.io/hostname` it counts
//!   the matching pods on each feasible node itself. Both come from the
//!   memo (`memo.rs`), which re-counts only nodes changed since.
//!
//! Score (no allocation) sums, over the constraints whose key the node has,
//! `count(node's domain) * weight + (maxSkew - 1)`, rounded; the node's
//! domain is its dense id (`domains.rs`) and its count an array read.
//!
//! Score gives an ignored node -1 (kube-scheduler's raw score is 0; only the
//! normalized score counts), so NormalizeScore depends on the raw scores
//! alone and the engine's fast path may normalize one score per distinct
//! value (`domain_scores`). NormalizeScore turns "fewer matching pods" into
//! "higher score":
//! with `min`/`max` the smallest and largest raw scores of non-ignored nodes,
//! each node gets `100 * (max + min - s) / max` (integer division), every
//! node gets 100 when `max` is 0, and ignored nodes get 0. This is
//! kube-scheduler's formula (`pkg/scheduler/framework/plugins/
//! podtopologyspread/scoring.go`), which the docs describe only in words.

use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::sdk::{
    CycleState, DomainScores, MAX_NODE_SCORE, NodeId, NodeInfo, NodeScore, PodInfo, PreScorePlugin,
    ScoreLayer, ScorePlugin, Snapshot, Status,
};

use super::PodTopologySpread;
use crate::common::topology_domains::{EMPTY, NONE, NodeSlots};

/// The raw score of an ignored node (a scored node's is never negative), so
/// that normalization can tell them apart by score alone.
const IGNORED: i64 = -1;

/// Matching pods per domain of one soft constraint.
#[derive(Debug)]
enum Counts {
    /// By domain id (the memo's sums; an absent domain counts as 0). Every node
    /// Score sees is feasible and not ignored, so its domain is one PreScore
    /// found among those nodes.
    ByDomain(Arc<Vec<i64>>),
    /// `kubernetes.io/hostname`: by node, indexed by `NodeId`.
    ByNode(Vec<i64>),
}

#[derive(Debug)]
struct ScoreConstraint {
    /// Node slot -> domain id ([`NONE`]: the node lacks the key).
    of_node: Arc<Vec<u32>>,
    /// `maxSkew - 1`.
    skew_bonus: f64,
    /// `ln(domains + 2)`.
    weight: f64,
    counts: Counts,
}

#[derive(Debug)]
struct ScoreData {
    constraints: Vec<ScoreConstraint>,
    /// Feasible nodes not scored, by `NodeId` index (empty when none).
    ignored: Vec<bool>,
    /// Where the snapshot's nodes are, to find a node's slot without
    /// reading it.
    slots: NodeSlots,
    /// What the scores depend on besides the constraints' weights, bonuses
    /// and per-domain counts: whether a node missing a key is ignored and,
    /// when a constraint counts by node (not in a layer), the pod's
    /// equivalence class, as those counts are the class's own.
    salt: u64,
}

/// What PreScore leaves for Score and NormalizeScore. Read-only, so clones
/// share it.
#[derive(Clone, Debug)]
struct PreScoreState(Arc<ScoreData>);

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        feasible: &[NodeId],
    ) -> Status {
        if snap.num_nodes() == 0 || feasible.is_empty() {
            return Status::skip();
        }
        let constraints = self.defaults.constraints(pod, false);
        if constraints.is_empty() {
            return Status::skip();
        }
        // Nodes must carry every key unless the System defaults apply, so
        // nodes without a zone label still get hostname spreading.
        let require_all = !pod.spec.spread_constraints.is_empty() || !self.defaults.system;
        let by_host: SmallVec<[bool; 4]> =
            constraints.iter().map(|c| c.key == self.hostname).collect();

        let any_host = by_host.iter().any(|h| *h);

        // The memo's totals are over every node passing the inclusion
        // policies (and carrying every key when `require_all`): domain counts
        // for keys other than hostname, and each scored node's own pods for
        // hostname.
        let (constraints, ignored) =
            self.memo
                .with(pod, &constraints, require_all, snap, |e, views| {
                    let mut ignored = Vec::new();
                    let mut n_ignored = 0usize;
                    // Feasible nodes that are scored, when a constraint is by hostname.
                    let mut scored: Vec<NodeId> = Vec::new();
                    // Per constraint not by hostname: the domains of the scored nodes.
                    let mut seen: Vec<Vec<bool>> = views
                        .iter()
                        .zip(&by_host)
                        .map(|(v, h)| if *h { Vec::new() } else { vec![false; v.len] })
                        .collect();
                    let mut distinct = vec![0usize; views.len()];
                    // When every node has every key and no constraint is by
                    // hostname, no feasible node is ignored and only the
                    // number of distinct domains matters: stop once every
                    // domain some node holds was seen (a few nodes, not
                    // every feasible one).
                    let every_key = views.iter().all(|v| v.with_key == snap.num_nodes());
                    let shortcut = every_key && !any_host;
                    let all_seen =
                        |distinct: &[usize]| views.iter().zip(distinct).all(|(v, d)| *d >= v.held);
                    for &id in feasible {
                        if shortcut && all_seen(&distinct) {
                            break;
                        }
                        if require_all && views.iter().any(|v| v.of(id) == NONE) {
                            if ignored.is_empty() {
                                ignored = vec![false; snap.node_capacity()];
                            }
                            if let Some(slot) = ignored.get_mut(id.index()) {
                                *slot = true;
                            }
                            n_ignored += 1;
                            continue;
                        }
                        if any_host {
                            scored.push(id);
                        }
                        for (i, v) in views.iter().enumerate() {
                            if by_host[i] {
                                continue;
                            }
                            // A missing key counts as the empty value.
                            let d = match v.of(id) {
                                NONE => EMPTY,
                                d => d,
                            };
                            if let Some(s) = seen[i].get_mut(d as usize)
                                && !*s
                            {
                                *s = true;
                                distinct[i] += 1;
                            }
                        }
                    }
                    #[cfg(debug_assertions)]
                    if shortcut {
                        debug_assert_eq!(n_ignored, 0);
                        for (i, v) in views.iter().enumerate() {
                            let mut all: Vec<u32> = feasible.iter().map(|id| v.of(*id)).collect();
                            all.sort_unstable();
                            all.dedup();
                            debug_assert!(!all.contains(&NONE));
                            debug_assert_eq!(distinct[i], all.len(), "distinct domains");
                        }
                    }
                    let scored_nodes = feasible.len() - n_ignored;
                    let constraints: Vec<ScoreConstraint> = constraints
                        .iter()
                        .zip(views)
                        .enumerate()
                        .map(|(i, (c, v))| {
                            let (size, counts) = if by_host[i] {
                                let mut counts = vec![0; snap.node_capacity()];
                                for &id in &scored {
                                    if let Some(n) = counts.get_mut(id.index()) {
                                        *n = e.on_node(id, i);
                                    }
                                }
                                (scored_nodes, Counts::ByNode(counts))
                            } else {
                                (distinct[i], Counts::ByDomain(e.sums(i).clone()))
                            };
                            ScoreConstraint {
                                of_node: v.of_node.clone(),
                                skew_bonus: f64::from(c.max_skew - 1),
                                weight: ((size + 2) as f64).ln(),
                                counts,
                            }
                        })
                        .collect();
                    (constraints, ignored)
                });
        let by_node = constraints
            .iter()
            .any(|c| matches!(c.counts, Counts::ByNode(_)));
        let salt = u64::from(require_all) ^ if by_node { pod.equivalence } else { 0 };
        state.insert(PreScoreState(Arc::new(ScoreData {
            constraints,
            ignored,
            slots: NodeSlots::of(snap),
            salt,
        })));
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(PreScoreState(s)) = state.get::<PreScoreState>() else {
            return Err(Status::error(
                "PodTopologySpread: no PreScore state for this cycle",
            ));
        };
        let slot = s.slots.id(node);
        if s.ignored.get(slot).copied().unwrap_or(false) {
            return Ok(IGNORED);
        }
        let mut score = 0.0f64;
        for c in &s.constraints {
            let d = c.of_node.get(slot).copied().unwrap_or(NONE);
            if d == NONE {
                continue;
            }
            let count = match &c.counts {
                Counts::ByDomain(t) => t.get(d as usize).copied().unwrap_or(0).max(0),
                Counts::ByNode(n) => n.get(slot).copied().unwrap_or(0),
            };
            score += count as f64 * c.weight + c.skew_bonus;
        }
        Ok(score.round() as i64)
    }

    fn has_normalize(&self) -> bool {
        true
    }

    /// One layer per constraint counted by domain (its matching pods per
    /// domain); a hostname constraint reads the node's own pods. The
    /// weights and bonuses are the salt. Normalization reads the raw
    /// scores only ([`IGNORED`] marks ignored nodes).
    fn domain_scores(&self, state: &CycleState) -> Option<DomainScores> {
        let PreScoreState(s) = state.get::<PreScoreState>()?;
        let mut salt = (s.constraints.len() as u64).wrapping_add(s.salt.rotate_left(29));
        let mut layers = Vec::new();
        for c in &s.constraints {
            let by_domain = match &c.counts {
                Counts::ByDomain(t) => {
                    layers.push(ScoreLayer {
                        of_node: c.of_node.clone(),
                        values: t.clone(),
                    });
                    1
                }
                Counts::ByNode(_) => 2,
            };
            for x in [c.weight.to_bits(), c.skew_bonus.to_bits(), by_domain] {
                salt = (salt.rotate_left(13) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
        }
        Some(DomainScores { salt, layers })
    }

    fn normalize(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        if state.get::<PreScoreState>().is_none() {
            return Status::error("PodTopologySpread: no PreScore state for this cycle");
        }
        let ignored = |ns: &NodeScore| ns.score == IGNORED;
        let mut min = i64::MAX;
        let mut max = 0i64;
        for ns in scores.iter().filter(|ns| !ignored(ns)) {
            min = min.min(ns.score);
            max = max.max(ns.score);
        }
        for ns in scores.iter_mut() {
            ns.score = if ignored(ns) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - ns.score) / max
            };
        }
        Status::success()
    }
}
