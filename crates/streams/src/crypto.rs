//! Encryption at rest: records of an encrypted stream reach the log only as ciphertext.
//!
//! Invariant: while a stream has `EncryptionType` KMS, `put` seals every record (partition
//! key and data) before the batch goes to the log, so neither the WAL nor a segment ever
//! holds its plaintext. Records written before StartStreamEncryption, or after
//! StopStreamEncryption, stay (or are written) in clear and read back as before.
//!
//! Keys, as Kinesis uses KMS: each shard's log gets a data key (32 random bytes) for a
//! period (`DATA_KEY_PERIOD_MS`, or `DATA_KEY_RECORDS_MAX` records, whichever comes first;
//! and always a new one after a restart). The data key is wrapped by the stream's master key
//! in the local key store (`millrace-kms`) and only the wrapped form is stored, in the
//! catalog's `DataKeys` table. Reads unwrap it once and cache it; every write and read checks
//! that the master key is still enabled, so disabling a key stops both at once
//! (`KMSDisabledException`), as on AWS.
//!
//! A sealed payload (`codec` documents the plain one it wraps):
//!
//! ```text
//! u8       format version = 1
//! u8       flags = ENCRYPTED | SEALED (0b11)
//! u64      data key id (big-endian; the catalog's DataKeys record)
//! [12]     nonce: 4 random bytes chosen with the data key, then a u64 counter
//! ...      AES-256-GCM of the plain codec payload, then the 16-byte tag
//! ```
//!
//! The associated data is the first 10 bytes plus the log id, so a sealed record moved to
//! another shard or given another key id does not open. Nonces never repeat under a key: a
//! data key is used by one process only, with its own counter, and is retired before the
//! counter could wrap.
//!
//! Not here: the key store itself (`millrace-kms`), and which records are written (`data`).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use millrace_catalog::model::DataKeyRecord;
use millrace_catalog::{Catalog, Table};
use millrace_kms::{KeyStore, KmsError, TAG_BYTES};
use millrace_log::AppendRecord;
use parking_lot::{Mutex, RwLock};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;
use crate::codec::{FLAG_ENCRYPTED, FLAG_SEALED, VERSION};

/// A shard's data key is replaced after this long...
pub const DATA_KEY_PERIOD_MS: i64 = 3_600_000;
/// ... or after this many records (far below the 2^64 nonces a counter could give).
pub const DATA_KEY_RECORDS_MAX: u64 = 1 << 32;
/// Unwrapped data keys kept in memory for reads, at most.
pub const OPENED_KEYS_MAX: usize = 4096;
/// Version, flags, data key id.
const HEADER_BYTES: usize = 2 + 8;
pub const SEALED_OVERHEAD_BYTES: usize = HEADER_BYTES + NONCE_LEN + TAG_BYTES;

struct ActiveKey {
    id: u64,
    master_key_id: String,
    aead: LessSafeKey,
    nonce_prefix: [u8; 4],
    counter: u64,
    created_ms: i64,
}

struct OpenedKey {
    master_key_id: String,
    account: String,
    region: String,
    log_id: u64,
    aead: LessSafeKey,
}

pub(crate) struct Crypto {
    keys: Arc<KeyStore>,
    catalog: Arc<Catalog>,
    /// Log id → the data key its new records are sealed with.
    active: Mutex<HashMap<u64, ActiveKey>>,
    /// Data key id → unwrapped key, for reads.
    opened: RwLock<HashMap<u64, Arc<OpenedKey>>>,
    rng: SystemRandom,
}

fn kms_error(error: KmsError) -> Error {
    Error::Kms(error)
}

fn data_key_name(id: u64) -> String {
    format!("{id:020}")
}

/// What a wrapped data key is bound to (its associated data).
fn wrap_context(id: u64, log_id: u64) -> Vec<u8> {
    format!("millrace data key {id} log {log_id}").into_bytes()
}

fn aad(header: &[u8], log_id: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 8);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&log_id.to_be_bytes());
    aad
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, Error> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Kms(KmsError::Invalid("bad data key length".into())))
}

/// True when a stored payload is sealed (needs [`Crypto::open`] before `codec::decode`).
pub(crate) fn is_sealed(payload: &[u8]) -> bool {
    payload.first() == Some(&VERSION)
        && payload.get(1).is_some_and(|flags| flags & FLAG_SEALED != 0)
}

impl Crypto {
    pub fn new(keys: Arc<KeyStore>, catalog: Arc<Catalog>) -> Crypto {
        Crypto {
            keys,
            catalog,
            active: Mutex::new(HashMap::new()),
            opened: RwLock::new(HashMap::new()),
            rng: SystemRandom::new(),
        }
    }

    /// The master key id a stream's `KeyId` names, if it exists and is enabled
    /// (`KMSNotFoundException`, `KMSDisabledException` otherwise).
    pub fn resolve(&self, key: &str, account: &str, region: &str) -> Result<String, Error> {
        self.keys.resolve(key, region, account).map_err(kms_error)
    }

    /// A new data key for a log, wrapped and committed to the catalog before first use.
    fn new_data_key(
        &self,
        log_id: u64,
        master_key_id: &str,
        account: &str,
        region: &str,
        now_ms: i64,
    ) -> Result<ActiveKey, Error> {
        let id = self
            .catalog
            .write(|txn| txn.allocate("data-key", 1))
            .map_err(Error::Catalog)?;
        let (plain, wrapped) = self
            .keys
            .generate_data_key(master_key_id, &wrap_context(id, log_id))
            .map_err(kms_error)?;
        let record = DataKeyRecord {
            log_id,
            master_key_id: master_key_id.to_string(),
            wrapped: base64::engine::general_purpose::STANDARD.encode(&wrapped),
            created_ms: now_ms,
            account: account.to_string(),
            region: region.to_string(),
        };
        self.catalog
            .write(|txn| txn.put(Table::DataKeys, &data_key_name(id), &record))
            .map_err(Error::Catalog)?;
        let mut nonce_prefix = [0u8; 4];
        self.rng
            .fill(&mut nonce_prefix)
            .map_err(|_| kms_error(KmsError::Random))?;
        Ok(ActiveKey {
            id,
            master_key_id: master_key_id.to_string(),
            aead: aead_key(&plain)?,
            nonce_prefix,
            counter: 0,
            created_ms: now_ms,
        })
    }

    fn usable(key: &ActiveKey, master_key_id: &str, now_ms: i64) -> bool {
        key.master_key_id == master_key_id
            && now_ms - key.created_ms < DATA_KEY_PERIOD_MS
            && key.counter < DATA_KEY_RECORDS_MAX
    }

    /// Seals every payload of a batch in place, under the data keys of their logs.
    pub fn seal_batch(
        &self,
        batch: &mut [AppendRecord],
        master_key_id: &str,
        account: &str,
        region: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        self.keys
            .check_enabled(master_key_id, region, account)
            .map_err(kms_error)?;
        // Make sure every log has a usable key first (catalog writes outside the lock).
        let mut log_ids: Vec<u64> = batch.iter().map(|r| r.log_id).collect();
        log_ids.sort_unstable();
        log_ids.dedup();
        for log_id in log_ids {
            let fresh = self
                .active
                .lock()
                .get(&log_id)
                .is_some_and(|k| Self::usable(k, master_key_id, now_ms));
            if !fresh {
                let key = self.new_data_key(log_id, master_key_id, account, region, now_ms)?;
                self.active.lock().insert(log_id, key);
            }
        }
        let mut active = self.active.lock();
        for record in batch.iter_mut() {
            let key = active
                .get_mut(&record.log_id)
                .ok_or_else(|| kms_error(KmsError::Invalid("no active data key".into())))?;
            let mut header = [0u8; HEADER_BYTES];
            header[0] = VERSION;
            header[1] = FLAG_ENCRYPTED | FLAG_SEALED;
            header[2..].copy_from_slice(&key.id.to_be_bytes());
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..4].copy_from_slice(&key.nonce_prefix);
            nonce[4..].copy_from_slice(&key.counter.to_be_bytes());
            key.counter += 1;
            let mut body = record.payload.to_vec();
            body.reserve(TAG_BYTES);
            key.aead
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad(&header, record.log_id)),
                    &mut body,
                )
                .map_err(|_| kms_error(KmsError::Invalid("seal failed".into())))?;
            let mut out = Vec::with_capacity(record.payload.len() + SEALED_OVERHEAD_BYTES);
            out.extend_from_slice(&header);
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&body);
            record.payload = Bytes::from(out);
        }
        Ok(())
    }

    fn opened_key(&self, id: u64) -> Result<Arc<OpenedKey>, Error> {
        if let Some(key) = self.opened.read().get(&id) {
            return Ok(key.clone());
        }
        let record: DataKeyRecord = self
            .catalog
            .get(Table::DataKeys, &data_key_name(id))
            .map_err(Error::Catalog)?
            .ok_or(Error::MissingDataKey { data_key_id: id })?;
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&record.wrapped)
            .map_err(|_| Error::MissingDataKey { data_key_id: id })?;
        let plain = self
            .keys
            .unwrap_data_key(
                &record.master_key_id,
                &wrapped,
                &wrap_context(id, record.log_id),
                &record.region,
                &record.account,
            )
            .map_err(kms_error)?;
        let key = Arc::new(OpenedKey {
            master_key_id: record.master_key_id,
            account: record.account,
            region: record.region,
            log_id: record.log_id,
            aead: aead_key(&plain)?,
        });
        let mut opened = self.opened.write();
        if opened.len() >= OPENED_KEYS_MAX {
            opened.clear();
        }
        opened.insert(id, key.clone());
        Ok(key)
    }

    /// The plain codec payload of a stored one (sealed or not).
    pub fn open(&self, log_id: u64, offset: u64, payload: &Bytes) -> Result<Bytes, Error> {
        if !is_sealed(payload) {
            return Ok(payload.clone());
        }
        let corrupt = || Error::CorruptRecord { log_id, offset };
        let header = payload.get(..HEADER_BYTES).ok_or_else(corrupt)?;
        let id_bytes: [u8; 8] = header
            .get(2..)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let id = u64::from_be_bytes(id_bytes);
        let key = self.opened_key(id)?;
        if key.log_id != log_id {
            return Err(corrupt());
        }
        self.keys
            .check_enabled(&key.master_key_id, &key.region, &key.account)
            .map_err(kms_error)?;
        let nonce: [u8; NONCE_LEN] = payload
            .get(HEADER_BYTES..HEADER_BYTES + NONCE_LEN)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(corrupt)?;
        let mut body = payload
            .get(HEADER_BYTES + NONCE_LEN..)
            .ok_or_else(corrupt)?
            .to_vec();
        let plain_len = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(header, log_id)),
                &mut body,
            )
            .map_err(|_| corrupt())?
            .len();
        body.truncate(plain_len);
        Ok(Bytes::from(body))
    }

    /// Forgets the data keys of deleted logs (their records are gone; so are the keys).
    pub fn forget_logs(&self, log_ids: &[u64]) -> Result<(), Error> {
        if log_ids.is_empty() {
            return Ok(());
        }
        {
            let mut active = self.active.lock();
            for log_id in log_ids {
                active.remove(log_id);
            }
        }
        self.opened
            .write()
            .retain(|_, key| !log_ids.contains(&key.log_id));
        let records: Vec<(String, DataKeyRecord)> = self
            .catalog
            .load_all(Table::DataKeys)
            .map_err(Error::Catalog)?;
        let doomed: Vec<String> = records
            .into_iter()
            .filter(|(_, r)| log_ids.contains(&r.log_id))
            .map(|(name, _)| name)
            .collect();
        if !doomed.is_empty() {
            self.catalog.write(|txn| -> Result<(), Error> {
                for name in &doomed {
                    txn.delete(Table::DataKeys, name)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Forgets every data key (the reset call for test suites).
    pub fn forget_all(&self) -> Result<(), Error> {
        self.active.lock().clear();
        self.opened.write().clear();
        self.catalog
            .write(|txn| txn.clear(Table::DataKeys))
            .map_err(Error::Catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn setup() -> Result<(tempfile::TempDir, Crypto, String), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::invalid(e.to_string()))?;
        let catalog = Arc::new(Catalog::open(&dir.path().join("catalog.redb"))?);
        let keys = Arc::new(KeyStore::in_memory().map_err(Error::Kms)?);
        let crypto = Crypto::new(keys, catalog);
        let master = crypto.resolve(millrace_kms::DEFAULT_ALIAS, "000000000000", "us-east-1")?;
        Ok((dir, crypto, master))
    }

    #[test]
    fn sealed_records_hold_no_plaintext_and_open_again() -> Result<(), Error> {
        let (_dir, crypto, master) = setup()?;
        let plain = codec::encode(Some("secret-key"), b"very secret data", true);
        let mut batch = vec![
            AppendRecord {
                log_id: 7,
                payload: plain.clone(),
            },
            AppendRecord {
                log_id: 8,
                payload: plain.clone(),
            },
        ];
        crypto.seal_batch(&mut batch, &master, "000000000000", "us-east-1", 0)?;
        for record in &batch {
            assert!(is_sealed(&record.payload));
            assert!(
                !record
                    .payload
                    .windows(b"secret".len())
                    .any(|w| w == b"secret")
            );
            assert_eq!(record.payload.len(), plain.len() + SEALED_OVERHEAD_BYTES);
        }
        let first = batch.first().map(|r| r.payload.clone()).unwrap_or_default();
        assert_eq!(crypto.open(7, 0, &first)?, plain);
        // Bound to its log: the same bytes do not open as a record of log 8.
        assert!(matches!(
            crypto.open(8, 0, &first),
            Err(Error::CorruptRecord { .. })
        ));
        // A flipped bit is refused, never served.
        let mut tampered = first.to_vec();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(
            crypto.open(7, 0, &Bytes::from(tampered)),
            Err(Error::CorruptRecord { .. })
        ));
        // Plain payloads pass through.
        assert_eq!(crypto.open(7, 0, &plain)?, plain);
        Ok(())
    }

    #[test]
    fn disabled_master_key_stops_writes_and_reads() -> Result<(), Error> {
        let (_dir, crypto, master) = setup()?;
        let mut batch = vec![AppendRecord {
            log_id: 1,
            payload: codec::encode(Some("k"), b"d", true),
        }];
        crypto.seal_batch(&mut batch, &master, "a", "r", 0)?;
        crypto
            .keys
            .set_enabled(&master, false)
            .map_err(Error::Kms)?;
        let sealed = batch.first().map(|r| r.payload.clone()).unwrap_or_default();
        assert!(matches!(
            crypto.open(1, 0, &sealed),
            Err(Error::Kms(KmsError::Disabled { .. }))
        ));
        assert!(matches!(
            crypto.seal_batch(&mut batch, &master, "a", "r", 0),
            Err(Error::Kms(KmsError::Disabled { .. }))
        ));
        Ok(())
    }

    #[test]
    fn data_keys_rotate_by_period() -> Result<(), Error> {
        let (_dir, crypto, master) = setup()?;
        let mut batch = vec![AppendRecord {
            log_id: 1,
            payload: codec::encode(None, b"x", true),
        }];
        crypto.seal_batch(&mut batch, &master, "a", "r", 0)?;
        let first_id = crypto.active.lock().get(&1).map(|k| k.id);
        crypto.seal_batch(&mut batch, &master, "a", "r", DATA_KEY_PERIOD_MS)?;
        let second_id = crypto.active.lock().get(&1).map(|k| k.id);
        assert!(first_id.is_some() && second_id.is_some() && first_id != second_id);
        crypto.forget_logs(&[1])?;
        let left: Vec<(String, DataKeyRecord)> = crypto.catalog.load_all(Table::DataKeys)?;
        assert!(left.is_empty());
        Ok(())
    }
}
