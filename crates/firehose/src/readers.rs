//! Other readers of a delivery stream's accepted records: Kinesis Data Analytics applications
//! with the delivery stream as their input (`KinesisFirehoseInput`). They read the same log
//! the delivery task reads, at their own pace, and place a *hold* on it: the first offset
//! each still needs. Delivery trims only segments that are wholly delivered *and* wholly
//! before every hold, so an application that falls behind its delivery stream loses nothing.
//!
//! A hold keeps records at most [`HOLD_MS_MAX`] (24 hours, how long Firehose keeps
//! undelivered data): an application stopped for longer, or deleted without its hold being
//! released, does not keep the log forever. Holds are persisted with the delivery checkpoint
//! (at most once a second while one moves, and at once when one is placed or released), so a
//! restart of the server cannot trim what an application, not yet restarted, still needs.
//! A persisted hold may be behind the one in memory; that only keeps more.

use std::collections::BTreeMap;

use bytes::Bytes;
use millrace_catalog::Table;
use millrace_catalog::model::DeliveryCheckpointRecord;
use millrace_log::{Log, LogId};
use millrace_streams::RequestContext;

use crate::{Entry, Error, Firehose, Inner, envelope};

/// The longest a hold keeps records.
pub const HOLD_MS_MAX: i64 = 24 * 60 * 60 * 1000;
/// How often a moving hold is written to the catalog.
const HOLD_SAVE_INTERVAL_MS: i64 = 1_000;

/// One accepted record, as an application reads it.
#[derive(Clone, Debug)]
pub struct InputRecord {
    pub offset: u64,
    /// When the delivery stream accepted it (or, for a Kinesis source, when the stream did).
    pub arrival_ms: i64,
    pub data: Bytes,
}

/// The answer to [`Firehose::read_input`].
#[derive(Clone, Debug)]
pub struct InputRead {
    pub records: Vec<InputRecord>,
    /// Where to read next.
    pub next_offset: u64,
    /// The log's end when the read started: the reader is caught up when `next_offset`
    /// reaches it.
    pub end_offset: u64,
}

/// The holds of one delivery stream, in memory.
#[derive(Default)]
pub(crate) struct Holds {
    pub offsets: BTreeMap<String, u64>,
    saved_ms: i64,
}

impl Firehose {
    /// Up to `records_max` records (and `bytes_max` bytes, but at least one) accepted by the
    /// delivery stream `name`, from `from_offset` (or the oldest kept, if that is later).
    pub fn read_input(
        &self,
        ctx: &RequestContext,
        name: &str,
        from_offset: u64,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<InputRead, Error> {
        let entry = self.inner.find(ctx, name)?;
        let log_id = entry.record().log_id;
        let batch = self
            .inner
            .log
            .read(log_id, from_offset, records_max, bytes_max)?;
        let mut records = Vec::with_capacity(batch.records.len());
        for record in batch.records {
            let Some(envelope) = envelope::decode(&record.payload) else {
                tracing::error!(delivery_stream = %name, offset = record.offset, "a log record of this delivery stream cannot be decoded; skipped");
                continue;
            };
            records.push(InputRecord {
                offset: record.offset,
                arrival_ms: envelope
                    .origin
                    .as_ref()
                    .map_or(record.timestamp_ms, |o| o.arrival_ms),
                data: envelope.data,
            });
        }
        Ok(InputRead {
            records,
            next_offset: batch.next_offset,
            end_offset: batch.end_offset,
        })
    }

    /// The first offset of the delivery stream `name` accepted at or after `timestamp_ms`
    /// (where an input starting at `NOW` begins).
    pub fn input_offset_at(
        &self,
        ctx: &RequestContext,
        name: &str,
        timestamp_ms: i64,
    ) -> Result<u64, Error> {
        let entry = self.inner.find(ctx, name)?;
        Ok(self
            .inner
            .log
            .offset_at_timestamp(entry.record().log_id, timestamp_ms)?)
    }

    /// Places or moves `holder`'s hold on the delivery stream `name`: records from `offset`
    /// on are kept for it.
    pub fn hold_input(
        &self,
        ctx: &RequestContext,
        name: &str,
        holder: &str,
        offset: u64,
    ) -> Result<(), Error> {
        let entry = self.inner.find(ctx, name)?;
        let now = self.inner.now_ms();
        let save = {
            let mut holds = entry.holds.lock();
            let placed = holds.offsets.insert(holder.to_string(), offset).is_none();
            let due = placed || now - holds.saved_ms >= HOLD_SAVE_INTERVAL_MS;
            if due {
                holds.saved_ms = now;
            }
            due
        };
        if save {
            self.inner.save_hold(&entry, holder, Some(offset))?;
        }
        Ok(())
    }

    /// Removes `holder`'s hold on the delivery stream `name` (the application is deleted).
    /// A delivery stream that is gone has no holds.
    pub fn release_input(
        &self,
        ctx: &RequestContext,
        name: &str,
        holder: &str,
    ) -> Result<(), Error> {
        let entry = match self.inner.find(ctx, name) {
            Ok(entry) => entry,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error),
        };
        if entry.holds.lock().offsets.remove(holder).is_some() {
            self.inner.save_hold(&entry, holder, None)?;
        }
        Ok(())
    }
}

impl Inner {
    /// Writes one hold (or its removal) into the delivery checkpoint.
    fn save_hold(&self, entry: &Entry, holder: &str, offset: Option<u64>) -> Result<(), Error> {
        self.catalog.write(|txn| -> Result<(), Error> {
            let mut checkpoint: DeliveryCheckpointRecord = txn
                .get(Table::DeliveryCheckpoints, &entry.key)?
                .unwrap_or_default();
            match offset {
                Some(offset) => checkpoint.holds.insert(holder.to_string(), offset),
                None => checkpoint.holds.remove(holder),
            };
            txn.put(Table::DeliveryCheckpoints, &entry.key, &checkpoint)?;
            Ok(())
        })
    }
}

/// How far delivery may trim given the holds: the newest timestamp `t <= before` such that
/// trimming segments wholly older than `t` keeps every held record younger than
/// [`HOLD_MS_MAX`]. Blocking (it reads the held records' timestamps from the log).
pub(crate) fn trim_point(
    log: &Log,
    log_id: LogId,
    before: i64,
    holds: &[u64],
    now_ms: i64,
) -> Result<i64, millrace_log::LogError> {
    let mut point = before;
    for &offset in holds {
        // The held record, or the oldest kept after it; none: the holder is caught up.
        if let Some(record) = log.read(log_id, offset, 1, 1)?.records.first() {
            point = point.min(record.timestamp_ms.max(now_ms - HOLD_MS_MAX));
        }
    }
    Ok(point)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use millrace_log::{AppendRecord, Clock, Log, LogConfig, ManualClock};

    use super::{HOLD_MS_MAX, trim_point};

    const HOUR_MS: i64 = 60 * 60 * 1000;

    /// Three one-record segments an hour apart (offsets 0, 1, 2); delivery is past them all.
    async fn three_segments(dir: &std::path::Path) -> (Log, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(HOUR_MS));
        let mut config = LogConfig::new(dir);
        config.segment_age_ms_max = HOUR_MS / 2;
        let log = Log::open(config, clock.clone()).expect("open");
        log.create_log(1).expect("create");
        for i in 0..3u8 {
            log.append(vec![AppendRecord {
                log_id: 1,
                payload: Bytes::from(vec![i]),
            }])
            .await
            .expect("append");
            clock.advance(HOUR_MS);
        }
        (log, clock)
    }

    #[tokio::test]
    async fn delivery_trims_up_to_the_oldest_hold_and_holds_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, clock) = three_segments(dir.path()).await;
        let now = clock.now_millis();
        let delivered = 3 * HOUR_MS + 1;
        // No hold: everything before the newest record's segment goes.
        assert_eq!(
            trim_point(&log, 1, delivered, &[], now).ok(),
            Some(delivered)
        );
        // A reader that still needs offset 1 keeps its segment and the ones after it.
        let point = trim_point(&log, 1, delivered, &[2, 1], now).expect("point");
        assert_eq!(log.trim_before(1, point).ok(), Some(1));
        let kept = log.read(1, 0, 10, 1024).expect("read");
        assert_eq!(kept.records.first().map(|r| r.offset), Some(1));
        // A reader that is caught up holds nothing.
        assert_eq!(
            trim_point(&log, 1, delivered, &[3], now).ok(),
            Some(delivered)
        );
        // A hold older than HOLD_MS_MAX keeps nothing.
        let later = now + HOLD_MS_MAX + 2 * HOUR_MS;
        assert_eq!(
            trim_point(&log, 1, delivered, &[1], later).ok(),
            Some(delivered)
        );
        log.shutdown().expect("shutdown");
    }
}
