//! The plugin SDK: everything a scheduling plugin imports, from one place.
//!
//! A plugin, in-tree or a vendor's, is built on this module alone:
//!
//! ```
//! use strata_scheduler::sdk::*;
//! ```
//!
//! brings the extension-point traits, [`Status`], [`CycleState`], the pod
//! and node views ([`PodInfo`], [`NodeInfo`], [`Snapshot`]), the [`Handle`]
//! a plugin is built with (and the [`ClusterPort`] and [`PreemptionClaims`]
//! in it), requeue events,
//! args parsing ([`parse_args`], [`PluginArgsError`]), the [`Registry`] a
//! plugin is registered in, and the [`plugin!`](crate::plugin) macro that
//! declares which extension points a plugin serves.
//!
//! The rest of `strata-scheduler` (engine, queue, cache internals,
//! configuration) is the engine's business; a plugin that reaches past this
//! module depends on something that may change without notice.
//!
//! # A plugin in full
//!
//! A Filter that keeps pods off nodes labelled `example.com/drain=true`,
//! with the events that can make a rejected pod schedulable again:
//!
//! ```
//! use std::sync::Arc;
//! use strata_scheduler::sdk::*;
//!
//! pub const NAME: &str = "Drain";
//!
//! pub struct Drain;
//!
//! impl FilterPlugin for Drain {
//!     fn filter(&self, _state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
//!         if node.labels.get_str("example.com/drain") == Some("true") {
//!             return Status::unschedulable("node is draining");
//!         }
//!         Status::success()
//!     }
//!     // Depends on the node alone: the engine may reuse the answer for
//!     // pods of the same template until the node changes.
//!     fn is_node_local(&self) -> bool {
//!         true
//!     }
//! }
//!
//! strata_scheduler::plugin!(Drain: NAME => [Filter] {
//!     fn events_to_register(&self) -> Vec<ClusterEventKind> {
//!         vec![ClusterEventKind::new(EventResource::Node, ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL))]
//!     }
//! });
//!
//! /// What the registry calls: no args for this plugin.
//! pub fn factory(_args: Option<&serde_json::Value>, _h: &Handle) -> Result<Arc<dyn Plugin>, PluginArgsError> {
//!     Ok(Arc::new(Drain))
//! }
//!
//! let mut registry = Registry::new();
//! registry.register(NAME, factory);
//! assert!(registry.get(NAME).is_some());
//! ```

//!
//! # Per-pod state: CycleState
//!
//! Work that depends on the pod only is done once, in PreFilter, and read
//! by Filter for every node. State is keyed by its Rust type, so a private
//! type is private state:
//!
//! ```
//! use strata_scheduler::sdk::*;
//!
//! /// What PreFilter derived from the pod: its zone, if it asks for one.
//! #[derive(Clone)]
//! struct Wanted(Option<&'static str>);
//!
//! struct Zone;
//! impl PreFilterPlugin for Zone {
//!     fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _: &Snapshot) -> PreFilterResult {
//!         let wanted = pod.annotations.get("example.com/zone").map(|z| Sym::new(z).as_str());
//!         if wanted.is_none() {
//!             return PreFilterResult::skip(); // this plugin's Filter does not run
//!         }
//!         state.insert(Wanted(wanted));
//!         PreFilterResult::ok()
//!     }
//! }
//! impl FilterPlugin for Zone {
//!     fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
//!         let Some(Wanted(Some(zone))) = state.get::<Wanted>() else {
//!             return Status::error("PreFilter state is missing");
//!         };
//!         if node.labels.get_str("topology.kubernetes.io/zone") == Some(*zone) {
//!             Status::success()
//!         } else {
//!             Status::unschedulable("node(s) in another zone")
//!         }
//!     }
//! }
//! strata_scheduler::plugin!(Zone: "Zone" => [PreFilter, Filter]);
//!
//! // The views, compiled from API objects as the engine does.
//! let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "p", "namespace": "default", "uid": "u1",
//!                  "annotations": {"example.com/zone": "a"}},
//!     "spec": {"containers": [{"name": "c"}]}
//! })).unwrap();
//! let pod = PodInfo::compile(&pod).unwrap();
//! let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "n", "labels": {"topology.kubernetes.io/zone": "b"}},
//!     "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
//! })).unwrap();
//! let mut info = NodeInfo::placeholder(NodeId(0), Sym::new("n"));
//! info.set_node(&node).unwrap();
//!
//! let mut state = CycleState::new();
//! let snapshot = Snapshot::default();
//! assert!(Zone.pre_filter(&mut state, &pod, &snapshot).status.is_success());
//! let status = Zone.filter(&state, &pod, &info);
//! assert_eq!(status.code(), Code::Unschedulable);
//! assert_eq!(status.message(), "node(s) in another zone");
//! ```
//!
//! # The Handle: calling the cluster from the binding cycle
//!
//! A plugin keeps the [`Handle`] it was built with. Its [`ClusterPort`] is
//! the only way to the cluster (the Kubernetes API, or the simulator's
//! memory), and is for the binding cycle (PreBind, Bind), never for
//! Filter or Score:
//!
//! ```
//! use std::collections::BTreeMap;
//! use strata_scheduler::sdk::*;
//!
//! struct Stamp(Handle);
//! #[async_trait::async_trait]
//! impl PreBindPlugin for Stamp {
//!     async fn pre_bind(&self, _: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
//!         let ann = BTreeMap::from([("example.com/placed-by".to_owned(), self.0.scheduler_name.to_string())]);
//!         match self.0.cluster.patch_pod_annotations(pod, &ann).await {
//!             Ok(()) => Status::success(),
//!             Err(e) => Status::error(format!("stamping pod {} on {}: {e}", pod.key(), node.name)),
//!         }
//!     }
//! }
//! strata_scheduler::plugin!(Stamp: "Stamp" => [PreBind]);
//! ```

pub use crate::cache::Snapshot;
pub use crate::clock::Clock;
pub use crate::cluster::{ClusterError, ClusterPort};
pub use crate::framework::{
    ActionType, BindPlugin, ClusterEvent, ClusterEventKind, Code, CycleState, Diagnosis,
    DomainScores, DomainVerdict, EventObject, EventResource, FilterEvaluator, FilterPlugin, Handle,
    MAX_NODE_SCORE, NO_PREEMPTION_EXTENDERS, NoPreemptionExtenders, NodeObserver, NodeRef,
    NodeScore, PermitDecision, PermitPlugin, PermitResult, Plugin, PluginArgsError, PluginFactory,
    PodsToActivate, PostBindPlugin, PostFilterContext, PostFilterPlugin, PostFilterResult,
    PreBindPlugin, PreEnqueuePlugin, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    PreemptionCandidate, PreemptionClaimant, PreemptionClaims, PreemptionExtenders,
    QueueSortPlugin, QueueingHint, Reason, Registry, ReservePlugin, ScoreLayer, ScorePlugin,
    SortKey, StateData, Status, WaitingPods,
};
pub use crate::intern::Sym;
pub use crate::labels::Labels;
pub use crate::model::{NodeId, NodeInfo, PodInfo};
pub use crate::plugin;
pub use crate::resources::{ResourceId, ResourceVec};

/// Parses a plugin's `pluginConfig` args into `T`; no args give
/// `T::default()`.
///
/// Unknown or mistyped fields are refused with the field's path inside the
/// args (`weights.degraded`), so the configuration error names it; put
/// `#[serde(deny_unknown_fields)]` on `T` to refuse misspelt fields too.
/// Check values serde cannot (ranges, relations between fields) after this
/// and report them with [`PluginArgsError::new`].
///
/// ```
/// use strata_scheduler::sdk::{parse_args, PluginArgsError};
///
/// #[derive(serde::Deserialize, Default, Debug, PartialEq)]
/// #[serde(default, deny_unknown_fields, rename_all = "camelCase")]
/// struct Args {
///     degraded_score: i64,
/// }
///
/// let a: Args = parse_args(Some(&serde_json::json!({"degradedScore": 20}))).unwrap();
/// assert_eq!(a.degraded_score, 20);
/// assert_eq!(parse_args::<Args>(None).unwrap(), Args::default());
///
/// let e: PluginArgsError = parse_args::<Args>(Some(&serde_json::json!({"degradedScore": "x"}))).unwrap_err();
/// assert_eq!(e.field, "degradedScore");
/// ```
pub fn parse_args<T>(args: Option<&serde_json::Value>) -> Result<T, PluginArgsError>
where
    T: serde::de::DeserializeOwned + Default,
{
    let Some(v) = args else {
        return Ok(T::default());
    };
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "args".to_owned() } else { path };
        PluginArgsError::new(field, e.into_inner().to_string())
    })
}

/// Declares a plugin: its configuration name and the extension points it
/// serves, so the engine finds them. It writes the [`Plugin`] impl; the
/// points' own traits (`FilterPlugin`, `ScorePlugin`, ...) are implemented
/// by hand as usual.
///
/// ```text
/// plugin!(TYPE: NAME => [POINT, ...]);
/// plugin!(TYPE: NAME => [POINT, ...] { other items of the Plugin impl });
/// ```
///
/// Points: `PreEnqueue`, `QueueSort`, `PreFilter`, `Filter`, `PostFilter`,
/// `PreScore`, `Score` (with NormalizeScore), `Reserve`, `Permit`,
/// `PreBind`, `Bind`, `PostBind`, and `NodeObserver` (told of every node
/// change). The block takes the rest of the [`Plugin`] trait:
/// `events_to_register` and `queueing_hint`. A point whose trait the type
/// does not implement, or a name that is not a point, fails to compile.
///
/// The accessors the macro writes are what a hand-written impl would be
/// (`Some(self)`), resolved once per profile when it is built, so the
/// scheduling hot path is unchanged.
///
/// ```
/// use strata_scheduler::sdk::*;
///
/// struct Quiet;
/// impl FilterPlugin for Quiet {
///     fn filter(&self, _: &CycleState, _: &PodInfo, _: &NodeInfo) -> Status {
///         Status::success()
///     }
/// }
/// impl ScorePlugin for Quiet {
///     fn score(&self, _: &CycleState, _: &PodInfo, _: &NodeInfo) -> Result<i64, Status> {
///         Ok(MAX_NODE_SCORE)
///     }
/// }
/// strata_scheduler::plugin!(Quiet: "Quiet" => [Filter, Score]);
///
/// let p: &dyn Plugin = &Quiet;
/// assert_eq!(p.name(), "Quiet");
/// assert!(p.as_filter().is_some() && p.as_score().is_some());
/// assert!(p.as_pre_bind().is_none());
/// ```
///
/// A point the type does not implement does not compile:
///
/// ```compile_fail
/// use strata_scheduler::sdk::*;
/// struct NoScore;
/// strata_scheduler::plugin!(NoScore: "NoScore" => [Score]);
/// ```
#[macro_export]
macro_rules! plugin {
    ($ty:ty : $name:expr => [$($point:ident),* $(,)?] $({ $($item:item)* })? $(;)?) => {
        impl $crate::framework::Plugin for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            $( $crate::__plugin_point!($point); )*
            $( $($item)* )?
        }
    };
}

/// One accessor of [`plugin!`](crate::plugin); not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __plugin_point {
    (PreEnqueue) => {
        fn as_pre_enqueue(&self) -> Option<&dyn $crate::framework::PreEnqueuePlugin> {
            Some(self)
        }
    };
    (QueueSort) => {
        fn as_queue_sort(&self) -> Option<&dyn $crate::framework::QueueSortPlugin> {
            Some(self)
        }
    };
    (PreFilter) => {
        fn as_pre_filter(&self) -> Option<&dyn $crate::framework::PreFilterPlugin> {
            Some(self)
        }
    };
    (Filter) => {
        fn as_filter(&self) -> Option<&dyn $crate::framework::FilterPlugin> {
            Some(self)
        }
    };
    (PostFilter) => {
        fn as_post_filter(&self) -> Option<&dyn $crate::framework::PostFilterPlugin> {
            Some(self)
        }
    };
    (PreScore) => {
        fn as_pre_score(&self) -> Option<&dyn $crate::framework::PreScorePlugin> {
            Some(self)
        }
    };
    (Score) => {
        fn as_score(&self) -> Option<&dyn $crate::framework::ScorePlugin> {
            Some(self)
        }
    };
    (Reserve) => {
        fn as_reserve(&self) -> Option<&dyn $crate::framework::ReservePlugin> {
            Some(self)
        }
    };
    (Permit) => {
        fn as_permit(&self) -> Option<&dyn $crate::framework::PermitPlugin> {
            Some(self)
        }
    };
    (PreBind) => {
        fn as_pre_bind(&self) -> Option<&dyn $crate::framework::PreBindPlugin> {
            Some(self)
        }
    };
    (Bind) => {
        fn as_bind(&self) -> Option<&dyn $crate::framework::BindPlugin> {
            Some(self)
        }
    };
    (PostBind) => {
        fn as_post_bind(&self) -> Option<&dyn $crate::framework::PostBindPlugin> {
            Some(self)
        }
    };
    (NodeObserver) => {
        fn as_node_observer(&self) -> Option<&dyn $crate::framework::NodeObserver> {
            Some(self)
        }
    };
    ($other:ident) => {
        ::core::compile_error!(::core::concat!(
            "`",
            ::core::stringify!($other),
            "` is not an extension point (PreEnqueue, QueueSort, PreFilter, Filter, PostFilter, PreScore, Score, Reserve, Permit, PreBind, Bind, PostBind, NodeObserver)"
        ));
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Both;
    impl PreFilterPlugin for Both {
        fn pre_filter(&self, _: &mut CycleState, _: &PodInfo, _: &Snapshot) -> PreFilterResult {
            PreFilterResult::skip()
        }
    }
    impl FilterPlugin for Both {
        fn filter(&self, _: &CycleState, _: &PodInfo, _: &NodeInfo) -> Status {
            Status::success()
        }
    }
    impl NodeObserver for Both {
        fn node_changed(&self, _: &NodeInfo, _: &Snapshot) {}
    }
    crate::plugin!(Both: "Both" => [PreFilter, Filter, NodeObserver,] {
        fn events_to_register(&self) -> Vec<ClusterEventKind> {
            vec![ClusterEventKind::new(EventResource::Node, ActionType::ADD)]
        }
    });

    #[test]
    fn the_macro_exposes_exactly_the_points_named() {
        let p: &dyn Plugin = &Both;
        assert_eq!(p.name(), "Both");
        assert!(p.as_pre_filter().is_some());
        assert!(p.as_filter().is_some());
        assert!(p.as_node_observer().is_some());
        for none in [
            p.as_pre_enqueue().is_some(),
            p.as_queue_sort().is_some(),
            p.as_post_filter().is_some(),
            p.as_pre_score().is_some(),
            p.as_score().is_some(),
            p.as_reserve().is_some(),
            p.as_permit().is_some(),
            p.as_pre_bind().is_some(),
            p.as_bind().is_some(),
            p.as_post_bind().is_some(),
        ] {
            assert!(!none);
        }
        assert_eq!(p.events_to_register().len(), 1);
    }

    #[test]
    fn a_registry_extended_by_another_takes_its_factories() {
        fn both(
            _: Option<&serde_json::Value>,
            _: &Handle,
        ) -> Result<Arc<dyn Plugin>, PluginArgsError> {
            Ok(Arc::new(Both))
        }
        fn refuse(
            _: Option<&serde_json::Value>,
            _: &Handle,
        ) -> Result<Arc<dyn Plugin>, PluginArgsError> {
            Err(PluginArgsError::new("args", "vendor's"))
        }
        let mut base = Registry::new();
        base.register("Both", both);
        base.register("Other", both);
        let mut vendor = Registry::new();
        vendor.register("Both", refuse);
        vendor.register("Vendor", both);
        base.extend(&vendor);
        assert_eq!(
            base.names().collect::<Vec<_>>(),
            ["Both", "Other", "Vendor"]
        );
        assert_eq!(format!("{base:?}"), r#"{"Both", "Other", "Vendor"}"#);
        let h = crate::testing::handle(Arc::new(crate::testing::RecordingCluster::default()));
        let Err(e) = (base.get("Both").unwrap())(None, &h) else {
            panic!("the vendor's factory replaces the base one")
        };
        assert_eq!(e.message, "vendor's");
    }

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields, rename_all = "camelCase")]
    struct Args {
        weights: Weights,
    }
    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Weights {
        degraded: i64,
    }

    #[test]
    fn args_errors_name_the_field_inside_the_args() {
        let e = parse_args::<Args>(Some(&serde_json::json!({"weights": {"degraded": "x"}})))
            .expect_err("a string is not a number");
        assert_eq!(e.field, "weights.degraded");
        let e = parse_args::<Args>(Some(&serde_json::json!({"wieghts": {}})))
            .expect_err("unknown field");
        assert!(e.message.contains("wieghts"), "{e}");
        let e = parse_args::<Args>(Some(&serde_json::json!(3))).expect_err("not a map");
        assert_eq!(e.field, "args");
        assert_eq!(parse_args::<Args>(None).unwrap(), Args::default());
    }
}
