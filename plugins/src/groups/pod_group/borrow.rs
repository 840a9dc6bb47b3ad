//! Borrowed memory in a group's plan.
//!
//! A member annotated `strata.io/memory-borrow` runs with part of its
//! memory lent by other servers of its node's pool domain (MemoryPool).
//! The planner places members by their requests only, so a plan could put
//! more borrowers into a pool than the pool can lend, or put a member on a
//! server whose memory is lent (or will be lent to its siblings): the
//! members would then fail one by one at Filter or Reserve after the plan
//! was made. [`check`] tells whether a plan keeps its borrows, with the
//! pools and servers to leave out when it does not, so the plan is made
//! again without them, or not made.
//!
//! The test is conservative (a plan it accepts never fails for memory
//! lent or borrowed, given the ledger as it stands at planning time), per
//! pool domain `p` and per server `h` the plan uses:
//! - the remote bytes of the members planned in `p` are at most what `p`
//!   can lend less what the servers hosting members there can lend (a
//!   member never borrows from its own server, and a member's own memory
//!   may shrink what its server lends);
//! - on a server that lends or has lent, the members' memory fits beside
//!   everything the server has lent and could still lend (MemoryPool keeps
//!   a pod off memory its server lent, and siblings may borrow from it);
//! - the remote bytes of all borrowing members fit the namespace's cap.

use crate::common::memory_borrow::{BorrowFigures, human};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;
use strata_scheduler::sdk::{NodeId, PodInfo, ResourceId, Snapshot, Sym};
use strata_topology::Amounts;

/// Pools and servers a plan may not use for borrowers, grown after each
/// failed [`check`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Excluded {
    /// Pool domains (MemoryPool's index) no borrowing member may use.
    pub pools: FxHashSet<usize>,
    /// Servers no member may use.
    pub nodes: FxHashSet<u32>,
}

impl Excluded {
    /// Whether a member borrowing `remote` bytes may go on node `n`.
    pub fn allows(&self, fig: &dyn BorrowFigures, remote: i64, n: u32) -> bool {
        if self.nodes.contains(&n) {
            return false;
        }
        remote <= 0
            || self.pools.is_empty()
            || fig.pool(NodeId(n)).is_none_or(|p| !self.pools.contains(&p))
    }
}

/// Why a plan does not keep its borrows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Short {
    /// The first shortfall, for the group's message.
    pub message: String,
    /// Whether leaving pools or servers out may help (a namespace cap
    /// does not move with the plan).
    pub replan: bool,
}

/// Checks a plan given as `(node, member)` pairs against the ledger's
/// figures; on a shortfall, adds what to leave out to `out` and says why.
/// `reserved` is what other groups' plans hold per node.
pub(crate) fn check(
    fig: &dyn BorrowFigures,
    members: &[(u32, &PodInfo)],
    namespace: Sym,
    snap: &Snapshot,
    reserved: &FxHashMap<u32, Amounts>,
    out: &mut Excluded,
) -> Result<(), Short> {
    let mem = ResourceId::MEMORY.index();
    // Per server: the members' memory; per pool: the remote bytes and the
    // servers used (sorted maps: the first shortfall named is stable).
    let mut local: BTreeMap<u32, i64> = BTreeMap::new();
    let mut remote: BTreeMap<usize, i64> = BTreeMap::new();
    let mut hosts: BTreeMap<usize, FxHashSet<u32>> = BTreeMap::new();
    let mut total = 0i64;
    for &(n, pod) in members {
        *local.entry(n).or_default() += pod.spec.requests[ResourceId::MEMORY];
        let r = fig.remote(pod);
        let pool = fig.pool(NodeId(n));
        if let Some(p) = pool {
            hosts.entry(p).or_default().insert(n);
        }
        if r > 0 {
            total += r;
            match pool {
                Some(p) => *remote.entry(p).or_default() += r,
                None => {
                    out.nodes.insert(n);
                    return Err(Short {
                        message: format!("node {} is in no memory pool", snap.node(NodeId(n)).name),
                        replan: true,
                    });
                }
            }
        }
    }
    if total > 0
        && let Some(room) = fig.namespace_room(namespace)
        && total > room
    {
        return Err(Short {
            message: format!(
                "its members borrow {} of remote memory; namespace {namespace} may take {} more",
                human(total),
                human(room.max(0))
            ),
            replan: false,
        });
    }
    let mut first: Option<String> = None;
    for (&n, &want) in &local {
        // What it may still lend matters only to borrowing siblings.
        let may_lend = fig.pool(NodeId(n)).is_some_and(|p| remote.contains_key(&p));
        let held = fig.lent(NodeId(n)) + if may_lend { fig.lendable(NodeId(n)) } else { 0 };
        if held <= 0 {
            continue;
        }
        let node = snap.node(NodeId(n));
        let others = reserved.get(&n).map_or(0, |a| a[mem]);
        let room = node.allocatable[ResourceId::MEMORY]
            - node.requested[ResourceId::MEMORY]
            - others
            - held;
        if want > room {
            out.nodes.insert(n);
            first.get_or_insert_with(|| {
                format!(
                    "its members need {} on {}, which lends or may lend {} of its free memory",
                    human(want),
                    node.name,
                    human(held)
                )
            });
        }
    }
    for (&p, &need) in &remote {
        let own: i64 = hosts
            .get(&p)
            .into_iter()
            .flatten()
            .map(|h| fig.lendable(NodeId(*h)))
            .sum();
        let can = fig.pool_lendable(p) - own;
        if need > can {
            out.pools.insert(p);
            first.get_or_insert_with(|| {
                format!(
                    "needs {} remote in pool {}, which can lend {} to them",
                    human(need),
                    fig.pool_name(p),
                    human(can.max(0))
                )
            });
        }
    }
    match first {
        None => Ok(()),
        Some(message) => Err(Short {
            message,
            replan: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use strata_scheduler::testing;

    const GI: i64 = 1 << 30;

    /// Nodes 0 and 1 in pool 0, node 2 in pool 1; node 1 lends 40Gi and
    /// has lent 8Gi; pool 0 lends 100Gi, pool 1 500Gi; 60Gi of cap left.
    struct Fig;

    impl BorrowFigures for Fig {
        fn remote(&self, pod: &PodInfo) -> i64 {
            pod.annotations
                .get("remote-gi")
                .and_then(|v| v.parse::<i64>().ok())
                .map_or(0, |g| g * GI)
        }
        fn pool(&self, n: NodeId) -> Option<usize> {
            Some(usize::from(n.0 >= 2))
        }
        fn pool_name(&self, pool: usize) -> String {
            format!("sn-{pool}")
        }
        fn pool_lendable(&self, pool: usize) -> i64 {
            [100, 500][pool] * GI
        }
        fn lendable(&self, n: NodeId) -> i64 {
            if n.0 == 1 { 40 * GI } else { 0 }
        }
        fn lent(&self, n: NodeId) -> i64 {
            if n.0 == 1 { 8 * GI } else { 0 }
        }
        fn namespace_room(&self, _ns: Sym) -> Option<i64> {
            Some(260 * GI)
        }
    }

    fn pod(mem_gi: i64, remote_gi: i64) -> Arc<PodInfo> {
        testing::pod("m")
            .req("memory", &format!("{mem_gi}Gi"))
            .annotation("remote-gi", &remote_gi.to_string())
            .arc()
    }

    fn run(members: &[(u32, i64, i64)]) -> (Result<(), Short>, Excluded) {
        let cache = testing::cache_with(
            (0..3)
                .map(|i| {
                    testing::node(&format!("n{i}"))
                        .alloc("memory", "128Gi")
                        .build()
                })
                .collect(),
            vec![],
        );
        let pods: Vec<(u32, Arc<PodInfo>)> =
            members.iter().map(|(n, m, r)| (*n, pod(*m, *r))).collect();
        let refs: Vec<(u32, &PodInfo)> = pods.iter().map(|(n, p)| (*n, &**p)).collect();
        let mut ex = Excluded::default();
        let r = check(
            &Fig,
            &refs,
            Sym::new("team-a"),
            cache.snapshot(),
            &FxHashMap::default(),
            &mut ex,
        );
        (r, ex)
    }

    #[test]
    fn a_plan_keeps_its_borrows_or_says_what_to_leave_out() {
        // Two borrowers on node 0 take 60Gi of pool 0's 100Gi, less node
        // 1's 40Gi as node 1 hosts nothing: fits.
        assert!(run(&[(0, 16, 30), (0, 16, 30)]).0.is_ok());
        // 110Gi from pool 0: short; borrowers leave pool 0 out.
        let (r, ex) = run(&[(0, 16, 60), (0, 16, 50)]);
        let s = r.unwrap_err();
        assert!(s.replan);
        assert_eq!(
            s.message,
            "needs 110Gi remote in pool sn-0, which can lend 100Gi to them"
        );
        assert!(ex.pools.contains(&0) && ex.nodes.is_empty());
        assert!(!ex.allows(&Fig, GI, 0) && ex.allows(&Fig, 0, 0) && ex.allows(&Fig, GI, 2));
        // A borrower on node 1 cannot count node 1's own 40Gi: 60Gi left.
        let (r, ex) = run(&[(1, 16, 70)]);
        assert!(r.is_err() && ex.pools.contains(&0));
        // Node 1 lent 8Gi and may lend 40Gi to a borrowing sibling: 80Gi
        // of its 128Gi are usable, not 100Gi.
        let (r, ex) = run(&[(1, 100, 0), (0, 8, 10)]);
        assert!(
            r.unwrap_err()
                .message
                .contains("on n1, which lends or may lend 48Gi")
        );
        assert!(ex.nodes.contains(&1));
        // Without borrowing siblings only what it lent counts.
        assert!(run(&[(1, 100, 0)]).0.is_ok());
        // The namespace cap: no plan helps.
        let (r, _) = run(&[(2, 8, 200), (2, 8, 70)]);
        let s = r.unwrap_err();
        assert!(!s.replan);
        assert_eq!(
            s.message,
            "its members borrow 270Gi of remote memory; namespace team-a may take 260Gi more"
        );
    }
}
