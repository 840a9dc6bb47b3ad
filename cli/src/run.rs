//! `strata run`: schedule pods in a Kubernetes cluster.
//!
//! Reads a KubeSchedulerConfiguration-shaped file, connects with the
//! kubeconfig given (or in-cluster credentials), and runs the engine behind
//! the Kubernetes adapter until SIGTERM or SIGINT, then stops gracefully:
//! no new pods are taken, binds in flight finish (or are handed back), the
//! leader Lease is released. Flags named as kube-scheduler's override the
//! file.
//!
//! With a `scaler:` section enabled, the group scaler controller runs
//! beside the engine as a leader-only task (see `strata_scaler::controller`).
//!
//! Plugins that read cluster objects beyond pods and nodes share stores
//! with the adapter's custom-resource informers: PodGroups for the PodGroup
//! plugin, DRA objects for DynamicResources. Plugins added through
//! [`crate::Strata::plugin`] are registered beside the in-tree ones.

use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strata_kube::leader::LeaderTask;
use strata_kube::options::parse_duration;
use strata_kube::{Adapter, AdapterOptions};
use strata_scaler::controller::ScalerController;
use strata_scaler::controller::config::ScalerConfig;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::framework::Registry;

/// Arguments of `strata run`.
#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// Scheduler configuration (KubeSchedulerConfiguration-shaped YAML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Kubeconfig file; default: in-cluster credentials, then KUBECONFIG or
    /// ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Elect a leader on a Lease before scheduling (overrides
    /// leaderElection.leaderElect).
    #[arg(long, value_name = "BOOL")]
    leader_elect: Option<bool>,
    /// How long a lease is valid (e.g. 15s).
    #[arg(long, value_name = "DURATION")]
    leader_elect_lease_duration: Option<String>,
    /// How long the leader retries renewing before it stops (e.g. 10s).
    #[arg(long, value_name = "DURATION")]
    leader_elect_renew_deadline: Option<String>,
    /// How often to try to acquire or renew the lease (e.g. 2s).
    #[arg(long, value_name = "DURATION")]
    leader_elect_retry_period: Option<String>,
    /// The Lease's name.
    #[arg(long, value_name = "NAME")]
    leader_elect_resource_name: Option<String>,
    /// The Lease's namespace.
    #[arg(long, value_name = "NAMESPACE")]
    leader_elect_resource_namespace: Option<String>,
    /// Sustained API writes per second.
    #[arg(long, value_name = "QPS")]
    kube_api_qps: Option<f64>,
    /// API writes allowed in a burst.
    #[arg(long, value_name = "N")]
    kube_api_burst: Option<u32>,
    /// Address of /healthz, /readyz and /metrics (empty: none).
    #[arg(long, value_name = "ADDR")]
    http_address: Option<String>,
    /// How long shutdown waits for binds in flight (e.g. 10s).
    #[arg(long, value_name = "DURATION")]
    shutdown_grace: Option<String>,
    /// How long one bind call may take before its outcome is read back
    /// from the API server (e.g. 30s).
    #[arg(long, value_name = "DURATION")]
    bind_timeout: Option<String>,
    /// After losing the leader Lease, campaign again instead of exiting
    /// (kube-scheduler exits; so does Strata unless this is set).
    #[arg(long)]
    leader_recampaign: bool,
    /// PEM certificate the health and metrics port serves over HTTPS (with
    /// --tls-private-key-file); without both, a self-signed one is made.
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    tls_private_key_file: Option<std::path::PathBuf>,
    /// Paths of the port served without authentication or authorization
    /// (comma-separated; default /healthz,/readyz,/livez).
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    authorization_always_allow_paths: Option<Vec<String>>,
    /// Serve the port over plain HTTP without authentication (local runs
    /// and tests only: /metrics is then open to anyone who reaches it).
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_private_key_file", "authorization_always_allow_paths"])]
    insecure_serving: bool,
}

fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    parse_duration(v)
        .ok_or_else(|| anyhow::anyhow!("--{flag}: {v:?} is not a duration such as 15s"))
}

/// The adapter options from the file, then the flags.
fn options(args: &RunArgs, cfg: &SchedulerConfig) -> anyhow::Result<AdapterOptions> {
    let mut o = AdapterOptions::from_config(cfg)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    if let Some(k) = &args.kubeconfig {
        o.kubeconfig = Some(k.clone());
    }
    let l = &mut o.leader_election;
    if let Some(b) = args.leader_elect {
        l.enabled = b;
    }
    if let Some(v) = &args.leader_elect_lease_duration {
        l.lease_duration = duration("leader-elect-lease-duration", v)?;
    }
    if let Some(v) = &args.leader_elect_renew_deadline {
        l.renew_deadline = duration("leader-elect-renew-deadline", v)?;
    }
    if let Some(v) = &args.leader_elect_retry_period {
        l.retry_period = duration("leader-elect-retry-period", v)?;
    }
    if let Some(v) = &args.leader_elect_resource_name {
        l.lease_name = v.clone();
    }
    if let Some(v) = &args.leader_elect_resource_namespace {
        l.lease_namespace = v.clone();
    }
    if let Some(q) = args.kube_api_qps {
        o.qps = q;
    }
    if let Some(b) = args.kube_api_burst {
        o.burst = b;
    }
    if let Some(a) = &args.http_address {
        o.http_address = if a.is_empty() {
            None
        } else {
            Some(a.parse().with_context(|| {
                format!("--http-address: {a:?} is not an address such as 0.0.0.0:10259")
            })?)
        };
    }
    if let Some(v) = &args.shutdown_grace {
        o.shutdown_grace = duration("shutdown-grace", v)?;
    }
    if let Some(v) = &args.bind_timeout {
        o.bind_timeout = duration("bind-timeout", v)?;
    }
    if args.leader_recampaign {
        o.leader_election.recampaign = true;
    }
    if args.insecure_serving {
        o.serving = strata_kube::Serving::Insecure;
    } else {
        let mut s = strata_kube::SecureServing {
            cert_file: args.tls_cert_file.clone(),
            key_file: args.tls_private_key_file.clone(),
            ..strata_kube::SecureServing::default()
        };
        if s.cert_file.is_some() != s.key_file.is_some() {
            anyhow::bail!("--tls-cert-file and --tls-private-key-file must be given together");
        }
        // Checked here, before anything connects, rather than when the
        // port starts after the informers.
        for (flag, file) in [
            ("--tls-cert-file", &s.cert_file),
            ("--tls-private-key-file", &s.key_file),
        ] {
            if let Some(f) = file {
                std::fs::File::open(f)
                    .with_context(|| format!("{flag} {}: cannot be read", f.display()))?;
            }
        }
        if let Some(p) = &args.authorization_always_allow_paths {
            s.always_allow_paths = p.iter().filter(|p| !p.is_empty()).cloned().collect();
            // A request path always starts with `/`: any other entry would
            // never match, leaving the path it meant behind authentication.
            if let Some(bad) = s.always_allow_paths.iter().find(|p| !p.starts_with('/')) {
                anyhow::bail!(
                    "--authorization-always-allow-paths: {bad:?} is not a path such as /healthz (paths start with /)"
                );
            }
        }
        o.serving = strata_kube::Serving::Secure(s);
    }
    o.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(o)
}

/// Runs until SIGTERM or SIGINT, with `plugins` added to the in-tree ones.
pub(crate) fn run(args: RunArgs, plugins: &Registry) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let cfg = SchedulerConfig::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let opts = options(&args, &cfg)?;
    let scaler = ScalerConfig::from_value(cfg.scaler.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let plugins = &crate::with_remote_plugins(plugins, &text);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("strata-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let client = strata_kube::make_client(&opts).await?;
        // Custom resources feed the stores plugins read; APIs the cluster
        // does not serve are skipped (one info log each):
        // - PodGroups (Strata's and the coscheduling API) → PodGroup plugin;
        // - DRA objects (resource.k8s.io/v1 DeviceClasses, ResourceSlices,
        //   ResourceClaims, ResourceClaimTemplates) → DynamicResources.
        let stores = strata_plugins::pod_group::Stores::default();
        // The group scaler (`scaler:`, off by default): a leader-only task
        // asking this engine's PodGroup what-if.
        let mut tasks: Vec<Arc<dyn LeaderTask>> = Vec::new();
        if scaler.enabled {
            let c = ScalerController::new(scaler, stores.pod_groups.clone(), &opts.leader_election.identity)
                .context("starting the group scaler")?;
            tasks.push(Arc::new(c));
        }
        let adapter = Adapter::start_with_tasks(cfg, opts, client, &stores, plugins, tasks).await?;
        tracing::info!(identity = adapter.identity(), http = ?adapter.http_addr(), "strata scheduler started");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let reason = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = tokio::signal::ctrl_c() => break "SIGINT",
                _ = adapter.wait_lost_leadership() => {
                    // As kube-scheduler: exit, so a restart starts clean;
                    // binds queued in the lost term fail at the port.
                    tracing::error!("lost the leader Lease; exiting");
                    let _ = adapter.shutdown().await;
                    anyhow::bail!("lost the leader Lease; exiting as kube-scheduler does");
                }
                _ = tick.tick() => {
                    if adapter.engine_stopped() {
                        anyhow::bail!("the scheduling engine stopped unexpectedly");
                    }
                }
            }
        };
        tracing::info!(signal = reason, "shutting down");
        let summary = adapter.shutdown().await;
        if let Some(s) = summary
            && s.abandoned_binds > 0
        {
            tracing::warn!(abandoned = s.abandoned_binds, "binds still in flight at shutdown were abandoned");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let cfg = SchedulerConfig::from_yaml("leaderElection: {leaderElect: true, resourceName: from-file}\nclientConnection: {qps: 10}\n").unwrap();
        let t = T::parse_from([
            "x",
            "--config",
            "c.yaml",
            "--leader-elect",
            "false",
            "--kube-api-qps",
            "300",
            "--leader-elect-lease-duration",
            "30s",
            "--http-address",
            "127.0.0.1:9999",
        ]);
        let o = options(&t.run, &cfg).unwrap();
        assert!(!o.leader_election.enabled);
        assert_eq!(o.qps, 300.0);
        assert_eq!(o.leader_election.lease_name, "from-file");
        assert_eq!(o.leader_election.lease_duration, Duration::from_secs(30));
        assert_eq!(o.http_address, Some("127.0.0.1:9999".parse().unwrap()));
        let bad = T::parse_from([
            "x",
            "--config",
            "c.yaml",
            "--leader-elect-retry-period",
            "soon",
        ]);
        assert!(
            options(&bad.run, &cfg)
                .unwrap_err()
                .to_string()
                .contains("--leader-elect-retry-period")
        );
    }

    #[test]
    fn serving_flags_are_checked_before_connecting() {
        let cfg = SchedulerConfig::default();
        for (flags, want) in [
            (
                &["--authorization-always-allow-paths", "/healthz,metrics"][..],
                "--authorization-always-allow-paths: \"metrics\"",
            ),
            (
                &[
                    "--tls-cert-file",
                    "/nonexistent/cert.pem",
                    "--tls-private-key-file",
                    "/nonexistent/key.pem",
                ][..],
                "--tls-cert-file /nonexistent/cert.pem: cannot be read",
            ),
            (
                &["--tls-private-key-file", "/nonexistent/key.pem"][..],
                "must be given together",
            ),
        ] {
            let t = T::parse_from(["x", "--config", "c.yaml"].iter().chain(flags));
            let e = format!("{:#}", options(&t.run, &cfg).unwrap_err());
            assert!(e.contains(want), "{flags:?}: {e}");
        }
        let t = T::parse_from([
            "x",
            "--config",
            "c.yaml",
            "--authorization-always-allow-paths",
            "/healthz,/metrics",
        ]);
        options(&t.run, &cfg).unwrap();
    }
}
