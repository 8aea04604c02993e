//! The `AWS/Firehose` CloudWatch counters of one delivery stream, kept as atomics for a later
//! metrics endpoint. Names are AWS's (`DeliveryToS3.Records`); each counter is a running total
//! since the process started.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    ($($field:ident => $name:literal,)*) => {
        /// Running totals of one delivery stream.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(pub $field: AtomicU64,)*
        }

        impl Metrics {
            /// Every counter as (AWS metric name, value).
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$(($name, self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

metrics! {
    incoming_bytes => "IncomingBytes",
    incoming_records => "IncomingRecords",
    incoming_put_requests => "IncomingPutRequests",
    throttled_records => "ThrottledRecords",
    put_record_requests => "PutRecord.Requests",
    put_record_batch_requests => "PutRecordBatch.Requests",
    put_record_batch_records => "PutRecordBatch.Records",
    data_read_from_kinesis_stream_bytes => "DataReadFromKinesisStream.Bytes",
    data_read_from_kinesis_stream_records => "DataReadFromKinesisStream.Records",
    throttled_get_records => "ThrottledGetRecords",
    delivery_to_s3_bytes => "DeliveryToS3.Bytes",
    delivery_to_s3_records => "DeliveryToS3.Records",
    delivery_to_s3_success => "DeliveryToS3.Success",
    delivery_to_s3_object_count => "DeliveryToS3.ObjectCount",
    delivery_to_http_endpoint_bytes => "DeliveryToHttpEndpoint.Bytes",
    delivery_to_http_endpoint_records => "DeliveryToHttpEndpoint.Records",
    delivery_to_http_endpoint_success => "DeliveryToHttpEndpoint.Success",
    delivery_to_redshift_bytes => "DeliveryToRedshift.Bytes",
    delivery_to_redshift_records => "DeliveryToRedshift.Records",
    delivery_to_redshift_success => "DeliveryToRedshift.Success",
    backup_to_s3_records => "BackupToS3.Records",
    execute_processing_success => "ExecuteProcessing.Success",
    succeed_processing_records => "SucceedProcessing.Records",
    succeed_processing_bytes => "SucceedProcessing.Bytes",
    succeed_conversion_records => "SucceedConversion.Records",
    failed_conversion_records => "FailedConversion.Records",
    partition_count => "PartitionCount",
    partition_count_exceeded => "PartitionCountExceeded",
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
