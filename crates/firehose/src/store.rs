//! Where objects go: an S3-compatible service, or folders under the data directory.
//!
//! The S3 endpoint, region and credentials are resolved the way the AWS SDKs resolve them:
//! the config file's `[firehose]` values win; else `AWS_ENDPOINT_URL_S3`, then
//! `AWS_ENDPOINT_URL`; `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`;
//! `AWS_REGION`, then `AWS_DEFAULT_REGION`; then the profile (`AWS_PROFILE`, else `default`) of
//! the shared credentials and config files (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`,
//! else `~/.aws/credentials` and `~/.aws/config`). With no endpoint at all, the store is
//! embedded: bucket `b` is the folder `<data dir>/buckets/b`, and an object is written to a
//! temporary file, fsynced and renamed into place, so it is either whole or absent.
//!
//! Deliberately not here: object names and contents (the delivery pipeline).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parking_lot::Mutex;

use crate::error::DeliveryError;

/// One PUT gets this long before it counts as failed (and is retried by the pipeline).
const PUT_TIMEOUT_MS: u64 = 120_000;

/// S3 settings from the config file; each wins over the environment.
#[derive(Clone, Debug, Default)]
pub struct S3Overrides {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Path-style requests (`http://host/bucket/key`); default true with a custom endpoint.
    pub path_style: Option<bool>,
}

/// The resolved S3 settings; `endpoint: None` means the embedded store.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub path_style: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// Resolves the settings from `overrides`, the environment (`env`) and the shared files
    /// under `home`.
    pub fn resolve(
        overrides: &S3Overrides,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> S3Settings {
        let env_nonempty = |name: &str| env(name).filter(|v| !v.is_empty());
        let profile = env_nonempty("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
        let shared_file = |var: &str, default: &str| -> HashMap<String, String> {
            let path = env_nonempty(var)
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".aws").join(default)));
            let text = path
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            let section = if default == "config" && profile != "default" {
                format!("profile {profile}")
            } else {
                profile.clone()
            };
            ini_section(&text, &section)
        };
        let credentials = shared_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config = shared_file("AWS_CONFIG_FILE", "config");
        let from_files = |key: &str| credentials.get(key).or(config.get(key)).cloned();
        let endpoint = overrides
            .endpoint
            .clone()
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL"))
            .or_else(|| config.get("endpoint_url").cloned());
        let (access_key_id, secret_access_key, session_token) =
            match (&overrides.access_key_id, &overrides.secret_access_key) {
                (Some(id), Some(secret)) => (
                    Some(id.clone()),
                    Some(secret.clone()),
                    overrides.session_token.clone(),
                ),
                _ => match (
                    env_nonempty("AWS_ACCESS_KEY_ID"),
                    env_nonempty("AWS_SECRET_ACCESS_KEY"),
                ) {
                    (Some(id), Some(secret)) => {
                        (Some(id), Some(secret), env_nonempty("AWS_SESSION_TOKEN"))
                    }
                    _ => (
                        from_files("aws_access_key_id"),
                        from_files("aws_secret_access_key"),
                        from_files("aws_session_token"),
                    ),
                },
            };
        let region = overrides
            .region
            .clone()
            .or_else(|| env_nonempty("AWS_REGION"))
            .or_else(|| env_nonempty("AWS_DEFAULT_REGION"))
            .or_else(|| config.get("region").cloned())
            .unwrap_or_else(|| "us-east-1".to_string());
        S3Settings {
            path_style: overrides.path_style.unwrap_or(endpoint.is_some()),
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
        }
    }
}

/// The `key = value` pairs of `[section]` of an INI text.
fn ini_section(text: &str, section: &str) -> HashMap<String, String> {
    let mut current = String::new();
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
        } else if current == section
            && let Some((key, value)) = line.split_once('=')
        {
            out.insert(key.trim().to_lowercase(), value.trim().to_string());
        }
    }
    out
}

/// The bucket of `arn:aws:s3:::bucket`.
pub fn bucket_of_arn(arn: &str) -> Option<&str> {
    let bucket = arn.rsplit(":::").next()?;
    (arn.contains(":s3:::") && !bucket.is_empty() && bucket != "." && bucket != "..")
        .then_some(bucket)
}

/// Writes objects; cheap to share.
pub struct Buckets {
    backend: Backend,
}

enum Backend {
    Embedded {
        root: PathBuf,
    },
    S3 {
        settings: S3Settings,
        clients: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    },
}

impl Buckets {
    /// S3 when the settings name an endpoint, else folders under `embedded_root`.
    pub fn new(settings: S3Settings, embedded_root: PathBuf) -> Buckets {
        let backend = if settings.endpoint.is_some() {
            Backend::S3 {
                settings,
                clients: Mutex::new(HashMap::new()),
            }
        } else {
            Backend::Embedded {
                root: embedded_root,
            }
        };
        Buckets { backend }
    }

    /// Where objects go, for the start-up log line.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Embedded { root } => format!("folders under {}", root.display()),
            Backend::S3 { settings, .. } => format!(
                "S3 at {} ({})",
                settings.endpoint.as_deref().unwrap_or(""),
                settings.region
            ),
        }
    }

    /// The URL under which readers find the objects of `bucket`: `s3://bucket` for an S3
    /// service, `file:///.../buckets/bucket` for the embedded folders (Iceberg metadata
    /// names its files by these URLs).
    pub fn bucket_url(&self, bucket: &str) -> String {
        match &self.backend {
            Backend::Embedded { root } => {
                let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
                format!("file://{}", root.join(bucket).display())
            }
            Backend::S3 { .. } => format!("s3://{bucket}"),
        }
    }

    /// Writes one whole object.
    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), DeliveryError> {
        match &self.backend {
            Backend::Embedded { root } => {
                let path = embedded_path(root, bucket, key)?;
                tokio::task::spawn_blocking(move || write_file_durably(&path, &body))
                    .await
                    .map_err(|e| DeliveryError::Store(e.to_string()))?
            }
            Backend::S3 { settings, clients } => {
                let client = {
                    let mut clients = clients.lock();
                    match clients.get(bucket) {
                        Some(client) => client.clone(),
                        None => {
                            let client = s3_client(settings, bucket)?;
                            clients.insert(bucket.to_string(), client.clone());
                            client
                        }
                    }
                };
                let path = object_store::path::Path::from(key);
                let put = client.put(&path, object_store::PutPayload::from_bytes(body));
                match tokio::time::timeout(Duration::from_millis(PUT_TIMEOUT_MS), put).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(DeliveryError::Store(error.to_string())),
                    Err(_) => Err(DeliveryError::Store(format!(
                        "PUT s3://{bucket}/{key} took longer than {PUT_TIMEOUT_MS} ms"
                    ))),
                }
            }
        }
    }
}

fn s3_client(settings: &S3Settings, bucket: &str) -> Result<Arc<dyn ObjectStore>, DeliveryError> {
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&settings.region)
        .with_virtual_hosted_style_request(!settings.path_style)
        .with_retry(object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(30),
            ..Default::default()
        });
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(id), Some(secret)) => {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
            if let Some(token) = &settings.session_token {
                builder = builder.with_token(token);
            }
        }
        _ => builder = builder.with_skip_signature(true),
    }
    builder
        .build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| DeliveryError::Store(e.to_string()))
}

/// `root/bucket/key`, refusing names that would leave the bucket's folder.
fn embedded_path(root: &Path, bucket: &str, key: &str) -> Result<PathBuf, DeliveryError> {
    if bucket.is_empty() || bucket.starts_with('.') || bucket.contains(['/', '\\']) {
        return Err(DeliveryError::Store(format!(
            "bucket name {bucket:?} is not usable"
        )));
    }
    let mut path = root.join(bucket);
    let mut segments = key.split('/').filter(|s| !s.is_empty()).peekable();
    if segments.peek().is_none() {
        return Err(DeliveryError::Store("empty object key".into()));
    }
    for segment in segments {
        // `..` and `.` are ordinary characters in S3 keys, not in paths.
        let segment = match segment {
            "." => "%2E",
            ".." => "%2E%2E",
            other => other,
        };
        path.push(segment);
    }
    Ok(path)
}

fn write_file_durably(path: &Path, body: &[u8]) -> Result<(), DeliveryError> {
    use std::io::Write as _;
    let store_error = |e: std::io::Error| DeliveryError::Store(format!("{}: {e}", path.display()));
    let dir = path
        .parent()
        .ok_or_else(|| DeliveryError::Store("object without a folder".into()))?;
    std::fs::create_dir_all(dir).map_err(store_error)?;
    let temp = dir.join(format!(".millrace-{}.tmp", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_the_sdks() -> Result<(), Box<dyn std::error::Error>> {
        let home = tempfile::tempdir()?;
        std::fs::create_dir_all(home.path().join(".aws"))?;
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n[other]\naws_access_key_id=OTHER\naws_secret_access_key=o\n",
        )?;
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile other]\nregion = ap-south-1\nendpoint_url = http://files:9000\n",
        )?;
        let no_env = |_: &str| None;
        let settings = S3Settings::resolve(&S3Overrides::default(), &no_env, Some(home.path()));
        assert_eq!(settings.endpoint, None);
        assert_eq!(settings.region, "eu-west-1");
        assert_eq!(settings.access_key_id.as_deref(), Some("FILEKEY"));
        assert!(!settings.path_style);

        let env = |name: &str| match name {
            "AWS_ENDPOINT_URL" => Some("http://generic:1".to_string()),
            "AWS_ENDPOINT_URL_S3" => Some("http://s3only:2".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("ENVKEY".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_string()),
            "AWS_PROFILE" => Some("other".to_string()),
            _ => None,
        };
        let settings = S3Settings::resolve(&S3Overrides::default(), &env, Some(home.path()));
        assert_eq!(settings.endpoint.as_deref(), Some("http://s3only:2"));
        assert_eq!(settings.access_key_id.as_deref(), Some("ENVKEY"));
        assert_eq!(settings.region, "ap-south-1");
        assert!(settings.path_style);

        let overrides = S3Overrides {
            endpoint: Some("http://configured:3".into()),
            region: Some("us-west-2".into()),
            path_style: Some(false),
            ..Default::default()
        };
        let settings = S3Settings::resolve(&overrides, &env, Some(home.path()));
        assert_eq!(settings.endpoint.as_deref(), Some("http://configured:3"));
        assert_eq!(settings.region, "us-west-2");
        assert!(!settings.path_style);
        assert!(!format!("{settings:?}").contains("envsecret"));
        Ok(())
    }

    #[test]
    fn bucket_arns_and_paths() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(bucket_of_arn("arn:aws:s3:::my-bucket"), Some("my-bucket"));
        assert_eq!(bucket_of_arn("arn:aws:s3:::"), None);
        assert_eq!(bucket_of_arn("arn:aws:kinesis:::x"), None);
        let root = Path::new("/data/buckets");
        assert_eq!(
            embedded_path(root, "b", "a/../c//d")?,
            PathBuf::from("/data/buckets/b/a/%2E%2E/c/d")
        );
        assert!(embedded_path(root, "..", "x").is_err());
        assert!(embedded_path(root, "b", "//").is_err());
        Ok(())
    }

    #[tokio::test]
    async fn embedded_puts_whole_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let settings = S3Settings::resolve(&S3Overrides::default(), &|_| None, None);
        let buckets = Buckets::new(settings, dir.path().to_path_buf());
        buckets
            .put("b", "x/y/obj.gz", Bytes::from_static(b"data"))
            .await?;
        assert_eq!(std::fs::read(dir.path().join("b/x/y/obj.gz"))?, b"data");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("b/x/y"))?.collect();
        assert_eq!(leftovers.len(), 1);
        Ok(())
    }
}
