//! One scheduling cycle (queue pop → filter → score → assume → bind hand-off)
//! at 16,000 nodes with 50,000 pods already running, per pod template, with
//! the default plugin set on one thread.

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use strata_benches::{engine, templates};
use strata_scheduler::cluster::ClusterUpdate;

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
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let p = template.with_identity(&format!("uid-{name}-{i}"), &format!("{name}-{i}"));
                s.handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
                let out = s.schedule_one().expect("a pod is ready");
                s.process_completions();
                out
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
