//! LeaderWorkerSet replicas as groups, from the metadata the LWS controller
//! puts on every pod it creates (`leaderworkerset.x-k8s.io/v1`): no LWS
//! object, CRD or controller is read, so an LWS whose pod templates only
//! change `schedulerName` is placed replica by replica, each whole.
//!
//! What a pod carries (kubernetes-sigs/lws, `api/leaderworkerset/v1`):
//! - labels `leaderworkerset.sigs.k8s.io/name` (the set),
//!   `.../group-index` (the replica), `.../worker-index` (0 for the leader),
//!   `.../template-revision-hash`, and, once the LWS webhook ran,
//!   `.../group-key` and `.../subgroup-index`;
//! - annotations `.../size` (pods per replica), `.../exclusive-topology`
//!   (a node label key: the replica alone in one domain of it),
//!   `.../subgroup-size`, `.../subgroup-exclusive-topology` and
//!   `.../subgroup-policy-type` (`LeaderWorker` or `LeaderExcluded`).
//!
//! The mapping: one replica (set name + group index) is one group of `size`
//! members. `exclusive-topology` is the group's required level and, as LWS
//! means it, exclusive: replicas with that annotation avoid each other's
//! domains of that level (a required spread between replicas of the
//! namespace). Subgroups follow LWS's numbering (the leader joins subgroup 0
//! unless the policy is `LeaderExcluded`); `subgroup-exclusive-topology` is
//! each subgroup's required level. Every pod is checked on its own (indexes
//! in range, a subgroup-index label that agrees with its worker index) and
//! against its siblings (all must agree on the replica's shape, except that
//! pending pods of an older template revision give way to a newer one's);
//! whatever is wrong is named in the pods' condition and events.
//!
//! Two Strata annotations may be added to the LWS pod templates:
//! `strata.io/min-member` (fewer members than `size` must be placed
//! together, e.g. `1` for `startupPolicy: LeaderReady`, whose workers are
//! created only after the leader runs; subgroups are then not enforced) and
//! `strata.io/topology-preferred-level`.

use super::spec::{
    ANN_MIN_MEMBER, ANN_PREFERRED_LEVEL, ANN_TIMEOUT, MAX_MEMBERS, PodGroupSpec, SpecError,
    SpreadSpec, SubGroupSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;
use strata_scheduler::labels::Selector;
use strata_scheduler::sdk::{Labels, Sym};

/// Label: the LeaderWorkerSet a pod belongs to.
pub const NAME_LABEL: &str = "leaderworkerset.sigs.k8s.io/name";
/// Label: the replica (group) index.
pub const GROUP_INDEX_LABEL: &str = "leaderworkerset.sigs.k8s.io/group-index";
/// Label: the pod's index in its replica (0 is the leader).
pub const WORKER_INDEX_LABEL: &str = "leaderworkerset.sigs.k8s.io/worker-index";
/// Label: a hash unique to the replica (set by the LWS webhook).
pub const GROUP_KEY_LABEL: &str = "leaderworkerset.sigs.k8s.io/group-key";
/// Label: the pod's subgroup index (set by the LWS webhook).
pub const SUBGROUP_INDEX_LABEL: &str = "leaderworkerset.sigs.k8s.io/subgroup-index";
/// Label: the LWS template revision the pod was made from.
pub const REVISION_LABEL: &str = "leaderworkerset.sigs.k8s.io/template-revision-hash";
/// Annotation: pods per replica.
pub const SIZE_ANNOTATION: &str = "leaderworkerset.sigs.k8s.io/size";
/// Annotation: node label key of the domain a replica holds alone.
pub const EXCLUSIVE_ANNOTATION: &str = "leaderworkerset.sigs.k8s.io/exclusive-topology";
/// Annotation: pods per subgroup.
pub const SUBGROUP_SIZE_ANNOTATION: &str = "leaderworkerset.sigs.k8s.io/subgroup-size";
/// Annotation: node label key of the domain each subgroup holds.
pub const SUBGROUP_EXCLUSIVE_ANNOTATION: &str =
    "leaderworkerset.sigs.k8s.io/subgroup-exclusive-topology";
/// Annotation: `LeaderWorker` (default) or `LeaderExcluded`.
pub const SUBGROUP_POLICY_ANNOTATION: &str = "leaderworkerset.sigs.k8s.io/subgroup-policy-type";

/// The spread service exclusive replicas share: replicas with the same
/// exclusive level avoid each other's domains.
pub const EXCLUSIVE_SERVICE: &str = "leaderworkerset.sigs.k8s.io/exclusive-topology";

/// What every pod of one replica must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwsShape {
    /// Pods per replica.
    pub size: u32,
    /// Exclusive topology key.
    pub exclusive: Option<String>,
    /// Pods per subgroup.
    pub subgroup_size: Option<u32>,
    /// Subgroup exclusive topology key.
    pub subgroup_exclusive: Option<String>,
    /// The leader is in no subgroup.
    pub leader_excluded: bool,
    /// `strata.io/min-member`, when given.
    pub min_member: Option<u32>,
    /// `strata.io/topology-preferred-level`, when given.
    pub preferred_level: Option<String>,
    /// `strata.io/schedule-timeout-seconds`, when given.
    pub timeout_seconds: Option<u64>,
}

fn err(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn whole(field: &str, v: &str, min: u32, max: u32) -> Result<u32, SpecError> {
    v.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            err(
                field,
                format!("{v:?} is not a whole number from {min} to {max}"),
            )
        })
}

/// The replica a pod's labels name, as `set-groupIndex` (the leader pod's
/// name, which LWS also uses as the replica's name): `None` for a pod
/// outside any LeaderWorkerSet. A pod with the set label and no group
/// index gets the set's name, and its spec lookup reports the missing label.
pub fn replica_of(labels: &Labels) -> Option<Sym> {
    static KEYS: LazyLock<(Sym, Sym)> =
        LazyLock::new(|| (Sym::new(NAME_LABEL), Sym::new(GROUP_INDEX_LABEL)));
    static NAMES: LazyLock<RwLock<FxHashMap<(Sym, Sym), Sym>>> = LazyLock::new(Default::default);
    let set = labels.get(KEYS.0)?;
    let Some(index) = labels.get(KEYS.1) else {
        return Some(set);
    };
    if let Some(n) = NAMES.read().get(&(set, index)) {
        return Some(*n);
    }
    let name = Sym::new(&format!("{set}-{index}"));
    NAMES.write().insert((set, index), name);
    Some(name)
}

/// Reads the replica's shape and this pod's worker index from a pod's
/// labels and annotations, checking the pod on its own.
pub fn parse(
    labels: &Labels,
    ann: &BTreeMap<String, String>,
) -> Result<(LwsShape, u32), SpecError> {
    let Some(index) = labels.get_str(GROUP_INDEX_LABEL) else {
        return Err(err(
            GROUP_INDEX_LABEL,
            "the label is missing: the pod carries leaderworkerset.sigs.k8s.io/name but no replica index",
        ));
    };
    whole(GROUP_INDEX_LABEL, index, 0, u32::MAX)?;
    let size = match ann.get(SIZE_ANNOTATION) {
        Some(v) => whole(SIZE_ANNOTATION, v, 1, MAX_MEMBERS)?,
        None => {
            return Err(err(
                SIZE_ANNOTATION,
                "the annotation is missing: the replica's size is unknown",
            ));
        }
    };
    let worker = match labels.get_str(WORKER_INDEX_LABEL) {
        Some(v) => whole(WORKER_INDEX_LABEL, v, 0, u32::MAX)?,
        None => {
            return Err(err(WORKER_INDEX_LABEL, "the label is missing"));
        }
    };
    if worker >= size {
        return Err(err(
            WORKER_INDEX_LABEL,
            format!(
                "worker index {worker} is outside a replica of size {size} (0 to {})",
                size - 1
            ),
        ));
    }
    let text = |k: &str| -> Result<Option<String>, SpecError> {
        match ann.get(k).map(|s| s.trim()) {
            None => Ok(None),
            Some("") => Err(err(k, "must not be empty")),
            Some(s) => Ok(Some(s.to_owned())),
        }
    };
    let leader_excluded = match ann.get(SUBGROUP_POLICY_ANNOTATION).map(String::as_str) {
        None | Some("LeaderWorker") => false,
        Some("LeaderExcluded") => true,
        Some(o) => {
            return Err(err(
                SUBGROUP_POLICY_ANNOTATION,
                format!("{o:?} is neither LeaderWorker nor LeaderExcluded"),
            ));
        }
    };
    let subgroup_size = ann
        .get(SUBGROUP_SIZE_ANNOTATION)
        .map(|v| whole(SUBGROUP_SIZE_ANNOTATION, v, 1, size))
        .transpose()?;
    let shape = LwsShape {
        size,
        exclusive: text(EXCLUSIVE_ANNOTATION)?,
        subgroup_size,
        subgroup_exclusive: text(SUBGROUP_EXCLUSIVE_ANNOTATION)?,
        leader_excluded,
        min_member: ann
            .get(ANN_MIN_MEMBER)
            .map(|v| whole(ANN_MIN_MEMBER, v, 1, size))
            .transpose()?,
        preferred_level: text(ANN_PREFERRED_LEVEL)?,
        timeout_seconds: ann
            .get(ANN_TIMEOUT)
            .map(|v| {
                whole(
                    ANN_TIMEOUT,
                    v,
                    1,
                    strata_scheduler::config::MAX_SECONDS as u32,
                )
            })
            .transpose()?
            .map(u64::from),
    };
    if let Some(sgs) = subgroup_size {
        shape.check_subgroups(sgs)?;
        let want = shape.subgroup_of_worker(worker);
        if let Some(have) = labels.get_str(SUBGROUP_INDEX_LABEL) {
            let ok = match want {
                Some(w) => have.trim().parse::<u32>().ok() == Some(w),
                None => false,
            };
            if !ok {
                return Err(err(
                    SUBGROUP_INDEX_LABEL,
                    format!(
                        "{have:?} disagrees with worker index {worker}, which is in {} (size {size}, subgroup size {sgs})",
                        match want {
                            Some(w) => format!("subgroup {w}"),
                            None => "no subgroup".to_owned(),
                        }
                    ),
                ));
            }
        }
    } else if shape.subgroup_exclusive.is_some() {
        return Err(err(
            SUBGROUP_EXCLUSIVE_ANNOTATION,
            format!("is set but {SUBGROUP_SIZE_ANNOTATION} is not: there are no subgroups"),
        ));
    }
    Ok((shape, worker))
}

impl LwsShape {
    /// Whether LWS's leader is the extra pod of subgroup 0 (`size - 1` is a
    /// multiple of the subgroup size), as the LWS webhook numbers them.
    fn leader_is_extra(&self, sgs: u32) -> bool {
        (self.size - 1).is_multiple_of(sgs)
    }

    fn check_subgroups(&self, sgs: u32) -> Result<(), SpecError> {
        if self.leader_is_extra(sgs) || self.size.is_multiple_of(sgs) && !self.leader_excluded {
            return Ok(());
        }
        Err(err(
            SUBGROUP_SIZE_ANNOTATION,
            if self.leader_excluded {
                format!(
                    "with LeaderExcluded, size - 1 ({}) must be a multiple of the subgroup size {sgs}",
                    self.size - 1
                )
            } else {
                format!(
                    "size {} is neither a multiple of the subgroup size {sgs} nor one more than a multiple",
                    self.size
                )
            },
        ))
    }

    /// The subgroup worker `w` is in (`None`: the leader under
    /// `LeaderExcluded`, or no subgroups).
    pub fn subgroup_of_worker(&self, w: u32) -> Option<u32> {
        let sgs = self.subgroup_size?;
        if self.leader_is_extra(sgs) {
            if w == 0 {
                return (!self.leader_excluded).then_some(0);
            }
            Some((w - 1) / sgs)
        } else {
            Some(w / sgs)
        }
    }

    /// The group this shape describes.
    pub fn spec(&self) -> Result<PodGroupSpec, SpecError> {
        let min_member = self.min_member.unwrap_or(self.size);
        let mut subgroups = Vec::new();
        if let Some(_sgs) = self.subgroup_size
            && min_member == self.size
        {
            let mut members: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            for w in 0..self.size {
                if let Some(s) = self.subgroup_of_worker(w) {
                    members.entry(s).or_default().push(w.to_string());
                }
            }
            for (s, workers) in members {
                let sel = metav1::LabelSelector {
                    match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                        key: WORKER_INDEX_LABEL.to_owned(),
                        operator: "In".to_owned(),
                        values: Some(workers.clone()),
                    }]),
                    match_labels: None,
                };
                let selector = Selector::compile(&sel)
                    .map_err(|e| err(SUBGROUP_SIZE_ANNOTATION, e.to_string()))?;
                subgroups.push(SubGroupSpec {
                    name: s.to_string(),
                    min_member: workers.len() as u32,
                    selector: Some(selector),
                    required_level: self.subgroup_exclusive.clone(),
                    preferred_level: None,
                });
            }
        }
        Ok(PodGroupSpec {
            min_member,
            schedule_timeout: self.timeout_seconds.map(Duration::from_secs),
            required_level: self.exclusive.clone(),
            preferred_level: self.preferred_level.clone(),
            subgroups,
            min_resources: None,
            spread: self.exclusive.as_ref().map(|l| SpreadSpec {
                service: EXCLUSIVE_SERVICE.to_owned(),
                level: l.clone(),
                required: true,
            }),
        })
    }

    /// Checks the levels against the configured ones, naming the LWS
    /// annotation at fault (the generic check names the group's fields).
    pub fn check_levels(&self, levels: &[String]) -> Result<(), SpecError> {
        for (field, key) in [
            (EXCLUSIVE_ANNOTATION, &self.exclusive),
            (SUBGROUP_EXCLUSIVE_ANNOTATION, &self.subgroup_exclusive),
            (ANN_PREFERRED_LEVEL, &self.preferred_level),
        ] {
            if let Some(k) = key
                && !levels.contains(k)
            {
                return Err(err(
                    field,
                    format!(
                        "{k:?} is not one of the topology levels Strata places groups in ({}); add it to PodGroup's topologyLevels or use one of them",
                        levels.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One line naming what differs from `other`, for the pods' events.
    pub fn difference(&self, other: &LwsShape) -> String {
        let mut d = Vec::new();
        if self.size != other.size {
            d.push(format!("size {} vs {}", self.size, other.size));
        }
        if self.exclusive != other.exclusive {
            d.push(format!(
                "exclusive-topology {:?} vs {:?}",
                self.exclusive, other.exclusive
            ));
        }
        if self.subgroup_size != other.subgroup_size {
            d.push(format!(
                "subgroup-size {:?} vs {:?}",
                self.subgroup_size, other.subgroup_size
            ));
        }
        if self.subgroup_exclusive != other.subgroup_exclusive {
            d.push(format!(
                "subgroup-exclusive-topology {:?} vs {:?}",
                self.subgroup_exclusive, other.subgroup_exclusive
            ));
        }
        if self.leader_excluded != other.leader_excluded {
            d.push("subgroup-policy-type".to_owned());
        }
        if self.min_member != other.min_member
            || self.preferred_level != other.preferred_level
            || self.timeout_seconds != other.timeout_seconds
        {
            d.push("strata.io annotations".to_owned());
        }
        d.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(pairs: &[(&str, &str)], ann: &[(&str, &str)]) -> (Labels, BTreeMap<String, String>) {
        (
            Labels::from_pairs(pairs.iter().copied()),
            ann.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn worker(w: &str, ann: &[(&str, &str)]) -> Result<(LwsShape, u32), SpecError> {
        let (l, a) = pod(
            &[
                (NAME_LABEL, "llm"),
                (GROUP_INDEX_LABEL, "1"),
                (WORKER_INDEX_LABEL, w),
            ],
            ann,
        );
        parse(&l, &a)
    }

    #[test]
    fn replica_names_are_set_and_index() {
        let (l, _) = pod(&[(NAME_LABEL, "llm"), (GROUP_INDEX_LABEL, "3")], &[]);
        assert_eq!(replica_of(&l).unwrap().as_str(), "llm-3");
        assert_eq!(replica_of(&l), replica_of(&l));
        let (l, _) = pod(&[(NAME_LABEL, "llm")], &[]);
        assert_eq!(replica_of(&l).unwrap().as_str(), "llm");
        assert_eq!(replica_of(&Labels::default()), None);
    }

    #[test]
    fn a_plain_replica_is_a_gang_of_size() {
        let (s, w) = worker("2", &[(SIZE_ANNOTATION, "4")]).unwrap();
        assert_eq!(w, 2);
        let spec = s.spec().unwrap();
        assert_eq!(spec.min_member, 4);
        assert!(spec.subgroups.is_empty() && spec.required_level.is_none());
        assert!(spec.spread.is_none());
    }

    #[test]
    fn exclusive_topology_is_the_required_level_and_exclusive() {
        let (s, _) = worker(
            "0",
            &[
                (SIZE_ANNOTATION, "4"),
                (EXCLUSIVE_ANNOTATION, "strata.io/supernode"),
            ],
        )
        .unwrap();
        let spec = s.spec().unwrap();
        assert_eq!(spec.required_level.as_deref(), Some("strata.io/supernode"));
        let sp = spec.spread.unwrap();
        assert!(sp.required);
        assert_eq!(sp.level, "strata.io/supernode");
        let levels: Vec<String> = strata_topology::DEFAULT_LEVELS
            .iter()
            .map(|s| s.to_string())
            .collect();
        s.check_levels(&levels).unwrap();
        let (s, _) = worker(
            "0",
            &[
                (SIZE_ANNOTATION, "4"),
                (EXCLUSIVE_ANNOTATION, "cloud.google.com/gke-nodepool"),
            ],
        )
        .unwrap();
        let e = s.check_levels(&levels).unwrap_err();
        assert_eq!(e.field, EXCLUSIVE_ANNOTATION);
        assert!(e.message.contains("not one of the topology levels"), "{e}");
    }

    /// LWS's numbering: with size - 1 a multiple of the subgroup size the
    /// leader is the extra pod of subgroup 0; otherwise indexes divide.
    #[test]
    fn subgroups_follow_lws_numbering() {
        let ann = [(SIZE_ANNOTATION, "9"), (SUBGROUP_SIZE_ANNOTATION, "4")];
        let (s, _) = worker("0", &ann).unwrap();
        let got: Vec<_> = (0..9).map(|w| s.subgroup_of_worker(w)).collect();
        assert_eq!(
            got,
            [0, 0, 0, 0, 0, 1, 1, 1, 1].map(Some).to_vec(),
            "leader extra in subgroup 0"
        );
        let spec = s.spec().unwrap();
        assert_eq!(spec.subgroups.len(), 2);
        assert_eq!(
            (spec.subgroups[0].min_member, spec.subgroups[1].min_member),
            (5, 4)
        );
        let ann = [(SIZE_ANNOTATION, "8"), (SUBGROUP_SIZE_ANNOTATION, "4")];
        let (s, _) = worker("0", &ann).unwrap();
        let got: Vec<_> = (0..8).map(|w| s.subgroup_of_worker(w)).collect();
        assert_eq!(got, [0, 0, 0, 0, 1, 1, 1, 1].map(Some).to_vec());
        let l = Labels::from_pairs([(WORKER_INDEX_LABEL, "5")]);
        assert_eq!(s.spec().unwrap().subgroup_of(&l), Ok(Some(1)));
        // LeaderExcluded: the leader is in no subgroup.
        let ann = [
            (SIZE_ANNOTATION, "9"),
            (SUBGROUP_SIZE_ANNOTATION, "4"),
            (SUBGROUP_POLICY_ANNOTATION, "LeaderExcluded"),
        ];
        let (s, _) = worker("0", &ann).unwrap();
        assert_eq!(s.subgroup_of_worker(0), None);
        let spec = s.spec().unwrap();
        assert_eq!(spec.subgroups[0].min_member, 4);
        let l = Labels::from_pairs([(WORKER_INDEX_LABEL, "0")]);
        assert_eq!(spec.subgroup_of(&l), Ok(None));
    }

    #[test]
    fn malformed_and_inconsistent_metadata_names_the_key() {
        for (w, ann, field) in [
            ("0", vec![], SIZE_ANNOTATION),
            ("0", vec![(SIZE_ANNOTATION, "four")], SIZE_ANNOTATION),
            ("0", vec![(SIZE_ANNOTATION, "0")], SIZE_ANNOTATION),
            ("4", vec![(SIZE_ANNOTATION, "4")], WORKER_INDEX_LABEL),
            ("-1", vec![(SIZE_ANNOTATION, "4")], WORKER_INDEX_LABEL),
            (
                "0",
                vec![(SIZE_ANNOTATION, "10"), (SUBGROUP_SIZE_ANNOTATION, "4")],
                SUBGROUP_SIZE_ANNOTATION,
            ),
            (
                "0",
                vec![
                    (SIZE_ANNOTATION, "8"),
                    (SUBGROUP_SIZE_ANNOTATION, "4"),
                    (SUBGROUP_POLICY_ANNOTATION, "LeaderExcluded"),
                ],
                SUBGROUP_SIZE_ANNOTATION,
            ),
            (
                "0",
                vec![(SIZE_ANNOTATION, "4"), (SUBGROUP_POLICY_ANNOTATION, "Both")],
                SUBGROUP_POLICY_ANNOTATION,
            ),
            (
                "0",
                vec![
                    (SIZE_ANNOTATION, "4"),
                    (SUBGROUP_EXCLUSIVE_ANNOTATION, "strata.io/cabinet"),
                ],
                SUBGROUP_EXCLUSIVE_ANNOTATION,
            ),
            (
                "0",
                vec![(SIZE_ANNOTATION, "4"), (EXCLUSIVE_ANNOTATION, " ")],
                EXCLUSIVE_ANNOTATION,
            ),
            (
                "0",
                vec![(SIZE_ANNOTATION, "4"), (ANN_MIN_MEMBER, "5")],
                ANN_MIN_MEMBER,
            ),
        ] {
            let e = worker(w, &ann).unwrap_err();
            assert_eq!(e.field, field, "{w} {ann:?}: {e}");
        }
        let (l, a) = pod(&[(NAME_LABEL, "llm")], &[(SIZE_ANNOTATION, "2")]);
        assert_eq!(parse(&l, &a).unwrap_err().field, GROUP_INDEX_LABEL);
        // A subgroup-index label that disagrees with the worker index.
        let (l, a) = pod(
            &[
                (NAME_LABEL, "llm"),
                (GROUP_INDEX_LABEL, "0"),
                (WORKER_INDEX_LABEL, "5"),
                (SUBGROUP_INDEX_LABEL, "0"),
            ],
            &[(SIZE_ANNOTATION, "8"), (SUBGROUP_SIZE_ANNOTATION, "4")],
        );
        let e = parse(&l, &a).unwrap_err();
        assert_eq!(e.field, SUBGROUP_INDEX_LABEL);
        assert!(e.message.contains("subgroup 1"), "{e}");
        let (a, _) = worker("0", &[(SIZE_ANNOTATION, "4")]).unwrap();
        let (b, _) = worker("1", &[(SIZE_ANNOTATION, "8")]).unwrap();
        assert_eq!(a.difference(&b), "size 4 vs 8");
    }

    proptest::proptest! {
        /// No label or annotation text makes the parser panic, and a shape
        /// it accepts always yields a spec whose subgroups cover exactly
        /// the pods LWS puts in subgroups.
        #[test]
        fn parse_never_panics_and_subgroups_cover_the_replica(
            size in "[0-9]{0,3}", sgs in "[0-9]{0,2}", w in "[0-9\\-]{0,3}", excl in proptest::bool::ANY,
        ) {
            let mut ann = vec![(SIZE_ANNOTATION, size.as_str()), (SUBGROUP_SIZE_ANNOTATION, sgs.as_str())];
            if excl {
                ann.push((SUBGROUP_POLICY_ANNOTATION, "LeaderExcluded"));
            }
            if let Ok((s, _)) = worker(&w, &ann) {
                let spec = s.spec().unwrap();
                let in_subgroups: u32 = spec.subgroups.iter().map(|g| g.min_member).sum();
                let expect = (0..s.size).filter(|w| s.subgroup_of_worker(*w).is_some()).count() as u32;
                proptest::prop_assert_eq!(in_subgroups, expect);
                if s.subgroup_size.is_some() {
                    proptest::prop_assert_eq!(in_subgroups + u32::from(s.leader_excluded), s.size);
                }
            }
        }
    }
}
