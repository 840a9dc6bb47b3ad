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

/// Cached node-local results of one equivalence class under one profile.
pub(crate) struct ClassCache {
    pub profile: usize,
    pub equivalence: u64,
    /// Which filter plugins are the node-local ones (bit per profile filter).
    pub filter_mask: u64,
    /// Which score plugins are cached (bit per profile score plugin).
    pub score_mask: u64,
    /// Combined `node_local_key`s of the cached score plugins.
    pub score_key: u64,
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
    last_used: u64,
}

impl ClassCache {
    fn new(profile: usize, equivalence: u64, filter_mask: u64, n: usize) -> ClassCache {
        ClassCache {
            profile,
            equivalence,
            filter_mask,
            score_mask: 0,
            score_key: 0,
            filter_gen: vec![NEVER; n],
            verdict: vec![PASS; n],
            statuses: Vec::new(),
            score_gen: vec![NEVER; n],
            plain_total: vec![0; n],
            raw: Vec::new(),
            fast: FastIndex::default(),
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
    /// changed.
    pub fn set_score_mask(&mut self, mask: u64, key: u64, normalizing: usize, n: usize) {
        if self.score_mask != mask || self.score_key != key || self.raw.len() != normalizing {
            self.score_mask = mask;
            self.score_key = key;
            self.score_gen.iter_mut().for_each(|g| *g = NEVER);
            self.raw = vec![vec![0; n]; normalizing];
            self.fast.tree_valid = false;
        }
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

/// The per-class caches, least recently used evicted first.
pub(crate) struct EquivCaches {
    classes: Vec<ClassCache>,
    capacity: usize,
    clock: u64,
}

impl EquivCaches {
    pub fn new(capacity: usize) -> EquivCaches {
        EquivCaches {
            classes: Vec::new(),
            capacity,
            clock: 0,
        }
    }

    /// The cache of a class, created (evicting the least recently used) if
    /// absent. `n` is the node capacity of the snapshot.
    pub fn get(
        &mut self,
        profile: usize,
        equivalence: u64,
        filter_mask: u64,
        n: usize,
    ) -> &mut ClassCache {
        self.clock += 1;
        let pos = self.classes.iter().position(|c| {
            c.profile == profile && c.equivalence == equivalence && c.filter_mask == filter_mask
        });
        let idx = match pos {
            Some(i) => i,
            None => {
                let c = ClassCache::new(profile, equivalence, filter_mask, n);
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
        let c = &mut self.classes[idx];
        c.last_used = self.clock;
        c.fit(n);
        c
    }

    /// Whether caching is enabled.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }
}

/// A max-tree over node positions that also counts ties, so "a uniformly
/// random node among the best" is O(log n) instead of a scan.
#[derive(Default)]
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
    pub fn set(&mut self, pos: usize, v: i64) {
        let mut i = self.size + pos;
        self.max[i] = v;
        self.cnt[i] = u32::from(v != i64::MIN);
        while i > 1 {
            i /= 2;
            self.pull(i);
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
#[derive(Default)]
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
}

impl FastIndex {
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
