//! The data plane through the AWS SDK for Rust: PutRecord(s), the five iterator types,
//! GetRecords, iterator expiry, throughput limits and large records.

use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use millrace_sdk_tests::{Server, create_active_stream, error_of};

async fn iterator(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    kind: ShardIteratorType,
    sequence: Option<&str>,
) -> anyhow::Result<String> {
    let mut request = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(kind);
    if let Some(sequence) = sequence {
        request = request.starting_sequence_number(sequence);
    }
    Ok(request
        .send()
        .await?
        .shard_iterator()
        .ok_or_else(|| anyhow::anyhow!("no iterator"))?
        .to_string())
}

#[tokio::test]
async fn put_and_get_round_trip() -> anyhow::Result<()> {
    // Many GetRecords calls in a row: without limits (they have their own test).
    let server = Server::start(&["--shard-throughput", "unlimited"])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;

    let mut sequences = Vec::new();
    for i in 0..5 {
        let out = client
            .put_record()
            .stream_name("s")
            .partition_key(format!("key-{i}"))
            .data(Blob::new(format!("record-{i}")))
            .send()
            .await?;
        assert_eq!(out.shard_id(), "shardId-000000000000");
        sequences.push(out.sequence_number().to_string());
    }
    // Equal-length decimal strings compare like the numbers they spell.
    for pair in sequences.windows(2) {
        assert!(
            pair[0].len() == pair[1].len() && pair[0] < pair[1],
            "{pair:?}"
        );
    }

    let batch = client
        .put_records()
        .stream_name("s")
        .set_records(Some(
            (5..10)
                .map(|i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("key-{i}"))
                        .data(Blob::new(format!("record-{i}")))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?,
        ))
        .send()
        .await?;
    assert_eq!(batch.failed_record_count(), Some(0));
    assert_eq!(batch.records().len(), 5);
    for entry in batch.records() {
        sequences.push(
            entry
                .sequence_number()
                .expect("sequence number")
                .to_string(),
        );
    }

    let it = iterator(
        &client,
        "s",
        "shardId-000000000000",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await?;
    let out = client.get_records().shard_iterator(&it).send().await?;
    let records = out.records();
    assert_eq!(records.len(), 10);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.data().as_ref(), format!("record-{i}").as_bytes());
        assert_eq!(record.partition_key(), Some(format!("key-{i}").as_str()));
        assert_eq!(record.sequence_number(), sequences[i]);
        assert!(record.approximate_arrival_timestamp().is_some());
    }
    assert_eq!(out.millis_behind_latest(), Some(0));
    let next = out
        .next_shard_iterator()
        .expect("open shards always give a next iterator");
    let empty = client.get_records().shard_iterator(next).send().await?;
    assert!(empty.records().is_empty());

    // Limit.
    let limited = client
        .get_records()
        .shard_iterator(&it)
        .limit(3)
        .send()
        .await?;
    assert_eq!(limited.records().len(), 3);
    assert!(limited.millis_behind_latest().is_some());

    // AT / AFTER sequence number.
    let at = iterator(
        &client,
        "s",
        "shardId-000000000000",
        ShardIteratorType::AtSequenceNumber,
        Some(&sequences[4]),
    )
    .await?;
    let out = client
        .get_records()
        .shard_iterator(&at)
        .limit(1)
        .send()
        .await?;
    assert_eq!(out.records()[0].data().as_ref(), b"record-4");
    let after = iterator(
        &client,
        "s",
        "shardId-000000000000",
        ShardIteratorType::AfterSequenceNumber,
        Some(&sequences[4]),
    )
    .await?;
    let out = client
        .get_records()
        .shard_iterator(&after)
        .limit(1)
        .send()
        .await?;
    assert_eq!(out.records()[0].data().as_ref(), b"record-5");

    // LATEST sees only what comes after it.
    let latest = iterator(
        &client,
        "s",
        "shardId-000000000000",
        ShardIteratorType::Latest,
        None,
    )
    .await?;
    client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new("late"))
        .send()
        .await?;
    let out = client.get_records().shard_iterator(&latest).send().await?;
    assert_eq!(out.records().len(), 1);
    assert_eq!(out.records()[0].data().as_ref(), b"late");

    // AT_TIMESTAMP: from a time before everything.
    let at_ts = client
        .get_shard_iterator()
        .stream_name("s")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::AtTimestamp)
        .timestamp(DateTime::from_secs(1_000_000_000))
        .send()
        .await?;
    let out = client
        .get_records()
        .shard_iterator(at_ts.shard_iterator().expect("iterator"))
        .send()
        .await?;
    assert_eq!(out.records().len(), 11);

    // Sequence numbers from another shard or made up are refused.
    let (code, _) = error_of(
        client
            .get_shard_iterator()
            .stream_name("s")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number("12345")
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    let (code, message) = error_of(
        client
            .get_shard_iterator()
            .stream_name("s")
            .shard_id("shardId-000000000007")
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await,
    );
    assert_eq!(code, "ResourceNotFoundException");
    assert_eq!(
        message,
        "Shard shardId-000000000007 in stream s under account 000000000000 does not exist"
    );
    let (code, message) = error_of(
        client
            .get_records()
            .shard_iterator("bm90IGFuIGl0ZXJhdG9y")
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    assert_eq!(message, "Invalid ShardIterator.");
    Ok(())
}

#[tokio::test]
async fn iterators_expire_after_five_minutes() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    let it = iterator(
        &client,
        "s",
        "shardId-000000000000",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await?;
    server.advance_clock(299_000)?;
    client.get_records().shard_iterator(&it).send().await?;
    server.advance_clock(2_000)?;
    let (code, message) = error_of(client.get_records().shard_iterator(&it).send().await);
    assert_eq!(code, "ExpiredIteratorException");
    assert!(
        message.starts_with("Iterator expired. The iterator was created at time "),
        "{message}"
    );
    assert!(
        message.ends_with(
            "which is further in the future than the tolerated delay of 300000 milliseconds."
        ),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn iterators_of_a_recreated_stream_are_refused() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    let it = iterator(
        &client,
        "s",
        "shardId-000000000000",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await?;
    client.delete_stream().stream_name("s").send().await?;
    create_active_stream(&client, "s", 1).await?;
    let (code, _) = error_of(client.get_records().shard_iterator(&it).send().await);
    assert_eq!(code, "ResourceNotFoundException");
    Ok(())
}

#[tokio::test]
async fn explicit_hash_keys_route_records() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 2).await?;
    let low = client
        .put_record()
        .stream_name("s")
        .partition_key("any")
        .explicit_hash_key("0")
        .data(Blob::new("a"))
        .send()
        .await?;
    assert_eq!(low.shard_id(), "shardId-000000000000");
    let high = client
        .put_record()
        .stream_name("s")
        .partition_key("any")
        .explicit_hash_key("340282366920938463463374607431768211455")
        .data(Blob::new("b"))
        .send()
        .await?;
    assert_eq!(high.shard_id(), "shardId-000000000001");
    let (code, _) = error_of(
        client
            .put_record()
            .stream_name("s")
            .partition_key("any")
            .explicit_hash_key("340282366920938463463374607431768211456")
            .data(Blob::new("c"))
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    // md5("a") = 0cc175b9... is in the lower half.
    let routed = client
        .put_record()
        .stream_name("s")
        .partition_key("a")
        .data(Blob::new("d"))
        .send()
        .await?;
    assert_eq!(routed.shard_id(), "shardId-000000000000");
    Ok(())
}

#[tokio::test]
async fn write_limits_are_enforced_per_shard() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    // Three batches of 500 records in well under a second exceed 1,000 records/s.
    let mut failed = 0;
    let mut failed_message = None;
    for batch in 0..3 {
        let entries = (0..500)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("{batch}-{i}"))
                    .data(Blob::new("x"))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = client
            .put_records()
            .stream_name("s")
            .set_records(Some(entries))
            .send()
            .await?;
        failed += out.failed_record_count().unwrap_or(0);
        for entry in out.records() {
            if let Some(code) = entry.error_code() {
                assert_eq!(code, "ProvisionedThroughputExceededException");
                failed_message = entry.error_message().map(str::to_string);
                assert!(entry.sequence_number().is_none());
            }
        }
    }
    assert!(failed >= 400, "only {failed} records were throttled");
    assert_eq!(
        failed_message.as_deref(),
        Some(
            "Rate exceeded for shard shardId-000000000000 in stream s under account 000000000000."
        )
    );
    // GetRecords: five calls per second per shard.
    let it = iterator(
        &client,
        "s",
        "shardId-000000000000",
        ShardIteratorType::Latest,
        None,
    )
    .await?;
    let mut throttled = false;
    for _ in 0..20 {
        if let Err(error) = client.get_records().shard_iterator(&it).send().await {
            let (code, _) = error_of::<_, ()>(Err(error));
            assert_eq!(code, "ProvisionedThroughputExceededException");
            throttled = true;
            break;
        }
    }
    assert!(
        throttled,
        "20 GetRecords calls in a row were never throttled"
    );

    // With limits off, the same load goes through.
    let unlimited = Server::start(&["--shard-throughput", "unlimited"])?;
    let client = unlimited.client();
    create_active_stream(&client, "s", 1).await?;
    for batch in 0..3 {
        let entries = (0..500)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("{batch}-{i}"))
                    .data(Blob::new("x"))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = client
            .put_records()
            .stream_name("s")
            .set_records(Some(entries))
            .send()
            .await?;
        assert_eq!(out.failed_record_count(), Some(0));
    }
    Ok(())
}

#[tokio::test]
async fn large_records_need_a_larger_max_record_size() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    let big = vec![7u8; 2 * 1024 * 1024];
    let refused = client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new(big.clone()))
        .send()
        .await;
    assert!(refused.is_err());
    client
        .update_max_record_size()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/s")
        .max_record_size_in_kib(4096)
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&client, "s").await?;
    client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new(big.clone()))
        .send()
        .await?;
    let it = iterator(
        &client,
        "s",
        "shardId-000000000000",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await?;
    let out = client.get_records().shard_iterator(&it).send().await?;
    assert_eq!(out.records().len(), 1);
    assert_eq!(out.records()[0].data().as_ref(), big.as_slice());
    // The shard's write budget is now spent: the next write is throttled for a while.
    let (code, _) = error_of(
        client
            .put_record()
            .stream_name("s")
            .partition_key("k")
            .data(Blob::new("small"))
            .send()
            .await,
    );
    assert_eq!(code, "ProvisionedThroughputExceededException");
    Ok(())
}
