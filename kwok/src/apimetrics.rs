//! The API server's own view of a run, from its `/metrics`: how long the
//! requests that matter took (`apiserver_request_duration_seconds`, per verb
//! and resource) and how many were in flight
//! (`apiserver_current_inflight_requests`). A run reads the text before and
//! after and reports the difference, so it shows whether the API server,
//! not the scheduler, set the pace.

use std::collections::BTreeMap;

/// Request durations by `(verb, resource, subresource)`: `(sum s, count)`.
pub type Durations = BTreeMap<(String, String, String), (f64, f64)>;

/// Labels of one sample line (`name{a="x",b="y"} value`), and its value.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut map = BTreeMap::new();
    // Label values here never hold `",` (verbs, resources, kinds).
    for pair in labels.split("\",") {
        let Some((k, v)) = pair.split_once("=\"") else {
            continue;
        };
        map.insert(k.trim_start_matches(','), v.trim_end_matches('"'));
    }
    Some((name, map, value))
}

/// `apiserver_request_duration_seconds` sums and counts in `text`.
pub fn request_durations(text: &str) -> Durations {
    let mut out: Durations = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, v)) = parse_line(line) else {
            continue;
        };
        let is_sum = name == "apiserver_request_duration_seconds_sum";
        if !is_sum && name != "apiserver_request_duration_seconds_count" {
            continue;
        }
        let get = |k| labels.get(k).copied().unwrap_or("").to_owned();
        let e = out
            .entry((get("verb"), get("resource"), get("subresource")))
            .or_default();
        if is_sum {
            e.0 += v;
        } else {
            e.1 += v;
        }
    }
    out
}

/// `apiserver_current_inflight_requests` by `request_kind`.
pub fn inflight(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(parse_line)
        .filter(|(n, _, _)| *n == "apiserver_current_inflight_requests")
        .map(|(_, l, v)| (l.get("request_kind").copied().unwrap_or("").to_owned(), v))
        .collect()
}

/// Requests of one kind during a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RequestStats {
    /// `VERB resource[/subresource]`.
    pub request: String,
    /// How many.
    pub count: f64,
    /// Mean duration, milliseconds.
    pub mean_ms: f64,
}

/// What happened between two readings: the kinds of request with at least
/// `min_count` calls, busiest first.
pub fn delta(before: &Durations, after: &Durations, min_count: f64) -> Vec<RequestStats> {
    let mut out: Vec<RequestStats> = after
        .iter()
        .filter_map(|(k, (s1, c1))| {
            let (s0, c0) = before.get(k).copied().unwrap_or((0.0, 0.0));
            let (s, c) = (s1 - s0, c1 - c0);
            (c >= min_count && c > 0.0).then(|| RequestStats {
                request: if k.2.is_empty() {
                    format!("{} {}", k.0, k.1)
                } else {
                    format!("{} {}/{}", k.0, k.1, k.2)
                },
                count: c,
                mean_ms: s / c * 1e3,
            })
        })
        .collect();
    out.sort_by(|a, b| b.count.total_cmp(&a.count));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"# HELP apiserver_request_duration_seconds ...
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1",le="0.005"} 10
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 0.5
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 100
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 1
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 2
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 3
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 2
apiserver_current_inflight_requests{request_kind="mutating"} 7
apiserver_current_inflight_requests{request_kind="readOnly"} 2
"#;

    #[test]
    fn reads_durations_and_inflight() {
        let d = request_durations(A);
        let k = ("POST".to_owned(), "pods".to_owned(), "binding".to_owned());
        assert_eq!(d[&k], (0.5, 100.0));
        // Scopes are summed.
        assert_eq!(
            d[&("LIST".into(), "pods".into(), String::new())],
            (4.0, 4.0)
        );
        let i = inflight(A);
        assert_eq!(i["mutating"], 7.0);
        assert_eq!(i["readOnly"], 2.0);
    }

    #[test]
    fn delta_keeps_busy_requests() {
        let before = request_durations(A);
        let after_text = A.replace("\"v1\"} 0.5", "\"v1\"} 2.5").replace(
            "binding\",verb=\"POST\",version=\"v1\"} 100",
            "binding\",verb=\"POST\",version=\"v1\"} 1100",
        );
        let after = request_durations(&after_text);
        let d = delta(&before, &after, 1.0);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].request, "POST pods/binding");
        assert_eq!(d[0].count, 1000.0);
        assert!((d[0].mean_ms - 2.0).abs() < 1e-9);
    }
}
