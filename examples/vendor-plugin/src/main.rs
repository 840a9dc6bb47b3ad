//! The vendor's scheduler: `strata` with VendorHealth registered. Every
//! subcommand (run, simulate, check-config, replay-openb, kwok) knows it.

fn main() -> std::process::ExitCode {
    strata_cli::Strata::new()
        .plugin(vendor_health::NAME, vendor_health::factory)
        .run()
}
