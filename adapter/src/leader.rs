//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` does it.
//!
//! - A candidate reads the Lease every `retry_period`. It takes it when the
//!   Lease has no holder, or when the holder has not renewed for
//!   `lease_duration` **as observed locally** (the time this replica last saw
//!   the record change, never the holder's clock), by an update carrying the
//!   resourceVersion it read: if another candidate wrote first, the API
//!   answers 409 and this round is lost.
//! - The leader renews every `retry_period`. If it cannot renew for
//!   `renew_deadline` it stops leading at once. Since `renew_deadline <
//!   lease_duration`, it has stopped before any candidate can see the Lease
//!   as expired: two replicas never schedule at the same time.
//! - On shutdown the leader releases the Lease (empty holder), so a standby
//!   takes over after one retry period instead of a whole lease duration.
//!
//! Leadership is published through [`Gate`]: the engine schedules only
//! while this replica leads *and* its preload is applied.

use crate::client::RateLimiter;
use crate::metrics::Metrics;
use crate::options::LeaderElection;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use strata_scheduler::engine::RunControl;
use tokio::time::Instant;

/// Whether the engine may schedule: leader and ready, both required.
pub struct Gate {
    leader: AtomicBool,
    /// With leader election: the end of the term the last renewal bought
    /// (when it was sent plus the renew deadline). Past it this replica
    /// does not count as leader even before the elector notices, so a
    /// process frozen (SIGSTOP, a long GC-like stall) and resumed writes
    /// nothing on a term another replica may have taken since.
    term_until: parking_lot::Mutex<Option<Instant>>,
    ready: AtomicBool,
    control: Arc<RunControl>,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// A closed gate over `control`.
    pub fn new(control: Arc<RunControl>, metrics: Arc<Metrics>) -> Gate {
        Gate {
            leader: AtomicBool::new(false),
            term_until: parking_lot::Mutex::new(None),
            ready: AtomicBool::new(false),
            control,
            metrics,
        }
    }
    fn update(&self) {
        let on = self.leader.load(Ordering::SeqCst) && self.ready.load(Ordering::SeqCst);
        self.control.set_scheduling(on);
    }
    /// Leadership changed.
    pub fn set_leader(&self, on: bool) {
        self.leader.store(on, Ordering::SeqCst);
        self.metrics.set_leader(on);
        self.update();
    }
    /// Readiness changed.
    pub fn set_ready(&self, on: bool) {
        self.ready.store(on, Ordering::SeqCst);
        self.update();
    }
    /// The Lease was renewed by a write sent at `sent`: this replica may
    /// act as leader until `sent + valid_for`.
    pub fn renewed(&self, sent: Instant, valid_for: Duration) {
        *self.term_until.lock() = Some(sent + valid_for);
    }
    /// Whether this replica leads: the elector says so and, under leader
    /// election, the last renewal's term has not run out.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
            && self
                .term_until
                .lock()
                .is_none_or(|until| Instant::now() < until)
    }
    /// Whether the preload is applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// What a [`LeaderTask`] runs with.
pub struct LeaderContext {
    /// The API client.
    pub client: kube::Client,
    /// The adapter's write rate limiter: every write waits on it.
    pub limiter: Arc<RateLimiter>,
    /// Whether this replica leads (and its preload is applied).
    pub gate: Arc<Gate>,
    /// Turns true when the task must stop (after a last flush if it still
    /// leads).
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Asks the engine of this process (answered between cycles).
    pub engine: crate::query::EngineHandle,
}

/// Work only the leader does beside scheduling (for example writing a
/// plugin's status back to its objects). The adapter starts each task once
/// on every replica; the task checks [`Gate::is_leader`] before each write,
/// so a standby keeps its state warm and writes nothing. On
/// [`crate::Adapter::shutdown`] the adapter raises `stop` after the engine
/// has stopped and before the Lease is released, and waits (bounded) for
/// the task to end.
pub trait LeaderTask: Send + Sync + 'static {
    /// Runs until `ctx.stop` turns true.
    fn run(self: Arc<Self>, ctx: LeaderContext) -> futures::future::BoxFuture<'static, ()>;
}

/// The elector.
pub struct Elector {
    api: Api<Lease>,
    opts: LeaderElection,
    limiter: Arc<RateLimiter>,
    gate: Arc<Gate>,
    /// The last record seen (holder, renew time, transitions) and when it
    /// was first seen locally.
    observed: Option<(String, Instant)>,
    observed_spec: Option<LeaseSpec>,
    /// Told when leadership is lost for good (not re-campaigning).
    lost: tokio::sync::watch::Sender<bool>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn fingerprint(l: &Lease) -> String {
    let s = l.spec.clone().unwrap_or_default();
    format!(
        "{}|{:?}|{:?}|{:?}",
        s.holder_identity.unwrap_or_default(),
        s.renew_time.map(|t| t.0),
        s.acquire_time.map(|t| t.0),
        s.lease_transitions
    )
}

impl Elector {
    /// An elector for `opts.lease_namespace/opts.lease_name`.
    pub fn new(
        client: kube::Client,
        opts: LeaderElection,
        limiter: Arc<RateLimiter>,
        gate: Arc<Gate>,
        lost: tokio::sync::watch::Sender<bool>,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, &opts.lease_namespace),
            opts,
            limiter,
            gate,
            observed: None,
            observed_spec: None,
            lost,
        }
    }

    fn lease_secs(&self) -> i32 {
        self.opts.lease_duration.as_secs().max(1) as i32
    }

    /// One attempt to acquire or renew. Ok(true) when this replica holds
    /// the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.opts.identity.clone();
        self.limiter.acquire().await;
        let current = self.api.get_opt(&self.opts.lease_name).await?;
        let Some(lease) = current else {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(self.opts.lease_name.clone()),
                    namespace: Some(self.opts.lease_namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.lease_secs()),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            self.limiter.acquire().await;
            let sent = Instant::now();
            return match self.api.create(&PostParams::default(), &l).await {
                Ok(created) => {
                    self.observe(&created);
                    self.gate.renewed(sent, self.opts.renew_deadline);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_me = holder == me;
        if !held_by_me && !holder.is_empty() {
            let seen_at = self
                .observed
                .as_ref()
                .map(|(_, t)| *t)
                .unwrap_or_else(Instant::now);
            let dur = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.opts.lease_duration);
            if seen_at.elapsed() < dur {
                return Ok(false);
            }
        }
        let mut next = lease.clone();
        let mut s = spec.clone();
        if !held_by_me {
            s.acquire_time = Some(now());
            s.lease_transitions =
                Some(spec.lease_transitions.unwrap_or(0) + i32::from(!holder.is_empty()));
        }
        s.holder_identity = Some(me);
        s.lease_duration_seconds = Some(self.lease_secs());
        // Before the renew time is taken: the term is counted from no
        // later than what the other replicas will see.
        let sent = Instant::now();
        s.renew_time = Some(now());
        next.spec = Some(s);
        next.metadata.managed_fields = None;
        self.limiter.acquire().await;
        match self
            .api
            .replace(&self.opts.lease_name, &PostParams::default(), &next)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                self.gate.renewed(sent, self.opts.renew_deadline);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, l: &Lease) {
        let f = fingerprint(l);
        if self.observed.as_ref().is_none_or(|(old, _)| *old != f) {
            self.observed = Some((f, Instant::now()));
            self.observed_spec = l.spec.clone();
        }
    }

    /// Campaigns and leads until `stop` turns true; then, if leading,
    /// releases the Lease.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let retry = self.opts.retry_period;
        loop {
            // Candidate.
            loop {
                if *stop.borrow() {
                    return;
                }
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(lease = %self.opts.lease_name, error = %e, "leader election: acquiring the lease failed")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.changed() => {}
                }
            }
            tracing::info!(identity = %self.opts.identity, lease = %self.opts.lease_name, "became leader");
            self.gate.set_leader(true);
            // Leader.
            let mut last_renew = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    self.gate.set_leader(false);
                    self.release().await;
                    return;
                }
                let deadline = self
                    .opts
                    .renew_deadline
                    .saturating_sub(last_renew.elapsed());
                let renewed = tokio::time::timeout(deadline, self.try_acquire_or_renew()).await;
                match renewed {
                    Ok(Ok(true)) => last_renew = Instant::now(),
                    Ok(Ok(false)) => {
                        // Someone else holds it now.
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "leader election: renewing the lease failed")
                    }
                    Err(_) => {}
                }
                if last_renew.elapsed() >= self.opts.renew_deadline {
                    break;
                }
            }
            tracing::warn!(identity = %self.opts.identity, "lost leadership; scheduling stopped");
            self.gate.set_leader(false);
            if !self.opts.recampaign {
                // As kube-scheduler: a replica that lost its term does not
                // come back with state from it; `strata run` exits.
                let _ = self.lost.send(true);
                return;
            }
        }
    }

    /// Gives the Lease up: empty holder, so a standby takes it at its next
    /// try.
    async fn release(&mut self) {
        let Ok(Some(mut l)) = self.api.get_opt(&self.opts.lease_name).await else {
            return;
        };
        let Some(spec) = l.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        l.metadata.managed_fields = None;
        match self
            .api
            .replace(&self.opts.lease_name, &PostParams::default(), &l)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.opts.lease_name, "released the lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the lease failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_term_that_ran_out_is_not_leadership() {
        let gate = Gate::new(Arc::new(RunControl::new()), Arc::new(Metrics::new()));
        gate.set_leader(true);
        assert!(gate.is_leader(), "without election, leading has no term");
        gate.renewed(Instant::now(), Duration::from_secs(60));
        assert!(gate.is_leader());
        // Renewed long ago (a process frozen since): no longer leading,
        // before the elector has run.
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(30))
            .unwrap_or_else(Instant::now);
        gate.renewed(long_ago, Duration::from_secs(10));
        assert!(!gate.is_leader());
        gate.renewed(Instant::now(), Duration::from_secs(10));
        assert!(gate.is_leader());
        gate.set_leader(false);
        assert!(!gate.is_leader());
    }
}
