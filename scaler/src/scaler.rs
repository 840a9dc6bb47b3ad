//! The group scaler: a policy's count turned into whole groups, through
//! whoever can place them ([`GroupPlacer`]).
//!
//! Scale-up asks the placer — the scheduler — where one more group would go
//! before creating it, one group at a time, and stops at the first that
//! could not be placed whole: the service is never scaled to a group that
//! would be partly bound. Scale-down removes the groups whose departure
//! frees the most whole domains: each removal takes a group from the domain
//! that would then hold the fewest accelerators in use (an emptied domain
//! first), so what is left packs into fewer super-nodes and a freed
//! super-node can take a large group of any service.

use crate::model::{Load, ServiceSpec};
use crate::policy::{Desired, GroupPolicy, GroupPolicyState, Shapes};
use serde::Serialize;
use std::collections::BTreeMap;

/// One placed group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// Its name.
    pub id: String,
    /// The domain (super-node) holding it.
    pub domain: String,
    /// Accelerators it holds.
    pub accelerators: u32,
    /// Its prefill instances.
    pub prefill: u32,
    /// Its decode instances.
    pub decode: u32,
}

/// What a placer could not do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The scheduler says one more group does not fit whole now.
    #[error("no room for one more whole group of {service}: {reason}")]
    NoRoom {
        /// Service.
        service: String,
        /// The scheduler's reason.
        reason: String,
    },
    /// The group was created but not bound whole.
    #[error("group {group} was not bound whole: {reason}")]
    NotBound {
        /// Group.
        group: String,
        /// Why.
        reason: String,
    },
}

/// Places and removes whole groups; backed by the scheduler.
pub trait GroupPlacer {
    /// Where one more group of `svc` would go (its domain), without
    /// reserving anything.
    fn where_would_one_go(&mut self, svc: &ServiceSpec) -> Result<String, PlaceError>;
    /// Creates one group and returns it once bound whole.
    fn add_group(&mut self, svc: &ServiceSpec) -> Result<GroupInfo, PlaceError>;
    /// The service's groups.
    fn groups(&self, svc: &ServiceSpec) -> Vec<GroupInfo>;
    /// Accelerators in use per domain (every pod, any service).
    fn domain_used(&self) -> BTreeMap<String, u64>;
    /// Deletes one group.
    fn remove_group(&mut self, svc: &ServiceSpec, id: &str);
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Step {
    /// Groups wanted.
    pub desired: u32,
    /// Groups before the step.
    pub before: u32,
    /// Groups added (bound whole).
    pub added: Vec<GroupInfo>,
    /// Groups removed.
    pub removed: Vec<String>,
    /// Groups wanted but refused by the scheduler (no room whole).
    pub refused: u32,
    /// The refusal, if any.
    pub refusal: Option<String>,
}

/// Chooses `k` groups to remove so the most domains are emptied: each pick
/// is the group whose domain would then hold the fewest accelerators in use
/// (ties: the newest group, i.e. the last listed).
pub fn pick_removals(groups: &[GroupInfo], used: &BTreeMap<String, u64>, k: usize) -> Vec<String> {
    let mut used = used.clone();
    let mut left: Vec<&GroupInfo> = groups.iter().collect();
    let mut out = Vec::new();
    while out.len() < k && !left.is_empty() {
        let (i, _) = left
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let u = used.get(&g.domain).copied().unwrap_or(0);
                (i, u.saturating_sub(u64::from(g.accelerators)))
            })
            .min_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .expect("not empty");
        let g = left.remove(i);
        if let Some(u) = used.get_mut(&g.domain) {
            *u = u.saturating_sub(u64::from(g.accelerators));
        }
        out.push(g.id.clone());
    }
    out
}

/// Prefill and decode instances held by `groups`.
fn held(groups: &[GroupInfo]) -> (u32, u32) {
    groups
        .iter()
        .fold((0, 0), |a, g| (a.0 + g.prefill, a.1 + g.decode))
}

/// Every shape `p:d` with both at least 1 and `p + d <= max_instances`
/// (at least `1:1`).
fn shapes_up_to(max_instances: u32) -> Vec<(u32, u32)> {
    let max = max_instances.max(2);
    (1..max)
        .flat_map(|p| (1..=max - p).map(move |d| (p, d)))
        .collect()
}

/// `shapes` in the order scale-up tries them for a shortfall of `dp`
/// prefill and `dd` decode instances: the largest share of the group's
/// instances that cover the shortfall first, then the shape whose
/// prefill share is closest to the shortfall's, then the most instances
/// covering it, then the smaller group.
fn shapes_by_use(shapes: &[(u32, u32)], dp: u32, dd: u32) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = shapes.to_vec();
    let useful = |&(p, d): &(u32, u32)| u64::from(p.min(dp) + d.min(dd));
    let size = |&(p, d): &(u32, u32)| u64::from(p + d);
    let total = u64::from(dp + dd);
    // |p/size - dp/total| * size * total, exact in integers.
    let off = |s: &(u32, u32)| (u64::from(s.0) * total).abs_diff(u64::from(dp) * size(s));
    // Fractions compared as cross products, exactly.
    v.sort_by(|a, b| {
        (useful(b) * size(a))
            .cmp(&(useful(a) * size(b)))
            .then((off(a) * size(b)).cmp(&(off(b) * size(a))))
            .then(useful(b).cmp(&useful(a)))
            .then(size(a).cmp(&size(b)))
            .then(a.cmp(b))
    });
    v
}

/// One service's group scaler.
#[derive(Clone, Debug)]
pub struct GroupScaler {
    /// The service.
    pub svc: ServiceSpec,
    state: GroupPolicyState,
    /// Adaptive shapes: the step each group this scaler added was added at.
    born: BTreeMap<String, u64>,
    steps: u64,
}

impl GroupScaler {
    /// A scaler for `svc` under `policy`.
    pub fn new(svc: ServiceSpec, policy: GroupPolicy) -> GroupScaler {
        GroupScaler {
            svc,
            state: GroupPolicyState::new(policy),
            born: BTreeMap::new(),
            steps: 0,
        }
    }

    /// Learns from history (a past day's minutes) without acting.
    pub fn learn(&mut self, minute: u64, load: &Load) {
        self.state.learn(&self.svc, minute, load);
    }

    /// What the policy wants at `minute` (and learns the minute).
    pub fn desired(&mut self, minute: u64, load: &Load) -> Desired {
        self.state.desired(&self.svc, minute, load)
    }

    /// Decides for `minute` and acts through `placer`.
    pub fn step(&mut self, minute: u64, load: &Load, placer: &mut dyn GroupPlacer) -> Step {
        let want = self.desired(minute, load);
        self.act(&want, placer)
    }

    /// Acts on a decision: whole groups at the service's ratio
    /// ([`Shapes::Fixed`]), or groups shaped to cover each role's need
    /// ([`Shapes::Adaptive`]).
    pub fn act(&mut self, want: &Desired, placer: &mut dyn GroupPlacer) -> Step {
        match self.state.policy().shapes {
            Shapes::Fixed => self.reconcile(want.groups, placer),
            Shapes::Adaptive {
                max_instances,
                startup_steps,
            } => self.reconcile_roles(
                want.prefill,
                want.decode,
                max_instances,
                startup_steps,
                placer,
            ),
        }
    }

    /// Brings the service to `want` whole groups.
    pub fn reconcile(&mut self, want: u32, placer: &mut dyn GroupPlacer) -> Step {
        let groups = placer.groups(&self.svc);
        let have = groups.len() as u32;
        let mut step = Step {
            desired: want,
            before: have,
            ..Step::default()
        };
        if want > have {
            for _ in have..want {
                let placed = placer
                    .where_would_one_go(&self.svc)
                    .and_then(|_| placer.add_group(&self.svc));
                match placed {
                    Ok(g) => step.added.push(g),
                    Err(e) => {
                        step.refused = want - have - step.added.len() as u32;
                        step.refusal = Some(e.to_string());
                        break;
                    }
                }
            }
        } else if want < have {
            let used = placer.domain_used();
            for id in pick_removals(&groups, &used, (have - want) as usize) {
                placer.remove_group(&self.svc, &id);
                step.removed.push(id);
            }
        }
        step
    }

    /// Brings the service's groups to at least `prefill` and `decode`
    /// instances in all, each group of a shape `p:d` with `p + d <=
    /// max_instances`; each call is one step (decision) of the scaler.
    ///
    /// - Scale-up adds one group at a time, of the shape that covers the
    ///   largest share of what the roles still lack (then the shape closest
    ///   to the shortfall's mix, then the most of it, then the smaller
    ///   group); the scheduler's what-if is asked first, and when it has no
    ///   room for that shape the next-best shapes are asked, so a smaller
    ///   group that fits whole is taken before giving up.
    /// - Scale-down removes only groups whose departure leaves both roles
    ///   covered by serving groups (a group added less than
    ///   `startup_steps` steps ago does not count yet), each time the one
    ///   leaving its domain with the fewest accelerators in use (as
    ///   [`pick_removals`]).
    /// - When the mix has moved so that no group can go but one could be
    ///   replaced by a smaller one covering what its departure would leave
    ///   short, that smaller group is added (one replacement at a time,
    ///   none while a group is starting); the old one goes in a later step,
    ///   once the new one serves.
    pub fn reconcile_roles(
        &mut self,
        prefill: u32,
        decode: u32,
        max_instances: u32,
        startup_steps: u32,
        placer: &mut dyn GroupPlacer,
    ) -> Step {
        self.steps += 1;
        let now = self.steps;
        let groups = placer.groups(&self.svc);
        self.born.retain(|id, _| groups.iter().any(|g| &g.id == id));
        let young = |born: &BTreeMap<String, u64>, id: &str| {
            born.get(id)
                .is_some_and(|b| now < b + u64::from(startup_steps))
        };
        let (mut hp, mut hd) = held(&groups);
        let mut step = Step {
            desired: 0,
            before: groups.len() as u32,
            ..Step::default()
        };
        let shapes = shapes_up_to(max_instances);
        while hp < prefill || hd < decode {
            let short = (prefill - hp.min(prefill), decode - hd.min(decode));
            match self.add_shaped(&shapes_by_use(&shapes, short.0, short.1), placer) {
                Ok(g) => {
                    hp += g.prefill;
                    hd += g.decode;
                    self.born.insert(g.id.clone(), now);
                    step.added.push(g);
                }
                Err(e) => {
                    step.refused = 1;
                    step.refusal = Some(e);
                    break;
                }
            }
        }
        if step.added.is_empty() && step.refused == 0 {
            let mut used = placer.domain_used();
            let mut serving: Vec<GroupInfo> = groups
                .iter()
                .filter(|g| !young(&self.born, &g.id))
                .cloned()
                .collect();
            let (mut sp, mut sd) = held(&serving);
            loop {
                let removable: Vec<GroupInfo> = serving
                    .iter()
                    .filter(|g| sp - g.prefill >= prefill && sd - g.decode >= decode)
                    .cloned()
                    .collect();
                let Some(id) = pick_removals(&removable, &used, 1).pop() else {
                    break;
                };
                let Some(i) = serving.iter().position(|g| g.id == id) else {
                    break;
                };
                let g = serving.remove(i);
                if let Some(u) = used.get_mut(&g.domain) {
                    *u = u.saturating_sub(u64::from(g.accelerators));
                }
                sp -= g.prefill;
                sd -= g.decode;
                placer.remove_group(&self.svc, &id);
                step.removed.push(id);
            }
            let starting = groups.iter().any(|g| young(&self.born, &g.id));
            if step.removed.is_empty() && !starting {
                // The replacement that saves the most instances, if any.
                let best = serving
                    .iter()
                    .filter_map(|g| {
                        let short = (
                            (prefill + g.prefill).saturating_sub(sp),
                            (decode + g.decode).saturating_sub(sd),
                        );
                        let s = shapes
                            .iter()
                            .copied()
                            .filter(|s| s.0 >= short.0 && s.1 >= short.1)
                            .min_by_key(|s| (s.0 + s.1, *s))?;
                        let saved = (g.prefill + g.decode).checked_sub(s.0 + s.1)?;
                        (saved > 0).then_some((saved, s))
                    })
                    .max_by_key(|(saved, s)| (*saved, std::cmp::Reverse(*s)));
                if let Some((_, s)) = best
                    && let Ok(g) = self.add_shaped(&[s], placer)
                {
                    self.born.insert(g.id.clone(), now);
                    step.added.push(g);
                }
            }
        }
        step.desired = step.before + step.added.len() as u32 - step.removed.len() as u32;
        step
    }

    /// Adds one group of the first of `shapes` the scheduler has room for.
    fn add_shaped(
        &mut self,
        shapes: &[(u32, u32)],
        placer: &mut dyn GroupPlacer,
    ) -> Result<GroupInfo, String> {
        let mut last = String::from("no group shape to try");
        for &(p, d) in shapes {
            let svc = self.svc.with_shape(p, d);
            match placer
                .where_would_one_go(&svc)
                .and_then(|_| placer.add_group(&svc))
            {
                Ok(g) => return Ok(g),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(id: &str, domain: &str, acc: u32) -> GroupInfo {
        GroupInfo {
            id: id.into(),
            domain: domain.into(),
            accelerators: acc,
            prefill: 1,
            decode: 2,
        }
    }

    #[test]
    fn removal_empties_the_least_used_domain_first() {
        let groups = vec![g("a", "sn0", 24), g("b", "sn1", 24), g("c", "sn1", 24)];
        let used: BTreeMap<String, u64> = [("sn0".to_owned(), 24), ("sn1".to_owned(), 200)].into();
        assert_eq!(pick_removals(&groups, &used, 1), vec!["a".to_owned()]);
        // Two in the same domain: both go before anything elsewhere when
        // that empties it.
        let used: BTreeMap<String, u64> = [("sn0".to_owned(), 100), ("sn1".to_owned(), 48)].into();
        let r = pick_removals(&groups, &used, 2);
        assert_eq!(r, vec!["c".to_owned(), "b".to_owned()]);
        assert_eq!(pick_removals(&groups, &used, 9).len(), 3);
    }

    /// A placer over domains of a fixed room in instances (a group of
    /// `p:d` takes `p + d` of one domain's room).
    struct Toy {
        room: BTreeMap<String, u32>,
        groups: Vec<GroupInfo>,
        n: u32,
    }

    impl GroupPlacer for Toy {
        fn where_would_one_go(&mut self, svc: &ServiceSpec) -> Result<String, PlaceError> {
            let size = svc.prefill_per_group + svc.decode_per_group;
            self.room
                .iter()
                .find(|(_, r)| **r >= size)
                .map(|(d, _)| d.clone())
                .ok_or(PlaceError::NoRoom {
                    service: svc.name.clone(),
                    reason: "full".into(),
                })
        }
        fn add_group(&mut self, svc: &ServiceSpec) -> Result<GroupInfo, PlaceError> {
            let d = self.where_would_one_go(svc)?;
            let size = svc.prefill_per_group + svc.decode_per_group;
            *self.room.get_mut(&d).unwrap() -= size;
            self.n += 1;
            let gi = GroupInfo {
                prefill: svc.prefill_per_group,
                decode: svc.decode_per_group,
                ..g(&format!("g{}", self.n), &d, svc.group_accelerators())
            };
            self.groups.push(gi.clone());
            Ok(gi)
        }
        fn groups(&self, _: &ServiceSpec) -> Vec<GroupInfo> {
            self.groups.clone()
        }
        fn domain_used(&self) -> BTreeMap<String, u64> {
            let mut m = BTreeMap::new();
            for x in &self.groups {
                *m.entry(x.domain.clone()).or_default() += u64::from(x.accelerators);
            }
            m
        }
        fn remove_group(&mut self, _: &ServiceSpec, id: &str) {
            if let Some(i) = self.groups.iter().position(|x| x.id == id) {
                let x = self.groups.remove(i);
                *self.room.get_mut(&x.domain).unwrap() += x.prefill + x.decode;
            }
        }
    }

    proptest::proptest! {
        /// Whatever sequence of wanted counts, the scaler ends each step at
        /// min(wanted, what fits), never beyond the room the placer says
        /// exists, and a refusal is reported exactly when it stopped short.
        #[test]
        fn reconcile_reaches_what_fits_and_never_more(
            room in proptest::collection::vec(0u32..4, 1..5),
            wants in proptest::collection::vec(0u32..20, 1..12),
        ) {
            let total: u32 = room.iter().sum();
            // Room for whole 1:2 groups only.
            let mut toy = Toy {
                room: room.iter().enumerate().map(|(i, r)| (format!("sn{i}"), *r * 3)).collect(),
                groups: Vec::new(),
                n: 0,
            };
            let mut s = GroupScaler::new(crate::policy::tests_support::svc(), GroupPolicy::default());
            for w in wants {
                let step = s.reconcile(w, &mut toy);
                let now = toy.groups.len() as u32;
                proptest::prop_assert_eq!(now, w.min(total));
                proptest::prop_assert_eq!(step.refused > 0, w > total && step.before < w);
                proptest::prop_assert!(toy.room.values().all(|r| *r <= 9));
            }
        }

        /// Adaptive shapes: after each step both roles are covered unless
        /// the step was refused, and a refusal means no domain had room for
        /// even a 1:1 group; after a step that added nothing, no group could
        /// go with both roles still covered; every group has both roles and
        /// at most `max` instances; room is never overdrawn.
        #[test]
        fn adaptive_shapes_cover_both_roles_and_keep_no_spare_group(
            room in proptest::collection::vec(0u32..12, 1..5),
            wants in proptest::collection::vec((0u32..14, 0u32..14), 1..12),
            max in 2u32..6,
        ) {
            let mut toy = Toy {
                room: room.iter().enumerate().map(|(i, r)| (format!("sn{i}"), *r)).collect(),
                groups: Vec::new(),
                n: 0,
            };
            let mut s = GroupScaler::new(crate::policy::tests_support::svc(), GroupPolicy::default());
            for (p, d) in wants {
                let step = s.reconcile_roles(p, d, max, 0, &mut toy);
                let hp: u32 = toy.groups.iter().map(|g| g.prefill).sum();
                let hd: u32 = toy.groups.iter().map(|g| g.decode).sum();
                if step.refused == 0 {
                    proptest::prop_assert!(hp >= p && hd >= d, "{hp}/{hd} for {p}/{d}: {step:?}");
                } else {
                    proptest::prop_assert!(toy.room.values().all(|r| *r < 2), "{:?}", toy.room);
                }
                if step.added.is_empty() {
                    for g in &toy.groups {
                        proptest::prop_assert!(hp - g.prefill < p || hd - g.decode < d, "{g:?} is spare");
                    }
                }
                for g in &toy.groups {
                    proptest::prop_assert!(g.prefill >= 1 && g.decode >= 1 && g.prefill + g.decode <= max.max(2));
                }
                let held: u32 = toy.groups.iter().map(|g| g.prefill + g.decode).sum();
                let free: u32 = toy.room.values().sum();
                proptest::prop_assert_eq!(held + free, room.iter().sum::<u32>());
            }
        }
    }

    #[test]
    fn adaptive_shapes_follow_the_mix() {
        let mut toy = Toy {
            room: [("sn0".to_owned(), 40)].into(),
            groups: Vec::new(),
            n: 0,
        };
        let mut s = GroupScaler::new(crate::policy::tests_support::svc(), GroupPolicy::default());
        // A prefill-heavy minute: the groups are prefill-heavy, not 1:2.
        let step = s.reconcile_roles(9, 3, 4, 2, &mut toy);
        let (hp, hd) = toy
            .groups
            .iter()
            .fold((0, 0), |a, g| (a.0 + g.prefill, a.1 + g.decode));
        assert_eq!((hp, hd), (9, 3), "{step:?}");
        // The mix turns decode-heavy: decode-heavy groups are added, and
        // prefill-heavy ones go once nothing needs them.
        let step = s.reconcile_roles(9, 12, 4, 2, &mut toy);
        assert!(step.added.iter().all(|g| g.decode > g.prefill), "{step:?}");
        let held = |t: &Toy| {
            t.groups
                .iter()
                .fold((0, 0), |a, g| (a.0 + g.prefill, a.1 + g.decode))
        };
        // Prefill need falls: over a few steps prefill-heavy groups are
        // replaced by smaller ones, never leaving a role short of serving
        // capacity, until no replacement saves anything.
        let mut removed = 0;
        for _ in 0..20 {
            let step = s.reconcile_roles(3, 12, 4, 2, &mut toy);
            removed += step.removed.len();
            let (hp, hd) = held(&toy);
            assert!(hp >= 3 && hd >= 12, "{hp}/{hd}: {step:?}");
        }
        let (hp, hd) = held(&toy);
        assert!(
            removed > 0 && hp + hd < 21,
            "{hp}/{hd} after {removed} removals"
        );
        assert!(
            toy.groups.iter().all(|g| g.prefill <= g.decode),
            "the prefill-heavy groups were replaced: {:?}",
            toy.groups
        );
    }
}
