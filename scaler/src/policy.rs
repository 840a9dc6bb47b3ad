//! Scaling policies: how many whole groups a service should have now.
//!
//! - **Target load per group**: enough groups that each role runs at no more
//!   than `target` of the utilisation its latency objective allows
//!   ([`ServiceSpec::groups_for`]).
//! - **Tidal**: a daily profile of the groups needed, learned minute by
//!   minute of the day from history (an exponentially weighted mean across
//!   days); the scaler keeps enough groups for the largest need of the next
//!   `lead` minutes, so capacity is bound and started before the peak.
//! - **To and from zero**: after `idle_minutes` without a request (and no
//!   tidal need ahead) the service goes to zero groups; the first request
//!   makes the reactive need one group again.
//!
//! Scale-down is stabilised: the desired count is the largest wanted over
//! the last `scale_down_window` minutes (as the HPA's downscale window), so
//! a dip does not tear down groups that the next minute needs again.
//! [`RolePolicy`] is the baseline: prefill and decode sized independently,
//! reactive, never below one instance per role (an HPA per role).

use crate::model::{Load, ServiceSpec};
use serde::Serialize;
use std::collections::VecDeque;

/// Minutes in a day.
pub const DAY_MINUTES: usize = 1440;

/// Pre-scaling from a learned daily profile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tidal {
    /// How far ahead the profile is read (at least the time a group takes
    /// from decision to serving).
    pub lead_minutes: u32,
    /// Weight of the newest day in the profile (0 to 1).
    pub learn_rate: f64,
    /// Multiplier on the learned need (headroom for a day above the mean).
    pub margin: f64,
}

/// Which group shapes (prefill : decode instances) the scaler creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Shapes {
    /// Every group at the service's ratio (`prefill_per_group :
    /// decode_per_group`). A LeaderWorkerSet replica is always this.
    Fixed,
    /// Each new group takes the shape `p:d` (both at least 1, `p + d` at
    /// most `max_instances`) that best covers what each role still lacks, so
    /// the groups together follow the traffic's prefill:decode mix instead
    /// of holding the less-loaded role at the service's ratio. Every group
    /// is still placed whole, inside one domain.
    Adaptive {
        /// Most instances in one group.
        max_instances: u32,
        /// Decisions (steps) a new group takes to serve. Until then it
        /// does not let another group go: a serving group is never removed
        /// on the strength of one still starting.
        startup_steps: u32,
    },
}

/// The group scaler's policy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GroupPolicy {
    /// Fraction of each role's objective-bound utilisation a group runs at.
    pub target: f64,
    /// Scale-down stabilisation window, minutes.
    pub scale_down_window: u32,
    /// Tidal pre-scaling, if any.
    pub tidal: Option<Tidal>,
    /// Minutes without a request before scaling to zero (`None`: never;
    /// also needs the service's `min_groups` to be 0).
    pub idle_minutes: Option<u32>,
    /// The group shapes it creates.
    pub shapes: Shapes,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        GroupPolicy {
            target: 0.8,
            scale_down_window: 5,
            tidal: Some(Tidal {
                lead_minutes: 5,
                learn_rate: 0.5,
                margin: 1.1,
            }),
            idle_minutes: Some(10),
            shapes: Shapes::Fixed,
        }
    }
}

/// The groups needed at each minute of the day, learned across days.
#[derive(Clone, Debug, PartialEq)]
pub struct TidalProfile {
    need: Vec<Option<f64>>,
    rate: f64,
}

impl TidalProfile {
    /// An empty profile learning at `rate` per day.
    pub fn new(rate: f64) -> TidalProfile {
        TidalProfile {
            need: vec![None; DAY_MINUTES],
            rate: rate.clamp(0.0, 1.0),
        }
    }

    /// Records that minute `minute` (of any day) needed `groups`.
    pub fn learn(&mut self, minute: u64, groups: f64) {
        let slot = &mut self.need[(minute % DAY_MINUTES as u64) as usize];
        *slot = Some(match *slot {
            None => groups,
            Some(old) => old + self.rate * (groups - old),
        });
    }

    /// The largest learned need over the `lead` minutes after `minute`
    /// (`None` when none of them was seen yet).
    pub fn ahead(&self, minute: u64, lead: u32) -> Option<f64> {
        (1..=u64::from(lead.max(1)))
            .filter_map(|k| self.need[((minute + k) % DAY_MINUTES as u64) as usize])
            .reduce(f64::max)
    }
}

/// Why the scaler wants the count it wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// The current load.
    Load,
    /// The learned profile ahead.
    Tide,
    /// Held by the scale-down window.
    Stabilised,
    /// Idle long enough: zero.
    Idle,
    /// The service's minimum or maximum.
    Bounds,
}

/// A policy's decision for one minute.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Desired {
    /// Groups wanted, at the service's ratio.
    pub groups: u32,
    /// Why.
    pub reason: Reason,
    /// Prefill instances wanted: what [`Shapes::Adaptive`] groups must
    /// cover together (the same load, tide, window and bounds as `groups`,
    /// per role).
    pub prefill: u32,
    /// Decode instances wanted.
    pub decode: u32,
}

/// A group policy with its memory (window, idle time, profile).
#[derive(Clone, Debug)]
pub struct GroupPolicyState {
    policy: GroupPolicy,
    profile: TidalProfile,
    window: VecDeque<u32>,
    /// Per-role profiles and window (prefill, decode), for adaptive shapes.
    role_profiles: [TidalProfile; 2],
    role_window: VecDeque<(u32, u32)>,
    idle_for: u32,
}

impl GroupPolicyState {
    /// A fresh state (nothing learned).
    pub fn new(policy: GroupPolicy) -> GroupPolicyState {
        let rate = policy.tidal.map_or(0.5, |t| t.learn_rate);
        GroupPolicyState {
            profile: TidalProfile::new(rate),
            policy,
            window: VecDeque::new(),
            role_profiles: [TidalProfile::new(rate), TidalProfile::new(rate)],
            role_window: VecDeque::new(),
            idle_for: 0,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &GroupPolicy {
        &self.policy
    }

    /// The profile learned so far.
    pub fn profile(&self) -> &TidalProfile {
        &self.profile
    }

    /// Learns from a past minute's load without deciding (history replay).
    pub fn learn(&mut self, svc: &ServiceSpec, minute: u64, load: &Load) {
        let need = svc.groups_for(load, self.policy.target);
        self.profile.learn(minute, f64::from(need));
        let (p, d) = svc.instances_for(load, self.policy.target);
        self.role_profiles[0].learn(minute, f64::from(p));
        self.role_profiles[1].learn(minute, f64::from(d));
    }

    /// Instances per role wanted: the reactive need, raised to the tide
    /// ahead and held over the scale-down window, as the group count is.
    fn roles_wanted(&mut self, svc: &ServiceSpec, minute: u64, load: &Load) -> (u32, u32) {
        let p = &self.policy;
        let (rp, rd) = svc.instances_for(load, p.target);
        let tide = |prof: &TidalProfile| {
            p.tidal
                .and_then(|t| {
                    prof.ahead(minute, t.lead_minutes)
                        .map(|n| (n * t.margin).ceil().min(f64::from(u32::MAX)) as u32)
                })
                .unwrap_or(0)
        };
        let want = (
            rp.max(tide(&self.role_profiles[0])),
            rd.max(tide(&self.role_profiles[1])),
        );
        self.role_profiles[0].learn(minute, f64::from(rp));
        self.role_profiles[1].learn(minute, f64::from(rd));
        self.role_window.push_back(want);
        while self.role_window.len() > p.scale_down_window.max(1) as usize {
            self.role_window.pop_front();
        }
        (
            self.role_window.iter().map(|w| w.0).max().unwrap_or(0),
            self.role_window.iter().map(|w| w.1).max().unwrap_or(0),
        )
    }

    /// The groups wanted at `minute` under `load`; learns the minute too.
    pub fn desired(&mut self, svc: &ServiceSpec, minute: u64, load: &Load) -> Desired {
        let (role_p, role_d) = self.roles_wanted(svc, minute, load);
        let p = &self.policy;
        let reactive = svc.groups_for(load, p.target);
        let tide = p.tidal.and_then(|t| {
            self.profile
                .ahead(minute, t.lead_minutes)
                .map(|n| (n * t.margin).ceil().min(f64::from(u32::MAX)) as u32)
        });
        self.profile.learn(minute, f64::from(reactive));
        if load.is_idle() {
            self.idle_for = self.idle_for.saturating_add(1);
        } else {
            self.idle_for = 0;
        }
        let (mut want, mut reason) = match tide {
            Some(t) if t > reactive => (t, Reason::Tide),
            _ => (reactive, Reason::Load),
        };
        self.window.push_back(want);
        while self.window.len() > p.scale_down_window.max(1) as usize {
            self.window.pop_front();
        }
        let held = self.window.iter().copied().max().unwrap_or(0);
        if held > want {
            want = held;
            reason = Reason::Stabilised;
        }
        let to_zero = svc.min_groups == 0
            && p.idle_minutes.is_some_and(|m| self.idle_for >= m)
            && tide.unwrap_or(0) == 0;
        if to_zero {
            self.window.clear();
            self.role_window.clear();
            return Desired {
                groups: 0,
                reason: Reason::Idle,
                prefill: 0,
                decode: 0,
            };
        }
        // Without scaling to zero, one group always stays.
        let floor = if p.idle_minutes.is_some() {
            svc.min_groups
        } else {
            svc.min_groups.max(1)
        };
        let clamped = want.clamp(floor, svc.max_groups.max(floor));
        if clamped != want {
            reason = Reason::Bounds;
        }
        // Per role: the same floor, and at most what `max_groups` groups at
        // the service's ratio hold in all (the bound is on capacity, whatever
        // the shapes).
        let cap = svc
            .max_groups
            .max(floor)
            .saturating_mul(svc.prefill_per_group + svc.decode_per_group);
        Desired {
            groups: clamped,
            reason,
            prefill: role_p.clamp(floor.saturating_mul(svc.prefill_per_group), cap),
            decode: role_d.clamp(floor.saturating_mul(svc.decode_per_group), cap),
        }
    }
}

/// The per-role baseline: prefill and decode each sized for the load,
/// reactively, with a scale-down window, at least one instance per role.
#[derive(Clone, Debug)]
pub struct RolePolicy {
    /// Target fraction of each role's objective-bound utilisation.
    pub target: f64,
    /// Scale-down window, minutes.
    pub scale_down_window: u32,
    window: VecDeque<(u32, u32)>,
}

impl RolePolicy {
    /// An HPA-like policy per role.
    pub fn new(target: f64, scale_down_window: u32) -> RolePolicy {
        RolePolicy {
            target,
            scale_down_window,
            window: VecDeque::new(),
        }
    }

    /// Prefill and decode instances wanted under `load`.
    pub fn desired(&mut self, svc: &ServiceSpec, load: &Load) -> (u32, u32) {
        let (p, d) = svc.instances_for(load, self.target);
        self.window.push_back((p.max(1), d.max(1)));
        while self.window.len() > self.scale_down_window.max(1) as usize {
            self.window.pop_front();
        }
        let cap = |n: u32, per: u32| n.min(svc.max_groups.saturating_mul(per));
        let hp = self.window.iter().map(|x| x.0).max().unwrap_or(1);
        let hd = self.window.iter().map(|x| x.1).max().unwrap_or(1);
        (
            cap(hp, svc.prefill_per_group),
            cap(hd, svc.decode_per_group),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::model::{Objective, ServiceSpec};

    /// A 1 prefill : 2 decode service of 8-accelerator instances.
    pub(crate) fn svc() -> ServiceSpec {
        ServiceSpec {
            name: "llm".into(),
            prefill_per_group: 1,
            decode_per_group: 2,
            prefill_tokens_per_s: 20_000.0,
            decode_tokens_per_s: 2_500.0,
            base_tpot_s: 0.025,
            prefill_accelerators: 8,
            decode_accelerators: 8,
            objective: Objective {
                ttft_s: 0.5,
                tpot_s: 0.1,
            },
            min_groups: 0,
            max_groups: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::tests_support::svc;

    fn load(rps: f64) -> Load {
        Load {
            requests_per_s: rps,
            prompt_tokens_per_s: rps * 1000.0,
            output_tokens_per_s: rps * 250.0,
        }
    }

    #[test]
    fn tide_pre_scales_before_a_peak_seen_yesterday() {
        let s = svc();
        let mut st = GroupPolicyState::new(GroupPolicy::default());
        // Yesterday: quiet until minute 600, then a peak.
        for m in 0..DAY_MINUTES as u64 {
            let l = if (600..700).contains(&m) {
                load(100.0)
            } else {
                load(5.0)
            };
            st.learn(&s, m, &l);
        }
        let peak = s.groups_for(&load(100.0), 0.8);
        // Today at minute 597, still quiet: the tide asks for the peak.
        let d = st.desired(&s, DAY_MINUTES as u64 + 597, &load(5.0));
        assert_eq!(d.reason, Reason::Tide);
        assert!(d.groups >= peak, "{d:?} < {peak}");
        // Without the tide, only the current load counts.
        let mut plain = GroupPolicyState::new(GroupPolicy {
            tidal: None,
            ..GroupPolicy::default()
        });
        let d = plain.desired(&s, 597, &load(5.0));
        assert!(d.groups < peak);
    }

    #[test]
    fn scales_to_zero_after_idle_and_back_on_the_first_request() {
        let s = svc();
        let mut st = GroupPolicyState::new(GroupPolicy {
            tidal: None,
            idle_minutes: Some(3),
            ..GroupPolicy::default()
        });
        assert!(st.desired(&s, 0, &load(10.0)).groups >= 1);
        let d1 = st.desired(&s, 1, &Load::default());
        assert!(d1.groups >= 1, "held by the window: {d1:?}");
        st.desired(&s, 2, &Load::default());
        let d = st.desired(&s, 3, &Load::default());
        assert_eq!(
            d,
            Desired {
                groups: 0,
                reason: Reason::Idle,
                prefill: 0,
                decode: 0,
            }
        );
        let d = st.desired(&s, 4, &load(0.1));
        assert_eq!(d.groups, 1, "{d:?}");
        // A service with minGroups 1 never goes to zero.
        let mut one = svc();
        one.min_groups = 1;
        let mut st = GroupPolicyState::new(GroupPolicy {
            idle_minutes: Some(1),
            tidal: None,
            ..GroupPolicy::default()
        });
        for m in 0..5 {
            assert_eq!(st.desired(&one, m, &Load::default()).groups, 1);
        }
    }

    #[test]
    fn role_policy_keeps_one_per_role_and_sizes_roles_apart() {
        let s = svc();
        let mut r = RolePolicy::new(0.8, 1);
        assert_eq!(r.desired(&s, &Load::default()), (1, 1));
        let (p, d) = r.desired(&s, &load(100.0));
        assert!(s.meets(&load(100.0), p, d));
        assert_ne!(p * 2, d, "roles are not kept at the group ratio");
    }

    proptest::proptest! {
        /// Whatever the load sequence, the decision stays within the
        /// service's bounds, meets the objective when the bound allows, and
        /// never drops below the last `window` minutes' reactive need.
        #[test]
        fn decisions_respect_bounds_and_load(loads in proptest::collection::vec(0.0f64..400.0, 1..60)) {
            let s = svc();
            let mut st = GroupPolicyState::new(GroupPolicy::default());
            for (m, rps) in loads.iter().enumerate() {
                let l = load(*rps);
                let d = st.desired(&s, m as u64, &l);
                proptest::prop_assert!(d.groups <= s.max_groups);
                let need = s.groups_for(&l, 0.8);
                if need <= s.max_groups {
                    proptest::prop_assert!(d.groups >= need, "{d:?} < {need} at {rps}");
                    proptest::prop_assert!(s.meets(&l, d.groups * s.prefill_per_group, d.groups * s.decode_per_group));
                }
            }
        }
    }
}
