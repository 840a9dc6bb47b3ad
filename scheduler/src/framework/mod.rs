//! The plugin framework: extension-point traits, per-cycle state, statuses,
//! requeue events, the set of pods waiting at Permit and preemption claims.

mod cycle_state;
mod events;
mod plugin;
mod preemption;
mod status;
mod waiting;

pub use cycle_state::{CycleState, PodsToActivate, StateData};
pub use events::{
    ActionType, ClusterEvent, ClusterEventKind, EventObject, EventResource, QueueingHint,
};
pub use plugin::{
    BindPlugin, DomainScores, DomainVerdict, FilterEvaluator, FilterPlugin, Handle, MAX_NODE_SCORE,
    NO_PREEMPTION_EXTENDERS, NoPreemptionExtenders, NodeObserver, NodeRef, NodeScore, PermitPlugin,
    PermitResult, Plugin, PluginArgsError, PluginFactory, PostBindPlugin, PostFilterContext,
    PostFilterPlugin, PostFilterResult, PreBindPlugin, PreEnqueuePlugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, PreemptionCandidate, PreemptionExtenders, QueueSortPlugin,
    Registry, ReservePlugin, ScoreLayer, ScorePlugin, SortKey,
};
pub use preemption::{Claims, PreemptionClaimant, PreemptionClaims};
pub use status::{Code, Diagnosis, Reason, Status};
pub use waiting::{PermitDecision, WaitingPodView, WaitingPods};
