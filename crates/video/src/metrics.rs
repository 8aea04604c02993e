//! The `AWS/KinesisVideo` counters of each video stream (dimension StreamName), as running
//! totals the server reads (`Video::metrics`) for `GET /metrics` and the CloudWatch roll-up,
//! like the Firehose crate's `AWS/Firehose` counters.
//!
//! Counting is one relaxed atomic add on the stream's counters, found under a read lock;
//! PutMedia counts per chunk and per fragment, GetMedia per fragment sent. Bounds: at most
//! [`TRACKED_STREAMS_MAX`] streams, and a deleted stream's counters go the next time they
//! are read. Success metrics count successes (AWS averages 1s and 0s; the totals here keep
//! the 1s). Not here: the latency and connection-error metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

/// Streams whose counters are kept at most.
pub const TRACKED_STREAMS_MAX: usize = 10_000;

/// The `AWS/KinesisVideo` metrics counted, in [`Metric`] order.
pub const METRIC_NAMES: [&str; 8] = [
    "PutMedia.IncomingBytes",
    "PutMedia.IncomingFragments",
    "PutMedia.IncomingFrames",
    "PutMedia.Success",
    "GetMedia.OutgoingBytes",
    "GetMedia.OutgoingFragments",
    "GetMedia.Success",
    "ListFragments.Success",
];

/// One of [`METRIC_NAMES`].
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    PutMediaIncomingBytes = 0,
    PutMediaIncomingFragments = 1,
    PutMediaIncomingFrames = 2,
    PutMediaSuccess = 3,
    GetMediaOutgoingBytes = 4,
    GetMediaOutgoingFragments = 5,
    GetMediaSuccess = 6,
    ListFragmentsSuccess = 7,
}

type Counters = [AtomicU64; METRIC_NAMES.len()];

/// The counters of every tracked video stream, by `account/region/name`.
#[derive(Default)]
pub struct VideoMetrics {
    streams: RwLock<HashMap<String, Arc<Counters>>>,
}

impl VideoMetrics {
    /// Adds `value` to a stream's metric.
    pub fn add(&self, account: &str, region: &str, name: &str, metric: Metric, value: u64) {
        let key = format!("{account}/{region}/{name}");
        let found = self.streams.read().get(&key).cloned();
        let counters = match found {
            Some(counters) => counters,
            None => {
                let mut streams = self.streams.write();
                if streams.len() >= TRACKED_STREAMS_MAX && !streams.contains_key(&key) {
                    return;
                }
                streams.entry(key).or_default().clone()
            }
        };
        if let Some(counter) = counters.get(metric as usize) {
            counter.fetch_add(value, Ordering::Relaxed);
        }
    }

    /// The totals of the streams in `live` (`account/region/name` keys), sorted by key;
    /// forgets the others.
    pub fn totals(&self, live: &[String]) -> Vec<(String, Vec<(&'static str, u64)>)> {
        self.streams.write().retain(|key, _| live.contains(key));
        let mut all: Vec<_> = self
            .streams
            .read()
            .iter()
            .map(|(key, counters)| {
                let values = METRIC_NAMES
                    .iter()
                    .zip(counters.iter())
                    .map(|(name, counter)| (*name, counter.load(Ordering::Relaxed)))
                    .collect();
                (key.clone(), values)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn clear(&self) {
        self.streams.write().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_cover_live_streams_only() {
        let metrics = VideoMetrics::default();
        metrics.add("1", "r", "a", Metric::PutMediaIncomingFragments, 2);
        metrics.add("1", "r", "a", Metric::PutMediaIncomingFragments, 3);
        metrics.add("1", "r", "gone", Metric::GetMediaSuccess, 1);
        let totals = metrics.totals(&["1/r/a".to_string()]);
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].0, "1/r/a");
        assert!(totals[0].1.contains(&("PutMedia.IncomingFragments", 5)));
        assert!(metrics.totals(&[]).is_empty());
    }
}
