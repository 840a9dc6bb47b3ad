//! Taints and tolerations, with the matching rules of the Kubernetes docs
//! ("Taints and Tolerations").

use crate::intern::Sym;
use k8s_openapi::api::core::v1 as corev1;

/// A taint's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    /// New pods that do not tolerate it are not scheduled.
    NoSchedule,
    /// The scheduler tries to avoid the node.
    PreferNoSchedule,
    /// As NoSchedule, and running pods are evicted (by the taint manager).
    NoExecute,
}

impl TaintEffect {
    /// Parses the API's spelling.
    pub fn parse(s: &str) -> Option<TaintEffect> {
        match s {
            "NoSchedule" => Some(TaintEffect::NoSchedule),
            "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
            "NoExecute" => Some(TaintEffect::NoExecute),
            _ => None,
        }
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taint {
    /// Key.
    pub key: Sym,
    /// Value (may be empty).
    pub value: Sym,
    /// Effect.
    pub effect: TaintEffect,
}

impl Taint {
    /// Compiles an API taint; `None` for an effect the API does not define.
    pub fn compile(t: &corev1::Taint) -> Option<Taint> {
        Some(Taint {
            key: Sym::new(&t.key),
            value: Sym::new(t.value.as_deref().unwrap_or("")),
            effect: TaintEffect::parse(&t.effect)?,
        })
    }
}

impl std::fmt::Display for Taint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{{{}: }}", self.key)
        } else {
            write!(f, "{{{}: {}}}", self.key, self.value)
        }
    }
}

/// Toleration operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TolerationOp {
    /// Key (and effect) must match; value is ignored.
    Exists,
    /// Key, value (and effect) must match.
    Equal,
}

/// A pod toleration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Key; empty with `Exists` tolerates every taint.
    pub key: Sym,
    /// Operator.
    pub op: TolerationOp,
    /// Value for `Equal`.
    pub value: Sym,
    /// Effect; `None` matches every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Compiles an API toleration. Unknown operators and effects are errors.
    pub fn compile(t: &corev1::Toleration) -> Result<Toleration, String> {
        let op = match t.operator.as_deref().unwrap_or("Equal") {
            "Equal" | "" => TolerationOp::Equal,
            "Exists" => TolerationOp::Exists,
            other => return Err(format!("unknown toleration operator {other:?}")),
        };
        let effect = match t.effect.as_deref().unwrap_or("") {
            "" => None,
            e => Some(
                TaintEffect::parse(e).ok_or_else(|| format!("unknown toleration effect {e:?}"))?,
            ),
        };
        let key = Sym::new(t.key.as_deref().unwrap_or(""));
        if key.is_empty() && op != TolerationOp::Exists {
            return Err("a toleration with an empty key must use operator Exists".into());
        }
        Ok(Toleration {
            key,
            op,
            value: Sym::new(t.value.as_deref().unwrap_or("")),
            effect,
        })
    }

    /// Whether this toleration tolerates `taint`.
    #[inline]
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(e) = self.effect
            && e != taint.effect
        {
            return false;
        }
        if self.key.is_empty() {
            // Validation guarantees Exists here: tolerates everything.
            return true;
        }
        if self.key != taint.key {
            return false;
        }
        match self.op {
            TolerationOp::Exists => true,
            TolerationOp::Equal => self.value == taint.value,
        }
    }
}

/// Whether any of `tolerations` tolerates `taint`.
#[inline]
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration::compile(&corev1::Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            toleration_seconds: None,
        })
        .unwrap()
    }

    #[test]
    fn matching_follows_the_docs() {
        let taint = Taint {
            key: Sym::new("key1"),
            value: Sym::new("value1"),
            effect: TaintEffect::NoSchedule,
        };
        assert!(tol("key1", "Equal", "value1", "NoSchedule").tolerates(&taint));
        assert!(tol("key1", "Exists", "", "NoSchedule").tolerates(&taint));
        assert!(tol("key1", "Exists", "", "").tolerates(&taint));
        assert!(!tol("key1", "Equal", "value2", "NoSchedule").tolerates(&taint));
        assert!(!tol("key1", "Equal", "value1", "NoExecute").tolerates(&taint));
        assert!(tol("", "Exists", "", "").tolerates(&taint));
        assert!(!tol("key2", "Exists", "", "").tolerates(&taint));
        assert!(
            Toleration::compile(&corev1::Toleration {
                key: None,
                operator: Some("Equal".into()),
                ..Default::default()
            })
            .is_err()
        );
    }
}
