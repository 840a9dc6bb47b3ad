//! The capacity model of an inference service: what one prefill and one
//! decode instance can do (tokens per second), what a group is (prefill
//! and decode instances at the service's ratio), and the latency proxies
//! the objective is judged by.
//!
//! The proxies are deliberately simple and stated, not measured from a
//! serving engine: an instance is a single-server queue whose utilisation
//! is offered tokens over capacity.
//! - Time to first token: the prefill of a mean prompt, stretched by
//!   queueing, `S / (1 - rho_p)` with `S = mean prompt / prefill tokens/s`
//!   (the mean time in an M/M/1 system).
//! - Time per output token: the unloaded step time stretched the same way
//!   by the decode instances' utilisation, `base / (1 - rho_d)`.
//!
//! A minute meets the objective when both proxies are within their limits
//! for that minute's load; a role with load and no ready instance misses it.

use serde::Serialize;

/// The lowest utilisation ceiling sizing uses: below it, the objective is
/// out of reach for that load and more instances would not bring it back.
pub const MIN_CEILING: f64 = 0.1;

/// Load offered to a service during one interval (rates per second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Load {
    /// Requests per second.
    pub requests_per_s: f64,
    /// Prompt (context) tokens per second: prefill work.
    pub prompt_tokens_per_s: f64,
    /// Generated tokens per second: decode work.
    pub output_tokens_per_s: f64,
}

impl Load {
    /// Mean prompt length of the interval's requests (0 without requests).
    pub fn mean_prompt(&self) -> f64 {
        if self.requests_per_s > 0.0 {
            self.prompt_tokens_per_s / self.requests_per_s
        } else {
            0.0
        }
    }

    /// Whether the interval had any request.
    pub fn is_idle(&self) -> bool {
        self.requests_per_s <= 0.0
    }
}

/// The latency objective.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Objective {
    /// Time to first token, seconds.
    pub ttft_s: f64,
    /// Time per output token, seconds.
    pub tpot_s: f64,
}

/// One inference service: its instances, its group shape and objective.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceSpec {
    /// Service name (groups are named after it).
    pub name: String,
    /// Prefill instances per group.
    pub prefill_per_group: u32,
    /// Decode instances per group.
    pub decode_per_group: u32,
    /// Prompt tokens per second one prefill instance processes.
    pub prefill_tokens_per_s: f64,
    /// Output tokens per second one decode instance generates, fully
    /// batched.
    pub decode_tokens_per_s: f64,
    /// Time per output token of an unloaded decode instance, seconds.
    pub base_tpot_s: f64,
    /// Accelerators of one prefill instance.
    pub prefill_accelerators: u32,
    /// Accelerators of one decode instance.
    pub decode_accelerators: u32,
    /// The latency objective.
    pub objective: Objective,
    /// Fewest groups (0 allows scaling to zero).
    pub min_groups: u32,
    /// Most groups.
    pub max_groups: u32,
}

/// Errors in a service definition.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A field that must be positive is not.
    #[error("service {service}: {field} must be positive, got {value}")]
    NotPositive {
        /// Service.
        service: String,
        /// Field.
        field: &'static str,
        /// Value.
        value: f64,
    },
    /// min > max.
    #[error("service {service}: minGroups {min} is more than maxGroups {max}")]
    Bounds {
        /// Service.
        service: String,
        /// minGroups.
        min: u32,
        /// maxGroups.
        max: u32,
    },
}

impl ServiceSpec {
    /// Checks the numbers a model divides by.
    pub fn validate(&self) -> Result<(), ModelError> {
        let pos = |field: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(ModelError::NotPositive {
                    service: self.name.clone(),
                    field,
                    value,
                })
            }
        };
        pos("prefillPerGroup", f64::from(self.prefill_per_group))?;
        pos("decodePerGroup", f64::from(self.decode_per_group))?;
        pos("prefillTokensPerSecond", self.prefill_tokens_per_s)?;
        pos("decodeTokensPerSecond", self.decode_tokens_per_s)?;
        pos("baseTpotSeconds", self.base_tpot_s)?;
        pos("objective.ttftSeconds", self.objective.ttft_s)?;
        pos("objective.tpotSeconds", self.objective.tpot_s)?;
        if self.min_groups > self.max_groups {
            return Err(ModelError::Bounds {
                service: self.name.clone(),
                min: self.min_groups,
                max: self.max_groups,
            });
        }
        Ok(())
    }

    /// The same service with groups of `prefill : decode` instances.
    pub fn with_shape(&self, prefill: u32, decode: u32) -> ServiceSpec {
        ServiceSpec {
            prefill_per_group: prefill,
            decode_per_group: decode,
            ..self.clone()
        }
    }

    /// Accelerators of one group.
    pub fn group_accelerators(&self) -> u32 {
        self.prefill_per_group * self.prefill_accelerators
            + self.decode_per_group * self.decode_accelerators
    }

    /// Utilisation of `n` prefill instances under `load` (infinite with
    /// load and no instance).
    pub fn prefill_utilisation(&self, load: &Load, n: u32) -> f64 {
        utilisation(
            load.prompt_tokens_per_s,
            f64::from(n) * self.prefill_tokens_per_s,
        )
    }

    /// Utilisation of `n` decode instances under `load`.
    pub fn decode_utilisation(&self, load: &Load, n: u32) -> f64 {
        utilisation(
            load.output_tokens_per_s,
            f64::from(n) * self.decode_tokens_per_s,
        )
    }

    /// The time-to-first-token proxy with `n` prefill instances.
    pub fn ttft(&self, load: &Load, n: u32) -> f64 {
        let rho = self.prefill_utilisation(load, n);
        let service = load.mean_prompt() / self.prefill_tokens_per_s;
        stretched(service, rho)
    }

    /// The time-per-output-token proxy with `n` decode instances.
    pub fn tpot(&self, load: &Load, n: u32) -> f64 {
        if load.output_tokens_per_s <= 0.0 {
            return self.base_tpot_s;
        }
        stretched(self.base_tpot_s, self.decode_utilisation(load, n))
    }

    /// Whether `prefill` and `decode` ready instances meet the objective.
    pub fn meets(&self, load: &Load, prefill: u32, decode: u32) -> bool {
        self.ttft(load, prefill) <= self.objective.ttft_s
            && self.tpot(load, decode) <= self.objective.tpot_s
    }

    /// The highest utilisation of a prefill instance that keeps the TTFT
    /// proxy within the objective for prompts of `mean_prompt` tokens. When
    /// no utilisation can (a prompt alone takes longer than the objective)
    /// sizing uses [`MIN_CEILING`]: the minute misses the objective
    /// whatever the count, and the count stays finite.
    pub fn prefill_ceiling(&self, mean_prompt: f64) -> f64 {
        let service = mean_prompt / self.prefill_tokens_per_s;
        if service <= 0.0 {
            return 1.0;
        }
        (1.0 - service / self.objective.ttft_s).clamp(MIN_CEILING, 1.0)
    }

    /// The highest decode utilisation that keeps the TPOT proxy in bounds
    /// (at least [`MIN_CEILING`], as for prefill).
    pub fn decode_ceiling(&self) -> f64 {
        (1.0 - self.base_tpot_s / self.objective.tpot_s).clamp(MIN_CEILING, 1.0)
    }

    /// Prefill and decode instances `load` needs with each role's
    /// utilisation at most `target` of its ceiling.
    pub fn instances_for(&self, load: &Load, target: f64) -> (u32, u32) {
        let need = |work: f64, per: f64, ceiling: f64| -> u32 {
            if work <= 0.0 {
                return 0;
            }
            let usable = per * ceiling * target.clamp(0.01, 0.999);
            if usable <= 0.0 {
                return u32::MAX;
            }
            let n = (work / usable).ceil();
            if n >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                n as u32
            }
        };
        (
            need(
                load.prompt_tokens_per_s,
                self.prefill_tokens_per_s,
                self.prefill_ceiling(load.mean_prompt()),
            ),
            need(
                load.output_tokens_per_s,
                self.decode_tokens_per_s,
                self.decode_ceiling(),
            ),
        )
    }

    /// Whole groups `load` needs at `target` (before min/max).
    pub fn groups_for(&self, load: &Load, target: f64) -> u32 {
        let (p, d) = self.instances_for(load, target);
        p.div_ceil(self.prefill_per_group)
            .max(d.div_ceil(self.decode_per_group))
    }
}

fn utilisation(work: f64, capacity: f64) -> f64 {
    if work <= 0.0 {
        0.0
    } else if capacity <= 0.0 {
        f64::INFINITY
    } else {
        work / capacity
    }
}

fn stretched(service: f64, rho: f64) -> f64 {
    if rho >= 1.0 {
        f64::INFINITY
    } else {
        service / (1.0 - rho)
    }
}

/// The smallest whole ratio `p:d` close to `prefill_work:decode_work`
/// (instances each role needs per unit of load), with `p + d` at most
/// `max_total`: the service's prefill:decode ratio.
pub fn ratio_for(prefill_work: f64, decode_work: f64, max_total: u32) -> (u32, u32) {
    if !(prefill_work > 0.0 && decode_work > 0.0) {
        return (1, 1);
    }
    let want = prefill_work / decode_work;
    let mut best = (1u32, 1u32, f64::INFINITY);
    for total in 2..=max_total.max(2) {
        for p in 1..total {
            let d = total - p;
            let err = ((f64::from(p) / f64::from(d)) / want).ln().abs();
            // Prefer small groups: a larger one must be clearly better.
            if err + 0.02 * f64::from(total) < best.2 {
                best = (p, d, err + 0.02 * f64::from(total));
            }
        }
    }
    (best.0, best.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests_support::svc;

    #[test]
    fn proxies_grow_with_load_and_break_at_saturation() {
        let s = svc();
        let l = Load {
            requests_per_s: 10.0,
            prompt_tokens_per_s: 10_000.0,
            output_tokens_per_s: 2_000.0,
        };
        assert!(
            (s.ttft(&l, 1) - 0.1).abs() < 1e-9,
            "1000-token prompts at rho 0.5"
        );
        assert!(s.ttft(&l, 2) < s.ttft(&l, 1));
        assert_eq!(s.ttft(&l, 0), f64::INFINITY);
        assert!((s.tpot(&l, 1) - 0.125).abs() < 1e-9);
        assert!(!s.meets(&l, 1, 1));
        assert!(s.meets(&l, 1, 2));
        assert!(
            s.meets(&Load::default(), 0, 0),
            "no load, no instance needed"
        );
    }

    #[test]
    fn sizing_meets_the_objective_with_whole_groups() {
        let s = svc();
        let l = Load {
            requests_per_s: 40.0,
            prompt_tokens_per_s: 40_000.0,
            output_tokens_per_s: 9_000.0,
        };
        let g = s.groups_for(&l, 1.0);
        assert!(s.meets(&l, g * s.prefill_per_group, g * s.decode_per_group));
        assert!(g >= 1);
        let (p, d) = s.instances_for(&l, 0.8);
        assert!(s.meets(&l, p, d));
        assert_eq!(s.groups_for(&Load::default(), 0.8), 0);
    }

    #[test]
    fn ratio_follows_the_work_mix() {
        assert_eq!(ratio_for(0.05, 0.1, 8), (1, 2));
        assert_eq!(ratio_for(0.3, 0.1, 8), (3, 1));
        assert_eq!(ratio_for(0.1, 0.1, 8), (1, 1));
        assert_eq!(ratio_for(0.0, 0.1, 8), (1, 1));
    }

    #[test]
    fn bad_services_are_refused_naming_the_field() {
        let mut s = svc();
        s.decode_tokens_per_s = 0.0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("decodeTokensPerSecond")
        );
        let mut s = svc();
        s.min_groups = 5;
        s.max_groups = 1;
        assert!(matches!(s.validate(), Err(ModelError::Bounds { .. })));
    }

    proptest::proptest! {
        /// Whatever the load, the groups sized for it meet the objective
        /// (the sizing and the proxies agree).
        #[test]
        fn sized_groups_always_meet_the_objective(
            rps in 0.0f64..500.0, prompt in 1.0f64..8000.0, out in 1.0f64..1000.0, target in 0.3f64..1.0,
        ) {
            let s = svc();
            let l = Load { requests_per_s: rps, prompt_tokens_per_s: rps * prompt, output_tokens_per_s: rps * out };
            let g = s.groups_for(&l, target);
            let reachable = l.mean_prompt() / s.prefill_tokens_per_s < s.objective.ttft_s * (1.0 - MIN_CEILING);
            if g < 100_000 && reachable {
                proptest::prop_assert!(s.meets(&l, g * s.prefill_per_group, g * s.decode_per_group),
                    "{g} groups for {l:?}");
            }
        }
    }
}
