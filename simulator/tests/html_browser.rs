//! The HTML pages of `replay-openb --html` and `simulate --html` rendered by
//! a headless Chromium: each loads offline, its script runs, and every
//! policy's curve (every server's square) has a drawn size.
//! Skipped, with the reason printed, when Chromium is not installed —
//! unless `STRATA_BROWSER_REQUIRED=1` (CI), where a missing browser fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use strata_simulator::occupancy_html::{Occupancy, Server, occupancy_html};
use strata_simulator::openb::{OpenbReport, Point, PolicyOutcome, ReplayPolicy};
use strata_simulator::openb_html::html_report;

fn outcome(policy: ReplayPolicy, slope: f64) -> PolicyOutcome {
    let curve: Vec<Point> = (1..=130)
        .map(|i| Point {
            pod: i,
            arrived_percent: i as f64,
            allocated_percent: (i as f64 * slope).min(92.0),
        })
        .collect();
    PolicyOutcome {
        policy,
        pods: 130,
        scheduled: 110,
        failed: 20,
        failed_gpu_pods: 20,
        first_failure: None,
        first_failure_detail: None,
        at_100: curve.get(99).cloned(),
        at_end: curve[129].clone(),
        curve,
        published: Some((95.23, 95.39)),
        seconds: 1.0,
        pods_per_second: 130.0,
        double_binds: 0,
        cache_inconsistency: None,
    }
}

fn report(workload: &str, seed: u64) -> OpenbReport {
    OpenbReport {
        workload: workload.into(),
        nodes: 10,
        gpus: 80,
        pods: 130,
        seed,
        tune_ratio: 1.3,
        measured: None,
        results: vec![
            outcome(ReplayPolicy::Fragmentation, 1.0),
            outcome(ReplayPolicy::BestFit, 0.97),
            outcome(ReplayPolicy::Random, 0.85),
        ],
    }
}

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("STRATA_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn run(browser: &Path, profile: &Path, extra: &[String]) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .output()
        .expect("chromium starts")
}

/// The browser, or `None` (with the reason printed) when the test should
/// skip; panics when it is missing and required.
fn browser_or_skip() -> Option<PathBuf> {
    let b = chromium();
    if b.is_none() {
        let msg = "chromium not found (apt-get install -y chromium, or set STRATA_CHROMIUM)";
        if std::env::var("STRATA_BROWSER_REQUIRED").as_deref() == Ok("1") {
            panic!("{msg}, and STRATA_BROWSER_REQUIRED=1");
        }
        eprintln!("skipped: {msg}");
    }
    b
}

#[test]
fn occupancy_map_draws_every_server_in_a_headless_browser() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let mut occ = Occupancy::new();
    for sn in 0..3 {
        for cab in 0..4 {
            let servers = (0..8)
                .map(|i| Server {
                    name: format!("n-{sn}-{cab}-{i}"),
                    used: (i + cab) % 9,
                    capacity: 8,
                    // A group per cabinet on its first two servers.
                    groups: if i < 2 {
                        vec![format!("default/job-{sn}-{cab}")]
                    } else {
                        vec![]
                    },
                })
                .collect();
            occ.entry(format!("sn-{sn}"))
                .or_default()
                .insert(format!("cab-{cab}"), servers);
        }
    }
    let dir = std::env::temp_dir().join(format!("strata-occupancy-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("sim.html");
    std::fs::write(&page, occupancy_html("t", "report", &occ, "nvidia.com/gpu")).unwrap();
    let dom = run(
        &browser,
        &dir.join("profile"),
        &["--dump-dom".into(), format!("file://{}", page.display())],
    );
    let text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        text.contains("data-drawn=\"96\""),
        "3 super-nodes x 4 cabinets x 8 servers drawn; chromium said: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        text.contains("data-groups-drawn=\"24\""),
        "a group dot on 2 servers of each of the 12 cabinets"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn html_report_draws_every_curve_in_a_headless_browser() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("strata-openb-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    let workloads = vec![
        vec![report("default", 42), report("default", 43)],
        vec![report("mix share=100,cpu=13", 42)],
    ];
    std::fs::write(&page, html_report("test", &workloads)).unwrap();
    let url = format!("file://{}", page.display());

    let dom = run(
        &browser,
        &dir.join("profile"),
        &["--dump-dom".into(), url.clone()],
    );
    let text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        text.contains("data-drawn=\"6\""),
        "the script should find 6 curves with a length; chromium said: {}\n{}",
        String::from_utf8_lossy(&dom.stderr),
        text.chars().take(400).collect::<String>()
    );
    assert_eq!(text.matches("<polyline class=\"curve\"").count(), 6);

    let shot = dir.join("shot.png");
    let s = run(
        &browser,
        &dir.join("profile"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=800,1000".into(),
            url,
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG"),
        "a screenshot was written: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
