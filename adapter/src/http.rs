//! `/healthz`, `/readyz` and `/metrics`.
//!
//! - `/healthz` is 200 while the engine thread is alive (it beats at least
//!   every loop turn, which is at most 50 ms apart when idle) and 500 when
//!   it has not beaten for [`STALL`]: a stuck engine gets restarted.
//! - `/readyz` is 200 once the preload is applied by the engine (a standby
//!   replica is ready too: it is warm and can take over), 503 before.
//! - `/metrics` is the Prometheus text exposition.
//!
//! By default the port is HTTPS and everything but the health checks needs
//! a token the API server authenticates and authorizes (see
//! [`crate::serving`]).

use crate::leader::Gate;
use crate::metrics::Metrics;
use crate::serving::{self, Serving};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the engine may go without a heartbeat before `/healthz` fails.
pub const STALL: Duration = Duration::from_secs(60);

/// What the endpoints read.
pub struct HttpState {
    /// Leadership and readiness.
    pub gate: Arc<Gate>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Engine heartbeat: milliseconds since `started`.
    pub heartbeat: Arc<AtomicU64>,
    /// When the engine's observer started counting.
    pub started: Instant,
    /// Set when the engine thread has ended.
    pub engine_done: Arc<AtomicBool>,
}

async fn healthz(State(s): State<Arc<HttpState>>) -> Response {
    let beat = Duration::from_millis(s.heartbeat.load(Ordering::Relaxed));
    let since = s.started.elapsed().saturating_sub(beat);
    if s.engine_done.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "engine stopped\n").into_response();
    }
    if since > STALL {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("engine stalled for {}s\n", since.as_secs()),
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    if s.gate.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "preloading\n").into_response()
    }
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// What [`serve`] started.
pub struct Served {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The server task.
    pub task: tokio::task::JoinHandle<()>,
    /// The certificate served (PEM), when serving HTTPS.
    pub certificate: Option<String>,
}

/// What [`serve`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the address failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The TLS setup failed.
    #[error(transparent)]
    Tls(#[from] crate::serving::ServingError),
}

/// Binds `addr` and serves the endpoints on the current runtime: HTTPS
/// with delegated authentication and authorization through `client`
/// ([`Serving::Secure`]), or plain HTTP ([`Serving::Insecure`]).
pub async fn serve(
    addr: SocketAddr,
    state: Arc<HttpState>,
    serving: &Serving,
    client: kube::Client,
) -> Result<Served, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let (task, certificate) = match serving {
        Serving::Insecure => {
            let app = app.layer(axum::middleware::from_fn(serving::timeout));
            (spawn_server(listener, app), None)
        }
        Serving::Secure(s) => {
            let (cfg, pem) = serving::tls_config(s)?;
            let delegated = Arc::new(serving::Delegated::new(
                client,
                s.always_allow_paths.clone(),
            ));
            let app = app
                .layer(axum::middleware::from_fn_with_state(
                    delegated,
                    serving::guard,
                ))
                .layer(axum::middleware::from_fn(serving::timeout));
            let tls = serving::TlsListener::new(listener, cfg)?;
            (spawn_server(tls, app), Some(pem))
        }
    };
    Ok(Served {
        addr: bound,
        task,
        certificate,
    })
}

/// Serves `app` on `listener` in a task of its own.
fn spawn_server<L>(listener: L, app: axum::Router) -> tokio::task::JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "health and metrics server stopped");
        }
    })
}
