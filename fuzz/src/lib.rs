//! Helpers the fuzz targets share: a line format that turns fuzz input into
//! the API objects (a Node, a Pod) whose annotations and resources the
//! production parsers read.
//!
//! The format is text so the seed corpus stays readable and the fuzzer's
//! mutations land on the values, not on an encoding. One item per line,
//! `SECTION KEY=VALUE` (a line without `=` has an empty value; unknown
//! sections and lines starting with `#` are ignored):
//!
//! - `node KEY=VALUE`: a Node annotation;
//! - `alloc RESOURCE=QUANTITY`: a Node allocatable entry;
//! - `annotation KEY=VALUE`, `label KEY=VALUE`: the Pod's;
//! - `container NAME`: starts a container (the first `limit` or `request`
//!   before any starts one named `main`);
//! - `limit RESOURCE=QUANTITY`, `request RESOURCE=QUANTITY`: the current
//!   container's;
//! - `level KEY`: a topology level (outermost first).
//!
//! Nothing here parses what production parses: the targets hand these
//! objects to the real entry points.

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// `(section, key, value)` for each line of `text`.
pub fn items(text: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (section, rest) = l.split_once(' ')?;
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            Some((section, k, v))
        })
}

/// What the line format describes.
#[derive(Default, Debug)]
pub struct Objects {
    /// Node annotations.
    pub node_annotations: BTreeMap<String, String>,
    /// Node allocatable.
    pub allocatable: BTreeMap<String, Quantity>,
    /// Pod annotations.
    pub annotations: BTreeMap<String, String>,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Containers: name, limits, requests.
    pub containers: Vec<(
        String,
        BTreeMap<String, Quantity>,
        BTreeMap<String, Quantity>,
    )>,
    /// Topology levels.
    pub levels: Vec<String>,
}

impl Objects {
    /// Reads the line format.
    pub fn parse(text: &str) -> Objects {
        let mut o = Objects::default();
        for (section, k, v) in items(text) {
            let q = || Quantity(v.to_owned());
            match section {
                "node" => {
                    o.node_annotations.insert(k.to_owned(), v.to_owned());
                }
                "alloc" => {
                    o.allocatable.insert(k.to_owned(), q());
                }
                "annotation" => {
                    o.annotations.insert(k.to_owned(), v.to_owned());
                }
                "label" => {
                    o.labels.insert(k.to_owned(), v.to_owned());
                }
                "container" => {
                    o.containers
                        .push((k.to_owned(), Default::default(), Default::default()))
                }
                "limit" | "request" => {
                    if o.containers.is_empty() {
                        o.containers.push((
                            "main".to_owned(),
                            Default::default(),
                            Default::default(),
                        ));
                    }
                    let c = o.containers.last_mut().expect("one container");
                    let map = if section == "limit" {
                        &mut c.1
                    } else {
                        &mut c.2
                    };
                    map.insert(k.to_owned(), q());
                }
                "level" => o.levels.push(k.to_owned()),
                _ => {}
            }
        }
        o
    }

    /// The Node `node-0`.
    pub fn node(&self) -> corev1::Node {
        corev1::Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("node-0".to_owned()),
                annotations: Some(self.node_annotations.clone()),
                ..Default::default()
            },
            status: Some(corev1::NodeStatus {
                allocatable: Some(self.allocatable.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The Pod `default/pod-0`, unbound.
    pub fn pod(&self) -> corev1::Pod {
        let containers = self
            .containers
            .iter()
            .map(|(name, limits, requests)| corev1::Container {
                name: name.clone(),
                resources: Some(corev1::ResourceRequirements {
                    limits: (!limits.is_empty()).then(|| limits.clone()),
                    requests: (!requests.is_empty()).then(|| requests.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        corev1::Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("pod-0".to_owned()),
                namespace: Some("default".to_owned()),
                uid: Some("uid-0".to_owned()),
                annotations: Some(self.annotations.clone()),
                labels: Some(self.labels.clone()),
                ..Default::default()
            },
            spec: Some(corev1::PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
