//! Runs a scenario and prints where every pod went, one `pod node` line per
//! pod (`-` for a pod left unscheduled), sorted by pod: two builds given the
//! same scenario and seed can be compared with `diff` to show that a change
//! moved no pod.
//!
//! `cargo run -p strata-simulator --example placements -- small [--seed 7]
//! [--equivalence-cache N]` (0 turns the engine's per-template caches and
//! its incremental fast path off, to compare against them).

use strata_simulator::{RunOptions, Scenario, Simulation};

fn main() {
    let mut name = None;
    let mut seed = None;
    let mut equivalence_cache = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) => seed = Some(s),
                None => {
                    eprintln!("error: --seed needs a number");
                    std::process::exit(2);
                }
            },
            "--equivalence-cache" => match args.next().and_then(|s| s.parse().ok()) {
                Some(n) => equivalence_cache = Some(n),
                None => {
                    eprintln!("error: --equivalence-cache needs a number");
                    std::process::exit(2);
                }
            },
            _ if name.is_none() => name = Some(a),
            other => {
                eprintln!("error: unexpected argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let name = name.unwrap_or_else(|| "demo".to_owned());
    let scenario = match Scenario::load(&name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let opts = RunOptions {
        seed,
        equivalence_cache,
        ..RunOptions::default()
    };
    let mut sim = match Simulation::new(scenario, &opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    sim.run();
    for (pod, node) in sim.placements() {
        println!("{pod} {}", node.as_deref().unwrap_or("-"));
    }
}
