//! `DefaultPreemptionArgs`: how many candidate nodes a preemption attempt
//! looks for before it stops searching.
//!
//! kube-scheduler evaluates nodes until it has found
//! `max(numNodes * minCandidateNodesPercentage / 100, minCandidateNodesAbsolute)`
//! candidates (capped at the number of nodes where preemption might help), so
//! one preemption in a 16,000-node cluster does not dry-run every node. The
//! defaults are 10 % and 100. The arguments are validated when the plugin is
//! built: a bad value fails the profile with an error naming the field, never
//! a panic during a cycle.

use serde_json::Value;
use strata_scheduler::sdk::PluginArgsError;

/// Field name of the percentage, as in `pluginConfig`.
const PERCENTAGE: &str = "minCandidateNodesPercentage";
/// Field name of the absolute floor, as in `pluginConfig`.
const ABSOLUTE: &str = "minCandidateNodesAbsolute";

/// The plugin's arguments (`DefaultPreemptionArgs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultPreemptionArgs {
    /// Share of the nodes, in percent (`0..=100`), to find candidates on.
    pub min_candidate_nodes_percentage: i32,
    /// Floor on the number of candidates (`>= 0`).
    pub min_candidate_nodes_absolute: i32,
}

impl Default for DefaultPreemptionArgs {
    fn default() -> Self {
        DefaultPreemptionArgs {
            min_candidate_nodes_percentage: 10,
            min_candidate_nodes_absolute: 100,
        }
    }
}

impl DefaultPreemptionArgs {
    /// Reads the args from `pluginConfig` (`None` or `null` gives the
    /// defaults; a field left out keeps its default) and validates them.
    /// `apiVersion` and `kind` are accepted and ignored; any other field is an
    /// error, as in kube-scheduler's strict decoding.
    pub fn from_json(args: Option<&Value>) -> Result<Self, PluginArgsError> {
        let mut out = DefaultPreemptionArgs::default();
        let obj = match args {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Object(o)) => o,
            Some(_) => {
                return Err(PluginArgsError::new(
                    "args",
                    "DefaultPreemptionArgs must be an object",
                ));
            }
        };
        for (key, value) in obj {
            match key.as_str() {
                PERCENTAGE => out.min_candidate_nodes_percentage = int_field(PERCENTAGE, value)?,
                ABSOLUTE => out.min_candidate_nodes_absolute = int_field(ABSOLUTE, value)?,
                "apiVersion" | "kind" => {}
                other => {
                    return Err(PluginArgsError::new(
                        other,
                        format!(
                            "unknown field; DefaultPreemptionArgs has only {PERCENTAGE} and {ABSOLUTE}"
                        ),
                    ));
                }
            }
        }
        out.validate()?;
        Ok(out)
    }

    /// Checks the ranges kube-scheduler enforces.
    pub fn validate(&self) -> Result<(), PluginArgsError> {
        let pct = self.min_candidate_nodes_percentage;
        if !(0..=100).contains(&pct) {
            return Err(PluginArgsError::new(
                PERCENTAGE,
                format!("{pct} is not in the valid range 0..=100"),
            ));
        }
        let abs = self.min_candidate_nodes_absolute;
        if abs < 0 {
            return Err(PluginArgsError::new(
                ABSOLUTE,
                format!("{abs} must not be negative"),
            ));
        }
        if pct == 0 && abs == 0 {
            return Err(PluginArgsError::new(
                PERCENTAGE,
                format!("{PERCENTAGE} and {ABSOLUTE} cannot both be zero"),
            ));
        }
        Ok(())
    }

    /// How many candidates to look for among `num_nodes` nodes where
    /// preemption might help: the percentage of them, at least the absolute
    /// floor, at most all of them.
    pub fn num_candidates(&self, num_nodes: usize) -> usize {
        let by_share =
            num_nodes.saturating_mul(self.min_candidate_nodes_percentage.max(0) as usize) / 100;
        by_share
            .max(self.min_candidate_nodes_absolute.max(0) as usize)
            .min(num_nodes)
    }
}

fn int_field(field: &str, v: &Value) -> Result<i32, PluginArgsError> {
    v.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| PluginArgsError::new(field, format!("{v} is not a 32-bit integer")))
}
