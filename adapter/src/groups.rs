//! PodGroups from the cluster into the PodGroup plugin's store: Strata's
//! `strata.io/v1alpha1` and the coscheduling `scheduling.x-k8s.io/v1alpha1`
//! API, so existing coscheduling manifests work with only `schedulerName`
//! changed.
//!
//! A cluster may have neither CRD installed; an API that is not served is
//! skipped (groups then come from pod annotations only) instead of holding
//! `/readyz` back forever.

use crate::CustomResource;
use crate::translate::CustomHandler;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use std::sync::Arc;
use strata_plugins::pod_group::{GroupApi, GroupKey, KIND, PodGroupStore};
use strata_scheduler::intern::Sym;

/// The PodGroup APIs Strata reads: group, version, which API.
pub const POD_GROUP_APIS: [(&str, &str, GroupApi); 2] = [
    ("strata.io", "v1alpha1", GroupApi::Strata),
    ("scheduling.x-k8s.io", "v1alpha1", GroupApi::Coscheduling),
];

/// Feeds one PodGroup API into the store.
pub struct PodGroupHandler {
    store: PodGroupStore,
    api: GroupApi,
    api_version: String,
}

impl PodGroupHandler {
    /// A handler for objects of `group/version`.
    pub fn new(store: PodGroupStore, group: &str, version: &str, api: GroupApi) -> PodGroupHandler {
        PodGroupHandler {
            store,
            api,
            api_version: format!("{group}/{version}"),
        }
    }
}

impl CustomHandler for PodGroupHandler {
    fn upsert(&self, obj: &DynamicObject) {
        let mut v = match serde_json::to_value(obj) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "PodGroup object could not be read");
                return;
            }
        };
        // Objects from lists may come without their type.
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), self.api_version.clone().into());
            m.insert("kind".into(), KIND.into());
        }
        if let Err(e) = self.store.upsert_object(&v) {
            tracing::warn!(error = %e, "PodGroup object ignored");
        }
    }

    fn delete(&self, namespace: &str, name: &str) {
        self.store.remove(&GroupKey {
            api: self.api,
            namespace: Sym::new(if namespace.is_empty() {
                "default"
            } else {
                namespace
            }),
            name: Sym::new(name),
        });
    }
}

/// The custom resources to watch for PodGroups: those of
/// [`POD_GROUP_APIS`] the API server serves (checked with one small list).
pub async fn pod_group_resources(
    client: &kube::Client,
    store: &PodGroupStore,
) -> Vec<CustomResource> {
    let mut out = Vec::new();
    for (group, version, api) in POD_GROUP_APIS {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, KIND),
            "podgroups",
        );
        let probe: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match probe.list(&ListParams::default().limit(1)).await {
            Ok(_) => out.push(CustomResource {
                api_resource: ar,
                kind: KIND,
                handler: Arc::new(PodGroupHandler::new(store.clone(), group, version, api)),
            }),
            Err(e) => {
                tracing::info!(api = %format!("{group}/{version}"), error = %e,
                    "PodGroup API not served: groups of this API come from pod annotations only");
            }
        }
    }
    out
}
