//! Stamping group membership onto a workload's pods.
//!
//! A workload with `group: {name: job, size: 8}` labels pod `i` with
//! `strata.io/pod-group: job-{i / size}`; the template's annotations
//! (`strata.io/min-member`, `strata.io/topology-required-level`, ...) define
//! the group, so a scenario needs no PodGroup objects. Two workloads that
//! share a group `name` (prefill and decode templates) build PD units: pod
//! `i` of each joins unit `{name}-{i / size}`.

use std::sync::Arc;
use strata_scheduler::labels::Labels;
use strata_scheduler::model::PodInfo;

/// The label that names a pod's group.
pub const GROUP_LABEL: &str = "strata.io/pod-group";

/// The coscheduling plugin's group label (scheduler-plugins).
pub const COSCHEDULING_LABEL: &str = "scheduling.x-k8s.io/pod-group";

/// The group a pod belongs to (`namespace/name`), by the Strata or the
/// coscheduling label.
pub fn group_key(pod: &PodInfo) -> Option<String> {
    let name = pod
        .labels
        .get_str(GROUP_LABEL)
        .or_else(|| pod.labels.get_str(COSCHEDULING_LABEL))?;
    Some(format!("{}/{name}", pod.namespace.as_str()))
}

/// A workload's grouping.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadGroup {
    /// Group name prefix; pod `i` joins `{name}-{i / size}`.
    pub name: String,
    /// Pods of this workload per group.
    pub size: u32,
}

impl WorkloadGroup {
    /// Pod `index` with the group label set.
    pub fn stamp(&self, index: u32, pod: PodInfo) -> PodInfo {
        let group = format!("{}-{}", self.name, index / self.size.max(1));
        let pairs: Vec<(&str, &str)> = pod
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(std::iter::once((GROUP_LABEL, group.as_str())))
            .collect();
        let labels = Labels::from_pairs(pairs);
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        pod.equivalence.hash(&mut h);
        group.hash(&mut h);
        PodInfo {
            labels: Arc::new(labels),
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
