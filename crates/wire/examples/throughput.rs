//! Rough throughput of the hot paths (run with `--release`): decoding a PutRecords of
//! 500 x 1 KiB records in JSON and CBOR, and encoding a 500-record GetRecords response.
//! A measuring aid, not a test: it asserts nothing about speed.

use bytes::Bytes;
use millrace_wire::kinesis::{
    self, GetRecordsOutput, Operation, PutRecordsInput, PutRecordsRequestEntry, Record, Request,
    Response,
};
use millrace_wire::{EpochMillis, Format};
use std::time::Instant;

fn main() {
    let records: Vec<PutRecordsRequestEntry> = (0..500)
        .map(|i| PutRecordsRequestEntry {
            data: Bytes::from(vec![i as u8; 1024]),
            explicit_hash_key: None,
            partition_key: Some(format!("partition-key-{i}")),
        })
        .collect();
    let request = Request::PutRecords(PutRecordsInput {
        records,
        stream_name: Some("bench".to_owned()),
        ..Default::default()
    });
    for format in [Format::Json, Format::Cbor] {
        let body = kinesis::encode_request(format, &request);
        let iterations = 400;
        let start = Instant::now();
        for _ in 0..iterations {
            let decoded = kinesis::decode_request(Operation::PutRecords, format, &body);
            assert!(decoded.is_ok());
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "decode PutRecords {format:?}: {:.0} records/s ({:.1} MB/s of body)",
            500.0 * iterations as f64 / seconds,
            body.len() as f64 * iterations as f64 / seconds / 1e6
        );
    }
    let output = GetRecordsOutput {
        child_shards: None,
        millis_behind_latest: Some(0),
        next_shard_iterator: Some("AAAA".to_owned()),
        records: (0..500)
            .map(|i| Record {
                approximate_arrival_timestamp: Some(EpochMillis(1_700_000_000_000 + i)),
                data: Bytes::from(vec![i as u8; 1024]),
                encryption_type: None,
                partition_key: Some(format!("partition-key-{i}")),
                sequence_number: format!("{}", 1_000_000_000_000_000_000_000u128 + i as u128),
            })
            .collect(),
    };
    let response = Response::GetRecords(output);
    for format in [Format::Json, Format::Cbor] {
        let iterations = 400;
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..iterations {
            bytes += kinesis::encode_response(format, &response).len();
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "encode GetRecords {format:?}: {:.0} records/s ({:.1} MB/s)",
            500.0 * iterations as f64 / seconds,
            bytes as f64 / seconds / 1e6
        );
    }
}
