//! PodGroups from the cluster into the PodGroup plugin's store: Strata's
//! `strata.io/v1alpha1` and the coscheduling `scheduling.x-k8s.io/v1alpha1`
//! API, so existing coscheduling manifests work with only `schedulerName`
//! changed.
//!
//! A cluster may have neither CRD installed; an API that is not served is
//! skipped (groups then come from pod annotations only) instead of holding
//! `/readyz` back forever.
//!
//! Status flows back through [`StatusWriter`]: the plugin records each
//! group's status in the store, and the writer drains the changes every
//! [`STATUS_INTERVAL`] (several changes of one group in that time become
//! one write of the last) and merge-patches the object's `status`
//! subresource, each write through the adapter's write rate limiter.
//! Invariants:
//! - only the leader writes, and only once its preload is applied (a new
//!   leader's first statuses are computed from the whole cluster, not from
//!   half a list); a standby keeps draining nothing, so when it takes over
//!   it writes every group changed since it started;
//! - a group is written only while its object is in the store (groups
//!   given by pod annotations have no object), and only for an API the
//!   server serves;
//! - 404 (the object was deleted) drops the write; 409, 429, 5xx and
//!   transport errors keep it for the next round, where a newer status of
//!   the same group replaces it; any other refusal is logged and dropped.
//!   Nothing is retried in a tight loop.
//!
//! What is written. `strata.io/v1alpha1`: the whole [`PodGroupStatus`]
//! (`phase`, `members`, `placed`, `bound`, `running`, `lastFailure`,
//! `domain`) plus a one-line `message` saying why the group is where it is
//! and `scheduleStartTime`; `manifests/crds/strata.io_podgroups.yaml`
//! declares exactly these fields. `placed` counts members assumed or bound,
//! `bound` members bound to a node, `running` members whose pod phase the
//! kubelet reports as `Running` (pod updates reach the PodGroup plugin
//! through the engine's node observers). The coscheduling
//! `scheduling.x-k8s.io/v1alpha1` object gets only the fields of its
//! published status the scheduler knows: `phase`, `scheduled` (members
//! bound), `running` and `scheduleStartTime`; never `succeeded`, `failed`
//! (finished pods leave the scheduler's view) or `occupiedBy` (the owning
//! workload). Phases map as Pending, Unschedulable and Invalid → `Pending`
//! (that API has no reason field: the reason is in the members'
//! `PodScheduled` condition and events), Scheduling → `PreScheduling`,
//! Scheduled (placed, binds in flight) → `Scheduling`, Bound (`minMember`
//! bound) → `Scheduled`, Running (`minMember` running) → `Running`.
//! Where scheduler-plugins' PodGroup controller also runs, it owns that
//! status and the two would overwrite each other: run one or the other.

use crate::CustomResource;
use crate::client::RateLimiter;
use crate::leader::{LeaderContext, LeaderTask};
use crate::translate::CustomHandler;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use rustc_hash::FxHashMap;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use strata_plugins::pod_group::{
    GroupApi, GroupKey, GroupPhase, KIND, PodGroupStatus, PodGroupStore,
};
use strata_scheduler::intern::Sym;

/// How often the [`StatusWriter`] drains the store's status changes.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(500);

/// The PodGroup APIs Strata reads: group, version, which API.
pub const POD_GROUP_APIS: [(&str, &str, GroupApi); 2] = [
    ("strata.io", "v1alpha1", GroupApi::Strata),
    ("scheduling.x-k8s.io", "v1alpha1", GroupApi::Coscheduling),
];

/// Feeds one PodGroup API into the store.
pub struct PodGroupHandler {
    store: PodGroupStore,
    api: GroupApi,
    api_version: String,
    writer: Option<Arc<dyn LeaderTask>>,
}

impl PodGroupHandler {
    /// A handler for objects of `group/version`.
    pub fn new(store: PodGroupStore, group: &str, version: &str, api: GroupApi) -> PodGroupHandler {
        PodGroupHandler {
            store,
            api,
            api_version: format!("{group}/{version}"),
            writer: None,
        }
    }

    /// Also has the adapter run `task` while this replica leads (one
    /// handler per store carries the store's [`StatusWriterTask`]).
    pub fn with_leader_task(mut self, task: Arc<dyn LeaderTask>) -> PodGroupHandler {
        self.writer = Some(task);
        self
    }
}

impl CustomHandler for PodGroupHandler {
    fn upsert(&self, obj: &DynamicObject) {
        let mut v = match serde_json::to_value(obj) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "PodGroup object could not be read");
                return;
            }
        };
        // Objects from lists may come without their type.
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), self.api_version.clone().into());
            m.insert("kind".into(), KIND.into());
        }
        if let Err(e) = self.store.upsert_object(&v) {
            tracing::warn!(error = %e, "PodGroup object ignored");
        }
    }

    fn delete(&self, namespace: &str, name: &str) {
        self.store.remove(&GroupKey {
            api: self.api,
            namespace: Sym::new(if namespace.is_empty() {
                "default"
            } else {
                namespace
            }),
            name: Sym::new(name),
        });
    }

    fn leader_task(&self) -> Option<Arc<dyn LeaderTask>> {
        self.writer.clone()
    }
}

/// The custom resources to watch for PodGroups: those of
/// [`POD_GROUP_APIS`] the API server serves (checked with one small list).
/// The first carries the [`StatusWriterTask`] that writes the groups'
/// status back (one writer per store, for every served API).
pub async fn pod_group_resources(
    client: &kube::Client,
    store: &PodGroupStore,
) -> Vec<CustomResource> {
    let mut served = Vec::new();
    for (group, version, api) in POD_GROUP_APIS {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, KIND),
            "podgroups",
        );
        let name = format!("{group}/{version}");
        let consequence = "groups of this API come from pod annotations only";
        if crate::client::api_served(client, &ar, &name, consequence).await {
            served.push((group, version, api, ar));
        }
    }
    let apis: Vec<GroupApi> = served.iter().map(|(_, _, api, _)| *api).collect();
    let mut writer: Option<Arc<dyn LeaderTask>> = (!apis.is_empty()).then(|| {
        Arc::new(StatusWriterTask {
            store: store.clone(),
            apis,
            interval: STATUS_INTERVAL,
        }) as Arc<dyn LeaderTask>
    });
    served
        .into_iter()
        .map(|(group, version, api, ar)| {
            let mut h = PodGroupHandler::new(store.clone(), group, version, api);
            if let Some(w) = writer.take() {
                h = h.with_leader_task(w);
            }
            CustomResource {
                api_resource: ar,
                kind: KIND,
                handler: Arc::new(h),
            }
        })
        .collect()
}

/// The API resource of `api`'s PodGroups.
fn resource_of(api: GroupApi) -> ApiResource {
    let (group, version, _) = POD_GROUP_APIS
        .iter()
        .find(|(_, _, a)| *a == api)
        .copied()
        .unwrap_or(POD_GROUP_APIS[0]);
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, KIND), "podgroups")
}

/// What one [`StatusWriter::flush`] did, per group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Statuses written.
    pub written: usize,
    /// Dropped: the object is gone (404, or no longer in the store) or its
    /// API is not served.
    pub gone: usize,
    /// Kept for the next round (409, 429, 5xx, transport errors).
    pub retry: usize,
    /// Refused for another reason (logged) and dropped.
    pub failed: usize,
    /// Not sent: the same status was the last one written (an object's
    /// own status update comes back through the watch and marks the group
    /// changed).
    pub unchanged: usize,
}

/// Writes the PodGroup plugin's status to the PodGroup objects' `status`
/// subresource (see the module documentation for what and when).
pub struct StatusWriter {
    client: kube::Client,
    limiter: Arc<RateLimiter>,
    store: PodGroupStore,
    apis: Vec<GroupApi>,
    /// Drained but not written yet (a failed write waits here for the next
    /// round; a newer status of the same group replaces it).
    pending: BTreeMap<GroupKey, PodGroupStatus>,
    /// Per group: when its current scheduling attempt started, as this
    /// writer saw it (None: idle; absent: never seen, time unknown).
    started: FxHashMap<GroupKey, Option<jiff::Timestamp>>,
    /// The last patch written per group.
    written: FxHashMap<GroupKey, Value>,
}

impl StatusWriter {
    /// A writer for the groups of `apis` (the served ones) in `store`.
    pub fn new(
        client: kube::Client,
        limiter: Arc<RateLimiter>,
        store: PodGroupStore,
        apis: Vec<GroupApi>,
    ) -> StatusWriter {
        StatusWriter {
            client,
            limiter,
            store,
            apis,
            pending: BTreeMap::new(),
            started: FxHashMap::default(),
            written: FxHashMap::default(),
        }
    }

    /// Statuses drained but not written yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Forgets what this writer wrote, so nothing is skipped as unchanged:
    /// while another replica led, it may have written something else.
    pub fn forget_written(&mut self) {
        self.written.clear();
    }

    /// Drains the store's changes and writes every pending status once.
    pub async fn flush(&mut self) -> FlushReport {
        for (k, s) in self.store.take_status_changes() {
            self.pending.insert(k, s);
        }
        let mut report = FlushReport::default();
        if self.pending.is_empty() {
            return report;
        }
        // Forget groups whose objects were deleted since, so one created
        // again under the same name is written afresh.
        let store = &self.store;
        self.written.retain(|k, _| store.get(k).is_some());
        self.started.retain(|k, _| store.get(k).is_some());
        let keys: Vec<GroupKey> = self.pending.keys().copied().collect();
        for key in keys {
            let Some(status) = self.pending.get(&key).cloned() else {
                continue;
            };
            let object = self.store.get(&key);
            if object.is_none() || !self.apis.contains(&key.api) {
                self.pending.remove(&key);
                report.gone += 1;
                continue;
            }
            let start = self.start_time(key, status.phase);
            let body = match key.api {
                GroupApi::Strata => {
                    let min = object
                        .as_ref()
                        .and_then(|o| o.spec.as_ref().ok().map(|s| s.min_member));
                    let spec_error = object
                        .as_ref()
                        .and_then(|o| o.spec.as_ref().err().map(|e| e.to_string()));
                    strata_status(&status, min, spec_error.as_deref(), start)
                }
                GroupApi::Coscheduling => coscheduling_status(&status, start),
                // A LeaderWorkerSet replica has no object of its own to
                // write (never reached: it has none in the store).
                GroupApi::LeaderWorkerSet => {
                    self.pending.remove(&key);
                    continue;
                }
            };
            if self.written.get(&key) == Some(&body) {
                self.pending.remove(&key);
                report.unchanged += 1;
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                key.namespace.as_str(),
                &resource_of(key.api),
            );
            self.limiter.acquire().await;
            let res = api
                .patch_status(
                    key.name.as_str(),
                    &PatchParams::default(),
                    &Patch::Merge(&body),
                )
                .await;
            let code = match &res {
                Ok(_) => None,
                Err(kube::Error::Api(s)) => Some(s.code),
                Err(_) => Some(0),
            };
            match code {
                None => {
                    self.pending.remove(&key);
                    self.written.insert(key, body);
                    report.written += 1;
                }
                Some(404) => {
                    tracing::debug!(group = %key, "PodGroup gone; its status is not written");
                    self.pending.remove(&key);
                    self.started.remove(&key);
                    self.written.remove(&key);
                    report.gone += 1;
                }
                Some(0 | 409 | 429 | 500..=599) => {
                    if let Err(e) = &res {
                        tracing::debug!(group = %key, error = %e, "PodGroup status write failed; retried next round");
                    }
                    report.retry += 1;
                }
                Some(_) => {
                    if let Err(e) = &res {
                        tracing::warn!(group = %key, error = %e, "PodGroup status write refused");
                    }
                    self.pending.remove(&key);
                    report.failed += 1;
                }
            }
        }
        report
    }

    /// `scheduleStartTime` to write for `key` now in `phase`: set when this
    /// writer sees an attempt begin, cleared when the group goes back to
    /// waiting, and left alone (None) when the writer first meets the group
    /// already placed (it cannot know when that began).
    fn start_time(&mut self, key: GroupKey, phase: GroupPhase) -> Option<Value> {
        let active = matches!(
            phase,
            GroupPhase::Scheduling
                | GroupPhase::Scheduled
                | GroupPhase::Bound
                | GroupPhase::Running
        );
        let seen = self.started.get(&key).copied();
        let next = match (seen, active) {
            (_, false) => None,
            (Some(Some(t)), true) => Some(t),
            (Some(None), true) => Some(jiff::Timestamp::now()),
            (None, true) if phase == GroupPhase::Scheduling => Some(jiff::Timestamp::now()),
            (None, true) => return None,
        };
        self.started.insert(key, next);
        Some(match next {
            Some(t) => json!(t.round(jiff::Unit::Second).unwrap_or(t).to_string()),
            None => Value::Null,
        })
    }
}

/// The phase's name in Strata's API (the CRD's enum).
fn strata_phase(p: GroupPhase) -> &'static str {
    match p {
        GroupPhase::Pending => "Pending",
        GroupPhase::Scheduling => "Scheduling",
        GroupPhase::Scheduled => "Scheduled",
        GroupPhase::Bound => "Bound",
        GroupPhase::Running => "Running",
        GroupPhase::Unschedulable => "Unschedulable",
        GroupPhase::Invalid => "Invalid",
    }
}

/// The phase in the coscheduling API's terms.
fn coscheduling_phase(p: GroupPhase) -> &'static str {
    match p {
        GroupPhase::Pending | GroupPhase::Unschedulable | GroupPhase::Invalid => "Pending",
        GroupPhase::Scheduling => "PreScheduling",
        GroupPhase::Scheduled => "Scheduling",
        GroupPhase::Bound => "Scheduled",
        GroupPhase::Running => "Running",
    }
}

/// One line on why the group stands where it does.
fn message(s: &PodGroupStatus, min: Option<u32>, spec_error: Option<&str>) -> String {
    if let Some(e) = spec_error {
        return format!("the PodGroup is invalid: {e}");
    }
    if let Some(f) = &s.last_failure
        && matches!(s.phase, GroupPhase::Unschedulable | GroupPhase::Invalid)
    {
        return f.clone();
    }
    let enough = min.is_some_and(|m| s.members >= m);
    let min = min.map_or_else(|| "?".to_owned(), |m| m.to_string());
    match s.phase {
        GroupPhase::Pending if enough => format!(
            "{} members exist (minMember {min}); waiting to be scheduled",
            s.members
        ),
        GroupPhase::Pending => format!(
            "waiting for members: {} of minMember {min} exist",
            s.members
        ),
        GroupPhase::Scheduling => {
            format!("placing members: {} of minMember {min} placed", s.placed)
        }
        GroupPhase::Scheduled => format!(
            "{} members placed, {} bound (minMember {min})",
            s.placed, s.bound
        ),
        GroupPhase::Bound => format!(
            "{} members bound, {} running (minMember {min})",
            s.bound, s.running
        ),
        GroupPhase::Running => format!("{} members running (minMember {min})", s.running),
        GroupPhase::Unschedulable => "the last attempt failed".to_owned(),
        GroupPhase::Invalid => "the group can never be placed as written".to_owned(),
    }
}

/// The merge patch for a `strata.io` PodGroup. Absent values are written
/// as null so a stale failure or domain is cleared.
fn strata_status(
    s: &PodGroupStatus,
    min: Option<u32>,
    spec_error: Option<&str>,
    start: Option<Value>,
) -> Value {
    let mut st = json!({
        "phase": strata_phase(s.phase),
        "members": s.members,
        "placed": s.placed,
        "bound": s.bound,
        "running": s.running,
        "lastFailure": s.last_failure,
        "domain": s.domain,
        "message": message(s, min, spec_error),
    });
    if let Some(t) = start {
        st["scheduleStartTime"] = t;
    }
    json!({ "status": st })
}

/// The merge patch for a coscheduling PodGroup: only the fields the
/// scheduler knows.
fn coscheduling_status(s: &PodGroupStatus, start: Option<Value>) -> Value {
    let mut st = json!({
        "phase": coscheduling_phase(s.phase),
        "scheduled": s.bound,
        "running": s.running,
    });
    if let Some(t) = start {
        st["scheduleStartTime"] = t;
    }
    json!({ "status": st })
}

/// The [`LeaderTask`] running a [`StatusWriter`] every `interval`.
pub struct StatusWriterTask {
    store: PodGroupStore,
    apis: Vec<GroupApi>,
    interval: Duration,
}

impl StatusWriterTask {
    /// A task writing the status of `store`'s groups of the served `apis`
    /// every `interval`.
    pub fn new(store: PodGroupStore, apis: Vec<GroupApi>, interval: Duration) -> StatusWriterTask {
        StatusWriterTask {
            store,
            apis,
            interval,
        }
    }
}

impl LeaderTask for StatusWriterTask {
    fn run(self: Arc<Self>, mut ctx: LeaderContext) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut w = StatusWriter::new(
                ctx.client.clone(),
                ctx.limiter.clone(),
                self.store.clone(),
                self.apis.clone(),
            );
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = ctx.stop.changed() => {}
                }
                let stopping = *ctx.stop.borrow();
                if ctx.gate.is_leader() && ctx.gate.is_ready() {
                    w.flush().await;
                } else {
                    w.forget_written();
                }
                if stopping {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: GroupPhase, members: u32, placed: u32, bound: u32) -> PodGroupStatus {
        PodGroupStatus {
            phase,
            members,
            placed,
            bound,
            ..Default::default()
        }
    }

    #[test]
    fn every_phase_maps_onto_both_apis() {
        let table = [
            (GroupPhase::Pending, "Pending", "Pending"),
            (GroupPhase::Scheduling, "Scheduling", "PreScheduling"),
            (GroupPhase::Scheduled, "Scheduled", "Scheduling"),
            (GroupPhase::Bound, "Bound", "Scheduled"),
            (GroupPhase::Running, "Running", "Running"),
            (GroupPhase::Unschedulable, "Unschedulable", "Pending"),
            (GroupPhase::Invalid, "Invalid", "Pending"),
        ];
        for (p, strata, cosched) in table {
            assert_eq!(strata_phase(p), strata);
            assert_eq!(coscheduling_phase(p), cosched);
        }
    }

    #[test]
    fn strata_patch_clears_stale_fields_and_says_why() {
        let v = strata_status(&status(GroupPhase::Pending, 2, 0, 0), Some(3), None, None);
        assert_eq!(
            v,
            json!({"status": {"phase": "Pending", "members": 2, "placed": 0, "bound": 0, "running": 0,
                "lastFailure": null, "domain": null,
                "message": "waiting for members: 2 of minMember 3 exist"}})
        );
        let mut failed = status(GroupPhase::Unschedulable, 3, 0, 0);
        failed.last_failure = Some("no super-node fits".into());
        let v = strata_status(&failed, Some(3), None, Some(Value::Null));
        assert_eq!(v["status"]["message"], "no super-node fits");
        assert_eq!(v["status"]["lastFailure"], "no super-node fits");
        assert!(v["status"]["scheduleStartTime"].is_null());
        assert!(v["status"].get("scheduleStartTime").is_some());
        let v = strata_status(
            &status(GroupPhase::Invalid, 1, 0, 0),
            None,
            Some("minMember: bad"),
            None,
        );
        assert_eq!(
            v["status"]["message"],
            "the PodGroup is invalid: minMember: bad"
        );
    }

    #[test]
    fn pending_says_whether_members_are_missing() {
        let few = status(GroupPhase::Pending, 2, 0, 0);
        assert_eq!(
            message(&few, Some(3), None),
            "waiting for members: 2 of minMember 3 exist"
        );
        let enough = status(GroupPhase::Pending, 3, 0, 0);
        assert_eq!(
            message(&enough, Some(3), None),
            "3 members exist (minMember 3); waiting to be scheduled"
        );
        assert_eq!(
            message(&enough, None, None),
            "waiting for members: 3 of minMember ? exist"
        );
        let placing = status(GroupPhase::Scheduled, 3, 3, 1);
        assert_eq!(
            message(&placing, Some(3), None),
            "3 members placed, 1 bound (minMember 3)"
        );
    }

    #[test]
    fn coscheduling_patch_has_only_known_fields() {
        let v = coscheduling_status(&status(GroupPhase::Bound, 4, 4, 4), None);
        assert_eq!(
            v,
            json!({"status": {"phase": "Scheduled", "scheduled": 4, "running": 0}})
        );
        let mut running = status(GroupPhase::Running, 4, 4, 4);
        running.running = 3;
        let v = coscheduling_status(&running, None);
        assert_eq!(
            v,
            json!({"status": {"phase": "Running", "scheduled": 4, "running": 3}})
        );
    }

    #[tokio::test]
    async fn start_time_is_set_on_a_new_attempt_and_cleared_on_backoff() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("url"),
        ))
        .expect("client");
        let mut w = StatusWriter::new(
            client,
            Arc::new(RateLimiter::new(10.0, 10)),
            PodGroupStore::new(),
            vec![GroupApi::Strata],
        );
        let k = |n: &str| GroupKey {
            api: GroupApi::Strata,
            namespace: Sym::new("ns"),
            name: Sym::new(n),
        };
        // First met already running: the start is unknown, left alone.
        assert_eq!(w.start_time(k("a"), GroupPhase::Running), None);
        // Pending, then an attempt: the time is set and kept.
        assert_eq!(w.start_time(k("b"), GroupPhase::Pending), Some(Value::Null));
        let t = w.start_time(k("b"), GroupPhase::Scheduling).expect("set");
        assert!(t.is_string(), "{t}");
        assert_eq!(w.start_time(k("b"), GroupPhase::Running), Some(t));
        // Backed off: cleared.
        assert_eq!(
            w.start_time(k("b"), GroupPhase::Unschedulable),
            Some(Value::Null)
        );
    }
}
