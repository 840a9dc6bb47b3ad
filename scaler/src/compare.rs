//! The comparison: independent per-role scaling (an HPA per role) against
//! the group scaler, on a day of an LLM trace, through the real engine on a
//! super-node cluster.
//!
//! Every run replays two days of per-minute load ([`crate::trace::stretch`]):
//! the first is history (the group scaler learns its daily profile from
//! it; nothing is measured), the second is measured. Each minute the
//! scaler decides from the previous minute's load (what a metrics
//! pipeline would show it), the engine places what it creates, and
//! virtual time moves a minute. An instance serves from `startup_minutes`
//! after it is bound (model loading). The minute then meets the objective
//! when the ready instances keep both latency proxies within bounds for
//! that minute's load ([`crate::model::ServiceSpec::meets`]).
//!
//! Measured per run: share of minutes meeting the objective, accelerator-
//! hours (accelerators of every bound pod, ready or starting), how whole
//! the groups are (group scaler: group-minutes with every member bound
//! inside one super-node; per-role: the share of instances that can be
//! paired into whole groups inside one super-node), scheduler time from a
//! scale-up decision to its pods bound, and the time from the first
//! request after a quiet spell to a ready instance (to and from zero).

use crate::engine::{ClusterShape, EngineCluster, EngineError, Role};
use crate::model::{Load, Objective, ServiceSpec, ratio_for};
use crate::policy::{GroupPolicy, RolePolicy, Shapes};
use crate::scaler::GroupScaler;
use crate::trace::{DayShape, MinuteTrace, stretch};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// What a comparison run is made of.
#[derive(Clone, Debug, Serialize)]
pub struct CompareConfig {
    /// The cluster.
    pub shape: ClusterShape,
    /// Minutes from bound to serving.
    pub startup_minutes: u32,
    /// Prompt tokens/s of one prefill instance.
    pub prefill_tokens_per_s: f64,
    /// Output tokens/s of one decode instance, fully batched.
    pub decode_tokens_per_s: f64,
    /// Unloaded time per output token.
    pub base_tpot_s: f64,
    /// Accelerators per instance (prefill and decode alike).
    pub accelerators_per_instance: u32,
    /// The objective.
    pub objective: Objective,
    /// The trace is scaled so its peak needs about this many instances
    /// (servers) in whole groups at the group scaler's target.
    pub peak_instances: u32,
    /// The daily shape laid over the trace.
    pub day: DayShape,
    /// The group scaler's policy.
    pub group_policy: GroupPolicy,
    /// Per-role targets to run (the first at the group policy's target; lower
    /// ones show what per-role needs to meet the objective).
    pub role_targets: Vec<f64>,
    /// Further group-scaler targets to run (tide and zero as in
    /// `group_policy`), so each scaler is also seen at its cheapest setting
    /// that meets the objective.
    pub group_targets: Vec<f64>,
    /// Also run the group scaler without the tide (target load only).
    pub group_without_tide: bool,
    /// Also run the group scaler with adaptive shapes
    /// ([`crate::policy::Shapes::Adaptive`]) of up to the service's group
    /// size plus this many instances, at every group target (`None`: fixed
    /// shapes only).
    pub adaptive_extra: Option<u32>,
    /// The utilisation target the trace's peak is sized at when the trace is
    /// scaled to `peak_instances`. Fixed, so that sweeping the policies'
    /// targets changes the capacity held and never the load offered.
    pub sizing_target: f64,
    /// The share of minutes meeting the objective that "meets the
    /// objective" means in the summary (the issue's 99%).
    pub objective_share: f64,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            shape: ClusterShape {
                supernodes: 10,
                servers_per_supernode: 32,
                accelerators_per_server: 8,
            },
            startup_minutes: 2,
            prefill_tokens_per_s: 20_000.0,
            decode_tokens_per_s: 2_500.0,
            base_tpot_s: 0.025,
            accelerators_per_instance: 8,
            objective: Objective {
                ttft_s: 1.0,
                tpot_s: 0.1,
            },
            peak_instances: 120,
            day: DayShape::default(),
            group_policy: GroupPolicy::default(),
            role_targets: vec![0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4],
            group_targets: vec![0.75, 0.85, 0.9],
            group_without_tide: true,
            adaptive_extra: Some(1),
            sizing_target: 0.8,
            objective_share: 0.99,
        }
    }
}

/// p50, p99 and max of a set of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Millis {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Millis {
    fn of(v: &mut [Duration]) -> Millis {
        if v.is_empty() {
            return Millis::default();
        }
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            v[i].as_secs_f64() * 1000.0
        };
        Millis {
            count: v.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One scaler's day.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunResult {
    /// Which scaler.
    pub scaler: String,
    /// Minutes measured.
    pub minutes: u32,
    /// Minutes meeting the objective.
    pub minutes_meeting: u32,
    /// Their share.
    pub share_meeting: f64,
    /// Accelerator-hours held by bound pods.
    pub accelerator_hours: f64,
    /// Group scaler: share of group-minutes with every member bound inside
    /// one super-node. Per-role: share of ready instances that pair into
    /// whole groups (at the ratio) inside one super-node.
    pub whole_in_one_supernode: f64,
    /// Groups ever seen partly bound (group scaler).
    pub partly_bound_groups: u32,
    /// Scale-up actions (groups added, or role scale-ups).
    pub scale_ups: usize,
    /// Scheduler time from a scale-up decision to its pods bound.
    pub scale_up_scheduler_ms: Millis,
    /// Scale-ups refused because no whole group fitted.
    pub refused: u32,
    /// Minutes from the first request after a quiet spell (at least
    /// [`QUIET_SPELL_MINUTES`] without a request) to ready capacity; 0 when
    /// it was ready before the request.
    pub from_zero_minutes: Vec<u32>,
    /// Most instances at once.
    pub peak_instances: u32,
}

/// One trace's comparison.
#[derive(Clone, Debug, Serialize)]
pub struct TraceComparison {
    /// Trace name.
    pub trace: String,
    /// What the trace covers and how it was stretched.
    pub note: String,
    /// The service as sized for this trace.
    pub service: ServiceSpec,
    /// The load multiplier applied.
    pub scale: f64,
    /// The runs.
    pub runs: Vec<RunResult>,
    /// Each kind of scaler at its cheapest setting that meets the objective.
    pub at_objective: AtObjective,
}

/// The cheapest run of each kind (group scaler with its tide, per-role HPA)
/// that meets the objective in at least the configured share of minutes:
/// accelerator-hours compared at the same objective.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AtObjective {
    /// The share of minutes required.
    pub share: f64,
    /// The cheapest group-scaler run meeting it (scaler name, accelerator-hours).
    pub group: Option<(String, f64)>,
    /// The cheapest per-role run meeting it.
    pub per_role: Option<(String, f64)>,
}

impl AtObjective {
    /// Picks the cheapest run of each kind among `runs` meeting `share`.
    pub fn of(runs: &[RunResult], share: f64) -> AtObjective {
        let cheapest = |prefix: &str| {
            runs.iter()
                .filter(|r| r.scaler.starts_with(prefix) && r.share_meeting >= share)
                .min_by(|a, b| a.accelerator_hours.total_cmp(&b.accelerator_hours))
                .map(|r| (r.scaler.clone(), r.accelerator_hours))
        };
        AtObjective {
            share,
            group: cheapest("group:"),
            per_role: cheapest("per-role"),
        }
    }

    /// One line for the table.
    pub fn line(&self) -> String {
        let pct = self.share * 100.0;
        match (&self.group, &self.per_role) {
            (Some((g, gh)), Some((r, rh))) => format!(
                "at >= {pct}% of minutes: group {gh:.1} acc-h ({g}) vs per-role {rh:.1} acc-h ({r}): group / per-role = {:.3}",
                gh / rh
            ),
            (Some((g, gh)), None) => format!(
                "at >= {pct}% of minutes: group {gh:.1} acc-h ({g}); no per-role run meets it"
            ),
            (None, Some((r, rh))) => format!(
                "at >= {pct}% of minutes: no group run meets it; per-role {rh:.1} acc-h ({r})"
            ),
            (None, None) => format!("at >= {pct}% of minutes: no run meets it"),
        }
    }
}

/// The service for `trace`: its prefill:decode ratio from the trace's token
/// mix, the capacity model from `cfg`.
pub fn service_for(cfg: &CompareConfig, trace: &MinuteTrace) -> ServiceSpec {
    let mut svc = ServiceSpec {
        name: "llm".into(),
        prefill_per_group: 1,
        decode_per_group: 1,
        prefill_tokens_per_s: cfg.prefill_tokens_per_s,
        decode_tokens_per_s: cfg.decode_tokens_per_s,
        base_tpot_s: cfg.base_tpot_s,
        prefill_accelerators: cfg.accelerators_per_instance,
        decode_accelerators: cfg.accelerators_per_instance,
        objective: cfg.objective,
        min_groups: 0,
        max_groups: 1000,
    };
    let total = trace.minutes.iter().fold(Load::default(), |a, m| Load {
        requests_per_s: a.requests_per_s + m.requests_per_s,
        prompt_tokens_per_s: a.prompt_tokens_per_s + m.prompt_tokens_per_s,
        output_tokens_per_s: a.output_tokens_per_s + m.output_tokens_per_s,
    });
    let pw = total.prompt_tokens_per_s
        / (svc.prefill_tokens_per_s * svc.prefill_ceiling(total.mean_prompt()).max(0.01));
    let dw = total.output_tokens_per_s / (svc.decode_tokens_per_s * svc.decode_ceiling().max(0.01));
    let (p, d) = ratio_for(pw, dw, 6);
    svc.prefill_per_group = p;
    svc.decode_per_group = d;
    svc
}

/// Runs every scaler on `trace` (2 days: history, then the measured day).
pub fn compare_trace(
    cfg: &CompareConfig,
    trace: &MinuteTrace,
) -> Result<TraceComparison, EngineError> {
    let svc = service_for(cfg, trace);
    let unit = stretch(trace, 1, 1.0, &cfg.day);
    let target = cfg.sizing_target;
    let peak = unit
        .iter()
        .map(|l| svc.groups_for(l, target))
        .max()
        .unwrap_or(1)
        .max(1);
    // groups_for rounds up; scale on the exact need at the peak minute.
    let exact = unit
        .iter()
        .map(|l| {
            let (p, d) = svc.instances_for(l, target);
            (f64::from(p) / f64::from(svc.prefill_per_group))
                .max(f64::from(d) / f64::from(svc.decode_per_group))
        })
        .fold(0.0f64, f64::max)
        .max(f64::from(peak) * 0.5);
    let per_group = f64::from(svc.prefill_per_group + svc.decode_per_group);
    let scale = f64::from(cfg.peak_instances) / per_group / exact;
    let loads = stretch(trace, 2, scale, &cfg.day);
    let mut runs = vec![run_groups(
        cfg,
        &svc,
        &loads,
        cfg.group_policy,
        &format!("group: target {}+tide+zero", cfg.group_policy.target),
    )?];
    for t in &cfg.group_targets {
        let p = GroupPolicy {
            target: *t,
            ..cfg.group_policy
        };
        runs.push(run_groups(
            cfg,
            &svc,
            &loads,
            p,
            &format!("group: target {t}+tide+zero"),
        )?);
    }
    if cfg.group_without_tide {
        let p = GroupPolicy {
            tidal: None,
            ..cfg.group_policy
        };
        runs.push(run_groups(
            cfg,
            &svc,
            &loads,
            p,
            &format!("group: target {}+zero, no tide", cfg.group_policy.target),
        )?);
    }
    if let Some(extra) = cfg.adaptive_extra {
        let max_instances = svc.prefill_per_group + svc.decode_per_group + extra;
        let shapes = Shapes::Adaptive {
            max_instances,
            startup_steps: cfg.startup_minutes,
        };
        for t in std::iter::once(cfg.group_policy.target).chain(cfg.group_targets.iter().copied()) {
            let p = GroupPolicy {
                target: t,
                shapes,
                ..cfg.group_policy
            };
            runs.push(run_groups(
                cfg,
                &svc,
                &loads,
                p,
                &format!("group: shapes<={max_instances}, target {t}+tide+zero"),
            )?);
        }
    }
    for t in &cfg.role_targets {
        runs.push(run_roles(cfg, &svc, &loads, *t)?);
    }
    let hours = trace.span_s / 3600.0;
    Ok(TraceComparison {
        trace: trace.name.clone(),
        note: format!(
            "{} requests over {:.2} h ({} minutes used, {} rows skipped): less than a day; stretched to 2 days (history + measured) by replaying the hour with a rotating start per hour, rates x{:.1} and a daily tide (trough at {:02}:00 at {:.0}% of peak{})",
            trace.requests,
            hours,
            trace.minutes.len(),
            trace.skipped,
            scale,
            cfg.day.trough_minute / 60,
            cfg.day.floor * 100.0,
            match cfg.day.quiet {
                Some((a, b)) => format!(
                    ", no traffic {:02}:{:02}-{:02}:{:02}",
                    a / 60,
                    a % 60,
                    b / 60,
                    b % 60
                ),
                None => String::new(),
            }
        ),
        service: svc,
        scale,
        at_objective: AtObjective::of(&runs, cfg.objective_share),
        runs,
    })
}

/// Minutes without a request that make a quiet spell (after which the
/// first request counts as a start from zero).
pub const QUIET_SPELL_MINUTES: u32 = 10;

struct FromZero {
    idle: u32,
    started: Option<u64>,
    samples: Vec<u32>,
}

impl FromZero {
    fn new() -> FromZero {
        FromZero {
            idle: 0,
            started: None,
            samples: Vec::new(),
        }
    }

    /// Minute `t`: `load` arrived and `ready` instances served it.
    fn observe(&mut self, t: u64, load: &Load, ready: u32) {
        if let Some(s) = self.started {
            if ready > 0 {
                self.samples.push((t - s) as u32);
                self.started = None;
            }
        } else if !load.is_idle() && self.idle >= QUIET_SPELL_MINUTES {
            if ready > 0 {
                self.samples.push(0);
            } else {
                self.started = Some(t);
            }
        }
        if load.is_idle() {
            self.idle = self.idle.saturating_add(1);
        } else {
            self.idle = 0;
        }
    }
}

fn run_groups(
    cfg: &CompareConfig,
    svc: &ServiceSpec,
    loads: &[Load],
    policy: GroupPolicy,
    name: &str,
) -> Result<RunResult, EngineError> {
    let mut e = EngineCluster::new(cfg.shape)?;
    let mut sc = GroupScaler::new(svc.clone(), policy);
    for (t, l) in loads.iter().enumerate().take(1440) {
        sc.learn(t as u64, l);
    }
    let mut ready_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut r = RunResult {
        scaler: name.to_owned(),
        ..RunResult::default()
    };
    let mut acc_minutes = 0u64;
    let (mut whole, mut group_minutes) = (0u64, 0u64);
    let mut partly: std::collections::BTreeSet<String> = Default::default();
    let mut zero = FromZero::new();
    for t in 1440..loads.len() as u64 {
        let observed = &loads[(t - 1) as usize];
        let want = sc.desired(t - 1, observed);
        let step = sc.act(&want, &mut e);
        for g in &step.added {
            ready_at.insert(g.id.clone(), t + u64::from(cfg.startup_minutes));
        }
        for id in &step.removed {
            ready_at.remove(id);
        }
        r.scale_ups += step.added.len();
        r.refused += step.refused;
        e.advance(Duration::from_secs(60));
        if std::env::var_os("STRATA_SCALER_PROGRESS").is_some() && t % 120 == 0 {
            eprintln!("  {name}: minute {t}, {} groups", step.before);
        }
        let load = &loads[t as usize];
        let groups = sc_groups(&e, svc);
        let (p, d) = groups
            .iter()
            .filter(|g| ready_at.get(&g.id).is_some_and(|at| *at <= t))
            .fold((0, 0), |a, g| (a.0 + g.prefill, a.1 + g.decode));
        for id in groups.iter().map(|g| &g.id) {
            if let Some((bound, total, doms)) = e.group_state(svc, id) {
                group_minutes += 1;
                if bound == total && doms.len() == 1 {
                    whole += 1;
                }
                if bound > 0 && bound < total {
                    partly.insert(id.clone());
                }
            }
        }
        r.minutes += 1;
        if svc.meets(load, p, d) {
            r.minutes_meeting += 1;
        }
        zero.observe(t, load, p.min(d));
        acc_minutes += e.accelerators_bound();
        r.peak_instances = r
            .peak_instances
            .max(groups.iter().map(|g| g.prefill + g.decode).sum::<u32>());
    }
    r.share_meeting = f64::from(r.minutes_meeting) / f64::from(r.minutes.max(1));
    r.accelerator_hours = acc_minutes as f64 / 60.0;
    r.whole_in_one_supernode = if group_minutes > 0 {
        whole as f64 / group_minutes as f64
    } else {
        1.0
    };
    r.partly_bound_groups = partly.len() as u32;
    r.scale_up_scheduler_ms = Millis::of(&mut e.group_times.clone());
    r.from_zero_minutes = zero.samples;
    Ok(r)
}

fn sc_groups(e: &EngineCluster, svc: &ServiceSpec) -> Vec<crate::scaler::GroupInfo> {
    use crate::scaler::GroupPlacer;
    e.groups(svc)
}

fn run_roles(
    cfg: &CompareConfig,
    svc: &ServiceSpec,
    loads: &[Load],
    target: f64,
) -> Result<RunResult, EngineError> {
    let mut e = EngineCluster::new(cfg.shape)?;
    let mut pol = RolePolicy::new(target, cfg.group_policy.scale_down_window);
    let mut r = RunResult {
        scaler: format!("per-role HPA, target {target}"),
        ..RunResult::default()
    };
    let mut first_bound: BTreeMap<String, u64> = BTreeMap::new();
    let mut acc_minutes = 0u64;
    let (mut paired, mut instances) = (0u64, 0u64);
    let mut times = Vec::new();
    let mut zero = FromZero::new();
    for t in 1440..loads.len() as u64 {
        let observed = &loads[(t - 1) as usize];
        let (p, d) = pol.desired(svc, observed);
        for (role, n) in [(Role::Prefill, p), (Role::Decode, d)] {
            let up = n as usize > e.role_count(svc, role);
            let took = e.scale_role(svc, role, n as usize)?;
            if up {
                r.scale_ups += 1;
                times.push(took);
            }
        }
        e.advance(Duration::from_secs(60));
        let mut ready = [0u32; 2];
        let mut per_sn: BTreeMap<String, [u32; 2]> = BTreeMap::new();
        for (i, role) in [Role::Prefill, Role::Decode].into_iter().enumerate() {
            let bound = e.role_bound(svc, role);
            for u in &bound {
                // Bound during minute `t` at the latest: serving from
                // `startup_minutes` later, as a group's members are.
                let at = *first_bound.entry(u.clone()).or_insert(t);
                if at + u64::from(cfg.startup_minutes) <= t {
                    ready[i] += 1;
                    if let Some(dm) = e.domain_of(u) {
                        per_sn.entry(dm.to_owned()).or_default()[i] += 1;
                    }
                }
            }
        }
        first_bound.retain(|u, _| e.domain_of(u).is_some());
        let whole_groups: u32 = per_sn
            .values()
            .map(|c| (c[0] / svc.prefill_per_group).min(c[1] / svc.decode_per_group))
            .sum();
        paired += u64::from(whole_groups * (svc.prefill_per_group + svc.decode_per_group));
        instances += u64::from(ready[0] + ready[1]);
        let load = &loads[t as usize];
        r.minutes += 1;
        if svc.meets(load, ready[0], ready[1]) {
            r.minutes_meeting += 1;
        }
        zero.observe(t, load, ready[0].min(ready[1]));
        acc_minutes += e.accelerators_bound();
        r.peak_instances = r.peak_instances.max(p + d);
    }
    r.share_meeting = f64::from(r.minutes_meeting) / f64::from(r.minutes.max(1));
    r.accelerator_hours = acc_minutes as f64 / 60.0;
    r.whole_in_one_supernode = if instances > 0 {
        paired as f64 / instances as f64
    } else {
        1.0
    };
    r.scale_up_scheduler_ms = Millis::of(&mut times);
    r.from_zero_minutes = zero.samples;
    Ok(r)
}

/// The comparisons as a table, one block per trace.
pub fn to_table(cmp: &[TraceComparison], cfg: &CompareConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cluster: {} super-nodes x {} servers x {} accelerators; instance = {} accelerators; prefill {} prompt tok/s, decode {} output tok/s (base TPOT {} s); objective TTFT <= {} s, TPOT <= {} s; startup {} min",
        cfg.shape.supernodes,
        cfg.shape.servers_per_supernode,
        cfg.shape.accelerators_per_server,
        cfg.accelerators_per_instance,
        cfg.prefill_tokens_per_s,
        cfg.decode_tokens_per_s,
        cfg.base_tpot_s,
        cfg.objective.ttft_s,
        cfg.objective.tpot_s,
        cfg.startup_minutes
    );
    for c in cmp {
        let _ = writeln!(
            s,
            "\n{} (group = {} prefill : {} decode)\n  {}",
            c.trace, c.service.prefill_per_group, c.service.decode_per_group, c.note
        );
        let _ = writeln!(
            s,
            "  {:<40} {:>9} {:>10} {:>12} {:>8} {:>9} {:>10} {:>10} {:>8} {:>12}",
            "scaler",
            "SLO min",
            "acc-hours",
            "whole+1-SN",
            "partly",
            "scale-ups",
            "p50 ms",
            "p99 ms",
            "refused",
            "from zero min"
        );
        for r in &c.runs {
            let zero = if r.from_zero_minutes.is_empty() {
                "-".to_owned()
            } else {
                r.from_zero_minutes
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let _ = writeln!(
                s,
                "  {:<40} {:>8.2}% {:>10.1} {:>11.1}% {:>8} {:>9} {:>10.1} {:>10.1} {:>8} {:>12}",
                r.scaler,
                r.share_meeting * 100.0,
                r.accelerator_hours,
                r.whole_in_one_supernode * 100.0,
                r.partly_bound_groups,
                r.scale_ups,
                r.scale_up_scheduler_ms.p50,
                r.scale_up_scheduler_ms.p99,
                r.refused,
                zero
            );
        }
        let _ = writeln!(s, "  {}", c.at_objective.line());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short synthetic trace through the whole comparison on a small
    /// cluster: the group scaler keeps every group whole in one super-node
    /// and meets the objective in nearly every minute; the per-role
    /// baseline is measured on the same load.
    #[test]
    fn comparison_runs_end_to_end_on_a_small_cluster() {
        let trace = MinuteTrace {
            name: "synthetic".into(),
            requests: 600,
            skipped: 0,
            span_s: 600.0,
            minutes: (0..10)
                .map(|i| Load {
                    requests_per_s: 1.0 + f64::from(i % 3),
                    prompt_tokens_per_s: 1000.0 * (1.0 + f64::from(i % 3)),
                    output_tokens_per_s: 250.0 * (1.0 + f64::from(i % 3)),
                })
                .collect(),
        };
        let cfg = CompareConfig {
            shape: ClusterShape {
                supernodes: 3,
                servers_per_supernode: 8,
                accelerators_per_server: 8,
            },
            peak_instances: 12,
            role_targets: vec![0.8],
            group_targets: vec![],
            group_without_tide: false,
            adaptive_extra: Some(1),
            ..CompareConfig::default()
        };
        let c = compare_trace(&cfg, &trace).unwrap();
        assert_eq!(c.runs.len(), 3);
        let a = &c.runs[1];
        assert!(a.scaler.contains("shapes<="), "{a:?}");
        assert_eq!(a.partly_bound_groups, 0);
        assert_eq!(a.whole_in_one_supernode, 1.0, "{a:?}");
        assert!(a.share_meeting > 0.95, "{a:?}");
        let g = &c.runs[0];
        assert_eq!(g.minutes, 1440);
        assert_eq!(g.partly_bound_groups, 0);
        assert_eq!(g.whole_in_one_supernode, 1.0, "{g:?}");
        assert!(g.share_meeting > 0.95, "{g:?}");
        assert!(g.scale_ups > 0 && g.scale_up_scheduler_ms.count == g.scale_ups);
        assert!(
            !g.from_zero_minutes.is_empty(),
            "the quiet window was crossed: {g:?}"
        );
        let table = to_table(std::slice::from_ref(&c), &cfg);
        assert!(table.contains("per-role HPA, target 0.8"), "{table}");
        assert!(table.contains("at >= 99% of minutes"), "{table}");
        let json = serde_json::to_value(&c).unwrap();
        assert!(json["runs"][0]["accelerator_hours"].as_f64().unwrap() > 0.0);
    }
}
