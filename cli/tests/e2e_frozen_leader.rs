//! The leader's process frozen (SIGSTOP) past its Lease and resumed, against
//! a real kube-apiserver: two `strata run` processes on the manifests' Lease;
//! while the leader is frozen the standby takes over and binds the pods that
//! arrive; once resumed, the old leader writes nothing more (no event of its
//! after the resume) and exits saying it lost the Lease, as kube-scheduler
//! does. Every pod is bound exactly once.
//!
//! Uses the end-to-end harness of `strata-kube` (`STRATA_E2E_KUBECONFIG`;
//! skipped with a notice when it is not set).

#[path = "../../adapter/tests/cluster/mod.rs"]
mod cluster;

use cluster::*;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn strata_run(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata run")
}

/// Kills a child left running (or frozen) by a failed assertion.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

async fn wait_holder(c: &Cluster, not: Option<&str>, timeout: Duration) -> String {
    let t = Instant::now();
    loop {
        if let Some(h) = lease_holder(c).await
            && Some(h.as_str()) != not
        {
            return h;
        }
        assert!(t.elapsed() < timeout, "no new Lease holder");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_frozen_leader_resumes_writes_nothing_and_exits() {
    let Some(c) = Cluster::setup().await else {
        return;
    };
    let ns = c.namespace("frozen").await;
    let sched = "strata-e2e-frozen";
    let dir = std::env::temp_dir().join(format!("strata-frozen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "clientConnection: {{kubeconfig: {kc}, qps: 200, burst: 200}}\n\
             leaderElection: {{leaderElect: true, leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 500ms, \
             resourceNamespace: {SYSTEM_NS}, resourceName: {LEASE}}}\n\
             healthzBindAddress: 127.0.0.1:0\n\
             podInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 2\n\
             profiles: [{{schedulerName: {sched}}}]\n",
            kc = c.sa_kubeconfig.display()
        ),
    )
    .expect("write the config");

    let mut a = strata_run(&config);
    let _guard_a = KillOnDrop(a.id());
    let a_id = wait_holder(&c, None, Duration::from_secs(60)).await;
    let mut b = strata_run(&config);
    let _guard_b = KillOnDrop(b.id());
    for i in 0..30 {
        c.create_pod(&ns, plain_pod(&format!("p-{i}"), sched, "5m"))
            .await;
    }
    c.wait_bound(&ns, 30, Duration::from_secs(120)).await;

    // Frozen for three Lease durations: the standby takes over and binds
    // what arrives meanwhile.
    signal(a.id(), "STOP");
    for i in 30..60 {
        c.create_pod(&ns, plain_pod(&format!("p-{i}"), sched, "5m"))
            .await;
    }
    let b_id = wait_holder(&c, Some(&a_id), Duration::from_secs(30)).await;
    c.wait_bound(&ns, 60, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Work the old leader saw before it froze may still sit in its queue;
    // more arrives (buffered on its watch) as it resumes.
    let resumed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    signal(a.id(), "CONT");
    for i in 60..90 {
        c.create_pod(&ns, plain_pod(&format!("p-{i}"), sched, "5m"))
            .await;
    }
    c.wait_bound(&ns, 90, Duration::from_secs(120)).await;

    // The old leader exits, saying why.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = a.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the resumed leader kept running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    a.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert!(!status.success(), "{err}");
    assert!(err.contains("lost the leader Lease"), "{err}");

    // Nothing reported by it after the resume; every pod Scheduled once.
    let events = c.events(&ns).await;
    let late: Vec<_> = events
        .iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(a_id.as_str()))
        .filter(|e| {
            e.event_time
                .as_ref()
                .is_some_and(|t| t.0.as_millisecond() > resumed)
        })
        .map(|e| {
            (
                e.reason.clone(),
                e.regarding.as_ref().and_then(|r| r.name.clone()),
            )
        })
        .collect();
    assert!(late.is_empty(), "events from the deposed leader: {late:?}");
    assert_scheduled_once(&events);
    assert_eq!(lease_holder(&c).await.as_deref(), Some(b_id.as_str()));

    signal(b.id(), "TERM");
    let _ = b.wait();
    let _ = std::fs::remove_dir_all(&dir);
    c.cleanup(&ns).await;
}
