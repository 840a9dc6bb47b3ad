//! The adapter's settings: where the API is, how hard to call it, how to
//! elect a leader, where to serve health and metrics.
//!
//! They come from the scheduler configuration file (kube-scheduler's
//! `clientConnection` and `leaderElection` blocks, `healthzBindAddress`,
//! `metricsBindAddress`), then command-line flags override them. Every
//! value is checked here, so the rest of the adapter never sees a bad one.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use strata_scheduler::config::SchedulerConfig;

/// A bad setting, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OptionsError {
    /// The field, e.g. `leaderElection.renewDeadline`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> OptionsError {
    OptionsError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Leader election settings (kube-scheduler's `leaderElection`).
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderElection {
    /// Whether to elect a leader; without it this replica always schedules.
    pub enabled: bool,
    /// How long a lease is valid after its last renewal (default 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up
    /// (default 10 s); must be shorter than the lease duration.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew (default 2 s).
    pub retry_period: Duration,
    /// The Lease's name (default `strata-scheduler`).
    pub lease_name: String,
    /// The Lease's namespace (default: the pod's namespace, else
    /// `kube-system`).
    pub lease_namespace: String,
    /// This replica's identity (default: hostname plus a random suffix).
    pub identity: String,
    /// After losing the Lease, campaign again instead of stopping the
    /// process (default false: `strata run` exits, as kube-scheduler does,
    /// so no state from the lost term survives).
    pub recampaign: bool,
}

/// Everything the adapter needs besides the scheduler configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterOptions {
    /// Kubeconfig file; `None` uses the in-cluster service account, then
    /// `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Sustained write requests per second to the API (binds, status
    /// patches, deletions, Lease updates).
    pub qps: f64,
    /// Writes allowed in a burst above `qps`.
    pub burst: u32,
    /// Events per second (a budget of their own, so a storm of failures
    /// cannot starve binds).
    pub event_qps: f64,
    /// Events allowed in a burst.
    pub event_burst: u32,
    /// Events waiting to be sent; beyond this they are dropped (counted in
    /// `strata_events_dropped_total`).
    pub event_queue: usize,
    /// Objects per list page during preload and relists.
    pub page_size: u32,
    /// Leader election.
    pub leader_election: LeaderElection,
    /// Address of `/healthz`, `/readyz` and `/metrics` (`None`: no server).
    pub http_address: Option<SocketAddr>,
    /// How long shutdown waits for binds in flight.
    pub shutdown_grace: Duration,
    /// How `http_address` is served: HTTPS with delegated authentication
    /// and authorization (default), or plain HTTP.
    pub serving: crate::serving::Serving,
    /// How long one `pods/binding` call may take before its outcome is read
    /// back from the API (default 30 s).
    pub bind_timeout: Duration,
}

/// `clientConnection` as kube-scheduler spells it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientConnection {
    kubeconfig: Option<String>,
    qps: Option<f64>,
    burst: Option<u32>,
    event_qps: Option<f64>,
    event_burst: Option<u32>,
    page_size: Option<u32>,
    // kube-scheduler's fields, checked (a typo is refused) but not
    // followed: the client always speaks JSON.
    accept_content_types: Option<String>,
    content_type: Option<String>,
}

/// The media types client-go's `contentType` / `acceptContentTypes` take.
const MEDIA_TYPES: [&str; 2] = ["application/json", "application/vnd.kubernetes.protobuf"];

/// `leaderElection` as kube-scheduler spells it (durations as `15s`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeaderElectionConfig {
    leader_elect: Option<bool>,
    lease_duration: Option<String>,
    renew_deadline: Option<String>,
    retry_period: Option<String>,
    resource_name: Option<String>,
    resource_namespace: Option<String>,
    /// Only `leases` (kube-scheduler's only lock since 1.24) is accepted.
    resource_lock: Option<String>,
}

/// Parses a Go-style duration: `15s`, `500ms`, `1m30s`, `2h` (the one
/// parser of the workspace; it never panics, and a value past what a
/// `Duration` holds saturates, for [`AdapterOptions::validate`] to refuse).
pub use strata_scheduler::config::parse_duration;

/// The longest any of the adapter's durations may be (lease, renew
/// deadline, retry period, shutdown grace): a day. They are added to clock
/// readings and the lease's is written to the Lease as whole seconds in an
/// `int32`.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The fewest API writes (or events) per second `qps` may ask for; below it
/// a token would be due after hours.
pub const MIN_QPS: f64 = 0.001;
/// The most API writes (or events) per second `qps` may ask for.
pub const MAX_QPS: f64 = 1e6;

/// The blocks reach here as JSON, where YAML's `.nan` and `.inf` became
/// `null`: a null field would silently take its default, so it is refused.
fn no_nulls(block: &str, v: &serde_json::Value) -> Result<(), OptionsError> {
    if let Some(m) = v.as_object()
        && let Some((k, _)) = m.iter().find(|(_, x)| x.is_null())
    {
        return Err(bad(
            &format!("{block}.{k}"),
            "has no value (NaN and infinities are not numbers)",
        ));
    }
    Ok(())
}

/// Decodes one block, naming the field inside it that is wrong (e.g.
/// `leaderElection.leaseDuration` for a number where a duration belongs).
fn decode<T: serde::de::DeserializeOwned>(
    block: &str,
    v: &serde_json::Value,
) -> Result<T, OptionsError> {
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let path = e.path().to_string();
        let field = match path.as_str() {
            "" | "." | "?" => block.to_owned(),
            p => format!("{block}.{p}"),
        };
        bad(&field, e.into_inner().to_string())
    })
}

fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "strata".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}_{:08x}", nanos ^ std::process::id())
}

fn default_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kube-system".to_owned())
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            kubeconfig: None,
            qps: 50.0,
            burst: 100,
            event_qps: 10.0,
            event_burst: 50,
            event_queue: 1000,
            page_size: 500,
            leader_election: LeaderElection {
                enabled: true,
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
                lease_name: "strata-scheduler".to_owned(),
                lease_namespace: default_namespace(),
                identity: default_identity(),
                recampaign: false,
            },
            http_address: Some(SocketAddr::from(([0, 0, 0, 0], 10259))),
            shutdown_grace: Duration::from_secs(10),
            serving: crate::serving::Serving::default(),
            bind_timeout: crate::port::BIND_TIMEOUT,
        }
    }
}

impl AdapterOptions {
    /// Defaults, then the configuration file's `clientConnection`,
    /// `leaderElection`, `healthzBindAddress` / `metricsBindAddress`.
    pub fn from_config(cfg: &SchedulerConfig) -> Result<AdapterOptions, OptionsError> {
        let mut o = AdapterOptions::default();
        if let Some(v) = &cfg.client_connection {
            no_nulls("clientConnection", v)?;
            let cc: ClientConnection = decode("clientConnection", v)?;
            if let Some(k) = cc.kubeconfig.filter(|k| !k.is_empty()) {
                o.kubeconfig = Some(k.into());
            }
            if let Some(q) = cc.qps {
                o.qps = q;
            }
            if let Some(b) = cc.burst {
                o.burst = b;
            }
            if let Some(q) = cc.event_qps {
                o.event_qps = q;
            }
            if let Some(b) = cc.event_burst {
                o.event_burst = b;
            }
            if let Some(p) = cc.page_size {
                o.page_size = p;
            }
            if let Some(t) = cc.content_type.filter(|t| !t.is_empty())
                && !MEDIA_TYPES.contains(&t.as_str())
            {
                return Err(bad(
                    "clientConnection.contentType",
                    format!("{t:?} is not one of {}", MEDIA_TYPES.join(", ")),
                ));
            }
            if let Some(ts) = cc.accept_content_types.filter(|t| !t.is_empty())
                && let Some(t) = ts
                    .split(',')
                    .map(str::trim)
                    .find(|t| !MEDIA_TYPES.contains(t))
            {
                return Err(bad(
                    "clientConnection.acceptContentTypes",
                    format!(
                        "{t:?} is not one of {} (a comma-separated list)",
                        MEDIA_TYPES.join(", ")
                    ),
                ));
            }
        }
        if let Some(v) = &cfg.leader_election {
            no_nulls("leaderElection", v)?;
            let le: LeaderElectionConfig = decode("leaderElection", v)?;
            let l = &mut o.leader_election;
            if let Some(e) = le.leader_elect {
                l.enabled = e;
            }
            for (field, val, slot) in [
                (
                    "leaderElection.leaseDuration",
                    &le.lease_duration,
                    &mut l.lease_duration,
                ),
                (
                    "leaderElection.renewDeadline",
                    &le.renew_deadline,
                    &mut l.renew_deadline,
                ),
                (
                    "leaderElection.retryPeriod",
                    &le.retry_period,
                    &mut l.retry_period,
                ),
            ] {
                if let Some(s) = val {
                    *slot = parse_duration(s).ok_or_else(|| {
                        bad(field, format!("{s:?} is not a duration such as 15s"))
                    })?;
                }
            }
            if let Some(lock) = le.resource_lock.filter(|l| !l.is_empty())
                && lock != "leases"
            {
                return Err(bad(
                    "leaderElection.resourceLock",
                    format!("{lock:?} is not supported: the lock is always a Lease (leases)"),
                ));
            }
            if let Some(n) = le.resource_name.filter(|n| !n.is_empty()) {
                l.lease_name = n;
            }
            if let Some(n) = le.resource_namespace.filter(|n| !n.is_empty()) {
                l.lease_namespace = n;
            }
        }
        // One port serves health and metrics: each address given is
        // checked under its own name, and two different ones are refused
        // rather than one of them silently ignored.
        let address = |field: &str, a: &str| -> Result<Option<SocketAddr>, OptionsError> {
            if a.is_empty() {
                return Ok(None);
            }
            a.parse().map(Some).map_err(|_| {
                bad(
                    field,
                    format!("{a:?} is not an address such as 0.0.0.0:10259"),
                )
            })
        };
        let healthz = cfg
            .healthz_bind_address
            .as_deref()
            .map(|a| address("healthzBindAddress", a))
            .transpose()?;
        let metrics = cfg
            .metrics_bind_address
            .as_deref()
            .map(|a| address("metricsBindAddress", a))
            .transpose()?;
        if let (Some(h), Some(m)) = (healthz, metrics)
            && h != m
        {
            return Err(bad(
                "metricsBindAddress",
                format!(
                    "{:?} differs from healthzBindAddress {:?}: one port serves health and metrics, so give one address (or the same in both)",
                    cfg.metrics_bind_address.as_deref().unwrap_or(""),
                    cfg.healthz_bind_address.as_deref().unwrap_or("")
                ),
            ));
        }
        if let Some(a) = healthz.or(metrics) {
            o.http_address = a;
        }
        o.validate()?;
        Ok(o)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let rate = |field: &str, q: f64| {
            if (MIN_QPS..=MAX_QPS).contains(&q) {
                Ok(())
            } else {
                Err(bad(
                    field,
                    format!("{q} is outside {MIN_QPS}..={MAX_QPS} per second"),
                ))
            }
        };
        rate("clientConnection.qps", self.qps)?;
        if self.burst == 0 {
            return Err(bad("clientConnection.burst", "must be at least 1"));
        }
        rate("clientConnection.eventQps", self.event_qps)?;
        if self.event_burst == 0 {
            return Err(bad("clientConnection.eventBurst", "must be at least 1"));
        }
        if self.page_size == 0 {
            return Err(bad("clientConnection.pageSize", "must be at least 1"));
        }
        if self.bind_timeout.is_zero() {
            return Err(bad("bindTimeout", "must be positive"));
        }
        let l = &self.leader_election;
        for (field, d) in [
            ("leaderElection.leaseDuration", l.lease_duration),
            ("leaderElection.renewDeadline", l.renew_deadline),
            ("leaderElection.retryPeriod", l.retry_period),
            ("shutdownGrace", self.shutdown_grace),
            ("bindTimeout", self.bind_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(bad(field, "must be at most 24h"));
            }
        }
        if l.enabled {
            if l.retry_period.is_zero() {
                return Err(bad("leaderElection.retryPeriod", "must be positive"));
            }
            if l.renew_deadline <= l.retry_period {
                return Err(bad(
                    "leaderElection.renewDeadline",
                    "must be longer than retryPeriod",
                ));
            }
            if l.lease_duration <= l.renew_deadline {
                return Err(bad(
                    "leaderElection.leaseDuration",
                    "must be longer than renewDeadline",
                ));
            }
            if l.lease_name.is_empty() {
                return Err(bad("leaderElection.resourceName", "must not be empty"));
            }
            if l.lease_namespace.is_empty() {
                return Err(bad("leaderElection.resourceNamespace", "must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_kube_scheduler_shaped_config() {
        let cfg = SchedulerConfig::from_yaml(
            "clientConnection: {qps: 200, burst: 400, contentType: application/vnd.kubernetes.protobuf, acceptContentTypes: 'application/vnd.kubernetes.protobuf,application/json'}\nleaderElection: {leaderElect: true, leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 4s, resourceName: s, resourceNamespace: strata-system}\nhealthzBindAddress: 127.0.0.1:0\n",
        )
        .unwrap();
        let o = AdapterOptions::from_config(&cfg).unwrap();
        assert_eq!(o.qps, 200.0);
        assert_eq!(o.burst, 400);
        assert_eq!(o.leader_election.lease_duration, Duration::from_secs(30));
        assert_eq!(o.leader_election.renew_deadline, Duration::from_secs(20));
        assert_eq!(o.leader_election.retry_period, Duration::from_secs(4));
        assert_eq!(o.leader_election.lease_name, "s");
        assert_eq!(o.leader_election.lease_namespace, "strata-system");
        assert_eq!(o.http_address, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn defaults_match_kube_scheduler() {
        let o = AdapterOptions::from_config(&SchedulerConfig::default()).unwrap();
        let l = &o.leader_election;
        assert!(l.enabled);
        assert_eq!(
            (l.lease_duration, l.renew_deadline, l.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        for (yaml, field) in [
            ("clientConnection: {qps: 0}", "clientConnection.qps"),
            ("clientConnection: {burst: 0}", "clientConnection.burst"),
            ("clientConnection: {bogus: 1}", "clientConnection.bogus"),
            (
                "clientConnection: {contentType: text/banana}",
                "clientConnection.contentType",
            ),
            (
                "clientConnection: {acceptContentTypes: 'application/json,text/x'}",
                "clientConnection.acceptContentTypes",
            ),
            (
                "leaderElection: {leaseDuration: 5s}",
                "leaderElection.leaseDuration",
            ),
            (
                "leaderElection: {renewDeadline: 1s}",
                "leaderElection.renewDeadline",
            ),
            (
                "leaderElection: {retryPeriod: soon}",
                "leaderElection.retryPeriod",
            ),
            ("healthzBindAddress: nowhere", "healthzBindAddress"),
            (
                "leaderElection: {resourceLock: endpoints}",
                "leaderElection.resourceLock",
            ),
            // Past what a Duration holds (it panicked) or just very long.
            (
                "leaderElection: {leaseDuration: 99999999999999999999999h}",
                "leaderElection.leaseDuration",
            ),
            (
                "leaderElection: {leaseDuration: 25h, renewDeadline: 20h}",
                "leaderElection.leaseDuration",
            ),
            (
                "leaderElection: {leaderElect: false, retryPeriod: 9999999999h}",
                "leaderElection.retryPeriod",
            ),
            (
                "leaderElection: {renewDeadline: -1s}",
                "leaderElection.renewDeadline",
            ),
            ("clientConnection: {qps: 1e-300}", "clientConnection.qps"),
            ("clientConnection: {qps: .inf}", "clientConnection.qps"),
            ("clientConnection: {qps: .nan}", "clientConnection.qps"),
            ("clientConnection: {qps: -5}", "clientConnection.qps"),
            (
                "clientConnection: {eventQps: 1e300}",
                "clientConnection.eventQps",
            ),
            ("clientConnection: {burst: -1}", "clientConnection.burst"),
            (
                "clientConnection: {burst: 4294967296}",
                "clientConnection.burst",
            ),
            (
                "leaderElection: {leaseDuration: 15}",
                "leaderElection.leaseDuration",
            ),
            (
                "leaderElection: {leaderElect: maybe}",
                "leaderElection.leaderElect",
            ),
            ("metricsBindAddress: 1.2.3.4:99999", "metricsBindAddress"),
            (
                "healthzBindAddress: 0.0.0.0:10259\nmetricsBindAddress: nonsense",
                "metricsBindAddress",
            ),
            (
                "healthzBindAddress: 0.0.0.0:10259\nmetricsBindAddress: 0.0.0.0:10251",
                "metricsBindAddress",
            ),
        ] {
            let cfg = SchedulerConfig::from_yaml(yaml).unwrap();
            let e = AdapterOptions::from_config(&cfg).unwrap_err();
            assert_eq!(e.field, field, "{yaml}: {e}");
        }
        // A shutdown grace past what a Instant holds (from the flag) is
        // refused too; the bounds themselves are fine.
        let mut o = AdapterOptions::from_config(&SchedulerConfig::default()).unwrap();
        o.shutdown_grace = parse_duration("99999999999999999999999h").unwrap();
        assert_eq!(o.validate().unwrap_err().field, "shutdownGrace");
        o.shutdown_grace = MAX_DURATION;
        o.qps = MAX_QPS;
        o.event_qps = MIN_QPS;
        o.validate().unwrap();
    }

    #[test]
    fn health_and_metrics_addresses_agree() {
        for (yaml, want) in [
            (
                "healthzBindAddress: 127.0.0.1:1\nmetricsBindAddress: 127.0.0.1:1",
                Some(SocketAddr::from(([127, 0, 0, 1], 1))),
            ),
            (
                "metricsBindAddress: 127.0.0.1:2",
                Some(SocketAddr::from(([127, 0, 0, 1], 2))),
            ),
            ("healthzBindAddress: \"\"", None),
            ("healthzBindAddress: \"\"\nmetricsBindAddress: \"\"", None),
        ] {
            let cfg = SchedulerConfig::from_yaml(yaml).unwrap();
            let o = AdapterOptions::from_config(&cfg).unwrap();
            assert_eq!(o.http_address, want, "{yaml}");
        }
    }
}
