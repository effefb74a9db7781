//! How the benchmarks measure: processes pinned to cores and the memory they share, the
//! stopwatch, temporary rings with a paced writer and a busy-spinning reader, loops built in one
//! of their ways of waiting, and what the host did meanwhile.

use hdrhistogram::Histogram;
use std::sync::atomic::AtomicU64;
use tickloop_app::{App, Discard};
use tickloop_ring::sys;
use tickloop_ring::{
    self as ring, Candle, CreateOptions, ReadResult, Reader, ReaderOptions, Start, Writer,
};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, LoopError, Mode, RingSpec};

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

/// A histogram whose pages are already mapped: a fresh one is zeroed memory the kernel maps
/// on first touch, which would be page faults inside the measured loop.
pub(crate) fn touched_histogram() -> Histogram<u64> {
    let mut h = histogram();
    h.reset();
    h
}

pub(crate) fn check_core(core: usize) -> Result<(), String> {
    // SAFETY: sysconf has no preconditions.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize;
    if core < configured {
        Ok(())
    } else {
        Err(format!(
            "core {core} does not exist (this machine has cores 0..{}): pass two with --cpus A,B",
            configured - 1
        ))
    }
}

/// The two cores of `--cpus`, checked: exactly two, different, both on this machine.
pub(crate) fn two_cores(cpus: &[usize]) -> Result<(usize, usize), String> {
    let [a, b] = cpus[..] else {
        return Err(format!("--cpus needs exactly two cores, got {cpus:?}"));
    };
    if a == b {
        return Err("--cpus needs two different cores".into());
    }
    for core in [a, b] {
        check_core(core)?;
    }
    Ok((a, b))
}

/// Run `child` in a forked process pinned to `core`; it must not return.
pub(crate) fn fork_pinned(core: usize, child: impl FnOnce()) -> Result<libc::pid_t, String> {
    // SAFETY: the bench is single-threaded when it forks; the child only touches memory and
    // exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork failed: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // Forked from a thread whose loop blocked SIGINT/SIGTERM (`bench loop`): take them
        // back, so Ctrl-C ends the child too.
        // SAFETY: sigset manipulation on a local set; this process has one thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
        let code = match sys::pin_to_core(core) {
            Ok(()) => {
                child();
                0
            }
            Err(_) => 1,
        };
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Wait for a child; its involuntary context switches (times another task took its core).
/// `what` names it in the error when it failed.
pub(crate) fn reap_counting(pid: libc::pid_t, what: &str) -> Result<i64, String> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on our own child fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(usage.ru_nivcsw)
    } else {
        Err(format!("{what} failed (wait status {status:#x})"))
    }
}

pub(crate) fn reap(pid: libc::pid_t) -> Result<(), String> {
    reap_counting(pid, "a bench child process").map(drop)
}

pub(crate) fn child_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks existence; a zombie still counts until reaped.
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
}

/// One page of anonymous memory shared with forked children, unmapped on drop.
pub(crate) struct SharedPage(*mut libc::c_void);

impl SharedPage {
    pub(crate) fn new() -> Result<SharedPage, String> {
        // SAFETY: a fresh anonymous shared mapping; checked below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(format!("mmap failed: {}", std::io::Error::last_os_error()));
        }
        Ok(SharedPage(page))
    }

    /// The `i`-th 64-byte line's first word (each on its own cache line).
    pub(crate) fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < 64);
        // SAFETY: page-aligned, zero-filled, lives as long as `self`.
        unsafe { &*((self.0 as *const u8).add(i * 64) as *const AtomicU64) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: mapped in `new`.
        unsafe { libc::munmap(self.0, 4096) };
    }
}

/// The bench's stopwatch: the TSC on x86-64 (about 10 ns to read here against 25 ns for
/// clock_gettime, and synchronised across cores where the CPU has constant_tsc and
/// nonstop_tsc), CLOCK_MONOTONIC elsewhere. The same stopwatch times every latency row.
#[inline(always)]
pub(crate) fn stamp() -> i64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions on x86-64.
    unsafe {
        core::arch::x86_64::_rdtsc() as i64
    }
    #[cfg(not(target_arch = "x86_64"))]
    sys::monotonic_ns()
}

/// Nanoseconds in a stopwatch interval (at least 1, for the histogram).
pub(crate) fn stamp_ns(ticks: i64) -> u64 {
    static NS_PER_TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let scale = *NS_PER_TICK.get_or_init(|| {
        if cfg!(not(target_arch = "x86_64")) {
            return 1.0;
        }
        let (t0, c0) = (sys::monotonic_ns(), stamp());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (t1, c1) = (sys::monotonic_ns(), stamp());
        (t1 - t0) as f64 / (c1 - c0).max(1) as f64
    });
    ((ticks.max(0) as f64 * scale) as u64).max(1)
}

/// Spin until the monotonic clock reaches `due`.
#[inline(always)]
pub(crate) fn spin_until(due: i64) {
    while sys::monotonic_ns() < due {
        core::hint::spin_loop();
    }
}

/// Run `f` on a fresh ring of `slots` slots under /dev/shm, removed afterwards.
pub(crate) fn with_temp_ring<T>(
    slots: u64,
    f: impl FnOnce(&std::path::Path) -> Result<T, String>,
) -> Result<T, String> {
    let path = ring::ring_path(&format!("tickloop-bench-{}", std::process::id()))
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&path);
    ring::create(
        &path,
        CreateOptions {
            slots,
            ..CreateOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let result = f(&path);
    let _ = std::fs::remove_file(&path);
    result
}

/// A reader of the ring at `path` from `start`, unregistered (it spins; it never parks).
pub(crate) fn attach(path: &std::path::Path, start: Start) -> Result<Reader, String> {
    Reader::attach(
        path,
        ReaderOptions {
            start,
            register: false,
        },
    )
    .map_err(|e| e.to_string())
}

/// The candle every bench writer publishes (symbol 0, prices and volume 1).
pub(crate) fn bench_candle() -> Candle {
    Candle {
        symbol: 0,
        open: 1.0,
        high: 1.0,
        low: 1.0,
        close: 1.0,
        volume: 1.0,
        ..Candle::default()
    }
}

/// The paced writer: publish `n` candles one every `gap_ns`, each stamped with the stopwatch
/// just before publishing. `after(i)` runs after the `i`-th; when it returns true (it waited,
/// as a closed-loop writer waits for the reader), the next candle is due no earlier than now.
#[inline(always)]
pub(crate) fn publish_paced(
    writer: &mut Writer,
    n: u64,
    gap_ns: i64,
    mut after: impl FnMut(u64) -> bool,
) {
    let mut candle = bench_candle();
    let mut due = sys::monotonic_ns();
    for i in 0..n {
        due += gap_ns;
        spin_until(due);
        candle.ts_ns = stamp();
        writer.publish(&candle);
        if after(i) {
            due = due.max(sys::monotonic_ns());
        }
    }
}

/// What a busy-spinning reader took from the ring.
pub(crate) struct Taken {
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) overruns: u64,
}

/// The busy-spinning reader: `try_read` until `n` candles have arrived or been lost, handing
/// each candle to `on_candle` with the count received so far (itself included). Fails when the
/// writer process `pid` is gone first.
#[inline(always)]
pub(crate) fn spin_read(
    reader: &mut Reader,
    pid: libc::pid_t,
    n: u64,
    mut on_candle: impl FnMut(&Candle, u64),
) -> Result<Taken, String> {
    let (mut received, mut lost, mut overruns) = (0u64, 0u64, 0u64);
    let mut idle: u64 = 0;
    while received + lost < n {
        match reader.try_read() {
            ReadResult::Candle { candle, .. } => {
                received += 1;
                on_candle(&candle, received);
                idle = 0;
            }
            ReadResult::Overrun { lost: l } => {
                lost += l;
                overruns += 1;
            }
            ReadResult::NewWriter { .. } | ReadResult::Empty | ReadResult::RingRemoved => {
                idle += 1;
                if idle.is_multiple_of(1 << 24) && !child_alive(pid) {
                    return Err(format!(
                        "the writer stopped after {} of {n} candles",
                        received + lost
                    ));
                }
                // `pause`, like WaitStrategy::Spin: five A/B pairs of `bench ring --quick` gave a
                // median one-way/half-round-trip ratio of 1.62x with it, 2.11x without.
                core::hint::spin_loop();
            }
        }
    }
    Ok(Taken {
        received,
        lost,
        overruns,
    })
}

/// The loop's ways of waiting that the benchmarks compare.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Waiting {
    /// `Mode::Busy`, driver auto (so io_uring where usable).
    Busy,
    /// `Mode::Park` on `DriverChoice::Epoll`.
    Epoll,
    /// `Mode::Park` on `DriverChoice::IoUring`.
    IoUring,
}

impl Waiting {
    pub(crate) fn short(self) -> &'static str {
        match self {
            Waiting::Busy => "busy",
            Waiting::Epoll => "epoll",
            Waiting::IoUring => "io_uring",
        }
    }

    /// A loop configuration that waits this way, pinned to `core`.
    pub(crate) fn config(self, core: usize) -> LoopConfig {
        let (mode, driver) = match self {
            Waiting::Busy => (Mode::Busy, DriverChoice::Auto),
            Waiting::Epoll => (Mode::Park, DriverChoice::Epoll),
            Waiting::IoUring => (Mode::Park, DriverChoice::IoUring),
        };
        let mut config = LoopConfig {
            mode,
            driver,
            ..LoopConfig::default()
        };
        config.host.core = Some(core);
        config
    }
}

/// A loop for `app` on `rings`, without a journal or outputs.
pub(crate) fn new_loop<A: App>(
    config: &LoopConfig,
    rings: Vec<RingSpec>,
    app: A,
) -> Result<EventLoop<A, Discard>, LoopError> {
    EventLoop::new(
        LoopBuilder {
            config,
            rings,
            journal: None,
            app_config: Vec::new(),
            program: "tickloop",
        },
        app,
        Discard,
    )
}

/// The driver a loop used, and why not io_uring where it fell back.
pub(crate) fn driver_name<A: App>(event_loop: &EventLoop<A, Discard>) -> String {
    let kind = event_loop.driver_kind().name();
    match &event_loop.driver_report().fallback {
        Some(why) => format!("{kind} (io_uring not usable: {why})"),
        None => kind.to_string(),
    }
}

/// Involuntary context switches of the calling thread so far: each is a time another task
/// took its core (a hypervisor stall does not count here; it is invisible to the guest).
pub(crate) fn thread_preemptions() -> i64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it for the calling thread.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_nivcsw
}

/// CPU time the rest of the machine used while a benchmark ran: every core's busy time
/// (`/proc/stat`) minus this process's and its reaped children's. Other engineers' builds or
/// tests on a shared VM show up here, and explain tails no loop could.
pub(crate) struct Background {
    busy_s: f64,
    ours_s: f64,
    wall: std::time::Instant,
}

impl Background {
    pub(crate) fn start() -> Background {
        Background {
            busy_s: machine_busy_seconds(),
            ours_s: our_cpu_seconds(),
            wall: std::time::Instant::now(),
        }
    }

    /// Other tasks' CPU time as a percentage of one core over the run.
    pub(crate) fn percent_of_a_core(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-3);
        let others = (machine_busy_seconds() - self.busy_s) - (our_cpu_seconds() - self.ours_s);
        (others.max(0.0) / wall * 100.0 * 10.0).round() / 10.0
    }
}

fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy as f64 / hz
}

fn our_cpu_seconds() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: an all-zero rusage is valid; getrusage fills it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        for t in [u.ru_utime, u.ru_stime] {
            total += t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        }
    }
    total
}

/// A histogram (ns) from a helper script's `[[value_ns, count], ...]` (empty when absent);
/// values out of range are clamped, malformed pairs skipped.
pub(crate) fn histogram_of_pairs(pairs: &serde_json::Value) -> Histogram<u64> {
    let mut h = histogram();
    for pair in pairs.as_array().into_iter().flatten() {
        let value = pair[0].as_f64().unwrap_or(0.0);
        let count = pair[1].as_u64().unwrap_or(0);
        if value.is_finite() && count > 0 {
            h.saturating_record_n((value.max(1.0)) as u64, count);
        }
    }
    h
}
