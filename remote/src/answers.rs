//! A remote plugin's Filter and Score answers by node slot, and which nodes
//! need asking.
//!
//! A node-local plugin (it said so in the handshake) answers for a node from
//! the pod and that node alone, so an answer stays true for pods of the same
//! template ([`PodInfo::equivalence`](strata_scheduler::sdk::PodInfo)) while
//! the node's generation does not move. [`Answers`] keeps, per template, the
//! answers and the generation each was given at; a cycle asks the plugin
//! only about the nodes whose generation moved since (found through the
//! snapshot's change log, or by comparing generations when the log no
//! longer reaches back), so a steady-state cycle asks about the one node
//! the previous pod landed on, and a cycle where nothing changed makes no
//! call at all. A new template asks about every node once.
//!
//! A plugin that is not node-local, and a pod without a template hash, get
//! a fresh [`FilterMemo`]/[`ScoreMemo`] each cycle: every node is asked.
//!
//! Invariants: an entry is read only when its generation equals the
//! snapshot's (generations never repeat for a slot); answers belong to one
//! session of the plugin, and a new session (a restarted plugin, a resync)
//! drops them all, since the plugin's rules may have changed with it.

use std::sync::Arc;
use strata_scheduler::sdk::{NodeId, Snapshot, Status};

/// A generation no node has.
const NEVER: u64 = u64::MAX;

/// Distinct rejection reasons a template's answers may hold before they
/// are dropped and asked again (a verdict is a `u16` index; one answer
/// carries at most [`crate::plugin::MAX_REASONS`] more).
const MAX_STATUSES: usize = 4096;

/// How many templates keep answers (least recently used dropped first).
/// One template costs about 19 bytes per node slot.
pub(crate) const MAX_TEMPLATES: usize = 32;

/// Filter verdicts by node slot: 0 passes, `k` fails with `statuses[k-1]`.
/// Shared with the cycle state, which reads it in Filter.
#[derive(Clone, Default)]
pub(crate) struct FilterTable {
    pub verdict: Vec<u16>,
    pub statuses: Vec<Status>,
}

impl FilterTable {
    /// The verdict on node slot `i`.
    pub fn get(&self, i: usize) -> Option<&Status> {
        match self.verdict.get(i) {
            Some(&k) if k > 0 => self.statuses.get(k as usize - 1),
            _ => None,
        }
    }
}

/// What a Filter answer said about the nodes asked.
#[derive(Debug)]
pub(crate) enum Judged {
    /// No opinion: every node asked passes.
    Skip,
    /// The whole pod is rejected (or, for Error, the call failed).
    Whole(Status),
    /// The nodes asked that fail, by status; the others pass.
    Rejected(Vec<(Status, Vec<u32>)>),
}

/// Node slots whose generation is not `seen`'s, as of `seq`: the change log
/// since `seq` (and slots added since) when it reaches back, every slot
/// otherwise. Sorted, without repeats.
fn moved(seen: &[u64], synced: Option<u64>, snap: &Snapshot) -> Vec<u32> {
    let gens = snap.generations();
    let stale = |i: usize| seen.get(i).is_none_or(|&g| g != gens[i]);
    let mut out: Vec<u32> = match synced.and_then(|seq| snap.changes_since(seq)) {
        Some(log) => log
            .iter()
            .map(|id| id.index())
            .chain(seen.len().min(gens.len())..gens.len())
            .filter(|&i| i < gens.len() && stale(i))
            .map(|i| i as u32)
            .collect(),
        None => (0..gens.len())
            .filter(|&i| stale(i))
            .map(|i| i as u32)
            .collect(),
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// One template's Filter answers.
#[derive(Default)]
pub(crate) struct FilterMemo {
    /// Generation each slot's verdict was given at.
    seen_at: Vec<u64>,
    /// The snapshot change sequence every slot is fresh as of.
    synced: Option<u64>,
    table: Arc<FilterTable>,
    /// Slots with a rejection.
    rejected: usize,
}

/// The nodes a Filter call must ask about.
pub(crate) struct FilterAsk {
    /// Present nodes without a fresh verdict, ascending.
    pub ask: Vec<NodeId>,
    /// Slots without a fresh verdict whose node is gone.
    gone: Vec<u32>,
}

impl FilterMemo {
    /// The nodes to ask about in `snap`.
    pub fn stale(&mut self, snap: &Snapshot) -> FilterAsk {
        if self.table.statuses.len() > MAX_STATUSES {
            *self = FilterMemo::default();
        }
        let (mut ask, mut gone) = (Vec::new(), Vec::new());
        for i in moved(&self.seen_at, self.synced, snap) {
            if snap.node(NodeId(i)).present {
                ask.push(NodeId(i));
            } else {
                gone.push(i);
            }
        }
        FilterAsk { ask, gone }
    }

    /// Records the answer to `asked` (`Judged::Whole` records nothing).
    /// `rejected` names only nodes of `asked.ask` (checked by the caller).
    pub fn commit(&mut self, snap: &Snapshot, asked: &FilterAsk, answer: &Judged) {
        let rejections: &[(Status, Vec<u32>)] = match answer {
            Judged::Whole(_) => return,
            Judged::Skip => &[],
            Judged::Rejected(r) => r,
        };
        if asked.ask.is_empty() && asked.gone.is_empty() {
            // Nothing moved: the table (perhaps shared with a cycle state
            // still alive in a binding) is not touched.
            self.synced = Some(snap.change_seq());
            return;
        }
        let gens = snap.generations();
        let cap = gens.len();
        if self.seen_at.len() < cap {
            self.seen_at.resize(cap, NEVER);
        }
        let table = Arc::make_mut(&mut self.table);
        if table.verdict.len() < cap {
            table.verdict.resize(cap, 0);
        }
        let ids = asked
            .ask
            .iter()
            .map(|id| id.0)
            .chain(asked.gone.iter().copied());
        for i in ids {
            let i = i as usize;
            if table.verdict[i] != 0 {
                table.verdict[i] = 0;
                self.rejected -= 1;
            }
            self.seen_at[i] = gens[i];
        }
        for (status, nodes) in rejections {
            let k = match table.statuses.iter().position(|s| s == status) {
                Some(k) => k + 1,
                None => {
                    table.statuses.push(status.clone());
                    table.statuses.len()
                }
            } as u16;
            for &i in nodes {
                let v = &mut table.verdict[i as usize];
                if *v == 0 {
                    self.rejected += 1;
                }
                *v = k;
            }
        }
        self.synced = Some(snap.change_seq());
    }

    /// The verdicts, for the cycle state.
    pub fn table(&self) -> Arc<FilterTable> {
        self.table.clone()
    }

    /// How many present or absent slots hold a rejection.
    pub fn rejected(&self) -> usize {
        self.rejected
    }
}

/// One template's Score answers.
#[derive(Default)]
pub(crate) struct ScoreMemo {
    seen_at: Vec<u64>,
    table: Arc<Vec<u8>>,
    /// The plugin answered SKIP for this template: it has no score for it.
    pub skip: bool,
}

impl ScoreMemo {
    /// The feasible nodes without a fresh score, ascending.
    pub fn stale(&self, snap: &Snapshot, feasible: &[NodeId]) -> Vec<NodeId> {
        let gens = snap.generations();
        let mut out: Vec<NodeId> = feasible
            .iter()
            .copied()
            .filter(|id| {
                self.seen_at
                    .get(id.index())
                    .is_none_or(|&g| g != gens[id.index()])
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Records `scores` (0..=100, checked by the caller) of `asked`, in
    /// order.
    pub fn commit(&mut self, snap: &Snapshot, asked: &[NodeId], scores: &[u8]) {
        let gens = snap.generations();
        let cap = gens.len();
        if self.seen_at.len() < cap {
            self.seen_at.resize(cap, NEVER);
        }
        let table = Arc::make_mut(&mut self.table);
        if table.len() < cap {
            table.resize(cap, 0);
        }
        for (id, &s) in asked.iter().zip(scores) {
            table[id.index()] = s;
            self.seen_at[id.index()] = gens[id.index()];
        }
    }

    /// The scores, for the cycle state.
    pub fn table(&self) -> Arc<Vec<u8>> {
        self.table.clone()
    }
}

/// One template's answers.
struct Template {
    equivalence: u64,
    last_used: u64,
    filter: FilterMemo,
    score: ScoreMemo,
}

/// A node-local plugin's answers per template, for one session.
#[derive(Default)]
pub(crate) struct Answers {
    session: u64,
    templates: Vec<Template>,
    clock: u64,
}

impl Answers {
    /// The answers for template `equivalence` in session `session`; every
    /// answer of another session is dropped first.
    fn template(&mut self, session: u64, equivalence: u64) -> &mut Template {
        if self.session != session {
            self.templates.clear();
            self.session = session;
        }
        self.clock += 1;
        let i = match self
            .templates
            .iter()
            .position(|t| t.equivalence == equivalence)
        {
            Some(i) => i,
            None => {
                let t = Template {
                    equivalence,
                    last_used: 0,
                    filter: FilterMemo::default(),
                    score: ScoreMemo::default(),
                };
                if self.templates.len() < MAX_TEMPLATES {
                    self.templates.push(t);
                    self.templates.len() - 1
                } else {
                    let i = self
                        .templates
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, t)| t.last_used)
                        .map_or(0, |(i, _)| i);
                    self.templates[i] = t;
                    i
                }
            }
        };
        let t = &mut self.templates[i];
        t.last_used = self.clock;
        t
    }

    /// A template's Filter answers in `session`.
    #[cfg(test)]
    pub fn filter(&mut self, session: u64, equivalence: u64) -> &mut FilterMemo {
        &mut self.template(session, equivalence).filter
    }

    /// A template's Filter and Score answers in `session`.
    pub fn both(&mut self, session: u64, equivalence: u64) -> (&mut FilterMemo, &mut ScoreMemo) {
        let t = self.template(session, equivalence);
        (&mut t.filter, &mut t.score)
    }

    /// A template's Score answers in `session`.
    pub fn score(&mut self, session: u64, equivalence: u64) -> &mut ScoreMemo {
        &mut self.template(session, equivalence).score
    }

    /// How many templates hold answers.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.templates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strata_scheduler::cache::Cache;
    use strata_scheduler::intern::Sym;
    use strata_scheduler::testing::{node, pod};

    /// The rule the "plugin" applies: a node fails when its name's last
    /// digit is odd and it holds an even number of pods (2 reasons), and
    /// scores 10 × its pod count (capped).
    fn verdict(n: &strata_scheduler::sdk::NodeInfo) -> Option<Status> {
        let odd = n.name.as_str().ends_with(['1', '3', '5', '7', '9']);
        match (odd, n.pods.len().is_multiple_of(2), n.labels.is_empty()) {
            (true, true, true) => Some(Status::unschedulable("odd and even")),
            (true, true, false) => Some(Status::unresolvable("odd, even, labelled")),
            _ => None,
        }
    }
    fn score(n: &strata_scheduler::sdk::NodeInfo) -> u8 {
        (n.pods.len() * 10).min(100) as u8
    }

    /// Asks the rule about exactly the nodes given, as a plugin would.
    fn answer(snap: &Snapshot, ask: &[NodeId]) -> Judged {
        let mut by: Vec<(Status, Vec<u32>)> = Vec::new();
        for id in ask {
            if let Some(s) = verdict(snap.node(*id)) {
                match by.iter_mut().find(|(x, _)| *x == s) {
                    Some((_, v)) => v.push(id.0),
                    None => by.push((s, vec![id.0])),
                }
            }
        }
        Judged::Rejected(by)
    }

    #[derive(Clone, Debug)]
    enum Change {
        AddPod(usize),
        RemovePod(usize),
        AddNode,
        RemoveNode(usize),
        Label(usize),
        /// Look: run the cached cycle and compare.
        Cycle,
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            3 => (0usize..64).prop_map(Change::AddPod),
            2 => (0usize..64).prop_map(Change::RemovePod),
            1 => Just(Change::AddNode),
            1 => (0usize..64).prop_map(Change::RemoveNode),
            1 => (0usize..64).prop_map(Change::Label),
            3 => Just(Change::Cycle),
        ]
    }

    proptest! {
        /// After any sequence of node and pod changes, the cached answers
        /// (asking only the nodes that moved) equal the rule applied to
        /// every present node afresh, and a second look asks nothing.
        #[test]
        fn cached_answers_equal_fresh_answers(
            start in 1usize..24,
            changes in proptest::collection::vec(change(), 0..60),
        ) {
            let mut cache = Cache::new();
            let mut names: Vec<String> = Vec::new();
            let mut next = 0usize;
            let mut add_node = |cache: &mut Cache, names: &mut Vec<String>| {
                let n = format!("n{next}");
                next += 1;
                cache.upsert_node(&node(&n).alloc("cpu", "64").alloc("pods", "110").build()).unwrap();
                names.push(n);
            };
            for _ in 0..start {
                add_node(&mut cache, &mut names);
            }
            let mut pods: Vec<(String, String)> = Vec::new();
            let mut answers = Answers::default();
            let mut pod_no = 0usize;
            for c in changes {
                match c {
                    Change::AddPod(i) if !names.is_empty() => {
                        let on = names[i % names.len()].clone();
                        let p = format!("p{pod_no}");
                        pod_no += 1;
                        cache.add_pod(Arc::new(pod(&p).on(&on).req("cpu", "1").build()));
                        pods.push((p, on));
                    }
                    Change::RemovePod(i) if !pods.is_empty() => {
                        let (p, _) = pods.remove(i % pods.len());
                        cache.remove_pod(&format!("uid-{p}"));
                    }
                    Change::AddNode => add_node(&mut cache, &mut names),
                    Change::RemoveNode(i) if !names.is_empty() => {
                        let n = names.remove(i % names.len());
                        cache.remove_node(Sym::new(&n));
                        pods.retain(|(_, on)| *on != n);
                    }
                    Change::Label(i) if !names.is_empty() => {
                        let n = names[i % names.len()].clone();
                        cache.upsert_node(&node(&n).alloc("cpu", "64").alloc("pods", "110").label("l", "x").build()).unwrap();
                    }
                    _ => {}
                }
                let snap = cache.snapshot();
                let m = answers.filter(7, 42);
                let asked = m.stale(snap);
                let a = answer(snap, &asked.ask);
                m.commit(snap, &asked, &a);
                let t = m.table();
                let mut rejected = 0;
                for &id in snap.node_ids() {
                    let want = verdict(snap.node(id));
                    prop_assert_eq!(t.get(id.index()).cloned(), want.clone(), "node {}", id.0);
                    rejected += usize::from(want.is_some());
                }
                prop_assert_eq!(m.rejected(), rejected);
                prop_assert!(m.stale(snap).ask.is_empty(), "a second look asks nothing");

                let feasible: Vec<NodeId> = snap.node_ids().iter().rev().copied().collect();
                let s = answers.score(7, 42);
                let ask = s.stale(snap, &feasible);
                let scores: Vec<u8> = ask.iter().map(|id| score(snap.node(*id))).collect();
                s.commit(snap, &ask, &scores);
                let t = s.table();
                for &id in snap.node_ids() {
                    prop_assert_eq!(t[id.index()], score(snap.node(id)));
                }
                prop_assert!(s.stale(snap, &feasible).is_empty());
            }
        }
    }

    #[test]
    fn a_new_session_drops_every_template() {
        let mut a = Answers::default();
        a.filter(1, 10);
        a.score(1, 11);
        assert_eq!(a.len(), 2);
        a.filter(2, 10);
        assert_eq!(a.len(), 1);
        for e in 0..(MAX_TEMPLATES as u64 + 5) {
            a.filter(2, 100 + e);
        }
        assert_eq!(a.len(), MAX_TEMPLATES);
    }
}
