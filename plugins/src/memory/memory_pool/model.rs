//! The model: what a pod asks (`strata.io/memory-borrow`), what a node
//! offers (`strata.io/memory-lendable`, `strata.io/memory-medium`), the
//! plugin's args, and the borrow plan written on the pod.
//!
//! Everything here parses outside input and never panics: a malformed pod
//! annotation is an error the plugin turns into an UnschedulableAndUnresolvable
//! status naming the annotation; a malformed node annotation makes that node
//! lend nothing (and is logged), it never rejects other pods.

use serde::Deserialize;
use std::collections::BTreeMap;
use strata_scheduler::resources::Quantity;
use strata_scheduler::sdk::{NodeInfo, PluginArgsError, PodInfo, ResourceId, Sym, parse_args};

/// Pod annotation: how much remote memory the pod borrows, as an amount
/// (`16Gi`) on top of its memory request, or as a share of its total memory
/// (`25%`: the request is the local 75%, the plugin adds a third of it as
/// remote memory).
pub const BORROW: &str = "strata.io/memory-borrow";
/// Pod annotation written at PreBind: the borrow plan (JSON, see
/// [`PlanDoc`]).
pub const PLAN: &str = "strata.io/memory-borrow-plan";
/// Node annotation: how much of its memory the node lends to its pool, as an
/// amount (`64Gi`) or a share of its allocatable memory (`25%`).
pub const LENDABLE: &str = "strata.io/memory-lendable";
/// Node label or annotation: the medium of the memory the node lends
/// (`dram` or `hbm`).
pub const MEDIUM: &str = "strata.io/memory-medium";

/// The largest share of its memory a pod may borrow, in basis points (90%).
pub const MAX_SHARE_BP: i64 = 9_000;
/// The largest amount one pod or node may name: 64 TiB.
pub const MAX_BYTES: i64 = 64 << 40;

/// A memory medium. The set is small and fixed: each medium is one slot of
/// the pool aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    /// Server DRAM.
    Dram = 0,
    /// Accelerator high-bandwidth memory.
    Hbm = 1,
}

/// How many media there are.
pub const MEDIA: usize = 2;

impl Medium {
    /// All media, by slot.
    pub const ALL: [Medium; MEDIA] = [Medium::Dram, Medium::Hbm];

    /// The slot of this medium.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// The name used in annotations and plans.
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Dram => "dram",
            Medium::Hbm => "hbm",
        }
    }

    /// Parses an annotation value.
    pub fn parse(s: &str) -> Option<Medium> {
        match s.trim() {
            "dram" | "DRAM" => Some(Medium::Dram),
            "hbm" | "HBM" => Some(Medium::Hbm),
            _ => None,
        }
    }
}

/// How far a lender is from the borrower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Distance {
    /// In the borrower's near domain (by default its cabinet).
    Near = 0,
    /// Elsewhere in the borrower's pool domain (by default its super-node).
    Pool = 1,
}

impl Distance {
    /// The name used in plans: the level's short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Distance::Near => "near",
            Distance::Pool => "pool",
        }
    }
}

/// Why an annotation or an amount is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Neither an amount nor a share.
    #[error(
        "annotation {key}: {value:?} is neither a share such as \"25%\" nor an amount such as \"16Gi\""
    )]
    Malformed {
        /// The annotation.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// A share outside the accepted range.
    #[error("annotation {key}: share {value:?} is not within 0%..={max}%")]
    ShareOutOfRange {
        /// The annotation.
        key: &'static str,
        /// Its value.
        value: String,
        /// The largest accepted share, in percent.
        max: i64,
    },
    /// An amount below zero or above [`MAX_BYTES`].
    #[error("annotation {key}: amount {value:?} is not within 0..=64Ti")]
    AmountOutOfRange {
        /// The annotation.
        key: &'static str,
        /// Its value.
        value: String,
    },
}

/// An annotation value: an amount or a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Bytes.
    Bytes(i64),
    /// Basis points (1% = 100).
    Share(i64),
}

/// Parses `25%`, `12.5%` or a Kubernetes quantity (`16Gi`). Shares are
/// bounded by `max_bp` basis points, amounts by [`MAX_BYTES`].
pub fn parse_ask(key: &'static str, value: &str, max_bp: i64) -> Result<Ask, ModelError> {
    let v = value.trim();
    if let Some(num) = v.strip_suffix('%') {
        let bp = parse_basis_points(num.trim()).ok_or_else(|| ModelError::Malformed {
            key,
            value: value.to_owned(),
        })?;
        if !(0..=max_bp).contains(&bp) {
            return Err(ModelError::ShareOutOfRange {
                key,
                value: value.to_owned(),
                max: max_bp / 100,
            });
        }
        return Ok(Ask::Share(bp));
    }
    let q = Quantity::parse(v).map_err(|_| ModelError::Malformed {
        key,
        value: value.to_owned(),
    })?;
    let b = q.value();
    if !(0..=MAX_BYTES).contains(&b) {
        return Err(ModelError::AmountOutOfRange {
            key,
            value: value.to_owned(),
        });
    }
    Ok(Ask::Bytes(b))
}

/// `12`, `12.5`, `12.25` → basis points; at most two decimals.
fn parse_basis_points(s: &str) -> Option<i64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || int.len() > 5 || frac.len() > 2 {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: i64 = int.parse().ok()?;
    let f: i64 = if frac.is_empty() {
        0
    } else {
        let v: i64 = frac.parse().ok()?;
        if frac.len() == 1 { v * 10 } else { v }
    };
    Some(i * 100 + f)
}

/// The remote memory a share of `bp` basis points of the pod's total memory
/// means, when `local` bytes are requested locally: `local × bp / (10000 −
/// bp)`, rounded up to a whole MiB.
pub fn remote_for_share(local: i64, bp: i64) -> i64 {
    if bp <= 0 || local <= 0 {
        return 0;
    }
    let bp = bp.min(MAX_SHARE_BP) as i128;
    let raw = ceil_div(local as i128 * bp, 10_000 - bp);
    let mib = 1i128 << 20;
    (ceil_div(raw, mib) * mib).min(MAX_BYTES as i128) as i64
}

fn ceil_div(a: i128, b: i128) -> i128 {
    (a + b - 1) / b
}

/// What a pod asks: its local memory (the request) and the remote memory
/// it borrows. `None` when the pod does not ask.
pub fn pod_ask(pod: &PodInfo) -> Result<Option<PodBorrow>, ModelError> {
    let Some(v) = pod.annotations.get(BORROW) else {
        return Ok(None);
    };
    let local = pod.spec.requests[ResourceId::MEMORY];
    let remote = match parse_ask(BORROW, v, MAX_SHARE_BP)? {
        Ask::Bytes(b) => b,
        Ask::Share(bp) => remote_for_share(local, bp),
    };
    if remote == 0 {
        return Ok(None);
    }
    Ok(Some(PodBorrow { local, remote }))
}

/// A pod's memory split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodBorrow {
    /// Requested on its node (the pod's memory request).
    pub local: i64,
    /// Borrowed from lenders in its pool domain.
    pub remote: i64,
}

/// What a node offers its pool, read from its annotations and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The most it lends (bytes), before its own pods' use is taken off.
    pub cap: i64,
    /// Its medium.
    pub medium: Medium,
}

/// The node's offer: its annotation, else the args' default share of its
/// allocatable memory. A malformed annotation offers nothing (`Err` says
/// why, for the log).
pub fn node_offer(node: &NodeInfo, args: &MemoryPoolArgs) -> Result<Offer, ModelError> {
    node_offer_with(node, args, Sym::new(MEDIUM))
}

/// [`node_offer`] with the medium label key already interned.
pub fn node_offer_with(
    node: &NodeInfo,
    args: &MemoryPoolArgs,
    medium_key: Sym,
) -> Result<Offer, ModelError> {
    let alloc = node.allocatable[ResourceId::MEMORY];
    let medium_value = node
        .annotations
        .get(MEDIUM)
        .map(String::as_str)
        .or_else(|| node.labels.get(medium_key).map(|v| v.as_str()));
    let medium = match medium_value {
        None => args.default_medium,
        Some(v) => Medium::parse(v).ok_or_else(|| ModelError::Malformed {
            key: MEDIUM,
            value: v.to_owned(),
        })?,
    };
    let cap = match node.annotations.get(LENDABLE) {
        Some(v) => match parse_ask(LENDABLE, v, 10_000)? {
            Ask::Bytes(b) => b,
            Ask::Share(bp) => (alloc as i128 * bp as i128 / 10_000) as i64,
        },
        None => (alloc as i128 * args.default_lendable_bp as i128 / 10_000) as i64,
    };
    Ok(Offer {
        cap: cap.clamp(0, alloc.max(0)),
        medium,
    })
}

/// `pluginConfig` args of `MemoryPool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPoolArgs {
    /// The node label whose value names a pool (default
    /// `strata.io/supernode`).
    pub pool_level: String,
    /// The node label of the nearer level inside a pool (default
    /// `strata.io/cabinet`; empty: no nearer level).
    pub near_level: String,
    /// Share of allocatable memory a node without `strata.io/memory-lendable`
    /// lends, in basis points (default 0: such nodes lend nothing).
    pub default_lendable_bp: i64,
    /// Medium of a node without `strata.io/memory-medium`.
    pub default_medium: Medium,
    /// Preference per medium, 0..=100 (default dram 100, hbm 50).
    pub medium_weights: [i64; MEDIA],
    /// Cap on the remote memory all pods of a namespace hold, by namespace.
    pub namespace_caps: BTreeMap<String, i64>,
    /// Cap for namespaces not in `namespace_caps` (default: none).
    pub default_namespace_cap: Option<i64>,
}

impl Default for MemoryPoolArgs {
    fn default() -> Self {
        MemoryPoolArgs {
            pool_level: "strata.io/supernode".to_owned(),
            near_level: "strata.io/cabinet".to_owned(),
            default_lendable_bp: 0,
            default_medium: Medium::Dram,
            medium_weights: [100, 50],
            namespace_caps: BTreeMap::new(),
            default_namespace_cap: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct RawArgs {
    pool_level: Option<String>,
    near_level: Option<String>,
    default_lendable_share: Option<String>,
    default_medium: Option<Medium>,
    medium_weights: Option<BTreeMap<Medium, i64>>,
    namespace_caps: Option<BTreeMap<String, String>>,
    default_namespace_cap: Option<String>,
}

impl MemoryPoolArgs {
    /// Parses and checks the args; errors name the field.
    pub fn parse(v: Option<&serde_json::Value>) -> Result<MemoryPoolArgs, PluginArgsError> {
        let raw: RawArgs = parse_args(v)?;
        let mut a = MemoryPoolArgs::default();
        if let Some(p) = raw.pool_level {
            if p.is_empty() {
                return Err(PluginArgsError::new("poolLevel", "must name a node label"));
            }
            a.pool_level = p;
        }
        if let Some(n) = raw.near_level {
            if n == a.pool_level {
                return Err(PluginArgsError::new(
                    "nearLevel",
                    "must differ from poolLevel (empty for none)",
                ));
            }
            a.near_level = n;
        }
        if let Some(s) = raw.default_lendable_share {
            a.default_lendable_bp = match parse_ask(LENDABLE, &s, 10_000) {
                Ok(Ask::Share(bp)) => bp,
                _ => {
                    return Err(PluginArgsError::new(
                        "defaultLendableShare",
                        format!("{s:?} is not a share within 0%..=100%"),
                    ));
                }
            };
        }
        if let Some(m) = raw.default_medium {
            a.default_medium = m;
        }
        if let Some(w) = raw.medium_weights {
            for (m, v) in w {
                if !(0..=100).contains(&v) {
                    return Err(PluginArgsError::new(
                        format!("mediumWeights.{}", m.as_str()),
                        format!("{v} is not within 0..=100"),
                    ));
                }
                a.medium_weights[m.slot()] = v;
            }
        }
        // A namespace cap sums many pods: up to an exbibyte.
        let amount = |field: String, s: &str| match Quantity::parse(s.trim()).map(|q| q.value()) {
            Ok(b) if (0..=1i64 << 60).contains(&b) => Ok(b),
            _ => Err(PluginArgsError::new(
                field,
                format!("{s:?} is not an amount within 0..=1Ei such as \"256Gi\""),
            )),
        };
        for (ns, cap) in raw.namespace_caps.unwrap_or_default() {
            let b = amount(format!("namespaceCaps.{ns}"), &cap)?;
            a.namespace_caps.insert(ns, b);
        }
        if let Some(c) = raw.default_namespace_cap {
            a.default_namespace_cap = Some(amount("defaultNamespaceCap".to_owned(), &c)?);
        }
        Ok(a)
    }

    /// The cap on the remote memory of namespace `ns`, if any.
    pub fn cap_of(&self, ns: &str) -> Option<i64> {
        self.namespace_caps
            .get(ns)
            .copied()
            .or(self.default_namespace_cap)
    }
}

/// The borrow plan as written on the pod (`strata.io/memory-borrow-plan`),
/// for the node agent: which servers lend how many bytes, of which medium,
/// at which distance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanDoc {
    /// The pool domain (its label value).
    pub pool: String,
    /// Remote bytes in total.
    pub remote_bytes: i64,
    /// One entry per lender.
    pub lenders: Vec<LoanDoc>,
}

/// One lender of a [`PlanDoc`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoanDoc {
    /// The lender's node name.
    pub node: String,
    /// Bytes lent.
    pub bytes: i64,
    /// `dram` or `hbm`.
    pub medium: String,
    /// `near` (same cabinet) or `pool` (same super-node).
    pub distance: String,
}

pub use crate::common::memory_borrow::human;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn asks_parse_as_shares_or_amounts() {
        assert_eq!(parse_ask(BORROW, "25%", MAX_SHARE_BP), Ok(Ask::Share(2500)));
        assert_eq!(
            parse_ask(BORROW, " 12.5% ", MAX_SHARE_BP),
            Ok(Ask::Share(1250))
        );
        assert_eq!(
            parse_ask(BORROW, "16Gi", MAX_SHARE_BP),
            Ok(Ask::Bytes(16 << 30))
        );
        for bad in ["", "%", "abc", "1.234%", "-5%", "25 %x", "1e3%"] {
            assert!(
                matches!(
                    parse_ask(BORROW, bad, MAX_SHARE_BP),
                    Err(ModelError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_ask(BORROW, "95%", MAX_SHARE_BP),
            Err(ModelError::ShareOutOfRange { .. })
        ));
        assert!(matches!(
            parse_ask(BORROW, "65Ti", MAX_SHARE_BP),
            Err(ModelError::AmountOutOfRange { .. })
        ));
        let e = parse_ask(BORROW, "lots", MAX_SHARE_BP)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("strata.io/memory-borrow") && e.contains("lots"),
            "{e}"
        );
    }

    #[test]
    fn a_share_is_of_the_total_memory() {
        // 48Gi local at 25% remote: 16Gi remote, 64Gi in all.
        assert_eq!(remote_for_share(48 << 30, 2500), 16 << 30);
        assert_eq!(remote_for_share(48 << 30, 0), 0);
        // Rounded up to a MiB.
        assert_eq!(remote_for_share(3, 5000), 1 << 20);
    }

    #[test]
    fn args_default_and_errors_name_the_field() {
        let a = MemoryPoolArgs::parse(None).unwrap();
        assert_eq!(a, MemoryPoolArgs::default());
        let a = MemoryPoolArgs::parse(Some(&json!({
            "defaultLendableShare": "25%",
            "mediumWeights": {"hbm": 20},
            "namespaceCaps": {"team-a": "256Gi"},
            "defaultNamespaceCap": "64Gi",
        })))
        .unwrap();
        assert_eq!(a.default_lendable_bp, 2500);
        assert_eq!(a.medium_weights, [100, 20]);
        assert_eq!(a.cap_of("team-a"), Some(256 << 30));
        assert_eq!(a.cap_of("other"), Some(64 << 30));
        for (v, field) in [
            (
                json!({"defaultLendableShare": "16Gi"}),
                "defaultLendableShare",
            ),
            (
                json!({"mediumWeights": {"dram": 101}}),
                "mediumWeights.dram",
            ),
            (json!({"mediumWeights": {"cxl": 1}}), "mediumWeights"),
            (json!({"namespaceCaps": {"a": "50%"}}), "namespaceCaps.a"),
            (json!({"namespaceCaps": {"a": "2Ei"}}), "namespaceCaps.a"),
            (json!({"poolLevel": ""}), "poolLevel"),
            (json!({"nearLevel": "strata.io/supernode"}), "nearLevel"),
            (json!({"poolLevl": "x"}), ""),
        ] {
            let e = MemoryPoolArgs::parse(Some(&v)).unwrap_err();
            assert!(e.field.starts_with(field), "{v}: {e}");
        }
    }

    #[test]
    fn human_amounts() {
        assert_eq!(human(12 << 30), "12Gi");
        assert_eq!(human(512 << 20), "512Mi");
        assert_eq!(human((3 << 30) + (512 << 20)), "3.5Gi");
    }
}
