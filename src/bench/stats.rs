//! Small measurement helpers shared by the benchmark parts: medians, percentiles, resident
//! memory from `/proc/self/status`, and wall-clock stamps in microseconds.
//!
//! ```text
//!   repeated runs ──median()──> one number per configuration
//!   latency samples ──percentile(p)──> p50 / p99 / max
//!   /proc/self/status VmRSS ──rss_bytes()──> resident set size
//!   getrusage(self) + /proc/stat ──CpuMeter──> our CPU time, and the CPU other processes used meanwhile
//!   the same, once a second on a thread ──CpuSeries──> cores used in each second (ours, the broker's)
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

/// Median of `v` (mean of the two middle values for an even count); `NaN` when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The `p`-quantile (0..=1, nearest rank) of already sorted values; `NaN` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Resident set size of this process in bytes (`VmRSS`), or 0 where `/proc` is unavailable.
pub fn rss_bytes() -> u64 {
    status_kb("VmRSS:") * 1024
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU used during a measurement: by this process, and by everything else on the machine.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CpuUsage {
    /// Wall time, s.
    pub wall_s: f64,
    /// CPU time of this process (user + system, all threads), s.
    pub self_cpu_s: f64,
    /// CPU time of other processes (machine busy time minus ours), in cores on average.
    pub others_cores: f64,
    /// Of which the local broker process (see [`set_broker`]), in cores; `NaN` if none.
    pub broker_cores: f64,
    /// Minor page faults of this process (first touches of memory the allocator took from or gave
    /// back to the kernel).
    #[serde(default)]
    pub minor_faults: u64,
}

/// Starts a CPU measurement; [`CpuMeter::stop`] ends it.
#[derive(Debug)]
pub struct CpuMeter {
    start: std::time::Instant,
    self_cpu: f64,
    faults: u64,
    busy: f64,
    broker: Option<(i32, f64)>,
}

/// CPU seconds used so far by process `pid` (`/proc/<pid>/stat` utime + stime).
fn process_cpu_s(pid: i32) -> f64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(')').next()?;
            let v: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state(0) ... utime(11) stime(12).
            Some((v.get(11)?.parse::<f64>().ok()? + v.get(12)?.parse::<f64>().ok()?) / hz)
        })
        .unwrap_or(f64::NAN)
}

/// The pid of a running process whose command name is `name` and whose command line contains
/// `arg` (e.g. the broker's port).
pub fn find_process(name: &str, arg: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        if std::fs::read_to_string(e.path().join("comm")).ok()?.trim() != name {
            return None;
        }
        let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
        cmd.contains(arg).then_some(pid)
    })
}

/// The local broker to account CPU to: a `tansu` process listening on the port of `brokers`.
pub fn set_broker(brokers: &str) {
    let port = brokers.split(',').next().and_then(|b| b.rsplit(':').next()).unwrap_or("9092");
    let pid = find_process("tansu", &format!(":{port}")).unwrap_or(-1);
    BROKER_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
}

static BROKER_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// CPU seconds (user + system) and minor page faults of this process so far.
fn self_usage() -> (f64, u64) {
    // SAFETY: getrusage writes into the zeroed struct we pass; no other memory is touched.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return (f64::NAN, 0);
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    (t(u.ru_utime) + t(u.ru_stime), u64::try_from(u.ru_minflt).unwrap_or(0))
}

/// Busy CPU seconds of the whole machine since boot (`/proc/stat`, all but idle and iowait).
fn machine_busy_s() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?;
            let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal ...
            (v.len() >= 8).then(|| (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz)
        })
        .unwrap_or(f64::NAN)
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start() -> Self {
        let (self_cpu, faults) = self_usage();
        CpuMeter {
            start: std::time::Instant::now(),
            self_cpu,
            faults,
            busy: machine_busy_s(),
            broker: Some(BROKER_PID.load(std::sync::atomic::Ordering::Relaxed))
                .filter(|p| *p > 0)
                .map(|p| (p, process_cpu_s(p))),
        }
    }

    /// Ends the measurement.
    pub fn stop(&self) -> CpuUsage {
        let wall_s = self.start.elapsed().as_secs_f64();
        let (cpu, faults) = self_usage();
        let self_cpu = cpu - self.self_cpu;
        let busy = machine_busy_s() - self.busy;
        CpuUsage {
            wall_s,
            self_cpu_s: self_cpu,
            others_cores: ((busy - self_cpu) / wall_s).max(0.0),
            broker_cores: self.broker.map_or(f64::NAN, |(p, c)| (process_cpu_s(p) - c) / wall_s),
            minor_faults: faults.saturating_sub(self.faults),
        }
    }
}

/// CPU used in each second of a run, sampled on a thread of its own: by this process and by the
/// local broker (see [`set_broker`]). A setup whose load is constant but whose CPU grows second by
/// second is one that gets more expensive as it runs (the test broker's fetches do: BENCHMARKS.md).
pub struct CpuSeries {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<SecondCpu>>>,
}

/// Cores used in one second of a [`CpuSeries`].
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct SecondCpu {
    /// This process (all threads), cores.
    pub self_cores: f64,
    /// The local broker process, cores; `NaN` if none was found.
    pub broker_cores: f64,
}

impl CpuSeries {
    /// Starts sampling now.
    pub fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut meter = CpuMeter::start();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // Sleep in small steps so that stopping is prompt.
                if meter.start.elapsed() < std::time::Duration::from_secs(1) {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                let u = meter.stop();
                meter = CpuMeter::start();
                out.push(SecondCpu {
                    self_cores: u.self_cpu_s / u.wall_s,
                    broker_cores: u.broker_cores,
                });
            }
            out
        });
        CpuSeries {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the cores of each whole second sampled.
    pub fn stop(mut self) -> Vec<SecondCpu> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for CpuSeries {
    /// A series dropped without [`CpuSeries::stop`] (a run that failed) ends its thread too.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Microseconds since the Unix epoch (wall clock, comparable across threads and processes).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A short description of the machine: `(cores, cpu model, memory in GiB)`.
pub fn machine() -> (usize, String, f64) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    (cores, cpu, mem)
}

/// One-minute load average (other work on the machine while the benchmark ran).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_series_samples_each_second_and_stops() {
        let series = CpuSeries::start();
        // Keep this thread busy for a little over two seconds.
        let t = std::time::Instant::now();
        let mut x = 1u64;
        while t.elapsed() < std::time::Duration::from_millis(2200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let stopping = std::time::Instant::now();
        let seconds = series.stop();
        assert!(stopping.elapsed() < std::time::Duration::from_millis(500), "stops promptly");
        // Two whole seconds; one if the sampler was kept off the cores for a while.
        assert!((1..=2).contains(&seconds.len()), "{seconds:?}");
        for s in &seconds {
            // A spinning thread: about one core (less if the machine is busy, never none).
            assert!(s.self_cores > 0.2 && s.self_cores < 4.0, "{seconds:?}");
        }
        // Dropped without stop: its thread ends too (nothing to observe but that it returns).
        drop(CpuSeries::start());
    }

    #[test]
    fn cpu_meter_counts_the_page_faults_of_fresh_memory() {
        // A fresh anonymous mapping (not the allocator's, which may hand back memory already
        // touched by another test), written page by page: each 4 KiB page is a first touch.
        const LEN: usize = 32 << 20;
        // SAFETY: a private anonymous mapping of LEN bytes, written only inside its bounds and
        // unmapped before the test ends.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let meter = CpuMeter::start();
        for i in (0..LEN).step_by(4096) {
            // SAFETY: i < LEN, inside the mapping.
            unsafe { std::ptr::write_volatile((p as *mut u8).add(i), 1) };
        }
        let u = meter.stop();
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(p, LEN) };
        // 8,192 pages (fewer if the kernel backs some with huge pages; never none).
        assert!(u.minor_faults >= 8, "{u:?}");
        assert!(u.self_cpu_s >= 0.0 && u.wall_s > 0.0, "{u:?}");
        let idle = CpuMeter::start().stop();
        assert!(idle.minor_faults < u.minor_faults, "{idle:?} vs {u:?}");
    }

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
    }

    #[test]
    fn rss_is_readable_on_linux() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_bytes() > 0);
        }
    }
}
