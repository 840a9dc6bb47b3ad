//! Groups in scenarios: stamping group membership onto a workload's pods,
//! auditing binds as they happen, and measuring how groups were placed.
//!
//! A workload with `group: {name: job, size: 8}` labels pod `i` with
//! `strata.io/pod-group: job-{i / size}`; the template's annotations
//! (`strata.io/min-member`, `strata.io/topology-required-level`, ...) define
//! the group, so a scenario needs no PodGroup objects. Two workloads that
//! share a group `name` (prefill and decode templates) build PD units: pod
//! `i` of each joins unit `{name}-{i / size}`.
//!
//! - [`WorkloadGroup::stamp`]: the labels, in `stamp.rs`;
//! - [`BindAudit`]: the "never partly bound" check at every bind and each
//!   group's time to place, in `audit.rs`;
//! - [`GroupReport`] and [`compare`]: what a finished run measured, group
//!   aware and pod by pod, in `report.rs`.

mod audit;
mod report;
mod stamp;

pub use audit::{BindAudit, CycleMark, GroupTimes, Violation};
pub use report::{Comparison, GroupReport, POD_BY_POD_CONFIG, compare, measure};
pub use stamp::{COSCHEDULING_LABEL, GROUP_LABEL, GroupKind, WorkloadGroup, group_key};
