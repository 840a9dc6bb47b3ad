//! Resource names, quantities and the fixed-size vectors the hot path adds and
//! compares.
//!
//! Every resource name is mapped once to a [`ResourceId`], an index into a
//! [`ResourceVec`] of [`MAX_RESOURCES`] slots. `cpu` is kept in millicores,
//! everything else in whole units (bytes for memory and storage), rounded up as
//! Kubernetes' `Quantity.Value()` does.

use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::fmt;
use std::ops::{Index, IndexMut};
use std::sync::LazyLock;

/// How many distinct resource names one process can track.
pub const MAX_RESOURCES: usize = 32;

/// Index of a resource name in a [`ResourceVec`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ResourceId(u8);

impl ResourceId {
    /// `cpu`, in millicores.
    pub const CPU: ResourceId = ResourceId(0);
    /// `memory`, in bytes.
    pub const MEMORY: ResourceId = ResourceId(1);
    /// `ephemeral-storage`, in bytes.
    pub const EPHEMERAL_STORAGE: ResourceId = ResourceId(2);
    /// `pods`: how many pods a node takes.
    pub const PODS: ResourceId = ResourceId(3);

    /// Looks a name up, registering it if new.
    pub fn of(name: &str) -> Result<ResourceId, ResourceError> {
        if let Some(&id) = REGISTRY.read().ids.get(name) {
            return Ok(id);
        }
        let mut w = REGISTRY.write();
        if let Some(&id) = w.ids.get(name) {
            return Ok(id);
        }
        if w.names.len() >= MAX_RESOURCES {
            return Err(ResourceError::TooMany {
                name: name.to_owned(),
            });
        }
        let id = ResourceId(w.names.len() as u8);
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        w.names.push(leaked);
        w.ids.insert(leaked, id);
        Ok(id)
    }

    /// The id of `name` if it is known, without registering it.
    pub fn lookup(name: &str) -> Option<ResourceId> {
        REGISTRY.read().ids.get(name).copied()
    }

    /// The resource's name.
    pub fn name(self) -> &'static str {
        REGISTRY.read().names[self.0 as usize]
    }

    /// The slot index.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Whether this is an extended resource (not cpu, memory, ephemeral
    /// storage or pods) that kube-scheduler accounts by whole units.
    pub fn is_extended(self) -> bool {
        self.0 > Self::PODS.0
    }

    /// Whether quantities of this resource are kept in milli-units.
    pub fn is_milli(self) -> bool {
        self == Self::CPU
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct Registry {
    ids: FxHashMap<&'static str, ResourceId>,
    names: Vec<&'static str>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(|| {
    let names: Vec<&'static str> = vec!["cpu", "memory", "ephemeral-storage", "pods"];
    let ids = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, ResourceId(i as u8)))
        .collect();
    RwLock::new(Registry { ids, names })
});

/// Errors from resource names and quantities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// More distinct resource names than [`MAX_RESOURCES`].
    #[error(
        "resource {name:?} cannot be tracked: Strata tracks at most {MAX_RESOURCES} distinct resource names"
    )]
    TooMany {
        /// The name that did not fit.
        name: String,
    },
    /// A quantity string that is not a Kubernetes quantity.
    #[error("{value:?} is not a valid quantity: {why}")]
    BadQuantity {
        /// The text given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A fixed vector of amounts, one slot per [`ResourceId`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceVec(pub [i64; MAX_RESOURCES]);

impl Default for ResourceVec {
    fn default() -> Self {
        ResourceVec([0; MAX_RESOURCES])
    }
}

impl fmt::Debug for ResourceVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (i, v) in self.0.iter().enumerate() {
            if *v != 0 {
                m.entry(&ResourceId(i as u8).name(), v);
            }
        }
        m.finish()
    }
}

impl Index<ResourceId> for ResourceVec {
    type Output = i64;
    fn index(&self, id: ResourceId) -> &i64 {
        &self.0[id.index()]
    }
}

impl IndexMut<ResourceId> for ResourceVec {
    fn index_mut(&mut self, id: ResourceId) -> &mut i64 {
        &mut self.0[id.index()]
    }
}

impl ResourceVec {
    /// Adds `other` slot by slot.
    pub fn add(&mut self, other: &ResourceVec) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }

    /// Subtracts `other` slot by slot.
    pub fn sub(&mut self, other: &ResourceVec) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a -= *b;
        }
    }

    /// Slot-wise maximum.
    pub fn max_with(&mut self, other: &ResourceVec) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// The ids of non-zero slots.
    pub fn nonzero_ids(&self) -> impl Iterator<Item = ResourceId> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(i, _)| ResourceId(i as u8))
    }

    /// Whether every slot is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }

    /// Sets `name` to the quantity `q`, in the unit the resource is kept in.
    pub fn set_quantity(&mut self, name: &str, q: &str) -> Result<(), ResourceError> {
        let id = ResourceId::of(name)?;
        let parsed = Quantity::parse(q)?;
        self[id] = if id.is_milli() {
            parsed.milli_value()
        } else {
            parsed.value()
        };
        Ok(())
    }
}

/// A parsed Kubernetes quantity (`100m`, `1.5Gi`, `2e3`), kept as an exact
/// multiple of 10^-9.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
}

impl Quantity {
    /// Parses the Kubernetes quantity syntax: a signed decimal number followed
    /// by a binary SI suffix (Ki…Ei), a decimal SI suffix (n, u, m, k, M…E) or
    /// a decimal exponent (e3, E-2).
    pub fn parse(s: &str) -> Result<Quantity, ResourceError> {
        let bad = |why| ResourceError::BadQuantity {
            value: s.to_owned(),
            why,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        let (neg, rest) = match t.as_bytes()[0] {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(bad("no number"));
        }
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => {
                if f.contains('.') {
                    return Err(bad("more than one decimal point"));
                }
                (i, f)
            }
            None => (num, ""),
        };
        // mantissa * 10^(-frac_len)
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(bad("too many digits"));
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| bad("bad digits"))?
        };
        let mut exp10: i32 = -(frac_part.len() as i32);
        let mut mult2: u32 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => mult2 = 10,
            "Mi" => mult2 = 20,
            "Gi" => mult2 = 30,
            "Ti" => mult2 = 40,
            "Pi" => mult2 = 50,
            "Ei" => mult2 = 60,
            s if s.starts_with(['e', 'E']) => {
                let e: i32 = s[1..].parse().map_err(|_| bad("bad exponent"))?;
                if !(-30..=30).contains(&e) {
                    return Err(bad("exponent out of range"));
                }
                exp10 += e;
            }
            _ => return Err(bad("unknown suffix")),
        }
        // Convert to nanos: mantissa * 2^mult2 * 10^(exp10 + 9), rounding up.
        let mut v = mantissa
            .checked_mul(1i128 << mult2)
            .ok_or_else(|| bad("too large"))?;
        let e = exp10 + 9;
        if e >= 0 {
            for _ in 0..e {
                v = v.checked_mul(10).ok_or_else(|| bad("too large"))?;
            }
        } else {
            for _ in 0..(-e) {
                let rem = v % 10;
                v /= 10;
                if rem != 0 {
                    v += 1;
                }
            }
        }
        if v > i64::MAX as i128 * 1_000_000_000 {
            return Err(bad("too large"));
        }
        Ok(Quantity {
            nanos: if neg { -v } else { v },
        })
    }

    /// The value in whole units, rounded up.
    pub fn value(&self) -> i64 {
        div_ceil(self.nanos, 1_000_000_000) as i64
    }

    /// The value in milli-units, rounded up.
    pub fn milli_value(&self) -> i64 {
        div_ceil(self.nanos, 1_000_000) as i64
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        let cases: &[(&str, i64, i64)] = &[
            ("100m", 1, 100),
            ("1", 1, 1000),
            ("1.5", 2, 1500),
            ("0.1", 1, 100),
            ("1Ki", 1024, 1_024_000),
            ("1.5Gi", 1_610_612_736, 1_610_612_736_000),
            ("2k", 2000, 2_000_000),
            ("1e3", 1000, 1_000_000),
            ("1E-3", 1, 1),
            ("128974848", 128_974_848, 128_974_848_000),
            ("129M", 129_000_000, 129_000_000_000),
            ("123Mi", 128_974_848, 128_974_848_000),
            ("0", 0, 0),
            ("-1", -1, -1000),
            ("1n", 1, 1),
        ];
        for (s, v, m) in cases {
            let q = Quantity::parse(s).unwrap();
            assert_eq!(q.value(), *v, "value of {s}");
            assert_eq!(q.milli_value(), *m, "milli of {s}");
        }
    }

    #[test]
    fn bad_quantities_are_rejected() {
        for s in ["", "abc", "1.2.3", "1Qi", "--1", "1e", ".", "1e99"] {
            assert!(Quantity::parse(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn registry_is_stable() {
        let a = ResourceId::of("example.com/foo").unwrap();
        assert_eq!(ResourceId::of("example.com/foo").unwrap(), a);
        assert!(a.is_extended());
        assert_eq!(a.name(), "example.com/foo");
        assert!(!ResourceId::CPU.is_extended());
    }
}
