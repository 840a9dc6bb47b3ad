//! Dynamic Resource Allocation objects from the cluster into the
//! DynamicResources plugin's [`DraStore`]: DeviceClasses and ResourceSlices
//! (cluster scoped), ResourceClaims and ResourceClaimTemplates
//! (namespaced), all `resource.k8s.io/v1` (Kubernetes 1.34+).
//!
//! Each kind is watched as a [`CustomResource`]: the informer lists and
//! watches it, [`DraHandler`] reads the object as its typed
//! `k8s_openapi` form and upserts or removes it in the store, and the
//! adapter then sends the engine `ClusterUpdate::Custom` with the kind the
//! plugin registered ([`KIND_CLASS`], [`KIND_SLICE`], [`KIND_CLAIM`]), so a
//! pod the plugin rejected (unknown class, no device, a claim that does not
//! exist yet) is retried when the object it waited for changes.
//!
//! Claims made from templates are the resourceclaim controller's work
//! (kube-controller-manager): the scheduler never creates claims. The
//! controller gives each claim an owner reference to its pod and the
//! annotation `resource.kubernetes.io/pod-claim-name`; the store indexes
//! claims by those, so a pod whose claim is not made yet waits with a
//! message naming the template and is retried when the claim appears.
//! Template changes are announced under [`KIND_TEMPLATE`], which no plugin
//! registers (no pod waits on a template itself).
//!
//! A cluster that does not serve `resource.k8s.io/v1` (older than 1.34, or
//! the API disabled), or does not let the scheduler read it, is skipped
//! with one info log: DRA pods then wait, and `/readyz` is not held back by
//! informers that could never list.
//!
//! Invariant: the store is written only here (and by the plugin's assume
//! after its own PreBind write); every write is followed by the engine
//! update, in the informer's order.

use crate::CustomResource;
use crate::translate::CustomHandler;
use k8s_openapi::api::resource::v1 as resv1;
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use strata_plugins::dra::DraStore;
use strata_plugins::dra::store::{KIND_CLAIM, KIND_CLASS, KIND_SLICE};

/// The API group of DRA objects.
pub const GROUP: &str = "resource.k8s.io";
/// The version read (GA in Kubernetes 1.34).
pub const VERSION: &str = "v1";
/// The kind ResourceClaimTemplate changes are announced under (no plugin
/// waits on it: pods wait on the claims the controller makes).
pub const KIND_TEMPLATE: &str = "ResourceClaimTemplate";

/// Which DRA object a handler feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraKind {
    /// `deviceclasses`, cluster scoped.
    DeviceClass,
    /// `resourceslices`, cluster scoped.
    ResourceSlice,
    /// `resourceclaims`, namespaced.
    ResourceClaim,
    /// `resourceclaimtemplates`, namespaced.
    ResourceClaimTemplate,
}

impl DraKind {
    /// All four, in the order they are watched (inventory first).
    pub const ALL: [DraKind; 4] = [
        DraKind::DeviceClass,
        DraKind::ResourceSlice,
        DraKind::ResourceClaim,
        DraKind::ResourceClaimTemplate,
    ];

    /// The object's kind.
    pub fn kind(self) -> &'static str {
        match self {
            DraKind::DeviceClass => "DeviceClass",
            DraKind::ResourceSlice => "ResourceSlice",
            DraKind::ResourceClaim => "ResourceClaim",
            DraKind::ResourceClaimTemplate => "ResourceClaimTemplate",
        }
    }

    /// The resource's plural.
    pub fn plural(self) -> &'static str {
        match self {
            DraKind::DeviceClass => "deviceclasses",
            DraKind::ResourceSlice => "resourceslices",
            DraKind::ResourceClaim => "resourceclaims",
            DraKind::ResourceClaimTemplate => "resourceclaimtemplates",
        }
    }

    /// The kind of the `ClusterUpdate::Custom` sent after a change.
    pub fn event_kind(self) -> &'static str {
        match self {
            DraKind::DeviceClass => KIND_CLASS,
            DraKind::ResourceSlice => KIND_SLICE,
            DraKind::ResourceClaim => KIND_CLAIM,
            DraKind::ResourceClaimTemplate => KIND_TEMPLATE,
        }
    }

    /// Group, version, kind and plural for the informer.
    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, VERSION, self.kind()),
            self.plural(),
        )
    }
}

/// Feeds one DRA kind into the store.
pub struct DraHandler {
    store: Arc<DraStore>,
    kind: DraKind,
}

impl DraHandler {
    /// A handler for objects of `kind`.
    pub fn new(store: Arc<DraStore>, kind: DraKind) -> DraHandler {
        DraHandler { store, kind }
    }

    /// The object as its typed form (objects from lists may come without
    /// their apiVersion and kind, which the typed forms check).
    fn typed<T: DeserializeOwned>(&self, obj: &DynamicObject) -> Option<T> {
        let mut v = match serde_json::to_value(obj) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(kind = self.kind.kind(), error = %e, "DRA object could not be read");
                return None;
            }
        };
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), format!("{GROUP}/{VERSION}").into());
            m.insert("kind".into(), self.kind.kind().into());
        }
        match serde_json::from_value(v) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    kind = self.kind.kind(),
                    name = obj.metadata.name.as_deref().unwrap_or(""),
                    namespace = obj.metadata.namespace.as_deref().unwrap_or(""),
                    error = %e,
                    "DRA object ignored: not a valid resource.k8s.io/v1 object"
                );
                None
            }
        }
    }
}

impl CustomHandler for DraHandler {
    fn upsert(&self, obj: &DynamicObject) {
        match self.kind {
            DraKind::DeviceClass => {
                if let Some(c) = self.typed::<resv1::DeviceClass>(obj) {
                    self.store.upsert_class(c);
                }
            }
            DraKind::ResourceSlice => {
                if let Some(s) = self.typed::<resv1::ResourceSlice>(obj) {
                    self.store.upsert_slice(s);
                }
            }
            DraKind::ResourceClaim => {
                if let Some(c) = self.typed::<resv1::ResourceClaim>(obj) {
                    self.store.upsert_claim(c);
                }
            }
            DraKind::ResourceClaimTemplate => {
                if let Some(t) = self.typed::<resv1::ResourceClaimTemplate>(obj) {
                    self.store.upsert_template(t);
                }
            }
        }
    }

    fn delete(&self, namespace: &str, name: &str) {
        // The store keys namespaced objects as the plugin reads them: an
        // object without a namespace is in `default`.
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        match self.kind {
            DraKind::DeviceClass => self.store.remove_class(name),
            DraKind::ResourceSlice => self.store.remove_slice(name),
            DraKind::ResourceClaim => self.store.remove_claim(ns, name),
            DraKind::ResourceClaimTemplate => self.store.remove_template(ns, name),
        }
    }
}

/// The custom resources to watch for DRA, feeding `store`: all four kinds
/// when the API server serves `resource.k8s.io/v1` (checked with one small
/// list of DeviceClasses, see [`crate::client::api_served`]), none
/// otherwise.
pub async fn dra_resources(client: &kube::Client, store: &Arc<DraStore>) -> Vec<CustomResource> {
    let ar = DraKind::DeviceClass.api_resource();
    let api = format!("{GROUP}/{VERSION}");
    if crate::client::api_served(client, &ar, &api, "pods with resourceClaims will wait").await {
        resources_for(store)
    } else {
        Vec::new()
    }
}

/// The four DRA custom resources over `store`, without checking that the
/// API is served.
pub fn resources_for(store: &Arc<DraStore>) -> Vec<CustomResource> {
    DraKind::ALL
        .into_iter()
        .map(|k| CustomResource {
            api_resource: k.api_resource(),
            kind: k.event_kind(),
            handler: Arc::new(DraHandler::new(store.clone(), k)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn objects_reach_the_store_and_leave_it() {
        let store = DraStore::new();
        let h = |k| DraHandler::new(store.clone(), k);
        // No apiVersion/kind, as list items may come.
        h(DraKind::DeviceClass).upsert(&dynamic(json!({"metadata": {"name": "gpu"},
            "spec": {"selectors": [{"cel": {"expression": "true"}}]}})));
        h(DraKind::ResourceSlice).upsert(&dynamic(json!({"metadata": {"name": "s1"},
            "spec": {"driver": "d", "nodeName": "n1", "pool": {"name": "p", "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "dev-0"}]}})));
        h(DraKind::ResourceClaim).upsert(&dynamic(json!({"metadata": {"name": "c", "namespace": "work",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "pod-uid", "controller": true}],
            "annotations": {"resource.kubernetes.io/pod-claim-name": "gpu"}},
            "spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "gpu"}}]}}})));
        h(DraKind::ResourceClaimTemplate).upsert(&dynamic(json!({"metadata": {"name": "t", "namespace": "work"},
            "spec": {"spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "gpu"}}]}}}})));
        assert!(store.class("gpu").is_some());
        assert_eq!(store.slices().len(), 1);
        assert!(store.claim("work", "c").is_some());
        assert!(
            store.generated_claim("pod-uid", "gpu").is_some(),
            "a controller-made claim is found by its pod and pod claim name"
        );
        assert!(store.template("work", "t").is_some());

        h(DraKind::DeviceClass).delete("", "gpu");
        h(DraKind::ResourceSlice).delete("", "s1");
        h(DraKind::ResourceClaim).delete("work", "c");
        h(DraKind::ResourceClaimTemplate).delete("work", "t");
        assert!(store.class("gpu").is_none());
        assert!(store.slices().is_empty());
        assert!(store.claim("work", "c").is_none());
        assert!(store.generated_claim("pod-uid", "gpu").is_none());
        assert!(store.template("work", "t").is_none());
    }

    #[test]
    fn an_invalid_object_is_ignored() {
        let store = DraStore::new();
        let v = store.version();
        // `spec.devices` must be a list.
        DraHandler::new(store.clone(), DraKind::ResourceSlice).upsert(&dynamic(json!({
            "metadata": {"name": "bad"}, "spec": {"driver": "d", "devices": "many",
            "pool": {"name": "p", "generation": 1, "resourceSliceCount": 1}}})));
        assert!(store.slices().is_empty());
        assert_eq!(store.version(), v);
    }

    #[test]
    fn kinds_and_events() {
        let rs = resources_for(&DraStore::new());
        let got: Vec<_> = rs
            .iter()
            .map(|r| (r.api_resource.plural.as_str(), r.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("deviceclasses", KIND_CLASS),
                ("resourceslices", KIND_SLICE),
                ("resourceclaims", KIND_CLAIM),
                ("resourceclaimtemplates", KIND_TEMPLATE),
            ]
        );
        assert!(
            rs.iter()
                .all(|r| r.api_resource.api_version == "resource.k8s.io/v1")
        );
    }
}
