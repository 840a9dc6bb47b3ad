//! Cycle time added by a filter+prioritize extender on loopback.
//!
//! Schedules `pods` pods on `nodes` nodes (64 cpus each) with the default
//! plugins, once without extenders and once with an in-process extender
//! (axum on 127.0.0.1) that keeps every node it is sent and scores each,
//! nodeCacheCapable (names only) as HAMi-style extenders run, and prints the
//! p50/p90/p99 of the scheduling cycle for both and the difference.
//!
//! ```sh
//! cargo run -p strata-extender --example cycle_time -- 1000 200
//! cargo run --release -p strata-extender --example cycle_time -- 16000 200
//! cargo run --release -p strata-extender --example cycle_time -- 16000 200 objects   # node objects
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::{CycleResult, Scheduler};
use strata_scheduler::testing::{RecordingCluster, node, pod};

/// Nanoseconds the stub spent in its handlers, and the calls.
static STUB_NS: AtomicU64 = AtomicU64::new(0);
static STUB_CALLS: AtomicU64 = AtomicU64::new(0);

fn timed(start: Instant, out: String) -> String {
    STUB_NS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    STUB_CALLS.fetch_add(1, Ordering::Relaxed);
    out
}

/// Keeps every node: echoes the candidate names.
async fn filter(body: Bytes) -> String {
    let start = Instant::now();
    let args: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let names: Vec<String> = match args["NodeNames"].as_array() {
        Some(n) => n
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        None => args["Nodes"]["items"]
            .as_array()
            .map(|i| {
                i.iter()
                    .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let out = if args["NodeNames"].is_array() {
        serde_json::json!({ "NodeNames": names }).to_string()
    } else {
        let items: Vec<serde_json::Value> = names
            .iter()
            .map(|n| serde_json::json!({"metadata": {"name": n}}))
            .collect();
        serde_json::json!({ "Nodes": {"items": items} }).to_string()
    };
    timed(start, out)
}

/// Scores each node 0..=10 from its name.
async fn prioritize(body: Bytes) -> String {
    let start = Instant::now();
    let args: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let list: Vec<serde_json::Value> = args["NodeNames"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| {
            args["Nodes"]["items"]
                .as_array()
                .map(|i| i.iter().map(|n| n["metadata"]["name"].clone()).collect())
                .unwrap_or_default()
        })
        .into_iter()
        .map(|n| {
            let s = n.as_str().map(|s| s.len() as i64 % 11).unwrap_or(0);
            serde_json::json!({"Host": n, "Score": s})
        })
        .collect();
    timed(start, serde_json::Value::Array(list).to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn run(
    nodes: usize,
    pods: usize,
    extra: &str,
    extenders: &str,
    rt: &tokio::runtime::Runtime,
) -> Vec<Duration> {
    let cluster = Arc::new(RecordingCluster::default());
    let mut reg = strata_plugins::registry();
    strata_extender::register(&mut reg);
    let yaml = format!("parallelism: 1\nseed: 1\n{extra}extenders: {extenders}\n");
    let cfg = SchedulerConfig::from_yaml(&yaml).expect("config");
    let mut s = Scheduler::new(
        cfg,
        &reg,
        &strata_plugins::default_plugins(),
        cluster,
        Arc::new(ManualClock::default()),
        rt.handle().clone(),
    )
    .expect("scheduler");
    for i in 0..nodes {
        let n = node(&format!("node-{i:05}"))
            .alloc("cpu", "64")
            .alloc("memory", "256Gi")
            .alloc("pods", "110")
            .label("topology.kubernetes.io/zone", &format!("zone-{}", i % 10))
            .build();
        s.handle_update(ClusterUpdate::NodeUpserted(Arc::new(n)));
    }
    let mut times = Vec::with_capacity(pods);
    for i in 0..pods {
        let p = pod(&format!("p-{i}"))
            .req("cpu", "100m")
            .req("memory", "128Mi")
            .build();
        s.handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
        let o = s.schedule_one().expect("a pod is ready");
        assert!(
            matches!(o.result, CycleResult::Scheduled { .. }),
            "{:?}",
            o.result
        );
        times.push(o.duration);
    }
    times.sort();
    times
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let objects = args.next().as_deref() == Some("objects");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let app = Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("loopback");
    let addr = listener.local_addr().expect("address");
    rt.spawn(async move { axum::serve(listener, app).await });

    let base = run(nodes, pods, "", "[]", &rt);
    // A pod an extender is interested in takes no equivalence fast path:
    // the baseline of the same full scan without an extender.
    let scan = run(nodes, pods, "equivalenceCacheClasses: 0\n", "[]", &rt);
    let ext = run(
        nodes,
        pods,
        "",
        &format!(
            "[{{urlPrefix: 'http://{addr}', filterVerb: filter, prioritizeVerb: prioritize, weight: 1, nodeCacheCapable: {}}}]",
            !objects
        ),
        &rt,
    );
    println!(
        "{nodes} nodes, {pods} pods, extender sent {}",
        if objects {
            "node objects"
        } else {
            "node names"
        }
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let calls = STUB_CALLS.load(Ordering::Relaxed).max(1);
    println!(
        "  the stub extender's own handling: {:.3} ms per call ({} calls, two per cycle)",
        STUB_NS.load(Ordering::Relaxed) as f64 / calls as f64 / 1e6,
        calls
    );
    if std::env::var_os("CYCLE_TIME_METRICS").is_some() {
        for l in strata_extender::metrics::encode().lines() {
            if l.contains("_sum") || l.contains("_count") {
                println!("  {l}");
            }
        }
    }
    for (label, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let (b, f, e) = (
            percentile(&base, p),
            percentile(&scan, p),
            percentile(&ext, p),
        );
        println!(
            "  {label}: without {:>9.3} ms (full scan {:>9.3} ms)   with extender {:>9.3} ms   added over the full scan {:>9.3} ms",
            ms(b),
            ms(f),
            ms(e),
            ms(e) - ms(f)
        );
    }
}
