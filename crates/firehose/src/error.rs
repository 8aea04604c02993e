//! The errors of the Firehose service, and the one table that turns each into the AWS error a
//! client sees (`__type` via `wire::ErrorKind`, and the message).
//!
//! Messages follow AWS's wording where it is known (`Firehose NAME under account ACCOUNT not
//! found.`). Storage and catalog failures are internal: the client sees
//! `ServiceUnavailableException` (which every SDK retries) with no detail, and the detail goes
//! to the log. Errors of the delivery side (destinations, processors) never reach a client:
//! they are [`DeliveryError`]s, logged, counted and retried.

use millrace_wire::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("delivery stream {name} under account {account} not found")]
    NotFound { name: String, account: String },
    #[error("delivery stream {name} under account {account} already exists")]
    AlreadyExists { name: String, account: String },
    #[error("delivery stream {name} is {status}, not ACTIVE")]
    NotActive { name: String, status: &'static str },
    #[error("invalid argument: {message}")]
    InvalidArgument { message: String },
    #[error("resource in use: {message}")]
    ResourceInUse { message: String },
    #[error("limit exceeded: {message}")]
    LimitExceeded { message: String },
    #[error("concurrent modification: {message}")]
    ConcurrentModification { message: String },
    #[error("the delivery stream is behind by {n_records} records; retry later")]
    Backlogged { n_records: u64 },
    #[error("operation {operation} is not supported")]
    Unsupported { operation: &'static str },
    #[error("stored destination of {name} cannot be read: {source}")]
    StoredDestination {
        name: String,
        source: millrace_wire::WireError,
    },
    #[error("storage: {0}")]
    Log(#[from] millrace_log::LogError),
    #[error("catalog: {0}")]
    Catalog(#[from] millrace_catalog::CatalogError),
}

impl Error {
    /// The single mapping from service errors to what the client sees.
    pub fn to_aws(&self) -> (ErrorKind, Option<String>) {
        match self {
            Error::NotFound { name, account } => (
                ErrorKind::ResourceNotFoundException,
                Some(format!(
                    "Firehose {name} under account {account} not found."
                )),
            ),
            Error::AlreadyExists { name, account } => (
                ErrorKind::ResourceInUseException,
                Some(format!(
                    "Firehose {name} under accountId {account} already exists"
                )),
            ),
            Error::NotActive { name, status } => (
                ErrorKind::ResourceInUseException,
                Some(format!(
                    "Firehose {name} is not in the ACTIVE state (it is {status})."
                )),
            ),
            Error::InvalidArgument { message } => {
                (ErrorKind::InvalidArgumentException, Some(message.clone()))
            }
            Error::ResourceInUse { message } => {
                (ErrorKind::ResourceInUseException, Some(message.clone()))
            }
            Error::LimitExceeded { message } => {
                (ErrorKind::LimitExceededException, Some(message.clone()))
            }
            Error::ConcurrentModification { message } => (
                ErrorKind::ConcurrentModificationException,
                Some(message.clone()),
            ),
            Error::Backlogged { .. } => (
                ErrorKind::ServiceUnavailableException,
                Some("Slow down.".to_string()),
            ),
            Error::Unsupported { operation } => (
                ErrorKind::InvalidArgumentException,
                Some(format!("{operation} is not supported by Millrace.")),
            ),
            Error::Log(_) | Error::Catalog(_) | Error::StoredDestination { .. } => (
                ErrorKind::ServiceUnavailableException,
                Some("The service is unavailable. Back off and retry the operation.".to_string()),
            ),
        }
    }

    /// True for failures of Millrace itself (logged at error level), false for client errors.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Log(_) | Error::Catalog(_) | Error::StoredDestination { .. }
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            message: message.into(),
        }
    }
}

/// Why one delivery attempt (or one processing step) failed. Never sent to a client: the
/// delivery task logs it, counts it and retries or writes the records to the error output.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("object store: {0}")]
    Store(String),
    #[error("HTTP endpoint: {0}")]
    Http(String),
    #[error("HTTP endpoint answered 413 (payload too large): not retried")]
    HttpPayloadTooLarge,
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("function {arn}: {message}")]
    Function { arn: String, message: String },
    #[error("storage: {0}")]
    Log(#[from] millrace_log::LogError),
    #[error("catalog: {0}")]
    Catalog(#[from] millrace_catalog::CatalogError),
    #[error("source stream: {0}")]
    Source(String),
}
