//! Durability: a writer under load, `kill -9` of the server, restart on the same data
//! directory, and every acknowledged record is there, in order, with its sequence number.
//! Also a clean SIGTERM shutdown, and a torn tail (a file truncated mid-record) recovered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use millrace_sdk_tests::{Server, create_active_stream};

/// (shard id, sequence number) → data, for every acknowledged record.
type Acked = Arc<Mutex<Vec<(String, String, String)>>>;

async fn read_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> anyhow::Result<BTreeMap<String, Vec<(String, String)>>> {
    let mut out = BTreeMap::new();
    let shards = client.list_shards().stream_name(stream).send().await?;
    for shard in shards.shards() {
        let mut it = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_string);
        let mut records = Vec::new();
        while let Some(iterator) = it {
            let page = client
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await?;
            if page.records().is_empty() {
                break;
            }
            for record in page.records() {
                records.push((
                    record.sequence_number().to_string(),
                    String::from_utf8_lossy(record.data().as_ref()).into_owned(),
                ));
            }
            it = page.next_shard_iterator().map(str::to_string);
        }
        out.insert(shard.shard_id().to_string(), records);
    }
    Ok(out)
}

fn check_acked_present(
    acked: &[(String, String, String)],
    stored: &BTreeMap<String, Vec<(String, String)>>,
) {
    // Per shard, the acknowledged records appear in acknowledgement order with their
    // sequence numbers; nothing acknowledged is missing.
    let mut by_shard: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (shard, seq, data) in acked {
        by_shard.entry(shard).or_default().push((seq, data));
    }
    for (shard, mut expected) in by_shard {
        // Concurrent writers learn of their acknowledgements in any order; the order that
        // must hold is the sequence numbers' (equal-length decimal strings).
        expected.sort();
        let records = stored.get(shard).cloned().unwrap_or_default();
        for pair in records.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "stored records of {shard} out of sequence order"
            );
        }
        let index: std::collections::HashMap<&str, (usize, &str)> = records
            .iter()
            .enumerate()
            .map(|(i, (seq, data))| (seq.as_str(), (i, data.as_str())))
            .collect();
        let mut last = None;
        for (seq, data) in expected {
            let Some(&(position, stored_data)) = index.get(seq) else {
                panic!("acknowledged record {seq} ({data}) of {shard} is missing after the crash");
            };
            assert_eq!(stored_data, data, "record {seq} changed");
            if let Some(last) = last {
                assert!(position > last, "record {seq} is out of order");
            }
            last = Some(position);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() -> anyhow::Result<()> {
    let mut server = Server::start(&["--shard-throughput", "unlimited"])?;
    let client = server.client();
    create_active_stream(&client, "s", 4).await?;
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = client.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let entries = (0..50)
                    .map(|i| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(format!("w{writer}-{}", (n + i) % 17))
                            .data(Blob::new(format!("w{writer}-{}", n + i)))
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(anyhow::Error::from)?;
                let result = client
                    .put_records()
                    .stream_name("s")
                    .set_records(Some(entries))
                    .send()
                    .await;
                let Ok(out) = result else {
                    // The server is gone: stop.
                    return anyhow::Ok(());
                };
                let mut acked = acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                for (i, entry) in out.records().iter().enumerate() {
                    if let (Some(shard), Some(seq)) = (entry.shard_id(), entry.sequence_number()) {
                        acked.push((
                            shard.to_string(),
                            seq.to_string(),
                            format!("w{writer}-{}", n + i as u64),
                        ));
                    }
                }
                n += 50;
            }
        }));
    }
    // Let the writers get going, then kill the server in the middle of the load.
    millrace_sdk_tests::eventually(
        Duration::from_secs(30),
        "2,000 acknowledged records",
        || {
            let acked = acked.clone();
            async move { Ok((acked.lock().map(|a| a.len()).unwrap_or(0) >= 2000).then_some(())) }
        },
    )
    .await?;
    server.kill();
    for writer in writers {
        writer.await??;
    }
    let acked = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert!(acked.len() >= 2000);

    server.restart()?;
    let client = server.client();
    let stored = read_all(&client, "s").await?;
    check_acked_present(&acked, &stored);

    // And the log keeps going: new sequence numbers are above the old ones.
    let out = client
        .put_record()
        .stream_name("s")
        .partition_key("w0-1")
        .data(Blob::new("after"))
        .send()
        .await?;
    let last_before = stored
        .get(out.shard_id())
        .and_then(|records| records.last())
        .map(|(seq, _)| seq.clone())
        .unwrap_or_default();
    assert!(out.sequence_number() > last_before.as_str());
    Ok(())
}

#[tokio::test]
async fn sigterm_is_a_clean_shutdown() -> anyhow::Result<()> {
    let mut server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new("kept"))
        .send()
        .await?;
    assert_eq!(server.terminate()?, Some(0));
    server.restart()?;
    let stored = read_all(&server.client(), "s").await?;
    let records: Vec<&str> = stored.values().flatten().map(|(_, d)| d.as_str()).collect();
    assert_eq!(records, vec!["kept"]);
    Ok(())
}

/// Truncates the newest file (by name) with the given extension under `dir`, recursively,
/// removing its last `cut` bytes.
fn truncate_newest(
    dir: &std::path::Path,
    extension: &str,
    cut: u64,
) -> anyhow::Result<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == extension)
                && std::fs::metadata(&path)?.len() > cut
            {
                files.push(path);
            }
        }
    }
    files.sort();
    let newest = files
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no .{extension} file under {}", dir.display()))?;
    let len = if extension == "wal" {
        wal_end(&newest)?
    } else {
        std::fs::metadata(&newest)?.len()
    };
    let file = std::fs::OpenOptions::new().write(true).open(&newest)?;
    file.set_len(len - cut)?;
    Ok(newest)
}

/// Where a WAL segment's frames end (`[len u32][crc u32][len bytes]` each): with fsync on,
/// the log writes the WAL with direct IO and the file runs on in zeros to the end of its
/// last 4 KiB block.
fn wal_end(path: &std::path::Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(path)?;
    let mut position = 0usize;
    while let Some(len) = bytes
        .get(position..position + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    {
        if len == 0 || position + 8 + len > bytes.len() {
            break;
        }
        position += 8 + len;
    }
    Ok(position as u64)
}

#[tokio::test]
async fn torn_tail_is_truncated_and_the_rest_served() -> anyhow::Result<()> {
    let mut server = Server::start(&[])?;
    let client = server.client();
    create_active_stream(&client, "s", 1).await?;
    for i in 0..10 {
        client
            .put_record()
            .stream_name("s")
            .partition_key("k")
            .data(Blob::new(format!("record-{i}-{}", "x".repeat(100))))
            .send()
            .await?;
    }
    server.kill();
    // Tear the last record in both the WAL and the segment: 30 bytes into a ~140-byte frame.
    truncate_newest(&server.data_dir.join("log"), "wal", 30)?;
    truncate_newest(&server.data_dir.join("log"), "seg", 30)?;
    server.restart()?;
    let client = server.client();
    let stored = read_all(&client, "s").await?;
    let records: Vec<String> = stored.values().flatten().map(|(_, d)| d.clone()).collect();
    assert_eq!(
        records.len(),
        9,
        "the torn record is gone, the nine before it are served"
    );
    for (i, data) in records.iter().enumerate() {
        assert_eq!(data, &format!("record-{i}-{}", "x".repeat(100)));
    }
    client
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(Blob::new("new"))
        .send()
        .await?;
    let stored = read_all(&client, "s").await?;
    assert_eq!(stored.values().flatten().count(), 10);
    Ok(())
}
