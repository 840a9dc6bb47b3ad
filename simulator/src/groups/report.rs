//! The group report of a finished run and the group-aware / pod-by-pod
//! comparison.
//!
//! [`GroupReport`] is computed from the final placements: groups complete,
//! partly bound (must be zero with PodGroup enabled), the share of each group
//! inside one super-node and one cabinet, and accelerators left idle in
//! partly used super-nodes. [`compare`] runs a scenario twice — as written
//! (group-aware) and with PodGroup replaced by PrioritySort (pod by pod, as
//! kube-scheduler would) — so both are measured on the same pods.

use super::stamp::group_key;
use crate::report::{Latency, Report};
use crate::scenario::{ConfigText, Scenario};
use crate::sim::{RunOptions, SimError, Simulation};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use strata_scheduler::resources::ResourceId;

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
    /// Time to place a group (groups with `minMember` bound): the
    /// scheduling-cycle time of all its members' attempts, failed included.
    pub time_to_place_scheduler: Latency,
    /// Time to place a group in virtual time: from the arrival of its
    /// `minMember`-th member to the bind of its last.
    pub time_to_place_virtual: Latency,
    /// Binds of group members checked as they happened.
    pub binds_checked: u64,
    /// Binds made while fewer than `minMember` members of the group were
    /// bound or past Permit, plus groups left with `0 < bound < minMember`
    /// at the end (must be zero group-aware).
    pub partial_bind_violations: usize,
    /// Groups with at least one such violation.
    pub groups_with_violations: usize,
    /// The first violations, as text.
    pub violation_examples: Vec<String>,
}

/// How many violations a report spells out.
const MAX_VIOLATION_EXAMPLES: usize = 5;

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
        if let Some(g) = group_key(&a.pod) {
            groups.entry(g).or_default().push(node);
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
    if let Some(audit) = sim.bind_audit() {
        let mut times = audit.group_times();
        r.time_to_place_scheduler = Latency::from_samples(&mut times.scheduler);
        r.time_to_place_virtual = Latency::from_samples(&mut times.latency);
        let v = audit.violations();
        r.binds_checked = audit.binds_checked();
        r.partial_bind_violations = v.len();
        r.groups_with_violations = v
            .iter()
            .map(|x| x.group.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        r.violation_examples = v
            .iter()
            .take(MAX_VIOLATION_EXAMPLES)
            .map(ToString::to_string)
            .collect();
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
        let ms = |v: f64| {
            if v >= 1000.0 {
                format!("{:.2}s", v / 1000.0)
            } else {
                format!("{v:.2}ms")
            }
        };
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
                8 => {
                    let secs = r.scheduling_seconds;
                    if secs > 0.0 {
                        format!("{:.1}", g.complete as f64 / secs)
                    } else {
                        "-".into()
                    }
                }
                9 => ms(g.time_to_place_scheduler.p50_ms),
                10 => ms(g.time_to_place_scheduler.p90_ms),
                11 => ms(g.time_to_place_scheduler.p99_ms),
                12 => ms(g.time_to_place_scheduler.max_ms),
                13 => ms(g.time_to_place_virtual.p50_ms),
                14 => ms(g.time_to_place_virtual.p90_ms),
                15 => ms(g.time_to_place_virtual.p99_ms),
                16 => ms(g.time_to_place_virtual.max_ms),
                17 => g.binds_checked.to_string(),
                _ => format!(
                    "{} in {}",
                    g.partial_bind_violations, g.groups_with_violations
                ),
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
            "time to place, scheduler p50",
            "time to place, scheduler p90",
            "time to place, scheduler p99",
            "time to place, scheduler max",
            "time to place, virtual p50",
            "time to place, virtual p90",
            "time to place, virtual p99",
            "time to place, virtual max",
            "group binds checked",
            "partial-bind violations (in groups)",
        ];
        for (i, n) in names.iter().enumerate() {
            row(&mut s, n, f(ga, ra, i), pb.map(|(r, g)| f(g, r, i)));
        }
        for (mode, g) in
            std::iter::once(("group-aware", ga)).chain(pb.map(|(_, g)| ("pod-by-pod", g)))
        {
            for v in &g.violation_examples {
                let _ = writeln!(s, "  violation ({mode}): {v}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gangs_small_is_whole_and_local_group_aware_but_not_pod_by_pod() {
        let sc = Scenario::load("gangs-small").unwrap();
        let c = compare(sc, &RunOptions::default(), "nvidia.com/gpu", true).unwrap();
        let (r, g) = &c.group_aware;
        assert_eq!(r.double_binds, 0);
        assert!(r.cache_inconsistency.is_none());
        assert_eq!(g.groups, 5);
        assert_eq!(g.partly_bound, 0, "{g:?}");
        assert_eq!(g.partial_bind_violations, 0, "{g:?}");
        assert!(g.binds_checked >= 24, "{g:?}");
        assert!(g.complete >= 4, "{g:?}");
        assert_eq!(g.time_to_place_scheduler.count, g.complete, "{g:?}");
        assert!(g.time_to_place_scheduler.p99_ms > 0.0, "{g:?}");
        assert!(g.in_one_supernode >= 0.75, "{g:?}");
        let (_, p) = c.pod_by_pod.as_ref().unwrap();
        assert!(
            p.partly_bound > 0,
            "pod by pod leaves groups partly bound: {p:?}"
        );
        assert!(
            p.partial_bind_violations > 0 && p.groups_with_violations > 0,
            "the check sees pod-by-pod binds: {p:?}"
        );
        assert!(g.supernode_share > p.supernode_share, "{g:?} vs {p:?}");
        assert!(c.to_table().contains("groups partly bound"));
    }
}
