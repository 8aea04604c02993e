//! Test harness: starts a real `millrace` process on a free port with its own data
//! directory, and builds AWS SDK for Rust clients pointed at it.
//!
//! The binary is `$MILLRACE_BIN`, else `target/release/millrace`, else
//! `target/debug/millrace` of this workspace (the test script builds the release one
//! first). The server is killed (SIGKILL) when the [`Server`] is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};

/// How long a server gets to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("MILLRACE_BIN") {
        return PathBuf::from(path);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("target"));
    for profile in ["release", "debug"] {
        let candidate = target.join(profile).join("millrace");
        if candidate.exists() {
            return candidate;
        }
    }
    target.join("release").join("millrace")
}

pub struct Server {
    child: Option<Child>,
    pub endpoint: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// A fresh server with reset and clock advance enabled, plus `extra` arguments.
    pub fn start(extra: &[&str]) -> anyhow::Result<Server> {
        let temp = tempfile::tempdir()?;
        let data_dir = temp.path().join("data");
        let mut args: Vec<String> = vec!["--enable-reset".into(), "--enable-clock-advance".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Server {
            child: None,
            endpoint: String::new(),
            data_dir,
            args,
            _temp: Some(temp),
        };
        server.spawn()?;
        Ok(server)
    }

    /// A fresh server with a configuration file of the given TOML text.
    pub fn start_with_config(toml: &str, extra: &[&str]) -> anyhow::Result<Server> {
        let temp = tempfile::tempdir()?;
        let config = temp.path().join("millrace.toml");
        std::fs::write(&config, toml)?;
        let mut args: Vec<String> = vec![
            "--enable-reset".into(),
            "--enable-clock-advance".into(),
            "--config".into(),
            config.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Server {
            child: None,
            endpoint: String::new(),
            data_dir: temp.path().join("data"),
            args,
            _temp: Some(temp),
        };
        server.spawn()?;
        Ok(server)
    }

    /// A server on an existing data directory (e.g. one left by another server).
    pub fn start_on(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        let mut server = Server {
            child: None,
            endpoint: String::new(),
            data_dir: data_dir.to_path_buf(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            _temp: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("millrace listening on ") {
                    let _ = sender.send(addr.trim().to_string());
                }
            }
        });
        let addr = receiver
            .recv_timeout(READY_TIMEOUT)
            .map_err(|_| anyhow::anyhow!("millrace did not become ready"))?;
        self.endpoint = format!("http://{addr}");
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no drain, no fsync beyond what was already acknowledged.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "millrace did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same data directory (after `kill` or `terminate`).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    pub fn client(&self) -> aws_sdk_kinesis::Client {
        client_for(&self.endpoint, "us-east-1", "AKIDEXAMPLE")
    }

    pub fn client_in(&self, region: &str, access_key: &str) -> aws_sdk_kinesis::Client {
        client_for(&self.endpoint, region, access_key)
    }

    /// The endpoint with `https://` (for a server configured with TLS).
    pub fn https_endpoint(&self) -> String {
        self.endpoint.replacen("http://", "https://", 1)
    }

    /// A Firehose client for this server (retries off, like [`Server::client`]).
    pub fn firehose_client(&self) -> aws_sdk_firehose::Client {
        firehose_client_for(&self.endpoint, "us-east-1", "AKIDEXAMPLE")
    }

    /// Moves the server's clock forward.
    pub fn advance_clock(&self, ms: u64) -> anyhow::Result<()> {
        let status = raw_post(
            &self.endpoint,
            &format!("/millrace-api/advance-clock?ms={ms}"),
        )?;
        anyhow::ensure!(status == 200, "advance-clock answered {status}");
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client_for(endpoint: &str, region: &str, access_key: &str) -> aws_sdk_kinesis::Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(access_key, "secret", None, None, "test"))
        .http_client(http)
        // Tests must see every error as the server sent it, throttling included.
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// How to build a client beyond endpoint and region (the security suite's needs).
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    pub access_key: String,
    pub secret: String,
    pub session_token: Option<String>,
    /// Sign as if the clock read this (clock-skew tests).
    pub signing_time: Option<std::time::SystemTime>,
    /// Trust this PEM certificate (HTTPS endpoints).
    pub root_pem: Option<Vec<u8>>,
}

impl ClientOptions {
    pub fn keys(access_key: &str, secret: &str) -> ClientOptions {
        ClientOptions {
            access_key: access_key.into(),
            secret: secret.into(),
            ..ClientOptions::default()
        }
    }
}

/// A client with explicit credentials, optional fixed signing time and trusted root.
pub fn client_with(
    endpoint: &str,
    region: &str,
    options: &ClientOptions,
) -> aws_sdk_kinesis::Client {
    use aws_smithy_http_client::tls;
    let http = match &options.root_pem {
        Some(pem) => {
            let context = tls::TlsContext::builder()
                .with_trust_store(tls::TrustStore::empty().with_pem_certificate(pem.clone()))
                .build();
            let builder = aws_smithy_http_client::Builder::new().tls_provider(
                tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring),
            );
            match context {
                Ok(context) => builder.tls_context(context).build_https(),
                Err(error) => panic!("bad trust store: {error}"),
            }
        }
        None => aws_smithy_http_client::Builder::new().build_http(),
    };
    let mut config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(
            options.access_key.clone(),
            options.secret.clone(),
            options.session_token.clone(),
            None,
            "test",
        ))
        .http_client(http)
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled());
    if let Some(time) = options.signing_time {
        config = config.time_source(aws_smithy_async::time::StaticTimeSource::new(time));
    }
    aws_sdk_kinesis::Client::from_conf(config.build())
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// The files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> anyhow::Result<Vec<PathBuf>> {
    let mut hits = Vec::new();
    for path in files_under(dir)? {
        let bytes = std::fs::read(&path)?;
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(path);
        }
    }
    Ok(hits)
}

pub fn firehose_client_for(
    endpoint: &str,
    region: &str,
    access_key: &str,
) -> aws_sdk_firehose::Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_firehose::Config::builder()
        .behavior_version(aws_sdk_firehose::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_firehose::config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_firehose::config::Credentials::new(
            access_key, "secret", None, None, "test",
        ))
        .http_client(http)
        .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_firehose::Client::from_conf(config)
}

/// A bodyless POST over a plain TCP connection; returns the status code.
pub fn raw_post(endpoint: &str, path: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad HTTP response: {response}"))?;
    Ok(status)
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The error code (`__type`) and message of a failed SDK call.
pub fn error_of<E, R>(result: Result<R, aws_sdk_kinesis::error::SdkError<E>>) -> (String, String)
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    use aws_sdk_kinesis::error::ProvideErrorMetadata;
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(error) => {
            let code = error.code().unwrap_or("").to_string();
            let message = error.message().unwrap_or("").to_string();
            (code, message)
        }
    }
}

/// Creates a provisioned stream and waits until it is ACTIVE.
pub async fn create_active_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> anyhow::Result<()> {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await?;
    wait_active(client, name).await
}

pub async fn wait_active(client: &aws_sdk_kinesis::Client, name: &str) -> anyhow::Result<()> {
    use aws_sdk_kinesis::types::StreamStatus;
    eventually(Duration::from_secs(30), "stream ACTIVE", || async {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        Ok((status == Some(StreamStatus::Active)).then_some(()))
    })
    .await
}
