//! What other plugins read of the memory pool: how much a pod borrows,
//! which pool a node is in, what a pool and a node can lend now, what a
//! node has lent, and how much a namespace may still borrow.
//!
//! The PodGroup planner places a whole group at once; a member that
//! borrows (`strata.io/memory-borrow`) needs its remote memory from its
//! node's pool domain, which the group's other members share. MemoryPool
//! keeps the ledger; it publishes these figures through a [`BorrowLink`]
//! that the planner holds, so neither plugin imports the other. Reads
//! happen on the scheduling thread (PreFilter), where the ledger is
//! written too, so they are current.

use parking_lot::RwLock;
use std::sync::Arc;
use strata_scheduler::sdk::{NodeId, PodInfo, Sym};

/// The memory pool's figures, as MemoryPool's ledger gives them.
pub trait BorrowFigures: Send + Sync {
    /// Remote bytes `pod` borrows: 0 when it does not borrow, or when its
    /// ask is malformed (MemoryPool rejects that pod on its own).
    fn remote(&self, pod: &PodInfo) -> i64;
    /// Node `n`'s pool domain (an opaque index), if it is known.
    fn pool(&self, n: NodeId) -> Option<usize>;
    /// Pool `pool`'s name, for messages.
    fn pool_name(&self, pool: usize) -> String;
    /// Bytes pool `pool` can lend now, all media.
    fn pool_lendable(&self, pool: usize) -> i64;
    /// Bytes node `n` can lend now, all media.
    fn lendable(&self, n: NodeId) -> i64;
    /// Bytes node `n` has lent.
    fn lent(&self, n: NodeId) -> i64;
    /// Remote bytes pods of namespace `ns` may still take before its cap
    /// (`None`: it has none).
    fn namespace_room(&self, ns: Sym) -> Option<i64>;
}

/// Where MemoryPool puts its figures and other plugins find them (empty
/// when MemoryPool is not built: nothing is borrowed then). Clones share.
#[derive(Clone, Default)]
pub struct BorrowLink(Arc<RwLock<Option<Arc<dyn BorrowFigures>>>>);

impl BorrowLink {
    /// A link to `figures`.
    pub fn to(figures: Arc<dyn BorrowFigures>) -> BorrowLink {
        let l = BorrowLink::default();
        l.set(figures);
        l
    }

    /// Points the link at `figures` (the first MemoryPool built wins, as
    /// its ledger is the one every profile shares).
    pub fn set(&self, figures: Arc<dyn BorrowFigures>) {
        let mut g = self.0.write();
        if g.is_none() {
            *g = Some(figures);
        }
    }

    /// The figures, if MemoryPool is built.
    pub fn get(&self) -> Option<Arc<dyn BorrowFigures>> {
        self.0.read().clone()
    }
}

impl std::fmt::Debug for BorrowLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BorrowLink")
            .field("linked", &self.0.read().is_some())
            .finish()
    }
}

/// `bytes` for messages: whole GiB when exact, else MiB.
pub fn human(bytes: i64) -> String {
    const GI: i64 = 1 << 30;
    const MI: i64 = 1 << 20;
    if bytes % GI == 0 {
        format!("{}Gi", bytes / GI)
    } else if bytes >= GI {
        format!("{:.1}Gi", bytes as f64 / GI as f64)
    } else {
        format!("{}Mi", (bytes as i128 + MI as i128 - 1) / MI as i128)
    }
}
