//! `InterPodAffinityArgs`, shaped like kube-scheduler's: `hardPodAffinityWeight`
//! (default 1, valid 0..=100) and `ignorePreferredTermsOfExistingPods`
//! (default false).
//!
//! Parsed by hand from the `pluginConfig` JSON rather than through serde
//! derive so that every error names the offending field, unknown fields are
//! rejected (kube-scheduler decodes its configuration strictly), and a value
//! of the wrong type says what was expected.

use serde_json::Value;
use strata_scheduler::sdk::PluginArgsError;

/// Largest `hardPodAffinityWeight` kube-scheduler accepts.
pub const MAX_HARD_POD_AFFINITY_WEIGHT: i32 = 100;

/// The plugin's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterPodAffinityArgs {
    /// Score weight of an existing pod's *required* affinity term that the
    /// incoming pod matches (kube-scheduler scores those symmetrically).
    /// 0 turns that contribution off.
    pub hard_pod_affinity_weight: i32,
    /// When true, existing pods' preferred (anti-)affinity terms do not
    /// affect the incoming pod's scores, and a pod with no preferred terms of
    /// its own is not scored by this plugin at all.
    pub ignore_preferred_terms_of_existing_pods: bool,
}

impl Default for InterPodAffinityArgs {
    fn default() -> Self {
        InterPodAffinityArgs {
            hard_pod_affinity_weight: 1,
            ignore_preferred_terms_of_existing_pods: false,
        }
    }
}

impl InterPodAffinityArgs {
    /// Parses `pluginConfig` args; `None` or `null` gives the defaults.
    pub fn from_json(args: Option<&Value>) -> Result<InterPodAffinityArgs, PluginArgsError> {
        let mut out = InterPodAffinityArgs::default();
        let obj = match args {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(PluginArgsError::new(
                    "args",
                    format!("must be an object, got {other}"),
                ));
            }
        };
        for (key, v) in obj {
            match key.as_str() {
                // Present when args are written as a typed object.
                "apiVersion" | "kind" => {}
                "hardPodAffinityWeight" => {
                    let w = v.as_i64().ok_or_else(|| {
                        PluginArgsError::new(key.as_str(), format!("must be an integer, got {v}"))
                    })?;
                    if !(0..=i64::from(MAX_HARD_POD_AFFINITY_WEIGHT)).contains(&w) {
                        return Err(PluginArgsError::new(
                            key.as_str(),
                            format!(
                                "{w} is not in the valid range 0..={MAX_HARD_POD_AFFINITY_WEIGHT}"
                            ),
                        ));
                    }
                    // In range, so it fits.
                    out.hard_pod_affinity_weight = w as i32;
                }
                "ignorePreferredTermsOfExistingPods" => {
                    out.ignore_preferred_terms_of_existing_pods = v.as_bool().ok_or_else(|| {
                        PluginArgsError::new(
                            key.as_str(),
                            format!("must be true or false, got {v}"),
                        )
                    })?;
                }
                other => {
                    return Err(PluginArgsError::new(
                        other,
                        "unknown field (expected hardPodAffinityWeight or ignorePreferredTermsOfExistingPods)",
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_when_absent() {
        let d = InterPodAffinityArgs::default();
        assert_eq!(d.hard_pod_affinity_weight, 1);
        assert!(!d.ignore_preferred_terms_of_existing_pods);
        assert_eq!(InterPodAffinityArgs::from_json(None), Ok(d));
        assert_eq!(InterPodAffinityArgs::from_json(Some(&Value::Null)), Ok(d));
        assert_eq!(InterPodAffinityArgs::from_json(Some(&json!({}))), Ok(d));
    }

    #[test]
    fn parses_fields() {
        let a = InterPodAffinityArgs::from_json(Some(&json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "InterPodAffinityArgs",
            "hardPodAffinityWeight": 0,
            "ignorePreferredTermsOfExistingPods": true
        })))
        .unwrap();
        assert_eq!(a.hard_pod_affinity_weight, 0);
        assert!(a.ignore_preferred_terms_of_existing_pods);
        let a =
            InterPodAffinityArgs::from_json(Some(&json!({"hardPodAffinityWeight": 100}))).unwrap();
        assert_eq!(a.hard_pod_affinity_weight, 100);
    }

    #[test]
    fn bad_args_name_the_field() {
        let cases = [
            (
                json!({"hardPodAffinityWeight": -1}),
                "hardPodAffinityWeight",
            ),
            (
                json!({"hardPodAffinityWeight": 101}),
                "hardPodAffinityWeight",
            ),
            (
                json!({"hardPodAffinityWeight": 1.5}),
                "hardPodAffinityWeight",
            ),
            (
                json!({"hardPodAffinityWeight": "1"}),
                "hardPodAffinityWeight",
            ),
            (
                json!({"hardPodAffinityWeight": 1u64 << 40}),
                "hardPodAffinityWeight",
            ),
            (
                json!({"ignorePreferredTermsOfExistingPods": "yes"}),
                "ignorePreferredTermsOfExistingPods",
            ),
            (json!({"hardPodAffinityWieght": 1}), "hardPodAffinityWieght"),
            (json!([1]), "args"),
        ];
        for (args, field) in cases {
            let err = InterPodAffinityArgs::from_json(Some(&args)).expect_err(&args.to_string());
            assert_eq!(err.field, field, "{args}");
        }
        let err = InterPodAffinityArgs::from_json(Some(&json!({"hardPodAffinityWeight": 101})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "hardPodAffinityWeight: 101 is not in the valid range 0..=100"
        );
    }
}
