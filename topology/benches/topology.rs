//! Topology hot paths at 16,000 nodes (250 super-nodes × 8 cabinets × 8
//! servers, 8 accelerators each): one aggregate update (what every
//! assume/forget/bind costs), planning the 2,500-member `training-20k-cards`
//! gang, and planning a small gang in a half-full cluster.

use criterion::{Criterion, criterion_group, criterion_main};
use rustc_hash::FxHashMap;
use std::hint::black_box;
use strata_topology::{
    Amounts, GroupRequest, MemberClass, NodeState, PlanInput, RoleRequest, Topology, any_node,
};

const GPU: usize = 4;

fn state(used: i64) -> NodeState {
    NodeState {
        allocatable: Amounts::from_pairs(&[(0, 192_000), (1, 2 << 40), (GPU, 8)]),
        requested: Amounts::from_pairs(&[(GPU, used)]),
        schedulable: true,
    }
}

fn cluster() -> Topology {
    let mut t = Topology::default();
    for id in 0..16_000u32 {
        let sn = format!("sn-{}", id / 64);
        let cab = format!("cab-{}", id / 8 % 8);
        let host = format!("node-{id}");
        t.upsert_node(id, &[Some(&sn), Some(&cab), Some(&host)], state(0));
    }
    t
}

fn gang(count: u32, gpus: i64, level: Option<usize>) -> GroupRequest {
    GroupRequest {
        required_level: level,
        roles: vec![RoleRequest {
            classes: vec![MemberClass::new(
                Amounts::from_pairs(&[(0, 8000), (GPU, gpus)]),
                count,
            )],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn benches(c: &mut Criterion) {
    let mut t = cluster();
    let reserved = FxHashMap::default();
    let input = PlanInput {
        eligible: &any_node,
        reserved: &reserved,
        trust_aggregates: true,
    };
    c.bench_function("topology/set_state_16k", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = (i + 7919) % 16_000;
            t.set_state(i, state(i64::from(i % 9)));
        })
    });
    let t = cluster();
    c.bench_function("topology/plan_training_20k_cards", |b| {
        b.iter(|| black_box(t.plan(&gang(2500, 8, None), &input).unwrap()))
    });
    let mut half = cluster();
    for id in (0..16_000u32).filter(|i| i % 2 == 0) {
        half.set_state(id, state(8));
    }
    c.bench_function("topology/plan_gang8_in_supernode_half_full", |b| {
        b.iter(|| black_box(half.plan(&gang(8, 8, Some(1)), &input).unwrap()))
    });
}

criterion_group!(topology, benches);
criterion_main!(topology);
