//! The configuration file (TOML) and how it combines with the command line.
//!
//! Every field is optional; the command line wins over the file, the file over the
//! defaults. Unknown keys are refused, so a typo does not silently do nothing.
//!
//! ```toml
//! listen = "127.0.0.1:4567"
//! data_dir = "./millrace-data"
//! account_id = "000000000000"
//! region = "us-east-1"
//! shard_throughput = "enforced"   # or "unlimited"
//! durability = "fsync"            # or "os-buffered": acknowledge before fsync
//! enable_reset = false            # POST /moto-api/reset wipes everything
//! enable_clock_advance = false    # POST /millrace-api/advance-clock?ms=N
//!
//! [streams]
//! create_delay_ms = 0             # how long a new stream stays CREATING
//! delete_delay_ms = 0
//! update_delay_ms = 0
//! consumer_delay_ms = 0
//! shard_limit = 500               # open shards per account and region
//! queue_receive_waiters_max = 1000   # long-polling receives per queue; more: ThrottlingException
//! on_demand_split_bytes_per_sec = 512000   # on-demand: split a shard writing more than this
//! on_demand_split_after_ms = 60000         # ... for this long
//!
//! [[stream]]                      # streams that exist from start-up
//! name = "orders"
//! shard_count = 2                 # omit for an ON_DEMAND stream
//!
//! # Security (README "Security"). Any [[credential]] turns authentication on: every
//! # request must then carry a valid SigV4 signature by one of these keys.
//! [[credential]]
//! access_key_id = "AKIAPRODUCER0000001"
//! secret_access_key = "..."       # or secret_access_key_file = "/run/secrets/producer"
//! principal = "arn:aws:iam::123456789012:user/producer"
//! # session_token = "..."         # then requests must carry X-Amz-Security-Token
//!
//! [[policy]]                      # an IAM identity policy attached to principals
//! name = "put-orders"
//! principals = ["arn:aws:iam::123456789012:user/producer"]
//! document = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
//!   "Action": ["kinesis:PutRecord", "kinesis:PutRecords"],
//!   "Resource": "arn:aws:kinesis:*:123456789012:stream/orders"}]}'''
//! # or document_file = "put-orders.json"
//!
//! [tls]                           # serve TLS only (h2 and http/1.1 by ALPN)
//! cert_file = "cert.pem"          # `millrace gen-cert --out DIR` makes a development pair
//! key_file = "key.pem"
//!
//! [firehose]                      # Firehose; `firehose.rs` lists every key
//! s3_endpoint = "http://127.0.0.1:9000"   # omit: buckets are folders under DATA_DIR/buckets
//!
//! [functions]                     # event source mappings; `functions.rs` lists every key
//! [[functions.function]]
//! arn = "arn:aws:lambda:us-east-1:000000000000:function:process-orders"
//! url = "http://127.0.0.1:9001/"
//!
//! [kms]                           # master keys for StartStreamEncryption
//! key_file = "/etc/millrace/kms-keys.json"   # default: DATA_DIR.kms-keys.json beside it
//! ```

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub shard_throughput: Option<ShardThroughput>,
    pub durability: Option<DurabilityChoice>,
    pub enable_reset: Option<bool>,
    pub enable_clock_advance: Option<bool>,
    #[serde(default)]
    pub streams: StreamsSection,
    #[serde(default, rename = "stream")]
    pub declared_streams: Vec<DeclaredStream>,
    #[serde(default, rename = "credential")]
    pub credentials: Vec<CredentialConfig>,
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyConfig>,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub kms: KmsConfig,
    /// Firehose: where buckets are, functions, tables, declared delivery streams
    /// (`firehose.rs` documents every key).
    #[serde(default)]
    pub firehose: crate::firehose::FirehoseSection,
    /// Function consumers (`functions.rs` documents every key).
    #[serde(default)]
    pub functions: crate::functions::FunctionsSection,
}

/// An access key, the secret that signs with it and the principal it authenticates as.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    pub access_key_id: String,
    pub secret_access_key: Option<String>,
    /// A file holding the secret (its first line), instead of `secret_access_key`.
    pub secret_access_key_file: Option<PathBuf>,
    /// `arn:aws:iam::ACCOUNT:user/NAME`, `...:role/NAME`, `...:root`.
    pub principal: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("access_key_id", &self.access_key_id)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// An IAM identity policy and the principals it is attached to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    pub principals: Vec<String>,
    /// The JSON document inline...
    pub document: Option<String>,
    /// ... or in a file (relative paths are relative to the config file).
    pub document_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// The key store file (master keys). Must not be inside the data directory.
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ShardThroughput {
    /// Per-shard limits as AWS enforces them.
    Enforced,
    /// No per-shard limits (benchmarks, or the hardware's speed).
    Unlimited,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityChoice {
    /// Acknowledge a write once it is fsynced (group-committed).
    Fsync,
    /// Acknowledge once written to the OS; a machine crash can lose recent writes.
    OsBuffered,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsSection {
    pub create_delay_ms: Option<i64>,
    pub delete_delay_ms: Option<i64>,
    pub update_delay_ms: Option<i64>,
    pub consumer_delay_ms: Option<i64>,
    pub shard_limit: Option<u32>,
    pub on_demand_stream_limit: Option<u32>,
    pub consumer_limit: Option<u32>,
    /// ReceiveQueueRecords calls that may long-poll one queue at once.
    pub queue_receive_waiters_max: Option<usize>,
    /// On-demand streams split a shard whose writes stay above this many bytes/s...
    pub on_demand_split_bytes_per_sec: Option<f64>,
    /// ... for this long.
    pub on_demand_split_after_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredStream {
    pub name: String,
    pub shard_count: Option<i32>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub retention_hours: Option<i32>,
    #[serde(default)]
    pub consumers: Vec<String>,
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        let mut config: FileConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?;
        // Relative files named in the config are relative to it.
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for policy in &mut config.policies {
            if let Some(file) = &mut policy.document_file {
                rebase(file);
            }
        }
        for credential in &mut config.credentials {
            if let Some(file) = &mut credential.secret_access_key_file {
                rebase(file);
            }
        }
        if let Some(tls) = &mut config.tls {
            rebase(&mut tls.cert_file);
            rebase(&mut tls.key_file);
        }
        if let Some(file) = &mut config.kms.key_file {
            rebase(file);
        }
        if !config.credentials.is_empty() {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(metadata) = std::fs::metadata(path)
                && metadata.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    config = %path.display(),
                    "the config file holds secrets and others can read it: chmod 600 it"
                );
            }
        }
        Ok(config)
    }
}
