//! The openb replay on a small sample of the trace (every 10th node of the
//! Alibaba GPU cluster, pods drawn to 130% of its GPU capacity): every
//! policy runs on the same pods, the engine's invariants hold, and the
//! fragmentation-aware policy allocates at least as much GPU capacity as the
//! random baseline. The full replay is run from the CLI
//! (`strata replay-openb`), not in tests.

use std::path::PathBuf;
use strata_simulator::openb::{OpenbOptions, ReplayPolicy, run_openb};

fn data_dir() -> Option<PathBuf> {
    let d = PathBuf::from(
        std::env::var("STRATA_OPENB_DIR").unwrap_or_else(|_| "/work/shared/data/openb".into()),
    );
    d.join("openb_node_list_all_node.csv").exists().then_some(d)
}

#[test]
fn small_sample_replay_ranks_policies() {
    let Some(dir) = data_dir() else {
        eprintln!("openb data not found; set STRATA_OPENB_DIR to run this test");
        return;
    };
    let mut opts = OpenbOptions::new(dir);
    opts.node_stride = 10;
    opts.seed = 7;
    let report = run_openb(&opts).expect("replay runs");
    println!("{}", report.to_table());
    assert_eq!(report.results.len(), 3);
    for r in &report.results {
        assert_eq!(r.pods, report.pods, "every policy sees the same pods");
        assert_eq!(r.scheduled + r.failed, r.pods);
        assert_eq!(r.double_binds, 0);
        assert!(
            r.cache_inconsistency.is_none(),
            "{:?}",
            r.cache_inconsistency
        );
        assert!(
            r.at_end.allocated_percent <= 100.0 + 1e-9,
            "never beyond capacity"
        );
        assert!(r.first_failure.is_some(), "130% of capacity cannot all fit");
        assert!(r.published.is_some());
    }
    let get = |p: ReplayPolicy| {
        report
            .results
            .iter()
            .find(|r| r.policy == p)
            .unwrap()
            .at_end
            .allocated_percent
    };
    let (fgd, random) = (get(ReplayPolicy::Fragmentation), get(ReplayPolicy::Random));
    assert!(
        fgd >= random,
        "fragmentation-aware {fgd:.2}% vs random {random:.2}%"
    );
}
