//! The binary's share of security: turning the config's credentials and policies into the
//! server's `Security`, choosing and guarding the key store file, private files and
//! directories, `millrace gen-cert` and `millrace kms ...`.
//!
//! Rules kept here: secrets are never logged; the data directory is created 0700 and every
//! file the process creates is owner-only (umask 077); the key store (master keys in clear)
//! is never inside the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use millrace_kms::KeyStore;
use millrace_server::policy::PolicyDocument;
use millrace_server::{Authenticator, Authorizer, CredentialSpec, Principal, Security};
use millrace_wire::sigv4::Secret;

use crate::config::FileConfig;

/// Makes every file and directory this process creates owner-only.
pub fn restrict_umask() {
    // SAFETY: umask only changes the process's file-mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the data directory with mode 0700 (and warns when an existing one is open to
/// others).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            data_dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "the data directory is open to other users: chmod 700 it"
        );
    }
    Ok(())
}

/// The authenticator and authorizer the config describes; `None` when it configures no
/// credentials (development mode).
pub fn build_security(file: &FileConfig) -> anyhow::Result<Option<Security>> {
    if file.credentials.is_empty() {
        if !file.policies.is_empty() {
            tracing::warn!(
                "[[policy]] is configured without any [[credential]]: policies are not \
                 enforced in development mode"
            );
        }
        return Ok(None);
    }
    let mut specs = Vec::with_capacity(file.credentials.len());
    for credential in &file.credentials {
        let secret = match (
            &credential.secret_access_key,
            &credential.secret_access_key_file,
        ) {
            (Some(secret), None) => secret.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "cannot read secret_access_key_file of {}",
                        credential.access_key_id
                    )
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            _ => anyhow::bail!(
                "credential {} needs exactly one of secret_access_key and \
                 secret_access_key_file",
                credential.access_key_id
            ),
        };
        let principal = Principal::parse(&credential.principal).map_err(anyhow::Error::msg)?;
        specs.push(CredentialSpec {
            access_key_id: credential.access_key_id.clone(),
            secret: Secret {
                secret_access_key: secret,
                session_token: credential.session_token.clone(),
            },
            principal: Arc::new(principal),
        });
    }
    let known: Vec<String> = specs.iter().map(|s| s.principal.arn.clone()).collect();
    let authenticator = Authenticator::new(specs).map_err(anyhow::Error::msg)?;
    let mut policies = Vec::new();
    for policy in &file.policies {
        let text = match (&policy.document, &policy.document_file) {
            (Some(text), None) => text.clone(),
            (None, Some(path)) => std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read document_file {} of policy {}",
                    path.display(),
                    policy.name
                )
            })?,
            _ => anyhow::bail!(
                "policy {} needs exactly one of document and document_file",
                policy.name
            ),
        };
        let document = PolicyDocument::parse(&text)
            .with_context(|| format!("policy {} cannot be used", policy.name))?;
        for principal in &policy.principals {
            if !known.contains(principal) {
                tracing::warn!(
                    policy = %policy.name,
                    %principal,
                    "the policy is attached to a principal no credential authenticates as"
                );
            }
            policies.push((principal.clone(), document.clone()));
        }
    }
    tracing::info!(
        access_keys = authenticator.len(),
        policies = file.policies.len(),
        "authentication is on: every request must be signed (SigV4) by a configured key"
    );
    Ok(Some(Security {
        authenticator,
        authorizer: Authorizer::new(policies),
    }))
}

/// `DATA_DIR.kms-keys.json`, beside the data directory (never inside it).
pub fn default_key_file(data_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "millrace-data".into());
    absolute
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{name}.kms-keys.json"))
}

/// Opens the key store, refusing a file inside the data directory.
pub fn open_key_store(key_file: &Path, data_dir: &Path) -> anyhow::Result<Arc<KeyStore>> {
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let key_dir = key_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
    if key_dir.starts_with(&data) {
        anyhow::bail!(
            "the key store {} is inside the data directory {}: master keys must live \
             elsewhere",
            key_file.display(),
            data_dir.display()
        );
    }
    let store = KeyStore::open(key_file)
        .with_context(|| format!("cannot open the key store {}", key_file.display()))?;
    Ok(Arc::new(store))
}

/// `millrace gen-cert`: a self-signed certificate and key for development.
pub fn gen_cert(out: &Path, hosts: &[String]) -> anyhow::Result<()> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names.clone())
        .context("cannot generate a certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    millrace_kms::write_private_file(&key_path, certified.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::write(&cert_path, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    println!("certificate: {}", cert_path.display());
    println!("private key: {} (mode 0600)", key_path.display());
    println!("names: {}", names.join(", "));
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum KmsCommand {
    /// Create a master key (random material); prints its id.
    CreateKey {
        #[arg(long)]
        key_file: PathBuf,
        /// An alias such as alias/orders (repeatable).
        #[arg(long)]
        alias: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Disable a key (by id, ARN or alias): writes and reads of streams it protects fail
    /// with KMSDisabledException until it is enabled again.
    DisableKey {
        #[arg(long)]
        key_file: PathBuf,
        key: String,
    },
    /// Enable a key again.
    EnableKey {
        #[arg(long)]
        key_file: PathBuf,
        key: String,
    },
    /// List the keys (never their material).
    ListKeys {
        #[arg(long)]
        key_file: PathBuf,
    },
}

pub fn kms(command: KmsCommand) -> anyhow::Result<()> {
    let open = |path: &Path| {
        KeyStore::open(path)
            .with_context(|| format!("cannot open the key store {}", path.display()))
    };
    match command {
        KmsCommand::CreateKey {
            key_file,
            alias,
            description,
        } => {
            let id = open(&key_file)?.create_key(&alias, description.as_deref())?;
            println!("{id}");
        }
        KmsCommand::DisableKey { key_file, key } => {
            let id = open(&key_file)?.set_enabled(&key, false)?;
            println!("disabled {id}");
        }
        KmsCommand::EnableKey { key_file, key } => {
            let id = open(&key_file)?.set_enabled(&key, true)?;
            println!("enabled {id}");
        }
        KmsCommand::ListKeys { key_file } => {
            for key in open(&key_file)?.list() {
                println!(
                    "{}\t{}\t{}",
                    key.key_id,
                    if key.enabled { "enabled" } else { "disabled" },
                    key.aliases.join(",")
                );
            }
        }
    }
    Ok(())
}
