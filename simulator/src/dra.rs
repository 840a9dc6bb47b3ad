//! DRA objects in scenarios: DeviceClasses, ResourceSlices (written out, or
//! a compact device list per node pool), ResourceClaims and
//! ResourceClaimTemplates, and the part of the resourceclaim controller the
//! simulator plays.
//!
//! ```yaml
//! dra:
//!   deviceClasses:
//!     - metadata: {name: gpu.example.com}
//!       spec: {selectors: [{cel: {expression: 'device.driver == "gpu.example.com"'}}]}
//!   nodeDevices:                 # one ResourceSlice per node of the pool
//!     - nodePool: gpu
//!       driver: gpu.example.com
//!       devices:                 # `count` alike devices: gpu-0, gpu-1, ...
//!         - {name: gpu, count: 4, attributes: {model: {string: H100}}, capacity: {memory: {value: 80Gi}}}
//!   resourceSlices: []           # ResourceSlice manifests, as the API has them
//!   resourceClaims: []           # ResourceClaim manifests (namespace `default` unless given)
//!   resourceClaimTemplates: []   # ResourceClaimTemplate manifests
//! ```
//!
//! Workload pods name claims in `spec.resourceClaims` as real pods do
//! (`resourceClaimName` or `resourceClaimTemplateName`); when a pod arrives,
//! [`claims_for_pod`] makes its claims from templates, as the resourceclaim
//! controller would, before the engine sees the pod.
//!
//! Invariants: every object has a name (checked while parsing, so the error
//! carries the file position); a compact device list expands to devices with
//! distinct names, at most [`MAX_DEVICES_PER_SLICE`] per node; the
//! cross-references (node pools, node names, claims and templates named by
//! workloads) are checked by [`crate::Scenario`]'s validation. What a claim
//! asks for is not checked here: an unknown DeviceClass or a selector that
//! does not compile is the scheduler's to report on the pod, which is what a
//! scenario may want to show.

use k8s_openapi::Metadata;
use k8s_openapi::api::resource::v1 as resv1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{self, Deserialize, Deserializer};
use std::collections::BTreeMap;
use strata_plugins::dra::{DraStore, store};
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::intern::Sym;
use strata_scheduler::model::PodInfo;

/// The most devices one ResourceSlice may hold (the API's limit).
pub const MAX_DEVICES_PER_SLICE: usize = 128;

/// A scenario's DRA objects.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DraSection {
    /// DeviceClasses.
    #[serde(default)]
    pub device_classes: Vec<Named<resv1::DeviceClass>>,
    /// ResourceSlices, written out.
    #[serde(default)]
    pub resource_slices: Vec<Named<resv1::ResourceSlice>>,
    /// Compact device lists, one slice per node of a pool.
    #[serde(default)]
    pub node_devices: Vec<NodeDevices>,
    /// ResourceClaims.
    #[serde(default)]
    pub resource_claims: Vec<Named<resv1::ResourceClaim>>,
    /// ResourceClaimTemplates.
    #[serde(default)]
    pub resource_claim_templates: Vec<Named<resv1::ResourceClaimTemplate>>,
}

/// An API object that has a name (namespaced kinds default to `default`).
#[derive(Clone, Debug)]
pub struct Named<T>(pub T);

impl<T: Metadata<Ty = ObjectMeta>> Named<T> {
    /// The object's name.
    pub fn name(&self) -> &str {
        self.0.metadata().name.as_deref().unwrap_or("")
    }

    /// The object's namespace (`default` when not given).
    pub fn namespace(&self) -> &str {
        self.0.metadata().namespace.as_deref().unwrap_or("default")
    }
}

impl<'de, T> Deserialize<'de> for Named<T>
where
    T: Deserialize<'de> + Metadata<Ty = ObjectMeta>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = T::deserialize(d)?;
        if v.metadata().name.as_deref().is_none_or(str::is_empty) {
            return Err(de::Error::custom("metadata.name is required"));
        }
        Ok(Named(v))
    }
}

/// Devices every node of a pool publishes through one ResourceSlice.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(try_from = "RawNodeDevices")]
pub struct NodeDevices {
    /// The node pool.
    pub node_pool: String,
    /// The DRA driver publishing the devices (`gpu.example.com`).
    pub driver: String,
    /// The devices of one node.
    pub devices: Vec<resv1::Device>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNodeDevices {
    node_pool: String,
    driver: String,
    devices: Vec<DeviceSpec>,
}

/// One device, or `count` alike devices named `{name}-{i}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeviceSpec {
    name: String,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    attributes: BTreeMap<String, resv1::DeviceAttribute>,
    #[serde(default)]
    capacity: BTreeMap<String, resv1::DeviceCapacity>,
    #[serde(default)]
    allow_multiple_allocations: bool,
}

impl TryFrom<RawNodeDevices> for NodeDevices {
    type Error = String;

    fn try_from(r: RawNodeDevices) -> Result<NodeDevices, String> {
        if r.driver.is_empty() {
            return Err("driver must not be empty".into());
        }
        let mut devices: Vec<resv1::Device> = Vec::new();
        for (i, d) in r.devices.into_iter().enumerate() {
            if d.name.is_empty() {
                return Err(format!("devices[{i}].name must not be empty"));
            }
            let names: Vec<String> = match d.count {
                None => vec![d.name.clone()],
                Some(0) => return Err(format!("devices[{i}].count must be at least 1")),
                Some(n) => (0..n).map(|k| format!("{}-{k}", d.name)).collect(),
            };
            for name in names {
                if devices.iter().any(|x| x.name == name) {
                    return Err(format!(
                        "devices[{i}]: device name {name:?} is used twice on a node"
                    ));
                }
                devices.push(resv1::Device {
                    name,
                    attributes: (!d.attributes.is_empty()).then(|| d.attributes.clone()),
                    capacity: (!d.capacity.is_empty()).then(|| d.capacity.clone()),
                    allow_multiple_allocations: d.allow_multiple_allocations.then_some(true),
                    ..Default::default()
                });
                if devices.len() > MAX_DEVICES_PER_SLICE {
                    return Err(format!(
                        "more than {MAX_DEVICES_PER_SLICE} devices per node (a ResourceSlice holds at most {MAX_DEVICES_PER_SLICE})"
                    ));
                }
            }
        }
        if devices.is_empty() {
            return Err("devices must list at least one device".into());
        }
        Ok(NodeDevices {
            node_pool: r.node_pool,
            driver: r.driver,
            devices,
        })
    }
}

impl NodeDevices {
    /// The ResourceSlice of node `node`.
    pub fn slice(&self, node: &str) -> resv1::ResourceSlice {
        resv1::ResourceSlice {
            metadata: ObjectMeta {
                name: Some(format!("{node}-{}", self.driver)),
                ..Default::default()
            },
            spec: resv1::ResourceSliceSpec {
                driver: self.driver.clone(),
                node_name: Some(node.to_owned()),
                pool: resv1::ResourcePool {
                    name: node.to_owned(),
                    generation: 1,
                    resource_slice_count: 1,
                },
                devices: Some(self.devices.clone()),
                ..Default::default()
            },
        }
    }
}

fn custom(kind: &'static str, namespace: &str, name: &str) -> ClusterUpdate {
    ClusterUpdate::Custom {
        kind,
        namespace: Sym::new(namespace),
        name: name.to_owned(),
    }
}

/// Fills `store` with the scenario's DRA objects; returns the events to
/// send the engine (one per object, as informers would).
/// `pool_nodes(name)` gives the node names of a node pool.
pub fn load(
    section: &DraSection,
    pool_nodes: impl Fn(&str) -> Vec<String>,
    store: &DraStore,
) -> Vec<ClusterUpdate> {
    let mut out = Vec::new();
    for c in &section.device_classes {
        store.upsert_class(c.0.clone());
        out.push(custom(store::KIND_CLASS, "", c.name()));
    }
    for s in &section.resource_slices {
        store.upsert_slice(s.0.clone());
        out.push(custom(store::KIND_SLICE, "", s.name()));
    }
    for nd in &section.node_devices {
        for node in pool_nodes(&nd.node_pool) {
            let s = nd.slice(&node);
            let name = s.metadata.name.clone().unwrap_or_default();
            store.upsert_slice(s);
            out.push(custom(store::KIND_SLICE, "", &name));
        }
    }
    for t in &section.resource_claim_templates {
        let mut t2 = t.0.clone();
        t2.metadata.namespace = Some(t.namespace().to_owned());
        store.upsert_template(t2);
    }
    for c in &section.resource_claims {
        let mut c2 = c.0.clone();
        c2.metadata.namespace = Some(c.namespace().to_owned());
        if c2.metadata.uid.is_none() {
            c2.metadata.uid = Some(format!("claim-{}/{}", c.namespace(), c.name()));
        }
        store.upsert_claim(c2);
        out.push(custom(store::KIND_CLAIM, c.namespace(), c.name()));
    }
    out
}

/// Makes `pod`'s claims from templates (the resourceclaim controller's
/// job), returning the events for the claims made. Cheap for a pod that
/// names no template.
pub fn claims_for_pod(pod: &PodInfo, store: &DraStore) -> Vec<ClusterUpdate> {
    let refs = pod.spec.raw.resource_claims.as_deref().unwrap_or(&[]);
    if !refs
        .iter()
        .any(|r| r.resource_claim_template_name.is_some())
    {
        return Vec::new();
    }
    store
        .instantiate_templates(pod)
        .iter()
        .map(|c| {
            custom(
                store::KIND_CLAIM,
                c.metadata.namespace.as_deref().unwrap_or("default"),
                c.metadata.name.as_deref().unwrap_or(""),
            )
        })
        .collect()
}

/// Every allocated device, as (driver, pool, device) → the claims holding
/// it (`namespace/name`), for checks and reports.
pub fn device_holders(store: &DraStore) -> BTreeMap<(String, String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for c in store.allocated_claims() {
        let key = format!(
            "{}/{}",
            c.metadata.namespace.as_deref().unwrap_or("default"),
            c.metadata.name.as_deref().unwrap_or("")
        );
        let results = c
            .status
            .as_ref()
            .and_then(|s| s.allocation.as_ref())
            .and_then(|a| a.devices.as_ref())
            .and_then(|d| d.results.as_ref());
        for r in results.into_iter().flatten() {
            out.entry((r.driver.clone(), r.pool.clone(), r.device.clone()))
                .or_default()
                .push(key.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DraSection, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn compact_devices_expand_to_one_slice_per_node() {
        let s = parse(
            r#"
nodeDevices:
  - nodePool: gpu
    driver: gpu.example.com
    devices:
      - {name: a, count: 2, attributes: {numa: {int: 0}}, capacity: {memory: {value: 80Gi}}}
      - {name: b, count: 2, attributes: {numa: {int: 1}}}
      - {name: shared, allowMultipleAllocations: true}
"#,
        )
        .unwrap();
        let nd = &s.node_devices[0];
        let names: Vec<&str> = nd.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a-0", "a-1", "b-0", "b-1", "shared"]);
        assert_eq!(nd.devices[4].allow_multiple_allocations, Some(true));
        let sl = nd.slice("gpu-3");
        assert_eq!(sl.metadata.name.as_deref(), Some("gpu-3-gpu.example.com"));
        assert_eq!(sl.spec.node_name.as_deref(), Some("gpu-3"));
        assert_eq!(sl.spec.pool.name, "gpu-3");
        assert_eq!(sl.spec.devices.as_ref().unwrap().len(), 5);
    }

    #[test]
    fn bad_compact_devices_are_named() {
        for (text, want) in [
            (
                "nodeDevices: [{nodePool: p, driver: d, devices: [{name: a, count: 0}]}]",
                "devices[0].count must be at least 1",
            ),
            (
                "nodeDevices: [{nodePool: p, driver: d, devices: [{name: a}, {name: a}]}]",
                "used twice",
            ),
            (
                "nodeDevices: [{nodePool: p, driver: d, devices: [{name: a, count: 200}]}]",
                "more than 128 devices",
            ),
            (
                "nodeDevices: [{nodePool: p, driver: d, devices: []}]",
                "at least one device",
            ),
            (
                "nodeDevices: [{nodePool: p, driver: d, devices: [{name: a, colour: red}]}]",
                "unknown field `colour`",
            ),
            ("deviceClasses: [{spec: {}}]", "metadata.name is required"),
            (
                "resourceClaims: [{metadata: {namespace: x}, spec: {}}]",
                "metadata.name is required",
            ),
            ("deviceClass: []", "unknown field `deviceClass`"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
