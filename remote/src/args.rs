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
//!         # tls: {caFile: /etc/ca.pem, certFile: c.pem, keyFile: c.key, serverName: gpu-health}
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
                "{s:?}: for TLS give host:port and a remote.tls object"
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
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTls {
    #[serde(default)]
    ca_file: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    #[serde(default)]
    server_name: String,
}

/// TLS to a TCP endpoint: the roots that verify the plugin's certificate,
/// an optional client certificate (mutual TLS), and the name to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsArgs {
    /// PEM certificates trusted to sign the plugin's certificate.
    pub ca_file: String,
    /// PEM client certificate chain, with `key_file` (both or neither).
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
    /// The name the plugin's certificate must carry (default: the
    /// endpoint's host).
    pub server_name: Option<String>,
}

fn tls_args(raw: RawTls, endpoint: &Endpoint) -> Result<TlsArgs, PluginArgsError> {
    if matches!(endpoint, Endpoint::Unix(_)) {
        return Err(PluginArgsError::new(
            "remote.tls",
            "TLS is for a TCP endpoint (host:port), not a Unix socket",
        ));
    }
    if raw.ca_file.is_empty() {
        return Err(PluginArgsError::new(
            "remote.tls.caFile",
            "required: the PEM certificates that sign the plugin's certificate",
        ));
    }
    let opt = |s: String| (!s.is_empty()).then_some(s);
    let (cert_file, key_file) = (opt(raw.cert_file), opt(raw.key_file));
    match (&cert_file, &key_file) {
        (Some(_), None) => Err(PluginArgsError::new(
            "remote.tls.keyFile",
            "a client certificate needs its key",
        )),
        (None, Some(_)) => Err(PluginArgsError::new(
            "remote.tls.certFile",
            "a client key needs its certificate",
        )),
        _ => Ok(TlsArgs {
            ca_file: raw.ca_file,
            cert_file,
            key_file,
            server_name: opt(raw.server_name),
        }),
    }
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
    /// TLS to a TCP endpoint (`None`: plain HTTP/2).
    pub tls: Option<TlsArgs>,
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
        let endpoint = Endpoint::parse(raw.endpoint.trim_start_matches("https://"))
            .map_err(|m| PluginArgsError::new("remote.endpoint", m))?;
        if raw.endpoint.starts_with("https://") && raw.tls.is_none() {
            return Err(PluginArgsError::new(
                "remote.endpoint",
                format!(
                    "{:?}: https:// needs remote.tls (at least caFile)",
                    raw.endpoint
                ),
            ));
        }
        let tls = raw.tls.map(|t| tls_args(t, &endpoint)).transpose()?;
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
            tls,
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
    fn tls_args_name_their_field() {
        let a = RemoteArgs::parse(Some(&json!({
            "remote": {"endpoint": "https://127.0.0.1:9400", "tls": {"caFile": "/ca.pem", "serverName": "p"}}
        })))
        .unwrap();
        assert_eq!(a.endpoint, Endpoint::Tcp("http://127.0.0.1:9400".into()));
        let t = a.tls.unwrap();
        assert_eq!(
            (t.ca_file.as_str(), t.server_name.as_deref()),
            ("/ca.pem", Some("p"))
        );
        let field = |v: serde_json::Value| RemoteArgs::parse(Some(&v)).unwrap_err().field;
        assert_eq!(
            field(json!({"remote": {"endpoint": "https://127.0.0.1:1"}})),
            "remote.endpoint"
        );
        assert_eq!(
            field(json!({"remote": {"endpoint": "127.0.0.1:1", "tls": {}}})),
            "remote.tls.caFile"
        );
        assert_eq!(
            field(
                json!({"remote": {"endpoint": "127.0.0.1:1", "tls": {"caFile": "a", "certFile": "c"}}})
            ),
            "remote.tls.keyFile"
        );
        assert_eq!(
            field(json!({"remote": {"endpoint": "unix:///x.sock", "tls": {"caFile": "a"}}})),
            "remote.tls"
        );
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
