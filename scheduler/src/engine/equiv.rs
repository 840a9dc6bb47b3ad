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
    pub fn get(&mut self, profile: usize, equivalence: u64, filter_mask: u64, n: usize) -> &mut ClassCache {
        self.clock += 1;
        let pos = self
            .classes
            .iter()
            .position(|c| c.profile == profile && c.equivalence == equivalence && c.filter_mask == filter_mask);
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
