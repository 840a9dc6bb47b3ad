//! `strata`: the [`strata_cli::Strata`] entry point with the in-tree plugins
//! only. A vendor's binary is this file with `.plugin(NAME, factory)` calls.

fn main() -> std::process::ExitCode {
    strata_cli::Strata::new().run()
}
