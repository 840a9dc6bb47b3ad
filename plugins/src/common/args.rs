//! Helpers for parsing a plugin's `pluginConfig` args: each error names the
//! field it is on.

use serde::de::DeserializeOwned;
use serde_json::Value;
use strata_scheduler::sdk::PluginArgsError;

/// Deserializes `v` as `T`, reporting a failure on `path`.
pub(crate) fn parse_at<T: DeserializeOwned>(v: &Value, path: &str) -> Result<T, PluginArgsError> {
    T::deserialize(v).map_err(|e| {
        PluginArgsError::new(if path.is_empty() { "args" } else { path }, e.to_string())
    })
}

/// Checks `kind` (when present) against the expected args type name.
pub(crate) fn check_kind(kind: Option<&str>, expected: &str) -> Result<(), PluginArgsError> {
    match kind {
        Some(k) if k != expected => Err(PluginArgsError::new(
            "kind",
            format!("{k:?} is not {expected:?}"),
        )),
        _ => Ok(()),
    }
}
