//! Sequence-number encoding, once per record on PutRecords, PutRecord and GetRecords.
//!
//! Run with `cargo bench -p millrace-streams --bench seqnum`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use millrace_streams::seqnum::{self, SeqParts};
use std::hint::black_box;

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("seqnum");
    group.throughput(Throughput::Elements(1));
    let parts = SeqParts {
        shard_epoch_secs: 1_700_000_000,
        shard_index: 3,
        offset: 123_456_789,
        arrival_secs: 1_700_000_123,
    };
    group.bench_function("encode", |b| b.iter(|| seqnum::encode(black_box(parts))));
    let mut buf = [0u8; seqnum::ENCODED_DIGITS_MAX];
    group.bench_function("encode_into", |b| {
        b.iter(|| seqnum::encode_into(black_box(parts), &mut buf).len())
    });
    let text = seqnum::encode(parts);
    group.bench_function("decode", |b| b.iter(|| seqnum::decode(black_box(&text))));
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
