//! The memory-pool sweep: one scenario run with borrowing off and at
//! several ratios in one process, and an audit of each run's final state
//! that uses no MemoryPool code (it reads the plans the plugin wrote on the
//! pods, the nodes and the bindings, as a node agent would).
//!
//! A workload takes part when its template carries
//! `strata.io/memory-borrow` as a share: its memory request is taken as
//! the local part at that share, so its total memory stays the same in every
//! variant and only the split changes (off: all local, no annotation).

use crate::{RunOptions, Scenario, SimError, Simulation};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use strata_plugins::memory::memory_pool::model::{
    Ask, BORROW, MAX_SHARE_BP, MemoryPoolArgs, PLAN, PlanDoc, parse_ask,
};
use strata_scheduler::resources::Quantity;
use strata_scheduler::sdk::{ResourceId, Sym};

/// Why a sweep could not run.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The scenario text is not YAML of the expected shape.
    #[error("{file}: {message}")]
    Shape {
        /// The scenario.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A variant does not parse or start.
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// One run's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepRow {
    /// Borrowed share of every borrowing pod's memory, basis points.
    pub ratio_bp: i64,
    /// Pods of the borrowing workloads.
    pub pods: usize,
    /// Of them, bound.
    pub placed: usize,
    /// Pods of every workload, bound.
    pub placed_all: usize,
    /// Memory neither requested nor lent, summed over nodes (bytes).
    pub idle_bytes: i64,
    /// Allocatable memory of all nodes (bytes).
    pub total_bytes: i64,
    /// Remote bytes held in all.
    pub remote_bytes: i64,
    /// Remote share of the borrowing pods' memory: mean and max (0..=1).
    pub remote_share_mean: f64,
    /// See `remote_share_mean`.
    pub remote_share_max: f64,
    /// Remote bytes per namespace.
    pub by_namespace: BTreeMap<String, i64>,
    /// Namespaces holding more than their cap.
    pub caps_broken: Vec<String>,
    /// Nodes whose own pods' requests plus what they lent pass their
    /// allocatable memory.
    pub lenders_short: usize,
    /// Loans from outside the borrower's super-node, or from its own node.
    pub loans_outside_pool: usize,
    /// Plans whose loans do not add up to their remote bytes.
    pub plans_inconsistent: usize,
}

/// The scenario text with every borrowing workload at `ratio_bp` (0: off).
pub fn variant_text(text: &str, file: &str, ratio_bp: i64) -> Result<String, SweepError> {
    let shape = |message: String| SweepError::Shape {
        file: file.to_owned(),
        message,
    };
    let mut doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| shape(format!("not YAML: {e}")))?;
    let mut name = doc
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("scenario")
        .to_owned();
    name.push_str(&format!("-borrow-{}", ratio_bp / 100));
    doc["name"] = Value::String(name);
    let Some(workloads) = doc.get_mut("workloads").and_then(Value::as_sequence_mut) else {
        return Err(shape("no workloads".to_owned()));
    };
    for w in workloads {
        let Some(meta) = w.get_mut("template").and_then(|t| t.get_mut("metadata")) else {
            continue;
        };
        let Some(share) = meta
            .get("annotations")
            .and_then(|a| a.get(BORROW))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let from_bp = match parse_ask(BORROW, share, MAX_SHARE_BP) {
            Ok(Ask::Share(bp)) => bp,
            _ => continue,
        };
        let Some(ann) = meta.get_mut("annotations").and_then(Value::as_mapping_mut) else {
            continue;
        };
        if ratio_bp == 0 {
            ann.remove(BORROW);
        } else {
            ann.insert(
                Value::String(BORROW.to_owned()),
                Value::String(format!("{}.{:02}%", ratio_bp / 100, ratio_bp % 100)),
            );
        }
        let containers = w
            .get_mut("template")
            .and_then(|t| t.get_mut("spec"))
            .and_then(|s| s.get_mut("containers"))
            .and_then(Value::as_sequence_mut);
        for c in containers.into_iter().flatten() {
            let Some(req) = c
                .get_mut("resources")
                .and_then(|r| r.get_mut("requests"))
                .and_then(Value::as_mapping_mut)
            else {
                continue;
            };
            let Some(mem) = req.get("memory").and_then(Value::as_str) else {
                continue;
            };
            let local = Quantity::parse(mem)
                .map_err(|e| shape(format!("memory request {mem:?}: {e}")))?
                .value() as i128;
            let total = local * 10_000 / (10_000 - from_bp as i128);
            let mib = 1i128 << 20;
            let new_local = (total * (10_000 - ratio_bp as i128) / 10_000 + mib - 1) / mib;
            req.insert(
                Value::String("memory".to_owned()),
                Value::String(format!("{new_local}Mi")),
            );
        }
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| shape(format!("cannot write YAML: {e}")))
}

/// The MemoryPool args of the scenario's first profile (defaults when it
/// has none).
fn pool_args(scenario: &Scenario) -> MemoryPoolArgs {
    let args = scenario.config.as_ref().and_then(|c| {
        let v: Value = serde_yaml_ng::from_str(&c.0).ok()?;
        let pcs = v
            .get("profiles")?
            .get(0)?
            .get("pluginConfig")?
            .as_sequence()?;
        let entry = pcs
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some("MemoryPool"))?;
        serde_json::to_value(entry.get("args")?).ok()
    });
    MemoryPoolArgs::parse(args.as_ref()).unwrap_or_default()
}

/// Audits a finished run (see the module doc).
pub fn audit(sim: &Simulation, args: &MemoryPoolArgs, ratio_bp: i64) -> SweepRow {
    let snap = sim.scheduler().snapshot();
    let cluster = sim.cluster();
    let pool_key = Sym::new(&args.pool_level);
    let mut row = SweepRow {
        ratio_bp,
        ..Default::default()
    };
    let mut lent: BTreeMap<Sym, i64> = BTreeMap::new();
    let mut shares = Vec::new();
    for (key, node) in cluster.placements() {
        let Some(pod) = cluster.pod(&key) else {
            continue;
        };
        let borrows = pod.labels.get(Sym::new(SWEEP_LABEL)).is_some();
        if borrows {
            row.pods += 1;
        }
        let Some(node) = node else { continue };
        row.placed_all += 1;
        if borrows {
            row.placed += 1;
        }
        let Some(plan) = pod.annotations.get(PLAN) else {
            continue;
        };
        let Ok(plan) = serde_json::from_str::<PlanDoc>(plan) else {
            row.plans_inconsistent += 1;
            continue;
        };
        let borrower_pool = snap
            .node_by_name(Sym::new(&node))
            .and_then(|n| n.labels.get(pool_key));
        let mut sum = 0;
        for l in &plan.lenders {
            sum += l.bytes;
            let lender = Sym::new(&l.node);
            *lent.entry(lender).or_default() += l.bytes;
            let lender_pool = snap
                .node_by_name(lender)
                .and_then(|n| n.labels.get(pool_key));
            if l.node == node || lender_pool.is_none() || lender_pool != borrower_pool {
                row.loans_outside_pool += 1;
            }
        }
        if sum != plan.remote_bytes {
            row.plans_inconsistent += 1;
        }
        row.remote_bytes += plan.remote_bytes;
        *row.by_namespace
            .entry(pod.namespace.as_str().to_owned())
            .or_default() += plan.remote_bytes;
        let local = pod.spec.requests[ResourceId::MEMORY];
        shares.push(plan.remote_bytes as f64 / (local + plan.remote_bytes).max(1) as f64);
    }
    for n in snap.nodes() {
        let alloc = n.allocatable[ResourceId::MEMORY];
        let used = n.requested[ResourceId::MEMORY] + lent.get(&n.name).copied().unwrap_or(0);
        row.total_bytes += alloc;
        row.idle_bytes += (alloc - used).max(0);
        if used > alloc {
            row.lenders_short += 1;
        }
    }
    for (ns, held) in &row.by_namespace {
        if args.cap_of(ns).is_some_and(|cap| *held > cap) {
            row.caps_broken.push(ns.clone());
        }
    }
    if !shares.is_empty() {
        row.remote_share_mean = shares.iter().sum::<f64>() / shares.len() as f64;
        row.remote_share_max = shares.iter().cloned().fold(0.0, f64::max);
    }
    row
}

/// The label the sweep puts on the pods of the workloads it varies.
pub const SWEEP_LABEL: &str = "strata.io/memory-sweep";

/// Runs `path` once per ratio and audits each run.
pub fn sweep(path: &str, ratios_bp: &[i64]) -> Result<Vec<SweepRow>, SweepError> {
    let text = std::fs::read_to_string(path).map_err(|e| SweepError::Shape {
        file: path.to_owned(),
        message: e.to_string(),
    })?;
    let marked = mark(&text, path)?;
    let mut rows = Vec::new();
    for &r in ratios_bp {
        let t = variant_text(&marked, path, r)?;
        let scenario = Scenario::parse(&t, path).map_err(SimError::from)?;
        let args = pool_args(&scenario);
        let mut sim = Simulation::new(scenario, &RunOptions::default())?;
        sim.run();
        rows.push(audit(&sim, &args, r));
    }
    Ok(rows)
}

/// Adds [`SWEEP_LABEL`] to the templates that borrow by share.
fn mark(text: &str, file: &str) -> Result<String, SweepError> {
    let shape = |message: String| SweepError::Shape {
        file: file.to_owned(),
        message,
    };
    let mut doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| shape(format!("not YAML: {e}")))?;
    if let Some(ws) = doc.get_mut("workloads").and_then(Value::as_sequence_mut) {
        for w in ws {
            let Some(meta) = w.get_mut("template").and_then(|t| t.get_mut("metadata")) else {
                continue;
            };
            let borrows = meta
                .get("annotations")
                .and_then(|a| a.get(BORROW))
                .and_then(Value::as_str)
                .is_some_and(|s| matches!(parse_ask(BORROW, s, MAX_SHARE_BP), Ok(Ask::Share(_))));
            if !borrows {
                continue;
            }
            if meta.get("labels").is_none() {
                meta["labels"] = Value::Mapping(Default::default());
            }
            if let Some(l) = meta.get_mut("labels").and_then(Value::as_mapping_mut) {
                l.insert(
                    Value::String(SWEEP_LABEL.to_owned()),
                    Value::String("true".to_owned()),
                );
            }
        }
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| shape(format!("cannot write YAML: {e}")))
}

/// The rows as a Markdown table.
pub fn table(rows: &[SweepRow]) -> String {
    const TI: f64 = (1u64 << 40) as f64;
    let mut namespaces: Vec<&String> = rows.iter().flat_map(|r| r.by_namespace.keys()).collect();
    namespaces.sort();
    namespaces.dedup();
    let mut out = String::from(
        "| borrow | pods placed | memory stranded (neither used nor lent) | remote share mean / max | remote held |",
    );
    for ns in &namespaces {
        out.push_str(&format!(" {ns} |"));
    }
    out.push_str(" caps kept | lenders short | loans outside pool |\n|---|---|---|---|---|");
    for _ in &namespaces {
        out.push_str("---|");
    }
    out.push_str("---|---|---|\n");
    for r in rows {
        let label = if r.ratio_bp == 0 {
            "off".to_owned()
        } else {
            format!("{}%", r.ratio_bp as f64 / 100.0)
        };
        out.push_str(&format!(
            "| {label} | {} / {} | {:.1} Ti ({:.1}%) | {:.1}% / {:.1}% | {:.1} Ti |",
            r.placed,
            r.pods,
            r.idle_bytes as f64 / TI,
            100.0 * r.idle_bytes as f64 / r.total_bytes.max(1) as f64,
            100.0 * r.remote_share_mean,
            100.0 * r.remote_share_max,
            r.remote_bytes as f64 / TI,
        ));
        for ns in &namespaces {
            let v = r.by_namespace.get(*ns).copied().unwrap_or(0);
            out.push_str(&format!(" {:.2} Ti |", v as f64 / TI));
        }
        out.push_str(&format!(
            " {} | {} | {} |\n",
            if r.caps_broken.is_empty() {
                "yes".to_owned()
            } else {
                format!("no: {}", r.caps_broken.join(", "))
            },
            r.lenders_short,
            r.loans_outside_pool
        ));
    }
    out
}
