//! Reference data: the application's `ReferenceDataSources` (an S3 object, CSV or JSON,
//! with a `ReferenceSchema`) read when the application starts into in-application tables
//! that pumps join (`FROM stream [LEFT [OUTER]] JOIN table ON ...`).
//!
//! Where objects are read from is resolved by the binary exactly as Firehose resolves where
//! it writes ([`ReferenceStore`] is filled from the Firehose crate's resolved `S3Settings`):
//! an S3-compatible endpoint with its region and credentials, else the embedded bucket
//! folders under the data directory (`<data dir>/buckets/<bucket>/<key>`), so an object a
//! delivery stream wrote is also readable as reference data.
//!
//! Deliberately not here: joins themselves (engine.rs), the control plane (lib.rs). The
//! table is read once per start, as on AWS (UpdateApplication re-reads it by restarting).
//! Bounds: `REFERENCE_OBJECT_BYTES_MAX`, and the engine's `TABLE_ROWS_MAX`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt as _};
use serde_json::Value as Json;

use crate::input;
use crate::sql::Column;
use crate::value::Value;

/// Largest reference object read (AWS's limit on a reference data source is 1 GB; tables
/// live in memory here, so the bound is lower).
pub const REFERENCE_OBJECT_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// One object read gets this long.
const GET_TIMEOUT_MS: u64 = 120_000;

/// Where reference objects are read from; `endpoint: None` means the embedded folders.
#[derive(Clone, Default)]
pub struct ReferenceStore {
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub path_style: bool,
    /// The embedded buckets' folder (`<data dir>/buckets`); `None`: no embedded store.
    pub embedded_root: Option<PathBuf>,
}

impl std::fmt::Debug for ReferenceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("ReferenceStore")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("embedded_root", &self.embedded_root)
            .finish_non_exhaustive()
    }
}

/// One reference data source of an application.
pub struct ReferenceSource {
    pub table: String,
    pub bucket: String,
    pub key: String,
    pub schema: input::Schema,
}

/// The reference data sources of an application (its `ReferenceDataSourceDescriptions`).
pub fn sources(descriptions: &[Json]) -> Result<Vec<ReferenceSource>, String> {
    let mut out = Vec::new();
    for d in descriptions {
        let table = d
            .get("TableName")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        let schema = input::Schema::from_json(d.get("ReferenceSchema").unwrap_or(&Json::Null))
            .map_err(|e| format!("reference table {table}: {e}"))?;
        let s3 = d.get("S3ReferenceDataSourceDescription");
        let arn = s3
            .and_then(|s| s.get("BucketARN"))
            .and_then(Json::as_str)
            .unwrap_or_default();
        let bucket = arn
            .strip_prefix("arn:aws:s3:::")
            .or_else(|| arn.rsplit(":::").next().filter(|_| arn.contains(":s3:::")))
            .filter(|b| !b.is_empty() && !b.contains('/') && !b.starts_with('.'))
            .ok_or_else(|| {
                format!("reference table {table}: BucketARN {arn:?} is not an S3 bucket ARN")
            })?
            .to_string();
        let key = s3
            .and_then(|s| s.get("FileKey"))
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        out.push(ReferenceSource {
            table,
            bucket,
            key,
            schema,
        });
    }
    Ok(out)
}

/// The tables (name, columns) the code compiles against.
pub fn tables(descriptions: &[Json]) -> Result<Vec<(String, Vec<Column>)>, String> {
    Ok(sources(descriptions)?
        .into_iter()
        .map(|s| (s.table, s.schema.columns()))
        .collect())
}

/// Reads and decodes one reference table. A row that does not decode fails the load (a
/// reference table is all or nothing; AWS fails the application's start the same way).
pub async fn load(
    store: &ReferenceStore,
    source: &ReferenceSource,
) -> Result<Vec<Vec<Value>>, String> {
    let what = format!(
        "reference table {} (s3://{}/{})",
        source.table, source.bucket, source.key
    );
    let body = read_object(store, &source.bucket, &source.key)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let mut rows = Vec::new();
    for (i, row) in source.schema.decode(&body).into_iter().enumerate() {
        rows.push(row.map_err(|e| format!("{what}: row {}: {e}", i + 1))?);
    }
    Ok(rows)
}

async fn read_object(store: &ReferenceStore, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    if key.is_empty() {
        return Err("FileKey is empty".into());
    }
    match &store.endpoint {
        None => {
            let Some(root) = &store.embedded_root else {
                return Err("no S3 endpoint is configured".into());
            };
            let mut path = root.join(bucket);
            for segment in key.split('/').filter(|s| !s.is_empty()) {
                path.push(match segment {
                    "." => "%2E",
                    ".." => "%2E%2E",
                    other => other,
                });
            }
            let size = tokio::fs::metadata(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len();
            if size > REFERENCE_OBJECT_BYTES_MAX {
                return Err(format!(
                    "the object has {size} bytes, more than {REFERENCE_OBJECT_BYTES_MAX}"
                ));
            }
            tokio::fs::read(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Some(endpoint) => {
            let client = s3_client(store, endpoint, bucket)?;
            let path = object_store::path::Path::from(key);
            let get = async {
                let result = client.get(&path).await.map_err(|e| e.to_string())?;
                if result.meta.size > REFERENCE_OBJECT_BYTES_MAX {
                    return Err(format!(
                        "the object has {} bytes, more than {REFERENCE_OBJECT_BYTES_MAX}",
                        result.meta.size
                    ));
                }
                result.bytes().await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(Duration::from_millis(GET_TIMEOUT_MS), get).await {
                Ok(Ok(bytes)) => Ok(bytes.to_vec()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("GET took longer than {GET_TIMEOUT_MS} ms")),
            }
        }
    }
}

fn s3_client(
    store: &ReferenceStore,
    endpoint: &str,
    bucket: &str,
) -> Result<Arc<dyn ObjectStore>, String> {
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&store.region)
        .with_virtual_hosted_style_request(!store.path_style)
        .with_endpoint(endpoint)
        .with_allow_http(endpoint.starts_with("http://"))
        .with_retry(object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(30),
            ..Default::default()
        });
    match (&store.access_key_id, &store.secret_access_key) {
        (Some(id), Some(secret)) => {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
            if let Some(token) = &store.session_token {
                builder = builder.with_token(token);
            }
        }
        _ => builder = builder.with_skip_signature(true),
    }
    builder
        .build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_csv_table_from_the_embedded_buckets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("refs").join("data");
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(
            folder.join("companies.csv"),
            "AMZN,Amazon\nMSFT,Microsoft\n",
        )
        .expect("write");
        let descriptions = vec![serde_json::json!({
            "TableName": "CompanyName",
            "S3ReferenceDataSourceDescription": {"BucketARN": "arn:aws:s3:::refs", "FileKey": "data/companies.csv"},
            "ReferenceSchema": {
                "RecordFormat": {"RecordFormatType": "CSV", "MappingParameters": {"CSVMappingParameters": {"RecordColumnDelimiter": ",", "RecordRowDelimiter": "\n"}}},
                "RecordColumns": [{"Name": "Ticker", "SqlType": "VARCHAR(4)"}, {"Name": "Company", "SqlType": "VARCHAR(20)"}]
            }
        })];
        let sources = sources(&descriptions).expect("sources");
        let store = ReferenceStore {
            embedded_root: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let rows = load(&store, &sources[0]).await.expect("loads");
        assert_eq!(
            rows,
            vec![
                vec![Value::Str("AMZN".into()), Value::Str("Amazon".into())],
                vec![Value::Str("MSFT".into()), Value::Str("Microsoft".into())],
            ]
        );
        let tables = tables(&descriptions).expect("tables");
        assert_eq!(tables[0].0, "CompanyName");
        assert_eq!(tables[0].1.len(), 2);
    }
}
