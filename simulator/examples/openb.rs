//! Replays the Alibaba openb trace with every policy and prints the table
//! (the same as `strata replay-openb`).
//!
//! `cargo run --release -p strata-simulator --example openb -- [DIR] [WORKLOAD] [SEED] [STRIDE]`
//! (defaults: /work/shared/data/openb, default, 42, 1; also `--json PATH`,
//! and `--trace-mix` to give the fragmentation-aware policy the trace's mix).

use strata_simulator::openb::{OpenbOptions, run_openb};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut json = None;
    let mut trace_mix = false;
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--json" {
            json = it.next().cloned();
        } else if a == "--trace-mix" {
            trace_mix = true;
        } else {
            pos.push(a.clone());
        }
    }
    let mut opts = OpenbOptions::new(
        pos.first()
            .cloned()
            .unwrap_or_else(|| "/work/shared/data/openb".into()),
    );
    if let Some(w) = pos.get(1) {
        opts.workload = w.clone();
    }
    if let Some(s) = pos.get(2).and_then(|s| s.parse().ok()) {
        opts.seed = s;
    }
    if let Some(s) = pos.get(3).and_then(|s| s.parse().ok()) {
        opts.node_stride = s;
    }
    opts.trace_mix = trace_mix;
    match run_openb(&opts) {
        Ok(r) => {
            print!("{}", r.to_table());
            if let Some(p) = json {
                let text = serde_json::to_string_pretty(&r).unwrap_or_default();
                if let Err(e) = std::fs::write(&p, text + "\n") {
                    eprintln!("error: writing {p}: {e}");
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
