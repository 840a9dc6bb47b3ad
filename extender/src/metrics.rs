//! Metrics of extender calls, by extender and verb, for `/metrics`:
//!
//! - `strata_remote_plugin_duration_seconds{plugin,extension_point,result}`:
//!   each call, from sending to the decoded answer (`result`: `success` or
//!   `error`);
//! - `strata_remote_plugin_errors_total{plugin,extension_point,reason}`:
//!   failed calls by cause (`connect`, `timeout`, `http_status`, `decode`,
//!   `too_large`, `remote_error`, `unknown_node`, `bad_score`).
//!
//! `plugin` is the extender's `urlPrefix`, `extension_point` the verb's
//! role (`filter`, `prioritize`, `bind`). The families are process-wide
//! (every extender of every scheduler in the process counts here);
//! [`register`] adds them to a Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    extension_point: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    plugin: String,
    extension_point: &'static str,
    reason: &'static str,
}

fn histogram() -> Histogram {
    // 100 µs .. ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

struct Metrics {
    duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    duration: Family::new_with_constructor(histogram),
    errors: Family::default(),
});

/// Adds the extender metrics to `registry` (they share the process-wide
/// values).
pub fn register(registry: &mut Registry) {
    registry.register(
        "strata_remote_plugin_duration_seconds",
        "Duration of calls to remote plugins (kube-scheduler extenders), by plugin and extension point",
        METRICS.duration.clone(),
    );
    registry.register(
        "strata_remote_plugin_errors",
        "Failed calls to remote plugins (kube-scheduler extenders), by plugin, extension point and reason",
        METRICS.errors.clone(),
    );
}

/// Records one call.
pub(crate) fn observe(
    plugin: &str,
    point: &'static str,
    took: Duration,
    error: Option<&'static str>,
) {
    METRICS
        .duration
        .get_or_create(&CallLabels {
            plugin: plugin.to_owned(),
            extension_point: point,
            result: if error.is_some() { "error" } else { "success" },
        })
        .observe(took.as_secs_f64());
    if let Some(reason) = error {
        METRICS
            .errors
            .get_or_create(&ErrorLabels {
                plugin: plugin.to_owned(),
                extension_point: point,
                reason,
            })
            .inc();
    }
}

/// The metrics in the text exposition format (for tests and for binaries
/// without a registry of their own).
pub fn encode() -> String {
    let mut r = Registry::default();
    register(&mut r);
    let mut s = String::new();
    if prometheus_client::encoding::text::encode(&mut s, &r).is_err() {
        s.clear();
    }
    s
}
