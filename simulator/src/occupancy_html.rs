//! `strata simulate --html`: the run's report and an occupancy map of the
//! cluster after the run — super-nodes (`strata.io/supernode`) → cabinets
//! (`strata.io/cabinet`) → servers, each server a square coloured by the
//! share of its accelerators (`nvidia.com/gpu` requested against
//! allocatable) in use. One self-contained page: inline SVG, a few lines of
//! inline script, nothing fetched. Where groups landed: each group (by
//! [`crate::groups::group_key`]: the Strata or coscheduling label, or a
//! LeaderWorkerSet replica) has a colour, a server holding members of a
//! group shows a dot of it, and a table lists every group's servers,
//! cabinets and super-nodes. After loading, the script marks the page
//! `data-drawn` with how many server squares have a size and
//! `data-groups-drawn` with how many group dots do.

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
    /// Groups with members bound here, sorted.
    pub groups: Vec<String>,
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
        let mut groups: Vec<String> = n
            .pods
            .iter()
            .filter_map(|p| crate::groups::group_key(p))
            .collect();
        groups.sort();
        groups.dedup();
        out.entry(sn.to_owned())
            .or_default()
            .entry(cab.to_owned())
            .or_default()
            .push(Server {
                name: n.name.as_str().to_owned(),
                used: n.requested[r],
                capacity: n.allocatable[r],
                groups,
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
    // Larger squares when the cluster is small enough to afford them.
    let servers: usize = occ.values().flat_map(|c| c.values()).map(Vec::len).sum();
    let cell: usize = if servers <= 1024 { 16 } else { 9 };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>body{{font-family:sans-serif;margin:24px;color:#222}}pre{{font-size:12px;background:#f6f6f6;padding:8px;overflow-x:auto}}table{{border-collapse:collapse;font-size:12px}}td,th{{padding:2px 8px;text-align:left}}.map{{display:flex;flex-wrap:wrap;gap:10px}}.sn{{font-size:11px}}</style></head><body data-drawn="0"><h1>{t}</h1><pre>{table}</pre><h2>Occupancy of {r} after the run</h2><p>Super-node → cabinet (column) → server (square): white no {r}, grey none used, yellow to dark red from a quarter to all used; a coloured dot marks a group's members (hover for names).</p><div class="map">"#,
        t = escape(title),
        table = escape(table),
        r = escape(resource)
    );
    let land = landings(occ);
    let index: BTreeMap<&str, usize> = land
        .keys()
        .copied()
        .enumerate()
        .map(|(i, g)| (g, i))
        .collect();
    for (sn, cabs) in occ {
        let (used, cap): (i64, i64) = cabs
            .values()
            .flatten()
            .fold((0, 0), |(u, c), s| (u + s.used, c + s.capacity));
        let rows = cabs.values().map(Vec::len).max().unwrap_or(0);
        let (w, h) = (cabs.len() * cell + 1, rows * cell + 1);
        let _ = write!(
            out,
            r#"<div class="sn"><div>{} {used}/{cap}</div><svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">"#,
            escape(sn)
        );
        for (x, servers) in cabs.values().enumerate() {
            for (y, s) in servers.iter().enumerate() {
                let _ = write!(
                    out,
                    r##"<rect class="server" x="{}" y="{}" width="{}" height="{}" fill="{}" stroke="#999" stroke-width="0.5"><title>{} {}/{}{}</title></rect>"##,
                    x * cell + 1,
                    y * cell + 1,
                    cell - 2,
                    cell - 2,
                    fill(s),
                    escape(&s.name),
                    s.used,
                    s.capacity,
                    escape(&s.groups.iter().map(|g| format!(" {g}")).collect::<String>())
                );
                if let Some(g) = s.groups.first() {
                    let _ = write!(
                        out,
                        r##"<circle class="group" cx="{}" cy="{}" r="{}" fill="{}" stroke="#fff" stroke-width="0.6"><title>{}</title></circle>"##,
                        x * cell + cell / 2,
                        y * cell + cell / 2,
                        cell as f64 / 4.0,
                        group_colour(&index, g),
                        escape(g)
                    );
                }
            }
        }
        out.push_str("</svg></div>");
    }
    out.push_str("</div>");
    groups_table(&mut out, &land, &index);
    out.push_str(
        "<script>addEventListener('load',function(){function drawn(q){var n=0;document.querySelectorAll(q).forEach(function(r){var b=r.getBBox();if(b.width>0&&b.height>0)n++});return String(n)}document.body.setAttribute('data-drawn',drawn('rect.server'));document.body.setAttribute('data-groups-drawn',drawn('circle.group'))});</script></body></html>\n",
    );
    out
}

/// Distinct colours for groups, reused in order.
const GROUP_COLOURS: [&str; 12] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#e377c2", "#8c564b", "#7f7f7f", "#bcbd22",
    "#393b79", "#637939", "#3182bd", "#6b6ecf",
];

/// Groups shown in the table at most (the dots show all).
const GROUP_ROWS: usize = 500;

fn group_colour(index: &BTreeMap<&str, usize>, g: &str) -> &'static str {
    GROUP_COLOURS[index.get(g).copied().unwrap_or(0) % GROUP_COLOURS.len()]
}

/// Where each group landed: its servers, cabinets and super-nodes.
#[derive(Default)]
struct Landing<'a> {
    servers: usize,
    cabinets: std::collections::BTreeSet<(&'a str, &'a str)>,
    supernodes: std::collections::BTreeSet<&'a str>,
}

fn landings(occ: &Occupancy) -> BTreeMap<&str, Landing<'_>> {
    let mut m: BTreeMap<&str, Landing<'_>> = BTreeMap::new();
    for (sn, cabs) in occ {
        for (cab, servers) in cabs {
            for s in servers {
                for g in &s.groups {
                    let l = m.entry(g.as_str()).or_default();
                    l.servers += 1;
                    l.cabinets.insert((sn.as_str(), cab.as_str()));
                    l.supernodes.insert(sn.as_str());
                }
            }
        }
    }
    m
}

fn groups_table(
    out: &mut String,
    land: &BTreeMap<&str, Landing<'_>>,
    index: &BTreeMap<&str, usize>,
) {
    if land.is_empty() {
        out.push_str("<p>No pod groups are bound.</p>");
        return;
    }
    let whole = land.values().filter(|l| l.supernodes.len() == 1).count();
    let _ = write!(
        out,
        "<h2>Where groups landed</h2><p>{} groups bound, {whole} inside one super-node. A dot on a server is the first (by name) group with members there.</p><table><tr><th></th><th>group</th><th>servers</th><th>cabinets</th><th>super-nodes</th></tr>",
        land.len()
    );
    for (g, l) in land.iter().take(GROUP_ROWS) {
        let sns: Vec<&str> = l.supernodes.iter().copied().collect();
        let _ = write!(
            out,
            r#"<tr><td><span style="display:inline-block;width:10px;height:10px;border-radius:5px;background:{}"></span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            group_colour(index, g),
            escape(g),
            l.servers,
            l.cabinets.len(),
            escape(&sns.join(", "))
        );
    }
    out.push_str("</table>");
    if land.len() > GROUP_ROWS {
        let _ = write!(out, "<p>… and {} more groups.</p>", land.len() - GROUP_ROWS);
    }
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
            groups: vec![],
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
        assert!(html.contains("No pod groups are bound"));
    }

    #[test]
    fn groups_get_a_dot_per_server_and_a_row_naming_their_domains() {
        let s = |name: &str, groups: &[&str]| Server {
            name: name.into(),
            used: 8,
            capacity: 8,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        let mut occ = Occupancy::new();
        occ.entry("sn-0".into()).or_default().insert(
            "cab-0".into(),
            vec![s("a", &["ns/job-0"]), s("b", &["ns/job-0", "ns/job-1"])],
        );
        occ.entry("sn-1".into())
            .or_default()
            .insert("cab-0".into(), vec![s("c", &["ns/job-1"]), s("d", &[])]);
        let html = occupancy_html("t", "report", &occ, "nvidia.com/gpu");
        assert_eq!(html.matches("<circle class=\"group\"").count(), 3);
        assert!(
            html.contains("2 groups bound, 1 inside one super-node"),
            "{html}"
        );
        assert!(html.contains("<td>ns/job-1</td><td>2</td><td>2</td><td>sn-0, sn-1</td>"));
        assert!(html.contains("<td>ns/job-0</td><td>2</td><td>1</td><td>sn-0</td>"));
        // Each group its own colour.
        assert!(html.contains(GROUP_COLOURS[0]) && html.contains(GROUP_COLOURS[1]));
    }
}
