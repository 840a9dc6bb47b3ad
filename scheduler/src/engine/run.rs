//! The engine's run loop for a live cluster: one OS thread that applies
//! cluster updates, schedules while allowed, and applies finished binding
//! cycles, until told to stop.
//!
//! The loop owns the [`Scheduler`]; everything else talks to it through two
//! things only: a channel of [`ClusterUpdate`]s (the adapter's informers are
//! the senders) and a shared [`RunControl`] (flags the adapter flips: may we
//! schedule, should we stop). That keeps the engine free of I/O and locks: the
//! per-cycle state is touched by this thread alone.
//!
//! Invariants:
//! - **Nothing is scheduled before the caller says so.** The scheduling flag
//!   is read *before* the channel is drained, so when a caller sends its
//!   initial listing and only then sets the flag, every update of that
//!   listing is applied before the first cycle (the adapter's preload).
//! - **Losing the right to schedule stops scheduling at once.** The flag is
//!   read again before every cycle; when it goes down, pods waiting at Permit
//!   are handed back ([`Scheduler::pause`]) and binding cycles already past
//!   Permit finish on their own (the API server's binding conflict keeps a pod
//!   from being bound twice if a new leader picks it too).
//! - **Updates keep flowing while paused.** A standby replica applies every
//!   update, so its cache and queue are warm when it takes over.
//! - **Stopping hands work back.** On stop, waiting pods are rejected and the
//!   loop waits (bounded) for binds in flight before returning.

use super::{CycleOutcome, Scheduler};
use crate::cluster::ClusterUpdate;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// How often the loop looks at finished binding cycles while some run.
const BIND_POLL: Duration = Duration::from_millis(2);
/// The longest the loop sleeps without looking at its control flags.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(50);

/// Flags shared between the run loop and whoever drives it.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    scheduling: AtomicBool,
    applied: AtomicU64,
    cycles: AtomicU64,
}

impl RunControl {
    /// A control with scheduling off and no stop requested.
    pub fn new() -> RunControl {
        RunControl::default()
    }

    /// Asks the loop to stop; it hands back waiting pods, waits for binds in
    /// flight (bounded by the grace period given to [`Scheduler::run`]) and
    /// returns.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Allows or forbids scheduling (leadership and preload both held).
    /// Updates sent on the channel before `set_scheduling(true)` are applied
    /// before the first cycle.
    pub fn set_scheduling(&self, on: bool) {
        self.scheduling.store(on, Ordering::Release);
    }

    /// Whether scheduling is allowed.
    pub fn scheduling(&self) -> bool {
        self.scheduling.load(Ordering::Acquire)
    }

    /// How many cluster updates the loop has applied so far. A sender that
    /// counts what it sent knows from this when the engine has caught up.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// How many scheduling cycles the loop has run.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }
}

/// Hooks the loop calls on its own thread, e.g. to update metrics. Both
/// default to doing nothing; keep them cheap, they run between cycles.
pub trait RunObserver {
    /// After every scheduling cycle.
    fn cycle(&mut self, _sched: &Scheduler, _outcome: &CycleOutcome) {}
    /// Once per loop turn, before the loop waits for something to do.
    fn idle(&mut self, _sched: &Scheduler) {}
}

/// An observer that does nothing.
pub struct NoObserver;
impl RunObserver for NoObserver {}

/// Why [`Scheduler::run`] returned and what was left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// Scheduling cycles run.
    pub cycles: u64,
    /// Updates applied.
    pub updates: u64,
    /// Binding cycles still running when the grace period ran out.
    pub abandoned_binds: usize,
    /// Whether the loop ended because every sender of the update channel
    /// was dropped (rather than on [`RunControl::request_stop`]).
    pub disconnected: bool,
}

impl Scheduler {
    /// Hands back pods waiting at Permit (rejects them, so their binding
    /// cycles undo their reservations and requeue them). Called when the
    /// engine may no longer schedule; binding cycles already past Permit go
    /// on to the end.
    pub fn pause(&mut self) {
        for w in self.waiting.list() {
            self.waiting.reject(
                &w.uid,
                "Scheduler",
                "scheduling paused: this replica is not the leader",
            );
        }
    }

    /// Runs until `control` asks to stop or every sender of `updates` is
    /// gone: applies updates, schedules while [`RunControl::scheduling`] is
    /// on, applies finished binding cycles, and sleeps when there is nothing
    /// to do (no longer than the next backoff or Permit deadline). On the
    /// way out it hands back pods waiting at Permit and waits up to `grace`
    /// for binds in flight.
    pub fn run(
        &mut self,
        updates: &Receiver<ClusterUpdate>,
        control: &RunControl,
        observer: &mut dyn RunObserver,
        grace: Duration,
    ) -> RunSummary {
        let mut summary = RunSummary {
            cycles: 0,
            updates: 0,
            abandoned_binds: 0,
            disconnected: false,
        };
        let mut was_scheduling = false;
        'outer: loop {
            if control.stop_requested() {
                break;
            }
            // Read the flag before draining: see the module invariants.
            let scheduling = control.scheduling();
            if !self.drain_updates(updates, control, &mut summary) {
                summary.disconnected = true;
                break;
            }
            self.process_completions();
            if was_scheduling && !scheduling {
                self.pause();
            }
            was_scheduling = scheduling;
            if scheduling {
                loop {
                    if control.stop_requested() {
                        break 'outer;
                    }
                    if !control.scheduling() {
                        // Leadership lost mid-batch: stop here.
                        self.pause();
                        was_scheduling = false;
                        break;
                    }
                    let Some(outcome) = self.schedule_one() else {
                        break;
                    };
                    summary.cycles += 1;
                    control.cycles.fetch_add(1, Ordering::Relaxed);
                    observer.cycle(self, &outcome);
                    // Keep the cache current between cycles.
                    if !self.drain_updates(updates, control, &mut summary) {
                        summary.disconnected = true;
                        break 'outer;
                    }
                }
            } else {
                self.tick();
            }
            observer.idle(self);
            let wait = self.idle_wait(scheduling);
            match updates.recv_timeout(wait) {
                Ok(u) => {
                    self.handle_update(u);
                    summary.updates += 1;
                    control.applied.fetch_add(1, Ordering::AcqRel);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    summary.disconnected = true;
                    break;
                }
            }
        }
        self.pause();
        // `None`: a grace past the end of the clock waits for every bind.
        let deadline = Instant::now().checked_add(grace);
        while self.in_flight() > 0 {
            let left = deadline.map_or(grace, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                break;
            }
            self.wait_for_completion(left.min(Duration::from_millis(100)));
        }
        self.process_completions();
        summary.abandoned_binds = self.in_flight();
        observer.idle(self);
        summary
    }

    /// Applies every update waiting on the channel. False when the channel
    /// is disconnected (and empty).
    fn drain_updates(
        &mut self,
        updates: &Receiver<ClusterUpdate>,
        control: &RunControl,
        summary: &mut RunSummary,
    ) -> bool {
        loop {
            match updates.try_recv() {
                Ok(u) => {
                    self.handle_update(u);
                    summary.updates += 1;
                    control.applied.fetch_add(1, Ordering::AcqRel);
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// How long to sleep when no pod is ready: short while binds run (to
    /// apply their results promptly), else until the next deadline, capped
    /// so the control flags are looked at regularly.
    fn idle_wait(&self, scheduling: bool) -> Duration {
        if self.in_flight() > self.waiting.len() {
            return BIND_POLL;
        }
        let mut wait = MAX_IDLE_WAIT;
        if scheduling && let Some(d) = self.next_deadline() {
            wait = wait.min(d.saturating_sub(self.clock.now()));
        }
        wait.max(Duration::from_millis(1))
    }
}
