//! NodeAffinityArgs: the profile-wide `addedAffinity`, parsed and compiled
//! once when the profile is built.
//!
//! The shape is kube-scheduler's: `{"addedAffinity": <core/v1 NodeAffinity>}`
//! (plus the optional `apiVersion`/`kind` of a versioned args object). As in
//! kube-scheduler's strict decoding and validation, unknown fields, a
//! required selector without terms, weights outside `1..=100` and malformed
//! expressions are errors that name the offending field.

use k8s_openapi::api::core::v1 as corev1;
use serde_json::Value;
use strata_scheduler::labels::{NodeSelector, NodeSelectorTerm};
use strata_scheduler::sdk::PluginArgsError;

const ADDED: &str = "addedAffinity";
const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";

/// Compiled NodeAffinityArgs.
#[derive(Debug, Clone, Default)]
pub struct NodeAffinityArgs {
    /// `addedAffinity.requiredDuringSchedulingIgnoredDuringExecution`: every
    /// pod of the profile must also match it.
    pub(super) added_required: Option<NodeSelector>,
    /// `addedAffinity.preferredDuringSchedulingIgnoredDuringExecution`:
    /// added to every pod's preferred terms.
    pub(super) added_preferred: Vec<(i32, NodeSelectorTerm)>,
}

impl NodeAffinityArgs {
    /// Parses and validates the plugin's `args` (`None` or `null`: no added
    /// affinity).
    pub fn parse(args: Option<&Value>) -> Result<NodeAffinityArgs, PluginArgsError> {
        let obj = match args {
            None | Some(Value::Null) => return Ok(NodeAffinityArgs::default()),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(PluginArgsError::new("args", "must be an object")),
        };
        for key in obj.keys() {
            if !matches!(key.as_str(), "apiVersion" | "kind" | ADDED) {
                return Err(PluginArgsError::new(key.as_str(), "unknown field"));
            }
        }
        let Some(added) = obj.get(ADDED).filter(|v| !v.is_null()) else {
            return Ok(NodeAffinityArgs::default());
        };
        let Value::Object(added_obj) = added else {
            return Err(PluginArgsError::new(ADDED, "must be an object"));
        };
        for key in added_obj.keys() {
            if key != REQUIRED && key != PREFERRED {
                return Err(PluginArgsError::new(
                    format!("{ADDED}.{key}"),
                    "unknown field",
                ));
            }
        }
        let affinity: corev1::NodeAffinity = serde_json::from_value(added.clone())
            .map_err(|e| PluginArgsError::new(ADDED, e.to_string()))?;
        let added_required = match &affinity.required_during_scheduling_ignored_during_execution {
            None => None,
            Some(sel) => {
                let field = format!("{ADDED}.{REQUIRED}");
                if sel.node_selector_terms.is_empty() {
                    return Err(PluginArgsError::new(
                        format!("{field}.nodeSelectorTerms"),
                        "must have at least one node selector term",
                    ));
                }
                Some(
                    NodeSelector::compile(sel)
                        .map_err(|e| PluginArgsError::new(field, e.to_string()))?,
                )
            }
        };
        let mut added_preferred = Vec::new();
        for (i, p) in affinity
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let field = format!("{ADDED}.{PREFERRED}[{i}]");
            if !(1..=100).contains(&p.weight) {
                return Err(PluginArgsError::new(
                    format!("{field}.weight"),
                    format!("{} is outside 1..=100", p.weight),
                ));
            }
            let term = NodeSelectorTerm::compile(&p.preference)
                .map_err(|e| PluginArgsError::new(format!("{field}.preference"), e.to_string()))?;
            added_preferred.push((p.weight, term));
        }
        Ok(NodeAffinityArgs {
            added_required,
            added_preferred,
        })
    }

    /// Whether the args add nothing.
    pub fn is_empty(&self) -> bool {
        self.added_required.is_none() && self.added_preferred.is_empty()
    }
}
