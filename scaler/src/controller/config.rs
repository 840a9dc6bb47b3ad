//! The `scaler:` section of Strata's configuration file: off unless
//! `enabled: true`; the Prometheus endpoint, the default queries, the
//! capacity models services name, and the policy.
//!
//! ```yaml
//! scaler:
//!   enabled: true
//!   period: 60s
//!   prometheus: {url: "http://prometheus.monitoring:9090", timeout: 5s}
//!   queries:            # $namespace and $name: the LeaderWorkerSet's
//!     requests: 'sum(rate(vllm:request_success_total{namespace="$namespace",service="$name"}[2m]))'
//!   models:
//!     llama-70b:
//!       prefillPerGroup: 1
//!       decodePerGroup: 1
//!       prefillTokensPerSecond: 20000
//!       decodeTokensPerSecond: 2500
//!       baseTpotSeconds: 0.025
//!       objective: {ttftSeconds: 1, tpotSeconds: 0.1}
//!       maxGroups: 16
//!   policy: {target: 0.8, scaleDownWindow: 5, idleMinutes: 10}
//! ```
//!
//! Errors name the field (`scaler.models.llama-70b.decodeTokensPerSecond`)
//! and what is wrong with it; `strata check-config` reports them before a
//! scheduler starts.

use crate::model::{ModelError, Objective, ServiceSpec};
use crate::policy::{GroupPolicy, Tidal};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The default query of requests per second.
pub const DEFAULT_REQUESTS: &str =
    r#"sum(rate(vllm:request_success_total{namespace="$namespace",service="$name"}[2m]))"#;
/// The default query of prompt tokens per second.
pub const DEFAULT_PROMPT_TOKENS: &str =
    r#"sum(rate(vllm:prompt_tokens_total{namespace="$namespace",service="$name"}[2m]))"#;
/// The default query of output tokens per second.
pub const DEFAULT_OUTPUT_TOKENS: &str =
    r#"sum(rate(vllm:generation_tokens_total{namespace="$namespace",service="$name"}[2m]))"#;

/// A field that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("scaler.{field}: {message}")]
pub struct ConfigError {
    /// The field, below `scaler.`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    prometheus: Option<RawProm>,
    #[serde(default)]
    queries: RawQueries,
    #[serde(default)]
    empty_as_zero: bool,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProm {
    url: String,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawQueries {
    requests: Option<String>,
    prompt_tokens: Option<String>,
    output_tokens: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawObjective {
    ttft_seconds: f64,
    tpot_seconds: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawModel {
    #[serde(default = "one")]
    prefill_per_group: u32,
    #[serde(default = "one")]
    decode_per_group: u32,
    prefill_tokens_per_second: f64,
    decode_tokens_per_second: f64,
    base_tpot_seconds: f64,
    #[serde(default)]
    prefill_accelerators: u32,
    #[serde(default)]
    decode_accelerators: u32,
    objective: RawObjective,
    #[serde(default)]
    min_groups: u32,
    #[serde(default = "default_max")]
    max_groups: u32,
}

fn one() -> u32 {
    1
}
fn default_max() -> u32 {
    100
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPolicy {
    target: Option<f64>,
    scale_down_window: Option<u32>,
    /// Absent: the default (10); 0: never to zero.
    idle_minutes: Option<u32>,
    tide: Option<RawTide>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTide {
    #[serde(default = "default_true")]
    enabled: bool,
    lead_minutes: Option<u32>,
    learn_rate: Option<f64>,
    margin: Option<f64>,
}

fn default_true() -> bool {
    true
}

/// The three queries of one service, before `$namespace`/`$name` are
/// filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    /// Requests per second.
    pub requests: String,
    /// Prompt tokens per second.
    pub prompt_tokens: String,
    /// Output tokens per second.
    pub output_tokens: String,
}

impl Queries {
    /// The queries with `$namespace` and `$name` replaced.
    pub fn for_object(&self, namespace: &str, name: &str) -> Queries {
        let fill = |q: &str| q.replace("$namespace", namespace).replace("$name", name);
        Queries {
            requests: fill(&self.requests),
            prompt_tokens: fill(&self.prompt_tokens),
            output_tokens: fill(&self.output_tokens),
        }
    }
}

/// A capacity model a service names (its group shape and what each
/// instance can do).
#[derive(Clone, Debug, PartialEq)]
pub struct CapacityModel {
    /// As a [`ServiceSpec`] named after the model.
    pub spec: ServiceSpec,
}

impl CapacityModel {
    /// The service `name` under this model, with min/max overridden.
    pub fn service(&self, name: &str, min: Option<u32>, max: Option<u32>) -> ServiceSpec {
        let mut s = self.spec.clone();
        s.name = name.to_owned();
        if let Some(m) = min {
            s.min_groups = m;
        }
        if let Some(m) = max {
            s.max_groups = m;
        }
        s
    }
}

/// The scaler's configuration, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerConfig {
    /// Whether the controller runs.
    pub enabled: bool,
    /// How often each service is looked at (the policy's "minute").
    pub period: Duration,
    /// The Prometheus-compatible endpoint.
    pub prometheus_url: String,
    /// One query's time limit.
    pub timeout: Duration,
    /// Default queries.
    pub queries: Queries,
    /// Whether a query with no series reads as 0 (otherwise as missing).
    pub empty_as_zero: bool,
    /// Capacity models by name.
    pub models: BTreeMap<String, CapacityModel>,
    /// The policy.
    pub policy: GroupPolicy,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            enabled: false,
            period: Duration::from_secs(60),
            prometheus_url: String::new(),
            timeout: Duration::from_secs(5),
            queries: Queries {
                requests: DEFAULT_REQUESTS.into(),
                prompt_tokens: DEFAULT_PROMPT_TOKENS.into(),
                output_tokens: DEFAULT_OUTPUT_TOKENS.into(),
            },
            empty_as_zero: false,
            models: BTreeMap::new(),
            policy: GroupPolicy::default(),
        }
    }
}

fn duration(field: &str, v: &str) -> Result<Duration, ConfigError> {
    match strata_scheduler::config::parse_duration(v) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(bad(
            field,
            format!("{v:?} is not a positive duration such as 30s"),
        )),
    }
}

fn fraction(field: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > lo && v <= hi {
        Ok(v)
    } else {
        Err(bad(field, format!("{v} is not in ({lo}, {hi}]")))
    }
}

impl ScalerConfig {
    /// Reads the section (`None`: absent, the scaler is off).
    pub fn from_value(v: Option<&serde_json::Value>) -> Result<ScalerConfig, ConfigError> {
        let Some(v) = v else {
            return Ok(ScalerConfig::default());
        };
        if v.is_null() {
            return Ok(ScalerConfig::default());
        }
        let raw: Raw = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            bad(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })?;
        let mut c = ScalerConfig {
            enabled: raw.enabled,
            empty_as_zero: raw.empty_as_zero,
            ..ScalerConfig::default()
        };
        if let Some(p) = &raw.period {
            c.period = duration("period", p)?;
        }
        match raw.prometheus {
            Some(p) => {
                let url = p.url.trim();
                let host = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                    return Err(bad(
                        "prometheus.url",
                        format!("{url:?} is not an http:// or https:// URL"),
                    ));
                }
                if url.parse::<http::Uri>().is_err() {
                    return Err(bad("prometheus.url", format!("{url:?} is not a valid URL")));
                }
                c.prometheus_url = url.to_owned();
                if let Some(t) = &p.timeout {
                    c.timeout = duration("prometheus.timeout", t)?;
                }
            }
            None if raw.enabled => {
                return Err(bad(
                    "prometheus",
                    "is required when the scaler is enabled (its url: where request rates and token counts are read)",
                ));
            }
            None => {}
        }
        for (field, q, slot) in [
            (
                "queries.requests",
                &raw.queries.requests,
                &mut c.queries.requests,
            ),
            (
                "queries.promptTokens",
                &raw.queries.prompt_tokens,
                &mut c.queries.prompt_tokens,
            ),
            (
                "queries.outputTokens",
                &raw.queries.output_tokens,
                &mut c.queries.output_tokens,
            ),
        ] {
            if let Some(q) = q {
                if q.trim().is_empty() {
                    return Err(bad(field, "must not be empty"));
                }
                *slot = q.clone();
            }
        }
        for (name, m) in raw.models {
            let spec = ServiceSpec {
                name: name.clone(),
                prefill_per_group: m.prefill_per_group,
                decode_per_group: m.decode_per_group,
                prefill_tokens_per_s: m.prefill_tokens_per_second,
                decode_tokens_per_s: m.decode_tokens_per_second,
                base_tpot_s: m.base_tpot_seconds,
                prefill_accelerators: m.prefill_accelerators,
                decode_accelerators: m.decode_accelerators,
                objective: Objective {
                    ttft_s: m.objective.ttft_seconds,
                    tpot_s: m.objective.tpot_seconds,
                },
                min_groups: m.min_groups,
                max_groups: m.max_groups,
            };
            spec.validate().map_err(|e| match e {
                ModelError::NotPositive { field, value, .. } => bad(
                    format!("models.{name}.{field}"),
                    format!("must be positive, got {value}"),
                ),
                ModelError::Bounds { min, max, .. } => bad(
                    format!("models.{name}.minGroups"),
                    format!("{min} is more than maxGroups {max}"),
                ),
            })?;
            c.models.insert(name, CapacityModel { spec });
        }
        if c.enabled && c.models.is_empty() {
            return Err(bad(
                "models",
                "the scaler is enabled but names no capacity model (services opt in by naming one)",
            ));
        }
        let p = &mut c.policy;
        if let Some(t) = raw.policy.target {
            p.target = fraction("policy.target", t, 0.0, 1.0)?;
        }
        if let Some(w) = raw.policy.scale_down_window {
            p.scale_down_window = w.max(1);
        }
        if let Some(m) = raw.policy.idle_minutes {
            p.idle_minutes = (m > 0).then_some(m);
        }
        if let Some(t) = raw.policy.tide {
            if t.enabled {
                let mut tide = p.tidal.unwrap_or(Tidal {
                    lead_minutes: 5,
                    learn_rate: 0.5,
                    margin: 1.1,
                });
                if let Some(l) = t.lead_minutes {
                    tide.lead_minutes = l.max(1);
                }
                if let Some(r) = t.learn_rate {
                    tide.learn_rate = fraction("policy.tide.learnRate", r, 0.0, 1.0)?;
                }
                if let Some(m) = t.margin {
                    if !(1.0..=10.0).contains(&m) {
                        return Err(bad(
                            "policy.tide.margin",
                            format!("{m} is not from 1 to 10"),
                        ));
                    }
                    tide.margin = m;
                }
                p.tidal = Some(tide);
            } else {
                p.tidal = None;
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> serde_json::Value {
        json!({"prefillTokensPerSecond": 20000, "decodeTokensPerSecond": 2500,
               "baseTpotSeconds": 0.025, "objective": {"ttftSeconds": 1, "tpotSeconds": 0.1}})
    }

    #[test]
    fn absent_or_disabled_is_off() {
        assert!(!ScalerConfig::from_value(None).unwrap().enabled);
        assert!(
            !ScalerConfig::from_value(Some(&json!({"enabled": false})))
                .unwrap()
                .enabled
        );
    }

    #[test]
    fn a_full_section_reads() {
        let c = ScalerConfig::from_value(Some(&json!({
            "enabled": true, "period": "15s",
            "prometheus": {"url": "http://prom:9090/", "timeout": "2s"},
            "queries": {"requests": "sum(rate(r{ns=\"$namespace\"}[1m]))"},
            "models": {"m": model()},
            "policy": {"target": 0.7, "idleMinutes": 0, "tide": {"enabled": false}},
        })))
        .unwrap();
        assert!(c.enabled);
        assert_eq!(c.period, Duration::from_secs(15));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.prometheus_url, "http://prom:9090/");
        assert_eq!(c.policy.target, 0.7);
        assert_eq!(c.policy.idle_minutes, None);
        assert_eq!(c.policy.tidal, None);
        let q = c.queries.for_object("serving", "llm");
        assert_eq!(q.requests, "sum(rate(r{ns=\"serving\"}[1m]))");
        assert!(
            q.prompt_tokens
                .contains(r#"namespace="serving",service="llm""#)
        );
        let s = c.models["m"].service("serving/llm", None, Some(4));
        assert_eq!((s.name.as_str(), s.max_groups), ("serving/llm", 4));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"enabled": true, "models": {"m": model()}}),
                "scaler.prometheus:",
            ),
            (
                json!({"enabled": true, "prometheus": {"url": "prom:9090"}, "models": {"m": model()}}),
                "scaler.prometheus.url:",
            ),
            (
                json!({"enabled": true, "prometheus": {"url": "http://p"}}),
                "scaler.models:",
            ),
            (json!({"period": "soon"}), "scaler.period:"),
            (json!({"policy": {"target": 1.5}}), "scaler.policy.target:"),
            (
                json!({"policy": {"tide": {"margin": 0.5}}}),
                "scaler.policy.tide.margin:",
            ),
            (json!({"enable": true}), "unknown field `enable`"),
            (
                json!({"models": {"m": {"prefillTokensPerSecond": 1}}}),
                "scaler.models.m:",
            ),
            (
                json!({"queries": {"requests": " "}}),
                "scaler.queries.requests:",
            ),
        ];
        for (v, want) in cases {
            let e = ScalerConfig::from_value(Some(&v)).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
        let mut m = model();
        m["decodeTokensPerSecond"] = json!(0);
        let e = ScalerConfig::from_value(Some(&json!({"models": {"big": m}})))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("scaler.models.big.decodeTokensPerSecond:"),
            "{e}"
        );
    }
}
