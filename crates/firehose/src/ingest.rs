//! PutRecord and PutRecordBatch: accepted records are durable before the answer.
//!
//! A call is one append to the delivery stream's log (group-committed with every other
//! write of the process), so an acknowledged record survives a crash and is delivered after
//! the restart. While the delivery task is more than `backlog_records_max` records behind (a
//! destination is down), calls are refused with ServiceUnavailableException, which every
//! SDK retries: that is the backpressure.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use millrace_log::AppendRecord;
use millrace_wire::firehose as fh;
use rand::RngExt;

use crate::error::Error;
use crate::metrics::add;
use crate::{Entry, Inner, RequestContext, envelope};

/// Most payload bytes in one PutRecordBatch (AWS: 4 MiB).
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// `RecordId`: base64 of the log id, the offset and random bytes (opaque to clients, as on
/// AWS, and unique).
fn record_id(log_id: u64, offset: u64) -> String {
    let mut bytes = Vec::with_capacity(40);
    bytes.extend_from_slice(&log_id.to_be_bytes());
    bytes.extend_from_slice(&offset.to_be_bytes());
    let mut rng = rand::rng();
    bytes.extend((0..24).map(|_| rng.random::<u8>()));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Inner {
    fn find_for_put(
        &self,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<std::sync::Arc<Entry>, Error> {
        let entry = self.find(ctx, name)?;
        let record = entry.record();
        if record.stream_type != fh::DeliveryStreamType::DirectPut.as_str() {
            return Err(Error::invalid(format!(
                "This operation is not permitted on KinesisStreamAsSource delivery stream type. \
                 (Firehose {name})"
            )));
        }
        let status = record.lifecycle.at(self.now_ms());
        if status != millrace_catalog::model::Status::Active {
            return Err(Error::NotActive {
                name: name.to_string(),
                status: crate::control::status_name(match status {
                    millrace_catalog::model::Status::Creating => fh::DeliveryStreamStatus::Creating,
                    _ => fh::DeliveryStreamStatus::Deleting,
                }),
            });
        }
        Ok(entry)
    }

    /// Records accepted and not yet delivered, if past the bound.
    fn backlog(&self, entry: &Entry) -> Result<(), Error> {
        let log_id = entry.record().log_id;
        let end = self.log.bounds(log_id)?.end_offset;
        let delivered = entry.delivered_offset.load(Ordering::Relaxed);
        let n_records = end.saturating_sub(delivered);
        if n_records > self.config.backlog_records_max {
            return Err(Error::Backlogged { n_records });
        }
        Ok(())
    }

    pub async fn put_record(
        &self,
        ctx: &RequestContext,
        input: fh::PutRecordInput,
    ) -> Result<fh::PutRecordOutput, Error> {
        let entry = self.find_for_put(ctx, &input.delivery_stream_name)?;
        let metrics = &entry.metrics;
        add(&metrics.put_record_requests, 1);
        if let Err(error) = self.backlog(&entry) {
            add(&metrics.throttled_records, 1);
            return Err(error);
        }
        let record = entry.record();
        let appended = self
            .log
            .append(vec![AppendRecord {
                log_id: record.log_id,
                payload: envelope::encode_direct(&input.record.data),
            }])
            .await?;
        let offset = appended.first().map(|a| a.offset).unwrap_or_default();
        add(&metrics.incoming_put_requests, 1);
        add(&metrics.incoming_records, 1);
        add(&metrics.incoming_bytes, input.record.data.len() as u64);
        Ok(fh::PutRecordOutput {
            encrypted: Some(record.encryption.is_some()),
            record_id: record_id(record.log_id, offset),
        })
    }

    pub async fn put_record_batch(
        &self,
        ctx: &RequestContext,
        input: fh::PutRecordBatchInput,
    ) -> Result<fh::PutRecordBatchOutput, Error> {
        let entry = self.find_for_put(ctx, &input.delivery_stream_name)?;
        let metrics = &entry.metrics;
        add(&metrics.put_record_batch_requests, 1);
        let size_bytes: usize = input.records.iter().map(|r| r.data.len()).sum();
        if size_bytes > BATCH_BYTES_MAX {
            return Err(Error::invalid(format!(
                "Records size exceeds 4 MB limit: {size_bytes} bytes."
            )));
        }
        let record = entry.record();
        let n_records = input.records.len();
        if self.backlog(&entry).is_err() {
            add(&metrics.throttled_records, n_records as u64);
            let failed = fh::PutRecordBatchResponseEntry {
                error_code: Some("ServiceUnavailableException".to_string()),
                error_message: Some("Slow down.".to_string()),
                record_id: None,
            };
            return Ok(fh::PutRecordBatchOutput {
                encrypted: Some(record.encryption.is_some()),
                failed_put_count: i32::try_from(n_records).unwrap_or(i32::MAX),
                request_responses: vec![failed; n_records],
            });
        }
        let appends: Vec<AppendRecord> = input
            .records
            .iter()
            .map(|r| AppendRecord {
                log_id: record.log_id,
                payload: envelope::encode_direct(&r.data),
            })
            .collect();
        let appended = self.log.append(appends).await?;
        add(&metrics.incoming_put_requests, 1);
        add(&metrics.incoming_records, n_records as u64);
        add(&metrics.put_record_batch_records, n_records as u64);
        add(&metrics.incoming_bytes, size_bytes as u64);
        Ok(fh::PutRecordBatchOutput {
            encrypted: Some(record.encryption.is_some()),
            failed_put_count: 0,
            request_responses: appended
                .iter()
                .map(|a| fh::PutRecordBatchResponseEntry {
                    error_code: None,
                    error_message: None,
                    record_id: Some(record_id(record.log_id, a.offset)),
                })
                .collect(),
        })
    }
}
