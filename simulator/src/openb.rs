//! Replay of the Alibaba GPU-sharing trace (`openb`, cluster-trace-gpu-v2023)
//! through the real engine, the way the FGD paper (Weng et al., USENIX
//! ATC'23) measures fragmentation: how much of the cluster's GPU capacity
//! gets allocated before, and after, pods start failing.
//!
//! Method (the paper's artifact, `-tune 1.3` with a seed): nodes come from
//! the node CSV; pods are drawn from the pod CSV at random with replacement
//! (seeded) until the GPU demand drawn reaches `tune_ratio` (1.3) times the
//! cluster's GPU capacity. Pods arrive one at a time in that order and
//! never leave; a pod that fits nowhere fails once and is dropped (deleted,
//! not retried). The figure is the share of GPU capacity allocated, read
//! when the first pod fails, when the arrived demand reaches 100% of
//! capacity, and at the end (130%).
//!
//! Mapping: a node gets allocatable cpu and memory from the CSV,
//! `nvidia.com/gpu` (100 per GPU, so the count never limits sharing) and a
//! `strata.io/devices` annotation with its GPUs (model, 100 shares each,
//! memory counted in percent). A pod asks for cpu and memory; a whole-GPU
//! pod for `nvidia.com/gpu: n` with `nvidia.com/gpucores: 100` (exclusive);
//! a sharing pod (`gpu_milli < 1000`) for one GPU with `gpucores` and
//! `gpumem-percentage` both `gpu_milli / 10`; `gpu_spec` becomes HAMi's
//! `nvidia.com/use-gputype`.
//!
//! Every policy runs in the same process on the same pod sequence, with the
//! same profile except the `Devices` plugin's `nodePolicy`/`devicePolicy`:
//! `Fragmentation` (ours), `BestFit` (least cpu and GPU left after
//! placement, best-fit device) and `Random` (no score: the engine picks a
//! feasible node uniformly at random; random device). No other plugin
//! scores, so the comparison is the policies' alone.

use crate::cluster::SimCluster;
use k8s_openapi::api::core::v1 as corev1;
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::{CycleResult, Scheduler};
use strata_scheduler::model::PodInfo;
use strata_scheduler::rng::SplitMix64;

/// The policies compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ReplayPolicy {
    /// Strata's fragmentation-aware policy (FGD-style).
    Fragmentation,
    /// Best-fit.
    BestFit,
    /// Random node, random device.
    Random,
}

impl ReplayPolicy {
    /// Parses `fgd`/`fragmentation`, `bestfit`, `random`.
    pub fn parse(s: &str) -> Option<ReplayPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fgd" | "fragmentation" => Some(ReplayPolicy::Fragmentation),
            "bestfit" | "best-fit" => Some(ReplayPolicy::BestFit),
            "random" => Some(ReplayPolicy::Random),
            _ => None,
        }
    }

    fn devices_args(self) -> serde_json::Value {
        match self {
            ReplayPolicy::Fragmentation => {
                json!({"nodePolicy": "Fragmentation", "devicePolicy": "Fragmentation", "scoreAllPods": true})
            }
            ReplayPolicy::BestFit => {
                json!({"nodePolicy": "BestFit", "devicePolicy": "Binpack", "scoreAllPods": true})
            }
            ReplayPolicy::Random => json!({"nodePolicy": "None", "devicePolicy": "Random"}),
        }
    }

    /// The paper's column for this policy.
    fn paper_name(self) -> &'static str {
        match self {
            ReplayPolicy::Fragmentation => "FGD",
            ReplayPolicy::BestFit => "BestFit",
            ReplayPolicy::Random => "Random",
        }
    }
}

/// Published means over 10 seeds (share of GPU capacity allocated at 100% /
/// 130% arrived demand), from the data README (the paper's artifact).
pub const PUBLISHED: &[(&str, &str, f64, f64)] = &[
    ("default", "Random", 86.30, 87.47),
    ("default", "BestFit", 92.86, 93.08),
    ("default", "FGD", 95.23, 95.39),
    ("gpushare40", "Random", 84.86, 86.00),
    ("gpushare40", "BestFit", 91.44, 91.69),
    ("gpushare40", "FGD", 93.96, 94.15),
    ("multigpu50", "Random", 81.28, 90.27),
    ("multigpu50", "BestFit", 95.62, 95.74),
    ("multigpu50", "FGD", 97.09, 97.18),
    ("cpu250", "Random", 80.00, 80.42),
    ("cpu250", "BestFit", 91.21, 91.45),
    ("cpu250", "FGD", 93.20, 93.41),
];

/// What to replay.
#[derive(Clone, Debug)]
pub struct OpenbOptions {
    /// The directory holding the CSVs.
    pub dir: PathBuf,
    /// Pod list variant: `default`, `gpushare40`, `multigpu50`, `cpu250`.
    pub workload: String,
    /// Seed for drawing pods (and the engine's tie-breaking).
    pub seed: u64,
    /// Draw pods until their GPU demand reaches this times the capacity.
    pub tune_ratio: f64,
    /// Policies, run in this order on the same pods.
    pub policies: Vec<ReplayPolicy>,
    /// Keep every n-th node only (1: all), to replay a small sample.
    pub node_stride: usize,
    /// Threads for filtering and scoring.
    pub parallelism: usize,
    /// Give the fragmentation-aware policy the trace's workload mix (as the
    /// paper does) instead of letting it learn the mix from the pods seen.
    pub trace_mix: bool,
    /// Plugins added to the in-tree ones (a vendor's); the policies'
    /// configurations are the replay's own.
    pub plugins: strata_scheduler::framework::Registry,
    /// Generate the pods with these shares from the `workload` list's
    /// distributions instead of drawing the list itself.
    pub mix: Option<crate::openb_mix::MixSpec>,
}

impl OpenbOptions {
    /// The paper's setup on `dir`: the default workload, 130%, all nodes,
    /// the three policies.
    pub fn new(dir: impl Into<PathBuf>) -> OpenbOptions {
        OpenbOptions {
            dir: dir.into(),
            workload: "default".into(),
            seed: 42,
            tune_ratio: 1.3,
            policies: vec![
                ReplayPolicy::Fragmentation,
                ReplayPolicy::BestFit,
                ReplayPolicy::Random,
            ],
            node_stride: 1,
            parallelism: 1,
            trace_mix: false,
            plugins: Default::default(),
            mix: None,
        }
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum OpenbError {
    /// A CSV could not be read.
    #[error("{file}: {error}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        error: std::io::Error,
    },
    /// A CSV row is malformed.
    #[error("{file}:{line}: {message}")]
    Row {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The engine could not be built.
    #[error("{0}")]
    Engine(String),
}

/// One node row.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    /// Serial name.
    pub name: String,
    /// Cpu, millicores.
    pub cpu_milli: i64,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// GPUs.
    pub gpus: u32,
    /// GPU model.
    pub model: String,
}

/// One pod row.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRow {
    /// Name.
    pub name: String,
    /// Cpu, millicores.
    pub cpu_milli: i64,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// GPUs.
    pub num_gpu: u32,
    /// Share of each GPU, 1000 = whole.
    pub gpu_milli: u32,
    /// Allowed GPU models (empty: any).
    pub gpu_spec: Vec<String>,
}

impl PodRow {
    /// GPU demand in milli-GPUs.
    pub fn demand_milli(&self) -> u64 {
        self.num_gpu as u64 * self.gpu_milli as u64
    }
}

/// A CSV: its header, and each row with its 1-based line number.
type Csv = (Vec<String>, Vec<(usize, Vec<String>)>);

fn read_csv(path: &Path) -> Result<Csv, OpenbError> {
    let text = std::fs::read_to_string(path).map_err(|error| OpenbError::Read {
        file: path.display().to_string(),
        error,
    })?;
    let mut lines = text.lines().enumerate();
    let header: Vec<String> = lines
        .next()
        .map(|(_, l)| l.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let rows = lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.split(',').map(|s| s.trim().to_owned()).collect()))
        .collect();
    Ok((header, rows))
}

fn col(file: &Path, header: &[String], name: &str) -> Result<usize, OpenbError> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| OpenbError::Row {
            file: file.display().to_string(),
            line: 1,
            message: format!("no column {name:?}"),
        })
}

fn num<T: std::str::FromStr>(
    file: &Path,
    line: usize,
    row: &[String],
    i: usize,
    what: &str,
) -> Result<T, OpenbError> {
    let v = row.get(i).map(String::as_str).unwrap_or("");
    v.parse().map_err(|_| OpenbError::Row {
        file: file.display().to_string(),
        line,
        message: format!("{what} {v:?} is not a number"),
    })
}

/// Reads the node list.
pub fn read_nodes(path: &Path) -> Result<Vec<NodeRow>, OpenbError> {
    let (h, rows) = read_csv(path)?;
    let (sn, cpu, mem, gpu, model) = (
        col(path, &h, "sn")?,
        col(path, &h, "cpu_milli")?,
        col(path, &h, "memory_mib")?,
        col(path, &h, "gpu")?,
        col(path, &h, "model")?,
    );
    rows.iter()
        .map(|(line, r)| {
            Ok(NodeRow {
                name: r.get(sn).cloned().unwrap_or_default(),
                cpu_milli: num(path, *line, r, cpu, "cpu_milli")?,
                memory_mib: num(path, *line, r, mem, "memory_mib")?,
                gpus: num(path, *line, r, gpu, "gpu")?,
                model: r.get(model).cloned().unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads a pod list.
pub fn read_pods(path: &Path) -> Result<Vec<PodRow>, OpenbError> {
    let (h, rows) = read_csv(path)?;
    let (name, cpu, mem, ng, gm) = (
        col(path, &h, "name")?,
        col(path, &h, "cpu_milli")?,
        col(path, &h, "memory_mib")?,
        col(path, &h, "num_gpu")?,
        col(path, &h, "gpu_milli")?,
    );
    let spec = h.iter().position(|c| c == "gpu_spec");
    rows.iter()
        .map(|(line, r)| {
            let p = PodRow {
                name: r.get(name).cloned().unwrap_or_default(),
                cpu_milli: num(path, *line, r, cpu, "cpu_milli")?,
                memory_mib: num(path, *line, r, mem, "memory_mib")?,
                num_gpu: num(path, *line, r, ng, "num_gpu")?,
                gpu_milli: num(path, *line, r, gm, "gpu_milli")?,
                gpu_spec: spec
                    .and_then(|i| r.get(i))
                    .map(|s| {
                        s.split('|')
                            .filter(|x| !x.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            if p.gpu_milli > 1000 || (p.gpu_milli < 1000 && p.num_gpu > 1) {
                return Err(OpenbError::Row {
                    file: path.display().to_string(),
                    line: *line,
                    message: format!(
                        "gpu_milli {} with num_gpu {}: a share is of one GPU",
                        p.gpu_milli, p.num_gpu
                    ),
                });
            }
            Ok(p)
        })
        .collect()
}

/// Draws pods (indexes into `pods`) until their GPU demand reaches
/// `ratio × capacity_gpus`.
pub fn draw(pods: &[PodRow], capacity_gpus: u64, ratio: f64, seed: u64) -> Vec<usize> {
    let target = (capacity_gpus as f64 * 1000.0 * ratio).ceil() as u64;
    let mut rng = SplitMix64::from_state(seed);
    let mut out = Vec::new();
    let mut demand = 0u64;
    if pods.iter().all(|p| p.demand_milli() == 0) {
        return out;
    }
    while demand < target {
        let i = (rng.below(pods.len() as u64)) as usize;
        demand += pods[i].demand_milli();
        out.push(i);
    }
    out
}

/// The API node for a row.
pub fn node_object(n: &NodeRow) -> corev1::Node {
    let mut alloc = json!({"cpu": format!("{}m", n.cpu_milli), "memory": format!("{}Mi", n.memory_mib), "pods": "1000"});
    let mut annotations = json!({});
    if n.gpus > 0 {
        alloc["nvidia.com/gpu"] = json!((n.gpus * 100).to_string());
        annotations["strata.io/devices"] = json!(
            json!([{"kind": "nvidia.com/gpu", "id": format!("{}-gpu", n.name), "count": n.gpus,
                    "model": n.model, "shares": 100}])
            .to_string()
        );
    }
    serde_json::from_value(json!({
        "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name, "openb.alibaba.com/gpu-model": n.model},
                     "annotations": annotations},
        "spec": {},
        "status": {"allocatable": alloc.clone(), "capacity": alloc}
    }))
    .unwrap_or_default()
}

/// The compiled pod for a row, `k`-th of the sequence.
pub fn pod_object(p: &PodRow, k: usize) -> Result<PodInfo, String> {
    let mut limits = json!({});
    if p.num_gpu > 0 {
        limits["nvidia.com/gpu"] = json!(p.num_gpu.to_string());
        if p.gpu_milli >= 1000 {
            limits["nvidia.com/gpucores"] = json!("100");
        } else {
            let pct = p.gpu_milli.div_ceil(10).max(1);
            limits["nvidia.com/gpucores"] = json!(pct.to_string());
            limits["nvidia.com/gpumem-percentage"] = json!(pct.to_string());
        }
    }
    let mut annotations = json!({});
    if !p.gpu_spec.is_empty() {
        annotations["nvidia.com/use-gputype"] = json!(p.gpu_spec.join(","));
    }
    let name = format!("{}-{k}", p.name);
    let pod: corev1::Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "openb", "uid": format!("openb-{k}"), "annotations": annotations},
        "spec": {"schedulerName": "default-scheduler", "containers": [{"name": "main", "image": "trace:1",
            "resources": {"requests": {"cpu": format!("{}m", p.cpu_milli), "memory": format!("{}Mi", p.memory_mib)},
                          "limits": limits}}]}
    }))
    .map_err(|e| e.to_string())?;
    PodInfo::compile(&pod).map_err(|e| e.to_string())
}

/// The scheduler configuration for `policy`: only the filters the trace
/// needs, and `Devices` as the only score.
pub fn config(
    policy: ReplayPolicy,
    seed: u64,
    parallelism: usize,
    mix: Option<&serde_json::Value>,
) -> String {
    let mut args = policy.devices_args();
    if let (ReplayPolicy::Fragmentation, Some(m)) = (policy, mix) {
        args["workload"] = m.clone();
    }
    format!(
        r#"
parallelism: {parallelism}
seed: {seed}
percentageOfNodesToScore: 100
profiles:
  - schedulerName: default-scheduler
    plugins:
      multiPoint:
        disabled: [{{name: "*"}}]
        enabled:
          - {{name: PrioritySort}}
          - {{name: NodeResourcesFit}}
          - {{name: Devices, weight: 1}}
          - {{name: DefaultBinder}}
      score:
        disabled: [{{name: NodeResourcesFit}}]
    pluginConfig:
      - name: NodeResourcesFit
        args: {{ignoredResources: [nvidia.com/gpumem, nvidia.com/gpumem-percentage, nvidia.com/gpucores]}}
      - name: Devices
        args: {args}
"#
    )
}

/// The trace's workload mix as `DevicesArgs.workload`: one class per GPU
/// ask (whole GPUs, or a share), weighted by how many pods ask it, with the
/// mean cpu and memory of those pods.
pub fn trace_mix(rows: &[PodRow]) -> serde_json::Value {
    let mut classes: std::collections::BTreeMap<(u32, u32), (u64, i64, i64)> = Default::default();
    for r in rows.iter().filter(|r| r.num_gpu > 0) {
        let e = classes.entry((r.num_gpu, r.gpu_milli)).or_default();
        e.0 += 1;
        e.1 += r.cpu_milli;
        e.2 += r.memory_mib;
    }
    serde_json::Value::Array(
        classes
            .into_iter()
            .map(|((n, milli), (count, cpu, mem))| {
                let mut v = json!({"weight": count as f64, "cpu": format!("{}m", cpu / count as i64),
                                   "memory": format!("{}Mi", mem / count as i64)});
                if milli >= 1000 {
                    v["devices"] = json!(n);
                } else {
                    v["sharePercent"] = json!(milli.div_ceil(10).max(1));
                }
                v
            })
            .collect(),
    )
}

/// A moment of the replay.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Point {
    /// Position of the pod in the sequence (0-based).
    pub pod: usize,
    /// GPU demand arrived so far, percent of capacity.
    pub arrived_percent: f64,
    /// GPU capacity allocated, percent.
    pub allocated_percent: f64,
}

/// One policy's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyOutcome {
    /// The policy.
    pub policy: ReplayPolicy,
    /// Pods that arrived.
    pub pods: usize,
    /// Pods bound.
    pub scheduled: usize,
    /// Pods that fitted nowhere.
    pub failed: usize,
    /// Of those, pods asking for GPUs.
    pub failed_gpu_pods: usize,
    /// When the first pod failed.
    pub first_failure: Option<Point>,
    /// What that pod asked for, and the scheduler's message.
    pub first_failure_detail: Option<String>,
    /// Allocation when arrived demand reached 100%.
    pub at_100: Option<Point>,
    /// Allocation at the end.
    pub at_end: Point,
    /// Allocation each time arrived demand crossed another whole percent.
    pub curve: Vec<Point>,
    /// The paper's means for this policy and workload (100% and 130%).
    pub published: Option<(f64, f64)>,
    /// Wall time of the run.
    pub seconds: f64,
    /// Scheduling cycles per second.
    pub pods_per_second: f64,
    /// Bind calls refused because the pod was already bound (always 0).
    pub double_binds: u64,
    /// Cache inconsistency found at the end, if any.
    pub cache_inconsistency: Option<String>,
}

/// The whole replay.
#[derive(Clone, Debug, Serialize)]
pub struct OpenbReport {
    /// Workload variant.
    pub workload: String,
    /// Nodes.
    pub nodes: usize,
    /// GPUs.
    pub gpus: u64,
    /// Pods drawn.
    pub pods: usize,
    /// Seed.
    pub seed: u64,
    /// Demand drawn, times the capacity.
    pub tune_ratio: f64,
    /// The shares of the pods drawn (sharing, multi-GPU, pinned, CPU-only).
    pub measured: Option<crate::openb_mix::MixSpec>,
    /// Per policy.
    pub results: Vec<PolicyOutcome>,
}

impl OpenbReport {
    /// A table for the terminal.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "openb replay: workload {}, {} nodes ({} GPUs), {} pods drawn to {:.0}% of GPU capacity, seed {}",
            self.workload,
            self.nodes,
            self.gpus,
            self.pods,
            self.tune_ratio * 100.0,
            self.seed
        );
        let _ = writeln!(
            s,
            "{:<14} {:>26} {:>12} {:>12} {:>16} {:>8} {:>9}",
            "policy",
            "first failure (pod, arr%, alloc%)",
            "alloc@100%",
            "alloc@end",
            "paper @100/@130",
            "failed",
            "pods/s"
        );
        for r in &self.results {
            if let Some(d) = &r.first_failure_detail {
                let _ = writeln!(s, "  {:?} first failure: {d}", r.policy);
            }
        }
        for r in &self.results {
            let ff = r
                .first_failure
                .as_ref()
                .map(|p| {
                    format!(
                        "#{} {:.1}% {:.2}%",
                        p.pod, p.arrived_percent, p.allocated_percent
                    )
                })
                .unwrap_or_else(|| "none".into());
            let a100 = r
                .at_100
                .as_ref()
                .map(|p| format!("{:.2}%", p.allocated_percent))
                .unwrap_or_else(|| "-".into());
            let paper = r
                .published
                .map(|(a, b)| format!("{a:.2}/{b:.2}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "{:<14} {:>33} {:>12} {:>12} {:>16} {:>8} {:>9.0}",
                format!("{:?}", r.policy),
                ff,
                a100,
                format!("{:.2}%", r.at_end.allocated_percent),
                paper,
                r.failed,
                r.pods_per_second
            );
        }
        s
    }
}

/// Runs the replay.
pub fn run_openb(opts: &OpenbOptions) -> Result<OpenbReport, OpenbError> {
    let node_file = opts.dir.join("openb_node_list_all_node.csv");
    let pod_file = opts
        .dir
        .join(format!("openb_pod_list_{}.csv", opts.workload));
    let all_nodes = read_nodes(&node_file)?;
    let nodes: Vec<NodeRow> = all_nodes
        .into_iter()
        .step_by(opts.node_stride.max(1))
        .collect();
    let mut pods = read_pods(&pod_file)?;
    let gpus: u64 = nodes.iter().map(|n| n.gpus as u64).sum();
    let seq = match &opts.mix {
        Some(spec) => {
            pods =
                crate::openb_mix::generate(&pods, &nodes, spec, gpus, opts.tune_ratio, opts.seed)?;
            (0..pods.len()).collect()
        }
        None => draw(&pods, gpus, opts.tune_ratio, opts.seed),
    };
    let drawn: Vec<PodRow> = seq.iter().map(|&i| pods[i].clone()).collect();
    let measured = Some(crate::openb_mix::measure(&drawn));
    let compiled: Vec<Arc<PodInfo>> = seq
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            pod_object(&pods[i], k)
                .map(Arc::new)
                .map_err(|message| OpenbError::Row {
                    file: pod_file.display().to_string(),
                    line: i + 2,
                    message,
                })
        })
        .collect::<Result<_, _>>()?;
    let node_objects: Vec<Arc<corev1::Node>> =
        nodes.iter().map(|n| Arc::new(node_object(n))).collect();
    let mut results = Vec::new();
    for &policy in &opts.policies {
        let r = run_policy(opts, policy, gpus, &node_objects, &compiled, &seq, &pods)?;
        results.push(r);
    }
    Ok(OpenbReport {
        workload: match &opts.mix {
            Some(m) => format!("mix {m}"),
            None => opts.workload.clone(),
        },
        nodes: nodes.len(),
        gpus,
        pods: seq.len(),
        seed: opts.seed,
        tune_ratio: opts.tune_ratio,
        measured,
        results,
    })
}

fn run_policy(
    opts: &OpenbOptions,
    policy: ReplayPolicy,
    gpus: u64,
    nodes: &[Arc<corev1::Node>],
    compiled: &[Arc<PodInfo>],
    seq: &[usize],
    rows: &[PodRow],
) -> Result<PolicyOutcome, OpenbError> {
    let mix = opts.trace_mix.then(|| trace_mix(rows));
    let cfg = SchedulerConfig::from_yaml(&config(
        policy,
        opts.seed,
        opts.parallelism.max(1),
        mix.as_ref(),
    ))
    .map_err(|e| OpenbError::Engine(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("strata-openb-bind")
        .enable_all()
        .build()
        .map_err(|e| OpenbError::Engine(format!("cannot start the binding runtime: {e}")))?;
    let cluster = Arc::new(SimCluster::new());
    let clock = Arc::new(ManualClock::default());
    let mut registry = strata_plugins::registry();
    registry.extend(&opts.plugins);
    let mut sched = Scheduler::new(
        cfg,
        &registry,
        &strata_plugins::default_plugins(),
        cluster.clone(),
        clock,
        rt.handle().clone(),
    )
    .map_err(|e| OpenbError::Engine(e.to_string()))?;
    for n in nodes {
        sched.handle_update(ClusterUpdate::NodeUpserted(n.clone()));
    }
    let cap = (gpus * 1000).max(1) as f64;
    let pct = |milli: u64| milli as f64 * 100.0 / cap;
    let (mut arrived, mut allocated) = (0u64, 0u64);
    let (mut scheduled, mut failed, mut failed_gpu) = (0usize, 0usize, 0usize);
    let mut first_failure = None;
    let mut first_failure_detail = None;
    let mut at_100 = None;
    let mut curve = Vec::new();
    let mut next_percent = 1u64;
    let start = Instant::now();
    for (k, pod) in compiled.iter().enumerate() {
        let row = &rows[seq[k]];
        arrived += row.demand_milli();
        cluster.create_pod(pod.clone());
        sched.handle_update(ClusterUpdate::PodUpserted(pod.clone()));
        let mut outcome = None;
        while let Some(o) = sched.schedule_one() {
            if o.pod.uid == pod.uid {
                outcome = Some(o.result);
            }
        }
        while sched.in_flight() > 0 {
            sched.wait_for_completion(Duration::from_millis(100));
        }
        for u in cluster.drain_updates() {
            sched.handle_update(u);
        }
        let bound = cluster.is_bound(&pod.uid);
        if bound {
            scheduled += 1;
            allocated += row.demand_milli();
        } else {
            failed += 1;
            if row.num_gpu > 0 {
                failed_gpu += 1;
            }
            if first_failure.is_none() {
                let msg = match &outcome {
                    Some(CycleResult::Unschedulable { message })
                    | Some(CycleResult::Failed { message }) => message.clone(),
                    _ => "not bound".into(),
                };
                first_failure_detail = Some(format!(
                    "{} GPU(s) x {} milli, cpu {}m, memory {}Mi: {msg}",
                    row.num_gpu, row.gpu_milli, row.cpu_milli, row.memory_mib
                ));
                first_failure = Some(Point {
                    pod: k,
                    arrived_percent: pct(arrived),
                    allocated_percent: pct(allocated),
                });
            }
            // Dropped, as in the paper: never retried.
            if !matches!(outcome, Some(CycleResult::Scheduled { .. })) {
                sched.handle_update(ClusterUpdate::PodDeleted {
                    uid: pod.uid.clone(),
                });
            }
        }
        if arrived * 100 >= next_percent * gpus * 1000 {
            curve.push(Point {
                pod: k,
                arrived_percent: pct(arrived),
                allocated_percent: pct(allocated),
            });
            next_percent = arrived * 100 / (gpus * 1000).max(1) + 1;
        }
        if at_100.is_none() && arrived >= gpus * 1000 {
            at_100 = Some(Point {
                pod: k,
                arrived_percent: pct(arrived),
                allocated_percent: pct(allocated),
            });
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let published = PUBLISHED
        .iter()
        .filter(|_| opts.mix.is_none())
        .find(|(w, p, _, _)| *w == opts.workload && *p == policy.paper_name())
        .map(|(_, _, a, b)| (*a, *b));
    Ok(PolicyOutcome {
        policy,
        pods: compiled.len(),
        scheduled,
        failed,
        failed_gpu_pods: failed_gpu,
        first_failure,
        first_failure_detail,
        at_100,
        at_end: Point {
            pod: compiled.len().saturating_sub(1),
            arrived_percent: pct(arrived),
            allocated_percent: pct(allocated),
        },
        curve,
        published,
        seconds,
        pods_per_second: if seconds > 0.0 {
            compiled.len() as f64 / seconds
        } else {
            0.0
        },
        double_binds: cluster.double_binds(),
        cache_inconsistency: sched.cache().check_consistency().err(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pod row of one cpu and 1 GiB with `num_gpu` GPUs of `gpu_milli`
    /// each (also the mix generator's tests' rows).
    pub(crate) fn row(num_gpu: u32, gpu_milli: u32) -> PodRow {
        PodRow {
            name: "p".into(),
            cpu_milli: 1000,
            memory_mib: 1024,
            num_gpu,
            gpu_milli,
            gpu_spec: vec![],
        }
    }

    #[test]
    fn draws_reach_the_target_demand_reproducibly() {
        let pods = vec![row(0, 0), row(1, 500), row(2, 1000)];
        let a = draw(&pods, 10, 1.3, 7);
        let b = draw(&pods, 10, 1.3, 7);
        assert_eq!(a, b);
        let demand: u64 = a.iter().map(|&i| pods[i].demand_milli()).sum();
        assert!(demand >= 13_000);
        let last = pods[*a.last().unwrap()].demand_milli();
        assert!(
            demand - last < 13_000,
            "stops at the first draw reaching the target"
        );
        assert!(draw(&[row(0, 0)], 10, 1.3, 7).is_empty());
    }

    #[test]
    fn rows_map_to_hami_asks() {
        let share = pod_object(
            &PodRow {
                gpu_spec: vec!["V100M16".into(), "T4".into()],
                ..row(1, 460)
            },
            3,
        )
        .unwrap();
        let raw = &share.spec.raw.containers[0];
        let lim = raw.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(lim["nvidia.com/gpucores"].0, "46");
        assert_eq!(lim["nvidia.com/gpumem-percentage"].0, "46");
        assert_eq!(share.annotations["nvidia.com/use-gputype"], "V100M16,T4");
        assert_eq!(&*share.uid, "openb-3");
        let whole = pod_object(&row(2, 1000), 0).unwrap();
        let lim = whole.spec.raw.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .clone()
            .unwrap();
        assert_eq!(lim["nvidia.com/gpu"].0, "2");
        assert_eq!(lim["nvidia.com/gpucores"].0, "100");
        let n = node_object(&NodeRow {
            name: "n".into(),
            cpu_milli: 64000,
            memory_mib: 262144,
            gpus: 2,
            model: "P100".into(),
        });
        assert!(n.metadata.annotations.unwrap()["strata.io/devices"].contains("\"count\":2"));
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("openb-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pods.csv");
        std::fs::write(
            &f,
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1000,10,2,500\n",
        )
        .unwrap();
        let e = read_pods(&f).unwrap_err().to_string();
        assert!(
            e.contains("pods.csv:2") && e.contains("a share is of one GPU"),
            "{e}"
        );
        std::fs::write(
            &f,
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,x,10,1,500\n",
        )
        .unwrap();
        let e = read_pods(&f).unwrap_err().to_string();
        assert!(e.contains("cpu_milli \"x\""), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
