//! Criterion: the scheduling cycle with the vendor health rule (Filter +
//! Score) at 16,000 nodes, in process and as a remote plugin over a Unix
//! socket with delta sync, so the difference is what the remote path adds
//! per cycle (issue target: at most 1 ms at p50).
//!
//! ```sh
//! cargo bench -p strata-remote --bench remote_cycle
//! STRATA_BENCH_NODES=4000 cargo bench -p strata-remote --bench remote_cycle
//! ```
//!
//! Each iteration adds one pod of the same template and schedules it (its
//! binding awaited but not timed: the figure is the scheduling cycle as the
//! engine measures it, the remote Filter and Score calls included), so
//! every cycle after the first changes one node: the remote plugin gets a
//! one-node delta and, being node-local, is asked about that node only
//! (its answers for the others are remembered per pod template), as in
//! steady state. The plugin side is the tests' in-process tonic server
//! (`tests/common`), declared node-local like the in-process rule;
//! `examples/remote_cycle.rs` prints the same comparison as percentiles
//! with the bytes and nodes asked per cycle.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cycle::{InProc, InProcScan, fill, schedule, scheduler};
use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn nodes() -> usize {
    std::env::var("STRATA_BENCH_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16_000)
}

fn cycle(c: &mut Criterion) {
    let nodes = nodes();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group(format!("health_rule_cycle_{nodes}_nodes"));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));

    let sock = common::socket("criterion");
    let server = common::Server::start(&sock);
    server.health.node_local.store(true, Ordering::SeqCst);
    let remote_args = format!(
        "{{remote: {{endpoint: \"unix://{}\", timeout: 5s}}, degradedScore: 20}}",
        sock.display()
    );
    let setups: [(&str, &str, String); 3] = [
        ("in_process_node_local", "InProcHealth", "{}".to_owned()),
        ("in_process_full_scan", "InProcScan", "{}".to_owned()),
        ("remote_node_local_delta_sync", "RemoteHealth", remote_args),
    ];
    for (id, plugin, args) in setups {
        let mut reg = strata_plugins::registry();
        match plugin {
            "InProcHealth" => reg.register(plugin, |_, _| Ok(Arc::new(InProc))),
            "InProcScan" => reg.register(plugin, |_, _| Ok(Arc::new(InProcScan))),
            _ => strata_remote::register(&mut reg, plugin),
        }
        let mut s = scheduler(plugin, &args, &reg, Arc::default(), &rt);
        fill(&mut s, nodes);
        // The first cycles pay the full sync (remote) and the caches' build.
        for i in 0..3 {
            schedule(&mut s, &format!("warm-{i}"));
        }
        let mut i = 0u64;
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut cycles = Duration::ZERO;
                for _ in 0..iters {
                    i += 1;
                    cycles += schedule(&mut s, &format!("p-{i}"));
                }
                cycles
            })
        });
    }
    group.finish();
    server.kill();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
