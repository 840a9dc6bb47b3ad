//! Wiring: the engine on its own OS thread, informers, the elector, the
//! event writer and the HTTP endpoints on tokio, and the order in which they
//! start and stop.
//!
//! Start: build the engine (configuration errors surface here), start its
//! loop with scheduling off, start every informer (pods after
//! PriorityClasses, so a missing `spec.priority` can be resolved), then the
//! elector. Readiness: once every informer has listed everything and the
//! engine has applied every update sent up to then. Scheduling starts only
//! when this replica is both ready and the leader ([`Gate`]).
//!
//! Stop ([`Adapter::shutdown`], on SIGTERM): the engine stops taking pods,
//! hands back pods waiting at Permit and waits (bounded) for binds in
//! flight; then [`LeaderTask`]s (PodGroup status write-back) write their
//! last changes and stop; then the Lease is released and the informers
//! stop.
//! [`Adapter::kill`] stops everything at once without releasing anything,
//! as a crash would (tests use it to kill a leader).

use crate::client::RateLimiter;
use crate::convert::PriorityClasses;
use crate::http::{self, HttpState};
use crate::informer::{Informer, Sink, Synced};
use crate::leader::{Elector, Gate, LeaderContext, LeaderTask};
use crate::metrics::{EngineObserver, Metrics};
use crate::options::AdapterOptions;
use crate::port::KubeCluster;
use crate::translate::{self, CustomHandler};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ApiResource, DynamicObject};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strata_scheduler::clock::{Clock, SystemClock};
use strata_scheduler::config::{ConfigError, SchedulerConfig};
use strata_scheduler::engine::{RunControl, RunSummary, Scheduler};
use tokio::task::JoinHandle;

/// Why the adapter could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The scheduler configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An adapter setting is invalid.
    #[error("configuration: {0}")]
    Options(#[from] crate::options::OptionsError),
    /// The health/metrics address could not be bound, or its TLS set up.
    #[error("serving /healthz, /readyz and /metrics on {addr}: {error}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: crate::http::ServeError,
    },
    /// The engine thread could not start.
    #[error("starting the engine thread: {0}")]
    Thread(std::io::Error),
}

/// A custom resource to watch (a later issue's CRD).
pub struct CustomResource {
    /// Group, version, kind and plural.
    pub api_resource: ApiResource,
    /// The kind as the plugin registers its events.
    pub kind: &'static str,
    /// What the plugin does with the objects.
    pub handler: Arc<dyn CustomHandler>,
}

/// A running adapter.
pub struct Adapter {
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    control: Arc<RunControl>,
    port: Arc<KubeCluster>,
    engine: Option<std::thread::JoinHandle<RunSummary>>,
    engine_done: Arc<AtomicBool>,
    informers: Vec<JoinHandle<()>>,
    elector: Option<JoinHandle<()>>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    leader_tasks: Vec<JoinHandle<()>>,
    tasks_stop: tokio::sync::watch::Sender<bool>,
    http_addr: Option<SocketAddr>,
    http_task: Option<JoinHandle<()>>,
    identity: String,
    /// Turns true when this replica lost its Lease and, not configured to
    /// campaign again, stopped competing for it.
    lost: tokio::sync::watch::Receiver<bool>,
    /// The certificate the HTTPS port serves (PEM).
    serving_certificate: Option<String>,
}

impl Adapter {
    /// Starts everything on the current tokio runtime (which must be
    /// multi-threaded: binding cycles run on it while the engine thread
    /// blocks).
    pub async fn start(
        cfg: SchedulerConfig,
        opts: AdapterOptions,
        client: kube::Client,
        custom: Vec<CustomResource>,
    ) -> Result<Adapter, AdapterError> {
        Adapter::start_with_registry(cfg, opts, client, custom, strata_plugins::registry()).await
    }

    /// Starts the scheduler as `strata run` does: every in-tree plugin,
    /// with the custom resources that feed their stores watched when the
    /// cluster serves them — PodGroups of both APIs (the PodGroup plugin,
    /// whose status the leader writes back) and DRA objects
    /// (DynamicResources). Plugins read the stores in `stores`.
    pub async fn start_with_stores(
        cfg: SchedulerConfig,
        opts: AdapterOptions,
        client: kube::Client,
        stores: &strata_plugins::pod_group::Stores,
    ) -> Result<Adapter, AdapterError> {
        let none = strata_scheduler::framework::Registry::new();
        Adapter::start_with_plugins(cfg, opts, client, stores, &none).await
    }

    /// As [`Adapter::start_with_stores`], with `plugins` added to the
    /// in-tree ones (a vendor's, through `strata_cli::Strata`; a name
    /// already in the tree replaces that plugin).
    pub async fn start_with_plugins(
        cfg: SchedulerConfig,
        opts: AdapterOptions,
        client: kube::Client,
        stores: &strata_plugins::pod_group::Stores,
        plugins: &strata_scheduler::framework::Registry,
    ) -> Result<Adapter, AdapterError> {
        Adapter::start_with_tasks(cfg, opts, client, stores, plugins, Vec::new()).await
    }

    /// As [`Adapter::start_with_plugins`], with `tasks` run beside the
    /// engine as [`LeaderTask`]s (the group scaler controller, say): started
    /// on every replica, writing only while this replica leads, stopped on
    /// shutdown before the Lease is released.
    pub async fn start_with_tasks(
        cfg: SchedulerConfig,
        opts: AdapterOptions,
        client: kube::Client,
        stores: &strata_plugins::pod_group::Stores,
        plugins: &strata_scheduler::framework::Registry,
        tasks: Vec<Arc<dyn LeaderTask>>,
    ) -> Result<Adapter, AdapterError> {
        let mut custom = Vec::new();
        custom.extend(crate::groups::pod_group_resources(&client, &stores.pod_groups).await);
        custom.extend(crate::dra::dra_resources(&client, &stores.dra).await);
        let mut registry = strata_plugins::registry_with(stores);
        registry.extend(plugins);
        let pool = crate::memory_pool::PoolCollector(stores.memory_pool.clone());
        Adapter::start_inner(
            cfg,
            opts,
            client,
            custom,
            registry,
            vec![Box::new(pool)],
            tasks,
        )
        .await
    }

    /// As [`Adapter::start`], building plugins from `registry` (for
    /// example `strata_plugins::registry_with(&stores)`, so plugins share
    /// the stores the `custom` handlers fill).
    pub async fn start_with_registry(
        cfg: SchedulerConfig,
        opts: AdapterOptions,
        client: kube::Client,
        custom: Vec<CustomResource>,
        registry: strata_scheduler::framework::Registry,
    ) -> Result<Adapter, AdapterError> {
        Adapter::start_inner(cfg, opts, client, custom, registry, Vec::new(), Vec::new()).await
    }

    /// As [`Adapter::start_with_registry`], with metric collectors of
    /// plugins' own figures.
    async fn start_inner(
        cfg: SchedulerConfig,
        opts: AdapterOptions,
        client: kube::Client,
        custom: Vec<CustomResource>,
        mut registry: strata_scheduler::framework::Registry,
        collectors: Vec<Box<dyn prometheus_client::collector::Collector>>,
        tasks: Vec<Arc<dyn LeaderTask>>,
    ) -> Result<Adapter, AdapterError> {
        opts.validate()?;
        // `extenders:` are served by the HTTP extender client unless the
        // caller registered another.
        if registry.extender_factory().is_none() {
            strata_extender::register(&mut registry);
        }
        let started = Instant::now();
        let metrics = Arc::new(Metrics::with_collectors(collectors));
        let control = Arc::new(RunControl::new());
        let gate = Arc::new(Gate::new(control.clone(), metrics.clone()));
        let limiter = Arc::new(RateLimiter::new(opts.qps, opts.burst));
        let event_limiter = Arc::new(RateLimiter::new(opts.event_qps, opts.event_burst));
        let identity = opts.leader_election.identity.clone();
        let mut kube_cluster = KubeCluster::new(
            client.clone(),
            limiter.clone(),
            metrics.clone(),
            event_limiter,
            opts.event_queue,
            identity.clone(),
            gate.clone(),
        );
        kube_cluster.set_bind_timeout(opts.bind_timeout);
        let port = Arc::new(kube_cluster);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let first_profile = cfg
            .profiles
            .first()
            .map(|p| p.scheduler_name.clone())
            .unwrap_or_default();
        let mut sched = Scheduler::new(
            cfg,
            &registry,
            &strata_plugins::default_plugins(),
            port.clone(),
            clock.clone(),
            tokio::runtime::Handle::current(),
        )?;
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Sink::new(tx);
        let heartbeat = Arc::new(AtomicU64::new(0));
        let engine_done = Arc::new(AtomicBool::new(false));
        let engine = {
            let control = control.clone();
            let mut observer = EngineObserver::new(
                metrics.clone(),
                clock,
                heartbeat.clone(),
                started,
                &first_profile,
            );
            let grace = opts.shutdown_grace;
            let done = engine_done.clone();
            std::thread::Builder::new()
                .name("strata-engine".into())
                .spawn(move || {
                    let summary = sched.run(&rx, &control, &mut observer, grace);
                    done.store(true, Ordering::SeqCst);
                    tracing::info!(
                        cycles = summary.cycles,
                        abandoned_binds = summary.abandoned_binds,
                        "engine stopped"
                    );
                    summary
                })
                .map_err(AdapterError::Thread)?
        };

        // Informers.
        let page = opts.page_size;
        let priorities = Arc::new(PriorityClasses::default());
        let mut synced_all: Vec<Synced> = Vec::new();
        let mut informers = Vec::new();
        macro_rules! informer {
            ($name:expr, $api:expr, $tr:expr) => {{
                let synced = Synced::default();
                synced_all.push(synced.clone());
                let inf = Informer::new(
                    $name,
                    $api,
                    page,
                    $tr,
                    sink.clone(),
                    synced.clone(),
                    metrics.clone(),
                );
                (inf, synced)
            }};
        }
        let (ns_inf, _) = informer!(
            "namespaces",
            Api::<Namespace>::all(client.clone()),
            translate::Namespaces
        );
        informers.push(tokio::spawn(ns_inf.run()));
        let (pc_inf, pc_synced) = informer!(
            "priorityclasses",
            Api::<PriorityClass>::all(client.clone()),
            translate::Priorities {
                classes: priorities.clone()
            }
        );
        informers.push(tokio::spawn(pc_inf.run()));
        let (node_inf, _) = informer!("nodes", Api::<Node>::all(client.clone()), translate::Nodes);
        informers.push(tokio::spawn(node_inf.run()));
        let (pdb_inf, _) = informer!(
            "poddisruptionbudgets",
            Api::<PodDisruptionBudget>::all(client.clone()),
            translate::Pdbs
        );
        informers.push(tokio::spawn(pdb_inf.run()));
        let mut leader_tasks: Vec<Arc<dyn LeaderTask>> = tasks;
        for c in custom {
            leader_tasks.extend(c.handler.leader_task());
            let name: &'static str = c.kind;
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &c.api_resource);
            let (inf, _) = informer!(
                name,
                api,
                translate::Custom {
                    kind: c.kind,
                    handler: c.handler
                }
            );
            informers.push(tokio::spawn(inf.run()));
        }
        let (pod_inf, _) = informer!(
            "pods",
            Api::<Pod>::all(client.clone()),
            translate::Pods { priorities }
        );
        informers.push(tokio::spawn(async move {
            pc_synced.wait().await;
            pod_inf.run().await
        }));

        // Readiness: everything listed, and the engine caught up.
        {
            let gate = gate.clone();
            let control = control.clone();
            let metrics = metrics.clone();
            let sink = sink.clone();
            informers.push(tokio::spawn(async move {
                for s in &synced_all {
                    s.wait().await;
                }
                let target = sink.sent();
                while control.applied() < target {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let took = started.elapsed();
                tracing::info!(
                    seconds = took.as_secs_f64(),
                    updates = target,
                    "preload applied; ready"
                );
                metrics.set_ready(true, took);
                gate.set_ready(true);
            }));
        }
        // Questions from leader tasks go down the same channel, after
        // every update sent before them.
        let engine_handle = crate::query::EngineHandle::new(sink.clone());
        drop(sink);

        // Work only the leader does (PodGroup status write-back); stopped
        // on shutdown before the Lease is released.
        let (tasks_stop, tasks_stop_rx) = tokio::sync::watch::channel(false);
        let leader_tasks: Vec<JoinHandle<()>> = leader_tasks
            .into_iter()
            .map(|t| {
                tokio::spawn(t.run(LeaderContext {
                    client: client.clone(),
                    limiter: limiter.clone(),
                    gate: gate.clone(),
                    stop: tasks_stop_rx.clone(),
                    engine: engine_handle.clone(),
                }))
            })
            .collect();

        // Leader election.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
        let elector = if opts.leader_election.enabled {
            // A limiter of its own: renewing the Lease never queues behind
            // binds and status writes (kube-scheduler gives leader election
            // a client of its own for the same reason).
            let e = Elector::new(
                client.clone(),
                opts.leader_election.clone(),
                Arc::new(RateLimiter::new(opts.qps, opts.burst)),
                gate.clone(),
                lost_tx,
            );
            Some(tokio::spawn(e.run(stop_rx)))
        } else {
            gate.set_leader(true);
            None
        };

        // HTTP.
        let mut serving_certificate = None;
        let (http_addr, http_task) = match opts.http_address {
            Some(addr) => {
                let state = Arc::new(HttpState {
                    gate: gate.clone(),
                    metrics: metrics.clone(),
                    heartbeat,
                    started,
                    engine_done: engine_done.clone(),
                });
                let served = http::serve(addr, state, &opts.serving, client.clone())
                    .await
                    .map_err(|error| AdapterError::Http { addr, error })?;
                serving_certificate = served.certificate;
                (Some(served.addr), Some(served.task))
            }
            None => (None, None),
        };

        Ok(Adapter {
            gate,
            metrics,
            control,
            port,
            engine: Some(engine),
            engine_done,
            informers,
            elector,
            stop_tx,
            leader_tasks,
            tasks_stop,
            http_addr,
            http_task,
            identity,
            lost: lost_rx,
            serving_certificate,
        })
    }

    /// Whether the preload is applied.
    pub fn is_ready(&self) -> bool {
        self.gate.is_ready()
    }

    /// The certificate the health and metrics port serves (PEM), when it
    /// serves HTTPS.
    pub fn serving_certificate(&self) -> Option<&str> {
        self.serving_certificate.as_deref()
    }

    /// Whether this replica lost its Lease for good (it stopped
    /// scheduling and no longer campaigns).
    pub fn lost_leadership(&self) -> bool {
        *self.lost.borrow()
    }

    /// Waits until this replica loses its Lease for good (see
    /// [`crate::LeaderElection::recampaign`]); never returns otherwise.
    pub async fn wait_lost_leadership(&self) {
        let mut rx = self.lost.clone();
        if rx.wait_for(|l| *l).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether this replica holds the Lease (always, without election).
    pub fn is_leader(&self) -> bool {
        self.gate.is_leader()
    }

    /// This replica's identity in the Lease.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Scheduling cycles run so far.
    pub fn cycles(&self) -> u64 {
        self.control.cycles()
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Whether the engine thread has ended.
    pub fn engine_stopped(&self) -> bool {
        self.engine_done.load(Ordering::SeqCst)
    }

    /// Waits until ready or `timeout`; returns readiness.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let t = Instant::now();
        while !self.is_ready() {
            if t.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Graceful stop: stop taking pods, hand back pods at Permit, wait for
    /// binds in flight (up to the shutdown grace), release the Lease, stop
    /// informers and the HTTP server.
    pub async fn shutdown(mut self) -> Option<RunSummary> {
        self.control.set_scheduling(false);
        self.control.request_stop();
        let summary = match self.engine.take() {
            Some(h) => tokio::task::spawn_blocking(move || h.join().ok())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let _ = self.tasks_stop.send(true);
        for mut t in self.leader_tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
        let _ = self.stop_tx.send(true);
        if let Some(e) = self.elector.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), e).await;
        }
        self.stop_tasks();
        summary
    }

    /// Abrupt stop, as a crash: API calls fail from now on, nothing is
    /// released, the Lease stays held until it expires.
    pub fn kill(mut self) {
        self.port.kill();
        self.control.set_scheduling(false);
        self.control.request_stop();
        if let Some(e) = self.elector.take() {
            e.abort();
        }
        self.stop_tasks();
        // The engine thread ends on its own (its binds now fail at once).
        self.engine.take();
    }

    fn stop_tasks(&mut self) {
        for t in self.leader_tasks.drain(..) {
            t.abort();
        }
        for t in self.informers.drain(..) {
            t.abort();
        }
        if let Some(t) = self.http_task.take() {
            t.abort();
        }
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        self.control.request_stop();
        if let Some(e) = self.elector.take() {
            e.abort();
        }
        self.stop_tasks();
    }
}
