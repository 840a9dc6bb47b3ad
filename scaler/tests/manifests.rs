//! `manifests/scaler/`: the RBAC grants every call the controller makes and
//! nothing more, the configuration reads (scheduler and scaler sections),
//! and the example LeaderWorkerSet opts in with a model the configuration
//! defines.

use serde_json::Value;
use std::path::PathBuf;
use strata_scaler::controller::API_CALLS;
use strata_scaler::controller::config::ScalerConfig;
use strata_scaler::controller::lws::Lws;
use strata_scheduler::config::SchedulerConfig;

fn docs(rel: &str) -> Vec<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(rel);
    let text = std::fs::read_to_string(&p).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn rbac_grants_the_controller_s_calls_and_nothing_more() {
    let all = docs("scaler/rbac.yaml");
    let role = all.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let mut granted = Vec::new();
    for r in role["rules"].as_array().unwrap() {
        for g in r["apiGroups"].as_array().unwrap() {
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    granted.push((
                        v.as_str().unwrap().to_owned(),
                        g.as_str().unwrap().to_owned(),
                        res.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    for c in API_CALLS {
        assert!(
            granted.contains(&(c.verb.into(), c.group.into(), c.resource.into())),
            "rbac.yaml does not grant {c:?}"
        );
    }
    for (v, g, r) in &granted {
        assert!(
            API_CALLS
                .iter()
                .any(|c| c.verb == v && c.group == g && c.resource == r),
            "rbac.yaml grants {v} {g}/{r}, which the controller never uses"
        );
    }
    let binding = all
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], "strata-scheduler");
}

#[test]
fn the_configuration_and_the_example_agree() {
    let cm = &docs("scaler/config.yaml")[0];
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let cfg = SchedulerConfig::from_yaml(text).unwrap();
    let sc = ScalerConfig::from_value(cfg.scaler.as_ref()).unwrap();
    assert!(sc.enabled);
    let ex = docs("examples/lws-scaled.yaml").remove(0);
    let obj: kube::api::DynamicObject = serde_json::from_value(ex).unwrap();
    let l = Lws::from_object(&obj)
        .unwrap()
        .expect("the example opts in");
    assert!(sc.models.contains_key(&l.model), "{}", l.model);
    let q = l.what_if_group().unwrap();
    assert_eq!(q.spec.min_member, l.size);
    let crd = &docs("scaler/leaderworkerset-crd-for-tests.yaml")[0];
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"],
        ".spec.replicas"
    );
}
