//! Shared helpers: a fake API server, adapter options for fast tests, and
//! waiting with a deadline.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use strata_fake_apiserver::{FakeApiServer, Options, fixtures};
use strata_kube::{Adapter, AdapterOptions};
use strata_scheduler::config::SchedulerConfig;

pub const SCHED: &str = "strata-scheduler";

pub fn server() -> FakeApiServer {
    server_with(Options::default())
}

pub fn server_with(opts: Options) -> FakeApiServer {
    let s = FakeApiServer::start_with(opts).expect("fake API server starts");
    s.create_many(
        "namespaces",
        ["default", "work", "strata-system"].map(fixtures::namespace),
    )
    .unwrap();
    s
}

pub fn client(s: &FakeApiServer) -> kube::Client {
    let cfg = kube::Config::new(s.url().parse().unwrap());
    kube::Client::try_from(cfg).unwrap()
}

/// Options for tests: fast leader election, no client limit to speak of,
/// health on a free port.
pub fn options(identity: &str, leader: bool) -> AdapterOptions {
    let mut o = AdapterOptions {
        qps: 5000.0,
        burst: 5000,
        event_qps: 1000.0,
        event_burst: 1000,
        http_address: Some("127.0.0.1:0".parse().unwrap()),
        shutdown_grace: Duration::from_secs(5),
        // Plain HTTP: the fake API server does not answer TokenReviews.
        serving: strata_kube::Serving::Insecure,
        ..AdapterOptions::default()
    };
    let l = &mut o.leader_election;
    l.enabled = leader;
    l.lease_duration = Duration::from_millis(1500);
    l.renew_deadline = Duration::from_millis(1000);
    l.retry_period = Duration::from_millis(200);
    l.lease_namespace = "strata-system".into();
    l.identity = identity.into();
    o
}

pub fn config() -> SchedulerConfig {
    SchedulerConfig::from_yaml("parallelism: 2\npodInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 2\nprofiles: [{schedulerName: strata-scheduler}]\n").unwrap()
}

pub async fn start(s: &FakeApiServer, identity: &str, leader: bool) -> Adapter {
    Adapter::start(config(), options(identity, leader), client(s), Vec::new())
        .await
        .expect("adapter starts")
}

pub async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Pods bound per UID, from the server's record of bindings.
pub fn binds_per_uid(s: &FakeApiServer) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for b in s.bindings() {
        *m.entry(b.uid).or_insert(0) += 1;
    }
    m
}

/// A plain HTTP GET; returns the status code and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// A pending pod that fits only on `node` (nodeSelector on the hostname).
pub fn pod_for_node(name: &str, node: &str) -> serde_json::Value {
    let mut p = fixtures::pod("work", name, SCHED, 100, 64, None);
    p["spec"]["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": node});
    p
}
