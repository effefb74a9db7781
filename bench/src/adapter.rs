//! `tickloop bench adapter`: a request's round trip through the adapter host, next to a raw
//! pipe ping-pong between the same two programs on the same two cores, in one run.
//!
//! The adapter side is always `tickloop adapter echo` pinned to core A; the engine side, on
//! core B, is in turn:
//!
//! 1. the raw reference: this process writes 8 bytes to `tickloop adapter echo --raw`'s stdin
//!    and blocks in `read` on its stdout for the 8 bytes echoed back: two pipe wake-ups, no
//!    framing, no JSON, no loop. The floor for every row below;
//! 2. an `EventLoop` in park mode on epoll with the adapter host: the app emits a request
//!    (`subscribe`: one frame each way), the host encodes and writes it, the echo adapter
//!    decodes and answers, the host reads, decodes and delivers `Done` to the app;
//! 3. the same loop in busy mode (fds polled every microsecond);
//!
//! 4. the Python client users build today (`bench/python/adapter_client.py`): a Python process
//!    that starts the same echo adapter with subprocess pipes, writes each request from a
//!    ThreadPoolExecutor thread and reads answers on a reader thread, timing each round trip
//!    with `time.perf_counter_ns` (its own stopwatch: the row's histogram comes back as JSON);
//!    without python3 the row says why and the rest of the report stays;
//!
//! each with one request in flight (closed loop: the round trip), then the raw pipe and the
//! park-mode loop again with 64 in flight (pipelined: throughput, and latency under load).
//! Every measured row's whole histogram goes into the report's `distributions`.
//! The round trip is timed by the bench's stopwatch (the TSC): stamped when the app emits the
//! request (in the output sink) and when its `Done` reaches the app. Rows run in alternating
//! blocks, each on fresh processes, so every row sees the same host. It measures and reports;
//! it never fails on a slow result.

use crate::harness::{
    stamp, stamp_ns, thread_preemptions, touched_histogram, two_cores, Background,
};
use crate::report::{
    fmt_ns, fmt_rate, progress, spread, Check, Distribution, OutputArgs, Percentiles, Report,
};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Instant;
use tickloop_app::clock::{Nanos, MICROS, SECONDS};
use tickloop_app::{App, Context, Event, EventKind, OutputSink};
use tickloop_ring::sys;
use tickloop_runtime::adapter::{
    AdapterConfig, AdapterEvent, AdapterHandle, AdapterHost, AdapterHostConfig, AdapterRequest,
    Request, SharedHost,
};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, Mode, StopReason};

#[derive(clap::Args, Clone, Debug)]
#[command(mut_arg("save", |a| a.help("Also write adapter.md, adapter.json, adapter-ROW.hgrm per measured row and the plots adapter.svg and adapter.png into this directory (--save is the same)")))]
pub struct AdapterBenchArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// The two cores: the adapter process first, the engine second.
    #[arg(long, value_delimiter = ',', default_value = "0,1", value_name = "A,B")]
    pub cpus: Vec<usize>,
}

/// Requests in flight in the pipelined rows.
const WINDOW: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    /// Blocking read on a raw pipe.
    Raw,
    /// The loop with the adapter host.
    Host(Mode),
    /// The Python client users build today.
    Python,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Kind {
    engine: Engine,
    window: usize,
}

const ROWS: [Kind; 6] = [
    Kind {
        engine: Engine::Raw,
        window: 1,
    },
    Kind {
        engine: Engine::Host(Mode::Park),
        window: 1,
    },
    Kind {
        engine: Engine::Host(Mode::Busy),
        window: 1,
    },
    Kind {
        engine: Engine::Raw,
        window: WINDOW,
    },
    Kind {
        engine: Engine::Host(Mode::Park),
        window: WINDOW,
    },
    Kind {
        engine: Engine::Python,
        window: 1,
    },
];

const PYTHON_ADAPTER_CLIENT: &str = include_str!("../python/adapter_client.py");

impl Kind {
    fn short(self) -> String {
        let e = match self.engine {
            Engine::Raw => "raw",
            Engine::Host(Mode::Park) => "park",
            Engine::Host(Mode::Busy) => "busy",
            Engine::Python => "python",
        };
        format!("{e}/{}", self.window)
    }
    fn name(self) -> String {
        match (self.engine, self.window) {
            (Engine::Raw, 1) => {
                "raw pipe round trip, 8 bytes each way, blocking read (the reference)".into()
            }
            (Engine::Raw, w) => format!("raw pipe, {w} messages in flight"),
            (Engine::Host(Mode::Park), 1) => {
                "adapter host, loop in park mode (epoll): request -> Done".into()
            }
            (Engine::Host(Mode::Busy), 1) => {
                "adapter host, loop in busy mode (fds polled every 1 µs): request -> Done".into()
            }
            (Engine::Host(m), w) => {
                format!("adapter host, loop in {m} mode, {w} requests in flight")
            }
            (Engine::Python, _) => {
                "python client (users' design: subprocess pipes, ThreadPoolExecutor writer, reader thread): request -> done".into()
            }
        }
    }
}

/// One row of the report: a latency row and its throughput.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct AdapterRow {
    pub name: String,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub samples: u64,
    /// Requests per second (the median of the blocks).
    pub requests_per_sec: Option<f64>,
    pub rounds_p50_ns: Vec<f64>,
    pub rounds_p99_ns: Vec<f64>,
    /// Requests that did not come back answered (failed, or never).
    pub lost: u64,
    pub note: String,
}

impl AdapterRow {
    fn cells(&self) -> Vec<String> {
        let rps = self.requests_per_sec.map_or_else(|| "-".into(), fmt_rate);
        let p99s = if self.rounds_p99_ns.is_empty() {
            "-".into()
        } else {
            let (lo, mid, hi) = spread(&self.rounds_p99_ns);
            let short = |x: f64| fmt_ns(Some(x)).replace(' ', "\u{a0}");
            format!("{} / {} / {}", short(lo), short(mid), short(hi))
        };
        self.latency.cells(
            &self.name,
            [self.samples.to_string(), rps, p99s],
            &self.note,
        )
    }
}

/// What one block of one row measured.
struct Block {
    hist: Histogram<u64>,
    rps: f64,
    lost: u64,
    preempted: i64,
    iterations_per_request: Option<f64>,
    /// What ran, where the row's note needs it (the Python version).
    detail: Option<String>,
}

// ------------------------------------------------------------------ the raw pipe

fn pin_child(pid: u32, core: usize) -> Result<(), String> {
    // SAFETY: a cpu_set_t holding one core, for our own child.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(pid as i32, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "cannot pin the adapter process to core {core}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn raw_block(adapter_core: usize, n: u64, window: usize) -> Result<Block, String> {
    let exe = crate::tickloop_exe()?;
    let mut child = Command::new(exe)
        .args(["adapter", "echo", "--raw"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start tickloop adapter echo --raw: {e}"))?;
    pin_child(child.id(), adapter_core)?;
    let mut to = child.stdin.take().expect("piped");
    let mut from = child.stdout.take().expect("piped");
    let mut hist = touched_histogram();
    let warmup = n / 10;
    let preempted = thread_preemptions();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut got = 0u64;
    let io = |e: std::io::Error| format!("raw pipe: {e}");
    while sent < (window as u64).min(n) {
        to.write_all(&stamp().to_le_bytes()).map_err(io)?;
        sent += 1;
    }
    let mut msg = [0u8; 8];
    while got < n {
        from.read_exact(&mut msg).map_err(io)?;
        let rtt = stamp_ns(stamp() - i64::from_le_bytes(msg));
        if got >= warmup {
            hist.saturating_record(rtt);
        }
        got += 1;
        if sent < n {
            to.write_all(&stamp().to_le_bytes()).map_err(io)?;
            sent += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let preempted = thread_preemptions() - preempted;
    drop(to);
    let _ = child.wait();
    Ok(Block {
        hist,
        rps: n as f64 / elapsed,
        lost: 0,
        preempted,
        iterations_per_request: None,
        detail: None,
    })
}

// ------------------------------------------------------------------ the adapter host

/// The bench's output sink: stamps each request as the app emits it, then sends it.
struct StampingSink {
    handle: AdapterHandle,
    sent: Rc<RefCell<[i64; WINDOW]>>,
}

impl OutputSink<AdapterRequest> for StampingSink {
    fn output(&mut self, at: Nanos, r: &AdapterRequest) {
        self.sent.borrow_mut()[r.id as usize % WINDOW] = stamp();
        let _ = self.handle.request(at, r);
    }
}

/// The probe app: keeps `window` requests in flight until `n` are answered. It reads the
/// stopwatch on each `Done`: a measuring instrument, not an app (those never read a clock).
struct Pinger {
    n: u64,
    window: usize,
    next: u64,
    answered: u64,
    lost: u64,
    warmup: u64,
    hist: Histogram<u64>,
    sent: Rc<RefCell<[i64; WINDOW]>>,
}

impl Pinger {
    fn send(&mut self, cx: &mut Context<'_, AdapterRequest>) {
        self.next += 1;
        cx.emit(AdapterRequest {
            adapter: 0,
            id: self.next,
            request: Request::Subscribe { symbol: 0 },
        });
    }
}

impl App for Pinger {
    type Output = AdapterRequest;
    fn name(&self) -> &'static str {
        "bench-adapter"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, AdapterRequest>) {
        let EventKind::Adapter(e) = event.kind else {
            return;
        };
        match e {
            AdapterEvent::Ready { .. } => {
                for _ in 0..self.window.min(self.n as usize) {
                    self.send(cx);
                }
                return;
            }
            AdapterEvent::Done { request, .. } => {
                let rtt = stamp_ns(stamp() - self.sent.borrow()[request as usize % WINDOW]);
                if self.answered >= self.warmup {
                    self.hist.saturating_record(rtt);
                }
            }
            AdapterEvent::Failed { .. } => self.lost += 1,
            _ => return,
        }
        self.answered += 1;
        if self.answered == self.n {
            cx.stop();
        } else if self.next < self.n {
            self.send(cx);
        }
    }
}

fn host_block(
    mode: Mode,
    adapter_core: usize,
    engine_core: usize,
    n: u64,
    window: usize,
) -> Result<Block, String> {
    let exe = crate::tickloop_exe()?;
    let config = AdapterHostConfig {
        symbols: vec!["BENCH".into()],
        adapters: vec![AdapterConfig {
            name: "echo".into(),
            command: vec![
                exe.to_string_lossy().into_owned(),
                "adapter".into(),
                "echo".into(),
            ],
            cpus: vec![adapter_core],
            max_in_flight: WINDOW as u32,
            ..AdapterConfig::default()
        }],
        ..AdapterHostConfig::default()
    };
    let host = SharedHost::new(AdapterHost::new(&config).map_err(|e| e.to_string())?);
    let mut lc = LoopConfig {
        mode,
        driver: DriverChoice::Epoll,
        fd_poll_interval_ns: MICROS,
        ..LoopConfig::default()
    };
    lc.host.core = Some(engine_core);
    let sent = Rc::new(RefCell::new([0i64; WINDOW]));
    let app = Pinger {
        n,
        window,
        next: 0,
        answered: 0,
        lost: 0,
        warmup: n / 10,
        hist: touched_histogram(),
        sent: sent.clone(),
    };
    let sink = StampingSink {
        handle: host.handle(),
        sent,
    };
    let mut event_loop = EventLoop::new(
        LoopBuilder {
            config: &lc,
            rings: vec![],
            journal: None,
            app_config: vec![],
            program: "tickloop",
        },
        app,
        sink,
    )
    .map_err(|e| e.to_string())?;
    host.install(&mut event_loop).map_err(|e| e.to_string())?;
    event_loop.stop_after(120 * SECONDS);
    let preempted = thread_preemptions();
    let started = Instant::now();
    let stopped = event_loop.run().map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
    let preempted = thread_preemptions() - preempted;
    let app = event_loop.app();
    if stopped == StopReason::Deadline {
        return Err(format!(
            "only {} of {n} requests answered in 120 s",
            app.answered
        ));
    }
    let stats = event_loop.stats();
    Ok(Block {
        hist: app.hist.clone(),
        rps: n as f64 / elapsed,
        lost: app.lost + n.saturating_sub(app.answered),
        preempted,
        iterations_per_request: Some(stats.iterations as f64 / n as f64),
        detail: None,
    })
}

// ------------------------------------------------------------------ the Python client

fn python_block(adapter_core: usize, engine_core: usize, n: u64) -> Result<Block, String> {
    let exe = crate::tickloop_exe()?;
    let mut child = Command::new("python3")
        .args(["-", "--count", &n.to_string()])
        .args(["--cpu", &engine_core.to_string()])
        .args(["--adapter-cpu", &adapter_core.to_string(), "--"])
        .arg(&exe)
        .args(["adapter", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3 could not run ({e})"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(PYTHON_ADAPTER_CLIENT.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("python3: {e}"))?;
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&output.stdout).ok();
    let Some(v) = parsed.filter(|_| output.status.success()) else {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "the Python client failed ({}): {}",
            output.status,
            err.lines().last().unwrap_or("")
        ));
    };
    let hist = crate::harness::histogram_of_pairs(&v["histogram"]);
    if hist.is_empty() {
        return Err("the Python client timed no request".into());
    }
    Ok(Block {
        hist,
        rps: v["requests_per_sec"].as_f64().unwrap_or(0.0),
        lost: v["lost"].as_u64().unwrap_or(0),
        preempted: v["preempted"].as_i64().unwrap_or(0),
        iterations_per_request: None,
        detail: v["python"].as_str().map(|s| format!("Python {s}")),
    })
}

// ------------------------------------------------------------------ the run

struct Acc {
    kind: Kind,
    hist: Histogram<u64>,
    p50s: Vec<f64>,
    p99s: Vec<f64>,
    rps: Vec<f64>,
    lost: u64,
    preempted: i64,
    iterations: Vec<f64>,
    failed: Option<String>,
    detail: Option<String>,
}

pub fn main(args: &AdapterBenchArgs) -> Result<(), String> {
    let report = run(args)?;
    report.emit(markdown(&report), &args.output, "adapter")
}

/// The report as Markdown: the title line, the table, the checks, the notes.
pub fn markdown(r: &Report<AdapterRow>) -> String {
    let m = &r.machine;
    let rest = format!(
        ", adapter on core {}, engine on core {}, {} alternating blocks of {} round trips per row",
        m["adapter_core"], m["engine_core"], m["blocks"], m["round_trips_per_block"],
    );
    r.table(
        &r.title("Adapter", &rest),
        &[
            "samples",
            "requests/s",
            "p99 per block (min / median / max)",
        ],
        AdapterRow::cells,
    )
}

pub fn run(args: &AdapterBenchArgs) -> Result<Report<AdapterRow>, String> {
    let (adapter_core, engine_core) = two_cores(&args.cpus)?;
    let (blocks, per_block) = if args.output.quick {
        (3u64, 2_000u64)
    } else {
        (20, 10_000)
    };
    stamp_ns(0); // calibrate the stopwatch once, before anything runs
    eprintln!(
        "bench adapter: {blocks} blocks of {per_block} round trips per row (raw pipe, adapter host in park and busy mode; 1 and {WINDOW} in flight; the Python client), adapter on core {adapter_core}, engine on core {engine_core} ..."
    );
    // Everything on the engine side runs on its core (the loops pin there too).
    sys::pin_to_core(engine_core)?;
    let mut accs: Vec<Acc> = ROWS
        .iter()
        .map(|&kind| Acc {
            kind,
            hist: crate::harness::histogram(),
            p50s: Vec::new(),
            p99s: Vec::new(),
            rps: Vec::new(),
            lost: 0,
            preempted: 0,
            iterations: Vec::new(),
            failed: None,
            detail: None,
        })
        .collect();
    let shorts: Vec<String> = ROWS.iter().map(|k| k.short()).collect();
    let background = Background::start();
    let mut ratios = Vec::new();
    for b in 0..blocks {
        let mut p50 = [None; ROWS.len()];
        for i in 0..ROWS.len() {
            let index = (i + b as usize) % ROWS.len();
            let acc = &mut accs[index];
            if acc.failed.is_some() {
                continue;
            }
            let kind = acc.kind;
            let result = match kind.engine {
                Engine::Raw => raw_block(adapter_core, per_block, kind.window),
                Engine::Host(mode) => {
                    host_block(mode, adapter_core, engine_core, per_block, kind.window)
                }
                Engine::Python => python_block(adapter_core, engine_core, per_block),
            };
            match result {
                Err(why) => acc.failed = Some(format!("not measured: {why}")),
                Ok(block) => {
                    let q = |q: f64| block.hist.value_at_quantile(q) as f64;
                    p50[index] = Some(q(0.5));
                    acc.p50s.push(q(0.5));
                    acc.p99s.push(q(0.99));
                    acc.rps.push(block.rps);
                    acc.lost += block.lost;
                    acc.preempted += block.preempted;
                    acc.iterations.extend(block.iterations_per_request);
                    acc.detail = block.detail.or(acc.detail.take());
                    acc.hist.add(&block.hist).map_err(|e| e.to_string())?;
                }
            }
        }
        if let (Some(raw), Some(park)) = (p50[0], p50[1]) {
            ratios.push(park / raw);
        }
        progress(
            "adapter",
            "block",
            b as usize + 1,
            blocks as usize,
            accs.iter().zip(&shorts).map(|(a, short)| {
                let last = a.p50s.last().zip(a.p99s.last());
                let last = last.filter(|_| a.failed.is_none());
                (
                    short.as_str(),
                    last.map(|(&p50, &p99)| vec![("p50", p50), ("p99", p99)]),
                )
            }),
        );
    }
    let others = background.percent_of_a_core();
    let rows: Vec<AdapterRow> = accs.iter().map(row).collect();
    let (checks, mut notes) = checks(&accs, &ratios, others);
    notes.push(crate::report::background_note(others));
    let fields = serde_json::json!({
        "adapter_core": adapter_core,
        "engine_core": engine_core,
        "blocks": blocks,
        "round_trips_per_block": per_block,
        "window": WINDOW,
        "cpuidle": crate::report::cpuidle(),
        "other_tasks_percent_of_a_core": others,
    });
    let distributions = accs
        .iter()
        .filter(|a| !a.hist.is_empty())
        .map(|a| Distribution::ns(&a.kind.name(), &a.hist))
        .collect();
    Ok(Report {
        rows,
        machine: crate::report::machine(args.output.quick, fields),
        checks,
        notes,
        distributions,
    })
}

fn median(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| spread(v).1)
}

fn row(acc: &Acc) -> AdapterRow {
    let name = acc.kind.name();
    if acc.hist.is_empty() {
        return AdapterRow {
            name,
            latency: Percentiles::default(),
            samples: 0,
            requests_per_sec: None,
            rounds_p50_ns: Vec::new(),
            rounds_p99_ns: Vec::new(),
            lost: acc.lost,
            note: acc.failed.clone().unwrap_or_else(|| "not measured".into()),
        };
    }
    let mut note = match acc.kind.engine {
        Engine::Raw => "8-byte messages through two pipes to `tickloop adapter echo --raw`, which echoes them (stdin read, stdout write); the engine blocks in read(2)".to_string(),
        Engine::Python => format!(
            "{} starts `tickloop adapter echo` with subprocess pipes, writes each `subscribe` frame from a ThreadPoolExecutor thread, a reader thread resolves its Future on `done`; timed in the caller with time.perf_counter_ns (request made -> answer in hand)",
            acc.detail.as_deref().unwrap_or("Python")
        ),
        Engine::Host(_) => format!(
            "`subscribe` to `tickloop adapter echo` and its `done`: encoded into the outbound queue, written, decoded by the adapter, answered, read, decoded, delivered as an event; {:.2} loop iterations per request",
            median(&acc.iterations).unwrap_or(0.0)
        ),
    };
    note += &format!(
        "; {} lost; first 10% of each block not recorded; the engine preempted {} times",
        acc.lost, acc.preempted
    );
    if let Some(f) = &acc.failed {
        note += &format!("; a later block: {f}");
    }
    AdapterRow {
        name,
        latency: Percentiles::of(&acc.hist),
        samples: acc.hist.len(),
        requests_per_sec: median(&acc.rps),
        rounds_p50_ns: acc.p50s.clone(),
        rounds_p99_ns: acc.p99s.clone(),
        lost: acc.lost,
        note,
    }
}

fn checks(accs: &[Acc], ratios: &[f64], others: f64) -> (Vec<Check>, Vec<String>) {
    let us = |v: f64| fmt_ns(Some(v));
    let p50 = |a: &Acc| a.hist.value_at_quantile(0.5) as f64;
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    let (raw, park) = (&accs[0], &accs[1]);
    let target = "adapter host p50 (park mode, 1 in flight) within 2x of the raw pipe's p50 (median of per-block ratios)";
    if ratios.is_empty() {
        checks.push(Check {
            target: target.into(),
            measured: format!(
                "not measured: {}",
                [&raw.failed, &park.failed]
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
                us(p50(park)),
                us(p50(raw))
            ),
            pass: Some(mid <= 2.0),
        });
        if mid > 2.0 {
            notes.push(if others >= 10.0 {
                format!("The adapter host's p50 came out {mid:.2}x the raw pipe's while other tasks used {others:.0}% of a core: rerun on a quiet machine.")
            } else {
                format!("The adapter host's p50 is {mid:.2}x the raw pipe's on a quiet machine: the difference is the host's own path (its private epoll inside the loop's, JSON both ways, the loop's iteration).")
            });
        }
    }
    let measured: Vec<&Acc> = accs.iter().filter(|a| !a.hist.is_empty()).collect();
    let lost: u64 = measured.iter().map(|a| a.lost).sum();
    checks.push(Check {
        target: "every request answered, once".into(),
        measured: measured
            .iter()
            .map(|a| format!("{} {} lost", a.kind.short(), a.lost))
            .collect::<Vec<_>>()
            .join(", "),
        pass: (!measured.is_empty()).then_some(lost == 0),
    });
    let rps = |i: usize| median(&accs[i].rps);
    if let (Some(raw1), Some(host1), Some(raw64), Some(host64)) = (rps(0), rps(1), rps(3), rps(4)) {
        notes.push(format!(
            "Throughput: one request in flight, {} requests/s through the host against {} round trips/s on the raw pipe; with {WINDOW} in flight, {} against {} (the adapter answers each request with its own write; the host writes the requests an event's handler makes in one go).",
            fmt_rate(host1),
            fmt_rate(raw1),
            fmt_rate(host64),
            fmt_rate(raw64)
        ));
    }
    if let (Some(python), Some(host)) = (
        accs.iter()
            .find(|a| a.kind.engine == Engine::Python && !a.hist.is_empty()),
        Some(park).filter(|a| !a.hist.is_empty()),
    ) {
        notes.push(format!(
            "The Python client users build today takes {} per request at the median against {} through the adapter host ({:.1}x), to the same echo adapter: its time is the two thread hand-offs (the pool's writer, the reader resolving the Future) under the GIL, and JSON in Python; its preemptions are the Python process's, all threads.",
            us(p50(python)),
            us(p50(host)),
            p50(python) / p50(host).max(1.0)
        ));
    }
    notes.push("Both sides are `tickloop adapter echo` (with `--raw` for the reference) pinned to the adapter core, started afresh for every block; the raw reference has no framing, no JSON and no loop, so it is the floor the host is measured against.".into());
    (checks, notes)
}
