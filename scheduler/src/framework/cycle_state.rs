//! Typed per-cycle state: what a plugin computes in PreFilter or PreScore and
//! reads back in Filter or Score for every node.
//!
//! Entries are keyed by their Rust type, so a plugin defines a private type for
//! its state and nobody else can read or clobber it by accident. The state is
//! cloned when preemption simulates removing pods, so entries must be `Clone`.

use rustc_hash::FxHashMap;
use std::any::{Any, TypeId};

/// A value stored in [`CycleState`].
pub trait StateData: Any + Send + Sync {
    /// Clones into a box.
    fn clone_box(&self) -> Box<dyn StateData>;
    /// As `Any`, for downcasting.
    fn as_any(&self) -> &dyn Any;
    /// As mutable `Any`, for downcasting.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Send + Sync + Clone> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// State for one scheduling attempt of one pod.
#[derive(Default)]
pub struct CycleState {
    data: FxHashMap<TypeId, Box<dyn StateData>>,
    skip_filter: Vec<&'static str>,
    skip_score: Vec<&'static str>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_box()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
        }
    }
}

impl CycleState {
    /// An empty state.
    pub fn new() -> CycleState {
        CycleState::default()
    }

    /// Stores `v`, replacing any value of the same type.
    pub fn insert<T: Any + Send + Sync + Clone>(&mut self, v: T) {
        self.data.insert(TypeId::of::<T>(), Box::new(v));
    }

    /// Reads the value of type `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.data
            .get(&TypeId::of::<T>())
            .and_then(|b| (**b).as_any().downcast_ref())
    }

    /// Reads the value of type `T` mutably.
    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.data
            .get_mut(&TypeId::of::<T>())
            .and_then(|b| (**b).as_any_mut().downcast_mut())
    }

    /// Removes the value of type `T`.
    pub fn remove<T: Any>(&mut self) -> bool {
        self.data.remove(&TypeId::of::<T>()).is_some()
    }

    /// Whether `plugin` asked (with Skip from PreFilter) not to run its Filter.
    pub fn skips_filter(&self, plugin: &str) -> bool {
        self.skip_filter.contains(&plugin)
    }

    /// Whether `plugin` asked (with Skip from PreScore) not to run its Score.
    pub fn skips_score(&self, plugin: &str) -> bool {
        self.skip_score.contains(&plugin)
    }

    pub(crate) fn set_skip_filter(&mut self, plugin: &'static str) {
        self.skip_filter.push(plugin);
    }

    pub(crate) fn set_skip_score(&mut self, plugin: &'static str) {
        self.skip_score.push(plugin);
    }
}

/// Pods a plugin wants moved to the active queue when the cycle's PreFilter
/// phase ends (kube-scheduler's `PodsToActivate`): a gang plugin puts the
/// uids of members that wait gated, unschedulable or in backoff here once
/// their group can be planned, so they follow the member being scheduled.
/// Pods not waiting in one of those places are left alone.
#[derive(Clone, Debug, Default)]
pub struct PodsToActivate(pub Vec<std::sync::Arc<str>>);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Mine(u32);

    #[test]
    fn typed_slots() {
        let mut s = CycleState::new();
        assert!(s.get::<Mine>().is_none());
        s.insert(Mine(1));
        s.get_mut::<Mine>().unwrap().0 = 2;
        let c = s.clone();
        s.insert(Mine(3));
        assert_eq!(c.get::<Mine>(), Some(&Mine(2)));
        assert_eq!(s.get::<Mine>(), Some(&Mine(3)));
        assert!(s.remove::<Mine>());
        assert!(s.get::<Mine>().is_none());
    }
}
