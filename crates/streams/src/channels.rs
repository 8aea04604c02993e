//! Channels: the control plane of continuous delivery from a stream to S3 objects or to
//! Apache Iceberg tables (S3 Tables).
//!
//! CreateChannel, DescribeChannel, ListChannels, UpdateChannel and DeleteChannel with AWS's
//! checks: exactly one destination, an existing ACTIVE on-demand stream, one channel per
//! destination type and stream, `DataFreshnessInSeconds` in 300 to 900 (300 by default),
//! an encryption key that the key store knows, and the CREATING → ACTIVE, UPDATING and
//! DELETING states on the injected clock (`create_delay_ms`, `update_delay_ms`,
//! `delete_delay_ms`). A channel is a `ChannelRecord` in `Table::Channels` holding the AWS
//! JSON of its `ChannelDescription`.
//!
//! Deliberately not here: the delivery itself. The `firehose` crate watches the channel
//! records (`Streams::channels`) and runs one delivery task per live channel; it reads the
//! stream through `Streams::handle` like any consumer and records its progress in
//! `Table::ChannelCheckpoints`.

use millrace_catalog::Table;
use millrace_catalog::model::{ChannelRecord, Lifecycle, Status, StreamMode};
use millrace_wire::kinesis as k;
use millrace_wire::{EpochMillis, Format};

use crate::control::{TAGS_PER_STREAM_MAX, check_tags, decode_next_token, encode_next_token};
use crate::{Error, Inner, RequestContext, Streams, Tags, stream_arn};

/// `DataFreshnessInSeconds` when a request leaves it out (AWS: 300).
pub const DATA_FRESHNESS_SECS_DEFAULT: i32 = 300;
/// The range AWS accepts for `DataFreshnessInSeconds`.
pub const DATA_FRESHNESS_SECS_MIN: i32 = 300;
pub const DATA_FRESHNESS_SECS_MAX: i32 = 900;
/// Channels per destination type and stream (AWS at launch: one S3 and one S3 Tables).
pub const CHANNELS_PER_STREAM_AND_TYPE_MAX: usize = 1;
/// Channels per account and region.
pub const CHANNELS_PER_ACCOUNT_MAX: usize = 100;
/// ListChannels page size when MaxResults is not given.
const LIST_CHANNELS_LIMIT_DEFAULT: usize = 100;

fn channel_key(account: &str, region: &str, name: &str) -> String {
    format!("{account}/{region}/{name}")
}

pub(crate) fn channel_arn(record: &ChannelRecord) -> String {
    format!(
        "arn:aws:kinesis:{}:{}:channel/{}",
        record.region, record.account, record.name
    )
}

/// `arn:aws:kinesis:REGION:ACCOUNT:channel/NAME` → (account, region, name).
pub(crate) fn parse_channel_arn(arn: &str) -> Option<(String, String, String)> {
    let mut parts = arn.splitn(6, ':');
    let (_arn, _partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let name = resource.strip_prefix("channel/")?;
    if service != "kinesis" || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((account.to_string(), region.to_string(), name.to_string()))
}

fn wire_status(status: Status) -> k::ChannelStatus {
    match status {
        Status::Creating => k::ChannelStatus::Creating,
        Status::Active => k::ChannelStatus::Active,
        Status::Updating => k::ChannelStatus::Updating,
        Status::Deleting => k::ChannelStatus::Deleting,
    }
}

fn channel_not_found(arn: &str, account: &str) -> Error {
    Error::ResourceNotFound {
        message: format!("Channel {arn} under account {account} not found."),
    }
}

/// Still visible at all: a DELETING channel vanishes at the end of its delay.
pub fn channel_exists(record: &ChannelRecord, now_ms: i64) -> bool {
    !(record.lifecycle.status == Status::Deleting && now_ms >= record.lifecycle.until_ms)
}

/// The stored description of a channel, as the `wire` crate reads it back.
pub fn stored_description(record: &ChannelRecord) -> Result<k::ChannelDescription, Error> {
    let value = millrace_wire::decode_checked(
        Format::Json,
        record.description_json.as_bytes(),
        &k::shapes::ChannelDescription,
    )
    .map_err(|e| Error::StoredChannel {
        name: record.name.clone(),
        message: e.to_string(),
    })?;
    <k::ChannelDescription as millrace_wire::convert::FromValue>::from_value(value).map_err(|e| {
        Error::StoredChannel {
            name: record.name.clone(),
            message: e.to_string(),
        }
    })
}

fn store_description(description: &k::ChannelDescription) -> String {
    let json = millrace_wire::encode::to_vec(Format::Json, description);
    String::from_utf8_lossy(&json).into_owned()
}

fn check_freshness(value: Option<i32>) -> Result<i32, Error> {
    let secs = value.unwrap_or(DATA_FRESHNESS_SECS_DEFAULT);
    if !(DATA_FRESHNESS_SECS_MIN..=DATA_FRESHNESS_SECS_MAX).contains(&secs) {
        return Err(Error::invalid(format!(
            "DataFreshnessInSeconds must be between {DATA_FRESHNESS_SECS_MIN} and \
             {DATA_FRESHNESS_SECS_MAX} seconds; {secs} was given."
        )));
    }
    Ok(secs)
}

impl Inner {
    fn lifecycle_towards(&self, status: Status, delay_ms: i64, now: i64) -> Lifecycle {
        if delay_ms > 0 {
            Lifecycle {
                status,
                until_ms: now + delay_ms,
                then: Status::Active,
            }
        } else {
            Lifecycle::steady(Status::Active)
        }
    }

    fn channels_of(&self, account: &str, region: &str) -> Result<Vec<ChannelRecord>, Error> {
        let now = self.now_ms();
        let prefix = format!("{account}/{region}/");
        Ok(self
            .catalog
            .load_all::<ChannelRecord>(Table::Channels)?
            .into_iter()
            .filter(|(key, record)| key.starts_with(&prefix) && channel_exists(record, now))
            .map(|(_, record)| record)
            .collect())
    }

    fn find_channel(&self, ctx: &RequestContext, arn: &str) -> Result<ChannelRecord, Error> {
        let not_found = || channel_not_found(arn, &ctx.account);
        let (account, region, name) = parse_channel_arn(arn).ok_or_else(not_found)?;
        let record: ChannelRecord = self
            .catalog
            .get(Table::Channels, &channel_key(&account, &region, &name))?
            .ok_or_else(not_found)?;
        if !channel_exists(&record, self.now_ms()) {
            return Err(not_found());
        }
        Ok(record)
    }

    fn describe_channel_record(
        &self,
        record: &ChannelRecord,
    ) -> Result<k::ChannelDescription, Error> {
        let mut description = stored_description(record)?;
        description.channel_status = wire_status(record.lifecycle.at(self.now_ms()));
        Ok(description)
    }

    pub(crate) fn create_channel(
        &self,
        ctx: &RequestContext,
        input: k::CreateChannelInput,
    ) -> Result<k::CreateChannelOutput, Error> {
        let destination_type = match (
            &input.s3_destination_configuration,
            &input.s3_tables_destination_configuration,
        ) {
            (Some(_), None) => k::ChannelDestinationType::S3,
            (None, Some(_)) => k::ChannelDestinationType::S3Tables,
            _ => {
                return Err(Error::invalid(
                    "Exactly one of S3DestinationConfiguration and \
                     S3TablesDestinationConfiguration must be specified.",
                ));
            }
        };
        let [stream_config] = input.stream_configuration_list.as_slice() else {
            return Err(Error::invalid(
                "A channel reads exactly one stream: StreamConfigurationList must have one \
                 entry.",
            ));
        };
        let format = stream_config.record_configuration.record_format_type;
        match (format, &stream_config.record_configuration.gsr_schema_arn) {
            (k::RecordFormatType::GsrJson, _) => {
                return Err(Error::invalid(
                    "RecordFormatType GSR_JSON needs the AWS Glue Schema Registry, which \
                     Millrace does not have; use JSON.",
                ));
            }
            (_, Some(_)) => {
                return Err(Error::invalid(
                    "GSRSchemaARN is allowed only with RecordFormatType GSR_JSON.",
                ));
            }
            _ => {}
        }
        let s3 = match input.s3_destination_configuration {
            Some(config) => {
                let freshness = check_freshness(config.data_freshness_in_seconds)?;
                if millrace_wire_bucket(&config.storage_configuration.bucket_arn).is_none() {
                    return Err(Error::invalid(format!(
                        "Invalid BucketARN {}.",
                        config.storage_configuration.bucket_arn
                    )));
                }
                let dead_letter = config.dead_letter_queue_s3_configuration.unwrap_or(
                    k::DeadLetterQueueS3Configuration {
                        bucket_arn: config.storage_configuration.bucket_arn.clone(),
                        error_output_prefix: None,
                        expected_bucket_owner: config
                            .storage_configuration
                            .expected_bucket_owner
                            .clone(),
                    },
                );
                Some(k::S3DestinationDescription {
                    data_freshness_in_seconds: freshness,
                    dead_letter_queue_s3_configuration: dead_letter,
                    storage_configuration: config.storage_configuration,
                })
            }
            None => None,
        };
        let tables = match input.s3_tables_destination_configuration {
            Some(config) => {
                let freshness = check_freshness(config.data_freshness_in_seconds)?;
                let mut seen = std::collections::BTreeSet::new();
                for table in &config.s3_tables_configuration_list {
                    if !seen.insert((
                        table.table_bucket_arn.clone(),
                        table.namespace.clone(),
                        table.table_name.clone(),
                    )) {
                        return Err(Error::invalid(format!(
                            "Table {}.{} appears more than once in S3TablesConfigurationList.",
                            table.namespace, table.table_name
                        )));
                    }
                }
                Some(k::S3TablesDestinationDescription {
                    data_freshness_in_seconds: freshness,
                    dead_letter_queue_s3_configuration: config.dead_letter_queue_s3_configuration,
                    s3_tables_configuration_list: config.s3_tables_configuration_list,
                })
            }
            None => None,
        };
        let tags: Tags = input.tags.unwrap_or_default();
        check_tags(&tags)?;
        if tags.len() > TAGS_PER_STREAM_MAX {
            return Err(Error::invalid(format!(
                "A channel cannot have more than {TAGS_PER_STREAM_MAX} tags."
            )));
        }
        let entry = self.find_stream(ctx, None, Some(&stream_config.stream_arn))?;
        let now = self.now_ms();
        let stream = entry.view().record.clone();
        if stream.mode != StreamMode::OnDemand {
            return Err(Error::invalid(format!(
                "Channels are supported only on data streams in on-demand capacity mode. \
                 Stream {} under account {} is in PROVISIONED mode.",
                stream.name, stream.account
            )));
        }
        let status = stream.lifecycle.at(now);
        if !matches!(status, Status::Active | Status::Updating) {
            return Err(Error::StreamNotActive {
                name: stream.name.clone(),
                account: stream.account.clone(),
                status: crate::status_str(status),
            });
        }
        if let Some(encryption) = &input.encryption_configuration {
            self.crypto
                .resolve(&encryption.key_id, &ctx.account, &ctx.region)?;
        }
        // Names are unique per account and region: creations are serialised so the check
        // and the insert below see the same world.
        let _creating = self.creating.lock();
        let existing = self.channels_of(&ctx.account, &ctx.region)?;
        let key = channel_key(&ctx.account, &ctx.region, &input.channel_name);
        if self
            .catalog
            .get::<ChannelRecord>(Table::Channels, &key)?
            .is_some()
        {
            return Err(Error::ResourceInUse {
                message: format!(
                    "Channel {} under account {} already exists.",
                    input.channel_name, ctx.account
                ),
            });
        }
        if existing.len() >= CHANNELS_PER_ACCOUNT_MAX {
            return Err(Error::LimitExceeded {
                message: format!(
                    "Account {} in {} has reached the limit of {CHANNELS_PER_ACCOUNT_MAX} \
                     channels.",
                    ctx.account, ctx.region
                ),
            });
        }
        let arn_of_stream = stream_arn(&stream);
        let same_kind = existing
            .iter()
            .filter_map(|c| stored_description(c).ok())
            .filter(|d| {
                d.stream_configuration_list
                    .iter()
                    .any(|s| s.stream_arn == arn_of_stream)
                    && (d.s3_destination_configuration.is_some()
                        == (destination_type == k::ChannelDestinationType::S3))
            })
            .count();
        if same_kind >= CHANNELS_PER_STREAM_AND_TYPE_MAX {
            return Err(Error::LimitExceeded {
                message: format!(
                    "Stream {} under account {} already has {same_kind} {} channel; the limit \
                     is {CHANNELS_PER_STREAM_AND_TYPE_MAX}.",
                    stream.name,
                    stream.account,
                    destination_type.as_str()
                ),
            });
        }
        let channel_id = self.random_stream_id();
        let mut record = ChannelRecord {
            account: ctx.account.clone(),
            region: ctx.region.clone(),
            name: input.channel_name.clone(),
            channel_id: channel_id.clone(),
            created_ms: now,
            lifecycle: self.lifecycle_towards(Status::Creating, self.config.create_delay_ms, now),
            description_json: String::new(),
            tags,
        };
        let description = k::ChannelDescription {
            channel_arn: channel_arn(&record),
            channel_creation_timestamp: EpochMillis(now),
            channel_id,
            channel_name: input.channel_name,
            channel_status: k::ChannelStatus::Creating,
            channel_status_reason: None,
            encryption_configuration: input.encryption_configuration,
            logging_configuration: input.logging_configuration.unwrap_or(
                k::ChannelLoggingConfiguration {
                    cloud_watch_logs: k::CloudWatchLogs {
                        enabled: false,
                        log_group_name: None,
                        log_stream_name: None,
                    },
                },
            ),
            s3_destination_configuration: s3,
            s3_tables_destination_configuration: tables,
            service_execution_role_arn: input.service_execution_role_arn,
            stream_configuration_list: vec![k::ChannelStreamDescription {
                record_configuration: stream_config.record_configuration.clone(),
                stream_arn: arn_of_stream,
                stream_creation_timestamp: EpochMillis(stream.created_ms / 1000 * 1000),
            }],
        };
        record.description_json = store_description(&description);
        self.catalog
            .write(|txn| txn.put(Table::Channels, &key, &record))?;
        // The answer says CREATING, as AWS's does, even when the delay is zero.
        let mut answer = self.describe_channel_record(&record)?;
        answer.channel_status = k::ChannelStatus::Creating;
        Ok(k::CreateChannelOutput {
            channel_description: answer,
        })
    }

    pub(crate) fn describe_channel(
        &self,
        ctx: &RequestContext,
        input: k::DescribeChannelInput,
    ) -> Result<k::DescribeChannelOutput, Error> {
        let record = self.find_channel(ctx, &input.channel_arn)?;
        Ok(k::DescribeChannelOutput {
            channel_description: self.describe_channel_record(&record)?,
        })
    }

    pub(crate) fn list_channels(
        &self,
        ctx: &RequestContext,
        input: k::ListChannelsInput,
    ) -> Result<k::ListChannelsOutput, Error> {
        let now = self.now_ms();
        let limit = input.max_results.map_or(LIST_CHANNELS_LIMIT_DEFAULT, |n| {
            usize::try_from(n).unwrap_or(1)
        });
        let start_after = match &input.next_token {
            Some(token) => {
                let fields = decode_next_token(token, 2, now)?;
                if fields.first().map(String::as_str) != Some("channels") {
                    return Err(Error::invalid(format!("Invalid NextToken: {token}")));
                }
                fields.get(1).cloned()
            }
            None => None,
        };
        let mut channels = Vec::new();
        for record in self.channels_of(&ctx.account, &ctx.region)? {
            if start_after
                .as_ref()
                .is_some_and(|after| record.name.as_str() <= after.as_str())
            {
                continue;
            }
            let description = stored_description(&record)?;
            let matches = input.stream_filter.as_ref().is_none_or(|filters| {
                filters.iter().any(|f| {
                    description.stream_configuration_list.iter().any(|s| {
                        s.stream_arn == f.stream_arn
                            && f.stream_creation_timestamp
                                .is_none_or(|t| t.0 / 1000 == s.stream_creation_timestamp.0 / 1000)
                    })
                })
            });
            if matches {
                channels.push((record, description));
            }
        }
        channels.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let has_more = channels.len() > limit;
        channels.truncate(limit);
        let next_token = if has_more {
            channels
                .last()
                .map(|(record, _)| encode_next_token(&["channels", &record.name], now))
        } else {
            None
        };
        Ok(k::ListChannelsOutput {
            channel_summaries: channels
                .into_iter()
                .map(|(record, description)| k::ChannelSummary {
                    channel_arn: description.channel_arn,
                    channel_creation_timestamp: EpochMillis(record.created_ms),
                    channel_destination_type: if description.s3_destination_configuration.is_some()
                    {
                        k::ChannelDestinationType::S3
                    } else {
                        k::ChannelDestinationType::S3Tables
                    },
                    channel_id: record.channel_id.clone(),
                    channel_name: record.name.clone(),
                    channel_status: wire_status(record.lifecycle.at(now)),
                    channel_status_reason: None,
                    streams: description
                        .stream_configuration_list
                        .into_iter()
                        .map(|s| k::ChannelStreamIdentifier {
                            stream_arn: s.stream_arn,
                            stream_creation_timestamp: s.stream_creation_timestamp,
                        })
                        .collect(),
                })
                .collect(),
            next_token,
        })
    }

    pub(crate) fn update_channel(
        &self,
        ctx: &RequestContext,
        input: k::UpdateChannelInput,
    ) -> Result<k::UpdateChannelOutput, Error> {
        let _creating = self.creating.lock();
        let mut record = self.find_channel(ctx, &input.channel_arn)?;
        let now = self.now_ms();
        let status = record.lifecycle.at(now);
        if status != Status::Active {
            return Err(Error::ResourceInUse {
                message: format!(
                    "Channel {} is in {} state; it must be ACTIVE to be updated.",
                    input.channel_arn,
                    crate::status_str(status)
                ),
            });
        }
        let mut description = stored_description(&record)?;
        if input.logging_configuration.is_none()
            && input.s3_destination_configuration.is_none()
            && input.s3_tables_destination_configuration.is_none()
        {
            return Err(Error::invalid(
                "UpdateChannel needs LoggingConfiguration, S3DestinationConfiguration or \
                 S3TablesDestinationConfiguration.",
            ));
        }
        if let Some(update) = input.s3_destination_configuration {
            let Some(s3) = description.s3_destination_configuration.as_mut() else {
                return Err(Error::invalid(
                    "S3DestinationConfiguration cannot be updated on a channel that delivers \
                     to S3 Tables.",
                ));
            };
            s3.data_freshness_in_seconds = check_freshness(Some(update.data_freshness_in_seconds))?;
        }
        if let Some(update) = input.s3_tables_destination_configuration {
            let Some(tables) = description.s3_tables_destination_configuration.as_mut() else {
                return Err(Error::invalid(
                    "S3TablesDestinationConfiguration cannot be updated on a channel that \
                     delivers to S3.",
                ));
            };
            tables.data_freshness_in_seconds =
                check_freshness(Some(update.data_freshness_in_seconds))?;
        }
        if let Some(update) = input.logging_configuration {
            description.logging_configuration = k::ChannelLoggingConfiguration {
                cloud_watch_logs: k::CloudWatchLogs {
                    enabled: update.cloud_watch_logs.enabled,
                    log_group_name: update.cloud_watch_logs.log_group_name,
                    log_stream_name: update.cloud_watch_logs.log_stream_name,
                },
            };
        }
        record.description_json = store_description(&description);
        record.lifecycle =
            self.lifecycle_towards(Status::Updating, self.config.update_delay_ms, now);
        let key = channel_key(&record.account, &record.region, &record.name);
        self.catalog
            .write(|txn| txn.put(Table::Channels, &key, &record))?;
        let mut answer = self.describe_channel_record(&record)?;
        answer.channel_status = k::ChannelStatus::Updating;
        Ok(k::UpdateChannelOutput {
            channel_description: answer,
        })
    }

    pub(crate) fn delete_channel(
        &self,
        ctx: &RequestContext,
        input: k::DeleteChannelInput,
    ) -> Result<(), Error> {
        let _creating = self.creating.lock();
        let mut record = self.find_channel(ctx, &input.channel_arn)?;
        let now = self.now_ms();
        if record.lifecycle.at(now) == Status::Deleting {
            return Err(channel_not_found(&input.channel_arn, &ctx.account));
        }
        let key = channel_key(&record.account, &record.region, &record.name);
        let delay = self.config.delete_delay_ms;
        if delay > 0 {
            record.lifecycle = Lifecycle {
                status: Status::Deleting,
                until_ms: now + delay,
                then: Status::Deleting,
            };
            self.catalog
                .write(|txn| txn.put(Table::Channels, &key, &record))?;
        } else {
            self.finish_channel_delete(&key, &record.channel_id)?;
        }
        Ok(())
    }

    fn finish_channel_delete(&self, key: &str, channel_id: &str) -> Result<(), Error> {
        self.catalog.write(|txn| -> Result<(), Error> {
            txn.delete(Table::Channels, key)?;
            txn.delete(Table::ChannelCheckpoints, channel_id)?;
            Ok(())
        })
    }

    /// Removes channels whose DELETING delay passed.
    pub(crate) fn channel_housekeeping(&self, now: i64) -> Result<(), Error> {
        for (key, record) in self.catalog.load_all::<ChannelRecord>(Table::Channels)? {
            if !channel_exists(&record, now) {
                self.finish_channel_delete(&key, &record.channel_id)?;
            }
        }
        Ok(())
    }

    /// Live channels reading a stream (they block DeleteStream and a switch to PROVISIONED).
    pub(crate) fn live_channel_count(&self, stream_arn_text: &str) -> Result<usize, Error> {
        let now = self.now_ms();
        let mut n = 0;
        for (_, record) in self.catalog.load_all::<ChannelRecord>(Table::Channels)? {
            if record.lifecycle.at(now) == Status::Deleting {
                continue;
            }
            let description = stored_description(&record)?;
            if description
                .stream_configuration_list
                .iter()
                .any(|s| s.stream_arn == stream_arn_text)
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The bucket of `arn:aws:s3:::NAME`.
fn millrace_wire_bucket(arn: &str) -> Option<&str> {
    let name = arn.split_once(":::")?.1;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// What a delivery task needs to know about a channel.
#[derive(Clone, Debug)]
pub struct ChannelView {
    pub key: String,
    pub channel_id: String,
    pub account: String,
    pub region: String,
    pub name: String,
    pub created_ms: i64,
    pub status: Status,
    pub description: k::ChannelDescription,
}

impl Streams {
    /// Every channel that exists (for the delivery side), with its status now.
    pub fn channels(&self) -> Result<Vec<ChannelView>, Error> {
        let now = self.inner.now_ms();
        let mut out = Vec::new();
        for (key, record) in self
            .inner
            .catalog
            .load_all::<ChannelRecord>(Table::Channels)?
        {
            if !channel_exists(&record, now) {
                continue;
            }
            let description = stored_description(&record)?;
            out.push(ChannelView {
                key,
                channel_id: record.channel_id.clone(),
                account: record.account.clone(),
                region: record.region.clone(),
                name: record.name.clone(),
                created_ms: record.created_ms,
                status: record.lifecycle.at(now),
                description,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_arns() {
        assert_eq!(
            parse_channel_arn("arn:aws:kinesis:eu-west-1:123456789012:channel/to-s3"),
            Some(("123456789012".into(), "eu-west-1".into(), "to-s3".into()))
        );
        assert_eq!(
            parse_channel_arn("arn:aws:kinesis:eu-west-1:123456789012:stream/abc"),
            None
        );
        assert_eq!(parse_channel_arn("arn:aws:kinesis:r:1:channel/"), None);
    }

    #[test]
    fn freshness_bounds() {
        assert!(matches!(check_freshness(None), Ok(300)));
        assert!(matches!(check_freshness(Some(900)), Ok(900)));
        assert!(check_freshness(Some(299)).is_err());
        assert!(check_freshness(Some(901)).is_err());
    }
}
