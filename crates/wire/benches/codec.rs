//! The wire hot paths: decoding a PutRecords request (JSON through the fast path and through
//! the generic pipeline, CBOR through the generic pipeline) and encoding a GetRecords
//! response (JSON and CBOR).
//!
//! Run with `cargo bench -p millrace-wire --bench codec`. Throughput is in records.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use millrace_wire::Format;
use millrace_wire::kinesis::{
    EncryptionType, GetRecordsOutput, Operation, PutRecordsInput, PutRecordsRequestEntry, Record,
    Response, decode_request, decode_request_generic, encode_response,
};
use std::hint::black_box;

const N_RECORDS: usize = 500;
const RECORD_BYTES: usize = 1024;

fn put_records_body(format: Format) -> Vec<u8> {
    let input = PutRecordsInput {
        stream_name: Some("bench-stream".to_owned()),
        records: (0..N_RECORDS)
            .map(|i| PutRecordsRequestEntry {
                data: Bytes::from(vec![(i % 251) as u8; RECORD_BYTES]),
                partition_key: Some(format!("pk-{i}")),
                explicit_hash_key: None,
            })
            .collect(),
        ..PutRecordsInput::default()
    };
    millrace_wire::encode::to_vec(format, &input)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_put_records_500x1KiB");
    group.throughput(Throughput::Elements(N_RECORDS as u64));
    let json = put_records_body(Format::Json);
    let cbor = put_records_body(Format::Cbor);
    group.bench_function("json", |b| {
        b.iter(|| decode_request(Operation::PutRecords, Format::Json, black_box(&json)))
    });
    group.bench_function("json_generic", |b| {
        b.iter(|| decode_request_generic(Operation::PutRecords, Format::Json, black_box(&json)))
    });
    group.bench_function("json_syntax_check", |b| {
        b.iter(|| millrace_wire::json::is_valid(black_box(&json)))
    });
    group.bench_function("cbor", |b| {
        b.iter(|| decode_request(Operation::PutRecords, Format::Cbor, black_box(&cbor)))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_get_records_500x1KiB");
    group.throughput(Throughput::Elements(N_RECORDS as u64));
    let response = Response::GetRecords(GetRecordsOutput {
        records: (0..N_RECORDS)
            .map(|i| Record {
                sequence_number: format!(
                    "4959033827149025660855969253836157109592157598913658{i:04}"
                ),
                approximate_arrival_timestamp: Some(millrace_wire::EpochMillis(
                    1_700_000_000_000 + i as i64,
                )),
                data: Bytes::from(vec![(i % 251) as u8; RECORD_BYTES]),
                partition_key: Some(format!("pk-{i}")),
                encryption_type: Some(EncryptionType::None),
            })
            .collect(),
        next_shard_iterator: Some("AAAA".repeat(50)),
        millis_behind_latest: Some(0),
        child_shards: None,
    });
    for (name, format) in [("json", Format::Json), ("cbor", Format::Cbor)] {
        group.bench_function(name, |b| {
            b.iter(|| encode_response(format, black_box(&response)))
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
