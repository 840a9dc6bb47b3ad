//! Cluster events that can make a rejected pod schedulable again.
//!
//! Each plugin declares, next to its Filter, the events that may undo its
//! rejections ([`crate::framework::Plugin::events_to_register`]) and may
//! refine that per pod with a queueing hint. The queue moves a pod out of the
//! unschedulable set only when an event one of its rejecting plugins cares
//! about happens (or it has waited the maximum time).

use crate::intern::Sym;
use crate::model::{NodeInfo, PodInfo};

/// The kind of object an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventResource {
    /// A Node.
    Node,
    /// A pod that is not bound (another pending pod).
    UnscheduledPod,
    /// A pod bound (or assumed) to a node.
    AssignedPod,
    /// A Namespace (labels matter to affinity namespace selectors).
    Namespace,
    /// A PodDisruptionBudget.
    PodDisruptionBudget,
    /// A resource a plugin owns (a CRD such as a PodGroup); the name is the
    /// plugin-chosen kind, e.g. `PodGroup`.
    Custom(&'static str),
}

/// What happened, as bits so a registration can cover several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActionType(pub u32);

impl ActionType {
    /// Created.
    pub const ADD: ActionType = ActionType(1);
    /// Deleted.
    pub const DELETE: ActionType = ActionType(1 << 1);
    /// Node allocatable changed.
    pub const UPDATE_NODE_ALLOCATABLE: ActionType = ActionType(1 << 2);
    /// Node labels changed.
    pub const UPDATE_NODE_LABEL: ActionType = ActionType(1 << 3);
    /// Node taints changed.
    pub const UPDATE_NODE_TAINT: ActionType = ActionType(1 << 4);
    /// Node spec.unschedulable or conditions changed.
    pub const UPDATE_NODE_CONDITION: ActionType = ActionType(1 << 5);
    /// Pod labels changed.
    pub const UPDATE_POD_LABEL: ActionType = ActionType(1 << 6);
    /// A pod's requests went down.
    pub const UPDATE_POD_SCALE_DOWN: ActionType = ActionType(1 << 7);
    /// A pod's scheduling gates were removed.
    pub const UPDATE_POD_SCHEDULING_GATES: ActionType = ActionType(1 << 8);
    /// Any other update.
    pub const UPDATE: ActionType = ActionType(1 << 9);
    /// Every node update.
    pub const UPDATE_NODE: ActionType =
        ActionType((1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 9));
    /// Everything.
    pub const ALL: ActionType = ActionType(u32::MAX);

    /// Union.
    pub const fn or(self, o: ActionType) -> ActionType {
        ActionType(self.0 | o.0)
    }

    /// Whether any bit is shared.
    pub const fn intersects(self, o: ActionType) -> bool {
        self.0 & o.0 != 0
    }
}

/// A registration: events of this resource with any of these actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterEventKind {
    /// The resource.
    pub resource: EventResource,
    /// The actions.
    pub actions: ActionType,
}

impl ClusterEventKind {
    /// A registration.
    pub const fn new(resource: EventResource, actions: ActionType) -> Self {
        ClusterEventKind { resource, actions }
    }

    /// Whether this registration covers `ev`.
    pub fn covers(&self, ev: &ClusterEvent<'_>) -> bool {
        self.resource == ev.resource && self.actions.intersects(ev.action)
    }
}

/// An event as the queue sees it, with the objects involved.
#[derive(Clone, Copy, Debug)]
pub struct ClusterEvent<'a> {
    /// The resource.
    pub resource: EventResource,
    /// What happened.
    pub action: ActionType,
    /// The object before and after, where it is a node or pod.
    pub object: EventObject<'a>,
}

/// The object of an event.
#[derive(Clone, Copy, Debug)]
pub enum EventObject<'a> {
    /// A node: old (None on add) and new (None on delete).
    Node {
        /// Before.
        old: Option<&'a NodeInfo>,
        /// After.
        new: Option<&'a NodeInfo>,
    },
    /// A pod: old and new.
    Pod {
        /// Before.
        old: Option<&'a PodInfo>,
        /// After.
        new: Option<&'a PodInfo>,
    },
    /// A namespace, a PDB or a custom object, by namespace and name.
    Named {
        /// Namespace (empty for cluster-scoped).
        namespace: Sym,
        /// Name.
        name: &'a str,
    },
    /// Nothing more is known.
    None,
}

/// A plugin's answer to "does this event make this pod worth retrying?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueingHint {
    /// Retry the pod.
    Queue,
    /// This event cannot help the pod.
    Skip,
}
