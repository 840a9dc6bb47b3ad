//! Workload mixes generated from the openb trace's distributions, and
//! multi-seed sweeps over mixes and policies.
//!
//! A [`MixSpec`] says what share of the pods is CPU-only and, of the GPU
//! pods, what share shares one GPU, asks for more than one GPU, or is pinned
//! to one GPU model. [`generate`] draws pods (seeded) until their GPU demand
//! reaches the target: each pod's category is drawn with those
//! probabilities, then a row of that category is taken uniformly from the
//! base pod list, so cpu, memory, share sizes and GPU counts keep the
//! trace's distribution within the category. A pinned pod gets one GPU
//! model, drawn in proportion to the model's GPUs among the nodes with at
//! least as many GPUs as the pod asks; an unpinned pod has its model
//! constraint removed.
//!
//! [`summarize`] turns the reports of several seeds into mean, standard
//! deviation, minimum and maximum per policy.

use crate::openb::{NodeRow, OpenbError, OpenbReport, PodRow, ReplayPolicy};
use serde::Serialize;
use std::fmt::Write as _;
use strata_scheduler::rng::SplitMix64;

/// The built-in sweep (`replay-openb --mix-sweep`): the shipped `default`
/// list's shares (13% CPU-only pods; of the GPU pods 44% sharing, 1%
/// multi-GPU, none pinned) with one dimension moved at a time — sharing
/// from none to all, multi-GPU heavy, a third and all pinned to a model,
/// CPU-heavy.
pub const MIX_SWEEP: &[&str] = &[
    "share=0,multi=1,cpu=13",
    "share=25,multi=1,cpu=13",
    "share=44,multi=1,cpu=13",
    "share=75,multi=1,cpu=13",
    "share=100,cpu=13",
    "share=44,multi=20,cpu=13",
    "share=44,multi=1,pinned=33,cpu=13",
    "share=44,multi=1,pinned=100,cpu=13",
    "share=44,multi=1,cpu=50",
];

/// The shares of a generated mix, each a fraction in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MixSpec {
    /// Of the GPU pods: the share asking part of one GPU.
    pub sharing: f64,
    /// Of the GPU pods: the share asking for more than one whole GPU.
    pub multi_gpu: f64,
    /// Of the GPU pods: the share pinned to one GPU model.
    pub pinned: f64,
    /// Of all pods: the share asking for no GPU.
    pub cpu_only: f64,
}

/// A mix that cannot be generated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MixError {
    /// The text is not `key=percent,...`.
    #[error("mix {text:?}: {message} (expected e.g. share=50,multi=5,pinned=33,cpu=10, percent)")]
    Syntax {
        /// The text given.
        text: String,
        /// What is wrong.
        message: String,
    },
    /// A share is out of range or the shares do not add up.
    #[error("mix {spec}: {message}")]
    Invalid {
        /// The mix.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// The base pod list has no pod of a category the mix asks for.
    #[error("mix {spec}: the base pod list has no {category} pod to draw from")]
    EmptyCategory {
        /// The mix.
        spec: String,
        /// The category.
        category: &'static str,
    },
    /// Pinned pods are asked for but no node has a GPU model.
    #[error("mix {spec}: no node has a GPU model to pin pods to")]
    NoModel {
        /// The mix.
        spec: String,
    },
}

impl From<MixError> for OpenbError {
    fn from(e: MixError) -> OpenbError {
        OpenbError::Engine(e.to_string())
    }
}

impl std::fmt::Display for MixSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "share={},multi={},pinned={},cpu={}",
            pct(self.sharing),
            pct(self.multi_gpu),
            pct(self.pinned),
            pct(self.cpu_only)
        )
    }
}

fn pct(x: f64) -> String {
    let p = x * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round() as i64)
    } else {
        format!("{p:.1}")
    }
}

impl MixSpec {
    /// Parses `share=P,multi=P,pinned=P,cpu=P` (percent; keys may be left
    /// out and default to 0) and checks it.
    pub fn parse(text: &str) -> Result<MixSpec, MixError> {
        let syntax = |message: String| MixError::Syntax {
            text: text.to_owned(),
            message,
        };
        let mut m = MixSpec {
            sharing: 0.0,
            multi_gpu: 0.0,
            pinned: 0.0,
            cpu_only: 0.0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| syntax(format!("{part:?} has no '='")))?;
            let v: f64 = v
                .trim()
                .trim_end_matches('%')
                .parse()
                .map_err(|_| syntax(format!("{:?} is not a number", v.trim())))?;
            let slot = match k.trim() {
                "share" | "sharing" => &mut m.sharing,
                "multi" | "multi-gpu" => &mut m.multi_gpu,
                "pinned" | "pin" => &mut m.pinned,
                "cpu" | "cpu-only" => &mut m.cpu_only,
                other => return Err(syntax(format!("unknown key {other:?}"))),
            };
            *slot = v / 100.0;
        }
        m.check()?;
        Ok(m)
    }

    /// Checks every share is in `[0, 1]`, sharing and multi-GPU pods do
    /// not exceed the GPU pods, and some pods ask for GPUs.
    pub fn check(&self) -> Result<(), MixError> {
        let invalid = |message: String| MixError::Invalid {
            spec: self.to_string(),
            message,
        };
        for (name, v) in [
            ("share", self.sharing),
            ("multi", self.multi_gpu),
            ("pinned", self.pinned),
            ("cpu", self.cpu_only),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(format!(
                    "{name} is {}%, must be within 0-100%",
                    pct(v)
                )));
            }
        }
        if self.sharing + self.multi_gpu > 1.0 + 1e-9 {
            return Err(invalid(format!(
                "share + multi is {}% of the GPU pods, at most 100%",
                pct(self.sharing + self.multi_gpu)
            )));
        }
        if self.cpu_only >= 1.0 {
            return Err(invalid(
                "cpu is 100%: no pod asks for a GPU, so demand never arrives".into(),
            ));
        }
        Ok(())
    }
}

/// Categories of the base list's rows.
#[derive(Default)]
struct Categories {
    cpu: Vec<usize>,
    share: Vec<usize>,
    whole: Vec<usize>,
    multi: Vec<usize>,
}

fn categorize(base: &[PodRow]) -> Categories {
    let mut c = Categories::default();
    for (i, r) in base.iter().enumerate() {
        match (r.num_gpu, r.gpu_milli) {
            (0, _) | (_, 0) => c.cpu.push(i),
            (1, m) if m < 1000 => c.share.push(i),
            (1, _) => c.whole.push(i),
            _ => c.multi.push(i),
        }
    }
    c
}

/// A uniform draw in `[0, 1)`.
fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Pods drawn from `base` with the shares of `spec` until their GPU demand
/// reaches `ratio × capacity_gpus`, in arrival order. The same inputs and
/// seed give the same pods.
pub fn generate(
    base: &[PodRow],
    nodes: &[NodeRow],
    spec: &MixSpec,
    capacity_gpus: u64,
    ratio: f64,
    seed: u64,
) -> Result<Vec<PodRow>, MixError> {
    spec.check()?;
    let cats = categorize(base);
    let gpu_whole = 1.0 - spec.sharing - spec.multi_gpu;
    let empty = |category| MixError::EmptyCategory {
        spec: spec.to_string(),
        category,
    };
    for (share, rows, name) in [
        (spec.cpu_only, &cats.cpu, "CPU-only"),
        (spec.sharing, &cats.share, "GPU-sharing"),
        (spec.multi_gpu, &cats.multi, "multi-GPU"),
        (gpu_whole, &cats.whole, "single whole-GPU"),
    ] {
        if share > 1e-9 && rows.is_empty() {
            return Err(empty(name));
        }
    }
    // GPUs per model, and the most GPUs one node of the model has.
    let mut models: Vec<(String, u64, u32)> = Vec::new();
    for n in nodes.iter().filter(|n| n.gpus > 0 && !n.model.is_empty()) {
        match models.iter_mut().find(|m| m.0 == n.model) {
            Some(m) => {
                m.1 += n.gpus as u64;
                m.2 = m.2.max(n.gpus);
            }
            None => models.push((n.model.clone(), n.gpus as u64, n.gpus)),
        }
    }
    models.sort();
    if spec.pinned > 0.0 && models.is_empty() {
        return Err(MixError::NoModel {
            spec: spec.to_string(),
        });
    }
    let target = (capacity_gpus as f64 * 1000.0 * ratio).ceil() as u64;
    let mut rng = SplitMix64::from_state(seed ^ 0x6d69_7867_656e);
    let mut out = Vec::new();
    let mut demand = 0u64;
    while demand < target {
        let pick =
            |rng: &mut SplitMix64, rows: &[usize]| rows[rng.below(rows.len() as u64) as usize];
        let i = if unit(&mut rng) < spec.cpu_only {
            pick(&mut rng, &cats.cpu)
        } else {
            let u = unit(&mut rng);
            if u < spec.sharing {
                pick(&mut rng, &cats.share)
            } else if u < spec.sharing + spec.multi_gpu || cats.whole.is_empty() {
                pick(&mut rng, &cats.multi)
            } else {
                pick(&mut rng, &cats.whole)
            }
        };
        let mut row = base[i].clone();
        row.name = format!("{}-g{}", row.name, out.len());
        row.gpu_spec.clear();
        if row.num_gpu > 0 && unit(&mut rng) < spec.pinned {
            // A model with a node that can hold the whole ask, by GPUs.
            let fit: u64 = models
                .iter()
                .filter(|m| m.2 >= row.num_gpu)
                .map(|m| m.1)
                .sum();
            if fit > 0 {
                let mut r = rng.below(fit);
                for m in models.iter().filter(|m| m.2 >= row.num_gpu) {
                    if r < m.1 {
                        row.gpu_spec = vec![m.0.clone()];
                        break;
                    }
                    r -= m.1;
                }
            }
        }
        demand += row.demand_milli();
        out.push(row);
    }
    Ok(out)
}

/// The measured shares of a pod list, as a [`MixSpec`].
pub fn measure(pods: &[PodRow]) -> MixSpec {
    let gpu: Vec<&PodRow> = pods
        .iter()
        .filter(|p| p.num_gpu > 0 && p.gpu_milli > 0)
        .collect();
    let frac = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    MixSpec {
        sharing: frac(gpu.iter().filter(|p| p.gpu_milli < 1000).count(), gpu.len()),
        multi_gpu: frac(gpu.iter().filter(|p| p.num_gpu > 1).count(), gpu.len()),
        pinned: frac(
            gpu.iter().filter(|p| !p.gpu_spec.is_empty()).count(),
            gpu.len(),
        ),
        cpu_only: frac(pods.len() - gpu.len(), pods.len()),
    }
}

/// Mean, standard deviation, minimum and maximum of some figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population).
    pub std: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many figures.
    pub n: usize,
}

impl Spread {
    /// The spread of `xs` (all zero when empty).
    pub fn of(xs: &[f64]) -> Spread {
        if xs.is_empty() {
            return Spread::default();
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        Spread {
            mean,
            std: var.sqrt(),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: xs.len(),
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} ± {:.2} ({:.2}–{:.2})",
            self.mean, self.std, self.min, self.max
        )
    }
}

/// One policy over the seeds of one workload.
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    /// The policy.
    pub policy: ReplayPolicy,
    /// Allocated GPU share (percent) at 100% arrived demand.
    pub at_100: Spread,
    /// Allocated GPU share (percent) at the end (the tune ratio).
    pub at_end: Spread,
    /// Scheduling cycles per second.
    pub pods_per_second: Spread,
    /// The paper's means (100% / 130%) where published.
    pub published: Option<(f64, f64)>,
}

/// One workload over several seeds.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadSummary {
    /// The workload: a shipped list's name, or a generated mix.
    pub workload: String,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Measured shares of the pods drawn (first seed).
    pub measured: Option<MixSpec>,
    /// Per policy, in the order run.
    pub policies: Vec<PolicySummary>,
}

/// Summarizes the reports of one workload's seeds.
pub fn summarize(workload: &str, reports: &[OpenbReport]) -> WorkloadSummary {
    let mut policies: Vec<PolicySummary> = Vec::new();
    let order: Vec<ReplayPolicy> = reports
        .first()
        .map(|r| r.results.iter().map(|o| o.policy).collect())
        .unwrap_or_default();
    for p in order {
        let outs: Vec<_> = reports
            .iter()
            .flat_map(|r| r.results.iter().filter(move |o| o.policy == p))
            .collect();
        let a100: Vec<f64> = outs
            .iter()
            .filter_map(|o| o.at_100.as_ref().map(|x| x.allocated_percent))
            .collect();
        let end: Vec<f64> = outs.iter().map(|o| o.at_end.allocated_percent).collect();
        let speed: Vec<f64> = outs.iter().map(|o| o.pods_per_second).collect();
        policies.push(PolicySummary {
            policy: p,
            at_100: Spread::of(&a100),
            at_end: Spread::of(&end),
            pods_per_second: Spread::of(&speed),
            published: outs.first().and_then(|o| o.published),
        });
    }
    WorkloadSummary {
        workload: workload.to_owned(),
        seeds: reports.iter().map(|r| r.seed).collect(),
        measured: reports.first().and_then(|r| r.measured),
        policies,
    }
}

/// The summaries as a terminal (and Markdown) table.
pub fn sweep_table(rows: &[WorkloadSummary], tune_ratio: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| workload | policy | seeds | alloc @100% mean ± std (min–max) | alloc @{:.0}% mean ± std (min–max) | paper @100/@130 | pods/s |",
        tune_ratio * 100.0
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for w in rows {
        for p in &w.policies {
            let _ = writeln!(
                s,
                "| {} | {:?} | {} | {} | {} | {} | {:.0} |",
                w.workload,
                p.policy,
                p.at_end.n,
                p.at_100,
                p.at_end,
                p.published
                    .map(|(a, b)| format!("{a:.2}/{b:.2}"))
                    .unwrap_or_else(|| "-".into()),
                p.pods_per_second.mean
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openb::tests::row;

    fn base() -> Vec<PodRow> {
        vec![
            row(0, 0),
            row(1, 250),
            row(1, 500),
            row(1, 1000),
            row(2, 1000),
            row(8, 1000),
        ]
    }

    fn nodes() -> Vec<NodeRow> {
        let n = |name: &str, gpus, model: &str| NodeRow {
            name: name.into(),
            cpu_milli: 96000,
            memory_mib: 786432,
            gpus,
            model: model.into(),
        };
        vec![n("a", 8, "V100"), n("b", 2, "T4"), n("c", 0, "")]
    }

    #[test]
    fn generated_mixes_hit_the_requested_shares() {
        for text in [
            "share=0,multi=0,pinned=0,cpu=0",
            "share=100,cpu=20",
            "share=40,multi=20,pinned=33,cpu=10",
            "share=10,multi=50,pinned=100,cpu=50",
        ] {
            let spec = MixSpec::parse(text).unwrap();
            let pods = generate(&base(), &nodes(), &spec, 20_000, 1.3, 5).unwrap();
            let got = measure(&pods);
            for (what, want, have) in [
                ("share", spec.sharing, got.sharing),
                ("multi", spec.multi_gpu, got.multi_gpu),
                ("pinned", spec.pinned, got.pinned),
                ("cpu", spec.cpu_only, got.cpu_only),
            ] {
                assert!(
                    (want - have).abs() < 0.02,
                    "{text}: {what} {have:.3}, asked {want:.3}"
                );
            }
            let demand: u64 = pods.iter().map(PodRow::demand_milli).sum();
            assert!(demand >= 26_000_000);
        }
    }

    #[test]
    fn pinned_pods_get_a_model_that_can_hold_them() {
        let spec = MixSpec::parse("multi=60,pinned=100").unwrap();
        let pods = generate(&base(), &nodes(), &spec, 2_000, 1.0, 9).unwrap();
        for p in pods.iter().filter(|p| p.num_gpu > 2) {
            assert_eq!(
                p.gpu_spec,
                vec!["V100".to_string()],
                "only V100 nodes hold 8"
            );
        }
        assert!(pods.iter().any(|p| p.gpu_spec == vec!["T4".to_string()]));
        assert!(
            pods.iter()
                .filter(|p| p.num_gpu == 0)
                .all(|p| p.gpu_spec.is_empty())
        );
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        let spec = MixSpec::parse("share=60,multi=10,pinned=33,cpu=20").unwrap();
        let a = generate(&base(), &nodes(), &spec, 500, 1.3, 42).unwrap();
        let b = generate(&base(), &nodes(), &spec, 500, 1.3, 42).unwrap();
        let c = generate(&base(), &nodes(), &spec, 500, 1.3, 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bad_mixes_are_refused_with_the_reason() {
        let e = MixSpec::parse("share=120").unwrap_err().to_string();
        assert!(e.contains("share is 120%"), "{e}");
        let e = MixSpec::parse("share=70,multi=40").unwrap_err().to_string();
        assert!(e.contains("share + multi is 110%"), "{e}");
        let e = MixSpec::parse("cpu=100").unwrap_err().to_string();
        assert!(e.contains("no pod asks for a GPU"), "{e}");
        let e = MixSpec::parse("share=x").unwrap_err().to_string();
        assert!(e.contains("\"x\" is not a number"), "{e}");
        let e = MixSpec::parse("gpus=3").unwrap_err().to_string();
        assert!(e.contains("unknown key \"gpus\""), "{e}");
        let e = MixSpec::parse("share").unwrap_err().to_string();
        assert!(e.contains("has no '='"), "{e}");
        let e = MixSpec::parse("share=-5").unwrap_err().to_string();
        assert!(e.contains("within 0-100%"), "{e}");
        let no_share: Vec<PodRow> = base()
            .into_iter()
            .filter(|r| r.gpu_milli >= 1000 || r.num_gpu == 0)
            .collect();
        let spec = MixSpec::parse("share=50").unwrap();
        let e = generate(&no_share, &nodes(), &spec, 100, 1.0, 1).unwrap_err();
        assert!(e.to_string().contains("no GPU-sharing pod"), "{e}");
        let spec = MixSpec::parse("pinned=10").unwrap();
        let cpu_nodes: Vec<NodeRow> = nodes().into_iter().filter(|n| n.gpus == 0).collect();
        let e = generate(&base(), &cpu_nodes, &spec, 100, 1.0, 1).unwrap_err();
        assert_eq!(
            e,
            MixError::NoModel {
                spec: spec.to_string()
            }
        );
    }

    #[test]
    fn spec_round_trips_through_text() {
        let spec = MixSpec::parse("share=40,multi=5,pinned=33.5,cpu=10").unwrap();
        assert_eq!(MixSpec::parse(&spec.to_string()).unwrap(), spec);
    }

    #[test]
    fn spread_of_figures() {
        let s = Spread::of(&[1.0, 3.0]);
        assert_eq!((s.mean, s.std, s.min, s.max, s.n), (2.0, 1.0, 1.0, 3.0, 2));
        assert_eq!(Spread::of(&[]).n, 0);
    }
}
