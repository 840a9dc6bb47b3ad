//! `PodTopologySpreadArgs`: the cluster-level default constraints.
//!
//! The shape and the validation follow kube-scheduler's
//! `kubescheduler.config.k8s.io/v1` `PodTopologySpreadArgs`:
//!
//! - `defaultingType` is `System` (the default) or `List`. `System` uses the
//!   built-in defaults (hostname maxSkew 3 and zone maxSkew 5, both
//!   `ScheduleAnyway`) and forbids `defaultConstraints`; `List` uses exactly
//!   the listed `defaultConstraints` (an empty list means no defaults).
//! - each default constraint needs `maxSkew > 0`, a valid label key as
//!   `topologyKey`, `whenUnsatisfiable` of `DoNotSchedule`/`ScheduleAnyway`,
//!   and must not set `labelSelector` (the selector is derived per pod); no
//!   two constraints may share `{topologyKey, whenUnsatisfiable}`.
//! - `matchLabelKeys` is accepted and, as in kube-scheduler, has no effect on
//!   a default constraint (its selector is replaced by the derived one).
//!
//! Every error names the offending field (`defaultConstraints[1].maxSkew`).

use k8s_openapi::api::core::v1 as corev1;
use serde_json::Value;
use strata_scheduler::model::{NodeInclusionPolicy, WhenUnsatisfiable};
use strata_scheduler::sdk::{PluginArgsError, Sym};

/// How pods without constraints of their own get default ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DefaultingType {
    /// kube-scheduler's built-in defaults (hostname 3, zone 5, soft).
    #[default]
    System,
    /// The constraints listed in `defaultConstraints`.
    List,
}

/// One validated default constraint (no selector: it is derived per pod).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultConstraint {
    /// Maximum permitted skew (≥ 1).
    pub max_skew: i32,
    /// Node label key whose values are the domains.
    pub topology_key: Sym,
    /// Hard (a Filter) or soft (a Score).
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// Minimum number of eligible domains (hard constraints only).
    pub min_domains: Option<i32>,
    /// Whether the pod's node affinity/selector limits the counted nodes.
    pub node_affinity_policy: NodeInclusionPolicy,
    /// Whether untolerated taints exclude nodes from counting.
    pub node_taints_policy: NodeInclusionPolicy,
}

/// The plugin's arguments, validated.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PodTopologySpreadArgs {
    /// `defaultConstraints` as given (empty with `System`).
    pub default_constraints: Vec<DefaultConstraint>,
    /// `defaultingType`.
    pub defaulting_type: DefaultingType,
}

/// Label key of a node's hostname.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// Label key of a node's zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

impl PodTopologySpreadArgs {
    /// The constraints pods without their own get: the built-in ones with
    /// `System`, the listed ones with `List`.
    pub fn effective_defaults(&self) -> Vec<DefaultConstraint> {
        match self.defaulting_type {
            DefaultingType::List => self.default_constraints.clone(),
            DefaultingType::System => vec![
                DefaultConstraint {
                    max_skew: 3,
                    topology_key: Sym::new(LABEL_HOSTNAME),
                    when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
                    min_domains: None,
                    node_affinity_policy: NodeInclusionPolicy::Honor,
                    node_taints_policy: NodeInclusionPolicy::Ignore,
                },
                DefaultConstraint {
                    max_skew: 5,
                    topology_key: Sym::new(LABEL_ZONE),
                    when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
                    min_domains: None,
                    node_affinity_policy: NodeInclusionPolicy::Honor,
                    node_taints_policy: NodeInclusionPolicy::Ignore,
                },
            ],
        }
    }

    /// Parses and validates the `args` object of this plugin's
    /// `pluginConfig` entry; `None` gives the defaults (`System`).
    pub fn parse(args: Option<&Value>) -> Result<PodTopologySpreadArgs, PluginArgsError> {
        let obj = match args {
            None | Some(Value::Null) => return Ok(PodTopologySpreadArgs::default()),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(PluginArgsError::new(
                    "args",
                    format!("must be an object, got {}", json_kind(other)),
                ));
            }
        };
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "defaultConstraints" | "defaultingType" | "apiVersion" | "kind"
            ) {
                return Err(PluginArgsError::new(
                    k.as_str(),
                    "unknown field (PodTopologySpreadArgs has defaultConstraints and defaultingType)",
                ));
            }
        }
        let defaulting_type = match obj.get("defaultingType") {
            None | Some(Value::Null) => DefaultingType::System,
            Some(Value::String(s)) if s == "System" => DefaultingType::System,
            Some(Value::String(s)) if s == "List" => DefaultingType::List,
            Some(other) => {
                return Err(PluginArgsError::new(
                    "defaultingType",
                    format!(
                        "unsupported value {other}: supported values are \"System\" and \"List\""
                    ),
                ));
            }
        };
        let mut default_constraints = Vec::new();
        match obj.get("defaultConstraints") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let c = parse_constraint(i, item)?;
                    if let Some(j) = default_constraints
                        .iter()
                        .position(|d: &DefaultConstraint| {
                            d.topology_key == c.topology_key
                                && d.when_unsatisfiable == c.when_unsatisfiable
                        })
                    {
                        return Err(PluginArgsError::new(
                            format!("defaultConstraints[{i}]"),
                            format!(
                                "duplicate of defaultConstraints[{j}]: same topologyKey {:?} and whenUnsatisfiable",
                                c.topology_key.as_str()
                            ),
                        ));
                    }
                    default_constraints.push(c);
                }
            }
            Some(other) => {
                return Err(PluginArgsError::new(
                    "defaultConstraints",
                    format!("must be a list, got {}", json_kind(other)),
                ));
            }
        }
        if defaulting_type == DefaultingType::System && !default_constraints.is_empty() {
            return Err(PluginArgsError::new(
                "defaultingType",
                "\"System\" (the default) does not allow defaultConstraints; set defaultingType: List to use them",
            ));
        }
        Ok(PodTopologySpreadArgs {
            default_constraints,
            defaulting_type,
        })
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_constraint(i: usize, item: &Value) -> Result<DefaultConstraint, PluginArgsError> {
    let field = |f: &str| format!("defaultConstraints[{i}].{f}");
    let c: corev1::TopologySpreadConstraint = serde_json::from_value(item.clone())
        .map_err(|e| PluginArgsError::new(format!("defaultConstraints[{i}]"), e.to_string()))?;
    if c.max_skew <= 0 {
        return Err(PluginArgsError::new(
            field("maxSkew"),
            format!("{} is not in the valid range (0, inf)", c.max_skew),
        ));
    }
    if c.topology_key.is_empty() {
        return Err(PluginArgsError::new(
            field("topologyKey"),
            "must not be empty",
        ));
    }
    if let Err(why) = validate_label_key(&c.topology_key) {
        return Err(PluginArgsError::new(
            field("topologyKey"),
            format!("{:?} is not a valid label key: {why}", c.topology_key),
        ));
    }
    let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
        "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
        "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
        "" => {
            return Err(PluginArgsError::new(
                field("whenUnsatisfiable"),
                "must not be empty",
            ));
        }
        other => {
            return Err(PluginArgsError::new(
                field("whenUnsatisfiable"),
                format!(
                    "unsupported value {other:?}: supported values are \"DoNotSchedule\" and \"ScheduleAnyway\""
                ),
            ));
        }
    };
    if c.label_selector.is_some() {
        return Err(PluginArgsError::new(
            field("labelSelector"),
            "must not be set: the selector of a default constraint is derived for each pod",
        ));
    }
    if let Some(m) = c.min_domains
        && m < 1
    {
        return Err(PluginArgsError::new(
            field("minDomains"),
            format!("{m} must be at least 1"),
        ));
    }
    let policy = |v: Option<&str>, default, name: &str| match v {
        None => Ok(default),
        Some("Honor") => Ok(NodeInclusionPolicy::Honor),
        Some("Ignore") => Ok(NodeInclusionPolicy::Ignore),
        Some(o) => Err(PluginArgsError::new(
            field(name),
            format!("unsupported value {o:?}: supported values are \"Honor\" and \"Ignore\""),
        )),
    };
    Ok(DefaultConstraint {
        max_skew: c.max_skew,
        topology_key: Sym::new(&c.topology_key),
        when_unsatisfiable,
        min_domains: c.min_domains,
        node_affinity_policy: policy(
            c.node_affinity_policy.as_deref(),
            NodeInclusionPolicy::Honor,
            "nodeAffinityPolicy",
        )?,
        node_taints_policy: policy(
            c.node_taints_policy.as_deref(),
            NodeInclusionPolicy::Ignore,
            "nodeTaintsPolicy",
        )?,
    })
}

/// Checks a label key the way Kubernetes does: an optional DNS-subdomain
/// prefix and `/`, then a name of at most 63 characters of alphanumerics,
/// `-`, `_` and `.`, starting and ending with an alphanumeric.
fn validate_label_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return Err("the prefix must be a DNS subdomain of 1 to 253 characters");
        }
        let ok = p.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
        if !ok {
            return Err("the prefix must be a lowercase DNS subdomain");
        }
    }
    if name.is_empty() || name.len() > 63 {
        return Err("the name part must be 1 to 63 characters");
    }
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("the name part must start and end with an alphanumeric character");
    }
    if !bytes
        .iter()
        .all(|&b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("the name part may only contain alphanumerics, '-', '_' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> PluginArgsError {
        PodTopologySpreadArgs::parse(Some(&v)).expect_err("args should be rejected")
    }

    #[test]
    fn defaults_to_system() {
        let a = PodTopologySpreadArgs::parse(None).unwrap();
        assert_eq!(a.defaulting_type, DefaultingType::System);
        let d = a.effective_defaults();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].topology_key.as_str(), d[0].max_skew),
            (LABEL_HOSTNAME, 3)
        );
        assert_eq!((d[1].topology_key.as_str(), d[1].max_skew), (LABEL_ZONE, 5));
        assert!(
            d.iter()
                .all(|c| c.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
        );
        let a = PodTopologySpreadArgs::parse(Some(&json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "PodTopologySpreadArgs"
        })))
        .unwrap();
        assert_eq!(a.defaulting_type, DefaultingType::System);
    }

    #[test]
    fn list_is_taken_as_given() {
        let a = PodTopologySpreadArgs::parse(Some(&json!({
            "defaultingType": "List",
            "defaultConstraints": [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                 "minDomains": 3, "nodeTaintsPolicy": "Honor"},
                {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
            ]
        })))
        .unwrap();
        assert_eq!(a.defaulting_type, DefaultingType::List);
        let d = a.effective_defaults();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].min_domains, Some(3));
        assert_eq!(d[0].node_taints_policy, NodeInclusionPolicy::Honor);
        assert_eq!(d[0].node_affinity_policy, NodeInclusionPolicy::Honor);
        assert_eq!(d[1].node_taints_policy, NodeInclusionPolicy::Ignore);
        let empty = PodTopologySpreadArgs::parse(Some(&json!({"defaultingType": "List"}))).unwrap();
        assert!(empty.effective_defaults().is_empty());
    }

    #[test]
    fn bad_args_name_the_field() {
        let c = |extra: Value| {
            let mut base =
                json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"});
            if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    b.insert(k.clone(), v.clone());
                }
            }
            json!({"defaultingType": "List", "defaultConstraints": [base]})
        };
        let cases: Vec<(Value, &str)> = vec![
            (
                c(json!({"labelSelector": {}})),
                "defaultConstraints[0].labelSelector",
            ),
            (
                c(json!({"labelSelector": {"matchLabels": {"app": "x"}}})),
                "defaultConstraints[0].labelSelector",
            ),
            (c(json!({"maxSkew": 0})), "defaultConstraints[0].maxSkew"),
            (c(json!({"maxSkew": -2})), "defaultConstraints[0].maxSkew"),
            (
                c(json!({"topologyKey": ""})),
                "defaultConstraints[0].topologyKey",
            ),
            (
                c(json!({"topologyKey": "-bad-"})),
                "defaultConstraints[0].topologyKey",
            ),
            (
                c(json!({"topologyKey": "Bad_Prefix/zone"})),
                "defaultConstraints[0].topologyKey",
            ),
            (
                c(json!({"whenUnsatisfiable": "Sometimes"})),
                "defaultConstraints[0].whenUnsatisfiable",
            ),
            (
                c(json!({"whenUnsatisfiable": ""})),
                "defaultConstraints[0].whenUnsatisfiable",
            ),
            (
                c(json!({"minDomains": 0})),
                "defaultConstraints[0].minDomains",
            ),
            (
                c(json!({"nodeAffinityPolicy": "Maybe"})),
                "defaultConstraints[0].nodeAffinityPolicy",
            ),
            (
                c(json!({"nodeTaintsPolicy": "honor"})),
                "defaultConstraints[0].nodeTaintsPolicy",
            ),
            (c(json!({"maxSkew": "one"})), "defaultConstraints[0]"),
            (json!({"defaultingType": "Cluster"}), "defaultingType"),
            (json!({"defaultingType": 1}), "defaultingType"),
            (
                json!({"defaultConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]}),
                "defaultingType",
            ),
            (json!({"defaultConstraints": {}}), "defaultConstraints"),
            (json!({"defaultContraints": []}), "defaultContraints"),
            (json!([1]), "args"),
            (
                json!({"defaultingType": "List", "defaultConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
                    {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
                ]}),
                "defaultConstraints[1]",
            ),
        ];
        for (v, field) in cases {
            let e = err(v.clone());
            assert_eq!(e.field, field, "{v} -> {e}");
        }
    }

    #[test]
    fn label_keys() {
        for ok in ["zone", "topology.kubernetes.io/zone", "a_b.c-d", "x/Y9"] {
            assert!(validate_label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/zone",
            "a/",
            "-a",
            "a-",
            "a b",
            "UP.example/x",
            &"x".repeat(64),
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad}");
        }
    }
}
