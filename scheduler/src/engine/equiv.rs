//! Reuse of per-node work across equivalent pods.
//!
//! Pods stamped from one template (same spec, labels, annotations and
//! namespace: [`PodInfo::equivalence`](crate::model::PodInfo)) get the same
//! answer from every node-local Filter and Score on a node that has not
//! changed. This cache keeps those answers per equivalence class and per
//! node, tagged with the node's generation; a cycle recomputes only the
//! nodes whose generation moved (usually the one node the previous pod
//! landed on). Plugins that look beyond one node (spreading, inter-pod
//! affinity, anything not declaring `is_node_local`) still run every cycle.
//!
//! Invariant: an entry is used only while `snapshot.generations()[node]`
//! equals the generation it was computed at; generations never repeat for a
//! node slot, so a stale entry can never be mistaken for a fresh one.

use crate::framework::Status;

/// Marks a node that passed every node-local filter.
pub(crate) const PASS: u32 = u32::MAX;
/// A generation no node has (entries start invalid).
const NEVER: u64 = u64::MAX;

/// Which filters of a profile are node-local in a cycle, and the signature
/// of their keys ([`FilterPlugin::node_local_verdict_key`](crate::framework::FilterPlugin)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct ClassKey {
    /// Bit per profile filter.
    pub mask: u64,
    /// The node-local filters' keys, combined.
    pub sig: u64,
    /// Whether none of those filters reads the pod's identity
    /// ([`FilterPlugin::node_local_reads_pod_identity`](crate::framework::FilterPlugin::node_local_reads_pod_identity)):
    /// the verdicts then hold for every pod of the same
    /// [`PodInfo::placement`](crate::model::PodInfo::placement).
    pub shared: bool,
}

/// Cached node-local results of one equivalence class under one profile.
#[derive(Clone)]
pub(crate) struct ClassCache {
    pub profile: usize,
    pub equivalence: u64,
    /// The pods' placement hash: classes of one placement share their
    /// node-local answers when the plugins allow it.
    pub placement: u64,
    /// Which filter plugins are the node-local ones, with their keys.
    pub filter_mask: ClassKey,
    /// Which score plugins are cached (bit per profile score plugin).
    pub score_mask: u64,
    /// Combined `node_local_key`s of the cached score plugins.
    pub score_key: u64,
    /// Whether none of the cached score plugins reads the pod's identity:
    /// the scores then hold for every class of the same placement.
    pub scores_shared: bool,
    /// Generation each node's filter result was computed at.
    pub filter_gen: Vec<u64>,
    /// `PASS` or an index into `statuses`.
    pub verdict: Vec<u32>,
    /// Distinct rejection statuses (few per class).
    pub statuses: Vec<Status>,
    /// Generation each node's scores were computed at.
    pub score_gen: Vec<u64>,
    /// Weighted sum of the cached scores that need no normalization.
    pub plain_total: Vec<i64>,
    /// Raw scores of cached plugins that normalize, one vector per plugin
    /// (in the order of `score_mask`'s normalizing plugins).
    pub raw: Vec<Vec<i64>>,
    /// The incremental index used when every filter and score is cached.
    pub fast: FastIndex,
    /// Fast-path cycles completed (a class's first one leaves a template,
    /// see [`EquivCaches::fast_cycle_done`]).
    fast_cycles: u64,
    /// The pods' [`rules_shape`]: which template fits the class best.
    shape: u64,
    last_used: u64,
}

impl ClassCache {
    fn new(
        profile: usize,
        equivalence: u64,
        placement: u64,
        filter_mask: ClassKey,
        n: usize,
    ) -> ClassCache {
        ClassCache {
            profile,
            equivalence,
            placement,
            filter_mask,
            score_mask: 0,
            score_key: 0,
            scores_shared: false,
            filter_gen: vec![NEVER; n],
            verdict: vec![PASS; n],
            statuses: Vec::new(),
            score_gen: vec![NEVER; n],
            plain_total: vec![0; n],
            raw: Vec::new(),
            fast: FastIndex::default(),
            fast_cycles: 0,
            shape: 0,
            last_used: 0,
        }
    }

    /// Grows the per-node vectors to `n` nodes.
    pub fn fit(&mut self, n: usize) {
        if self.filter_gen.len() < n {
            self.filter_gen.resize(n, NEVER);
            self.verdict.resize(n, PASS);
            self.score_gen.resize(n, NEVER);
            self.plain_total.resize(n, 0);
            for r in &mut self.raw {
                r.resize(n, 0);
            }
        }
    }

    /// Switches the set of cached score plugins, dropping scores if it
    /// changed. `shared`: none of them reads the pod's identity.
    pub fn set_score_mask(
        &mut self,
        mask: u64,
        key: u64,
        normalizing: usize,
        n: usize,
        shared: bool,
    ) {
        self.scores_shared = shared;
        if self.score_mask != mask || self.score_key != key || self.raw.len() != normalizing {
            self.score_mask = mask;
            self.score_key = key;
            self.score_gen.iter_mut().for_each(|g| *g = NEVER);
            self.raw = vec![vec![0; n]; normalizing];
            self.fast.tree_valid = false;
        }
    }

    /// A new class of `donor`'s placement (same profile and node-local
    /// filters, which allow sharing): it starts from the donor's verdicts,
    /// and from its scores when those are shareable too. Every entry keeps
    /// the node generation it was computed at, so stale ones are recomputed
    /// as usual; the class's incremental index starts empty.
    fn seeded(donor: &ClassCache, equivalence: u64, n: usize) -> ClassCache {
        let mut c = ClassCache::new(
            donor.profile,
            equivalence,
            donor.placement,
            donor.filter_mask,
            n,
        );
        c.filter_gen.clone_from(&donor.filter_gen);
        c.verdict.clone_from(&donor.verdict);
        c.statuses.clone_from(&donor.statuses);
        if donor.scores_shared {
            c.score_mask = donor.score_mask;
            c.score_key = donor.score_key;
            c.scores_shared = true;
            c.score_gen.clone_from(&donor.score_gen);
            c.plain_total.clone_from(&donor.plain_total);
            c.raw.clone_from(&donor.raw);
        }
        c.fit(n);
        c
    }

    /// Whether this class answers for `profile`'s pods of `placement`
    /// under the same node-local filters (the key of donors and
    /// templates).
    fn same_placement(&self, profile: usize, filter_mask: ClassKey, placement: u64) -> bool {
        self.profile == profile && self.filter_mask == filter_mask && self.placement == placement
    }

    /// Stores a rejection, returning its index.
    pub fn intern_status(&mut self, s: Status) -> u32 {
        if let Some(i) = self.statuses.iter().position(|x| *x == s) {
            return i as u32;
        }
        self.statuses.push(s);
        (self.statuses.len() - 1) as u32
    }
}

/// Templates kept (one per placement and rules shape, least recently used
/// dropped first).
const TEMPLATES: usize = 8;

/// A hash of the pod's inter-pod rules without their selectors and
/// namespaces: the kinds of terms, their topology keys and weights, the
/// spread constraints' keys, skews and policies. Deployments of one
/// placement and one shape keep the same per-domain layers and scores in
/// the fast path, so a template of one fits the next best; the choice only
/// affects how much a new class must catch up, never its answers.
pub(crate) fn rules_shape(pod: &crate::model::PodInfo) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    let a = &pod.spec.affinity;
    for terms in [&a.required, &a.required_anti] {
        terms.len().hash(&mut h);
        for t in terms {
            t.topology_key.hash(&mut h);
        }
    }
    for terms in [&a.preferred, &a.preferred_anti] {
        terms.len().hash(&mut h);
        for t in terms {
            (t.weight, t.term.topology_key).hash(&mut h);
        }
    }
    pod.spec.spread_constraints.len().hash(&mut h);
    for c in &pod.spec.spread_constraints {
        (
            c.max_skew,
            c.topology_key,
            c.when_unsatisfiable,
            c.min_domains,
        )
            .hash(&mut h);
        (c.node_affinity_policy, c.node_taints_policy).hash(&mut h);
    }
    h.finish()
}

/// The per-class caches, least recently used evicted first.
///
/// Besides the classes, it keeps *templates*: per placement, a copy of a
/// class as its first fast-path cycle left it, incremental index included.
/// A new Deployment's pods usually find the cluster as the previous
/// Deployment of the same shape found it (none of their own pods yet), so a
/// new class of that placement starts from the template and catches up with
/// the nodes changed since and the domains whose values differ, instead of
/// building its index over every node (see `docs/ARCHITECTURE.md`,
/// "Equivalence classes").
pub(crate) struct EquivCaches {
    classes: Vec<ClassCache>,
    capacity: usize,
    clock: u64,
    /// The class [`EquivCaches::get`] returned last.
    last: Option<usize>,
    templates: Vec<ClassCache>,
}

impl EquivCaches {
    pub fn new(capacity: usize) -> EquivCaches {
        EquivCaches {
            classes: Vec::new(),
            capacity,
            clock: 0,
            last: None,
            templates: Vec::new(),
        }
    }

    /// Called when a fast-path cycle chose a node: on the first such cycle
    /// of the class last returned by [`EquivCaches::get`], keeps a copy of
    /// it as its placement's template when its answers may be shared
    /// (node-local filters and scores that do not read the pod's identity).
    /// The copy is of the state before the chosen node is assumed, so it
    /// describes the cluster as this class's pods first found it.
    pub fn fast_cycle_done(&mut self) {
        let Some(i) = self.last else { return };
        let c = &mut self.classes[i];
        c.fast_cycles += 1;
        if c.fast_cycles != 1 || !c.filter_mask.shared || !c.scores_shared || !c.fast.valid {
            return;
        }
        let same = |t: &ClassCache| {
            t.same_placement(c.profile, c.filter_mask, c.placement) && t.shape == c.shape
        };
        let at = match self.templates.iter().position(same) {
            Some(k) => k,
            None if self.templates.len() < TEMPLATES => {
                self.templates.push(c.clone());
                return;
            }
            None => self
                .templates
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| t.last_used)
                .map_or(0, |(k, _)| k),
        };
        self.templates[at].clone_from(c);
    }

    /// The cache of a class, created (evicting the least recently used) if
    /// absent. `n` is the node capacity of the snapshot. A new class whose
    /// node-local filters allow sharing (`filter_mask.shared`) starts from
    /// the answers of the most recently used class of the same profile,
    /// filters and `placement`, if there is one.
    pub fn get(
        &mut self,
        profile: usize,
        equivalence: u64,
        placement: u64,
        filter_mask: ClassKey,
        n: usize,
        shape: impl FnOnce() -> u64,
    ) -> &mut ClassCache {
        self.clock += 1;
        let pos = self.classes.iter().position(|c| {
            c.profile == profile && c.equivalence == equivalence && c.filter_mask == filter_mask
        });
        let idx = match pos {
            Some(i) => i,
            None => {
                let shape = shape();
                // The template is taken, not copied: the class's first fast
                // cycle leaves a new one. Without one, the most recently
                // used class of the placement lends its answers.
                let template = if filter_mask.shared {
                    self.templates
                        .iter()
                        .position(|t| {
                            t.same_placement(profile, filter_mask, placement) && t.shape == shape
                        })
                        .map(|k| self.templates.swap_remove(k))
                } else {
                    None
                };
                let mut c = match template {
                    Some(mut c) => {
                        c.equivalence = equivalence;
                        c.fast_cycles = 0;
                        c
                    }
                    None => {
                        let donor = if filter_mask.shared {
                            self.classes
                                .iter()
                                .filter(|c| c.same_placement(profile, filter_mask, placement))
                                .max_by_key(|c| c.last_used)
                        } else {
                            None
                        };
                        match donor {
                            Some(d) => ClassCache::seeded(d, equivalence, n),
                            None => {
                                ClassCache::new(profile, equivalence, placement, filter_mask, n)
                            }
                        }
                    }
                };
                c.shape = shape;
                if self.classes.len() < self.capacity {
                    self.classes.push(c);
                    self.classes.len() - 1
                } else {
                    let (i, _) = self
                        .classes
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| c.last_used)
                        .expect("capacity is at least one");
                    self.classes[i] = c;
                    i
                }
            }
        };
        self.last = Some(idx);
        let c = &mut self.classes[idx];
        c.last_used = self.clock;
        c.fit(n);
        c
    }

    /// [`EquivCaches::get`] for `pod`'s class (its equivalence and
    /// placement hashes).
    pub fn class_of(
        &mut self,
        profile: usize,
        pod: &crate::model::PodInfo,
        filter_mask: ClassKey,
        n: usize,
    ) -> &mut ClassCache {
        self.get(
            profile,
            pod.equivalence,
            pod.placement,
            filter_mask,
            n,
            || rules_shape(pod),
        )
    }

    /// Whether caching is enabled.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }
}

/// A max-tree over node positions that also counts ties, so "a uniformly
/// random node among the best" is O(log n) instead of a scan.
#[derive(Clone, Default)]
pub(crate) struct MaxTree {
    size: usize,
    max: Vec<i64>,
    cnt: Vec<u32>,
}

impl MaxTree {
    /// Builds over `leaves` (`i64::MIN` marks an absent position).
    pub fn build(leaves: &[i64]) -> MaxTree {
        let size = leaves.len().next_power_of_two().max(1);
        let mut t = MaxTree {
            size,
            max: vec![i64::MIN; 2 * size],
            cnt: vec![0; 2 * size],
        };
        for (i, v) in leaves.iter().enumerate() {
            t.max[size + i] = *v;
            t.cnt[size + i] = u32::from(*v != i64::MIN);
        }
        for i in (1..size).rev() {
            t.pull(i);
        }
        t
    }

    fn pull(&mut self, i: usize) {
        let (l, r) = (2 * i, 2 * i + 1);
        let m = self.max[l].max(self.max[r]);
        self.max[i] = m;
        self.cnt[i] = if m == i64::MIN {
            0
        } else {
            (if self.max[l] == m { self.cnt[l] } else { 0 })
                + (if self.max[r] == m { self.cnt[r] } else { 0 })
        };
    }

    /// Number of leaf positions.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Sets position `pos` (must be below the built length).
    #[cfg(test)]
    pub fn set(&mut self, pos: usize, v: i64) {
        let mut i = self.size + pos;
        self.max[i] = v;
        self.cnt[i] = u32::from(v != i64::MIN);
        while i > 1 {
            i /= 2;
            self.pull(i);
        }
    }

    /// Sets position `pos` (below the built length) without bringing its
    /// ancestors up to date: [`MaxTree::repair`] must follow, given every
    /// position so set. Many leaves set this way share the work on their
    /// common ancestors (a zone's nodes flipping together).
    pub fn set_leaf(&mut self, pos: usize, v: i64) {
        let i = self.size + pos;
        self.max[i] = v;
        self.cnt[i] = u32::from(v != i64::MIN);
    }

    /// Brings the ancestors of `positions` up to date, each once.
    pub fn repair(&mut self, positions: &[usize]) {
        let mut level: Vec<usize> = positions.iter().map(|p| (self.size + p) / 2).collect();
        level.sort_unstable();
        level.dedup();
        // Every leaf is at the same depth, so each pass is one level.
        while let Some(&first) = level.first() {
            if first == 0 {
                break;
            }
            for &i in &level {
                self.pull(i);
            }
            level.iter_mut().for_each(|i| *i /= 2);
            level.dedup();
        }
    }

    /// The value at `pos`.
    pub fn leaf(&self, pos: usize) -> i64 {
        self.max[self.size + pos]
    }

    /// The best value and how many positions hold it.
    pub fn root(&self) -> (i64, u32) {
        (self.max[1], self.cnt[1])
    }

    /// The position of the `k`-th (from 0, in position order) leaf holding
    /// the root's value.
    pub fn kth_best(&self, mut k: u32) -> usize {
        let m = self.max[1];
        let mut i = 1;
        while i < self.size {
            let l = 2 * i;
            let in_left = if self.max[l] == m { self.cnt[l] } else { 0 };
            if k < in_left {
                i = l;
            } else {
                k -= in_left;
                i = l + 1;
            }
        }
        i - self.size
    }
}

/// An incrementally maintained view of one class's feasible nodes and best
/// scores, valid while nodes are only changed (not added or removed).
#[derive(Clone, Default)]
pub(crate) struct FastIndex {
    /// Whether the fields below describe the class.
    pub valid: bool,
    /// The snapshot layout the positions refer to.
    pub layout: u64,
    /// The change sequence already applied.
    pub synced: u64,
    /// Nodes passing the node-local filters, in live-position order.
    pub feasible: Vec<crate::model::NodeId>,
    /// Whether `tree` and `hist` are current for the score mask and key.
    pub tree_valid: bool,
    /// Per live position: the cached total, or `i64::MIN` if infeasible.
    pub tree: MaxTree,
    /// Per normalizing cached plugin: how many feasible nodes have each raw
    /// score (one key means the plugin cannot change the choice).
    pub hist: Vec<rustc_hash::FxHashMap<i64, u32>>,
    /// Nodes changed since the tree was last brought up to date.
    pub pending: Vec<crate::model::NodeId>,
    /// The per-domain verdicts of the filters that are not node-local (see
    /// [`DomainLayers`]); inactive when every filter is node-local.
    pub domains: DomainLayers,
    /// The scores kept by domain when some score is not node-local
    /// (`soft_scores.rs`); `tree` above is then not kept.
    pub soft: super::soft_scores::SoftIndex,
}

/// The fast path's memory of the per-domain filter verdicts
/// ([`FilterPlugin::domain_verdicts`](crate::framework::FilterPlugin)) of
/// one class: the layers last applied, each layer's nodes grouped by domain,
/// and per node how many layers it fails. A cycle compares the new verdicts
/// with the remembered ones and revisits only the nodes of domains whose
/// verdict flipped.
///
/// Invariants while `active`: `fails[slot]` is the number of layers in
/// `layers` that node slot fails; `feasible` (when `feasible_valid`) is the
/// nodes of [`FastIndex::feasible`] with `fails == 0`, in the same order.
#[derive(Clone, Default)]
pub(crate) struct DomainLayers {
    /// Whether the class's last fast-path cycle had layers.
    pub active: bool,
    /// The layers last applied.
    layers: Vec<crate::framework::DomainVerdict>,
    /// Per layer, CSR offsets by domain id into `members`.
    start: Vec<Vec<u32>>,
    /// Per layer, node slots sorted by domain id (slots without a domain
    /// are left out: they fail the layer whatever its verdicts).
    members: Vec<Vec<u32>>,
    /// Per node slot, how many layers it fails.
    pub fails: Vec<u32>,
    /// Nodes passing the node-local filters and every layer, in
    /// live-position order.
    pub feasible: Vec<crate::model::NodeId>,
    /// Whether `feasible` is current.
    pub feasible_valid: bool,
}

impl DomainLayers {
    /// Whether node slot `slot` passes every layer.
    #[inline]
    pub fn passes(&self, slot: usize) -> bool {
        !self.active || self.fails.get(slot).is_some_and(|f| *f == 0)
    }

    /// Applies `new` (non-empty) over node slots `0..capacity`. Returns the
    /// slots whose standing may have changed (`feasible` is then the
    /// caller's to bring up to date), or `None` when the node capacity
    /// changed: every node must then be re-evaluated. When the mappings,
    /// sizes or layer count changed, or the layers were inactive (every
    /// node passed), the layers are rebuilt and the slots returned are
    /// those whose standing differs from before.
    pub fn sync(
        &mut self,
        new: Vec<crate::framework::DomainVerdict>,
        capacity: usize,
    ) -> Option<Vec<u32>> {
        let same_shape = self.active
            && self.fails.len() == capacity
            && self.layers.len() == new.len()
            && self.layers.iter().zip(&new).all(|(a, b)| {
                std::sync::Arc::ptr_eq(&a.of_node, &b.of_node)
                    && a.pass.len() == b.pass.len()
                    && a.absent == b.absent
            });
        if !same_shape {
            let was_active = self.active;
            let before = std::mem::take(&mut self.fails);
            if was_active && before.len() != capacity {
                self.rebuild(new, capacity);
                return None;
            }
            self.rebuild(new, capacity);
            let failed_before = |s: usize| was_active && before[s] != 0;
            return Some(
                (0..capacity)
                    .filter(|&s| failed_before(s) != (self.fails[s] != 0))
                    .map(|s| s as u32)
                    .collect(),
            );
        }
        let mut changed = Vec::new();
        for (l, nl) in new.iter().enumerate() {
            let old = &self.layers[l].pass;
            if *old == nl.pass {
                continue;
            }
            // Chunks compare as memory; only differing ones are walked
            // (hostname layers have a domain per node, and one flips).
            const CHUNK: usize = 64;
            for (k, (oc, nc)) in old.chunks(CHUNK).zip(nl.pass.chunks(CHUNK)).enumerate() {
                if oc == nc {
                    continue;
                }
                for (j, (a, b)) in oc.iter().zip(nc).enumerate() {
                    if a == b {
                        continue;
                    }
                    let d = k * CHUNK + j;
                    let (lo, hi) = (self.start[l][d] as usize, self.start[l][d + 1] as usize);
                    for &m in &self.members[l][lo..hi] {
                        let f = &mut self.fails[m as usize];
                        if *b {
                            *f -= 1;
                        } else {
                            *f += 1;
                        }
                        changed.push(m);
                    }
                }
            }
        }
        self.layers = new;
        Some(changed)
    }

    fn rebuild(&mut self, new: Vec<crate::framework::DomainVerdict>, capacity: usize) {
        self.fails = vec![0; capacity];
        self.start.clear();
        self.members.clear();
        for layer in &new {
            let n = layer.pass.len();
            let mut start = vec![0u32; n + 1];
            for slot in 0..capacity {
                if !layer.passes(slot) {
                    self.fails[slot] += 1;
                }
                if let Some(&d) = layer.of_node.get(slot)
                    && (d as usize) < n
                {
                    start[d as usize + 1] += 1;
                }
            }
            for d in 0..n {
                start[d + 1] += start[d];
            }
            let mut next = start.clone();
            let mut members = vec![0u32; start[n] as usize];
            for slot in 0..capacity {
                if let Some(&d) = layer.of_node.get(slot)
                    && (d as usize) < n
                {
                    members[next[d as usize] as usize] = slot as u32;
                    next[d as usize] += 1;
                }
            }
            self.start.push(start);
            self.members.push(members);
        }
        self.layers = new;
        self.active = true;
        self.feasible_valid = false;
    }

    /// Forgets the layers (a cycle without any), returning the slots that
    /// failed them (they pass now).
    pub fn clear(&mut self) -> Vec<u32> {
        let failed = if self.active {
            (0..self.fails.len())
                .filter(|&s| self.fails[s] != 0)
                .map(|s| s as u32)
                .collect()
        } else {
            Vec::new()
        };
        *self = DomainLayers::default();
        failed
    }
}

impl FastIndex {
    /// The class's feasible nodes: the node-local ones, less those failing
    /// a domain layer when there are layers.
    pub fn candidates(&self) -> &[crate::model::NodeId] {
        if self.domains.active {
            &self.domains.feasible
        } else {
            &self.feasible
        }
    }

    /// [`FastIndex::candidates`], to take and put back.
    pub fn candidates_mut(&mut self) -> &mut Vec<crate::model::NodeId> {
        if self.domains.active {
            &mut self.domains.feasible
        } else {
            &mut self.feasible
        }
    }

    /// Whether the tree has a value at `pos`.
    pub fn tree_leaf_present(&self, pos: usize) -> bool {
        pos < self.tree.len() && self.tree.leaf(pos) != i64::MIN
    }

    /// Adds (`delta` = 1) or removes (-1) a raw value from a histogram.
    pub fn count(hist: &mut rustc_hash::FxHashMap<i64, u32>, v: i64, add: bool) {
        if add {
            *hist.entry(v).or_default() += 1;
        } else if let Some(c) = hist.get_mut(&v) {
            *c -= 1;
            if *c == 0 {
                hist.remove(&v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Leaves set in a batch and repaired once give the tree built
        /// from the same leaves.
        #[test]
        fn max_tree_batch_repair_equals_build(
            start in proptest::collection::vec(proptest::option::of(0i64..4), 1..40),
            sets in proptest::collection::vec((0usize..40, proptest::option::of(0i64..4)), 0..30),
        ) {
            let v = |x: Option<i64>| x.unwrap_or(i64::MIN);
            let mut leaves: Vec<i64> = start.iter().map(|x| v(*x)).collect();
            let mut t = MaxTree::build(&leaves);
            let mut touched = Vec::new();
            for (p, x) in &sets {
                let p = p % leaves.len();
                leaves[p] = v(*x);
                t.set_leaf(p, v(*x));
                touched.push(p);
            }
            t.repair(&touched);
            let fresh = MaxTree::build(&leaves);
            proptest::prop_assert_eq!(&t.max, &fresh.max);
            proptest::prop_assert_eq!(&t.cnt, &fresh.cnt);
        }
    }

    #[test]
    fn max_tree_counts_and_picks_ties() {
        let mut t = MaxTree::build(&[3, i64::MIN, 5, 5, 1]);
        assert_eq!(t.root(), (5, 2));
        assert_eq!(t.kth_best(0), 2);
        assert_eq!(t.kth_best(1), 3);
        t.set(0, 5);
        assert_eq!(t.root(), (5, 3));
        assert_eq!(t.kth_best(0), 0);
        t.set(2, i64::MIN);
        t.set(3, 2);
        assert_eq!(t.root(), (5, 1));
        t.set(0, i64::MIN);
        assert_eq!(t.root(), (3 - 1, 1));
    }
}

#[cfg(test)]
mod sharing_tests {
    use super::*;
    use crate::model::{NodeId, PodInfo};

    /// A pod of service `app` with a hostname anti-affinity (`hard` or
    /// preferred) and a zone spread on key `zone_key`.
    fn service(app: &str, hard: bool, zone_key: &str) -> PodInfo {
        let term = serde_json::json!({"topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app": app}}});
        let anti = if hard {
            serde_json::json!({"requiredDuringSchedulingIgnoredDuringExecution": [term]})
        } else {
            serde_json::json!({"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term}]})
        };
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": app, "namespace": app, "labels": {"app": app}},
            "spec": {
                "containers": [{"name": "c"}],
                "affinity": {"podAntiAffinity": anti},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": zone_key,
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app": app}}}]
            }
        }))
        .expect("a valid pod");
        PodInfo::compile(&pod).expect("compiles")
    }

    /// Services that differ only in their selectors (and names) share a
    /// rules shape; a required term instead of a preferred one, or another
    /// topology key, does not.
    #[test]
    fn rules_shape_leaves_out_selectors_but_not_kinds_or_keys() {
        let a = service("a", false, "zone");
        assert_eq!(rules_shape(&a), rules_shape(&service("b", false, "zone")));
        assert_ne!(rules_shape(&a), rules_shape(&service("a", true, "zone")));
        assert_ne!(rules_shape(&a), rules_shape(&service("a", false, "region")));
    }

    fn key(shared: bool) -> ClassKey {
        ClassKey {
            mask: 0b11,
            sig: 7,
            shared,
        }
    }

    /// Fills a class's answers as if every node had been evaluated at
    /// generation 1.
    fn fill(c: &mut ClassCache, shared_scores: bool) {
        c.set_score_mask(0b1, 5, 1, 4, shared_scores);
        for i in 0..4 {
            c.filter_gen[i] = 1;
            c.score_gen[i] = 1;
            c.plain_total[i] = 10 + i as i64;
            c.raw[0][i] = i as i64;
        }
        c.verdict[2] = c.intern_status(Status::unschedulable("full"));
    }

    #[test]
    fn a_new_class_of_the_same_placement_starts_from_the_shared_answers() {
        let mut caches = EquivCaches::new(4);
        fill(caches.get(0, 100, 9, key(true), 4, || 0), true);
        let c = caches.get(0, 200, 9, key(true), 4, || 0);
        assert_eq!(c.equivalence, 200);
        assert_eq!(c.filter_gen, vec![1; 4]);
        assert_eq!(c.verdict[2], 0);
        assert_eq!(c.statuses, vec![Status::unschedulable("full")]);
        assert_eq!((c.score_mask, c.score_key), (0b1, 5));
        assert_eq!(c.score_gen, vec![1; 4]);
        assert_eq!(c.plain_total, vec![10, 11, 12, 13]);
        // The same score plugins keep the seeded scores; others drop them.
        c.set_score_mask(0b1, 5, 1, 4, true);
        assert_eq!(c.score_gen, vec![1; 4]);
        c.set_score_mask(0b11, 5, 1, 4, true);
        assert_eq!(c.score_gen, vec![NEVER; 4]);
        // The incremental index is the new class's own.
        assert!(!c.fast.valid);
    }

    #[test]
    fn answers_are_not_shared_across_placements_filters_or_identity_readers() {
        let mut caches = EquivCaches::new(8);
        fill(caches.get(0, 100, 9, key(true), 4, || 0), true);
        // Another placement, another profile, other filters.
        assert_eq!(
            caches.get(0, 201, 8, key(true), 4, || 0).filter_gen,
            vec![NEVER; 4]
        );
        assert_eq!(
            caches.get(1, 202, 9, key(true), 4, || 0).filter_gen,
            vec![NEVER; 4]
        );
        let other = ClassKey {
            sig: 8,
            ..key(true)
        };
        assert_eq!(
            caches.get(0, 203, 9, other, 4, || 0).filter_gen,
            vec![NEVER; 4]
        );
        // Filters that read the pod's identity.
        fill(caches.get(0, 300, 9, key(false), 4, || 0), true);
        assert_eq!(
            caches.get(0, 301, 9, key(false), 4, || 0).filter_gen,
            vec![NEVER; 4]
        );
        // Verdicts shared, scores not when a score plugin reads identity.
        fill(caches.get(0, 400, 7, key(true), 4, || 0), false);
        let c = caches.get(0, 401, 7, key(true), 4, || 0);
        assert_eq!(c.filter_gen, vec![1; 4]);
        assert_eq!(c.score_gen, vec![NEVER; 4]);
        assert_eq!(c.score_mask, 0);
    }

    #[test]
    fn the_first_fast_cycle_of_a_class_leaves_its_placements_template() {
        let mut caches = EquivCaches::new(8);
        let c = caches.get(0, 100, 9, key(true), 4, || 0);
        fill(c, true);
        c.fast.valid = true;
        c.fast.synced = 41;
        c.fast.feasible = vec![NodeId(0), NodeId(1), NodeId(3)];
        caches.fast_cycle_done();
        // Later cycles of the class do not overwrite the template.
        let c = caches.get(0, 100, 9, key(true), 4, || 0);
        c.fast.synced = 50;
        c.fast.feasible.pop();
        caches.fast_cycle_done();
        let c = caches.get(0, 200, 9, key(true), 4, || 0);
        assert_eq!(c.equivalence, 200);
        assert!(c.fast.valid);
        assert_eq!(c.fast.synced, 41, "the state the first cycle left");
        assert_eq!(c.fast.feasible, vec![NodeId(0), NodeId(1), NodeId(3)]);
        assert_eq!(c.plain_total, vec![10, 11, 12, 13]);
        // That class's own first cycle replaces the template.
        c.fast.synced = 60;
        caches.fast_cycle_done();
        assert_eq!(caches.get(0, 300, 9, key(true), 4, || 0).fast.synced, 60);
        // Pods whose inter-pod rules have another shape start afresh.
        assert!(!caches.get(0, 350, 9, key(true), 4, || 1).fast.valid);
        // No template for another placement, or when scores read identity.
        assert!(!caches.get(0, 400, 8, key(true), 4, || 0).fast.valid);
        let c = caches.get(0, 500, 7, key(true), 4, || 0);
        fill(c, false);
        c.fast.valid = true;
        caches.fast_cycle_done();
        assert!(!caches.get(0, 501, 7, key(true), 4, || 0).fast.valid);
    }
}

#[cfg(test)]
mod domain_layer_tests {
    use super::*;
    use crate::framework::DomainVerdict;
    use proptest::prelude::*;
    use std::sync::Arc;

    const SLOTS: usize = 12;

    /// Per layer: domain of each slot (`None`: no domain) and whether
    /// nodes without a domain pass.
    type Shape = Vec<(Vec<Option<u8>>, bool)>;

    fn shape() -> impl Strategy<Value = Shape> {
        prop::collection::vec(
            (
                prop::collection::vec(prop::option::weighted(0.8, 0u8..4), SLOTS),
                any::<bool>(),
            ),
            1..3,
        )
    }

    fn layers(maps: &[Arc<Vec<u32>>], absent: &[bool], pass: &[Vec<bool>]) -> Vec<DomainVerdict> {
        maps.iter()
            .zip(absent)
            .zip(pass)
            .map(|((m, a), p)| DomainVerdict {
                of_node: m.clone(),
                pass: p.clone(),
                absent: *a,
            })
            .collect()
    }

    proptest! {
        /// Through any sequence of verdicts on fixed mappings, the
        /// incrementally kept failure counts equal a fresh build's, and
        /// every slot whose standing changed is reported.
        #[test]
        fn sync_matches_rebuild(
            shape in shape(),
            steps in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<bool>(), 4), 3), 1..12),
        ) {
            let maps: Vec<Arc<Vec<u32>>> = shape
                .iter()
                .map(|(m, _)| Arc::new(m.iter().map(|d| d.map_or(DomainVerdict::NO_DOMAIN, u32::from)).collect()))
                .collect();
            let absent: Vec<bool> = shape.iter().map(|(_, a)| *a).collect();
            let mut kept = DomainLayers::default();
            for (i, pass) in steps.iter().enumerate() {
                let pass = &pass[..maps.len()];
                let before: Vec<bool> = (0..SLOTS).map(|s| kept.passes(s)).collect();
                let changed = kept.sync(layers(&maps, &absent, pass), SLOTS);
                let mut fresh = DomainLayers::default();
                let from_nothing = fresh.sync(layers(&maps, &absent, pass), SLOTS);
                prop_assert_eq!(&kept.fails, &fresh.fails, "step {}", i);
                // From no layers (every slot passed), the failing slots.
                let failing: Vec<u32> = (0..SLOTS as u32).filter(|s| fresh.fails[*s as usize] != 0).collect();
                prop_assert_eq!(from_nothing, Some(failing));
                let changed = changed.expect("same capacity");
                for (s, was) in before.iter().enumerate() {
                    let want = layers(&maps, &absent, pass).iter().all(|l| l.passes(s));
                    prop_assert_eq!(kept.passes(s), want);
                    if *was != want {
                        prop_assert!(changed.contains(&(s as u32)), "step {} slot {}", i, s);
                    }
                }
            }
            // Forgetting the layers reports the slots that failed them.
            let before: Vec<bool> = (0..SLOTS).map(|s| kept.passes(s)).collect();
            let freed = kept.clear();
            for (s, was) in before.iter().enumerate() {
                prop_assert!(kept.passes(s));
                prop_assert_eq!(freed.contains(&(s as u32)), !*was);
            }
        }

        /// When the mappings change between cycles (another shape), the
        /// rebuilt layers report every slot whose standing changed.
        #[test]
        fn a_new_shape_reports_the_slots_that_changed(
            a in shape(),
            b in shape(),
            pass in prop::collection::vec(prop::collection::vec(any::<bool>(), 4), 3),
        ) {
            let of = |shape: &Shape| -> (Vec<Arc<Vec<u32>>>, Vec<bool>) {
                (
                    shape
                        .iter()
                        .map(|(m, _)| Arc::new(m.iter().map(|d| d.map_or(DomainVerdict::NO_DOMAIN, u32::from)).collect()))
                        .collect(),
                    shape.iter().map(|(_, x)| *x).collect(),
                )
            };
            let (ma, xa) = of(&a);
            let (mb, xb) = of(&b);
            let mut kept = DomainLayers::default();
            kept.sync(layers(&ma, &xa, &pass[..ma.len()]), SLOTS);
            let before: Vec<bool> = (0..SLOTS).map(|s| kept.passes(s)).collect();
            let changed = kept.sync(layers(&mb, &xb, &pass[..mb.len()]), SLOTS).expect("same capacity");
            for (s, was) in before.iter().enumerate() {
                let want = layers(&mb, &xb, &pass[..mb.len()]).iter().all(|l| l.passes(s));
                prop_assert_eq!(kept.passes(s), want);
                prop_assert_eq!(changed.contains(&(s as u32)), *was != want, "slot {}", s);
            }
        }
    }
}
