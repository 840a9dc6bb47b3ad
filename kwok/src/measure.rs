//! The figures a run reports, computed from timestamps alone.
//!
//! Throughput is sampled as kube-scheduler's scheduler_perf samples it
//! (`SchedulingThroughput`): pods bound per 1-second interval, the first
//! interval skipped (it holds the scheduler's start), reported as average
//! and percentiles of the samples. Here the intervals start at the first
//! bind and only whole intervals count, so the tail after the last full
//! second does not drag the samples down.

use std::time::Duration;
use strata_simulator::report::{Latency, percentile};

/// Pods-per-second samples of `binds` (offsets of each bind from any common
/// origin, in any order), one per whole `interval` starting at the first
/// bind, the first sample skipped.
pub fn samples(binds: &[Duration], interval: Duration) -> Vec<f64> {
    let Some(first) = binds.iter().min().copied() else {
        return Vec::new();
    };
    let last = binds.iter().max().copied().unwrap_or(first);
    let step = interval.as_secs_f64();
    let whole = ((last - first).as_secs_f64() / step).floor() as usize;
    let mut counts = vec![0u64; whole];
    for b in binds {
        let k = ((*b - first).as_secs_f64() / step) as usize;
        if k < whole {
            counts[k] += 1;
        }
    }
    counts
        .into_iter()
        .skip(1)
        .map(|c| c as f64 / step)
        .collect()
}

/// Average and percentiles of throughput samples.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Throughput {
    /// Samples taken.
    pub samples: usize,
    /// Mean pods/s over the samples.
    pub average: f64,
    /// Median sample.
    pub p50: f64,
    /// 90th percentile sample.
    pub p90: f64,
    /// 99th percentile sample.
    pub p99: f64,
}

impl Throughput {
    /// From samples as [`samples`] returns them.
    pub fn from_samples(s: &[f64]) -> Throughput {
        if s.is_empty() {
            return Throughput::default();
        }
        let mut sorted = s.to_vec();
        sorted.sort_by(f64::total_cmp);
        let pick = |p: f64| {
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        Throughput {
            samples: s.len(),
            average: s.iter().sum::<f64>() / s.len() as f64,
            p50: pick(50.0),
            p90: pick(90.0),
            p99: pick(99.0),
        }
    }
}

/// Latency percentiles of `(from, to)` pairs (pairs where `to` comes
/// first count as zero).
pub fn latency(pairs: impl IntoIterator<Item = (Duration, Duration)>) -> Latency {
    let mut d: Vec<Duration> = pairs
        .into_iter()
        .map(|(a, b)| b.saturating_sub(a))
        .collect();
    Latency::from_samples(&mut d)
}

/// Pods per second over a span (0 when the span is empty).
pub fn rate(pods: usize, span: Duration) -> f64 {
    if span.is_zero() {
        0.0
    } else {
        pods as f64 / span.as_secs_f64()
    }
}

/// The nearest-rank percentile `p` of durations (sorted here); zero for none.
pub fn duration_percentile(d: &mut [Duration], p: f64) -> Duration {
    if d.is_empty() {
        return Duration::ZERO;
    }
    d.sort_unstable();
    percentile(d, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn samples_skip_the_first_interval_and_the_partial_tail() {
        // First bind at 0.5 s; binds every 10 ms until 4.2 s.
        let binds: Vec<Duration> = (50..=420).map(|i| ms(i * 10)).collect();
        let s = samples(&binds, Duration::from_secs(1));
        // Whole intervals from 0.5 s: [0.5,1.5) [1.5,2.5) [2.5,3.5); the
        // first is skipped, [3.5,4.2] is partial.
        assert_eq!(s, vec![100.0, 100.0]);
    }

    #[test]
    fn samples_of_uneven_binds_in_any_order() {
        let mut binds = vec![
            ms(0),
            ms(100),
            ms(1100),
            ms(1200),
            ms(1300),
            ms(2500),
            ms(3000),
        ];
        binds.reverse();
        // [0,1): 2 (skipped), [1,2): 3, [2,3): 1, and 3.0 s ends the third
        // whole interval, not counted.
        assert_eq!(samples(&binds, Duration::from_secs(1)), vec![3.0, 1.0]);
        let half = samples(&binds, Duration::from_millis(500));
        assert_eq!(half, vec![0.0, 6.0, 0.0, 0.0, 2.0]);
        assert!(samples(&[], Duration::from_secs(1)).is_empty());
        assert!(samples(&[ms(5)], Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn throughput_average_and_percentiles() {
        let t = Throughput::from_samples(&[100.0, 300.0, 200.0, 400.0]);
        assert_eq!(t.samples, 4);
        assert_eq!(t.average, 250.0);
        assert_eq!(t.p50, 200.0);
        assert_eq!(t.p90, 400.0);
        assert_eq!(Throughput::from_samples(&[]), Throughput::default());
    }

    #[test]
    fn latency_and_rate() {
        let l = latency([(ms(0), ms(10)), (ms(5), ms(25)), (ms(30), ms(20))]);
        assert_eq!(l.count, 3);
        assert_eq!(l.max_ms, 20.0);
        assert_eq!(l.p50_ms, 10.0);
        assert_eq!(rate(500, Duration::from_secs(2)), 250.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }
}
