//! A whole run: nodes up, pods in at the scenario's pace, binds followed,
//! placement checked, everything removed again.
//!
//! Two shapes share the phases:
//! - [`run`]: a scheduler is already running (`strata run` in another
//!   shell, or the cluster's own); pods are created at the scenario's
//!   arrival times and measured from create to bind.
//! - [`compare`]: each [`Contender`] (a scheduler command line) in turn, on
//!   the same nodes and the same pods: the pods are created *before* the
//!   scheduler starts, so only the scheduler is measured (its start-up, its
//!   time to `/readyz` when it has one, its first bind, then throughput),
//!   and the scheduler is stopped and its pods deleted before the next.
//!
//! Workloads named in [`RunOptions::direct`] are created already bound
//! (`spec.nodeName` set, first fit) before anything is measured: load that
//! exists when a scheduler starts, which it must read but not place.

use crate::apimetrics::{self, RequestStats};
use crate::check::{PlacementCheck, check};
use crate::cluster::{self, BindLog, ClusterError};
use crate::measure::{self, Throughput};
use crate::objects::{self, PlannedPod, PodOptions};
use k8s_openapi::api::core::v1::{Node, Pod};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use strata_simulator::Scenario;
use strata_simulator::report::Latency;
use tokio::time::Instant;

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An API call failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// `direct` names a workload the scenario does not have.
    #[error("--direct {0}: no such workload in the scenario (workloads: {1})")]
    UnknownWorkload(String, String),
    /// The scenario needs what a run cannot create.
    #[error("{0}")]
    Unsupported(String),
    /// A scheduler process could not be started.
    #[error("starting {label} ({program}): {error}")]
    Spawn {
        /// The contender.
        label: String,
        /// Its program.
        program: String,
        /// Why.
        error: std::io::Error,
    },
}

/// How a run goes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run's id: labels every object, names the namespaces.
    pub run: String,
    /// `spec.schedulerName` of the measured pods ([`run`] only; contenders
    /// bring their own).
    pub scheduler_name: String,
    /// Creates in flight at once.
    pub concurrency: usize,
    /// Give up waiting for binds after this long.
    pub timeout: Duration,
    /// Stop waiting once every pod is created and nothing was bound for
    /// this long.
    pub idle: Duration,
    /// Leave the namespaces and nodes in place.
    pub keep: bool,
    /// Workloads created already bound (existing load).
    pub direct: Vec<String>,
}

impl RunOptions {
    /// Defaults for run id `run`.
    pub fn new(run: impl Into<String>) -> RunOptions {
        RunOptions {
            run: run.into(),
            scheduler_name: "strata-scheduler".into(),
            concurrency: 128,
            timeout: Duration::from_secs(900),
            idle: Duration::from_secs(60),
            keep: false,
            direct: Vec::new(),
        }
    }
}

/// A scheduler to start for [`compare`].
#[derive(Clone, Debug)]
pub struct Contender {
    /// Name in the report, e.g. `kube-scheduler (pct 100)`.
    pub label: String,
    /// The profile its pods name.
    pub scheduler_name: String,
    /// Program and arguments.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// A plain-HTTP address serving `/readyz`, to time readiness.
    pub readyz: Option<SocketAddr>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

/// What one measured run found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Which scheduler (contender label, or the scheduler name).
    pub scheduler: String,
    /// Nodes in the run.
    pub nodes: usize,
    /// Pods created already bound.
    pub direct_pods: usize,
    /// Measured pods planned.
    pub pods: usize,
    /// Measured pods whose create failed.
    pub create_failures: usize,
    /// The first create error, if any.
    pub first_create_error: Option<String>,
    /// Measured pods bound.
    pub bound: usize,
    /// Whether every created pod was bound.
    pub all_bound: bool,
    /// Pods seen bound to a second node.
    pub double_binds: usize,
    /// First to last create sent, seconds.
    pub create_span_s: f64,
    /// Scheduler start to `/readyz` answering 200, seconds (contenders with
    /// a readiness address).
    pub start_to_ready_s: Option<f64>,
    /// Scheduler start to its first bind, seconds (contenders).
    pub start_to_first_bind_s: Option<f64>,
    /// First create sent (or scheduler start, for contenders) to the last
    /// bind, seconds.
    pub to_last_bind_s: f64,
    /// First to last bind, seconds.
    pub first_to_last_bind_s: f64,
    /// Bound pods / `to_last_bind_s`.
    pub pods_per_s: f64,
    /// Bound pods / `first_to_last_bind_s`.
    pub pods_per_s_binding: f64,
    /// scheduler_perf-style samples: pods bound per 1 s, first skipped.
    pub throughput: Throughput,
    /// Create sent → bind seen by the watch ([`run`] only: contenders'
    /// pods wait for the scheduler to start).
    pub create_to_bind: Latency,
    /// Placement check of every bound pod (measured and direct).
    pub placement: PlacementCheck,
    /// The API server's requests during the measured part.
    pub apiserver: Vec<RequestStats>,
    /// Largest `apiserver_current_inflight_requests` seen, by kind.
    pub apiserver_max_inflight: BTreeMap<String, f64>,
    /// The scheduler process's peak resident memory (VmHWM), MiB.
    pub peak_rss_mib: Option<f64>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The workloads a run measures and the ones it binds directly.
fn split(sc: &Scenario, direct: &[String]) -> Result<(), RunError> {
    for d in direct {
        if !sc.workloads.iter().any(|w| &w.name == d) {
            let names: Vec<&str> = sc.workloads.iter().map(|w| w.name.as_str()).collect();
            return Err(RunError::UnknownWorkload(d.clone(), names.join(", ")));
        }
    }
    if sc.dra.is_some() {
        return Err(RunError::Unsupported(format!(
            "{}: DRA objects (the `dra` section) are not created by `strata kwok` yet",
            sc.source
        )));
    }
    Ok(())
}

/// The namespace of run `run` for `what`.
pub fn namespace(run: &str, what: &str) -> String {
    format!("strata-kwok-{run}-{what}")
}

/// Nodes and the directly bound pods.
struct Setup {
    nodes: Vec<Node>,
    direct_ns: Option<String>,
    direct: Vec<Pod>,
}

async fn setup(client: &kube::Client, sc: &Scenario, opts: &RunOptions) -> Result<Setup, RunError> {
    let nodes = objects::nodes(sc, &opts.run);
    let t = Instant::now();
    tracing::info!(nodes = nodes.len(), "creating kwok nodes");
    cluster::create_nodes(client, nodes.clone(), opts.concurrency).await?;
    eprintln!(
        "created {} kwok nodes in {:.1} s",
        nodes.len(),
        t.elapsed().as_secs_f64()
    );
    let mut setup = Setup {
        nodes,
        direct_ns: None,
        direct: Vec::new(),
    };
    if opts.direct.is_empty() {
        return Ok(setup);
    }
    let ns = namespace(&opts.run, "existing");
    cluster::create_namespace(client, &ns, &opts.run).await?;
    setup.direct_ns = Some(ns.clone());
    let popts = PodOptions {
        run: opts.run.clone(),
        namespace: ns.clone(),
        // Never scheduled: they are bound at creation.
        scheduler_name: "strata-kwok-direct".into(),
        gated: false,
    };
    let mut plan = objects::pods(sc, &popts, |w| opts.direct.contains(&w.name));
    let mut pods: Vec<Pod> = plan.iter().map(|p| p.pod.clone()).collect();
    let unplaced = objects::place_directly(&setup.nodes, &mut pods);
    if unplaced > 0 {
        eprintln!(
            "warning: {unplaced} directly bound pods found no node with room and are left pending"
        );
    }
    for (p, pod) in plan.iter_mut().zip(&pods) {
        p.pod = pod.clone();
        p.at = Duration::ZERO;
    }
    let t = Instant::now();
    let sent = cluster::sent_times(plan.len());
    let (failed, err) =
        cluster::create_pods(client, &plan, opts.concurrency, Instant::now(), sent).await;
    if let Some(e) = err {
        return Err(RunError::Cluster(e));
    }
    eprintln!(
        "created {} bound pods in {:.1} s ({failed} failed)",
        plan.len(),
        t.elapsed().as_secs_f64()
    );
    setup.direct = pods;
    // kwok marks each bound pod Running: let it catch up, so its status
    // writes do not weigh on the first scheduler measured more than on the
    // others.
    let t = Instant::now();
    let caught_up = cluster::wait_running(client, &ns, Duration::from_secs(600)).await?;
    eprintln!(
        "kwok {} the existing pods Running after {:.1} s",
        if caught_up {
            "reported all"
        } else {
            "had not reported all"
        },
        t.elapsed().as_secs_f64()
    );
    Ok(setup)
}

async fn teardown(client: &kube::Client, opts: &RunOptions, setup: &Setup) {
    if opts.keep {
        eprintln!(
            "--keep: leaving the run's nodes and namespaces (label {}={})",
            objects::RUN_LABEL,
            opts.run
        );
        return;
    }
    if let Some(ns) = &setup.direct_ns
        && let Err(e) = cluster::delete_namespace(client, ns).await
    {
        eprintln!("warning: cleanup: {e}");
    }
    if let Err(e) = cluster::delete_nodes(client, &opts.run).await {
        eprintln!("warning: cleanup: {e}");
    }
}

/// Samples the API server's in-flight gauge every 2 s into `max`.
fn sample_inflight(
    client: &kube::Client,
    max: Arc<Mutex<BTreeMap<String, f64>>>,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(text) = cluster::apiserver_metrics(&client).await {
                let mut m = max.lock();
                for (k, v) in apimetrics::inflight(&text) {
                    let e = m.entry(k).or_insert(0.0);
                    *e = e.max(v);
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

/// One measured phase: `plan` created at its pace (or all before the
/// contender starts), binds followed until all are bound or time is up.
struct Measured {
    log: BindLog,
    sent: Vec<Option<Instant>>,
    created_failures: usize,
    first_error: Option<String>,
    apiserver: Vec<RequestStats>,
    max_inflight: BTreeMap<String, f64>,
}

async fn measure_phase(
    client: &kube::Client,
    ns: &str,
    plan: &[PlannedPod],
    opts: &RunOptions,
) -> Measured {
    let log = Arc::new(Mutex::new(BindLog::new(
        plan.iter()
            .map(|p| p.pod.metadata.name.clone().unwrap_or_default()),
    )));
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    let watcher = cluster::watch_binds(client, ns, log.clone(), tx);
    let before = cluster::apiserver_metrics(client).await.ok();
    let max_inflight = Arc::new(Mutex::new(BTreeMap::new()));
    let sampler = sample_inflight(client, max_inflight.clone());
    // Give the watch a moment to be established before the first create.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = cluster::sent_times(plan.len());
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let creating = {
        let (client, sent, done) = (client.clone(), sent.clone(), done.clone());
        let plan = plan.to_vec();
        let conc = opts.concurrency;
        tokio::spawn(async move {
            let r = cluster::create_pods(&client, &plan, conc, start, sent).await;
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    let deadline = start + opts.timeout;
    let want = plan.len();
    let wait = cluster::wait_bound(rx, want, deadline, opts.idle, || {
        done.load(Ordering::SeqCst)
    });
    wait.await;
    let (created_failures, first_error) = match creating.await {
        Ok((n, e)) => (n, e.map(|e| e.to_string())),
        Err(e) => (0, Some(e.to_string())),
    };
    // Let binds already sent land in the log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    watcher.abort();
    sampler.abort();
    let after = cluster::apiserver_metrics(client).await.ok();
    let apiserver = match (before, after) {
        (Some(b), Some(a)) => apimetrics::delta(
            &apimetrics::request_durations(&b),
            &apimetrics::request_durations(&a),
            (want as f64 / 20.0).max(10.0),
        ),
        _ => Vec::new(),
    };
    let log = std::mem::take(&mut *log.lock());
    let sent = sent.lock().clone();
    let max_inflight = max_inflight.lock().clone();
    Measured {
        log,
        sent,
        created_failures,
        first_error,
        apiserver,
        max_inflight,
    }
}

/// Fills the report's timing and throughput from a measured phase; `origin`
/// is the first create (run) or the scheduler's start (compare).
fn fill(r: &mut RunReport, m: &Measured, origin: Option<Instant>, with_latency: bool) {
    let binds: Vec<Instant> = m.log.bound.iter().flatten().map(|b| b.at).collect();
    let first_sent = m.sent.iter().flatten().min().copied();
    let last_sent = m.sent.iter().flatten().max().copied();
    r.pods = m.sent.len();
    r.create_failures = m.created_failures;
    r.first_create_error = m.first_error.clone();
    r.bound = m.log.bound_count;
    r.all_bound = m.created_failures == 0 && m.log.bound_count >= m.sent.len();
    r.double_binds = m.log.double_binds;
    if let (Some(a), Some(b)) = (first_sent, last_sent) {
        r.create_span_s = secs(b - a);
    }
    let (Some(first), Some(last)) = (binds.iter().min().copied(), binds.iter().max().copied())
    else {
        return;
    };
    let origin = origin.or(first_sent).unwrap_or(first);
    r.to_last_bind_s = secs(last.saturating_duration_since(origin));
    r.first_to_last_bind_s = secs(last - first);
    r.pods_per_s = measure::rate(r.bound, last.saturating_duration_since(origin));
    r.pods_per_s_binding = measure::rate(r.bound, last - first);
    let offsets: Vec<Duration> = binds.iter().map(|b| *b - first).collect();
    r.throughput = Throughput::from_samples(&measure::samples(&offsets, Duration::from_secs(1)));
    if with_latency {
        r.create_to_bind =
            measure::latency(m.log.bound.iter().zip(&m.sent).filter_map(|(b, s)| {
                let (b, s) = (b.as_ref()?, (*s)?);
                Some((
                    s.saturating_duration_since(origin),
                    b.at.saturating_duration_since(origin),
                ))
            }));
    }
    r.apiserver = m.apiserver.clone();
    r.apiserver_max_inflight = m.max_inflight.clone();
}

async fn placement(
    client: &kube::Client,
    nodes: &[Node],
    namespaces: &[&str],
) -> Result<PlacementCheck, RunError> {
    let mut pods = Vec::new();
    for ns in namespaces {
        pods.extend(cluster::list_pods(client, ns).await?);
    }
    let bound: Vec<(&Pod, &str)> = pods
        .iter()
        .filter_map(|p| Some((p, p.spec.as_ref()?.node_name.as_deref()?)))
        .collect();
    Ok(check(nodes, &bound))
}

/// Runs `sc` against whatever scheduler serves `opts.scheduler_name`.
pub async fn run(
    client: &kube::Client,
    sc: &Scenario,
    opts: &RunOptions,
) -> Result<RunReport, RunError> {
    split(sc, &opts.direct)?;
    let setup = setup(client, sc, opts).await?;
    let result = run_measured(client, sc, opts, &setup).await;
    teardown(client, opts, &setup).await;
    result
}

async fn run_measured(
    client: &kube::Client,
    sc: &Scenario,
    opts: &RunOptions,
    setup: &Setup,
) -> Result<RunReport, RunError> {
    let ns = namespace(&opts.run, "pods");
    cluster::create_namespace(client, &ns, &opts.run).await?;
    let popts = PodOptions {
        run: opts.run.clone(),
        namespace: ns.clone(),
        scheduler_name: opts.scheduler_name.clone(),
        gated: false,
    };
    let plan = objects::pods(sc, &popts, |w| !opts.direct.contains(&w.name));
    eprintln!(
        "creating {} pods for {} in namespace {ns}",
        plan.len(),
        opts.scheduler_name
    );
    let m = measure_phase(client, &ns, &plan, opts).await;
    let mut r = RunReport {
        scenario: sc.name.clone(),
        scheduler: opts.scheduler_name.clone(),
        nodes: setup.nodes.len(),
        direct_pods: setup.direct.len(),
        ..Default::default()
    };
    fill(&mut r, &m, None, true);
    let mut namespaces = vec![ns.as_str()];
    namespaces.extend(setup.direct_ns.as_deref());
    r.placement = placement(client, &setup.nodes, &namespaces).await?;
    if !opts.keep {
        cluster::delete_namespace(client, &ns).await?;
    }
    Ok(r)
}

/// A started scheduler process.
struct Child {
    child: std::process::Child,
    ready: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
}

fn spawn(c: &Contender) -> Result<Child, RunError> {
    let err = |error| RunError::Spawn {
        label: c.label.clone(),
        program: c.program.display().to_string(),
        error,
    };
    let log = std::fs::File::create(&c.log).map_err(err)?;
    let log2 = log.try_clone().map_err(err)?;
    let child = std::process::Command::new(&c.program)
        .args(&c.args)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(err)?;
    let ready = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(addr) = c.readyz {
        let (ready, stop) = (ready.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if readyz_ok(addr) {
                    *ready.lock() = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }
    Ok(Child { child, ready, stop })
}

/// Whether `GET /readyz` on `addr` answers 200.
fn readyz_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .is_ok_and(|l| l.starts_with("HTTP/1.") && l[8..].trim_start().starts_with("200"))
}

/// Peak resident memory of process `pid`, MiB, from /proc.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl Child {
    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sc` once per contender on the same nodes (and directly bound
/// pods), creating its pods before starting it.
pub async fn compare(
    client: &kube::Client,
    sc: &Scenario,
    opts: &RunOptions,
    contenders: &[Contender],
) -> Result<Vec<RunReport>, RunError> {
    split(sc, &opts.direct)?;
    let setup = setup(client, sc, opts).await?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for (i, c) in contenders.iter().enumerate() {
        match compare_one(client, sc, opts, &setup, c, i).await {
            Ok(r) => out.push(r),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    teardown(client, opts, &setup).await;
    result.map(|()| out)
}

async fn compare_one(
    client: &kube::Client,
    sc: &Scenario,
    opts: &RunOptions,
    setup: &Setup,
    c: &Contender,
    i: usize,
) -> Result<RunReport, RunError> {
    let ns = namespace(&opts.run, &format!("c{i}"));
    cluster::create_namespace(client, &ns, &opts.run).await?;
    let popts = PodOptions {
        run: opts.run.clone(),
        namespace: ns.clone(),
        scheduler_name: c.scheduler_name.clone(),
        gated: false,
    };
    let mut plan = objects::pods(sc, &popts, |w| !opts.direct.contains(&w.name));
    for p in &mut plan {
        p.at = Duration::ZERO;
    }
    eprintln!(
        "{}: creating {} pods in {ns} before it starts",
        c.label,
        plan.len()
    );
    let t = Instant::now();
    let sent = cluster::sent_times(plan.len());
    let (failed, err) =
        cluster::create_pods(client, &plan, opts.concurrency, Instant::now(), sent).await;
    if let Some(e) = err {
        return Err(e.into());
    }
    eprintln!(
        "{}: created in {:.1} s ({failed} failed); starting it",
        c.label,
        t.elapsed().as_secs_f64()
    );
    // Measure with nothing left to create: the phase's plan is empty of
    // arrivals, so only the scheduler moves.
    let started = Arc::new(Mutex::new(None::<(Instant, u32)>));
    let child = Arc::new(Mutex::new(None::<Child>));
    let spawn_err = Arc::new(Mutex::new(None));
    let during = {
        let (started, child, spawn_err) = (started.clone(), child.clone(), spawn_err.clone());
        async move {
            match spawn(c) {
                Ok(ch) => {
                    *started.lock() = Some((Instant::now(), ch.child.id()));
                    *child.lock() = Some(ch);
                }
                Err(e) => *spawn_err.lock() = Some(e),
            }
        }
    };
    let mut m = measure_phase_existing(client, &ns, &plan, opts, during).await;
    m.created_failures = failed;
    if let Some(e) = spawn_err.lock().take() {
        return Err(e);
    }
    let (start, pid) = started.lock().unwrap_or((Instant::now(), 0));
    let peak = peak_rss_mib(pid);
    let ready = child.lock().as_ref().and_then(|ch| *ch.ready.lock());
    let ch = child.lock().take();
    if let Some(ch) = ch {
        tokio::task::spawn_blocking(move || ch.stop()).await.ok();
    }
    let mut r = RunReport {
        scenario: sc.name.clone(),
        scheduler: c.label.clone(),
        nodes: setup.nodes.len(),
        direct_pods: setup.direct.len(),
        peak_rss_mib: peak,
        ..Default::default()
    };
    fill(&mut r, &m, Some(start), false);
    r.start_to_ready_s = ready.map(|t| secs(t.saturating_duration_since(start)));
    r.start_to_first_bind_s = m
        .log
        .bound
        .iter()
        .flatten()
        .map(|b| b.at)
        .min()
        .map(|t| secs(t.saturating_duration_since(start)));
    let mut namespaces = vec![ns.as_str()];
    namespaces.extend(setup.direct_ns.as_deref());
    r.placement = placement(client, &setup.nodes, &namespaces).await?;
    // Shown before the clean-up, so a clean-up that fails loses no figure.
    eprint!("{}", r.to_table());
    cluster::delete_namespace(client, &ns).await?;
    Ok(r)
}

/// A measured phase over pods that already exist: follows binds only.
async fn measure_phase_existing(
    client: &kube::Client,
    ns: &str,
    plan: &[PlannedPod],
    opts: &RunOptions,
    during: impl std::future::Future<Output = ()>,
) -> Measured {
    let log = Arc::new(Mutex::new(BindLog::new(
        plan.iter()
            .map(|p| p.pod.metadata.name.clone().unwrap_or_default()),
    )));
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    let watcher = cluster::watch_binds(client, ns, log.clone(), tx);
    let before = cluster::apiserver_metrics(client).await.ok();
    let max_inflight = Arc::new(Mutex::new(BTreeMap::new()));
    let sampler = sample_inflight(client, max_inflight.clone());
    // Give the watch a moment to be established before the scheduler starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    during.await;
    let deadline = Instant::now() + opts.timeout;
    cluster::wait_bound(rx, plan.len(), deadline, opts.idle, || true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    watcher.abort();
    sampler.abort();
    let after = cluster::apiserver_metrics(client).await.ok();
    let apiserver = match (before, after) {
        (Some(b), Some(a)) => apimetrics::delta(
            &apimetrics::request_durations(&b),
            &apimetrics::request_durations(&a),
            (plan.len() as f64 / 20.0).max(10.0),
        ),
        _ => Vec::new(),
    };
    let log = std::mem::take(&mut *log.lock());
    let max_inflight = max_inflight.lock().clone();
    Measured {
        log,
        sent: vec![None; plan.len()],
        created_failures: 0,
        first_error: None,
        apiserver,
        max_inflight,
    }
}

impl RunReport {
    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n== {} on {} ({} kwok nodes)",
            self.scenario, self.scheduler, self.nodes
        );
        if self.direct_pods > 0 {
            let _ = writeln!(
                s,
                "  existing pods (bound at creation)  {}",
                self.direct_pods
            );
        }
        let _ = writeln!(
            s,
            "  pods        {} created, {} bound{}; all bound: {}; bound twice: {}",
            self.pods - self.create_failures,
            self.bound,
            if self.create_failures > 0 {
                format!(
                    ", {} creates failed ({})",
                    self.create_failures,
                    self.first_create_error.as_deref().unwrap_or("")
                )
            } else {
                String::new()
            },
            if self.all_bound { "yes" } else { "NO" },
            self.double_binds
        );
        if let Some(r) = self.start_to_ready_s {
            let _ = writeln!(s, "  start → /readyz        {r:.2} s");
        }
        if let Some(b) = self.start_to_first_bind_s {
            let _ = writeln!(s, "  start → first bind     {b:.2} s");
        }
        let origin = if self.start_to_first_bind_s.is_some() {
            "start"
        } else {
            "first create"
        };
        let _ = writeln!(
            s,
            "  {origin} → last bind  {:.2} s ({:.0} pods/s)",
            self.to_last_bind_s, self.pods_per_s
        );
        let _ = writeln!(
            s,
            "  first → last bind      {:.2} s ({:.0} pods/s)",
            self.first_to_last_bind_s, self.pods_per_s_binding
        );
        let t = &self.throughput;
        let _ = writeln!(
            s,
            "  throughput (1 s samples, first skipped)  avg {:.0}  p50 {:.0}  p90 {:.0}  p99 {:.0} pods/s over {} samples",
            t.average, t.p50, t.p90, t.p99, t.samples
        );
        if self.create_to_bind.count > 0 {
            let l = &self.create_to_bind;
            let _ = writeln!(
                s,
                "  create → bind (ms)     p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            );
        }
        if self.create_span_s > 0.0 {
            let _ = writeln!(s, "  creates sent over      {:.2} s", self.create_span_s);
        }
        if let Some(m) = self.peak_rss_mib {
            let _ = writeln!(s, "  scheduler peak RSS     {m:.0} MiB");
        }
        let p = &self.placement;
        let _ = writeln!(
            s,
            "  placement check        {} pods on {} nodes: {}",
            p.pods,
            p.nodes,
            if p.violation_count == 0 {
                "no violation".to_owned()
            } else {
                format!("{} VIOLATIONS", p.violation_count)
            }
        );
        for v in p.violations.iter().take(5) {
            let _ = writeln!(s, "    {}: {}", v.rule, v.detail);
        }
        if !self.apiserver.is_empty() {
            let _ = writeln!(
                s,
                "  API server during the run (apiserver_request_duration_seconds):"
            );
            for a in self.apiserver.iter().take(6) {
                let _ = writeln!(
                    s,
                    "    {:<28} {:>8.0} calls  mean {:.2} ms",
                    a.request, a.count, a.mean_ms
                );
            }
        }
        if !self.apiserver_max_inflight.is_empty() {
            let parts: Vec<String> = self
                .apiserver_max_inflight
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect();
            let _ = writeln!(s, "    max in flight: {}", parts.join(", "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_from_a_measured_phase() {
        let t0 = Instant::now();
        let mut log = BindLog::new((0..4).map(|i| format!("p-{i}")));
        let at = |ms| t0 + Duration::from_millis(ms);
        for (i, ms) in [(0, 1000u64), (1, 1500), (2, 2600), (3, 3100)] {
            let mut p = Pod::default();
            p.metadata.name = Some(format!("p-{i}"));
            p.spec = Some(Default::default());
            p.spec.as_mut().unwrap().node_name = Some("n".into());
            log.observe(&p, at(ms));
        }
        let m = Measured {
            log,
            sent: vec![Some(at(0)), Some(at(100)), Some(at(200)), Some(at(300))],
            created_failures: 0,
            first_error: None,
            apiserver: Vec::new(),
            max_inflight: BTreeMap::new(),
        };
        let mut r = RunReport::default();
        fill(&mut r, &m, None, true);
        assert!(r.all_bound);
        assert_eq!(r.bound, 4);
        assert!((r.to_last_bind_s - 3.1).abs() < 1e-6);
        assert!((r.first_to_last_bind_s - 2.1).abs() < 1e-6);
        assert!((r.create_span_s - 0.3).abs() < 1e-6);
        // Create → bind: 1000, 1400, 2400, 2800 ms.
        assert_eq!(r.create_to_bind.count, 4);
        assert!((r.create_to_bind.max_ms - 2800.0).abs() < 1e-6);
        // Samples from the first bind (1.0 s): [1,2) 2 skipped, [2,3) 1.
        assert_eq!(r.throughput.samples, 1);
        assert_eq!(r.throughput.average, 1.0);
        let table = r.to_table();
        assert!(table.contains("all bound: yes"), "{table}");
    }

    #[test]
    fn unknown_direct_workloads_and_dra_are_refused() {
        let sc = Scenario::load("small").unwrap();
        assert!(matches!(
            split(&sc, &["nope".into()]),
            Err(RunError::UnknownWorkload(..))
        ));
        assert!(split(&sc, &["plain".into()]).is_ok());
        let dra = Scenario::load("dra-small").unwrap();
        assert!(matches!(split(&dra, &[]), Err(RunError::Unsupported(_))));
    }
}
