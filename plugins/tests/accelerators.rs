//! The accelerator plugins inside the real engine: bad input (a share above
//! 100%, an unknown DeviceClass, CEL that does not compile, a claim in
//! another namespace) gives the pod an Unschedulable condition and a
//! FailedScheduling event naming the problem, while the scheduler keeps
//! scheduling the good pods, whose device assignments and claim statuses
//! are written before they are bound.

use k8s_openapi::api::resource::v1 as resv1;
use parking_lot::Mutex;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use strata_plugins::dra::{self, store::DraStore};
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::{
    BindError, ClusterError, ClusterPort, ClusterUpdate, PodCondition, PodEvent,
};
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::{CycleResult, Scheduler};
use strata_scheduler::intern::Sym;
use strata_scheduler::model::PodInfo;
use strata_scheduler::testing;

#[derive(Default)]
struct Cluster {
    binds: Mutex<Vec<(String, String)>>,
    conditions: Mutex<Vec<(String, PodCondition)>>,
    events: Mutex<Vec<PodEvent>>,
    patches: Mutex<Vec<(String, BTreeMap<String, String>)>>,
    claims: Mutex<Vec<resv1::ResourceClaim>>,
}

#[async_trait::async_trait]
impl ClusterPort for Cluster {
    async fn bind(&self, pod: &PodInfo, node: Sym) -> Result<(), BindError> {
        self.binds.lock().push((pod.key(), node.to_string()));
        Ok(())
    }
    async fn update_pod_condition(
        &self,
        pod: &PodInfo,
        c: PodCondition,
    ) -> Result<(), ClusterError> {
        self.conditions.lock().push((pod.key(), c));
        Ok(())
    }
    async fn delete_pod(&self, _pod: &PodInfo, _reason: &str) -> Result<(), ClusterError> {
        Ok(())
    }
    fn record_event(&self, e: PodEvent) {
        self.events.lock().push(e);
    }
    async fn patch_pod_annotations(
        &self,
        pod: &PodInfo,
        a: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        self.patches.lock().push((pod.key(), a.clone()));
        Ok(())
    }
    async fn update_resource_claim_status(
        &self,
        c: &resv1::ResourceClaim,
    ) -> Result<(), ClusterError> {
        self.claims.lock().push(c.clone());
        Ok(())
    }
}

const CONFIG: &str = r#"
parallelism: 1
seed: 3
profiles:
  - schedulerName: strata-scheduler
    plugins:
      multiPoint:
        enabled:
          - {name: Devices, weight: 2}
          - {name: DynamicResources}
    pluginConfig:
      - name: NodeResourcesFit
        args: {ignoredResources: [nvidia.com/gpumem, nvidia.com/gpumem-percentage, nvidia.com/gpucores]}
"#;

fn claim(name: &str, class: &str, selector: Option<&str>) -> resv1::ResourceClaim {
    let mut exactly = json!({"deviceClassName": class});
    if let Some(s) = selector {
        exactly["selectors"] = json!([{"cel": {"expression": s}}]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("claim-{name}")},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}
    }))
    .unwrap()
}

fn gpu_pod(name: &str, limits: serde_json::Value) -> PodInfo {
    testing::pod(name)
        .spec(json!({"containers": [{"name": "main", "resources": {"limits": limits}}]}))
        .build()
}

fn claim_pod(name: &str, claim: &str) -> PodInfo {
    testing::pod(name)
        .spec(json!({"resourceClaims": [{"name": "gpu", "resourceClaimName": claim}]}))
        .build()
}

#[test]
fn bad_input_becomes_conditions_and_events_and_good_pods_still_schedule() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster = Arc::new(Cluster::default());
    let store = DraStore::new();
    let mut reg = strata_plugins::registry();
    dra::register(&mut reg, store.clone());
    let cfg = SchedulerConfig::from_yaml(CONFIG).unwrap();
    let mut sched = Scheduler::new(
        cfg,
        &reg,
        &strata_plugins::default_plugins(),
        cluster.clone(),
        Arc::new(ManualClock::default()),
        rt.handle().clone(),
    )
    .unwrap();

    let mut n = testing::node("gpu-1").alloc("nvidia.com/gpu", "80").build();
    n.metadata.annotations = Some(
        [(
            "strata.io/devices".to_owned(),
            r#"[{"kind":"nvidia.com/gpu","id":"gpu-1-g","count":8,"groupSize":4,"model":"H800","memoryMiB":81920}]"#.to_owned(),
        )]
        .into(),
    );
    sched.handle_update(ClusterUpdate::NodeUpserted(Arc::new(n)));
    store.upsert_class(
        serde_json::from_value(json!({"metadata": {"name": "gpu.example.com"},
            "spec": {"selectors": [{"cel": {"expression": "device.driver == \"gpu.example.com\""}}]}}))
        .unwrap(),
    );
    store.upsert_slice(
        serde_json::from_value(json!({"metadata": {"name": "gpu-1-dra"}, "spec": {"driver": "gpu.example.com",
            "nodeName": "gpu-1", "pool": {"name": "gpu-1", "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "dra-0"}, {"name": "dra-1"}]}}))
        .unwrap(),
    );
    store.upsert_claim(claim("no-class", "tpu.example.com", None));
    store.upsert_claim(claim(
        "bad-cel",
        "gpu.example.com",
        Some("device.driver =="),
    ));
    store.upsert_claim(claim("ok", "gpu.example.com", None));

    let pods = [
        gpu_pod(
            "too-big-share",
            json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "150"}),
        ),
        claim_pod("unknown-class", "no-class"),
        claim_pod("bad-selector", "bad-cel"),
        claim_pod("other-namespace", "team-b/ok"),
        gpu_pod(
            "share",
            json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "20000", "nvidia.com/gpucores": "30"}),
        ),
        claim_pod("claimer", "ok"),
    ];
    for p in &pods {
        sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(p.clone())));
    }
    let mut results = Vec::new();
    for _ in 0..4 {
        while let Some(o) = sched.schedule_one() {
            results.push((o.pod.name.to_string(), o.result));
        }
        sched.wait_for_completion(Duration::from_secs(5));
    }
    while sched.in_flight() > 0 {
        sched.wait_for_completion(Duration::from_secs(5));
    }
    let scheduled: Vec<&str> = results
        .iter()
        .filter(|(_, r)| matches!(r, CycleResult::Scheduled { .. }))
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(scheduled, ["share", "claimer"], "{results:?}");
    let expect = [
        (
            "too-big-share",
            "nvidia.com/gpumem-percentage 150 is not a share of one device",
        ),
        (
            "unknown-class",
            "DeviceClass \"tpu.example.com\" does not exist",
        ),
        (
            "bad-selector",
            "CEL selector `device.driver ==` does not compile",
        ),
        ("other-namespace", "in another namespace"),
    ];
    // Conditions go out asynchronously.
    for _ in 0..200 {
        if cluster.conditions.lock().len() >= expect.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let conditions = cluster.conditions.lock().clone();
    let events = cluster.events.lock().clone();
    for (pod, text) in expect {
        let key = format!("default/{pod}");
        let c = conditions
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no condition for {pod}"));
        assert!(!c.scheduled && c.reason == "Unschedulable", "{c:?}");
        assert!(c.message.contains(text), "{pod}: {}", c.message);
        let e = events
            .iter()
            .find(|e| &*e.name == pod && e.reason == "FailedScheduling")
            .unwrap();
        assert!(e.message.contains(text), "{}", e.message);
    }
    // The good pods' decisions were written before their binds.
    let patches = cluster.patches.lock().clone();
    assert_eq!(patches.len(), 1);
    assert!(
        patches[0].1["hami.io/vgpu-devices-to-allocate"].starts_with("gpu-1-g-"),
        "{patches:?}"
    );
    let claims = cluster.claims.lock().clone();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("ok"));
    let binds = cluster.binds.lock().clone();
    assert_eq!(binds.len(), 2);
}
