//! The one seeded random generator of Strata (SplitMix64): the engine's
//! tie-break among equally scored nodes, the simulator's draws, and the
//! Devices plugin's `random` policy all use it, so a seed gives the same
//! placements everywhere.

/// SplitMix64's increment (the golden ratio in 64 bits).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer: a fixed pseudo-random permutation of `u64`
/// (no state; equal inputs give equal outputs).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic generator: the same seed gives the same draws.
///
/// ```
/// use strata_scheduler::rng::SplitMix64;
///
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator for `seed` (its state is `seed` mixed with a constant,
    /// so seed 0 does not start at state 0).
    #[inline]
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed ^ GOLDEN)
    }

    /// The generator whose state is `state` as given.
    #[inline]
    pub fn from_state(state: u64) -> Self {
        SplitMix64(state)
    }

    /// The next draw.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// A draw in `0..n` (`n > 0`), by remainder.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_splitmix64() {
        // SplitMix64's published first outputs for state 0.
        let mut r = SplitMix64::from_state(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        // `new` mixes the seed: state `seed ^ GOLDEN`.
        let mut a = SplitMix64::new(5);
        let mut b = SplitMix64::from_state(5 ^ GOLDEN);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_eq!(mix64(0), 0);
    }
}
