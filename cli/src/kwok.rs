//! `strata kwok`: run a scenario against a real API server with kwok nodes.
//!
//! Without `--compare`, a scheduler must already be running for the pods'
//! `schedulerName` (`strata run` in another shell): the scenario's nodes
//! are created as kwok nodes, its pods at its arrival pattern, and the
//! report says how fast and how well they were bound. With `--compare`,
//! this command starts the schedulers itself, one after the other, on the
//! same nodes: Strata (this binary's `strata run`), then kube-scheduler from
//! the control plane's bin folder with the default `percentageOfNodesToScore`
//! and with 100. Everything is in `strata-kwok`; this module wires and
//! prints.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_kube::options::parse_duration;
use strata_kwok::{Contender, RunOptions, RunReport};
use strata_scheduler::framework::Registry;
use strata_simulator::Scenario;

/// Arguments of `strata kwok`.
#[derive(clap::Args, Debug)]
pub(crate) struct KwokArgs {
    /// A scenario file, or a built-in scenario name (as `strata simulate`).
    scenario: String,
    /// Kubeconfig of the cluster (kwok must manage nodes annotated
    /// kwok.x-k8s.io/node=fake).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// spec.schedulerName of the pods (without --compare).
    #[arg(long, default_value = "strata-scheduler")]
    scheduler_name: String,
    /// Run only the workload with this name.
    #[arg(long, value_name = "NAME")]
    only_workload: Option<String>,
    /// Workloads created already bound (spec.nodeName set, first fit):
    /// existing load the scheduler reads but does not place. Repeat or
    /// separate with commas.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    direct: Vec<String>,
    /// API requests in flight at once while creating nodes and pods.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Give up waiting for binds after this long (e.g. 15m).
    #[arg(long, default_value = "15m")]
    timeout: String,
    /// Stop waiting once nothing was bound for this long after the last
    /// create.
    #[arg(long, default_value = "60s")]
    idle: String,
    /// Leave the nodes and namespaces in place.
    #[arg(long)]
    keep: bool,
    /// Id labelling every object of the run (default: from the clock).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// Also write the report(s) as JSON to this path.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Start the schedulers here, one after the other, on the same nodes
    /// and pods: Strata, kube-scheduler, kube-scheduler with
    /// percentageOfNodesToScore 100 (see --schedulers).
    #[arg(long)]
    compare: bool,
    /// With --compare: which, in order, comma-separated: strata,
    /// kube-scheduler, kube-scheduler-100.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "strata,kube-scheduler,kube-scheduler-100"
    )]
    schedulers: Vec<String>,
    /// With --compare: the folder holding kube-scheduler (default:
    /// $CONTROL_PLANE_BIN, which up.sh's env file sets).
    #[arg(long, value_name = "DIR")]
    control_plane_bin: Option<PathBuf>,
    /// With --compare: Strata's configuration (default: one profile
    /// strata-scheduler, the default plugins).
    #[arg(long, value_name = "FILE")]
    strata_config: Option<PathBuf>,
    /// With --compare: a YAML file holding a list of kube-scheduler
    /// `extenders:` entries (urlPrefix, filterVerb, ...), written into every
    /// generated configuration, so Strata's extender path and
    /// kube-scheduler's are measured on the same extender (not into
    /// --strata-config, which says what it wants itself).
    #[arg(long, value_name = "FILE")]
    extenders: Option<PathBuf>,
    /// With --compare: where the schedulers' configurations and logs go
    /// (default: a folder under the system temp dir).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    parse_duration(v)
        .ok_or_else(|| anyhow::anyhow!("--{flag}: {v:?} is not a duration such as 60s"))
}

fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{:06x}", t & 0xff_ffff)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The contenders --compare starts, with their configuration files
/// written under `dir`.
fn contenders(args: &KwokArgs, kubeconfig: &Path, dir: &Path) -> anyhow::Result<Vec<Contender>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let kc = kubeconfig.display().to_string();
    let extenders = match &args.extenders {
        Some(f) => format!("extenders: {}\n", extenders_json(f)?),
        None => String::new(),
    };
    let bin = || -> anyhow::Result<PathBuf> {
        let d = args
            .control_plane_bin
            .clone()
            .or_else(|| std::env::var_os("CONTROL_PLANE_BIN").map(PathBuf::from))
            .context("--compare needs kube-scheduler: pass --control-plane-bin DIR or set CONTROL_PLANE_BIN (source the env file up.sh writes)")?;
        let ks = d.join("kube-scheduler");
        anyhow::ensure!(ks.exists(), "{}: no such file", ks.display());
        Ok(ks)
    };
    let mut out = Vec::new();
    for s in &args.schedulers {
        match s.as_str() {
            "strata" => {
                let config = match &args.strata_config {
                    Some(c) => c.clone(),
                    None => {
                        let c = dir.join("strata.yaml");
                        std::fs::write(
                            &c,
                            format!(
                                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n{extenders}profiles:\n  - schedulerName: strata-scheduler\n"
                            ),
                        )?;
                        c
                    }
                };
                let port = free_port()?;
                out.push(Contender {
                    label: "strata".into(),
                    scheduler_name: "strata-scheduler".into(),
                    program: std::env::current_exe().context("finding this program")?,
                    args: [
                        "run",
                        "--config",
                        &config.display().to_string(),
                        "--kubeconfig",
                        &kc,
                        "--leader-elect",
                        "false",
                        "--kube-api-qps",
                        "5000",
                        "--kube-api-burst",
                        "5000",
                        "--http-address",
                        &format!("127.0.0.1:{port}"),
                        // The driver times /readyz over plain HTTP.
                        "--insecure-serving",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                    readyz: Some(([127, 0, 0, 1], port).into()),
                    log: dir.join("strata.log"),
                });
            }
            "kube-scheduler" | "kube-scheduler-100" => {
                let pct = if s == "kube-scheduler-100" {
                    "percentageOfNodesToScore: 100\n"
                } else {
                    ""
                };
                let config = dir.join(format!("{s}.yaml"));
                std::fs::write(
                    &config,
                    format!(
                        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nclientConnection:\n  kubeconfig: {kc}\n  qps: 5000\n  burst: 5000\nleaderElection:\n  leaderElect: false\n{pct}{extenders}profiles:\n  - schedulerName: default-scheduler\n"
                    ),
                )?;
                let port = free_port()?.to_string();
                out.push(Contender {
                    label: if pct.is_empty() {
                        "kube-scheduler".into()
                    } else {
                        "kube-scheduler (percentageOfNodesToScore 100)".into()
                    },
                    scheduler_name: "default-scheduler".into(),
                    program: bin()?,
                    args: [
                        "--config",
                        &config.display().to_string(),
                        "--secure-port",
                        &port,
                        "--bind-address",
                        "127.0.0.1",
                        "--authentication-kubeconfig",
                        &kc,
                        "--authorization-kubeconfig",
                        &kc,
                        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                    readyz: None,
                    log: dir.join(format!("{s}.log")),
                });
            }
            other => anyhow::bail!(
                "--schedulers: unknown scheduler {other:?} (strata, kube-scheduler, kube-scheduler-100)"
            ),
        }
    }
    Ok(out)
}

/// The `extenders:` list in `file`, as one line of JSON (which is YAML)
/// for the generated configurations; each entry must be a mapping with a
/// `urlPrefix`, and the list is checked as Strata reads it.
fn extenders_json(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--extenders: reading {}", file.display()))?;
    let list: serde_json::Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("--extenders: {} is not YAML", file.display()))?;
    let items = list.as_array().with_context(|| {
        format!(
            "--extenders: {} must hold a list of extender entries",
            file.display()
        )
    })?;
    anyhow::ensure!(
        !items.is_empty(),
        "--extenders: {} holds an empty list",
        file.display()
    );
    let json = serde_json::to_string(&list)?;
    strata_scheduler::config::SchedulerConfig::from_yaml(&format!("extenders: {json}"))
        .map_err(|e| anyhow::anyhow!("--extenders: {}: {e}", file.display()))?;
    Ok(json)
}

/// Runs `strata kwok`.
pub(crate) fn kwok(args: KwokArgs, plugins: &Registry) -> anyhow::Result<()> {
    let mut scenario = Scenario::load_with(&args.scenario, plugins)?;
    if let Some(w) = &args.only_workload {
        scenario.only_workload(w)?;
    }
    let run = args.run_id.clone().unwrap_or_else(run_id);
    let mut opts = RunOptions::new(run.clone());
    opts.scheduler_name = args.scheduler_name.clone();
    opts.concurrency = args.concurrency.max(1);
    opts.timeout = duration("timeout", &args.timeout)?;
    opts.idle = duration("idle", &args.idle)?;
    opts.keep = args.keep;
    opts.direct = args.direct.clone();
    let kubeconfig = match &args.kubeconfig {
        Some(k) => Some(
            std::fs::canonicalize(k).with_context(|| format!("--kubeconfig {}", k.display()))?,
        ),
        None => None,
    };
    let contenders = if args.compare {
        let kc = kubeconfig
            .clone()
            .context("--compare needs --kubeconfig (the schedulers it starts use it too)")?;
        let dir = args
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("strata-kwok-{run}")));
        let c = contenders(&args, &kc, &dir)?;
        eprintln!("schedulers' configurations and logs: {}", dir.display());
        c
    } else {
        Vec::new()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("strata-kwok")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let reports: Vec<RunReport> = rt.block_on(async {
        let client = strata_kube::make_client(&strata_kube::AdapterOptions {
            kubeconfig: kubeconfig.clone(),
            ..Default::default()
        })
        .await?;
        eprintln!(
            "run {run}: scenario {} ({} nodes, {} pods)",
            scenario.name,
            scenario.node_count(),
            scenario.pod_count()
        );
        anyhow::Ok(if args.compare {
            strata_kwok::compare(&client, &scenario, &opts, &contenders).await?
        } else {
            vec![strata_kwok::run::run(&client, &scenario, &opts).await?]
        })
    })?;
    for r in &reports {
        out!("{}", r.to_table());
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&reports).context("serializing the report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if reports
        .iter()
        .any(|r| r.double_binds > 0 || r.placement.violation_count > 0)
    {
        anyhow::bail!("a scheduler bound a pod twice or broke a placement rule (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod extender_tests {
    use super::extenders_json;

    fn with(text: &str) -> anyhow::Result<String> {
        let dir = std::env::temp_dir().join(format!("strata-kwok-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(format!(
            "{:x}.yaml",
            text.len() * 31 + text.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::write(&f, text).unwrap();
        let r = extenders_json(&f);
        let _ = std::fs::remove_file(&f);
        r
    }

    /// --extenders takes a list of entries Strata accepts, and refuses
    /// anything else naming the flag.
    #[test]
    fn extenders_file_is_checked() {
        let json = with(
            "- {urlPrefix: 'http://127.0.0.1:1', filterVerb: filter, nodeCacheCapable: true}\n",
        )
        .unwrap();
        assert!(
            json.starts_with('[') && json.contains("\"filterVerb\":\"filter\""),
            "{json}"
        );
        for (bad, needle) in [
            ("urlPrefix: x\n", "must hold a list"),
            ("[]\n", "empty list"),
            ("- {filterVerb: filter}\n", "urlPrefix"),
            ("- {urlPrefix: 'http://x', filterVerbb: f}\n", "filterVerbb"),
            (": : :\n", "not YAML"),
        ] {
            let err = format!("{:#}", with(bad).unwrap_err());
            assert!(
                err.contains("--extenders") && err.contains(needle),
                "{bad}: {err}"
            );
        }
        let err = format!(
            "{:#}",
            extenders_json(std::path::Path::new("/nonexistent/x.yaml")).unwrap_err()
        );
        assert!(err.contains("reading"), "{err}");
    }
}
