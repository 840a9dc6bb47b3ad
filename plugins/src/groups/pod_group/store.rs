//! [`PodGroupStore`]: the PodGroup objects the plugin plans with, shared
//! between whoever watches them (the Kubernetes adapter, the simulator) and
//! the plugin, plus the status the plugin keeps for each group.
//!
//! The store is cheap to clone (all clones share one map). Writers call
//! [`PodGroupStore::upsert_object`] or [`PodGroupStore::remove`] and then
//! hand the engine `ClusterUpdate::Custom { kind: "PodGroup", .. }` so pods
//! waiting on the group are re-checked. A malformed object is kept with its
//! error, so its member pods are told exactly what is wrong instead of
//! waiting for a group that "does not exist".
//!
//! Status flows the other way: the plugin updates it on every change, and
//! the adapter drains [`PodGroupStore::take_status_changes`] to write the
//! objects' status subresource.

use super::spec::{GroupApi, PodGroupSpec, SpecError};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use strata_scheduler::sdk::Sym;

/// The kind the plugin registers for `ClusterUpdate::Custom` events.
pub const KIND: &str = "PodGroup";

/// A group's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// Which API (and member label) it belongs to.
    pub api: GroupApi,
    /// Namespace.
    pub namespace: Sym,
    /// Name.
    pub name: Sym,
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.api {
            GroupApi::Strata => write!(f, "pod group {}/{}", self.namespace, self.name),
            GroupApi::Coscheduling => write!(
                f,
                "pod group {}/{} ({})",
                self.namespace,
                self.name,
                self.api.api_group()
            ),
            GroupApi::LeaderWorkerSet => write!(
                f,
                "LeaderWorkerSet replica {}/{}",
                self.namespace, self.name
            ),
        }
    }
}

/// Where a group stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum GroupPhase {
    /// Fewer than `minMember` members exist yet.
    #[default]
    Pending,
    /// Planned; members are being assumed and wait at Permit.
    Scheduling,
    /// At least `minMember` members are placed (assumed or bound).
    Scheduled,
    /// At least `minMember` members are bound to nodes.
    Bound,
    /// At least `minMember` members are running (pod phase Running).
    Running,
    /// The last attempt failed; the group backs off.
    Unschedulable,
    /// The group can never be placed as written.
    Invalid,
}

/// What the plugin publishes about a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupStatus {
    /// Phase.
    pub phase: GroupPhase,
    /// Member pods known to the scheduler.
    pub members: u32,
    /// Members placed: assumed or bound.
    pub placed: u32,
    /// Members bound to a node.
    pub bound: u32,
    /// Members the kubelet reports running (pod phase `Running`).
    pub running: u32,
    /// Why the last attempt failed.
    pub last_failure: Option<String>,
    /// The domain the current plan uses (e.g. the super-node's label value).
    pub domain: Option<String>,
}

/// A group object as stored: its spec, or why it could not be read.
#[derive(Clone, Debug)]
pub struct GroupObject {
    /// The parsed spec or the error.
    pub spec: Result<Arc<PodGroupSpec>, SpecError>,
}

#[derive(Default)]
struct Inner {
    groups: FxHashMap<GroupKey, GroupObject>,
    status: FxHashMap<GroupKey, PodGroupStatus>,
    dirty: BTreeSet<GroupKey>,
    forgotten: Vec<Arc<str>>,
}

/// PodGroup objects and their status. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct PodGroupStore {
    inner: Arc<Mutex<Inner>>,
    /// The plugin's working state, shared by every instance built with this
    /// store (one per profile).
    pub(crate) runtime: Arc<std::sync::OnceLock<Arc<Mutex<super::runtime::Runtime>>>>,
}

/// Why an object could not be taken at all (not a PodGroup).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `apiVersion` is neither group's.
    #[error("apiVersion {0:?} is neither strata.io/v1alpha1 nor scheduling.x-k8s.io/v1alpha1")]
    ApiVersion(String),
    /// `kind` is not PodGroup.
    #[error("kind {0:?} is not PodGroup")]
    Kind(String),
    /// `metadata.name` is missing.
    #[error("metadata.name is missing")]
    Name,
}

impl PodGroupStore {
    /// An empty store.
    pub fn new() -> PodGroupStore {
        PodGroupStore::default()
    }

    /// Adds or replaces a PodGroup given as a whole object (`apiVersion`,
    /// `kind`, `metadata`, `spec`) of either API. Returns its key, for the
    /// `ClusterUpdate::Custom` event. A spec that does not parse is stored
    /// with its error (and also returned in the key's status).
    pub fn upsert_object(&self, obj: &serde_json::Value) -> Result<GroupKey, StoreError> {
        let api_version = obj.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
        let api = match api_version {
            "strata.io/v1alpha1" => GroupApi::Strata,
            "scheduling.x-k8s.io/v1alpha1" | "scheduling.sigs.k8s.io/v1alpha1" => {
                GroupApi::Coscheduling
            }
            other => return Err(StoreError::ApiVersion(other.to_owned())),
        };
        let kind = obj.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if kind != KIND {
            return Err(StoreError::Kind(kind.to_owned()));
        }
        let md = obj.get("metadata");
        let name = md
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .ok_or(StoreError::Name)?;
        let namespace = md
            .and_then(|m| m.get("namespace"))
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let empty = serde_json::json!({});
        let spec = obj.get("spec").unwrap_or(&empty);
        let parsed = match api {
            GroupApi::Strata => PodGroupSpec::from_strata(spec),
            GroupApi::Coscheduling | GroupApi::LeaderWorkerSet => {
                PodGroupSpec::from_coscheduling(spec)
            }
        };
        let key = GroupKey {
            api,
            namespace: Sym::new(namespace),
            name: Sym::new(name),
        };
        self.upsert(key, parsed);
        Ok(key)
    }

    /// Adds or replaces a group from an already parsed spec (or its error).
    pub fn upsert(&self, key: GroupKey, spec: Result<PodGroupSpec, SpecError>) {
        let mut g = self.inner.lock();
        g.groups.insert(
            key,
            GroupObject {
                spec: spec.map(Arc::new),
            },
        );
        g.dirty.insert(key);
    }

    /// Removes a group.
    pub fn remove(&self, key: &GroupKey) {
        let mut g = self.inner.lock();
        g.groups.remove(key);
        g.status.remove(key);
        g.dirty.remove(key);
    }

    /// The group object for `key`.
    pub fn get(&self, key: &GroupKey) -> Option<GroupObject> {
        self.inner.lock().groups.get(key).cloned()
    }

    /// How many group objects are stored.
    pub fn len(&self) -> usize {
        self.inner.lock().groups.len()
    }

    /// Whether no group object is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last status the plugin published for `key`.
    pub fn status(&self, key: &GroupKey) -> Option<PodGroupStatus> {
        self.inner.lock().status.get(key).cloned()
    }

    /// Every group's status, by key (for reports).
    pub fn all_status(&self) -> Vec<(GroupKey, PodGroupStatus)> {
        let g = self.inner.lock();
        let mut v: Vec<_> = g.status.iter().map(|(k, s)| (*k, s.clone())).collect();
        v.sort_by_key(|(k, _)| (k.api, k.namespace.as_str(), k.name.as_str()));
        v
    }

    /// Statuses changed since the last call (for the adapter to write).
    pub fn take_status_changes(&self) -> Vec<(GroupKey, PodGroupStatus)> {
        let mut g = self.inner.lock();
        let dirty = std::mem::take(&mut g.dirty);
        dirty
            .into_iter()
            .filter_map(|k| g.status.get(&k).map(|s| (k, s.clone())))
            .collect()
    }

    /// A pending pod was deleted: the plugin stops counting it as a member.
    /// (Bound pods are tracked through the engine's node changes.)
    pub fn forget_pod(&self, uid: &str) {
        self.inner.lock().forgotten.push(uid.into());
    }

    pub(crate) fn set_status(&self, key: GroupKey, status: PodGroupStatus) {
        let mut g = self.inner.lock();
        if g.status.get(&key) != Some(&status) {
            g.status.insert(key, status);
            g.dirty.insert(key);
        }
    }

    pub(crate) fn take_forgotten(&self) -> Vec<Arc<str>> {
        let mut g = self.inner.lock();
        if g.forgotten.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut g.forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_of_both_apis_are_stored_with_their_errors() {
        let s = PodGroupStore::new();
        let k = s
            .upsert_object(
                &json!({"apiVersion": "strata.io/v1alpha1", "kind": "PodGroup",
                "metadata": {"name": "job", "namespace": "ml"}, "spec": {"minMember": 4}}),
            )
            .unwrap();
        assert_eq!(k.to_string(), "pod group ml/job");
        assert_eq!(s.get(&k).unwrap().spec.unwrap().min_member, 4);
        let k2 = s
            .upsert_object(
                &json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
                "metadata": {"name": "job"}, "spec": {"minMember": "x"}}),
            )
            .unwrap();
        assert_eq!(k2.api, GroupApi::Coscheduling);
        assert!(s.get(&k2).unwrap().spec.is_err());
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.upsert_object(&json!({"apiVersion": "v1", "kind": "PodGroup"})),
            Err(StoreError::ApiVersion("v1".into()))
        );
        s.remove(&k);
        assert!(s.get(&k).is_none());
    }

    #[test]
    fn status_changes_are_drained_once() {
        let s = PodGroupStore::new();
        let k = GroupKey {
            api: GroupApi::Strata,
            namespace: Sym::new("a"),
            name: Sym::new("b"),
        };
        s.set_status(
            k,
            PodGroupStatus {
                members: 2,
                ..Default::default()
            },
        );
        s.set_status(
            k,
            PodGroupStatus {
                members: 2,
                ..Default::default()
            },
        );
        assert_eq!(s.take_status_changes().len(), 1);
        assert!(s.take_status_changes().is_empty());
    }
}
