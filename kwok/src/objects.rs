//! A scenario as API objects: kwok Nodes and the Pods of its workloads.
//!
//! Nodes are the simulator's nodes ([`NodePool::node`]) made into kwok
//! nodes: annotated `kwok.x-k8s.io/node: fake` so kwok manages them, tainted
//! `kwok.x-k8s.io/node=fake:NoSchedule` so no real workload lands on them,
//! labelled with the run they belong to so cleanup finds them. Their
//! `status` (allocatable, capacity, images) is sent at creation, which the
//! API server keeps for Nodes; kwok then adds conditions and addresses.
//!
//! Pods are stamped from each workload's template as the simulator stamps
//! them (`{workload}-{index}`, the group label when the workload is
//! grouped), put in the run's namespace, given the scheduler name asked
//! for and a toleration of the kwok taint. Nothing here does I/O.
//!
//! [`NodePool::node`]: strata_simulator::scenario::NodePool::node

use k8s_openapi::api::core::v1::{Node, Pod, PodSchedulingGate, Taint, Toleration};
use std::time::Duration;
use strata_simulator::Scenario;
use strata_simulator::scenario::{Arrival, Workload};

/// The annotation kwok selects the nodes it manages by (`up.sh --kwok`
/// runs kwok with `--manage-nodes-with-annotation-selector` on it).
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// The taint every kwok node carries, and pods tolerate.
pub const KWOK_TAINT_KEY: &str = "kwok.x-k8s.io/node";
/// Label on every object a run creates, valued with the run's id.
pub const RUN_LABEL: &str = "strata.io/kwok-run";
/// The scheduling gate pods are created with when asked to be gated.
pub const GATE: &str = "strata.io/kwok-gate";
/// The image a template without one gets (the API requires an image).
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Scenario node `node` as a kwok node of run `run`.
pub fn kwok_node(mut node: Node, run: &str) -> Node {
    let md = &mut node.metadata;
    md.uid = None;
    md.annotations
        .get_or_insert_with(Default::default)
        .insert(KWOK_NODE_ANNOTATION.into(), "fake".into());
    let labels = md.labels.get_or_insert_with(Default::default);
    labels.insert("type".into(), "kwok".into());
    labels.insert(RUN_LABEL.into(), run.into());
    let spec = node.spec.get_or_insert_with(Default::default);
    spec.taints.get_or_insert_with(Vec::new).push(Taint {
        key: KWOK_TAINT_KEY.into(),
        value: Some("fake".into()),
        effect: "NoSchedule".into(),
        time_added: None,
    });
    if let Some(st) = node.status.as_mut() {
        // kwok writes the conditions (Ready) when it takes the node over.
        st.conditions = None;
    }
    node
}

/// Every node of the scenario as a kwok node of run `run`, pool by pool.
pub fn nodes(sc: &Scenario, run: &str) -> Vec<Node> {
    sc.nodes().into_iter().map(|n| kwok_node(n, run)).collect()
}

/// How pods are stamped.
#[derive(Clone, Debug)]
pub struct PodOptions {
    /// The run's id (label value).
    pub run: String,
    /// Namespace of every pod.
    pub namespace: String,
    /// `spec.schedulerName` of every pod.
    pub scheduler_name: String,
    /// Create the pods with a scheduling gate ([`GATE`]).
    pub gated: bool,
}

/// One pod to create and when, relative to the start of the run.
#[derive(Clone, Debug)]
pub struct PlannedPod {
    /// When to create it (the workload's arrival pattern).
    pub at: Duration,
    /// Index of its workload in the scenario.
    pub workload: usize,
    /// The pod.
    pub pod: Pod,
}

/// When pod `index` of `w` arrives: the simulator's arrival pattern.
pub fn arrival_time(w: &Workload, index: u32) -> Duration {
    let start = Duration::from_secs_f64(w.start.0);
    match w.arrival {
        Arrival::Burst => start,
        Arrival::Rate(r) => start + Duration::from_secs_f64(f64::from(index) / r),
    }
}

/// Pod `index` of workload `w`.
pub fn pod(w: &Workload, index: u32, opts: &PodOptions) -> Pod {
    let mut pod = (*w.template.pod).clone();
    let md = &mut pod.metadata;
    md.name = Some(format!("{}-{index}", w.name));
    md.namespace = Some(opts.namespace.clone());
    md.uid = None;
    md.resource_version = None;
    md.generate_name = None;
    let labels = md.labels.get_or_insert_with(Default::default);
    labels.insert(RUN_LABEL.into(), opts.run.clone());
    if let Some(g) = &w.group {
        labels.extend(g.labels(index).into_iter().map(|(k, v)| (k.to_owned(), v)));
        let extra = g.annotations();
        if !extra.is_empty() {
            md.annotations
                .get_or_insert_with(Default::default)
                .extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.scheduler_name = Some(opts.scheduler_name.clone());
    spec.node_name = None;
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            key: Some(KWOK_TAINT_KEY.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if c.image.as_deref().is_none_or(str::is_empty) {
            c.image = Some(DEFAULT_IMAGE.into());
        }
    }
    if opts.gated {
        spec.scheduling_gates
            .get_or_insert_with(Vec::new)
            .push(PodSchedulingGate { name: GATE.into() });
    }
    pod.status = None;
    pod
}

/// The pods of the workloads `keep` accepts, sorted by arrival time (ties
/// keep workload order, then index order, as the simulator does).
pub fn pods(sc: &Scenario, opts: &PodOptions, keep: impl Fn(&Workload) -> bool) -> Vec<PlannedPod> {
    let mut out = Vec::new();
    for (wi, w) in sc.workloads.iter().enumerate() {
        if !keep(w) {
            continue;
        }
        for i in 0..w.count {
            out.push(PlannedPod {
                at: arrival_time(w, i),
                workload: wi,
                pod: pod(w, i, opts),
            });
        }
    }
    out.sort_by_key(|p| p.at);
    out
}

/// Binds `pods` directly (sets `spec.nodeName`), first fit going round the
/// nodes from where the last pod went: a node that selects and tolerates
/// the pod and has room for its requests. For load that exists before the
/// scheduler starts; inter-pod rules are not considered. Returns how many
/// pods found no node (left unbound).
pub fn place_directly(nodes: &[Node], pods: &mut [Pod]) -> usize {
    use crate::check::{milli, node_selected, pod_requests, taints_tolerated};
    if nodes.is_empty() {
        return pods.len();
    }
    let mut free: Vec<std::collections::BTreeMap<String, i128>> = nodes
        .iter()
        .map(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .map(|a| {
                    a.iter()
                        .filter_map(|(k, q)| Some((k.clone(), milli(&q.0)?)))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut unplaced = 0;
    let mut next = 0;
    for pod in pods.iter_mut() {
        let req = pod_requests(pod);
        let found = (0..nodes.len())
            .map(|k| (next + k) % nodes.len())
            .find(|&i| {
                req.iter()
                    .all(|(r, v)| *v == 0 || free[i].get(r).is_some_and(|f| f >= v))
                    && node_selected(pod, &nodes[i])
                    && taints_tolerated(pod, &nodes[i])
            });
        match found {
            Some(i) => {
                for (r, v) in &req {
                    if let Some(f) = free[i].get_mut(r) {
                        *f -= v;
                    }
                }
                if let Some(spec) = pod.spec.as_mut() {
                    spec.node_name = nodes[i].metadata.name.clone();
                }
                next = (i + 1) % nodes.len();
            }
            None => unplaced += 1,
        }
    }
    unplaced
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_simulator::groups::GROUP_LABEL;

    const SC: &str = r#"
name: t
nodePools:
  - name: gpu
    count: 3
    allocatable: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "8"}
    labels: {example.com/super-node: "sn-{index/2}"}
    taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]
    annotations:
      strata.io/devices: '[{{"kind":"nvidia.com/gpu","id":"{name}-gpu","count":8}}]'
workloads:
  - name: train
    count: 4
    group: {name: job, size: 2}
    template:
      metadata: {labels: {app: train}}
      spec:
        schedulerName: someone-else
        containers: [{name: c, resources: {requests: {cpu: "1", nvidia.com/gpu: "1"}, limits: {nvidia.com/gpu: "1"}}}]
  - name: stream
    count: 3
    arrival: {rate: 2}
    start: 1
    template:
      spec:
        containers: [{name: c, image: busybox}]
"#;

    fn opts(gated: bool) -> PodOptions {
        PodOptions {
            run: "r1".into(),
            namespace: "ns1".into(),
            scheduler_name: "strata-scheduler".into(),
            gated,
        }
    }

    #[test]
    fn nodes_are_kwok_nodes_with_the_simulators_shape() {
        let sc = Scenario::parse(SC, "t.yaml").unwrap();
        let ns = nodes(&sc, "r1");
        assert_eq!(ns.len(), 3);
        let n = &ns[2];
        let md = &n.metadata;
        assert_eq!(md.name.as_deref(), Some("gpu-2"));
        assert!(md.uid.is_none());
        assert_eq!(
            md.annotations.as_ref().unwrap()[KWOK_NODE_ANNOTATION],
            "fake"
        );
        assert!(md.annotations.as_ref().unwrap()["strata.io/devices"].contains("\"gpu-2-gpu\""));
        let labels = md.labels.as_ref().unwrap();
        assert_eq!(labels["example.com/super-node"], "sn-1");
        assert_eq!(labels["kubernetes.io/hostname"], "gpu-2");
        assert_eq!(labels[RUN_LABEL], "r1");
        let taints = n.spec.as_ref().unwrap().taints.as_ref().unwrap();
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[0].key, "nvidia.com/gpu");
        assert_eq!(
            (
                taints[1].key.as_str(),
                taints[1].value.as_deref(),
                taints[1].effect.as_str()
            ),
            (KWOK_TAINT_KEY, Some("fake"), "NoSchedule")
        );
        let st = n.status.as_ref().unwrap();
        assert_eq!(st.allocatable.as_ref().unwrap()["nvidia.com/gpu"].0, "8");
        assert_eq!(st.capacity, st.allocatable);
        assert!(st.conditions.is_none());
    }

    #[test]
    fn pods_follow_the_templates_and_the_arrival_pattern() {
        let sc = Scenario::parse(SC, "t.yaml").unwrap();
        let ps = pods(&sc, &opts(false), |_| true);
        assert_eq!(ps.len(), 7);
        // Same times and order as the simulator's arrivals.
        let sim: Vec<(Duration, String)> = sc
            .arrivals()
            .iter()
            .map(|a| (a.at, a.pod.name.to_string()))
            .collect();
        let ours: Vec<(Duration, String)> = ps
            .iter()
            .map(|p| (p.at, p.pod.metadata.name.clone().unwrap()))
            .collect();
        assert_eq!(ours, sim);
        let p = &ps[3].pod;
        assert_eq!(p.metadata.name.as_deref(), Some("train-3"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns1"));
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[GROUP_LABEL], "job-1");
        assert_eq!(labels["app"], "train");
        assert_eq!(labels[RUN_LABEL], "r1");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.scheduler_name.as_deref(), Some("strata-scheduler"));
        assert!(spec.scheduling_gates.is_none());
        let tol = spec.tolerations.as_ref().unwrap();
        assert!(
            tol.iter().any(|t| t.key.as_deref() == Some(KWOK_TAINT_KEY)
                && t.operator.as_deref() == Some("Exists"))
        );
        assert_eq!(spec.containers[0].image.as_deref(), Some(DEFAULT_IMAGE));
        let s = &ps[6].pod;
        assert_eq!(
            s.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("busybox")
        );
        assert!(
            !s.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(GROUP_LABEL)
        );
    }

    #[test]
    fn gated_pods_carry_the_gate_and_filters_apply() {
        let sc = Scenario::parse(SC, "t.yaml").unwrap();
        let ps = pods(&sc, &opts(true), |w| w.name == "stream");
        assert_eq!(ps.len(), 3);
        let gates = ps[0]
            .pod
            .spec
            .as_ref()
            .unwrap()
            .scheduling_gates
            .as_ref()
            .unwrap();
        assert_eq!(gates[0].name, GATE);
    }

    #[test]
    fn every_builtin_scenario_makes_valid_objects() {
        for (name, text) in strata_simulator::scenario::BUILTIN {
            let sc = Scenario::parse(text, name).unwrap();
            let ns = nodes(&sc, "r");
            assert_eq!(ns.len(), sc.node_count(), "{name}");
            let names: std::collections::BTreeSet<_> = ns
                .iter()
                .map(|n| n.metadata.name.clone().unwrap())
                .collect();
            assert_eq!(names.len(), ns.len(), "{name}: node names are unique");
            // Pods serialize to the API's JSON without a node name.
            let ps = pods(&sc, &opts(false), |_| true);
            assert_eq!(ps.len(), sc.pod_count(), "{name}");
            let j = serde_json::to_value(&ps[0].pod).unwrap();
            assert!(j["spec"].get("nodeName").is_none(), "{name}");
        }
    }

    #[test]
    fn direct_placement_goes_round_and_respects_room_and_taints() {
        let sc = Scenario::parse(SC, "t.yaml").unwrap();
        let ns = nodes(&sc, "r");
        // The gpu taint is not tolerated by the stream pods: nothing fits.
        let mut ps: Vec<Pod> = pods(&sc, &opts(false), |w| w.name == "stream")
            .into_iter()
            .map(|p| p.pod)
            .collect();
        assert_eq!(place_directly(&ns, &mut ps), 3);
        // Train pods tolerate nothing either; add the toleration: 8 GPUs a
        // node, 1 a pod, 3 nodes: 24 fit, round robin.
        let mut ps: Vec<Pod> = (0..30)
            .map(|i| {
                let mut p = pod(&sc.workloads[0], i, &opts(false));
                p.spec
                    .as_mut()
                    .unwrap()
                    .tolerations
                    .as_mut()
                    .unwrap()
                    .push(Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    });
                p
            })
            .collect();
        assert_eq!(place_directly(&ns, &mut ps), 6);
        let on = |i: usize| ps[i].spec.as_ref().unwrap().node_name.clone();
        assert_eq!(
            (on(0), on(1), on(2), on(3)),
            (
                Some("gpu-0".into()),
                Some("gpu-1".into()),
                Some("gpu-2".into()),
                Some("gpu-0".into())
            )
        );
        assert_eq!(on(29), None);
    }

    #[test]
    fn scheduler_perf_scenarios_parse_and_place_their_initial_pods() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../simulator/scenarios/scheduler-perf");
        let mut seen = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let sc = Scenario::load(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
            let first = &sc.workloads[0];
            assert!(
                ["init", "existing"].contains(&first.name.as_str()),
                "{}",
                path.display()
            );
            if sc.node_count() > 5000 {
                seen += 1;
                continue;
            }
            // Direct placement finds room for every initial pod.
            let ns = nodes(&sc, "r");
            let mut ps: Vec<Pod> = pods(&sc, &opts(false), |w| w.name == first.name)
                .into_iter()
                .map(|p| p.pod)
                .collect();
            assert_eq!(place_directly(&ns, &mut ps), 0, "{}", path.display());
            seen += 1;
        }
        assert_eq!(seen, 5);
    }
}
