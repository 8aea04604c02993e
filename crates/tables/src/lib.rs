//! A DynamoDB-compatible subset and CloudWatch metrics, enough for KCL 3 and its coordinator,
//! with no HTTP in it.
//!
//! `dynamodb.rs` serves the DynamoDB_20120810 operations KCL and the SDKs' table clients use
//! (the list is in docs/dynamodb.md, found by logging what KCL sends) on the JSON request
//! body, as `serde_json` values: it is a documented subset, not a general DynamoDB.
//! `expr.rs` is the expression languages, `value.rs` attribute values. `metrics.rs` keeps
//! CloudWatch `PutMetricData` as time series and answers `ListMetrics`,
//! `GetMetricStatistics` and `GetMetricData`; `protocol.rs` decodes and encodes the three
//! protocols CloudWatch clients speak (awsQuery, JSON 1.0, RPC v2 CBOR).
//!
//! Storage: one redb database (`DATA_DIR/tables.redb`) of its own, so a table write never
//! waits on the Kinesis catalog's transactions. Table descriptions live in `tables`, each
//! table's items in `items/<name>` (key: the encoded primary key, value: the item's JSON),
//! metric series in `metric_series` and their datapoints in `metric_points`. Every write is
//! one redb write transaction committed with `Durability::Immediate` (fsync) before the
//! answer, so an acknowledged conditional write survives a crash; the write transaction is
//! also what makes a condition check and its write atomic.

mod dynamodb;
mod error;
pub mod expr;
mod metrics;
pub mod protocol;
pub mod value;

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

pub use error::Error;
pub use metrics::ServiceDatum;
pub use protocol::{Answer, Protocol};

const TABLES: TableDefinition<&str, &[u8]> = TableDefinition::new("tables");

/// The caller's account and region (ARNs), and the request id (CloudWatch's XML answers).
#[derive(Debug, Clone)]
pub struct Context {
    pub account: String,
    pub region: String,
    pub request_id: String,
}

/// DynamoDB tables and CloudWatch metrics on one redb database.
pub struct Tables {
    db: Database,
}

impl Tables {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Tables, Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(TABLES)?;
        metrics::create_tables(&txn)?;
        txn.commit()?;
        Ok(Tables { db })
    }

    /// Serves one DynamoDB operation on its JSON body; the answer is the JSON body to send.
    pub fn dynamodb(&self, ctx: &Context, operation: &str, body: &[u8]) -> Result<Vec<u8>, Error> {
        let request: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| Error::Serialization("Unable to parse the request body as JSON".into()))?;
        let Some(request) = request.as_object() else {
            return Err(Error::Serialization(
                "Start of list found where not expected".into(),
            ));
        };
        let response = dynamodb::handle(self, ctx, operation, request)?;
        serde_json::to_vec(&response).map_err(|e| Error::Storage(e.to_string()))
    }

    /// Serves one DynamoDB request and renders success or error the way DynamoDB does.
    pub fn dynamodb_answer(&self, ctx: &Context, operation: &str, body: &[u8]) -> Answer {
        match self.dynamodb(ctx, operation, body) {
            Ok(body) => Answer::json10(200, body),
            Err(error) => {
                if error.is_internal() {
                    tracing::error!(request_id = %ctx.request_id, %error, "DynamoDB request failed inside Millrace");
                } else {
                    tracing::debug!(%error, operation, "DynamoDB request refused");
                }
                let (status, kind, message, extra) = error.to_aws();
                let mut body = serde_json::Map::new();
                body.insert("__type".into(), kind.into());
                if !message.is_empty() {
                    body.insert("message".into(), message.into());
                }
                if let Some((key, value)) = extra {
                    body.insert(key.into(), value);
                }
                Answer::json10(
                    status,
                    serde_json::Value::Object(body).to_string().into_bytes(),
                )
            }
        }
    }

    /// Serves one CloudWatch request in any of its protocols.
    pub fn cloudwatch_answer(
        &self,
        ctx: &Context,
        protocol: Protocol,
        operation: &str,
        body: &[u8],
    ) -> Answer {
        metrics::answer(self, ctx, protocol, operation, body)
    }

    /// Stores datapoints of the service's own metrics (`AWS/Kinesis`, `AWS/Firehose`) at
    /// `at_secs`, epoch seconds: the roll-up of the counters the services keep.
    pub fn put_service_metrics(
        &self,
        namespace: &str,
        at_secs: f64,
        data: &[ServiceDatum],
    ) -> Result<(), Error> {
        metrics::put_service_metrics(self, namespace, at_secs, data)
    }

    /// Deletes every table and every metric (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        let names: Vec<String> = {
            let table = txn.open_table(TABLES)?;
            let mut names = Vec::new();
            for entry in redb::ReadableTable::iter(&table)? {
                let (name, _) = entry?;
                names.push(name.value().to_string());
            }
            names
        };
        for name in &names {
            let items_name = dynamodb::items_table_name(name);
            let items = dynamodb::items_definition(&items_name);
            txn.delete_table(items)?;
            txn.open_table(TABLES)?.remove(name.as_str())?;
        }
        metrics::reset(&txn)?;
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Table names, for tests and logs.
    pub fn table_names(&self) -> Result<Vec<String>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLES)?;
        let mut names = Vec::new();
        for entry in redb::ReadableTable::iter(&table)? {
            names.push(entry?.0.value().to_string());
        }
        Ok(names)
    }
}
