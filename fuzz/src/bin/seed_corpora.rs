//! Writes the seed corpora: `cargo run --bin seed_corpora` from `fuzz/` (stable is fine).
//! Each target gets a handful of valid inputs to mutate from; `log_recovery` gets store
//! images that small workloads leave on the simulated disk, clean and after power losses.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use millrace_fuzz::{ITERATOR_SECRET, STORE_DIR, encode_store};
use millrace_log::sim::{Crash, SimDisk, SimRng};
use millrace_log::{AppendRecord, Log, LogConfig, ManualClock};
use millrace_streams::iterator::IteratorToken;
use millrace_streams::seqnum::{SeqParts, encode};
use millrace_wire::EpochMillis;
use millrace_wire::eventstream::{HeaderValue, encode_message};
use millrace_wire::kinesis::Operation;

fn write(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("seed-{name}")), bytes)
}

/// A CBOR map of text keys to text (or, for `Data`, byte string) values.
fn cbor_map(entries: &[(&str, &str)]) -> Vec<u8> {
    fn head(out: &mut Vec<u8>, major: u8, len: usize) {
        if len < 24 {
            out.push(major << 5 | len as u8);
        } else {
            out.push(major << 5 | 24);
            out.push(len as u8);
        }
    }
    let mut out = Vec::new();
    head(&mut out, 5, entries.len());
    for (key, value) in entries {
        head(&mut out, 3, key.len());
        out.extend_from_slice(key.as_bytes());
        let major = if *key == "Data" { 2 } else { 3 };
        head(&mut out, major, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn request(op: Operation, format: u8, body: &[u8]) -> Vec<u8> {
    let idx = Operation::ALL.iter().position(|o| *o == op).unwrap_or(0);
    let mut out = vec![idx as u8, format];
    out.extend_from_slice(body);
    out
}

fn decode_request_seeds() -> std::io::Result<()> {
    for (idx, op) in Operation::ALL.iter().enumerate() {
        write("decode_request", &format!("{idx:02}-empty-json"), &request(*op, 0, b"{}"))?;
    }
    let json: &[(Operation, &str)] = &[
        (Operation::CreateStream, r#"{"StreamName":"s","ShardCount":2}"#),
        (Operation::PutRecord, r#"{"StreamName":"s","Data":"aGVsbG8=","PartitionKey":"k","ExplicitHashKey":"123"}"#),
        (Operation::PutRecords, r#"{"StreamName":"s","Records":[{"Data":"AA==","PartitionKey":"a"},{"Data":"","PartitionKey":"b"}]}"#),
        (Operation::GetShardIterator, r#"{"StreamName":"s","ShardId":"shardId-000000000000","ShardIteratorType":"AT_TIMESTAMP","Timestamp":1700000000.5}"#),
        (Operation::GetRecords, r#"{"ShardIterator":"AAAA","Limit":10000}"#),
        (Operation::ListShards, r#"{"StreamName":"s","ShardFilter":{"Type":"AFTER_SHARD_ID","ShardId":"shardId-000000000001"},"MaxResults":100}"#),
        (Operation::SplitShard, r#"{"StreamName":"s","ShardToSplit":"shardId-000000000000","NewStartingHashKey":"170141183460469231731687303715884105728"}"#),
        (Operation::MergeShards, r#"{"StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/s","ShardToMerge":"shardId-000000000000","AdjacentShardToMerge":"shardId-000000000001"}"#),
        (Operation::AddTagsToStream, r#"{"StreamName":"s","Tags":{"k":"v","\u00e9":"\ud83d\ude00"}}"#),
        (Operation::IncreaseStreamRetentionPeriod, r#"{"StreamName":"s","RetentionPeriodHours":8760}"#),
    ];
    for (n, (op, body)) in json.iter().enumerate() {
        write("decode_request", &format!("json-{n}"), &request(*op, 0, body.as_bytes()))?;
    }
    let cbor = [
        (
            Operation::PutRecord,
            cbor_map(&[("StreamName", "s"), ("Data", "hello"), ("PartitionKey", "k")]),
        ),
        (
            Operation::GetShardIterator,
            cbor_map(&[
                ("StreamName", "s"),
                ("ShardId", "shardId-000000000000"),
                ("ShardIteratorType", "TRIM_HORIZON"),
            ]),
        ),
        (Operation::DescribeStreamSummary, cbor_map(&[("StreamName", "s")])),
    ];
    for (n, (op, body)) in cbor.iter().enumerate() {
        write("decode_request", &format!("cbor-{n}"), &request(*op, 1, body))?;
    }
    Ok(())
}

fn eventstream_seeds() -> std::io::Result<()> {
    let headers = [
        (":message-type", HeaderValue::string("event")),
        (":event-type", HeaderValue::string("SubscribeToShardEvent")),
        (":content-type", HeaderValue::string("application/x-amz-json-1.1")),
    ];
    let event = encode_message(&headers, br#"{"Records":[],"ContinuationSequenceNumber":"1"}"#);
    write("eventstream", "event", &event)?;
    let every_kind = [
        ("b", HeaderValue::Bool(true)),
        ("f", HeaderValue::Bool(false)),
        ("i8", HeaderValue::Byte(-3)),
        ("i16", HeaderValue::Int16(-300)),
        ("i32", HeaderValue::Int32(70_000)),
        ("i64", HeaderValue::Int64(-1)),
        ("bytes", HeaderValue::ByteArray(Bytes::from_static(b"\x00\x01\x02"))),
        ("ts", HeaderValue::Timestamp(EpochMillis(1_700_000_000_000))),
        ("uuid", HeaderValue::Uuid([7; 16])),
    ];
    let kinds = encode_message(&every_kind, b"payload");
    write("eventstream", "every-header-kind", &kinds)?;
    let mut two = event.clone();
    two.extend_from_slice(&kinds);
    write("eventstream", "two-messages", &two)?;
    write("eventstream", "empty", &encode_message(&[], b""))
}

fn iterator_seeds() -> std::io::Result<()> {
    let token = IteratorToken {
        stream_name: "orders".to_owned(),
        stream_id: "abcdefghijklmnopqrst-uvw".to_owned(),
        shard_index: 3,
        offset: 12_345,
        issued_ms: 1_700_000_000_000,
    };
    write("iterator_token", "token", token.encode(ITERATOR_SECRET).as_bytes())?;
    let mut fields = Vec::new();
    fields.extend_from_slice(&token.issued_ms.to_le_bytes());
    fields.extend_from_slice(&token.offset.to_le_bytes());
    fields.extend_from_slice(&token.shard_index.to_le_bytes());
    fields.push(token.stream_id.len() as u8);
    fields.extend_from_slice(token.stream_id.as_bytes());
    fields.extend_from_slice(token.stream_name.as_bytes());
    write("iterator_token", "fields", &fields)
}

fn seqnum_seeds() -> std::io::Result<()> {
    let parts = [
        SeqParts {
            shard_epoch_secs: 1_700_000_000,
            shard_index: 0,
            offset: 0,
            arrival_secs: 1_700_000_001,
        },
        SeqParts {
            shard_epoch_secs: (1 << 36) - 1,
            shard_index: u32::MAX,
            offset: 0x7fff_ffff_ffff_ffff,
            arrival_secs: (1 << 36) - 1,
        },
    ];
    for (n, parts) in parts.iter().enumerate() {
        write("seqnum", &format!("{n}"), encode(*parts).as_bytes())?;
    }
    write("seqnum", "digits", b"49590338271490256608559692538361571095921575989136588898")
}

/// A store image after a workload of `n_steps` on `seed`, optionally after a power loss.
fn store_image(seed: u64, n_steps: u64, power_loss: bool) -> Vec<u8> {
    let disk = SimDisk::new(seed);
    let mut rng = SimRng::new(seed);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut config = LogConfig::new(STORE_DIR);
    config.segment_bytes_max = 2 * 1024;
    config.wal_segment_bytes_max = 8 * 1024;
    config.segment_age_ms_max = 500;
    config.maintenance_interval_ms = None;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let log = Log::open_with_storage(config, clock.clone(), disk.storage()).expect("open");
    log.create_logs(&[1, 2, 3]).expect("create");
    for step in 0..n_steps {
        match rng.below(10) {
            0 => {
                let _ = log.trim_before(1 + rng.below(3), 1_000_000 + step as i64 * 20);
            }
            1 => {
                let _ = log.checkpoint();
            }
            2 if step == n_steps / 2 => {
                let _ = log.delete_log(3);
            }
            _ => {
                let records = (0..rng.range(1, 4))
                    .map(|i| AppendRecord {
                        log_id: 1 + rng.below(2),
                        payload: Bytes::from(format!("s{seed}-{step}-{i}-{}", "x".repeat(rng.below(300) as usize))),
                    })
                    .collect();
                let _ = runtime.block_on(log.append(records));
            }
        }
        clock.advance(rng.below(40) as i64);
    }
    if power_loss {
        disk.crash(Crash::PowerLoss);
    } else {
        log.shutdown().expect("shutdown");
    }
    drop(log);
    let files: Vec<(String, Vec<u8>)> = disk
        .durable_files()
        .into_iter()
        .filter_map(|file| {
            let relative = file.path.strip_prefix(STORE_DIR).ok()?.to_str()?.to_owned();
            Some((relative, disk.read_file(&file.path)?))
        })
        .collect();
    encode_store(&files)
}

fn log_recovery_seeds() -> std::io::Result<()> {
    for (n, (seed, n_steps, power_loss)) in [
        (1, 10, false),
        (2, 40, false),
        (3, 40, true),
        (4, 120, true),
        (5, 120, false),
    ]
    .into_iter()
    .enumerate()
    {
        write("log_recovery", &format!("{n}"), &store_image(seed, n_steps, power_loss))?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    decode_request_seeds()?;
    eventstream_seeds()?;
    iterator_seeds()?;
    seqnum_seeds()?;
    log_recovery_seeds()
}
