//! `millrace-bench floor`: the least a Kinesis endpoint can be on this machine, to measure
//! the workloads against. A hyper HTTP/1.1 server (the same stack as Millrace's) that
//! collects each request's body and answers with a fixed, valid answer for the operations
//! the load tool calls (CreateStream, DescribeStreamSummary, ListShards, PutRecord,
//! PutRecords with one entry per record of the request, GetShardIterator, GetRecords with
//! `Limit` records of 1 KiB, DeleteStream), with no parsing, no storage and no
//! authentication. Its stream has four shards, and PutRecords spreads the records over them
//! in turn, so `get-drain` drains four shards as it does against a server. With `--fsync
//! FILE` every body is appended to FILE by one writer thread that group-commits with
//! `fdatasync` before the answers go out, as a durable server must (`--fsync-copies 2`
//! appends each body twice, as a log with a WAL and segments writes every byte twice).
//!
//! What the load tool measures against it is the ceiling of this machine for that workload
//! with this client: the HTTP and loopback cost (and the fsync round trip) that any server
//! pays, so a server's figure can be read against it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::mpsc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:4568")]
    listen: SocketAddr,
    /// Append every request body to this file and fdatasync (group commit) before answering.
    #[arg(long)]
    fsync: Option<std::path::PathBuf>,
    /// With `--fsync`: append each body this many times (2 writes every byte twice, as a
    /// log with a WAL and segments does).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    fsync_copies: u32,
}

/// One body for the writer thread, and where to say it is durable.
type Append = (Bytes, oneshot::Sender<()>);

/// Appends what arrives, one `fdatasync` per group of whatever queued up meanwhile.
fn writer(mut file: std::fs::File, copies: u32, appends: mpsc::Receiver<Append>) {
    while let Ok(first) = appends.recv() {
        let mut group = vec![first];
        group.extend(appends.try_iter());
        let written = (0..copies)
            .try_for_each(|_| group.iter().try_for_each(|(body, _)| file.write_all(body)))
            .and_then(|()| file.sync_data());
        if let Err(error) = written {
            eprintln!("millrace-bench floor: cannot append: {error}");
            return;
        }
        for (_, done) in group {
            let _ = done.send(());
        }
    }
}

const SEQUENCE_NUMBER: &str = "49600000000000000000000000000000000000000000000000000000";

/// The floor's shards, as `ListShards` lists them.
const N_SHARDS: usize = 4;

/// Bytes of each record `GetRecords` returns (`get-drain`'s default record size).
const GET_RECORD_BYTES: usize = 1024;

/// A GetRecords answer of `limit` records, built once per limit and then served as is.
fn get_records_answer(limit: usize) -> Bytes {
    static ANSWERS: std::sync::Mutex<Vec<(usize, Bytes)>> = std::sync::Mutex::new(Vec::new());
    let mut answers = ANSWERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, answer)) = answers.iter().find(|(n, _)| *n == limit) {
        return answer.clone();
    }
    let data = "A".repeat(GET_RECORD_BYTES.div_ceil(3) * 4);
    let record = format!(
        r#"{{"SequenceNumber":"{SEQUENCE_NUMBER}","ApproximateArrivalTimestamp":1.7e9,"Data":"{data}","PartitionKey":"k"}}"#
    );
    let records = vec![record; limit].join(",");
    let answer = Bytes::from(format!(
        r#"{{"Records":[{records}],"NextShardIterator":"floor-iterator","MillisBehindLatest":0}}"#
    ));
    answers.push((limit, answer.clone()));
    answer
}

fn answer(target: &str, body: &[u8]) -> (u16, Bytes) {
    let (status, text) = match target.rsplit('.').next().unwrap_or_default() {
        "GetRecords" => {
            // The `Limit` member, 10,000 (the most) if it cannot be read.
            let limit = memchr::memmem::find(body, b"\"Limit\":")
                .and_then(|at| {
                    let digits = body.get(at + 8..)?;
                    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
                    std::str::from_utf8(digits.get(..end)?).ok()?.parse().ok()
                })
                .unwrap_or(10_000usize)
                .clamp(1, 10_000);
            return (200, get_records_answer(limit));
        }
        operation => answer_text(operation, body),
    };
    (status, Bytes::from(text))
}

fn answer_text(operation: &str, body: &[u8]) -> (u16, String) {
    match operation {
        "CreateStream" | "DeleteStream" => (200, "{}".into()),
        "DescribeStreamSummary" => (
            200,
            r#"{"StreamDescriptionSummary":{"StreamName":"floor","StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/floor","StreamStatus":"ACTIVE","StreamModeDetails":{"StreamMode":"PROVISIONED"},"RetentionPeriodHours":24,"StreamCreationTimestamp":0,"EnhancedMonitoring":[],"EncryptionType":"NONE","OpenShardCount":4,"ConsumerCount":0}}"#.into(),
        ),
        "PutRecord" => (
            200,
            format!(r#"{{"ShardId":"shardId-000000000000","SequenceNumber":"{SEQUENCE_NUMBER}"}}"#),
        ),
        "PutRecords" => {
            // One entry per record sent (count the "PartitionKey" members), on the shards in
            // turn.
            let n = memchr::memmem::find_iter(body, b"\"PartitionKey\"").count();
            let entries: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        r#"{{"ShardId":"shardId-{:012}","SequenceNumber":"{SEQUENCE_NUMBER}"}}"#,
                        i % N_SHARDS
                    )
                })
                .collect();
            (
                200,
                format!(r#"{{"FailedRecordCount":0,"Records":[{}]}}"#, entries.join(",")),
            )
        }
        "ListShards" => {
            let shards: Vec<String> = (0..N_SHARDS)
                .map(|i| {
                    let width = u128::MAX / N_SHARDS as u128;
                    let start = width * i as u128;
                    let end = if i + 1 == N_SHARDS { u128::MAX } else { start + width - 1 };
                    format!(
                        r#"{{"ShardId":"shardId-{i:012}","HashKeyRange":{{"StartingHashKey":"{start}","EndingHashKey":"{end}"}},"SequenceNumberRange":{{"StartingSequenceNumber":"{SEQUENCE_NUMBER}"}}}}"#
                    )
                })
                .collect();
            (200, format!(r#"{{"Shards":[{}]}}"#, shards.join(",")))
        }
        "GetShardIterator" => (200, r#"{"ShardIterator":"floor-iterator"}"#.into()),
        _ => (
            400,
            r#"{"__type":"UnknownOperationException","message":"not served by the floor server"}"#
                .into(),
        ),
    }
}

async fn serve(
    request: Request<Incoming>,
    appends: Option<mpsc::Sender<Append>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let (status, text) = answer(&target, &body);
    if let Some(appends) = appends {
        let (done, durable) = oneshot::channel();
        if appends.send((body, done)).is_err() || durable.await.is_err() {
            return Ok(Response::builder()
                .status(500)
                .body(Full::new(Bytes::new()))
                .unwrap_or_default());
        }
    }
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(text))
        .unwrap_or_default())
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let appends = match &args.fsync {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let (sender, receiver) = mpsc::channel();
            std::thread::Builder::new()
                .name("floor-writer".into())
                .spawn({
                    let copies = args.fsync_copies;
                    move || writer(file, copies, receiver)
                })?;
            Some(sender)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("millrace-bench floor: listening on {}", args.listen);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let appends = appends.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| serve(request, appends.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
