//! Control plane through the AWS SDK for Rust: streams, shards listing, retention, tags,
//! policies, encryption, monitoring, limits and account settings.

use aws_sdk_kinesis::types::{
    MetricsName, MinimumThroughputBillingCommitmentInput,
    MinimumThroughputBillingCommitmentInputStatus, ShardFilter, ShardFilterType, StreamMode,
    StreamModeDetails, StreamStatus,
};
use millrace_sdk_tests::{Server, create_active_stream, error_of};

#[tokio::test]
async fn create_describe_list_delete() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "orders", 3).await?;

    let description = client
        .describe_stream()
        .stream_name("orders")
        .send()
        .await?;
    let d = description
        .stream_description()
        .ok_or_else(|| anyhow::anyhow!("no description"))?;
    assert_eq!(d.stream_name(), "orders");
    assert_eq!(
        d.stream_arn(),
        "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
    );
    assert_eq!(d.stream_status(), &StreamStatus::Active);
    assert_eq!(d.retention_period_hours(), 24);
    assert!(!d.has_more_shards());
    let shards = d.shards();
    assert_eq!(shards.len(), 3);
    assert_eq!(shards[0].shard_id(), "shardId-000000000000");
    let ranges: Vec<(String, String)> = shards
        .iter()
        .map(|s| {
            let r = s.hash_key_range().expect("range");
            (
                r.starting_hash_key().to_string(),
                r.ending_hash_key().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ranges,
        vec![
            ("0".into(), "113427455640312821154458202477256070484".into()),
            (
                "113427455640312821154458202477256070485".into(),
                "226854911280625642308916404954512140969".into()
            ),
            (
                "226854911280625642308916404954512140970".into(),
                "340282366920938463463374607431768211455".into()
            ),
        ]
    );
    for shard in shards {
        let range = shard.sequence_number_range().expect("sequence range");
        assert_eq!(range.starting_sequence_number().len(), 56);
        assert!(range.ending_sequence_number().is_none());
    }

    let summary = client
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await?;
    let s = summary.stream_description_summary().expect("summary");
    assert_eq!(s.open_shard_count(), 3);
    assert_eq!(
        s.stream_mode_details().map(|m| m.stream_mode().clone()),
        Some(StreamMode::Provisioned)
    );

    // Paging of DescribeStream.
    let page = client
        .describe_stream()
        .stream_name("orders")
        .limit(2)
        .send()
        .await?;
    let d = page.stream_description().expect("description");
    assert_eq!(d.shards().len(), 2);
    assert!(d.has_more_shards());
    let rest = client
        .describe_stream()
        .stream_name("orders")
        .exclusive_start_shard_id("shardId-000000000001")
        .send()
        .await?;
    assert_eq!(rest.stream_description().map(|d| d.shards().len()), Some(1));

    // Same name twice.
    let (code, message) = error_of(
        client
            .create_stream()
            .stream_name("orders")
            .shard_count(1)
            .send()
            .await,
    );
    assert_eq!(code, "ResourceInUseException");
    assert_eq!(
        message,
        "Stream orders under account 000000000000 already exists."
    );

    // Listing, with paging.
    for name in ["a1", "a2", "a3"] {
        create_active_stream(&client, name, 1).await?;
    }
    let list = client.list_streams().limit(2).send().await?;
    assert_eq!(list.stream_names(), ["a1", "a2"]);
    assert!(list.has_more_streams());
    let next = client
        .list_streams()
        .next_token(list.next_token().expect("token"))
        .send()
        .await?;
    assert_eq!(next.stream_names(), ["a3", "orders"]);
    assert!(!next.has_more_streams());
    assert_eq!(next.stream_summaries().len(), 2);

    // Another region is another namespace.
    let west = server.client_in("us-west-2", "AKIDEXAMPLE");
    assert!(west.list_streams().send().await?.stream_names().is_empty());
    create_active_stream(&west, "orders", 1).await?;
    // And a 12-digit access key selects an account.
    let other = server.client_in("us-east-1", "111122223333");
    let (code, message) = error_of(other.describe_stream().stream_name("orders").send().await);
    assert_eq!(code, "ResourceNotFoundException");
    assert_eq!(
        message,
        "Stream orders under account 111122223333 not found."
    );

    client.delete_stream().stream_name("orders").send().await?;
    let (code, message) = error_of(
        client
            .describe_stream_summary()
            .stream_name("orders")
            .send()
            .await,
    );
    assert_eq!(code, "ResourceNotFoundException");
    assert_eq!(
        message,
        "Stream orders under account 000000000000 not found."
    );
    // The stream in the other region is untouched.
    assert_eq!(west.list_streams().send().await?.stream_names(), ["orders"]);
    Ok(())
}

#[tokio::test]
async fn on_demand_streams_start_with_four_shards() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
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
    let summary = client
        .describe_stream_summary()
        .stream_name("od")
        .send()
        .await?;
    let s = summary.stream_description_summary().expect("summary");
    assert_eq!(s.open_shard_count(), 4);
    assert_eq!(
        s.stream_mode_details().map(|m| m.stream_mode().clone()),
        Some(StreamMode::OnDemand)
    );

    // Switch to provisioned and back.
    let arn = s.stream_arn().to_string();
    client
        .update_stream_mode()
        .stream_arn(&arn)
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::Provisioned)
                .build()?,
        )
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&client, "od").await?;
    let summary = client
        .describe_stream_summary()
        .stream_name("od")
        .send()
        .await?;
    assert_eq!(
        summary
            .stream_description_summary()
            .and_then(|s| s.stream_mode_details())
            .map(|m| m.stream_mode().clone()),
        Some(StreamMode::Provisioned)
    );
    let limits = client.describe_limits().send().await?;
    assert_eq!(limits.shard_limit(), 500);
    assert_eq!(limits.open_shard_count(), 4);
    assert_eq!(limits.on_demand_stream_count(), 0);
    assert_eq!(limits.on_demand_stream_count_limit(), 50);
    Ok(())
}

#[tokio::test]
async fn retention_tags_policies_encryption_monitoring() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;

    // Retention.
    client
        .increase_stream_retention_period()
        .stream_name("s")
        .retention_period_hours(48)
        .send()
        .await?;
    let (code, message) = error_of(
        client
            .increase_stream_retention_period()
            .stream_name("s")
            .retention_period_hours(30)
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    assert_eq!(
        message,
        "Requested retention period (30 hours) for stream s can not be shorter than existing \
         retention period (48 hours). Use DecreaseRetentionPeriod API."
    );
    let (code, message) = error_of(
        client
            .decrease_stream_retention_period()
            .stream_name("s")
            .retention_period_hours(12)
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    assert_eq!(
        message,
        "Minimum allowed retention period is 24 hours. Requested retention period (12 hours) is too short."
    );
    client
        .decrease_stream_retention_period()
        .stream_name("s")
        .retention_period_hours(24)
        .send()
        .await?;
    let summary = client
        .describe_stream_summary()
        .stream_name("s")
        .send()
        .await?;
    assert_eq!(
        summary
            .stream_description_summary()
            .map(|s| s.retention_period_hours()),
        Some(24)
    );

    // Tags by name and by ARN.
    client
        .add_tags_to_stream()
        .stream_name("s")
        .tags("team", "data")
        .tags("env", "test")
        .send()
        .await?;
    let tags = client
        .list_tags_for_stream()
        .stream_name("s")
        .send()
        .await?;
    let pairs: Vec<(&str, Option<&str>)> =
        tags.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(pairs, vec![("env", Some("test")), ("team", Some("data"))]);
    assert!(!tags.has_more_tags());
    let page = client
        .list_tags_for_stream()
        .stream_name("s")
        .limit(1)
        .send()
        .await?;
    assert_eq!(page.tags().len(), 1);
    assert!(page.has_more_tags());
    client
        .remove_tags_from_stream()
        .stream_name("s")
        .tag_keys("env")
        .send()
        .await?;
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s";
    client
        .tag_resource()
        .resource_arn(arn)
        .tags("k", "v")
        .send()
        .await?;
    let by_arn = client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await?;
    let keys: Vec<&str> = by_arn.tags().iter().map(|t| t.key()).collect();
    assert_eq!(keys, vec!["k", "team"]);
    client
        .untag_resource()
        .resource_arn(arn)
        .tag_keys("k")
        .send()
        .await?;
    let by_arn = client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await?;
    assert_eq!(by_arn.tags().len(), 1);

    // Resource policies.
    let empty = client
        .get_resource_policy()
        .resource_arn(arn)
        .send()
        .await?;
    assert_eq!(empty.policy(), "{}");
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kinesis:GetRecords","Resource":"arn:aws:kinesis:us-east-1:000000000000:stream/s"}]}"#;
    client
        .put_resource_policy()
        .resource_arn(arn)
        .policy(policy)
        .send()
        .await?;
    assert_eq!(
        client
            .get_resource_policy()
            .resource_arn(arn)
            .send()
            .await?
            .policy(),
        policy
    );
    client
        .delete_resource_policy()
        .resource_arn(arn)
        .send()
        .await?;
    assert_eq!(
        client
            .get_resource_policy()
            .resource_arn(arn)
            .send()
            .await?
            .policy(),
        "{}"
    );

    // Encryption.
    client
        .start_stream_encryption()
        .stream_name("s")
        .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&client, "s").await?;
    let put = client
        .put_record()
        .stream_name("s")
        .partition_key("p")
        .data(aws_sdk_kinesis::primitives::Blob::new("x"))
        .send()
        .await?;
    assert_eq!(
        put.encryption_type(),
        Some(&aws_sdk_kinesis::types::EncryptionType::Kms)
    );
    let summary = client
        .describe_stream_summary()
        .stream_name("s")
        .send()
        .await?;
    assert_eq!(
        summary
            .stream_description_summary()
            .and_then(|s| s.key_id()),
        Some("alias/aws/kinesis")
    );
    client
        .stop_stream_encryption()
        .stream_name("s")
        .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&client, "s").await?;

    // Enhanced monitoring.
    let enabled = client
        .enable_enhanced_monitoring()
        .stream_name("s")
        .shard_level_metrics(MetricsName::IncomingBytes)
        .send()
        .await?;
    assert!(enabled.current_shard_level_metrics().is_empty());
    assert_eq!(
        enabled.desired_shard_level_metrics(),
        [MetricsName::IncomingBytes]
    );
    let disabled = client
        .disable_enhanced_monitoring()
        .stream_name("s")
        .shard_level_metrics(MetricsName::All)
        .send()
        .await?;
    assert_eq!(
        disabled.current_shard_level_metrics(),
        [MetricsName::IncomingBytes]
    );
    assert!(disabled.desired_shard_level_metrics().is_empty());

    // Max record size.
    client
        .update_max_record_size()
        .stream_arn(arn)
        .max_record_size_in_kib(2048)
        .send()
        .await?;
    let summary = client
        .describe_stream_summary()
        .stream_name("s")
        .send()
        .await?;
    assert_eq!(
        summary
            .stream_description_summary()
            .and_then(|s| s.max_record_size_in_kib()),
        Some(2048)
    );

    // Account settings.
    let updated = client
        .update_account_settings()
        .minimum_throughput_billing_commitment(
            MinimumThroughputBillingCommitmentInput::builder()
                .status(MinimumThroughputBillingCommitmentInputStatus::Enabled)
                .build()?,
        )
        .send()
        .await?;
    assert!(updated.minimum_throughput_billing_commitment().is_some());
    let settings = client.describe_account_settings().send().await?;
    assert_eq!(
        settings
            .minimum_throughput_billing_commitment()
            .map(|c| c.status().as_str().to_string()),
        Some("ENABLED".to_string())
    );
    Ok(())
}

#[tokio::test]
async fn list_shards_filters_and_paging() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 4).await?;
    let first = client
        .list_shards()
        .stream_name("s")
        .max_results(3)
        .send()
        .await?;
    assert_eq!(first.shards().len(), 3);
    let token = first.next_token().expect("next token").to_string();
    let (code, message) = error_of(
        client
            .list_shards()
            .stream_name("s")
            .next_token(&token)
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    assert_eq!(
        message,
        "NextToken and StreamName cannot be provided together."
    );
    let rest = client.list_shards().next_token(&token).send().await?;
    assert_eq!(rest.shards().len(), 1);
    assert_eq!(rest.shards()[0].shard_id(), "shardId-000000000003");
    assert!(rest.next_token().is_none());

    client
        .split_shard()
        .stream_name("s")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("10")
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&client, "s").await?;
    let ids = |out: &aws_sdk_kinesis::operation::list_shards::ListShardsOutput| -> Vec<String> {
        out.shards()
            .iter()
            .map(|s| s.shard_id().to_string())
            .collect()
    };
    let all = client.list_shards().stream_name("s").send().await?;
    assert_eq!(ids(&all).len(), 6);
    let latest = client
        .list_shards()
        .stream_name("s")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()?,
        )
        .send()
        .await?;
    assert_eq!(
        ids(&latest),
        vec![
            "shardId-000000000001",
            "shardId-000000000002",
            "shardId-000000000003",
            "shardId-000000000004",
            "shardId-000000000005"
        ]
    );
    let horizon = client
        .list_shards()
        .stream_name("s")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtTrimHorizon)
                .build()?,
        )
        .send()
        .await?;
    assert_eq!(
        ids(&horizon),
        vec![
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002",
            "shardId-000000000003"
        ]
    );
    let after = client
        .list_shards()
        .stream_name("s")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AfterShardId)
                .shard_id("shardId-000000000003")
                .build()?,
        )
        .send()
        .await?;
    assert_eq!(
        ids(&after),
        vec!["shardId-000000000004", "shardId-000000000005"]
    );
    Ok(())
}
