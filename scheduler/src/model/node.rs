//! A node as the engine sees it: what it offers, what is placed on it.

use super::pod::PodInfo;
use super::taints::Taint;
use crate::intern::Sym;
use crate::labels::Labels;
use crate::resources::{ResourceError, ResourceId, ResourceVec};
use k8s_openapi::api::core::v1 as corev1;
use smallvec::SmallVec;
use std::sync::Arc;

/// Dense index of a node in the cache. Stable for the node's lifetime; a slot
/// may be reused after the node is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// As a vector index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A host port in use or requested: protocol, host IP and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`, interned.
    pub protocol: Sym,
    /// Host IP; `0.0.0.0` (the default) means every address.
    pub ip: Sym,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports collide (kube-scheduler's NodePorts rule: same
    /// protocol and port, and the same IP or either one is `0.0.0.0`).
    #[inline]
    pub fn conflicts(&self, other: &HostPort) -> bool {
        if self.port != other.port || self.protocol != other.protocol {
            return false;
        }
        let any = Sym::new("0.0.0.0");
        self.ip == other.ip || self.ip == any || other.ip == any
    }
}

/// A node with what is placed on it (bound and assumed pods).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Dense id.
    pub id: NodeId,
    /// Name.
    pub name: Sym,
    /// Labels.
    pub labels: Labels,
    /// Taints.
    pub taints: SmallVec<[Taint; 2]>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.allocatable` (or capacity where allocatable is not reported).
    pub allocatable: ResourceVec,
    /// Sum of the requests of pods placed here (pods slot counts pods).
    pub requested: ResourceVec,
    /// As `requested`, with kube-scheduler's non-zero defaults for containers
    /// that request no cpu (100m) or memory (200 MiB); used by scoring.
    pub non_zero_requested: ResourceVec,
    /// Pods placed here, bound or assumed.
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of `pods` have any pod affinity or anti-affinity term.
    pub pods_with_affinity: u32,
    /// How many of `pods` have required anti-affinity terms.
    pub pods_with_required_anti_affinity: u32,
    /// Host ports in use.
    pub used_ports: SmallVec<[HostPort; 4]>,
    /// Images present: normalized name and size in bytes.
    pub images: Vec<(Sym, i64)>,
    /// Whether the Node object exists. A node that only has pods reported on
    /// it (the pod arrived before its node) is a placeholder: it counts what is
    /// there but takes nothing new.
    pub present: bool,
    /// Bumped on every change; lets caches keyed on a node tell it changed.
    pub generation: u64,
    /// `metadata.annotations` of the Node, for plugins that read node-level
    /// details published there (device inventories such as
    /// `strata.io/devices`). Shared, so cloning a node stays cheap.
    pub annotations: Arc<std::collections::BTreeMap<String, String>>,
}

impl NodeInfo {
    /// An empty placeholder for `name`.
    pub fn placeholder(id: NodeId, name: Sym) -> NodeInfo {
        NodeInfo {
            id,
            name,
            labels: Labels::default(),
            taints: SmallVec::new(),
            unschedulable: false,
            allocatable: ResourceVec::default(),
            requested: ResourceVec::default(),
            non_zero_requested: ResourceVec::default(),
            pods: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            used_ports: SmallVec::new(),
            images: Vec::new(),
            present: false,
            generation: 0,
            annotations: Arc::default(),
        }
    }

    /// Replaces the node-object part (labels, taints, allocatable, images)
    /// from an API Node, keeping the placed pods.
    pub fn set_node(&mut self, node: &corev1::Node) -> Result<(), ResourceError> {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        self.labels = Labels::from_map(node.metadata.labels.as_ref());
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        if *self.annotations != annotations {
            self.annotations = Arc::new(annotations);
        }
        self.taints = spec
            .and_then(|s| s.taints.as_ref())
            .map(|ts| ts.iter().filter_map(Taint::compile).collect())
            .unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let mut alloc = ResourceVec::default();
        let src = status
            .and_then(|s| s.allocatable.as_ref())
            .or_else(|| status.and_then(|s| s.capacity.as_ref()));
        if let Some(m) = src {
            for (k, q) in m {
                alloc.set_quantity(k, &q.0)?;
            }
        }
        self.allocatable = alloc;
        self.images = status
            .and_then(|s| s.images.as_ref())
            .map(|imgs| {
                let mut out = Vec::new();
                for img in imgs {
                    let size = img.size_bytes.unwrap_or(0);
                    for n in img.names.iter().flatten() {
                        out.push((Sym::new(&normalize_image(n)), size));
                    }
                }
                out.sort_unstable();
                out.dedup_by_key(|(n, _)| *n);
                out
            })
            .unwrap_or_default();
        self.present = true;
        self.generation += 1;
        Ok(())
    }

    /// Places `pod` here, adding its requests and ports.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        let s = &pod.spec;
        self.requested.add(&s.requests);
        self.requested[ResourceId::PODS] += 1;
        self.non_zero_requested.add(&s.non_zero_requests);
        self.non_zero_requested[ResourceId::PODS] += 1;
        if s.affinity.has_pod_affinity_terms() {
            self.pods_with_affinity += 1;
        }
        if !s.affinity.required_anti.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.used_ports.extend(s.host_ports.iter().copied());
        self.pods.push(pod);
        self.generation += 1;
    }

    /// Removes the pod with `uid`; returns it if it was here.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let idx = self.pods.iter().position(|p| &*p.uid == uid)?;
        let pod = self.pods.swap_remove(idx);
        let s = &pod.spec;
        self.requested.sub(&s.requests);
        self.requested[ResourceId::PODS] -= 1;
        self.non_zero_requested.sub(&s.non_zero_requests);
        self.non_zero_requested[ResourceId::PODS] -= 1;
        if s.affinity.has_pod_affinity_terms() {
            self.pods_with_affinity -= 1;
        }
        if !s.affinity.required_anti.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        for hp in &s.host_ports {
            if let Some(i) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(i);
            }
        }
        self.generation += 1;
        Some(pod)
    }

    /// Free amount of `r` (allocatable minus requested).
    #[inline]
    pub fn free(&self, r: ResourceId) -> i64 {
        self.allocatable[r] - self.requested[r]
    }
}

/// Normalizes an image name the way kube-scheduler's ImageLocality does: a
/// name without a tag or digest gets `:latest`.
pub fn normalize_image(name: &str) -> String {
    if name.contains('@') {
        return name.to_owned();
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_normalized() {
        assert_eq!(normalize_image("nginx"), "nginx:latest");
        assert_eq!(normalize_image("nginx:1.2"), "nginx:1.2");
        assert_eq!(normalize_image("reg:5000/nginx"), "reg:5000/nginx:latest");
        assert_eq!(normalize_image("a/b@sha256:00"), "a/b@sha256:00");
    }

    #[test]
    fn host_port_conflicts() {
        let p = |ip: &str, port| HostPort {
            protocol: Sym::new("TCP"),
            ip: Sym::new(ip),
            port,
        };
        assert!(p("0.0.0.0", 80).conflicts(&p("10.0.0.1", 80)));
        assert!(p("10.0.0.1", 80).conflicts(&p("10.0.0.1", 80)));
        assert!(!p("10.0.0.1", 80).conflicts(&p("10.0.0.2", 80)));
        assert!(!p("0.0.0.0", 80).conflicts(&p("0.0.0.0", 81)));
        let udp = HostPort {
            protocol: Sym::new("UDP"),
            ..p("0.0.0.0", 80)
        };
        assert!(!udp.conflicts(&p("0.0.0.0", 80)));
    }
}
