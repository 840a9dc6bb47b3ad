//! The result of a plugin call, with kube-scheduler's codes, and the
//! aggregation of per-node reasons into one message a person can read.

use crate::model::NodeId;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::fmt;

/// A status code, as kube-scheduler's framework defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The plugin ran and is satisfied.
    Success,
    /// An internal error; the pod is retried with backoff.
    Error,
    /// The pod does not fit now; preemption may help.
    Unschedulable,
    /// The pod does not fit and preemption cannot help on this node.
    UnschedulableAndUnresolvable,
    /// Permit only: hold the pod until allowed, rejected or timed out.
    Wait,
    /// The plugin has nothing to do for this pod (PreFilter, PreScore, Bind).
    Skip,
}

/// A reason text: static strings do not allocate.
pub type Reason = Cow<'static, str>;

/// The outcome of one plugin call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    reasons: SmallVec<[Reason; 1]>,
    plugin: Option<&'static str>,
}

impl Default for Status {
    fn default() -> Self {
        Status::success()
    }
}

impl Status {
    /// Success, with no allocation.
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: SmallVec::new_const(),
            plugin: None,
        }
    }

    /// A status with `code` and one reason.
    pub fn new(code: Code, reason: impl Into<Reason>) -> Status {
        let mut reasons = SmallVec::new();
        reasons.push(reason.into());
        Status {
            code,
            reasons,
            plugin: None,
        }
    }

    /// `Unschedulable` with a reason.
    pub fn unschedulable(reason: impl Into<Reason>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }

    /// `UnschedulableAndUnresolvable` with a reason.
    pub fn unresolvable(reason: impl Into<Reason>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    /// `Error` with a message.
    pub fn error(reason: impl Into<Reason>) -> Status {
        Status::new(Code::Error, reason)
    }

    /// `Skip`.
    pub const fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: SmallVec::new_const(),
            plugin: None,
        }
    }

    /// `Wait` (Permit only).
    pub const fn wait() -> Status {
        Status {
            code: Code::Wait,
            reasons: SmallVec::new_const(),
            plugin: None,
        }
    }

    /// Adds another reason.
    pub fn with_reason(mut self, reason: impl Into<Reason>) -> Status {
        self.reasons.push(reason.into());
        self
    }

    /// Records which plugin produced this status (the engine does this).
    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = Some(plugin);
        self
    }

    /// The code.
    #[inline]
    pub fn code(&self) -> Code {
        self.code
    }

    /// The reasons.
    pub fn reasons(&self) -> &[Reason] {
        &self.reasons
    }

    /// The plugin that produced it, if recorded.
    pub fn plugin(&self) -> Option<&'static str> {
        self.plugin
    }

    /// Whether the code is `Success`.
    #[inline]
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Whether the code is `Skip`.
    #[inline]
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// Whether the code is one of the two unschedulable codes.
    #[inline]
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    /// The reasons joined with `, `.
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.code)?;
        if let Some(p) = self.plugin {
            write!(f, " ({p})")?;
        }
        if !self.reasons.is_empty() {
            write!(f, ": {}", self.message())?;
        }
        Ok(())
    }
}

/// Why a pod fits no node: the status of each rejected node and any
/// PreFilter rejection.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    /// Per-node rejections.
    pub node_statuses: Vec<(NodeId, Status)>,
    /// A PreFilter (or other whole-pod) rejection, which applies to all nodes.
    pub pre_filter: Option<Status>,
    /// Plugins that rejected the pod; they decide which events requeue it.
    pub plugins: SmallVec<[&'static str; 4]>,
}

impl Diagnosis {
    /// Records a plugin as a rejector.
    pub fn add_plugin(&mut self, p: &'static str) {
        if !self.plugins.contains(&p) {
            self.plugins.push(p);
        }
    }

    /// kube-scheduler's message: `0/N nodes are available: 9000 Insufficient
    /// cpu, 7000 node(s) had untolerated taint {..}.` Reasons are counted per
    /// node, sorted by text.
    pub fn message(&self, total_nodes: usize) -> String {
        if let Some(s) = &self.pre_filter {
            return format!(
                "0/{total_nodes} nodes are available: {}.",
                if s.reasons().is_empty() {
                    format!("{:?}", s.code())
                } else {
                    s.message()
                }
            );
        }
        let mut counts: rustc_hash::FxHashMap<&str, usize> = Default::default();
        for (_, s) in &self.node_statuses {
            for r in s.reasons() {
                *counts.entry(r.as_ref()).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = counts
            .into_iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort_by(|a, b| {
            let ta = a.split_once(' ').map(|x| x.1).unwrap_or(a);
            let tb = b.split_once(' ').map(|x| x.1).unwrap_or(b);
            ta.cmp(tb)
        });
        if parts.is_empty() {
            format!("0/{total_nodes} nodes are available.")
        } else {
            format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_aggregates_like_kube_scheduler() {
        let mut d = Diagnosis::default();
        for i in 0..3 {
            d.node_statuses
                .push((NodeId(i), Status::unschedulable("Insufficient cpu")));
        }
        d.node_statuses.push((
            NodeId(3),
            Status::unschedulable("Insufficient cpu").with_reason("Insufficient memory"),
        ));
        d.node_statuses.push((
            NodeId(4),
            Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}"),
        ));
        assert_eq!(
            d.message(6),
            "0/6 nodes are available: 4 Insufficient cpu, 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}."
        );
        let d = Diagnosis {
            pre_filter: Some(Status::unresolvable("pod group is not complete")),
            ..Default::default()
        };
        assert_eq!(
            d.message(2),
            "0/2 nodes are available: pod group is not complete."
        );
    }

    #[test]
    fn success_does_not_allocate_reasons() {
        let s = Status::success();
        assert!(s.is_success());
        assert!(s.reasons().is_empty());
        assert!(Status::unresolvable("x").is_rejected());
        assert!(!Status::error("x").is_rejected());
    }
}
