//! Pods and Nodes as the adapter's informers receive them: a JSON list of
//! objects, each by `kind` through the adapter's conversion
//! (`convert::pod_update`, which compiles the pod with `PodInfo::compile`,
//! or `convert::node_update`) into the cache (`Cache::upsert_node`,
//! `Cache::add_pod` for a bound pod, `remove_pod` for a finished one), as
//! the engine applies those updates. A pod that does
//! not compile becomes `PodInvalid`, a node whose allocatable does not
//! parse is refused: both fine. Besides no panic, the cache stays
//! consistent (`Cache::check_consistency`).
#![no_main]

use k8s_openapi::api::core::v1::{Node, Pod};
use libfuzzer_sys::fuzz_target;
use strata_kube::convert::{PriorityClasses, node_update, pod_update};
use strata_scheduler::cache::Cache;
use strata_scheduler::cluster::ClusterUpdate;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Array(objects)) = serde_json::from_slice(data) else {
        return;
    };
    let priorities = PriorityClasses::default();
    let mut cache = Cache::new();
    for obj in objects {
        match obj.get("kind").and_then(|k| k.as_str()) {
            Some("Node") => {
                let Ok(node) = serde_json::from_value::<Node>(obj) else {
                    continue;
                };
                if let ClusterUpdate::NodeUpserted(node) = node_update(node) {
                    let _ = cache.upsert_node(&node);
                }
            }
            Some("Pod") => {
                let Ok(pod) = serde_json::from_value::<Pod>(obj) else {
                    continue;
                };
                if let ClusterUpdate::PodUpserted(pod) = pod_update(pod, &priorities)
                    && pod.bound_node.is_some()
                {
                    if pod.terminal {
                        cache.remove_pod(&pod.uid);
                    } else {
                        cache.add_pod(pod);
                    }
                }
            }
            _ => {}
        }
    }
    cache.check_consistency().expect("the cache is consistent");
});
