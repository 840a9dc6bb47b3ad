//! One remote plugin's connection: the gRPC channel, the session, and the
//! plugin's view of the snapshot as this side knows it.
//!
//! The calls a scheduling thread waits on (Handshake, Filter, Score,
//! Reserve, Unreserve, Permit) go over a connection of their own that the
//! waiting thread drives itself (a current-thread runtime per plugin), so a
//! round trip costs the wake-up of the plugin and of the caller and nothing
//! else. The binding-cycle calls, PostBind and the PermitDecisions stream,
//! and any blocking call made from inside a tokio runtime, run on one small
//! multi-thread runtime owned by this crate, so an engine runtime that
//! blocks never starves them.
//!
//! Snapshot sync: the session holds `version`, the last version the plugin
//! acknowledged. A cycle's first call sends the nodes changed since (read
//! from the snapshot's change log through a `ChangeTracker`), under a new
//! version; a call that changed nothing sends `base_version == version` and
//! no node. A delta whose answer never came is not trusted to have landed:
//! its nodes are sent again with the next delta, which names the last
//! acknowledged version as its base, so a plugin that did apply it answers
//! `resync`. A `resync` answer (the plugin restarted, or lost count) starts
//! a new session: handshake, then a full snapshot, then the call once more.

use crate::args::RemoteArgs;
use crate::pb::remote_plugin_client::RemotePluginClient;
use crate::{Point, metrics, pb};
use parking_lot::Mutex;
use prost::Message;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strata_scheduler::cache::ChangeTracker;
use strata_scheduler::sdk::{ClusterEventKind, NodeId, Snapshot};
use tonic::transport::Channel;

/// Why a call to a remote plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or the server answered with a gRPC error.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The answer does not make sense (a node that was not a candidate,
    /// scores that do not cover the nodes, an unknown code).
    #[error("invalid answer: {0}")]
    Invalid(String),
    /// The plugin answered with code ERROR.
    #[error("the plugin reported an error: {0}")]
    Plugin(String),
    /// The handshake failed or the session could not be kept.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl CallError {
    /// The `kind` label of the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::Unavailable(_) => "unavailable",
            CallError::Invalid(_) => "invalid_response",
            CallError::Plugin(_) => "plugin_error",
            CallError::Protocol(_) => "protocol",
        }
    }
}

/// The runtime every remote call runs on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-remote")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            // Without threads the process cannot schedule at all.
            Err(e) => panic!("starting the remote plugin runtime: {e}"),
        }
    })
}

/// Runs `fut` on the crate's runtime and waits for it, from any thread.
pub(crate) fn block<T: Send + 'static>(
    fut: impl Future<Output = Result<T, CallError>> + Send + 'static,
) -> Result<T, CallError> {
    let h = runtime().spawn(fut);
    futures::executor::block_on(h)
        .map_err(|e| CallError::Protocol(format!("call task ended: {e}")))?
}

/// Runs `fut` on the crate's runtime, awaited from another runtime.
pub(crate) async fn run<T: Send + 'static>(
    fut: impl Future<Output = Result<T, CallError>> + Send + 'static,
) -> Result<T, CallError> {
    runtime()
        .spawn(fut)
        .await
        .map_err(|e| CallError::Protocol(format!("call task ended: {e}")))?
}

/// A connection of its own for the calls a scheduling thread waits on,
/// driven by that thread: its tasks run on a current-thread runtime that
/// only the waiting caller polls, so a call wakes no other thread of this
/// process (the shared runtime costs a wake-up of one of its workers to
/// start the call and one of the caller to end it).
struct Local {
    rt: Option<tokio::runtime::Runtime>,
    client: RemotePluginClient<Channel>,
}

impl Drop for Local {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async context forbids.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on the crate's runtime without waiting for it.
pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    drop(runtime().spawn(fut));
}

/// Counts one failed call of `plugin` at `point`.
pub(crate) fn count_error(plugin: &str, point: Point, e: &CallError) {
    metrics::get()
        .errors
        .get_or_create(&metrics::ErrorLabels {
            plugin: plugin.to_owned(),
            extension_point: point.label(),
            kind: e.kind(),
        })
        .inc();
}

/// A call with a deadline.
pub(crate) async fn timed<T>(
    d: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(d, fut).await {
        Err(_) => Err(CallError::Timeout(d)),
        Ok(Err(s)) => Err(match s.code() {
            tonic::Code::Internal | tonic::Code::Unknown
                if s.message().contains("decode") || s.message().contains("protocol") =>
            {
                CallError::Invalid(s.to_string())
            }
            _ => CallError::Unavailable(format!("{}: {}", s.code(), s.message())),
        }),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// The rustls client configuration of `tls`, speaking HTTP/2 (ALPN `h2`).
fn tls_config(tls: &crate::args::TlsArgs) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |field: &str, path: &str| {
        std::fs::read(path).map_err(|e| format!("remote.tls.{field}: reading {path:?}: {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("caFile", &tls.ca_file)?) {
        let c = c.map_err(|e| format!("remote.tls.caFile: not PEM certificates: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("remote.tls.caFile: a certificate is not usable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("remote.tls.caFile: holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("remote.tls: {e}"))?
        .with_root_certificates(roots);
    let mut cfg = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(&read("certFile", cert)?)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("remote.tls.certFile: not PEM certificates: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&read("keyFile", key)?)
                .map_err(|e| format!("remote.tls.keyFile: not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("remote.tls.certFile: unusable client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A TCP endpoint over TLS: each connection dials `uri`'s host and port
/// and runs the TLS handshake before HTTP/2 starts.
fn tls_channel(
    uri: &str,
    tls: &crate::args::TlsArgs,
    timeout: Duration,
) -> Result<Channel, String> {
    let parsed: tonic::codegen::http::Uri = uri.parse().map_err(|e| format!("{uri}: {e}"))?;
    let host = parsed.host().unwrap_or_default().to_owned();
    let port = parsed.port_u16().unwrap_or(443);
    let name = tls.server_name.clone().unwrap_or_else(|| host.clone());
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| format!("remote.tls.serverName: {name:?}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(tls)?));
    let e = tonic::transport::Endpoint::from_shared(uri.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout);
    Ok(
        e.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let (host, connector, server_name) =
                (host.clone(), connector.clone(), server_name.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let s = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        })),
    )
}

/// A channel to the plugin whose connection tasks run on `rt`.
fn channel(args: &RemoteArgs, rt: &tokio::runtime::Handle) -> Result<Channel, String> {
    let _g = rt.enter();
    if let (crate::args::Endpoint::Tcp(uri), Some(tls)) = (&args.endpoint, &args.tls) {
        return tls_channel(uri, tls, args.timeout.max(Duration::from_millis(500)));
    }
    match &args.endpoint {
        crate::args::Endpoint::Tcp(uri) => tonic::transport::Endpoint::from_shared(uri.clone())
            .map_err(|e| e.to_string())
            .map(|e| {
                e.connect_timeout(args.timeout.max(Duration::from_millis(500)))
                    .tcp_nodelay(true)
                    .connect_lazy()
            }),
        crate::args::Endpoint::Unix(path) => {
            let path = Arc::new(path.clone());
            let e = tonic::transport::Endpoint::from_static("http://localhost")
                .connect_timeout(args.timeout.max(Duration::from_millis(500)));
            Ok(
                e.connect_with_connector_lazy(tower::service_fn(
                    move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(path.as_str()).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                        }
                    },
                )),
            )
        }
    }
}

/// Counters of one plugin's traffic, for tests and measurements.
#[derive(Debug, Default)]
pub struct Stats {
    /// Calls made (every point).
    pub calls: AtomicU64,
    /// Encoded request bytes sent, total.
    pub sent_bytes: AtomicU64,
    /// Encoded bytes of the last Filter request.
    pub last_filter_bytes: AtomicU64,
    /// Encoded bytes of the last Score request.
    pub last_score_bytes: AtomicU64,
    /// Full snapshots sent.
    pub full_syncs: AtomicU64,
    /// Handshakes made.
    pub handshakes: AtomicU64,
    /// Nodes asked about in Filter calls, total.
    pub filter_nodes_asked: AtomicU64,
    /// Nodes asked about in Score calls, total.
    pub score_nodes_asked: AtomicU64,
    /// Nodes scored in Filter calls (`with_scores`), total.
    pub filter_scored_nodes: AtomicU64,
}

/// The traffic counters of the remote plugin called `name` (the latest one
/// built under that name), if any.
pub fn stats(name: &str) -> Option<Arc<Stats>> {
    stats_table().lock().get(name).cloned()
}

fn stats_table() -> &'static Mutex<std::collections::HashMap<String, Arc<Stats>>> {
    static T: std::sync::OnceLock<Mutex<std::collections::HashMap<String, Arc<Stats>>>> =
        std::sync::OnceLock::new();
    T.get_or_init(Default::default)
}

/// What the handshake told.
#[derive(Clone, Debug, Default)]
pub(crate) struct Declared {
    pub points: Vec<Point>,
    pub events: Vec<ClusterEventKind>,
    pub node_local: bool,
    /// The plugin scores the nodes it passes in a Filter call when asked.
    pub scores_with_filter: bool,
}

struct SyncState {
    session: u64,
    handshaken: bool,
    /// The version the plugin acknowledged last.
    version: u64,
    /// The highest version ever sent in this session.
    sent: u64,
    full_needed: bool,
    tracker: ChangeTracker,
    /// Nodes of deltas whose answer never came.
    pending: Vec<u32>,
}

/// One remote plugin's connection and session.
pub(crate) struct Conn {
    pub name: &'static str,
    pub profile: String,
    pub args: RemoteArgs,
    client: RemotePluginClient<Channel>,
    /// The connection of blocking calls; `None` when no current-thread
    /// runtime could be built (the shared runtime then serves them).
    local: Option<Local>,
    sync: Mutex<SyncState>,
    pub stats: Arc<Stats>,
}

fn new_session() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    // SplitMix64 finaliser over time, pid and a counter: distinct per process
    // and per handshake.
    let mut z = t ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

impl Conn {
    pub fn new(name: &'static str, profile: String, args: RemoteArgs) -> Result<Conn, String> {
        let client = |ch: Channel| {
            RemotePluginClient::new(ch)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(512 << 20)
        };
        let shared = client(channel(&args, runtime().handle())?);
        let local = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let c = client(channel(&args, rt.handle())?);
                Some(Local {
                    rt: Some(rt),
                    client: c,
                })
            }
            Err(e) => {
                tracing::warn!(plugin = name, error = %e, "no runtime of its own for the blocking calls; they share the crate's");
                None
            }
        };
        let stats = Arc::new(Stats::default());
        stats_table().lock().insert(name.to_owned(), stats.clone());
        Ok(Conn {
            name,
            profile,
            args,
            client: shared,
            local,
            sync: Mutex::new(SyncState {
                session: 0,
                handshaken: false,
                version: 0,
                sent: 0,
                full_needed: true,
                tracker: ChangeTracker::new(),
                pending: Vec::new(),
            }),
            stats,
        })
    }

    pub fn session(&self) -> u64 {
        self.sync.lock().session
    }

    /// Records one call's duration.
    pub fn observe(&self, point: Point, start: Instant) {
        metrics::get()
            .duration
            .get_or_create(&metrics::PointLabels {
                plugin: self.name.to_owned(),
                extension_point: point.label(),
            })
            .observe(start.elapsed().as_secs_f64());
    }

    pub fn count_sent(&self, point: Point, bytes: usize) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .sent_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        metrics::get()
            .sent_bytes
            .get_or_create(&metrics::PointLabels {
                plugin: self.name.to_owned(),
                extension_point: point.label(),
            })
            .inc_by(bytes as u64);
    }

    /// Opens a session (blocking).
    pub fn handshake(&self) -> Result<Declared, CallError> {
        let mut st = self.sync.lock();
        self.handshake_locked(&mut st)
    }

    fn handshake_locked(&self, st: &mut SyncState) -> Result<Declared, CallError> {
        let session = new_session();
        let req = pb::HandshakeRequest {
            protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
            plugin_name: self.name.to_owned(),
            profile: self.profile.clone(),
            plugin_config_json: self.args.plugin_config.to_string(),
            session,
        };
        self.stats.handshakes.fetch_add(1, Ordering::Relaxed);
        let d = self.args.timeout;
        let resp = self.blocking(|mut c| async move { timed(d, c.handshake(req)).await })?;
        if !resp.error.is_empty() {
            return Err(CallError::Protocol(format!(
                "the plugin refused its configuration: {}",
                resp.error
            )));
        }
        if resp.protocol_version != pb::ProtocolVersion::ProtocolVersion1 as i32 {
            return Err(CallError::Protocol(format!(
                "the plugin speaks protocol version {}, this scheduler 1",
                resp.protocol_version
            )));
        }
        let declared = crate::declared(&resp).map_err(CallError::Invalid)?;
        st.session = session;
        st.handshaken = true;
        st.version = 0;
        st.sent = 0;
        st.full_needed = true;
        st.pending.clear();
        Ok(declared)
    }

    fn delta(&self, st: &mut SyncState, snap: &Snapshot) -> pb::SnapshotDelta {
        let mut d = pb::SnapshotDelta {
            session: st.session,
            base_version: st.version,
            version: st.version,
            ..Default::default()
        };
        if st.full_needed {
            st.tracker.reset();
            let _ = st.tracker.changed(snap);
            st.pending.clear();
            d.full = true;
            d.base_version = 0;
            d.nodes = snap.nodes().map(crate::convert::node).collect();
        } else {
            let mut ids: Vec<u32> = st.tracker.changed(snap).into_iter().collect();
            ids.append(&mut st.pending);
            ids.sort_unstable();
            ids.dedup();
            let cap = snap.node_capacity();
            for i in ids {
                if (i as usize) >= cap {
                    continue;
                }
                let n = snap.node(NodeId(i));
                if n.present {
                    d.nodes.push(crate::convert::node(n));
                } else {
                    d.removed_nodes.push(i);
                }
            }
        }
        if d.full || !d.nodes.is_empty() || !d.removed_nodes.is_empty() {
            st.sent = st.sent.max(st.version) + 1;
            d.version = st.sent;
        }
        d
    }

    /// A cycle call (Filter or Score) with the snapshot brought up to date
    /// first; `call` gets the delta and the deadline and returns the answer
    /// and whether the plugin asked for a resync.
    pub fn cycle_call<R>(
        &self,
        snap: &Snapshot,
        mut call: impl FnMut(pb::SnapshotDelta, Duration) -> Result<(R, bool), CallError>,
    ) -> Result<R, CallError> {
        let mut st = self.sync.lock();
        for _ in 0..2 {
            if !st.handshaken {
                self.handshake_locked(&mut st)?;
            }
            let delta = self.delta(&mut st, snap);
            let full = delta.full;
            let version = delta.version;
            let sent_nodes: Vec<u32> = if full {
                Vec::new()
            } else {
                delta
                    .nodes
                    .iter()
                    .map(|n| n.id)
                    .chain(delta.removed_nodes.iter().copied())
                    .collect()
            };
            let deadline = if full {
                self.args.sync_timeout
            } else {
                self.args.timeout
            };
            if full {
                self.stats.full_syncs.fetch_add(1, Ordering::Relaxed);
            }
            match call(delta, deadline) {
                Ok((r, false)) => {
                    st.version = version;
                    st.full_needed = false;
                    return Ok(r);
                }
                Ok((_, true)) => {
                    tracing::info!(plugin = self.name, "remote plugin asked to resynchronise");
                    st.handshaken = false;
                    st.full_needed = true;
                }
                Err(e) => {
                    if full {
                        st.full_needed = true;
                    } else {
                        st.pending = sent_nodes;
                    }
                    return Err(e);
                }
            }
        }
        Err(CallError::Protocol(
            "the plugin asked to resynchronise right after a full snapshot".into(),
        ))
    }

    /// The shared runtime's client, for the calls awaited from async code
    /// or not waited for.
    pub fn client(&self) -> RemotePluginClient<Channel> {
        self.client.clone()
    }

    /// Makes the call `f` builds and waits for it, from a thread that may
    /// block: on the connection this thread drives when it is outside any
    /// tokio runtime (the scheduling thread), else on the shared runtime.
    pub fn blocking<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce(RemotePluginClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, CallError>> + Send + 'static,
    {
        match (&self.local, tokio::runtime::Handle::try_current()) {
            (
                Some(Local {
                    rt: Some(rt),
                    client,
                }),
                Err(_),
            ) => rt.block_on(f(client.clone())),
            _ => block(f(self.client.clone())),
        }
    }
}

/// Encoded size of a message.
pub(crate) fn size<M: Message>(m: &M) -> usize {
    m.encoded_len()
}
