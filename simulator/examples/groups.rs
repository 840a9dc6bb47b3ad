//! Runs a scenario group-aware and pod by pod and prints both reports and
//! the group comparison (what `strata simulate SCENARIO --groups` prints):
//! locality, fragmentation, groups placed per second, time to place a group
//! (scheduler time and virtual time, p50/p90/p99/max) and the partial-bind
//! check made at every bind. `--json PATH` also writes the comparison.
//!
//! `cargo run --release -p strata-simulator --example groups -- supernode-16k [--no-pod-by-pod] [--json out.json]`

use strata_simulator::{RunOptions, Scenario, groups};

fn main() {
    let mut name = None;
    let mut pod_by_pod = true;
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--no-pod-by-pod" => pod_by_pod = false,
            "--json" => match args.next() {
                Some(p) => json = Some(p),
                None => {
                    eprintln!("error: --json needs a file name");
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
    let name = name.unwrap_or_else(|| "gangs-small".to_owned());
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
            if let Some(path) = json {
                let text = match serde_json::to_string_pretty(&c) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: serializing the report: {e}");
                        std::process::exit(1);
                    }
                };
                if let Err(e) = std::fs::write(&path, text + "\n") {
                    eprintln!("error: writing {path}: {e}");
                    std::process::exit(1);
                }
            }
            if c.group_aware.1.partial_bind_violations > 0 {
                eprintln!("error: a group was partly bound group-aware (see above)");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
