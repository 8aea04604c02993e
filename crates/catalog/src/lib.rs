//! Transactional metadata for Millrace: streams, shards and their lineage, consumers, queues
//! and their delivery snapshots, channels and their progress, tags, policies, account
//! settings, Firehose delivery streams and their progress, and the
//! allocator of log ids.
//!
//! The catalog is a thin typed layer over one redb database (`catalog.redb` in the data
//! directory). Every change is one redb write transaction, committed durably before the
//! caller answers, so a crash in the middle of a split either leaves the stream as it was or
//! fully split, never half of each.
//!
//! What it deliberately does not do: it holds plain data (the `model` module) and knows no
//! Kinesis behaviour. Which shard a split creates, what a status means, which errors to give:
//! all of that lives in the `streams` crate, which keeps an in-memory copy of what it needs
//! and writes through this API.

pub mod model;

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

/// One redb table per kind of record. Keys are strings chosen by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Kinesis streams, keyed by `account/region/name`.
    Streams,
    /// Per account and region settings, keyed by `account/region`.
    Accounts,
    /// Installation-wide values (counters, secrets), keyed by name.
    Meta,
    /// Data keys of encrypted streams, wrapped by a master key, keyed by their id (20
    /// decimal digits, so key order is id order).
    DataKeys,
    /// Firehose delivery streams, keyed by `account/region/name`.
    DeliveryStreams,
    /// Firehose delivery progress (delivered offset, source shard positions), keyed like
    /// `DeliveryStreams`; apart so the frequent checkpoint writes stay small.
    DeliveryCheckpoints,
    /// Kinesis queue delivery state (`QueueStateRecord`), keyed by queue id; apart from
    /// the stream record so a snapshot does not rewrite it.
    QueueStates,
    /// Lambda functions created through the Lambda API (an HTTP URL each), keyed by
    /// `account/region/name`.
    Functions,
    /// Event source mappings (stream or consumer → function), keyed by UUID.
    EventSourceMappings,
    /// Event source mapping progress, keyed by `UUID/shardId`: written only after the
    /// function succeeded or the batch went to the on-failure destination.
    MappingCheckpoints,
    /// Kinesis channels (`ChannelRecord`), keyed by `account/region/name`.
    Channels,
    /// Channel delivery progress (`ChannelCheckpointRecord`), keyed by channel id; apart so
    /// the frequent checkpoint writes stay small.
    ChannelCheckpoints,
    /// Kinesis Data Analytics SQL applications, keyed by `account/region/name`.
    Applications,
    /// Analytics application progress (source shard positions and window state), keyed
    /// like `Applications`; apart so the frequent checkpoint writes stay small.
    ApplicationCheckpoints,
}

impl Table {
    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Streams => TableDefinition::new("streams"),
            Table::Accounts => TableDefinition::new("accounts"),
            Table::Meta => TableDefinition::new("meta"),
            Table::DataKeys => TableDefinition::new("data_keys"),
            Table::DeliveryStreams => TableDefinition::new("delivery_streams"),
            Table::DeliveryCheckpoints => TableDefinition::new("delivery_checkpoints"),
            Table::QueueStates => TableDefinition::new("queue_states"),
            Table::Functions => TableDefinition::new("functions"),
            Table::EventSourceMappings => TableDefinition::new("event_source_mappings"),
            Table::MappingCheckpoints => TableDefinition::new("mapping_checkpoints"),
            Table::Channels => TableDefinition::new("channels"),
            Table::ChannelCheckpoints => TableDefinition::new("channel_checkpoints"),
            Table::Applications => TableDefinition::new("applications"),
            Table::ApplicationCheckpoints => TableDefinition::new("application_checkpoints"),
        }
    }

    const ALL: [Table; 14] = [
        Table::Streams,
        Table::Accounts,
        Table::Meta,
        Table::DataKeys,
        Table::DeliveryStreams,
        Table::DeliveryCheckpoints,
        Table::QueueStates,
        Table::Functions,
        Table::EventSourceMappings,
        Table::MappingCheckpoints,
        Table::Channels,
        Table::ChannelCheckpoints,
        Table::Applications,
        Table::ApplicationCheckpoints,
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog storage error: {0}")]
    Storage(String),
    #[error("catalog record {table:?}/{key} could not be decoded: {source}")]
    Decode {
        table: Table,
        key: String,
        source: serde_json::Error,
    },
    #[error("catalog record could not be encoded: {0}")]
    Encode(serde_json::Error),
}

fn storage(error: impl std::fmt::Display) -> CatalogError {
    CatalogError::Storage(error.to_string())
}

/// The metadata store. Cheap to share behind an `Arc`; redb serialises writers.
pub struct Catalog {
    db: redb::Database,
}

impl Catalog {
    /// Opens (or creates) the catalog file and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let db = redb::Database::create(path).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        for table in Table::ALL {
            txn.open_table(table.definition()).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Catalog { db })
    }

    /// Every record of a table, in key order.
    pub fn load_all<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(table.definition()).map_err(storage)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            let key = key.value().to_string();
            let record =
                serde_json::from_slice(value.value()).map_err(|source| CatalogError::Decode {
                    table,
                    key: key.clone(),
                    source,
                })?;
            out.push((key, record));
        }
        Ok(out)
    }

    /// One record, if present.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(table.definition()).map_err(storage)?;
        match t.get(key).map_err(storage)? {
            None => Ok(None),
            Some(value) => serde_json::from_slice(value.value())
                .map(Some)
                .map_err(|source| CatalogError::Decode {
                    table,
                    key: key.to_string(),
                    source,
                }),
        }
    }

    /// Runs `f` in one write transaction and commits it durably. If `f` fails, nothing it
    /// wrote is kept.
    pub fn write<R, E: From<CatalogError>>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let txn = self.db.begin_write().map_err(storage)?;
        let mut wrapped = Txn { txn: &txn };
        let result = f(&mut wrapped)?;
        txn.commit().map_err(storage)?;
        Ok(result)
    }
}

/// A write transaction handed to [`Catalog::write`].
pub struct Txn<'a> {
    txn: &'a redb::WriteTransaction,
}

impl Txn<'_> {
    pub fn put<T: Serialize>(
        &mut self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), CatalogError> {
        let bytes = serde_json::to_vec(value).map_err(CatalogError::Encode)?;
        let mut t = self.txn.open_table(table.definition()).map_err(storage)?;
        t.insert(key, bytes.as_slice()).map_err(storage)?;
        Ok(())
    }

    pub fn delete(&mut self, table: Table, key: &str) -> Result<(), CatalogError> {
        let mut t = self.txn.open_table(table.definition()).map_err(storage)?;
        t.remove(key).map_err(storage)?;
        Ok(())
    }

    pub fn get<T: DeserializeOwned>(
        &mut self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, CatalogError> {
        let t = self.txn.open_table(table.definition()).map_err(storage)?;
        let value = t.get(key).map_err(storage)?;
        match value {
            None => Ok(None),
            Some(value) => serde_json::from_slice(value.value())
                .map(Some)
                .map_err(|source| CatalogError::Decode {
                    table,
                    key: key.to_string(),
                    source,
                }),
        }
    }

    /// Deletes every record of a table (the reset call for test suites).
    pub fn clear(&mut self, table: Table) -> Result<(), CatalogError> {
        let mut t = self.txn.open_table(table.definition()).map_err(storage)?;
        t.retain(|_, _| false).map_err(storage)?;
        Ok(())
    }

    /// Allocates `n` consecutive values of the named counter and returns the first. Counters
    /// never go back, so an id is never reused, even after the record that used it is gone.
    pub fn allocate(&mut self, counter: &str, n: u64) -> Result<u64, CatalogError> {
        let key = format!("counter/{counter}");
        let first: u64 = self.get(Table::Meta, &key)?.unwrap_or(1);
        self.put(Table::Meta, &key, &(first + n))?;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Thing {
        n: u32,
    }

    #[test]
    fn write_read_and_rollback() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("catalog.redb");
        {
            let catalog = Catalog::open(&path)?;
            catalog.write(|txn| txn.put(Table::Streams, "a", &Thing { n: 1 }))?;
            let failed: Result<(), CatalogError> = catalog.write(|txn| {
                txn.put(Table::Streams, "b", &Thing { n: 2 })?;
                Err(CatalogError::Storage("abort".into()))
            });
            assert!(failed.is_err());
            let ids: Vec<u64> = (0..3)
                .map(|_| catalog.write(|txn| txn.allocate("log", 2)))
                .collect::<Result<_, CatalogError>>()?;
            assert_eq!(ids, vec![1, 3, 5]);
        }
        let catalog = Catalog::open(&path)?;
        let all: Vec<(String, Thing)> = catalog.load_all(Table::Streams)?;
        assert_eq!(all, vec![("a".to_string(), Thing { n: 1 })]);
        catalog.write(|txn| txn.clear(Table::Streams))?;
        assert!(catalog.load_all::<Thing>(Table::Streams)?.is_empty());
        Ok(())
    }
}
