//! `strata simulate --html`: the run's report and an occupancy map of the
//! cluster after the run — super-nodes (`strata.io/supernode`) → cabinets
//! (`strata.io/cabinet`) → servers, each server a square coloured by the
//! share of its accelerators (`nvidia.com/gpu` requested against
//! allocatable) in use. One self-contained page: inline SVG, a few lines of
//! inline script, nothing fetched. After loading, the script marks the page
//! `data-drawn` with how many server squares have a size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use strata_scheduler::cache::Snapshot;
use strata_scheduler::resources::ResourceId;

/// Label naming a node's super-node.
pub const SUPERNODE_LABEL: &str = "strata.io/supernode";
/// Label naming a node's cabinet.
pub const CABINET_LABEL: &str = "strata.io/cabinet";

/// One server: accelerators in use and allocatable.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// Node name.
    pub name: String,
    /// Accelerators requested by the pods on it.
    pub used: i64,
    /// Accelerators allocatable.
    pub capacity: i64,
}

/// Super-node → cabinet → servers, sorted by name; nodes without the
/// labels fall under `-`.
pub type Occupancy = BTreeMap<String, BTreeMap<String, Vec<Server>>>;

/// The occupancy of `resource` (e.g. `nvidia.com/gpu`) in `snap`.
pub fn occupancy(snap: &Snapshot, resource: &str) -> Occupancy {
    let mut out = Occupancy::new();
    let Ok(r) = ResourceId::of(resource) else {
        return out;
    };
    for n in snap.nodes() {
        let sn = n.labels.get_str(SUPERNODE_LABEL).unwrap_or("-");
        let cab = n.labels.get_str(CABINET_LABEL).unwrap_or("-");
        out.entry(sn.to_owned())
            .or_default()
            .entry(cab.to_owned())
            .or_default()
            .push(Server {
                name: n.name.as_str().to_owned(),
                used: n.requested[r],
                capacity: n.allocatable[r],
            });
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fill(s: &Server) -> &'static str {
    if s.capacity <= 0 {
        return "#ffffff";
    }
    match s.used * 4 / s.capacity {
        _ if s.used <= 0 => "#e5e8e8",
        0 => "#f9e79f",
        1 => "#f5b041",
        2 | 3 if s.used < s.capacity => "#dc7633",
        _ => "#922b21",
    }
}

/// The page: `title`, the run's text report `table`, and the map.
pub fn occupancy_html(title: &str, table: &str, occ: &Occupancy, resource: &str) -> String {
    const CELL: usize = 9;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>body{{font-family:sans-serif;margin:24px;color:#222}}pre{{font-size:12px;background:#f6f6f6;padding:8px;overflow-x:auto}}.map{{display:flex;flex-wrap:wrap;gap:10px}}.sn{{font-size:11px}}</style></head><body data-drawn="0"><h1>{t}</h1><pre>{table}</pre><h2>Occupancy of {r} after the run</h2><p>Super-node → cabinet (column) → server (square): white no {r}, grey none used, yellow to dark red from a quarter to all used.</p><div class="map">"#,
        t = escape(title),
        table = escape(table),
        r = escape(resource)
    );
    for (sn, cabs) in occ {
        let (used, cap): (i64, i64) = cabs
            .values()
            .flatten()
            .fold((0, 0), |(u, c), s| (u + s.used, c + s.capacity));
        let rows = cabs.values().map(Vec::len).max().unwrap_or(0);
        let (w, h) = (cabs.len() * CELL + 1, rows * CELL + 1);
        let _ = write!(
            out,
            r#"<div class="sn"><div>{} {used}/{cap}</div><svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">"#,
            escape(sn)
        );
        for (x, servers) in cabs.values().enumerate() {
            for (y, s) in servers.iter().enumerate() {
                let _ = write!(
                    out,
                    r##"<rect class="server" x="{}" y="{}" width="{}" height="{}" fill="{}" stroke="#999" stroke-width="0.5"/>"##,
                    x * CELL + 1,
                    y * CELL + 1,
                    CELL - 2,
                    CELL - 2,
                    fill(s)
                );
            }
        }
        out.push_str("</svg></div>");
    }
    out.push_str(
        "</div><script>addEventListener('load',function(){var n=0;document.querySelectorAll('rect.server').forEach(function(r){var b=r.getBBox();if(b.width>0&&b.height>0)n++});document.body.setAttribute('data-drawn',String(n))});</script></body></html>\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_square_per_server_grouped_and_coloured_by_use() {
        let mut occ = Occupancy::new();
        let s = |name: &str, used| Server {
            name: name.into(),
            used,
            capacity: 8,
        };
        occ.entry("sn-0".into())
            .or_default()
            .insert("cab-0".into(), vec![s("a", 0), s("b", 8)]);
        occ.entry("sn-0".into())
            .or_default()
            .insert("cab-1".into(), vec![s("c", 3)]);
        occ.entry("sn-1<".into())
            .or_default()
            .insert("cab-0".into(), vec![s("d", 7)]);
        let html = occupancy_html("t", "report", &occ, "nvidia.com/gpu");
        assert_eq!(html.matches("<rect class=\"server\"").count(), 4);
        assert!(html.contains("sn-0 11/24"), "per super-node totals");
        assert!(html.contains("sn-1&lt;"));
        assert!(html.contains("#922b21") && html.contains("#e5e8e8"));
        assert!(!html.contains("src=\"http") && !html.contains("href="));
    }
}
