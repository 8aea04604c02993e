//! Latency recording and the open-loop (fixed rate) schedule.
//!
//! [`Latencies`] is an HdrHistogram of nanoseconds (3 significant digits, up to an hour)
//! that reports milliseconds. [`Schedule`] is the open-loop discipline of wrk2: request `i`
//! is *intended* to start at `start + i / rate`, and its latency is measured from that
//! intended time, not from when a busy connection got round to sending it. A server that
//! stalls for a second therefore shows a second of latency on every request that should
//! have been sent during the stall, instead of one slow request and a gap in the samples
//! (coordinated omission). Closed-loop workloads measure from the actual send and say so.

use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency recorded; longer ones are clamped (and still counted).
const LATENCY_NS_MAX: u64 = 3_600 * 1_000_000_000;

/// Nanoseconds since the first call in this process: the clock that producers write into
/// records and consumers compare with, so both sides of an end-to-end measurement agree.
pub fn now_ns() -> u64 {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    let anchor = *ANCHOR.get_or_init(Instant::now);
    u64::try_from(anchor.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram of latencies.
#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

/// Percentiles in milliseconds, as reports show them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latencies {
    pub fn record_ns(&mut self, latency_ns: u64) {
        self.histogram
            .saturating_record(latency_ns.clamp(1, LATENCY_NS_MAX));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn summary(&self) -> Summary {
        if self.histogram.is_empty() {
            return Summary::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Summary {
            count: self.histogram.len(),
            mean_ms: self.histogram.mean() / 1e6,
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            p999_ms: ms(self.histogram.value_at_quantile(0.999)),
            max_ms: ms(self.histogram.max()),
        }
    }
}

/// The open-loop schedule: when request `i` should start, and its latency from then.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start_ns: u64,
    pub interval_ns: u64,
}

impl Schedule {
    pub fn new(start_ns: u64, rate_per_s: f64) -> Schedule {
        let interval_ns = (1e9 / rate_per_s.max(1e-3)).round().max(1.0) as u64;
        Schedule {
            start_ns,
            interval_ns,
        }
    }

    /// When request `i` is intended to start.
    pub fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns
            .saturating_add(i.saturating_mul(self.interval_ns))
    }

    /// The latency of request `i` that completed at `done_ns`: from its intended start,
    /// whatever delayed the actual send (the driver measures from `start_ns` instead).
    #[cfg(test)]
    pub fn latency_ns(&self, i: u64, done_ns: u64) -> u64 {
        done_ns.saturating_sub(self.intended_ns(i))
    }

    /// How many requests are intended to start in `[from_ns, to_ns)`.
    pub fn due_between(&self, from_ns: u64, to_ns: u64) -> u64 {
        let first_idx = |t_ns: u64| {
            t_ns.saturating_sub(self.start_ns)
                .div_ceil(self.interval_ns)
        };
        first_idx(to_ns).saturating_sub(first_idx(from_ns))
    }

    /// The time request `i` counts as started. A sender that took the request before its
    /// intended time was free and slept until then, so its wake-up time is the start (the
    /// timer's lateness is the client's, not the server's). A sender that took it after its
    /// intended time was busy with an earlier request, so the start is the intended time
    /// and the wait is charged to the server: the coordinated-omission correction.
    pub fn start_ns(&self, i: u64, taken_ns: u64, woke_ns: u64) -> u64 {
        let intended_ns = self.intended_ns(i);
        if taken_ns <= intended_ns {
            woke_ns.max(intended_ns)
        } else {
            intended_ns
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut latencies = Latencies::default();
        for ms in 1..=1000u64 {
            latencies.record_ns(ms * 1_000_000);
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 1000);
        // Three significant digits: values are exact to 0.1%.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(summary.p50_ms, 500.0), "{summary:?}");
        assert!(close(summary.p99_ms, 990.0), "{summary:?}");
        assert!(close(summary.p999_ms, 999.0), "{summary:?}");
        assert!(close(summary.max_ms, 1000.0), "{summary:?}");
        assert!(close(summary.mean_ms, 500.5), "{summary:?}");
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_max() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        a.record_ns(1_000_000);
        b.record_ns(5_000_000);
        b.record_ns(2_000_000);
        a.merge(&b);
        let summary = a.summary();
        assert_eq!(summary.count, 3);
        assert!((summary.max_ms - 5.0).abs() < 0.01, "{summary:?}");
        assert!((summary.p50_ms - 2.0).abs() < 0.01, "{summary:?}");
    }

    #[test]
    fn empty_and_out_of_range_values() {
        assert_eq!(Latencies::default().summary(), Summary::default());
        let mut latencies = Latencies::default();
        latencies.record_ns(0);
        latencies.record_ns(u64::MAX);
        let summary = latencies.summary();
        assert_eq!(summary.count, 2);
        assert!(summary.max_ms >= 3_599_000.0, "{summary:?}");
    }

    /// One connection, one request every 10 ms, each served in 1 ms, except that the server
    /// stalls for 1 s on request 100. Measured from the actual send (closed loop), only one
    /// sample in a thousand sees the stall and p99 stays at 1 ms; measured from the intended
    /// time, the hundred requests that queued behind the stall are seen, as a user would.
    #[test]
    fn intended_start_times_expose_a_stall() {
        let schedule = Schedule::new(0, 100.0);
        assert_eq!(schedule.interval_ns, 10_000_000);
        let service_ns = |i: u64| if i == 100 { 1_000_000_000 } else { 1_000_000 };
        let mut naive = Latencies::default();
        let mut corrected = Latencies::default();
        let mut connection_free_ns = 0u64;
        for i in 0..1000u64 {
            let sent_ns = schedule.intended_ns(i).max(connection_free_ns);
            let done_ns = sent_ns + service_ns(i);
            connection_free_ns = done_ns;
            naive.record_ns(done_ns - sent_ns);
            corrected.record_ns(schedule.latency_ns(i, done_ns));
        }
        let naive = naive.summary();
        let corrected = corrected.summary();
        assert!((naive.p99_ms - 1.0).abs() < 0.01, "{naive:?}");
        // ~100 of 1000 requests were delayed, by 1000 ms down to ~10 ms.
        assert!(corrected.p99_ms > 800.0, "{corrected:?}");
        assert!(corrected.p50_ms < 1.1, "{corrected:?}");
        assert!((corrected.max_ms - 1001.0).abs() < 1.5, "{corrected:?}");
    }

    #[test]
    fn start_is_the_wake_up_when_free_and_the_intention_when_late() {
        let schedule = Schedule::new(0, 1000.0);
        // Request 5 is due at 5 ms. Taken at 4 ms, the timer woke the sender at 5.8 ms.
        assert_eq!(schedule.start_ns(5, 4_000_000, 5_800_000), 5_800_000);
        // Taken at 9 ms because every connection was busy: counted from 5 ms.
        assert_eq!(schedule.start_ns(5, 9_000_000, 9_000_100), 5_000_000);
    }

    #[test]
    fn schedule_spacing_and_latency() {
        let schedule = Schedule::new(5_000, 1000.0);
        assert_eq!(schedule.intended_ns(0), 5_000);
        assert_eq!(schedule.intended_ns(3), 3_005_000);
        assert_eq!(schedule.latency_ns(3, 3_105_000), 100_000);
        // Due at 5, 1_005_000, 2_005_000 ... : [1 ms, 4 ms) holds 1.005, 2.005 and 3.005 ms.
        assert_eq!(schedule.due_between(1_000_000, 4_000_000), 3);
        assert_eq!(schedule.due_between(0, 5_001), 1);
        assert_eq!(schedule.due_between(9_000_000, 1_000_000), 0);
        // Finishing "before" the intended time (impossible, but clocks) is zero, not a wrap.
        assert_eq!(schedule.latency_ns(3, 0), 0);
    }
}
