//! When a pass over many nodes runs on the worker pool.
//!
//! A second core only helps a Filter or Score pass when the pass is long
//! enough to pay for handing chunks to the workers and waking them, and when
//! that core is not busy with something else: a scheduler pod shares its node
//! and usually runs under a CPU quota, so a worker may wait for a time slice
//! while the calling thread could have finished the pass alone. A
//! [`ParallelGate`] measures, per call site, what a node has cost lately on
//! each side (wall clock, moving averages), takes the cheaper side, and
//! re-tries the other side now and then so it notices when the machine
//! changes. The answer of a pass never depends on the side taken: only its
//! speed does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Passes over fewer nodes than this always run on the calling thread.
pub(crate) const PARALLEL_THRESHOLD: usize = 512;

/// One pass in this many re-tries the side not currently preferred.
const EXPLORE_EVERY: u64 = 32;

/// The pool is preferred only when its cost per node is at most this share
/// of the calling thread's (per mille): it must pay for itself, by a margin.
const PAYS_PER_MILLE: u64 = 900;

/// Which side a pass runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// On the calling thread.
    Caller,
    /// Split over the worker pool.
    Pool,
}

/// The per-site chooser; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct ParallelGate {
    /// Moving average of picoseconds per node on the calling thread (0:
    /// not measured yet).
    caller_ps: AtomicU64,
    /// The same on the pool.
    pool_ps: AtomicU64,
    /// Passes long enough to choose for.
    passes: AtomicU64,
    /// Of those, the ones run on the pool.
    pooled: AtomicU64,
    /// The last choice was a re-try of the side not preferred.
    exploring: AtomicBool,
}

impl ParallelGate {
    /// The side a pass over `nodes` nodes should take, when a pool exists.
    pub(crate) fn choose(&self, nodes: usize) -> Side {
        if nodes < PARALLEL_THRESHOLD {
            return Side::Caller;
        }
        let n = self.passes.fetch_add(1, Ordering::Relaxed);
        let caller = self.caller_ps.load(Ordering::Relaxed);
        let pool = self.pool_ps.load(Ordering::Relaxed);
        let mut exploring = false;
        let side = if pool == 0 {
            Side::Pool
        } else if caller == 0 {
            Side::Caller
        } else {
            let preferred = if pool.saturating_mul(1000) <= caller.saturating_mul(PAYS_PER_MILLE) {
                Side::Pool
            } else {
                Side::Caller
            };
            if n % EXPLORE_EVERY == EXPLORE_EVERY - 1 {
                exploring = true;
                match preferred {
                    Side::Pool => Side::Caller,
                    Side::Caller => Side::Pool,
                }
            } else {
                preferred
            }
        };
        self.exploring.store(exploring, Ordering::Relaxed);
        if side == Side::Pool {
            self.pooled.fetch_add(1, Ordering::Relaxed);
        }
        side
    }

    /// Records that a pass over `nodes` nodes on `side` took `elapsed`.
    pub(crate) fn record(&self, side: Side, nodes: usize, elapsed: Duration) {
        if nodes == 0 {
            return;
        }
        let per_node = (elapsed.as_nanos().saturating_mul(1000) / nodes as u128)
            .clamp(1, u64::MAX as u128) as u64;
        let slot = match side {
            Side::Caller => &self.caller_ps,
            Side::Pool => &self.pool_ps,
        };
        let old = slot.load(Ordering::Relaxed);
        // The side in use averages over about the last eight passes: quick
        // to follow a change of load, slow enough to ride over one
        // descheduled pass. A re-try of the other side is rare, so it
        // counts for half: a few re-tries notice that a core came back.
        let new = if old == 0 {
            per_node
        } else if self.exploring.load(Ordering::Relaxed) {
            old / 2 + per_node / 2
        } else {
            old - old / 8 + per_node / 8
        };
        slot.store(new.max(1), Ordering::Relaxed);
    }

    /// Passes long enough to choose for, and how many of them ran on the
    /// pool.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.passes.load(Ordering::Relaxed),
            self.pooled.load(Ordering::Relaxed),
        )
    }
}

/// How the worker pool was used over a run, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUse {
    /// Threads in the pool (1: no pool, every pass on the calling thread).
    pub threads: usize,
    /// Filter and Score passes over at least 512 nodes.
    pub long_passes: u64,
    /// Of those, the ones the pool ran.
    pub pooled_passes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(gate: &ParallelGate, caller_us: u64, pool_us: u64, passes: usize) -> Vec<Side> {
        (0..passes)
            .map(|_| {
                let side = gate.choose(1000);
                let us = match side {
                    Side::Caller => caller_us,
                    Side::Pool => pool_us,
                };
                gate.record(side, 1000, Duration::from_micros(us));
                side
            })
            .collect()
    }

    #[test]
    fn short_passes_stay_on_the_caller_and_are_not_counted() {
        let gate = ParallelGate::default();
        assert_eq!(gate.choose(PARALLEL_THRESHOLD - 1), Side::Caller);
        assert_eq!(gate.counts(), (0, 0));
    }

    #[test]
    fn both_sides_are_measured_first() {
        let gate = ParallelGate::default();
        let sides = run(&gate, 100, 100, 2);
        assert_eq!(sides, vec![Side::Pool, Side::Caller]);
    }

    #[test]
    fn a_pool_that_pays_is_kept_with_rare_retries_of_the_caller() {
        let gate = ParallelGate::default();
        let sides = run(&gate, 100, 55, 200);
        let caller = sides[2..].iter().filter(|s| **s == Side::Caller).count();
        assert!(caller <= 200 / EXPLORE_EVERY as usize + 1, "{caller}");
        assert_eq!(sides.last(), Some(&Side::Pool));
    }

    #[test]
    fn a_pool_that_does_not_pay_by_the_margin_is_left_alone() {
        let gate = ParallelGate::default();
        // 5 % cheaper on the pool is within the margin: not worth a core.
        let sides = run(&gate, 100, 95, 200);
        let pooled = sides[2..].iter().filter(|s| **s == Side::Pool).count();
        assert!(pooled <= 200 / EXPLORE_EVERY as usize + 1, "{pooled}");
        let (passes, pooled_all) = gate.counts();
        assert_eq!(passes, 200);
        assert_eq!(pooled_all as usize, pooled + 1);
    }

    #[test]
    fn the_gate_follows_a_change_of_load() {
        let gate = ParallelGate::default();
        // The second core is free: the pool wins.
        let before = run(&gate, 100, 55, 100);
        assert_eq!(before.last(), Some(&Side::Pool));
        // Another process takes the second core: pool passes wait for it.
        let after = run(&gate, 100, 400, 300);
        let tail = &after[200..];
        let pooled = tail.iter().filter(|s| **s == Side::Pool).count();
        assert!(pooled <= 100 / EXPLORE_EVERY as usize + 1, "{pooled}");
        // The core comes back: the re-tries notice and the pool wins again.
        let back = run(&gate, 100, 55, 400);
        let tail = &back[300..];
        let caller = tail.iter().filter(|s| **s == Side::Caller).count();
        assert!(caller <= 100 / EXPLORE_EVERY as usize + 1, "{caller}");
    }
}
