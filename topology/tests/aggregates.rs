//! Property test: after any sequence of node additions, relabels, state
//! changes (assume, forget, bind, cordon) and deletions, every domain's
//! aggregates equal a full recomputation from its nodes, and equal those of
//! a topology built from scratch with the final nodes.

use proptest::prelude::*;
use std::collections::BTreeMap;
use strata_topology::{Amounts, DomainId, NodeState, Topology};

#[derive(Clone, Debug)]
enum Op {
    Upsert {
        node: u32,
        sn: Option<u8>,
        cab: Option<u8>,
        gpus: i64,
        cpu: i64,
    },
    Use {
        node: u32,
        gpus: i64,
        cpu: i64,
    },
    Cordon {
        node: u32,
        on: bool,
    },
    Remove {
        node: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0u32..24;
    prop_oneof![
        (
            node.clone(),
            proptest::option::of(0u8..3),
            proptest::option::weighted(0.9, 0u8..3),
            0i64..9,
            0i64..5000
        )
            .prop_map(|(node, sn, cab, gpus, cpu)| Op::Upsert {
                node,
                sn,
                cab,
                gpus,
                cpu
            }),
        (node.clone(), 0i64..10, 0i64..6000).prop_map(|(node, gpus, cpu)| Op::Use {
            node,
            gpus,
            cpu
        }),
        (node.clone(), any::<bool>()).prop_map(|(node, on)| Op::Cordon { node, on }),
        node.prop_map(|node| Op::Remove { node }),
    ]
}

type Labels = (Option<String>, Option<String>, String);

fn apply(t: &mut Topology, model: &mut BTreeMap<u32, (Labels, NodeState)>, op: &Op) {
    match op {
        Op::Upsert {
            node,
            sn,
            cab,
            gpus,
            cpu,
        } => {
            let labels = (
                sn.map(|s| format!("sn{s}")),
                cab.map(|c| format!("cab{c}")),
                format!("h{node}"),
            );
            let requested = model
                .get(node)
                .map(|(_, s)| s.requested)
                .unwrap_or_default();
            let st = NodeState {
                allocatable: Amounts::from_pairs(&[(0, *cpu), (4, *gpus)]),
                requested,
                schedulable: true,
            };
            t.upsert_node(
                *node,
                &[labels.0.as_deref(), labels.1.as_deref(), Some(&labels.2)],
                st,
            );
            model.insert(*node, (labels, st));
        }
        Op::Use { node, gpus, cpu } => {
            if let Some((_, st)) = model.get_mut(node) {
                st.requested = Amounts::from_pairs(&[(0, *cpu), (4, *gpus)]);
                t.set_state(*node, *st);
            }
        }
        Op::Cordon { node, on } => {
            if let Some((_, st)) = model.get_mut(node) {
                st.schedulable = !on;
                t.set_state(*node, *st);
            }
        }
        Op::Remove { node } => {
            model.remove(node);
            t.remove_node(*node);
        }
    }
}

/// Aggregates keyed by the path of label values, comparable across two
/// topologies.
fn by_path(t: &Topology) -> BTreeMap<Vec<String>, strata_topology::Aggregates> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(DomainId, Vec<String>)> = vec![(t.root(), vec![])];
    while let Some((d, path)) = stack.pop() {
        out.insert(path.clone(), t.domain(d).agg);
        for c in t.children(d) {
            let mut p = path.clone();
            p.push(t.domain(c).name());
            stack.push((c, p));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn aggregates_match_full_recomputation(ops in proptest::collection::vec(op(), 1..80)) {
        let mut t = Topology::default();
        let mut model = BTreeMap::new();
        for o in &ops {
            apply(&mut t, &mut model, o);
            if let Err(e) = t.check_consistency() {
                return Err(TestCaseError::fail(format!("after {o:?}: {e}")));
            }
        }
        let mut fresh = Topology::default();
        for (n, (l, st)) in &model {
            fresh.upsert_node(*n, &[l.0.as_deref(), l.1.as_deref(), Some(&l.2)], *st);
        }
        prop_assert_eq!(by_path(&t), by_path(&fresh));
        // Distances agree too.
        for a in model.keys() {
            for b in model.keys() {
                prop_assert_eq!(t.distance(*a, *b), fresh.distance(*a, *b));
            }
        }
    }
}
