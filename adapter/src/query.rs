//! Questions a task in the scheduler's process asks the engine.
//!
//! The engine's state (cache, snapshot, the plugins' runtimes) is owned by
//! its thread and changes between any two cycles, so nothing outside reads
//! it directly. A question goes down the same channel as the informers'
//! updates ([`ClusterUpdate::Query`]) and is answered on the engine thread
//! between cycles, against the state every update sent before it produced:
//! an answer never mixes two moments, and it is never older than what the
//! asker had already seen sent. The engine answers while it is paused too
//! (a standby keeps its state warm), so asking says nothing of leadership:
//! a task that acts on the answer checks [`crate::leader::Gate::is_leader`].

use crate::informer::Sink;
use strata_scheduler::cluster::{ClusterUpdate, EngineQuery};
use strata_scheduler::engine::Scheduler;

/// Sends questions to the engine of this process.
#[derive(Clone)]
pub struct EngineHandle {
    sink: Sink,
}

/// The engine did not answer: its loop has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the scheduling engine has stopped and answers no question")]
pub struct EngineGone;

impl EngineHandle {
    /// A handle sending on `sink`.
    pub fn new(sink: Sink) -> EngineHandle {
        EngineHandle { sink }
    }

    /// Runs `f` on the engine thread between cycles and returns what it
    /// returns. Keep `f` short: the engine schedules nothing meanwhile.
    pub async fn ask<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Scheduler) -> R + Send + 'static,
    ) -> Result<R, EngineGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let q = EngineQuery::new(move |s: &Scheduler| {
            let _ = tx.send(f(s));
        });
        if !self.sink.send(ClusterUpdate::Query(q)) {
            return Err(EngineGone);
        }
        rx.await.map_err(|_| EngineGone)
    }
}
