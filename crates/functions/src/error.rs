//! The typed errors of the Lambda API and their one mapping to what a client sees.
//!
//! Lambda is a REST-JSON service: an error is an HTTP status, the `x-amzn-ErrorType` header
//! and a JSON body `{"Type": "User"|"Service", "message": "..."}` (botocore reads the type
//! from the header and the message from `message` or `Message`).

use millrace_catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("invalid request content: {0}")]
    InvalidRequestContent(String),
    #[error("function not found: {arn}")]
    FunctionNotFound { arn: String },
    #[error("event source mapping not found: {uuid}")]
    MappingNotFound { uuid: String },
    #[error("event source not found: {arn}")]
    EventSourceNotFound { arn: String },
    #[error("mapping of {event_source_arn} to {function_arn} exists: {uuid}")]
    MappingExists {
        event_source_arn: String,
        function_arn: String,
        uuid: String,
    },
    #[error("function exists: {arn}")]
    FunctionExists { arn: String },
    #[error("function {arn} is in use by event source mapping {uuid}")]
    FunctionInUse { arn: String, uuid: String },
    #[error("function {arn} is declared in the config file")]
    FunctionDeclared { arn: String },
    #[error("mapping {uuid} is being deleted")]
    MappingDeleting { uuid: String },
    #[error("too many event source mappings (at most {mappings_max})")]
    TooManyMappings { mappings_max: usize },
    #[error("unknown operation {method} {path}")]
    UnknownOperation { method: String, path: String },
    #[error("operation {operation} is not implemented by Millrace")]
    NotImplemented { operation: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the Data Streams service failed: {0}")]
    Streams(String),
}

/// What the client receives for an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

impl Error {
    /// The one table from internal errors to Lambda's error type, status and message.
    pub fn to_lambda(&self) -> LambdaError {
        let (status, error_type, message) = match self {
            Error::InvalidParameter(message) => {
                (400, "InvalidParameterValueException", message.clone())
            }
            Error::InvalidRequestContent(message) => {
                (400, "InvalidRequestContentException", message.clone())
            }
            Error::FunctionNotFound { arn } => (
                404,
                "ResourceNotFoundException",
                format!("Function not found: {arn}"),
            ),
            Error::MappingNotFound { uuid } => (
                404,
                "ResourceNotFoundException",
                format!(
                    "The resource you requested does not exist. (Service: Lambda, Status Code: 404, Request ID: {uuid})"
                ),
            ),
            Error::EventSourceNotFound { arn } => (
                400,
                "InvalidParameterValueException",
                format!("Stream not found: {arn}"),
            ),
            Error::MappingExists {
                event_source_arn,
                function_arn,
                uuid,
            } => (
                409,
                "ResourceConflictException",
                format!(
                    "The event source arn ({event_source_arn}) and function ({function_arn}) provided mapping already exists. Please update or delete the existing mapping with UUID {uuid}"
                ),
            ),
            Error::FunctionExists { arn } => (
                409,
                "ResourceConflictException",
                format!("Function already exist: {arn}"),
            ),
            Error::FunctionInUse { arn, uuid } => (
                409,
                "ResourceConflictException",
                format!(
                    "Function {arn} is used by event source mapping {uuid}; delete the mapping first."
                ),
            ),
            Error::FunctionDeclared { arn } => (
                409,
                "ResourceConflictException",
                format!(
                    "Function {arn} is declared in Millrace's config file and cannot be deleted through the API."
                ),
            ),
            Error::MappingDeleting { uuid } => (
                400,
                "ResourceInUseException",
                format!("Cannot update the event source mapping {uuid} because it is in use."),
            ),
            Error::TooManyMappings { mappings_max } => (
                400,
                "InvalidParameterValueException",
                format!("At most {mappings_max} event source mappings are allowed."),
            ),
            Error::UnknownOperation { .. } => (
                404,
                "UnknownOperationException",
                "Unknown operation".to_string(),
            ),
            Error::NotImplemented { operation } => (
                400,
                "InvalidRequestContentException",
                format!("Millrace does not implement the Lambda operation {operation}."),
            ),
            Error::Catalog(_) | Error::Streams(_) => (
                500,
                "ServiceException",
                "An internal error occurred.".to_string(),
            ),
        };
        LambdaError {
            status,
            error_type,
            message,
        }
    }

    /// True when Millrace failed (logged at error level), not the caller.
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Catalog(_) | Error::Streams(_))
    }
}

/// Why a function invocation failed (for retries and failure records); never sent to an API
/// client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The function ran and reported an error (non-2xx answer, `X-Amz-Function-Error`, or a
    /// Lambda error document).
    #[error("function error ({status}): {error_type}: {message}")]
    Function {
        status: u16,
        error_type: String,
        message: String,
    },
    /// The function could not be reached, or timed out.
    #[error("invocation failed: {0}")]
    Transport(String),
    /// No URL is known for the function (deleted since the mapping was created).
    #[error("no function {0}")]
    NoFunction(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_model() {
        let cases = [
            (
                Error::InvalidParameter("x".into()),
                400,
                "InvalidParameterValueException",
            ),
            (
                Error::MappingNotFound { uuid: "u".into() },
                404,
                "ResourceNotFoundException",
            ),
            (
                Error::FunctionExists { arn: "a".into() },
                409,
                "ResourceConflictException",
            ),
            (
                Error::MappingDeleting { uuid: "u".into() },
                400,
                "ResourceInUseException",
            ),
            (Error::Streams("x".into()), 500, "ServiceException"),
        ];
        for (error, status, error_type) in cases {
            let mapped = error.to_lambda();
            assert_eq!((mapped.status, mapped.error_type), (status, error_type));
        }
    }
}
