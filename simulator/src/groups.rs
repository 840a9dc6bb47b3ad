//! Groups in scenarios: stamping group membership onto a workload's pods,
//! and measuring how groups were placed.
//!
//! A workload with `group: {name: job, size: 8}` labels pod `i` with
//! `strata.io/pod-group: job-{i / size}`; the template's annotations
//! (`strata.io/min-member`, `strata.io/topology-required-level`, ...) define
//! the group, so a scenario needs no PodGroup objects. Two workloads that
//! share a group `name` (prefill and decode templates) build PD units: pod
//! `i` of each joins unit `{name}-{i / size}`.
//!
//! [`GroupReport`] is computed from the final placements: groups complete,
//! partly bound (must be zero with PodGroup enabled), the share of each group
//! inside one super-node and one cabinet, and accelerators left idle in
//! partly used super-nodes. [`compare`] runs a scenario twice — as written
//! (group-aware) and with PodGroup replaced by PrioritySort (pod by pod, as
//! kube-scheduler would) — so both are measured on the same pods.

use crate::report::Report;
use crate::scenario::{ConfigText, Scenario};
use crate::sim::{RunOptions, SimError, Simulation};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use strata_scheduler::labels::Labels;
use strata_scheduler::model::PodInfo;
use strata_scheduler::resources::ResourceId;

/// The label that names a pod's group.
pub const GROUP_LABEL: &str = "strata.io/pod-group";

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

/// How groups were placed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct GroupReport {
    /// Groups in the scenario.
    pub groups: usize,
    /// Groups with every member bound.
    pub complete: usize,
    /// Groups with some but not all members bound.
    pub partly_bound: usize,
    /// Complete groups entirely inside one super-node (fraction).
    pub in_one_supernode: f64,
    /// Complete groups entirely inside one cabinet (fraction).
    pub in_one_cabinet: f64,
    /// Mean share of a complete group's members in its main super-node.
    pub supernode_share: f64,
    /// Mean share of a complete group's members in its main cabinet.
    pub cabinet_share: f64,
    /// Accelerators idle in super-nodes that are partly used.
    pub idle_in_partly_used_supernodes: i64,
    /// Super-nodes partly used.
    pub partly_used_supernodes: usize,
    /// The accelerator resource measured.
    pub accelerator: String,
}

/// Measures group placement from a finished simulation.
pub fn measure(sim: &Simulation, scenario: &Scenario, accelerator: &str) -> GroupReport {
    let placements = sim.placements();
    let accel = ResourceId::lookup(accelerator);
    // Node name -> (super-node, cabinet, accelerators).
    let mut nodes: FxHashMap<String, (String, String, i64)> = FxHashMap::default();
    for pool in &scenario.node_pools {
        for i in 0..pool.count {
            let n = pool.node(u64::from(i));
            let l = n.metadata.labels.clone().unwrap_or_default();
            let alloc = accel
                .and_then(|_| {
                    n.status
                        .as_ref()?
                        .allocatable
                        .as_ref()?
                        .get(accelerator)
                        .cloned()
                })
                .and_then(|q| q.0.parse::<i64>().ok())
                .unwrap_or(0);
            nodes.insert(
                n.metadata.name.clone().unwrap_or_default(),
                (
                    l.get("strata.io/supernode").cloned().unwrap_or_default(),
                    l.get("strata.io/cabinet").cloned().unwrap_or_default(),
                    alloc,
                ),
            );
        }
    }
    let mut used: BTreeMap<String, i64> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for a in scenario.arrivals() {
        let key = a.pod.key();
        let node = placements.get(&key).cloned().flatten();
        if let (Some(n), Some(id)) = (&node, accel)
            && let Some((sn, _, _)) = nodes.get(n)
        {
            *used.entry(sn.clone()).or_default() += a.pod.spec.requests[id];
        }
        if let Some(g) = a.pod.labels.get_str(GROUP_LABEL) {
            groups.entry(g.to_owned()).or_default().push(node);
        }
    }
    let mut r = GroupReport {
        groups: groups.len(),
        accelerator: accelerator.to_owned(),
        ..Default::default()
    };
    let (mut one_sn, mut one_cab, mut sn_share, mut cab_share) = (0usize, 0usize, 0.0, 0.0);
    for members in groups.values() {
        let bound: Vec<&String> = members.iter().flatten().collect();
        if bound.is_empty() {
            continue;
        }
        if bound.len() < members.len() {
            r.partly_bound += 1;
            continue;
        }
        r.complete += 1;
        let share = |f: &dyn Fn(&(String, String, i64)) -> String| -> (usize, f64) {
            let mut c: BTreeMap<String, usize> = BTreeMap::new();
            for n in &bound {
                if let Some(x) = nodes.get(*n) {
                    *c.entry(f(x)).or_default() += 1;
                }
            }
            let top = c.values().copied().max().unwrap_or(0);
            (c.len(), top as f64 / bound.len() as f64)
        };
        let (nsn, s) = share(&|x| x.0.clone());
        let (ncab, c) = share(&|x| format!("{}/{}", x.0, x.1));
        one_sn += usize::from(nsn == 1);
        one_cab += usize::from(ncab == 1);
        sn_share += s;
        cab_share += c;
    }
    if r.complete > 0 {
        let n = r.complete as f64;
        r.in_one_supernode = one_sn as f64 / n;
        r.in_one_cabinet = one_cab as f64 / n;
        r.supernode_share = sn_share / n;
        r.cabinet_share = cab_share / n;
    }
    let mut cap: BTreeMap<String, i64> = BTreeMap::new();
    for (sn, _, a) in nodes.values() {
        *cap.entry(sn.clone()).or_default() += a;
    }
    for (sn, c) in cap {
        let u = used.get(&sn).copied().unwrap_or(0);
        if u > 0 && u < c {
            r.partly_used_supernodes += 1;
            r.idle_in_partly_used_supernodes += c - u;
        }
    }
    r
}

/// One scenario placed group-aware and pod by pod.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    /// Group-aware run: engine report and group report.
    pub group_aware: (Report, GroupReport),
    /// Pod-by-pod run (PodGroup disabled, PrioritySort as QueueSort).
    pub pod_by_pod: Option<(Report, GroupReport)>,
}

/// The configuration that schedules pod by pod: PodGroup disabled.
pub const POD_BY_POD_CONFIG: &str = "profiles:
  - schedulerName: default-scheduler
    plugins:
      multiPoint:
        disabled: [{name: PodGroup}]
      queueSort:
        enabled: [{name: PrioritySort}]
";

/// Runs `scenario` group-aware, and (if `pod_by_pod`) again pod by pod.
pub fn compare(
    scenario: Scenario,
    opts: &RunOptions,
    accelerator: &str,
    pod_by_pod: bool,
) -> Result<Comparison, SimError> {
    let mut sim = Simulation::new(scenario.clone(), opts)?;
    let report = sim.run();
    let groups = measure(&sim, &scenario, accelerator);
    drop(sim);
    let second = if pod_by_pod {
        let mut plain = scenario.clone();
        plain.config = Some(ConfigText(POD_BY_POD_CONFIG.to_owned()));
        let mut sim = Simulation::new(plain, opts)?;
        let report = sim.run();
        let g = measure(&sim, &scenario, accelerator);
        Some((report, g))
    } else {
        None
    };
    Ok(Comparison {
        group_aware: (report, groups),
        pod_by_pod: second,
    })
}

impl Comparison {
    /// A side-by-side table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let (ra, ga) = &self.group_aware;
        let row = |s: &mut String, name: &str, a: String, b: Option<String>| {
            let _ = writeln!(s, "  {name:<44} {a:>14} {:>14}", b.unwrap_or_default());
        };
        let _ = writeln!(s, "groups ({} accelerators)", ga.accelerator);
        row(
            &mut s,
            "",
            "group-aware".into(),
            self.pod_by_pod.as_ref().map(|_| "pod-by-pod".into()),
        );
        let pb = self.pod_by_pod.as_ref();
        let f = |g: &GroupReport, r: &Report, which: usize| -> String {
            match which {
                0 => format!("{}/{}", g.complete, g.groups),
                1 => g.partly_bound.to_string(),
                2 => format!("{:.1}%", g.in_one_supernode * 100.0),
                3 => format!("{:.1}%", g.in_one_cabinet * 100.0),
                4 => format!("{:.1}%", g.supernode_share * 100.0),
                5 => format!("{:.1}%", g.cabinet_share * 100.0),
                6 => format!(
                    "{} in {}",
                    g.idle_in_partly_used_supernodes, g.partly_used_supernodes
                ),
                7 => format!("{:.3}s", r.scheduling_seconds),
                _ => {
                    let secs = r.scheduling_seconds;
                    if secs > 0.0 {
                        format!("{:.1}", g.complete as f64 / secs)
                    } else {
                        "-".into()
                    }
                }
            }
        };
        let names = [
            "groups complete",
            "groups partly bound",
            "complete groups inside one super-node",
            "complete groups inside one cabinet",
            "mean share in the main super-node",
            "mean share in the main cabinet",
            "idle accelerators in partly used super-nodes",
            "scheduling time",
            "groups placed per second",
        ];
        for (i, n) in names.iter().enumerate() {
            row(&mut s, n, f(ga, ra, i), pb.map(|(r, g)| f(g, r, i)));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn gangs_small_is_whole_and_local_group_aware_but_not_pod_by_pod() {
        let sc = Scenario::load("gangs-small").unwrap();
        let c = compare(sc, &RunOptions::default(), "nvidia.com/gpu", true).unwrap();
        let (r, g) = &c.group_aware;
        assert_eq!(r.double_binds, 0);
        assert!(r.cache_inconsistency.is_none());
        assert_eq!(g.groups, 5);
        assert_eq!(g.partly_bound, 0, "{g:?}");
        assert!(g.complete >= 4, "{g:?}");
        assert!(g.in_one_supernode >= 0.75, "{g:?}");
        let (_, p) = c.pod_by_pod.as_ref().unwrap();
        assert!(
            p.partly_bound > 0,
            "pod by pod leaves groups partly bound: {p:?}"
        );
        assert!(g.supernode_share > p.supernode_share, "{g:?} vs {p:?}");
        assert!(c.to_table().contains("groups partly bound"));
    }
}
