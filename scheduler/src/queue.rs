//! The scheduling queue: active (ordered by the QueueSort plugin), backoff
//! (ordered by expiry), unschedulable (waiting for a relevant cluster event),
//! and gated (held by a PreEnqueue plugin).
//!
//! Invariants:
//! - a pod is in at most one of active, backoff, unschedulable, gated, or
//!   in flight (popped and being scheduled or bound);
//! - a pod leaves the unschedulable set only on an event one of its
//!   rejecting plugins registered (and whose hint says Queue), or after the
//!   maximum stay;
//! - an event that happens while a pod is in flight is not lost: a pod that
//!   fails after such an event goes to backoff, not to unschedulable.
//!
//! Every operation is O(log n) in the queued pods, except event-driven moves,
//! which look at each unschedulable pod once.

use crate::clock::Clock;
use crate::framework::{ClusterEvent, Plugin, QueueingHint, SortKey, Status};
use crate::intern::Sym;
use crate::model::PodInfo;
use priority_queue::PriorityQueue;
use rustc_hash::{FxBuildHasher, FxHashMap};
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Queue timing settings.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// First backoff after a failed attempt.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Longest stay in the unschedulable set without a relevant event.
    pub max_unschedulable_stay: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable_stay: Duration::from_secs(300),
        }
    }
}

/// A pod in the queue with its scheduling history.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    /// The pod.
    pub pod: Arc<PodInfo>,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// When it first entered the queue.
    pub first_enqueued: Duration,
    /// When it last entered the active queue.
    pub enqueued: Duration,
    /// Plugins that rejected it in its last attempt.
    pub unschedulable_plugins: SmallVec<[&'static str; 4]>,
    /// The PreEnqueue plugin holding it, if gated.
    pub gated_by: Option<&'static str>,
    /// Message of the gate or last failure.
    pub last_message: String,
    /// Event sequence number when it was popped.
    popped_at_event: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    Gated,
    InFlight,
}

/// Counts per sub-queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Ready to pop.
    pub active: usize,
    /// Waiting for their backoff to expire.
    pub backoff: usize,
    /// Waiting for a cluster event.
    pub unschedulable: usize,
    /// Held by a PreEnqueue plugin.
    pub gated: usize,
    /// Popped and not yet finished.
    pub in_flight: usize,
}

struct Entry {
    qp: QueuedPod,
    place: Place,
    /// When it entered the unschedulable set, or when its backoff expires.
    since: Duration,
    /// Deleted while in flight.
    deleted: bool,
}

/// The scheduling queue.
pub struct SchedulingQueue {
    entries: FxHashMap<Arc<str>, Entry>,
    active: PriorityQueue<Arc<str>, Reverse<(SortKey, u64)>, FxBuildHasher>,
    backoff: PriorityQueue<Arc<str>, Reverse<(Duration, u64)>, FxBuildHasher>,
    sort: Arc<dyn Plugin>,
    pre_enqueue: FxHashMap<Sym, Vec<Arc<dyn Plugin>>>,
    plugins: FxHashMap<&'static str, Arc<dyn Plugin>>,
    settings: QueueSettings,
    clock: Arc<dyn Clock>,
    seq: u64,
    event_seq: u64,
    /// Pods that are (or were, lazily cleaned) unschedulable or gated: what
    /// an event has to look at, without walking every queued pod.
    parked: rustc_hash::FxHashSet<Arc<str>>,
    /// Unschedulable pods in the order they got there (times only grow), for
    /// the maximum-stay flush; stale entries are skipped.
    unsched_fifo: VecDeque<(Duration, Arc<str>)>,
}

impl SchedulingQueue {
    /// A queue ordered by `sort` (which must implement QueueSort), gating
    /// pods of each profile with its PreEnqueue plugins, and consulting
    /// `plugins` (every plugin of every profile) on cluster events.
    pub fn new(
        sort: Arc<dyn Plugin>,
        pre_enqueue: FxHashMap<Sym, Vec<Arc<dyn Plugin>>>,
        plugins: Vec<Arc<dyn Plugin>>,
        settings: QueueSettings,
        clock: Arc<dyn Clock>,
    ) -> SchedulingQueue {
        SchedulingQueue {
            entries: FxHashMap::default(),
            active: PriorityQueue::with_default_hasher(),
            backoff: PriorityQueue::with_default_hasher(),
            sort,
            pre_enqueue,
            plugins: plugins.into_iter().map(|p| (p.name(), p)).collect(),
            settings,
            clock,
            seq: 0,
            event_seq: 0,
            parked: Default::default(),
            unsched_fifo: VecDeque::new(),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn gate(&self, pod: &PodInfo) -> Option<(&'static str, Status)> {
        let list = self.pre_enqueue.get(&pod.scheduler_name)?;
        for p in list {
            if let Some(pe) = p.as_pre_enqueue() {
                let s = pe.pre_enqueue(pod);
                if !s.is_success() {
                    return Some((p.name(), s));
                }
            }
        }
        None
    }

    fn push_active(&mut self, uid: Arc<str>, now: Duration) {
        let seq = self.next_seq();
        let Some(e) = self.entries.get_mut(&uid) else {
            return;
        };
        e.place = Place::Active;
        e.qp.enqueued = now;
        let key = self
            .sort
            .as_queue_sort()
            .map(|s| s.sort_key(&e.qp.pod, now.as_nanos() as u64))
            .unwrap_or_default();
        self.active.push(uid, Reverse((key, seq)));
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(30);
        let d = self.settings.initial_backoff.saturating_mul(1u32 << shift);
        d.min(self.settings.max_backoff)
    }

    fn detach(&mut self, uid: &str) {
        self.active.remove(uid);
        self.backoff.remove(uid);
    }

    /// Moves a pod out of the unschedulable/gated sets to backoff or active.
    fn activate(&mut self, uid: Arc<str>, now: Duration) {
        let Some(e) = self.entries.get(&uid) else {
            return;
        };
        if !matches!(e.place, Place::Unschedulable | Place::Gated) {
            return;
        }
        if let Some((plugin, status)) = self.gate(&e.qp.pod) {
            let e = self.entries.get_mut(&uid).expect("entry exists");
            e.place = Place::Gated;
            e.qp.gated_by = Some(plugin);
            e.qp.last_message = status.message();
            self.parked.insert(uid);
            return;
        }
        let expiry =
            e.qp.enqueued
                .saturating_add(self.backoff_duration(e.qp.attempts));
        if e.qp.attempts > 0 && expiry > now {
            let seq = self.next_seq();
            let e = self.entries.get_mut(&uid).expect("entry exists");
            e.place = Place::Backoff;
            e.since = expiry;
            self.backoff.push(uid, Reverse((expiry, seq)));
        } else {
            self.push_active(uid, now);
        }
    }

    /// Adds a pending pod, or updates one already queued (keeping its place
    /// and history; an update may lift a gate).
    pub fn add(&mut self, pod: Arc<PodInfo>) {
        let now = self.clock.now();
        if let Some(e) = self.entries.get_mut(&pod.uid) {
            e.qp.pod = pod.clone();
            match e.place {
                Place::Gated | Place::Unschedulable => {
                    // An update to the pod itself may make it schedulable.
                    self.activate(pod.uid.clone(), now);
                }
                Place::Active => {
                    // Re-key: priority may have changed.
                    self.active.remove(&pod.uid);
                    self.push_active(pod.uid.clone(), now);
                }
                Place::Backoff | Place::InFlight => {}
            }
            return;
        }
        let uid = pod.uid.clone();
        let qp = QueuedPod {
            pod,
            attempts: 0,
            first_enqueued: now,
            enqueued: now,
            unschedulable_plugins: SmallVec::new(),
            gated_by: None,
            last_message: String::new(),
            popped_at_event: 0,
        };
        self.entries.insert(
            uid.clone(),
            Entry {
                qp,
                place: Place::Gated,
                since: now,
                deleted: false,
            },
        );
        self.activate(uid, now);
    }

    /// Removes a pod (deleted, or bound by someone else).
    pub fn delete(&mut self, uid: &str) {
        if let Some(e) = self.entries.get_mut(uid) {
            if e.place == Place::InFlight {
                e.deleted = true;
                return;
            }
            self.detach(uid);
            self.entries.remove(uid);
        }
    }

    /// Whether the queue holds `uid` (in any place, including in flight).
    pub fn contains(&self, uid: &str) -> bool {
        self.entries.get(uid).is_some_and(|e| !e.deleted)
    }

    /// The queued pod for `uid`.
    pub fn get(&self, uid: &str) -> Option<&QueuedPod> {
        self.entries.get(uid).map(|e| &e.qp)
    }

    /// Moves due pods from backoff to active, and long-stayed unschedulable
    /// pods back to active or backoff.
    pub fn flush(&mut self) {
        let now = self.clock.now();
        while let Some((_, Reverse((t, _)))) = self.backoff.peek() {
            if *t > now {
                break;
            }
            let (uid, _) = self.backoff.pop().expect("peeked");
            self.push_active(uid, now);
        }
        let stay = self.settings.max_unschedulable_stay;
        while let Some((since, _)) = self.unsched_fifo.front() {
            if since.saturating_add(stay) > now {
                break;
            }
            let (since, uid) = self.unsched_fifo.pop_front().expect("front exists");
            let live = self
                .entries
                .get(&uid)
                .is_some_and(|e| e.place == Place::Unschedulable && e.since == since);
            if live {
                self.activate(uid, now);
            }
        }
    }

    /// Pops the next pod to schedule; it is in flight until
    /// [`SchedulingQueue::done`] or a requeue.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        loop {
            let (uid, _) = self.active.pop()?;
            let ev = self.event_seq;
            let Some(e) = self.entries.get_mut(&uid) else {
                continue;
            };
            e.place = Place::InFlight;
            e.qp.attempts += 1;
            e.qp.popped_at_event = ev;
            return Some(e.qp.clone());
        }
    }

    /// The pod was scheduled (or dropped for good): forget it.
    pub fn done(&mut self, uid: &str) {
        self.detach(uid);
        self.entries.remove(uid);
    }

    /// The pod's attempt failed as unschedulable, rejected by `plugins`. It
    /// waits for a relevant event, or goes to backoff if an event arrived
    /// while it was in flight.
    pub fn requeue_unschedulable(&mut self, uid: &str, plugins: &[&'static str], message: String) {
        let now = self.clock.now();
        let event_seq = self.event_seq;
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        if e.deleted {
            self.entries.remove(uid);
            return;
        }
        e.qp.unschedulable_plugins = plugins.iter().copied().collect();
        e.qp.last_message = message;
        e.qp.enqueued = now;
        if e.qp.popped_at_event != event_seq {
            let attempts = e.qp.attempts;
            let expiry = now.saturating_add(self.backoff_duration(attempts));
            let e = self.entries.get_mut(uid).expect("entry exists");
            e.place = Place::Backoff;
            e.since = expiry;
            let seq = self.next_seq();
            self.backoff.push(uid.into(), Reverse((expiry, seq)));
        } else {
            e.place = Place::Unschedulable;
            e.since = now;
            self.parked.insert(uid.into());
            self.unsched_fifo.push_back((now, uid.into()));
        }
    }

    /// The pod's attempt failed with an error (or its bind failed): retry
    /// after backoff.
    pub fn requeue_backoff(&mut self, uid: &str, message: String) {
        let now = self.clock.now();
        let seq = self.next_seq();
        let expiry = now.saturating_add(
            self.backoff_duration(self.entries.get(uid).map(|e| e.qp.attempts).unwrap_or(1)),
        );
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        if e.deleted {
            self.entries.remove(uid);
            return;
        }
        e.qp.last_message = message;
        e.qp.enqueued = now;
        e.place = Place::Backoff;
        e.since = expiry;
        self.backoff.push(uid.into(), Reverse((expiry, seq)));
    }

    /// Puts a pod that was in flight straight back into the active queue
    /// (no attempt is charged), e.g. when its cycle was abandoned.
    pub fn requeue_active(&mut self, uid: &str) {
        let now = self.clock.now();
        if let Some(e) = self.entries.get_mut(uid) {
            if e.deleted {
                self.entries.remove(uid);
                return;
            }
            e.qp.attempts = e.qp.attempts.saturating_sub(1);
            self.push_active(uid.into(), now);
        }
    }

    /// A cluster event: moves unschedulable pods that a rejecting plugin
    /// says may now fit, and re-checks gated pods.
    pub fn on_event(&mut self, ev: &ClusterEvent<'_>) -> usize {
        self.event_seq += 1;
        let now = self.clock.now();
        let mut moved = Vec::new();
        let mut stale = Vec::new();
        for uid in &self.parked {
            let Some(e) = self.entries.get(uid) else {
                stale.push(uid.clone());
                continue;
            };
            match e.place {
                Place::Unschedulable => {
                    let plugins = &e.qp.unschedulable_plugins;
                    let wake = plugins.is_empty()
                        || plugins.iter().any(|name| {
                            self.plugins.get(name).is_some_and(|p| {
                                p.events_to_register().iter().any(|k| k.covers(ev))
                                    && p.queueing_hint(&e.qp.pod, ev) == QueueingHint::Queue
                            })
                        });
                    if wake {
                        moved.push(uid.clone());
                    }
                }
                Place::Gated => {
                    let wake =
                        e.qp.gated_by
                            .and_then(|g| self.plugins.get(g))
                            .is_some_and(|p| {
                                p.events_to_register().iter().any(|k| k.covers(ev))
                                    && p.queueing_hint(&e.qp.pod, ev) == QueueingHint::Queue
                            });
                    if wake {
                        moved.push(uid.clone());
                    }
                }
                _ => stale.push(uid.clone()),
            }
        }
        for uid in stale {
            self.parked.remove(&uid);
        }
        let n = moved.len();
        for uid in moved {
            self.activate(uid, now);
        }
        n
    }

    /// Moves the listed pods to the active queue now if they wait gated (the
    /// gate is re-checked), unschedulable or in backoff (kube-scheduler's
    /// `Activate`); other pods are left where they are.
    pub fn activate_pods(&mut self, uids: &[Arc<str>]) {
        let now = self.clock.now();
        for uid in uids {
            let Some(e) = self.entries.get(uid) else {
                continue;
            };
            let (place, pod) = (e.place, e.qp.pod.clone());
            match place {
                Place::Backoff => {
                    self.backoff.remove(uid);
                    self.push_active(uid.clone(), now);
                }
                Place::Gated => self.activate(uid.clone(), now),
                // Skip the backoff an event-woken pod would serve.
                Place::Unschedulable if self.gate(&pod).is_none() => {
                    self.push_active(uid.clone(), now)
                }
                Place::Unschedulable => self.activate(uid.clone(), now),
                Place::Active | Place::InFlight => {}
            }
        }
    }

    /// Moves every unschedulable pod out (e.g. after a preemption freed
    /// space or on operator request).
    pub fn move_all(&mut self) {
        self.event_seq += 1;
        let now = self.clock.now();
        let all: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.place == Place::Unschedulable)
            .map(|(k, _)| k.clone())
            .collect();
        for uid in all {
            self.activate(uid, now);
        }
    }

    /// The clock time of the next backoff expiry or unschedulable flush.
    pub fn next_deadline(&self) -> Option<Duration> {
        let b = self.backoff.peek().map(|(_, Reverse((t, _)))| *t);
        let u = self
            .unsched_fifo
            .iter()
            .find(|(since, uid)| {
                self.entries
                    .get(uid)
                    .is_some_and(|e| e.place == Place::Unschedulable && e.since == *since)
            })
            .map(|(since, _)| since.saturating_add(self.settings.max_unschedulable_stay));
        match (b, u) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts per sub-queue.
    pub fn stats(&self) -> QueueStats {
        let mut s = QueueStats {
            active: self.active.len(),
            backoff: self.backoff.len(),
            ..Default::default()
        };
        for e in self.entries.values() {
            match e.place {
                Place::Unschedulable => s.unschedulable += 1,
                Place::Gated => s.gated += 1,
                Place::InFlight => s.in_flight += 1,
                _ => {}
            }
        }
        s
    }

    /// Pods waiting in the unschedulable or gated sets, with their last
    /// message (for reports).
    pub fn pending_pods(&self) -> impl Iterator<Item = &QueuedPod> + '_ {
        self.entries
            .values()
            .filter(|e| {
                matches!(
                    e.place,
                    Place::Unschedulable | Place::Gated | Place::Backoff
                )
            })
            .map(|e| &e.qp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::framework::{
        ActionType, ClusterEventKind, EventObject, EventResource, PreEnqueuePlugin,
    };
    use crate::testing::plugins::Sort;
    use crate::testing::pod;

    struct NodeWatcher;
    crate::plugin!(NodeWatcher: "NodeWatcher" => [] {
        fn events_to_register(&self) -> Vec<ClusterEventKind> {
            vec![ClusterEventKind::new(EventResource::Node, ActionType::ADD)]
        }
    });

    struct Gate;
    crate::plugin!(Gate: "Gate" => [PreEnqueue] {
        fn events_to_register(&self) -> Vec<ClusterEventKind> {
            vec![ClusterEventKind::new(
                EventResource::UnscheduledPod,
                ActionType::UPDATE,
            )]
        }
    });
    impl PreEnqueuePlugin for Gate {
        fn pre_enqueue(&self, pod: &PodInfo) -> Status {
            if pod.annotations.contains_key("hold") {
                Status::unresolvable("held")
            } else {
                Status::success()
            }
        }
    }

    fn queue() -> (SchedulingQueue, Arc<ManualClock>) {
        queue_with(QueueSettings::default())
    }

    fn queue_with(settings: QueueSettings) -> (SchedulingQueue, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let mut pe = FxHashMap::default();
        pe.insert(
            Sym::new("strata-scheduler"),
            vec![Arc::new(Gate) as Arc<dyn Plugin>],
        );
        let q = SchedulingQueue::new(
            Arc::new(Sort),
            pe,
            vec![Arc::new(NodeWatcher), Arc::new(Gate)],
            settings,
            clock.clone(),
        );
        (q, clock)
    }

    fn node_added() -> ClusterEvent<'static> {
        ClusterEvent {
            resource: EventResource::Node,
            action: ActionType::ADD,
            object: EventObject::None,
        }
    }

    #[test]
    fn priority_then_arrival() {
        let (mut q, clock) = queue();
        q.add(pod("low").priority(1).arc());
        clock.advance(Duration::from_millis(1));
        q.add(pod("high").priority(10).arc());
        clock.advance(Duration::from_millis(1));
        q.add(pod("low2").priority(1).arc());
        let order: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|p| p.pod.name.to_string())
            .collect();
        assert_eq!(order, ["high", "low", "low2"]);
    }

    #[test]
    fn unschedulable_waits_for_registered_event() {
        let (mut q, _clock) = queue();
        q.add(pod("a").arc());
        let p = q.pop().unwrap();
        q.requeue_unschedulable(&p.pod.uid, &["NodeWatcher"], "no node".into());
        assert_eq!(q.stats().unschedulable, 1);
        // An event nobody registered does not move it.
        q.on_event(&ClusterEvent {
            resource: EventResource::AssignedPod,
            action: ActionType::DELETE,
            object: EventObject::None,
        });
        assert_eq!(q.stats().unschedulable, 1);
        q.on_event(&node_added());
        // Attempted once, so it backs off first.
        assert_eq!(q.stats().backoff, 1);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (mut q, clock) = queue();
        q.add(pod("a").arc());
        for expect in [1u64, 2, 4, 8, 10, 10] {
            let p = q.pop().expect("active");
            q.requeue_backoff(&p.pod.uid, "err".into());
            clock.advance(Duration::from_millis(expect * 1000 - 1));
            q.flush();
            assert!(q.pop().is_none(), "still backing off at {expect}s");
            clock.advance(Duration::from_millis(1));
            q.flush();
            assert_eq!(q.stats().active, 1, "due after {expect}s");
        }
    }

    #[test]
    fn event_during_flight_sends_to_backoff() {
        let (mut q, _clock) = queue();
        q.add(pod("a").arc());
        let p = q.pop().unwrap();
        q.on_event(&node_added());
        q.requeue_unschedulable(&p.pod.uid, &["NodeWatcher"], "x".into());
        assert_eq!(q.stats().backoff, 1);
        assert_eq!(q.stats().unschedulable, 0);
    }

    /// Back-off and unschedulable stays as long as a Duration holds: the
    /// deadlines saturate instead of overflowing the clock (they panicked).
    #[test]
    fn longest_settings_do_not_overflow_the_clock() {
        let (mut q, clock) = queue_with(QueueSettings {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            max_unschedulable_stay: Duration::MAX,
        });
        clock.advance(Duration::from_secs(5));
        q.add(pod("a").arc());
        q.add(pod("b").arc());
        let a = q.pop().unwrap();
        let b = q.pop().unwrap();
        q.requeue_backoff(&a.pod.uid, "err".into());
        q.requeue_unschedulable(&b.pod.uid, &["NodeWatcher"], "x".into());
        assert_eq!(q.next_deadline(), Some(Duration::MAX));
        clock.advance(Duration::from_secs(3600));
        q.flush();
        assert_eq!((q.stats().backoff, q.stats().unschedulable), (1, 1));
    }

    #[test]
    fn max_stay_flushes() {
        let (mut q, clock) = queue();
        q.add(pod("a").arc());
        let p = q.pop().unwrap();
        q.requeue_unschedulable(&p.pod.uid, &["NodeWatcher"], "x".into());
        assert_eq!(q.next_deadline(), Some(Duration::from_secs(300)));
        clock.advance(Duration::from_secs(300));
        q.flush();
        assert_eq!(q.stats().active, 1);
    }

    #[test]
    fn activate_pods_moves_waiting_pods_only() {
        let (mut q, _clock) = queue();
        q.add(pod("u").arc());
        q.add(pod("b").arc());
        q.add(pod("g").annotation("hold", "1").arc());
        let u = q.pop().unwrap();
        q.requeue_unschedulable(&u.pod.uid, &["NodeWatcher"], "x".into());
        let b = q.pop().unwrap();
        q.requeue_backoff(&b.pod.uid, "x".into());
        assert_eq!(
            (q.stats().unschedulable, q.stats().backoff, q.stats().gated),
            (1, 1, 1)
        );
        let uids: Vec<Arc<str>> = vec![
            u.pod.uid.clone(),
            b.pod.uid.clone(),
            "uid-g".into(),
            "missing".into(),
        ];
        q.activate_pods(&uids);
        // The gated pod's gate still holds; the others are active at once.
        assert_eq!((q.stats().active, q.stats().gated), (2, 1));
    }

    #[test]
    fn gates_hold_until_update() {
        let (mut q, _clock) = queue();
        q.add(pod("a").annotation("hold", "1").arc());
        assert_eq!(q.stats().gated, 1);
        assert!(q.pop().is_none());
        q.add(pod("a").arc());
        assert_eq!(q.stats().active, 1);
    }

    #[test]
    fn delete_in_flight_drops_on_requeue() {
        let (mut q, _clock) = queue();
        q.add(pod("a").arc());
        let p = q.pop().unwrap();
        q.delete(&p.pod.uid);
        q.requeue_backoff(&p.pod.uid, "x".into());
        assert!(!q.contains(&p.pod.uid));
        assert_eq!(q.stats(), QueueStats::default());
    }

    #[test]
    fn large_queue_stays_ordered() {
        let (mut q, _clock) = queue();
        for i in 0..10_000 {
            q.add(pod(&format!("p{i}")).priority(i % 7).arc());
        }
        let mut last = i32::MAX;
        let mut n = 0;
        while let Some(p) = q.pop() {
            assert!(p.pod.priority <= last);
            last = p.pod.priority;
            n += 1;
        }
        assert_eq!(n, 10_000);
    }
}
