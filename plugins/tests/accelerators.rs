//! The accelerator plugins inside the real engine: bad input (a share above
//! 100%, an unknown DeviceClass, CEL that does not compile, a claim in
//! another namespace) gives the pod an Unschedulable condition and a
//! FailedScheduling event naming the problem, while the scheduler keeps
//! scheduling the good pods, whose device assignments and claim statuses
//! are written before they are bound. The default profile serves HAMi pods
//! and DRA pods unchanged, and a failed bind leaves nothing allocated for
//! the unbound pod.

use k8s_openapi::api::resource::v1 as resv1;
use parking_lot::Mutex;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Upcoming binds to refuse (as a transient API error).
    fail_binds: AtomicUsize,
}

#[async_trait::async_trait]
impl ClusterPort for Cluster {
    async fn bind(&self, pod: &PodInfo, node: Sym) -> Result<(), BindError> {
        if self
            .fail_binds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BindError::Other("apiserver unavailable".into()));
        }
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
    ) -> Result<Option<String>, ClusterError> {
        self.claims.lock().push(c.clone());
        Ok(None)
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

/// The default profile (no plugin configuration at all) over `store`.
fn default_profile(
    cluster: Arc<Cluster>,
    store: Arc<DraStore>,
    clock: Arc<ManualClock>,
    rt: &tokio::runtime::Runtime,
) -> Scheduler {
    let mut cfg = SchedulerConfig::default_with_name("strata-scheduler");
    cfg.parallelism = 1;
    let mut reg = strata_plugins::registry();
    dra::register(&mut reg, store);
    Scheduler::new(
        cfg,
        &reg,
        &strata_plugins::default_plugins(),
        cluster,
        clock,
        rt.handle().clone(),
    )
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Schedules until nothing is ready and no binding runs.
fn drain(sched: &mut Scheduler) -> Vec<(String, CycleResult)> {
    let mut out = Vec::new();
    loop {
        while let Some(o) = sched.schedule_one() {
            out.push((o.pod.name.to_string(), o.result));
        }
        if sched.in_flight() > 0 && sched.wait_for_completion(Duration::from_secs(5)) > 0 {
            continue;
        }
        if sched.queue_stats().active == 0 && sched.in_flight() == 0 {
            return out;
        }
    }
}

/// A node as HAMi's device plugin registers it: `nvidia.com/gpu` counts
/// split slots (2 GPUs x 10), the devices are in HAMi's register annotation,
/// and no share resource is in allocatable.
fn hami_node(name: &str) -> k8s_openapi::api::core::v1::Node {
    let mut n = testing::node(name)
        .alloc("cpu", "32")
        .alloc("memory", "128Gi")
        .alloc("nvidia.com/gpu", "20")
        .build();
    n.metadata.annotations = Some(
        [(
            "hami.io/node-nvidia-register".to_owned(),
            format!(
                "GPU-{name}-0,10,32768,100,NVIDIA-Tesla V100-PCIE-32GB,0,true:GPU-{name}-1,10,32768,100,NVIDIA-Tesla V100-PCIE-32GB,0,true:"
            ),
        )]
        .into(),
    );
    n
}

fn hami_pod(name: &str) -> PodInfo {
    testing::pod(name)
        .spec(
            json!({"containers": [{"name": "cuda", "resources": {"limits":
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}}}]}),
        )
        .build()
}

#[test]
fn default_profile_serves_hami_pods_and_leaves_plain_pods_alone() {
    let rt = runtime();
    let cluster = Arc::new(Cluster::default());
    let mut sched = default_profile(
        cluster.clone(),
        DraStore::new(),
        Arc::new(ManualClock::default()),
        &rt,
    );
    sched.handle_update(ClusterUpdate::NodeUpserted(Arc::new(hami_node("gpu-1"))));
    sched.handle_update(ClusterUpdate::NodeUpserted(Arc::new(
        testing::node("cpu-1")
            .alloc("cpu", "32")
            .alloc("memory", "128Gi")
            .build(),
    )));
    let plain = testing::pod("plain").req("cpu", "1").build();
    for p in [hami_pod("share-a"), hami_pod("share-b"), plain] {
        sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
    }
    let results = drain(&mut sched);
    assert!(
        results
            .iter()
            .all(|(_, r)| matches!(r, CycleResult::Scheduled { .. })),
        "{results:?}"
    );
    let binds: BTreeMap<String, String> = cluster.binds.lock().iter().cloned().collect();
    assert_eq!(binds["default/share-a"], "gpu-1");
    assert_eq!(binds["default/share-b"], "gpu-1");
    assert!(binds.contains_key("default/plain"));
    // HAMi's annotations, written before the bind; none on the plain pod.
    let patches = cluster.patches.lock().clone();
    assert_eq!(patches.len(), 2, "{patches:?}");
    for (pod, a) in &patches {
        assert!(pod.starts_with("default/share-"), "{pod}");
        let alloc = &a["hami.io/vgpu-devices-to-allocate"];
        assert!(
            alloc.starts_with("GPU-gpu-1-") && alloc.ends_with(",NVIDIA,3000,30:;"),
            "{alloc}"
        );
        assert_eq!(a["hami.io/vgpu-node"], "gpu-1");
        assert_eq!(a["hami.io/bind-phase"], "allocating");
    }
    // Shares of one device: binpack puts both on the same GPU.
    assert_eq!(
        patches[0].1["hami.io/vgpu-devices-to-allocate"],
        patches[1].1["hami.io/vgpu-devices-to-allocate"]
    );
}

#[test]
fn default_profile_rejects_a_share_no_device_can_hold() {
    let rt = runtime();
    let cluster = Arc::new(Cluster::default());
    let mut sched = default_profile(
        cluster.clone(),
        DraStore::new(),
        Arc::new(ManualClock::default()),
        &rt,
    );
    sched.handle_update(ClusterUpdate::NodeUpserted(Arc::new(hami_node("gpu-1"))));
    let big = testing::pod("big")
        .spec(
            json!({"containers": [{"name": "cuda", "resources": {"limits":
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "40000"}}}]}),
        )
        .build();
    sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(big)));
    let results = drain(&mut sched);
    match &results[..] {
        [(_, CycleResult::Unschedulable { message })] => {
            // Devices says why; NodeResourcesFit does not object to the
            // share resource no node advertises.
            assert!(
                !message.contains("Insufficient nvidia.com/gpumem"),
                "{message}"
            );
            assert!(
                message.contains("Insufficient nvidia.com/gpu devices"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(cluster.binds.lock().is_empty());
}

/// The claims written for `name`, in order: (devices allocated, consumers).
fn claim_history(cluster: &Cluster, name: &str) -> Vec<(usize, Vec<String>)> {
    cluster
        .claims
        .lock()
        .iter()
        .filter(|c| c.metadata.name.as_deref() == Some(name))
        .map(|c| {
            let st = c.status.as_ref();
            (
                st.and_then(|s| s.allocation.as_ref())
                    .and_then(|a| a.devices.as_ref())
                    .and_then(|d| d.results.as_ref())
                    .map_or(0, Vec::len),
                st.and_then(|s| s.reserved_for.as_ref())
                    .map(|r| r.iter().map(|x| x.name.clone()).collect())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn failed_bind_undoes_the_claim_and_the_retry_rewrites_everything() {
    let rt = runtime();
    let cluster = Arc::new(Cluster::default());
    let store = DraStore::new();
    let clock = Arc::new(ManualClock::default());
    let mut sched = default_profile(cluster.clone(), store.clone(), clock.clone(), &rt);
    sched.handle_update(ClusterUpdate::NodeUpserted(Arc::new(hami_node("gpu-1"))));
    store.upsert_class(
        serde_json::from_value(json!({"metadata": {"name": "gpu.example.com"},
            "spec": {"selectors": [{"cel": {"expression": "device.driver == \"gpu.example.com\""}}]}}))
        .unwrap(),
    );
    store.upsert_slice(
        serde_json::from_value(json!({"metadata": {"name": "gpu-1-dra"}, "spec": {"driver": "gpu.example.com",
            "nodeName": "gpu-1", "pool": {"name": "gpu-1", "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "dra-0"}]}}))
        .unwrap(),
    );
    store.upsert_claim(claim("c", "gpu.example.com", None));
    // One pod with a HAMi share and a DRA claim; its first bind fails.
    let p = testing::pod("p")
        .spec(json!({
            "containers": [{"name": "cuda", "resources": {"limits":
                {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "c"}]}))
        .build();
    cluster.fail_binds.store(1, Ordering::SeqCst);
    sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
    drain(&mut sched);
    assert!(cluster.binds.lock().is_empty());
    // Unreserve wrote the claim back without the pod (asynchronously).
    for _ in 0..500 {
        if claim_history(&cluster, "c").len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        claim_history(&cluster, "c"),
        [(1, vec!["p".to_owned()]), (0, vec![])],
        "allocated for p in PreBind, deallocated after the failed bind"
    );
    let c = store.claim("default", "c").unwrap();
    assert!(
        c.status.as_ref().is_none_or(|s| s.allocation.is_none()),
        "the store holds nothing for the unbound pod"
    );
    // After the backoff the retry binds and rewrites the claim and every
    // device annotation the first attempt wrote.
    clock.advance(Duration::from_secs(2));
    drain(&mut sched);
    assert_eq!(cluster.binds.lock().len(), 1);
    assert_eq!(
        claim_history(&cluster, "c").last().unwrap(),
        &(1, vec!["p".to_owned()])
    );
    let patches = cluster.patches.lock().clone();
    assert_eq!(patches.len(), 2, "one per attempt");
    let (first, second) = (&patches[0].1, &patches[1].1);
    assert!(
        first.keys().all(|k| second.contains_key(k)),
        "the retry overwrites every annotation of the failed attempt: {first:?} / {second:?}"
    );
    assert_eq!(
        first["hami.io/vgpu-devices-to-allocate"], second["hami.io/vgpu-devices-to-allocate"],
        "the devices given back were taken again"
    );
}
