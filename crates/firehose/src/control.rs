//! The control plane: CreateDeliveryStream, DescribeDeliveryStream, ListDeliveryStreams,
//! DeleteDeliveryStream, UpdateDestination, tags and server-side encryption settings.
//!
//! Every change is one catalog transaction. A new delivery stream is committed first and its
//! log created after, so a crash in between leaves a record whose log `Firehose::open`
//! creates again, never an orphaned log. Destinations are validated by building their
//! delivery plan (`plan::Plan::build`), the same function delivery uses.

use std::sync::Arc;

use millrace_catalog::Table;
use millrace_catalog::model::{
    DeliveryCheckpointRecord, DeliveryDestinationRecord, DeliveryEncryptionRecord,
    DeliveryStreamRecord, Lifecycle, Status,
};
use millrace_wire::EpochMillis;
use millrace_wire::firehose as fh;
use millrace_wire::firehose::{DeliveryStreamStatus, DeliveryStreamType};

use crate::error::Error;
use crate::plan::{self, Plan};
use crate::{Entry, Inner, RequestContext, Tags, delivery_stream_arn, exists, stream_key};

/// The id of the (only) destination of a delivery stream.
pub const DESTINATION_ID: &str = "destinationId-000000000001";
/// Tags per delivery stream.
const TAGS_MAX: usize = 50;
const LIST_LIMIT_DEFAULT: usize = 10;
const LIST_TAGS_LIMIT_DEFAULT: usize = 50;

fn status(record: &DeliveryStreamRecord, now_ms: i64) -> DeliveryStreamStatus {
    match record.lifecycle.at(now_ms) {
        Status::Creating => DeliveryStreamStatus::Creating,
        Status::Deleting => DeliveryStreamStatus::Deleting,
        Status::Active | Status::Updating => DeliveryStreamStatus::Active,
    }
}

pub(crate) fn status_name(status: DeliveryStreamStatus) -> &'static str {
    status.as_str()
}

/// The stored destination and its secret, decoded.
pub(crate) fn destination(
    record: &DeliveryStreamRecord,
) -> Result<(fh::DestinationDescription, Option<String>), Error> {
    let stored = record
        .destinations
        .first()
        .ok_or_else(|| Error::StoredDestination {
            name: record.name.clone(),
            source: millrace_wire::WireError::serialization(Some("no destination".into())),
        })?;
    let description = fh::decode_stored(
        stored.description_json.as_bytes(),
        &fh::shapes::DestinationDescription,
    )
    .map_err(|source| Error::StoredDestination {
        name: record.name.clone(),
        source,
    })?;
    Ok((description, stored.secret.clone()))
}

fn store_destination(
    description: &fh::DestinationDescription,
    secret: Option<String>,
) -> DeliveryDestinationRecord {
    let json = millrace_wire::encode::to_vec(millrace_wire::Format::Json, description);
    DeliveryDestinationRecord {
        destination_id: description.destination_id.clone(),
        description_json: String::from_utf8_lossy(&json).into_owned(),
        secret,
    }
}

impl Inner {
    pub async fn create_delivery_stream(
        self: &Arc<Self>,
        ctx: &RequestContext,
        input: fh::CreateDeliveryStreamInput,
    ) -> Result<fh::CreateDeliveryStreamOutput, Error> {
        let stream_type = input
            .delivery_stream_type
            .unwrap_or(DeliveryStreamType::DirectPut);
        let (source_stream_arn, source_role_arn) = match stream_type {
            DeliveryStreamType::DirectPut => {
                if input.kinesis_stream_source_configuration.is_some() {
                    return Err(Error::invalid(
                        "KinesisStreamSourceConfiguration is only allowed when DeliveryStreamType is KinesisStreamAsSource.",
                    ));
                }
                (None, None)
            }
            DeliveryStreamType::KinesisStreamAsSource => {
                let source = input.kinesis_stream_source_configuration.as_ref().ok_or_else(|| {
                    Error::invalid(
                        "KinesisStreamSourceConfiguration is required when DeliveryStreamType is KinesisStreamAsSource.",
                    )
                })?;
                self.check_source_stream(ctx, &source.kinesis_stream_arn)
                    .await?;
                if input
                    .delivery_stream_encryption_configuration_input
                    .is_some()
                {
                    return Err(Error::invalid(
                        "Server-side encryption is not supported for a Firehose stream whose source is a Kinesis data stream.",
                    ));
                }
                (
                    Some(source.kinesis_stream_arn.clone()),
                    Some(source.role_arn.clone()),
                )
            }
            other => {
                return Err(Error::invalid(format!(
                    "DeliveryStreamType {other} is not supported by Millrace; use DirectPut or KinesisStreamAsSource."
                )));
            }
        };
        let (description, secret) = new_destination(input.clone())?;
        Plan::build(&description, secret.as_deref(), &self.config)?;
        let mut tags = Tags::new();
        for tag in input.tags.iter().flatten() {
            tags.insert(tag.key.clone(), tag.value.clone().unwrap_or_default());
        }
        if tags.len() > TAGS_MAX {
            return Err(Error::LimitExceeded {
                message: format!("A Firehose stream can have at most {TAGS_MAX} tags."),
            });
        }
        let encryption = input
            .delivery_stream_encryption_configuration_input
            .map(encryption_record)
            .transpose()?;

        let _creating = self.creating.lock();
        let now = self.now_ms();
        let key = stream_key(&ctx.account, &ctx.region, &input.delivery_stream_name);
        if let Some(existing) = self.registry.read().get(&key)
            && exists(&existing.record(), now)
        {
            return Err(Error::AlreadyExists {
                name: input.delivery_stream_name.clone(),
                account: ctx.account.clone(),
            });
        }
        let count = self
            .registry
            .read()
            .values()
            .filter(|e| {
                let r = e.record();
                r.account == ctx.account && r.region == ctx.region && exists(&r, now)
            })
            .count();
        if count >= self.config.delivery_streams_max {
            return Err(Error::LimitExceeded {
                message: format!(
                    "You have already consumed your firehose quota of {} hoses. Firehose names: ...",
                    self.config.delivery_streams_max
                ),
            });
        }
        // A stream deleted and not yet gone (delay running) is replaced.
        if let Some(stale) = self.registry.read().get(&key).cloned() {
            self.remove(&stale)?;
        }
        let lifecycle = if self.config.create_delay_ms > 0 {
            Lifecycle {
                status: Status::Creating,
                until_ms: now + self.config.create_delay_ms,
                then: Status::Active,
            }
        } else {
            Lifecycle::steady(Status::Active)
        };
        let record = self
            .catalog
            .write(|txn| -> Result<DeliveryStreamRecord, Error> {
                let log_id = txn.allocate("log", 1)?;
                let record = DeliveryStreamRecord {
                    account: ctx.account.clone(),
                    region: ctx.region.clone(),
                    name: input.delivery_stream_name.clone(),
                    created_ms: now,
                    lifecycle,
                    stream_type: stream_type.as_str().to_string(),
                    version_id: 1,
                    last_update_ms: None,
                    log_id,
                    source_stream_arn,
                    source_role_arn,
                    destinations: vec![store_destination(&description, secret)],
                    tags,
                    encryption,
                };
                txn.put(Table::DeliveryStreams, &key, &record)?;
                txn.put(
                    Table::DeliveryCheckpoints,
                    &key,
                    &DeliveryCheckpointRecord::default(),
                )?;
                Ok(record)
            })?;
        let arn = delivery_stream_arn(&record);
        if let Err(error) = self.log.create_log(record.log_id) {
            let _ = self.catalog.write(|txn| {
                txn.delete(Table::DeliveryStreams, &key)?;
                txn.delete(Table::DeliveryCheckpoints, &key)
            });
            return Err(error.into());
        }
        let entry = Arc::new(Entry::new(key.clone(), record, 0));
        self.registry.write().insert(key, entry.clone());
        self.spawn_tasks(&entry);
        tracing::info!(delivery_stream = %arn, "created delivery stream");
        Ok(fh::CreateDeliveryStreamOutput {
            delivery_stream_arn: Some(arn),
        })
    }

    /// The source stream must exist (AWS refuses to create otherwise).
    async fn check_source_stream(&self, ctx: &RequestContext, arn: &str) -> Result<(), Error> {
        let (account, region) = source_account_region(arn)
            .ok_or_else(|| Error::invalid(format!("KinesisStreamARN {arn} is not valid.")))?;
        let source_ctx = RequestContext {
            account,
            region,
            request_id: ctx.request_id.clone(),
            principal: ctx.principal.clone(),
        };
        let summary = millrace_wire::kinesis::DescribeStreamSummaryInput {
            stream_arn: Some(arn.to_string()),
            ..Default::default()
        };
        let request = millrace_wire::kinesis::Request::DescribeStreamSummary(summary);
        match self.streams.handle(&source_ctx, request).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::invalid(format!(
                "The Kinesis data stream {arn} does not exist or is not accessible."
            ))),
        }
    }

    pub fn describe_delivery_stream(
        &self,
        ctx: &RequestContext,
        input: fh::DescribeDeliveryStreamInput,
    ) -> Result<fh::DescribeDeliveryStreamOutput, Error> {
        let entry = self.find(ctx, &input.delivery_stream_name)?;
        let record = entry.record();
        let (mut destination, _secret) = destination(&record)?;
        if let Some(extended) = &destination.extended_s3_destination_description {
            destination.s3_destination_description = Some(plan::s3_view(extended));
        }
        let skip = input
            .exclusive_start_destination_id
            .as_deref()
            .is_some_and(|start| start >= DESTINATION_ID);
        let destinations = if skip { Vec::new() } else { vec![destination] };
        let source = match (&record.source_stream_arn, &record.source_role_arn) {
            (Some(stream), role) => Some(fh::SourceDescription {
                kinesis_stream_source_description: Some(fh::KinesisStreamSourceDescription {
                    delivery_start_timestamp: Some(EpochMillis(record.created_ms)),
                    kinesis_stream_arn: Some(stream.clone()),
                    role_arn: role.clone(),
                }),
                ..Default::default()
            }),
            (None, _) => None,
        };
        let encryption = Some(match &record.encryption {
            Some(e) => fh::DeliveryStreamEncryptionConfiguration {
                failure_description: None,
                key_arn: e.key_arn.clone(),
                key_type: fh::KeyType::from_str_opt(&e.key_type),
                status: Some(fh::DeliveryStreamEncryptionStatus::Enabled),
            },
            None => fh::DeliveryStreamEncryptionConfiguration {
                status: Some(fh::DeliveryStreamEncryptionStatus::Disabled),
                ..Default::default()
            },
        });
        Ok(fh::DescribeDeliveryStreamOutput {
            delivery_stream_description: fh::DeliveryStreamDescription {
                create_timestamp: Some(EpochMillis(record.created_ms)),
                delivery_stream_arn: delivery_stream_arn(&record),
                delivery_stream_encryption_configuration: encryption,
                delivery_stream_name: record.name.clone(),
                delivery_stream_status: status(&record, self.now_ms()),
                delivery_stream_type: DeliveryStreamType::from_str_opt(&record.stream_type)
                    .unwrap_or(DeliveryStreamType::DirectPut),
                destinations,
                failure_description: None,
                has_more_destinations: false,
                last_update_timestamp: record.last_update_ms.map(EpochMillis),
                source,
                version_id: record.version_id.to_string(),
            },
        })
    }

    pub fn list_delivery_streams(
        &self,
        ctx: &RequestContext,
        input: fh::ListDeliveryStreamsInput,
    ) -> fh::ListDeliveryStreamsOutput {
        let now = self.now_ms();
        let mut names: Vec<String> = self
            .registry
            .read()
            .values()
            .map(|e| e.record())
            .filter(|r| r.account == ctx.account && r.region == ctx.region && exists(r, now))
            .filter(|r| {
                input
                    .delivery_stream_type
                    .is_none_or(|t| t.as_str() == r.stream_type)
            })
            .map(|r| r.name.clone())
            .filter(|name| {
                input
                    .exclusive_start_delivery_stream_name
                    .as_ref()
                    .is_none_or(|start| name > start)
            })
            .collect();
        names.sort();
        let limit = input
            .limit
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(LIST_LIMIT_DEFAULT);
        let has_more = names.len() > limit;
        names.truncate(limit);
        fh::ListDeliveryStreamsOutput {
            delivery_stream_names: names,
            has_more_delivery_streams: has_more,
        }
    }

    pub fn delete_delivery_stream(
        &self,
        ctx: &RequestContext,
        input: fh::DeleteDeliveryStreamInput,
    ) -> Result<(), Error> {
        let entry = self.find(ctx, &input.delivery_stream_name)?;
        let now = self.now_ms();
        let record = entry.record();
        if status(&record, now) == DeliveryStreamStatus::Creating {
            return Err(Error::ResourceInUse {
                message: format!(
                    "Firehose {} is in CREATING state and cannot be deleted.",
                    record.name
                ),
            });
        }
        entry.stop.cancel();
        if self.config.delete_delay_ms <= 0 {
            return self.remove(&entry);
        }
        self.mutate(&entry, |record| {
            record.lifecycle = Lifecycle {
                status: Status::Deleting,
                until_ms: now + self.config.delete_delay_ms,
                then: Status::Deleting,
            };
            Ok(())
        })
    }

    pub fn update_destination(
        &self,
        ctx: &RequestContext,
        input: fh::UpdateDestinationInput,
    ) -> Result<(), Error> {
        let entry = self.find(ctx, &input.delivery_stream_name)?;
        let now = self.now_ms();
        let state = status(&entry.record(), now);
        if state != DeliveryStreamStatus::Active {
            return Err(Error::ResourceInUse {
                message: format!(
                    "Firehose {} is not in the ACTIVE state (it is {}).",
                    input.delivery_stream_name,
                    status_name(state)
                ),
            });
        }
        if input.destination_id != DESTINATION_ID {
            return Err(Error::invalid(format!(
                "Destination Id {} not found.",
                input.destination_id
            )));
        }
        self.mutate(&entry, |record| {
            let current = record.version_id.to_string();
            if input.current_delivery_stream_version_id != current {
                return Err(Error::ConcurrentModification {
                    message: format!(
                        "Cannot update firehose: {} since the current version id: {current} and \
                         request version id: {} does not match",
                        record.name, input.current_delivery_stream_version_id
                    ),
                });
            }
            let (mut description, mut secret) = destination(record)?;
            apply_update(&mut description, &mut secret, input.clone())?;
            Plan::build(&description, secret.as_deref(), &self.config)?;
            record.destinations = vec![store_destination(&description, secret)];
            record.version_id += 1;
            record.last_update_ms = Some(now);
            Ok(())
        })
    }

    pub fn tag(
        &self,
        ctx: &RequestContext,
        input: fh::TagDeliveryStreamInput,
    ) -> Result<(), Error> {
        let entry = self.find(ctx, &input.delivery_stream_name)?;
        self.mutate(&entry, |record| {
            let mut tags = record.tags.clone();
            for tag in &input.tags {
                tags.insert(tag.key.clone(), tag.value.clone().unwrap_or_default());
            }
            if tags.len() > TAGS_MAX {
                return Err(Error::LimitExceeded {
                    message: format!(
                        "The Firehose stream {} would have more than {TAGS_MAX} tags.",
                        record.name
                    ),
                });
            }
            record.tags = tags;
            Ok(())
        })
    }

    pub fn untag(
        &self,
        ctx: &RequestContext,
        input: fh::UntagDeliveryStreamInput,
    ) -> Result<(), Error> {
        let entry = self.find(ctx, &input.delivery_stream_name)?;
        self.mutate(&entry, |record| {
            for key in &input.tag_keys {
                record.tags.remove(key);
            }
            Ok(())
        })
    }

    pub fn list_tags(
        &self,
        ctx: &RequestContext,
        input: fh::ListTagsForDeliveryStreamInput,
    ) -> Result<fh::ListTagsForDeliveryStreamOutput, Error> {
        let entry = self.find(ctx, &input.delivery_stream_name)?;
        let record = entry.record();
        let limit = input
            .limit
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(LIST_TAGS_LIMIT_DEFAULT);
        let mut tags: Vec<fh::Tag> = record
            .tags
            .iter()
            .filter(|(key, _)| {
                input
                    .exclusive_start_tag_key
                    .as_ref()
                    .is_none_or(|start| *key > start)
            })
            .map(|(key, value)| fh::Tag {
                key: key.clone(),
                value: Some(value.clone()),
            })
            .collect();
        let has_more = tags.len() > limit;
        tags.truncate(limit);
        Ok(fh::ListTagsForDeliveryStreamOutput {
            has_more_tags: has_more,
            tags,
        })
    }

    pub fn start_encryption(
        &self,
        ctx: &RequestContext,
        input: fh::StartDeliveryStreamEncryptionInput,
    ) -> Result<(), Error> {
        let entry = self.find(ctx, &input.delivery_stream_name)?;
        if entry.record().stream_type != DeliveryStreamType::DirectPut.as_str() {
            return Err(Error::invalid(
                "Server-side encryption is only supported for Firehose streams with DirectPut as the source.",
            ));
        }
        let encryption = encryption_record(
            input
                .delivery_stream_encryption_configuration_input
                .unwrap_or(fh::DeliveryStreamEncryptionConfigurationInput {
                    key_arn: None,
                    key_type: fh::KeyType::AwsOwnedCmk,
                }),
        )?;
        self.mutate(&entry, |record| {
            record.encryption = Some(encryption);
            Ok(())
        })
    }

    pub fn stop_encryption(
        &self,
        ctx: &RequestContext,
        input: fh::StopDeliveryStreamEncryptionInput,
    ) -> Result<(), Error> {
        let entry = self.find(ctx, &input.delivery_stream_name)?;
        self.mutate(&entry, |record| {
            record.encryption = None;
            Ok(())
        })
    }
}

fn encryption_record(
    input: fh::DeliveryStreamEncryptionConfigurationInput,
) -> Result<DeliveryEncryptionRecord, Error> {
    match (input.key_type, &input.key_arn) {
        (fh::KeyType::CustomerManagedCmk, None) => Err(Error::invalid(
            "KeyARN is required when KeyType is CUSTOMER_MANAGED_CMK.",
        )),
        (fh::KeyType::AwsOwnedCmk, Some(_)) => Err(Error::invalid(
            "KeyARN must not be specified when KeyType is AWS_OWNED_CMK.",
        )),
        (key_type, key_arn) => Ok(DeliveryEncryptionRecord {
            key_type: key_type.as_str().to_string(),
            key_arn: key_arn.clone(),
        }),
    }
}

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` → (account, region).
pub(crate) fn source_account_region(arn: &str) -> Option<(String, String)> {
    let mut parts = arn.splitn(6, ':');
    let (_arn, _partition, service, region, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (service == "kinesis").then(|| (account.to_string(), region.to_string()))
}

/// The description (and secret) of the one destination a CreateDeliveryStream names.
fn new_destination(
    input: fh::CreateDeliveryStreamInput,
) -> Result<(fh::DestinationDescription, Option<String>), Error> {
    let unsupported = [
        (
            input.elasticsearch_destination_configuration.is_some(),
            "Elasticsearch",
        ),
        (
            input
                .amazonopensearchservice_destination_configuration
                .is_some(),
            "Amazon OpenSearch Service",
        ),
        (
            input
                .amazon_open_search_serverless_destination_configuration
                .is_some(),
            "Amazon OpenSearch Serverless",
        ),
        (input.splunk_destination_configuration.is_some(), "Splunk"),
        (
            input.snowflake_destination_configuration.is_some(),
            "Snowflake",
        ),
        (
            input.iceberg_destination_configuration.is_some(),
            "Apache Iceberg",
        ),
    ];
    let supported = [
        input.s3_destination_configuration.is_some(),
        input.extended_s3_destination_configuration.is_some(),
        input.http_endpoint_destination_configuration.is_some(),
        input.redshift_destination_configuration.is_some(),
    ];
    let n_destinations =
        supported.iter().filter(|s| **s).count() + unsupported.iter().filter(|(s, _)| *s).count();
    if n_destinations != 1 {
        return Err(Error::invalid(
            "Exactly one destination configuration must be specified.",
        ));
    }
    if let Some((_, name)) = unsupported.iter().find(|(s, _)| *s) {
        return Err(Error::invalid(format!(
            "{name} destinations are not supported by Millrace; use S3, an HTTP endpoint or PostgreSQL (Redshift)."
        )));
    }
    let mut description = fh::DestinationDescription {
        destination_id: DESTINATION_ID.to_string(),
        ..Default::default()
    };
    let mut secret = None;
    if let Some(extended) = input.extended_s3_destination_configuration {
        description.extended_s3_destination_description =
            Some(plan::describe_extended_s3(extended));
    } else if let Some(s3) = input.s3_destination_configuration {
        // The deprecated form is stored as the extended one, as AWS does.
        let s3 = plan::describe_s3(s3);
        description.extended_s3_destination_description =
            Some(fh::ExtendedS3DestinationDescription {
                bucket_arn: s3.bucket_arn,
                buffering_hints: s3.buffering_hints,
                cloud_watch_logging_options: s3.cloud_watch_logging_options,
                compression_format: s3.compression_format,
                encryption_configuration: s3.encryption_configuration,
                error_output_prefix: s3.error_output_prefix,
                prefix: s3.prefix,
                role_arn: s3.role_arn,
                s3_backup_mode: Some(fh::S3BackupMode::Disabled),
                custom_time_zone: None,
                data_format_conversion_configuration: None,
                dynamic_partitioning_configuration: None,
                file_extension: None,
                processing_configuration: None,
                s3_backup_description: None,
            });
    } else if let Some(http) = input.http_endpoint_destination_configuration {
        let (http, access_key) = plan::describe_http(http);
        description.http_endpoint_destination_description = Some(http);
        secret = access_key;
    } else if let Some(redshift) = input.redshift_destination_configuration {
        let (redshift, password) = plan::describe_redshift(redshift);
        description.redshift_destination_description = Some(redshift);
        secret = password;
    }
    Ok((description, secret))
}

/// Applies the one `...Update` of an UpdateDestination to the stored description.
fn apply_update(
    description: &mut fh::DestinationDescription,
    secret: &mut Option<String>,
    input: fh::UpdateDestinationInput,
) -> Result<(), Error> {
    let n_updates = [
        input.s3_destination_update.is_some(),
        input.extended_s3_destination_update.is_some(),
        input.http_endpoint_destination_update.is_some(),
        input.redshift_destination_update.is_some(),
        input.elasticsearch_destination_update.is_some(),
        input.amazonopensearchservice_destination_update.is_some(),
        input
            .amazon_open_search_serverless_destination_update
            .is_some(),
        input.splunk_destination_update.is_some(),
        input.snowflake_destination_update.is_some(),
        input.iceberg_destination_update.is_some(),
    ]
    .iter()
    .filter(|u| **u)
    .count();
    if n_updates != 1 {
        return Err(Error::invalid(
            "Exactly one destination update must be specified.",
        ));
    }
    let mismatch = || {
        Error::invalid(
            "Changing the destination type of a Firehose stream is not supported by Millrace.",
        )
    };
    if let Some(update) = input.extended_s3_destination_update {
        let extended = description
            .extended_s3_destination_description
            .as_mut()
            .ok_or_else(mismatch)?;
        plan::merge_extended_s3(extended, update)?;
    } else if let Some(update) = input.s3_destination_update {
        let extended = description
            .extended_s3_destination_description
            .as_mut()
            .ok_or_else(mismatch)?;
        plan::merge_extended_s3(
            extended,
            fh::ExtendedS3DestinationUpdate {
                bucket_arn: update.bucket_arn,
                buffering_hints: update.buffering_hints,
                cloud_watch_logging_options: update.cloud_watch_logging_options,
                compression_format: update.compression_format,
                encryption_configuration: update.encryption_configuration,
                error_output_prefix: update.error_output_prefix,
                prefix: update.prefix,
                role_arn: update.role_arn,
                ..Default::default()
            },
        )?;
    } else if let Some(update) = input.http_endpoint_destination_update {
        let http = description
            .http_endpoint_destination_description
            .as_mut()
            .ok_or_else(mismatch)?;
        if let Some(access_key) = plan::merge_http(http, update) {
            *secret = access_key;
        }
    } else if let Some(update) = input.redshift_destination_update {
        let redshift = description
            .redshift_destination_description
            .as_mut()
            .ok_or_else(mismatch)?;
        if let Some(password) = plan::merge_redshift(redshift, update) {
            *secret = Some(password);
        }
    } else {
        return Err(mismatch());
    }
    Ok(())
}
