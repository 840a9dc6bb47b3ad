//! Cycle time added by a remote node-local Filter + Score, against the same
//! rule in process, at 16,000 nodes by default; the request bytes and the
//! nodes asked about per cycle when each cycle's pod changes one node, and
//! the bytes of a cycle that changed none (zero: a node-local plugin is
//! asked only about nodes whose state moved since it last answered for the
//! pod's template).
//!
//! ```sh
//! cargo run -p strata-remote --example remote_cycle -- [NODES] [PODS]
//! cargo run --release -p strata-remote --example remote_cycle -- 16000 200
//! ```
//!
//! The remote side is the in-process tonic server of the tests
//! (`tests/common`), on a Unix socket, or with `STRATA_REMOTE_ENDPOINT` an
//! external plugin with the same rule (the Go example,
//! `sdk/go/examples/vendorhealth`): its time to judge the nodes counts in
//! the figures, as a vendor plugin's would. Nodes: 14/16 `ok`, 1/16
//! `degraded`, 1/16 `failed`, in contiguous pools; pods of one template,
//! one cpu each.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cycle::{InProc, InProcScan, fill, run, scheduler};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// (sum of seconds, count) of RemoteHealth's Filter and Score calls so far.
fn call_times() -> [(f64, f64); 2] {
    let m = strata_remote::metrics::encode();
    ["Filter", "Score"].map(|point| {
        let get = |what: &str| -> f64 {
            let key = format!(
                "strata_remote_plugin_duration_seconds_{what}{{plugin=\"RemoteHealth\",extension_point=\"{point}\"}} "
            );
            m.lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        (get("sum"), get("count"))
    })
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut a = std::env::args().skip(1);
    let nodes: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(16_000);
    let pods: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // In process.
    let mut reg = strata_plugins::registry();
    reg.register("InProcHealth", |_, _| Ok(Arc::new(InProc)));
    let mut s = scheduler("InProcHealth", "{}", &reg, Arc::default(), &rt);
    fill(&mut s, nodes);
    let _warm = run(&mut s, "warm", 3, "1");
    let inproc = run(&mut s, "p", pods, "1");
    drop(s);
    let mut reg = strata_plugins::registry();
    reg.register("InProcScan", |_, _| Ok(Arc::new(InProcScan)));
    let mut s = scheduler("InProcScan", "{}", &reg, Arc::default(), &rt);
    fill(&mut s, nodes);
    let _warm = run(&mut s, "warm", 3, "1");
    let scan = run(&mut s, "p", pods, "1");
    drop(s);

    // Remote.
    // STRATA_REMOTE_ENDPOINT: an external plugin with the same rule (the
    // Go example: sdk/go/examples/vendorhealth) instead of the test server.
    let external = std::env::var("STRATA_REMOTE_ENDPOINT").ok();
    let sock = common::socket("bench");
    let server = external.is_none().then(|| common::Server::start(&sock));
    if let Some(s) = &server {
        s.health.node_local.store(true, Ordering::SeqCst);
    }
    let endpoint = external
        .clone()
        .unwrap_or_else(|| format!("unix://{}", sock.display()));
    let mut reg = strata_plugins::registry();
    strata_remote::register(&mut reg, "RemoteHealth");
    let args = format!("{{remote: {{endpoint: \"{endpoint}\", timeout: 5s}}, degradedScore: 20}}");
    let mut s = scheduler("RemoteHealth", &args, &reg, Arc::default(), &rt);
    fill(&mut s, nodes);
    let _warm = run(&mut s, "warm", 3, "1");
    let before = call_times();
    let stats = strata_remote::stats("RemoteHealth").unwrap();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::SeqCst);
    let (bytes0, asked_f0, asked_s0, with_f0) = (
        load(&stats.sent_bytes),
        load(&stats.filter_nodes_asked),
        load(&stats.score_nodes_asked),
        load(&stats.filter_scored_nodes),
    );
    let remote = run(&mut s, "p", pods, "1");
    let per_cycle = |now: u64, then: u64| (now - then) as f64 / pods as f64;
    let cycle_bytes = per_cycle(load(&stats.sent_bytes), bytes0);
    let asked_f = per_cycle(load(&stats.filter_nodes_asked), asked_f0);
    let asked_s = per_cycle(load(&stats.score_nodes_asked), asked_s0);
    let with_f = per_cycle(load(&stats.filter_scored_nodes), with_f0);
    let changed_filter = stats.last_filter_bytes.load(Ordering::SeqCst);
    let changed_score = stats.last_score_bytes.load(Ordering::SeqCst);
    // Pods that fit nowhere: after the first (a new template), the cycles
    // change no node.
    let _ = run(&mut s, "idle", 1, "1000");
    let idle0 = load(&stats.sent_bytes);
    let _ = run(&mut s, "idle2", 3, "1000");
    let idle_bytes = (load(&stats.sent_bytes) - idle0) as f64 / 3.0;

    println!("nodes {nodes}, pods {pods} (one template), profile: the default plugins + the rule");
    println!(
        "{:<26} {:>10} {:>10} {:>10}",
        "cycle ms", "p50", "p90", "p99"
    );
    for (n, v) in [
        ("in process, node-local", &inproc),
        ("in process, full scan", &scan),
        ("remote", &remote),
    ] {
        println!(
            "{n:<26} {:>10.3} {:>10.3} {:>10.3}",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99)
        );
    }
    println!(
        "added at p50: {:.3} ms over node-local in process, {:.3} ms over the full scan",
        pct(&remote, 0.5) - pct(&inproc, 0.5),
        pct(&remote, 0.5) - pct(&scan, 0.5)
    );
    println!(
        "request bytes per cycle: {cycle_bytes:.0} (last Filter {changed_filter}, last Score {changed_score}) when the previous pod changed a node; {idle_bytes:.0} when none changed"
    );
    println!(
        "nodes asked per cycle: Filter {asked_f:.1}, Score {asked_s:.1}; scored in the Filter call {with_f:.1}"
    );
    println!(
        "remote plugin: {}",
        external
            .as_deref()
            .unwrap_or("the tests' Rust server, in process")
    );
    if let Some(server) = &server {
        let c = &server.health.counters;
        println!(
            "plugin side: {} handshake(s), {} full sync(s), {} deltas carrying {} nodes",
            c.handshakes.load(Ordering::SeqCst),
            c.full_syncs.load(Ordering::SeqCst),
            c.deltas.load(Ordering::SeqCst),
            c.delta_nodes.load(Ordering::SeqCst)
        );
    }
    let after = call_times();
    for (i, point) in ["Filter", "Score"].iter().enumerate() {
        let (sum, count) = (after[i].0 - before[i].0, after[i].1 - before[i].1);
        println!(
            "remote {point} call (round trip and the plugin's work), measured cycles: mean {:.3} ms over {count} calls",
            sum / count * 1e3
        );
    }
    if let Some(server) = server {
        server.kill();
    }
}
