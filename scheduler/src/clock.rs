//! Time as the engine sees it. Production uses the monotonic clock; the
//! simulator uses a virtual clock it advances itself, so backoffs and timeouts
//! behave the same without waiting for them.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// A monotonic clock.
pub trait Clock: Send + Sync + 'static {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock.
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to.
#[derive(Default)]
pub struct ManualClock {
    now: Mutex<Duration>,
}

impl ManualClock {
    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.now.lock() += d;
    }

    /// Sets the time, if later than now.
    pub fn advance_to(&self, t: Duration) {
        let mut g = self.now.lock();
        if t > *g {
            *g = t;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock()
    }
}
