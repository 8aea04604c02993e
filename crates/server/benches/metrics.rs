//! The cost of counting a request's metrics (`metrics::count` and the registry lookup), on
//! the path of every PutRecord, PutRecords and GetRecords: a PutRecords of 500 records
//! with shard-level metrics off and on (4 shards), and one PutRecord.
//!
//! Run with `cargo bench -p millrace-server --bench metrics`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use millrace_server::metrics::{self, Counted, KinesisMetrics};
use millrace_wire::kinesis as k;

const N_RECORDS: usize = 500;
const N_SHARDS: usize = 4;

fn put_records() -> (k::Request, k::Response) {
    let request = k::Request::PutRecords(k::PutRecordsInput {
        records: (0..N_RECORDS)
            .map(|i| k::PutRecordsRequestEntry {
                data: Bytes::from(vec![b'x'; 1024]),
                partition_key: Some(format!("pk-{i}")),
                explicit_hash_key: None,
            })
            .collect(),
        stream_name: Some("bench".into()),
        ..Default::default()
    });
    let response = k::Response::PutRecords(k::PutRecordsOutput {
        records: (0..N_RECORDS)
            .map(|i| k::PutRecordsResultEntry {
                sequence_number: Some(format!("{:056}", i)),
                shard_id: Some(format!("shardId-{:012}", i % N_SHARDS)),
                error_code: None,
                error_message: None,
            })
            .collect(),
        failed_record_count: Some(0),
        encryption_type: None,
    });
    (request, response)
}

fn count(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    let registry = KinesisMetrics::default();
    let (request, response) = put_records();

    group.throughput(Throughput::Elements(N_RECORDS as u64));
    group.bench_function("put_records_500_stream_level", |b| {
        b.iter(|| {
            let counted = Counted::of(black_box(&request)).expect("counted");
            let stream = registry
                .stream("000000000000", "us-east-1", "bench")
                .expect("tracked");
            metrics::count(&stream, &counted, Some(&response), false, None, 1500);
        })
    });

    let enabled = registry
        .stream("000000000000", "us-east-1", "bench-shards")
        .expect("tracked");
    enabled
        .shard_level
        .set_enabled(&["IncomingBytes".to_string(), "IncomingRecords".to_string()]);
    group.bench_function("put_records_500_shard_level", |b| {
        b.iter(|| {
            let mut counted = Counted::of(black_box(&request)).expect("counted");
            let stream = registry
                .stream("000000000000", "us-east-1", "bench-shards")
                .expect("tracked");
            if let Counted::PutRecords { record_bytes, .. } = &mut counted {
                *record_bytes = metrics::record_sizes(&request);
            }
            metrics::count(&stream, &counted, Some(&response), false, None, 1500);
        })
    });

    let one = k::Request::PutRecord(k::PutRecordInput {
        data: Bytes::from(vec![b'x'; 100]),
        partition_key: Some("pk".into()),
        stream_name: Some("bench".into()),
        ..Default::default()
    });
    let answer = k::Response::PutRecord(k::PutRecordOutput {
        shard_id: "shardId-000000000001".into(),
        sequence_number: format!("{:056}", 1),
        encryption_type: None,
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_record", |b| {
        b.iter(|| {
            let counted = Counted::of(black_box(&one)).expect("counted");
            let stream = registry
                .stream("000000000000", "us-east-1", "bench")
                .expect("tracked");
            metrics::count(&stream, &counted, Some(&answer), false, None, 300);
        })
    });
    group.finish();
}

criterion_group!(benches, count);
criterion_main!(benches);
