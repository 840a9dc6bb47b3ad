//! kube-scheduler extenders: the `extenders:` section of the configuration
//! and the hook through which the engine consults them.
//!
//! An extender is a process outside the scheduler that kube-scheduler calls
//! over HTTP with JSON (`k8s.io/kube-scheduler/extender/v1`). The engine
//! consults extenders the way kube-scheduler does, in
//! [`crate::engine::Scheduler::schedule_one`]:
//!
//! - after the in-tree Filter, once per cycle with the nodes that passed
//!   (batched, never once per node), each extender in configuration order
//!   narrowing the list for the next ([`Extender::filter`]);
//! - beside Score: each interested prioritizer's scores (0..=10) times its
//!   weight, scaled by `MAX_NODE_SCORE / 10`, added to the plugins' total;
//! - at Bind: an interested extender with a `bindVerb` binds instead of the
//!   Bind plugins;
//! - on preemption: DefaultPreemption hands its candidates (nodes and
//!   victims) to each interested extender with a `preemptVerb`, in
//!   configuration order, each narrowing what the one before kept
//!   ([`Extender::process_preemption`]; kube-scheduler's `callExtenders`),
//!   before it chooses one. An answer must be a narrowing: a node that was
//!   not a candidate, a victim that is not on its node or is not of lower
//!   priority than the preemptor, is a failure of the extender. A node
//!   answered with no victims is dropped by an ignorable extender and is a
//!   failure of another, as in kube-scheduler.
//!
//! Only extenders interested in the pod ([`Extender::is_interested`]: no
//! `managedResources`, or the pod asks for one of them) are consulted. A
//! failing filter of an ignorable extender is skipped; of another, it fails
//! the attempt (an error, retried with backoff), naming the extender. A
//! failing prioritize is always skipped, as in kube-scheduler. Every failure
//! is also an event on the pod naming the extender.
//!
//! This crate does no I/O: the HTTP client is `strata-extender`, which
//! registers its factory with [`crate::framework::Registry::set_extender_factory`].
//! A pod one extender is interested in skips the equivalence fast path
//! (the extender's answer is not cached).

use crate::cache::Snapshot;
use crate::config::{ConfigError, MAX_SECONDS, parse_duration};
use crate::framework::{NodeRef, PreemptionCandidate};
use crate::model::{NodeId, PodInfo};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// kube-scheduler's `MaxExtenderPriority`: the highest score an extender
/// may give a node.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;
/// kube-scheduler's timeout of an extender call when `httpTimeout` is not
/// set.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// One entry of `extenders:`, as kube-scheduler's `Extender`
/// (`kubescheduler.config.k8s.io/v1`), field for field.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtenderConfig {
    /// The extender's URL; a verb is appended as `urlPrefix/verb`.
    pub url_prefix: String,
    /// Filter verb; empty when the extender does not filter.
    #[serde(default)]
    pub filter_verb: String,
    /// Preempt verb; empty when the extender does not take part in
    /// preemption.
    #[serde(default)]
    pub preempt_verb: String,
    /// Prioritize verb; empty when the extender does not score.
    #[serde(default)]
    pub prioritize_verb: String,
    /// Multiplier of the extender's scores; must be positive with a
    /// prioritize verb.
    #[serde(default)]
    pub weight: i64,
    /// Bind verb; the extender then binds the pods it is interested in.
    #[serde(default)]
    pub bind_verb: String,
    /// kube-scheduler's HTTPS switch: with it and no CA in `tlsConfig`, the
    /// server's certificate is not verified (kube-scheduler's behaviour).
    /// The scheme of `urlPrefix` decides whether TLS is used.
    #[serde(default, rename = "enableHTTPS")]
    pub enable_https: bool,
    /// TLS settings of an HTTPS extender.
    #[serde(default)]
    pub tls_config: Option<ExtenderTlsConfig>,
    /// Timeout of one call, a Go duration (`5s`, the default when empty).
    #[serde(default)]
    pub http_timeout: Option<String>,
    /// Whether the extender keeps its own node cache: it then gets node
    /// names only, not node objects.
    #[serde(default)]
    pub node_cache_capable: bool,
    /// Extended resources the extender manages: when set, only pods asking
    /// for one of them are sent to it.
    #[serde(default)]
    pub managed_resources: Vec<ExtenderManagedResource>,
    /// Whether a failing extender is skipped rather than failing the pod.
    #[serde(default)]
    pub ignorable: bool,
}

/// One of an extender's `managedResources`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtenderManagedResource {
    /// The extended resource name.
    pub name: String,
    /// Whether NodeResourcesFit ignores the resource (the extender alone
    /// judges it).
    #[serde(default)]
    pub ignored_by_scheduler: bool,
}

/// kube-scheduler's `ExtenderTLSConfig`, used for `https://` URLs. File
/// paths are read when the extender is built; the `...Data` fields are
/// base64 PEM, as in the Go configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtenderTlsConfig {
    /// Skip verification of the server's certificate (testing only).
    #[serde(default)]
    pub insecure: bool,
    /// Name to verify the certificate against (and to send as SNI).
    #[serde(default)]
    pub server_name: String,
    /// Client certificate, PEM file.
    #[serde(default)]
    pub cert_file: String,
    /// Client key, PEM file.
    #[serde(default)]
    pub key_file: String,
    /// Trusted root certificates, PEM file.
    #[serde(default, rename = "caFile")]
    pub ca_file: String,
    /// Client certificate, base64 of PEM.
    #[serde(default)]
    pub cert_data: String,
    /// Client key, base64 of PEM.
    #[serde(default)]
    pub key_data: String,
    /// Trusted root certificates, base64 of PEM.
    #[serde(default, rename = "caData")]
    pub ca_data: String,
}

impl ExtenderConfig {
    /// The timeout of one call: `httpTimeout`, or 5 s when not set.
    /// [`validate_extenders`] has checked that it parses.
    pub fn timeout(&self) -> Duration {
        match self.http_timeout.as_deref().and_then(parse_duration) {
            Some(d) if !d.is_zero() => d,
            _ => DEFAULT_HTTP_TIMEOUT,
        }
    }
}

/// Whether `name` is an extended resource name as Kubernetes defines one:
/// a qualified name with a domain prefix outside `kubernetes.io`, and not
/// `requests.`-prefixed.
fn is_extended_resource_name(name: &str) -> bool {
    let Some((prefix, rest)) = name.split_once('/') else {
        return false;
    };
    let label_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let domain_ok = !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    domain_ok
        && label_ok(rest)
        && !(prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io"))
        && !name.starts_with("requests.")
}

/// Checks `extenders:` as kube-scheduler's validation does (a positive
/// weight with a prioritize verb, at most one binder, managed resources
/// that are extended resource names and not repeated) and what Strata adds
/// (a URL, a parseable `httpTimeout` of at most a year, a verb at all).
/// Errors name the field.
pub fn validate_extenders(extenders: &[ExtenderConfig]) -> Result<(), ConfigError> {
    let invalid = |field: String, message: String| ConfigError::Invalid { field, message };
    let mut binders = 0;
    let mut managed: Vec<&str> = Vec::new();
    for (i, e) in extenders.iter().enumerate() {
        let base = format!("extenders[{i}]");
        let url = e.url_prefix.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                format!("{base}.urlPrefix"),
                format!("{:?} is not an http:// or https:// URL", e.url_prefix),
            ));
        }
        if !e.prioritize_verb.is_empty() && e.weight <= 0 {
            return Err(invalid(
                format!("{base}.weight"),
                format!("{} must be positive with a prioritizeVerb", e.weight),
            ));
        }
        if e.weight > 1_000_000 {
            return Err(invalid(
                format!("{base}.weight"),
                format!("{} is outside 1..=1000000", e.weight),
            ));
        }
        if let Some(t) = &e.http_timeout {
            match parse_duration(t) {
                Some(d) if d <= Duration::from_secs(MAX_SECONDS) => {}
                Some(_) => {
                    return Err(invalid(
                        format!("{base}.httpTimeout"),
                        format!("{t:?} is longer than {MAX_SECONDS} seconds"),
                    ));
                }
                None => {
                    return Err(invalid(
                        format!("{base}.httpTimeout"),
                        format!("{t:?} is not a duration such as 5s or 500ms"),
                    ));
                }
            }
        }
        if !e.bind_verb.is_empty() {
            binders += 1;
        }
        for (j, r) in e.managed_resources.iter().enumerate() {
            let f = format!("{base}.managedResources[{j}].name");
            if !is_extended_resource_name(&r.name) {
                return Err(invalid(
                    f,
                    format!("{:?} is not an extended resource name", r.name),
                ));
            }
            if managed.contains(&r.name.as_str()) {
                return Err(invalid(
                    f,
                    format!("{:?} is managed by two extenders", r.name),
                ));
            }
            managed.push(&r.name);
        }
    }
    if binders > 1 {
        return Err(invalid(
            "extenders".to_owned(),
            format!(
                "found {binders} extenders implementing bind; only one extender can implement bind"
            ),
        ));
    }
    Ok(())
}

/// What an extender's filter decided about the nodes it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtenderFilterOutcome {
    /// The nodes that passed (a subset of those given).
    pub feasible: Vec<NodeId>,
    /// Nodes that failed, with the extender's reason.
    pub failed: Vec<(NodeId, String)>,
    /// Nodes that failed for good (preemption would not help).
    pub failed_unresolvable: Vec<(NodeId, String)>,
}

/// What an extender keeps of one preemption candidate: kube-scheduler's
/// `MetaVictims` under its node name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtenderVictims {
    /// The node's name.
    pub node: String,
    /// The UIDs of the pods to evict there.
    pub pods: Vec<String>,
    /// `NumPDBViolations` as the extender answered it.
    pub pdb_violations: i64,
}

/// An extender call that did not give a usable answer: the extender is
/// down, too slow, answered garbage or an `Error`, or named a node it was
/// not given. The text names the extender and the verb.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExtenderError(pub String);

/// An extender as the engine consults it. The filter and prioritize calls
/// block the scheduling thread (once per cycle each, bounded by the
/// extender's timeout); bind runs in the binding cycle.
#[async_trait::async_trait]
pub trait Extender: Send + Sync + 'static {
    /// The name used in messages, events and metrics (its URL prefix).
    fn name(&self) -> &str;
    /// Whether the pod is for this extender: it manages no resources, or
    /// the pod asks for one of them.
    fn is_interested(&self, pod: &PodInfo) -> bool;
    /// Whether a failure is skipped rather than failing the pod.
    fn is_ignorable(&self) -> bool;
    /// Whether it filters.
    fn is_filter(&self) -> bool;
    /// Whether it scores; its scores count `weight` times.
    fn is_prioritizer(&self) -> bool;
    /// The multiplier of its scores.
    fn weight(&self) -> i64;
    /// Whether it binds the pods it is interested in.
    fn is_binder(&self) -> bool;
    /// Filters `nodes` (already feasible for the in-tree filters).
    fn filter(
        &self,
        pod: &PodInfo,
        nodes: &[NodeId],
        snap: &Snapshot,
    ) -> Result<ExtenderFilterOutcome, ExtenderError>;
    /// Scores `nodes`, each in `0..=MAX_EXTENDER_PRIORITY`; nodes it leaves
    /// out score nothing.
    fn prioritize(
        &self,
        pod: &PodInfo,
        nodes: &[NodeId],
        snap: &Snapshot,
    ) -> Result<Vec<(NodeId, i64)>, ExtenderError>;
    /// Binds the pod to `node`.
    async fn bind(&self, pod: &PodInfo, node: NodeRef) -> Result<(), ExtenderError>;
    /// Whether it is consulted on preemption (it has a `preemptVerb`).
    fn supports_preemption(&self) -> bool {
        false
    }
    /// The preemption candidates it keeps, with their victims. The engine
    /// checks the answer against `candidates` (see the module docs); an
    /// extender need not.
    fn process_preemption(
        &self,
        pod: &PodInfo,
        candidates: &[PreemptionCandidate],
        snap: &Snapshot,
    ) -> Result<Vec<ExtenderVictims>, ExtenderError> {
        let _ = (pod, candidates, snap);
        Err(ExtenderError(format!(
            "extender {} does not support preemption",
            self.name()
        )))
    }
}

/// Builds an extender from its configuration entry (index `index` of
/// `extenders:`); what an HTTP client crate registers.
pub type ExtenderFactory =
    Arc<dyn Fn(usize, &ExtenderConfig) -> Result<Arc<dyn Extender>, ConfigError> + Send + Sync>;

/// Whether `pod` asks for one of `resources` (requests or limits of any
/// container or init container), as kube-scheduler's `IsInterested`.
pub fn pod_asks_for_any(pod: &PodInfo, resources: &[String]) -> bool {
    let spec = &pod.spec.raw;
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        let Some(r) = &c.resources else { continue };
        for map in [&r.requests, &r.limits].into_iter().flatten() {
            if map.keys().any(|k| resources.iter().any(|m| m == k)) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(yaml: &str) -> String {
        let list: Vec<ExtenderConfig> = serde_yaml_ng::from_str(yaml).expect("shape");
        match validate_extenders(&list) {
            Err(ConfigError::Invalid { field, .. }) => field,
            Err(e) => format!("{e}"),
            Ok(()) => "accepted".into(),
        }
    }

    #[test]
    fn kube_scheduler_field_names_parse() {
        let yaml = r#"
- urlPrefix: http://127.0.0.1:8888/scheduler
  filterVerb: filter
  prioritizeVerb: prioritize
  preemptVerb: preempt
  bindVerb: bind
  weight: 3
  enableHTTPS: true
  tlsConfig: {insecure: true, serverName: x, caFile: /ca, certFile: /c, keyFile: /k, caData: YQ==, certData: Yg==, keyData: Yw==}
  httpTimeout: 1500ms
  nodeCacheCapable: true
  managedResources: [{name: example.com/gpu, ignoredByScheduler: true}]
  ignorable: true
"#;
        let list: Vec<ExtenderConfig> = serde_yaml_ng::from_str(yaml).unwrap();
        validate_extenders(&list).unwrap();
        let e = &list[0];
        assert_eq!(e.timeout(), Duration::from_millis(1500));
        assert!(e.enable_https && e.node_cache_capable && e.ignorable);
        assert_eq!(e.tls_config.as_ref().unwrap().ca_file, "/ca");
        assert!(e.managed_resources[0].ignored_by_scheduler);
        let none: Vec<ExtenderConfig> =
            serde_yaml_ng::from_str("[{urlPrefix: 'http://x'}]").unwrap();
        assert_eq!(none[0].timeout(), DEFAULT_HTTP_TIMEOUT);
    }

    #[test]
    fn bad_entries_name_the_field() {
        let cases = [
            ("[{urlPrefix: 'x'}]", "extenders[0].urlPrefix"),
            (
                "[{urlPrefix: 'http://x', prioritizeVerb: p}]",
                "extenders[0].weight",
            ),
            (
                "[{urlPrefix: 'http://x', httpTimeout: soon}]",
                "extenders[0].httpTimeout",
            ),
            (
                "[{urlPrefix: 'http://x', httpTimeout: 99999h}]",
                "extenders[0].httpTimeout",
            ),
            (
                "[{urlPrefix: 'http://x', bindVerb: b}, {urlPrefix: 'http://y', bindVerb: b}]",
                "extenders",
            ),
            (
                "[{urlPrefix: 'http://x', managedResources: [{name: cpu}]}]",
                "extenders[0].managedResources[0].name",
            ),
            (
                "[{urlPrefix: 'http://x', managedResources: [{name: kubernetes.io/x}]}]",
                "extenders[0].managedResources[0].name",
            ),
            (
                "[{urlPrefix: 'http://x', managedResources: [{name: a.io/g}]}, {urlPrefix: 'http://y', managedResources: [{name: a.io/g}]}]",
                "extenders[1].managedResources[0].name",
            ),
        ];
        for (yaml, field) in cases {
            assert_eq!(field_of(yaml), field, "{yaml}");
        }
        assert!(
            serde_yaml_ng::from_str::<Vec<ExtenderConfig>>("[{urlPrefix: x, verb: y}]").is_err()
        );
    }

    #[test]
    fn extended_resource_names() {
        for ok in ["example.com/gpu", "nvidia.com/gpu", "hami.io/vgpu-memory"] {
            assert!(is_extended_resource_name(ok), "{ok}");
        }
        for bad in [
            "cpu",
            "kubernetes.io/x",
            "foo.kubernetes.io/x",
            "requests.a/b",
            "/x",
            "a/",
            "A.com/x",
        ] {
            assert!(!is_extended_resource_name(bad), "{bad}");
        }
    }
}
