//! Wall-clock cost of the issue-16 selector (three nested `.all()` over
//! N-element lists) before and after the CEL cost limits, on one device.
//!
//! `cargo run --release -p strata-plugins --example cel_cost -- 80 300`
//! (300 without the limits takes minutes: pass `--unbounded` to time it).

use cel::Program;
use std::time::Instant;
use strata_plugins::dra::cel::{Attr, Env, Selector, device_value};
use strata_plugins::dra::cost::{self, Budget, MAX_CYCLE_COST, MAX_EXPRESSION_COST};

fn list(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn nested_all(n: usize) -> String {
    let l = list(n);
    format!("{l}.all(a, {l}.all(b, {l}.all(c, a + b + c >= 0)))")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let unbounded = args.iter().any(|a| a == "--unbounded");
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![80, 300]
    } else {
        sizes
    };
    let device = device_value(
        "gpu.example.com",
        &[("model".into(), Attr::Str("A100".into()))],
        &[],
        false,
    );
    let mut env = Env::new();

    // Calibration: an accepted selector's units against its time.
    let ok = nested_all(20);
    let sel = env.compile(&ok).expect("20 fits");
    let t = Instant::now();
    let mut units = 0;
    for _ in 0..20 {
        let mut b = Budget::new(u64::MAX);
        env.matches(&sel, &device, &mut b).unwrap();
        units += b.spent();
    }
    let metered = t.elapsed().as_secs_f64();
    let per_unit = metered / units as f64;
    let raw = Program::compile(&ok).unwrap();
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("device", device.clone());
    let t = Instant::now();
    for _ in 0..20 {
        raw.execute(&ctx).unwrap();
    }
    println!(
        "meter overhead: nested_all(20) x20 in {:.1} ms metered, {:.1} ms without the meter",
        metered * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "calibration: nested_all(20), estimate {} units, {} units counted, {:.1} ns a unit",
        sel.estimate,
        units / 20,
        per_unit * 1e9
    );
    println!(
        "  => per-expression limit {MAX_EXPRESSION_COST} ≈ {:.0} ms, cycle budget {MAX_CYCLE_COST} ≈ {:.0} ms",
        per_unit * MAX_EXPRESSION_COST as f64 * 1e3,
        per_unit * MAX_CYCLE_COST as f64 * 1e3
    );

    for n in sizes {
        let expr = nested_all(n);
        println!("nested_all({n}), {} characters:", expr.len());
        if n <= 100 || unbounded {
            let p = Program::compile(&expr).unwrap();
            let mut ctx = cel::Context::default();
            ctx.add_variable_from_value("device", device.clone());
            let t = Instant::now();
            let r = p.execute(&ctx);
            println!(
                "  before (no limit): {:?} in {:.3} s",
                r.is_ok(),
                t.elapsed().as_secs_f64()
            );
        } else {
            println!("  before (no limit): skipped (pass --unbounded)");
        }
        let t = Instant::now();
        let r = env.compile(&expr);
        println!(
            "  after, compile: {} in {:.3} ms",
            r.err().unwrap_or_else(|| "accepted".into()),
            t.elapsed().as_secs_f64() * 1e3
        );
        let unchecked = Selector::instrumented(
            &expr,
            cost::instrument(Program::compile(&expr).unwrap().expression()),
        );
        let t = Instant::now();
        let (r, counted) = env.evaluate(&unchecked, &device, MAX_EXPRESSION_COST);
        println!(
            "  after, run-time meter alone (compile check skipped): stopped={} at {counted} units in {:.1} ms",
            r.is_err(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
