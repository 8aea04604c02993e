//! Firehose through the AWS SDK for Rust: the control plane (create, describe, list, update,
//! tags, encryption, delete, and their errors), DirectPut into the embedded buckets (folders
//! under the data directory) with the interval driven by the clock-advance call, the object
//! key layout and gzip content, a Kinesis stream as the source, and a SIGKILL in the middle of
//! buffering that loses no accepted record.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, DeliveryStreamStatus, DeliveryStreamType,
    ExtendedS3DestinationConfiguration, ExtendedS3DestinationUpdate,
    KinesisStreamSourceConfiguration, Record, Tag,
};
use millrace_sdk_tests::{Server, create_active_stream, error_of, eventually, files_under};

const ROLE: &str = "arn:aws:iam::000000000000:role/firehose";

fn s3_destination(
    bucket: &str,
    prefix: &str,
    interval_s: i32,
) -> ExtendedS3DestinationConfiguration {
    ExtendedS3DestinationConfiguration::builder()
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .role_arn(ROLE)
        .prefix(prefix)
        .compression_format(CompressionFormat::Gzip)
        .buffering_hints(
            BufferingHints::builder()
                .size_in_mbs(1)
                .interval_in_seconds(interval_s)
                .build(),
        )
        .build()
        .expect("required fields set")
}

fn bucket_dir(server: &Server, bucket: &str) -> PathBuf {
    server.data_dir.join("buckets").join(bucket)
}

fn objects(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = files_under(dir)?
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".millrace-"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn gunzip(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
    Ok(text)
}

/// Every line of every object in `dir` (gzip).
fn delivered_lines(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for object in objects(dir)? {
        lines.extend(gunzip(&object)?.lines().map(str::to_string));
    }
    Ok(lines)
}

#[tokio::test]
async fn control_plane() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let firehose = server.firehose_client();
    let created = firehose
        .create_delivery_stream()
        .delivery_stream_name("orders")
        .extended_s3_destination_configuration(s3_destination("orders-bucket", "orders/", 300))
        .tags(Tag::builder().key("team").value("data").build()?)
        .send()
        .await?;
    assert_eq!(
        created.delivery_stream_arn(),
        Some("arn:aws:firehose:us-east-1:000000000000:deliverystream/orders")
    );

    let (code, message) = error_of(
        firehose
            .create_delivery_stream()
            .delivery_stream_name("orders")
            .extended_s3_destination_configuration(s3_destination("b", "p/", 300))
            .send()
            .await,
    );
    assert_eq!(code, "ResourceInUseException", "{message}");

    let description = firehose
        .describe_delivery_stream()
        .delivery_stream_name("orders")
        .send()
        .await?;
    let stream = description
        .delivery_stream_description()
        .ok_or_else(|| anyhow::anyhow!("no description"))?;
    assert_eq!(
        stream.delivery_stream_status(),
        &DeliveryStreamStatus::Active
    );
    assert_eq!(
        stream.delivery_stream_type(),
        &DeliveryStreamType::DirectPut
    );
    assert_eq!(stream.version_id(), "1");
    let destination = stream
        .destinations()
        .first()
        .ok_or_else(|| anyhow::anyhow!("no destination"))?;
    assert_eq!(destination.destination_id(), "destinationId-000000000001");
    let extended = destination
        .extended_s3_destination_description()
        .ok_or_else(|| anyhow::anyhow!("no extended S3 description"))?;
    assert_eq!(extended.bucket_arn(), "arn:aws:s3:::orders-bucket");
    assert_eq!(extended.compression_format(), &CompressionFormat::Gzip);
    assert_eq!(extended.prefix(), Some("orders/"));

    // A stale version id is refused; the right one bumps the version.
    let update = ExtendedS3DestinationUpdate::builder().prefix("v2/").build();
    let (code, _) = error_of(
        firehose
            .update_destination()
            .delivery_stream_name("orders")
            .current_delivery_stream_version_id("7")
            .destination_id("destinationId-000000000001")
            .extended_s3_destination_update(update.clone())
            .send()
            .await,
    );
    assert_eq!(code, "ConcurrentModificationException");
    firehose
        .update_destination()
        .delivery_stream_name("orders")
        .current_delivery_stream_version_id("1")
        .destination_id("destinationId-000000000001")
        .extended_s3_destination_update(update)
        .send()
        .await?;
    let description = firehose
        .describe_delivery_stream()
        .delivery_stream_name("orders")
        .send()
        .await?;
    let stream = description
        .delivery_stream_description()
        .ok_or_else(|| anyhow::anyhow!("no description"))?;
    assert_eq!(stream.version_id(), "2");
    assert!(stream.last_update_timestamp().is_some());

    // Validation the model cannot express: expressions need an error prefix.
    let (code, message) = error_of(
        firehose
            .create_delivery_stream()
            .delivery_stream_name("bad")
            .extended_s3_destination_configuration(s3_destination("b", "p/!{timestamp:yyyy}/", 300))
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException", "{message}");

    firehose
        .create_delivery_stream()
        .delivery_stream_name("clicks")
        .extended_s3_destination_configuration(s3_destination("clicks", "c/", 300))
        .send()
        .await?;
    let listed = firehose.list_delivery_streams().limit(1).send().await?;
    assert_eq!(listed.delivery_stream_names(), ["clicks"]);
    assert!(listed.has_more_delivery_streams());
    let rest = firehose
        .list_delivery_streams()
        .exclusive_start_delivery_stream_name("clicks")
        .send()
        .await?;
    assert_eq!(rest.delivery_stream_names(), ["orders"]);
    assert!(!rest.has_more_delivery_streams());

    firehose
        .tag_delivery_stream()
        .delivery_stream_name("orders")
        .tags(Tag::builder().key("env").value("test").build()?)
        .send()
        .await?;
    firehose
        .untag_delivery_stream()
        .delivery_stream_name("orders")
        .tag_keys("team")
        .send()
        .await?;
    let tags = firehose
        .list_tags_for_delivery_stream()
        .delivery_stream_name("orders")
        .send()
        .await?;
    let keys: Vec<&str> = tags.tags().iter().map(|t| t.key()).collect();
    assert_eq!(keys, ["env"]);

    firehose
        .start_delivery_stream_encryption()
        .delivery_stream_name("orders")
        .send()
        .await?;
    let put = firehose
        .put_record()
        .delivery_stream_name("orders")
        .record(Record::builder().data(Blob::new("x")).build()?)
        .send()
        .await?;
    assert_eq!(put.encrypted(), Some(true));
    firehose
        .stop_delivery_stream_encryption()
        .delivery_stream_name("orders")
        .send()
        .await?;

    firehose
        .delete_delivery_stream()
        .delivery_stream_name("clicks")
        .send()
        .await?;
    let (code, message) = error_of(
        firehose
            .describe_delivery_stream()
            .delivery_stream_name("clicks")
            .send()
            .await,
    );
    assert_eq!(code, "ResourceNotFoundException");
    assert_eq!(
        message,
        "Firehose clicks under account 000000000000 not found."
    );
    let (code, _) = error_of(
        firehose
            .put_record()
            .delivery_stream_name("clicks")
            .record(Record::builder().data(Blob::new("x")).build()?)
            .send()
            .await,
    );
    assert_eq!(code, "ResourceNotFoundException");
    Ok(())
}

#[tokio::test]
async fn direct_put_is_delivered_when_the_interval_passes() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let firehose = server.firehose_client();
    firehose
        .create_delivery_stream()
        .delivery_stream_name("events")
        .extended_s3_destination_configuration(s3_destination("events", "raw/", 60))
        .send()
        .await?;
    for i in 0..3 {
        firehose
            .put_record()
            .delivery_stream_name("events")
            .record(
                Record::builder()
                    .data(Blob::new(format!("{{\"n\":{i}}}\n")))
                    .build()?,
            )
            .send()
            .await?;
    }
    let batch: Vec<Record> = (3..10)
        .map(|i| {
            Record::builder()
                .data(Blob::new(format!("{{\"n\":{i}}}\n")))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let answer = firehose
        .put_record_batch()
        .delivery_stream_name("events")
        .set_records(Some(batch))
        .send()
        .await?;
    assert_eq!(answer.failed_put_count(), 0);
    assert_eq!(answer.request_responses().len(), 7);
    assert!(
        answer
            .request_responses()
            .iter()
            .all(|r| r.record_id().is_some())
    );

    // Nothing before the interval (1 MiB is far away)...
    let dir = bucket_dir(&server, "events");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        objects(&dir)?.is_empty(),
        "delivered before the buffer interval"
    );
    // ...and one object once the clock passes it.
    server.advance_clock(61_000)?;
    let found = eventually(Duration::from_secs(10), "an object", || async {
        let found = objects(&dir)?;
        Ok((!found.is_empty()).then_some(found))
    })
    .await?;
    assert_eq!(found.len(), 1);
    let relative = found[0].strip_prefix(&dir)?.to_string_lossy().into_owned();
    // raw/yyyy/MM/dd/HH/events-1-yyyy-MM-dd-HH-mm-ss-<uuid>.gz
    let parts: Vec<&str> = relative.split('/').collect();
    assert_eq!(parts.len(), 6, "{relative}");
    assert_eq!(parts[0], "raw");
    assert!(
        parts[1].len() == 4 && parts[2].len() == 2 && parts[3].len() == 2 && parts[4].len() == 2,
        "{relative}"
    );
    let name = parts[5];
    assert!(
        name.starts_with("events-1-") && name.ends_with(".gz"),
        "{name}"
    );
    assert_eq!(
        name.len(),
        "events-1-".len() + "yyyy-MM-dd-HH-mm-ss-".len() + 36 + ".gz".len(),
        "{name}"
    );
    assert!(
        name.contains(&format!(
            "-{}-{}-{}-{}-",
            parts[1], parts[2], parts[3], parts[4]
        )),
        "{name}"
    );
    let lines = delivered_lines(&dir)?;
    let expected: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(lines, expected);

    // PutRecordBatch over 4 MiB is refused as AWS does.
    let big: Vec<Record> = (0..5)
        .map(|_| {
            Record::builder()
                .data(Blob::new(vec![b'x'; 1_000_000]))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let (code, _) = error_of(
        firehose
            .put_record_batch()
            .delivery_stream_name("events")
            .set_records(Some(big))
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    Ok(())
}

#[tokio::test]
async fn sigkill_in_the_middle_of_buffering_loses_nothing() -> anyhow::Result<()> {
    let mut server = Server::start(&[])?;
    let firehose = server.firehose_client();
    firehose
        .create_delivery_stream()
        .delivery_stream_name("durable")
        .extended_s3_destination_configuration(s3_destination("durable", "d/", 900))
        .send()
        .await?;
    let mut expected = Vec::new();
    for batch_idx in 0..5 {
        let records: Vec<Record> = (0..100)
            .map(|i| {
                let line = format!("{{\"batch\":{batch_idx},\"i\":{i}}}");
                expected.push(line.clone());
                Record::builder()
                    .data(Blob::new(format!("{line}\n")))
                    .build()
            })
            .collect::<Result<_, _>>()?;
        let answer = firehose
            .put_record_batch()
            .delivery_stream_name("durable")
            .set_records(Some(records))
            .send()
            .await?;
        assert_eq!(answer.failed_put_count(), 0);
    }
    // Every record is accepted and buffered; nothing is delivered yet. Crash.
    let dir = bucket_dir(&server, "durable");
    assert!(objects(&dir)?.is_empty());
    server.kill();
    server.restart()?;
    server.advance_clock(901_000)?;
    let lines = eventually(
        Duration::from_secs(20),
        "every record delivered",
        || async {
            let lines = delivered_lines(&dir)?;
            Ok((lines.len() >= expected.len()).then_some(lines))
        },
    )
    .await?;
    assert_eq!(lines, expected);
    // And a clean stop (SIGTERM) with records buffered loses nothing either.
    let firehose = server.firehose_client();
    firehose
        .put_record()
        .delivery_stream_name("durable")
        .record(
            Record::builder()
                .data(Blob::new("{\"after\":\"restart\"}\n"))
                .build()?,
        )
        .send()
        .await?;
    assert_eq!(server.terminate()?, Some(0));
    server.restart()?;
    // The restarted clock starts from real time again, behind the advanced clock that
    // stamped the record: move past both.
    server.advance_clock(2 * 901_000)?;
    let lines = eventually(
        Duration::from_secs(20),
        "the record put before SIGTERM",
        || async {
            let lines = delivered_lines(&dir)?;
            Ok(lines
                .iter()
                .any(|l| l == "{\"after\":\"restart\"}")
                .then_some(lines))
        },
    )
    .await?;
    assert_eq!(lines.len(), expected.len() + 1);
    Ok(())
}

#[tokio::test]
async fn kinesis_stream_as_source() -> anyhow::Result<()> {
    let server = Server::start(&["--shard-throughput", "unlimited"])?;
    let kinesis = server.client();
    let firehose = server.firehose_client();
    create_active_stream(&kinesis, "clicks", 2).await?;
    // Put before the delivery stream exists: not delivered (it starts at its creation).
    kinesis
        .put_record()
        .stream_name("clicks")
        .partition_key("early")
        .data(aws_sdk_kinesis::primitives::Blob::new("early\n"))
        .send()
        .await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stream_arn = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks";
    firehose
        .create_delivery_stream()
        .delivery_stream_name("from-kinesis")
        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
        .kinesis_stream_source_configuration(
            KinesisStreamSourceConfiguration::builder()
                .kinesis_stream_arn(stream_arn)
                .role_arn(ROLE)
                .build()?,
        )
        .extended_s3_destination_configuration(s3_destination("from-kinesis", "k/", 60))
        .send()
        .await?;
    let (code, message) = error_of(
        firehose
            .put_record()
            .delivery_stream_name("from-kinesis")
            .record(Record::builder().data(Blob::new("x")).build()?)
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException", "{message}");
    let mut expected = Vec::new();
    for i in 0..20 {
        let line = format!("record-{i}");
        kinesis
            .put_record()
            .stream_name("clicks")
            .partition_key(format!("pk-{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!("{line}\n")))
            .send()
            .await?;
        expected.push(line);
    }
    // Resharding: the children are read after their parent is finished.
    let shards = kinesis.list_shards().stream_name("clicks").send().await?;
    let first = shards
        .shards()
        .first()
        .ok_or_else(|| anyhow::anyhow!("no shard"))?;
    kinesis
        .split_shard()
        .stream_name("clicks")
        .shard_to_split(first.shard_id())
        .new_starting_hash_key("85070591730234615865843651857942052864")
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&kinesis, "clicks").await?;
    for i in 20..40 {
        let line = format!("record-{i}");
        kinesis
            .put_record()
            .stream_name("clicks")
            .partition_key(format!("pk-{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!("{line}\n")))
            .send()
            .await?;
        expected.push(line);
    }
    let dir = bucket_dir(&server, "from-kinesis");
    // The reader polls each shard once a second; keep the buffer interval passing (a bounded
    // number of times: the stream's retention runs on the same clock).
    let mut lines = Vec::new();
    for _ in 0..60 {
        server.advance_clock(61_000)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        lines = delivered_lines(&dir)?;
        if lines.len() >= expected.len() {
            break;
        }
    }
    let mut sorted = lines.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(
        sorted, want,
        "early record must not be delivered, all later ones once"
    );
    let description = firehose
        .describe_delivery_stream()
        .delivery_stream_name("from-kinesis")
        .send()
        .await?;
    let source = description
        .delivery_stream_description()
        .and_then(|d| d.source())
        .and_then(|s| s.kinesis_stream_source_description())
        .ok_or_else(|| anyhow::anyhow!("no source description"))?;
    assert_eq!(source.kinesis_stream_arn(), Some(stream_arn));
    assert!(source.delivery_start_timestamp().is_some());
    Ok(())
}
