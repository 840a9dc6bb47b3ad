//! Measures the adapter against the test API server, which runs in a child
//! process so the adapter's memory is measured alone.
//!
//! ```text
//! # Preload: time until ready and peak RSS (16,000 nodes, 100,000 pods).
//! cargo run --release -p strata-kube --example bench -- preload --nodes 16000 --pods 100000
//! # Bind throughput with ~2 ms API latency, for a client QPS.
//! cargo run --release -p strata-kube --example bench -- binds --nodes 1000 --pods 5000 --latency-ms 2 --qps 200
//! ```
//!
//! `preload` fills the server with nodes and bound (running) pods, plus
//! `--pending` pending ones, and reports the time from start to ready and
//! the process's peak resident set (VmHWM). `binds` preloads nodes, then
//! lets the scheduler bind `--pods` pending pods and reports pods per
//! second from ready to the last bind.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_fake_apiserver::{FakeApiServer, Options, fixtures};
use strata_kube::{Adapter, AdapterOptions};
use strata_scheduler::config::SchedulerConfig;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The child: a server filled with fixtures, serving until killed.
fn server(args: &[String]) {
    let nodes: usize = arg(args, "--nodes", 1000);
    let bound: usize = arg(args, "--bound", 0);
    let pending: usize = arg(args, "--pending", 0);
    let latency: f64 = arg(args, "--latency-ms", 0.0);
    let s = FakeApiServer::start_with(Options {
        latency: Duration::from_secs_f64(latency / 1000.0),
        worker_threads: 2,
        ..Options::default()
    })
    .expect("server starts");
    s.create_many("namespaces", ["default", "work"].map(fixtures::namespace))
        .expect("namespaces");
    s.create_many("nodes", fixtures::nodes(nodes))
        .expect("nodes");
    s.create_many("pods", fixtures::bound_pods("work", bound, nodes))
        .expect("bound pods");
    s.create_many(
        "pods",
        fixtures::pending_pods("work", pending, "strata-scheduler"),
    )
    .expect("pending pods");
    println!("ready {}", s.url());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn spawn_server(extra: &[String]) -> (Child, String) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .arg("server")
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("server process starts");
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("server says ready");
    let url = line
        .trim()
        .strip_prefix("ready ")
        .expect("ready line")
        .to_owned();
    (child, url)
}

fn options(qps: f64, burst: u32) -> AdapterOptions {
    let mut o = AdapterOptions {
        http_address: None,
        qps,
        burst,
        event_qps: 50.0,
        event_burst: 100,
        ..AdapterOptions::default()
    };
    o.leader_election.enabled = false;
    o
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_default();
    if mode == "server" {
        server(&args);
        return;
    }
    let nodes: usize = arg(&args, "--nodes", 16_000);
    let pods: usize = arg(&args, "--pods", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match mode.as_str() {
        "preload" => {
            let pending: usize = arg(&args, "--pending", 0);
            let (mut child, url) = spawn_server(&[
                "--nodes".into(),
                nodes.to_string(),
                "--bound".into(),
                pods.saturating_sub(pending).to_string(),
                "--pending".into(),
                pending.to_string(),
            ]);
            let base = vm_hwm_mib();
            rt.block_on(async {
                let client = kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
                let cfg = SchedulerConfig::from_yaml("profiles: [{schedulerName: strata-scheduler}]\n").expect("config");
                let t = Instant::now();
                let a = Adapter::start(cfg, options(50.0, 100), client, Vec::new()).await.expect("adapter");
                let ready = a.wait_ready(Duration::from_secs(600)).await;
                let took = t.elapsed();
                println!(
                    "preload: {nodes} nodes, {pods} pods ({pending} pending): ready={ready} in {:.2} s; peak RSS {:.0} MiB (process before start: {:.0} MiB)",
                    took.as_secs_f64(),
                    vm_hwm_mib(),
                    base
                );
                a.shutdown().await;
            });
            let _ = child.kill();
        }
        "binds" => {
            let latency: f64 = arg(&args, "--latency-ms", 2.0);
            let qps: f64 = arg(&args, "--qps", 200.0);
            let burst: u32 = arg(&args, "--burst", 100);
            let (mut child, url) = spawn_server(&[
                "--nodes".into(),
                nodes.to_string(),
                "--pending".into(),
                pods.to_string(),
                "--latency-ms".into(),
                latency.to_string(),
            ]);
            rt.block_on(async {
                let client = kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
                let cfg = SchedulerConfig::from_yaml("profiles: [{schedulerName: strata-scheduler}]\n").expect("config");
                let a = Adapter::start(cfg, options(qps, burst), client, Vec::new()).await.expect("adapter");
                assert!(a.wait_ready(Duration::from_secs(600)).await, "not ready");
                let t = Instant::now();
                while (a.metrics().binds_with("bound") as usize) < pods {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if t.elapsed() > Duration::from_secs(900) {
                        break;
                    }
                }
                let took = t.elapsed().as_secs_f64();
                let bound = a.metrics().binds_with("bound");
                println!(
                    "binds: {bound} pods on {nodes} nodes, API latency {latency} ms, qps {qps} burst {burst}: {:.2} s, {:.0} pods/s (cycles {})",
                    took,
                    bound as f64 / took,
                    a.cycles()
                );
                a.shutdown().await;
            });
            let _ = child.kill();
        }
        _ => eprintln!(
            "usage: bench preload|binds [--nodes N] [--pods N] [--pending N] [--latency-ms MS] [--qps Q] [--burst B]"
        ),
    }
}
