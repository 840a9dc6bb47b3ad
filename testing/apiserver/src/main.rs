//! `strata-fake-apiserver`: the test API server as a process of its own, so
//! a benchmark can measure the scheduler's memory without the server's.
//!
//! ```text
//! strata-fake-apiserver [--port P] [--nodes N] [--bound-pods N] [--pending-pods N]
//!                       [--scheduler NAME] [--latency-ms MS] [--kubeconfig PATH]
//! ```
//! It fills itself with fixture objects, writes a kubeconfig pointing at
//! itself when asked, prints `ready <url>` on stdout and serves until killed.

use std::time::Duration;
use strata_fake_apiserver::{FakeApiServer, Options, fixtures};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a valid value")),
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "strata-fake-apiserver [--port P] [--nodes N] [--bound-pods N] [--pending-pods N] [--scheduler NAME] [--latency-ms MS] [--kubeconfig PATH]"
        );
        return Ok(());
    }
    let port: u16 = arg(&args, "--port", 0)?;
    let nodes: usize = arg(&args, "--nodes", 0)?;
    let bound: usize = arg(&args, "--bound-pods", 0)?;
    let pending: usize = arg(&args, "--pending-pods", 0)?;
    let scheduler: String = arg(&args, "--scheduler", "strata-scheduler".to_owned())?;
    let latency_ms: f64 = arg(&args, "--latency-ms", 0.0)?;
    let kubeconfig: String = arg(&args, "--kubeconfig", String::new())?;
    let server = FakeApiServer::start_with(Options {
        port,
        latency: Duration::from_secs_f64(latency_ms / 1000.0),
        ..Options::default()
    })
    .map_err(|e| format!("cannot start: {e}"))?;
    let err = |e: strata_fake_apiserver::ApiError| e.message;
    server
        .create_many("namespaces", ["default", "work"].map(fixtures::namespace))
        .map_err(err)?;
    server
        .create_many("nodes", fixtures::nodes(nodes))
        .map_err(err)?;
    server
        .create_many("pods", fixtures::bound_pods("work", bound, nodes))
        .map_err(err)?;
    server
        .create_many("pods", fixtures::pending_pods("work", pending, &scheduler))
        .map_err(err)?;
    if !kubeconfig.is_empty() {
        std::fs::write(&kubeconfig, server.kubeconfig_yaml())
            .map_err(|e| format!("writing {kubeconfig}: {e}"))?;
    }
    println!("ready {}", server.url());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
