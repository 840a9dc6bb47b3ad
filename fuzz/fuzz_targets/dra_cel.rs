//! DRA CEL device selectors, as a ResourceClaim or DeviceClass carries
//! them: `cel::Env::compile` (length limit, parse, cost estimate,
//! instrumentation) and, for a selector that compiles, evaluation against
//! a fixed device that keeps to resource.k8s.io's bounds, metered as the
//! plugin meters it (`Env::evaluate` at the per-selector limit,
//! `Env::matches` with a cycle's budget and with a nearly spent one).
//!
//! Besides no panic: a selector that compiles is estimated within the
//! limit, the meter never counts more at run time than that estimate (the
//! invariant `dra/cost.rs` states for devices within the API's bounds), and
//! a budget smaller than what it spends is reported as the cycle's cost
//! limit. That evaluation
//! returns at all is what libFuzzer's `-timeout` checks (`fuzz/run.sh`
//! gives 10 s): the meter is what bounds it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_plugins::dra::cel::{Attr, Env, MatchError, device_value, quantity_milli};
use strata_plugins::dra::cost::{Budget, MAX_EXPRESSION_COST};

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    let mut env = Env::new();
    let Ok(sel) = env.compile(expr) else {
        return;
    };
    assert!(
        sel.estimate <= MAX_EXPRESSION_COST,
        "{expr:?}: estimate {}",
        sel.estimate
    );
    let version = |s: &str| Attr::Version(s.parse().expect("a version"));
    let device = device_value(
        "gpu.example.com",
        &[
            ("model".into(), Attr::Str("A100-SXM4-80GB".into())),
            (
                "uuid".into(),
                Attr::Str("GPU-6f2c1a52-8e5b-4f5e-9a43-0c8d1b6e7f10".into()),
            ),
            ("driverVersion".into(), version("550.54.15")),
            ("cudaVersion".into(), version("12.4.0")),
            ("cores".into(), Attr::Int(108)),
            ("index".into(), Attr::Int(0)),
            ("nvlink".into(), Attr::Bool(true)),
            ("mig".into(), Attr::Bool(false)),
            ("ext.example.com/family".into(), Attr::Str("ampere".into())),
            ("ext.example.com/rack".into(), Attr::Int(7)),
        ],
        &[
            ("memory".into(), quantity_milli("80Gi").expect("a quantity")),
            ("cores".into(), quantity_milli("108").expect("a quantity")),
            (
                "ext.example.com/bandwidth".into(),
                quantity_milli("600G").expect("a quantity"),
            ),
        ],
        false,
    );
    let (result, used) = env.evaluate(&sel, &device, MAX_EXPRESSION_COST);
    assert!(
        used <= sel.estimate,
        "{expr:?}: the meter counted {used} units, the estimate was {}",
        sel.estimate
    );
    drop(result);
    let mut budget = Budget::per_cycle();
    match env.matches(&sel, &device, &mut budget) {
        Err(MatchError::Cost { .. }) => panic!("{expr:?}: over the limit within its estimate"),
        Ok(_) | Err(MatchError::Eval(_)) => {}
    }
    // A budget smaller than what it spends: the meter, not the estimate,
    // stops it, and says it was the cycle's budget.
    let low = used / 2;
    if low < used {
        let r = env.matches(&sel, &device, &mut Budget::new(low));
        assert_eq!(
            r,
            Err(MatchError::Cost {
                limit: low,
                per_cycle: true
            }),
            "{expr:?}: {used} units spent, {low} allowed"
        );
    }
});
