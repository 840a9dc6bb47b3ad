//! The serving port's security, as kube-scheduler serves its port 10259:
//! HTTPS (a given certificate, or a self-signed one made at start) and
//! delegated authentication and authorization — a bearer token is checked
//! with a `TokenReview`, the request with a `SubjectAccessReview`
//! (non-resource path, verb from the method), both answered by the API
//! server and remembered for [`CACHE_TTL`]. Paths in
//! [`SecureServing::always_allow_paths`] (by default the health checks) are
//! served to anyone, as kube-scheduler's `--authorization-always-allow-paths`.
//!
//! Client certificates are not accepted as credentials (kube-scheduler can
//! also authenticate them against a client CA); use a token.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// How long a review's answer is reused (kube's delegated authentication
/// and authorization cache allowed answers for 10 s as well).
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Remembered answers beyond which the caches are cleared.
const CACHE_MAX: usize = 4096;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take to be answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTPS with delegated authentication and authorization.
#[derive(Clone, Debug, PartialEq)]
pub struct SecureServing {
    /// PEM certificate chain; with `key_file`. Neither: a self-signed
    /// certificate for `localhost`, `127.0.0.1` and the host name is made
    /// at start (as kube-scheduler does without `--tls-cert-file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Paths served without authentication or authorization.
    pub always_allow_paths: Vec<String>,
}

impl Default for SecureServing {
    fn default() -> Self {
        SecureServing {
            cert_file: None,
            key_file: None,
            always_allow_paths: ["/healthz", "/readyz", "/livez"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// How the health and metrics port is served.
#[derive(Clone, Debug, PartialEq)]
pub enum Serving {
    /// HTTPS with delegated authentication and authorization (the default).
    Secure(SecureServing),
    /// Plain HTTP, no authentication: for local runs and tests only.
    Insecure,
}

impl Default for Serving {
    fn default() -> Self {
        Serving::Secure(SecureServing::default())
    }
}

/// What setting up HTTPS can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Only one of the certificate and the key was given.
    #[error(
        "the serving certificate and key are given together (--tls-cert-file and --tls-private-key-file)"
    )]
    Half,
    /// Making the self-signed certificate or the TLS configuration failed.
    #[error("serving TLS: {0}")]
    Tls(String),
}

/// The TLS configuration of `s`, and the certificate served (PEM).
pub fn tls_config(s: &SecureServing) -> Result<(Arc<rustls::ServerConfig>, String), ServingError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (certs, key, pem) = match (&s.cert_file, &s.key_file) {
        (Some(c), Some(k)) => {
            let file_err = |path: &PathBuf, e: &dyn std::fmt::Display| ServingError::File {
                path: path.clone(),
                reason: e.to_string(),
            };
            let pem = std::fs::read_to_string(c).map_err(|e| file_err(c, &e))?;
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| file_err(c, &e))?;
            if certs.is_empty() {
                return Err(file_err(c, &"no PEM certificate in it"));
            }
            let key = PrivateKeyDer::from_pem_file(k).map_err(|e| file_err(k, &e))?;
            (certs, key, pem)
        }
        (None, None) => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
                let h = h.trim();
                if !h.is_empty() {
                    names.push(h.to_owned());
                }
            }
            let ck = rcgen::generate_simple_self_signed(names)
                .map_err(|e| ServingError::Tls(e.to_string()))?;
            let pem = ck.cert.pem();
            let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
                .map_err(|e| ServingError::Tls(e.to_string()))?;
            (vec![ck.cert.der().clone()], key, pem)
        }
        _ => return Err(ServingError::Half),
    };
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServingError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ServingError::Tls(e.to_string()))?;
    Ok((Arc::new(cfg), pem))
}

/// A listener whose connections are TLS streams. Handshakes run in tasks
/// of their own (bounded by [`HANDSHAKE_TIMEOUT`]), so a client that stalls
/// one delays nobody else.
pub struct TlsListener {
    local: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `cfg` on `tcp`.
    pub fn new(tcp: TcpListener, cfg: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(cfg);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        let _ = tx.send((s, addr)).await;
                    }
                });
            }
        });
        Ok(TlsListener { local, rx, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor task is gone (only when the listener is
            // dropped): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq)]
struct User {
    name: String,
    uid: Option<String>,
    groups: Vec<String>,
    extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// A user, a verb and a path.
type Decision = (String, String, String);

/// Delegated authentication and authorization against the API server.
pub struct Delegated {
    client: kube::Client,
    always_allow: Vec<String>,
    tokens: Mutex<FxHashMap<String, (Instant, Option<User>)>>,
    decisions: Mutex<FxHashMap<Decision, (Instant, bool)>>,
}

impl Delegated {
    /// Reviews through `client` (the scheduler's own identity, which needs
    /// `create` on `tokenreviews` and `subjectaccessreviews`).
    pub fn new(client: kube::Client, always_allow: Vec<String>) -> Delegated {
        Delegated {
            client,
            always_allow,
            tokens: Mutex::new(FxHashMap::default()),
            decisions: Mutex::new(FxHashMap::default()),
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Option<User>, kube::Error> {
        if let Some((at, u)) = self.tokens.lock().get(token)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(u.clone());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .map(|u| User {
                name: u.username.unwrap_or_default(),
                uid: u.uid,
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            });
        let mut c = self.tokens.lock();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(token.to_owned(), (Instant::now(), user.clone()));
        Ok(user)
    }

    async fn authorize(&self, user: &User, verb: &str, path: &str) -> Result<bool, kube::Error> {
        let key = (user.name.clone(), verb.to_owned(), path.to_owned());
        if let Some((at, allowed)) = self.decisions.lock().get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(*allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some(verb.to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let mut c = self.decisions.lock();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, (Instant::now(), allowed));
        Ok(allowed)
    }
}

fn plain(code: StatusCode, msg: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// The middleware: always-allowed paths pass; anything else needs a bearer
/// token the API server authenticates and a SubjectAccessReview it allows.
pub async fn guard(State(d): State<Arc<Delegated>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if d.always_allow.contains(&path) {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let Some(token) = token else {
        return plain(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
    };
    let user = match d.authenticate(&token).await {
        Ok(Some(u)) => u,
        Ok(None) => return plain(StatusCode::UNAUTHORIZED, "Unauthorized\n".into()),
        Err(e) => {
            tracing::warn!(error = %e, "TokenReview failed");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "authentication is unavailable\n".into(),
            );
        }
    };
    let verb = match *req.method() {
        axum::http::Method::GET | axum::http::Method::HEAD => "get",
        axum::http::Method::POST => "post",
        axum::http::Method::PUT => "put",
        axum::http::Method::DELETE => "delete",
        _ => "patch",
    };
    match d.authorize(&user, verb, &path).await {
        Ok(true) => next.run(req).await,
        Ok(false) => plain(
            StatusCode::FORBIDDEN,
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"\n",
                user.name
            ),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "SubjectAccessReview failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "authorization is unavailable\n".into(),
            )
        }
    }
}

/// Answers 503 to a request not answered within [`REQUEST_TIMEOUT`].
pub async fn timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "request timed out\n".into(),
        ),
    }
}
