//! ImageLocality: prefers nodes that already hold the pod's container
//! images, so the pod starts without a long pull (kube-scheduler's
//! "Scheduling Framework" plugin list and its ImageLocality score).
//!
//! For every container and init container whose image is on the node, the
//! image's size times its *spread* (the share of all nodes that have it) is
//! added up. Scaling by spread keeps a large image that sits on a single
//! node from drawing every pod there ("node heating"). The sum is clamped
//! between 23 MiB and 1000 MiB per container and mapped linearly onto
//! `0..=100`; below the minimum a node scores 0.
//!
//! PreScore reads the cluster-wide counts once per pod
//! (`Snapshot::image_node_count`, `Snapshot::num_nodes`) and stores each
//! image's spread in the cycle state, so Score does one binary search per
//! image in the node's sorted image list and allocates nothing. When no
//! node holds any of the pod's images every node would score 0, and
//! PreScore returns Skip instead.
//!
//! The score is **not node-local**: the spread depends on which other nodes
//! hold an image, which changes without this node changing, so a cached
//! score for an equivalent pod could be stale.

use crate::common::args::{check_kind, parse_at};
use serde::Deserialize;
use smallvec::SmallVec;
use std::sync::Arc;
use strata_scheduler::sdk::{
    CycleState, Handle, MAX_NODE_SCORE, NodeId, NodeInfo, Plugin, PluginArgsError, PodInfo,
    PreScorePlugin, ScorePlugin, Snapshot, Status, Sym,
};

/// The plugin's configuration name.
pub const NAME: &str = "ImageLocality";

const MB: i64 = 1024 * 1024;
/// Below this sum a node scores 0: small images are quick to pull anyway.
pub const MIN_THRESHOLD: i64 = 23 * MB;
/// The sum is capped at this much per container.
pub const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Scores nodes by the pod's images they already hold.
#[derive(Debug, Default)]
pub struct ImageLocality;

/// Per-pod state from PreScore.
#[derive(Clone, Debug)]
struct ImageState {
    /// One entry per container whose image is on at least one node (kube
    /// counts an image once per container that uses it): the image and
    /// its spread, nodes having it / all nodes.
    images: SmallVec<[(Sym, f64); 4]>,
    /// `MAX_CONTAINER_THRESHOLD` times the number of containers and init
    /// containers.
    max_threshold: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawArgs {
    #[serde(default)]
    #[allow(dead_code)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

impl ImageLocality {
    /// Builds the plugin. It takes no arguments; `apiVersion` and `kind`
    /// are tolerated.
    pub fn from_args(args: Option<&serde_json::Value>) -> Result<ImageLocality, PluginArgsError> {
        if let Some(v) = args.filter(|v| !v.is_null()) {
            let raw: RawArgs = parse_at(v, "")?;
            check_kind(raw.kind.as_deref(), "ImageLocalityArgs")?;
        }
        Ok(ImageLocality)
    }
}

/// kube's mapping of the summed image score onto `0..=MAX_NODE_SCORE`.
fn calculate_priority(sum: i64, max_threshold: i64) -> i64 {
    if max_threshold <= MIN_THRESHOLD {
        return 0;
    }
    let s = sum.clamp(MIN_THRESHOLD, max_threshold);
    ((i128::from(MAX_NODE_SCORE) * i128::from(s - MIN_THRESHOLD))
        / i128::from(max_threshold - MIN_THRESHOLD)) as i64
}

/// Builds the plugin.
pub fn factory(
    args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(ImageLocality::from_args(args)?))
}

strata_scheduler::plugin!(ImageLocality: NAME => [PreScore, Score]);

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        _feasible: &[NodeId],
    ) -> Status {
        let total = snap.num_nodes();
        let images: SmallVec<[(Sym, f64); 4]> = if total == 0 {
            SmallVec::new()
        } else {
            pod.spec
                .images
                .iter()
                .filter_map(|&img| {
                    let n = snap.image_node_count(img);
                    (n > 0).then(|| (img, f64::from(n) / total as f64))
                })
                .collect()
        };
        if images.is_empty() {
            return Status::skip();
        }
        let raw = &pod.spec.raw;
        let containers = raw.containers.len() + raw.init_containers.as_ref().map_or(0, Vec::len);
        let max_threshold =
            MAX_CONTAINER_THRESHOLD.saturating_mul(i64::try_from(containers).unwrap_or(i64::MAX));
        state.insert(ImageState {
            images,
            max_threshold,
        });
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    /// A node's score depends on that node and on the image spreads PreScore
    /// computed; keyed on those, the engine may reuse it.
    fn node_local_key(&self, state: &CycleState) -> Option<u64> {
        let st = state.get::<ImageState>()?;
        let mut h = st.max_threshold as u64;
        for (img, spread) in &st.images {
            h = h.rotate_left(13) ^ (img.index() as u64) ^ spread.to_bits();
        }
        Some(h)
    }

    /// Reads the pod's container images only.
    fn node_local_reads_pod_identity(&self) -> bool {
        false
    }

    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(st) = state.get::<ImageState>() else {
            return Err(Status::error("ImageLocality: PreScore state is missing"));
        };
        let mut sum: i64 = 0;
        for &(img, spread) in &st.images {
            if let Ok(i) = node.images.binary_search_by_key(&img, |&(name, _)| name) {
                let size = node.images[i].1;
                sum = sum.saturating_add((size as f64 * spread) as i64);
            }
        }
        Ok(calculate_priority(sum, st.max_threshold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use strata_scheduler::testing::{self, PodBuilder};

    /// Scores `pod` on every node of a cluster built from `nodes`
    /// (name, [(image, size in MiB)]), in the given order; `None` when
    /// PreScore skipped.
    fn scores(pod: PodBuilder, nodes: &[(&str, &[(&str, i64)])]) -> Option<Vec<i64>> {
        let api = nodes
            .iter()
            .map(|(name, imgs)| {
                imgs.iter()
                    .fold(testing::node(name), |b, (img, mb)| b.image(img, mb * MB))
                    .build()
            })
            .collect();
        let cache = testing::cache_with(api, vec![]);
        let snap = cache.snapshot();
        let pod = pod.build();
        let pl = ImageLocality;
        let mut state = CycleState::new();
        let st = pl.pre_score(&mut state, &pod, snap, snap.node_ids());
        if st.is_skip() {
            return None;
        }
        assert!(st.is_success(), "{st}");
        Some(
            nodes
                .iter()
                .map(|(name, _)| {
                    let n = snap.node_by_name(Sym::new(name)).unwrap();
                    pl.score(&state, &pod, n).unwrap()
                })
                .collect(),
        )
    }

    fn with_images(images: &[&str]) -> PodBuilder {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, img)| json!({"name": format!("c{i}"), "image": img}))
            .collect();
        testing::pod("p").spec(json!({ "containers": containers }))
    }

    #[test]
    fn kube_examples() {
        let node1: &[(&str, i64)] = &[
            ("gcr.io/40:latest", 40),
            ("gcr.io/300:latest", 300),
            ("gcr.io/2000:latest", 2000),
        ];
        let node2: &[(&str, i64)] = &[("gcr.io/250:latest", 250), ("gcr.io/10:v1", 10)];
        let cluster = [("node1", node1), ("node2", node2)];
        // Two images spread on two nodes, prefer the larger one: node1 has
        // 40MB on 1 of 2 nodes -> 20MB < 23MB -> 0; node2 has 250MB -> 125MB
        // -> 100 x (125 - 23) / (2000 - 23) = 5.
        assert_eq!(
            scores(with_images(&["gcr.io/40", "gcr.io/250"]), &cluster),
            Some(vec![0, 5])
        );
        // Two images on one node: (40 + 300) / 2 = 170MB -> 100 x 147 / 1977 = 7.
        assert_eq!(
            scores(with_images(&["gcr.io/40", "gcr.io/300"]), &cluster),
            Some(vec![7, 0])
        );
        // Tags matter: gcr.io/10 means gcr.io/10:latest, which no node has.
        assert_eq!(
            scores(with_images(&["gcr.io/10", "gcr.io/2000"]), &cluster),
            Some(vec![49, 0])
        );
        assert_eq!(
            scores(with_images(&["gcr.io/10:v1"]), &cluster),
            Some(vec![0, 0])
        );
    }

    #[test]
    fn spread_scales_the_size() {
        let img: &[(&str, i64)] = &[("big:1", 1000)];
        let none: &[(&str, i64)] = &[];
        // On 1 node of 1: full size, capped at 1000MB for one container -> 100.
        assert_eq!(
            scores(with_images(&["big:1"]), &[("a", img)]),
            Some(vec![100])
        );
        // On 1 node of 4: 250MB -> 100 x 227 / 977 = 23.
        assert_eq!(
            scores(
                with_images(&["big:1"]),
                &[("a", img), ("b", none), ("c", none), ("d", none)]
            ),
            Some(vec![23, 0, 0, 0])
        );
        // On 2 of 4: 500MB -> 100 x 477 / 977 = 48 on both.
        assert_eq!(
            scores(
                with_images(&["big:1"]),
                &[("a", img), ("b", img), ("c", none), ("d", none)]
            ),
            Some(vec![48, 48, 0, 0])
        );
    }

    #[test]
    fn every_container_counts() {
        let img: &[(&str, i64)] = &[("app:1", 600), ("init:1", 400)];
        // Two containers using the same image count it twice; the cap is
        // 2000MB: 1200MB -> 100 x 1177 / 1977 = 59.
        assert_eq!(
            scores(with_images(&["app:1", "app:1"]), &[("a", img)]),
            Some(vec![59])
        );
        // Init containers count too, in the sum and in the cap: 1000MB of
        // 2000MB -> 100 x 977 / 1977 = 49.
        let pod = with_images(&["app:1"]).spec(json!({
            "containers": [{"name": "c", "image": "app:1"}],
            "initContainers": [{"name": "i", "image": "init:1"}]
        }));
        assert_eq!(scores(pod, &[("a", img)]), Some(vec![49]));
    }

    #[test]
    fn skips_when_no_node_has_an_image() {
        let other: &[(&str, i64)] = &[("other:1", 500)];
        assert_eq!(scores(with_images(&["app:1"]), &[("a", other)]), None);
        assert_eq!(scores(with_images(&["app:1"]), &[]), None);
    }

    #[test]
    fn priority_mapping() {
        assert_eq!(calculate_priority(0, MAX_CONTAINER_THRESHOLD), 0);
        assert_eq!(
            calculate_priority(MIN_THRESHOLD, MAX_CONTAINER_THRESHOLD),
            0
        );
        assert_eq!(calculate_priority(i64::MAX, MAX_CONTAINER_THRESHOLD), 100);
        assert_eq!(calculate_priority(i64::MAX, 0), 0);
    }

    #[test]
    fn score_without_pre_score_is_an_error_and_not_node_local() {
        let pl = ImageLocality;
        let cache = testing::cache_with(vec![testing::node("a").build()], vec![]);
        let n = cache.snapshot().nodes().next().unwrap();
        assert!(
            pl.score(&CycleState::new(), &testing::pod("p").build(), n)
                .is_err()
        );
        assert!(!ScorePlugin::is_node_local(&pl));
        assert_eq!(pl.name(), NAME);
    }

    #[test]
    fn args() {
        assert!(ImageLocality::from_args(None).is_ok());
        assert!(ImageLocality::from_args(Some(&json!(null))).is_ok());
        assert!(ImageLocality::from_args(Some(&json!({}))).is_ok());
        assert!(ImageLocality::from_args(Some(&json!({"kind": "ImageLocalityArgs"}))).is_ok());
        assert_eq!(
            ImageLocality::from_args(Some(&json!({"threshold": 1})))
                .unwrap_err()
                .field,
            "args"
        );
        assert_eq!(
            ImageLocality::from_args(Some(&json!({"kind": "Other"})))
                .unwrap_err()
                .field,
            "kind"
        );
    }
}
