//! Preemption claims: how a plugin that preempts for some pods itself keeps
//! general preemption (DefaultPreemption) away from them.
//!
//! A gang plugin evicts and places whole groups. Two things would undo that
//! if general preemption, which works pod by pod, went on as usual: it
//! would preempt for one member of a group on its own, and it would evict
//! one member of a running group as a lone victim. A plugin that says so
//! through a [`PreemptionClaimant`] registered on the scheduler's
//! [`PreemptionClaims`] (every [`Handle`](super::Handle) carries them) takes
//! both over:
//!
//! - [`PreemptionClaimant::claims_preemptor`]: general preemption returns
//!   Skip for a pod whose preemption a claimant takes in this cycle;
//! - [`PreemptionClaimant::claims_victim`]: general preemption never picks
//!   such a pod as a victim; only the claimant's own preemption evicts it.
//!
//! Claims are per scheduler (all profiles), like the waiting pods;
//! registering again under the same plugin name replaces the claimant, so a
//! plugin built once per profile is counted once.
//!
//! # Example
//!
//! A vendor gang plugin whose members carry a `vendor.example/gang` label and
//! whose PreFilter marks the cycle of a member it will preempt for:
//!
//! ```
//! use std::sync::Arc;
//! use strata_scheduler::framework::{CycleState, Handle, PreemptionClaimant};
//! use strata_scheduler::intern::Sym;
//! use strata_scheduler::model::PodInfo;
//!
//! /// Written to a member's cycle state by the gang plugin's PreFilter.
//! #[derive(Clone)]
//! struct GangCycle;
//!
//! struct GangClaims;
//!
//! impl PreemptionClaimant for GangClaims {
//!     fn claims_preemptor(&self, state: &CycleState, _pod: &PodInfo) -> bool {
//!         state.get::<GangCycle>().is_some()
//!     }
//!     fn claims_victim(&self, pod: &PodInfo) -> bool {
//!         pod.labels.get(Sym::new("vendor.example/gang")).is_some()
//!     }
//! }
//!
//! // In the plugin's factory:
//! fn register(handle: &Handle) {
//!     handle.preemption.register("VendorGang", Arc::new(GangClaims));
//! }
//!
//! // What general preemption sees:
//! # fn check(handle: &Handle, pod: &PodInfo) {
//! let claims = handle.preemption.current();
//! let mut state = CycleState::new();
//! assert_eq!(claims.preemptor_claimant(&state, pod), None);
//! state.insert(GangCycle);
//! assert_eq!(claims.preemptor_claimant(&state, pod), Some("VendorGang"));
//! # }
//! ```

use super::CycleState;
use crate::model::PodInfo;
use parking_lot::RwLock;
use std::sync::Arc;

/// A plugin's say over preemption of some pods: registered on the
/// scheduler's [`PreemptionClaims`] (from the plugin's factory, through
/// [`Handle::preemption`](super::Handle::preemption)), asked by general
/// preemption (DefaultPreemption) before it preempts for a pod and for each
/// pod it would evict.
///
/// ```
/// use std::sync::Arc;
/// use strata_scheduler::framework::{CycleState, Handle, PreemptionClaimant};
/// use strata_scheduler::intern::Sym;
/// use strata_scheduler::model::PodInfo;
///
/// /// Written to a member's cycle state by the gang plugin's PreFilter.
/// #[derive(Clone)]
/// struct GangCycle;
///
/// /// A vendor gang plugin's claims: members carry `vendor.example/gang`.
/// struct GangClaims;
///
/// impl PreemptionClaimant for GangClaims {
///     fn claims_preemptor(&self, state: &CycleState, _pod: &PodInfo) -> bool {
///         state.get::<GangCycle>().is_some()
///     }
///     fn claims_victim(&self, pod: &PodInfo) -> bool {
///         pod.labels.get(Sym::new("vendor.example/gang")).is_some()
///     }
/// }
///
/// // In the gang plugin's factory:
/// fn register(handle: &Handle) {
///     handle.preemption.register("VendorGang", Arc::new(GangClaims));
/// }
/// ```
pub trait PreemptionClaimant: Send + Sync {
    /// Whether the claimant preempts for `pod` itself in this cycle
    /// (`state` is the pod's cycle state after PreFilter), so general
    /// preemption must leave the pod alone.
    fn claims_preemptor(&self, state: &CycleState, pod: &PodInfo) -> bool;

    /// Whether the running `pod` may be evicted only by the claimant's own
    /// preemption, so general preemption must never pick it as a victim.
    /// Called for every pod general preemption considers: keep it cheap (a
    /// label lookup), without allocation.
    fn claims_victim(&self, pod: &PodInfo) -> bool;
}

type Entry = (Arc<str>, Arc<dyn PreemptionClaimant>);

/// The claimants registered with one scheduler (see [`PreemptionClaimant`]).
/// Cloning shares them.
#[derive(Clone, Default)]
pub struct PreemptionClaims {
    entries: Arc<RwLock<Arc<[Entry]>>>,
}

impl std::fmt::Debug for PreemptionClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<Arc<str>> = self.entries.read().iter().map(|e| e.0.clone()).collect();
        f.debug_struct("PreemptionClaims")
            .field("claimants", &names)
            .finish()
    }
}

impl PreemptionClaims {
    /// Registers `claimant` as `plugin`'s, replacing what `plugin`
    /// registered before. Meant for a plugin's factory.
    pub fn register(&self, plugin: &str, claimant: Arc<dyn PreemptionClaimant>) {
        let mut g = self.entries.write();
        let mut v: Vec<Entry> = g.iter().filter(|e| &*e.0 != plugin).cloned().collect();
        v.push((plugin.into(), claimant));
        *g = v.into();
    }

    /// The claimants now, to ask many questions without locking again
    /// (general preemption takes this once per PostFilter).
    pub fn current(&self) -> Claims {
        Claims(self.entries.read().clone())
    }
}

/// The registered claimants at one moment ([`PreemptionClaims::current`]).
#[derive(Clone)]
pub struct Claims(Arc<[Entry]>);

impl Claims {
    /// The name of the plugin that preempts for `pod` in this cycle, if any.
    pub fn preemptor_claimant(&self, state: &CycleState, pod: &PodInfo) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, c)| c.claims_preemptor(state, pod))
            .map(|(name, _)| &**name)
    }

    /// Whether some claimant keeps `pod` from being a lone victim.
    #[inline]
    pub fn victim_claimed(&self, pod: &PodInfo) -> bool {
        self.0.iter().any(|(_, c)| c.claims_victim(pod))
    }

    /// Whether no plugin claims anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intern::Sym;
    use crate::testing::pod;

    /// A fake gang plugin: members carry `gang`; PreFilter marks the cycle
    /// of a member it preempts for with `Marked`.
    struct FakeGang;

    #[derive(Clone)]
    struct Marked;

    impl PreemptionClaimant for FakeGang {
        fn claims_preemptor(&self, state: &CycleState, _pod: &PodInfo) -> bool {
            state.get::<Marked>().is_some()
        }
        fn claims_victim(&self, pod: &PodInfo) -> bool {
            pod.labels.get(Sym::new("gang")).is_some()
        }
    }

    /// Claims nothing.
    struct Idle;

    impl PreemptionClaimant for Idle {
        fn claims_preemptor(&self, _: &CycleState, _: &PodInfo) -> bool {
            false
        }
        fn claims_victim(&self, _: &PodInfo) -> bool {
            false
        }
    }

    #[test]
    fn a_claimant_takes_marked_preemptors_and_its_members_as_victims() {
        let claims = PreemptionClaims::default();
        let lone = pod("lone").build();
        let member = pod("m").label("gang", "g").build();
        let mut state = CycleState::new();
        assert!(claims.current().is_empty());
        assert_eq!(claims.current().preemptor_claimant(&state, &lone), None);
        assert!(!claims.current().victim_claimed(&member));

        // Registered through a clone, as a plugin does through its Handle.
        claims.clone().register("Idle", Arc::new(Idle));
        claims.clone().register("FakeGang", Arc::new(FakeGang));
        let now = claims.current();
        assert_eq!(now.preemptor_claimant(&state, &member), None);
        state.insert(Marked);
        assert_eq!(now.preemptor_claimant(&state, &member), Some("FakeGang"));
        assert!(now.victim_claimed(&member));
        assert!(!now.victim_claimed(&lone));
    }

    #[test]
    fn registering_again_replaces_and_views_keep_what_they_saw() {
        let claims = PreemptionClaims::default();
        claims.register("FakeGang", Arc::new(FakeGang));
        let before = claims.current();
        claims.register("FakeGang", Arc::new(Idle));
        let member = pod("m").label("gang", "g").build();
        assert!(before.victim_claimed(&member));
        let after = claims.current();
        assert!(!after.victim_claimed(&member));
        assert_eq!(after.0.len(), 1);
        assert_eq!(
            format!("{claims:?}"),
            r#"PreemptionClaims { claimants: ["FakeGang"] }"#
        );
    }
}
