//! # strata-cli
//!
//! The `strata` command as a library, so a vendor's scheduler binary is
//! Strata's with their plugins added:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     strata_cli::Strata::new()
//!         .plugin("VendorHealth", |args, handle| {
//!             # let _ = (args, handle);
//!             # unimplemented!()
//!             // build the plugin from its pluginConfig args
//!         })
//!         .run()
//! }
//! ```
//!
//! Every subcommand then knows the added plugins exactly as the in-tree
//! ones: one registry, one configuration path.
//!
//! - `strata run --config FILE` schedules pods in a Kubernetes cluster
//!   until SIGTERM (informers, binder, leader election, `/healthz`,
//!   `/readyz`, `/metrics`).
//! - `strata simulate [SCENARIO]` runs a scenario (a file, or a built-in
//!   name; the built-in `demo` when none is given) against the real engine in
//!   virtual time and prints a report, optionally as JSON too.
//! - `strata check-config FILE` validates a scheduler configuration (each
//!   plugin's `pluginConfig` args by that plugin's own parser) and prints the
//!   resolved profiles.
//! - `strata replay-openb` replays the Alibaba GPU-sharing trace with the
//!   fragmentation-aware, best-fit and random policies.
//! - `strata kwok SCENARIO` runs a scenario against a real API server with
//!   kwok nodes, or (`--compare`) Strata and kube-scheduler side by side
//!   (Strata being this same program's `run`, with the same plugins).
//!
//! This crate only parses arguments, wires libraries together and prints;
//! everything it shows is computed by `strata-simulator`, `strata-kube` and
//! `strata-scheduler`. Errors are reported with the file, line and field
//! they concern and a non-zero exit code. Added plugins are enabled by the
//! configuration (`multiPoint.enabled`, or per extension point) like any
//! other; the default profile runs the in-tree set.

#![warn(missing_docs)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use strata_scheduler::config::Point;
use strata_scheduler::framework::{Handle, Plugin, PluginArgsError, Registry};
use strata_simulator::config_check::{describe_config_error, validate_config_with};
use strata_simulator::scenario::BUILTIN;
use strata_simulator::{RunOptions, Scenario, Simulation};

#[macro_use]
mod output;
mod kwok;
mod run;

/// Strata, a Kubernetes scheduler for AI clusters.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario against the real engine in virtual time and report
    /// throughput, latencies, memory and placements.
    Simulate(SimulateArgs),
    /// Validate a scheduler configuration file and print the resolved
    /// profiles.
    CheckConfig {
        /// KubeSchedulerConfiguration-shaped YAML file.
        file: PathBuf,
    },
    /// Schedule pods in a Kubernetes cluster until SIGTERM: informers,
    /// binder, leader election, /healthz, /readyz and /metrics.
    Run(Box<run::RunArgs>),
    /// Replay the Alibaba GPU-sharing trace (openb) with the
    /// fragmentation-aware, best-fit and random policies and report the GPU
    /// capacity each allocates (the FGD paper's figure).
    ReplayOpenb(ReplayOpenbArgs),
    /// Run a scenario against a real API server with kwok nodes: create
    /// its nodes and pods, follow the binds, report throughput, latency and
    /// a placement check, clean up. With --compare, start Strata and
    /// kube-scheduler in turn on the same objects.
    Kwok(Box<kwok::KwokArgs>),
}

#[derive(clap::Args, Debug)]
struct ReplayOpenbArgs {
    /// Directory holding the openb CSVs.
    #[arg(long, value_name = "DIR", default_value = "../shared/data/openb")]
    data: PathBuf,
    /// Pod list(s), comma-separated: default, gpushare40, multigpu50,
    /// cpu250 (default: default, unless --mix or --mix-sweep is given).
    #[arg(long)]
    workload: Option<String>,
    /// Also replay pods generated with these shares (percent) from the
    /// --mix-base list's distributions, e.g. share=100,cpu=13 or
    /// share=44,pinned=33,cpu=13 (keys: share, multi, pinned — of the GPU
    /// pods — and cpu, of all pods). Repeatable.
    #[arg(long = "mix", value_name = "SPEC")]
    mixes: Vec<String>,
    /// Also replay the built-in set of generated mixes (sharing 0–100%,
    /// multi-GPU, pinned to a model, CPU-heavy).
    #[arg(long)]
    mix_sweep: bool,
    /// The pod list generated mixes draw their pods from.
    #[arg(long, default_value = "default")]
    mix_base: String,
    /// Run this many seeds, from --seed on, and print mean ± std (min–max)
    /// per workload and policy.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    seeds: u64,
    /// Replays run at once (each on its own threads).
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    jobs: usize,
    /// Seed for drawing pods and breaking ties.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Draw pods until their GPU demand is this times the GPU capacity.
    #[arg(long, default_value_t = 1.3)]
    ratio: f64,
    /// Policies, comma-separated: fgd, bestfit, random.
    #[arg(long, default_value = "fgd,bestfit,random")]
    policies: String,
    /// Keep every n-th node only (a smaller, faster sample).
    #[arg(long, default_value_t = 1)]
    node_stride: usize,
    /// Also write the report as JSON to this path.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also write a self-contained HTML page to this path: GPU capacity
    /// allocated against GPU demand arrived, per policy and workload.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// A scenario file, or a built-in scenario name (see --list).
    /// Default: demo.
    scenario: Option<String>,
    /// Seed for the engine's tie-breaking (overrides the scenario's); the
    /// same seed gives the same placements.
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the report as JSON to this path.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Run only the workload with this name (to measure one template).
    #[arg(long, value_name = "NAME")]
    only_workload: Option<String>,
    /// Threads for filtering and scoring (overrides the configuration).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    parallelism: Option<usize>,
    /// Turn off the engine's reuse of per-node results across pods of one
    /// template (the baseline for measuring what it brings).
    #[arg(long)]
    no_equivalence_cache: bool,
    /// List the built-in scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Also write a self-contained HTML page to this path: the report and
    /// a map of nvidia.com/gpu in use per super-node → cabinet → server.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Also measure how groups were placed (locality, fragmentation,
    /// partly bound groups), and run the same pods again pod by pod
    /// (PodGroup disabled, as kube-scheduler would) to compare.
    #[arg(long)]
    groups: bool,
}

/// Why a `strata` command failed: a message naming the file, line, field
/// or flag concerned, with its causes (`{:#}` is not needed, `Display`
/// prints them all).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct Error(#[from] anyhow::Error);

/// The `strata` command with a set of plugins besides the in-tree ones.
///
/// [`Strata::new`] is Strata's own binary; each [`Strata::plugin`] adds one
/// plugin to the registry every subcommand builds its profiles from, so
/// `run`, `simulate`, `check-config`, `replay-openb` and `kwok --compare`
/// all know it by name.
#[derive(Clone, Debug)]
pub struct Strata {
    plugins: Registry,
}

impl Default for Strata {
    fn default() -> Strata {
        Strata::new()
    }
}

impl Strata {
    /// The `strata` command with the in-tree plugins only (and the HTTP
    /// client of kube-scheduler extenders, for `extenders:`).
    pub fn new() -> Strata {
        let mut plugins = Registry::new();
        strata_extender::register(&mut plugins);
        Strata { plugins }
    }

    /// Adds a plugin: `factory` builds it from its `pluginConfig` args
    /// (`None` when the configuration gives none) and the profile's
    /// [`Handle`], or says which field of the args is wrong. A name already
    /// in the tree replaces that plugin.
    pub fn plugin(
        mut self,
        name: &str,
        factory: impl Fn(
            Option<&serde_json::Value>,
            &Handle,
        ) -> Result<Arc<dyn Plugin>, PluginArgsError>
        + Send
        + Sync
        + 'static,
    ) -> Strata {
        self.plugins.register(name, factory);
        self
    }

    /// The plugins added so far.
    pub fn plugins(&self) -> &Registry {
        &self.plugins
    }

    /// Runs the command line of this process: parses the arguments (exits
    /// with clap's message on bad ones), logs to stderr at `RUST_LOG`
    /// (default `warn`) unless a `tracing` subscriber is already set, runs the subcommand and prints its error, if any,
    /// as `error: ...`. The body of a vendor's `main`.
    pub fn run(self) -> ExitCode {
        let cli = Cli::parse();
        // A vendor's main may have installed its own subscriber: keep it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .try_init();
        match self.dispatch(cli.command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// Runs one command line given as arguments (the first is the program
    /// name), without installing a log subscriber: for tests and for
    /// programs that drive `strata` themselves. `--help` and bad arguments
    /// are returned as errors carrying clap's text.
    pub fn run_from<I, T>(&self, args: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args).map_err(anyhow::Error::from)?;
        Ok(self.dispatch(cli.command)?)
    }

    fn dispatch(&self, command: Command) -> anyhow::Result<()> {
        let plugins = &self.plugins;
        match command {
            Command::Simulate(args) => simulate(args, plugins),
            Command::CheckConfig { file } => check_config(&file, plugins),
            Command::Run(args) => run::run(*args, plugins),
            Command::ReplayOpenb(args) => replay_openb(args, plugins),
            Command::Kwok(args) => kwok::kwok(*args, plugins),
        }
    }
}

/// `plugins` with the remote plugins (`pluginConfig` args holding a
/// `remote` object, see `strata_remote`) that the configuration or
/// scenario `yaml` names and `plugins` does not hold.
pub(crate) fn with_remote_plugins(plugins: &Registry, yaml: &str) -> Registry {
    let mut all = plugins.clone();
    all.extend(&strata_remote::registry_for(yaml, plugins));
    all
}

fn simulate(args: SimulateArgs, plugins: &Registry) -> anyhow::Result<()> {
    if args.list {
        for (name, text) in BUILTIN {
            let sc = Scenario::parse(text, name)?;
            outln!(
                "{name:<10} {:>6} nodes {:>7} pods",
                sc.node_count(),
                sc.pod_count()
            );
        }
        return Ok(());
    }
    let name = args.scenario.as_deref().unwrap_or("demo");
    let plugins = &match std::fs::read_to_string(name) {
        Ok(text) => with_remote_plugins(plugins, &text),
        Err(_) => plugins.clone(),
    };
    let mut scenario = Scenario::load_with(name, plugins)?;
    for w in scenario.warnings() {
        tracing::warn!("{w}");
    }
    if let Some(w) = unused_settings_warning(&scenario) {
        tracing::warn!("{w}");
    }
    if let Some(w) = &args.only_workload {
        scenario.only_workload(w)?;
    }
    let opts = RunOptions {
        seed: args.seed,
        progress: !args.quiet,
        parallelism: args.parallelism,
        equivalence_cache: args.no_equivalence_cache.then_some(0),
        plugins: plugins.clone(),
    };
    if args.groups {
        let cmp = strata_simulator::groups::compare(scenario, &opts, "nvidia.com/gpu", true)?;
        out!("{}", cmp.group_aware.0.to_table());
        out!("{}", cmp.to_table());
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&cmp).context("serializing the report")?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    let mut sim = Simulation::new(scenario, &opts)?;
    sim.set_only_workload(args.only_workload.clone());
    let report = sim.run();
    out!("{}", report.to_table());
    if let Some(path) = &args.html {
        use strata_simulator::occupancy_html::{occupancy, occupancy_html};
        let resource = "nvidia.com/gpu";
        let occ = occupancy(sim.scheduler().snapshot(), resource);
        let html = occupancy_html(
            &format!("strata simulate {name}"),
            &report.to_table(),
            &occ,
            resource,
        );
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if report.double_binds > 0 || report.cache_inconsistency.is_some() {
        anyhow::bail!("the engine broke an invariant (see the report above)");
    }
    Ok(())
}

/// The settings of a scenario's configuration that only `strata run` reads
/// (leaderElection, clientConnection, healthzBindAddress /
/// metricsBindAddress) are not used by the simulator, but they are checked
/// as `strata check-config` does, so a bad one is not passed over without
/// a word. The configuration's other errors are the simulation's to report.
fn unused_settings_warning(scenario: &Scenario) -> Option<String> {
    let text = &scenario.config.as_ref()?.0;
    let cfg = strata_scheduler::config::SchedulerConfig::from_yaml(text).ok()?;
    let e = strata_kube::AdapterOptions::from_config(&cfg).err()?;
    Some(format!(
        "{}: field `config.{}`: {} (strata simulate does not use it, strata run would refuse it)",
        scenario.source, e.field, e.message
    ))
}

fn check_config(file: &std::path::Path, plugins: &Registry) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let plugins = &with_remote_plugins(plugins, &text);
    let (cfg, profiles) = validate_config_with(&text, plugins)
        .map_err(|e| anyhow::anyhow!(describe_config_error(&file.display().to_string(), &e)))?;
    // What `strata run` checks besides: leaderElection, clientConnection,
    // healthzBindAddress / metricsBindAddress, by the adapter's own code.
    strata_kube::AdapterOptions::from_config(&cfg)
        .map_err(|e| anyhow::anyhow!("{}: field `{}`: {}", file.display(), e.field, e.message))?;
    // And the group scaler's section, by the scaler's own code.
    let scaler = strata_scaler::controller::config::ScalerConfig::from_value(cfg.scaler.as_ref())
        .map_err(|e| {
        anyhow::anyhow!(
            "{}: field `scaler.{}`: {}",
            file.display(),
            e.field,
            e.message
        )
    })?;
    outln!("{}: valid, {} profile(s)", file.display(), profiles.len());
    if scaler.enabled {
        outln!(
            "  group scaler: on, every {:?}, Prometheus {}, models {}",
            scaler.period,
            scaler.prometheus_url,
            scaler.models.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    outln!(
        "  parallelism {}, backoff {}s..{}s, max unschedulable stay {}s, bind concurrency {}, assumed-pod TTL {}s",
        cfg.parallelism,
        cfg.pod_initial_backoff_seconds,
        cfg.pod_max_backoff_seconds,
        cfg.pod_max_in_unschedulable_pods_seconds,
        cfg.bind_concurrency,
        cfg.assumed_pod_ttl_seconds,
    );
    for p in &profiles {
        outln!();
        outln!(
            "profile {} (percentageOfNodesToScore {})",
            p.scheduler_name,
            p.percentage_of_nodes_to_score
        );
        for point in Point::ALL {
            let plugins = p.at(point);
            if plugins.is_empty() {
                continue;
            }
            let names: Vec<String> = plugins
                .iter()
                .map(|r| {
                    if point == Point::Score {
                        format!("{} ({})", r.plugin.name(), r.weight)
                    } else {
                        r.plugin.name().to_owned()
                    }
                })
                .collect();
            outln!("  {:<11} {}", point.key(), names.join(", "));
        }
    }
    for e in &cfg.extenders {
        let verbs: Vec<&str> = [
            ("filter", &e.filter_verb),
            ("prioritize", &e.prioritize_verb),
            ("bind", &e.bind_verb),
            ("preempt", &e.preempt_verb),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k)
        .collect();
        let managed: Vec<&str> = e
            .managed_resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        println!();
        println!(
            "extender {} ({}; weight {}, timeout {:?}{}{}{})",
            e.url_prefix,
            if verbs.is_empty() {
                "no verb".to_owned()
            } else {
                verbs.join(", ")
            },
            e.weight,
            e.timeout(),
            if e.ignorable { ", ignorable" } else { "" },
            if e.node_cache_capable {
                ", node names only"
            } else {
                ""
            },
            if managed.is_empty() {
                String::new()
            } else {
                format!(", only pods asking for {}", managed.join(", "))
            },
        );
    }
    Ok(())
}

fn replay_openb(args: ReplayOpenbArgs, plugins: &Registry) -> anyhow::Result<()> {
    use strata_simulator::openb::{OpenbOptions, ReplayPolicy, run_openb};
    use strata_simulator::openb_mix::{MIX_SWEEP, MixSpec};
    let mut opts = OpenbOptions::new(&args.data);
    let mut mixes = args
        .mixes
        .iter()
        .map(|m| MixSpec::parse(m).with_context(|| format!("--mix {m}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.mix_sweep {
        for m in MIX_SWEEP {
            mixes.push(MixSpec::parse(m).context("the built-in mix sweep")?);
        }
    }
    let lists: Vec<String> = match &args.workload {
        Some(w) => w.split(',').map(|s| s.trim().to_owned()).collect(),
        None if mixes.is_empty() => vec!["default".into()],
        None => vec![],
    };
    opts.workload = lists
        .first()
        .cloned()
        .unwrap_or_else(|| args.mix_base.clone());
    opts.seed = args.seed;
    opts.tune_ratio = args.ratio;
    opts.node_stride = args.node_stride.max(1);
    opts.plugins = plugins.clone();
    opts.policies = args
        .policies
        .split(',')
        .map(|p| {
            ReplayPolicy::parse(p).ok_or_else(|| {
                anyhow::anyhow!("--policies: unknown policy {p:?} (fgd, bestfit, random)")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if args.seeds > 1 || lists.len() + mixes.len() > 1 {
        return replay_sweep(&args, opts, &lists, &mixes);
    }
    opts.mix = mixes.first().copied();
    if opts.mix.is_some() {
        opts.workload = args.mix_base.clone();
    }
    let report = run_openb(&opts)?;
    out!("{}", report.to_table());
    write_openb_html(&args, &[vec![report.clone()]])?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if report
        .results
        .iter()
        .any(|r| r.double_binds > 0 || r.cache_inconsistency.is_some())
    {
        anyhow::bail!("the engine broke an invariant (see the report above)");
    }
    Ok(())
}

/// Writes `--html` if asked: one section per workload, its seeds averaged.
fn write_openb_html(
    args: &ReplayOpenbArgs,
    workloads: &[Vec<strata_simulator::openb::OpenbReport>],
) -> anyhow::Result<()> {
    let Some(path) = &args.html else {
        return Ok(());
    };
    let html = strata_simulator::openb_html::html_report("strata replay-openb", workloads);
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
}

/// Every workload × seed, `--jobs` at a time; a table of mean ± spread.
fn replay_sweep(
    args: &ReplayOpenbArgs,
    base: strata_simulator::openb::OpenbOptions,
    lists: &[String],
    mixes: &[strata_simulator::openb_mix::MixSpec],
) -> anyhow::Result<()> {
    use strata_simulator::openb::{OpenbReport, run_openb};
    use strata_simulator::openb_mix::{WorkloadSummary, summarize, sweep_table};
    let mut runs = Vec::new();
    for (w, l) in lists.iter().enumerate() {
        for s in 0..args.seeds {
            let mut o = base.clone();
            o.workload = l.clone();
            o.seed = args.seed + s;
            runs.push((w, o));
        }
    }
    for (w, m) in mixes.iter().enumerate() {
        for s in 0..args.seeds {
            let mut o = base.clone();
            o.workload = args.mix_base.clone();
            o.mix = Some(*m);
            o.seed = args.seed + s;
            runs.push((lists.len() + w, o));
        }
    }
    let total = runs.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<anyhow::Result<OpenbReport>>>> =
        std::sync::Mutex::new((0..total).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.min(total) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((_, o)) = runs.get(i) else { break };
                    let r = run_openb(o).map_err(anyhow::Error::from);
                    if let Ok(rep) = &r {
                        let figs: Vec<String> = rep
                            .results
                            .iter()
                            .map(|p| {
                                format!(
                                    "{:?} {:.2}/{:.2}",
                                    p.policy,
                                    p.at_100.as_ref().map_or(0.0, |x| x.allocated_percent),
                                    p.at_end.allocated_percent
                                )
                            })
                            .collect();
                        eprintln!(
                            "[{}/{total}] {} seed {}: {}",
                            i + 1,
                            rep.workload,
                            rep.seed,
                            figs.join(", ")
                        );
                    }
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a replay thread panicked"))?;
    let mut per_workload: Vec<Vec<OpenbReport>> = vec![Vec::new(); lists.len() + mixes.len()];
    for ((w, _), r) in runs.iter().zip(results) {
        let r = r.ok_or_else(|| anyhow::anyhow!("a replay did not finish"))??;
        if r.results
            .iter()
            .any(|p| p.double_binds > 0 || p.cache_inconsistency.is_some())
        {
            anyhow::bail!(
                "the engine broke an invariant replaying {} seed {}",
                r.workload,
                r.seed
            );
        }
        per_workload[*w].push(r);
    }
    write_openb_html(args, &per_workload)?;
    let summaries: Vec<WorkloadSummary> = per_workload
        .iter()
        .filter_map(|reps| {
            let first = reps.first()?;
            Some(summarize(&first.workload, reps))
        })
        .collect();
    outln!(
        "openb replay: {} seed(s) from {}, pods drawn to {:.0}% of GPU capacity; allocated GPU share, percent",
        args.seeds,
        args.seed,
        args.ratio * 100.0
    );
    out!("{}", sweep_table(&summaries, args.ratio));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summaries).context("serializing the summaries")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_scheduler::sdk::{CycleState, FilterPlugin, NodeInfo, PodInfo, Status, parse_args};

    /// A vendor's plugin as the tests see it: a Filter with one argument.
    struct Picky;
    impl FilterPlugin for Picky {
        fn filter(&self, _: &CycleState, _: &PodInfo, _: &NodeInfo) -> Status {
            Status::success()
        }
    }
    strata_scheduler::plugin!(Picky: "Picky" => [Filter]);

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct PickyArgs {
        level: u8,
    }

    fn picky(
        args: Option<&serde_json::Value>,
        _: &Handle,
    ) -> Result<Arc<dyn Plugin>, PluginArgsError> {
        let a: PickyArgs = parse_args(args)?;
        if a.level > 3 {
            return Err(PluginArgsError::new("level", "at most 3"));
        }
        Ok(Arc::new(Picky))
    }

    fn config_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn check_config_knows_added_plugins_and_hands_them_their_args() {
        let cfg = |level: &str| {
            format!(
                "profiles:\n- schedulerName: s\n  plugins: {{multiPoint: {{enabled: [{{name: Picky}}]}}}}\n  pluginConfig: [{{name: Picky, args: {{level: {level}}}}}]\n"
            )
        };
        let ok = config_file("ok.yaml", &cfg("2"));
        let strata = Strata::new().plugin("Picky", picky);
        strata
            .run_from(["strata", "check-config", ok.to_str().unwrap()])
            .expect("Picky is registered and its args are valid");
        // Strata's own command does not know it.
        let e = Strata::new()
            .run_from(["strata", "check-config", ok.to_str().unwrap()])
            .expect_err("an unknown plugin")
            .to_string();
        assert!(e.contains("Picky"), "{e}");
        // The args went to Picky's parser: its own check and serde's.
        let high = config_file("high.yaml", &cfg("7"));
        let e = strata
            .run_from(["strata", "check-config", high.to_str().unwrap()])
            .expect_err("level 7 is refused by the plugin")
            .to_string();
        assert!(e.contains("level") && e.contains("at most 3"), "{e}");
        let typo = config_file("typo.yaml", &cfg("2, levle: 1"));
        let e = strata
            .run_from(["strata", "check-config", typo.to_str().unwrap()])
            .expect_err("an unknown field of the args")
            .to_string();
        assert!(e.contains("levle"), "{e}");
    }

    #[test]
    fn check_config_checks_the_scaler_section() {
        let model = "{prefillTokensPerSecond: 20000, decodeTokensPerSecond: D, baseTpotSeconds: 0.025, objective: {ttftSeconds: 1, tpotSeconds: 0.1}}";
        let cfg = |d: &str| {
            format!(
                "profiles: [{{schedulerName: s}}]\nscaler: {{enabled: true, prometheus: {{url: 'http://prom:9090'}}, models: {{llama: {}}}}}\n",
                model.replace('D', d)
            )
        };
        let ok = config_file("scaler-ok.yaml", &cfg("2500"));
        Strata::new()
            .run_from(["strata", "check-config", ok.to_str().unwrap()])
            .expect("a valid scaler section");
        let bad = config_file("scaler-bad.yaml", &cfg("0"));
        let e = Strata::new()
            .run_from(["strata", "check-config", bad.to_str().unwrap()])
            .expect_err("a model with no decode capacity")
            .to_string();
        assert!(
            e.contains("field `scaler.models.llama.decodeTokensPerSecond`"),
            "{e}"
        );
    }

    #[test]
    fn simulate_runs_added_plugins_named_by_the_scenario() {
        let scenario = config_file(
            "sc.yaml",
            "name: s\nconfig:\n  profiles:\n  - schedulerName: default-scheduler\n    plugins: {multiPoint: {enabled: [{name: Picky}]}}\nnodePools: [{name: a, count: 2, allocatable: {cpu: \"4\", memory: 8Gi, pods: \"10\"}}]\nworkloads: [{name: w, count: 3, template: {spec: {containers: [{name: c, resources: {requests: {cpu: \"1\"}}}]}}}]\n",
        );
        let path = scenario.to_str().unwrap();
        Strata::new()
            .plugin("Picky", picky)
            .run_from(["strata", "simulate", "--quiet", path])
            .expect("the scenario's configuration enables Picky");
        let e = Strata::new()
            .run_from(["strata", "simulate", "--quiet", path])
            .expect_err("without the plugin the scenario is refused")
            .to_string();
        assert!(e.contains("Picky"), "{e}");
    }

    #[test]
    fn simulate_refuses_zero_parallelism_naming_the_flag() {
        let e = Cli::try_parse_from(["strata", "simulate", "--parallelism", "0"])
            .expect_err("--parallelism 0 is refused")
            .to_string();
        assert!(e.contains("--parallelism"), "{e}");
        let ok = Cli::try_parse_from(["strata", "simulate", "--parallelism", "3"]).unwrap();
        let Command::Simulate(a) = ok.command else {
            panic!("not simulate")
        };
        assert_eq!(a.parallelism, Some(3));
    }

    #[test]
    fn simulate_warns_about_settings_only_run_reads() {
        let scenario = |config: &str| {
            Scenario::parse(
                &format!(
                    "name: s\nconfig: {{{config}}}\nnodePools: [{{name: a, count: 1, allocatable: {{cpu: \"1\"}}}}]\nworkloads: []\n"
                ),
                "s.yaml",
            )
            .unwrap()
        };
        let w = unused_settings_warning(&scenario("clientConnection: {qps: -1}")).unwrap();
        assert!(
            w.starts_with("s.yaml: field `config.clientConnection.qps`"),
            "{w}"
        );
        let w = unused_settings_warning(&scenario("healthzBindAddress: nonsense")).unwrap();
        assert!(w.contains("config.healthzBindAddress"), "{w}");
        assert_eq!(unused_settings_warning(&scenario("parallelism: 2")), None);
        assert_eq!(
            unused_settings_warning(&Scenario::load("small").unwrap()),
            None
        );
    }
}
