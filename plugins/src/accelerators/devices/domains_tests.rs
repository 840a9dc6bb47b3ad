//! [`DeviceDomains`] fed from the Devices plugin's model.

use super::model::{Inventory, NodeDevices};
use crate::accelerators::devices::args::default_kinds;
use crate::accelerators::devices::model::{Grant, Grants};
use crate::common::device_domains::*;
use proptest::prelude::*;
use std::sync::Arc;
use strata_scheduler::sdk::NodeInfo;
use strata_scheduler::testing;

const SN: &str = "strata.io/supernode";
const CAB: &str = "strata.io/cabinet";

fn info(name: &str, sn: &str, cab: &str, gpus: &str) -> NodeInfo {
    let n = testing::node(name)
        .alloc("nvidia.com/gpu", gpus)
        .label(SN, sn)
        .label(CAB, cab)
        .label("kubernetes.io/hostname", name)
        .build();
    let c = testing::cache_with(vec![n], vec![]);
    c.snapshot().nodes().next().cloned().expect("one node")
}

fn with_id(mut n: NodeInfo, id: u32) -> NodeInfo {
    n.id = strata_scheduler::model::NodeId(id);
    n
}

fn grant(device: u16) -> Grants {
    let mut g = Grants::new();
    g.push(Grant {
        container: 0,
        device,
        memory: 0,
        cores: 0,
        exclusive: true,
    });
    g
}

#[test]
fn answers_which_supernode_has_room_without_scanning() {
    let kinds = default_kinds();
    let d = DeviceDomains::default();
    for i in 0..8u32 {
        let n = with_id(
            info(&format!("n{i}"), &format!("sn{}", i / 4), "c0", "8"),
            i,
        );
        let nd = NodeDevices::inventory(&n, &kinds);
        assert_eq!(nd.devices.len(), 8);
        d.node(&n, Some(Inventory::new(&nd, &kinds)));
    }
    assert_eq!(d.cluster("nvidia.com/gpu").map(|f| f.devices), Some(64));
    // Take 5 devices on n0 (sn0).
    let n0 = with_id(info("n0", "sn0", "c0", "8"), 0);
    let mut nd = NodeDevices::inventory(&n0, &kinds);
    for dev in 0..5 {
        nd.apply(format!("p{dev}").into(), grant(dev));
    }
    d.devices(0, Some(Inventory::new(&nd, &kinds)));
    let fit = d.fitting(SN, "nvidia.com/gpu", 30, None).expect("known");
    assert_eq!(fit.len(), 1);
    assert_eq!(fit[0].domain, "sn1");
    let all = d.domains(SN, "nvidia.com/gpu").expect("known");
    assert_eq!(all[0].free.devices, 32);
    assert_eq!(all[1].free.devices, 27);
    assert_eq!(all[1].free.most_on_one_node, 8);
    assert_eq!(all[1].free.capacity, 32);
    assert!(d.cluster("amd.com/gpu").is_none());
    assert!(d.domains("no/such-level", "nvidia.com/gpu").is_none());
    // Cordoning sn1's nodes leaves only sn0.
    for i in 4..8u32 {
        let mut n = with_id(info(&format!("n{i}"), "sn1", "c0", "8"), i);
        n.unschedulable = true;
        let nd = NodeDevices::inventory(&n, &kinds);
        d.node(&n, Some(Inventory::new(&nd, &kinds)));
    }
    let fit = d.fitting(SN, "nvidia.com/gpu", 20, Some(8)).expect("known");
    assert_eq!(fit.len(), 1);
    assert_eq!(fit[0].domain, "sn0");
    d.check_consistency().expect("consistent");
}

#[test]
fn relabelled_and_removed_nodes_move() {
    let kinds = default_kinds();
    let d = DeviceDomains::default();
    let n = with_id(info("a", "sn0", "c0", "4"), 0);
    let nd = NodeDevices::inventory(&n, &kinds);
    d.node(&n, Some(Inventory::new(&nd, &kinds)));
    let moved = with_id(info("a", "sn9", "c0", "4"), 0);
    d.node(&moved, Some(Inventory::new(&nd, &kinds)));
    let sns = d.domains(SN, "nvidia.com/gpu").expect("known");
    assert_eq!(sns.len(), 1);
    assert_eq!(sns[0].domain, "sn9");
    d.node(&moved, None::<Inventory>);
    assert_eq!(d.cluster("nvidia.com/gpu").map(|f| f.capacity), Some(0));
}

proptest! {
    /// After any sequence of grants, releases, cordons and removals the
    /// aggregates equal a recomputation, and the cluster's free count
    /// equals the sum of every node's free whole devices.
    #[test]
    fn aggregates_match_the_nodes(ops in proptest::collection::vec((0u32..6, 0u8..4, 0u16..4), 1..60)) {
        let kinds = default_kinds();
        let d = DeviceDomains::default();
        let mut nodes: Vec<(NodeInfo, NodeDevices)> = (0..6u32)
            .map(|i| {
                let n = with_id(info(&format!("n{i}"), &format!("sn{}", i % 2), &format!("c{}", i % 3), "4"), i);
                let nd = NodeDevices::inventory(&n, &kinds);
                d.node(&n, Some(Inventory::new(&nd, &kinds)));
                (n, nd)
            })
            .collect();
        for (i, op, dev) in ops {
            let (n, nd) = &mut nodes[i as usize];
            match op {
                0 => {
                    let uid: Arc<str> = format!("p{i}-{dev}").into();
                    if nd.used[dev as usize].tasks == 0 && nd.release(&uid).is_none() {
                        nd.apply(uid, grant(dev));
                    }
                    d.devices(i, Some(Inventory::new(nd, &kinds)));
                }
                1 => {
                    nd.release(&format!("p{i}-{dev}"));
                    d.devices(i, Some(Inventory::new(nd, &kinds)));
                }
                2 => {
                    n.unschedulable = !n.unschedulable;
                    d.node(n, Some(Inventory::new(nd, &kinds)));
                }
                _ => {
                    n.present = !n.present;
                    d.node(n, Some(Inventory::new(nd, &kinds)));
                }
            }
            prop_assert!(d.check_consistency().is_ok());
        }
        let expect: i64 = nodes
            .iter()
            .filter(|(n, _)| n.present && !n.unschedulable)
            .map(|(_, nd)| nd.free_whole(0) as i64)
            .sum();
        prop_assert_eq!(d.cluster("nvidia.com/gpu").map(|f| f.devices).unwrap_or(0), expect);
    }
}
