//! The control plane: creating, describing, listing and deleting streams, retention, tags,
//! resource policies, encryption and monitoring settings, limits and account settings,
//! stream mode, maximum record size and warm throughput.
//!
//! Each change is one catalog transaction through `Inner::mutate`; reads use the current
//! snapshot. Resharding lives in `reshard`, consumers in `consumers`.

use std::sync::Arc;

use base64::Engine;
use millrace_catalog::Table;
use millrace_catalog::model::{
    self as m, EncryptionRecord, Lifecycle, ShardRecord, Status, StreamRecord,
};
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;

use crate::{
    Error, Inner, RequestContext, StreamEntry, StreamView, Tags, account_key, hashing,
    parse_shard_id, seqnum, shard_id, stream_arn, stream_exists, stream_key,
};

/// Tags per stream (AWS's current limit).
pub const TAGS_PER_STREAM_MAX: usize = 50;
/// Shards an on-demand stream starts with (4 MiB/s of writes).
pub const ON_DEMAND_INITIAL_SHARDS: u32 = 4;
pub const RETENTION_HOURS_MIN: i32 = 24;
pub const RETENTION_HOURS_MAX: i32 = 8760;
pub const MAX_RECORD_SIZE_KIB_DEFAULT: u32 = 1024;
/// Default page sizes.
const DESCRIBE_STREAM_LIMIT_DEFAULT: usize = 100;
const LIST_STREAMS_LIMIT_DEFAULT: usize = 100;
const LIST_SHARDS_LIMIT_DEFAULT: usize = 1000;
const LIST_TAGS_LIMIT_DEFAULT: usize = 50;
/// NextTokens expire like AWS's, five minutes after they were issued.
pub const NEXT_TOKEN_TTL_MS: i64 = 300_000;

pub(crate) fn wire_status(status: Status) -> k::StreamStatus {
    match status {
        Status::Creating => k::StreamStatus::Creating,
        Status::Active => k::StreamStatus::Active,
        Status::Updating => k::StreamStatus::Updating,
        Status::Deleting => k::StreamStatus::Deleting,
    }
}

pub(crate) fn wire_mode(mode: m::StreamMode) -> k::StreamModeDetails {
    k::StreamModeDetails {
        stream_mode: match mode {
            m::StreamMode::Provisioned => k::StreamMode::Provisioned,
            m::StreamMode::OnDemand => k::StreamMode::OnDemand,
        },
    }
}

/// The epoch second that appears in a shard's sequence numbers.
pub(crate) fn shard_epoch_secs(shard: &ShardRecord) -> u64 {
    u64::try_from(shard.created_ms / 1000).unwrap_or(0)
}

pub(crate) fn starting_sequence_number(shard: &ShardRecord) -> String {
    seqnum::encode(seqnum::SeqParts {
        shard_epoch_secs: shard_epoch_secs(shard),
        shard_index: shard.index,
        offset: 0,
        arrival_secs: shard_epoch_secs(shard),
    })
}

pub(crate) fn ending_sequence_number(shard: &ShardRecord) -> Option<String> {
    shard.closed.map(|closed| {
        seqnum::encode(seqnum::SeqParts {
            shard_epoch_secs: shard_epoch_secs(shard),
            shard_index: shard.index,
            offset: seqnum::OFFSET_MAX,
            arrival_secs: u64::try_from(closed.closed_ms / 1000).unwrap_or(0),
        })
    })
}

pub(crate) fn wire_shard(record: &StreamRecord, shard: &ShardRecord) -> k::Shard {
    let _ = record;
    k::Shard {
        shard_id: shard_id(shard.index),
        parent_shard_id: shard.parent.map(shard_id),
        adjacent_parent_shard_id: shard.adjacent_parent.map(shard_id),
        hash_key_range: k::HashKeyRange {
            starting_hash_key: shard.starting_hash_key.to_string(),
            ending_hash_key: shard.ending_hash_key.to_string(),
        },
        sequence_number_range: k::SequenceNumberRange {
            starting_sequence_number: starting_sequence_number(shard),
            ending_sequence_number: ending_sequence_number(shard),
        },
    }
}

fn enhanced_monitoring(record: &StreamRecord) -> Vec<k::EnhancedMetrics> {
    vec![k::EnhancedMetrics {
        shard_level_metrics: Some(
            record
                .enhanced_metrics
                .iter()
                .filter_map(|name| k::MetricsName::from_str_opt(name))
                .collect(),
        ),
    }]
}

fn encryption_type(record: &StreamRecord) -> k::EncryptionType {
    if record.encryption.is_some() {
        k::EncryptionType::Kms
    } else {
        k::EncryptionType::None
    }
}

/// AWS allows Unicode letters, digits, white space and `_ . / = + - % @ :` in tags.
fn tag_text_is_valid(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_./=+-%@:".contains(c))
}

pub(crate) fn check_tags(tags: &Tags) -> Result<(), Error> {
    if tags
        .iter()
        .any(|(key, value)| !tag_text_is_valid(key) || !tag_text_is_valid(value))
    {
        return Err(Error::invalid(
            "Some tags contain invalid characters. Valid characters: Unicode letters, digits, \
             white space, _ . / = + - % @ :.",
        ));
    }
    Ok(())
}

/// Opaque paging token: base64 of `kind \n field \n ... \n issued_ms`.
pub(crate) fn encode_next_token(fields: &[&str], now_ms: i64) -> String {
    let mut text = fields.join("\n");
    text.push('\n');
    text.push_str(&now_ms.to_string());
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Decodes a paging token made by `encode_next_token` with `n_fields` fields.
pub(crate) fn decode_next_token(
    token: &str,
    n_fields: usize,
    now_ms: i64,
) -> Result<Vec<String>, Error> {
    let invalid = || Error::invalid(format!("Invalid NextToken: {token}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut fields: Vec<String> = text.split('\n').map(str::to_string).collect();
    if fields.len() != n_fields + 1 {
        return Err(invalid());
    }
    let issued: i64 = fields
        .pop()
        .and_then(|t| t.parse().ok())
        .ok_or_else(invalid)?;
    if now_ms - issued > NEXT_TOKEN_TTL_MS {
        return Err(Error::ExpiredNextToken {
            message: format!("The timestamp sent in nextToken {token} has expired."),
        });
    }
    Ok(fields)
}

/// Is shard `s` open at time `t`, in the sense of ListShards' AT_* filters: not closed by
/// then, and every parent (that is still listed) closed by then.
fn open_at(view: &StreamView, shard: &ShardRecord, t: i64) -> bool {
    let closed_before = |s: &ShardRecord| s.closed.is_some_and(|c| c.closed_ms <= t);
    if closed_before(shard) {
        return false;
    }
    [shard.parent, shard.adjacent_parent]
        .into_iter()
        .flatten()
        .all(|parent| view.shard(parent).is_none_or(closed_before))
}

impl Inner {
    pub(crate) async fn create_stream_async(
        &self,
        ctx: &RequestContext,
        input: k::CreateStreamInput,
    ) -> Result<(), Error> {
        // A stream whose DELETING delay ran out but that housekeeping has not removed yet
        // must be gone before its name is reused.
        let key = stream_key(&ctx.account, &ctx.region, &input.stream_name);
        let stale = self.registry.read().get(&key).cloned();
        if let Some(entry) = stale
            && !stream_exists(&entry.view().record, self.now_ms())
        {
            self.finish_delete(&entry).await?;
        }
        self.create_stream(ctx, input)
    }

    pub(crate) fn create_stream(
        &self,
        ctx: &RequestContext,
        input: k::CreateStreamInput,
    ) -> Result<(), Error> {
        let now = self.now_ms();
        let name = input.stream_name;
        let mode = match input.stream_mode_details.map(|d| d.stream_mode) {
            Some(k::StreamMode::OnDemand) => m::StreamMode::OnDemand,
            Some(k::StreamMode::Provisioned) => m::StreamMode::Provisioned,
            None if input.shard_count.is_some() => m::StreamMode::Provisioned,
            None => m::StreamMode::OnDemand,
        };
        let shard_count = match mode {
            m::StreamMode::Provisioned => match input.shard_count {
                Some(n) => u32::try_from(n).unwrap_or(1).max(1),
                None => {
                    return Err(Error::invalid(
                        "ShardCount is required for a stream in PROVISIONED mode.",
                    ));
                }
            },
            m::StreamMode::OnDemand => ON_DEMAND_INITIAL_SHARDS,
        };
        let tags: Tags = input.tags.unwrap_or_default();
        check_tags(&tags)?;
        if tags.len() > TAGS_PER_STREAM_MAX {
            return Err(Error::invalid(format!(
                "Failed to create stream {name} under account {} because a given stream cannot \
                 have more than {TAGS_PER_STREAM_MAX} tags associated with it.",
                ctx.account
            )));
        }
        let key = stream_key(&ctx.account, &ctx.region, &name);
        // Creations are serialised, so the name checked free here is still free at the
        // insert below; the registry itself is only locked briefly, never across IO.
        let _creating = self.creating.lock();
        let registry = self.registry.read();
        if registry.contains_key(&key) {
            return Err(Error::StreamExists {
                name,
                account: ctx.account.clone(),
            });
        }
        let current: u32 = registry
            .values()
            .map(|e| e.view())
            .filter(|v| {
                v.record.account == ctx.account
                    && v.record.region == ctx.region
                    && stream_exists(&v.record, now)
            })
            .map(|v| v.open.len() as u32)
            .sum();
        if current + shard_count > self.config.shard_limit {
            return Err(self.shard_limit_error(&ctx.account, &ctx.region, current, shard_count));
        }
        if mode == m::StreamMode::OnDemand {
            let on_demand = registry
                .values()
                .map(|e| e.view())
                .filter(|v| {
                    v.record.account == ctx.account
                        && v.record.region == ctx.region
                        && v.record.mode == m::StreamMode::OnDemand
                        && stream_exists(&v.record, now)
                })
                .count() as u32;
            if on_demand >= self.config.on_demand_stream_limit {
                return Err(Error::LimitExceeded {
                    message: format!(
                        "This request would exceed the on-demand stream limit for the account \
                         {} in {}. Limit: {}.",
                        ctx.account, ctx.region, self.config.on_demand_stream_limit
                    ),
                });
            }
        }
        drop(registry);
        let first_log = self
            .catalog
            .write(|txn| txn.allocate("log", u64::from(shard_count)))?;
        let log_ids: Vec<u64> = (0..u64::from(shard_count)).map(|i| first_log + i).collect();
        self.log.create_logs(&log_ids)?;
        let ranges = hashing::uniform_ranges(shard_count);
        let mut shards = Vec::with_capacity(ranges.len());
        for (index, (start, end)) in ranges.into_iter().enumerate() {
            let log_id = first_log + index as u64;
            shards.push(ShardRecord {
                index: index as u32,
                log_id,
                starting_hash_key: start,
                ending_hash_key: end,
                parent: None,
                adjacent_parent: None,
                created_ms: now,
                closed: None,
            });
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
        let record = StreamRecord {
            account: ctx.account.clone(),
            region: ctx.region.clone(),
            name,
            stream_id: self.random_stream_id(),
            created_ms: now,
            lifecycle,
            mode,
            retention_hours: RETENTION_HOURS_MIN as u32,
            shards,
            next_shard_index: shard_count,
            encryption: None,
            enhanced_metrics: Vec::new(),
            tags,
            max_record_size_kib: input
                .max_record_size_in_ki_b
                .map(|kib| kib as u32)
                .unwrap_or(MAX_RECORD_SIZE_KIB_DEFAULT),
            warm_throughput_mibps: input.warm_throughput_mi_bps.map(|v| v as u32),
            consumers: Vec::new(),
            policy: None,
            record_distribution_strategy: input
                .record_distribution_strategy
                .map(|s| s.as_str().to_string()),
            shard_count_updates_ms: Vec::new(),
            mode_updates_ms: Vec::new(),
            queues: Vec::new(),
        };
        self.catalog
            .write(|txn| txn.put(Table::Streams, &key, &record))?;
        self.registry
            .write()
            .insert(key.clone(), Arc::new(StreamEntry::new(key, record)));
        Ok(())
    }

    pub(crate) async fn delete_stream(
        &self,
        ctx: &RequestContext,
        input: k::DeleteStreamInput,
    ) -> Result<(), Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let now = self.now_ms();
        {
            let view = entry.view();
            let has_consumers = view
                .record
                .consumers
                .iter()
                .any(|c| c.lifecycle.at(now) != Status::Deleting);
            if has_consumers && !input.enforce_consumer_deletion.unwrap_or(false) {
                return Err(Error::ResourceInUse {
                    message: format!(
                        "Stream {} under account {} has registered consumers. Deregister them \
                         first or set EnforceConsumerDeletion.",
                        view.record.name, view.record.account
                    ),
                });
            }
            if self.live_queue_count(&view.record, now) > 0 {
                return Err(Error::ResourceInUse {
                    message: format!(
                        "Stream {} under account {} has queues. Delete every queue on the \
                         stream before deleting the stream.",
                        view.record.name, view.record.account
                    ),
                });
            }
            if self.live_channel_count(&crate::stream_arn(&view.record))? > 0 {
                return Err(Error::ResourceInUse {
                    message: format!(
                        "Stream {} under account {} has channels. Delete every channel on the \
                         stream before deleting the stream.",
                        view.record.name, view.record.account
                    ),
                });
            }
            if view.record.lifecycle.at(now) == Status::Deleting {
                return Err(Error::StreamNotFound {
                    name: view.record.name.clone(),
                    account: view.record.account.clone(),
                });
            }
        }
        if self.config.delete_delay_ms > 0 {
            let until = now + self.config.delete_delay_ms;
            self.mutate(&entry, |record| {
                record.lifecycle = Lifecycle {
                    status: Status::Deleting,
                    until_ms: until,
                    then: Status::Deleting,
                };
                Ok(())
            })?;
            Ok(())
        } else {
            self.finish_delete(&entry).await
        }
    }

    pub(crate) fn describe_stream(
        &self,
        ctx: &RequestContext,
        input: k::DescribeStreamInput,
    ) -> Result<k::DescribeStreamOutput, Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let view = entry.view();
        let record = &view.record;
        let status = record.lifecycle.at(self.now_ms());
        let limit = input
            .limit
            .map(|l| l as usize)
            .unwrap_or(DESCRIBE_STREAM_LIMIT_DEFAULT);
        let start_after = input
            .exclusive_start_shard_id
            .as_deref()
            .and_then(parse_shard_id);
        let mut shards: Vec<&ShardRecord> = if status == Status::Creating {
            Vec::new()
        } else {
            record
                .shards
                .iter()
                .filter(|s| start_after.is_none_or(|after| s.index > after))
                .collect()
        };
        shards.sort_by_key(|s| s.index);
        let has_more_shards = shards.len() > limit;
        shards.truncate(limit);
        Ok(k::DescribeStreamOutput {
            stream_description: k::StreamDescription {
                stream_name: record.name.clone(),
                stream_arn: stream_arn(record),
                stream_status: wire_status(status),
                stream_mode_details: Some(wire_mode(record.mode)),
                shards: shards.iter().map(|s| wire_shard(record, s)).collect(),
                has_more_shards,
                retention_period_hours: record.retention_hours as i32,
                stream_creation_timestamp: EpochMillis(record.created_ms / 1000 * 1000),
                enhanced_monitoring: enhanced_monitoring(record),
                encryption_type: Some(encryption_type(record)),
                key_id: record.encryption.as_ref().map(|e| e.key_id.clone()),
            },
        })
    }

    pub(crate) fn describe_stream_summary(
        &self,
        ctx: &RequestContext,
        input: k::DescribeStreamSummaryInput,
    ) -> Result<k::DescribeStreamSummaryOutput, Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let view = entry.view();
        let record = &view.record;
        let now = self.now_ms();
        let status = record.lifecycle.at(now);
        let consumers = record
            .consumers
            .iter()
            .filter(|c| c.lifecycle.at(now) != Status::Deleting)
            .count() as i32;
        Ok(k::DescribeStreamSummaryOutput {
            stream_description_summary: k::StreamDescriptionSummary {
                stream_name: record.name.clone(),
                stream_arn: stream_arn(record),
                stream_id: Some(record.stream_id.clone()),
                stream_status: wire_status(status),
                stream_mode_details: Some(wire_mode(record.mode)),
                retention_period_hours: record.retention_hours as i32,
                stream_creation_timestamp: EpochMillis(record.created_ms / 1000 * 1000),
                enhanced_monitoring: enhanced_monitoring(record),
                encryption_type: Some(encryption_type(record)),
                key_id: record.encryption.as_ref().map(|e| e.key_id.clone()),
                open_shard_count: if status == Status::Creating {
                    0
                } else {
                    view.open.len() as i32
                },
                consumer_count: Some(consumers),
                max_record_size_in_ki_b: Some(record.max_record_size_kib as i32),
                warm_throughput: record.warm_throughput_mibps.map(|mibps| {
                    k::WarmThroughputObject {
                        current_mi_bps: Some(mibps as i32),
                        target_mi_bps: Some(mibps as i32),
                    }
                }),
                // Only on-demand streams have a strategy (USER_PARTITION_KEY by default).
                record_distribution_strategy: (record.mode == m::StreamMode::OnDemand).then(|| {
                    record
                        .record_distribution_strategy
                        .as_deref()
                        .and_then(k::RecordDistributionStrategy::from_str_opt)
                        .unwrap_or(k::RecordDistributionStrategy::UserPartitionKey)
                }),
                channel_count: Some(
                    i32::try_from(self.live_channel_count(&crate::stream_arn(record))?)
                        .unwrap_or(i32::MAX),
                ),
                queue_count: Some(
                    record
                        .queues
                        .iter()
                        .filter(|q| crate::queues::queue_exists(q, now))
                        .count() as i32,
                ),
            },
        })
    }

    pub(crate) fn list_streams(
        &self,
        ctx: &RequestContext,
        input: k::ListStreamsInput,
    ) -> Result<k::ListStreamsOutput, Error> {
        let now = self.now_ms();
        let limit = input
            .limit
            .map(|l| l as usize)
            .unwrap_or(LIST_STREAMS_LIMIT_DEFAULT);
        let mut start_after = input.exclusive_start_stream_name.clone();
        if let Some(token) = &input.next_token {
            let fields = decode_next_token(token, 2, now)?;
            if fields.first().map(String::as_str) != Some("streams") {
                return Err(Error::invalid(format!("Invalid NextToken: {token}")));
            }
            start_after = fields.get(1).cloned();
        }
        let mut views: Vec<Arc<StreamView>> = self
            .registry
            .read()
            .values()
            .map(|e| e.view())
            .filter(|v| {
                v.record.account == ctx.account
                    && v.record.region == ctx.region
                    && stream_exists(&v.record, now)
            })
            .filter(|v| {
                start_after
                    .as_deref()
                    .is_none_or(|after| v.record.name.as_str() > after)
            })
            .collect();
        views.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        let has_more = views.len() > limit;
        views.truncate(limit);
        let next_token = if has_more {
            views
                .last()
                .map(|v| encode_next_token(&["streams", &v.record.name], now))
        } else {
            None
        };
        Ok(k::ListStreamsOutput {
            stream_names: views.iter().map(|v| v.record.name.clone()).collect(),
            has_more_streams: has_more,
            next_token,
            stream_summaries: Some(
                views
                    .iter()
                    .map(|v| k::StreamSummary {
                        stream_name: v.record.name.clone(),
                        stream_arn: stream_arn(&v.record),
                        stream_status: wire_status(v.record.lifecycle.at(now)),
                        stream_mode_details: Some(wire_mode(v.record.mode)),
                        stream_creation_timestamp: Some(EpochMillis(
                            v.record.created_ms / 1000 * 1000,
                        )),
                    })
                    .collect(),
            ),
        })
    }

    pub(crate) fn list_shards(
        &self,
        ctx: &RequestContext,
        input: k::ListShardsInput,
    ) -> Result<k::ListShardsOutput, Error> {
        let now = self.now_ms();
        let limit = input
            .max_results
            .map(|l| l as usize)
            .unwrap_or(LIST_SHARDS_LIMIT_DEFAULT);
        // A NextToken carries the stream and the position; it must come alone.
        let (entry, start_after, filter) = if let Some(token) = &input.next_token {
            if input.stream_name.is_some() || input.stream_arn.is_some() {
                return Err(Error::invalid(
                    "NextToken and StreamName cannot be provided together.",
                ));
            }
            let fields = decode_next_token(token, 7, now)?;
            let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
            if field(0) != "shards" {
                return Err(Error::invalid(format!("Invalid NextToken: {token}")));
            }
            let arn = format!(
                "arn:aws:kinesis:{}:{}:stream/{}",
                field(2),
                field(1),
                field(3)
            );
            let entry = self.find_stream(ctx, None, Some(&arn))?;
            let after: Option<u32> = field(4).parse().ok();
            let filter = ShardFilterSpec::decode(&field(5), &field(6));
            (entry, after, filter)
        } else {
            let entry = self.find_stream(
                ctx,
                input.stream_name.as_deref(),
                input.stream_arn.as_deref(),
            )?;
            if input.exclusive_start_shard_id.is_some()
                && input
                    .shard_filter
                    .as_ref()
                    .is_some_and(|f| f.type_ == k::ShardFilterType::AfterShardId)
            {
                return Err(Error::invalid(
                    "ExclusiveStartShardId and ShardFilter of type AFTER_SHARD_ID cannot both be \
                     provided.",
                ));
            }
            let filter = match &input.shard_filter {
                None => ShardFilterSpec::None,
                Some(f) => ShardFilterSpec::from_wire(f)?,
            };
            let mut after = input
                .exclusive_start_shard_id
                .as_deref()
                .and_then(parse_shard_id);
            if let ShardFilterSpec::AfterShardId(id) = filter {
                after = Some(id);
            }
            (entry, after, filter)
        };
        let view = entry.view();
        let record = &view.record;
        if record.lifecycle.at(now) == Status::Creating {
            return Err(Error::ResourceInUse {
                message: format!(
                    "Stream {} under account {} is in CREATING state.",
                    record.name, record.account
                ),
            });
        }
        let trim_horizon = now - i64::from(record.retention_hours) * 3_600_000;
        let mut shards: Vec<&ShardRecord> = record
            .shards
            .iter()
            .filter(|s| start_after.is_none_or(|after| s.index > after))
            .filter(|s| match filter {
                ShardFilterSpec::None
                | ShardFilterSpec::AfterShardId(_)
                | ShardFilterSpec::FromTrimHorizon => true,
                ShardFilterSpec::AtLatest => s.closed.is_none(),
                ShardFilterSpec::AtTrimHorizon => open_at(&view, s, trim_horizon),
                ShardFilterSpec::AtTimestamp(t) => open_at(&view, s, t),
                ShardFilterSpec::FromTimestamp(t) => s.closed.is_none_or(|c| c.closed_ms > t),
            })
            .collect();
        shards.sort_by_key(|s| s.index);
        let has_more = shards.len() > limit;
        shards.truncate(limit);
        let next_token = if has_more {
            shards.last().map(|last| {
                let (kind, arg) = filter.encode();
                encode_next_token(
                    &[
                        "shards",
                        &record.account,
                        &record.region,
                        &record.name,
                        &last.index.to_string(),
                        &kind,
                        &arg,
                    ],
                    now,
                )
            })
        } else {
            None
        };
        Ok(k::ListShardsOutput {
            shards: Some(shards.iter().map(|s| wire_shard(record, s)).collect()),
            next_token,
        })
    }

    pub(crate) fn increase_retention(
        &self,
        ctx: &RequestContext,
        input: k::IncreaseStreamRetentionPeriodInput,
    ) -> Result<(), Error> {
        self.change_retention(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
            input.retention_period_hours,
            true,
        )
    }

    pub(crate) fn decrease_retention(
        &self,
        ctx: &RequestContext,
        input: k::DecreaseStreamRetentionPeriodInput,
    ) -> Result<(), Error> {
        self.change_retention(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
            input.retention_period_hours,
            false,
        )
    }

    fn change_retention(
        &self,
        ctx: &RequestContext,
        name: Option<&str>,
        arn: Option<&str>,
        hours: i32,
        increase: bool,
    ) -> Result<(), Error> {
        if hours < RETENTION_HOURS_MIN {
            return Err(Error::invalid(format!(
                "Minimum allowed retention period is {RETENTION_HOURS_MIN} hours. Requested \
                 retention period ({hours} hours) is too short."
            )));
        }
        if hours > RETENTION_HOURS_MAX {
            return Err(Error::invalid(format!(
                "Maximum allowed retention period is {RETENTION_HOURS_MAX} hours. Requested \
                 retention period ({hours} hours) is too long."
            )));
        }
        let entry = self.find_active_stream(ctx, name, arn)?;
        self.mutate(&entry, |record| {
            let current = record.retention_hours as i32;
            if increase && hours < current {
                return Err(Error::invalid(format!(
                    "Requested retention period ({hours} hours) for stream {} can not be shorter \
                     than existing retention period ({current} hours). Use DecreaseRetentionPeriod \
                     API.",
                    record.name
                )));
            }
            if !increase && hours > current {
                return Err(Error::invalid(format!(
                    "Requested retention period ({hours} hours) for stream {} can not be longer \
                     than existing retention period ({current} hours). Use IncreaseRetentionPeriod \
                     API.",
                    record.name
                )));
            }
            record.retention_hours = hours as u32;
            Ok(())
        })
    }

    pub(crate) fn add_tags_to_stream(
        &self,
        ctx: &RequestContext,
        input: k::AddTagsToStreamInput,
    ) -> Result<(), Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        self.add_tags(&entry, input.tags)
    }

    pub(crate) fn add_tags(&self, entry: &StreamEntry, tags: Tags) -> Result<(), Error> {
        check_tags(&tags)?;
        self.mutate(entry, |record| {
            let mut merged = record.tags.clone();
            merged.extend(tags);
            if merged.len() > TAGS_PER_STREAM_MAX {
                // AWS answers InvalidArgumentException here, not LimitExceededException.
                return Err(Error::InvalidArgument {
                    message: format!(
                        "Failed to add tags to stream {} under account {} because a given stream \
                         cannot have more than {TAGS_PER_STREAM_MAX} tags associated with it.",
                        record.name, record.account
                    ),
                });
            }
            record.tags = merged;
            Ok(())
        })
    }

    pub(crate) fn remove_tags_from_stream(
        &self,
        ctx: &RequestContext,
        input: k::RemoveTagsFromStreamInput,
    ) -> Result<(), Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        self.mutate(&entry, |record| {
            for key in &input.tag_keys {
                record.tags.remove(key);
            }
            Ok(())
        })
    }

    pub(crate) fn list_tags_for_stream(
        &self,
        ctx: &RequestContext,
        input: k::ListTagsForStreamInput,
    ) -> Result<k::ListTagsForStreamOutput, Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let view = entry.view();
        let limit = input
            .limit
            .map(|l| l as usize)
            .unwrap_or(LIST_TAGS_LIMIT_DEFAULT);
        let mut tags: Vec<k::Tag> = view
            .record
            .tags
            .iter()
            .filter(|(key, _)| {
                input
                    .exclusive_start_tag_key
                    .as_deref()
                    .is_none_or(|start| key.as_str() > start)
            })
            .map(|(key, value)| k::Tag {
                key: key.clone(),
                value: Some(value.clone()),
            })
            .collect();
        let has_more_tags = tags.len() > limit;
        tags.truncate(limit);
        Ok(k::ListTagsForStreamOutput {
            tags,
            has_more_tags,
        })
    }

    pub(crate) fn tag_resource(
        &self,
        ctx: &RequestContext,
        input: k::TagResourceInput,
    ) -> Result<(), Error> {
        match self.find_resource(ctx, &input.resource_arn)? {
            Resource::Stream(entry) => self.add_tags(&entry, input.tags),
            Resource::Consumer(entry, name) => {
                crate::consumers::tag_consumer(self, &entry, &name, input.tags)
            }
            Resource::Queue(entry, queue_id) => {
                check_tags(&input.tags)?;
                self.mutate(&entry, |record| {
                    if let Some(queue) = record.queues.iter_mut().find(|q| q.queue_id == queue_id) {
                        queue.tags.extend(input.tags);
                        if queue.tags.len() > TAGS_PER_STREAM_MAX {
                            return Err(Error::LimitExceeded {
                                message: format!(
                                    "A queue cannot have more than {TAGS_PER_STREAM_MAX} tags."
                                ),
                            });
                        }
                    }
                    Ok(())
                })
            }
        }
    }

    pub(crate) fn untag_resource(
        &self,
        ctx: &RequestContext,
        input: k::UntagResourceInput,
    ) -> Result<(), Error> {
        match self.find_resource(ctx, &input.resource_arn)? {
            Resource::Stream(entry) => self.mutate(&entry, |record| {
                for key in &input.tag_keys {
                    record.tags.remove(key);
                }
                Ok(())
            }),
            Resource::Consumer(entry, name) => self.mutate(&entry, |record| {
                if let Some(consumer) = record.consumers.iter_mut().find(|c| c.name == name) {
                    for key in &input.tag_keys {
                        consumer.tags.remove(key);
                    }
                }
                Ok(())
            }),
            Resource::Queue(entry, queue_id) => self.mutate(&entry, |record| {
                if let Some(queue) = record.queues.iter_mut().find(|q| q.queue_id == queue_id) {
                    for key in &input.tag_keys {
                        queue.tags.remove(key);
                    }
                }
                Ok(())
            }),
        }
    }

    pub(crate) fn list_tags_for_resource(
        &self,
        ctx: &RequestContext,
        input: k::ListTagsForResourceInput,
    ) -> Result<k::ListTagsForResourceOutput, Error> {
        let tags = match self.find_resource(ctx, &input.resource_arn)? {
            Resource::Stream(entry) => entry.view().record.tags.clone(),
            Resource::Consumer(entry, name) => entry
                .view()
                .record
                .consumers
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.tags.clone())
                .unwrap_or_default(),
            Resource::Queue(entry, queue_id) => entry
                .view()
                .record
                .queues
                .iter()
                .find(|q| q.queue_id == queue_id)
                .map(|q| q.tags.clone())
                .unwrap_or_default(),
        };
        Ok(k::ListTagsForResourceOutput {
            tags: Some(
                tags.into_iter()
                    .map(|(key, value)| k::Tag {
                        key,
                        value: Some(value),
                    })
                    .collect(),
            ),
        })
    }

    pub(crate) fn put_resource_policy(
        &self,
        ctx: &RequestContext,
        input: k::PutResourcePolicyInput,
    ) -> Result<(), Error> {
        if serde_json::from_str::<serde_json::Value>(&input.policy)
            .map(|v| !v.is_object())
            .unwrap_or(true)
        {
            return Err(Error::invalid(
                "The policy document is not valid JSON or is not a JSON object.",
            ));
        }
        self.set_policy(ctx, &input.resource_arn, Some(input.policy))
    }

    pub(crate) fn delete_resource_policy(
        &self,
        ctx: &RequestContext,
        input: k::DeleteResourcePolicyInput,
    ) -> Result<(), Error> {
        self.set_policy(ctx, &input.resource_arn, None)
    }

    fn set_policy(
        &self,
        ctx: &RequestContext,
        arn: &str,
        policy: Option<String>,
    ) -> Result<(), Error> {
        match self.find_resource(ctx, arn)? {
            Resource::Stream(entry) => self.mutate(&entry, |record| {
                record.policy = policy;
                Ok(())
            }),
            Resource::Consumer(entry, name) => self.mutate(&entry, |record| {
                if let Some(consumer) = record.consumers.iter_mut().find(|c| c.name == name) {
                    consumer.policy = policy;
                }
                Ok(())
            }),
            Resource::Queue(entry, queue_id) => self.mutate(&entry, |record| {
                if let Some(queue) = record.queues.iter_mut().find(|q| q.queue_id == queue_id) {
                    queue.policy = policy;
                }
                Ok(())
            }),
        }
    }

    pub(crate) fn get_resource_policy(
        &self,
        ctx: &RequestContext,
        input: k::GetResourcePolicyInput,
    ) -> Result<k::GetResourcePolicyOutput, Error> {
        let policy = match self.find_resource(ctx, &input.resource_arn)? {
            Resource::Stream(entry) => entry.view().record.policy.clone(),
            Resource::Consumer(entry, name) => entry
                .view()
                .record
                .consumers
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.policy.clone()),
            Resource::Queue(entry, queue_id) => entry
                .view()
                .record
                .queues
                .iter()
                .find(|q| q.queue_id == queue_id)
                .and_then(|q| q.policy.clone()),
        };
        // AWS answers an empty policy, not an error, when none is set.
        Ok(k::GetResourcePolicyOutput {
            policy: policy.unwrap_or_else(|| "{}".to_string()),
        })
    }

    /// Resolves a stream or consumer ARN.
    pub(crate) fn find_resource(&self, ctx: &RequestContext, arn: &str) -> Result<Resource, Error> {
        if crate::queues::parse_queue_arn(arn).is_some() {
            let (entry, queue, _) = self.find_queue(ctx, arn)?;
            return Ok(Resource::Queue(entry, queue.queue_id));
        }
        let entry = self.find_stream(ctx, None, Some(arn))?;
        if let Some((_, consumer_part)) = arn.split_once("/consumer/") {
            let name = consumer_part
                .split(':')
                .next()
                .unwrap_or(consumer_part)
                .to_string();
            let exists = entry.view().record.consumers.iter().any(|c| c.name == name);
            if !exists {
                return Err(Error::ResourceNotFound {
                    message: format!("Consumer {arn} not found."),
                });
            }
            return Ok(Resource::Consumer(entry, name));
        }
        Ok(Resource::Stream(entry))
    }

    pub(crate) fn set_encryption(
        &self,
        ctx: &RequestContext,
        name: Option<String>,
        arn: Option<String>,
        key_id: Option<String>,
    ) -> Result<(), Error> {
        let entry = self.find_active_stream(ctx, name.as_deref(), arn.as_deref())?;
        if let Some(key_id) = &key_id {
            // KMSNotFoundException / KMSDisabledException before anything changes.
            let view = entry.view();
            self.crypto
                .resolve(key_id, &view.record.account, &view.record.region)?;
        }
        let now = self.now_ms();
        let lifecycle = self.updating(now);
        self.mutate(&entry, |record| {
            record.encryption = key_id.map(|key_id| EncryptionRecord { key_id });
            record.lifecycle = lifecycle;
            Ok(())
        })
    }

    pub(crate) fn enhanced_monitoring(
        &self,
        ctx: &RequestContext,
        name: Option<String>,
        arn: Option<String>,
        metrics: Vec<k::MetricsName>,
        enable: bool,
    ) -> Result<k::EnhancedMonitoringOutput, Error> {
        const ALL: [k::MetricsName; 7] = [
            k::MetricsName::IncomingBytes,
            k::MetricsName::IncomingRecords,
            k::MetricsName::OutgoingBytes,
            k::MetricsName::OutgoingRecords,
            k::MetricsName::WriteProvisionedThroughputExceeded,
            k::MetricsName::ReadProvisionedThroughputExceeded,
            k::MetricsName::IteratorAgeMilliseconds,
        ];
        let entry = self.find_active_stream(ctx, name.as_deref(), arn.as_deref())?;
        let requested: Vec<k::MetricsName> = if metrics.contains(&k::MetricsName::All) {
            ALL.to_vec()
        } else {
            metrics
        };
        let (before, after, record) = self.mutate(&entry, |record| {
            let before = record.enhanced_metrics.clone();
            let mut set: Vec<String> = before.clone();
            for metric in &requested {
                let name = metric.as_str().to_string();
                if enable {
                    if !set.contains(&name) {
                        set.push(name);
                    }
                } else {
                    set.retain(|m| m != &name);
                }
            }
            // Keep AWS's order of metric names.
            set.sort_by_key(|name| ALL.iter().position(|m| m.as_str() == name));
            record.enhanced_metrics = set.clone();
            Ok((before, set, record.clone()))
        })?;
        let to_wire = |names: &[String]| -> Vec<k::MetricsName> {
            names
                .iter()
                .filter_map(|n| k::MetricsName::from_str_opt(n))
                .collect()
        };
        Ok(k::EnhancedMonitoringOutput {
            stream_name: Some(record.name.clone()),
            stream_arn: Some(stream_arn(&record)),
            current_shard_level_metrics: Some(to_wire(&before)),
            desired_shard_level_metrics: Some(to_wire(&after)),
        })
    }

    pub(crate) fn describe_limits(
        &self,
        ctx: &RequestContext,
        _input: k::DescribeLimitsInput,
    ) -> Result<k::DescribeLimitsOutput, Error> {
        let now = self.now_ms();
        let on_demand = self
            .registry
            .read()
            .values()
            .map(|e| e.view())
            .filter(|v| {
                v.record.account == ctx.account
                    && v.record.region == ctx.region
                    && v.record.mode == m::StreamMode::OnDemand
                    && stream_exists(&v.record, now)
            })
            .count() as i32;
        Ok(k::DescribeLimitsOutput {
            shard_limit: self.config.shard_limit as i32,
            open_shard_count: self.open_shard_count(&ctx.account, &ctx.region) as i32,
            on_demand_stream_count: on_demand,
            on_demand_stream_count_limit: self.config.on_demand_stream_limit as i32,
            channel_count: Some(
                i32::try_from(
                    self.catalog
                        .load_all::<m::ChannelRecord>(Table::Channels)?
                        .iter()
                        .filter(|(_, c)| {
                            c.account == ctx.account
                                && c.region == ctx.region
                                && crate::channels::channel_exists(c, now)
                        })
                        .count(),
                )
                .unwrap_or(i32::MAX),
            ),
            channel_count_limit: Some(crate::channels::CHANNELS_PER_ACCOUNT_MAX as i32),
        })
    }

    fn billing_output(
        record: &m::AccountRecord,
    ) -> Option<k::MinimumThroughputBillingCommitmentOutput> {
        let status = record.billing_commitment.as_deref()?;
        Some(k::MinimumThroughputBillingCommitmentOutput {
            status: k::MinimumThroughputBillingCommitmentOutputStatus::from_str_opt(status)
                .unwrap_or(k::MinimumThroughputBillingCommitmentOutputStatus::Disabled),
            started_at: record.billing_commitment_started_ms.map(EpochMillis),
            ended_at: record.billing_commitment_ends_ms.map(EpochMillis),
            earliest_allowed_end_at: record
                .billing_commitment_started_ms
                .map(|started| EpochMillis(started + 24 * 3_600_000)),
        })
    }

    pub(crate) fn describe_account_settings(
        &self,
        ctx: &RequestContext,
        _input: k::DescribeAccountSettingsInput,
    ) -> Result<k::DescribeAccountSettingsOutput, Error> {
        let record = self.account_record(&ctx.account, &ctx.region);
        Ok(k::DescribeAccountSettingsOutput {
            minimum_throughput_billing_commitment: Self::billing_output(&record),
        })
    }

    pub(crate) fn update_account_settings(
        &self,
        ctx: &RequestContext,
        input: k::UpdateAccountSettingsInput,
    ) -> Result<k::UpdateAccountSettingsOutput, Error> {
        let now = self.now_ms();
        let key = account_key(&ctx.account, &ctx.region);
        let mut record = self.account_record(&ctx.account, &ctx.region);
        match input.minimum_throughput_billing_commitment.status {
            k::MinimumThroughputBillingCommitmentInputStatus::Enabled => {
                record.billing_commitment = Some("ENABLED".into());
                record.billing_commitment_started_ms = Some(now);
                record.billing_commitment_ends_ms = None;
            }
            k::MinimumThroughputBillingCommitmentInputStatus::Disabled => {
                record.billing_commitment = Some("DISABLED".into());
                record.billing_commitment_ends_ms = Some(now);
            }
        }
        self.catalog
            .write(|txn| txn.put(Table::Accounts, &key, &record))?;
        self.accounts.write().insert(key, record.clone());
        Ok(k::UpdateAccountSettingsOutput {
            minimum_throughput_billing_commitment: Self::billing_output(&record),
        })
    }

    /// UpdateStreamRecordDistributionStrategy: on-demand streams only; takes effect for the
    /// next record written (records already stored stay where they are).
    pub(crate) fn update_record_distribution_strategy(
        &self,
        ctx: &RequestContext,
        input: k::UpdateStreamRecordDistributionStrategyInput,
    ) -> Result<(), Error> {
        let entry = self.find_stream(ctx, None, Some(&input.stream_arn))?;
        let now = self.now_ms();
        self.mutate(&entry, |record| {
            if record.mode != m::StreamMode::OnDemand {
                return Err(Error::invalid(format!(
                    "The record distribution strategy is only supported for streams in \
                     on-demand capacity mode. Stream {} under account {} is in PROVISIONED \
                     mode.",
                    record.name, record.account
                )));
            }
            let status = record.lifecycle.at(now);
            if status != Status::Active {
                return Err(Error::StreamNotActive {
                    name: record.name.clone(),
                    account: record.account.clone(),
                    status: crate::status_str(status),
                });
            }
            record.record_distribution_strategy =
                Some(input.record_distribution_strategy.as_str().to_string());
            Ok(())
        })
    }

    pub(crate) fn update_max_record_size(
        &self,
        ctx: &RequestContext,
        input: k::UpdateMaxRecordSizeInput,
    ) -> Result<(), Error> {
        let entry = self.find_active_stream(ctx, None, input.stream_arn.as_deref())?;
        self.mutate(&entry, |record| {
            record.max_record_size_kib = input.max_record_size_in_ki_b as u32;
            Ok(())
        })
    }

    pub(crate) fn update_stream_warm_throughput(
        &self,
        ctx: &RequestContext,
        input: k::UpdateStreamWarmThroughputInput,
    ) -> Result<k::UpdateStreamWarmThroughputOutput, Error> {
        let entry = self.find_active_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let mibps = input.warm_throughput_mi_bps;
        let record = self.mutate(&entry, |record| {
            if record.mode != m::StreamMode::OnDemand {
                return Err(Error::invalid(format!(
                    "Warm throughput can only be set on streams in ON_DEMAND mode; stream {} \
                     under account {} is in PROVISIONED mode.",
                    record.name, record.account
                )));
            }
            record.warm_throughput_mibps = Some(mibps as u32);
            Ok(record.clone())
        })?;
        Ok(k::UpdateStreamWarmThroughputOutput {
            stream_arn: Some(stream_arn(&record)),
            stream_name: Some(record.name.clone()),
            warm_throughput: Some(k::WarmThroughputObject {
                current_mi_bps: Some(mibps),
                target_mi_bps: Some(mibps),
            }),
        })
    }
}

pub(crate) enum Resource {
    Stream(Arc<StreamEntry>),
    Consumer(Arc<StreamEntry>, String),
    /// A queue: its stream and its queue id.
    Queue(Arc<StreamEntry>, String),
}

#[derive(Clone, Copy, Debug)]
enum ShardFilterSpec {
    None,
    AfterShardId(u32),
    AtTrimHorizon,
    FromTrimHorizon,
    AtLatest,
    AtTimestamp(i64),
    FromTimestamp(i64),
}

impl ShardFilterSpec {
    fn from_wire(filter: &k::ShardFilter) -> Result<ShardFilterSpec, Error> {
        let timestamp = || {
            filter.timestamp.map(|t| t.0).ok_or_else(|| {
                Error::invalid(format!(
                    "Timestamp must be specified for ShardFilter of type {}.",
                    filter.type_.as_str()
                ))
            })
        };
        Ok(match filter.type_ {
            k::ShardFilterType::AfterShardId => {
                let id = filter.shard_id.as_deref().ok_or_else(|| {
                    Error::invalid(
                        "ShardId must be specified for ShardFilter of type AFTER_SHARD_ID.",
                    )
                })?;
                ShardFilterSpec::AfterShardId(parse_shard_id(id).unwrap_or(0))
            }
            k::ShardFilterType::AtTrimHorizon => ShardFilterSpec::AtTrimHorizon,
            k::ShardFilterType::FromTrimHorizon => ShardFilterSpec::FromTrimHorizon,
            k::ShardFilterType::AtLatest => ShardFilterSpec::AtLatest,
            k::ShardFilterType::AtTimestamp => ShardFilterSpec::AtTimestamp(timestamp()?),
            k::ShardFilterType::FromTimestamp => ShardFilterSpec::FromTimestamp(timestamp()?),
        })
    }

    fn encode(self) -> (String, String) {
        match self {
            ShardFilterSpec::None => ("none".into(), String::new()),
            ShardFilterSpec::AfterShardId(id) => ("after".into(), id.to_string()),
            ShardFilterSpec::AtTrimHorizon => ("at_trim".into(), String::new()),
            ShardFilterSpec::FromTrimHorizon => ("from_trim".into(), String::new()),
            ShardFilterSpec::AtLatest => ("at_latest".into(), String::new()),
            ShardFilterSpec::AtTimestamp(t) => ("at_ts".into(), t.to_string()),
            ShardFilterSpec::FromTimestamp(t) => ("from_ts".into(), t.to_string()),
        }
    }

    fn decode(kind: &str, arg: &str) -> ShardFilterSpec {
        let num = || arg.parse::<i64>().unwrap_or(0);
        match kind {
            "after" => ShardFilterSpec::AfterShardId(arg.parse().unwrap_or(0)),
            "at_trim" => ShardFilterSpec::AtTrimHorizon,
            "from_trim" => ShardFilterSpec::FromTrimHorizon,
            "at_latest" => ShardFilterSpec::AtLatest,
            "at_ts" => ShardFilterSpec::AtTimestamp(num()),
            "from_ts" => ShardFilterSpec::FromTimestamp(num()),
            _ => ShardFilterSpec::None,
        }
    }
}
