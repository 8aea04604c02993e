//! Registered consumers and SubscribeToShard (enhanced fan-out) through the AWS SDK for
//! Rust.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use millrace_sdk_tests::{Server, create_active_stream, error_of};

const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/s";

#[tokio::test]
async fn register_describe_list_deregister() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    let registered = client
        .register_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name("app")
        .send()
        .await?;
    let consumer = registered.consumer().expect("consumer");
    assert_eq!(consumer.consumer_name(), "app");
    assert!(
        consumer
            .consumer_arn()
            .starts_with("arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/app:"),
        "{}",
        consumer.consumer_arn()
    );
    let arn = consumer.consumer_arn().to_string();
    let (code, _) = error_of(
        client
            .register_stream_consumer()
            .stream_arn(STREAM_ARN)
            .consumer_name("app")
            .send()
            .await,
    );
    assert_eq!(code, "ResourceInUseException");

    let described = client
        .describe_stream_consumer()
        .consumer_arn(&arn)
        .send()
        .await?;
    let d = described.consumer_description().expect("description");
    assert_eq!(d.consumer_status(), &ConsumerStatus::Active);
    assert_eq!(d.stream_arn(), STREAM_ARN);
    let by_name = client
        .describe_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name("app")
        .send()
        .await?;
    assert_eq!(
        by_name.consumer_description().map(|d| d.consumer_arn()),
        Some(arn.as_str())
    );

    client
        .register_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name("second")
        .send()
        .await?;
    let listed = client
        .list_stream_consumers()
        .stream_arn(STREAM_ARN)
        .max_results(1)
        .send()
        .await?;
    assert_eq!(listed.consumers().len(), 1);
    let rest = client
        .list_stream_consumers()
        .stream_arn(STREAM_ARN)
        .next_token(listed.next_token().expect("token"))
        .send()
        .await?;
    assert_eq!(rest.consumers().len(), 1);
    assert_eq!(rest.consumers()[0].consumer_name(), "second");

    // A stream with consumers is only deleted when asked to delete them too.
    let (code, _) = error_of(client.delete_stream().stream_name("s").send().await);
    assert_eq!(code, "ResourceInUseException");

    client
        .deregister_stream_consumer()
        .consumer_arn(&arn)
        .send()
        .await?;
    let (code, _) = error_of(
        client
            .describe_stream_consumer()
            .consumer_arn(&arn)
            .send()
            .await,
    );
    assert_eq!(code, "ResourceNotFoundException");
    client
        .delete_stream()
        .stream_name("s")
        .enforce_consumer_deletion(true)
        .send()
        .await?;
    Ok(())
}

#[tokio::test]
async fn subscribe_to_shard_pushes_records() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new("old"))
        .send()
        .await?;
    let consumer = client
        .register_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name("fan")
        .send()
        .await?;
    let arn = consumer
        .consumer()
        .expect("consumer")
        .consumer_arn()
        .to_string();

    let mut subscription = client
        .subscribe_to_shard()
        .consumer_arn(&arn)
        .shard_id("shardId-000000000000")
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::TrimHorizon)
                .build()?,
        )
        .send()
        .await?;

    // Write more while subscribed; every record must arrive, in order.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                client
                    .put_record()
                    .stream_name("s")
                    .partition_key("k")
                    .data(Blob::new(format!("new-{i}")))
                    .send()
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    let mut received: Vec<String> = Vec::new();
    let mut continuation = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.len() < 21 {
        let event = tokio::time::timeout_at(deadline, subscription.event_stream.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no records for 30 s; got {received:?}"))??;
        match event {
            Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) => {
                for record in event.records() {
                    received.push(String::from_utf8_lossy(record.data().as_ref()).into_owned());
                }
                continuation = event.continuation_sequence_number().to_string();
            }
            Some(other) => anyhow::bail!("unexpected event {other:?}"),
            None => anyhow::bail!("subscription ended early after {received:?}"),
        }
    }
    writer.await??;
    let mut expected = vec!["old".to_string()];
    expected.extend((0..20).map(|i| format!("new-{i}")));
    assert_eq!(received, expected);
    assert!(!continuation.is_empty());

    // A second subscription for the same consumer and shard right away is refused.
    let again = client
        .subscribe_to_shard()
        .consumer_arn(&arn)
        .shard_id("shardId-000000000000")
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::Latest)
                .build()?,
        )
        .send()
        .await;
    let (code, _) = error_of(again.map(|_| ()));
    assert_eq!(code, "ResourceInUseException");
    Ok(())
}
