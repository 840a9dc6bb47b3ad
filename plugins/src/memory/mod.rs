//! Memory: memory-pool borrowing across the servers of a super-node
//! (`MemoryPool`). A pod asks for part of its memory to be remote; the
//! plugin places it where its pool domain (by default the super-node) has
//! that much lendable memory, picks the lenders at Reserve and writes the
//! borrow plan on the pod for the node agent. See `docs/memory-pool.md`.

pub mod memory_pool;
