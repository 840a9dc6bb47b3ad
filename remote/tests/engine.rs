//! The remote plugin in the production engine, against an in-process
//! tonic server (`common/`): placement, batching, delta sync, failure
//! policies, a plugin restart.

mod common;

use common::{Mode, Server, socket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::{CycleResult, Scheduler};
use strata_scheduler::testing::{RecordingCluster, node, pod};

struct Env {
    sched: Scheduler,
    cluster: Arc<RecordingCluster>,
    clock: Arc<ManualClock>,
    _rt: tokio::runtime::Runtime,
}

fn config(name: &str, sock: &std::path::Path, policy: &str, timeout: &str) -> String {
    format!(
        r#"
parallelism: 1
seed: 7
profiles:
  - schedulerName: strata-scheduler
    plugins:
      multiPoint:
        enabled: [{{name: {name}, weight: 2}}]
    pluginConfig:
      - name: {name}
        args:
          remote: {{endpoint: "unix://{}", timeout: {timeout}, syncTimeout: {timeout}, failurePolicy: {policy}}}
          degradedScore: 20
"#,
        sock.display()
    )
}

fn env(name: &str, sock: &std::path::Path, policy: &str, timeout: &str) -> Env {
    let mut reg = strata_plugins::registry();
    strata_remote::register(&mut reg, name);
    env_with(&reg, &config(name, sock, policy, timeout))
}

/// A scheduler of the plugins in `reg` with the configuration `yaml`.
fn env_with(reg: &strata_scheduler::sdk::Registry, yaml: &str) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster = Arc::new(RecordingCluster::default());
    let clock = Arc::new(ManualClock::default());
    let cfg = SchedulerConfig::from_yaml(yaml).unwrap();
    let sched = Scheduler::new(
        cfg,
        reg,
        &strata_plugins::default_plugins(),
        cluster.clone(),
        clock.clone(),
        rt.handle().clone(),
    )
    .expect("the profile builds");
    Env {
        sched,
        cluster,
        clock,
        _rt: rt,
    }
}

impl Env {
    fn nodes(&mut self, pool: &str, n: usize, health: &str) {
        for i in 0..n {
            self.sched
                .handle_update(ClusterUpdate::NodeUpserted(Arc::new(
                    node(&format!("{pool}-{i}"))
                        .alloc("cpu", "4")
                        .alloc("memory", "16Gi")
                        .alloc("pods", "110")
                        .annotation("vendor.example.com/health", health)
                        .build(),
                )));
        }
    }
    fn pods(&mut self, prefix: &str, n: usize, cpu: &str) {
        for i in 0..n {
            self.sched
                .handle_update(ClusterUpdate::PodUpserted(Arc::new(
                    pod(&format!("{prefix}-{i}")).req("cpu", cpu).build(),
                )));
        }
    }
    /// Runs every ready cycle and waits for the binds.
    fn drain(&mut self) -> Vec<CycleResult> {
        let mut out = Vec::new();
        loop {
            while let Some(o) = self.sched.schedule_one() {
                out.push(o.result);
            }
            if self.sched.in_flight() > 0
                && self.sched.wait_for_completion(Duration::from_secs(5)) > 0
            {
                continue;
            }
            return out;
        }
    }
    fn binds_to(&self, pool: &str) -> usize {
        self.cluster
            .binds
            .lock()
            .iter()
            .filter(|(_, n)| n.starts_with(&format!("{pool}-")))
            .count()
    }
    fn events(&self, reason: &str) -> Vec<String> {
        self.cluster
            .events
            .lock()
            .iter()
            .filter(|e| e.reason == reason)
            .map(|e| e.message.clone())
            .collect()
    }
}

#[test]
fn places_by_the_remote_filter_and_score_with_one_full_sync() {
    let sock = socket("place");
    let server = Server::start(&sock);
    let mut e = env("RemoteHealthA", &sock, "Fail", "2s");
    e.nodes("ok", 2, "ok");
    e.nodes("degraded", 2, "degraded");
    e.nodes("failed", 2, "failed");
    e.pods("p", 12, "1");
    e.drain();
    assert_eq!(
        e.cluster.binds.lock().len(),
        12,
        "{:?}",
        e.events("FailedScheduling")
    );
    assert_eq!(e.binds_to("failed"), 0);
    assert_eq!(e.binds_to("ok"), 8, "healthy nodes fill first");
    assert_eq!(e.binds_to("degraded"), 4);
    let c = &server.health.counters;
    assert_eq!(c.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(c.full_syncs.load(Ordering::SeqCst), 1);
    assert_eq!(c.resyncs.load(Ordering::SeqCst), 0);
    // One Filter call per cycle (never one per node), and after the full
    // sync only the node the last pod went to changed.
    assert_eq!(c.filters.load(Ordering::SeqCst), 12);
    assert_eq!(c.reserves.load(Ordering::SeqCst), 12);
    assert!(c.delta_nodes.load(Ordering::SeqCst) <= 11);
    // pluginConfig passed through without the `remote` settings.
    assert_eq!(
        server.health.config.lock().clone().unwrap(),
        serde_json::json!({"degradedScore": 20})
    );
    assert_eq!(*server.health.profile.lock(), "strata-scheduler");
    let m = strata_remote::metrics::encode();
    assert!(
        m.contains(r#"strata_remote_plugin_duration_seconds_count{plugin="RemoteHealthA",extension_point="Filter"} 12"#),
        "{m}"
    );
    server.kill();
}

#[test]
fn permit_rejections_unreserve_and_name_the_plugin() {
    let sock = socket("permit");
    let server = Server::start(&sock);
    let mut e = env("RemoteHealthB", &sock, "Fail", "2s");
    e.nodes("ok", 2, "ok");
    e.sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(
        pod("denied").req("cpu", "1").label("deny", "true").build(),
    )));
    let r = e.drain();
    assert!(e.cluster.binds.lock().is_empty());
    assert!(
        matches!(&r[0], CycleResult::Unschedulable { message } if message.contains("RemoteHealthB") && message.contains("denied by the vendor")),
        "{r:?}"
    );
    assert_eq!(server.health.counters.unreserves.load(Ordering::SeqCst), 1);
    server.kill();
}

/// Runs the ready cycles without waiting for binds.
fn cycles(e: &mut Env) -> Vec<CycleResult> {
    let mut out = Vec::new();
    while let Some(o) = e.sched.schedule_one() {
        out.push(o.result);
    }
    out
}

/// A remote Permit that holds a pod (CODE_WAIT): the pod stays assumed and
/// unbound until the plugin's decision arrives on the PermitDecisions
/// stream; an allow binds it, a reject unreserves it and names the reason.
#[test]
fn permit_wait_holds_until_the_plugin_decides() {
    let sock = socket("permit-wait");
    let server = Server::start(&sock);
    let mut e = env("RemoteHealthW", &sock, "Fail", "2s");
    e.nodes("ok", 2, "ok");
    for name in ["held-a", "held-b"] {
        e.sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(
            pod(name).req("cpu", "1").label("hold", "60000").build(),
        )));
    }
    let r = cycles(&mut e);
    assert_eq!(r.len(), 2, "{r:?}");
    // Held: nothing binds, however long the binding cycles are given.
    assert_eq!(e.sched.wait_for_completion(Duration::from_millis(300)), 0);
    assert!(e.cluster.binds.lock().is_empty());
    assert_eq!(e.sched.waiting_pods().len(), 2);
    server.health.decide("uid-held-a", true, "");
    server.health.decide("uid-held-b", false, "quota exhausted");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while e.sched.in_flight() > 0 && std::time::Instant::now() < deadline {
        e.sched.wait_for_completion(Duration::from_millis(100));
    }
    let binds = e.cluster.binds.lock().clone();
    assert_eq!(binds.len(), 1, "{binds:?}");
    assert!(binds[0].0.contains("held-a"), "{binds:?}");
    let failed = e.events("FailedScheduling");
    assert!(
        failed
            .iter()
            .any(|m| m.contains("RemoteHealthW") && m.contains("quota exhausted")),
        "{failed:?}"
    );
    assert_eq!(server.health.counters.unreserves.load(Ordering::SeqCst), 1);
    // A decision for a pod that does not wait changes nothing.
    server.health.decide("uid-nobody", true, "");
    server.kill();
}

/// A hold of 0 ms or beyond kube-scheduler's 15-minute cap is a bad answer:
/// the failure policy applies (Fail: the pod fails naming the plugin).
#[test]
fn a_permit_wait_out_of_range_gets_the_failure_policy() {
    let sock = socket("permit-bad-wait");
    let server = Server::start(&sock);
    let mut e = env("RemoteHealthX", &sock, "Fail", "2s");
    e.nodes("ok", 2, "ok");
    for (name, ms) in [("zero", "0"), ("long", "900001")] {
        e.sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(
            pod(name).req("cpu", "1").label("hold", ms).build(),
        )));
    }
    let r = e.drain();
    assert!(e.cluster.binds.lock().is_empty(), "{r:?}");
    let text = format!("{r:?}");
    assert!(
        text.contains("RemoteHealthX") && text.contains("CODE_WAIT for 0 ms"),
        "{text}"
    );
    assert!(text.contains("CODE_WAIT for 900001 ms"), "{text}");
    assert_eq!(server.health.decision_streams(), 0, "nothing was held");
    server.kill();
}

/// Bytes of the Filter request of a cycle in which nothing changed, with
/// `n` nodes.
fn idle_filter_bytes(n: usize, tag: &str) -> u64 {
    let sock = socket(tag);
    let server = Server::start(&sock);
    let name = format!("RemoteIdle{tag}");
    let mut e = env(&name, &sock, "Fail", "10s");
    e.nodes("ok", n, "ok");
    // Pods that fit nowhere: every cycle is unschedulable and changes no
    // node.
    e.pods("big", 3, "64");
    let r = e.drain();
    assert_eq!(r.len(), 3);
    let stats = strata_remote::stats(&name).unwrap();
    assert_eq!(stats.full_syncs.load(Ordering::SeqCst), 1);
    assert_eq!(server.health.counters.deltas.load(Ordering::SeqCst), 2);
    assert_eq!(server.health.counters.delta_nodes.load(Ordering::SeqCst), 0);
    server.kill();
    stats.last_filter_bytes.load(Ordering::SeqCst)
}

#[test]
fn bytes_per_idle_cycle_do_not_grow_with_the_node_count() {
    let small = idle_filter_bytes(10, "idle10");
    let large = idle_filter_bytes(3_000, "idle3k");
    // Equal but for the varint of the node count in the candidate run.
    assert!(
        large - small <= 2,
        "{small} bytes at 10 nodes, {large} at 3,000"
    );
    assert!(large < 200, "{large}");
}

#[test]
fn a_plugin_that_hangs_fails_the_pod_or_is_ignored_by_policy() {
    let sock = socket("hang");
    let server = Server::start(&sock);
    server.health.set_mode(Mode::Hang);
    let mut e = env("RemoteHangFail", &sock, "Fail", "100ms");
    e.nodes("ok", 2, "ok");
    e.pods("p", 1, "1");
    let r = e.drain();
    assert!(e.cluster.binds.lock().is_empty());
    assert!(
        matches!(&r[..], [CycleResult::Failed { message }] if message.contains("RemoteHangFail") && message.contains("no answer within")),
        "{r:?}"
    );
    assert!(e.events("FailedScheduling")[0].contains("RemoteHangFail"));
    let m = strata_remote::metrics::encode();
    assert!(
        m.contains(r#"strata_remote_plugin_errors_total{plugin="RemoteHangFail",extension_point="Filter",kind="timeout"} 1"#),
        "{m}"
    );

    let mut e = env("RemoteHangIgnore", &sock, "Ignore", "100ms");
    e.nodes("ok", 2, "ok");
    e.pods("p", 1, "1");
    e.drain();
    assert_eq!(
        e.cluster.binds.lock().len(),
        1,
        "scheduled without the plugin"
    );
    let ignored = e.events("RemotePluginIgnored");
    assert!(
        !ignored.is_empty() && ignored[0].contains("RemoteHangIgnore"),
        "{ignored:?}"
    );
    server.kill();
}

#[test]
fn garbage_and_errors_get_the_policy() {
    let sock = socket("garbage");
    let server = Server::start(&sock);
    server.health.set_mode(Mode::Garbage);
    let mut e = env("RemoteGarbage", &sock, "Fail", "2s");
    e.nodes("ok", 2, "ok");
    e.pods("p", 1, "1");
    let r = e.drain();
    assert!(
        matches!(&r[..], [CycleResult::Failed { message }] if message.contains("node id 999999 was not a candidate")),
        "{r:?}"
    );
    server.health.set_mode(Mode::Error);
    let mut e = env("RemoteErrorIgnore", &sock, "Ignore", "2s");
    e.nodes("ok", 2, "ok");
    e.pods("p", 1, "1");
    e.drain();
    assert_eq!(e.cluster.binds.lock().len(), 1);
    let ignored = e.events("RemotePluginIgnored");
    assert!(
        ignored[0].contains("the vendor agent database is down"),
        "{ignored:?}"
    );
    server.kill();
}

#[test]
fn a_restarted_plugin_gets_a_new_session_and_a_full_snapshot() {
    let sock = socket("restart");
    let server = Server::start(&sock);
    let mut e = env("RemoteRestart", &sock, "Fail", "1s");
    e.nodes("ok", 1, "ok");
    e.nodes("failed", 1, "failed");
    e.pods("a", 2, "1");
    e.drain();
    assert_eq!(e.binds_to("ok"), 2);
    server.kill();

    // Down: the attempt fails with the plugin named.
    e.pods("b", 1, "1");
    let r = e.drain();
    assert!(
        matches!(&r[..], [CycleResult::Failed { message }] if message.contains("RemoteRestart")),
        "{r:?}"
    );

    // Back, with no memory of the session: it asks for a resync, gets a
    // handshake and a full snapshot, and judges by it.
    let server = Server::start(&sock);
    e.pods("c", 2, "1");
    let mut tries = 0;
    while e.cluster.binds.lock().len() < 5 && tries < 40 {
        e.clock.advance(Duration::from_secs(20));
        e.drain();
        tries += 1;
    }
    assert_eq!(e.binds_to("ok"), 5, "{:?}", e.events("FailedScheduling"));
    assert_eq!(e.binds_to("failed"), 0);
    let c = &server.health.counters;
    assert_eq!(c.resyncs.load(Ordering::SeqCst), 1);
    assert_eq!(c.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(c.full_syncs.load(Ordering::SeqCst), 1);
    server.kill();
}

#[test]
fn a_node_local_plugin_places_the_same_through_the_equivalence_cache() {
    let sock = socket("nodelocal");
    let server = Server::start(&sock);
    server.health.node_local.store(true, Ordering::SeqCst);
    let mut e = env("RemoteNodeLocal", &sock, "Fail", "2s");
    e.nodes("ok", 2, "ok");
    e.nodes("degraded", 2, "degraded");
    e.nodes("failed", 2, "failed");
    // Pods of one template: the engine's equivalence fast path.
    for i in 0..12 {
        e.sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(
            pod(&format!("t-{i}"))
                .label("app", "web")
                .req("cpu", "1")
                .build(),
        )));
    }
    e.drain();
    assert_eq!(e.cluster.binds.lock().len(), 12);
    assert_eq!(e.binds_to("failed"), 0);
    assert_eq!(e.binds_to("ok"), 8);
    assert_eq!(e.binds_to("degraded"), 4);
    // Every node once, then only the node the previous pod landed on.
    let c = &server.health.counters;
    assert!(c.filters.load(Ordering::SeqCst) <= 12);
    let asked = c.filter_nodes.load(Ordering::SeqCst);
    assert!((6..=6 + 11).contains(&asked), "{asked} nodes asked");
    server.kill();
}

/// Nodes the plugin judged (Filter) and scored so far.
fn judged(server: &Server) -> (u64, u64) {
    let c = &server.health.counters;
    (
        c.filter_nodes.load(Ordering::SeqCst),
        c.score_nodes.load(Ordering::SeqCst),
    )
}

fn web(e: &mut Env, prefix: &str, n: usize) {
    for i in 0..n {
        e.sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(
            pod(&format!("{prefix}-{i}"))
                .label("app", "web")
                .req("cpu", "1")
                .build(),
        )));
    }
}

#[test]
fn a_node_local_plugin_is_asked_only_about_nodes_that_changed() {
    let sock = socket("changed");
    let server = Server::start(&sock);
    server.health.node_local.store(true, Ordering::SeqCst);
    let name = "RemoteChanged";
    let mut e = env(name, &sock, "Fail", "2s");
    e.nodes("ok", 20, "ok");
    e.nodes("failed", 4, "failed");
    // The first pod of a template: every node once.
    web(&mut e, "a", 1);
    e.drain();
    assert_eq!(judged(&server), (24, 20));
    // Each later pod: the node the one before landed on.
    web(&mut e, "b", 5);
    e.drain();
    let (f, s) = judged(&server);
    assert!(f - 24 <= 5 * 2 && s - 20 <= 5 * 2, "{f} judged, {s} scored");
    assert_eq!(e.binds_to("failed"), 0);

    // A cycle in which nothing changed makes no call at all.
    let stats = strata_remote::stats(name).unwrap();
    e.pods("big", 1, "64");
    e.drain();
    let calls = stats.calls.load(Ordering::SeqCst);
    let bytes = stats.sent_bytes.load(Ordering::SeqCst);
    e.pods("bigger", 2, "64");
    assert_eq!(e.drain().len(), 2);
    assert_eq!(stats.calls.load(Ordering::SeqCst), calls, "no call");
    assert_eq!(stats.sent_bytes.load(Ordering::SeqCst), bytes);

    // A node that turns failed is asked about again, and rejected; the
    // answers for the others still hold.
    let before = judged(&server);
    e.sched.handle_update(ClusterUpdate::NodeUpserted(Arc::new(
        node("ok-0")
            .alloc("cpu", "4")
            .alloc("memory", "16Gi")
            .alloc("pods", "110")
            .annotation("vendor.example.com/health", "failed")
            .build(),
    )));
    web(&mut e, "c", 30);
    e.drain();
    let after = judged(&server);
    assert!(after.0 - before.0 <= 30 * 2, "{before:?} {after:?}");
    let on_ok0 = e
        .cluster
        .binds
        .lock()
        .iter()
        .filter(|(p, n)| n == "ok-0" && p.contains("/c-"))
        .count();
    assert_eq!(on_ok0, 0);
    assert_eq!(e.binds_to("failed"), 0);
    assert_eq!(e.cluster.binds.lock().len(), 36);
    let c = &server.health.counters;
    assert_eq!(c.full_syncs.load(Ordering::SeqCst), 1);
    assert_eq!(c.resyncs.load(Ordering::SeqCst), 0);
    server.kill();
}

/// A high-priority pod filling `ok-0` and a low-priority one on each
/// other node listed, every node 4 cpus.
fn preemption_env(tag: &str, node_local: bool, low_on: &[(&str, &str)]) -> (Server, Env) {
    let sock = socket(tag);
    let server = Server::start(&sock);
    server.health.node_local.store(node_local, Ordering::SeqCst);
    let mut e = env(&format!("RemotePreempt{tag}"), &sock, "Fail", "2s");
    e.nodes("ok", 1, "ok");
    for (name, health) in low_on {
        e.sched.handle_update(ClusterUpdate::NodeUpserted(Arc::new(
            node(name)
                .alloc("cpu", "4")
                .alloc("memory", "16Gi")
                .alloc("pods", "110")
                .annotation("vendor.example.com/health", health)
                .build(),
        )));
    }
    let mut placed = vec![("high", "ok-0", 1000)];
    placed.extend(low_on.iter().map(|(n, _)| ("low", *n, 0)));
    for (i, (what, on, prio)) in placed.into_iter().enumerate() {
        e.sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(
            pod(&format!("{what}-{i}"))
                .priority(prio)
                .req("cpu", "4")
                .on(on)
                .build(),
        )));
    }
    (server, e)
}

fn preemptor(e: &mut Env, labels: &[(&str, &str)]) -> CycleResult {
    let mut p = pod("preemptor").priority(500).req("cpu", "2");
    for (k, v) in labels {
        p = p.label(k, v);
    }
    e.sched
        .handle_update(ClusterUpdate::PodUpserted(Arc::new(p.build())));
    let r = e.drain();
    assert_eq!(r.len(), 1, "{r:?}");
    r.into_iter().next().unwrap()
}

#[test]
fn preemption_never_picks_a_node_the_remote_filter_rejects() {
    for node_local in [false, true] {
        for health in ["failed", "retired"] {
            // Evicting the low-priority pod on `vendor-0` would make room,
            // but the plugin rejects that node (Unschedulable for
            // `failed`, UnschedulableAndUnresolvable for `retired`): no
            // victim, no nomination.
            let tag = format!("pre{health}{node_local}");
            let (server, mut e) = preemption_env(&tag, node_local, &[("vendor-0", health)]);
            let r = preemptor(&mut e, &[]);
            assert!(matches!(r, CycleResult::Unschedulable { .. }), "{r:?}");
            assert_eq!(
                e.sched.counters().preemptions,
                0,
                "{health}, node-local {node_local}"
            );
            assert_eq!(e.sched.counters().victims, 0);
            server.kill();
        }
    }
    // The same with a healthy node holding a low-priority pod: preemption
    // evicts there, never on the rejected node.
    let (server, mut e) =
        preemption_env("preok", true, &[("vendor-0", "failed"), ("vendor-1", "ok")]);
    let r = preemptor(&mut e, &[]);
    assert!(matches!(r, CycleResult::Unschedulable { .. }), "{r:?}");
    assert_eq!(e.sched.counters().preemptions, 1);
    // Victims are deleted by a task of the engine's runtime.
    for _ in 0..500 {
        if !e.cluster.deleted.lock().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*e.cluster.deleted.lock(), vec!["default/low-2".to_owned()]);
    server.kill();
}

#[test]
fn preemption_respects_a_remote_rejection_of_the_whole_pod() {
    // The plugin refuses the pod itself: no node is worth evicting for.
    let (server, mut e) = preemption_env("prewhole", false, &[("vendor-1", "ok")]);
    let r = preemptor(&mut e, &[("vendor.example.com/reject-pod", "true")]);
    match r {
        CycleResult::Unschedulable { message } => {
            assert!(message.contains("the vendor refuses this pod"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.sched.counters().preemptions, 0);
    assert_eq!(e.sched.counters().victims, 0);
    server.kill();
}

/// A PreFilter that rejects pods named `gated-*` (Unschedulable, so
/// preemption still runs) before the remote plugin is asked.
struct GateFirst;

impl strata_scheduler::sdk::PreFilterPlugin for GateFirst {
    fn pre_filter(
        &self,
        _state: &mut strata_scheduler::sdk::CycleState,
        pod: &strata_scheduler::sdk::PodInfo,
        _snap: &strata_scheduler::sdk::Snapshot,
    ) -> strata_scheduler::framework::PreFilterResult {
        if pod.name.starts_with("gated") {
            strata_scheduler::framework::PreFilterResult::status(
                strata_scheduler::sdk::Status::unschedulable("gated by the test"),
            )
        } else {
            strata_scheduler::framework::PreFilterResult::skip()
        }
    }
}

strata_scheduler::plugin!(GateFirst: "GateFirst" => [PreFilter]);

#[test]
fn preemption_does_not_guess_a_remote_filter_that_was_not_asked() {
    // An earlier PreFilter rejects the pod, so the remote plugin is not
    // asked in the cycle; its Filter then rejects every node of the
    // what-ifs instead of passing them unasked.
    let sock = socket("notasked");
    let server = Server::start(&sock);
    let mut reg = strata_plugins::registry();
    reg.register("GateFirst", |_, _| Ok(Arc::new(GateFirst)));
    strata_remote::register(&mut reg, "RemoteNotAsked");
    let yaml = format!(
        r#"
parallelism: 1
seed: 7
profiles:
  - schedulerName: strata-scheduler
    plugins:
      multiPoint:
        enabled: [{{name: GateFirst}}, {{name: RemoteNotAsked, weight: 2}}]
    pluginConfig:
      - name: RemoteNotAsked
        args:
          remote: {{endpoint: "unix://{}", timeout: 2s}}
"#,
        sock.display()
    );
    let mut e = env_with(&reg, &yaml);
    let sched = &mut e.sched;
    for name in ["ok-0", "ok-1"] {
        sched.handle_update(ClusterUpdate::NodeUpserted(Arc::new(
            node(name)
                .alloc("cpu", "4")
                .alloc("pods", "110")
                .annotation("vendor.example.com/health", "ok")
                .build(),
        )));
    }
    for (p, prio, on) in [("high", 1000, "ok-0"), ("low", 0, "ok-1")] {
        sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(
            pod(p).priority(prio).req("cpu", "4").on(on).build(),
        )));
    }
    sched.handle_update(ClusterUpdate::PodUpserted(Arc::new(
        pod("gated-0").priority(500).req("cpu", "2").build(),
    )));
    let o = sched.schedule_one().expect("a pod");
    match &o.result {
        CycleResult::Unschedulable { message } => {
            assert!(message.contains("gated by the test"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sched.counters().preemptions, 0);
    assert_eq!(server.health.counters.filters.load(Ordering::SeqCst), 0);
    server.kill();
}

/// A node-local plugin that offers scores with Filter gets one call per
/// cycle (Filter) in steady state and places exactly as one that does not
/// (a plugin written before the field), which gets a Score call as well.
#[test]
fn scores_with_filter_save_the_score_call_and_place_the_same() {
    let mut placed = Vec::new();
    let mut score_calls = Vec::new();
    for with in [true, false] {
        let sock = socket(if with { "withscores" } else { "withoutscores" });
        let server = Server::start(&sock);
        server.health.node_local.store(true, Ordering::SeqCst);
        server
            .health
            .scores_with_filter
            .store(with, Ordering::SeqCst);
        let name = if with {
            "RemoteWithScores"
        } else {
            "RemoteWithoutScores"
        };
        let mut e = env(name, &sock, "Fail", "2s");
        e.nodes("ok", 4, "ok");
        e.nodes("degraded", 4, "degraded");
        e.nodes("failed", 2, "failed");
        web(&mut e, "a", 1);
        e.drain();
        let c = &server.health.counters;
        let first = c.scores.load(Ordering::SeqCst);
        web(&mut e, "b", 12);
        let r = e.drain();
        assert_eq!(r.len(), 12, "{r:?}");
        assert_eq!(e.binds_to("failed"), 0);
        score_calls.push(c.scores.load(Ordering::SeqCst) - first);
        let stats = strata_remote::stats(name).unwrap();
        let by_filter = stats.filter_scored_nodes.load(Ordering::SeqCst);
        assert_eq!(by_filter > 0, with, "{by_filter} nodes scored with Filter");
        let mut binds = e.cluster.binds.lock().clone();
        binds.sort();
        placed.push(binds);
        assert_eq!(c.resyncs.load(Ordering::SeqCst), 0);
        server.kill();
    }
    assert_eq!(
        score_calls[0], 0,
        "no Score call once scores come with Filter"
    );
    assert!(score_calls[1] >= 11, "{} Score calls", score_calls[1]);
    assert_eq!(placed[0], placed[1]);
}
