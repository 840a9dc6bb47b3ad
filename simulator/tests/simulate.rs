//! End-to-end runs of the simulator against the real engine and plugins.

use std::collections::{BTreeMap, BTreeSet};
use strata_scheduler::intern::Sym;
use strata_scheduler::resources::{MAX_RESOURCES, ResourceId, ResourceVec};
use strata_simulator::{RunOptions, Scenario, Simulation};

fn small() -> Scenario {
    Scenario::load("small").expect("built-in small scenario")
}

fn run(scenario: Scenario, seed: Option<u64>) -> (Simulation, strata_simulator::Report) {
    let opts = RunOptions {
        seed,
        ..Default::default()
    };
    let mut sim = Simulation::new(scenario, &opts).expect("simulation starts");
    let report = sim.run();
    (sim, report)
}

#[test]
fn small_scenario_binds_everything_once_without_overcommit() {
    let (sim, report) = run(small(), None);
    let total = small().pod_count();
    assert_eq!(report.pods.total, total);
    assert_eq!(report.pods.scheduled, total, "{}", report.to_table());
    assert_eq!(report.pods.unschedulable, 0);
    assert_eq!(report.double_binds, 0);
    assert_eq!(report.cache_inconsistency, None);
    // Each pod was bound by exactly one bind call.
    assert_eq!(sim.cluster().bind_calls(), total as u64);
    let placements = sim.placements();
    assert_eq!(placements.len(), total);
    assert!(placements.values().all(Option::is_some));

    // The engine's view agrees with the cluster and no node is over-committed.
    let snap = sim.scheduler().snapshot();
    sim.scheduler()
        .cache()
        .check_consistency()
        .expect("cache consistent");
    let mut on_nodes = 0;
    for n in snap.nodes().filter(|n| n.present) {
        let mut sum = ResourceVec::default();
        for p in &n.pods {
            sum.add(&p.spec.requests);
            sum[ResourceId::PODS] += 1;
            let placed = placements[&p.key()].as_deref();
            assert_eq!(placed, Some(n.name.as_str()), "pod {} placement", p.key());
        }
        assert_eq!(sum, n.requested, "node {}", n.name);
        for i in 0..MAX_RESOURCES {
            assert!(
                n.requested.0[i] <= n.allocatable.0[i],
                "node {} over-committed in slot {i}: {:?} > {:?}",
                n.name,
                n.requested,
                n.allocatable
            );
        }
        on_nodes += n.pods.len();
    }
    assert_eq!(on_nodes, total);

    // Placements honour each template's constraints.
    let node_label = |node: &str, key: &str| -> Option<&'static str> {
        snap.node_by_name(Sym::new(node))
            .and_then(|n| n.labels.get_str(key))
    };
    let zone = "topology.kubernetes.io/zone";
    let mut anti_nodes = BTreeSet::new();
    let mut spread_zones: BTreeMap<&str, i32> = BTreeMap::new();
    for (pod, node) in &placements {
        let node = node.as_deref().unwrap_or_default();
        let infra = node_label(node, "node-role.example.com/infra").is_some();
        let name = pod.trim_start_matches("default/");
        if name.starts_with("tolerations-") {
            assert!(infra, "{pod} must be on the infra pool, is on {node}");
        } else {
            assert!(
                !infra,
                "{pod} does not tolerate the infra taint but is on {node}"
            );
        }
        if name.starts_with("node-affinity-") {
            assert_eq!(node_label(node, zone), Some("zone-0"), "{pod}");
        }
        if name.starts_with("anti-affinity-") {
            assert!(
                anti_nodes.insert(node.to_owned()),
                "two anti-affinity pods on {node}"
            );
        }
        if name.starts_with("spread-") {
            *spread_zones
                .entry(node_label(node, zone).unwrap_or("?"))
                .or_default() += 1;
        }
    }
    let (min, max) = (
        spread_zones.values().min().copied().unwrap_or(0),
        spread_zones.values().max().copied().unwrap_or(0),
    );
    assert_eq!(spread_zones.len(), 3, "{spread_zones:?}");
    assert!(
        max - min <= 2,
        "spread skew {spread_zones:?} exceeds maxSkew 2"
    );

    // The report carries the figures.
    assert_eq!(report.cycle_latency.count as u64, report.cycles.total);
    assert_eq!(report.queue_to_bound_latency.count, total);
    assert!(report.utilization.nodes == 28 && report.utilization.cpu.max <= 1.0);
    assert_eq!(
        report.workloads.iter().map(|w| w.scheduled).sum::<usize>(),
        total
    );
    assert_eq!(report.events.get("Scheduled").copied(), Some(total as u64));
    // The stream workload arrives at 20/s from t=1s: 40 pods take ~2 s.
    assert!(
        report.virtual_seconds >= 2.9,
        "virtual time {}",
        report.virtual_seconds
    );
}

#[test]
fn same_seed_same_placements() {
    let (a, ra) = run(small(), Some(11));
    let (mut b, rb) = run(small(), Some(11));
    assert_eq!(ra.seed, 11);
    // Running again reports the same run.
    assert_eq!(b.run().cycles, rb.cycles);
    assert_eq!(a.placements(), b.placements());
    assert_eq!(ra.cycles, rb.cycles);
    assert_eq!(ra.pods, rb.pods);
}

const OVERFULL: &str = r#"
name: overfull
nodePools:
  - name: n
    count: 6
    allocatable: {cpu: "2", memory: 8Gi, pods: "110"}
    labels: {topology.kubernetes.io/zone: "z{index%3}"}
workloads:
  - name: spread
    count: 9
    template:
      metadata: {labels: {app: s}}
      spec:
        topologySpreadConstraints:
          - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: s}}}
        containers: [{name: c, resources: {requests: {cpu: 500m}}}]
  - name: big
    count: 12
    arrival: {rate: 4}
    template:
      spec:
        containers: [{name: c, resources: {requests: {cpu: "1"}}}]
"#;

#[test]
fn same_seed_same_placements_with_retries_and_leftovers() {
    // More cpu asked than there is: some pods are retried after backoff
    // and flushes and finally left unschedulable. Runs must still agree.
    let runs: Vec<_> = (0..2)
        .map(|_| run(Scenario::parse(OVERFULL, "overfull.yaml").unwrap(), Some(3)))
        .collect();
    let (a, ra) = &runs[0];
    let (b, rb) = &runs[1];
    assert!(ra.pods.unschedulable > 0, "{}", ra.to_table());
    assert!(ra.pods.scheduled > 0);
    assert_eq!(a.placements(), b.placements());
    assert_eq!(ra.cycles, rb.cycles);
    assert_eq!(ra.unschedulable_messages, rb.unschedulable_messages);
    assert_eq!(ra.virtual_seconds, rb.virtual_seconds);
    a.scheduler().cache().check_consistency().unwrap();
}

const IMPOSSIBLE: &str = r#"
name: impossible
nodePools:
  - name: n
    count: 3
    allocatable: {cpu: "4", memory: 16Gi, pods: "110"}
workloads:
  - name: fits
    count: 5
    template:
      spec:
        containers: [{name: c, resources: {requests: {cpu: "1"}}}]
  - name: huge
    count: 1
    template:
      spec:
        containers: [{name: c, resources: {requests: {cpu: "64"}}}]
"#;

#[test]
fn impossible_pod_is_reported_unschedulable_with_the_aggregated_message() {
    let sc = Scenario::parse(IMPOSSIBLE, "impossible.yaml").unwrap();
    let (sim, report) = run(sc, None);
    assert_eq!(report.pods.scheduled, 5, "{}", report.to_table());
    assert_eq!(report.pods.unschedulable, 1);
    let huge = report.workloads.iter().find(|w| w.name == "huge").unwrap();
    assert_eq!((huge.scheduled, huge.unschedulable), (0, 1));
    let msg = &report.unschedulable_messages[0];
    assert_eq!(msg.pods, 1);
    assert_eq!(msg.example, "default/huge-0");
    assert!(
        msg.message.contains("0/3 nodes are available"),
        "{}",
        msg.message
    );
    assert!(
        msg.message.contains("3 Insufficient cpu"),
        "{}",
        msg.message
    );
    // The pod's condition says the same.
    let cond = sim
        .cluster()
        .condition("default/huge-0")
        .expect("condition published");
    assert!(!cond.last.scheduled);
    assert_eq!(cond.last.reason, "Unschedulable");
    assert!(
        cond.last.message.contains("Insufficient cpu"),
        "{}",
        cond.last.message
    );
    assert!(report.events.get("FailedScheduling").copied().unwrap_or(0) >= 1);
    // It was retried after the unschedulable max-stay, then the run ended.
    assert!(report.cycles.unschedulable >= 2, "{:?}", report.cycles);
    assert!(
        report.virtual_seconds >= 300.0 && report.virtual_seconds < 1000.0,
        "{}",
        report.virtual_seconds
    );
    assert!(report.to_table().contains("Insufficient cpu"));
}

#[test]
fn malformed_scenario_file_names_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("strata-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.yaml");
    std::fs::write(
        &path,
        "name: broken\nnodePools:\n  - name: a\n    count: 2\n    allocatable: {cpu: \"4\"}\nworkloads:\n  - name: w\n    count: -3\n    template: {spec: {containers: [{name: c}]}}\n",
    )
    .unwrap();
    let p = path.to_string_lossy().to_string();
    let err = Scenario::load(&p).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{p}:8:")), "{err}");
    assert!(err.contains("field `workloads[0].count`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    let err = Scenario::load("no-such-scenario").unwrap_err().to_string();
    assert!(err.contains("not a built-in scenario"), "{err}");
}

#[test]
fn unknown_plugin_in_config_is_an_error_naming_the_scenario() {
    let text = "name: x\nconfig:\n  profiles:\n    - schedulerName: default-scheduler\n      plugins: {multiPoint: {enabled: [{name: NoSuchPlugin}]}}\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1}}]\n";
    let err = Scenario::parse(text, "cfg.yaml").unwrap_err().to_string();
    assert!(
        err.starts_with(
            "cfg.yaml:2: field `config.profiles[0].plugins.multiPoint.enabled[0].name`"
        ),
        "{err}"
    );
    assert!(err.contains("NoSuchPlugin"), "{err}");
}

#[test]
fn pods_for_another_scheduler_are_left_alone() {
    let text = "name: x\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1, pods: 10}}]\nworkloads:\n  - name: other\n    count: 2\n    template: {spec: {schedulerName: someone-else, containers: [{name: c}]}}\n";
    let sc = Scenario::parse(text, "other.yaml").unwrap();
    let (_sim, report) = run(sc, None);
    assert_eq!(report.pods.unschedulable, 2);
    assert!(
        report.unschedulable_messages[0]
            .message
            .contains("no profile serves")
    );
}

/// The engine's reuse of per-node results across pods of one template (and
/// its incremental best-node index) must never change a decision: the same
/// scenario with it off and on places every pod on the same node.
#[test]
fn equivalence_cache_does_not_change_placements() {
    for name in ["small", "demo"] {
        same_placements_with_cache_off_and_on(name, || {
            Scenario::load(name).expect("built-in scenario")
        });
    }
}

/// A cluster of zones and hosts with every kind of inter-pod rule the
/// engine's fast path takes by domain: hard and soft zone spread, hard and
/// soft hostname anti-affinity per service, required zone affinity to
/// another group, and existing pods whose anti-affinity repels later ones.
/// Workloads arrive interleaved, so the classes' cached state is reused
/// across other classes' placements.
fn topology_mix() -> Scenario {
    let mut text = String::from(
        "name: topology-mix\nseed: 5\nnodePools:\n  - name: g\n    count: 40\n    allocatable: {cpu: \"4\", memory: 32Gi, pods: \"110\"}\n    labels: {topology.kubernetes.io/zone: \"zone-{index%5}\", example.com/rack: \"rack-{index/7}\"}\n  - name: nozone\n    count: 3\n    allocatable: {cpu: \"4\", memory: 32Gi, pods: \"110\"}\nworkloads:\n",
    );
    let pause = "containers: [{name: c, resources: {requests: {cpu: 100m, memory: 100Mi}}}]";
    let anti = |hard: bool, app: &str| {
        let term = format!(
            "{{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: {app}}}}}}}"
        );
        if hard {
            format!("podAntiAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: [{term}]}}")
        } else {
            format!(
                "podAntiAffinity: {{preferredDuringSchedulingIgnoredDuringExecution: [{{weight: 50, podAffinityTerm: {term}}}]}}"
            )
        }
    };
    let spread = |hard: bool, app: &str, key: &str, skew: u32| {
        let when = if hard {
            "DoNotSchedule"
        } else {
            "ScheduleAnyway"
        };
        format!(
            "{{maxSkew: {skew}, topologyKey: {key}, whenUnsatisfiable: {when}, labelSelector: {{matchLabels: {{app: {app}}}}}}}"
        )
    };
    for i in 0..12 {
        let app = format!("svc-{i}");
        let (ha, hs) = (i % 4 == 0 || i % 4 == 2, i % 4 == 0 || i % 4 == 3);
        let key = if i % 3 == 0 {
            "example.com/rack"
        } else {
            "topology.kubernetes.io/zone"
        };
        text.push_str(&format!(
            "  - {{name: {app}, count: {}, arrival: {{rate: {}}}, template: {{metadata: {{labels: {{app: {app}}}}}, spec: {{affinity: {{{}}}, topologySpreadConstraints: [{}], {pause}}}}}}}\n",
            10 + i * 3,
            5 + i,
            anti(ha, &app),
            spread(hs, &app, key, 1 + (i % 2) as u32),
        ));
    }
    // A group, then pods that must share a zone with it (the first of the
    // followers may start nowhere else), and pods that keep away from it.
    text.push_str(&format!(
        "  - {{name: db, count: 6, arrival: {{rate: 3}}, template: {{metadata: {{labels: {{app: db}}}}, spec: {{affinity: {{{}}}, {pause}}}}}}}\n",
        anti(true, "web")
    ));
    text.push_str(&format!(
        "  - {{name: web, count: 30, arrival: {{rate: 7}}, start: 1, template: {{metadata: {{labels: {{app: web}}}}, spec: {{affinity: {{podAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: [{{topologyKey: topology.kubernetes.io/zone, labelSelector: {{matchLabels: {{app: db}}}}}}]}}}}, {pause}}}}}}}\n"
    ));
    text.push_str(&format!(
        "  - {{name: pref, count: 30, arrival: {{rate: 9}}, template: {{metadata: {{labels: {{app: pref}}}}, spec: {{affinity: {{podAffinity: {{preferredDuringSchedulingIgnoredDuringExecution: [{{weight: 20, podAffinityTerm: {{topologyKey: topology.kubernetes.io/zone, labelSelector: {{matchLabels: {{app: db}}}}}}}}]}}, {}}}, {pause}}}}}}}\n",
        anti(false, "pref")
    ));
    // More pods than hosts, one per host: some are left over.
    text.push_str(&format!(
        "  - {{name: toomany, count: 50, arrival: {{rate: 11}}, template: {{metadata: {{labels: {{app: toomany}}}}, spec: {{affinity: {{{}}}, {pause}}}}}}}\n",
        anti(true, "toomany")
    ));
    Scenario::parse(&text, "topology-mix").expect("topology-mix parses")
}

/// The fast path's per-domain verdicts (spread, inter-pod affinity) and
/// per-domain soft scores (preferred terms, `ScheduleAnyway` spread) pick
/// the same node as the full scan on every pod, and some pods are left
/// unschedulable by the hard rules.
#[test]
fn equivalence_cache_does_not_change_topology_placements() {
    let off = same_placements_with_cache_off_and_on("topology-mix", topology_mix);
    assert!(
        off.values().any(|n| n.is_none()),
        "some pod is unschedulable"
    );
    assert!(off.values().filter(|n| n.is_some()).count() > 200);
}

/// Super-nodes of two cabinets whose lenders (DRAM, and one HBM server per
/// super-node, and two servers outside any pool) lend while borrowers of
/// three asks (a share, an amount, one no pool can cover) arrive between
/// plain and compute pods, under a namespace cap: the pools and the cap run
/// out, so the cached answers must follow every loan.
fn memory_pool_mix() -> Scenario {
    let text = r#"name: memory-pool-mix
seed: 3
config: |
  profiles:
    - schedulerName: default-scheduler
      pluginConfig:
        - name: MemoryPool
          args:
            namespaceCaps: {team-b: 1Ti}
nodePools:
  - name: infer
    count: 24
    allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
    labels: {strata.io/supernode: "sn-{index/6}", strata.io/cabinet: "sn-{index/6}-cab-{index/3%2}"}
  - name: lend
    count: 24
    allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
    labels: {strata.io/supernode: "sn-{index/6}", strata.io/cabinet: "sn-{index/6}-cab-{index/3%2}"}
    annotations: {strata.io/memory-lendable: "50%"}
  - name: hbm
    count: 4
    allocatable: {cpu: "32", memory: 128Gi, pods: "110"}
    labels: {strata.io/supernode: "sn-{index}", strata.io/cabinet: "sn-{index}-hbm"}
    annotations: {strata.io/memory-lendable: 64Gi, strata.io/memory-medium: hbm}
  - name: alone
    count: 2
    allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
    annotations: {strata.io/memory-lendable: 32Gi}
workloads:
  - {name: compute, count: 60, arrival: {rate: 20}, template: {metadata: {namespace: batch}, spec: {containers: [{name: c, resources: {requests: {cpu: "8", memory: 64Gi}}}]}}}
  - {name: plain, count: 40, arrival: {rate: 13}, template: {spec: {containers: [{name: c, resources: {requests: {cpu: "2", memory: 32Gi}}}]}}}
  - {name: share, count: 70, arrival: {rate: 17}, template: {metadata: {namespace: team-a, annotations: {strata.io/memory-borrow: "25%"}}, spec: {containers: [{name: c, resources: {requests: {cpu: "4", memory: 96Gi}}}]}}}
  - {name: amount, count: 40, arrival: {rate: 11}, template: {metadata: {namespace: team-b, annotations: {strata.io/memory-borrow: 48Gi}}, spec: {containers: [{name: c, resources: {requests: {cpu: "2", memory: 48Gi}}}]}}}
  - {name: huge, count: 6, arrival: {rate: 3}, template: {metadata: {namespace: team-c, annotations: {strata.io/memory-borrow: 900Gi}}, spec: {containers: [{name: c, resources: {requests: {cpu: "2", memory: 16Gi}}}]}}}
"#;
    Scenario::parse(text, "memory-pool-mix").expect("memory-pool-mix parses")
}

/// MemoryPool's answers are cached as node-local ones (the plugin reports
/// the nodes its loans change): borrowers, plain pods and pods rejected for
/// their pool or their namespace's cap land exactly where the full scan puts
/// them.
#[test]
fn equivalence_cache_does_not_change_memory_pool_placements() {
    let off = same_placements_with_cache_off_and_on("memory-pool-mix", memory_pool_mix);
    let placed = |w: &str| {
        off.iter()
            .filter(|(k, v)| k.contains(&format!("/{w}-")) && v.is_some())
            .count()
    };
    assert!(placed("share") > 20, "borrowers are placed");
    assert!(
        placed("amount") > 5 && placed("amount") < 40,
        "team-b stops at its cap"
    );
    assert_eq!(placed("huge"), 0, "no pool lends 900Gi");
    assert!(
        placed("share") < 70,
        "the pools run out: {}",
        placed("share")
    );
}

/// Runs the scenario `make` builds with the equivalence cache off and with
/// 32 classes, asserts no double bind and the same node for every pod, and
/// returns the placements.
fn same_placements_with_cache_off_and_on(
    what: &str,
    make: impl Fn() -> Scenario,
) -> std::collections::BTreeMap<String, Option<String>> {
    let placements = |classes: usize| {
        let opts = RunOptions {
            equivalence_cache: Some(classes),
            ..Default::default()
        };
        let mut sim = Simulation::new(make(), &opts).expect("simulation starts");
        let report = sim.run();
        assert_eq!(report.double_binds, 0);
        sim.placements()
    };
    let off = placements(0);
    let on = placements(32);
    assert_eq!(off.len(), on.len());
    let differ: Vec<_> = off
        .iter()
        .filter(|(k, v)| on.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: placements differ, e.g. {differ:?}"
    );
    off
}

/// A pass over 512+ nodes may run on the worker pool or on the scheduling
/// thread, whichever has lately been cheaper: the placements must not
/// depend on it. 600 nodes with zone spread and preferred anti-affinity,
/// the equivalence cache off so every pod pays full Filter and Score
/// passes, with one thread and with two.
#[test]
fn the_worker_pool_does_not_change_placements() {
    let text = "name: pool-mix\nseed: 9\nnodePools:\n  - name: n\n    count: 600\n    allocatable: {cpu: \"4\", memory: 32Gi, pods: \"110\"}\n    labels: {topology.kubernetes.io/zone: \"zone-{index%7}\"}\nworkloads:\n  - {name: web, count: 120, arrival: {rate: 50}, template: {metadata: {labels: {app: web}}, spec: {topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}], affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 10, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}}]}}, containers: [{name: c, resources: {requests: {cpu: 300m, memory: 1Gi}}}]}}}\n";
    let placements = |threads: usize| {
        let opts = RunOptions {
            parallelism: Some(threads),
            equivalence_cache: Some(0),
            ..Default::default()
        };
        let scenario = Scenario::parse(text, "pool-mix").expect("pool-mix parses");
        let mut sim = Simulation::new(scenario, &opts).expect("simulation starts");
        let report = sim.run();
        assert_eq!(report.double_binds, 0);
        assert_eq!(report.pods.scheduled, 120);
        (sim.placements(), report.worker_pool)
    };
    let (alone, pool1) = placements(1);
    assert_eq!(pool1.threads, 1);
    assert_eq!(pool1.long_passes, 0);
    let (pooled, pool2) = placements(2);
    assert_eq!(pool2.threads, 2);
    // Every pod has a Filter pass and Score passes over 600 nodes.
    assert!(pool2.long_passes >= 240, "{pool2:?}");
    // The first pass of each kind always tries the pool.
    assert!(pool2.pooled_passes >= 2, "{pool2:?}");
    assert_eq!(alone, pooled);
}
