//! NodeResourcesBalancedAllocation: prefers nodes whose resources would be
//! used in equal shares once the pod is placed, so that no node runs out of
//! one resource while another sits idle ("Scheduler Configuration",
//! `NodeResourcesBalancedAllocationArgs`).
//!
//! For each configured resource (default cpu and memory) the fraction
//! requested/allocatable is taken, capped at 1; the score is
//! `(1 - standard deviation of the fractions) * 100`, truncated. With two
//! resources the deviation is `|f1 - f2| / 2`. Resources the node has none
//! of, and scalar resources the pod does not request, drop out (see
//! `node_resources_fit::scoring`).
//!
//! Like kube-scheduler this plugin reads plain requests, not the non-zero
//! defaults NodeResourcesFit scores with, and a pod requesting none of the
//! configured resources (best effort) is not scored at all: PreScore
//! returns Skip, so a flood of best-effort pods does not pile onto the one
//! most balanced node.
//!
//! Score reads only the pod and the node (the pod's requests are compiled
//! into it): it is node-local and allocates nothing.

use crate::common::args::{check_kind, parse_at};
use crate::common::resources::{Scored, parse_resources};
use serde::Deserialize;
use std::sync::Arc;
use strata_scheduler::sdk::{
    CycleState, Handle, MAX_NODE_SCORE, NodeId, NodeInfo, Plugin, PluginArgsError, PodInfo,
    PreScorePlugin, ScorePlugin, Snapshot, Status,
};

/// The plugin's configuration name.
pub const NAME: &str = "NodeResourcesBalancedAllocation";

/// Scores nodes by how evenly their resources would be used.
#[derive(Debug)]
pub struct BalancedAllocation {
    resources: Vec<Scored>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawArgs {
    #[serde(default)]
    #[allow(dead_code)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    resources: Option<serde_json::Value>,
}

impl BalancedAllocation {
    /// Builds the plugin from `NodeResourcesBalancedAllocationArgs`
    /// (`None`: cpu and memory). Weights default to 1 and must be 1 (the
    /// deviation is unweighted); names must be distinct.
    pub fn from_args(
        args: Option<&serde_json::Value>,
    ) -> Result<BalancedAllocation, PluginArgsError> {
        let specs = match args {
            None | Some(serde_json::Value::Null) => parse_resources(None, "resources")?,
            Some(v) => {
                let raw: RawArgs = parse_at(v, "")?;
                check_kind(raw.kind.as_deref(), "NodeResourcesBalancedAllocationArgs")?;
                parse_resources(raw.resources.as_ref(), "resources")?
            }
        };
        for (i, r) in specs.iter().enumerate() {
            if r.weight != 1 {
                return Err(PluginArgsError::new(
                    format!("resources[{i}].weight"),
                    format!("{}: must be 1", r.weight),
                ));
            }
        }
        Ok(BalancedAllocation {
            resources: Scored::from_specs(&specs),
        })
    }

    /// Whether the pod requests none of the configured resources.
    fn is_best_effort(&self, pod: &PodInfo) -> bool {
        self.resources.iter().all(|r| r.pod_request(pod, true) == 0)
    }

    /// The score of `node` for `pod`.
    #[inline]
    fn score_node(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let fraction = |r: &Scored| {
            r.read(pod, node, true)
                .map(|(alloc, req)| (req as f64 / alloc as f64).min(1.0))
        };
        // First pass: count, sum, and the first two fractions.
        let (mut n, mut sum) = (0usize, 0.0f64);
        let mut first = [0.0f64; 2];
        for f in self.resources.iter().filter_map(fraction) {
            if n < 2 {
                first[n] = f;
            }
            n += 1;
            sum += f;
        }
        let std = match n {
            0 | 1 => 0.0,
            2 => ((first[0] - first[1]) / 2.0).abs(),
            _ => {
                let mean = sum / n as f64;
                let var = self
                    .resources
                    .iter()
                    .filter_map(fraction)
                    .map(|f| (f - mean) * (f - mean))
                    .sum::<f64>()
                    / n as f64;
                var.sqrt()
            }
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

/// Builds the plugin.
pub fn factory(
    args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(BalancedAllocation::from_args(args)?))
}

strata_scheduler::plugin!(BalancedAllocation: NAME => [PreScore, Score]);

impl PreScorePlugin for BalancedAllocation {
    fn pre_score(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snap: &Snapshot,
        _feasible: &[NodeId],
    ) -> Status {
        if self.is_best_effort(pod) {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        if self.is_best_effort(pod) {
            return Ok(0);
        }
        Ok(self.score_node(pod, node))
    }

    fn is_node_local(&self) -> bool {
        true
    }

    /// Reads the pod's spec only (requests, node rules, tolerations, ports).
    fn node_local_reads_pod_identity(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use strata_scheduler::testing::{self, NodeBuilder, PodBuilder};

    fn plugin(args: Value) -> BalancedAllocation {
        BalancedAllocation::from_args(Some(&args)).unwrap()
    }

    fn node_info(n: NodeBuilder, placed: Vec<PodBuilder>) -> NodeInfo {
        let pods = placed
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                p.on("n")
                    .build()
                    .with_identity(&format!("u{i}"), &format!("u{i}"))
            })
            .collect();
        let cache = testing::cache_with(vec![n.build()], pods);
        cache.snapshot().nodes().next().unwrap().clone()
    }

    fn score(
        pl: &BalancedAllocation,
        pod: PodBuilder,
        node: NodeBuilder,
        placed: Vec<PodBuilder>,
    ) -> i64 {
        pl.score(&CycleState::new(), &pod.build(), &node_info(node, placed))
            .unwrap()
    }

    fn sized(cpu: &str, mem: &str) -> NodeBuilder {
        testing::node("n").alloc("cpu", cpu).alloc("memory", mem)
    }

    #[test]
    fn kube_examples() {
        let pl = BalancedAllocation::from_args(None).unwrap();
        // Equal fractions: cpu 2/4 = 0.5, memory 5000/10000 = 0.5 -> 100.
        assert_eq!(
            score(
                &pl,
                testing::pod("p").req("cpu", "2").req("memory", "5000"),
                sized("4", "10000"),
                vec![]
            ),
            100
        );
        // kube-scheduler's "nothing scheduled, resources requested,
        // differently sized nodes": node 1 cpu 3000/4000 = 0.75, memory
        // 5000/10000 = 0.5 -> std 0.125 -> 87; node 2 cpu 3000/6000 = 0.5,
        // memory 0.5 -> 100.
        let p = || testing::pod("p").req("cpu", "3000m").req("memory", "5000");
        assert_eq!(score(&pl, p(), sized("4000m", "10000"), vec![]), 87);
        assert_eq!(score(&pl, p(), sized("6000m", "10000"), vec![]), 100);
        // With a placed pod: cpu (3000+3000)/10000 = 0.6, memory
        // (5000+5000)/20000 = 0.5 -> std 0.05 -> 95.
        assert_eq!(score(&pl, p(), sized("10000m", "20000"), vec![p()]), 95);
        // Fractions are capped at 1: cpu 2 of 1 -> 1, memory 0.5 -> 75.
        assert_eq!(
            score(
                &pl,
                testing::pod("p").req("cpu", "2").req("memory", "5000"),
                sized("1", "10000"),
                vec![]
            ),
            75
        );
    }

    #[test]
    fn plain_requests_not_non_zero_defaults() {
        let pl = BalancedAllocation::from_args(None).unwrap();
        // The pod asks only cpu; it and placed pods that ask nothing count 0
        // memory: cpu 2/4 = 0.5, memory 0 -> std 0.25 -> 75. (With Fit's
        // non-zero defaults of 100m / 200Mi each it would be cpu 2.2/4,
        // memory 600Mi/1Gi, and score 98.)
        assert_eq!(
            score(
                &pl,
                testing::pod("p").req("cpu", "2"),
                sized("4", "1Gi"),
                vec![testing::pod("a"), testing::pod("b")]
            ),
            75
        );
    }

    #[test]
    fn three_resources_use_the_full_deviation() {
        let pl = plugin(json!({"resources": [
            {"name": "cpu", "weight": 1}, {"name": "memory"}, {"name": "example.com/gpu", "weight": 0}
        ]}));
        // Fractions 0.5, 0.5, 1.0: mean 2/3, variance (2 x 1/36 + 1/9) / 3 =
        // 1/18, std 0.2357 -> 76.
        assert_eq!(
            score(
                &pl,
                testing::pod("p")
                    .req("cpu", "2")
                    .req("memory", "5Gi")
                    .req("example.com/gpu", "2"),
                sized("4", "10Gi").alloc("example.com/gpu", "2"),
                vec![]
            ),
            76
        );
        // A pod not asking the gpu: only cpu and memory count.
        assert_eq!(
            score(
                &pl,
                testing::pod("p").req("cpu", "2").req("memory", "5Gi"),
                sized("4", "10Gi").alloc("example.com/gpu", "2"),
                vec![]
            ),
            100
        );
    }

    #[test]
    fn single_or_no_resource_is_balanced() {
        let pl = plugin(json!({"resources": [{"name": "cpu"}]}));
        assert_eq!(
            score(
                &pl,
                testing::pod("p").req("cpu", "1"),
                sized("4", "1Gi"),
                vec![]
            ),
            100
        );
        // The node has no cpu at all: nothing to compare.
        let pl = BalancedAllocation::from_args(None).unwrap();
        assert_eq!(
            score(
                &pl,
                testing::pod("p").req("cpu", "1"),
                sized("0", "0"),
                vec![]
            ),
            100
        );
    }

    #[test]
    fn best_effort_pods_are_skipped() {
        let pl = BalancedAllocation::from_args(None).unwrap();
        let cache = testing::cache_with(vec![], vec![]);
        let mut st = CycleState::new();
        let be = testing::pod("be").build();
        assert!(pl.pre_score(&mut st, &be, cache.snapshot(), &[]).is_skip());
        let burst = testing::pod("b").req("memory", "1Gi").build();
        assert!(
            pl.pre_score(&mut st, &burst, cache.snapshot(), &[])
                .is_success()
        );
        // A request of a resource that is not configured does not count.
        let gpu_only = testing::pod("g").req("example.com/gpu", "1").build();
        assert!(
            pl.pre_score(&mut st, &gpu_only, cache.snapshot(), &[])
                .is_skip()
        );
        assert_eq!(
            pl.score(&st, &be, &node_info(sized("4", "8Gi"), vec![]))
                .unwrap(),
            0
        );
        assert!(ScorePlugin::is_node_local(&pl));
        assert_eq!(pl.name(), NAME);
    }

    #[test]
    fn bad_args() {
        let cases = [
            (
                json!({"resources": [{"name": "cpu", "weight": 2}]}),
                "resources[0].weight",
            ),
            (
                json!({"resources": [{"name": "cpu"}, {"name": "cpu"}]}),
                "resources[1].name",
            ),
            (
                json!({"resources": [{"name": "cpu", "weight": -1}]}),
                "resources[0].weight",
            ),
            (json!({"resources": [{"weight": 1}]}), "resources[0]"),
            (json!({"resources": {"cpu": 1}}), "resources"),
            (json!({"resource": []}), "args"),
            (json!({"kind": "NodeResourcesFitArgs"}), "kind"),
        ];
        for (v, field) in cases {
            let e = BalancedAllocation::from_args(Some(&v)).expect_err("should be rejected");
            assert_eq!(e.field, field, "{v}: {e}");
        }
        assert!(
            BalancedAllocation::from_args(Some(&json!({
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "NodeResourcesBalancedAllocationArgs",
                "resources": []
            })))
            .is_ok()
        );
    }

    proptest::proptest! {
        #[test]
        fn score_is_bounded_and_equal_fractions_score_100(
            c in 1i64..64, m in 1i64..64, k in 1i64..10, used_c in 1i64..100, used_m in 1i64..100,
        ) {
            let pl = BalancedAllocation::from_args(None).unwrap();
            // The same fraction k/10 of both resources.
            let node = sized(&format!("{}", c * 10), &format!("{}Gi", m * 10));
            let pod = testing::pod("p").req("cpu", &format!("{}", c * k)).req("memory", &format!("{}Gi", m * k));
            proptest::prop_assert_eq!(score(&pl, pod, node, vec![]), 100);
            let any = testing::pod("p").req("cpu", &format!("{used_c}")).req("memory", &format!("{used_m}Gi"));
            let s = score(&pl, any, sized(&format!("{c}"), &format!("{m}Gi")), vec![]);
            proptest::prop_assert!((0..=100).contains(&s));
            // Two resources: never below 50 (fractions are in [0, 1]).
            proptest::prop_assert!(s >= 50);
        }
    }
}
