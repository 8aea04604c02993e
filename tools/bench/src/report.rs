//! What a workload measured, printed as a table for people or as JSON for scripts.
//!
//! A [`Report`] holds one or more [`Measurement`]s (many-shards has one per operation and
//! shard count), the server's peak RSS when `--server-pid` was given, and notes. Workers
//! count into a [`Tally`] each and the tallies are merged at the end, so the hot path shares
//! no lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::latency::{Latencies, Summary};

/// Counts kept by one worker over the measured window.
#[derive(Clone)]
pub struct Tally {
    pub latencies: Latencies,
    pub calls: u64,
    pub records: u64,
    pub bytes: u64,
    pub failed_records: u64,
    pub errors: BTreeMap<String, u64>,
    /// When the first counted call started and the last one completed (`latency::now_ns`;
    /// `first_ns` is `u64::MAX` until a call is counted).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Server CPU seconds over the measured window, when the server pid is known.
    pub server_cpu_s: Option<f64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latencies: Latencies::default(),
            calls: 0,
            records: 0,
            bytes: 0,
            failed_records: 0,
            errors: BTreeMap::new(),
            first_ns: u64::MAX,
            last_ns: 0,
            server_cpu_s: None,
        }
    }
}

impl Tally {
    pub fn error(&mut self, label: String) {
        *self.errors.entry(label).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        self.latencies.merge(&other.latencies);
        self.calls += other.calls;
        self.records += other.records;
        self.bytes += other.bytes;
        self.failed_records += other.failed_records;
        for (label, n) in &other.errors {
            *self.errors.entry(label.clone()).or_default() += n;
        }
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
    }

    /// The measurement over `elapsed_s` seconds.
    pub fn measurement(&self, name: &str, basis: &'static str, elapsed_s: f64) -> Measurement {
        let per_s = |n: f64| if elapsed_s > 0.0 { n / elapsed_s } else { 0.0 };
        Measurement {
            name: name.to_owned(),
            elapsed_s,
            calls: self.calls,
            calls_per_s: per_s(self.calls as f64),
            records: self.records,
            records_per_s: per_s(self.records as f64),
            mib_per_s: per_s(self.bytes as f64 / (1024.0 * 1024.0)),
            latency: self.latencies.summary(),
            latency_basis: basis,
            errors: self.errors.clone(),
            failed_records: self.failed_records,
            server_cpu_s: self.server_cpu_s,
            server_cpu_us_per_record: self
                .server_cpu_s
                .filter(|_| self.records > 0)
                .map(|cpu_s| cpu_s * 1e6 / self.records as f64),
        }
    }
}

/// One measured operation.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub elapsed_s: f64,
    pub calls: u64,
    pub calls_per_s: f64,
    pub records: u64,
    pub records_per_s: f64,
    pub mib_per_s: f64,
    pub latency: Summary,
    /// What latency is measured from (closed loop: the actual send; open loop: the intended
    /// send; end to end: the producer's intended send to the consumer's receipt).
    pub latency_basis: &'static str,
    pub errors: BTreeMap<String, u64>,
    /// Records a PutRecords answered with an ErrorCode.
    pub failed_records: u64,
    /// CPU seconds the server used over the measured window (with `--server-pid`), and per
    /// record: what a record costs the server, whatever else runs on the machine.
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_record: Option<f64>,
}

impl Measurement {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.failed_records
    }
}

/// The outcome of one workload run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub endpoint: String,
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub measurements: Vec<Measurement>,
    /// Peak resident memory of `--server-pid` during the run (VmHWM, reset at the start).
    pub server_rss_peak_mib: Option<f64>,
    /// The server's `VmRSS` once a second: (seconds since the start, MiB).
    pub server_rss_mib_over_time: Vec<(f64, f64)>,
    /// Set when the server lacks an operation the workload needs.
    pub unsupported: Option<String>,
    /// Set when the workload could not run to the end.
    pub failure: Option<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(workload: &str, endpoint: &str) -> Report {
        Report {
            workload: workload.to_owned(),
            endpoint: endpoint.to_owned(),
            parameters: BTreeMap::new(),
            measurements: Vec::new(),
            server_rss_peak_mib: None,
            server_rss_mib_over_time: Vec::new(),
            unsupported: None,
            failure: None,
            notes: Vec::new(),
        }
    }

    pub fn parameter(&mut self, name: &str, value: impl Serialize) {
        self.parameters.insert(
            name.to_owned(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let parameters: Vec<String> = self
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
            .collect();
        let _ = writeln!(out, "{} against {}", self.workload, self.endpoint);
        let _ = writeln!(out, "  {}", parameters.join(" "));
        if let Some(unsupported) = &self.unsupported {
            let _ = writeln!(out, "  not supported by this server: {unsupported}");
        }
        if let Some(failure) = &self.failure {
            let _ = writeln!(out, "  FAILED: {failure}");
        }
        if !self.measurements.is_empty() {
            let header = [
                "measurement",
                "calls/s",
                "records/s",
                "MiB/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "errors",
            ];
            let mut rows = vec![header.map(str::to_owned).to_vec()];
            for m in &self.measurements {
                rows.push(vec![
                    m.name.clone(),
                    format!("{:.0}", m.calls_per_s),
                    format!("{:.0}", m.records_per_s),
                    format!("{:.1}", m.mib_per_s),
                    format!("{:.3}", m.latency.p50_ms),
                    format!("{:.3}", m.latency.p99_ms),
                    format!("{:.3}", m.latency.p999_ms),
                    format!("{:.3}", m.latency.max_ms),
                    m.error_count().to_string(),
                ]);
            }
            let widths: Vec<usize> = (0..header.len())
                .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
                .collect();
            for row in &rows {
                let cells: Vec<String> = row
                    .iter()
                    .enumerate()
                    .map(|(c, cell)| {
                        if c == 0 {
                            format!("{cell:<w$}", w = widths[c])
                        } else {
                            format!("{cell:>w$}", w = widths[c])
                        }
                    })
                    .collect();
                let _ = writeln!(out, "  {}", cells.join("  "));
            }
            for m in &self.measurements {
                if let (Some(cpu_s), Some(per_record)) =
                    (m.server_cpu_s, m.server_cpu_us_per_record)
                {
                    let _ = writeln!(
                        out,
                        "  {}: server CPU {cpu_s:.2} s, {per_record:.2} µs per record ({:.0} records per server CPU-second)",
                        m.name,
                        1e6 / per_record.max(1e-9)
                    );
                }
            }
            for m in &self.measurements {
                if !m.errors.is_empty() || m.failed_records > 0 {
                    let _ = writeln!(
                        out,
                        "  {} errors: {:?}, failed records: {}",
                        m.name, m.errors, m.failed_records
                    );
                }
            }
            let bases: std::collections::BTreeSet<&str> =
                self.measurements.iter().map(|m| m.latency_basis).collect();
            for basis in bases {
                let _ = writeln!(out, "  latency measured from: {basis}");
            }
        }
        if let Some(rss) = self.server_rss_peak_mib {
            let _ = writeln!(out, "  server peak RSS: {rss:.1} MiB");
        }
        let series = &self.server_rss_mib_over_time;
        if series.len() >= 4 {
            let points: Vec<String> = [1, 2, 3, 4]
                .iter()
                .filter_map(|quarter| series.get(series.len() * quarter / 4 - 1))
                .map(|(t, mib)| format!("{mib:.0} MiB at {t:.0} s"))
                .collect();
            let _ = writeln!(out, "  server RSS over the run: {}", points.join(", "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_rates_divide_by_elapsed() {
        let mut a = Tally {
            calls: 10,
            records: 5000,
            bytes: 5000 * 1024,
            ..Tally::default()
        };
        a.latencies.record_ns(2_000_000);
        a.error("ResourceNotFoundException".to_owned());
        let mut b = Tally {
            calls: 10,
            records: 5000,
            bytes: 5000 * 1024,
            failed_records: 3,
            ..Tally::default()
        };
        b.latencies.record_ns(4_000_000);
        b.error("ResourceNotFoundException".to_owned());
        b.last_ns = 7;
        a.merge(&b);
        let m = a.measurement("PutRecords", "actual send (closed loop)", 2.0);
        assert_eq!(m.calls, 20);
        assert!((m.calls_per_s - 10.0).abs() < 1e-9);
        assert!((m.records_per_s - 5000.0).abs() < 1e-9);
        assert!((m.mib_per_s - 10000.0 * 1024.0 / 1048576.0 / 2.0).abs() < 1e-9);
        assert_eq!(m.errors.get("ResourceNotFoundException"), Some(&2));
        assert_eq!(m.error_count(), 5);
        assert_eq!(m.latency.count, 2);
        assert_eq!(a.last_ns, 7);
    }

    #[test]
    fn the_table_names_every_measurement() {
        let mut report = Report::new("put-records", "http://127.0.0.1:1");
        report.parameter("shards", 4);
        let tally = Tally {
            calls: 1,
            ..Tally::default()
        };
        report
            .measurements
            .push(tally.measurement("PutRecords", "actual send (closed loop)", 1.0));
        report.server_rss_peak_mib = Some(12.5);
        let table = report.to_table();
        assert!(table.contains("shards=4"), "{table}");
        assert!(table.contains("PutRecords"), "{table}");
        assert!(table.contains("server peak RSS: 12.5 MiB"), "{table}");
    }
}
