//! Time as a parameter: the [`Clock`] trait and its three implementations.
//!
//! The log reads the clock once per group commit to stamp records; nothing else in the
//! crate looks at the time. Clocks here never sleep and never schedule anything.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_millis(&self) -> i64;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        wall_clock_millis()
    }
}

fn wall_clock_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        // A wall clock before 1970 is a misconfigured machine; records then get timestamp 0
        // and the writer keeps timestamps non-decreasing anyway.
        Err(_) => 0,
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            now_ms: AtomicI64::new(start_ms),
        }
    }

    pub fn set(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, delta_ms: i64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// The wall clock plus a forward offset that a test-only "clock advance" call can grow, so a
/// running server can be moved past retention or iterator expiry without sleeping.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn new() -> Self {
        OffsetClock::default()
    }

    /// Moves the clock forward by `delta_ms`; negative values are ignored (time never goes
    /// back through this call).
    pub fn advance(&self, delta_ms: i64) {
        let delta_ms = delta_ms.max(0);
        // `fetch_update` with saturation so a huge advance cannot wrap around.
        let _ = self
            .offset_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |offset_ms| {
                Some(offset_ms.saturating_add(delta_ms))
            });
    }

    pub fn offset_millis(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for OffsetClock {
    fn now_millis(&self) -> i64 {
        wall_clock_millis().saturating_add(self.offset_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_millis(), 1_000);
        clock.advance(250);
        assert_eq!(clock.now_millis(), 1_250);
        clock.set(7);
        assert_eq!(clock.now_millis(), 7);
    }

    #[test]
    fn offset_clock_only_moves_forward() {
        let clock = OffsetClock::new();
        clock.advance(5_000);
        clock.advance(-1_000);
        assert_eq!(clock.offset_millis(), 5_000);
        let wall = SystemClock.now_millis();
        assert!(clock.now_millis() >= wall + 5_000);
        clock.advance(i64::MAX);
        assert_eq!(clock.offset_millis(), i64::MAX);
    }
}
