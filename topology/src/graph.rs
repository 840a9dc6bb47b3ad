//! The topology graph: a tree of domains (cluster → one domain per value of
//! each configured level → nodes), kept in a petgraph [`StableDiGraph`] with
//! edges from parent to child, and the per-domain aggregates of free
//! capacity.
//!
//! Levels are an ordered list of node label keys, outermost first (by
//! default `strata.io/supernode`, `strata.io/cabinet`,
//! `kubernetes.io/hostname`). A domain at level `i` is identified by its
//! parent and the node's value of label `i`, so `cabinet-3` under two
//! super-nodes is two domains. A node without a level's label forms its own
//! domain at that level (and below), so it never pools with strangers.
//!
//! Invariants (checked by [`Topology::check_consistency`], which the
//! property tests run after random operation sequences):
//! - every domain's [`Aggregates`] equal what a full recomputation from its
//!   nodes gives: `free` and `capacity` are sums over its schedulable nodes,
//!   `max_free` is the slot-wise maximum of their free amounts, and the node
//!   counts are exact;
//! - every node sits under exactly one domain per level, and a domain exists
//!   only while it has at least one node under it;
//! - an update touches only the domains on the changed node's path (plus, when
//!   a node that held a domain's largest free slot shrinks, that domain's
//!   children), so keeping the aggregates current costs O(depth) per
//!   assume, forget, bind or delete, not O(nodes).

use crate::amounts::{Amounts, MAX_DIMS};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

/// The default levels, outermost first.
pub const DEFAULT_LEVELS: [&str; 3] = [
    "strata.io/supernode",
    "strata.io/cabinet",
    "kubernetes.io/hostname",
];

/// A domain of the graph. Stable while the domain exists; an id may be reused
/// after its domain disappears.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(pub NodeIndex<u32>);

impl DomainId {
    /// As an index (dense enough to size vectors with
    /// [`Topology::domain_bound`]).
    #[inline]
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// What identifies a domain under its parent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DomainKey {
    /// The cluster.
    Root,
    /// The nodes whose label of this level has this value.
    Value(Box<str>),
    /// A node without the level's label: a domain of its own.
    Unlabelled(u32),
}

/// What a node offers, as the caller sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Allocatable amounts.
    pub allocatable: Amounts,
    /// Requested by the pods placed on it (bound or assumed).
    pub requested: Amounts,
    /// Whether new pods may go there (present, not cordoned).
    pub schedulable: bool,
}

impl NodeState {
    /// Free amounts counted in aggregates: zero for an unschedulable node,
    /// otherwise allocatable minus requested, clamped at zero.
    #[inline]
    pub fn free(&self) -> Amounts {
        if self.schedulable {
            self.allocatable.saturating_minus(&self.requested)
        } else {
            Amounts::ZERO
        }
    }

    #[inline]
    fn capacity(&self) -> Amounts {
        if self.schedulable {
            self.allocatable
        } else {
            Amounts::ZERO
        }
    }
}

/// Per-domain aggregates of the schedulable nodes under a domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aggregates {
    /// Sum of free amounts.
    pub free: Amounts,
    /// Slot-wise largest free amount on one node ("largest free slot").
    pub max_free: Amounts,
    /// Sum of allocatable amounts (what the domain could ever offer).
    pub capacity: Amounts,
    /// Schedulable nodes.
    pub schedulable_nodes: u32,
    /// All nodes, schedulable or not.
    pub nodes: u32,
}

impl Aggregates {
    /// An upper bound on how many copies of `shape` fit: by the summed free
    /// amounts, and zero when no single node has a large enough slot.
    #[inline]
    pub fn fit_upper_bound(&self, shape: &Amounts) -> u32 {
        if !self.max_free.covers(shape) {
            return 0;
        }
        self.free.fit_count(shape)
    }
}

/// A domain: its level, key and aggregates.
#[derive(Clone, Debug)]
pub struct Domain {
    /// 0 for the cluster; `i + 1` for the `i`-th configured level.
    pub level: usize,
    /// Its key under its parent.
    pub key: DomainKey,
    /// Its parent (`None` for the cluster).
    pub parent: Option<DomainId>,
    /// Aggregates of the nodes under it.
    pub agg: Aggregates,
    /// Nodes directly under it (deepest level only).
    nodes: Vec<u32>,
}

impl Domain {
    /// A short name: the label value, `<unlabelled node N>` or `cluster`.
    pub fn name(&self) -> String {
        match &self.key {
            DomainKey::Root => "cluster".to_owned(),
            DomainKey::Value(v) => v.to_string(),
            DomainKey::Unlabelled(n) => format!("<node {n} unlabelled>"),
        }
    }

    /// Nodes directly under this domain (empty above the deepest level).
    pub fn direct_nodes(&self) -> &[u32] {
        &self.nodes
    }
}

#[derive(Clone, Debug)]
struct Leaf {
    domain: DomainId,
    state: NodeState,
    free: Amounts,
}

/// The graph of domains and the nodes under them.
#[derive(Clone, Debug)]
pub struct Topology {
    levels: Vec<String>,
    graph: StableDiGraph<Domain, ()>,
    root: DomainId,
    leaves: Vec<Option<Leaf>>,
    index: FxHashMap<(DomainId, DomainKey), DomainId>,
    /// Per domain (by index) and slot: how many direct children (nodes and
    /// child domains) hold the domain's `max_free`. Lets a decrease skip the
    /// rescan of a wide domain unless its last holder went down.
    holders: Vec<[u32; MAX_DIMS]>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new(DEFAULT_LEVELS.iter().map(|s| s.to_string()).collect())
    }
}

impl Topology {
    /// An empty topology with `levels` (label keys, outermost first).
    pub fn new(levels: Vec<String>) -> Topology {
        let mut graph = StableDiGraph::default();
        let root = DomainId(graph.add_node(Domain {
            level: 0,
            key: DomainKey::Root,
            parent: None,
            agg: Aggregates::default(),
            nodes: Vec::new(),
        }));
        Topology {
            levels,
            graph,
            root,
            leaves: Vec::new(),
            index: FxHashMap::default(),
            holders: Vec::new(),
        }
    }

    /// The level label keys, outermost first.
    pub fn levels(&self) -> &[String] {
        &self.levels
    }

    /// The level (1-based; 0 is the cluster) whose label key is `key`.
    pub fn level_of(&self, key: &str) -> Option<usize> {
        self.levels.iter().position(|l| l == key).map(|i| i + 1)
    }

    /// The deepest level.
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// The cluster domain.
    pub fn root(&self) -> DomainId {
        self.root
    }

    /// A domain. Panics on an id this topology does not hold.
    #[inline]
    pub fn domain(&self, id: DomainId) -> &Domain {
        &self.graph[id.0]
    }

    /// Whether `id` names a live domain.
    pub fn contains_domain(&self, id: DomainId) -> bool {
        self.graph.contains_node(id.0)
    }

    /// One past the largest domain index in use.
    pub fn domain_bound(&self) -> usize {
        petgraph::visit::NodeIndexable::node_bound(&self.graph)
    }

    /// How many domains exist (the cluster included).
    pub fn domain_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Child domains, in a stable order.
    pub fn children(&self, id: DomainId) -> impl Iterator<Item = DomainId> + '_ {
        self.graph
            .neighbors_directed(id.0, Direction::Outgoing)
            .map(DomainId)
    }

    /// Domains at `level` under (or equal to) `under`, in a stable order.
    pub fn domains_at(&self, level: usize, under: DomainId) -> Vec<DomainId> {
        let mut out = Vec::new();
        let mut stack = vec![under];
        while let Some(d) = stack.pop() {
            let dl = self.domain(d).level;
            if dl == level {
                out.push(d);
            } else if dl < level {
                stack.extend(self.children(d));
            }
        }
        out.sort_unstable();
        out
    }

    /// Nodes under `id`.
    pub fn nodes_under(&self, id: DomainId) -> Vec<u32> {
        let mut out = Vec::new();
        self.for_each_node(id, &mut |n| out.push(n));
        out
    }

    /// Calls `f` for each node under `id`.
    pub fn for_each_node(&self, id: DomainId, f: &mut dyn FnMut(u32)) {
        let d = self.domain(id);
        for n in &d.nodes {
            f(*n);
        }
        for c in self.children(id) {
            self.for_each_node(c, f);
        }
    }

    pub(crate) fn leaf_bound(&self) -> usize {
        self.leaves.len()
    }

    /// Whether node `n` is known.
    pub fn has_node(&self, n: u32) -> bool {
        self.leaf(n).is_some()
    }

    fn leaf(&self, n: u32) -> Option<&Leaf> {
        self.leaves.get(n as usize).and_then(|l| l.as_ref())
    }

    /// The state of node `n`.
    pub fn node_state(&self, n: u32) -> Option<&NodeState> {
        self.leaf(n).map(|l| &l.state)
    }

    /// The free amounts of node `n` as aggregated (zero when unschedulable).
    pub fn node_free(&self, n: u32) -> Amounts {
        self.leaf(n).map(|l| l.free).unwrap_or_default()
    }

    /// The deepest-level domain node `n` sits in.
    pub fn node_domain(&self, n: u32) -> Option<DomainId> {
        self.leaf(n).map(|l| l.domain)
    }

    /// The domain at `level` that contains node `n`.
    pub fn ancestor_at(&self, n: u32, level: usize) -> Option<DomainId> {
        let mut d = self.leaf(n)?.domain;
        loop {
            let dom = self.domain(d);
            if dom.level == level {
                return Some(d);
            }
            d = dom.parent?;
        }
    }

    /// Whether domain `inner` is `outer` or lies under it.
    pub fn is_within(&self, inner: DomainId, outer: DomainId) -> bool {
        let mut d = Some(inner);
        while let Some(x) = d {
            if x == outer {
                return true;
            }
            d = self.domain(x).parent;
        }
        false
    }

    /// Levels up from the nodes to their lowest common domain: 0 for the
    /// same node, 1 when they share the deepest-level domain, ..., and
    /// `depth() + 1` when only the cluster holds both. `None` when either
    /// node is unknown.
    pub fn distance(&self, a: u32, b: u32) -> Option<usize> {
        if a == b {
            return self.leaf(a).map(|_| 0);
        }
        let mut da = self.leaf(a)?.domain;
        let mut db = self.leaf(b)?.domain;
        let mut up = 1;
        while da != db {
            da = self.domain(da).parent?;
            db = self.domain(db).parent?;
            up += 1;
        }
        Some(up)
    }

    /// Adds node `n` or updates it. `values` holds its label value for each
    /// level (`None` where the label is missing); extra values are ignored
    /// and missing ones count as `None`. A node whose values changed moves in
    /// the graph.
    pub fn upsert_node(&mut self, n: u32, values: &[Option<&str>], state: NodeState) {
        if self.leaf(n).is_some() && self.path_matches(n, values) {
            self.set_state(n, state);
            return;
        }
        if self.leaf(n).is_some() {
            self.remove_node(n);
        }
        // Find or create the path.
        let mut d = self.root;
        for level in 1..=self.levels.len() {
            let key = match values.get(level - 1).copied().flatten() {
                Some(v) => DomainKey::Value(v.into()),
                None => DomainKey::Unlabelled(n),
            };
            d = match self.index.get(&(d, key.clone())) {
                Some(c) => *c,
                None => {
                    let c = DomainId(self.graph.add_node(Domain {
                        level,
                        key: key.clone(),
                        parent: Some(d),
                        agg: Aggregates::default(),
                        nodes: Vec::new(),
                    }));
                    self.graph.add_edge(d.0, c.0, ());
                    self.index.insert((d, key), c);
                    *self.holders_mut(c) = [0; MAX_DIMS];
                    c
                }
            };
        }
        let idx = n as usize;
        if self.leaves.len() <= idx {
            self.leaves.resize(idx + 1, None);
        }
        self.graph[d.0].nodes.push(n);
        self.leaves[idx] = Some(Leaf {
            domain: d,
            state: NodeState::default(),
            free: Amounts::ZERO,
        });
        // Count the node, then apply its state as an update.
        let mut x = Some(d);
        while let Some(id) = x {
            let dom = &mut self.graph[id.0];
            dom.agg.nodes += 1;
            x = dom.parent;
        }
        self.set_state(n, state);
    }

    fn path_matches(&self, n: u32, values: &[Option<&str>]) -> bool {
        let Some(leaf) = self.leaf(n) else {
            return false;
        };
        let mut d = leaf.domain;
        for level in (1..=self.levels.len()).rev() {
            let dom = self.domain(d);
            let ok = match (&dom.key, values.get(level - 1).copied().flatten()) {
                (DomainKey::Value(k), Some(v)) => &**k == v,
                (DomainKey::Unlabelled(m), None) => *m == n,
                _ => false,
            };
            if !ok {
                return false;
            }
            match dom.parent {
                Some(p) => d = p,
                None => return false,
            }
        }
        true
    }

    /// Updates node `n`'s amounts and schedulability, keeping every
    /// aggregate on its path exact. Unknown nodes are ignored.
    // Several parallel per-slot arrays are walked together by slot index.
    #[allow(clippy::needless_range_loop)]
    pub fn set_state(&mut self, n: u32, state: NodeState) {
        let Some(leaf) = self.leaves.get_mut(n as usize).and_then(|l| l.as_mut()) else {
            return;
        };
        let old_state = leaf.state;
        let old_free = leaf.free;
        let new_free = state.free();
        leaf.state = state;
        leaf.free = new_free;
        let start = leaf.domain;
        if old_state == state {
            return;
        }
        let dcap = {
            let mut c = state.capacity();
            c.sub(&old_state.capacity());
            c
        };
        let dsched = i64::from(state.schedulable) - i64::from(old_state.schedulable);
        let mut dfree = new_free;
        dfree.sub(&old_free);
        // Sums first, all the way up.
        let mut x = Some(start);
        while let Some(id) = x {
            let dom = &mut self.graph[id.0];
            dom.agg.free.add(&dfree);
            dom.agg.capacity.add(&dcap);
            dom.agg.schedulable_nodes = (i64::from(dom.agg.schedulable_nodes) + dsched) as u32;
            x = dom.parent;
        }
        // Then the largest slots, stopping where nothing changes. A domain
        // rescans its children only when the last child holding its maximum
        // went down (wide, flat domains would otherwise rescan on every
        // decrease).
        let mut child_old = old_free;
        let mut child_new = new_free;
        let mut x = Some(start);
        while let Some(id) = x {
            let before = self.graph[id.0].agg.max_free;
            let mut after = before;
            let mut dirty = false;
            {
                let h = self.holders_mut(id);
                for r in 0..MAX_DIMS {
                    let (o, n, b) = (child_old.0[r], child_new.0[r], before.0[r]);
                    if n > b {
                        after.0[r] = n;
                        h[r] = 1;
                    } else if n == b && o != b {
                        h[r] += 1;
                    } else if o == b && n < b {
                        if h[r] > 1 {
                            h[r] -= 1;
                        } else {
                            dirty = true;
                        }
                    }
                }
            }
            if dirty {
                let (m, h) = self.recompute_max(id);
                after = m;
                *self.holders_mut(id) = h;
            }
            if after == before {
                break;
            }
            self.graph[id.0].agg.max_free = after;
            child_old = before;
            child_new = after;
            x = self.graph[id.0].parent;
        }
    }

    fn holders_mut(&mut self, id: DomainId) -> &mut [u32; MAX_DIMS] {
        let i = id.0.index();
        if self.holders.len() <= i {
            self.holders.resize(i + 1, [0; MAX_DIMS]);
        }
        &mut self.holders[i]
    }

    /// The largest free slot under `id` from its direct children, and how
    /// many children hold it per slot.
    #[allow(clippy::needless_range_loop)]
    fn recompute_max(&self, id: DomainId) -> (Amounts, [u32; MAX_DIMS]) {
        let dom = self.domain(id);
        let vals = dom
            .nodes
            .iter()
            .filter_map(|n| self.leaf(*n).map(|l| l.free))
            .chain(self.children(id).map(|c| self.domain(c).agg.max_free));
        let mut m = Amounts::ZERO;
        let mut h = [0u32; MAX_DIMS];
        for v in vals {
            for r in 0..MAX_DIMS {
                if v.0[r] > m.0[r] {
                    m.0[r] = v.0[r];
                    h[r] = 1;
                } else if v.0[r] == m.0[r] {
                    h[r] += 1;
                }
            }
        }
        (m, h)
    }

    /// Removes node `n` (deleted from the cluster); domains left empty go
    /// too.
    pub fn remove_node(&mut self, n: u32) {
        if self.leaf(n).is_none() {
            return;
        }
        // Zero its contribution, then uncount and detach it.
        self.set_state(n, NodeState::default());
        let Some(leaf) = self.leaves[n as usize].take() else {
            return;
        };
        let d = leaf.domain;
        self.graph[d.0].nodes.retain(|m| *m != n);
        let mut x = Some(d);
        while let Some(id) = x {
            let dom = &mut self.graph[id.0];
            dom.agg.nodes -= 1;
            x = dom.parent;
        }
        // Prune empty domains bottom-up.
        let mut x = Some(d);
        while let Some(id) = x {
            if id == self.root || self.graph[id.0].agg.nodes > 0 {
                break;
            }
            let dom = self.graph.remove_node(id.0).expect("domain exists");
            if let Some(p) = dom.parent {
                self.index.remove(&(p, dom.key));
            }
            x = dom.parent;
        }
        // A detached node or pruned domain may have been counted as a
        // holder: rescan the surviving path (node removal is rare).
        while let Some(id) = x {
            let (m, h) = self.recompute_max(id);
            self.graph[id.0].agg.max_free = m;
            *self.holders_mut(id) = h;
            x = self.graph[id.0].parent;
        }
    }

    /// Recomputes every domain's aggregates from its nodes (for tests and
    /// consistency checks), by domain index.
    pub fn recompute_all(&self) -> FxHashMap<DomainId, Aggregates> {
        let mut out: FxHashMap<DomainId, Aggregates> = FxHashMap::default();
        for idx in self.graph.node_indices() {
            out.insert(DomainId(idx), Aggregates::default());
        }
        for (n, leaf) in self.leaves.iter().enumerate() {
            let Some(leaf) = leaf else { continue };
            let free = leaf.state.free();
            let mut x = Some(leaf.domain);
            while let Some(id) = x {
                let a = out.entry(id).or_default();
                a.nodes += 1;
                if leaf.state.schedulable {
                    a.schedulable_nodes += 1;
                    a.free.add(&free);
                    a.capacity.add(&leaf.state.allocatable);
                }
                a.max_free.max_with(&free);
                x = self.domain(id).parent;
            }
            let _ = n;
        }
        out
    }

    /// Checks the invariants in the module documentation.
    pub fn check_consistency(&self) -> Result<(), String> {
        let fresh = self.recompute_all();
        for idx in self.graph.node_indices() {
            let id = DomainId(idx);
            let dom = self.domain(id);
            let want = fresh.get(&id).copied().unwrap_or_default();
            if dom.agg != want {
                return Err(format!(
                    "domain {} (level {}): aggregates {:?} but recomputation gives {:?}",
                    dom.name(),
                    dom.level,
                    dom.agg,
                    want
                ));
            }
            if id != self.root && dom.agg.nodes == 0 {
                return Err(format!(
                    "domain {} is empty but still in the graph",
                    dom.name()
                ));
            }
            if let Some(p) = dom.parent {
                let linked: SmallVec<[DomainId; 1]> = self
                    .graph
                    .neighbors_directed(idx, Direction::Incoming)
                    .map(DomainId)
                    .collect();
                if linked.as_slice() != [p] {
                    return Err(format!(
                        "domain {} has parents {linked:?}, expected {p:?}",
                        dom.name()
                    ));
                }
            }
            if !dom.nodes.is_empty() && dom.level != self.levels.len() {
                return Err(format!(
                    "domain {} holds nodes above the deepest level",
                    dom.name()
                ));
            }
        }
        for (n, leaf) in self.leaves.iter().enumerate() {
            if let Some(l) = leaf
                && !self.domain(l.domain).nodes.contains(&(n as u32))
            {
                return Err(format!("node {n} is not listed in its domain"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(gpu: i64, used: i64) -> NodeState {
        NodeState {
            allocatable: Amounts::from_pairs(&[(4, gpu)]),
            requested: Amounts::from_pairs(&[(4, used)]),
            schedulable: true,
        }
    }

    /// 2 super-nodes × 2 cabinets × 2 hosts.
    fn small() -> Topology {
        let mut t = Topology::default();
        for n in 0..8u32 {
            let sn = format!("sn{}", n / 4);
            let cab = format!("cab{}", n / 2 % 2);
            let host = format!("h{n}");
            t.upsert_node(n, &[Some(&sn), Some(&cab), Some(&host)], st(8, 0));
        }
        t
    }

    #[test]
    fn builds_levels_and_aggregates() {
        let t = small();
        t.check_consistency().unwrap();
        let root = t.domain(t.root());
        assert_eq!(root.agg.free[4], 64);
        assert_eq!(root.agg.nodes, 8);
        let sns = t.domains_at(1, t.root());
        assert_eq!(sns.len(), 2);
        assert_eq!(t.domains_at(2, t.root()).len(), 4);
        assert_eq!(t.domains_at(3, sns[0]).len(), 4);
        assert_eq!(t.domain(sns[0]).agg.free[4], 32);
        // cab0 exists under both super-nodes as distinct domains.
        assert_eq!(t.domain_count(), 1 + 2 + 4 + 8);
        assert_eq!(t.level_of("strata.io/cabinet"), Some(2));
    }

    #[test]
    fn distance_counts_levels_to_the_common_domain() {
        let t = small();
        assert_eq!(t.distance(0, 0), Some(0));
        assert_eq!(t.distance(0, 1), Some(2)); // same cabinet, different hosts
        assert_eq!(t.distance(0, 2), Some(3)); // same super-node
        assert_eq!(t.distance(0, 7), Some(4)); // only the cluster
        assert_eq!(t.distance(0, 99), None);
    }

    #[test]
    fn updates_keep_sums_and_largest_slot() {
        let mut t = small();
        t.set_state(0, st(8, 8));
        t.set_state(1, st(8, 6));
        let cab = t.ancestor_at(0, 2).unwrap();
        assert_eq!(t.domain(cab).agg.free[4], 2);
        assert_eq!(t.domain(cab).agg.max_free[4], 2);
        t.set_state(
            1,
            NodeState {
                schedulable: false,
                ..st(8, 0)
            },
        );
        assert_eq!(t.domain(cab).agg.free[4], 0);
        assert_eq!(t.domain(cab).agg.schedulable_nodes, 1);
        assert_eq!(t.domain(cab).agg.max_free[4], 0);
        assert_eq!(t.domain(t.root()).agg.max_free[4], 8);
        t.check_consistency().unwrap();
    }

    #[test]
    fn relabelled_node_moves_and_empty_domains_vanish() {
        let mut t = small();
        let before = t.domain_count();
        // h7 moves to super-node sn0, cabinet cab9 (new).
        t.upsert_node(7, &[Some("sn0"), Some("cab9"), Some("h7")], st(8, 0));
        t.check_consistency().unwrap();
        // The old host domain went, a new cabinet and host domain came.
        assert_eq!(t.domain_count(), before + 1);
        let sn0 = t.ancestor_at(7, 1).unwrap();
        assert_eq!(t.domain(sn0).agg.nodes, 5);
        // Remove the others of sn1: it disappears.
        for n in 4..7 {
            t.remove_node(n);
        }
        t.check_consistency().unwrap();
        assert_eq!(t.domains_at(1, t.root()).len(), 1);
    }

    #[test]
    fn missing_label_is_a_domain_of_its_own() {
        let mut t = small();
        t.upsert_node(20, &[None, Some("cab0"), Some("h20")], st(8, 0));
        t.upsert_node(21, &[None, Some("cab0"), Some("h21")], st(8, 0));
        assert_ne!(t.ancestor_at(20, 1), t.ancestor_at(21, 1));
        assert_eq!(t.distance(20, 21), Some(4));
        t.check_consistency().unwrap();
    }
}
