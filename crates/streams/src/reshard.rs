//! Resharding: SplitShard, MergeShards, UpdateShardCount, UpdateStreamMode and the
//! on-demand scaler.
//!
//! Every reshard runs with the stream's gate held exclusively (no write is between routing
//! and its append), reads each closing parent's end offset from the log, and commits the
//! closed parents and the new children in one catalog transaction. A crash before the
//! commit leaves the stream as it was (the children's fresh logs are removed at the next
//! start as unreferenced); after it, fully resharded.
//!
//! UpdateShardCount reaches the uniform target layout through real splits and merges, as
//! AWS does, so lineage stays a tree of parents and adjacent parents that the KCL can walk:
//! first every open shard is split at the target boundaries inside it, then the pieces of
//! each target range are merged pairwise, left to right. Intermediate shards are created
//! and closed in the same transaction and hold no records.

use millrace_catalog::model::{self as m, ClosedShard, ShardRecord, Status, StreamRecord};
use millrace_wire::kinesis as k;

use crate::{Error, Inner, RequestContext, StreamEntry, hashing, parse_shard_id, shard_id};

/// UpdateShardCount calls allowed per stream in a rolling 24 hours.
pub const SHARD_COUNT_UPDATES_PER_DAY_MAX: usize = 10;
/// Stream-mode switches allowed per stream in a rolling 24 hours.
pub const MODE_UPDATES_PER_DAY_MAX: usize = 2;
/// Most shards a stream can be scaled to with UpdateShardCount.
pub const UPDATE_SHARD_COUNT_TARGET_MAX: i32 = 10_000;
const DAY_MS: i64 = 24 * 3_600_000;

/// Builds new shards within one reshard transaction.
struct Builder<'a> {
    inner: &'a Inner,
    record: &'a mut StreamRecord,
    now: i64,
}

impl Builder<'_> {
    fn position(&self, index: u32) -> Option<usize> {
        self.record.shards.iter().position(|s| s.index == index)
    }

    /// Closes an open shard at its log's current end.
    fn close(&mut self, index: u32) -> Result<(), Error> {
        let pos = self
            .position(index)
            .ok_or_else(|| Error::invalid(format!("Shard {} vanished.", shard_id(index))))?;
        let log_id = self.record.shards.get(pos).map(|s| s.log_id).unwrap_or(0);
        let end_offset = self.inner.log.bounds(log_id)?.end_offset;
        if let Some(shard) = self.record.shards.get_mut(pos) {
            shard.closed = Some(ClosedShard {
                end_offset,
                closed_ms: self.now,
            });
        }
        Ok(())
    }

    /// Creates a shard whose sequence numbers are above every parent's.
    fn create(
        &mut self,
        start: u128,
        end: u128,
        parent: u32,
        adjacent_parent: Option<u32>,
    ) -> Result<u32, Error> {
        let parents_created = [Some(parent), adjacent_parent]
            .into_iter()
            .flatten()
            .filter_map(|p| self.position(p))
            .filter_map(|pos| self.record.shards.get(pos))
            .map(|s| s.created_ms)
            .max()
            .unwrap_or(self.now);
        // The child's epoch second must be later than its parents'.
        let created_ms = self.now.max((parents_created.div_euclid(1000) + 1) * 1000);
        let log_id = self.inner.catalog.write(|txn| txn.allocate("log", 1))?;
        self.inner.log.create_log(log_id)?;
        let index = self.record.next_shard_index;
        self.record.next_shard_index += 1;
        self.record.shards.push(ShardRecord {
            index,
            log_id,
            starting_hash_key: start,
            ending_hash_key: end,
            parent: Some(parent),
            adjacent_parent,
            created_ms,
            closed: None,
        });
        Ok(index)
    }

    fn range(&self, index: u32) -> Option<(u128, u128)> {
        self.position(index)
            .and_then(|pos| self.record.shards.get(pos))
            .map(|s| (s.starting_hash_key, s.ending_hash_key))
    }

    /// Splits `index` at `at` (the first key of the right child).
    fn split(&mut self, index: u32, at: u128) -> Result<(u32, u32), Error> {
        let (start, end) = self
            .range(index)
            .ok_or_else(|| Error::invalid(format!("Shard {} vanished.", shard_id(index))))?;
        self.close(index)?;
        let left = self.create(start, at - 1, index, None)?;
        let right = self.create(at, end, index, None)?;
        Ok((left, right))
    }

    /// Merges two adjacent shards (`left` below `right` in the key space).
    fn merge(&mut self, shard: u32, adjacent: u32) -> Result<u32, Error> {
        let (a_start, a_end) = self
            .range(shard)
            .ok_or_else(|| Error::invalid(format!("Shard {} vanished.", shard_id(shard))))?;
        let (b_start, b_end) = self
            .range(adjacent)
            .ok_or_else(|| Error::invalid(format!("Shard {} vanished.", shard_id(adjacent))))?;
        self.close(shard)?;
        self.close(adjacent)?;
        self.create(
            a_start.min(b_start),
            a_end.max(b_end),
            shard,
            Some(adjacent),
        )
    }

    fn open_shards_sorted(&self) -> Vec<(u32, u128, u128)> {
        let mut open: Vec<(u32, u128, u128)> = self
            .record
            .shards
            .iter()
            .filter(|s| s.closed.is_none())
            .map(|s| (s.index, s.starting_hash_key, s.ending_hash_key))
            .collect();
        open.sort_by_key(|s| s.1);
        open
    }
}

impl Inner {
    fn not_found_shard(record: &StreamRecord, shard: &str) -> Error {
        Error::ResourceNotFound {
            message: format!(
                "Could not find shard {shard} in stream {} under account {}.",
                record.name, record.account
            ),
        }
    }

    fn check_active(&self, record: &StreamRecord) -> Result<(), Error> {
        let status = record.lifecycle.at(self.now_ms());
        if status != Status::Active {
            return Err(Error::StreamNotActive {
                name: record.name.clone(),
                account: record.account.clone(),
                status: crate::status_str(status),
            });
        }
        Ok(())
    }

    /// Runs a reshard on a copy of the record and commits it, with the gate held.
    async fn reshard<R>(
        &self,
        entry: &StreamEntry,
        f: impl FnOnce(&mut Builder<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let _gate = entry.gate.write().await;
        let _control = entry.control.lock();
        let mut record = entry.view().record.clone();
        let now = self.now_ms();
        let result = {
            let mut builder = Builder {
                inner: self,
                record: &mut record,
                now,
            };
            f(&mut builder)?
        };
        record.lifecycle = self.updating(now);
        self.commit(entry, record)?;
        // Fresh buckets for the new shards; the closed ones no longer matter.
        entry.limits.lock().clear();
        entry.load.lock().clear();
        Ok(result)
    }

    pub(crate) async fn split_shard(
        &self,
        ctx: &RequestContext,
        input: k::SplitShardInput,
    ) -> Result<(), Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let current_open = self.open_shard_count(&ctx.account, &ctx.region);
        let limit_error = (current_open + 1 > self.config.shard_limit)
            .then(|| self.shard_limit_error(&ctx.account, &ctx.region, current_open, 1));
        self.reshard(&entry, |b| {
            let record_view = b.record.clone();
            let index = parse_shard_id(&input.shard_to_split)
                .filter(|&i| b.position(i).is_some())
                .ok_or_else(|| Self::not_found_shard(&record_view, &input.shard_to_split))?;
            self.check_active(&record_view)?;
            if let Some(error) = limit_error {
                return Err(error);
            }
            let shard = record_view
                .shards
                .iter()
                .find(|s| s.index == index)
                .ok_or_else(|| Self::not_found_shard(&record_view, &input.shard_to_split))?;
            if shard.closed.is_some() {
                return Err(Error::invalid(format!(
                    "Shard {} in stream {} under account {} has already been merged or split, \
                     and thus is not eligible for splitting.",
                    shard_id(index),
                    record_view.name,
                    record_view.account
                )));
            }
            let at = hashing::parse_hash_key(&input.new_starting_hash_key);
            let valid = at.is_some_and(|at| {
                at > shard.starting_hash_key.saturating_add(1) && at < shard.ending_hash_key
            });
            let Some(at) = at.filter(|_| valid) else {
                return Err(Error::invalid(format!(
                    "NewStartingHashKey {} used in SplitShard() on shard {} in stream {} under \
                     account {} is not both greater than one plus the shard's StartingHashKey {} \
                     and less than the shard's EndingHashKey {}.",
                    input.new_starting_hash_key,
                    shard_id(index),
                    record_view.name,
                    record_view.account,
                    shard.starting_hash_key,
                    shard.ending_hash_key
                )));
            };
            b.split(index, at).map(|_| ())
        })
        .await
    }

    pub(crate) async fn merge_shards(
        &self,
        ctx: &RequestContext,
        input: k::MergeShardsInput,
    ) -> Result<(), Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        self.reshard(&entry, |b| {
            let record_view = b.record.clone();
            let find = |text: &str| -> Result<ShardRecord, Error> {
                parse_shard_id(text)
                    .and_then(|i| record_view.shards.iter().find(|s| s.index == i))
                    .cloned()
                    .ok_or_else(|| Self::not_found_shard(&record_view, text))
            };
            let a = find(&input.shard_to_merge)?;
            let b_shard = find(&input.adjacent_shard_to_merge)?;
            self.check_active(&record_view)?;
            let adjacent = a.ending_hash_key.checked_add(1) == Some(b_shard.starting_hash_key)
                || b_shard.ending_hash_key.checked_add(1) == Some(a.starting_hash_key);
            if !adjacent
                || a.closed.is_some()
                || b_shard.closed.is_some()
                || a.index == b_shard.index
            {
                return Err(Error::invalid(format!(
                    "Shards {} and {} in stream {} under account {} are not an adjacent pair of \
                     shards eligible for merging",
                    shard_id(a.index),
                    shard_id(b_shard.index),
                    record_view.name,
                    record_view.account
                )));
            }
            b.merge(a.index, b_shard.index).map(|_| ())
        })
        .await
    }

    pub(crate) async fn update_shard_count(
        &self,
        ctx: &RequestContext,
        input: k::UpdateShardCountInput,
    ) -> Result<k::UpdateShardCountOutput, Error> {
        let entry = self.find_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let target = input.target_shard_count;
        let account_open = self.open_shard_count(&ctx.account, &ctx.region);
        let now = self.now_ms();
        let (current, record) = self
            .reshard(&entry, |b| {
                let record = b.record.clone();
                self.check_active(&record)?;
                if record.mode == m::StreamMode::OnDemand {
                    return Err(Error::invalid(format!(
                        "UpdateShardCount is not supported for stream {} under account {} \
                         because it is in ON_DEMAND mode.",
                        record.name, record.account
                    )));
                }
                let open = b.open_shards_sorted();
                let current = open.len() as i32;
                let limit = self.config.shard_limit as i32;
                let after = account_open as i32 - current + target;
                if target > UPDATE_SHARD_COUNT_TARGET_MAX || after > limit {
                    return Err(Error::LimitExceeded {
                        message: format!(
                            "Target shard count or number of open shards cannot be greater than \
                             {limit}. Current open shard count: {current}, Target shard count: \
                             {target}"
                        ),
                    });
                }
                if target > current * 2 {
                    return Err(Error::LimitExceeded {
                        message: format!(
                            "UpdateShardCount cannot scale up over double your current open \
                             shard count. Current open shard count: {current}, Target shard \
                             count: {target}"
                        ),
                    });
                }
                if (target as f64) < current as f64 / 2.0 {
                    return Err(Error::LimitExceeded {
                        message: format!(
                            "UpdateShardCount cannot scale down below half your current open \
                             shard count. Current open shard count: {current}, Target shard \
                             count: {target}"
                        ),
                    });
                }
                let recent = record
                    .shard_count_updates_ms
                    .iter()
                    .filter(|&&t| now - t < DAY_MS)
                    .count();
                if recent >= SHARD_COUNT_UPDATES_PER_DAY_MAX {
                    return Err(Error::LimitExceeded {
                        message: format!(
                            "Stream {} under account {} has exceeded its limit of \
                             {SHARD_COUNT_UPDATES_PER_DAY_MAX} UpdateShardCount calls in a \
                             rolling 24 hours.",
                            record.name, record.account
                        ),
                    });
                }
                b.record
                    .shard_count_updates_ms
                    .retain(|&t| now - t < DAY_MS);
                b.record.shard_count_updates_ms.push(now);
                scale_uniformly(b, target as u32)?;
                Ok((current, b.record.clone()))
            })
            .await?;
        Ok(k::UpdateShardCountOutput {
            stream_name: Some(record.name.clone()),
            stream_arn: Some(crate::stream_arn(&record)),
            current_shard_count: Some(current),
            target_shard_count: Some(target),
        })
    }

    pub(crate) async fn update_stream_mode(
        &self,
        ctx: &RequestContext,
        input: k::UpdateStreamModeInput,
    ) -> Result<(), Error> {
        let entry = self.find_stream(ctx, None, Some(&input.stream_arn))?;
        let now = self.now_ms();
        let mode = match input.stream_mode_details.stream_mode {
            k::StreamMode::OnDemand => m::StreamMode::OnDemand,
            k::StreamMode::Provisioned => m::StreamMode::Provisioned,
        };
        self.reshard(&entry, |b| {
            let record = b.record.clone();
            self.check_active(&record)?;
            if record.mode == mode {
                return Err(Error::invalid(format!(
                    "Stream {} under account {} is already in {} mode.",
                    record.name,
                    record.account,
                    input.stream_mode_details.stream_mode.as_str()
                )));
            }
            let recent = record
                .mode_updates_ms
                .iter()
                .filter(|&&t| now - t < DAY_MS)
                .count();
            if recent >= MODE_UPDATES_PER_DAY_MAX {
                return Err(Error::LimitExceeded {
                    message: format!(
                        "Stream {} under account {} has exceeded its limit of \
                         {MODE_UPDATES_PER_DAY_MAX} stream mode changes in a rolling 24 hours.",
                        record.name, record.account
                    ),
                });
            }
            if mode == m::StreamMode::Provisioned && self.live_queue_count(&record, now) > 0 {
                return Err(Error::ResourceInUse {
                    message: format!(
                        "Stream {} under account {} has queues. Delete every queue on the \
                         stream before switching it to PROVISIONED mode.",
                        record.name, record.account
                    ),
                });
            }
            if mode == m::StreamMode::Provisioned
                && self.live_channel_count(&crate::stream_arn(&record))? > 0
            {
                return Err(Error::ResourceInUse {
                    message: format!(
                        "Stream {} under account {} has channels. Delete every channel on the \
                         stream before switching it to PROVISIONED mode.",
                        record.name, record.account
                    ),
                });
            }
            b.record.mode_updates_ms.retain(|&t| now - t < DAY_MS);
            b.record.mode_updates_ms.push(now);
            b.record.mode = mode;
            if let Some(mibps) = input.warm_throughput_mi_bps {
                b.record.warm_throughput_mibps = Some(mibps as u32);
            }
            Ok(())
        })
        .await
    }

    /// Splits the hot shards of on-demand streams: a shard whose writes stayed above the
    /// threshold for long enough is split at the middle of its key range.
    pub(crate) async fn scale_on_demand(&self, entry: &StreamEntry, now: i64) -> Result<(), Error> {
        let view = entry.view();
        if view.record.mode != m::StreamMode::OnDemand
            || view.record.lifecycle.at(now) != Status::Active
        {
            return Ok(());
        }
        let mut hot = Vec::new();
        {
            let mut load = entry.load.lock();
            for shard in &view.open {
                let l = load.entry(shard.index).or_default();
                if l.window_start_ms == 0 {
                    l.window_start_ms = now;
                    continue;
                }
                let elapsed_ms = now - l.window_start_ms;
                if elapsed_ms < 1000 {
                    continue;
                }
                let rate = l.bytes as f64 * 1000.0 / elapsed_ms as f64;
                if rate > self.config.on_demand_split_bytes_per_sec {
                    let since = *l.hot_since_ms.get_or_insert(l.window_start_ms);
                    if now - since >= self.config.on_demand_split_after_ms {
                        hot.push(shard.index);
                    }
                } else {
                    l.hot_since_ms = None;
                }
                l.window_start_ms = now;
                l.bytes = 0;
            }
        }
        for index in hot {
            let open = self.open_shard_count(&view.record.account, &view.record.region);
            if open + 1 > self.config.shard_limit {
                tracing::warn!(stream = %view.record.name, "on-demand stream cannot split: shard limit reached");
                return Ok(());
            }
            self.reshard(entry, |b| {
                let Some((start, end)) = b.range(index) else {
                    return Ok(());
                };
                if end - start < 2 {
                    return Ok(());
                }
                let at = start + (end - start) / 2 + 1;
                tracing::info!(stream = %b.record.name, shard = index, "on-demand split of a hot shard");
                b.split(index, at).map(|_| ())
            })
            .await?;
        }
        Ok(())
    }
}

/// Moves the open shards of `b.record` to `target` uniform ranges through splits and
/// merges (see the module documentation).
fn scale_uniformly(b: &mut Builder<'_>, target: u32) -> Result<(), Error> {
    let ranges = hashing::uniform_ranges(target);
    // Phase 1: split every open shard at the target boundaries strictly inside it.
    let boundaries: Vec<u128> = ranges.iter().skip(1).map(|r| r.0).collect();
    for (index, start, end) in b.open_shards_sorted() {
        let mut remainder = index;
        for &at in boundaries.iter().filter(|&&at| at > start && at <= end) {
            let (_, right) = b.split(remainder, at)?;
            remainder = right;
        }
    }
    // Phase 2: merge, left to right, the pieces that make up each target range.
    for (target_start, target_end) in ranges {
        let mut pieces: Vec<u32> = b
            .open_shards_sorted()
            .into_iter()
            .filter(|&(_, start, end)| start >= target_start && end <= target_end)
            .map(|(index, _, _)| index)
            .collect();
        while pieces.len() > 1 {
            let left = pieces.remove(0);
            let right = pieces.remove(0);
            let merged = b.merge(left, right)?;
            pieces.insert(0, merged);
        }
    }
    Ok(())
}
