//! Operator conveniences that talk to a running server over its Kinesis API:
//! `millrace streams` (list), `millrace tail STREAM` (follow records, like kcat) and
//! `millrace put STREAM` (one record per line of stdin).
//!
//! Requests carry a placeholder signature, which development mode accepts; a server with
//! authentication configured refuses them (use the AWS CLI there).

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

/// Records per PutRecords call (AWS's limit).
const PUT_BATCH_RECORDS_MAX: usize = 500;
/// Bytes of data per PutRecords call, under AWS's 10 MiB limit per call.
const PUT_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Shards `tail` follows at most.
const TAIL_SHARDS_MAX: usize = 1024;
/// Pause between rounds of GetRecords when nothing new arrived (5 calls a second per shard
/// is AWS's limit).
const TAIL_IDLE_MS: u64 = 250;
/// Pause between rounds that returned records.
const TAIL_BUSY_MS: u64 = 200;
const THROTTLED: &str = "ProvisionedThroughputExceededException";

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// The server's endpoint URL.
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    pub endpoint: String,
    /// The region to act in.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    pub stream: String,
    /// Start at the oldest record rather than at the newest.
    #[arg(long)]
    pub from_start: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Print the partition key and sequence number before each record.
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    pub stream: String,
    /// Partition key of every record [default: the line number].
    #[arg(long)]
    pub partition_key: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

struct Client {
    http: reqwest::Client,
    endpoint: String,
    region: String,
}

impl Client {
    fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            endpoint: args.endpoint.trim_end_matches('/').to_string(),
            region: args.region.clone(),
        })
    }

    async fn call(&self, operation: &str, body: Value) -> anyhow::Result<Value> {
        let date = "20260101T000000Z";
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential=millrace-cli/20260101/{}/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
            self.region
        );
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("Kinesis_20131202.{operation}"))
            .header("x-amz-date", date)
            .header("authorization", authorization)
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.endpoint))?;
        let status = response.status();
        let text = response.text().await.context("cannot read the answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let kind = value
                .get("__type")
                .and_then(Value::as_str)
                .unwrap_or("error");
            let message = value
                .get("message")
                .or_else(|| value.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            bail!("{operation}: {kind}: {message}");
        }
        Ok(value)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `millrace streams`: one line per stream: name, status, open shards, mode.
pub fn streams(args: ClientArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = Client::new(&args)?;
        let mut names: Vec<String> = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let body = match &next_token {
                Some(token) => json!({"NextToken": token}),
                None => json!({}),
            };
            let page = client.call("ListStreams", body).await?;
            names.extend(
                page.get("StreamNames")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string),
            );
            next_token = page
                .get("NextToken")
                .and_then(Value::as_str)
                .map(str::to_string);
            let more = page.get("HasMoreStreams").and_then(Value::as_bool) == Some(true);
            if !more || next_token.is_none() {
                break;
            }
        }
        let mut out = std::io::stdout().lock();
        for name in names {
            let summary = client
                .call("DescribeStreamSummary", json!({"StreamName": name}))
                .await?;
            let s = summary
                .get("StreamDescriptionSummary")
                .unwrap_or(&Value::Null);
            let field = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
            writeln!(
                out,
                "{name}\t{}\t{} shards\t{}",
                field("StreamStatus").as_str().unwrap_or("?"),
                field("OpenShardCount"),
                field("StreamModeDetails")
                    .get("StreamMode")
                    .and_then(Value::as_str)
                    .unwrap_or("PROVISIONED")
            )?;
        }
        Ok(())
    })
}

/// `millrace put STREAM`: one record per stdin line, in PutRecords batches; failed records
/// (throttled) are sent again.
pub fn put(args: PutArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = Client::new(&args.client)?;
        let stdin = std::io::stdin();
        let mut batch: Vec<Value> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut n_put = 0u64;
        for (line_idx, line) in stdin.lock().lines().enumerate() {
            let line = line.context("cannot read stdin")?;
            let key = args
                .partition_key
                .clone()
                .unwrap_or_else(|| line_idx.to_string());
            batch_bytes += line.len();
            batch.push(json!({
                "Data": base64::engine::general_purpose::STANDARD.encode(line.as_bytes()),
                "PartitionKey": key,
            }));
            if batch.len() == PUT_BATCH_RECORDS_MAX || batch_bytes >= PUT_BATCH_BYTES_MAX {
                n_put += put_batch(&client, &args.stream, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            n_put += put_batch(&client, &args.stream, batch).await?;
        }
        eprintln!("put {n_put} records into {}", args.stream);
        Ok(())
    })
}

async fn put_batch(client: &Client, stream: &str, mut records: Vec<Value>) -> anyhow::Result<u64> {
    let mut n_put = 0u64;
    // Bounded: throttled records are retried at most this many times, with a pause.
    for attempt in 0..20u64 {
        let answer = client
            .call(
                "PutRecords",
                json!({"StreamName": stream, "Records": records}),
            )
            .await?;
        let results = answer
            .get("Records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut failed = Vec::new();
        for (record, result) in records.into_iter().zip(results) {
            if result.get("ErrorCode").is_some() {
                failed.push(record);
            } else {
                n_put += 1;
            }
        }
        if failed.is_empty() {
            return Ok(n_put);
        }
        records = failed;
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
    }
    bail!("{} records were refused again and again", records.len())
}

/// A shard being followed: its id and next iterator.
struct Followed {
    shard_id: String,
    iterator: String,
}

/// `millrace tail STREAM`: prints records as they arrive, from every open shard, following
/// resharding into child shards.
pub fn tail(args: TailArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = Client::new(&args.client)?;
        let shards = client
            .call(
                "ListShards",
                json!({"StreamName": args.stream, "ShardFilter": {"Type": "AT_LATEST"}}),
            )
            .await?;
        let start = if args.from_start {
            "TRIM_HORIZON"
        } else {
            "LATEST"
        };
        let mut followed = Vec::new();
        let shard_ids: Vec<String> = if args.from_start {
            let all = client
                .call("ListShards", json!({"StreamName": args.stream}))
                .await?;
            roots(&all)
        } else {
            shard_list(&shards).iter().map(|s| s.0.clone()).collect()
        };
        for shard_id in shard_ids.into_iter().take(TAIL_SHARDS_MAX) {
            let iterator = shard_iterator(&client, &args.stream, &shard_id, start).await?;
            followed.push(Followed { shard_id, iterator });
        }
        let mut n_printed = 0u64;
        let mut out = std::io::stdout().lock();
        while !followed.is_empty() {
            let mut any = false;
            let mut next_round = Vec::new();
            for shard in followed {
                let answer = match client
                    .call(
                        "GetRecords",
                        json!({"ShardIterator": shard.iterator, "Limit": 1000}),
                    )
                    .await
                {
                    Ok(answer) => answer,
                    Err(error) if error.to_string().contains(THROTTLED) => {
                        // Over the shard's read limit: the same iterator next round.
                        next_round.push(shard);
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                for record in answer
                    .get("Records")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    any = true;
                    let data = record
                        .get("Data")
                        .and_then(Value::as_str)
                        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                        .unwrap_or_default();
                    if args.verbose {
                        write!(
                            out,
                            "{}\t{}\t{}\t",
                            shard.shard_id,
                            record
                                .get("PartitionKey")
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                            record
                                .get("SequenceNumber")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        )?;
                    }
                    out.write_all(&data)?;
                    out.write_all(b"\n")?;
                    n_printed += 1;
                    if args.limit.is_some_and(|limit| n_printed >= limit) {
                        out.flush()?;
                        return Ok(());
                    }
                }
                out.flush()?;
                match answer.get("NextShardIterator").and_then(Value::as_str) {
                    Some(iterator) => next_round.push(Followed {
                        shard_id: shard.shard_id,
                        iterator: iterator.to_string(),
                    }),
                    None => {
                        // The shard closed: follow its children from their start.
                        for child in answer
                            .get("ChildShards")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let Some(child_id) = child.get("ShardId").and_then(Value::as_str)
                            else {
                                continue;
                            };
                            if next_round.iter().any(|f: &Followed| f.shard_id == child_id) {
                                continue;
                            }
                            let iterator =
                                shard_iterator(&client, &args.stream, child_id, "TRIM_HORIZON")
                                    .await?;
                            next_round.push(Followed {
                                shard_id: child_id.to_string(),
                                iterator,
                            });
                        }
                    }
                }
            }
            followed = next_round;
            // AWS allows 5 GetRecords calls a second per shard.
            let pause_ms = if any { TAIL_BUSY_MS } else { TAIL_IDLE_MS };
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        Ok(())
    })
}

/// (shard id, parent shard id) of every shard in a ListShards answer.
fn shard_list(answer: &Value) -> Vec<(String, Option<String>)> {
    answer
        .get("Shards")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let id = s.get("ShardId")?.as_str()?.to_string();
            let parent = s
                .get("ParentShardId")
                .and_then(Value::as_str)
                .map(str::to_string);
            Some((id, parent))
        })
        .collect()
}

/// Shards whose parent is not in the list (where reading from the start begins).
fn roots(answer: &Value) -> Vec<String> {
    let shards = shard_list(answer);
    shards
        .iter()
        .filter(|(_, parent)| {
            parent
                .as_ref()
                .is_none_or(|p| !shards.iter().any(|(id, _)| id == p))
        })
        .map(|(id, _)| id.clone())
        .collect()
}

async fn shard_iterator(
    client: &Client,
    stream: &str,
    shard_id: &str,
    kind: &str,
) -> anyhow::Result<String> {
    let answer = client
        .call(
            "GetShardIterator",
            json!({"StreamName": stream, "ShardId": shard_id, "ShardIteratorType": kind}),
        )
        .await?;
    answer
        .get("ShardIterator")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("GetShardIterator answered no iterator")
}
