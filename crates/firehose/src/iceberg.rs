//! Apache Iceberg (format version 2) tables for channels that deliver to S3 Tables.
//!
//! A table lives at `<bucket>/<namespace>/<table>` in the object store (the table bucket
//! of `TableBucketARN` is an ordinary bucket of the same name; its URL is `s3://bucket`,
//! or `file://` for the embedded folders). Every flush
//! commits one `append` snapshot:
//!
//! ```text
//! data/<hour partition>/<uuid>.parquet          the records (Parquet, field ids set)
//! metadata/<uuid>-m0.avro                       manifest: the new data files, status ADDED
//! metadata/snap-<id>-1-<uuid>.avro              manifest list: every manifest so far
//! metadata/v<N>.metadata.json                   table metadata, snapshot N-1 is current
//! metadata/version-hint.text                    N (for readers that find tables by folder)
//! ```
//!
//! Files are written in that order, so a metadata file never names a file that is not
//! there. What the writer needs to build the next snapshot (metadata version, snapshots,
//! manifests) is a `TableState`, kept in the channel's catalog checkpoint with the shard
//! positions in one transaction: a crash after the metadata file and before the checkpoint
//! writes the same version again with the same records, replacing it (no duplicates in
//! the table; the replaced files are orphans).
//!
//! Schema (field ids 1 to 5): `partition_key` string, `sequence_number` string,
//! `approximate_arrival_timestamp` timestamptz, `shard_id` string, and `data`: string for
//! JSON and STRING records, binary for BYTE_ARRAY. A `PartitionSpec` with `TIME_HOUR` on
//! `approximate_arrival_timestamp` partitions by hour (Iceberg's `hour` transform, field id
//! 1000). Written by hand (metadata JSON, `avro.rs` for manifests) rather than with the
//! `iceberg` crate: that crate pins an older arrow/parquet than this crate's 60 and would
//! bring a second copy of both.
//!
//! Bounds: `MANIFESTS_MAX` manifests per table; past it the oldest are merged into one
//! (no compaction of data files). Snapshots kept in metadata: `SNAPSHOTS_KEPT_MAX`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::avro::{Encoder, container_file};
use crate::error::DeliveryError;
use crate::store::Buckets;

/// Manifests a snapshot lists at most; older ones are merged past it.
pub const MANIFESTS_MAX: usize = 100;
/// Snapshots kept in the metadata file (the current one and its recent ancestors).
pub const SNAPSHOTS_KEPT_MAX: usize = 100;
/// The partition field id of the hour partition.
const PARTITION_FIELD_ID: i32 = 1000;

/// One record to write.
pub struct Row<'a> {
    pub partition_key: &'a str,
    pub sequence_number: &'a str,
    pub arrival_ms: i64,
    pub shard_id: &'a str,
    pub data: &'a [u8],
}

/// Where a table is and what its writer needs to know to append to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    pub table_uuid: String,
    pub metadata_version: u64,
    pub last_sequence_number: i64,
    pub snapshots: Vec<SnapshotState>,
    pub manifests: Vec<ManifestState>,
    pub metadata_log: Vec<(String, i64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    pub snapshot_id: i64,
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    pub manifest_list: String,
    pub added_records: u64,
    pub added_files: u64,
    pub total_records: u64,
    pub total_files: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestState {
    pub path: String,
    pub length: u64,
    pub sequence_number: i64,
    pub min_sequence_number: i64,
    pub snapshot_id: i64,
    /// Data files: (path, record count, size, hour partition).
    pub files: Vec<DataFileState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFileState {
    pub path: String,
    pub records: u64,
    pub size: u64,
    pub hour: Option<i32>,
    /// The sequence number of the snapshot that added it.
    pub sequence_number: i64,
    pub snapshot_id: i64,
}

/// A table of the channel: where, how compressed, whether partitioned.
#[derive(Clone, Debug)]
pub struct TableTarget {
    pub bucket: String,
    /// Where readers find the bucket's objects (`Buckets::bucket_url`).
    pub bucket_url: String,
    pub namespace: String,
    pub name: String,
    /// `NONE`, `ZSTD` or `SNAPPY`.
    pub compression: String,
    pub hourly: bool,
    /// True: `data` is a string column (JSON, STRING records); false: binary.
    pub data_is_text: bool,
}

impl TableTarget {
    pub fn location(&self) -> String {
        format!("{}/{}/{}", self.bucket_url, self.namespace, self.name)
    }

    fn key(&self, relative: &str) -> String {
        format!("{}/{}/{relative}", self.namespace, self.name)
    }

    fn url(&self, relative: &str) -> String {
        format!("{}/{relative}", self.location())
    }

    /// The table's schema as Iceberg JSON.
    fn schema_json(&self) -> serde_json::Value {
        json!({
            "type": "struct",
            "schema-id": 0,
            "fields": [
                {"id": 1, "name": "partition_key", "required": true, "type": "string"},
                {"id": 2, "name": "sequence_number", "required": true, "type": "string"},
                {"id": 3, "name": "approximate_arrival_timestamp", "required": true, "type": "timestamptz"},
                {"id": 4, "name": "shard_id", "required": true, "type": "string"},
                {"id": 5, "name": "data", "required": true,
                 "type": if self.data_is_text { "string" } else { "binary" }},
            ]
        })
    }

    fn partition_fields_json(&self) -> serde_json::Value {
        if self.hourly {
            json!([{"source-id": 3, "field-id": PARTITION_FIELD_ID,
                    "name": "approximate_arrival_timestamp_hour", "transform": "hour"}])
        } else {
            json!([])
        }
    }

    fn arrow_schema(&self) -> Arc<Schema> {
        let field = |id: i32, name: &str, data_type: DataType| {
            Field::new(name, data_type, false).with_metadata(
                [("PARQUET:field_id".to_string(), id.to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<String, String>>(),
            )
        };
        Arc::new(Schema::new(vec![
            field(1, "partition_key", DataType::Utf8),
            field(2, "sequence_number", DataType::Utf8),
            field(
                3,
                "approximate_arrival_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            field(4, "shard_id", DataType::Utf8),
            field(
                5,
                "data",
                if self.data_is_text {
                    DataType::Utf8
                } else {
                    DataType::Binary
                },
            ),
        ]))
    }

    fn parquet(&self, rows: &[&Row<'_>]) -> Result<Vec<u8>, DeliveryError> {
        let schema = self.arrow_schema();
        let data: ArrayRef = if self.data_is_text {
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|r| String::from_utf8_lossy(r.data).into_owned()),
            ))
        } else {
            Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| r.data)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.partition_key),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.sequence_number),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.arrival_ms.saturating_mul(1000)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.shard_id),
            )),
            data,
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| DeliveryError::Store(format!("Parquet batch: {e}")))?;
        let compression = match self.compression.as_str() {
            "ZSTD" => Compression::ZSTD(ZstdLevel::default()),
            "SNAPPY" => Compression::SNAPPY,
            _ => Compression::UNCOMPRESSED,
        };
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .build();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, schema, Some(properties))
            .map_err(|e| DeliveryError::Store(format!("Parquet writer: {e}")))?;
        writer
            .write(&batch)
            .map_err(|e| DeliveryError::Store(format!("Parquet write: {e}")))?;
        writer
            .close()
            .map_err(|e| DeliveryError::Store(format!("Parquet close: {e}")))?;
        Ok(out)
    }
}

/// Hours since the epoch (Iceberg's `hour` transform).
fn hour_of(ms: i64) -> i32 {
    i32::try_from(ms.div_euclid(3_600_000)).unwrap_or(i32::MAX)
}

fn random_id() -> i64 {
    // Positive, as Iceberg writers make them.
    (rand::random::<u64>() >> 1) as i64
}

fn sync_marker() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

fn manifest_entry_schema(target: &TableTarget) -> String {
    let partition_fields = if target.hourly {
        json!([{"name": "approximate_arrival_timestamp_hour",
                "type": ["null", "int"], "default": null, "field-id": PARTITION_FIELD_ID}])
    } else {
        json!([])
    };
    json!({
        "type": "record", "name": "manifest_entry", "fields": [
            {"name": "status", "type": "int", "field-id": 0},
            {"name": "snapshot_id", "type": ["null", "long"], "default": null, "field-id": 1},
            {"name": "sequence_number", "type": ["null", "long"], "default": null, "field-id": 3},
            {"name": "file_sequence_number", "type": ["null", "long"], "default": null, "field-id": 4},
            {"name": "data_file", "field-id": 2, "type": {"type": "record", "name": "r2", "fields": [
                {"name": "content", "type": "int", "field-id": 134},
                {"name": "file_path", "type": "string", "field-id": 100},
                {"name": "file_format", "type": "string", "field-id": 101},
                {"name": "partition", "field-id": 102,
                 "type": {"type": "record", "name": "r102", "fields": partition_fields}},
                {"name": "record_count", "type": "long", "field-id": 103},
                {"name": "file_size_in_bytes", "type": "long", "field-id": 104},
            ]}},
        ]
    })
    .to_string()
}

const MANIFEST_LIST_SCHEMA: &str = r#"{"type": "record", "name": "manifest_file", "fields": [
  {"name": "manifest_path", "type": "string", "field-id": 500},
  {"name": "manifest_length", "type": "long", "field-id": 501},
  {"name": "partition_spec_id", "type": "int", "field-id": 502},
  {"name": "content", "type": "int", "field-id": 517},
  {"name": "sequence_number", "type": "long", "field-id": 515},
  {"name": "min_sequence_number", "type": "long", "field-id": 516},
  {"name": "added_snapshot_id", "type": "long", "field-id": 503},
  {"name": "added_files_count", "type": "int", "field-id": 504},
  {"name": "existing_files_count", "type": "int", "field-id": 505},
  {"name": "deleted_files_count", "type": "int", "field-id": 506},
  {"name": "added_rows_count", "type": "long", "field-id": 512},
  {"name": "existing_rows_count", "type": "long", "field-id": 513},
  {"name": "deleted_rows_count", "type": "long", "field-id": 514},
  {"name": "partitions", "type": ["null", {"type": "array", "element-id": 508, "items":
    {"type": "record", "name": "r508", "fields": [
      {"name": "contains_null", "type": "boolean", "field-id": 509},
      {"name": "contains_nan", "type": ["null", "boolean"], "default": null, "field-id": 518},
      {"name": "lower_bound", "type": ["null", "bytes"], "default": null, "field-id": 510},
      {"name": "upper_bound", "type": ["null", "bytes"], "default": null, "field-id": 511}]}}],
   "default": null, "field-id": 507}
]}"#;

/// Encodes a manifest holding `files`, each with its own status (1 ADDED for files of
/// `snapshot_id`, 0 EXISTING for files carried over by a merge).
fn manifest_bytes(target: &TableTarget, files: &[DataFileState], snapshot_id: i64) -> Vec<u8> {
    let records: Vec<Vec<u8>> = files
        .iter()
        .map(|file| {
            let mut e = Encoder::default();
            e.int(if file.snapshot_id == snapshot_id {
                1
            } else {
                0
            });
            e.union_branch(1);
            e.long(file.snapshot_id);
            e.union_branch(1);
            e.long(file.sequence_number);
            e.union_branch(1);
            e.long(file.sequence_number);
            e.int(0);
            e.string(&file.path);
            e.string("PARQUET");
            if target.hourly {
                match file.hour {
                    Some(hour) => {
                        e.union_branch(1);
                        e.int(hour);
                    }
                    None => e.union_branch(0),
                }
            }
            e.long(file.records as i64);
            e.long(file.size as i64);
            e.buf
        })
        .collect();
    let spec = target.partition_fields_json().to_string();
    let schema = target.schema_json().to_string();
    container_file(
        &manifest_entry_schema(target),
        &[
            ("schema", schema),
            ("schema-id", "0".into()),
            ("partition-spec", spec),
            ("partition-spec-id", "0".into()),
            ("format-version", "2".into()),
            ("content", "data".into()),
        ],
        &records,
        sync_marker(),
    )
}

fn manifest_list_bytes(
    target: &TableTarget,
    manifests: &[ManifestState],
    snapshot: &SnapshotState,
) -> Vec<u8> {
    let records: Vec<Vec<u8>> = manifests
        .iter()
        .map(|m| {
            let added: Vec<&DataFileState> = m
                .files
                .iter()
                .filter(|f| f.snapshot_id == m.snapshot_id)
                .collect();
            let existing: Vec<&DataFileState> = m
                .files
                .iter()
                .filter(|f| f.snapshot_id != m.snapshot_id)
                .collect();
            let mut e = Encoder::default();
            e.string(&m.path);
            e.long(m.length as i64);
            e.int(0);
            e.int(0);
            e.long(m.sequence_number);
            e.long(m.min_sequence_number);
            e.long(m.snapshot_id);
            e.int(added.len() as i32);
            e.int(existing.len() as i32);
            e.int(0);
            e.long(added.iter().map(|f| f.records as i64).sum());
            e.long(existing.iter().map(|f| f.records as i64).sum());
            e.long(0);
            e.union_branch(1);
            if target.hourly {
                let hours: Vec<i32> = m.files.iter().filter_map(|f| f.hour).collect();
                e.array_start(1);
                e.boolean(hours.len() < m.files.len());
                e.union_branch(1);
                e.boolean(false);
                match (hours.iter().min(), hours.iter().max()) {
                    (Some(low), Some(high)) => {
                        e.union_branch(1);
                        e.bytes(&low.to_le_bytes());
                        e.union_branch(1);
                        e.bytes(&high.to_le_bytes());
                    }
                    _ => {
                        e.union_branch(0);
                        e.union_branch(0);
                    }
                }
            } else {
                e.array_start(0);
            }
            e.array_end();
            e.buf
        })
        .collect();
    let parent = snapshot
        .parent_snapshot_id
        .map_or_else(|| "null".to_string(), |p| p.to_string());
    container_file(
        MANIFEST_LIST_SCHEMA,
        &[
            ("snapshot-id", snapshot.snapshot_id.to_string()),
            ("parent-snapshot-id", parent),
            ("sequence-number", snapshot.sequence_number.to_string()),
            ("format-version", "2".into()),
        ],
        &records,
        sync_marker(),
    )
}

fn metadata_json(target: &TableTarget, state: &TableState, now_ms: i64) -> serde_json::Value {
    let current = state.snapshots.last();
    let snapshots: Vec<serde_json::Value> = state
        .snapshots
        .iter()
        .map(|s| {
            let mut snapshot = json!({
                "snapshot-id": s.snapshot_id,
                "sequence-number": s.sequence_number,
                "timestamp-ms": s.timestamp_ms,
                "manifest-list": s.manifest_list,
                "schema-id": 0,
                "summary": {
                    "operation": "append",
                    "added-data-files": s.added_files.to_string(),
                    "added-records": s.added_records.to_string(),
                    "total-data-files": s.total_files.to_string(),
                    "total-records": s.total_records.to_string(),
                    "total-delete-files": "0",
                    "total-position-deletes": "0",
                    "total-equality-deletes": "0",
                },
            });
            if let (Some(parent), Some(object)) = (s.parent_snapshot_id, snapshot.as_object_mut()) {
                object.insert("parent-snapshot-id".into(), json!(parent));
            }
            snapshot
        })
        .collect();
    let compression = match target.compression.as_str() {
        "ZSTD" => "zstd",
        "SNAPPY" => "snappy",
        _ => "uncompressed",
    };
    json!({
        "format-version": 2,
        "table-uuid": state.table_uuid,
        "location": target.location(),
        "last-sequence-number": state.last_sequence_number,
        "last-updated-ms": now_ms,
        "last-column-id": 5,
        "current-schema-id": 0,
        "schemas": [target.schema_json()],
        "default-spec-id": 0,
        "partition-specs": [{"spec-id": 0, "fields": target.partition_fields_json()}],
        "last-partition-id": if target.hourly { PARTITION_FIELD_ID } else { 999 },
        "default-sort-order-id": 0,
        "sort-orders": [{"order-id": 0, "fields": []}],
        "properties": {
            "write.format.default": "parquet",
            "write.parquet.compression-codec": compression,
        },
        "current-snapshot-id": current.map_or(-1, |s| s.snapshot_id),
        "refs": current.map_or_else(|| json!({}), |s| json!({"main": {"snapshot-id": s.snapshot_id, "type": "branch"}})),
        "snapshots": snapshots,
        "snapshot-log": state.snapshots.iter().map(|s| json!({"snapshot-id": s.snapshot_id, "timestamp-ms": s.timestamp_ms})).collect::<Vec<_>>(),
        "metadata-log": state.metadata_log.iter().map(|(file, ms)| json!({"metadata-file": file, "timestamp-ms": ms})).collect::<Vec<_>>(),
    })
}

/// Appends `rows` to the table as one snapshot and returns the table's next state. `state`
/// is not changed: the caller keeps the new state only once its checkpoint is committed.
pub async fn append(
    buckets: &Buckets,
    target: &TableTarget,
    state: &TableState,
    rows: &[Row<'_>],
    now_ms: i64,
) -> Result<TableState, DeliveryError> {
    let mut next = state.clone();
    if next.table_uuid.is_empty() {
        next.table_uuid = uuid::Uuid::new_v4().to_string();
    }
    let snapshot_id = random_id();
    let sequence_number = next.last_sequence_number + 1;
    // One data file per hour partition (one in all when unpartitioned).
    let mut groups: BTreeMap<Option<i32>, Vec<&Row<'_>>> = BTreeMap::new();
    for row in rows {
        let hour = target.hourly.then(|| hour_of(row.arrival_ms));
        groups.entry(hour).or_default().push(row);
    }
    let mut files = Vec::new();
    for (hour, rows) in groups {
        let body = target.parquet(&rows)?;
        let relative = match hour {
            Some(hour) => format!(
                "data/approximate_arrival_timestamp_hour={}/{}.parquet",
                hour_text(hour),
                uuid::Uuid::new_v4()
            ),
            None => format!("data/{}.parquet", uuid::Uuid::new_v4()),
        };
        let size = body.len() as u64;
        buckets
            .put(&target.bucket, &target.key(&relative), Bytes::from(body))
            .await?;
        files.push(DataFileState {
            path: target.url(&relative),
            records: rows.len() as u64,
            size,
            hour,
            sequence_number,
            snapshot_id,
        });
    }
    // Past the bound, the oldest manifests' files move into the new manifest as EXISTING.
    let mut carried = Vec::new();
    while next.manifests.len() + 1 > MANIFESTS_MAX {
        let oldest = next.manifests.remove(0);
        carried.extend(oldest.files);
    }
    let min_sequence_number = carried
        .iter()
        .map(|f| f.sequence_number)
        .min()
        .unwrap_or(sequence_number);
    let mut manifest_files = carried;
    manifest_files.extend(files.iter().cloned());
    let manifest_relative = format!("metadata/{}-m0.avro", uuid::Uuid::new_v4());
    let manifest = manifest_bytes(target, &manifest_files, snapshot_id);
    let manifest_length = manifest.len() as u64;
    buckets
        .put(
            &target.bucket,
            &target.key(&manifest_relative),
            Bytes::from(manifest),
        )
        .await?;
    next.manifests.push(ManifestState {
        path: target.url(&manifest_relative),
        length: manifest_length,
        sequence_number,
        min_sequence_number,
        snapshot_id,
        files: manifest_files,
    });
    let added_records: u64 = files.iter().map(|f| f.records).sum();
    let previous = next.snapshots.last();
    let list_relative = format!(
        "metadata/snap-{snapshot_id}-1-{}.avro",
        uuid::Uuid::new_v4()
    );
    let snapshot = SnapshotState {
        snapshot_id,
        parent_snapshot_id: previous.map(|s| s.snapshot_id),
        sequence_number,
        timestamp_ms: now_ms,
        manifest_list: target.url(&list_relative),
        added_records,
        added_files: files.len() as u64,
        total_records: previous.map_or(0, |s| s.total_records) + added_records,
        total_files: previous.map_or(0, |s| s.total_files) + files.len() as u64,
    };
    let list = manifest_list_bytes(target, &next.manifests, &snapshot);
    buckets
        .put(
            &target.bucket,
            &target.key(&list_relative),
            Bytes::from(list),
        )
        .await?;
    next.snapshots.push(snapshot);
    if next.snapshots.len() > SNAPSHOTS_KEPT_MAX {
        let excess = next.snapshots.len() - SNAPSHOTS_KEPT_MAX;
        next.snapshots.drain(..excess).for_each(drop);
    }
    next.last_sequence_number = sequence_number;
    if next.metadata_version > 0 {
        let previous_file = target.url(&format!(
            "metadata/v{}.metadata.json",
            next.metadata_version
        ));
        next.metadata_log.push((previous_file, now_ms));
        if next.metadata_log.len() > SNAPSHOTS_KEPT_MAX {
            next.metadata_log.remove(0);
        }
    }
    next.metadata_version += 1;
    let metadata = metadata_json(target, &next, now_ms);
    let metadata_bytes = serde_json::to_vec_pretty(&metadata)
        .map_err(|e| DeliveryError::Store(format!("metadata JSON: {e}")))?;
    buckets
        .put(
            &target.bucket,
            &target.key(&format!(
                "metadata/v{}.metadata.json",
                next.metadata_version
            )),
            Bytes::from(metadata_bytes),
        )
        .await?;
    buckets
        .put(
            &target.bucket,
            &target.key("metadata/version-hint.text"),
            Bytes::from(next.metadata_version.to_string()),
        )
        .await?;
    Ok(next)
}

/// The hour partition value as Iceberg writes it in paths (`2026-11-27-10`).
fn hour_text(hour: i32) -> String {
    let time = jiff::Timestamp::from_second(i64::from(hour) * 3600)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "{:04}-{:02}-{:02}-{:02}",
        time.year(),
        time.month(),
        time.day(),
        time.hour()
    )
}

/// The metadata file of version `version` (what `StaticTable.from_metadata` opens).
pub fn metadata_location(target: &TableTarget, version: u64) -> String {
    target.url(&format!("metadata/v{version}.metadata.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_since_the_epoch() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(3_599_999), 0);
        assert_eq!(hour_of(3_600_000), 1);
        assert_eq!(hour_text(1), "1970-01-01-01");
    }
}
