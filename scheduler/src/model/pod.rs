//! A pod compiled for scheduling: resource requests with init-container and
//! overhead rules, selectors, affinities, spread constraints, tolerations.

use super::node::{HostPort, NodeInfo, normalize_image};
use super::taints::{TaintEffect, Toleration, tolerated};
use crate::intern::Sym;
use crate::labels::{Labels, NodeSelector, NodeSelectorTerm, Op, Requirement, Selector};
use crate::resources::{ResourceId, ResourceVec};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// kube-scheduler's default cpu request for scoring a container that sets none.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// kube-scheduler's default memory request for scoring a container that sets none.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A pod that cannot be compiled: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {pod}: {field}: {message}")]
pub struct CompileError {
    /// `namespace/name`.
    pub pod: String,
    /// JSON path of the offending field, e.g. `spec.containers[0].resources`.
    pub field: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

/// The controlling owner of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerRef {
    /// Kind, e.g. `ReplicaSet`.
    pub kind: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// UID.
    pub uid: Arc<str>,
}

/// Whether a pod may preempt others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PreemptionPolicy {
    /// The default.
    #[default]
    PreemptLowerPriority,
    /// The pod never preempts.
    Never,
}

/// `whenUnsatisfiable` of a spread constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WhenUnsatisfiable {
    /// Hard: a Filter.
    DoNotSchedule,
    /// Soft: a Score.
    ScheduleAnyway,
}

/// `nodeAffinityPolicy` / `nodeTaintsPolicy` of a spread constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeInclusionPolicy {
    /// Only nodes passing the rule count in skew calculations.
    Honor,
    /// All nodes count.
    Ignore,
}

/// A compiled topology spread constraint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpreadConstraint {
    /// Maximum permitted skew.
    pub max_skew: i32,
    /// Node label key whose values are the domains.
    pub topology_key: Sym,
    /// Hard or soft.
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// Which pods count; `None` (no selector given) counts none.
    pub selector: Option<Selector>,
    /// Minimum number of eligible domains (hard constraints only).
    pub min_domains: Option<i32>,
    /// Whether the pod's node affinity/selector limits the counted nodes.
    pub node_affinity_policy: NodeInclusionPolicy,
    /// Whether node taints the pod does not tolerate exclude nodes.
    pub node_taints_policy: NodeInclusionPolicy,
}

/// Labels of namespaces, by name.
pub type NamespaceLabels = rustc_hash::FxHashMap<Sym, Labels>;

/// A compiled pod (anti-)affinity term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AffinityTerm {
    /// Which pods the term refers to; `None` matches no pod.
    pub selector: Option<Selector>,
    /// Namespaces listed explicitly (the pod's own when neither this nor
    /// `namespace_selector` is given).
    pub namespaces: SmallVec<[Sym; 1]>,
    /// Namespaces by label; `Some(empty)` means every namespace.
    pub namespace_selector: Option<Selector>,
    /// Node label key that defines "the same place".
    pub topology_key: Sym,
}

impl AffinityTerm {
    /// Whether a pod in `ns` with `labels` is one this term refers to.
    /// `ns_labels` holds the labels of known namespaces.
    #[inline]
    pub fn matches(&self, ns: Sym, labels: &Labels, ns_labels: &NamespaceLabels) -> bool {
        let Some(sel) = &self.selector else {
            return false;
        };
        let ns_ok = self.namespaces.contains(&ns)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.is_empty() || ns_labels.get(&ns).is_some_and(|l| s.matches(l)));
        ns_ok && sel.matches(labels)
    }
}

/// A preferred term with its weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightedAffinityTerm {
    /// 1–100.
    pub weight: i32,
    /// The term.
    pub term: AffinityTerm,
}

/// A pod's inter-pod affinity and anti-affinity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodAffinity {
    /// Required affinity.
    pub required: Vec<AffinityTerm>,
    /// Preferred affinity.
    pub preferred: Vec<WeightedAffinityTerm>,
    /// Required anti-affinity.
    pub required_anti: Vec<AffinityTerm>,
    /// Preferred anti-affinity.
    pub preferred_anti: Vec<WeightedAffinityTerm>,
}

impl PodAffinity {
    /// Whether any term is set.
    pub fn has_pod_affinity_terms(&self) -> bool {
        !(self.required.is_empty()
            && self.preferred.is_empty()
            && self.required_anti.is_empty()
            && self.preferred_anti.is_empty())
    }
}

/// The scheduling-relevant part of a pod spec, compiled. Pods created from
/// one template share one `Arc<PodSpecInfo>`.
#[derive(Clone, Debug)]
pub struct PodSpecInfo {
    /// The spec as received, for fields not compiled here.
    pub raw: Arc<corev1::PodSpec>,
    /// Effective requests: containers, init containers and sidecars combined
    /// as kube-scheduler does, plus overhead.
    pub requests: ResourceVec,
    /// As `requests`, with the non-zero defaults used for scoring.
    pub non_zero_requests: ResourceVec,
    /// `spec.nodeSelector`.
    pub node_selector: Option<Selector>,
    /// Required node affinity.
    pub required_node_affinity: Option<NodeSelector>,
    /// Preferred node affinity terms with weights.
    pub preferred_node_affinity: Vec<(i32, NodeSelectorTerm)>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Host ports the containers ask for.
    pub host_ports: SmallVec<[HostPort; 2]>,
    /// Topology spread constraints.
    pub spread_constraints: Vec<SpreadConstraint>,
    /// Inter-pod affinity.
    pub affinity: PodAffinity,
    /// `spec.schedulingGates` names.
    pub scheduling_gates: Vec<String>,
    /// Normalized container image names.
    pub images: SmallVec<[Sym; 2]>,
    /// `spec.nodeName` as requested (for the NodeName filter).
    pub node_name: Option<Sym>,
    /// Preemption policy.
    pub preemption_policy: PreemptionPolicy,
}

/// A pod compiled for scheduling.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// `metadata.uid`: the pod's identity in queue and cache.
    pub uid: Arc<str>,
    /// Namespace.
    pub namespace: Sym,
    /// Name.
    pub name: Arc<str>,
    /// Labels.
    pub labels: Arc<Labels>,
    /// Annotations.
    pub annotations: Arc<BTreeMap<String, String>>,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// `spec.schedulerName`.
    pub scheduler_name: Sym,
    /// Where the pod is bound (`spec.nodeName`), if anywhere.
    pub bound_node: Option<Sym>,
    /// `status.nominatedNodeName`.
    pub nominated_node: Option<Sym>,
    /// The controlling owner.
    pub owner: Option<OwnerRef>,
    /// Creation time, milliseconds since the epoch (0 when unknown).
    pub creation_ms: i64,
    /// Whether the pod is terminating (deletionTimestamp set).
    pub terminating: bool,
    /// Whether the pod has finished (phase Succeeded or Failed).
    pub terminal: bool,
    /// Whether the kubelet reports it running (phase Running).
    pub running: bool,
    /// Hash of everything a node-local plugin may read: spec, labels,
    /// annotations and namespace. Pods with equal hashes are equivalent for
    /// per-node filtering and scoring.
    pub equivalence: u64,
    /// Hash of the spec without the pod's inter-pod rules (pod affinity and
    /// anti-affinity, topology spread constraints); labels, annotations and
    /// namespace left out too. Pods of different Deployments with the same
    /// resources and node rules share it, and with it the cached answers of
    /// plugins that do not read the pod's identity
    /// ([`FilterPlugin::node_local_reads_pod_identity`](crate::framework::FilterPlugin::node_local_reads_pod_identity)).
    pub placement: u64,
    /// The compiled spec.
    pub spec: Arc<PodSpecInfo>,
}

impl PodInfo {
    /// kube-scheduler's "required node affinity": the pod's `nodeSelector`
    /// and its required node affinity terms both hold on `node`.
    #[inline]
    pub fn matches_required_node_affinity(&self, node: &NodeInfo) -> bool {
        let spec = &self.spec;
        spec.node_selector
            .as_ref()
            .is_none_or(|s| s.matches(&node.labels))
            && spec
                .required_node_affinity
                .as_ref()
                .is_none_or(|a| a.matches(&node.labels, node.name))
    }

    /// Whether the pod tolerates every `NoSchedule` and `NoExecute` taint of
    /// `node`.
    #[inline]
    pub fn tolerates_hard_taints(&self, node: &NodeInfo) -> bool {
        node.taints.iter().all(|t| {
            t.effect == TaintEffect::PreferNoSchedule || tolerated(&self.spec.tolerations, t)
        })
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Compiles an API pod.
    pub fn compile(pod: &corev1::Pod) -> Result<PodInfo, CompileError> {
        let md = &pod.metadata;
        let namespace = md.namespace.as_deref().unwrap_or("default");
        let name = md.name.as_deref().unwrap_or("");
        let key = format!("{namespace}/{name}");
        let labels = Labels::from_map(md.labels.as_ref());
        let default_spec = corev1::PodSpec::default();
        let raw_spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let spec = PodSpecInfo::compile(&key, namespace, &labels, raw_spec)?;
        let annotations = md.annotations.clone().unwrap_or_default();
        let owner = md
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| OwnerRef {
                kind: o.kind.as_str().into(),
                name: o.name.as_str().into(),
                uid: o.uid.as_str().into(),
            });
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
        let (equivalence, placement) = equivalence_hash(raw_spec, &labels, &annotations, namespace);
        Ok(PodInfo {
            uid: md.uid.as_deref().unwrap_or(&key).into(),
            namespace: Sym::new(namespace),
            name: name.into(),
            labels: Arc::new(labels),
            annotations: Arc::new(annotations),
            priority: raw_spec.priority.unwrap_or(0),
            scheduler_name: Sym::new(
                raw_spec
                    .scheduler_name
                    .as_deref()
                    .unwrap_or("default-scheduler"),
            ),
            bound_node: raw_spec
                .node_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(Sym::new),
            nominated_node: status
                .and_then(|s| s.nominated_node_name.as_deref())
                .filter(|n| !n.is_empty())
                .map(Sym::new),
            owner,
            creation_ms: md
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0),
            terminating: md.deletion_timestamp.is_some(),
            terminal: matches!(phase, "Succeeded" | "Failed"),
            running: phase == "Running",
            equivalence,
            placement,
            spec: Arc::new(spec),
        })
    }

    /// A copy with another identity, sharing the compiled spec: how the
    /// simulator stamps many pods out of one template cheaply.
    pub fn with_identity(&self, uid: &str, name: &str) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            name: name.into(),
            ..self.clone()
        }
    }
}

/// The pod's equivalence hash and its placement hash
/// ([`PodInfo::placement`]): the spec is serialized once, without its
/// inter-pod rules, for the placement hash; the equivalence hash adds the
/// rules, labels, annotations and namespace to it.
fn equivalence_hash(
    spec: &corev1::PodSpec,
    labels: &Labels,
    annotations: &BTreeMap<String, String>,
    namespace: &str,
) -> (u64, u64) {
    // Serialization of API types is deterministic (maps are BTreeMaps).
    let rules = (
        spec.affinity
            .as_ref()
            .map(|a| (&a.pod_affinity, &a.pod_anti_affinity)),
        &spec.topology_spread_constraints,
    );
    let has_rules = matches!(rules.0, Some((Some(_), _)) | Some((_, Some(_)))) || rules.1.is_some();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let bytes = if has_rules {
        let mut bare = spec.clone();
        if let Some(a) = &mut bare.affinity {
            a.pod_affinity = None;
            a.pod_anti_affinity = None;
        }
        bare.topology_spread_constraints = None;
        serde_json::to_vec(&bare)
    } else {
        serde_json::to_vec(spec)
    };
    if let Ok(bytes) = bytes {
        bytes.hash(&mut h);
    }
    let placement = h.finish();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    placement.hash(&mut h);
    if let Ok(bytes) = serde_json::to_vec(&rules) {
        bytes.hash(&mut h);
    }
    labels.hash(&mut h);
    annotations.hash(&mut h);
    namespace.hash(&mut h);
    (h.finish(), placement)
}

struct Ctx<'a> {
    pod: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl std::fmt::Display) -> CompileError {
        CompileError {
            pod: self.pod.to_owned(),
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// A negative request, limit or overhead (which the API server refuses,
/// but a scenario template could hold) would give capacity back to the
/// node: refused, naming the resource.
fn non_negative(
    ctx: &Ctx<'_>,
    field: &str,
    v: &ResourceVec,
    name: &str,
    q: &ApiQuantity,
) -> Result<(), CompileError> {
    match ResourceId::of(name) {
        Ok(id) if v[id] < 0 => Err(ctx.err(field, format!("{name}: {:?} is negative", q.0))),
        _ => Ok(()),
    }
}

fn requests_of(
    ctx: &Ctx<'_>,
    field: &str,
    res: Option<&corev1::ResourceRequirements>,
) -> Result<(ResourceVec, ResourceVec), CompileError> {
    let mut req = ResourceVec::default();
    let empty = BTreeMap::new();
    let requests = res.and_then(|r| r.requests.as_ref()).unwrap_or(&empty);
    let limits = res.and_then(|r| r.limits.as_ref()).unwrap_or(&empty);
    let mut put = |name: &str, q: &ApiQuantity| -> Result<(), CompileError> {
        req.set_quantity(name, &q.0)
            .map_err(|e| ctx.err(format!("{field}.resources"), e))?;
        non_negative(ctx, &format!("{field}.resources"), &req, name, q)
    };
    for (name, q) in requests {
        put(name, q)?;
    }
    // The API server defaults a missing request to the limit.
    for (name, q) in limits {
        if !requests.contains_key(name) {
            put(name, q)?;
        }
    }
    let mut nz = req.clone();
    if !requests.contains_key("cpu") && !limits.contains_key("cpu") {
        nz[ResourceId::CPU] = DEFAULT_MILLI_CPU_REQUEST;
    }
    if !requests.contains_key("memory") && !limits.contains_key("memory") {
        nz[ResourceId::MEMORY] = DEFAULT_MEMORY_REQUEST;
    }
    Ok((req, nz))
}

/// kube-scheduler's effective pod request: app containers and sidecars summed,
/// compared with each init container plus the sidecars started before it,
/// the larger taken, plus overhead; pod-level requests override.
fn pod_requests(
    ctx: &Ctx<'_>,
    spec: &corev1::PodSpec,
) -> Result<(ResourceVec, ResourceVec), CompileError> {
    let mut sum = (ResourceVec::default(), ResourceVec::default());
    for (i, c) in spec.containers.iter().enumerate() {
        let (r, nz) = requests_of(ctx, &format!("spec.containers[{i}]"), c.resources.as_ref())?;
        sum.0.add(&r);
        sum.1.add(&nz);
    }
    let mut sidecars = (ResourceVec::default(), ResourceVec::default());
    let mut init_max = (ResourceVec::default(), ResourceVec::default());
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let (mut r, mut nz) = requests_of(
            ctx,
            &format!("spec.initContainers[{i}]"),
            c.resources.as_ref(),
        )?;
        if c.restart_policy.as_deref() == Some("Always") {
            sum.0.add(&r);
            sum.1.add(&nz);
            sidecars.0.add(&r);
            sidecars.1.add(&nz);
            r = sidecars.0.clone();
            nz = sidecars.1.clone();
        } else {
            r.add(&sidecars.0);
            nz.add(&sidecars.1);
        }
        init_max.0.max_with(&r);
        init_max.1.max_with(&nz);
    }
    sum.0.max_with(&init_max.0);
    sum.1.max_with(&init_max.1);
    if let Some(pl) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        for (name, q) in pl {
            let id = ResourceId::of(name).map_err(|e| ctx.err("spec.resources.requests", e))?;
            let mut v = ResourceVec::default();
            v.set_quantity(name, &q.0)
                .map_err(|e| ctx.err("spec.resources.requests", e))?;
            non_negative(ctx, "spec.resources.requests", &v, name, q)?;
            sum.0[id] = v[id];
            sum.1[id] = v[id];
        }
    }
    if let Some(oh) = &spec.overhead {
        let mut v = ResourceVec::default();
        for (name, q) in oh {
            v.set_quantity(name, &q.0)
                .map_err(|e| ctx.err("spec.overhead", e))?;
            non_negative(ctx, "spec.overhead", &v, name, q)?;
        }
        sum.0.add(&v);
        sum.1.add(&v);
    }
    Ok(sum)
}

fn compile_term(
    ctx: &Ctx<'_>,
    field: &str,
    t: &corev1::PodAffinityTerm,
    own_ns: Sym,
    own_labels: &Labels,
) -> Result<AffinityTerm, CompileError> {
    let mut selector = t
        .label_selector
        .as_ref()
        .map(Selector::compile)
        .transpose()
        .map_err(|e| ctx.err(format!("{field}.labelSelector"), e))?;
    // matchLabelKeys / mismatchLabelKeys fold the pod's own label values in.
    for (keys, negate) in [(&t.match_label_keys, false), (&t.mismatch_label_keys, true)] {
        for k in keys.iter().flatten() {
            let key = Sym::new(k);
            if let (Some(sel), Some(v)) = (selector.as_mut(), own_labels.get(key)) {
                let vals = SmallVec::from_elem(v, 1);
                sel.reqs.push(Requirement {
                    key,
                    op: if negate {
                        Op::NotIn(vals)
                    } else {
                        Op::In(vals)
                    },
                });
            }
        }
    }
    let namespace_selector = t
        .namespace_selector
        .as_ref()
        .map(Selector::compile)
        .transpose()
        .map_err(|e| ctx.err(format!("{field}.namespaceSelector"), e))?;
    let mut namespaces: SmallVec<[Sym; 1]> =
        t.namespaces.iter().flatten().map(|n| Sym::new(n)).collect();
    if namespaces.is_empty() && namespace_selector.is_none() {
        namespaces.push(own_ns);
    }
    if t.topology_key.is_empty() {
        return Err(ctx.err(format!("{field}.topologyKey"), "must not be empty"));
    }
    Ok(AffinityTerm {
        selector,
        namespaces,
        namespace_selector,
        topology_key: Sym::new(&t.topology_key),
    })
}

/// Compiles one side of `podAffinity` or `podAntiAffinity` (the two API
/// types have the same fields): its required and preferred terms.
fn compile_terms(
    ctx: &Ctx<'_>,
    base: &str,
    required: Option<&[corev1::PodAffinityTerm]>,
    preferred: Option<&[corev1::WeightedPodAffinityTerm]>,
    own_ns: Sym,
    own_labels: &Labels,
) -> Result<(Vec<AffinityTerm>, Vec<WeightedAffinityTerm>), CompileError> {
    let required = required
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            compile_term(
                ctx,
                &format!("{base}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                t,
                own_ns,
                own_labels,
            )
        })
        .collect::<Result<_, _>>()?;
    let preferred = preferred
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let f = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            Ok(WeightedAffinityTerm {
                weight: check_weight(ctx, &f, w.weight)?,
                term: compile_term(
                    ctx,
                    &format!("{f}.podAffinityTerm"),
                    &w.pod_affinity_term,
                    own_ns,
                    own_labels,
                )?,
            })
        })
        .collect::<Result<_, CompileError>>()?;
    Ok((required, preferred))
}

fn check_weight(ctx: &Ctx<'_>, field: &str, w: i32) -> Result<i32, CompileError> {
    if (1..=100).contains(&w) {
        Ok(w)
    } else {
        Err(ctx.err(format!("{field}.weight"), format!("{w} is outside 1..=100")))
    }
}

impl PodSpecInfo {
    /// A spec asking for nothing (for placeholder pods in error reports).
    pub fn empty() -> PodSpecInfo {
        PodSpecInfo {
            raw: Arc::new(corev1::PodSpec::default()),
            requests: ResourceVec::default(),
            non_zero_requests: ResourceVec::default(),
            node_selector: None,
            required_node_affinity: None,
            preferred_node_affinity: Vec::new(),
            tolerations: Vec::new(),
            host_ports: SmallVec::new(),
            spread_constraints: Vec::new(),
            affinity: PodAffinity::default(),
            scheduling_gates: Vec::new(),
            images: SmallVec::new(),
            node_name: None,
            preemption_policy: PreemptionPolicy::default(),
        }
    }

    /// Compiles a pod spec. `key` names the pod in errors; `labels` are the
    /// pod's own (for `matchLabelKeys`).
    pub fn compile(
        key: &str,
        namespace: &str,
        labels: &Labels,
        spec: &corev1::PodSpec,
    ) -> Result<PodSpecInfo, CompileError> {
        let ctx = Ctx { pod: key };
        let own_ns = Sym::new(namespace);
        let (requests, non_zero_requests) = pod_requests(&ctx, spec)?;
        let node_selector = spec
            .node_selector
            .as_ref()
            .filter(|m| !m.is_empty())
            .map(Selector::from_exact);
        let na = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref());
        let required_node_affinity = na
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(NodeSelector::compile)
            .transpose()
            .map_err(|e| {
                ctx.err(
                    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
                    e,
                )
            })?;
        let mut preferred_node_affinity = Vec::new();
        for (i, p) in na
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!(
                "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
            );
            let w = check_weight(&ctx, &field, p.weight)?;
            let t = NodeSelectorTerm::compile(&p.preference)
                .map_err(|e| ctx.err(format!("{field}.preference"), e))?;
            preferred_node_affinity.push((w, t));
        }
        let tolerations = spec
            .tolerations
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| {
                Toleration::compile(t).map_err(|e| ctx.err(format!("spec.tolerations[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut host_ports = SmallVec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        protocol: Sym::new(p.protocol.as_deref().unwrap_or("TCP")),
                        ip: Sym::new(
                            p.host_ip
                                .as_deref()
                                .filter(|s| !s.is_empty())
                                .unwrap_or("0.0.0.0"),
                        ),
                        port: hp,
                    });
                }
            }
        }
        let mut spread_constraints = Vec::new();
        for (i, c) in spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .enumerate()
        {
            let field = format!("spec.topologySpreadConstraints[{i}]");
            if c.max_skew < 1 {
                return Err(ctx.err(format!("{field}.maxSkew"), "must be at least 1"));
            }
            let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
                "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
                "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
                other => {
                    return Err(ctx.err(
                        format!("{field}.whenUnsatisfiable"),
                        format!("{other:?} is neither DoNotSchedule nor ScheduleAnyway"),
                    ));
                }
            };
            if let Some(m) = c.min_domains {
                if m < 1 {
                    return Err(ctx.err(format!("{field}.minDomains"), "must be at least 1"));
                }
                if when_unsatisfiable != WhenUnsatisfiable::DoNotSchedule {
                    return Err(ctx.err(
                        format!("{field}.minDomains"),
                        "may only be set with whenUnsatisfiable DoNotSchedule",
                    ));
                }
            }
            let policy = |v: Option<&str>, default, name: &str| match v {
                None => Ok(default),
                Some("Honor") => Ok(NodeInclusionPolicy::Honor),
                Some("Ignore") => Ok(NodeInclusionPolicy::Ignore),
                Some(o) => Err(ctx.err(
                    format!("{field}.{name}"),
                    format!("{o:?} is neither Honor nor Ignore"),
                )),
            };
            let mut selector = c
                .label_selector
                .as_ref()
                .map(Selector::compile)
                .transpose()
                .map_err(|e| ctx.err(format!("{field}.labelSelector"), e))?;
            for k in c.match_label_keys.iter().flatten() {
                let key = Sym::new(k);
                if let (Some(sel), Some(v)) = (selector.as_mut(), labels.get(key)) {
                    sel.reqs.push(Requirement {
                        key,
                        op: Op::In(SmallVec::from_elem(v, 1)),
                    });
                }
            }
            if c.topology_key.is_empty() {
                return Err(ctx.err(format!("{field}.topologyKey"), "must not be empty"));
            }
            spread_constraints.push(SpreadConstraint {
                max_skew: c.max_skew,
                topology_key: Sym::new(&c.topology_key),
                when_unsatisfiable,
                selector,
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
            });
        }
        let mut affinity = PodAffinity::default();
        if let Some(a) = spec.affinity.as_ref() {
            if let Some(pa) = &a.pod_affinity {
                (affinity.required, affinity.preferred) = compile_terms(
                    &ctx,
                    "spec.affinity.podAffinity",
                    pa.required_during_scheduling_ignored_during_execution
                        .as_deref(),
                    pa.preferred_during_scheduling_ignored_during_execution
                        .as_deref(),
                    own_ns,
                    labels,
                )?;
            }
            if let Some(pa) = &a.pod_anti_affinity {
                (affinity.required_anti, affinity.preferred_anti) = compile_terms(
                    &ctx,
                    "spec.affinity.podAntiAffinity",
                    pa.required_during_scheduling_ignored_during_execution
                        .as_deref(),
                    pa.preferred_during_scheduling_ignored_during_execution
                        .as_deref(),
                    own_ns,
                    labels,
                )?;
            }
        }
        let images = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.as_deref())
            .filter(|i| !i.is_empty())
            .map(|i| Sym::new(&normalize_image(i)))
            .collect();
        let preemption_policy = match spec.preemption_policy.as_deref() {
            None | Some("PreemptLowerPriority") => PreemptionPolicy::PreemptLowerPriority,
            Some("Never") => PreemptionPolicy::Never,
            Some(o) => {
                return Err(ctx.err(
                    "spec.preemptionPolicy",
                    format!("{o:?} is neither PreemptLowerPriority nor Never"),
                ));
            }
        };
        Ok(PodSpecInfo {
            raw: Arc::new(spec.clone()),
            requests,
            non_zero_requests,
            node_selector,
            required_node_affinity,
            preferred_node_affinity,
            tolerations,
            host_ports,
            spread_constraints,
            affinity,
            scheduling_gates: spec
                .scheduling_gates
                .iter()
                .flatten()
                .map(|g| g.name.clone())
                .collect(),
            images,
            node_name: spec
                .node_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(Sym::new),
            preemption_policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_from_json(v: serde_json::Value) -> corev1::Pod {
        serde_json::from_value(v).unwrap()
    }

    /// Pods of two Deployments (own labels, annotations, namespace and
    /// selectors in their inter-pod rules) share a placement hash but not
    /// an equivalence; a difference in resources or node rules separates
    /// them.
    #[test]
    fn placement_hash_leaves_out_identity_and_inter_pod_rules() {
        let pod = |app: &str, ns: &str, cpu: &str, zone: Option<&str>| {
            let mut spec = serde_json::json!({
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": app}}}
                ]}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": app}}}]
            });
            if let Some(z) = zone {
                spec["nodeSelector"] = serde_json::json!({"zone": z});
            }
            let p = pod_from_json(serde_json::json!({
                "metadata": {"name": app, "namespace": ns, "labels": {"app": app},
                             "annotations": {"rev": app}},
                "spec": spec
            }));
            PodInfo::compile(&p).unwrap()
        };
        let a = pod("a", "ns1", "100m", None);
        let b = pod("b", "ns2", "100m", None);
        assert_eq!(a.placement, b.placement);
        assert_ne!(a.equivalence, b.equivalence);
        let again = pod("a", "ns1", "100m", None);
        assert_eq!(a.equivalence, again.equivalence);
        assert_ne!(a.placement, pod("a", "ns1", "200m", None).placement);
        assert_ne!(a.placement, pod("a", "ns1", "100m", Some("z1")).placement);
        // Without inter-pod rules the placement hash is the spec's alone.
        let bare = |app: &str| {
            PodInfo::compile(&pod_from_json(serde_json::json!({
                "metadata": {"name": app, "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]}
            })))
            .unwrap()
        };
        assert_eq!(bare("x").placement, bare("y").placement);
        assert_ne!(bare("x").equivalence, bare("y").equivalence);
        assert_ne!(bare("x").placement, a.placement);
    }

    #[test]
    fn requests_follow_init_container_and_sidecar_rules() {
        // Example from the Kubernetes docs on sidecar containers' resource
        // sharing: app 100m+50m; init 200m; sidecar 50m (restartable) before
        // another init of 100m.
        let p = pod_from_json(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "50m"}}}
                ],
                "initContainers": [
                    {"name": "i1", "resources": {"requests": {"cpu": "200m"}}},
                    {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                    {"name": "i2", "resources": {"requests": {"cpu": "300m", "memory": "1Gi"}}}
                ],
                "overhead": {"cpu": "10m"}
            }
        }));
        let info = PodInfo::compile(&p).unwrap();
        let r = &info.spec.requests;
        // apps+sidecar = 200m; init max = max(200, 300+50) = 350m; + overhead.
        assert_eq!(r[ResourceId::CPU], 360);
        // memory: apps 64Mi vs init i2 1Gi.
        assert_eq!(r[ResourceId::MEMORY], 1 << 30);
        // Non-zero: containers without a memory request count 200Mi each;
        // i2 starts after the sidecar, so it sees 1Gi + the sidecar's 200Mi.
        assert_eq!(
            info.spec.non_zero_requests[ResourceId::MEMORY],
            (1 << 30) + DEFAULT_MEMORY_REQUEST
        );
    }

    #[test]
    fn negative_quantities_are_refused_naming_the_resource() {
        for (spec, want) in [
            (
                serde_json::json!({"containers": [{"name": "a", "resources": {"requests": {"memory": "-1Gi"}}}]}),
                "memory: \"-1Gi\" is negative",
            ),
            (
                serde_json::json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "-2"}}}]}),
                "cpu: \"-2\" is negative",
            ),
            (
                serde_json::json!({"containers": [{"name": "a"}], "overhead": {"cpu": "-10m"}}),
                "cpu: \"-10m\" is negative",
            ),
            (
                serde_json::json!({"containers": [{"name": "a"}], "resources": {"requests": {"cpu": "-1"}}}),
                "cpu: \"-1\" is negative",
            ),
        ] {
            let p = pod_from_json(
                serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}),
            );
            let e = PodInfo::compile(&p).expect_err("refused").to_string();
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn limits_default_requests_and_nonzero_defaults_apply() {
        let p = pod_from_json(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "resources": {"limits": {"cpu": "1", "example.com/foo": "2"}}},
                {"name": "b"}
            ]}
        }));
        let info = PodInfo::compile(&p).unwrap();
        assert_eq!(info.spec.requests[ResourceId::CPU], 1000);
        assert_eq!(
            info.spec.requests[ResourceId::lookup("example.com/foo").unwrap()],
            2
        );
        assert_eq!(info.spec.non_zero_requests[ResourceId::CPU], 1100);
        assert_eq!(
            info.spec.non_zero_requests[ResourceId::MEMORY],
            2 * DEFAULT_MEMORY_REQUEST
        );
        assert_eq!(info.namespace.as_str(), "default");
    }

    #[test]
    fn bad_fields_are_named() {
        let p = pod_from_json(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "lots"}}}]}
        }));
        let e = PodInfo::compile(&p).unwrap_err();
        assert_eq!(e.field, "spec.containers[0].resources");
        assert!(e.to_string().contains("ns/p"), "{e}");
        let p = pod_from_json(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes"}
            ]}
        }));
        let e = PodInfo::compile(&p).unwrap_err();
        assert_eq!(
            e.field,
            "spec.topologySpreadConstraints[0].whenUnsatisfiable"
        );
    }

    #[test]
    fn affinity_terms_default_to_own_namespace() {
        let p = pod_from_json(serde_json::json!({
            "metadata": {"name": "p", "namespace": "team", "labels": {"app": "web"}},
            "spec": {"containers": [], "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
                ]
            }}}
        }));
        let info = PodInfo::compile(&p).unwrap();
        let t = &info.spec.affinity.required_anti[0];
        let none = NamespaceLabels::default();
        assert!(t.matches(Sym::new("team"), &info.labels, &none));
        assert!(!t.matches(Sym::new("other"), &info.labels, &none));
        assert!(!t.matches(Sym::new("team"), &Labels::default(), &none));
    }
}
