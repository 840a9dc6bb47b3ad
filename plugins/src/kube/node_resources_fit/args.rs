//! `NodeResourcesFitArgs` (and the `resources` list that
//! `NodeResourcesBalancedAllocationArgs` shares): parsing, defaulting and
//! validation, shaped like kube-scheduler's `kubescheduler.config.k8s.io/v1`
//! types so an existing `pluginConfig` entry works unchanged.
//!
//! Parsing is staged: each nested object is deserialized on its own, so a
//! serde error (an unknown field, a string where a number belongs) is
//! reported with the JSON path of the object it is in, e.g.
//! `scoringStrategy.resources[1]: unknown field "wieght"`. Values that parse
//! but are out of range are reported on the exact field, e.g.
//! `scoringStrategy.resources[1].weight`.
//!
//! Defaulting follows kube-scheduler: no `scoringStrategy` means
//! `LeastAllocated` over cpu and memory with weight 1; an empty `resources`
//! list means cpu and memory; a weight of 0 (or none) means 1. A given
//! `scoringStrategy` must name its `type` (kube rejects an empty type too).
//! `apiVersion` and `kind` may appear (as they do in pluginConfig files) and
//! `kind`, when given, must name the right args type.
//!
//! One Strata extension: `deviceShareResources`, the extended resources the
//! Devices plugin accounts per device (HAMi's `nvidia.com/gpumem`,
//! `nvidia.com/gpumem-percentage`, `nvidia.com/gpucores`). Nodes never
//! advertise them in allocatable, so the Filter leaves them to Devices, as
//! kube-scheduler leaves an extender's `managedResources` marked
//! `ignoredByScheduler`. Absent: [`DEFAULT_DEVICE_SHARE_RESOURCES`], the
//! share resources of the Devices plugin's default kinds; `[]`: none (the strict kube behaviour, for profiles
//! without Devices); a list: exactly those.

use crate::common::args::{check_kind, parse_at};
use crate::common::resources::{
    DEFAULT_DEVICE_SHARE_RESOURCES, ResourceSpec, default_resources, parse_resources,
};
use serde::Deserialize;
use serde_json::Value;
use strata_scheduler::labels::check_qualified_name;
use strata_scheduler::sdk::PluginArgsError;

/// The highest `score` of a `shape` point (kube's `MaxCustomPriorityScore`).
pub(crate) const MAX_CUSTOM_PRIORITY_SCORE: i64 = 10;

/// The scoring strategy types kube-scheduler supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrategyType {
    /// Favors nodes with more free resources (spreading). The default.
    LeastAllocated,
    /// Favors nodes with fewer free resources (bin packing).
    MostAllocated,
    /// Scores utilization through a user-given piecewise linear function.
    RequestedToCapacityRatio,
}

/// `NodeResourcesFitArgs`, validated and defaulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FitArgs {
    /// Extended resource names the Filter does not check.
    pub ignored_resources: Vec<String>,
    /// Extended resource prefixes (`example.com` of `example.com/gpu`) the
    /// Filter does not check.
    pub ignored_resource_groups: Vec<String>,
    /// Device share resources the Filter leaves to the Devices plugin
    /// (Strata extension, see the module docs).
    pub device_share_resources: Vec<String>,
    /// The scoring strategy.
    pub strategy: StrategyType,
    /// Resources scored, with weights.
    pub resources: Vec<ResourceSpec>,
    /// `requestedToCapacityRatio.shape` as (utilization 0..=100, score
    /// scaled to 0..=100), sorted by utilization; empty unless the strategy
    /// is `RequestedToCapacityRatio`.
    pub shape: Vec<(i64, i64)>,
}

impl Default for FitArgs {
    fn default() -> Self {
        FitArgs {
            ignored_resources: Vec::new(),
            ignored_resource_groups: Vec::new(),
            device_share_resources: DEFAULT_DEVICE_SHARE_RESOURCES.map(str::to_owned).to_vec(),
            strategy: StrategyType::LeastAllocated,
            resources: default_resources(),
            shape: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFitArgs {
    #[serde(default)]
    #[allow(dead_code)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    ignored_resources: Option<Vec<String>>,
    #[serde(default)]
    ignored_resource_groups: Option<Vec<String>>,
    #[serde(default)]
    device_share_resources: Option<Vec<String>>,
    #[serde(default)]
    scoring_strategy: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawStrategy {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    resources: Option<Value>,
    #[serde(default)]
    requested_to_capacity_ratio: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRatio {
    #[serde(default)]
    shape: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPoint {
    utilization: i32,
    score: i32,
}

impl FitArgs {
    /// Parses, defaults and validates `NodeResourcesFitArgs`.
    pub(crate) fn parse(v: Option<&Value>) -> Result<FitArgs, PluginArgsError> {
        let v = match v {
            None | Some(Value::Null) => return Ok(FitArgs::default()),
            Some(v) => v,
        };
        let raw: RawFitArgs = parse_at(v, "")?;
        check_kind(raw.kind.as_deref(), "NodeResourcesFitArgs")?;
        let mut args = FitArgs::default();

        let ignored = raw.ignored_resources.unwrap_or_default();
        for (i, r) in ignored.iter().enumerate() {
            if let Err(why) = check_qualified_name(r) {
                return Err(PluginArgsError::new(format!("ignoredResources[{i}]"), why));
            }
        }
        args.ignored_resources = ignored;

        let groups = raw.ignored_resource_groups.unwrap_or_default();
        for (i, g) in groups.iter().enumerate() {
            let at = format!("ignoredResourceGroups[{i}]");
            if g.contains('/') {
                return Err(PluginArgsError::new(
                    at,
                    format!("{g:?}: a resource group name can't contain '/'"),
                ));
            }
            if let Err(why) = check_qualified_name(g) {
                return Err(PluginArgsError::new(at, why));
            }
        }
        args.ignored_resource_groups = groups;

        if let Some(shares) = raw.device_share_resources {
            for (i, r) in shares.iter().enumerate() {
                let at = format!("deviceShareResources[{i}]");
                if !r.contains('/') {
                    return Err(PluginArgsError::new(
                        at,
                        format!("{r:?} is not an extended resource name (domain/name)"),
                    ));
                }
                check_qualified_name(r).map_err(|why| PluginArgsError::new(at, why))?;
            }
            args.device_share_resources = shares;
        }

        let Some(strategy) = raw.scoring_strategy.filter(|s| !s.is_null()) else {
            return Ok(args);
        };
        let s: RawStrategy = parse_at(&strategy, "scoringStrategy")?;
        args.strategy = match s.kind.as_deref() {
            Some("LeastAllocated") => StrategyType::LeastAllocated,
            Some("MostAllocated") => StrategyType::MostAllocated,
            Some("RequestedToCapacityRatio") => StrategyType::RequestedToCapacityRatio,
            other => {
                return Err(PluginArgsError::new(
                    "scoringStrategy.type",
                    format!(
                        "unsupported value {:?}: supported values are \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\"",
                        other.unwrap_or("")
                    ),
                ));
            }
        };
        args.resources = parse_resources(s.resources.as_ref(), "scoringStrategy.resources")?;
        for (i, r) in args.resources.iter().enumerate() {
            if !(1..=100).contains(&r.weight) {
                return Err(PluginArgsError::new(
                    format!("scoringStrategy.resources[{i}].weight"),
                    format!(
                        "{}: the weight of {:?} is not in the valid range (0, 100]",
                        r.weight, r.name
                    ),
                ));
            }
        }
        // kube validates a shape whatever the type, and uses it only for
        // RequestedToCapacityRatio.
        let shape = match s.requested_to_capacity_ratio.filter(|r| !r.is_null()) {
            Some(r) => Some(parse_shape(&r)?),
            None => None,
        };
        if args.strategy == StrategyType::RequestedToCapacityRatio {
            args.shape = shape.ok_or_else(|| {
                PluginArgsError::new(
                    "scoringStrategy.requestedToCapacityRatio",
                    "required when scoringStrategy.type is RequestedToCapacityRatio",
                )
            })?;
        }
        Ok(args)
    }
}

/// Parses and validates `requestedToCapacityRatio`, returning the shape
/// with scores scaled from 0..=10 to 0..=100.
fn parse_shape(v: &Value) -> Result<Vec<(i64, i64)>, PluginArgsError> {
    const BASE: &str = "scoringStrategy.requestedToCapacityRatio";
    let r: RawRatio = parse_at(v, BASE)?;
    let items = r.shape.unwrap_or_default();
    if items.is_empty() {
        return Err(PluginArgsError::new(
            format!("{BASE}.shape"),
            "at least one point must be specified",
        ));
    }
    let mut points = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{BASE}.shape[{i}]");
        let p: RawPoint = parse_at(item, &at)?;
        if !(0..=100).contains(&p.utilization) {
            return Err(PluginArgsError::new(
                format!("{at}.utilization"),
                format!("{} is not in the valid range [0, 100]", p.utilization),
            ));
        }
        if !(0..=MAX_CUSTOM_PRIORITY_SCORE).contains(&i64::from(p.score)) {
            return Err(PluginArgsError::new(
                format!("{at}.score"),
                format!(
                    "{} is not in the valid range [0, {MAX_CUSTOM_PRIORITY_SCORE}]",
                    p.score
                ),
            ));
        }
        if let Some(&(prev, _)) = points.last()
            && prev >= i64::from(p.utilization)
        {
            return Err(PluginArgsError::new(
                format!("{at}.utilization"),
                format!(
                    "{}: utilization values must be sorted in increasing order (previous point has {prev})",
                    p.utilization
                ),
            ));
        }
        let scale = strata_scheduler::sdk::MAX_NODE_SCORE / MAX_CUSTOM_PRIORITY_SCORE;
        points.push((i64::from(p.utilization), i64::from(p.score) * scale));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> PluginArgsError {
        FitArgs::parse(Some(&v)).expect_err("args should be rejected")
    }

    #[test]
    fn defaults_match_kube_scheduler() {
        for v in [None, Some(json!(null)), Some(json!({}))] {
            let a = FitArgs::parse(v.as_ref()).unwrap();
            assert_eq!(a, FitArgs::default());
            assert_eq!(a.strategy, StrategyType::LeastAllocated);
            assert_eq!(a.resources, default_resources());
        }
        // Empty resources default to cpu+memory; weight 0 becomes 1.
        let a = FitArgs::parse(Some(&json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "NodeResourcesFitArgs",
            "scoringStrategy": {"type": "MostAllocated", "resources": []}
        })))
        .unwrap();
        assert_eq!(a.strategy, StrategyType::MostAllocated);
        assert_eq!(a.resources, default_resources());
        let a = FitArgs::parse(Some(&json!({
            "scoringStrategy": {"type": "LeastAllocated", "resources": [{"name": "cpu", "weight": 0}, {"name": "example.com/gpu"}]}
        })))
        .unwrap();
        assert_eq!(a.resources[0].weight, 1);
        assert_eq!(a.resources[1].weight, 1);
        assert_eq!(a.resources[1].id.name(), "example.com/gpu");
    }

    #[test]
    fn shape_is_scaled_to_node_scores() {
        let a = FitArgs::parse(Some(&json!({
            "scoringStrategy": {
                "type": "RequestedToCapacityRatio",
                "resources": [{"name": "intel.com/foo", "weight": 3}],
                "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}
            }
        })))
        .unwrap();
        assert_eq!(a.shape, vec![(0, 0), (100, 100)]);
    }

    #[test]
    fn bad_args_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"scoringStrategy": {"type": "Balanced"}}),
                "scoringStrategy.type",
            ),
            (
                json!({"scoringStrategy": {"resources": [{"name": "cpu", "weight": 1}]}}),
                "scoringStrategy.type",
            ),
            (
                json!({"scoringStrategy": {"type": "LeastAllocated", "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 101}]}}),
                "scoringStrategy.resources[1].weight",
            ),
            (
                json!({"scoringStrategy": {"type": "MostAllocated", "resources": [{"name": "cpu", "weight": -1}]}}),
                "scoringStrategy.resources[0].weight",
            ),
            (
                json!({"scoringStrategy": {"type": "MostAllocated", "resources": [{"name": "cpu"}, {"name": "cpu"}]}}),
                "scoringStrategy.resources[1].name",
            ),
            (
                json!({"scoringStrategy": {"type": "MostAllocated", "resources": [{"name": ""}]}}),
                "scoringStrategy.resources[0].name",
            ),
            (
                json!({"scoringStrategy": {"type": "MostAllocated", "resources": [{"name": "cpu", "wieght": 2}]}}),
                "scoringStrategy.resources[0]",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio"}}),
                "scoringStrategy.requestedToCapacityRatio",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {"shape": []}}}),
                "scoringStrategy.requestedToCapacityRatio.shape",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {"shape": [
                    {"utilization": 50, "score": 1}, {"utilization": 50, "score": 2}]}}}),
                "scoringStrategy.requestedToCapacityRatio.shape[1].utilization",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {"shape": [
                    {"utilization": 60, "score": 1}, {"utilization": 10, "score": 2}]}}}),
                "scoringStrategy.requestedToCapacityRatio.shape[1].utilization",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {"shape": [
                    {"utilization": 101, "score": 1}]}}}),
                "scoringStrategy.requestedToCapacityRatio.shape[0].utilization",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {"shape": [
                    {"utilization": 0, "score": 11}]}}}),
                "scoringStrategy.requestedToCapacityRatio.shape[0].score",
            ),
            (
                json!({"scoringStrategy": {"type": "LeastAllocated", "requestedToCapacityRatio": {"shape": [
                    {"utilization": 0, "score": -1}]}}}),
                "scoringStrategy.requestedToCapacityRatio.shape[0].score",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {"shape": [
                    {"utilization": "high", "score": 1}]}}}),
                "scoringStrategy.requestedToCapacityRatio.shape[0]",
            ),
            (
                json!({"ignoredResources": ["example.com/"]}),
                "ignoredResources[0]",
            ),
            (
                json!({"ignoredResources": ["ok.example.com/gpu", "-bad"]}),
                "ignoredResources[1]",
            ),
            (
                json!({"ignoredResourceGroups": ["example.com/gpu"]}),
                "ignoredResourceGroups[0]",
            ),
            (
                json!({"ignoredResourceGroups": ["Bad_Group!"]}),
                "ignoredResourceGroups[0]",
            ),
            (json!({"ignoredResources": "example.com/gpu"}), "args"),
            (json!({"scoringStrtegy": {}}), "args"),
            (
                json!({"kind": "NodeResourcesBalancedAllocationArgs"}),
                "kind",
            ),
            (
                json!({"scoringStrategy": "LeastAllocated"}),
                "scoringStrategy",
            ),
        ];
        for (v, field) in cases {
            let e = err(v.clone());
            assert_eq!(e.field, field, "args {v} gave {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn device_share_resources_default_to_hamis_and_can_be_replaced() {
        let a = FitArgs::parse(None).unwrap();
        for r in [
            "nvidia.com/gpumem",
            "nvidia.com/gpumem-percentage",
            "nvidia.com/gpucores",
        ] {
            assert!(a.device_share_resources.iter().any(|x| x == r), "{r}");
        }
        // The device count itself is a node resource: checked as usual.
        assert!(
            !a.device_share_resources
                .iter()
                .any(|x| x == "nvidia.com/gpu")
        );
        let a = FitArgs::parse(Some(&json!({"deviceShareResources": []}))).unwrap();
        assert!(a.device_share_resources.is_empty());
        let a = FitArgs::parse(Some(
            &json!({"deviceShareResources": ["example.com/npu-cores"]}),
        ))
        .unwrap();
        assert_eq!(a.device_share_resources, vec!["example.com/npu-cores"]);
        // Other fields leave the default in place.
        let a = FitArgs::parse(Some(&json!({"ignoredResources": ["example.com/foo"]}))).unwrap();
        assert_eq!(
            a.device_share_resources,
            DEFAULT_DEVICE_SHARE_RESOURCES.map(str::to_owned).to_vec()
        );
        for (v, field) in [
            (
                json!({"deviceShareResources": ["cpu"]}),
                "deviceShareResources[0]",
            ),
            (
                json!({"deviceShareResources": ["nvidia.com/gpumem", "Bad.com/x"]}),
                "deviceShareResources[1]",
            ),
            (json!({"deviceShareResources": "nvidia.com/gpumem"}), "args"),
        ] {
            assert_eq!(err(v.clone()).field, field, "{v}");
        }
    }

    #[test]
    fn ignored_resources_are_kept() {
        let a = FitArgs::parse(Some(&json!({
            "ignoredResources": ["example.com/foo"],
            "ignoredResourceGroups": ["example.org"]
        })))
        .unwrap();
        assert_eq!(a.ignored_resources, vec!["example.com/foo".to_string()]);
        assert_eq!(a.ignored_resource_groups, vec!["example.org".to_string()]);
    }

    #[test]
    fn qualified_names() {
        for ok in ["a", "example.com/gpu", "nvidia.com/gpu", "A_b.c-9", "x.y/Z"] {
            assert!(check_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "-a",
            "a-",
            "Example.com/gpu",
            "a/b/c",
            &"x".repeat(64),
        ] {
            assert!(check_qualified_name(bad).is_err(), "{bad}");
        }
    }
}
