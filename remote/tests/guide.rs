//! `docs/PLUGINS.md`'s remote plugin section shows real code: its
//! configuration block (fenced `yaml remote`) is a configuration this crate
//! accepts, and its Go block is an excerpt of the Go example.

use std::path::Path;

fn block(text: &str, fence: &str) -> String {
    let start = text
        .find(&format!("```{fence}\n"))
        .unwrap_or_else(|| panic!("no ```{fence} block"));
    let body = &text[start + fence.len() + 4..];
    body[..body.find("```").expect("closed")].to_owned()
}

fn guide() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PLUGINS.md"))
        .expect("docs/PLUGINS.md")
}

#[test]
fn the_configuration_block_parses_with_its_remote_args() {
    let yaml = block(&guide(), "yaml remote");
    let cfg = strata_scheduler::config::SchedulerConfig::from_yaml(&yaml).expect("a configuration");
    assert_eq!(
        strata_remote::configured_names(&yaml),
        vec!["GoVendorHealth"]
    );
    let pc = &cfg.profiles[0].plugin_config[0];
    let args = strata_remote::RemoteArgs::parse(Some(&pc.args)).expect("valid remote args");
    assert_eq!(args.failure_policy, strata_remote::FailurePolicy::Ignore);
    assert_eq!(args.plugin_config, serde_json::json!({"degradedScore": 20}));
}

#[test]
fn the_go_block_is_an_excerpt_of_the_example() {
    let go = block(&guide(), "go");
    let main = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/go/examples/vendorhealth/main.go"),
    )
    .expect("main.go");
    assert!(main.contains(&go), "not in main.go:\n{go}");
}
