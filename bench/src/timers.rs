//! `tickloop bench timers`: how late a periodic timer fires in tickloop's loop, in its three
//! ways of waiting, next to cyclictest (rt-tests) on the same core, in the same run.
//!
//! Rows, each run for a few seconds in every round, the rounds alternating so every row sees
//! the same host (vCPU placement, hypervisor stalls):
//! - busy: `Mode::Busy` (driver auto, so io_uring where usable): the loop spins and fires the
//!   timer from its wheel when its clock read passes the deadline;
//! - epoll: `Mode::Park` on `DriverChoice::Epoll`: it sleeps in epoll with a timerfd armed at
//!   the exact deadline;
//! - io_uring: `Mode::Park` on `DriverChoice::IoUring`: it sleeps in `io_uring_enter` with the
//!   exact remaining time;
//! - cyclictest: the reference, `clock_nanosleep` on the same core at the same interval.
//!
//! Lateness is `event.at - deadline`: the loop's clock read in the iteration that fired the
//! timer, minus the deadline on the period's grid. A tiny bench app records it into its own
//! histogram, allocated before the loop runs. The loop runs in this process, pinned to the
//! measured core; loops are made and dropped once per round (their signals stay blocked on
//! this thread between rounds, so Ctrl-C is taken by the next round's signalfd and ends the
//! bench). It measures and reports; it never fails on a slow result.

use crate::cyclictest::{self, CyclictestMode, CyclictestOptions, CyclictestOutcome};
use crate::ring::{fmt_ns, histogram};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tickloop_runtime::app::{App, Context, Discard, Event, EventKind, TimerId};
use tickloop_runtime::clock::{Nanos, MICROS, SECONDS};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, Mode, StopReason};

#[derive(clap::Args, Clone, Debug)]
pub struct TimersBenchArgs {
    /// A short run (seconds) for smoke tests; numbers are noisier.
    #[arg(long)]
    pub quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write timers.json and timers.md into this directory.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// The core the loop and cyclictest run on (default: the last core this process may use).
    #[arg(long, value_name = "N")]
    pub core: Option<usize>,
    /// The timer's period, in microseconds.
    #[arg(long, default_value_t = 1000, value_name = "US")]
    pub period_us: u64,
    /// Run the loop and cyclictest under SCHED_FIFO at this priority (default: SCHED_OTHER).
    #[arg(long, value_name = "PRIO")]
    pub fifo: Option<u8>,
}

/// One row of a report: a latency distribution (ns) and how it varied across rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub p50_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub p999_ns: Option<f64>,
    pub max_ns: Option<f64>,
    pub samples: u64,
    /// The p50 of each round (or block), in run order.
    pub rounds_p50_ns: Vec<f64>,
    /// The p99 of each round (or block), in run order: how much the host moved the tail.
    pub rounds_p99_ns: Vec<f64>,
    /// Candles lost (feed benchmarks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    pub note: String,
}

/// A target and what was measured against it. `pass` is null when it could not be measured
/// (a reference missing); the sentence then says why.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub measured: String,
    pub pass: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub machine: serde_json::Value,
    pub checks: Vec<Check>,
    /// What the numbers mean on this host, in sentences (also under the Markdown table).
    pub notes: Vec<String>,
}

/// Print the report (table or JSON) and write `DIR/NAME.json` and `DIR/NAME.md` when asked.
pub(crate) fn emit(
    report: &Report,
    title: &str,
    unit: &str,
    json: bool,
    save: Option<&Path>,
    name: &str,
) -> Result<(), String> {
    let text = markdown(report, title, unit);
    let body = serde_json::to_string_pretty(report).map_err(|e| e.to_string())? + "\n";
    if json {
        print!("{body}");
    } else {
        print!("{text}");
    }
    if let Some(dir) = save {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for (file, content) in [(format!("{name}.json"), body), (format!("{name}.md"), text)] {
            let path = dir.join(&file);
            std::fs::write(&path, content)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        eprintln!("saved {}/{name}.json and {name}.md", dir.display());
    }
    Ok(())
}

/// The report as Markdown: the title line, the table, the checks, the notes. `unit` names
/// what the per-row series are made of ("round", "block").
pub fn markdown(r: &Report, title: &str, unit: &str) -> String {
    let mut s = format!("{title}\n\n");
    let per_round = if r.rows.iter().any(|row| row.rounds_p99_ns.len() > 6) {
        format!("p99 per {unit} (min / median / max)")
    } else {
        format!("p99 per {unit}")
    };
    s += &format!(
        "| row | p50 | p99 | p99.9 | max | samples | {per_round} | note |\n|---|---:|---:|---:|---:|---:|---:|---|\n"
    );
    for row in &r.rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.name,
            fmt_ns(row.p50_ns),
            fmt_ns(row.p99_ns),
            fmt_ns(row.p999_ns),
            fmt_ns(row.max_ns),
            row.samples,
            rounds_text(&row.rounds_p99_ns),
            row.note
        );
    }
    s += "\n";
    for c in &r.checks {
        s += &format!(
            "- {} {}: {}\n",
            match c.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "NOT MEASURED",
            },
            c.target,
            c.measured
        );
    }
    if !r.notes.is_empty() {
        s += "\n";
        for note in &r.notes {
            s += &format!("{note}\n\n");
        }
        s.pop();
    }
    s
}

/// Per-round values: all of them when few, else min / median / max.
fn rounds_text(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let short = |x: f64| fmt_ns(Some(x)).replace(' ', "\u{a0}");
    if v.len() <= 6 {
        return v.iter().map(|&x| short(x)).collect::<Vec<_>>().join(", ");
    }
    let (lo, mid, hi) = spread(v);
    format!("{} / {} / {}", short(lo), short(mid), short(hi))
}

/// (min, median, max) of a non-empty slice.
pub(crate) fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

pub(crate) fn row_from(name: &str, h: &Histogram<u64>, note: String) -> Row {
    let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64);
    Row {
        name: name.into(),
        p50_ns: q(0.5),
        p99_ns: q(0.99),
        p999_ns: q(0.999),
        max_ns: (!h.is_empty()).then(|| h.max() as f64),
        samples: h.len(),
        rounds_p50_ns: Vec::new(),
        rounds_p99_ns: Vec::new(),
        lost: None,
        note,
    }
}

pub(crate) fn empty_row(name: &str, note: String) -> Row {
    row_from(name, &histogram(), note)
}

/// A histogram whose pages are already mapped: a fresh one is zeroed memory the kernel maps
/// on first touch, which would be page faults inside the measured loop.
pub(crate) fn touched_histogram() -> Histogram<u64> {
    let mut h = histogram();
    h.reset();
    h
}

/// The cores this thread may run on, from its affinity mask.
pub(crate) fn allowed_cores() -> Result<Vec<usize>, String> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(format!(
            "sched_getaffinity failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: CPU_ISSET reads inside the set for every index below CPU_SETSIZE.
    let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cores.is_empty() {
        return Err("this process may run on no core (empty affinity mask)".into());
    }
    Ok(cores)
}

/// Put the calling thread back under SCHED_OTHER (a loop with `host.sched_fifo` leaves it FIFO).
pub(crate) fn back_to_sched_other() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the calling thread, a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
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

/// Whether this process may hold `/dev/cpu_dma_latency` (as cyclictest does while it runs).
fn can_hold_dma_latency() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .is_ok()
}

/// The bench app's timer id.
const TIMER: TimerId = 0;

/// The timer probe: arms one periodic timer when the loop starts and records each firing's
/// lateness into a histogram allocated before the loop runs (nothing is allocated per event).
struct TimerProbe {
    period: Nanos,
    lateness: Histogram<u64>,
}

impl App for TimerProbe {
    type Output = ();
    fn name(&self) -> &'static str {
        "bench-timers"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, ()>) {
        match event.kind {
            // Budget = one period: a firing later than that is reported by the loop as an
            // overrun (and counted here as skipped periods), as cyclictest skips them.
            EventKind::Started => cx.every(TIMER, self.period, self.period),
            EventKind::Timer {
                timer: TIMER,
                deadline,
            } => {
                self.lateness
                    .saturating_record(event.at.saturating_sub(deadline).max(1));
            }
            _ => {}
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Busy,
    Epoll,
    IoUring,
    Cyclictest,
}

impl Which {
    const ALL: [Which; 4] = [Which::Busy, Which::Epoll, Which::IoUring, Which::Cyclictest];
    fn short(self) -> &'static str {
        match self {
            Which::Busy => "busy",
            Which::Epoll => "epoll",
            Which::IoUring => "io_uring",
            Which::Cyclictest => "cyclictest",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Which::Busy => "tickloop busy (spins, fires from the wheel)",
            Which::Epoll => "tickloop park, epoll (timerfd at the deadline)",
            Which::IoUring => "tickloop park, io_uring (io_uring_enter timeout)",
            Which::Cyclictest => "cyclictest (clock_nanosleep)",
        }
    }
}

/// What one row gathered across the rounds.
struct Acc {
    which: Which,
    hist: Histogram<u64>,
    p50s: Vec<f64>,
    p99s: Vec<f64>,
    p999s: Vec<f64>,
    maxes: Vec<f64>,
    samples: u64,
    /// Set when the row could not be measured (it is then skipped in later rounds).
    failed: Option<String>,
    driver: Option<String>,
    skipped: u64,
    preempted: i64,
    warnings: Vec<String>,
    command: Option<String>,
}

/// One round of the loop in one mode; returns the round's histogram.
fn loop_round(
    which: Which,
    acc: &mut Acc,
    core: usize,
    period: Nanos,
    length: Nanos,
    fifo: Option<u8>,
    dma: bool,
) -> Result<Option<Histogram<u64>>, String> {
    let (mode, driver) = match which {
        Which::Busy => (Mode::Busy, DriverChoice::Auto),
        Which::Epoll => (Mode::Park, DriverChoice::Epoll),
        Which::IoUring => (Mode::Park, DriverChoice::IoUring),
        Which::Cyclictest => unreachable!("cyclictest is not a loop"),
    };
    let mut config = LoopConfig {
        mode,
        driver,
        ..LoopConfig::default()
    };
    config.host.core = Some(core);
    config.host.sched_fifo = fifo;
    config.host.cpu_dma_latency = dma;
    let app = TimerProbe {
        period,
        lateness: touched_histogram(),
    };
    let built = EventLoop::new(
        LoopBuilder {
            config: &config,
            rings: Vec::new(),
            journal: None,
            app_config: Vec::new(),
        },
        app,
        Discard,
    );
    let mut event_loop = match built {
        Ok(l) => l,
        Err(e) => {
            back_to_sched_other();
            acc.failed = Some(format!("not measured: the loop could not start: {e}"));
            return Ok(None);
        }
    };
    event_loop.stop_after(length);
    let preemptions = thread_preemptions();
    let stopped = event_loop.run();
    acc.preempted += thread_preemptions() - preemptions;
    let kind = event_loop.driver_kind().name().to_string();
    acc.driver = Some(match &event_loop.driver_report().fallback {
        Some(why) => format!("{kind} (io_uring not usable: {why})"),
        None => kind,
    });
    for w in &event_loop.host_report().warnings {
        if !acc.warnings.contains(w) {
            acc.warnings.push(w.clone());
        }
    }
    if let Some(p) = event_loop.periodic().next() {
        acc.skipped += p.skipped;
    }
    let hist = event_loop.app().lateness.clone();
    drop(event_loop);
    if fifo.is_some() {
        back_to_sched_other();
    }
    match stopped {
        Ok(StopReason::Deadline) => Ok(Some(hist)),
        Ok(StopReason::Signal(s)) => Err(format!("interrupted by signal {s}")),
        Ok(other) => Err(format!("the timer loop stopped unexpectedly: {other:?}")),
        Err(e) => {
            acc.failed = Some(format!("not measured: the loop failed while running: {e}"));
            Ok(None)
        }
    }
}

pub fn main(args: &TimersBenchArgs) -> Result<(), String> {
    let report = run(args)?;
    emit(
        &report,
        &title(&report),
        "round",
        args.json,
        args.save.as_deref(),
        "timers",
    )
}

fn title(r: &Report) -> String {
    let m = &r.machine;
    format!(
        "Timer benchmark: {} ({} cores, {}), kernel {}, clocksource {}, {}; core {}, {}, period {} µs, {} rounds of {} s per row{}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["arch"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["clocksource"].as_str().unwrap_or("?"),
        m["cyclictest"].as_str().unwrap_or("no cyclictest"),
        m["core"],
        m["scheduling"].as_str().unwrap_or("?"),
        m["period_us"],
        m["rounds"],
        m["round_seconds"],
        if m["quick"].as_bool() == Some(true) { " (--quick)" } else { "" }
    )
}

pub fn run(args: &TimersBenchArgs) -> Result<Report, String> {
    let allowed = allowed_cores()?;
    let core = match args.core {
        Some(c) if allowed.contains(&c) => c,
        Some(c) => {
            return Err(format!(
                "--core {c} is not a core this process may use (allowed: {allowed:?})"
            ))
        }
        None => *allowed.last().expect("allowed_cores is never empty"),
    };
    if !(10..=1_000_000).contains(&args.period_us) {
        return Err(format!(
            "--period-us {} is out of range: use 10 to 1000000",
            args.period_us
        ));
    }
    if let Some(p) = args.fifo {
        if !(1..=99).contains(&p) {
            return Err(format!("--fifo {p}: SCHED_FIFO priorities are 1 to 99"));
        }
    }
    let (rounds, round_s): (usize, f64) = if args.quick { (3, 0.4) } else { (5, 2.0) };
    // A busy-spinning SCHED_FIFO thread is what RT throttling (and, from 6.12, the fair
    // server) cuts off after 950 ms in every second: keep its rounds well under that.
    let busy_s = if args.fifo.is_some() {
        round_s.min(0.5)
    } else {
        round_s
    };
    let period = args.period_us * MICROS;
    let dma = can_hold_dma_latency();
    let background = Background::start();
    let version = cyclictest::available();
    let scheduling = match args.fifo {
        Some(p) => format!("SCHED_FIFO {p}"),
        None => "SCHED_OTHER".to_string(),
    };
    eprintln!(
        "bench timers: {rounds} rounds of busy, epoll, io_uring and cyclictest, {round_s} s each, period {} µs, core {core}, {scheduling} ...",
        args.period_us
    );
    let mut accs: Vec<Acc> = Which::ALL
        .iter()
        .map(|&which| Acc {
            which,
            hist: histogram(),
            p50s: Vec::new(),
            p99s: Vec::new(),
            p999s: Vec::new(),
            maxes: Vec::new(),
            samples: 0,
            failed: None,
            driver: None,
            skipped: 0,
            preempted: 0,
            warnings: Vec::new(),
            command: None,
        })
        .collect();
    if version.is_none() {
        accs[3].failed = Some(format!("not measured: {}", cyclictest::INSTALL_HINT));
    }
    for round in 0..rounds {
        // Rotate the order each round, so no row always follows the same one.
        for i in 0..Which::ALL.len() {
            let acc = &mut accs[(i + round) % Which::ALL.len()];
            if acc.failed.is_some() {
                continue;
            }
            let which = acc.which;
            let seconds = if which == Which::Busy {
                busy_s
            } else {
                round_s
            };
            if which == Which::Cyclictest {
                let options = CyclictestOptions {
                    core,
                    interval: Duration::from_micros(args.period_us),
                    duration: Duration::from_secs_f64(seconds),
                    priority: args.fifo,
                    mode: CyclictestMode::Nanosleep,
                };
                match cyclictest::run(&options) {
                    CyclictestOutcome::Ran(summary, command) => {
                        acc.p50s.push(summary.p50_ns as f64);
                        acc.p99s.push(summary.p99_ns as f64);
                        acc.p999s.push(summary.p999_ns as f64);
                        acc.maxes.push(summary.max_ns as f64);
                        acc.samples += summary.samples;
                        acc.command = Some(command);
                    }
                    CyclictestOutcome::Missing(why) => {
                        acc.failed = Some(format!("not measured: {why}"))
                    }
                    CyclictestOutcome::Failed(why) => {
                        acc.failed = Some(format!("not measured: cyclictest failed: {why}"))
                    }
                }
                continue;
            }
            let length = (seconds * SECONDS as f64) as Nanos;
            if let Some(h) = loop_round(which, acc, core, period, length, args.fifo, dma)? {
                acc.p50s.push(h.value_at_quantile(0.5) as f64);
                acc.p99s.push(h.value_at_quantile(0.99) as f64);
                acc.p999s.push(h.value_at_quantile(0.999) as f64);
                acc.maxes.push(h.max() as f64);
                acc.samples += h.len();
                acc.hist.add(&h).map_err(|e| e.to_string())?;
            }
        }
        let progress: Vec<String> = accs
            .iter()
            .map(|a| match (a.p99s.last(), &a.failed) {
                (_, Some(_)) => format!("{} -", a.which.short()),
                (Some(&p99), None) => format!("{} p99 {}", a.which.short(), fmt_ns(Some(p99))),
                (None, None) => format!("{} -", a.which.short()),
            })
            .collect();
        eprintln!(
            "bench timers: round {}/{rounds}: {}",
            round + 1,
            progress.join(", ")
        );
    }
    let others = background.percent_of_a_core();
    let rows = rows(&accs, dma, args, busy_s, round_s);
    let (checks, mut notes) = checks(&accs, args.fifo.is_some());
    notes.push(background_note(others));
    let mut machine = crate::ring::machine(core, core, args.quick);
    if let Some(m) = machine.as_object_mut() {
        m.remove("reader_core");
        m.remove("writer_core");
        m.insert("core".into(), core.into());
        m.insert("scheduling".into(), scheduling.into());
        m.insert("period_us".into(), args.period_us.into());
        m.insert("rounds".into(), rounds.into());
        m.insert("round_seconds".into(), round_s.into());
        m.insert(
            "cyclictest".into(),
            version.map_or(serde_json::Value::Null, Into::into),
        );
        m.insert(
            "cpu_dma_latency".into(),
            if dma {
                "held at 0 by every row (cyclictest always holds it; the loop through host.cpu_dma_latency)"
            } else {
                "not held by the loop rows (no permission to open /dev/cpu_dma_latency); cyclictest holds it if it can"
            }
            .into(),
        );
        let idle = std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "none".into());
        m.insert("cpuidle".into(), idle.into());
        m.insert("other_tasks_percent_of_a_core".into(), others.into());
    }
    Ok(Report {
        rows,
        machine,
        checks,
        notes,
    })
}

/// What the rest of the machine did meanwhile, in one sentence.
pub(crate) fn background_note(percent: f64) -> String {
    format!(
        "Other tasks on this machine (everything but this benchmark and its children: builds, tests, kernel threads) used {percent:.1}% of a core during the run{}.",
        if percent >= 10.0 {
            ": a busy machine, so expect tails from tasks sharing the measured cores (see the preemption counts)"
        } else {
            ""
        }
    )
}

fn rows(accs: &[Acc], dma: bool, args: &TimersBenchArgs, busy_s: f64, round_s: f64) -> Vec<Row> {
    let mut rows = Vec::new();
    for acc in accs {
        let mut row = match (&acc.failed, acc.which) {
            (Some(why), _) if acc.samples == 0 => empty_row(acc.which.name(), why.clone()),
            (_, Which::Cyclictest) => {
                // cyclictest reports a summary per run, not its histogram, so its rounds
                // cannot be merged exactly: the median of the rounds' percentiles instead.
                let median = |v: &[f64]| spread(v).1;
                Row {
                    name: acc.which.name().into(),
                    p50_ns: Some(median(&acc.p50s)),
                    p99_ns: Some(median(&acc.p99s)),
                    p999_ns: Some(median(&acc.p999s)),
                    max_ns: Some(spread(&acc.maxes).2),
                    samples: acc.samples,
                    rounds_p50_ns: Vec::new(),
                    rounds_p99_ns: Vec::new(),
                    lost: None,
                    note: format!(
                        "the reference, `{}` per round{}; percentiles are the median of the rounds' (cyclictest reports no histogram to merge; compare the loop rows' per-round p99s), max is over all rounds{}",
                        acc.command.as_deref().unwrap_or("cyclictest"),
                        if args.fifo.is_none() { " (no -p: SCHED_OTHER)" } else { "" },
                        acc.failed.as_ref().map(|f| format!("; a later round: {f}")).unwrap_or_default()
                    ),
                }
            }
            (_, which) => {
                let mut note =
                    format!(
                    "driver {}, {} s per round, lateness = loop clock read at firing - deadline",
                    acc.driver.as_deref().unwrap_or("?"),
                    if which == Which::Busy { busy_s } else { round_s },
                );
                if dma && which != Which::Busy {
                    note += ", /dev/cpu_dma_latency held at 0 (as cyclictest does)";
                }
                note += &format!(
                    "; the loop thread was preempted {} times (involuntary context switches)",
                    acc.preempted
                );
                if acc.skipped > 0 {
                    note += &format!(
                        "; {} periods skipped (fired over a period late)",
                        acc.skipped
                    );
                }
                for w in &acc.warnings {
                    note += &format!("; warning: {w}");
                }
                if let Some(f) = &acc.failed {
                    note += &format!("; a later round: {f}");
                }
                row_from(acc.which.name(), &acc.hist, note)
            }
        };
        row.rounds_p50_ns = acc.p50s.clone();
        row.rounds_p99_ns = acc.p99s.clone();
        rows.push(row);
    }
    rows
}

fn checks(accs: &[Acc], fifo: bool) -> (Vec<Check>, Vec<String>) {
    let us = |v: f64| fmt_ns(Some(v));
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    let busy = &accs[0];
    let cyclic = &accs[3];
    if busy.samples > 0 {
        let p99 = busy.hist.value_at_quantile(0.99) as f64;
        let (lo, mid, hi) = spread(&busy.p99s);
        checks.push(Check {
            target: "busy loop p99 lateness at most 5 µs".into(),
            measured: format!(
                "{} over all rounds (rounds {} to {}, median {})",
                us(p99),
                us(lo),
                us(hi),
                us(mid)
            ),
            pass: Some(p99 <= 5_000.0),
        });
        if p99 > 5_000.0 {
            notes.push(format!(
                "The busy loop never sleeps, so it is late only when it does not run: its p99 of {} is time the host took its core (hypervisor exits, interrupts{}), not time in the loop; the p50 of {} is the loop's own cost.",
                us(p99),
                if fifo { "" } else { ", other SCHED_OTHER tasks" },
                us(busy.hist.value_at_quantile(0.5) as f64)
            ));
        }
    } else {
        checks.push(Check {
            target: "busy loop p99 lateness at most 5 µs".into(),
            measured: busy.failed.clone().unwrap_or_else(|| "not measured".into()),
            pass: None,
        });
    }
    for acc in &accs[1..3] {
        let target = format!(
            "{} p99 lateness within cyclictest's p99 + 20 µs (same core, same scheduling, same run; median of per-round differences)",
            acc.which.short()
        );
        if acc.samples == 0 {
            checks.push(Check {
                target,
                measured: acc.failed.clone().unwrap_or_else(|| "not measured".into()),
                pass: None,
            });
            continue;
        }
        if cyclic.samples == 0 {
            checks.push(Check {
                target,
                measured: format!(
                    "not measured: no cyclictest reference ({}); {} p99 was {}",
                    cyclic
                        .failed
                        .as_deref()
                        .unwrap_or("no rounds")
                        .trim_start_matches("not measured: "),
                    acc.which.short(),
                    us(acc.hist.value_at_quantile(0.99) as f64)
                ),
                pass: None,
            });
            continue;
        }
        let diffs: Vec<f64> = acc
            .p99s
            .iter()
            .zip(&cyclic.p99s)
            .map(|(a, c)| a - c)
            .collect();
        let (lo, mid, hi) = spread(&diffs);
        let signed = |v: f64| {
            if v < 0.0 {
                format!("-{}", us(-v))
            } else {
                format!("+{}", us(v))
            }
        };
        checks.push(Check {
            target,
            measured: format!(
                "{} (rounds {} to {}); median round p99: {} {} vs cyclictest {}",
                signed(mid),
                signed(lo),
                signed(hi),
                acc.which.short(),
                us(spread(&acc.p99s).1),
                us(spread(&cyclic.p99s).1),
            ),
            pass: Some(mid <= 20_000.0),
        });
        if mid > 20_000.0 {
            notes.push(format!(
                "{}: sleeping in the driver costs a wake-up through the kernel and the hypervisor, as clock_nanosleep does for cyclictest; the median round's p99 was {} above cyclictest's.",
                acc.which.short(),
                us(mid)
            ));
        }
    }
    let sleepers: Vec<String> = accs[1..]
        .iter()
        .filter(|a| !a.p50s.is_empty())
        .map(|a| {
            let p50 = if a.which == Which::Cyclictest {
                spread(&a.p50s).1
            } else {
                a.hist.value_at_quantile(0.5) as f64
            };
            format!("{} {}", a.which.short(), us(p50))
        })
        .collect();
    if busy.samples > 0 && !sleepers.is_empty() {
        notes.push(format!(
            "The rows that sleep have about the same median lateness ({}): that is this host's cost of a timer wake-up (the hrtimer interrupt, delivered through the hypervisor in a VM, and the scheduler), which the busy loop ({}) avoids by never sleeping.",
            sleepers.join(", "),
            us(busy.hist.value_at_quantile(0.5) as f64)
        ));
    }
    let stalled: Vec<String> = accs[..3]
        .iter()
        .filter(|a| a.samples > 0 && a.hist.max() > 1_000_000 && a.preempted == 0)
        .map(|a| format!("{} {}", a.which.short(), us(a.hist.max() as f64)))
        .collect();
    if !stalled.is_empty() {
        notes.push(format!(
            "Maxima over 1 ms in rows whose loop thread was never preempted ({}) are the host's: the guest cannot see a vCPU stall, so nothing else on this machine took the core (the ring benchmark's host-stall row measures these stalls).",
            stalled.join(", ")
        ));
    }
    (checks, notes)
}
