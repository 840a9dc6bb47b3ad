//! Test support shared by this crate's plugin tests: a [`ClusterPort`] that
//! records binds in memory (and accepts pod annotation patches), and a
//! [`Handle`] around it.

use parking_lot::Mutex;
use std::sync::Arc;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::{BindError, PodCondition, PodEvent};
use strata_scheduler::sdk::{ClusterError, ClusterPort, Handle, PodInfo, Sym, WaitingPods};

/// Records binds (`namespace/name`, node) and answers with a fixed result.
#[derive(Default)]
pub(crate) struct FakeCluster {
    bound: Mutex<Vec<(String, String)>>,
    fail: Option<BindError>,
}

impl FakeCluster {
    /// A cluster whose every bind fails with `err`.
    pub(crate) fn failing(err: BindError) -> FakeCluster {
        FakeCluster {
            bound: Mutex::default(),
            fail: Some(err),
        }
    }

    /// The successful binds so far.
    pub(crate) fn bound(&self) -> Vec<(String, String)> {
        self.bound.lock().clone()
    }
}

#[async_trait::async_trait]
impl ClusterPort for FakeCluster {
    async fn bind(&self, pod: &PodInfo, node: Sym) -> Result<(), BindError> {
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        self.bound
            .lock()
            .push((pod.key(), node.as_str().to_owned()));
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

    fn record_event(&self, _event: PodEvent) {}

    /// Accepted (device assignments written by Devices' PreBind).
    async fn patch_pod_annotations(
        &self,
        _pod: &PodInfo,
        _annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        Ok(())
    }
}

/// A handle around `cluster`.
pub(crate) fn handle_with(cluster: Arc<dyn ClusterPort>) -> Handle {
    Handle {
        cluster,
        waiting: WaitingPods::default(),
        clock: Arc::new(ManualClock::default()),
        scheduler_name: Sym::new("strata-scheduler"),
        preemption: Default::default(),
    }
}

/// A handle around a cluster that accepts every bind.
pub(crate) fn handle() -> Handle {
    handle_with(Arc::new(FakeCluster::default()))
}
