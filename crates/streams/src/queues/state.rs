//! A queue's delivery index: which records of which shard were received, when each becomes
//! visible again, how often each was received, which are dead letters. Pure data, no IO:
//! every change is an [`Event`] applied by [`DeliveryState::apply`], the same function the
//! live path and recovery use, so replaying a queue's log rebuilds exactly this state.
//!
//! Per shard the index keeps `next_offset`, the first offset never received, and a slot for
//! every record below it that was received and not acknowledged. A record below
//! `next_offset` without a slot is acknowledged (or was trimmed by retention). So memory is
//! proportional to the records received and not yet acknowledged, which
//! `TRACKED_RECORDS_MAX` bounds, not to the stream.
//!
//! # Byte layouts (all integers big-endian)
//! ```text
//! event (EVENT_BYTES = 38)
//!   u8  kind: 1 lease, 2 ack, 3 visibility, 4 dead letter, 5 restore
//!   u32 shard index
//!   u64 offset of the record in the shard's log
//!   u32 attempt (receipt handles name it; 0 when unused)
//!   u32 receive count (lease only)
//!   i64 first receive time, ms (lease only)
//!   i64 visible at, ms (lease, visibility, dead letter, restore)
//!   u8  1 = the lease was a dead-letter receive (lease only)
//! event batch (one log record): u8 version = 1, then events back to back
//! snapshot: u8 version = 1, u32 shard count, then per shard
//!   u32 shard index, u64 next offset, u32 slot count, then per slot
//!   u64 offset, u32 receive count, u32 attempt, i64 first receive ms, i64 visible at ms,
//!   u8 dead
//! ```

use std::collections::{BTreeMap, BTreeSet};

/// Records received and not acknowledged that one queue tracks at most (in flight, waiting
/// for redelivery, or dead letters): AWS's documented in-flight limit per queue. At the
/// limit a receive hands out no new records (redeliveries continue) until acknowledgements
/// or retention free slots.
pub const TRACKED_RECORDS_MAX: usize = 120_000;
/// Records turned into dead letters by one receive at most (the rest on the next one).
pub const DEAD_LETTERS_PER_CALL_MAX: usize = 1_000;
/// Due records one dead-letter sweep looks at, at most.
pub const DEAD_LETTER_SCAN_MAX: usize = 10_000;

/// `first_receive_ms` of a slot for a record that was never received (see `fill_holes`).
pub const NEVER_RECEIVED_MS: i64 = i64::MIN;

const EVENT_BYTES: usize = 38;
const BATCH_VERSION: u8 = 1;
const SNAPSHOT_VERSION: u8 = 1;
const SLOT_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Lease,
    Ack,
    Visibility,
    DeadLetter,
    Restore,
}

impl EventKind {
    fn code(self) -> u8 {
        match self {
            EventKind::Lease => 1,
            EventKind::Ack => 2,
            EventKind::Visibility => 3,
            EventKind::DeadLetter => 4,
            EventKind::Restore => 5,
        }
    }

    fn from_code(code: u8) -> Option<EventKind> {
        Some(match code {
            1 => EventKind::Lease,
            2 => EventKind::Ack,
            3 => EventKind::Visibility,
            4 => EventKind::DeadLetter,
            5 => EventKind::Restore,
            _ => return None,
        })
    }
}

/// One change of delivery state. Fields a kind does not use are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub shard: u32,
    pub offset: u64,
    pub attempt: u32,
    pub receive_count: u32,
    pub first_receive_ms: i64,
    pub visible_at_ms: i64,
    pub dead: bool,
}

impl Event {
    fn bare(kind: EventKind, shard: u32, offset: u64) -> Event {
        Event {
            kind,
            shard,
            offset,
            attempt: 0,
            receive_count: 0,
            first_receive_ms: 0,
            visible_at_ms: 0,
            dead: false,
        }
    }

    pub fn ack(shard: u32, offset: u64) -> Event {
        Event::bare(EventKind::Ack, shard, offset)
    }

    pub fn visibility(shard: u32, offset: u64, attempt: u32, visible_at_ms: i64) -> Event {
        Event {
            attempt,
            visible_at_ms,
            ..Event::bare(EventKind::Visibility, shard, offset)
        }
    }

    pub fn restore(shard: u32, offset: u64, visible_at_ms: i64) -> Event {
        Event {
            visible_at_ms,
            ..Event::bare(EventKind::Restore, shard, offset)
        }
    }

    fn dead_letter(shard: u32, offset: u64, visible_at_ms: i64) -> Event {
        Event {
            visible_at_ms,
            ..Event::bare(EventKind::DeadLetter, shard, offset)
        }
    }
}

/// Encodes events as one log record.
pub fn encode_batch(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + events.len() * EVENT_BYTES);
    out.push(BATCH_VERSION);
    for e in events {
        out.push(e.kind.code());
        out.extend_from_slice(&e.shard.to_be_bytes());
        out.extend_from_slice(&e.offset.to_be_bytes());
        out.extend_from_slice(&e.attempt.to_be_bytes());
        out.extend_from_slice(&e.receive_count.to_be_bytes());
        out.extend_from_slice(&e.first_receive_ms.to_be_bytes());
        out.extend_from_slice(&e.visible_at_ms.to_be_bytes());
        out.push(u8::from(e.dead));
    }
    out
}

/// Decodes a log record written by `encode_batch`; `None` if it is not one.
pub fn decode_batch(bytes: &[u8]) -> Option<Vec<Event>> {
    let (&version, rest) = bytes.split_first()?;
    if version != BATCH_VERSION || !rest.len().is_multiple_of(EVENT_BYTES) {
        return None;
    }
    rest.chunks_exact(EVENT_BYTES)
        .map(|chunk| {
            let mut r = Reader { bytes: chunk };
            Some(Event {
                kind: EventKind::from_code(r.u8()?)?,
                shard: r.u32()?,
                offset: r.u64()?,
                attempt: r.u32()?,
                receive_count: r.u32()?,
                first_receive_ms: r.i64()?,
                visible_at_ms: r.i64()?,
                dead: r.u8()? == 1,
            })
        })
        .collect()
}

/// A record received and not acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub receive_count: u32,
    /// Bumped by every receive; a receipt handle is valid only for the attempt it names.
    pub attempt: u32,
    pub first_receive_ms: i64,
    /// In flight until then; visible (to the receive path its `dead` flag selects) after.
    pub visible_at_ms: i64,
    pub dead: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardState {
    pub next_offset: u64,
    pub slots: BTreeMap<u64, Slot>,
}

/// What a receipt handle's entry found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The handle names the record's current attempt on the right path.
    Current(Slot),
    /// The record was acknowledged already (acknowledging again succeeds).
    Acknowledged,
    /// The record was received again since (a newer handle exists).
    Stale,
    /// The record is a dead letter and the handle is not one (or the reverse).
    WrongPath,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryState {
    pub shards: BTreeMap<u32, ShardState>,
    /// Live (not dead) slots by when they become visible: (visible at, shard, offset).
    timeline: BTreeSet<(i64, u32, u64)>,
    /// Dead-letter slots, likewise.
    dead_timeline: BTreeSet<(i64, u32, u64)>,
}

impl DeliveryState {
    pub fn n_tracked(&self) -> usize {
        self.timeline.len() + self.dead_timeline.len()
    }

    pub fn n_dead(&self) -> usize {
        self.dead_timeline.len()
    }

    /// The earliest time a record (of either path) becomes visible, if any is in flight.
    pub fn next_visible_ms(&self, dead: bool) -> Option<i64> {
        let timeline = if dead {
            &self.dead_timeline
        } else {
            &self.timeline
        };
        timeline.first().map(|(t, _, _)| *t)
    }

    fn index(&mut self, shard: u32, offset: u64, slot: &Slot) {
        let timeline = if slot.dead {
            &mut self.dead_timeline
        } else {
            &mut self.timeline
        };
        timeline.insert((slot.visible_at_ms, shard, offset));
    }

    fn unindex(&mut self, shard: u32, offset: u64, slot: &Slot) {
        let timeline = if slot.dead {
            &mut self.dead_timeline
        } else {
            &mut self.timeline
        };
        timeline.remove(&(slot.visible_at_ms, shard, offset));
    }

    /// Starts tracking a shard at `start_offset` (no-op if tracked).
    pub fn ensure_shard(&mut self, shard: u32, start_offset: u64) -> &mut ShardState {
        self.shards.entry(shard).or_insert_with(|| ShardState {
            next_offset: start_offset,
            slots: BTreeMap::new(),
        })
    }

    /// Forgets records below `start_offset` (trimmed by retention: no longer delivered).
    pub fn trim(&mut self, shard: u32, start_offset: u64) {
        let Some(state) = self.shards.get_mut(&shard) else {
            return;
        };
        state.next_offset = state.next_offset.max(start_offset);
        let kept = state.slots.split_off(&start_offset);
        let dropped = std::mem::replace(&mut state.slots, kept);
        for (offset, slot) in dropped {
            self.unindex(shard, offset, &slot);
        }
    }

    /// Forgets a shard entirely (it left the stream).
    pub fn forget_shard(&mut self, shard: u32) {
        if let Some(state) = self.shards.remove(&shard) {
            for (offset, slot) in state.slots {
                self.unindex(shard, offset, &slot);
            }
        }
    }

    pub fn slot(&self, shard: u32, offset: u64) -> Option<Slot> {
        self.shards.get(&shard)?.slots.get(&offset).copied()
    }

    /// What a receipt handle naming (shard, offset, attempt, dead) refers to now.
    pub fn check(&self, shard: u32, offset: u64, attempt: u32, dead: bool) -> Check {
        match self.slot(shard, offset) {
            None => Check::Acknowledged,
            Some(slot) if slot.attempt != attempt => Check::Stale,
            Some(slot) if slot.dead != dead => Check::WrongPath,
            Some(slot) => Check::Current(slot),
        }
    }

    /// The lease event for receiving a tracked record (or, with `slot` None, a record
    /// received for the first time).
    pub fn lease_event(
        shard: u32,
        offset: u64,
        slot: Option<Slot>,
        now_ms: i64,
        visible_at_ms: i64,
        dead: bool,
    ) -> Event {
        let (receive_count, attempt, first_receive_ms) = match slot {
            // A restored record keeps its first receive time; only its count starts over.
            Some(s) => (
                s.receive_count.saturating_add(1),
                s.attempt.saturating_add(1),
                if s.first_receive_ms == NEVER_RECEIVED_MS {
                    now_ms
                } else {
                    s.first_receive_ms
                },
            ),
            None => (1, 1, now_ms),
        };
        Event {
            kind: EventKind::Lease,
            shard,
            offset,
            attempt,
            receive_count,
            first_receive_ms,
            visible_at_ms,
            dead,
        }
    }

    /// Turns live records whose visibility ended after `max_receive_count` receives into
    /// dead letters (at most `DEAD_LETTERS_PER_CALL_MAX`, looking at most at
    /// `DEAD_LETTER_SCAN_MAX` due records); returns their events. Both receive paths run
    /// it first, so a dead letter shows up on the dead-letter path without a live receive.
    pub fn sweep_dead_letters(
        &mut self,
        now_ms: i64,
        max_receive_count: Option<u32>,
    ) -> Vec<Event> {
        let Some(max) = max_receive_count else {
            return Vec::new();
        };
        let exhausted: Vec<(u32, u64)> = self
            .timeline
            .range(..(now_ms.saturating_add(1), 0, 0))
            .take(DEAD_LETTER_SCAN_MAX)
            .filter(|(_, shard, offset)| {
                self.slot(*shard, *offset)
                    .is_some_and(|slot| slot.receive_count >= max)
            })
            .take(DEAD_LETTERS_PER_CALL_MAX)
            .map(|(_, shard, offset)| (*shard, *offset))
            .collect();
        exhausted
            .into_iter()
            .map(|(shard, offset)| {
                let event = Event::dead_letter(shard, offset, now_ms);
                self.apply(&event);
                event
            })
            .collect()
    }

    /// After replaying a log: records of `shard` in `[from_offset, next_offset)` that no
    /// replayed event mentions were reserved by a receive whose lease never reached the
    /// disk (concurrent receives append in any order, so a later reservation can be
    /// durable while an earlier one is not). They were never acknowledged, so they get a
    /// visible, never-received slot instead of passing for acknowledged. `seen` holds the
    /// offsets of `shard` that replayed first leases named.
    pub fn fill_holes(&mut self, shard: u32, from_offset: u64, seen: &BTreeSet<u64>) -> usize {
        let Some(state) = self.shards.get(&shard) else {
            return 0;
        };
        let holes: Vec<u64> = (from_offset..state.next_offset)
            .filter(|offset| !seen.contains(offset) && !state.slots.contains_key(offset))
            .collect();
        for &offset in &holes {
            let slot = Slot {
                receive_count: 0,
                attempt: 0,
                first_receive_ms: NEVER_RECEIVED_MS,
                visible_at_ms: 0,
                dead: false,
            };
            if let Some(state) = self.shards.get_mut(&shard) {
                state.slots.insert(offset, slot);
            }
            self.index(shard, offset, &slot);
        }
        holes.len()
    }

    /// Takes records visible at `now_ms` on one path, oldest visibility first, up to
    /// `limit`. On the live path a record received `max_receive_count` times becomes a
    /// dead letter instead (its event is returned with the chosen records).
    pub fn take_visible(
        &mut self,
        now_ms: i64,
        limit: usize,
        dead: bool,
        max_receive_count: Option<u32>,
    ) -> (Vec<(u32, u64, Slot)>, Vec<Event>) {
        let mut chosen = Vec::new();
        let mut dead_letters = Vec::new();
        let timeline = if dead {
            &self.dead_timeline
        } else {
            &self.timeline
        };
        let due: Vec<(i64, u32, u64)> = timeline
            .range(..(now_ms.saturating_add(1), 0, 0))
            .take(limit + DEAD_LETTERS_PER_CALL_MAX)
            .copied()
            .collect();
        for (_, shard, offset) in due {
            if chosen.len() >= limit {
                break;
            }
            let Some(slot) = self.slot(shard, offset) else {
                continue;
            };
            let exhausted = max_receive_count.is_some_and(|max| slot.receive_count >= max);
            if !dead && exhausted {
                if dead_letters.len() < DEAD_LETTERS_PER_CALL_MAX {
                    let event = Event::dead_letter(shard, offset, now_ms);
                    self.apply(&event);
                    dead_letters.push(event);
                }
                continue;
            }
            chosen.push((shard, offset, slot));
        }
        (chosen, dead_letters)
    }

    /// Applies one event. Events about records no longer tracked (acknowledged since) are
    /// ignored, except a first lease, which starts tracking its record.
    pub fn apply(&mut self, event: &Event) {
        let (shard, offset) = (event.shard, event.offset);
        let existing = self.slot(shard, offset);
        match event.kind {
            EventKind::Lease => {
                // A re-receive of a record that is no longer tracked lost a race with its
                // acknowledgement: the acknowledgement wins.
                if existing.is_none() && event.receive_count != 1 {
                    return;
                }
                if let Some(old) = existing {
                    self.unindex(shard, offset, &old);
                }
                let slot = Slot {
                    receive_count: event.receive_count,
                    attempt: event.attempt,
                    first_receive_ms: event.first_receive_ms,
                    visible_at_ms: event.visible_at_ms,
                    dead: event.dead,
                };
                let state = self.ensure_shard(shard, offset);
                state.next_offset = state.next_offset.max(offset.saturating_add(1));
                state.slots.insert(offset, slot);
                self.index(shard, offset, &slot);
            }
            EventKind::Ack => {
                if let Some(old) = existing {
                    self.unindex(shard, offset, &old);
                    if let Some(state) = self.shards.get_mut(&shard) {
                        state.slots.remove(&offset);
                    }
                }
            }
            EventKind::Visibility | EventKind::DeadLetter | EventKind::Restore => {
                let Some(old) = existing else {
                    return;
                };
                if event.kind == EventKind::Visibility && old.attempt != event.attempt {
                    return;
                }
                let mut slot = old;
                slot.visible_at_ms = event.visible_at_ms;
                match event.kind {
                    EventKind::DeadLetter => slot.dead = true,
                    EventKind::Restore => {
                        slot.dead = false;
                        slot.receive_count = 0;
                    }
                    _ => {}
                }
                self.unindex(shard, offset, &old);
                if let Some(state) = self.shards.get_mut(&shard) {
                    state.slots.insert(offset, slot);
                }
                self.index(shard, offset, &slot);
            }
        }
    }

    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.n_tracked() * SLOT_BYTES);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&(self.shards.len() as u32).to_be_bytes());
        for (index, shard) in &self.shards {
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&shard.next_offset.to_be_bytes());
            out.extend_from_slice(&(shard.slots.len() as u32).to_be_bytes());
            for (offset, slot) in &shard.slots {
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&slot.receive_count.to_be_bytes());
                out.extend_from_slice(&slot.attempt.to_be_bytes());
                out.extend_from_slice(&slot.first_receive_ms.to_be_bytes());
                out.extend_from_slice(&slot.visible_at_ms.to_be_bytes());
                out.push(u8::from(slot.dead));
            }
        }
        out
    }

    /// Decodes a snapshot written by `encode_snapshot` (empty bytes: an empty state).
    pub fn decode_snapshot(bytes: &[u8]) -> Option<DeliveryState> {
        let mut state = DeliveryState::default();
        if bytes.is_empty() {
            return Some(state);
        }
        let mut r = Reader { bytes };
        if r.u8()? != SNAPSHOT_VERSION {
            return None;
        }
        let n_shards = r.u32()?;
        for _ in 0..n_shards {
            let index = r.u32()?;
            let next_offset = r.u64()?;
            let n_slots = r.u32()?;
            state.ensure_shard(index, next_offset);
            for _ in 0..n_slots {
                let offset = r.u64()?;
                let slot = Slot {
                    receive_count: r.u32()?,
                    attempt: r.u32()?,
                    first_receive_ms: r.i64()?,
                    visible_at_ms: r.i64()?,
                    dead: r.u8()? == 1,
                };
                state.shards.get_mut(&index)?.slots.insert(offset, slot);
                state.index(index, offset, &slot);
            }
        }
        r.bytes.is_empty().then_some(state)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = tail;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(state: &mut DeliveryState, shard: u32, offset: u64, now: i64, until: i64) -> Event {
        let slot = state.slot(shard, offset);
        let event = DeliveryState::lease_event(shard, offset, slot, now, until, false);
        state.apply(&event);
        event
    }

    #[test]
    fn receive_expire_redeliver_dead_letter_restore_ack() {
        let mut state = DeliveryState::default();
        state.ensure_shard(0, 5);
        let first = lease(&mut state, 0, 5, 100, 200);
        assert_eq!((first.receive_count, first.attempt), (1, 1));
        assert_eq!(state.shards[&0].next_offset, 6);
        // In flight: nothing visible before 200.
        assert_eq!(state.take_visible(150, 10, false, Some(2)).0.len(), 0);
        let (chosen, dead) = state.take_visible(200, 10, false, Some(2));
        assert_eq!(chosen.len(), 1);
        assert!(dead.is_empty());
        let second = lease(&mut state, 0, 5, 200, 300);
        assert_eq!((second.receive_count, second.first_receive_ms), (2, 100));
        assert_eq!(state.check(0, 5, 1, false), Check::Stale);
        // Received twice with max 2: it becomes a dead letter when the lease ends.
        let (chosen, dead) = state.take_visible(300, 10, false, Some(2));
        assert!(chosen.is_empty());
        assert_eq!(dead.len(), 1);
        assert_eq!(state.n_dead(), 1);
        let (chosen, _) = state.take_visible(300, 10, true, Some(2));
        assert_eq!(chosen.len(), 1);
        let dlq = DeliveryState::lease_event(0, 5, state.slot(0, 5), 300, 400, true);
        state.apply(&dlq);
        assert!(matches!(
            state.check(0, 5, dlq.attempt, true),
            Check::Current(_)
        ));
        assert_eq!(state.check(0, 5, dlq.attempt, false), Check::WrongPath);
        state.apply(&Event::restore(0, 5, 300));
        assert_eq!(
            state.slot(0, 5).map(|s| (s.dead, s.receive_count)),
            Some((false, 0))
        );
        let (chosen, _) = state.take_visible(300, 10, false, Some(2));
        assert_eq!(chosen.len(), 1);
        state.apply(&Event::ack(0, 5));
        assert_eq!(state.check(0, 5, 9, false), Check::Acknowledged);
        assert_eq!(state.n_tracked(), 0);
    }

    #[test]
    fn late_re_lease_loses_to_ack_and_first_lease_always_tracks() {
        let mut state = DeliveryState::default();
        let first = lease(&mut state, 1, 0, 0, 10);
        let again = DeliveryState::lease_event(1, 0, state.slot(1, 0), 20, 30, false);
        state.apply(&Event::ack(1, 0));
        state.apply(&again);
        assert_eq!(state.n_tracked(), 0);
        // Replay in another order: first leases of higher offsets before lower ones.
        let mut replay = DeliveryState::default();
        replay.apply(&DeliveryState::lease_event(1, 7, None, 0, 10, false));
        replay.apply(&first);
        assert_eq!(replay.shards[&1].next_offset, 8);
        assert_eq!(replay.n_tracked(), 2);
    }

    #[test]
    fn a_reservation_lost_in_a_crash_is_a_hole_not_an_acknowledgement() {
        // Receives reserved 0..2 and 2..4; only the second one's leases reached the disk,
        // and offset 3 was acknowledged.
        let mut replay = DeliveryState::default();
        replay.ensure_shard(0, 0);
        let mut seen = BTreeSet::new();
        for offset in [2, 3] {
            replay.apply(&DeliveryState::lease_event(0, offset, None, 5, 50, false));
            seen.insert(offset);
        }
        replay.apply(&Event::ack(0, 3));
        assert_eq!(replay.fill_holes(0, 0, &seen), 2);
        let (due, _) = replay.take_visible(10, 10, false, Some(6));
        assert_eq!(
            due.iter().map(|(_, o, _)| *o).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let lease = DeliveryState::lease_event(0, 0, replay.slot(0, 0), 10, 60, false);
        assert_eq!((lease.receive_count, lease.first_receive_ms), (1, 10));
        assert_eq!(replay.check(0, 3, 1, false), Check::Acknowledged);
    }

    #[test]
    fn trim_and_snapshot_round_trip() {
        let mut state = DeliveryState::default();
        for offset in 0..10 {
            lease(&mut state, 3, offset, 0, 50 + offset as i64);
        }
        state.apply(&Event::ack(3, 4));
        state.trim(3, 2);
        assert_eq!(state.n_tracked(), 7);
        let bytes = state.encode_snapshot();
        assert_eq!(DeliveryState::decode_snapshot(&bytes), Some(state.clone()));
        assert_eq!(
            DeliveryState::decode_snapshot(&bytes[..bytes.len() - 1]),
            None
        );
        assert_eq!(
            DeliveryState::decode_snapshot(&[]),
            Some(DeliveryState::default())
        );
        let events = vec![
            Event::ack(1, 2),
            DeliveryState::lease_event(4, 5, None, 6, 7, true),
        ];
        assert_eq!(decode_batch(&encode_batch(&events)), Some(events));
        assert_eq!(decode_batch(&[2]), None);
    }
}
