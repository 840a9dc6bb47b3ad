//! What a group asks for, from any of the three places it can be written:
//! Strata's `PodGroup` (`strata.io/v1alpha1`), the coscheduling `PodGroup`
//! of kubernetes-sigs/scheduler-plugins (`scheduling.x-k8s.io/v1alpha1`), or
//! annotations on the member pods themselves (for a quick gang without a
//! custom resource).
//!
//! Parsing never panics and every error names the field and what is wrong,
//! because the message ends up in the member pods' conditions and events.
//! [`PodGroupSpec::validate`] rejects groups that contradict themselves
//! (unknown levels, a subgroup allowed to spread wider than its group,
//! duplicate subgroup names) before any planning is tried.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use strata_scheduler::labels::Selector;
use strata_scheduler::sdk::{Labels, ResourceVec};

/// Label naming a pod's Strata group.
pub const GROUP_LABEL: &str = "strata.io/pod-group";
/// Label naming a pod's coscheduling group.
pub const COSCHEDULING_LABEL: &str = "scheduling.x-k8s.io/pod-group";
/// Label naming a pod's subgroup (alternative to subgroup selectors).
pub const SUBGROUP_LABEL: &str = "strata.io/subgroup";
/// Annotation defining an inline group's `minMember`.
pub const ANN_MIN_MEMBER: &str = "strata.io/min-member";
/// Annotation: inline group's schedule timeout in seconds.
pub const ANN_TIMEOUT: &str = "strata.io/schedule-timeout-seconds";
/// Annotation: inline group's required topology level (a level label key).
pub const ANN_REQUIRED_LEVEL: &str = "strata.io/topology-required-level";
/// Annotation: inline group's preferred topology level.
pub const ANN_PREFERRED_LEVEL: &str = "strata.io/topology-preferred-level";
/// Annotation: inline subgroups, `name:minMember[:requiredLevel[:preferredLevel]],...`
/// (an empty requiredLevel: none, as in `prefill:2::strata.io/cabinet`).
pub const ANN_SUBGROUPS: &str = "strata.io/subgroups";
/// Annotation: spread groups of one service apart, `service:levelKey`.
pub const ANN_SPREAD: &str = "strata.io/spread";

/// Which API a group comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupApi {
    /// `strata.io/v1alpha1` (or inline annotations).
    Strata,
    /// `scheduling.x-k8s.io/v1alpha1`.
    Coscheduling,
    /// A LeaderWorkerSet replica, from its pods' metadata (no object).
    LeaderWorkerSet,
}

impl GroupApi {
    /// The API group, for messages.
    pub fn api_group(self) -> &'static str {
        match self {
            GroupApi::Strata => "strata.io",
            GroupApi::Coscheduling => "scheduling.x-k8s.io",
            GroupApi::LeaderWorkerSet => "leaderworkerset.x-k8s.io",
        }
    }
}

/// Spreading groups of one service apart (anti-affinity between groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpreadSpec {
    /// Groups with the same service value avoid each other's domains.
    pub service: String,
    /// The level whose domains they avoid.
    pub level: String,
    /// Hard (never share) or soft (share only when nothing else fits).
    pub required: bool,
}

/// One subgroup (a role such as `prefill` or `decode`).
#[derive(Clone, Debug, PartialEq)]
pub struct SubGroupSpec {
    /// Its name.
    pub name: String,
    /// Members of this subgroup that must be placed together with the rest.
    pub min_member: u32,
    /// Which member pods belong to it (besides the `strata.io/subgroup`
    /// label).
    pub selector: Option<Selector>,
    /// Every member of the subgroup inside one domain of this level.
    pub required_level: Option<String>,
    /// Pack the subgroup inside one domain of this level when possible.
    pub preferred_level: Option<String>,
}

/// A group, whichever API it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct PodGroupSpec {
    /// Members that must be placed together before any is bound.
    pub min_member: u32,
    /// How long members wait at Permit for the rest; `None` for the
    /// plugin's default.
    pub schedule_timeout: Option<Duration>,
    /// Every member inside one domain of this level (a level label key).
    pub required_level: Option<String>,
    /// Pack as tightly as possible inside one domain of this level.
    pub preferred_level: Option<String>,
    /// Subgroups.
    pub subgroups: Vec<SubGroupSpec>,
    /// Coscheduling's `minResources`: the cluster must have this much free
    /// before the group is tried.
    pub min_resources: Option<ResourceVec>,
    /// Spread from other groups of the same service.
    pub spread: Option<SpreadSpec>,
}

impl Default for PodGroupSpec {
    fn default() -> Self {
        PodGroupSpec {
            min_member: 1,
            schedule_timeout: None,
            required_level: None,
            preferred_level: None,
            subgroups: Vec::new(),
            min_resources: None,
            spread: None,
        }
    }
}

/// A group definition that cannot be used, with the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Field path (`spec.subGroups[1].minMember`) or annotation name.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TopologyJson {
    #[serde(default)]
    required_level: Option<String>,
    #[serde(default)]
    preferred_level: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpreadJson {
    service: String,
    level: String,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubGroupJson {
    name: String,
    min_member: i64,
    #[serde(default)]
    selector: Option<metav1::LabelSelector>,
    #[serde(default)]
    topology: Option<TopologyJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StrataSpecJson {
    #[serde(default)]
    min_member: Option<i64>,
    #[serde(default)]
    schedule_timeout_seconds: Option<i64>,
    #[serde(default)]
    topology: Option<TopologyJson>,
    #[serde(default)]
    spread: Option<SpreadJson>,
    #[serde(default)]
    sub_groups: Vec<SubGroupJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CoschedulingSpecJson {
    #[serde(default)]
    min_member: Option<i64>,
    #[serde(default)]
    min_resources: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    schedule_timeout_seconds: Option<i64>,
}

/// The most members a group or subgroup may require: Kubernetes' documented
/// limit of pods in one cluster. A larger `minMember` could never be met, and
/// its pods would wait for members forever; it is refused instead, and the
/// message reaches the pods' events.
pub const MAX_MEMBERS: u32 = 150_000;

fn count(field: &str, v: i64) -> Result<u32, SpecError> {
    u32::try_from(v)
        .ok()
        .filter(|n| (1..=MAX_MEMBERS).contains(n))
        .ok_or_else(|| {
            let why = if v > i64::from(MAX_MEMBERS) {
                format!(
                    ": no cluster holds that many pods (Kubernetes supports at most {MAX_MEMBERS}), so the group could never be placed"
                )
            } else {
                String::new()
            };
            err(
                field,
                format!("must be a whole number from 1 to {MAX_MEMBERS}, got {v}{why}"),
            )
        })
}

fn timeout(field: &str, v: Option<i64>) -> Result<Option<Duration>, SpecError> {
    let max = strata_scheduler::config::MAX_SECONDS;
    match v {
        None => Ok(None),
        Some(s) if (1..=max as i64).contains(&s) => Ok(Some(Duration::from_secs(s as u64))),
        Some(s) => Err(err(
            field,
            format!("must be from 1 to {max} seconds (one year), got {s}"),
        )),
    }
}

fn spread(field: &str, s: SpreadJson) -> Result<SpreadSpec, SpecError> {
    let required = match s.mode.as_deref() {
        None | Some("Preferred") => false,
        Some("Required") => true,
        Some(o) => {
            return Err(err(
                format!("{field}.mode"),
                format!("{o:?} is neither Required nor Preferred"),
            ));
        }
    };
    if s.service.is_empty() {
        return Err(err(format!("{field}.service"), "must not be empty"));
    }
    Ok(SpreadSpec {
        service: s.service,
        level: s.level,
        required,
    })
}

impl PodGroupSpec {
    /// Parses the `spec` of a Strata `PodGroup`.
    pub fn from_strata(spec: &serde_json::Value) -> Result<PodGroupSpec, SpecError> {
        let s: StrataSpecJson =
            serde_json::from_value(spec.clone()).map_err(|e| err("spec", e.to_string()))?;
        let mut subgroups = Vec::new();
        for (i, sg) in s.sub_groups.into_iter().enumerate() {
            let f = format!("spec.subGroups[{i}]");
            let selector = match &sg.selector {
                Some(sel) => Some(
                    Selector::compile(sel)
                        .map_err(|e| err(format!("{f}.selector"), e.to_string()))?,
                ),
                None => None,
            };
            let (required_level, preferred_level) = sg
                .topology
                .map(|t| (t.required_level, t.preferred_level))
                .unwrap_or_default();
            subgroups.push(SubGroupSpec {
                min_member: count(&format!("{f}.minMember"), sg.min_member)?,
                name: sg.name,
                selector,
                required_level,
                preferred_level,
            });
        }
        let min_member = match s.min_member {
            Some(m) => count("spec.minMember", m)?,
            None => subgroups
                .iter()
                .fold(0u32, |n, g| n.saturating_add(g.min_member))
                .max(1),
        };
        let (required_level, preferred_level) = s
            .topology
            .map(|t| (t.required_level, t.preferred_level))
            .unwrap_or_default();
        Ok(PodGroupSpec {
            min_member,
            schedule_timeout: timeout("spec.scheduleTimeoutSeconds", s.schedule_timeout_seconds)?,
            required_level,
            preferred_level,
            subgroups,
            min_resources: None,
            spread: s.spread.map(|x| spread("spec.spread", x)).transpose()?,
        })
    }

    /// Parses the `spec` of a coscheduling `PodGroup`. Unknown fields are
    /// ignored, as that API's clients expect.
    pub fn from_coscheduling(spec: &serde_json::Value) -> Result<PodGroupSpec, SpecError> {
        let s: CoschedulingSpecJson =
            serde_json::from_value(spec.clone()).map_err(|e| err("spec", e.to_string()))?;
        let min_resources = match s.min_resources {
            None => None,
            Some(m) => {
                let mut v = ResourceVec::default();
                for (name, q) in m {
                    let text = match &q {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => n.to_string(),
                        other => {
                            return Err(err(
                                format!("spec.minResources.{name}"),
                                format!("{other} is not a quantity"),
                            ));
                        }
                    };
                    v.set_quantity(&name, &text)
                        .map_err(|e| err(format!("spec.minResources.{name}"), e.to_string()))?;
                }
                Some(v)
            }
        };
        Ok(PodGroupSpec {
            min_member: count("spec.minMember", s.min_member.unwrap_or(1))?,
            schedule_timeout: timeout("spec.scheduleTimeoutSeconds", s.schedule_timeout_seconds)?,
            min_resources,
            ..Default::default()
        })
    }

    /// The inline group a member pod defines with annotations, if it has
    /// `strata.io/min-member`.
    pub fn from_annotations(
        ann: &BTreeMap<String, String>,
    ) -> Option<Result<PodGroupSpec, SpecError>> {
        let min = ann.get(ANN_MIN_MEMBER)?;
        Some(Self::parse_annotations(min, ann))
    }

    fn parse_annotations(
        min: &str,
        ann: &BTreeMap<String, String>,
    ) -> Result<PodGroupSpec, SpecError> {
        let int = |name: &str, v: &str| -> Result<i64, SpecError> {
            v.trim()
                .parse::<i64>()
                .map_err(|_| err(name, format!("{v:?} is not a whole number")))
        };
        let min_member = count(ANN_MIN_MEMBER, int(ANN_MIN_MEMBER, min)?)?;
        let schedule_timeout = match ann.get(ANN_TIMEOUT) {
            Some(v) => timeout(ANN_TIMEOUT, Some(int(ANN_TIMEOUT, v)?))?,
            None => None,
        };
        let mut subgroups = Vec::new();
        if let Some(list) = ann.get(ANN_SUBGROUPS) {
            for (i, item) in list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .enumerate()
            {
                let parts: Vec<&str> = item.split(':').collect();
                let field = format!("{ANN_SUBGROUPS}[{i}]");
                if !(2..=4).contains(&parts.len()) || parts[0].is_empty() {
                    return Err(err(
                        field,
                        format!("{item:?} is not name:minMember[:requiredLevel[:preferredLevel]]"),
                    ));
                }
                let level = |i: usize| {
                    parts
                        .get(i)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.to_string())
                };
                subgroups.push(SubGroupSpec {
                    name: parts[0].to_owned(),
                    min_member: count(&field, int(&field, parts[1])?)?,
                    selector: None,
                    required_level: level(2),
                    preferred_level: level(3),
                });
            }
        }
        let spread = match ann.get(ANN_SPREAD) {
            Some(v) => match v.split_once(':') {
                Some((svc, level)) if !svc.is_empty() && !level.is_empty() => Some(SpreadSpec {
                    service: svc.to_owned(),
                    level: level.to_owned(),
                    required: false,
                }),
                _ => return Err(err(ANN_SPREAD, format!("{v:?} is not service:levelKey"))),
            },
            None => None,
        };
        Ok(PodGroupSpec {
            min_member,
            schedule_timeout,
            required_level: ann.get(ANN_REQUIRED_LEVEL).cloned(),
            preferred_level: ann.get(ANN_PREFERRED_LEVEL).cloned(),
            subgroups,
            min_resources: None,
            spread,
        })
    }

    /// Checks the group against the configured topology levels (label keys,
    /// outermost first) and against itself.
    pub fn validate(&self, levels: &[String]) -> Result<(), SpecError> {
        let level = |field: &str, key: &Option<String>| -> Result<Option<usize>, SpecError> {
            match key {
                None => Ok(None),
                Some(k) => match levels.iter().position(|l| l == k) {
                    Some(i) => Ok(Some(i + 1)),
                    None => Err(err(
                        field,
                        format!(
                            "{k:?} is not a topology level (levels: {})",
                            levels.join(", ")
                        ),
                    )),
                },
            }
        };
        let req = level("topology.requiredLevel", &self.required_level)?;
        let pref = level("topology.preferredLevel", &self.preferred_level)?;
        if let (Some(r), Some(p)) = (req, pref)
            && p < r
        {
            return Err(err(
                "topology.preferredLevel",
                format!(
                    "{:?} is wider than the required level {:?}",
                    self.preferred_level.as_deref().unwrap_or(""),
                    self.required_level.as_deref().unwrap_or("")
                ),
            ));
        }
        if let Some(s) = &self.spread {
            level("spread.level", &Some(s.level.clone()))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, sg) in self.subgroups.iter().enumerate() {
            let f = format!("subGroups[{i}]");
            if sg.name.is_empty() || !names.insert(sg.name.as_str()) {
                return Err(err(
                    format!("{f}.name"),
                    format!(
                        "subgroup names must be unique and non-empty ({:?})",
                        sg.name
                    ),
                ));
            }
            let r = level(&format!("{f}.topology.requiredLevel"), &sg.required_level)?;
            let p = level(&format!("{f}.topology.preferredLevel"), &sg.preferred_level)?;
            if let (Some(r), Some(p)) = (r, p)
                && p < r
            {
                return Err(err(
                    format!("{f}.topology.preferredLevel"),
                    format!(
                        "{:?} is wider than the subgroup's required level {:?}",
                        sg.preferred_level.as_deref().unwrap_or(""),
                        sg.required_level.as_deref().unwrap_or("")
                    ),
                ));
            }
            if let (Some(g), Some(r)) = (req, r)
                && r < g
            {
                return Err(err(
                    format!("{f}.topology.requiredLevel"),
                    format!(
                        "subgroup {:?} may spread over one {:?} but its group must fit in one {:?}: a subgroup cannot be wider than its group",
                        sg.name,
                        sg.required_level.as_deref().unwrap_or(""),
                        self.required_level.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The subgroup a member with `labels` belongs to: by the
    /// `strata.io/subgroup` label, else by selector. `Ok(None)` when the
    /// group has no subgroups or the pod matches none.
    pub fn subgroup_of(&self, labels: &Labels) -> Result<Option<usize>, SpecError> {
        if self.subgroups.is_empty() {
            return Ok(None);
        }
        if let Some(name) = labels.get_str(SUBGROUP_LABEL) {
            return match self.subgroups.iter().position(|s| s.name == name) {
                Some(i) => Ok(Some(i)),
                None => Err(err(
                    SUBGROUP_LABEL,
                    format!(
                        "the pod names subgroup {name:?}, which the group does not have (subgroups: {})",
                        self.subgroups
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            };
        }
        let mut found: Option<usize> = None;
        for (i, sg) in self.subgroups.iter().enumerate() {
            if sg.selector.as_ref().is_some_and(|s| s.matches(labels)) {
                if let Some(j) = found {
                    return Err(err(
                        "subGroups",
                        format!(
                            "the pod matches the selectors of both subgroup {:?} and subgroup {:?}: subgroups must not overlap",
                            self.subgroups[j].name, sg.name
                        ),
                    ));
                }
                found = Some(i);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn levels() -> Vec<String> {
        strata_topology::DEFAULT_LEVELS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Numbers no group can meet or no clock can hold are refused, naming
    /// the field; two subgroups of u32::MAX members used to overflow the
    /// group's minMember (a panic).
    #[test]
    fn out_of_range_numbers_name_the_field() {
        let max = u32::MAX;
        for (spec, field) in [
            (json!({"minMember": max}), "spec.minMember"),
            (json!({"minMember": 150_001}), "spec.minMember"),
            (json!({"minMember": -1}), "spec.minMember"),
            (json!({"minMember": i64::MAX}), "spec.minMember"),
            (
                json!({"subGroups": [{"name": "a", "minMember": max}, {"name": "b", "minMember": max}]}),
                "spec.subGroups[0].minMember",
            ),
            (
                json!({"subGroups": [{"name": "a", "minMember": 1}, {"name": "b", "minMember": 1u64 << 40}]}),
                "spec.subGroups[1].minMember",
            ),
            (
                json!({"scheduleTimeoutSeconds": i64::MAX}),
                "spec.scheduleTimeoutSeconds",
            ),
            (
                json!({"scheduleTimeoutSeconds": 31_536_001}),
                "spec.scheduleTimeoutSeconds",
            ),
            (json!({"minMember": 1.5}), "spec"),
        ] {
            let e = PodGroupSpec::from_strata(&spec).unwrap_err();
            assert_eq!(e.field, field, "{spec}: {e}");
        }
        for spec in [
            json!({"minMember": max}),
            json!({"scheduleTimeoutSeconds": i64::MAX}),
        ] {
            assert!(PodGroupSpec::from_coscheduling(&spec).is_err(), "{spec}");
        }
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        for (a, field) in [
            (ann(&[(ANN_MIN_MEMBER, "4294967295")]), ANN_MIN_MEMBER),
            (
                ann(&[(ANN_MIN_MEMBER, "99999999999999999999999")]),
                ANN_MIN_MEMBER,
            ),
            (
                ann(&[(ANN_MIN_MEMBER, "1"), (ANN_TIMEOUT, "9223372036854775807")]),
                ANN_TIMEOUT,
            ),
            (
                ann(&[(ANN_MIN_MEMBER, "1"), (ANN_SUBGROUPS, "a:4294967295")]),
                "strata.io/subgroups[0]",
            ),
        ] {
            let e = PodGroupSpec::from_annotations(&a).unwrap().unwrap_err();
            assert_eq!(e.field, field, "{a:?}: {e}");
        }
        // The bounds themselves are fine.
        let s = PodGroupSpec::from_strata(
            &json!({"minMember": MAX_MEMBERS, "scheduleTimeoutSeconds": 31_536_000}),
        )
        .unwrap();
        assert_eq!(s.min_member, MAX_MEMBERS);
    }

    proptest::proptest! {
        /// No annotation text makes the inline group parser panic.
        #[test]
        fn annotations_never_panic(min in "\\PC{0,24}", timeout in "\\PC{0,24}", subgroups in "[a-z0-9:,\\-]{0,40}") {
            let a: BTreeMap<String, String> = [
                (ANN_MIN_MEMBER, min),
                (ANN_TIMEOUT, timeout),
                (ANN_SUBGROUPS, subgroups),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let _ = PodGroupSpec::from_annotations(&a);
        }

        /// Nor any whole number in any field of the object.
        #[test]
        fn numbers_never_panic(min in proptest::num::i64::ANY, sub in proptest::num::i64::ANY, t in proptest::num::i64::ANY) {
            let spec = json!({"minMember": min, "scheduleTimeoutSeconds": t,
                "subGroups": [{"name": "a", "minMember": sub}, {"name": "b", "minMember": sub}]});
            let _ = PodGroupSpec::from_strata(&spec);
            let _ = PodGroupSpec::from_coscheduling(&spec);
            let no_min = json!({"subGroups": [{"name": "a", "minMember": sub}, {"name": "b", "minMember": sub}]});
            if let Ok(s) = PodGroupSpec::from_strata(&no_min) {
                proptest::prop_assert!(s.min_member <= 2 * MAX_MEMBERS);
            }
        }
    }

    #[test]
    fn strata_pd_group_parses() {
        let s = PodGroupSpec::from_strata(&json!({
            "scheduleTimeoutSeconds": 30,
            "topology": {"requiredLevel": "strata.io/supernode"},
            "subGroups": [
                {"name": "prefill", "minMember": 2, "selector": {"matchLabels": {"role": "prefill"}},
                 "topology": {"requiredLevel": "strata.io/cabinet"}},
                {"name": "decode", "minMember": 1, "selector": {"matchLabels": {"role": "decode"}}}
            ]
        }))
        .unwrap();
        assert_eq!(s.min_member, 3);
        assert_eq!(s.schedule_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            s.subgroups[0].required_level.as_deref(),
            Some("strata.io/cabinet")
        );
        s.validate(&levels()).unwrap();
        let prefill = Labels::from_pairs([("role", "prefill")]);
        assert_eq!(s.subgroup_of(&prefill), Ok(Some(0)));
        assert_eq!(
            s.subgroup_of(&Labels::from_pairs([(SUBGROUP_LABEL, "decode")])),
            Ok(Some(1))
        );
        assert!(
            s.subgroup_of(&Labels::from_pairs([(SUBGROUP_LABEL, "nope")]))
                .is_err()
        );
        assert_eq!(s.subgroup_of(&Labels::default()), Ok(None));
    }

    #[test]
    fn bad_strata_specs_name_the_field() {
        let e = PodGroupSpec::from_strata(&json!({"minMember": 0})).unwrap_err();
        assert_eq!(e.field, "spec.minMember");
        let e = PodGroupSpec::from_strata(&json!({"minMembers": 2})).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        let e = PodGroupSpec::from_strata(&json!({"subGroups": [{"name": "a", "minMember": -1}]}))
            .unwrap_err();
        assert_eq!(e.field, "spec.subGroups[0].minMember");
        let e = PodGroupSpec::from_strata(
            &json!({"spread": {"service": "s", "level": "x", "mode": "Always"}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.spread.mode");
    }

    #[test]
    fn contradictions_are_rejected() {
        let s = PodGroupSpec::from_strata(&json!({
            "topology": {"requiredLevel": "strata.io/cabinet"},
            "subGroups": [{"name": "a", "minMember": 1, "topology": {"requiredLevel": "strata.io/supernode"}}]
        }))
        .unwrap();
        let e = s.validate(&levels()).unwrap_err();
        assert!(e.message.contains("cannot be wider than its group"), "{e}");
        let s = PodGroupSpec::from_strata(&json!({"topology": {"requiredLevel": "rack"}})).unwrap();
        assert!(
            s.validate(&levels())
                .unwrap_err()
                .message
                .contains("not a topology level")
        );
        let s = PodGroupSpec::from_strata(&json!({"subGroups": [
            {"name": "a", "minMember": 1}, {"name": "a", "minMember": 1}]}))
        .unwrap();
        assert_eq!(
            s.validate(&levels()).unwrap_err().field,
            "subGroups[1].name"
        );
        let s = PodGroupSpec::from_strata(&json!({"topology": {
            "requiredLevel": "strata.io/cabinet", "preferredLevel": "strata.io/supernode"}}))
        .unwrap();
        assert_eq!(
            s.validate(&levels()).unwrap_err().field,
            "topology.preferredLevel"
        );
        let s = PodGroupSpec::from_strata(&json!({"subGroups": [
            {"name": "a", "minMember": 1, "selector": {"matchLabels": {"x": "1"}}},
            {"name": "b", "minMember": 1, "selector": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}]}))
        .unwrap();
        let e = s
            .subgroup_of(&Labels::from_pairs([("x", "1")]))
            .unwrap_err();
        assert!(e.message.contains("must not overlap"), "{e}");
    }

    #[test]
    fn coscheduling_spec_parses_leniently() {
        let s = PodGroupSpec::from_coscheduling(&json!({
            "minMember": 3, "minResources": {"cpu": "3", "nvidia.com/gpu": 2}, "scheduleTimeoutSeconds": 10, "extra": true
        }))
        .unwrap();
        assert_eq!(s.min_member, 3);
        let r = s.min_resources.unwrap();
        assert_eq!(r[strata_scheduler::resources::ResourceId::CPU], 3000);
        assert!(
            PodGroupSpec::from_coscheduling(&json!({"minResources": {"cpu": "lots"}})).is_err()
        );
    }

    #[test]
    fn annotations_define_inline_groups() {
        let mut a = BTreeMap::new();
        assert!(PodGroupSpec::from_annotations(&a).is_none());
        a.insert(ANN_MIN_MEMBER.to_owned(), "4".to_owned());
        a.insert(
            ANN_SUBGROUPS.to_owned(),
            "prefill:2:strata.io/cabinet, decode:2".to_owned(),
        );
        a.insert(
            ANN_SPREAD.to_owned(),
            "llama:strata.io/supernode".to_owned(),
        );
        let s = PodGroupSpec::from_annotations(&a).unwrap().unwrap();
        assert_eq!(s.min_member, 4);
        assert_eq!(s.subgroups.len(), 2);
        assert_eq!(s.subgroups[1].required_level, None);
        assert_eq!(s.spread.as_ref().unwrap().service, "llama");
        a.insert(ANN_MIN_MEMBER.to_owned(), "four".to_owned());
        assert_eq!(
            PodGroupSpec::from_annotations(&a)
                .unwrap()
                .unwrap_err()
                .field,
            ANN_MIN_MEMBER
        );
        a.insert(ANN_MIN_MEMBER.to_owned(), "4".to_owned());
        a.insert(ANN_SUBGROUPS.to_owned(), "prefill".to_owned());
        assert!(
            PodGroupSpec::from_annotations(&a)
                .unwrap()
                .unwrap_err()
                .field
                .starts_with(ANN_SUBGROUPS)
        );
        a.insert(ANN_SUBGROUPS.to_owned(), "prefill:2:a:b:c".to_owned());
        assert!(PodGroupSpec::from_annotations(&a).unwrap().is_err());
    }

    #[test]
    fn subgroup_preferred_level_from_annotations_and_its_validation() {
        let levels: Vec<String> = strata_topology::DEFAULT_LEVELS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut a = BTreeMap::new();
        a.insert(ANN_MIN_MEMBER.to_owned(), "3".to_owned());
        a.insert(
            ANN_SUBGROUPS.to_owned(),
            "prefill:2::strata.io/cabinet,decode:1:strata.io/cabinet".to_owned(),
        );
        let s = PodGroupSpec::from_annotations(&a).unwrap().unwrap();
        assert_eq!(s.subgroups[0].required_level, None);
        assert_eq!(
            s.subgroups[0].preferred_level.as_deref(),
            Some("strata.io/cabinet")
        );
        assert_eq!(s.subgroups[1].preferred_level, None);
        s.validate(&levels).unwrap();
        // Preferred wider than the subgroup's own required level.
        a.insert(
            ANN_SUBGROUPS.to_owned(),
            "prefill:2:strata.io/cabinet:strata.io/supernode".to_owned(),
        );
        let s = PodGroupSpec::from_annotations(&a).unwrap().unwrap();
        assert_eq!(
            s.validate(&levels).unwrap_err().field,
            "subGroups[0].topology.preferredLevel"
        );
        // Not a level at all.
        a.insert(ANN_SUBGROUPS.to_owned(), "prefill:2::rack".to_owned());
        let s = PodGroupSpec::from_annotations(&a).unwrap().unwrap();
        assert_eq!(
            s.validate(&levels).unwrap_err().field,
            "subGroups[0].topology.preferredLevel"
        );
    }
}
