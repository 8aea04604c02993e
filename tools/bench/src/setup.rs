//! Stream lifecycle around a workload, and the small shared pieces workloads use.
//!
//! Streams get unique names (`millrace-bench-<workload>-<pid>-<millis>-<n>`), are waited on
//! until ACTIVE, and are recorded in [`Ctx`] so they are deleted after the run, also when the
//! workload failed (unless `--keep`). Also here: the deterministic random source for
//! partition keys, and the record payload that carries its send time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::api::{Connection, Endpoint, body, response};

/// How often a stream's status is polled while it is CREATING.
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What every workload needs: where to go and what to clean up.
pub struct Ctx {
    pub endpoint: Endpoint,
    pub keep: bool,
    /// The server process, when `--server-pid` was given (for its CPU time).
    pub server_pid: Option<u32>,
    name_prefix: String,
    created: Mutex<Vec<String>>,
}

impl Ctx {
    pub fn new(endpoint_url: &str, keep: bool, workload: &str) -> anyhow::Result<Ctx> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Ok(Ctx {
            endpoint: Endpoint::parse(endpoint_url)?,
            keep,
            server_pid: None,
            name_prefix: format!("millrace-bench-{workload}-{}-{millis}", std::process::id()),
            created: Mutex::new(Vec::new()),
        })
    }

    /// CPU seconds the server has used so far (`None` without `--server-pid`).
    pub fn server_cpu_s(&self) -> Option<f64> {
        crate::rss::cpu_seconds(self.server_pid?)
    }

    pub fn connection(&self) -> Connection {
        Connection::new(&self.endpoint)
    }

    fn remember(&self, name: &str) {
        if let Ok(mut created) = self.created.lock() {
            created.push(name.to_owned());
        }
    }

    /// Create a stream with a fresh name and wait until it is ACTIVE.
    pub async fn create_stream(
        &self,
        connection: &mut Connection,
        tag: &str,
        shard_count: u32,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let name = format!("{}-{tag}", self.name_prefix);
        connection
            .call("CreateStream", body::create_stream(&name, shard_count))
            .await
            .with_context(|| format!("CreateStream {name} with {shard_count} shards"))?;
        self.remember(&name);
        wait_active(connection, &name, timeout).await?;
        Ok(name)
    }

    /// Delete every stream this run created (unless `--keep`); failures are reported, not
    /// fatal.
    pub async fn cleanup(&self) -> Vec<String> {
        if self.keep {
            return Vec::new();
        }
        let names = self
            .created
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let mut connection = self.connection();
        let mut problems = Vec::new();
        for name in names {
            if let Err(error) = connection
                .call("DeleteStream", body::delete_stream(&name))
                .await
            {
                problems.push(format!("DeleteStream {name}: {error}"));
            }
        }
        problems
    }
}

/// Poll DescribeStreamSummary until the stream is ACTIVE; returns its ARN.
pub async fn wait_active(
    connection: &mut Connection,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let summary: response::StreamSummary = connection
            .call_json("DescribeStreamSummary", body::stream_name(name))
            .await
            .with_context(|| format!("DescribeStreamSummary {name}"))?;
        let summary = summary.stream_description_summary;
        if summary.stream_status == "ACTIVE" {
            return Ok(summary.stream_arn);
        }
        if Instant::now() > deadline {
            bail!(
                "stream {name} still {} after {timeout:?}",
                summary.stream_status
            );
        }
        tokio::time::sleep(STATUS_POLL_INTERVAL).await;
    }
}

/// The open shards of a stream, every page of ListShards.
pub async fn open_shards(
    connection: &mut Connection,
    name: &str,
) -> anyhow::Result<Vec<response::Shard>> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    // Bounded: 10,000 pages of 1,000 shards is far past any stream this tool makes.
    for _ in 0..10_000 {
        let page: response::ListShards = connection
            .call_json("ListShards", body::list_shards(name, next_token.as_deref()))
            .await
            .with_context(|| format!("ListShards {name}"))?;
        shards.extend(
            page.shards
                .into_iter()
                .filter(|s| s.sequence_number_range.ending_sequence_number.is_none()),
        );
        match page.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => return Ok(shards),
        }
    }
    bail!("ListShards {name}: too many pages")
}

pub async fn shard_iterator(
    connection: &mut Connection,
    stream: &str,
    shard_id: &str,
    iterator_type: &str,
) -> anyhow::Result<String> {
    let out: response::ShardIterator = connection
        .call_json(
            "GetShardIterator",
            body::get_shard_iterator(stream, shard_id, iterator_type, None),
        )
        .await
        .with_context(|| format!("GetShardIterator {stream} {shard_id} {iterator_type}"))?;
    Ok(out.shard_iterator)
}

/// SplitMix64: a tiny, seeded, good-enough generator for partition keys and sampling.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A partition key that spreads uniformly over the shards.
    pub fn partition_key(&mut self) -> String {
        format!("pk-{:016x}", self.next_u64())
    }
}

/// The bytes of a record that carries when it was sent and its number: 8 bytes of send time
/// (`latency::now_ns`, little-endian), 8 bytes of sequence, then filler up to `size`.
pub fn timed_record(sent_ns: u64, seq: u64, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size.max(16));
    data.extend_from_slice(&sent_ns.to_le_bytes());
    data.extend_from_slice(&seq.to_le_bytes());
    data.resize(size.max(16), b'x');
    data
}

/// The send time in a record written by [`timed_record`].
pub fn sent_ns_of(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_records_round_trip() {
        let data = timed_record(123_456_789, 42, 100);
        assert_eq!(data.len(), 100);
        assert_eq!(sent_ns_of(&data), Some(123_456_789));
        assert_eq!(timed_record(1, 2, 3).len(), 16);
        assert_eq!(sent_ns_of(b"short"), None);
    }

    #[test]
    fn rng_is_seeded_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        assert!((0..1000).all(|_| a.below(10) < 10));
        assert_ne!(a.partition_key(), a.partition_key());
    }
}
