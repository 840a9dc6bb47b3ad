//! Stamping group membership onto a workload's pods.
//!
//! A workload with `group: {name: job, size: 8}` labels pod `i` with
//! `strata.io/pod-group: job-{i / size}`; the template's annotations
//! (`strata.io/min-member`, `strata.io/topology-required-level`, ...) define
//! the group, so a scenario needs no PodGroup objects. Two workloads that
//! share a group `name` (prefill and decode templates) build PD units: pod
//! `i` of each joins unit `{name}-{i / size}`.

use std::sync::Arc;
use strata_plugins::pod_group::lws;
use strata_scheduler::labels::Labels;
use strata_scheduler::model::PodInfo;

/// The label that names a pod's group.
pub const GROUP_LABEL: &str = "strata.io/pod-group";

/// The coscheduling plugin's group label (scheduler-plugins).
pub const COSCHEDULING_LABEL: &str = "scheduling.x-k8s.io/pod-group";

/// The group a pod belongs to (`namespace/name`), by the Strata or the
/// coscheduling label, else its LeaderWorkerSet replica (`set-index`), as
/// the PodGroup plugin recognises them.
pub fn group_key(pod: &PodInfo) -> Option<String> {
    let name = pod
        .labels
        .get_str(GROUP_LABEL)
        .or_else(|| pod.labels.get_str(COSCHEDULING_LABEL))
        .or_else(|| lws::replica_of(&pod.labels).map(|s| s.as_str()))?;
    Some(format!("{}/{name}", pod.namespace.as_str()))
}

/// How a workload's pods are grouped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub enum GroupKind {
    /// The `strata.io/pod-group` label (the template's annotations define
    /// the group).
    #[default]
    PodGroup,
    /// As the LeaderWorkerSet controller makes them: pod `i` is worker
    /// `i % size` of replica `i / size` of the set `name` (labels
    /// `leaderworkerset.sigs.k8s.io/name`, `group-index`, `worker-index`,
    /// `group-key`, annotation `size`); the template may add LWS's
    /// `exclusive-topology` and subgroup annotations.
    LeaderWorkerSet,
}

/// A workload's grouping.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadGroup {
    /// Group name prefix; pod `i` joins `{name}-{i / size}`.
    pub name: String,
    /// Pods of this workload per group.
    pub size: u32,
    /// PodGroup label (default) or LeaderWorkerSet replicas.
    #[serde(default)]
    pub kind: GroupKind,
}

impl WorkloadGroup {
    /// The labels pod `index` gets (as the PodGroup plugin or the
    /// LeaderWorkerSet controller would put them).
    pub fn labels(&self, index: u32) -> Vec<(&'static str, String)> {
        let size = self.size.max(1);
        let group = format!("{}-{}", self.name, index / size);
        match self.kind {
            GroupKind::PodGroup => vec![(GROUP_LABEL, group)],
            GroupKind::LeaderWorkerSet => vec![
                (lws::NAME_LABEL, self.name.clone()),
                (lws::GROUP_INDEX_LABEL, (index / size).to_string()),
                (lws::WORKER_INDEX_LABEL, (index % size).to_string()),
                (lws::GROUP_KEY_LABEL, group),
            ],
        }
    }

    /// The annotations every pod gets (LWS's `size`).
    pub fn annotations(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            GroupKind::PodGroup => Vec::new(),
            GroupKind::LeaderWorkerSet => {
                vec![(lws::SIZE_ANNOTATION, self.size.max(1).to_string())]
            }
        }
    }

    /// Pod `index` with the group label set.
    pub fn stamp(&self, index: u32, pod: PodInfo) -> PodInfo {
        let group = format!("{}-{}", self.name, index / self.size.max(1));
        let added = self.labels(index);
        let pairs: Vec<(&str, &str)> = pod
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(added.iter().map(|(k, v)| (*k, v.as_str())))
            .collect();
        let labels = Labels::from_pairs(pairs);
        let extra = self.annotations();
        let annotations = if extra.is_empty() {
            pod.annotations.clone()
        } else {
            let mut a = (*pod.annotations).clone();
            a.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            Arc::new(a)
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        pod.equivalence.hash(&mut h);
        group.hash(&mut h);
        PodInfo {
            labels: Arc::new(labels),
            annotations,
            equivalence: h.finish(),
            ..pod
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    #[test]
    fn stamp_labels_consecutive_pods_into_groups() {
        let g = WorkloadGroup {
            name: "job".into(),
            size: 4,
            kind: GroupKind::PodGroup,
        };
        let base = Scenario::load("gangs-small").unwrap().workloads[0]
            .template
            .compiled
            .clone();
        let p = g.stamp(5, base.with_identity("u5", "p5"));
        assert_eq!(p.labels.get_str(GROUP_LABEL), Some("job-1"));
        assert_eq!(p.labels.get_str("app"), Some("big"));
        assert_ne!(p.equivalence, base.equivalence);
    }
}
