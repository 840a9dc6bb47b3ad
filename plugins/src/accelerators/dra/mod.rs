//! DynamicResources: Dynamic Resource Allocation (`resource.k8s.io/v1`,
//! Kubernetes 1.34) through the plugin API.
//!
//! A pod's `spec.resourceClaims` name ResourceClaims, or templates from
//! which the resourceclaim controller makes one claim per pod. PreFilter
//! resolves them through the shared [`DraStore`], compiles each request's
//! DeviceClass and CEL selectors once (results cached per device and
//! selector set until slices or classes change) and snapshots what is in
//! use. Filter allocates the pod's unallocated claims on the node
//! ([`alloc`]): `count` and `All` modes, `firstAvailable` alternatives,
//! `matchAttribute`/`distinctAttribute` constraints, admin access, device
//! taints and tolerations, and consumable capacity where a device allows
//! multiple allocations. A claim already allocated is honoured: the node
//! must match its allocation's node selector, nothing is reallocated.
//! Reserve records the allocation as in flight (so the next pod does not
//! take the same devices), and PreBind writes `status.allocation` and
//! `status.reservedFor` through the cluster port before the pod is bound,
//! then records the written claim in the store. A pod sharing a claim whose
//! allocation is still in flight follows it to its node, and its PreBind
//! waits for that write before adding itself to `reservedFor` (kube-scheduler
//! instead rejects such a pod until the write lands; following it makes the
//! outcome independent of how fast the write is, which keeps simulations
//! deterministic). If the allocating pod gives up, the follower's Reserve or
//! PreBind fails and it is retried.
//!
//! ## Undo
//!
//! Unreserve drops the pod's in-flight allocations and, when a later PreBind
//! or the Bind failed after this plugin's PreBind wrote claims, takes the
//! pod back out of each written claim: out of `reservedFor`, and the
//! allocation too when this pod's cycle made it and no other consumer was
//! added since. The store is corrected at once (the next cycle sees the
//! devices free); the API write runs on the engine's runtime, and a later
//! PreBind of the same claim waits for it, so writes to one claim keep
//! their order. The undo write is unguarded (no `resourceVersion`): the
//! scheduler does not learn the version its own PreBind write produced, and
//! the claim is reserved for this pod until then.
//!
//! Bad input — an unknown DeviceClass, a selector that does not compile, a
//! claim name in another namespace, a missing claim — is
//! UnschedulableAndUnresolvable with a message naming the claim, the
//! request and the selector; the pod is retried when a DRA object changes.
//!
//! ## Cost
//!
//! A device's answer to a class's and a request's selectors changes only
//! with the device or the selectors: each selector is compiled once and the
//! devices matching a (class, selectors) set are computed once per device
//! index (rebuilt when slices or classes change). What is in use is kept
//! current from the claims written and the reservations made or dropped
//! since the last look ([`usage`]), not summed again each cycle. When every
//! claim of a pod is still to allocate, Filter's answer on a node depends
//! only on the claims' plans, the node's devices and their use: the plugin
//! then gives the engine a key for the cycle
//! ([`FilterPlugin::node_local_verdict_key`]: the plans, the index, and the
//! use of devices shared by several nodes) and reports the nodes whose
//! devices' use changed ([`NodeObserver::take_stale_nodes`]), so pods from
//! one template share the engine's cached verdicts and its incremental fast
//! path, and a cycle allocates on the few nodes that changed. A claim
//! allocated already or being allocated for another pod ties the pod to one
//! node: such a cycle filters every node, as before.
//!
//! Approximations: a CEL runtime error does not select the device (and is
//! reported if no device is left) instead of aborting the allocation;
//! per-node allocation in Filter allocates small vectors.

pub mod alloc;
pub mod cel;
pub mod cost;
pub mod index;
pub mod store;
#[cfg(test)]
mod tests;
pub mod usage;

use crate::common::device_domains::{DeviceDomains, DriverCount};
use alloc::{Alt, Chosen, ClaimPlan, Constraint, InUse, Mode, Slot, allocate, node_devices};
use index::{Bits, Index};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::resource::v1 as resv1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
pub use store::DraStore;
use strata_scheduler::labels::NodeSelector;
use strata_scheduler::sdk::{
    ActionType, ClusterEventKind, CycleState, EventResource, FilterPlugin, Handle, NodeId,
    NodeInfo, NodeObserver, NodeRef, Plugin, PluginArgsError, PodInfo, PreBindPlugin,
    PreFilterPlugin, PreFilterResult, Registry, ReservePlugin, Snapshot, Status, Sym,
};

/// The plugin's configuration name (kube-scheduler's).
pub const NAME: &str = "DynamicResources";

/// The most consumers a claim may be reserved for (Kubernetes' limit).
pub const MAX_RESERVED_FOR: usize = 256;

/// A pod's claim, resolved.
#[derive(Clone)]
enum Work {
    /// Allocated already: honoured.
    Allocated {
        claim: Arc<resv1::ResourceClaim>,
        node_selector: Option<Arc<NodeSelector>>,
    },
    /// To allocate.
    ToAllocate {
        claim: Arc<resv1::ResourceClaim>,
        plan: Arc<ClaimPlan>,
    },
    /// Being allocated on `node` for another pod whose PreBind has not
    /// written it yet: shared on that node once the write lands.
    Pending {
        claim: Arc<resv1::ResourceClaim>,
        node: Arc<str>,
        done: tokio::sync::watch::Receiver<bool>,
    },
}

impl Work {
    fn claim(&self) -> &Arc<resv1::ResourceClaim> {
        match self {
            Work::Allocated { claim, .. }
            | Work::ToAllocate { claim, .. }
            | Work::Pending { claim, .. } => claim,
        }
    }
}

#[derive(Clone)]
struct DraCycle {
    works: Vec<Work>,
    index: Arc<Index>,
    used: Arc<InUse>,
    /// Claim index in `works` → devices, from Reserve.
    reserved: Vec<(usize, Vec<Chosen>)>,
    node: Option<String>,
    /// Claims PreBind wrote, for Unreserve (PreBind only reads the state).
    written: Arc<Mutex<Vec<Written>>>,
    /// The key under which Filter's answers are node-local, when they are
    /// ([`FilterPlugin::node_local_verdict_key`]).
    key: Option<u64>,
}

/// A claim status PreBind wrote for the cycle's pod.
#[derive(Clone, Debug)]
struct Written {
    namespace: String,
    name: String,
    /// Whether this cycle allocated the claim (rather than honouring an
    /// allocation made before).
    allocated: bool,
}

/// Undo writes not yet acknowledged, by claim uid: (generation, done).
type PendingUndo = FxHashMap<String, (u64, tokio::sync::watch::Receiver<bool>)>;

/// The in-flight reservations by claim uid.
#[derive(Default)]
struct InFlights {
    /// Bumped on every change.
    version: u64,
    map: FxHashMap<String, InFlight>,
    /// Claims whose reservation changed since [`usage::Usage`] last looked.
    changed: Vec<String>,
}

impl InFlights {
    fn insert(&mut self, uid: String, f: InFlight) {
        self.changed.push(uid.clone());
        self.map.insert(uid, f);
        self.version += 1;
    }

    fn remove(&mut self, uid: &str) -> Option<InFlight> {
        let f = self.map.remove(uid)?;
        self.changed.push(uid.to_owned());
        self.version += 1;
        Some(f)
    }
}

struct InFlight {
    pod: Arc<str>,
    devices: Vec<Chosen>,
    /// The node the devices are on.
    node: Arc<str>,
    /// Set to `true` once the allocation is written or dropped; pods
    /// sharing the claim wait on it in PreBind.
    done: tokio::sync::watch::Sender<bool>,
}

struct Caches {
    index: Arc<Index>,
    env: cel::Env,
    sets: HashMap<String, Result<Arc<Bits>, String>>,
    usage: usage::Usage,
    /// Whether a selector's answer for a device is reused for its twins
    /// (off only in tests, as the reference).
    share_twins: bool,
}

/// The plugin.
pub struct DynamicResources {
    store: Arc<DraStore>,
    handle: Handle,
    caches: Mutex<Caches>,
    inflight: Mutex<InFlights>,
    pending_undo: Arc<Mutex<(u64, PendingUndo)>>,
    /// Free devices per topology domain (shared with Devices), fed with the
    /// node-local devices of ResourceSlices.
    domains: Option<Arc<DeviceDomains>>,
    /// What the domains were last fed from.
    synced: Mutex<Synced>,
    /// The snapshot's node ids by name (from [`NodeObserver::node_changed`]),
    /// to report nodes whose answers moved.
    node_ids: Mutex<FxHashMap<Sym, NodeId>>,
}

/// What [`DeviceDomains`] was last fed from: the index and the (store,
/// in-flight) versions the use was computed for.
#[derive(Default)]
struct Synced {
    index: Option<Arc<Index>>,
    versions: (u64, u64),
}

fn claim_key(c: &resv1::ResourceClaim) -> String {
    format!(
        "{}/{}",
        c.metadata.namespace.as_deref().unwrap_or("default"),
        c.metadata.name.as_deref().unwrap_or("")
    )
}

use usage::claim_uid;

fn milli_text(m: i128) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

impl DynamicResources {
    /// The plugin over `store`.
    pub fn new(store: Arc<DraStore>, handle: Handle) -> DynamicResources {
        DynamicResources {
            store,
            handle,
            caches: Mutex::new(Caches {
                index: Arc::new(Index::default()),
                env: cel::Env::new(),
                sets: HashMap::new(),
                usage: usage::Usage::default(),
                share_twins: true,
            }),
            inflight: Mutex::new(InFlights::default()),
            pending_undo: Arc::new(Mutex::new((0, FxHashMap::default()))),
            domains: None,
            synced: Mutex::new(Synced::default()),
            node_ids: Mutex::new(FxHashMap::default()),
        }
    }

    /// As [`DynamicResources::new`], counting the node-local devices of
    /// ResourceSlices in `domains` (per driver, free and in use).
    pub fn with_domains(
        store: Arc<DraStore>,
        handle: Handle,
        domains: Arc<DeviceDomains>,
    ) -> DynamicResources {
        DynamicResources {
            domains: Some(domains),
            ..DynamicResources::new(store, handle)
        }
    }

    /// Rebuilds the device index when the slices or classes changed.
    fn refresh_index(&self, c: &mut Caches) {
        if c.index.version != self.store.inventory_version()
            || (c.index.devices.is_empty() && !self.store.slices().is_empty())
        {
            c.index = Arc::new(Index::build(&self.store));
            c.sets.clear();
        }
    }

    /// Feeds the domain aggregates with what changed since the last call:
    /// every node-local device's node when the index changed, otherwise
    /// only the nodes of devices whose use changed. Cheap when nothing did.
    fn sync_domains(&self, snap: &Snapshot) {
        let Some(domains) = &self.domains else {
            return;
        };
        // No slice or class ever seen: no device to count. This runs on
        // every node change, DRA or not, so it costs one read here.
        if self.store.inventory_version() == 0 {
            return;
        }
        let versions = (self.store.version(), self.inflight.lock().version);
        let mut sy = self.synced.lock();
        if sy.versions == versions && sy.index.is_some() {
            return;
        }
        let (index, used, changes) = {
            let mut c = self.caches.lock();
            self.refresh_index(&mut c);
            let used = self.in_use(&mut c);
            let changes = std::mem::take(&mut c.usage.for_domains);
            (c.index.clone(), used, changes)
        };
        let same_index = sy.index.as_ref().is_some_and(|i| Arc::ptr_eq(i, &index));
        let mut nodes: Vec<&str> = Vec::new();
        if same_index && !changes.all {
            for d in changes.devices {
                if let Some(dev) = index.devices.get(d as usize)
                    && let index::Scope::Node(n) = &dev.scope
                    && !nodes.contains(&n.as_str())
                {
                    nodes.push(n);
                }
            }
        } else {
            nodes.extend(index.by_node.keys().map(String::as_str));
            // Nodes that had devices in the previous index and have none now.
            if let Some(prev) = &sy.index {
                for n in prev.by_node.keys() {
                    if !index.by_node.contains_key(n)
                        && let Some(node) = Sym::lookup(n)
                            .and_then(|s| snap.node_id(s))
                            .map(|id| snap.node(id))
                    {
                        domains.set_dra(node, &[]);
                    }
                }
            }
        }
        for n in nodes {
            let Some(node) = Sym::lookup(n)
                .and_then(|s| snap.node_id(s))
                .map(|id| snap.node(id))
            else {
                continue;
            };
            let mut counts: Vec<DriverCount> = Vec::new();
            for &d in index.by_node.get(n).into_iter().flatten() {
                let dev = &index.devices[d as usize];
                let i = match counts.iter().position(|c| c.driver == dev.driver) {
                    Some(i) => i,
                    None => {
                        counts.push(DriverCount {
                            driver: dev.driver.clone(),
                            ..Default::default()
                        });
                        counts.len() - 1
                    }
                };
                counts[i].devices += 1;
                if used.get(d).is_some() {
                    counts[i].used += 1;
                }
            }
            domains.set_dra(node, &counts);
        }
        *sy = Synced {
            index: Some(index),
            versions,
        };
    }

    /// Takes `pod` back out of a claim PreBind wrote for it: the store at
    /// once, the API through the cluster port on the current runtime.
    fn undo_written(&self, pod: &PodInfo, w: &Written) {
        let Some(cur) = self.store.claim(&w.namespace, &w.name) else {
            return;
        };
        let Some(claim) = undone_claim(&cur, &pod.uid, w.allocated) else {
            return;
        };
        let key = claim_key(&claim);
        let uid = claim_uid(&claim);
        // Assumed with the version it was read at: the write below carries
        // it, so a claim changed meanwhile is re-read, never overwritten.
        self.store.assume_claim(claim.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                claim = %key,
                pod = %pod.key(),
                "no async runtime in Unreserve: taking the pod out of the ResourceClaim is not written to the API"
            );
            return;
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let generation = {
            let mut p = self.pending_undo.lock();
            p.0 += 1;
            let g = p.0;
            p.1.insert(uid.clone(), (g, rx));
            g
        };
        let cluster = self.handle.cluster.clone();
        let pending = self.pending_undo.clone();
        let store = self.store.clone();
        let pod_key = pod.key();
        let pod_uid = pod.uid.clone();
        let allocated = w.allocated;
        let (ns, name) = (w.namespace.clone(), w.name.clone());
        rt.spawn(async move {
            let mut claim = claim;
            for attempt in 1..=UNDO_ATTEMPTS {
                match cluster.update_resource_claim_status(&claim).await {
                    Ok(rv) => {
                        // The store holds the undone copy at the version
                        // read: move it to the written one, unless the
                        // informer has brought something newer already.
                        if let Some(rv) = rv
                            && store.claim(&ns, &name).is_some_and(|c| {
                                c.metadata.resource_version == claim.metadata.resource_version
                            })
                        {
                            claim.metadata.resource_version = Some(rv);
                            store.assume_claim(claim);
                        }
                        break;
                    }
                    Err(e) if attempt < UNDO_ATTEMPTS && e.0.contains("409 Conflict") => {
                        // Changed since read: wait for the informer's newer
                        // copy and undo on that one. While the store still
                        // holds the copy assumed above (same version), the
                        // newer one has not arrived: send the undo again.
                        tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                        let Some(newer) = store.claim(&ns, &name) else {
                            break;
                        };
                        if newer.metadata.resource_version != claim.metadata.resource_version {
                            match undone_claim(&newer, &pod_uid, allocated) {
                                Some(c) => claim = c,
                                None => break,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            claim = %key,
                            pod = %pod_key,
                            error = %e,
                            "could not take an unbound pod out of its ResourceClaim"
                        );
                        break;
                    }
                }
            }
            let _ = tx.send(true);
            let mut p = pending.lock();
            if p.1.get(&uid).is_some_and(|(g, _)| *g == generation) {
                p.1.remove(&uid);
            }
        });
    }

    /// Waits until an undo write of claim `uid` (from an earlier failed
    /// binding) has reached the cluster.
    async fn await_undo(&self, uid: &str) {
        let rx = self
            .pending_undo
            .lock()
            .1
            .get(uid)
            .map(|(_, rx)| rx.clone());
        if let Some(mut rx) = rx {
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Whether an undo write is still on its way (for tests and shutdown).
    pub fn undo_pending(&self) -> bool {
        !self.pending_undo.lock().1.is_empty()
    }

    /// The store this plugin reads.
    pub fn store(&self) -> &Arc<DraStore> {
        &self.store
    }

    /// Devices matching a DeviceClass and a request's selectors, or why none
    /// do (naming the selector that left none).
    fn candidates(
        &self,
        c: &mut Caches,
        class: &resv1::DeviceClass,
        selectors: &[resv1::DeviceSelector],
        what: &str,
        budget: &mut cost::Budget,
    ) -> Result<Arc<Bits>, String> {
        let class_name = class.metadata.name.clone().unwrap_or_default();
        let mut exprs: Vec<(String, String)> = Vec::new();
        for s in class.spec.selectors.iter().flatten() {
            if let Some(cel) = &s.cel {
                exprs.push((
                    cel.expression.clone(),
                    format!("of DeviceClass {class_name}"),
                ));
            }
        }
        for s in selectors {
            if let Some(cel) = &s.cel {
                exprs.push((cel.expression.clone(), "of the request".into()));
            }
        }
        let key = format!(
            "{class_name}\u{0}{}",
            exprs
                .iter()
                .map(|(e, _)| e.as_str())
                .collect::<Vec<_>>()
                .join("\u{0}")
        );
        if let Some(r) = c.sets.get(&key) {
            return r.clone().map_err(|e| format!("{what}: {e}"));
        }
        let mut compiled = Vec::new();
        for (e, whose) in &exprs {
            match c.env.compile(e) {
                Ok(s) => compiled.push((s, whose.clone())),
                Err(msg) => {
                    let r: Result<Arc<Bits>, String> = Err(format!("{msg} ({whose})"));
                    c.sets.insert(key, r.clone());
                    return r.map_err(|e| format!("{what}: {e}"));
                }
            }
        }
        let n = c.index.devices.len();
        let mut bits = Bits::with_len(n);
        let mut alive = vec![true; n];
        let mut first_error: Option<String> = None;
        let mut emptied_by: Option<(String, String)> = None;
        let started_full = budget.is_full();
        let mut over: Option<(String, bool)> = None;
        'sels: for (sel, whose) in &compiled {
            let mut left = 0;
            // Per twin (devices of equal CEL input): the answer and its
            // cost, reused while the budget could pay for evaluating it
            // again, so charges and answers are those of evaluating every
            // device.
            let mut memo: Vec<Option<(Result<bool, String>, u64)>> =
                vec![None; c.index.twins as usize];
            for (i, d) in c.index.devices.iter().enumerate() {
                if !alive[i] {
                    continue;
                }
                let t = d.twin as usize;
                let reuse = if c.share_twins {
                    memo.get(t).cloned().flatten()
                } else {
                    None
                };
                let outcome = match reuse {
                    Some((r, used)) if used <= cost::MAX_EXPRESSION_COST.min(budget.left()) => {
                        budget.charge(used);
                        r.map_err(cel::MatchError::Eval)
                    }
                    _ => {
                        let before = budget.left();
                        let r = c.env.matches(sel, &d.value, budget);
                        let used = before - budget.left();
                        match &r {
                            Ok(b) => memo[t] = Some((Ok(*b), used)),
                            Err(cel::MatchError::Eval(e)) => {
                                memo[t] = Some((Err(e.clone()), used));
                            }
                            Err(_) => {}
                        }
                        r
                    }
                };
                match outcome {
                    Ok(true) => left += 1,
                    Ok(false) => alive[i] = false,
                    Err(cel::MatchError::Eval(e)) => {
                        alive[i] = false;
                        first_error.get_or_insert(format!(
                            "{e} on device {}/{}/{}",
                            d.driver, d.pool, d.name
                        ));
                    }
                    Err(e @ cel::MatchError::Cost { per_cycle, .. }) => {
                        over = Some((
                            format!(
                                "selector `{}` {whose} {e} on device {}/{}/{} (device {} of {n}); the pod is not scheduled",
                                cel::shorten(&sel.source),
                                d.driver,
                                d.pool,
                                d.name,
                                i + 1
                            ),
                            per_cycle,
                        ));
                        break 'sels;
                    }
                }
            }
            if left == 0 && emptied_by.is_none() && n > 0 {
                emptied_by = Some((sel.source.clone(), whose.clone()));
            }
        }
        if let Some((msg, per_cycle)) = over {
            // Over the per-evaluation limit, or over the cycle's budget
            // from a full one, is this selector set's own doing and stays
            // so until the devices change; over what other claims of the
            // pod left is not cached.
            let r: Result<Arc<Bits>, String> = Err(msg);
            if !per_cycle || started_full {
                c.sets.insert(key, r.clone());
            }
            return r.map_err(|e| format!("{what}: {e}"));
        }
        for (i, a) in alive.iter().enumerate() {
            if *a {
                bits.set(i as u32);
            }
        }
        let r = if n == 0 {
            Err("no ResourceSlice publishes any device".to_owned())
        } else if let Some((expr, whose)) = emptied_by {
            let mut m = format!("no device matches selector `{expr}` {whose}");
            if let Some(e) = first_error {
                m.push_str(&format!(" (first error: {e})"));
            }
            Err(m)
        } else {
            Ok(Arc::new(bits))
        };
        c.sets.insert(key, r.clone());
        r.map_err(|e| format!("{what}: {e}"))
    }

    fn plan_for(
        &self,
        c: &mut Caches,
        claim: &resv1::ResourceClaim,
        budget: &mut cost::Budget,
    ) -> Result<ClaimPlan, String> {
        let ck = claim_key(claim);
        let devices = claim.spec.devices.as_ref();
        let mut slots = Vec::new();
        for r in devices
            .and_then(|d| d.requests.as_ref())
            .into_iter()
            .flatten()
        {
            let what = format!("ResourceClaim {ck}, request {:?}", r.name);
            let mut alts = Vec::new();
            type One<'a> = (
                String,
                &'a str,
                Option<&'a Vec<resv1::DeviceSelector>>,
                Option<&'a str>,
                Option<i64>,
                bool,
                Option<&'a resv1::CapacityRequirements>,
                Option<&'a Vec<resv1::DeviceToleration>>,
            );
            let mut ones: Vec<One<'_>> = Vec::new();
            if let Some(e) = &r.exactly {
                ones.push((
                    r.name.clone(),
                    e.device_class_name.as_str(),
                    e.selectors.as_ref(),
                    e.allocation_mode.as_deref(),
                    e.count,
                    e.admin_access == Some(true),
                    e.capacity.as_ref(),
                    e.tolerations.as_ref(),
                ));
            }
            for s in r.first_available.iter().flatten() {
                ones.push((
                    format!("{}/{}", r.name, s.name),
                    s.device_class_name.as_str(),
                    s.selectors.as_ref(),
                    s.allocation_mode.as_deref(),
                    s.count,
                    false,
                    s.capacity.as_ref(),
                    s.tolerations.as_ref(),
                ));
            }
            if ones.is_empty() {
                return Err(format!("{what}: neither exactly nor firstAvailable is set"));
            }
            let mut last_err = None;
            for (name, class, sels, mode, count, admin, cap, tols) in ones {
                let what = format!("ResourceClaim {ck}, request {name:?}");
                let Some(cl) = self.store.class(class) else {
                    return Err(format!("{what}: DeviceClass {class:?} does not exist"));
                };
                let mode = match mode {
                    None | Some("ExactCount") => {
                        let n = count.unwrap_or(1);
                        if !(1..=128).contains(&n) {
                            return Err(format!("{what}: count {n} is outside 1..=128"));
                        }
                        Mode::Count(n as u32)
                    }
                    Some("All") => Mode::All,
                    Some(o) => {
                        return Err(format!(
                            "{what}: allocationMode {o:?} is neither ExactCount nor All"
                        ));
                    }
                };
                let empty = Vec::new();
                match self.candidates(c, &cl, sels.unwrap_or(&empty), &what, budget) {
                    Ok(cands) => alts.push(Alt {
                        result_name: name,
                        cands,
                        mode,
                        admin,
                        capacity: cap
                            .and_then(|c| c.requests.as_ref())
                            .into_iter()
                            .flatten()
                            .filter_map(|(k, q)| Some((k.clone(), cel::quantity_milli(&q.0)?)))
                            .collect(),
                        tolerations: tols.cloned().unwrap_or_default(),
                    }),
                    // A compile error or a selector over its cost limit is
                    // the claim's error; an alternative that matches
                    // nothing just is not available.
                    Err(e) if e.contains("does not compile") || e.contains(cost::LIMIT_MARK) => {
                        return Err(e);
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            if alts.is_empty() {
                return Err(last_err.unwrap_or_else(|| format!("{what}: no alternative")));
            }
            slots.push(Slot {
                name: r.name.clone(),
                alts,
            });
        }
        let constraints = devices
            .and_then(|d| d.constraints.as_ref())
            .into_iter()
            .flatten()
            .map(|k| Constraint {
                requests: k.requests.clone().unwrap_or_default(),
                match_attr: k.match_attribute.clone(),
                distinct_attr: k.distinct_attribute.clone(),
            })
            .collect();
        Ok(ClaimPlan { slots, constraints })
    }

    /// What is in use: allocated claims in the store and in-flight
    /// reservations, brought up to date with what changed since the last
    /// call ([`usage::Usage`]).
    fn in_use(&self, c: &mut Caches) -> Arc<InUse> {
        let mut fl = self.inflight.lock();
        let index = c.index.clone();
        let changed = std::mem::take(&mut fl.changed);
        let map = &fl.map;
        c.usage.sync(
            &index,
            &self.store,
            || map.iter().map(|(u, f)| (u.as_str(), f.devices.as_slice())),
            changed,
            |uid| map.get(uid).map(|f| f.devices.as_slice()),
        )
    }

    fn allocate_on(&self, cd: &DraCycle, node: &NodeInfo, out: &mut Vec<Vec<Chosen>>) -> Status {
        for w in &cd.works {
            if let Work::Pending { node: on, .. } = w
                && **on != *node.name.as_str()
            {
                return Status::unschedulable(
                    "node(s) did not match the allocation in progress of a ResourceClaim the pod uses",
                );
            }
            if let Work::Allocated {
                node_selector: Some(sel),
                claim,
            } = w
                && !sel.matches(&node.labels, node.name)
            {
                let _ = claim;
                return Status::unresolvable(
                    "node(s) did not match the allocation of a ResourceClaim the pod uses",
                );
            }
        }
        let plans: Vec<&ClaimPlan> = cd
            .works
            .iter()
            .filter_map(|w| match w {
                Work::ToAllocate { plan, .. } => Some(plan.as_ref()),
                _ => None,
            })
            .collect();
        if plans.is_empty() {
            return Status::success();
        }
        let devs = node_devices(&cd.index, node.name.as_str(), &node.labels, node.name);
        match allocate(&cd.index, &devs, &plans, &cd.used, out) {
            Ok(()) => Status::success(),
            Err(r) => Status::unschedulable(r),
        }
    }

    fn result_for(
        &self,
        index: &Index,
        claim: &resv1::ResourceClaim,
        chosen: &[Chosen],
        node: &str,
    ) -> resv1::AllocationResult {
        let uid = claim_uid(claim);
        let mut node_local = false;
        let results = chosen
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let d = &index.devices[c.device as usize];
                node_local |= matches!(d.scope, index::Scope::Node(_));
                resv1::DeviceRequestAllocationResult {
                    request: c.request.clone(),
                    driver: d.driver.clone(),
                    pool: d.pool.clone(),
                    device: d.name.clone(),
                    admin_access: c.admin.then_some(true),
                    consumed_capacity: (!c.consumed.is_empty()).then(|| {
                        c.consumed
                            .iter()
                            .map(|(k, v)| {
                                let local = k
                                    .strip_prefix(&format!("{}/", d.driver))
                                    .unwrap_or(k)
                                    .to_owned();
                                (local, Quantity(milli_text(*v)))
                            })
                            .collect::<BTreeMap<_, _>>()
                    }),
                    share_id: d.allow_multiple.then(|| format!("{uid}-{i}")),
                    tolerations: (!c.tolerations.is_empty()).then(|| c.tolerations.clone()),
                    ..Default::default()
                }
            })
            .collect::<Vec<_>>();
        // Configuration: the classes' then the claim's, for the requests
        // they apply to.
        let mut config = Vec::new();
        let requests_of_class = |class: &str| -> Vec<String> {
            claim
                .spec
                .devices
                .iter()
                .flat_map(|d| d.requests.iter().flatten())
                .filter(|r| {
                    r.exactly
                        .as_ref()
                        .is_some_and(|e| e.device_class_name == class)
                })
                .map(|r| r.name.clone())
                .collect()
        };
        let mut classes: Vec<String> = claim
            .spec
            .devices
            .iter()
            .flat_map(|d| d.requests.iter().flatten())
            .filter_map(|r| r.exactly.as_ref().map(|e| e.device_class_name.clone()))
            .collect();
        classes.sort();
        classes.dedup();
        for cl in classes {
            if let Some(dc) = self.store.class(&cl) {
                for c in dc.spec.config.iter().flatten() {
                    config.push(resv1::DeviceAllocationConfiguration {
                        opaque: c.opaque.clone(),
                        requests: Some(requests_of_class(&cl)),
                        source: "FromClass".into(),
                    });
                }
            }
        }
        for c in claim
            .spec
            .devices
            .iter()
            .flat_map(|d| d.config.iter().flatten())
        {
            config.push(resv1::DeviceAllocationConfiguration {
                opaque: c.opaque.clone(),
                requests: c.requests.clone(),
                source: "FromClaim".into(),
            });
        }
        resv1::AllocationResult {
            allocation_timestamp: None,
            devices: Some(resv1::DeviceAllocationResult {
                config: (!config.is_empty()).then_some(config),
                results: Some(results),
            }),
            node_selector: node_local.then(|| corev1::NodeSelector {
                node_selector_terms: vec![corev1::NodeSelectorTerm {
                    match_fields: Some(vec![corev1::NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec![node.to_owned()]),
                    }]),
                    match_expressions: None,
                }],
            }),
        }
    }
}

strata_scheduler::plugin!(DynamicResources: NAME => [PreFilter, Filter, Reserve, PreBind] {
    fn as_node_observer(&self) -> Option<&dyn NodeObserver> {
        Some(self)
    }
    fn events_to_register(&self) -> Vec<ClusterEventKind> {
        vec![
            ClusterEventKind::new(EventResource::Custom(store::KIND_CLAIM), ActionType::ALL),
            ClusterEventKind::new(EventResource::Custom(store::KIND_SLICE), ActionType::ALL),
            ClusterEventKind::new(EventResource::Custom(store::KIND_CLASS), ActionType::ALL),
            ClusterEventKind::new(EventResource::AssignedPod, ActionType::DELETE),
            ClusterEventKind::new(
                EventResource::Node,
                ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL),
            ),
        ]
    }
});

impl PreFilterPlugin for DynamicResources {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snap: &Snapshot,
    ) -> PreFilterResult {
        let refs = pod.spec.raw.resource_claims.as_deref().unwrap_or(&[]);
        if refs.is_empty() {
            return PreFilterResult::skip();
        }
        let ns = pod.namespace.as_str();
        let mut c = self.caches.lock();
        self.refresh_index(&mut c);
        let mut works = Vec::with_capacity(refs.len());
        // Every selector evaluation of this pod's cycle draws on it.
        let mut budget = cost::Budget::per_cycle();
        for (i, r) in refs.iter().enumerate() {
            let field = format!("spec.resourceClaims[{i}] ({:?})", r.name);
            let claim = match (&r.resource_claim_name, &r.resource_claim_template_name) {
                (Some(n), _) if n.contains('/') => {
                    return PreFilterResult::status(Status::unresolvable(format!(
                        "pod {}: {field} names ResourceClaim {n:?} in another namespace; a pod can only use claims of its own namespace {ns}",
                        pod.key()
                    )));
                }
                (Some(n), _) => match self.store.claim(ns, n) {
                    Some(c) => c,
                    None => {
                        return PreFilterResult::status(Status::unresolvable(format!(
                            "pod {}: {field}: ResourceClaim {ns}/{n} does not exist (yet)",
                            pod.key()
                        )));
                    }
                },
                (None, Some(t)) => match self.store.generated_claim(&pod.uid, &r.name) {
                    Some(c) => c,
                    None => {
                        return PreFilterResult::status(Status::unresolvable(format!(
                            "pod {}: {field}: waiting for the ResourceClaim made from template {ns}/{t}",
                            pod.key()
                        )));
                    }
                },
                (None, None) => {
                    return PreFilterResult::status(Status::unresolvable(format!(
                        "pod {}: {field} names neither resourceClaimName nor resourceClaimTemplateName",
                        pod.key()
                    )));
                }
            };
            let key = claim_key(&claim);
            if claim.metadata.namespace.as_deref().unwrap_or("default") != ns {
                return PreFilterResult::status(Status::unresolvable(format!(
                    "pod {}: ResourceClaim {key} is in another namespace than the pod ({ns})",
                    pod.key()
                )));
            }
            if claim.metadata.deletion_timestamp.is_some() {
                return PreFilterResult::status(Status::unresolvable(format!(
                    "ResourceClaim {key} is being deleted"
                )));
            }
            let status = claim.status.as_ref();
            let reserved = status.and_then(|s| s.reserved_for.as_ref());
            let mine = reserved.is_some_and(|rs| rs.iter().any(|x| x.uid == *pod.uid));
            if !mine && reserved.is_some_and(|rs| rs.len() >= MAX_RESERVED_FOR) {
                return PreFilterResult::status(Status::unresolvable(format!(
                    "ResourceClaim {key} is already reserved for {MAX_RESERVED_FOR} consumers"
                )));
            }
            if let Some(a) = status.and_then(|s| s.allocation.as_ref()) {
                let node_selector = match a
                    .node_selector
                    .as_ref()
                    .map(NodeSelector::compile)
                    .transpose()
                {
                    Ok(s) => s.map(Arc::new),
                    Err(e) => {
                        return PreFilterResult::status(Status::unresolvable(format!(
                            "ResourceClaim {key}: allocation.nodeSelector: {e}"
                        )));
                    }
                };
                works.push(Work::Allocated {
                    claim,
                    node_selector,
                });
                continue;
            }
            // Allocated in an earlier cycle for another pod, not written
            // yet: this pod shares that allocation on the same node, as it
            // would once the write lands, instead of waiting for it (so the
            // outcome does not depend on how fast the write is).
            if let Some(f) = self.inflight.lock().map.get(&claim_uid(&claim))
                && f.pod != pod.uid
            {
                works.push(Work::Pending {
                    node: f.node.clone(),
                    done: f.done.subscribe(),
                    claim,
                });
                continue;
            }
            match self.plan_for(&mut c, &claim, &mut budget) {
                Ok(plan) => works.push(Work::ToAllocate {
                    claim,
                    plan: Arc::new(plan),
                }),
                // Over the cycle's budget: tried again after the backoff
                // (what this cycle evaluated is cached by then).
                Err(msg) if msg.contains(cel::CYCLE_MARK) => {
                    return PreFilterResult::status(Status::unschedulable(msg));
                }
                Err(msg) => return PreFilterResult::status(Status::unresolvable(msg)),
            }
        }
        let used = self.in_use(&mut c);
        let key = works
            .iter()
            .all(|w| matches!(w, Work::ToAllocate { .. }))
            .then(|| {
                let mut h = rustc_hash::FxHasher::default();
                c.index.version.hash(&mut h);
                // Which index object: a rebuilt one numbers devices anew.
                (Arc::as_ptr(&c.index) as usize).hash(&mut h);
                c.usage.shared_epoch().hash(&mut h);
                for w in &works {
                    if let Work::ToAllocate { plan, .. } = w {
                        plan.signature(&mut h);
                    }
                }
                h.finish()
            });
        state.insert(DraCycle {
            works,
            index: c.index.clone(),
            used,
            reserved: Vec::new(),
            node: None,
            written: Arc::new(Mutex::new(Vec::new())),
            key,
        });
        PreFilterResult::ok()
    }
}

/// Keeps the domain aggregates current: a pod placed, bound or deleted may
/// come with claims allocated or released (the versions tell).
impl NodeObserver for DynamicResources {
    fn node_changed(&self, node: &NodeInfo, snap: &Snapshot) {
        {
            let mut ids = self.node_ids.lock();
            if node.present {
                ids.insert(node.name, node.id);
            } else {
                ids.remove(&node.name);
            }
        }
        self.sync_domains(snap);
    }

    /// The nodes whose devices' use changed since the last call: Filter's
    /// answers there moved although the nodes may not have (a claim
    /// allocated or released elsewhere than through a pod placed there).
    /// Devices usable on several nodes are covered by the cycle's key
    /// instead ([`FilterPlugin::node_local_verdict_key`]).
    fn take_stale_nodes(&self, out: &mut Vec<NodeId>) {
        if self.store.inventory_version() == 0 {
            return;
        }
        let (index, changes) = {
            let mut c = self.caches.lock();
            self.refresh_index(&mut c);
            self.in_use(&mut c);
            (c.index.clone(), std::mem::take(&mut c.usage.for_engine))
        };
        if !changes.all && changes.devices.is_empty() {
            return;
        }
        let ids = self.node_ids.lock();
        if changes.all {
            out.extend(ids.values().copied());
            return;
        }
        let mut names: Vec<&str> = Vec::new();
        for d in changes.devices {
            if let Some(dev) = index.devices.get(d as usize)
                && let index::Scope::Node(n) = &dev.scope
                && !names.contains(&n.as_str())
            {
                names.push(n);
            }
        }
        out.extend(
            names
                .into_iter()
                .filter_map(|n| Sym::lookup(n).and_then(|s| ids.get(&s)).copied()),
        );
    }
}

impl FilterPlugin for DynamicResources {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(cd) = state.get::<DraCycle>() else {
            return Status::success();
        };
        let mut out = Vec::new();
        self.allocate_on(cd, node, &mut out)
    }

    /// Node-local when every claim of the pod is still to allocate: the
    /// answer then depends only on the claims' plans, the node's devices
    /// and what is in use there, and the nodes whose use changes are
    /// reported ([`NodeObserver::take_stale_nodes`]). A claim allocated
    /// already, or being allocated for another pod, ties the pod to a node
    /// the plans do not show: not node-local.
    fn node_local_verdict_key(&self, state: &CycleState) -> Option<u64> {
        state.get::<DraCycle>().and_then(|cd| cd.key)
    }
}

impl ReservePlugin for DynamicResources {
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: NodeRef,
        snap: &Snapshot,
    ) -> Status {
        let Some(cd) = state.get::<DraCycle>().cloned() else {
            return Status::success();
        };
        // Allocate against the current in-flight set: another pod may have
        // reserved since PreFilter.
        let used = {
            let mut c = self.caches.lock();
            self.in_use(&mut c)
        };
        let cd2 = DraCycle { used, ..cd.clone() };
        let mut out = Vec::new();
        let s = self.allocate_on(&cd2, snap.node(node.id), &mut out);
        if !s.is_success() {
            return s;
        }
        // A shared allocation in progress must still be in progress or
        // written: if its pod gave it up, allocate again in a new cycle.
        for w in &cd.works {
            if let Work::Pending { claim, .. } = w {
                let uid = claim_uid(claim);
                let ns = claim.metadata.namespace.as_deref().unwrap_or("default");
                let name = claim.metadata.name.as_deref().unwrap_or("");
                let in_flight = self.inflight.lock().map.contains_key(&uid);
                let written = self
                    .store
                    .claim(ns, name)
                    .is_some_and(|c| c.status.as_ref().is_some_and(|s| s.allocation.is_some()));
                if !in_flight && !written {
                    return Status::unschedulable(format!(
                        "ResourceClaim {} was being allocated for another pod that gave it up",
                        claim_key(claim)
                    ));
                }
            }
        }
        let mut reserved = Vec::new();
        let mut it = out.into_iter();
        {
            let mut fl = self.inflight.lock();
            for (i, w) in cd.works.iter().enumerate() {
                if let Work::ToAllocate { claim, .. } = w {
                    let devices = it.next().unwrap_or_default();
                    fl.insert(
                        claim_uid(claim),
                        InFlight {
                            pod: pod.uid.clone(),
                            devices: devices.clone(),
                            node: Arc::from(node.name.as_str()),
                            done: tokio::sync::watch::Sender::new(false),
                        },
                    );
                    reserved.push((i, devices));
                }
            }
        }
        if let Some(st) = state.get_mut::<DraCycle>() {
            st.reserved = reserved;
            st.node = Some(node.name.as_str().to_owned());
        }
        self.sync_domains(snap);
        Status::success()
    }

    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, _node: NodeRef) {
        let mut fl = self.inflight.lock();
        let mine: Vec<String> = fl
            .map
            .iter()
            .filter(|(_, f)| f.pod == pod.uid)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in mine {
            if let Some(f) = fl.remove(&uid) {
                // Pods sharing the claim stop waiting (and find it unallocated).
                f.done.send_replace(true);
            }
        }
        drop(fl);
        let written = match state.get_mut::<DraCycle>() {
            Some(st) => {
                st.reserved.clear();
                std::mem::take(&mut *st.written.lock())
            }
            None => Vec::new(),
        };
        for w in &written {
            self.undo_written(pod, w);
        }
    }
}

/// Writes of an undo tried before giving up (each after a 409 re-reads).
const UNDO_ATTEMPTS: u32 = 5;

/// `cur` with pod `pod_uid` taken out of `reservedFor`, and deallocated when
/// this cycle `allocated` it and nobody else holds it; `None` when there is
/// nothing to undo. Keeps `cur`'s resourceVersion, so the write is refused
/// (409) if the claim changed since.
fn undone_claim(
    cur: &resv1::ResourceClaim,
    pod_uid: &str,
    allocated: bool,
) -> Option<resv1::ResourceClaim> {
    let mut claim = cur.clone();
    let status = claim.status.as_mut()?;
    let had = status
        .reserved_for
        .as_ref()
        .is_some_and(|r| r.iter().any(|x| x.uid == pod_uid));
    if let Some(r) = status.reserved_for.as_mut() {
        r.retain(|x| x.uid != pod_uid);
        if r.is_empty() {
            status.reserved_for = None;
        }
    }
    let deallocate = allocated && status.allocation.is_some() && status.reserved_for.is_none();
    if deallocate {
        status.allocation = None;
    }
    (had || deallocate).then_some(claim)
}

#[async_trait::async_trait]
impl PreBindPlugin for DynamicResources {
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: NodeRef) -> Status {
        let Some(cd) = state.get::<DraCycle>() else {
            return Status::success();
        };
        for (i, w) in cd.works.iter().enumerate() {
            let old = w.claim();
            let key = claim_key(old);
            let ns = old.metadata.namespace.as_deref().unwrap_or("default");
            let name = old.metadata.name.as_deref().unwrap_or("");
            // An undo of this claim from an earlier failed binding goes first.
            self.await_undo(&claim_uid(old)).await;
            // A shared allocation in progress: wait until it is written.
            if let Work::Pending { done, .. } = w {
                let mut done = done.clone();
                let _ = done.wait_for(|d| *d).await;
            }
            // Work on the newest copy.
            let latest = self.store.claim(ns, name).unwrap_or_else(|| old.clone());
            let mut claim = (*latest).clone();
            let status = claim.status.get_or_insert_with(Default::default);
            if matches!(w, Work::Pending { .. }) && status.allocation.is_none() {
                return Status::error(format!(
                    "ResourceClaim {key} was being allocated for another pod that gave it up; pod {} is retried",
                    pod.key()
                ));
            }
            if let Some((_, devices)) = cd.reserved.iter().find(|(j, _)| *j == i) {
                if status.allocation.is_some() {
                    return Status::error(format!(
                        "ResourceClaim {key} was allocated by someone else while pod {} was being scheduled",
                        pod.key()
                    ));
                }
                status.allocation =
                    Some(self.result_for(&cd.index, &latest, devices, node.name.as_str()));
            }
            let reserved = status.reserved_for.get_or_insert_with(Vec::new);
            if reserved.iter().any(|r| r.uid == *pod.uid)
                && matches!(w, Work::Allocated { .. } | Work::Pending { .. })
            {
                continue;
            }
            if !reserved.iter().any(|r| r.uid == *pod.uid) {
                reserved.push(resv1::ResourceClaimConsumerReference {
                    api_group: None,
                    resource: "pods".into(),
                    name: pod.name.to_string(),
                    uid: pod.uid.to_string(),
                });
            }
            match self
                .handle
                .cluster
                .update_resource_claim_status(&claim)
                .await
            {
                // Assumed at the version the write produced: the informer's
                // copy of it may already be here, and the next write (an
                // undo, another pod's reservation) must not carry the
                // version it was read at.
                Ok(Some(rv)) => claim.metadata.resource_version = Some(rv),
                Ok(None) => {}
                Err(e) => {
                    return Status::error(format!(
                        "writing the status of ResourceClaim {key}: {e}"
                    ));
                }
            }
            let uid = claim_uid(&claim);
            cd.written.lock().push(Written {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                allocated: cd.reserved.iter().any(|(j, _)| *j == i),
            });
            self.store.assume_claim(claim);
            let mut fl = self.inflight.lock();
            if fl.map.get(&uid).is_some_and(|f| f.pod == pod.uid)
                && let Some(f) = fl.remove(&uid)
            {
                f.done.send_replace(true);
            }
        }
        Status::success()
    }
}

/// Builds the plugin over an empty store (no DRA objects known: pods with
/// claims wait). Use [`register`] to give it the adapter's or simulator's
/// store.
pub fn factory(
    _args: Option<&serde_json::Value>,
    handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(DynamicResources::new(
        DraStore::new(),
        handle.clone(),
    )))
}

/// Registers the plugin over `store` (replacing the default registration),
/// as the Kubernetes adapter and the simulator do.
pub fn register(registry: &mut Registry, store: Arc<DraStore>) {
    registry.register(NAME, move |_args, handle| {
        Ok(Arc::new(DynamicResources::new(store.clone(), handle.clone())) as Arc<dyn Plugin>)
    });
}

/// As [`register`], also counting ResourceSlice devices in `domains` (the
/// per-domain device aggregates the Devices plugin keeps too).
pub fn register_with_domains(
    registry: &mut Registry,
    store: Arc<DraStore>,
    domains: Arc<DeviceDomains>,
) {
    registry.register(NAME, move |_args, handle| {
        Ok(Arc::new(DynamicResources::with_domains(
            store.clone(),
            handle.clone(),
            domains.clone(),
        )) as Arc<dyn Plugin>)
    });
}
