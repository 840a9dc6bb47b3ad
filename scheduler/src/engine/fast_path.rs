//! The equivalence fast path: a cycle's use of the per-class caches of
//! [`equiv`](super::equiv).
//!
//! - [`Scheduler::fast_path`]: for a pod whose every active filter is
//!   node-local, the class's feasible set and best scores are kept across
//!   cycles and brought up to date with the nodes changed since;
//! - [`Scheduler::find_feasible_cached`]: otherwise, node-local filter
//!   verdicts are reused on nodes whose generation did not move;
//! - [`cached_scores`] and [`refresh_scores`]: the same for node-local
//!   scores, used by the scan path's scoring.
//!
//! Both paths pick exactly the node the plain scan would (same order, same
//! random draw); `cycle.rs` decides which one runs.

use super::Scheduler;
use super::cycle::{FilterOutcome, filter_node};
use super::equiv::ClassKey;
use super::profile::Profile;
use super::soft_scores::{self, DomainScored};
use crate::framework::{CycleState, Diagnosis, FilterPlugin, Status};
use crate::model::{NodeId, PodInfo};

/// What the incremental path decided.
pub(super) enum Fast {
    /// The node to assume.
    Chosen(NodeId),
    /// A plugin failed.
    Error(String),
    /// Take the scan path (nothing was decided yet; PreScore did not run).
    Fallback,
}

/// The fast path scores the candidates by a scan, not through the soft
/// index, when they are at most this fraction (1/N) of the nodes.
const FEW_CANDIDATES: usize = 8;

/// A filter plugin with its name.
type NamedFilter<'a> = (&'static str, &'a dyn FilterPlugin);

/// The profile's active (not skipped) filters, split into node-local and
/// other ones, with the bit mask of the node-local ones' positions and a
/// signature of their keys
/// ([`FilterPlugin::node_local_verdict_key`]): with the pod's equivalence,
/// the class cache's key.
fn split_filters<'a>(
    profile: &'a Profile,
    state: &CycleState,
) -> (Vec<NamedFilter<'a>>, Vec<NamedFilter<'a>>, ClassKey) {
    let mut local = Vec::new();
    let mut global = Vec::new();
    let (mut mask, mut sig, mut shared) = (0u64, 0u64, true);
    for (i, p) in profile.filter.iter().enumerate() {
        if state.skips_filter(p.name()) {
            continue;
        }
        let Some(f) = p.as_filter() else { continue };
        match f.node_local_verdict_key(state) {
            Some(k) => {
                mask |= 1 << i;
                sig = sig.rotate_left(7) ^ k ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                shared &= !f.node_local_reads_pod_identity();
                local.push((p.name(), f));
            }
            None => global.push((p.name(), f)),
        }
    }
    (local, global, ClassKey { mask, sig, shared })
}

/// Recomputes node `id`'s node-local filter verdict in a class cache if it
/// was computed at another generation than `generation`.
fn refresh_verdict(
    cc: &mut super::equiv::ClassCache,
    id: NodeId,
    generation: u64,
    snap: &crate::cache::Snapshot,
    local: &[(&'static str, &dyn FilterPlugin)],
    state: &CycleState,
    pod: &PodInfo,
) {
    let i = id.index();
    if cc.filter_gen[i] == generation {
        return;
    }
    let node = snap.node(id);
    let s = if node.present {
        filter_node(local, state, pod, node)
    } else {
        Status::unresolvable("node(s) were not found")
    };
    cc.verdict[i] = if s.is_success() {
        super::equiv::PASS
    } else {
        cc.intern_status(s)
    };
    cc.filter_gen[i] = generation;
}

/// A cached score plugin: name, plugin and weight.
pub(super) type CachedScore<'a> = (&'static str, &'a dyn crate::framework::ScorePlugin, i64);

/// The active score plugins whose per-node scores may be cached (they
/// declare a `node_local_key`): the list, their position mask, a signature
/// of their keys, and whether any active score plugin is not cacheable.
pub(super) fn cached_scores<'a>(
    profile: &'a Profile,
    state: &CycleState,
) -> (Vec<CachedScore<'a>>, u64, u64, bool) {
    let mut cached = Vec::new();
    let (mut mask, mut key_sig, mut uncached) = (0u64, 0u64, false);
    for (i, (p, w)) in profile.score.iter().enumerate() {
        if state.skips_score(p.name()) {
            continue;
        }
        let Some(sp) = p.as_score() else { continue };
        match sp.node_local_key(state) {
            Some(k) => {
                mask |= 1 << i;
                key_sig =
                    key_sig.rotate_left(7) ^ k ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                cached.push((p.name(), sp, *w));
            }
            None => uncached = true,
        }
    }
    (cached, mask, key_sig, uncached)
}

/// Whether no cached score plugin reads the pod's identity, so the scores
/// may be handed to another class of the same placement.
pub(super) fn scores_shareable(cached: &[CachedScore<'_>]) -> bool {
    cached
        .iter()
        .all(|(_, sp, _)| !sp.node_local_reads_pod_identity())
}

/// Recomputes node `id`'s cached scores in a class cache if they were
/// computed at another generation: the weighted sum of the plugins that do
/// not normalize, and the raw scores of those that do.
pub(super) fn refresh_scores(
    cc: &mut super::equiv::ClassCache,
    id: NodeId,
    generation: u64,
    snap: &crate::cache::Snapshot,
    cached: &[CachedScore<'_>],
    state: &CycleState,
    pod: &PodInfo,
) -> Result<(), String> {
    let i = id.index();
    if cc.score_gen[i] == generation {
        return Ok(());
    }
    let node = snap.node(id);
    let mut plain = 0i64;
    let mut k = 0;
    for (name, sp, w) in cached {
        let raw = sp
            .score(state, pod, node)
            .map_err(|s| format!("running Score plugin {name}: {}", s.message()))?;
        if sp.has_normalize() {
            cc.raw[k][i] = raw;
            k += 1;
        } else {
            plain += raw * w;
        }
    }
    cc.plain_total[i] = plain;
    cc.score_gen[i] = generation;
    Ok(())
}

/// Brings a class's domain layers up to date with this cycle's verdicts
/// (`layers`, empty when every active filter is node-local), given the nodes
/// whose node-local verdict was re-read (`None`: every node), and marks the
/// nodes whose standing changed as pending for the tree.
fn sync_domains(
    cc: &mut super::equiv::ClassCache,
    layers: Vec<crate::framework::DomainVerdict>,
    touched: Option<Vec<NodeId>>,
    snap: &crate::cache::Snapshot,
) {
    use super::equiv::PASS;
    let fast = &mut cc.fast;
    if layers.is_empty() {
        if fast.domains.active {
            // The nodes the layers masked are feasible again.
            let failed = fast.domains.clear();
            fast.pending.extend(failed.into_iter().map(NodeId));
        }
        return;
    }
    let mut touched = touched;
    match fast.domains.sync(layers, snap.node_capacity()) {
        None => {
            fast.tree_valid = false;
            fast.soft.valid = false;
        }
        Some(flipped) if !flipped.is_empty() => {
            // A few nodes (a hostname domain): update the list in place;
            // many (a zone): rebuild it.
            if let Some(t) = &mut touched
                && t.len() + flipped.len() <= 64
            {
                t.extend(flipped.iter().map(|s| NodeId(*s)));
                t.sort_unstable();
                t.dedup();
            } else {
                fast.domains.feasible_valid = false;
            }
            fast.pending.extend(flipped.into_iter().map(NodeId));
        }
        Some(_) => {}
    }
    let d = &mut fast.domains;
    match touched {
        Some(ch) if d.feasible_valid => {
            for id in ch {
                let Some(pos) = snap.live_position(id) else {
                    continue;
                };
                let pass = cc.verdict[id.index()] == PASS && d.passes(id.index());
                let at = d
                    .feasible
                    .binary_search_by_key(&pos, |x| snap.live_position(*x).unwrap_or(usize::MAX));
                match (pass, at) {
                    (true, Err(k)) => d.feasible.insert(k, id),
                    (false, Ok(k)) => {
                        d.feasible.remove(k);
                    }
                    _ => {}
                }
            }
        }
        _ => {
            keep_passing(&fast.feasible, &d.fails, &mut d.feasible);
            d.feasible_valid = true;
        }
    }
}

/// Sets `out` to the nodes of `feasible` that fail no layer (`fails` by
/// node slot; a slot past its end fails), in the same order. A zone's
/// verdict flipping rebuilds the list this way; zones interleave in
/// position order, so the copy is branch-free rather than a filter whose
/// branch mispredicts.
fn keep_passing(feasible: &[NodeId], fails: &[u32], out: &mut Vec<NodeId>) {
    out.clear();
    out.resize(feasible.len(), NodeId(0));
    let mut k = 0;
    for &id in feasible {
        out[k] = id;
        k += usize::from(fails.get(id.index()).is_some_and(|f| *f == 0));
    }
    out.truncate(k);
}

/// The live positions of `pending` (nodes changed since the tree was last
/// brought up to date), each once and in ascending order. A zone's
/// verdict flipping makes a thousand nodes pending at once, often with
/// repeats; a bitmap over positions sorts and deduplicates them in one
/// pass, and [`MaxTree::repair`](super::equiv::MaxTree::repair) then finds
/// them already sorted.
fn pending_positions(pending: &[NodeId], snap: &crate::cache::Snapshot) -> Vec<usize> {
    let positions = pending.iter().filter_map(|id| snap.live_position(*id));
    if pending.len() < 64 {
        let mut set: Vec<usize> = positions.collect();
        set.sort_unstable();
        set.dedup();
        return set;
    }
    let mut bits = vec![0u64; snap.num_nodes().div_ceil(64)];
    for pos in positions {
        if let Some(w) = bits.get_mut(pos / 64) {
            *w |= 1 << (pos % 64);
        }
    }
    let mut set = Vec::with_capacity(pending.len());
    for (w, &word) in bits.iter().enumerate() {
        let mut word = word;
        while word != 0 {
            set.push(w * 64 + word.trailing_zeros() as usize);
            word &= word - 1;
        }
    }
    set
}

impl Scheduler {
    /// The incremental path for a pod whose every active filter is
    /// node-local: the class's feasible set and best scores are kept across
    /// cycles and brought up to date with the nodes changed since, so a cycle
    /// costs O(changed nodes × log n) instead of O(n). It picks exactly the
    /// node the scan path would (same order, same random draw), and falls
    /// back to the scan whenever that cannot be guaranteed.
    pub(super) fn fast_path(&mut self, pi: usize, state: &mut CycleState, pod: &PodInfo) -> Fast {
        use super::equiv::{FastIndex, MaxTree, PASS};
        let profile = &self.profiles[pi];
        let snap = self.cache.snapshot();
        let gens = snap.generations();
        let (local, global, mask) = split_filters(profile, state);
        // Filters that are not node-local take part only through their
        // per-domain verdicts.
        let mut layers = Vec::new();
        for (_, f) in &global {
            match f.domain_verdicts(state) {
                Some(v) => layers.extend(v),
                None => return Fast::Fallback,
            }
        }
        let cc = self.equiv.class_of(pi, pod, mask, snap.node_capacity());
        let refresh = |cc: &mut super::equiv::ClassCache, id: NodeId| {
            refresh_verdict(cc, id, gens[id.index()], snap, &local, state, pod);
        };
        let changes = if cc.fast.valid && cc.fast.layout == snap.layout_version() {
            snap.changes_since(cc.fast.synced)
        } else {
            None
        };
        // Nodes whose node-local verdict was re-read (`None`: all).
        let mut touched: Option<Vec<NodeId>> = None;
        match changes {
            None => {
                for &id in snap.node_ids() {
                    refresh(cc, id);
                }
                cc.fast.feasible = snap
                    .node_ids()
                    .iter()
                    .copied()
                    .filter(|id| cc.verdict[id.index()] == PASS)
                    .collect();
                cc.fast.valid = true;
                cc.fast.layout = snap.layout_version();
                cc.fast.tree_valid = false;
                cc.fast.soft.valid = false;
                cc.fast.pending.clear();
            }
            Some(ch) => {
                let mut ch = ch.to_vec();
                ch.sort_unstable();
                ch.dedup();
                for &id in &ch {
                    let Some(pos) = snap.live_position(id) else {
                        continue;
                    };
                    refresh(cc, id);
                    let pass = cc.verdict[id.index()] == PASS;
                    let at = cc.fast.feasible.binary_search_by_key(&pos, |x| {
                        snap.live_position(*x).unwrap_or(usize::MAX)
                    });
                    match (pass, at) {
                        (true, Err(k)) => cc.fast.feasible.insert(k, id),
                        (false, Ok(k)) => {
                            cc.fast.feasible.remove(k);
                        }
                        _ => {}
                    }
                    cc.fast.pending.push(id);
                }
                touched = Some(ch);
            }
        }
        cc.fast.synced = snap.change_seq();
        sync_domains(cc, layers, touched, snap);
        if cc.fast.candidates().len() < 2 {
            // Nothing fits (the scan builds the diagnosis) or one node does.
            return Fast::Fallback;
        }

        // PreScore, then the scores: cached ones only, or scan.
        let feasible = std::mem::take(cc.fast.candidates_mut());
        let pre = self.run_pre_score(pi, state, pod, &feasible);
        let cc = self.equiv.class_of(pi, pod, mask, snap.node_capacity());
        *cc.fast.candidates_mut() = feasible;
        if let Err(e) = pre {
            return Fast::Error(e);
        }
        let st: &CycleState = state;
        let (cached, score_mask, key_sig, uncached) = cached_scores(profile, st);
        let normalizing = cached
            .iter()
            .filter(|(_, sp, _)| sp.has_normalize())
            .count();
        cc.set_score_mask(
            score_mask,
            key_sig,
            normalizing,
            snap.node_capacity(),
            scores_shareable(&cached),
        );
        let rescore = |cc: &mut super::equiv::ClassCache, id: NodeId| {
            refresh_scores(cc, id, gens[id.index()], snap, &cached, st, pod)
        };
        if uncached {
            // Scores that are not node-local: kept by domain when every one
            // of them can say what it depends on.
            let mut domain: Vec<DomainScored<'_>> = Vec::new();
            let mut answers = Vec::new();
            let mut sig = score_mask ^ key_sig.rotate_left(17);
            // Few candidates (a small part of the cluster, as one zone under
            // required zone affinity): scoring them all costs less than
            // keeping the soft index, where a domain's change would make
            // most of them pending every cycle.
            let few = cc.fast.candidates().len().saturating_mul(FEW_CANDIDATES) <= snap.num_nodes();
            let mut by_domain = !few;
            for (i, (p, w)) in profile.score.iter().enumerate() {
                if few {
                    break;
                }
                if st.skips_score(p.name()) {
                    continue;
                }
                let Some(sp) = p.as_score() else { continue };
                if sp.node_local_key(st).is_some() {
                    continue;
                }
                match sp.domain_scores(st) {
                    Some(a) => {
                        sig =
                            sig.rotate_left(7) ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        domain.push((p.name(), sp, *w));
                        answers.push(a);
                    }
                    None => {
                        by_domain = false;
                        break;
                    }
                }
            }
            if by_domain {
                let inputs = soft_scores::Inputs {
                    snap,
                    cached: &cached,
                    domain: &domain,
                    answers,
                    sig,
                    state: st,
                    pod,
                };
                match soft_scores::update(cc, inputs) {
                    Err(e) => return Fast::Error(e),
                    Ok(true) => {
                        let tree = &cc.fast.soft.tree;
                        let (best, count) = tree.root();
                        if best != i64::MIN && count > 0 {
                            let pick = if count > 1 {
                                self.rng.below(u64::from(count)) as u32
                            } else {
                                0
                            };
                            return Fast::Chosen(snap.node_ids()[tree.kth_best(pick)]);
                        }
                    }
                    // A node-local score that normalizes varies: scan.
                    Ok(false) => {}
                }
            }
            // Some score needs every node each cycle, or few candidates:
            // scan the scores over the feasible set we maintained. The
            // domain-scored index does not follow this cycle; it keeps its
            // pending nodes for its next use (a zone's last free domain
            // under a hard spread is scanned, then every zone opens again),
            // unless those pile up past a quarter of the nodes in a class
            // that keeps scanning: rebuilding then costs less. The plain
            // tree starts over: the scan refreshes stale scores, and its
            // histograms of normalizing scores count the values they had.
            let feasible = cc.fast.candidates().to_vec();
            cc.fast.tree_valid = false;
            if !cc.fast.soft.valid || cc.fast.pending.len() > snap.num_nodes() / 4 {
                cc.fast.soft.valid = false;
                cc.fast.pending.clear();
            }
            return match self.score_and_pick(pi, st, pod, &feasible, Some(mask), &[]) {
                Ok(n) => Fast::Chosen(n),
                Err(e) => Fast::Error(e),
            };
        }
        let live_len = snap.num_nodes();
        // This tree takes the pending nodes; the domain-scored one does not.
        cc.fast.soft.valid = false;
        if !cc.fast.tree_valid || cc.fast.tree.len() < live_len {
            let feasible = std::mem::take(cc.fast.candidates_mut());
            for &id in &feasible {
                if let Err(e) = rescore(cc, id) {
                    *cc.fast.candidates_mut() = feasible;
                    return Fast::Error(e);
                }
            }
            let mut leaves = vec![i64::MIN; live_len];
            let mut hist = vec![rustc_hash::FxHashMap::default(); normalizing];
            for &id in &feasible {
                if let Some(pos) = snap.live_position(id) {
                    leaves[pos] = cc.plain_total[id.index()];
                }
                for (k, h) in hist.iter_mut().enumerate() {
                    FastIndex::count(h, cc.raw[k][id.index()], true);
                }
            }
            *cc.fast.candidates_mut() = feasible;
            cc.fast.tree = MaxTree::build(&leaves);
            cc.fast.hist = hist;
            cc.fast.tree_valid = true;
            cc.fast.pending.clear();
        } else {
            let pending = std::mem::take(&mut cc.fast.pending);
            // Leaves set now, their ancestors repaired once at the end.
            let set = pending_positions(&pending, snap);
            for &pos in &set {
                let id = snap.node_ids()[pos];
                let was_counted = cc.fast.tree_leaf_present(pos);
                if was_counted {
                    for k in 0..normalizing {
                        let v = cc.raw[k][id.index()];
                        FastIndex::count(&mut cc.fast.hist[k], v, false);
                    }
                }
                if cc.verdict[id.index()] == PASS && cc.fast.domains.passes(id.index()) {
                    if let Err(e) = rescore(cc, id) {
                        cc.fast.tree_valid = false;
                        return Fast::Error(e);
                    }
                    for k in 0..normalizing {
                        let v = cc.raw[k][id.index()];
                        FastIndex::count(&mut cc.fast.hist[k], v, true);
                    }
                    let v = cc.plain_total[id.index()];
                    cc.fast.tree.set_leaf(pos, v);
                } else {
                    cc.fast.tree.set_leaf(pos, i64::MIN);
                }
            }
            cc.fast.tree.repair(&set);
        }
        if cc.fast.hist.iter().any(|h| h.len() > 1) {
            // A normalizing score varies across nodes: take the scan, which
            // normalizes.
            let feasible = cc.fast.candidates().to_vec();
            return match self.score_and_pick(pi, st, pod, &feasible, Some(mask), &[]) {
                Ok(n) => Fast::Chosen(n),
                Err(e) => Fast::Error(e),
            };
        }
        let (best, count) = cc.fast.tree.root();
        if best == i64::MIN || count == 0 {
            return Fast::Fallback;
        }
        let pick = if count > 1 {
            self.rng.below(u64::from(count)) as u32
        } else {
            0
        };
        let pos = cc.fast.tree.kth_best(pick);
        Fast::Chosen(snap.node_ids()[pos])
    }

    /// Whether this cycle may use the equivalence cache: every node is
    /// evaluated, and no pod is nominated (nominated pods make results depend
    /// on more than one node's state).
    pub(super) fn cache_usable(&self, pi: usize, pod: &PodInfo) -> bool {
        self.equiv.enabled()
            && pod.equivalence != 0
            && self.profiles[pi].percentage_of_nodes_to_score >= 100
            && self.profiles[pi].filter.len() <= 64
            && self.profiles[pi].score.len() <= 64
            && !self
                .nominated
                .values()
                .any(|(p, _)| p.priority >= pod.priority && p.uid != pod.uid)
    }

    /// Filtering through the equivalence cache: node-local filters are
    /// re-run only on nodes whose generation changed; the others run on
    /// every node that passes them.
    pub(super) fn find_feasible_cached(
        &mut self,
        pi: usize,
        state: &CycleState,
        pod: &PodInfo,
        candidates: Option<&[NodeId]>,
    ) -> FilterOutcome {
        let profile = &self.profiles[pi];
        let snap = self.cache.snapshot();
        let gens = snap.generations();
        let (local, global, mask) = split_filters(profile, state);
        let cc = self.equiv.class_of(pi, pod, mask, snap.node_capacity());
        let all = candidates.unwrap_or_else(|| snap.node_ids());
        let mut feasible = Vec::with_capacity(all.len());
        let mut local_rejected: Vec<(NodeId, u32)> = Vec::new();
        let mut global_rejected: Vec<(NodeId, Status)> = Vec::new();
        // Refresh nodes whose generation moved (usually one or two).
        let stale: Vec<NodeId> = {
            let fg = &cc.filter_gen[..];
            all.iter()
                .copied()
                .filter(|id| fg[id.index()] != gens[id.index()])
                .collect()
        };
        for id in stale {
            refresh_verdict(cc, id, gens[id.index()], snap, &local, state, pod);
        }
        let verdict = &cc.verdict[..];
        for &id in all {
            let v = verdict[id.index()];
            if v != super::equiv::PASS {
                local_rejected.push((id, v));
                continue;
            }
            if !global.is_empty() {
                let s = filter_node(&global, state, pod, snap.node(id));
                if !s.is_success() {
                    global_rejected.push((id, s));
                    continue;
                }
            }
            feasible.push(id);
        }
        // The per-node reasons matter only when nothing fits (the message,
        // preemption) or for requeue decisions then; build them lazily.
        let mut diagnosis = Diagnosis::default();
        if feasible.is_empty() {
            for (id, v) in local_rejected {
                let s = cc.statuses[v as usize].clone();
                if let Some(p) = s.plugin() {
                    diagnosis.add_plugin(p);
                }
                diagnosis.node_statuses.push((id, s));
            }
            for (id, s) in global_rejected {
                if let Some(p) = s.plugin() {
                    diagnosis.add_plugin(p);
                }
                diagnosis.node_statuses.push((id, s));
            }
        }
        FilterOutcome {
            feasible,
            diagnosis,
            class_mask: Some(mask),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::intern::Sym;

    /// A cache of `n` nodes less a few removed, so live positions are not
    /// in node-id order.
    fn cluster(n: usize) -> Cache {
        let mut cache = Cache::new();
        for i in 0..n {
            let node = crate::testing::node(&format!("n{i}"))
                .alloc("cpu", "4")
                .build();
            cache.upsert_node(&node).unwrap();
        }
        for i in [3, 17, 40, 41] {
            cache.remove_node(Sym::new(&format!("n{i}")));
        }
        cache
    }

    #[test]
    fn pending_positions_are_each_live_one_once_in_order() {
        let cache = cluster(300);
        let snap = cache.snapshot();
        for len in [0, 5, 63, 64, 500, 2000] {
            // Repeats, removed nodes and every order.
            let pending: Vec<NodeId> = (0..len)
                .map(|i| NodeId(((i * 7919) % 300) as u32))
                .collect();
            let mut want: Vec<usize> = pending
                .iter()
                .filter_map(|id| snap.live_position(*id))
                .collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(pending_positions(&pending, snap), want, "{len} pending");
        }
    }

    #[test]
    fn keep_passing_keeps_order_and_drops_failing_or_unknown_slots() {
        let feasible: Vec<NodeId> = [9, 2, 5, 0, 7, 12].into_iter().map(NodeId).collect();
        let fails = vec![0, 0, 1, 0, 0, 0, 0, 2, 0, 0];
        let mut out = vec![NodeId(99); 3];
        keep_passing(&feasible, &fails, &mut out);
        assert_eq!(out, vec![NodeId(9), NodeId(5), NodeId(0)]);
        keep_passing(&[], &fails, &mut out);
        assert!(out.is_empty());
    }
}
