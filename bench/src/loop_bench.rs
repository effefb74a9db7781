//! `tickloop bench loop`: feed-to-handler latency through the whole loop. A writer process,
//! pinned to core A, publishes candles into a ring at a paced rate (one every 20 µs, so the
//! engine is idle between candles, as behind a real feed); each candle carries its publish time
//! on the bench's stopwatch (the TSC, as in `bench ring`). The engine on core B is, in turn:
//!
//! 1. a raw ring `Reader` spinning on `try_read`: the ring's own one-way latency, the floor;
//! 2. an `EventLoop` in busy mode (driver auto), with a probe app that reads the stopwatch on
//!    each `Candle` event;
//! 3. the loop in park mode on epoll: it sleeps when idle and is woken through the ring's
//!    doorbell, the writer's datagram to the loop's wake socket, and the driver;
//! 4. the loop in park mode on io_uring, woken the same way.
//!
//! The four rows run in alternating blocks, each block with the same writer code on a fresh
//! ring, so every row sees the same host and the only difference is the engine side. It
//! measures and reports; it never fails on a slow result.

use crate::harness::{
    attach, driver_name, fork_pinned, histogram, new_loop, publish_paced, reap, reap_counting,
    spin_read, stamp, stamp_ns, thread_preemptions, touched_histogram, two_cores, with_temp_ring,
    Background, SharedPage, Waiting,
};
use crate::report::{fmt_ns, progress, spread, Check, Distribution, OutputArgs, Report, Row};
use hdrhistogram::Histogram;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use tickloop_app::clock::{Nanos, SECONDS};
use tickloop_app::{App, Context, Event, EventKind};
use tickloop_ring::sys;
use tickloop_ring::{Candle, Start, Writer};
use tickloop_runtime::event_loop::{LoopStats, RingSpec, StopReason};

#[derive(clap::Args, Clone, Debug)]
#[command(mut_arg("save", |a| a.help("Also write loop.md, loop.json, loop-ROW.hgrm per row and the plots loop.svg and loop.png into this directory (--save is the same)")))]
pub struct LoopBenchArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// The two cores: the writer (feed) first, the engine (reader or loop) second.
    #[arg(long, value_delimiter = ',', default_value = "0,1", value_name = "A,B")]
    pub cpus: Vec<usize>,
}

/// One candle every PACE_NS: the engine is idle (and in park mode asleep) between candles.
const PACE_NS: i64 = 20_000;

/// The ring of every block: the default 4 MiB (2^16 slots), 1.3 s of candles at this pace.
const SLOTS: u64 = 1 << 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Ring,
    Loop(Waiting),
}

impl Engine {
    const ALL: [Engine; 4] = [
        Engine::Ring,
        Engine::Loop(Waiting::Busy),
        Engine::Loop(Waiting::Epoll),
        Engine::Loop(Waiting::IoUring),
    ];
    fn short(self) -> &'static str {
        match self {
            Engine::Ring => "ring",
            Engine::Loop(waiting) => waiting.short(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Engine::Ring => "tickloop ring one-way (raw Reader spinning on try_read)",
            Engine::Loop(Waiting::Busy) => "loop, busy mode (driver auto): feed -> handler",
            Engine::Loop(Waiting::Epoll) => "loop, park mode on epoll: feed -> handler",
            Engine::Loop(Waiting::IoUring) => "loop, park mode on io_uring: feed -> handler",
        }
    }
}

/// What the engine side records: the age of each candle on arrival, after a warm-up.
struct Probe {
    n: u64,
    warmup: u64,
    received: u64,
    lost: u64,
    hist: Histogram<u64>,
}

impl Probe {
    fn new(n: u64) -> Probe {
        Probe {
            n,
            warmup: n / 10,
            received: 0,
            lost: 0,
            hist: touched_histogram(),
        }
    }

    #[inline]
    fn candle(&mut self, candle: &Candle) {
        // The probe reads the stopwatch: this is a measuring instrument, not an app. A real
        // app never reads a clock (it has `event.at`), or replay would not be deterministic.
        let age = stamp_ns(stamp() - candle.ts_ns);
        if self.received >= self.warmup {
            self.hist.saturating_record(age);
        }
        self.received += 1;
    }

    fn done(&self) -> bool {
        self.received + self.lost >= self.n
    }
}

/// The loop's probe app: lets the writer start when the loop runs, records each candle's age,
/// stops the loop when every candle has arrived (or was lost).
struct CandleProbe<'a> {
    go: &'a AtomicU64,
    probe: Probe,
}

impl App for CandleProbe<'_> {
    type Output = ();
    fn name(&self) -> &'static str {
        "bench-loop"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, ()>) {
        match &event.kind {
            EventKind::Started { .. } => self.go.store(1, Ordering::Release),
            EventKind::Candle { candle, .. } => {
                self.probe.candle(candle);
                if self.probe.done() {
                    cx.stop();
                }
            }
            EventKind::CandlesLost { lost, .. } => {
                self.probe.lost += lost;
                if self.probe.done() {
                    cx.stop();
                }
            }
            _ => {}
        }
    }
}

/// The feed: wait for `go`, then publish `n` candles one every PACE_NS, each stamped with the
/// stopwatch just before publishing (as `bench ring`'s paced writer does).
/// (`fork_pinned` gives it SIGINT/SIGTERM back, which the loop blocked on this thread.)
fn writer(path: &Path, go: &AtomicU64, n: u64) {
    let Ok(mut writer) = Writer::open(path) else {
        // SAFETY: child exit.
        unsafe { libc::_exit(3) };
    };
    let give_up = sys::monotonic_ns() + 60 * SECONDS as i64;
    while go.load(Ordering::Acquire) == 0 {
        if sys::monotonic_ns() > give_up {
            // SAFETY: child exit.
            unsafe { libc::_exit(4) };
        }
        core::hint::spin_loop();
    }
    publish_paced(&mut writer, n, PACE_NS, |_| false);
}

struct Block {
    hist: Histogram<u64>,
    lost: u64,
    stats: Option<LoopStats>,
    driver: Option<String>,
    /// Involuntary context switches of the engine thread and of the writer process.
    engine_preempted: i64,
    writer_preempted: i64,
}

/// One block of one row: a fresh ring, a writer on `writer_core`, the engine here on
/// `engine_core`. Err(Some) is fatal; Ok(Err) says why this engine cannot run here.
fn block(
    engine: Engine,
    writer_core: usize,
    engine_core: usize,
    n: u64,
) -> Result<Result<Block, String>, String> {
    with_temp_ring(SLOTS, |path| {
        let page = SharedPage::new()?;
        let go = page.word(0);
        let writer_path = path.to_owned();
        let pid = fork_pinned(writer_core, || writer(&writer_path, go, n))?;
        let preemptions = thread_preemptions();
        let result = match engine {
            Engine::Ring => raw_reader(path, go, pid, engine_core, n).map(Ok),
            Engine::Loop(waiting) => in_loop(waiting, path, go, engine_core, n),
        };
        let engine_preempted = thread_preemptions() - preemptions;
        match result {
            Ok(Ok(mut block)) => {
                block.engine_preempted = engine_preempted;
                block.writer_preempted = reap_counting(pid, "the bench's writer process")?;
                Ok(Ok(block))
            }
            other => {
                // The engine never ran (or failed): stop the writer.
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = reap(pid);
                other
            }
        }
    })
}

/// Row 1: the ring alone, a raw reader spinning on `try_read` (as `bench ring` reads).
fn raw_reader(
    path: &Path,
    go: &AtomicU64,
    pid: libc::pid_t,
    core: usize,
    n: u64,
) -> Result<Block, String> {
    sys::pin_to_core(core)?;
    let mut reader = attach(path, Start::At(0))?;
    let mut probe = Probe::new(n);
    go.store(1, Ordering::Release);
    let taken = spin_read(&mut reader, pid, n, |candle, _| probe.candle(candle))?;
    Ok(Block {
        hist: probe.hist,
        lost: taken.lost,
        stats: None,
        driver: None,
        engine_preempted: 0,
        writer_preempted: 0,
    })
}

/// Rows 2-4: the loop, with the probe app, reading the ring.
fn in_loop(
    waiting: Waiting,
    path: &Path,
    go: &AtomicU64,
    core: usize,
    n: u64,
) -> Result<Result<Block, String>, String> {
    let app = CandleProbe {
        go,
        probe: Probe::new(n),
    };
    let rings = vec![RingSpec {
        path: path.to_owned(),
        start: Start::At(0),
    }];
    let mut event_loop = match new_loop(&waiting.config(core), rings, app) {
        Ok(l) => l,
        Err(e) => return Ok(Err(format!("the loop could not start: {e}"))),
    };
    // A safety net: the app stops the loop after the last candle long before this.
    event_loop.stop_after((n as i64 * PACE_NS) as Nanos * 3 + 20 * SECONDS);
    let stopped = match event_loop.run() {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("the loop failed while running: {e}"))),
    };
    let probe = &event_loop.app().probe;
    match stopped {
        StopReason::App => {}
        StopReason::Signal(s) => return Err(format!("interrupted by signal {s}")),
        StopReason::Deadline => {
            return Err(format!(
                "the writer stopped after {} of {n} candles",
                probe.received + probe.lost
            ))
        }
    }
    Ok(Ok(Block {
        hist: probe.hist.clone(),
        lost: probe.lost.max(event_loop.stats().candles_lost),
        stats: Some(event_loop.stats()),
        driver: Some(driver_name(&event_loop)),
        engine_preempted: 0,
        writer_preempted: 0,
    }))
}

/// What one row gathered across the blocks.
struct Acc {
    engine: Engine,
    hist: Histogram<u64>,
    p50s: Vec<f64>,
    p99s: Vec<f64>,
    lost: u64,
    failed: Option<String>,
    driver: Option<String>,
    candles: u64,
    parks: u64,
    iterations: u64,
    engine_preempted: i64,
    writer_preempted: i64,
}

pub fn main(args: &LoopBenchArgs) -> Result<(), String> {
    let report = run(args)?;
    report.emit(markdown(&report), &args.output, "loop")
}

/// The report as Markdown: the title line, the table, the checks, the notes.
pub fn markdown(r: &Report) -> String {
    let m = &r.machine;
    let rest = format!(
        ", writer on core {}, engine on core {}, one candle every {} µs, {} alternating blocks of {} candles per row",
        m["writer_core"], m["engine_core"], m["pace_us"], m["blocks"], m["candles_per_block"],
    );
    r.rounds_table(&r.title("Loop", &rest), "block")
}

pub fn run(args: &LoopBenchArgs) -> Result<Report, String> {
    let (writer_core, engine_core) = two_cores(&args.cpus)?;
    let (blocks, per_block) = if args.output.quick {
        (5u64, 10_000u64)
    } else {
        (20, 20_000)
    };
    stamp_ns(0); // calibrate the stopwatch once, before any child is forked
    eprintln!(
        "bench loop: {blocks} blocks of ring, busy, epoll and io_uring, {per_block} candles each at one per {} µs, writer on core {writer_core}, engine on core {engine_core} ...",
        PACE_NS / 1000
    );
    let mut accs: Vec<Acc> = Engine::ALL
        .iter()
        .map(|&engine| Acc {
            engine,
            hist: histogram(),
            p50s: Vec::new(),
            p99s: Vec::new(),
            lost: 0,
            failed: None,
            driver: None,
            candles: 0,
            parks: 0,
            iterations: 0,
            engine_preempted: 0,
            writer_preempted: 0,
        })
        .collect();
    let background = Background::start();
    let mut ratios = Vec::new();
    for b in 0..blocks {
        let mut p50 = [None; 4];
        // Rotate the order each block, so no row always follows the same one.
        for i in 0..Engine::ALL.len() {
            let index = (i + b as usize) % Engine::ALL.len();
            let acc = &mut accs[index];
            if acc.failed.is_some() {
                continue;
            }
            match block(acc.engine, writer_core, engine_core, per_block)? {
                Err(why) => acc.failed = Some(format!("not measured: {why}")),
                Ok(block) => {
                    let q = |q: f64| block.hist.value_at_quantile(q) as f64;
                    p50[index] = Some(q(0.5));
                    acc.p50s.push(q(0.5));
                    acc.p99s.push(q(0.99));
                    acc.lost += block.lost;
                    acc.engine_preempted += block.engine_preempted;
                    acc.writer_preempted += block.writer_preempted;
                    acc.hist.add(&block.hist).map_err(|e| e.to_string())?;
                    if let Some(s) = block.stats {
                        acc.candles += s.candles;
                        acc.parks += s.parks;
                        acc.iterations += s.iterations;
                    }
                    if block.driver.is_some() {
                        acc.driver = block.driver;
                    }
                }
            }
        }
        if let (Some(ring), Some(busy)) = (p50[0], p50[1]) {
            ratios.push(busy / ring);
        }
        progress(
            "loop",
            "block",
            b as usize + 1,
            blocks as usize,
            accs.iter().map(|a| {
                let last = a.p50s.last().zip(a.p99s.last());
                let last = last.filter(|_| a.failed.is_none());
                (
                    a.engine.short(),
                    last.map(|(&p50, &p99)| vec![("p50", p50), ("p99", p99)]),
                )
            }),
        );
    }
    let others = background.percent_of_a_core();
    let rows: Vec<Row> = accs.iter().map(row).collect();
    let checks = checks(&accs, &ratios, others); // (checks, notes)
    let fields = serde_json::json!({
        "writer_core": writer_core,
        "engine_core": engine_core,
        "pace_us": PACE_NS / 1000,
        "blocks": blocks,
        "candles_per_block": per_block,
        "ring_slots": SLOTS,
        "pinning": format!("writer process on core {writer_core}, engine (raw reader, loop thread) on core {engine_core}: a child that cannot pin exits, a loop whose host setup cannot pin does not start"),
        "sched_fifo": "not attempted (SCHED_OTHER)",
        "mlockall": "not attempted",
    });
    let quick = args.output.quick;
    let mut report = Report::of_rounds(rows, checks, fields, quick, others);
    report.distributions = accs
        .iter()
        .filter(|a| !a.hist.is_empty())
        .map(|a| Distribution::ns(a.engine.name(), &a.hist))
        .collect();
    Ok(report)
}

fn row(acc: &Acc) -> Row {
    if acc.hist.is_empty() {
        let mut row = Row::unmeasured(
            acc.engine.name(),
            acc.failed.clone().unwrap_or_else(|| "not measured".into()),
        );
        row.lost = Some(acc.lost);
        return row;
    }
    let mut note = match acc.engine {
        Engine::Ring => {
            "publish to read on a raw reader: the floor for every row below; stopwatch (TSC) stamp carried in the candle".to_string()
        }
        Engine::Loop(Waiting::Busy) => format!(
            "driver {}; the probe app reads the stopwatch on each Candle event; {:.0} loop iterations per candle",
            acc.driver.as_deref().unwrap_or("?"),
            acc.iterations as f64 / acc.candles.max(1) as f64
        ),
        Engine::Loop(Waiting::Epoll | Waiting::IoUring) => format!(
            "driver {}; woken through the ring's doorbell, the writer's datagram to the loop's wake socket and the driver; {:.2} parks and {:.0} loop iterations per candle",
            acc.driver.as_deref().unwrap_or("?"),
            acc.parks as f64 / acc.candles.max(1) as f64,
            acc.iterations as f64 / acc.candles.max(1) as f64
        ),
    };
    note += &format!(
        "; {} lost; first 10% of each block not recorded; preempted {} times (engine) and {} (writer)",
        acc.lost, acc.engine_preempted, acc.writer_preempted
    );
    if let Some(f) = &acc.failed {
        note += &format!("; a later block: {f}");
    }
    let mut row = Row::new(acc.engine.name(), &acc.hist, note);
    row.rounds_p50_ns = acc.p50s.clone();
    row.rounds_p99_ns = acc.p99s.clone();
    row.lost = Some(acc.lost);
    row
}

fn checks(accs: &[Acc], ratios: &[f64], others: f64) -> (Vec<Check>, Vec<String>) {
    let us = |v: f64| fmt_ns(Some(v));
    let p50 = |a: &Acc| a.hist.value_at_quantile(0.5) as f64;
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    let (ring, busy) = (&accs[0], &accs[1]);
    let target = "busy loop p50 within 2x of the ring's one-way p50 (median of per-block ratios)";
    if ratios.is_empty() {
        checks.push(Check {
            target: target.into(),
            measured: format!(
                "not measured: {}",
                [&ring.failed, &busy.failed]
                    .into_iter()
                    .flatten()
                    .map(|s| s.trim_start_matches("not measured: "))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            pass: None,
        });
    } else {
        let (lo, mid, hi) = spread(ratios);
        checks.push(Check {
            target: target.into(),
            measured: format!(
                "{mid:.2}x (blocks {lo:.2}x to {hi:.2}x); all blocks: {} vs {}",
                us(p50(busy)),
                us(p50(ring))
            ),
            pass: Some(mid <= 2.0),
        });
        if mid > 2.0 {
            notes.push(if others >= 10.0 {
                format!(
                    "The busy loop's p50 came out {mid:.2}x the raw reader's while other tasks used {others:.0}% of a core: spinning SCHED_OTHER processes sharing their cores with a build are preempted for milliseconds (see the preemption counts), which swamps a difference of tens of nanoseconds. Rerun on a quiet machine."
                )
            } else {
                format!(
                    "The busy loop's p50 is {mid:.2}x the raw reader's on a quiet machine: the difference is the loop's own path from the ring to the handler (an iteration's clock read, timer check, batch read and event dispatch)."
                )
            });
        }
    }
    let measured: Vec<&Acc> = accs.iter().filter(|a| !a.hist.is_empty()).collect();
    let lost: u64 = measured.iter().map(|a| a.lost).sum();
    checks.push(Check {
        target: "no candle lost in any row".into(),
        measured: measured
            .iter()
            .map(|a| format!("{} {}", a.engine.short(), a.lost))
            .collect::<Vec<_>>()
            .join(", "),
        pass: (!measured.is_empty()).then_some(lost == 0),
    });
    let parked: Vec<String> = accs[2..]
        .iter()
        .filter(|a| !a.hist.is_empty())
        .map(|a| format!("{} p50 {}", a.engine.short(), us(p50(a))))
        .collect();
    if !parked.is_empty() && !busy.hist.is_empty() {
        notes.push(format!(
            "Park mode ({}, against {} busy) pays for sleeping: a parked loop is woken by the writer ringing the ring's doorbell and sending a datagram to the loop's wake socket, then by the kernel and, in a VM, the hypervisor scheduling the vCPU's thread again; that is expected, and is the price of not burning the core.",
            parked.join(", "),
            us(p50(busy))
        ));
    }
    (checks, notes)
}
