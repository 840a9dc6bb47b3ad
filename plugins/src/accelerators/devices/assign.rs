//! The assignment written on a pod in PreBind, for the node agent, and read
//! back (after a restart, or for pods another scheduler placed) to rebuild
//! what each device holds.
//!
//! ## `strata.io/device-assignment`
//!
//! JSON, one entry per device a container holds:
//!
//! ```json
//! {"node": "gpu-node-7", "devices": [
//!   {"container": "main", "kind": "nvidia.com/gpu", "id": "GPU-3f2a",
//!    "memoryMiB": 3000, "cores": 30},
//!   {"container": "main", "kind": "huawei.com/Ascend910", "id": "npu-2",
//!    "memoryPercent": 100, "cores": 100, "exclusive": true}]}
//! ```
//!
//! `memoryMiB` is given for devices whose memory is known, `memoryPercent`
//! otherwise; `cores` is percent of the device; `exclusive` marks a device
//! held whole.
//!
//! ## HAMi's annotations
//!
//! For kinds with `hamiAssignmentAnnotation` (NVIDIA by default) the same
//! decision is also written in HAMi's format so HAMi's device plugin on the
//! node can set the devices up: `hami.io/vgpu-devices-to-allocate` and
//! `hami.io/vgpu-devices-allocated` hold `{uuid},{type},{memMiB},{cores}:`
//! per device and `;` after each container (in `spec.containers` order),
//! with `hami.io/vgpu-node`, `hami.io/vgpu-time`, `hami.io/bind-time` and
//! `hami.io/bind-phase: allocating`.

use super::args::KindSpec;
use super::model::{Grant, Grants, NodeDevices};
use super::request::PodAsk;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strata_scheduler::sdk::PodInfo;

/// Pod annotation with Strata's assignment.
pub const ASSIGNMENT_ANNOTATION: &str = "strata.io/device-assignment";
/// HAMi: the node the devices are on.
pub const HAMI_NODE: &str = "hami.io/vgpu-node";
/// HAMi: when the decision was made (unix seconds).
pub const HAMI_TIME: &str = "hami.io/vgpu-time";
/// HAMi: when binding started (unix seconds).
pub const HAMI_BIND_TIME: &str = "hami.io/bind-time";
/// HAMi: the node agent's phase (`allocating` until it sets devices up).
pub const HAMI_BIND_PHASE: &str = "hami.io/bind-phase";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Entry {
    container: String,
    kind: String,
    id: String,
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_percent: Option<u64>,
    cores: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    exclusive: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Assignment {
    node: String,
    devices: Vec<Entry>,
}

fn container_name(pod: &PodInfo, i: u16) -> String {
    pod.spec
        .raw
        .containers
        .get(i as usize)
        .map(|c| c.name.clone())
        .unwrap_or_else(|| format!("#{i}"))
}

/// The annotations to write for `grants` of `pod` on `node`.
pub fn annotations(
    pod: &PodInfo,
    node_name: &str,
    node: &NodeDevices,
    grants: &Grants,
    kinds: &[KindSpec],
    now_secs: u64,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let devices: Vec<Entry> = grants
        .iter()
        .filter_map(|g| {
            let d = node.devices.get(g.device as usize)?;
            Some(Entry {
                container: container_name(pod, g.container),
                kind: kinds.get(d.kind as usize)?.resource.to_owned(),
                id: d.id.to_string(),
                memory_mib: d.memory_known.then_some(g.memory),
                memory_percent: (!d.memory_known).then_some(g.memory),
                cores: g.cores,
                exclusive: g.exclusive,
            })
        })
        .collect();
    let a = Assignment {
        node: node_name.to_owned(),
        devices,
    };
    if let Ok(text) = serde_json::to_string(&a) {
        out.insert(ASSIGNMENT_ANNOTATION.to_owned(), text);
    }
    let mut hami_written = false;
    for (ki, k) in kinds.iter().enumerate() {
        let Some(ann) = k.hami_assignment.as_deref() else {
            continue;
        };
        let mine: Vec<&Grant> = grants
            .iter()
            .filter(|g| {
                node.devices
                    .get(g.device as usize)
                    .is_some_and(|d| d.kind as usize == ki)
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut text = String::new();
        for ci in 0..pod.spec.raw.containers.len() {
            for g in mine.iter().filter(|g| g.container as usize == ci) {
                let d = &node.devices[g.device as usize];
                text.push_str(&format!(
                    "{},{},{},{}:",
                    d.id, k.type_keyword, g.memory, g.cores
                ));
            }
            text.push(';');
        }
        out.insert(ann.to_owned(), text.clone());
        if let Some(al) = k.hami_allocated.as_deref() {
            out.insert(al.to_owned(), text);
        }
        hami_written = true;
    }
    if hami_written {
        out.insert(HAMI_NODE.to_owned(), node_name.to_owned());
        out.insert(HAMI_TIME.to_owned(), now_secs.to_string());
        out.insert(HAMI_BIND_TIME.to_owned(), now_secs.to_string());
        out.insert(HAMI_BIND_PHASE.to_owned(), "allocating".to_owned());
    }
    out
}

/// One device held, as read from a pod: container index, device id,
/// memory (device units), cores, exclusive.
pub type Held = (u16, String, u64, u32, bool);

/// Reads back what `pod` holds according to its annotations, if it has
/// any. `None`: no (readable) assignment.
pub fn read_back(pod: &PodInfo, kinds: &[KindSpec]) -> Option<Vec<Held>> {
    if let Some(text) = pod.annotations.get(ASSIGNMENT_ANNOTATION)
        && let Ok(a) = serde_json::from_str::<Assignment>(text)
    {
        if let Some(bound) = pod.bound_node
            && bound.as_str() != a.node
        {
            return None;
        }
        let names = &pod.spec.raw.containers;
        return Some(
            a.devices
                .into_iter()
                .map(|e| {
                    let ci = names
                        .iter()
                        .position(|c| c.name == e.container)
                        .unwrap_or(0) as u16;
                    let mem = e.memory_mib.or(e.memory_percent).unwrap_or(0);
                    (ci, e.id, mem, e.cores, e.exclusive)
                })
                .collect(),
        );
    }
    let mut out = Vec::new();
    let mut any = false;
    for k in kinds {
        let text = k
            .hami_assignment
            .as_deref()
            .and_then(|a| pod.annotations.get(a))
            .or_else(|| {
                k.hami_allocated
                    .as_deref()
                    .and_then(|a| pod.annotations.get(a))
            });
        let Some(text) = text else { continue };
        any = true;
        for (ci, ctr) in text.split(';').enumerate() {
            for dev in ctr.split(':') {
                let f: Vec<&str> = dev.split(',').map(str::trim).collect();
                if f.len() < 4 || f[0].is_empty() {
                    continue;
                }
                let mem = f[2].parse().ok()?;
                let cores: u32 = f[3].parse().ok()?;
                out.push((ci as u16, f[0].to_owned(), mem, cores, cores >= 100));
            }
        }
    }
    any.then_some(out)
}

/// Whether an assignment read back matches the pod's asks (same number of
/// devices per container), so a stale or foreign annotation is not trusted
/// blindly.
pub fn matches_ask(held: &[Held], ask: &PodAsk) -> bool {
    let want: u32 = ask.containers.iter().map(|c| c.count).sum();
    held.len() as u32 == want
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accelerators::devices::args::default_kinds;
    use crate::accelerators::devices::model::{DEVICES_ANNOTATION, NodeDevices};
    use serde_json::json;
    use strata_scheduler::testing;

    #[test]
    fn written_assignment_reads_back() {
        let kinds = default_kinds();
        let mut n = testing::node("n1").build();
        n.metadata.annotations = Some(
            [(
                DEVICES_ANNOTATION.to_owned(),
                r#"[{"kind":"nvidia.com/gpu","id":"GPU-a","memoryMiB":16000},{"kind":"nvidia.com/gpu","id":"GPU-b","memoryMiB":16000}]"#.to_owned(),
            )]
            .into(),
        );
        let c = testing::cache_with(vec![n], vec![]);
        let info = c.snapshot().nodes().next().unwrap().clone();
        let nd = NodeDevices::inventory(&info, &kinds);
        let pod = testing::pod("p")
            .spec(json!({"containers": [{"name": "a"}, {"name": "b"}]}))
            .build();
        let grants: Grants = [
            Grant {
                container: 0,
                device: 1,
                memory: 3000,
                cores: 30,
                exclusive: false,
            },
            Grant {
                container: 1,
                device: 1,
                memory: 5000,
                cores: 0,
                exclusive: false,
            },
        ]
        .into_iter()
        .collect();
        let ann = annotations(&pod, "n1", &nd, &grants, &kinds, 1705054796);
        assert_eq!(
            ann["hami.io/vgpu-devices-to-allocate"],
            "GPU-b,NVIDIA,3000,30:;GPU-b,NVIDIA,5000,0:;"
        );
        assert_eq!(ann[HAMI_NODE], "n1");
        assert_eq!(ann[HAMI_BIND_PHASE], "allocating");
        let v: serde_json::Value = serde_json::from_str(&ann[ASSIGNMENT_ANNOTATION]).unwrap();
        assert_eq!(v["devices"][1]["container"], "b");
        assert_eq!(v["devices"][0]["memoryMiB"], 3000);
        let mut annotated = pod.clone();
        annotated.annotations = std::sync::Arc::new(ann.clone());
        let back = read_back(&annotated, &kinds).unwrap();
        assert_eq!(
            back,
            vec![
                (0, "GPU-b".to_owned(), 3000, 30, false),
                (1, "GPU-b".to_owned(), 5000, 0, false)
            ]
        );
        // HAMi's annotation alone reads the same.
        let mut hami = pod.clone();
        hami.annotations = std::sync::Arc::new(
            [(
                "hami.io/vgpu-devices-allocated".to_owned(),
                ann["hami.io/vgpu-devices-to-allocate"].clone(),
            )]
            .into(),
        );
        assert_eq!(read_back(&hami, &kinds).unwrap(), back);
    }
}
