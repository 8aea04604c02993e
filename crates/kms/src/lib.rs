//! A local key store standing in for AWS KMS: the master keys that protect Millrace's data
//! keys, in one file the operator controls.
//!
//! A master key has an id (a UUID, as KMS key ids are), any number of aliases
//! (`alias/orders`), an enabled flag and 32 bytes of key material. A key is named the ways
//! KMS accepts: key id, key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`), alias name, alias ARN
//! (`arn:aws:kms:REGION:ACCOUNT:alias/NAME`). The store serves every account and region, so
//! the region and account of an ARN are not compared. `alias/aws/kinesis` (the AWS-managed
//! key Kinesis uses by default) is created, with fresh material, the first time it is
//! named while the file lacks it (so a server that never encrypts writes no key file).
//!
//! What it does with them is what Kinesis asks KMS for: [`KeyStore::generate_data_key`]
//! returns a fresh 256-bit data key and that key wrapped (AES-256-GCM under the master key,
//! with the caller's context as associated data); [`KeyStore::unwrap_data_key`] gives the
//! plaintext data key back. Both fail with [`KmsError::NotFound`] or [`KmsError::Disabled`],
//! which the service turns into `KMSNotFoundException` / `KMSDisabledException`.
//!
//! The file (JSON, see [`KeyFile`]) is written atomically (temporary file, fsync, rename)
//! with mode 0600, and re-read when it changes ([`KeyStore::reload_if_changed`]), so
//! `millrace kms disable-key` takes effect on a running server. It is the one place master
//! keys exist in clear; it must not live in the data directory (the binary refuses that).
//!
//! Not here: records, streams or data keys' storage (the `streams` crate keeps wrapped data
//! keys in the catalog and does the record encryption).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use parking_lot::{Mutex, RwLock};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The alias of the key Kinesis uses when a stream names the AWS-managed key.
pub const DEFAULT_ALIAS: &str = "alias/aws/kinesis";
/// Bytes of a master key and of a data key (AES-256).
pub const KEY_BYTES: usize = 32;
/// The AEAD tag length of AES-256-GCM.
pub const TAG_BYTES: usize = 16;
/// Master keys a store holds at most.
pub const KEYS_MAX: usize = 10_000;
const FILE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// No key answers to this name.
    #[error("{message}")]
    NotFound { message: String },
    /// The key exists but is disabled.
    #[error("{message}")]
    Disabled { message: String },
    /// A wrapped data key does not open under its master key (tampered or foreign).
    #[error("a wrapped data key could not be opened with master key {key_id}")]
    Unwrap { key_id: String },
    #[error("key store file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the system random generator failed")]
    Random,
    #[error("key store: {0}")]
    Invalid(String),
}

/// The key store file.
///
/// ```json
/// {"version": 1, "keys": [{"key_id": "6f1d...", "aliases": ["alias/aws/kinesis"],
///   "enabled": true, "material": "<base64 of 32 bytes>", "description": "..."}]}
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub version: u32,
    #[serde(default)]
    pub keys: Vec<MasterKeyEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterKeyEntry {
    pub key_id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// Base64 of the 32-byte key material.
    pub material: String,
    #[serde(default)]
    pub description: Option<String>,
}

fn enabled_default() -> bool {
    true
}

impl std::fmt::Debug for MasterKeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeyEntry")
            .field("key_id", &self.key_id)
            .field("aliases", &self.aliases)
            .field("enabled", &self.enabled)
            .field("material", &"<redacted>")
            .finish()
    }
}

/// A master key in memory.
struct MasterKey {
    key_id: String,
    aliases: Vec<String>,
    enabled: bool,
    aead: LessSafeKey,
}

/// What a caller may know about a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: String,
    pub aliases: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, MasterKey>,
    /// Alias name → key id.
    aliases: HashMap<String, String>,
    file: KeyFile,
}

/// The master keys, loaded from their file (or held in memory, for tests).
pub struct KeyStore {
    path: Option<PathBuf>,
    keys: RwLock<Keys>,
    loaded_mtime: Mutex<Option<SystemTime>>,
    /// Serialises creation of the default key.
    creating: Mutex<()>,
    rng: SystemRandom,
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> KmsError {
    KmsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Keys {
    fn from_file(file: KeyFile) -> Result<Keys, KmsError> {
        if file.version != FILE_VERSION {
            return Err(KmsError::Invalid(format!(
                "unsupported key file version {}",
                file.version
            )));
        }
        if file.keys.len() > KEYS_MAX {
            return Err(KmsError::Invalid(format!(
                "{} keys, more than the {KEYS_MAX} a store holds",
                file.keys.len()
            )));
        }
        let mut keys = Keys::default();
        for entry in &file.keys {
            let material = b64()
                .decode(&entry.material)
                .map_err(|_| KmsError::Invalid(format!("key {}: bad material", entry.key_id)))?;
            if material.len() != KEY_BYTES {
                return Err(KmsError::Invalid(format!(
                    "key {}: material must be {KEY_BYTES} bytes",
                    entry.key_id
                )));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &material)
                .map_err(|_| KmsError::Invalid(format!("key {}: bad material", entry.key_id)))?;
            if keys.by_id.contains_key(&entry.key_id) {
                return Err(KmsError::Invalid(format!(
                    "key id {} appears twice",
                    entry.key_id
                )));
            }
            for alias in &entry.aliases {
                if !alias.starts_with("alias/") {
                    return Err(KmsError::Invalid(format!(
                        "alias {alias:?} must start with alias/"
                    )));
                }
                if keys
                    .aliases
                    .insert(alias.clone(), entry.key_id.clone())
                    .is_some()
                {
                    return Err(KmsError::Invalid(format!("alias {alias} names two keys")));
                }
            }
            keys.by_id.insert(
                entry.key_id.clone(),
                MasterKey {
                    key_id: entry.key_id.clone(),
                    aliases: entry.aliases.clone(),
                    enabled: entry.enabled,
                    aead: LessSafeKey::new(unbound),
                },
            );
        }
        keys.file = file;
        Ok(keys)
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: a temporary file beside it, fsync,
/// rename, fsync of the directory.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keys".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

impl KeyStore {
    /// A store that lives only in memory (tests), with `alias/aws/kinesis`.
    pub fn in_memory() -> Result<KeyStore, KmsError> {
        let store = KeyStore {
            path: None,
            keys: RwLock::new(Keys::from_file(KeyFile {
                version: FILE_VERSION,
                keys: Vec::new(),
            })?),
            loaded_mtime: Mutex::new(None),
            creating: Mutex::new(()),
            rng: SystemRandom::new(),
        };
        Ok(store)
    }

    /// Opens the store at `path`. A missing file is an empty store; the file is created
    /// (0600) at the first key created.
    pub fn open(path: &Path) -> Result<KeyStore, KmsError> {
        let store = KeyStore {
            path: Some(path.to_path_buf()),
            keys: RwLock::new(Keys::from_file(KeyFile {
                version: FILE_VERSION,
                keys: Vec::new(),
            })?),
            loaded_mtime: Mutex::new(None),
            creating: Mutex::new(()),
            rng: SystemRandom::new(),
        };
        if path.exists() {
            store.reload()?;
        }
        Ok(store)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn read_file(path: &Path) -> Result<(KeyFile, Option<SystemTime>), KmsError> {
        let metadata = std::fs::metadata(path).map_err(|e| file_error(path, e))?;
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| file_error(path, e))?;
        Ok((file, metadata.modified().ok()))
    }

    fn reload(&self) -> Result<(), KmsError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let (file, mtime) = Self::read_file(path)?;
        let keys = Keys::from_file(file).map_err(|e| file_error(path, e))?;
        *self.keys.write() = keys;
        *self.loaded_mtime.lock() = mtime;
        Ok(())
    }

    /// Re-reads the file when its modification time changed; returns true when it did. A
    /// file that no longer parses is reported and the keys in memory stay in force.
    pub fn reload_if_changed(&self) -> Result<bool, KmsError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let mtime = match std::fs::metadata(path).and_then(|m| m.modified()) {
            Ok(mtime) => mtime,
            // Not written yet (no key made so far): nothing to re-read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(file_error(path, e)),
        };
        if Some(mtime) == *self.loaded_mtime.lock() {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    fn save(&self, keys: &Keys) -> Result<(), KmsError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(&keys.file)
            .map_err(|e| KmsError::Invalid(e.to_string()))?;
        write_private_file(path, text.as_bytes()).map_err(|e| file_error(path, e))?;
        *self.loaded_mtime.lock() = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(())
    }

    fn random_key_material(&self) -> Result<[u8; KEY_BYTES], KmsError> {
        let mut material = [0u8; KEY_BYTES];
        self.rng.fill(&mut material).map_err(|_| KmsError::Random)?;
        Ok(material)
    }

    fn ensure_default_key(&self) -> Result<(), KmsError> {
        if self.keys.read().aliases.contains_key(DEFAULT_ALIAS) {
            return Ok(());
        }
        // Two first users racing: the second sees the first's key under the lock.
        let _creating = self.creating.lock();
        if self.keys.read().aliases.contains_key(DEFAULT_ALIAS) {
            return Ok(());
        }
        self.create_key(
            &[DEFAULT_ALIAS.to_string()],
            Some("Default key that protects Kinesis data when no other key is named"),
        )?;
        Ok(())
    }

    /// Creates a key with fresh random material; returns its id.
    pub fn create_key(
        &self,
        aliases: &[String],
        description: Option<&str>,
    ) -> Result<String, KmsError> {
        let material = self.random_key_material()?;
        let key_id = uuid::Uuid::new_v4().to_string();
        let mut keys = self.keys.write();
        let mut file = keys.file.clone();
        file.keys.push(MasterKeyEntry {
            key_id: key_id.clone(),
            aliases: aliases.to_vec(),
            enabled: true,
            material: b64().encode(material),
            description: description.map(str::to_string),
        });
        let updated = Keys::from_file(file)?;
        self.save(&updated)?;
        *keys = updated;
        Ok(key_id)
    }

    /// Enables or disables a key (named any way [`KeyStore::resolve`] accepts).
    pub fn set_enabled(&self, key: &str, enabled: bool) -> Result<String, KmsError> {
        let mut keys = self.keys.write();
        let key_id = Self::find(&keys, key)?.key_id.clone();
        let mut file = keys.file.clone();
        for entry in &mut file.keys {
            if entry.key_id == key_id {
                entry.enabled = enabled;
            }
        }
        let updated = Keys::from_file(file)?;
        self.save(&updated)?;
        *keys = updated;
        Ok(key_id)
    }

    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .read()
            .file
            .keys
            .iter()
            .map(|e| KeyInfo {
                key_id: e.key_id.clone(),
                aliases: e.aliases.clone(),
                enabled: e.enabled,
                description: e.description.clone(),
            })
            .collect()
    }

    fn not_found(key: &str, region: &str, account: &str) -> KmsError {
        let message = if let Some(alias) = alias_name(key) {
            format!("Alias arn:aws:kms:{region}:{account}:{alias} is not found.")
        } else {
            let id = key.rsplit("key/").next().unwrap_or(key);
            format!("Key 'arn:aws:kms:{region}:{account}:key/{id}' does not exist")
        };
        KmsError::NotFound { message }
    }

    fn find<'k>(keys: &'k Keys, key: &str) -> Result<&'k MasterKey, KmsError> {
        let id = match alias_name(key) {
            Some(alias) => keys.aliases.get(alias).map(String::as_str),
            None => Some(key_id_of(key)),
        };
        id.and_then(|id| keys.by_id.get(id))
            .ok_or_else(|| Self::not_found(key, "-", "-"))
    }

    /// The key id a name refers to, if the key exists and is enabled. `region` and
    /// `account` only shape the error messages (AWS names keys by ARN there).
    pub fn resolve(&self, key: &str, region: &str, account: &str) -> Result<String, KmsError> {
        if alias_name(key) == Some(DEFAULT_ALIAS) {
            self.ensure_default_key()?;
        }
        // A key made with `millrace kms create-key` a moment ago may not have been picked up
        // by the periodic reload yet: look at the file once more before saying it is not
        // there.
        if Self::find(&self.keys.read(), key).is_err() {
            self.reload_if_changed()?;
        }
        let keys = self.keys.read();
        let found = Self::find(&keys, key).map_err(|_| Self::not_found(key, region, account))?;
        if !found.enabled {
            return Err(KmsError::Disabled {
                message: format!(
                    "arn:aws:kms:{region}:{account}:key/{} is disabled.",
                    found.key_id
                ),
            });
        }
        Ok(found.key_id.clone())
    }

    /// A fresh data key and the same key wrapped under master key `key_id`; `context` is
    /// bound to the wrapping (it must be given again to unwrap).
    pub fn generate_data_key(
        &self,
        key_id: &str,
        context: &[u8],
    ) -> Result<([u8; KEY_BYTES], Vec<u8>), KmsError> {
        let data_key = self.random_key_material()?;
        let keys = self.keys.read();
        let master = keys.by_id.get(key_id).ok_or_else(|| KmsError::NotFound {
            message: format!("Key '{key_id}' does not exist"),
        })?;
        if !master.enabled {
            return Err(KmsError::Disabled {
                message: format!("{key_id} is disabled."),
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| KmsError::Random)?;
        let mut sealed = data_key.to_vec();
        master
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut sealed,
            )
            .map_err(|_| KmsError::Random)?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        Ok((data_key, wrapped))
    }

    /// The plaintext of a data key wrapped by [`KeyStore::generate_data_key`].
    pub fn unwrap_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &[u8],
        region: &str,
        account: &str,
    ) -> Result<[u8; KEY_BYTES], KmsError> {
        let keys = self.keys.read();
        let master = keys
            .by_id
            .get(key_id)
            .ok_or_else(|| Self::not_found(key_id, region, account))?;
        if !master.enabled {
            return Err(KmsError::Disabled {
                message: format!("arn:aws:kms:{region}:{account}:key/{key_id} is disabled."),
            });
        }
        let unwrap_error = || KmsError::Unwrap {
            key_id: master.key_id.clone(),
        };
        let nonce: [u8; NONCE_LEN] = wrapped
            .get(..NONCE_LEN)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(unwrap_error)?;
        let mut sealed = wrapped.get(NONCE_LEN..).ok_or_else(unwrap_error)?.to_vec();
        let plain = master
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut sealed,
            )
            .map_err(|_| unwrap_error())?;
        plain.try_into().map_err(|_| unwrap_error())
    }

    /// True while the key exists and is enabled (checked on every write and read of an
    /// encrypted stream, so disabling a key takes effect at once).
    pub fn check_enabled(&self, key_id: &str, region: &str, account: &str) -> Result<(), KmsError> {
        let keys = self.keys.read();
        match keys.by_id.get(key_id) {
            None => Err(Self::not_found(key_id, region, account)),
            Some(key) if !key.enabled => Err(KmsError::Disabled {
                message: format!("arn:aws:kms:{region}:{account}:key/{key_id} is disabled."),
            }),
            Some(_) => Ok(()),
        }
    }

    /// The aliases of a key (for listings).
    pub fn aliases_of(&self, key_id: &str) -> Vec<String> {
        self.keys
            .read()
            .by_id
            .get(key_id)
            .map(|k| k.aliases.clone())
            .unwrap_or_default()
    }
}

/// `alias/x` or `arn:aws:kms:R:A:alias/x` → `alias/x`.
fn alias_name(key: &str) -> Option<&str> {
    if key.starts_with("alias/") {
        return Some(key);
    }
    let resource = arn_resource(key)?;
    resource.starts_with("alias/").then_some(resource)
}

/// `arn:PARTITION:kms:REGION:ACCOUNT:RESOURCE` → `RESOURCE`.
fn arn_resource(key: &str) -> Option<&str> {
    if !key.starts_with("arn:") {
        return None;
    }
    key.splitn(6, ':').nth(5)
}

/// `ID` or `arn:aws:kms:R:A:key/ID` → `ID`.
fn key_id_of(key: &str) -> &str {
    arn_resource(key)
        .and_then(|resource| resource.strip_prefix("key/"))
        .unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_by_id_arn_and_alias() -> Result<(), KmsError> {
        let store = KeyStore::in_memory()?;
        let id = store.resolve(DEFAULT_ALIAS, "us-east-1", "123456789012")?;
        assert_eq!(
            store.resolve(
                "arn:aws:kms:us-east-1:123456789012:alias/aws/kinesis",
                "us-east-1",
                "1"
            )?,
            id
        );
        assert_eq!(store.resolve(&id, "r", "a")?, id);
        assert_eq!(
            store.resolve(
                &format!("arn:aws:kms:eu-west-1:111122223333:key/{id}"),
                "r",
                "a"
            )?,
            id
        );
        let missing = store.resolve("alias/nope", "us-east-1", "123456789012");
        assert_eq!(
            missing.err().map(|e| e.to_string()),
            Some("Alias arn:aws:kms:us-east-1:123456789012:alias/nope is not found.".into())
        );
        let missing = store.resolve("1234abcd-12ab-34cd-56ef-1234567890ab", "us-east-1", "1");
        assert_eq!(
            missing.err().map(|e| e.to_string()),
            Some(
                "Key 'arn:aws:kms:us-east-1:1:key/1234abcd-12ab-34cd-56ef-1234567890ab' does \
                 not exist"
                    .into()
            )
        );
        Ok(())
    }

    #[test]
    fn data_keys_wrap_and_unwrap_and_disable() -> Result<(), KmsError> {
        let dir = tempfile::tempdir().map_err(|e| KmsError::Invalid(e.to_string()))?;
        let path = dir.path().join("keys.json");
        let store = KeyStore::open(&path)?;
        let id = store.create_key(&["alias/orders".to_string()], None)?;
        let (plain, wrapped) = store.generate_data_key(&id, b"ctx")?;
        assert_ne!(&wrapped[NONCE_LEN..NONCE_LEN + KEY_BYTES], &plain[..]);
        assert_eq!(
            store.unwrap_data_key(&id, &wrapped, b"ctx", "r", "a")?,
            plain
        );
        assert!(matches!(
            store.unwrap_data_key(&id, &wrapped, b"other", "r", "a"),
            Err(KmsError::Unwrap { .. })
        ));
        // The file is private and survives a reopen; disabling shows through resolve.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map_err(|e| KmsError::Invalid(e.to_string()))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let reopened = KeyStore::open(&path)?;
        assert_eq!(reopened.resolve("alias/orders", "r", "a")?, id);
        store.set_enabled("alias/orders", false)?;
        // (Same-second writes may share an mtime on coarse filesystems: reload outright.)
        reopened.reload()?;
        assert!(matches!(
            reopened.resolve("alias/orders", "r", "a"),
            Err(KmsError::Disabled { .. })
        ));
        assert!(matches!(
            reopened.unwrap_data_key(&id, &wrapped, b"ctx", "r", "a"),
            Err(KmsError::Disabled { .. })
        ));
        Ok(())
    }

    #[test]
    fn debug_never_shows_material() -> Result<(), KmsError> {
        let store = KeyStore::in_memory()?;
        store.resolve(DEFAULT_ALIAS, "r", "a")?;
        let entry = store.keys.read().file.keys.first().cloned();
        let text = format!("{entry:?}");
        assert!(text.contains("<redacted>"));
        let material = entry.map(|e| e.material).unwrap_or_default();
        assert!(!material.is_empty() && !text.contains(&material));
        Ok(())
    }
}
