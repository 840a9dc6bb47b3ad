//! The engine's extender hook with an in-process `Extender` (no HTTP):
//! property tests of its invariants over arbitrary answers.

use parking_lot::Mutex;
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use strata_scheduler::cache::Snapshot;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::{CycleResult, Scheduler};
use strata_scheduler::extenders::{Extender, ExtenderError, ExtenderFilterOutcome};
use strata_scheduler::framework::{NodeRef, Registry};
use strata_scheduler::model::{NodeId, PodInfo};
use strata_scheduler::testing::plugins::{Binder, Cpu, Sort};
use strata_scheduler::testing::{RecordingCluster, node, pod};

/// What the fake extender answers, decided per test case.
#[derive(Clone, Debug)]
struct Answer {
    /// Keep the candidate at each position whose flag is set.
    keep: Vec<bool>,
    /// Also name a node that was not sent (a node the in-tree filter
    /// removed).
    stray: bool,
    /// Fail outright.
    fail: bool,
    /// Scores by candidate position (out of range ones included).
    scores: Vec<i64>,
}

struct Fake {
    answer: Answer,
    ignorable: bool,
    filters: AtomicUsize,
    prioritizes: AtomicUsize,
    /// What filter was sent and what it kept.
    seen: Mutex<(Vec<NodeId>, Vec<NodeId>)>,
    stray_node: Mutex<Option<NodeId>>,
}

#[async_trait::async_trait]
impl Extender for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn is_interested(&self, _pod: &PodInfo) -> bool {
        true
    }
    fn is_ignorable(&self) -> bool {
        self.ignorable
    }
    fn is_filter(&self) -> bool {
        true
    }
    fn is_prioritizer(&self) -> bool {
        true
    }
    fn weight(&self) -> i64 {
        3
    }
    fn is_binder(&self) -> bool {
        false
    }
    fn filter(
        &self,
        _pod: &PodInfo,
        nodes: &[NodeId],
        _snap: &Snapshot,
    ) -> Result<ExtenderFilterOutcome, ExtenderError> {
        self.filters.fetch_add(1, Ordering::SeqCst);
        if self.answer.fail {
            return Err(ExtenderError("down".into()));
        }
        let mut out = ExtenderFilterOutcome::default();
        for (i, n) in nodes.iter().enumerate() {
            if self.answer.keep.get(i).copied().unwrap_or(true) {
                out.feasible.push(*n);
            } else {
                out.failed.push((*n, "fake says no".into()));
            }
        }
        if self.answer.stray
            && let Some(s) = *self.stray_node.lock()
            && !nodes.contains(&s)
        {
            out.feasible.push(s);
        }
        *self.seen.lock() = (nodes.to_vec(), out.feasible.clone());
        Ok(out)
    }
    fn prioritize(
        &self,
        _pod: &PodInfo,
        nodes: &[NodeId],
        _snap: &Snapshot,
    ) -> Result<Vec<(NodeId, i64)>, ExtenderError> {
        self.prioritizes.fetch_add(1, Ordering::SeqCst);
        Ok(nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, self.answer.scores.get(i).copied().unwrap_or(0)))
            .collect())
    }
    async fn bind(&self, _pod: &PodInfo, _node: NodeRef) -> Result<(), ExtenderError> {
        Err(ExtenderError("not a binder".into()))
    }
}

fn answers() -> impl Strategy<Value = (Answer, bool)> {
    (
        proptest::collection::vec(any::<bool>(), 8),
        any::<bool>(),
        prop::bool::weighted(0.15),
        proptest::collection::vec(-5i64..20, 8),
        any::<bool>(),
    )
        .prop_map(|(keep, stray, fail, scores, ignorable)| {
            (
                Answer {
                    keep,
                    stray,
                    fail,
                    scores,
                },
                ignorable,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the extender answers: it is called once per cycle with the
    /// nodes the in-tree filter kept; a placement is on a node both kept;
    /// nothing kept is Unschedulable; a failure or a stray node fails a
    /// non-ignorable attempt and is skipped for an ignorable one.
    #[test]
    fn placements_respect_the_extender((answer, ignorable) in answers()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let fake = Arc::new(Fake {
            answer: answer.clone(),
            ignorable,
            filters: AtomicUsize::new(0),
            prioritizes: AtomicUsize::new(0),
            seen: Mutex::new((Vec::new(), Vec::new())),
            stray_node: Mutex::new(None),
        });
        let mut reg = Registry::new();
        reg.register("Sort", |_, _| Ok(Arc::new(Sort)));
        reg.register("Cpu", |_, _| Ok(Arc::new(Cpu)));
        reg.register("Binder", |_, h| Ok(Arc::new(Binder(h.cluster.clone()))));
        let f2 = fake.clone();
        reg.set_extender_factory(Arc::new(move |_, _| Ok(f2.clone() as Arc<dyn Extender>)));
        let cfg = SchedulerConfig::from_yaml(
            "parallelism: 1\nextenders: [{urlPrefix: 'http://fake', filterVerb: f, prioritizeVerb: p, weight: 3}]",
        )
        .unwrap();
        let mut s = Scheduler::new(
            cfg,
            &reg,
            &[("Sort", 0), ("Cpu", 1), ("Binder", 0)],
            Arc::new(RecordingCluster::default()),
            Arc::new(ManualClock::default()),
            rt.handle().clone(),
        )
        .unwrap();
        // Eight nodes that fit the pod and two that do not (the in-tree
        // filter removes those; one is the stray).
        for i in 0..10 {
            let cpu = if i < 8 { "4" } else { "1" };
            s.handle_update(ClusterUpdate::NodeUpserted(Arc::new(
                node(&format!("n{i}")).alloc("cpu", cpu).build(),
            )));
        }
        *fake.stray_node.lock() = s.snapshot().node_id(strata_scheduler::intern::Sym::new("n9"));
        s.handle_update(ClusterUpdate::PodUpserted(Arc::new(pod("p").req("cpu", "2").build())));
        let o = s.schedule_one().expect("the pod is ready");
        prop_assert_eq!(fake.filters.load(Ordering::SeqCst), 1);
        let (sent, kept) = fake.seen.lock().clone();
        if !answer.fail {
            prop_assert_eq!(sent.len(), 8, "only what passed the in-tree filter");
        }
        let broken = answer.fail || (answer.stray);
        match (&o.result, broken, ignorable) {
            (CycleResult::Failed { message }, true, false) => {
                prop_assert!(message.contains("fake"), "{}", message);
            }
            (CycleResult::Scheduled { node }, true, true) => {
                // Skipped: any node the in-tree filter kept.
                prop_assert!(node.as_str() != "n8" && node.as_str() != "n9");
            }
            (CycleResult::Scheduled { node }, false, _) => {
                let id = s.snapshot().node_id(*node).unwrap();
                prop_assert!(kept.contains(&id), "placed on {} which the extender did not keep", node);
                prop_assert!(sent.contains(&id));
            }
            (CycleResult::Unschedulable { message }, false, _) => {
                prop_assert!(kept.is_empty(), "{}", message);
                prop_assert!(message.contains("fake says no"), "{}", message);
            }
            (other, _, _) => prop_assert!(false, "unexpected {:?} for {:?} ignorable={}", other, answer, ignorable),
        }
        prop_assert!(fake.prioritizes.load(Ordering::SeqCst) <= 1);
    }
}
