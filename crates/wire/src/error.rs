//! The one table of AWS error types Millrace can answer: `__type`, HTTP status and message key.
//!
//! Every exception shape of the service models plus the protocol-level errors the AWS front end
//! produces before an action runs. The statuses are those AWS returns for JSON-protocol services
//! (observed through kinesalite's tests against real Kinesis): authentication and signature
//! errors are 400 there, not 403 as on the XML/query front end. Deliberately not here: which
//! internal failure maps to which kind (that is each service crate's one `match`), and HTTP
//! itself.

/// An AWS error `__type` Millrace can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    // Modelled exceptions of Kinesis (kinesis-2013-12-02).
    AccessDeniedException,
    DryRunOperationException,
    ExpiredIteratorException,
    ExpiredNextTokenException,
    InternalFailureException,
    InvalidArgumentException,
    KMSAccessDeniedException,
    KMSDisabledException,
    KMSInvalidStateException,
    KMSNotFoundException,
    KMSOptInRequired,
    KMSThrottlingException,
    LimitExceededException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ThrottlingException,
    ValidationException,
    // Modelled exceptions of Firehose (firehose-2015-08-04) not already above.
    ConcurrentModificationException,
    InvalidKMSResourceException,
    InvalidSourceException,
    // Protocol errors of the AWS front end, common to JSON services.
    /// The body is not valid JSON/CBOR, or a member has the wrong type.
    SerializationException,
    /// `X-Amz-Target` names no operation of the service.
    UnknownOperationException,
    /// No `Authorization` header nor presigned query.
    MissingAuthenticationTokenException,
    /// An `Authorization` header that lacks required parts.
    IncompleteSignatureException,
    /// A signature that does not verify (JSON services use this, not `SignatureDoesNotMatch`).
    InvalidSignatureException,
    /// An access key the service does not know.
    UnrecognizedClientException,
    /// A body over the size limit.
    RequestEntityTooLargeException,
    /// The service is shedding load.
    ServiceUnavailableException,
    /// The unmodelled internal error AWS answers with status 500 and no message.
    InternalFailure,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::AccessDeniedException,
        ErrorKind::DryRunOperationException,
        ErrorKind::ExpiredIteratorException,
        ErrorKind::ExpiredNextTokenException,
        ErrorKind::InternalFailureException,
        ErrorKind::InvalidArgumentException,
        ErrorKind::KMSAccessDeniedException,
        ErrorKind::KMSDisabledException,
        ErrorKind::KMSInvalidStateException,
        ErrorKind::KMSNotFoundException,
        ErrorKind::KMSOptInRequired,
        ErrorKind::KMSThrottlingException,
        ErrorKind::LimitExceededException,
        ErrorKind::ProvisionedThroughputExceededException,
        ErrorKind::ResourceInUseException,
        ErrorKind::ResourceNotFoundException,
        ErrorKind::ThrottlingException,
        ErrorKind::ValidationException,
        ErrorKind::ConcurrentModificationException,
        ErrorKind::InvalidKMSResourceException,
        ErrorKind::InvalidSourceException,
        ErrorKind::SerializationException,
        ErrorKind::UnknownOperationException,
        ErrorKind::MissingAuthenticationTokenException,
        ErrorKind::IncompleteSignatureException,
        ErrorKind::InvalidSignatureException,
        ErrorKind::UnrecognizedClientException,
        ErrorKind::RequestEntityTooLargeException,
        ErrorKind::ServiceUnavailableException,
        ErrorKind::InternalFailure,
    ];

    /// The `__type` of the error body (also the `:exception-type` of an event-stream exception).
    pub fn type_name(&self) -> &'static str {
        match self {
            ErrorKind::AccessDeniedException => "AccessDeniedException",
            ErrorKind::DryRunOperationException => "DryRunOperationException",
            ErrorKind::ExpiredIteratorException => "ExpiredIteratorException",
            ErrorKind::ExpiredNextTokenException => "ExpiredNextTokenException",
            ErrorKind::InternalFailureException => "InternalFailureException",
            ErrorKind::InvalidArgumentException => "InvalidArgumentException",
            ErrorKind::KMSAccessDeniedException => "KMSAccessDeniedException",
            ErrorKind::KMSDisabledException => "KMSDisabledException",
            ErrorKind::KMSInvalidStateException => "KMSInvalidStateException",
            ErrorKind::KMSNotFoundException => "KMSNotFoundException",
            ErrorKind::KMSOptInRequired => "KMSOptInRequired",
            ErrorKind::KMSThrottlingException => "KMSThrottlingException",
            ErrorKind::LimitExceededException => "LimitExceededException",
            ErrorKind::ProvisionedThroughputExceededException => {
                "ProvisionedThroughputExceededException"
            }
            ErrorKind::ResourceInUseException => "ResourceInUseException",
            ErrorKind::ResourceNotFoundException => "ResourceNotFoundException",
            ErrorKind::ThrottlingException => "ThrottlingException",
            ErrorKind::ValidationException => "ValidationException",
            ErrorKind::ConcurrentModificationException => "ConcurrentModificationException",
            ErrorKind::InvalidKMSResourceException => "InvalidKMSResourceException",
            ErrorKind::InvalidSourceException => "InvalidSourceException",
            ErrorKind::SerializationException => "SerializationException",
            ErrorKind::UnknownOperationException => "UnknownOperationException",
            ErrorKind::MissingAuthenticationTokenException => "MissingAuthenticationTokenException",
            ErrorKind::IncompleteSignatureException => "IncompleteSignatureException",
            ErrorKind::InvalidSignatureException => "InvalidSignatureException",
            ErrorKind::UnrecognizedClientException => "UnrecognizedClientException",
            ErrorKind::RequestEntityTooLargeException => "RequestEntityTooLargeException",
            ErrorKind::ServiceUnavailableException => "ServiceUnavailableException",
            ErrorKind::InternalFailure => "InternalFailure",
        }
    }

    /// The HTTP status AWS answers this error with.
    ///
    /// Client errors are 400, including the authentication ones (kinesalite's connection tests
    /// against Kinesis: `MissingAuthenticationTokenException`, `IncompleteSignatureException`
    /// and `InvalidSignatureException` are 400 with a JSON body; only the XML front end for
    /// requests without a JSON content type answers 403). Server faults are 500 (the model marks
    /// `InternalFailureException` as a fault), load shedding 503, and an oversized body 413.
    pub fn http_status(&self) -> u16 {
        match self {
            ErrorKind::InternalFailureException | ErrorKind::InternalFailure => 500,
            ErrorKind::ServiceUnavailableException => 503,
            ErrorKind::RequestEntityTooLargeException => 413,
            _ => 400,
        }
    }

    /// The kind whose `__type` is `type_name`; a `com.amazon.coral...#` prefix is ignored.
    pub fn from_type_name(type_name: &str) -> Option<ErrorKind> {
        let short = type_name.rsplit('#').next().unwrap_or(type_name);
        ErrorKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.type_name() == short)
    }

    /// The key of the message in the error body: `Message` for `SerializationException` (as AWS
    /// sends it), `message` otherwise.
    pub fn message_key(&self) -> &'static str {
        match self {
            ErrorKind::SerializationException => "Message",
            _ => "message",
        }
    }

    /// True for errors the client caused (4xx).
    pub fn is_client_error(&self) -> bool {
        self.http_status() < 500
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.type_name())
    }
}

/// A body that is not well-formed JSON or CBOR (or nests too deeply). AWS answers these with a
/// bare `SerializationException`; the reason is for logs only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed body at byte {offset}: {reason}")]
pub struct SyntaxError {
    pub offset: usize,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for kind in ErrorKind::ALL {
            assert!(
                seen.insert(kind.type_name()),
                "duplicate {}",
                kind.type_name()
            );
            assert_eq!(ErrorKind::from_type_name(kind.type_name()), Some(*kind));
            assert_eq!(
                format!("{kind:?}"),
                kind.type_name(),
                "variant name equals __type"
            );
        }
        assert_eq!(
            ErrorKind::from_type_name("com.amazon.coral.service#SerializationException"),
            Some(ErrorKind::SerializationException)
        );
        assert_eq!(ErrorKind::from_type_name("NoSuchThing"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorKind::ResourceNotFoundException.http_status(), 400);
        assert_eq!(
            ErrorKind::MissingAuthenticationTokenException.http_status(),
            400
        );
        assert_eq!(ErrorKind::InternalFailureException.http_status(), 500);
        assert_eq!(ErrorKind::InternalFailure.http_status(), 500);
        assert_eq!(ErrorKind::ServiceUnavailableException.http_status(), 503);
        assert_eq!(ErrorKind::RequestEntityTooLargeException.http_status(), 413);
        assert!(ErrorKind::ThrottlingException.is_client_error());
        assert!(!ErrorKind::InternalFailure.is_client_error());
        assert_eq!(ErrorKind::SerializationException.message_key(), "Message");
        assert_eq!(ErrorKind::ValidationException.message_key(), "message");
    }
}
