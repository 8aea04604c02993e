//! A minimal Kinesis client: awsJson1.1 over one HTTP/1.1 connection per [`Connection`].
//!
//! Each workload task owns its connections, so `--connections 16` means exactly sixteen TCP
//! connections (a pooled client would open as many as it likes). Requests carry a fake
//! SigV4-shaped `Authorization` header and `X-Amz-Date`: every peer only checks that they are
//! present. No retries: a failed call is counted as an error under its `__type`, never hidden.
//! A connection that broke is reopened on the next call. Request bodies are built from typed
//! structs with serde (see [`body`]); the hot responses (PutRecords, GetRecords) are read by
//! small scanners rather than a full parse, so the client stays cheap next to the server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The fake credentials every request carries (kinesalite and kinesis-mock only check that
/// the header is present and shaped like SigV4; Millrace takes the region from the scope).
pub const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=0";
pub const AMZ_DATE: &str = "20260101T000000Z";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// How long a connect may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any unary call may take before it fails (a many-shards CreateStream is slow on
/// some peers).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Where to send requests.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub authority: String,
}

impl Endpoint {
    /// `http://HOST:PORT` (plain HTTP only: every server measured here speaks it).
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let uri: http::Uri = url.parse().with_context(|| format!("endpoint {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("endpoint {url:?}: only http:// is supported");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("endpoint {url:?} has no host"))?
            .to_string();
        let host_port = if uri.port().is_some() {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&host_port)
            .with_context(|| format!("resolving {host_port}"))?
            .next()
            .with_context(|| format!("{host_port} resolves to nothing"))?;
        Ok(Endpoint { addr, authority })
    }
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// Connect, send or receive failed, or the call timed out.
    Transport(String),
    /// The server answered with an error.
    Service {
        status: u16,
        error_type: String,
        message: String,
    },
}

impl CallError {
    /// The key errors are counted under: the AWS `__type`, or `transport`.
    pub fn label(&self) -> String {
        match self {
            CallError::Transport(_) => "transport".to_owned(),
            CallError::Service { error_type, .. } => error_type.clone(),
        }
    }

    /// The server does not implement the operation.
    pub fn is_unsupported(&self) -> bool {
        match self {
            CallError::Service {
                status, error_type, ..
            } => {
                error_type.contains("UnknownOperation")
                    || error_type.contains("NotImplemented")
                    || error_type.contains("InvalidAction")
                    || *status == 404
                    || *status == 501
            }
            CallError::Transport(_) => false,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(detail) => write!(f, "transport: {detail}"),
            CallError::Service {
                status,
                error_type,
                message,
            } => write!(f, "{error_type} (HTTP {status}): {message}"),
        }
    }
}

impl std::error::Error for CallError {}

/// The AWS `__type` of an error body, without the namespace AWS sometimes puts before `#`.
pub fn error_type_of(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        error_type: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => {
            let error_type = parsed.error_type.unwrap_or_else(|| "unknown".to_owned());
            let error_type = error_type
                .rsplit('#')
                .next()
                .unwrap_or(&error_type)
                .to_owned();
            (error_type, parsed.message.unwrap_or_default())
        }
        Err(_) => (
            "unparseable-error".to_owned(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    }
}

/// The `X-Amz-Target` prefix of Kinesis Data Streams operations.
pub const KINESIS_TARGET_PREFIX: &str = "Kinesis_20131202";

/// One HTTP/1.1 connection to the endpoint, opened on first use and reopened after a
/// failure.
pub struct Connection {
    endpoint: Endpoint,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(endpoint: &Endpoint) -> Connection {
        Connection {
            endpoint: endpoint.clone(),
            sender: None,
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, CallError> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(self.endpoint.addr),
        )
        .await
        .map_err(|_| CallError::Transport("connect timed out".to_owned()))?
        .map_err(|e| CallError::Transport(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CallError::Transport(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn request(&self, target: &str, body: Bytes) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static("/");
        let headers = request.headers_mut();
        if let Ok(host) = http::HeaderValue::from_str(&self.endpoint.authority) {
            headers.insert(http::header::HOST, host);
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(CONTENT_TYPE),
        );
        if let Ok(target) = http::HeaderValue::from_str(target) {
            headers.insert("x-amz-target", target);
        }
        headers.insert("x-amz-date", http::HeaderValue::from_static(AMZ_DATE));
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static(AUTHORIZATION),
        );
        request
    }

    /// Send a request and return the response head and streaming body. The connection is
    /// busy until the body has been read or dropped.
    pub async fn send(
        &mut self,
        operation: &str,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, CallError> {
        self.send_target(&format!("{KINESIS_TARGET_PREFIX}.{operation}"), body)
            .await
    }

    /// [`Connection::send`] with a whole `X-Amz-Target` (another service's operations).
    pub async fn send_target(
        &mut self,
        target: &str,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, CallError> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        if sender.ready().await.is_err() {
            sender = self.connect().await?;
            sender
                .ready()
                .await
                .map_err(|e| CallError::Transport(format!("not ready: {e}")))?;
        }
        let request = self.request(target, body);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| CallError::Transport(format!("send: {e}")))?;
        self.sender = Some(sender);
        Ok(response)
    }

    /// One unary call: the body of a 200, else the error.
    pub async fn call(&mut self, operation: &str, body: Bytes) -> Result<Bytes, CallError> {
        self.call_target(&format!("{KINESIS_TARGET_PREFIX}.{operation}"), body)
            .await
    }

    /// [`Connection::call`] with a whole `X-Amz-Target`, e.g.
    /// `KinesisAnalytics_20150814.CreateApplication`.
    pub async fn call_target(&mut self, target: &str, body: Bytes) -> Result<Bytes, CallError> {
        let operation = target;
        let exchange = async {
            let response = self.send_target(target, body).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Transport(format!("body: {e}")))?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                let (error_type, message) = error_type_of(&bytes);
                Err(CallError::Service {
                    status: status.as_u16(),
                    error_type,
                    message,
                })
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
            Ok(result) => {
                if matches!(result, Err(CallError::Transport(_))) {
                    self.sender = None;
                }
                result
            }
            Err(_) => {
                self.sender = None;
                Err(CallError::Transport(format!("{operation} timed out")))
            }
        }
    }

    /// A unary call whose response is parsed as JSON.
    pub async fn call_json<T: DeserializeOwned>(
        &mut self,
        operation: &str,
        body: Bytes,
    ) -> Result<T, CallError> {
        let bytes = self.call(operation, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::Service {
            status: 200,
            error_type: "unparseable-response".to_owned(),
            message: format!("{operation}: {e}"),
        })
    }
}

/// Request bodies, as typed structs serialised by serde (AWS member names are PascalCase).
pub mod body {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::Serialize;

    fn to_bytes<T: Serialize>(value: &T) -> Bytes {
        // Serialising these plain structs cannot fail.
        Bytes::from(serde_json::to_vec(value).unwrap_or_default())
    }

    pub fn base64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Entry<'a> {
        pub data: String,
        pub partition_key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub explicit_hash_key: Option<&'a str>,
    }

    pub fn create_stream(stream_name: &str, shard_count: u32) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            stream_name: &'a str,
            shard_count: u32,
        }
        to_bytes(&Input {
            stream_name,
            shard_count,
        })
    }

    pub fn stream_name(stream_name: &str) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            stream_name: &'a str,
        }
        to_bytes(&Input { stream_name })
    }

    pub fn delete_stream(stream_name: &str) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            stream_name: &'a str,
            enforce_consumer_deletion: bool,
        }
        to_bytes(&Input {
            stream_name,
            enforce_consumer_deletion: true,
        })
    }

    /// ListShards: the first page names the stream, later pages only the token (AWS refuses
    /// both together).
    pub fn list_shards(stream_name: &str, next_token: Option<&str>) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            stream_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            next_token: Option<&'a str>,
            max_results: u32,
        }
        to_bytes(&Input {
            stream_name: next_token.is_none().then_some(stream_name),
            next_token,
            max_results: 1000,
        })
    }

    pub fn put_record(stream_name: &str, partition_key: &str, data: &[u8]) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            stream_name: &'a str,
            data: String,
            partition_key: &'a str,
        }
        to_bytes(&Input {
            stream_name,
            data: base64(data),
            partition_key,
        })
    }

    pub fn put_records(stream_name: &str, records: &[Entry<'_>]) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            stream_name: &'a str,
            records: &'a [Entry<'a>],
        }
        to_bytes(&Input {
            stream_name,
            records,
        })
    }

    /// GetShardIterator; `starting_sequence_number` goes with AT_/AFTER_SEQUENCE_NUMBER.
    pub fn get_shard_iterator(
        stream_name: &str,
        shard_id: &str,
        iterator_type: &str,
        starting_sequence_number: Option<&str>,
    ) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            stream_name: &'a str,
            shard_id: &'a str,
            shard_iterator_type: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            starting_sequence_number: Option<&'a str>,
        }
        to_bytes(&Input {
            stream_name,
            shard_id,
            shard_iterator_type: iterator_type,
            starting_sequence_number,
        })
    }

    pub fn get_records(shard_iterator: &str, limit: u32) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            shard_iterator: &'a str,
            limit: u32,
        }
        to_bytes(&Input {
            shard_iterator,
            limit,
        })
    }

    pub fn register_stream_consumer(stream_arn: &str, consumer_name: &str) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            #[serde(rename = "StreamARN")]
            stream_arn: &'a str,
            consumer_name: &'a str,
        }
        to_bytes(&Input {
            stream_arn,
            consumer_name,
        })
    }

    pub fn consumer_arn(consumer_arn: &str) -> Bytes {
        #[derive(Serialize)]
        struct Input<'a> {
            #[serde(rename = "ConsumerARN")]
            consumer_arn: &'a str,
        }
        to_bytes(&Input { consumer_arn })
    }

    /// SubscribeToShard from LATEST, or after `sequence_number` when resubscribing.
    pub fn subscribe_to_shard(
        consumer_arn: &str,
        shard_id: &str,
        after_sequence_number: Option<&str>,
    ) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Position<'a> {
            #[serde(rename = "Type")]
            position_type: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            sequence_number: Option<&'a str>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Input<'a> {
            #[serde(rename = "ConsumerARN")]
            consumer_arn: &'a str,
            shard_id: &'a str,
            starting_position: Position<'a>,
        }
        let starting_position = match after_sequence_number {
            Some(sequence_number) => Position {
                position_type: "AFTER_SEQUENCE_NUMBER",
                sequence_number: Some(sequence_number),
            },
            None => Position {
                position_type: "LATEST",
                sequence_number: None,
            },
        };
        to_bytes(&Input {
            consumer_arn,
            shard_id,
            starting_position,
        })
    }
}

/// Responses, parsed in full where they are small.
pub mod response {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct StreamSummary {
        pub stream_description_summary: StreamDescriptionSummary,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct StreamDescriptionSummary {
        pub stream_status: String,
        #[serde(rename = "StreamARN")]
        pub stream_arn: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ListShards {
        #[serde(default)]
        pub shards: Vec<Shard>,
        pub next_token: Option<String>,
    }

    #[derive(Deserialize, Clone)]
    #[serde(rename_all = "PascalCase")]
    pub struct Shard {
        pub shard_id: String,
        pub hash_key_range: HashKeyRange,
        pub sequence_number_range: SequenceNumberRange,
    }

    #[derive(Deserialize, Clone)]
    #[serde(rename_all = "PascalCase")]
    pub struct HashKeyRange {
        pub starting_hash_key: String,
    }

    #[derive(Deserialize, Clone)]
    #[serde(rename_all = "PascalCase")]
    pub struct SequenceNumberRange {
        pub ending_sequence_number: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ShardIterator {
        pub shard_iterator: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct PutRecordsResult {
        #[serde(default)]
        pub records: Vec<PutRecordsEntry>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct PutRecordsEntry {
        pub shard_id: Option<String>,
        pub error_code: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Records {
        #[serde(default)]
        pub records: Vec<Record>,
        pub next_shard_iterator: Option<String>,
        pub continuation_sequence_number: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Record {
        pub data: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Consumer {
        pub consumer: ConsumerDescription,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ConsumerDescription {
        #[serde(rename = "ConsumerARN")]
        pub consumer_arn: String,
        pub consumer_status: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ConsumerDescribed {
        pub consumer_description: ConsumerDescription,
    }
}

/// Scanners for the large, hot responses: they find a few members without building a tree.
/// Sound for what they read because record data is base64 and the ids and keys this tool
/// writes contain no quotes, so a quoted member name cannot appear inside a value.
pub mod scan {
    use memchr::memmem;

    /// Where the value of member `name` starts (after `"name"`, optional spaces and `:`).
    fn value_start(body: &[u8], name: &str) -> Option<usize> {
        let needle = format!("\"{name}\"");
        let mut from = 0;
        while let Some(at) = memmem::find(&body[from..], needle.as_bytes()) {
            let mut i = from + at + needle.len();
            while body.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            if body.get(i) == Some(&b':') {
                i += 1;
                while body.get(i).is_some_and(u8::is_ascii_whitespace) {
                    i += 1;
                }
                return Some(i);
            }
            from = from + at + needle.len();
        }
        None
    }

    /// The string value of member `name`, `None` when absent or `null`.
    pub fn string_member<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
        let start = value_start(body, name)?;
        if body.get(start) != Some(&b'"') {
            return None;
        }
        let len = memchr::memchr(b'"', &body[start + 1..])?;
        std::str::from_utf8(&body[start + 1..start + 1 + len]).ok()
    }

    /// The unsigned integer value of member `name`.
    pub fn number_member(body: &[u8], name: &str) -> Option<u64> {
        let start = value_start(body, name)?;
        let digits = body[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        std::str::from_utf8(&body[start..start + digits])
            .ok()?
            .parse()
            .ok()
    }

    /// How many records a GetRecords or PutRecords response holds (one `SequenceNumber` each).
    pub fn count_sequence_numbers(body: &[u8]) -> u64 {
        memmem::find_iter(body, b"\"SequenceNumber\"").count() as u64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{Value, json};

    fn parse(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn put_records_body_has_the_aws_shape() {
        let entries = [
            body::Entry {
                data: body::base64(b"hello"),
                partition_key: "pk-1",
                explicit_hash_key: None,
            },
            body::Entry {
                data: body::base64(&[0xff, 0x00]),
                partition_key: "pk-\"2\"",
                explicit_hash_key: Some("170141183460469231731687303715884105728"),
            },
        ];
        let value = parse(&body::put_records("s-1", &entries));
        assert_eq!(
            value,
            json!({
                "StreamName": "s-1",
                "Records": [
                    {"Data": "aGVsbG8=", "PartitionKey": "pk-1"},
                    {"Data": "/wA=", "PartitionKey": "pk-\"2\"",
                     "ExplicitHashKey": "170141183460469231731687303715884105728"},
                ]
            })
        );
    }

    #[test]
    fn control_bodies_have_the_aws_shape() {
        assert_eq!(
            parse(&body::create_stream("s", 3)),
            json!({"StreamName": "s", "ShardCount": 3})
        );
        assert_eq!(
            parse(&body::delete_stream("s")),
            json!({"StreamName": "s", "EnforceConsumerDeletion": true})
        );
        assert_eq!(
            parse(&body::list_shards("s", None)),
            json!({"StreamName": "s", "MaxResults": 1000})
        );
        assert_eq!(
            parse(&body::list_shards("s", Some("tok"))),
            json!({"NextToken": "tok", "MaxResults": 1000})
        );
        assert_eq!(
            parse(&body::put_record("s", "k", b"ab")),
            json!({"StreamName": "s", "Data": "YWI=", "PartitionKey": "k"})
        );
        assert_eq!(
            parse(&body::get_shard_iterator(
                "s",
                "shardId-000000000000",
                "LATEST",
                None
            )),
            json!({"StreamName": "s", "ShardId": "shardId-000000000000",
                   "ShardIteratorType": "LATEST"})
        );
        assert_eq!(
            parse(&body::get_records("it", 10000)),
            json!({"ShardIterator": "it", "Limit": 10000})
        );
        assert_eq!(
            parse(&body::register_stream_consumer("arn:s", "c")),
            json!({"StreamARN": "arn:s", "ConsumerName": "c"})
        );
        assert_eq!(
            parse(&body::consumer_arn("arn:c")),
            json!({"ConsumerARN": "arn:c"})
        );
    }

    #[test]
    fn subscribe_body_starts_at_latest_or_after_a_sequence_number() {
        assert_eq!(
            parse(&body::subscribe_to_shard("arn:c", "shardId-1", None)),
            json!({"ConsumerARN": "arn:c", "ShardId": "shardId-1",
                   "StartingPosition": {"Type": "LATEST"}})
        );
        assert_eq!(
            parse(&body::subscribe_to_shard("arn:c", "shardId-1", Some("49"))),
            json!({"ConsumerARN": "arn:c", "ShardId": "shardId-1",
                   "StartingPosition": {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": "49"}})
        );
    }

    #[test]
    fn scanners_read_get_records_responses() {
        let body = br#"{"Records":[{"Data":"YQ==","PartitionKey":"a","SequenceNumber":"1"},
            {"Data":"Yg==","PartitionKey":"b","SequenceNumber":"2"}],
            "NextShardIterator": "AAAA/bbb+=", "MillisBehindLatest" : 1234}"#;
        assert_eq!(scan::count_sequence_numbers(body), 2);
        assert_eq!(
            scan::string_member(body, "NextShardIterator"),
            Some("AAAA/bbb+=")
        );
        assert_eq!(scan::number_member(body, "MillisBehindLatest"), Some(1234));
        let closed = br#"{"Records":[],"NextShardIterator":null,"ChildShards":[]}"#;
        assert_eq!(scan::count_sequence_numbers(closed), 0);
        assert_eq!(scan::string_member(closed, "NextShardIterator"), None);
        assert_eq!(scan::number_member(closed, "MillisBehindLatest"), None);
    }

    #[test]
    fn scanners_skip_a_name_that_is_a_value() {
        let body = br#"{"PartitionKey":"NextShardIterator","NextShardIterator":"it"}"#;
        assert_eq!(scan::string_member(body, "NextShardIterator"), Some("it"));
    }

    #[test]
    fn error_types_lose_their_namespace() {
        let (error_type, message) = error_type_of(
            br#"{"__type":"com.amazonaws.kinesis#ResourceNotFoundException","message":"gone"}"#,
        );
        assert_eq!(error_type, "ResourceNotFoundException");
        assert_eq!(message, "gone");
        let (error_type, _) = error_type_of(b"<html>");
        assert_eq!(error_type, "unparseable-error");
    }

    #[test]
    fn endpoints_parse() {
        let endpoint = Endpoint::parse("http://127.0.0.1:4567").unwrap();
        assert_eq!(endpoint.addr, "127.0.0.1:4567".parse().unwrap());
        assert_eq!(endpoint.authority, "127.0.0.1:4567");
        assert!(Endpoint::parse("https://127.0.0.1:4567").is_err());
    }
}
