//! Out-of-process plugins for Strata: protocol `strata.plugin.v1`
//! (`proto/strata/plugin/v1/plugin.proto`) over gRPC, on a Unix socket or
//! TCP.
//!
//! A remote plugin appears in a profile as any in-tree plugin does: it is
//! enabled and disabled per extension point by its configured name, gets a
//! Score weight, and its `pluginConfig` args, minus the scheduler's own
//! `remote` settings (see [`args`]), reach the plugin in the handshake. The
//! points it serves and the events that requeue the pods it rejected come
//! from the handshake.
//!
//! Per scheduling cycle the plugin gets at most one Filter call (every
//! candidate at once) and one Score call (every feasible node at once); its
//! view of the cluster is kept current by snapshot deltas carried on those
//! calls ([`client`](crate::client) has the rules), so an unchanged
//! 16,000-node cluster costs a few bytes per cycle. A node-local plugin is
//! asked only about the nodes that changed since it answered for the pod's
//! template (module `answers`), and not at all when none did.
//!
//! A plugin that fails (crashes, hangs past its timeout, answers garbage,
//! names a node that was not a candidate) gets its failure policy: the
//! attempt fails (`Fail`, retried with backoff) or the plugin is left out
//! of it (`Ignore`, with a `RemotePluginIgnored` event on the pod naming
//! it); either way `strata_remote_plugin_errors_total` counts it (see
//! [`metrics`]).
//!
//! What this crate is not: the server side (the Go SDK in `sdk/go/`, or
//! any gRPC server built from the .proto), nor kube-scheduler's HTTP
//! extenders.

#![warn(missing_docs)]

mod answers;
pub mod args;
mod client;
pub mod convert;
pub mod metrics;
mod plugin;

pub use args::{Endpoint, FailurePolicy, RemoteArgs};
pub use client::{CallError, Stats, stats};
pub use plugin::RemotePlugin;

use std::sync::Arc;
use strata_scheduler::sdk::{
    ActionType, ClusterEventKind, EventResource, Handle, Plugin, PluginArgsError, Registry,
};

/// The messages and the gRPC client and server generated from
/// `proto/strata/plugin/v1/plugin.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("strata.plugin.v1");
}

/// An extension point a remote plugin serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    /// PreFilter (batched with Filter).
    PreFilter,
    /// Filter.
    Filter,
    /// PreScore (batched with Score).
    PreScore,
    /// Score and NormalizeScore.
    Score,
    /// Reserve and Unreserve.
    Reserve,
    /// Permit.
    Permit,
    /// PreBind.
    PreBind,
    /// Bind.
    Bind,
    /// PostBind.
    PostBind,
}

impl Point {
    /// The name in configuration and metrics (`Filter`).
    pub fn label(self) -> &'static str {
        match self {
            Point::PreFilter => "PreFilter",
            Point::Filter => "Filter",
            Point::PreScore => "PreScore",
            Point::Score => "Score",
            Point::Reserve => "Reserve",
            Point::Permit => "Permit",
            Point::PreBind => "PreBind",
            Point::Bind => "Bind",
            Point::PostBind => "PostBind",
        }
    }

    /// From its configuration name.
    pub fn parse(s: &str) -> Option<Point> {
        ALL_POINTS.iter().copied().find(|p| p.label() == s)
    }

    fn from_pb(p: pb::ExtensionPoint) -> Option<Point> {
        use pb::ExtensionPoint as E;
        Some(match p {
            E::Unspecified => return None,
            E::PreFilter => Point::PreFilter,
            E::Filter => Point::Filter,
            E::PreScore => Point::PreScore,
            E::Score => Point::Score,
            E::Reserve => Point::Reserve,
            E::Permit => Point::Permit,
            E::PreBind => Point::PreBind,
            E::Bind => Point::Bind,
            E::PostBind => Point::PostBind,
        })
    }
}

const ALL_POINTS: [Point; 9] = [
    Point::PreFilter,
    Point::Filter,
    Point::PreScore,
    Point::Score,
    Point::Reserve,
    Point::Permit,
    Point::PreBind,
    Point::Bind,
    Point::PostBind,
];

/// The points and requeue events of a handshake answer.
pub(crate) fn declared(resp: &pb::HandshakeResponse) -> Result<client::Declared, String> {
    let mut d = client::Declared {
        node_local: resp.node_local,
        scores_with_filter: resp.scores_with_filter,
        ..Default::default()
    };
    for &p in &resp.extension_points {
        let point = pb::ExtensionPoint::try_from(p)
            .ok()
            .and_then(Point::from_pb)
            .ok_or_else(|| format!("unknown extension point {p}"))?;
        if !d.points.contains(&point) {
            d.points.push(point);
        }
    }
    for ev in &resp.requeue_events {
        use pb::EventAction as A;
        use pb::EventResource as R;
        let resource = match R::try_from(ev.resource) {
            Ok(R::Node) => EventResource::Node,
            Ok(R::UnscheduledPod) => EventResource::UnscheduledPod,
            Ok(R::AssignedPod) => EventResource::AssignedPod,
            Ok(R::Namespace) => EventResource::Namespace,
            _ => return Err(format!("unknown requeue event resource {}", ev.resource)),
        };
        let mut actions = ActionType(0);
        for &a in &ev.actions {
            actions = actions.or(match A::try_from(a) {
                Ok(A::Add) => ActionType::ADD,
                Ok(A::Delete) => ActionType::DELETE,
                Ok(A::UpdateNodeAllocatable) => ActionType::UPDATE_NODE_ALLOCATABLE,
                Ok(A::UpdateNodeLabel) => ActionType::UPDATE_NODE_LABEL,
                Ok(A::UpdateNodeTaint) => ActionType::UPDATE_NODE_TAINT,
                Ok(A::UpdateNodeCondition) => ActionType::UPDATE_NODE_CONDITION,
                Ok(A::UpdatePodLabel) => ActionType::UPDATE_POD_LABEL,
                Ok(A::Update) => ActionType::UPDATE,
                Ok(A::All) => ActionType::ALL,
                _ => return Err(format!("unknown requeue event action {a}")),
            });
        }
        if actions.0 == 0 {
            actions = ActionType::ALL;
        }
        d.events.push(ClusterEventKind::new(resource, actions));
    }
    Ok(d)
}

/// A `&'static str` for a configured name, leaked once per distinct name.
fn static_name(name: &str) -> &'static str {
    static NAMES: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let mut t = NAMES.get_or_init(Default::default).lock();
    if let Some(n) = t.get(name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
    t.insert(n);
    n
}

/// Builds the remote plugin called `name` from its args: connects and
/// handshakes (within the call timeout). When the plugin cannot be reached
/// and `remote.points` lists its points, it is built from those and the
/// handshake is retried at its first call.
pub fn build(
    name: &str,
    args: Option<&serde_json::Value>,
    handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    let args = RemoteArgs::parse(args)?;
    let endpoint = args.endpoint.to_string();
    let fallback = args.points.clone();
    let conn = client::Conn::new(
        static_name(name),
        handle.scheduler_name.as_str().to_owned(),
        args,
    )
    .map_err(|m| PluginArgsError::new("remote.endpoint", m))?;
    let declared = match conn.handshake() {
        Ok(d) => d,
        Err(e) => match fallback {
            Some(points) => {
                tracing::warn!(plugin = name, endpoint = %endpoint, error = %e, "remote plugin not reachable; serving the points of remote.points until it is");
                client::Declared {
                    points,
                    events: Vec::new(),
                    node_local: false,
                    scores_with_filter: false,
                }
            }
            None => {
                return Err(PluginArgsError::new(
                    "remote.endpoint",
                    format!(
                        "handshake with {endpoint} failed: {e} (start the plugin first, or list its points in remote.points)"
                    ),
                ));
            }
        },
    };
    Ok(Arc::new(RemotePlugin::new(conn, declared, handle.clone())))
}

/// Registers a remote plugin under `name`.
pub fn register(registry: &mut Registry, name: &str) {
    let n = name.to_owned();
    registry.register(name, move |args, handle| build(&n, args, handle));
}

/// The names of the remote plugins a configuration (a
/// KubeSchedulerConfiguration-shaped file, or a scenario with a `config:`)
/// configures: every `pluginConfig` entry whose args hold a `remote`
/// object.
pub fn configured_names(yaml: &str) -> Vec<String> {
    let Ok(v) = serde_yaml_ng::from_str::<serde_json::Value>(yaml) else {
        return Vec::new();
    };
    let cfg = v.get("config").unwrap_or(&v);
    let mut out = Vec::new();
    for prof in cfg
        .get("profiles")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        for pc in prof
            .get("pluginConfig")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            let remote = pc
                .get("args")
                .and_then(|a| a.get("remote"))
                .is_some_and(|r| r.is_object());
            if let (true, Some(name)) = (remote, pc.get("name").and_then(|n| n.as_str()))
                && !out.iter().any(|o| o == name)
            {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// A registry of the remote plugins `yaml` configures, to layer over the
/// in-tree one (names already in `existing` are left to it).
pub fn registry_for(yaml: &str, existing: &Registry) -> Registry {
    let mut r = Registry::new();
    for name in configured_names(yaml) {
        if existing.get(&name).is_none() {
            register(&mut r, &name);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_config_or_a_scenario() {
        let cfg = r#"
profiles:
  - schedulerName: a
    pluginConfig:
      - name: GpuHealth
        args: {remote: {endpoint: "unix:///tmp/x.sock"}}
      - name: NodeResourcesFit
        args: {scoringStrategy: {type: LeastAllocated}}
"#;
        assert_eq!(configured_names(cfg), vec!["GpuHealth".to_owned()]);
        let scenario = format!("name: s\nconfig:\n{}", cfg.replace("\n", "\n  "));
        assert_eq!(configured_names(&scenario), vec!["GpuHealth".to_owned()]);
        assert!(configured_names(": not yaml [").is_empty());
    }
}
