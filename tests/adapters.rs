//! The adapter host with real child processes on real pipes: the field scenario (handshake,
//! accounts, 7 concurrent history requests, then 10,000 requests through the in-flight
//! window) against the Python example and the Rust echo adapter; every fault an adapter can
//! commit (`tickloop adapter fault --mode ...`), each with its documented event and recovery
//! while the loop stays live (a 10 ms periodic timer stays under 100 ms late and the status file
//! stays fresh); graceful shutdown that leaves no process behind; the paper broker; SIGCHLD
//! instead of pidfds; startup errors; and replay of a journal holding adapter events.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickloop_app::clock::{Nanos, MILLIS, SECONDS};
use tickloop_app::{App, Context, Event, EventKind, TimerId};
use tickloop_ops::metrics::{layout::Shape, Identity, MetricsService, PageReader, Snapshot};
use tickloop_ops::status::{SharedExtra, StatusWriter};
use tickloop_runtime::adapter::{
    AdapterConfig, AdapterEvent, AdapterHandle, AdapterHost, AdapterHostConfig, AdapterRequest,
    AdapterStats, DownCause, ErrorCode, ExitStatus, ExitWatch, FailReason, Fault, OrderStatus,
    Request, RequestError, RequestKind, SharedHost, Side,
};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, LoopView, Mode, Service};

mod common;
use common::*;

/// The liveness timer: every 10 ms with a 5 ms budget, and it must never be 100 ms late. A
/// loop blocked by an adapter (a full pipe, a restart spin) is late by seconds; this VM's
/// hypervisor stalls a vCPU for ~6 ms at times (`bench ring`'s host-stall row), and with the
/// other tests on both cores the timer was seen 21 ms and 32 ms late in clean runs, which
/// SCHED_FIFO cannot prevent. 100 ms stays an order of magnitude below a blocked loop.
const TICK: TimerId = 1;
const TICK_PERIOD: Nanos = 10 * MILLIS;
/// How often the status file is written in these runs.
const STATUS_INTERVAL: Nanos = 50 * MILLIS;
const MAX_LATENESS: Nanos = 5 * MILLIS;
const LATENESS_BOUND: Nanos = 100 * MILLIS;
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/adapters/echo_broker.py"
);

type Script = Box<dyn FnMut(&Event, &mut Context<'_, AdapterRequest>)>;

/// The app: records every event (and the pid of each adapter process that became ready),
/// keeps the liveness timer, and reacts through a script.
struct Probe {
    events: Vec<Event>,
    pids: Vec<u32>,
    script: Script,
}

thread_local! {
    /// The host of the loop this thread runs, for the pids (no event carries one).
    static HOST: RefCell<Option<AdapterHandle>> = const { RefCell::new(None) };
}

/// The current process of `adapter` in this thread's host (0: none).
fn pid_of(adapter: u16) -> u32 {
    HOST.with(|h| {
        h.borrow()
            .as_ref()
            .and_then(|h| h.stats(adapter))
            .map_or(0, |s| s.pid)
    })
}

impl App for Probe {
    type Output = AdapterRequest;
    fn name(&self) -> &'static str {
        "adapter-probe"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, AdapterRequest>) {
        if matches!(event.kind, EventKind::Started { .. }) {
            cx.every(TICK, TICK_PERIOD, MAX_LATENESS);
        }
        self.events.push(*event);
        if let EventKind::Adapter(AdapterEvent::Ready { adapter, .. }) = event.kind {
            self.pids.push(pid_of(adapter));
        }
        (self.script)(event, cx);
    }
}

fn probe(script: impl FnMut(&Event, &mut Context<'_, AdapterRequest>) + 'static) -> Probe {
    Probe {
        events: Vec::with_capacity(1 << 18),
        pids: Vec::new(),
        script: Box::new(script),
    }
}

/// What a run left behind.
struct Run {
    events: Vec<Event>,
    /// The pid of each `Ready`, in order.
    pids: Vec<u32>,
    stats: Vec<(String, AdapterStats)>,
    /// The liveness timer's firings and worst lateness.
    firings: u64,
    worst_lateness: Nanos,
    /// The status file's worst age seen by a watcher thread while the loop ran.
    worst_status_age: Duration,
    status_reads: u64,
    /// The status file as the loop left it, and the adapters the metrics page last had.
    final_status: serde_json::Value,
    metrics_adapters: Vec<(String, u8)>,
    /// How long `run` took after the app asked to stop (the adapters' shutdown).
    shutdown: Option<Duration>,
}

impl Run {
    fn adapter(&self) -> Vec<(Nanos, AdapterEvent)> {
        self.events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Adapter(a) => Some((e.at, a)),
                _ => None,
            })
            .collect()
    }

    fn downs(&self) -> Vec<(Nanos, DownCause, ExitStatus, u32)> {
        self.adapter()
            .into_iter()
            .filter_map(|(at, e)| match e {
                AdapterEvent::Down {
                    cause,
                    status,
                    restart_in_ms,
                    ..
                } => Some((at, cause, status, restart_in_ms)),
                _ => None,
            })
            .collect()
    }

    fn readies(&self) -> Vec<(Nanos, u32, u32)> {
        self.adapter()
            .into_iter()
            .filter_map(|(at, e)| match e {
                AdapterEvent::Ready { starts, .. } => Some((at, starts)),
                _ => None,
            })
            .zip(&self.pids)
            .map(|((at, starts), &pid)| (at, pid, starts))
            .collect()
    }

    /// The loop stayed live: the 10 ms timer fired on time all along, the status stayed fresh.
    fn assert_live(&self, what: &str) {
        // The loop's own running time: from Started to Shutdown (not the adapters' stop).
        let ran = self.events.last().map_or(0, |l| l.at) - self.events.first().map_or(0, |f| f.at);
        let expected = ran / TICK_PERIOD;
        eprintln!(
            "{what}: ran {} ms, the 10 ms timer fired {} times, at worst {} µs late; the status file at worst {} ms old",
            ran / MILLIS,
            self.firings,
            self.worst_lateness / 1000,
            self.worst_status_age.as_millis()
        );
        // 80 % of the periods, less the periods one firing as late as the bound may skip (a
        // short run cannot otherwise absorb a single host stall).
        let may_skip = LATENESS_BOUND / TICK_PERIOD;
        assert!(
            (self.firings + may_skip) * 10 >= expected * 8,
            "{what}: the 10 ms timer fired {} times in {} ms",
            self.firings,
            ran / MILLIS
        );
        let bound = if realtime() {
            LATENESS_BOUND
        } else {
            10 * LATENESS_BOUND
        };
        assert!(
            self.worst_lateness < bound,
            "{what}: the 10 ms timer was {} µs late",
            self.worst_lateness / 1000
        );
        // The file is written every 50 ms and sampled every 10 ms: a run shorter than a few
        // writes (a fast adapter finishes a scenario in 30 ms) may rightly see none.
        assert!(
            self.status_reads > 0 || ran < 4 * STATUS_INTERVAL,
            "{what}: the status file was never read in {} ms",
            ran / MILLIS
        );
        assert!(
            self.worst_status_age < Duration::from_millis(1000),
            "{what}: the status file went {:?} without a write",
            self.worst_status_age
        );
    }
}

/// The loop as an engine runs it: parked on epoll, and SCHED_FIFO where this process may
/// (root), so what the liveness checks measure is the loop and its adapters, not the other
/// builds sharing the machine. (Adapters always run SCHED_OTHER.)
fn loop_config() -> LoopConfig {
    let mut config = LoopConfig {
        driver: DRIVER.with(|d| d.get()),
        mode: Mode::Park,
        housekeeping_ns: 10 * MILLIS,
        ..LoopConfig::default()
    };
    if realtime() {
        config.host.sched_fifo = Some(10);
    }
    config
}

thread_local! {
    /// The driver of this test's loops (epoll unless a test says otherwise).
    static DRIVER: std::cell::Cell<DriverChoice> = const { std::cell::Cell::new(DriverChoice::Epoll) };
}

/// Whether the loop may run SCHED_FIFO here; said once when it may not.
fn realtime() -> bool {
    // SAFETY: no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    static SAID: std::sync::Once = std::sync::Once::new();
    if !root {
        SAID.call_once(|| {
            eprintln!("NOTE: not root, so the loop runs SCHED_OTHER: the lateness bound is 1 s instead of 100 ms (other tasks can take the core)")
        });
    }
    root
}

/// Run `app` with the adapters of `config` for at most `limit`, with a status file watched
/// from another thread.
fn run(config: &AdapterHostConfig, limit: Duration, app: Probe) -> Run {
    run_with(config, limit, app, None, |_| {})
}

fn run_with(
    config: &AdapterHostConfig,
    limit: Duration,
    app: Probe,
    journal: Option<std::path::PathBuf>,
    before: impl FnOnce(&AdapterHandle),
) -> Run {
    let host = SharedHost::new(AdapterHost::new(config).expect("adapter host"));
    HOST.with(|h| *h.borrow_mut() = Some(host.handle()));
    before(&host.handle());
    let lc = loop_config();
    // On tmpfs: the status writer's fdatasync costs nothing there, so what the liveness
    // checks see is the loop and its adapters, not the disk.
    let status_file = StatusFile::new();
    let status = status_file.0.clone();
    let mut lp = EventLoop::new(
        LoopBuilder {
            config: &lc,
            rings: vec![],
            journal,
            app_config: vec![],
            program: "tickloop",
        },
        app,
        host.handle(),
    )
    .unwrap();
    host.install(&mut lp).unwrap();
    let mut writer = StatusWriter::new(
        &status,
        STATUS_INTERVAL,
        "engine",
        "test",
        SharedExtra::default(),
    )
    .unwrap();
    writer.set_adapters(host.handle());
    lp.add_service(Box::new(writer)).unwrap();
    let page = StatusFile::new();
    let shape = Shape {
        timers: lc.periodic_capacity,
        rings: 0,
        adapters: tickloop_runtime::adapter::MAX_ADAPTERS as u32,
    };
    let id = Identity {
        instance: "engine@test",
        started_unix_ns: 0,
        interval_ns: lc.housekeeping_ns,
    };
    let mut metrics = MetricsService::create(&page.0, shape, &id).unwrap();
    metrics.set_adapters(host.handle());
    lp.add_service(Box::new(metrics)).unwrap();
    let mut page_reader = PageReader::open(&page.0).unwrap();
    lp.stop_after(limit.as_nanos() as Nanos);
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || watch_status(&status, &done))
    };
    let started = Instant::now();
    lp.run().unwrap();
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let samples = watcher.join().unwrap();
    let final_status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status_file.0).unwrap()).unwrap();
    let mut snapshot = Snapshot::default();
    page_reader.snapshot(&mut snapshot).unwrap();
    let metrics_adapters: Vec<(String, u8)> = snapshot
        .adapters
        .iter()
        .map(|(a, name)| (name.clone(), a.state as u8))
        .collect();
    let (firings, worst_lateness) = lp
        .periodic()
        .find(|p| p.timer == Some(TICK))
        .map(|p| (p.lateness.len(), p.lateness.max()))
        .unwrap_or((0, 0));
    let stats = host.handle().all_stats();
    let app = lp.app();
    let stop_at = app
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Shutdown)
        .map(|e| e.at);
    let shutdown = stop_at.map(|at| {
        let ran = elapsed.as_nanos() as u64;
        let first = app.events.first().map_or(0, |e| e.at);
        Duration::from_nanos(ran.saturating_sub(at - first))
    });
    // Only while the loop ran: once it stops, adapters are being shut down (up to their
    // grace periods) and the status file's last write rightly ages until the status writer's
    // own stop.
    let until = stop_at.unwrap_or(Nanos::MAX);
    let running: Vec<Duration> = samples
        .iter()
        .filter(|(at, _)| *at < until)
        .map(|s| s.1)
        .collect();
    let worst_status_age = running.iter().copied().max().unwrap_or_default();
    let status_reads = running.len() as u64;
    HOST.with(|h| *h.borrow_mut() = None);
    Run {
        events: app.events.clone(),
        pids: app.pids.clone(),
        stats,
        firings,
        worst_lateness,
        worst_status_age,
        status_reads,
        shutdown,
        final_status,
        metrics_adapters,
    }
}

/// A status file under /dev/shm, removed when the test ends.
struct StatusFile(std::path::PathBuf);

impl StatusFile {
    fn new() -> StatusFile {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        StatusFile(std::path::PathBuf::from(format!(
            "/dev/shm/tickloop-adapter-status-{}-{n}.json",
            std::process::id()
        )))
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Read the status file every 10 ms while the loop runs: (when, on the loop's clock, and
/// the age of its last write).
fn watch_status(path: &std::path::Path, done: &AtomicBool) -> Vec<(Nanos, Duration)> {
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["state"] != "running" {
            continue;
        }
        let written = v["written_unix_ns"].as_i64().unwrap_or(0);
        let now = tickloop_ring::sys::realtime_ns();
        let at = tickloop_ring::sys::monotonic_ns() as Nanos;
        samples.push((at, Duration::from_nanos((now - written).max(0) as u64)));
    }
    samples
}

fn adapter(name: &str, command: &[&str]) -> AdapterConfig {
    AdapterConfig {
        name: name.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        ping_interval_ms: 100,
        missed_pings: 3,
        request_timeout_ms: 10_000,
        handshake_timeout_ms: 5_000,
        backoff_initial_ms: 100,
        backoff_max_ms: 800,
        shutdown_grace_ms: 500,
        term_grace_ms: 500,
        ..AdapterConfig::default()
    }
}

fn fault(mode: &str) -> AdapterConfig {
    adapter("fault", &[TICKLOOP, "adapter", "fault", "--mode", mode])
}

fn host_config(symbols: &[&str], adapters: Vec<AdapterConfig>) -> AdapterHostConfig {
    AdapterHostConfig {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        adapters,
        ..AdapterHostConfig::default()
    }
}

fn python() -> bool {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: python3 is not installed (scripts/setup.sh installs it)");
    }
    ok
}

fn request(id: u64, request: Request) -> AdapterRequest {
    AdapterRequest {
        adapter: 0,
        id,
        request,
    }
}

/// Every request id got exactly one `Done` or `Failed`, and nothing else completed.
fn assert_each_once(events: &[(Nanos, AdapterEvent)], sent: &[u64]) -> HashMap<u64, AdapterEvent> {
    let mut ends: HashMap<u64, AdapterEvent> = HashMap::new();
    for (_, e) in events {
        if let Some(id) = e.completes() {
            if let Some(prev) = ends.insert(id, *e) {
                panic!("request {id} ended twice: {prev:?} and {e:?}");
            }
        }
    }
    for id in sent {
        assert!(ends.contains_key(id), "request {id} never ended");
    }
    assert_eq!(ends.len(), sent.len(), "answers for requests never sent");
    ends
}

// ------------------------------------------------------------------ the field scenario

/// connect -> get_accounts -> 7 concurrent get_historical_bars -> all 7 answered; then
/// `burst` requests as fast as the in-flight window allows: all answered once.
fn field_scenario(config: AdapterConfig, burst: u64) {
    let window = config.max_in_flight as u64;
    let symbols = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META"];
    let host = host_config(&symbols, vec![config]);
    let sent: Rc<RefCell<Vec<u64>>> = Rc::default();
    let log = sent.clone();
    let mut phase = 0;
    let mut bars_done = 0;
    let mut next_id = 100u64;
    let mut burst_done = 0u64;
    let app = probe(move |e, cx| {
        let EventKind::Adapter(a) = e.kind else {
            return;
        };
        let send = |cx: &mut Context<'_, AdapterRequest>, id: u64, r: Request| {
            log.borrow_mut().push(id);
            cx.emit(request(id, r));
        };
        match (phase, a) {
            (0, AdapterEvent::Ready { .. }) => {
                phase = 1;
                send(cx, 1, Request::GetAccounts);
            }
            (1, AdapterEvent::Done { request: 1, .. }) => {
                phase = 2;
                for i in 0..7u32 {
                    send(
                        cx,
                        10 + i as u64,
                        Request::GetHistoricalBars {
                            symbol: i,
                            from_ns: 1_700_000_000_000_000_000,
                            to_ns: 1_700_000_000_000_000_000
                                + (50 + 10 * i as i64) * 60_000_000_000,
                            bar_ns: 60_000_000_000,
                        },
                    );
                }
            }
            (
                2,
                AdapterEvent::Done {
                    request: 10..=16, ..
                },
            ) => {
                bars_done += 1;
                if bars_done == 7 {
                    phase = 3;
                    for _ in 0..window.min(burst) {
                        next_id += 1;
                        let r = if next_id.is_multiple_of(3) {
                            Request::GetAccounts
                        } else {
                            Request::order(
                                (next_id % 7) as u32,
                                if next_id.is_multiple_of(2) {
                                    Side::Buy
                                } else {
                                    Side::Sell
                                },
                                1.0 + (next_id % 5) as f64,
                                None,
                            )
                        };
                        send(cx, next_id, r);
                    }
                }
            }
            (3, AdapterEvent::Done { request, .. } | AdapterEvent::Failed { request, .. })
                if request > 100 =>
            {
                burst_done += 1;
                if next_id < 100 + burst {
                    next_id += 1;
                    let r = if next_id.is_multiple_of(3) {
                        Request::GetAccounts
                    } else {
                        Request::order((next_id % 7) as u32, Side::Buy, 1.0, None)
                    };
                    send(cx, next_id, r);
                } else if burst_done == burst {
                    cx.stop();
                }
            }
            _ => {}
        }
    });
    let r = run(&host, Duration::from_secs(60), app);
    let events = r.adapter();
    let sent = sent.borrow().clone();
    assert_eq!(
        sent.len() as u64,
        1 + 7 + burst,
        "the scenario did not finish: {:?}",
        r.stats
    );
    let ends = assert_each_once(&events, &sent);
    for id in &sent {
        assert!(
            matches!(ends[id], AdapterEvent::Done { .. }),
            "request {id}: {:?}",
            ends[id]
        );
    }
    // Every history request got exactly the bars its range holds, in time order.
    for i in 0..7u64 {
        let bars: Vec<i64> = events
            .iter()
            .filter_map(|(_, e)| match e {
                AdapterEvent::Bar {
                    request, candle, ..
                } if *request == 10 + i => {
                    assert_eq!(candle.symbol, i as u32);
                    Some(candle.ts_ns)
                }
                _ => None,
            })
            .collect();
        let AdapterEvent::Done { count, .. } = ends[&(10 + i)] else {
            unreachable!()
        };
        assert_eq!(bars.len() as u32, count);
        assert!(bars.windows(2).all(|w| w[0] < w[1]));
    }
    // Orders fill (echo and the Python example both fill market orders at once).
    let fills = events
        .iter()
        .filter(|(_, e)| matches!(e, AdapterEvent::Fill { .. }))
        .count();
    let orders = sent.iter().filter(|&&id| id > 100 && id % 3 != 0).count();
    assert_eq!(fills, orders);
    assert!(r.downs().is_empty(), "{:?}", r.downs());
    let s = &r.stats[0].1;
    assert_eq!(s.requests, sent.len() as u64);
    assert_eq!(s.done, sent.len() as u64);
    assert_eq!(
        (s.failed, s.refused, s.unmatched, s.events_lost),
        (0, 0, 0, 0)
    );
    // The status file and the metrics snapshot show the adapter.
    let listed = &r.final_status["adapters"][0];
    assert_eq!(listed["name"], r.stats[0].0, "{}", r.final_status);
    assert_eq!(listed["done"], sent.len() as u64);
    assert_eq!(listed["state"], "closed");
    assert_eq!(
        r.metrics_adapters,
        [(r.stats[0].0.clone(), 5)],
        "closed (5) in the page's last snapshot, taken at stop"
    );
    r.assert_live("field scenario");
}

#[test]
fn field_scenario_with_the_python_example_adapter() {
    if !python() {
        return;
    }
    let mut c = adapter("py", &["python3", EXAMPLE]);
    c.ping_interval_ms = 500;
    field_scenario(c, 10_000);
}

#[test]
fn field_scenario_with_the_rust_echo_adapter() {
    field_scenario(
        adapter("echo", &[TICKLOOP, "adapter", "echo", "--bars", "100"]),
        10_000,
    );
}

#[test]
fn field_scenario_on_io_uring() {
    use tickloop_runtime::driver::{AnyDriver, DriverOptions};
    if let Err(e) = AnyDriver::open(DriverChoice::IoUring, DriverOptions::default()) {
        eprintln!("SKIPPING io_uring here: {e}");
        return;
    }
    DRIVER.with(|d| d.set(DriverChoice::IoUring));
    field_scenario(
        adapter("echo", &[TICKLOOP, "adapter", "echo", "--bars", "100"]),
        10_000,
    );
}

// ------------------------------------------------------------------ faults

#[test]
fn an_adapter_flooding_stdout_is_read_in_bounded_slices_and_loses_nothing() {
    const N: u64 = 100_000;
    let mut config = fault("flood-stdout");
    config.command.extend(["--count".into(), N.to_string()]);
    let host = host_config(&["SYN0000"], vec![config]);
    let mut seen = 0u64;
    let app = probe(move |e, cx| match e.kind {
        EventKind::Adapter(AdapterEvent::Candle { .. }) => {
            seen += 1;
            if seen == N {
                cx.emit(request(1, Request::GetAccounts));
            }
        }
        EventKind::Adapter(AdapterEvent::Done { request: 1, .. }) => cx.stop(),
        _ => {}
    });
    let r = run(&host, Duration::from_secs(60), app);
    let ts: Vec<i64> = r
        .adapter()
        .iter()
        .filter_map(|(_, e)| match e {
            AdapterEvent::Candle { candle, .. } => Some(candle.ts_ns),
            _ => None,
        })
        .collect();
    assert_eq!(ts.len() as u64, N, "candles lost or duplicated");
    assert!(
        ts.iter().enumerate().all(|(i, &t)| t == i as i64 + 1),
        "out of order"
    );
    assert!(r.downs().is_empty(), "{:?}", r.downs());
    let s = &r.stats[0].1;
    assert!(s.bytes_in >= 10_000_000, "{} bytes", s.bytes_in);
    assert_eq!(
        s.done, 1,
        "a request still goes through during and after the flood"
    );
    r.assert_live("stdout flood");
}

/// What `fault --mode flood-stderr` writes at least: a 1 MiB line, 10 MB of lines, a last one.
const FLOOD_STDERR: u64 = (1 << 20) + 1 + 10_000_000 + 18;

#[test]
fn an_adapter_flooding_stderr_is_logged_in_bounded_lines_and_stays_up() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let host = host_config(&[], vec![fault("flood-stderr")]);
    let handle: Rc<RefCell<Option<AdapterHandle>>> = Rc::default();
    let h = handle.clone();
    let mut id = 0;
    let mut waiting = false;
    let mut ready = false;
    let app = probe(move |e, cx| match e.kind {
        EventKind::Adapter(AdapterEvent::Ready { .. }) => ready = true,
        // One request in flight at any time, all along, from the handshake on (a request
        // before it is refused, and a cold start can outlast the first tick): the adapter
        // stays responsive.
        EventKind::Timer { timer: TICK, .. } if !waiting && ready => {
            // The probe peeks at the host's counters to know when the flood is over (a test
            // instrument, not something a deterministic app would do).
            let flood_done = h
                .borrow()
                .as_ref()
                .and_then(|h| h.stats(0))
                .is_some_and(|s| s.stderr_bytes >= FLOOD_STDERR);
            if flood_done && id > 10 {
                cx.stop();
            } else {
                id += 1;
                waiting = true;
                cx.emit(request(id, Request::GetAccounts));
            }
        }
        EventKind::Adapter(AdapterEvent::Done { .. } | AdapterEvent::Failed { .. }) => {
            waiting = false
        }
        _ => {}
    });
    let r = run_with(&host, Duration::from_secs(60), app, None, |h| {
        *handle.borrow_mut() = Some(h.clone());
    });
    let s = &r.stats[0].1;
    assert!(s.stderr_bytes >= FLOOD_STDERR, "{s:?}");
    assert!(s.stderr_lines >= 100_000, "{s:?}");
    assert!(
        s.stderr_suppressed > 0,
        "the rate limit never applied: {s:?}"
    );
    assert!(r.downs().is_empty(), "{:?}", r.downs());
    assert!(s.done > 10 && s.failed == 0, "{s:?}");
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("adapter=\"fault\"") || log.contains("adapter=fault"),
        "{}",
        &log[..log.len().min(2000)]
    );
    assert!(
        log.contains("stderr flood line"),
        "no stderr line was logged"
    );
    assert!(log.contains("truncated=true"), "the 1 MiB line was not cut");
    assert!(
        log.contains("stderr lines not logged"),
        "suppressed lines were not reported"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2048, "a log line of {longest} bytes");
    r.assert_live("stderr flood");
}

#[test]
fn an_adapter_that_never_reads_gets_backpressure_then_is_restarted_as_hung() {
    let mut config = fault("no-read");
    config.max_in_flight = 4096;
    config.event_queue = 8192;
    config.queue_bytes = 4096;
    let host = host_config(&["SYN0000"], vec![config]);
    let sent: Rc<RefCell<Vec<u64>>> = Rc::default();
    let log = sent.clone();
    let mut id = 0;
    let mut readies = 0;
    let mut firing = false;
    let app = probe(move |e, cx| match e.kind {
        EventKind::Adapter(AdapterEvent::Ready { .. }) => {
            readies += 1;
            firing = readies == 1;
            if readies == 2 {
                cx.stop();
            }
        }
        EventKind::Adapter(AdapterEvent::Failed {
            reason: FailReason::Refused(RequestError::Backpressure),
            ..
        }) => firing = false,
        EventKind::Timer { timer: TICK, .. } if firing => {
            for _ in 0..50 {
                id += 1;
                log.borrow_mut().push(id);
                cx.emit(request(id, Request::order(0, Side::Buy, 1.0, Some(10.0))));
            }
        }
        _ => {}
    });
    let r = run(&host, Duration::from_secs(30), app);
    let events = r.adapter();
    let ends = assert_each_once(&events, &sent.borrow());
    let refused = ends
        .values()
        .filter(|e| {
            matches!(
                e,
                AdapterEvent::Failed {
                    reason: FailReason::Refused(RequestError::Backpressure),
                    ..
                }
            )
        })
        .count();
    let restarted = ends
        .values()
        .filter(|e| {
            matches!(
                e,
                AdapterEvent::Failed {
                    reason: FailReason::AdapterRestarted,
                    ..
                }
            )
        })
        .count();
    assert!(refused >= 1, "no Backpressure");
    assert!(
        restarted > 100,
        "only {restarted} in flight failed with AdapterRestarted"
    );
    assert_eq!(refused + restarted, ends.len(), "other endings: {ends:?}");
    let downs = r.downs();
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert_eq!(
        (downs[0].1, downs[0].2),
        (DownCause::Hung, ExitStatus::Signal(libc::SIGKILL))
    );
    // The Down comes before the failures it causes.
    let down_at = events
        .iter()
        .position(|(_, e)| matches!(e, AdapterEvent::Down { .. }))
        .unwrap();
    let first_restarted = events
        .iter()
        .position(|(_, e)| {
            matches!(
                e,
                AdapterEvent::Failed {
                    reason: FailReason::AdapterRestarted,
                    ..
                }
            )
        })
        .unwrap();
    assert!(down_at < first_restarted);
    assert_eq!(r.readies().len(), 2, "restarted after the hang");
    assert!(r.stats[0].1.backpressure >= 1);
    r.assert_live("never reads");
}

#[test]
fn a_hung_adapter_misses_pings_and_is_restarted_with_its_requests_failed() {
    let host = host_config(&[], vec![fault("hang")]);
    let mut readies = 0;
    let app = probe(move |e, cx| {
        if let EventKind::Adapter(AdapterEvent::Ready { .. }) = e.kind {
            readies += 1;
            if readies == 3 {
                cx.stop();
                return;
            }
            for k in 0..3 {
                cx.emit(request(readies * 10 + k, Request::GetAccounts));
            }
        }
    });
    let r = run(&host, Duration::from_secs(30), app);
    let readies = r.readies();
    let downs = r.downs();
    assert_eq!(readies.len(), 3, "{readies:?} {downs:?}");
    assert_eq!(downs.len(), 2);
    for (i, d) in downs.iter().enumerate() {
        assert_eq!(
            (d.1, d.2),
            (DownCause::Hung, ExitStatus::Signal(libc::SIGKILL))
        );
        // 3 missed pings at 100 ms: about 300 to 400 ms after it was ready.
        let silent = d.0 - readies[i].0;
        assert!(
            (250 * MILLIS..2 * SECONDS).contains(&silent),
            "declared hung after {} ms",
            silent / MILLIS
        );
        assert_eq!(d.3, [100, 200][i], "backoff doubles");
        assert!(
            readies[i + 1].0 - d.0 >= d.3 as u64 * MILLIS,
            "restarted before its backoff"
        );
        assert_ne!(readies[i].1, readies[i + 1].1, "a new process");
    }
    let sent: Vec<u64> = vec![10, 11, 12, 20, 21, 22];
    let ends = assert_each_once(&r.adapter(), &sent);
    assert!(ends.values().all(|e| matches!(
        e,
        AdapterEvent::Failed {
            reason: FailReason::AdapterRestarted,
            ..
        }
    )));
    r.assert_live("hang");
}

#[test]
fn requests_an_adapter_never_answers_time_out_and_it_stays_up() {
    let mut config = fault("mute");
    config.request_timeout_ms = 300;
    let host = host_config(&[], vec![config]);
    let mut failed = 0;
    let app = probe(move |e, cx| match e.kind {
        EventKind::Adapter(AdapterEvent::Ready { .. }) => {
            for id in 1..=3 {
                cx.emit(request(id, Request::GetAccounts));
            }
        }
        EventKind::Adapter(AdapterEvent::Failed { .. }) => {
            failed += 1;
            if failed == 3 {
                // Pings are still answered: it stays up for a few more intervals.
                cx.set_timer(2, e.at + 500 * MILLIS);
            }
        }
        EventKind::Timer { timer: 2, .. } => cx.stop(),
        _ => {}
    });
    let r = run(&host, Duration::from_secs(30), app);
    let events = r.adapter();
    let ends = assert_each_once(&events, &[1, 2, 3]);
    let ready_at = r.readies()[0].0;
    for (at, e) in &events {
        if let AdapterEvent::Failed { reason, .. } = e {
            assert_eq!(*reason, FailReason::Timeout);
            let after = at - ready_at;
            assert!(
                (300 * MILLIS..300 * MILLIS + 200 * MILLIS).contains(&after),
                "timed out {} ms after sending (timeout 300 ms, tick 10 ms)",
                after / MILLIS
            );
        }
    }
    assert_eq!(ends.len(), 3);
    assert!(r.downs().is_empty(), "{:?}", r.downs());
    assert_eq!(r.stats[0].1.timeouts, 3);
    r.assert_live("mute");
}

#[test]
fn an_adapter_dying_mid_frame_is_named_and_its_requests_fail() {
    let host = host_config(&[], vec![fault("die-mid-frame")]);
    let mut readies = 0;
    let app = probe(move |e, cx| {
        if let EventKind::Adapter(AdapterEvent::Ready { .. }) = e.kind {
            readies += 1;
            if readies == 2 {
                cx.stop();
                return;
            }
            for id in 1..=5 {
                cx.emit(request(id, Request::GetAccounts));
            }
        }
    });
    let r = run(&host, Duration::from_secs(30), app);
    let downs = r.downs();
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert_eq!(
        (downs[0].1, downs[0].2),
        (DownCause::Fault(Fault::TruncatedFrame), ExitStatus::Code(1))
    );
    let ends = assert_each_once(&r.adapter(), &[1, 2, 3, 4, 5]);
    assert!(ends.values().all(|e| matches!(
        e,
        AdapterEvent::Failed {
            reason: FailReason::AdapterRestarted,
            ..
        }
    )));
    assert_eq!(r.readies().len(), 2);
    r.assert_live("died mid-frame");
}

#[test]
fn an_adapter_exiting_at_once_is_restarted_with_backoff_not_in_a_spin() {
    let host = host_config(&[], vec![fault("exit-at-once")]);
    let r = run(&host, Duration::from_secs(3), probe(|_, _| {}));
    let downs = r.downs();
    // 100, 200, 400, 800, 800 ms...: about 6 starts in 3 s; a spin would make thousands.
    assert!(
        (4..=9).contains(&downs.len()),
        "{} restarts in 3 s: {downs:?}",
        downs.len()
    );
    for (i, d) in downs.iter().enumerate() {
        assert_eq!((d.1, d.2), (DownCause::Exited, ExitStatus::Code(3)));
        assert_eq!(d.3, [100, 200, 400, 800][i.min(3)]);
        if i > 0 {
            let gap = d.0 - downs[i - 1].0;
            assert!(
                gap >= downs[i - 1].3 as u64 * MILLIS,
                "restarted {} ms after a Down announcing {} ms",
                gap / MILLIS,
                downs[i - 1].3
            );
        }
    }
    assert!(r.readies().is_empty());
    assert_eq!(
        r.stats[0].1.starts as usize,
        downs.len() + usize::from(r.stats[0].1.pid != 0)
    );
    r.assert_live("exits at once");
}

fn killed_for(mode: &str, fault: Fault) {
    let host = host_config(&[], vec![self::fault(mode)]);
    let mut readies = 0;
    let app = probe(move |e, cx| {
        if let EventKind::Adapter(AdapterEvent::Ready { .. }) = e.kind {
            readies += 1;
            if readies == 2 {
                cx.stop();
            } else {
                cx.emit(request(1, Request::GetAccounts));
            }
        }
    });
    let r = run(&host, Duration::from_secs(30), app);
    let downs = r.downs();
    assert_eq!(downs.len(), 1, "{mode}: {downs:?}");
    assert_eq!(
        (downs[0].1, downs[0].2),
        (DownCause::Fault(fault), ExitStatus::Signal(libc::SIGKILL)),
        "{mode}"
    );
    let ends = assert_each_once(&r.adapter(), &[1]);
    assert!(matches!(
        ends[&1],
        AdapterEvent::Failed {
            reason: FailReason::AdapterRestarted,
            ..
        }
    ));
    assert_eq!(r.readies().len(), 2, "{mode}: restarted");
    r.assert_live(mode);
}

#[test]
fn an_oversized_frame_marks_the_adapter_faulty_and_it_is_restarted() {
    killed_for("oversized", Fault::OversizedFrame);
}

#[test]
fn garbage_marks_the_adapter_faulty_and_it_is_restarted() {
    killed_for("garbage", Fault::Malformed);
}

// ------------------------------------------------------------------ shutdown

fn gone(pid: u32) -> bool {
    // A zombie still answers kill(0): ESRCH means it was reaped.
    // SAFETY: signal 0 only checks existence.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[test]
fn shutdown_stops_every_adapter_within_its_grace_and_reaps_them_all() {
    let mut adapters = vec![
        adapter("echo", &[TICKLOOP, "adapter", "echo"]),
        {
            let mut c = fault("ignore-eof");
            c.name = "ignore-eof".into();
            c
        },
        {
            let mut c = fault("stubborn");
            c.name = "stubborn".into();
            c
        },
    ];
    if python() {
        adapters.push(adapter("py", &["python3", EXAMPLE]));
    }
    let n = adapters.len();
    let host = host_config(&[], adapters);
    let mut ready = 0;
    let app = probe(move |e, cx| {
        if let EventKind::Adapter(AdapterEvent::Ready { adapter, .. }) = e.kind {
            let pid = pid_of(adapter);
            if adapter == 0 {
                // The echo adapter, spawned by a loop that blocks SIGTERM/SIGINT/SIGHUP and
                // (as root) runs SCHED_FIFO: none of that reaches it, nor any fd but 0, 1, 2.
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                let field = |name: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap()
                        .trim()
                        .to_string()
                };
                assert_eq!(
                    field("SigBlk:"),
                    "0000000000000000",
                    "blocked signals inherited"
                );
                let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        format!(
                            "{}{}",
                            e.file_name().to_string_lossy(),
                            std::fs::read_link(e.path())
                                .map(|l| format!(" -> {}", l.display()))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                let mut fds = fds;
                fds.sort();
                assert_eq!(fds.len(), 3, "descriptors inherited: {fds:?}");
                assert!(fds.iter().all(|f| f.contains("pipe:")), "{fds:?}");
                // SAFETY: plain query of another process's policy.
                let policy = unsafe { libc::sched_getscheduler(pid as i32) };
                assert_eq!(policy, libc::SCHED_OTHER, "the adapter runs real-time");
            }
            ready += 1;
            if ready == n {
                cx.stop();
            }
        }
    });
    let r = run(&host, Duration::from_secs(30), app);
    let pids: Vec<u32> = r.readies().iter().map(|r| r.1).collect();
    assert_eq!(pids.len(), n);
    // Grace 500 ms, then SIGTERM and 500 ms more, then SIGKILL: all gone in about 1 s.
    let took = r.shutdown.unwrap();
    assert!(took < Duration::from_millis(2500), "shutdown took {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "the stubborn one was not given its grace: {took:?}"
    );
    for pid in &pids {
        assert!(gone(*pid), "adapter pid {pid} is still there (or a zombie)");
    }
    let status = |name: &str| {
        r.stats
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| s.last_down)
            .map(|d| d.1)
    };
    assert_eq!(
        status("echo"),
        Some(ExitStatus::Code(0)),
        "echo exits on end-of-file"
    );
    assert_eq!(
        status("ignore-eof"),
        Some(ExitStatus::Signal(libc::SIGTERM))
    );
    assert_eq!(status("stubborn"), Some(ExitStatus::Signal(libc::SIGKILL)));
    if n == 4 {
        assert_eq!(status("py"), Some(ExitStatus::Code(0)));
    }
}

/// Starts a host on the loop's clock, and does nothing on the tick or at the stop.
struct StartOnly(SharedHost);

impl Service for StartOnly {
    fn start(&mut self, view: &LoopView<'_>) {
        self.0 .0.borrow_mut().start(view.now);
    }
    fn tick(&mut self, _view: &LoopView<'_>) {}
}

#[test]
fn dropping_a_host_kills_and_reaps_what_runs() {
    let host = host_config(&[], vec![fault("stubborn")]);
    let pid: Rc<RefCell<u32>> = Rc::default();
    let p = pid.clone();
    let app = probe(move |e, cx| {
        if let EventKind::Adapter(AdapterEvent::Ready { adapter, .. }) = e.kind {
            *p.borrow_mut() = pid_of(adapter);
            cx.stop();
        }
    });
    // A loop whose one service only starts the host: nothing stops it, its Drop is what is left.
    let shared = SharedHost::new(AdapterHost::new(&host).unwrap());
    HOST.with(|h| *h.borrow_mut() = Some(shared.handle()));
    {
        let lc = loop_config();
        let mut lp = EventLoop::new(
            LoopBuilder {
                config: &lc,
                rings: vec![],
                journal: None,
                app_config: vec![],
                program: "tickloop",
            },
            app,
            shared.handle(),
        )
        .unwrap();
        lp.add_fd_source(Box::new(shared.clone())).unwrap();
        lp.add_service(Box::new(StartOnly(shared.clone()))).unwrap();
        lp.stop_after(10 * SECONDS);
        lp.run().unwrap();
    }
    let pid = *pid.borrow();
    assert!(pid > 0);
    assert!(!gone(pid), "still running before the drop");
    HOST.with(|h| *h.borrow_mut() = None);
    drop(shared);
    assert!(gone(pid), "pid {pid} survived the host");
}

// ------------------------------------------------------------------ exits through SIGCHLD

#[test]
fn without_pidfds_exits_are_seen_through_sigchld() {
    let mut host = host_config(
        &[],
        vec![
            adapter("echo", &[TICKLOOP, "adapter", "echo"]),
            fault("exit-at-once"),
        ],
    );
    host.exit_watch = ExitWatch::Sigchld;
    let app = probe(move |e, cx| {
        if let EventKind::Adapter(AdapterEvent::Ready { adapter: 0, .. }) = e.kind {
            cx.emit(AdapterRequest {
                adapter: 0,
                id: 1,
                request: Request::GetAccounts,
            });
        }
    });
    let r = run(&host, Duration::from_millis(1500), app);
    let downs: Vec<_> = r
        .adapter()
        .into_iter()
        .filter(|(_, e)| {
            matches!(
                e,
                AdapterEvent::Down {
                    adapter: 1,
                    cause: DownCause::Exited,
                    status: ExitStatus::Code(3),
                    ..
                }
            )
        })
        .collect();
    assert!((3..=6).contains(&downs.len()), "{downs:?}");
    assert!(r
        .adapter()
        .iter()
        .any(|(_, e)| matches!(e, AdapterEvent::Done { request: 1, .. })));
    let echo = r.readies()[0].1;
    assert!(gone(echo), "the echo adapter was not reaped at shutdown");
    r.assert_live("sigchld");
}

// ------------------------------------------------------------------ the paper broker

#[test]
fn the_paper_broker_fills_market_orders_at_the_next_candles_open() {
    use tickloop_ring::{Candle, CreateOptions, Writer};
    let ring = Name::new();
    let (mut writer, _) = Writer::open_or_create(&ring.path(), CreateOptions::default()).unwrap();
    let aaa = writer.symbol("AAA").unwrap();
    let bbb = writer.symbol("BBB").unwrap();
    let candle = |symbol, ts_ns, open: f64| Candle {
        ts_ns,
        symbol,
        flags: 0,
        open,
        high: open + 1.0,
        low: open - 1.0,
        close: open + 0.5,
        volume: 10.0,
    };
    for t in 1..=5 {
        writer.publish(&candle(aaa, t, 100.0 + t as f64));
        writer.publish(&candle(bbb, t, 50.0));
    }
    let placed = Arc::new(AtomicBool::new(false));
    let feeder = {
        let placed = placed.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !placed.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            writer.publish(&candle(bbb, 6, 51.0));
            writer.publish(&candle(aaa, 6, 123.0));
            writer.publish(&candle(aaa, 7, 130.0));
            writer
        })
    };
    let ring_arg = ring.path().to_string_lossy().into_owned();
    let host = host_config(
        &["AAA", "BBB", "ZZZ"],
        vec![adapter(
            "paper",
            &[TICKLOOP, "adapter", "paper", "--ring", &ring_arg],
        )],
    );
    let flag = placed.clone();
    let app = probe(move |e, cx| match e.kind {
        EventKind::Adapter(AdapterEvent::Ready { .. }) => {
            cx.emit(request(1, Request::GetAccounts));
            cx.emit(request(
                2,
                Request::GetHistoricalBars {
                    symbol: 0,
                    from_ns: 2,
                    to_ns: 5,
                    bar_ns: 1,
                },
            ));
            cx.emit(request(3, Request::Subscribe { symbol: 0 }));
            cx.emit(request(4, Request::order(2, Side::Buy, 1.0, None)));
            cx.emit(request(5, Request::order(0, Side::Buy, 10.0, None)));
        }
        EventKind::Adapter(AdapterEvent::Done { request: 5, .. }) => {
            flag.store(true, Ordering::Release)
        }
        EventKind::Adapter(AdapterEvent::Fill { .. }) => cx.emit(request(6, Request::GetAccounts)),
        EventKind::Adapter(AdapterEvent::Done { request: 6, .. }) => cx.stop(),
        _ => {}
    });
    let r = run(&host, Duration::from_secs(30), app);
    let _writer = feeder.join().unwrap();
    let events = r.adapter();
    let ends = assert_each_once(&events, &[1, 2, 3, 4, 5, 6]);
    assert!(matches!(
        ends[&4],
        AdapterEvent::Failed {
            reason: FailReason::Adapter(ErrorCode::UnknownSymbol),
            ..
        }
    ));
    let AdapterEvent::Done { count: 3, .. } = ends[&2] else {
        panic!("history [2, 5) of AAA: {:?}", ends[&2]);
    };
    let fill = events
        .iter()
        .find_map(|(_, e)| match e {
            AdapterEvent::Fill {
                order: 5,
                qty,
                price,
                ..
            } => Some((*qty, *price)),
            _ => None,
        })
        .expect("a fill");
    assert_eq!(fill, (10.0, 123.0), "filled at the next AAA candle's open");
    assert!(events.iter().any(|(_, e)| matches!(
        e,
        AdapterEvent::OrderUpdate {
            order: 5,
            status: OrderStatus::Filled,
            ..
        }
    )));
    assert!(events.iter().any(|(_, e)| matches!(e, AdapterEvent::Candle { candle, .. } if candle.symbol == 0 && candle.ts_ns == 6 && candle.open == 123.0)));
    let cash: Vec<f64> = events
        .iter()
        .filter_map(|(_, e)| match e {
            AdapterEvent::Account { cash, .. } => Some(*cash),
            _ => None,
        })
        .collect();
    assert_eq!(cash, [100_000.0, 100_000.0 - 1230.0]);
}

// ------------------------------------------------------------------ startup errors

#[test]
fn a_missing_or_unusable_program_is_one_clear_error_at_startup() {
    let err = |command: &[&str]| {
        AdapterHost::new(&host_config(&[], vec![adapter("ibkr", command)]))
            .err()
            .expect("refused")
            .to_string()
    };
    let e = err(&["no-such-adapter-program-anywhere"]);
    assert!(
        e.starts_with(
            "adapter ibkr: program \"no-such-adapter-program-anywhere\" was not found on PATH"
        ),
        "{e}"
    );
    assert!(e.contains("install it, or give its full path"), "{e}");
    let e = err(&["/nonexistent/dir/adapter.py"]);
    assert!(
        e.contains("/nonexistent/dir/adapter.py does not exist"),
        "{e}"
    );
    let dir = TempDir::new("adapter-noexec");
    let script = dir.file("adapter.py");
    std::fs::write(&script, "print('hi')\n").unwrap();
    let e = err(&[&script]);
    assert!(
        e.contains("is not executable (mode ") && e.contains("python3"),
        "{e}"
    );
    let e = err(&[&dir.0.to_string_lossy()]);
    assert!(e.contains("is a directory"), "{e}");
    let mut bad = adapter("ibkr", &["true"]);
    bad.missed_pings = 0;
    let e = AdapterHost::new(&host_config(&[], vec![bad]))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e,
        "adapter ibkr: missed_pings = 0 is not allowed: use 1 to 1000 (default 3)"
    );
}

// ------------------------------------------------------------------ replay

/// A deterministic app: its requests follow only from its events.
fn replay_script() -> impl FnMut(&Event, &mut Context<'_, AdapterRequest>) {
    let mut done = 0;
    move |e, cx| match e.kind {
        EventKind::Adapter(AdapterEvent::Ready { .. }) => {
            cx.emit(request(1, Request::GetAccounts));
            for i in 0..3 {
                cx.emit(request(
                    10 + i,
                    Request::GetHistoricalBars {
                        symbol: 0,
                        from_ns: 0,
                        to_ns: 1000,
                        bar_ns: 100,
                    },
                ));
            }
        }
        EventKind::Adapter(AdapterEvent::Bar {
            request: r, candle, ..
        }) if candle.open > 101.0 => cx.emit(request(
            1000 * r + candle.ts_ns as u64,
            Request::order(0, Side::Sell, candle.open, None),
        )),
        EventKind::Adapter(AdapterEvent::Done {
            kind: RequestKind::GetHistoricalBars,
            ..
        }) => {
            done += 1;
            if done == 3 {
                cx.emit(request(7, Request::GetAccounts));
            }
        }
        EventKind::Adapter(AdapterEvent::Done { request: 7, .. }) => cx.stop(),
        _ => {}
    }
}

#[test]
fn a_journal_with_adapter_events_replays_to_the_same_requests() {
    use tickloop_runtime::driver::{AnyDriver, DriverOptions};
    use tickloop_runtime::journal::{JournalReader, Record};
    let dir = TempDir::new("adapter-journal");
    let path = dir.0.join("run.journal");
    let host = host_config(
        &["AAA"],
        vec![adapter(
            "echo",
            &[TICKLOOP, "adapter", "echo", "--bars", "5"],
        )],
    );
    let r = run_with(
        &host,
        Duration::from_secs(30),
        probe(replay_script()),
        Some(path.clone()),
        |_| {},
    );
    assert!(r
        .adapter()
        .iter()
        .any(|(_, e)| matches!(e, AdapterEvent::Done { request: 7, .. })));

    let mut journal = JournalReader::open(&path).unwrap();
    let (mut inputs, mut adapter_inputs, mut outputs) = (0, 0, 0);
    while let Some(record) = journal.next_record::<AdapterRequest>().unwrap() {
        match record {
            Record::Input(e) => {
                inputs += 1;
                adapter_inputs += matches!(e.kind, EventKind::Adapter(_)) as u32;
            }
            Record::Output(_) => outputs += 1,
            Record::End { .. } | Record::AppConfig { .. } => {}
        }
    }
    assert!(
        adapter_inputs >= 25,
        "{adapter_inputs} adapter events journaled"
    );
    assert!(outputs >= 11, "{outputs} requests journaled");

    let replay = |app: &mut Probe| {
        let mut journal = JournalReader::open(&path).unwrap();
        let (mut driver, _) =
            AnyDriver::open(DriverChoice::Epoll, DriverOptions::default()).unwrap();
        tickloop_runtime::replay::replay(&mut journal, app, &mut driver, 64, None, &mut |_| {})
            .unwrap()
    };
    let report = replay(&mut probe(replay_script()));
    assert!(report.divergence.is_none(), "{:?}", report.divergence);
    assert!(report.clean_end, "{report:?}");
    assert_eq!(report.inputs, inputs);
    assert_eq!(report.actions, outputs);

    // An app that decides differently on one adapter event is caught at that event.
    let mut original = replay_script();
    let changed = probe(move |e, cx| match e.kind {
        EventKind::Adapter(AdapterEvent::Bar { candle, .. }) if candle.open > 103.0 => {}
        _ => original(e, cx),
    });
    let mut changed = changed;
    let report = replay(&mut changed);
    let d = report.divergence.expect("the change is noticed");
    assert!(d.event.contains("Bar"), "{d:?}");
}
