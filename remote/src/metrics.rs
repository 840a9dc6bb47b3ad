//! `strata_remote_plugin_*` metrics, shared by every remote plugin of the
//! process. [`register`] adds them to a Prometheus registry (the adapter's
//! `/metrics`); until then they are still counted, and [`encode`] renders
//! them on their own.
//!
//! - `strata_remote_plugin_duration_seconds{plugin,extension_point}`: one
//!   remote call, including a resynchronisation it caused;
//! - `strata_remote_plugin_errors_total{plugin,extension_point,kind}`:
//!   failed calls by kind (`timeout`, `unavailable`, `invalid_response`,
//!   `plugin_error`, `protocol`);
//! - `strata_remote_plugin_sent_bytes_total{plugin,extension_point}`:
//!   encoded request bytes (the snapshot deltas are in them).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PointLabels {
    pub plugin: String,
    pub extension_point: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub plugin: String,
    pub extension_point: &'static str,
    pub kind: &'static str,
}

fn histogram() -> Histogram {
    // 100 µs .. ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub(crate) struct Metrics {
    pub duration: Family<PointLabels, Histogram, fn() -> Histogram>,
    pub errors: Family<ErrorLabels, Counter>,
    pub sent_bytes: Family<PointLabels, Counter>,
}

pub(crate) fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        duration: Family::new_with_constructor(histogram as fn() -> Histogram),
        errors: Family::default(),
        sent_bytes: Family::default(),
    })
}

/// Adds the remote plugin metrics to `registry`.
pub fn register(registry: &mut Registry) {
    let m = get();
    registry.register(
        "strata_remote_plugin_duration_seconds",
        "Duration of one call to a remote plugin, by plugin and extension point",
        m.duration.clone(),
    );
    registry.register(
        "strata_remote_plugin_errors",
        "Failed calls to a remote plugin, by plugin, extension point and kind",
        m.errors.clone(),
    );
    registry.register(
        "strata_remote_plugin_sent_bytes",
        "Encoded request bytes sent to a remote plugin, by plugin and extension point",
        m.sent_bytes.clone(),
    );
}

/// The remote plugin metrics alone, in the Prometheus text format.
pub fn encode() -> String {
    let mut r = Registry::default();
    register(&mut r);
    let mut s = String::new();
    if prometheus_client::encoding::text::encode(&mut s, &r).is_err() {
        s.clear();
    }
    s
}
