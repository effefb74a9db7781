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
    rtt: u64,
    latency: u64,
    throughput: u64,
    python: u64,
}

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
            rtt: 100_000,
            latency: 200_000,
            throughput: 5_000_000,
            python: 20_000,
        }
    } else {
        Sizes {
            rtt: 2_000_000,
            latency: 2_000_000,
            throughput: 100_000_000,
            python: 200_000,
        }
    };
    let mut rows = Vec::new();
    eprintln!("bench ring: cache-line round trip, cores {reader_core} <-> {writer_core} ...");
    let rtt = cache_line_round_trip(reader_core, writer_core, sizes.rtt)?;
    rows.push(row_from(
        "cache-line round trip",
        &rtt,
        1.0,
        None,
        "two processes ping-pong one 64-byte line",
    ));
    rows.push(row_from(
        "cache-line one-way (half round trip)",
        &rtt,
        0.5,
        None,
        "the physical limit for a candle crossing cores",
    ));
    eprintln!("bench ring: one-way latency, paced writer ...");
    let latency = ring_run(reader_core, writer_core, sizes.latency, 1_000)?;
    rows.push(row_from(
        "tickloop ring one-way (paced, 1 per µs)",
        &latency.hist,
        1.0,
        Some(latency.per_sec),
        &format!(
            "publish-to-read, monotonic stamp in the candle; {} lost",
            latency.lost
        ),
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
    )?;
    rows.push(row_from(
        &format!(
            "tickloop ring throughput (writer at {} M/s)",
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
    let flat_out = ring_run(reader_core, writer_core, sizes.throughput, 0)?;
    rows.push(row_from(
        "tickloop ring, writer unpaced",
        &flat_out.hist,
        1.0,
        Some(flat_out.per_sec),
        &format!(
            "delivered per second; the writer outruns the reader, which is lapped: {} lost in {} overruns",
            flat_out.lost, flat_out.overruns
        ),
    ));
    if !args.no_python {
        eprintln!("bench ring: the Python ring users build today ...");
        rows.push(python_row(sizes.python));
    }
    let half_rtt_p50 = rtt.value_at_quantile(0.5) as f64 / 2.0;
    let one_way_p50 = latency.hist.value_at_quantile(0.5) as f64;
    let one_way_p99 = latency.hist.value_at_quantile(0.99) as f64;
    let mut checks = vec![
        Check {
            target: "one-way p50 within 1.5x of half the cache-line round trip".into(),
            measured: format!(
                "{one_way_p50:.0} ns vs {half_rtt_p50:.0} ns ({:.2}x)",
                one_way_p50 / half_rtt_p50
            ),
            pass: one_way_p50 <= 1.5 * half_rtt_p50,
        },
        Check {
            target: "one-way p99 under 1 µs".into(),
            measured: format!("{one_way_p99:.0} ns"),
            pass: one_way_p99 < 1000.0,
        },
        Check {
            target: "at least 20M candles/s, none lost".into(),
            measured: format!(
                "{:.1} M/s, {} lost",
                throughput.per_sec / 1e6,
                throughput.lost
            ),
            pass: throughput.per_sec >= 20e6 && throughput.lost == 0,
        },
    ];
    if let Some(py) = rows.iter().find(|r| r.name.starts_with("python")) {
        if let Some(p50) = py.p50_ns {
            checks.push(Check {
                target: "faster than the Python ring users build today".into(),
                measured: format!(
                    "{p50:.0} ns vs {one_way_p50:.0} ns per candle ({:.0}x)",
                    p50 / one_way_p50
                ),
                pass: one_way_p50 < p50,
            });
        }
    }
    Ok(Report {
        rows,
        machine: machine(reader_core, writer_core, args.quick),
        checks,
    })
}

fn check_core(core: usize) -> Result<(), String> {
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

fn histogram() -> Histogram<u64> {
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
fn fork_pinned(core: usize, child: impl FnOnce()) -> Result<libc::pid_t, String> {
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

fn reap(pid: libc::pid_t) -> Result<(), String> {
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

fn child_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks existence; a zombie still counts until reaped.
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
}

/// Two processes bounce one cache line; every round trip is timed by the initiator.
fn cache_line_round_trip(a: usize, b: usize, n: u64) -> Result<Histogram<u64>, String> {
    // SAFETY: an anonymous shared mapping of one page, unmapped below.
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
    // SAFETY: page-aligned, zeroed, shared with the child.
    let line = unsafe { &*(page as *const AtomicU64) };
    let warmup = n / 10;
    let total = n + warmup;
    let pid = fork_pinned(b, || {
        for i in 0..total {
            while line.load(Ordering::Acquire) != 2 * i + 1 {
                core::hint::spin_loop();
            }
            line.store(2 * i + 2, Ordering::Release);
        }
    })?;
    sys::pin_to_core(a)?;
    let mut hist = histogram();
    for i in 0..total {
        let t0 = sys::monotonic_ns();
        line.store(2 * i + 1, Ordering::Release);
        while line.load(Ordering::Acquire) != 2 * i + 2 {
            core::hint::spin_loop();
        }
        let t1 = sys::monotonic_ns();
        if i >= warmup {
            hist.saturating_record((t1 - t0).max(1) as u64);
        }
    }
    reap(pid)?;
    // SAFETY: mapped above.
    unsafe { libc::munmap(page, 4096) };
    Ok(hist)
}

struct RingRun {
    hist: Histogram<u64>,
    per_sec: f64,
    received: u64,
    lost: u64,
    overruns: u64,
}

/// Candles per second of the throughput row.
const THROUGHPUT_RATE: f64 = 25e6;

/// A writer process publishes `n` candles and this process reads them with a busy-spinning
/// reader. `gap_ns > 0`: one candle every `gap_ns`, each stamped with its monotonic publish
/// time; `gap_ns < 0`: `-gap_ns` candles per second, paced and stamped once per 64; `0`: as
/// fast as possible, stamped once per 64 (a clock read per candle would halve the rate).
fn ring_run(
    reader_core: usize,
    writer_core: usize,
    n: u64,
    gap_ns: i64,
) -> Result<RingRun, String> {
    let path = ring::ring_path(&format!("tickloop-bench-{}", std::process::id()))
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&path);
    ring::create(
        &path,
        CreateOptions {
            slots: 1 << 16,
            ..CreateOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let result = ring_run_on(&path, reader_core, writer_core, n, gap_ns);
    let _ = std::fs::remove_file(&path);
    result
}

fn ring_run_on(
    path: &std::path::Path,
    reader_core: usize,
    writer_core: usize,
    n: u64,
    gap_ns: i64,
) -> Result<RingRun, String> {
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
            for _ in 0..n {
                due += gap_ns;
                while sys::monotonic_ns() < due {
                    core::hint::spin_loop();
                }
                candle.ts_ns = sys::monotonic_ns();
                writer.publish(&candle);
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
                    candle.ts_ns = now;
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
                    let now = sys::monotonic_ns();
                    last = now;
                    first.get_or_insert(now);
                    if stamped >= warmup {
                        hist.saturating_record((now - candle.ts_ns).max(1) as u64);
                    }
                    stamped += 1;
                }
                received += 1;
                idle = 0;
            }
            ReadResult::Overrun { lost: l } => {
                lost += l;
                overruns += 1;
            }
            ReadResult::NewWriter { .. } | ReadResult::Empty => {
                idle += 1;
                if idle % (1 << 24) == 0 && !child_alive(pid) {
                    break;
                }
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

fn machine(reader_core: usize, writer_core: usize, quick: bool) -> serde_json::Value {
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

fn fmt_ns(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10_000.0 => format!("{v:.0} ns"),
        Some(v) if v < 10_000_000.0 => format!("{:.1} µs", v / 1e3),
        Some(v) => format!("{:.1} ms", v / 1e6),
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
            row.per_sec
                .map_or("-".into(), |p| format!("{:.2} M", p / 1e6)),
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
