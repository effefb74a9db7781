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
//! - cyclictest: the reference, `clock_nanosleep` on the same core at the same interval;
//! - tokio: a `tokio::time::interval` (MissedTickBehavior::Skip) awaited on a current-thread
//!   runtime, the way async bots tick; lateness = `Instant::now()` after `tick()` - the tick's
//!   scheduled instant (on the period's grid);
//! - sleep: a `std::thread::sleep` loop sleeping until the next deadline on the grid (skipping
//!   missed ones); lateness = `Instant::now()` on waking - the deadline.
//!
//! Every measured row's whole histogram goes into the report's `distributions`, except
//! cyclictest's: its rounds are summarized as they are read, so its row has the rounds'
//! medians and no merged histogram.
//!
//! Lateness is `event.at - deadline`: the loop's clock read in the iteration that fired the
//! timer, minus the deadline on the period's grid. A tiny bench app records it into its own
//! histogram, allocated before the loop runs. The loop runs in this process, pinned to the
//! measured core; loops are made and dropped once per round (their signals stay blocked on
//! this thread between rounds, so Ctrl-C is taken by the next round's signalfd and ends the
//! bench). It measures and reports; it never fails on a slow result.

use crate::cyclictest::{self, CyclictestMode, CyclictestOptions, CyclictestOutcome};
use crate::harness::{
    driver_name, histogram, new_loop, thread_preemptions, touched_histogram, Background, Waiting,
};
use crate::report::{
    allowed_cores, fmt_ns, progress, spread, Check, Distribution, OutputArgs, Percentiles, Report,
    Row,
};
use hdrhistogram::Histogram;
use std::time::Duration;
use tickloop_app::clock::{Nanos, MICROS, SECONDS};
use tickloop_app::{App, Context, Event, EventKind, TimerId};
use tickloop_ring::sys;
use tickloop_runtime::event_loop::StopReason;

#[derive(clap::Args, Clone, Debug)]
#[command(mut_arg("save", |a| a.help("Also write timers.md, timers.json, timers-ROW.hgrm per measured row and the plots timers.svg and timers.png into this directory (--save is the same)")))]
pub struct TimersBenchArgs {
    #[command(flatten)]
    pub output: OutputArgs,
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

/// Put the calling thread back under SCHED_OTHER (a loop with `host.sched_fifo` leaves it FIFO).
pub(crate) fn back_to_sched_other() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the calling thread, a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
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
            EventKind::Started { .. } => cx.every(TIMER, self.period, self.period),
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
    Loop(Waiting),
    Cyclictest,
    /// A peer timer in this process: tokio's interval or a sleep loop.
    Peer(PeerTimer),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PeerTimer {
    Tokio,
    Sleep,
}

impl Which {
    const ALL: [Which; 6] = [
        Which::Loop(Waiting::Busy),
        Which::Loop(Waiting::Epoll),
        Which::Loop(Waiting::IoUring),
        Which::Cyclictest,
        Which::Peer(PeerTimer::Tokio),
        Which::Peer(PeerTimer::Sleep),
    ];
    fn short(self) -> &'static str {
        match self {
            Which::Loop(waiting) => waiting.short(),
            Which::Cyclictest => "cyclictest",
            Which::Peer(PeerTimer::Tokio) => "tokio",
            Which::Peer(PeerTimer::Sleep) => "sleep",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Which::Loop(Waiting::Busy) => "tickloop busy (spins, fires from the wheel)",
            Which::Loop(Waiting::Epoll) => "tickloop park, epoll (timerfd at the deadline)",
            Which::Loop(Waiting::IoUring) => "tickloop park, io_uring (io_uring_enter timeout)",
            Which::Cyclictest => "cyclictest (clock_nanosleep)",
            Which::Peer(PeerTimer::Tokio) => {
                "tokio interval (current-thread runtime, MissedTickBehavior::Skip)"
            }
            Which::Peer(PeerTimer::Sleep) => "std::thread::sleep loop (until the next deadline)",
        }
    }
}

/// Run `f` on this thread pinned to `core`, under SCHED_FIFO `fifo` when asked (as the loop
/// rows run), back under SCHED_OTHER afterwards; its histogram and how often the thread was
/// preempted.
fn on_core(
    core: usize,
    fifo: Option<u8>,
    f: impl FnOnce() -> Result<(Histogram<u64>, u64), String>,
) -> Result<(Histogram<u64>, u64, i64), String> {
    sys::pin_to_core(core)?;
    if let Some(p) = fifo {
        let param = libc::sched_param {
            sched_priority: i32::from(p),
        };
        // SAFETY: the calling thread, a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
            return Err(format!(
                "cannot run under SCHED_FIFO {p}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let preemptions = thread_preemptions();
    let result = f();
    let preempted = thread_preemptions() - preemptions;
    if fifo.is_some() {
        back_to_sched_other();
    }
    result.map(|(h, skipped)| (h, skipped, preempted))
}

/// One round of a peer timer: its lateness histogram and the periods it skipped.
fn peer_round(
    timer: PeerTimer,
    period: Nanos,
    length: Nanos,
) -> Result<(Histogram<u64>, u64), String> {
    let period = Duration::from_nanos(period);
    let length = Duration::from_nanos(length);
    let mut hist = touched_histogram();
    let mut skipped = 0u64;
    let ns = |d: Duration| (d.as_nanos() as u64).max(1);
    match timer {
        PeerTimer::Tokio => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
            runtime.block_on(async {
                let start = tokio::time::Instant::now();
                let end = start + length;
                let mut interval = tokio::time::interval_at(start + period, period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut last: Option<tokio::time::Instant> = None;
                loop {
                    let deadline = interval.tick().await;
                    let now = tokio::time::Instant::now();
                    if deadline >= end {
                        break;
                    }
                    if let Some(last) = last {
                        let gap = (deadline - last).as_nanos() / period.as_nanos().max(1);
                        skipped += (gap as u64).saturating_sub(1);
                    }
                    last = Some(deadline);
                    hist.saturating_record(ns(now - deadline));
                }
            });
        }
        PeerTimer::Sleep => {
            let start = std::time::Instant::now();
            let mut k: u32 = 1;
            loop {
                let deadline = start + period * k;
                if deadline >= start + length {
                    break;
                }
                let now = std::time::Instant::now();
                if deadline > now {
                    std::thread::sleep(deadline - now);
                }
                let woke = std::time::Instant::now();
                hist.saturating_record(ns(woke - deadline));
                // The next deadline on the grid after waking (missed ones skipped, as tokio's
                // Skip and the loop's periodic timers do).
                let next = ((woke - start).as_nanos() / period.as_nanos().max(1)) as u32 + 1;
                skipped += u64::from(next.saturating_sub(k + 1));
                k = next.max(k + 1);
            }
        }
    }
    Ok((hist, skipped))
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
    waiting: Waiting,
    acc: &mut Acc,
    core: usize,
    period: Nanos,
    length: Nanos,
    fifo: Option<u8>,
    dma: bool,
) -> Result<Option<Histogram<u64>>, String> {
    let mut config = waiting.config(core);
    config.host.sched_fifo = fifo;
    config.host.cpu_dma_latency = dma;
    let app = TimerProbe {
        period,
        lateness: touched_histogram(),
    };
    let mut event_loop = match new_loop(&config, Vec::new(), app) {
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
    acc.driver = Some(driver_name(&event_loop));
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
    report.emit(markdown(&report), &args.output, "timers")
}

/// The report as Markdown: the title line, the table, the checks, the notes.
pub fn markdown(r: &Report) -> String {
    let m = &r.machine;
    let rest = format!(
        ", {}; core {}, {}, period {} µs, {} rounds of {} s per row",
        m["cyclictest"].as_str().unwrap_or("no cyclictest"),
        m["core"],
        m["scheduling"].as_str().unwrap_or("?"),
        m["period_us"],
        m["rounds"],
        m["round_seconds"],
    );
    r.rounds_table(&r.title("Timer", &rest), "round")
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
    let (rounds, round_s): (usize, f64) = if args.output.quick {
        (3, 0.4)
    } else {
        (5, 2.0)
    };
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
        "bench timers: {rounds} rounds of busy, epoll, io_uring, cyclictest, tokio and sleep, {round_s} s each, period {} µs, core {core}, {scheduling} ...",
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
            let seconds = if which == Which::Loop(Waiting::Busy) {
                busy_s
            } else {
                round_s
            };
            if let Which::Peer(timer) = which {
                let length = (seconds * SECONDS as f64) as Nanos;
                match on_core(core, args.fifo, || peer_round(timer, period, length)) {
                    Ok((h, skipped, preempted)) => {
                        acc.skipped += skipped;
                        acc.preempted += preempted;
                        acc.p50s.push(h.value_at_quantile(0.5) as f64);
                        acc.p99s.push(h.value_at_quantile(0.99) as f64);
                        acc.p999s.push(h.value_at_quantile(0.999) as f64);
                        acc.maxes.push(h.max() as f64);
                        acc.samples += h.len();
                        acc.hist.add(&h).map_err(|e| e.to_string())?;
                    }
                    Err(why) => acc.failed = Some(format!("not measured: {why}")),
                }
                continue;
            }
            let Which::Loop(waiting) = which else {
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
            };
            let length = (seconds * SECONDS as f64) as Nanos;
            if let Some(h) = loop_round(waiting, acc, core, period, length, args.fifo, dma)? {
                acc.p50s.push(h.value_at_quantile(0.5) as f64);
                acc.p99s.push(h.value_at_quantile(0.99) as f64);
                acc.p999s.push(h.value_at_quantile(0.999) as f64);
                acc.maxes.push(h.max() as f64);
                acc.samples += h.len();
                acc.hist.add(&h).map_err(|e| e.to_string())?;
            }
        }
        progress(
            "timers",
            "round",
            round + 1,
            rounds,
            accs.iter().map(|a| {
                let p99 = a.p99s.last().filter(|_| a.failed.is_none());
                (a.which.short(), p99.map(|&p99| vec![("p99", p99)]))
            }),
        );
    }
    let others = background.percent_of_a_core();
    let rows = rows(&accs, dma, args, busy_s, round_s);
    let checks = checks(&accs, args.fifo.is_some()); // (checks, notes)
    let fields = serde_json::json!({
        "core": core,
        "scheduling": scheduling,
        "period_us": args.period_us,
        "rounds": rounds,
        "round_seconds": round_s,
        "cyclictest": version,
        "cpu_dma_latency": if dma {
            "held at 0 by every row (cyclictest always holds it; the loop through host.cpu_dma_latency)"
        } else {
            "not held by the loop rows (no permission to open /dev/cpu_dma_latency); cyclictest holds it if it can"
        },
    });
    let quick = args.output.quick;
    let mut report = Report::of_rounds(rows, checks, fields, quick, others);
    // Every row with a merged histogram (not cyclictest: see the module's doc).
    report.distributions = accs
        .iter()
        .filter(|a| a.which != Which::Cyclictest && !a.hist.is_empty())
        .map(|a| Distribution::ns(a.which.name(), &a.hist))
        .collect();
    Ok(report)
}

fn rows(accs: &[Acc], dma: bool, args: &TimersBenchArgs, busy_s: f64, round_s: f64) -> Vec<Row> {
    let mut rows = Vec::new();
    for acc in accs {
        let mut row = match (&acc.failed, acc.which) {
            (Some(why), _) if acc.samples == 0 => Row::unmeasured(acc.which.name(), why.clone()),
            (_, Which::Cyclictest) => {
                // cyclictest reports a summary per run, not its histogram, so its rounds
                // cannot be merged exactly: the median of the rounds' percentiles instead.
                let median = |v: &[f64]| spread(v).1;
                Row {
                    latency: Percentiles {
                        p50_ns: Some(median(&acc.p50s)),
                        p99_ns: Some(median(&acc.p99s)),
                        p999_ns: Some(median(&acc.p999s)),
                        max_ns: Some(spread(&acc.maxes).2),
                    },
                    samples: acc.samples,
                    ..Row::unmeasured(
                        acc.which.name(),
                        format!(
                        "the reference, `{}` per round{}; percentiles are the median of the rounds' (cyclictest reports no histogram to merge; compare the loop rows' per-round p99s), max is over all rounds{}",
                        acc.command.as_deref().unwrap_or("cyclictest"),
                        if args.fifo.is_none() { " (no -p: SCHED_OTHER)" } else { "" },
                        acc.failed.as_ref().map(|f| format!("; a later round: {f}")).unwrap_or_default()
                    ),
                    )
                }
            }
            (_, Which::Peer(timer)) => {
                let mut note = format!(
                    "{}, {round_s} s per round, same core and scheduling as the loop rows, lateness = clock read on waking - deadline; the thread was preempted {} times (involuntary context switches)",
                    match timer {
                        PeerTimer::Tokio => "`interval.tick().await` on a current-thread runtime (tokio's timer wheel has 1 ms resolution: deadlines round up to its next millisecond)",
                        PeerTimer::Sleep => "`std::thread::sleep(deadline - now)` (clock_nanosleep, relative)",
                    },
                    acc.preempted
                );
                if acc.skipped > 0 {
                    note += &format!(
                        "; {} periods skipped (fired over a period late)",
                        acc.skipped
                    );
                }
                if let Some(f) = &acc.failed {
                    note += &format!("; a later round: {f}");
                }
                Row::new(acc.which.name(), &acc.hist, note)
            }
            (_, Which::Loop(waiting)) => {
                let mut note =
                    format!(
                    "driver {}, {} s per round, lateness = loop clock read at firing - deadline",
                    acc.driver.as_deref().unwrap_or("?"),
                    if waiting == Waiting::Busy { busy_s } else { round_s },
                );
                if dma && waiting != Waiting::Busy {
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
                Row::new(acc.which.name(), &acc.hist, note)
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
    // tokio's interval is late by its own timer resolution, not the host's wake-up: its note
    // is below.
    let sleepers: Vec<String> = accs[1..]
        .iter()
        .filter(|a| !a.p50s.is_empty() && a.which != Which::Peer(PeerTimer::Tokio))
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
    if let Some(tokio) = accs
        .iter()
        .find(|a| a.which == Which::Peer(PeerTimer::Tokio) && a.samples > 0)
    {
        notes.push(format!(
            "tokio's interval fired {} late at the median: tokio's timer wheel has a resolution of 1 ms, so each deadline waits for the wheel's next millisecond tick, then a wake-up; below 5 ms late it keeps the grid and does not skip (MissedTickBehavior applies only past that).",
            us(tokio.hist.value_at_quantile(0.5) as f64)
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
