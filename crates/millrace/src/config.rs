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
//! on_demand_split_bytes_per_sec = 512000   # on-demand: split a shard writing more than this
//! on_demand_split_after_ms = 60000         # ... for this long
//!
//! [[stream]]                      # streams that exist from start-up
//! name = "orders"
//! shard_count = 2                 # omit for an ON_DEMAND stream
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
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }
}
