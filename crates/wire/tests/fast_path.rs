//! The fast decoder of PutRecords and PutRecord (`kinesis::fast`) against the generic
//! pipeline: whenever the fast path answers, the generic pipeline must accept the same body
//! with the same typed request; and the fast path must answer for the requests clients
//! actually send. Bodies are generated from a grammar that mixes valid members with unknown,
//! repeated, null, mistyped and constraint-violating ones, and then some are cut or corrupted.

use millrace_wire::Format;
use millrace_wire::kinesis::{Operation, decode_request, decode_request_generic, fast};
use proptest::prelude::*;

/// A JSON text for a value of a member: mostly plausible, sometimes of the wrong type.
fn member_value() -> impl Strategy<Value = String> {
    prop_oneof![
        // Strings: empty, names, hash keys, non-ASCII, escapes, long ones.
        Just("\"\"".to_owned()),
        "[a-zA-Z0-9_.-]{1,12}".prop_map(|s| format!("\"{s}\"")),
        "(0|[1-9][0-9]{0,40})".prop_map(|s| format!("\"{s}\"")),
        Just("\"é\\u00e9\\n\"".to_owned()),
        Just("\"a\\/b\"".to_owned()),
        Just(format!("\"{}\"", "k".repeat(257))),
        Just(format!("\"{}\"", "k".repeat(256))),
        Just("\"arn:aws:kinesis:us-east-1:000000000000:stream/s\"".to_owned()),
        // base64: valid, padded, invalid length, invalid characters, bad trailing bits.
        Just("\"aGVsbG8=\"".to_owned()),
        Just("\"AA==\"".to_owned()),
        Just("\"AB==\"".to_owned()),
        Just("\"abc\"".to_owned()),
        Just("\"ab-d\"".to_owned()),
        Just("\"aGVs\\/G8=\"".to_owned()),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|bytes| {
            use base64::Engine as _;
            format!(
                "\"{}\"",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        }),
        // Other types.
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("\"true\"".to_owned()),
        Just("1".to_owned()),
        Just("-2.5".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("[\"x\"]".to_owned()),
    ]
}

fn object(members: Vec<(String, String)>) -> String {
    let inner: Vec<String> = members
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A value the member `name` accepts (most of the time), or any [`member_value`].
fn value_for(name: &'static str) -> BoxedStrategy<String> {
    let valid: BoxedStrategy<String> = match name {
        "StreamName" => "[a-zA-Z0-9_.-]{1,20}"
            .prop_map(|s| format!("\"{s}\""))
            .boxed(),
        "StreamARN" => "[a-z0-9-]{1,10}"
            .prop_map(|s| format!("\"arn:aws:kinesis:us-east-1:000000000000:stream/{s}\""))
            .boxed(),
        "StreamId" => "[a-z0-9]{1,24}".prop_map(|s| format!("\"{s}\"")).boxed(),
        "DryRun" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "Data" => proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|bytes| {
                use base64::Engine as _;
                format!(
                    "\"{}\"",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                )
            })
            .boxed(),
        "PartitionKey" => prop_oneof![
            "[a-zA-Z0-9 é/\\\\\"-]{1,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
            Just(format!("\"{}\"", "é".repeat(256))),
        ]
        .boxed(),
        "ExplicitHashKey" => "(0|[1-9][0-9]{0,39})"
            .prop_map(|s| format!("\"{s}\""))
            .boxed(),
        "SequenceNumberForOrdering" => "(0|[1-9][0-9]{0,56})"
            .prop_map(|s| format!("\"{s}\""))
            .boxed(),
        _ => member_value().boxed(),
    };
    prop_oneof![8 => valid, 1 => member_value()].boxed()
}

/// Members as (name, value): each present with probability `present`, valid mostly; then
/// sometimes a repeated or unknown member.
fn members(
    names: &'static [(&'static str, u32)],
    records: Option<BoxedStrategy<String>>,
) -> impl Strategy<Value = String> {
    let mut parts: Vec<BoxedStrategy<Option<(String, String)>>> = Vec::new();
    for &(name, percent_present) in names {
        let value = match (&records, name) {
            (Some(records), "Records") => {
                prop_oneof![9 => records.clone(), 1 => member_value()].boxed()
            }
            _ => value_for(name),
        };
        parts.push(
            (0u32..100, value)
                .prop_map(move |(roll, value)| {
                    (roll < percent_present).then(|| (name.to_owned(), value))
                })
                .boxed(),
        );
    }
    let extra = prop_oneof![
        20 => Just(None),
        1 => Just(Some(("Bogus".to_owned(), "{\"a\":[1]}".to_owned()))),
        1 => proptest::sample::select(names).prop_flat_map(|(name, _)| value_for(name).prop_map(move |v| Some((name.to_owned(), v)))),
        1 => proptest::sample::select(names).prop_map(|(name, _)| Some((name.to_owned(), "null".to_owned()))),
    ];
    (parts, extra, any::<proptest::sample::Index>()).prop_map(|(parts, extra, at)| {
        let mut members: Vec<(String, String)> = parts.into_iter().flatten().collect();
        if let Some(extra) = extra {
            let at = at.index(members.len() + 1);
            members.insert(at, extra);
        }
        object(members)
    })
}

/// A record entry: usually Data and PartitionKey, with noise.
fn record() -> BoxedStrategy<String> {
    const NAMES: &[(&str, u32)] = &[("Data", 97), ("PartitionKey", 95), ("ExplicitHashKey", 20)];
    prop_oneof![
        30 => members(NAMES, None),
        1 => Just("null".to_owned()),
        1 => Just("[]".to_owned()),
        1 => Just("\"x\"".to_owned()),
    ]
    .boxed()
}

fn records() -> BoxedStrategy<String> {
    prop_oneof![
        20 => proptest::collection::vec(record(), 0..8).prop_map(|r| format!("[{}]", r.join(","))),
        1 => Just(format!("[{}]", vec!["{\"Data\":\"\",\"PartitionKey\":\"k\"}"; 501].join(","))),
        1 => Just(format!("[{}]", vec!["{\"Data\":\"\",\"PartitionKey\":\"k\"}"; 500].join(","))),
    ]
    .boxed()
}

fn top_level(op: Operation) -> impl Strategy<Value = String> {
    const PUT_RECORDS: &[(&str, u32)] = &[
        ("StreamName", 80),
        ("Records", 97),
        ("StreamARN", 15),
        ("StreamId", 10),
        ("DryRun", 15),
    ];
    const PUT_RECORD: &[(&str, u32)] = &[
        ("StreamName", 80),
        ("Data", 95),
        ("PartitionKey", 95),
        ("ExplicitHashKey", 20),
        ("SequenceNumberForOrdering", 15),
        ("StreamARN", 15),
        ("StreamId", 10),
        ("DryRun", 15),
    ];
    match op {
        Operation::PutRecords => members(PUT_RECORDS, Some(records())).boxed(),
        _ => members(PUT_RECORD, None).boxed(),
    }
}

/// Damage to a body: none mostly, else cut it, append garbage or flip a byte.
fn damaged(body: String, how: u8, at: usize) -> Vec<u8> {
    let mut bytes = body.into_bytes();
    let at = if bytes.is_empty() {
        0
    } else {
        at % bytes.len()
    };
    match how {
        0 => bytes.truncate(at),
        1 => bytes.extend_from_slice(b" x"),
        2 => {
            if let Some(b) = bytes.get_mut(at) {
                *b ^= 0x20;
            }
        }
        3 => bytes.insert(at, 0xff),
        _ => {}
    }
    bytes
}

fn check_agrees(op: Operation, body: &[u8]) -> Result<(), TestCaseError> {
    let generic = decode_request_generic(op, Format::Json, body);
    if let Some(fast) = fast::decode(op, Format::Json, body) {
        prop_assert_eq!(
            Ok(fast),
            generic.clone(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // And the entry point everyone calls answers exactly as the generic pipeline.
    prop_assert_eq!(decode_request(op, Format::Json, body), generic);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn put_records_fast_path_agrees(body in top_level(Operation::PutRecords), how in 0u8..12, at in any::<usize>()) {
        check_agrees(Operation::PutRecords, &damaged(body, how, at))?;
    }

    #[test]
    fn put_record_fast_path_agrees(body in top_level(Operation::PutRecord), how in 0u8..12, at in any::<usize>()) {
        check_agrees(Operation::PutRecord, &damaged(body, how, at))?;
    }
}

/// What SDKs send takes the fast path (otherwise it would be dead code that agrees).
#[test]
fn typical_requests_take_the_fast_path() {
    let bodies: &[(Operation, &str)] = &[
        (
            Operation::PutRecords,
            r#"{"Records":[{"Data":"aGVsbG8=","PartitionKey":"pk-1"},{"Data":"","PartitionKey":"é","ExplicitHashKey":"340282366920938463463374607431768211455"}],"StreamName":"bench-1"}"#,
        ),
        (
            Operation::PutRecords,
            r#"{"StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/s","Records":[{"Data":"AA==","PartitionKey":"k"}],"DryRun":false}"#,
        ),
        (
            Operation::PutRecord,
            r#"{"StreamName":"s","Data":"aGVsbG8=","PartitionKey":"k","SequenceNumberForOrdering":"49590338271490256608559692538361571095921575989136588898"}"#,
        ),
        (
            Operation::PutRecord,
            r#" { "StreamName" : "s" , "Data" : "a\/8=" , "PartitionKey" : "k" } "#,
        ),
    ];
    for (op, body) in bodies {
        let fast = fast::decode(*op, Format::Json, body.as_bytes());
        assert!(fast.is_some(), "declined: {body}");
        assert_eq!(
            fast.ok_or(()),
            decode_request_generic(*op, Format::Json, body.as_bytes()).map_err(|_| ()),
            "{body}"
        );
    }
}

/// The grammar above reaches the fast path often enough for the comparison to mean
/// something, and produces the errors too.
#[test]
fn grammar_covers_both_outcomes() {
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::TestRunner;
    for op in [Operation::PutRecords, Operation::PutRecord] {
        let mut runner = TestRunner::deterministic();
        let strategy = top_level(op);
        let (mut fast_answers, mut errors) = (0, 0);
        for _ in 0..2000 {
            let Ok(tree) = strategy.new_tree(&mut runner) else {
                continue;
            };
            let body = tree.current();
            if fast::decode(op, Format::Json, body.as_bytes()).is_some() {
                fast_answers += 1;
            }
            if decode_request_generic(op, Format::Json, body.as_bytes()).is_err() {
                errors += 1;
            }
        }
        assert!(
            fast_answers >= 100,
            "{op:?}: fast path took {fast_answers} of 2000"
        );
        assert!(errors >= 100, "{op:?}: only {errors} of 2000 were errors");
    }
}
