//! A profile at run time: its plugins per extension point, resolved once.

use crate::config::{Point, ResolvedProfile};
use crate::framework::{CycleState, FilterEvaluator, NodeRef, Plugin, Status};
use crate::intern::Sym;
use crate::model::{NodeInfo, PodInfo};
use std::sync::Arc;

/// Plugins a binding cycle needs, shared with its task.
pub(crate) struct BindPlugins {
    pub pre_bind: Vec<Arc<dyn Plugin>>,
    pub bind: Vec<Arc<dyn Plugin>>,
    pub post_bind: Vec<Arc<dyn Plugin>>,
}

pub(crate) struct Profile {
    pub name: Sym,
    pub queue_sort: Arc<dyn Plugin>,
    pub pre_enqueue: Vec<Arc<dyn Plugin>>,
    pub pre_filter: Vec<Arc<dyn Plugin>>,
    pub filter: Vec<Arc<dyn Plugin>>,
    pub post_filter: Vec<Arc<dyn Plugin>>,
    pub pre_score: Vec<Arc<dyn Plugin>>,
    pub score: Vec<(Arc<dyn Plugin>, i64)>,
    pub reserve: Vec<Arc<dyn Plugin>>,
    pub permit: Vec<Arc<dyn Plugin>>,
    pub binding: Arc<BindPlugins>,
    pub observers: Vec<Arc<dyn Plugin>>,
    pub percentage_of_nodes_to_score: u32,
}

impl Profile {
    pub fn from_resolved(r: &ResolvedProfile) -> Profile {
        let list = |p: Point| r.at(p).iter().map(|x| x.plugin.clone()).collect::<Vec<_>>();
        Profile {
            name: Sym::new(&r.scheduler_name),
            queue_sort: r.at(Point::QueueSort)[0].plugin.clone(),
            pre_enqueue: list(Point::PreEnqueue),
            pre_filter: list(Point::PreFilter),
            filter: list(Point::Filter),
            post_filter: list(Point::PostFilter),
            pre_score: list(Point::PreScore),
            score: r
                .at(Point::Score)
                .iter()
                .map(|x| (x.plugin.clone(), x.weight))
                .collect(),
            reserve: list(Point::Reserve),
            permit: list(Point::Permit),
            binding: Arc::new(BindPlugins {
                pre_bind: list(Point::PreBind),
                bind: list(Point::Bind),
                post_bind: list(Point::PostBind),
            }),
            observers: r
                .points
                .get("nodeObserver")
                .map(|v| v.iter().map(|x| x.plugin.clone()).collect())
                .unwrap_or_default(),
            percentage_of_nodes_to_score: r.percentage_of_nodes_to_score,
        }
    }

    /// Every distinct plugin instance of the profile.
    pub fn all_plugins(&self) -> Vec<Arc<dyn Plugin>> {
        let mut out: Vec<Arc<dyn Plugin>> = Vec::new();
        let mut push = |p: &Arc<dyn Plugin>| {
            if !out.iter().any(|x| Arc::ptr_eq(x, p)) {
                out.push(p.clone());
            }
        };
        push(&self.queue_sort);
        for l in [
            &self.pre_enqueue,
            &self.pre_filter,
            &self.filter,
            &self.post_filter,
            &self.pre_score,
            &self.reserve,
            &self.permit,
            &self.binding.pre_bind,
            &self.binding.bind,
            &self.binding.post_bind,
            &self.observers,
        ] {
            l.iter().for_each(&mut push);
        }
        self.score.iter().for_each(|(p, _)| push(p));
        out
    }

    /// Undoes every Reserve, in reverse order.
    pub fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: NodeRef) {
        for p in self.reserve.iter().rev() {
            if let Some(r) = p.as_reserve() {
                r.unreserve(state, pod, node);
            }
        }
    }
}

/// Runs a profile's filters on what-if nodes (preemption, nominated pods).
pub(crate) struct Evaluator<'a> {
    pub filters: &'a [Arc<dyn Plugin>],
    pub pre_filters: &'a [Arc<dyn Plugin>],
}

impl FilterEvaluator for Evaluator<'_> {
    fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for p in self.filters {
            if state.skips_filter(p.name()) {
                continue;
            }
            if let Some(f) = p.as_filter() {
                let s = f.filter(state, pod, node);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        for p in self.pre_filters {
            if state.skips_filter(p.name()) {
                continue;
            }
            if let Some(pf) = p.as_pre_filter().filter(|pf| pf.has_extensions()) {
                let s = pf.remove_pod(state, pod, other, node);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        for p in self.pre_filters {
            if state.skips_filter(p.name()) {
                continue;
            }
            if let Some(pf) = p.as_pre_filter().filter(|pf| pf.has_extensions()) {
                let s = pf.add_pod(state, pod, other, node);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }
}
