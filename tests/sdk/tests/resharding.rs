//! Split, merge and UpdateShardCount: lineage, hash ranges, sequence numbers, and reading
//! a closed parent to its end.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ScalingType, Shard, ShardIteratorType};
use millrace_sdk_tests::{Server, create_active_stream, error_of, wait_active};

async fn shards(client: &aws_sdk_kinesis::Client, stream: &str) -> anyhow::Result<Vec<Shard>> {
    Ok(client
        .list_shards()
        .stream_name(stream)
        .send()
        .await?
        .shards()
        .to_vec())
}

fn range(shard: &Shard) -> (u128, u128) {
    let r = shard.hash_key_range().expect("range");
    (
        r.starting_hash_key().parse().unwrap_or(0),
        r.ending_hash_key().parse().unwrap_or(0),
    )
}

fn assert_open_shards_tile(all: &[Shard]) {
    let mut open: Vec<(u128, u128)> = all
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .map(range)
        .collect();
    open.sort();
    assert_eq!(open.first().map(|r| r.0), Some(0));
    assert_eq!(open.last().map(|r| r.1), Some(u128::MAX));
    for pair in open.windows(2) {
        assert_eq!(pair[0].1 + 1, pair[1].0, "gap or overlap in {open:?}");
    }
}

#[tokio::test]
async fn split_then_merge_keeps_lineage_and_order() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    let before = client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new("before"))
        .send()
        .await?;
    let parent_it = client
        .get_shard_iterator()
        .stream_name("s")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator()
        .expect("iterator")
        .to_string();

    let middle = (u128::MAX / 2 + 1).to_string();
    client
        .split_shard()
        .stream_name("s")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(&middle)
        .send()
        .await?;
    wait_active(&client, "s").await?;
    let all = shards(&client, "s").await?;
    assert_eq!(all.len(), 3);
    assert_open_shards_tile(&all);
    let parent = &all[0];
    assert!(
        parent
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_some()
    );
    for child in &all[1..] {
        assert_eq!(child.parent_shard_id(), Some("shardId-000000000000"));
        assert!(child.adjacent_parent_shard_id().is_none());
        // Children's numbers are above the parent's.
        let child_start = child
            .sequence_number_range()
            .expect("range")
            .starting_sequence_number();
        assert!(
            child_start > before.sequence_number(),
            "{child_start} <= {}",
            before.sequence_number()
        );
    }
    assert_eq!(range(&all[2]).0.to_string(), middle);

    // Writes now go to the children.
    let after = client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new("after"))
        .send()
        .await?;
    assert_ne!(after.shard_id(), "shardId-000000000000");
    assert!(after.sequence_number() > before.sequence_number());

    // Reading the closed parent to its end gives its record, then ChildShards and no next
    // iterator.
    let out = client
        .get_records()
        .shard_iterator(&parent_it)
        .send()
        .await?;
    assert_eq!(out.records().len(), 1);
    assert_eq!(out.records()[0].data().as_ref(), b"before");
    assert!(out.next_shard_iterator().is_none());
    let children: Vec<&str> = out.child_shards().iter().map(|c| c.shard_id()).collect();
    assert_eq!(
        children,
        vec!["shardId-000000000001", "shardId-000000000002"]
    );

    // Merge the two children back.
    client
        .merge_shards()
        .stream_name("s")
        .shard_to_merge("shardId-000000000001")
        .adjacent_shard_to_merge("shardId-000000000002")
        .send()
        .await?;
    wait_active(&client, "s").await?;
    let all = shards(&client, "s").await?;
    assert_eq!(all.len(), 4);
    assert_open_shards_tile(&all);
    let merged = &all[3];
    assert_eq!(merged.parent_shard_id(), Some("shardId-000000000001"));
    assert_eq!(
        merged.adjacent_parent_shard_id(),
        Some("shardId-000000000002")
    );
    assert_eq!(range(merged), (0, u128::MAX));

    // Errors.
    let (code, message) = error_of(
        client
            .split_shard()
            .stream_name("s")
            .shard_to_split("shardId-000000000000")
            .new_starting_hash_key("5")
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException", "{message}");
    let (code, message) = error_of(
        client
            .split_shard()
            .stream_name("s")
            .shard_to_split("shardId-000000000009")
            .new_starting_hash_key("5")
            .send()
            .await,
    );
    assert_eq!(code, "ResourceNotFoundException");
    assert_eq!(
        message,
        "Could not find shard shardId-000000000009 in stream s under account 000000000000."
    );
    let (code, _) = error_of(
        client
            .merge_shards()
            .stream_name("s")
            .shard_to_merge("shardId-000000000001")
            .adjacent_shard_to_merge("shardId-000000000003")
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    Ok(())
}

#[tokio::test]
async fn update_shard_count_scales_uniformly_with_lineage() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 3).await?;
    let out = client
        .update_shard_count()
        .stream_name("s")
        .target_shard_count(5)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await?;
    assert_eq!(out.current_shard_count(), Some(3));
    assert_eq!(out.target_shard_count(), Some(5));
    wait_active(&client, "s").await?;
    let all = shards(&client, "s").await?;
    assert_open_shards_tile(&all);
    let open: Vec<&Shard> = all
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .collect();
    assert_eq!(open.len(), 5);
    // Every shard except the first three has a parent that exists.
    let ids: Vec<&str> = all.iter().map(|s| s.shard_id()).collect();
    for shard in &all[3..] {
        let parent = shard.parent_shard_id().expect("parent");
        assert!(ids.contains(&parent));
        if let Some(adjacent) = shard.adjacent_parent_shard_id() {
            assert!(ids.contains(&adjacent));
        }
    }
    // Uniform: each open shard is a fifth of the space (within rounding).
    let fifth = u128::MAX / 5;
    for shard in &open {
        let (start, end) = range(shard);
        assert!((end - start).abs_diff(fifth) < 5, "{start}..{end}");
    }
    // Then down to 3.
    client
        .update_shard_count()
        .stream_name("s")
        .target_shard_count(3)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await?;
    wait_active(&client, "s").await?;
    let all = shards(&client, "s").await?;
    assert_open_shards_tile(&all);
    let (code, message) = error_of(
        client
            .update_shard_count()
            .stream_name("s")
            .target_shard_count(7)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await,
    );
    assert_eq!(code, "LimitExceededException");
    assert_eq!(
        message,
        "UpdateShardCount cannot scale up over double your current open shard count. Current open \
         shard count: 3, Target shard count: 7"
    );
    Ok(())
}
