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

/// What [`ScorePlugin::domain_scores`](strata_scheduler::sdk::ScorePlugin)
/// says a node's score depends on (salt, node generation, and per layer the
/// node's domain and that domain's value), with the score.
pub(crate) type ScoreSignature = ((u64, u64, Vec<(u32, i64)>), i64);

/// Runs PreScore with every node feasible, then checks the promises of
/// `domain_scores`: normalizing one score per distinct value gives each
/// node what normalizing every node's score gives, and a node whose
/// signature is the one in `prev` (the last check of the same kind of pod)
/// scores as it did then. Returns this check's signatures (empty when
/// PreScore skips), or what was broken.
pub(crate) fn check_domain_scores<P>(
    pl: &P,
    pod: &PodInfo,
    snap: &strata_scheduler::sdk::Snapshot,
    prev: &rustc_hash::FxHashMap<u32, ScoreSignature>,
) -> Result<rustc_hash::FxHashMap<u32, ScoreSignature>, String>
where
    P: strata_scheduler::sdk::PreScorePlugin + strata_scheduler::sdk::ScorePlugin,
{
    use strata_scheduler::sdk::{CycleState, DomainVerdict, NodeId, NodeScore};
    let ids: Vec<NodeId> = snap.node_ids().to_vec();
    let mut state = CycleState::new();
    if ids.is_empty() || pl.pre_score(&mut state, pod, snap, &ids).is_skip() {
        return Ok(Default::default());
    }
    let ds = pl
        .domain_scores(&state)
        .ok_or("no domain scores after PreScore")?;
    let mut out = rustc_hash::FxHashMap::default();
    let mut all = Vec::new();
    for &id in &ids {
        let slot = id.index();
        let layers = ds
            .layers
            .iter()
            .map(|l| {
                let d = l
                    .of_node
                    .get(slot)
                    .copied()
                    .unwrap_or(DomainVerdict::NO_DOMAIN);
                (d, l.values.get(d as usize).copied().unwrap_or(0))
            })
            .collect();
        let score = pl
            .score(&state, pod, snap.node(id))
            .map_err(|s| s.to_string())?;
        let sig = (ds.salt, snap.generations()[slot], layers);
        if let Some((old_sig, old_score)) = prev.get(&id.0)
            && *old_sig == sig
            && *old_score != score
        {
            return Err(format!(
                "node {} scored {old_score} then {score} with the same signature",
                snap.node(id).name
            ));
        }
        all.push(NodeScore { node: id, score });
        out.insert(id.0, (sig, score));
    }
    if pl.has_normalize() {
        let mut distinct: Vec<i64> = all.iter().map(|s| s.score).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut by_value: Vec<NodeScore> = distinct
            .iter()
            .map(|v| NodeScore {
                node: NodeId(0),
                score: *v,
            })
            .collect();
        let raw = all.clone();
        if !pl.normalize(&state, pod, &mut all).is_success()
            || !pl.normalize(&state, pod, &mut by_value).is_success()
        {
            return Err("normalize failed".into());
        }
        for (r, n) in raw.iter().zip(&all) {
            let at = distinct.binary_search(&r.score).unwrap_or(0);
            if by_value[at].score != n.score {
                return Err(format!(
                    "raw {} normalizes to {} alone, {} among all",
                    r.score, by_value[at].score, n.score
                ));
            }
        }
    }
    Ok(out)
}
