//! The `AWS/KinesisAnalytics` counters of each application input and output, as running
//! totals the server reads (`Analytics::metrics`) for `GET /metrics` and the CloudWatch
//! roll-up, like the Firehose crate's `AWS/Firehose` counters. Keys are
//! `account/region/application/flow/id`: AWS's `Application`, `Flow` (`Input` or `Output`)
//! and `Id` (the input or output id) dimensions.
//!
//! `Bytes` and `Records` are what an input read or an output delivered; `Success` counts
//! successful deliveries to an output (AWS averages 1s and 0s; the totals keep the 1s).
//! Counting is one relaxed atomic add under a read lock, per GetRecords or PutRecords of the
//! runner, never per record. Bounds: at most [`TRACKED_FLOWS_MAX`] flows; a deleted
//! application's counters go the next time they are read. Not here: MillisBehindLatest
//! (a gauge, not a counter), KPUs, the InputProcessing metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use millrace_wire::kinesis as k;
use parking_lot::RwLock;
use serde_json::Value as Json;

/// Inputs and outputs whose counters are kept at most.
pub const TRACKED_FLOWS_MAX: usize = 10_000;

/// The metrics counted, in [`Metric`] order.
pub const METRIC_NAMES: [&str; 3] = ["Bytes", "Records", "Success"];

#[derive(Clone, Copy, Debug)]
pub enum Metric {
    Bytes = 0,
    Records = 1,
    Success = 2,
}

/// `Input` or `Output`.
#[derive(Clone, Copy, Debug)]
pub enum Flow {
    Input,
    Output,
}

type Counters = [AtomicU64; METRIC_NAMES.len()];

#[derive(Default)]
pub struct AnalyticsMetrics {
    flows: RwLock<HashMap<String, Arc<Counters>>>,
}

impl AnalyticsMetrics {
    /// Adds to the metrics of an application's input or output: `(metric, value)` pairs.
    pub fn add(&self, app_key: &str, flow: Flow, id: &str, values: &[(Metric, u64)]) {
        let key = format!("{app_key}/{flow:?}/{id}");
        let found = self.flows.read().get(&key).cloned();
        let counters = match found {
            Some(counters) => counters,
            None => {
                let mut flows = self.flows.write();
                if flows.len() >= TRACKED_FLOWS_MAX && !flows.contains_key(&key) {
                    return;
                }
                flows.entry(key).or_default().clone()
            }
        };
        for (metric, value) in values {
            if let Some(counter) = counters.get(*metric as usize) {
                counter.fetch_add(*value, Ordering::Relaxed);
            }
        }
    }

    /// Counts a GetRecords answer of an application's input (its `InputDescription`).
    pub(crate) fn count_input(&self, app_key: &str, input: &Json, output: &k::GetRecordsOutput) {
        let input_id = input.get("InputId").and_then(Json::as_str).unwrap_or("");
        let n_bytes: usize = output.records.iter().map(|r| r.data.len()).sum();
        let n_records = output.records.len() as u64;
        let values = [
            (Metric::Bytes, n_bytes as u64),
            (Metric::Records, n_records),
        ];
        self.add(app_key, Flow::Input, input_id, &values);
    }

    /// Counts a PutRecords answer to an application's output: the records it accepted and
    /// one successful delivery.
    pub(crate) fn count_output(
        &self,
        app_key: &str,
        output_id: &str,
        result: &k::PutRecordsOutput,
        sent: &[k::PutRecordsRequestEntry],
    ) {
        let (n_records, n_bytes) = (result.records.iter().zip(sent))
            .filter(|(r, _)| r.error_code.is_none())
            .fold((0, 0), |(n, b), (_, e)| (n + 1, b + e.data.len() as u64));
        self.count_delivered(app_key, output_id, n_records, n_bytes);
    }

    /// Counts one delivery to an application's output (a stream's PutRecords, a function's
    /// answer, a delivery stream's PutRecordBatch): the rows it accepted and their bytes.
    pub(crate) fn count_delivered(
        &self,
        app_key: &str,
        output_id: &str,
        n_records: u64,
        n_bytes: u64,
    ) {
        let values = [
            (Metric::Bytes, n_bytes),
            (Metric::Records, n_records),
            (Metric::Success, 1),
        ];
        self.add(app_key, Flow::Output, output_id, &values);
    }

    /// The totals of the flows of applications in `live` (`account/region/name` keys),
    /// sorted by key; forgets the others.
    pub fn totals(&self, live: &[String]) -> Vec<(String, Vec<(&'static str, u64)>)> {
        let app_of = |key: &str| -> String {
            let mut parts: Vec<&str> = key.rsplitn(3, '/').collect();
            parts.pop().unwrap_or_default().to_string()
        };
        self.flows
            .write()
            .retain(|key, _| live.contains(&app_of(key)));
        let mut all: Vec<_> = self
            .flows
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
        self.flows.write().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_cover_live_applications_only() {
        let metrics = AnalyticsMetrics::default();
        metrics.add(
            "1/r/app",
            Flow::Input,
            "1.1",
            &[(Metric::Records, 3), (Metric::Bytes, 30)],
        );
        metrics.add("1/r/app", Flow::Input, "1.1", &[(Metric::Records, 2)]);
        metrics.add("1/r/gone", Flow::Output, "1.2", &[(Metric::Success, 1)]);
        let totals = metrics.totals(&["1/r/app".to_string()]);
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].0, "1/r/app/Input/1.1");
        assert_eq!(
            totals[0].1,
            vec![("Bytes", 30), ("Records", 5), ("Success", 0)]
        );
        assert!(metrics.totals(&[]).is_empty());
    }
}
