//! Lifecycle delays, declared streams, retention that really deletes data, on-demand
//! scaling, warm throughput and the reset call.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamMode, StreamModeDetails, StreamStatus};
use millrace_sdk_tests::{Server, create_active_stream, error_of, eventually, raw_post};

async fn status(client: &aws_sdk_kinesis::Client, name: &str) -> anyhow::Result<StreamStatus> {
    let out = client.describe_stream().stream_name(name).send().await?;
    out.stream_description()
        .map(|d| d.stream_status().clone())
        .ok_or_else(|| anyhow::anyhow!("no description"))
}

#[tokio::test]
async fn creating_updating_deleting_with_delays() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        "[streams]\ncreate_delay_ms = 60000\nupdate_delay_ms = 60000\ndelete_delay_ms = 60000\n",
        &[],
    )?;
    let client = server.client();
    client
        .create_stream()
        .stream_name("s")
        .shard_count(2)
        .send()
        .await?;
    let out = client.describe_stream().stream_name("s").send().await?;
    let d = out.stream_description().expect("description");
    assert_eq!(d.stream_status(), &StreamStatus::Creating);
    assert!(d.shards().is_empty());
    // Writes to a stream that is not yet ACTIVE are refused as on AWS.
    let (code, _) = error_of(
        client
            .put_record()
            .stream_name("s")
            .partition_key("k")
            .data(Blob::new("x"))
            .send()
            .await,
    );
    assert_eq!(code, "ResourceNotFoundException");
    server.advance_clock(60_000)?;
    assert_eq!(status(&client, "s").await?, StreamStatus::Active);

    client
        .split_shard()
        .stream_name("s")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("100")
        .send()
        .await?;
    assert_eq!(status(&client, "s").await?, StreamStatus::Updating);
    let (code, message) = error_of(
        client
            .split_shard()
            .stream_name("s")
            .shard_to_split("shardId-000000000001")
            .new_starting_hash_key((u128::MAX - 100).to_string())
            .send()
            .await,
    );
    assert_eq!(code, "ResourceInUseException");
    assert_eq!(
        message,
        "Stream s under account 000000000000 not ACTIVE, instead in state UPDATING"
    );
    // Writes keep working while UPDATING.
    client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await?;
    server.advance_clock(60_000)?;
    assert_eq!(status(&client, "s").await?, StreamStatus::Active);

    client.delete_stream().stream_name("s").send().await?;
    assert_eq!(status(&client, "s").await?, StreamStatus::Deleting);
    server.advance_clock(60_000)?;
    let (code, _) = error_of(client.describe_stream().stream_name("s").send().await);
    assert_eq!(code, "ResourceNotFoundException");
    // The name can be used again at once.
    client
        .create_stream()
        .stream_name("s")
        .shard_count(1)
        .send()
        .await?;
    Ok(())
}

#[tokio::test]
async fn declared_streams_exist_from_start_up() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        "[[stream]]\nname = \"orders\"\nshard_count = 3\nconsumers = [\"app\"]\n\n[[stream]]\nname = \"events\"\n",
        &[],
    )?;
    let client = server.client();
    let names = client.list_streams().send().await?.stream_names().to_vec();
    assert_eq!(names, vec!["events".to_string(), "orders".to_string()]);
    let orders = client
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await?;
    assert_eq!(
        orders
            .stream_description_summary()
            .map(|s| s.open_shard_count()),
        Some(3)
    );
    assert_eq!(
        orders
            .stream_description_summary()
            .and_then(|s| s.consumer_count()),
        Some(1)
    );
    let events = client
        .describe_stream_summary()
        .stream_name("events")
        .send()
        .await?;
    assert_eq!(
        events
            .stream_description_summary()
            .and_then(|s| s.stream_mode_details())
            .map(|m| m.stream_mode().clone()),
        Some(StreamMode::OnDemand)
    );
    Ok(())
}

fn files_containing(
    dir: &std::path::Path,
    needle: &[u8],
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)?
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    Ok(found)
}

#[tokio::test]
async fn data_past_retention_is_deleted_from_disk() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    let marker = "retention-marker-7f3a9c";
    for _ in 0..3 {
        client
            .put_record()
            .stream_name("s")
            .partition_key("k")
            .data(Blob::new(marker))
            .send()
            .await?;
    }
    let segments = server.data_dir.join("log").join("logs");
    assert!(!files_containing(&segments, marker.as_bytes())?.is_empty());
    // A day and an hour later, housekeeping removes the segment.
    server.advance_clock(25 * 3_600_000)?;
    eventually(
        Duration::from_secs(10),
        "the segment to be deleted",
        || async {
            Ok(files_containing(&segments, marker.as_bytes())?
                .is_empty()
                .then_some(()))
        },
    )
    .await?;
    let it = client
        .get_shard_iterator()
        .stream_name("s")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?;
    let out = client
        .get_records()
        .shard_iterator(it.shard_iterator().expect("iterator"))
        .send()
        .await?;
    assert!(out.records().is_empty());
    // New records are served, with sequence numbers above the deleted ones.
    client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new("new"))
        .send()
        .await?;
    let it = client
        .get_shard_iterator()
        .stream_name("s")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?;
    let out = client
        .get_records()
        .shard_iterator(it.shard_iterator().expect("iterator"))
        .send()
        .await?;
    assert_eq!(out.records().len(), 1);
    Ok(())
}

#[tokio::test]
async fn on_demand_streams_split_hot_shards() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        "[streams]\non_demand_split_bytes_per_sec = 1000.0\non_demand_split_after_ms = 1000\n",
        &["--shard-throughput", "unlimited"],
    )?;
    let client = server.client();
    client
        .create_stream()
        .stream_name("od")
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()?,
        )
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&client, "od").await?;
    // Keep one shard hot (a fixed partition key) until the scaler splits it.
    let data = Blob::new(vec![1u8; 4096]);
    eventually(Duration::from_secs(30), "an on-demand split", || {
        let client = client.clone();
        let data = data.clone();
        async move {
            client
                .put_record()
                .stream_name("od")
                .partition_key("hot")
                .data(data)
                .send()
                .await?;
            let summary = client
                .describe_stream_summary()
                .stream_name("od")
                .send()
                .await?;
            let open = summary
                .stream_description_summary()
                .map(|s| s.open_shard_count());
            Ok((open == Some(5)).then_some(()))
        }
    })
    .await?;
    let shards = client.list_shards().stream_name("od").send().await?;
    let children: Vec<_> = shards
        .shards()
        .iter()
        .filter(|s| s.parent_shard_id().is_some())
        .collect();
    assert_eq!(children.len(), 2);
    // Warm throughput can be set on on-demand streams only.
    let warm = client
        .update_stream_warm_throughput()
        .stream_name("od")
        .warm_throughput_mibps(16)
        .send()
        .await?;
    assert_eq!(
        warm.warm_throughput().and_then(|w| w.target_mibps()),
        Some(16)
    );
    create_active_stream(&client, "p", 1).await?;
    let (code, _) = error_of(
        client
            .update_stream_warm_throughput()
            .stream_name("p")
            .warm_throughput_mibps(16)
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    Ok(())
}

#[tokio::test]
async fn reset_deletes_everything() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "a", 2).await?;
    create_active_stream(&client, "b", 1).await?;
    assert_eq!(raw_post(&server.endpoint, "/moto-api/reset")?, 200);
    assert!(
        client
            .list_streams()
            .send()
            .await?
            .stream_names()
            .is_empty()
    );
    create_active_stream(&client, "a", 1).await?;
    // Without --enable-reset the call does not exist.
    let plain = Server::start_on(&tempfile::tempdir()?.path().join("d"), &[])?;
    assert_ne!(raw_post(&plain.endpoint, "/moto-api/reset")?, 200);
    Ok(())
}

#[tokio::test]
async fn closed_shards_leave_the_listing_after_retention() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    client
        .split_shard()
        .stream_name("s")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("1000")
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&client, "s").await?;
    assert_eq!(
        client
            .list_shards()
            .stream_name("s")
            .send()
            .await?
            .shards()
            .len(),
        3
    );
    server.advance_clock(25 * 3_600_000)?;
    let remaining = eventually(
        Duration::from_secs(10),
        "the closed parent to expire",
        || async {
            let shards = client.list_shards().stream_name("s").send().await?;
            let ids: Vec<String> = shards
                .shards()
                .iter()
                .map(|s| s.shard_id().to_string())
                .collect();
            Ok((ids.len() == 2).then_some(ids))
        },
    )
    .await?;
    assert_eq!(
        remaining,
        vec!["shardId-000000000001", "shardId-000000000002"]
    );
    Ok(())
}
