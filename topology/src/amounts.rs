//! Fixed-size vectors of resource amounts.
//!
//! The topology crate knows nothing about resource names: a resource is a
//! slot index, and the caller decides what each slot means (Strata's plugins
//! use `strata-scheduler`'s `ResourceId` order, so a `ResourceVec` converts by
//! copying its array). Keeping the vector fixed-size and `Copy` keeps every
//! aggregate update allocation-free.

use std::fmt;
use std::ops::{Index, IndexMut};

/// How many resource slots an [`Amounts`] has. Equal to
/// `strata_scheduler::resources::MAX_RESOURCES`; the plugins crate checks
/// that at compile time.
pub const MAX_DIMS: usize = 32;

/// One amount per resource slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amounts(pub [i64; MAX_DIMS]);

impl Default for Amounts {
    fn default() -> Self {
        Amounts::ZERO
    }
}

impl fmt::Debug for Amounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (i, v) in self.0.iter().enumerate() {
            if *v != 0 {
                m.entry(&i, v);
            }
        }
        m.finish()
    }
}

impl Index<usize> for Amounts {
    type Output = i64;
    #[inline]
    fn index(&self, i: usize) -> &i64 {
        &self.0[i]
    }
}

impl IndexMut<usize> for Amounts {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut i64 {
        &mut self.0[i]
    }
}

impl Amounts {
    /// All zero.
    pub const ZERO: Amounts = Amounts([0; MAX_DIMS]);

    /// Builds from `(slot, amount)` pairs; slots out of range are ignored.
    pub fn from_pairs(pairs: &[(usize, i64)]) -> Amounts {
        let mut a = Amounts::ZERO;
        for (i, v) in pairs {
            if *i < MAX_DIMS {
                a.0[*i] = *v;
            }
        }
        a
    }

    /// Adds `o` slot by slot.
    #[inline]
    pub fn add(&mut self, o: &Amounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += *b;
        }
    }

    /// Subtracts `o` slot by slot.
    #[inline]
    pub fn sub(&mut self, o: &Amounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a -= *b;
        }
    }

    /// Adds `o` times `n`.
    #[inline]
    pub fn add_scaled(&mut self, o: &Amounts, n: i64) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += *b * n;
        }
    }

    /// Slot-wise maximum.
    #[inline]
    pub fn max_with(&mut self, o: &Amounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// `self - o`, each slot clamped at zero.
    #[inline]
    pub fn saturating_minus(&self, o: &Amounts) -> Amounts {
        let mut r = *self;
        for (a, b) in r.0.iter_mut().zip(o.0.iter()) {
            *a = (*a - *b).max(0);
        }
        r
    }

    /// Whether every slot of `need` is at most the same slot of `self`.
    #[inline]
    pub fn covers(&self, need: &Amounts) -> bool {
        self.0
            .iter()
            .zip(need.0.iter())
            .all(|(have, n)| *n <= 0 || *have >= *n)
    }

    /// How many copies of `shape` fit in `self` (slots where `shape` is zero
    /// or negative do not limit). `u32::MAX` for an all-zero shape.
    #[inline]
    pub fn fit_count(&self, shape: &Amounts) -> u32 {
        let mut n = u32::MAX as i64;
        for (have, s) in self.0.iter().zip(shape.0.iter()) {
            if *s > 0 {
                n = n.min((*have).max(0) / *s);
            }
        }
        n as u32
    }

    /// Whether every slot is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }

    /// Indices of the non-zero slots.
    pub fn nonzero(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_count_takes_the_tightest_slot() {
        let have = Amounts::from_pairs(&[(0, 8000), (1, 64), (5, 8)]);
        assert_eq!(
            have.fit_count(&Amounts::from_pairs(&[(0, 1000), (5, 2)])),
            4
        );
        assert_eq!(have.fit_count(&Amounts::from_pairs(&[(5, 9)])), 0);
        assert_eq!(have.fit_count(&Amounts::ZERO), u32::MAX);
        let neg = Amounts::from_pairs(&[(5, -3)]);
        assert_eq!(neg.fit_count(&Amounts::from_pairs(&[(5, 1)])), 0);
    }

    #[test]
    fn covers_and_saturating_minus() {
        let a = Amounts::from_pairs(&[(0, 5), (1, 3)]);
        assert!(a.covers(&Amounts::from_pairs(&[(0, 5)])));
        assert!(!a.covers(&Amounts::from_pairs(&[(1, 4)])));
        assert_eq!(
            a.saturating_minus(&Amounts::from_pairs(&[(0, 7), (1, 1)])),
            Amounts::from_pairs(&[(1, 2)])
        );
        let mut b = a;
        b.add_scaled(&Amounts::from_pairs(&[(0, 1)]), 3);
        assert_eq!(b[0], 8);
        b.sub(&a);
        assert_eq!(b, Amounts::from_pairs(&[(0, 3)]));
        assert_eq!(a.nonzero().collect::<Vec<_>>(), vec![0, 1]);
    }
}
