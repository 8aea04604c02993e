//! The one error type of the DynamoDB subset and its one mapping to DynamoDB's `__type`,
//! message and HTTP status ([`Error::to_aws`]).

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("validation: {0}")]
    Validation(String),
    #[error("serialization: {0}")]
    Serialization(String),
    #[error("unknown operation {0}")]
    UnknownOperation(String),
    #[error("resource not found: {0}")]
    ResourceNotFound(String),
    #[error("table not found: {0}")]
    TableNotFound(String),
    #[error("resource in use: {0}")]
    ResourceInUse(String),
    /// A condition failed; `item` is the stored item when the request asked for it
    /// (`ReturnValuesOnConditionCheckFailure: ALL_OLD`).
    #[error("conditional check failed")]
    ConditionalCheckFailed {
        item: Option<serde_json::Map<String, Value>>,
    },
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("transaction canceled: {0}")]
    TransactionCanceled(String, Vec<Value>),
    /// The table database failed; logged, never sent.
    #[error("storage: {0}")]
    Storage(String),
}

impl Error {
    pub fn validation(message: impl Into<String>) -> Error {
        Error::Validation(message.into())
    }

    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Storage(_))
    }

    /// `(HTTP status, __type, message, extra members)` as DynamoDB answers.
    pub fn to_aws(&self) -> (u16, &'static str, String, Option<(&'static str, Value)>) {
        match self {
            Error::Validation(m) => (
                400,
                "com.amazon.coral.validate#ValidationException",
                m.clone(),
                None,
            ),
            Error::Serialization(m) => (
                400,
                "com.amazon.coral.service#SerializationException",
                m.clone(),
                None,
            ),
            Error::UnknownOperation(_) => (
                400,
                "com.amazon.coral.service#UnknownOperationException",
                String::new(),
                None,
            ),
            Error::ResourceNotFound(m) => (
                400,
                "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
                m.clone(),
                None,
            ),
            Error::TableNotFound(m) => (
                400,
                "com.amazonaws.dynamodb.v20120810#TableNotFoundException",
                m.clone(),
                None,
            ),
            Error::ResourceInUse(m) => (
                400,
                "com.amazonaws.dynamodb.v20120810#ResourceInUseException",
                m.clone(),
                None,
            ),
            Error::ConditionalCheckFailed { item } => (
                400,
                "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                "The conditional request failed".to_string(),
                item.clone().map(|i| ("Item", Value::Object(i))),
            ),
            Error::LimitExceeded(m) => (
                400,
                "com.amazonaws.dynamodb.v20120810#LimitExceededException",
                m.clone(),
                None,
            ),
            Error::TransactionCanceled(m, reasons) => (
                400,
                "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                m.clone(),
                Some(("CancellationReasons", Value::Array(reasons.clone()))),
            ),
            Error::Storage(_) => (
                500,
                "com.amazonaws.dynamodb.v20120810#InternalServerError",
                "Internal server error".to_string(),
                None,
            ),
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Error {
        Error::Storage(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);
