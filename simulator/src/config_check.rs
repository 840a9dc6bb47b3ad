//! Full validation of a scheduler configuration without starting an engine:
//! shape (`SchedulerConfig::from_yaml`) and resolution of every profile
//! against the in-tree plugins and any added ones (names, weights, plugin
//! args, each handed to its plugin's own parser).
//!
//! Scenarios run it when they are read, so a bad `config:` is reported with
//! the scenario's file and line before anything runs; `strata check-config`
//! runs it on a file and prints the resolved profiles.

use crate::cluster::SimCluster;
use std::sync::Arc;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::config::{ConfigError, ResolvedProfile, SchedulerConfig, resolve};
use strata_scheduler::framework::{Handle, Registry, WaitingPods};
use strata_scheduler::intern::Sym;

/// Parses `text` and resolves its profiles against
/// [`strata_plugins::registry`] with [`strata_plugins::default_plugins`].
pub fn validate_config(text: &str) -> Result<(SchedulerConfig, Vec<ResolvedProfile>), ConfigError> {
    validate_config_with(text, &Registry::new())
}

/// As [`validate_config`], with `plugins` added to the in-tree ones (a
/// name already in the tree replaces that plugin).
pub fn validate_config_with(
    text: &str,
    plugins: &Registry,
) -> Result<(SchedulerConfig, Vec<ResolvedProfile>), ConfigError> {
    let cfg = SchedulerConfig::from_yaml(text)?;
    let profiles = resolve_profiles_with(&cfg, plugins)?;
    Ok((cfg, profiles))
}

/// Resolves `cfg`'s profiles against the in-tree plugins. Plugins are
/// built with a handle to an empty simulated cluster; nothing runs.
pub fn resolve_profiles(cfg: &SchedulerConfig) -> Result<Vec<ResolvedProfile>, ConfigError> {
    resolve_profiles_with(cfg, &Registry::new())
}

/// As [`resolve_profiles`], with `plugins` added to the in-tree ones.
pub fn resolve_profiles_with(
    cfg: &SchedulerConfig,
    plugins: &Registry,
) -> Result<Vec<ResolvedProfile>, ConfigError> {
    let cluster = Arc::new(SimCluster::new());
    let clock = Arc::new(ManualClock::default());
    let waiting = WaitingPods::default();
    let handle_for = |name: &str| Handle {
        cluster: cluster.clone(),
        waiting: waiting.clone(),
        clock: clock.clone(),
        scheduler_name: Sym::new(name),
        preemption: Default::default(),
    };
    let mut registry = strata_plugins::registry();
    registry.extend(plugins);
    resolve(
        cfg,
        &registry,
        &strata_plugins::default_plugins(),
        &handle_for,
    )
}

/// `err` as a one-line message placed in `file`:
/// `FILE:LINE:COLUMN: field `PATH`: what is wrong` for a shape error,
/// `FILE: field `PATH`: what is wrong` for an invalid value.
pub fn describe_config_error(file: &str, err: &ConfigError) -> String {
    match err {
        ConfigError::Parse {
            line,
            column,
            message,
        } => {
            let (path, msg) = match message.find(": ") {
                Some(i) if !message[..i].contains(' ') => (Some(&message[..i]), &message[i + 2..]),
                _ => (None, message.as_str()),
            };
            let msg = crate::scenario::clean_yaml_message(msg, "");
            match path {
                Some(p) => format!("{file}:{line}:{column}: field `{p}`: {msg}"),
                None => format!("{file}:{line}:{column}: {msg}"),
            }
        }
        ConfigError::Invalid { field, message } => format!("{file}: field `{field}`: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_configurations() {
        let (cfg, profiles) =
            validate_config("profiles: [{schedulerName: a}, {schedulerName: b}]\n").unwrap();
        assert_eq!(cfg.profiles.len(), 2);
        assert_eq!(profiles[1].scheduler_name, "b");
        let err = validate_config(
            "profiles:\n  - schedulerName: a\n    plugins: {score: {enabled: [{name: Nope}]}}\n",
        )
        .err()
        .expect("unknown plugin");
        assert!(
            matches!(&err, ConfigError::Invalid { field, .. } if field.contains("score.enabled[0]")),
            "{err}"
        );
        let err = validate_config("profiles: 3\n").err().expect("bad shape");
        assert!(matches!(err, ConfigError::Parse { line: 1, .. }), "{err}");
        assert_eq!(
            describe_config_error("c.yaml", &err),
            "c.yaml:1:11: field `profiles`: invalid type: integer `3`, expected a sequence"
        );
        let err = validate_config("parallelism: 0\n")
            .err()
            .expect("bad value");
        assert_eq!(
            describe_config_error("c.yaml", &err),
            "c.yaml: field `parallelism`: 0 is outside 1..=1024"
        );
    }
}
