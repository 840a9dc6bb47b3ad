//! Labels and compiled selectors.
//!
//! Selectors are compiled once, when a pod is compiled, into interned
//! requirements, so matching on the hot path compares integers only.

use crate::intern::Sym;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// A set of labels, sorted by key symbol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(SmallVec<[(Sym, Sym); 6]>);

impl Labels {
    /// Builds from key/value pairs; later duplicates win.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
        let mut v: SmallVec<[(Sym, Sym); 6]> = SmallVec::new();
        for (k, val) in pairs {
            let k = Sym::new(k);
            let val = Sym::new(val);
            if let Some(e) = v.iter_mut().find(|(kk, _)| *kk == k) {
                e.1 = val;
            } else {
                v.push((k, val));
            }
        }
        v.sort_unstable_by_key(|(k, _)| *k);
        Labels(v)
    }

    /// Builds from a Kubernetes label map.
    pub fn from_map(m: Option<&BTreeMap<String, String>>) -> Labels {
        match m {
            Some(m) => Labels::from_pairs(m.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            None => Labels::default(),
        }
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: Sym) -> Option<Sym> {
        self.0
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| self.0[i].1)
    }

    /// The value of `key` given as text.
    pub fn get_str(&self, key: &str) -> Option<&'static str> {
        Sym::lookup(key)
            .and_then(|k| self.get(k))
            .map(|v| v.as_str())
    }

    /// Whether `key` is present.
    #[inline]
    pub fn has(&self, key: Sym) -> bool {
        self.get(key).is_some()
    }

    /// Iterates the pairs.
    pub fn iter(&self) -> impl Iterator<Item = (Sym, Sym)> + '_ {
        self.0.iter().copied()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A selector operator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Value is one of the listed values.
    In(SmallVec<[Sym; 4]>),
    /// Key absent, or value not among the listed values.
    NotIn(SmallVec<[Sym; 4]>),
    /// Key present.
    Exists,
    /// Key absent.
    DoesNotExist,
    /// Value parses as an integer greater than this (node selectors only).
    Gt(i64),
    /// Value parses as an integer less than this (node selectors only).
    Lt(i64),
}

/// One requirement on one label key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The label key.
    pub key: Sym,
    /// What the value must satisfy.
    pub op: Op,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    #[inline]
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(self.key);
        match &self.op {
            Op::In(vals) => v.is_some_and(|v| vals.contains(&v)),
            Op::NotIn(vals) => v.is_none_or(|v| !vals.contains(&v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt(n) => v
                .and_then(|v| v.as_str().parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Op::Lt(n) => v
                .and_then(|v| v.as_str().parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

/// Why a selector could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// An operator Kubernetes does not define for this selector kind.
    #[error("unknown operator {0:?}")]
    UnknownOperator(String),
    /// In/NotIn with no values, or Exists/DoesNotExist with values.
    #[error("operator {op} on key {key:?} {why}")]
    BadValues {
        /// The operator.
        op: String,
        /// The key.
        key: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Gt/Lt with a value that is not one integer.
    #[error("operator {op} on key {key:?} needs exactly one integer value")]
    NotInteger {
        /// The operator.
        op: String,
        /// The key.
        key: String,
    },
}

fn compile_requirement(
    key: &str,
    op: &str,
    values: Option<&Vec<String>>,
    allow_numeric: bool,
) -> Result<Requirement, SelectorError> {
    let vals: SmallVec<[Sym; 4]> = values
        .map(|v| v.iter().map(|s| Sym::new(s)).collect())
        .unwrap_or_default();
    let bad = |why| SelectorError::BadValues {
        op: op.to_owned(),
        key: key.to_owned(),
        why,
    };
    let op = match op {
        "In" | "NotIn" if vals.is_empty() => return Err(bad("needs at least one value")),
        "In" => Op::In(vals),
        "NotIn" => Op::NotIn(vals),
        "Exists" | "DoesNotExist" if !vals.is_empty() => return Err(bad("takes no values")),
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        "Gt" | "Lt" if allow_numeric => {
            let n = if vals.len() == 1 {
                vals[0].as_str().parse::<i64>().ok()
            } else {
                None
            };
            let n = n.ok_or_else(|| SelectorError::NotInteger {
                op: op.to_owned(),
                key: key.to_owned(),
            })?;
            if op == "Gt" { Op::Gt(n) } else { Op::Lt(n) }
        }
        other => return Err(SelectorError::UnknownOperator(other.to_owned())),
    };
    Ok(Requirement {
        key: Sym::new(key),
        op,
    })
}

/// A compiled `metav1.LabelSelector`: requirements ANDed. An empty selector
/// matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    /// The requirements, all of which must hold.
    pub reqs: SmallVec<[Requirement; 2]>,
}

impl Selector {
    /// Compiles a Kubernetes label selector.
    pub fn compile(sel: &metav1::LabelSelector) -> Result<Selector, SelectorError> {
        let mut reqs = SmallVec::new();
        if let Some(ml) = &sel.match_labels {
            for (k, v) in ml {
                reqs.push(Requirement {
                    key: Sym::new(k),
                    op: Op::In(SmallVec::from_elem(Sym::new(v), 1)),
                });
            }
        }
        if let Some(me) = &sel.match_expressions {
            for e in me {
                reqs.push(compile_requirement(
                    &e.key,
                    &e.operator,
                    e.values.as_ref(),
                    false,
                )?);
            }
        }
        Ok(Selector { reqs })
    }

    /// A selector from exact key=value pairs (a `nodeSelector`).
    pub fn from_exact(m: &BTreeMap<String, String>) -> Selector {
        Selector {
            reqs: m
                .iter()
                .map(|(k, v)| Requirement {
                    key: Sym::new(k),
                    op: Op::In(SmallVec::from_elem(Sym::new(v), 1)),
                })
                .collect(),
        }
    }

    /// Whether `labels` satisfy every requirement.
    #[inline]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

/// One compiled `NodeSelectorTerm`: label requirements and `metadata.name`
/// field requirements, all ANDed. A term with neither matches nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeSelectorTerm {
    /// Requirements on node labels.
    pub labels: SmallVec<[Requirement; 2]>,
    /// Requirements on the node name (`matchFields` on `metadata.name`).
    pub names: SmallVec<[Op; 1]>,
}

impl NodeSelectorTerm {
    /// Compiles a Kubernetes `NodeSelectorTerm`.
    pub fn compile(
        t: &k8s_openapi::api::core::v1::NodeSelectorTerm,
    ) -> Result<NodeSelectorTerm, SelectorError> {
        let mut labels = SmallVec::new();
        for e in t.match_expressions.iter().flatten() {
            labels.push(compile_requirement(
                &e.key,
                &e.operator,
                e.values.as_ref(),
                true,
            )?);
        }
        let mut names = SmallVec::new();
        for f in t.match_fields.iter().flatten() {
            if f.key != "metadata.name" {
                return Err(SelectorError::BadValues {
                    op: f.operator.clone(),
                    key: f.key.clone(),
                    why: "is not a supported field (only metadata.name is)",
                });
            }
            if !matches!(f.operator.as_str(), "In" | "NotIn") {
                return Err(SelectorError::UnknownOperator(f.operator.clone()));
            }
            names.push(compile_requirement(&f.key, &f.operator, f.values.as_ref(), false)?.op);
        }
        Ok(NodeSelectorTerm { labels, names })
    }

    /// Whether a node with `labels` and `name` satisfies this term.
    #[inline]
    pub fn matches(&self, labels: &Labels, name: Sym) -> bool {
        if self.labels.is_empty() && self.names.is_empty() {
            return false;
        }
        self.labels.iter().all(|r| r.matches(labels))
            && self.names.iter().all(|op| match op {
                Op::In(v) => v.contains(&name),
                Op::NotIn(v) => !v.contains(&name),
                _ => false,
            })
    }
}

/// A compiled `NodeSelector`: terms ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeSelector {
    /// The terms, any of which may match.
    pub terms: Vec<NodeSelectorTerm>,
}

impl NodeSelector {
    /// Compiles a Kubernetes `NodeSelector`.
    pub fn compile(
        s: &k8s_openapi::api::core::v1::NodeSelector,
    ) -> Result<NodeSelector, SelectorError> {
        Ok(NodeSelector {
            terms: s
                .node_selector_terms
                .iter()
                .map(NodeSelectorTerm::compile)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether any term matches.
    #[inline]
    pub fn matches(&self, labels: &Labels, name: Sym) -> bool {
        self.terms.iter().any(|t| t.matches(labels, name))
    }
}

/// Checks a Kubernetes qualified name (`[prefix/]name`, as label keys,
/// annotation keys and extended resource names are validated), returning
/// why it is not one.
///
/// ```
/// use strata_scheduler::labels::check_qualified_name;
/// assert!(check_qualified_name("topology.kubernetes.io/zone").is_ok());
/// assert!(check_qualified_name("bad key!").is_err());
/// ```
pub fn check_qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(format!("{s:?}: prefix part must not be empty"));
        }
        if !is_dns1123_subdomain(p) {
            return Err(format!(
                "{s:?}: prefix part must be a lowercase DNS subdomain of at most 253 characters"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("{s:?}: name part must not be empty"));
    }
    if name.len() > 63 {
        return Err(format!(
            "{s:?}: name part must be no more than 63 characters"
        ));
    }
    let b = name.as_bytes();
    let ok_inner = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    if !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
        || !b.iter().all(|&c| ok_inner(c))
    {
        return Err(format!(
            "{s:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Whether `s` is a lowercase RFC 1123 DNS subdomain (at most 253
/// characters of dot-separated labels).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1 as corev1;

    fn expr(key: &str, op: &str, vals: &[&str]) -> metav1::LabelSelectorRequirement {
        metav1::LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if vals.is_empty() {
                None
            } else {
                Some(vals.iter().map(|s| s.to_string()).collect())
            },
        }
    }

    #[test]
    fn label_selector_operators() {
        let l = Labels::from_pairs([("app", "web"), ("tier", "front")]);
        let sel = |e| {
            Selector::compile(&metav1::LabelSelector {
                match_expressions: Some(vec![e]),
                match_labels: None,
            })
            .unwrap()
        };
        assert!(sel(expr("app", "In", &["web", "db"])).matches(&l));
        assert!(!sel(expr("app", "In", &["db"])).matches(&l));
        assert!(sel(expr("app", "NotIn", &["db"])).matches(&l));
        assert!(sel(expr("zone", "NotIn", &["a"])).matches(&l));
        assert!(sel(expr("tier", "Exists", &[])).matches(&l));
        assert!(!sel(expr("tier", "DoesNotExist", &[])).matches(&l));
        assert!(Selector::default().matches(&l));
        assert!(
            Selector::compile(&metav1::LabelSelector {
                match_expressions: Some(vec![expr("a", "Gt", &["1"])]),
                match_labels: None
            })
            .is_err()
        );
        assert!(
            Selector::compile(&metav1::LabelSelector {
                match_expressions: Some(vec![expr("a", "In", &[])]),
                match_labels: None
            })
            .is_err()
        );
    }

    #[test]
    fn node_selector_terms() {
        let l = Labels::from_pairs([("gpu-count", "8"), ("zone", "z1")]);
        let term = |exprs: Vec<corev1::NodeSelectorRequirement>| {
            NodeSelectorTerm::compile(&corev1::NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: None,
            })
            .unwrap()
        };
        let r = |k: &str, op: &str, v: &[&str]| corev1::NodeSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: Some(v.iter().map(|s| s.to_string()).collect()),
        };
        let n = Sym::new("node-1");
        assert!(term(vec![r("gpu-count", "Gt", &["4"])]).matches(&l, n));
        assert!(!term(vec![r("gpu-count", "Lt", &["4"])]).matches(&l, n));
        assert!(!term(vec![r("zone", "Gt", &["4"])]).matches(&l, n));
        assert!(term(vec![r("zone", "In", &["z1"]), r("gpu-count", "Gt", &["7"])]).matches(&l, n));
        // An empty term matches nothing.
        assert!(!term(vec![]).matches(&l, n));
        let by_name = NodeSelectorTerm::compile(&corev1::NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![r("metadata.name", "In", &["node-1"])]),
        })
        .unwrap();
        assert!(by_name.matches(&l, n));
        assert!(!by_name.matches(&l, Sym::new("node-2")));
    }
}
