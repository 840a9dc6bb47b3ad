//! A [`GroupPlacer`] backed by the production engine: the default plugins
//! (PodGroup included) on an in-process cluster ([`SimCluster`]), the same
//! way the simulator runs them.
//!
//! "Where would one more group go" is the PodGroup plugin's what-if planner
//! ([`strata_plugins::pod_group::PodGroupStore::what_if`]), run on the
//! engine's snapshot with nothing reserved. A group is created as pods of
//! an inline PD group (`strata.io/pod-group`, `strata.io/subgroups:
//! prefill:P,decode:D`, required level `strata.io/supernode`), and the
//! engine is driven until it is bound whole or given up. The per-role
//! baseline creates plain pods (no group), placed one by one.
//!
//! Each group's time from the what-if question to its last member bound
//! is measured on the wall clock (scheduler time, no virtual time passes).

use crate::model::ServiceSpec;
use crate::scaler::{GroupInfo, GroupPlacer, PlaceError};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_plugins::pod_group::{PodGroupSpec, Stores, WhatIfGroup};
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::Scheduler;
use strata_scheduler::model::PodInfo;
use strata_simulator::cluster::SimCluster;

/// The scheduler name the engine serves.
pub const SCHEDULER: &str = "strata-scheduler";
/// The accelerator resource.
pub const ACCELERATOR: &str = "nvidia.com/gpu";
/// The super-node label.
pub const SUPERNODE: &str = "strata.io/supernode";

/// Errors building the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration was refused.
    #[error("scheduler configuration: {0}")]
    Config(String),
    /// The tokio runtime could not start.
    #[error("tokio runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A pod did not compile.
    #[error("pod {0}: {1}")]
    Pod(String, String),
}

/// The cluster's shape: super-nodes of servers with accelerators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClusterShape {
    /// Super-nodes.
    pub supernodes: u32,
    /// Servers per super-node.
    pub servers_per_supernode: u32,
    /// Accelerators per server.
    pub accelerators_per_server: u32,
}

impl ClusterShape {
    /// Servers in all.
    pub fn servers(&self) -> u32 {
        self.supernodes * self.servers_per_supernode
    }
}

#[derive(Clone, Debug)]
struct PodRec {
    accelerators: u32,
    role: Role,
}

/// A role of an inference service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Role {
    /// Prefill instances.
    Prefill,
    /// Decode instances.
    Decode,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
    }
}

/// The engine, its cluster, and what was created through it.
pub struct EngineCluster {
    scheduler: Scheduler,
    cluster: Arc<SimCluster>,
    clock: Arc<ManualClock>,
    stores: Stores,
    node_domain: FxHashMap<String, String>,
    pods: BTreeMap<String, PodRec>,
    groups: BTreeMap<String, Vec<(String, Vec<String>)>>,
    role_pods: BTreeMap<(String, Role), Vec<String>>,
    seq: u64,
    asked_at: Option<Instant>,
    /// Wall time of each group from the what-if question to bound whole.
    pub group_times: Vec<Duration>,
    _rt: tokio::runtime::Runtime,
}

impl EngineCluster {
    /// An engine with the default plugins over a cluster of `shape`.
    pub fn new(shape: ClusterShape) -> Result<EngineCluster, EngineError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let cluster = Arc::new(SimCluster::new());
        let clock = Arc::new(ManualClock::default());
        let stores = Stores::default();
        let mut cfg = SchedulerConfig::default_with_name(SCHEDULER);
        cfg.parallelism = 1;
        let mut scheduler = Scheduler::new(
            cfg,
            &strata_plugins::registry_with(&stores),
            &strata_plugins::default_plugins(),
            cluster.clone(),
            clock.clone(),
            rt.handle().clone(),
        )
        .map_err(|e| EngineError::Config(e.to_string()))?;
        let mut node_domain = FxHashMap::default();
        for s in 0..shape.supernodes {
            for h in 0..shape.servers_per_supernode {
                let name = format!("sn{s}-s{h}");
                let sn = format!("sn{s}");
                let res = serde_json::json!({"cpu": "192", "memory": "2Ti", "pods": "110",
                    ACCELERATOR: shape.accelerators_per_server.to_string()});
                let node: k8s_openapi::api::core::v1::Node =
                    serde_json::from_value(serde_json::json!({
                        "metadata": {"name": name, "labels": {
                            "kubernetes.io/hostname": name,
                            SUPERNODE: sn,
                            "strata.io/cabinet": format!("sn{s}-c{}", h / 8),
                        }},
                        "status": {"capacity": res, "allocatable": res}
                    }))
                    .map_err(|e| EngineError::Pod(name.clone(), e.to_string()))?;
                scheduler.handle_update(ClusterUpdate::NodeUpserted(Arc::new(node)));
                node_domain.insert(name, sn);
            }
        }
        Ok(EngineCluster {
            scheduler,
            cluster,
            clock,
            stores,
            node_domain,
            pods: BTreeMap::new(),
            groups: BTreeMap::new(),
            role_pods: BTreeMap::new(),
            seq: 0,
            asked_at: None,
            group_times: Vec::new(),
            _rt: rt,
        })
    }

    fn pod_json(
        svc: &ServiceSpec,
        role: Role,
        name: &str,
        group: Option<&str>,
    ) -> serde_json::Value {
        let acc = match role {
            Role::Prefill => svc.prefill_accelerators,
            Role::Decode => svc.decode_accelerators,
        };
        let mut labels = serde_json::json!({"app": svc.name, "role": role.as_str()});
        let mut annotations = serde_json::json!({});
        if let Some(g) = group {
            labels["strata.io/pod-group"] = g.into();
            labels["strata.io/subgroup"] = role.as_str().into();
            annotations = serde_json::json!({
                "strata.io/min-member": (svc.prefill_per_group + svc.decode_per_group).to_string(),
                "strata.io/subgroups": format!("prefill:{},decode:{}", svc.prefill_per_group, svc.decode_per_group),
                "strata.io/topology-required-level": SUPERNODE,
                "strata.io/schedule-timeout-seconds": "30",
            });
        }
        serde_json::json!({
            "metadata": {"name": name, "namespace": "serving", "uid": format!("serving/{name}"),
                         "labels": labels, "annotations": annotations},
            "spec": {"schedulerName": SCHEDULER, "containers": [{"name": "engine", "image": "vllm:1",
                "resources": {"requests": {"cpu": "16", "memory": "128Gi", ACCELERATOR: acc.to_string()}}}]}
        })
    }

    fn compile(v: serde_json::Value) -> Result<PodInfo, EngineError> {
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(v).map_err(|e| EngineError::Pod(name.clone(), e.to_string()))?;
        PodInfo::compile(&pod).map_err(|e| EngineError::Pod(name, e.to_string()))
    }

    fn create(
        &mut self,
        svc: &ServiceSpec,
        role: Role,
        group: Option<&str>,
    ) -> Result<String, EngineError> {
        self.seq += 1;
        let name = match group {
            Some(g) => format!("{g}-{}-{}", role.as_str(), self.seq),
            None => format!("{}-{}-{}", svc.name, role.as_str(), self.seq),
        };
        let pod = Arc::new(Self::compile(Self::pod_json(svc, role, &name, group))?);
        let uid = pod.uid.to_string();
        self.cluster.create_pod(pod.clone());
        self.scheduler
            .handle_update(ClusterUpdate::PodUpserted(pod));
        self.pods.insert(
            uid.clone(),
            PodRec {
                accelerators: match role {
                    Role::Prefill => svc.prefill_accelerators,
                    Role::Decode => svc.decode_accelerators,
                },
                role,
            },
        );
        Ok(uid)
    }

    fn delete(&mut self, uid: &str) {
        if self.pods.remove(uid).is_some() {
            self.stores.pod_groups.forget_pod(uid);
            self.scheduler
                .handle_update(ClusterUpdate::PodDeleted { uid: uid.into() });
        }
    }

    /// Drives the engine until nothing moves: cycles, binding cycles,
    /// confirmations fed back as an informer would.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while self.scheduler.schedule_one().is_some() {
                moved = true;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.scheduler.in_flight() > self.scheduler.waiting_pods().len()
                && Instant::now() < deadline
            {
                self.scheduler.wait_for_completion(Duration::from_millis(5));
            }
            self.scheduler.process_completions();
            for u in self.cluster.drain_updates() {
                let known = match &u {
                    ClusterUpdate::PodUpserted(p) => self.pods.contains_key(&*p.uid),
                    _ => true,
                };
                if known {
                    self.scheduler.handle_update(u);
                    moved = true;
                }
            }
            if !moved && self.scheduler.queue_stats().active == 0 {
                break;
            }
        }
    }

    /// Moves virtual time on (backoffs, Permit timeouts) and settles.
    pub fn advance(&mut self, d: Duration) {
        self.clock.advance(d);
        self.scheduler.tick();
        self.settle();
    }

    /// The super-node a pod is bound to.
    pub fn domain_of(&self, uid: &str) -> Option<&str> {
        let node = self.cluster.binding(uid)?;
        self.node_domain.get(node.as_str()).map(String::as_str)
    }

    /// Bound pods of `svc`'s role (group members and plain pods alike).
    pub fn bound_of(&self, role: Role) -> Vec<(&str, &str)> {
        self.pods
            .iter()
            .filter(|(_, r)| r.role == role)
            .filter_map(|(u, _)| self.domain_of(u).map(|d| (u.as_str(), d)))
            .collect()
    }

    /// Accelerators held by bound pods.
    pub fn accelerators_bound(&self) -> u64 {
        self.pods
            .iter()
            .filter(|(u, _)| self.cluster.is_bound(u))
            .map(|(_, r)| u64::from(r.accelerators))
            .sum()
    }

    /// A group's members: bound count, total, and the domains they are in.
    pub fn group_state(&self, svc: &ServiceSpec, id: &str) -> Option<(usize, usize, Vec<String>)> {
        let (_, uids) = self.groups.get(&svc.name)?.iter().find(|(g, _)| g == id)?;
        let mut doms: Vec<String> = uids
            .iter()
            .filter_map(|u| self.domain_of(u).map(str::to_owned))
            .collect();
        let bound = doms.len();
        doms.sort();
        doms.dedup();
        Some((bound, uids.len(), doms))
    }

    /// Plain (group-less) pods of a role: how many exist.
    pub fn role_count(&self, svc: &ServiceSpec, role: Role) -> usize {
        self.role_pods
            .get(&(svc.name.clone(), role))
            .map_or(0, Vec::len)
    }

    /// Plain pods of a role that are bound, with their uids.
    pub fn role_bound(&self, svc: &ServiceSpec, role: Role) -> Vec<String> {
        self.role_pods
            .get(&(svc.name.clone(), role))
            .map(|v| {
                v.iter()
                    .filter(|u| self.cluster.is_bound(u))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Brings a role's plain pods to `n` (newest removed first), as a
    /// ReplicaSet an HPA scales; returns the wall time the engine took.
    pub fn scale_role(
        &mut self,
        svc: &ServiceSpec,
        role: Role,
        n: usize,
    ) -> Result<Duration, EngineError> {
        let t = Instant::now();
        let have = self.role_count(svc, role);
        if n > have {
            for _ in have..n {
                let uid = self.create(svc, role, None)?;
                self.role_pods
                    .entry((svc.name.clone(), role))
                    .or_default()
                    .push(uid);
            }
        } else {
            // Unbound pods go first, then the newest.
            let list = self.role_pods.entry((svc.name.clone(), role)).or_default();
            let mut order: Vec<String> = list.clone();
            let cluster = self.cluster.clone();
            order.sort_by_key(|u| cluster.is_bound(u));
            let gone: Vec<String> = order.into_iter().take(have - n).collect();
            list.retain(|u| !gone.contains(u));
            for u in gone {
                self.delete(&u);
            }
        }
        self.settle();
        Ok(t.elapsed())
    }

    fn group_template(svc: &ServiceSpec) -> Result<WhatIfGroup, PlaceError> {
        let bad = |e: String| PlaceError::NoRoom {
            service: svc.name.clone(),
            reason: e,
        };
        let p = Self::compile(Self::pod_json(
            svc,
            Role::Prefill,
            "what-if-p",
            Some("what-if"),
        ))
        .map_err(|e| bad(e.to_string()))?;
        let d = Self::compile(Self::pod_json(
            svc,
            Role::Decode,
            "what-if-d",
            Some("what-if"),
        ))
        .map_err(|e| bad(e.to_string()))?;
        let spec = PodGroupSpec::from_annotations(&p.annotations)
            .ok_or_else(|| bad("no group annotations".into()))?
            .map_err(|e| bad(e.to_string()))?;
        Ok(WhatIfGroup {
            spec,
            members: vec![
                (Arc::new(p), svc.prefill_per_group),
                (Arc::new(d), svc.decode_per_group),
            ],
            displace_below: None,
        })
    }
}

impl GroupPlacer for EngineCluster {
    fn where_would_one_go(&mut self, svc: &ServiceSpec) -> Result<String, PlaceError> {
        self.asked_at = Some(Instant::now());
        let q = Self::group_template(svc)?;
        self.stores
            .pod_groups
            .what_if(self.scheduler.snapshot(), &q)
            .map(|a| a.domain)
            .map_err(|reason| PlaceError::NoRoom {
                service: svc.name.clone(),
                reason,
            })
    }

    fn add_group(&mut self, svc: &ServiceSpec) -> Result<GroupInfo, PlaceError> {
        let t0 = self.asked_at.take().unwrap_or_else(Instant::now);
        self.seq += 1;
        let id = format!("{}-g{}", svc.name, self.seq);
        let mut uids = Vec::new();
        let err = |e: EngineError| PlaceError::NotBound {
            group: id.clone(),
            reason: e.to_string(),
        };
        for _ in 0..svc.prefill_per_group {
            uids.push(self.create(svc, Role::Prefill, Some(&id)).map_err(err)?);
        }
        for _ in 0..svc.decode_per_group {
            uids.push(self.create(svc, Role::Decode, Some(&id)).map_err(err)?);
        }
        self.groups
            .entry(svc.name.clone())
            .or_default()
            .push((id.clone(), uids.clone()));
        self.settle();
        let doms: Vec<String> = uids
            .iter()
            .filter_map(|u| self.domain_of(u).map(str::to_owned))
            .collect();
        if doms.len() < uids.len() {
            let reason = format!("{} of {} members bound", doms.len(), uids.len());
            self.remove_group(svc, &id);
            return Err(PlaceError::NotBound { group: id, reason });
        }
        self.group_times.push(t0.elapsed());
        Ok(GroupInfo {
            id,
            domain: doms[0].clone(),
            accelerators: svc.group_accelerators(),
            prefill: svc.prefill_per_group,
            decode: svc.decode_per_group,
        })
    }

    fn groups(&self, svc: &ServiceSpec) -> Vec<GroupInfo> {
        self.groups
            .get(&svc.name)
            .map(|v| {
                v.iter()
                    .map(|(id, uids)| {
                        let members = || uids.iter().filter_map(|u| self.pods.get(u));
                        let prefill = members().filter(|r| r.role == Role::Prefill).count() as u32;
                        GroupInfo {
                            id: id.clone(),
                            domain: uids
                                .first()
                                .and_then(|u| self.domain_of(u))
                                .unwrap_or("")
                                .to_owned(),
                            accelerators: members().map(|r| r.accelerators).sum(),
                            prefill,
                            decode: uids.len() as u32 - prefill,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn domain_used(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (u, r) in &self.pods {
            if let Some(d) = self.domain_of(u) {
                *m.entry(d.to_owned()).or_default() += u64::from(r.accelerators);
            }
        }
        m
    }

    fn remove_group(&mut self, svc: &ServiceSpec, id: &str) {
        let Some(list) = self.groups.get_mut(&svc.name) else {
            return;
        };
        let Some(i) = list.iter().position(|(g, _)| g == id) else {
            return;
        };
        let (_, uids) = list.remove(i);
        for u in uids {
            self.delete(&u);
        }
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::GroupPolicy;
    use crate::scaler::GroupScaler;

    /// Through the real engine: groups are added only while the what-if
    /// planner finds room for a whole one, every added group is bound whole
    /// inside one super-node, the refusal names the reason, and scale-down
    /// empties a super-node.
    #[test]
    fn engine_placer_adds_whole_groups_in_one_supernode_and_refuses_the_rest() {
        let shape = ClusterShape {
            supernodes: 2,
            servers_per_supernode: 4,
            accelerators_per_server: 8,
        };
        let mut e = EngineCluster::new(shape).unwrap();
        let svc = crate::policy::tests_support::svc(); // 1P + 2D of 8 GPUs: 3 servers
        let mut s = GroupScaler::new(svc.clone(), GroupPolicy::default());
        // 8 servers, 4 per super-node: one group per super-node fits whole
        // (a second would need 3 of the 1 server left).
        let step = s.reconcile(3, &mut e);
        assert_eq!(step.added.len(), 2, "{step:?}");
        assert_eq!(step.refused, 1);
        assert!(
            step.refusal.as_deref().unwrap().contains("no room"),
            "{step:?}"
        );
        let doms: std::collections::BTreeSet<_> =
            step.added.iter().map(|g| g.domain.clone()).collect();
        assert_eq!(doms.len(), 2);
        for g in &step.added {
            let (bound, total, d) = e.group_state(&svc, &g.id).unwrap();
            assert_eq!((bound, total, d.len()), (3, 3, 1));
        }
        assert_eq!(e.accelerators_bound(), 48);
        assert_eq!(e.group_times.len(), 2);
        // Plain pods fill sn0's last server; scaling down to one group then
        // removes the group in sn1 (emptying it), not the one beside them.
        e.scale_role(&svc, Role::Decode, 1).unwrap();
        let plain_dom = e
            .role_bound(&svc, Role::Decode)
            .first()
            .and_then(|u| e.domain_of(u))
            .unwrap()
            .to_owned();
        let step = s.reconcile(1, &mut e);
        assert_eq!(step.removed.len(), 1);
        let left = e.groups(&svc);
        assert_eq!(left.len(), 1);
        assert_eq!(
            left[0].domain, plain_dom,
            "the emptied super-node is the other one"
        );
    }

    /// Adaptive shapes through the real engine: groups of other shapes
    /// than the service's are asked for, placed whole in one super-node,
    /// and listed with the shapes they were created with.
    #[test]
    fn engine_places_groups_of_adaptive_shapes_whole() {
        let shape = ClusterShape {
            supernodes: 2,
            servers_per_supernode: 4,
            accelerators_per_server: 8,
        };
        let mut e = EngineCluster::new(shape).unwrap();
        let svc = crate::policy::tests_support::svc();
        let mut s = GroupScaler::new(svc.clone(), GroupPolicy::default());
        // 3 prefill, 1 decode wanted: one 3:1 group, not two 1:2 groups.
        let step = s.reconcile_roles(3, 1, 4, 0, &mut e);
        assert_eq!(step.added.len(), 1, "{step:?}");
        let gs = e.groups(&svc);
        assert_eq!(
            (gs[0].prefill, gs[0].decode, gs[0].accelerators),
            (3, 1, 32)
        );
        let (bound, total, doms) = e.group_state(&svc, &gs[0].id).unwrap();
        assert_eq!((bound, total, doms.len()), (4, 4, 1));
        // 4 more decode: the other super-node takes a 1:3 group (4
        // servers), then no room is left for a whole group of any shape.
        let step = s.reconcile_roles(3, 5, 4, 0, &mut e);
        assert_eq!(step.added.len(), 1, "{step:?}");
        assert_eq!((step.added[0].prefill, step.added[0].decode), (1, 3));
        let step = s.reconcile_roles(3, 9, 4, 0, &mut e);
        assert!(step.added.is_empty() && step.refused == 1, "{step:?}");
        assert_eq!(e.accelerators_bound(), 64);
    }
}
