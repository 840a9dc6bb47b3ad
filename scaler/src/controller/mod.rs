//! The group scaler as a controller in the scheduler's process: it sizes
//! opted-in LeaderWorkerSets in whole replicas from request rates and
//! token counts read from a Prometheus-compatible API, and asks the
//! scheduler's own what-if before every scale-up.
//!
//! It runs as a [`LeaderTask`] of the Kubernetes adapter: started on every
//! replica, acting only while this replica holds the Lease (checked before
//! each period and before each write), stopped before the Lease is released.
//! Each period (`scaler.period`, default 60 s) it lists the
//! LeaderWorkerSets that carry [`lws::MODEL_ANNOTATION`] and, for each:
//!
//! 1. reads requests/s, prompt tokens/s and output tokens/s (three instant
//!    queries; any error, or a query with no series unless
//!    `emptyAsZero`, means **no action** and a `ScalerMetricsUnavailable`
//!    Warning event on the LWS saying which query and why);
//! 2. asks the policy ([`crate::policy::GroupPolicyState`]: target load per
//!    group, tide, to and from zero, scale-down window) how many replicas
//!    the load needs;
//! 3. scaling up: asks the engine, on its own thread between cycles
//!    ([`strata_kube::query::EngineHandle`]), how many replicas of this
//!    LWS are placed whole and how many more whole replicas fit — the
//!    PodGroup plugin's planner ([`strata_plugins::pod_group::PodGroupStore::what_if_count`])
//!    plans the replicas already asked for but not yet placed, then the new
//!    ones, each on what the earlier ones left. It raises `spec.replicas`
//!    only by the new replicas that fit whole, and says why it stopped
//!    short (`ScaleUpLimited`);
//! 4. scaling down: lowers `spec.replicas`. LeaderWorkerSet always removes
//!    the highest replica indices, so the controller cannot choose which
//!    replicas go (the domain-freeing choice of
//!    [`crate::scaler::pick_removals`] applies to groups the scaler creates
//!    itself); the `ScaledDown` event names the domains (of the LWS's
//!    exclusive level, else the nodes) the removed replicas held.
//!
//! `spec.replicas` is written through the `scale` subresource (merge
//! patch), or, where the CRD has none, by a merge patch of the object.
//! The time from a scale-up decision to the engine seeing every pod of the
//! new replicas bound is kept in [`ControllerStatus::scale_ups`] (wall
//! clock of this process: scheduler time plus the LWS controller creating
//! the pods).

pub mod config;
pub mod lws;

use crate::model::Load;
use crate::policy::GroupPolicyState;
use crate::prometheus::{PromClient, PromError, Sample};
use config::{Queries, ScalerConfig};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use lws::Lws;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_kube::leader::{LeaderContext, LeaderTask};
use strata_plugins::pod_group::PodGroupStore;

/// Every API call the controller makes (besides the adapter's own,
/// [`strata_kube::API_CALLS`]): `manifests/scaler/rbac.yaml` grants these
/// and nothing more (tested).
pub const API_CALLS: &[strata_kube::ApiCall] = &[
    strata_kube::ApiCall {
        verb: "list",
        group: "leaderworkerset.x-k8s.io",
        resource: "leaderworkersets",
        scope: strata_kube::Scope::Cluster,
    },
    strata_kube::ApiCall {
        verb: "patch",
        group: "leaderworkerset.x-k8s.io",
        resource: "leaderworkersets/scale",
        scope: strata_kube::Scope::Cluster,
    },
    strata_kube::ApiCall {
        verb: "patch",
        group: "leaderworkerset.x-k8s.io",
        resource: "leaderworkersets",
        scope: strata_kube::Scope::Cluster,
    },
    strata_kube::ApiCall {
        verb: "create",
        group: "events.k8s.io",
        resource: "events",
        scope: strata_kube::Scope::Cluster,
    },
];

/// How often pending scale-ups are checked for their replicas bound.
const BOUND_POLL: Duration = Duration::from_millis(50);
/// How long a scale-up is watched for its replicas bound.
const BOUND_WATCH: Duration = Duration::from_secs(600);
/// The same event is not repeated for an object within this time.
const EVENT_REPEAT: Duration = Duration::from_secs(600);

/// One decision, as last taken for a service.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Replicas the policy wanted.
    pub desired: u32,
    /// `spec.replicas` before.
    pub before: u32,
    /// `spec.replicas` after (the same when nothing was written).
    pub after: u32,
    /// Replicas placed whole when the engine was asked (scale-up only).
    pub placed: Option<u32>,
    /// Why it stopped short of `desired`, or took no action.
    pub note: Option<String>,
}

/// What the controller has done, for tests and tools.
#[derive(Clone, Debug, Default)]
pub struct ControllerStatus {
    /// Periods run while leading.
    pub periods: u64,
    /// The last decision per `namespace/name`.
    pub last: BTreeMap<String, Decision>,
    /// Completed scale-ups: service, replicas added, time from the
    /// decision to every pod of them bound in the engine's cache.
    pub scale_ups: Vec<(String, u32, Duration)>,
    /// Events written (reason, `namespace/name`, message).
    pub events: Vec<(String, String, String)>,
}

/// Per-service memory.
struct ServiceState {
    model: String,
    policy: GroupPolicyState,
    last_event: Option<(String, String, Instant)>,
}

/// A scale-up waiting for its replicas to be bound.
struct PendingUp {
    key: String,
    namespace: String,
    name: String,
    size: u32,
    from: u32,
    to: u32,
    at: Instant,
}

/// The controller.
pub struct ScalerController {
    cfg: ScalerConfig,
    prom: PromClient,
    store: PodGroupStore,
    instance: String,
    status: Arc<Mutex<ControllerStatus>>,
}

/// Why the controller could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The Prometheus client could not be made.
    #[error(transparent)]
    Prometheus(#[from] PromError),
}

impl ScalerController {
    /// A controller with configuration `cfg`, asking the what-if of the
    /// PodGroup plugin built with `store`; `instance` names this replica in
    /// events.
    pub fn new(
        cfg: ScalerConfig,
        store: PodGroupStore,
        instance: &str,
    ) -> Result<ScalerController, ControllerError> {
        let prom = PromClient::new(&cfg.prometheus_url, cfg.timeout)?;
        Ok(ScalerController {
            cfg,
            prom,
            store,
            instance: instance.to_owned(),
            status: Arc::new(Mutex::new(ControllerStatus::default())),
        })
    }

    /// What it has done so far (shared; read it any time).
    pub fn status(&self) -> Arc<Mutex<ControllerStatus>> {
        self.status.clone()
    }

    fn record(&self, f: impl FnOnce(&mut ControllerStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    async fn run_loop(self: Arc<Self>, mut ctx: LeaderContext) {
        let all: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &lws::api_resource());
        let mut states: BTreeMap<String, ServiceState> = BTreeMap::new();
        let mut pending: Vec<PendingUp> = Vec::new();
        let mut tick = tokio::time::interval(self.cfg.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut missing_api_logged = false;
        loop {
            let poll = !pending.is_empty();
            let periodic = tokio::select! {
                _ = tick.tick() => true,
                _ = tokio::time::sleep(BOUND_POLL), if poll => false,
                // The adapter gone (sender dropped): stop too.
                r = ctx.stop.changed() => {
                    if r.is_err() {
                        return;
                    }
                    false
                }
            };
            if *ctx.stop.borrow() {
                return;
            }
            if !pending.is_empty() {
                self.check_bound(&ctx, &mut pending).await;
            }
            if !(periodic && ctx.gate.is_leader() && ctx.gate.is_ready()) {
                continue;
            }
            self.record(|s| s.periods += 1);
            ctx.limiter.acquire().await;
            let list = match all.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    if !missing_api_logged {
                        tracing::info!(
                            "group scaler: leaderworkersets.leaderworkerset.x-k8s.io is not served; nothing to scale"
                        );
                        missing_api_logged = true;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "group scaler: listing LeaderWorkerSets failed");
                    continue;
                }
            };
            let minute = jiff::Timestamp::now().as_second().max(0) as u64 / 60;
            let mut seen = Vec::new();
            for o in &list.items {
                if *ctx.stop.borrow() || !ctx.gate.is_leader() {
                    break;
                }
                let key = format!(
                    "{}/{}",
                    o.metadata.namespace.as_deref().unwrap_or(""),
                    o.metadata.name.as_deref().unwrap_or("")
                );
                match Lws::from_object(o) {
                    Ok(None) => {}
                    Ok(Some(l)) => {
                        seen.push(key);
                        if let Some(p) = self.reconcile(&ctx, &mut states, &l, minute).await {
                            pending.retain(|x| x.key != p.key);
                            pending.push(p);
                        }
                    }
                    Err(e) => {
                        seen.push(key.clone());
                        let st = states.entry(key).or_insert_with(|| self.fresh(""));
                        self.event(
                            &ctx,
                            st,
                            o,
                            "Warning",
                            "ScalerConfigInvalid",
                            &e.to_string(),
                        )
                        .await;
                    }
                }
            }
            states.retain(|k, _| seen.contains(k));
        }
    }

    fn fresh(&self, model: &str) -> ServiceState {
        ServiceState {
            model: model.to_owned(),
            policy: GroupPolicyState::new(self.cfg.policy),
            last_event: None,
        }
    }

    fn queries(&self, l: &Lws) -> Queries {
        let mut q = self.cfg.queries.clone();
        for (ann, slot) in [
            (lws::QUERY_REQUESTS_ANNOTATION, &mut q.requests),
            (lws::QUERY_PROMPT_ANNOTATION, &mut q.prompt_tokens),
            (lws::QUERY_OUTPUT_ANNOTATION, &mut q.output_tokens),
        ] {
            if let Some(v) = l.annotations.get(ann).filter(|v| !v.trim().is_empty()) {
                *slot = v.clone();
            }
        }
        q.for_object(&l.namespace, &l.name)
    }

    /// The load, or why there is none to act on.
    pub async fn load(&self, q: &Queries) -> Result<Load, String> {
        let (r, p, o) = futures::join!(
            self.prom.query(&q.requests),
            self.prom.query(&q.prompt_tokens),
            self.prom.query(&q.output_tokens)
        );
        let mut v = [0.0; 3];
        for (i, (what, query, got)) in [
            ("requests", &q.requests, r),
            ("promptTokens", &q.prompt_tokens, p),
            ("outputTokens", &q.output_tokens, o),
        ]
        .into_iter()
        .enumerate()
        {
            v[i] = match got {
                Ok(Sample::Value(x)) => x,
                Ok(Sample::Empty) if self.cfg.empty_as_zero => 0.0,
                Ok(Sample::Empty) => {
                    return Err(format!(
                        "query {what} ({query}) returned no series (set scaler.emptyAsZero to read that as no load)"
                    ));
                }
                Err(e) => return Err(format!("query {what} ({query}): {e}")),
            };
        }
        Ok(Load {
            requests_per_s: v[0],
            prompt_tokens_per_s: v[1],
            output_tokens_per_s: v[2],
        })
    }

    async fn reconcile(
        &self,
        ctx: &LeaderContext,
        states: &mut BTreeMap<String, ServiceState>,
        l: &Lws,
        minute: u64,
    ) -> Option<PendingUp> {
        let key = l.key();
        let obj = reference(l);
        let st = states
            .entry(key.clone())
            .or_insert_with(|| self.fresh(&l.model));
        if st.model != l.model {
            *st = self.fresh(&l.model);
        }
        let Some(model) = self.cfg.models.get(&l.model) else {
            let msg = format!(
                "{}: names capacity model {:?}, which scaler.models does not define (known: {})",
                lws::MODEL_ANNOTATION,
                l.model,
                self.cfg
                    .models
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.event_ref(ctx, st, &obj, "Warning", "ScalerConfigInvalid", &msg)
                .await;
            return None;
        };
        let svc = model.service(&key, l.min, l.max);
        if let Err(e) = svc.validate() {
            self.event_ref(
                ctx,
                st,
                &obj,
                "Warning",
                "ScalerConfigInvalid",
                &e.to_string(),
            )
            .await;
            return None;
        }
        let load = match self.load(&self.queries(l)).await {
            Ok(x) => x,
            Err(why) => {
                let msg = format!("no scaling action: {why}");
                self.record(|s| {
                    s.last.insert(
                        key.clone(),
                        Decision {
                            desired: l.replicas,
                            before: l.replicas,
                            after: l.replicas,
                            placed: None,
                            note: Some(msg.clone()),
                        },
                    );
                });
                self.event_ref(ctx, st, &obj, "Warning", "ScalerMetricsUnavailable", &msg)
                    .await;
                return None;
            }
        };
        let want = st.policy.desired(&svc, minute, &load);
        let desired = want.groups;
        let current = l.replicas;
        let mut decision = Decision {
            desired,
            before: current,
            after: current,
            placed: None,
            note: None,
        };
        let mut pend = None;
        if desired > current {
            match self.room(ctx, l, desired - current).await {
                Ok((placed, extra, refusal)) => {
                    decision.placed = Some(placed);
                    let target = current + extra;
                    if target > current && ctx.gate.is_leader() {
                        match self.set_replicas(ctx, l, target).await {
                            Ok(()) => {
                                decision.after = target;
                                let msg = format!(
                                    "replicas {current} -> {target} ({:?}: {desired} wanted for {:.1} req/s, {:.0} prompt and {:.0} output tokens/s)",
                                    want.reason,
                                    load.requests_per_s,
                                    load.prompt_tokens_per_s,
                                    load.output_tokens_per_s
                                );
                                self.event_ref(ctx, st, &obj, "Normal", "ScaledUp", &msg)
                                    .await;
                                pend = Some(PendingUp {
                                    key: key.clone(),
                                    namespace: l.namespace.clone(),
                                    name: l.name.clone(),
                                    size: l.size,
                                    from: current,
                                    to: target,
                                    at: Instant::now(),
                                });
                            }
                            Err(e) => {
                                decision.note = Some(format!("writing spec.replicas: {e}"));
                                tracing::warn!(lws = %key, error = %e, "group scaler: writing spec.replicas failed");
                            }
                        }
                    }
                    if target < desired {
                        let msg = format!(
                            "{desired} replicas wanted, {target} requested: {} placed whole, {} more fit whole now; {}",
                            placed,
                            target - current,
                            refusal.as_deref().unwrap_or("no room")
                        );
                        decision.note = Some(msg.clone());
                        self.event_ref(ctx, st, &obj, "Warning", "ScaleUpLimited", &msg)
                            .await;
                    }
                }
                Err(why) => {
                    decision.note = Some(why.clone());
                    self.event_ref(ctx, st, &obj, "Warning", "ScaleUpRefused", &why)
                        .await;
                }
            }
        } else if desired < current && ctx.gate.is_leader() {
            let freed = self.held_by(ctx, l, desired).await;
            match self.set_replicas(ctx, l, desired).await {
                Ok(()) => {
                    decision.after = desired;
                    let msg = format!(
                        "replicas {current} -> {desired} ({:?}; LeaderWorkerSet removes the highest indices, {desired} to {}, which held {})",
                        want.reason,
                        current - 1,
                        if freed.is_empty() {
                            "no bound pod".to_owned()
                        } else {
                            freed.join(", ")
                        }
                    );
                    self.event_ref(ctx, st, &obj, "Normal", "ScaledDown", &msg)
                        .await;
                }
                Err(e) => {
                    decision.note = Some(format!("writing spec.replicas: {e}"));
                    tracing::warn!(lws = %key, error = %e, "group scaler: writing spec.replicas failed");
                }
            }
        }
        tracing::debug!(lws = %key, ?decision, "group scaler decision");
        self.record(|s| {
            s.last.insert(key, decision);
        });
        pend
    }

    /// Replicas placed whole, new replicas that fit whole (at most
    /// `extra`), and why no more fit.
    async fn room(
        &self,
        ctx: &LeaderContext,
        l: &Lws,
        extra: u32,
    ) -> Result<(u32, u32, Option<String>), String> {
        let q = l
            .what_if_group()
            .map_err(|e| format!("the replica's pods: {e}"))?;
        let store = self.store.clone();
        let (ns, name, size, current) = (l.namespace.clone(), l.name.clone(), l.size, l.replicas);
        ctx.engine
            .ask(move |s| {
                let snap = s.snapshot();
                let per = lws::placed_replicas(snap.assigned_pods().map(|p| &*p.pod), &ns, &name);
                let placed = per
                    .iter()
                    .filter(|(i, n)| **i < current && **n >= size)
                    .count() as u32;
                // Replicas asked for and not yet placed are planned first.
                let waiting = current.saturating_sub(placed);
                let c = store.what_if_count(snap, &q, waiting + extra)?;
                Ok((placed, c.fits.saturating_sub(waiting), c.refusal))
            })
            .await
            .map_err(|e| e.to_string())?
    }

    /// Where the replicas from index `from` up are bound: the domains of
    /// the LWS's exclusive level (`level=value`), or node names without
    /// one.
    async fn held_by(&self, ctx: &LeaderContext, l: &Lws, from: u32) -> Vec<String> {
        let (ns, name) = (l.namespace.clone(), l.name.clone());
        let level = l
            .annotations
            .get(strata_plugins::pod_group::lws::EXCLUSIVE_ANNOTATION)
            .cloned();
        ctx.engine
            .ask(move |s| {
                let snap = s.snapshot();
                let mut out = std::collections::BTreeSet::new();
                for p in snap.assigned_pods() {
                    let mine = lws::placed_replicas(std::iter::once(&*p.pod), &ns, &name);
                    if mine.keys().all(|i| *i < from) {
                        continue;
                    }
                    let node = snap.node(p.node);
                    out.insert(match &level {
                        Some(k) => format!("{k}={}", node.labels.get_str(k).unwrap_or("?")),
                        None => node.name.to_string(),
                    });
                }
                out.into_iter().collect()
            })
            .await
            .unwrap_or_default()
    }

    async fn set_replicas(&self, ctx: &LeaderContext, l: &Lws, n: u32) -> Result<(), kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &l.namespace, &lws::api_resource());
        let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": n}}));
        let pp = PatchParams::default();
        ctx.limiter.acquire().await;
        // Leadership may have lapsed while waiting on the limiter.
        if !ctx.gate.is_leader() {
            return Err(kube::Error::Service(
                "not the leader any more: spec.replicas left as it was".into(),
            ));
        }
        match api.patch_scale(&l.name, &pp, &patch).await {
            Ok(_) => Ok(()),
            // No scale subresource on this CRD (kube-apiserver answers
            // 404; some servers 405): the object itself.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {
                ctx.limiter.acquire().await;
                api.patch(&l.name, &pp, &patch).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Completes scale-ups whose replicas are all bound.
    async fn check_bound(&self, ctx: &LeaderContext, pending: &mut Vec<PendingUp>) {
        let asks: Vec<(String, String, u32, u32, u32)> = pending
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone(), p.size, p.from, p.to))
            .collect();
        let done = ctx
            .engine
            .ask(move |s| {
                let snap = s.snapshot();
                asks.iter()
                    .map(|(ns, name, size, _from, to)| {
                        let per = lws::placed_replicas(
                            snap.assigned_pods().filter(|p| !p.assumed).map(|p| &*p.pod),
                            ns,
                            name,
                        );
                        (0..*to).all(|i| per.get(&i).copied().unwrap_or(0) >= *size)
                    })
                    .collect::<Vec<bool>>()
            })
            .await;
        let Ok(done) = done else { return };
        let mut i = 0;
        pending.retain(|p| {
            let d = done.get(i).copied().unwrap_or(false);
            i += 1;
            if d {
                let took = p.at.elapsed();
                tracing::info!(lws = %p.key, replicas = p.to, ms = took.as_millis() as u64, "group scaler: scale-up bound whole");
                self.record(|s| s.scale_ups.push((p.key.clone(), p.to - p.from, took)));
                false
            } else {
                p.at.elapsed() < BOUND_WATCH
            }
        });
    }

    async fn event(
        &self,
        ctx: &LeaderContext,
        st: &mut ServiceState,
        o: &DynamicObject,
        kind: &str,
        reason: &str,
        msg: &str,
    ) {
        let r = ObjectReference {
            api_version: Some("leaderworkerset.x-k8s.io/v1".into()),
            kind: Some("LeaderWorkerSet".into()),
            name: o.metadata.name.clone(),
            namespace: o.metadata.namespace.clone(),
            uid: o.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        self.event_ref(ctx, st, &r, kind, reason, msg).await;
    }

    async fn event_ref(
        &self,
        ctx: &LeaderContext,
        st: &mut ServiceState,
        r: &ObjectReference,
        kind: &str,
        reason: &str,
        msg: &str,
    ) {
        if let Some((lr, lm, at)) = &st.last_event
            && lr == reason
            && lm == msg
            && at.elapsed() < EVENT_REPEAT
        {
            return;
        }
        if !ctx.gate.is_leader() {
            return;
        }
        st.last_event = Some((reason.to_owned(), msg.to_owned(), Instant::now()));
        let ns = r.namespace.clone().unwrap_or_default();
        let key = format!("{ns}/{}", r.name.as_deref().unwrap_or(""));
        self.record(|s| {
            s.events
                .push((reason.to_owned(), key.clone(), msg.to_owned()))
        });
        if kind == "Warning" {
            tracing::warn!(lws = %key, reason, "{msg}");
        } else {
            tracing::info!(lws = %key, reason, "{msg}");
        }
        let now = jiff::Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    r.name.as_deref().unwrap_or("lws"),
                    now.as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Scale".into()),
            reason: Some(reason.to_owned()),
            note: Some(msg.chars().take(1000).collect()),
            type_: Some(kind.to_owned()),
            regarding: Some(r.clone()),
            reporting_controller: Some("strata.io/group-scaler".into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        ctx.limiter.acquire().await;
        if !ctx.gate.is_leader() {
            return;
        }
        let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::warn!(lws = %key, error = %e, "group scaler: writing an event failed");
        }
    }
}

fn reference(l: &Lws) -> ObjectReference {
    ObjectReference {
        api_version: Some("leaderworkerset.x-k8s.io/v1".into()),
        kind: Some("LeaderWorkerSet".into()),
        name: Some(l.name.clone()),
        namespace: Some(l.namespace.clone()),
        uid: Some(l.uid.clone()),
        ..ObjectReference::default()
    }
}

impl LeaderTask for ScalerController {
    fn run(self: Arc<Self>, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(self.run_loop(ctx))
    }
}
