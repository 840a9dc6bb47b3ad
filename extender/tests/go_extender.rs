//! An unmodified extender built in Go from the upstream types
//! (`testing/extender-go/`, `k8s.io/kube-scheduler/extender/v1` v0.35.4)
//! through the engine: filter, prioritize, bind, an ignorable extender that
//! is down, and managedResources routing only the pods that ask.
//!
//! The Go binary is built (cached) by `testing/extender-go/build.sh`.
//! Without Go the tests print SKIPPED, unless `STRATA_E2E_REQUIRED=1`, which
//! makes them fail instead (as in CI).

mod common;

use common::go::{GoExtender, go_extender_binary};
use common::{env, placed, result_of, runtime};
use strata_scheduler::engine::CycleResult;
use strata_scheduler::testing::pod;

fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    format!("http://{a}")
}

/// Filter and prioritize through the Go extender, with node names and with
/// node objects (which the upstream Go types must decode), then bind by it;
/// an ignorable extender that is down is skipped.
#[test]
fn go_extender_filters_scores_and_binds() {
    let Some(bin) = go_extender_binary() else {
        return;
    };
    for node_cache in [true, false] {
        let go = GoExtender::start(&bin, &["-reject", "bad", "-prefer", "^n-c$"]);
        let down = closed_port();
        let rt = runtime();
        let mut e = env(
            rt,
            &format!(
                "[{{urlPrefix: '{down}', filterVerb: filter, ignorable: true, httpTimeout: 2s}}, \
                  {{urlPrefix: '{}', filterVerb: filter, prioritizeVerb: prioritize, bindVerb: bind, weight: 2, nodeCacheCapable: {node_cache}}}]",
                go.url
            ),
        );
        for n in ["n-a", "n-b", "n-bad", "n-c"] {
            e.add_node(n, "4", &[]);
        }
        e.add_pod(pod("p").namespace("team").req("cpu", "1").build());
        let r = e.run();
        assert_eq!(placed(&r, "p"), "n-c", "node names: {node_cache}");
        let f = go.verb("filter");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0]["pod"], "team/p");
        assert_eq!(f[0]["nodes"], 4);
        assert_eq!(f[0]["nodeNames"], node_cache);
        let p = go.verb("prioritize");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0]["nodes"], 3, "what filter kept");
        let b = go.verb("bind");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["pod"], "team/p");
        assert_eq!(b[0]["node"], "n-c");
        assert_eq!(e.sched.counters().bound, 1);
        assert!(e.cluster.binds.lock().is_empty(), "the extender bound it");
        assert!(
            e.events()
                .iter()
                .any(|x| x.reason == "ExtenderFailed" && x.message.contains(&down)),
            "{:?}",
            e.events()
        );
    }
}

/// With managedResources the Go extender sees only the pods that ask for
/// its resource; its FailedAndUnresolvableNodes and its Error reach the pod.
#[test]
fn go_extender_managed_resources_and_errors() {
    let Some(bin) = go_extender_binary() else {
        return;
    };
    let go = GoExtender::start(&bin, &["-unresolvable", "^n-a$", "-error-pods", "^doomed"]);
    let rt = runtime();
    let mut e = env(
        rt,
        &format!(
            "[{{urlPrefix: '{}', filterVerb: filter, nodeCacheCapable: true, managedResources: [{{name: example.com/gpu}}]}}]",
            go.url
        ),
    );
    for n in ["n-a", "n-b"] {
        e.add_node(n, "4", &[("example.com/gpu", "2")]);
    }
    e.add_pod(pod("plain").build());
    e.add_pod(
        pod("gpu")
            .req("cpu", "2")
            .req("example.com/gpu", "1")
            .build(),
    );
    e.add_pod(pod("doomed").req("example.com/gpu", "1").build());
    let r = e.run();
    assert!(matches!(
        result_of(&r, "plain"),
        CycleResult::Scheduled { .. }
    ));
    assert_eq!(placed(&r, "gpu"), "n-b");
    match result_of(&r, "doomed") {
        CycleResult::Failed { message } => assert!(
            message.contains(&go.url) && message.contains("extender-go refuses pod doomed"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let mut seen: Vec<String> = go
        .verb("filter")
        .iter()
        .map(|c| c["pod"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["default/doomed", "default/gpu"],
        "plain never reached it"
    );

    // Only n-b is left for the extender's pods; fill it and the message
    // carries the extender's reason for n-a.
    e.add_pod(
        pod("gpu2")
            .req("cpu", "2")
            .req("example.com/gpu", "1")
            .build(),
    );
    e.add_pod(
        pod("gpu3")
            .req("cpu", "2")
            .req("example.com/gpu", "1")
            .build(),
    );
    let r = e.run();
    let stuck: Vec<&String> = r
        .iter()
        .filter_map(|(n, res)| match res {
            CycleResult::Unschedulable { message } => {
                assert!(
                    message.contains("extender-go: node is out of service"),
                    "{message}"
                );
                Some(n)
            }
            _ => None,
        })
        .collect();
    assert_eq!(stuck.len(), 1, "{r:?}");
}
