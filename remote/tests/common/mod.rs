//! An in-process remote plugin server for the tests: the vendor health
//! rule (Filter out `vendor.example.com/health: failed` as Unschedulable
//! and `retired` as UnschedulableAndUnresolvable, reject a pod labelled
//! `vendor.example.com/reject-pod: "true"` as a whole, Score `ok` 100 and
//! `degraded` the configured `degradedScore`) over protocol v1, with a
//! per-session node view kept from deltas, and switchable bad behaviour.

#![allow(dead_code)]

pub mod cycle;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use strata_remote::convert::expand;
use strata_remote::pb;
use strata_remote::pb::remote_plugin_server::{RemotePlugin as Service, RemotePluginServer};
use tonic::{Request, Response, Status};

/// How the server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Normal = 0,
    /// Sleeps 5 s on Filter and Score.
    Hang = 1,
    /// Rejects a node id that was not a candidate.
    Garbage = 2,
    /// Answers CODE_ERROR.
    Error = 3,
}

#[derive(Default)]
struct View {
    version: u64,
    nodes: HashMap<u32, pb::Node>,
    degraded_score: i64,
}

#[derive(Default)]
pub struct Counters {
    pub handshakes: AtomicU64,
    pub full_syncs: AtomicU64,
    pub deltas: AtomicU64,
    pub delta_nodes: AtomicU64,
    pub resyncs: AtomicU64,
    pub filters: AtomicU64,
    pub scores: AtomicU64,
    /// Nodes judged by Filter and scored by Score calls, total.
    pub filter_nodes: AtomicU64,
    pub score_nodes: AtomicU64,
    pub reserves: AtomicU64,
    pub unreserves: AtomicU64,
    pub permits: AtomicU64,
}

#[derive(Default)]
pub struct Health {
    sessions: Mutex<HashMap<u64, View>>,
    mode: AtomicU8,
    pub counters: Counters,
    pub config: Mutex<Option<serde_json::Value>>,
    /// Declared in the handshake.
    pub node_local: std::sync::atomic::AtomicBool,
    /// Declared in the handshake (set by `Server::start`; a test clears it
    /// to act as a plugin written before the field).
    pub scores_with_filter: std::sync::atomic::AtomicBool,
    pub profile: Mutex<String>,
    /// Open PermitDecisions streams.
    deciders: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<pb::PermitDecision>>>,
}

impl Health {
    /// Streams the scheduler has open for decisions.
    pub fn decision_streams(&self) -> usize {
        self.deciders
            .lock()
            .iter()
            .filter(|t| !t.is_closed())
            .count()
    }

    /// Sends a decision on every open stream; waits up to 5 s for one to
    /// be open (the scheduler opens it after the first hold).
    pub fn decide(&self, uid: &str, allow: bool, reason: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.decision_streams() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let d = pb::PermitDecision {
            pod_uid: uid.to_owned(),
            allow,
            reason: reason.to_owned(),
        };
        self.deciders.lock().retain(|t| t.send(d.clone()).is_ok());
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Hang,
            2 => Mode::Garbage,
            3 => Mode::Error,
            _ => Mode::Normal,
        }
    }

    /// Applies a delta; `false` asks for a resync.
    fn apply(&self, d: &pb::SnapshotDelta) -> bool {
        let mut s = self.sessions.lock();
        let Some(v) = s.get_mut(&d.session) else {
            return false;
        };
        if d.full {
            v.nodes.clear();
            self.counters.full_syncs.fetch_add(1, Ordering::SeqCst);
        } else if d.base_version != v.version {
            return false;
        } else {
            self.counters.deltas.fetch_add(1, Ordering::SeqCst);
            self.counters.delta_nodes.fetch_add(
                (d.nodes.len() + d.removed_nodes.len()) as u64,
                Ordering::SeqCst,
            );
        }
        for n in &d.nodes {
            v.nodes.insert(n.id, n.clone());
        }
        for id in &d.removed_nodes {
            v.nodes.remove(id);
        }
        v.version = d.version;
        true
    }

    fn score(&self, v: &View, id: u32) -> i64 {
        match self.health(v, id) {
            Some("degraded") => v.degraded_score,
            Some("failed") => 0,
            _ => 100,
        }
    }

    /// Run-length encoded scores of `ids`, in order.
    fn score_runs(&self, v: &View, ids: impl Iterator<Item = u32>) -> Vec<pb::ScoreRun> {
        let mut runs: Vec<pb::ScoreRun> = Vec::new();
        for id in ids {
            let score = self.score(v, id);
            match runs.last_mut() {
                Some(last) if last.score == score => last.count += 1,
                _ => runs.push(pb::ScoreRun { score, count: 1 }),
            }
        }
        runs
    }

    fn health<'a>(&self, v: &'a View, id: u32) -> Option<&'a str> {
        v.nodes
            .get(&id)
            .and_then(|n| n.annotations.get("vendor.example.com/health"))
            .map(String::as_str)
    }

    async fn misbehave(&self) -> Option<Status> {
        match self.mode() {
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                None
            }
            _ => None,
        }
    }
}

fn ok() -> Option<pb::Result> {
    Some(pb::Result::default())
}

/// The service over a shared [`Health`].
#[derive(Clone)]
pub struct Svc(pub Arc<Health>);

impl std::ops::Deref for Svc {
    type Target = Health;
    fn deref(&self) -> &Health {
        &self.0
    }
}

#[tonic::async_trait]
impl Service for Svc {
    async fn handshake(
        &self,
        r: Request<pb::HandshakeRequest>,
    ) -> Result<Response<pb::HandshakeResponse>, Status> {
        let r = r.into_inner();
        self.counters.handshakes.fetch_add(1, Ordering::SeqCst);
        let cfg: serde_json::Value =
            serde_json::from_str(&r.plugin_config_json).unwrap_or_default();
        let degraded = cfg
            .get("degradedScore")
            .and_then(|v| v.as_i64())
            .unwrap_or(20);
        *self.config.lock() = Some(cfg);
        *self.profile.lock() = r.profile.clone();
        self.sessions.lock().insert(
            r.session,
            View {
                degraded_score: degraded,
                ..Default::default()
            },
        );
        use pb::ExtensionPoint as E;
        Ok(Response::new(pb::HandshakeResponse {
            protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
            extension_points: vec![
                E::Filter as i32,
                E::Score as i32,
                E::Reserve as i32,
                E::Permit as i32,
            ],
            requeue_events: vec![pb::RequeueEvent {
                resource: pb::EventResource::Node as i32,
                actions: vec![pb::EventAction::Add as i32, pb::EventAction::Update as i32],
            }],
            error: String::new(),
            node_local: self.node_local.load(Ordering::SeqCst),
            scores_with_filter: self.scores_with_filter.load(Ordering::SeqCst),
        }))
    }

    async fn filter(
        &self,
        r: Request<pb::FilterRequest>,
    ) -> Result<Response<pb::FilterResponse>, Status> {
        self.counters.filters.fetch_add(1, Ordering::SeqCst);
        self.misbehave().await;
        let r = r.into_inner();
        let delta = r.delta.unwrap_or_default();
        if !self.apply(&delta) {
            self.counters.resyncs.fetch_add(1, Ordering::SeqCst);
            return Ok(Response::new(pb::FilterResponse {
                resync: true,
                ..Default::default()
            }));
        }
        match self.mode() {
            Mode::Error => {
                return Ok(Response::new(pb::FilterResponse {
                    status: Some(pb::Result {
                        code: pb::Code::Error as i32,
                        reason: "the vendor agent database is down".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }));
            }
            Mode::Garbage => {
                return Ok(Response::new(pb::FilterResponse {
                    status: ok(),
                    rejections: vec![pb::Rejection {
                        code: pb::Code::Unschedulable as i32,
                        reason: "nope".into(),
                        node_ids: vec![999_999],
                    }],
                    ..Default::default()
                }));
            }
            _ => {}
        }
        let with_scores = r.with_scores && self.scores_with_filter.load(Ordering::SeqCst);
        let ids = expand(&r.candidates.unwrap_or_default(), 1 << 20)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let pod = r.pod.unwrap_or_default();
        if pod
            .labels
            .get("vendor.example.com/reject-pod")
            .map(String::as_str)
            == Some("true")
        {
            return Ok(Response::new(pb::FilterResponse {
                status: Some(pb::Result {
                    code: pb::Code::Unschedulable as i32,
                    reason: "the vendor refuses this pod".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }));
        }
        self.counters
            .filter_nodes
            .fetch_add(ids.len() as u64, Ordering::SeqCst);
        let s = self.sessions.lock();
        let v = &s[&delta.session];
        let with = |health: &str| -> Vec<u32> {
            ids.iter()
                .copied()
                .filter(|id| self.health(v, *id) == Some(health))
                .collect()
        };
        let mut rejections = Vec::new();
        for (health, code, reason) in [
            (
                "failed",
                pb::Code::Unschedulable,
                "node(s) reported failed by the vendor agent",
            ),
            (
                "retired",
                pb::Code::UnschedulableAndUnresolvable,
                "node(s) retired by the vendor",
            ),
        ] {
            let node_ids = with(health);
            if !node_ids.is_empty() {
                rejections.push(pb::Rejection {
                    code: code as i32,
                    reason: reason.into(),
                    node_ids,
                });
            }
        }
        let scores = with_scores.then(|| {
            let rejected: std::collections::HashSet<u32> = rejections
                .iter()
                .flat_map(|r| r.node_ids.iter().copied())
                .collect();
            let passed: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|id| !rejected.contains(id))
                .collect();
            self.counters
                .score_nodes
                .fetch_add(passed.len() as u64, Ordering::SeqCst);
            pb::FilterScores {
                status: ok(),
                runs: self.score_runs(v, passed.into_iter()),
            }
        });
        Ok(Response::new(pb::FilterResponse {
            resync: false,
            status: ok(),
            rejections,
            scores,
        }))
    }

    async fn score(
        &self,
        r: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        self.counters.scores.fetch_add(1, Ordering::SeqCst);
        self.misbehave().await;
        let r = r.into_inner();
        let delta = r.delta.unwrap_or_default();
        if !self.apply(&delta) {
            self.counters.resyncs.fetch_add(1, Ordering::SeqCst);
            return Ok(Response::new(pb::ScoreResponse {
                resync: true,
                ..Default::default()
            }));
        }
        let ids = expand(&r.nodes.unwrap_or_default(), 1 << 20)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.counters
            .score_nodes
            .fetch_add(ids.len() as u64, Ordering::SeqCst);
        let s = self.sessions.lock();
        let v = &s[&delta.session];
        let runs = self.score_runs(v, ids.into_iter());
        Ok(Response::new(pb::ScoreResponse {
            resync: false,
            status: ok(),
            runs,
        }))
    }

    async fn reserve(&self, _r: Request<pb::PodOnNode>) -> Result<Response<pb::Result>, Status> {
        self.counters.reserves.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::Result::default()))
    }
    async fn unreserve(&self, _r: Request<pb::PodOnNode>) -> Result<Response<pb::Empty>, Status> {
        self.counters.unreserves.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::Empty {}))
    }
    async fn permit(&self, r: Request<pb::PodOnNode>) -> Result<Response<pb::Result>, Status> {
        self.counters.permits.fetch_add(1, Ordering::SeqCst);
        let r = r.into_inner();
        let label = |k: &str| r.pod.as_ref().and_then(|p| p.labels.get(k).cloned());
        if label("deny").as_deref() == Some("true") {
            return Ok(Response::new(pb::Result {
                code: pb::Code::Unschedulable as i32,
                reason: "denied by the vendor".into(),
                ..Default::default()
            }));
        }
        // `hold: N` holds the pod N milliseconds (or answers N as given).
        if let Some(ms) = label("hold") {
            return Ok(Response::new(pb::Result {
                code: pb::Code::Wait as i32,
                wait_millis: ms.parse().unwrap_or(0),
                ..Default::default()
            }));
        }
        Ok(Response::new(pb::Result::default()))
    }

    type PermitDecisionsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::PermitDecision, Status>> + Send + 'static>,
    >;

    async fn permit_decisions(
        &self,
        _r: Request<pb::Empty>,
    ) -> Result<Response<Self::PermitDecisionsStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.deciders.lock().push(tx);
        let stream =
            futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|d| (Ok(d), rx)) },
            );
        Ok(Response::new(Box::pin(stream)))
    }
    async fn pre_bind(&self, _r: Request<pb::PodOnNode>) -> Result<Response<pb::Result>, Status> {
        Ok(Response::new(pb::Result::default()))
    }
    async fn bind(&self, _r: Request<pb::PodOnNode>) -> Result<Response<pb::Result>, Status> {
        Ok(Response::new(pb::Result {
            code: pb::Code::Skip as i32,
            ..Default::default()
        }))
    }
    async fn post_bind(&self, _r: Request<pb::PodOnNode>) -> Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }
}

/// A running server on a Unix socket.
pub struct Server {
    pub health: Arc<Health>,
    pub path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: tokio::runtime::Runtime,
}

impl Server {
    pub fn start(path: &Path) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _ = std::fs::remove_file(path);
        let health = Arc::new(Health::default());
        health.scores_with_filter.store(true, Ordering::SeqCst);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = {
            let _g = rt.enter();
            tokio::net::UnixListener::bind(path).unwrap()
        };
        let svc = RemotePluginServer::new(Svc(health.clone())).max_decoding_message_size(256 << 20);
        rt.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .ok();
        });
        Server {
            health,
            path: path.to_owned(),
            stop: Some(tx),
            rt,
        }
    }

    /// Stops it as a crash would: connections dropped, state gone.
    pub fn kill(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.rt.shutdown_timeout(Duration::from_millis(200));
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A fresh socket path.
pub fn socket(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-remote-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("plugin.sock")
}

/// Whether `go` runs.
pub fn go_available() -> bool {
    std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Go example plugin process; killed when dropped.
pub struct GoPlugin(std::process::Child);

impl Drop for GoPlugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds `sdk/go/examples/vendorhealth` into `dir`.
pub fn build_go_example(dir: &Path) -> PathBuf {
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk/go");
    let bin = dir.join("vendorhealth");
    let out = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("./examples/vendorhealth")
        .current_dir(&sdk)
        .output()
        .expect("running go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Starts the example on `sock` and waits until it listens.
pub fn start_go_example(bin: &Path, sock: &Path) -> GoPlugin {
    let _ = std::fs::remove_file(sock);
    let child = std::process::Command::new(bin)
        .arg("-listen")
        .arg(format!("unix://{}", sock.display()))
        .spawn()
        .expect("starting vendorhealth");
    let p = GoPlugin(child);
    let start = std::time::Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "vendorhealth did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}
