//! One scheduling cycle (queue pop → filter → score → assume → bind hand-off)
//! at 16,000 nodes with 50,000 pods already running, per pod template, with
//! the default plugin set on one thread.
//!
//! The benchmarked pods are deleted again (outside the timed part) once
//! more than [`WINDOW`] of them exist, so every sample sees the same cluster
//! however many iterations criterion runs: without it, a faster cycle meant
//! more iterations and, for anti-affinity (one pod per node), a full cluster
//! where later samples measured failure and preemption instead.

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_benches::{engine, templates};
use strata_scheduler::cluster::ClusterUpdate;

/// How many benchmarked pods stay in the cluster at most.
const WINDOW: usize = 1_000;

fn cycle(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("cycle_16k_nodes");
    g.sample_size(20);
    for (name, template) in [
        ("plain", templates::plain()),
        ("spread", templates::spread()),
        ("anti_affinity", templates::anti_affinity()),
    ] {
        let mut s = engine(16_000, 50_000, &rt);
        let mut i = 0u64;
        let mut placed: VecDeque<Arc<str>> = VecDeque::new();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    i += 1;
                    let p =
                        template.with_identity(&format!("uid-{name}-{i}"), &format!("{name}-{i}"));
                    let uid = p.uid.clone();
                    let start = Instant::now();
                    s.handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
                    let out = s.schedule_one().expect("a pod is ready");
                    s.process_completions();
                    timed += start.elapsed();
                    black_box(out);
                    placed.push_back(uid);
                    if placed.len() > WINDOW
                        && let Some(old) = placed.pop_front()
                    {
                        s.handle_update(ClusterUpdate::PodDeleted { uid: old });
                    }
                }
                timed
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
