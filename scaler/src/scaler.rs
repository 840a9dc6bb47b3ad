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
use crate::policy::{Desired, GroupPolicy, GroupPolicyState};
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

/// One service's group scaler.
#[derive(Clone, Debug)]
pub struct GroupScaler {
    /// The service.
    pub svc: ServiceSpec,
    state: GroupPolicyState,
}

impl GroupScaler {
    /// A scaler for `svc` under `policy`.
    pub fn new(svc: ServiceSpec, policy: GroupPolicy) -> GroupScaler {
        GroupScaler {
            svc,
            state: GroupPolicyState::new(policy),
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
        let want = self.desired(minute, load).groups;
        self.reconcile(want, placer)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(id: &str, domain: &str, acc: u32) -> GroupInfo {
        GroupInfo {
            id: id.into(),
            domain: domain.into(),
            accelerators: acc,
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

    /// A placer over a fixed number of domains of fixed room, that counts
    /// what the scaler asks.
    struct Toy {
        room: BTreeMap<String, u32>,
        groups: Vec<GroupInfo>,
        n: u32,
    }

    impl GroupPlacer for Toy {
        fn where_would_one_go(&mut self, svc: &ServiceSpec) -> Result<String, PlaceError> {
            self.room
                .iter()
                .find(|(_, r)| **r > 0)
                .map(|(d, _)| d.clone())
                .ok_or(PlaceError::NoRoom {
                    service: svc.name.clone(),
                    reason: "full".into(),
                })
        }
        fn add_group(&mut self, svc: &ServiceSpec) -> Result<GroupInfo, PlaceError> {
            let d = self.where_would_one_go(svc)?;
            *self.room.get_mut(&d).unwrap() -= 1;
            self.n += 1;
            let gi = g(&format!("g{}", self.n), &d, svc.group_accelerators());
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
                *self.room.get_mut(&x.domain).unwrap() += 1;
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
            let mut toy = Toy {
                room: room.iter().enumerate().map(|(i, r)| (format!("sn{i}"), *r)).collect(),
                groups: Vec::new(),
                n: 0,
            };
            let mut s = GroupScaler::new(crate::policy::tests_support::svc(), GroupPolicy::default());
            for w in wants {
                let step = s.reconcile(w, &mut toy);
                let now = toy.groups.len() as u32;
                proptest::prop_assert_eq!(now, w.min(total));
                proptest::prop_assert_eq!(step.refused > 0, w > total && step.before < w);
                proptest::prop_assert!(toy.room.values().all(|r| *r <= 3));
            }
        }
    }
}
