//! The memory-pool scenario end to end: the sweep runs it with borrowing
//! off and at 25% and 40%, and the audit (which reads the plans written on
//! the pods, not the plugin's ledger) finds every invariant kept.

use strata_simulator::memory_pool::{SweepRow, sweep, variant_text};

fn scenario() -> String {
    format!(
        "{}/scenarios/memory-pool-small.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn kept(r: &SweepRow) {
    assert_eq!(r.lenders_short, 0, "{r:?}");
    assert_eq!(r.loans_outside_pool, 0, "{r:?}");
    assert_eq!(r.plans_inconsistent, 0, "{r:?}");
    assert!(r.caps_broken.is_empty(), "{r:?}");
}

#[test]
fn borrowing_places_more_pods_and_keeps_every_invariant() {
    let rows = sweep(&scenario(), &[0, 2500, 4000]).expect("the sweep runs");
    let (off, quarter, forty) = (&rows[0], &rows[1], &rows[2]);
    for r in &rows {
        kept(r);
        assert_eq!(r.pods, 600);
    }
    // Off: two 320Gi pods per 768Gi inference server, nothing remote.
    assert_eq!(off.placed, 256);
    assert_eq!(off.remote_bytes, 0);
    // 25%: three per server, the rest of each pod's memory from the
    // compute servers of its super-node.
    assert_eq!(quarter.placed, 384);
    assert!(quarter.idle_bytes < off.idle_bytes / 4, "{quarter:?}");
    assert!((quarter.remote_share_max - 0.25).abs() < 0.001);
    // team-c is capped at 4Ti.
    assert!(quarter.by_namespace["team-c"] <= 4 << 40);
    assert!(quarter.by_namespace["team-c"] > 3 << 40);
    // 40%: the pools run dry before the servers fill.
    assert!(forty.placed < quarter.placed);
}

#[test]
fn a_variant_keeps_each_pods_total_memory() {
    let text = std::fs::read_to_string(scenario()).unwrap();
    let off = variant_text(&text, "x", 0).unwrap();
    assert!(!off.contains("strata.io/memory-borrow"));
    assert!(off.contains("327680Mi"), "320Gi local when off");
    let forty = variant_text(&text, "x", 4000).unwrap();
    assert!(forty.contains("strata.io/memory-borrow: 40.00%"));
    assert!(forty.contains("196608Mi"), "192Gi local at 40%");
}

/// The documents of `manifests/examples/<file>`.
fn example(file: &str) -> Vec<serde_json::Value> {
    let path = format!(
        "{}/../manifests/examples/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect()
}

#[test]
fn the_manifest_examples_are_what_the_plugin_reads() {
    use strata_plugins::memory::memory_pool::model::{BORROW, LENDABLE, MEDIUM, Medium, parse_ask};
    let nodes = example("memory-pool-nodes.yaml");
    assert_eq!(nodes.len(), 3);
    for n in &nodes {
        let _: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(n.clone()).expect("a Node");
        let ann = &n["metadata"]["annotations"];
        if let Some(l) = ann[LENDABLE].as_str() {
            parse_ask(LENDABLE, l, 10_000).expect("lendable parses");
            assert!(Medium::parse(ann[MEDIUM].as_str().unwrap()).is_some());
        }
    }
    let pods = example("memory-pool-pods.yaml");
    for p in &pods {
        let (meta, spec) = if p["kind"] == "Pod" {
            (&p["metadata"], &p["spec"])
        } else {
            let _: k8s_openapi::api::apps::v1::Deployment =
                serde_json::from_value(p.clone()).expect("a Deployment");
            (
                &p["spec"]["template"]["metadata"],
                &p["spec"]["template"]["spec"],
            )
        };
        assert_eq!(spec["schedulerName"], "strata-scheduler");
        let ask = meta["annotations"][BORROW]
            .as_str()
            .expect("asks to borrow");
        parse_ask(BORROW, ask, 9_000).expect("the ask parses");
    }
    let cm = &example("memory-pool-config.yaml")[0];
    let text = cm["data"]["config.yaml"].as_str().expect("config.yaml");
    strata_simulator::config_check::validate_config(text).expect("the configuration resolves");
}

/// Two super-nodes: sn-0 has two inference servers and lenders of 64Gi in
/// all, sn-1 four inference servers and lenders of 512Gi. A gang of four
/// that borrows 128Gi in all fits sn-0's servers best by its requests but
/// not its pool: it is planned into sn-1 and placed whole. A gang that
/// borrows 800Gi fits no pool: it waits, and its message names the
/// shortfall.
fn gangs_that_borrow() -> strata_simulator::Scenario {
    let gang = |name: &str, remote: &str, start: u32| {
        format!(
            "  - {{name: {name}, count: 4, start: {start}, group: {{name: {name}, size: 4}}, template: {{metadata: {{namespace: team-a, annotations: {{strata.io/min-member: \"4\", strata.io/topology-required-level: strata.io/supernode, strata.io/memory-borrow: {remote}}}}}, spec: {{nodeSelector: {{example.com/role: inference}}, containers: [{{name: c, resources: {{requests: {{cpu: \"8\", memory: 96Gi}}}}}}]}}}}}}\n"
        )
    };
    let mut text = String::from(
        r#"name: gangs-that-borrow
seed: 1
nodePools:
  - name: small
    count: 2
    allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
    labels: {strata.io/supernode: sn-0, strata.io/cabinet: "sn-0-cab", example.com/role: inference}
  - name: small-lend
    count: 2
    allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
    labels: {strata.io/supernode: sn-0, strata.io/cabinet: "sn-0-cab"}
    annotations: {strata.io/memory-lendable: 32Gi}
  - name: big
    count: 4
    allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
    labels: {strata.io/supernode: sn-1, strata.io/cabinet: "sn-1-cab", example.com/role: inference}
  - name: big-lend
    count: 2
    allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
    labels: {strata.io/supernode: sn-1, strata.io/cabinet: "sn-1-cab"}
    annotations: {strata.io/memory-lendable: 256Gi}
workloads:
"#,
    );
    text.push_str(&gang("fits", "32Gi", 0));
    text.push_str(&gang("toobig", "200Gi", 1));
    strata_simulator::Scenario::parse(&text, "gangs-that-borrow").expect("the scenario parses")
}

#[test]
fn the_group_planner_counts_borrowed_memory() {
    let opts = strata_simulator::RunOptions::default();
    let mut sim = strata_simulator::Simulation::new(gangs_that_borrow(), &opts).expect("starts");
    let report = sim.run();
    assert_eq!(report.double_binds, 0);
    let placed = sim.placements();
    let fits: Vec<&Option<String>> = placed
        .iter()
        .filter(|(k, _)| k.starts_with("team-a/fits-"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(fits.len(), 4);
    for n in &fits {
        let n = n.as_deref().unwrap_or("unbound");
        assert!(
            n.starts_with("big-"),
            "planned into sn-1, whose pool lends enough: {n}"
        );
    }
    let toobig: Vec<&Option<String>> = placed
        .iter()
        .filter(|(k, _)| k.starts_with("team-a/toobig-"))
        .map(|(_, v)| v)
        .collect();
    assert!(toobig.iter().all(|n| n.is_none()), "{toobig:?}");
    let msgs: Vec<&str> = report
        .unschedulable_messages
        .iter()
        .map(|m| m.message.as_str())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("needs 800Gi remote in pool sn-")),
        "the shortfall is named: {msgs:?}"
    );
}
