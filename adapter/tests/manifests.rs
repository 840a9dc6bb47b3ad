//! The manifests in `manifests/`: every YAML document parses, has a known
//! kind and apiVersion, deserializes into its API type; the configuration
//! in the ConfigMap is valid; the Deployment's probes, port, config path and
//! service account agree with the rest; and the RBAC rules allow every API
//! call the adapter makes (statically, from `strata_kube::API_CALLS`, and
//! dynamically, from the calls a real run made against the fake API
//! server) and nothing more.

mod common;

use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_fake_apiserver::fixtures;
use strata_kube::{API_CALLS, AdapterOptions, Scope};
use strata_scheduler::config::SchedulerConfig;

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Every document of every YAML file under `sub` (or all of manifests/).
fn docs(sub: &str) -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    let root = manifests_dir().join(sub);
    if root.is_file() {
        files.push(root);
    } else {
        yaml_files(&root, &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if v.is_null() {
                continue;
            }
            let j: Value = serde_json::to_value(v).unwrap();
            out.push((f.clone(), j));
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, file: &Path) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: {} {}: {e}",
            file.display(),
            v["kind"],
            v["metadata"]["name"]
        )
    })
}

fn find<T: serde::de::DeserializeOwned>(all: &[(PathBuf, Value)], kind: &str) -> Vec<T> {
    all.iter()
        .filter(|(_, v)| v["kind"] == kind)
        .map(|(f, v)| typed(v, f))
        .collect()
}

#[test]
fn every_manifest_parses_with_a_known_kind() {
    let all = docs("");
    assert!(!all.is_empty());
    for (f, v) in &all {
        assert!(
            v["apiVersion"].is_string() && v["kind"].is_string(),
            "{}: a document without apiVersion or kind",
            f.display()
        );
    }
    // The deployment's are checked strictly: known kinds, typed
    // deserialization. (Other files, such as CRDs and their examples, are
    // checked by the tests of the plugins that own them.)
    let ours: Vec<_> = docs("deploy")
        .into_iter()
        .chain(docs("examples/pods.yaml"))
        .collect();
    for (f, v) in &ours {
        let kind = v["kind"].as_str().unwrap();
        let api = v["apiVersion"].as_str().unwrap();
        match (api, kind) {
            ("v1", "Namespace") => drop(typed::<Namespace>(v, f)),
            ("v1", "ServiceAccount") => drop(typed::<ServiceAccount>(v, f)),
            ("v1", "ConfigMap") => drop(typed::<ConfigMap>(v, f)),
            ("v1", "Pod") => drop(typed::<Pod>(v, f)),
            ("apps/v1", "Deployment") => drop(typed::<Deployment>(v, f)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(typed::<ClusterRole>(v, f)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(typed::<ClusterRoleBinding>(v, f))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => drop(typed::<Role>(v, f)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(typed::<RoleBinding>(v, f)),
            ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
                drop(typed::<ValidatingAdmissionPolicy>(v, f))
            }
            ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
                drop(typed::<ValidatingAdmissionPolicyBinding>(v, f))
            }
            other => panic!("{}: unexpected {other:?}", f.display()),
        }
    }
    assert!(manifests_dir().join("Dockerfile").exists());
}

struct Deploy {
    cfg: SchedulerConfig,
    opts: AdapterOptions,
    deployment: Deployment,
    cluster_rules: Vec<PolicyRule>,
    role_rules: Vec<PolicyRule>,
    namespace: String,
}

fn deploy() -> Deploy {
    let all = docs("deploy");
    let cms: Vec<ConfigMap> = find(&all, "ConfigMap");
    let text = cms[0].data.as_ref().unwrap()["config.yaml"].clone();
    let cfg = SchedulerConfig::from_yaml(&text).unwrap();
    let opts = AdapterOptions::from_config(&cfg).unwrap();
    let deployment: Deployment = find(&all, "Deployment").remove(0);
    let crs: Vec<ClusterRole> = find(&all, "ClusterRole");
    let roles: Vec<Role> = find(&all, "Role");
    let namespace = deployment.metadata.namespace.clone().unwrap();
    // Bindings tie the roles to the Deployment's service account.
    let sa = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .service_account_name
        .clone()
        .unwrap();
    let sas: Vec<ServiceAccount> = find(&all, "ServiceAccount");
    assert!(sas.iter().any(|s| s.metadata.name.as_deref() == Some(&sa)
        && s.metadata.namespace.as_deref() == Some(&namespace)));
    let crbs: Vec<ClusterRoleBinding> = find(&all, "ClusterRoleBinding");
    let rbs: Vec<RoleBinding> = find(&all, "RoleBinding");
    let binds_sa = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(&namespace)
        })
    };
    let cluster_rules: Vec<PolicyRule> = crs
        .iter()
        .filter(|cr| {
            crbs.iter().any(|b| {
                b.role_ref.kind == "ClusterRole"
                    && Some(&b.role_ref.name) == cr.metadata.name.as_ref()
                    && binds_sa(&b.subjects)
            })
        })
        .flat_map(|cr| cr.rules.clone().unwrap_or_default())
        .collect();
    let role_rules: Vec<PolicyRule> = roles
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(&namespace))
        .filter(|r| {
            rbs.iter().any(|b| {
                b.role_ref.kind == "Role"
                    && Some(&b.role_ref.name) == r.metadata.name.as_ref()
                    && binds_sa(&b.subjects)
            })
        })
        .flat_map(|r| r.rules.clone().unwrap_or_default())
        .collect();
    Deploy {
        cfg,
        opts,
        deployment,
        cluster_rules,
        role_rules,
        namespace,
    }
}

fn allows(
    rules: &[PolicyRule],
    verb: &str,
    group: &str,
    resource: &str,
    name: Option<&str>,
) -> bool {
    rules.iter().any(|r| {
        r.verbs.iter().any(|v| v == verb)
            && r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && match (&r.resource_names, name) {
                (None, _) => true,
                (Some(names), _) if names.is_empty() => true,
                (Some(names), Some(n)) => names.iter().any(|x| x == n),
                (Some(_), None) => false,
            }
    })
}

#[test]
fn configuration_and_deployment_agree() {
    let d = deploy();
    strata_scheduler::config::resolve(
        &d.cfg,
        &strata_plugins::registry(),
        &strata_plugins::default_plugins(),
        &|_| unreachable_handle(),
    )
    .expect("the ConfigMap's configuration resolves");
    let spec = d.deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let l = &d.opts.leader_election;
    assert!(l.enabled, "two replicas need leader election");
    assert_eq!(
        l.lease_namespace, d.namespace,
        "the Lease must live in the scheduler's namespace"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let port = d.opts.http_address.unwrap().port();
    let probe_port = |p: &Option<k8s_openapi::api::core::v1::Probe>| match &p
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap()
        .port
    {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n as u16,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(probe_port(&c.liveness_probe), port);
    assert_eq!(probe_port(&c.readiness_probe), port);
    let cmd = c.command.clone().unwrap();
    let cfg_path = cmd.iter().skip_while(|a| *a != "--config").nth(1).unwrap();
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| cfg_path.starts_with(&m.mount_path))
        .expect("config mounted");
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        vol.config_map.as_ref().unwrap().name,
        "strata-scheduler-config"
    );
    assert!(cmd.contains(&"run".to_owned()));
    // Examples use our scheduler name.
    let ex = docs("examples/pods.yaml");
    assert!(!ex.is_empty());
    for (_, v) in ex {
        let s = if v["kind"] == "Pod" {
            &v["spec"]["schedulerName"]
        } else {
            &v["spec"]["template"]["spec"]["schedulerName"]
        };
        assert_eq!(s, "strata-scheduler");
    }
}

fn unreachable_handle() -> strata_scheduler::framework::Handle {
    struct NoCluster;
    #[async_trait::async_trait]
    impl strata_scheduler::cluster::ClusterPort for NoCluster {
        async fn bind(
            &self,
            _: &strata_scheduler::model::PodInfo,
            _: strata_scheduler::intern::Sym,
        ) -> Result<(), strata_scheduler::cluster::BindError> {
            Ok(())
        }
        async fn update_pod_condition(
            &self,
            _: &strata_scheduler::model::PodInfo,
            _: strata_scheduler::cluster::PodCondition,
        ) -> Result<(), strata_scheduler::cluster::ClusterError> {
            Ok(())
        }
        async fn delete_pod(
            &self,
            _: &strata_scheduler::model::PodInfo,
            _: &str,
        ) -> Result<(), strata_scheduler::cluster::ClusterError> {
            Ok(())
        }
        fn record_event(&self, _: strata_scheduler::cluster::PodEvent) {}
    }
    strata_scheduler::framework::Handle {
        cluster: std::sync::Arc::new(NoCluster),
        waiting: Default::default(),
        clock: std::sync::Arc::new(strata_scheduler::clock::ManualClock::default()),
        scheduler_name: strata_scheduler::intern::Sym::new("strata-scheduler"),
        preemption: Default::default(),
    }
}

#[test]
fn rbac_allows_every_call_the_adapter_makes_and_nothing_more() {
    let d = deploy();
    let lease = d.opts.leader_election.lease_name.clone();
    for c in API_CALLS {
        let ok = match c.scope {
            Scope::Cluster => allows(&d.cluster_rules, c.verb, c.group, c.resource, None),
            Scope::OwnNamespace => {
                let name = (c.verb != "create").then_some(lease.as_str());
                allows(&d.role_rules, c.verb, c.group, c.resource, name)
            }
        };
        assert!(ok, "RBAC does not allow {c:?}");
    }
    // Least privilege: no wildcard, and every granted (verb, resource) is
    // one the adapter uses, or a read of a custom resource defined in
    // manifests/crds (which plugins register with the adapter).
    let crd_groups: Vec<String> = docs("")
        .into_iter()
        .filter(|(_, v)| v["kind"] == "CustomResourceDefinition")
        .filter_map(|(_, v)| v["spec"]["group"].as_str().map(str::to_owned))
        .collect();
    for (rules, scope) in [
        (&d.cluster_rules, Scope::Cluster),
        (&d.role_rules, Scope::OwnNamespace),
    ] {
        for r in rules.iter() {
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        assert!(g != "*" && res != "*" && v != "*", "wildcard in {r:?}");
                        if crd_groups.contains(g) && matches!(v.as_str(), "get" | "list" | "watch")
                        {
                            continue;
                        }
                        assert!(
                            API_CALLS.iter().any(|c| c.verb == v
                                && c.group == g
                                && c.resource == res
                                && c.scope == scope),
                            "RBAC grants {v} {g}/{res} ({scope:?}) which the adapter never uses"
                        );
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_makes_only_calls_the_rbac_allows() {
    let d = deploy();
    let s = server();
    s.create("nodes", fixtures::node("small", 0, 1, 4, 1))
        .unwrap();
    s.create_many("nodes", fixtures::nodes(3)).unwrap();
    // A low-priority pod filling the small node, and a high-priority one
    // that only fits there: preemption deletes the first.
    let mut low = pod_for_node("low-0", "small");
    low["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1");
    low["spec"]["nodeName"] = json!("small");
    low["spec"]["priority"] = json!(0);
    s.create("pods", low).unwrap();
    let mut high = pod_for_node("high-0", "small");
    high["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1");
    high["spec"]["priority"] = json!(1000);
    s.create("pods", high).unwrap();
    s.create_many("pods", fixtures::pending_pods("work", 5, SCHED))
        .unwrap();
    s.create("pods", json!({"metadata": {"name": "huge", "namespace": "work"},
        "spec": {"schedulerName": SCHED, "containers": [{"name": "c", "resources": {"requests": {"cpu": "9999"}}}]}}))
    .unwrap();
    let mut opts = options("rbac", true);
    opts.leader_election.lease_namespace = d.namespace.clone();
    opts.leader_election.lease_name = d.opts.leader_election.lease_name.clone();
    let a = strata_kube::Adapter::start(config(), opts, client(&s), Vec::new())
        .await
        .unwrap();
    wait_for(
        "victim deleted and the rest bound",
        Duration::from_secs(30),
        || s.get("pods", "work", "low-0").is_none() && s.bindings().len() >= 6,
    )
    .await;
    wait_for("events", Duration::from_secs(10), || {
        s.count("events.events.k8s.io") > 0
    })
    .await;
    // The preemptor was nominated to the node (status.nominatedNodeName),
    // then bound there once the victim was gone.
    let high = s.get("pods", "work", "high-0").unwrap();
    assert_eq!(high["status"]["nominatedNodeName"], "small", "{high}");
    wait_for("the preemptor bound", Duration::from_secs(20), || {
        s.bindings()
            .iter()
            .any(|b| b.pod == "work/high-0" && b.node == "small")
    })
    .await;
    a.shutdown().await;
    let calls = s.calls();
    for want in ["pods/binding", "pods/status", "leases", "events"] {
        assert!(
            calls.iter().any(|c| c.resource == want),
            "the run made no {want} call: {calls:?}"
        );
    }
    assert!(
        calls
            .iter()
            .any(|c| c.verb == "delete" && c.resource == "pods")
    );
    for c in &calls {
        let known = API_CALLS
            .iter()
            .find(|k| k.verb == c.verb && k.group == c.group && k.resource == c.resource);
        let Some(k) = known else {
            panic!("the adapter made {c:?}, which strata_kube::API_CALLS does not list");
        };
        let ok = match k.scope {
            Scope::Cluster => allows(&d.cluster_rules, &c.verb, &c.group, &c.resource, None),
            Scope::OwnNamespace => {
                c.namespace.as_deref() == Some(&d.namespace)
                    && allows(
                        &d.role_rules,
                        &c.verb,
                        &c.group,
                        &c.resource,
                        (c.verb != "create").then_some(d.opts.leader_election.lease_name.as_str()),
                    )
            }
        };
        assert!(ok, "RBAC does not allow {c:?}");
    }
}
