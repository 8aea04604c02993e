//! Registered consumers (enhanced fan-out) and SubscribeToShard.
//!
//! Consumers live in their stream's catalog record; their ARN is the stream ARN followed by
//! `/consumer/NAME:CREATION_SECONDS`. A subscription is a [`Subscription`] the server pulls
//! events from: each event carries the records that arrived since the last one (the log's
//! watch channel wakes it the moment a group commit lands, so push latency is the commit's),
//! a continuation sequence number, MillisBehindLatest, and ChildShards once a closed shard
//! has been read to its end. A subscription ends after `subscription_ms` (5 minutes, as on
//! AWS) or when its shard ends.

use std::sync::Arc;
use std::time::Duration;

use millrace_catalog::model::{ConsumerRecord, Lifecycle, ShardRecord, Status};
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;

use crate::control::{check_tags, decode_next_token, encode_next_token};
use crate::{
    Error, Inner, RequestContext, StreamEntry, Tags, parse_shard_id, shard_id, stream_arn,
};

/// A new subscription for the same consumer and shard within this window is refused.
pub const RESUBSCRIBE_WINDOW_MS: i64 = 5_000;
/// With nothing to send, a subscription still sends an (empty) event this often.
pub const HEARTBEAT_MS: i64 = 5_000;
/// Records per event at most.
const EVENT_RECORDS_MAX: usize = 10_000;
const LIST_CONSUMERS_LIMIT_DEFAULT: usize = 100;

pub type SubscribeEvent = k::SubscribeToShardEvent;

fn consumer_arn(stream_arn: &str, consumer: &ConsumerRecord) -> String {
    format!(
        "{stream_arn}/consumer/{}:{}",
        consumer.name,
        consumer.created_ms / 1000
    )
}

fn consumer_status(status: Status) -> k::ConsumerStatus {
    match status {
        Status::Creating => k::ConsumerStatus::Creating,
        Status::Deleting => k::ConsumerStatus::Deleting,
        Status::Active | Status::Updating => k::ConsumerStatus::Active,
    }
}

/// Splits a consumer ARN into (stream ARN, consumer name, creation seconds).
fn parse_consumer_arn(arn: &str) -> Option<(String, String, i64)> {
    let (stream, rest) = arn.split_once("/consumer/")?;
    let (name, secs) = rest.rsplit_once(':')?;
    Some((stream.to_string(), name.to_string(), secs.parse().ok()?))
}

impl Inner {
    fn consumer_not_found(arn_or_name: &str) -> Error {
        Error::ResourceNotFound {
            message: format!("Consumer {arn_or_name} not found."),
        }
    }

    /// Finds a consumer by its ARN, or by stream ARN and name.
    fn find_consumer(
        &self,
        ctx: &RequestContext,
        consumer_arn_in: Option<&str>,
        stream_arn_in: Option<&str>,
        name: Option<&str>,
    ) -> Result<(Arc<StreamEntry>, ConsumerRecord), Error> {
        let (entry, name, created_secs) = match (consumer_arn_in, stream_arn_in, name) {
            (Some(arn), _, _) => {
                let (stream, name, secs) =
                    parse_consumer_arn(arn).ok_or_else(|| Self::consumer_not_found(arn))?;
                let entry = self
                    .find_stream(ctx, None, Some(&stream))
                    .map_err(|_| Self::consumer_not_found(arn))?;
                (entry, name, Some(secs))
            }
            (None, Some(stream), Some(name)) => (
                self.find_stream(ctx, None, Some(stream))?,
                name.to_string(),
                None,
            ),
            _ => {
                return Err(Error::invalid(
                    "Either ConsumerARN or both StreamARN and ConsumerName must be provided.",
                ));
            }
        };
        let now = self.now_ms();
        let consumer = entry
            .view()
            .record
            .consumers
            .iter()
            .find(|c| {
                c.name == name
                    && created_secs.is_none_or(|s| s == c.created_ms / 1000)
                    && !(c.lifecycle.status == Status::Deleting && now >= c.lifecycle.until_ms)
            })
            .cloned()
            .ok_or_else(|| Self::consumer_not_found(consumer_arn_in.unwrap_or(&name)))?;
        Ok((entry, consumer))
    }

    pub(crate) fn register_stream_consumer(
        &self,
        ctx: &RequestContext,
        input: k::RegisterStreamConsumerInput,
    ) -> Result<k::RegisterStreamConsumerOutput, Error> {
        let entry = self.find_stream(ctx, None, Some(&input.stream_arn))?;
        let tags: Tags = input.tags.unwrap_or_default();
        check_tags(&tags)?;
        let now = self.now_ms();
        let delay = self.config.consumer_delay_ms;
        let limit = self.config.consumer_limit as usize;
        let (consumer, arn) = self.mutate(&entry, |record| {
            let live = |c: &&ConsumerRecord| {
                !(c.lifecycle.status == Status::Deleting && now >= c.lifecycle.until_ms)
            };
            if record
                .consumers
                .iter()
                .filter(live)
                .any(|c| c.name == input.consumer_name)
            {
                return Err(Error::ResourceInUse {
                    message: format!(
                        "Consumer {} under stream {} already exists for account {}.",
                        input.consumer_name, record.name, record.account
                    ),
                });
            }
            // Queues share the registered-consumer limit with enhanced fan-out consumers.
            let queues = record
                .queues
                .iter()
                .filter(|q| crate::queues::queue_exists(q, now))
                .count();
            if record.consumers.iter().filter(live).count() + queues >= limit {
                return Err(Error::LimitExceeded {
                    message: format!(
                        "Stream {} under account {} has reached the limit of {limit} registered \
                         consumers.",
                        record.name, record.account
                    ),
                });
            }
            record.consumers.retain(|c| live(&c));
            let consumer = ConsumerRecord {
                name: input.consumer_name.clone(),
                created_ms: now,
                lifecycle: if delay > 0 {
                    Lifecycle {
                        status: Status::Creating,
                        until_ms: now + delay,
                        then: Status::Active,
                    }
                } else {
                    Lifecycle::steady(Status::Active)
                },
                policy: None,
                tags: tags.clone(),
            };
            record.consumers.push(consumer.clone());
            Ok((consumer, stream_arn(record)))
        })?;
        Ok(k::RegisterStreamConsumerOutput {
            consumer: k::Consumer {
                consumer_name: consumer.name.clone(),
                consumer_arn: consumer_arn(&arn, &consumer),
                consumer_status: consumer_status(consumer.lifecycle.at(now)),
                consumer_creation_timestamp: EpochMillis(consumer.created_ms / 1000 * 1000),
            },
        })
    }

    pub(crate) fn describe_stream_consumer(
        &self,
        ctx: &RequestContext,
        input: k::DescribeStreamConsumerInput,
    ) -> Result<k::DescribeStreamConsumerOutput, Error> {
        let (entry, consumer) = self.find_consumer(
            ctx,
            input.consumer_arn.as_deref(),
            input.stream_arn.as_deref(),
            input.consumer_name.as_deref(),
        )?;
        let arn = stream_arn(&entry.view().record);
        Ok(k::DescribeStreamConsumerOutput {
            consumer_description: k::ConsumerDescription {
                consumer_name: consumer.name.clone(),
                consumer_arn: consumer_arn(&arn, &consumer),
                consumer_status: consumer_status(consumer.lifecycle.at(self.now_ms())),
                consumer_creation_timestamp: EpochMillis(consumer.created_ms / 1000 * 1000),
                stream_arn: arn,
            },
        })
    }

    pub(crate) fn list_stream_consumers(
        &self,
        ctx: &RequestContext,
        input: k::ListStreamConsumersInput,
    ) -> Result<k::ListStreamConsumersOutput, Error> {
        let entry = self.find_stream(ctx, None, Some(&input.stream_arn))?;
        let now = self.now_ms();
        let limit = input
            .max_results
            .map(|l| l as usize)
            .unwrap_or(LIST_CONSUMERS_LIMIT_DEFAULT);
        let start_after = match &input.next_token {
            Some(token) => {
                let fields = decode_next_token(token, 2, now)?;
                if fields.first().map(String::as_str) != Some("consumers") {
                    return Err(Error::invalid(format!("Invalid NextToken: {token}")));
                }
                fields.get(1).cloned()
            }
            None => None,
        };
        let view = entry.view();
        let arn = stream_arn(&view.record);
        let mut consumers: Vec<&ConsumerRecord> = view
            .record
            .consumers
            .iter()
            .filter(|c| !(c.lifecycle.status == Status::Deleting && now >= c.lifecycle.until_ms))
            .filter(|c| {
                start_after
                    .as_deref()
                    .is_none_or(|after| c.name.as_str() > after)
            })
            .collect();
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        let has_more = consumers.len() > limit;
        consumers.truncate(limit);
        let next_token = if has_more {
            consumers
                .last()
                .map(|c| encode_next_token(&["consumers", &c.name], now))
        } else {
            None
        };
        Ok(k::ListStreamConsumersOutput {
            consumers: Some(
                consumers
                    .iter()
                    .map(|c| k::Consumer {
                        consumer_name: c.name.clone(),
                        consumer_arn: consumer_arn(&arn, c),
                        consumer_status: consumer_status(c.lifecycle.at(now)),
                        consumer_creation_timestamp: EpochMillis(c.created_ms / 1000 * 1000),
                    })
                    .collect(),
            ),
            next_token,
        })
    }

    pub(crate) fn deregister_stream_consumer(
        &self,
        ctx: &RequestContext,
        input: k::DeregisterStreamConsumerInput,
    ) -> Result<(), Error> {
        let (entry, consumer) = self.find_consumer(
            ctx,
            input.consumer_arn.as_deref(),
            input.stream_arn.as_deref(),
            input.consumer_name.as_deref(),
        )?;
        let now = self.now_ms();
        let delay = self.config.consumer_delay_ms;
        self.mutate(&entry, |record| {
            if delay > 0 {
                if let Some(c) = record
                    .consumers
                    .iter_mut()
                    .find(|c| c.name == consumer.name && c.created_ms == consumer.created_ms)
                {
                    c.lifecycle = Lifecycle {
                        status: Status::Deleting,
                        until_ms: now + delay,
                        then: Status::Deleting,
                    };
                }
            } else {
                record
                    .consumers
                    .retain(|c| !(c.name == consumer.name && c.created_ms == consumer.created_ms));
            }
            Ok(())
        })
    }
}

pub(crate) fn tag_consumer(
    inner: &Inner,
    entry: &StreamEntry,
    name: &str,
    tags: Tags,
) -> Result<(), Error> {
    check_tags(&tags)?;
    inner.mutate(entry, |record| {
        if let Some(c) = record.consumers.iter_mut().find(|c| c.name == name) {
            c.tags.extend(tags);
            if c.tags.len() > crate::control::TAGS_PER_STREAM_MAX {
                return Err(Error::LimitExceeded {
                    message: format!(
                        "A consumer cannot have more than {} tags.",
                        crate::control::TAGS_PER_STREAM_MAX
                    ),
                });
            }
        }
        Ok(())
    })
}

/// Drops consumers whose DELETING delay has passed.
pub(crate) fn finish_consumer_changes(
    inner: &Inner,
    entry: &StreamEntry,
    now: i64,
) -> Result<(), Error> {
    let gone = entry
        .view()
        .record
        .consumers
        .iter()
        .any(|c| c.lifecycle.status == Status::Deleting && now >= c.lifecycle.until_ms);
    if gone {
        inner.mutate(entry, |record| {
            record.consumers.retain(|c| {
                !(c.lifecycle.status == Status::Deleting && now >= c.lifecycle.until_ms)
            });
            Ok(())
        })?;
    }
    Ok(())
}

/// One SubscribeToShard connection's source of events.
pub struct Subscription {
    inner: Arc<Inner>,
    entry: Arc<StreamEntry>,
    shard: ShardRecord,
    next_offset: u64,
    ends_at_ms: i64,
    last_event_ms: Option<i64>,
    finished: bool,
    watch: tokio::sync::watch::Receiver<u64>,
}

pub(crate) fn subscribe(
    inner: &Arc<Inner>,
    ctx: &RequestContext,
    input: k::SubscribeToShardInput,
) -> Result<Subscription, Error> {
    let (entry, consumer) = inner.find_consumer(ctx, Some(&input.consumer_arn), None, None)?;
    let now = inner.now_ms();
    if consumer.lifecycle.at(now) != Status::Active {
        return Err(Error::ResourceInUse {
            message: format!("Consumer {} is not in ACTIVE state.", input.consumer_arn),
        });
    }
    let view = entry.view();
    let status = view.record.lifecycle.at(now);
    if !matches!(status, Status::Active | Status::Updating) {
        return Err(Error::ResourceInUse {
            message: format!(
                "Stream {} under account {} is in {} state.",
                view.record.name,
                view.record.account,
                crate::status_str(status)
            ),
        });
    }
    let shard = parse_shard_id(&input.shard_id)
        .and_then(|i| view.shard(i))
        .cloned()
        .ok_or_else(|| Error::ResourceNotFound {
            message: format!(
                "Shard {} in stream {} under account {} does not exist",
                input.shard_id, view.record.name, view.record.account
            ),
        })?;
    let offset = inner.starting_offset(
        &view,
        &shard,
        input.starting_position.type_,
        input.starting_position.sequence_number.as_deref(),
        input.starting_position.timestamp,
        "SubscribeToShard",
    )?;
    if input.dry_run.unwrap_or(false) {
        return Err(Error::DryRun {
            message: "Request would have succeeded, but DryRun flag is set.".to_string(),
        });
    }
    {
        let mut subscriptions = entry.subscriptions.lock();
        let key = (consumer.name.clone(), shard.index);
        if let Some(&started) = subscriptions.get(&key)
            && now - started < RESUBSCRIBE_WINDOW_MS
        {
            return Err(Error::ResourceInUse {
                message: format!(
                    "Another active subscription exists for consumer {} on shard {}.",
                    input.consumer_arn,
                    shard_id(shard.index)
                ),
            });
        }
        subscriptions.insert(key, now);
    }
    let watch = inner.log.watch(shard.log_id)?;
    Ok(Subscription {
        inner: inner.clone(),
        entry,
        shard,
        next_offset: offset,
        ends_at_ms: now + inner.config.subscription_ms,
        last_event_ms: None,
        finished: false,
        watch,
    })
}

impl Subscription {
    /// The next event, waiting for records if there are none; `None` when the subscription
    /// is over (its time is up, or its shard ended and the last event was sent).
    pub async fn next_event(&mut self) -> Option<Result<SubscribeEvent, Error>> {
        loop {
            if self.finished {
                return None;
            }
            let now = self.inner.now_ms();
            if now >= self.ends_at_ms {
                return None;
            }
            // The shard may have closed since the subscription started.
            let view = self.entry.view();
            if let Some(current) = view.shard(self.shard.index) {
                self.shard = current.clone();
            }
            let batch = match self.inner.read_batch(
                &view,
                &self.shard,
                self.next_offset,
                EVENT_RECORDS_MAX,
                now,
            ) {
                Ok(batch) => batch,
                Err(error) => return Some(Err(error)),
            };
            let heartbeat_due = self
                .last_event_ms
                .is_none_or(|last| now - last >= HEARTBEAT_MS);
            if !batch.records.is_empty() || batch.shard_ended || heartbeat_due {
                self.next_offset = batch.next_offset;
                self.last_event_ms = Some(now);
                if batch.shard_ended {
                    self.finished = true;
                }
                // The continuation names the last record delivered (sequence index =
                // offset + 1), so AFTER_SEQUENCE_NUMBER of it resumes exactly here.
                let continuation =
                    Inner::sequence_number_at_index(&view, self.shard.index, self.next_offset, now);
                return Some(Ok(k::SubscribeToShardEvent {
                    records: batch.records,
                    continuation_sequence_number: continuation,
                    millis_behind_latest: batch.millis_behind_latest,
                    child_shards: batch.child_shards,
                }));
            }
            // Wait for new records, the next heartbeat, or the end of the subscription.
            let wait_ms = (self
                .last_event_ms
                .map_or(0, |last| last + HEARTBEAT_MS - now))
            .min(self.ends_at_ms - now)
            .max(1);
            let changed =
                tokio::time::timeout(Duration::from_millis(wait_ms as u64), self.watch.changed())
                    .await;
            if let Ok(Err(_)) = changed {
                // The log dropped the channel (stream deleted or shutting down).
                return None;
            }
        }
    }
}
