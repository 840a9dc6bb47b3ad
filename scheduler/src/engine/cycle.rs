//! The scheduling cycle: PreFilter → Filter → (PostFilter) → PreScore →
//! Score → NormalizeScore → select → assume → Reserve → Permit, then the
//! hand-off to the binding cycle. When the pod's equivalence class may use
//! the per-class caches, filtering (and for an all-node-local pod, scoring
//! too) goes through [`fast_path`](super::fast_path) instead of the scan.

use super::Scheduler;
use super::binding::{BindingJob, spawn_binding};
use super::fast_path::{Fast, cached_scores, refresh_scores};
use super::parallel::{PARALLEL_THRESHOLD, Side};
use super::profile::{Evaluator, Profile};
use crate::cluster::{EventKind, PodCondition, PodEvent};
use crate::framework::{
    Code, CycleState, Diagnosis, FilterPlugin, NodeRef, NodeScore, PostFilterContext, Status,
};
use crate::intern::Sym;
use crate::model::{NodeId, NodeInfo, PodInfo};
use crate::queue::QueuedPod;
use rayon::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one scheduling cycle decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CycleResult {
    /// Assumed on a node; the binding cycle is running.
    Scheduled {
        /// The node.
        node: Sym,
    },
    /// Assumed on a node and held at Permit.
    WaitingOnPermit {
        /// The node.
        node: Sym,
    },
    /// No node fits; the message is what the pod's condition says.
    Unschedulable {
        /// kube-scheduler-style aggregated message.
        message: String,
    },
    /// An internal error (retried with backoff).
    Failed {
        /// The error.
        message: String,
    },
}

/// One cycle's pod, result and duration.
#[derive(Clone, Debug)]
pub struct CycleOutcome {
    /// The pod.
    pub pod: Arc<PodInfo>,
    /// What happened.
    pub result: CycleResult,
    /// Wall time of the scheduling cycle (not the binding).
    pub duration: Duration,
    /// Wall time of its extension points.
    pub phases: PhaseTimes,
}

/// Wall time of the extension points of one scheduling cycle (zero for
/// those not run), for metrics. Measured once per phase, never per node.
/// When the equivalence fast path places a pod, filtering and scoring run
/// together and are reported as `filter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// PreFilter.
    pub pre_filter: Duration,
    /// Filter over the candidate nodes.
    pub filter: Duration,
    /// PostFilter (preemption), when nothing fit.
    pub post_filter: Duration,
    /// PreScore, Score and NormalizeScore.
    pub score: Duration,
    /// Reserve.
    pub reserve: Duration,
    /// Permit.
    pub permit: Duration,
    /// From the start of the cycle to the choice of a node (or to the
    /// finding that none fits): kube-scheduler's scheduling algorithm.
    pub algorithm: Duration,
}

/// What filtering found: the feasible nodes, why the others failed, and
/// (with the equivalence cache) the class's node-local filter mask.
pub(super) struct FilterOutcome {
    pub feasible: Vec<NodeId>,
    pub diagnosis: Diagnosis,
    /// With the equivalence cache: the class's node-local filter key.
    pub class_mask: Option<super::equiv::ClassKey>,
}

fn active_filters<'a>(
    profile: &'a Profile,
    state: &CycleState,
) -> Vec<(&'static str, &'a dyn FilterPlugin)> {
    profile
        .filter
        .iter()
        .filter(|p| !state.skips_filter(p.name()))
        .filter_map(|p| p.as_filter().map(|f| (p.name(), f)))
        .collect()
}

/// Runs `filters` on `node` in order; the first failure, named.
#[inline]
pub(super) fn filter_node(
    filters: &[(&'static str, &dyn FilterPlugin)],
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Status {
    for (name, f) in filters {
        let s = f.filter(state, pod, node);
        if !s.is_success() {
            return s.with_plugin(name);
        }
    }
    Status::success()
}

impl Scheduler {
    /// Runs one scheduling cycle for the next pod in the active queue.
    /// Returns `None` when no pod is ready.
    pub fn schedule_one(&mut self) -> Option<CycleOutcome> {
        self.process_completions();
        self.tick();
        self.notify_observers();
        loop {
            let qp = self.queue.pop()?;
            // A pod the cache already holds (bound by someone, or assumed)
            // must never be scheduled again.
            if self.cache.snapshot().assigned_pod(&qp.pod.uid).is_some() {
                self.queue.done(&qp.pod.uid);
                continue;
            }
            let Some(&pi) = self.by_name.get(&qp.pod.scheduler_name) else {
                self.queue.done(&qp.pod.uid);
                continue;
            };
            let start = Instant::now();
            let span = tracing::debug_span!("schedule", pod = %qp.pod.key(), attempt = qp.attempts);
            let _g = span.enter();
            let result = self.scheduling_cycle(pi, &qp);
            let duration = start.elapsed();
            return Some(CycleOutcome {
                pod: qp.pod,
                result,
                duration,
                phases: std::mem::take(&mut self.phases),
            });
        }
    }

    fn scheduling_cycle(&mut self, pi: usize, qp: &QueuedPod) -> CycleResult {
        let cycle_start = Instant::now();
        self.phases = PhaseTimes::default();
        let pod = qp.pod.clone();
        let mut state = CycleState::new();
        let profile = &self.profiles[pi];
        let snap = self.cache.snapshot();

        // PreFilter.
        let mut candidates: Option<Vec<NodeId>> = None;
        let mut diagnosis = Diagnosis::default();
        for p in &profile.pre_filter {
            let Some(pf) = p.as_pre_filter() else {
                continue;
            };
            let r = pf.pre_filter(&mut state, &pod, snap);
            match r.status.code() {
                Code::Success => {}
                Code::Skip => {
                    state.set_skip_filter(p.name());
                    continue;
                }
                Code::Error => {
                    let msg = format!(
                        "running PreFilter plugin {}: {}",
                        p.name(),
                        r.status.message()
                    );
                    return self.fail_error(pi, qp, msg);
                }
                _ => {
                    diagnosis.add_plugin(p.name());
                    diagnosis.pre_filter = Some(r.status.with_plugin(p.name()));
                    break;
                }
            }
            if let Some(mut nodes) = r.nodes {
                nodes.sort_unstable();
                nodes.dedup();
                candidates = Some(match candidates {
                    None => nodes,
                    Some(prev) => prev
                        .into_iter()
                        .filter(|n| nodes.binary_search(n).is_ok())
                        .collect(),
                });
            }
        }

        self.phases.pre_filter = cycle_start.elapsed();
        if let Some(a) = state.get_mut::<crate::framework::PodsToActivate>() {
            let uids = std::mem::take(&mut a.0);
            self.queue.activate_pods(&uids);
        }

        // Extenders the pod goes to: such a pod takes no fast path (an
        // extender's answer is not cached).
        let extenders = self.interested_extenders(&pod);
        let filter_start = Instant::now();
        if diagnosis.pre_filter.is_none()
            && candidates.is_none()
            && extenders.is_empty()
            && self.cache_usable(pi, &pod)
        {
            let fast = self.fast_path(pi, &mut state, &pod);
            self.phases.filter = filter_start.elapsed();
            self.phases.algorithm = cycle_start.elapsed();
            match fast {
                Fast::Chosen(node) => {
                    self.equiv.fast_cycle_done();
                    return self.assume_and_reserve(pi, qp, state, node);
                }
                Fast::Error(msg) => return self.fail_error(pi, qp, msg),
                Fast::Fallback => {}
            }
        }

        let mut class_mask = None;
        let feasible = if diagnosis.pre_filter.is_some() {
            Vec::new()
        } else {
            let out = if self.cache_usable(pi, &pod) {
                self.find_feasible_cached(pi, &state, &pod, candidates.as_deref())
            } else {
                self.find_feasible(pi, &state, &pod, candidates.as_deref())
            };
            class_mask = out.class_mask;
            diagnosis.node_statuses = out.diagnosis.node_statuses;
            for p in out.diagnosis.plugins {
                diagnosis.add_plugin(p);
            }
            if let Some(nodes) = &candidates
                && out.feasible.is_empty()
                && nodes.is_empty()
                && diagnosis.node_statuses.is_empty()
            {
                diagnosis.pre_filter = Some(Status::unresolvable(
                    "no node is a candidate after PreFilter",
                ));
            }
            out.feasible
        };
        // Extenders filter what the plugins kept, once per cycle.
        let feasible = if extenders.is_empty() || feasible.is_empty() {
            feasible
        } else {
            match self.extender_filter(&extenders, &pod, feasible, &mut diagnosis) {
                Ok(f) => f,
                Err(msg) => return self.fail_error(pi, qp, msg),
            }
        };

        self.phases.filter = filter_start.elapsed();
        if feasible.is_empty() {
            self.phases.algorithm = cycle_start.elapsed();
            let post_start = Instant::now();
            let r = self.handle_unschedulable(pi, qp, state, diagnosis);
            self.phases.post_filter = post_start.elapsed();
            return r;
        }

        let score_start = Instant::now();
        let chosen = if feasible.len() == 1 {
            feasible[0]
        } else {
            let extra = self.extender_scores(&extenders, &pod, &feasible);
            match self.prioritize(pi, &mut state, &pod, &feasible, class_mask, &extra) {
                Ok(n) => n,
                Err(msg) => return self.fail_error(pi, qp, msg),
            }
        };
        self.phases.score = score_start.elapsed();
        self.phases.algorithm = cycle_start.elapsed();
        self.assume_and_reserve(pi, qp, state, chosen)
    }

    fn find_feasible(
        &self,
        pi: usize,
        state: &CycleState,
        pod: &PodInfo,
        candidates: Option<&[NodeId]>,
    ) -> FilterOutcome {
        let profile = &self.profiles[pi];
        let snap = self.cache.snapshot();
        let all = candidates.unwrap_or_else(|| snap.node_ids());
        let filters = active_filters(profile, state);
        let evaluator = Evaluator {
            filters: &profile.filter,
            pre_filters: &profile.pre_filter,
        };
        let nominated_map = &self.nominated;
        let nominated_here = |id: NodeId| {
            nominated_map
                .values()
                .filter(move |(p, n)| *n == id && p.priority >= pod.priority && p.uid != pod.uid)
                .map(|(p, _)| p.clone())
        };
        let has_nominated = nominated_map
            .values()
            .any(|(p, _)| p.priority >= pod.priority && p.uid != pod.uid);
        let eval = |id: &NodeId| -> Result<NodeId, (NodeId, Status)> {
            let node = snap.node(*id);
            if !node.present {
                return Err((*id, Status::unresolvable("node(s) were not found")));
            }
            if has_nominated {
                let noms: Vec<Arc<PodInfo>> = nominated_here(*id).collect();
                if !noms.is_empty() {
                    let mut n2 = node.clone();
                    let mut st2 = state.clone();
                    for p in &noms {
                        n2.add_pod(p.clone());
                        let s = crate::framework::FilterEvaluator::add_pod(
                            &evaluator, &mut st2, pod, p, &n2,
                        );
                        if !s.is_success() {
                            return Err((*id, s));
                        }
                    }
                    let s =
                        crate::framework::FilterEvaluator::run_filters(&evaluator, &st2, pod, &n2);
                    if !s.is_success() {
                        return Err((*id, s));
                    }
                }
            }
            let s = filter_node(&filters, state, pod, node);
            if s.is_success() {
                Ok(*id)
            } else {
                Err((*id, s))
            }
        };
        let pct = profile.percentage_of_nodes_to_score;
        let mut feasible = Vec::new();
        let mut diagnosis = Diagnosis::default();
        let take = |r: Result<NodeId, (NodeId, Status)>,
                    feasible: &mut Vec<NodeId>,
                    d: &mut Diagnosis| match r {
            Ok(id) => feasible.push(id),
            Err((id, s)) => {
                if let Some(p) = s.plugin() {
                    d.add_plugin(p);
                }
                d.node_statuses.push((id, s));
            }
        };
        if pct < 100 {
            let want = (all.len() * pct as usize / 100).max(100.min(all.len()));
            for id in all {
                take(eval(id), &mut feasible, &mut diagnosis);
                if feasible.len() >= want {
                    break;
                }
            }
        } else if let (Some(pool), Side::Pool) = (&self.pool, self.filter_side(all.len())) {
            let start = Instant::now();
            let chunk = (all.len() / (pool.current_num_threads() * 4)).max(64);
            let parts: Vec<Vec<Result<NodeId, (NodeId, Status)>>> = pool.install(|| {
                all.par_chunks(chunk)
                    .map(|c| c.iter().map(eval).collect())
                    .collect()
            });
            for part in parts {
                for r in part {
                    take(r, &mut feasible, &mut diagnosis);
                }
            }
            self.filter_gate
                .record(Side::Pool, all.len(), start.elapsed());
        } else {
            let start = Instant::now();
            for id in all {
                take(eval(id), &mut feasible, &mut diagnosis);
            }
            if self.pool.is_some() && all.len() >= PARALLEL_THRESHOLD {
                self.filter_gate
                    .record(Side::Caller, all.len(), start.elapsed());
            }
        }
        FilterOutcome {
            feasible,
            diagnosis,
            class_mask: None,
        }
    }

    fn prioritize(
        &mut self,
        pi: usize,
        state: &mut CycleState,
        pod: &PodInfo,
        feasible: &[NodeId],
        class_mask: Option<super::equiv::ClassKey>,
        extra: &[i64],
    ) -> Result<NodeId, String> {
        self.run_pre_score(pi, state, pod, feasible)?;
        self.score_and_pick(pi, state, pod, feasible, class_mask, extra)
    }

    pub(super) fn run_pre_score(
        &self,
        pi: usize,
        state: &mut CycleState,
        pod: &PodInfo,
        feasible: &[NodeId],
    ) -> Result<(), String> {
        let snap = self.cache.snapshot();
        for p in &self.profiles[pi].pre_score {
            let Some(ps) = p.as_pre_score() else { continue };
            let s = ps.pre_score(state, pod, snap, feasible);
            match s.code() {
                Code::Success => {}
                Code::Skip => state.set_skip_score(p.name()),
                _ => {
                    return Err(format!(
                        "running PreScore plugin {}: {}",
                        p.name(),
                        s.message()
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn score_and_pick(
        &mut self,
        pi: usize,
        state: &CycleState,
        pod: &PodInfo,
        feasible: &[NodeId],
        class_mask: Option<super::equiv::ClassKey>,
        extra: &[i64],
    ) -> Result<NodeId, String> {
        let profile = &self.profiles[pi];
        let snap = self.cache.snapshot();
        let st: &CycleState = state;
        let mut totals = vec![0i64; feasible.len()];
        // Node-local scores of an equivalence class come from its cache.
        let mut cached_mask = 0u64;
        if let Some(fmask) = class_mask {
            let (cached, mask, key_sig, _) = cached_scores(profile, st);
            cached_mask = mask;
            if cached_mask != 0 {
                let gens = snap.generations();
                let normalizing = cached
                    .iter()
                    .filter(|(_, sp, _)| sp.has_normalize())
                    .count();
                let cc = self.equiv.class_of(pi, pod, fmask, snap.node_capacity());
                cc.set_score_mask(
                    cached_mask,
                    key_sig,
                    normalizing,
                    snap.node_capacity(),
                    super::fast_path::scores_shareable(&cached),
                );
                let stale: Vec<NodeId> = {
                    let sg = &cc.score_gen[..];
                    feasible
                        .iter()
                        .copied()
                        .filter(|id| sg[id.index()] != gens[id.index()])
                        .collect()
                };
                for id in stale {
                    refresh_scores(cc, id, gens[id.index()], snap, &cached, st, pod)?;
                }
                let pt = &cc.plain_total[..];
                for (t, id) in totals.iter_mut().zip(feasible) {
                    *t = pt[id.index()];
                }
                let mut k = 0;
                let mut scores: Vec<NodeScore> = Vec::new();
                for (name, sp, w) in &cached {
                    if !sp.has_normalize() {
                        continue;
                    }
                    let raw = &cc.raw[k];
                    k += 1;
                    let first = raw[feasible[0].index()];
                    // Equal raw scores normalize to equal scores: no effect
                    // on the choice, so skip the pass.
                    if feasible.iter().all(|id| raw[id.index()] == first) {
                        continue;
                    }
                    scores.clear();
                    scores.extend(feasible.iter().map(|id| NodeScore {
                        node: *id,
                        score: raw[id.index()],
                    }));
                    let s = sp.normalize(st, pod, &mut scores);
                    if !s.is_success() {
                        return Err(format!(
                            "running NormalizeScore of plugin {name}: {}",
                            s.message()
                        ));
                    }
                    for (t, s) in totals.iter_mut().zip(scores.iter()) {
                        *t += s.score * w;
                    }
                }
            }
        }
        let mut scores: Vec<NodeScore> = Vec::with_capacity(feasible.len());
        for (i, (p, weight)) in profile.score.iter().enumerate() {
            if cached_mask & (1 << i) != 0 || st.skips_score(p.name()) {
                continue;
            }
            let Some(sp) = p.as_score() else { continue };
            scores.clear();
            let one = |id: &NodeId| -> Result<NodeScore, Status> {
                sp.score(st, pod, snap.node(*id))
                    .map(|score| NodeScore { node: *id, score })
            };
            let start = Instant::now();
            if let (Some(pool), Side::Pool) = (&self.pool, self.score_side(feasible.len())) {
                let r: Result<Vec<NodeScore>, Status> =
                    pool.install(|| feasible.par_iter().map(one).collect());
                scores =
                    r.map_err(|s| format!("running Score plugin {}: {}", p.name(), s.message()))?;
                self.score_gate
                    .record(Side::Pool, feasible.len(), start.elapsed());
            } else {
                for id in feasible {
                    scores.push(one(id).map_err(|s| {
                        format!("running Score plugin {}: {}", p.name(), s.message())
                    })?);
                }
                if self.pool.is_some() && feasible.len() >= PARALLEL_THRESHOLD {
                    self.score_gate
                        .record(Side::Caller, feasible.len(), start.elapsed());
                }
            }
            if sp.has_normalize() {
                let s = sp.normalize(st, pod, &mut scores);
                if !s.is_success() {
                    return Err(format!(
                        "running NormalizeScore of plugin {}: {}",
                        p.name(),
                        s.message()
                    ));
                }
            }
            for (t, s) in totals.iter_mut().zip(scores.iter()) {
                *t += s.score * weight;
            }
        }
        // Extenders' scores (empty without a prioritizing extender).
        for (t, x) in totals.iter_mut().zip(extra) {
            *t = t.saturating_add(*x);
        }
        // Highest total wins; ties are broken uniformly at random with the
        // seeded generator, as kube-scheduler does: count the ties, draw one.
        let max = totals.iter().copied().max().unwrap_or(0);
        let ties = totals.iter().filter(|t| **t == max).count() as u64;
        let pick = if ties > 1 { self.rng.below(ties) } else { 0 };
        let best = totals
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == max)
            .nth(pick as usize)
            .map(|(i, _)| i)
            .unwrap_or(0);
        Ok(feasible[best])
    }

    fn assume_and_reserve(
        &mut self,
        pi: usize,
        qp: &QueuedPod,
        mut state: CycleState,
        chosen: NodeId,
    ) -> CycleResult {
        let pod = qp.pod.clone();
        let node = NodeRef {
            id: chosen,
            name: self.cache.snapshot().node(chosen).name,
        };
        if let Err(e) = self.cache.assume(pod.clone(), chosen) {
            return self.fail_error(pi, qp, format!("assuming pod: {e}"));
        }
        self.notify_observers();
        self.clear_nomination(&pod.uid);
        // Reserve.
        let reserve_start = Instant::now();
        let profile = &self.profiles[pi];
        for p in &profile.reserve {
            let Some(r) = p.as_reserve() else { continue };
            let s = r.reserve(&mut state, &pod, node, self.cache.snapshot());
            if !s.is_success() {
                profile.unreserve(&mut state, &pod, node);
                let _ = self.cache.forget(&pod.uid);
                let msg = format!("running Reserve plugin {}: {}", p.name(), s.message());
                let name = p.name();
                self.notify_observers();
                return if s.is_rejected() {
                    self.fail_unschedulable(pi, qp, vec![name], msg)
                } else {
                    self.fail_error(pi, qp, msg)
                };
            }
        }
        // Permit.
        self.phases.reserve = reserve_start.elapsed();
        let permit_start = Instant::now();
        let mut waits: Vec<&'static str> = Vec::new();
        let mut timeout = Duration::MAX;
        for p in &profile.permit {
            let Some(pm) = p.as_permit() else { continue };
            let r = pm.permit(&mut state, &pod, node);
            match r.status.code() {
                Code::Success => {}
                Code::Wait => {
                    waits.push(p.name());
                    timeout = timeout.min(r.timeout);
                }
                _ => {
                    profile.unreserve(&mut state, &pod, node);
                    let _ = self.cache.forget(&pod.uid);
                    let msg = format!("rejected at Permit by {}: {}", p.name(), r.status.message());
                    let name = p.name();
                    self.notify_observers();
                    return if r.status.is_rejected() {
                        self.fail_unschedulable(pi, qp, vec![name], msg)
                    } else {
                        self.fail_error(pi, qp, msg)
                    };
                }
            }
        }
        self.phases.permit = permit_start.elapsed();
        let waiting = if waits.is_empty() {
            None
        } else {
            let deadline = self.clock.now().saturating_add(timeout);
            self.permit_deadlines
                .push(std::cmp::Reverse((deadline, pod.uid.clone())));
            Some(
                self.waiting
                    .add(pod.uid.clone(), pod.key(), node.name, waits),
            )
        };
        let is_waiting = waiting.is_some();
        self.counters.scheduled += 1;
        self.in_flight += 1;
        spawn_binding(
            &self.rt,
            BindingJob {
                profile: pi,
                plugins: self.profiles[pi].binding.clone(),
                pod,
                node,
                state,
                waiting,
                slots: self.bind_slots.clone(),
                done: self.done_tx.clone(),
                binder: self
                    .extenders
                    .iter()
                    .find(|e| e.is_binder() && e.is_interested(&qp.pod))
                    .cloned(),
            },
        );
        if is_waiting {
            CycleResult::WaitingOnPermit { node: node.name }
        } else {
            CycleResult::Scheduled { node: node.name }
        }
    }

    fn handle_unschedulable(
        &mut self,
        pi: usize,
        qp: &QueuedPod,
        mut state: CycleState,
        diagnosis: Diagnosis,
    ) -> CycleResult {
        let pod = qp.pod.clone();
        let total = self.cache.snapshot().num_nodes();
        let mut message = diagnosis.message(total);
        let resolvable = diagnosis
            .pre_filter
            .as_ref()
            .is_none_or(|s| s.code() != Code::UnschedulableAndUnresolvable);
        let mut nominated: Option<String> = None;
        if resolvable && !self.profiles[pi].post_filter.is_empty() {
            let nominated_list: Vec<(Arc<PodInfo>, NodeId)> =
                self.nominated.values().cloned().collect();
            let profile = &self.profiles[pi];
            let evaluator = Evaluator {
                filters: &profile.filter,
                pre_filters: &profile.pre_filter,
            };
            let preemption_extenders = self.preemption_call(&pod);
            let ctx = PostFilterContext {
                snapshot: self.cache.snapshot(),
                diagnosis: &diagnosis,
                evaluator: &evaluator,
                nominated: &nominated_list,
                extenders: &preemption_extenders,
            };
            let mut outcome = None;
            for p in &profile.post_filter {
                let Some(pf) = p.as_post_filter() else {
                    continue;
                };
                let r = pf.post_filter(&mut state, &pod, &ctx);
                if r.status.is_success() {
                    outcome = Some(r);
                    break;
                }
                if r.status.code() == Code::Error {
                    tracing::warn!(pod = %pod.key(), plugin = p.name(), error = %r.status.message(), "PostFilter failed");
                } else if !r.status.reasons().is_empty() {
                    message = format!("{message} {}: {}", "preemption", r.status.message());
                }
            }
            if let Some(r) = outcome {
                self.counters.preemptions += 1;
                for v in &r.victims {
                    self.counters.victims += 1;
                    self.cluster.record_event(PodEvent {
                        namespace: v.namespace,
                        name: v.name.clone(),
                        uid: v.uid.clone(),
                        kind: EventKind::Normal,
                        reason: "Preempted",
                        message: format!("Preempted by pod {}", pod.key()),
                    });
                    let cluster = self.cluster.clone();
                    let victim = v.clone();
                    let reason = format!("preempted by {}", pod.key());
                    self.rt.spawn(async move {
                        if let Err(e) = cluster.delete_pod(&victim, &reason).await {
                            tracing::warn!(pod = %victim.key(), error = %e, "deleting preemption victim failed");
                        }
                    });
                }
                for c in &r.clear_nominations {
                    self.clear_nomination(&c.uid);
                    self.publish_condition(
                        c.clone(),
                        PodCondition {
                            scheduled: false,
                            reason: "Unschedulable".into(),
                            message: "nomination cleared by a higher-priority preemptor".into(),
                            nominated_node: Some(String::new()),
                        },
                    );
                }
                if let Some(n) = r.nominated_node {
                    self.nominated.insert(pod.uid.clone(), (pod.clone(), n.id));
                    nominated = Some(n.name.to_string());
                }
            } else if self.nominated.remove(&pod.uid).is_some() {
                // Preemption found no node: an old nomination is stale.
                nominated = Some(String::new());
            }
        }
        self.counters.unschedulable += 1;
        let plugins: Vec<&'static str> = diagnosis.plugins.iter().copied().collect();
        self.report_failure(&pod, &message, nominated);
        self.queue
            .requeue_unschedulable(&pod.uid, &plugins, message.clone());
        CycleResult::Unschedulable { message }
    }

    fn report_failure(&self, pod: &Arc<PodInfo>, message: &str, nominated: Option<String>) {
        self.cluster.record_event(PodEvent {
            namespace: pod.namespace,
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            kind: EventKind::Warning,
            reason: "FailedScheduling",
            message: message.to_owned(),
        });
        self.publish_condition(
            pod.clone(),
            PodCondition {
                scheduled: false,
                reason: "Unschedulable".into(),
                message: message.to_owned(),
                nominated_node: nominated,
            },
        );
    }

    fn fail_unschedulable(
        &mut self,
        _pi: usize,
        qp: &QueuedPod,
        plugins: Vec<&'static str>,
        message: String,
    ) -> CycleResult {
        self.counters.unschedulable += 1;
        self.report_failure(&qp.pod, &message, None);
        self.queue
            .requeue_unschedulable(&qp.pod.uid, &plugins, message.clone());
        CycleResult::Unschedulable { message }
    }

    pub(crate) fn fail_error(
        &mut self,
        _pi: usize,
        qp: &QueuedPod,
        message: String,
    ) -> CycleResult {
        self.counters.errors += 1;
        tracing::warn!(pod = %qp.pod.key(), error = %message, "scheduling attempt failed");
        self.cluster.record_event(PodEvent {
            namespace: qp.pod.namespace,
            name: qp.pod.name.clone(),
            uid: qp.pod.uid.clone(),
            kind: EventKind::Warning,
            reason: "FailedScheduling",
            message: message.clone(),
        });
        self.publish_condition(
            qp.pod.clone(),
            PodCondition {
                scheduled: false,
                reason: "SchedulerError".into(),
                message: message.clone(),
                nominated_node: None,
            },
        );
        self.queue.requeue_backoff(&qp.pod.uid, message.clone());
        CycleResult::Failed { message }
    }
}
