//! LeaderWorkerSets as the scaler sees them: which opt in, their replica
//! count, and one replica as the hypothetical group the PodGroup plugin's
//! what-if plans.
//!
//! An LWS opts in with the annotation [`MODEL_ANNOTATION`] naming a
//! capacity model of the `scaler:` configuration. One LWS replica is one
//! group; the model says how many prefill and decode instances it stands
//! for. The replica's pods are built from the LWS templates exactly as the
//! LWS controller labels and annotates them (set name, group index, worker
//! index, size, exclusive topology, subgroup size), so the what-if plans
//! the same group the PodGroup plugin will later place.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use strata_plugins::pod_group::WhatIfGroup;
use strata_plugins::pod_group::lws::{
    self, EXCLUSIVE_ANNOTATION, GROUP_INDEX_LABEL, NAME_LABEL, SIZE_ANNOTATION,
    SUBGROUP_EXCLUSIVE_ANNOTATION, SUBGROUP_POLICY_ANNOTATION, SUBGROUP_SIZE_ANNOTATION,
    WORKER_INDEX_LABEL,
};
use strata_scheduler::model::PodInfo;

/// Opt-in: the name of the capacity model (`scaler.models.NAME`).
pub const MODEL_ANNOTATION: &str = "strata.io/scaler-model";
/// Optional: fewest replicas (overrides the model's `minGroups`).
pub const MIN_ANNOTATION: &str = "strata.io/scaler-min-replicas";
/// Optional: most replicas (overrides the model's `maxGroups`).
pub const MAX_ANNOTATION: &str = "strata.io/scaler-max-replicas";
/// Optional: the requests-per-second query of this service.
pub const QUERY_REQUESTS_ANNOTATION: &str = "strata.io/scaler-query-requests";
/// Optional: the prompt-tokens-per-second query of this service.
pub const QUERY_PROMPT_ANNOTATION: &str = "strata.io/scaler-query-prompt-tokens";
/// Optional: the output-tokens-per-second query of this service.
pub const QUERY_OUTPUT_ANNOTATION: &str = "strata.io/scaler-query-output-tokens";

/// `leaderworkerset.x-k8s.io/v1` LeaderWorkerSet, as a dynamic resource.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("leaderworkerset.x-k8s.io", "v1", "LeaderWorkerSet"),
        "leaderworkersets",
    )
}

/// What is wrong with an opted-in LWS.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LwsError {
    /// The field or annotation.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> LwsError {
    LwsError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// One opted-in LeaderWorkerSet.
#[derive(Clone, Debug)]
pub struct Lws {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (for events).
    pub uid: String,
    /// The capacity model named.
    pub model: String,
    /// `spec.replicas` (1 when unset, as LWS defaults it).
    pub replicas: u32,
    /// Pods per replica.
    pub size: u32,
    /// Annotation overrides of the model's bounds.
    pub min: Option<u32>,
    /// Annotation override of the model's maximum.
    pub max: Option<u32>,
    /// The object's annotations.
    pub annotations: BTreeMap<String, String>,
    spec: Value,
}

fn count(field: &str, v: &str) -> Result<u32, LwsError> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| bad(field, format!("{v:?} is not a whole number")))
}

impl Lws {
    /// Reads an LWS; `Ok(None)` when it does not opt in.
    pub fn from_object(o: &DynamicObject) -> Result<Option<Lws>, LwsError> {
        let ann: BTreeMap<String, String> = o.metadata.annotations.clone().unwrap_or_default();
        let Some(model) = ann.get(MODEL_ANNOTATION) else {
            return Ok(None);
        };
        let spec = o.data.get("spec").cloned().unwrap_or(Value::Null);
        let replicas = match spec.get("replicas") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("spec.replicas", format!("{v} is not a replica count")))?,
        };
        let lwt = &spec["leaderWorkerTemplate"];
        let size = match lwt.get("size") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    bad(
                        "spec.leaderWorkerTemplate.size",
                        format!("{v} is not a size"),
                    )
                })?,
        };
        if !lwt["workerTemplate"].is_object() {
            return Err(bad(
                "spec.leaderWorkerTemplate.workerTemplate",
                "is missing: the replica's pods are unknown",
            ));
        }
        Ok(Some(Lws {
            namespace: o.metadata.namespace.clone().unwrap_or_default(),
            name: o.metadata.name.clone().unwrap_or_default(),
            uid: o.metadata.uid.clone().unwrap_or_default(),
            model: model.trim().to_owned(),
            replicas,
            size,
            min: ann
                .get(MIN_ANNOTATION)
                .map(|v| count(MIN_ANNOTATION, v))
                .transpose()?,
            max: ann
                .get(MAX_ANNOTATION)
                .map(|v| count(MAX_ANNOTATION, v))
                .transpose()?,
            annotations: ann,
            spec,
        }))
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Pod `worker` of replica `index`, as the LWS controller would make
    /// it (the leader from `leaderTemplate` when there is one).
    pub fn pod(&self, index: u32, worker: u32) -> Result<Pod, LwsError> {
        let lwt = &self.spec["leaderWorkerTemplate"];
        let tmpl = if worker == 0 && lwt["leaderTemplate"].is_object() {
            &lwt["leaderTemplate"]
        } else {
            &lwt["workerTemplate"]
        };
        let mut labels = tmpl["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels[NAME_LABEL] = json!(self.name);
        labels[GROUP_INDEX_LABEL] = json!(index.to_string());
        labels[WORKER_INDEX_LABEL] = json!(worker.to_string());
        let mut ann = tmpl["metadata"]["annotations"].clone();
        if !ann.is_object() {
            ann = json!({});
        }
        ann[SIZE_ANNOTATION] = json!(self.size.to_string());
        for k in [EXCLUSIVE_ANNOTATION, SUBGROUP_EXCLUSIVE_ANNOTATION] {
            if let Some(v) = self.annotations.get(k) {
                ann[k] = json!(v);
            }
        }
        let sgp = &lwt["subGroupPolicy"];
        if let Some(n) = sgp["subGroupSize"].as_u64() {
            ann[SUBGROUP_SIZE_ANNOTATION] = json!(n.to_string());
            if let Some(t) = sgp["type"].as_str() {
                ann[SUBGROUP_POLICY_ANNOTATION] = json!(t);
            }
        }
        let name = if worker == 0 {
            format!("{}-{index}", self.name)
        } else {
            format!("{}-{index}-{worker}", self.name)
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.namespace,
                         "uid": format!("what-if/{}/{name}", self.namespace),
                         "labels": labels, "annotations": ann},
            "spec": tmpl["spec"].clone(),
        }))
        .map_err(|e| {
            bad(
                "spec.leaderWorkerTemplate",
                format!("the pod template does not read as a pod: {e}"),
            )
        })
    }

    /// One more replica (index `replicas`) as a what-if group.
    pub fn what_if_group(&self) -> Result<WhatIfGroup, LwsError> {
        let compile = |w: u32| -> Result<PodInfo, LwsError> {
            let pod = self.pod(self.replicas, w)?;
            PodInfo::compile(&pod)
                .map_err(|e| bad("spec.leaderWorkerTemplate", format!("pod template: {e}")))
        };
        let leader = compile(0)?;
        let (shape, _) = lws::parse(&leader.labels, &leader.annotations)
            .map_err(|e| bad(&e.field, e.message))?;
        let spec = shape.spec().map_err(|e| bad(&e.field, e.message))?;
        let mut members = vec![(Arc::new(leader), 1)];
        if self.size > 1 {
            if shape.subgroup_size.is_some() {
                // Subgroups are told apart by worker index: one template each.
                for w in 1..self.size {
                    members.push((Arc::new(compile(w)?), 1));
                }
            } else {
                members.push((Arc::new(compile(1)?), self.size - 1));
            }
        }
        Ok(WhatIfGroup {
            spec,
            members,
            displace_below: None,
        })
    }
}

/// Replicas of `set` in `namespace` whose every pod is bound or assumed,
/// from the engine's snapshot: group index → pods placed.
pub fn placed_replicas<'a>(
    pods: impl Iterator<Item = &'a PodInfo>,
    namespace: &str,
    set: &str,
) -> BTreeMap<u32, u32> {
    let mut per: BTreeMap<u32, u32> = BTreeMap::new();
    for p in pods {
        if p.namespace.as_str() != namespace || p.labels.get_str(NAME_LABEL) != Some(set) {
            continue;
        }
        if let Some(i) = p
            .labels
            .get_str(GROUP_INDEX_LABEL)
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            *per.entry(i).or_default() += 1;
        }
    }
    per
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn lws_object(replicas: u32, size: u32, gpus: u32) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": {"name": "llm", "namespace": "serving", "uid": "u1",
                         "annotations": {MODEL_ANNOTATION: "m", MAX_ANNOTATION: "4",
                                         EXCLUSIVE_ANNOTATION: "strata.io/supernode"}},
            "spec": {"replicas": replicas, "leaderWorkerTemplate": {"size": size,
                "workerTemplate": {"metadata": {"labels": {"app": "llm"}},
                    "spec": {"schedulerName": "strata-scheduler", "containers": [{"name": "w", "image": "vllm",
                        "resources": {"requests": {"nvidia.com/gpu": gpus.to_string()}}}]}}}}
        }))
        .unwrap()
    }

    #[test]
    fn an_opted_in_lws_reads_and_its_replica_is_a_whole_group() {
        let l = Lws::from_object(&lws_object(2, 3, 8)).unwrap().unwrap();
        assert_eq!((l.replicas, l.size, l.max), (2, 3, Some(4)));
        assert_eq!(l.model, "m");
        let q = l.what_if_group().unwrap();
        assert_eq!(q.spec.min_member, 3);
        assert_eq!(
            q.spec.required_level.as_deref(),
            Some("strata.io/supernode")
        );
        assert_eq!(q.members.iter().map(|(_, n)| n).sum::<u32>(), 3);
        let leader = &q.members[0].0;
        assert_eq!(leader.labels.get_str(GROUP_INDEX_LABEL), Some("2"));
        assert_eq!(&*leader.name, "llm-2");
    }

    #[test]
    fn subgroups_get_a_template_per_worker() {
        let mut o = lws_object(1, 5, 8);
        o.data["spec"]["leaderWorkerTemplate"]["subGroupPolicy"] = json!({"subGroupSize": 2});
        let l = Lws::from_object(&o).unwrap().unwrap();
        let q = l.what_if_group().unwrap();
        assert_eq!(q.members.len(), 5);
        assert!(!q.spec.subgroups.is_empty());
    }

    #[test]
    fn not_opted_in_or_malformed() {
        let mut o = lws_object(1, 2, 8);
        o.metadata.annotations = None;
        assert!(Lws::from_object(&o).unwrap().is_none());
        let mut o = lws_object(1, 2, 8);
        o.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(MIN_ANNOTATION.into(), "few".into());
        let e = Lws::from_object(&o).unwrap_err();
        assert_eq!(e.field, MIN_ANNOTATION);
        let mut o = lws_object(1, 2, 8);
        o.data["spec"]["replicas"] = json!(-1);
        assert_eq!(Lws::from_object(&o).unwrap_err().field, "spec.replicas");
        let mut o = lws_object(1, 2, 8);
        o.data["spec"]["leaderWorkerTemplate"]["workerTemplate"] = json!(null);
        assert!(Lws::from_object(&o).is_err());
    }
}
