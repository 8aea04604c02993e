//! Model-based property test of the shard map: random sequences of SplitShard, MergeShards,
//! UpdateShardCount and PutRecord (with explicit hash keys) run against the real service
//! (real log and catalog in a temporary directory) and against a plain in-memory model of
//! open hash-key ranges. After every step:
//! - the call succeeded exactly when the model says it is allowed, with AWS's error kind
//!   otherwise, and a refused call changed nothing;
//! - the open shards are the model's, and they partition the whole key space [0, 2^128);
//! - lineage holds: a split child lies inside its parent, a merged child is exactly the union
//!   of its two parents, and every parent is closed with an ending sequence number;
//! - a record went to the open shard whose range holds its hash key, and its sequence
//!   number is above every earlier one in that shard and in all of that shard's ancestors.
//!
//! Restarts are covered too: at random points the service is dropped and reopened on the
//! same directory, and the map must come back unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use millrace_catalog::Catalog;
use millrace_log::{Clock, Log, LogConfig, ManualClock};
use millrace_streams::hashing::uniform_ranges;
use millrace_streams::{Error, RequestContext, Streams, StreamsConfig};
use millrace_wire::ErrorKind;
use millrace_wire::kinesis::{self as k, Request, Response};
use proptest::prelude::*;

const STREAM: &str = "shard-map";
const DAY_MS: i64 = 24 * 3_600_000;
/// Open shards the generated operations stay under (the account limit is far above).
const OPEN_SHARDS_MAX: usize = 24;

#[derive(Clone, Debug)]
enum Op {
    /// Split the n-th open shard (by key order) at a point chosen by `frac`.
    Split {
        pick: usize,
        frac: u64,
    },
    /// Merge the n-th open shard with its right neighbour, or (`far`) with one that is not
    /// adjacent, which must be refused.
    Merge {
        pick: usize,
        far: bool,
    },
    UpdateShardCount {
        target: u32,
    },
    Put {
        hash: u128,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), any::<u64>()).prop_map(|(pick, frac)| Op::Split { pick, frac }),
        3 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(pick, far)| Op::Merge { pick, far }),
        1 => (1u32..=20).prop_map(|target| Op::UpdateShardCount { target }),
        6 => any::<u128>().prop_map(|hash| Op::Put { hash }),
        1 => Just(Op::Restart),
    ]
}

/// The model: open shards by index, each with its range; the next index the service will
/// give a new shard.
#[derive(Clone, Debug, Default)]
struct Model {
    open: BTreeMap<u32, (u128, u128)>,
}

impl Model {
    fn sorted(&self) -> Vec<(u32, u128, u128)> {
        let mut v: Vec<_> = self.open.iter().map(|(&i, &(s, e))| (i, s, e)).collect();
        v.sort_by_key(|x| x.1);
        v
    }
    fn owner(&self, hash: u128) -> u32 {
        self.open
            .iter()
            .find(|(_, (s, e))| *s <= hash && hash <= *e)
            .map(|(&i, _)| i)
            .expect("the model's open shards cover the key space")
    }
}

/// Sequence numbers are decimal integers of up to 56 digits: compare them as such.
fn seq_key(seq: &str) -> (usize, String) {
    (seq.len(), seq.to_string())
}

fn shard_index(id: &str) -> u32 {
    id.strip_prefix("shardId-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad shard id {id}"))
}

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    streams: Option<Streams>,
    log: Option<Log>,
    ctx: RequestContext,
}

impl Harness {
    fn open(&mut self) {
        let clock: Arc<dyn Clock> = self.clock.clone();
        let log = Log::open(LogConfig::new(self.dir.path().join("log")), clock.clone())
            .expect("log opens");
        let catalog =
            Arc::new(Catalog::open(&self.dir.path().join("catalog.redb")).expect("catalog opens"));
        let config = StreamsConfig {
            enforce_shard_throughput: false,
            rng_seed: Some(7),
            ..StreamsConfig::default()
        };
        self.log = Some(log.clone());
        self.streams = Some(Streams::open(config, catalog, log, clock).expect("streams open"));
    }

    /// A clean stop: the service and its catalog dropped, the log shut down (checkpointed).
    fn close(&mut self) {
        self.streams = None;
        if let Some(log) = self.log.take() {
            log.shutdown().expect("log shuts down");
        }
    }

    async fn call(&self, request: Request) -> Result<Response, Error> {
        self.streams
            .as_ref()
            .expect("open")
            .handle(&self.ctx, request)
            .await
    }

    async fn shards(&self) -> Vec<k::Shard> {
        let mut all = Vec::new();
        let mut next_token = None;
        loop {
            let input = k::ListShardsInput {
                stream_name: next_token.is_none().then(|| STREAM.to_string()),
                next_token: next_token.clone(),
                ..Default::default()
            };
            let Ok(Response::ListShards(out)) = self.call(Request::ListShards(input)).await else {
                panic!("ListShards failed");
            };
            all.extend(out.shards.unwrap_or_default());
            match out.next_token {
                Some(token) => next_token = Some(token),
                None => return all,
            }
        }
    }
}

fn kind(error: &Error) -> ErrorKind {
    error.to_aws().0
}

async fn run(ops: Vec<Op>, initial: u32) {
    let mut h = Harness {
        dir: tempfile::tempdir().expect("temp dir"),
        clock: Arc::new(ManualClock::new(1_800_000_000_000)),
        streams: None,
        log: None,
        ctx: RequestContext {
            account: "000000000000".into(),
            region: "us-east-1".into(),
            request_id: "model".into(),
            principal: None,
        },
    };
    h.open();
    h.call(Request::CreateStream(k::CreateStreamInput {
        stream_name: STREAM.into(),
        shard_count: Some(initial as i32),
        ..Default::default()
    }))
    .await
    .expect("CreateStream");
    let mut model = Model::default();
    for (i, (s, e)) in uniform_ranges(initial).into_iter().enumerate() {
        model.open.insert(i as u32, (s, e));
    }
    // Highest sequence number seen per shard index (records and shard starts).
    let mut highest: BTreeMap<u32, (usize, String)> = BTreeMap::new();

    for op in ops {
        // Time moves on between calls (a reshard's children get a later epoch second).
        h.clock.advance(1_500);
        let before = h.shards().await;
        match op {
            Op::Split { pick, frac } => {
                let sorted = model.sorted();
                let (index, start, end) = sorted[pick % sorted.len()];
                let width = end - start;
                // Mostly anywhere in the range; sometimes right at the edges AWS refuses.
                let at = match frac % 8 {
                    0 => start.saturating_add(1),
                    1 => end,
                    2 => start.saturating_add(2),
                    _ if width > u128::from(u64::MAX) => start + (width >> 64) * u128::from(frac),
                    _ => start + u128::from(frac) % (width + 1),
                };
                let allowed = at > start.saturating_add(1) && at < end;
                if model.open.len() >= OPEN_SHARDS_MAX {
                    continue;
                }
                let result = h
                    .call(Request::SplitShard(k::SplitShardInput {
                        stream_name: Some(STREAM.into()),
                        shard_to_split: format!("shardId-{index:012}"),
                        new_starting_hash_key: at.to_string(),
                        ..Default::default()
                    }))
                    .await;
                if allowed {
                    result.expect("a valid split succeeds");
                    model.open.remove(&index);
                    // The service names the children in creation order: left, then right.
                    let next = before
                        .iter()
                        .map(|s| shard_index(&s.shard_id))
                        .max()
                        .unwrap_or(0)
                        + 1;
                    model.open.insert(next, (start, at - 1));
                    model.open.insert(next + 1, (at, end));
                } else {
                    let error = result.expect_err("an invalid split is refused");
                    assert_eq!(
                        kind(&error),
                        ErrorKind::InvalidArgumentException,
                        "{error:?}"
                    );
                }
            }
            Op::Merge { pick, far } => {
                let sorted = model.sorted();
                if sorted.len() < 2 || (far && sorted.len() < 3) {
                    continue;
                }
                // Far: two shards with another between them in key order.
                let (i, partner) = if far {
                    let i = pick % (sorted.len() - 2);
                    (i, i + 2)
                } else {
                    let i = pick % (sorted.len() - 1);
                    (i, i + 1)
                };
                let (a, a_start, _) = sorted[i];
                let (b, _, b_end) = sorted[partner];
                let result = h
                    .call(Request::MergeShards(k::MergeShardsInput {
                        stream_name: Some(STREAM.into()),
                        shard_to_merge: format!("shardId-{a:012}"),
                        adjacent_shard_to_merge: format!("shardId-{b:012}"),
                        ..Default::default()
                    }))
                    .await;
                if far {
                    let error =
                        result.expect_err("merging shards that are not adjacent is refused");
                    assert_eq!(
                        kind(&error),
                        ErrorKind::InvalidArgumentException,
                        "{error:?}"
                    );
                } else {
                    result.expect("merging adjacent open shards succeeds");
                    model.open.remove(&a);
                    model.open.remove(&b);
                    let next = before
                        .iter()
                        .map(|s| shard_index(&s.shard_id))
                        .max()
                        .unwrap_or(0)
                        + 1;
                    model.open.insert(next, (a_start, b_end));
                }
            }
            Op::UpdateShardCount { target } => {
                // Past the rolling 24-hour limit of 10 calls: that limit has its own tests.
                h.clock.advance(DAY_MS);
                let current = model.open.len() as u32;
                let allowed =
                    target <= current * 2 && f64::from(target) >= f64::from(current) / 2.0;
                let result = h
                    .call(Request::UpdateShardCount(k::UpdateShardCountInput {
                        stream_name: Some(STREAM.into()),
                        target_shard_count: target as i32,
                        scaling_type: k::ScalingType::UniformScaling,
                        stream_arn: None,
                        stream_id: None,
                    }))
                    .await;
                if allowed {
                    result.expect("a valid UpdateShardCount succeeds");
                    // The new open shards are the uniform layout; learn their indexes.
                    let after = h.shards().await;
                    model.open.clear();
                    for s in after
                        .iter()
                        .filter(|s| s.sequence_number_range.ending_sequence_number.is_none())
                    {
                        let start: u128 = s.hash_key_range.starting_hash_key.parse().expect("key");
                        let end: u128 = s.hash_key_range.ending_hash_key.parse().expect("key");
                        model.open.insert(shard_index(&s.shard_id), (start, end));
                    }
                    let ranges: Vec<(u128, u128)> =
                        model.sorted().iter().map(|x| (x.1, x.2)).collect();
                    assert_eq!(ranges, uniform_ranges(target), "UpdateShardCount's layout");
                } else {
                    let error = result.expect_err("an out-of-range UpdateShardCount is refused");
                    assert_eq!(kind(&error), ErrorKind::LimitExceededException, "{error:?}");
                }
            }
            Op::Put { hash } => {
                let result = h
                    .call(Request::PutRecord(k::PutRecordInput {
                        stream_name: Some(STREAM.into()),
                        partition_key: Some("pk".into()),
                        explicit_hash_key: Some(hash.to_string()),
                        data: bytes::Bytes::from_static(b"x"),
                        ..Default::default()
                    }))
                    .await;
                let Ok(Response::PutRecord(out)) = result else {
                    panic!("PutRecord failed: {result:?}");
                };
                let owner = model.owner(hash);
                assert_eq!(
                    shard_index(&out.shard_id),
                    owner,
                    "hash {hash} routed to the wrong shard"
                );
                let seq = seq_key(&out.sequence_number);
                // Above everything earlier in this shard and in its ancestors.
                let by_index: BTreeMap<u32, &k::Shard> = before
                    .iter()
                    .map(|s| (shard_index(&s.shard_id), s))
                    .collect();
                let mut stack = vec![owner];
                while let Some(i) = stack.pop() {
                    if let Some(prev) = highest.get(&i) {
                        assert!(
                            seq > *prev,
                            "sequence number {seq:?} not above {prev:?} of shard {i}"
                        );
                    }
                    if let Some(shard) = by_index.get(&i) {
                        for p in [&shard.parent_shard_id, &shard.adjacent_parent_shard_id]
                            .into_iter()
                            .flatten()
                        {
                            stack.push(shard_index(p));
                        }
                    }
                }
                highest.insert(owner, seq);
            }
            Op::Restart => {
                h.close();
                h.open();
                let after = h.shards().await;
                assert_eq!(after, before, "the shard map changed across a restart");
            }
        }
        check_map(&h.shards().await, &model);
    }
}

/// The invariants of the map as ListShards shows it.
fn check_map(shards: &[k::Shard], model: &Model) {
    let parse = |s: &k::Shard| -> (u128, u128) {
        (
            s.hash_key_range
                .starting_hash_key
                .parse()
                .expect("start key"),
            s.hash_key_range.ending_hash_key.parse().expect("end key"),
        )
    };
    let mut open: Vec<(u32, u128, u128)> = shards
        .iter()
        .filter(|s| s.sequence_number_range.ending_sequence_number.is_none())
        .map(|s| {
            let (a, b) = parse(s);
            (shard_index(&s.shard_id), a, b)
        })
        .collect();
    open.sort_by_key(|x| x.1);
    assert_eq!(open, model.sorted(), "open shards differ from the model");
    // A partition of the key space: no gap, no overlap.
    assert_eq!(open.first().map(|x| x.1), Some(0));
    assert_eq!(open.last().map(|x| x.2), Some(u128::MAX));
    for pair in open.windows(2) {
        assert_eq!(
            pair[0].2.checked_add(1),
            Some(pair[1].1),
            "gap or overlap in {open:?}"
        );
    }
    let by_id: BTreeMap<&str, &k::Shard> =
        shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    for s in shards {
        let (start, end) = parse(s);
        let Some(parent_id) = &s.parent_shard_id else {
            continue;
        };
        let parent = by_id.get(parent_id.as_str()).expect("the parent is listed");
        assert!(
            parent
                .sequence_number_range
                .ending_sequence_number
                .is_some(),
            "parent {parent_id} still open"
        );
        assert!(
            seq_key(&s.sequence_number_range.starting_sequence_number)
                > seq_key(&parent.sequence_number_range.starting_sequence_number),
            "child {} starts below its parent",
            s.shard_id
        );
        let (ps, pe) = parse(parent);
        match &s.adjacent_parent_shard_id {
            None => assert!(
                ps <= start && end <= pe,
                "split child {} outside its parent",
                s.shard_id
            ),
            Some(adjacent_id) => {
                let adjacent = by_id
                    .get(adjacent_id.as_str())
                    .expect("the adjacent parent is listed");
                assert!(
                    adjacent
                        .sequence_number_range
                        .ending_sequence_number
                        .is_some()
                );
                let (as_, ae) = parse(adjacent);
                assert_eq!(
                    (start, end),
                    (ps.min(as_), pe.max(ae)),
                    "merged child {} is not its parents' union",
                    s.shard_id
                );
                assert!(
                    pe.checked_add(1) == Some(as_) || ae.checked_add(1) == Some(ps),
                    "merged parents not adjacent"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn shard_map_matches_the_model(initial in 1u32..6, ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run(ops, initial));
    }
}
