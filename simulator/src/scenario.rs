//! Scenario files: the cluster to simulate and the pods to schedule on it.
//!
//! A scenario is YAML:
//!
//! ```yaml
//! name: small
//! seed: 7                      # engine tie-breaking; `--seed` overrides it
//! config: |                    # optional KubeSchedulerConfiguration (text or mapping)
//!   profiles: [{schedulerName: default-scheduler}]
//! nodePools:
//!   - name: general
//!     count: 24
//!     allocatable: {cpu: "4", memory: 32Gi, pods: "110"}
//!     labels: {topology.kubernetes.io/zone: "zone-{index%3}"}
//!     taints: [{key: dedicated, value: infra, effect: NoSchedule}]
//!     images: [{names: ["registry.k8s.io/pause:3.10"], sizeBytes: 300000}]
//! workloads:
//!   - name: plain
//!     count: 100
//!     arrival: burst           # or {rate: 50} pods per virtual second
//!     start: 0                 # virtual seconds before the first arrival
//!     template: {metadata: {labels: {app: plain}}, spec: {containers: [...]}}
//! dra:                         # optional DRA objects, see `crate::dra`
//!   deviceClasses: [...]
//!   nodeDevices: [{nodePool: general, driver: gpu.example.com, devices: [{name: gpu, count: 4}]}]
//!   resourceClaims: [...]
//!   resourceClaimTemplates: [...]
//! ```
//!
//! Invariants: a [`Scenario`] that parsed is valid — every pattern parsed,
//! every quantity and taint effect known, every pod template compiled, names
//! unique — so generating nodes and pods from it cannot fail. Every error
//! names the file, the line and column when the YAML parser knows them, and
//! the field path (`workloads[2].template.spec...`); nothing panics on bad
//! input. Unknown keys are errors, so a misspelt field is not silently
//! ignored.

use crate::pattern::{NodeSlot, Pattern};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{self, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use strata_scheduler::config::ConfigError;
use strata_scheduler::framework::Registry;
use strata_scheduler::model::PodInfo;
use strata_scheduler::resources::ResourceVec;

/// The latest virtual time a pod may arrive at, in seconds: one year (the
/// scheduler's own bound on every `...Seconds` setting). Arrival times
/// become [`Duration`]s and are added to the virtual clock.
pub const MAX_VIRTUAL_SECONDS: u64 = strata_scheduler::config::MAX_SECONDS;
/// The most nodes a scenario may create (all pools together).
pub const MAX_NODES: usize = 1 << 20;
/// The most pods a scenario may create (all workloads together).
pub const MAX_PODS: usize = 1 << 22;

/// A number for a message: `1e300`, not three hundred digits.
fn readable(v: f64) -> String {
    if v != 0.0 && !(1e-6..1e12).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// The built-in scenarios, by name, embedded in the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    ("small", include_str!("../scenarios/small.yaml")),
    ("demo", include_str!("../scenarios/demo.yaml")),
    ("basic-1k", include_str!("../scenarios/basic-1k.yaml")),
    ("basic-4k", include_str!("../scenarios/basic-4k.yaml")),
    ("basic-16k", include_str!("../scenarios/basic-16k.yaml")),
    ("gangs-small", include_str!("../scenarios/gangs-small.yaml")),
    ("dra-small", include_str!("../scenarios/dra-small.yaml")),
    ("dra-8k", include_str!("../scenarios/dra-8k.yaml")),
    (
        "supernode-16k",
        include_str!("../scenarios/supernode-16k.yaml"),
    ),
    ("services-1k", include_str!("../scenarios/services-1k.yaml")),
    ("services-4k", include_str!("../scenarios/services-4k.yaml")),
    (
        "services-16k",
        include_str!("../scenarios/services-16k.yaml"),
    ),
    (
        "training-20k-cards",
        include_str!("../scenarios/training-20k-cards.yaml"),
    ),
];

/// The text of built-in scenario `name`.
pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// A scenario that cannot be read or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: {error}")]
    Read {
        /// The path given.
        file: String,
        /// Why (not a `source`: the message already includes it).
        error: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{}", display_invalid(file, *line, *column, field, message))]
    Invalid {
        /// The path (or `builtin:NAME`).
        file: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// Field path, e.g. `workloads[1].count`; empty for the whole file.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn display_invalid(
    file: &str,
    line: Option<usize>,
    column: Option<usize>,
    field: &str,
    message: &str,
) -> String {
    let mut s = file.to_owned();
    if let Some(l) = line {
        s.push_str(&format!(":{l}"));
        if let Some(c) = column {
            s.push_str(&format!(":{c}"));
        }
    }
    if !field.is_empty() && field != "." {
        s.push_str(&format!(": field `{field}`"));
    }
    s.push_str(": ");
    s.push_str(message);
    s
}

/// A parsed, validated scenario.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// Name, for the report.
    pub name: String,
    /// Seed for the engine's tie-breaking.
    #[serde(default)]
    pub seed: u64,
    /// Scheduler configuration (KubeSchedulerConfiguration-shaped YAML);
    /// `None` runs one profile named `default-scheduler` with the default
    /// plugins.
    #[serde(default)]
    pub config: Option<ConfigText>,
    /// Node pools, created in order before any pod arrives.
    pub node_pools: Vec<NodePool>,
    /// Workloads: pods stamped out of templates.
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// DRA objects (DeviceClasses, ResourceSlices, ResourceClaims,
    /// ResourceClaimTemplates) the simulator puts in the DRA store.
    #[serde(default)]
    pub dra: Option<crate::dra::DraSection>,
    /// Where the scenario came from (a path or `builtin:NAME`).
    #[serde(skip)]
    pub source: String,
    /// Fields of pod templates that the Pod type does not have (kept for
    /// [`Scenario::warnings`]; the pod is built without them).
    #[serde(skip)]
    pub ignored_fields: Vec<String>,
}

/// Scheduler configuration text, given inline as a string or a mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigText(pub String);

impl<'de> Deserialize<'de> for ConfigText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml_ng::Value::deserialize(d)?;
        match v {
            serde_yaml_ng::Value::String(s) => Ok(ConfigText(s)),
            serde_yaml_ng::Value::Mapping(_) => serde_yaml_ng::to_string(&v)
                .map(ConfigText)
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "expected the scheduler configuration as YAML text or a mapping",
            )),
        }
    }
}

/// A group of nodes alike except for their per-index labels.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePool {
    /// Pool name; node `i` is named `{name}-{i}`.
    pub name: String,
    /// How many nodes.
    pub count: u32,
    /// `status.allocatable` (also reported as capacity).
    pub allocatable: Allocatable,
    /// Labels; values may hold placeholders. `kubernetes.io/hostname` is set
    /// to the node name unless given.
    #[serde(default)]
    pub labels: BTreeMap<String, Pattern>,
    /// Taints; values may hold placeholders.
    #[serde(default)]
    pub taints: Vec<TaintSpec>,
    /// Images present on every node of the pool.
    #[serde(default)]
    pub images: Vec<ImageSpec>,
    /// Whether the nodes are cordoned.
    #[serde(default)]
    pub unschedulable: bool,
    /// Annotations; values may hold placeholders (e.g. a device inventory
    /// `strata.io/devices` naming each node's devices after `{name}`).
    #[serde(default)]
    pub annotations: BTreeMap<String, Pattern>,
}

/// Validated allocatable quantities.
#[derive(Clone, Debug)]
pub struct Allocatable(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Allocatable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<String, QuantityText>::deserialize(d)?;
        let mut probe = ResourceVec::default();
        for (k, v) in &m {
            probe
                .set_quantity(k, &v.0)
                .map_err(|e| de::Error::custom(format!("{k}: {e}")))?;
            if let Ok(id) = strata_scheduler::resources::ResourceId::of(k)
                && probe[id] < 0
            {
                return Err(de::Error::custom(format!("{k}: {:?} is negative", v.0)));
            }
        }
        Ok(Allocatable(m.into_iter().map(|(k, v)| (k, v.0)).collect()))
    }
}

/// A quantity written as a string or a bare number.
struct QuantityText(String);

impl<'de> Deserialize<'de> for QuantityText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = QuantityText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"4\", \"500m\" or \"32Gi\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<QuantityText, E> {
                Ok(QuantityText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A node taint in a pool.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaintSpec {
    /// Key.
    pub key: String,
    /// Value; may hold placeholders.
    #[serde(default)]
    pub value: Option<Pattern>,
    /// Effect.
    pub effect: Effect,
}

/// A taint effect, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Effect {
    /// NoSchedule.
    NoSchedule,
    /// PreferNoSchedule.
    PreferNoSchedule,
    /// NoExecute.
    NoExecute,
}

impl Effect {
    fn as_str(self) -> &'static str {
        match self {
            Effect::NoSchedule => "NoSchedule",
            Effect::PreferNoSchedule => "PreferNoSchedule",
            Effect::NoExecute => "NoExecute",
        }
    }
}

/// An image on the nodes of a pool.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageSpec {
    /// Names (tags, digests).
    pub names: Vec<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: i64,
}

/// Pods stamped out of one template.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    /// Name; pod `i` is named `{name}-{i}`.
    pub name: String,
    /// How many pods.
    pub count: u32,
    /// When they arrive.
    #[serde(default)]
    pub arrival: Arrival,
    /// Virtual seconds after the start before the first pod arrives.
    #[serde(default)]
    pub start: Seconds,
    /// The pod, as a Kubernetes Pod manifest (name and uid are ignored).
    pub template: PodTemplate,
    /// Puts every `size` consecutive pods into one PodGroup (label
    /// `strata.io/pod-group: {name}-{i / size}`).
    #[serde(default)]
    pub group: Option<crate::groups::WorkloadGroup>,
}

/// Non-negative, finite seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Seconds(pub f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if !v.is_finite() || v < 0.0 {
            return Err(de::Error::custom(format!(
                "expected non-negative seconds, got {v}"
            )));
        }
        Ok(Seconds(v))
    }
}

/// How a workload's pods arrive, in virtual time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Arrival {
    /// All at once.
    #[default]
    Burst,
    /// Evenly spaced, this many per second.
    Rate(f64),
}

impl<'de> Deserialize<'de> for Arrival {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Arrival;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`burst` or `{rate: N}` (pods per virtual second)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Arrival, E> {
                match v {
                    "burst" => Ok(Arrival::Burst),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Arrival, A::Error> {
                let mut rate = None;
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "rate" => rate = Some(map.next_value::<f64>()?),
                        other => return Err(de::Error::unknown_field(other, &["rate"])),
                    }
                }
                match rate {
                    Some(r) if r.is_finite() && r > 0.0 => Ok(Arrival::Rate(r)),
                    Some(r) => Err(de::Error::custom(format!(
                        "rate must be a positive number of pods per second, got {r}"
                    ))),
                    None => Err(de::Error::missing_field("rate")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A pod template: the manifest and its compiled form.
#[derive(Clone, Debug)]
pub struct PodTemplate {
    /// The manifest as written.
    pub pod: Arc<corev1::Pod>,
    /// Compiled once; pods are stamped out of it with
    /// [`PodInfo::with_identity`].
    pub compiled: Arc<PodInfo>,
}

impl<'de> Deserialize<'de> for PodTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Compile inside the visitor, so the parser attributes a compile
        // error to the template's own position in the file.
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = PodTemplate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Pod manifest (metadata, spec)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<PodTemplate, A::Error> {
                let mut pod = corev1::Pod::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let md = &mut pod.metadata;
                if md.name.is_none() {
                    md.name = Some("template".into());
                }
                if md.namespace.is_none() {
                    md.namespace = Some("default".into());
                }
                let compiled = PodInfo::compile(&pod)
                    .map_err(|e| de::Error::custom(format!("{}: {}", e.field, e.message)))?;
                Ok(PodTemplate {
                    pod: Arc::new(pod),
                    compiled: Arc::new(compiled),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// One pod arriving at a virtual time.
#[derive(Clone, Debug)]
pub struct PodArrival {
    /// Virtual time since the start.
    pub at: Duration,
    /// Index of its workload in [`Scenario::workloads`].
    pub workload: usize,
    /// The pod (unbound).
    pub pod: Arc<PodInfo>,
}

impl Scenario {
    /// Parses scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_with(text, file, &Registry::new())
    }

    /// As [`Scenario::parse`], checking the scenario's configuration with
    /// `plugins` added to the in-tree ones (so it may enable them).
    pub fn parse_with(
        text: &str,
        file: &str,
        plugins: &Registry,
    ) -> Result<Scenario, ScenarioError> {
        // The untyped tree first: it refuses a key given twice in one
        // mapping (`{cpu: 1, cpu: 2}`), which the typed maps of the Pod
        // type would take silently, keeping the last.
        let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let loc = e.location();
            ScenarioError::Invalid {
                file: file.to_owned(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: clean_yaml_message(&e.to_string(), ""),
                field: String::new(),
            }
        })?;
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut sc: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let loc = inner.location();
            ScenarioError::Invalid {
                file: file.to_owned(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: clean_yaml_message(&inner.to_string(), &field),
                field,
            }
        })?;
        sc.source = file.to_owned();
        sc.ignored_fields = sc.unknown_template_fields(&tree);
        sc.validate()?;
        if let Some(cfg) = &sc.config
            && let Err(e) = crate::config_check::validate_config_with(&cfg.0, plugins)
        {
            return Err(config_error(text, file, e));
        }
        Ok(sc)
    }

    /// Reads a scenario from a file path, or takes the built-in one of that
    /// name when no such file exists.
    pub fn load(path_or_name: &str) -> Result<Scenario, ScenarioError> {
        Scenario::load_with(path_or_name, &Registry::new())
    }

    /// As [`Scenario::load`], with `plugins` added to the in-tree ones (see
    /// [`Scenario::parse_with`]).
    pub fn load_with(path_or_name: &str, plugins: &Registry) -> Result<Scenario, ScenarioError> {
        let path = std::path::Path::new(path_or_name);
        if !path.exists()
            && let Some(text) = builtin(path_or_name)
        {
            return Scenario::parse_with(text, &format!("builtin:{path_or_name}"), plugins);
        }
        let text = std::fs::read_to_string(path).map_err(|source| {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            ScenarioError::Read {
                file: path_or_name.to_owned(),
                error: if source.kind() == std::io::ErrorKind::NotFound {
                    std::io::Error::new(
                        source.kind(),
                        format!(
                            "no such file, and not a built-in scenario (built-ins: {})",
                            names.join(", ")
                        ),
                    )
                } else {
                    source
                },
            }
        })?;
        Scenario::parse_with(&text, path_or_name, plugins)
    }

    fn invalid(&self, field: String, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.source.clone(),
            line: None,
            column: None,
            field,
            message,
        }
    }

    /// Cross-field checks the deserializer cannot make.
    fn validate(&self) -> Result<(), ScenarioError> {
        if self.node_pools.is_empty() {
            return Err(self.invalid(
                "nodePools".into(),
                "at least one node pool is needed".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.node_pools.iter().enumerate() {
            if p.name.is_empty() || !seen.insert(p.name.as_str()) {
                return Err(self.invalid(
                    format!("nodePools[{i}].name"),
                    format!("pool names must be unique and non-empty ({:?})", p.name),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            if w.name.is_empty() || !seen.insert(w.name.as_str()) {
                return Err(self.invalid(
                    format!("workloads[{i}].name"),
                    format!("workload names must be unique and non-empty ({:?})", w.name),
                ));
            }
        }
        for (i, p) in self.node_pools.iter().enumerate() {
            for key in p.labels.keys().chain(p.annotations.keys()) {
                let what = if p.labels.contains_key(key) {
                    "labels"
                } else {
                    "annotations"
                };
                if let Err(why) = strata_scheduler::labels::check_qualified_name(key) {
                    return Err(self.invalid(
                        format!("nodePools[{i}].{what}"),
                        format!("key {why} (a key is [prefix/]name, as the API server requires)"),
                    ));
                }
            }
            for (j, t) in p.taints.iter().enumerate() {
                if let Err(why) = strata_scheduler::labels::check_qualified_name(&t.key) {
                    return Err(self.invalid(format!("nodePools[{i}].taints[{j}].key"), why));
                }
            }
        }
        for (i, w) in self.workloads.iter().enumerate() {
            // A pod bound in its template skips the scheduler; one bound to
            // a node the scenario does not have was counted as scheduled.
            if let Some(n) = w
                .template
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                && !n.is_empty()
                && !self.has_node(n)
            {
                return Err(self.invalid(
                    format!("workloads[{i}].template.spec.nodeName"),
                    format!("no node named {n:?} (node i of pool p is named p-i)"),
                ));
            }
        }
        self.validate_numbers()?;
        self.validate_groups()?;
        self.validate_dra()?;
        for (i, w) in self.workloads.iter().enumerate() {
            // The API server refuses a pod without containers.
            if w.template
                .pod
                .spec
                .as_ref()
                .is_none_or(|s| s.containers.is_empty())
            {
                return Err(self.invalid(
                    format!("workloads[{i}].template.spec.containers"),
                    "a pod needs at least one container".into(),
                ));
            }
        }
        Ok(())
    }

    /// Sizes and times: what the simulator allocates and what it adds to
    /// its virtual clock stays bounded.
    fn validate_numbers(&self) -> Result<(), ScenarioError> {
        let mut nodes = 0usize;
        for (i, p) in self.node_pools.iter().enumerate() {
            nodes += p.count as usize;
            if nodes > MAX_NODES {
                return Err(self.invalid(
                    format!("nodePools[{i}].count"),
                    format!(
                        "{} brings the scenario to {nodes} nodes; at most {MAX_NODES} are allowed",
                        p.count
                    ),
                ));
            }
            for (j, im) in p.images.iter().enumerate() {
                if im.size_bytes < 0 {
                    return Err(self.invalid(
                        format!("nodePools[{i}].images[{j}].sizeBytes"),
                        format!("{} is negative", im.size_bytes),
                    ));
                }
            }
        }
        let mut pods = 0usize;
        let horizon = MAX_VIRTUAL_SECONDS as f64;
        for (i, w) in self.workloads.iter().enumerate() {
            pods += w.count as usize;
            if pods > MAX_PODS {
                return Err(self.invalid(
                    format!("workloads[{i}].count"),
                    format!(
                        "{} brings the scenario to {pods} pods; at most {MAX_PODS} are allowed",
                        w.count
                    ),
                ));
            }
            if w.start.0 > horizon {
                return Err(self.invalid(
                    format!("workloads[{i}].start"),
                    format!(
                        "{} seconds is past the latest arrival time, {MAX_VIRTUAL_SECONDS} seconds (one year)",
                        readable(w.start.0)
                    ),
                ));
            }
            if let Arrival::Rate(r) = w.arrival {
                let last = w.start.0 + f64::from(w.count.saturating_sub(1)) / r;
                if !last.is_finite() || last > horizon {
                    return Err(self.invalid(
                        format!("workloads[{i}].arrival.rate"),
                        format!(
                            "at {} pods per second the last of {} pods would arrive at {} seconds, past the latest arrival time, {MAX_VIRTUAL_SECONDS} seconds (one year)",
                            readable(r),
                            w.count,
                            readable(last)
                        ),
                    ));
                }
            }
            if let Some(g) = &w.group
                && g.size == 0
            {
                return Err(self.invalid(
                    format!("workloads[{i}].group.size"),
                    "must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }

    /// A group whose `minMember` (or a subgroup's) is more than the pods
    /// the scenario ever puts in it could never be placed: its members
    /// would wait at PreEnqueue forever, never attempted. Say so up front.
    fn validate_groups(&self) -> Result<(), ScenarioError> {
        use strata_plugins::pod_group::PodGroupSpec;
        // Most members one group of each name can get: `size` pods from
        // every workload that feeds groups of that name (fewer when the
        // workload has fewer pods).
        let mut room: BTreeMap<&str, u64> = BTreeMap::new();
        for w in &self.workloads {
            if let Some(g) = &w.group {
                *room.entry(g.name.as_str()).or_default() += u64::from(g.size.min(w.count));
            }
        }
        use strata_plugins::pod_group::spec as ann_keys;
        for (i, w) in self.workloads.iter().enumerate() {
            let Some(ann) = &w.template.pod.metadata.annotations else {
                continue;
            };
            let field = format!("workloads[{i}].template.metadata.annotations");
            let Some(g) = &w.group else {
                // Group annotations act only on pods in a group: without
                // `group` (or a group label) they were ignored silently.
                let labels = w.template.pod.metadata.labels.as_ref();
                let labelled = labels.is_some_and(|l| {
                    l.contains_key(crate::groups::GROUP_LABEL)
                        || l.contains_key(crate::groups::COSCHEDULING_LABEL)
                });
                let group_keys = [
                    ann_keys::ANN_MIN_MEMBER,
                    ann_keys::ANN_TIMEOUT,
                    ann_keys::ANN_REQUIRED_LEVEL,
                    ann_keys::ANN_PREFERRED_LEVEL,
                    ann_keys::ANN_SUBGROUPS,
                    ann_keys::ANN_SPREAD,
                ];
                if !labelled && let Some(k) = group_keys.iter().find(|k| ann.contains_key(**k)) {
                    return Err(self.invalid(
                        field,
                        format!(
                            "{k} has no effect: the workload's pods are in no group (give the workload a `group`, or the template a {} label)",
                            crate::groups::GROUP_LABEL
                        ),
                    ));
                }
                continue;
            };
            let spec = match PodGroupSpec::from_annotations(ann) {
                None => continue,
                Some(Ok(spec)) => spec,
                Some(Err(e)) => return Err(self.invalid(field, e.to_string())),
            };
            let most = room.get(g.name.as_str()).copied().unwrap_or(0);
            let never = |what: String, need: u32| {
                self.invalid(
                    field.clone(),
                    format!(
                        "{what} is {need}, but the scenario puts at most {most} pods in each {:?} group: it could never be placed",
                        g.name
                    ),
                )
            };
            if u64::from(spec.min_member) > most {
                return Err(never(
                    strata_plugins::pod_group::spec::ANN_MIN_MEMBER.to_owned(),
                    spec.min_member,
                ));
            }
            for sg in &spec.subgroups {
                if u64::from(sg.min_member) > most {
                    return Err(never(
                        format!("subgroup {:?}'s minMember", sg.name),
                        sg.min_member,
                    ));
                }
            }
        }
        Ok(())
    }

    /// DRA cross-references: node pools and nodes the slices name, unique
    /// object names, and the claims and templates workloads name.
    fn validate_dra(&self) -> Result<(), ScenarioError> {
        let empty = crate::dra::DraSection::default();
        let d = self.dra.as_ref().unwrap_or(&empty);
        fn unique(
            names: impl Iterator<Item = String>,
            field: &str,
            sc: &Scenario,
        ) -> Result<(), ScenarioError> {
            let mut seen = std::collections::BTreeSet::new();
            for (i, n) in names.enumerate() {
                if !seen.insert(n.clone()) {
                    return Err(sc.invalid(
                        format!("dra.{field}[{i}].metadata.name"),
                        format!("{n:?} is defined twice"),
                    ));
                }
            }
            Ok(())
        }
        unique(
            d.device_classes.iter().map(|c| c.name().to_owned()),
            "deviceClasses",
            self,
        )?;
        unique(
            d.resource_slices.iter().map(|c| c.name().to_owned()),
            "resourceSlices",
            self,
        )?;
        unique(
            d.resource_claims
                .iter()
                .map(|c| format!("{}/{}", c.namespace(), c.name())),
            "resourceClaims",
            self,
        )?;
        unique(
            d.resource_claim_templates
                .iter()
                .map(|c| format!("{}/{}", c.namespace(), c.name())),
            "resourceClaimTemplates",
            self,
        )?;
        for (i, nd) in d.node_devices.iter().enumerate() {
            if !self.node_pools.iter().any(|p| p.name == nd.node_pool) {
                return Err(self.invalid(
                    format!("dra.nodeDevices[{i}].nodePool"),
                    format!("no node pool named {:?}", nd.node_pool),
                ));
            }
        }
        for (i, s) in d.resource_slices.iter().enumerate() {
            if let Some(n) = s.0.spec.node_name.as_deref()
                && !self.has_node(n)
            {
                return Err(self.invalid(
                    format!("dra.resourceSlices[{i}].spec.nodeName"),
                    format!("no node named {n:?} in the node pools"),
                ));
            }
        }
        for (wi, w) in self.workloads.iter().enumerate() {
            let ns = w.template.compiled.namespace.as_str();
            let refs = w.template.compiled.spec.raw.resource_claims.as_deref();
            for (ri, r) in refs.unwrap_or(&[]).iter().enumerate() {
                let field = format!("workloads[{wi}].template.spec.resourceClaims[{ri}]");
                let (what, name, known) =
                    match (&r.resource_claim_name, &r.resource_claim_template_name) {
                        (Some(n), _) => (
                            "ResourceClaim",
                            n,
                            d.resource_claims
                                .iter()
                                .any(|c| c.namespace() == ns && c.name() == n),
                        ),
                        (None, Some(t)) => (
                            "ResourceClaimTemplate",
                            t,
                            d.resource_claim_templates
                                .iter()
                                .any(|c| c.namespace() == ns && c.name() == t),
                        ),
                        (None, None) => {
                            return Err(self.invalid(
                                field,
                                "names neither resourceClaimName nor resourceClaimTemplateName"
                                    .into(),
                            ));
                        }
                    };
                if !known {
                    return Err(self.invalid(
                        field,
                        format!("no {what} {ns}/{name} in the scenario's `dra` section"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a node pool makes a node called `name` (`{pool}-{index}`).
    fn has_node(&self, name: &str) -> bool {
        self.node_pools.iter().any(|p| {
            name.strip_prefix(p.name.as_str())
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|i| i.parse::<u32>().ok())
                .is_some_and(|i| i < p.count && name == format!("{}-{i}", p.name))
        })
    }

    /// The node names of pool `name`, in index order.
    pub fn pool_node_names(&self, name: &str) -> Vec<String> {
        self.node_pools
            .iter()
            .filter(|p| p.name == name)
            .flat_map(|p| (0..p.count).map(move |i| format!("{}-{i}", p.name)))
            .collect()
    }

    /// Keeps only the workload called `name` (to measure one template).
    pub fn only_workload(&mut self, name: &str) -> Result<(), ScenarioError> {
        if !self.workloads.iter().any(|w| w.name == name) {
            let names: Vec<&str> = self.workloads.iter().map(|w| w.name.as_str()).collect();
            return Err(self.invalid(
                "workloads".into(),
                format!(
                    "no workload named {name:?} (workloads: {})",
                    names.join(", ")
                ),
            ));
        }
        self.workloads.retain(|w| w.name == name);
        Ok(())
    }

    /// What is valid but almost certainly not meant: a node pool or a
    /// workload of count 0, a scenario with no pods at all (it runs zero
    /// scheduling cycles). Each names the field; `strata simulate` prints
    /// them as warnings.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let at = |field: String, what: &str| format!("{}: field `{field}`: {what}", self.source);
        for (i, p) in self.node_pools.iter().enumerate() {
            if p.count == 0 {
                out.push(at(
                    format!("nodePools[{i}].count"),
                    &format!("is 0: pool {:?} adds no nodes", p.name),
                ));
            }
        }
        for (i, w) in self.workloads.iter().enumerate() {
            if w.count == 0 {
                out.push(at(
                    format!("workloads[{i}].count"),
                    &format!("is 0: workload {:?} adds no pods", w.name),
                ));
            }
        }
        if self.pod_count() == 0 {
            out.push(at(
                "workloads".into(),
                "the scenario has no pods, so nothing will be scheduled",
            ));
        }
        for f in &self.ignored_fields {
            out.push(at(
                f.clone(),
                "unknown field, ignored (not a field of the Pod API this build knows; misspelt?)",
            ));
        }
        out
    }

    /// The paths under `workloads[i].template` in the scenario text that
    /// the parsed Pod does not hold: fields the Pod API does not have,
    /// which its deserializer drops without a word (kube-apiserver warns
    /// of them, or refuses them under strict field validation).
    fn unknown_template_fields(&self, tree: &serde_yaml_ng::Value) -> Vec<String> {
        let mut out = Vec::new();
        let Some(ws) = tree.get("workloads").and_then(|w| w.as_sequence()) else {
            return out;
        };
        for (i, (given, w)) in ws.iter().zip(&self.workloads).enumerate() {
            let Some(given) = given.get("template") else {
                continue;
            };
            let Ok(given) = serde_json::to_value(given) else {
                continue;
            };
            let Ok(parsed) = serde_json::to_value(&*w.template.pod) else {
                continue;
            };
            missing_keys(
                &given,
                &parsed,
                &mut format!("workloads[{i}].template"),
                &mut out,
            );
        }
        out
    }

    /// How many nodes the scenario creates.
    pub fn node_count(&self) -> usize {
        self.node_pools.iter().map(|p| p.count as usize).sum()
    }

    /// How many pods the scenario creates.
    pub fn pod_count(&self) -> usize {
        self.workloads.iter().map(|w| w.count as usize).sum()
    }

    /// The Node objects, pool by pool, in index order.
    pub fn nodes(&self) -> Vec<corev1::Node> {
        let mut out = Vec::with_capacity(self.node_count());
        for pool in &self.node_pools {
            for i in 0..pool.count {
                out.push(pool.node(u64::from(i)));
            }
        }
        out
    }

    /// Every pod with its arrival time, sorted by time; ties keep workload
    /// order, then index order.
    pub fn arrivals(&self) -> Vec<PodArrival> {
        let mut out = Vec::with_capacity(self.pod_count());
        for (wi, w) in self.workloads.iter().enumerate() {
            // Validated to lie within MAX_VIRTUAL_SECONDS; saturate anyway
            // rather than panic.
            let secs = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX);
            let start = secs(w.start.0);
            for i in 0..w.count {
                let at = match w.arrival {
                    Arrival::Burst => start,
                    Arrival::Rate(r) => start.saturating_add(secs(f64::from(i) / r)),
                };
                let name = format!("{}-{i}", w.name);
                let uid = format!("{}/{name}", w.template.compiled.namespace);
                let mut pod = w.template.compiled.with_identity(&uid, &name);
                if let Some(g) = &w.group {
                    pod = g.stamp(i, pod);
                }
                out.push(PodArrival {
                    at,
                    workload: wi,
                    pod: Arc::new(pod),
                });
            }
        }
        // Stable: equal times keep the order above.
        out.sort_by_key(|a| a.at);
        out
    }
}

impl NodePool {
    /// Node `index` of this pool.
    pub fn node(&self, index: u64) -> corev1::Node {
        let name = format!("{}-{index}", self.name);
        let slot = NodeSlot {
            index,
            name: &name,
            pool: &self.name,
        };
        let mut labels: BTreeMap<String, String> = self
            .labels
            .iter()
            .map(|(k, p)| (k.clone(), p.render(slot)))
            .collect();
        labels
            .entry("kubernetes.io/hostname".into())
            .or_insert_with(|| name.clone());
        let taints: Vec<corev1::Taint> = self
            .taints
            .iter()
            .map(|t| corev1::Taint {
                key: t.key.clone(),
                value: t.value.as_ref().map(|v| v.render(slot)),
                effect: t.effect.as_str().into(),
                time_added: None,
            })
            .collect();
        let alloc: BTreeMap<String, Quantity> = self
            .allocatable
            .0
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect();
        let images: Vec<corev1::ContainerImage> = self
            .images
            .iter()
            .map(|i| corev1::ContainerImage {
                names: Some(i.names.clone()),
                size_bytes: Some(i.size_bytes),
            })
            .collect();
        let annotations: BTreeMap<String, String> = self
            .annotations
            .iter()
            .map(|(k, p)| (k.clone(), p.render(slot)))
            .collect();
        corev1::Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                uid: Some(format!("node-{name}")),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..Default::default()
            },
            spec: Some(corev1::NodeSpec {
                taints: (!taints.is_empty()).then_some(taints),
                unschedulable: self.unschedulable.then_some(true),
                ..Default::default()
            }),
            status: Some(corev1::NodeStatus {
                allocatable: Some(alloc.clone()),
                capacity: Some(alloc),
                images: (!images.is_empty()).then_some(images),
                conditions: Some(vec![corev1::NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }
}

/// Places a configuration error in the scenario file: the `config:` key's
/// line, or for a block scalar (`config: |`) the offending line inside it.
fn config_error(text: &str, file: &str, err: ConfigError) -> ScenarioError {
    let lines: Vec<&str> = text.lines().collect();
    let key = lines.iter().position(|l| l.starts_with("config:"));
    let block = key.is_some_and(|k| {
        let rest = lines[k]["config:".len()..].trim_start();
        rest.starts_with('|') || rest.starts_with('>')
    });
    // Indentation of the block's content, to turn a column inside the
    // config text into a column in the file.
    let indent = key
        .and_then(|k| lines[k + 1..].iter().find(|l| !l.trim().is_empty()))
        .map(|l| l.len() - l.trim_start().len())
        .unwrap_or(0);
    let key_line = key.map(|k| k + 1);
    let (line, column, field, message) = match err {
        ConfigError::Parse {
            line,
            column,
            message,
        } => {
            // The parser's message starts with its path inside the config.
            let (path, msg) = match message.find(": ") {
                Some(i) if !message[..i].contains(' ') => (Some(&message[..i]), &message[i + 2..]),
                _ => (None, message.as_str()),
            };
            let msg = clean_yaml_message(msg, "");
            let field = path.map_or_else(|| "config".to_owned(), |p| format!("config.{p}"));
            if block && line > 0 {
                (
                    key_line.map(|k| k + line),
                    Some(column + indent),
                    field,
                    msg,
                )
            } else {
                (
                    key_line,
                    None,
                    field,
                    format!("{msg} (line {line}, column {column} of the configuration)"),
                )
            }
        }
        ConfigError::Invalid { field, message } => {
            (key_line, None, format!("config.{field}"), message)
        }
    };
    ScenarioError::Invalid {
        file: file.to_owned(),
        line,
        column,
        field,
        message,
    }
}

/// Pushes the path of every key of `given` (recursively, through mappings
/// and lists) that `parsed` lacks; null values are not counted (an empty
/// optional field is dropped on the way back).
fn missing_keys(
    given: &serde_json::Value,
    parsed: &serde_json::Value,
    path: &mut String,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (given, parsed) {
        (Value::Object(g), Value::Object(p)) => {
            for (k, gv) in g {
                if gv.is_null() {
                    continue;
                }
                let len = path.len();
                path.push('.');
                path.push_str(k);
                match p.get(k) {
                    Some(pv) => missing_keys(gv, pv, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(g), Value::Array(p)) => {
            for (j, (gv, pv)) in g.iter().zip(p).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{j}]"));
                missing_keys(gv, pv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// serde_yaml_ng's message repeats the path and the position we report
/// separately; keep only what is wrong.
pub(crate) fn clean_yaml_message(msg: &str, field: &str) -> String {
    let mut m = msg;
    if let Some(i) = m.rfind(" at line ")
        && m[i + " at line ".len()..]
            .split(' ')
            .next()
            .is_some_and(|n| n.parse::<usize>().is_ok())
    {
        m = &m[..i];
    }
    // The parser prefixes the path it was at (the field or its parent).
    if let Some(i) = m.find(": ")
        && !m[..i].contains(' ')
        && field.starts_with(&m[..i])
    {
        m = &m[i + 2..];
    }
    m.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_scheduler::resources::ResourceId;

    const GOOD: &str = r#"
name: t
seed: 3
nodePools:
  - name: gen
    count: 10
    allocatable: {cpu: "4", memory: 32Gi, pods: 110}
    labels:
      topology.kubernetes.io/zone: "zone-{index%3}"
      example.com/rack: "rack-{index/4}"
    taints: [{key: dedicated, value: "v{index%2}", effect: NoSchedule}]
    images: [{names: ["nginx"], sizeBytes: 1000}]
workloads:
  - name: web
    count: 4
    template:
      metadata: {labels: {app: web}}
      spec:
        containers:
          - name: c
            resources: {requests: {cpu: 100m, memory: 500Mi}}
  - name: stream
    count: 3
    arrival: {rate: 2}
    start: 1
    template:
      spec:
        containers: [{name: c}]
"#;

    /// What the Pod type and the API server would refuse or drop is named:
    /// a key given twice, a pod without containers, a label or taint key
    /// that is not a qualified name (errors), a template field the Pod API
    /// does not have (a warning; the pod is built without it).
    #[test]
    fn template_and_pool_mistakes_are_named() {
        let with = |pool: &str, spec: &str| {
            format!(
                "name: t\nnodePools:\n  - {{name: a, count: 1, allocatable: {{cpu: \"4\"}}{pool}}}\nworkloads:\n  - name: w\n    count: 1\n    template:\n      spec: {spec}\n"
            )
        };
        let ok = "{containers: [{name: c}]}";
        for (text, needle) in [
            (
                with(
                    "",
                    "{containers: [{name: c, resources: {requests: {cpu: 1, cpu: 2}}}]}",
                ),
                "duplicate entry with key \"cpu\"",
            ),
            (with("", "{}"), "workloads[0].template.spec.containers"),
            (with("", "{containers: []}"), "at least one container"),
            (
                with(", labels: {\"bad key!\": x}", ok),
                "nodePools[0].labels",
            ),
            (
                with(", annotations: {\"/x\": y}", ok),
                "nodePools[0].annotations",
            ),
            (
                with(", taints: [{key: \"a b\", effect: NoSchedule}]", ok),
                "nodePools[0].taints[0].key",
            ),
        ] {
            let e = Scenario::parse(&text, "t.yaml").unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let sc = Scenario::parse(
            &with(
                "",
                "{containerz: [], containers: [{name: c, imagePullPolicyy: Always, image: i}]}",
            ),
            "t.yaml",
        )
        .unwrap();
        let w = sc.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        for field in [
            "`workloads[0].template.spec.containerz`",
            "`workloads[0].template.spec.containers[0].imagePullPolicyy`",
        ] {
            assert!(w.iter().any(|w| w.contains(field)), "{field}: {w:?}");
        }
        // Known fields, nulls and free-form maps are not reported.
        let sc = Scenario::parse(
            &with(
                ", labels: {example.com/rack: r}",
                "{nodeName: null, containers: [{name: c, resources: {limits: {example.com/gpu: 1}}}]}",
            ),
            "t.yaml",
        )
        .unwrap();
        assert!(sc.warnings().is_empty(), "{:?}", sc.warnings());
    }

    #[test]
    fn parses_and_generates() {
        let sc = Scenario::parse(GOOD, "good.yaml").unwrap();
        assert_eq!(sc.seed, 3);
        assert_eq!(sc.node_count(), 10);
        assert_eq!(sc.pod_count(), 7);
        let nodes = sc.nodes();
        let n5 = &nodes[5];
        assert_eq!(n5.metadata.name.as_deref(), Some("gen-5"));
        let labels = n5.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-2");
        assert_eq!(labels["example.com/rack"], "rack-1");
        assert_eq!(labels["kubernetes.io/hostname"], "gen-5");
        let taint = &n5.spec.as_ref().unwrap().taints.as_ref().unwrap()[0];
        assert_eq!(taint.value.as_deref(), Some("v1"));
        assert_eq!(taint.effect, "NoSchedule");

        let arr = sc.arrivals();
        assert_eq!(arr.len(), 7);
        // Burst pods first at t=0, then the stream at 1s, 1.5s, 2s.
        assert!(
            arr[..4]
                .iter()
                .all(|a| a.at == Duration::ZERO && a.workload == 0)
        );
        let times: Vec<f64> = arr[4..].iter().map(|a| a.at.as_secs_f64()).collect();
        assert_eq!(times, vec![1.0, 1.5, 2.0]);
        assert_eq!(&*arr[0].pod.name, "web-0");
        assert_eq!(&*arr[0].pod.uid, "default/web-0");
        assert_eq!(arr[0].pod.spec.requests[ResourceId::CPU], 100);
        // Stamped pods share the compiled spec.
        assert!(Arc::ptr_eq(&arr[0].pod.spec, &arr[3].pod.spec));
    }

    #[test]
    fn only_workload_filters_and_rejects_unknown() {
        let mut sc = Scenario::parse(GOOD, "good.yaml").unwrap();
        let err = sc.only_workload("nope").unwrap_err().to_string();
        assert!(err.contains("web, stream"), "{err}");
        sc.only_workload("stream").unwrap();
        assert_eq!(sc.pod_count(), 3);
    }

    fn err_of(text: &str) -> String {
        Scenario::parse(text, "bad.yaml").unwrap_err().to_string()
    }

    #[test]
    fn malformed_scenarios_name_file_line_and_field() {
        let cases: &[(&str, &str)] = &[
            (
                "name: x\nnodePools:\n  - name: a\n    count: many\n    allocatable: {cpu: 1}\n",
                "bad.yaml:4:12: field `nodePools[0].count`: invalid type",
            ),
            (
                "name: x\nnodePools:\n  - name: a\n    cuont: 3\n    allocatable: {cpu: 1}\n",
                "bad.yaml:4:5: field `nodePools[0].cuont`: unknown field `cuont`",
            ),
            (
                "name: x\nnodePools:\n  - name: a\n    count: 3\n    allocatable: {cpu: 1}\n    labels: {z: \"zone-{idx}\"}\n",
                "bad.yaml:6:",
            ),
            (
                "name: x\nnodePools:\n  - name: a\n    count: 3\n    allocatable: {cpu: lots}\n",
                "field `nodePools[0].allocatable`",
            ),
            (
                "name: x\nnodePools:\n  - name: a\n    count: 3\n    allocatable: {cpu: 1}\n    taints: [{key: k, effect: Sometimes}]\n",
                "unknown variant `Sometimes`",
            ),
            (
                "name: x\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1}}]\nworkloads:\n  - name: w\n    count: 1\n    arrival: {rate: 0}\n    template: {spec: {containers: [{name: c}]}}\n",
                "rate must be a positive number",
            ),
            (
                "name: x\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1}}]\nworkloads:\n  - name: w\n    count: 1\n    template:\n      spec:\n        containers: [{name: c, resources: {requests: {cpu: 1zz}}}]\n",
                "bad.yaml:7:7: field `workloads[0].template`: spec.containers[0].resources",
            ),
            (
                "name: x\nnodePools: []\n",
                "field `nodePools`: at least one node pool",
            ),
            (
                "name: x\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1}}, {name: a, count: 1, allocatable: {cpu: 1}}]\n",
                "field `nodePools[1].name`",
            ),
            ("name: [x\n", "bad.yaml:"),
        ];
        for (text, want) in cases {
            let err = err_of(text);
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
    }

    /// Numbers that crashed the simulator (exit 101: an arrival time past
    /// what a Duration holds) or were silently taken are refused, naming
    /// the field.
    #[test]
    fn out_of_range_numbers_name_the_field() {
        let pool = "nodePools: [{name: a, count: 1, allocatable: {cpu: 1}}]\n";
        let workload = |extra: &str| {
            format!(
                "name: x\n{pool}workloads:\n  - name: w\n    count: 3\n{extra}    template: {{spec: {{containers: [{{name: c}}]}}}}\n"
            )
        };
        let cases = [
            (workload("    start: 1e300\n"), "field `workloads[0].start`: 1e300 seconds is past"),
            (workload("    start: 31536001\n"), "field `workloads[0].start`"),
            (workload("    start: 1.7976931348623157e308\n"), "field `workloads[0].start`"),
            (workload("    arrival: {rate: 1e-300}\n"), "field `workloads[0].arrival.rate`"),
            (workload("    arrival: {rate: 5e-324}\n"), "field `workloads[0].arrival.rate`"),
            (workload("    arrival: {rate: 1e-8}\n"), "field `workloads[0].arrival.rate`"),
            (workload("    start: 31536000\n    arrival: {rate: 1}\n"), "field `workloads[0].arrival.rate`"),
            // Negative, NaN and infinite: refused by the field's own type.
            (workload("    start: -1\n"), "expected non-negative seconds"),
            (workload("    start: .nan\n"), "expected non-negative seconds"),
            (workload("    start: .inf\n"), "expected non-negative seconds"),
            (workload("    arrival: {rate: .inf}\n"), "rate must be a positive number"),
            (workload("    arrival: {rate: .nan}\n"), "rate must be a positive number"),
            (workload("    arrival: {rate: -2}\n"), "rate must be a positive number"),
            (
                "name: x\nnodePools:\n  - {name: a, count: 4294967295, allocatable: {cpu: 1}}\n".to_owned(),
                "field `nodePools[0].count`: 4294967295 brings the scenario to",
            ),
            (
                "name: x\nnodePools:\n  - {name: a, count: 1000000, allocatable: {cpu: 1}}\n  - {name: b, count: 1000000, allocatable: {cpu: 1}}\n".to_owned(),
                "field `nodePools[1].count`",
            ),
            (
                format!("name: x\n{pool}workloads:\n  - name: w\n    count: 4294967295\n    template: {{spec: {{containers: [{{name: c}}]}}}}\n"),
                "field `workloads[0].count`",
            ),
            (
                "name: x\nnodePools:\n  - {name: a, count: 1, allocatable: {cpu: 1}, images: [{names: [i], sizeBytes: -5}]}\n".to_owned(),
                "field `nodePools[0].images[0].sizeBytes`: -5 is negative",
            ),
            (workload("    group: {name: g, size: 0}\n"), "field `workloads[0].group.size`"),
            (
                format!("name: x\n{pool}workloads:\n  - name: w\n    count: 1\n    template: {{spec: {{nodeName: a-1, containers: [{{name: c}}]}}}}\n"),
                "field `workloads[0].template.spec.nodeName`: no node named \"a-1\"",
            ),
            (
                "name: x\nnodePools:\n  - {name: a, count: 1, allocatable: {cpu: 1, memory: \"-1Gi\"}}\n".to_owned(),
                "field `nodePools[0].allocatable`: memory: \"-1Gi\" is negative",
            ),
        ];
        for (text, want) in &cases {
            let err = err_of(text);
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
        // At the bounds: accepted, and the arrival times are exact.
        let sc = Scenario::parse(
            &workload("    start: 31535998\n    arrival: {rate: 1}\n"),
            "ok.yaml",
        )
        .unwrap();
        let last = sc.arrivals().last().unwrap().at;
        assert_eq!(last, Duration::from_secs(MAX_VIRTUAL_SECONDS));
        // A template bound to a node the scenario has is fine.
        Scenario::parse(
            &format!("name: x\n{pool}workloads:\n  - name: w\n    count: 1\n    template: {{spec: {{nodeName: a-0, containers: [{{name: c}}]}}}}\n"),
            "ok.yaml",
        )
        .unwrap();
    }

    /// Counts of 0 and a scenario without pods are valid but warned about,
    /// naming the field; the built-in scenarios have nothing to warn about.
    #[test]
    fn empty_pools_and_workloads_are_warned_about() {
        let sc = Scenario::parse(
            "name: x\nnodePools:\n  - {name: a, count: 0, allocatable: {cpu: 1}}\n  - {name: b, count: 1, allocatable: {cpu: 1}}\nworkloads:\n  - {name: w, count: 0, template: {spec: {containers: [{name: c}]}}}\n",
            "x.yaml",
        )
        .unwrap();
        assert_eq!(
            sc.warnings(),
            [
                "x.yaml: field `nodePools[0].count`: is 0: pool \"a\" adds no nodes",
                "x.yaml: field `workloads[0].count`: is 0: workload \"w\" adds no pods",
                "x.yaml: field `workloads`: the scenario has no pods, so nothing will be scheduled",
            ]
        );
        for (name, _) in BUILTIN {
            assert_eq!(
                Scenario::load(name).unwrap().warnings(),
                Vec::<String>::new(),
                "{name}"
            );
        }
    }

    /// A group whose minMember is more than the pods the scenario ever puts
    /// in it is refused (its pods used to wait, never attempted, without a
    /// word); one that fits is not.
    #[test]
    fn groups_that_could_never_fill_are_refused() {
        let group = |min: &str, subgroups: &str| {
            format!(
                "name: x\nnodePools: [{{name: a, count: 1, allocatable: {{cpu: 1}}}}]\nworkloads:\n  - name: w\n    count: 8\n    group: {{name: g, size: 4}}\n    template:\n      metadata:\n        annotations: {{strata.io/min-member: \"{min}\"{subgroups}}}\n      spec: {{containers: [{{name: c}}]}}\n"
            )
        };
        for (text, want) in [
            (
                group("5", ""),
                "strata.io/min-member is 5, but the scenario puts at most 4 pods",
            ),
            (
                group("2", ", strata.io/subgroups: \"p:2,q:5\""),
                "subgroup \"q\"'s minMember is 5, but the scenario puts at most 4 pods",
            ),
            (
                group("4294967295", ""),
                "strata.io/min-member: must be a whole number from 1 to 150000, got 4294967295",
            ),
            (
                group("2", ", strata.io/subgroups: \"p:4294967295\""),
                "strata.io/subgroups[0]: must be a whole number from 1 to 150000",
            ),
        ] {
            let err = err_of(&text);
            assert!(err.contains(want), "want {want:?} in {err:?}");
            assert!(
                err.contains("field `workloads[0].template.metadata.annotations`"),
                "{err}"
            );
        }
        Scenario::parse(&group("4", ", strata.io/subgroups: \"p:2\""), "ok.yaml").unwrap();
        // Group annotations on a workload whose pods are in no group.
        let no_group = group("4", "").replace("    group: {name: g, size: 4}\n", "");
        let err = err_of(&no_group);
        assert!(
            err.contains("field `workloads[0].template.metadata.annotations`: strata.io/min-member has no effect"),
            "{err}"
        );
        // With a group label of its own, the template is in a group.
        Scenario::parse(
            &no_group.replace(
                "metadata:\n",
                "metadata:\n        labels: {strata.io/pod-group: g}\n",
            ),
            "ok.yaml",
        )
        .unwrap();
    }

    #[test]
    fn error_message_is_not_repeated() {
        let err = err_of(
            "name: x\nnodePools:\n  - name: a\n    count: many\n    allocatable: {cpu: 1}\n",
        );
        assert_eq!(err.matches("nodePools[0].count").count(), 1, "{err}");
        assert!(!err.contains(" at line "), "{err}");
    }

    #[test]
    fn config_accepts_text_or_mapping() {
        let text = "name: x\nconfig: {profiles: [{schedulerName: a}]}\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1}}]\n";
        let sc = Scenario::parse(text, "c.yaml").unwrap();
        assert!(sc.config.unwrap().0.contains("schedulerName: a"));
        let text = "name: x\nconfig: 3\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1}}]\n";
        assert!(err_of(text).contains("field `config`"));
    }

    #[test]
    fn config_errors_point_into_the_scenario() {
        let block = "name: x\nconfig: |\n  profiles:\n    - schedulerNam: a\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1}}]\n";
        let err = err_of(block);
        assert!(
            err.starts_with(
                "bad.yaml:4:7: field `config.profiles[0]`: unknown field `schedulerNam`"
            ),
            "{err}"
        );
        let mapping = "name: x\nnodePools: [{name: a, count: 1, allocatable: {cpu: 1}}]\nconfig:\n  profiles:\n    - schedulerName: a\n      pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Bogus}}}]\n";
        let err = err_of(mapping);
        assert!(
            err.starts_with(
                "bad.yaml:3: field `config.profiles[0].pluginConfig[0].args.scoringStrategy.type`"
            ),
            "{err}"
        );
        assert!(err.contains("Bogus"), "{err}");
    }

    #[test]
    fn builtins_parse() {
        for (name, text) in BUILTIN {
            let sc = Scenario::parse(text, name).unwrap_or_else(|e| panic!("{e}"));
            assert!(sc.pod_count() > 0, "{name}");
        }
    }

    #[test]
    fn scaling_scenarios_share_their_shape() {
        // basic-1k/4k/16k differ only in counts: same pools, labels, taints
        // and templates, counts in proportion to the node count.
        let load = |n| Scenario::parse(builtin(n).unwrap(), n).unwrap();
        let base = load("basic-1k");
        for (name, factor) in [("basic-4k", 4), ("basic-16k", 16)] {
            let s = load(name);
            assert_eq!(s.node_count(), base.node_count() * factor, "{name}");
            assert_eq!(s.pod_count(), base.pod_count() * factor, "{name}");
            for (a, b) in base.node_pools.iter().zip(&s.node_pools) {
                assert_eq!(a.name, b.name);
                assert_eq!(a.labels, b.labels);
                assert_eq!(a.allocatable.0, b.allocatable.0);
                assert_eq!(b.count, a.count * factor as u32);
            }
            for (a, b) in base.workloads.iter().zip(&s.workloads) {
                assert_eq!(a.name, b.name);
                assert_eq!(a.template.pod, b.template.pod);
                assert_eq!(b.count, a.count * factor as u32);
            }
        }
        // services-1k/4k/16k: the same pods on 1, 4 and 16 thousand nodes.
        let base = load("services-1k");
        assert_eq!(base.workloads.len(), 400);
        for (name, factor) in [("services-4k", 4), ("services-16k", 16)] {
            let s = load(name);
            assert_eq!(s.node_count(), base.node_count() * factor, "{name}");
            assert_eq!(s.pod_count(), base.pod_count(), "{name}");
            for (a, b) in base.node_pools.iter().zip(&s.node_pools) {
                assert_eq!(a.labels, b.labels);
                assert_eq!(a.allocatable.0, b.allocatable.0);
            }
            for (a, b) in base.workloads.iter().zip(&s.workloads) {
                assert_eq!(a.name, b.name);
                assert_eq!(a.template.pod, b.template.pod);
                assert_eq!(a.count, b.count);
            }
        }
    }
}
