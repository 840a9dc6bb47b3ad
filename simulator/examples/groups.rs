//! Runs a scenario group-aware and pod by pod and prints both reports and
//! the group comparison (what `strata simulate SCENARIO --groups` prints).
//!
//! `cargo run --release -p strata-simulator --example groups -- training-20k-cards [--no-pod-by-pod]`

use strata_simulator::{RunOptions, Scenario, groups};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "gangs-small".to_owned());
    let pod_by_pod = !args.any(|a| a == "--no-pod-by-pod");
    let scenario = match Scenario::load(&name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let opts = RunOptions::default();
    match groups::compare(scenario, &opts, "nvidia.com/gpu", pod_by_pod) {
        Ok(c) => {
            println!("== group-aware");
            print!("{}", c.group_aware.0.to_table());
            if let Some((r, _)) = &c.pod_by_pod {
                println!("== pod-by-pod");
                print!("{}", r.to_table());
            }
            print!("{}", c.to_table());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
