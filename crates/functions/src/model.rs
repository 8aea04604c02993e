//! What is stored in the catalog: functions created through the API, event source
//! mappings, and each mapping's per-shard checkpoint.
//!
//! Records are serde JSON in the catalog's tables (`Functions`, `EventSourceMappings`,
//! `MappingCheckpoints`); AWS casing appears only where they are rendered (`api.rs`).

use serde::{Deserialize, Serialize};

/// A function created with CreateFunction: a name and the URL it runs at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    pub arn: String,
    pub url: String,
    pub role: String,
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub description: String,
    pub timeout_s: u32,
    pub memory_mb: u32,
    pub modified_ms: i64,
}

/// Where a mapping starts reading a shard it has no checkpoint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartingPosition {
    TrimHorizon,
    /// Records that arrive after the mapping was created (`created_ms`), so a restart
    /// before the first batch does not skip records.
    Latest,
    AtTimestamp,
}

impl StartingPosition {
    pub fn parse(text: &str) -> Option<StartingPosition> {
        match text {
            "TRIM_HORIZON" => Some(StartingPosition::TrimHorizon),
            "LATEST" => Some(StartingPosition::Latest),
            "AT_TIMESTAMP" => Some(StartingPosition::AtTimestamp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StartingPosition::TrimHorizon => "TRIM_HORIZON",
            StartingPosition::Latest => "LATEST",
            StartingPosition::AtTimestamp => "AT_TIMESTAMP",
        }
    }
}

/// An event source mapping: a Kinesis stream (or an enhanced fan-out consumer of one) read
/// for a function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappingRecord {
    pub uuid: String,
    pub account: String,
    pub region: String,
    pub function_arn: String,
    /// As given: a stream ARN or a consumer ARN.
    pub event_source_arn: String,
    /// The stream read (the consumer's stream for a consumer ARN).
    pub stream_arn: String,
    pub starting_position: StartingPosition,
    pub starting_position_timestamp_ms: Option<i64>,
    pub batch_size: u32,
    pub batching_window_s: u32,
    pub parallelization_factor: u32,
    pub bisect_on_error: bool,
    /// -1: retry until the records expire.
    pub retry_attempts_max: i32,
    /// -1: no limit.
    pub record_age_s_max: i32,
    pub report_batch_item_failures: bool,
    /// 0: no tumbling windows.
    pub tumbling_window_s: u32,
    /// FilterCriteria patterns, as given (JSON text each).
    pub filters: Vec<String>,
    /// OnFailure destination: a Kinesis stream ARN or an S3 bucket ARN.
    pub on_failure: Option<String>,
    pub enabled: bool,
    pub created_ms: i64,
    pub modified_ms: i64,
}

/// Progress of one mapping on one shard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardCheckpoint {
    /// Every record up to this one was delivered (or went to the on-failure destination).
    pub after_sequence_number: Option<String>,
    /// The shard is closed and every record of it was handled: its children may start.
    pub finished: bool,
    /// The open tumbling window and the state the function returned for it.
    pub window: Option<WindowCheckpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowCheckpoint {
    pub start_ms: i64,
    pub state: serde_json::Value,
}

pub fn checkpoint_key(uuid: &str, shard_id: &str) -> String {
    format!("{uuid}/{shard_id}")
}
