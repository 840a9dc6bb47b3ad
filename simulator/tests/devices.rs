//! The supernode-16k-devices scenario at a small scale: every device pod is
//! placed with its devices chosen by identity, and the engine's reuse of
//! per-node results (which the Devices plugin allows, its results moving
//! only with the node) changes no placement and no device assignment.

use strata_simulator::{RunOptions, Scenario, Simulation};

fn small() -> Scenario {
    let text = include_str!("../scenarios/supernode-16k-devices.yaml")
        .replace("count: 16000", "count: 96")
        .replace("count: 20000", "count: 240")
        .replace("count: 3000", "count: 60")
        .replace("count: 1500", "count: 30")
        .replace("count: 1000", "count: 20")
        .replace("count: 500", "count: 12");
    Scenario::parse(&text, "supernode-16k-devices (small)").expect("scenario parses")
}

#[test]
fn device_pods_get_devices_and_caching_changes_nothing() {
    let run = |classes: usize| {
        let opts = RunOptions {
            equivalence_cache: Some(classes),
            ..Default::default()
        };
        let mut sim = Simulation::new(small(), &opts).expect("simulation starts");
        let report = sim.run();
        assert_eq!(report.double_binds, 0);
        assert!(report.cache_inconsistency.is_none());
        // The 8-GPU pods come last and, at this small scale, find every
        // node's devices already in use (pods were spread by the default
        // scores before any 8-GPU pod was seen); everything else fits.
        for m in &report.unschedulable_messages {
            assert!(m.example.contains("gpu-8"), "{m:?}");
            assert!(
                m.message.contains("Insufficient nvidia.com/gpu devices"),
                "{m:?}"
            );
        }
        let cluster = sim.cluster();
        // One assignment written per bound device pod.
        let unscheduled = report.pods.unschedulable as u64;
        assert_eq!(
            cluster.annotation_patches(),
            60 + 20 + 60 + 30 + 20 + 12 - unscheduled
        );
        let mut assignments: Vec<(String, Option<String>, Option<String>)> = sim
            .placements()
            .into_iter()
            .map(|(pod, node)| {
                let uid = pod.clone();
                let a = cluster
                    .pod(&uid)
                    .and_then(|p| p.annotations.get("strata.io/device-assignment").cloned());
                (pod, node, a)
            })
            .collect();
        assignments.sort();
        assignments
    };
    let off = run(0);
    let on = run(32);
    assert_eq!(off.len(), on.len());
    let differ: Vec<_> = off
        .iter()
        .zip(&on)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(
        differ.is_empty(),
        "placements or devices differ, e.g. {differ:?}"
    );
    // Whole-GPU pods of 4 got one NVLink island of a node.
    let four = off
        .iter()
        .find(|(p, _, a)| p.contains("gpu-4") && a.is_some())
        .expect("a 4-GPU pod placed");
    let a = four.2.as_deref().unwrap_or("");
    assert_eq!(a.matches("\"id\"").count(), 4, "{a}");
    let low = ["-gpu-0\"", "-gpu-1\"", "-gpu-2\"", "-gpu-3\""]
        .iter()
        .filter(|s| a.contains(*s))
        .count();
    assert!(low == 0 || low == 4, "one island: {a}");
}
