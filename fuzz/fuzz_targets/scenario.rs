//! Simulator scenarios (`strata simulate FILE`, `strata kwok`):
//! `Scenario::parse` (YAML shape, pod templates compiled, sizes, times,
//! groups, DRA objects, the embedded scheduler configuration), then the
//! objects a run stamps from it: each pool's first and last node (name and
//! label patterns rendered) and, for a small scenario, every node and
//! arrival.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_simulator::Scenario;

/// Scenarios up to this size are expanded in full.
const EXPAND: usize = 2_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sc) = Scenario::parse(text, "fuzz.yaml") else {
        return;
    };
    for pool in &sc.node_pools {
        if pool.count > 0 {
            let _ = pool.node(0);
            let _ = pool.node(u64::from(pool.count) - 1);
        }
    }
    if sc.node_count() <= EXPAND {
        let _ = sc.nodes();
    }
    if sc.pod_count() <= EXPAND {
        let arrivals = sc.arrivals();
        assert!(arrivals.windows(2).all(|w| w[0].at <= w[1].at));
    }
});
