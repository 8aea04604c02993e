//! The `AWS/Kinesis` stream-level metrics, counted where requests are answered, and the
//! Prometheus text of `GET /metrics`.
//!
//! Every metric is a [`Stat`]: sample count, sum, minimum and maximum of the values observed,
//! as CloudWatch keeps them (IncomingBytes observed once per put request with the request's
//! bytes, PutRecord.Success with 1 or 0, ...). Counting is a few relaxed atomic operations per
//! request on the stream's own [`StreamMetrics`] (never per record, never under a lock); the
//! only lock is the read lock of the registry that finds a stream's counters.
//!
//! Count and sum are running totals (Prometheus `_count` and `_sum`). The roll-up (`rollup`)
//! turns the change since the previous roll-up into one CloudWatch datapoint per metric and
//! stream, stored by the tables service (`DATA_DIR/tables.redb`, with its retention), and
//! resets the minimum and maximum.
//!
//! Bounds: at most [`TRACKED_STREAMS_MAX`] streams are tracked (past it new streams are not
//! counted, and `millrace_metrics_streams_untracked_total` says so); a deleted stream's
//! counters go at the next roll-up. Labels are account, region and stream name only.
//!
//! Not here yet: shard-level metrics (EnableEnhancedMonitoring), the on-demand
//! `ReadProvisionedThroughputExceeded` split by consumer.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use millrace_wire::kinesis;
use parking_lot::{Mutex, RwLock};

/// Streams whose counters are kept at most.
pub const TRACKED_STREAMS_MAX: usize = 10_000;
/// How often the counters are rolled up into CloudWatch datapoints by default.
pub const ROLLUP_INTERVAL_MS: u64 = 60_000;

/// Sample count, sum, minimum and maximum of one metric.
#[derive(Debug)]
pub struct Stat {
    count: AtomicU64,
    sum: AtomicU64,
    /// Since the last roll-up.
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for Stat {
    fn default() -> Self {
        Stat {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

impl Stat {
    pub fn observe(&self, value: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.min.fetch_min(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }
}

macro_rules! stream_metrics {
    ($($field:ident => $name:literal, $prom:literal, $unit:literal;)*) => {
        /// The counters of one stream.
        #[derive(Debug, Default)]
        pub struct StreamMetrics {
            $(pub $field: Stat,)*
        }

        /// (AWS name, Prometheus name, CloudWatch unit) of every metric, in field order.
        pub const METRIC_NAMES: &[(&str, &str, &str)] = &[$(($name, $prom, $unit),)*];

        impl StreamMetrics {
            fn stats(&self) -> [&Stat; METRIC_NAMES.len()] {
                [$(&self.$field,)*]
            }
        }
    };
}

stream_metrics! {
    incoming_bytes => "IncomingBytes", "incoming_bytes", "Bytes";
    incoming_records => "IncomingRecords", "incoming_records", "Count";
    put_record_bytes => "PutRecord.Bytes", "put_record_bytes", "Bytes";
    put_record_latency => "PutRecord.Latency", "put_record_latency_milliseconds", "Milliseconds";
    put_record_success => "PutRecord.Success", "put_record_success", "Count";
    put_records_bytes => "PutRecords.Bytes", "put_records_bytes", "Bytes";
    put_records_latency => "PutRecords.Latency", "put_records_latency_milliseconds", "Milliseconds";
    put_records_success => "PutRecords.Success", "put_records_success", "Count";
    put_records_total_records => "PutRecords.TotalRecords", "put_records_total_records", "Count";
    put_records_successful_records => "PutRecords.SuccessfulRecords", "put_records_successful_records", "Count";
    put_records_failed_records => "PutRecords.FailedRecords", "put_records_failed_records", "Count";
    put_records_throttled_records => "PutRecords.ThrottledRecords", "put_records_throttled_records", "Count";
    get_records_bytes => "GetRecords.Bytes", "get_records_bytes", "Bytes";
    get_records_records => "GetRecords.Records", "get_records_records", "Count";
    get_records_latency => "GetRecords.Latency", "get_records_latency_milliseconds", "Milliseconds";
    get_records_success => "GetRecords.Success", "get_records_success", "Count";
    get_records_iterator_age => "GetRecords.IteratorAgeMilliseconds", "get_records_iterator_age_milliseconds", "Milliseconds";
    read_throughput_exceeded => "ReadProvisionedThroughputExceeded", "read_provisioned_throughput_exceeded", "Count";
    write_throughput_exceeded => "WriteProvisionedThroughputExceeded", "write_provisioned_throughput_exceeded", "Count";
    subscribe_success => "SubscribeToShard.Success", "subscribe_to_shard_success", "Count";
    subscribe_rate_exceeded => "SubscribeToShard.RateExceeded", "subscribe_to_shard_rate_exceeded", "Count";
    subscribe_event_bytes => "SubscribeToShardEvent.Bytes", "subscribe_to_shard_event_bytes", "Bytes";
    subscribe_event_records => "SubscribeToShardEvent.Records", "subscribe_to_shard_event_records", "Count";
    subscribe_event_millis_behind => "SubscribeToShardEvent.MillisBehindLatest", "subscribe_to_shard_event_millis_behind_latest", "Milliseconds";
}

/// Which stream: account, region, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub account: String,
    pub region: String,
    pub name: String,
}

/// One CloudWatch datapoint of the roll-up.
#[derive(Clone, Debug)]
pub struct Datum {
    pub metric_name: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub unit: &'static str,
    pub sample_count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// A metric's running totals: (AWS name, sample count, sum).
pub type Total = (&'static str, u64, u64);

/// The datapoints of one roll-up, by account and region (CloudWatch's own namespacing).
pub type Rollup = Vec<Datum>;

/// The registry of every tracked stream's counters.
#[derive(Default)]
pub struct KinesisMetrics {
    streams: RwLock<HashMap<StreamKey, Arc<StreamMetrics>>>,
    untracked: AtomicU64,
    /// Count and sum of every stat at the previous roll-up, by stream.
    rolled: Mutex<HashMap<StreamKey, Vec<(u64, u64)>>>,
}

impl KinesisMetrics {
    /// The counters of a stream, created on first use (`None` past the bound).
    pub fn stream(&self, account: &str, region: &str, name: &str) -> Option<Arc<StreamMetrics>> {
        let key = StreamKey {
            account: account.to_string(),
            region: region.to_string(),
            name: name.to_string(),
        };
        if let Some(found) = self.streams.read().get(&key) {
            return Some(found.clone());
        }
        let mut streams = self.streams.write();
        if let Some(found) = streams.get(&key) {
            return Some(found.clone());
        }
        if streams.len() >= TRACKED_STREAMS_MAX {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let metrics = Arc::new(StreamMetrics::default());
        streams.insert(key, metrics.clone());
        Some(metrics)
    }

    /// Forgets a stream's counters (DeleteStream, reset).
    pub fn forget(&self, account: &str, region: &str, name: &str) {
        let key = StreamKey {
            account: account.to_string(),
            region: region.to_string(),
            name: name.to_string(),
        };
        self.streams.write().remove(&key);
        self.rolled.lock().remove(&key);
    }

    pub fn clear(&self) {
        self.streams.write().clear();
        self.rolled.lock().clear();
    }

    fn snapshot(&self) -> Vec<(StreamKey, Arc<StreamMetrics>)> {
        let mut all: Vec<_> = self
            .streams
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The running totals of every tracked stream: (key, [(AWS name, count, sum)]).
    pub fn totals(&self) -> Vec<(StreamKey, Vec<Total>)> {
        self.snapshot()
            .into_iter()
            .map(|(key, metrics)| {
                let values = METRIC_NAMES
                    .iter()
                    .zip(metrics.stats())
                    .map(|((name, _, _), stat)| (*name, stat.count(), stat.sum()))
                    .collect();
                (key, values)
            })
            .collect()
    }

    /// The change since the previous roll-up as datapoints, grouped by (account, region).
    /// A metric nothing was observed for since is left out, as CloudWatch does.
    pub fn rollup(&self) -> Vec<((String, String), Rollup)> {
        let mut rolled = self.rolled.lock();
        let mut out: Vec<((String, String), Rollup)> = Vec::new();
        for (key, metrics) in self.snapshot() {
            let previous = rolled
                .entry(key.clone())
                .or_insert_with(|| vec![(0, 0); METRIC_NAMES.len()]);
            let mut data = Vec::new();
            for (idx, ((name, _, unit), stat)) in
                METRIC_NAMES.iter().zip(metrics.stats()).enumerate()
            {
                let count = stat.count();
                let sum = stat.sum();
                let min = stat.min.swap(u64::MAX, Ordering::Relaxed);
                let max = stat.max.swap(0, Ordering::Relaxed);
                let Some(slot) = previous.get_mut(idx) else {
                    continue;
                };
                let (count_before, sum_before) = *slot;
                *slot = (count, sum);
                let n = count.saturating_sub(count_before);
                if n == 0 {
                    continue;
                }
                let sum = sum.saturating_sub(sum_before) as f64;
                // A value observed between the loads above and the swaps may leave min/max
                // unset for this window; fall back on the mean.
                let mean = sum / n as f64;
                data.push(Datum {
                    metric_name: name,
                    dimensions: vec![("StreamName", key.name.clone())],
                    unit,
                    sample_count: n as f64,
                    sum,
                    min: if min == u64::MAX { mean } else { min as f64 },
                    max: if max == 0 && mean > 0.0 {
                        mean
                    } else {
                        max as f64
                    },
                });
            }
            if data.is_empty() {
                continue;
            }
            let group = (key.account.clone(), key.region.clone());
            match out.iter_mut().find(|(g, _)| *g == group) {
                Some((_, existing)) => existing.extend(data),
                None => out.push((group, data)),
            }
        }
        // Keys of streams no longer tracked.
        let live: std::collections::HashSet<StreamKey> =
            self.streams.read().keys().cloned().collect();
        rolled.retain(|k, _| live.contains(k));
        out
    }

    /// `millrace_kinesis_*` in the Prometheus text exposition format.
    pub fn render_prometheus(&self, out: &mut String) {
        let totals = self.snapshot();
        for (idx, (aws_name, prom_name, unit)) in METRIC_NAMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "# HELP millrace_kinesis_{prom_name} AWS/Kinesis {aws_name} ({unit}): sum and sample count."
            );
            let _ = writeln!(out, "# TYPE millrace_kinesis_{prom_name} summary");
            for (key, metrics) in &totals {
                let Some(stat) = metrics.stats().get(idx).copied() else {
                    continue;
                };
                let labels = format!(
                    "account=\"{}\",region=\"{}\",stream_name=\"{}\"",
                    escape_label(&key.account),
                    escape_label(&key.region),
                    escape_label(&key.name)
                );
                let _ = writeln!(
                    out,
                    "millrace_kinesis_{prom_name}_sum{{{labels}}} {}",
                    stat.sum()
                );
                let _ = writeln!(
                    out,
                    "millrace_kinesis_{prom_name}_count{{{labels}}} {}",
                    stat.count()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP millrace_metrics_streams_untracked_total Metric lookups refused because {TRACKED_STREAMS_MAX} streams are tracked already.\n# TYPE millrace_metrics_streams_untracked_total counter\nmillrace_metrics_streams_untracked_total {}",
            self.untracked.load(Ordering::Relaxed)
        );
    }
}

/// Escapes a Prometheus label value.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The stream name in a stream ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`) or a
/// consumer ARN (`.../stream/NAME/consumer/CONSUMER:CREATED`).
pub fn stream_name_in_arn(arn: &str) -> Option<&str> {
    let (_, rest) = arn.split_once(":stream/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The stream a data-plane request names and the metrics it is counted under, if any.
pub(crate) enum Counted {
    PutRecord { stream: String, bytes: u64 },
    PutRecords { stream: String, bytes: u64 },
    GetRecords { iterator: String },
}

impl Counted {
    pub(crate) fn of(request: &kinesis::Request) -> Option<Counted> {
        let name = |name: &Option<String>, arn: &Option<String>| -> Option<String> {
            name.clone().or_else(|| {
                arn.as_deref()
                    .and_then(stream_name_in_arn)
                    .map(str::to_string)
            })
        };
        match request {
            kinesis::Request::PutRecord(input) => Some(Counted::PutRecord {
                stream: name(&input.stream_name, &input.stream_arn)?,
                bytes: (input.data.len() + input.partition_key.as_ref().map_or(0, String::len))
                    as u64,
            }),
            kinesis::Request::PutRecords(input) => Some(Counted::PutRecords {
                stream: name(&input.stream_name, &input.stream_arn)?,
                bytes: input
                    .records
                    .iter()
                    .map(|r| {
                        (r.data.len() + r.partition_key.as_ref().map_or(0, String::len)) as u64
                    })
                    .sum(),
            }),
            kinesis::Request::GetRecords(input) => Some(Counted::GetRecords {
                iterator: input.shard_iterator.clone(),
            }),
            _ => None,
        }
    }
}

fn latency_ms(latency_us: u64) -> u64 {
    latency_us.div_ceil(1000)
}

/// Counts one answered data-plane request. `throttled` is true when it was refused with
/// ProvisionedThroughputExceededException.
pub(crate) fn count(
    metrics: &StreamMetrics,
    counted: &Counted,
    response: Option<&kinesis::Response>,
    throttled: bool,
    latency_us: u64,
) {
    let ok = u64::from(response.is_some());
    match counted {
        Counted::PutRecord { bytes, .. } => {
            metrics.put_record_success.observe(ok);
            if throttled {
                metrics.write_throughput_exceeded.observe(1);
            }
            if response.is_some() {
                metrics.put_record_bytes.observe(*bytes);
                metrics.put_record_latency.observe(latency_ms(latency_us));
                metrics.incoming_bytes.observe(*bytes);
                metrics.incoming_records.observe(1);
            }
        }
        Counted::PutRecords { bytes, .. } => {
            metrics.put_records_success.observe(ok);
            let Some(kinesis::Response::PutRecords(output)) = response else {
                if throttled {
                    metrics.write_throughput_exceeded.observe(1);
                }
                return;
            };
            let total = output.records.len() as u64;
            let failed = output
                .records
                .iter()
                .filter(|r| r.error_code.is_some())
                .count() as u64;
            let throttled_records = output
                .records
                .iter()
                .filter(|r| {
                    r.error_code.as_deref() == Some("ProvisionedThroughputExceededException")
                })
                .count() as u64;
            let succeeded = total - failed;
            // The bytes of the records that went in (PutRecords.Bytes counts those too).
            let bytes_in = bytes
                .saturating_mul(succeeded)
                .checked_div(total)
                .unwrap_or(0);
            metrics.put_records_bytes.observe(bytes_in);
            metrics.put_records_latency.observe(latency_ms(latency_us));
            metrics.put_records_total_records.observe(total);
            metrics.put_records_successful_records.observe(succeeded);
            metrics.put_records_failed_records.observe(failed);
            metrics
                .put_records_throttled_records
                .observe(throttled_records);
            metrics.write_throughput_exceeded.observe(throttled_records);
            if succeeded > 0 {
                metrics.incoming_bytes.observe(bytes_in);
                metrics.incoming_records.observe(succeeded);
            }
        }
        Counted::GetRecords { .. } => {
            metrics.get_records_success.observe(ok);
            if throttled {
                metrics.read_throughput_exceeded.observe(1);
            }
            if let Some(kinesis::Response::GetRecords(output)) = response {
                let bytes: u64 = output
                    .records
                    .iter()
                    .map(|r| {
                        (r.data.len() + r.partition_key.as_ref().map_or(0, String::len)) as u64
                    })
                    .sum();
                metrics.get_records_bytes.observe(bytes);
                metrics
                    .get_records_records
                    .observe(output.records.len() as u64);
                metrics.get_records_latency.observe(latency_ms(latency_us));
                if let Some(age) = output.millis_behind_latest {
                    metrics
                        .get_records_iterator_age
                        .observe(u64::try_from(age).unwrap_or(0));
                }
            }
        }
    }
}

/// The previous totals of plain running counters (the `AWS/Firehose` ones), so a roll-up
/// can store the change since the previous one.
#[derive(Default)]
pub struct CounterRollup {
    previous: HashMap<String, HashMap<&'static str, u64>>,
}

/// Firehose counters that are byte counts (the rest are counts).
fn firehose_unit(name: &str) -> &'static str {
    if name.ends_with("Bytes") {
        "Bytes"
    } else {
        "Count"
    }
}

/// The delivery stream name in an `account/region/name` key.
fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl CounterRollup {
    /// Datapoints (dimension `DeliveryStreamName`) for every counter that moved since the
    /// previous roll-up; forgets delivery streams that are gone.
    pub fn rollup(&mut self, totals: &[(String, Vec<(&'static str, u64)>)]) -> Vec<Datum> {
        let mut data = Vec::new();
        for (key, counters) in totals {
            let previous = self.previous.entry(key.clone()).or_default();
            for (name, total) in counters {
                let before = previous.insert(*name, *total).unwrap_or(0);
                let delta = total.saturating_sub(before);
                if delta == 0 {
                    continue;
                }
                data.push(Datum {
                    metric_name: name,
                    dimensions: vec![("DeliveryStreamName", key_name(key).to_string())],
                    unit: firehose_unit(name),
                    sample_count: 1.0,
                    sum: delta as f64,
                    min: delta as f64,
                    max: delta as f64,
                });
            }
        }
        self.previous
            .retain(|key, _| totals.iter().any(|(k, _)| k == key));
        data
    }
}

/// `millrace_firehose_*` counters in the Prometheus text format.
pub fn render_firehose(totals: &[(String, Vec<(&'static str, u64)>)], out: &mut String) {
    let Some((_, first)) = totals.first() else {
        return;
    };
    for (idx, (aws_name, _)) in first.iter().enumerate() {
        let prom_name = prometheus_name(aws_name);
        let _ = writeln!(
            out,
            "# HELP millrace_firehose_{prom_name}_total AWS/Firehose {aws_name}, since start.\n# TYPE millrace_firehose_{prom_name}_total counter"
        );
        for (key, counters) in totals {
            let mut parts = key.splitn(3, '/');
            let (account, region, name) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let value = counters.get(idx).map_or(0, |(_, v)| *v);
            let _ = writeln!(
                out,
                "millrace_firehose_{prom_name}_total{{account=\"{}\",region=\"{}\",delivery_stream_name=\"{}\"}} {value}",
                escape_label(account),
                escape_label(region),
                escape_label(name)
            );
        }
    }
}

/// `DeliveryToS3.Records` → `delivery_to_s3_records`.
pub fn prometheus_name(aws_name: &str) -> String {
    let mut out = String::with_capacity(aws_name.len() + 8);
    let mut previous_lower = false;
    for c in aws_name.chars() {
        if c == '.' {
            out.push('_');
            previous_lower = false;
        } else if c.is_ascii_uppercase() {
            if previous_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else {
            out.push(c);
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_reports_changes_since_the_previous_rollup() {
        let registry = KinesisMetrics::default();
        let metrics = registry
            .stream("000000000000", "us-east-1", "s")
            .expect("present");
        metrics.incoming_records.observe(3);
        metrics.incoming_records.observe(5);
        let first = registry.rollup();
        assert_eq!(first.len(), 1);
        let datum = first[0]
            .1
            .iter()
            .find(|d| d.metric_name == "IncomingRecords")
            .expect("present");
        assert_eq!(
            (datum.sample_count, datum.sum, datum.min, datum.max),
            (2.0, 8.0, 3.0, 5.0)
        );
        assert!(registry.rollup().is_empty(), "nothing new: no datapoints");
        metrics.incoming_records.observe(7);
        let third = registry.rollup();
        let datum = &third[0].1[0];
        assert_eq!(
            (datum.sample_count, datum.sum, datum.min, datum.max),
            (1.0, 7.0, 7.0, 7.0)
        );
    }

    #[test]
    fn prometheus_text_has_sum_and_count_per_stream() {
        let registry = KinesisMetrics::default();
        let metrics = registry
            .stream("000000000000", "us-east-1", "a\"b")
            .expect("present");
        metrics.incoming_bytes.observe(10);
        let mut text = String::new();
        registry.render_prometheus(&mut text);
        assert!(text.contains(
            "millrace_kinesis_incoming_bytes_sum{account=\"000000000000\",region=\"us-east-1\",stream_name=\"a\\\"b\"} 10\n"
        ));
        assert!(text.contains("# TYPE millrace_kinesis_incoming_bytes summary\n"));
    }

    #[test]
    fn prometheus_names_follow_aws_names() {
        assert_eq!(
            prometheus_name("DeliveryToS3.Records"),
            "delivery_to_s3_records"
        );
        assert_eq!(prometheus_name("IncomingBytes"), "incoming_bytes");
        for (aws, prom, _) in METRIC_NAMES {
            assert!(prom.starts_with(&prometheus_name(aws)), "{aws} -> {prom}");
        }
    }

    #[test]
    fn firehose_rollup_stores_changes() {
        let mut rollup = CounterRollup::default();
        let key = "000000000000/us-east-1/d".to_string();
        let data = rollup.rollup(&[(key.clone(), vec![("IncomingRecords", 4)])]);
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].sum, 4.0);
        assert_eq!(
            data[0].dimensions,
            vec![("DeliveryStreamName", "d".to_string())]
        );
        assert!(
            rollup
                .rollup(&[(key.clone(), vec![("IncomingRecords", 4)])])
                .is_empty()
        );
        let data = rollup.rollup(&[(key, vec![("IncomingRecords", 6)])]);
        assert_eq!(data[0].sum, 2.0);
    }

    #[test]
    fn arn_names_the_stream() {
        assert_eq!(
            stream_name_in_arn("arn:aws:kinesis:us-east-1:000000000000:stream/s1"),
            Some("s1")
        );
        assert_eq!(
            stream_name_in_arn("arn:aws:kinesis:us-east-1:000000000000:stream/s1/consumer/c:1"),
            Some("s1")
        );
        assert_eq!(stream_name_in_arn("nonsense"), None);
    }
}
