//! Shared set-up for Strata's benchmarks: an engine over a cluster port that
//! answers every call at once, and builders for 16,000-node clusters.

use std::sync::Arc;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::{
    BindError, ClusterError, ClusterPort, ClusterUpdate, PodCondition, PodEvent,
};
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::Scheduler;
use strata_scheduler::intern::Sym;
use strata_scheduler::model::PodInfo;
use strata_scheduler::testing::{node, pod};

/// A cluster that accepts every call immediately.
pub struct NullCluster;

#[async_trait::async_trait]
impl ClusterPort for NullCluster {
    async fn bind(&self, _pod: &PodInfo, _node: Sym) -> Result<(), BindError> {
        Ok(())
    }
    async fn update_pod_condition(
        &self,
        _pod: &PodInfo,
        _c: PodCondition,
    ) -> Result<(), ClusterError> {
        Ok(())
    }
    async fn delete_pod(&self, _pod: &PodInfo, _reason: &str) -> Result<(), ClusterError> {
        Ok(())
    }
    fn record_event(&self, _e: PodEvent) {}
}

/// An engine with the default plugins on one thread, over `nodes` nodes in
/// 10 zones with 64 cpus each, and `existing` pods already bound (spread
/// round-robin, labelled `app=existing-{i % 100}`).
pub fn engine(nodes: usize, existing: usize, rt: &tokio::runtime::Runtime) -> Scheduler {
    let cfg = SchedulerConfig {
        parallelism: 1,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(
        cfg,
        &strata_plugins::registry(),
        &strata_plugins::default_plugins(),
        Arc::new(NullCluster),
        Arc::new(ManualClock::default()),
        rt.handle().clone(),
    )
    .expect("default configuration is valid");
    for i in 0..nodes {
        let n = node(&format!("node-{i}"))
            .alloc("cpu", "64")
            .alloc("memory", "256Gi")
            .alloc("pods", "1000")
            .label("topology.kubernetes.io/zone", &format!("zone-{}", i % 10))
            .build();
        s.handle_update(ClusterUpdate::NodeUpserted(Arc::new(n)));
    }
    let base = pod("existing")
        .req("cpu", "10m")
        .req("memory", "10Mi")
        .build();
    for i in 0..existing {
        let mut p = base.with_identity(&format!("uid-existing-{i}"), &format!("existing-{i}"));
        p.bound_node = Some(Sym::new(&format!("node-{}", i % nodes)));
        let mut labels = (*p.labels).clone();
        labels = strata_scheduler::labels::Labels::from_pairs(
            labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain([("app", format!("existing-{}", i % 100).leak() as &str)]),
        );
        p.labels = Arc::new(labels);
        s.handle_update(ClusterUpdate::PodUpserted(Arc::new(p)));
    }
    s
}

/// Pod templates of the benchmarks.
pub mod templates {
    use super::*;

    /// A plain pod: requests only.
    pub fn plain() -> PodInfo {
        pod("plain")
            .req("cpu", "100m")
            .req("memory", "100Mi")
            .build()
    }

    /// A pod with required anti-affinity on hostname to its own app.
    pub fn anti_affinity() -> PodInfo {
        pod("anti")
            .label("app", "anti")
            .req("cpu", "100m")
            .spec(serde_json::json!({
                "containers": [{"name": "c", "image": "app:1", "resources": {"requests": {"cpu": "100m"}}}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}
                ]}}
            }))
            .build()
    }

    /// A pod with a hard zone spread constraint.
    pub fn spread() -> PodInfo {
        pod("spread")
            .label("app", "spread")
            .spec(serde_json::json!({
                "containers": [{"name": "c", "image": "app:1", "resources": {"requests": {"cpu": "100m"}}}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]
            }))
            .build()
    }
}
