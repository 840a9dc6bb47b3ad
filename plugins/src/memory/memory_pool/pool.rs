//! The pool ledger: what each node lends and has lent, every borrow plan,
//! and the lendable memory of every pool domain, kept in a
//! [`strata_topology::Topology`] of its own whose slots are media (slot
//! [`Medium::slot`]: lendable bytes of that medium), so a domain's lendable
//! memory is its aggregate, updated along one node's path.
//!
//! Filter and Score run on several threads and may take no lock, so what
//! they read is published into a [`View`] of atomics (per node: lendable
//! bytes per medium, bytes lent, its pool and near domains; per domain:
//! lendable bytes per medium). Every write happens on the scheduling thread
//! (Reserve, Unreserve, node observer), never while a Filter runs, and
//! publishes the changed node and the domains on its path: O(depth).
//!
//! Invariants (checked by [`Ledger::check`], which the property tests run):
//! - a node's lent bytes never exceed what it may lend: its offer, less
//!   what its own pods requested (`lent + requested <= allocatable`), unless
//!   the node shrank or its pods grew after it lent, which is reported to
//!   the borrowers as an event;
//! - every loan of a plan is from a node in the borrower's pool domain,
//!   never from the borrower's own node;
//! - the bytes a node has lent equal the sum of the loans from it in the
//!   plans; releasing every plan returns every node to zero lent;
//! - the view equals the ledger and the topology's aggregates.

use super::model::{
    Distance, MEDIA, MEDIUM, Medium, MemoryPoolArgs, Offer, PLAN, PlanDoc, node_offer_with,
};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::Relaxed};
use strata_scheduler::sdk::{NodeId, NodeInfo, ResourceId, Snapshot, Sym};
use strata_topology::{Amounts, DomainId, NodeState, Topology};

/// What Filter and Score read: atomics, written only between Filter runs.
pub(crate) struct View {
    lendable: Box<[AtomicI64]>,
    lent: Box<[AtomicI64]>,
    pool: Box<[AtomicU32]>,
    near: Box<[AtomicU32]>,
    dom_free: Box<[AtomicI64]>,
    lent_total: AtomicI64,
}

fn atomics<T: Default>(n: usize) -> Box<[T]> {
    (0..n).map(|_| T::default()).collect()
}

impl View {
    fn new(nodes: usize, domains: usize) -> View {
        View {
            lendable: atomics(nodes * MEDIA),
            lent: atomics(nodes),
            pool: atomics(nodes),
            near: atomics(nodes),
            dom_free: atomics(domains * MEDIA),
            lent_total: AtomicI64::new(0),
        }
    }

    fn nodes(&self) -> usize {
        self.lent.len()
    }

    fn domains(&self) -> usize {
        self.dom_free.len() / MEDIA
    }

    /// A copy with room for `nodes` and `domains`.
    fn grown(&self, nodes: usize, domains: usize) -> View {
        let v = View::new(nodes, domains);
        let copy = |from: &[AtomicI64], to: &[AtomicI64]| {
            for (a, b) in from.iter().zip(to) {
                b.store(a.load(Relaxed), Relaxed);
            }
        };
        copy(&self.lendable, &v.lendable);
        copy(&self.lent, &v.lent);
        copy(&self.dom_free, &v.dom_free);
        for (a, b) in self.pool.iter().zip(v.pool.iter()) {
            b.store(a.load(Relaxed), Relaxed);
        }
        for (a, b) in self.near.iter().zip(v.near.iter()) {
            b.store(a.load(Relaxed), Relaxed);
        }
        v.lent_total.store(self.lent_total.load(Relaxed), Relaxed);
        v
    }

    /// Bytes lent by all nodes.
    #[inline]
    pub(crate) fn lent_total(&self) -> i64 {
        self.lent_total.load(Relaxed)
    }

    /// Bytes node `n` has lent.
    #[inline]
    pub(crate) fn lent(&self, n: NodeId) -> i64 {
        self.lent.get(n.index()).map_or(0, |a| a.load(Relaxed))
    }

    /// Bytes of medium `m` node `n` could lend now.
    #[inline]
    pub(crate) fn lendable(&self, n: NodeId, m: usize) -> i64 {
        self.lendable
            .get(n.index() * MEDIA + m)
            .map_or(0, |a| a.load(Relaxed))
    }

    /// Node `n`'s pool domain (index), if it is known.
    #[inline]
    pub(crate) fn pool_of(&self, n: NodeId) -> Option<usize> {
        let v = self.pool.get(n.index())?.load(Relaxed);
        (v > 0).then(|| v as usize - 1)
    }

    /// Node `n`'s near domain (index): its cabinet, or its pool when there
    /// is no near level.
    #[inline]
    pub(crate) fn near_of(&self, n: NodeId) -> Option<usize> {
        let v = self.near.get(n.index())?.load(Relaxed);
        (v > 0).then(|| v as usize - 1)
    }

    /// Lendable bytes of medium `m` in domain `d`.
    #[inline]
    pub(crate) fn dom_free(&self, d: usize, m: usize) -> i64 {
        self.dom_free
            .get(d * MEDIA + m)
            .map_or(0, |a| a.load(Relaxed))
    }

    /// What the pod on `n` could borrow, per distance and medium:
    /// `[near, pool][medium]`, its own node left out.
    #[inline]
    pub(crate) fn available(&self, n: NodeId) -> Option<[[i64; MEDIA]; 2]> {
        let pool = self.pool_of(n)?;
        let near = self.near_of(n).unwrap_or(pool);
        let near_tier: [i64; MEDIA] =
            std::array::from_fn(|m| (self.dom_free(near, m) - self.lendable(n, m)).max(0));
        let pool_tier: [i64; MEDIA] =
            std::array::from_fn(|m| (self.dom_free(pool, m) - self.dom_free(near, m)).max(0));
        Some([near_tier, pool_tier])
    }
}

/// One lender's part of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loan {
    /// The lender.
    pub node: NodeId,
    /// Its name.
    pub node_name: Sym,
    /// Bytes lent.
    pub bytes: i64,
    /// Its medium.
    pub medium: Medium,
    /// How far it is from the borrower.
    pub distance: Distance,
}

/// A borrow plan: who lends how much to one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BorrowPlan {
    /// The borrowing pod's uid.
    pub uid: Arc<str>,
    /// Its namespace.
    pub namespace: Sym,
    /// Its name.
    pub name: Arc<str>,
    /// The node it runs on.
    pub borrower: NodeId,
    /// The pool domain's name.
    pub pool: String,
    /// Bytes borrowed in all.
    pub remote: i64,
    /// The loans, in the order they were taken.
    pub lenders: SmallVec<[Loan; 4]>,
}

/// What a node offers and has lent.
#[derive(Clone, Copy, Debug)]
struct NodeMem {
    name: Sym,
    offer: Offer,
    alloc: i64,
    requested: i64,
    lent: i64,
    schedulable: bool,
    /// Its borrowers were told it can no longer cover what it lent.
    warned: bool,
    /// What placed it and made its offer, to tell a change of its own
    /// pods only (the common case) from one that matters: its
    /// annotations (by address), its level label values, its medium label.
    annotations: usize,
    levels: [Option<Sym>; 3],
    medium_label: Option<Sym>,
}

impl NodeMem {
    /// The most it may have lent: its offer, less its own pods' memory.
    fn limit(&self) -> i64 {
        self.offer.cap.min(self.alloc - self.requested).max(0)
    }

    /// What it can lend now: nothing without a pool label (it would be a
    /// pool of its own, with nobody to lend to).
    fn lendable(&self) -> i64 {
        if self.schedulable && self.levels[0].is_some() {
            (self.limit() - self.lent).max(0)
        } else {
            0
        }
    }

    /// Why its borrowers are short, if they are.
    fn short(&self) -> Option<String> {
        if self.lent == 0 {
            return None;
        }
        if !self.schedulable {
            return Some("is cordoned".to_owned());
        }
        (self.lent > self.limit()).then(|| {
            format!(
                "now lends at most {} but has lent {}",
                super::model::human(self.limit()),
                super::model::human(self.lent)
            )
        })
    }
}

/// Why no plan can be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The pool domain.
    pub pool: String,
    /// Bytes it could lend.
    pub available: i64,
}

/// An event for a borrower whose lender changed.
#[derive(Clone, Debug)]
pub struct LenderNotice {
    /// The borrower's plan.
    pub plan: Arc<BorrowPlan>,
    /// What happened.
    pub message: String,
}

/// The pool ledger (see the module doc).
pub struct Ledger {
    topo: Topology,
    near_level: Option<usize>,
    keys: SmallVec<[Sym; 3]>,
    medium_key: Sym,
    nodes: Vec<Option<NodeMem>>,
    plans: FxHashMap<Arc<str>, Arc<BorrowPlan>>,
    hosted: Vec<SmallVec<[Arc<str>; 2]>>,
    lending_to: Vec<SmallVec<[Arc<str>; 2]>>,
    by_namespace: BTreeMap<Sym, i64>,
    lent_total: i64,
    view: Arc<View>,
    /// Nodes whose own figures in the view moved since the last
    /// [`Ledger::take_stale`] (what they lend or have lent, their domains).
    stale: Vec<u32>,
    /// Pool domains whose lendable memory moved since then: the answers
    /// of every node under them may have moved.
    stale_pools: Vec<DomainId>,
}

impl Ledger {
    /// An empty ledger with the args' levels.
    pub fn new(args: &MemoryPoolArgs) -> Ledger {
        // No per-server level: a server sits directly in its cabinet (or
        // pool), so the graph holds a domain per cabinet, not per server.
        let mut levels = vec![args.pool_level.clone()];
        if !args.near_level.is_empty() {
            levels.push(args.near_level.clone());
        }
        let near_level = (!args.near_level.is_empty()).then_some(2);
        Ledger {
            keys: levels.iter().map(|l| Sym::new(l)).collect(),
            medium_key: Sym::new(MEDIUM),
            topo: Topology::new(levels),
            near_level,
            nodes: Vec::new(),
            plans: FxHashMap::default(),
            hosted: Vec::new(),
            lending_to: Vec::new(),
            by_namespace: BTreeMap::new(),
            lent_total: 0,
            view: Arc::new(View::new(0, 0)),
            stale: Vec::new(),
            stale_pools: Vec::new(),
        }
    }

    /// Appends to `out` every node whose Filter or Score answer may have
    /// moved since the last call without the node itself changing, and
    /// forgets them: the nodes whose figures in the view moved, and every
    /// node of a pool domain whose lendable memory moved. What a node's
    /// answer reads — its own lendable and lent bytes and its pool's and
    /// cabinet's lendable bytes — changes only through [`Ledger::publish`]
    /// and node removal, which record it here.
    pub fn take_stale(&mut self, out: &mut Vec<NodeId>) {
        self.stale_pools.sort_unstable();
        self.stale_pools.dedup();
        for d in self.stale_pools.drain(..) {
            if self.topo.contains_domain(d) {
                self.topo.for_each_node(d, &mut |x| out.push(NodeId(x)));
            }
        }
        out.extend(self.stale.drain(..).map(NodeId));
    }

    /// The view Filter and Score read.
    pub(crate) fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// The topology of lendable memory (slots are media).
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Bytes lent by all nodes.
    pub fn lent_total(&self) -> i64 {
        self.lent_total
    }

    /// Remote bytes the pods of `ns` hold.
    pub fn namespace_borrowed(&self, ns: Sym) -> i64 {
        self.by_namespace.get(&ns).copied().unwrap_or(0)
    }

    /// Remote bytes held per namespace.
    pub fn by_namespace(&self) -> impl Iterator<Item = (Sym, i64)> + '_ {
        self.by_namespace.iter().map(|(k, v)| (*k, *v))
    }

    /// The plan of pod `uid`.
    pub fn plan_of(&self, uid: &str) -> Option<&Arc<BorrowPlan>> {
        self.plans.get(uid)
    }

    /// Every plan.
    pub fn plans(&self) -> impl Iterator<Item = &Arc<BorrowPlan>> + '_ {
        self.plans.values()
    }

    /// Bytes node `n` has lent.
    pub fn lent_by(&self, n: NodeId) -> i64 {
        self.node(n).map_or(0, |m| m.lent)
    }

    fn node(&self, n: NodeId) -> Option<&NodeMem> {
        self.nodes.get(n.index()).and_then(|m| m.as_ref())
    }

    /// The name of pool domain `d` (an index of the view).
    pub fn domain_name(&self, d: usize) -> String {
        let root = self.topo.root();
        self.topo
            .children(root)
            .find(|c| c.index() == d)
            .map_or_else(|| "?".to_owned(), |c| self.topo.domain(c).name())
    }

    /// The pool domain of node `n` (index).
    pub fn pool_of(&self, n: NodeId) -> Option<usize> {
        self.topo.ancestor_at(n.0, 1).map(|d| d.index())
    }

    /// Every pool domain with its lendable bytes (all media).
    pub fn pools(&self) -> Vec<(usize, i64)> {
        let root = self.topo.root();
        self.topo
            .children(root)
            .map(|d| {
                (
                    d.index(),
                    self.topo.domain(d).agg.free.0[..MEDIA].iter().sum(),
                )
            })
            .collect()
    }

    // ---- writes ----

    fn ensure_room(&mut self, n: usize) {
        if self.nodes.len() <= n {
            self.nodes.resize(n + 1, None);
            self.hosted.resize(n + 1, SmallVec::new());
            self.lending_to.resize(n + 1, SmallVec::new());
        }
        let domains = self.topo.domain_bound();
        if self.view.nodes() <= n || self.view.domains() < domains {
            let nodes = (n + 1).max(self.view.nodes()).next_power_of_two();
            let doms = domains.max(self.view.domains()).max(4).next_power_of_two();
            self.view = Arc::new(self.view.grown(nodes, doms));
        }
    }

    /// Publishes node `n` and the domains on its path, recording what moved
    /// for [`Ledger::take_stale`].
    fn publish(&mut self, n: u32) {
        self.ensure_room(n as usize);
        let v = &self.view;
        let i = n as usize;
        let free = self.topo.node_free(n);
        let mut moved = false;
        for m in 0..MEDIA {
            moved |= v.lendable[i * MEDIA + m].swap(free[m], Relaxed) != free[m];
        }
        let lent = self.nodes[i].map_or(0, |m| m.lent);
        moved |= v.lent[i].swap(lent, Relaxed) != lent;
        let pool = self.topo.ancestor_at(n, 1);
        let near = match self.near_level {
            Some(l) => self.topo.ancestor_at(n, l),
            None => pool,
        };
        let pool_ix = pool.map_or(0, |d| d.index() as u32 + 1);
        let near_ix = near.map_or(0, |d| d.index() as u32 + 1);
        moved |= v.pool[i].swap(pool_ix, Relaxed) != pool_ix;
        moved |= v.near[i].swap(near_ix, Relaxed) != near_ix;
        // A cabinet's total moves only with its pool's (sums), so the
        // pool's figure tells whether any node under it may answer anew.
        let mut pool_moved = false;
        let mut d = self.topo.node_domain(n);
        while let Some(id) = d {
            let dom = self.topo.domain(id);
            for m in 0..MEDIA {
                let f = dom.agg.free[m];
                let was = v.dom_free[id.index() * MEDIA + m].swap(f, Relaxed);
                pool_moved |= was != f && Some(id) == pool;
            }
            d = dom.parent;
        }
        v.lent_total.store(self.lent_total, Relaxed);
        if moved {
            self.stale.push(n);
        }
        if pool_moved && let Some(p) = pool {
            self.stale_pools.push(p);
        }
    }

    fn place(&mut self, n: u32, values: &[Option<&str>]) {
        let Some(m) = self.nodes[n as usize] else {
            return;
        };
        let mut alloc = Amounts::ZERO;
        let mut used = Amounts::ZERO;
        let s = m.offer.medium.slot();
        alloc[s] = m.limit().max(m.lent);
        used[s] = alloc[s] - m.lendable();
        let state = NodeState {
            allocatable: alloc,
            requested: used,
            schedulable: m.schedulable,
        };
        if values.is_empty() {
            self.topo.set_state(n, state);
        } else if values.first().is_none_or(|v| v.is_none()) {
            // No pool label: it neither lends nor borrows, so the graph
            // keeps no domain for it (most servers of a cluster without
            // pools).
            if self.topo.has_node(n) {
                if let Some(old) = self.topo.ancestor_at(n, 1) {
                    self.stale_pools.push(old);
                }
                self.topo.remove_node(n);
            }
        } else {
            let old = self.topo.ancestor_at(n, 1);
            self.topo.upsert_node(n, values, state);
            // A node moving to another pool takes its lendable memory out
            // of the old one.
            if let Some(old) = old
                && self.topo.ancestor_at(n, 1) != Some(old)
            {
                self.stale_pools.push(old);
            }
        }
        // The view may need room for new domains.
        self.ensure_room(n as usize);
        self.publish(n);
    }

    fn update_amounts(&mut self, n: u32) {
        self.place(n, &[]);
    }

    /// Applies a node change. Returns notices for the borrowers of a lender
    /// that can no longer cover what it lent (deleted, cordoned, shrunk).
    pub fn node_changed(
        &mut self,
        node: &NodeInfo,
        snap: &Snapshot,
        args: &MemoryPoolArgs,
    ) -> Vec<LenderNotice> {
        let n = node.id.0;
        let i = n as usize;
        self.ensure_room(i);
        let mut notices = Vec::new();
        // Borrowers placed here that are gone give their loans back.
        let gone: SmallVec<[Arc<str>; 2]> = self.hosted[i]
            .iter()
            .filter(|uid| snap.assigned_pod(uid).is_none_or(|p| p.node != node.id))
            .cloned()
            .collect();
        for uid in gone {
            self.release(&uid);
        }
        if !node.present {
            if let Some(m) = self.nodes[i] {
                if m.lent > 0 {
                    notices.extend(self.notices(n, "was deleted"));
                    self.lent_total -= m.lent;
                }
                self.nodes[i] = None;
                let path = self.path(n);
                if let Some(pool) = self.topo.ancestor_at(n, 1) {
                    self.stale_pools.push(pool);
                }
                self.stale.push(n);
                self.topo.remove_node(n);
                self.lending_to[i].clear();
                let v = &self.view;
                for m in 0..MEDIA {
                    v.lendable[i * MEDIA + m].store(0, Relaxed);
                }
                v.lent[i].store(0, Relaxed);
                v.pool[i].store(0, Relaxed);
                v.near[i].store(0, Relaxed);
                for d in path {
                    let free = if self.topo.contains_domain(d) {
                        self.topo.domain(d).agg.free
                    } else {
                        Amounts::ZERO
                    };
                    for m in 0..MEDIA {
                        v.dom_free[d.index() * MEDIA + m].store(free[m], Relaxed);
                    }
                }
                v.lent_total.store(self.lent_total, Relaxed);
            }
            return notices;
        }
        let annotations = Arc::as_ptr(&node.annotations) as usize;
        let mut levels = [None; 3];
        for (l, k) in levels.iter_mut().zip(&self.keys) {
            *l = node.labels.get(*k);
        }
        let medium_label = node.labels.get(self.medium_key);
        let alloc = node.allocatable[ResourceId::MEMORY];
        if let Some(prev) = self.nodes[i].as_mut()
            && prev.offer.cap == 0
            && prev.lent == 0
            && prev.annotations == annotations
            && prev.levels == levels
            && prev.medium_label == medium_label
            && prev.alloc == alloc
            && prev.schedulable != node.unschedulable
            && self.lending_to[i].is_empty()
        {
            // A server that lends nothing and whose offer cannot have
            // changed: only its own pods moved. Nothing to publish.
            prev.requested = node.requested[ResourceId::MEMORY];
            self.restore_plans(node, snap);
            return notices;
        }
        let offer = node_offer_with(node, args, self.medium_key).unwrap_or_else(|e| {
            tracing::debug!(node = %node.name, error = %e, "node lends nothing to its memory pool");
            Offer {
                cap: 0,
                medium: args.default_medium,
            }
        });
        let prev = self.nodes[i];
        // First sight (a restart, a new node): what plans restored from
        // borrowers' annotations already lent from it.
        let lent = match prev {
            Some(p) => p.lent,
            None => {
                let l = self.loans_from(n);
                self.lent_total += l;
                l
            }
        };
        let mut m = NodeMem {
            name: node.name,
            offer,
            alloc,
            requested: node.requested[ResourceId::MEMORY],
            lent,
            schedulable: !node.unschedulable,
            warned: prev.is_some_and(|p| p.warned),
            annotations,
            levels,
            medium_label,
        };
        // A medium change moves what it lent to the new slot; loans keep
        // the medium they were made with.
        match m.short() {
            Some(why) if !m.warned => {
                m.warned = true;
                self.nodes[i] = Some(m);
                notices.extend(self.notices(n, &why));
            }
            None => m.warned = false,
            _ => {}
        }
        self.nodes[i] = Some(m);
        let mut values: SmallVec<[Option<&'static str>; 3]> = SmallVec::new();
        for k in &self.keys {
            values.push(node.labels.get(*k).map(|v| v.as_str()));
        }
        self.place(n, &values);
        self.restore_plans(node, snap);
        notices
    }

    /// Bytes the recorded plans borrow from node `n`.
    fn loans_from(&self, n: u32) -> i64 {
        self.lending_to
            .get(n as usize)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.plans.get(uid))
            .flat_map(|p| p.lenders.iter())
            .filter(|l| l.node.0 == n)
            .map(|l| l.bytes)
            .sum()
    }

    /// Takes the plans of bound pods on `node` that the ledger does not
    /// hold from their `strata.io/memory-borrow-plan` annotation (after a
    /// restart, or pods another replica bound). Assumed pods are left to
    /// their Reserve.
    fn restore_plans(&mut self, node: &NodeInfo, snap: &Snapshot) {
        for p in &node.pods {
            if p.annotations.is_empty() || self.plans.contains_key(&p.uid) {
                continue;
            }
            let Some(text) = p.annotations.get(PLAN) else {
                continue;
            };
            if snap.assigned_pod(&p.uid).is_none_or(|a| a.assumed) {
                continue;
            }
            let doc: PlanDoc = match serde_json::from_str(text) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(pod = %p.key(), error = %e, "unreadable memory borrow plan; not counted");
                    continue;
                }
            };
            let mut lenders: SmallVec<[Loan; 4]> = SmallVec::new();
            for l in &doc.lenders {
                let Some(id) = snap.node_id(Sym::new(&l.node)) else {
                    continue;
                };
                lenders.push(Loan {
                    node: id,
                    node_name: Sym::new(&l.node),
                    bytes: l.bytes.clamp(0, super::model::MAX_BYTES),
                    medium: Medium::parse(&l.medium).unwrap_or(Medium::Dram),
                    distance: if l.distance == "near" {
                        Distance::Near
                    } else {
                        Distance::Pool
                    },
                });
            }
            let remote = lenders.iter().map(|l| l.bytes).sum();
            self.apply(BorrowPlan {
                uid: p.uid.clone(),
                namespace: p.namespace,
                name: p.name.clone(),
                borrower: node.id,
                pool: doc.pool,
                remote,
                lenders,
            });
        }
    }

    fn path(&self, n: u32) -> SmallVec<[DomainId; 4]> {
        let mut out = SmallVec::new();
        let mut d = self.topo.node_domain(n);
        while let Some(id) = d {
            out.push(id);
            d = self.topo.domain(id).parent;
        }
        out
    }

    fn notices(&self, lender: u32, why: &str) -> Vec<LenderNotice> {
        let name = self.nodes[lender as usize].map_or("?", |m| m.name.as_str());
        self.lending_to[lender as usize]
            .iter()
            .filter_map(|uid| self.plans.get(uid))
            .map(|p| {
                let bytes: i64 = p
                    .lenders
                    .iter()
                    .filter(|l| l.node.0 == lender)
                    .map(|l| l.bytes)
                    .sum();
                LenderNotice {
                    plan: p.clone(),
                    message: format!(
                        "memory lender {name} {why}: {} of this pod's remote memory may be missing",
                        super::model::human(bytes)
                    ),
                }
            })
            .collect()
    }

    /// Picks the lenders for `remote` bytes borrowed by a pod on
    /// `borrower`: its near domain first, then the rest of its pool; within
    /// each, the preferred medium, then the lender with the most to lend,
    /// then the lowest node id. Deterministic.
    pub fn plan(
        &self,
        borrower: NodeId,
        remote: i64,
        weights: &[i64; MEDIA],
    ) -> Result<SmallVec<[Loan; 4]>, Shortfall> {
        let pool = self.topo.ancestor_at(borrower.0, 1);
        let pool_name = pool.map_or_else(|| "<none>".to_owned(), |d| self.topo.domain(d).name());
        let short = |available| Shortfall {
            pool: pool_name.clone(),
            available,
        };
        let Some(pool) = pool else {
            return Err(short(0));
        };
        let near = match self.near_level {
            Some(l) => self.topo.ancestor_at(borrower.0, l).unwrap_or(pool),
            None => pool,
        };
        let mut loans = SmallVec::new();
        let mut rest = remote;
        let mut tiers: SmallVec<[(Distance, Vec<u32>); 2]> = SmallVec::new();
        tiers.push((Distance::Near, self.topo.nodes_under(near)));
        if near != pool {
            let mut far = Vec::new();
            for c in self.topo.children(pool) {
                if c != near {
                    self.topo.for_each_node(c, &mut |x| far.push(x));
                }
            }
            tiers.push((Distance::Pool, far));
        }
        for (distance, nodes) in tiers {
            let mut cands: Vec<(i64, i64, u32, Medium)> = nodes
                .into_iter()
                .filter(|x| *x != borrower.0)
                .filter_map(|x| {
                    let m = self.nodes.get(x as usize)?.as_ref()?;
                    let l = m.lendable();
                    (l > 0).then_some((-weights[m.offer.medium.slot()], -l, x, m.offer.medium))
                })
                .collect();
            cands.sort_unstable();
            for (_, neg, x, medium) in cands {
                if rest == 0 {
                    break;
                }
                let take = (-neg).min(rest);
                rest -= take;
                loans.push(Loan {
                    node: NodeId(x),
                    node_name: self.nodes[x as usize].map_or(Sym::new("?"), |m| m.name),
                    bytes: take,
                    medium,
                    distance,
                });
            }
        }
        if rest > 0 {
            return Err(short(remote - rest));
        }
        Ok(loans)
    }

    /// Records a plan and takes its loans. A plan for a uid already held is
    /// ignored (Reserve is not repeated).
    pub fn apply(&mut self, plan: BorrowPlan) {
        if self.plans.contains_key(&plan.uid) {
            return;
        }
        let plan = Arc::new(plan);
        for l in &plan.lenders {
            let i = l.node.index();
            self.ensure_room(i);
            // A lender not seen yet counts this loan when it is.
            self.lending_to[i].push(plan.uid.clone());
            if let Some(m) = self.nodes[i].as_mut() {
                m.lent += l.bytes;
                self.lent_total += l.bytes;
                self.update_amounts(l.node.0);
            }
        }
        let b = plan.borrower.index();
        self.ensure_room(b);
        self.hosted[b].push(plan.uid.clone());
        *self.by_namespace.entry(plan.namespace).or_default() += plan.remote;
        self.plans.insert(plan.uid.clone(), plan);
        self.view.lent_total.store(self.lent_total, Relaxed);
    }

    /// Gives back the loans of pod `uid`'s plan. Idempotent.
    pub fn release(&mut self, uid: &str) -> Option<Arc<BorrowPlan>> {
        let plan = self.plans.remove(uid)?;
        for l in &plan.lenders {
            let i = l.node.index();
            self.lending_to[i].retain(|u| &**u != uid);
            if let Some(m) = self.nodes[i].as_mut() {
                let back = l.bytes.min(m.lent);
                m.lent -= back;
                self.lent_total -= back;
                if m.short().is_none() {
                    m.warned = false;
                }
                self.update_amounts(l.node.0);
            }
        }
        self.hosted[plan.borrower.index()].retain(|u| &**u != uid);
        if let Some(v) = self.by_namespace.get_mut(&plan.namespace) {
            *v -= plan.remote;
            if *v == 0 {
                self.by_namespace.remove(&plan.namespace);
            }
        }
        self.view.lent_total.store(self.lent_total, Relaxed);
        Some(plan)
    }

    /// Checks the invariants of the module doc against the snapshot.
    pub fn check(&self, snap: &Snapshot) -> Result<(), String> {
        self.topo.check_consistency()?;
        let mut lent = vec![0i64; self.nodes.len()];
        for p in self.plans.values() {
            let pool = self.topo.ancestor_at(p.borrower.0, 1);
            let total: i64 = p.lenders.iter().map(|l| l.bytes).sum();
            if total != p.remote {
                return Err(format!("plan of {} lends {total}, not {}", p.uid, p.remote));
            }
            for l in &p.lenders {
                if l.node == p.borrower {
                    return Err(format!("{} borrows from its own node", p.uid));
                }
                if self.node(l.node).is_some() && self.topo.ancestor_at(l.node.0, 1) != pool {
                    return Err(format!(
                        "{} borrows from {} outside its pool",
                        p.uid, l.node_name
                    ));
                }
                if let Some(x) = lent.get_mut(l.node.index()) {
                    *x += l.bytes;
                }
            }
        }
        let mut total = 0;
        for (i, m) in self.nodes.iter().enumerate() {
            let Some(m) = m else { continue };
            if m.lent != lent[i] {
                return Err(format!(
                    "{} lent {} but plans say {}",
                    m.name, m.lent, lent[i]
                ));
            }
            total += m.lent;
            let node = snap.node(NodeId(i as u32));
            if node.present
                && m.short().is_none()
                && m.lent + node.requested[ResourceId::MEMORY]
                    > node.allocatable[ResourceId::MEMORY]
            {
                return Err(format!("{} lends memory its own pods requested", m.name));
            }
            if m.short().is_some() && !m.warned {
                return Err(format!(
                    "{} is short and its borrowers were not told",
                    m.name
                ));
            }
            for s in 0..MEDIA {
                let want = if s == m.offer.medium.slot() {
                    m.lendable()
                } else {
                    0
                };
                if self.view.lendable(NodeId(i as u32), s) != want {
                    return Err(format!("view of {} is stale", m.name));
                }
            }
            if self.view.lent(NodeId(i as u32)) != m.lent {
                return Err(format!("view of {}'s lent bytes is stale", m.name));
            }
        }
        if total != self.lent_total || self.view.lent_total() != total {
            return Err(format!("lent total {} is not {total}", self.lent_total));
        }
        for d in self.topo.domains_at(1, self.topo.root()) {
            for s in 0..MEDIA {
                if self.view.dom_free(d.index(), s) != self.topo.domain(d).agg.free[s] {
                    return Err(format!(
                        "view of pool {} is stale",
                        self.topo.domain(d).name()
                    ));
                }
            }
        }
        Ok(())
    }
}
