//! A remote plugin's `pluginConfig` args: the scheduler's own `remote`
//! settings, and everything else, passed through to the plugin as JSON in
//! the handshake.
//!
//! ```yaml
//! pluginConfig:
//!   - name: GpuHealth
//!     args:
//!       remote:
//!         endpoint: unix:///run/gpu-health.sock   # or http://127.0.0.1:9400
//!         timeout: 200ms          # per call; a call carrying a full snapshot gets at least syncTimeout
//!         failurePolicy: Ignore   # or Fail (the default)
//!       minHealthyLinks: 4        # the plugin's own args
//! ```

use std::time::Duration;
use strata_scheduler::config::parse_duration;
use strata_scheduler::sdk::PluginArgsError;

/// What happens to a pod when the plugin fails (crash, hang past the
/// timeout, an answer that does not make sense).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum FailurePolicy {
    /// The attempt fails with an error; the pod is retried with backoff.
    Fail,
    /// The plugin is left out of this attempt (as if it had returned Skip).
    Ignore,
}

/// Where the plugin listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix domain socket path.
    Unix(String),
    /// An `http://host:port` URI.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{p}"),
            Endpoint::Tcp(u) => f.write_str(u),
        }
    }
}

impl Endpoint {
    /// Parses `unix:///path`, `unix:/path`, `http://host:port` or
    /// `host:port`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(rest) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if !rest.starts_with('/') {
                return Err(format!("{s:?}: a Unix socket path must be absolute"));
            }
            return Ok(Endpoint::Unix(rest.to_owned()));
        }
        if s.starts_with("https://") {
            return Err(format!(
                "{s:?}: TLS is not supported; use a Unix socket or http://"
            ));
        }
        let uri = if s.starts_with("http://") {
            s.to_owned()
        } else {
            format!("http://{s}")
        };
        match uri.parse::<http_uri::Uri>() {
            Ok(u) if u.host().is_some() && u.port_u16().is_some() => Ok(Endpoint::Tcp(uri)),
            _ => Err(format!("{s:?} is neither unix:///path nor host:port")),
        }
    }
}

mod http_uri {
    pub(crate) use tonic::codegen::http::Uri;
}

/// The longest per-call timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRemote {
    endpoint: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    sync_timeout: Option<String>,
    #[serde(default)]
    failure_policy: Option<FailurePolicy>,
    #[serde(default)]
    points: Option<Vec<String>>,
}

/// The parsed args.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteArgs {
    /// Where the plugin listens.
    pub endpoint: Endpoint,
    /// Deadline of one call (default 1 s).
    pub timeout: Duration,
    /// Deadline of a call that carries a full snapshot (default 30 s): the
    /// first of a session, and any after a resynchronisation.
    pub sync_timeout: Duration,
    /// Fail (default) or Ignore.
    pub failure_policy: FailurePolicy,
    /// Points to serve when the plugin cannot be reached at start-up (the
    /// handshake's list wins when it can).
    pub points: Option<Vec<crate::Point>>,
    /// The rest of the args, for the plugin (`{}` when none).
    pub plugin_config: serde_json::Value,
}

fn duration(
    field: &str,
    v: Option<String>,
    default: Duration,
) -> Result<Duration, PluginArgsError> {
    let Some(s) = v else { return Ok(default) };
    match parse_duration(&s) {
        Some(d) if !d.is_zero() && d <= MAX_TIMEOUT => Ok(d),
        _ => Err(PluginArgsError::new(
            field,
            format!("{s:?} is not a duration within (0, 60s] such as 500ms or 2s"),
        )),
    }
}

impl RemoteArgs {
    /// Parses a remote plugin's args; errors name the field.
    pub fn parse(args: Option<&serde_json::Value>) -> Result<RemoteArgs, PluginArgsError> {
        let Some(serde_json::Value::Object(map)) = args else {
            return Err(PluginArgsError::new(
                "remote",
                "a remote plugin needs args with a `remote` object (endpoint, timeout, failurePolicy)",
            ));
        };
        let mut rest = map.clone();
        let Some(raw) = rest.remove("remote") else {
            return Err(PluginArgsError::new(
                "remote",
                "missing (endpoint, timeout, failurePolicy)",
            ));
        };
        let raw: RawRemote = serde_path_to_error_free(raw)?;
        let endpoint = Endpoint::parse(&raw.endpoint)
            .map_err(|m| PluginArgsError::new("remote.endpoint", m))?;
        let timeout = duration("remote.timeout", raw.timeout, Duration::from_secs(1))?;
        let sync_timeout = duration(
            "remote.syncTimeout",
            raw.sync_timeout,
            Duration::from_secs(30),
        )?;
        let points = match raw.points {
            None => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        crate::Point::parse(s).ok_or_else(|| {
                            PluginArgsError::new(
                                format!("remote.points[{i}]"),
                                format!("{s:?} is not an extension point (Filter, Score, Reserve, Permit, PreBind, Bind, PostBind)"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(RemoteArgs {
            endpoint,
            timeout,
            sync_timeout: sync_timeout.max(timeout),
            failure_policy: raw.failure_policy.unwrap_or(FailurePolicy::Fail),
            points,
            plugin_config: serde_json::Value::Object(rest),
        })
    }
}

fn serde_path_to_error_free(v: serde_json::Value) -> Result<RawRemote, PluginArgsError> {
    serde_json::from_value(v).map_err(|e| PluginArgsError::new("remote", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_passes_the_rest_through() {
        let a = RemoteArgs::parse(Some(&json!({
            "remote": {"endpoint": "unix:///tmp/x.sock", "timeout": "200ms", "failurePolicy": "Ignore"},
            "minLinks": 4
        })))
        .unwrap();
        assert_eq!(a.endpoint, Endpoint::Unix("/tmp/x.sock".into()));
        assert_eq!(a.timeout, Duration::from_millis(200));
        assert_eq!(a.failure_policy, FailurePolicy::Ignore);
        assert_eq!(a.plugin_config, json!({"minLinks": 4}));
    }

    #[test]
    fn errors_name_the_field() {
        let e = RemoteArgs::parse(Some(&json!({"remote": {"endpoint": "nowhere"}}))).unwrap_err();
        assert_eq!(e.field, "remote.endpoint");
        let e = RemoteArgs::parse(Some(
            &json!({"remote": {"endpoint": "127.0.0.1:1", "timeout": "2h"}}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "remote.timeout");
        let e = RemoteArgs::parse(Some(
            &json!({"remote": {"endpoint": "127.0.0.1:1", "points": ["Fliter"]}}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "remote.points[0]");
        let e = RemoteArgs::parse(Some(
            &json!({"remote": {"endpoint": "127.0.0.1:1", "retries": 3}}),
        ))
        .unwrap_err();
        assert!(e.message.contains("retries"), "{e}");
        assert_eq!(RemoteArgs::parse(None).unwrap_err().field, "remote");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:9400").unwrap(),
            Endpoint::Tcp("http://127.0.0.1:9400".into())
        );
        assert!(Endpoint::parse("unix:relative.sock").is_err());
        assert!(Endpoint::parse("https://x:1").is_err());
    }
}
