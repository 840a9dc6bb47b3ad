//! Placement checks on the final state: did the scheduler keep every rule?
//!
//! Written from the API objects alone, apart from the engine, so the check
//! does not share a bug with what it checks. It looks at where pods ended
//! up, not at the order they were placed in:
//!
//! - **resources**: per node, the pods' requests (containers summed, the
//!   largest init container if larger, plus overhead) and their count never
//!   exceed `status.allocatable`;
//! - **node selection**: `nodeSelector`, required node affinity, and
//!   NoSchedule/NoExecute taints tolerated;
//! - **required inter-pod anti-affinity**: no two pods in one topology
//!   domain where either's term selects the other (same namespace unless the
//!   term names namespaces); **required affinity**: a pod's domain holds a
//!   pod its term selects (or the pod matches its own term);
//! - **hard topology spread** (`DoNotSchedule`): per constraint, the
//!   matching pods' count per domain over the nodes the pod may use differs
//!   by at most `maxSkew` between the fullest and emptiest domain. The
//!   scheduler keeps this at each placement; with pods only added it still
//!   holds at the end.

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, HashMap};

/// A quantity in thousandths (`"100m"` → 100, `"2"` → 2000, `"1Ki"` →
/// 1,024,000); `None` when it does not parse.
pub fn milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (num, exp10): (&str, i32) = match suffix {
        "" => (num, 0),
        "m" => (num, -3),
        "k" => (num, 3),
        "M" => (num, 6),
        "G" => (num, 9),
        "T" => (num, 12),
        "P" => (num, 15),
        "E" => (num, 18),
        s if s.starts_with(['e', 'E']) => (num, s[1..].parse().ok()?),
        _ => {
            let bin: i128 = match suffix {
                "Ki" => 1 << 10,
                "Mi" => 1 << 20,
                "Gi" => 1 << 30,
                "Ti" => 1 << 40,
                "Pi" => 1 << 50,
                "Ei" => 1 << 60,
                _ => return None,
            };
            return scaled(num, 3)?.checked_mul(bin);
        }
    };
    scaled(num, exp10 + 3)
}

/// `num × 10^exp`, rounded up to an integer (the API rounds requests up).
fn scaled(num: &str, exp: i32) -> Option<i128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let neg = int.starts_with('-');
    let int = int.trim_start_matches(['+', '-']);
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut v: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let exp = exp - frac.len() as i32;
    if exp >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-exp) as u32)?;
        v = (v + d - 1) / d;
    }
    Some(if neg { -v } else { v })
}

/// Effective requests of a pod, in thousandths, plus `pods: 1000`.
pub fn pod_requests(pod: &Pod) -> BTreeMap<String, i128> {
    let mut sum: BTreeMap<String, i128> = BTreeMap::new();
    let Some(spec) = &pod.spec else {
        return sum;
    };
    let reqs = |c: &k8s_openapi::api::core::v1::Container| -> BTreeMap<String, i128> {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), milli(&v.0)?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    for c in &spec.containers {
        for (k, v) in reqs(c) {
            *sum.entry(k).or_default() += v;
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in reqs(c) {
            let e = sum.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    for (k, v) in spec.overhead.iter().flatten() {
        if let Some(v) = milli(&v.0) {
            *sum.entry(k.clone()).or_default() += v;
        }
    }
    sum.insert("pods".into(), 1000);
    sum
}

/// A rule a placement broke.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which rule: `resources`, `node-selection`, `anti-affinity`,
    /// `affinity`, `topology-spread`, `unknown-node`.
    pub rule: &'static str,
    /// What, naming the pod and node.
    pub detail: String,
}

/// What the check found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PlacementCheck {
    /// Pods checked (bound ones).
    pub pods: usize,
    /// Nodes checked.
    pub nodes: usize,
    /// Every violation (the first 50 kept in full; see `violation_count`).
    pub violations: Vec<Violation>,
    /// How many violations in all.
    pub violation_count: usize,
}

impl PlacementCheck {
    fn add(&mut self, rule: &'static str, detail: String) {
        self.violation_count += 1;
        if self.violations.len() < 50 {
            self.violations.push(Violation { rule, detail });
        }
    }
}

fn labels_of(
    md: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    md.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether `sel` selects `labels` (an absent selector selects nothing, as
/// in affinity terms).
pub fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else { return false };
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or(&[]);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn node_requirement(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(w)) = (
                value.and_then(|v| num(v)),
                values.first().and_then(|w| num(w)),
            ) else {
                return false;
            };
            if r.operator == "Gt" { v > w } else { v < w }
        }
        _ => false,
    }
}

fn term_matches(t: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = labels_of(&node.metadata);
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| node_requirement(r, labels.get(&r.key)))
        && fields.iter().all(|r| {
            let v = (r.key == "metadata.name")
                .then(|| node.metadata.name.clone())
                .flatten();
            node_requirement(r, v.as_ref())
        })
}

/// Whether `pod` may go to `node` by its node selector and required node
/// affinity.
pub fn node_selected(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    let labels = labels_of(&node.metadata);
    for (k, v) in spec.node_selector.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

fn tolerates(t: &Toleration, key: &str, value: Option<&str>, effect: &str) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != effect)
    {
        return false;
    }
    match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) if k != key => false,
        Some(_) => match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == value.unwrap_or(""),
        },
    }
}

/// Whether `pod` tolerates every NoSchedule and NoExecute taint of `node`.
pub fn taints_tolerated(pod: &Pod, node: &Node) -> bool {
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| {
            tols.iter()
                .any(|tol| tolerates(tol, &t.key, t.value.as_deref(), &t.effect))
        })
}

fn ns_of(p: &Pod) -> &str {
    p.metadata.namespace.as_deref().unwrap_or("default")
}

fn term_covers_namespace(term: &PodAffinityTerm, owner: &Pod, other: &Pod) -> bool {
    match term.namespaces.as_deref() {
        Some(list) if !list.is_empty() => list.iter().any(|n| n == ns_of(other)),
        // namespaceSelector: {} means every namespace; other selectors are
        // not checked here (they need Namespace objects).
        _ if term.namespace_selector.is_some() => true,
        _ => ns_of(owner) == ns_of(other),
    }
}

/// Checks the placement of `pods` (each with the node it is bound to) on
/// `nodes`.
pub fn check(nodes: &[Node], pods: &[(&Pod, &str)]) -> PlacementCheck {
    let mut out = PlacementCheck {
        pods: pods.len(),
        nodes: nodes.len(),
        ..Default::default()
    };
    let by_name: HashMap<&str, &Node> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let name = |p: &Pod| format!("{}/{}", ns_of(p), p.metadata.name.as_deref().unwrap_or("?"));

    // Resources and node selection.
    let mut used: HashMap<&str, BTreeMap<String, i128>> = HashMap::new();
    for &(p, n) in pods {
        let Some(node) = by_name.get(n) else {
            out.add(
                "unknown-node",
                format!("{} is bound to {n}, not a node of the run", name(p)),
            );
            continue;
        };
        let u = used.entry(n).or_default();
        for (k, v) in pod_requests(p) {
            *u.entry(k).or_default() += v;
        }
        if !node_selected(p, node) {
            out.add(
                "node-selection",
                format!(
                    "{} on {n}: node selector or required node affinity not met",
                    name(p)
                ),
            );
        }
        if !taints_tolerated(p, node) {
            out.add(
                "node-selection",
                format!(
                    "{} on {n}: a NoSchedule/NoExecute taint not tolerated",
                    name(p)
                ),
            );
        }
    }
    let mut over: Vec<_> = used.iter().collect();
    over.sort_by_key(|(n, _)| **n);
    for (n, u) in over {
        let alloc = by_name[n]
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref());
        for (k, v) in u {
            let have = alloc
                .and_then(|a| a.get(k))
                .and_then(|q| milli(&q.0))
                .unwrap_or(0);
            if *v > have && *v > 0 {
                out.add(
                    "resources",
                    format!("node {n}: {k} requested {v}m > allocatable {have}m"),
                );
            }
        }
    }

    // Inter-pod (anti-)affinity, per topology key: domain of each pod.
    let domain = |p: &(&Pod, &str), key: &str| -> Option<String> {
        by_name
            .get(p.1)
            .and_then(|n| labels_of(&n.metadata).get(key).cloned())
    };
    let mut index: HashMap<(String, String), Vec<usize>> = HashMap::new();
    let mut indexed: std::collections::HashSet<String> = Default::default();
    let mut ensure_index = |key: &str, index: &mut HashMap<(String, String), Vec<usize>>| {
        if indexed.insert(key.to_owned()) {
            for (i, p) in pods.iter().enumerate() {
                if let Some(d) = domain(p, key) {
                    index.entry((key.to_owned(), d)).or_default().push(i);
                }
            }
        }
    };
    for (i, pp) in pods.iter().enumerate() {
        let p = pp.0;
        let Some(aff) = p.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            continue;
        };
        let anti = aff
            .pod_anti_affinity
            .as_ref()
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]);
        for t in anti {
            ensure_index(&t.topology_key, &mut index);
            let Some(d) = domain(pp, &t.topology_key) else {
                continue;
            };
            for &j in &index[&(t.topology_key.clone(), d.clone())] {
                let q = pods[j].0;
                if j != i
                    && term_covers_namespace(t, p, q)
                    && selects(t.label_selector.as_ref(), labels_of(&q.metadata))
                {
                    out.add(
                        "anti-affinity",
                        format!("{} and {} share {}={d}", name(p), name(q), t.topology_key),
                    );
                }
            }
        }
        let affinity = aff
            .pod_affinity
            .as_ref()
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]);
        for t in affinity {
            ensure_index(&t.topology_key, &mut index);
            let ok = domain(pp, &t.topology_key).is_some_and(|d| {
                index[&(t.topology_key.clone(), d)].iter().any(|&j| {
                    let q = pods[j].0;
                    term_covers_namespace(t, p, q)
                        && selects(t.label_selector.as_ref(), labels_of(&q.metadata))
                })
            });
            if !ok {
                out.add(
                    "affinity",
                    format!(
                        "{}: no pod its required affinity selects in its {}",
                        name(p),
                        t.topology_key
                    ),
                );
            }
        }
    }

    // Hard topology spread, once per distinct constraint and namespace.
    let mut seen = std::collections::HashSet::new();
    for &(p, _) in pods {
        let Some(spec) = &p.spec else { continue };
        for c in spec.topology_spread_constraints.iter().flatten() {
            if c.when_unsatisfiable != "DoNotSchedule" {
                continue;
            }
            let key = (
                ns_of(p).to_owned(),
                serde_json::to_string(c).unwrap_or_default(),
            );
            if !seen.insert(key) {
                continue;
            }
            let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
            for n in nodes {
                if node_selected(p, n)
                    && let Some(d) = labels_of(&n.metadata).get(&c.topology_key)
                {
                    counts.entry(d.as_str()).or_insert(0);
                }
            }
            for &(q, n) in pods {
                if ns_of(q) != ns_of(p)
                    || !selects(c.label_selector.as_ref(), labels_of(&q.metadata))
                {
                    continue;
                }
                if let Some(d) = by_name
                    .get(n)
                    .and_then(|n| labels_of(&n.metadata).get(&c.topology_key))
                    && let Some(v) = counts.get_mut(d.as_str())
                {
                    *v += 1;
                }
            }
            let (min, max) = (
                counts.values().min().copied().unwrap_or(0),
                counts.values().max().copied().unwrap_or(0),
            );
            if max - min > i64::from(c.max_skew) {
                out.add(
                    "topology-spread",
                    format!(
                        "{} (as {}): {} skew {} > maxSkew {}",
                        c.topology_key,
                        name(p),
                        counts.len(),
                        max - min,
                        c.max_skew
                    ),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("4"), Some(4000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("500Mi"), Some(500 * (1 << 20) * 1000));
        assert_eq!(milli("32Gi"), Some(32 * (1i128 << 30) * 1000));
        assert_eq!(milli("1k"), Some(1_000_000));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("0.0001"), Some(1));
        assert_eq!(milli("lots"), None);
        assert_eq!(milli(""), None);
    }

    fn node(name: &str, zone: &str, cpu: &str, taint: bool) -> Node {
        let taints = if taint {
            "taints: [{key: dedicated, value: infra, effect: NoSchedule}]"
        } else {
            "{}"
        };
        let spec = if taint {
            format!("spec: {{{taints}}}")
        } else {
            "spec: {}".into()
        };
        yaml(&format!(
            "metadata: {{name: {name}, labels: {{kubernetes.io/hostname: {name}, zone: {zone}}}}}\n{spec}\nstatus: {{allocatable: {{cpu: \"{cpu}\", memory: 1Gi, pods: \"3\"}}}}\n"
        ))
    }

    fn pod(name: &str, extra: &str) -> Pod {
        yaml(&format!(
            "metadata: {{name: {name}, namespace: ns, labels: {{app: a}}}}\nspec:\n  containers: [{{name: c, resources: {{requests: {{cpu: 500m}}}}}}]\n{extra}"
        ))
    }

    #[test]
    fn a_good_placement_passes() {
        let nodes = vec![node("n0", "z0", "1", false), node("n1", "z1", "1", true)];
        let a = pod("a", "");
        let b = pod(
            "b",
            "  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]\n",
        );
        let r = check(&nodes, &[(&a, "n0"), (&b, "n1")]);
        assert_eq!(r.violation_count, 0, "{:?}", r.violations);
    }

    #[test]
    fn each_rule_is_caught() {
        let nodes = vec![
            node("n0", "z0", "1", false),
            node("n1", "z1", "1", true),
            node("n2", "z1", "1", false),
        ];
        // Over cpu on n0 (3 × 500m > 1), and over the pod count (3 is the
        // limit, fine).
        let ps: Vec<Pod> = (0..3).map(|i| pod(&format!("p{i}"), "")).collect();
        let r = check(&nodes, &ps.iter().map(|p| (p, "n0")).collect::<Vec<_>>());
        assert_eq!(
            r.violations
                .iter()
                .filter(|v| v.rule == "resources")
                .count(),
            1,
            "{:?}",
            r.violations
        );

        // Taint not tolerated; node selector not met; unknown node.
        let sel = pod("s", "  nodeSelector: {zone: z0}\n");
        let plain = pod("t", "");
        let r = check(&nodes, &[(&plain, "n1"), (&sel, "n2"), (&plain, "nowhere")]);
        let rules: Vec<_> = r.violations.iter().map(|v| v.rule).collect();
        assert_eq!(
            rules,
            vec!["node-selection", "node-selection", "unknown-node"]
        );

        // Required anti-affinity on hostname: both pods on n2 break it.
        let anti = "  affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: a}}}]}}\n";
        let (x, y) = (pod("x", anti), pod("y", anti));
        assert_eq!(check(&nodes, &[(&x, "n0"), (&y, "n2")]).violation_count, 0);
        let r = check(&nodes, &[(&x, "n2"), (&y, "n2")]);
        assert!(
            r.violations.iter().all(|v| v.rule == "anti-affinity") && r.violation_count == 2,
            "{:?}",
            r.violations
        );

        // Required affinity to zone of a pod labelled app=a: itself counts.
        let aff = "  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: zone, labelSelector: {matchLabels: {app: b}}}]}}\n";
        let lonely = pod("l", aff);
        assert_eq!(
            check(&nodes, &[(&lonely, "n0")]).violations[0].rule,
            "affinity"
        );

        // Hard spread over zones, maxSkew 1: three in z0, none in z1.
        let spread = "  topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: a}}}]\n";
        let sp: Vec<Pod> = (0..2).map(|i| pod(&format!("s{i}"), spread)).collect();
        assert_eq!(
            check(&nodes, &[(&sp[0], "n0"), (&sp[1], "n2")]).violation_count,
            0
        );
        let r = check(&nodes, &[(&sp[0], "n0"), (&sp[1], "n0")]);
        assert_eq!(
            r.violations.iter().map(|v| v.rule).collect::<Vec<_>>(),
            vec!["topology-spread"]
        );
    }

    #[test]
    fn init_containers_and_overhead_count() {
        let p = pod(
            "p",
            "  initContainers: [{name: i, resources: {requests: {cpu: \"2\"}}}]\n  overhead: {cpu: 100m}\n",
        );
        let r = pod_requests(&p);
        assert_eq!(r["cpu"], 2100);
        assert_eq!(r["pods"], 1000);
    }
}
