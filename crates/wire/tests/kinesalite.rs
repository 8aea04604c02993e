//! Error messages for bad requests, checked against what kinesalite's test suite recorded from
//! real Kinesis (mhart/kinesalite, `test/*.js` and `test/helpers.js`), adapted where today's
//! model differs from 2015's (StreamName and ShardCount are optional now, limits grew).

use millrace_wire::kinesis::{Operation, decode_request};
use millrace_wire::{ErrorKind, Format, WireError};
use serde_json::{Value as Json, json};

fn decode(op: &str, body: &Json) -> Result<millrace_wire::kinesis::Request, WireError> {
    let op = Operation::from_name(op).expect("operation exists");
    decode_request(op, Format::Json, body.to_string().as_bytes())
}

/// The ValidationException message for `body`.
fn validation(op: &str, body: Json) -> String {
    match decode(op, &body) {
        Err(WireError {
            kind: ErrorKind::ValidationException,
            message: Some(message),
        }) => message,
        other => panic!("{op} {body}: expected a ValidationException, got {other:?}"),
    }
}

/// The SerializationException message for `body`.
fn serialization(op: &str, body: Json) -> Option<String> {
    match decode(op, &body) {
        Err(WireError {
            kind: ErrorKind::SerializationException,
            message,
        }) => message,
        other => panic!("{op} {body}: expected a SerializationException, got {other:?}"),
    }
}

#[test]
fn create_stream_validation() {
    assert_eq!(
        validation("CreateStream", json!({})),
        "1 validation error detected: Value null at 'streamName' failed to satisfy constraint: \
         Member must not be null"
    );
    assert_eq!(
        validation("CreateStream", json!({"StreamName": "", "ShardCount": 0})),
        "3 validation errors detected: \
         Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1; \
         Value '' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; \
         Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
    // Integers beyond the Java int range are clamped, not refused (kinesalite: 100000000000).
    let name = "a".repeat(129);
    assert_eq!(
        validation(
            "CreateStream",
            json!({"StreamName": name, "ShardCount": 100_000_000_000u64})
        ),
        format!(
            "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy constraint: \
             Member must have length less than or equal to 128"
        )
    );
}

#[test]
fn put_records_validation() {
    assert_eq!(
        validation("PutRecords", json!({})),
        "1 validation error detected: Value null at 'records' failed to satisfy constraint: Member must not be null"
    );
    assert_eq!(
        validation("PutRecords", json!({"StreamName": "", "Records": []})),
        "3 validation errors detected: \
         Value '[]' at 'records' failed to satisfy constraint: Member must have length greater than or equal to 1; \
         Value '' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; \
         Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
    // Nested paths, members in alphabetical order at each level.
    let name = "a".repeat(129);
    let key = "a".repeat(257);
    assert_eq!(
        validation(
            "PutRecords",
            json!({"StreamName": name, "Records": [{"PartitionKey": key, "Data": "", "ExplicitHashKey": ""}]})
        ),
        format!(
            "3 validation errors detected: \
             Value '' at 'records.1.member.explicitHashKey' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: ^(0|([1-9]\\d{{0,38}}))$; \
             Value '{key}' at 'records.1.member.partitionKey' failed to satisfy constraint: \
             Member must have length less than or equal to 256; \
             Value '{name}' at 'streamName' failed to satisfy constraint: \
             Member must have length less than or equal to 128"
        )
    );
    // AWS stops at ten errors, and prints a list of structures by Java class name.
    let records: Vec<Json> = (0..501)
        .map(|_| json!({"PartitionKey": "", "Data": ""}))
        .collect();
    let entries = vec!["com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry@2"; 501].join(", ");
    let mut expected = format!(
        "10 validation errors detected: Value '[{entries}]' at 'records' failed to satisfy constraint: \
         Member must have length less than or equal to 500"
    );
    for i in 1..=9 {
        expected.push_str(&format!(
            "; Value '' at 'records.{i}.member.partitionKey' failed to satisfy constraint: \
             Member must have length greater than or equal to 1"
        ));
    }
    assert_eq!(
        validation("PutRecords", json!({"StreamName": "", "Records": records})),
        expected
    );
}

#[test]
fn put_record_validation() {
    assert_eq!(
        validation(
            "PutRecord",
            json!({"StreamName": "", "PartitionKey": "", "Data": "", "ExplicitHashKey": "", "SequenceNumberForOrdering": ""})
        ),
        "5 validation errors detected: \
         Value '' at 'explicitHashKey' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,38}))$; \
         Value '' at 'partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1; \
         Value '' at 'sequenceNumberForOrdering' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,128}))$; \
         Value '' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; \
         Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
    // Blob lengths are bytes after base64 decoding, printed as a Java ByteBuffer.
    let data = base64_of(&vec![0u8; 10 * 1024 * 1024 + 1]);
    assert_eq!(
        validation(
            "PutRecord",
            json!({"StreamName": "s", "PartitionKey": "k", "Data": data})
        ),
        "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=10485761 cap=10485761]' at 'data' \
         failed to satisfy constraint: Member must have length less than or equal to 10485760"
    );
}

#[test]
fn get_shard_iterator_validation() {
    assert_eq!(
        validation("GetShardIterator", json!({})),
        "2 validation errors detected: \
         Value null at 'shardId' failed to satisfy constraint: Member must not be null; \
         Value null at 'shardIteratorType' failed to satisfy constraint: Member must not be null"
    );
    // The enum value set in AWS's order (kinesalite: recorded against Kinesis).
    assert_eq!(
        validation(
            "GetShardIterator",
            json!({"StreamName": "", "ShardIteratorType": "", "ShardId": "", "StartingSequenceNumber": ""})
        ),
        "6 validation errors detected: \
         Value '' at 'shardId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; \
         Value '' at 'shardId' failed to satisfy constraint: Member must have length greater than or equal to 1; \
         Value '' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: \
         [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]; \
         Value '' at 'startingSequenceNumber' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,128}))$; \
         Value '' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; \
         Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
}

#[test]
fn nested_structure_validation() {
    assert_eq!(
        validation(
            "SubscribeToShard",
            json!({"ConsumerARN": "x", "ShardId": "shardId-000000000000", "StartingPosition": {}})
        ),
        "2 validation errors detected: \
         Value 'x' at 'consumerARN' failed to satisfy constraint: Member must satisfy regular expression pattern: \
         ^(arn):aws.*:kinesis:.*:\\d{12}:.*stream\\/[a-zA-Z0-9_.-]+\\/consumer\\/[a-zA-Z0-9_.-]+:[0-9]+; \
         Value null at 'startingPosition.type' failed to satisfy constraint: Member must not be null"
    );
}

#[test]
fn list_and_map_member_validation() {
    let name = "a".repeat(129);
    assert_eq!(
        validation(
            "RemoveTagsFromStream",
            json!({"StreamName": "s", "TagKeys": ["a", name, "b"]})
        ),
        format!(
            "1 validation error detected: Value '[a, {name}, b]' at 'tagKeys' failed to satisfy constraint: \
             Member must satisfy constraint: [Member must have length less than or equal to 128, \
             Member must have length greater than or equal to 1]"
        )
    );
    let keys: Vec<String> = (1..=51).map(|i| i.to_string()).collect();
    let message = validation(
        "RemoveTagsFromStream",
        json!({"StreamName": "s", "TagKeys": keys}),
    );
    assert!(message.ends_with("at 'tagKeys' failed to satisfy constraint: Member must have length less than or equal to 50"));
    assert!(message.starts_with("1 validation error detected: Value '[1, 2, 3, "));

    // Raw text: `json!` would sort the keys, and AWS prints them in request order.
    let body = format!(r#"{{"StreamName": "s", "Tags": {{"a": "1", "b": "2", "{name}": "3"}}}}"#);
    let message = match decode_request(Operation::AddTagsToStream, Format::Json, body.as_bytes()) {
        Err(WireError {
            kind: ErrorKind::ValidationException,
            message: Some(message),
        }) => message,
        other => panic!("expected a ValidationException, got {other:?}"),
    };
    assert_eq!(
        message,
        format!(
            "1 validation error detected: Value '{{a=1, b=2, {name}=3}}' at 'tags' failed to satisfy constraint: \
             Map keys must satisfy constraint: [Member must have length less than or equal to 128, \
             Member must have length greater than or equal to 1]"
        )
    );
    let value = "v".repeat(257);
    assert_eq!(
        validation(
            "AddTagsToStream",
            json!({"StreamName": "s", "Tags": {"a": "1", "c": value}})
        ),
        format!(
            "1 validation error detected: Value '{{a=1, c={value}}}' at 'tags' failed to satisfy constraint: \
             Map value must satisfy constraint: [Member must have length less than or equal to 256, \
             Member must have length greater than or equal to 0]"
        )
    );
    assert_eq!(
        validation(
            "AddTagsToStream",
            json!({"StreamName": "s", "Tags": {"k": null}})
        ),
        "1 validation error detected: Value null at 'tags.k.member' failed to satisfy constraint: \
         Member must not be null"
    );
    assert_eq!(
        validation(
            "RemoveTagsFromStream",
            json!({"StreamName": "s", "TagKeys": ["a", null]})
        ),
        "1 validation error detected: Value null at 'tagKeys.2.member' failed to satisfy constraint: \
         Member must not be null"
    );
    assert_eq!(
        validation("PutRecords", json!({"Records": [null]})),
        "1 validation error detected: Value null at 'records.1.member' failed to satisfy constraint: \
         Member must not be null"
    );
    assert_eq!(
        validation("AddTagsToStream", json!({"StreamName": "s", "Tags": {}})),
        "1 validation error detected: Value '{}' at 'tags' failed to satisfy constraint: \
         Member must have length greater than or equal to 1"
    );
    assert_eq!(
        validation(
            "EnableEnhancedMonitoring",
            json!({"StreamName": "s", "ShardLevelMetrics": ["IncomingBytes", "Nope"]})
        ),
        // The order of the set is what the hash rule of tools/codegen (names::aws_enum_order)
        // predicts; no recording of this message from AWS was found to confirm it.
        "1 validation error detected: Value '[IncomingBytes, Nope]' at 'shardLevelMetrics' failed to satisfy \
         constraint: Member must satisfy constraint: [Member must satisfy enum value set: \
         [ALL, WriteProvisionedThroughputExceeded, IteratorAgeMilliseconds, IncomingBytes, OutgoingRecords, \
         ReadProvisionedThroughputExceeded, IncomingRecords, OutgoingBytes]]"
    );
}

#[test]
fn number_validation() {
    assert_eq!(
        validation("GetRecords", json!({"ShardIterator": "x", "Limit": 0})),
        "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: \
         Member must have value greater than or equal to 1"
    );
    // Decimals are floored before validation, as AWS does.
    assert_eq!(
        validation(
            "GetRecords",
            json!({"ShardIterator": "x", "Limit": 10001.9})
        ),
        "1 validation error detected: Value '10001' at 'limit' failed to satisfy constraint: \
         Member must have value less than or equal to 10000"
    );
    let Ok(millrace_wire::kinesis::Request::GetRecords(input)) = decode(
        "GetRecords",
        &json!({"ShardIterator": "x", "Limit": 10000.9}),
    ) else {
        panic!("10000.9 floors to a valid limit");
    };
    assert_eq!(input.limit, Some(10000));
}

#[test]
fn serialization_messages() {
    // (value put at the member, expected message) per Java type, from kinesalite's helpers.js.
    let string = [
        (
            json!(true),
            "class java.lang.Boolean can not be converted to an String",
        ),
        (
            json!(23),
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
        ),
        (
            json!(-2147483648i64),
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
        ),
        (
            json!(2147483648i64),
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
        ),
        (
            json!(34.56),
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
        ),
        (json!([]), "Start of list found where not expected"),
        (
            json!({}),
            "Start of structure or map found where not expected.",
        ),
    ];
    for (value, message) in &string {
        assert_eq!(
            serialization("DescribeStream", json!({"StreamName": value})).as_deref(),
            Some(*message),
            "{value}"
        );
        // Nested: a string inside a list of structures.
        assert_eq!(
            serialization(
                "PutRecords",
                json!({"StreamName": "s", "Records": [{"PartitionKey": value, "Data": ""}]})
            )
            .as_deref(),
            Some(*message),
            "{value}"
        );
    }
    let integer = [
        (
            json!("23"),
            "class java.lang.String can not be converted to an Integer",
        ),
        (
            json!(true),
            "class java.lang.Boolean can not be converted to an Integer",
        ),
        (json!([]), "Start of list found where not expected"),
        (
            json!({}),
            "Start of structure or map found where not expected.",
        ),
    ];
    for (value, message) in &integer {
        assert_eq!(
            serialization("DescribeStream", json!({"Limit": value})).as_deref(),
            Some(*message),
            "{value}"
        );
    }
    let long = [
        (
            json!("23"),
            "class java.lang.String can not be converted to an Long",
        ),
        (
            json!(false),
            "class java.lang.Boolean can not be converted to an Long",
        ),
    ];
    for (value, message) in &long {
        // SubscribeToShardEvent is output-only; the only long in requests is none, so use the
        // shape table directly.
        let shape = &millrace_wire::kinesis::shapes::MillisBehindLatest;
        let result = millrace_wire::typecheck::check(json_to_value(value), shape, Format::Json);
        assert_eq!(
            result,
            Err(WireError::serialization(Some((*message).to_owned()))),
            "{value}"
        );
    }
    let boolean = [
        (json!("23"), "'23' can not be converted to an Boolean"),
        (json!("hello"), "'HELLO' can not be converted to an Boolean"),
        (
            json!(23),
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an Boolean",
        ),
        (json!([]), "Start of list found where not expected"),
        (
            json!({}),
            "Start of structure or map found where not expected.",
        ),
    ];
    for (value, message) in &boolean {
        assert_eq!(
            serialization(
                "DeleteStream",
                json!({"StreamName": "s", "EnforceConsumerDeletion": value})
            )
            .as_deref(),
            Some(*message),
            "{value}"
        );
    }
    let blob = [
        (
            json!(true),
            "class java.lang.Boolean can not be converted to a Blob",
        ),
        (
            json!(23),
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to a Blob",
        ),
        (
            json!(34.56),
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to a Blob",
        ),
        (json!([]), "Start of list found where not expected"),
        (
            json!({}),
            "Start of structure or map found where not expected.",
        ),
        (
            json!("23456"),
            "'23456' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 5",
        ),
        (
            json!("=+/="),
            "'=+/=' can not be converted to a Blob: Invalid Base64 character: '='",
        ),
        (
            json!("+/+="),
            "'+/+=' can not be converted to a Blob: Invalid last non-pad Base64 character dectected",
        ),
    ];
    for (value, message) in &blob {
        assert_eq!(
            serialization(
                "PutRecord",
                json!({"StreamName": "s", "PartitionKey": "k", "Data": value})
            )
            .as_deref(),
            Some(*message),
            "{value}"
        );
    }
    let list = [
        (json!("23"), "Expected list or null"),
        (json!(true), "Expected list or null"),
        (json!(23), "Expected list or null"),
        (json!(34.56), "Expected list or null"),
        (
            json!({}),
            "Start of structure or map found where not expected.",
        ),
    ];
    for (value, message) in &list {
        assert_eq!(
            serialization("PutRecords", json!({"Records": value})).as_deref(),
            Some(*message),
            "{value}"
        );
    }
    let map = [
        (json!("23"), "Expected map or null"),
        (json!(true), "Expected map or null"),
        (json!(2147483648i64), "Expected map or null"),
        (json!([]), "Start of list found where not expected"),
    ];
    for (value, message) in &map {
        assert_eq!(
            serialization("AddTagsToStream", json!({"Tags": value})).as_deref(),
            Some(*message),
            "{value}"
        );
    }
    let structure = [
        (json!("23"), "Expected null"),
        (json!(true), "Expected null"),
        (json!(34.56), "Expected null"),
        (json!([]), "Start of list found where not expected"),
    ];
    for (value, message) in &structure {
        assert_eq!(
            serialization("PutRecords", json!({"Records": [value]})).as_deref(),
            Some(*message),
            "{value}"
        );
        assert_eq!(
            serialization(
                "CreateStream",
                json!({"StreamName": "s", "StreamModeDetails": value})
            )
            .as_deref(),
            Some(*message),
            "{value}"
        );
    }
    let timestamp = [
        (
            json!(true),
            "class java.lang.Boolean can not be converted to milliseconds since epoch",
        ),
        (
            json!("2020"),
            "class java.lang.String can not be converted to milliseconds since epoch",
        ),
        (json!([]), "Start of list found where not expected"),
        (
            json!({}),
            "Start of structure or map found where not expected.",
        ),
    ];
    for (value, message) in &timestamp {
        assert_eq!(
            serialization(
                "GetShardIterator",
                json!({"ShardId": "s", "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": value})
            )
            .as_deref(),
            Some(*message),
            "{value}"
        );
    }
}

#[test]
fn malformed_bodies_are_bare_serialization_exceptions() {
    for body in [&b""[..], b"hello", b"[]", b"null", b"\"s\"", b"{", b"{}}"] {
        let result = decode_request(Operation::ListStreams, Format::Json, body);
        assert_eq!(
            result,
            Err(WireError::serialization(None)),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    for body in [&b""[..], b"\x80", b"\xa1\x01\x01", b"\x60\x60"] {
        let result = decode_request(Operation::ListStreams, Format::Cbor, body);
        assert_eq!(result, Err(WireError::serialization(None)), "{body:?}");
    }
}

#[test]
fn unknown_members_and_nulls_are_ignored() {
    let request = decode(
        "DescribeStream",
        &json!({"StreamName": "s", "Bogus": {"x": [1]}, "Limit": null}),
    );
    let Ok(millrace_wire::kinesis::Request::DescribeStream(input)) = request else {
        panic!("decodes: {request:?}");
    };
    assert_eq!(input.stream_name.as_deref(), Some("s"));
    assert_eq!(input.limit, None);
    // A null required member is missing.
    assert_eq!(
        validation("GetRecords", json!({"ShardIterator": null})),
        "1 validation error detected: Value null at 'shardIterator' failed to satisfy constraint: Member must not be null"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn json_to_value(json: &Json) -> millrace_wire::value::Value {
    millrace_wire::json::parse(json.to_string().as_bytes()).expect("valid JSON")
}
