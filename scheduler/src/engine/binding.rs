//! The binding cycle: wait at Permit if asked, then PreBind, Bind and
//! PostBind, off the scheduling thread with bounded concurrency. Results go
//! back to the engine, which finishes the bookkeeping between cycles.

use super::Scheduler;
use super::profile::BindPlugins;
use crate::cluster::{BindError, EventKind, PodEvent};
use crate::framework::{
    ActionType, Code, CycleState, EventObject, EventResource, NodeRef, PermitDecision, Status,
};
use crate::model::PodInfo;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};

pub(crate) struct BindingJob {
    pub profile: usize,
    pub plugins: Arc<BindPlugins>,
    pub pod: Arc<PodInfo>,
    pub node: NodeRef,
    pub state: CycleState,
    pub waiting: Option<oneshot::Receiver<PermitDecision>>,
    pub slots: Arc<Semaphore>,
    pub done: mpsc::Sender<BindingDone>,
    /// An extender with a bindVerb interested in the pod: it binds instead
    /// of the Bind plugins, as in kube-scheduler.
    pub binder: Option<Arc<dyn crate::extenders::Extender>>,
}

pub(crate) enum BindOutcome {
    Bound,
    PermitRejected { plugin: String, message: String },
    Failed { stage: &'static str, status: Status },
}

pub(crate) struct BindingDone {
    pub profile: usize,
    pub pod: Arc<PodInfo>,
    pub node: NodeRef,
    pub state: CycleState,
    pub outcome: BindOutcome,
}

pub(crate) fn spawn_binding(rt: &tokio::runtime::Handle, job: BindingJob) {
    rt.spawn(async move {
        let BindingJob {
            profile,
            plugins,
            pod,
            node,
            state,
            waiting,
            slots,
            done,
            binder,
        } = job;
        let outcome = run(&plugins, &pod, node, &state, waiting, &slots, binder).await;
        if let BindOutcome::Bound = outcome {
            for p in &plugins.post_bind {
                if let Some(pb) = p.as_post_bind() {
                    pb.post_bind(&state, &pod, node);
                }
            }
        }
        // The engine may be gone at shutdown; nothing to do then.
        let _ = done.send(BindingDone {
            profile,
            pod,
            node,
            state,
            outcome,
        });
    });
}

async fn run(
    plugins: &BindPlugins,
    pod: &PodInfo,
    node: NodeRef,
    state: &CycleState,
    waiting: Option<oneshot::Receiver<PermitDecision>>,
    slots: &Semaphore,
    binder: Option<Arc<dyn crate::extenders::Extender>>,
) -> BindOutcome {
    if let Some(rx) = waiting {
        match rx.await {
            Ok(PermitDecision::Allowed) => {}
            Ok(PermitDecision::Rejected { plugin, message }) => {
                return BindOutcome::PermitRejected { plugin, message };
            }
            Err(_) => {
                return BindOutcome::PermitRejected {
                    plugin: "Permit".into(),
                    message: "wait abandoned".into(),
                };
            }
        }
    }
    // Waiting pods hold no slot, so a large gang at Permit cannot starve binds.
    let Ok(_slot) = slots.acquire().await else {
        return BindOutcome::Failed {
            stage: "Bind",
            status: Status::error("binding pool closed"),
        };
    };
    for p in &plugins.pre_bind {
        if let Some(pb) = p.as_pre_bind() {
            let s = pb.pre_bind(state, pod, node).await;
            if !s.is_success() && !s.is_skip() {
                return BindOutcome::Failed {
                    stage: "PreBind",
                    status: s.with_plugin(p.name()),
                };
            }
        }
    }
    if let Some(e) = binder {
        return match e.bind(pod, node).await {
            Ok(()) => BindOutcome::Bound,
            Err(err) => BindOutcome::Failed {
                stage: "Bind",
                status: Status::error(format!("extender {}: {err}", e.name())),
            },
        };
    }
    for p in &plugins.bind {
        if let Some(b) = p.as_bind() {
            let s = b.bind(state, pod, node).await;
            match s.code() {
                Code::Skip => continue,
                Code::Success => return BindOutcome::Bound,
                _ => {
                    return BindOutcome::Failed {
                        stage: "Bind",
                        status: s.with_plugin(p.name()),
                    };
                }
            }
        }
    }
    BindOutcome::Failed {
        stage: "Bind",
        status: Status::error("no Bind plugin bound the pod"),
    }
}

impl Scheduler {
    /// Applies finished binding cycles without blocking. Returns how many.
    pub fn process_completions(&mut self) -> usize {
        let mut n = 0;
        while let Ok(d) = self.done_rx.try_recv() {
            self.complete(d);
            n += 1;
        }
        n
    }

    /// Blocks until at least one binding cycle finishes or `timeout` passes,
    /// then applies every finished one. Returns how many.
    pub fn wait_for_completion(&mut self, timeout: Duration) -> usize {
        if self.in_flight == 0 {
            return 0;
        }
        match self.done_rx.recv_timeout(timeout) {
            Ok(d) => {
                self.complete(d);
                1 + self.process_completions()
            }
            Err(_) => 0,
        }
    }

    fn complete(&mut self, d: BindingDone) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.waiting.remove(&d.pod.uid);
        let BindingDone {
            profile,
            pod,
            node,
            mut state,
            outcome,
        } = d;
        match outcome {
            BindOutcome::Bound => {
                self.counters.bound += 1;
                let now = self.clock.now();
                self.cache.finish_binding(&pod.uid, now, self.assumed_ttl);
                self.queue.done(&pod.uid);
                self.cluster.record_event(PodEvent {
                    namespace: pod.namespace,
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                    kind: EventKind::Normal,
                    reason: "Scheduled",
                    message: format!("Successfully assigned {} to {}", pod.key(), node.name),
                });
            }
            BindOutcome::PermitRejected { plugin, message } => {
                self.counters.bind_failures += 1;
                let msg = format!("rejected at Permit by {plugin}: {message}");
                self.report_bind_failure(&pod, &msg);
                // The rejecting plugin decides which events requeue the pod;
                // a timeout or deletion counts as all Permit plugins'.
                let permit = &self.profiles[profile].permit;
                let plugins: Vec<&'static str> = match permit.iter().find(|p| p.name() == plugin) {
                    Some(p) => vec![p.name()],
                    None => permit.iter().map(|p| p.name()).collect(),
                };
                self.queue.requeue_unschedulable(&pod.uid, &plugins, msg);
                self.undo(profile, &pod, node, &mut state);
            }
            BindOutcome::Failed { stage, status } => {
                self.counters.bind_failures += 1;
                let text = status.message();
                let msg = format!("{stage} failed: {status}");
                self.report_bind_failure(&pod, &msg);
                if BindError::is_final(&text) {
                    // Already bound elsewhere or gone: the informer will tell
                    // us the truth; retrying would only repeat the failure.
                    self.queue.done(&pod.uid);
                } else {
                    self.queue.requeue_backoff(&pod.uid, msg);
                }
                self.undo(profile, &pod, node, &mut state);
            }
        }
    }

    fn undo(&mut self, profile: usize, pod: &Arc<PodInfo>, node: NodeRef, state: &mut CycleState) {
        // Unreserve after a failed binding may have API writes to undo (a
        // claim PreBind allocated): give it the binding runtime to spawn on.
        let _rt = self.rt.enter();
        self.profiles[profile].unreserve(state, pod, node);
        if let Ok(p) = self.cache.forget(&pod.uid) {
            self.notify_observers();
            self.queue_event_forgotten(&p);
        }
    }

    fn queue_event_forgotten(&mut self, pod: &Arc<PodInfo>) {
        let ev = crate::framework::ClusterEvent {
            resource: EventResource::AssignedPod,
            action: ActionType::DELETE,
            object: EventObject::Pod {
                old: Some(pod),
                new: None,
            },
        };
        self.queue.on_event(&ev);
    }

    fn report_bind_failure(&self, pod: &Arc<PodInfo>, msg: &str) {
        self.cluster.record_event(PodEvent {
            namespace: pod.namespace,
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            kind: EventKind::Warning,
            reason: "FailedScheduling",
            message: msg.to_owned(),
        });
    }
}
