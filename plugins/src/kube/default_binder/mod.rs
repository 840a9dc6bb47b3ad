//! DefaultBinder: binds a pod to its chosen node through the cluster port
//! (kube-scheduler's default Bind plugin).
//!
//! The binder holds the [`Handle`] it was built with and calls
//! [`ClusterPort::bind`](strata_scheduler::sdk::ClusterPort::bind), which
//! the Kubernetes adapter turns into a `pods/binding` call and the simulator
//! into an in-memory placement. It never returns Skip: as the last binder of
//! a profile it always takes the pod.
//!
//! A failed bind becomes `Status::error` whose message is the
//! [`BindError`](strata_scheduler::cluster::BindError)'s text (`pod is
//! already bound: ..`, `pod no longer exists: ..`, `bind failed: ..`). The
//! status does not carry the error kind as a type: the engine treats every
//! bind failure the same way (forget the assumed pod, requeue it), and a
//! conflict or a deleted pod is then settled by the pod update or delete
//! event that follows.

use std::sync::Arc;
use strata_scheduler::sdk::{
    BindPlugin, CycleState, Handle, NodeRef, Plugin, PluginArgsError, PodInfo, Status,
};

/// The plugin's configuration name.
pub const NAME: &str = "DefaultBinder";

/// Binds through the handle's cluster port.
pub struct DefaultBinder {
    handle: Handle,
}

impl DefaultBinder {
    /// A binder that calls `handle.cluster`.
    pub fn new(handle: Handle) -> DefaultBinder {
        DefaultBinder { handle }
    }
}

strata_scheduler::plugin!(DefaultBinder: NAME => [Bind]);

#[async_trait::async_trait]
impl BindPlugin for DefaultBinder {
    async fn bind(&self, _state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
        match self.handle.cluster.bind(pod, node.name).await {
            Ok(()) => Status::success(),
            Err(e) => Status::error(e.to_string()),
        }
    }
}

/// Builds the plugin. DefaultBinder takes no arguments; any given are
/// ignored, as kube-scheduler has no DefaultBinderArgs.
pub fn factory(
    _args: Option<&serde_json::Value>,
    handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(DefaultBinder::new(handle.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testkit::{FakeCluster, handle_with};
    use strata_scheduler::cluster::BindError;
    use strata_scheduler::sdk::{Code, NodeId, Sym};
    use strata_scheduler::testing;

    fn node_ref(name: &str) -> NodeRef {
        NodeRef {
            id: NodeId(3),
            name: Sym::new(name),
        }
    }

    #[tokio::test]
    async fn binds_through_the_cluster_port() {
        let cluster = Arc::new(FakeCluster::default());
        let plugin = factory(None, &handle_with(cluster.clone())).unwrap();
        let binder = plugin.as_bind().unwrap();
        let pod = testing::pod("p").build();
        let st = binder.bind(&CycleState::new(), &pod, node_ref("n1")).await;
        assert!(st.is_success(), "{st}");
        assert_eq!(
            cluster.bound(),
            vec![("default/p".to_string(), "n1".to_string())]
        );
    }

    #[tokio::test]
    async fn bind_errors_become_error_statuses_with_the_message() {
        for (err, text) in [
            (
                BindError::Conflict("p is on n2".into()),
                "pod is already bound: p is on n2",
            ),
            (
                BindError::NotFound("default/p".into()),
                "pod no longer exists: default/p",
            ),
            (BindError::Other("timeout".into()), "bind failed: timeout"),
        ] {
            let cluster = Arc::new(FakeCluster::failing(err));
            let binder = DefaultBinder::new(handle_with(cluster.clone()));
            let pod = testing::pod("p").build();
            let st = BindPlugin::bind(&binder, &CycleState::new(), &pod, node_ref("n1")).await;
            assert_eq!(st.code(), Code::Error);
            assert_eq!(st.message(), text);
            assert!(cluster.bound().is_empty());
        }
    }

    #[test]
    fn serves_only_bind() {
        let p = factory(
            Some(&serde_json::json!({})),
            &handle_with(Arc::new(FakeCluster::default())),
        )
        .unwrap();
        assert_eq!(p.name(), NAME);
        assert!(p.as_bind().is_some());
        assert!(p.as_filter().is_none() && p.as_score().is_none());
    }
}
