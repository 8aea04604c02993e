//! The workloads, and the driver that runs a request loop on N connections.
//!
//! [`drive`] runs one [`Op`] on `connections` tasks, each with its own connection, either
//! closed loop (each task sends its next request when the previous one answered; latency from
//! the actual send) or open loop at a fixed rate (a shared [`Schedule`]; latency from the
//! intended send, see `latency`). Only calls that start inside the measured window (after
//! the warm-up) are counted. Each workload module builds its streams, calls `drive` or its
//! own consumers, and fills a `Report`.

pub mod analytics;
pub mod e2e;
pub mod get_drain;
pub mod many_shards;
pub mod put_record;
pub mod put_records;
pub mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::api::CallError;
use crate::latency::{Schedule, now_ns};
use crate::report::Tally;
use crate::setup::Ctx;

/// Pause after a transport error so a dead server is not hammered in a hot loop.
const TRANSPORT_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// How long a closed loop may run past its end while fewer calls than connections have
/// been counted (a server whose calls take longer than the whole window, like kinesis-mock
/// with 500-record batches, still gets a measurement).
const SLOW_SERVER_GRACE: Duration = Duration::from_secs(60);

/// What one successful call carried.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub records: u64,
    pub bytes: u64,
    pub failed_records: u64,
}

/// One kind of request, repeated by the driver.
pub trait Op: Send + Sync + 'static {
    /// Per-connection state (a cursor, iterators, a random source).
    type State: Send + 'static;
    fn operation(&self) -> &'static str;
    fn state(&self, worker_idx: usize) -> Self::State;
    /// The body of the next request; `start_ns` is when it counts as sent.
    fn request(&self, state: &mut Self::State, start_ns: u64) -> Bytes;
    /// Read a successful response.
    fn outcome(&self, state: &mut Self::State, response: &Bytes) -> Outcome;
}

/// How to drive an op.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub connections: usize,
    /// Calls starting before this are warm-up and not counted.
    pub measure_from_ns: u64,
    /// No call starts after this.
    pub end_ns: u64,
    /// Open loop at this many calls per second; closed loop when `None`.
    pub rate_per_s: Option<f64>,
    /// Stop after this many calls in all (warm-up included).
    pub calls_max: Option<u64>,
}

impl Plan {
    /// Closed loop, `warmup` then `duration`, from now.
    pub fn closed(connections: usize, warmup: Duration, duration: Duration) -> Plan {
        let now = now_ns();
        let measure_from_ns = now + warmup.as_nanos() as u64;
        Plan {
            connections: connections.max(1),
            measure_from_ns,
            end_ns: measure_from_ns + duration.as_nanos() as u64,
            rate_per_s: None,
            calls_max: None,
        }
    }

    /// Seconds from the first counted call's start to the last counted completion: every
    /// connection was busy throughout, so counted calls over this time is the rate.
    pub fn elapsed_s(&self, tally: &Tally) -> f64 {
        if tally.calls == 0 && tally.errors.is_empty() {
            return 0.0;
        }
        tally.last_ns.saturating_sub(tally.first_ns) as f64 / 1e9
    }
}

/// Run `op` according to `plan`; returns the merged tally and each connection's state.
pub async fn drive<O: Op>(ctx: &Ctx, op: Arc<O>, plan: Plan) -> (Tally, Vec<O::State>) {
    let tickets = Arc::new(AtomicU64::new(0));
    let counted_calls = Arc::new(AtomicU64::new(0));
    let grace_end_ns = plan.end_ns + SLOW_SERVER_GRACE.as_nanos() as u64;
    let schedule = plan.rate_per_s.map(|rate| Schedule::new(now_ns(), rate));
    let mut tasks = tokio::task::JoinSet::new();
    for worker_idx in 0..plan.connections {
        let op = op.clone();
        let tickets = tickets.clone();
        let counted_calls = counted_calls.clone();
        let mut connection = ctx.connection();
        tasks.spawn(async move {
            let mut state = op.state(worker_idx);
            let mut tally = Tally::default();
            loop {
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                if plan.calls_max.is_some_and(|max| ticket >= max) {
                    break;
                }
                let start_ns = match schedule {
                    None => now_ns(),
                    Some(schedule) => {
                        let taken_ns = now_ns();
                        let intended_ns = schedule.intended_ns(ticket);
                        // Past the end with requests still due: the server could not keep
                        // up. They are not sent (counted as `unsent` below).
                        if intended_ns >= plan.end_ns || taken_ns >= plan.end_ns {
                            break;
                        }
                        if intended_ns > taken_ns {
                            tokio::time::sleep(Duration::from_nanos(intended_ns - taken_ns)).await;
                        }
                        schedule.start_ns(ticket, taken_ns, now_ns())
                    }
                };
                if start_ns >= plan.end_ns {
                    let too_few = schedule.is_none()
                        && counted_calls.load(Ordering::Relaxed) < plan.connections as u64;
                    if !too_few || start_ns >= grace_end_ns {
                        break;
                    }
                }
                let body = op.request(&mut state, start_ns);
                let result = connection.call(op.operation(), body).await;
                let done_ns = now_ns();
                let counted = start_ns >= plan.measure_from_ns;
                if counted {
                    counted_calls.fetch_add(1, Ordering::Relaxed);
                    tally.first_ns = tally.first_ns.min(start_ns);
                    tally.last_ns = tally.last_ns.max(done_ns);
                }
                match result {
                    Ok(response) => {
                        let outcome = op.outcome(&mut state, &response);
                        if counted {
                            tally.calls += 1;
                            tally.records += outcome.records;
                            tally.bytes += outcome.bytes;
                            tally.failed_records += outcome.failed_records;
                            tally.latencies.record_ns(done_ns - start_ns);
                        }
                    }
                    Err(error) => {
                        if counted {
                            tally.error(error.label());
                        }
                        if matches!(error, CallError::Transport(_)) {
                            tokio::time::sleep(TRANSPORT_ERROR_PAUSE).await;
                        }
                    }
                }
            }
            (tally, state)
        });
    }
    // The server's CPU time at the start of the measured window and when the loop ends.
    let cpu_at_start = ctx.server_pid.map(|pid| {
        tokio::spawn(async move {
            let wait_ns = plan.measure_from_ns.saturating_sub(now_ns());
            tokio::time::sleep(Duration::from_nanos(wait_ns)).await;
            crate::rss::cpu_seconds(pid)
        })
    });
    let mut total = Tally::default();
    let mut states = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((tally, state)) = joined {
            total.merge(&tally);
            states.push(state);
        }
    }
    if let Some(cpu_at_start) = cpu_at_start
        && let (Ok(Some(start)), Some(end)) = (cpu_at_start.await, ctx.server_cpu_s())
    {
        total.server_cpu_s = Some(end - start);
    }
    if let Some(schedule) = schedule {
        let due = schedule.due_between(plan.measure_from_ns, plan.end_ns);
        let sent = total.calls + total.errors.values().sum::<u64>();
        if due > sent {
            total.errors.insert("unsent".to_owned(), due - sent);
        }
    }
    (total, states)
}

/// Shared flags of every workload that drives a loop.
#[derive(clap::Args, Debug, Clone)]
pub struct Timing {
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

impl Timing {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.0))
    }
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }
}

/// How long to wait for a stream to become ACTIVE.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);
