//! One [`Translate`] per watched resource: where informer objects become
//! engine updates (through [`crate::convert`]).

use crate::convert::{self, PriorityClasses};
use crate::informer::{Sink, Translate};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::DynamicObject;
use std::sync::Arc;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::intern::Sym;

/// Pods: every pod, bound (by any scheduler: the cache needs them for
/// capacity) or pending (the engine queues those of its profiles).
pub struct Pods {
    /// PriorityClasses, to fill in a missing `spec.priority`.
    pub priorities: Arc<PriorityClasses>,
}

impl Translate<Pod> for Pods {
    fn upsert(&mut self, pod: Pod, sink: &Sink) {
        sink.send(convert::pod_update(pod, &self.priorities));
    }
    fn delete(&mut self, _ns: &str, _name: &str, uid: &str, _last: Option<Pod>, sink: &Sink) {
        sink.send(ClusterUpdate::PodDeleted { uid: uid.into() });
    }
}

/// Nodes.
pub struct Nodes;

impl Translate<Node> for Nodes {
    fn upsert(&mut self, node: Node, sink: &Sink) {
        sink.send(convert::node_update(node));
    }
    fn delete(&mut self, _ns: &str, name: &str, _uid: &str, _last: Option<Node>, sink: &Sink) {
        sink.send(ClusterUpdate::NodeDeleted(name.to_owned()));
    }
}

/// Namespaces (their labels, for namespace selectors of affinity terms).
pub struct Namespaces;

impl Translate<Namespace> for Namespaces {
    fn upsert(&mut self, ns: Namespace, sink: &Sink) {
        sink.send(convert::namespace_update(&ns));
    }
    fn delete(&mut self, _ns: &str, name: &str, _uid: &str, _last: Option<Namespace>, sink: &Sink) {
        sink.send(ClusterUpdate::NamespaceDeleted(Sym::new(name)));
    }
}

/// PodDisruptionBudgets (for preemption).
pub struct Pdbs;

impl Translate<PodDisruptionBudget> for Pdbs {
    fn upsert(&mut self, pdb: PodDisruptionBudget, sink: &Sink) {
        sink.send(convert::pdb_update(&pdb));
    }
    fn delete(
        &mut self,
        ns: &str,
        name: &str,
        _uid: &str,
        _last: Option<PodDisruptionBudget>,
        sink: &Sink,
    ) {
        sink.send(ClusterUpdate::PdbDeleted {
            namespace: Sym::new(ns),
            name: name.to_owned(),
        });
    }
}

/// PriorityClasses: kept by the adapter, not sent to the engine.
pub struct Priorities {
    /// Where they are kept.
    pub classes: Arc<PriorityClasses>,
}

impl Translate<PriorityClass> for Priorities {
    fn upsert(&mut self, pc: PriorityClass, _sink: &Sink) {
        self.classes.upsert(&pc);
    }
    fn delete(
        &mut self,
        _ns: &str,
        name: &str,
        _uid: &str,
        _last: Option<PriorityClass>,
        _sink: &Sink,
    ) {
        self.classes.delete(name);
    }
}

/// What a plugin does with the objects of a custom resource it watches.
pub trait CustomHandler: Send + Sync + 'static {
    /// An object was added or changed.
    fn upsert(&self, obj: &DynamicObject);
    /// An object was deleted.
    fn delete(&self, namespace: &str, name: &str);
    /// Work the plugin needs done only while this replica leads (such as
    /// writing status back), started once by the adapter. None by default.
    fn leader_task(&self) -> Option<Arc<dyn crate::leader::LeaderTask>> {
        None
    }
}

/// A custom resource (a later issue's CRD): handed to its plugin's
/// handler, then announced to the engine as [`ClusterUpdate::Custom`] so
/// pods waiting on it are requeued.
pub struct Custom {
    /// The kind as the plugin registers its events.
    pub kind: &'static str,
    /// The plugin's handler.
    pub handler: Arc<dyn CustomHandler>,
}

impl Translate<DynamicObject> for Custom {
    fn upsert(&mut self, obj: DynamicObject, sink: &Sink) {
        self.handler.upsert(&obj);
        sink.send(ClusterUpdate::Custom {
            kind: self.kind,
            namespace: Sym::new(obj.metadata.namespace.as_deref().unwrap_or("")),
            name: obj.metadata.name.clone().unwrap_or_default(),
        });
    }
    fn delete(
        &mut self,
        ns: &str,
        name: &str,
        _uid: &str,
        _last: Option<DynamicObject>,
        sink: &Sink,
    ) {
        self.handler.delete(ns, name);
        sink.send(ClusterUpdate::Custom {
            kind: self.kind,
            namespace: Sym::new(ns),
            name: name.to_owned(),
        });
    }
}
