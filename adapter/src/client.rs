//! The API client and the client-side rate limit.
//!
//! kube-rs has no client-side rate limiter, so the adapter keeps one: a
//! token bucket (`qps` sustained, `burst` at once) that every write waits on
//! (binds, status patches, deletions, Lease calls); events have a bucket of
//! their own. Lists and watches are not limited: their number is bounded by
//! the number of resources watched and the page size, and limiting them
//! would only delay the preload.

use crate::options::AdapterOptions;
use kube::config::{KubeConfigOptions, Kubeconfig};
use parking_lot::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Its path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Neither in-cluster config nor a default kubeconfig was found.
    #[error(
        "no Kubernetes configuration found (not in a cluster, no KUBECONFIG or ~/.kube/config): {0}"
    )]
    Infer(String),
    /// The client could not be built from the configuration.
    #[error("building the API client: {0}")]
    Build(String),
}

/// A client for the configured cluster: the kubeconfig given, else the
/// in-cluster service account, else `KUBECONFIG` / `~/.kube/config`.
pub async fn make_client(opts: &AdapterOptions) -> Result<kube::Client, ClientError> {
    let mut config = match &opts.kubeconfig {
        Some(path) => {
            let p = path.display().to_string();
            let kc = Kubeconfig::read_from(path).map_err(|e| ClientError::Kubeconfig {
                path: p.clone(),
                message: e.to_string(),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| ClientError::Kubeconfig {
                    path: p,
                    message: e.to_string(),
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ClientError::Infer(e.to_string()))?,
    };
    // Watches are ended by the server after their timeoutSeconds; give the
    // read a margin above that.
    config.read_timeout = Some(Duration::from_secs(330));
    config.connect_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(config).map_err(|e| ClientError::Build(e.to_string()))
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate: rate.max(1e-3),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token if one is there now.
    pub fn try_acquire(&self) -> bool {
        let mut g = self.state.lock();
        self.refill(&mut g);
        if g.0 >= 1.0 {
            g.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Waits for a token. Tokens are handed out in call order: a caller
    /// reserves its token (the count may go negative) and sleeps until it
    /// is due.
    pub async fn acquire(&self) {
        let wait = {
            let mut g = self.state.lock();
            self.refill(&mut g);
            g.0 -= 1.0;
            if g.0 >= 0.0 {
                Duration::ZERO
            } else {
                // Saturates for a rate too small to express the wait.
                Duration::try_from_secs_f64(-g.0 / self.rate).unwrap_or(Duration::MAX)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn refill(&self, g: &mut (f64, Instant)) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(g.1).as_secs_f64();
        g.0 = (g.0 + dt * self.rate).min(self.burst);
        g.1 = now;
    }
}

/// How often [`api_served`] tries when the API server answers with an error
/// that says nothing about whether the API is served (a 5xx, a timeout).
const PROBE_ATTEMPTS: u32 = 5;

/// Whether the API server serves `ar` and lets this scheduler list it,
/// checked with one small list: `false` at once on 404 (not served) or 403
/// (not readable), with one info line naming `api` and `consequence`; other
/// errors are retried a few times, a second apart, so a brief API outage at
/// start does not turn an optional API off for the life of the process.
pub async fn api_served(
    client: &kube::Client,
    ar: &kube::core::ApiResource,
    api: &str,
    consequence: &str,
) -> bool {
    let probe: kube::Api<kube::core::DynamicObject> = kube::Api::all_with(client.clone(), ar);
    let params = kube::api::ListParams::default().limit(1);
    for attempt in 1..=PROBE_ATTEMPTS {
        match probe.list(&params).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404) => {
                tracing::info!(api, code = s.code, error = %s.message, "API not served or not readable: {consequence}");
                return false;
            }
            Err(e) if attempt < PROBE_ATTEMPTS => {
                tracing::debug!(api, error = %e, attempt, "probing the API failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::warn!(api, error = %e, "API could not be probed: {consequence}");
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_rate() {
        let l = RateLimiter::new(10.0, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        assert!(t0.elapsed() < Duration::from_millis(1));
        for _ in 0..10 {
            l.acquire().await;
        }
        let el = t0.elapsed();
        assert!(
            el >= Duration::from_millis(990) && el <= Duration::from_millis(1010),
            "{el:?}"
        );
        assert!(!l.try_acquire());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(l.try_acquire());
    }
}
