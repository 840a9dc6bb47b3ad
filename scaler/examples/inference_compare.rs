//! The inference scaling comparison in one run: per-role (HPA-like) against
//! the group scaler, on a day of each LLM trace, through the real engine on
//! a super-node cluster. Prints a table per trace; `--json FILE` writes
//! every figure.
//!
//! ```sh
//! cargo run -p strata-scaler --example inference_compare -- \
//!     --data ../shared/data/llm-traces [--json out.json] [--peak-instances 120] \
//!     [--supernodes 8] [--servers-per-supernode 32] [--traces azure-conv,azure-code,mooncake-conv]
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
            "--role-targets" => {
                cfg.role_targets = val(&a)?
                    .split(',')
                    .map(|v| frac(&a, v.to_owned()))
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
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
