//! # VendorHealth: an example vendor plugin for Strata
//!
//! A vendor's node agent publishes each node's health as an annotation,
//! `vendor.example.com/health: ok | degraded | failed`. This plugin
//!
//! - **filters out** failed nodes (Filter),
//! - **scores** degraded nodes lower than healthy ones (Score),
//! - notes the health it placed the pod on (Reserve), and
//! - **tells the node agent** by writing `vendor.example.com/placed-on-health`
//!   on the pod before it is bound (PreBind), through the same
//!   [`ClusterPort`] call the in-tree Devices plugin uses for its
//!   assignments.
//!
//! It is built on [`strata_scheduler::sdk`] alone; `src/main.rs` is the
//! scheduler binary that carries it, over [`strata_cli::Strata`].
//! `docs/PLUGINS.md` walks through this file.
//!
//! Configuration (all optional):
//!
//! ```yaml
//! profiles:
//! - schedulerName: default-scheduler
//!   plugins:
//!     multiPoint:
//!       enabled: [{name: VendorHealth, weight: 2}]
//!   pluginConfig:
//!   - name: VendorHealth
//!     args: {degradedScore: 20, missing: ok}
//! ```

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use strata_scheduler::sdk::*;

/// The plugin's name in configuration.
pub const NAME: &str = "VendorHealth";
/// The node annotation the vendor's node agent writes.
pub const HEALTH: &str = "vendor.example.com/health";
/// The pod annotation this plugin writes for the node agent: the health of
/// the node when the pod was placed on it (`ok` or `degraded`).
pub const PLACED_ON_HEALTH: &str = "vendor.example.com/placed-on-health";

/// A node's health as the annotation reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Healthy.
    Ok,
    /// Usable, but the vendor would rather not.
    Degraded,
    /// Not usable: no pod goes there.
    Failed,
}

impl Health {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Failed => "failed",
        }
    }
}

/// `pluginConfig` args of [`NAME`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Args {
    /// Score of a degraded node, 0..=100 (a healthy node scores 100).
    pub degraded_score: i64,
    /// The health of a node without the annotation (no agent on it).
    pub missing: Health,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            degraded_score: 20,
            missing: Health::Ok,
        }
    }
}

/// The plugin: its args and the handle it was built with.
pub struct VendorHealth {
    args: Args,
    handle: Handle,
}

/// Builds the plugin from its args: what a registry calls.
pub fn factory(
    args: Option<&serde_json::Value>,
    handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    let args: Args = parse_args(args)?;
    if !(0..=MAX_NODE_SCORE).contains(&args.degraded_score) {
        return Err(PluginArgsError::new(
            "degradedScore",
            format!("{} is not within 0..={MAX_NODE_SCORE}", args.degraded_score),
        ));
    }
    Ok(Arc::new(VendorHealth {
        args,
        handle: handle.clone(),
    }))
}

impl VendorHealth {
    /// `node`'s health. A value the plugin does not know (a newer agent,
    /// a typo) counts as degraded: usable, not preferred.
    pub fn health(&self, node: &NodeInfo) -> Health {
        match node.annotations.get(HEALTH).map(String::as_str) {
            None => self.args.missing,
            Some("ok") => Health::Ok,
            Some("failed") => Health::Failed,
            Some(_) => Health::Degraded,
        }
    }
}

strata_scheduler::plugin!(VendorHealth: NAME => [Filter, Score, Reserve, PreBind] {
    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        // A node added, or a node changed: it may have recovered.
        vec![ClusterEventKind::new(
            EventResource::Node,
            ActionType::ADD.or(ActionType::UPDATE_NODE),
        )]
    }

    fn queueing_hint(&self, _pod: &PodInfo, event: &ClusterEvent<'_>) -> QueueingHint {
        match event.object {
            EventObject::Node { new: Some(node), .. } if self.health(node) == Health::Failed => {
                QueueingHint::Skip
            }
            _ => QueueingHint::Queue,
        }
    }
});

impl FilterPlugin for VendorHealth {
    fn filter(&self, _state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        if self.health(node) == Health::Failed {
            // A static reason: no allocation on the hot path.
            return Status::unschedulable("node(s) reported failed by the vendor agent");
        }
        Status::success()
    }

    fn is_node_local(&self) -> bool {
        true
    }
}

impl ScorePlugin for VendorHealth {
    fn score(&self, _state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(match self.health(node) {
            Health::Ok => MAX_NODE_SCORE,
            Health::Degraded => self.args.degraded_score,
            Health::Failed => 0,
        })
    }

    fn is_node_local(&self) -> bool {
        true
    }
}

/// What Reserve saw, for PreBind.
#[derive(Clone, Copy, Debug)]
struct Placed(Health);

impl ReservePlugin for VendorHealth {
    fn reserve(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        node: NodeRef,
        snap: &Snapshot,
    ) -> Status {
        state.insert(Placed(self.health(snap.node(node.id))));
        Status::success()
    }

    fn unreserve(&self, state: &mut CycleState, _pod: &PodInfo, _node: NodeRef) {
        state.remove::<Placed>();
    }
}

#[async_trait::async_trait]
impl PreBindPlugin for VendorHealth {
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
        let Some(Placed(health)) = state.get::<Placed>().copied() else {
            return Status::success();
        };
        let note = BTreeMap::from([(PLACED_ON_HEALTH.to_owned(), health.as_str().to_owned())]);
        match self.handle.cluster.patch_pod_annotations(pod, &note).await {
            Ok(()) => Status::success(),
            Err(e) => Status::error(format!(
                "telling the vendor agent on {} about pod {}: {e}",
                node.name,
                pod.key()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_scheduler::testing::{self, RecordingCluster};

    fn plugin(args: serde_json::Value) -> (Arc<dyn Plugin>, Arc<RecordingCluster>) {
        let cluster = Arc::new(RecordingCluster::default());
        let p = factory(Some(&args), &testing::handle(cluster.clone())).expect("valid args");
        (p, cluster)
    }

    fn node(health: Option<&str>) -> NodeInfo {
        let mut b = testing::node("n").alloc("cpu", "4");
        if let Some(h) = health {
            b = b.annotation(HEALTH, h);
        }
        let mut n = NodeInfo::placeholder(NodeId(0), Sym::new("n"));
        n.set_node(&b.build()).expect("a valid node");
        n
    }

    #[test]
    fn failed_nodes_are_filtered_out_and_degraded_ones_score_lower() {
        let (p, _) = plugin(serde_json::json!({"degradedScore": 30}));
        let (f, s) = (p.as_filter().unwrap(), p.as_score().unwrap());
        let pod = testing::pod("p").build();
        let st = CycleState::new();
        assert!(f.filter(&st, &pod, &node(Some("ok"))).is_success());
        assert!(f.filter(&st, &pod, &node(Some("degraded"))).is_success());
        assert!(f.filter(&st, &pod, &node(None)).is_success());
        let failed = f.filter(&st, &pod, &node(Some("failed")));
        assert!(failed.is_rejected(), "{failed:?}");
        assert_eq!(s.score(&st, &pod, &node(Some("ok"))), Ok(100));
        assert_eq!(s.score(&st, &pod, &node(Some("degraded"))), Ok(30));
        assert_eq!(s.score(&st, &pod, &node(Some("rebooting"))), Ok(30));
        assert_eq!(s.score(&st, &pod, &node(None)), Ok(100));
    }

    #[test]
    fn nodes_without_the_annotation_count_as_configured() {
        let (p, _) = plugin(serde_json::json!({"missing": "failed"}));
        let pod = testing::pod("p").build();
        let st = CycleState::new();
        assert!(
            p.as_filter()
                .unwrap()
                .filter(&st, &pod, &node(None))
                .is_rejected()
        );
    }

    #[test]
    fn bad_args_name_the_field() {
        let h = testing::handle(Arc::new(RecordingCluster::default()));
        for (args, field) in [
            (serde_json::json!({"degradedScore": 101}), "degradedScore"),
            (serde_json::json!({"degradedScore": "low"}), "degradedScore"),
            (serde_json::json!({"missing": "maybe"}), "missing"),
            (serde_json::json!({"degraded": 10}), "degraded"),
            (serde_json::json!("high"), "args"),
        ] {
            let Err(e) = factory(Some(&args), &h) else {
                panic!("{args} is refused")
            };
            assert_eq!(e.field, field, "{args}: {e}");
        }
        assert!(factory(None, &h).is_ok());
    }

    #[test]
    fn a_recovered_node_requeues_and_a_failed_one_does_not() {
        let (p, _) = plugin(serde_json::json!({}));
        let pod = testing::pod("p").build();
        let hint = |n: &NodeInfo| {
            p.queueing_hint(
                &pod,
                &ClusterEvent {
                    resource: EventResource::Node,
                    action: ActionType::UPDATE,
                    object: EventObject::Node {
                        old: None,
                        new: Some(n),
                    },
                },
            )
        };
        assert_eq!(hint(&node(Some("ok"))), QueueingHint::Queue);
        assert_eq!(hint(&node(Some("failed"))), QueueingHint::Skip);
        assert!(
            p.events_to_register()
                .iter()
                .any(|k| k.resource == EventResource::Node)
        );
    }

    #[tokio::test]
    async fn pre_bind_tells_the_agent_the_health_reserve_saw() {
        let (p, cluster) = plugin(serde_json::json!({}));
        let cache = testing::cache_with(
            vec![
                testing::node("good").alloc("cpu", "4").build(),
                testing::node("meh")
                    .alloc("cpu", "4")
                    .annotation(HEALTH, "degraded")
                    .build(),
            ],
            vec![],
        );
        let snap = cache.snapshot();
        let pod = testing::pod("p").build();
        let meh = snap.node_by_name(Sym::new("meh")).expect("node meh");
        let at = NodeRef {
            id: meh.id,
            name: meh.name,
        };
        let mut st = CycleState::new();
        assert!(
            p.as_reserve()
                .unwrap()
                .reserve(&mut st, &pod, at, snap)
                .is_success()
        );
        assert!(
            p.as_pre_bind()
                .unwrap()
                .pre_bind(&st, &pod, at)
                .await
                .is_success()
        );
        let written = cluster.annotations.lock().clone();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].0, pod.key());
        assert_eq!(written[0].1[PLACED_ON_HEALTH], "degraded");
        // Unreserved: nothing to tell.
        p.as_reserve().unwrap().unreserve(&mut st, &pod, at);
        assert!(
            p.as_pre_bind()
                .unwrap()
                .pre_bind(&st, &pod, at)
                .await
                .is_success()
        );
        assert_eq!(cluster.annotations.lock().len(), 1);
    }
}
