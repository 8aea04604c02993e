//! Per-shard throughput limits as AWS documents them, as token buckets.
//!
//! A bucket holds at most one second of its rate and refills continuously. A request that
//! finds the bucket positive is let through and may drive it negative (a 10 MiB record on a
//! 1 MiB/s shard goes through, and the shard then refuses writes for about nine seconds);
//! a request that finds it at or below zero is refused. This is how AWS lets large records
//! and 10 MiB GetRecords responses burst against the per-second limits.

/// Write limit per shard: 1 MiB/s including partition keys.
pub const WRITE_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// Write limit per shard: 1,000 records/s.
pub const WRITE_RECORDS_PER_SEC: f64 = 1000.0;
/// Read limit per shard, shared by polling consumers: 2 MiB/s.
pub const READ_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;
/// Read limit per shard: 5 GetRecords calls per second.
pub const READ_CALLS_PER_SEC: f64 = 5.0;

#[derive(Clone, Debug)]
pub struct Bucket {
    rate_per_sec: f64,
    tokens: f64,
    last_ms: i64,
}

impl Bucket {
    pub fn new(rate_per_sec: f64, now_ms: i64) -> Bucket {
        Bucket {
            rate_per_sec,
            tokens: rate_per_sec,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64) {
        if now_ms > self.last_ms {
            let elapsed_secs = (now_ms - self.last_ms) as f64 / 1000.0;
            self.tokens = (self.tokens + elapsed_secs * self.rate_per_sec).min(self.rate_per_sec);
            self.last_ms = now_ms;
        }
    }

    /// True if the bucket lets a request through now (without taking anything).
    pub fn has_tokens(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        self.tokens > 0.0
    }

    pub fn take(&mut self, amount: f64) {
        self.tokens -= amount;
    }
}

/// The write and read buckets of one shard.
#[derive(Clone, Debug)]
pub struct ShardLimits {
    pub write_bytes: Bucket,
    pub write_records: Bucket,
    pub read_bytes: Bucket,
    pub read_calls: Bucket,
}

impl ShardLimits {
    pub fn new(now_ms: i64) -> ShardLimits {
        ShardLimits {
            write_bytes: Bucket::new(WRITE_BYTES_PER_SEC, now_ms),
            write_records: Bucket::new(WRITE_RECORDS_PER_SEC, now_ms),
            read_bytes: Bucket::new(READ_BYTES_PER_SEC, now_ms),
            read_calls: Bucket::new(READ_CALLS_PER_SEC, now_ms),
        }
    }

    /// Admits one record of `size_bytes` (data plus partition key) for writing.
    pub fn admit_write(&mut self, now_ms: i64, size_bytes: usize) -> bool {
        if self.write_bytes.has_tokens(now_ms) && self.write_records.has_tokens(now_ms) {
            self.write_bytes.take(size_bytes as f64);
            self.write_records.take(1.0);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_per_second() {
        let mut limits = ShardLimits::new(0);
        let admitted = (0..1500).filter(|_| limits.admit_write(0, 10)).count();
        assert_eq!(admitted, 1000);
        // Half a second later, half the records are back.
        let admitted = (0..1500).filter(|_| limits.admit_write(500, 10)).count();
        assert_eq!(admitted, 500);
    }

    #[test]
    fn large_record_bursts_then_blocks() {
        let mut limits = ShardLimits::new(0);
        assert!(limits.admit_write(0, 10 * 1024 * 1024));
        assert!(!limits.admit_write(1000, 1));
        assert!(!limits.admit_write(8000, 1));
        assert!(limits.admit_write(10_000, 1));
    }

    #[test]
    fn read_calls() {
        let mut limits = ShardLimits::new(0);
        let ok = (0..10)
            .filter(|_| {
                let ok = limits.read_calls.has_tokens(0);
                if ok {
                    limits.read_calls.take(1.0)
                }
                ok
            })
            .count();
        assert_eq!(ok, 5);
        assert!(limits.read_calls.has_tokens(200));
    }
}
