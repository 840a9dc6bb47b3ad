//! The DRA objects the scheduler reads — DeviceClasses, ResourceSlices,
//! ResourceClaims and ResourceClaimTemplates (`resource.k8s.io/v1`) — in
//! one shared store.
//!
//! The Kubernetes adapter fills it from its informers; the simulator fills
//! it from scenarios. After a change, the filler sends the engine a
//! `ClusterUpdate::Custom` with kind [`KIND_CLAIM`], [`KIND_SLICE`] or
//! [`KIND_CLASS`] so pods the DRA plugin rejected are retried. The plugin
//! itself writes an allocation back here once PreBind has written it to the
//! API ([`DraStore::assume_claim`]), as kube-scheduler's assume cache does, so
//! the next pod sees it before the informer catches up.
//!
//! Claims made from templates are found by their owner (the pod's uid) and
//! the annotation `resource.kubernetes.io/pod-claim-name`, as the
//! resourceclaim controller labels them; [`DraStore::instantiate_templates`]
//! plays that controller for the simulator.
//!
//! Invariant: `version` changes on every write, so readers can cache what
//! they derive (the device index, CEL results) per version. Every claim
//! write is also appended to a bounded change log
//! ([`DraStore::claims_changed_since`]), so a reader keeping a sum over the
//! claims (what is in use) applies the claims that changed instead of
//! reading them all.

use k8s_openapi::api::resource::v1 as resv1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use strata_scheduler::sdk::PodInfo;

/// Custom event kind for ResourceClaim changes.
pub const KIND_CLAIM: &str = "ResourceClaim";
/// Custom event kind for ResourceSlice changes.
pub const KIND_SLICE: &str = "ResourceSlice";
/// Custom event kind for DeviceClass changes.
pub const KIND_CLASS: &str = "DeviceClass";
/// Annotation the resourceclaim controller puts on claims it makes from a
/// template: the pod's claim name.
pub const POD_CLAIM_NAME_ANNOTATION: &str = "resource.kubernetes.io/pod-claim-name";

#[derive(Default)]
struct Inner {
    classes: BTreeMap<String, Arc<resv1::DeviceClass>>,
    slices: BTreeMap<String, Arc<resv1::ResourceSlice>>,
    claims: BTreeMap<(String, String), Arc<resv1::ResourceClaim>>,
    templates: BTreeMap<(String, String), Arc<resv1::ResourceClaimTemplate>>,
    /// (pod uid, pod claim name) → claim (namespace, name).
    generated: FxHashMap<(String, String), (String, String)>,
    version: u64,
    slice_version: u64,
    /// Claims written, oldest first: `claim_log[i]` is write number
    /// `claim_log_base + i + 1`.
    claim_log: std::collections::VecDeque<(String, String)>,
    claim_log_base: u64,
}

/// Claim writes the log keeps; a reader further behind reads every claim.
const CLAIM_LOG_LEN: usize = 4096;

impl Inner {
    fn log_claim(&mut self, k: (String, String)) {
        if self.claim_log.len() == CLAIM_LOG_LEN {
            self.claim_log.pop_front();
            self.claim_log_base += 1;
        }
        self.claim_log.push_back(k);
    }
}

/// The shared DRA store.
#[derive(Default)]
pub struct DraStore {
    inner: RwLock<Inner>,
}

fn key_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone().unwrap_or_default(),
    )
}

fn generated_key(c: &resv1::ResourceClaim) -> Option<(String, String)> {
    let owner = c
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Pod" && o.controller == Some(true))?;
    let pod_claim = c
        .metadata
        .annotations
        .as_ref()?
        .get(POD_CLAIM_NAME_ANNOTATION)?;
    Some((owner.uid.clone(), pod_claim.clone()))
}

impl DraStore {
    /// An empty store.
    pub fn new() -> Arc<DraStore> {
        Arc::new(DraStore::default())
    }

    /// Changes on every write.
    pub fn version(&self) -> u64 {
        self.inner.read().version
    }

    /// Changes when slices or classes change (what the device index is
    /// built from).
    pub fn inventory_version(&self) -> u64 {
        self.inner.read().slice_version
    }

    /// Adds or replaces a DeviceClass.
    pub fn upsert_class(&self, c: resv1::DeviceClass) {
        let mut g = self.inner.write();
        g.classes
            .insert(c.metadata.name.clone().unwrap_or_default(), Arc::new(c));
        g.version += 1;
        g.slice_version += 1;
    }

    /// Removes a DeviceClass.
    pub fn remove_class(&self, name: &str) {
        let mut g = self.inner.write();
        g.classes.remove(name);
        g.version += 1;
        g.slice_version += 1;
    }

    /// Adds or replaces a ResourceSlice.
    pub fn upsert_slice(&self, s: resv1::ResourceSlice) {
        let mut g = self.inner.write();
        g.slices
            .insert(s.metadata.name.clone().unwrap_or_default(), Arc::new(s));
        g.version += 1;
        g.slice_version += 1;
    }

    /// Removes a ResourceSlice.
    pub fn remove_slice(&self, name: &str) {
        let mut g = self.inner.write();
        g.slices.remove(name);
        g.version += 1;
        g.slice_version += 1;
    }

    /// Adds or replaces a ResourceClaim.
    pub fn upsert_claim(&self, c: resv1::ResourceClaim) {
        let mut g = self.inner.write();
        let k = key_of(&c.metadata);
        if let Some(gk) = generated_key(&c) {
            g.generated.insert(gk, k.clone());
        }
        g.claims.insert(k.clone(), Arc::new(c));
        g.log_claim(k);
        g.version += 1;
    }

    /// Removes a ResourceClaim.
    pub fn remove_claim(&self, namespace: &str, name: &str) {
        let mut g = self.inner.write();
        let k = (namespace.to_owned(), name.to_owned());
        if let Some(c) = g.claims.remove(&k)
            && let Some(gk) = generated_key(&c)
        {
            g.generated.remove(&gk);
        }
        g.log_claim(k);
        g.version += 1;
    }

    /// Adds or replaces a ResourceClaimTemplate.
    pub fn upsert_template(&self, t: resv1::ResourceClaimTemplate) {
        let mut g = self.inner.write();
        g.templates.insert(key_of(&t.metadata), Arc::new(t));
        g.version += 1;
    }

    /// Removes a ResourceClaimTemplate.
    pub fn remove_template(&self, namespace: &str, name: &str) {
        let mut g = self.inner.write();
        g.templates.remove(&(namespace.to_owned(), name.to_owned()));
        g.version += 1;
    }

    /// A DeviceClass.
    pub fn class(&self, name: &str) -> Option<Arc<resv1::DeviceClass>> {
        self.inner.read().classes.get(name).cloned()
    }

    /// A ResourceClaim.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<Arc<resv1::ResourceClaim>> {
        self.inner
            .read()
            .claims
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The claim made for pod `uid`'s claim `pod_claim` from a template.
    pub fn generated_claim(&self, uid: &str, pod_claim: &str) -> Option<Arc<resv1::ResourceClaim>> {
        let g = self.inner.read();
        let k = g.generated.get(&(uid.to_owned(), pod_claim.to_owned()))?;
        g.claims.get(k).cloned()
    }

    /// A ResourceClaimTemplate.
    pub fn template(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<resv1::ResourceClaimTemplate>> {
        self.inner
            .read()
            .templates
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The number of claim writes so far (a position in the change log).
    pub fn claim_writes(&self) -> u64 {
        let g = self.inner.read();
        g.claim_log_base + g.claim_log.len() as u64
    }

    /// The claims (namespace, name) written after write number `since`, in
    /// order (a claim written twice is listed twice), and the current
    /// position; `None` when the log no longer reaches back that far.
    #[allow(clippy::type_complexity)]
    pub fn claims_changed_since(&self, since: u64) -> Option<(Vec<(String, String)>, u64)> {
        let g = self.inner.read();
        let now = g.claim_log_base + g.claim_log.len() as u64;
        if since < g.claim_log_base || since > now {
            return None;
        }
        let skip = (since - g.claim_log_base) as usize;
        Some((g.claim_log.iter().skip(skip).cloned().collect(), now))
    }

    /// Every ResourceSlice.
    pub fn slices(&self) -> Vec<Arc<resv1::ResourceSlice>> {
        self.inner.read().slices.values().cloned().collect()
    }

    /// Every claim with an allocation.
    pub fn allocated_claims(&self) -> Vec<Arc<resv1::ResourceClaim>> {
        self.inner
            .read()
            .claims
            .values()
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.allocation.as_ref())
                    .is_some()
            })
            .cloned()
            .collect()
    }

    /// Replaces a claim with the version the scheduler just wrote (its
    /// allocation and `reservedFor`), before the informer reports it.
    pub fn assume_claim(&self, c: resv1::ResourceClaim) {
        self.upsert_claim(c);
    }

    /// Makes the claims of `pod`'s `spec.resourceClaims` that name a
    /// template, as the resourceclaim controller would (name
    /// `<pod>-<claim>`, owned by the pod). Returns the claims made; a
    /// missing template makes none (the pod then waits, as it would).
    pub fn instantiate_templates(&self, pod: &PodInfo) -> Vec<resv1::ResourceClaim> {
        let ns = pod.namespace.as_str().to_owned();
        let pod_name = pod.name.to_string();
        let uid = pod.uid.to_string();
        let mut made = Vec::new();
        for rc in pod.spec.raw.resource_claims.iter().flatten() {
            let Some(t) = rc.resource_claim_template_name.as_deref() else {
                continue;
            };
            if self.generated_claim(&uid, &rc.name).is_some() {
                continue;
            }
            let Some(tpl) = self.template(&ns, t) else {
                continue;
            };
            let mut annotations = tpl
                .spec
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default();
            annotations.insert(POD_CLAIM_NAME_ANNOTATION.into(), rc.name.clone());
            let claim = resv1::ResourceClaim {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(format!("{pod_name}-{}", rc.name)),
                    namespace: Some(ns.clone()),
                    uid: Some(format!("{uid}-{}", rc.name)),
                    annotations: Some(annotations),
                    labels: tpl.spec.metadata.as_ref().and_then(|m| m.labels.clone()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: pod_name.clone(),
                        uid: uid.clone(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]),
                    ..Default::default()
                },
                spec: tpl.spec.spec.clone(),
                status: None,
            };
            self.upsert_claim(claim.clone());
            made.push(claim);
        }
        made
    }
}
