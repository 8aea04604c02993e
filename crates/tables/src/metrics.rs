//! CloudWatch metrics: `PutMetricData` kept as time series, read back with `ListMetrics`,
//! `GetMetricStatistics` and `GetMetricData`. No alarms, dashboards, math expressions or
//! percentiles.
//!
//! Layout: `metric_series` maps a series id (the JSON of `[namespace, metric name, sorted
//! dimensions]`) to its description; `metric_points` maps `(series id, epoch ms)` to the
//! aggregate of every value put at that instant (`{"n", "sum", "min", "max", "unit"}`), so a
//! KCL worker publishing the same metric many times a second costs one row per instant.
//! Datapoints older than [`RETENTION_SECS`] are dropped when their series is written, and
//! the number of series is bounded by [`SERIES_MAX`].

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde_json::{Map, Value, json};

use crate::protocol::{self, Answer, Protocol};
use crate::{Context, Tables};

const SERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("metric_series");
const POINTS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("metric_points");

/// Series kept at most; a put that would add one more is refused (`LimitExceeded`).
const SERIES_MAX: u64 = 100_000;
/// How long datapoints are kept (CloudWatch keeps one-minute data for 15 days).
const RETENTION_SECS: i64 = 15 * 24 * 3600;
/// Limits of `PutMetricData`, as CloudWatch's.
const METRIC_DATA_MAX: usize = 1000;
const DIMENSIONS_MAX: usize = 30;
const VALUES_MAX: usize = 150;
/// `ListMetrics` page size, as CloudWatch's.
const LIST_PAGE: usize = 500;
/// Datapoints one `GetMetricStatistics` answer may hold, as CloudWatch's.
const DATAPOINTS_MAX: usize = 1440;

const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// A CloudWatch error: the awsQuery code, the model's shape name, status and message.
struct CwError {
    status: u16,
    code: &'static str,
    shape: &'static str,
    message: String,
}

fn invalid(message: impl Into<String>) -> CwError {
    CwError {
        status: 400,
        code: "InvalidParameterValue",
        shape: "InvalidParameterValueException",
        message: message.into(),
    }
}

fn missing(name: &str) -> CwError {
    CwError {
        status: 400,
        code: "MissingParameter",
        shape: "MissingRequiredParameterException",
        message: format!("The parameter {name} is required."),
    }
}

fn combination(message: impl Into<String>) -> CwError {
    CwError {
        status: 400,
        code: "InvalidParameterCombination",
        shape: "InvalidParameterCombinationException",
        message: message.into(),
    }
}

fn internal(error: impl std::fmt::Display) -> CwError {
    tracing::error!(%error, "CloudWatch request failed inside Millrace");
    CwError {
        status: 500,
        code: "InternalServiceError",
        shape: "InternalServiceFault",
        message: "Internal error".into(),
    }
}

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), crate::Error> {
    txn.open_table(SERIES)?;
    txn.open_table(POINTS)?;
    Ok(())
}

pub(crate) fn reset(txn: &WriteTransaction) -> Result<(), crate::Error> {
    txn.delete_table(SERIES)?;
    txn.delete_table(POINTS)?;
    create_tables(txn)
}

/// Largest decompressed request body.
const BODY_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// A gzip body (`Content-Encoding: gzip`: the SDKs compress PutMetricData over 10 KB, the
/// model's `requestCompression`), recognised by its magic bytes.
fn gunzip(body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read as _;
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(None);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(BODY_BYTES_MAX + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the gzip body cannot be decompressed: {e}"))?;
    if out.len() as u64 > BODY_BYTES_MAX {
        return Err(format!(
            "the decompressed body exceeds {BODY_BYTES_MAX} bytes"
        ));
    }
    Ok(Some(out))
}

pub(crate) fn answer(
    tables: &Tables,
    ctx: &Context,
    protocol: Protocol,
    operation: &str,
    body: &[u8],
) -> Answer {
    let inflated = match gunzip(body) {
        Ok(inflated) => inflated,
        Err(m) => return error(protocol, ctx, invalid(m)),
    };
    let body = inflated.as_deref().unwrap_or(body);
    let (operation, request) = match protocol {
        Protocol::Query => match protocol::decode_query(body) {
            Ok((action, tree)) => (action, tree),
            Err(m) => {
                let head: Vec<String> = body.iter().take(16).map(|b| format!("{b:02x}")).collect();
                tracing::debug!(n_bytes = body.len(), head = %head.join(""), gzip = inflated.is_some(), "undecodable awsQuery body");
                return error(protocol, ctx, invalid(m));
            }
        },
        Protocol::Json10 => match serde_json::from_slice::<Value>(body) {
            Ok(v) => (operation.to_string(), v),
            Err(_) => {
                return error(
                    protocol,
                    ctx,
                    CwError {
                        status: 400,
                        code: "SerializationException",
                        shape: "SerializationException",
                        message: "Malformed JSON".into(),
                    },
                );
            }
        },
        Protocol::RpcV2Cbor => match protocol::decode_cbor(body) {
            Ok(v) => (operation.to_string(), v),
            Err(m) => {
                return error(
                    protocol,
                    ctx,
                    CwError {
                        status: 400,
                        code: "SerializationException",
                        shape: "SerializationException",
                        message: m,
                    },
                );
            }
        },
    };
    let empty = Map::new();
    let request = request.as_object().unwrap_or(&empty);
    let result = match operation.as_str() {
        "PutMetricData" => put_metric_data(tables, request),
        "ListMetrics" => list_metrics(tables, request),
        "GetMetricStatistics" => get_metric_statistics(tables, request),
        "GetMetricData" => get_metric_data(tables, request),
        other => Err(CwError {
            status: 400,
            code: "InvalidAction",
            shape: "InvalidAction",
            message: format!("Could not find operation {other} for version 2010-08-01"),
        }),
    };
    match result {
        Ok(value) => protocol::encode_ok(protocol, &operation, &value, &ctx.request_id),
        Err(e) => error(protocol, ctx, e),
    }
}

fn error(protocol: Protocol, ctx: &Context, e: CwError) -> Answer {
    protocol::encode_error(
        protocol,
        e.status,
        e.code,
        e.shape,
        &e.message,
        &ctx.request_id,
    )
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn dimensions(
    value: Option<&Value>,
    require_value: bool,
) -> Result<Vec<(String, Option<String>)>, CwError> {
    let mut out = Vec::new();
    for d in value.and_then(Value::as_array).into_iter().flatten() {
        let name = d
            .get("Name")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("Dimensions.member.N.Name"))?;
        let v = d.get("Value").and_then(Value::as_str);
        if require_value && v.is_none() {
            return Err(missing("Dimensions.member.N.Value"));
        }
        if name.is_empty() || name.len() > 255 || v.is_some_and(|v| v.is_empty() || v.len() > 1024)
        {
            return Err(invalid(
                "The value of a dimension name or value is not valid.",
            ));
        }
        out.push((name.to_string(), v.map(str::to_string)));
    }
    if out.len() > DIMENSIONS_MAX {
        return Err(invalid(format!(
            "The collection Dimensions must not have a size greater than {DIMENSIONS_MAX}."
        )));
    }
    out.sort();
    Ok(out)
}

fn series_id(namespace: &str, metric: &str, dims: &[(String, Option<String>)]) -> String {
    json!([
        namespace,
        metric,
        dims.iter()
            .map(|(n, v)| [n.clone(), v.clone().unwrap_or_default()])
            .collect::<Vec<_>>()
    ])
    .to_string()
}

struct Sample {
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
}

fn put_metric_data(tables: &Tables, request: &Map<String, Value>) -> Result<Value, CwError> {
    let namespace = text(request, "Namespace").ok_or_else(|| missing("Namespace"))?;
    if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
        return Err(
            invalid("The value AWS/ for parameter Namespace is invalid.").with_namespace(namespace),
        );
    }
    let data = request
        .get("MetricData")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("MetricData"))?;
    if data.is_empty() || data.len() > METRIC_DATA_MAX {
        return Err(invalid(format!(
            "The collection MetricData must not have a size greater than {METRIC_DATA_MAX}."
        )));
    }
    let now = now_secs();
    let mut writes: Vec<PointWrite> = Vec::new();
    for datum in data {
        let empty = Map::new();
        let datum = datum.as_object().unwrap_or(&empty);
        let metric =
            text(datum, "MetricName").ok_or_else(|| missing("MetricData.member.N.MetricName"))?;
        if metric.is_empty() || metric.len() > 255 {
            return Err(invalid(
                "The parameter MetricData.member.N.MetricName must be between 1 and 255 characters.",
            ));
        }
        let dims = dimensions(datum.get("Dimensions"), true)?;
        let unit = text(datum, "Unit").map(str::to_string);
        if let Some(u) = &unit
            && !UNITS.contains(&u.as_str())
        {
            return Err(invalid(format!(
                "The value {u} for parameter MetricData.member.N.Unit is invalid."
            )));
        }
        let at = match datum.get("Timestamp") {
            Some(t) => protocol::parse_time(t).ok_or_else(|| {
                invalid("The parameter MetricData.member.N.Timestamp is not a valid timestamp.")
            })?,
            None => now,
        };
        if at < now - RETENTION_SECS as f64 || at > now + 2.0 * 3600.0 {
            return Err(invalid(
                "The parameter MetricData.member.N.Timestamp must specify a time no more than two weeks in the past or two hours in the future.",
            ));
        }
        let value = datum
            .get("Value")
            .map(|v| {
                number(v).ok_or_else(|| {
                    invalid("The value for parameter MetricData.member.N.Value is not a number.")
                })
            })
            .transpose()?;
        let stats = datum.get("StatisticValues");
        let values = datum.get("Values").and_then(Value::as_array);
        let sample = match (value, stats, values) {
            (Some(v), None, None) => Sample {
                count: 1.0,
                sum: v,
                min: v,
                max: v,
            },
            (None, Some(s), None) => {
                let field = |k: &str| -> Result<f64, CwError> {
                    s.get(k)
                        .and_then(number)
                        .ok_or_else(|| missing(&format!("MetricData.member.N.StatisticValues.{k}")))
                };
                Sample {
                    count: field("SampleCount")?,
                    sum: field("Sum")?,
                    min: field("Minimum")?,
                    max: field("Maximum")?,
                }
            }
            (None, None, Some(values)) => {
                if values.len() > VALUES_MAX {
                    return Err(invalid(format!(
                        "The collection Values must not have a size greater than {VALUES_MAX}."
                    )));
                }
                let counts: Vec<f64> = datum
                    .get("Counts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(number)
                    .collect();
                if !counts.is_empty() && counts.len() != values.len() {
                    return Err(combination(
                        "The parameters MetricData.member.N.Values and MetricData.member.N.Counts must be of the same size.",
                    ));
                }
                let mut s = Sample {
                    count: 0.0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                };
                for (i, v) in values.iter().enumerate() {
                    let v = number(v).ok_or_else(|| invalid("Values must be numbers"))?;
                    let c = counts.get(i).copied().unwrap_or(1.0);
                    s.count += c;
                    s.sum += v * c;
                    s.min = s.min.min(v);
                    s.max = s.max.max(v);
                }
                if values.is_empty() {
                    continue;
                }
                s
            }
            (None, None, None) => {
                return Err(combination(
                    "At least one of the parameters MetricData.member.N.Value, StatisticValues or Values must be specified.",
                ));
            }
            _ => {
                return Err(combination(
                    "The parameters MetricData.member.N.Value, MetricData.member.N.StatisticValues and MetricData.member.N.Values are mutually exclusive.",
                ));
            }
        };
        if ![sample.count, sample.sum, sample.min, sample.max]
            .iter()
            .all(|x| x.is_finite())
        {
            return Err(invalid(
                "The value for parameter MetricData.member.N.Value is not a valid number.",
            ));
        }
        let description = json!({
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": dims.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
        });
        writes.push((
            series_id(namespace, metric, &dims),
            description,
            (at * 1000.0) as i64,
            sample,
            unit,
        ));
    }
    write_points(tables, now, writes)?;
    Ok(json!({}))
}

/// One datapoint of a service's own metrics (`AWS/Kinesis`, `AWS/Firehose`), which
/// `PutMetricData` refuses to take from clients.
#[derive(Clone, Debug)]
pub struct ServiceDatum {
    pub metric_name: &'static str,
    /// Dimension (name, value) pairs.
    pub dimensions: Vec<(&'static str, String)>,
    pub unit: &'static str,
    pub sample_count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// Stores datapoints of the service's own namespaces at `at_secs` (the metrics roll-up).
pub(crate) fn put_service_metrics(
    tables: &Tables,
    namespace: &str,
    at_secs: f64,
    data: &[ServiceDatum],
) -> Result<(), crate::Error> {
    let mut writes = Vec::with_capacity(data.len());
    for datum in data {
        let mut dims: Vec<(String, Option<String>)> = datum
            .dimensions
            .iter()
            .map(|(n, v)| (n.to_string(), Some(v.clone())))
            .collect();
        // Series are keyed by sorted dimensions, as queries sort theirs (`dimensions`).
        dims.sort();
        let description = json!({
            "Namespace": namespace,
            "MetricName": datum.metric_name,
            "Dimensions": dims.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
        });
        writes.push((
            series_id(namespace, datum.metric_name, &dims),
            description,
            (at_secs * 1000.0) as i64,
            Sample {
                count: datum.sample_count,
                sum: datum.sum,
                min: datum.min,
                max: datum.max,
            },
            Some(datum.unit.to_string()),
        ));
    }
    write_points(tables, now_secs(), writes)
        .map_err(|e| crate::Error::Storage(format!("{}: {}", e.code, e.message)))
}

type PointWrite = (String, Value, i64, Sample, Option<String>);

fn write_points(tables: &Tables, now: f64, writes: Vec<PointWrite>) -> Result<(), CwError> {
    let txn = tables.db().begin_write().map_err(internal)?;
    {
        let mut series = txn.open_table(SERIES).map_err(internal)?;
        let mut points = txn.open_table(POINTS).map_err(internal)?;
        let cutoff_ms = ((now as i64) - RETENTION_SECS) * 1000;
        for (id, description, at_ms, sample, unit) in writes {
            if series.get(id.as_str()).map_err(internal)?.is_none() {
                if series.len().map_err(internal)? >= SERIES_MAX {
                    return Err(CwError {
                        status: 400,
                        code: "LimitExceeded",
                        shape: "LimitExceededFault",
                        message: format!("The number of metric series is limited to {SERIES_MAX}."),
                    });
                }
                series
                    .insert(id.as_str(), description.to_string().as_bytes())
                    .map_err(internal)?;
            } else {
                points
                    .retain_in((id.as_str(), i64::MIN)..(id.as_str(), cutoff_ms), |_, _| {
                        false
                    })
                    .map_err(internal)?;
            }
            let merged = match points.get((id.as_str(), at_ms)).map_err(internal)? {
                Some(old) => {
                    let old: Value = serde_json::from_slice(old.value()).unwrap_or(Value::Null);
                    let f = |k: &str| old.get(k).and_then(Value::as_f64);
                    json!({
                        "n": f("n").unwrap_or(0.0) + sample.count,
                        "sum": f("sum").unwrap_or(0.0) + sample.sum,
                        "min": f("min").unwrap_or(sample.min).min(sample.min),
                        "max": f("max").unwrap_or(sample.max).max(sample.max),
                        "unit": unit.clone().or_else(|| old.get("unit").and_then(Value::as_str).map(str::to_string)),
                    })
                }
                None => {
                    json!({"n": sample.count, "sum": sample.sum, "min": sample.min, "max": sample.max, "unit": unit})
                }
            };
            points
                .insert((id.as_str(), at_ms), merged.to_string().as_bytes())
                .map_err(internal)?;
        }
    }
    txn.commit().map_err(internal)?;
    Ok(())
}

impl CwError {
    fn with_namespace(mut self, namespace: &str) -> CwError {
        self.message = format!("The value {namespace} for parameter Namespace is invalid.");
        self
    }
}

fn list_metrics(tables: &Tables, request: &Map<String, Value>) -> Result<Value, CwError> {
    let namespace = text(request, "Namespace");
    let metric = text(request, "MetricName");
    let filters = dimensions(request.get("Dimensions"), false)?;
    let after = text(request, "NextToken");
    let txn = tables.db().begin_read().map_err(internal)?;
    let series = txn.open_table(SERIES).map_err(internal)?;
    let mut metrics = Vec::new();
    let mut next = None;
    for entry in series.iter().map_err(internal)? {
        let (id, description) = entry.map_err(internal)?;
        let id = id.value();
        if after.is_some_and(|a| id <= a) {
            continue;
        }
        let d: Value = serde_json::from_slice(description.value()).unwrap_or(Value::Null);
        if namespace.is_some_and(|n| d.get("Namespace").and_then(Value::as_str) != Some(n))
            || metric.is_some_and(|m| d.get("MetricName").and_then(Value::as_str) != Some(m))
        {
            continue;
        }
        let dims = d
            .get("Dimensions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let matches = filters.iter().all(|(name, value)| {
            dims.iter().any(|x| {
                x.get("Name").and_then(Value::as_str) == Some(name)
                    && value
                        .as_ref()
                        .is_none_or(|v| x.get("Value").and_then(Value::as_str) == Some(v))
            })
        });
        if !matches {
            continue;
        }
        if metrics.len() == LIST_PAGE {
            next = Some(id.to_string());
            break;
        }
        metrics.push(d);
        if metrics.len() == LIST_PAGE {
            next = Some(id.to_string());
        }
    }
    let mut response = json!({"Metrics": metrics});
    if let (Some(n), Some(obj)) = (next, response.as_object_mut()) {
        obj.insert("NextToken".into(), n.into());
    }
    Ok(response)
}

/// Aggregates of one series between two instants, by period start (epoch seconds).
fn buckets(
    tables: &Tables,
    metric: &Value,
    start: f64,
    end: f64,
    period: i64,
    unit: Option<&str>,
) -> Result<(BTreeMap<i64, Sample>, Option<String>), CwError> {
    let empty = Map::new();
    let metric = metric.as_object().unwrap_or(&empty);
    let namespace = text(metric, "Namespace").ok_or_else(|| missing("Namespace"))?;
    let name = text(metric, "MetricName").ok_or_else(|| missing("MetricName"))?;
    let dims = dimensions(metric.get("Dimensions"), true)?;
    let id = series_id(namespace, name, &dims);
    let txn = tables.db().begin_read().map_err(internal)?;
    let points = txn.open_table(POINTS).map_err(internal)?;
    let mut out: BTreeMap<i64, Sample> = BTreeMap::new();
    let mut seen_unit = None;
    let range = (id.as_str(), (start * 1000.0) as i64)..(id.as_str(), (end * 1000.0) as i64);
    for entry in points.range(range).map_err(internal)? {
        let (k, v) = entry.map_err(internal)?;
        let (_, at_ms) = k.value();
        let p: Value = serde_json::from_slice(v.value()).unwrap_or(Value::Null);
        let point_unit = p.get("unit").and_then(Value::as_str);
        if unit.is_some() && point_unit.unwrap_or("None") != unit.unwrap_or("None") {
            continue;
        }
        if seen_unit.is_none() {
            seen_unit = point_unit.map(str::to_string);
        }
        let start_ms = (start * 1000.0) as i64;
        let bucket = start as i64 + (at_ms - start_ms).div_euclid(period * 1000) * period;
        let f = |k: &str| p.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let s = out.entry(bucket).or_insert(Sample {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        });
        s.count += f("n");
        s.sum += f("sum");
        s.min = s.min.min(f("min"));
        s.max = s.max.max(f("max"));
    }
    Ok((out, seen_unit))
}

fn time_range(request: &Map<String, Value>) -> Result<(f64, f64), CwError> {
    let start = request
        .get("StartTime")
        .ok_or_else(|| missing("StartTime"))?;
    let end = request.get("EndTime").ok_or_else(|| missing("EndTime"))?;
    let start = protocol::parse_time(start)
        .ok_or_else(|| invalid("The parameter StartTime is not a valid timestamp."))?;
    let end = protocol::parse_time(end)
        .ok_or_else(|| invalid("The parameter EndTime is not a valid timestamp."))?;
    if start >= end {
        return Err(invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    Ok((start, end))
}

fn period_of(value: Option<&Value>) -> Result<i64, CwError> {
    let period = value.and_then(number).ok_or_else(|| missing("Period"))? as i64;
    if period < 1
        || (period >= 60 && period % 60 != 0)
        || (period < 60 && ![1, 5, 10, 30].contains(&period))
    {
        return Err(invalid(
            "The parameter Period must be 1, 5, 10, 30 or a multiple of 60.",
        ));
    }
    Ok(period)
}

fn stat(s: &Sample, name: &str) -> Option<f64> {
    Some(match name {
        "SampleCount" => s.count,
        "Sum" => s.sum,
        "Average" => {
            if s.count == 0.0 {
                0.0
            } else {
                s.sum / s.count
            }
        }
        "Minimum" => s.min,
        "Maximum" => s.max,
        _ => return None,
    })
}

fn get_metric_statistics(tables: &Tables, request: &Map<String, Value>) -> Result<Value, CwError> {
    let (start, end) = time_range(request)?;
    let period = period_of(request.get("Period"))?;
    let statistics: Vec<&str> = request
        .get("Statistics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if statistics.is_empty() {
        return Err(missing("Statistics"));
    }
    if let Some(bad) = statistics.iter().find(|s| {
        stat(
            &Sample {
                count: 0.0,
                sum: 0.0,
                min: 0.0,
                max: 0.0,
            },
            s,
        )
        .is_none()
    }) {
        return Err(invalid(format!(
            "The value {bad} for parameter Statistics is invalid."
        )));
    }
    let unit = text(request, "Unit");
    let metric = Value::Object(request.clone());
    let (buckets, seen_unit) = buckets(tables, &metric, start, end, period, unit)?;
    if buckets.len() > DATAPOINTS_MAX {
        return Err(invalid(format!(
            "You have requested up to {} datapoints, which exceeds the limit of {DATAPOINTS_MAX}.",
            buckets.len()
        )));
    }
    let unit = unit
        .map(str::to_string)
        .or(seen_unit)
        .unwrap_or_else(|| "None".into());
    let datapoints: Vec<Value> = buckets
        .iter()
        .map(|(at, s)| {
            let mut p = Map::new();
            p.insert("Timestamp".into(), protocol::timestamp(*at as f64));
            for name in &statistics {
                if let Some(v) = stat(s, name) {
                    p.insert((*name).to_string(), v.into());
                }
            }
            p.insert("Unit".into(), unit.clone().into());
            Value::Object(p)
        })
        .collect();
    Ok(json!({"Label": text(request, "MetricName").unwrap_or(""), "Datapoints": datapoints}))
}

fn get_metric_data(tables: &Tables, request: &Map<String, Value>) -> Result<Value, CwError> {
    let (start, end) = time_range(request)?;
    let queries = request
        .get("MetricDataQueries")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("MetricDataQueries"))?;
    if queries.len() > 500 {
        return Err(invalid(
            "The collection MetricDataQueries must not have a size greater than 500.",
        ));
    }
    let mut results = Vec::new();
    for q in queries {
        let id = q
            .get("Id")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("MetricDataQueries.member.N.Id"))?;
        if q.get("ReturnData")
            .is_some_and(|r| r == &Value::Bool(false) || r == "false")
        {
            continue;
        }
        let Some(metric_stat) = q.get("MetricStat") else {
            return Err(invalid(
                "Only MetricStat queries are supported by Millrace (no metric math).",
            ));
        };
        let period = period_of(metric_stat.get("Period"))?;
        let stat_name = metric_stat
            .get("Stat")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("MetricStat.Stat"))?;
        let metric = metric_stat.get("Metric").cloned().unwrap_or(Value::Null);
        let unit = metric_stat.get("Unit").and_then(Value::as_str);
        let (buckets, _) = buckets(tables, &metric, start, end, period, unit)?;
        let mut timestamps = Vec::new();
        let mut values = Vec::new();
        let descending =
            request.get("ScanBy").and_then(Value::as_str) != Some("TimestampAscending");
        let mut entries: Vec<(&i64, &Sample)> = buckets.iter().collect();
        if descending {
            entries.reverse();
        }
        for (at, s) in entries {
            let v = stat(s, stat_name)
                .ok_or_else(|| invalid(format!("The value {stat_name} for Stat is invalid.")))?;
            timestamps.push(protocol::timestamp(*at as f64));
            values.push(Value::from(v));
        }
        let label = q
            .get("Label")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                metric
                    .get("MetricName")
                    .and_then(Value::as_str)
                    .unwrap_or(id)
                    .to_string()
            });
        results.push(json!({"Id": id, "Label": label, "Timestamps": timestamps, "Values": values, "StatusCode": "Complete"}));
    }
    Ok(json!({"MetricDataResults": results, "Messages": []}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn gzip_bodies_are_decoded() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let written = encoder.write_all(b"Action=PutMetricData&Namespace=a");
        assert!(written.is_ok());
        let compressed = encoder.finish().unwrap_or_default();
        let inflated = gunzip(&compressed).unwrap_or_default().unwrap_or_default();
        assert_eq!(inflated, b"Action=PutMetricData&Namespace=a");
        assert!(matches!(gunzip(b"Action=x"), Ok(None)));
    }
}
