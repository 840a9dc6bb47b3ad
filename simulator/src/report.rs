//! What a simulation run measured, printed as a table and written as JSON.
//!
//! Wall-clock figures (pods/s, latencies) measure the engine on this machine;
//! placement figures (counts, utilization) depend only on the scenario and
//! the seed. The JSON field names are stable: scripts compare runs with them.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Pod counts at the end of a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PodCounts {
    /// Pods the scenario created.
    pub total: usize,
    /// Pods bound to a node.
    pub scheduled: usize,
    /// Pods left unbound.
    pub unschedulable: usize,
    /// Pods deleted during the run (preemption victims).
    pub deleted: usize,
}

/// Scheduling cycles by result.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CycleCounts {
    /// All cycles.
    pub total: u64,
    /// Cycles that picked a node and went on to bind.
    pub scheduled: u64,
    /// Cycles that picked a node and left the pod waiting at Permit.
    pub waiting_on_permit: u64,
    /// Cycles that found no node.
    pub unschedulable: u64,
    /// Cycles that failed with an error.
    pub failed: u64,
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (nearest rank); sorts them.
    pub fn from_samples(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let total: Duration = samples.iter().sum();
        Latency {
            count: samples.len(),
            mean_ms: ms(total) / samples.len() as f64,
            p50_ms: ms(percentile(samples, 50.0)),
            p90_ms: ms(percentile(samples, 90.0)),
            p99_ms: ms(percentile(samples, 99.0)),
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

/// The nearest-rank percentile `p` (0–100] of sorted, non-empty `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Mean, minimum and maximum of a ratio over nodes.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Spread {
    /// Mean over nodes.
    pub mean: f64,
    /// Least used node.
    pub min: f64,
    /// Most used node.
    pub max: f64,
}

/// Requested / allocatable per node, for cpu and memory.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Utilization {
    /// Nodes counted (those with allocatable cpu and memory).
    pub nodes: usize,
    /// CPU requested / allocatable.
    pub cpu: Spread,
    /// Memory requested / allocatable.
    pub memory: Spread,
}

impl Utilization {
    /// From `(cpu requested, cpu allocatable, memory requested, memory
    /// allocatable)` per node; nodes with no allocatable cpu or memory are
    /// skipped.
    pub fn from_nodes(nodes: impl IntoIterator<Item = (i64, i64, i64, i64)>) -> Utilization {
        let mut u = Utilization::default();
        let (mut cpu_sum, mut mem_sum) = (0.0, 0.0);
        u.cpu.min = f64::INFINITY;
        u.memory.min = f64::INFINITY;
        for (cr, ca, mr, ma) in nodes {
            if ca <= 0 || ma <= 0 {
                continue;
            }
            let c = cr as f64 / ca as f64;
            let m = mr as f64 / ma as f64;
            u.nodes += 1;
            cpu_sum += c;
            mem_sum += m;
            u.cpu.min = u.cpu.min.min(c);
            u.cpu.max = u.cpu.max.max(c);
            u.memory.min = u.memory.min.min(m);
            u.memory.max = u.memory.max.max(m);
        }
        if u.nodes == 0 {
            return Utilization::default();
        }
        u.cpu.mean = cpu_sum / u.nodes as f64;
        u.memory.mean = mem_sum / u.nodes as f64;
        u
    }
}

/// Counts for one workload.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct WorkloadReport {
    /// Workload name.
    pub name: String,
    /// Pods created.
    pub total: usize,
    /// Pods bound.
    pub scheduled: usize,
    /// Pods left unbound.
    pub unschedulable: usize,
    /// Scheduling cycles of this workload's pods: count and wall time, the
    /// share of the run's scheduling time they took, and their latency.
    pub cycle_latency: Latency,
    /// Sum of this workload's cycle durations, seconds.
    pub cycle_seconds: f64,
}

/// One distinct reason pods were left unbound.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MessageCount {
    /// The engine's aggregated message from the pod's last attempt.
    pub message: String,
    /// How many unbound pods had it.
    pub pods: usize,
    /// One of them (`namespace/name`).
    pub example: String,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Where it came from.
    pub source: String,
    /// Seed used.
    pub seed: u64,
    /// The only workload run, if one was picked.
    pub only_workload: Option<String>,
    /// Nodes created.
    pub nodes: usize,
    /// Pod outcome counts.
    pub pods: PodCounts,
    /// Scheduling cycles by result.
    pub cycles: CycleCounts,
    /// Wall-clock seconds from the first pod's arrival to the last bind.
    pub scheduling_seconds: f64,
    /// Pods bound per wall-clock second over `scheduling_seconds`.
    pub pods_per_second: f64,
    /// Wall-clock seconds of the whole run (nodes, pods, settling).
    pub total_seconds: f64,
    /// Virtual seconds the run covered.
    pub virtual_seconds: f64,
    /// Duration of scheduling cycles (wall clock).
    pub cycle_latency: Latency,
    /// From a pod's arrival to its bind call (wall clock).
    pub queue_to_bound_latency: Latency,
    /// Peak resident memory of the process (VmHWM), when known.
    pub peak_rss_bytes: Option<u64>,
    /// Node utilization at the end.
    pub utilization: Utilization,
    /// Per-workload counts.
    pub workloads: Vec<WorkloadReport>,
    /// The most common reasons pods were left unbound.
    pub unschedulable_messages: Vec<MessageCount>,
    /// Events the engine recorded, by reason.
    pub events: BTreeMap<String, u64>,
    /// Bind calls for pods already bound (must be 0).
    pub double_binds: u64,
    /// What `Cache::check_consistency` found wrong at the end (must be
    /// `None`).
    pub cache_inconsistency: Option<String>,
    /// How the engine's worker pool was used.
    pub worker_pool: WorkerPool,
}

/// How the engine's worker pool was used over a run: a long Filter or Score
/// pass goes to the pool only while that has been cheaper per node than the
/// calling thread alone (see the engine's `parallel` module).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct WorkerPool {
    /// Threads (`parallelism`); 1 means no pool.
    pub threads: usize,
    /// Filter and Score passes over at least 512 nodes, counted when there
    /// is a pool.
    pub long_passes: u64,
    /// Of those, the ones split over the pool.
    pub pooled_passes: u64,
}

impl From<strata_scheduler::engine::PoolUse> for WorkerPool {
    fn from(u: strata_scheduler::engine::PoolUse) -> WorkerPool {
        WorkerPool {
            threads: u.threads,
            long_passes: u.long_passes,
            pooled_passes: u.pooled_passes,
        }
    }
}

/// How many distinct unschedulable messages a report keeps.
pub const MAX_MESSAGES: usize = 5;

/// Peak resident set size of this process, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    let mult = match unit {
        "kB" => 1024,
        "mB" | "MB" => 1024 * 1024,
        _ => 1,
    };
    Some(value * mult)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

impl Report {
    /// The report as an aligned plain-text table.
    pub fn to_table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let scenario = match &self.only_workload {
            Some(w) => format!("{} (only workload {w})", self.scenario),
            None => self.scenario.clone(),
        };
        row("scenario", scenario);
        row("seed", self.seed.to_string());
        row("nodes", self.nodes.to_string());
        row(
            "pods scheduled / unschedulable / total",
            format!(
                "{} / {} / {}",
                self.pods.scheduled, self.pods.unschedulable, self.pods.total
            ),
        );
        if self.pods.deleted > 0 {
            row("pods deleted (preempted)", self.pods.deleted.to_string());
        }
        row(
            "scheduling throughput",
            format!(
                "{:.0} pods/s over {:.2} s",
                self.pods_per_second, self.scheduling_seconds
            ),
        );
        row(
            "cycles (scheduled / unschedulable / failed)",
            format!(
                "{} ({} / {} / {}{})",
                self.cycles.total,
                self.cycles.scheduled,
                self.cycles.unschedulable,
                self.cycles.failed,
                if self.cycles.waiting_on_permit > 0 {
                    format!(", {} waited at Permit", self.cycles.waiting_on_permit)
                } else {
                    String::new()
                }
            ),
        );
        let lat = |l: &Latency| {
            format!(
                "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            )
        };
        row("scheduling-cycle latency", lat(&self.cycle_latency));
        row("queue-to-bound latency", lat(&self.queue_to_bound_latency));
        row(
            "node cpu requested (mean / min / max)",
            format!(
                "{} / {} / {}",
                pct(self.utilization.cpu.mean),
                pct(self.utilization.cpu.min),
                pct(self.utilization.cpu.max)
            ),
        );
        row(
            "node memory requested (mean / min / max)",
            format!(
                "{} / {} / {}",
                pct(self.utilization.memory.mean),
                pct(self.utilization.memory.min),
                pct(self.utilization.memory.max)
            ),
        );
        row(
            "peak RSS",
            self.peak_rss_bytes
                .map(human_bytes)
                .unwrap_or_else(|| "unknown".into()),
        );
        let pool = &self.worker_pool;
        row(
            "worker pool",
            if pool.threads <= 1 {
                "1 thread (every pass on the scheduling thread)".to_owned()
            } else {
                format!(
                    "{} threads; {} of {} passes over 512+ nodes split",
                    pool.threads, pool.pooled_passes, pool.long_passes
                )
            },
        );
        row(
            "wall / virtual time",
            format!(
                "{:.2} s / {:.1} s",
                self.total_seconds, self.virtual_seconds
            ),
        );
        if self.double_binds > 0 {
            row("DOUBLE BINDS (bug)", self.double_binds.to_string());
        }
        if let Some(e) = &self.cache_inconsistency {
            row("CACHE INCONSISTENT (bug)", e.clone());
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        if !self.workloads.is_empty() {
            let nw = self
                .workloads
                .iter()
                .map(|w| w.name.len())
                .max()
                .unwrap_or(0)
                .max("workload".len());
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<nw$}  {:>9}  {:>13}  {:>9}  {:>9}  {:>9}  {:>9}",
                "workload", "scheduled", "unschedulable", "total", "cycles s", "p50 ms", "p99 ms"
            );
            for w in &self.workloads {
                let _ = writeln!(
                    out,
                    "{:<nw$}  {:>9}  {:>13}  {:>9}  {:>9.2}  {:>9.3}  {:>9.3}",
                    w.name,
                    w.scheduled,
                    w.unschedulable,
                    w.total,
                    w.cycle_seconds,
                    w.cycle_latency.p50_ms,
                    w.cycle_latency.p99_ms
                );
            }
        }
        if !self.unschedulable_messages.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "unschedulable pods, by last message:");
            for m in &self.unschedulable_messages {
                let _ = writeln!(
                    out,
                    "  {:>6} pods (e.g. {}): {}",
                    m.pods, m.example, m.message
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        s.reverse();
        let l = Latency::from_samples(&mut s);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert!((l.mean_ms - 50.5).abs() < 1e-9);
        let one = Latency::from_samples(&mut [Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
    }

    #[test]
    fn utilization_skips_empty_nodes() {
        let u = Utilization::from_nodes([(1000, 4000, 8, 32), (4000, 4000, 0, 32), (5, 0, 5, 0)]);
        assert_eq!(u.nodes, 2);
        assert_eq!(u.cpu.min, 0.25);
        assert_eq!(u.cpu.max, 1.0);
        assert_eq!(u.cpu.mean, 0.625);
        assert_eq!(u.memory.max, 0.25);
        assert_eq!(u.memory.min, 0.0);
        assert_eq!(Utilization::from_nodes([]), Utilization::default());
    }

    #[test]
    fn reads_vm_hwm() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn table_and_json_carry_the_figures() {
        let r = Report {
            scenario: "s".into(),
            nodes: 3,
            pods: PodCounts {
                total: 10,
                scheduled: 9,
                unschedulable: 1,
                deleted: 0,
            },
            workloads: vec![WorkloadReport {
                name: "web".into(),
                total: 10,
                scheduled: 9,
                unschedulable: 1,
                ..Default::default()
            }],
            unschedulable_messages: vec![MessageCount {
                message: "0/3 nodes are available: 3 Insufficient cpu.".into(),
                pods: 1,
                example: "default/web-9".into(),
            }],
            peak_rss_bytes: Some(3 * 1024 * 1024),
            ..Default::default()
        };
        let t = r.to_table();
        assert!(t.contains("9 / 1 / 10"), "{t}");
        assert!(t.contains("3.0 MiB"), "{t}");
        assert!(t.contains("Insufficient cpu"), "{t}");
        assert!(t.contains("web"), "{t}");
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["pods"]["scheduled"], 9);
        assert_eq!(j["unschedulable_messages"][0]["pods"], 1);
        assert!(j["cycle_latency"]["p99_ms"].is_number());
    }
}
