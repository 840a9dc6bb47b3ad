//! [`HttpExtender`]: one configured extender, called over HTTP(S) with the
//! JSON of `k8s.io/kube-scheduler/extender/v1`.
//!
//! Calls run on a small runtime of this crate's own (one worker thread,
//! shared by every extender of the process and never dropped), so the
//! scheduling thread can wait for an answer wherever it runs, inside
//! another runtime or not. Every call is bounded by the extender's
//! `httpTimeout` (connecting, sending, and reading the whole answer) and
//! its answer by [`MAX_ANSWER_BYTES`]. What the other side does wrong
//! (refuses the connection, hangs, answers a non-200 status, garbage, an
//! `Error`, a node it was not given, a score outside 0..=10) is a
//! [`CallError`] naming the extender and the verb; the engine applies the
//! failure policy.

use crate::metrics;
use crate::objects::{node_object, pod_object};
use crate::types::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, ExtenderPreemptionResult, HostPriorityList, MetaPod, MetaVictims,
    NodeList, Victims,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use names::NameIndex;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use strata_scheduler::cache::Snapshot;
use strata_scheduler::config::ConfigError;
use strata_scheduler::extenders::{
    Extender, ExtenderConfig, ExtenderError, ExtenderFilterOutcome, ExtenderVictims,
    MAX_EXTENDER_PRIORITY, pod_asks_for_any,
};
use strata_scheduler::framework::{NodeRef, PreemptionCandidate};
use strata_scheduler::model::{NodeId, PodInfo};

/// The largest answer read from an extender: 64 MiB (a filter answer with
/// node objects for 16,000 nodes is some tens of MiB).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The runtime extender calls run on.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("strata-extender")
        .enable_all()
        .build()
        .expect("the extender runtime starts (a thread and a timer)")
});

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Why a call to an extender gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Connecting or sending failed (the extender is down, refused, reset).
    #[error("{verb} at {url}: {message}")]
    Connect {
        /// The verb.
        verb: String,
        /// The URL called.
        url: String,
        /// The client's error.
        message: String,
    },
    /// No whole answer within the timeout.
    #[error("{verb} at {url}: no answer within {timeout:?} (httpTimeout)")]
    Timeout {
        /// The verb.
        verb: String,
        /// The URL called.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// A status other than 200 (kube-scheduler's wording).
    #[error("failed {verb} with extender at URL {url}, code {code}")]
    Status {
        /// The verb.
        verb: String,
        /// The URL called.
        url: String,
        /// The HTTP status.
        code: u16,
    },
    /// The answer was larger than [`MAX_ANSWER_BYTES`].
    #[error("{verb} at {url}: the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge {
        /// The verb.
        verb: String,
        /// The URL called.
        url: String,
    },
    /// The answer is not JSON of the expected type.
    #[error("{verb} at {url}: the answer is not a valid {what}: {message}")]
    Decode {
        /// The verb.
        verb: String,
        /// The URL called.
        url: String,
        /// The expected type.
        what: &'static str,
        /// The decoder's error.
        message: String,
    },
    /// The extender answered with an `Error`.
    #[error("{verb} at {url}: the extender answered with an error: {message}")]
    Remote {
        /// The verb.
        verb: String,
        /// The URL called.
        url: String,
        /// Its `Error`.
        message: String,
    },
    /// It named a node it was not given.
    #[error("{verb} at {url}: the answer names node {node:?}, which was not a candidate")]
    UnknownNode {
        /// The verb.
        verb: String,
        /// The URL called.
        url: String,
        /// The node.
        node: String,
    },
    /// A score outside `0..=MAX_EXTENDER_PRIORITY`.
    #[error("{verb} at {url}: node {node:?} scored {score}, outside 0..={MAX_EXTENDER_PRIORITY}")]
    BadScore {
        /// The verb.
        verb: String,
        /// The URL called.
        url: String,
        /// The node.
        node: String,
        /// The score.
        score: i64,
    },
}

impl CallError {
    /// The `reason` label of the error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Connect { .. } => "connect",
            CallError::Timeout { .. } => "timeout",
            CallError::Status { .. } => "http_status",
            CallError::TooLarge { .. } => "too_large",
            CallError::Decode { .. } => "decode",
            CallError::Remote { .. } => "remote_error",
            CallError::UnknownNode { .. } => "unknown_node",
            CallError::BadScore { .. } => "bad_score",
        }
    }
}

/// The candidates of one call, to map answered names back to nodes.
mod names {
    use strata_scheduler::cache::Snapshot;
    use strata_scheduler::intern::Sym;
    use strata_scheduler::model::NodeId;

    /// Candidate nodes, by slot: a name is mapped through the interner
    /// (a name never interned is no node at all) and the snapshot, then
    /// checked against the candidates.
    pub(super) struct NameIndex<'a> {
        snap: &'a Snapshot,
        candidate: Vec<bool>,
    }

    impl<'a> NameIndex<'a> {
        pub(super) fn new(snap: &'a Snapshot, ids: &[NodeId]) -> Self {
            let mut candidate = vec![false; snap.node_capacity()];
            for id in ids {
                if let Some(c) = candidate.get_mut(id.index()) {
                    *c = true;
                }
            }
            NameIndex { snap, candidate }
        }
        pub(super) fn get(&self, name: &str) -> Option<NodeId> {
            let id = self.snap.node_id(Sym::lookup(name)?)?;
            self.candidate
                .get(id.index())
                .copied()
                .unwrap_or(false)
                .then_some(id)
        }
    }
}

/// What a call needs, owned, so that it can run on the extender runtime.
#[derive(Clone)]
struct Caller {
    /// `urlPrefix` without a trailing slash.
    base: String,
    timeout: Duration,
    client: Client<HttpsConnector, Full<Bytes>>,
}

/// One configured extender.
pub struct HttpExtender {
    cfg: ExtenderConfig,
    base: String,
    managed: Vec<String>,
    caller: Caller,
}

impl std::fmt::Debug for HttpExtender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExtender")
            .field("urlPrefix", &self.cfg.url_prefix)
            .finish()
    }
}

impl HttpExtender {
    /// Builds the extender of entry `index` of `extenders:`: reads its TLS
    /// files. Errors name the field.
    pub fn new(index: usize, cfg: &ExtenderConfig) -> Result<HttpExtender, ConfigError> {
        let tls =
            crate::tls::client_config(cfg).map_err(|(field, message)| ConfigError::Invalid {
                field: format!("extenders[{index}].{field}"),
                message,
            })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.timeout()));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let server_name = cfg
            .tls_config
            .as_ref()
            .map(|t| t.server_name.clone())
            .unwrap_or_default();
        // The URL's scheme decides (kube-scheduler's transport does too).
        let connector = if server_name.is_empty() {
            builder.https_or_http().enable_http1().wrap_connector(http)
        } else {
            let name =
                rustls::pki_types::ServerName::try_from(server_name.clone()).map_err(|e| {
                    ConfigError::Invalid {
                        field: format!("extenders[{index}].tlsConfig.serverName"),
                        message: format!("{server_name:?}: {e}"),
                    }
                })?;
            builder
                .https_or_http()
                .with_server_name_resolver(move |_: &http::Uri| {
                    Ok::<_, std::convert::Infallible>(name.clone())
                })
                .enable_http1()
                .wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let base = cfg.url_prefix.trim().trim_end_matches('/').to_owned();
        Ok(HttpExtender {
            base: base.clone(),
            managed: cfg
                .managed_resources
                .iter()
                .map(|r| r.name.clone())
                .collect(),
            cfg: cfg.clone(),
            caller: Caller {
                base,
                timeout: cfg.timeout(),
                client,
            },
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ExtenderConfig {
        &self.cfg
    }
}

impl Caller {
    /// POSTs `body` to `verb` and reads the whole answer, within the
    /// timeout. Runs on the extender runtime.
    async fn post(self, verb: String, body: Vec<u8>) -> Result<Bytes, CallError> {
        let verb = verb.as_str();
        let url = format!("{}/{}", self.base, verb);
        let req = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Connect {
                verb: verb.to_owned(),
                url: url.clone(),
                message: format!("bad request: {e}"),
            })?;
        let client = self.client.clone();
        let call = async {
            let resp = client.request(req).await.map_err(|e| CallError::Connect {
                verb: verb.to_owned(),
                url: url.clone(),
                message: error_chain(&e),
            })?;
            if resp.status() != http::StatusCode::OK {
                return Err(CallError::Status {
                    verb: verb.to_owned(),
                    url: url.clone(),
                    code: resp.status().as_u16(),
                });
            }
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES);
            match body.collect().await {
                Ok(b) => Ok(b.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(CallError::TooLarge {
                    verb: verb.to_owned(),
                    url: url.clone(),
                }),
                Err(e) => Err(CallError::Connect {
                    verb: verb.to_owned(),
                    url: url.clone(),
                    message: format!("reading the answer: {e}"),
                }),
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout {
                verb: verb.to_owned(),
                url,
                timeout: self.timeout,
            }),
        }
    }
}

impl HttpExtender {
    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        verb: &str,
        what: &'static str,
        bytes: &[u8],
    ) -> Result<T, CallError> {
        serde_json::from_slice(bytes).map_err(|e| CallError::Decode {
            verb: verb.to_owned(),
            url: format!("{}/{}", self.base, verb),
            what,
            message: e.to_string(),
        })
    }

    /// Sends filter or prioritize args for `nodes` and returns the raw
    /// answer, waiting on the calling thread.
    fn call_blocking(
        &self,
        verb: &str,
        pod: &PodInfo,
        nodes: &[NodeId],
        snap: &Snapshot,
        names: &[&str],
    ) -> Result<Bytes, CallError> {
        let pod_obj = pod_object(pod);
        let body = if self.cfg.node_cache_capable {
            serde_json::to_vec(&ExtenderArgs::<_, k8s_openapi::api::core::v1::Node> {
                pod: &pod_obj,
                nodes: None,
                node_names: Some(names.to_vec()),
            })
        } else {
            serde_json::to_vec(&ExtenderArgs {
                pod: &pod_obj,
                nodes: Some(NodeList {
                    items: nodes.iter().map(|id| node_object(snap.node(*id))).collect(),
                }),
                node_names: None,
            })
        }
        .map_err(|e| CallError::Connect {
            verb: verb.to_owned(),
            url: format!("{}/{}", self.base, verb),
            message: format!("encoding the request: {e}"),
        })?;
        block_on(self.caller.clone().post(verb.to_owned(), body))
    }

    fn filter_call(
        &self,
        pod: &PodInfo,
        nodes: &[NodeId],
        snap: &Snapshot,
    ) -> Result<ExtenderFilterOutcome, CallError> {
        let verb = self.cfg.filter_verb.as_str();
        let names: Vec<&str> = nodes
            .iter()
            .map(|id| snap.node(*id).name.as_str())
            .collect();
        let bytes = self.call_blocking(verb, pod, nodes, snap, &names)?;
        let r: ExtenderFilterResult = self.decode(verb, "ExtenderFilterResult", &bytes)?;
        if !r.error.is_empty() {
            return Err(CallError::Remote {
                verb: verb.to_owned(),
                url: format!("{}/{}", self.base, verb),
                message: r.error,
            });
        }
        let index = NameIndex::new(snap, nodes);
        let lookup = |n: &str| {
            index.get(n).ok_or_else(|| CallError::UnknownNode {
                verb: verb.to_owned(),
                url: format!("{}/{}", self.base, verb),
                node: n.to_owned(),
            })
        };
        // kube-scheduler's order: names for a nodeCacheCapable extender
        // that sent names, else the node list, else nothing passed.
        let passed: Vec<&str> = match (&r.node_names, &r.nodes) {
            (Some(n), _) if self.cfg.node_cache_capable => n.iter().map(String::as_str).collect(),
            (_, Some(list)) => list
                .items
                .iter()
                .map(|o| o.metadata.name.as_str())
                .collect(),
            _ => Vec::new(),
        };
        let mut out = ExtenderFilterOutcome {
            feasible: Vec::with_capacity(passed.len()),
            ..Default::default()
        };
        for n in passed {
            out.feasible.push(lookup(n)?);
        }
        for (n, why) in &r.failed_and_unresolvable_nodes {
            out.failed_unresolvable.push((lookup(n)?, why.clone()));
        }
        for (n, why) in &r.failed_nodes {
            out.failed.push((lookup(n)?, why.clone()));
        }
        out.feasible.sort_unstable();
        out.feasible.dedup();
        Ok(out)
    }

    fn prioritize_call(
        &self,
        pod: &PodInfo,
        nodes: &[NodeId],
        snap: &Snapshot,
    ) -> Result<Vec<(NodeId, i64)>, CallError> {
        let verb = self.cfg.prioritize_verb.as_str();
        let names: Vec<&str> = nodes
            .iter()
            .map(|id| snap.node(*id).name.as_str())
            .collect();
        let bytes = self.call_blocking(verb, pod, nodes, snap, &names)?;
        let list: Option<HostPriorityList> = self.decode(verb, "HostPriorityList", &bytes)?;
        let index = NameIndex::new(snap, nodes);
        let mut out = Vec::new();
        for hp in list.unwrap_or_default() {
            let Some(id) = index.get(&hp.host) else {
                return Err(CallError::UnknownNode {
                    verb: verb.to_owned(),
                    url: format!("{}/{}", self.base, verb),
                    node: hp.host,
                });
            };
            if !(0..=MAX_EXTENDER_PRIORITY).contains(&hp.score) {
                return Err(CallError::BadScore {
                    verb: verb.to_owned(),
                    url: format!("{}/{}", self.base, verb),
                    node: hp.host,
                    score: hp.score,
                });
            }
            out.push((id, hp.score));
        }
        Ok(out)
    }

    /// Sends the preemption candidates (victims by UID to a
    /// nodeCacheCapable extender, whole pods to the others) and reads the
    /// nodes and victims it keeps. The answer is checked against the
    /// candidates by the engine.
    fn preempt_call(
        &self,
        pod: &PodInfo,
        candidates: &[PreemptionCandidate],
    ) -> Result<Vec<ExtenderVictims>, CallError> {
        let verb = self.cfg.preempt_verb.as_str();
        let pod_obj = pod_object(pod);
        let pdb = |c: &PreemptionCandidate| i64::try_from(c.pdb_violations).unwrap_or(i64::MAX);
        let args = if self.cfg.node_cache_capable {
            ExtenderPreemptionArgs {
                pod: &pod_obj,
                node_name_to_victims: None,
                node_name_to_meta_victims: Some(
                    candidates
                        .iter()
                        .map(|c| {
                            let v = MetaVictims {
                                pods: c
                                    .victims
                                    .iter()
                                    .map(|p| MetaPod {
                                        uid: p.uid.to_string(),
                                    })
                                    .collect(),
                                num_pdb_violations: pdb(c),
                            };
                            (c.node.name.as_str().to_owned(), v)
                        })
                        .collect(),
                ),
            }
        } else {
            ExtenderPreemptionArgs {
                pod: &pod_obj,
                node_name_to_victims: Some(
                    candidates
                        .iter()
                        .map(|c| {
                            let v = Victims {
                                pods: c.victims.iter().map(|p| pod_object(p)).collect(),
                                num_pdb_violations: pdb(c),
                            };
                            (c.node.name.as_str().to_owned(), v)
                        })
                        .collect(),
                ),
                node_name_to_meta_victims: None,
            }
        };
        let body = serde_json::to_vec(&args).map_err(|e| CallError::Connect {
            verb: verb.to_owned(),
            url: format!("{}/{}", self.base, verb),
            message: format!("encoding the request: {e}"),
        })?;
        let bytes = block_on(self.caller.clone().post(verb.to_owned(), body))?;
        let r: ExtenderPreemptionResult = self.decode(verb, "ExtenderPreemptionResult", &bytes)?;
        Ok(r.node_name_to_meta_victims
            .into_iter()
            .map(|(node, v)| ExtenderVictims {
                node,
                pods: v.pods.into_iter().map(|p| p.uid).collect(),
                pdb_violations: v.num_pdb_violations,
            })
            .collect())
    }

    async fn bind_call(&self, pod: &PodInfo, node: NodeRef) -> Result<(), CallError> {
        let verb = self.cfg.bind_verb.as_str();
        let args = ExtenderBindingArgs {
            pod_name: pod.name.to_string(),
            pod_namespace: pod.namespace.as_str().to_owned(),
            pod_uid: pod.uid.to_string(),
            node: node.name.as_str().to_owned(),
        };
        let body = serde_json::to_vec(&args).map_err(|e| CallError::Connect {
            verb: verb.to_owned(),
            url: format!("{}/{}", self.base, verb),
            message: format!("encoding the request: {e}"),
        })?;
        let bytes = spawn(self.caller.clone().post(verb.to_owned(), body)).await?;
        let r: ExtenderBindingResult = self.decode(verb, "ExtenderBindingResult", &bytes)?;
        if !r.error.is_empty() {
            return Err(CallError::Remote {
                verb: verb.to_owned(),
                url: format!("{}/{}", self.base, verb),
                message: r.error,
            });
        }
        Ok(())
    }

    fn record<T>(&self, point: &'static str, start: Instant, r: &Result<T, CallError>) {
        metrics::observe(
            &self.cfg.url_prefix,
            point,
            start.elapsed(),
            r.as_ref().err().map(CallError::reason),
        );
    }
}

/// The text of an error and its sources (hyper's own text is often just
/// "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Runs `fut` on the extender runtime and waits for it on this thread
/// (which may be inside another runtime: it only parks).
fn block_on<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, CallError>> + Send + 'static,
) -> Result<T, CallError> {
    futures::executor::block_on(spawn(fut))
}

/// Runs `fut` on the extender runtime and awaits it from any runtime.
async fn spawn<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, CallError>> + Send + 'static,
) -> Result<T, CallError> {
    match RUNTIME.spawn(fut).await {
        Ok(r) => r,
        Err(e) => Err(CallError::Connect {
            verb: String::new(),
            url: String::new(),
            message: format!("the extender call task failed: {e}"),
        }),
    }
}

#[async_trait::async_trait]
impl Extender for HttpExtender {
    fn name(&self) -> &str {
        &self.cfg.url_prefix
    }

    fn is_interested(&self, pod: &PodInfo) -> bool {
        self.managed.is_empty() || pod_asks_for_any(pod, &self.managed)
    }

    fn is_ignorable(&self) -> bool {
        self.cfg.ignorable
    }

    fn is_filter(&self) -> bool {
        !self.cfg.filter_verb.is_empty()
    }

    fn is_prioritizer(&self) -> bool {
        !self.cfg.prioritize_verb.is_empty()
    }

    fn weight(&self) -> i64 {
        self.cfg.weight
    }

    fn is_binder(&self) -> bool {
        !self.cfg.bind_verb.is_empty()
    }

    fn filter(
        &self,
        pod: &PodInfo,
        nodes: &[NodeId],
        snap: &Snapshot,
    ) -> Result<ExtenderFilterOutcome, ExtenderError> {
        let start = Instant::now();
        let r = self.filter_call(pod, nodes, snap);
        self.record("filter", start, &r);
        r.map_err(|e| ExtenderError(e.to_string()))
    }

    fn prioritize(
        &self,
        pod: &PodInfo,
        nodes: &[NodeId],
        snap: &Snapshot,
    ) -> Result<Vec<(NodeId, i64)>, ExtenderError> {
        let start = Instant::now();
        let r = self.prioritize_call(pod, nodes, snap);
        self.record("prioritize", start, &r);
        r.map_err(|e| ExtenderError(e.to_string()))
    }

    async fn bind(&self, pod: &PodInfo, node: NodeRef) -> Result<(), ExtenderError> {
        let start = Instant::now();
        let r = self.bind_call(pod, node).await;
        self.record("bind", start, &r);
        r.map_err(|e| ExtenderError(e.to_string()))
    }

    fn supports_preemption(&self) -> bool {
        !self.cfg.preempt_verb.is_empty()
    }

    fn process_preemption(
        &self,
        pod: &PodInfo,
        candidates: &[PreemptionCandidate],
        _snap: &Snapshot,
    ) -> Result<Vec<ExtenderVictims>, ExtenderError> {
        let start = Instant::now();
        let r = self.preempt_call(pod, candidates);
        self.record("preempt", start, &r);
        r.map_err(|e| ExtenderError(e.to_string()))
    }
}

/// The factory [`crate::register`] installs.
pub(crate) fn factory(
    index: usize,
    cfg: &ExtenderConfig,
) -> Result<Arc<dyn Extender>, ConfigError> {
    Ok(Arc::new(HttpExtender::new(index, cfg)?))
}
