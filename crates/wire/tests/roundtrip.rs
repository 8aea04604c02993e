//! Real payloads through both codecs: requests as the SDKs send them (JSON from boto3 and the
//! Rust SDK, CBOR from the Java SDK) and responses as they expect them back.

use bytes::Bytes;
use ciborium::Value as Cbor;
use millrace_wire::convert::FromValue;
use millrace_wire::kinesis::{
    self, DescribeStreamOutput, EncryptionType, EnhancedMetrics, GetRecordsOutput, HashKeyRange,
    MetricsName, Operation, PutRecordsInput, PutRecordsRequestEntry, Record, Request, Response,
    SequenceNumberRange, Shard, ShardIteratorType, StreamDescription, StreamMode,
    StreamModeDetails, StreamStatus,
};
use millrace_wire::{EpochMillis, Format, WireError};

fn cbor_bytes(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("ciborium writes");
    out
}

fn cbor_parse(bytes: &[u8]) -> Cbor {
    ciborium::from_reader(bytes).expect("ciborium reads what we write")
}

fn text(s: &str) -> Cbor {
    Cbor::Text(s.to_owned())
}

fn cbor_get<'a>(map: &'a Cbor, key: &str) -> &'a Cbor {
    match map {
        Cbor::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {map:?}")),
        other => panic!("not a map: {other:?}"),
    }
}

#[test]
fn put_records_json_as_boto3_sends_it() {
    let body = br#"{"Records": [{"Data": "aGVsbG8=", "PartitionKey": "pk-1"}, {"Data": "", "PartitionKey": "pk-2", "ExplicitHashKey": "42"}], "StreamName": "orders"}"#;
    let request =
        kinesis::decode_request(Operation::PutRecords, Format::Json, body).expect("valid request");
    let expected = PutRecordsInput {
        records: vec![
            PutRecordsRequestEntry {
                data: Bytes::from_static(b"hello"),
                partition_key: Some("pk-1".to_owned()),
                explicit_hash_key: None,
            },
            PutRecordsRequestEntry {
                data: Bytes::new(),
                partition_key: Some("pk-2".to_owned()),
                explicit_hash_key: Some("42".to_owned()),
            },
        ],
        stream_name: Some("orders".to_owned()),
        ..PutRecordsInput::default()
    };
    assert_eq!(request, Request::PutRecords(expected.clone()));
    assert_eq!(request.operation(), Operation::PutRecords);

    // What we would send as a client decodes to the same request, in both formats.
    for format in [Format::Json, Format::Cbor] {
        let encoded = kinesis::encode_request(format, &request);
        assert_eq!(
            kinesis::decode_request(Operation::PutRecords, format, &encoded),
            Ok(request.clone()),
            "{format:?}"
        );
    }
    let json = String::from_utf8(kinesis::encode_request(Format::Json, &request)).expect("utf-8");
    assert_eq!(
        json,
        r#"{"Records":[{"Data":"aGVsbG8=","PartitionKey":"pk-1"},{"Data":"","ExplicitHashKey":"42","PartitionKey":"pk-2"}],"StreamName":"orders"}"#
    );
}

#[test]
fn put_records_cbor_as_the_java_sdk_sends_it() {
    let data: Vec<u8> = (0..=255).collect();
    let body = cbor_bytes(&Cbor::Map(vec![
        (text("StreamName"), text("orders")),
        (
            text("Records"),
            Cbor::Array(vec![Cbor::Map(vec![
                (text("Data"), Cbor::Bytes(data.clone())),
                (text("PartitionKey"), text("k")),
            ])]),
        ),
    ]));
    let Ok(Request::PutRecords(input)) =
        kinesis::decode_request(Operation::PutRecords, Format::Cbor, &body)
    else {
        panic!("decodes");
    };
    assert_eq!(input.records.len(), 1);
    assert_eq!(input.records[0].data, Bytes::from(data));
    assert_eq!(input.records[0].partition_key.as_deref(), Some("k"));
}

#[test]
fn timestamps_in_requests() {
    // JSON: epoch seconds, fractional.
    let body = br#"{"ShardId": "shardId-000000000000", "ShardIteratorType": "AT_TIMESTAMP", "StreamName": "s", "Timestamp": 1700000000.123}"#;
    let Ok(Request::GetShardIterator(input)) =
        kinesis::decode_request(Operation::GetShardIterator, Format::Json, body)
    else {
        panic!("decodes");
    };
    assert_eq!(input.timestamp, Some(EpochMillis(1_700_000_000_123)));
    assert_eq!(input.shard_iterator_type, ShardIteratorType::AtTimestamp);

    // CBOR: tag 1 + integer milliseconds (the Java SDK), tag 1 + float seconds (RFC 8949), and
    // an untagged integer (milliseconds, as the SDK's unmarshaller reads them).
    let cases = [
        (
            Cbor::Tag(1, Box::new(Cbor::Integer(1_700_000_000_123i64.into()))),
            1_700_000_000_123,
        ),
        (
            Cbor::Tag(1, Box::new(Cbor::Float(1_700_000_000.5))),
            1_700_000_000_500,
        ),
        (
            Cbor::Integer(1_700_000_000_007i64.into()),
            1_700_000_000_007,
        ),
    ];
    for (timestamp, millis) in cases {
        let body = cbor_bytes(&Cbor::Map(vec![
            (text("ShardId"), text("shardId-000000000000")),
            (text("ShardIteratorType"), text("AT_TIMESTAMP")),
            (text("Timestamp"), timestamp.clone()),
        ]));
        let Ok(Request::GetShardIterator(input)) =
            kinesis::decode_request(Operation::GetShardIterator, Format::Cbor, &body)
        else {
            panic!("decodes {timestamp:?}");
        };
        assert_eq!(input.timestamp, Some(EpochMillis(millis)), "{timestamp:?}");
    }
}

fn describe_stream_output() -> DescribeStreamOutput {
    DescribeStreamOutput {
        stream_description: StreamDescription {
            encryption_type: Some(EncryptionType::None),
            enhanced_monitoring: vec![EnhancedMetrics {
                shard_level_metrics: Some(vec![MetricsName::IncomingBytes]),
            }],
            has_more_shards: false,
            key_id: None,
            retention_period_hours: 24,
            shards: vec![Shard {
                adjacent_parent_shard_id: None,
                hash_key_range: HashKeyRange {
                    ending_hash_key: "340282366920938463463374607431768211455".to_owned(),
                    starting_hash_key: "0".to_owned(),
                },
                parent_shard_id: None,
                sequence_number_range: SequenceNumberRange {
                    ending_sequence_number: None,
                    starting_sequence_number: "1000000000000000000000000000000000000".to_owned(),
                },
                shard_id: "shardId-000000000000".to_owned(),
            }],
            stream_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/orders".to_owned(),
            stream_creation_timestamp: EpochMillis(1_700_000_000_123),
            stream_mode_details: Some(StreamModeDetails {
                stream_mode: StreamMode::Provisioned,
            }),
            stream_name: "orders".to_owned(),
            stream_status: StreamStatus::Active,
        },
    }
}

#[test]
fn describe_stream_output_json() {
    let response = Response::DescribeStream(describe_stream_output());
    let body = String::from_utf8(kinesis::encode_response(Format::Json, &response)).expect("utf-8");
    assert_eq!(
        body,
        concat!(
            r#"{"StreamDescription":{"EncryptionType":"NONE","EnhancedMonitoring":[{"ShardLevelMetrics":["IncomingBytes"]}],"#,
            r#""HasMoreShards":false,"RetentionPeriodHours":24,"Shards":[{"HashKeyRange":{"EndingHashKey":"340282366920938463463374607431768211455","#,
            r#""StartingHashKey":"0"},"SequenceNumberRange":{"StartingSequenceNumber":"1000000000000000000000000000000000000"},"#,
            r#""ShardId":"shardId-000000000000"}],"StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/orders","#,
            r#""StreamCreationTimestamp":1700000000.123,"StreamModeDetails":{"StreamMode":"PROVISIONED"},"#,
            r#""StreamName":"orders","StreamStatus":"ACTIVE"}}"#
        )
    );
    // Reading our own output back with the output shape gives the same struct.
    assert_eq!(
        decode_output(Operation::DescribeStream, Format::Json, body.as_bytes()),
        Ok(describe_stream_output())
    );
}

#[test]
fn describe_stream_output_cbor() {
    let response = Response::DescribeStream(describe_stream_output());
    let body = kinesis::encode_response(Format::Cbor, &response);
    let parsed = cbor_parse(&body);
    let description = cbor_get(&parsed, "StreamDescription");
    // Timestamps are tag 1 with integer epoch milliseconds, as the Java SDK reads them.
    assert_eq!(
        cbor_get(description, "StreamCreationTimestamp"),
        &Cbor::Tag(1, Box::new(Cbor::Integer(1_700_000_000_123i64.into())))
    );
    assert_eq!(
        cbor_get(description, "RetentionPeriodHours"),
        &Cbor::Integer(24.into())
    );
    assert_eq!(cbor_get(description, "HasMoreShards"), &Cbor::Bool(false));
    assert_eq!(
        decode_output(Operation::DescribeStream, Format::Cbor, &body),
        Ok(describe_stream_output())
    );
}

fn get_records_output() -> GetRecordsOutput {
    GetRecordsOutput {
        child_shards: None,
        millis_behind_latest: Some(0),
        next_shard_iterator: Some("AAAA".to_owned()),
        records: vec![Record {
            approximate_arrival_timestamp: Some(EpochMillis(1_700_000_000_000)),
            data: Bytes::from_static(&[0, 1, 2, 255]),
            encryption_type: None,
            partition_key: Some("pk".to_owned()),
            sequence_number: "1000000000000000000000000000000000001".to_owned(),
        }],
    }
}

#[test]
fn get_records_output_both_formats() {
    let response = Response::GetRecords(get_records_output());
    let json = String::from_utf8(kinesis::encode_response(Format::Json, &response)).expect("utf-8");
    assert_eq!(
        json,
        r#"{"MillisBehindLatest":0,"NextShardIterator":"AAAA","Records":[{"ApproximateArrivalTimestamp":1700000000,"Data":"AAEC/w==","PartitionKey":"pk","SequenceNumber":"1000000000000000000000000000000000001"}]}"#
    );
    let cbor = kinesis::encode_response(Format::Cbor, &response);
    let parsed = cbor_parse(&cbor);
    let Cbor::Array(records) = cbor_get(&parsed, "Records") else {
        panic!("records")
    };
    assert_eq!(
        cbor_get(&records[0], "Data"),
        &Cbor::Bytes(vec![0, 1, 2, 255])
    );
    for format in [Format::Json, Format::Cbor] {
        let body = kinesis::encode_response(format, &response);
        assert_eq!(
            decode_output(Operation::GetRecords, format, &body),
            Ok(get_records_output()),
            "{format:?}"
        );
    }
}

#[test]
fn operations_without_output_answer_an_empty_body() {
    for op in Operation::ALL {
        assert_eq!(
            op.output_shape().is_none(),
            matches!(
                op,
                Operation::CreateStream
                    | Operation::AddTagsToStream
                    | Operation::DecreaseStreamRetentionPeriod
                    | Operation::DeleteChannel
                    | Operation::DeleteQueue
                    | Operation::DeleteResourcePolicy
                    | Operation::DeleteStream
                    | Operation::DeregisterStreamConsumer
                    | Operation::IncreaseStreamRetentionPeriod
                    | Operation::MergeShards
                    | Operation::PutResourcePolicy
                    | Operation::RemoveTagsFromStream
                    | Operation::SplitShard
                    | Operation::StartStreamEncryption
                    | Operation::StopStreamEncryption
                    | Operation::TagResource
                    | Operation::UntagResource
                    | Operation::UpdateMaxRecordSize
                    | Operation::UpdateStreamMode
                    | Operation::UpdateStreamRecordDistributionStrategy
            ),
            "{op}"
        );
    }
    assert_eq!(
        kinesis::encode_response(Format::Json, &Response::CreateStream),
        Vec::<u8>::new()
    );
    assert_eq!(
        kinesis::encode_response(Format::Cbor, &Response::DeleteStream),
        Vec::<u8>::new()
    );
    assert_eq!(Response::CreateStream.operation(), Operation::CreateStream);
}

#[test]
fn operation_table() {
    assert_eq!(Operation::ALL.len(), 57);
    for op in Operation::ALL {
        assert_eq!(Operation::from_name(op.name()), Some(*op));
        assert!(op.input_shape().is_some(), "{op} has an input");
    }
    assert_eq!(Operation::from_name("ListStream"), None);
    assert_eq!(
        Operation::ALL.first(),
        Some(&Operation::AcknowledgeDeadLetterQueueRecords)
    );
    assert_eq!(
        Operation::ALL.last(),
        Some(&Operation::UpdateStreamWarmThroughput)
    );
    assert_eq!(kinesis::TARGET_PREFIX, "Kinesis_20131202");
    assert!(
        Operation::PutRecords
            .errors()
            .contains(&millrace_wire::ErrorKind::ProvisionedThroughputExceededException)
    );
    // Every model exception is an ErrorKind (checked at compile time by the generated list).
    assert_eq!(kinesis::ERRORS.len(), 18);
}

#[test]
fn enums() {
    assert_eq!(
        ShardIteratorType::from_str_opt("AT_SEQUENCE_NUMBER"),
        Some(ShardIteratorType::AtSequenceNumber)
    );
    assert_eq!(ShardIteratorType::from_str_opt("at_sequence_number"), None);
    for value in ShardIteratorType::ALL {
        assert_eq!(
            ShardIteratorType::from_str_opt(value.as_str()),
            Some(*value)
        );
    }
    assert_eq!(EncryptionType::Kms.as_str(), "KMS");
    assert_eq!(MetricsName::All.to_string(), "ALL");
}

#[test]
fn subscribe_to_shard_event_frames() {
    let event = kinesis::SubscribeToShardEvent {
        child_shards: None,
        continuation_sequence_number: "1000000000000000000000000000000000001".to_owned(),
        millis_behind_latest: 0,
        records: get_records_output().records,
    };
    for format in [Format::Json, Format::Cbor] {
        let framed = kinesis::encode_subscribe_to_shard_event(format, &event);
        let (message, used) = millrace_wire::eventstream::decode_message(&framed).expect("decodes");
        assert_eq!(used, framed.len());
        assert_eq!(message.header_str(":message-type"), Some("event"));
        assert_eq!(
            message.header_str(":event-type"),
            Some("SubscribeToShardEvent")
        );
        assert_eq!(
            message.header_str(":content-type"),
            Some(format.content_type())
        );
        assert_eq!(
            message.payload,
            Bytes::from(kinesis::encode_event_payload(format, &event))
        );
        let value = millrace_wire::decode_object(format, &message.payload).expect("payload parses");
        let checked =
            millrace_wire::typecheck::check(value, &kinesis::shapes::SubscribeToShardEvent, format)
                .expect("payload type-checks");
        assert_eq!(
            kinesis::SubscribeToShardEvent::from_value(checked),
            Ok(event.clone())
        );
    }
}

/// Read a response body back with the operation's output shape.
fn decode_output<T: FromValue>(op: Operation, format: Format, body: &[u8]) -> Result<T, WireError> {
    let shape = op.output_shape().expect("operation has output");
    let value = millrace_wire::decode_object(format, body)?;
    T::from_value(millrace_wire::typecheck::check(value, shape, format)?)
}
