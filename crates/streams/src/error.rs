//! The errors of the Data Streams service, and the one table that turns each into the AWS
//! error a client sees (`__type` via `wire::ErrorKind`, and the message).
//!
//! Messages follow AWS's wording (`Stream NAME under account ACCOUNT not found.`). Storage
//! and catalog failures are internal: the client sees `InternalFailureException` with no
//! detail, and the detail goes to the log.

use millrace_wire::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stream {name} under account {account} not found")]
    StreamNotFound { name: String, account: String },
    #[error("stream {name} under account {account} already exists")]
    StreamExists { name: String, account: String },
    #[error("stream {name} not active ({status})")]
    StreamNotActive {
        name: String,
        account: String,
        status: &'static str,
    },
    #[error("resource not found: {message}")]
    ResourceNotFound { message: String },
    #[error("resource in use: {message}")]
    ResourceInUse { message: String },
    #[error("invalid argument: {message}")]
    InvalidArgument { message: String },
    #[error("limit exceeded: {message}")]
    LimitExceeded { message: String },
    #[error("validation: {message}")]
    Validation { message: String },
    #[error("throttled: {message}")]
    Throttling { message: String },
    #[error("throughput exceeded: {message}")]
    ThroughputExceeded { message: String },
    #[error("expired iterator: {message}")]
    ExpiredIterator { message: String },
    #[error("expired next token: {message}")]
    ExpiredNextToken { message: String },
    #[error("dry run: {message}")]
    DryRun { message: String },
    #[error("access denied: {message}")]
    AccessDenied { message: String },
    #[error("operation {operation} is not supported")]
    Unsupported { operation: &'static str },
    #[error("log {log_id} offset {offset} holds a record this service cannot decode")]
    CorruptRecord { log_id: u64, offset: u64 },
    #[error("kms: {0}")]
    Kms(millrace_kms::KmsError),
    #[error("data key {data_key_id} of an encrypted record is missing from the catalog")]
    MissingDataKey { data_key_id: u64 },
    #[error("stored channel {name} cannot be read: {message}")]
    StoredChannel { name: String, message: String },
    #[error("storage: {0}")]
    Log(#[from] millrace_log::LogError),
    #[error("catalog: {0}")]
    Catalog(#[from] millrace_catalog::CatalogError),
}

impl Error {
    /// The single mapping from service errors to what the client sees.
    pub fn to_aws(&self) -> (ErrorKind, Option<String>) {
        match self {
            Error::StreamNotFound { name, account } => (
                ErrorKind::ResourceNotFoundException,
                Some(format!("Stream {name} under account {account} not found.")),
            ),
            Error::StreamExists { name, account } => (
                ErrorKind::ResourceInUseException,
                Some(format!(
                    "Stream {name} under account {account} already exists."
                )),
            ),
            Error::StreamNotActive {
                name,
                account,
                status,
            } => (
                ErrorKind::ResourceInUseException,
                Some(format!(
                    "Stream {name} under account {account} not ACTIVE, instead in state {status}"
                )),
            ),
            Error::ResourceNotFound { message } => {
                (ErrorKind::ResourceNotFoundException, Some(message.clone()))
            }
            Error::ResourceInUse { message } => {
                (ErrorKind::ResourceInUseException, Some(message.clone()))
            }
            Error::InvalidArgument { message } => {
                (ErrorKind::InvalidArgumentException, Some(message.clone()))
            }
            Error::LimitExceeded { message } => {
                (ErrorKind::LimitExceededException, Some(message.clone()))
            }
            Error::Validation { message } => {
                (ErrorKind::ValidationException, Some(message.clone()))
            }
            Error::Throttling { message } => {
                (ErrorKind::ThrottlingException, Some(message.clone()))
            }
            Error::ThroughputExceeded { message } => (
                ErrorKind::ProvisionedThroughputExceededException,
                Some(message.clone()),
            ),
            Error::ExpiredIterator { message } => {
                (ErrorKind::ExpiredIteratorException, Some(message.clone()))
            }
            Error::ExpiredNextToken { message } => {
                (ErrorKind::ExpiredNextTokenException, Some(message.clone()))
            }
            Error::DryRun { message } => {
                (ErrorKind::DryRunOperationException, Some(message.clone()))
            }
            Error::AccessDenied { message } => {
                (ErrorKind::AccessDeniedException, Some(message.clone()))
            }
            Error::Unsupported { operation } => (
                ErrorKind::UnknownOperationException,
                Some(format!(
                    "Operation {operation} is not supported by this version of Millrace."
                )),
            ),
            // A full disk (the write was refused, nothing stored, retryable once space is
            // freed): what Kinesis answers for a failure on its side, a modeled
            // InternalFailureException (500) that SDKs retry.
            Error::Log(millrace_log::LogError::StorageFull { .. }) => (
                ErrorKind::InternalFailureException,
                Some("Internal service failure.".to_string()),
            ),
            Error::Kms(millrace_kms::KmsError::NotFound { message }) => {
                (ErrorKind::KMSNotFoundException, Some(message.clone()))
            }
            Error::Kms(millrace_kms::KmsError::Disabled { message }) => {
                (ErrorKind::KMSDisabledException, Some(message.clone()))
            }
            Error::Kms(_) | Error::MissingDataKey { .. } | Error::StoredChannel { .. } => {
                (ErrorKind::InternalFailureException, None)
            }
            Error::Log(millrace_log::LogError::Poisoned) => (
                ErrorKind::ServiceUnavailableException,
                Some("Writes are disabled after a storage failure.".to_string()),
            ),
            Error::Log(_) | Error::Catalog(_) | Error::CorruptRecord { .. } => {
                (ErrorKind::InternalFailureException, None)
            }
        }
    }

    /// True for failures of Millrace itself (logged at error level), false for client
    /// errors.
    pub fn is_internal(&self) -> bool {
        match self {
            Error::Kms(kms) => !matches!(
                kms,
                millrace_kms::KmsError::NotFound { .. } | millrace_kms::KmsError::Disabled { .. }
            ),
            Error::Log(_)
            | Error::Catalog(_)
            | Error::CorruptRecord { .. }
            | Error::MissingDataKey { .. }
            | Error::StoredChannel { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            message: message.into(),
        }
    }
}
