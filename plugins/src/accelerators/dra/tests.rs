//! DynamicResources driven like the engine drives it, with claims, classes
//! and slices built from JSON as the API would send them.

use super::*;
use parking_lot::Mutex as PMutex;
use proptest::prelude::*;
use serde_json::{Value, json};
use strata_scheduler::cache::Cache;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::{BindError, PodCondition, PodEvent};
use strata_scheduler::sdk::{ClusterError, ClusterPort, Code, Sym, WaitingPods};
use strata_scheduler::testing;

#[derive(Default)]
struct Writes {
    claims: PMutex<Vec<resv1::ResourceClaim>>,
    /// Claim names whose status writes fail.
    fail: PMutex<Vec<String>>,
}

#[async_trait::async_trait]
impl ClusterPort for Writes {
    async fn bind(&self, _pod: &PodInfo, _node: Sym) -> Result<(), BindError> {
        Ok(())
    }
    async fn update_pod_condition(
        &self,
        _pod: &PodInfo,
        _c: PodCondition,
    ) -> Result<(), ClusterError> {
        Ok(())
    }
    async fn delete_pod(&self, _pod: &PodInfo, _reason: &str) -> Result<(), ClusterError> {
        Ok(())
    }
    fn record_event(&self, _e: PodEvent) {}
    async fn update_resource_claim_status(
        &self,
        claim: &resv1::ResourceClaim,
    ) -> Result<Option<String>, ClusterError> {
        let name = claim.metadata.name.clone().unwrap_or_default();
        if self.fail.lock().contains(&name) {
            return Err(ClusterError(format!("apiserver refused {name}")));
        }
        self.claims.lock().push(claim.clone());
        Ok(None)
    }
}

fn class(name: &str, selectors: &[&str]) -> resv1::DeviceClass {
    let sels: Vec<Value> = selectors
        .iter()
        .map(|e| json!({"cel": {"expression": e}}))
        .collect();
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"selectors": sels}}))
        .unwrap()
}

/// A slice on `node` with devices (name, attributes, capacity, shared).
fn slice(node: &str, devices: Value) -> resv1::ResourceSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{node}-gpu")},
        "spec": {"driver": "gpu.example.com", "nodeName": node,
                 "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                 "devices": devices}
    }))
    .unwrap()
}

fn gpus(node: &str, n: usize) -> resv1::ResourceSlice {
    let devs: Vec<Value> = (0..n)
        .map(|i| {
            json!({"name": format!("gpu-{i}"),
                   "attributes": {"model": {"string": if i < 2 { "A100" } else { "H100" }}, "numa": {"int": i / 2}},
                   "capacity": {"memory": {"value": "40Gi"}}})
        })
        .collect();
    slice(node, Value::Array(devs))
}

fn claim(ns: &str, name: &str, devices: Value) -> resv1::ResourceClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("claim-{ns}-{name}")},
        "spec": {"devices": devices}
    }))
    .unwrap()
}

fn one_gpu(name: &str) -> resv1::ResourceClaim {
    claim(
        "default",
        name,
        json!({"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}}]}),
    )
}

fn pod_using(name: &str, claims: &[&str]) -> PodInfo {
    let rc: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "resourceClaimName": c}))
        .collect();
    testing::pod(name)
        .spec(json!({"resourceClaims": rc}))
        .build()
}

struct Rig {
    plugin: DynamicResources,
    store: Arc<DraStore>,
    cache: Cache,
    writes: Arc<Writes>,
    domains: Arc<DeviceDomains>,
}

impl Rig {
    fn new(nodes: &[&str]) -> Rig {
        let store = DraStore::new();
        store.upsert_class(class(
            "gpu.example.com",
            &[r#"device.driver == "gpu.example.com""#],
        ));
        let writes = Arc::new(Writes::default());
        let handle = Handle {
            cluster: writes.clone(),
            waiting: WaitingPods::default(),
            clock: Arc::new(ManualClock::default()),
            scheduler_name: Sym::new("strata-scheduler"),
            preemption: Default::default(),
        };
        let cache = testing::cache_with(
            nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    testing::node(n)
                        .label("strata.io/supernode", &format!("sn{}", i % 2))
                        .build()
                })
                .collect(),
            vec![],
        );
        let domains = Arc::new(DeviceDomains::default());
        Rig {
            plugin: DynamicResources::with_domains(store.clone(), handle, domains.clone()),
            store,
            cache,
            writes,
            domains,
        }
    }

    fn pre_filter(&self, pod: &PodInfo) -> (CycleState, Status) {
        let mut st = CycleState::new();
        let r = self.plugin.pre_filter(&mut st, pod, self.cache.snapshot());
        (st, r.status)
    }

    fn node(&self, name: &str) -> &NodeInfo {
        self.cache.snapshot().node_by_name(Sym::new(name)).unwrap()
    }

    fn node_ref(&self, name: &str) -> NodeRef {
        NodeRef {
            id: self.node(name).id,
            name: Sym::new(name),
        }
    }

    fn filter(&self, st: &CycleState, pod: &PodInfo, node: &str) -> Status {
        self.plugin.filter(st, pod, self.node(node))
    }

    /// PreFilter, Reserve and PreBind on `node`; returns the cycle state.
    fn schedule(&self, pod: &PodInfo, node: &str) -> Result<CycleState, Status> {
        let (mut st, s) = self.pre_filter(pod);
        if !s.is_success() {
            return Err(s);
        }
        let f = self.filter(&st, pod, node);
        if !f.is_success() {
            return Err(f);
        }
        let s = self
            .plugin
            .reserve(&mut st, pod, self.node_ref(node), self.cache.snapshot());
        if !s.is_success() {
            return Err(s);
        }
        Ok(st)
    }

    fn bind(&self, st: &CycleState, pod: &PodInfo, node: &str) -> Status {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(self.plugin.pre_bind(st, pod, self.node_ref(node)))
    }
}

fn devices_of(c: &resv1::ResourceClaim) -> Vec<(String, String)> {
    c.status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .and_then(|d| d.results.as_ref())
        .map(|r| {
            r.iter()
                .map(|x| (x.request.clone(), x.device.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn allocates_by_identity_and_writes_status_in_prebind() {
    let rig = Rig::new(&["n1", "n2"]);
    rig.store.upsert_slice(gpus("n1", 4));
    rig.store.upsert_claim(one_gpu("c1"));
    let p = pod_using("p", &["c1"]);
    let (st, s) = rig.pre_filter(&p);
    assert!(s.is_success(), "{s}");
    assert!(rig.filter(&st, &p, "n1").is_success());
    let s2 = rig.filter(&st, &p, "n2");
    assert_eq!(s2.code(), Code::Unschedulable);
    assert_eq!(s2.message(), "cannot allocate all claims");
    let st = rig.schedule(&p, "n1").unwrap();
    assert!(rig.bind(&st, &p, "n1").is_success());
    let written = rig.writes.claims.lock().clone();
    assert_eq!(written.len(), 1);
    let w = &written[0];
    assert_eq!(devices_of(w), vec![("gpu".to_owned(), "gpu-0".to_owned())]);
    let st2 = w.status.as_ref().unwrap();
    assert_eq!(st2.reserved_for.as_ref().unwrap()[0].uid, "uid-p");
    let sel = st2
        .allocation
        .as_ref()
        .unwrap()
        .node_selector
        .as_ref()
        .unwrap();
    assert_eq!(
        sel.node_selector_terms[0].match_fields.as_ref().unwrap()[0]
            .values
            .as_ref()
            .unwrap(),
        &vec!["n1".to_owned()]
    );
    // The store holds it now: the claim is honoured, not reallocated.
    let again = rig.store.claim("default", "c1").unwrap();
    assert_eq!(
        devices_of(&again),
        vec![("gpu".to_owned(), "gpu-0".to_owned())]
    );
    let (st, _) = rig.pre_filter(&p);
    assert!(
        rig.filter(&st, &p, "n2").is_rejected(),
        "allocated on n1 only"
    );
    assert!(rig.filter(&st, &p, "n1").is_success());
}

#[test]
fn count_all_match_attribute_and_first_available() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(gpus("n1", 4));
    // Two devices with the same numa: the constraint holds across requests.
    rig.store.upsert_claim(claim(
        "default",
        "pair",
        json!({"requests": [
                {"name": "a", "exactly": {"deviceClassName": "gpu.example.com",
                    "selectors": [{"cel": {"expression": "device.attributes[\"gpu.example.com\"].model == \"H100\""}}]}},
                {"name": "b", "exactly": {"deviceClassName": "gpu.example.com"}}],
               "constraints": [{"matchAttribute": "gpu.example.com/numa"}]}),
    ));
    let p = pod_using("p", &["pair"]);
    let st = rig.schedule(&p, "n1").unwrap();
    assert!(rig.bind(&st, &p, "n1").is_success());
    let w = rig.writes.claims.lock()[0].clone();
    assert_eq!(
        devices_of(&w),
        vec![("a".into(), "gpu-2".into()), ("b".into(), "gpu-3".into())]
    );
    // firstAvailable: 4 devices is impossible now, 2 are not.
    rig.store.upsert_claim(claim(
        "default",
        "flex",
        json!({"requests": [{"name": "r", "firstAvailable": [
            {"name": "big", "deviceClassName": "gpu.example.com", "count": 4},
            {"name": "small", "deviceClassName": "gpu.example.com", "count": 2}]}]}),
    ));
    let q = pod_using("q", &["flex"]);
    let st = rig.schedule(&q, "n1").unwrap();
    assert!(rig.bind(&st, &q, "n1").is_success());
    let w = rig.writes.claims.lock()[1].clone();
    assert_eq!(
        devices_of(&w),
        vec![
            ("r/small".into(), "gpu-0".into()),
            ("r/small".into(), "gpu-1".into())
        ]
    );
    // All: every matching device on the node, none free now.
    rig.store.upsert_claim(claim(
        "default",
        "all",
        json!({"requests": [{"name": "r", "exactly": {"deviceClassName": "gpu.example.com", "allocationMode": "All"}}]}),
    ));
    let a = pod_using("a", &["all"]);
    assert!(rig.schedule(&a, "n1").is_err());
}

#[test]
fn admin_access_and_consumable_capacity() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(slice(
        "n1",
        json!([{"name": "shared", "allowMultipleAllocations": true,
                "capacity": {"memory": {"value": "40Gi", "requestPolicy": {"default": "8Gi",
                    "validRange": {"min": "4Gi", "step": "4Gi"}}}}}]),
    ));
    let share = |name: &str, mem: &str| {
        claim(
            "default",
            name,
            json!({"requests": [{"name": "m", "exactly": {"deviceClassName": "gpu.example.com",
            "capacity": {"requests": {"memory": mem}}}}]}),
        )
    };
    rig.store.upsert_claim(share("s1", "15Gi"));
    rig.store.upsert_claim(share("s2", "16Gi"));
    rig.store.upsert_claim(share("s3", "10Gi"));
    for n in ["s1", "s2"] {
        let p = pod_using(&format!("p-{n}"), &[n]);
        let st = rig.schedule(&p, "n1").unwrap();
        assert!(rig.bind(&st, &p, "n1").is_success());
    }
    let w = rig.writes.claims.lock()[0].clone();
    let r = &w
        .status
        .unwrap()
        .allocation
        .unwrap()
        .devices
        .unwrap()
        .results
        .unwrap()[0];
    assert_eq!(
        r.consumed_capacity.as_ref().unwrap()["memory"].0,
        "17179869184",
        "15Gi rounds up to a 4Gi step"
    );
    assert!(r.share_id.is_some());
    // 16 + 16 = 32Gi used: 10Gi rounds to 12Gi and does not fit.
    let p3 = pod_using("p3", &["s3"]);
    assert!(rig.schedule(&p3, "n1").is_err());
    // Admin access takes an in-use device without using it up.
    rig.store.upsert_slice(gpus("n1", 1));
    rig.store.upsert_claim(one_gpu("user"));
    let u = pod_using("u", &["user"]);
    let st = rig.schedule(&u, "n1").unwrap();
    assert!(rig.bind(&st, &u, "n1").is_success());
    rig.store.upsert_claim(claim(
        "default",
        "admin",
        json!({"requests": [{"name": "r", "exactly": {"deviceClassName": "gpu.example.com", "adminAccess": true,
            "selectors": [{"cel": {"expression": "device.attributes[\"gpu.example.com\"].model == \"A100\""}}]}}]}),
    ));
    let a = pod_using("a", &["admin"]);
    assert!(rig.schedule(&a, "n1").is_ok());
}

#[test]
fn unreserve_returns_exactly_what_reserve_took() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(gpus("n1", 1));
    rig.store.upsert_claim(one_gpu("a"));
    rig.store.upsert_claim(one_gpu("b"));
    let pa = pod_using("pa", &["a"]);
    let pb = pod_using("pb", &["b"]);
    let mut st = rig.schedule(&pa, "n1").unwrap();
    assert!(
        rig.schedule(&pb, "n1").is_err(),
        "the only device is in flight for pa"
    );
    rig.plugin.unreserve(&mut st, &pa, rig.node_ref("n1"));
    assert!(rig.schedule(&pb, "n1").is_ok());
}

/// The claim's `reservedFor` uids.
fn consumers(c: &resv1::ResourceClaim) -> Vec<String> {
    c.status
        .as_ref()
        .and_then(|s| s.reserved_for.as_ref())
        .map(|r| r.iter().map(|x| x.uid.clone()).collect())
        .unwrap_or_default()
}

impl Rig {
    /// Unreserve as the engine runs it after a failed binding (inside its
    /// runtime), then waits for the undo writes to land.
    fn unreserve_after_failed_bind(&self, st: &mut CycleState, pod: &PodInfo, node: &str) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        {
            let _g = rt.enter();
            self.plugin.unreserve(st, pod, self.node_ref(node));
        }
        for _ in 0..500 {
            if !self.plugin.undo_pending() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("undo writes did not land");
    }
}

#[test]
fn failed_bind_deallocates_what_prebind_allocated() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(gpus("n1", 1));
    rig.store.upsert_claim(one_gpu("c1"));
    let p = pod_using("p", &["c1"]);
    let mut st = rig.schedule(&p, "n1").unwrap();
    assert!(rig.bind(&st, &p, "n1").is_success());
    assert_eq!(
        consumers(&rig.store.claim("default", "c1").unwrap()),
        ["uid-p"]
    );
    // Another pod's claim cannot have the only device now.
    rig.store.upsert_claim(one_gpu("c2"));
    let q = pod_using("q", &["c2"]);
    assert!(rig.schedule(&q, "n1").is_err());
    // The bind fails: the engine runs Unreserve.
    rig.unreserve_after_failed_bind(&mut st, &p, "n1");
    let c1 = rig.store.claim("default", "c1").unwrap();
    assert!(devices_of(&c1).is_empty(), "deallocated in the store");
    assert!(consumers(&c1).is_empty());
    let written = rig.writes.claims.lock().clone();
    assert_eq!(written.len(), 2, "allocation, then its undo");
    let undo = &written[1];
    assert_eq!(undo.metadata.name.as_deref(), Some("c1"));
    assert!(devices_of(undo).is_empty() && consumers(undo).is_empty());
    // The device is free again; the pod itself can be retried.
    assert!(rig.schedule(&q, "n1").is_ok());
    // Idempotent: a second Unreserve writes nothing more.
    rig.unreserve_after_failed_bind(&mut st, &p, "n1");
    assert_eq!(rig.writes.claims.lock().len(), 2);
}

#[test]
fn failed_bind_keeps_an_allocation_made_before_and_its_other_consumers() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(gpus("n1", 2));
    rig.store.upsert_claim(one_gpu("shared"));
    let a = pod_using("a", &["shared"]);
    let st = rig.schedule(&a, "n1").unwrap();
    assert!(rig.bind(&st, &a, "n1").is_success());
    // b shares the allocated claim; its bind fails.
    let b = pod_using("b", &["shared"]);
    let mut st = rig.schedule(&b, "n1").unwrap();
    assert!(rig.bind(&st, &b, "n1").is_success());
    assert_eq!(
        consumers(&rig.store.claim("default", "shared").unwrap()),
        ["uid-a", "uid-b"]
    );
    rig.unreserve_after_failed_bind(&mut st, &b, "n1");
    let c = rig.store.claim("default", "shared").unwrap();
    assert_eq!(consumers(&c), ["uid-a"], "only b is taken out");
    assert_eq!(
        devices_of(&c),
        vec![("gpu".to_owned(), "gpu-0".to_owned())],
        "a's allocation stays"
    );
    let written = rig.writes.claims.lock().clone();
    assert_eq!(consumers(written.last().unwrap()), ["uid-a"]);
}

#[test]
fn a_later_prebind_failure_undoes_the_claims_written_before_it() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(gpus("n1", 4));
    rig.store.upsert_claim(one_gpu("first"));
    rig.store.upsert_claim(one_gpu("second"));
    rig.writes.fail.lock().push("second".into());
    let p = pod_using("p", &["first", "second"]);
    let mut st = rig.schedule(&p, "n1").unwrap();
    let s = rig.bind(&st, &p, "n1");
    assert!(!s.is_success(), "the second write fails");
    assert!(s.message().contains("second"), "{s}");
    // "first" was written and assumed; Unreserve takes it back.
    assert!(!devices_of(&rig.store.claim("default", "first").unwrap()).is_empty());
    rig.unreserve_after_failed_bind(&mut st, &p, "n1");
    for c in ["first", "second"] {
        let c = rig.store.claim("default", c).unwrap();
        assert!(devices_of(&c).is_empty() && consumers(&c).is_empty());
    }
    // Nothing is in flight or in use: all four devices can be taken again.
    let four = claim(
        "default",
        "four",
        json!({"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com", "count": 4}}]}),
    );
    rig.store.upsert_claim(four);
    rig.writes.fail.lock().clear();
    let q = pod_using("q", &["four"]);
    let st = rig.schedule(&q, "n1").unwrap();
    assert!(rig.bind(&st, &q, "n1").is_success());
}

#[test]
fn templates_make_one_claim_per_pod() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(gpus("n1", 2));
    rig.store.upsert_template(
        serde_json::from_value(json!({"metadata": {"name": "t", "namespace": "default"},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}}]}}}}))
        .unwrap(),
    );
    let api = testing::pod("p")
        .spec(json!({"resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "t"}]}))
        .build_api();
    let p = PodInfo::compile(&api).unwrap();
    let (_, s) = rig.pre_filter(&p);
    assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
    assert!(
        s.message()
            .contains("waiting for the ResourceClaim made from template default/t"),
        "{s}"
    );
    assert_eq!(rig.store.instantiate_templates(&p).len(), 1);
    assert!(rig.store.instantiate_templates(&p).is_empty(), "made once");
    assert!(rig.schedule(&p, "n1").is_ok());
}

#[test]
fn bad_input_is_unresolvable_and_named() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(gpus("n1", 2));
    let cases = [
        (
            claim(
                "default",
                "c",
                json!({"requests": [{"name": "gpu", "exactly": {"deviceClassName": "tpu.example.com"}}]}),
            ),
            "ResourceClaim default/c, request \"gpu\": DeviceClass \"tpu.example.com\" does not exist",
        ),
        (
            claim(
                "default",
                "c",
                json!({"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com",
                "selectors": [{"cel": {"expression": "device.attributes[\"gpu.example.com\"].model =="}}]}}]}),
            ),
            "CEL selector `device.attributes[\"gpu.example.com\"].model ==` does not compile",
        ),
        (
            claim(
                "default",
                "c",
                json!({"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com",
                "selectors": [{"cel": {"expression": "device.attributes[\"gpu.example.com\"].model == \"B200\""}}]}}]}),
            ),
            "request \"gpu\": no device matches selector `device.attributes[\"gpu.example.com\"].model == \"B200\"` of the request",
        ),
    ];
    for (c, want) in cases {
        rig.store.upsert_claim(c);
        let (_, s) = rig.pre_filter(&pod_using("p", &["c"]));
        assert_eq!(s.code(), Code::UnschedulableAndUnresolvable, "{s}");
        assert!(
            s.message().contains(want),
            "{} does not contain {want}",
            s.message()
        );
    }
    let p = testing::pod("p")
        .spec(json!({"resourceClaims": [{"name": "x", "resourceClaimName": "other/c"}]}))
        .build();
    let (_, s) = rig.pre_filter(&p);
    assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
    assert!(s.message().contains("in another namespace"), "{s}");
    let (_, s) = rig.pre_filter(&pod_using("p", &["missing"]));
    assert!(
        s.message()
            .contains("ResourceClaim default/missing does not exist"),
        "{s}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// However pods come and go: a device is never in two claims unless it
    /// allows multiple allocations, and shared capacity is never exceeded.
    #[test]
    fn a_device_is_never_in_two_claims_unless_shareable(ops in proptest::collection::vec((0u8..4, 1u32..3, any::<bool>()), 1..24)) {
        let rig = Rig::new(&["n1"]);
        let mut devs: Vec<Value> = (0..4).map(|i| json!({"name": format!("gpu-{i}")})).collect();
        devs.push(json!({"name": "shared", "allowMultipleAllocations": true, "capacity": {"memory": {"value": "10Gi"}}}));
        rig.store.upsert_slice(slice("n1", Value::Array(devs)));
        let mut states: Vec<(PodInfo, CycleState)> = Vec::new();
        for (i, (kind, count, keep)) in ops.iter().enumerate() {
            let name = format!("c{i}");
            let spec = if *kind == 0 {
                json!({"requests": [{"name": "m", "exactly": {"deviceClassName": "gpu.example.com",
                    "selectors": [{"cel": {"expression": "device.allowMultipleAllocations"}}],
                    "capacity": {"requests": {"memory": format!("{}Gi", count * 3)}}}}]})
            } else {
                json!({"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu.example.com", "count": count,
                    "selectors": [{"cel": {"expression": "!device.allowMultipleAllocations"}}]}}]})
            };
            rig.store.upsert_claim(claim("default", &name, spec));
            let p = pod_using(&format!("p{i}"), &[&name]);
            if let Ok(mut st) = rig.schedule(&p, "n1") {
                if *keep {
                    prop_assert!(rig.bind(&st, &p, "n1").is_success());
                } else {
                    rig.plugin.unreserve(&mut st, &p, rig.node_ref("n1"));
                }
                states.push((p, st));
            }
            // Check: allocated claims in the store plus in-flight ones.
            let mut holders: FxHashMap<String, u32> = FxHashMap::default();
            let mut shared_gi: i128 = 0;
            for c in rig.store.allocated_claims() {
                for r in c.status.as_ref().unwrap().allocation.as_ref().unwrap().devices.as_ref().unwrap().results.iter().flatten() {
                    if r.device == "shared" {
                        shared_gi += crate::accelerators::dra::cel::quantity_milli(&r.consumed_capacity.as_ref().unwrap()["memory"].0).unwrap();
                    } else {
                        *holders.entry(r.device.clone()).or_default() += 1;
                    }
                }
            }
            for f in rig.plugin.inflight.lock().map.values() {
                for c in &f.devices {
                    let dev = &rig.plugin.caches.lock().index.devices[c.device as usize];
                    if dev.name != "shared" {
                        *holders.entry(dev.name.clone()).or_default() += 1;
                    }
                }
            }
            prop_assert!(holders.values().all(|n| *n <= 1), "{holders:?}");
            prop_assert!(shared_gi <= 10 * 1024 * 1024 * 1024 * 1000, "{shared_gi}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// However bindings fail after PreBind: what stays allocated and
    /// reserved is exactly what the pods that bound hold; every device a
    /// failed pod's claim had is free again.
    #[test]
    fn a_failed_binding_leaves_nothing_behind(ops in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..12)) {
        let rig = Rig::new(&["n1"]);
        rig.store.upsert_slice(gpus("n1", 4));
        rig.store.upsert_claim(one_gpu("shared"));
        let mut bound: Vec<String> = Vec::new();
        for (i, (own, fails)) in ops.iter().enumerate() {
            let claim = if *own {
                let name = format!("c{i}");
                rig.store.upsert_claim(one_gpu(&name));
                name
            } else {
                "shared".to_owned()
            };
            let p = pod_using(&format!("p{i}"), &[&claim]);
            let Ok(mut st) = rig.schedule(&p, "n1") else {
                continue; // no device left
            };
            prop_assert!(rig.bind(&st, &p, "n1").is_success());
            if *fails {
                rig.unreserve_after_failed_bind(&mut st, &p, "n1");
            } else {
                bound.push(p.uid.to_string());
            }
        }
        let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in rig.store.allocated_claims() {
            let consumers = consumers(&c);
            prop_assert!(!consumers.is_empty(), "allocated without a consumer: {:?}", c.metadata.name);
            for u in &consumers {
                prop_assert!(bound.contains(u), "{u} did not bind");
            }
            for (_, d) in devices_of(&c) {
                holders.entry(d).or_default().push(c.metadata.name.clone().unwrap_or_default());
            }
        }
        for (d, h) in &holders {
            prop_assert_eq!(h.len(), 1, "{} in {:?}", d, h);
        }
        // Every bound pod is reserved on its claim.
        let reserved: usize = rig.store.allocated_claims().iter().map(|c| consumers(c).len()).sum();
        prop_assert_eq!(reserved, bound.len());
        // And nothing is held in flight: the free devices can all be taken.
        let free = 4 - holders.len();
        if free > 0 {
            rig.store.upsert_claim(claim(
                "default",
                "rest",
                json!({"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com", "count": free}}]}),
            ));
            let q = pod_using("rest", &["rest"]);
            prop_assert!(rig.schedule(&q, "n1").is_ok());
        }
    }
}

/// Two pods share one claim; the second is scheduled while the first's
/// allocation is reserved but not yet written: it follows that allocation
/// to its node and joins the claim once the write lands (whatever the
/// order of the two PreBinds), and a given-up allocation is not followed.
#[test]
fn a_claim_being_allocated_is_shared_on_its_node() {
    let rig = Rig::new(&["n1", "n2"]);
    rig.store.upsert_slice(gpus("n1", 1));
    rig.store.upsert_slice(slice(
        "n2",
        json!([{"name": "gpu-9", "attributes": {"model": {"string": "A100"}}}]),
    ));
    rig.store.upsert_claim(one_gpu("shared"));
    let a = pod_using("a", &["shared"]);
    let b = pod_using("b", &["shared"]);
    let st_a = rig.schedule(&a, "n1").unwrap();
    // b sees the allocation in progress: only n1 fits, with no new device.
    let (st_b, s) = rig.pre_filter(&b);
    assert!(s.is_success(), "{s}");
    assert!(rig.filter(&st_b, &b, "n1").is_success());
    assert_eq!(rig.filter(&st_b, &b, "n2").code(), Code::Unschedulable);
    let st_b = rig.schedule(&b, "n1").unwrap();
    // b's PreBind waits for a's write, even when it starts first.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (sa, sb) = rt.block_on(async {
        let pb = rig.plugin.pre_bind(&st_b, &b, rig.node_ref("n1"));
        let pa = async {
            tokio::task::yield_now().await;
            rig.plugin.pre_bind(&st_a, &a, rig.node_ref("n1")).await
        };
        tokio::join!(pa, pb)
    });
    assert!(sa.is_success() && sb.is_success(), "{sa} / {sb}");
    let c = rig.store.claim("default", "shared").unwrap();
    assert_eq!(
        devices_of(&c),
        vec![("gpu".to_owned(), "gpu-0".to_owned())],
        "allocated once"
    );
    let mut who = consumers(&c);
    who.sort();
    assert_eq!(who, ["uid-a", "uid-b"]);
    let writes = rig.writes.claims.lock().clone();
    assert_eq!(writes.len(), 2);
    assert!(
        consumers(&writes[0]) == ["uid-a"],
        "the allocating pod writes first"
    );

    // Given up: c reserves another claim, d follows it, c is unreserved
    // before writing; d's Reserve refuses to follow a dropped allocation.
    rig.store.upsert_claim(one_gpu("other"));
    let c_pod = pod_using("c", &["other"]);
    let d_pod = pod_using("d", &["other"]);
    let mut st_c = rig.schedule(&c_pod, "n2").unwrap();
    let (mut st_d, s) = rig.pre_filter(&d_pod);
    assert!(s.is_success(), "{s}");
    assert!(rig.filter(&st_d, &d_pod, "n2").is_success());
    rig.plugin.unreserve(&mut st_c, &c_pod, rig.node_ref("n2"));
    let r = rig
        .plugin
        .reserve(&mut st_d, &d_pod, rig.node_ref("n2"), rig.cache.snapshot());
    assert_eq!(r.code(), Code::Unschedulable, "{r}");
    assert!(r.message().contains("gave it up"), "{r}");
}

/// ResourceSlice devices are counted per driver in the per-domain device
/// aggregates, and follow reserve, the written allocation, a failed bind's
/// undo and a slice that goes away.
#[test]
fn slice_devices_feed_the_domain_aggregates() {
    let rig = Rig::new(&["n1", "n2"]);
    rig.store.upsert_slice(gpus("n1", 4));
    rig.store.upsert_slice(gpus("n2", 2));
    let notify = || {
        for n in rig.cache.snapshot().nodes() {
            rig.plugin.node_changed(n, rig.cache.snapshot());
        }
    };
    notify();
    let free = |sn: &str| {
        rig.domains
            .domains("strata.io/supernode", "gpu.example.com")
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.domain == sn)
            .map(|d| (d.free.devices, d.free.capacity))
    };
    assert_eq!(free("sn0"), Some((4, 4)));
    assert_eq!(free("sn1"), Some((2, 2)));
    rig.store.upsert_claim(claim(
        "default",
        "two",
        json!({"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu.example.com", "count": 2}}]}),
    ));
    let p = pod_using("p", &["two"]);
    let mut st = rig.schedule(&p, "n1").unwrap();
    assert_eq!(free("sn0"), Some((2, 4)), "in flight counts as used");
    assert!(rig.bind(&st, &p, "n1").is_success());
    notify();
    assert_eq!(free("sn0"), Some((2, 4)), "written: still used");
    rig.unreserve_after_failed_bind(&mut st, &p, "n1");
    notify();
    assert_eq!(free("sn0"), Some((4, 4)), "undone: free again");
    rig.store.remove_slice("n2-gpu");
    notify();
    assert_eq!(
        rig.domains
            .cluster("gpu.example.com")
            .map(|f| (f.devices, f.capacity)),
        Some((4, 4))
    );
    rig.domains.check_consistency().unwrap();
}

/// A selector under the per-evaluation limit but costly over many devices
/// spends the pod's cycle budget: the pod waits with the claim, request and
/// budget named, and the next pod schedules as usual.
#[test]
fn selector_cost_is_bounded_per_cycle_and_named() {
    let rig = Rig::new(&["n1"]);
    rig.store.upsert_slice(gpus("n1", 64));
    let l: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    let l = format!("[{}]", l.join(", "));
    let heavy = format!("{l}.all(a, {l}.all(b, a + b >= 0))");
    let sel = cel::Env::new().compile(&heavy).unwrap();
    // Each evaluation fits; all the devices do not.
    assert!(sel.estimate < cost::MAX_EXPRESSION_COST);
    assert!(sel.estimate * 64 > cost::MAX_CYCLE_COST);
    let request = |name: &str, expr: &str| {
        claim(
            "default",
            name,
            json!({"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com",
                   "selectors": [{"cel": {"expression": expr}}]}}]}),
        )
    };
    rig.store.upsert_claim(request("heavy", &heavy));
    let (_, s) = rig.pre_filter(&pod_using("p", &["heavy"]));
    assert_eq!(s.code(), Code::Unschedulable, "{s}");
    let m = s.message();
    for want in [
        "ResourceClaim default/heavy, request \"gpu\"",
        cost::LIMIT_MARK,
        cel::CYCLE_MARK,
        &cost::MAX_CYCLE_COST.to_string(),
    ] {
        assert!(m.contains(want), "{m} does not contain {want}");
    }
    // The issue's selector is refused before any device is looked at.
    let l80: Vec<String> = (0..80).map(|i| i.to_string()).collect();
    let l80 = format!("[{}]", l80.join(", "));
    rig.store.upsert_claim(request(
        "nested",
        &format!("{l80}.all(a, {l80}.all(b, {l80}.all(c, a + b + c >= 0)))"),
    ));
    let (_, s) = rig.pre_filter(&pod_using("q", &["nested"]));
    assert_eq!(s.code(), Code::UnschedulableAndUnresolvable, "{s}");
    assert!(
        s.message()
            .contains("ResourceClaim default/nested, request \"gpu\"")
            && s.message().contains("estimated cost"),
        "{}",
        s.message()
    );
    // Other pods are not held up.
    rig.store.upsert_claim(one_gpu("plain"));
    let pod = pod_using("r", &["plain"]);
    let st = rig.schedule(&pod, "n1").unwrap();
    assert!(rig.bind(&st, &pod, "n1").is_success());
}

/// Claim specs the usage and cached-verdict properties draw from: one
/// device by CEL on model, two on one NUMA node, capacity of the shared
/// device, admin access to any device, and `firstAvailable`.
fn usage_spec(k: u8) -> Value {
    match k % 5 {
        0 => json!({"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu.example.com",
            "selectors": [{"cel": {"expression": r#"device.attributes["gpu.example.com"].model == "H100""#}}]}}]}),
        1 => {
            json!({"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu.example.com", "count": 2,
            "selectors": [{"cel": {"expression": "!device.allowMultipleAllocations"}}]}}],
            "constraints": [{"matchAttribute": "gpu.example.com/numa"}]})
        }
        2 => json!({"requests": [{"name": "m", "exactly": {"deviceClassName": "gpu.example.com",
            "selectors": [{"cel": {"expression": "device.allowMultipleAllocations"}}],
            "capacity": {"requests": {"memory": "4Gi"}}}}]}),
        3 => {
            json!({"requests": [{"name": "a", "exactly": {"deviceClassName": "gpu.example.com", "adminAccess": true}}]})
        }
        _ => json!({"requests": [{"name": "f", "firstAvailable": [
            {"name": "two", "deviceClassName": "gpu.example.com", "count": 2,
             "selectors": [{"cel": {"expression": r#"device.attributes["gpu.example.com"].model == "A100""#}}]},
            {"name": "one", "deviceClassName": "gpu.example.com",
             "selectors": [{"cel": {"expression": "!device.allowMultipleAllocations"}}]}]}]}),
    }
}

/// A rig of three nodes with four GPUs each and a device every node may
/// share (10Gi of memory), its node ids known to the plugin.
fn usage_rig() -> Rig {
    let nodes = ["n0", "n1", "n2"];
    let rig = Rig::new(&nodes);
    for n in nodes {
        rig.store.upsert_slice(gpus(n, 4));
    }
    rig.store.upsert_slice(
        serde_json::from_value(json!({
            "metadata": {"name": "everywhere"},
            "spec": {"driver": "gpu.example.com", "allNodes": true,
                     "pool": {"name": "everywhere", "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "pooled", "allowMultipleAllocations": true,
                                  "capacity": {"memory": {"value": "10Gi"}}}]}
        }))
        .unwrap(),
    );
    for n in nodes {
        rig.plugin.node_changed(rig.node(n), rig.cache.snapshot());
    }
    rig
}

/// Devices in use with their use, in index order.
type UseEntries = Vec<(u32, alloc::DevUse)>;

impl Rig {
    /// The plugin's kept use, and the use summed from scratch.
    fn usage_both(&self) -> (UseEntries, UseEntries) {
        let mut c = self.plugin.caches.lock();
        self.plugin.refresh_index(&mut c);
        let kept = self.plugin.in_use(&mut c).entries();
        let fl = self.plugin.inflight.lock();
        let fresh = usage::by_value(
            &c.index,
            &self.store.allocated_claims(),
            fl.map
                .iter()
                .map(|(u, f)| (u.as_str(), f.devices.as_slice())),
        )
        .entries();
        (kept, fresh)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Through pods reserved, bound, given up and deleted, and claims
    /// allocated from outside: the use the plugin keeps from what changed
    /// equals the use summed from scratch; and a Filter verdict kept for a
    /// node under its cycle's key (as the engine's equivalence cache keeps
    /// it) until the plugin reports the node stale equals a fresh verdict.
    #[test]
    fn kept_use_and_cached_verdicts_equal_fresh_ones(
        ops in proptest::collection::vec((0u8..4, 0u8..5, 0usize..3, 0u8..3), 1..20),
    ) {
        let rig = usage_rig();
        let nodes = ["n0", "n1", "n2"];
        let mut live: Vec<String> = Vec::new();
        // (spec, node) → (key, verdict).
        let mut kept: FxHashMap<(u8, usize), (u64, Status)> = FxHashMap::default();
        let mut probe = 0;
        for (i, (op, spec, node, how)) in ops.iter().enumerate() {
            let name = format!("c{i}");
            match op {
                // A pod with its own claim: reserved, then bound, left in
                // flight, or given up.
                0 | 1 => {
                    rig.store.upsert_claim(claim("default", &name, usage_spec(*spec)));
                    let p = pod_using(&format!("p{i}"), &[&name]);
                    if let Ok(mut st) = rig.schedule(&p, nodes[*node]) {
                        match how {
                            0 => prop_assert!(rig.bind(&st, &p, nodes[*node]).is_success()),
                            1 => {}
                            _ => rig.plugin.unreserve(&mut st, &p, rig.node_ref(nodes[*node])),
                        }
                    }
                    live.push(name);
                }
                // A claim deleted (its pod gone).
                2 if !live.is_empty() => {
                    let gone = live.remove(*node % live.len());
                    rig.store.remove_claim("default", &gone);
                }
                // An allocation written from outside the scheduler.
                _ => {
                    let mut c = claim("default", &name, usage_spec(0));
                    let dev = format!("gpu-{}", how);
                    c.status = Some(serde_json::from_value(json!({"allocation": {"devices": {"results": [
                        {"request": "g", "driver": "gpu.example.com", "pool": nodes[*node], "device": dev}]}}})).unwrap());
                    rig.store.upsert_claim(c);
                    live.push(name);
                }
            }
            let (kept_use, fresh_use) = rig.usage_both();
            prop_assert_eq!(&kept_use, &fresh_use, "op {}", i);

            let mut stale = Vec::new();
            rig.plugin.take_stale_nodes(&mut stale);
            kept.retain(|(_, n), _| !stale.contains(&rig.node(nodes[*n]).id));
            for s in 0..5u8 {
                probe += 1;
                let pname = format!("probe{probe}");
                rig.store.upsert_claim(claim("default", &pname, usage_spec(s)));
                let p = pod_using(&pname, &[&pname]);
                let (st, pf) = rig.pre_filter(&p);
                if pf.is_success() {
                    let key = rig.plugin.node_local_verdict_key(&st);
                    prop_assert!(key.is_some());
                    let key = key.unwrap();
                    for (n, nn) in nodes.iter().enumerate() {
                        let v = rig.filter(&st, &p, nn);
                        if let Some((k, old)) = kept.get(&(s, n)) && *k == key {
                            prop_assert_eq!(old, &v, "op {} spec {} node {}", i, s, nn);
                        }
                        kept.insert((s, n), (key, v));
                    }
                }
                rig.store.remove_claim("default", &pname);
            }
        }
    }
}

/// A pod whose claim is allocated already, or being allocated for another
/// pod, is not node-local for the engine's cache; one whose claims are all
/// to allocate is, with a key that changes with the claim's request.
#[test]
fn node_local_only_while_every_claim_is_to_allocate() {
    let rig = usage_rig();
    rig.store.upsert_claim(claim("default", "a", usage_spec(0)));
    rig.store.upsert_claim(claim("default", "b", usage_spec(0)));
    rig.store.upsert_claim(claim("default", "c", usage_spec(1)));
    let key = |claims: &[&str]| {
        let p = pod_using(&format!("q-{}", claims.join("-")), claims);
        let (st, s) = rig.pre_filter(&p);
        assert!(s.is_success(), "{s:?}");
        rig.plugin.node_local_verdict_key(&st)
    };
    let ka = key(&["a"]);
    assert!(ka.is_some());
    assert_eq!(key(&["b"]), ka, "same request, same key");
    assert_ne!(key(&["c"]), ka);
    // `a` reserved for one pod: a second pod sharing it follows it.
    let p = pod_using("p", &["a"]);
    let st = rig.schedule(&p, "n1").unwrap();
    assert_eq!(key(&["a"]), None);
    assert!(rig.bind(&st, &p, "n1").is_success());
    assert_eq!(key(&["a"]), None, "allocated");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Reusing a selector's answer for devices of equal CEL input (twins)
    /// gives the same candidates, the same errors and the same budget
    /// charges as evaluating every device, also when the cycle's budget
    /// runs out part way.
    #[test]
    fn twins_share_answers_as_if_each_was_evaluated(
        models in proptest::collection::vec(0u8..3, 1..40),
        pick in proptest::collection::vec(0usize..5, 1..3),
        budget in prop_oneof![Just(cost::MAX_CYCLE_COST), 1_000u64..400_000],
    ) {
        let l: Vec<String> = (0..30).map(|i| i.to_string()).collect();
        let l = format!("[{}]", l.join(", "));
        let exprs = [
            r#"device.attributes["gpu.example.com"].model == "H100""#.to_owned(),
            r#"device.capacity["gpu.example.com"].memory.compareTo(quantity("64Gi")) >= 0"#.to_owned(),
            format!("{l}.all(a, {l}.all(b, a + b >= 0))"),
            r#"device.attributes["gpu.example.com"].missing == 1"#.to_owned(),
            "device.allowMultipleAllocations || true".to_owned(),
        ];
        let rig = Rig::new(&["n1"]);
        let devs: Vec<Value> = models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (model, mem) = [("H100", "80Gi"), ("A100", "40Gi"), ("H100", "40Gi")][*m as usize];
                json!({"name": format!("gpu-{i}"),
                       "attributes": {"model": {"string": model}},
                       "capacity": {"memory": {"value": mem}}})
            })
            .collect();
        rig.store.upsert_slice(slice("n1", Value::Array(devs)));
        let class = rig.store.class("gpu.example.com").unwrap();
        let sels: Vec<resv1::DeviceSelector> = pick
            .iter()
            .map(|p| serde_json::from_value(json!({"cel": {"expression": exprs[*p]}})).unwrap())
            .collect();
        let run = |share: bool| {
            let mut c = rig.plugin.caches.lock();
            rig.plugin.refresh_index(&mut c);
            c.sets.clear();
            c.share_twins = share;
            let mut b = cost::Budget::new(budget);
            let r = rig.plugin.candidates(&mut c, &class, &sels, "request", &mut b);
            c.share_twins = true;
            (r, b.left())
        };
        prop_assert_eq!(run(true), run(false));
    }
}
