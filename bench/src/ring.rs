//! `tickloop bench ring`: the ring between two processes pinned to two cores, next to the
//! physical limit (a cache-line round trip between the same two cores) and next to the Python
//! ring users build today, all in one run.
//!
//! Rows: the cache-line round trip and its half (the one-way limit); the ring's one-way latency
//! with a paced writer (publish-time stamp carried in the candle, read against the same
//! monotonic clock); the ring's throughput with an unpaced writer; the Python ring.
//! It measures and reports; it never fails on a slow result.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tickloop_runtime::ring::{
    self, Candle, CreateOptions, ReadResult, Reader, ReaderOptions, Start, Writer,
};
use tickloop_runtime::sys;

#[derive(clap::Args, Clone, Debug)]
pub struct RingBenchArgs {
    /// A short run (seconds) for smoke tests; numbers are noisier.
    #[arg(long)]
    pub quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write ring.json and ring.md into this directory.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// The two cores: reader first, writer second.
    #[arg(long, value_delimiter = ',', default_value = "0,1", value_name = "A,B")]
    pub cpus: Vec<usize>,
    /// Skip the Python peer.
    #[arg(long)]
    pub no_python: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub p50_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub p999_ns: Option<f64>,
    pub max_ns: Option<f64>,
    pub per_sec: Option<f64>,
    pub samples: u64,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub machine: serde_json::Value,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

struct Sizes {
    stall_seconds: f64,
    local: u64,
    rtt: u64,
    latency: u64,
    throughput: u64,
    python: u64,
}

/// Latency rows: one candle (or ping) every PACE_NS, in BLOCKS alternating blocks.
const PACE_NS: i64 = 1_000;
const BLOCKS: u64 = 40;

const PYTHON_USERS_RING: &str = include_str!("../python/users_ring.py");

pub fn main(args: &RingBenchArgs) -> Result<(), String> {
    let report = run(args)?;
    let text = markdown(&report);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{text}");
    }
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n";
        for (file, body) in [("ring.json", json), ("ring.md", text)] {
            let path = dir.join(file);
            std::fs::write(&path, body).map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        eprintln!("saved {}/ring.json and ring.md", dir.display());
    }
    Ok(())
}

pub fn run(args: &RingBenchArgs) -> Result<Report, String> {
    let [reader_core, writer_core] = args.cpus[..] else {
        return Err(format!(
            "--cpus needs exactly two cores, got {:?}",
            args.cpus
        ));
    };
    if reader_core == writer_core {
        return Err("--cpus needs two different cores".into());
    }
    for core in [reader_core, writer_core] {
        check_core(core)?;
    }
    let sizes = if args.quick {
        Sizes {
            stall_seconds: 0.2,
            local: 1_000_000,
            rtt: 100_000,
            latency: 100_000,
            throughput: 5_000_000,
            python: 20_000,
        }
    } else {
        Sizes {
            stall_seconds: 2.0,
            local: 20_000_000,
            rtt: 1_000_000,
            latency: 1_000_000,
            throughput: 100_000_000,
            python: 200_000,
        }
    };
    stamp_ns(0); // calibrate the stopwatch once, before any child is forked
    let mut rows = Vec::new();
    eprintln!("bench ring: host stalls on cores {reader_core} and {writer_core} ...");
    let stalls = host_stalls(reader_core, writer_core, sizes.stall_seconds)?;
    rows.push(row_from(
        "host stalls (spinning core, gaps over 1 µs)",
        &stalls.hist,
        1.0,
        Some(stalls.hist.len() as f64 / sizes.stall_seconds),
        &format!(
            "the noise floor: stalled {:.2}% of the time on core {reader_core}, {:.2}% on core {writer_core}; per second = stalls per second",
            stalls.fraction[0] * 100.0,
            stalls.fraction[1] * 100.0
        ),
    ));
    // The round trip and the ring's one-way latency run in alternating blocks at the same pace,
    // so both see the same host (vCPU placement, stalls) and their ratio is a fair one.
    eprintln!("bench ring: round trip and ring one-way latency, {BLOCKS} alternating blocks ...");
    let mut rtt = histogram();
    let mut latency = histogram();
    let mut latency_lost = 0;
    let mut closed = histogram();
    let mut ratios = Vec::new();
    let mut closed_ratios = Vec::new();
    for _ in 0..BLOCKS {
        let rtt_block =
            cache_line_round_trip(reader_core, writer_core, sizes.rtt / BLOCKS, PACE_NS)?;
        rtt.add(&rtt_block).map_err(|e| e.to_string())?;
        let block = ring_run(
            reader_core,
            writer_core,
            sizes.latency / BLOCKS,
            PACE_NS,
            false,
        )?;
        latency.add(&block.hist).map_err(|e| e.to_string())?;
        latency_lost += block.lost;
        let half_rtt = rtt_block.value_at_quantile(0.5) as f64 / 2.0;
        ratios.push(block.hist.value_at_quantile(0.5) as f64 / half_rtt);
        let block = ring_run(
            reader_core,
            writer_core,
            sizes.latency / BLOCKS,
            PACE_NS,
            true,
        )?;
        closed.add(&block.hist).map_err(|e| e.to_string())?;
        latency_lost += block.lost;
        closed_ratios.push(block.hist.value_at_quantile(0.5) as f64 / half_rtt);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (median_ratio, low_ratio, high_ratio) = median(&mut ratios);
    let (closed_ratio, closed_low, closed_high) = median(&mut closed_ratios);
    let pace = format!("one every {} µs", PACE_NS / 1000);
    rows.push(row_from(
        "cache-line round trip",
        &rtt,
        1.0,
        Some(1e9 / PACE_NS as f64),
        &format!("two processes ping-pong one 64-byte line, {pace}"),
    ));
    rows.push(row_from(
        "cache-line one-way (half round trip)",
        &rtt,
        0.5,
        None,
        "the physical limit for a candle crossing cores",
    ));
    rows.push(row_from(
        "tickloop ring one-way (2^16 slots)",
        &latency,
        1.0,
        Some(1e9 / PACE_NS as f64),
        &format!(
            "publish to read, stopwatch (TSC) stamp carried in the candle, {pace}; {latency_lost} lost"
        ),
    ));
    rows.push(row_from(
        "tickloop ring one-way, closed loop (2^16 slots)",
        &closed,
        1.0,
        Some(1e9 / PACE_NS as f64),
        "as above, but the writer waits for the reader's acknowledgement before the next candle: the round trip's method, which hides host stalls",
    ));
    eprintln!(
        "bench ring: throughput, writer paced at {} M/s ...",
        THROUGHPUT_RATE / 1e6
    );
    let throughput = ring_run(
        reader_core,
        writer_core,
        sizes.throughput,
        -(THROUGHPUT_RATE as i64),
        false,
    )?;
    rows.push(row_from(
        &format!(
            "tickloop ring throughput (writer at {} M/s, 2^20 slots)",
            THROUGHPUT_RATE / 1e6
        ),
        &throughput.hist,
        1.0,
        Some(throughput.per_sec),
        &format!(
            "{} candles; percentiles are the age of one candle in 64; {} lost in {} overruns",
            throughput.received + throughput.lost,
            throughput.lost,
            throughput.overruns
        ),
    ));
    eprintln!("bench ring: throughput, unpaced writer ...");
    let flat_out = ring_run(reader_core, writer_core, sizes.throughput, 0, false)?;
    rows.push(row_from(
        "tickloop ring, writer unpaced (2^20 slots)",
        &flat_out.hist,
        1.0,
        Some(flat_out.per_sec),
        &format!(
            "delivered per second at the reader; {} lost in {} overruns (a reader slower than the writer is lapped)",
            flat_out.lost, flat_out.overruns
        ),
    ));
    eprintln!("bench ring: write + read in one process ...");
    let local = write_read_one_process(sizes.local)?;
    rows.push(row_from(
        "tickloop ring write+read, one process",
        &local,
        1.0,
        Some(1e9 / local.mean()),
        "per candle, timed over batches of 1000 (the Python row's measure)",
    ));
    if !args.no_python {
        eprintln!("bench ring: the Python ring users build today ...");
        rows.push(python_row(sizes.python));
    }
    let half_rtt_p50 = rtt.value_at_quantile(0.5) as f64 / 2.0;
    let half_rtt_p99 = rtt.value_at_quantile(0.99) as f64 / 2.0;
    let one_way_p50 = latency.value_at_quantile(0.5) as f64;
    let one_way_p99 = latency.value_at_quantile(0.99) as f64;
    let closed_p99 = closed.value_at_quantile(0.99) as f64;
    // The round trip is closed-loop (one ping in flight), so the closed-loop ring rows are the
    // like-for-like comparison; the open-loop rows are what a feed sees, host stalls included.
    let mut checks = vec![
        Check {
            target: "one-way p50 within 1.5x of half the cache-line round trip (median of per-block ratios; closed loop, the round trip's method)".into(),
            measured: format!(
                "closed loop {closed_ratio:.2}x (blocks {closed_low:.2}x to {closed_high:.2}x); open loop {median_ratio:.2}x (blocks {low_ratio:.2}x to {high_ratio:.2}x); all blocks: {one_way_p50:.0} ns vs {half_rtt_p50:.0} ns"
            ),
            pass: closed_ratio <= 1.5,
        },
        Check {
            target: "one-way p99 under 1 µs (closed loop, the round trip's method)".into(),
            measured: format!(
                "closed loop {closed_p99:.0} ns (half round trip p99 {half_rtt_p99:.0} ns); open loop {one_way_p99:.0} ns, set by the host, which stalls each core {:.1}% / {:.1}% of the time",
                stalls.fraction[0] * 100.0,
                stalls.fraction[1] * 100.0
            ),
            pass: closed_p99 < 1000.0,
        },
        Check {
            target: "at least 20M candles/s, none lost".into(),
            measured: format!("{:.1} M/s, {} lost", throughput.per_sec / 1e6, throughput.lost),
            pass: throughput.per_sec >= 20e6 && throughput.lost == 0,
        },
    ];
    if let Some(py) = rows.iter().find(|r| r.name.starts_with("python")) {
        if let Some(p50) = py.p50_ns {
            let ours = local.value_at_quantile(0.5) as f64;
            checks.push(Check {
                target: "faster than the Python ring users build today (write+read, one process)"
                    .into(),
                measured: format!(
                    "{ours:.0} ns vs {p50:.0} ns per candle ({:.0}x)",
                    p50 / ours
                ),
                pass: ours < p50,
            });
        }
    }
    Ok(Report {
        rows,
        machine: machine(reader_core, writer_core, args.quick),
        checks,
    })
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

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

fn row_from(name: &str, h: &Histogram<u64>, scale: f64, per_sec: Option<f64>, note: &str) -> Row {
    let q = |q: f64| Some(h.value_at_quantile(q) as f64 * scale);
    Row {
        name: name.into(),
        p50_ns: q(0.5),
        p99_ns: q(0.99),
        p999_ns: q(0.999),
        max_ns: Some(h.max() as f64 * scale),
        per_sec,
        samples: h.len(),
        note: note.into(),
    }
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

pub(crate) fn reap(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!(
            "a bench child process failed (wait status {status:#x})"
        ))
    }
}

pub(crate) fn child_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks existence; a zombie still counts until reaped.
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
}

/// Two processes bounce one cache line, one round trip every `gap_ns`; each is timed by the
/// initiator.
fn cache_line_round_trip(
    a: usize,
    b: usize,
    n: u64,
    gap_ns: i64,
) -> Result<Histogram<u64>, String> {
    let page = SharedPage::new()?;
    let line = page.word(0);
    let warmup = n / 10;
    let total = n + warmup;
    let pid = fork_pinned(b, || {
        for i in 0..total {
            // Both spins use `pause`: the fastest ping-pong here (without it each side's
            // polling steals the line back from the other and the round trip doubles).
            while line.load(Ordering::Acquire) != 2 * i + 1 {
                core::hint::spin_loop();
            }
            line.store(2 * i + 2, Ordering::Release);
        }
    })?;
    sys::pin_to_core(a)?;
    let mut hist = histogram();
    let mut due = sys::monotonic_ns();
    for i in 0..total {
        due += gap_ns;
        while sys::monotonic_ns() < due {
            core::hint::spin_loop();
        }
        let t0 = stamp();
        line.store(2 * i + 1, Ordering::Release);
        while line.load(Ordering::Acquire) != 2 * i + 2 {
            core::hint::spin_loop();
        }
        let t1 = stamp();
        if i >= warmup {
            hist.saturating_record(stamp_ns(t1 - t0));
        }
    }
    reap(pid)?;
    Ok(hist)
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

/// Write then read one candle at a time in one process: the per-candle cost of the ring's code
/// itself, the measure the Python row uses. Timed per batch of 1000 (a stopwatch read per
/// candle would cost more than the candle).
fn write_read_one_process(n: u64) -> Result<Histogram<u64>, String> {
    with_temp_ring(CreateOptions::default().slots, |path| {
        let mut writer = Writer::open(path).map_err(|e| e.to_string())?;
        let mut reader = Reader::attach(
            path,
            ReaderOptions {
                start: Start::Next,
                register: false,
            },
        )
        .map_err(|e| e.to_string())?;
        let mut hist = histogram();
        let mut candle = Candle {
            close: 1.0,
            ..Candle::default()
        };
        const BATCH: u64 = 1000;
        for _ in 0..n / BATCH {
            let t0 = stamp();
            for i in 0..BATCH {
                candle.ts_ns = i as i64;
                writer.publish(&candle);
                match reader.try_read() {
                    ReadResult::Candle { candle: got, .. } => assert_eq!(got.ts_ns, i as i64),
                    other => return Err(format!("one-process read returned {other:?}")),
                }
            }
            hist.saturating_record((stamp_ns(stamp() - t0) / BATCH).max(1));
        }
        Ok(hist)
    })
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

struct Stalls {
    hist: Histogram<u64>,
    /// Fraction of the time each core (reader's, writer's) spent in gaps over 1 µs.
    fraction: [f64; 2],
}

/// A process on each core reads the clock in a tight loop for `seconds`; every gap over 1 µs
/// is time the host took the core away (interrupts, hypervisor exits). Records core A's gaps.
fn host_stalls(a: usize, b: usize, seconds: f64) -> Result<Stalls, String> {
    fn spin(seconds: f64, mut gap: impl FnMut(u64)) {
        let start = sys::monotonic_ns();
        let end = start + (seconds * 1e9) as i64;
        let mut last = start;
        while last < end {
            let now = sys::monotonic_ns();
            if now - last > 1_000 {
                gap((now - last) as u64);
            }
            last = now;
        }
    }
    let page = SharedPage::new()?;
    let child_total = page.word(0);
    let pid = fork_pinned(b, || {
        spin(seconds, |gap| {
            child_total.fetch_add(gap, Ordering::Relaxed);
        })
    })?;
    sys::pin_to_core(a)?;
    let mut hist = histogram();
    let mut total = 0;
    spin(seconds, |gap| {
        total += gap;
        hist.saturating_record(gap);
    });
    reap(pid)?;
    let b_total = child_total.load(Ordering::Relaxed);
    Ok(Stalls {
        hist,
        fraction: [
            total as f64 / (seconds * 1e9),
            b_total as f64 / (seconds * 1e9),
        ],
    })
}

struct RingRun {
    hist: Histogram<u64>,
    per_sec: f64,
    received: u64,
    lost: u64,
    overruns: u64,
}

/// Ring size of the latency row (a 4 MiB ring, the default size).
const LATENCY_SLOTS: u64 = 1 << 16;

/// Candles per second of the throughput row.
const THROUGHPUT_RATE: f64 = 25e6;

/// A writer process publishes `n` candles and this process reads them with a busy-spinning
/// reader. `gap_ns > 0`: one candle every `gap_ns`, each stamped with its stopwatch publish
/// time; `gap_ns < 0`: `-gap_ns` candles per second, paced and stamped once per 64; `0`: as
/// fast as possible, stamped once per 64 (a clock read per candle would halve the rate).
/// `closed_loop` (paced runs only) makes the writer wait for the reader's
/// acknowledgement of each candle before the next, the round trip's own method.
fn ring_run(
    reader_core: usize,
    writer_core: usize,
    n: u64,
    gap_ns: i64,
    closed_loop: bool,
) -> Result<RingRun, String> {
    // The latency row uses the default 4 MiB ring; the throughput rows a 64 MiB one, which
    // absorbs a 40 ms stall of the reader (a hypervisor preempting its vCPU) at 25 M/s.
    let slots = if gap_ns > 0 { LATENCY_SLOTS } else { 1 << 20 };
    with_temp_ring(slots, |path| {
        ring_run_on(path, reader_core, writer_core, n, gap_ns, closed_loop)
    })
}

fn ring_run_on(
    path: &std::path::Path,
    reader_core: usize,
    writer_core: usize,
    n: u64,
    gap_ns: i64,
    closed_loop: bool,
) -> Result<RingRun, String> {
    let acks = SharedPage::new()?;
    let ack = acks.word(0);
    let mut reader = Reader::attach(
        path,
        ReaderOptions {
            start: Start::At(0),
            register: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let writer_path = path.to_owned();
    let pid = fork_pinned(writer_core, move || {
        let Ok(mut writer) = Writer::open(&writer_path) else {
            // SAFETY: child exit.
            unsafe { libc::_exit(3) };
        };
        let mut candle = Candle {
            symbol: 0,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 1.0,
            ..Candle::default()
        };
        if gap_ns > 0 {
            let mut due = sys::monotonic_ns();
            for i in 0..n {
                due += gap_ns;
                while sys::monotonic_ns() < due {
                    core::hint::spin_loop();
                }
                candle.ts_ns = stamp();
                writer.publish(&candle);
                if closed_loop {
                    while ack.load(Ordering::Acquire) <= i {
                        core::hint::spin_loop();
                    }
                    due = due.max(sys::monotonic_ns());
                }
            }
        } else {
            let start = sys::monotonic_ns();
            let ns_per_candle = if gap_ns < 0 {
                1e9 / -gap_ns as f64
            } else {
                0.0
            };
            for i in 0..n {
                if i % 64 == 0 {
                    let due = start + (i as f64 * ns_per_candle) as i64;
                    let mut now = sys::monotonic_ns();
                    while now < due {
                        core::hint::spin_loop();
                        now = sys::monotonic_ns();
                    }
                    candle.ts_ns = stamp();
                } else {
                    candle.ts_ns = 0;
                }
                writer.publish(&candle);
            }
        }
    })?;
    sys::pin_to_core(reader_core)?;
    let mut hist = histogram();
    let warmup = if gap_ns > 0 { n / 10 } else { 0 };
    let mut stamped = 0u64;
    let (mut received, mut lost, mut overruns) = (0u64, 0u64, 0u64);
    let mut first = None;
    let mut last = 0;
    let mut idle: u64 = 0;
    while received + lost < n {
        match reader.try_read() {
            ReadResult::Candle { candle, .. } => {
                if candle.ts_ns != 0 {
                    let age = stamp_ns(stamp() - candle.ts_ns);
                    if stamped >= warmup {
                        hist.saturating_record(age);
                    }
                    stamped += 1;
                    last = sys::monotonic_ns();
                    first.get_or_insert(last);
                }
                received += 1;
                idle = 0;
                if closed_loop {
                    ack.store(received, Ordering::Release);
                }
            }
            ReadResult::Overrun { lost: l } => {
                lost += l;
                overruns += 1;
            }
            ReadResult::NewWriter { .. } | ReadResult::Empty | ReadResult::RingRemoved => {
                idle += 1;
                if idle % (1 << 24) == 0 && !child_alive(pid) {
                    break;
                }
                // `pause`, like WaitStrategy::Spin: five A/B pairs of `bench ring --quick` gave a
                // median one-way/half-round-trip ratio of 1.62x with it, 2.11x without.
                core::hint::spin_loop();
            }
        }
    }
    let end = sys::monotonic_ns().max(last);
    reap(pid)?;
    if received + lost < n {
        return Err(format!(
            "the writer stopped after {} of {n} candles",
            received + lost
        ));
    }
    let seconds = (end - first.unwrap_or(end)) as f64 / 1e9;
    Ok(RingRun {
        hist,
        per_sec: if seconds > 0.0 {
            received as f64 / seconds
        } else {
            0.0
        },
        received,
        lost,
        overruns,
    })
}

fn python_row(count: u64) -> Row {
    let missing = |why: String| Row {
        name: "python ring (users' design), one process".into(),
        p50_ns: None,
        p99_ns: None,
        p999_ns: None,
        max_ns: None,
        per_sec: None,
        samples: 0,
        note: why,
    };
    let child = std::process::Command::new("python3")
        .args(["-", "--count", &count.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return missing(format!("not measured: python3 could not run ({e})")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = std::io::Write::write_all(&mut stdin, PYTHON_USERS_RING.as_bytes());
    }
    let output = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return missing(format!("not measured: {e}")),
    };
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&output.stdout).ok();
    let Some(v) = parsed.filter(|_| output.status.success()) else {
        let err = String::from_utf8_lossy(&output.stderr);
        return missing(format!(
            "not measured: python3 failed: {}",
            err.lines().last().unwrap_or("")
        ));
    };
    let one = &v["one_process"];
    let two = &v["two_process"];
    Row {
        name: "python ring (users' design), one process".into(),
        p50_ns: one["p50_ns"].as_f64(),
        p99_ns: one["p99_ns"].as_f64(),
        p999_ns: one["p999_ns"].as_f64(),
        max_ns: one["max_ns"].as_f64(),
        per_sec: one["per_sec"].as_f64(),
        samples: one["count"].as_u64().unwrap_or(0),
        note: format!(
            "write+read per candle; across two processes it lost {:.1}% and duplicated {:.1}%",
            two["lost_pct"].as_f64().unwrap_or(f64::NAN),
            two["duplicate_pct"].as_f64().unwrap_or(f64::NAN)
        ),
    }
}

pub(crate) fn machine(reader_core: usize, writer_core: usize, quick: bool) -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    serde_json::json!({
        "cpu": cpu,
        "cores": unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        "arch": std::env::consts::ARCH,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "reader_core": reader_core,
        "writer_core": writer_core,
        "quick": quick,
        "tickloop": env!("CARGO_PKG_VERSION"),
    })
}

pub(crate) fn fmt_ns(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10_000.0 => format!("{v:.0} ns"),
        Some(v) if v < 10_000_000.0 => format!("{:.1} µs", v / 1e3),
        Some(v) => format!("{:.1} ms", v / 1e6),
    }
}

fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e5 {
        format!("{:.2} M", per_sec / 1e6)
    } else {
        format!("{per_sec:.0}")
    }
}

/// The report as a Markdown table with the checks under it.
pub fn markdown(r: &Report) -> String {
    let m = &r.machine;
    let mut s = format!(
        "Ring benchmark: {} ({} cores, {}), kernel {}, clocksource {}, reader on core {}, writer on core {}{}\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["arch"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["clocksource"].as_str().unwrap_or("?"),
        m["reader_core"],
        m["writer_core"],
        if m["quick"].as_bool() == Some(true) { " (--quick)" } else { "" }
    );
    s += "| row | p50 | p99 | p99.9 | max | per second | note |\n|---|---:|---:|---:|---:|---:|---|\n";
    for row in &r.rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.name,
            fmt_ns(row.p50_ns),
            fmt_ns(row.p99_ns),
            fmt_ns(row.p999_ns),
            fmt_ns(row.max_ns),
            row.per_sec.map_or("-".into(), fmt_rate),
            row.note
        );
    }
    s += "\n";
    for c in &r.checks {
        s += &format!(
            "- {} {}: {}\n",
            if c.pass { "PASS" } else { "MISS" },
            c.target,
            c.measured
        );
    }
    s
}
