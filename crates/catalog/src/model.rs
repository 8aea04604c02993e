//! The records the catalog stores: plain data with serde, no behaviour.
//!
//! Fields are Rust-named; AWS casing lives only in the `wire` crate. Every field added
//! after the first release carries `#[serde(default)]` so older catalogs keep loading.
//! Hash keys are `u128` stored as decimal strings (JSON numbers cannot hold them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Creating,
    Active,
    Updating,
    Deleting,
}

/// A status that may be transitional: `status` holds until `until_ms`, after which the
/// stream (or consumer) is in `then`. Evaluated lazily against the clock, so a test that
/// advances the clock sees the transition without any background task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub status: Status,
    pub until_ms: i64,
    pub then: Status,
}

impl Lifecycle {
    pub fn steady(status: Status) -> Lifecycle {
        Lifecycle {
            status,
            until_ms: i64::MIN,
            then: status,
        }
    }

    pub fn at(&self, now_ms: i64) -> Status {
        if now_ms < self.until_ms {
            self.status
        } else {
            self.then
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The number in `shardId-000000000007`; also part of every sequence number.
    pub index: u32,
    /// Where the shard's records live in the log.
    pub log_id: u64,
    #[serde(with = "u128_string")]
    pub starting_hash_key: u128,
    #[serde(with = "u128_string")]
    pub ending_hash_key: u128,
    pub parent: Option<u32>,
    pub adjacent_parent: Option<u32>,
    pub created_ms: i64,
    /// Set once the shard is closed by a split, merge or shard-count update.
    pub closed: Option<ClosedShard>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedShard {
    /// First offset that is not part of the shard (the log's end when it closed).
    pub end_offset: u64,
    pub closed_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerRecord {
    pub name: String,
    /// Creation time; its seconds appear in the consumer ARN.
    pub created_ms: i64,
    pub lifecycle: Lifecycle,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionRecord {
    pub key_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub account: String,
    pub region: String,
    pub name: String,
    /// The `StreamId` of the model (`[a-z0-9]{20}-[a-z0-9]{3}`); a stream deleted and
    /// created again under the same name gets a new one, which invalidates old iterators.
    pub stream_id: String,
    pub created_ms: i64,
    pub lifecycle: Lifecycle,
    pub mode: StreamMode,
    pub retention_hours: u32,
    pub shards: Vec<ShardRecord>,
    pub next_shard_index: u32,
    pub encryption: Option<EncryptionRecord>,
    pub enhanced_metrics: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub max_record_size_kib: u32,
    #[serde(default)]
    pub warm_throughput_mibps: Option<u32>,
    #[serde(default)]
    pub consumers: Vec<ConsumerRecord>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub record_distribution_strategy: Option<String>,
    /// Times of UpdateShardCount calls (AWS allows a limited number per rolling 24 hours).
    #[serde(default)]
    pub shard_count_updates_ms: Vec<i64>,
    /// Times of stream-mode switches (twice per rolling 24 hours).
    #[serde(default)]
    pub mode_updates_ms: Vec<i64>,
    /// Queues created on the stream (they share the registered-consumer limit with
    /// `consumers`). Their delivery state is in `Table::QueueStates`.
    #[serde(default)]
    pub queues: Vec<QueueRecord>,
}

/// A queue's configuration. Its delivery state (what was received, acknowledged,
/// dead-lettered) is a `QueueStateRecord` plus the events in the queue's own log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub name: String,
    /// The generated resource id in the queue ARN (`...:queue/ID`), unique per
    /// installation; also the key of the queue's `QueueStateRecord`.
    pub queue_id: String,
    pub created_ms: i64,
    pub lifecycle: Lifecycle,
    pub visibility_timeout_secs: u32,
    /// `None`: dead-letter handling off (`TargetType` NONE); `Some(n)`: a record received
    /// `n` times without an acknowledgement becomes a dead letter.
    pub max_receive_count: Option<u32>,
    /// `LATEST`, `TRIM_HORIZON` or `AT_TIMESTAMP`, as requested.
    pub starting_position: String,
    /// The requested `AT_TIMESTAMP` time.
    pub starting_timestamp_ms: Option<i64>,
    /// The effective starting time DescribeQueue reports once the queue is ACTIVE.
    pub effective_start_ms: i64,
    /// Where delivery starts in each shard that existed at creation (shard index → log
    /// offset); shards created later start at their beginning.
    pub start_offsets: BTreeMap<u32, u64>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub policy: Option<String>,
}

/// Where a queue's delivery state lives: a snapshot of its index (the `streams` crate's
/// byte layout, base64) taken when `log_id` was started, plus every event appended to
/// `log_id` since. A new snapshot starts a new log, so the events never grow unbounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStateRecord {
    pub log_id: u64,
    pub snapshot: String,
}

/// A data key of an encrypted stream: 32 random bytes, stored only wrapped (AES-256-GCM)
/// by the master key `master_key_id` of the key store; never in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeyRecord {
    /// The log (shard) whose records it encrypts.
    pub log_id: u64,
    pub master_key_id: String,
    /// Base64 of nonce, ciphertext and tag.
    pub wrapped: String,
    pub created_ms: i64,
    /// Account and region of the stream (for KMS error messages).
    pub account: String,
    pub region: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// MinimumThroughputBillingCommitment status as last set (`ENABLED`/`DISABLED`).
    #[serde(default)]
    pub billing_commitment: Option<String>,
    #[serde(default)]
    pub billing_commitment_started_ms: Option<i64>,
    #[serde(default)]
    pub billing_commitment_ends_ms: Option<i64>,
}

/// A Firehose delivery stream. Its destination settings are kept as the AWS JSON of their
/// `DestinationDescription` shape (written and read back by the `wire` crate), so that the
/// catalog needs no copy of Firehose's three hundred shapes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStreamRecord {
    pub account: String,
    pub region: String,
    pub name: String,
    pub created_ms: i64,
    pub lifecycle: Lifecycle,
    /// `DirectPut` or `KinesisStreamAsSource`.
    pub stream_type: String,
    /// Starts at 1; every UpdateDestination increments it (it appears in object names).
    pub version_id: u64,
    pub last_update_ms: Option<i64>,
    /// The log holding the records accepted and not yet known delivered.
    pub log_id: u64,
    /// `KinesisStreamAsSource`: the stream's ARN and the role.
    pub source_stream_arn: Option<String>,
    pub source_role_arn: Option<String>,
    pub destinations: Vec<DeliveryDestinationRecord>,
    pub tags: BTreeMap<String, String>,
    /// Server-side encryption as last set (StartDeliveryStreamEncryption).
    pub encryption: Option<DeliveryEncryptionRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryDestinationRecord {
    /// `destinationId-000000000001`.
    pub destination_id: String,
    /// AWS JSON of the destination's `DestinationDescription`.
    pub description_json: String,
    /// What Describe never returns: an HTTP endpoint's access key, a Redshift password.
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryEncryptionRecord {
    /// `AWS_OWNED_CMK` or `CUSTOMER_MANAGED_CMK`.
    pub key_type: String,
    pub key_arn: Option<String>,
}

/// How far a delivery stream got: every record of its log below `delivered_offset` reached
/// its destination (or its error output). A Kinesis source also records, per shard, the last
/// sequence number copied into the log (`None`: start at the shard's beginning) and whether
/// the shard is finished (closed and read to its end). `holds` are the other readers of the
/// delivery stream's log (Analytics applications with it as their input, by application ARN):
/// the first offset each still needs, which delivery does not trim away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCheckpointRecord {
    pub delivered_offset: u64,
    #[serde(default)]
    pub shards: BTreeMap<String, SourceShardCheckpoint>,
    #[serde(default)]
    pub holds: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceShardCheckpoint {
    pub after_sequence_number: Option<String>,
    pub finished: bool,
}

/// A Kinesis channel: continuous delivery of a stream into S3 objects or Iceberg tables.
/// Its settings are kept as the AWS JSON of its `ChannelDescription` (written and read back
/// by the `wire` crate; the status in it is ignored, `lifecycle` is the truth), so the
/// catalog needs no copy of the destination shapes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub account: String,
    pub region: String,
    pub name: String,
    /// The `ChannelId` of the model; also the key of its `ChannelCheckpointRecord`.
    pub channel_id: String,
    pub created_ms: i64,
    pub lifecycle: Lifecycle,
    /// AWS JSON of the channel's `ChannelDescription`.
    pub description_json: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// How far a channel got: per source shard (`STREAM_ARN SHARD_ID`), the last sequence number
/// delivered; and per destination (an Iceberg table), the state the delivery crate keeps
/// (its own JSON: the table's current metadata version, snapshots and manifests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCheckpointRecord {
    #[serde(default)]
    pub shards: BTreeMap<String, SourceShardCheckpoint>,
    #[serde(default)]
    pub destinations: BTreeMap<String, String>,
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
