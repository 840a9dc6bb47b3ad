//! PodTopologySpread (placeholder: not yet implemented).

use std::sync::Arc;
use strata_scheduler::framework::{Handle, Plugin, PluginArgsError};

/// The plugin's configuration name.
pub const NAME: &str = "PodTopologySpread";

struct Placeholder;

impl Plugin for Placeholder {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Builds the plugin.
pub fn factory(
    _args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(Placeholder))
}
