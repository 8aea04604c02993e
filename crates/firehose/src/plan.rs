//! Destination settings: from the API's `...Configuration` to the stored `...Description`
//! (with AWS's defaults filled in), `...Update` merges, the checks AWS makes before it accepts
//! them, and the [`Plan`] the delivery task runs.
//!
//! A delivery stream stores its destination as a `DestinationDescription` (AWS JSON, see the
//! catalog's `DeliveryStreamRecord`); [`Plan::build`] turns it into what delivery needs:
//! parsed prefixes, the compression, a Parquet converter, compiled jq, resolved function
//! URLs. The same function validates Create and UpdateDestination, so a delivery stream that
//! was accepted always has a plan.

use std::sync::Arc;

use jiff::tz::TimeZone;
use millrace_wire::firehose as fh;
use millrace_wire::firehose::{
    CompressionFormat, DestinationDescription, ProcessorParameterName, ProcessorType,
};

use crate::convert::Converter;
use crate::error::Error;
use crate::jq::JqQuery;
use crate::prefix::{self, PrefixTemplate};
use crate::{FirehoseConfig, store};

const MIB: u64 = 1024 * 1024;
/// Largest buffer of any destination (S3's SizeInMBs maximum).
pub const BUFFER_BYTES_MAX: u64 = 128 * MIB;
/// Default S3 hints (model documentation): 5 MiB, 300 s; 128 MiB with format conversion.
const S3_SIZE_MB_DEFAULT: i32 = 5;
const S3_SIZE_MB_CONVERSION_DEFAULT: i32 = 128;
const S3_SIZE_MB_CONVERSION_MIN: i32 = 64;
const INTERVAL_S_DEFAULT: i32 = 300;
/// Retry windows (model documentation): HTTP endpoint 300 s, Redshift 3600 s.
const HTTP_RETRY_S_DEFAULT: i32 = 300;
const REDSHIFT_RETRY_S_DEFAULT: i32 = 3600;
/// Lambda processor defaults (AWS docs): 1 MB, 60 s, 3 retries.
const LAMBDA_BUFFER_BYTES_DEFAULT: u64 = MIB;
const LAMBDA_INTERVAL_S_DEFAULT: u64 = 60;
const LAMBDA_RETRIES_DEFAULT: u32 = 3;
const LAMBDA_RETRIES_MAX: u32 = 300;
/// A Lambda payload is at most 6 MB, so its buffer is at most 3 MB (AWS's range 0.2 to 3).
const LAMBDA_BUFFER_BYTES_MAX: u64 = 3 * MIB;

/// When a buffer is delivered: the first of the two that is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hints {
    pub size_bytes: u64,
    pub interval_ms: i64,
}

/// An S3 location objects are written to, with how they are named and encoded.
#[derive(Clone, Debug)]
pub struct S3Target {
    pub bucket: String,
    /// `Prefix` as configured (Redshift's error manifests go under `<prefix>errors/`).
    pub raw_prefix: String,
    pub prefix: PrefixTemplate,
    pub error_prefix: PrefixTemplate,
    pub compression: CompressionFormat,
    pub extension: String,
    pub hints: Hints,
    pub zone: TimeZone,
}

#[derive(Clone, Debug)]
pub struct HttpTarget {
    pub url: String,
    pub access_key: Option<String>,
    pub gzip: bool,
    /// `{"commonAttributes":{...}}`, ready for the header, if any attribute is set.
    pub common_attributes: Option<String>,
    pub retry_ms: i64,
    /// `AllData`: every record is also written to S3, not just the failed ones.
    pub backup_all: bool,
}

#[derive(Clone, Debug)]
pub struct PostgresTarget {
    /// `host`, `port`, `dbname` from the JDBC URL.
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: String,
    pub table: String,
    pub columns: Option<String>,
    pub copy_options: String,
    pub retry_ms: i64,
}

#[derive(Clone, Debug)]
pub enum Destination {
    S3 {
        target: S3Target,
        converter: Option<Arc<Converter>>,
        dynamic_partitioning: bool,
        /// `S3BackupMode: Enabled`: the source records, before processing, go here too.
        backup: Option<S3Target>,
    },
    Http {
        endpoint: HttpTarget,
        s3: S3Target,
    },
    Postgres {
        database: PostgresTarget,
        /// Where batches are staged before they are loaded (and failed ones stay).
        s3: S3Target,
        backup: Option<S3Target>,
    },
}

#[derive(Clone, Debug)]
pub enum Deaggregation {
    /// Concatenated JSON objects become one record each.
    Json,
    /// Split on this delimiter.
    Delimited(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct LambdaPlan {
    pub arn: String,
    /// The URL mapped to the ARN in the config file (checked at creation).
    pub url: String,
    pub retries: u32,
    pub buffer_bytes: u64,
    pub interval_ms: i64,
}

#[derive(Clone, Debug, Default)]
pub struct Processing {
    pub deaggregation: Option<Deaggregation>,
    pub decompress: bool,
    pub cloudwatch_logs_extract: bool,
    pub lambda: Option<LambdaPlan>,
    pub query: Option<Arc<JqQuery>>,
    pub append_delimiter: Option<Vec<u8>>,
}

/// Everything the delivery task of one delivery stream needs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub destination: Destination,
    pub processing: Processing,
}

impl Plan {
    /// The buffering hints of the main destination.
    pub fn hints(&self) -> Hints {
        match &self.destination {
            Destination::S3 { target, .. } => target.hints,
            Destination::Http { s3, .. } => s3.hints,
            Destination::Postgres { s3, .. } => s3.hints,
        }
    }

    /// Builds (and so validates) the plan of a stored destination.
    /// `secret` is the HTTP endpoint's access key or the Redshift password.
    pub fn build(
        description: &DestinationDescription,
        secret: Option<&str>,
        config: &FirehoseConfig,
    ) -> Result<Plan, Error> {
        if let Some(extended) = &description.extended_s3_destination_description {
            return extended_s3_plan(extended, config);
        }
        if let Some(http) = &description.http_endpoint_destination_description {
            let mut plan = http_plan(http, config)?;
            if let Destination::Http { endpoint, .. } = &mut plan.destination {
                endpoint.access_key = secret.map(str::to_string);
            }
            return Ok(plan);
        }
        if let Some(redshift) = &description.redshift_destination_description {
            let mut plan = redshift_plan(redshift, config)?;
            if let Destination::Postgres { database, .. } = &mut plan.destination {
                database.password = secret.unwrap_or_default().to_string();
            }
            return Ok(plan);
        }
        if let Some(s3) = &description.s3_destination_description {
            return Ok(Plan {
                destination: Destination::S3 {
                    target: s3_target(s3, None, None, None, false)?,
                    converter: None,
                    dynamic_partitioning: false,
                    backup: None,
                },
                processing: Processing::default(),
            });
        }
        Err(Error::invalid(
            "Millrace delivers to S3 (S3DestinationConfiguration, ExtendedS3DestinationConfiguration), \
             HTTP endpoints (HttpEndpointDestinationConfiguration) and PostgreSQL \
             (RedshiftDestinationConfiguration).",
        ))
    }
}

fn hints(size_mb: Option<i32>, interval_s: Option<i32>, default_size_mb: i32) -> Hints {
    let size_mb = u64::try_from(size_mb.unwrap_or(default_size_mb).max(1)).unwrap_or(5);
    let interval_s = i64::from(interval_s.unwrap_or(INTERVAL_S_DEFAULT).max(0));
    Hints {
        size_bytes: (size_mb * MIB).min(BUFFER_BYTES_MAX),
        interval_ms: interval_s * 1000,
    }
}

fn s3_target(
    s3: &fh::S3DestinationDescription,
    file_extension: Option<&str>,
    custom_time_zone: Option<&str>,
    compression_override: Option<CompressionFormat>,
    dynamic_partitioning: bool,
) -> Result<S3Target, Error> {
    let bucket = store::bucket_of_arn(&s3.bucket_arn)
        .ok_or_else(|| {
            Error::invalid(format!(
                "BucketARN {} is not a valid S3 bucket ARN.",
                s3.bucket_arn
            ))
        })?
        .to_string();
    let raw_prefix = s3.prefix.clone().unwrap_or_default();
    let prefix = PrefixTemplate::parse(&raw_prefix).map_err(Error::invalid)?;
    if prefix.has_error_output_type() {
        return Err(Error::invalid(
            "The !{firehose:error-output-type} expression is only allowed in ErrorOutputPrefix.",
        ));
    }
    if prefix.has_partition_keys() && !dynamic_partitioning {
        return Err(Error::invalid(
            "partitionKeyFromQuery and partitionKeyFromLambda namespaces can only be used when \
             dynamic partitioning is enabled.",
        ));
    }
    let error_prefix = match s3.error_output_prefix.as_deref().filter(|p| !p.is_empty()) {
        Some(raw) => {
            let parsed = PrefixTemplate::parse(raw).map_err(Error::invalid)?;
            if parsed.has_partition_keys() {
                return Err(Error::invalid(
                    "partitionKeyFromQuery and partitionKeyFromLambda namespaces are not allowed \
                     in ErrorOutputPrefix.",
                ));
            }
            if parsed.has_expressions() && !parsed.has_error_output_type() {
                return Err(Error::invalid(
                    "ErrorOutputPrefix must contain the !{firehose:error-output-type} expression \
                     when it contains expressions.",
                ));
            }
            parsed.with_default_time()
        }
        None => {
            if prefix.has_expressions() {
                return Err(Error::invalid(
                    "ErrorOutputPrefix cannot be null or empty when Prefix contains expressions.",
                ));
            }
            PrefixTemplate::parse(&format!("{raw_prefix}!{{firehose:error-output-type}}/"))
                .map_err(Error::invalid)?
                .with_default_time()
        }
    };
    let prefix = if dynamic_partitioning {
        prefix
    } else {
        prefix.with_default_time()
    };
    let compression = compression_override.unwrap_or(s3.compression_format);
    let extension = match file_extension {
        Some(ext) => ext.to_string(),
        None => crate::compress::extension(compression).to_string(),
    };
    Ok(S3Target {
        bucket,
        raw_prefix,
        prefix,
        error_prefix,
        compression,
        extension,
        hints: hints(
            s3.buffering_hints.size_in_m_bs,
            s3.buffering_hints.interval_in_seconds,
            S3_SIZE_MB_DEFAULT,
        ),
        zone: prefix::time_zone(custom_time_zone).map_err(Error::invalid)?,
    })
}

fn extended_s3_plan(
    extended: &fh::ExtendedS3DestinationDescription,
    config: &FirehoseConfig,
) -> Result<Plan, Error> {
    let dynamic_partitioning = extended
        .dynamic_partitioning_configuration
        .as_ref()
        .and_then(|d| d.enabled)
        .unwrap_or(false);
    let conversion = extended
        .data_format_conversion_configuration
        .as_ref()
        .filter(|c| c.enabled.unwrap_or(true));
    let as_s3 = fh::S3DestinationDescription {
        bucket_arn: extended.bucket_arn.clone(),
        buffering_hints: extended.buffering_hints.clone(),
        cloud_watch_logging_options: None,
        compression_format: extended.compression_format,
        encryption_configuration: extended.encryption_configuration.clone(),
        error_output_prefix: extended.error_output_prefix.clone(),
        prefix: extended.prefix.clone(),
        role_arn: extended.role_arn.clone(),
    };
    let converter = match conversion {
        None => None,
        Some(conversion) => Some(Arc::new(converter(conversion, extended, config)?)),
    };
    let file_extension = match (&extended.file_extension, &converter) {
        (Some(ext), _) => Some(ext.clone()),
        (None, Some(_)) => Some(".parquet".to_string()),
        (None, None) => None,
    };
    let target = s3_target(
        &as_s3,
        file_extension.as_deref(),
        extended.custom_time_zone.as_deref(),
        None,
        dynamic_partitioning,
    )?;
    let processing = processing(extended.processing_configuration.as_ref(), config)?;
    if dynamic_partitioning {
        if !target.prefix.has_partition_keys() {
            return Err(Error::invalid(
                "When dynamic partitioning is enabled, Prefix must contain at least one \
                 partitionKeyFromQuery or partitionKeyFromLambda expression.",
            ));
        }
        if extended
            .error_output_prefix
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            return Err(Error::invalid(
                "ErrorOutputPrefix is required when dynamic partitioning is enabled.",
            ));
        }
        if target.prefix.uses_query_keys() && processing.query.is_none() {
            return Err(Error::invalid(
                "partitionKeyFromQuery requires a MetadataExtraction processor.",
            ));
        }
        if target.hints.interval_ms == 0 {
            return Err(Error::invalid(
                "Zero buffering (IntervalInSeconds 0) is not available with dynamic partitioning.",
            ));
        }
    }
    let backup = match (extended.s3_backup_mode, &extended.s3_backup_description) {
        (Some(fh::S3BackupMode::Enabled), Some(backup)) => Some(s3_target(
            backup,
            None,
            extended.custom_time_zone.as_deref(),
            None,
            false,
        )?),
        (Some(fh::S3BackupMode::Enabled), None) => {
            return Err(Error::invalid(
                "S3BackupConfiguration is required when S3BackupMode is Enabled.",
            ));
        }
        _ => None,
    };
    Ok(Plan {
        destination: Destination::S3 {
            target,
            converter,
            dynamic_partitioning,
            backup,
        },
        processing,
    })
}

fn converter(
    conversion: &fh::DataFormatConversionConfiguration,
    extended: &fh::ExtendedS3DestinationDescription,
    config: &FirehoseConfig,
) -> Result<Converter, Error> {
    if extended.compression_format != CompressionFormat::Uncompressed {
        return Err(Error::invalid(
            "CompressionFormat must be UNCOMPRESSED when record format conversion is enabled.",
        ));
    }
    if extended
        .buffering_hints
        .size_in_m_bs
        .is_some_and(|size| size < S3_SIZE_MB_CONVERSION_MIN)
    {
        return Err(Error::invalid(format!(
            "BufferingHints.SizeInMBs must be at least {S3_SIZE_MB_CONVERSION_MIN} when record \
             format conversion is enabled."
        )));
    }
    let serializer = conversion
        .output_format_configuration
        .as_ref()
        .and_then(|o| o.serializer.as_ref());
    if serializer.is_some_and(|s| s.orc_ser_de.is_some()) {
        return Err(Error::invalid(
            "ORC output (OrcSerDe) is not supported by Millrace; use ParquetSerDe.",
        ));
    }
    if conversion
        .input_format_configuration
        .as_ref()
        .and_then(|i| i.deserializer.as_ref())
        .is_some_and(|d| d.hive_json_ser_de.is_some() && d.open_x_json_ser_de.is_none())
    {
        tracing::debug!("HiveJsonSerDe is read like OpenXJsonSerDe");
    }
    let schema = conversion.schema_configuration.as_ref().ok_or_else(|| {
        Error::invalid("SchemaConfiguration is required when record format conversion is enabled.")
    })?;
    let (Some(database), Some(table)) = (&schema.database_name, &schema.table_name) else {
        return Err(Error::invalid(
            "SchemaConfiguration must name a DatabaseName and a TableName.",
        ));
    };
    let definition = config
        .tables
        .iter()
        .find(|t| t.database == *database && t.name == *table)
        .ok_or_else(|| {
            Error::invalid(format!(
                "Table {table} in database {database} is not declared in the Millrace \
                 configuration ([[firehose.table]])."
            ))
        })?;
    Converter::new(definition, conversion).map_err(Error::invalid)
}

fn http_plan(
    http: &fh::HttpEndpointDestinationDescription,
    config: &FirehoseConfig,
) -> Result<Plan, Error> {
    let endpoint = http
        .endpoint_configuration
        .as_ref()
        .and_then(|e| e.url.clone())
        .ok_or_else(|| Error::invalid("EndpointConfiguration.Url is required."))?;
    let s3 = http
        .s3_destination_description
        .as_ref()
        .ok_or_else(|| Error::invalid("S3Configuration is required."))?;
    let mut s3 = s3_target(s3, None, None, None, false)?;
    let hints_config = http.buffering_hints.clone().unwrap_or_default();
    s3.hints = hints(
        hints_config.size_in_m_bs,
        hints_config.interval_in_seconds,
        S3_SIZE_MB_DEFAULT,
    );
    let request = http.request_configuration.clone().unwrap_or_default();
    let common_attributes = request
        .common_attributes
        .filter(|a| !a.is_empty())
        .map(|attributes| {
            let map: serde_json::Map<String, serde_json::Value> = attributes
                .into_iter()
                .map(|a| {
                    (
                        a.attribute_name,
                        serde_json::Value::String(a.attribute_value),
                    )
                })
                .collect();
            serde_json::json!({ "commonAttributes": map }).to_string()
        });
    Ok(Plan {
        destination: Destination::Http {
            endpoint: HttpTarget {
                url: endpoint,
                access_key: None,
                gzip: request.content_encoding == Some(fh::ContentEncoding::Gzip),
                common_attributes,
                retry_ms: i64::from(
                    http.retry_options
                        .as_ref()
                        .and_then(|r| r.duration_in_seconds)
                        .unwrap_or(HTTP_RETRY_S_DEFAULT),
                ) * 1000,
                backup_all: http.s3_backup_mode == Some(fh::HttpEndpointS3BackupMode::AllData),
            },
            s3,
        },
        processing: processing(http.processing_configuration.as_ref(), config)?,
    })
}

/// `jdbc:redshift://host:port/db` or `jdbc:postgresql://...` → (host, port, database). A
/// host `<anything>.redshift.<ip or localhost>` (the model requires `.redshift.` in the host)
/// connects to that address, so a local PostgreSQL can stand in for a cluster.
pub fn parse_jdbc_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url
        .strip_prefix("jdbc:redshift://")
        .or_else(|| url.strip_prefix("jdbc:postgresql://"))?;
    let (authority, database) = rest.split_once('/')?;
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let database = database.split(['?', ';']).next()?.to_string();
    let local = [".redshift.", ".redshift-serverless."]
        .iter()
        .find_map(|marker| host.split_once(marker).map(|(_, after)| after))
        .filter(|after| *after == "localhost" || after.parse::<std::net::IpAddr>().is_ok());
    let host = local.unwrap_or(host).to_string();
    (!host.is_empty() && !database.is_empty()).then_some((host, port, database))
}

fn redshift_plan(
    redshift: &fh::RedshiftDestinationDescription,
    config: &FirehoseConfig,
) -> Result<Plan, Error> {
    let (host, port, database) = parse_jdbc_url(&redshift.cluster_jdbcurl).ok_or_else(|| {
        Error::invalid(format!(
            "ClusterJDBCURL {} is not a valid JDBC URL.",
            redshift.cluster_jdbcurl
        ))
    })?;
    let staging = &redshift.s3_destination_description;
    if matches!(
        staging.compression_format,
        CompressionFormat::Snappy | CompressionFormat::Zip | CompressionFormat::HadoopSnappy
    ) {
        return Err(Error::invalid(
            "CompressionFormat of S3Configuration must be UNCOMPRESSED or GZIP for a Redshift destination.",
        ));
    }
    if staging.prefix.as_deref().is_some_and(|p| p.contains("!{")) {
        return Err(Error::invalid(
            "The S3Configuration Prefix of a Redshift destination cannot contain expressions.",
        ));
    }
    let backup = match (redshift.s3_backup_mode, &redshift.s3_backup_description) {
        (Some(fh::RedshiftS3BackupMode::Enabled), Some(backup)) => {
            Some(s3_target(backup, None, None, None, false)?)
        }
        _ => None,
    };
    Ok(Plan {
        destination: Destination::Postgres {
            database: PostgresTarget {
                host,
                port,
                database,
                username: redshift.username.clone().unwrap_or_default(),
                password: String::new(),
                table: redshift.copy_command.data_table_name.clone(),
                columns: redshift.copy_command.data_table_columns.clone(),
                copy_options: redshift
                    .copy_command
                    .copy_options
                    .clone()
                    .unwrap_or_default(),
                retry_ms: i64::from(
                    redshift
                        .retry_options
                        .as_ref()
                        .and_then(|r| r.duration_in_seconds)
                        .unwrap_or(REDSHIFT_RETRY_S_DEFAULT),
                ) * 1000,
            },
            s3: s3_target(staging, None, None, None, false)?,
            backup,
        },
        processing: processing(redshift.processing_configuration.as_ref(), config)?,
    })
}

fn parameter(processor: &fh::Processor, name: ProcessorParameterName) -> Option<&str> {
    processor
        .parameters
        .as_ref()?
        .iter()
        .find(|p| p.parameter_name == name)
        .map(|p| p.parameter_value.as_str())
}

fn processing(
    configuration: Option<&fh::ProcessingConfiguration>,
    config: &FirehoseConfig,
) -> Result<Processing, Error> {
    let mut plan = Processing::default();
    let Some(configuration) = configuration else {
        return Ok(plan);
    };
    if !configuration.enabled.unwrap_or(false) {
        return Ok(plan);
    }
    use base64::Engine as _;
    let base64 = |text: &str, what: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| Error::invalid(format!("{what} must be base64.")))
    };
    for processor in configuration.processors.iter().flatten() {
        match processor.type_ {
            ProcessorType::Lambda => {
                let arn =
                    parameter(processor, ProcessorParameterName::LambdaArn).ok_or_else(|| {
                        Error::invalid("The Lambda processor requires the LambdaArn parameter.")
                    })?;
                // `arn:...:function:name:$LATEST` and the bare ARN name the same function.
                let base_arn = arn.strip_suffix(":$LATEST").unwrap_or(arn);
                let url = config
                    .functions
                    .iter()
                    .find(|f| f.arn == arn || f.arn == base_arn)
                    .map(|f| f.url.clone())
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "No function URL is configured for LambdaArn {arn} ([[firehose.function]] in \
                             the Millrace configuration)."
                        ))
                    })?;
                let retries = match parameter(processor, ProcessorParameterName::NumberOfRetries) {
                    None => LAMBDA_RETRIES_DEFAULT,
                    Some(text) => text
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n <= LAMBDA_RETRIES_MAX)
                        .ok_or_else(|| {
                            Error::invalid("NumberOfRetries must be an integer from 0 to 300.")
                        })?,
                };
                let buffer_bytes =
                    match parameter(processor, ProcessorParameterName::BufferSizeInMBs) {
                        None => LAMBDA_BUFFER_BYTES_DEFAULT,
                        Some(text) => text
                            .parse::<f64>()
                            .ok()
                            .filter(|mb| (0.2..=3.0).contains(mb))
                            .map(|mb| ((mb * MIB as f64) as u64).min(LAMBDA_BUFFER_BYTES_MAX))
                            .ok_or_else(|| {
                                Error::invalid("BufferSizeInMBs must be a number from 0.2 to 3.")
                            })?,
                    };
                let interval_s =
                    match parameter(processor, ProcessorParameterName::BufferIntervalInSeconds) {
                        None => LAMBDA_INTERVAL_S_DEFAULT,
                        Some(text) => text
                            .parse::<u64>()
                            .ok()
                            .filter(|s| (0..=900).contains(s))
                            .ok_or_else(|| {
                                Error::invalid(
                                    "BufferIntervalInSeconds must be an integer from 0 to 900.",
                                )
                            })?,
                    };
                plan.lambda = Some(LambdaPlan {
                    arn: arn.to_string(),
                    url,
                    retries,
                    buffer_bytes,
                    interval_ms: i64::try_from(interval_s * 1000).unwrap_or(60_000),
                });
            }
            ProcessorType::MetadataExtraction => {
                let query = parameter(processor, ProcessorParameterName::MetadataExtractionQuery)
                    .ok_or_else(|| {
                    Error::invalid(
                        "MetadataExtraction requires the MetadataExtractionQuery parameter.",
                    )
                })?;
                match parameter(processor, ProcessorParameterName::JsonParsingEngine) {
                    Some("JQ-1.6") | None => {}
                    Some(other) => {
                        return Err(Error::invalid(format!(
                            "JsonParsingEngine {other} is not supported; use JQ-1.6."
                        )));
                    }
                }
                let compiled = JqQuery::compile(query).map_err(|e| {
                    Error::invalid(format!("MetadataExtractionQuery is not valid: {e}."))
                })?;
                plan.query = Some(Arc::new(compiled));
            }
            ProcessorType::RecordDeAggregation => {
                plan.deaggregation = Some(
                    match parameter(processor, ProcessorParameterName::SubRecordType) {
                        Some("JSON") | None => Deaggregation::Json,
                        Some("DELIMITED") => {
                            let delimiter = parameter(processor, ProcessorParameterName::Delimiter)
                                .ok_or_else(|| {
                                    Error::invalid("DELIMITED de-aggregation requires a Delimiter.")
                                })?;
                            let delimiter = base64(delimiter, "Delimiter")?;
                            if delimiter.is_empty() {
                                return Err(Error::invalid("Delimiter must not be empty."));
                            }
                            Deaggregation::Delimited(delimiter)
                        }
                        Some(other) => {
                            return Err(Error::invalid(format!(
                                "SubRecordType {other} is not supported; use JSON or DELIMITED."
                            )));
                        }
                    },
                );
            }
            ProcessorType::Decompression => {
                match parameter(processor, ProcessorParameterName::CompressionFormat) {
                    Some("GZIP") | None => plan.decompress = true,
                    Some(other) => {
                        return Err(Error::invalid(format!(
                            "Decompression of {other} is not supported; use GZIP."
                        )));
                    }
                }
            }
            ProcessorType::CloudWatchLogProcessing => {
                plan.cloudwatch_logs_extract =
                    parameter(processor, ProcessorParameterName::DataMessageExtraction)
                        == Some("true");
            }
            ProcessorType::AppendDelimiterToRecord => {
                plan.append_delimiter = Some(
                    match parameter(processor, ProcessorParameterName::Delimiter) {
                        None => b"\n".to_vec(),
                        Some(text) => base64(text, "Delimiter")?,
                    },
                );
            }
        }
    }
    Ok(plan)
}

/// The stored description of a new S3 destination, with AWS's defaults.
pub fn describe_s3(config: fh::S3DestinationConfiguration) -> fh::S3DestinationDescription {
    fh::S3DestinationDescription {
        bucket_arn: config.bucket_arn,
        buffering_hints: filled_hints(config.buffering_hints, S3_SIZE_MB_DEFAULT),
        cloud_watch_logging_options: Some(
            config.cloud_watch_logging_options.unwrap_or(no_logging()),
        ),
        compression_format: config
            .compression_format
            .unwrap_or(CompressionFormat::Uncompressed),
        encryption_configuration: config.encryption_configuration.unwrap_or(no_encryption()),
        error_output_prefix: config.error_output_prefix,
        prefix: config.prefix,
        role_arn: config.role_arn,
    }
}

fn filled_hints(hints: Option<fh::BufferingHints>, default_size_mb: i32) -> fh::BufferingHints {
    let hints = hints.unwrap_or_default();
    fh::BufferingHints {
        interval_in_seconds: Some(hints.interval_in_seconds.unwrap_or(INTERVAL_S_DEFAULT)),
        size_in_m_bs: Some(hints.size_in_m_bs.unwrap_or(default_size_mb)),
    }
}

fn no_logging() -> fh::CloudWatchLoggingOptions {
    fh::CloudWatchLoggingOptions {
        enabled: Some(false),
        log_group_name: None,
        log_stream_name: None,
    }
}

fn no_encryption() -> fh::EncryptionConfiguration {
    fh::EncryptionConfiguration {
        kms_encryption_config: None,
        no_encryption_config: Some(fh::NoEncryptionConfig::NoEncryption),
    }
}

fn disabled_processing() -> fh::ProcessingConfiguration {
    fh::ProcessingConfiguration {
        enabled: Some(false),
        processors: Some(Vec::new()),
    }
}

pub fn describe_extended_s3(
    config: fh::ExtendedS3DestinationConfiguration,
) -> fh::ExtendedS3DestinationDescription {
    let converting = config
        .data_format_conversion_configuration
        .as_ref()
        .is_some_and(|c| c.enabled.unwrap_or(true));
    let default_size = if converting {
        S3_SIZE_MB_CONVERSION_DEFAULT
    } else {
        S3_SIZE_MB_DEFAULT
    };
    fh::ExtendedS3DestinationDescription {
        bucket_arn: config.bucket_arn,
        buffering_hints: filled_hints(config.buffering_hints, default_size),
        cloud_watch_logging_options: Some(
            config.cloud_watch_logging_options.unwrap_or(no_logging()),
        ),
        compression_format: config
            .compression_format
            .unwrap_or(CompressionFormat::Uncompressed),
        custom_time_zone: config.custom_time_zone,
        data_format_conversion_configuration: config.data_format_conversion_configuration,
        dynamic_partitioning_configuration: config.dynamic_partitioning_configuration,
        encryption_configuration: config.encryption_configuration.unwrap_or(no_encryption()),
        error_output_prefix: config.error_output_prefix,
        file_extension: config.file_extension,
        prefix: config.prefix,
        processing_configuration: Some(
            config
                .processing_configuration
                .unwrap_or(disabled_processing()),
        ),
        role_arn: config.role_arn,
        s3_backup_description: config.s3_backup_configuration.map(describe_s3),
        s3_backup_mode: Some(config.s3_backup_mode.unwrap_or(fh::S3BackupMode::Disabled)),
    }
}

/// The legacy S3 view AWS also returns for an Extended S3 destination.
pub fn s3_view(extended: &fh::ExtendedS3DestinationDescription) -> fh::S3DestinationDescription {
    fh::S3DestinationDescription {
        bucket_arn: extended.bucket_arn.clone(),
        buffering_hints: extended.buffering_hints.clone(),
        cloud_watch_logging_options: extended.cloud_watch_logging_options.clone(),
        compression_format: extended.compression_format,
        encryption_configuration: extended.encryption_configuration.clone(),
        error_output_prefix: extended.error_output_prefix.clone(),
        prefix: extended.prefix.clone(),
        role_arn: extended.role_arn.clone(),
    }
}

pub fn describe_http(
    config: fh::HttpEndpointDestinationConfiguration,
) -> (fh::HttpEndpointDestinationDescription, Option<String>) {
    let access_key = config.endpoint_configuration.access_key.clone();
    let description = fh::HttpEndpointDestinationDescription {
        buffering_hints: Some(fh::HttpEndpointBufferingHints {
            interval_in_seconds: Some(
                config
                    .buffering_hints
                    .as_ref()
                    .and_then(|h| h.interval_in_seconds)
                    .unwrap_or(INTERVAL_S_DEFAULT),
            ),
            size_in_m_bs: Some(
                config
                    .buffering_hints
                    .as_ref()
                    .and_then(|h| h.size_in_m_bs)
                    .unwrap_or(S3_SIZE_MB_DEFAULT),
            ),
        }),
        cloud_watch_logging_options: Some(
            config.cloud_watch_logging_options.unwrap_or(no_logging()),
        ),
        endpoint_configuration: Some(fh::HttpEndpointDescription {
            name: config.endpoint_configuration.name,
            url: Some(config.endpoint_configuration.url),
        }),
        processing_configuration: Some(
            config
                .processing_configuration
                .unwrap_or(disabled_processing()),
        ),
        request_configuration: Some(config.request_configuration.unwrap_or(
            fh::HttpEndpointRequestConfiguration {
                common_attributes: Some(Vec::new()),
                content_encoding: Some(fh::ContentEncoding::None),
            },
        )),
        retry_options: Some(
            config
                .retry_options
                .unwrap_or(fh::HttpEndpointRetryOptions {
                    duration_in_seconds: Some(HTTP_RETRY_S_DEFAULT),
                }),
        ),
        role_arn: config.role_arn,
        s3_backup_mode: Some(
            config
                .s3_backup_mode
                .unwrap_or(fh::HttpEndpointS3BackupMode::FailedDataOnly),
        ),
        s3_destination_description: Some(describe_s3(config.s3_configuration)),
        secrets_manager_configuration: config.secrets_manager_configuration,
    };
    (description, access_key)
}

pub fn describe_redshift(
    config: fh::RedshiftDestinationConfiguration,
) -> (fh::RedshiftDestinationDescription, Option<String>) {
    let password = config.password.clone();
    let description = fh::RedshiftDestinationDescription {
        cloud_watch_logging_options: Some(
            config.cloud_watch_logging_options.unwrap_or(no_logging()),
        ),
        cluster_jdbcurl: config.cluster_jdbcurl,
        copy_command: config.copy_command,
        processing_configuration: Some(
            config
                .processing_configuration
                .unwrap_or(disabled_processing()),
        ),
        retry_options: Some(config.retry_options.unwrap_or(fh::RedshiftRetryOptions {
            duration_in_seconds: Some(REDSHIFT_RETRY_S_DEFAULT),
        })),
        role_arn: config.role_arn,
        s3_backup_description: config.s3_backup_configuration.map(describe_s3),
        s3_backup_mode: Some(
            config
                .s3_backup_mode
                .unwrap_or(fh::RedshiftS3BackupMode::Disabled),
        ),
        s3_destination_description: describe_s3(config.s3_configuration),
        secrets_manager_configuration: config.secrets_manager_configuration,
        username: config.username,
    };
    (description, password)
}

fn merge_s3(description: &mut fh::S3DestinationDescription, update: fh::S3DestinationUpdate) {
    if let Some(v) = update.bucket_arn {
        description.bucket_arn = v;
    }
    if let Some(v) = update.buffering_hints {
        description.buffering_hints = fh::BufferingHints {
            interval_in_seconds: v
                .interval_in_seconds
                .or(description.buffering_hints.interval_in_seconds),
            size_in_m_bs: v.size_in_m_bs.or(description.buffering_hints.size_in_m_bs),
        };
    }
    if let Some(v) = update.cloud_watch_logging_options {
        description.cloud_watch_logging_options = Some(v);
    }
    if let Some(v) = update.compression_format {
        description.compression_format = v;
    }
    if let Some(v) = update.encryption_configuration {
        description.encryption_configuration = v;
    }
    if let Some(v) = update.error_output_prefix {
        description.error_output_prefix = Some(v);
    }
    if let Some(v) = update.prefix {
        description.prefix = Some(v);
    }
    if let Some(v) = update.role_arn {
        description.role_arn = v;
    }
}

pub fn merge_extended_s3(
    description: &mut fh::ExtendedS3DestinationDescription,
    update: fh::ExtendedS3DestinationUpdate,
) -> Result<(), Error> {
    let mut s3 = s3_view(description);
    merge_s3(
        &mut s3,
        fh::S3DestinationUpdate {
            bucket_arn: update.bucket_arn,
            buffering_hints: update.buffering_hints,
            cloud_watch_logging_options: update.cloud_watch_logging_options,
            compression_format: update.compression_format,
            encryption_configuration: update.encryption_configuration,
            error_output_prefix: update.error_output_prefix,
            prefix: update.prefix,
            role_arn: update.role_arn,
        },
    );
    description.bucket_arn = s3.bucket_arn;
    description.buffering_hints = s3.buffering_hints;
    description.cloud_watch_logging_options = s3.cloud_watch_logging_options;
    description.compression_format = s3.compression_format;
    description.encryption_configuration = s3.encryption_configuration;
    description.error_output_prefix = s3.error_output_prefix;
    description.prefix = s3.prefix;
    description.role_arn = s3.role_arn;
    if let Some(v) = update.custom_time_zone {
        description.custom_time_zone = Some(v);
    }
    if let Some(v) = update.data_format_conversion_configuration {
        description.data_format_conversion_configuration = Some(v);
    }
    if let Some(v) = update.dynamic_partitioning_configuration {
        let was = description
            .dynamic_partitioning_configuration
            .as_ref()
            .and_then(|d| d.enabled)
            .unwrap_or(false);
        if was != v.enabled.unwrap_or(was) {
            return Err(Error::invalid(
                "Dynamic partitioning can only be enabled when the Firehose stream is created, and cannot be disabled.",
            ));
        }
        description.dynamic_partitioning_configuration = Some(v);
    }
    if let Some(v) = update.file_extension {
        description.file_extension = Some(v);
    }
    if let Some(v) = update.processing_configuration {
        description.processing_configuration = Some(v);
    }
    if let Some(v) = update.s3_backup_mode {
        description.s3_backup_mode = Some(v);
    }
    if let Some(v) = update.s3_backup_update {
        match &mut description.s3_backup_description {
            Some(backup) => merge_s3(backup, v),
            None => {
                let mut backup = describe_s3(fh::S3DestinationConfiguration {
                    bucket_arn: v.bucket_arn.clone().unwrap_or_default(),
                    role_arn: v
                        .role_arn
                        .clone()
                        .unwrap_or_else(|| description.role_arn.clone()),
                    ..Default::default()
                });
                merge_s3(&mut backup, v);
                description.s3_backup_description = Some(backup);
            }
        }
    }
    Ok(())
}

pub fn merge_http(
    description: &mut fh::HttpEndpointDestinationDescription,
    update: fh::HttpEndpointDestinationUpdate,
) -> Option<Option<String>> {
    let mut access_key = None;
    if let Some(v) = update.buffering_hints {
        let current = description.buffering_hints.clone().unwrap_or_default();
        description.buffering_hints = Some(fh::HttpEndpointBufferingHints {
            interval_in_seconds: v.interval_in_seconds.or(current.interval_in_seconds),
            size_in_m_bs: v.size_in_m_bs.or(current.size_in_m_bs),
        });
    }
    if let Some(v) = update.cloud_watch_logging_options {
        description.cloud_watch_logging_options = Some(v);
    }
    if let Some(v) = update.endpoint_configuration {
        access_key = Some(v.access_key.clone());
        description.endpoint_configuration = Some(fh::HttpEndpointDescription {
            name: v.name,
            url: Some(v.url),
        });
    }
    if let Some(v) = update.processing_configuration {
        description.processing_configuration = Some(v);
    }
    if let Some(v) = update.request_configuration {
        description.request_configuration = Some(v);
    }
    if let Some(v) = update.retry_options {
        description.retry_options = Some(v);
    }
    if let Some(v) = update.role_arn {
        description.role_arn = Some(v);
    }
    if let Some(v) = update.s3_backup_mode {
        description.s3_backup_mode = Some(v);
    }
    if let Some(v) = update.s3_update
        && let Some(s3) = &mut description.s3_destination_description
    {
        merge_s3(s3, v);
    }
    if let Some(v) = update.secrets_manager_configuration {
        description.secrets_manager_configuration = Some(v);
    }
    access_key
}

pub fn merge_redshift(
    description: &mut fh::RedshiftDestinationDescription,
    update: fh::RedshiftDestinationUpdate,
) -> Option<String> {
    if let Some(v) = update.cloud_watch_logging_options {
        description.cloud_watch_logging_options = Some(v);
    }
    if let Some(v) = update.cluster_jdbcurl {
        description.cluster_jdbcurl = v;
    }
    if let Some(v) = update.copy_command {
        description.copy_command = v;
    }
    if let Some(v) = update.processing_configuration {
        description.processing_configuration = Some(v);
    }
    if let Some(v) = update.retry_options {
        description.retry_options = Some(v);
    }
    if let Some(v) = update.role_arn {
        description.role_arn = v;
    }
    if let Some(v) = update.s3_backup_mode {
        description.s3_backup_mode = Some(v);
    }
    if let Some(v) = update.s3_update {
        merge_s3(&mut description.s3_destination_description, v);
    }
    if let Some(v) = update.s3_backup_update
        && let Some(backup) = &mut description.s3_backup_description
    {
        merge_s3(backup, v);
    }
    if let Some(v) = update.username {
        description.username = Some(v);
    }
    update.password
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_urls() {
        assert_eq!(
            parse_jdbc_url("jdbc:redshift://pg.redshift.127.0.0.1:5432/dev"),
            Some(("127.0.0.1".into(), 5432, "dev".into()))
        );
        assert_eq!(
            parse_jdbc_url("jdbc:postgresql://x.redshift.localhost:6000/db?ssl=true"),
            Some(("localhost".into(), 6000, "db".into()))
        );
        assert_eq!(
            parse_jdbc_url("jdbc:redshift://c.abc.us-east-1.redshift.amazonaws.com:5439/dev"),
            Some((
                "c.abc.us-east-1.redshift.amazonaws.com".into(),
                5439,
                "dev".into()
            ))
        );
        assert_eq!(parse_jdbc_url("jdbc:mysql://h:1/d"), None);
        assert_eq!(parse_jdbc_url("jdbc:redshift://h/d"), None);
    }

    fn extended(prefix: Option<&str>, error: Option<&str>) -> DestinationDescription {
        DestinationDescription {
            destination_id: "destinationId-000000000001".into(),
            extended_s3_destination_description: Some(describe_extended_s3(
                fh::ExtendedS3DestinationConfiguration {
                    bucket_arn: "arn:aws:s3:::b".into(),
                    role_arn: "arn:aws:iam::000000000000:role/r".into(),
                    prefix: prefix.map(str::to_string),
                    error_output_prefix: error.map(str::to_string),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    impl Plan {
        fn build_test(
            description: &DestinationDescription,
            config: &FirehoseConfig,
        ) -> Result<Plan, Error> {
            Plan::build(description, None, config)
        }
    }

    #[test]
    fn validates_prefix_rules() {
        let config = FirehoseConfig::default();
        assert!(Plan::build_test(&extended(None, None), &config).is_ok());
        assert!(Plan::build_test(&extended(Some("p/"), Some("e/")), &config).is_ok());
        assert!(Plan::build_test(&extended(Some("p/!{timestamp:yyyy}/"), None), &config).is_err());
        assert!(
            Plan::build_test(
                &extended(Some("p/!{timestamp:yyyy}/"), Some("e/!{timestamp:yyyy}/")),
                &config
            )
            .is_err()
        );
        assert!(
            Plan::build_test(
                &extended(
                    Some("p/!{timestamp:yyyy}/"),
                    Some("e/!{firehose:error-output-type}/")
                ),
                &config
            )
            .is_ok()
        );
        assert!(
            Plan::build_test(
                &extended(Some("!{firehose:error-output-type}"), Some("e/")),
                &config
            )
            .is_err()
        );
        assert!(
            Plan::build_test(
                &extended(Some("!{partitionKeyFromQuery:a}/"), Some("e/")),
                &config
            )
            .is_err()
        );
        let no_destination = DestinationDescription {
            destination_id: "d".into(),
            ..Default::default()
        };
        assert!(Plan::build(&no_destination, None, &config).is_err());
    }
}
