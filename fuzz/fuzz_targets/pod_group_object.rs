//! PodGroup objects as the adapter receives them from the API, of either
//! API (`strata.io/v1alpha1`, coscheduling's `scheduling.x-k8s.io`):
//! `PodGroupStore::upsert_object` (which runs `PodGroupSpec::from_strata`
//! or `from_coscheduling`), then what the plugin does with a stored spec,
//! `validate` against the default topology levels and `subgroup_of` for a
//! few pods' labels (the object's own `metadata.labels` among them).
//! Input: one JSON value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use strata_plugins::pod_group::PodGroupStore;
use strata_scheduler::labels::Labels;
use strata_topology::DEFAULT_LEVELS;

fuzz_target!(|data: &[u8]| {
    let Ok(obj) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let store = PodGroupStore::new();
    let Ok(key) = store.upsert_object(&obj) else {
        return;
    };
    let Some(Ok(spec)) = store.get(&key).map(|g| g.spec) else {
        return;
    };
    let levels = DEFAULT_LEVELS.map(String::from).to_vec();
    if spec.validate(&levels).is_err() {
        return;
    }
    let own: Option<BTreeMap<String, String>> = obj
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    let fixed = [
        ("role", "prefill"),
        ("role", "decode"),
        ("strata.io/subgroup", "prefill"),
    ];
    for labels in own
        .iter()
        .map(|m| Labels::from_map(Some(m)))
        .chain(fixed.iter().map(|&(k, v)| Labels::from_pairs([(k, v)])))
    {
        let _ = spec.subgroup_of(&labels);
    }
});
