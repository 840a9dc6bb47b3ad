//! Scheduler configuration, shaped like kube-scheduler's
//! `KubeSchedulerConfiguration`: several profiles (each a `schedulerName`),
//! plugins enabled and disabled per extension point with score weights, and
//! `pluginConfig` args per plugin.
//!
//! Parsing ([`SchedulerConfig::from_yaml`]) checks shape; resolution
//! ([`resolve`]) checks names, weights and args against the plugin registry.
//! Both name the offending field in their errors.

use crate::framework::{Handle, Plugin, Registry};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The default scheduler name of Strata's profile.
pub const DEFAULT_SCHEDULER_NAME: &str = "strata-scheduler";

/// The longest time any `...Seconds` field may hold: one year. Every such
/// value is added to a clock reading (a back-off expiry, an unschedulable
/// pod's flush time, an assumed pod's expiry), and a year is already
/// "never" for a scheduler, so a larger value is a typo, not a wish.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;
/// The most threads `parallelism` may ask for.
pub const MAX_PARALLELISM: usize = 1024;
/// The most binding cycles `bindConcurrency` may run at once (each holds
/// a task and, against a cluster, an API request).
pub const MAX_BIND_CONCURRENCY: usize = 65_536;
/// The most equivalence classes `equivalenceCacheClasses` may keep (each
/// holds a per-node array).
pub const MAX_EQUIVALENCE_CLASSES: usize = 4096;

/// A configuration error, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid YAML of the expected shape.
    #[error("configuration: line {line}, column {column}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is invalid.
    #[error("configuration: {field}: {message}")]
    Invalid {
        /// Field path, e.g. `profiles[0].plugins.score.enabled[1].weight`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// One plugin in an `enabled` list.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// Plugin name (`*` in `disabled` means all).
    pub name: String,
    /// Score weight (Score and multiPoint only).
    #[serde(default)]
    pub weight: Option<i64>,
}

/// Enabled and disabled plugins of one extension point.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginSet {
    /// Added (in order, after the defaults that remain).
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    /// Removed from the defaults; `*` removes all of them.
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

/// Plugin sets per extension point.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {
    /// Applies to every extension point a plugin implements.
    #[serde(default)]
    pub multi_point: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub pre_enqueue: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub queue_sort: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub pre_filter: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub filter: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub post_filter: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub pre_score: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub score: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub reserve: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub permit: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub pre_bind: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub bind: PluginSet,
    #[allow(missing_docs)]
    #[serde(default)]
    pub post_bind: PluginSet,
}

/// Args of one plugin.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Plugin name.
    pub name: String,
    /// Its args, passed to its factory.
    #[serde(default)]
    pub args: serde_json::Value,
}

/// One profile.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileConfig {
    /// The `spec.schedulerName` this profile serves.
    #[serde(default = "default_name")]
    pub scheduler_name: String,
    /// Plugin sets.
    #[serde(default)]
    pub plugins: Plugins,
    /// Plugin args.
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
    /// Overrides the global percentage for this profile.
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
}

fn default_name() -> String {
    DEFAULT_SCHEDULER_NAME.to_owned()
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulerConfig {
    /// `strata.io/v1alpha1` or `kubescheduler.config.k8s.io/v1`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// `StrataSchedulerConfiguration` or `KubeSchedulerConfiguration`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Threads for filtering and scoring. The default is the CPUs this
    /// process may use: the affinity mask, capped by the container's cgroup
    /// CPU quota (`cpu.max`, or cgroup v1's `cpu.cfs_quota_us` /
    /// `cpu.cfs_period_us`) rounded down, at least 1, as Rust's
    /// `std::thread::available_parallelism` reads them on Linux. With more
    /// than one thread a long pass still runs on the scheduling thread
    /// unless the pool has lately been cheaper per node (engine `parallel`
    /// module).
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Share of nodes to evaluate; 100 (the default) evaluates all.
    #[serde(default = "default_pct")]
    pub percentage_of_nodes_to_score: u32,
    /// First backoff, seconds.
    #[serde(default = "one")]
    pub pod_initial_backoff_seconds: u64,
    /// Backoff cap, seconds.
    #[serde(default = "ten")]
    pub pod_max_backoff_seconds: u64,
    /// Longest stay of a pod in the unschedulable set without an event, seconds.
    #[serde(default = "three_hundred")]
    pub pod_max_in_unschedulable_pods_seconds: u64,
    /// Binding cycles running at once.
    #[serde(default = "default_bind_concurrency")]
    pub bind_concurrency: usize,
    /// Seconds an assumed pod may stay unconfirmed after its bind returned.
    #[serde(default = "default_assumed_ttl")]
    pub assumed_pod_ttl_seconds: u64,
    /// Seed for tie-breaking among equally scored nodes.
    #[serde(default)]
    pub seed: u64,
    /// How many equivalence classes (pods from one template) keep cached
    /// node-local filter and score results; 0 turns the cache off.
    #[serde(default = "default_equiv_classes")]
    pub equivalence_cache_classes: usize,
    /// Profiles.
    #[serde(default = "default_profiles")]
    pub profiles: Vec<ProfileConfig>,
    /// Leader election settings, read by the Kubernetes adapter.
    #[serde(default)]
    pub leader_election: Option<serde_json::Value>,
    /// API client settings (QPS, burst), read by the Kubernetes adapter.
    #[serde(default)]
    pub client_connection: Option<serde_json::Value>,
    /// Address of `/healthz` and `/readyz`, read by the binary.
    #[serde(default)]
    pub healthz_bind_address: Option<String>,
    /// Address of `/metrics`, read by the binary.
    #[serde(default)]
    pub metrics_bind_address: Option<String>,
    /// kube-scheduler extenders, consulted by every profile (see
    /// [`crate::extenders`]).
    #[serde(default)]
    pub extenders: Vec<crate::extenders::ExtenderConfig>,
    /// The group scaler controller's settings (off unless `enabled`),
    /// read and checked by `strata-scaler`.
    #[serde(default)]
    pub scaler: Option<serde_json::Value>,
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
fn default_pct() -> u32 {
    100
}
fn one() -> u64 {
    1
}
fn ten() -> u64 {
    10
}
fn three_hundred() -> u64 {
    300
}
fn default_bind_concurrency() -> usize {
    64
}
fn default_equiv_classes() -> usize {
    32
}
fn default_assumed_ttl() -> u64 {
    120
}
fn default_profiles() -> Vec<ProfileConfig> {
    vec![ProfileConfig {
        scheduler_name: default_name(),
        plugins: Plugins::default(),
        plugin_config: Vec::new(),
        percentage_of_nodes_to_score: None,
    }]
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig::default_with_name(DEFAULT_SCHEDULER_NAME)
    }
}

impl SchedulerConfig {
    /// One profile named `scheduler_name` running the default plugins.
    pub fn default_with_name(scheduler_name: &str) -> SchedulerConfig {
        let mut c: SchedulerConfig =
            serde_json::from_value(serde_json::json!({})).expect("defaults deserialize");
        c.profiles[0].scheduler_name = scheduler_name.to_owned();
        c
    }

    /// Parses YAML. Shape errors carry the line and column; unknown fields
    /// are rejected.
    pub fn from_yaml(text: &str) -> Result<SchedulerConfig, ConfigError> {
        let c: SchedulerConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::Parse {
                line,
                column,
                message: e.to_string(),
            }
        })?;
        c.validate_globals()?;
        for w in c.warnings() {
            tracing::warn!("{w}");
        }
        Ok(c)
    }

    /// What is valid but has no effect, each naming its field: a score
    /// weight given at an extension point other than `score` or
    /// `multiPoint` (kube-scheduler ignores it there too).
    /// [`SchedulerConfig::from_yaml`] logs each as a warning.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, prof) in self.profiles.iter().enumerate() {
            for point in Point::ALL {
                if point == Point::Score {
                    continue;
                }
                let set = point.set(&prof.plugins);
                for (list, refs) in [("enabled", &set.enabled), ("disabled", &set.disabled)] {
                    for (j, r) in refs.iter().enumerate() {
                        if r.weight.is_some() {
                            out.push(format!(
                                "field `profiles[{i}].plugins.{}.{list}[{j}].weight`: {:?} gets no weight at {}; weights count only under score and multiPoint, so this one is ignored",
                                point.key(),
                                r.name,
                                point.key()
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    fn validate_globals(&self) -> Result<(), ConfigError> {
        if let Some(v) = &self.api_version
            && !matches!(
                v.as_str(),
                "strata.io/v1alpha1" | "kubescheduler.config.k8s.io/v1"
            )
        {
            return Err(invalid(
                "apiVersion",
                format!("{v:?} is not strata.io/v1alpha1 or kubescheduler.config.k8s.io/v1"),
            ));
        }
        if let Some(k) = &self.kind
            && !matches!(
                k.as_str(),
                "StrataSchedulerConfiguration" | "KubeSchedulerConfiguration"
            )
        {
            return Err(invalid(
                "kind",
                format!("{k:?} is not StrataSchedulerConfiguration or KubeSchedulerConfiguration"),
            ));
        }
        let within = |field: &str, v: u64, range: std::ops::RangeInclusive<u64>, unit: &str| {
            if range.contains(&v) {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("{v} is outside {}..={}{unit}", range.start(), range.end()),
                ))
            }
        };
        within(
            "parallelism",
            self.parallelism as u64,
            1..=MAX_PARALLELISM as u64,
            "",
        )?;
        if self.percentage_of_nodes_to_score > 100 {
            return Err(invalid(
                "percentageOfNodesToScore",
                "must be between 0 and 100",
            ));
        }
        within(
            "podInitialBackoffSeconds",
            self.pod_initial_backoff_seconds,
            1..=MAX_SECONDS,
            " seconds",
        )?;
        within(
            "podMaxBackoffSeconds",
            self.pod_max_backoff_seconds,
            0..=MAX_SECONDS,
            " seconds",
        )?;
        if self.pod_max_backoff_seconds < self.pod_initial_backoff_seconds {
            return Err(invalid(
                "podMaxBackoffSeconds",
                "must not be less than podInitialBackoffSeconds",
            ));
        }
        within(
            "podMaxInUnschedulablePodsSeconds",
            self.pod_max_in_unschedulable_pods_seconds,
            0..=MAX_SECONDS,
            " seconds",
        )?;
        within(
            "assumedPodTtlSeconds",
            self.assumed_pod_ttl_seconds,
            0..=MAX_SECONDS,
            " seconds",
        )?;
        within(
            "bindConcurrency",
            self.bind_concurrency as u64,
            1..=MAX_BIND_CONCURRENCY as u64,
            "",
        )?;
        within(
            "equivalenceCacheClasses",
            self.equivalence_cache_classes as u64,
            0..=MAX_EQUIVALENCE_CLASSES as u64,
            "",
        )?;
        crate::extenders::validate_extenders(&self.extenders)?;
        if self.profiles.is_empty() {
            return Err(invalid("profiles", "at least one profile is needed"));
        }
        for (i, p) in self.profiles.iter().enumerate() {
            if p.scheduler_name.is_empty() {
                return Err(invalid(
                    format!("profiles[{i}].schedulerName"),
                    "must not be empty",
                ));
            }
            if self.profiles[..i]
                .iter()
                .any(|q| q.scheduler_name == p.scheduler_name)
            {
                return Err(invalid(
                    format!("profiles[{i}].schedulerName"),
                    format!("{:?} is used by another profile", p.scheduler_name),
                ));
            }
            if let Some(pct) = p.percentage_of_nodes_to_score
                && pct > 100
            {
                return Err(invalid(
                    format!("profiles[{i}].percentageOfNodesToScore"),
                    "must be between 0 and 100",
                ));
            }
        }
        Ok(())
    }

    /// Queue timing from this configuration.
    pub fn queue_settings(&self) -> crate::queue::QueueSettings {
        crate::queue::QueueSettings {
            initial_backoff: Duration::from_secs(self.pod_initial_backoff_seconds),
            max_backoff: Duration::from_secs(self.pod_max_backoff_seconds),
            max_unschedulable_stay: Duration::from_secs(self.pod_max_in_unschedulable_pods_seconds),
        }
    }
}

/// Parses a Go-style duration as kube-scheduler's configuration writes
/// them: `15s`, `500ms`, `1m30s`, `2h`, `1.5s` (units `h`, `m`, `s`, `ms`,
/// `us`/`µs`, `ns`). `None` when the text is not such a duration.
///
/// Never panics: a value past what [`Duration`] holds (hundreds of billions
/// of years) saturates to [`Duration::MAX`], so the caller's range check on
/// the field, not this parser, says it is too long.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        // `value` is finite or +inf (digits and a dot only), never negative.
        let part = Duration::try_from_secs_f64(value * scale).unwrap_or(Duration::MAX);
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// An extension point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Point {
    PreEnqueue,
    QueueSort,
    PreFilter,
    Filter,
    PostFilter,
    PreScore,
    Score,
    Reserve,
    Permit,
    PreBind,
    Bind,
    PostBind,
}

impl Point {
    /// All points, in cycle order.
    pub const ALL: [Point; 12] = [
        Point::PreEnqueue,
        Point::QueueSort,
        Point::PreFilter,
        Point::Filter,
        Point::PostFilter,
        Point::PreScore,
        Point::Score,
        Point::Reserve,
        Point::Permit,
        Point::PreBind,
        Point::Bind,
        Point::PostBind,
    ];

    /// The configuration key.
    pub fn key(self) -> &'static str {
        match self {
            Point::PreEnqueue => "preEnqueue",
            Point::QueueSort => "queueSort",
            Point::PreFilter => "preFilter",
            Point::Filter => "filter",
            Point::PostFilter => "postFilter",
            Point::PreScore => "preScore",
            Point::Score => "score",
            Point::Reserve => "reserve",
            Point::Permit => "permit",
            Point::PreBind => "preBind",
            Point::Bind => "bind",
            Point::PostBind => "postBind",
        }
    }

    /// Whether `p` implements this point.
    pub fn implemented_by(self, p: &dyn Plugin) -> bool {
        match self {
            Point::PreEnqueue => p.as_pre_enqueue().is_some(),
            Point::QueueSort => p.as_queue_sort().is_some(),
            Point::PreFilter => p.as_pre_filter().is_some(),
            Point::Filter => p.as_filter().is_some(),
            Point::PostFilter => p.as_post_filter().is_some(),
            Point::PreScore => p.as_pre_score().is_some(),
            Point::Score => p.as_score().is_some(),
            Point::Reserve => p.as_reserve().is_some(),
            Point::Permit => p.as_permit().is_some(),
            Point::PreBind => p.as_pre_bind().is_some(),
            Point::Bind => p.as_bind().is_some(),
            Point::PostBind => p.as_post_bind().is_some(),
        }
    }

    fn set(self, p: &Plugins) -> &PluginSet {
        match self {
            Point::PreEnqueue => &p.pre_enqueue,
            Point::QueueSort => &p.queue_sort,
            Point::PreFilter => &p.pre_filter,
            Point::Filter => &p.filter,
            Point::PostFilter => &p.post_filter,
            Point::PreScore => &p.pre_score,
            Point::Score => &p.score,
            Point::Reserve => &p.reserve,
            Point::Permit => &p.permit,
            Point::PreBind => &p.pre_bind,
            Point::Bind => &p.bind,
            Point::PostBind => &p.post_bind,
        }
    }
}

/// A plugin instance with the points it runs at in one profile.
#[derive(Clone)]
pub struct ResolvedPlugin {
    /// The instance.
    pub plugin: Arc<dyn Plugin>,
    /// Score weight (meaningful when it scores).
    pub weight: i64,
}

/// A profile with its plugins built and ordered per extension point.
#[derive(Clone)]
pub struct ResolvedProfile {
    /// The scheduler name.
    pub scheduler_name: String,
    /// Plugins per point, in order.
    pub points: BTreeMap<&'static str, Vec<ResolvedPlugin>>,
    /// Share of nodes to evaluate.
    pub percentage_of_nodes_to_score: u32,
}

impl ResolvedProfile {
    /// Plugins at `point`.
    pub fn at(&self, point: Point) -> &[ResolvedPlugin] {
        self.points
            .get(point.key())
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }
}

const MAX_WEIGHT: i64 = 1_000;

/// NodeResourcesFit's configuration name.
const FIT: &str = "NodeResourcesFit";

/// NodeResourcesFit's args with `ignored` added to `ignoredResources`;
/// `None` when nothing is to be added (or the args are not an object,
/// which the plugin's factory then reports).
fn with_ignored_resources(
    args: Option<&serde_json::Value>,
    ignored: &[&str],
) -> Option<serde_json::Value> {
    if ignored.is_empty() {
        return None;
    }
    let mut v = match args {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(v) => v.clone(),
    };
    let obj = v.as_object_mut()?;
    let list = obj
        .entry("ignoredResources")
        .or_insert_with(|| serde_json::json!([]));
    let arr = list.as_array_mut()?;
    for r in ignored {
        if !arr.iter().any(|x| x.as_str() == Some(r)) {
            arr.push(serde_json::Value::String((*r).to_owned()));
        }
    }
    Some(v)
}

/// Builds every profile's plugins. `defaults` is the default plugin set
/// (name, default weight) used as the starting `multiPoint` set.
pub fn resolve(
    cfg: &SchedulerConfig,
    registry: &Registry,
    defaults: &[(&'static str, i64)],
    handle_for: &dyn Fn(&str) -> Handle,
) -> Result<Vec<ResolvedProfile>, ConfigError> {
    cfg.validate_globals()?;
    // Extenders are built by the engine; building them here too checks
    // what only their client can (TLS files), for `check-config`.
    if let Some(factory) = registry.extender_factory() {
        for (i, e) in cfg.extenders.iter().enumerate() {
            factory(i, e)?;
        }
    }
    // Extenders' resources the scheduler ignores: appended to
    // NodeResourcesFit's `ignoredResources`, as kube-scheduler does.
    let ignored: Vec<&str> = cfg
        .extenders
        .iter()
        .flat_map(|e| &e.managed_resources)
        .filter(|r| r.ignored_by_scheduler)
        .map(|r| r.name.as_str())
        .collect();
    let mut out = Vec::new();
    for (pi, prof) in cfg.profiles.iter().enumerate() {
        let base = format!("profiles[{pi}]");
        // pluginConfig: known names, no duplicates.
        let mut args: BTreeMap<&str, &serde_json::Value> = BTreeMap::new();
        for (ci, pc) in prof.plugin_config.iter().enumerate() {
            let f = format!("{base}.pluginConfig[{ci}].name");
            if registry.get(&pc.name).is_none() {
                return Err(invalid(f, format!("unknown plugin {:?}", pc.name)));
            }
            if args.insert(pc.name.as_str(), &pc.args).is_some() {
                return Err(invalid(f, format!("{:?} is configured twice", pc.name)));
            }
        }
        let fit_args = with_ignored_resources(args.get(FIT).copied(), &ignored);
        if let Some(a) = &fit_args {
            args.insert(FIT, a);
        }
        let check_ref = |field: &str, r: &PluginRef, allow_star: bool| -> Result<(), ConfigError> {
            if allow_star && r.name == "*" {
                return Ok(());
            }
            if registry.get(&r.name).is_none() {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("unknown plugin {:?}", r.name),
                ));
            }
            if let Some(w) = r.weight
                && !(1..=MAX_WEIGHT).contains(&w)
            {
                return Err(invalid(
                    format!("{field}.weight"),
                    format!("{w} is outside 1..={MAX_WEIGHT}"),
                ));
            }
            Ok(())
        };
        // multiPoint: defaults minus disabled, then enabled.
        let mp = &prof.plugins.multi_point;
        let mut multi: Vec<(String, i64)> = Vec::new();
        let star = mp.disabled.iter().any(|d| d.name == "*");
        for (di, d) in mp.disabled.iter().enumerate() {
            check_ref(
                &format!("{base}.plugins.multiPoint.disabled[{di}]"),
                d,
                true,
            )?;
        }
        if !star {
            for (n, w) in defaults {
                if !mp.disabled.iter().any(|d| d.name == *n) {
                    multi.push(((*n).to_owned(), *w));
                }
            }
        }
        for (ei, e) in mp.enabled.iter().enumerate() {
            check_ref(
                &format!("{base}.plugins.multiPoint.enabled[{ei}]"),
                e,
                false,
            )?;
            let w = e.weight.unwrap_or_else(|| {
                defaults
                    .iter()
                    .find(|(n, _)| *n == e.name)
                    .map(|(_, w)| *w)
                    .unwrap_or(0)
            });
            if let Some(x) = multi.iter_mut().find(|(n, _)| *n == e.name) {
                x.1 = w;
            } else {
                multi.push((e.name.clone(), w));
            }
        }
        // Instances, one per name.
        let mut instances: BTreeMap<String, Arc<dyn Plugin>> = BTreeMap::new();
        let handle = handle_for(&prof.scheduler_name);
        let mut instance = |name: &str| -> Result<Arc<dyn Plugin>, ConfigError> {
            if let Some(p) = instances.get(name) {
                return Ok(p.clone());
            }
            let factory = registry.get(name).ok_or_else(|| {
                invalid(
                    format!("{base}.plugins"),
                    format!("unknown plugin {name:?}"),
                )
            })?;
            let a = args.get(name).copied().filter(|v| !v.is_null());
            let p = factory(a, &handle).map_err(|e| {
                let ci = prof
                    .plugin_config
                    .iter()
                    .position(|c| c.name == name)
                    .unwrap_or(0);
                let field = match e.field.as_str() {
                    "" | "args" => format!("{base}.pluginConfig[{ci}].args"),
                    f => format!(
                        "{base}.pluginConfig[{ci}].args.{}",
                        f.strip_prefix("args.").unwrap_or(f)
                    ),
                };
                invalid(field, e.message)
            })?;
            instances.insert(name.to_owned(), p.clone());
            Ok(p)
        };
        let mut points: BTreeMap<&'static str, Vec<ResolvedPlugin>> = BTreeMap::new();
        for point in Point::ALL {
            let set = point.set(&prof.plugins);
            let field = format!("{base}.plugins.{}", point.key());
            let star = set.disabled.iter().any(|d| d.name == "*");
            for (di, d) in set.disabled.iter().enumerate() {
                check_ref(&format!("{field}.disabled[{di}]"), d, true)?;
            }
            let mut list: Vec<ResolvedPlugin> = Vec::new();
            if !star {
                for (n, w) in &multi {
                    if set.disabled.iter().any(|d| &d.name == n) {
                        continue;
                    }
                    let p = instance(n)?;
                    if point.implemented_by(p.as_ref()) {
                        list.push(ResolvedPlugin {
                            plugin: p,
                            weight: (*w).max(1),
                        });
                    }
                }
            }
            for (ei, e) in set.enabled.iter().enumerate() {
                let ef = format!("{field}.enabled[{ei}]");
                check_ref(&ef, e, false)?;
                let p = instance(&e.name)?;
                if !point.implemented_by(p.as_ref()) {
                    return Err(invalid(
                        format!("{ef}.name"),
                        format!(
                            "plugin {:?} does not implement the {} extension point",
                            e.name,
                            point.key()
                        ),
                    ));
                }
                list.retain(|r| r.plugin.name() != e.name);
                let w = e
                    .weight
                    .or_else(|| multi.iter().find(|(n, _)| *n == e.name).map(|(_, w)| *w))
                    .unwrap_or(1)
                    .max(1);
                list.push(ResolvedPlugin {
                    plugin: p,
                    weight: w,
                });
            }
            points.insert(point.key(), list);
        }
        // Node observers follow multiPoint (they are not a configurable point).
        let mut observers = Vec::new();
        for (n, _) in &multi {
            let p = instance(n)?;
            if p.as_node_observer().is_some() {
                observers.push(ResolvedPlugin {
                    plugin: p,
                    weight: 0,
                });
            }
        }
        points.insert("nodeObserver", observers);
        // Args of configured but unused plugins are still checked, so a typo
        // is reported at start-up rather than when someone enables it.
        for pc in &prof.plugin_config {
            instance(&pc.name)?;
        }
        let qs = points.get("queueSort").map(|v| v.len()).unwrap_or(0);
        if qs != 1 {
            return Err(invalid(
                format!("{base}.plugins.queueSort"),
                format!("exactly one QueueSort plugin is needed, found {qs}"),
            ));
        }
        if points.get("bind").is_none_or(|v| v.is_empty()) {
            return Err(invalid(
                format!("{base}.plugins.bind"),
                "at least one Bind plugin is needed",
            ));
        }
        out.push(ResolvedProfile {
            scheduler_name: prof.scheduler_name.clone(),
            points,
            percentage_of_nodes_to_score: match prof
                .percentage_of_nodes_to_score
                .unwrap_or(cfg.percentage_of_nodes_to_score)
            {
                0 => 100,
                p => p,
            },
        });
    }
    let sort_of = |p: &ResolvedProfile| p.at(Point::QueueSort)[0].plugin.name();
    if let Some(first) = out.first() {
        for (i, p) in out.iter().enumerate().skip(1) {
            if sort_of(p) != sort_of(first) {
                return Err(invalid(
                    format!("profiles[{i}].plugins.queueSort"),
                    "every profile must use the same QueueSort plugin",
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    /// NodeResourcesFit's args get the extenders' ignoredByScheduler
    /// resources, once, beside those configured.
    #[test]
    fn ignored_by_scheduler_reaches_node_resources_fit() {
        assert_eq!(with_ignored_resources(None, &[]), None);
        assert_eq!(
            with_ignored_resources(None, &["a.io/x"]),
            Some(serde_json::json!({"ignoredResources": ["a.io/x"]}))
        );
        let given =
            serde_json::json!({"ignoredResources": ["a.io/x", "b.io/y"], "scoringStrategy": {}});
        assert_eq!(
            with_ignored_resources(Some(&given), &["a.io/x", "c.io/z"]),
            Some(
                serde_json::json!({"ignoredResources": ["a.io/x", "b.io/y", "c.io/z"], "scoringStrategy": {}})
            )
        );
        let cfg = SchedulerConfig::from_yaml(
            "extenders: [{urlPrefix: 'http://x', preemptVerb: preempt}]",
        )
        .unwrap();
        // Preemption consults it (DefaultPreemption): nothing to warn about.
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    }

    /// A weight outside score and multiPoint is valid but ignored, and
    /// said so, naming the field; weights where they count are not.
    #[test]
    fn weights_where_they_do_not_count_are_warned_about() {
        let cfg = SchedulerConfig::from_yaml(
            "profiles: [{schedulerName: s, plugins: {filter: {enabled: [{name: NodeName, weight: 5}]}, score: {enabled: [{name: ImageLocality, weight: 3}]}, multiPoint: {enabled: [{name: NodeAffinity, weight: 2}]}}}]",
        )
        .unwrap();
        let w = cfg.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("profiles[0].plugins.filter.enabled[0].weight"),
            "{w:?}"
        );
    }
    use super::*;

    fn field_of(yaml: &str) -> String {
        match SchedulerConfig::from_yaml(yaml) {
            Err(ConfigError::Invalid { field, message }) => {
                assert!(
                    message.contains("outside") || message.contains("must"),
                    "{yaml}: {message}"
                );
                field
            }
            Err(e) => format!("parse error: {e}"),
            Ok(_) => "accepted".to_owned(),
        }
    }

    /// Numbers that overflowed a clock or a semaphore (exit 101) or were
    /// silently accepted are refused, naming the field.
    #[test]
    fn out_of_range_numbers_name_the_field() {
        let max = u64::MAX;
        let cases = [
            (
                format!("bindConcurrency: {}", (1u64 << 61) + 1),
                "bindConcurrency",
            ),
            (format!("bindConcurrency: {max}"), "bindConcurrency"),
            ("bindConcurrency: 65537".to_owned(), "bindConcurrency"),
            (
                format!("podInitialBackoffSeconds: {max}\npodMaxBackoffSeconds: {max}"),
                "podInitialBackoffSeconds",
            ),
            (
                format!("podMaxBackoffSeconds: {max}"),
                "podMaxBackoffSeconds",
            ),
            (
                format!("podMaxInUnschedulablePodsSeconds: {max}"),
                "podMaxInUnschedulablePodsSeconds",
            ),
            (
                "podMaxInUnschedulablePodsSeconds: 31536001".to_owned(),
                "podMaxInUnschedulablePodsSeconds",
            ),
            (
                format!("assumedPodTtlSeconds: {max}"),
                "assumedPodTtlSeconds",
            ),
            (format!("parallelism: {max}"), "parallelism"),
            ("parallelism: 1025".to_owned(), "parallelism"),
            (
                format!("equivalenceCacheClasses: {max}"),
                "equivalenceCacheClasses",
            ),
        ];
        for (yaml, field) in &cases {
            assert_eq!(field_of(yaml), *field, "{yaml}");
        }
        // Negative, fractional, NaN and infinite values are shape errors
        // (the fields are whole numbers), never accepted.
        for yaml in [
            "assumedPodTtlSeconds: -1",
            "podInitialBackoffSeconds: 1.5",
            "podMaxInUnschedulablePodsSeconds: .nan",
            "bindConcurrency: .inf",
            "assumedPodTtlSeconds: 1e300",
        ] {
            assert!(field_of(yaml).starts_with("parse error"), "{yaml}");
        }
        // The bounds themselves are fine.
        let ok = format!(
            "podInitialBackoffSeconds: {MAX_SECONDS}\npodMaxBackoffSeconds: {MAX_SECONDS}\npodMaxInUnschedulablePodsSeconds: {MAX_SECONDS}\nassumedPodTtlSeconds: {MAX_SECONDS}\nbindConcurrency: {MAX_BIND_CONCURRENCY}\nparallelism: {MAX_PARALLELISM}"
        );
        SchedulerConfig::from_yaml(&ok).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in [
            "15", "s", "3d", ".s", "1..5s", "-1s", "1e3s", "NaNs", "infs", "",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        // Past what a Duration holds: saturates (the field's range check
        // rejects it), where it used to panic.
        assert_eq!(
            parse_duration("99999999999999999999999h"),
            Some(Duration::MAX)
        );
        assert_eq!(parse_duration(&"9".repeat(400)), None);
        assert_eq!(
            parse_duration(&format!("{}s", "9".repeat(400))),
            Some(Duration::MAX)
        );
        assert_eq!(
            parse_duration(&format!("{max}s{max}s", max = u64::MAX)),
            Some(Duration::MAX)
        );
    }

    proptest::proptest! {
        /// No text makes the duration parser panic.
        #[test]
        fn parse_duration_never_panics(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
        }

        /// Nor does any text shaped like a duration, however large.
        #[test]
        fn parse_duration_never_panics_on_numbers(
            parts in proptest::collection::vec(("[0-9.]{1,30}", "(h|m|s|ms|us|µs|ns|x)"), 1..5)
        ) {
            let s: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
            let _ = parse_duration(&s);
        }

        /// Whole seconds read back exactly.
        #[test]
        fn whole_seconds_round_trip(n in 0u64..1_000_000_000) {
            proptest::prop_assert_eq!(parse_duration(&format!("{n}s")), Some(Duration::from_secs(n)));
        }
    }
}
