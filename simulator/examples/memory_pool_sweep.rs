//! Runs a memory-pool scenario with borrowing off, 10%, 25% and 40% in one
//! process and prints the audit table (see `docs/memory-pool.md`).
//!
//! `cargo run -p strata-simulator --example memory_pool_sweep [SCENARIO]`

use std::process::ExitCode;
use strata_simulator::memory_pool::{sweep, table};

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "simulator/scenarios/memory-pool-small.yaml".to_owned());
    let start = std::time::Instant::now();
    match sweep(&path, &[0, 1000, 2500, 4000]) {
        Ok(rows) => {
            println!("{path}\n");
            print!("{}", table(&rows));
            println!("\n({:.1} s)", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
