//! The server's peak resident memory (`/proc/PID/status`) and CPU time (`/proc/PID/stat`).
//!
//! At the start the kernel's high-water mark is reset (`echo 5 > /proc/PID/clear_refs`,
//! allowed for the process owner and root) so the peak belongs to this run, not to earlier
//! workloads; if the reset is refused the peak is since the server started, and the report
//! says so. While the workload runs, `VmHWM` and `VmRSS` are sampled every
//! [`SAMPLE_INTERVAL`], and the largest value seen is the peak. `VmRSS` is also kept once
//! per [`SERIES_INTERVAL`] (at most [`SERIES_LEN_MAX`] points), so a long run shows whether
//! memory stays flat. CPU time (user + system, all threads) lets a run on a busy machine
//! still say how much server work each record cost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
const SERIES_INTERVAL: Duration = Duration::from_secs(1);
const SERIES_LEN_MAX: usize = 4 * 3600;

/// The resident-memory figures of a process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub vm_hwm_kib: u64,
    pub vm_rss_kib: u64,
}

/// Read `VmHWM` and `VmRSS` from the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<Status> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Status {
        vm_hwm_kib: field("VmHWM:")?,
        vm_rss_kib: field("VmRSS:")?,
    })
}

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux x86-64 and
/// arm64).
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds from the text of `/proc/PID/stat`.
pub fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: fields restart after the
    // last ')'. utime and stime are fields 14 and 15, so 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU seconds process `pid` has used (all threads), `None` if it cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn read(pid: u32) -> Option<Status> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// A running sampler.
pub struct Sampler {
    peak_kib: Arc<AtomicU64>,
    series: Arc<Mutex<Vec<(f64, f64)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    pub reset: bool,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let peak_kib = Arc::new(AtomicU64::new(0));
        let series = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let peak_kib = peak_kib.clone();
            let series = series.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let mut next_point = Duration::ZERO;
                loop {
                    if let Some(status) = read(pid) {
                        peak_kib
                            .fetch_max(status.vm_hwm_kib.max(status.vm_rss_kib), Ordering::Relaxed);
                        let elapsed = started.elapsed();
                        if elapsed >= next_point {
                            next_point += SERIES_INTERVAL;
                            if let Ok(mut series) = series.lock()
                                && series.len() < SERIES_LEN_MAX
                            {
                                series.push((
                                    elapsed.as_secs_f64(),
                                    status.vm_rss_kib as f64 / 1024.0,
                                ));
                            }
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(SAMPLE_INTERVAL).await;
                }
            })
        };
        Sampler {
            peak_kib,
            series,
            stop,
            task,
            reset,
        }
    }

    /// Take a last sample; return the peak in MiB (`None` if the process was never read)
    /// and the (seconds, MiB) series of `VmRSS`.
    pub async fn finish(self) -> (Option<f64>, Vec<(f64, f64)>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let peak = match self.peak_kib.load(Ordering::Relaxed) {
            0 => None,
            kib => Some(kib as f64 / 1024.0),
        };
        let series = self.series.lock().map(|s| s.clone()).unwrap_or_default();
        (peak, series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text =
            "Name:\tmillrace\nVmPeak:\t  900000 kB\nVmHWM:\t   52340 kB\nVmRSS:\t   41000 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Status {
                vm_hwm_kib: 52340,
                vm_rss_kib: 41000
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn parses_cpu_times_after_an_awkward_name() {
        let stat =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let status = read(std::process::id());
        assert!(status.is_some_and(|s| s.vm_hwm_kib >= s.vm_rss_kib && s.vm_rss_kib > 0));
    }
}
