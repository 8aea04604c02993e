//! Errors: [`VideoError`] for the REST APIs (one table maps each to the AWS error type and
//! HTTP status) and [`AckError`] for the error events of a PutMedia acknowledgement stream
//! (AWS's documented `ErrorId` codes).

/// An API error, answered as a REST-JSON error.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{message}")]
    InvalidArgument { message: String },
    #[error("The stream {name} was not found.")]
    StreamNotFound { name: String },
    #[error("The stream {name} already exists.")]
    StreamExists { name: String },
    #[error("The stream {name} is not active.")]
    StreamNotActive { name: String },
    #[error("The version {given} is not the current version of the stream.")]
    VersionMismatch { given: String },
    #[error("This account already has {max} streams.")]
    AccountStreamLimitExceeded { max: usize },
    #[error("A stream has at most {max} tags.")]
    TagsPerResourceExceeded { max: usize },
    #[error("The stream {name} has no data retention.")]
    NoDataRetention { name: String },
    #[error("No fragment was found for the request.")]
    FragmentsNotFound,
    #[error("The stream's media type is not supported: {detail}")]
    UnsupportedMediaType { detail: String },
    #[error("The codec private data is missing.")]
    MissingCodecPrivateData,
    #[error("The codec private data is not valid.")]
    InvalidCodecPrivateData,
    #[error("A media frame could not be used: {detail}")]
    InvalidMediaFrame { detail: String },
    #[error("The streaming session is expired or unknown.")]
    SessionNotFound,
    #[error("Too many requests: {detail}")]
    ClientLimitExceeded { detail: String },
    #[error("The request body is larger than {max} bytes.")]
    BodyTooLarge { max: usize },
    #[error("Unknown operation {path}")]
    UnknownOperation { path: String },
    #[error("GetImages needs ffmpeg on the PATH: {detail}")]
    ImagesUnavailable { detail: String },
    #[error("storage failure: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored data is corrupt: {detail}")]
    Corrupt { detail: String },
}

/// An error mapped to the wire: HTTP status, `x-amzn-ErrorType`, message.
pub struct AwsError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

impl VideoError {
    pub fn invalid(message: impl Into<String>) -> VideoError {
        VideoError::InvalidArgument {
            message: message.into(),
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(self, VideoError::Io(_) | VideoError::Corrupt { .. })
    }

    pub fn to_aws(&self) -> AwsError {
        use VideoError::*;
        let (status, error_type) = match self {
            InvalidArgument { .. } | StreamNotActive { .. } => (400, "InvalidArgumentException"),
            StreamNotFound { .. } | FragmentsNotFound | SessionNotFound => {
                (404, "ResourceNotFoundException")
            }
            StreamExists { .. } => (400, "ResourceInUseException"),
            VersionMismatch { .. } => (400, "VersionMismatchException"),
            AccountStreamLimitExceeded { .. } => (400, "AccountStreamLimitExceededException"),
            TagsPerResourceExceeded { .. } => (400, "TagsPerResourceExceededLimitException"),
            NoDataRetention { .. } => (400, "NoDataRetentionException"),
            UnsupportedMediaType { .. } => (400, "UnsupportedStreamMediaTypeException"),
            MissingCodecPrivateData => (400, "MissingCodecPrivateDataException"),
            InvalidCodecPrivateData => (400, "InvalidCodecPrivateDataException"),
            InvalidMediaFrame { .. } => (400, "InvalidMediaFrameException"),
            ClientLimitExceeded { .. } => (400, "ClientLimitExceededException"),
            BodyTooLarge { .. } => (413, "InvalidArgumentException"),
            UnknownOperation { .. } => (404, "UnknownOperationException"),
            ImagesUnavailable { .. } => (500, "ClientLimitExceededException"),
            Io(_) | Corrupt { .. } => (500, "InternalFailure"),
        };
        let message = if self.is_internal() {
            "An internal error occurred.".to_string()
        } else {
            self.to_string()
        };
        AwsError {
            status,
            error_type,
            message,
        }
    }
}

/// The error event of a PutMedia acknowledgement stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the upload could not be read")]
    StreamReadError,
    #[error("the fragment is larger than 50 MB")]
    MaxFragmentSizeReached,
    #[error("the fragment is longer than 10 s")]
    MaxFragmentDurationReached,
    #[error("the connection lasted too long")]
    MaxConnectionDurationReached,
    #[error("the fragment timecode is lower than the previous one")]
    FragmentTimecodeLesserThanPrevious,
    #[error("more tracks than allowed")]
    MoreThanAllowedTracksFound,
    #[error("the MKV data is not valid")]
    InvalidMkvData,
    /// AWS documents no dedicated code for a fragment that does not start with a keyframe:
    /// it is reported as INVALID_MKV_DATA (4006), with this distinct variant inside.
    #[error("the fragment does not start with a keyframe")]
    FragmentWithoutKeyframe,
    #[error("the producer timestamp is not valid")]
    InvalidProducerTimestamp,
    #[error("the stream is not active")]
    StreamNotActive,
    #[error("a fragment has no frames")]
    FramesMissing,
    #[error("internal error")]
    InternalError,
    #[error("the fragment could not be archived")]
    ArchivalError,
}

impl AckError {
    pub fn code(&self) -> (&'static str, u32) {
        use AckError::*;
        match self {
            StreamReadError => ("STREAM_READ_ERROR", 4000),
            MaxFragmentSizeReached => ("MAX_FRAGMENT_SIZE_REACHED", 4001),
            MaxFragmentDurationReached => ("MAX_FRAGMENT_DURATION_REACHED", 4002),
            MaxConnectionDurationReached => ("MAX_CONNECTION_DURATION_REACHED", 4003),
            FragmentTimecodeLesserThanPrevious => ("FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS", 4004),
            MoreThanAllowedTracksFound => ("MORE_THAN_ALLOWED_TRACKS_FOUND", 4005),
            InvalidMkvData | FragmentWithoutKeyframe => ("INVALID_MKV_DATA", 4006),
            InvalidProducerTimestamp => ("INVALID_PRODUCER_TIMESTAMP", 4007),
            StreamNotActive => ("STREAM_NOT_ACTIVE", 4008),
            FramesMissing => ("FRAMES_MISSING_FOR_TRACK", 4011),
            InternalError => ("INTERNAL_ERROR", 5000),
            ArchivalError => ("ARCHIVAL_ERROR", 5001),
        }
    }
}
