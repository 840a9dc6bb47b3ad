//! DRA in scenarios: `dra-small` runs the default profile over ResourceSlices
//! expanded from a per-pool device list, claims made from templates as the
//! resourceclaim controller would, a claim shared by several pods and a
//! claim naming a DeviceClass that does not exist. Malformed DRA input is a
//! scenario error with file, line, column and field.

use std::collections::BTreeMap;
use strata_simulator::{RunOptions, Scenario, Simulation, dra};

fn run() -> (Simulation, strata_simulator::Report) {
    let sc = Scenario::load("dra-small").expect("built-in scenario parses");
    let mut sim = Simulation::new(sc, &RunOptions::default()).expect("simulation starts");
    let report = sim.run();
    (sim, report)
}

#[test]
fn claims_are_allocated_once_each_and_the_unknown_class_is_named() {
    let (sim, report) = run();
    assert_eq!(report.double_binds, 0);
    assert!(report.cache_inconsistency.is_none());
    let by_workload: BTreeMap<&str, (usize, usize)> = report
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), (w.scheduled, w.unschedulable)))
        .collect();
    assert_eq!(by_workload["single"], (8, 0), "{by_workload:?}");
    assert_eq!(by_workload["pair"], (3, 0));
    assert_eq!(by_workload["shared"], (3, 0));
    assert_eq!(by_workload["plain"], (20, 0));
    assert_eq!(by_workload["unknown-class"], (0, 2));
    // The unscheduled pods say why, naming the claim and the class.
    assert_eq!(report.unschedulable_messages.len(), 1, "{report:?}");
    let m = &report.unschedulable_messages[0];
    assert_eq!(m.pods, 2);
    assert!(
        m.message
            .contains("ResourceClaim default/tpu, request \"tpu\": DeviceClass \"tpu.example.com\" does not exist"),
        "{m:?}"
    );

    let store = sim.dra_store();
    // Every pod's claim is allocated: 8 + 3 from templates, plus the shared one.
    let allocated = store.allocated_claims();
    assert_eq!(allocated.len(), 8 + 3 + 1);
    let placements = sim.placements();
    for c in &allocated {
        let name = c.metadata.name.clone().unwrap_or_default();
        let status = c.status.as_ref().unwrap();
        let alloc = status.allocation.as_ref().unwrap();
        let results = alloc.devices.as_ref().unwrap().results.as_ref().unwrap();
        // The allocation is pinned to the node its pods were bound to.
        let node = &alloc.node_selector.as_ref().unwrap().node_selector_terms[0]
            .match_fields
            .as_ref()
            .unwrap()[0]
            .values
            .as_ref()
            .unwrap()[0];
        let consumers = status.reserved_for.as_ref().unwrap();
        for r in consumers {
            assert_eq!(
                placements[&format!("default/{}", r.name)].as_deref(),
                Some(node.as_str()),
                "{name}: consumer {} runs where the devices are",
                r.name
            );
        }
        if name == "shared-gpu" {
            assert_eq!(consumers.len(), 3, "all three pods share it");
            assert_eq!(results.len(), 1);
        } else if name.starts_with("pair-") {
            assert_eq!(results.len(), 2);
            assert_eq!(consumers.len(), 1);
            // matchAttribute numa: both devices on one NUMA node.
            let numa: Vec<&str> = results.iter().map(|r| &r.device[..5]).collect();
            assert_eq!(numa[0], numa[1], "{results:?}");
        } else {
            assert!(name.starts_with("single-"), "{name}");
            assert_eq!((results.len(), consumers.len()), (1, 1));
        }
    }
    // No device is in two claims.
    for (dev, holders) in dra::device_holders(store) {
        assert_eq!(holders.len(), 1, "{dev:?} is held by {holders:?}");
    }
    assert_eq!(dra::device_holders(store).len(), 8 + 6 + 1);
    // The claim naming an unknown class stays unallocated.
    let tpu = store.claim("default", "tpu").unwrap();
    assert!(tpu.status.as_ref().is_none_or(|s| s.allocation.is_none()));
    // Each allocation was written through the cluster port before its
    // pod's bind (the shared claim once per consumer).
    assert_eq!(sim.cluster().claim_status_writes().len(), 8 + 3 + 3);
}

#[test]
fn runs_are_deterministic() {
    let (a, _) = run();
    let (b, _) = run();
    assert_eq!(a.placements(), b.placements());
    assert_eq!(
        dra::device_holders(a.dra_store()),
        dra::device_holders(b.dra_store())
    );
}

fn err_of(dra_section: &str) -> String {
    let text = format!(
        "name: x\nnodePools: [{{name: gpu, count: 2, allocatable: {{cpu: 1}}}}]\n{dra_section}"
    );
    Scenario::parse(&text, "bad.yaml").unwrap_err().to_string()
}

#[test]
fn bad_dra_input_is_a_scenario_error_with_its_place() {
    let cases: &[(&str, &str)] = &[
        ("dra:\n  deviceClasses:\n    - spec: {}\n", "bad.yaml:5:"),
        (
            "dra:\n  deviceClasses:\n    - spec: {}\n",
            "field `dra.deviceClasses[0]`: metadata.name is required",
        ),
        (
            "dra:\n  nodeDevices:\n    - {nodePool: gpu, driver: d, devices: [{name: a, count: 0}]}\n",
            "bad.yaml:5:",
        ),
        (
            "dra:\n  nodeDevices:\n    - {nodePool: gpu, driver: d, devices: [{name: a, count: 0}]}\n",
            "devices[0].count must be at least 1",
        ),
        (
            "dra:\n  nodeDevices:\n    - {nodePool: gpus, driver: d, devices: [{name: a}]}\n",
            "field `dra.nodeDevices[0].nodePool`: no node pool named \"gpus\"",
        ),
        (
            "dra:\n  resourceSlices:\n    - {metadata: {name: s}, spec: {driver: d, nodeName: gpu-7, pool: {name: p, generation: 1, resourceSliceCount: 1}}}\n",
            "field `dra.resourceSlices[0].spec.nodeName`: no node named \"gpu-7\"",
        ),
        (
            "dra:\n  resourceClaims:\n    - {metadata: {name: c}, spec: {devices: {requests: [{name: r, exactly: {deviceClassName: x, count: many}}]}}}\n",
            "bad.yaml:5:",
        ),
        (
            "dra:\n  deviceClasses: [{metadata: {name: a}}, {metadata: {name: a}}]\n",
            "field `dra.deviceClasses[1].metadata.name`: \"a\" is defined twice",
        ),
        ("dra:\n  devices: []\n", "unknown field `devices`"),
        (
            "workloads:\n  - name: w\n    count: 1\n    template: {spec: {containers: [{name: c}], resourceClaims: [{name: g, resourceClaimTemplateName: nope}]}}\n",
            "field `workloads[0].template.spec.resourceClaims[0]`: no ResourceClaimTemplate default/nope",
        ),
    ];
    for (text, want) in cases {
        let e = err_of(text);
        assert!(e.contains(want), "want {want:?} in {e:?}");
    }
}

/// `dra-48` (dra-8k's shape on 48 nodes): every pod is placed, each claim
/// holds what its request asks (an H100 of 80Gi for `one-device`, two
/// devices of one NUMA node for `numa-pair`), no device is held twice, and
/// the engine's per-template caches, which DynamicResources joins for pods
/// whose claims are all to allocate, change no node and no device.
#[test]
fn dra_at_scale_shape_places_alike_with_the_cache_off_and_on() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/dra-48.yaml");
    let run = |classes: usize| {
        let opts = RunOptions {
            equivalence_cache: Some(classes),
            ..Default::default()
        };
        let sc = Scenario::load(path).expect("dra-48 parses");
        let mut sim = Simulation::new(sc, &opts).expect("simulation starts");
        let report = sim.run();
        (sim, report)
    };
    let (off, off_report) = run(0);
    let (on, report) = run(32);
    for r in [&off_report, &report] {
        assert_eq!(r.double_binds, 0);
        assert!(r.cache_inconsistency.is_none());
        let by_workload: BTreeMap<&str, (usize, usize)> = r
            .workloads
            .iter()
            .map(|w| (w.name.as_str(), (w.scheduled, w.unschedulable)))
            .collect();
        assert_eq!(by_workload["one-device"], (48, 0), "{by_workload:?}");
        assert_eq!(by_workload["numa-pair"], (24, 0), "{by_workload:?}");
    }
    assert_eq!(off.placements(), on.placements());
    let holders = dra::device_holders(on.dra_store());
    assert_eq!(holders, dra::device_holders(off.dra_store()));
    for (dev, h) in &holders {
        assert_eq!(h.len(), 1, "{dev:?} is held by {h:?}");
    }
    assert_eq!(holders.len(), 48 + 2 * 24);
    let placements = on.placements();
    for c in on.dra_store().allocated_claims() {
        let name = c.metadata.name.clone().unwrap_or_default();
        let results = c.status.as_ref().unwrap().allocation.as_ref().unwrap();
        let results = results.devices.as_ref().unwrap().results.as_ref().unwrap();
        let pod = c.metadata.owner_references.as_ref().unwrap()[0]
            .name
            .clone();
        let node = placements[&format!("default/{pod}")].clone().unwrap();
        assert!(results.iter().all(|r| r.pool == node), "{name} on {node}");
        if name.starts_with("one-device-") {
            assert_eq!(results.len(), 1);
            assert!(node.starts_with("h100-"), "{name} on {node}");
        } else {
            assert!(name.starts_with("numa-pair-"), "{name}");
            assert_eq!(results.len(), 2);
            assert_eq!(
                results[0].device[..5],
                results[1].device[..5],
                "{results:?}"
            );
        }
    }
}
