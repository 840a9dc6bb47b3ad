//! The inference scaling comparison in one run: per-role (HPA-like) against
//! the group scaler, on a day of each LLM trace, through the real engine on
//! a super-node cluster. Prints a table per trace; `--json FILE` writes
//! every figure.
//!
//! ```sh
//! cargo run -p strata-scaler --example inference_compare -- \
//!     --data ../shared/data/llm-traces [--json out.json] [--peak-instances 120] \
//!     [--supernodes 8] [--servers-per-supernode 32] [--traces azure-conv,azure-code,mooncake-conv] \
//!     [--adaptive-extra 1|off]
//! ```

use std::path::PathBuf;
use strata_scaler::compare::{CompareConfig, compare_trace, to_table};
use strata_scaler::trace::{TraceKind, read};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut data = PathBuf::from("../shared/data/llm-traces");
    let mut json: Option<PathBuf> = None;
    let mut cfg = CompareConfig::default();
    let mut traces = "azure-conv,azure-code,mooncake-conv".to_owned();
    let mut probe: Option<u32> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let num = |name: &str, v: String| -> Result<u32, String> {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{name}: {v:?} is not a positive whole number"))
        };
        let frac = |name: &str, v: String| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0 && *x <= 1.0)
                .ok_or(format!("{name}: {v:?} is not a fraction in (0, 1]"))
        };
        match a.as_str() {
            "--data" => data = PathBuf::from(val("--data")?),
            "--probe-groups" => probe = Some(num(&a, val(&a)?)?),
            "--json" => json = Some(PathBuf::from(val("--json")?)),
            "--traces" => traces = val("--traces")?,
            "--peak-instances" => cfg.peak_instances = num(&a, val(&a)?)?,
            "--supernodes" => cfg.shape.supernodes = num(&a, val(&a)?)?,
            "--servers-per-supernode" => cfg.shape.servers_per_supernode = num(&a, val(&a)?)?,
            "--startup-minutes" => cfg.startup_minutes = num(&a, val(&a)?)?,
            "--group-target" => cfg.group_policy.target = frac(&a, val(&a)?)?,
            "--tide-margin" => {
                let m = val(&a)?;
                if let Some(t) = cfg.group_policy.tidal.as_mut() {
                    t.margin = m
                        .parse()
                        .map_err(|_| format!("{a}: {m:?} is not a number"))?;
                }
            }
            "--tide-lead" => {
                let m = num(&a, val(&a)?)?;
                if let Some(t) = cfg.group_policy.tidal.as_mut() {
                    t.lead_minutes = m;
                }
            }
            "--group-targets" => {
                cfg.group_targets = val(&a)?
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(|v| frac(&a, v.to_owned()))
                    .collect::<Result<_, _>>()?
            }
            "--role-targets" => {
                cfg.role_targets = val(&a)?
                    .split(',')
                    .map(|v| frac(&a, v.to_owned()))
                    .collect::<Result<_, _>>()?
            }
            "--adaptive-extra" => {
                let v = val(&a)?;
                cfg.adaptive_extra = if v == "off" {
                    None
                } else {
                    Some(
                        v.parse::<u32>()
                            .map_err(|_| format!("{a}: {v:?} is not a whole number or \"off\""))?,
                    )
                };
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(n) = probe {
        return probe_scale_up(&cfg, n);
    }
    let mut out = Vec::new();
    for name in traces.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (file, kind) = match name {
            "azure-conv" => ("AzureLLMInferenceTrace_conv.csv", TraceKind::AzureCsv),
            "azure-code" => ("AzureLLMInferenceTrace_code.csv", TraceKind::AzureCsv),
            "mooncake-conv" => ("conversation_trace.jsonl", TraceKind::MooncakeJsonl),
            other => {
                return Err(format!(
                    "unknown trace {other:?} (azure-conv, azure-code, mooncake-conv)"
                ));
            }
        };
        let t = read(&data.join(file), kind, name).map_err(|e| e.to_string())?;
        let start = std::time::Instant::now();
        let c = compare_trace(&cfg, &t).map_err(|e| e.to_string())?;
        eprintln!("{name}: {:.1} s", start.elapsed().as_secs_f64());
        out.push(c);
    }
    print!("{}", to_table(&out, &cfg));
    if let Some(p) = json {
        let v = serde_json::json!({"config": cfg, "traces": out});
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// `--probe-groups N`: on a cluster of the configured shape (e.g.
/// `--supernodes 250 --servers-per-supernode 64`: 16,000 servers), the group
/// scaler adds N groups (1 prefill : 2 decode) one at a time; prints the
/// scheduler time of each from the what-if question to bound whole.
fn probe_scale_up(cfg: &CompareConfig, n: u32) -> Result<(), String> {
    use strata_scaler::engine::EngineCluster;
    use strata_scaler::model::ServiceSpec;
    use strata_scaler::policy::GroupPolicy;
    use strata_scaler::scaler::GroupScaler;
    let t = std::time::Instant::now();
    let mut e = EngineCluster::new(cfg.shape).map_err(|e| e.to_string())?;
    eprintln!(
        "{} servers in {:.1} s",
        cfg.shape.servers(),
        t.elapsed().as_secs_f64()
    );
    let svc = ServiceSpec {
        name: "llm".into(),
        prefill_per_group: 1,
        decode_per_group: 2,
        prefill_tokens_per_s: cfg.prefill_tokens_per_s,
        decode_tokens_per_s: cfg.decode_tokens_per_s,
        base_tpot_s: cfg.base_tpot_s,
        prefill_accelerators: cfg.accelerators_per_instance,
        decode_accelerators: cfg.accelerators_per_instance,
        objective: cfg.objective,
        min_groups: 0,
        max_groups: n,
    };
    let mut s = GroupScaler::new(svc, GroupPolicy::default());
    let mut refused = 0;
    for want in 1..=n {
        refused += s.reconcile(want, &mut e).refused;
    }
    let mut v = e.group_times.clone();
    v.sort_unstable();
    let ms = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    if v.is_empty() {
        return Err("no group was placed".into());
    }
    println!(
        "{} groups on {} servers: scale-up decision to bound group p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({refused} refused)",
        v.len(),
        cfg.shape.servers(),
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
    Ok(())
}
