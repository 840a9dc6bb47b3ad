//! [`BindAudit`] watches the run as it happens. The simulated cluster tells
//! it of every bind and deletion (under the cluster's lock, so in the order
//! they happen) and the run loop of every scheduling cycle. At each bind of a
//! member of group G it checks that at least `minMember` members of G are
//! *committed* at that instant: bound, or assumed and past Permit (allowed
//! at Permit and still binding, or placed by a cycle whose Permit let them
//! through at once). A bind that falls short is a violation: the group was
//! partly bound, if only for a moment. At the end, no group may have
//! `0 < bound < minMember`. It also keeps, per group, the scheduling-cycle
//! time of its members' attempts and the virtual time of their binds, for
//! the time it took to place the group.
//!
//! Invariant of the check: a bind can only race ahead of the end of the
//! cycle that is running at that moment (cycles run one at a time and each
//! is recorded before the next begins). The Permit that lets a group through
//! runs inside a cycle and allows the waiting members one by one, so a member
//! may bind before its siblings' allowances are all delivered: a bind that
//! looks short while a cycle runs is decided when that cycle is recorded, by
//! the members committed at its end. The number of members allowed at Permit
//! is counted once per cycle of the group and then kept, so the check costs
//! O(members) per cycle of the group, not per bind. Approximations: a member
//! whose binding failed without the cluster seeing it (a PreBind error of a
//! plugin) still counts as committed until its next cycle is recorded; a
//! member allowed outside a cycle of its group (no plugin here does that) is
//! seen only at the group's next cycle, which can only make the check
//! stricter.

use super::stamp::group_key;
use crate::cluster::BindObserver;
use crate::scenario::PodArrival;
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use strata_plugins::pod_group::PodGroupSpec;
use strata_scheduler::clock::Clock;
use strata_scheduler::framework::WaitingPods;
use strata_scheduler::intern::Sym;
use strata_scheduler::model::PodInfo;

/// How a scheduling cycle ended, as the audit needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycleMark {
    /// Assumed and allowed at Permit in the cycle: its binding runs now.
    Passed,
    /// Assumed and held at Permit.
    Waiting,
    /// Not placed (unschedulable or an error).
    NotPlaced,
}

/// What the audit knows of one member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum MemberState {
    #[default]
    Idle,
    /// Passed Permit in its cycle, not bound yet.
    Direct,
    /// Held at Permit (allowed or not: [`WaitingPods`] knows).
    Waiting,
    Bound,
}

struct AuditGroup {
    name: String,
    min_member: u32,
    /// Virtual time the `min_member`-th member arrived (`None`: never).
    schedulable_at: Option<Duration>,
    bound: u32,
    /// Members in [`MemberState::Direct`].
    direct: u32,
    /// Members in [`MemberState::Waiting`].
    waiting: FxHashSet<Arc<str>>,
    /// How many of `waiting` were allowed at Permit, as last counted and
    /// kept since (`None`: count again). See [`BindAudit`]'s `bound`.
    allowed: Option<u32>,
    /// Scheduling-cycle time of every attempt of every member.
    cycle_time: Duration,
    /// Virtual time of the latest bind of a member.
    last_bind: Duration,
}

/// A bind that looked short while a cycle was running; decided when that
/// cycle's outcome is recorded.
struct Pending {
    cycle: u64,
    group: usize,
    pod: Arc<str>,
    committed: u32,
    at: Duration,
}

#[derive(Default)]
struct AuditState {
    /// Member uid -> (group index, state).
    members: FxHashMap<Arc<str>, (usize, MemberState)>,
    groups: Vec<AuditGroup>,
    /// The last cycle whose outcome is known (recorded, or found empty).
    recorded: u64,
    pending: Vec<Pending>,
    violations: Vec<Violation>,
    binds_checked: u64,
}

/// A bind of a group member while fewer than `minMember` members were
/// committed (or, with `at_end`, a group left with `0 < bound < minMember`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Violation {
    /// `namespace/name` of the group.
    pub group: String,
    /// The member bound (empty for the end-of-run check).
    pub pod: String,
    /// Members committed at that instant (bound at the end).
    pub committed: u32,
    /// The group's `minMember`.
    pub min_member: u32,
    /// Virtual time of the bind (or of the end of the run), in seconds.
    pub at_seconds: f64,
    /// Found by the end-of-run check rather than at a bind.
    pub at_end: bool,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at_end {
            write!(
                f,
                "{}: {} of minMember {} bound at the end",
                self.group, self.committed, self.min_member
            )
        } else {
            write!(
                f,
                "{}: {} bound at {:.3}s with {} of minMember {} committed",
                self.group, self.pod, self.at_seconds, self.committed, self.min_member
            )
        }
    }
}

/// Checks "never partly bound" at every bind and keeps each group's
/// time to place. See the module docs for what counts as committed.
pub struct BindAudit {
    waiting: WaitingPods,
    clock: Arc<dyn Clock>,
    /// Scheduling cycles begun.
    cycle: AtomicU64,
    state: Mutex<AuditState>,
}

/// Time to place the groups that reached `minMember` bound.
#[derive(Clone, Debug, Default)]
pub struct GroupTimes {
    /// Per group, the scheduling-cycle time of all its members' attempts.
    pub scheduler: Vec<Duration>,
    /// Per group, virtual time from its `minMember`-th arrival to the last
    /// bind of a member.
    pub latency: Vec<Duration>,
}

impl BindAudit {
    /// An audit of the groups among `arrivals`. A group's `minMember` is
    /// its `strata.io/min-member` annotation, else its member count.
    pub fn new(arrivals: &[PodArrival], waiting: WaitingPods, clock: Arc<dyn Clock>) -> BindAudit {
        let mut st = AuditState::default();
        let mut index: FxHashMap<String, usize> = FxHashMap::default();
        let mut declared: Vec<Option<u32>> = Vec::new();
        let mut arrived: Vec<Vec<Duration>> = Vec::new();
        for a in arrivals {
            let Some(key) = group_key(&a.pod) else {
                continue;
            };
            let gi = *index.entry(key.clone()).or_insert_with(|| {
                st.groups.push(AuditGroup {
                    name: key,
                    min_member: 0,
                    schedulable_at: None,
                    bound: 0,
                    direct: 0,
                    waiting: FxHashSet::default(),
                    allowed: None,
                    cycle_time: Duration::ZERO,
                    last_bind: Duration::ZERO,
                });
                declared.push(None);
                arrived.push(Vec::new());
                st.groups.len() - 1
            });
            if declared[gi].is_none()
                && let Some(Ok(spec)) = PodGroupSpec::from_annotations(&a.pod.annotations)
            {
                declared[gi] = Some(spec.min_member);
            }
            arrived[gi].push(a.at);
            st.members
                .insert(a.pod.uid.clone(), (gi, MemberState::Idle));
        }
        for (gi, g) in st.groups.iter_mut().enumerate() {
            let times = &mut arrived[gi];
            times.sort_unstable();
            g.min_member = declared[gi].unwrap_or(times.len() as u32).max(1);
            g.schedulable_at = times.get(g.min_member as usize - 1).copied();
        }
        BindAudit {
            waiting,
            clock,
            cycle: AtomicU64::new(0),
            state: Mutex::new(st),
        }
    }

    /// A scheduling cycle is about to run.
    pub fn begin_cycle(&self) {
        self.cycle.fetch_add(1, Ordering::SeqCst);
    }

    /// The cycle begun last ran no pod.
    pub fn no_cycle(&self) {
        let b = self.cycle.load(Ordering::SeqCst);
        let mut st = self.state.lock();
        st.recorded = b;
        self.decide(&mut st, b);
    }

    /// The cycle begun last placed (or not) `uid`, taking `duration`.
    pub fn record(&self, uid: &str, mark: CycleMark, duration: Duration) {
        let b = self.cycle.load(Ordering::SeqCst);
        let mut st = self.state.lock();
        let st = &mut *st;
        st.recorded = b;
        if let Some(e) = st.members.get_mut(uid) {
            let (gi, m) = *e;
            // A bind can race ahead of its own cycle's record: keep Bound.
            let new = match (m, mark) {
                (MemberState::Bound, _) => MemberState::Bound,
                (_, CycleMark::Passed) => MemberState::Direct,
                (_, CycleMark::Waiting) => MemberState::Waiting,
                (_, CycleMark::NotPlaced) => MemberState::Idle,
            };
            e.1 = new;
            let uid = st
                .members
                .get_key_value(uid)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| Arc::from(uid));
            let g = &mut st.groups[gi];
            g.cycle_time += duration;
            g.allowed = None;
            leave(g, &uid, m);
            enter(g, &uid, new);
        }
        self.decide(st, b);
    }

    /// Members of `g` committed now: bound, past Permit in their cycle, or
    /// allowed at Permit (counted up to `minMember`). An allowed member
    /// stays allowed until its binding finishes: it is then bound (counted)
    /// or failed (deleted or refused, which the cluster reports). So the
    /// allowed count, once taken, only drops by the allowed members that
    /// bind until a cycle of the group (which may allow more) or a deletion
    /// calls for a new count; a count cut short at `need` stays enough, as
    /// bound + allowed does not change.
    fn committed_now(&self, g: &mut AuditGroup) -> u32 {
        let mut committed = g.bound + g.direct;
        if committed < g.min_member {
            let allowed = match g.allowed {
                Some(a) => a,
                None => {
                    let need = (g.min_member - committed) as usize;
                    let a = self
                        .waiting
                        .count_allowed(g.waiting.iter().map(|u| &**u), need)
                        as u32;
                    g.allowed = Some(a);
                    a
                }
            };
            committed += allowed;
        }
        committed
    }

    /// Decides the binds that raced cycle `b`, now that it has ended: by the
    /// members committed at its end (its Permit, which may have let the
    /// group through, has run in full).
    fn decide(&self, st: &mut AuditState, b: u64) {
        if st.pending.is_empty() {
            return;
        }
        let (now, later): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut st.pending)
            .into_iter()
            .partition(|p| p.cycle <= b);
        st.pending = later;
        for p in now {
            let g = &mut st.groups[p.group];
            let committed = self.committed_now(g).max(p.committed);
            if committed < g.min_member {
                let v = Violation {
                    group: g.name.clone(),
                    pod: p.pod.to_string(),
                    committed,
                    min_member: g.min_member,
                    at_seconds: p.at.as_secs_f64(),
                    at_end: false,
                };
                st.violations.push(v);
            }
        }
    }

    /// Binds checked (members of groups only).
    pub fn binds_checked(&self) -> u64 {
        self.state.lock().binds_checked
    }

    /// Every violation so far, then the end-of-run check on the groups as
    /// they stand now (`0 < bound < minMember`). Binds still undecided
    /// (their cycle never recorded) count as violations.
    pub fn violations(&self) -> Vec<Violation> {
        let st = self.state.lock();
        let end = self.clock.now().as_secs_f64();
        let mut out = st.violations.clone();
        for p in &st.pending {
            let g = &st.groups[p.group];
            out.push(Violation {
                group: g.name.clone(),
                pod: p.pod.to_string(),
                committed: p.committed,
                min_member: g.min_member,
                at_seconds: p.at.as_secs_f64(),
                at_end: false,
            });
        }
        for g in &st.groups {
            if g.bound > 0 && g.bound < g.min_member {
                out.push(Violation {
                    group: g.name.clone(),
                    pod: String::new(),
                    committed: g.bound,
                    min_member: g.min_member,
                    at_seconds: end,
                    at_end: true,
                });
            }
        }
        out
    }

    /// Time to place every group that has `minMember` members bound now.
    pub fn group_times(&self) -> GroupTimes {
        let st = self.state.lock();
        let mut t = GroupTimes::default();
        for g in &st.groups {
            if g.bound < g.min_member {
                continue;
            }
            t.scheduler.push(g.cycle_time);
            if let Some(at) = g.schedulable_at {
                t.latency.push(g.last_bind.saturating_sub(at));
            }
        }
        t
    }
}

fn leave(g: &mut AuditGroup, uid: &Arc<str>, m: MemberState) {
    match m {
        MemberState::Direct => g.direct = g.direct.saturating_sub(1),
        MemberState::Waiting => {
            g.waiting.remove(uid);
        }
        MemberState::Bound => g.bound = g.bound.saturating_sub(1),
        MemberState::Idle => {}
    }
}

fn enter(g: &mut AuditGroup, uid: &Arc<str>, m: MemberState) {
    match m {
        MemberState::Direct => g.direct += 1,
        MemberState::Waiting => {
            g.waiting.insert(uid.clone());
        }
        MemberState::Bound => g.bound += 1,
        MemberState::Idle => {}
    }
}

impl BindObserver for BindAudit {
    fn bound(&self, pod: &PodInfo, _node: Sym) {
        let b = self.cycle.load(Ordering::SeqCst);
        let now = self.clock.now();
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(e) = st.members.get_mut(&pod.uid) else {
            return;
        };
        st.binds_checked += 1;
        let (gi, m) = *e;
        e.1 = MemberState::Bound;
        let g = &mut st.groups[gi];
        leave(g, &pod.uid, m);
        enter(g, &pod.uid, MemberState::Bound);
        g.last_bind = g.last_bind.max(now);
        if m == MemberState::Waiting
            && let Some(a) = &mut g.allowed
        {
            *a = a.saturating_sub(1);
        }
        let committed = self.committed_now(g);
        if committed >= g.min_member {
            return;
        }
        if st.recorded >= b {
            let v = Violation {
                group: g.name.clone(),
                pod: pod.uid.to_string(),
                committed,
                min_member: g.min_member,
                at_seconds: now.as_secs_f64(),
                at_end: false,
            };
            st.violations.push(v);
        } else {
            st.pending.push(Pending {
                cycle: b,
                group: gi,
                pod: pod.uid.clone(),
                committed,
                at: now,
            });
        }
    }

    fn deleted(&self, pod: &PodInfo) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(e) = st.members.get_mut(&pod.uid) else {
            return;
        };
        let (gi, m) = *e;
        e.1 = MemberState::Idle;
        let g = &mut st.groups[gi];
        leave(g, &pod.uid, m);
        g.allowed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::GROUP_LABEL;
    use strata_scheduler::clock::ManualClock;
    use strata_scheduler::testing;

    /// Members `{g}-0..n` of group `g` with minMember `min`, arriving at
    /// second `i` each; plus one pod outside any group.
    fn arrivals(g: &str, n: u32, min: u32) -> Vec<PodArrival> {
        let mut out: Vec<PodArrival> = (0..n)
            .map(|i| PodArrival {
                at: Duration::from_secs(u64::from(i)),
                workload: 0,
                pod: Arc::new(
                    testing::pod(&format!("{g}-{i}"))
                        .label(GROUP_LABEL, g)
                        .annotation("strata.io/min-member", &min.to_string())
                        .build(),
                ),
            })
            .collect();
        out.push(PodArrival {
            at: Duration::ZERO,
            workload: 1,
            pod: Arc::new(testing::pod("loner").build()),
        });
        out
    }

    fn audit(arr: &[PodArrival]) -> (BindAudit, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (
            BindAudit::new(arr, WaitingPods::default(), clock.clone()),
            clock,
        )
    }

    fn uid(arr: &[PodArrival], i: usize) -> Arc<str> {
        arr[i].pod.uid.clone()
    }

    fn cycle(a: &BindAudit, arr: &[PodArrival], i: usize, mark: CycleMark) {
        a.begin_cycle();
        a.record(&uid(arr, i), mark, Duration::from_millis(2));
    }

    fn bind(a: &BindAudit, arr: &[PodArrival], i: usize) {
        a.bound(&arr[i].pod, Sym::new("n1"));
    }

    #[test]
    fn a_member_bound_alone_is_flagged_at_once_and_at_the_end() {
        let arr = arrivals("g", 3, 3);
        let (a, _) = audit(&arr);
        cycle(&a, &arr, 0, CycleMark::Passed);
        bind(&a, &arr, 0);
        // Pods outside groups are not checked.
        a.bound(&arr[3].pod, Sym::new("n1"));
        let v = a.violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(
            (v[0].committed, v[0].min_member, v[0].at_end),
            (1, 3, false)
        );
        assert_eq!(v[0].group, format!("{}/g", arr[0].pod.namespace.as_str()));
        assert!(v[1].at_end);
        assert_eq!(a.binds_checked(), 1);
        assert!(a.group_times().scheduler.is_empty(), "not placed");
    }

    #[test]
    fn binds_racing_the_cycle_that_completes_the_group_are_fine() {
        let arr = arrivals("g", 3, 3);
        let (a, clock) = audit(&arr);
        clock.advance_to(Duration::from_secs(5));
        cycle(&a, &arr, 0, CycleMark::Passed);
        cycle(&a, &arr, 1, CycleMark::Passed);
        // Cycle 3 places member 2; 0 and 1 bind before it is recorded.
        a.begin_cycle();
        bind(&a, &arr, 0);
        bind(&a, &arr, 1);
        a.record(&uid(&arr, 2), CycleMark::Passed, Duration::from_millis(2));
        clock.advance_to(Duration::from_secs(7));
        bind(&a, &arr, 2);
        a.begin_cycle();
        a.no_cycle();
        assert_eq!(a.violations(), vec![]);
        let t = a.group_times();
        assert_eq!(t.scheduler, vec![Duration::from_millis(6)]);
        // Schedulable when member 2 arrived (second 2); last bind at 7.
        assert_eq!(t.latency, vec![Duration::from_secs(5)]);
    }

    #[test]
    fn the_completing_member_binding_before_its_own_record_counts_for_earlier_binds() {
        let arr = arrivals("g", 3, 3);
        let (a, _) = audit(&arr);
        cycle(&a, &arr, 0, CycleMark::Passed);
        cycle(&a, &arr, 1, CycleMark::Passed);
        a.begin_cycle();
        bind(&a, &arr, 0);
        bind(&a, &arr, 2);
        bind(&a, &arr, 1);
        a.record(&uid(&arr, 2), CycleMark::Passed, Duration::ZERO);
        assert_eq!(a.violations(), vec![]);
    }

    #[test]
    fn binds_racing_a_cycle_that_fails_are_flagged_when_it_is_recorded() {
        let arr = arrivals("g", 3, 3);
        let (a, _) = audit(&arr);
        cycle(&a, &arr, 0, CycleMark::Passed);
        cycle(&a, &arr, 1, CycleMark::Passed);
        a.begin_cycle();
        bind(&a, &arr, 0);
        assert!(
            a.violations().len() == 2,
            "undecided binds count until decided"
        );
        a.record(&uid(&arr, 2), CycleMark::NotPlaced, Duration::ZERO);
        bind(&a, &arr, 1);
        let v: Vec<Violation> = a.violations().into_iter().filter(|v| !v.at_end).collect();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].committed, 2);
    }

    #[test]
    fn members_held_at_permit_do_not_count_and_deletions_are_seen_at_the_end() {
        let arr = arrivals("g", 2, 2);
        let (a, _) = audit(&arr);
        // Member 0 waits at Permit (not allowed: the waiting list does not
        // have it), member 1 passes: binding 1 is short.
        cycle(&a, &arr, 0, CycleMark::Waiting);
        cycle(&a, &arr, 1, CycleMark::Passed);
        bind(&a, &arr, 1);
        assert_eq!(a.violations().iter().filter(|v| !v.at_end).count(), 1);
        // Both bound, then one deleted: partly bound at the end.
        let (a, _) = audit(&arr);
        cycle(&a, &arr, 0, CycleMark::Passed);
        cycle(&a, &arr, 1, CycleMark::Passed);
        bind(&a, &arr, 0);
        bind(&a, &arr, 1);
        assert_eq!(a.violations(), vec![]);
        a.deleted(&arr[0].pod);
        let v = a.violations();
        assert_eq!(v.len(), 1);
        assert!(v[0].at_end && v[0].committed == 1);
    }
}
