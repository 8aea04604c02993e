//! A full disk: writes fail with an AWS-shaped error (not a hang, not a bare 500), reads keep
//! working, and writes resume when space returns; nothing acknowledged is lost, across a
//! `kill -9` too.
//!
//! As root, the data directory of a real `millrace` is a size-limited tmpfs
//! (`mount -t tmpfs -o size=8m`) that PutRecords fill until the disk refuses; then a filler
//! file placed in the same tmpfs is removed to give space back. Without root (or where
//! mounting is not allowed) the same scenario runs on the log over the simulated disk
//! (`millrace_log::sim`), and the one mapping from the log's `StorageFull` to the AWS error
//! is checked directly: the test never passes without checking something.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::put_records::PutRecordsError;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use millrace_sdk_tests::{Server, create_active_stream};

const TMPFS_SIZE: &str = "size=8m";
const FILLER_BYTES: usize = 1024 * 1024;
const RECORD_BYTES: usize = 1024;
const RECORDS_PER_PUT: usize = 100;
/// More puts than an 8 MiB disk can take: the loop ends with the disk full, or fails.
const PUTS_MAX: usize = 1_000;
/// A request that takes longer is a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const STREAM: &str = "full";

/// A tmpfs mounted for the test, unmounted when dropped.
struct TmpfsMount {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl TmpfsMount {
    /// Mounts a tmpfs, or says why it cannot.
    fn new() -> Result<TmpfsMount, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|error| format!("cannot run id: {error}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root".to_owned());
        }
        let parent = tempfile::tempdir().map_err(|error| error.to_string())?;
        let path = parent.path().join("mnt");
        std::fs::create_dir(&path).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", TMPFS_SIZE, "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(TmpfsMount {
            path,
            _parent: parent,
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_with_an_aws_error_keeps_reads_and_recovers() -> anyhow::Result<()>
{
    match TmpfsMount::new() {
        Ok(mount) => {
            println!("full disk: a real millrace on an 8 MiB tmpfs");
            real_full_disk(&mount.path).await
        }
        Err(reason) => {
            println!("full disk: no tmpfs ({reason}); the simulated disk instead");
            simulated_full_disk()
        }
    }
}

/// (shard, sequence number) -> data.
type Acked = BTreeMap<(String, String), String>;

/// The error code, message and HTTP status of a failed call; fails on success or on a
/// failure that never reached an answer from the server (a hang, a reset connection).
fn service_error<E, R>(result: Result<R, SdkError<E>>) -> anyhow::Result<(String, String, u16)>
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match result {
        Ok(value) => anyhow::bail!("expected an error, got {value:?}"),
        Err(SdkError::ServiceError(context)) => {
            let status = context.raw().status().as_u16();
            let error = context.err();
            Ok((
                error.code().unwrap_or_default().to_owned(),
                error.message().unwrap_or_default().to_owned(),
                status,
            ))
        }
        Err(other) => anyhow::bail!("expected an AWS error answer, got {other:?}"),
    }
}

/// The acknowledged records of one put, or its failure as the SDK saw it.
type PutOutcome = Result<Vec<((String, String), String)>, SdkError<PutRecordsError>>;

async fn put_batch(client: &Client, n: usize) -> anyhow::Result<PutOutcome> {
    let data: Vec<String> = (0..RECORDS_PER_PUT)
        .map(|i| {
            let mut text = format!("put{n}-rec{i}-");
            text.extend(std::iter::repeat_n('d', RECORD_BYTES - text.len()));
            text
        })
        .collect();
    let entries = data
        .iter()
        .enumerate()
        .map(|(i, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("k{n}-{i}"))
                .data(Blob::new(data.clone()))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let result = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client
            .put_records()
            .stream_name(STREAM)
            .set_records(Some(entries))
            .send(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("PutRecords hung on a full disk"))?;
    Ok(result.map(|out| {
        out.records()
            .iter()
            .zip(data)
            .filter_map(|(entry, data)| {
                Some((
                    (
                        entry.shard_id()?.to_owned(),
                        entry.sequence_number()?.to_owned(),
                    ),
                    data,
                ))
            })
            .collect()
    }))
}

async fn read_everything(client: &Client) -> anyhow::Result<Acked> {
    let mut stored = Acked::new();
    let shards = client.list_shards().stream_name(STREAM).send().await?;
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(STREAM)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_owned);
        while let Some(current) = iterator {
            let page = client.get_records().shard_iterator(&current).send().await?;
            for record in page.records() {
                stored.insert(
                    (
                        shard.shard_id().to_owned(),
                        record.sequence_number().to_owned(),
                    ),
                    String::from_utf8_lossy(record.data().as_ref()).into_owned(),
                );
            }
            if page.records().is_empty() {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    Ok(stored)
}

async fn real_full_disk(mount: &Path) -> anyhow::Result<()> {
    let data_dir = mount.join("data");
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![0xf1u8; FILLER_BYTES])?;
    let mut server = Server::start_on(&data_dir, &["--shard-throughput", "unlimited"])?;
    let client = server.client();
    create_active_stream(&client, STREAM, 2).await?;

    // Fill the disk.
    let mut acked = Acked::new();
    let mut last_acked: Vec<(String, String)> = Vec::new();
    let mut refusal = None;
    for n in 0..PUTS_MAX {
        match put_batch(&client, n).await? {
            Ok(records) => {
                anyhow::ensure!(records.len() == RECORDS_PER_PUT, "partial PutRecords");
                last_acked = records.iter().map(|(key, _)| key.clone()).collect();
                acked.extend(records);
            }
            Err(error) => {
                refusal = Some(service_error(Err::<(), _>(error))?);
                break;
            }
        }
    }
    let Some((code, message, status)) = refusal else {
        anyhow::bail!("{PUTS_MAX} puts of 100 KiB never filled an 8 MiB disk");
    };
    println!(
        "full disk: refused after {} records: {status} {code}: {message}",
        acked.len()
    );
    anyhow::ensure!(!acked.is_empty(), "the disk was full before any write");
    anyhow::ensure!(
        code == "InternalFailureException" && status == 500 && !message.is_empty(),
        "a full disk answers {status} {code} ({message:?})"
    );
    // Still full: a write of the size just refused is refused the same way (not poisoned,
    // not hanging). (A smaller one may still fit in what is left.)
    for n in 0..3 {
        match put_batch(&client, PUTS_MAX + n).await? {
            Ok(records) => anyhow::bail!(
                "a disk that refused a put took the same put ({} records) right after",
                records.len()
            ),
            Err(error) => {
                let (code, _, status) = service_error(Err::<(), _>(error))?;
                anyhow::ensure!(
                    code == "InternalFailureException" && status == 500,
                    "while full, a write answers {status} {code}"
                );
            }
        }
    }

    // Reads keep working and serve exactly what was acknowledged (the last acknowledged
    // put may still wait for its copy into the segments).
    let summary = client
        .describe_stream_summary()
        .stream_name(STREAM)
        .send()
        .await?;
    anyhow::ensure!(summary.stream_description_summary().is_some());
    let stored = read_everything(&client).await?;
    for (key, data) in &stored {
        anyhow::ensure!(
            acked.get(key) == Some(data),
            "served {key:?}, which was not acknowledged so"
        );
    }
    for key in acked.keys() {
        anyhow::ensure!(
            stored.contains_key(key) || last_acked.contains(key),
            "acknowledged record {key:?} is not readable"
        );
    }

    // Space returns: writes resume at once, and everything acknowledged is readable.
    std::fs::remove_file(&filler)?;
    let records = put_batch(&client, PUTS_MAX)
        .await?
        .map_err(|error| anyhow::anyhow!("with space back, PutRecords fails: {error:?}"))?;
    acked.extend(records);
    anyhow::ensure!(read_everything(&client).await? == acked);

    // And it was all durable.
    server.kill();
    server.restart()?;
    let stored = read_everything(&server.client()).await?;
    anyhow::ensure!(
        stored == acked,
        "after kill -9: {} records stored, {} acknowledged",
        stored.len(),
        acked.len()
    );
    server.kill();
    Ok(())
}

/// The same scenario against the log on the simulated disk, plus the HTTP mapping.
fn simulated_full_disk() -> anyhow::Result<()> {
    use millrace_log::sim::{Crash, SimDisk};
    use millrace_log::{AppendRecord, Log, LogConfig, LogError, ManualClock};

    let disk = SimDisk::new(7);
    let clock = Arc::new(ManualClock::new(0));
    let mut config = LogConfig::new("/data");
    config.maintenance_interval_ms = None;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let log = Log::open_with_storage(config.clone(), clock.clone(), disk.storage())?;
    log.create_log(1)?;
    disk.set_capacity(Some(disk.used_bytes() + 64 * 1024));
    let mut acked = Vec::new();
    let refusal = loop {
        let payload = bytes_of(acked.len());
        let records = vec![AppendRecord {
            log_id: 1,
            payload: payload.clone(),
        }];
        match runtime.block_on(log.append(records)) {
            Ok(appended) => acked.push((appended[0].offset, payload)),
            Err(error) => break error,
        }
        anyhow::ensure!(acked.len() < 10_000, "the simulated disk never filled");
    };
    anyhow::ensure!(
        matches!(refusal, LogError::StorageFull { .. }),
        "a full disk refuses with StorageFull, not {refusal:?}"
    );
    let (kind, message) = millrace_streams::Error::Log(refusal).to_aws();
    anyhow::ensure!(
        kind == millrace_wire::ErrorKind::InternalFailureException
            && kind.http_status() == 500
            && message.is_some_and(|message| !message.is_empty()),
        "a full disk maps to {kind:?}"
    );
    anyhow::ensure!(
        matches!(log.checkpoint(), Err(LogError::StorageFull { .. })),
        "still full, and not poisoned"
    );
    let read = log.read(1, 0, usize::MAX, usize::MAX)?;
    anyhow::ensure!(read.records.len() + 1 >= acked.len(), "reads keep working");
    disk.set_capacity(None);
    log.maintain()?;
    let payload = bytes_of(acked.len());
    let appended = runtime.block_on(log.append(vec![AppendRecord {
        log_id: 1,
        payload: payload.clone(),
    }]))?;
    acked.push((appended[0].offset, payload));
    drop(log);
    disk.crash(Crash::PowerLoss);
    let log = Log::open_with_storage(config, clock, disk.storage())?;
    let stored: Vec<(u64, bytes::Bytes)> = log
        .read(1, 0, usize::MAX, usize::MAX)?
        .records
        .into_iter()
        .map(|record| (record.offset, record.payload))
        .collect();
    anyhow::ensure!(stored == acked, "everything acknowledged survives");
    Ok(())
}

fn bytes_of(n: usize) -> bytes::Bytes {
    let mut text = format!("record-{n}-");
    text.extend(std::iter::repeat_n('p', 1000));
    bytes::Bytes::from(text)
}
