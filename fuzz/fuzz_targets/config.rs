//! The scheduler configuration as `strata check-config` and `strata run`
//! read it: the YAML shape and global checks
//! (`SchedulerConfig::from_yaml`), every profile resolved against the
//! in-tree plugins (each plugin's args parsed by its own factory), the
//! adapter's options (`AdapterOptions::from_config`: leaderElection,
//! clientConnection, bind addresses) and the queue timing derived from it.
//! Errors are fine; a panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_scheduler::config::SchedulerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = SchedulerConfig::from_yaml(text) else {
        return;
    };
    let _ = strata_simulator::config_check::resolve_profiles(&cfg);
    let _ = strata_kube::AdapterOptions::from_config(&cfg);
    let _ = cfg.queue_settings();
});
