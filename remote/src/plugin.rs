//! The remote plugin as the engine sees it: a [`Plugin`] whose points are
//! the ones the handshake declared.
//!
//! Filter is batched: PreFilter asks the plugin about the nodes in one call
//! and keeps the verdicts in the cycle state as a table by node slot; the
//! engine's per-node Filter then reads that table (no call, no lock, no
//! allocation on success). When no node is rejected, PreFilter answers Skip
//! and the per-node Filter does not run at all. Score is the same at
//! PreScore: one call, the scores kept by node slot for the per-node Score.
//!
//! Which nodes are asked: every candidate, for a plugin that is not
//! node-local; for a node-local one, only the nodes whose state moved since
//! the plugin last answered for pods of this template ([`crate::answers`]),
//! and no call at all when there are none. The tables then hold the
//! remembered answers for the other nodes.
//!
//! A node-local plugin that declared `scores_with_filter` is asked in the
//! Filter call for the scores of the nodes it passes too (once the profile
//! ran its PreScore): they go into the template's Score answers, so the
//! PreScore that follows finds every feasible node scored and makes no
//! call. Scores it could not use (missing, ERROR, not covering the nodes)
//! leave those nodes to a Score call, as for a plugin that never offered.
//!
//! In preemption's what-if evaluation the table answers for the node as the
//! plugin judged it, with the victims still on it: a node the plugin
//! rejected (Unschedulable or UnschedulableAndUnresolvable) stays rejected,
//! so preemption never evicts pods for a node the plugin refuses. A pod the
//! plugin rejected as a whole is rejected on every node, and when the
//! plugin was never asked in the cycle (an earlier PreFilter rejected the
//! pod) every node is rejected too, since its answer is not known.

use crate::answers::{Answers, FilterMemo, FilterTable, Judged, ScoreMemo};
use crate::args::FailurePolicy;
use crate::client::{CallError, Conn, Declared, run, size, timed};
use crate::convert::{node_set, pod as pod_msg};
use crate::{Point, pb};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use strata_scheduler::cluster::{EventKind, PodEvent};
use strata_scheduler::framework::{
    BindPlugin, Code, FilterPlugin, PermitPlugin, PermitResult, PostBindPlugin, PreBindPlugin,
    PreFilterPlugin, PreFilterResult, PreScorePlugin, ReservePlugin, ScorePlugin,
};
use strata_scheduler::sdk::{
    ClusterEventKind, CycleState, Handle, NodeId, NodeInfo, NodeRef, Plugin, PodInfo, Snapshot,
    Status,
};

/// The most distinct rejection reasons one Filter answer may carry.
pub(crate) const MAX_REASONS: usize = 1024;

/// One cycle's answers of every remote plugin, by plugin name.
#[derive(Clone, Default)]
struct RemoteCycle {
    filters: Vec<(&'static str, FilterView)>,
    scores: Vec<(&'static str, Arc<Vec<u8>>)>,
}

/// A remote Filter's word on this cycle's pod.
#[derive(Clone)]
enum FilterView {
    /// Verdicts by node slot.
    Table(Arc<FilterTable>),
    /// The pod is rejected as a whole (every node, for what-ifs).
    Whole(Status),
}

/// A remote plugin in a profile.
pub struct RemotePlugin {
    conn: Conn,
    declared: Declared,
    handle: Handle,
    /// Whether the PermitDecisions stream was opened.
    listening: std::sync::atomic::AtomicBool,
    /// A node-local plugin's answers per pod template.
    answers: Mutex<Answers>,
    /// Whether the profile ran this plugin's PreScore (so scores asked for
    /// with Filter are used).
    scoring: std::sync::atomic::AtomicBool,
}

/// What PreFilter learnt.
enum Filtered {
    /// Verdicts for every node, and how many reject.
    Table(Arc<FilterTable>, usize),
    /// The pod is rejected as a whole.
    Whole(Status),
}

fn code(c: i32) -> Result<pb::Code, CallError> {
    pb::Code::try_from(c).map_err(|_| CallError::Invalid(format!("unknown code {c}")))
}

fn engine_code(c: pb::Code) -> Code {
    match c {
        pb::Code::Success => Code::Success,
        pb::Code::Unschedulable => Code::Unschedulable,
        pb::Code::UnschedulableAndUnresolvable => Code::UnschedulableAndUnresolvable,
        pb::Code::Error => Code::Error,
        pb::Code::Skip => Code::Skip,
        // Only Permit may wait; its answer is read before this.
        pb::Code::Wait => Code::Error,
    }
}

impl RemotePlugin {
    pub(crate) fn new(conn: Conn, declared: Declared, handle: Handle) -> RemotePlugin {
        RemotePlugin {
            conn,
            declared,
            handle,
            listening: std::sync::atomic::AtomicBool::new(false),
            answers: Mutex::new(Answers::default()),
            scoring: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether a Filter call asks for the scores of the nodes that pass:
    /// for a node-local plugin that offered it, serves Score, and whose
    /// Score the profile runs (known from its first PreScore).
    fn scores_with_filter(&self) -> bool {
        self.declared.node_local
            && self.declared.scores_with_filter
            && self.serves(Point::Score)
            && self.scoring.load(Relaxed)
    }

    /// Whether answers for `pod` may be kept across cycles.
    fn memo_key(&self, pod: &PodInfo) -> Option<u64> {
        (self.declared.node_local && pod.equivalence != 0).then_some(pod.equivalence)
    }

    fn serves(&self, p: Point) -> bool {
        self.declared.points.contains(&p)
    }

    fn reason(&self, r: &str) -> String {
        if r.is_empty() {
            format!("rejected by {}", self.conn.name)
        } else {
            r.to_owned()
        }
    }

    /// The failure `e` at `point` for `pod`: counted, logged, and for
    /// Ignore an event on the pod naming the plugin. `Some(message)` when
    /// the policy is Fail.
    fn failed(&self, point: Point, pod: &PodInfo, e: &CallError) -> Option<String> {
        let msg = format!(
            "remote plugin {} at {} ({}): {e}",
            self.conn.name,
            self.conn.args.endpoint,
            point.label()
        );
        crate::client::count_error(self.conn.name, point, e);
        tracing::warn!(pod = %pod.key(), plugin = self.conn.name, point = point.label(), error = %e, "remote plugin failed");
        match self.conn.args.failure_policy {
            FailurePolicy::Fail => Some(msg),
            FailurePolicy::Ignore => {
                self.handle.cluster.record_event(PodEvent {
                    namespace: pod.namespace,
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                    kind: EventKind::Warning,
                    reason: "RemotePluginIgnored",
                    message: format!("{msg}; ignored (failurePolicy Ignore)"),
                });
                None
            }
        }
    }

    /// The Filter verdicts on every node of `snap` for `pod`: asked of
    /// the plugin for the nodes without a remembered answer (all of them
    /// unless the plugin is node-local).
    fn filter_answers(&self, pod: &PodInfo, snap: &Snapshot) -> Result<Filtered, CallError> {
        let Some(key) = self.memo_key(pod) else {
            let mut memo = FilterMemo::default();
            return self.fill_filter(&mut memo, None, pod, snap);
        };
        let with_scores = self.scores_with_filter();
        let mut answers = self.answers.lock();
        self.in_one_session(|session| {
            let (memo, scores) = answers.both(session, key);
            let scores = (with_scores && !scores.skip).then_some(scores);
            self.fill_filter(memo, scores, pod, snap)
        })
    }

    /// Runs `call` with the connection's session, again once if the plugin
    /// resynchronised during the call: what it answered before belongs to
    /// its old session, so every node is asked about again.
    fn in_one_session<T>(
        &self,
        mut call: impl FnMut(u64) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        for _ in 0..2 {
            let session = self.conn.session();
            let r = call(session)?;
            if self.conn.session() == session {
                return Ok(r);
            }
        }
        Err(CallError::Protocol(
            "the plugin resynchronised twice in one cycle".into(),
        ))
    }

    /// Asks about `memo`'s stale nodes and records the answer; with
    /// `scores`, asks for the scores of the nodes that pass too, and keeps
    /// them there.
    fn fill_filter(
        &self,
        memo: &mut FilterMemo,
        scores: Option<&mut ScoreMemo>,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> Result<Filtered, CallError> {
        let asked = memo.stale(snap);
        if !asked.ask.is_empty() {
            let (judged, scored) = self.call_filter(pod, snap, &asked.ask, scores.is_some())?;
            if let Judged::Whole(s) = judged {
                return Ok(Filtered::Whole(s));
            }
            memo.commit(snap, &asked, &judged);
            if let (Some(memo), Some(scored)) = (scores, scored) {
                self.keep_filter_scores(memo, snap, &asked.ask, &judged, scored);
            }
        } else {
            memo.commit(snap, &asked, &Judged::Skip);
        }
        Ok(Filtered::Table(memo.table(), memo.rejected()))
    }

    /// Keeps the scores a Filter call gave for the nodes of `ask`
    /// (ascending) that `judged` passed. Scores that are not usable are
    /// dropped: the Score call then asks about those nodes.
    fn keep_filter_scores(
        &self,
        memo: &mut ScoreMemo,
        snap: &Snapshot,
        ask: &[NodeId],
        judged: &Judged,
        scored: pb::FilterScores,
    ) {
        let passed: Vec<NodeId> = match judged {
            Judged::Rejected(list) => {
                let mut rejected: Vec<u32> = list
                    .iter()
                    .flat_map(|(_, ids)| ids.iter().copied())
                    .collect();
                rejected.sort_unstable();
                ask.iter()
                    .copied()
                    .filter(|id| rejected.binary_search(&id.0).is_err())
                    .collect()
            }
            Judged::Skip | Judged::Whole(_) => ask.to_vec(),
        };
        let resp = pb::ScoreResponse {
            resync: false,
            status: scored.status,
            runs: scored.runs,
        };
        match judge_score(resp, passed.len()) {
            Ok(Some(v)) => {
                memo.commit(snap, &passed, &v);
                self.conn
                    .stats
                    .filter_scored_nodes
                    .fetch_add(passed.len() as u64, Relaxed);
            }
            Ok(None) => memo.skip = true,
            Err(e) => {
                tracing::debug!(plugin = self.conn.name, error = %e, "scores given with Filter not used; a Score call asks for them");
            }
        }
    }

    /// One Filter call about `ask` (ascending node ids), with the scores of
    /// the nodes that pass when `with_scores`.
    fn call_filter(
        &self,
        pod: &PodInfo,
        snap: &Snapshot,
        ask: &[NodeId],
        with_scores: bool,
    ) -> Result<(Judged, Option<pb::FilterScores>), CallError> {
        let start = Instant::now();
        let (set, order) = node_set(ask);
        let pod_m = pod_msg(pod);
        let resp = self.conn.cycle_call(snap, |delta, d| {
            let req = pb::FilterRequest {
                delta: Some(delta),
                pod: Some(pod_m.clone()),
                candidates: Some(set.clone()),
                with_scores,
            };
            let n = size(&req);
            self.conn.count_sent(Point::Filter, n);
            self.conn.stats.last_filter_bytes.store(n as u64, Relaxed);
            let resp = self
                .conn
                .blocking(|mut c| async move { timed(d, c.filter(req)).await })?;
            let resync = resp.resync;
            Ok((resp, resync))
        });
        self.conn.observe(Point::Filter, start);
        self.conn
            .stats
            .filter_nodes_asked
            .fetch_add(order.len() as u64, Relaxed);
        let mut resp = resp?;
        let scored = resp.scores.take();
        Ok((judge_filter(self.conn.name, resp, &order)?, scored))
    }

    /// The scores of `feasible` for `pod` by node slot, or `None` when the
    /// plugin has none for this pod (SKIP).
    fn score_answers(
        &self,
        pod: &PodInfo,
        snap: &Snapshot,
        feasible: &[NodeId],
    ) -> Result<Option<Arc<Vec<u8>>>, CallError> {
        let Some(key) = self.memo_key(pod) else {
            let mut memo = ScoreMemo::default();
            return self.fill_score(&mut memo, pod, snap, feasible);
        };
        let mut answers = self.answers.lock();
        self.in_one_session(|session| {
            let memo = answers.score(session, key);
            self.fill_score(memo, pod, snap, feasible)
        })
    }

    fn fill_score(
        &self,
        memo: &mut ScoreMemo,
        pod: &PodInfo,
        snap: &Snapshot,
        feasible: &[NodeId],
    ) -> Result<Option<Arc<Vec<u8>>>, CallError> {
        if memo.skip {
            return Ok(None);
        }
        let ask = memo.stale(snap, feasible);
        if !ask.is_empty() {
            match self.call_score(pod, snap, &ask)? {
                None => {
                    memo.skip = true;
                    return Ok(None);
                }
                Some(scores) => memo.commit(snap, &ask, &scores),
            }
        }
        Ok(Some(memo.table()))
    }

    /// One Score call about `ask` (ascending node ids): the scores in that
    /// order.
    fn call_score(
        &self,
        pod: &PodInfo,
        snap: &Snapshot,
        ask: &[NodeId],
    ) -> Result<Option<Vec<u8>>, CallError> {
        let start = Instant::now();
        let (set, order) = node_set(ask);
        let pod_m = pod_msg(pod);
        let resp = self.conn.cycle_call(snap, |delta, d| {
            let req = pb::ScoreRequest {
                delta: Some(delta),
                pod: Some(pod_m.clone()),
                nodes: Some(set.clone()),
            };
            let n = size(&req);
            self.conn.count_sent(Point::Score, n);
            self.conn.stats.last_score_bytes.store(n as u64, Relaxed);
            let resp = self
                .conn
                .blocking(|mut c| async move { timed(d, c.score(req)).await })?;
            let resync = resp.resync;
            Ok((resp, resync))
        });
        self.conn.observe(Point::Score, start);
        self.conn
            .stats
            .score_nodes_asked
            .fetch_add(order.len() as u64, Relaxed);
        judge_score(resp?, order.len())
    }

    fn on_node(&self, pod: &PodInfo, node: NodeRef) -> pb::PodOnNode {
        pb::PodOnNode {
            pod: Some(pod_msg(pod)),
            node_id: node.id.0,
            node_name: node.name.as_str().to_owned(),
            session: self.conn.session(),
        }
    }

    /// A blocking call at a scheduling-cycle point.
    fn unary(&self, point: Point, req: pb::PodOnNode) -> Result<pb::Result, CallError> {
        self.conn.count_sent(point, size(&req));
        let d = self.conn.args.timeout;
        let start = Instant::now();
        let r = self.conn.blocking(|mut c| async move {
            match point {
                Point::Reserve => timed(d, c.reserve(req)).await,
                Point::Permit => timed(d, c.permit(req)).await,
                _ => Err(CallError::Protocol(format!(
                    "{} is not a unary point",
                    point.label()
                ))),
            }
        });
        self.conn.observe(point, start);
        r
    }

    /// A binding-cycle call (awaited on the engine's runtime).
    async fn binding(&self, point: Point, req: pb::PodOnNode) -> Result<pb::Result, CallError> {
        self.conn.count_sent(point, size(&req));
        let mut c = self.conn.client();
        let d = self.conn.args.timeout;
        let start = Instant::now();
        let r = run(async move {
            match point {
                Point::PreBind => timed(d, c.pre_bind(req)).await,
                Point::Bind => timed(d, c.bind(req)).await,
                _ => Err(CallError::Protocol(format!(
                    "{} is not a binding point",
                    point.label()
                ))),
            }
        })
        .await;
        self.conn.observe(point, start);
        r
    }

    /// A plugin's Result at Reserve, Permit or PreBind as a status, or the
    /// failure policy applied.
    fn judge(&self, point: Point, pod: &PodInfo, r: Result<pb::Result, CallError>) -> Status {
        let r = r.and_then(|r| Ok((code(r.code)?, r.reason)));
        let e = match r {
            Ok((pb::Code::Success | pb::Code::Skip, _)) => return Status::success(),
            Ok((
                c @ (pb::Code::Unschedulable | pb::Code::UnschedulableAndUnresolvable),
                reason,
            )) => {
                return Status::new(engine_code(c), self.reason(&reason));
            }
            Ok((pb::Code::Error, reason)) => CallError::Plugin(reason),
            Ok((pb::Code::Wait, _)) => CallError::Invalid(format!(
                "{} answered CODE_WAIT (only Permit may)",
                point.label()
            )),
            Err(e) => e,
        };
        match self.failed(point, pod, &e) {
            Some(msg) => Status::error(msg),
            None => Status::success(),
        }
    }
}

/// `r`, or the rejection reason every empty one stands for.
fn reason(plugin: &str, r: &str) -> String {
    if r.is_empty() {
        format!("rejected by {plugin}")
    } else {
        r.to_owned()
    }
}

/// Checks a Filter answer against the nodes asked (`order`, ascending)
/// and reads what it says about them. Outside input: anything that does
/// not make sense is an error, never a panic.
fn judge_filter(
    name: &str,
    resp: pb::FilterResponse,
    order: &[NodeId],
) -> Result<Judged, CallError> {
    let status = resp.status.unwrap_or_default();
    match code(status.code)? {
        pb::Code::Success => {}
        pb::Code::Skip => return Ok(Judged::Skip),
        pb::Code::Error => return Err(CallError::Plugin(status.reason)),
        pb::Code::Wait => {
            return Err(CallError::Invalid("Filter answered CODE_WAIT".into()));
        }
        c => {
            return Ok(Judged::Whole(Status::new(
                engine_code(c),
                reason(name, &status.reason),
            )));
        }
    }
    if resp.rejections.len() > MAX_REASONS {
        return Err(CallError::Invalid(format!(
            "{} distinct rejection reasons (at most {MAX_REASONS})",
            resp.rejections.len()
        )));
    }
    let mut out = Vec::with_capacity(resp.rejections.len());
    for r in resp.rejections {
        let c = match code(r.code)? {
            c @ (pb::Code::Unschedulable | pb::Code::UnschedulableAndUnresolvable) => c,
            other => {
                return Err(CallError::Invalid(format!(
                    "a rejection with code {other:?}"
                )));
            }
        };
        if let Some(id) = r
            .node_ids
            .iter()
            .find(|&&id| order.binary_search(&NodeId(id)).is_err())
        {
            return Err(CallError::Invalid(format!(
                "node id {id} was not a candidate"
            )));
        }
        if !r.node_ids.is_empty() {
            out.push((
                Status::new(engine_code(c), reason(name, &r.reason)),
                r.node_ids,
            ));
        }
    }
    Ok(if out.is_empty() {
        Judged::Skip
    } else {
        Judged::Rejected(out)
    })
}

/// Checks a Score answer for `asked` nodes: the scores in the order asked,
/// or `None` for SKIP.
fn judge_score(resp: pb::ScoreResponse, asked: usize) -> Result<Option<Vec<u8>>, CallError> {
    let status = resp.status.unwrap_or_default();
    match code(status.code)? {
        pb::Code::Success => {}
        pb::Code::Skip => return Ok(None),
        pb::Code::Error => return Err(CallError::Plugin(status.reason)),
        c => {
            return Err(CallError::Invalid(format!("Score answered {c:?}")));
        }
    }
    let mut scores = Vec::with_capacity(asked);
    for run in &resp.runs {
        let score = u8::try_from(run.score)
            .ok()
            .filter(|s| i64::from(*s) <= strata_scheduler::framework::MAX_NODE_SCORE)
            .ok_or_else(|| CallError::Invalid(format!("score {} is outside 0..=100", run.score)))?;
        if scores.len().saturating_add(run.count as usize) > asked {
            return Err(CallError::Invalid(format!(
                "scores for more than the {asked} nodes asked"
            )));
        }
        scores.extend(std::iter::repeat_n(score, run.count as usize));
    }
    if scores.len() != asked {
        return Err(CallError::Invalid(format!(
            "scores for {} of the {asked} nodes asked",
            scores.len()
        )));
    }
    Ok(Some(scores))
}

impl Plugin for RemotePlugin {
    fn name(&self) -> &'static str {
        self.conn.name
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        (self.serves(Point::Filter) || self.serves(Point::PreFilter)).then_some(self as _)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        (self.serves(Point::Filter) || self.serves(Point::PreFilter)).then_some(self as _)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        (self.serves(Point::Score) || self.serves(Point::PreScore)).then_some(self as _)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        self.serves(Point::Score).then_some(self as _)
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        self.serves(Point::Reserve).then_some(self as _)
    }
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        self.serves(Point::Permit).then_some(self as _)
    }
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        self.serves(Point::PreBind).then_some(self as _)
    }
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        self.serves(Point::Bind).then_some(self as _)
    }
    fn as_post_bind(&self) -> Option<&dyn PostBindPlugin> {
        self.serves(Point::PostBind).then_some(self as _)
    }
    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        self.declared.events.clone()
    }
}

impl RemotePlugin {
    fn keep_filter(&self, state: &mut CycleState, view: FilterView) {
        let name = self.conn.name;
        match state.get_mut::<RemoteCycle>() {
            Some(c) => {
                c.filters.retain(|(n, _)| *n != name);
                c.filters.push((name, view));
            }
            None => state.insert(RemoteCycle {
                filters: vec![(name, view)],
                scores: Vec::new(),
            }),
        }
    }
}

impl PreFilterPlugin for RemotePlugin {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> PreFilterResult {
        match self.filter_answers(pod, snap) {
            Ok(Filtered::Table(_, 0)) => PreFilterResult::skip(),
            Ok(Filtered::Table(t, _)) => {
                self.keep_filter(state, FilterView::Table(t));
                PreFilterResult::ok()
            }
            Ok(Filtered::Whole(s)) => {
                self.keep_filter(state, FilterView::Whole(s.clone()));
                PreFilterResult::status(s)
            }
            Err(e) => match self.failed(Point::Filter, pod, &e) {
                Some(msg) => PreFilterResult::status(Status::error(msg)),
                None => PreFilterResult::skip(),
            },
        }
    }
}

impl FilterPlugin for RemotePlugin {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let view = state
            .get::<RemoteCycle>()
            .and_then(|c| c.filters.iter().find(|(n, _)| *n == self.conn.name));
        match view {
            Some((_, FilterView::Table(t))) => t
                .get(node.id.index())
                .cloned()
                .unwrap_or_else(Status::success),
            Some((_, FilterView::Whole(s))) => s.clone(),
            // PreFilter did not run in this cycle (an earlier PreFilter
            // rejected the pod): only a what-if gets here, and the plugin's
            // answer is not known.
            None => Status::unschedulable(format!(
                "{} was not asked about this pod in this cycle",
                self.conn.name
            )),
        }
    }

    fn is_node_local(&self) -> bool {
        self.declared.node_local
    }
}

impl PreScorePlugin for RemotePlugin {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        feasible: &[NodeId],
    ) -> Status {
        if !self.serves(Point::Score) {
            return Status::skip();
        }
        self.scoring.store(true, Relaxed);
        match self.score_answers(pod, snap, feasible) {
            Ok(None) => Status::skip(),
            Ok(Some(s)) => {
                let name = self.conn.name;
                match state.get_mut::<RemoteCycle>() {
                    Some(c) => {
                        c.scores.retain(|(n, _)| *n != name);
                        c.scores.push((name, s));
                    }
                    None => state.insert(RemoteCycle {
                        filters: Vec::new(),
                        scores: vec![(name, s)],
                    }),
                }
                Status::success()
            }
            Err(e) => match self.failed(Point::Score, pod, &e) {
                Some(msg) => Status::error(msg),
                None => Status::skip(),
            },
        }
    }
}

impl ScorePlugin for RemotePlugin {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(state
            .get::<RemoteCycle>()
            .and_then(|c| c.scores.iter().find(|(n, _)| *n == self.conn.name))
            .and_then(|(_, s)| s.get(node.id.index()).copied())
            .map_or(0, i64::from))
    }

    fn is_node_local(&self) -> bool {
        self.declared.node_local
    }
}

impl ReservePlugin for RemotePlugin {
    fn reserve(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        node: NodeRef,
        _snap: &Snapshot,
    ) -> Status {
        let r = self.unary(Point::Reserve, self.on_node(pod, node));
        self.judge(Point::Reserve, pod, r)
    }

    fn unreserve(&self, _state: &mut CycleState, pod: &PodInfo, node: NodeRef) {
        let req = self.on_node(pod, node);
        self.conn.count_sent(Point::Reserve, size(&req));
        let d = self.conn.args.timeout;
        let start = Instant::now();
        let r = self
            .conn
            .blocking(|mut c| async move { timed(d, c.unreserve(req)).await.map(|_| ()) });
        self.conn.observe(Point::Reserve, start);
        if let Err(e) = r {
            crate::client::count_error(self.conn.name, Point::Reserve, &e);
            tracing::warn!(pod = %pod.key(), plugin = self.conn.name, error = %e, "remote Unreserve failed");
        }
    }
}

/// The longest a remote Permit may hold a pod (kube-scheduler's cap).
pub const MAX_PERMIT_WAIT: Duration = Duration::from_secs(15 * 60);

impl PermitPlugin for RemotePlugin {
    fn permit(&self, _state: &mut CycleState, pod: &PodInfo, node: NodeRef) -> PermitResult {
        let r = self.unary(Point::Permit, self.on_node(pod, node));
        let r = match r {
            Ok(res) if res.code == pb::Code::Wait as i32 => {
                let wait = Duration::from_millis(res.wait_millis);
                if wait.is_zero() || wait > MAX_PERMIT_WAIT {
                    Err(CallError::Invalid(format!(
                        "Permit answered CODE_WAIT for {} ms (1 to {} allowed)",
                        res.wait_millis,
                        MAX_PERMIT_WAIT.as_millis()
                    )))
                } else {
                    self.listen_for_decisions();
                    return PermitResult::wait(wait);
                }
            }
            other => other,
        };
        let s = self.judge(Point::Permit, pod, r);
        if s.is_success() {
            PermitResult::allow()
        } else {
            PermitResult::reject(s)
        }
    }
}

impl RemotePlugin {
    /// Opens the PermitDecisions stream once (kept open, reopened with a
    /// backoff when it ends) and applies each decision to the waiting pods.
    fn listen_for_decisions(&self) {
        if self
            .listening
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let client = self.conn.client();
        let name = self.conn.name;
        let waiting = self.handle.waiting.clone();
        crate::client::spawn(decisions(client, name, waiting));
    }
}

/// Reads `name`'s PermitDecisions for the life of the process.
async fn decisions(
    mut client: pb::remote_plugin_client::RemotePluginClient<tonic::transport::Channel>,
    name: &'static str,
    waiting: strata_scheduler::framework::WaitingPods,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.permit_decisions(pb::Empty {}).await {
            Ok(resp) => {
                backoff = Duration::from_millis(100);
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(d)) => {
                            if !apply_decision(&waiting, name, &d) {
                                tracing::debug!(plugin = name, pod_uid = %d.pod_uid, "decision for a pod that does not wait on this plugin; ignored");
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(plugin = name, error = %e, "PermitDecisions stream failed; reopening");
                            break;
                        }
                    }
                }
            }
            Err(e) if e.code() == tonic::Code::Unimplemented => {
                tracing::warn!(
                    plugin = name,
                    "the plugin holds pods at Permit but serves no PermitDecisions: held pods wait until their timeout"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(plugin = name, error = %e, "opening PermitDecisions failed; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Applies one decision of plugin `name` (outside input: an unknown or
/// empty UID changes nothing).
fn apply_decision(
    waiting: &strata_scheduler::framework::WaitingPods,
    name: &'static str,
    d: &pb::PermitDecision,
) -> bool {
    if d.pod_uid.is_empty() {
        return false;
    }
    if d.allow {
        waiting.allow(&d.pod_uid, name)
    } else {
        let why = reason(name, &d.reason);
        waiting.reject(&d.pod_uid, name, &why)
    }
}

#[async_trait::async_trait]
impl PreBindPlugin for RemotePlugin {
    async fn pre_bind(&self, _state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
        let r = self.binding(Point::PreBind, self.on_node(pod, node)).await;
        self.judge(Point::PreBind, pod, r)
    }
}

#[async_trait::async_trait]
impl BindPlugin for RemotePlugin {
    async fn bind(&self, _state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
        let r = self.binding(Point::Bind, self.on_node(pod, node)).await;
        let r = r.and_then(|r| Ok((code(r.code)?, r.reason)));
        let e = match r {
            Ok((pb::Code::Success, _)) => return Status::success(),
            Ok((pb::Code::Skip, _)) => return Status::skip(),
            Ok((c, reason)) => CallError::Plugin(format!("{c:?}: {reason}")),
            Err(e) => e,
        };
        match self.failed(Point::Bind, pod, &e) {
            Some(msg) => Status::error(msg),
            // Ignored: the next binder (DefaultBinder) binds.
            None => Status::skip(),
        }
    }
}

impl PostBindPlugin for RemotePlugin {
    fn post_bind(&self, _state: &CycleState, pod: &PodInfo, node: NodeRef) {
        let req = self.on_node(pod, node);
        self.conn.count_sent(Point::PostBind, size(&req));
        let mut c = self.conn.client();
        let d = self.conn.args.timeout;
        let name = self.conn.name;
        // Informational: not waited for.
        crate::client::spawn(async move {
            if let Err(e) = timed(d, c.post_bind(req)).await {
                crate::client::count_error(name, Point::PostBind, &e);
                tracing::debug!(plugin = name, error = %e, "remote PostBind failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rejection() -> impl Strategy<Value = pb::Rejection> {
        (
            -1i32..6,
            "[a-z]{0,3}",
            proptest::collection::vec(0u32..80, 0..10),
        )
            .prop_map(|(code, reason, node_ids)| pb::Rejection {
                code,
                reason,
                node_ids,
            })
    }

    proptest! {
        /// Whatever a plugin answers, judging it never panics, and what it
        /// accepts rejects exactly the nodes asked that the answer names.
        #[test]
        fn any_filter_answer_is_judged_without_panic(
            picks in proptest::collection::btree_set(0u32..64, 0..40),
            status in -1i32..6,
            rejections in proptest::collection::vec(rejection(), 0..5),
        ) {
            let order: Vec<NodeId> = picks.into_iter().map(NodeId).collect();
            let named: std::collections::BTreeSet<u32> =
                rejections.iter().flat_map(|r| r.node_ids.iter().copied()).collect();
            let resp = pb::FilterResponse {
                resync: false,
                status: Some(pb::Result { code: status, ..Default::default() }),
                rejections,
                scores: None,
            };
            match judge_filter("P", resp, &order) {
                Ok(Judged::Rejected(list)) => {
                    let got: std::collections::BTreeSet<u32> =
                        list.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
                    prop_assert_eq!(&got, &named);
                    for (s, _) in &list {
                        prop_assert!(s.is_rejected());
                    }
                    for id in got {
                        prop_assert!(order.contains(&NodeId(id)));
                    }
                }
                Ok(Judged::Skip) => prop_assert!(status == 4 || named.is_empty()),
                Ok(Judged::Whole(s)) => prop_assert!(s.is_rejected()),
                Err(_) => {}
            }
        }

        /// A Score answer is accepted only when its runs cover exactly the
        /// nodes asked with scores in 0..=100.
        #[test]
        fn any_score_answer_is_judged_without_panic(
            asked in 0usize..50,
            runs in proptest::collection::vec((-5i64..110, 0u32..30), 0..6),
        ) {
            let resp = pb::ScoreResponse {
                resync: false,
                status: Some(pb::Result::default()),
                runs: runs.iter().map(|&(score, count)| pb::ScoreRun { score, count }).collect(),
            };
            let covered: u64 = runs.iter().map(|r| u64::from(r.1)).sum();
            let in_range = runs.iter().all(|r| (0..=100).contains(&r.0));
            match judge_score(resp, asked) {
                Ok(Some(v)) => {
                    prop_assert_eq!(v.len(), asked);
                    prop_assert_eq!(covered, asked as u64);
                    prop_assert!(v.iter().all(|s| *s <= 100));
                }
                Ok(None) => prop_assert!(false, "not a SKIP"),
                Err(_) => prop_assert!(covered != asked as u64 || !in_range),
            }
        }
    }

    #[test]
    fn a_node_that_was_not_a_candidate_is_an_error() {
        let resp = pb::FilterResponse {
            resync: false,
            status: Some(pb::Result::default()),
            rejections: vec![pb::Rejection {
                code: pb::Code::Unschedulable as i32,
                reason: String::new(),
                node_ids: vec![5],
            }],
            scores: None,
        };
        let e = judge_filter("P", resp, &[NodeId(1)]).err().unwrap();
        assert_eq!(e.kind(), "invalid_response");
    }
}
