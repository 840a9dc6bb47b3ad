//! A PodGroup defined inline by its member pods' annotations
//! (`strata.io/min-member`, `strata.io/schedule-timeout-seconds`,
//! `strata.io/subgroups`, `strata.io/spread`, the topology levels):
//! `PodGroupSpec::from_annotations`, then what the plugin does with the
//! result, `validate` against the topology levels and `subgroup_of` the
//! pod's labels. Input: the line format of `strata_fuzz` (`annotation`,
//! `label`, `level`; no `level` means the default levels).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::Objects;
use strata_plugins::pod_group::PodGroupSpec;
use strata_scheduler::labels::Labels;
use strata_topology::DEFAULT_LEVELS;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let o = Objects::parse(text);
    let levels: Vec<String> = if o.levels.is_empty() {
        DEFAULT_LEVELS.map(String::from).to_vec()
    } else {
        o.levels.clone()
    };
    let Some(Ok(spec)) = PodGroupSpec::from_annotations(&o.annotations) else {
        return;
    };
    if spec.validate(&levels).is_ok() {
        let _ = spec.subgroup_of(&Labels::from_map(Some(&o.labels)));
    }
});
