//! The openb replay as one self-contained HTML file: for every workload,
//! the share of GPU capacity allocated against the GPU demand arrived, one
//! curve per policy (the FGD paper's main figure), averaged over the seeds,
//! and the figures at 100% and at the end. Inline SVG and a few lines of
//! inline script; nothing is fetched, so it opens offline.
//!
//! After loading, the script measures every curve's drawn length and marks
//! the page `data-drawn` with how many curves have a non-zero length, which
//! a headless browser's `--dump-dom` shows.

use crate::openb::{OpenbReport, ReplayPolicy};
use crate::openb_mix::summarize;
use std::fmt::Write as _;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

fn colour(p: ReplayPolicy) -> &'static str {
    match p {
        ReplayPolicy::Fragmentation => "#c0392b",
        ReplayPolicy::BestFit => "#2471a3",
        ReplayPolicy::Random => "#7f8c8d",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The mean curve of `policy` over `reports`: allocated percent per whole
/// percent of arrived demand, averaged over the seeds that reached it.
pub fn mean_curve(reports: &[OpenbReport], policy: ReplayPolicy) -> Vec<(f64, f64)> {
    let mut sums: Vec<(f64, f64, u32)> = Vec::new();
    for r in reports {
        for o in r.results.iter().filter(|o| o.policy == policy) {
            for p in &o.curve {
                let i = p.arrived_percent.floor().max(0.0) as usize;
                if sums.len() <= i {
                    sums.resize(i + 1, (0.0, 0.0, 0));
                }
                sums[i].0 += p.arrived_percent;
                sums[i].1 += p.allocated_percent;
                sums[i].2 += 1;
            }
        }
    }
    sums.into_iter()
        .filter(|s| s.2 > 0)
        .map(|(a, b, n)| (a / n as f64, b / n as f64))
        .collect()
}

fn chart(out: &mut String, reports: &[OpenbReport], x_max: f64) {
    let sx = |x: f64| LEFT + x / x_max * (W - LEFT - RIGHT);
    let sy = |y: f64| TOP + (100.0 - y) / 100.0 * (H - TOP - BOTTOM);
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg" role="img">"#
    );
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let _ = write!(
            out,
            r##"<line x1="{a:.1}" y1="{t:.1}" x2="{a:.1}" y2="{b:.1}" stroke="#ddd"/><text x="{a:.1}" y="{l:.1}" font-size="11" text-anchor="middle">{x:.0}%</text>"##,
            a = sx(x),
            t = TOP,
            b = H - BOTTOM,
            l = H - BOTTOM + 14.0
        );
        x += 10.0;
    }
    for y in (0..=100).step_by(10) {
        let y = y as f64;
        let _ = write!(
            out,
            r##"<line x1="{l:.1}" y1="{a:.1}" x2="{r:.1}" y2="{a:.1}" stroke="#ddd"/><text x="{t:.1}" y="{b:.1}" font-size="11" text-anchor="end">{y:.0}%</text>"##,
            l = LEFT,
            r = W - RIGHT,
            a = sy(y),
            t = LEFT - 4.0,
            b = sy(y) + 4.0
        );
    }
    // Everything that arrived, allocated: the upper bound.
    let _ = write!(
        out,
        r##"<polyline class="bound" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="none" stroke="#aaa" stroke-dasharray="4 3"/>"##,
        sx(0.0),
        sy(0.0),
        sx(100.0),
        sy(100.0),
        sx(x_max),
        sy(100.0)
    );
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">GPU demand arrived (% of capacity)</text><text transform="translate(14 {:.1}) rotate(-90)" font-size="12" text-anchor="middle">GPU capacity allocated</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0,
        (TOP + H - BOTTOM) / 2.0
    );
    let policies: Vec<ReplayPolicy> = reports
        .first()
        .map(|r| r.results.iter().map(|o| o.policy).collect())
        .unwrap_or_default();
    for (k, p) in policies.iter().enumerate() {
        let pts: Vec<String> = mean_curve(reports, *p)
            .into_iter()
            .map(|(a, b)| format!("{:.1},{:.1}", sx(a.min(x_max)), sy(b)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="curve" data-policy="{p:?}" points="{}" fill="none" stroke="{c}" stroke-width="2"/><rect x="{lx:.1}" y="{ly:.1}" width="14" height="3" fill="{c}"/><text x="{tx:.1}" y="{ty:.1}" font-size="12">{p:?}</text>"#,
            pts.join(" "),
            c = colour(*p),
            lx = LEFT + 12.0,
            ly = TOP + 12.0 + k as f64 * 16.0,
            tx = LEFT + 32.0,
            ty = TOP + 17.0 + k as f64 * 16.0
        );
    }
    out.push_str("</svg>");
}

/// The report: one section per workload (each a list of one report per
/// seed, all with the same policies), titled `title`.
pub fn html_report(title: &str, workloads: &[Vec<OpenbReport>]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 28px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th:first-child,td:first-child{{text-align:left}}</style></head><body data-drawn="0"><h1>{t}</h1><p>Share of the cluster's GPU capacity allocated as GPU demand arrives (pods never leave; a pod that fits nowhere is dropped), mean over the seeds; the dashed line is everything that arrived.</p>"#,
        t = escape(title)
    );
    for reps in workloads {
        let Some(first) = reps.first() else { continue };
        let x_max = ((first.tune_ratio * 100.0) / 10.0).ceil() * 10.0;
        let seeds: Vec<String> = reps.iter().map(|r| r.seed.to_string()).collect();
        let _ = write!(
            out,
            r#"<section class="workload"><h2>{}</h2><p>{} nodes, {} GPUs; seeds {}</p>"#,
            escape(&first.workload),
            first.nodes,
            first.gpus,
            seeds.join(", ")
        );
        chart(&mut out, reps, x_max.max(10.0));
        let s = summarize(&first.workload, reps);
        let _ = write!(
            out,
            "<table><tr><th>policy</th><th>allocated at 100% arrived</th><th>at {:.0}%</th><th>paper @100 / @130</th><th>pods/s</th></tr>",
            first.tune_ratio * 100.0
        );
        for p in &s.policies {
            let _ = write!(
                out,
                "<tr><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
                p.policy,
                p.at_100,
                p.at_end,
                p.published
                    .map(|(a, b)| format!("{a:.2} / {b:.2}"))
                    .unwrap_or_else(|| "-".into()),
                p.pods_per_second.mean
            );
        }
        out.push_str("</table></section>");
    }
    out.push_str(
        "<script>addEventListener('load',function(){var n=0;document.querySelectorAll('polyline.curve').forEach(function(p){if(p.getTotalLength()>0)n++});document.body.setAttribute('data-drawn',String(n))});</script></body></html>\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openb::{OpenbReport, Point, PolicyOutcome};

    fn outcome(policy: ReplayPolicy, slope: f64) -> PolicyOutcome {
        let curve: Vec<Point> = (1..=130)
            .map(|i| Point {
                pod: i,
                arrived_percent: i as f64,
                allocated_percent: (i as f64 * slope).min(90.0),
            })
            .collect();
        PolicyOutcome {
            policy,
            pods: 130,
            scheduled: 100,
            failed: 30,
            failed_gpu_pods: 30,
            first_failure: None,
            first_failure_detail: None,
            at_100: curve.get(99).cloned(),
            at_end: curve[129].clone(),
            curve,
            published: None,
            seconds: 1.0,
            pods_per_second: 130.0,
            double_binds: 0,
            cache_inconsistency: None,
        }
    }

    fn sample(seed: u64) -> OpenbReport {
        OpenbReport {
            workload: "mix share=100,multi=0,pinned=0,cpu=13 <&>".into(),
            nodes: 10,
            gpus: 80,
            pods: 130,
            seed,
            tune_ratio: 1.3,
            measured: None,
            results: vec![
                outcome(ReplayPolicy::Fragmentation, 1.0),
                outcome(ReplayPolicy::BestFit, 0.95),
                outcome(ReplayPolicy::Random, 0.8),
            ],
        }
    }

    #[test]
    fn one_curve_per_policy_and_nothing_fetched() {
        let html = html_report("t", &[vec![sample(1), sample(2)]]);
        assert_eq!(html.matches("<polyline class=\"curve\"").count(), 3);
        assert!(html.contains("data-policy=\"BestFit\""));
        assert!(html.contains("&lt;&amp;&gt;"), "names are escaped");
        for bad in ["src=\"http", "href=\"http", "<link", "url("] {
            assert!(!html.contains(bad), "{bad}");
        }
        let c = mean_curve(&[sample(1), sample(2)], ReplayPolicy::Random);
        assert_eq!(c.len(), 130);
        assert!((c[99].1 - 80.0).abs() < 1e-9);
    }
}
