//! Crash loop: a real `millrace` under mixed load (PutRecords, PutRecord, GetRecords,
//! CreateStream, DeleteStream, SplitShard, MergeShards, retention changes) is killed with
//! SIGKILL at a random moment, restarted on the same data directory, and checked, cycle
//! after cycle:
//!
//! - every acknowledged record is where it was acknowledged (shard, sequence number, data);
//!   a record whose put was not acknowledged may be there, but only with the data sent;
//! - sequence numbers strictly increase within a shard, and a child's are above its
//!   parents';
//! - lineage is intact: every parent and adjacent parent is listed, the open shards tile
//!   the hash key space, a split or merge that returned OK is there;
//! - no stream is half-created: a CreateStream that returned OK is there with all its
//!   shards, one that was interrupted is there whole or not at all; a DeleteStream that
//!   returned OK is gone;
//! - a retention change that returned OK (and any interrupted one) is what the stream says.
//!
//! `MILLRACE_CRASH_CYCLES` (default 10) sets the cycles, `MILLRACE_CRASH_SEED` replays the
//! load and the kill points (the seed is printed; process timing still varies). The long
//! soak and its figures are in docs/reliability.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard, ShardIteratorType, StreamStatus};
use millrace_log::sim::SimRng;
use millrace_sdk_tests::Server;

const DEFAULT_CYCLES: u64 = 10;
const STREAMS_LIVE_MAX: usize = 4;
const OPEN_SHARDS_MAX: usize = 6;
const HASH_KEY_MAX: u128 = u128::MAX;
const KILL_AFTER_MS_MIN: u64 = 30;
const KILL_AFTER_MS_MAX: u64 = 700;
/// Bounds one request, so a hang is a failure and not a stuck test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existence {
    /// CreateStream returned OK, no DeleteStream did.
    Created,
    /// CreateStream was interrupted: there whole, or not at all.
    MaybeCreated,
    /// DeleteStream was interrupted.
    MaybeDeleted,
}

#[derive(Debug)]
struct StreamModel {
    existence: Existence,
    shard_count: i32,
    /// Sequence number -> (shard id, data) of every acknowledged record.
    acked: BTreeMap<Seq, (String, String)>,
    /// Data of puts that were not acknowledged (they may be stored).
    attempted: BTreeSet<String>,
    /// Shards a split that returned OK closed.
    split_parents: Vec<String>,
    /// Pairs a merge that returned OK closed.
    merged: Vec<(String, String)>,
    /// Retention hours the stream may have (the acknowledged one, and interrupted changes).
    retention_hours: BTreeSet<i32>,
}

impl StreamModel {
    fn new(existence: Existence, shard_count: i32) -> StreamModel {
        StreamModel {
            existence,
            shard_count,
            acked: BTreeMap::new(),
            attempted: BTreeSet::new(),
            split_parents: Vec::new(),
            merged: Vec::new(),
            retention_hours: BTreeSet::from([24]),
        }
    }
}

#[derive(Default)]
struct Model {
    streams: BTreeMap<String, StreamModel>,
    /// Streams a DeleteStream that returned OK removed: never to be found again.
    deleted: BTreeSet<String>,
    n_acked_records: u64,
    n_ops_ok: u64,
}

type Shared = Arc<Mutex<Model>>;

fn lock(model: &Shared) -> std::sync::MutexGuard<'_, Model> {
    match model.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A sequence number: 56 decimal digits in today's layout, more than a `u128` holds. Kept as
/// its high and low 30-digit halves, so that the derived order is the numeric order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seq(u128, u128);

const SEQ_HALF_DIGITS: usize = 30;

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            write!(f, "{}", self.1)
        } else {
            write!(f, "{}{:030}", self.0, self.1)
        }
    }
}

fn parse_seq(seq: &str) -> anyhow::Result<Seq> {
    let bad = || anyhow::anyhow!("sequence number {seq:?} is not a decimal of at most 60 digits");
    if seq.is_empty() || seq.len() > 2 * SEQ_HALF_DIGITS || !seq.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let split = seq.len().saturating_sub(SEQ_HALF_DIGITS);
    let high = if split == 0 {
        0
    } else {
        seq[..split].parse().map_err(|_| bad())?
    };
    let low = seq[split..].parse().map_err(|_| bad())?;
    Ok(Seq(high, low))
}

fn parse_key(key: &str) -> anyhow::Result<u128> {
    key.parse()
        .map_err(|_| anyhow::anyhow!("hash key {key:?} is not a decimal u128"))
}

/// One request under the timeout: `None` if it timed out (a hang is reported by the
/// caller only where the server is alive).
async fn timed<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, future).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop() -> anyhow::Result<()> {
    let n_cycles = std::env::var("MILLRACE_CRASH_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let seed = std::env::var("MILLRACE_CRASH_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(0)
        });
    println!("crash loop: seed {seed}, {n_cycles} cycles (replay with MILLRACE_CRASH_SEED={seed})");
    let mut rng = SimRng::new(seed);
    let mut server = Server::start(&["--shard-throughput", "unlimited"])?;
    let model: Shared = Arc::new(Mutex::new(Model::default()));
    let started = Instant::now();
    for n in 0..2 {
        let name = format!("s0-{n}");
        create(&server.client(), &model, &name, 2).await;
    }
    for cycle in 0..n_cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let client = server.client();
        let mut tasks = Vec::new();
        for task in 0..3u64 {
            let (client, model, stop) = (client.clone(), model.clone(), stop.clone());
            let task_seed = rng.next_u64();
            tasks.push(tokio::spawn(async move {
                writer(client, model, stop, cycle, task, task_seed).await
            }));
        }
        {
            let (client, model, stop) = (client.clone(), model.clone(), stop.clone());
            let task_seed = rng.next_u64();
            tasks.push(tokio::spawn(async move {
                controller(client, model, stop, cycle, task_seed).await
            }));
        }
        {
            let (client, model, stop) = (client.clone(), model.clone(), stop.clone());
            let task_seed = rng.next_u64();
            tasks.push(tokio::spawn(async move {
                reader(client, model, stop, task_seed).await
            }));
        }
        // The kill point: a moment the seed picks, whatever the tasks are doing then.
        let kill_after_ms = rng.range(KILL_AFTER_MS_MIN, KILL_AFTER_MS_MAX);
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.await??;
        }
        server.restart()?;
        verify(&server.client(), &model)
            .await
            .map_err(|error| anyhow::anyhow!("cycle {cycle} (seed {seed}): {error:#}"))?;
    }
    let model = lock(&model);
    println!(
        "crash loop: {n_cycles} cycles, {} acknowledged records checked after every restart, \
         {} control operations acknowledged, {:.1} s",
        model.n_acked_records,
        model.n_ops_ok,
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(model.n_acked_records > 0, "nothing was acknowledged");
    Ok(())
}

/// CreateStream and wait until ACTIVE; the outcome goes into the model.
async fn create(client: &Client, model: &Shared, name: &str, shard_count: i32) {
    lock(model).streams.insert(
        name.to_owned(),
        StreamModel::new(Existence::MaybeCreated, shard_count),
    );
    let result = timed(
        client
            .create_stream()
            .stream_name(name)
            .shard_count(shard_count)
            .send(),
    )
    .await;
    if let Some(Ok(_)) = result {
        let mut model = lock(model);
        if let Some(stream) = model.streams.get_mut(name) {
            stream.existence = Existence::Created;
        }
        model.n_ops_ok += 1;
    }
}

fn live_streams(model: &Shared) -> Vec<String> {
    lock(model)
        .streams
        .iter()
        .filter(|(_, stream)| stream.existence == Existence::Created)
        .map(|(name, _)| name.clone())
        .collect()
}

fn pick<T: Clone>(rng: &mut SimRng, items: &[T]) -> Option<T> {
    items.get(rng.below(items.len() as u64) as usize).cloned()
}

async fn writer(
    client: Client,
    model: Shared,
    stop: Arc<AtomicBool>,
    cycle: u64,
    task: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = SimRng::new(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(stream) = pick(&mut rng, &live_streams(&model)) else {
            tokio::task::yield_now().await;
            continue;
        };
        let n_records = rng.range(1, 25);
        let data: Vec<String> = (0..n_records)
            .map(|i| {
                let filler = "x".repeat(rng.below(200) as usize);
                format!("c{cycle}-t{task}-n{}-{filler}", n + i)
            })
            .collect();
        n += n_records;
        {
            let mut model = lock(&model);
            if let Some(stream) = model.streams.get_mut(&stream) {
                stream.attempted.extend(data.iter().cloned());
            }
        }
        if n_records == 1 {
            let result = timed(
                client
                    .put_record()
                    .stream_name(&stream)
                    .partition_key(format!("k{}", rng.below(1000)))
                    .data(Blob::new(data[0].clone()))
                    .send(),
            )
            .await;
            if let Some(Ok(out)) = result {
                let seq = parse_seq(out.sequence_number())?;
                ack(&model, &stream, seq, out.shard_id(), &data[0]);
            }
            continue;
        }
        let entries = data
            .iter()
            .map(|data| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("k{}", rng.below(1000)))
                    .data(Blob::new(data.clone()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let result = timed(
            client
                .put_records()
                .stream_name(&stream)
                .set_records(Some(entries))
                .send(),
        )
        .await;
        if let Some(Ok(out)) = result {
            anyhow::ensure!(
                out.records().len() == data.len(),
                "PutRecords answered {} entries for {}",
                out.records().len(),
                data.len()
            );
            for (entry, data) in out.records().iter().zip(&data) {
                if let (Some(shard), Some(seq)) = (entry.shard_id(), entry.sequence_number()) {
                    ack(&model, &stream, parse_seq(seq)?, shard, data);
                }
            }
        }
    }
    Ok(())
}

fn ack(model: &Shared, stream: &str, seq: Seq, shard: &str, data: &str) {
    let mut model = lock(model);
    model.n_acked_records += 1;
    if let Some(stream) = model.streams.get_mut(stream) {
        stream.attempted.remove(data);
        stream
            .acked
            .insert(seq, (shard.to_owned(), data.to_owned()));
    }
}

/// Creates and deletes streams, splits and merges shards, changes retention.
async fn controller(
    client: Client,
    model: Shared,
    stop: Arc<AtomicBool>,
    cycle: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = SimRng::new(seed);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let live = live_streams(&model);
        match rng.below(10) {
            0 | 1 if live.len() < STREAMS_LIVE_MAX => {
                n += 1;
                let shard_count = rng.range(1, 4) as i32;
                create(&client, &model, &format!("s{}-{n}", cycle + 1), shard_count).await;
            }
            2 if live.len() > 1 => {
                let Some(name) = pick(&mut rng, &live) else {
                    continue;
                };
                if let Some(stream) = lock(&model).streams.get_mut(&name) {
                    stream.existence = Existence::MaybeDeleted;
                }
                let result = timed(client.delete_stream().stream_name(&name).send()).await;
                if let Some(Ok(_)) = result {
                    let mut model = lock(&model);
                    model.streams.remove(&name);
                    model.deleted.insert(name);
                    model.n_ops_ok += 1;
                }
            }
            3..=5 => {
                let Some(name) = pick(&mut rng, &live) else {
                    continue;
                };
                reshard(&client, &model, &name, &mut rng).await?;
            }
            6 => {
                let Some(name) = pick(&mut rng, &live) else {
                    continue;
                };
                let hours = 24 + 24 * rng.below(7) as i32;
                let current = lock(&model)
                    .streams
                    .get(&name)
                    .and_then(|stream| stream.retention_hours.iter().next_back().copied())
                    .unwrap_or(24);
                if let Some(stream) = lock(&model).streams.get_mut(&name) {
                    stream.retention_hours.insert(hours);
                }
                let result = if hours >= current {
                    timed(
                        client
                            .increase_stream_retention_period()
                            .stream_name(&name)
                            .retention_period_hours(hours)
                            .send(),
                    )
                    .await
                    .map(|result| result.map(|_| ()).map_err(|error| error.to_string()))
                } else {
                    timed(
                        client
                            .decrease_stream_retention_period()
                            .stream_name(&name)
                            .retention_period_hours(hours)
                            .send(),
                    )
                    .await
                    .map(|result| result.map(|_| ()).map_err(|error| error.to_string()))
                };
                if let Some(Ok(())) = result {
                    let mut model = lock(&model);
                    model.n_ops_ok += 1;
                    if let Some(stream) = model.streams.get_mut(&name) {
                        stream.retention_hours = BTreeSet::from([hours]);
                    }
                }
            }
            _ => tokio::task::yield_now().await,
        }
    }
    Ok(())
}

/// Lists every shard of a stream (all pages).
async fn list_shards(client: &Client, name: &str) -> anyhow::Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(name),
        };
        let out = timed(request.send())
            .await
            .ok_or_else(|| anyhow::anyhow!("ListShards hung"))??;
        shards.extend(out.shards().iter().cloned());
        match out.next_token() {
            Some(next) => token = Some(next.to_owned()),
            None => return Ok(shards),
        }
    }
}

fn is_open(shard: &Shard) -> bool {
    shard
        .sequence_number_range()
        .is_none_or(|range| range.ending_sequence_number().is_none())
}

fn hash_range(shard: &Shard) -> anyhow::Result<(u128, u128)> {
    let range = shard
        .hash_key_range()
        .ok_or_else(|| anyhow::anyhow!("{} has no hash key range", shard.shard_id()))?;
    Ok((
        parse_key(range.starting_hash_key())?,
        parse_key(range.ending_hash_key())?,
    ))
}

async fn reshard(
    client: &Client,
    model: &Shared,
    name: &str,
    rng: &mut SimRng,
) -> anyhow::Result<()> {
    let Ok(shards) = list_shards(client, name).await else {
        return Ok(()); // the server is going down
    };
    let mut open: Vec<(u128, u128, String)> = Vec::new();
    for shard in shards.iter().filter(|shard| is_open(shard)) {
        let (start, end) = hash_range(shard)?;
        open.push((start, end, shard.shard_id().to_owned()));
    }
    open.sort();
    if open.len() < OPEN_SHARDS_MAX && (open.len() < 2 || rng.chance(500_000)) {
        let Some((start, end, shard)) = pick(rng, &open) else {
            return Ok(());
        };
        if end - start < 2 {
            return Ok(());
        }
        let at = start + (end - start) / 2 + 1;
        let result = timed(
            client
                .split_shard()
                .stream_name(name)
                .shard_to_split(&shard)
                .new_starting_hash_key(at.to_string())
                .send(),
        )
        .await;
        if let Some(Ok(_)) = result {
            let mut model = lock(model);
            model.n_ops_ok += 1;
            if let Some(stream) = model.streams.get_mut(name) {
                stream.split_parents.push(shard);
            }
        }
    } else if open.len() >= 2 {
        let first = rng.below(open.len() as u64 - 1) as usize;
        let (Some(left), Some(right)) = (open.get(first), open.get(first + 1)) else {
            return Ok(());
        };
        let (left, right) = (left.2.clone(), right.2.clone());
        let result = timed(
            client
                .merge_shards()
                .stream_name(name)
                .shard_to_merge(&left)
                .adjacent_shard_to_merge(&right)
                .send(),
        )
        .await;
        if let Some(Ok(_)) = result {
            let mut model = lock(model);
            model.n_ops_ok += 1;
            if let Some(stream) = model.streams.get_mut(name) {
                stream.merged.push((left, right));
            }
        }
    }
    Ok(())
}

/// Reads shards while the load runs; whatever it sees must be consistent with the model.
async fn reader(
    client: Client,
    model: Shared,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = SimRng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        let Some(name) = pick(&mut rng, &live_streams(&model)) else {
            tokio::task::yield_now().await;
            continue;
        };
        let Ok(shards) = list_shards(&client, &name).await else {
            continue;
        };
        let Some(shard) = pick(&mut rng, &shards) else {
            continue;
        };
        let Some(Ok(iterator)) = timed(
            client
                .get_shard_iterator()
                .stream_name(&name)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send(),
        )
        .await
        else {
            continue;
        };
        let Some(iterator) = iterator.shard_iterator() else {
            continue;
        };
        let Some(Ok(page)) = timed(client.get_records().shard_iterator(iterator).send()).await
        else {
            continue;
        };
        let model = lock(&model);
        let Some(stream) = model.streams.get(&name) else {
            continue;
        };
        for record in page.records() {
            let data = String::from_utf8_lossy(record.data().as_ref()).into_owned();
            let seq = parse_seq(record.sequence_number())?;
            check_record(stream, &name, shard.shard_id(), seq, &data)?;
        }
    }
    Ok(())
}

/// A stored record is the acknowledged one at its sequence number, or an unacknowledged
/// put's data.
fn check_record(
    stream: &StreamModel,
    name: &str,
    shard: &str,
    seq: Seq,
    data: &str,
) -> anyhow::Result<()> {
    match stream.acked.get(&seq) {
        Some((acked_shard, acked_data)) => {
            anyhow::ensure!(
                acked_shard == shard && acked_data == data,
                "{name}: {seq} holds {shard}/{data:.40}, acknowledged as {acked_shard}/{acked_data:.40}"
            );
        }
        None => {
            anyhow::ensure!(
                stream.attempted.contains(data),
                "{name}/{shard}: {seq} holds data never put (or stored twice): {data:.60}"
            );
        }
    }
    Ok(())
}

/// Every record of one shard, from the trim horizon to its end.
async fn read_shard(
    client: &Client,
    name: &str,
    shard: &str,
) -> anyhow::Result<Vec<(Seq, String)>> {
    let iterator = timed(
        client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send(),
    )
    .await
    .ok_or_else(|| anyhow::anyhow!("GetShardIterator hung"))??;
    let mut iterator = iterator.shard_iterator().map(str::to_owned);
    let mut records = Vec::new();
    while let Some(current) = iterator {
        let page = timed(
            client
                .get_records()
                .shard_iterator(&current)
                .limit(10_000)
                .send(),
        )
        .await
        .ok_or_else(|| anyhow::anyhow!("GetRecords hung"))??;
        for record in page.records() {
            records.push((
                parse_seq(record.sequence_number())?,
                String::from_utf8_lossy(record.data().as_ref()).into_owned(),
            ));
        }
        if page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0 {
            break;
        }
        iterator = page.next_shard_iterator().map(str::to_owned);
    }
    Ok(records)
}

/// After a restart: everything the model knows must hold.
async fn verify(client: &Client, model: &Shared) -> anyhow::Result<()> {
    let deleted: Vec<String> = lock(model).deleted.iter().cloned().collect();
    for name in deleted {
        let result = timed(client.describe_stream_summary().stream_name(&name).send())
            .await
            .ok_or_else(|| anyhow::anyhow!("DescribeStreamSummary hung"))?;
        anyhow::ensure!(
            result.is_err(),
            "{name} was deleted (DeleteStream returned OK) but is still there"
        );
    }
    let names: Vec<String> = lock(model).streams.keys().cloned().collect();
    for name in names {
        let summary = timed(client.describe_stream_summary().stream_name(&name).send())
            .await
            .ok_or_else(|| anyhow::anyhow!("DescribeStreamSummary hung"))?;
        let existence = lock(model).streams.get(&name).map(|s| s.existence);
        let summary = match (summary, existence) {
            (Ok(summary), _) => summary,
            (Err(error), Some(Existence::Created)) => {
                anyhow::bail!("{name} was created (CreateStream returned OK) but: {error:?}")
            }
            (Err(_), Some(Existence::MaybeCreated)) => {
                lock(model).streams.remove(&name);
                continue;
            }
            (Err(_), _) => {
                let mut model = lock(model);
                model.streams.remove(&name);
                model.deleted.insert(name);
                continue;
            }
        };
        let Some(summary) = summary.stream_description_summary() else {
            anyhow::bail!("{name}: no summary");
        };
        anyhow::ensure!(
            *summary.stream_status() == StreamStatus::Active,
            "{name} is {:?} after the restart",
            summary.stream_status()
        );
        let shards = list_shards(client, &name).await?;
        {
            let mut guard = lock(model);
            let Some(stream) = guard.streams.get_mut(&name) else {
                continue;
            };
            if stream.existence == Existence::MaybeCreated {
                // There, so whole: every shard it was created with, none split yet.
                anyhow::ensure!(
                    shards.len() == stream.shard_count as usize && shards.iter().all(is_open),
                    "{name}, created when the server died, is there with {} shards, not {}",
                    shards.len(),
                    stream.shard_count
                );
            }
            stream.existence = Existence::Created;
            let hours = summary.retention_period_hours();
            anyhow::ensure!(
                stream.retention_hours.contains(&hours),
                "{name}: retention {hours} h, expected one of {:?}",
                stream.retention_hours
            );
            stream.retention_hours = BTreeSet::from([hours]);
            check_lineage(&name, &shards, stream)?;
        }
        check_records(client, model, &name, &shards).await?;
    }
    Ok(())
}

fn check_lineage(name: &str, shards: &[Shard], stream: &StreamModel) -> anyhow::Result<()> {
    let ids: BTreeSet<&str> = shards.iter().map(|shard| shard.shard_id()).collect();
    for shard in shards {
        for parent in [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
            .into_iter()
            .flatten()
        {
            // Nothing expires here (no clock moves), so every parent is listed.
            anyhow::ensure!(
                ids.contains(parent),
                "{name}: parent {parent} of {} is missing",
                shard.shard_id()
            );
        }
    }
    let mut open: Vec<(u128, u128)> = Vec::new();
    for shard in shards.iter().filter(|shard| is_open(shard)) {
        open.push(hash_range(shard)?);
    }
    open.sort();
    let mut next = 0u128;
    for (idx, (start, end)) in open.iter().enumerate() {
        anyhow::ensure!(
            *start == next,
            "{name}: open shards leave a gap or overlap at {next} (next starts at {start})"
        );
        if idx + 1 == open.len() {
            anyhow::ensure!(*end == HASH_KEY_MAX, "{name}: open shards stop at {end}");
        } else {
            next = end + 1;
        }
    }
    anyhow::ensure!(!open.is_empty(), "{name}: no open shard");
    let closed: BTreeSet<&str> = shards
        .iter()
        .filter(|shard| !is_open(shard))
        .map(|shard| shard.shard_id())
        .collect();
    for parent in &stream.split_parents {
        anyhow::ensure!(
            closed.contains(parent.as_str()),
            "{name}: split of {parent} returned OK, but it is not closed"
        );
        let n_children = shards
            .iter()
            .filter(|shard| shard.parent_shard_id() == Some(parent.as_str()))
            .count();
        anyhow::ensure!(
            n_children == 2,
            "{name}: split of {parent} returned OK, {n_children} children"
        );
    }
    for (left, right) in &stream.merged {
        anyhow::ensure!(
            closed.contains(left.as_str()) && closed.contains(right.as_str()),
            "{name}: merge of {left} and {right} returned OK, but they are not closed"
        );
        anyhow::ensure!(
            shards
                .iter()
                .any(|shard| shard.parent_shard_id() == Some(left.as_str())
                    && shard.adjacent_parent_shard_id() == Some(right.as_str())),
            "{name}: merge of {left} and {right} returned OK, no child"
        );
    }
    Ok(())
}

async fn check_records(
    client: &Client,
    model: &Shared,
    name: &str,
    shards: &[Shard],
) -> anyhow::Result<()> {
    let mut stored: BTreeMap<String, Vec<(Seq, String)>> = BTreeMap::new();
    for shard in shards {
        let records = read_shard(client, name, shard.shard_id()).await?;
        for pair in records.windows(2) {
            anyhow::ensure!(
                pair[0].0 < pair[1].0,
                "{name}/{}: sequence numbers {} then {}",
                shard.shard_id(),
                pair[0].0,
                pair[1].0
            );
        }
        stored.insert(shard.shard_id().to_owned(), records);
    }
    // A child's sequence numbers are above its parents'.
    for shard in shards {
        let Some(child_first) = stored
            .get(shard.shard_id())
            .and_then(|records| records.first())
            .map(|(seq, _)| *seq)
        else {
            continue;
        };
        for parent in [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
            .into_iter()
            .flatten()
        {
            if let Some((parent_last, _)) = stored.get(parent).and_then(|records| records.last()) {
                anyhow::ensure!(
                    child_first > *parent_last,
                    "{name}: child {} starts at {child_first}, parent {parent} ends at {parent_last}",
                    shard.shard_id()
                );
            }
        }
    }
    let mut guard = lock(model);
    let Some(stream) = guard.streams.get_mut(name) else {
        return Ok(());
    };
    let mut found: BTreeMap<Seq, (&str, &str)> = BTreeMap::new();
    for (shard, records) in &stored {
        for (seq, data) in records {
            check_record(stream, name, shard, *seq, data)?;
            found.insert(*seq, (shard.as_str(), data.as_str()));
        }
    }
    for (seq, (shard, data)) in &stream.acked {
        let Some((found_shard, found_data)) = found.get(seq) else {
            anyhow::bail!("{name}: acknowledged record {seq} ({shard}, {data:.40}) is missing");
        };
        anyhow::ensure!(
            found_shard == shard && found_data == data,
            "{name}: acknowledged record {seq} moved or changed"
        );
    }
    // Records of interrupted puts that survived are durable now: from here on they are held
    // to the same standard as acknowledged ones.
    for (seq, (shard, data)) in found {
        if !stream.acked.contains_key(&seq) {
            stream.attempted.remove(data);
            stream
                .acked
                .insert(seq, (shard.to_owned(), data.to_owned()));
        }
    }
    Ok(())
}
