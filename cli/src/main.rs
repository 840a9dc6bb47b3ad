//! `strata`: the command-line face of Strata.
//!
//! - `strata simulate [SCENARIO]` runs a scenario (a file, or a built-in
//!   name; the built-in `demo` when none is given) against the real engine in
//!   virtual time and prints a report, optionally as JSON too.
//! - `strata kwok SCENARIO` runs a scenario against a real API server with
//!   kwok nodes, or (`--compare`) Strata and kube-scheduler side by side.
//! - `strata check-config FILE` validates a scheduler configuration against
//!   the in-tree plugins and prints the resolved profiles.
//!
//! This binary only parses arguments, wires libraries together and prints;
//! everything it shows is computed by `strata-simulator` and
//! `strata-scheduler`. Errors are reported with the file, line and field they
//! concern and a non-zero exit code.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use strata_scheduler::config::Point;
use strata_simulator::config_check::{describe_config_error, validate_config};
use strata_simulator::scenario::BUILTIN;
use strata_simulator::{RunOptions, Scenario, Simulation};

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
    /// Pod list: default, gpushare40, multigpu50 or cpu250.
    #[arg(long, default_value = "default")]
    workload: String,
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
    /// Also measure how groups were placed (locality, fragmentation,
    /// partly bound groups), and run the same pods again pod by pod
    /// (PodGroup disabled, as kube-scheduler would) to compare.
    #[arg(long)]
    groups: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Simulate(args) => simulate(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Run(args) => run::run(*args),
        Command::ReplayOpenb(args) => replay_openb(args),
        Command::Kwok(args) => kwok::kwok(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if args.list {
        for (name, text) in BUILTIN {
            let sc = Scenario::parse(text, name)?;
            println!(
                "{name:<10} {:>6} nodes {:>7} pods",
                sc.node_count(),
                sc.pod_count()
            );
        }
        return Ok(());
    }
    let name = args.scenario.as_deref().unwrap_or("demo");
    let mut scenario = Scenario::load(name)?;
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
    };
    if args.groups {
        let cmp = strata_simulator::groups::compare(scenario, &opts, "nvidia.com/gpu", true)?;
        print!("{}", cmp.group_aware.0.to_table());
        print!("{}", cmp.to_table());
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
    print!("{}", report.to_table());
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

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (cfg, profiles) = validate_config(&text)
        .map_err(|e| anyhow::anyhow!(describe_config_error(&file.display().to_string(), &e)))?;
    // What `strata run` checks besides: leaderElection, clientConnection,
    // healthzBindAddress / metricsBindAddress, by the adapter's own code.
    strata_kube::AdapterOptions::from_config(&cfg)
        .map_err(|e| anyhow::anyhow!("{}: field `{}`: {}", file.display(), e.field, e.message))?;
    println!("{}: valid, {} profile(s)", file.display(), profiles.len());
    println!(
        "  parallelism {}, backoff {}s..{}s, max unschedulable stay {}s, bind concurrency {}, assumed-pod TTL {}s",
        cfg.parallelism,
        cfg.pod_initial_backoff_seconds,
        cfg.pod_max_backoff_seconds,
        cfg.pod_max_in_unschedulable_pods_seconds,
        cfg.bind_concurrency,
        cfg.assumed_pod_ttl_seconds,
    );
    for p in &profiles {
        println!();
        println!(
            "profile {} (percentageOfNodesToScore {})",
            p.scheduler_name, p.percentage_of_nodes_to_score
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
            println!("  {:<11} {}", point.key(), names.join(", "));
        }
    }
    Ok(())
}

fn replay_openb(args: ReplayOpenbArgs) -> anyhow::Result<()> {
    use strata_simulator::openb::{OpenbOptions, ReplayPolicy, run_openb};
    let mut opts = OpenbOptions::new(&args.data);
    opts.workload = args.workload;
    opts.seed = args.seed;
    opts.tune_ratio = args.ratio;
    opts.node_stride = args.node_stride.max(1);
    opts.policies = args
        .policies
        .split(',')
        .map(|p| {
            ReplayPolicy::parse(p).ok_or_else(|| {
                anyhow::anyhow!("--policies: unknown policy {p:?} (fgd, bestfit, random)")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let report = run_openb(&opts)?;
    print!("{}", report.to_table());
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

#[cfg(test)]
mod tests {
    use super::*;

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
