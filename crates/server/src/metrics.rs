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
//! Shard-level metrics (EnableEnhancedMonitoring): a stream's [`ShardLevel`] holds a bit per
//! enabled metric (kept in step with the stream record: loaded on first use, updated when
//! Enable/DisableEnhancedMonitoring succeeds) and, only while some bit is set, one
//! [`ShardMetrics`] per shard that saw traffic (at most [`SHARDS_TRACKED_PER_STREAM_MAX`]).
//! They roll up with dimensions StreamName and ShardId and show in `/metrics` as
//! `millrace_kinesis_shard_*` with a `shard_id` label. A shard idle for
//! [`SHARD_IDLE_ROLLUPS_MAX`] roll-ups (closed, or no traffic) is forgotten, so closed and
//! deleted shards age out; the datapoints already stored age out with the tables retention.
//!
//! Not here yet: the on-demand `ReadProvisionedThroughputExceeded` split by consumer, and
//! SubscribeToShard traffic in the shard-level Outgoing* metrics.

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
/// Shards of one stream whose shard-level counters are kept at most.
pub const SHARDS_TRACKED_PER_STREAM_MAX: usize = 10_000;
/// Roll-ups without traffic after which a shard's counters are forgotten (an hour at the
/// default interval).
pub const SHARD_IDLE_ROLLUPS_MAX: u32 = 60;

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

    /// The (sample count, sum, minimum, maximum) observed since `previous` (the count and
    /// sum at the previous roll-up, updated here), `None` when nothing was; resets the
    /// minimum and maximum.
    fn delta_since(&self, previous: &mut (u64, u64)) -> Option<(f64, f64, f64, f64)> {
        let count = self.count();
        let sum = self.sum();
        let min = self.min.swap(u64::MAX, Ordering::Relaxed);
        let max = self.max.swap(0, Ordering::Relaxed);
        let (count_before, sum_before) = *previous;
        *previous = (count, sum);
        let n = count.saturating_sub(count_before);
        if n == 0 {
            return None;
        }
        let sum = sum.saturating_sub(sum_before) as f64;
        // A value observed between the loads above and the swaps may leave min/max unset
        // for this window; fall back on the mean.
        let mean = sum / n as f64;
        let min = if min == u64::MAX { mean } else { min as f64 };
        let max = if max == 0 && mean > 0.0 {
            mean
        } else {
            max as f64
        };
        Some((n as f64, sum, min, max))
    }
}

macro_rules! stream_metrics {
    ($($field:ident => $name:literal, $prom:literal, $unit:literal;)*) => {
        /// The counters of one stream.
        #[derive(Debug, Default)]
        pub struct StreamMetrics {
            $(pub $field: Stat,)*
            /// EnableEnhancedMonitoring's per-shard counters.
            pub shard_level: ShardLevel,
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

/// The shard-level metrics AWS documents for EnableEnhancedMonitoring: (AWS name,
/// Prometheus name, CloudWatch unit), in AWS's order. Bit `idx` of [`ShardLevel`] enables
/// `SHARD_METRIC_NAMES[idx]`.
pub const SHARD_METRIC_NAMES: [(&str, &str, &str); 7] = [
    ("IncomingBytes", "incoming_bytes", "Bytes"),
    ("IncomingRecords", "incoming_records", "Count"),
    ("OutgoingBytes", "outgoing_bytes", "Bytes"),
    ("OutgoingRecords", "outgoing_records", "Count"),
    (
        "WriteProvisionedThroughputExceeded",
        "write_provisioned_throughput_exceeded",
        "Count",
    ),
    (
        "ReadProvisionedThroughputExceeded",
        "read_provisioned_throughput_exceeded",
        "Count",
    ),
    (
        "IteratorAgeMilliseconds",
        "iterator_age_milliseconds",
        "Milliseconds",
    ),
];
pub const SHARD_INCOMING_BYTES: usize = 0;
pub const SHARD_INCOMING_RECORDS: usize = 1;
pub const SHARD_OUTGOING_BYTES: usize = 2;
pub const SHARD_OUTGOING_RECORDS: usize = 3;
pub const SHARD_WRITE_EXCEEDED: usize = 4;
pub const SHARD_READ_EXCEEDED: usize = 5;
pub const SHARD_ITERATOR_AGE: usize = 6;
const _: () = assert!(SHARD_METRIC_NAMES.len() <= 8, "the enabled set is a u8");

/// The counters of one shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    stats: [Stat; SHARD_METRIC_NAMES.len()],
}

/// Per shard: count and sum at the previous roll-up, and roll-ups since the last traffic.
#[derive(Debug, Default)]
struct ShardRolled {
    previous: [(u64, u64); SHARD_METRIC_NAMES.len()],
    idle_rollups: u32,
}

/// A stream's enabled shard-level metrics and the counters of its shards.
#[derive(Debug, Default)]
pub struct ShardLevel {
    /// One bit per `SHARD_METRIC_NAMES` entry.
    enabled: std::sync::atomic::AtomicU8,
    /// Whether `enabled` was loaded from the stream record yet.
    loaded: std::sync::atomic::AtomicBool,
    shards: RwLock<HashMap<String, Arc<ShardMetrics>>>,
    rolled: Mutex<HashMap<String, ShardRolled>>,
}

impl ShardLevel {
    /// Sets the enabled metrics from their AWS names (unknown names are ignored); turning
    /// every metric off forgets the shards' counters.
    pub fn set_enabled(&self, names: &[String]) {
        let mut bits = 0u8;
        for name in names {
            if let Some(idx) = SHARD_METRIC_NAMES.iter().position(|(n, _, _)| n == name) {
                bits |= 1 << idx;
            }
        }
        self.loaded.store(true, Ordering::Relaxed);
        self.enabled.store(bits, Ordering::Relaxed);
        if bits == 0 {
            self.shards.write().clear();
            self.rolled.lock().clear();
        }
    }

    /// Loads the enabled set once, from `load` (the stream record), on first use.
    pub fn load_once(&self, load: impl FnOnce() -> Vec<String>) {
        if !self.loaded.load(Ordering::Relaxed) {
            self.set_enabled(&load());
        }
    }

    /// Whether any shard-level metric is on.
    pub fn any_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed) != 0
    }

    /// Observes `value` for metric `idx` of a shard, when that metric is enabled.
    pub fn observe(&self, shard_id: &str, idx: usize, value: u64) {
        if self.enabled.load(Ordering::Relaxed) & (1 << idx) == 0 {
            return;
        }
        let found = self.shards.read().get(shard_id).cloned();
        let shard = match found {
            Some(shard) => shard,
            None => {
                let mut shards = self.shards.write();
                if let Some(shard) = shards.get(shard_id) {
                    shard.clone()
                } else if shards.len() >= SHARDS_TRACKED_PER_STREAM_MAX {
                    return;
                } else {
                    let shard = Arc::new(ShardMetrics::default());
                    shards.insert(shard_id.to_string(), shard.clone());
                    shard
                }
            }
        };
        if let Some(stat) = shard.stats.get(idx) {
            stat.observe(value);
        }
    }

    fn snapshot(&self) -> Vec<(String, Arc<ShardMetrics>)> {
        let mut all: Vec<_> = self
            .shards
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The change since the previous roll-up as datapoints (dimensions StreamName, ShardId);
    /// forgets shards idle for `SHARD_IDLE_ROLLUPS_MAX` roll-ups.
    fn rollup(&self, stream_name: &str, out: &mut Vec<Datum>) {
        let mut rolled = self.rolled.lock();
        let mut idle = Vec::new();
        for (shard_id, shard) in self.snapshot() {
            let state = rolled.entry(shard_id.clone()).or_default();
            let mut moved = false;
            for (idx, ((name, _, unit), stat)) in SHARD_METRIC_NAMES
                .iter()
                .zip(shard.stats.iter())
                .enumerate()
            {
                let Some(slot) = state.previous.get_mut(idx) else {
                    continue;
                };
                let Some((n, sum, min, max)) = stat.delta_since(slot) else {
                    continue;
                };
                moved = true;
                out.push(Datum {
                    metric_name: name,
                    dimensions: vec![
                        ("StreamName", stream_name.to_string()),
                        ("ShardId", shard_id.clone()),
                    ],
                    unit,
                    sample_count: n,
                    sum,
                    min,
                    max,
                });
            }
            if moved {
                state.idle_rollups = 0;
            } else {
                state.idle_rollups += 1;
                if state.idle_rollups >= SHARD_IDLE_ROLLUPS_MAX {
                    idle.push(shard_id);
                }
            }
        }
        if !idle.is_empty() {
            let mut shards = self.shards.write();
            for shard_id in &idle {
                shards.remove(shard_id);
                rolled.remove(shard_id);
            }
        }
    }
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
                let Some(slot) = previous.get_mut(idx) else {
                    continue;
                };
                let Some((n, sum, min, max)) = stat.delta_since(slot) else {
                    continue;
                };
                data.push(Datum {
                    metric_name: name,
                    dimensions: vec![("StreamName", key.name.clone())],
                    unit,
                    sample_count: n,
                    sum,
                    min,
                    max,
                });
            }
            metrics.shard_level.rollup(&key.name, &mut data);
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
        for (idx, (aws_name, prom_name, unit)) in SHARD_METRIC_NAMES.iter().enumerate() {
            let mut header_written = false;
            for (key, metrics) in &totals {
                if !metrics.shard_level.any_enabled() {
                    continue;
                }
                for (shard_id, shard) in metrics.shard_level.snapshot() {
                    let Some(stat) = shard.stats.get(idx) else {
                        continue;
                    };
                    if stat.count() == 0 {
                        continue;
                    }
                    if !header_written {
                        header_written = true;
                        let _ = writeln!(
                            out,
                            "# HELP millrace_kinesis_shard_{prom_name} AWS/Kinesis shard-level {aws_name} ({unit}): sum and sample count.\n# TYPE millrace_kinesis_shard_{prom_name} summary"
                        );
                    }
                    let labels = format!(
                        "account=\"{}\",region=\"{}\",stream_name=\"{}\",shard_id=\"{}\"",
                        escape_label(&key.account),
                        escape_label(&key.region),
                        escape_label(&key.name),
                        escape_label(&shard_id)
                    );
                    let _ = writeln!(
                        out,
                        "millrace_kinesis_shard_{prom_name}_sum{{{labels}}} {}\nmillrace_kinesis_shard_{prom_name}_count{{{labels}}} {}",
                        stat.sum(),
                        stat.count()
                    );
                }
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

/// (account, region, stream name) of a stream ARN.
pub fn parse_stream_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let (_partition, _service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let name = resource.strip_prefix("stream/")?.split('/').next()?;
    Some((account, region, name))
}

/// The stream a data-plane request names and the metrics it is counted under, if any.
pub enum Counted {
    PutRecord {
        stream: String,
        bytes: u64,
    },
    PutRecords {
        stream: String,
        bytes: u64,
        /// Each record's bytes, in request order: filled (`record_sizes`) only when the
        /// stream has shard-level metrics on.
        record_bytes: Vec<u64>,
    },
    GetRecords {
        iterator: String,
    },
}

fn record_size(data: &[u8], partition_key: Option<&String>) -> u64 {
    (data.len() + partition_key.map_or(0, String::len)) as u64
}

/// Each record's bytes (data and partition key) of a PutRecords request.
pub fn record_sizes(request: &kinesis::Request) -> Vec<u64> {
    match request {
        kinesis::Request::PutRecords(input) => input
            .records
            .iter()
            .map(|r| record_size(&r.data, r.partition_key.as_ref()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The shard id in a ProvisionedThroughputExceededException message ("Rate exceeded for
/// shard shardId-000000000001 in stream ..."), for the shard-level metrics.
pub fn shard_in_throttle_message(message: &str) -> Option<&str> {
    let start = message.find("shardId-")?;
    let rest = message.get(start..)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(rest.len());
    rest.get(..end)
}

impl Counted {
    pub fn of(request: &kinesis::Request) -> Option<Counted> {
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
                    .map(|r| record_size(&r.data, r.partition_key.as_ref()))
                    .sum(),
                record_bytes: Vec::new(),
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
/// ProvisionedThroughputExceededException; `shard` is the shard it was refused for or (for
/// GetRecords) read, when known.
pub fn count(
    metrics: &StreamMetrics,
    counted: &Counted,
    response: Option<&kinesis::Response>,
    throttled: bool,
    shard: Option<&str>,
    latency_us: u64,
) {
    let ok = u64::from(response.is_some());
    let shard_level = &metrics.shard_level;
    let per_shard = shard_level.any_enabled();
    match counted {
        Counted::PutRecord { bytes, .. } => {
            metrics.put_record_success.observe(ok);
            if throttled {
                metrics.write_throughput_exceeded.observe(1);
                if per_shard && let Some(shard) = shard {
                    shard_level.observe(shard, SHARD_WRITE_EXCEEDED, 1);
                }
            }
            if per_shard && let Some(kinesis::Response::PutRecord(output)) = response {
                shard_level.observe(&output.shard_id, SHARD_INCOMING_BYTES, *bytes);
                shard_level.observe(&output.shard_id, SHARD_INCOMING_RECORDS, 1);
            }
            if response.is_some() {
                metrics.put_record_bytes.observe(*bytes);
                metrics.put_record_latency.observe(latency_ms(latency_us));
                metrics.incoming_bytes.observe(*bytes);
                metrics.incoming_records.observe(1);
            }
        }
        Counted::PutRecords {
            bytes,
            record_bytes,
            ..
        } => {
            metrics.put_records_success.observe(ok);
            let Some(kinesis::Response::PutRecords(output)) = response else {
                if throttled {
                    metrics.write_throughput_exceeded.observe(1);
                }
                return;
            };
            if per_shard {
                count_put_records_per_shard(shard_level, output, record_bytes);
            }
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
            if per_shard && let Some(shard) = shard {
                if throttled {
                    shard_level.observe(shard, SHARD_READ_EXCEEDED, 1);
                }
                if let Some(kinesis::Response::GetRecords(output)) = response {
                    let bytes: u64 = output
                        .records
                        .iter()
                        .map(|r| record_size(&r.data, r.partition_key.as_ref()))
                        .sum();
                    shard_level.observe(shard, SHARD_OUTGOING_BYTES, bytes);
                    shard_level.observe(shard, SHARD_OUTGOING_RECORDS, output.records.len() as u64);
                    if let Some(age) = output.millis_behind_latest {
                        shard_level.observe(
                            shard,
                            SHARD_ITERATOR_AGE,
                            u64::try_from(age).unwrap_or(0),
                        );
                    }
                }
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

/// The shard-level counts of an answered PutRecords: per shard, the records and bytes that
/// went in (one observation per shard and request, as the stream-level ones are per
/// request), and the records refused with ProvisionedThroughputExceededException.
fn count_put_records_per_shard(
    shard_level: &ShardLevel,
    output: &kinesis::PutRecordsOutput,
    record_bytes: &[u64],
) {
    // (shard id, records, bytes); a batch touches few shards, so a short list beats a map.
    let mut per_shard: Vec<(&str, u64, u64)> = Vec::new();
    for (idx, entry) in output.records.iter().enumerate() {
        if let Some(shard_id) = entry.shard_id.as_deref() {
            let bytes = record_bytes.get(idx).copied().unwrap_or(0);
            match per_shard.iter_mut().find(|(s, _, _)| *s == shard_id) {
                Some(slot) => {
                    slot.1 += 1;
                    slot.2 += bytes;
                }
                None => per_shard.push((shard_id, 1, bytes)),
            }
        } else if entry.error_code.as_deref() == Some("ProvisionedThroughputExceededException")
            && let Some(shard_id) = entry
                .error_message
                .as_deref()
                .and_then(shard_in_throttle_message)
        {
            shard_level.observe(shard_id, SHARD_WRITE_EXCEEDED, 1);
        }
    }
    for (shard_id, n_records, bytes) in per_shard {
        shard_level.observe(shard_id, SHARD_INCOMING_RECORDS, n_records);
        shard_level.observe(shard_id, SHARD_INCOMING_BYTES, bytes);
    }
}

/// The previous totals of plain running counters (the `AWS/Firehose`, `AWS/KinesisVideo`
/// and `AWS/KinesisAnalytics` ones), so a roll-up can store the change since the previous
/// one.
#[derive(Default)]
pub struct CounterRollup {
    previous: HashMap<String, HashMap<&'static str, u64>>,
}

/// A service whose metrics are plain running counters: its CloudWatch namespace, the
/// Prometheus prefix, and the dimensions (CloudWatch name, Prometheus label) its keys
/// carry after `account/region/`.
pub struct CounterService {
    pub namespace: &'static str,
    pub prometheus_prefix: &'static str,
    pub dimensions: &'static [(&'static str, &'static str)],
}

pub const FIREHOSE: CounterService = CounterService {
    namespace: "AWS/Firehose",
    prometheus_prefix: "firehose",
    dimensions: &[("DeliveryStreamName", "delivery_stream_name")],
};

pub const VIDEO: CounterService = CounterService {
    namespace: "AWS/KinesisVideo",
    prometheus_prefix: "kinesisvideo",
    dimensions: &[("StreamName", "stream_name")],
};

/// Keys `account/region/application/flow/id`: AWS's `Application`, `Flow` (Input or
/// Output) and `Id` (the input or output id) dimensions.
pub const ANALYTICS: CounterService = CounterService {
    namespace: "AWS/KinesisAnalytics",
    prometheus_prefix: "kinesisanalytics",
    dimensions: &[
        ("Application", "application"),
        ("Flow", "flow"),
        ("Id", "id"),
    ],
};

/// The parts of an `account/region/...` key: account, region, then one value per
/// dimension (the last takes the rest, so a name may hold `/` only in the last place).
fn key_parts(key: &str, n_dimensions: usize) -> (&str, &str, Vec<&str>) {
    let mut parts = key.splitn(2 + n_dimensions, '/');
    let account = parts.next().unwrap_or("");
    let region = parts.next().unwrap_or("");
    let mut values: Vec<&str> = parts.collect();
    values.resize(n_dimensions, "");
    (account, region, values)
}

/// Counters that are byte counts (the rest are counts).
fn counter_unit(name: &str) -> &'static str {
    if name.ends_with("Bytes") {
        "Bytes"
    } else {
        "Count"
    }
}

impl CounterRollup {
    /// Datapoints (dimension `DeliveryStreamName`) for every counter that moved since the
    /// previous roll-up; forgets delivery streams that are gone.
    pub fn rollup(&mut self, totals: &[(String, Vec<(&'static str, u64)>)]) -> Vec<Datum> {
        self.rollup_of(&FIREHOSE, totals)
    }

    /// Datapoints (the service's dimensions) for every counter that moved since the
    /// previous roll-up; forgets keys that are gone.
    pub fn rollup_of(
        &mut self,
        service: &CounterService,
        totals: &[(String, Vec<(&'static str, u64)>)],
    ) -> Vec<Datum> {
        let mut data = Vec::new();
        for (key, counters) in totals {
            let previous = self.previous.entry(key.clone()).or_default();
            for (name, total) in counters {
                let before = previous.insert(*name, *total).unwrap_or(0);
                let delta = total.saturating_sub(before);
                if delta == 0 {
                    continue;
                }
                let (_, _, values) = key_parts(key, service.dimensions.len());
                data.push(Datum {
                    metric_name: name,
                    dimensions: service
                        .dimensions
                        .iter()
                        .zip(values)
                        .map(|((dimension, _), value)| (*dimension, value.to_string()))
                        .collect(),
                    unit: counter_unit(name),
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
    render_counters(&FIREHOSE, totals, out);
}

/// `millrace_PREFIX_*_total` counters in the Prometheus text format.
pub fn render_counters(
    service: &CounterService,
    totals: &[(String, Vec<(&'static str, u64)>)],
    out: &mut String,
) {
    let Some((_, first)) = totals.first() else {
        return;
    };
    let prefix = service.prometheus_prefix;
    for (idx, (aws_name, _)) in first.iter().enumerate() {
        let prom_name = prometheus_name(aws_name);
        let _ = writeln!(
            out,
            "# HELP millrace_{prefix}_{prom_name}_total {} {aws_name}, since start.\n# TYPE millrace_{prefix}_{prom_name}_total counter",
            service.namespace
        );
        for (key, counters) in totals {
            let (account, region, values) = key_parts(key, service.dimensions.len());
            let mut labels = format!(
                "account=\"{}\",region=\"{}\"",
                escape_label(account),
                escape_label(region)
            );
            for ((_, label), value) in service.dimensions.iter().zip(values) {
                let _ = write!(labels, ",{label}=\"{}\"", escape_label(value));
            }
            let value = counters.get(idx).map_or(0, |(_, v)| *v);
            let _ = writeln!(
                out,
                "millrace_{prefix}_{prom_name}_total{{{labels}}} {value}"
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
    fn shard_level_counts_only_enabled_metrics_and_rolls_up_per_shard() {
        let registry = KinesisMetrics::default();
        let metrics = registry
            .stream("000000000000", "us-east-1", "s")
            .expect("present");
        let shards = &metrics.shard_level;
        shards.observe("shardId-000000000000", SHARD_INCOMING_RECORDS, 5);
        assert!(
            shards.snapshot().is_empty(),
            "nothing enabled: nothing kept"
        );
        shards.set_enabled(&["IncomingRecords".to_string(), "Nonsense".to_string()]);
        shards.observe("shardId-000000000000", SHARD_INCOMING_RECORDS, 5);
        shards.observe("shardId-000000000000", SHARD_INCOMING_BYTES, 100);
        shards.observe("shardId-000000000001", SHARD_INCOMING_RECORDS, 2);
        let rolled = registry.rollup();
        let per_shard: Vec<&Datum> = rolled[0]
            .1
            .iter()
            .filter(|d| d.dimensions.len() == 2)
            .collect();
        assert_eq!(per_shard.len(), 2, "IncomingBytes is not enabled");
        assert_eq!(per_shard[0].metric_name, "IncomingRecords");
        assert_eq!(
            per_shard[0].dimensions,
            vec![
                ("StreamName", "s".to_string()),
                ("ShardId", "shardId-000000000000".to_string())
            ]
        );
        assert_eq!((per_shard[0].sum, per_shard[1].sum), (5.0, 2.0));
        let mut text = String::new();
        registry.render_prometheus(&mut text);
        assert!(text.contains("millrace_kinesis_shard_incoming_records_sum{account=\"000000000000\",region=\"us-east-1\",stream_name=\"s\",shard_id=\"shardId-000000000001\"} 2\n"));
        shards.set_enabled(&[]);
        assert!(
            shards.snapshot().is_empty(),
            "disabled: the shards' counters go"
        );
    }

    #[test]
    fn idle_shards_are_forgotten() {
        let level = ShardLevel::default();
        level.set_enabled(&["OutgoingRecords".to_string()]);
        level.observe("shardId-000000000003", SHARD_OUTGOING_RECORDS, 1);
        let mut out = Vec::new();
        level.rollup("s", &mut out);
        assert_eq!(out.len(), 1);
        for _ in 0..SHARD_IDLE_ROLLUPS_MAX - 1 {
            level.rollup("s", &mut out);
        }
        assert_eq!(level.snapshot().len(), 1, "not idle for long enough yet");
        level.rollup("s", &mut out);
        assert!(level.snapshot().is_empty());
        assert_eq!(out.len(), 1, "idle roll-ups store nothing");
    }

    #[test]
    fn throttle_messages_and_arns_name_shards_and_streams() {
        assert_eq!(
            shard_in_throttle_message(
                "Rate exceeded for shard shardId-000000000002 in stream s under account 1."
            ),
            Some("shardId-000000000002")
        );
        assert_eq!(shard_in_throttle_message("Rate exceeded."), None);
        assert_eq!(
            parse_stream_arn("arn:aws:kinesis:eu-west-1:123456789012:stream/orders"),
            Some(("123456789012", "eu-west-1", "orders"))
        );
        assert_eq!(
            parse_stream_arn("arn:aws:kinesis:eu-west-1:1:table/x"),
            None
        );
    }

    #[test]
    fn counter_services_carry_their_dimensions() {
        let totals = vec![(
            "1/r/app/Input/1.1".to_string(),
            vec![("Records", 4), ("Bytes", 40)],
        )];
        let data = CounterRollup::default().rollup_of(&ANALYTICS, &totals);
        assert_eq!(data.len(), 2);
        assert_eq!(
            data[0].dimensions,
            vec![
                ("Application", "app".to_string()),
                ("Flow", "Input".to_string()),
                ("Id", "1.1".to_string())
            ]
        );
        assert_eq!((data[1].metric_name, data[1].unit), ("Bytes", "Bytes"));
        let mut text = String::new();
        render_counters(&ANALYTICS, &totals, &mut text);
        assert!(text.contains("millrace_kinesisanalytics_records_total{account=\"1\",region=\"r\",application=\"app\",flow=\"Input\",id=\"1.1\"} 4\n"));
        assert!(text.contains("# TYPE millrace_kinesisanalytics_bytes_total counter\n"));
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
